//! Raft consensus as a sans-IO state machine.
//!
//! [`RaftNode`] never touches sockets, files or clocks. The caller owns
//! the I/O and drives the node through a handful of entry points, each
//! taking `now_ms` from a monotonic millisecond clock:
//!
//! - [`RaftNode::step`] for every message received from a peer;
//! - [`RaftNode::tick`] when [`RaftNode::next_deadline_ms`] has passed
//!   (use it as the poll timeout; there is no periodic tick);
//! - [`RaftNode::propose`], [`RaftNode::propose_membership`],
//!   [`RaftNode::read_index`], [`RaftNode::transfer_leadership`] for clients;
//! - [`RaftNode::compact`] after the application has applied up to an index.
//!
//! After any of these, while [`RaftNode::has_ready`], take a [`Ready`],
//! handle it as its documentation says (persist in one transaction, then
//! send, then apply) and call [`RaftNode::advance`]. Messages in a Ready
//! promise what the same Ready persists, so a crash anywhere between
//! `ready` and `advance` only loses that batch, which nobody was told about.
//!
//! At start the caller restores the persisted state ([`Restored`]: hard
//! state, latest snapshot, the log after it) into [`RaftNode::new`]; the
//! node keeps that log in memory. A cluster is started once, on one blank
//! node, with [`RaftNode::bootstrap`]; every other node starts blank and
//! learns the membership from the leader.
//!
//! Implemented: pre-vote, check-quorum with leader stickiness, pipelined
//! replication with fast conflict backtracking, commit by counting only
//! current-term entries, ReadIndex reads (forwarded from followers),
//! chunked InstallSnapshot, single-server membership changes with learners,
//! leadership transfer. The wire format is in [`codec`].

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
