//! The control socket (`/run/pact/agent.sock`): connections, their
//! buffers and limits. What a request means is decided by the agent
//! ([`super::requests`]); this module only moves bytes.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::proto::{Limits, LineReader, ProtoError, Request};

/// Output kept for one slow reader before it is disconnected.
const MAX_PENDING_OUTPUT: usize = 4 << 20;

/// What a connection is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Reading requests.
    Idle,
    /// A request is being answered later (e.g. `service restart` waits
    /// for the service); further requests wait in the reader.
    Busy,
    /// Streaming a service's log until `cancel` or close.
    Follow { service: String },
}

pub struct Conn {
    pub stream: UnixStream,
    reader: LineReader,
    out: Vec<u8>,
    pub mode: Mode,
    pub last_active: Instant,
    pub uid: u32,
    close_after_flush: bool,
    writable_registered: bool,
    /// Framing was lost: nothing more is read from this connection.
    broken: bool,
}

pub struct ControlServer {
    pub listener: UnixListener,
    pub path: PathBuf,
    conns: HashMap<Token, Conn>,
    limits: Limits,
    max_conns: usize,
    idle: Duration,
    allowed_uids: Vec<u32>,
}

/// Something the agent must look at after a read.
pub enum Input {
    Request(Token, Request),
    /// A request line that could not be parsed: answer `err`, go on.
    Bad(Token, ProtoError),
}

