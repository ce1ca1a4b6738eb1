//! Boot config streaming and subscriptions over the line protocol.
//!
//! The agent asks, naming itself and what it already has:
//!
//! ```text
//! boot node=n042 vcluster=ml-training version=41 node_version=0 from=57
//! ```
//!
//! The journal answers with what changed (nothing, when versions match),
//! then keeps the connection as the node's subscription and heartbeat:
//!
//! ```text
//! overlay vcluster=ml-training version=42 checksum=<sha256> size=151234 encoding=zstd chunks=3
//! body +65536 / <bytes> ... (the zstd-compressed canonical TOML, cut in chunks)
//! delta node=n042 version=57 checksum=<sha256> size=312
//! body +312 / <the node's committed delta, as overlay TOML>
//! complete base_version=42 node_version=57 seq=60
//! change seq=61 kind=vcluster scope=ml-training      (later, live)
//! overlay ... / delta ...                             (what that change altered)
//! hb=1795440495123                                    (every few seconds)
//! ```
//!
//! `delta node=.. version=0` without a body means the node has no delta
//! (any earlier one was rolled back or promoted). An `err <code> <msg>`
//! line ends the stream (for instance the journal's limit of concurrent
//! boot streams: `err 5 retry later ...`).
//!
//! [`BootDecoder`] is the agent's side: bytes in, [`BootEvent`]s out, every
//! size bounded before anything is buffered.

use super::response::{parse_response_line, Record, ResponseLine};
use super::ProtoError;

/// Chunk size of overlay bodies.
pub const CHUNK: usize = 64 * 1024;
/// Largest overlay the decoder accepts, compressed and uncompressed (the
/// digest caps overlays at 10 MB).
pub const MAX_OVERLAY: usize = 16 * 1024 * 1024;
/// Largest node delta.
pub const MAX_DELTA: usize = 1024 * 1024;
/// Longest line of the stream.
const MAX_LINE: usize = 4096;

/// What the agent asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRequest {
    pub node: String,
    pub vcluster: String,
    /// Overlay version the agent has (0: none).
    pub version: u64,
    /// Delta version the agent has (0: none).
    pub node_version: u64,
    /// Last journal sequence the agent saw.
    pub from: u64,
}

impl BootRequest {
    pub fn to_line(&self) -> String {
        super::format_request(&[
            "boot",
            &format!("node={}", self.node),
            &format!("vcluster={}", self.vcluster),
            &format!("version={}", self.version),
            &format!("node_version={}", self.node_version),
            &format!("from={}", self.from),
        ])
    }

    /// From a parsed request (`boot key=value ...`).
    pub fn from_request(req: &super::Request) -> Result<BootRequest, String> {
        let num = |k: &str| -> Result<u64, String> {
            match req.option(k) {
                None => Ok(0),
                Some(v) => v
                    .parse()
                    .map_err(|_| format!("{k}=\"{v}\" is not a number")),
            }
        };
        let node = req
            .option("node")
            .filter(|n| !n.is_empty())
            .ok_or("boot needs node=<id>")?;
        let vcluster = req.option("vcluster").unwrap_or("");
        Ok(BootRequest {
            node: node.to_string(),
            vcluster: vcluster.to_string(),
            version: num("version")?,
            node_version: num("node_version")?,
            from: num("from")?,
        })
    }
}

/// The overlay of a stream, assembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayBlob {
    pub vcluster: String,
    pub version: u64,
    pub checksum: String,
    pub size: usize,
    pub encoding: String,
    /// The compressed bytes, chunks joined.
    pub data: Vec<u8>,
}

/// A node delta of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaBlob {
    pub node: String,
    pub version: u64,
    pub checksum: String,
    /// Overlay TOML; empty when the node has no delta.
    pub text: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootEvent {
    Overlay(OverlayBlob),
    Delta(DeltaBlob),
    Complete {
        base_version: u64,
        node_version: u64,
        seq: u64,
    },
    Change {
        seq: u64,
        kind: String,
        scope: String,
    },
    Heartbeat(u64),
    /// The stream ended with `err`.
    Error {
        code: i32,
        message: String,
    },
}

#[derive(Debug)]
enum Pending {
    Line,
    OverlayChunks {
        head: OverlayBlob,
        left: usize,
    },
    OverlayBody {
        head: OverlayBlob,
        left: usize,
        body: usize,
    },
    DeltaBody {
        head: DeltaBlob,
        len: usize,
    },
    DeltaExpectBody {
        head: DeltaBlob,
    },
}

/// Incremental decoder of a boot stream.
#[derive(Debug)]
pub struct BootDecoder {
    buf: Vec<u8>,
    state: Pending,
}

impl Default for BootDecoder {
    fn default() -> Self {
        BootDecoder {
            buf: Vec::new(),
            state: Pending::Line,
        }
    }
}

fn num(r: &Record, k: &str) -> Result<u64, ProtoError> {
    r.get(k)
        .ok_or(ProtoError::BadQuoting("a boot record lacks a field"))?
        .parse()
        .map_err(|_| ProtoError::BadLength(k.to_string()))
}

