//! Raft consensus as a sans-IO state machine.
//!
//! [`RaftNode`] never touches sockets, files or clocks. The caller owns
//! the I/O and drives the node through a handful of entry points, each
//! taking `now_ms` from a monotonic millisecond clock:
//!
//! - [`RaftNode::step`] for every message received from a peer;
//! - [`RaftNode::tick`] once [`RaftNode::next_deadline_ms`] has passed
//!   (use it as the poll timeout; there is no periodic tick);
//! - [`RaftNode::propose`], [`RaftNode::propose_membership`],
//!   [`RaftNode::read_index`], [`RaftNode::transfer_leadership`] for clients;
//! - [`RaftNode::compact`] after the application has applied up to an index.
//!
//! After any of these, while [`RaftNode::has_ready`], take a [`Ready`],
//! handle it as its documentation says (persist in one transaction, then
//! send, then apply) and call [`RaftNode::advance`]. Messages in a Ready
//! promise what the same Ready persists, so a crash anywhere between
//! `ready` and `advance` only loses that batch, which nobody was told
//! about. If persisting fails, treat it as a crash: drop the node and
//! rebuild it from storage. Calling `step`/`tick` between `ready` and
//! `advance` is allowed; `advance` then confirms everything handed out.
//!
//! At start the caller restores the persisted state ([`Restored`]: hard
//! state, latest snapshot, the log after it) into [`RaftNode::new`]; the
//! node keeps that log in memory. A cluster is started once, on one blank
//! node, with [`RaftNode::bootstrap`]; every other node starts blank and
//! learns the membership from the leader (blank nodes never campaign).
//!
//! # What is implemented
//!
//! - Elections with randomized timeouts, pre-vote, check-quorum and leader
//!   stickiness (followers in contact with a leader ignore vote requests).
//! - Pipelined replication (`max_inflight_appends`) with fast conflict
//!   backtracking; commit only by counting current-term entries; a no-op
//!   on election.
//! - ReadIndex reads, confirmed by a quorum heartbeat round, forwarded from
//!   followers, failed (never silently dropped) when leadership is lost or
//!   a timeout passes.
//! - Chunked InstallSnapshot; log compaction driven by the application.
//! - Single-server membership changes, learners, leadership transfer.
//!
//! Two deliberate refinements of the textbook rules, both found necessary
//! by the simulation: a node that believes itself a learner still answers
//! vote requests (only the candidate's membership decides whose vote
//! counts, and an uncommitted demotion may not survive), and a node
//! demoted or removed by an *uncommitted* change may still campaign (it
//! may be the only one holding that change and the entries after it).
//!
//! # Wire format and transport
//!
//! [`codec`] encodes messages and frames peer connections; see there.
//!
//! # Testing
//!
//! `sim` (tests only) runs whole clusters over a simulated faulty network
//! with a fake clock and checks Raft's safety properties after every
//! event; `PACT_SIM_SEEDS` and `PACT_SIM_SEED` control its randomized runs.

pub mod codec;
mod election;
mod log;
mod membership;
pub mod message;
mod node;
mod progress;
mod read_index;
mod replication;
mod snapshot;
mod types;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use codec::{
    decode_frame_stream, decode_message, encode_hello_frame, encode_message, encode_message_frame,
    DecodeError, FrameDecoder, Hello, PeerFrame, PeerStream, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
pub use membership::validate_membership_change;
pub use message::{Message, MessageBody};
pub use node::RaftNode;
pub use types::*;
