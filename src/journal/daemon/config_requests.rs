//! The configuration journal's client operations (`man/pact-journal.8`):
//!
//! Writes (on the leader, through Raft; checked here first so a bad spec
//! is refused with its file, line and key before anything is proposed):
//! `apply vcluster=V +len`, `commit node=N [ttl=S] +len`, `rollback SEQ`,
//! `promote NODE [resolution=report|overwrite|keep-local]`,
//! `assign NODE VCLUSTER`, `unassign NODE`, `set-policy VCLUSTER +len`,
//! `record type=T scope=S`. Each names its author:
//! `principal=P role=R [principal_type=human|agent|service]`, and may
//! carry `message=...`.
//!
//! Reads (from this node's replica, J8): `log [n=N] [scope=S]`,
//! `entry SEQ`, `overlay VCLUSTER`, `delta NODE`, `diff-committed
//! [node=N]`, `promote-preview NODE`, `groups`, `group VCLUSTER`,
//! `nodes [node=N] [vcluster=V]`. Streams: `watch`, `boot` (`streams`).

use mio::Token;

use super::{Daemon, WriteKind};
use crate::config::overlay::parse_spec;
use crate::config::Source;
use crate::journal::machine::entry::{
    validate_ttl, Author, Command, ConfigEntry, EntryType, PrincipalType, Resolution, Scope,
};
use crate::journal::machine::{query, tables};
use crate::journal::raft::ProposeError;
use crate::proto::{err_line, ok_line, ExitCode, Record, Request};

/// A read's records, optional body and `ok` fields.
type ReadAnswer = (Vec<Record>, Option<Vec<u8>>, Record);

fn wall_ms() -> u64 {
    crate::util::time::unix_ms(std::time::SystemTime::now())
}

impl Daemon {
    /// A configuration operation, if `req` is one (then it is answered).
    pub(super) fn config_request(&mut self, t: Token, req: &Request, now: u64) -> bool {
        let pos = req.positional();
        let words: Vec<&str> = pos.to_vec();
        let write = match words.as_slice() {
            ["apply"] => self.cmd_apply(req),
            ["commit"] => self.cmd_commit(req),
            ["rollback", seq] => self.cmd_rollback(req, seq),
            ["promote", node] => self.cmd_promote(req, node),
            ["assign", node, vc] => {
                entry_for(req, Scope::Node(node.to_string()), EntryType::NodeAssigned).map(|e| {
                    Command::Assign {
                        entry: e,
                        node: node.to_string(),
                        vcluster: Some(vc.to_string()),
                    }
                })
            }
            ["unassign", node] => entry_for(
                req,
                Scope::Node(node.to_string()),
                EntryType::NodeUnassigned,
            )
            .map(|e| Command::Assign {
                entry: e,
                node: node.to_string(),
                vcluster: None,
            }),
            ["set-policy", vc] => self.cmd_policy(req, vc),
            ["record"] => cmd_record(req),
            ["watch"] => {
                self.watch(t, req);
                return true;
            }
            ["boot"] => {
                self.boot(t, req);
                return true;
            }
            _ => return self.config_read(t, req, &words),
        };
        if let Ok(Command::ApplyOverlay { entry, spec }) = &write {
            if let Some(rec) = self.unchanged_apply(entry, spec) {
                self.answer(t, vec![ok_line(&rec)]);
                return true;
            }
        }
        match write {
            Ok(cmd) => self.propose_command(t, cmd, now),
            Err((code, msg)) => self.answer(t, vec![err_line(code, &msg)]),
        }
        true
    }

    fn propose_command(&mut self, t: Token, mut cmd: Command, now: u64) {
        if let Some(line) = self.unavailable() {
            return self.answer(t, vec![line]);
        }
        let Some(node) = self.node.as_mut() else {
            return self.answer(t, vec![err_line(ExitCode::General, "node not ready")]);
        };
        cmd.entry_mut().timestamp = wall_ms();
        let term = node.term();
        match node.propose(now, cmd.encode()) {
            Ok(index) => self.track_write(t, index, term, WriteKind::Append, now),
            Err(ProposeError::NotLeader { leader }) => {
                let line = self.not_leader(leader);
                self.answer(t, vec![line]);
            }
            Err(e @ ProposeError::TooLarge { .. }) => {
                self.answer(t, vec![err_line(ExitCode::Invalid, &e.to_string())])
            }
            Err(e) => {
                let line = err_line(ExitCode::Unreachable, &format!("not-committed: {e}; retry"));
                self.answer(t, vec![line]);
            }
        }
    }

