//! Wire format of Raft messages and of the peer transport frames.
//!
//! Everything is big-endian and fixed-width. Decoding never panics and
//! never allocates a length read from the wire before checking it against
//! the bytes actually present (or a hard maximum).
//!
//! # Frames
//!
//! A peer connection carries frames: `u32` big-endian length `n`, then `n`
//! bytes made of one type byte and the body. `n` counts the type byte, so
//! `n >= 1`; `n` above the decoder's maximum ([`DEFAULT_MAX_FRAME`] = 64 MiB
//! unless configured) is rejected as soon as the 4 length bytes arrive,
//! before anything is buffered for it. Type [`FRAME_HELLO`] must be the
//! first frame on a connection and only the first; every later frame is
//! [`FRAME_RAFT`], one encoded [`Message`].
//!
//! # Message body
//!
//! `from u64 | term u64 | tag u8 | fields`, where fields per tag are
//! listed in [`encode_message`]. Entries are `index u64 | term u64 |
//! kind u8 | len u32 | data`; a Membership entry's data must itself decode
//! as a [`Membership`] (`voters: u32 count, u64 ids ascending | learners:
//! same`).

use std::fmt;

mod frame;
pub use frame::*;

use super::message::*;
use super::types::{Entry, EntryKind, Membership, NodeId, SnapshotMeta};

/// Frame type of the connection greeting.
pub const FRAME_HELLO: u8 = 1;
/// Frame type of one Raft [`Message`].
pub const FRAME_RAFT: u8 = 2;
/// Largest frame accepted by default: 64 MiB. Must exceed
/// `max_append_bytes + max_entry_bytes` and `snapshot_chunk_bytes` plus a
/// few hundred bytes of headers.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;
/// Version carried in [`Hello`]; bump on any wire change.
pub const PROTOCOL_VERSION: u16 = 1;
/// Longest cluster name a [`Hello`] may carry.
pub const MAX_CLUSTER_NAME: usize = 255;

/// Smallest possible encoded entry (empty data).
const ENTRY_MIN_BYTES: usize = 8 + 8 + 1 + 4;

/// Why bytes could not be decoded. A connection that produced one of these
/// must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ends in the middle of a value.
    Truncated,
    /// Bytes left over after a complete value.
    TrailingBytes,
    /// A tag or enum byte with no meaning.
    UnknownTag { what: &'static str, tag: u8 },
    /// A value that is structurally impossible.
    Invalid(&'static str),
    /// A frame header announcing more than the maximum.
    FrameTooLarge { len: usize, max: usize },
    /// A frame of length zero (no type byte).
    EmptyFrame,
    /// The first frame on a connection was not a Hello.
    ExpectedHello,
    /// A Hello after the first frame.
    UnexpectedHello,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "truncated input"),
            DecodeError::TrailingBytes => write!(f, "trailing bytes after value"),
            DecodeError::UnknownTag { what, tag } => write!(f, "unknown {what} tag {tag}"),
            DecodeError::Invalid(what) => write!(f, "invalid value: {what}"),
            DecodeError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
            DecodeError::EmptyFrame => write!(f, "empty frame"),
            DecodeError::ExpectedHello => write!(f, "first frame is not a hello"),
            DecodeError::UnexpectedHello => write!(f, "hello after the first frame"),
        }
    }
}

impl std::error::Error for DecodeError {}

// ---------------------------------------------------------------- reading

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::UnknownTag { what: "bool", tag }),
        }
    }

    /// `u32` length then that many bytes (checked against the input first).
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        if len > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        self.take(len)
    }

    /// `u32` element count, checked against the bytes left for elements of
    /// at least `min_size` bytes each.
    fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > self.remaining() / min_size {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

// ---------------------------------------------------------------- writing

fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}

