//! The agent's event loop: one thread, one `mio::Poll`.
//!
//! Which fd wakes it, and who owns it:
//! - `SIGNALS`: the signalfd ([`super::signals`]) — SIGCHLD reaps, SIGTERM/
//!   SIGINT/SIGPWR shut down, SIGHUP reloads;
//! - `CONTROL`: the control socket listener, then one token per connection
//!   ([`super::control`]);
//! - `INOTIFY`: `cgroup.events` (scope emptied) and `memory.events` (OOM)
//!   of every scope;
//! - `READY`: the readiness socket, once the node is ready;
//! - per service: its output pipe, its ready pipe or notify socket, and
//!   a health probe's TCP socket while one runs.
//!
//! The poll timeout is the nearest real deadline (supervisor timers, probe
//! timeouts, waiting requests, idle connections); with none, the loop
//! sleeps until an fd wakes it.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::applier::Applier;
use super::boot::BootSequence;
use super::cgroup::CgroupTree;
use super::control::ControlServer;
use super::health::{Outcome, Probe};
use super::logs::LogStore;
use super::notify::{Notice, NotifySocket};
use super::phases::CgroupChoice;
use super::signals::SignalFd;
use super::spawn::{spawn_service, Placement};
use super::supervisor::{Action, Supervisor};
use super::watchdog::Watchdog;
use super::{pid1, readiness};
use crate::config::agent::AgentConfig;
use crate::config::services::{ReadyMode, ServiceSet};

pub(super) const SIGNALS: Token = Token(0);
pub(super) const CONTROL: Token = Token(1);
pub(super) const INOTIFY: Token = Token(2);
pub(super) const READY: Token = Token(3);
/// The one waker of the poll: the apply worker and the resolver use it.
pub(super) const WAKE: Token = Token(4);
/// The journal link's socket.
pub(super) const JOURNAL: Token = Token(5);
const FIRST_DYNAMIC: usize = 16;

/// How the agent leaves its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitPlan {
    /// Not PID 1: exit with this code.
    Exit(i32),
    PowerOff,
    Reboot,
}

/// What a dynamic token stands for.
pub(super) enum Source {
    Conn,
    Output {
        service: String,
        fd: OwnedFd,
    },
    ReadyPipe {
        service: String,
        fd: OwnedFd,
    },
    /// The close-on-exec error pipe of process `pid` (in `exec_watches`).
    ExecStatus {
        pid: u32,
    },
    Notify {
        service: String,
    },
    Probe,
}

/// A child's close-on-exec error pipe, watched by the loop until it says
/// whether the exec worked; a failure is kept for the reap to report.
struct ExecWatch {
    binary: PathBuf,
    pipe: OwnedFd,
    /// Its token while registered (until the pipe has spoken).
    token: Option<Token>,
    failed: Option<io::Error>,
}

/// What an inotify watch is for.
#[derive(Clone)]
struct Watch {
    service: String,
    scope: u32,
    oom: bool,
}

/// A scope the loop knows about.
struct Scope {
    path: PathBuf,
    wds: Vec<i32>,
    ooms: u64,
    /// Given up on as a zombie: still watched, removed once it empties.
    abandoned: bool,
}

/// A request waiting for a service to reach a state.
pub(super) struct Waiter {
    pub token: Token,
    pub service: String,
    pub want_running: bool,
    pub deadline: Instant,
    /// The service's stops (or readies, when waiting for it to run) when
    /// the request came: one more means it happened.
    pub seen: u32,
}

