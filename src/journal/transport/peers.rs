//! Raft peer connections: one outbound TCP connection per peer for what we
//! send, and the inbound connections peers opened for what they send.
//!
//! Every connection starts with a Hello frame (version, sender id,
//! cluster name); the receiver checks all three and then that every
//! message's `from` is the greeted id. Outbound messages are encoded into
//! a bounded per-peer buffer: when it is full, or the peer is not
//! connected, the message is dropped and counted (Raft retransmits).
//! Failed connections are retried with a doubling backoff.
//!
//! Inbound connections are bounded (`journal.raft.max_peer_connections`).
//! One that has not sent its Hello within [`HELLO_TIMEOUT_MS`] is closed,
//! and when the bound is reached the oldest connection still waiting for
//! its Hello makes room for the new one: a port scanner or a handful of
//! idle sockets can never keep a member's connection out.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::journal::raft::{
    encode_hello_frame, encode_message_frame, Hello, Message, NodeId, PeerFrame, PeerStream,
    PROTOCOL_VERSION,
};

/// An inbound connection must greet (Hello) within this.
pub const HELLO_TIMEOUT_MS: u64 = 2000;
const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 1000;
/// A connect still pending after this is abandoned and retried (an
/// unreachable host would otherwise hold it for minutes of SYN retries).
const CONNECT_TIMEOUT_MS: u64 = 1000;
/// Sent data unacknowledged for this long breaks the connection
/// (TCP_USER_TIMEOUT), so a silent partition ends in a reconnect.
const TCP_USER_TIMEOUT_MS: u32 = 5000;

enum LinkState {
    /// Not connected; try again at this time.
    Down {
        retry_at_ms: u64,
    },
    Connecting {
        since_ms: u64,
    },
    Up,
}

/// Our sending side towards one peer.
struct Link {
    id: NodeId,
    addr: String,
    state: LinkState,
    stream: Option<TcpStream>,
    token: Token,
    buf: Vec<u8>,
    /// Start of unsent bytes in `buf`.
    start: usize,
    backoff_ms: u64,
    writable_registered: bool,
    /// Messages dropped (not connected, or queue full).
    dropped: u64,
    logged_down: bool,
}

struct Inbound {
    stream: TcpStream,
    addr: SocketAddr,
    decoder: PeerStream,
    from: Option<NodeId>,
    accepted_ms: u64,
}

pub struct PeerNet {
    me: NodeId,
    cluster: String,
    max_frame: usize,
    max_queue: usize,
    max_inbound: usize,
    listener: TcpListener,
    links: BTreeMap<NodeId, Link>,
    link_tokens: HashMap<Token, NodeId>,
    inbound: HashMap<Token, Inbound>,
    /// Peers whose established connection ended since the last
    /// [`PeerNet::take_lost`] (what a crashed process's sockets do).
    lost: Vec<NodeId>,
}

impl Link {
    fn unsent(&self) -> usize {
        self.buf.len() - self.start
    }
}

impl PeerNet {
    pub fn new(
        me: NodeId,
        cluster: &str,
        listener: TcpListener,
        max_frame: usize,
        max_queue: usize,
        max_inbound: usize,
    ) -> PeerNet {
        PeerNet {
            me,
            cluster: cluster.to_string(),
            max_frame,
            max_queue,
            max_inbound: max_inbound.max(1),
            listener,
            links: BTreeMap::new(),
            link_tokens: HashMap::new(),
            inbound: HashMap::new(),
            lost: Vec::new(),
        }
    }

    /// Adds a peer we may send to (its Raft `host:port`).
    pub fn add_peer(&mut self, id: NodeId, addr: &str, token: Token) {
        if id == self.me || self.links.contains_key(&id) {
            return;
        }
        self.link_tokens.insert(token, id);
        self.links.insert(
            id,
            Link {
                id,
                addr: addr.to_string(),
                state: LinkState::Down { retry_at_ms: 0 },
                stream: None,
                token,
                buf: Vec::new(),
                start: 0,
                backoff_ms: BACKOFF_MIN_MS,
                writable_registered: false,
                dropped: 0,
                logged_down: false,
            },
        );
    }

    pub fn owns(&self, t: Token) -> bool {
        self.link_tokens.contains_key(&t) || self.inbound.contains_key(&t)
    }

    /// Is our connection to `id` up?
    pub fn connected(&self, id: NodeId) -> bool {
        self.links
            .get(&id)
            .is_some_and(|l| matches!(l.state, LinkState::Up))
    }

