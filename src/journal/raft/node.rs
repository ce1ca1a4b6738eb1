//! [`RaftNode`]: the sans-IO Raft state machine. This file holds the state,
//! the entry points (`step`, `tick`, `propose`, `ready`/`advance`, ...),
//! term handling and role transitions; elections, replication, reads and
//! membership live in sibling files as further `impl RaftNode` blocks.

use std::collections::BTreeMap;

use super::log::RaftLog;
use super::message::{HeartbeatResponse, Message, MessageBody, VoteResponse};
use super::progress::Progress;
use super::read_index::ReadQueue;
use super::types::*;
use crate::util::rng::Rng;

/// Terms and indices above this come only from corrupt or hostile peers
/// (a real cluster never gets near): such messages are dropped, so that
/// `term + 1` and `index + 1` can never overflow.
pub(super) const MAX_TERM: u64 = u64::MAX >> 1;

/// Internal role; [`Role::Learner`] is derived from the membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// A snapshot being received chunk by chunk.
#[derive(Debug)]
pub(super) struct IncomingSnapshot {
    pub meta: SnapshotMeta,
    pub total_len: u64,
    pub data: Vec<u8>,
}

/// A leadership transfer under way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Transfer {
    pub target: NodeId,
    pub deadline_ms: u64,
}

/// One Raft server, without any I/O. See the module documentation for the
/// calling protocol.
#[derive(Debug)]
pub struct RaftNode {
    pub(super) cfg: RaftConfig,
    pub(super) rng: Rng,
    pub(super) log: RaftLog,
    pub(super) term: u64,
    pub(super) vote: Option<NodeId>,
    pub(super) phase: Phase,
    pub(super) leader: Option<NodeId>,

    /// Latest time seen from the caller (`None` before the first call).
    pub(super) now_ms: Option<u64>,
    pub(super) election_deadline_ms: u64,
    pub(super) last_leader_contact_ms: Option<u64>,
    pub(super) heartbeat_deadline_ms: u64,
    pub(super) check_quorum_deadline_ms: u64,

    /// Candidates: answers received (`true` = granted).
    pub(super) votes: BTreeMap<NodeId, bool>,
    /// Leader: one entry per other member.
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// Leader: new entries or a new commit index to push at the next `ready`.
    pub(super) pending_replication: bool,
    pub(super) commit_changed: bool,
    /// Leader: a heartbeat round is wanted at the next `ready` (read index).
    pub(super) pending_heartbeat: bool,
    pub(super) transfer: Option<Transfer>,
    pub(super) reads: ReadQueue,
    pub(super) incoming_snapshot: Option<IncomingSnapshot>,

    pub(super) msgs: Vec<(NodeId, Message)>,
    pub(super) read_states: Vec<ReadState>,
    pub(super) failed_reads: Vec<FailedRead>,
    handed_hard_state: HardState,
    handed_soft_state: SoftState,
}

impl RaftNode {
    /// A node restored from storage (use `Restored::default()` for a blank
    /// node). It starts as a follower without a leader.
    pub fn new(config: RaftConfig, restored: Restored) -> Result<RaftNode, InitError> {
        config.validate()?;
        let hs = restored.hard_state;
        let log = RaftLog::restore(
            restored.snapshot,
            restored.entries,
            hs.commit,
            restored.applied,
        )
        .map_err(InitError::Restored)?;
        if hs.term < log.last_term() {
            return Err(InitError::Restored(format!(
                "term {} is below the last log term {}",
                hs.term,
                log.last_term()
            )));
        }
        if hs.term > MAX_TERM || log.last_index() > MAX_TERM {
            return Err(InitError::Restored("term or index out of range".into()));
        }
        if hs.vote == Some(0) {
            return Err(InitError::Restored("vote for node 0".into()));
        }
        let rng = Rng::new(config.rng_seed ^ config.id.rotate_left(32));
        let soft = SoftState {
            role: Role::Follower,
            leader: None,
        };
        let mut node = RaftNode {
            cfg: config,
            rng,
            log,
            term: hs.term,
            vote: hs.vote,
            phase: Phase::Follower,
            leader: None,
            now_ms: None,
            election_deadline_ms: 0,
            last_leader_contact_ms: None,
            heartbeat_deadline_ms: 0,
            check_quorum_deadline_ms: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            pending_replication: false,
            commit_changed: false,
            pending_heartbeat: false,
            transfer: None,
            reads: ReadQueue::default(),
            incoming_snapshot: None,
            msgs: Vec::new(),
            read_states: Vec::new(),
            failed_reads: Vec::new(),
            handed_hard_state: hs,
            handed_soft_state: soft,
        };
        node.handed_soft_state = node.soft_state();
        Ok(node)
    }