impl BootDecoder {
    /// Feed bytes; returns the events they complete, or an error when the
    /// stream is malformed (the connection must then be dropped).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<BootEvent>, ProtoError> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let needs_line = matches!(
                self.state,
                Pending::Line | Pending::OverlayChunks { .. } | Pending::DeltaExpectBody { .. }
            );
            if needs_line && !self.buf.contains(&b'\n') {
                if self.buf.len() > MAX_LINE {
                    return Err(ProtoError::LineTooLong { max: MAX_LINE });
                }
                return Ok(out);
            }
            match std::mem::replace(&mut self.state, Pending::Line) {
                Pending::Line => {
                    let line = self.take_line()?;
                    self.on_line(&line, &mut out)?;
                }
                Pending::OverlayChunks { head, left } => {
                    let line = self.take_line()?;
                    match parse_response_line(&line)? {
                        ResponseLine::Body(n)
                            if n > 0 && n <= CHUNK * 2 && head.data.len() + n <= MAX_OVERLAY =>
                        {
                            self.state = Pending::OverlayBody {
                                head,
                                left,
                                body: n,
                            };
                        }
                        _ => return Err(ProtoError::BadQuoting("expected an overlay chunk body")),
                    }
                }
                Pending::OverlayBody {
                    mut head,
                    left,
                    body,
                } => {
                    if self.buf.len() < body {
                        self.state = Pending::OverlayBody { head, left, body };
                        return Ok(out);
                    }
                    head.data.extend(self.buf.drain(..body));
                    if left <= 1 {
                        out.push(BootEvent::Overlay(head));
                    } else {
                        self.state = Pending::OverlayChunks {
                            head,
                            left: left - 1,
                        };
                    }
                }
                Pending::DeltaExpectBody { head } => {
                    let line = self.take_line()?;
                    match parse_response_line(&line)? {
                        ResponseLine::Body(n) if n <= MAX_DELTA => {
                            self.state = Pending::DeltaBody { head, len: n }
                        }
                        _ => return Err(ProtoError::BadQuoting("expected a delta body")),
                    }
                }
                Pending::DeltaBody { mut head, len } => {
                    if self.buf.len() < len {
                        self.state = Pending::DeltaBody { head, len };
                        return Ok(out);
                    }
                    head.text = self.buf.drain(..len).collect();
                    out.push(BootEvent::Delta(head));
                }
            }
        }
    }

    fn take_line(&mut self) -> Result<String, ProtoError> {
        let nl = self.buf.iter().position(|&b| b == b'\n').expect("checked");
        if nl > MAX_LINE {
            return Err(ProtoError::LineTooLong { max: MAX_LINE });
        }
        let line: Vec<u8> = self.buf.drain(..=nl).collect();
        String::from_utf8(line[..nl].to_vec()).map_err(|_| ProtoError::NotUtf8)
    }

    fn on_line(&mut self, line: &str, out: &mut Vec<BootEvent>) -> Result<(), ProtoError> {
        match parse_response_line(line)? {
            ResponseLine::Err(code, message) => out.push(BootEvent::Error { code, message }),
            ResponseLine::Record(r) => {
                let kind = r.fields.first().map(|(k, _)| k.as_str()).unwrap_or("");
                match kind {
                    "overlay" => {
                        let chunks = num(&r, "chunks")? as usize;
                        let size = num(&r, "size")? as usize;
                        if size > MAX_OVERLAY || chunks == 0 || chunks > MAX_OVERLAY / CHUNK + 1 {
                            return Err(ProtoError::BodyTooLarge {
                                len: size,
                                max: MAX_OVERLAY,
                            });
                        }
                        let head = OverlayBlob {
                            vcluster: r.get("vcluster").unwrap_or("").to_string(),
                            version: num(&r, "version")?,
                            checksum: r.get("checksum").unwrap_or("").to_string(),
                            size,
                            encoding: r.get("encoding").unwrap_or("identity").to_string(),
                            data: Vec::new(),
                        };
                        self.state = Pending::OverlayChunks { head, left: chunks };
                    }
                    "delta" => {
                        let head = DeltaBlob {
                            node: r.get("node").unwrap_or("").to_string(),
                            version: num(&r, "version")?,
                            checksum: r.get("checksum").unwrap_or("").to_string(),
                            text: Vec::new(),
                        };
                        if head.version == 0 {
                            out.push(BootEvent::Delta(head));
                        } else {
                            self.state = Pending::DeltaExpectBody { head };
                        }
                    }
                    "complete" => out.push(BootEvent::Complete {
                        base_version: num(&r, "base_version")?,
                        node_version: num(&r, "node_version")?,
                        seq: num(&r, "seq")?,
                    }),
                    "change" => out.push(BootEvent::Change {
                        seq: num(&r, "seq")?,
                        kind: r.get("kind").unwrap_or("").to_string(),
                        scope: r.get("scope").unwrap_or("").to_string(),
                    }),
                    "hb" => out.push(BootEvent::Heartbeat(num(&r, "hb")?)),
                    _ => {} // unknown records are ignored (forward compatible)
                }
            }
            // A body with nothing announced, or a final ok: not a boot stream.
            ResponseLine::Body(_) => return Err(ProtoError::BadQuoting("unexpected body")),
            ResponseLine::Ok(_) => {}
        }
        Ok(())
    }
}

