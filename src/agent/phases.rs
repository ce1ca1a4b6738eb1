//! Running the boot phases of [`super::boot`] on the agent: what each
//! phase does, and the watchdog that is petted throughout.

use std::time::Instant;

use hpc_node::CgroupManager;

use super::boot::{BootAction, Phase};
use super::daemon::Agent;
use super::watchdog::Watchdog;
use super::{cgroup, hardware, readiness};
use crate::config::overlay::{parse_spec, Overlay};
use crate::config::services::{CheckEnv, ServiceSet};

/// How the cgroup root was chosen on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupChoice {
    /// From the configuration.
    Config,
    /// `--cgroup-root DIR`.
    Root(std::path::PathBuf),
    /// `--cgroup-root none`: process groups only.
    Disabled,
}

impl Agent {
    /// Run every phase that is due; called after each loop iteration.
    pub(super) fn drive_boot(&mut self, now: Instant) {
        if self.sup.is_shutting_down() {
            return;
        }
        while let Some(BootAction::Run(phase)) = self.boot.poll(now) {
            let attempt = match &self.boot.state {
                super::boot::BootState::Running { attempt, .. } => *attempt,
                _ => 1,
            };
            if attempt > 1 {
                log::info!(target: "agent::boot", "{}: try {attempt}", phase.as_str());
            }
            match phase {
                Phase::InitHardware => {
                    if attempt == 1 {
                        self.prefetch_declarations();
                    }
                    let r = self.init_hardware(now);
                    self.phase_done(now, phase, r);
                }
                Phase::ConfigureNetwork => {
                    let r = match hardware::loopback_up() {
                        Ok(true) => {
                            log::info!(target: "agent::boot", "configure_network: loopback up; other interfaces are not configured by this version");
                            Ok(())
                        }
                        Ok(false) => {
                            log::info!(target: "agent::boot", "configure_network: loopback already up; other interfaces are not configured by this version");
                            Ok(())
                        }
                        Err(e) => Err(format!("network configuration failed: loopback: {e}")),
                    };
                    self.phase_done(now, phase, r);
                }
                Phase::LoadIdentity => {
                    log::info!(target: "agent::boot", "load_identity: no identity provider configured yet; using none");
                    self.phase_done(now, phase, Ok(()));
                }
                Phase::PullOverlay => {
                    // Completes in `on_applied` once the overlay is applied.
                    if self.journal.is_some() {
                        self.pull_from_journal(now);
                    } else if let Err(e) = self.pull_overlay() {
                        self.phase_done(now, phase, Err(e));
                    }
                }
                Phase::StartServices => {
                    // Completes when the supervisor reports BootReady (or
                    // fails with BootStalled): see `boot_services_settled`.
                    // Every try takes the declarations as they are now (a
                    // reload while the boot waits to retry must count).
                    let set = self.services.clone();
                    let mut actions = self.sup.replace(now, &set);
                    if attempt > 1 {
                        actions.extend(self.sup.retry_failed(now));
                    }
                    self.perform(now, actions);
                }
                Phase::Ready => {
                    self.on_boot_ready(now);
                    self.phase_done(now, phase, Ok(()));
                }
            }
        }
    }

    pub(super) fn phase_done(
        &mut self,
        _event_time: Instant,
        phase: Phase,
        result: Result<(), String>,
    ) {
        // Phases of one loop iteration share its `now`; timings want the clock.
        let now = Instant::now();
        let ms = now.saturating_duration_since(self.started).as_secs_f64() * 1000.0;
        match &result {
            // Debug only: the "node ready" line sums the phases up. A boot
            // console is often a serial line, where every line costs.
            Ok(()) => log::debug!(target: "agent::boot", "{} done at {ms:.1} ms", phase.as_str()),
            Err(e) => {
                log::error!(target: "agent::boot", "{} failed: {e}", phase.as_str());
                // A retry reads the file again, when it runs.
                self.prefetched = None;
            }
        }
        self.boot.on_result(now, phase, result);
        if let super::boot::BootState::Failed { phase, reason } = &self.boot.state {
            log::error!(
                target: "agent::boot",
                "BOOT FAILED in {} after {} tries: {reason}; the node stays up for diagnosis and is not ready",
                phase.as_str(),
                super::boot::MAX_TRIES
            );
        } else if let Some(d) = self.boot.next_deadline() {
            log::warn!(
                target: "agent::boot",
                "{} will be retried in {:.0}s",
                phase.as_str(),
                d.saturating_duration_since(now).as_secs_f64()
            );
        }
    }