/// Lengths above `u32::MAX` cannot be framed; callers bound sizes far
/// below that (`max_entry_bytes`, chunk size), so saturating is only a
/// guard: the peer then rejects the value as truncated.
fn put_bytes(out: &mut Vec<u8>, data: &[u8]) {
    put_u32(out, u32::try_from(data.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(data);
}

// ---------------------------------------------------------------- membership

fn put_id_set<'a>(out: &mut Vec<u8>, ids: impl ExactSizeIterator<Item = &'a NodeId>) {
    put_u32(out, u32::try_from(ids.len()).unwrap_or(u32::MAX));
    for id in ids {
        put_u64(out, *id);
    }
}

fn put_membership(out: &mut Vec<u8>, m: &Membership) {
    put_id_set(out, m.voters.iter());
    put_id_set(out, m.learners.iter());
}

fn read_id_set(r: &mut Reader<'_>) -> Result<std::collections::BTreeSet<NodeId>, DecodeError> {
    let n = r.count(8)?;
    let mut set = std::collections::BTreeSet::new();
    let mut prev: Option<NodeId> = None;
    for _ in 0..n {
        let id = r.u64()?;
        if prev.is_some_and(|p| p >= id) {
            return Err(DecodeError::Invalid("node ids not strictly ascending"));
        }
        prev = Some(id);
        set.insert(id);
    }
    Ok(set)
}

fn read_membership(r: &mut Reader<'_>) -> Result<Membership, DecodeError> {
    let voters = read_id_set(r)?;
    let learners = read_id_set(r)?;
    let m = Membership { voters, learners };
    m.validate().map_err(DecodeError::Invalid)?;
    Ok(m)
}

/// The bytes of a Membership entry.
pub fn encode_membership(m: &Membership) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 8 * (m.voters.len() + m.learners.len()));
    put_membership(&mut out, m);
    out
}

/// Parses a Membership entry's data: canonical (ascending ids), valid
/// (at least one voter, no overlap, no id 0), nothing trailing.
pub fn decode_membership(data: &[u8]) -> Result<Membership, DecodeError> {
    let mut r = Reader::new(data);
    let m = read_membership(&mut r)?;
    r.finish()?;
    Ok(m)
}

// ---------------------------------------------------------------- entries

fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    put_u64(out, e.index);
    put_u64(out, e.term);
    put_u8(out, e.kind.to_byte());
    put_bytes(out, &e.data);
}

fn read_entry(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let index = r.u64()?;
    let term = r.u64()?;
    let tag = r.u8()?;
    let kind = EntryKind::from_byte(tag).ok_or(DecodeError::UnknownTag {
        what: "entry kind",
        tag,
    })?;
    let data = r.bytes()?;
    if kind == EntryKind::Membership {
        decode_membership(data)?;
    }
    Ok(Entry {
        index,
        term,
        kind,
        data: data.to_vec(),
    })
}

/// One entry on its own (for storage layers that want the same format).
pub fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_MIN_BYTES + e.data.len());
    put_entry(&mut out, e);
    out
}

pub fn decode_entry(data: &[u8]) -> Result<Entry, DecodeError> {
    let mut r = Reader::new(data);
    let e = read_entry(&mut r)?;
    r.finish()?;
    Ok(e)
}

fn put_snapshot_meta(out: &mut Vec<u8>, m: &SnapshotMeta) {
    put_u64(out, m.index);
    put_u64(out, m.term);
    put_membership(out, &m.membership);
}

fn read_snapshot_meta(r: &mut Reader<'_>) -> Result<SnapshotMeta, DecodeError> {
    let index = r.u64()?;
    let term = r.u64()?;
    let membership = read_membership(r)?;
    Ok(SnapshotMeta {
        index,
        term,
        membership,
    })
}

// ---------------------------------------------------------------- messages

const TAG_PRE_VOTE: u8 = 1;
const TAG_PRE_VOTE_RESPONSE: u8 = 2;
const TAG_VOTE: u8 = 3;
const TAG_VOTE_RESPONSE: u8 = 4;
const TAG_APPEND: u8 = 5;
const TAG_APPEND_RESPONSE: u8 = 6;
const TAG_HEARTBEAT: u8 = 7;
const TAG_HEARTBEAT_RESPONSE: u8 = 8;
const TAG_INSTALL_SNAPSHOT: u8 = 9;
const TAG_INSTALL_SNAPSHOT_RESPONSE: u8 = 10;
const TAG_READ_INDEX: u8 = 11;
const TAG_READ_INDEX_RESPONSE: u8 = 12;
const TAG_TIMEOUT_NOW: u8 = 13;