/// The server's side: the lines and bodies of an overlay, cut in chunks.
pub fn encode_overlay(
    vcluster: &str,
    version: u64,
    checksum: &str,
    size: usize,
    compressed: &[u8],
) -> Vec<u8> {
    let chunks: Vec<&[u8]> = compressed.chunks(CHUNK).collect();
    let mut out = Record::new()
        .field("overlay", "")
        .field("vcluster", vcluster)
        .field("version", version)
        .field("checksum", checksum)
        .field("size", size)
        .field("encoding", "zstd")
        .field("chunks", chunks.len().max(1))
        .to_line()
        .into_bytes();
    out.push(b'\n');
    if chunks.is_empty() {
        out.extend_from_slice(b"body +0\n");
    }
    for c in chunks {
        out.extend_from_slice(format!("body +{}\n", c.len()).as_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// The server's side: a node delta (empty `text` and version 0: none).
pub fn encode_delta(node: &str, version: u64, checksum: &str, text: &[u8]) -> Vec<u8> {
    let mut out = Record::new()
        .field("delta", "")
        .field("node", node)
        .field("version", version)
        .field("checksum", checksum)
        .field("size", text.len())
        .to_line()
        .into_bytes();
    out.push(b'\n');
    if version != 0 {
        out.extend_from_slice(format!("body +{}\n", text.len()).as_bytes());
        out.extend_from_slice(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        s.extend(encode_overlay("ml", 42, "abc", 200_000, &data));
        s.extend(encode_delta(
            "n1",
            57,
            "def",
            b"[vcluster.ml.sysctl]\n\"vm.x\" = \"1\"\n",
        ));
        s.extend(b"complete base_version=42 node_version=57 seq=60\n");
        s.extend(b"hb=123\nchange seq=61 kind=vcluster scope=ml\n");
        s.extend(encode_delta("n1", 0, "", b""));
        s
    }

    #[test]
    fn decodes_in_any_chunking() {
        let bytes = stream();
        for step in [1, 7, 100, 4096, 70_000, bytes.len()] {
            let mut d = BootDecoder::default();
            let mut events = Vec::new();
            for c in bytes.chunks(step) {
                events.extend(d.feed(c).unwrap());
            }
            assert_eq!(events.len(), 6, "step {step}: {events:?}");
            match &events[0] {
                BootEvent::Overlay(o) => {
                    assert_eq!((o.version, o.size, o.data.len()), (42, 200_000, 150_000));
                    assert_eq!(o.data[1000], (1000 % 251) as u8);
                }
                e => panic!("{e:?}"),
            }
            assert!(
                matches!(&events[1], BootEvent::Delta(d) if d.version == 57 && d.text.starts_with(b"[vcluster"))
            );
            assert_eq!(
                events[2],
                BootEvent::Complete {
                    base_version: 42,
                    node_version: 57,
                    seq: 60
                }
            );
            assert_eq!(events[3], BootEvent::Heartbeat(123));
            assert!(matches!(&events[4], BootEvent::Change { seq: 61, .. }));
            assert!(
                matches!(&events[5], BootEvent::Delta(d) if d.version == 0 && d.text.is_empty())
            );
        }
    }

    #[test]
    fn limits_and_garbage() {
        let mut d = BootDecoder::default();
        assert!(d
            .feed(
                b"overlay vcluster=x version=1 checksum=c size=999999999 encoding=zstd chunks=1\n"
            )
            .is_err());
        let mut d = BootDecoder::default();
        assert!(d
            .feed(b"overlay vcluster=x version=1 checksum=c size=10 chunks=1\nbody +99999999\n")
            .is_err());
        let mut d = BootDecoder::default();
        assert!(d.feed(&[b'x'; MAX_LINE + 10]).is_err());
        let mut d = BootDecoder::default();
        assert!(d.feed(b"body +5\nhello").is_err());
        let mut d = BootDecoder::default();
        assert_eq!(
            d.feed(b"err 5 retry later: 15000 boot streams\n").unwrap(),
            [BootEvent::Error {
                code: 5,
                message: "retry later: 15000 boot streams".into()
            }]
        );
    }

    #[test]
    fn request_round_trip() {
        let r = BootRequest {
            node: "n1".into(),
            vcluster: "ml".into(),
            version: 3,
            node_version: 0,
            from: 9,
        };
        let parsed =
            super::super::parse_line(r.to_line().as_bytes(), &super::super::Limits::default())
                .unwrap();
        assert_eq!(BootRequest::from_request(&parsed).unwrap(), r);
    }
}