    pub fn dropped(&self, id: NodeId) -> u64 {
        self.links.get(&id).map_or(0, |l| l.dropped)
    }

    /// Queues one message; dropped if the link is down or its queue full.
    pub fn send(&mut self, to: NodeId, msg: &Message) {
        let max_queue = self.max_queue;
        let Some(link) = self.links.get_mut(&to) else {
            return;
        };
        if !matches!(link.state, LinkState::Up | LinkState::Connecting { .. }) {
            link.dropped += 1;
            return;
        }
        let frame = encode_message_frame(msg);
        if link.unsent() + frame.len() > max_queue {
            link.dropped += 1;
            return;
        }
        if link.start > 0 && link.start >= link.buf.len() / 2 {
            link.buf.drain(..link.start);
            link.start = 0;
        }
        link.buf.extend_from_slice(&frame);
    }

    /// Writes what can be written on every link; starts due reconnects.
    pub fn flush(&mut self, registry: &Registry, now_ms: u64) {
        let ids: Vec<NodeId> = self.links.keys().copied().collect();
        for id in ids {
            let stuck = self.links.get(&id).is_some_and(|l| {
                matches!(l.state, LinkState::Connecting { since_ms } if now_ms >= since_ms + CONNECT_TIMEOUT_MS)
            });
            if stuck {
                self.close_link(registry, id, now_ms, "connect timed out");
            }
            self.connect_if_due(registry, id, now_ms);
            self.flush_link(registry, id, now_ms);
        }
    }

