//! A blocking client for the journal's client port (the CLI, tests and
//! benchmarks use it; a short stall is harmless there).
//!
//! Writes follow `not-leader ... leader_addr=<addr>` redirects and retry
//! while no leader is known, but only when the server said the write was
//! not proposed. A write whose connection broke after it was sent, or that
//! the server answered `indeterminate`, is never retried: its outcome is
//! reported as unknown. Reads are retried on any failure until the deadline.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::proto::client::{Client, Outcome, Response};
use crate::proto::ExitCode;

/// A failed request: the CLI exit code and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub code: i32,
    pub message: String,
}

impl ClientError {
    fn new(code: ExitCode, message: impl Into<String>) -> ClientError {
        ClientError {
            code: code as i32,
            message: message.into(),
        }
    }

    /// The write may or may not have committed.
    pub fn is_indeterminate(&self) -> bool {
        self.message.starts_with("indeterminate")
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientError {}

/// Connections to a set of journal endpoints (`host:port`).
pub struct JournalClient {
    endpoints: Vec<String>,
    timeout: Duration,
    current: Option<(String, Client<TcpStream>)>,
    next_endpoint: usize,
    /// Set by [`JournalClient::bounded`]: no request goes past it.
    overall: Option<Instant>,
}

/// A new connection must answer `hello` within this before a request is
/// sent on it: a stopped (or hung) node accepts TCP connections but never
/// answers, and a write sent there would be left indeterminate.
pub const HELLO_WAIT: Duration = Duration::from_secs(2);

/// Connects to `addr` and checks that the node answers `hello` within
/// `timeout` (at most [`HELLO_WAIT`]). A timeout is the socket's own
/// error (WouldBlock or TimedOut): the caller says what it waited for.
pub fn connect_answering(addr: &str, timeout: Duration) -> io::Result<Client<TcpStream>> {
    let mut c = connect(addr, timeout)?;
    c.get_mut()
        .set_read_timeout(Some(timeout.min(HELLO_WAIT)))?;
    match c.call("hello", None) {
        Ok(r) if r.is_ok() => Ok(c),
        Ok(_) => Err(io::Error::other("refused hello")),
        Err(e) => Err(e),
    }
}

/// Where an `err` line sends us, if it is a redirect.
fn redirect_target(message: &str) -> Option<String> {
    message
        .split_whitespace()
        .find_map(|w| w.strip_prefix("leader_addr="))
        .map(str::to_string)
}

/// How long reads and writes keep trying when no endpoint accepts a
/// connection at all (a restart or an election is over well within it; a
/// journal that is down should not hold an admin for the whole timeout).
const UNREACHABLE_GRACE: Duration = Duration::from_secs(10);

/// How long one read attempt waits for its answer before the next
/// endpoint is tried: a little over the server's own request timeout
/// (default 5 s, after which it answers `err 5`), so a node that hangs
/// (stopped, partitioned half-open) does not hold a read for the whole
/// command timeout.
const READ_ATTEMPT: Duration = Duration::from_secs(6);

/// An I/O error as a person reads it: a socket timeout is not "resource
/// temporarily unavailable".
fn describe(e: &io::Error, waited: Duration) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no answer within {:.1} s", waited.as_secs_f64())
        }
        _ => e.to_string(),
    }
}

fn connect(addr: &str, timeout: Duration) -> io::Result<Client<TcpStream>> {
    let sa = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let s = TcpStream::connect_timeout(&sa, timeout.min(Duration::from_secs(5)))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(Client::new(s))
}

impl JournalClient {
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> JournalClient {
        JournalClient {
            endpoints,
            timeout,
            current: None,
            next_endpoint: 0,
            overall: None,
        }
    }

    /// One budget for everything this client does from now on: the
    /// timeout bounds a whole command, retries and several requests
    /// included (each request otherwise gets the whole timeout).
    pub fn bounded(self) -> JournalClient {
        let until = Instant::now() + self.timeout;
        self.bounded_until(until)
    }

