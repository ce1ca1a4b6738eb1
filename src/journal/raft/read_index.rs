//! ReadIndex: linearizable reads without writing to the log (thesis 6.4).
//!
//! The leader, once it has committed an entry of its own term, records its
//! commit index for the read and tags it with a fresh context number. Every
//! heartbeat carries the latest context; a follower's echo proves it still
//! followed us in this term after the read arrived. When a quorum (us
//! included) has echoed a context, every read up to it is confirmed:
//! nobody else could have committed anything newer. The caller serves the
//! read once it has applied the returned index.
//!
//! On a follower the request goes to the leader by message and the answer
//! comes back as a `ReadState` here. Anything that cannot be confirmed
//! (no leader, leadership lost, timeout) ends as a `FailedRead`, never
//! silence and never a stale index.

use std::collections::{BTreeMap, VecDeque};

use super::message::{MessageBody, ReadIndexResponse};
use super::node::{Phase, RaftNode};
use super::types::{FailedRead, NodeId, ReadFailure, ReadState};

/// Who asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadOrigin {
    Local,
    Remote(NodeId),
}

#[derive(Debug, Clone, Copy)]
pub(super) struct ReadRequest {
    pub request_id: u64,
    pub origin: ReadOrigin,
    pub deadline_ms: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct PendingRead {
    pub ctx: u64,
    pub index: u64,
    pub request: ReadRequest,
}

#[derive(Debug, Default)]
pub(crate) struct ReadQueue {
    last_ctx: u64,
    /// Leader: waiting for the first commit of our term.
    waiting_commit: Vec<ReadRequest>,
    /// Leader: index recorded, waiting for a quorum of echoes (ctx ascending).
    pending: VecDeque<PendingRead>,
    /// Follower: forwarded to the leader; request id -> deadline.
    forwarded: BTreeMap<u64, u64>,
}

impl ReadQueue {
    pub fn latest_ctx(&self) -> u64 {
        self.last_ctx
    }

    pub fn next_deadline_ms(&self) -> Option<u64> {
        let leader = self.waiting_commit.iter().map(|r| r.deadline_ms);
        let pending = self.pending.iter().map(|p| p.request.deadline_ms);
        let forwarded = self.forwarded.values().copied();
        leader.chain(pending).chain(forwarded).min()
    }
}

impl RaftNode {
    /// Asks for a linearizable read. The answer arrives in a later `Ready`
    /// as a `ReadState` (serve once applied >= its index) or a `FailedRead`
    /// (answer "retry"). `request_id` is the caller's and is echoed back.
    pub fn read_index(&mut self, now_ms: u64, request_id: u64) {
        let now = self.observe_clock(now_ms);
        let deadline_ms = now.saturating_add(self.read_timeout_ms());
        if self.phase == Phase::Leader {
            let request = ReadRequest {
                request_id,
                origin: ReadOrigin::Local,
                deadline_ms,
            };
            self.leader_read(request);
            return;
        }
        match self.leader {
            Some(leader) => {
                self.reads.forwarded.insert(request_id, deadline_ms);
                self.send(
                    leader,
                    MessageBody::ReadIndex(super::message::ReadIndexRequest { request_id }),
                );
            }
            None => self.failed_reads.push(FailedRead {
                request_id,
                reason: ReadFailure::NoLeader,
            }),
        }
    }

    fn read_timeout_ms(&self) -> u64 {
        self.cfg.election_timeout_max_ms
    }

    /// Leader: a read from us or forwarded by a follower.
    fn leader_read(&mut self, request: ReadRequest) {
        let commit = self.log.committed();
        if self.log.term(commit) != Some(self.term) {
            // Our commit index may lag the previous leader's until our
            // first entry commits.
            self.reads.waiting_commit.push(request);
            return;
        }
        let membership = self.log.membership();
        if membership.voters.len() == 1 && membership.is_voter(self.cfg.id) {
            self.answer_read(request, Some(commit));
            return;
        }
        self.reads.last_ctx += 1;
        let ctx = self.reads.last_ctx;
        self.reads.pending.push_back(PendingRead {
            ctx,
            index: commit,
            request,
        });
        self.pending_heartbeat = true;
    }

    fn answer_read(&mut self, request: ReadRequest, index: Option<u64>) {
        match (request.origin, index) {
            (ReadOrigin::Local, Some(index)) => self.read_states.push(ReadState {
                request_id: request.request_id,
                index,
            }),
            (ReadOrigin::Local, None) => self.failed_reads.push(FailedRead {
                request_id: request.request_id,
                reason: ReadFailure::LeadershipLost,
            }),
            (ReadOrigin::Remote(to), index) => {
                let resp = ReadIndexResponse {
                    request_id: request.request_id,
                    index,
                };
                self.send(to, MessageBody::ReadIndexResponse(resp));
            }
        }
    }

