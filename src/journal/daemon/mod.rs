//! `pact-journal`'s event loop: one thread, one `mio::Poll`.
//!
//! Each iteration reads every ready socket (peer messages are stepped into
//! the Raft node, client requests become proposals or reads), fires due
//! timers, then drives the node: while it has a [`Ready`], persist it and
//! apply its committed entries in one SQLite transaction (group commit:
//! everything proposed in the iteration shares one fsync), send its
//! messages, answer the clients whose entries were applied and the reads
//! that are now safe, and `advance`. Storage runs on the loop thread: a
//! commit costs one fsync, during which nothing else could proceed anyway.
//!
//! A failed transaction is a crash: the node and the database handle are
//! dropped, in-flight writes are answered `indeterminate`, and the node is
//! rebuilt from disk after a backoff. Until then it takes no part in Raft
//! (its peers elect someone else) and refuses client operations.

mod compaction;
mod config_requests;
mod requests;
mod streams;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Poll, Token};

use super::config::Settings;
use super::histogram::Histogram;
use super::machine::ConfigMachine;
use super::raft::{EntryKind, Membership, RaftConfig, RaftNode, Ready, Role, SoftState};
use super::state_machine::{ApplyOutcome, ReadOp, StateMachine};
use super::storage::{DirLock, Storage, StorageError, StorageOptions};
use super::transport::clients::{ClientServer, Input};
use super::transport::peers::PeerNet;
use crate::agent::signals::{name as signal_name, SignalFd};
use crate::proto::{err_line, ExitCode, Limits};

const RAFT_LISTENER: Token = Token(0);
const CLIENT_LISTENER: Token = Token(1);
const SIGNALS: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Tokens below this are for peer links (by node id offset).
const FIRST_DYNAMIC: usize = 1 << 20;
const STORAGE_RETRY_MIN_MS: u64 = 1000;
const STORAGE_RETRY_MAX_MS: u64 = 30_000;

/// What a pending write is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Append,
    Membership,
}

/// A proposal waiting for its index to be applied.
#[derive(Debug)]
struct PendingWrite {
    token: Token,
    term: u64,
    kind: WriteKind,
    deadline_ms: u64,
    started: Instant,
}

/// A linearizable read waiting for its read index (or to be applied).
#[derive(Debug)]
struct PendingRead {
    token: Token,
    op: ReadOp,
    deadline_ms: u64,
    /// Set once confirmed: serve when applied reaches it.
    index: Option<u64>,
}

/// The node's storage is broken: not serving until rebuilt.
struct StorageFailure {
    message: String,
    retry_at_ms: u64,
    backoff_ms: u64,
}

pub struct Daemon {
    settings: Settings,
    poll: Poll,
    started: Instant,
    node: Option<RaftNode>,
    storage: Option<Storage>,
    sm: ConfigMachine,
    /// Boot streams, subscriptions and watches (see `streams`).
    streams: streams::Streams,
    peers: PeerNet,
    clients: ClientServer,
    next_token: usize,
    next_read_id: u64,
    writes: BTreeMap<u64, PendingWrite>,
    reads: HashMap<u64, PendingRead>,
    failure: Option<StorageFailure>,
    soft: SoftState,
    /// The highest term known durable here (restored, or persisted since):
    /// a leader's appends of that term may go out before its own fsync.
    durable_term: u64,
    fsync_hist: Histogram,
    commit_hist: Histogram,
    last_snapshot_ms: u64,
    snapshots: compaction::SnapshotWorker,
    checkpointer: compaction::Checkpointer,
    snapshot_started: Option<Instant>,
    /// Connections whose request was just answered.
    answered: Vec<Token>,
    _lock: DirLock,
}

