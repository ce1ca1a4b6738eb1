//! Boot phases as a sans-IO state machine (digest §1.3):
//!
//! InitHardware → ConfigureNetwork → LoadIdentity → PullOverlay →
//! StartServices → Ready.
//!
//! Strictly in order. A failed phase is retried after 1, 2, 4 … seconds
//! (capped at 60 s), at most 30 tries; then the boot is `BootFailed`, which
//! blocks every later phase and never signals Ready. The loop (and with it
//! the watchdog and the control socket) keeps running in every state, so an
//! operator can look at a failed node instead of watching it reboot-loop.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    InitHardware,
    ConfigureNetwork,
    LoadIdentity,
    PullOverlay,
    StartServices,
    Ready,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::InitHardware,
        Phase::ConfigureNetwork,
        Phase::LoadIdentity,
        Phase::PullOverlay,
        Phase::StartServices,
        Phase::Ready,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::InitHardware => "init_hardware",
            Phase::ConfigureNetwork => "configure_network",
            Phase::LoadIdentity => "load_identity",
            Phase::PullOverlay => "pull_overlay",
            Phase::StartServices => "start_services",
            Phase::Ready => "ready",
        }
    }

    fn next(self) -> Option<Phase> {
        let i = Phase::ALL.iter().position(|p| *p == self)?;
        Phase::ALL.get(i + 1).copied()
    }
}

/// Where the boot is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootState {
    /// The phase should run now (or at `retry_at`).
    Pending {
        phase: Phase,
        attempt: u32,
        retry_at: Option<Instant>,
    },
    /// The phase is running (its work completes asynchronously).
    Running { phase: Phase, attempt: u32 },
    /// Every phase done.
    Done,
    /// A phase failed too often; nothing after it runs.
    Failed { phase: Phase, reason: String },
}

/// What the loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAction {
    Run(Phase),
}

/// Retry policy: 1, 2, 4 … s, capped, a bounded number of tries.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(60);
pub const MAX_TRIES: u32 = 30;

#[derive(Debug, Clone)]
pub struct BootSequence {
    started: Instant,
    pub state: BootState,
    /// When each phase completed, relative to the agent's start.
    pub completed: Vec<(Phase, Duration)>,
    pub last_error: Option<String>,
    max_tries: u32,
}

impl BootSequence {
    pub fn new(started: Instant) -> BootSequence {
        BootSequence {
            started,
            state: BootState::Pending {
                phase: Phase::InitHardware,
                attempt: 1,
                retry_at: None,
            },
            completed: Vec::new(),
            last_error: None,
            max_tries: MAX_TRIES,
        }
    }

    #[cfg(test)]
    fn with_max_tries(mut self, n: u32) -> Self {
        self.max_tries = n;
        self
    }

    /// The phase to run now, if any; it is then `Running`.
    pub fn poll(&mut self, now: Instant) -> Option<BootAction> {
        if let BootState::Pending {
            phase,
            attempt,
            retry_at,
        } = self.state.clone()
        {
            if retry_at.is_none_or(|t| t <= now) {
                self.state = BootState::Running { phase, attempt };
                return Some(BootAction::Run(phase));
            }
        }
        None
    }

    /// The running phase finished; [`poll`](Self::poll) says what runs next.
    /// Results for a phase that is not running are ignored.
    pub fn on_result(&mut self, now: Instant, phase: Phase, result: Result<(), String>) {
        let BootState::Running {
            phase: running,
            attempt,
        } = self.state.clone()
        else {
            return;
        };
        if running != phase {
            return;
        }
        match result {
            Ok(()) => {
                // The error of an earlier try of this phase is history.
                self.last_error = None;
                self.completed
                    .push((phase, now.saturating_duration_since(self.started)));
                self.state = match phase.next() {
                    Some(next) => BootState::Pending {
                        phase: next,
                        attempt: 1,
                        retry_at: None,
                    },
                    None => BootState::Done,
                };
            }
            Err(reason) => {
                self.last_error = Some(reason.clone());
                if attempt >= self.max_tries {
                    self.state = BootState::Failed { phase, reason };
                    return;
                }
                let delay = retry_delay(attempt);
                self.state = BootState::Pending {
                    phase,
                    attempt: attempt + 1,
                    retry_at: Some(now + delay),
                };
            }
        }
    }

