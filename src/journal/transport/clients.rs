//! The client port: connections speaking the line protocol, their
//! buffers and limits. What a request means is decided by the daemon;
//! this module only moves bytes.
//!
//! A connection is any [`ClientStream`]: plain TCP today; a TLS stream
//! (rustls over the same socket) implements the same trait later without
//! touching the request handling.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpListener;
use mio::{Interest, Registry, Token};

use crate::proto::{err_line, ExitCode, Limits, LineReader, ProtoError, Request};

/// A byte stream the client layer can poll, read and write.
pub trait ClientStream: Read + Write + mio::event::Source {}

impl ClientStream for mio::net::TcpStream {}

/// Output kept for one slow reader before it is disconnected (a `range`
/// answer is bounded by `max_range` entries; this bounds what piles up).
const MAX_PENDING_OUTPUT: usize = 256 << 20;
/// Above this much unsent output, a connection's next request waits (and
/// its socket is not read) until the client has read what it was sent.
const OUTPUT_HIGH_WATER: usize = 8 << 20;

pub struct Conn {
    stream: Box<dyn ClientStream>,
    pub peer: SocketAddr,
    reader: LineReader,
    out: OutQueue,
    /// A request is being answered; later ones wait in the reader.
    pub busy: bool,
    pub last_active_ms: u64,
    close_after_flush: bool,
    writable_registered: bool,
    broken: bool,
    /// Input left in the socket while a request is in flight (so a
    /// pipelining client cannot make us buffer without bound).
    read_paused: bool,
    /// The connection carries a stream (boot, subscription, watch): input
    /// is read and dropped, so the client's close is seen at once.
    streaming: bool,
}

/// Something the daemon must look at after a read.
pub enum Input {
    Request(Token, Request),
    /// A request line that could not be parsed: answer `err`, go on.
    Bad(Token, ProtoError),
}

pub struct ClientServer {
    listener: TcpListener,
    conns: HashMap<Token, Conn>,
    limits: Limits,
    max_conns: usize,
    idle_ms: u64,
}

impl ClientServer {
    pub fn new(listener: TcpListener, limits: Limits, max_conns: usize, idle_ms: u64) -> Self {
        ClientServer {
            listener,
            conns: HashMap::new(),
            limits,
            max_conns,
            idle_ms,
        }
    }

