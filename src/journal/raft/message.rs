//! The messages Raft nodes exchange. The wire form is in [`super::codec`].

use super::types::{Entry, NodeId, SnapshotMeta};

/// One message between two nodes. The transport must check that `from`
/// matches the peer's `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    /// The sender's term; for `PreVote` the term it would campaign in, and
    /// for a granted `PreVoteResponse` that same term.
    pub term: u64,
    pub body: MessageBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    PreVote(VoteRequest),
    PreVoteResponse(VoteResponse),
    Vote(VoteRequest),
    VoteResponse(VoteResponse),
    Append(AppendRequest),
    AppendResponse(AppendResponse),
    Heartbeat(Heartbeat),
    HeartbeatResponse(HeartbeatResponse),
    InstallSnapshot(SnapshotChunk),
    InstallSnapshotResponse(SnapshotResponse),
    /// A follower asks the leader to confirm a linearizable read.
    ReadIndex(ReadIndexRequest),
    ReadIndexResponse(ReadIndexResponse),
    /// The leader hands over: campaign now, skipping pre-vote.
    TimeoutNow,
}

/// Candidate's log position (PreVote and Vote).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteRequest {
    pub last_index: u64,
    pub last_term: u64,
    /// Set in a campaign started by `TimeoutNow`: overrides leader stickiness.
    pub transfer: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteResponse {
    pub granted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    pub prev_index: u64,
    pub prev_term: u64,
    /// The leader's commit index.
    pub commit: u64,
    /// Contiguous, starting at `prev_index + 1`.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendResponse {
    /// The follower's log matches the leader's up to `match_index`.
    Accepted { match_index: u64 },
    /// The follower has no entry `(prev_index, prev_term)`.
    Rejected { prev_index: u64, hint: RejectHint },
}

/// Where the leader should look next after a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectHint {
    /// The follower's log ends before `prev_index`.
    LogTooShort { last_index: u64 },
    /// The follower's entry at `prev_index` has `term`; its first entry of
    /// that term is at `first_index`.
    Conflict { term: u64, first_index: u64 },
}

/// Leader liveness, commit propagation and read-index confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// `min(leader commit, follower's match index)`: never past what the
    /// follower is known to share with the leader.
    pub commit: u64,
    /// The leader's latest read-index context; echoed back.
    pub read_ctx: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub read_ctx: u64,
}

/// One piece of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub meta: SnapshotMeta,
    /// Size of the whole snapshot data.
    pub total_len: u64,
    pub offset: u64,
    pub data: Vec<u8>,
    /// This is the last chunk.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotResponse {
    pub snapshot_index: u64,
    /// The follower has the whole snapshot (or already had its index).
    pub installed: bool,
    /// Otherwise: where the follower wants the next chunk to start.
    pub next_offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadIndexRequest {
    pub request_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadIndexResponse {
    pub request_id: u64,
    /// The confirmed read index, or `None` if the leader could not confirm.
    pub index: Option<u64>,
}

impl MessageBody {
    /// Short name for logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote(_) => "PreVote",
            MessageBody::PreVoteResponse(_) => "PreVoteResponse",
            MessageBody::Vote(_) => "Vote",
            MessageBody::VoteResponse(_) => "VoteResponse",
            MessageBody::Append(_) => "Append",
            MessageBody::AppendResponse(_) => "AppendResponse",
            MessageBody::Heartbeat(_) => "Heartbeat",
            MessageBody::HeartbeatResponse(_) => "HeartbeatResponse",
            MessageBody::InstallSnapshot(_) => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse(_) => "InstallSnapshotResponse",
            MessageBody::ReadIndex(_) => "ReadIndex",
            MessageBody::ReadIndexResponse(_) => "ReadIndexResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}

impl AppendRequest {
    /// Semantic checks a well-behaved leader always passes: entries
    /// contiguous after `prev_index`, terms non-decreasing from `prev_term`
    /// and not beyond the message term. Nothing is trusted before this.
    pub(crate) fn is_well_formed(&self, msg_term: u64) -> bool {
        let mut expect_index = self.prev_index;
        let mut min_term = self.prev_term;
        if self.prev_term > msg_term {
            return false;
        }
        for e in &self.entries {
            let Some(next) = expect_index.checked_add(1) else {
                return false;
            };
            if e.index != next || e.term < min_term || e.term > msg_term || e.term == 0 {
                return false;
            }
            expect_index = next;
            min_term = e.term;
        }
        true
    }
}

impl SnapshotChunk {
    /// The chunk stays inside the snapshot; the last chunk ends it.
    pub(crate) fn is_well_formed(&self, msg_term: u64) -> bool {
        let Some(end) = self.offset.checked_add(self.data.len() as u64) else {
            return false;
        };
        end <= self.total_len
            && (!self.done || end == self.total_len)
            && self.meta.index > 0
            && self.meta.index <= super::node::MAX_TERM
            && self.meta.term > 0
            && self.meta.term <= msg_term
            && self.meta.membership.validate().is_ok()
    }
}
