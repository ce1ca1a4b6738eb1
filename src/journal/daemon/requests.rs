//! What client requests mean (the grammar is in `man/pact-journal.8`):
//!
//! - `hello`, `status`: answered at once from local state;
//! - `append +<len>`: proposed on the leader, answered `ok seq=<n>` once
//!   committed and applied; a follower answers `err 5 not-leader: ...
//!   leader_addr=<host:port>` so the client can go there;
//! - `get <seq>`, `range <from> <to> [limit=<n>]`: linearizable reads
//!   through ReadIndex, served once applied reaches the read index;
//! - `member add <id> [learner=true]`, `member remove <id>`,
//!   `member promote <id>`: single-server membership changes (leader).

use std::time::Instant;

use mio::Token;

use super::{Daemon, PendingRead, PendingWrite, WriteKind};
use crate::journal::raft::{Membership, NodeId, ProposeError, Role};
use crate::journal::state_machine::{ReadOp, StateMachine};
use crate::proto::{err_line, ok_line, ExitCode, Record, Request};

/// The operations `hello` lists.
const OPERATIONS: &str = "hello,status,append,get,range,member,apply,commit,rollback,promote,assign,unassign,set-policy,record,log,entry,overlay,delta,diff-committed,promote-preview,groups,group,nodes,watch,boot";

/// The grammar of a core operation, for a request that names it but
/// does not follow it.
fn core_usage(op: &str) -> Option<&'static str> {
    Some(match op {
        "hello" => "hello",
        "status" => "status",
        "append" => "append +<len>, then <len> bytes",
        "get" => "get <seq>",
        "range" => "range <from> <to> [limit=<n>]",
        "member" => "member add|remove|promote <id> [learner=true]",
        _ => return None,
    })
}

/// `words` are all `key=value` options among `allowed`.
fn only_options(words: &[&str], allowed: &[&str]) -> Result<(), String> {
    for w in words {
        match w.split_once('=') {
            Some((k, _)) if allowed.contains(&k) => {}
            Some((k, _)) => {
                return Err(format!(
                    "unknown option \"{k}\" (options: {})",
                    allowed.join(", ")
                ))
            }
            None => return Err(format!("unexpected word \"{w}\"")),
        }
    }
    Ok(())
}

impl Daemon {
    pub(super) fn on_request(&mut self, t: Token, req: Request, now: u64) {
        let words: Vec<&str> = req.words.iter().map(String::as_str).collect();
        let result = match words.as_slice() {
            ["hello"] => Ok(self.hello()),
            ["status"] => Ok(self.status()),
            ["append"] => return self.append(t, req.body, req.body_len.is_some(), now),
            ["get", seq] => match parse_num(seq, "seq") {
                Ok(seq) => return self.read(t, ReadOp::Get { seq }, now),
                Err(e) => Err(e),
            },
            ["range", from, to, opts @ ..] => match only_options(opts, &["limit"])
                .and_then(|()| self.parse_range(&req, from, to))
            {
                Ok(op) => return self.read(t, op, now),
                Err(e) => Err(e),
            },
            ["member", verb @ ("add" | "remove" | "promote"), id, opts @ ..] => {
                match only_options(opts, &["learner"]).and_then(|()| parse_num(id, "node id")) {
                    Ok(id) => {
                        let learner = req.option("learner") == Some("true");
                        return self.member_change(t, verb, id, learner, now);
                    }
                    Err(e) => Err(e),
                }
            }
            _ if self.config_request(t, &req, now) => return,
            [op, ..] if core_usage(op).is_some() => {
                Err(format!("usage: {}", core_usage(op).unwrap_or_default()))
            }
            _ => Err(format!(
                "unknown request \"{}\" (operations: {OPERATIONS})",
                words.first().copied().unwrap_or("")
            )),
        };
        let lines = match result {
            Ok(lines) => lines,
            Err(msg) => vec![err_line(ExitCode::Invalid, &msg)],
        };
        self.answer(t, lines);
    }

    fn hello(&self) -> Vec<String> {
        vec![ok_line(
            &Record::new()
                .field("name", "pact-journal")
                .field("version", env!("CARGO_PKG_VERSION"))
                .field("node", self.settings.node_id)
                .field("cluster", &self.settings.cluster)
                .field("ops", OPERATIONS),
        )]
    }

    fn parse_range(&self, req: &Request, from: &str, to: &str) -> Result<ReadOp, String> {
        let from = parse_num(from, "from")?;
        let to = parse_num(to, "to")?;
        if to < from {
            return Err(format!("range {from} {to}: the end is before the start"));
        }
        let max = self.settings.clients.max_range;
        let limit = match req.option("limit") {
            Some(l) => parse_num(l, "limit")? as usize,
            None => max,
        };
        if limit == 0 || limit > max {
            return Err(format!("limit must be 1 to {max}"));
        }
        Ok(ReadOp::Range {
            from,
            to,
            limit,
            max_bytes: self.settings.clients.max_range_bytes.0 as usize,
        })
    }

