//! A leader's replication bookkeeping for one follower.

use std::collections::VecDeque;

use super::types::ReplicationState;

#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// Highest index known to be in the follower's (durable) log.
    pub match_index: u64,
    /// Next index to send.
    pub next_index: u64,
    pub state: ReplicationState,
    /// Probe and Snapshot: one message is out; wait for its answer (or a
    /// heartbeat response, which suggests it was lost).
    pub paused: bool,
    /// Replicate: last index of each unacknowledged append, ascending.
    inflights: VecDeque<u64>,
    /// Snapshot: where the next chunk starts.
    pub snapshot_offset: u64,
    /// Snapshot: when the outstanding chunk was sent.
    pub snapshot_sent_ms: Option<u64>,
    /// When we last heard anything from this follower in this term.
    pub last_heard_ms: Option<u64>,
    /// Highest read-index context the follower echoed in this term.
    pub read_ctx_acked: u64,
}

impl Progress {
    pub fn new(next_index: u64, now_ms: u64) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe,
            paused: false,
            inflights: VecDeque::new(),
            snapshot_offset: 0,
            snapshot_sent_ms: None,
            last_heard_ms: Some(now_ms),
            read_ctx_acked: 0,
        }
    }

    pub fn become_probe(&mut self) {
        let floor = match self.state {
            ReplicationState::Snapshot { index } => index + 1,
            _ => 0,
        };
        self.state = ReplicationState::Probe;
        self.next_index = (self.match_index + 1).max(floor);
        self.paused = false;
        self.inflights.clear();
    }

    pub fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index + 1;
        self.paused = false;
        self.inflights.clear();
    }

    pub fn become_snapshot(&mut self, index: u64) {
        self.state = ReplicationState::Snapshot { index };
        self.snapshot_offset = 0;
        self.snapshot_sent_ms = None;
        self.paused = false;
        self.inflights.clear();
    }

    /// May an append (with entries) be sent now?
    pub fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ReplicationState::Probe => !self.paused,
            ReplicationState::Replicate => self.inflights.len() < max_inflight,
            ReplicationState::Snapshot { .. } => false,
        }
    }

    /// An append whose last entry is `last` (None: no entries) went out.
    pub fn on_append_sent(&mut self, last: Option<u64>) {
        match self.state {
            ReplicationState::Replicate => {
                if let Some(last) = last {
                    self.next_index = last + 1;
                    self.inflights.push_back(last);
                }
            }
            ReplicationState::Probe => self.paused = true,
            ReplicationState::Snapshot { .. } => {}
        }
    }

    /// The follower has everything up to `index`. True if `match_index` grew.
    pub fn on_accepted(&mut self, index: u64) -> bool {
        let grew = index > self.match_index;
        if grew {
            self.match_index = index;
        }
        self.next_index = self.next_index.max(index + 1);
        while self.inflights.front().is_some_and(|&i| i <= index) {
            self.inflights.pop_front();
        }
        match self.state {
            ReplicationState::Probe => {
                self.become_replicate();
            }
            ReplicationState::Snapshot { index: snap } if self.match_index >= snap => {
                self.become_probe();
            }
            _ => {}
        }
        grew
    }

    /// The follower rejected `prev_index`; `hinted_next` is where the
    /// leader's log suggests to probe next. False if the rejection is stale.
    pub fn on_rejected(&mut self, prev_index: u64, hinted_next: u64) -> bool {
        match self.state {
            ReplicationState::Replicate => {
                if prev_index <= self.match_index {
                    return false;
                }
                self.become_probe();
            }
            ReplicationState::Probe => {
                if self.next_index == 0 || prev_index != self.next_index - 1 {
                    return false;
                }
            }
            ReplicationState::Snapshot { .. } => return false,
        }
        let hi = prev_index.max(self.match_index + 1);
        self.next_index = hinted_next.clamp(self.match_index + 1, hi);
        self.paused = false;
        true
    }

    /// A heartbeat response arrived: whatever was outstanding may be lost.
    pub fn on_heartbeat_response(&mut self, max_inflight: usize) {
        self.paused = false;
        if self.inflights.len() >= max_inflight {
            self.inflights.pop_front();
        }
    }

    pub fn inflight_count(&self) -> usize {
        self.inflights.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_then_replicate_then_reject() {
        let mut p = Progress::new(11, 0);
        assert!(p.can_send(2));
        p.on_append_sent(Some(12));
        assert!(!p.can_send(2), "a probe waits for its answer");
        assert!(p.on_accepted(12));
        assert_eq!(p.state, ReplicationState::Replicate);
        assert_eq!(p.next_index, 13);
        p.on_append_sent(Some(14));
        p.on_append_sent(Some(16));
        assert!(!p.can_send(2), "inflight window full");
        p.on_accepted(14);
        assert!(p.can_send(2));
        assert!(!p.on_rejected(12, 5), "stale: at or below match");
        assert!(p.on_rejected(16, 15));
        assert_eq!(p.state, ReplicationState::Probe);
        assert_eq!(p.next_index, 15);
        assert!(!p.on_rejected(16, 3), "stale probe answer");
        assert!(p.on_rejected(14, 3));
        assert_eq!(p.next_index, 15, "never below match + 1");
    }

    #[test]
    fn snapshot_done_returns_to_probe() {
        let mut p = Progress::new(5, 0);
        p.become_snapshot(100);
        assert!(!p.can_send(4));
        p.on_accepted(100);
        assert_eq!(p.state, ReplicationState::Probe);
        assert_eq!(p.next_index, 101);
    }
}