pub struct Agent {
    /// Per child pid: its binary and the read end of its exec-error pipe
    /// (read when it is reaped).
    /// Children whose exec the loop has not seen succeed yet, by pid.
    exec_watches: HashMap<u32, ExecWatch>,
    pub(super) poll: Poll,
    pub(super) cfg: AgentConfig,
    pub(super) pid1: bool,
    pub(super) sup: Supervisor,
    pub(super) services: ServiceSet,
    /// The overlay's other declarations (sysctls, files, mounts, modules).
    pub(super) declared: crate::config::overlay::Overlay,
    pub(super) applier: Applier,
    /// PullOverlay waits for the applier.
    pub(super) boot_apply_pending: bool,
    pub(super) waker: std::sync::Arc<mio::Waker>,
    pub(super) journal: Option<super::journal_link::JournalLink>,
    pub(super) journal_view: super::journal_sync::JournalView,
    /// The cached view, the fallback while the journal is unreachable.
    pub(super) journal_cache: Option<super::journal_sync::JournalView>,
    /// PullOverlay gives up waiting for the journal at this time.
    pub(super) pull_deadline: Option<Instant>,
    /// The declaration file reloads re-read.
    pub(super) services_file: Option<PathBuf>,
    /// The declarations file being read ahead for PullOverlay.
    pub(super) prefetched: Option<(
        PathBuf,
        std::thread::JoinHandle<super::phases::Declarations>,
    )>,
    pub(super) cgroups: Option<CgroupTree>,
    signals: SignalFd,
    pub(super) control: ControlServer,
    inotify: Option<OwnedFd>,
    watches: HashMap<i32, Watch>,
    scopes: HashMap<(String, u32), Scope>,
    /// Process groups, for scopes without cgroups.
    pgids: HashMap<String, u32>,
    pub(super) logs: LogStore,
    pub(super) sources: HashMap<Token, Source>,
    next_token: usize,
    notify: HashMap<String, (Token, NotifySocket)>,
    probes: HashMap<Token, Probe>,
    pub(super) waiters: Vec<Waiter>,
    ready_listener: Option<mio::net::UnixListener>,
    pub(super) started: Instant,
    /// Kernel uptime (CLOCK_BOOTTIME) when the agent started, in ms.
    pub(super) kernel_ms_at_start: f64,
    pub(super) boot: BootSequence,
    pub(super) cgroup_choice: CgroupChoice,
    pub(super) watchdog: Option<Watchdog>,
    pub(super) watchdog_missing_logged: bool,
    pub(super) ready_at: Option<Instant>,
    pub(super) stalled: Option<Vec<String>>,
    wall_anchor: (Instant, SystemTime),
    pub(super) exit: Option<ExitPlan>,
    pub(super) reboot_requested: bool,
    panics: Vec<Instant>,
    pub(super) orphans_reaped: u64,
    pub(super) stall_hook: bool,
}

impl Agent {
    /// Everything set up that the loop needs; the boot phases do the rest.
    pub fn new(
        cfg: AgentConfig,
        pid1: bool,
        started: Instant,
        services_file: Option<PathBuf>,
        cgroup_choice: CgroupChoice,
        signals: SignalFd,
        control: ControlServer,
    ) -> io::Result<Agent> {
        let poll = Poll::new()?;
        let mut control = control;
        poll.registry()
            .register(&mut SourceFd(&signals.raw()), SIGNALS, Interest::READABLE)?;
        poll.registry()
            .register(&mut control.listener, CONTROL, Interest::READABLE)?;
        let inotify = rustix::fs::inotify::init(
            rustix::fs::inotify::CreateFlags::CLOEXEC | rustix::fs::inotify::CreateFlags::NONBLOCK,
        )?;
        poll.registry().register(
            &mut SourceFd(&inotify.as_raw_fd()),
            INOTIFY,
            Interest::READABLE,
        )?;
        let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
        let applier = Applier::new(
            waker.clone(),
            super::apply::ApplyEnv {
                root: PathBuf::from("/"),
                etc: PathBuf::from("/etc"),
                modules_dir: cfg
                    .boot
                    .modules_dir
                    .clone()
                    .unwrap_or_else(super::hardware::default_modules_dir),
                system: true,
            },
        );
        let tun = super::tunables(&cfg);
        let sup = Supervisor::new(tun, &ServiceSet::default(), started);
        let logs = LogStore::new(
            &cfg.log_dir(),
            cfg.logs.max_bytes.0,
            cfg.logs.keep,
            cfg.logs.tail_lines,
        );
        let stall_hook = cfg.watchdog.stall_hook;
        Ok(Agent {
            poll,
            cfg,
            pid1,
            sup,
            services: ServiceSet::default(),
            declared: Default::default(),
            applier,
            boot_apply_pending: false,
            waker,
            journal: None,
            journal_view: Default::default(),
            journal_cache: None,
            pull_deadline: None,
            services_file,
            prefetched: None,
            cgroups: None,
            signals,
            control,
            inotify: Some(inotify),
            watches: HashMap::new(),
            scopes: HashMap::new(),
            pgids: HashMap::new(),
            logs,
            sources: HashMap::new(),
            next_token: FIRST_DYNAMIC,
            notify: HashMap::new(),
            probes: HashMap::new(),
            waiters: Vec::new(),
            ready_listener: None,
            started,
            kernel_ms_at_start: boottime_ms(),
            boot: BootSequence::new(started),
            cgroup_choice,
            watchdog: None,
            watchdog_missing_logged: false,
            ready_at: None,
            stalled: None,
            wall_anchor: (Instant::now(), SystemTime::now()),
            exit: None,
            reboot_requested: false,
            panics: Vec::new(),
            orphans_reaped: 0,
            exec_watches: HashMap::new(),
            stall_hook,
        })
    }