    /// Why this node cannot take part right now, if it cannot.
    pub(super) fn unavailable(&self) -> Option<String> {
        self.failure.as_ref().map(|f| {
            err_line(
                ExitCode::General,
                &format!(
                    "storage failure on node {}: {}; not serving until it recovers",
                    self.settings.node_id, f.message
                ),
            )
        })
    }

    /// The `err` that sends a write to the leader (or says there is none).
    pub(super) fn not_leader(&self, leader: Option<NodeId>) -> String {
        match leader.and_then(|l| self.settings.peers.get(&l).map(|a| (l, a))) {
            Some((id, addr)) => err_line(
                ExitCode::Unreachable,
                &format!(
                    "not-leader: node {id} leads; leader={id} leader_addr={}",
                    addr.client
                ),
            ),
            None => err_line(
                ExitCode::Unreachable,
                "no-leader: no leader known (election in progress); retry",
            ),
        }
    }

    fn append(&mut self, t: Token, body: Vec<u8>, has_body: bool, now: u64) {
        if !has_body {
            let line = err_line(ExitCode::Invalid, "append needs a body: append +<len>");
            return self.answer(t, vec![line]);
        }
        if let Some(line) = self.unavailable() {
            return self.answer(t, vec![line]);
        }
        let Some(node) = self.node.as_mut() else {
            return self.answer(t, vec![err_line(ExitCode::General, "node not ready")]);
        };
        let term = node.term();
        match node.propose(now, crate::journal::machine::raw_payload(&body)) {
            Ok(index) => self.track_write(t, index, term, WriteKind::Append, now),
            Err(ProposeError::NotLeader { leader }) => {
                let line = self.not_leader(leader);
                self.answer(t, vec![line]);
            }
            Err(e @ ProposeError::TooLarge { .. }) => {
                self.answer(t, vec![err_line(ExitCode::Invalid, &e.to_string())]);
            }
            Err(e) => {
                let line = err_line(ExitCode::Unreachable, &format!("not-committed: {e}; retry"));
                self.answer(t, vec![line]);
            }
        }
    }

    /// Remembers a proposal until its index is applied. An older proposal
    /// at the same index (from an earlier term of ours, since truncated
    /// here) may still commit through another node: its fate is unknown.
    pub(super) fn track_write(
        &mut self,
        t: Token,
        index: u64,
        term: u64,
        kind: WriteKind,
        now: u64,
    ) {
        let write = PendingWrite {
            token: t,
            term,
            kind,
            deadline_ms: now + self.settings.clients.request_timeout_ms,
            started: Instant::now(),
        };
        if let Some(old) = self.writes.insert(index, write) {
            let line = super::indeterminate("its log position was overwritten by a newer leader");
            self.answer(old.token, vec![line]);
        }
    }

    fn read(&mut self, t: Token, op: ReadOp, now: u64) {
        if let Some(line) = self.unavailable() {
            return self.answer(t, vec![line]);
        }
        let Some(node) = self.node.as_mut() else {
            return self.answer(t, vec![err_line(ExitCode::General, "node not ready")]);
        };
        let id = self.next_read_id;
        self.next_read_id += 1;
        self.reads.insert(
            id,
            PendingRead {
                token: t,
                op,
                deadline_ms: now + self.settings.clients.request_timeout_ms,
                index: None,
            },
        );
        node.read_index(now, id);
    }

    /// Answers a confirmed read from the applied state.
    pub(super) fn serve_read(&mut self, t: Token, op: ReadOp) {
        let Some(storage) = self.storage.as_ref() else {
            return self.answer(
                t,
                vec![err_line(
                    ExitCode::Unreachable,
                    "storage unavailable; retry",
                )],
            );
        };
        match self.sm.read(storage.conn(), op) {
            Ok(reply) => {
                let count = reply.len();
                let mut lines = Vec::new();
                for (rec, body) in reply {
                    lines.push(rec.to_line());
                    self.clients.send(self.poll.registry(), t, &lines);
                    lines.clear();
                    if let Some(b) = body {
                        self.clients.send_body(t, &b);
                    }
                }
                let fin = match op {
                    ReadOp::Range { .. } => ok_line(&Record::new().field("count", count)),
                    ReadOp::Get { .. } => ok_line(&Record::new()),
                };
                self.answer(t, vec![fin]);
            }
            Err((code, msg)) => self.answer(t, vec![err_line(code, &msg)]),
        }
    }

