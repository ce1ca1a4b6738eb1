//! Assertions in the style of the MIT 6.824 Raft tests, on top of
//! [`Cluster`]: "there is exactly one leader", "this command commits on n
//! servers", and the end-of-run convergence check of randomized runs.

use std::collections::BTreeMap;

use super::cluster::Cluster;
use super::network::NetFaults;
use crate::journal::raft::{NodeId, ProposeError};

impl Cluster {
    /// Waits (up to ~5 s of simulated time) for exactly one leader among
    /// live connected nodes in the newest term; returns it.
    pub fn check_one_leader(&mut self) -> NodeId {
        for _ in 0..10 {
            let pause = self.rng.range(450, 550);
            self.run_for(pause);
            let mut by_term: BTreeMap<u64, Vec<NodeId>> = BTreeMap::new();
            for (id, term) in self.leaders() {
                by_term.entry(term).or_default().push(id);
            }
            for (term, ids) in &by_term {
                if ids.len() > 1 {
                    self.fail(&format!("term {term} has leaders {ids:?}"));
                }
            }
            if let Some((_, ids)) = by_term.iter().next_back() {
                return ids[0];
            }
        }
        self.fail("expected one leader, got none")
    }

    /// No live connected node believes it leads.
    pub fn check_no_leader(&self) {
        let leaders = self.leaders();
        if !leaders.is_empty() {
            self.fail(&format!(
                "expected no leader among connected nodes, got {leaders:?}"
            ));
        }
    }

    /// All live connected nodes agree on the term; returns it.
    pub fn check_terms(&self) -> u64 {
        let mut term = None;
        for id in self.ids() {
            if !self.is_connected(id) {
                continue;
            }
            if let Some(raft) = self.raft(id) {
                match term {
                    None => term = Some(raft.term()),
                    Some(t) if t != raft.term() => self.fail("servers disagree on term"),
                    Some(_) => {}
                }
            }
        }
        term.unwrap_or(0)
    }

    /// Proposes `data` on whichever node leads, retrying for 10 s, until
    /// `expected` nodes applied it; returns its index. Without `retry`, a
    /// proposal that fails to commit once is fatal.
    pub fn one(&mut self, data: Vec<u8>, expected: usize, retry: bool) -> u64 {
        let give_up = self.now + 10_000;
        let mut starts = 0;
        while self.now < give_up {
            let mut index = None;
            let ids = self.ids();
            starts = (starts + 1) % ids.len();
            for k in 0..ids.len() {
                let id = ids[(starts + k) % ids.len()];
                if !self.is_connected(id) {
                    continue;
                }
                if let Ok(i) = self.propose(id, data.clone()) {
                    index = Some(i);
                    break;
                }
            }
            if let Some(index) = index {
                let wait_until = self.now + 2_000;
                while self.now < wait_until {
                    let (n, got) = self.n_committed(index);
                    if n >= expected && got.as_deref() == Some(&data[..]) {
                        return index;
                    }
                    self.run_for(20);
                }
                if !retry {
                    self.fail(&format!("one({data:?}) failed to reach agreement"));
                }
            } else {
                self.run_for(50);
            }
        }
        self.fail(&format!("one({data:?}) failed to reach agreement in 10s"))
    }

    /// Like `propose` but only on a node that believes it leads.
    pub fn propose_at_leader(&mut self, data: Vec<u8>) -> Result<(NodeId, u64), ProposeError> {
        let leader = self
            .newest_leader()
            .ok_or(ProposeError::NotLeader { leader: None })?;
        self.propose(leader, data).map(|i| (leader, i))
    }

    /// Ends a randomized run: heals everything, restarts every node, then
    /// requires the cluster to elect a leader, commit a fresh entry and
    /// bring every member to the same applied state, which must contain
    /// every acknowledged proposal; every read must have been answered.
    pub fn heal_and_check(&mut self) {
        self.net.faults = NetFaults::reliable();
        self.heal();
        self.opts.crash_in_ready = 0.0;
        for id in self.ids() {
            if !self.is_live(id) {
                self.restart(id);
            }
        }
        let give_up = self.now + 60_000;
        let barrier = format!("barrier-{}", self.opts.seed).into_bytes();
        let mut barrier_acked = false;
        loop {
            self.run_for(100);
            if !barrier_acked {
                let _ = self.propose_at_leader(barrier.clone());
                barrier_acked = self.proposals.iter().any(|p| p.acked && p.data == barrier);
            }
            if barrier_acked {
                if let Some(leader) = self.converged() {
                    self.check_acked_everywhere(leader);
                    break;
                }
            }
            if self.now > give_up {
                let states: Vec<String> = self
                    .ids()
                    .into_iter()
                    .filter_map(|id| self.raft(id).map(|r| format!("{:?}", r.status())))
                    .collect();
                self.fail(&format!(
                    "no convergence 60s after healing:\n{}",
                    states.join("\n")
                ));
            }
        }
        // Reads still pending time out within one election timeout.
        self.run_for(self.opts.raft.election_timeout_max_ms * 2);
        let unanswered = self.pending_reads();
        if !unanswered.is_empty() {
            self.fail(&format!(
                "reads never answered (node, request): {unanswered:?}"
            ));
        }
    }

    /// A leader whose whole log is committed and applied by every member.
    fn converged(&self) -> Option<NodeId> {
        let leader = self.newest_leader()?;
        let raft = self.raft(leader)?;
        let last = raft.last_index();
        if raft.commit_index() != last {
            return None;
        }
        let all = raft
            .membership()
            .members()
            .all(|id| self.raft(id).is_some() && self.app(id).applied == last);
        all.then_some(leader)
    }

    fn check_acked_everywhere(&self, leader: NodeId) {
        let members: Vec<NodeId> = self
            .raft(leader)
            .map_or(Vec::new(), |r| r.membership().members().collect());
        let reference = &self.app(leader).normal;
        for id in &members {
            if &self.app(*id).normal != reference {
                self.fail(&format!(
                    "node {id} and leader {leader} applied different states"
                ));
            }
        }
        for p in self.proposals.iter().filter(|p| p.acked) {
            for id in &members {
                match self.app(*id).normal.get(&p.index) {
                    Some((term, data)) if *term == p.term && *data == p.data => {}
                    other => self.fail(&format!(
                        "acknowledged proposal {:?} at index {} (term {}, proposed at node {}) \
                         is missing at node {id}: found {other:?}",
                        String::from_utf8_lossy(&p.data),
                        p.index,
                        p.term,
                        p.node
                    )),
                }
            }
        }
    }
}
