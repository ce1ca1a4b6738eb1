//! The service supervisor as a sans-IO state machine.
//!
//! It is fed events with an explicit `now` (a child exited, a scope
//! emptied, a service said READY=1, a health probe answered, a timer fired,
//! an operator command) and returns [`Action`]s for the event loop to carry
//! out (spawn, signal a scope, kill a scope, probe). It never touches a
//! process, a file or a clock, so its tests run on a fake clock.
//!
//! After every event [`Supervisor::reconcile`] compares what should run with
//! what runs: it spawns services whose dependencies are ready, in start
//! order, drives an ordered shutdown one service at a time in reverse order,
//! and reports boot readiness once.

mod record;
#[cfg(test)]
mod tests;

pub use record::{AfterStop, Exit, LastExit, Record, RestartBackoff, State};

use std::time::{Duration, Instant};

use crate::config::services::{ReadyMode, RestartPolicy, ServiceSet};

/// Supervisor tunables (from `[agent.supervisor]`).
#[derive(Debug, Clone)]
pub struct Tunables {
    pub crash_loop_max: u32,
    pub stable_run: Duration,
    pub backoff_cap: Duration,
    pub scope_kill_timeout: Duration,
    pub jitter_seed: u64,
    /// How long a service ready by its exec alone must have run before it
    /// counts for the node's boot readiness.
    pub boot_settle: Duration,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            crash_loop_max: 5,
            stable_run: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(60),
            scope_kill_timeout: Duration::from_secs(10),
            jitter_seed: 1,
            boot_settle: Duration::ZERO,
        }
    }
}

/// What the event loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create scope `scope` of the service (with its limits) and spawn the
    /// service into it; answer with `on_spawned` or `on_spawn_failed`.
    Spawn { service: String, scope: u32 },
    /// SIGTERM every process in the scope.
    TermScope { service: String, scope: u32 },
    /// SIGKILL every process in the scope (`cgroup.kill`); answer with
    /// `on_scope_empty` once it is empty.
    KillScope { service: String, scope: u32 },
    /// The scope is empty: remove its directory.
    RemoveScope { service: String, scope: u32 },
    /// The scope would not empty: leave it, log it as a zombie.
    AbandonScope { service: String, scope: u32 },
    /// Run one health probe; answer with `on_health`.
    Probe { service: String },
    /// Every service that should run is running: the node is ready.
    BootReady,
    /// Nothing is starting any more but these services are failed.
    BootStalled { failed: Vec<String> },
    /// Everything is stopped after `shutdown`.
    ShutdownComplete,
}

/// Why an operator command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    UnknownService(String),
    ShuttingDown,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::UnknownService(n) => write!(f, "unknown service \"{n}\""),
            CommandError::ShuttingDown => write!(f, "the agent is shutting down"),
        }
    }
}

pub struct Supervisor {
    tun: Tunables,
    /// Records in start order (removed-but-stopping ones at the end).
    records: Vec<Record>,
    backoff: RestartBackoff,
    shutting_down: bool,
    shutdown_done: bool,
    boot_ready: bool,
    stalled_reported: bool,
    /// The time of the last reconcile (a settle time after it is a timer).
    reconciled_at: Instant,
}

impl Supervisor {
    pub fn new(tun: Tunables, set: &ServiceSet, now: Instant) -> Supervisor {
        let backoff = RestartBackoff::new(tun.backoff_cap, tun.jitter_seed);
        Supervisor {
            records: set
                .services
                .iter()
                .map(|s| Record::new(s.clone(), now))
                .collect(),
            tun,
            backoff,
            shutting_down: false,
            shutdown_done: false,
            boot_ready: false,
            stalled_reported: false,
            reconciled_at: now,
        }
    }

    // ---- queries ---------------------------------------------------------

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn get(&self, name: &str) -> Option<&Record> {
        self.records.iter().find(|r| r.spec.name == name)
    }

