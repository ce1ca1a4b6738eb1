//! Boot config streams, subscriptions and watches (`man/pact-journal.8`,
//! grammar in `proto::boot`).
//!
//! `boot node=N vcluster=V version=X node_version=Y from=S` streams what
//! the agent lacks — the vCluster's overlay (zstd, in chunks, versioned
//! and checksummed), the node's delta — then `complete`; the connection
//! then stays the node's subscription: every later change to its
//! vCluster's overlay (which holds its policy and blacklist), its delta or
//! its assignment is pushed after a `change` record, and a heartbeat
//! record every few seconds keeps both ends honest.
//!
//! Any journal node serves streams from its local replica (J8). An
//! overlay is compressed once per version and the same buffer is queued
//! to every connection that needs it. The number of boot streams is
//! bounded; beyond it a client gets `err 5 retry later`.

use std::collections::HashMap;
use std::sync::Arc;

use mio::Token;

use super::Daemon;
use crate::journal::machine::apply::Change;
use crate::journal::machine::tables;
use crate::proto::boot::{encode_delta, encode_overlay, BootRequest};
use crate::proto::{err_line, ExitCode, Record, Request};

/// Heartbeat period of streams.
const HEARTBEAT_MS: u64 = 5_000;
/// Most `change` records replayed to a reconnecting agent.
const MAX_REPLAY: usize = 1000;

/// One agent's subscription and what it has.
#[derive(Debug, Clone)]
struct Sub {
    node: String,
    vcluster: String,
    version: u64,
    node_version: u64,
}

/// A `watch` of applied entries.
#[derive(Debug, Clone)]
struct Watch {
    vcluster: Option<String>,
    /// The next journal seq it has not been shown (entries a snapshot
    /// brought in were never applied one by one, but are shown too).
    next_seq: u64,
}

pub struct Streams {
    subs: HashMap<Token, Sub>,
    watches: HashMap<Token, Watch>,
    max_boot: usize,
    /// vCluster → (version, the overlay records and bodies on the wire).
    overlays: HashMap<String, (u64, Arc<[u8]>)>,
    next_hb_ms: Option<u64>,
    /// Wall-clock ms up to which expired node deltas were pushed.
    expiry_checked_ms: u64,
}

impl Streams {
    pub fn new(max_boot: usize) -> Streams {
        Streams {
            subs: HashMap::new(),
            watches: HashMap::new(),
            max_boot,
            overlays: HashMap::new(),
            next_hb_ms: None,
            expiry_checked_ms: wall_ms(),
        }
    }

    pub fn next_heartbeat_ms(&self) -> Option<u64> {
        self.next_hb_ms
    }

    pub fn is_connected(&self, node: &str) -> bool {
        self.subs.values().any(|s| s.node == node)
    }

    pub fn boot_streams(&self) -> usize {
        self.subs.len()
    }

    pub fn watches(&self) -> usize {
        self.watches.len()
    }
}

fn wall_ms() -> u64 {
    crate::util::time::unix_ms(std::time::SystemTime::now())
}