    /// The earliest reconnect attempt due.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let links = self.links.values().filter_map(|l| match l.state {
            LinkState::Down { retry_at_ms } => Some(retry_at_ms),
            LinkState::Connecting { since_ms } => Some(since_ms + CONNECT_TIMEOUT_MS),
            LinkState::Up => None,
        });
        let greetings = self
            .inbound
            .values()
            .filter(|c| c.from.is_none())
            .map(|c| c.accepted_ms + HELLO_TIMEOUT_MS);
        links.chain(greetings).min()
    }

    /// Closes the inbound connections that did not greet in time.
    pub fn expire_greetings(&mut self, registry: &Registry, now_ms: u64) {
        let late: Vec<Token> = self
            .inbound
            .iter()
            .filter(|(_, c)| c.from.is_none() && now_ms >= c.accepted_ms + HELLO_TIMEOUT_MS)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            if let Some(mut c) = self.inbound.remove(&t) {
                log::warn!(target: "journal::peers", "closing peer connection from {}: no Hello within {HELLO_TIMEOUT_MS} ms", c.addr);
                let _ = registry.deregister(&mut c.stream);
            }
        }
    }

    /// Makes room for one more inbound connection: the oldest one still
    /// waiting for its Hello goes. False if every open one has greeted.
    fn evict_ungreeted(&mut self, registry: &Registry) -> bool {
        let oldest = self
            .inbound
            .iter()
            .filter(|(_, c)| c.from.is_none())
            .min_by_key(|(t, c)| (c.accepted_ms, t.0))
            .map(|(t, _)| *t);
        let Some(t) = oldest else {
            return false;
        };
        if let Some(mut c) = self.inbound.remove(&t) {
            log::warn!(target: "journal::peers", "closing peer connection from {}: {} connections open and it has not greeted; making room", c.addr, self.max_inbound);
            let _ = registry.deregister(&mut c.stream);
        }
        true
    }

    fn connect_if_due(&mut self, registry: &Registry, id: NodeId, now_ms: u64) {
        let hello = encode_hello_frame(&Hello {
            version: PROTOCOL_VERSION,
            from: self.me,
            cluster: self.cluster.clone(),
        });
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let LinkState::Down { retry_at_ms } = link.state else {
            return;
        };
        if now_ms < retry_at_ms {
            return;
        }
        // Resolving a literal address never blocks; names go to the resolver.
        let addr = match link.addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            _ => {
                Self::mark_down(link, now_ms, "cannot resolve the address");
                return;
            }
        };
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                Self::mark_down(link, now_ms, &format!("connect: {e}"));
                return;
            }
        };
        if let Err(e) = registry.register(
            &mut stream,
            link.token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            Self::mark_down(link, now_ms, &format!("register: {e}"));
            return;
        }
        let _ = stream.set_nodelay(true);
        link.writable_registered = true;
        set_liveness_options(&stream);
        link.stream = Some(stream);
        link.state = LinkState::Connecting { since_ms: now_ms };
        link.buf.clear();
        link.start = 0;
        link.buf.extend_from_slice(&hello);
    }

    fn mark_down(link: &mut Link, now_ms: u64, why: &str) {
        if !link.logged_down {
            log::info!(target: "journal::peers", "peer {} at {}: {why}; retrying", link.id, link.addr);
            link.logged_down = true;
        } else {
            log::debug!(target: "journal::peers", "peer {} at {}: {why}", link.id, link.addr);
        }
        link.stream = None;
        link.buf.clear();
        link.start = 0;
        link.writable_registered = false;
        let jitter = now_ms % (link.backoff_ms / 4 + 1);
        link.state = LinkState::Down {
            retry_at_ms: now_ms + link.backoff_ms + jitter,
        };
        link.backoff_ms = (link.backoff_ms * 2).min(BACKOFF_MAX_MS);
    }

    /// Peers whose established connection (ours to them, or theirs to us
    /// once they said who they are) closed or failed since the last call.
    pub fn take_lost(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.lost)
    }

    fn close_link(&mut self, registry: &Registry, id: NodeId, now_ms: u64, why: &str) {
        if let Some(link) = self.links.get_mut(&id) {
            if matches!(link.state, LinkState::Up) {
                self.lost.push(id);
            }
            if let Some(mut s) = link.stream.take() {
                let _ = registry.deregister(&mut s);
            }
            Self::mark_down(link, now_ms, why);
        }
    }

    fn flush_link(&mut self, registry: &Registry, id: NodeId, now_ms: u64) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if !matches!(link.state, LinkState::Up) {
            return;
        }
        let Some(stream) = link.stream.as_mut() else {
            return;
        };
        let mut failed = None;
        while link.start < link.buf.len() {
            match stream.write(&link.buf[link.start..]) {
                Ok(0) => {
                    failed = Some("connection closed".to_string());
                    break;
                }
                Ok(n) => link.start += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    failed = Some(format!("write: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = failed {
            self.close_link(registry, id, now_ms, &why);
            return;
        }
        if link.start == link.buf.len() {
            link.buf.clear();
            link.start = 0;
        }
        let want_write = link.start < link.buf.len();
        crate::util::net::sync_write_interest(
            registry,
            stream,
            link.token,
            want_write,
            &mut link.writable_registered,
        );
    }

    /// Accepts pending inbound connections.
    pub fn accept(
        &mut self,
        registry: &Registry,
        now_ms: u64,
        mut next_token: impl FnMut() -> Token,
    ) {
        loop {
            let (mut stream, addr) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!(target: "journal::peers", "accept: {e}");
                    return;
                }
            };
            if self.inbound.len() >= self.max_inbound && !self.evict_ungreeted(registry) {
                log::warn!(target: "journal::peers", "refusing peer connection from {addr}: {} already open (journal.raft.max_peer_connections)", self.max_inbound);
                continue;
            }
            let token = next_token();
            if registry
                .register(&mut stream, token, Interest::READABLE)
                .is_err()
            {
                continue;
            }
            let _ = stream.set_nodelay(true);
            set_liveness_options(&stream);
            self.inbound.insert(
                token,
                Inbound {
                    stream,
                    addr,
                    decoder: PeerStream::new(self.max_frame),
                    from: None,
                    accepted_ms: now_ms,
                },
            );
        }
    }

    /// Readiness on a peer token: completes connects, flushes, reads.
    /// Returns the Raft messages received.
    pub fn on_event(&mut self, registry: &Registry, t: Token, now_ms: u64) -> Vec<Message> {
        if let Some(&id) = self.link_tokens.get(&t) {
            self.on_link_event(registry, id, now_ms);
            return Vec::new();
        }
        self.on_inbound_event(registry, t)
    }

    fn on_link_event(&mut self, registry: &Registry, id: NodeId, now_ms: u64) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let Some(stream) = link.stream.as_mut() else {
            return;
        };
        if matches!(link.state, LinkState::Connecting { .. }) {
            match stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    let why = format!("connect: {e}");
                    self.close_link(registry, id, now_ms, &why);
                    return;
                }
            }
            match stream.peer_addr() {
                Ok(_) => {
                    if link.logged_down {
                        log::info!(target: "journal::peers", "peer {} at {}: connected", link.id, link.addr);
                    }
                    link.state = LinkState::Up;
                    link.backoff_ms = BACKOFF_MIN_MS;
                    link.logged_down = false;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    let why = format!("connect: {e}");
                    self.close_link(registry, id, now_ms, &why);
                    return;
                }
            }
        }
        // Peers never send on our outbound connection: reading only
        // detects its end.
        let mut scratch = [0u8; 512];
        let mut closed = None;
        if let Some(stream) = self.links.get_mut(&id).and_then(|l| l.stream.as_mut()) {
            loop {
                match stream.read(&mut scratch) {
                    Ok(0) => {
                        closed = Some("closed by the peer".to_string());
                        break;
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        closed = Some(format!("read: {e}"));
                        break;
                    }
                }
            }
        }
        if let Some(why) = closed {
            self.close_link(registry, id, now_ms, &why);
            return;
        }
        self.flush_link(registry, id, now_ms);
    }

    fn on_inbound_event(&mut self, registry: &Registry, t: Token) -> Vec<Message> {
        let mut out = Vec::new();
        let Some(conn) = self.inbound.get_mut(&t) else {
            return out;
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut close: Option<String> = None;
        let mut greeted = None;
        'read: loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    close = Some(String::new());
                    break;
                }
                Ok(n) => {
                    if let Err(e) = conn.decoder.feed(&buf[..n]) {
                        close = Some(format!("bad frame: {e}"));
                        break;
                    }
                    loop {
                        match conn.decoder.next_frame() {
                            Ok(None) => break,
                            Ok(Some(PeerFrame::Hello(h))) => {
                                if let Err(why) =
                                    check_hello(&h, self.me, &self.cluster, &self.links)
                                {
                                    close = Some(why);
                                    break 'read;
                                }
                                conn.from = Some(h.from);
                                greeted = Some(h.from);
                            }
                            Ok(Some(PeerFrame::Raft(m))) => {
                                if Some(m.from) != conn.from {
                                    close = Some(format!(
                                        "message from node {} on the connection of node {:?}",
                                        m.from, conn.from
                                    ));
                                    break 'read;
                                }
                                out.push(m);
                            }
                            Err(e) => {
                                close = Some(format!("bad frame: {e}"));
                                break 'read;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    close = Some(format!("read: {e}"));
                    break;
                }
            }
        }
        if let Some(id) = greeted {
            // The peer reconnected: its older connections are dead (say its
            // host crashed without closing them).
            let stale: Vec<Token> = self
                .inbound
                .iter()
                .filter(|(tok, c)| **tok != t && c.from == Some(id))
                .map(|(tok, _)| *tok)
                .collect();
            for tok in stale {
                if let Some(mut c) = self.inbound.remove(&tok) {
                    let _ = registry.deregister(&mut c.stream);
                }
            }
        }
        let Some(conn) = self.inbound.get_mut(&t) else {
            return out;
        };
        if let Some(why) = close {
            if !why.is_empty() {
                log::warn!(target: "journal::peers", "closing peer connection from {}: {why}", conn.addr);
            }
            if let Some(mut c) = self.inbound.remove(&t) {
                let _ = registry.deregister(&mut c.stream);
                if let Some(id) = c.from {
                    self.lost.push(id);
                }
            }
        }
        out
    }
}