    /// An apply that changes nothing is answered by the leader without an
    /// entry (and without pushing an identical overlay to every agent).
    /// Only the leader decides: its replica has every committed apply.
    fn unchanged_apply(&self, entry: &ConfigEntry, spec: &str) -> Option<Record> {
        if !self.node.as_ref().is_some_and(|n| n.is_leader()) {
            return None;
        }
        let Scope::VCluster(vc) = &entry.scope else {
            return None;
        };
        let conn = self.storage.as_ref()?.conn();
        let row = tables::overlay(conn, vc).ok().flatten()?;
        let specs = parse_spec(&Source::from_str("spec", spec)).ok()?;
        let mut merged = row.overlay.clone();
        for s in &specs {
            merged.merge(s);
        }
        (merged == row.overlay).then(|| {
            Record::new()
                .field("vcluster", vc)
                .field("version", row.version)
                .field("changes", 0)
                .field("unchanged", "true")
        })
    }

    fn cmd_apply(&self, req: &Request) -> Result<Command, (ExitCode, String)> {
        let vc = req
            .option("vcluster")
            .ok_or((ExitCode::Invalid, "apply needs vcluster=<name>".to_string()))?;
        let spec = body_text(req)?;
        // Refuse a bad spec here, with the client's file name.
        let file = req.option("file").unwrap_or("spec.toml");
        let specs = parse_spec(&Source::from_str(file, &spec))
            .map_err(|e| (ExitCode::Invalid, e.to_string()))?;
        if specs.len() != 1 || specs[0].vcluster != vc {
            return Err((
                ExitCode::Invalid,
                format!("{file}: the body must declare vcluster {vc} only"),
            ));
        }
        let e = entry_for(req, Scope::VCluster(vc.to_string()), EntryType::Commit)?;
        Ok(Command::ApplyOverlay { entry: e, spec })
    }

    fn cmd_commit(&self, req: &Request) -> Result<Command, (ExitCode, String)> {
        let node = req
            .option("node")
            .ok_or((ExitCode::Invalid, "commit needs node=<name>".to_string()))?;
        let spec = body_text(req)?;
        let file = req.option("file").unwrap_or("delta.toml");
        parse_spec(&Source::from_str(file, &spec))
            .map_err(|e| (ExitCode::Invalid, e.to_string()))?;
        let mut e = entry_for(req, Scope::Node(node.to_string()), EntryType::Commit)?;
        if let Some(ttl) = req.option("ttl") {
            let ttl: u32 = ttl.parse().map_err(|_| {
                (
                    ExitCode::Invalid,
                    format!("ttl=\"{ttl}\" is not a number of seconds"),
                )
            })?;
            // The digest's texts, and nothing proposed.
            validate_ttl(ttl).map_err(|m| (ExitCode::Invalid, m))?;
            e.ttl_seconds = Some(ttl);
        }
        Ok(Command::CommitNodeDelta { entry: e, spec })
    }

    fn cmd_rollback(&self, req: &Request, seq: &str) -> Result<Command, (ExitCode, String)> {
        let seq: u64 = seq.parse().map_err(|_| {
            (
                ExitCode::Invalid,
                format!("\"{seq}\" is not a sequence number"),
            )
        })?;
        let mut e = entry_for(req, Scope::Global, EntryType::Rollback)?;
        e.parent = Some(seq);
        Ok(Command::Rollback { entry: e })
    }

    fn cmd_promote(&self, req: &Request, node: &str) -> Result<Command, (ExitCode, String)> {
        let resolution = match req.option("resolution").unwrap_or("report") {
            "report" => Resolution::Report,
            "overwrite" => Resolution::Overwrite,
            "keep-local" => Resolution::KeepLocal,
            other => {
                return Err((
                    ExitCode::Invalid,
                    format!("resolution=\"{other}\": report, overwrite or keep-local"),
                ))
            }
        };
        let e = entry_for(req, Scope::Node(node.to_string()), EntryType::Commit)?;
        Ok(Command::Promote {
            entry: e,
            node: node.to_string(),
            resolution,
        })
    }

