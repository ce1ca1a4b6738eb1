//! Log replication: AppendEntries and heartbeats on both sides, commit.

use super::message::*;
use super::node::{Phase, RaftNode};
use super::types::{NodeId, ReplicationState};

/// What `send_append` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Nothing,
    Empty,
    Entries,
}

impl RaftNode {
    /// Leader, at `ready`: push new entries and commit news to followers,
    /// and run a heartbeat round if a read asked for one.
    pub(super) fn flush_replication(&mut self) {
        let now = self.now_ms.unwrap_or(0);
        if self.pending_replication || self.commit_changed {
            let force_empty = self.commit_changed;
            let peers: Vec<NodeId> = self.progress.keys().copied().collect();
            for peer in peers {
                self.replicate_to(now, peer, force_empty);
            }
            self.pending_replication = false;
            self.commit_changed = false;
        }
        if self.pending_heartbeat {
            self.broadcast_heartbeat();
        }
    }

    /// Sends a follower what it lacks, as far as its flow control allows.
    /// `force_empty`: send an (empty) append even with nothing new, to
    /// carry the commit index or to probe.
    pub(super) fn replicate_to(&mut self, now: u64, peer: NodeId, force_empty: bool) {
        let mut force = force_empty;
        loop {
            let Some(pr) = self.progress.get(&peer) else {
                return;
            };
            if let ReplicationState::Snapshot { .. } = pr.state {
                self.send_snapshot_chunk(now, peer);
                return;
            }
            let sent = self.send_append(peer, force);
            force = false;
            let replicating = self
                .progress
                .get(&peer)
                .is_some_and(|p| p.state == ReplicationState::Replicate);
            if sent != Sent::Entries || !replicating {
                return;
            }
        }
    }

