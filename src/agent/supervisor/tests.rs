//! Supervisor tests on a fake clock. A tiny simulated driver carries out
//! actions: spawns get fresh pids, SIGTERM makes a process exit (unless the
//! test says it ignores SIGTERM), killed scopes report empty (unless the
//! test says they are stuck), probes wait for the test to answer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::config::services::{
    HealthKind, HealthSpec, ReadyMode, RestartPolicy, ScopeLimits, ServiceSet, ServiceSpec,
};

fn spec(name: &str, order: i64, deps: &[&str]) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        binary: PathBuf::from("/bin/true"),
        args: vec![],
        env: vec![],
        user: None,
        restart: RestartPolicy::Always,
        restart_delay: Duration::from_secs(1),
        order,
        depends_on: deps.iter().map(|s| s.to_string()).collect(),
        slice: "pact.slice/infra.slice".to_string(),
        limits: ScopeLimits::default(),
        health: None,
        ready: ReadyMode::Spawned,
        stop_timeout: Duration::from_secs(10),
        start_timeout: Duration::from_secs(60),
        working_directory: None,
        oom_score_adj: 0,
    }
}

fn set(specs: Vec<ServiceSpec>) -> ServiceSet {
    // Same ordering rule as the config loader.
    let order = crate::config::services::start_sequence(&specs).unwrap();
    ServiceSet {
        vcluster: "test".into(),
        services: order.into_iter().map(|i| specs[i].clone()).collect(),
    }
}

struct Sim {
    sup: Supervisor,
    t0: Instant,
    now: Instant,
    next_pid: u32,
    /// Every action in order, with the time it was issued.
    log: Vec<(Duration, Action)>,
    ignores_term: BTreeSet<String>,
    stuck_scopes: BTreeSet<String>,
    /// Busy scopes (service, generation).
    busy: BTreeSet<(String, u32)>,
    probes: Vec<String>,
    fail_spawn: BTreeSet<String>,
    /// Services whose exec is never confirmed (their pipe says nothing yet).
    fail_exec: BTreeSet<String>,
}

impl Sim {
    fn new(specs: Vec<ServiceSpec>) -> Sim {
        Sim::with(specs, Tunables::default())
    }

    fn with(specs: Vec<ServiceSpec>, tun: Tunables) -> Sim {
        let t0 = Instant::now();
        Sim {
            sup: Supervisor::new(tun, &set(specs), t0),
            t0,
            now: t0,
            next_pid: 100,
            log: vec![],
            ignores_term: BTreeSet::new(),
            stuck_scopes: BTreeSet::new(),
            busy: BTreeSet::new(),
            probes: vec![],
            fail_spawn: BTreeSet::new(),
            fail_exec: BTreeSet::new(),
        }
    }

    fn at(&self) -> Duration {
        self.now - self.t0
    }

