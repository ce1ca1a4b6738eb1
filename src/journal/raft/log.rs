//! The in-memory Raft log since the last snapshot, with the bookkeeping the
//! Ready/advance protocol needs: what storage has been handed and has made
//! durable, what the application has been handed and has applied.
//!
//! Index arithmetic invariants (checked by tests, relied on everywhere):
//! `snapshot.index <= applied <= apply_handed <= committed <= last_index()`,
//! `persisted <= handed <= last_index()` and `entries[k].index ==
//! snapshot.index + 1 + k`.

use super::message::RejectHint;
use super::types::{CompactError, Entry, EntryKind, Membership, SnapshotMeta};

#[derive(Debug)]
pub(crate) struct RaftLog {
    snapshot: SnapshotMeta,
    snapshot_data: Vec<u8>,
    entries: Vec<Entry>,
    /// Membership entries in `entries`, ascending by index.
    configs: Vec<(u64, Membership)>,
    committed: u64,
    /// Applied by the application (confirmed by `advance`).
    applied: u64,
    /// Handed to the application in a Ready.
    apply_handed: u64,
    /// Durable in storage (confirmed by `advance`) and still our log.
    persisted: u64,
    /// Handed to storage in a Ready and still our log.
    handed: u64,
    /// Storage holds entries from here on that are no longer ours.
    pending_truncate: Option<u64>,
    /// A received snapshot not yet handed to storage.
    snapshot_unhanded: bool,
}

/// What storage must do for one Ready.
pub(crate) struct Unstable {
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    pub truncate_from: Option<u64>,
    pub entries: Vec<Entry>,
}