impl Daemon {
    /// Opens storage, binds both ports, and, with `bootstrap`, starts a new
    /// cluster from the configured membership (refused if the node has state).
    pub fn new(settings: Settings, bootstrap: bool) -> Result<Daemon, String> {
        let lock = DirLock::acquire(&settings.data_dir).map_err(|e| e.to_string())?;
        let mut storage = Storage::open(&settings.data_dir, &StorageOptions::default())
            .map_err(|e| e.to_string())?;
        storage
            .claim(settings.node_id, &settings.cluster)
            .map_err(|e| e.to_string())?;
        let mut sm = ConfigMachine::new();
        let restored = storage.load(&mut sm).map_err(|e| e.to_string())?;
        let mut node =
            RaftNode::new(raft_config(&settings), restored).map_err(|e| e.to_string())?;
        let durable_term = node.term();
        if bootstrap {
            let membership = Membership::new(
                settings.voters.iter().copied(),
                settings.learners.iter().copied(),
            );
            node.bootstrap(membership).map_err(|e| e.to_string())?;
            log::info!(target: "journal", "bootstrapped a new cluster: voters {:?}, learners {:?}",
                settings.voters, settings.learners);
        }
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        let mut raft_listener = TcpListener::bind(settings.raft_listen)
            .map_err(|e| format!("cannot listen for peers on {}: {e}", settings.raft_listen))?;
        let mut client_listener =
            crate::util::net::tcp_listener(settings.client_listen, settings.clients.listen_backlog)
                .map_err(|e| {
                    format!(
                        "cannot listen for clients on {}: {e}",
                        settings.client_listen
                    )
                })?;
        poll.registry()
            .register(&mut raft_listener, RAFT_LISTENER, mio::Interest::READABLE)
            .map_err(|e| e.to_string())?;
        poll.registry()
            .register(
                &mut client_listener,
                CLIENT_LISTENER,
                mio::Interest::READABLE,
            )
            .map_err(|e| e.to_string())?;
        let mut peers = PeerNet::new(
            settings.node_id,
            &settings.cluster,
            raft_listener,
            settings.raft.max_frame_bytes.0 as usize,
            settings.raft.peer_queue_bytes.0 as usize,
            settings.raft.max_peer_connections as usize,
        );
        for (id, addr) in &settings.peers {
            peers.add_peer(
                *id,
                &addr.raft,
                Token(2 + *id as usize % (FIRST_DYNAMIC - 2)),
            );
        }
        let c = &settings.clients;
        let limits = Limits {
            max_line: c.max_line,
            max_words: c.max_words,
            max_body: c.max_body.0 as usize,
        };
        let clients = ClientServer::new(
            client_listener,
            limits,
            c.max_connections,
            c.idle_timeout_seconds * 1000,
        );
        let soft = node.soft_state();
        let waker = std::sync::Arc::new(
            mio::Waker::new(poll.registry(), WAKER).map_err(|e| format!("waker: {e}"))?,
        );
        let snapshots = compaction::SnapshotWorker::start(
            storage.path().to_path_buf(),
            sm.snapshotter(),
            waker,
        )
        .map_err(|e| format!("snapshot thread: {e}"))?;
        let checkpointer = compaction::Checkpointer::start(storage.path().to_path_buf())
            .map_err(|e| format!("checkpoint thread: {e}"))?;
        let max_boot_streams = settings.streaming.max_concurrent_boot_streams as usize;
        Ok(Daemon {
            settings,
            poll,
            started: Instant::now(),
            node: Some(node),
            storage: Some(storage),
            streams: streams::Streams::new(max_boot_streams),
            sm,
            peers,
            clients,
            next_token: FIRST_DYNAMIC,
            next_read_id: 1,
            writes: BTreeMap::new(),
            reads: HashMap::new(),
            failure: None,
            soft,
            durable_term,
            fsync_hist: Histogram::default(),
            commit_hist: Histogram::default(),
            last_snapshot_ms: 0,
            snapshots,
            checkpointer,
            snapshot_started: None,
            answered: Vec::new(),
            _lock: lock,
        })
    }