    fn apply(&mut self, actions: Vec<Action>) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            self.log.push((self.at(), a.clone()));
            let more = match a {
                Action::Spawn { service, scope } => {
                    if self.fail_spawn.contains(&service) {
                        self.sup
                            .on_spawn_failed(self.now, &service, "cgroup creation failed")
                    } else {
                        self.busy.insert((service.clone(), scope));
                        self.next_pid += 1;
                        let mut more = self.sup.on_spawned(self.now, &service, self.next_pid);
                        if !self.fail_exec.contains(&service) {
                            more.extend(self.sup.on_exec_ok(self.now, &service, self.next_pid));
                        }
                        more
                    }
                }
                Action::TermScope { service, .. } => {
                    if self.ignores_term.contains(&service) {
                        vec![]
                    } else {
                        self.exit_now(&service, Exit::Signal(15))
                    }
                }
                Action::KillScope { service, scope } => {
                    let mut v = vec![];
                    if self.sup.get(&service).is_some_and(|r| r.pid.is_some()) {
                        v.extend(self.exit_now(&service, Exit::Signal(9)));
                    }
                    if !self.stuck_scopes.contains(&service)
                        && self.busy.remove(&(service.clone(), scope))
                    {
                        v.extend(self.sup.on_scope_empty(self.now, &service, scope));
                    }
                    v
                }
                Action::AbandonScope { service, scope } => {
                    self.busy.remove(&(service, scope));
                    vec![]
                }
                Action::Probe { service } => {
                    self.probes.push(service);
                    vec![]
                }
                _ => vec![],
            };
            queue.extend(more);
        }
    }

    fn exit_now(&mut self, service: &str, exit: Exit) -> Vec<Action> {
        let pid = self.sup.get(service).and_then(|r| r.pid).expect("running");
        self.sup.on_exit(self.now, pid, exit).expect("known pid")
    }

    fn start(&mut self) {
        let a = self.sup.start_all(self.now);
        self.apply(a);
    }

    /// The main process of `service` exits on its own.
    fn die(&mut self, service: &str, exit: Exit) {
        let a = self.exit_now(service, exit);
        self.apply(a);
    }

    /// Move the clock, firing timers in order.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.sup.next_deadline().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            let a = self.sup.on_timer(self.now);
            self.apply(a);
        }
        self.now = end;
    }

    fn answer_probes(&mut self, ok: bool) {
        for s in std::mem::take(&mut self.probes) {
            let a = self.sup.on_health(
                self.now,
                &s,
                ok,
                if ok { "ok" } else { "connection refused" },
            );
            self.apply(a);
        }
    }

    fn state(&self, s: &str) -> State {
        self.sup.get(s).unwrap().state
    }

    fn spawns(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Spawn { service, .. } => Some(service.clone()),
                _ => None,
            })
            .collect()
    }

    fn terms(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|(_, a)| match a {
                Action::TermScope { service, .. } => Some(service.clone()),
                _ => None,
            })
            .collect()
    }

    fn spawn_times(&self, s: &str) -> Vec<Duration> {
        self.log
            .iter()
            .filter_map(|(t, a)| {
                matches!(a, Action::Spawn { service, .. } if service == s).then_some(*t)
            })
            .collect()
    }

    fn has(&self, want: &Action) -> bool {
        self.log.iter().any(|(_, a)| a == want)
    }
}

fn secs(s: impl Into<f64>) -> Duration {
    let s: f64 = s.into();
    Duration::from_secs_f64(s)
}

#[test]
fn ps1_always_restarts_after_delay() {
    let mut sim = Sim::new(vec![spec("a", 0, &[])]);
    sim.start();
    assert_eq!(sim.state("a"), State::Running);
    sim.advance(secs(30));
    sim.die("a", Exit::Code(1));
    assert_eq!(sim.state("a"), State::Restarting);
    sim.advance(secs(0.999));
    assert_eq!(sim.state("a"), State::Restarting);
    sim.advance(secs(0.002));
    assert_eq!(sim.state("a"), State::Running);
    assert_eq!(sim.sup.get("a").unwrap().restarts(), 1);
    // The dead main's scope was killed before the restart.
    assert!(sim.has(&Action::KillScope {
        service: "a".into(),
        scope: 0
    }));
    // Exit 0 is restarted too under "always".
    sim.advance(secs(30));
    sim.die("a", Exit::Code(0));
    sim.advance(secs(1.01));
    assert_eq!(sim.state("a"), State::Running);
}

#[test]
fn on_failure_exit_zero_stays_stopped() {
    let mut a = spec("a", 0, &[]);
    a.restart = RestartPolicy::OnFailure;
    let mut sim = Sim::new(vec![a]);
    sim.start();
    sim.advance(secs(5));
    sim.die("a", Exit::Code(0));
    sim.advance(secs(120));
    assert_eq!(sim.state("a"), State::Stopped);
    assert!(!sim.sup.get("a").unwrap().want);
    assert_eq!(sim.spawns(), ["a"]);
    // ...but a failure is restarted.
    let a = sim.sup.start(sim.now, "a").unwrap();
    sim.apply(a);
    sim.advance(secs(20));
    sim.die("a", Exit::Signal(11));
    sim.advance(secs(1.1));
    assert_eq!(sim.state("a"), State::Running);
}