impl Daemon {
    pub(super) fn boot(&mut self, t: Token, req: &Request) {
        let br = match BootRequest::from_request(req) {
            Ok(b) => b,
            Err(m) => return self.answer(t, vec![err_line(ExitCode::Invalid, &m)]),
        };
        // Closed streams are forgotten lazily (here only when the count
        // matters: a sweep per boot would make a storm quadratic).
        if self.streams.subs.len() >= self.streams.max_boot {
            self.forget_closed_streams();
        }
        if self.streams.subs.len() >= self.streams.max_boot {
            let m = format!(
                "retry later: {} boot streams in progress on this journal node (max_concurrent_boot_streams = {})",
                self.streams.subs.len(),
                self.streams.max_boot
            );
            return self.answer(t, vec![err_line(ExitCode::Unreachable, &m)]);
        }
        let Some(conn) = self.storage.as_ref().map(|s| s.conn()) else {
            return self.answer(
                t,
                vec![err_line(
                    ExitCode::Unreachable,
                    "storage unavailable on this node; retry elsewhere",
                )],
            );
        };
        // A replica that has not applied what the agent already saw would
        // hand it an older state: send it elsewhere (or back later).
        let applied = self.sm.next_seq().saturating_sub(1);
        if br.from > 0 && (self.sm.next_seq() == 0 || applied < br.from) {
            let m = format!(
                "retry later: this journal replica has applied up to seq {applied}, behind the agent's seq {}",
                br.from
            );
            return self.answer(t, vec![err_line(ExitCode::Unreachable, &m)]);
        }
        // The journal's assignment wins over what the agent believes.
        let vcluster = match tables::assignment(conn, &br.node) {
            Ok(Some(vc)) => vc,
            Ok(None) if !br.vcluster.is_empty() => br.vcluster.clone(),
            Ok(None) => {
                let m = format!(
                    "node {} is not assigned to a vcluster (pact node assign {} <vcluster>)",
                    br.node, br.node
                );
                return self.answer(t, vec![err_line(ExitCode::Invalid, &m)]);
            }
            Err(e) => return self.answer(t, vec![err_line(ExitCode::General, &e.to_string())]),
        };
        // Changes since what the agent last saw (a reconnect resumes).
        let replay = replay_changes(conn, &br.node, &vcluster, br.from).unwrap_or_default();
        let last_seq = self.sm.next_seq().saturating_sub(1);
        self.clients.set_streaming(t);
        // The agent's versions are of the vCluster it names: moved while it
        // was away, it gets the new one's overlay whatever the numbers.
        let moved = !br.vcluster.is_empty() && br.vcluster != vcluster;
        let mut sub = Sub {
            node: br.node.clone(),
            vcluster,
            version: br.version,
            node_version: br.node_version,
        };
        self.send_state(t, &mut sub, br.version == 0 || moved, moved);
        let mut tail = String::new();
        for (seq, kind, scope) in replay {
            tail.push_str(
                &Record::new()
                    .field("change", "")
                    .field("seq", seq)
                    .field("kind", kind)
                    .field("scope", scope)
                    .to_line(),
            );
            tail.push('\n');
        }
        tail.push_str(&format!(
            "complete base_version={} node_version={} seq={last_seq}\n",
            sub.version, sub.node_version
        ));
        self.clients
            .send_raw(self.poll.registry(), t, tail.as_bytes());
        log::debug!(target: "journal::streams", "boot stream for {} (vcluster {}, overlay v{}, delta v{})", sub.node, sub.vcluster, sub.version, sub.node_version);
        self.streams.subs.insert(t, sub);
        self.arm_heartbeat();
    }

    pub(super) fn watch(&mut self, t: Token, req: &Request) {
        self.clients.set_streaming(t);
        self.streams.watches.insert(
            t,
            Watch {
                vcluster: req.option("vcluster").map(str::to_string),
                next_seq: self.sm.next_seq(),
            },
        );
        self.arm_heartbeat();
    }

    fn arm_heartbeat(&mut self) {
        if self.streams.next_hb_ms.is_none() {
            self.streams.next_hb_ms = Some(self.now_ms() + HEARTBEAT_MS);
        }
    }

    /// Sends `sub`'s node what changed since the versions it has. Version
    /// numbers alone cannot tell every change (0 is both "none" and the
    /// overlay written by entry 0; the same number in another vCluster):
    /// `force_overlay` and `force_delta` send them anyway (a delta that is
    /// gone as `delta version=0`).
    fn send_state(&mut self, t: Token, sub: &mut Sub, force_overlay: bool, force_delta: bool) {
        let Some(conn) = self.storage.as_ref().map(|s| s.conn()) else {
            return;
        };
        let head = tables::overlay_head(conn, &sub.vcluster).ok().flatten();
        let version = head.as_ref().map_or(0, |h| h.0);
        if version != sub.version || force_overlay {
            let cached = self
                .streams
                .overlays
                .get(&sub.vcluster)
                .filter(|(v, _)| *v == version)
                .map(|(_, wire)| wire.clone());
            let text = match (&cached, &head) {
                (None, Some(_)) => tables::overlay_text(conn, &sub.vcluster).ok().flatten(),
                _ => None,
            };
            let wire = match (cached, head, text) {
                (Some(wire), _, _) => wire,
                (None, Some((_, checksum)), Some(toml)) => {
                    let compressed = zstd::bulk::compress(toml.as_bytes(), 3).unwrap_or_default();
                    let wire: Arc<[u8]> =
                        encode_overlay(&sub.vcluster, version, &checksum, toml.len(), &compressed)
                            .into();
                    self.streams
                        .overlays
                        .insert(sub.vcluster.clone(), (version, wire.clone()));
                    wire
                }
                _ => {
                    let empty = crate::util::sha256::sha256_hex(b"");
                    let compressed = zstd::bulk::compress(b"", 3).unwrap_or_default();
                    encode_overlay(&sub.vcluster, 0, &empty, 0, &compressed).into()
                }
            };
            self.clients.send_shared(self.poll.registry(), t, wire);
            sub.version = version;
        }
        let delta = tables::delta(conn, &sub.node)
            .ok()
            .flatten()
            .filter(|d| !d.expired(wall_ms()) && d.vcluster == sub.vcluster);
        match delta {
            Some(d) if d.version != sub.node_version || force_delta => {
                let text = d.to_toml();
                let wire = encode_delta(
                    &sub.node,
                    d.version,
                    &crate::util::sha256::sha256_hex(text.as_bytes()),
                    text.as_bytes(),
                );
                self.clients.send_raw(self.poll.registry(), t, &wire);
                sub.node_version = d.version;
            }
            Some(_) => {}
            None if sub.node_version != 0 || force_delta => {
                self.clients.send_raw(
                    self.poll.registry(),
                    t,
                    &encode_delta(&sub.node, 0, "", b""),
                );
                sub.node_version = 0;
            }
            None => {}
        }
    }

