//! The agent's link to the journal: boot config, then the subscription
//! that keeps it current and doubles as the node's heartbeat.
//!
//! A small state machine on the agent's loop: `Idle` (waiting out a
//! backoff) → `Resolving` (names resolved on a worker thread, never on the
//! loop) → `Connecting` → `Streaming`. Any error, or silence longer than
//! [`SILENCE`], drops the connection and backs off 1, 2, 4 … 60 s; a
//! completed boot stream resets the backoff.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::proto::boot::{BootDecoder, BootEvent, BootRequest};

/// No byte from the journal for this long: the link is dead (the journal
/// sends a heartbeat every few seconds).
pub const SILENCE: Duration = Duration::from_secs(20);
/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

enum State {
    Idle {
        until: Instant,
    },
    Resolving {
        rx: Receiver<io::Result<Vec<SocketAddr>>>,
        deadline: Instant,
    },
    Connecting {
        stream: TcpStream,
        deadline: Instant,
    },
    Streaming {
        stream: TcpStream,
        decoder: BootDecoder,
        out: Vec<u8>,
        last_heard: Instant,
    },
}

pub struct JournalLink {
    endpoints: Vec<String>,
    next_endpoint: usize,
    state: State,
    backoff: Duration,
    token: Token,
    waker: Arc<mio::Waker>,
    /// What the next `boot` request says the agent has.
    pub request: BootRequest,
    pub connected_to: Option<String>,
    pub attempts: u64,
}

impl JournalLink {
    pub fn new(
        endpoints: Vec<String>,
        request: BootRequest,
        token: Token,
        waker: Arc<mio::Waker>,
        now: Instant,
    ) -> JournalLink {
        JournalLink {
            endpoints,
            next_endpoint: 0,
            state: State::Idle { until: now },
            backoff: FIRST_BACKOFF,
            token,
            waker,
            request,
            connected_to: None,
            attempts: 0,
        }
    }

    pub fn token(&self) -> Token {
        self.token
    }

