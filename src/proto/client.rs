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
        self.send(line, body)?;
        self.read_response()
    }

    pub fn get_mut(&mut self) -> &mut S {
        self.reader.get_mut()
    }
}