    /// After a committed batch: push what changed to subscribers, and the
    /// applied entries to watchers.
    pub(super) fn publish(&mut self) {
        let (changes, applied) = self.sm.take_changes();
        let refresh = std::mem::take(&mut self.sm.refresh_all);
        if changes.is_empty() && !applied && !refresh {
            return;
        }
        self.forget_closed_streams();
        for (_, c) in &changes {
            if let Change::Overlay { vcluster } = c {
                self.streams.overlays.remove(vcluster);
            }
        }
        if refresh {
            self.streams.overlays.clear();
        }
        let tokens: Vec<Token> = self.streams.subs.keys().copied().collect();
        for t in tokens {
            let Some(mut sub) = self.streams.subs.get(&t).cloned() else {
                continue;
            };
            let mut notes = Vec::new();
            for (seq, c) in &changes {
                let (kind, scope, hit) = match c {
                    Change::Overlay { vcluster } => {
                        ("vcluster", vcluster.clone(), *vcluster == sub.vcluster)
                    }
                    Change::Delta { node } => ("node", node.clone(), *node == sub.node),
                    Change::Assignment { node } => ("assignment", node.clone(), *node == sub.node),
                };
                if hit {
                    notes.push((*seq, kind, scope));
                }
            }
            if notes.is_empty() && !refresh {
                continue;
            }
            let mut moved = false;
            if notes.iter().any(|(_, k, _)| *k == "assignment") {
                if let Some(vc) = self
                    .storage
                    .as_ref()
                    .and_then(|s| tables::assignment(s.conn(), &sub.node).ok().flatten())
                {
                    if vc != sub.vcluster {
                        sub.vcluster = vc;
                        moved = true;
                    }
                }
            }
            // Its vCluster's overlay was written (perhaps by entry 0, whose
            // version 0 looks like "none"): send it.
            let overlay_written = changes.iter().any(
                |(_, c)| matches!(c, Change::Overlay { vcluster } if *vcluster == sub.vcluster),
            );
            let mut head = String::new();
            for (seq, kind, scope) in &notes {
                head.push_str(
                    &Record::new()
                        .field("change", "")
                        .field("seq", seq)
                        .field("kind", *kind)
                        .field("scope", scope)
                        .to_line(),
                );
                head.push('\n');
            }
            self.clients
                .send_raw(self.poll.registry(), t, head.as_bytes());
            self.send_state(t, &mut sub, moved || overlay_written, moved);
            self.streams.subs.insert(t, sub);
        }
        if (applied || refresh) && !self.streams.watches.is_empty() {
            self.publish_to_watches();
        }
    }

