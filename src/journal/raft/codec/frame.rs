//! Transport frames of a peer connection: `u32` big-endian length (of
//! what follows), a type byte, the body. See the [parent module](super).

use super::{
    decode_message, encode_message, put_u16, put_u32, put_u64, put_u8, DecodeError, Reader,
};
use super::{FRAME_HELLO, FRAME_RAFT, MAX_CLUSTER_NAME};
use crate::journal::raft::message::Message;
use crate::journal::raft::types::NodeId;

/// The greeting that opens every peer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub from: NodeId,
    /// The cluster's name; peers of another cluster are refused.
    pub cluster: String,
}

/// A decoded frame of a peer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFrame {
    Hello(Hello),
    Raft(Message),
}

/// One raw frame: type byte and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub body: Vec<u8>,
}

/// Appends a frame of `kind` with `body` to `out`.
///
/// Bodies longer than `u32::MAX - 1` bytes cannot be framed; the length
/// saturates and the receiver rejects the frame.
pub fn put_frame(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let len = u32::try_from(body.len().saturating_add(1)).unwrap_or(u32::MAX);
    put_u32(out, len);
    put_u8(out, kind);
    out.extend_from_slice(body);
}

/// A whole Hello frame.
pub fn encode_hello_frame(h: &Hello) -> Vec<u8> {
    let mut body = Vec::with_capacity(11 + h.cluster.len());
    put_u16(&mut body, h.version);
    put_u64(&mut body, h.from);
    // Longer names are cut (on a character boundary): keep them short.
    let mut cut = h.cluster.len().min(MAX_CLUSTER_NAME);
    while !h.cluster.is_char_boundary(cut) {
        cut -= 1;
    }
    let name = &h.cluster.as_bytes()[..cut];
    put_u8(&mut body, name.len() as u8);
    body.extend_from_slice(name);
    let mut out = Vec::with_capacity(5 + body.len());
    put_frame(&mut out, FRAME_HELLO, &body);
    out
}

/// A whole Raft message frame.
pub fn encode_message_frame(m: &Message) -> Vec<u8> {
    let body = encode_message(m);
    let mut out = Vec::with_capacity(5 + body.len());
    put_frame(&mut out, FRAME_RAFT, &body);
    out
}

fn decode_hello(body: &[u8]) -> Result<Hello, DecodeError> {
    let mut r = Reader::new(body);
    let version = r.u16()?;
    let from = r.u64()?;
    let len = r.u8()? as usize;
    let name = r.take(len)?;
    r.finish()?;
    let cluster = std::str::from_utf8(name)
        .map_err(|_| DecodeError::Invalid("cluster name is not UTF-8"))?
        .to_string();
    Ok(Hello {
        version,
        from,
        cluster,
    })
}

/// Interprets a raw frame as a peer frame.
pub fn decode_peer_frame(frame: &Frame) -> Result<PeerFrame, DecodeError> {
    match frame.kind {
        FRAME_HELLO => decode_hello(&frame.body).map(PeerFrame::Hello),
        FRAME_RAFT => decode_message(&frame.body).map(PeerFrame::Raft),
        tag => Err(DecodeError::UnknownTag { what: "frame", tag }),
    }
}

/// Splits a byte stream, fed in arbitrary chunks, into frames.
///
/// A frame's length is checked against the maximum as soon as its 4
/// header bytes are in, so an announced 4 GiB frame costs nothing. After
/// an error the decoder stays failed: close the connection.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of unconsumed data in `buf`.
    pos: usize,
    max: usize,
    error: Option<DecodeError>,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            max: max_frame,
            error: None,
        }
    }

    /// Adds bytes read from the socket; fails early on an oversized header.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
        self.check_header().map(|_| ())
    }

    /// The next complete frame, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let Some(len) = self.check_header()? else {
            return Ok(None);
        };
        let start = self.pos + 4;
        let Some(frame) = start
            .checked_add(len)
            .and_then(|end| self.buf.get(start..end))
        else {
            return Ok(None);
        };
        let kind = frame[0];
        let body = frame[1..].to_vec();
        self.pos = start + len;
        if self.pos >= self.buf.len() / 2 {
            // Compact once at least half the buffer is consumed.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        Ok(Some(Frame { kind, body }))
    }

    /// Bytes buffered towards the next frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The pending frame's length if its header is complete.
    fn check_header(&mut self) -> Result<Option<usize>, DecodeError> {
        let Some(header) = self.buf.get(self.pos..self.pos + 4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let err = if len == 0 {
            DecodeError::EmptyFrame
        } else if len > self.max {
            DecodeError::FrameTooLarge { len, max: self.max }
        } else {
            return Ok(Some(len));
        };
        self.error = Some(err.clone());
        self.buf = Vec::new();
        self.pos = 0;
        Err(err)
    }
}

/// A peer connection's inbound side: frames, decoded, Hello first.
#[derive(Debug)]
pub struct PeerStream {
    frames: FrameDecoder,
    greeted: bool,
}

impl PeerStream {
    pub fn new(max_frame: usize) -> PeerStream {
        PeerStream {
            frames: FrameDecoder::new(max_frame),
            greeted: false,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        self.frames.feed(bytes)
    }

    /// The next decoded frame; errors are final.
    pub fn next_frame(&mut self) -> Result<Option<PeerFrame>, DecodeError> {
        let Some(frame) = self.frames.next_frame()? else {
            return Ok(None);
        };
        let decoded = decode_peer_frame(&frame)?;
        match (&decoded, self.greeted) {
            (PeerFrame::Hello(_), false) => self.greeted = true,
            (PeerFrame::Hello(_), true) => return Err(DecodeError::UnexpectedHello),
            (_, false) => return Err(DecodeError::ExpectedHello),
            (_, true) => {}
        }
        Ok(Some(decoded))
    }
}

/// Decodes everything complete in `bytes` as one peer connection would:
/// a Hello, then Raft messages. A trailing partial frame is left pending
/// (not an error). This is the entry point for fuzzing the inbound path:
/// it must return, never panic, for any input, and allocates at most
/// about `bytes.len()` plus decoded structures.
pub fn decode_frame_stream(bytes: &[u8], max_frame: usize) -> Result<Vec<PeerFrame>, DecodeError> {
    let mut stream = PeerStream::new(max_frame);
    stream.feed(bytes)?;
    let mut out = Vec::new();
    while let Some(frame) = stream.next_frame()? {
        out.push(frame);
    }
    Ok(out)
}