    fn send_append(&mut self, peer: NodeId, force_empty: bool) -> Sent {
        let max_inflight = self.cfg.max_inflight_appends;
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&peer) else {
            return Sent::Nothing;
        };
        if !pr.can_send(max_inflight) {
            return Sent::Nothing;
        }
        if pr.next_index > last + 1 {
            pr.next_index = last + 1;
        }
        let prev_index = pr.next_index - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            // The entries it needs are compacted away.
            let snapshot_index = self.log.snapshot_meta().index;
            pr.become_snapshot(snapshot_index);
            let now = self.now_ms.unwrap_or(0);
            self.send_snapshot_chunk(now, peer);
            return Sent::Nothing;
        };
        let entries = self.log.entries_from(
            pr.next_index,
            self.cfg.max_entries_per_append,
            self.cfg.max_append_bytes,
        );
        if entries.is_empty() && !force_empty {
            return Sent::Nothing;
        }
        let last_sent = entries.last().map(|e| e.index);
        pr.on_append_sent(last_sent);
        let commit = self.log.committed();
        self.send(
            peer,
            MessageBody::Append(AppendRequest {
                prev_index,
                prev_term,
                commit,
                entries,
            }),
        );
        if last_sent.is_some() {
            Sent::Entries
        } else {
            Sent::Empty
        }
    }

    /// Leader: a heartbeat to every member, carrying the latest read context.
    pub(super) fn broadcast_heartbeat(&mut self) {
        self.pending_heartbeat = false;
        let read_ctx = self.reads.latest_ctx();
        let commit = self.log.committed();
        let targets: Vec<(NodeId, u64)> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, p.match_index.min(commit)))
            .collect();
        for (peer, commit) in targets {
            self.send(peer, MessageBody::Heartbeat(Heartbeat { commit, read_ctx }));
        }
    }

    /// Follower side of AppendEntries (term already equal to ours).
    pub(super) fn handle_append(
        &mut self,
        now: u64,
        from: NodeId,
        term: u64,
        mut req: AppendRequest,
    ) {
        if self.phase == Phase::Leader || !req.is_well_formed(term) {
            return;
        }
        self.accept_leader(now, from);
        let commit = self.log.committed();
        if req.prev_index < commit {
            // The committed prefix is ours already: skip it.
            let skip = usize::try_from(commit - req.prev_index).unwrap_or(usize::MAX);
            if skip >= req.entries.len() {
                self.respond_append(
                    from,
                    AppendResponse::Accepted {
                        match_index: commit,
                    },
                );
                return;
            }
            req.prev_term = req.entries[skip - 1].term;
            req.prev_index = commit;
            req.entries.drain(..skip);
        }
        if !self.log.matches(req.prev_index, req.prev_term) {
            let hint = self.log.reject_hint(req.prev_index);
            let prev_index = req.prev_index;
            self.respond_append(from, AppendResponse::Rejected { prev_index, hint });
            return;
        }
        let last_new = req.prev_index + req.entries.len() as u64;
        let membership_before = self.log.membership_index();
        if self.log.append_from_leader(req.entries).is_err() {
            return;
        }
        if self.log.membership_index() != membership_before {
            self.on_membership_changed(now);
        }
        self.log.commit_to(req.commit.min(last_new));
        self.respond_append(
            from,
            AppendResponse::Accepted {
                match_index: last_new,
            },
        );
    }

    fn respond_append(&mut self, to: NodeId, resp: AppendResponse) {
        self.send(to, MessageBody::AppendResponse(resp));
    }

    /// Leader side of an AppendEntries answer.
    pub(super) fn handle_append_response(&mut self, now: u64, from: NodeId, resp: AppendResponse) {
        if self.phase != Phase::Leader {
            return;
        }
        let last = self.log.last_index();
        match resp {
            AppendResponse::Accepted { match_index } => {
                let Some(pr) = self.progress.get_mut(&from) else {
                    return;
                };
                pr.last_heard_ms = Some(now);
                if match_index > last {
                    return;
                }
                let grew = pr.on_accepted(match_index);
                if grew {
                    self.maybe_commit(now);
                }
                self.maybe_send_timeout_now(from);
                self.replicate_to(now, from, false);
            }
            AppendResponse::Rejected { prev_index, hint } => {
                let next = self.log.next_after_reject(prev_index, hint);
                let Some(pr) = self.progress.get_mut(&from) else {
                    return;
                };
                pr.last_heard_ms = Some(now);
                if pr.on_rejected(prev_index, next) {
                    self.replicate_to(now, from, true);
                }
            }
        }
    }

    /// Follower: the leader is alive; learn its commit (bounded by what
    /// we are known to share) and echo the read context.
    pub(super) fn handle_heartbeat(&mut self, now: u64, from: NodeId, hb: Heartbeat) {
        if self.phase == Phase::Leader {
            return;
        }
        self.accept_leader(now, from);
        self.log.commit_to(hb.commit);
        self.send(
            from,
            MessageBody::HeartbeatResponse(HeartbeatResponse {
                read_ctx: hb.read_ctx,
            }),
        );
    }

    pub(super) fn handle_heartbeat_response(
        &mut self,
        now: u64,
        from: NodeId,
        hb: HeartbeatResponse,
    ) {
        if self.phase != Phase::Leader {
            return;
        }
        let last = self.log.last_index();
        let max_inflight = self.cfg.max_inflight_appends;
        let resend_snapshot_after = self.cfg.election_timeout_min_ms;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.last_heard_ms = Some(now);
        pr.read_ctx_acked = pr.read_ctx_acked.max(hb.read_ctx);
        match pr.state {
            ReplicationState::Snapshot { .. } => {
                // Resend the outstanding chunk only if it looks lost.
                if pr
                    .snapshot_sent_ms
                    .is_none_or(|t| now >= t + resend_snapshot_after)
                {
                    pr.paused = false;
                }
                self.send_snapshot_chunk(now, from);
            }
            _ => {
                pr.on_heartbeat_response(max_inflight);
                if pr.match_index < last {
                    self.replicate_to(now, from, true);
                }
            }
        }
        self.confirm_reads();
    }

    /// Leader: commits the highest index of the current term that a quorum
    /// of voters has durably (never an older-term entry by counting).
    pub(super) fn maybe_commit(&mut self, now: u64) -> bool {
        if self.phase != Phase::Leader {
            return false;
        }
        let membership = self.log.membership();
        let mut matches: Vec<u64> = membership
            .voters
            .iter()
            .map(|v| {
                if *v == self.cfg.id {
                    self.log.persisted()
                } else {
                    self.progress.get(v).map_or(0, |p| p.match_index)
                }
            })
            .collect();
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&candidate) = matches.get(membership.quorum() - 1) else {
            return false;
        };
        if candidate <= self.log.committed() || self.log.term(candidate) != Some(self.term) {
            return false;
        }
        self.log.commit_to(candidate);
        self.commit_changed = true;
        self.release_reads_waiting_for_commit(now);
        self.step_down_if_removed(now);
        true
    }
}