    /// Shows every watch the configuration entries it has not seen, from
    /// the table (so entries a snapshot brought in are shown too, in order
    /// and once).
    fn publish_to_watches(&mut self) {
        let Some(conn) = self.storage.as_ref().map(|s| s.conn()) else {
            return;
        };
        let tokens: Vec<Token> = self.streams.watches.keys().copied().collect();
        for t in tokens {
            let Some(mut w) = self.streams.watches.get(&t).cloned() else {
                continue;
            };
            let rows = match crate::journal::machine::query::entries_from(conn, w.next_seq, 100_000)
            {
                Ok(r) => r,
                Err(e) => {
                    log::warn!(target: "journal::streams", "watch: {e}");
                    continue;
                }
            };
            let mut out = String::new();
            for (seq, ty, scope, ts, principal, summary) in rows {
                w.next_seq = seq + 1;
                use crate::journal::machine::entry::Scope;
                let in_scope = match (&w.vcluster, Scope::parse(&scope)) {
                    (None, _) => true,
                    (Some(v), Ok(Scope::VCluster(s))) => *v == s,
                    // A node's entry while it was in the vCluster; its
                    // moves in and out of it too.
                    (Some(v), Ok(Scope::Node(n))) => {
                        let at = |s| crate::journal::machine::query::vcluster_at(conn, &n, s);
                        let moved = ty == "NodeAssigned" || ty == "NodeUnassigned";
                        at(seq).as_deref() == Some(v.as_str())
                            || (moved && seq > 0 && at(seq - 1).as_deref() == Some(v.as_str()))
                    }
                    (Some(_), _) => false,
                };
                if in_scope {
                    let r = Record::new()
                        .field("seq", seq)
                        .field("type", ty)
                        .field("scope", scope)
                        .field("time", crate::util::time::rfc3339_ms(ts))
                        .field("author", principal)
                        .field("summary", summary);
                    out.push_str(&r.to_line());
                    out.push('\n');
                }
            }
            if !out.is_empty() {
                self.clients
                    .send_raw(self.poll.registry(), t, out.as_bytes());
            }
            self.streams.watches.insert(t, w);
        }
    }

    /// The heartbeat record to every stream, when due.
    pub(super) fn heartbeats(&mut self, now: u64) {
        if self.streams.next_hb_ms.is_none_or(|d| d > now) {
            return;
        }
        self.forget_closed_streams();
        self.push_expired_deltas();
        let line = format!("hb={}\n", wall_ms());
        let tokens: Vec<Token> = self
            .streams
            .subs
            .keys()
            .chain(self.streams.watches.keys())
            .copied()
            .collect();
        for t in tokens {
            self.clients
                .send_raw(self.poll.registry(), t, line.as_bytes());
        }
        self.streams.next_hb_ms = (!self.streams.subs.is_empty()
            || !self.streams.watches.is_empty())
        .then_some(now + HEARTBEAT_MS);
    }

    /// Deltas whose TTL ran out since the last check: their subscribed
    /// nodes get the delta's removal (the tables drop them lazily; the
    /// nodes must not keep applying them). Checked with the heartbeats.
    fn push_expired_deltas(&mut self) {
        let now = wall_ms();
        let since = std::mem::replace(&mut self.streams.expiry_checked_ms, now);
        let Some(conn) = self.storage.as_ref().map(|s| s.conn()) else {
            return;
        };
        let nodes = match tables::deltas_expired_between(conn, since, now) {
            Ok(n) if !n.is_empty() => n,
            Ok(_) => return,
            Err(e) => return log::warn!(target: "journal::streams", "expired deltas: {e}"),
        };
        let tokens: Vec<Token> = self
            .streams
            .subs
            .iter()
            .filter(|(_, s)| nodes.contains(&s.node))
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            if let Some(mut sub) = self.streams.subs.get(&t).cloned() {
                log::info!(target: "journal::streams", "node {}: committed delta expired", sub.node);
                self.send_state(t, &mut sub, false, false);
                self.streams.subs.insert(t, sub);
            }
        }
    }

    fn forget_closed_streams(&mut self) {
        let clients = &self.clients;
        self.streams.subs.retain(|t, _| clients.owns(*t));
        self.streams.watches.retain(|t, _| clients.owns(*t));
    }
}

/// Entries after `from` that concern a node or its vCluster.
fn replay_changes(
    conn: &rusqlite::Connection,
    node: &str,
    vcluster: &str,
    from: u64,
) -> rusqlite::Result<Vec<(u64, &'static str, String)>> {
    if from == 0 {
        return Ok(vec![]);
    }
    let mut st = conn.prepare_cached(
        "SELECT seq, scope, entry_type FROM config_entries WHERE seq > ?1 AND (scope = ?2 OR scope = ?3) ORDER BY seq LIMIT ?4",
    )?;
    let rows: Vec<(i64, String, String)> = st
        .query_map(
            rusqlite::params![
                from as i64,
                format!("vcluster:{vcluster}"),
                format!("node:{node}"),
                MAX_REPLAY as i64
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .into_iter()
        .map(|(seq, scope, ty)| {
            // The kinds of the live pushes (see `publish`).
            let assignment = ty == "NodeAssigned" || ty == "NodeUnassigned";
            let (kind, name) = match scope.split_once(':') {
                Some(("node", n)) if assignment => ("assignment", n.to_string()),
                Some(("node", n)) => ("node", n.to_string()),
                Some((_, v)) => ("vcluster", v.to_string()),
                None => ("vcluster", scope.clone()),
            };
            (seq as u64, kind, name)
        })
        .collect())
}