#[test]
fn never_stays_failed() {
    let mut a = spec("a", 0, &[]);
    a.restart = RestartPolicy::Never;
    let mut b = spec("b", 1, &[]);
    b.restart = RestartPolicy::Never;
    let mut sim = Sim::new(vec![a, b]);
    sim.start();
    sim.die("a", Exit::Code(3));
    sim.die("b", Exit::Code(0));
    sim.advance(secs(100));
    assert_eq!(sim.state("a"), State::Failed);
    assert!(sim
        .sup
        .get("a")
        .unwrap()
        .reason
        .as_deref()
        .unwrap()
        .contains("exit code 3"));
    assert_eq!(sim.state("b"), State::Stopped);
    assert_eq!(sim.spawns(), ["a", "b"]);
}

#[test]
fn backoff_grows_then_resets_after_stable_run() {
    let mut sim = Sim::new(vec![spec("a", 0, &[])]);
    sim.start();
    // Fast deaths: delays 1 s, then ~2 s, ~4 s (jitter ±20 %).
    let mut gaps = vec![];
    for _ in 0..4 {
        sim.advance(secs(0.1));
        let died = sim.at();
        sim.die("a", Exit::Code(1));
        sim.advance(secs(10));
        let respawn = *sim.spawn_times("a").last().unwrap();
        gaps.push((respawn - died).as_secs_f64());
        assert_eq!(sim.state("a"), State::Running);
        // Fail again right after the restart.
        sim.now = sim.t0 + respawn;
    }
    assert!((gaps[0] - 1.0).abs() < 1e-6, "{gaps:?}");
    assert!(gaps[1] >= 1.6 && gaps[1] <= 2.4, "{gaps:?}");
    assert!(gaps[2] >= 3.2 && gaps[2] <= 4.8, "{gaps:?}");
    assert!(gaps[3] > gaps[2] * 1.2, "{gaps:?}");
    // A stable run resets the backoff to the declared delay.
    sim.advance(secs(60));
    let died = sim.at();
    sim.die("a", Exit::Code(1));
    sim.advance(secs(10));
    let respawn = *sim.spawn_times("a").last().unwrap();
    assert!(((respawn - died).as_secs_f64() - 1.0).abs() < 1e-6);
}

#[test]
fn backoff_is_capped() {
    let tun = Tunables {
        crash_loop_max: 100,
        backoff_cap: Duration::from_secs(5),
        ..Tunables::default()
    };
    let mut sim = Sim::with(vec![spec("a", 0, &[])], tun);
    sim.start();
    for _ in 0..12 {
        sim.die("a", Exit::Code(1));
        let died = sim.at();
        sim.advance(secs(6));
        let respawn = *sim.spawn_times("a").last().unwrap();
        assert!(respawn - died <= Duration::from_secs(5));
        sim.now = sim.t0 + respawn;
    }
}

#[test]
fn crash_loop_marks_failed() {
    let mut sim = Sim::new(vec![spec("a", 0, &[])]);
    sim.start();
    for _ in 0..4 {
        sim.die("a", Exit::Code(1));
        sim.advance(secs(60));
        assert_eq!(sim.state("a"), State::Running);
        let respawn = *sim.spawn_times("a").last().unwrap();
        sim.now = sim.t0 + respawn;
    }
    sim.die("a", Exit::Code(1));
    assert_eq!(sim.state("a"), State::Failed);
    let reason = sim.sup.get("a").unwrap().reason.clone().unwrap();
    assert!(reason.starts_with("crash loop: 5 deaths"), "{reason}");
    sim.advance(secs(3600));
    assert_eq!(sim.spawns().len(), 5);
    assert_eq!(
        sim.sup.next_deadline(),
        None,
        "a failed service has no timers"
    );
    // An operator start gives it a fresh chance.
    let a = sim.sup.start(sim.now, "a").unwrap();
    sim.apply(a);
    assert_eq!(sim.state("a"), State::Running);
}

