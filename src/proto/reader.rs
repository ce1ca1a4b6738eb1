//! Incremental request reader for one connection: bytes in, requests out.
//!
//! It never buffers more than one line plus one announced body, both bounded
//! by [`Limits`]; a body length over the limit is refused before any of it
//! is read.

use super::request::{parse_line, Request};
use super::{Limits, ProtoError};

#[derive(Debug)]
pub struct LineReader {
    limits: Limits,
    buf: Vec<u8>,
    /// A request whose body is still being read.
    pending: Option<Request>,
    /// Bytes still to drop: the body of a request refused for its size.
    /// The body is skipped, not read as requests, so framing holds and the
    /// connection goes on after the `err` answer.
    skip: usize,
}

impl LineReader {
    pub fn new(limits: Limits) -> LineReader {
        LineReader {
            limits,
            buf: Vec::new(),
            pending: None,
            skip: 0,
        }
    }

    /// Append bytes read from the socket.
    ///
    /// Fails once the buffered, unparsed data can no longer be a valid
    /// request (a line longer than the limit with no newline yet).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ProtoError> {
        let dropped = self.skip.min(bytes.len());
        self.skip -= dropped;
        self.buf.extend_from_slice(&bytes[dropped..]);
        if self.pending.is_none()
            && self.buf.len() > self.limits.max_line
            && !self.buf[..=self.limits.max_line].contains(&b'\n')
        {
            return Err(ProtoError::LineTooLong {
                max: self.limits.max_line,
            });
        }
        Ok(())
    }

    /// Reads all a non-blocking `stream` has now, through `buf`.
    ///
    /// Returns whether the stream ended (or failed), and the framing error
    /// that stopped reading, if any. With `discard` (framing already lost)
    /// the bytes are read and dropped, so the peer's close is still seen.
    pub fn read_from<R: std::io::Read + ?Sized>(
        &mut self,
        stream: &mut R,
        buf: &mut [u8],
        discard: bool,
    ) -> (bool, Option<ProtoError>) {
        use std::io::ErrorKind;
        loop {
            match stream.read(buf) {
                Ok(0) => return (true, None),
                Ok(_) if discard => {}
                Ok(n) => {
                    if let Err(e) = self.feed(&buf[..n]) {
                        return (false, Some(e));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return (false, None),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return (true, None),
            }
        }
    }

    /// The next complete request, if one is buffered.
    ///
    /// An error concerns one request only when it is a parse error of a
    /// complete line (the caller may answer `err` and go on); a
    /// `LineTooLong` from [`feed`](Self::feed) means the connection has lost
    /// framing and must be closed.
    pub fn next_request(&mut self) -> Result<Option<Request>, ProtoError> {
        if let Some(mut req) = self.pending.take() {
            let need = req.body_len.unwrap_or(0);
            if self.buf.len() < need {
                self.pending = Some(req);
                return Ok(None);
            }
            req.body = self.buf.drain(..need).collect();
            return Ok(Some(req));
        }
        let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line: Vec<u8> = self.buf.drain(..=nl).collect();
        let req = match parse_line(&line[..nl], &self.limits) {
            Ok(r) => r,
            Err(e) => {
                if let ProtoError::BodyTooLarge { len, .. } = e {
                    // Refused before reading: what follows is its body.
                    let now = len.min(self.buf.len());
                    self.buf.drain(..now);
                    self.skip = len - now;
                }
                return Err(e);
            }
        };
        if req.body_len.unwrap_or(0) > 0 {
            self.pending = Some(req);
            return self.next_request();
        }
        Ok(Some(req))
    }

    /// True when nothing is buffered (a clean end of stream).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.pending.is_none() && self.skip == 0
    }

    /// At the client's end of stream, once every whole request is taken:
    /// the error for what is left, a request the end cut off (it is not
    /// run; the client is told so).
    /// The rest of a refused body that never came is not one: that
    /// request has had its answer.
    pub fn cut_off(&self) -> Option<ProtoError> {
        let unfinished = !self.buf.is_empty() || self.pending.is_some();
        (unfinished && !self.has_request()).then_some(ProtoError::CutOff)
    }

    /// Whether [`next_request`](Self::next_request) has something to give
    /// now (a request or a parse error). Buffered input without one is an
    /// unfinished line or body, which no end of stream can complete.
    pub fn has_request(&self) -> bool {
        match &self.pending {
            Some(req) => self.buf.len() >= req.body_len.unwrap_or(0),
            None => self.buf.contains(&b'\n'),
        }
    }
}