    fn member_change(&mut self, t: Token, verb: &str, id: NodeId, learner: bool, now: u64) {
        if let Some(line) = self.unavailable() {
            return self.answer(t, vec![line]);
        }
        let Some(node) = self.node.as_mut() else {
            return self.answer(t, vec![err_line(ExitCode::General, "node not ready")]);
        };
        let mut m: Membership = node.membership().clone();
        let known = self.settings.peers.contains_key(&id);
        let change = match verb {
            "add" if !known => Err(format!(
                "node {id} has no address: list it in journal.raft.members or learners on every node first"
            )),
            "add" if m.contains(id) => Err(format!("node {id} is already a member")),
            "add" => {
                if learner {
                    m.learners.insert(id);
                } else {
                    m.voters.insert(id);
                }
                Ok(m)
            }
            "remove" if !m.contains(id) => Err(format!("node {id} is not a member")),
            "remove" => {
                m.voters.remove(&id);
                m.learners.remove(&id);
                Ok(m)
            }
            _ if !m.is_learner(id) => Err(format!("node {id} is not a learner")),
            _ => {
                m.learners.remove(&id);
                m.voters.insert(id);
                Ok(m)
            }
        };
        let new = match change {
            Ok(m) => m,
            Err(e) => return self.answer(t, vec![err_line(ExitCode::Invalid, &e)]),
        };
        let term = node.term();
        match node.propose_membership(now, new) {
            Ok(index) => self.track_write(t, index, term, WriteKind::Membership, now),
            Err(ProposeError::NotLeader { leader }) => {
                let line = self.not_leader(leader);
                self.answer(t, vec![line]);
            }
            Err(e) => self.answer(t, vec![err_line(ExitCode::Conflict, &e.to_string())]),
        }
    }

    /// The `status` answer: one record for the node, one per peer.
    pub(super) fn status(&self) -> Vec<String> {
        let s = &self.settings;
        let mut rec = Record::new().field("node", s.node_id);
        match (&self.node, &self.failure) {
            (Some(node), _) => {
                let st = node.status();
                let leader_addr = st
                    .leader
                    .and_then(|l| s.peers.get(&l))
                    .map_or("-".to_string(), |a| a.client.clone());
                let ids = |v: &std::collections::BTreeSet<NodeId>| {
                    if v.is_empty() {
                        "-".to_string()
                    } else {
                        v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
                    }
                };
                rec.push("role", role_name(st.role));
                rec.push("term", st.term);
                rec.push(
                    "leader",
                    st.leader.map_or("-".to_string(), |l| l.to_string()),
                );
                rec.push("leader_addr", leader_addr);
                rec.push("commit_index", st.commit_index);
                rec.push("applied_index", st.applied_index);
                rec.push("last_index", st.last_index);
                rec.push("snapshot_index", st.snapshot_index);
                rec.push("voters", ids(&st.membership.voters));
                rec.push("learners", ids(&st.membership.learners));
                rec.push("log_entries", st.last_index - st.snapshot_index);
                rec.push("storage", "ok");
            }
            (None, Some(f)) => {
                rec.push("role", "stopped");
                rec.push("storage", "failed");
                rec.push("storage_error", &f.message);
            }
            (None, None) => rec.push("role", "stopped"),
        }
        for (k, v) in self.sm.status().fields {
            rec.push(&k, v);
        }
        if let Some(storage) = &self.storage {
            let (_, bytes) = storage.sizes();
            rec.push("db_bytes", bytes);
        }
        rec.push("pending_writes", self.writes.len());
        rec.push("pending_reads", self.reads.len());
        rec.push("clients", self.clients.connection_count());
        rec.push("boot_streams", self.streams.boot_streams());
        rec.push("watches", self.streams.watches());
        for (k, v) in self.fsync_hist.fields("fsync") {
            rec.push(&k, v);
        }
        for (k, v) in self.commit_hist.fields("commit") {
            rec.push(&k, v);
        }
        rec.push("last_snapshot_ms", self.last_snapshot_ms);
        let mut lines = vec![rec.to_line()];
        if let Some(node) = &self.node {
            let st = node.status();
            let now = self.now_ms();
            for p in st.peers {
                let r = Record::new()
                    .field("peer", p.id)
                    .field("voter", p.voter)
                    .field("match_index", p.match_index)
                    .field("next_index", p.next_index)
                    .field("lag", p.lag)
                    .field("state", format!("{:?}", p.state).to_lowercase())
                    .field("connected", self.peers.connected(p.id))
                    .field("dropped", self.peers.dropped(p.id))
                    .field(
                        "heard_ms_ago",
                        p.last_heard_ms
                            .map_or("-".to_string(), |h| now.saturating_sub(h).to_string()),
                    );
                lines.push(r.to_line());
            }
        }
        lines.push(ok_line(&Record::new()));
        lines
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Follower => "follower",
        Role::PreCandidate => "precandidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
        Role::Learner => "learner",
    }
}

fn parse_num(s: &str, what: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("{what} \"{s}\" is not a non-negative integer"))
}