#[test]
fn ps2_start_in_dependency_order() {
    let mut sim = Sim::new(vec![
        spec("lattice", 1, &["dbus"]),
        spec("dbus", 5, &[]),
        spec("chronyd", 3, &[]),
    ]);
    sim.start();
    assert_eq!(sim.spawns(), ["chronyd", "dbus", "lattice"]);
}

#[test]
fn dependents_wait_for_readiness() {
    let mut dbus = spec("dbus", 0, &[]);
    dbus.ready = ReadyMode::Notify;
    let mut sim = Sim::new(vec![dbus, spec("app", 1, &["dbus"]), spec("free", 2, &[])]);
    sim.start();
    assert_eq!(sim.spawns(), ["dbus", "free"]);
    assert_eq!(sim.state("dbus"), State::Starting);
    assert_eq!(sim.state("app"), State::Stopped);
    sim.advance(secs(0.5));
    let a = sim.sup.on_ready(sim.now, "dbus");
    sim.apply(a);
    assert_eq!(sim.spawns(), ["dbus", "free", "app"]);
    assert!(sim.has(&Action::BootReady));
}

#[test]
fn start_timeout_restarts_then_fails() {
    let mut a = spec("a", 0, &[]);
    a.ready = ReadyMode::Notify;
    a.start_timeout = secs(5);
    a.stop_timeout = secs(2);
    let tun = Tunables {
        crash_loop_max: 2,
        ..Tunables::default()
    };
    let mut sim = Sim::with(vec![a, spec("b", 1, &["a"])], tun);
    sim.start();
    sim.advance(secs(5.0));
    // Not ready in time: stopped (SIGTERM) and restarted.
    assert_eq!(sim.terms(), ["a"]);
    sim.advance(secs(1.0));
    assert_eq!(sim.state("a"), State::Starting);
    sim.advance(secs(5.0));
    assert_eq!(sim.state("a"), State::Failed);
    assert!(sim
        .sup
        .get("a")
        .unwrap()
        .reason
        .as_deref()
        .unwrap()
        .contains("not ready within 5s"));
    // The boot does not hang: it is reported stalled, with the culprit.
    assert!(sim.has(&Action::BootStalled {
        failed: vec!["a".into()]
    }));
    assert_eq!(sim.state("b"), State::Stopped);
}

#[test]
fn ps3_shutdown_in_reverse_order() {
    let mut sim = Sim::new(vec![
        spec("s1", 1, &[]),
        spec("s2", 2, &["s1"]),
        spec("s3", 3, &[]),
        spec("s4", 4, &["s2"]),
    ]);
    sim.start();
    sim.advance(secs(1));
    let a = sim.sup.shutdown(sim.now);
    sim.apply(a);
    assert_eq!(sim.terms(), ["s4", "s3", "s2", "s1"]);
    assert!(sim.has(&Action::ShutdownComplete));
    assert!(sim.sup.records().iter().all(|r| r.state == State::Stopped));
    // Nothing restarts after shutdown.
    sim.advance(secs(100));
    assert_eq!(sim.spawns().len(), 4);
}

#[test]
fn stop_escalates_to_sigkill_after_timeout() {
    let mut a = spec("a", 0, &[]);
    a.stop_timeout = secs(3);
    let mut sim = Sim::new(vec![a, spec("b", 1, &[])]);
    sim.ignores_term.insert("b".into());
    sim.start();
    let a = sim.sup.shutdown(sim.now);
    sim.apply(a);
    // b ignores SIGTERM: a is not stopped before b is down.
    assert_eq!(sim.terms(), ["b"]);
    sim.advance(secs(9.9));
    assert_eq!(sim.state("b"), State::Stopping);
    sim.advance(secs(0.2));
    assert_eq!(sim.state("b"), State::Stopped);
    assert!(sim.has(&Action::KillScope {
        service: "b".into(),
        scope: 0
    }));
    assert_eq!(sim.terms(), ["b", "a"]);
    assert!(sim.has(&Action::ShutdownComplete));
}