    fn cmd_policy(&self, req: &Request, vc: &str) -> Result<Command, (ExitCode, String)> {
        let policy = body_text(req)?;
        crate::journal::machine::apply::parse_policy(vc, &policy)
            .map_err(|m| (ExitCode::Invalid, m))?;
        let e = entry_for(
            req,
            Scope::VCluster(vc.to_string()),
            EntryType::PolicyUpdate,
        )?;
        Ok(Command::SetPolicy { entry: e, policy })
    }

    /// Reads from the local replica; false when `req` is not one.
    fn config_read(&mut self, t: Token, req: &Request, words: &[&str]) -> bool {
        let Some(storage) = self.storage.as_ref() else {
            if matches!(
                words.first(),
                Some(
                    &("log"
                        | "entry"
                        | "overlay"
                        | "delta"
                        | "diff-committed"
                        | "promote-preview"
                        | "groups"
                        | "group"
                        | "nodes")
                )
            ) {
                self.answer(
                    t,
                    vec![err_line(
                        ExitCode::Unreachable,
                        "storage unavailable on this node; retry elsewhere",
                    )],
                );
                return true;
            }
            return false;
        };
        let conn = storage.conn();
        let now = wall_ms();
        let internal =
            |e: crate::journal::storage::StorageError| (ExitCode::General, e.to_string());
        // (records, body, ok fields)
        let result: Result<ReadAnswer, (ExitCode, String)> = match words {
            ["log"] => {
                let n = match req.option("n").map(str::parse::<usize>) {
                    None => 20,
                    Some(Ok(n)) => n,
                    Some(Err(_)) => return self.invalid(t, "n= must be a number"),
                };
                query::log(conn, n, req.option("scope"))
                    .map(|r| (r, None, Record::new()))
                    .map_err(internal)
            }
            ["entry", seq] => match seq.parse::<u64>() {
                Err(_) => return self.invalid(t, "entry SEQ: not a number"),
                Ok(s) => match query::entry_json(conn, s).map_err(internal) {
                    Ok(Some(json)) => Ok((
                        vec![],
                        Some(json.into_bytes()),
                        Record::new().field("seq", s),
                    )),
                    Ok(None) => Err((ExitCode::Invalid, format!("no configuration entry {s}"))),
                    Err(e) => Err(e),
                },
            },
            ["overlay", vc] | ["group", vc] => match tables::overlay(conn, vc).map_err(internal) {
                Ok(Some(o)) => {
                    let nodes = tables::nodes_of(conn, vc)
                        .map_err(internal)
                        .unwrap_or_default();
                    let rec = Record::new()
                        .field("vcluster", *vc)
                        .field("version", o.version)
                        .field("checksum", &o.checksum)
                        .field("size", o.toml.len())
                        .field("nodes", nodes.join(","));
                    Ok((vec![rec], Some(o.toml.into_bytes()), Record::new()))
                }
                Ok(None) => Err((ExitCode::Invalid, format!("no overlay for vcluster {vc}"))),
                Err(e) => Err(e),
            },
            ["delta", node] => match tables::delta(conn, node).map_err(internal) {
                Ok(Some(d)) => {
                    let mut rec = Record::new()
                        .field("node", *node)
                        .field("vcluster", &d.vcluster)
                        .field("version", d.version)
                        .field("expired", d.expired(now));
                    if let Some(e) = d.expires_ms {
                        rec.push("expires", crate::util::time::rfc3339_ms(e));
                    }
                    Ok((vec![rec], Some(d.to_toml().into_bytes()), Record::new()))
                }
                Ok(None) => Ok((
                    vec![],
                    None,
                    Record::new().field("node", *node).field("version", 0),
                )),
                Err(e) => Err(e),
            },
            ["diff-committed"] => query::diff_committed(conn, req.option("node"), now)
                .map(|r| (r, None, Record::new()))
                .map_err(internal),
            ["promote-preview", node] => {
                match query::promote_preview(conn, node, now).map_err(internal) {
                    Ok(Ok((text, conflicts))) => {
                        let recs = conflicts
                            .iter()
                            .map(|c| {
                                Record::new()
                                    .field("conflict", &c.node)
                                    .field("key", &c.key)
                                    .field("local", &c.local)
                                    .field("promoted", &c.promoted)
                            })
                            .collect();
                        Ok((
                            recs,
                            Some(text.into_bytes()),
                            Record::new().field("conflicts", conflicts.len()),
                        ))
                    }
                    Ok(Err(m)) => Err((ExitCode::Invalid, m)),
                    Err(e) => Err(e),
                }
            }
            ["groups"] => query::groups(conn)
                .map(|r| (r, None, Record::new()))
                .map_err(internal),
            ["nodes"] => {
                match query::nodes(conn, req.option("node"), req.option("vcluster"), now) {
                    Ok(mut recs) => {
                        for r in &mut recs {
                            let node = r.get("node").unwrap_or("").to_string();
                            r.push("connected_here", self.streams.is_connected(&node));
                        }
                        Ok((recs, None, Record::new()))
                    }
                    Err(e) => Err(internal(e)),
                }
            }
            _ => return false,
        };
        match result {
            Ok((recs, body, fin)) => {
                let lines: Vec<String> = recs.iter().map(Record::to_line).collect();
                self.clients.send(self.poll.registry(), t, &lines);
                if let Some(b) = body {
                    self.clients.send_body(t, &b);
                }
                self.answer(t, vec![ok_line(&fin)]);
            }
            Err((code, msg)) => self.answer(t, vec![err_line(code, &msg)]),
        }
        true
    }