    /// The supervisor settled during StartServices.
    pub(super) fn boot_services_settled(&mut self, now: Instant, failed: Option<Vec<String>>) {
        match failed {
            None => self.phase_done(now, Phase::StartServices, Ok(())),
            Some(f) => self.phase_done(
                now,
                Phase::StartServices,
                Err(format!("failed service(s): {}", f.join(", "))),
            ),
        }
    }

    /// Pseudo-filesystems are mounted before the loop starts; here: the
    /// cgroup tree, kernel modules, sysctls, and the watchdog once its
    /// driver is loaded.
    fn init_hardware(&mut self, now: Instant) -> Result<(), String> {
        let dir = self
            .cfg
            .boot
            .modules_dir
            .clone()
            .unwrap_or_else(hardware::default_modules_dir);
        // Not on a helper thread next to the cgroup set-up: a module load
        // and cgroup controller changes at the same time locked up both
        // CPUs of a qemu guest (soft lockup, in about one boot of six).
        if self.cgroups.is_none() {
            self.cgroups = self.open_cgroups();
        }
        let loaded = hardware::load_modules(&self.cfg.boot.modules, &dir);
        if let Ok(m) = &loaded {
            if !m.is_empty() {
                log::info!(target: "agent::boot", "loaded kernel modules: {}", m.join(" "));
            }
        }
        // The watchdog driver may have come with those modules.
        self.open_watchdog(now, true);
        loaded?;
        let n = hardware::apply_sysctls(&self.cfg.boot.sysctl)?;
        if n > 0 {
            log::info!(target: "agent::boot", "set {n} sysctl(s)");
        }
        Ok(())
    }

    fn open_cgroups(&self) -> Option<cgroup::CgroupTree> {
        let root = match &self.cgroup_choice {
            CgroupChoice::Disabled => {
                log::warn!(target: "agent::cgroup", "running without cgroups (--cgroup-root none): an escaped grandchild survives its service");
                return None;
            }
            CgroupChoice::Root(r) => r.clone(),
            CgroupChoice::Config => self.cfg.supervisor.cgroup_root.clone(),
        };
        let tree = match cgroup::CgroupTree::open(&root) {
            Ok(t) => t,
            Err(e) => {
                log::warn!(
                    target: "agent::cgroup",
                    "no usable cgroup v2 tree at {}: {e}; services run in process groups (an escaped grandchild survives its service)",
                    root.display()
                );
                return None;
            }
        };
        if let Err(e) = tree.create_hierarchy() {
            log::warn!(target: "agent::cgroup", "cannot create the slice hierarchy under {}: {e}", root.display());
            return None;
        }
        let (removed, left) = tree.sweep_leftover_scopes();
        let names = |v: &[std::path::PathBuf]| -> Vec<String> {
            v.iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect()
        };
        if !removed.is_empty() {
            let n = names(&removed);
            log::warn!(target: "agent::cgroup", "killed and removed {} scope(s) a previous agent left: {}", n.len(), n.join(" "));
        }
        if !left.is_empty() {
            let n = names(&left);
            log::error!(target: "agent::cgroup", "{} scope(s) a previous agent left would not empty after cgroup.kill: {}; their services fail to start until they do", n.len(), n.join(" "));
        }
        let missing: Vec<&str> = ["cpu", "io", "memory", "pids"]
            .into_iter()
            .filter(|c| !tree.controllers().iter().any(|x| x == c))
            .collect();
        log::info!(
            target: "agent::cgroup",
            "cgroup v2 at {}: controllers [{}]{}, cgroup.kill {}",
            root.display(),
            tree.controllers().join(" "),
            if missing.is_empty() { String::new() } else { format!(", missing [{}]", missing.join(" ")) },
            if tree.has_kill() { "yes" } else { "no (freeze and SIGKILL instead)" }
        );
        Some(tree)
    }