#[test]
fn a_reload_while_a_service_stops_for_a_restart_is_not_lost() {
    let mut sim = Sim::new(vec![spec("h", 0, &[])]);
    sim.ignores_term.insert("h".into());
    sim.start();
    let a = sim.sup.restart(sim.now, "h").unwrap();
    sim.apply(a);
    assert_eq!(sim.state("h"), State::Stopping);
    let mut changed = spec("h", 0, &[]);
    changed.args = vec!["--print".into(), "v2".into()];
    let a = sim.sup.replace(sim.now, &set(vec![changed.clone()]));
    sim.apply(a);
    // Killed after its stop timeout, it comes back with the new declaration.
    sim.advance(secs(11.0));
    assert_eq!(sim.state("h"), State::Running);
    assert_eq!(sim.sup.get("h").unwrap().spec.args, changed.args);
}

#[test]
fn multi_crash_restarts_lowest_order_first() {
    let mut sim = Sim::new(vec![
        spec("c", 3, &[]),
        spec("a", 1, &[]),
        spec("d", 4, &["a"]),
        spec("b", 2, &[]),
    ]);
    sim.start();
    sim.advance(secs(30));
    for s in ["d", "c", "b", "a"] {
        sim.die(s, Exit::Signal(9));
    }
    sim.log.clear();
    sim.advance(secs(1.5));
    assert_eq!(sim.spawns(), ["a", "b", "c", "d"]);
}

#[test]
fn dependent_waits_for_crashed_dependency() {
    let mut a = spec("a", 1, &[]);
    a.restart_delay = secs(5);
    let mut d = spec("d", 2, &["a"]);
    d.restart_delay = secs(0);
    let mut sim = Sim::new(vec![a, d]);
    sim.start();
    sim.advance(secs(30));
    sim.die("a", Exit::Code(1));
    sim.die("d", Exit::Code(1));
    sim.log.clear();
    sim.advance(secs(1));
    // d's own delay is over but a is not running yet.
    assert_eq!(sim.state("d"), State::Restarting);
    assert!(sim.spawns().is_empty());
    sim.advance(secs(4.5));
    assert_eq!(sim.spawns(), ["a", "d"]);
}

#[test]
fn unhealthy_service_is_restarted() {
    let mut a = spec("a", 0, &[]);
    a.health = Some(HealthSpec {
        kind: HealthKind::Tcp,
        addr: Some("127.0.0.1:1".into()),
        http_path: String::new(),
        http_host: String::new(),
        interval: secs(10),
        timeout: secs(2),
        failure_threshold: 3,
    });
    let mut sim = Sim::new(vec![a, spec("b", 1, &["a"])]);
    sim.start();
    // Readiness comes from the first good probe; b waits for it.
    assert_eq!(sim.state("a"), State::Starting);
    sim.advance(secs(0.05));
    sim.answer_probes(false);
    sim.advance(secs(0.1));
    sim.answer_probes(true);
    assert_eq!(sim.state("a"), State::Running);
    assert_eq!(sim.spawns(), ["a", "b"]);
    sim.advance(secs(30));
    sim.answer_probes(true);
    for _ in 0..2 {
        sim.advance(secs(10));
        sim.answer_probes(false);
        assert_eq!(sim.state("a"), State::Running);
    }
    sim.advance(secs(10));
    sim.answer_probes(false);
    // Third failure: stopped and restarted.
    assert_eq!(sim.terms(), ["a"]);
    sim.advance(secs(1.5));
    assert_eq!(sim.spawn_times("a").len(), 2);
    assert!(sim.sup.get("a").unwrap().reason.is_none() || sim.state("a") == State::Starting);
}

#[test]
fn process_health_check_needs_no_timers() {
    let mut a = spec("a", 0, &[]);
    a.health = Some(HealthSpec {
        kind: HealthKind::Process,
        addr: None,
        http_path: String::new(),
        http_host: String::new(),
        interval: secs(10),
        timeout: secs(5),
        failure_threshold: 3,
    });
    let mut sim = Sim::new(vec![a]);
    sim.start();
    assert_eq!(sim.state("a"), State::Running);
    assert_eq!(
        sim.sup.next_deadline(),
        None,
        "an idle supervisor has no timers"
    );
}