    /// Milliseconds on the loop's monotonic clock (starts at 1).
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// Runs until SIGTERM or SIGINT arrives on `signals`.
    pub fn run(&mut self, signals: &SignalFd) -> Result<(), String> {
        let mut events = Events::with_capacity(1024);
        let raw = signals.raw();
        self.poll
            .registry()
            .register(&mut SourceFd(&raw), SIGNALS, mio::Interest::READABLE)
            .map_err(|e| format!("register the signalfd: {e}"))?;
        log::info!(target: "journal", "node {} serving clients on {} and peers on {}",
            self.settings.node_id, self.settings.client_listen, self.settings.raft_listen);
        loop {
            // Requests answered at once may free pipelined ones, which may
            // need Raft work: repeat until both are quiet.
            loop {
                let now = self.now_ms();
                self.next_requests();
                self.drive(now);
                if self.answered.is_empty() {
                    break;
                }
            }
            let now = self.now_ms();
            self.peers.flush(self.poll.registry(), now);
            let timeout = self
                .next_deadline()
                .map(|d| Duration::from_millis(d.saturating_sub(self.now_ms())));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            for ev in events.iter() {
                // Each event at its own time: one may have stalled the loop
                // (a large entry's fsync), and a heartbeat handled after it
                // must not count as heard before it.
                let now = self.now_ms();
                if ev.token() == WAKER {
                    if let Err(e) = self.maybe_compact() {
                        self.storage_failed(e, now);
                    }
                    continue;
                }
                if ev.token() == SIGNALS {
                    let sigs = signals.read().unwrap_or_default();
                    if sigs
                        .iter()
                        .any(|s| *s == libc::SIGTERM || *s == libc::SIGINT)
                    {
                        log::info!(target: "journal", "stopping on {}", signal_name(sigs[0]));
                        return Ok(());
                    }
                    continue;
                }
                self.on_event(ev.token(), now);
            }
            self.on_timers(self.now_ms());
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        let mut d: Option<u64> = None;
        let mut consider = |x: Option<u64>| {
            if let Some(x) = x {
                d = Some(d.map_or(x, |c| c.min(x)));
            }
        };
        consider(self.node.as_ref().and_then(|n| n.next_deadline_ms()));
        consider(self.peers.next_deadline_ms());
        consider(self.clients.next_deadline_ms());
        consider(self.writes.values().map(|w| w.deadline_ms).min());
        consider(self.reads.values().map(|r| r.deadline_ms).min());
        consider(self.failure.as_ref().map(|f| f.retry_at_ms));
        consider(self.streams.next_heartbeat_ms());
        d
    }

    fn on_event(&mut self, t: Token, now: u64) {
        match t {
            RAFT_LISTENER => {
                let mut next = self.next_token;
                self.peers.accept(self.poll.registry(), now, || {
                    next += 1;
                    Token(next)
                });
                self.next_token = next;
            }
            CLIENT_LISTENER => {
                let mut next = self.next_token;
                self.clients.accept(self.poll.registry(), now, || {
                    next += 1;
                    Token(next)
                });
                self.next_token = next;
            }
            t if self.peers.owns(t) => {
                let msgs = self.peers.on_event(self.poll.registry(), t, now);
                if let Some(node) = self.node.as_mut() {
                    for m in msgs {
                        node.step(now, m);
                    }
                }
                self.peers_lost(now);
            }
            t if self.clients.owns(t) => {
                let inputs = self.clients.on_event(self.poll.registry(), t, now);
                self.handle_inputs(inputs, now);
            }
            _ => {}
        }
    }

    fn handle_inputs(&mut self, inputs: Vec<Input>, now: u64) {
        for input in inputs {
            match input {
                Input::Request(t, req) => self.on_request(t, req, now),
                Input::Bad(t, e) => {
                    self.answer(t, vec![err_line(ExitCode::Invalid, &e.to_string())]);
                }
            }
        }
    }

    /// Sends the final lines of a request; the connection's next request
    /// is picked up by [`Self::next_requests`] (a loop, not recursion: a
    /// client may pipeline thousands of requests).
    fn answer(&mut self, t: Token, lines: Vec<String>) {
        self.clients.send(self.poll.registry(), t, &lines);
        self.clients.finish(self.poll.registry(), t);
        self.answered.push(t);
    }

    /// Handles the buffered requests of connections whose last request
    /// was answered, until each is busy again or has nothing buffered.
    fn next_requests(&mut self) {
        while let Some(t) = self.answered.pop() {
            let now = self.now_ms();
            let mut next = self.clients.next_input(t);
            if next.is_empty() {
                next = self.clients.resume(self.poll.registry(), t, now);
            }
            if next.is_empty() {
                // Nothing more: lets a client that sent EOF be closed.
                self.clients.finish(self.poll.registry(), t);
            }
            self.handle_inputs(next, now);
        }
    }

    /// Tells the node which peers' connections ended (after the messages
    /// that came before the end), so a crashed leader is noticed at once.
    fn peers_lost(&mut self, now: u64) {
        let lost = self.peers.take_lost();
        if let Some(node) = self.node.as_mut() {
            for id in lost {
                if node.leader() == Some(id) {
                    log::info!(target: "journal::raft", "node {}: the connection with leader {id} ended",
                        self.settings.node_id);
                }
                node.peer_lost(now, id);
            }
        }
    }

    fn on_timers(&mut self, now: u64) {
        self.peers.expire_greetings(self.poll.registry(), now);
        self.peers_lost(now);
        if let Some(node) = self.node.as_mut() {
            if node.next_deadline_ms().is_some_and(|d| d <= now) {
                node.tick(now);
            }
        }
        for t in self.clients.idle_expired(now) {
            self.clients.close(self.poll.registry(), t);
        }
        self.heartbeats(now);
        self.expire_requests(now);
        if self.failure.as_ref().is_some_and(|f| f.retry_at_ms <= now) {
            self.rebuild(now);
        }
    }

    // ------------------------------------------------------------ Raft

    /// Handles every Ready the node has.
    fn drive(&mut self, now: u64) {
        while self.node.as_ref().is_some_and(RaftNode::has_ready) {
            let Some(node) = self.node.as_mut() else {
                return;
            };
            let ready = node.ready();
            if let Err(e) = self.handle_ready(ready, now) {
                self.storage_failed(e, now);
                return;
            }
            if let Some(node) = self.node.as_mut() {
                node.advance(now);
            }
            self.publish();
            self.serve_reads();
            if let Err(e) = self.maybe_compact() {
                self.storage_failed(e, now);
                return;
            }
        }
    }

    fn handle_ready(&mut self, mut ready: Ready, now: u64) -> Result<(), StorageError> {
        if self.node.is_none() {
            return Ok(());
        }
        if let Some((meta, data)) = &ready.snapshot {
            log::info!(target: "journal", "node {}: installing a snapshot at index {} ({} bytes) from the leader",
                self.settings.node_id, meta.index, data.len());
            // Writes inside the snapshot were never seen applied here.
            let lost: Vec<u64> = self.writes.range(..=meta.index).map(|(i, _)| *i).collect();
            for index in lost {
                if let Some(w) = self.writes.remove(&index) {
                    let line = indeterminate("the node installed a snapshot covering it");
                    self.answer(w.token, vec![line]);
                }
            }
        }
        // A leader's appends go out before its own fsync, so that its disk
        // and the followers' work at the same time (Raft thesis 10.2.1):
        // the leader counts itself for a quorum only once `advance` says
        // its entries are durable. Everything else (votes, responses) waits
        // for the fsync. Only messages of a term already durable here.
        // An append that carries no entries (a new commit index, a probe)
        // or a heartbeat is sent with the rest, after the clients whose
        // entries this batch applies are answered: it has no fsync to
        // overlap, and the followers it wakes would compete for the CPU
        // with the answers.
        let durable_term = self.durable_term;
        let (early, late): (Vec<_>, Vec<_>) = std::mem::take(&mut ready.messages)
            .into_iter()
            .partition(|(_, m)| m.term <= durable_term && carries_entries(&m.body));
        if !early.is_empty() {
            for (to, msg) in &early {
                self.peers.send(*to, msg);
            }
            self.peers.flush(self.poll.registry(), now);
        }
        let persisted = match self.storage.as_mut() {
            Some(s) => s.persist(&ready, &mut self.sm)?,
            None => return Ok(()),
        };
        if let Some(hs) = &ready.hard_state {
            self.durable_term = self.durable_term.max(hs.term);
        }
        if persisted.synced {
            self.fsync_hist.record(persisted.commit_us);
        }
        if persisted.wrote {
            self.checkpointer.wrote();
        }
        for (to, msg) in &late {
            self.peers.send(*to, msg);
        }
        if let Some(soft) = ready.soft_state {
            self.on_soft_state(soft);
        }
        for applied in persisted.applied {
            let Some(w) = self.writes.remove(&applied.index) else {
                continue;
            };
            let line = if applied.term != w.term {
                err_line(
                    ExitCode::Unreachable,
                    "not-committed: leadership changed before the entry committed; it never will, safe to retry",
                )
            } else {
                match (&applied.outcome, w.kind, applied.kind) {
                    (Some(ApplyOutcome::Applied(rec)), _, _) => {
                        self.commit_hist
                            .record(w.started.elapsed().as_micros() as u64);
                        crate::proto::ok_line(rec)
                    }
                    (Some(ApplyOutcome::Rejected(code, msg)), _, _) => err_line(*code, msg),
                    (None, WriteKind::Membership, EntryKind::Membership) => crate::proto::ok_line(
                        &crate::proto::Record::new().field("index", applied.index),
                    ),
                    _ => err_line(ExitCode::General, "internal: entry kind mismatch"),
                }
            };
            self.answer(w.token, vec![line]);
        }
        for rs in ready.read_states {
            if let Some(r) = self.reads.get_mut(&rs.request_id) {
                r.index = Some(rs.index);
            }
        }
        for fr in ready.failed_reads {
            if let Some(r) = self.reads.remove(&fr.request_id) {
                let why = format!("read not confirmed by a quorum ({:?}); retry", fr.reason);
                self.answer(r.token, vec![err_line(ExitCode::Unreachable, &why)]);
            }
        }
        Ok(())
    }

    fn on_soft_state(&mut self, soft: SoftState) {
        if soft.role != self.soft.role || soft.leader != self.soft.leader {
            let term = self.node.as_ref().map_or(0, RaftNode::term);
            log::info!(target: "journal::raft", "node {}: {:?} in term {term}, leader {:?}",
                self.settings.node_id, soft.role, soft.leader);
        }
        self.soft = soft;
    }

    /// Answers confirmed reads whose index is applied.
    fn serve_reads(&mut self) {
        let Some(applied) = self.node.as_ref().map(RaftNode::applied) else {
            return;
        };
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            if let Some(r) = self.reads.remove(&id) {
                self.serve_read(r.token, r.op);
            }
        }
    }

