//! One simulated server: its disk (only what Readys persisted), its toy
//! state machine (volatile) and its clock.

use std::collections::BTreeMap;

use crate::journal::raft::*;

/// What a node's disk holds: only what a Ready persisted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Disk {
    pub hard_state: HardState,
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    pub entries: Vec<Entry>,
}

impl Disk {
    pub fn last(&self) -> (u64, u64) {
        match (self.entries.last(), &self.snapshot) {
            (Some(e), _) => (e.index, e.term),
            (None, Some((m, _))) => (m.index, m.term),
            (None, None) => (0, 0),
        }
    }
}

/// The toy state machine: every applied Normal entry by index. Volatile:
/// rebuilt from the snapshot on restart.
#[derive(Debug, Clone, Default)]
pub(crate) struct App {
    pub applied: u64,
    pub normal: BTreeMap<u64, (u64, Vec<u8>)>,
}

impl App {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, (term, data)) in &self.normal {
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&term.to_be_bytes());
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    pub fn decode(applied: u64, mut bytes: &[u8]) -> App {
        let mut normal = BTreeMap::new();
        while bytes.len() >= 20 {
            let index = u64::from_be_bytes(bytes[0..8].try_into().unwrap());
            let term = u64::from_be_bytes(bytes[8..16].try_into().unwrap());
            let len = u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize;
            normal.insert(index, (term, bytes[20..20 + len].to_vec()));
            bytes = &bytes[20 + len..];
        }
        App { applied, normal }
    }
}

#[derive(Debug)]
pub(crate) struct SimNode {
    pub raft: Option<RaftNode>,
    pub disk: Disk,
    pub app: App,
    pub incarnation: u64,
    /// Handed out by Readys and persisted, not yet applied and advanced.
    pub unapplied: Vec<Unapplied>,
    /// When the deferred batches get applied at the latest (global time).
    pub unapplied_due: u64,
    pub clock: NodeClock,
}

impl SimNode {
    /// The node's next timer or deferred work, in global time.
    pub fn next_event(&self) -> Option<u64> {
        let timer = self
            .raft
            .as_ref()?
            .next_deadline_ms()
            .map(|d| self.clock.global(d));
        let deferred = (!self.unapplied.is_empty()).then_some(self.unapplied_due);
        match (timer, deferred) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Unapplied {
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    pub committed: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    pub failed_reads: Vec<FailedRead>,
}

/// A node's monotonic clock: `offset + t * rate_ppm / 1e6` for global time `t`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeClock {
    pub offset: u64,
    pub rate_ppm: u64,
}

impl NodeClock {
    pub fn local(&self, t: u64) -> u64 {
        self.offset + t * self.rate_ppm / 1_000_000
    }

    /// The first global time at which the local clock reads `local`.
    pub fn global(&self, local: u64) -> u64 {
        let since = local.saturating_sub(self.offset);
        (since * 1_000_000).div_ceil(self.rate_ppm)
    }
}