#[test]
fn zombie_scope_is_abandoned_and_a_fresh_scope_used() {
    let mut sim = Sim::new(vec![spec("a", 0, &[])]);
    sim.stuck_scopes.insert("a".into());
    sim.start();
    sim.advance(secs(30));
    sim.die("a", Exit::Code(1));
    sim.advance(secs(5));
    // Its delay is over but the old scope is not empty yet.
    assert_eq!(sim.state("a"), State::Restarting);
    sim.advance(secs(5.1));
    assert!(sim.has(&Action::AbandonScope {
        service: "a".into(),
        scope: 0
    }));
    assert!(sim.has(&Action::Spawn {
        service: "a".into(),
        scope: 1
    }));
    assert_eq!(sim.state("a"), State::Running);
}

#[test]
fn spawn_failure_marks_failed_and_removes_scope() {
    let mut sim = Sim::new(vec![spec("a", 0, &[])]);
    sim.fail_spawn.insert("a".into());
    sim.start();
    assert_eq!(sim.state("a"), State::Failed);
    assert!(sim.has(&Action::RemoveScope {
        service: "a".into(),
        scope: 0
    }));
    assert!(sim.has(&Action::BootStalled {
        failed: vec!["a".into()]
    }));
}

#[test]
fn a_spawned_service_is_ready_at_its_exec_not_its_clone() {
    let mut sim = Sim::new(vec![spec("a", 0, &[]), spec("b", 1, &["a"])]);
    sim.fail_exec.insert("a".into());
    sim.start();
    // Cloned, exec not confirmed: starting, and its dependent waits.
    assert_eq!(sim.state("a"), State::Starting);
    assert_eq!(sim.state("b"), State::Stopped);
    let pid = sim.sup.get("a").unwrap().pid.unwrap();
    // A confirmation for another pid changes nothing.
    assert!(sim.sup.on_exec_ok(sim.now, "a", pid + 1).is_empty());
    assert_eq!(sim.state("a"), State::Starting);
    // The exec failed (its errno came through the pipe, then the reap).
    let out = sim
        .sup
        .on_spawn_failed(sim.now, "a", "/x: No such file or directory");
    sim.apply(out);
    assert_eq!(sim.state("a"), State::Failed);
    assert_eq!(sim.state("b"), State::Stopped);
    assert!(sim.has(&Action::BootStalled {
        failed: vec!["a".into()]
    }));
    // Confirmed: running, and the dependent starts.
    let mut sim = Sim::new(vec![spec("a", 0, &[]), spec("b", 1, &["a"])]);
    sim.fail_exec.insert("a".into());
    sim.start();
    let pid = sim.sup.get("a").unwrap().pid.unwrap();
    let out = sim.sup.on_exec_ok(sim.now, "a", pid);
    sim.apply(out);
    assert_eq!(sim.state("a"), State::Running);
    assert_eq!(sim.state("b"), State::Running);
}

#[test]
fn operator_commands() {
    let mut sim = Sim::new(vec![spec("a", 0, &[]), spec("b", 1, &["a"])]);
    sim.start();
    let a = sim.sup.stop(sim.now, "a").unwrap();
    sim.apply(a);
    assert_eq!(sim.state("a"), State::Stopped);
    sim.advance(secs(100));
    assert_eq!(
        sim.state("a"),
        State::Stopped,
        "a stopped service stays stopped"
    );
    let a = sim.sup.restart(sim.now, "b").unwrap();
    sim.apply(a);
    assert_eq!(sim.state("b"), State::Running);
    // Starting a service starts what it depends on.
    let a = sim.sup.stop(sim.now, "b").unwrap();
    sim.apply(a);
    let a = sim.sup.start(sim.now, "b").unwrap();
    sim.apply(a);
    assert_eq!(sim.state("a"), State::Running);
    assert_eq!(sim.state("b"), State::Running);
    // Restart of a running service: immediate, no backoff.
    let before = sim.spawns().len();
    let a = sim.sup.restart(sim.now, "a").unwrap();
    sim.apply(a);
    assert_eq!(sim.spawns().len(), before + 1);
    assert_eq!(
        sim.sup.start(sim.now, "zz"),
        Err(CommandError::UnknownService("zz".into()))
    );
}