    /// Starts a snapshot on the helper thread once `snapshot_interval`
    /// entries were applied since the last one; installs finished ones.
    fn maybe_compact(&mut self) -> Result<(), StorageError> {
        if let Some(result) = self.snapshots.take_result() {
            let (index, data) = result?;
            let (Some(node), Some(storage)) = (self.node.as_mut(), self.storage.as_mut()) else {
                return Ok(());
            };
            let len = data.len();
            match node.compact(index, data) {
                Ok(meta) => {
                    storage.record_snapshot(&meta, len)?;
                    self.last_snapshot_ms = self
                        .snapshot_started
                        .take()
                        .map_or(0, |t| t.elapsed().as_millis() as u64);
                    log::info!(target: "journal", "snapshot at index {} ({len} bytes) in {} ms; log compacted",
                        meta.index, self.last_snapshot_ms);
                }
                // A snapshot installed from the leader meanwhile covers it.
                Err(e) => log::debug!(target: "journal", "compaction at {index} skipped: {e}"),
            }
        }
        let Some(node) = self.node.as_ref() else {
            return Ok(());
        };
        let applied = node.applied();
        if !self.snapshots.busy()
            && applied >= node.snapshot_meta().index + self.settings.raft.snapshot_interval
        {
            self.snapshot_started = Some(Instant::now());
            self.snapshots.request(applied);
        }
        Ok(())
    }