    fn fail_read(&mut self, request: ReadRequest, reason: ReadFailure) {
        match request.origin {
            ReadOrigin::Local => self.failed_reads.push(FailedRead {
                request_id: request.request_id,
                reason,
            }),
            ReadOrigin::Remote(_) => self.answer_read(request, None),
        }
    }

    /// Leader: confirms every pending read whose context a quorum echoed.
    pub(super) fn confirm_reads(&mut self) {
        let membership = self.log.membership();
        let quorum = membership.quorum();
        let mut confirmed = Vec::new();
        while let Some(front) = self.reads.pending.front() {
            let acks = membership
                .voters
                .iter()
                .filter(|&&v| {
                    v == self.cfg.id
                        || self
                            .progress
                            .get(&v)
                            .is_some_and(|p| p.read_ctx_acked >= front.ctx)
                })
                .count();
            if acks < quorum {
                break;
            }
            if let Some(read) = self.reads.pending.pop_front() {
                confirmed.push(read);
            }
        }
        for read in confirmed {
            self.answer_read(read.request, Some(read.index));
        }
    }

    /// Leader: our first entry committed; queued reads may proceed.
    pub(super) fn release_reads_waiting_for_commit(&mut self, _now: u64) {
        if self.reads.waiting_commit.is_empty()
            || self.log.term(self.log.committed()) != Some(self.term)
        {
            return;
        }
        for request in std::mem::take(&mut self.reads.waiting_commit) {
            self.leader_read(request);
        }
    }

    /// A follower forwarded a read to us.
    pub(super) fn handle_read_request(&mut self, now: u64, from: NodeId, request_id: u64) {
        let request = ReadRequest {
            request_id,
            origin: ReadOrigin::Remote(from),
            deadline_ms: now.saturating_add(self.read_timeout_ms()),
        };
        if self.phase == Phase::Leader {
            self.leader_read(request);
        } else {
            self.answer_read(request, None);
        }
    }

    /// The leader answered a read we forwarded.
    pub(super) fn handle_read_response(&mut self, resp: ReadIndexResponse) {
        if self.reads.forwarded.remove(&resp.request_id).is_none() {
            return;
        }
        match resp.index {
            Some(index) => self.read_states.push(ReadState {
                request_id: resp.request_id,
                index,
            }),
            None => self.failed_reads.push(FailedRead {
                request_id: resp.request_id,
                reason: ReadFailure::LeadershipLost,
            }),
        }
    }

    /// Fails reads whose deadline passed.
    pub(super) fn expire_reads(&mut self, now: u64) {
        let expired_forwarded: Vec<u64> = self
            .reads
            .forwarded
            .iter()
            .filter(|(_, &d)| d <= now)
            .map(|(&id, _)| id)
            .collect();
        for request_id in expired_forwarded {
            self.reads.forwarded.remove(&request_id);
            self.failed_reads.push(FailedRead {
                request_id,
                reason: ReadFailure::Timeout,
            });
        }
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads.waiting_commit)
            .into_iter()
            .partition(|r| r.deadline_ms <= now);
        self.reads.waiting_commit = kept;
        let (expired_pending, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads.pending)
            .into_iter()
            .partition(|p| p.request.deadline_ms <= now);
        self.reads.pending = kept.into();
        for request in expired
            .into_iter()
            .chain(expired_pending.into_iter().map(|p| p.request))
        {
            self.fail_read(request, ReadFailure::Timeout);
        }
    }

    /// Leader stepping down: nothing pending can be confirmed any more.
    pub(super) fn fail_leader_reads(&mut self, reason: ReadFailure) {
        let waiting = std::mem::take(&mut self.reads.waiting_commit);
        let pending = std::mem::take(&mut self.reads.pending);
        for request in waiting
            .into_iter()
            .chain(pending.into_iter().map(|p| p.request))
        {
            self.fail_read(request, reason);
        }
    }

    /// Follower losing its leader: forwarded reads may never be answered.
    pub(super) fn fail_forwarded_reads(&mut self, reason: ReadFailure) {
        for (request_id, _) in std::mem::take(&mut self.reads.forwarded) {
            self.failed_reads.push(FailedRead { request_id, reason });
        }
    }
}