#[test]
fn oom_kill_is_attributed() {
    let mut sim = Sim::new(vec![spec("a", 0, &[])]);
    sim.start();
    sim.advance(secs(20));
    sim.sup.on_oom(sim.now, "a");
    sim.die("a", Exit::Signal(9));
    let r = sim.sup.get("a").unwrap();
    assert!(r.last_exit.as_ref().unwrap().oom);
    assert_eq!(r.oom_kills, 1);
    // memory.events read after the reap still counts for that death.
    sim.advance(secs(30));
    sim.die("a", Exit::Signal(9));
    sim.sup.on_oom(sim.now, "a");
    assert!(sim.sup.get("a").unwrap().last_exit.as_ref().unwrap().oom);
}

#[test]
fn reload_touches_only_what_changed() {
    let mut sim = Sim::new(vec![
        spec("a", 0, &[]),
        spec("b", 1, &[]),
        spec("c", 2, &[]),
    ]);
    sim.start();
    sim.log.clear();
    let mut b2 = spec("b", 1, &[]);
    b2.args = vec!["--new".into()];
    let new = set(vec![spec("a", 0, &[]), b2, spec("d", 3, &[])]);
    let a = sim.sup.replace(sim.now, &new);
    sim.apply(a);
    assert_eq!(sim.terms(), ["b", "c"]);
    let mut spawned = sim.spawns();
    spawned.sort();
    assert_eq!(spawned, ["b", "d"]);
    assert!(sim.sup.get("c").is_none());
    assert_eq!(sim.sup.get("b").unwrap().spec.args, ["--new"]);
    let names: Vec<&str> = sim.sup.records().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["a", "b", "d"]);
}

#[test]
fn idle_supervisor_sleeps() {
    let specs: Vec<ServiceSpec> = (0..9).map(|i| spec(&format!("s{i}"), i, &[])).collect();
    let mut sim = Sim::new(specs);
    sim.start();
    assert_eq!(sim.sup.next_deadline(), None);
    let names: BTreeMap<String, State> = sim
        .sup
        .records()
        .iter()
        .map(|r| (r.name().to_string(), r.state))
        .collect();
    assert!(names.values().all(|s| *s == State::Running));
}

#[test]
fn retry_failed_gives_another_chance_and_reports_again() {
    let mut sim = Sim::new(vec![spec("a", 0, &[])]);
    sim.fail_spawn.insert("a".into());
    sim.start();
    assert_eq!(sim.state("a"), State::Failed);
    let stalls = |sim: &Sim| {
        sim.log
            .iter()
            .filter(|(_, a)| matches!(a, Action::BootStalled { .. }))
            .count()
    };
    assert_eq!(stalls(&sim), 1);
    // Still failing: reported stalled again after the retry.
    let a = sim.sup.retry_failed(sim.now);
    sim.apply(a);
    assert_eq!(stalls(&sim), 2);
    // Now it works: the boot becomes ready.
    sim.fail_spawn.clear();
    let a = sim.sup.retry_failed(sim.now);
    sim.apply(a);
    assert_eq!(sim.state("a"), State::Running);
    assert!(sim.has(&Action::BootReady));
}