    /// A transaction failed: behave as if the process had crashed.
    fn storage_failed(&mut self, e: StorageError, now: u64) {
        log::error!(target: "journal", "storage failure: {e}; leaving the cluster until the node can be rebuilt from disk");
        self.node = None;
        self.storage = None;
        let backoff = self.failure.as_ref().map_or(STORAGE_RETRY_MIN_MS, |f| {
            (f.backoff_ms * 2).min(STORAGE_RETRY_MAX_MS)
        });
        self.failure = Some(StorageFailure {
            message: e.message,
            retry_at_ms: now + backoff,
            backoff_ms: backoff,
        });
        self.soft = SoftState {
            role: Role::Follower,
            leader: None,
        };
        let writes = std::mem::take(&mut self.writes);
        for (_, w) in writes {
            self.answer(
                w.token,
                vec![indeterminate(
                    "the node's storage failed while it was in flight",
                )],
            );
        }
        let reads = std::mem::take(&mut self.reads);
        for (_, r) in reads {
            self.answer(
                r.token,
                vec![err_line(
                    ExitCode::Unreachable,
                    "storage failure on this node; retry elsewhere",
                )],
            );
        }
    }

    /// Reopens the database and rebuilds the Raft node from it.
    fn rebuild(&mut self, now: u64) {
        let settings = &self.settings;
        let sm = &mut self.sm;
        let result = (|| {
            let storage = Storage::open(&settings.data_dir, &StorageOptions::default())?;
            let restored = storage.load(sm)?;
            let node = RaftNode::new(raft_config(settings), restored)
                .map_err(|e| StorageError::new(e.to_string()))?;
            Ok::<_, StorageError>((storage, node))
        })();
        match result {
            Ok((storage, node)) => {
                log::info!(target: "journal", "storage reopened; node rebuilt at index {}", node.last_index());
                self.soft = node.soft_state();
                self.durable_term = node.term();
                self.storage = Some(storage);
                self.node = Some(node);
                self.failure = None;
            }
            Err(e) => {
                if let Some(f) = self.failure.as_mut() {
                    f.message = e.message;
                    f.backoff_ms = (f.backoff_ms * 2).min(STORAGE_RETRY_MAX_MS);
                    f.retry_at_ms = now + f.backoff_ms;
                }
            }
        }
    }