    /// The watchdog, for the last steps of a PID-1 shutdown.
    pub fn take_watchdog(&mut self) -> Option<Watchdog> {
        self.watchdog.take()
    }

    pub(super) fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    /// Wall-clock time of a loop instant.
    pub(super) fn wall(&self, t: Instant) -> SystemTime {
        if t >= self.wall_anchor.0 {
            self.wall_anchor.1 + (t - self.wall_anchor.0)
        } else {
            self.wall_anchor.1 - (self.wall_anchor.0 - t)
        }
    }

    /// Run until shutdown completes; returns what to do then.
    pub fn run(&mut self) -> ExitPlan {
        let now = Instant::now();
        log::debug!(target: "agent::loop", "loop starts at {:.1} ms", now.saturating_duration_since(self.started).as_secs_f64() * 1000.0);
        self.open_watchdog(now, false);
        self.start_journal_link(now);
        self.drive_boot(now);
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!(target: "agent::loop", "poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            let now = Instant::now();
            for ev in events.iter() {
                let (token, readable, writable) = (
                    ev.token(),
                    ev.is_readable() || ev.is_read_closed(),
                    ev.is_writable(),
                );
                self.guarded(|a| a.dispatch(token, readable, writable, now));
            }
            self.guarded(|a| a.on_timers(Instant::now()));
            self.guarded(|a| a.check_waiters(Instant::now()));
            self.guarded(|a| a.drive_boot(Instant::now()));
            if let Some(plan) = self.exit.take() {
                return plan;
            }
        }
    }