    pub fn is_streaming(&self) -> bool {
        matches!(self.state, State::Streaming { .. })
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Idle { until } => Some(*until),
            State::Resolving { deadline, .. } | State::Connecting { deadline, .. } => {
                Some(*deadline)
            }
            State::Streaming { last_heard, .. } => Some(*last_heard + SILENCE),
        }
    }

    fn endpoint(&self) -> String {
        self.endpoints[self.next_endpoint % self.endpoints.len()].clone()
    }

    /// Timers, and the resolver's answer (through the waker).
    pub fn on_timer(&mut self, registry: &Registry, now: Instant) {
        match &mut self.state {
            State::Idle { until } if *until <= now => self.start_resolving(now),
            State::Resolving { rx, deadline } => match rx.try_recv() {
                Ok(Ok(addrs)) => self.connect(registry, addrs, now),
                Ok(Err(e)) => {
                    self.fail(registry, now, &format!("resolve {}: {e}", self.endpoint()))
                }
                Err(_) if now >= *deadline => self.fail(
                    registry,
                    now,
                    &format!("resolve {}: timed out", self.endpoint()),
                ),
                Err(_) => {}
            },
            State::Connecting { deadline, .. } if now >= *deadline => self.fail(
                registry,
                now,
                &format!("connect {}: timed out", self.endpoint()),
            ),
            State::Streaming { last_heard, .. } if now >= *last_heard + SILENCE => self.fail(
                registry,
                now,
                &format!(
                    "no word from {} for {}s",
                    self.endpoint(),
                    SILENCE.as_secs()
                ),
            ),
            _ => {}
        }
    }

    fn start_resolving(&mut self, now: Instant) {
        self.attempts += 1;
        let endpoint = self.endpoint();
        let (tx, rx) = channel();
        let waker = self.waker.clone();
        if let Ok(addr) = endpoint.parse::<SocketAddr>() {
            let _ = tx.send(Ok(vec![addr]));
            let _ = waker.wake();
        } else {
            let spawned = std::thread::Builder::new()
                .name("pact-resolve".into())
                .spawn(move || {
                    let r = endpoint.to_socket_addrs().map(Iterator::collect);
                    let _ = tx.send(r);
                    let _ = waker.wake();
                });
            if let Err(e) = spawned {
                log::warn!(target: "agent::journal", "cannot start a resolver thread: {e}");
            }
        }
        self.state = State::Resolving {
            rx,
            deadline: now + CONNECT_TIMEOUT,
        };
    }

    fn connect(&mut self, registry: &Registry, addrs: Vec<SocketAddr>, now: Instant) {
        let Some(addr) = addrs.first().copied() else {
            return self.fail(registry, now, &format!("{}: no address", self.endpoint()));
        };
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                if let Err(e) = registry.register(
                    &mut stream,
                    self.token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    return self.fail(registry, now, &format!("register: {e}"));
                }
                self.state = State::Connecting {
                    stream,
                    deadline: now + CONNECT_TIMEOUT,
                };
            }
            Err(e) => self.fail(registry, now, &format!("connect {addr}: {e}")),
        }
    }

    /// Socket readiness; returns the events the stream delivered.
    pub fn on_ready(&mut self, registry: &Registry, now: Instant) -> Vec<BootEvent> {
        if let State::Connecting { stream, .. } = &mut self.state {
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    let why = format!("connect {}: {e}", self.endpoint());
                    self.fail(registry, now, &why);
                    return vec![];
                }
                Ok(None) => {}
            }
            if let Err(e) = stream.peer_addr() {
                if e.kind() == io::ErrorKind::NotConnected {
                    return vec![];
                }
                let why = format!("connect {}: {e}", self.endpoint());
                self.fail(registry, now, &why);
                return vec![];
            }
            let State::Connecting { stream, .. } =
                std::mem::replace(&mut self.state, State::Idle { until: now })
            else {
                unreachable!()
            };
            let mut line = self.request.to_line().into_bytes();
            line.push(b'\n');
            log::info!(target: "agent::journal", "connected to {}; asking for boot config ({})", self.endpoint(), self.request.to_line());
            self.connected_to = Some(self.endpoint());
            self.state = State::Streaming {
                stream,
                decoder: BootDecoder::default(),
                out: line,
                last_heard: now,
            };
        }
        let mut events = Vec::new();
        let mut error = None;
        if let State::Streaming {
            stream,
            decoder,
            out,
            last_heard,
        } = &mut self.state
        {
            while !out.is_empty() {
                match stream.write(out) {
                    Ok(0) => {
                        error = Some("connection closed".to_string());
                        break;
                    }
                    Ok(n) => {
                        out.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            let mut buf = [0u8; 65536];
            while error.is_none() {
                match stream.read(&mut buf) {
                    Ok(0) => error = Some("the journal closed the connection".to_string()),
                    Ok(n) => {
                        *last_heard = now;
                        match decoder.feed(&buf[..n]) {
                            Ok(evs) => events.extend(evs),
                            Err(e) => error = Some(format!("malformed stream: {e}")),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => error = Some(e.to_string()),
                }
            }
        }
        if let Some(BootEvent::Error { code, message }) =
            events.iter().find(|e| matches!(e, BootEvent::Error { .. }))
        {
            error = Some(format!("err {code} {message}"));
        }
        if events
            .iter()
            .any(|e| matches!(e, BootEvent::Complete { .. }))
        {
            self.backoff = FIRST_BACKOFF;
        }
        if let Some(why) = error {
            let why = format!("{}: {why}", self.endpoint());
            self.fail(registry, now, &why);
        }
        events
    }

    /// Drop the connection and back off; the next try goes to the next
    /// endpoint.
    fn fail(&mut self, registry: &Registry, now: Instant, why: &str) {
        let old = std::mem::replace(&mut self.state, State::Idle { until: now });
        if let State::Connecting { mut stream, .. } | State::Streaming { mut stream, .. } = old {
            let _ = registry.deregister(&mut stream);
        }
        self.connected_to = None;
        log::warn!(target: "agent::journal", "{why}; retrying in {}s", self.backoff.as_secs());
        self.state = State::Idle {
            until: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.next_endpoint += 1;
    }
}

/// Decompress an overlay body (zstd), bounded by the announced size.
pub fn decompress(data: &[u8], size: usize) -> Result<Vec<u8>, String> {
    if size > crate::proto::boot::MAX_OVERLAY {
        return Err(format!("overlay of {size} bytes is over the limit"));
    }
    zstd::bulk::decompress(data, size).map_err(|e| format!("zstd: {e}"))
}