    fn expire_requests(&mut self, now: u64) {
        let expired: Vec<u64> = self
            .writes
            .iter()
            .filter(|(_, w)| w.deadline_ms <= now)
            .map(|(i, _)| *i)
            .collect();
        for index in expired {
            if let Some(w) = self.writes.remove(&index) {
                let why = format!(
                    "not committed within {} ms (log index {index}); it may still commit",
                    self.settings.clients.request_timeout_ms
                );
                self.answer(w.token, vec![indeterminate(&why)]);
            }
        }
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.deadline_ms <= now)
            .map(|(i, _)| *i)
            .collect();
        for id in expired {
            if let Some(r) = self.reads.remove(&id) {
                self.answer(
                    r.token,
                    vec![err_line(ExitCode::Unreachable, "read timed out; retry")],
                );
            }
        }
    }
}

/// The answer for a write whose fate is unknown.
fn indeterminate(why: &str) -> String {
    err_line(ExitCode::Unreachable, &format!("indeterminate: {why}"))
}

/// Room above `max_body` for what wraps a client's body in a log entry.
const ENTRY_ENVELOPE_BYTES: usize = 64 << 10;

pub(crate) fn raft_config(s: &Settings) -> RaftConfig {
    let mut c = RaftConfig::new(s.node_id);
    c.heartbeat_ms = s.raft.heartbeat_ms;
    c.election_timeout_min_ms = s.raft.election_timeout_min_ms;
    c.election_timeout_max_ms = s.raft.election_timeout_max_ms;
    // A client's body (at most max_body) is stored with an envelope: a
    // tag byte for a raw append, a JSON command around a config write.
    // The frame limit leaves room for it (config: max_body + 2 MiB).
    c.max_entry_bytes = s.clients.max_body.0 as usize + ENTRY_ENVELOPE_BYTES;
    c.rng_seed = crate::util::rng::Rng::from_entropy().next_u64();
    c
}

/// Messages only a leader sends, carrying entries (or a snapshot) it
/// already has: the ones worth sending before its own fsync.
fn carries_entries(body: &crate::journal::raft::MessageBody) -> bool {
    use crate::journal::raft::MessageBody;
    match body {
        MessageBody::Append(a) => !a.entries.is_empty(),
        MessageBody::InstallSnapshot(_) => true,
        _ => false,
    }
}
