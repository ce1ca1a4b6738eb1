//! Plain data of the Raft core: log entries, persistent state, membership,
//! configuration, and what the core hands back to its caller.

use std::collections::BTreeSet;
use std::fmt;

use super::codec::DecodeError;
use super::message::Message;

/// A server's identity in the cluster. `0` is reserved and never a valid id.
pub type NodeId = u64;

/// What a log entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data, opaque to Raft.
    Normal,
    /// Appended by every new leader so it can commit an entry of its own term.
    Noop,
    /// `data` is an encoded [`Membership`]; takes effect as soon as it is in a log.
    Membership,
}

impl EntryKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
            EntryKind::Membership => 2,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<EntryKind> {
        match b {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
            2 => Some(EntryKind::Membership),
            _ => None,
        }
    }
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

/// The state every server must persist before it answers anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: u64,
    pub vote: Option<NodeId>,
    pub commit: u64,
}

/// Who is in the cluster. Voters elect leaders and make up quorums;
/// learners only receive the log. A node is never in both sets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    pub fn new(
        voters: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
    ) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            learners: learners.into_iter().collect(),
        }
    }

    /// A membership with no voters: the state of a fresh, unbootstrapped node.
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty() && self.learners.is_empty()
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Structural checks: at least one voter, no id 0, no node in both sets.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.voters.is_empty() {
            return Err("a membership needs at least one voter");
        }
        if self.voters.contains(&0) || self.learners.contains(&0) {
            return Err("node id 0 is reserved");
        }
        if self.voters.intersection(&self.learners).next().is_some() {
            return Err("a node cannot be both voter and learner");
        }
        Ok(())
    }

    /// The bytes stored in a Membership entry's `data`.
    pub fn encode(&self) -> Vec<u8> {
        super::codec::encode_membership(self)
    }

    /// Parses a Membership entry's `data` (strict: no trailing bytes).
    pub fn decode(data: &[u8]) -> Result<Membership, DecodeError> {
        super::codec::decode_membership(data)
    }
}

/// What a snapshot covers: everything up to and including `index`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    /// The membership in effect at `index`.
    pub membership: Membership,
}

/// Everything the caller read back from disk at start.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    pub hard_state: HardState,
    /// The latest snapshot (meta and opaque application state), if any.
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// The log after the snapshot, contiguous from `snapshot.index + 1`
    /// (entries at or below the snapshot index are ignored).
    pub entries: Vec<Entry>,
    /// The index up to which the application's own state already includes
    /// the log (if it persists its state machine together with the log).
    /// `0` means "only the snapshot": committed entries after the snapshot
    /// are delivered again through [`Ready::committed`].
    pub applied: u64,
}

/// Tunables of one node. Times are in milliseconds of the caller's clock.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub id: NodeId,
    /// How often a leader sends heartbeats.
    pub heartbeat_ms: u64,
    /// Election timeouts are drawn uniformly from `[min, max)`.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Ask "would you vote for me?" before bumping the term (thesis 9.6).
    pub pre_vote: bool,
    /// Leaders step down without a quorum; followers in contact with a
    /// leader ignore vote requests (leader stickiness).
    pub check_quorum: bool,
    /// At most this many entries in one AppendEntries.
    pub max_entries_per_append: usize,
    /// Soft limit on the entry bytes of one AppendEntries (one entry is always sent).
    pub max_append_bytes: usize,
    /// At most this many AppendEntries in flight to one follower.
    pub max_inflight_appends: usize,
    /// InstallSnapshot chunk size.
    pub snapshot_chunk_bytes: usize,
    /// `propose` refuses larger data (it must fit in a transport frame).
    pub max_entry_bytes: usize,
    /// Seed of the election-timeout jitter.
    pub rng_seed: u64,
}

impl RaftConfig {
    /// Defaults for everything but the id; seed the jitter with entropy in a daemon.
    pub fn new(id: NodeId) -> RaftConfig {
        RaftConfig {
            id,
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            pre_vote: true,
            check_quorum: true,
            max_entries_per_append: 512,
            max_append_bytes: 1 << 20,
            max_inflight_appends: 32,
            snapshot_chunk_bytes: 1 << 20,
            max_entry_bytes: 8 << 20,
            rng_seed: id,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), InitError> {
        let bad = |what: &'static str| Err(InitError::Config(what));
        if self.id == 0 {
            return bad("node id 0 is reserved");
        }
        if self.heartbeat_ms == 0 {
            return bad("heartbeat_ms must be positive");
        }
        if self.election_timeout_min_ms <= self.heartbeat_ms {
            return bad("election_timeout_min_ms must exceed heartbeat_ms");
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return bad("election_timeout_max_ms must exceed election_timeout_min_ms");
        }
        if self.max_entries_per_append == 0
            || self.max_inflight_appends == 0
            || self.snapshot_chunk_bytes == 0
        {
            return bad("append, inflight and chunk limits must be positive");
        }
        Ok(())
    }
}

/// What a node is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Running a pre-vote: has not bumped its term yet.
    PreCandidate,
    Candidate,
    Leader,
    /// A follower that is a learner in its latest membership.
    Learner,
}

/// The volatile state worth showing: changes are reported in [`Ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub leader: Option<NodeId>,
}

/// A confirmed linearizable read: serve it once the state machine has
/// applied `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    pub request_id: u64,
    pub index: u64,
}

/// A read that could not be confirmed; the caller answers "retry".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedRead {
    pub request_id: u64,
    pub reason: ReadFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFailure {
    /// No leader is known.
    NoLeader,
    /// Leadership changed or was lost before the read was confirmed.
    LeadershipLost,
    /// No quorum confirmed leadership in time.
    Timeout,
}

