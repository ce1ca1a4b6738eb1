//! Raft's safety properties (Figure 3 of the paper), checked incrementally
//! as the simulation runs so each step costs little.
//!
//! - Election safety: at most one leader per term.
//! - Log matching: every persisted entry `(index, term)` has one content
//!   and one predecessor term, across all nodes and all time; by induction
//!   two logs sharing an `(index, term)` share the whole prefix.
//! - Leader completeness: a new leader holds every entry committed in an
//!   earlier term.
//! - State machine safety: no two nodes apply different entries at one
//!   index; a snapshot holds exactly the applied entries up to its index.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use crate::journal::raft::{Entry, EntryKind, NodeId, RaftNode, SnapshotMeta};

pub(crate) fn content_hash(kind: EntryKind, data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    kind.hash(&mut h);
    data.hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone, Copy)]
struct AppliedEntry {
    term: u64,
    kind: EntryKind,
    hash: u64,
    /// Upper bound of the term in which the entry was committed.
    committed_by_term: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Checker {
    leaders: HashMap<u64, NodeId>,
    leaders_checked: HashSet<(NodeId, u64)>,
    entries: HashMap<(u64, u64), (u64, u64)>,
    applied: BTreeMap<u64, AppliedEntry>,
}

impl Checker {
    /// Election safety and (on a first sighting) leader completeness.
    pub fn on_leader(&mut self, raft: &RaftNode) -> Result<(), String> {
        let (id, term) = (raft.id(), raft.term());
        let leader = *self.leaders.entry(term).or_insert(id);
        if leader != id {
            return Err(format!(
                "election safety: nodes {leader} and {id} both lead term {term}"
            ));
        }
        if !self.leaders_checked.insert((id, term)) {
            return Ok(());
        }
        let snapshot_index = raft.snapshot_meta().index;
        for (&index, e) in self.applied.range(snapshot_index + 1..) {
            if e.committed_by_term < term && raft.term_at(index) != Some(e.term) {
                return Err(format!(
                    "leader completeness: node {id} leads term {term} without committed entry \
                     {index} (term {}), has term {:?}",
                    e.term,
                    raft.term_at(index)
                ));
            }
        }
        Ok(())
    }

    /// Log matching, for an entry just written to a node's storage right
    /// after an entry of `prev_term`.
    pub fn on_persisted(&mut self, node: NodeId, e: &Entry, prev_term: u64) -> Result<(), String> {
        let hash = content_hash(e.kind, &e.data);
        let seen = *self
            .entries
            .entry((e.index, e.term))
            .or_insert((prev_term, hash));
        if seen != (prev_term, hash) {
            return Err(format!(
                "log matching: node {node} persisted entry {} term {} after term {prev_term} \
                 (hash {hash:x}), elsewhere it follows term {} (hash {:x})",
                e.index, e.term, seen.0, seen.1
            ));
        }
        Ok(())
    }

    /// State machine safety for one applied entry. `node_term` is the
    /// applying node's current term, a bound on the committing term.
    pub fn on_applied(&mut self, node: NodeId, node_term: u64, e: &Entry) -> Result<(), String> {
        let hash = content_hash(e.kind, &e.data);
        let seen = *self.applied.entry(e.index).or_insert(AppliedEntry {
            term: e.term,
            kind: e.kind,
            hash,
            committed_by_term: node_term,
        });
        if (seen.term, seen.hash) != (e.term, hash) {
            return Err(format!(
                "state machine safety: node {node} applied entry {} term {} ({:?}), another \
                 node applied term {} there",
                e.index, e.term, e.kind, seen.term
            ));
        }
        Ok(())
    }

    /// A snapshot installed by a node must hold exactly the Normal entries
    /// applied anywhere up to its index. `normal` maps index -> (term, data).
    pub fn on_snapshot(
        &mut self,
        node: NodeId,
        meta: &SnapshotMeta,
        normal: &BTreeMap<u64, (u64, Vec<u8>)>,
    ) -> Result<(), String> {
        for (&index, (term, data)) in normal.range(..=meta.index) {
            let hash = content_hash(EntryKind::Normal, data);
            match self.applied.get(&index) {
                Some(e) if (e.term, e.hash) == (*term, hash) => {}
                other => {
                    return Err(format!(
                        "snapshot at node {node} (index {}) holds entry {index} term {term} that \
                         was applied as {other:?}",
                        meta.index
                    ))
                }
            }
        }
        for (&index, e) in self.applied.range(..=meta.index) {
            if e.kind == EntryKind::Normal && !normal.contains_key(&index) {
                return Err(format!(
                    "snapshot at node {node} (index {}) lacks applied entry {index}",
                    meta.index
                ));
            }
        }
        Ok(())
    }
}