/// Encodes a message body (not framed). Fields after `from | term | tag`:
///
/// | tag | message | fields |
/// |---|---|---|
/// | 1, 3 | PreVote, Vote | `last_index u64, last_term u64, transfer u8` |
/// | 2, 4 | responses | `granted u8` |
/// | 5 | Append | `prev_index, prev_term, commit u64, count u32, entries` |
/// | 6 | AppendResponse | `0, match u64` or `1, prev_index u64, hint` where hint is `0, last_index u64` or `1, term u64, first_index u64` |
/// | 7 | Heartbeat | `commit u64, read_ctx u64` |
/// | 8 | HeartbeatResponse | `read_ctx u64` |
/// | 9 | InstallSnapshot | `index, term u64, membership, total_len, offset u64, done u8, len u32, data` |
/// | 10 | InstallSnapshotResponse | `snapshot_index u64, installed u8, next_offset u64` |
/// | 11 | ReadIndex | `request_id u64` |
/// | 12 | ReadIndexResponse | `request_id u64, 0` or `request_id u64, 1, index u64` |
/// | 13 | TimeoutNow | nothing |
pub fn encode_message(m: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    put_message(&mut out, m);
    out
}

fn put_message(out: &mut Vec<u8>, m: &Message) {
    put_u64(out, m.from);
    put_u64(out, m.term);
    match &m.body {
        MessageBody::PreVote(v) => put_vote_request(out, TAG_PRE_VOTE, v),
        MessageBody::Vote(v) => put_vote_request(out, TAG_VOTE, v),
        MessageBody::PreVoteResponse(v) => {
            put_u8(out, TAG_PRE_VOTE_RESPONSE);
            put_bool(out, v.granted);
        }
        MessageBody::VoteResponse(v) => {
            put_u8(out, TAG_VOTE_RESPONSE);
            put_bool(out, v.granted);
        }
        MessageBody::Append(a) => {
            put_u8(out, TAG_APPEND);
            put_u64(out, a.prev_index);
            put_u64(out, a.prev_term);
            put_u64(out, a.commit);
            put_u32(out, u32::try_from(a.entries.len()).unwrap_or(u32::MAX));
            for e in &a.entries {
                put_entry(out, e);
            }
        }
        MessageBody::AppendResponse(r) => {
            put_u8(out, TAG_APPEND_RESPONSE);
            match *r {
                AppendResponse::Accepted { match_index } => {
                    put_u8(out, 0);
                    put_u64(out, match_index);
                }
                AppendResponse::Rejected { prev_index, hint } => {
                    put_u8(out, 1);
                    put_u64(out, prev_index);
                    match hint {
                        RejectHint::LogTooShort { last_index } => {
                            put_u8(out, 0);
                            put_u64(out, last_index);
                        }
                        RejectHint::Conflict { term, first_index } => {
                            put_u8(out, 1);
                            put_u64(out, term);
                            put_u64(out, first_index);
                        }
                    }
                }
            }
        }
        MessageBody::Heartbeat(h) => {
            put_u8(out, TAG_HEARTBEAT);
            put_u64(out, h.commit);
            put_u64(out, h.read_ctx);
        }
        MessageBody::HeartbeatResponse(h) => {
            put_u8(out, TAG_HEARTBEAT_RESPONSE);
            put_u64(out, h.read_ctx);
        }
        MessageBody::InstallSnapshot(c) => {
            put_u8(out, TAG_INSTALL_SNAPSHOT);
            put_snapshot_meta(out, &c.meta);
            put_u64(out, c.total_len);
            put_u64(out, c.offset);
            put_bool(out, c.done);
            put_bytes(out, &c.data);
        }
        MessageBody::InstallSnapshotResponse(r) => {
            put_u8(out, TAG_INSTALL_SNAPSHOT_RESPONSE);
            put_u64(out, r.snapshot_index);
            put_bool(out, r.installed);
            put_u64(out, r.next_offset);
        }
        MessageBody::ReadIndex(r) => {
            put_u8(out, TAG_READ_INDEX);
            put_u64(out, r.request_id);
        }
        MessageBody::ReadIndexResponse(r) => {
            put_u8(out, TAG_READ_INDEX_RESPONSE);
            put_u64(out, r.request_id);
            match r.index {
                None => put_u8(out, 0),
                Some(index) => {
                    put_u8(out, 1);
                    put_u64(out, index);
                }
            }
        }
        MessageBody::TimeoutNow => put_u8(out, TAG_TIMEOUT_NOW),
    }
}