    /// Run one step; a panic is caught, logged and counted. Too many in a
    /// minute: as PID 1 the node reboots cleanly, otherwise the agent exits.
    fn guarded(&mut self, f: impl FnOnce(&mut Agent)) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if result.is_err() {
            let now = Instant::now();
            self.panics
                .retain(|t| now.saturating_duration_since(*t) < Duration::from_secs(60));
            self.panics.push(now);
            log::error!(target: "agent::loop", "recovered from a panic ({} in the last minute)", self.panics.len());
            if self.panics.len() >= 10 {
                log::error!(target: "agent::loop", "too many panics: shutting down cleanly");
                self.reboot_requested = self.pid1;
                let actions = self.sup.shutdown(now);
                self.perform(now, actions);
                if self.pid1 {
                    self.exit.get_or_insert(ExitPlan::Reboot);
                } else {
                    self.exit.get_or_insert(ExitPlan::Exit(70));
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.sup.next_deadline(),
            self.probes.values().map(|p| p.deadline).min(),
            self.waiters.iter().map(|w| w.deadline).min(),
            self.control.next_deadline(),
            self.boot.next_deadline(),
            self.watchdog
                .as_ref()
                .and_then(|w| w.schedule.next_deadline()),
            self.journal.as_ref().and_then(|j| j.next_deadline()),
            self.pull_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn dispatch(&mut self, token: Token, readable: bool, _writable: bool, now: Instant) {
        match token {
            SIGNALS => self.on_signals(now),
            CONTROL => {
                let mut next = self.next_token;
                self.control.accept(self.poll.registry(), now, || {
                    let t = Token(next);
                    next += 1;
                    t
                });
                for t in self.next_token..next {
                    self.sources.insert(Token(t), Source::Conn);
                }
                self.next_token = next;
            }
            INOTIFY => self.on_inotify(now),
            READY => self.on_ready_socket(),
            WAKE => {
                self.on_applied(now);
                if let Some(link) = &mut self.journal {
                    link.on_timer(self.poll.registry(), now);
                }
            }
            JOURNAL => self.on_journal(now),
            t => match self.sources.get(&t) {
                Some(Source::Conn) => self.on_connection(t, now),
                Some(Source::Output { .. }) if readable => self.on_output(t),
                Some(Source::ReadyPipe { .. }) if readable => self.on_ready_pipe(t, now),
                Some(Source::ExecStatus { pid }) => {
                    let pid = *pid;
                    self.on_exec_pipe(pid, now);
                }
                Some(Source::Notify { service }) => {
                    let service = service.clone();
                    self.on_notify(&service, now);
                }
                Some(Source::Probe) => self.on_probe(t, now),
                _ => {}
            },
        }
    }

    fn on_signals(&mut self, now: Instant) {
        let signals = match self.signals.read() {
            Ok(s) => s,
            Err(e) => {
                log::error!(target: "agent::loop", "signalfd: {e}");
                return;
            }
        };
        for s in signals {
            match s {
                libc::SIGCHLD => self.reap(now),
                libc::SIGHUP if self.sup.is_shutting_down() => {
                    log::info!(target: "agent::loop", "SIGHUP ignored: shutting down");
                }
                libc::SIGHUP => {
                    log::info!(target: "agent::loop", "SIGHUP: reloading service declarations");
                    if let Err(e) = self.reload(now) {
                        log::error!(target: "agent::loop", "reload failed, keeping the running set: {e}");
                    }
                }
                libc::SIGTERM | libc::SIGINT | libc::SIGPWR => {
                    log::info!(target: "agent::loop", "{}: shutting down", super::signals::name(s));
                    self.begin_shutdown(now, false);
                }
                other => {
                    log::info!(target: "agent::loop", "{} ignored", super::signals::name(other));
                }
            }
        }
    }

    pub(super) fn begin_shutdown(&mut self, now: Instant, reboot: bool) {
        self.reboot_requested |= reboot;
        if !self.sup.is_shutting_down() {
            // The node stops being ready the moment it starts going down:
            // the workload manager must not place work on it any more.
            if let Some(mut l) = self.ready_listener.take() {
                let _ = self.poll.registry().deregister(&mut l);
            }
            readiness::clear(&self.cfg.ready_file(), &self.cfg.ready_socket());
            let t = self.cfg.watchdog.shutdown_timeout_seconds;
            if let Some(wd) = &mut self.watchdog {
                wd.arm_for_shutdown(t, now);
            }
        }
        let actions = self.sup.shutdown(now);
        self.perform(now, actions);
    }

    fn reap(&mut self, now: Instant) {
        for (pid, status) in pid1::reap() {
            let exit = pid1::exit_of(status);
            let service = self.sup.service_of_pid(pid).map(str::to_string);
            // Its exec pipe, if the loop has not settled it: the child is
            // gone, so it holds the errno or EOF now.
            let exec_failed = self.unwatch_exec(pid).and_then(|mut w| {
                let failed = w
                    .failed
                    .take()
                    .or_else(|| super::spawn::exec_error(&w.pipe));
                if failed.is_none() {
                    // Ran, and ended before the loop saw its exec.
                    if let Some(s) = &service {
                        let actions = self.sup.on_exec_ok(now, s, pid);
                        self.perform(now, actions);
                    }
                }
                failed.map(|e| (w.binary, e))
            });
            match service {
                Some(s) => {
                    if let Some((bin, e)) = exec_failed {
                        // Never ran: a start failure, not a crash. ENOENT
                        // for a file that is there is its #! interpreter
                        // (or ELF loader) missing.
                        let hint = if e.kind() == std::io::ErrorKind::NotFound && bin.is_file() {
                            missing_loader(&bin)
                        } else {
                            String::new()
                        };
                        let what = format!("cannot start {}: {e}{hint}", bin.display());
                        let lines = self.logs.note(&s, &what);
                        self.push_log_lines(&s, &lines);
                        let reason = format!("{}: {e}{hint}", bin.display());
                        let actions = self.sup.on_spawn_failed(now, &s, &reason);
                        self.perform(now, actions);
                        continue;
                    }
                    let lines = self.logs.note(
                        &s,
                        &format!("main process {pid} ended: {}", exit.describe()),
                    );
                    self.push_log_lines(&s, &lines);
                    if let Some(actions) = self.sup.on_exit(now, pid, exit) {
                        self.perform(now, actions);
                    }
                }
                None => self.orphans_reaped += 1,
            }
        }
    }

    /// Carry out supervisor actions (and the actions they lead to).
    pub(super) fn perform(&mut self, now: Instant, actions: Vec<Action>) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let more = match action {
                Action::Spawn { service, scope } => self.spawn(now, &service, scope),
                Action::TermScope { service, scope } => {
                    self.signal_scope(&service, scope, rustix::process::Signal::TERM);
                    vec![]
                }
                Action::KillScope { service, scope } => self.kill_scope(now, &service, scope),
                Action::RemoveScope { service, scope } => {
                    self.drop_scope(&service, scope, true);
                    vec![]
                }
                Action::AbandonScope { service, scope } => {
                    let lines = self.logs.note(
                        &service,
                        &format!("scope {scope} would not empty; abandoned as a zombie"),
                    );
                    self.push_log_lines(&service, &lines);
                    // Still watched: removed if its processes ever go.
                    match self.scopes.get_mut(&(service.clone(), scope)) {
                        Some(s) => s.abandoned = true,
                        None => self.drop_scope(&service, scope, false),
                    }
                    vec![]
                }
                Action::Probe { service } => self.start_probe(now, &service),
                Action::BootReady => {
                    self.stalled = None;
                    self.boot_services_settled(now, None);
                    vec![]
                }
                Action::BootStalled { failed } => {
                    log::error!(target: "agent::loop", "services failed to start: {}", failed.join(", "));
                    self.stalled = Some(failed.clone());
                    self.boot_services_settled(now, Some(failed));
                    vec![]
                }
                Action::ShutdownComplete => {
                    self.exit = Some(match (self.pid1, self.reboot_requested) {
                        (true, true) => ExitPlan::Reboot,
                        (true, false) => ExitPlan::PowerOff,
                        (false, _) => ExitPlan::Exit(0),
                    });
                    vec![]
                }
            };
            queue.extend(more);
        }
    }

    fn spawn(&mut self, now: Instant, service: &str, scope: u32) -> Vec<Action> {
        let Some(spec) = self.sup.get(service).map(|r| r.spec.clone()) else {
            return vec![];
        };
        // The scope first (RI2): the process is born inside it.
        let mut scope_path: Option<PathBuf> = None;
        if let Some(cg) = &self.cgroups {
            let path = match cg.create_service_scope(&spec.slice, service, scope, &spec.limits) {
                Ok(p) => p,
                Err(e) => {
                    let path = cg.scope_path(&spec.slice, service, scope);
                    let _ = cg.remove_scope(&path);
                    return self.sup.on_spawn_failed(
                        now,
                        service,
                        &format!("cgroup scope {}: {e}", path.display()),
                    );
                }
            };
            self.watch_scope(service, scope, &path);
            scope_path = Some(path);
        }
        let notify_path = if spec.ready == ReadyMode::Notify {
            match self.notify_socket(service, spec.user) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.drop_scope(service, scope, true);
                    return self
                        .sup
                        .on_spawn_failed(now, service, &format!("notify socket: {e}"));
                }
            }
        } else {
            None
        };
        let place = Placement {
            scope: scope_path.as_deref(),
            notify_socket: notify_path.as_deref(),
        };
        match spawn_service(&spec, &place) {
            Ok(child) => {
                let lines = self.logs.note(
                    service,
                    &format!("started {} (pid {})", spec.binary.display(), child.pid),
                );
                self.push_log_lines(service, &lines);
                self.pgids.insert(service.to_string(), child.pid);
                let pipe = child.exec_status.as_raw_fd();
                let t = self.token();
                let token =
                    match self
                        .poll
                        .registry()
                        .register(&mut SourceFd(&pipe), t, Interest::READABLE)
                    {
                        Ok(()) => {
                            self.sources
                                .insert(t, Source::ExecStatus { pid: child.pid });
                            Some(t)
                        }
                        Err(e) => {
                            // Then the reap tells whether the exec worked; until
                            // then a `spawned` service stays starting.
                            log::warn!(target: "agent::loop", "cannot watch an exec pipe: {e}");
                            None
                        }
                    };
                self.exec_watches.insert(
                    child.pid,
                    ExecWatch {
                        binary: spec.binary.clone(),
                        pipe: child.exec_status,
                        token,
                        failed: None,
                    },
                );
                self.register_fd(child.output, |fd| Source::Output {
                    service: service.to_string(),
                    fd,
                });
                if let Some(r) = child.ready {
                    self.register_fd(r, |fd| Source::ReadyPipe {
                        service: service.to_string(),
                        fd,
                    });
                }
                self.sup.on_spawned(now, service, child.pid)
            }
            Err(e) => {
                self.drop_scope(service, scope, true);
                let lines = self.logs.note(
                    service,
                    &format!("cannot start {}: {e}", spec.binary.display()),
                );
                self.push_log_lines(service, &lines);
                self.sup
                    .on_spawn_failed(now, service, &format!("{}: {e}", spec.binary.display()))
            }
        }
    }

    fn register_fd(&mut self, fd: OwnedFd, make: impl FnOnce(OwnedFd) -> Source) {
        let t = self.token();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut SourceFd(&fd.as_raw_fd()), t, Interest::READABLE)
        {
            log::warn!(target: "agent::loop", "cannot watch a pipe: {e}");
            return;
        }
        self.sources.insert(t, make(fd));
    }

    fn unregister(&mut self, t: Token) {
        if let Some(src) = self.sources.remove(&t) {
            let raw = match &src {
                Source::Output { fd, .. } | Source::ReadyPipe { fd, .. } => Some(fd.as_raw_fd()),
                _ => None,
            };
            if let Some(raw) = raw {
                let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
            }
        }
    }

    fn notify_socket(&mut self, service: &str, owner: Option<(u32, u32)>) -> io::Result<PathBuf> {
        if let Some((_, s)) = self.notify.get(service) {
            return Ok(s.path.clone());
        }
        let dir = self.cfg.state_dir().join("notify");
        let mut sock = NotifySocket::bind(&dir, service, owner)?;
        let t = self.token();
        self.poll
            .registry()
            .register(&mut sock.sock, t, Interest::READABLE)?;
        let path = sock.path.clone();
        self.sources.insert(
            t,
            Source::Notify {
                service: service.to_string(),
            },
        );
        self.notify.insert(service.to_string(), (t, sock));
        Ok(path)
    }

    fn watch_scope(&mut self, service: &str, scope: u32, path: &Path) {
        let mut wds = Vec::new();
        if let Some(ino) = &self.inotify {
            for (file, oom) in [("cgroup.events", false), ("memory.events", true)] {
                let p = path.join(file);
                if !p.exists() {
                    continue;
                }
                match rustix::fs::inotify::add_watch(
                    ino,
                    &p,
                    rustix::fs::inotify::WatchFlags::MODIFY,
                ) {
                    Ok(wd) => {
                        wds.push(wd);
                        self.watches.insert(
                            wd,
                            Watch {
                                service: service.to_string(),
                                scope,
                                oom,
                            },
                        );
                    }
                    Err(e) => {
                        log::warn!(target: "agent::cgroup", "cannot watch {}: {e}", p.display())
                    }
                }
            }
        }
        let ooms = self.cgroups.as_ref().map_or(0, |c| c.oom_kills(path));
        self.scopes.insert(
            (service.to_string(), scope),
            Scope {
                path: path.to_path_buf(),
                wds,
                ooms,
                abandoned: false,
            },
        );
    }

    fn drop_scope(&mut self, service: &str, scope: u32, remove_dir: bool) {
        if let Some(s) = self.scopes.remove(&(service.to_string(), scope)) {
            for wd in s.wds {
                self.watches.remove(&wd);
                if let Some(ino) = &self.inotify {
                    let _ = rustix::fs::inotify::remove_watch(ino, wd);
                }
            }
            if remove_dir {
                if let Some(cg) = &self.cgroups {
                    if let Err(e) = cg.remove_scope(&s.path) {
                        log::debug!(target: "agent::cgroup", "rmdir {}: {e}", s.path.display());
                    }
                }
            }
        }
    }

    fn signal_scope(&mut self, service: &str, scope: u32, sig: rustix::process::Signal) {
        match (
            &self.cgroups,
            self.scopes.get(&(service.to_string(), scope)),
        ) {
            (Some(cg), Some(s)) => {
                cg.signal_scope(&s.path, sig);
            }
            _ => {
                if let Some(pg) = self.pgids.get(service).and_then(|p| pid1::pid(*p)) {
                    let _ = rustix::process::kill_process_group(pg, sig);
                }
            }
        }
    }

    fn kill_scope(&mut self, now: Instant, service: &str, scope: u32) -> Vec<Action> {
        match (
            &self.cgroups,
            self.scopes.get(&(service.to_string(), scope)),
        ) {
            (Some(cg), Some(s)) => {
                if let Err(e) = cg.kill_scope(&s.path) {
                    log::warn!(target: "agent::cgroup", "cgroup.kill {}: {e}", s.path.display());
                }
                if cg.scope_empty(&s.path) {
                    return self.sup.on_scope_empty(now, service, scope);
                }
                vec![] // cgroup.events will tell
            }
            _ => {
                // No cgroups: the process group is the best we have.
                if let Some(pg) = self.pgids.get(service).and_then(|p| pid1::pid(*p)) {
                    let _ = rustix::process::kill_process_group(pg, rustix::process::Signal::KILL);
                }
                self.sup.on_scope_empty(now, service, scope)
            }
        }
    }

    fn on_inotify(&mut self, now: Instant) {
        let Some(ino) = &self.inotify else { return };
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut hits: Vec<Watch> = Vec::new();
        let mut reader = rustix::fs::inotify::Reader::new(ino, &mut buf);
        while let Ok(ev) = reader.next() {
            if let Some(w) = self.watches.get(&ev.wd()) {
                hits.push(w.clone());
            }
        }
        for w in hits {
            let key = (w.service.clone(), w.scope);
            let Some(path) = self.scopes.get(&key).map(|s| s.path.clone()) else {
                continue;
            };
            let Some(cg) = &self.cgroups else { continue };
            let abandoned = self.scopes.get(&key).is_some_and(|s| s.abandoned);
            if w.oom && abandoned {
                continue;
            }
            if w.oom {
                let count = cg.oom_kills(&path);
                let seen = self.scopes.get(&key).map_or(0, |s| s.ooms);
                if count > seen {
                    if let Some(s) = self.scopes.get_mut(&key) {
                        s.ooms = count;
                    }
                    let limit = self
                        .sup
                        .get(&w.service)
                        .and_then(|r| r.spec.limits.memory_max);
                    let lines = self.logs.note(
                        &w.service,
                        &format!(
                            "killed by the kernel OOM killer in its scope (memory.max = {})",
                            limit.map_or("max".to_string(), |m| m.to_string())
                        ),
                    );
                    self.push_log_lines(&w.service, &lines);
                    for _ in seen..count {
                        self.sup.on_oom(now, &w.service);
                    }
                }
            } else if cg.scope_empty(&path) {
                if abandoned {
                    log::info!(target: "agent::cgroup", "{}: abandoned scope {} emptied at last; removed", w.service, path.display());
                    self.drop_scope(&w.service, w.scope, true);
                    continue;
                }
                let actions = self.sup.on_scope_empty(now, &w.service, w.scope);
                self.perform(now, actions);
            }
        }
    }

    /// Read what a pipe source has, without duplicating its fd.
    fn read_source(&self, t: Token, buf: &mut [u8]) -> io::Result<usize> {
        match self.sources.get(&t) {
            Some(Source::Output { fd, .. } | Source::ReadyPipe { fd, .. }) => {
                rustix::io::read(fd, buf).map_err(io::Error::from)
            }
            _ => Ok(0),
        }
    }

    fn on_output(&mut self, t: Token) {
        let Some(Source::Output { service, .. }) = self.sources.get(&t) else {
            return;
        };
        let service = service.clone();
        let mut buf = [0u8; 16384];
        let mut eof = false;
        // Bounded per wake-up so one chatty service cannot starve the loop.
        for _ in 0..16 {
            match self.read_source(t, &mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    let lines = self.logs.append(&service, &buf[..n]);
                    self.push_log_lines(&service, &lines);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if eof {
            self.unregister(t);
        }
    }

    /// Takes `pid`'s exec watch, its pipe no longer in the loop.
    fn unwatch_exec(&mut self, pid: u32) -> Option<ExecWatch> {
        self.stop_polling_exec(pid);
        self.exec_watches.remove(&pid)
    }

    /// Takes `pid`'s exec pipe out of the loop (it has spoken).
    fn stop_polling_exec(&mut self, pid: u32) {
        let Some(w) = self.exec_watches.get_mut(&pid) else {
            return;
        };
        if let Some(t) = w.token.take() {
            self.sources.remove(&t);
            let raw = w.pipe.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
        }
    }

    /// The exec pipe of `pid` has news: EOF (the exec worked: a `spawned`
    /// service is ready now) or the exec's errno (kept for the reap, which
    /// follows at once: the child exits after writing it).
    fn on_exec_pipe(&mut self, pid: u32, now: Instant) {
        let Some(w) = self.exec_watches.get(&pid) else {
            return;
        };
        match super::spawn::read_exec_status(&w.pipe) {
            super::spawn::ExecStatus::Pending => {}
            super::spawn::ExecStatus::Ran => {
                self.unwatch_exec(pid);
                if let Some(service) = self.sup.service_of_pid(pid).map(str::to_string) {
                    let actions = self.sup.on_exec_ok(now, &service, pid);
                    self.perform(now, actions);
                }
            }
            super::spawn::ExecStatus::Failed(e) => {
                self.stop_polling_exec(pid);
                if let Some(w) = self.exec_watches.get_mut(&pid) {
                    w.failed = Some(e);
                }
            }
        }
    }

    fn on_ready_pipe(&mut self, t: Token, now: Instant) {
        let Some(Source::ReadyPipe { service, .. }) = self.sources.get(&t) else {
            return;
        };
        let service = service.clone();
        let mut buf = [0u8; 256];
        let mut ready = false;
        let mut eof = false;
        loop {
            match self.read_source(t, &mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => ready |= buf[..n].contains(&b'\n'),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if ready || eof {
            self.unregister(t);
        }
        if ready {
            let actions = self.sup.on_ready(now, &service);
            self.perform(now, actions);
        }
    }

    fn on_notify(&mut self, service: &str, now: Instant) {
        let Some((_, sock)) = self.notify.get(service) else {
            return;
        };
        for notice in sock.drain() {
            match notice {
                Notice::Ready => {
                    let actions = self.sup.on_ready(now, service);
                    self.perform(now, actions);
                }
                Notice::Status(text) => self.sup.on_status_text(service, &text),
                Notice::Stopping => {
                    log::info!(target: "agent::supervisor", "{service}: says it is stopping")
                }
                Notice::Reloading => {
                    log::info!(target: "agent::supervisor", "{service}: says it is reloading")
                }
                Notice::Errno(n) => {
                    log::info!(target: "agent::supervisor", "{service}: reports errno {n}")
                }
            }
        }
    }

    fn start_probe(&mut self, now: Instant, service: &str) -> Vec<Action> {
        let Some(spec) = self.sup.get(service).and_then(|r| r.spec.health.clone()) else {
            return self.sup.on_health(now, service, true, "no check");
        };
        match Probe::start(service, &spec, now) {
            Ok(mut p) => {
                let t = self.token();
                if let Err(e) = self.poll.registry().register(
                    &mut p.stream,
                    t,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    return self
                        .sup
                        .on_health(now, service, false, &format!("register: {e}"));
                }
                self.sources.insert(t, Source::Probe);
                self.probes.insert(t, p);
                vec![]
            }
            Err(why) => self.sup.on_health(now, service, false, &why),
        }
    }

    fn on_probe(&mut self, t: Token, now: Instant) {
        let outcome = match self.probes.get_mut(&t) {
            Some(p) => p.on_ready(),
            None => return,
        };
        if let Outcome::Done(ok, why) = outcome {
            self.finish_probe(t, now, ok, &why);
        }
    }

    fn finish_probe(&mut self, t: Token, now: Instant, ok: bool, why: &str) {
        self.sources.remove(&t);
        if let Some(mut p) = self.probes.remove(&t) {
            let _ = self.poll.registry().deregister(&mut p.stream);
            let actions = self.sup.on_health(now, &p.service, ok, why);
            self.perform(now, actions);
        }
    }

    fn on_timers(&mut self, now: Instant) {
        self.pet_watchdog(now);
        if let Some(link) = &mut self.journal {
            link.on_timer(self.poll.registry(), now);
        }
        if self.pull_deadline.is_some_and(|d| d <= now) {
            self.pull_timed_out(now);
        }
        if self.sup.next_deadline().is_some_and(|d| d <= now) {
            let actions = self.sup.on_timer(now);
            self.perform(now, actions);
        }
        let late: Vec<Token> = self
            .probes
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            if let Some(Outcome::Done(ok, why)) = self.probes.get(&t).map(Probe::timed_out) {
                self.finish_probe(t, now, ok, &why);
            }
        }
        self.control.expire_idle(self.poll.registry(), now);
        self.sources
            .retain(|t, s| !matches!(s, Source::Conn) || self.control.owns(*t));
    }

    pub(super) fn bind_ready_socket(&mut self) {
        match readiness::bind(&self.cfg.ready_socket()) {
            Ok(mut l) => {
                if self
                    .poll
                    .registry()
                    .register(&mut l, READY, Interest::READABLE)
                    .is_ok()
                {
                    self.ready_listener = Some(l);
                }
            }
            Err(e) => {
                log::warn!(target: "agent::loop", "cannot bind {}: {e}", self.cfg.ready_socket().display())
            }
        }
    }

    fn on_ready_socket(&mut self) {
        if let Some(l) = &self.ready_listener {
            readiness::answer_all(l);
        }
    }

    /// Forward completed log lines to `service logs -f` streams.
    pub(super) fn push_log_lines(&mut self, service: &str, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        let followers = self.control.followers(service);
        if followers.is_empty() {
            return;
        }
        let mut chunk = String::new();
        for l in lines {
            chunk.push_str(l);
            chunk.push('\n');
        }
        for t in followers {
            self.control
                .send(self.poll.registry(), t, &[format!("body +{}", chunk.len())]);
            self.control
                .send_bytes(self.poll.registry(), t, chunk.as_bytes());
        }
    }
}

/// CLOCK_BOOTTIME in milliseconds: time since the kernel started.
fn boottime_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.cfg.ready_socket());
    }
}

/// Why a file that is there cannot be executed with ENOENT: its `#!`
/// interpreter, or the ELF loader it names, is missing.
fn missing_loader(bin: &std::path::Path) -> String {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(bin)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..n];
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
        let text = String::from_utf8_lossy(line);
        if let Some(interp) = text.split_whitespace().next() {
            return format!(
                "; the file is there, but its interpreter {interp} (the #! line) is missing"
            );
        }
    }
    "; the file is there, so the ELF loader it names is missing".to_string()
}