/// Keepalive probes and a user timeout, so dead peers are noticed even on
/// an idle connection (best effort: failures only lose the early warning).
fn set_liveness_options(stream: &TcpStream) {
    use rustix::net::sockopt;
    let _ = sockopt::set_socket_keepalive(stream, true);
    let _ = sockopt::set_tcp_keepidle(stream, std::time::Duration::from_secs(2));
    let _ = sockopt::set_tcp_keepintvl(stream, std::time::Duration::from_secs(1));
    let _ = sockopt::set_tcp_keepcnt(stream, 3);
    let _ = sockopt::set_tcp_user_timeout(stream, TCP_USER_TIMEOUT_MS);
}

fn check_hello(
    h: &Hello,
    me: NodeId,
    cluster: &str,
    known: &BTreeMap<NodeId, Link>,
) -> Result<(), String> {
    if h.version != PROTOCOL_VERSION {
        return Err(format!(
            "peer speaks protocol version {}, we speak {PROTOCOL_VERSION}",
            h.version
        ));
    }
    if h.cluster != cluster {
        return Err(format!(
            "peer belongs to cluster \"{}\", we are \"{cluster}\"",
            h.cluster
        ));
    }
    if h.from == me {
        return Err(format!(
            "peer claims to be node {me}, which is this node (two nodes configured with one node_id?)"
        ));
    }
    if !known.contains_key(&h.from) {
        return Err(format!(
            "peer claims to be node {}, which is not a known member",
            h.from
        ));
    }
    Ok(())
}