fn put_vote_request(out: &mut Vec<u8>, tag: u8, v: &VoteRequest) {
    put_u8(out, tag);
    put_u64(out, v.last_index);
    put_u64(out, v.last_term);
    put_bool(out, v.transfer);
}

fn read_vote_request(r: &mut Reader<'_>) -> Result<VoteRequest, DecodeError> {
    Ok(VoteRequest {
        last_index: r.u64()?,
        last_term: r.u64()?,
        transfer: r.bool()?,
    })
}

/// Decodes one message body; the whole input must be consumed.
pub fn decode_message(data: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader::new(data);
    let from = r.u64()?;
    let term = r.u64()?;
    let tag = r.u8()?;
    let body = match tag {
        TAG_PRE_VOTE => MessageBody::PreVote(read_vote_request(&mut r)?),
        TAG_VOTE => MessageBody::Vote(read_vote_request(&mut r)?),
        TAG_PRE_VOTE_RESPONSE => MessageBody::PreVoteResponse(VoteResponse { granted: r.bool()? }),
        TAG_VOTE_RESPONSE => MessageBody::VoteResponse(VoteResponse { granted: r.bool()? }),
        TAG_APPEND => {
            let prev_index = r.u64()?;
            let prev_term = r.u64()?;
            let commit = r.u64()?;
            let n = r.count(ENTRY_MIN_BYTES)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push(read_entry(&mut r)?);
            }
            MessageBody::Append(AppendRequest {
                prev_index,
                prev_term,
                commit,
                entries,
            })
        }
        TAG_APPEND_RESPONSE => MessageBody::AppendResponse(read_append_response(&mut r)?),
        TAG_HEARTBEAT => MessageBody::Heartbeat(Heartbeat {
            commit: r.u64()?,
            read_ctx: r.u64()?,
        }),
        TAG_HEARTBEAT_RESPONSE => {
            MessageBody::HeartbeatResponse(HeartbeatResponse { read_ctx: r.u64()? })
        }
        TAG_INSTALL_SNAPSHOT => {
            let meta = read_snapshot_meta(&mut r)?;
            let total_len = r.u64()?;
            let offset = r.u64()?;
            let done = r.bool()?;
            let data = r.bytes()?.to_vec();
            MessageBody::InstallSnapshot(SnapshotChunk {
                meta,
                total_len,
                offset,
                data,
                done,
            })
        }
        TAG_INSTALL_SNAPSHOT_RESPONSE => MessageBody::InstallSnapshotResponse(SnapshotResponse {
            snapshot_index: r.u64()?,
            installed: r.bool()?,
            next_offset: r.u64()?,
        }),
        TAG_READ_INDEX => MessageBody::ReadIndex(ReadIndexRequest {
            request_id: r.u64()?,
        }),
        TAG_READ_INDEX_RESPONSE => {
            let request_id = r.u64()?;
            let index = match r.u8()? {
                0 => None,
                1 => Some(r.u64()?),
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "option",
                        tag,
                    })
                }
            };
            MessageBody::ReadIndexResponse(ReadIndexResponse { request_id, index })
        }
        TAG_TIMEOUT_NOW => MessageBody::TimeoutNow,
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "message",
                tag,
            })
        }
    };
    r.finish()?;
    Ok(Message { from, term, body })
}

fn read_append_response(r: &mut Reader<'_>) -> Result<AppendResponse, DecodeError> {
    match r.u8()? {
        0 => Ok(AppendResponse::Accepted {
            match_index: r.u64()?,
        }),
        1 => {
            let prev_index = r.u64()?;
            let hint = match r.u8()? {
                0 => RejectHint::LogTooShort {
                    last_index: r.u64()?,
                },
                1 => RejectHint::Conflict {
                    term: r.u64()?,
                    first_index: r.u64()?,
                },
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "reject hint",
                        tag,
                    })
                }
            };
            Ok(AppendResponse::Rejected { prev_index, hint })
        }
        tag => Err(DecodeError::UnknownTag {
            what: "append response",
            tag,
        }),
    }
}
