//! InstallSnapshot: the leader streams its snapshot in chunks to a
//! follower that needs compacted entries; the follower assembles it and
//! hands it to the application through `Ready::snapshot`.
//!
//! Chunks go one at a time (stop and wait). The follower accepts a chunk
//! only at the offset it expects and otherwise answers with that offset,
//! so lost, duplicated or reordered chunks cost a resend, never
//! corruption. Memory on the follower grows only with bytes received.

use super::message::*;
use super::node::{IncomingSnapshot, Phase, RaftNode};
use super::types::{NodeId, ReplicationState, SnapshotMeta};

impl RaftNode {
    /// Leader: sends the next chunk to a follower in Snapshot state (unless
    /// one is outstanding). Restarts if our snapshot changed meanwhile.
    pub(super) fn send_snapshot_chunk(&mut self, now: u64, peer: NodeId) {
        let meta = self.log.snapshot_meta();
        let data = self.log.snapshot_data();
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        let ReplicationState::Snapshot { index } = pr.state else {
            return;
        };
        if index != meta.index {
            pr.become_snapshot(meta.index);
        }
        if pr.paused {
            return;
        }
        let total = data.len();
        let offset = usize::try_from(pr.snapshot_offset)
            .unwrap_or(usize::MAX)
            .min(total);
        let end = offset
            .saturating_add(self.cfg.snapshot_chunk_bytes)
            .min(total);
        pr.paused = true;
        pr.snapshot_sent_ms = Some(now);
        let chunk = SnapshotChunk {
            meta: meta.clone(),
            total_len: total as u64,
            offset: offset as u64,
            data: data[offset..end].to_vec(),
            done: end == total,
        };
        self.send(peer, MessageBody::InstallSnapshot(chunk));
    }

    pub(super) fn handle_snapshot_response(
        &mut self,
        now: u64,
        from: NodeId,
        resp: SnapshotResponse,
    ) {
        if self.phase != Phase::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.last_heard_ms = Some(now);
        let ReplicationState::Snapshot { index } = pr.state else {
            return;
        };
        if resp.snapshot_index != index {
            return;
        }
        if resp.installed {
            if pr.on_accepted(index) {
                self.maybe_commit(now);
            }
            self.maybe_send_timeout_now(from);
            self.replicate_to(now, from, true);
        } else {
            pr.snapshot_offset = resp.next_offset;
            pr.paused = false;
            self.send_snapshot_chunk(now, from);
        }
    }

    /// Follower: one chunk from the leader of our term.
    pub(super) fn handle_snapshot_chunk(
        &mut self,
        now: u64,
        from: NodeId,
        term: u64,
        chunk: SnapshotChunk,
    ) {
        if self.phase == Phase::Leader || !chunk.is_well_formed(term) {
            return;
        }
        self.accept_leader(now, from);
        let index = chunk.meta.index;
        if index <= self.log.committed() {
            self.incoming_snapshot = None;
            self.respond_snapshot(from, index, true, 0);
            return;
        }
        if chunk.offset == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: chunk.meta.clone(),
                total_len: chunk.total_len,
                data: Vec::new(),
            });
        }
        let same = |s: &IncomingSnapshot| s.meta == chunk.meta && s.total_len == chunk.total_len;
        let received = match self.incoming_snapshot.as_mut() {
            Some(s) if same(s) && s.data.len() as u64 == chunk.offset => {
                s.data.extend_from_slice(&chunk.data);
                s.data.len() as u64
            }
            other => {
                let expected = other.filter(|s| same(s)).map_or(0, |s| s.data.len() as u64);
                self.respond_snapshot(from, index, false, expected);
                return;
            }
        };
        if !chunk.done {
            self.respond_snapshot(from, index, false, received);
            return;
        }
        if let Some(s) = self.incoming_snapshot.take() {
            self.install_snapshot(now, s.meta, s.data);
        }
        self.respond_snapshot(from, index, true, 0);
    }

    fn respond_snapshot(
        &mut self,
        to: NodeId,
        snapshot_index: u64,
        installed: bool,
        next_offset: u64,
    ) {
        let resp = SnapshotResponse {
            snapshot_index,
            installed,
            next_offset,
        };
        self.send(to, MessageBody::InstallSnapshotResponse(resp));
    }

    /// Follower: adopts a complete snapshot (newer than our commit).
    fn install_snapshot(&mut self, now: u64, meta: SnapshotMeta, data: Vec<u8>) {
        if self.log.matches(meta.index, meta.term) {
            // We hold that very entry, so everything up to it: just commit.
            self.log.commit_to(meta.index);
            return;
        }
        self.log.install_snapshot(meta, data);
        self.on_membership_changed(now);
    }
}