#[test]
fn boot_readiness_waits_for_exec_ready_services_to_settle() {
    let tun = Tunables {
        boot_settle: secs(0.2),
        ..Tunables::default()
    };
    let mut quick = spec("quick", 0, &[]);
    quick.restart = RestartPolicy::Never;
    let mut notified = spec("notified", 1, &[]);
    notified.ready = ReadyMode::Notify;
    let mut sim = Sim::with(vec![quick, notified, spec("steady", 2, &[])], tun.clone());
    sim.start();
    let a = sim.sup.on_ready(sim.now, "notified");
    sim.apply(a);
    // Every service runs, but those ready by their exec alone have not
    // settled: no readiness yet, and a timer for when they will have.
    assert!(!sim.has(&Action::BootReady));
    assert_eq!(sim.sup.next_deadline(), Some(sim.t0 + secs(0.2)));
    // One dies right after its exec: the boot does not count it ready.
    sim.advance(secs(0.1));
    sim.die("quick", Exit::Code(1));
    sim.advance(secs(1.0));
    assert!(!sim.has(&Action::BootReady));
    assert!(sim.has(&Action::BootStalled {
        failed: vec!["quick".into()]
    }));

    // The same services that keep running: ready once settled, not before.
    let mut sim = Sim::with(vec![spec("a", 0, &[]), spec("b", 1, &[])], tun);
    sim.start();
    sim.advance(secs(0.19));
    assert!(!sim.has(&Action::BootReady));
    sim.advance(secs(0.02));
    let ready: Vec<Duration> = sim
        .log
        .iter()
        .filter(|(_, a)| *a == Action::BootReady)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(ready, [secs(0.2)]);
}

#[test]
fn a_changed_declaration_gives_a_failed_service_a_new_start() {
    let mut bad = spec("f", 0, &[]);
    bad.restart = RestartPolicy::Never;
    let mut sim = Sim::new(vec![bad.clone(), spec("stopped", 1, &[])]);
    sim.start();
    sim.die("f", Exit::Code(1));
    assert_eq!(sim.state("f"), State::Failed);
    let a = sim.sup.stop(sim.now, "stopped").unwrap();
    sim.apply(a);
    assert_eq!(sim.state("stopped"), State::Stopped);
    // The same declaration: nothing happens.
    let a = sim
        .sup
        .replace(sim.now, &set(vec![bad.clone(), spec("stopped", 1, &[])]));
    sim.apply(a);
    assert_eq!(sim.state("f"), State::Failed);
    // A changed one: started again. A changed declaration of a service an
    // operator stopped leaves it stopped.
    let mut fixed = bad;
    fixed.args = vec!["--fixed".into()];
    let mut stopped = spec("stopped", 1, &[]);
    stopped.args = vec!["--v2".into()];
    let a = sim.sup.replace(sim.now, &set(vec![fixed, stopped]));
    sim.apply(a);
    assert_eq!(sim.state("f"), State::Running);
    assert_eq!(sim.sup.get("f").unwrap().reason, None);
    assert_eq!(sim.state("stopped"), State::Stopped);
    // Failed, then stopped by an operator: a changed declaration leaves
    // it stopped too.
    sim.die("f", Exit::Code(1));
    assert_eq!(sim.state("f"), State::Failed);
    let a = sim.sup.stop(sim.now, "f").unwrap();
    sim.apply(a);
    assert_eq!(sim.state("f"), State::Stopped);
    let mut again = spec("f", 0, &[]);
    again.restart = RestartPolicy::Never;
    again.args = vec!["--v3".into()];
    let a = sim
        .sup
        .replace(sim.now, &set(vec![again, spec("stopped", 1, &[])]));
    sim.apply(a);
    assert_eq!(sim.state("f"), State::Stopped);
}

#[test]
fn a_process_health_check_follows_its_process() {
    let mut p = spec("p", 0, &[]);
    p.restart = RestartPolicy::Never;
    p.health = Some(HealthSpec {
        kind: HealthKind::Process,
        addr: None,
        http_path: String::new(),
        http_host: String::new(),
        interval: secs(30.0),
        timeout: secs(5.0),
        failure_threshold: 3,
    });
    let mut sim = Sim::new(vec![p]);
    sim.start();
    assert_eq!(sim.sup.get("p").unwrap().healthy, Some(true));
    sim.die("p", Exit::Code(3));
    let r = sim.sup.get("p").unwrap();
    assert_eq!(r.healthy, Some(false));
    assert!(
        r.health_detail.contains("process exited"),
        "{}",
        r.health_detail
    );
}