    /// A phase waiting out its retry delay runs at the next poll instead
    /// (what it depends on was just changed by an operator).
    pub fn retry_now(&mut self) -> bool {
        match &mut self.state {
            BootState::Pending { retry_at, .. } if retry_at.is_some() => {
                *retry_at = None;
                true
            }
            _ => false,
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            BootState::Pending { retry_at, .. } => *retry_at,
            _ => None,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.state == BootState::Done
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.state, BootState::Failed { .. })
    }

    /// Has `phase` completed?
    pub fn done(&self, phase: Phase) -> bool {
        self.completed.iter().any(|(p, _)| *p == phase)
    }

    /// The phase in progress (or that failed), for `status`.
    pub fn current(&self) -> &'static str {
        match &self.state {
            BootState::Pending { phase, .. } | BootState::Running { phase, .. } => phase.as_str(),
            BootState::Done => "ready",
            BootState::Failed { .. } => "boot_failed",
        }
    }
}

/// Delay before try `attempt + 1`: 1, 2, 4 … s, at most 60 s.
pub fn retry_delay(attempt: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
        .min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_run_strictly_in_order() {
        let t0 = Instant::now();
        let mut b = BootSequence::new(t0);
        let mut ran = vec![];
        let mut action = b.poll(t0);
        let mut t = t0;
        while let Some(BootAction::Run(p)) = action {
            ran.push(p);
            t += Duration::from_millis(10);
            b.on_result(t, p, Ok(()));
            action = b.poll(t);
        }
        assert_eq!(ran, Phase::ALL);
        assert!(b.is_ready());
        assert_eq!(b.completed.len(), 6);
        assert_eq!(b.completed[5].1, Duration::from_millis(60));
    }

    #[test]
    fn failure_retries_with_backoff_then_blocks_everything() {
        let t0 = Instant::now();
        let mut b = BootSequence::new(t0);
        let mut t = t0;
        assert_eq!(b.poll(t), Some(BootAction::Run(Phase::InitHardware)));
        b.on_result(t, Phase::InitHardware, Ok(()));
        assert_eq!(b.poll(t), Some(BootAction::Run(Phase::ConfigureNetwork)));
        // ConfigureNetwork is now running; make it fail repeatedly.
        let mut delays = vec![];
        for _ in 0..MAX_TRIES {
            assert!(matches!(
                b.state,
                BootState::Running {
                    phase: Phase::ConfigureNetwork,
                    ..
                }
            ));
            b.on_result(t, Phase::ConfigureNetwork, Err("no link".into()));
            assert_eq!(b.poll(t), None);
            match b.next_deadline() {
                Some(d) => {
                    delays.push((d - t).as_secs());
                    // Nothing runs before the deadline.
                    assert_eq!(b.poll(d - Duration::from_millis(1)), None);
                    t = d;
                    assert_eq!(b.poll(t), Some(BootAction::Run(Phase::ConfigureNetwork)));
                }
                None => break,
            }
        }
        assert_eq!(&delays[..7], [1, 2, 4, 8, 16, 32, 60]);
        assert!(delays.iter().all(|d| *d <= 60));
        assert_eq!(delays.len() as u32, MAX_TRIES - 1);
        assert_eq!(
            b.state,
            BootState::Failed {
                phase: Phase::ConfigureNetwork,
                reason: "no link".into()
            }
        );
        // BootFailed blocks every later phase and never becomes ready.
        assert_eq!(b.poll(t + Duration::from_secs(3600)), None);
        assert!(!b.done(Phase::PullOverlay));
        assert!(!b.is_ready());
        assert_eq!(b.current(), "boot_failed");
    }

    #[test]
    fn a_retry_that_succeeds_continues() {
        let t0 = Instant::now();
        let mut b = BootSequence::new(t0).with_max_tries(3);
        b.poll(t0);
        b.on_result(t0, Phase::InitHardware, Err("module".into()));
        assert_eq!(b.last_error.as_deref(), Some("module"));
        let t1 = b.next_deadline().unwrap();
        assert_eq!(b.poll(t1), Some(BootAction::Run(Phase::InitHardware)));
        b.on_result(t1, Phase::InitHardware, Ok(()));
        assert_eq!(b.last_error, None, "a stale error after the retry worked");
        assert_eq!(b.poll(t1), Some(BootAction::Run(Phase::ConfigureNetwork)));
        // Stale results are ignored.
        b.on_result(t1, Phase::InitHardware, Ok(()));
        assert!(matches!(
            b.state,
            BootState::Running {
                phase: Phase::ConfigureNetwork,
                ..
            }
        ));
    }
}