    /// The declarations to boot with: the services file, or the cached
    /// copy of the last good one when the file is missing or bad. A bad
    /// file with no cache fails the phase (it is retried). The overlay's
    /// other sections are then applied by the worker; the phase ends when
    /// it reports (`on_applied`).
    fn pull_overlay(&mut self) -> Result<(), String> {
        let cached = self.cfg.cached_services();
        let mut error = None;
        let mut loaded = None;
        if let Some(path) = self.services_file.clone() {
            let read = match self.prefetched.take() {
                Some((p, h)) if p == path => h
                    .join()
                    .unwrap_or_else(|_| Err(format!("{}: the reader panicked", p.display()))),
                _ => self.load_declarations(&path),
            };
            match read {
                Ok(d) => {
                    super::cache_services(&path, &cached);
                    loaded = Some((d, path.display().to_string()));
                }
                Err(e) => {
                    log::error!(target: "agent::boot", "{e}");
                    error = Some(e);
                }
            }
        }
        if loaded.is_none() && cached.exists() {
            match self.load_declarations(&cached) {
                Ok(d) => {
                    log::warn!(target: "agent::boot", "pull_overlay: using the cached declarations {}", cached.display());
                    loaded = Some((d, cached.display().to_string()));
                }
                Err(e) => log::error!(target: "agent::boot", "cached declarations unusable: {e}"),
            }
        }
        let ((set, overlay), from) = match (loaded, error) {
            (Some(l), _) => l,
            (None, Some(e)) => return Err(e),
            (None, None) => {
                log::warn!(target: "agent::boot", "pull_overlay: no service declarations; supervising nothing");
                ((ServiceSet::default(), Overlay::default()), String::new())
            }
        };
        if !from.is_empty() {
            log::info!(
                target: "agent::boot",
                "pull_overlay: {} service(s) and {} other declaration(s) of vcluster {} from {from}",
                set.services.len(),
                overlay.key_count() - overlay.services.len(),
                set.vcluster
            );
        }
        self.services = set;
        self.declared = overlay.clone();
        self.boot_apply_pending = true;
        self.applier.submit(overlay);
        Ok(())
    }

    /// Services and the rest of the overlay from one declaration file.
    pub(super) fn load_declarations(&self, path: &std::path::Path) -> Declarations {
        read_declarations(path, self.cfg.vcluster.as_deref())
    }

    /// At the first InitHardware: read and parse the local declarations
    /// file on a helper thread while the hardware is set up, for
    /// PullOverlay to take (when it reads that file: no journal). Parsing
    /// TOML is plain computation, which a second CPU does meanwhile; the
    /// phase still reports, and fails, in its own turn.
    pub(super) fn prefetch_declarations(&mut self) {
        if !self.cfg.journal.endpoints.is_empty() || self.prefetched.is_some() {
            return;
        }
        let Some(path) = self.services_file.clone() else {
            return;
        };
        let vc = self.cfg.vcluster.clone();
        let p = path.clone();
        if let Ok(h) = std::thread::Builder::new()
            .name("declarations".into())
            .spawn(move || read_declarations(&p, vc.as_deref()))
        {
            self.prefetched = Some((path, h));
        }
    }

