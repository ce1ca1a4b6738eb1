//! One supervised service's record: its state, timers and history.

use std::time::{Duration, Instant};

use crate::config::services::ServiceSpec;
use crate::util::rng::Rng;

/// Service states (digest §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not running. `want` says whether it should be started.
    Stopped,
    /// Spawned, not ready yet.
    Starting,
    /// Ready (and healthy, when it has a health check).
    Running,
    /// Asked to stop: SIGTERM sent, SIGKILL after the stop timeout.
    Stopping,
    /// Dead and waiting for its restart delay (or for its scope to empty).
    Restarting,
    /// Dead and not restarted automatically: restart policy, crash loop,
    /// start failure.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Restarting => "restarting",
            State::Failed => "failed",
        }
    }

    /// A process of this service may be alive.
    pub fn is_active(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Stopping)
    }
}

/// How a main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    pub fn describe(self) -> String {
        match self {
            Exit::Code(c) => format!("exit code {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
        }
    }
}

/// The last death of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastExit {
    pub exit: Exit,
    pub at: Instant,
    /// The kernel OOM-killed a process of the scope during that run.
    pub oom: bool,
}

/// What to do once a stop completes.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterStop {
    /// Stay stopped.
    Nothing,
    /// Start again at once (operator restart): no backoff, counters reset.
    Restart,
    /// The agent killed it (start timeout, unhealthy): treat as a failure,
    /// restart per policy and backoff.
    Failure(String),
    /// Drop the record (removed by a reload).
    Remove,
    /// Start again with a new declaration (changed by a reload).
    Replace(Box<ServiceSpec>),
}

#[derive(Debug, Clone)]
pub struct Record {
    pub spec: ServiceSpec,
    pub state: State,
    pub since: Instant,
    /// Should be running.
    pub want: bool,
    pub pid: Option<u32>,
    /// Generation of the scope the service runs in; a zombie scope is
    /// abandoned and the next spawn uses a fresh one.
    pub scope: u32,
    /// The scope may still hold processes.
    pub scope_busy: bool,
    pub started_at: Option<Instant>,
    pub ready_at: Option<Instant>,
    pub restart_at: Option<Instant>,
    pub stop_deadline: Option<Instant>,
    pub kill_deadline: Option<Instant>,
    pub start_deadline: Option<Instant>,
    pub after_stop: AfterStop,
    pub probe_at: Option<Instant>,
    pub probe_in_flight: bool,
    pub probe_attempt: u32,
    pub health_failures: u32,
    pub healthy: Option<bool>,
    pub health_detail: String,
    pub spawns: u32,
    /// Stops completed (its processes gone) and runs that became ready, so
    /// far: a request waiting for either sees it even when another
    /// request changed the state again in the same turn.
    pub stops: u32,
    pub readies: u32,
    /// Deaths in a row, each after a short run.
    pub fast_deaths: u32,
    pub last_exit: Option<LastExit>,
    pub oom_kills: u32,
    pub oom_in_run: bool,
    pub status_text: Option<String>,
    pub reason: Option<String>,
    /// Spawned, but its exec not yet confirmed (the close-on-exec pipe
    /// has not reached EOF): a `spawned` service is not ready until then.
    pub exec_pending: bool,
}

impl Record {
    pub fn new(spec: ServiceSpec, now: Instant) -> Record {
        Record {
            spec,
            state: State::Stopped,
            since: now,
            want: true,
            pid: None,
            scope: 0,
            scope_busy: false,
            started_at: None,
            ready_at: None,
            restart_at: None,
            stop_deadline: None,
            kill_deadline: None,
            start_deadline: None,
            after_stop: AfterStop::Nothing,
            probe_at: None,
            probe_in_flight: false,
            probe_attempt: 0,
            health_failures: 0,
            healthy: None,
            health_detail: String::new(),
            spawns: 0,
            stops: 0,
            readies: 0,
            fast_deaths: 0,
            last_exit: None,
            oom_kills: 0,
            oom_in_run: false,
            status_text: None,
            reason: None,
            exec_pending: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn set_state(&mut self, state: State, now: Instant) {
        if self.state != state {
            log::debug!(target: "agent::supervisor", "{}: {} -> {}", self.spec.name, self.state.as_str(), state.as_str());
            self.state = state;
            self.since = now;
        }
    }

    /// How often it has reached the state a request waits for: running
    /// (`readies`) or stopped (`stops`).
    pub fn arrivals(&self, running: bool) -> u32 {
        if running {
            self.readies
        } else {
            self.stops
        }
    }

    /// Restarts so far (every spawn after the first).
    pub fn restarts(&self) -> u32 {
        self.spawns.saturating_sub(1)
    }

    /// The earliest timer of this record.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.restart_at,
            self.stop_deadline,
            self.kill_deadline,
            self.start_deadline,
            self.probe_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// True when a health check decides readiness and liveness by probing.
    pub fn probes(&self) -> bool {
        self.spec
            .health
            .as_ref()
            .is_some_and(|h| h.kind != crate::config::services::HealthKind::Process)
    }
}

/// Restart delays: the declared delay first, then exponential growth with
/// jitter up to a cap.
#[derive(Debug, Clone)]
pub struct RestartBackoff {
    pub cap: Duration,
    rng: Rng,
}

/// The smallest step of exponential backoff, so a zero restart delay does
/// not spin.
pub const BACKOFF_FLOOR: Duration = Duration::from_millis(100);

impl RestartBackoff {
    pub fn new(cap: Duration, seed: u64) -> RestartBackoff {
        RestartBackoff {
            cap,
            rng: Rng::new(seed),
        }
    }

    /// Delay before restart number `fast_deaths` in a row (0 or 1: the
    /// declared delay; then doubling with ±20 % jitter, capped).
    pub fn delay(&mut self, declared: Duration, fast_deaths: u32) -> Duration {
        if fast_deaths <= 1 {
            return declared.min(self.cap.max(declared));
        }
        let base = declared.max(BACKOFF_FLOOR);
        let exp = (fast_deaths - 1).min(20);
        let grown = base.saturating_mul(1 << exp).min(self.cap);
        let jitter = 0.8 + 0.4 * self.rng.unit();
        grown.mul_f64(jitter).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = RestartBackoff::new(Duration::from_secs(60), 1);
        let d = Duration::from_secs(1);
        assert_eq!(b.delay(d, 0), d);
        assert_eq!(b.delay(d, 1), d);
        let d2 = b.delay(d, 2);
        assert!(
            d2 >= Duration::from_millis(1600) && d2 <= Duration::from_millis(2400),
            "{d2:?}"
        );
        let d4 = b.delay(d, 4);
        assert!(
            d4 >= Duration::from_millis(6400) && d4 <= Duration::from_millis(9600),
            "{d4:?}"
        );
        for _ in 0..100 {
            let capped = b.delay(d, 30);
            assert!(
                capped <= Duration::from_secs(60) && capped >= Duration::from_secs(48),
                "{capped:?}"
            );
        }
        // A zero declared delay restarts at once the first time, then backs off.
        let z = Duration::ZERO;
        assert_eq!(b.delay(z, 1), Duration::ZERO);
        assert!(b.delay(z, 2) >= Duration::from_millis(160));
    }
}