    fn invalid(&mut self, t: Token, msg: &str) -> bool {
        self.answer(t, vec![err_line(ExitCode::Invalid, msg)]);
        true
    }
}

fn body_text(req: &Request) -> Result<String, (ExitCode, String)> {
    if req.body_len.is_none() {
        return Err((
            ExitCode::Invalid,
            format!("{} needs a body: +<len> then the TOML", req.words[0]),
        ));
    }
    String::from_utf8(req.body.clone())
        .map_err(|_| (ExitCode::Invalid, "the body is not UTF-8".to_string()))
}

/// The entry of a request: its author (J3 refuses an anonymous one) and
/// message.
fn entry_for(
    req: &Request,
    scope: Scope,
    entry_type: EntryType,
) -> Result<ConfigEntry, (ExitCode, String)> {
    let principal_type = match req.option("principal_type").unwrap_or("human") {
        "human" => PrincipalType::Human,
        "agent" => PrincipalType::Agent,
        "service" => PrincipalType::Service,
        other => {
            return Err((
                ExitCode::Invalid,
                format!("principal_type=\"{other}\": human, agent or service"),
            ))
        }
    };
    let e = ConfigEntry {
        sequence: 0,
        timestamp: 0,
        entry_type,
        scope,
        author: Author {
            principal: req.option("principal").unwrap_or("").to_string(),
            principal_type,
            role: req.option("role").unwrap_or("").to_string(),
        },
        parent: None,
        state_delta: None,
        policy_ref: req.option("policy_ref").unwrap_or("").to_string(),
        ttl_seconds: None,
        emergency_reason: req.option("emergency_reason").map(str::to_string),
        message: req.option("message").map(str::to_string),
    };
    crate::journal::machine::entry::validate_entry(&e, u64::MAX)
        .map_err(|m| (ExitCode::Invalid, m))?;
    Ok(e)
}

/// `record type=T scope=S [parent=P] [ttl=S]`: an informational entry.
fn cmd_record(req: &Request) -> Result<Command, (ExitCode, String)> {
    let ty = req.option("type").ok_or((
        ExitCode::Invalid,
        "record needs type=<EntryType>".to_string(),
    ))?;
    let entry_type: EntryType = serde_json::from_str(&format!("\"{ty}\""))
        .map_err(|_| (ExitCode::Invalid, format!("unknown entry type \"{ty}\"")))?;
    let scope = Scope::parse(req.option("scope").unwrap_or("global"))
        .map_err(|m| (ExitCode::Invalid, m))?;
    let mut e = entry_for(req, scope, entry_type)?;
    if let Some(p) = req.option("parent") {
        e.parent = Some(p.parse().map_err(|_| {
            (
                ExitCode::Invalid,
                "parent= must be a sequence number".to_string(),
            )
        })?);
    }
    if req.body_len.is_some() {
        e.state_delta = Some(
            serde_json::from_slice(&req.body)
                .map_err(|err| (ExitCode::Invalid, format!("state delta: {err}")))?,
        );
    }
    Ok(Command::Record { entry: e })
}
