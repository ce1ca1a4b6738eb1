//! A small blocking client for the line protocol (the CLI and tests use it;
//! a short stall is harmless there).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::response::{parse_response_line, Record, ResponseLine};

/// A complete response: records (each possibly followed by a body) and the
/// final line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub records: Vec<Record>,
    pub bodies: Vec<Vec<u8>>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(Record),
    Err(i32, String),
}

impl Response {
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }
}

/// One connection to a line-protocol server.
pub struct Client<S: Read + Write> {
    reader: BufReader<S>,
}

impl Client<UnixStream> {
    /// Connect to a unix socket with a read/write timeout.
    pub fn connect_unix(path: &Path, timeout: Option<Duration>) -> io::Result<Self> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(timeout)?;
        s.set_write_timeout(timeout)?;
        Ok(Client::new(s))
    }
}

impl<S: Read + Write> Client<S> {
    pub fn new(stream: S) -> Self {
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// Send one request line (already formatted) and an optional body.
    pub fn send(&mut self, line: &str, body: Option<&[u8]>) -> io::Result<()> {
        let s = self.reader.get_mut();
        let mut buf = Vec::with_capacity(line.len() + 16 + body.map_or(0, <[u8]>::len));
        buf.extend_from_slice(line.as_bytes());
        if let Some(b) = body {
            buf.extend_from_slice(format!(" +{}", b.len()).as_bytes());
        }
        buf.push(b'\n');
        if let Some(b) = body {
            buf.extend_from_slice(b);
        }
        s.write_all(&buf)?;
        s.flush()
    }

    /// Read one response line; `None` at end of stream.
    pub fn read_line(&mut self) -> io::Result<Option<ResponseLine>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.strip_suffix('\n').unwrap_or(&line);
        parse_response_line(line)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    /// Read `len` body bytes.
    pub fn read_body(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body)?;
        Ok(body)
    }

    /// Read records and bodies until the final line.
    pub fn read_response(&mut self) -> io::Result<Response> {
        let mut records = Vec::new();
        let mut bodies = Vec::new();
        loop {
            match self.read_line()? {
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before the final line",
                    ))
                }
                Some(ResponseLine::Record(r)) => records.push(r),
                Some(ResponseLine::Body(n)) => bodies.push(self.read_body(n)?),
                Some(ResponseLine::Ok(r)) => {
                    return Ok(Response {
                        records,
                        bodies,
                        outcome: Outcome::Ok(r),
                    })
                }
                Some(ResponseLine::Err(c, m)) => {
                    return Ok(Response {
                        records,
                        bodies,
                        outcome: Outcome::Err(c, m),
                    })
                }
            }
        }
    }

    /// Send a request and read its whole response.
    pub fn call(&mut self, line: &str, body: Option<&[u8]>) -> io::Result<Response> {
        if let Err(e) = self.send(line, body) {
            // A server that refuses a connection (not allowed, too many)
            // answers `err` and closes, maybe before the request is
            // written: that answer, if it came, says more than EPIPE.
            // Only a refusal counts: the request was not read, so it
            // cannot have been carried out.
            return match self.read_response() {
                Ok(r) if matches!(r.outcome, Outcome::Err(..)) => Ok(r),
                _ => Err(e),
            };
        }
        self.read_response()
    }

    pub fn get_mut(&mut self) -> &mut S {
        self.reader.get_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_refusal_sent_before_the_request_is_the_answer_not_epipe() {
        let (client_end, mut server_end) = UnixStream::pair().unwrap();
        server_end
            .write_all(b"err 2 permission denied: the control socket is for root\n")
            .unwrap();
        drop(server_end);
        let mut c = Client::new(client_end);
        let r = c.call("status", Some(&[0u8; 300_000])).unwrap();
        assert_eq!(
            r.outcome,
            Outcome::Err(
                2,
                "permission denied: the control socket is for root".to_string()
            )
        );
        // Without an answer, the write's own error stands.
        let (client_end, server_end) = UnixStream::pair().unwrap();
        drop(server_end);
        let mut c = Client::new(client_end);
        let e = c.call("status", None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
