//! Health probes on the event loop: a non-blocking TCP connect, and for
//! HTTP a `GET` whose status line must be 2xx. Nothing here blocks; the
//! loop feeds socket readiness and the probe's deadline.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::services::{HealthKind, HealthSpec};

/// Most bytes read while looking for the status line.
const MAX_RESPONSE_HEAD: usize = 1024;

pub struct Probe {
    pub service: String,
    pub stream: mio::net::TcpStream,
    pub deadline: Instant,
    timeout: Duration,
    request: Option<Vec<u8>>,
    written: usize,
    connected: bool,
    head: Vec<u8>,
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Done(bool, String),
}

impl Probe {
    /// Start connecting; an immediate failure is an outcome, not an error.
    pub fn start(service: &str, spec: &HealthSpec, now: Instant) -> Result<Probe, String> {
        let addr: SocketAddr = spec
            .addr
            .as_deref()
            .ok_or("no address to probe")?
            .parse()
            .map_err(|e| format!("bad address: {e}"))?;
        let stream =
            mio::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        let request = (spec.kind == HealthKind::Http).then(|| {
            format!(
                "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: pact-agent\r\nConnection: close\r\n\r\n",
                spec.http_path, spec.http_host
            )
            .into_bytes()
        });
        Ok(Probe {
            service: service.to_string(),
            stream,
            deadline: now + spec.timeout,
            timeout: spec.timeout,
            request,
            written: 0,
            connected: false,
            head: Vec::new(),
        })
    }

    /// The socket is ready: make progress.
    pub fn on_ready(&mut self) -> Outcome {
        if !self.connected {
            match self.stream.take_error() {
                Ok(Some(e)) | Err(e) => return Outcome::Done(false, format!("connect: {e}")),
                Ok(None) => {}
            }
            match self.stream.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Outcome::Pending,
                Err(e) => return Outcome::Done(false, format!("connect: {e}")),
            }
            if self.request.is_none() {
                return Outcome::Done(true, "tcp connect ok".to_string());
            }
        }
        if let Some(req) = &self.request {
            while self.written < req.len() {
                match self.stream.write(&req[self.written..]) {
                    Ok(0) => return Outcome::Done(false, "connection closed while sending".into()),
                    Ok(n) => self.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Pending,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Outcome::Done(false, format!("send: {e}")),
                }
            }
        }
        let mut buf = [0u8; 512];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return judge(&self.head, true),
                Ok(n) => {
                    self.head.extend_from_slice(&buf[..n]);
                    if let Outcome::Done(ok, why) = judge(&self.head, false) {
                        return Outcome::Done(ok, why);
                    }
                    if self.head.len() > MAX_RESPONSE_HEAD {
                        return Outcome::Done(false, "no HTTP status line".into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Outcome::Done(false, format!("receive: {e}")),
            }
        }
    }

    pub fn timed_out(&self) -> Outcome {
        Outcome::Done(
            false,
            format!("no answer within {:.1}s", self.timeout.as_secs_f64()),
        )
    }
}

fn judge(head: &[u8], eof: bool) -> Outcome {
    match parse_status_line(head) {
        Some(code) if (200..300).contains(&code) => Outcome::Done(true, format!("http {code}")),
        Some(code) => Outcome::Done(false, format!("http {code}")),
        None if eof => Outcome::Done(false, "connection closed without an HTTP status".into()),
        None => Outcome::Pending,
    }
}

/// The status code of `HTTP/1.x NNN ...` once the first line is complete.
pub fn parse_status_line(head: &[u8]) -> Option<u16> {
    let end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = line.split_ascii_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503 Busy\r\nx"), Some(503));
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), None);
        assert_eq!(parse_status_line(b"SSH-2.0\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20000\n"), None);
    }
}