impl ControlServer {
    /// Bind the socket. Anyone may connect (mode 0666); who may talk is
    /// decided by the peer's credentials at accept: root, the agent's own
    /// user and `allowed_uids`; others are answered `err 2` and closed.
    pub fn bind(
        path: &Path,
        limits: Limits,
        max_conns: usize,
        idle: Duration,
        allowed_uids: Vec<u32>,
    ) -> io::Result<ControlServer> {
        let listener = crate::util::net::unix_listener(path, 0o666)?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            conns: HashMap::new(),
            limits,
            max_conns,
            idle,
            allowed_uids,
        })
    }

    pub fn conn_mut(&mut self, t: Token) -> Option<&mut Conn> {
        self.conns.get_mut(&t)
    }

    pub fn tokens(&self) -> Vec<Token> {
        self.conns.keys().copied().collect()
    }

    pub fn followers(&self, service: &str) -> Vec<Token> {
        self.conns
            .iter()
            .filter(|(_, c)| matches!(&c.mode, Mode::Follow { service: s } if s == service))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Accept every pending connection; `next_token` hands out tokens.
    pub fn accept(
        &mut self,
        registry: &Registry,
        now: Instant,
        mut next_token: impl FnMut() -> Token,
    ) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!(target: "agent::control", "accept: {e}");
                    return;
                }
            };
            let uid = match peer_uid(&stream) {
                Ok(uid) => uid,
                Err(e) => {
                    log::warn!(target: "agent::control", "no peer credentials: {e}");
                    continue;
                }
            };
            let me = rustix::process::geteuid().as_raw();
            if uid != 0 && uid != me && !self.allowed_uids.contains(&uid) {
                let _ = stream.write_all(
                    format!(
                        "err 2 permission denied: uid {uid} is not root, the agent's user or in \
                         agent.control.allowed_uids\n"
                    )
                    .as_bytes(),
                );
                log::warn!(target: "agent::control", "refused a connection from uid {uid}");
                continue;
            }
            if self.conns.len() >= self.max_conns {
                let _ = stream.write_all(
                    format!("err 5 too many connections (limit {})\n", self.max_conns).as_bytes(),
                );
                continue;
            }
            let token = next_token();
            if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                log::warn!(target: "agent::control", "register: {e}");
                continue;
            }
            self.conns.insert(
                token,
                Conn {
                    stream,
                    reader: LineReader::new(self.limits),
                    out: Vec::new(),
                    mode: Mode::Idle,
                    last_active: now,
                    uid,
                    close_after_flush: false,
                    writable_registered: false,
                    broken: false,
                },
            );
        }
    }

    pub fn owns(&self, t: Token) -> bool {
        self.conns.contains_key(&t)
    }

    /// Readiness on a connection: flush output, read input. Returns the
    /// requests it can hand over now (only while the connection is idle).
    pub fn on_event(&mut self, registry: &Registry, t: Token, now: Instant) -> Vec<Input> {
        let Some(c) = self.conns.get_mut(&t) else {
            return vec![];
        };
        c.last_active = now;
        if c.flush().is_err() {
            self.close(registry, t);
            return vec![];
        }
        let mut buf = [0u8; 8192];
        let (eof, framing) = c.reader.read_from(&mut c.stream, &mut buf, c.broken);
        if let Some(e) = framing {
            // Framing is lost: answer once, then close.
            c.push_line(&crate::proto::err_line(
                crate::proto::ExitCode::Invalid,
                &e.to_string(),
            ));
            c.close_after_flush = true;
            c.broken = true;
        }
        let inputs = self.pending_inputs(t);
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

    /// The next request of an idle connection (one at a time, answered
    /// in order). With none, a connection whose client has ended its
    /// stream is closed (or told its last request was cut off).
    pub fn next_inputs(&mut self, registry: &Registry, t: Token) -> Vec<Input> {
        let inputs = self.pending_inputs(t);
        if inputs.is_empty() {
            self.sync_interest(registry, t);
        }
        inputs
    }

    fn pending_inputs(&mut self, t: Token) -> Vec<Input> {
        let Some(c) = self.conns.get_mut(&t) else {
            return vec![];
        };
        let mut out = Vec::new();
        if c.broken {
            return out;
        }
        while c.mode == Mode::Idle || matches!(c.mode, Mode::Follow { .. }) {
            match c.reader.next_request() {
                Ok(Some(r)) => {
                    let follow = matches!(c.mode, Mode::Follow { .. });
                    if follow && r.words.first().map(String::as_str) != Some("cancel") {
                        continue; // only `cancel` is meaningful while following
                    }
                    if !follow {
                        c.mode = Mode::Busy;
                    }
                    out.push(Input::Request(t, r));
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    c.mode = Mode::Busy;
                    out.push(Input::Bad(t, e));
                    break;
                }
            }
        }
        out
    }

    /// Queue lines for a connection.
    pub fn send(&mut self, registry: &Registry, t: Token, lines: &[String]) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        for l in lines {
            c.push_line(l);
        }
        self.after_write(registry, t);
    }

    /// Queue raw bytes (a body).
    pub fn send_bytes(&mut self, registry: &Registry, t: Token, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        c.out.extend_from_slice(bytes);
        self.after_write(registry, t);
    }

    fn after_write(&mut self, registry: &Registry, t: Token) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        if c.flush().is_err() || c.out.len() > MAX_PENDING_OUTPUT {
            if c.out.len() > MAX_PENDING_OUTPUT {
                log::warn!(target: "agent::control", "dropping a connection that does not read its output");
            }
            self.close(registry, t);
            return;
        }
        self.sync_interest(registry, t);
    }

    /// The current request is answered: back to reading.
    pub fn finish(&mut self, registry: &Registry, t: Token) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.mode = Mode::Idle;
        }
        self.sync_interest(registry, t);
    }

    pub fn set_mode(&mut self, t: Token, mode: Mode) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.mode = mode;
        }
    }

    fn sync_interest(&mut self, registry: &Registry, t: Token) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        if c.close_after_flush && c.mode != Mode::Busy {
            // After the client's end of stream: input left that is not a
            // whole request was cut off by that end; it is not run, and
            // the client is told so. Whole ones are answered first.
            if let Some(e) = c.reader.cut_off().filter(|_| !c.broken) {
                c.push_line(&crate::proto::err_line(
                    crate::proto::ExitCode::Invalid,
                    &e.to_string(),
                ));
                c.broken = true;
                if c.flush().is_err() {
                    self.close(registry, t);
                    return;
                }
            }
            let more = !c.broken && c.reader.has_request() && c.mode == Mode::Idle;
            if c.out.is_empty() && !more {
                self.close(registry, t);
                return;
            }
        }
        let want_write = !c.out.is_empty();
        crate::util::net::sync_write_interest(
            registry,
            &mut c.stream,
            t,
            want_write,
            &mut c.writable_registered,
        );
    }

    pub fn close(&mut self, registry: &Registry, t: Token) {
        if let Some(mut c) = self.conns.remove(&t) {
            let _ = registry.deregister(&mut c.stream);
        }
    }

    /// Close connections idle for longer than the limit (not streams).
    pub fn expire_idle(&mut self, registry: &Registry, now: Instant) {
        let old: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.mode == Mode::Idle && now.saturating_duration_since(c.last_active) >= self.idle
            })
            .map(|(t, _)| *t)
            .collect();
        for t in old {
            self.close(registry, t);
        }
    }

    /// When the oldest idle connection expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter(|c| c.mode == Mode::Idle)
            .map(|c| c.last_active + self.idle)
            .min()
    }
}

/// The uid of the peer (SO_PEERCRED). Read directly: a peer in another
/// PID namespace shows pid 0, which typed wrappers refuse.
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a ucred.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

impl Conn {
    fn push_line(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.push(b'\n');
    }

    fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