    // ------------------------------------------------------------ accessors

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    pub fn config(&self) -> &RaftConfig {
        &self.cfg
    }

    pub fn role(&self) -> Role {
        match self.phase {
            Phase::Leader => Role::Leader,
            Phase::Candidate => Role::Candidate,
            Phase::PreCandidate => Role::PreCandidate,
            Phase::Follower if self.log.membership().is_learner(self.cfg.id) => Role::Learner,
            Phase::Follower => Role::Follower,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.phase == Phase::Leader
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn commit_index(&self) -> u64 {
        self.log.committed()
    }

    /// Index of the last entry the application confirmed (via `advance`).
    pub fn applied(&self) -> u64 {
        self.log.applied()
    }

    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    pub fn last_term(&self) -> u64 {
        self.log.last_term()
    }

    /// First index still in the in-memory log (`snapshot index + 1`).
    pub fn first_index(&self) -> u64 {
        self.log.first_index()
    }

    /// Term of the entry at `index`, if in the log (or the snapshot's last).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.log.term(index)
    }

    /// The entry at `index` if it is still in the in-memory log.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The latest membership (in effect as soon as it is in the log).
    pub fn membership(&self) -> &Membership {
        self.log.membership()
    }

    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        self.log.snapshot_meta()
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed(),
        }
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role(),
            leader: self.leader,
        }
    }

    /// Everything the `status` command shows; `peers` only on the leader.
    pub fn status(&self) -> Status {
        let membership = self.log.membership().clone();
        let last = self.log.last_index();
        let peers = self
            .progress
            .iter()
            .map(|(&id, p)| PeerStatus {
                id,
                voter: membership.is_voter(id),
                match_index: p.match_index,
                next_index: p.next_index,
                lag: last.saturating_sub(p.match_index),
                state: p.state,
                inflight: p.inflight_count(),
                last_heard_ms: p.last_heard_ms,
            })
            .collect();
        Status {
            id: self.cfg.id,
            role: self.role(),
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit_index: self.log.committed(),
            applied_index: self.log.applied(),
            last_index: last,
            snapshot_index: self.log.snapshot_meta().index,
            membership,
            peers,
        }
    }

    // ------------------------------------------------------------ time

    /// When `tick` next has work: the caller's poll timeout. `Some(0)`
    /// before the node has seen any clock value.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.now_ms.is_none() {
            return Some(0);
        }
        let mut deadline = self.reads.next_deadline_ms();
        let mut consider = |d: u64| deadline = Some(deadline.map_or(d, |x: u64| x.min(d)));
        match self.phase {
            Phase::Leader => {
                consider(self.heartbeat_deadline_ms);
                if self.cfg.check_quorum {
                    consider(self.check_quorum_deadline_ms);
                }
                if let Some(t) = self.transfer {
                    consider(t.deadline_ms);
                }
            }
            _ => {
                if self.may_campaign() {
                    consider(self.election_deadline_ms);
                }
            }
        }
        deadline
    }

    /// Handles every timer that expired by `now_ms`. Calling it early or
    /// often is harmless.
    pub fn tick(&mut self, now_ms: u64) {
        let now = self.observe_clock(now_ms);
        self.expire_reads(now);
        if self.phase == Phase::Leader {
            if now >= self.heartbeat_deadline_ms {
                self.heartbeat_deadline_ms = now + self.cfg.heartbeat_ms;
                self.broadcast_heartbeat();
            }
            if self.transfer.is_some_and(|t| now >= t.deadline_ms) {
                self.transfer = None;
            }
            if self.cfg.check_quorum && now >= self.check_quorum_deadline_ms {
                self.check_quorum_deadline_ms = now + self.cfg.election_timeout_min_ms;
                if !self.quorum_recently_active(now) {
                    self.become_follower(now, self.term, None);
                }
            }
        } else if self.may_campaign() && now >= self.election_deadline_ms {
            self.campaign(now, self.cfg.pre_vote, false);
        }
    }

    /// The transport lost its connection with `peer`: closed or reset,
    /// which is what a crashed process's sockets do at once. If `peer` is
    /// this node's leader, the node stops counting on it: it drops its
    /// lease and campaigns after a random delay of up to one heartbeat
    /// instead of a whole election timeout. Only liveness changes, and
    /// only with PreVote and CheckQuorum on: the pre-vote still needs a
    /// majority, and a node that still hears the leader refuses it, so a
    /// connection that merely broke does not depose a healthy leader.
    pub fn peer_lost(&mut self, now_ms: u64, peer: NodeId) {
        let now = self.observe_clock(now_ms);
        if !(self.cfg.pre_vote && self.cfg.check_quorum)
            || self.phase == Phase::Leader
            || self.leader != Some(peer)
            || !self.may_campaign()
        {
            return;
        }
        self.last_leader_contact_ms = None;
        let soon = now.saturating_add(self.rng.range(0, self.cfg.heartbeat_ms.max(1)));
        self.election_deadline_ms = self.election_deadline_ms.min(soon);
    }

    /// Records the caller's clock; tolerates (ignores) a clock going back.
    pub(super) fn observe_clock(&mut self, now_ms: u64) -> u64 {
        match self.now_ms {
            None => {
                self.now_ms = Some(now_ms);
                self.reset_election_timer(now_ms);
                now_ms
            }
            Some(prev) => {
                let now = prev.max(now_ms);
                self.now_ms = Some(now);
                now
            }
        }
    }

    pub(super) fn reset_election_timer(&mut self, now: u64) {
        let timeout = self.rng.range(
            self.cfg.election_timeout_min_ms,
            self.cfg.election_timeout_max_ms,
        );
        self.election_deadline_ms = now.saturating_add(timeout);
    }

    /// Is this node a voter of its latest membership?
    pub(super) fn is_voter(&self) -> bool {
        self.log.membership().is_voter(self.cfg.id)
    }

    /// May this node campaign? Voters may; so may a node whose latest
    /// membership removed or demoted it but is not committed yet, if it
    /// was a voter before: it may hold that change and the entries after
    /// it alone, and then only it can win (counting votes by the new
    /// membership, not itself) and finish the change. Otherwise such a
    /// node (say a leader that demoted itself and restarted) would block
    /// every election forever, as its log is the most up to date.
    pub(super) fn may_campaign(&self) -> bool {
        self.is_voter()
            || self
                .log
                .previous_membership()
                .is_some_and(|m| m.is_voter(self.cfg.id))
    }

    /// Leader stickiness: a node in contact with a leader ignores requests
    /// to elect someone else.
    pub(super) fn in_lease(&self, now: u64) -> bool {
        if !self.cfg.check_quorum {
            return false;
        }
        match self.phase {
            Phase::Leader => true,
            _ => {
                self.leader.is_some()
                    && self
                        .last_leader_contact_ms
                        .is_some_and(|t| now < t.saturating_add(self.cfg.election_timeout_min_ms))
            }
        }
    }

    // ------------------------------------------------------------ input

    /// Feeds one message from a peer.
    pub fn step(&mut self, now_ms: u64, msg: Message) {
        let now = self.observe_clock(now_ms);
        let from = msg.from;
        if from == self.cfg.id || from == 0 || msg.term > MAX_TERM {
            return;
        }
        // Read-index traffic is keyed by request, not by term.
        match msg.body {
            MessageBody::ReadIndex(r) => return self.handle_read_request(now, from, r.request_id),
            MessageBody::ReadIndexResponse(r) => return self.handle_read_response(r),
            _ => {}
        }
        if msg.term > self.term {
            if let MessageBody::PreVote(v) | MessageBody::Vote(v) = &msg.body {
                let forced = matches!(msg.body, MessageBody::Vote(_)) && v.transfer;
                if !forced && self.in_lease(now) {
                    return;
                }
            }
            match &msg.body {
                // A pre-vote never changes terms, in either direction.
                MessageBody::PreVote(_) => {}
                MessageBody::PreVoteResponse(r) if r.granted => {}
                MessageBody::Append(_)
                | MessageBody::Heartbeat(_)
                | MessageBody::InstallSnapshot(_) => {
                    self.become_follower(now, msg.term, Some(from))
                }
                _ => self.become_follower(now, msg.term, None),
            }
        } else if msg.term < self.term {
            match &msg.body {
                // A stale leader (or one cut off while we moved on) learns
                // our term from the answer and steps down.
                MessageBody::Append(_)
                | MessageBody::Heartbeat(_)
                | MessageBody::InstallSnapshot(_) => self.send(
                    from,
                    MessageBody::HeartbeatResponse(HeartbeatResponse { read_ctx: 0 }),
                ),
                MessageBody::PreVote(_) => self.send(
                    from,
                    MessageBody::PreVoteResponse(VoteResponse { granted: false }),
                ),
                _ => {}
            }
            return;
        }
        let term = msg.term;
        match msg.body {
            MessageBody::PreVote(v) => self.handle_vote_request(now, from, term, v, true),
            MessageBody::Vote(v) => self.handle_vote_request(now, from, term, v, false),
            MessageBody::PreVoteResponse(r) => self.handle_vote_response(now, from, term, r, true),
            MessageBody::VoteResponse(r) => self.handle_vote_response(now, from, term, r, false),
            MessageBody::Append(a) => self.handle_append(now, from, term, a),
            MessageBody::AppendResponse(r) => self.handle_append_response(now, from, r),
            MessageBody::Heartbeat(h) => self.handle_heartbeat(now, from, h),
            MessageBody::HeartbeatResponse(h) => self.handle_heartbeat_response(now, from, h),
            MessageBody::InstallSnapshot(c) => self.handle_snapshot_chunk(now, from, term, c),
            MessageBody::InstallSnapshotResponse(r) => self.handle_snapshot_response(now, from, r),
            MessageBody::TimeoutNow => self.handle_timeout_now(now, from),
            MessageBody::ReadIndex(_) | MessageBody::ReadIndexResponse(_) => {}
        }
    }

    /// Appends application data; returns its index. The entry is ours only
    /// if the entry later committed at that index has the current `term()`.
    pub fn propose(&mut self, now_ms: u64, data: Vec<u8>) -> Result<u64, ProposeError> {
        self.observe_clock(now_ms);
        if self.phase != Phase::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if data.len() > self.cfg.max_entry_bytes {
            return Err(ProposeError::TooLarge {
                len: data.len(),
                max: self.cfg.max_entry_bytes,
            });
        }
        Ok(self.append_local(EntryKind::Normal, data))
    }

    /// Leader: appends an entry of the current term to its own log.
    pub(super) fn append_local(&mut self, kind: EntryKind, data: Vec<u8>) -> u64 {
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            index,
            term: self.term,
            kind,
            data,
        });
        self.pending_replication = true;
        index
    }

    /// Replaces the log up to `index` (which the application has applied
    /// and advanced past) by a snapshot with `data`. The caller persists
    /// the snapshot itself and may then delete entries up to `index`.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<SnapshotMeta, CompactError> {
        self.log.compact(index, data)
    }

    // ------------------------------------------------------------ output

    /// Is there anything for the caller to persist, send, apply or answer?
    pub fn has_ready(&self) -> bool {
        self.log.has_unstable()
            || self.log.has_committed_to_apply()
            || !self.msgs.is_empty()
            || !self.read_states.is_empty()
            || !self.failed_reads.is_empty()
            || self.hard_state() != self.handed_hard_state
            || self.soft_state() != self.handed_soft_state
            || (self.phase == Phase::Leader
                && (self.pending_replication || self.commit_changed || self.pending_heartbeat))
    }

    /// The next batch of work; see [`Ready`] for how to handle it, then
    /// call [`advance`](Self::advance).
    pub fn ready(&mut self) -> Ready {
        if self.phase == Phase::Leader {
            self.flush_replication();
        }
        let unstable = self.log.take_unstable();
        let hs = self.hard_state();
        let hard_state = (hs != self.handed_hard_state).then_some(hs);
        self.handed_hard_state = hs;
        let ss = self.soft_state();
        let soft_state = (ss != self.handed_soft_state).then_some(ss);
        self.handed_soft_state = ss;
        Ready {
            soft_state,
            hard_state,
            snapshot: unstable.snapshot,
            truncate_from: unstable.truncate_from,
            entries: unstable.entries,
            messages: std::mem::take(&mut self.msgs),
            committed: self.log.take_committed(),
            read_states: std::mem::take(&mut self.read_states),
            failed_reads: std::mem::take(&mut self.failed_reads),
        }
    }

    /// Everything handed out by `ready` so far is durable, sent and applied.
    pub fn advance(&mut self, now_ms: u64) {
        let now = self.observe_clock(now_ms);
        self.log.advance();
        if self.phase == Phase::Leader {
            // Our own entries count for the quorum only once durable.
            self.maybe_commit(now);
        }
    }

    // ------------------------------------------------------------ helpers

    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    pub(super) fn send_with_term(&mut self, to: NodeId, term: u64, body: MessageBody) {
        self.msgs.push((
            to,
            Message {
                from: self.cfg.id,
                term,
                body,
            },
        ));
    }

    /// Steps down to follower of `term` (raising our term clears the vote).
    pub(super) fn become_follower(&mut self, now: u64, term: u64, leader: Option<NodeId>) {
        let term_changed = term > self.term;
        if term_changed {
            self.term = term;
            self.vote = None;
        }
        if self.phase == Phase::Leader {
            self.fail_leader_reads(ReadFailure::LeadershipLost);
            self.progress.clear();
            self.transfer = None;
            self.pending_replication = false;
            self.commit_changed = false;
            self.pending_heartbeat = false;
        }
        if self.leader != leader || term_changed {
            self.fail_forwarded_reads(ReadFailure::LeadershipLost);
            self.incoming_snapshot = None;
        }
        self.phase = Phase::Follower;
        self.leader = leader;
        self.votes.clear();
        if leader.is_some() {
            self.last_leader_contact_ms = Some(now);
        }
        self.reset_election_timer(now);
    }

    /// A valid message from the leader of our term: follow it.
    pub(super) fn accept_leader(&mut self, now: u64, from: NodeId) {
        if self.phase != Phase::Follower || self.leader != Some(from) {
            self.become_follower(now, self.term, Some(from));
        } else {
            self.last_leader_contact_ms = Some(now);
            self.reset_election_timer(now);
        }
    }

    /// Leader: has a quorum of voters been heard from within the minimum
    /// election timeout?
    fn quorum_recently_active(&self, now: u64) -> bool {
        let window_start = now.saturating_sub(self.cfg.election_timeout_min_ms);
        let membership = self.log.membership();
        let active = membership
            .voters
            .iter()
            .filter(|&&v| {
                v == self.cfg.id
                    || self
                        .progress
                        .get(&v)
                        .and_then(|p| p.last_heard_ms)
                        .is_some_and(|t| t >= window_start)
            })
            .count();
        active >= membership.quorum()
    }
}