    /// No request goes past `until` (several clients of one command).
    pub fn bounded_until(mut self, until: Instant) -> JournalClient {
        self.overall = Some(until);
        self
    }

    /// The deadline of a request starting now.
    fn deadline(&self) -> Instant {
        let own = Instant::now() + self.timeout;
        self.overall.map_or(own, |o| o.min(own))
    }

    /// Time left until `deadline` (at least a millisecond: a zero socket
    /// timeout would mean none).
    fn left(deadline: Instant) -> Duration {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    }

    /// Connects to `addr` and checks that the node answers.
    fn open(&self, addr: &str) -> io::Result<Client<TcpStream>> {
        let left = Self::left(self.deadline());
        connect_answering(addr, left)
            .map_err(|e| io::Error::new(e.kind(), describe(&e, left.min(HELLO_WAIT)) + " to hello"))
    }

    /// The endpoint of the current connection, if any.
    pub fn connected_to(&self) -> Option<&str> {
        self.current.as_ref().map(|(a, _)| a.as_str())
    }

    fn ensure_connected(&mut self, prefer: Option<String>) -> Result<(), ClientError> {
        if let Some(addr) = prefer {
            if self.current.as_ref().is_some_and(|(a, _)| *a == addr) {
                return Ok(());
            }
            self.current = None;
            let c = self.open(&addr).map_err(|e| {
                ClientError::new(
                    ExitCode::Unreachable,
                    format!("cannot reach the leader at {addr}: {e}"),
                )
            })?;
            self.current = Some((addr, c));
            return Ok(());
        }
        if self.current.is_some() {
            return Ok(());
        }
        let mut last = String::from("no endpoints given");
        for _ in 0..self.endpoints.len() {
            let addr = self.endpoints[self.next_endpoint % self.endpoints.len()].clone();
            self.next_endpoint += 1;
            match self.open(&addr) {
                Ok(c) => {
                    self.current = Some((addr, c));
                    return Ok(());
                }
                Err(e) => last = format!("cannot reach {addr}: {e}"),
            }
        }
        Err(ClientError::new(ExitCode::Unreachable, last))
    }

    /// One request on the current (or first reachable) endpoint, no retries.
    /// `Err` means the connection failed; the request may have been sent.
    pub fn call(&mut self, line: &str, body: Option<&[u8]>) -> Result<Response, ClientError> {
        self.call_within(line, body, Self::left(self.deadline()))
    }

    /// [`call`](Self::call) that waits at most `wait` for the answer.
    fn call_within(
        &mut self,
        line: &str,
        body: Option<&[u8]>,
        wait: Duration,
    ) -> Result<Response, ClientError> {
        self.ensure_connected(None)?;
        let Some((addr, c)) = self.current.as_mut() else {
            return Err(ClientError::new(ExitCode::Unreachable, "not connected"));
        };
        let _ = c.get_mut().set_read_timeout(Some(wait));
        match c.call(line, body) {
            Ok(r) => Ok(r),
            Err(e) => {
                let msg = format!("{addr}: {}", describe(&e, wait));
                self.current = None;
                Err(ClientError::new(ExitCode::Unreachable, msg))
            }
        }
    }