    pub fn is_boot_ready(&self) -> bool {
        self.boot_ready
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The service a pid belongs to (main processes only).
    pub fn service_of_pid(&self, pid: u32) -> Option<&str> {
        self.records
            .iter()
            .find(|r| r.pid == Some(pid))
            .map(|r| r.spec.name.as_str())
    }

    /// The nearest timer; `None` when nothing is scheduled (an idle agent
    /// then sleeps until an fd wakes it).
    pub fn next_deadline(&self) -> Option<Instant> {
        // Before boot readiness: a running service settling is a timer
        // (readiness, or a stall, may follow).
        let settle = (!self.boot_ready && !self.shutting_down)
            .then(|| {
                self.records
                    .iter()
                    .filter(|r| r.want && r.state == State::Running)
                    .filter_map(|r| self.settled_at(r))
                    .filter(|t| *t > self.reconciled_at)
                    .min()
            })
            .flatten();
        self.records
            .iter()
            .filter_map(Record::next_deadline)
            .chain(settle)
            .min()
    }

    /// When a running service counts for boot readiness: a service ready
    /// by its exec alone once it has run `boot_settle` (a program that
    /// exits at once must fail the boot, not slip through as ready);
    /// one ready by notify, fd or a probe at once. None when it already
    /// counts.
    fn settled_at(&self, r: &Record) -> Option<Instant> {
        let by_exec = r.spec.ready == ReadyMode::Spawned && !r.probes();
        let at = r.since + self.tun.boot_settle;
        (by_exec && !self.tun.boot_settle.is_zero()).then_some(at)
    }

    fn idx(&self, name: &str) -> Option<usize> {
        self.records.iter().position(|r| r.spec.name == name)
    }

    // ---- events from the loop -------------------------------------------

    /// Start every declared service (at boot).
    pub fn start_all(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.reconcile(now, &mut out);
        out
    }

    pub fn on_spawned(&mut self, now: Instant, service: &str, pid: u32) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(i) = self.idx(service) else {
            return out;
        };
        let r = &mut self.records[i];
        r.pid = Some(pid);
        r.started_at = Some(now);
        r.oom_in_run = false;
        r.status_text = None;
        // One console line per service: "running (pid …)" follows when it
        // is ready; a start that never gets there is reported on its own.
        log::debug!(target: "agent::supervisor", "{service}: started (pid {pid})");
        // A `spawned` service is ready once its exec is confirmed
        // (on_exec_ok), not at the clone: a binary that cannot be run
        // (bad interpreter, missing library, working directory) must not
        // count as running nor let its dependents start.
        r.exec_pending = true;
        r.start_deadline = Some(now + r.spec.start_timeout);
        if r.spec.ready == ReadyMode::Spawned && r.probes() {
            r.probe_attempt = 0;
            r.probe_at = Some(now + starting_probe_delay(r, 0));
        }
        self.reconcile(now, &mut out);
        out
    }

