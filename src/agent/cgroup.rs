//! The agent's cgroup v2 tree: `pact.slice/{infra,network,gpu,audit}.slice`
//! for services (one scope each) and `workload.slice` for lattice.
//!
//! The root is configurable (`[agent.supervisor] cgroup_root`) and checked
//! to be cgroup2; available controllers are detected from
//! `cgroup.controllers`, and a limit whose controller is missing is skipped
//! with one warning naming the controller.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hpc_node::cgroup::slices;
use hpc_node::{CgroupError, CgroupHandle, CgroupManager, CgroupMetrics, ResourceLimits};

use crate::config::services::{IoMax, ScopeLimits};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// The controllers pact uses for service scopes.
const WANTED: [&str; 4] = ["cpu", "io", "memory", "pids"];

pub struct CgroupTree {
    root: PathBuf,
    available: BTreeSet<String>,
    has_kill: bool,
    warned: Mutex<BTreeSet<String>>,
}

impl CgroupTree {
    /// Open (creating if needed) the cgroup root and detect its controllers.
    pub fn open(root: &Path) -> io::Result<CgroupTree> {
        if !root.exists() {
            fs::create_dir_all(root)?;
        }
        let st = rustix::fs::statfs(root)?;
        if st.f_type as i64 != CGROUP2_SUPER_MAGIC {
            return Err(io::Error::other(format!(
                "{} is not a cgroup v2 filesystem",
                root.display()
            )));
        }
        let available = read_words(&root.join("cgroup.controllers"));
        let has_kill = root.join("cgroup.kill").exists()
            || fs::read_dir(root).is_ok_and(|_| kernel_has_cgroup_kill());
        Ok(CgroupTree {
            root: root.to_path_buf(),
            available,
            has_kill,
            warned: Mutex::new(BTreeSet::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Controllers the root offers (of the ones pact uses).
    pub fn controllers(&self) -> Vec<String> {
        WANTED
            .iter()
            .filter(|c| self.available.contains(**c))
            .map(|c| c.to_string())
            .collect()
    }

    pub fn has_kill(&self) -> bool {
        self.has_kill
    }

    /// Path of a service's scope: `<slice>/<svc>.scope`, or
    /// `<slice>/<svc>-<gen>.scope` after a zombie scope was abandoned.
    pub fn scope_path(&self, slice: &str, service: &str, generation: u32) -> PathBuf {
        let name = if generation == 0 {
            format!("{service}.scope")
        } else {
            format!("{service}-{generation}.scope")
        };
        self.root.join(slice).join(name)
    }

    fn warn_once(&self, controller: &str, what: &str) {
        let mut w = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if w.insert(controller.to_string()) {
            log::warn!(
                target: "agent::cgroup",
                "the {controller} controller is not available under {}: {what} limits are not applied",
                self.root.display()
            );
        }
    }

    fn enable_controllers(&self, dir: &Path) {
        for c in self.controllers() {
            // One write per controller: one refusal must not cost the rest.
            if let Err(e) = write_file(&dir.join("cgroup.subtree_control"), &format!("+{c}")) {
                log::debug!(target: "agent::cgroup", "cannot enable {c} in {}: {e}", dir.display());
            }
        }
    }

    fn enabled_in(&self, dir: &Path, controller: &str) -> bool {
        read_words(&dir.join("cgroup.controllers")).contains(controller)
    }

    /// Create a scope with its limits; returns its path.
    pub fn create_service_scope(
        &self,
        slice: &str,
        service: &str,
        generation: u32,
        limits: &ScopeLimits,
    ) -> io::Result<PathBuf> {
        let path = self.scope_path(slice, service, generation);
        match fs::create_dir(&path) {
            Ok(()) => {}
            // The supervisor never spawns into a scope of its own that is
            // busy: processes here are a leftover that would not die.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !self.scope_empty(&path) => {
                return Err(io::Error::other(format!(
                    "{} still holds processes left by an earlier agent that would not die",
                    path.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        self.apply_limits(&path, limits)?;
        Ok(path)
    }

    fn apply_limits(&self, path: &Path, limits: &ScopeLimits) -> io::Result<()> {
        let set = |controller: &str, file: &str, value: String| -> io::Result<()> {
            if self.enabled_in(path, controller) {
                write_file(&path.join(file), &value)
                    .map_err(|e| io::Error::new(e.kind(), format!("{file} = {value}: {e}")))
            } else {
                self.warn_once(controller, file);
                Ok(())
            }
        };
        if let Some(m) = limits.memory_max {
            set("memory", "memory.max", m.to_string())?;
        }
        if let Some(w) = limits.cpu_weight {
            set("cpu", "cpu.weight", w.to_string())?;
        }
        if let Some(p) = limits.pids_max {
            set("pids", "pids.max", p.to_string())?;
        }
        match &limits.io_max {
            None => {}
            Some(IoMax::Line(line)) => set("io", "io.max", line.clone())?,
            Some(IoMax::BytesPerSec(n)) => {
                let devices = block_devices();
                if devices.is_empty() && self.enabled_in(path, "io") {
                    log::warn!(target: "agent::cgroup", "io.max: no block devices to limit");
                }
                for dev in devices {
                    set("io", "io.max", format!("{dev} rbps={n} wbps={n}"))?;
                }
            }
        }
        Ok(())
    }

    /// SIGTERM every process of a scope (a graceful stop). Processes forked
    /// while this runs are caught by the SIGKILL that follows a timeout.
    pub fn signal_scope(&self, path: &Path, signal: rustix::process::Signal) -> usize {
        let mut n = 0;
        for pid in read_pids(path) {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                if rustix::process::kill_process(p, signal).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }

    /// SIGKILL everything in a scope at once (`cgroup.kill`); on kernels
    /// without it, freeze the scope, SIGKILL every member, thaw.
    pub fn kill_scope(&self, path: &Path) -> io::Result<()> {
        if !path.exists() {
            return Ok(());
        }
        if self.has_kill {
            return write_file(&path.join("cgroup.kill"), "1");
        }
        let _ = write_file(&path.join("cgroup.freeze"), "1");
        for pid in read_pids(path) {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        let _ = write_file(&path.join("cgroup.freeze"), "0");
        Ok(())
    }

    /// Kills and removes the service scopes a previous agent left under
    /// `pact.slice` (one that was killed or crashed, not as PID 1): their
    /// processes run unsupervised, and new instances would join them.
    /// `workload.slice` is never touched. Returns the scopes removed and
    /// those that would not empty (left; no service starts in them).
    pub fn sweep_leftover_scopes(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut swept = Vec::new();
        let slices = fs::read_dir(self.root.join(slices::PACT_ROOT))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir());
        for slice in slices {
            let scopes = fs::read_dir(&slice)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && p.extension().is_some_and(|x| x == "scope"));
            for scope in scopes {
                if !self.scope_empty(&scope) {
                    let _ = self.kill_scope(&scope);
                }
                swept.push(scope);
            }
        }
        // Killed processes take a moment to leave their scopes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let (mut removed, mut left) = (Vec::new(), Vec::new());
        for scope in swept {
            while !self.scope_empty(&scope) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            match self.remove_scope(&scope) {
                Ok(()) => removed.push(scope),
                Err(e) => {
                    log::warn!(target: "agent::cgroup", "cannot remove the leftover scope {}: {e}", scope.display());
                    left.push(scope);
                }
            }
        }
        (removed, left)
    }

    /// Remove an empty scope directory.
    pub fn remove_scope(&self, path: &Path) -> io::Result<()> {
        match fs::remove_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// `populated 0` in `cgroup.events` (a missing scope counts as empty).
    pub fn scope_empty(&self, path: &Path) -> bool {
        match fs::read_to_string(path.join("cgroup.events")) {
            Ok(text) => text.lines().any(|l| l.trim() == "populated 0"),
            Err(_) => true,
        }
    }

    /// The `oom_kill` counter of `memory.events`.
    pub fn oom_kills(&self, path: &Path) -> u64 {
        fs::read_to_string(path.join("memory.events"))
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|v| v.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }
}

impl CgroupManager for CgroupTree {
    fn create_hierarchy(&self) -> Result<(), CgroupError> {
        self.enable_controllers(&self.root);
        for dir in [slices::PACT_ROOT, slices::WORKLOAD_ROOT] {
            create_dir(&self.root.join(dir))?;
            self.enable_controllers(&self.root.join(dir));
        }
        for slice in [
            slices::PACT_INFRA,
            slices::PACT_NETWORK,
            slices::PACT_GPU,
            slices::PACT_AUDIT,
        ] {
            let dir = self.root.join(slice);
            create_dir(&dir)?;
            self.enable_controllers(&dir);
        }
        Ok(())
    }

    fn create_scope(
        &self,
        parent_slice: &str,
        name: &str,
        limits: &ResourceLimits,
    ) -> Result<CgroupHandle, CgroupError> {
        if let Some(owner @ hpc_node::SliceOwner::Workload) =
            hpc_node::cgroup::slice_owner(parent_slice)
        {
            return Err(CgroupError::PermissionDenied {
                path: parent_slice.to_string(),
                owner,
            });
        }
        let ours = ScopeLimits {
            memory_max: limits.memory_max,
            cpu_weight: limits.cpu_weight,
            io_max: limits.io_max.map(IoMax::BytesPerSec),
            pids_max: None,
        };
        let path = self
            .create_service_scope(parent_slice, name, 0, &ours)
            .map_err(|e| CgroupError::CreationFailed {
                reason: e.to_string(),
            })?;
        Ok(CgroupHandle {
            path: path.to_string_lossy().into_owned(),
        })
    }

    /// Blocking variant for trait users (not used on the agent's loop,
    /// which kills, waits for `cgroup.events` and removes separately).
    fn destroy_scope(&self, handle: &CgroupHandle) -> Result<(), CgroupError> {
        let path = Path::new(&handle.path);
        self.kill_scope(path).map_err(|e| CgroupError::KillFailed {
            path: handle.path.clone(),
            reason: e.to_string(),
        })?;
        for _ in 0..100 {
            if self.scope_empty(path) {
                return self.remove_scope(path).map_err(CgroupError::Io);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(CgroupError::KillFailed {
            path: handle.path.clone(),
            reason: "scope did not empty within 1 s".to_string(),
        })
    }

    fn read_metrics(&self, path: &str) -> Result<CgroupMetrics, CgroupError> {
        let p = if Path::new(path).is_absolute() {
            PathBuf::from(path)
        } else {
            self.root.join(path)
        };
        if !p.exists() {
            return Err(CgroupError::NotFound {
                path: path.to_string(),
            });
        }
        let num = |f: &str| {
            fs::read_to_string(p.join(f))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let usage = fs::read_to_string(p.join("cpu.stat")).ok().and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("usage_usec ")
                    .and_then(|v| v.trim().parse().ok())
            })
        });
        Ok(CgroupMetrics {
            memory_current: num("memory.current").unwrap_or(0),
            memory_max: num("memory.max"),
            cpu_usage_usec: usage.unwrap_or(0),
            nr_processes: read_pids(&p).len() as u32,
        })
    }

    fn is_scope_empty(&self, handle: &CgroupHandle) -> Result<bool, CgroupError> {
        Ok(self.scope_empty(Path::new(&handle.path)))
    }
}

fn create_dir(p: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(CgroupError::CreationFailed {
            reason: format!("{}: {e}", p.display()),
        }),
    }
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

fn read_words(path: &Path) -> BTreeSet<String> {
    fs::read_to_string(path)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Members of a cgroup (`cgroup.procs`).
pub fn read_pids(path: &Path) -> Vec<i32> {
    fs::read_to_string(path.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// cgroup.kill appeared in Linux 5.14.
fn kernel_has_cgroup_kill() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (5, 14)
}

/// `MAJ:MIN` of the whole-disk block devices (no loop, ram or zram).
fn block_devices() -> Vec<String> {
    let Ok(dir) = fs::read_dir("/sys/block") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            !(n.starts_with("loop") || n.starts_with("ram") || n.starts_with("zram"))
        })
        .filter_map(|e| fs::read_to_string(e.path().join("dev")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}