    pub fn owns(&self, t: Token) -> bool {
        self.conns.contains_key(&t)
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub fn accept(
        &mut self,
        registry: &Registry,
        now_ms: u64,
        mut next_token: impl FnMut() -> Token,
    ) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!(target: "journal::clients", "accept: {e}");
                    return;
                }
            };
            if self.conns.len() >= self.max_conns {
                let line = err_line(
                    ExitCode::Unreachable,
                    &format!("too many connections (limit {})", self.max_conns),
                );
                let _ = stream.write_all(format!("{line}\n").as_bytes());
                continue;
            }
            let _ = stream.set_nodelay(true);
            let token = next_token();
            if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                log::warn!(target: "journal::clients", "register: {e}");
                continue;
            }
            self.conns.insert(
                token,
                Conn {
                    stream: Box::new(stream),
                    peer,
                    reader: LineReader::new(self.limits),
                    out: OutQueue::default(),
                    busy: false,
                    last_active_ms: now_ms,
                    close_after_flush: false,
                    writable_registered: false,
                    broken: false,
                    read_paused: false,
                    streaming: false,
                },
            );
        }
    }

    /// Readiness on a connection: flush output, read input. Returns the
    /// next request if the connection is not busy.
    pub fn on_event(&mut self, registry: &Registry, t: Token, now_ms: u64) -> Vec<Input> {
        let Some(c) = self.conns.get_mut(&t) else {
            return vec![];
        };
        c.last_active_ms = now_ms;
        if c.flush().is_err() {
            self.close(registry, t);
            return vec![];
        }
        if c.streaming {
            let mut buf = [0u8; 4096];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        self.close(registry, t);
                        return vec![];
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.close(registry, t);
                        return vec![];
                    }
                }
            }
            self.sync_interest(registry, t);
            return vec![];
        }
        if c.busy || c.unsent() > OUTPUT_HIGH_WATER {
            c.read_paused = true;
            self.sync_interest(registry, t);
            return vec![];
        }
        c.read_paused = false;
        let mut buf = [0u8; 16 * 1024];
        let (eof, framing) = c.reader.read_from(&mut c.stream, &mut buf, c.broken);
        if let Some(e) = framing {
            c.push_line(&err_line(ExitCode::Invalid, &e.to_string()));
            c.close_after_flush = true;
            c.broken = true;
        }
        let inputs = self.next_input(t);
        if let Some(c) = self.conns.get_mut(&t) {
            if eof {
                // Closed by sync_interest once every complete request is
                // answered and the answers are sent.
                c.close_after_flush = true;
            }
        }
        self.sync_interest(registry, t);
        inputs
    }

    /// Reads input left in the socket while the connection was busy.
    pub fn resume(&mut self, registry: &Registry, t: Token, now_ms: u64) -> Vec<Input> {
        match self.conns.get(&t) {
            Some(c) if c.read_paused && !c.busy && c.unsent() <= OUTPUT_HIGH_WATER => {
                self.on_event(registry, t, now_ms)
            }
            _ => vec![],
        }
    }

    /// The next buffered request of a connection that is not busy.
    pub fn next_input(&mut self, t: Token) -> Vec<Input> {
        let Some(c) = self.conns.get_mut(&t) else {
            return vec![];
        };
        if c.busy || c.broken || c.unsent() > OUTPUT_HIGH_WATER {
            return vec![];
        }
        match c.reader.next_request() {
            Ok(Some(r)) => {
                c.busy = true;
                vec![Input::Request(t, r)]
            }
            Ok(None) => vec![],
            Err(e) => {
                c.busy = true;
                vec![Input::Bad(t, e)]
            }
        }
    }

    /// Queues response lines.
    pub fn send(&mut self, registry: &Registry, t: Token, lines: &[String]) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        for l in lines {
            c.push_line(l);
        }
        self.after_write(registry, t);
    }

    /// Queues a `body +<len>` line and the bytes.
    pub fn send_body(&mut self, t: Token, body: &[u8]) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.push_line(&format!("body +{}", body.len()));
            c.out.push(body);
        }
    }

    /// Queues bytes shared with other connections (a boot stream's
    /// overlay) and starts sending.
    pub fn send_shared(&mut self, registry: &Registry, t: Token, buf: std::sync::Arc<[u8]>) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.out.push_shared(buf);
        }
        self.after_write(registry, t);
    }

    /// Queues raw bytes (records and bodies already framed) and starts sending.
    pub fn send_raw(&mut self, registry: &Registry, t: Token, bytes: &[u8]) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.out.push(bytes);
        }
        self.after_write(registry, t);
    }

    /// The connection now carries a stream until it closes.
    pub fn set_streaming(&mut self, t: Token) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.streaming = true;
            c.busy = true;
        }
    }

    fn after_write(&mut self, registry: &Registry, t: Token) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let too_much = c.unsent() > MAX_PENDING_OUTPUT;
        if c.flush().is_err() || too_much {
            if too_much {
                log::warn!(target: "journal::clients", "dropping client {} that does not read its output", c.peer);
            }
            self.close(registry, t);
            return;
        }
        self.sync_interest(registry, t);
    }

    /// The current request is answered (its final line queued).
    pub fn finish(&mut self, registry: &Registry, t: Token) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.busy = false;
        }
        self.after_write(registry, t);
    }

    fn sync_interest(&mut self, registry: &Registry, t: Token) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        // After the client's end of stream, close once every complete
        // request it sent is answered. Input left over then is a request
        // cut off by that end: it is not run, and the client is told so.
        let ended = c.close_after_flush && !c.busy && !c.broken;
        if let Some(e) = ended.then(|| c.reader.cut_off()).flatten() {
            c.push_line(&err_line(ExitCode::Invalid, &e.to_string()));
            c.broken = true;
            if c.flush().is_err() {
                self.close(registry, t);
                return;
            }
        }
        let pending = c.unsent() > 0;
        if c.close_after_flush && !pending && !c.busy && (c.broken || !c.reader.has_request()) {
            self.close(registry, t);
            return;
        }
        crate::util::net::sync_write_interest(
            registry,
            &mut c.stream,
            t,
            pending,
            &mut c.writable_registered,
        );
    }

    pub fn close(&mut self, registry: &Registry, t: Token) {
        if let Some(mut c) = self.conns.remove(&t) {
            let _ = registry.deregister(&mut c.stream);
        }
    }

    /// Tokens of connections idle too long (not those with a request in flight).
    pub fn idle_expired(&self, now_ms: u64) -> Vec<Token> {
        self.conns
            .iter()
            .filter(|(_, c)| !c.busy && now_ms.saturating_sub(c.last_active_ms) >= self.idle_ms)
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.conns
            .values()
            .filter(|c| !c.busy)
            .map(|c| c.last_active_ms + self.idle_ms)
            .min()
    }
}

impl Conn {
    fn unsent(&self) -> usize {
        self.out.len
    }

    fn push_line(&mut self, line: &str) {
        self.out.push(line.as_bytes());
        self.out.push(b"\n");
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush(&mut self.stream)
    }
}

/// Output waiting for a connection: bytes of its own, and buffers shared
/// with other connections (a boot stream's overlay goes to thousands of
/// agents from one buffer, never copied per connection).
#[derive(Default)]
struct OutQueue {
    chunks: std::collections::VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    head: usize,
    /// Unsent bytes in all.
    len: usize,
}

enum Chunk {
    Own(Vec<u8>),
    Shared(std::sync::Arc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Own(v) => v,
            Chunk::Shared(a) => a,
        }
    }
}

impl OutQueue {
    fn push(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        if let Some(Chunk::Own(v)) = self.chunks.back_mut() {
            if v.len() < 64 * 1024 {
                v.extend_from_slice(bytes);
                return;
            }
        }
        self.chunks.push_back(Chunk::Own(bytes.to_vec()));
    }

    fn push_shared(&mut self, buf: std::sync::Arc<[u8]>) {
        self.len += buf.len();
        self.chunks.push_back(Chunk::Shared(buf));
    }

    fn flush(&mut self, stream: &mut Box<dyn ClientStream>) -> io::Result<()> {
        while let Some(front) = self.chunks.front() {
            let bytes = &front.bytes()[self.head..];
            if bytes.is_empty() {
                self.chunks.pop_front();
                self.head = 0;
                continue;
            }
            match stream.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.head += n;
                    self.len -= n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