/// Feed `bytes` in one go and collect every request or the first error;
/// the entry point of the fuzz target.
pub fn parse_stream(bytes: &[u8], limits: Limits) -> Vec<Result<Request, ProtoError>> {
    let mut reader = LineReader::new(limits);
    let mut out = Vec::new();
    if let Err(e) = reader.feed(bytes) {
        out.push(Err(e));
        return out;
    }
    loop {
        match reader.next_request() {
            Ok(Some(r)) => out.push(Ok(r)),
            Ok(None) => return out,
            Err(e) => out.push(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_from_a_stream_until_its_end_or_lost_framing() {
        let mut buf = [0u8; 4];
        let mut r = LineReader::new(Limits::default());
        let mut s = std::io::Cursor::new(b"status\nlog a\n".to_vec());
        assert_eq!(r.read_from(&mut s, &mut buf, false), (true, None));
        assert_eq!(r.next_request().unwrap().unwrap().words, ["status"]);
        assert_eq!(r.next_request().unwrap().unwrap().words, ["log", "a"]);
        let limits = Limits {
            max_line: 8,
            ..Limits::default()
        };
        let mut r = LineReader::new(limits);
        let mut s = std::io::Cursor::new(vec![b'x'; 64]);
        let (eof, err) = r.read_from(&mut s, &mut buf, false);
        assert!(!eof && matches!(err, Some(ProtoError::LineTooLong { max: 8 })));
        // Discarding: everything is read, nothing kept, the end is seen.
        assert_eq!(r.read_from(&mut s, &mut buf, true), (true, None));
    }

    #[test]
    fn lines_split_across_reads() {
        let mut r = LineReader::new(Limits::default());
        r.feed(b"sta").unwrap();
        assert_eq!(r.next_request().unwrap(), None);
        r.feed(b"tus\nservice status a\n").unwrap();
        assert_eq!(r.next_request().unwrap().unwrap().words, ["status"]);
        assert_eq!(
            r.next_request().unwrap().unwrap().words,
            ["service", "status", "a"]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn body_read_exactly() {
        let mut r = LineReader::new(Limits::default());
        r.feed(b"apply +5\nhel").unwrap();
        assert_eq!(r.next_request().unwrap(), None);
        r.feed(b"lo\nstatus\n").unwrap();
        let req = r.next_request().unwrap().unwrap();
        assert_eq!(req.body, b"hello");
        // The newline after the body starts an empty line, which is an error
        // for that line only; the next request still parses.
        assert_eq!(r.next_request(), Err(ProtoError::Empty));
        assert_eq!(r.next_request().unwrap().unwrap().words, ["status"]);
    }

    #[test]
    fn overlong_line_without_newline_fails_early() {
        let limits = Limits {
            max_line: 16,
            ..Limits::default()
        };
        let mut r = LineReader::new(limits);
        assert_eq!(
            r.feed(&[b'a'; 40]),
            Err(ProtoError::LineTooLong { max: 16 })
        );
    }

    #[test]
    fn oversized_body_refused_before_reading() {
        let limits = Limits {
            max_body: 4,
            ..Limits::default()
        };
        let out = parse_stream(b"apply +5\n12345", limits);
        assert_eq!(out[0], Err(ProtoError::BodyTooLarge { len: 5, max: 4 }));
    }

    #[test]
    fn an_oversized_body_is_skipped_not_run_as_requests() {
        let limits = Limits {
            max_body: 4,
            ..Limits::default()
        };
        // All at once: the refused body holds a request line; it is dropped.
        let out = parse_stream(b"append +12\nappend +1\nX\nstatus\n", limits);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], Err(ProtoError::BodyTooLarge { len: 12, max: 4 }));
        assert_eq!(out[1].as_ref().unwrap().words, ["status"]);
        // In pieces: the rest of the body arrives after the refusal.
        let mut r = LineReader::new(limits);
        r.feed(b"append +10\nabc").unwrap();
        assert!(r.has_request());
        assert!(matches!(
            r.next_request(),
            Err(ProtoError::BodyTooLarge { .. })
        ));
        assert!(!r.has_request() && !r.is_empty());
        // Were the stream to end here, that request had its answer.
        assert_eq!(r.cut_off(), None);
        r.feed(b"defg\nh").unwrap();
        assert_eq!(r.next_request().unwrap(), None);
        r.feed(b"i").unwrap();
        assert!(r.is_empty());
        r.feed(b"get 1\n").unwrap();
        assert_eq!(r.next_request().unwrap().unwrap().words, ["get", "1"]);
    }

    #[test]
    fn an_unfinished_request_is_told_apart_from_a_complete_one() {
        let mut r = LineReader::new(Limits::default());
        r.feed(b"get 0\nxx").unwrap();
        assert!(r.has_request());
        r.next_request().unwrap().unwrap();
        assert!(!r.has_request() && !r.is_empty());
        assert_eq!(r.cut_off(), Some(ProtoError::CutOff));
        let mut r = LineReader::new(Limits::default());
        r.feed(b"append +5\nabc").unwrap();
        assert_eq!(r.next_request().unwrap(), None);
        assert!(!r.has_request());
        r.feed(b"de").unwrap();
        assert!(r.has_request());
    }
}