    /// The exec of `service`'s process `pid` succeeded.
    pub fn on_exec_ok(&mut self, now: Instant, service: &str, pid: u32) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(i) = self.idx(service) else {
            return out;
        };
        let r = &mut self.records[i];
        if r.pid != Some(pid) || !r.exec_pending {
            return out;
        }
        r.exec_pending = false;
        if r.state == State::Starting && r.spec.ready == ReadyMode::Spawned && !r.probes() {
            self.mark_ready(now, i);
        }
        self.reconcile(now, &mut out);
        out
    }

    pub fn on_spawn_failed(&mut self, now: Instant, service: &str, reason: &str) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(i) = self.idx(service) else {
            return out;
        };
        let r = &mut self.records[i];
        log::error!(target: "agent::supervisor", "{service}: cannot start: {reason}");
        r.pid = None;
        r.scope_busy = false;
        r.start_deadline = None;
        r.probe_at = None;
        r.reason = Some(format!("start failed: {reason}"));
        r.set_state(State::Failed, now);
        out.push(Action::RemoveScope {
            service: service.to_string(),
            scope: r.scope,
        });
        self.reconcile(now, &mut out);
        out
    }

    /// A main process exited. `None` when the pid is not a service's (an
    /// orphan the loop merely reaped).
    pub fn on_exit(&mut self, now: Instant, pid: u32, exit: Exit) -> Option<Vec<Action>> {
        let i = self.records.iter().position(|r| r.pid == Some(pid))?;
        let mut out = Vec::new();
        let tun = self.tun.clone();
        let r = &mut self.records[i];
        let name = r.spec.name.clone();
        r.pid = None;
        r.start_deadline = None;
        r.probe_at = None;
        if r.spec.health.is_some() && !r.probes() {
            r.healthy = Some(false);
            r.health_detail = format!("process exited ({})", exit.describe());
        }
        r.last_exit = Some(LastExit {
            exit,
            at: now,
            oom: r.oom_in_run,
        });
        // Whatever is left in the scope dies with the main process (PS3).
        r.kill_deadline = Some(now + tun.scope_kill_timeout);
        out.push(Action::KillScope {
            service: name.clone(),
            scope: r.scope,
        });
        let oom = if r.oom_in_run { " (OOM-killed)" } else { "" };
        match r.state {
            State::Stopping => {
                log::info!(target: "agent::supervisor", "{name}: stopped ({}){oom}", exit.describe());
            }
            _ => {
                let ran = r
                    .started_at
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                log::warn!(
                    target: "agent::supervisor",
                    "{name}: died after {:.3}s ({}){oom}",
                    ran.as_secs_f64(),
                    exit.describe()
                );
                let success = exit.success() && !r.oom_in_run;
                self.after_death(now, i, success, None);
            }
        }
        self.reconcile(now, &mut out);
        Some(out)
    }

    /// The scope of a service is empty.
    pub fn on_scope_empty(&mut self, now: Instant, service: &str, scope: u32) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(i) = self.idx(service) else {
            return out;
        };
        let r = &mut self.records[i];
        if r.scope != scope || !r.scope_busy || r.pid.is_some() {
            return out;
        }
        r.scope_busy = false;
        r.kill_deadline = None;
        out.push(Action::RemoveScope {
            service: service.to_string(),
            scope,
        });
        self.reconcile(now, &mut out);
        out
    }

    /// The service said it is ready (READY=1, or a newline on its ready fd).
    pub fn on_ready(&mut self, now: Instant, service: &str) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(i) = self.idx(service) else {
            return out;
        };
        if self.records[i].state == State::Starting && self.records[i].pid.is_some() {
            self.mark_ready(now, i);
            self.reconcile(now, &mut out);
        }
        out
    }

    /// `STATUS=` text from the notify socket.
    pub fn on_status_text(&mut self, service: &str, text: &str) {
        if let Some(i) = self.idx(service) {
            self.records[i].status_text = Some(text.chars().take(256).collect());
        }
    }

    /// The kernel OOM-killed a process in the service's scope.
    pub fn on_oom(&mut self, now: Instant, service: &str) {
        let Some(i) = self.idx(service) else { return };
        let r = &mut self.records[i];
        r.oom_kills += 1;
        log::warn!(target: "agent::supervisor", "{service}: OOM kill in its scope (memory.max reached)");
        if r.pid.is_some() {
            r.oom_in_run = true;
        } else if let Some(last) = &mut r.last_exit {
            // The exit was reaped before memory.events was read.
            if now.saturating_duration_since(last.at) < Duration::from_secs(2) {
                last.oom = true;
            }
        }
    }

    /// A health probe answered.
    pub fn on_health(
        &mut self,
        now: Instant,
        service: &str,
        ok: bool,
        detail: &str,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(i) = self.idx(service) else {
            return out;
        };
        let r = &mut self.records[i];
        if !r.probe_in_flight {
            return out;
        }
        r.probe_in_flight = false;
        r.health_detail = detail.to_string();
        let interval = r
            .spec
            .health
            .as_ref()
            .map_or(Duration::from_secs(10), |h| h.interval);
        match r.state {
            State::Starting if ok => {
                r.healthy = Some(true);
                self.mark_ready(now, i);
            }
            State::Starting => {
                r.probe_attempt += 1;
                r.probe_at = Some(now + starting_probe_delay(r, r.probe_attempt));
            }
            State::Running if ok => {
                r.healthy = Some(true);
                r.health_failures = 0;
                r.probe_at = Some(now + interval);
            }
            State::Running => {
                r.health_failures += 1;
                let threshold = r.spec.health.as_ref().map_or(1, |h| h.failure_threshold);
                log::warn!(
                    target: "agent::supervisor",
                    "{service}: health check failed ({}/{threshold}): {detail}",
                    r.health_failures
                );
                if r.health_failures >= threshold {
                    r.healthy = Some(false);
                    let why = format!("unhealthy: {detail}");
                    self.begin_stop(now, i, AfterStop::Failure(why), &mut out);
                } else {
                    r.probe_at = Some(now + interval);
                }
            }
            _ => {}
        }
        self.reconcile(now, &mut out);
        out
    }

    /// Timers that are due.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for i in 0..self.records.len() {
            let r = &mut self.records[i];
            let name = r.spec.name.clone();
            if r.stop_deadline.is_some_and(|t| t <= now) {
                r.stop_deadline = None;
                log::warn!(
                    target: "agent::supervisor",
                    "{name}: still running {:.1}s after SIGTERM, sending SIGKILL",
                    r.spec.stop_timeout.as_secs_f64()
                );
                r.kill_deadline = Some(now + self.tun.scope_kill_timeout);
                out.push(Action::KillScope {
                    service: name.clone(),
                    scope: r.scope,
                });
            }
            if r.kill_deadline.is_some_and(|t| t <= now) {
                r.kill_deadline = None;
                if r.scope_busy && r.pid.is_none() {
                    log::error!(
                        target: "agent::supervisor",
                        "{name}: scope {} did not empty within {:.0}s after cgroup.kill; abandoning it as a zombie",
                        r.scope,
                        self.tun.scope_kill_timeout.as_secs_f64()
                    );
                    out.push(Action::AbandonScope {
                        service: name.clone(),
                        scope: r.scope,
                    });
                    r.scope += 1;
                    r.scope_busy = false;
                }
            }
            if r.start_deadline.is_some_and(|t| t <= now) {
                r.start_deadline = None;
                let why = format!(
                    "not ready within {}s (start_timeout_seconds)",
                    r.spec.start_timeout.as_secs_f64()
                );
                log::warn!(target: "agent::supervisor", "{name}: {why}");
                self.begin_stop(now, i, AfterStop::Failure(why), &mut out);
            }
            let r = &mut self.records[i];
            if r.probe_at.is_some_and(|t| t <= now) {
                r.probe_at = None;
                if matches!(r.state, State::Starting | State::Running) && !r.probe_in_flight {
                    r.probe_in_flight = true;
                    out.push(Action::Probe { service: name });
                }
            }
            let r = &mut self.records[i];
            if r.restart_at.is_some_and(|t| t <= now) {
                r.restart_at = None;
            }
        }
        self.reconcile(now, &mut out);
        out
    }

    // ---- operator commands -----------------------------------------------

    pub fn start(&mut self, now: Instant, name: &str) -> Result<Vec<Action>, CommandError> {
        if self.shutting_down {
            return Err(CommandError::ShuttingDown);
        }
        let i = self
            .idx(name)
            .ok_or_else(|| CommandError::UnknownService(name.into()))?;
        self.want_with_dependencies(now, i);
        let mut out = Vec::new();
        self.reconcile(now, &mut out);
        Ok(out)
    }

    pub fn stop(&mut self, now: Instant, name: &str) -> Result<Vec<Action>, CommandError> {
        let i = self
            .idx(name)
            .ok_or_else(|| CommandError::UnknownService(name.into()))?;
        let mut out = Vec::new();
        self.records[i].want = false;
        // A failed service stopped by an operator is stopped: nothing (not
        // a changed declaration either) starts it again but a start.
        if self.records[i].state == State::Failed {
            self.records[i].restart_at = None;
            self.records[i].set_state(State::Stopped, now);
        }
        self.begin_stop(now, i, AfterStop::Nothing, &mut out);
        self.reconcile(now, &mut out);
        Ok(out)
    }

    pub fn restart(&mut self, now: Instant, name: &str) -> Result<Vec<Action>, CommandError> {
        if self.shutting_down {
            return Err(CommandError::ShuttingDown);
        }
        let i = self
            .idx(name)
            .ok_or_else(|| CommandError::UnknownService(name.into()))?;
        let mut out = Vec::new();
        let active = self.records[i].state.is_active();
        self.want_with_dependencies(now, i);
        if active {
            self.begin_stop(now, i, AfterStop::Restart, &mut out);
        }
        self.reconcile(now, &mut out);
        Ok(out)
    }

    /// Give failed services another chance (a StartServices retry of the
    /// boot): their counters are reset and a stalled boot may be reported
    /// again.
    pub fn retry_failed(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.shutting_down {
            return out;
        }
        self.stalled_reported = false;
        let failed: Vec<usize> = (0..self.records.len())
            .filter(|&i| self.records[i].state == State::Failed && self.records[i].want)
            .collect();
        for i in failed {
            log::info!(target: "agent::supervisor", "{}: retrying after failure", self.records[i].spec.name);
            self.want_with_dependencies(now, i);
        }
        self.reconcile(now, &mut out);
        out
    }

    /// Ordered shutdown: stop everything, one service at a time, in reverse
    /// start order; `ShutdownComplete` once all scopes are empty.
    pub fn shutdown(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.shutting_down {
            log::info!(target: "agent::supervisor", "shutdown: stopping {} service(s) in reverse order", self.records.len());
        }
        self.shutting_down = true;
        for r in &mut self.records {
            r.want = false;
            r.restart_at = None;
            if r.state == State::Restarting {
                r.set_state(State::Stopped, now);
            }
            if matches!(
                r.after_stop,
                AfterStop::Restart | AfterStop::Failure(_) | AfterStop::Replace(_)
            ) {
                r.after_stop = AfterStop::Nothing;
            }
        }
        self.reconcile(now, &mut out);
        out
    }

    /// Replace the declared services (reload): unchanged services are left
    /// alone, changed ones restart with their new declaration, removed ones
    /// stop and go, new ones start.
    pub fn replace(&mut self, now: Instant, set: &ServiceSet) -> Vec<Action> {
        let mut out = Vec::new();
        let mut old: Vec<Record> = std::mem::take(&mut self.records);
        let mut next = Vec::with_capacity(set.services.len());
        for spec in &set.services {
            match old.iter().position(|r| r.spec.name == spec.name) {
                Some(p) => {
                    let r = old.remove(p);
                    next.push(r);
                    let i = next.len() - 1;
                    if next[i].spec != *spec {
                        log::info!(target: "agent::supervisor", "{}: declaration changed, restarting", spec.name);
                        if next[i].state.is_active() {
                            self.records = std::mem::take(&mut next);
                            self.begin_stop(
                                now,
                                i,
                                AfterStop::Replace(Box::new(spec.clone())),
                                &mut out,
                            );
                            next = std::mem::take(&mut self.records);
                        } else {
                            let r = &mut next[i];
                            r.spec = spec.clone();
                            r.fast_deaths = 0;
                            if r.state == State::Failed {
                                // A new declaration is a new chance (a
                                // service stopped by an operator stays so).
                                r.want = true;
                                r.reason = None;
                                r.restart_at = None;
                                r.set_state(State::Stopped, now);
                            }
                        }
                    }
                }
                None => {
                    log::debug!(target: "agent::supervisor", "{}: new service", spec.name);
                    next.push(Record::new(spec.clone(), now));
                }
            }
        }
        // Whatever is left was removed from the declaration.
        for mut r in old {
            log::info!(target: "agent::supervisor", "{}: no longer declared, stopping", r.spec.name);
            r.want = false;
            next.push(r);
            let i = next.len() - 1;
            self.records = std::mem::take(&mut next);
            self.begin_stop(now, i, AfterStop::Remove, &mut out);
            next = std::mem::take(&mut self.records);
        }
        self.records = next;
        self.reconcile(now, &mut out);
        out
    }

    // ---- internals --------------------------------------------------------

    fn want_with_dependencies(&mut self, now: Instant, i: usize) {
        let mut todo = vec![i];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(j) = todo.pop() {
            if !seen.insert(j) {
                continue;
            }
            let r = &mut self.records[j];
            r.want = true;
            r.fast_deaths = 0;
            r.reason = None;
            if r.state == State::Failed {
                r.set_state(State::Stopped, now);
            }
            let deps = r.spec.depends_on.clone();
            todo.extend(deps.iter().filter_map(|d| self.idx(d)));
        }
    }

    fn mark_ready(&mut self, now: Instant, i: usize) {
        let r = &mut self.records[i];
        r.set_state(State::Running, now);
        r.readies += 1;
        r.ready_at = Some(now);
        r.start_deadline = None;
        // Ready proves the exec (a notify or a probe may beat its pipe).
        r.exec_pending = false;
        r.health_failures = 0;
        r.reason = None;
        if let Some(h) = &r.spec.health {
            if r.probes() {
                r.probe_at = Some(now + h.interval);
            } else {
                // A process check: healthy while its process runs.
                r.healthy = Some(true);
                r.health_detail = "process running".to_string();
            }
        }
        log::info!(
            target: "agent::supervisor",
            "{}: running (pid {}{})",
            r.spec.name,
            r.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            r.started_at
                .map(|t| format!(", ready after {:.3}s", now.saturating_duration_since(t).as_secs_f64()))
                .unwrap_or_default()
        );
    }

    /// Ask an active service to stop: SIGTERM now, SIGKILL after its stop
    /// timeout. `then` says what happens once it is down.
    fn begin_stop(&mut self, now: Instant, i: usize, then: AfterStop, out: &mut Vec<Action>) {
        let r = &mut self.records[i];
        match r.state {
            State::Starting | State::Running => {
                r.after_stop = then;
                r.set_state(State::Stopping, now);
                r.start_deadline = None;
                r.probe_at = None;
                r.stop_deadline = Some(now + r.spec.stop_timeout);
                out.push(Action::TermScope {
                    service: r.spec.name.clone(),
                    scope: r.scope,
                });
            }
            State::Stopping => {
                // Already on its way down; a stronger intent replaces a
                // weaker one. A reload's new declaration (or removal) always
                // wins: it is the latest word on what should run.
                if r.after_stop == AfterStop::Nothing
                    || matches!(then, AfterStop::Remove | AfterStop::Replace(_))
                {
                    r.after_stop = then;
                }
            }
            State::Restarting | State::Stopped | State::Failed => {
                r.restart_at = None;
                r.after_stop = then;
                if r.state == State::Restarting {
                    r.set_state(State::Stopped, now);
                }
            }
        }
    }

    /// A service died on its own (or after the agent killed it for a
    /// reason): restart per policy, with backoff and crash-loop detection.
    fn after_death(&mut self, now: Instant, i: usize, success: bool, why: Option<String>) {
        let tun = self.tun.clone();
        let r = &mut self.records[i];
        let ran = r
            .started_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        if ran >= tun.stable_run {
            r.fast_deaths = 0;
        } else {
            r.fast_deaths += 1;
        }
        let failed = !success || why.is_some();
        let restart = match r.spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        };
        let cause = why.unwrap_or_else(|| {
            r.last_exit
                .as_ref()
                .map(|e| e.exit.describe())
                .unwrap_or_default()
        });
        if !restart {
            if failed {
                r.reason = Some(cause);
                r.set_state(State::Failed, now);
            } else {
                r.want = false;
                r.reason = None;
                r.set_state(State::Stopped, now);
                log::info!(target: "agent::supervisor", "{}: exited cleanly, not restarted (restart = \"{}\")", r.spec.name, r.spec.restart.as_str());
            }
            return;
        }
        if r.fast_deaths >= tun.crash_loop_max {
            let why = format!(
                "crash loop: {} deaths in a row, each within {:.0}s of start ({cause})",
                r.fast_deaths,
                tun.stable_run.as_secs_f64()
            );
            log::error!(target: "agent::supervisor", "{}: {why}; marked failed", r.spec.name);
            r.reason = Some(why);
            r.set_state(State::Failed, now);
            return;
        }
        let delay = self.backoff.delay(r.spec.restart_delay, r.fast_deaths);
        r.reason = Some(cause);
        r.restart_at = Some(now + delay);
        r.set_state(State::Restarting, now);
        log::info!(
            target: "agent::supervisor",
            "{}: restarting in {:.3}s",
            r.spec.name,
            delay.as_secs_f64()
        );
    }

    /// A stop finished (main gone, scope empty): do what was planned.
    fn finish_stop(&mut self, now: Instant, i: usize) -> bool {
        let then = std::mem::replace(&mut self.records[i].after_stop, AfterStop::Nothing);
        let r = &mut self.records[i];
        r.stop_deadline = None;
        r.stops += 1;
        match then {
            AfterStop::Nothing => r.set_state(State::Stopped, now),
            AfterStop::Restart => {
                r.fast_deaths = 0;
                r.reason = None;
                r.set_state(State::Stopped, now);
            }
            AfterStop::Failure(why) => {
                r.set_state(State::Stopped, now);
                self.after_death(now, i, false, Some(why));
            }
            AfterStop::Replace(spec) => {
                r.spec = *spec;
                r.fast_deaths = 0;
                r.set_state(State::Stopped, now);
            }
            AfterStop::Remove => {
                log::info!(target: "agent::supervisor", "{}: removed", r.spec.name);
                self.records.remove(i);
                return true;
            }
        }
        false
    }

    fn deps_running(&self, r: &Record) -> bool {
        r.spec.depends_on.iter().all(|d| {
            self.records
                .iter()
                .find(|x| &x.spec.name == d)
                .is_some_and(|x| x.state == State::Running)
        })
    }

    /// Bring what runs in line with what should run.
    fn reconcile(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.reconciled_at = self.reconciled_at.max(now);
        // Stops that completed.
        let mut i = 0;
        while i < self.records.len() {
            let r = &self.records[i];
            let down = r.pid.is_none() && !r.scope_busy;
            if down && r.state == State::Stopping {
                if self.finish_stop(now, i) {
                    continue;
                }
            } else if down && r.after_stop == AfterStop::Remove && !r.state.is_active() {
                self.finish_stop(now, i);
                continue;
            }
            i += 1;
        }

        if self.shutting_down {
            self.reconcile_shutdown(now, out);
            return;
        }

        // Starts, in start order.
        for i in 0..self.records.len() {
            let r = &self.records[i];
            let startable = r.want
                && matches!(r.state, State::Stopped | State::Restarting)
                && r.restart_at.is_none_or(|t| t <= now)
                && !r.scope_busy
                && r.after_stop == AfterStop::Nothing;
            if startable && self.deps_running(&self.records[i]) {
                let r = &mut self.records[i];
                r.restart_at = None;
                r.spawns += 1;
                r.scope_busy = true;
                r.healthy = None;
                r.health_failures = 0;
                r.set_state(State::Starting, now);
                out.push(Action::Spawn {
                    service: r.spec.name.clone(),
                    scope: r.scope,
                });
            }
        }

        // Boot readiness, reported once.
        if !self.boot_ready {
            let wanted = || self.records.iter().filter(|r| r.want);
            let counts = |r: &Record| {
                r.state == State::Running && self.settled_at(r).is_none_or(|t| t <= now)
            };
            if wanted().all(counts) {
                self.boot_ready = true;
                out.push(Action::BootReady);
            } else if !self.stalled_reported {
                let busy = wanted().any(|r| {
                    matches!(
                        r.state,
                        State::Starting | State::Stopping | State::Restarting
                    ) || (r.state == State::Stopped && self.deps_could_come(r))
                        || (r.state == State::Running && !counts(r))
                });
                if !busy {
                    self.stalled_reported = true;
                    let failed = wanted()
                        .filter(|r| r.state == State::Failed)
                        .map(|r| r.spec.name.clone())
                        .collect();
                    out.push(Action::BootStalled { failed });
                }
            }
        }
    }

    /// A stopped, wanted service could still start: none of its
    /// dependencies (transitively) is failed.
    fn deps_could_come(&self, r: &Record) -> bool {
        self.blocking_dependency(r).is_none()
    }

    /// The first dependency of `r` (transitively) that is failed, or
    /// declared by no service (`None` record).
    fn blocking_dependency<'a>(&'a self, r: &'a Record) -> Option<(&'a str, Option<&'a Record>)> {
        let mut seen = std::collections::BTreeSet::new();
        let mut todo: Vec<&str> = r.spec.depends_on.iter().map(String::as_str).collect();
        while let Some(d) = todo.pop() {
            if !seen.insert(d) {
                continue;
            }
            match self.records.iter().find(|x| x.spec.name == d) {
                Some(x) if x.state == State::Failed => return Some((d, Some(x))),
                Some(x) => todo.extend(x.spec.depends_on.iter().map(String::as_str)),
                None => return Some((d, None)),
            }
        }
        None
    }

    /// Why `service` cannot start now: a dependency of it failed (or is
    /// not declared). For an operator waiting on a start.
    pub fn dependency_failure(&self, service: &str) -> Option<String> {
        let r = self.get(service)?;
        let (d, rec) = self.blocking_dependency(r)?;
        Some(match rec {
            Some(x) => format!(
                "its dependency \"{d}\" failed: {}",
                x.reason.as_deref().unwrap_or("failed")
            ),
            None => format!("its dependency \"{d}\" is not declared"),
        })
    }

    fn reconcile_shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.shutdown_done {
            return;
        }
        // One at a time, last started first.
        if self.records.iter().any(|r| r.state == State::Stopping) {
            return;
        }
        if let Some(i) = self.records.iter().rposition(|r| r.state.is_active()) {
            self.begin_stop(now, i, AfterStop::Nothing, out);
            return;
        }
        if self.records.iter().all(|r| !r.scope_busy) {
            self.shutdown_done = true;
            log::info!(target: "agent::supervisor", "shutdown: all services stopped");
            out.push(Action::ShutdownComplete);
        }
    }
}

/// Probe delay while a service is starting: 10 ms, then 10 ms longer after
/// each failed probe, at most 500 ms and the check's interval. A probe on
/// loopback is cheap, and a service that is up at 60 ms should not wait
/// for a doubling schedule's 150 ms (the boot's Ready waits for it).
fn starting_probe_delay(r: &Record, attempt: u32) -> Duration {
    let interval = r
        .spec
        .health
        .as_ref()
        .map_or(Duration::from_secs(1), |h| h.interval);
    Duration::from_millis(10)
        .saturating_mul(attempt.saturating_add(1))
        .min(Duration::from_millis(500))
        .min(interval)
}