/// One batch of work for the caller. Handle it in this order:
///
/// 1. Persist, in one transaction: if `snapshot` is set, store it and
///    delete every persisted entry (the log restarts after it); if
///    `truncate_from` is set, delete persisted entries with index >= it;
///    append `entries`; store `hard_state` if set. One fsync.
/// 2. Send `messages` (only now: they promise what was just persisted).
/// 3. If `snapshot` is set, replace the state machine with it; then apply
///    `committed` in order; serve `read_states` once applied reaches their
///    index; answer `failed_reads` with "retry".
/// 4. Call [`RaftNode::advance`](super::RaftNode::advance).
///
/// A crash anywhere in between loses at most this batch, which nobody
/// was told about.
#[derive(Debug, Default)]
pub struct Ready {
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    pub truncate_from: Option<u64>,
    pub entries: Vec<Entry>,
    pub messages: Vec<(NodeId, Message)>,
    pub committed: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    pub failed_reads: Vec<FailedRead>,
}

impl Ready {
    /// True when the batch needs a write to stable storage.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some()
            || self.snapshot.is_some()
            || self.truncate_from.is_some()
            || !self.entries.is_empty()
    }
}

/// How a leader feeds one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationState {
    /// Looking for the point where the logs agree, one append at a time.
    Probe,
    /// Streaming appends, up to `max_inflight_appends` unacknowledged.
    Replicate,
    /// Sending the snapshot with this index.
    Snapshot { index: u64 },
}

/// A leader's view of one follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub voter: bool,
    pub match_index: u64,
    pub next_index: u64,
    /// Entries the follower is missing (`last_index - match_index`).
    pub lag: u64,
    pub state: ReplicationState,
    /// Appends sent and not yet acknowledged.
    pub inflight: usize,
    /// When the leader last heard from it (caller's clock).
    pub last_heard_ms: Option<u64>,
}

/// Everything the daemon's `status` command shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    pub membership: Membership,
    /// Followers, when this node is the leader.
    pub peers: Vec<PeerStatus>,
}

/// Why `RaftNode::new` refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitError {
    Config(&'static str),
    /// The restored state is inconsistent (gap in the log, bad entry, ...).
    Restored(String),
}

/// Why `propose` or `propose_membership` refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader accepts proposals; this is who we think leads.
    NotLeader { leader: Option<NodeId> },
    /// A membership change is still uncommitted, or the new leader has not
    /// committed an entry of its term yet.
    MembershipChangePending,
    /// The new membership is not a valid single-server change.
    InvalidMembership(&'static str),
    /// The data is larger than `max_entry_bytes`.
    TooLarge { len: usize, max: usize },
    /// A leadership transfer is under way.
    TransferInProgress,
}

/// Why `bootstrap` refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapError {
    /// The node already has Raft state; only a blank node can start a cluster.
    AlreadyInitialized {
        term: u64,
        last_index: u64,
    },
    InvalidMembership(&'static str),
}

/// Why `compact` refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompactError {
    /// The index has not been applied (advanced) yet.
    NotApplied { index: u64, applied: u64 },
    /// The index is already covered by the snapshot.
    AlreadyCompacted { index: u64, snapshot_index: u64 },
}

/// Why `transfer_leadership` refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferError {
    NotLeader { leader: Option<NodeId> },
    NotAVoter(NodeId),
    AlreadyLeader,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::Config(what) => write!(f, "invalid raft config: {what}"),
            InitError::Restored(what) => write!(f, "inconsistent restored raft state: {what}"),
        }
    }
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(id) } => {
                write!(f, "not the leader (node {id} is)")
            }
            ProposeError::NotLeader { leader: None } => {
                write!(f, "not the leader (no leader known)")
            }
            ProposeError::MembershipChangePending => {
                write!(f, "a membership change is still pending")
            }
            ProposeError::InvalidMembership(why) => write!(f, "invalid membership change: {why}"),
            ProposeError::TooLarge { len, max } => {
                write!(f, "entry of {len} bytes exceeds the limit of {max}")
            }
            ProposeError::TransferInProgress => write!(f, "a leadership transfer is in progress"),
        }
    }
}

impl fmt::Display for BootstrapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootstrapError::AlreadyInitialized { term, last_index } => write!(
                f,
                "refusing to bootstrap: this node already has raft state (term {term}, \
                 last index {last_index}); bootstrap only a blank node"
            ),
            BootstrapError::InvalidMembership(why) => {
                write!(f, "refusing to bootstrap: invalid membership: {why}")
            }
        }
    }
}

impl fmt::Display for CompactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompactError::NotApplied { index, applied } => {
                write!(f, "cannot compact to {index}: only {applied} applied")
            }
            CompactError::AlreadyCompacted {
                index,
                snapshot_index,
            } => {
                write!(
                    f,
                    "cannot compact to {index}: snapshot already at {snapshot_index}"
                )
            }
        }
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::NotLeader { .. } => write!(f, "not the leader"),
            TransferError::NotAVoter(id) => write!(f, "node {id} is not a voter"),
            TransferError::AlreadyLeader => write!(f, "already the leader"),
        }
    }
}

impl std::error::Error for InitError {}
impl std::error::Error for ProposeError {}
impl std::error::Error for BootstrapError {}
impl std::error::Error for CompactError {}
impl std::error::Error for TransferError {}