impl RaftLog {
    /// A log rebuilt from storage. Errors describe the inconsistency.
    pub fn restore(
        snapshot: Option<(SnapshotMeta, Vec<u8>)>,
        entries: Vec<Entry>,
        commit: u64,
        applied: u64,
    ) -> Result<RaftLog, String> {
        let (snapshot, snapshot_data) = snapshot.unwrap_or_default();
        if snapshot.index > 0 {
            snapshot
                .membership
                .validate()
                .map_err(|e| format!("snapshot membership: {e}"))?;
            if snapshot.term == 0 {
                return Err("snapshot with index > 0 has term 0".into());
            }
        }
        // Entries the snapshot covers may linger in storage: skip them.
        let mut entries = entries;
        entries.retain(|e| e.index > snapshot.index);
        let mut configs = Vec::new();
        let mut expect = snapshot.index;
        let mut min_term = snapshot.term;
        for e in &entries {
            expect += 1;
            if e.index != expect {
                return Err(format!("entry {} where {} was expected", e.index, expect));
            }
            if e.term < min_term || e.term == 0 {
                return Err(format!(
                    "entry {} has term {} after term {}",
                    e.index, e.term, min_term
                ));
            }
            min_term = e.term;
            if e.kind == EntryKind::Membership {
                let m = Membership::decode(&e.data)
                    .map_err(|err| format!("membership entry {}: {err}", e.index))?;
                configs.push((e.index, m));
            }
        }
        let last = expect;
        let committed = commit.clamp(snapshot.index, last);
        let applied = applied.clamp(snapshot.index, committed);
        Ok(RaftLog {
            snapshot,
            snapshot_data,
            entries,
            configs,
            committed,
            applied,
            apply_handed: applied,
            persisted: last,
            handed: last,
            pending_truncate: None,
            snapshot_unhanded: false,
        })
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.index, |e| e.index)
    }

    pub fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.term, |e| e.term)
    }

    /// Term of the entry at `index`, if it is in the log or is the snapshot's last.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    pub fn matches(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn persisted(&self) -> u64 {
        self.persisted
    }

    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    pub fn snapshot_data(&self) -> &[u8] {
        &self.snapshot_data
    }

    /// The latest membership: of the last Membership entry, else the snapshot's.
    pub fn membership(&self) -> &Membership {
        self.configs
            .last()
            .map_or(&self.snapshot.membership, |(_, m)| m)
    }

    /// The membership before the latest one, if the latest is uncommitted.
    pub fn previous_membership(&self) -> Option<&Membership> {
        let (index, _) = self.configs.last()?;
        if *index <= self.committed {
            return None;
        }
        let n = self.configs.len();
        Some(if n >= 2 {
            &self.configs[n - 2].1
        } else {
            &self.snapshot.membership
        })
    }

    /// Index of the entry that set the latest membership (snapshot index if none).
    pub fn membership_index(&self) -> u64 {
        self.configs.last().map_or(self.snapshot.index, |(i, _)| *i)
    }

    /// The membership in effect at `index` (which must be >= the snapshot index).
    fn membership_at(&self, index: u64) -> &Membership {
        self.configs
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.snapshot.membership, |(_, m)| m)
    }

    /// Is a log ending at `(last_index, last_term)` at least as up to date as ours?
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Up to `max_count` entries from `from`, stopping once `max_bytes` of
    /// data is reached (always at least one entry if any exists).
    pub fn entries_from(&self, from: u64, max_count: usize, max_bytes: usize) -> Vec<Entry> {
        let Some(offset) = from.checked_sub(self.first_index()) else {
            return Vec::new();
        };
        let Ok(offset) = usize::try_from(offset) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in self.entries.iter().skip(offset).take(max_count) {
            if !out.is_empty() && bytes.saturating_add(e.data.len()) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(e.data.len());
            out.push(e.clone());
        }
        out
    }

    /// Appends one entry at `last_index() + 1` (leader or bootstrap).
    pub fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        if entry.kind == EntryKind::Membership {
            if let Ok(m) = Membership::decode(&entry.data) {
                self.configs.push((entry.index, m));
            }
        }
        self.entries.push(entry);
    }

    /// Merges entries from the leader (contiguous, starting within
    /// `first_index()..=last_index() + 1`, all above `committed`): keeps
    /// what matches, truncates at the first conflict, appends the rest.
    /// Refuses (changing nothing) input that would break the invariants.
    pub fn append_from_leader(&mut self, entries: Vec<Entry>) -> Result<(), &'static str> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.committed || first.index > self.last_index() + 1 {
            return Err("entries do not start inside the uncommitted log");
        }
        let mut parsed = Vec::new();
        for e in &entries {
            if e.kind == EntryKind::Membership {
                let m = Membership::decode(&e.data).map_err(|_| "bad membership entry")?;
                parsed.push((e.index, m));
            }
        }
        let mut parsed = parsed.into_iter().peekable();
        for e in entries {
            let config = parsed.next_if(|(i, _)| *i == e.index);
            if e.index <= self.last_index() {
                if self.term(e.index) == Some(e.term) {
                    continue;
                }
                self.truncate_from(e.index);
            }
            if let Some(c) = config {
                self.configs.push(c);
            }
            self.entries.push(e);
        }
        Ok(())
    }

    /// Drops entries from `index` on (`index > committed`).
    fn truncate_from(&mut self, index: u64) {
        debug_assert!(index > self.committed && index >= self.first_index());
        let keep = (index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.configs.retain(|(i, _)| *i < index);
        if index <= self.handed {
            self.pending_truncate = Some(self.pending_truncate.map_or(index, |t| t.min(index)));
            self.handed = index - 1;
        }
        self.persisted = self.persisted.min(index - 1);
    }

    /// Raises the commit index (never past the last entry, never down).
    pub fn commit_to(&mut self, index: u64) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// A follower's hint for a leader whose `prev_index` did not match.
    pub fn reject_hint(&self, prev_index: u64) -> RejectHint {
        match self.term(prev_index) {
            Some(term) if prev_index <= self.last_index() => {
                // Terms never decrease along the log: binary search.
                let pos = self.entries.partition_point(|e| e.term < term);
                let first_index = self.first_index() + pos as u64;
                RejectHint::Conflict {
                    term,
                    first_index: first_index.min(prev_index),
                }
            }
            _ => RejectHint::LogTooShort {
                last_index: self.last_index(),
            },
        }
    }

    /// A leader's next probe position after a rejection of `rejected_prev`.
    pub fn next_after_reject(&self, rejected_prev: u64, hint: RejectHint) -> u64 {
        match hint {
            RejectHint::LogTooShort { last_index } => last_index.saturating_add(1),
            RejectHint::Conflict { term, first_index } => {
                let pos = self.entries.partition_point(|e| e.term <= term);
                let last_of_term = if pos > 0 && self.entries[pos - 1].term == term {
                    Some(self.entries[pos - 1].index)
                } else if pos == 0 && self.snapshot.term == term && self.snapshot.index > 0 {
                    Some(self.snapshot.index)
                } else {
                    None
                };
                match last_of_term {
                    Some(i) if i < rejected_prev => i + 1,
                    _ => first_index,
                }
            }
        }
    }

    /// Replaces everything up to `index` (applied) by a snapshot with `data`.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<SnapshotMeta, CompactError> {
        if index <= self.snapshot.index {
            return Err(CompactError::AlreadyCompacted {
                index,
                snapshot_index: self.snapshot.index,
            });
        }
        if index > self.applied || index > self.persisted {
            return Err(CompactError::NotApplied {
                index,
                applied: self.applied.min(self.persisted),
            });
        }
        let term = self.term(index).unwrap_or(0);
        let membership = self.membership_at(index).clone();
        let drop = (index - self.snapshot.index) as usize;
        self.entries.drain(..drop);
        self.configs.retain(|(i, _)| *i > index);
        self.snapshot = SnapshotMeta {
            index,
            term,
            membership,
        };
        self.snapshot_data = data;
        Ok(self.snapshot.clone())
    }

    /// Replaces the whole log by a snapshot received from the leader.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta, data: Vec<u8>) {
        debug_assert!(meta.index > self.committed);
        self.entries.clear();
        self.configs.clear();
        self.committed = meta.index;
        self.apply_handed = meta.index;
        self.handed = meta.index;
        self.persisted = self.persisted.min(meta.index);
        self.pending_truncate = None;
        self.snapshot_unhanded = true;
        self.snapshot = meta;
        self.snapshot_data = data;
    }

    pub fn has_unstable(&self) -> bool {
        self.snapshot_unhanded || self.pending_truncate.is_some() || self.handed < self.last_index()
    }

    /// What storage must do next; marks it handed.
    pub fn take_unstable(&mut self) -> Unstable {
        let snapshot = if self.snapshot_unhanded {
            self.snapshot_unhanded = false;
            Some((self.snapshot.clone(), self.snapshot_data.clone()))
        } else {
            None
        };
        let truncate_from = self.pending_truncate.take();
        let start = self.handed.saturating_sub(self.snapshot.index) as usize;
        let entries = self.entries.get(start..).unwrap_or_default().to_vec();
        self.handed = self.last_index();
        Unstable {
            snapshot,
            truncate_from,
            entries,
        }
    }

    pub fn has_committed_to_apply(&self) -> bool {
        self.apply_handed < self.committed
    }

    /// Committed entries the application has not been handed; marks them handed.
    pub fn take_committed(&mut self) -> Vec<Entry> {
        let from = self.apply_handed + 1;
        let to = self.committed;
        if from > to {
            return Vec::new();
        }
        let lo = from.saturating_sub(self.first_index()) as usize;
        let hi = to.saturating_sub(self.snapshot.index) as usize;
        let out = self.entries.get(lo..hi).unwrap_or_default().to_vec();
        self.apply_handed = to;
        out
    }

    /// Everything handed out so far is durable and applied.
    pub fn advance(&mut self) {
        if self.snapshot_unhanded {
            // Received after the last Ready: nothing of it is durable yet.
            return;
        }
        self.persisted = self.handed;
        self.applied = self.apply_handed;
    }
}