    /// The apply worker reported.
    pub(super) fn on_applied(&mut self, now: Instant) {
        let Some(done) = self.applier.on_wake() else {
            return;
        };
        if self.boot_apply_pending && !self.applier.is_busy() {
            self.boot_apply_pending = false;
            let failures: Vec<String> = done.outcomes.into_iter().filter_map(Result::err).collect();
            let result = if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("; "))
            };
            self.phase_done(now, Phase::PullOverlay, result);
        }
    }

    /// Open the watchdog if this agent should use one and has none yet.
    /// `report` logs a missing device (once); the attempt before the
    /// drivers are loaded stays quiet.
    pub(super) fn open_watchdog(&mut self, now: Instant, report: bool) {
        let wanted = self.pid1 || self.cfg.watchdog.force;
        if !wanted || self.watchdog.is_some() || self.sup.is_shutting_down() {
            return;
        }
        match Watchdog::open(
            &self.cfg.watchdog.device,
            self.cfg.watchdog.timeout_seconds,
            now,
        ) {
            Ok(Some(wd)) => {
                log::info!(
                    target: "agent::watchdog",
                    "{} ({}) armed: timeout {}s, petted every {:.1}s",
                    self.cfg.watchdog.device.display(),
                    wd.identity,
                    wd.timeout,
                    wd.schedule.interval().as_secs_f64()
                );
                self.watchdog = Some(wd);
            }
            Ok(None) => {
                if report && !self.watchdog_missing_logged {
                    self.watchdog_missing_logged = true;
                    log::warn!(
                        target: "agent::watchdog",
                        "no usable watchdog at {} (absent or busy); continuing without",
                        self.cfg.watchdog.device.display()
                    );
                }
            }
            Err(e) => {
                if report && !self.watchdog_missing_logged {
                    self.watchdog_missing_logged = true;
                    log::warn!(target: "agent::watchdog", "cannot open {}: {e}; continuing without", self.cfg.watchdog.device.display());
                }
            }
        }
    }

    pub(super) fn pet_watchdog(&mut self, now: Instant) {
        if let Some(wd) = &mut self.watchdog {
            if wd.schedule.due(now) {
                wd.pet(now);
            }
        }
    }

    /// The Ready phase: the gate for the workload manager.
    pub(super) fn on_boot_ready(&mut self, now: Instant) {
        self.ready_at = Some(now);
        let ms = now.saturating_duration_since(self.started).as_secs_f64() * 1000.0;
        let phases: Vec<String> = self
            .boot
            .completed
            .iter()
            .map(|(p, at)| format!("{} {:.0}", p.as_str(), at.as_secs_f64() * 1000.0))
            .collect();
        // Declared services an operator stopped, or that exited cleanly
        // and are not restarted, are not running and do not hold the boot.
        let declared = self.sup.records().len();
        let running = self
            .sup
            .records()
            .iter()
            .filter(|r| r.state == super::supervisor::State::Running)
            .count();
        log::info!(
            target: "agent::boot",
            "node ready: {running} service(s) running{}, {ms:.1} ms after agent start, {:.1} ms after kernel start (phases done at ms: {})",
            if running == declared {
                String::new()
            } else {
                format!(" of {declared} declared")
            },
            self.kernel_ms_at_start + ms,
            phases.join(", ")
        );
        if let Err(e) = readiness::mark_ready(&self.cfg.ready_file()) {
            log::warn!(target: "agent::boot", "cannot write {}: {e}", self.cfg.ready_file().display());
        }
        self.bind_ready_socket();
    }
}

/// A declaration file's services and the rest of its overlay.
pub(super) type Declarations = Result<(ServiceSet, Overlay), String>;

/// Services and the rest of the overlay of vCluster `vc` from one
/// declaration file.
fn read_declarations(path: &std::path::Path, vc: Option<&str>) -> Declarations {
    let src = crate::config::Source::read(path).map_err(|e| e.to_string())?;
    let set = ServiceSet::parse(&src, vc, &CheckEnv::default()).map_err(|e| e.to_string())?;
    let mut overlay = Overlay::default();
    for spec in parse_spec(&src).map_err(|e| e.to_string())? {
        if spec.vcluster == set.vcluster || (set.vcluster.is_empty() && vc.is_none()) {
            overlay.merge(&spec);
        }
    }
    Ok((set, overlay))
}
