//! A simulated network: per-message delay, loss, duplication (hence
//! reordering), and partitions, all drawn from the simulation's seeded PRNG.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};

use crate::journal::raft::{Message, NodeId};
use crate::util::rng::Rng;

/// How badly the network behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetFaults {
    pub drop: f64,
    pub duplicate: f64,
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Chance that a message is held back much longer (reordering).
    pub long_delay: f64,
    pub long_delay_max_ms: u64,
}

impl NetFaults {
    pub fn reliable() -> NetFaults {
        NetFaults {
            drop: 0.0,
            duplicate: 0.0,
            min_delay_ms: 1,
            max_delay_ms: 5,
            long_delay: 0.0,
            long_delay_max_ms: 0,
        }
    }

    pub fn unreliable() -> NetFaults {
        NetFaults {
            drop: 0.1,
            duplicate: 0.05,
            min_delay_ms: 1,
            max_delay_ms: 25,
            long_delay: 0.05,
            long_delay_max_ms: 400,
        }
    }
}

#[derive(Debug)]
pub(crate) struct InFlight {
    pub deliver_at: u64,
    seq: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub msg: Message,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    /// Reversed: the heap pops the earliest delivery first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deliver_at, other.seq).cmp(&(self.deliver_at, self.seq))
    }
}

#[derive(Debug)]
pub(crate) struct Network {
    pub faults: NetFaults,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    /// Directed links that lose everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    pub sent: u64,
}

impl Network {
    pub fn new(faults: NetFaults) -> Network {
        Network {
            faults,
            queue: BinaryHeap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            sent: 0,
        }
    }

    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_pair(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Loses everything from `from` to `to` (but not back).
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    pub fn heal_pair(&mut self, a: NodeId, b: NodeId) {
        self.cut.remove(&(a, b));
        self.cut.remove(&(b, a));
    }

    pub fn heal_all(&mut self) {
        self.cut.clear();
    }

    /// Only nodes within the same group can talk.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.cut.clear();
        for (i, g) in groups.iter().enumerate() {
            for (j, h) in groups.iter().enumerate() {
                if i != j {
                    for &a in g {
                        for &b in h {
                            self.cut.insert((a, b));
                        }
                    }
                }
            }
        }
    }

    pub fn send(&mut self, rng: &mut Rng, now: u64, from: NodeId, to: NodeId, msg: Message) {
        self.sent += 1;
        if self.is_cut(from, to) || rng.chance(self.faults.drop) {
            return;
        }
        if rng.chance(self.faults.duplicate) {
            let at = now + self.delay(rng);
            self.push(at, from, to, msg.clone());
        }
        let at = now + self.delay(rng);
        self.push(at, from, to, msg);
    }

    fn delay(&self, rng: &mut Rng) -> u64 {
        let f = &self.faults;
        if f.long_delay > 0.0 && rng.chance(f.long_delay) {
            rng.range(f.max_delay_ms, f.long_delay_max_ms.max(f.max_delay_ms) + 1)
        } else {
            rng.range(f.min_delay_ms, f.max_delay_ms + 1)
        }
    }

    fn push(&mut self, deliver_at: u64, from: NodeId, to: NodeId, msg: Message) {
        self.seq += 1;
        self.queue.push(InFlight {
            deliver_at,
            seq: self.seq,
            from,
            to,
            msg,
        });
    }

    /// When the last message in flight from `from` to `to` arrives.
    pub fn last_delivery(&self, from: NodeId, to: NodeId) -> Option<u64> {
        self.queue
            .iter()
            .filter(|m| m.from == from && m.to == to)
            .map(|m| m.deliver_at)
            .max()
    }

    pub fn next_delivery(&self) -> Option<u64> {
        self.queue.peek().map(|m| m.deliver_at)
    }

    /// The next message due by `now`. Messages whose link was cut while in
    /// flight are lost.
    pub fn pop_due(&mut self, now: u64) -> Option<InFlight> {
        while self.queue.peek().is_some_and(|m| m.deliver_at <= now) {
            let m = self.queue.pop()?;
            if !self.is_cut(m.from, m.to) {
                return Some(m);
            }
        }
        None
    }
}