    /// A write: follows redirects and waits out elections; never resends
    /// a request whose fate is unknown.
    pub fn write(&mut self, line: &str, body: Option<&[u8]>) -> Result<Response, ClientError> {
        let deadline = self.deadline();
        let unreachable_deadline = deadline.min(Instant::now() + UNREACHABLE_GRACE);
        let mut prefer: Option<String> = None;
        loop {
            if let Err(e) = self.ensure_connected(prefer.take()) {
                if Instant::now() >= unreachable_deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let Some((addr, c)) = self.current.as_mut() else {
                continue;
            };
            let wait = Self::left(deadline);
            let _ = c.get_mut().set_read_timeout(Some(wait));
            let resp = match c.call(line, body) {
                Ok(r) => r,
                Err(e) => {
                    let e = describe(&e, wait);
                    let msg = format!(
                        "indeterminate: the connection to {addr} failed after the request was sent ({e}); it may have committed"
                    );
                    self.current = None;
                    return Err(ClientError::new(ExitCode::Unreachable, msg));
                }
            };
            match &resp.outcome {
                Outcome::Ok(_) => return Ok(resp),
                Outcome::Err(code, msg) => {
                    let retry = msg.starts_with("not-leader") || msg.starts_with("no-leader");
                    if !retry || Instant::now() >= deadline {
                        return Err(ClientError {
                            code: *code,
                            message: msg.clone(),
                        });
                    }
                    match redirect_target(msg) {
                        Some(t) => prefer = Some(t),
                        None => {
                            // No leader yet: ask around after a pause.
                            self.current = None;
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            }
        }
    }

    /// A read: retried on any failure until the deadline.
    pub fn read(&mut self, line: &str) -> Result<Response, ClientError> {
        let deadline = self.deadline();
        let unreachable_deadline = deadline.min(Instant::now() + UNREACHABLE_GRACE);
        loop {
            if let Err(e) = self.ensure_connected(None) {
                if Instant::now() >= unreachable_deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            // A node that does not answer is left for the next one.
            let wait = Self::left(deadline).min(READ_ATTEMPT);
            let err = match self.call_within(line, None, wait) {
                Ok(resp) => match &resp.outcome {
                    Outcome::Ok(_) => return Ok(resp),
                    Outcome::Err(code, msg) if *code == ExitCode::Unreachable as i32 => {
                        self.current = None;
                        ClientError {
                            code: *code,
                            message: msg.clone(),
                        }
                    }
                    Outcome::Err(code, msg) => {
                        return Err(ClientError {
                            code: *code,
                            message: msg.clone(),
                        })
                    }
                },
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(err);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Appends `data`; the journal sequence number it got.
    pub fn append(&mut self, data: &[u8]) -> Result<u64, ClientError> {
        let resp = self.write("append", Some(data))?;
        match &resp.outcome {
            Outcome::Ok(rec) => rec
                .get("seq")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ClientError::new(ExitCode::General, "ok without seq=")),
            Outcome::Err(c, m) => Err(ClientError {
                code: *c,
                message: m.clone(),
            }),
        }
    }

    /// The entry with sequence number `seq`.
    pub fn get(&mut self, seq: u64) -> Result<Vec<u8>, ClientError> {
        let resp = self.read(&format!("get {seq}"))?;
        resp.bodies
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::new(ExitCode::General, "get answered without a body"))
    }

    /// Entries `from..=to` (at most the server's `max_range`): `(seq, data)`.
    pub fn range(&mut self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, ClientError> {
        let resp = self.read(&format!("range {from} {to}"))?;
        let seqs = resp.records.iter().map(|r| {
            r.get("seq")
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX)
        });
        Ok(seqs.zip(resp.bodies).collect())
    }

    /// Every entry from 0 on, in pages.
    pub fn all(&mut self) -> Result<Vec<(u64, Vec<u8>)>, ClientError> {
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        loop {
            let from = out.len() as u64;
            let page = self.range(from, u64::MAX >> 1)?;
            if page.is_empty() {
                return Ok(out);
            }
            out.extend(page);
        }
    }

    /// The `status` records of the first node that answers (not
    /// redirected: a follower's view is what is asked for).
    pub fn status(&mut self) -> Result<Response, ClientError> {
        let wait = Self::left(self.deadline()).min(READ_ATTEMPT);
        let mut tries = self.endpoints.len().max(1);
        let resp = loop {
            match self.call_within("status", None, wait) {
                Ok(r) => break r,
                Err(e) if tries > 1 => {
                    tries -= 1;
                    log::debug!(target: "journal::client", "{e}; trying the next endpoint");
                }
                Err(e) => return Err(e),
            }
        };
        match &resp.outcome {
            Outcome::Ok(_) => Ok(resp),
            Outcome::Err(c, m) => Err(ClientError {
                code: *c,
                message: m.clone(),
            }),
        }
    }
}
