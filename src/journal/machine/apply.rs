//! What each configuration command does to the state tables. Everything
//! here is deterministic: it reads only the command (including the
//! timestamp its proposer stamped) and the tables, so every replica — and
//! a replay from a snapshot — ends with the same state.

use rusqlite::Transaction;

use super::delta::{conflicts, diff, drop_keys, state_delta, superseded};
use super::entry::{Command, ConfigEntry, EntryType, Resolution, Scope};
use super::tables::{self, DeltaRow};
use crate::config::overlay::{parse_spec, Overlay, OverlaySpec, Policy};
use crate::config::services::{CheckEnv, ServiceSet};
use crate::config::Source;
use crate::journal::storage::StorageError;
use crate::proto::{ExitCode, Record};

/// What changed, for subscriptions and watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A vCluster's overlay has a new version.
    Overlay { vcluster: String },
    /// A node's delta changed (or was removed).
    Delta { node: String },
    /// A node moved to another vCluster (or none).
    Assignment { node: String },
}

/// A command's outcome: accepted with its `ok` fields, the `pact log`
/// summary and the changes; or refused.
pub type Outcome = Result<(Record, String, Vec<Change>), (ExitCode, String)>;

fn refuse<T>(
    code: ExitCode,
    msg: impl Into<String>,
) -> Result<Result<T, (ExitCode, String)>, StorageError> {
    Ok(Err((code, msg.into())))
}

/// The single vCluster a spec declares (it must declare exactly `want`,
/// when given).
fn one_spec(text: &str, want: Option<&str>) -> Result<OverlaySpec, (ExitCode, String)> {
    one_spec_named("spec", text, want)
}

/// [`one_spec`], its errors naming `name`.
fn one_spec_named(
    name: &str,
    text: &str,
    want: Option<&str>,
) -> Result<OverlaySpec, (ExitCode, String)> {
    let specs = parse_spec(&Source::from_str(name, text))
        .map_err(|e| (ExitCode::Invalid, e.to_string()))?;
    let names: Vec<&str> = specs.iter().map(|s| s.vcluster.as_str()).collect();
    match (specs.len(), want) {
        (1, None) => Ok(specs.into_iter().next().expect("one")),
        (1, Some(w)) if names[0] == w => Ok(specs.into_iter().next().expect("one")),
        (_, Some(w)) => Err((
            ExitCode::Invalid,
            format!(
                "the spec must declare vcluster {w} only (it declares: {})",
                names.join(", ")
            ),
        )),
        _ => Err((
            ExitCode::Invalid,
            format!(
                "the spec must declare one vcluster (it declares: {})",
                names.join(", ")
            ),
        )),
    }
}

/// A node's delta, unless it expired before `now_ms` (TTL).
fn live_delta(
    tx: &Transaction<'_>,
    node: &str,
    now_ms: u64,
) -> Result<Option<DeltaRow>, StorageError> {
    Ok(tables::delta(tx, node)?.filter(|d| !d.expired(now_ms)))
}

/// Drop from other nodes' deltas what the overlay now declares with the
/// same value.
fn drop_superseded(
    tx: &Transaction<'_>,
    vc: &str,
    overlay: &Overlay,
    seq: u64,
    now_ms: u64,
    changes: &mut Vec<Change>,
) -> Result<(), StorageError> {
    for mut d in tables::deltas(tx, Some(vc))? {
        if d.expired(now_ms) {
            continue;
        }
        let keys = superseded(overlay, &d.delta);
        if keys.is_empty() {
            continue;
        }
        for k in &keys {
            d.delta.remove(k);
        }
        d.version = seq;
        tables::put_delta(tx, &d, seq)?;
        changes.push(Change::Delta {
            node: d.node.clone(),
        });
    }
    Ok(())
}

/// The services of an overlay once a change is merged: dependencies
/// declared and free of cycles (what every agent would refuse otherwise).
/// Users and binaries are the nodes' business.
/// The outcome of a command that wrote vCluster `vc`'s overlay as `seq`.
fn overlay_written(seq: u64, vc: String, summary: String) -> Outcome {
    let rec = Record::new()
        .field("seq", seq)
        .field("vcluster", &vc)
        .field("version", seq);
    Ok((rec, summary, vec![Change::Overlay { vcluster: vc }]))
}

/// Largest overlay a vCluster may have, as canonical TOML (digest §6).
pub const MAX_OVERLAY_BYTES: usize = 10 * 1024 * 1024;

fn check_size(vc: &str, overlay: &Overlay) -> Result<(), String> {
    let len = overlay.to_toml(vc).len();
    if len > MAX_OVERLAY_BYTES {
        return Err(format!(
            "the overlay of vcluster {vc} would be {len} bytes; the limit is {MAX_OVERLAY_BYTES} (10 MiB)"
        ));
    }
    Ok(())
}

fn spec_touches_services(spec: &OverlaySpec) -> bool {
    !spec.set.services.is_empty() || spec.remove.iter().any(|k| k.starts_with("services."))
}

fn check_merged(vc: &str, overlay: &Overlay) -> Result<(), String> {
    if overlay.services.is_empty() {
        return Ok(());
    }
    // Only the services matter here: the rest can be large (files).
    let services = Overlay {
        services: overlay.services.clone(),
        ..Overlay::default()
    };
    let env = CheckEnv {
        etc: std::path::PathBuf::from("/etc"),
        check_binaries: false,
        check_users: false,
        partial: false,
    };
    ServiceSet::parse(
        &Source::from_str(&format!("vcluster {vc} once merged"), &services.to_toml(vc)),
        Some(vc),
        &env,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn overlay_of(tx: &Transaction<'_>, vc: &str) -> Result<Overlay, StorageError> {
    Ok(tables::overlay(tx, vc)?
        .map(|r| r.overlay)
        .unwrap_or_default())
}

/// Apply one command as entry `seq`. `entry` is updated with what the
/// log records (its state delta, a scope filled in from a rollback target).
pub fn apply(tx: &Transaction<'_>, seq: u64, cmd: &mut Command) -> Result<Outcome, StorageError> {
    let now = cmd.entry().timestamp;
    match cmd {
        Command::Record { entry } => {
            if matches!(
                entry.entry_type,
                EntryType::Commit
                    | EntryType::Rollback
                    | EntryType::PolicyUpdate
                    | EntryType::NodeAssigned
                    | EntryType::NodeUnassigned
            ) {
                return refuse(
                    ExitCode::Invalid,
                    format!(
                        "{} entries are made by their own operation",
                        entry.entry_type.as_str()
                    ),
                );
            }
            let summary = entry.message.clone().unwrap_or_default();
            Ok(Ok((Record::new().field("seq", seq), summary, vec![])))
        }
        Command::ApplyOverlay { entry, spec } => {
            let Scope::VCluster(vc) = entry.scope.clone() else {
                return refuse(ExitCode::Invalid, "apply needs a vcluster scope");
            };
            let spec = match one_spec(spec, Some(&vc)) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            let old = overlay_of(tx, &vc)?;
            let mut new = old.clone();
            new.merge(&spec);
            if spec_touches_services(&spec) {
                if let Err(m) = check_merged(&vc, &new) {
                    return refuse(ExitCode::Invalid, m);
                }
            }
            if let Err(m) = check_size(&vc, &new) {
                return refuse(ExitCode::Invalid, m);
            }
            let sd = diff(&old, &new);
            let n = sd.len();
            entry.entry_type = EntryType::Commit;
            entry.state_delta = Some(sd);
            tables::put_overlay(tx, &vc, &new, seq)?;
            let mut changes = vec![Change::Overlay {
                vcluster: vc.clone(),
            }];
            drop_superseded(tx, &vc, &new, seq, now, &mut changes)?;
            let rec = Record::new()
                .field("seq", seq)
                .field("vcluster", &vc)
                .field("version", seq)
                .field("changes", n);
            Ok(Ok((
                rec,
                format!("apply: {n} change(s) to vcluster {vc}"),
                changes,
            )))
        }
        Command::CommitNodeDelta { entry, spec } => {
            let Scope::Node(node) = entry.scope.clone() else {
                return refuse(ExitCode::Invalid, "a node delta needs a node scope");
            };
            let spec = match one_spec(spec, None) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            let vc = spec.vcluster.clone();
            match tables::assignment(tx, &node)? {
                Some(a) if a != vc => {
                    return refuse(
                        ExitCode::Conflict,
                        format!("node {node} belongs to vcluster {a}, not {vc}"),
                    )
                }
                None => {
                    return refuse(
                        ExitCode::Invalid,
                        format!(
                        "node {node} is not assigned to a vcluster (pact node assign {node} {vc})"
                    ),
                    )
                }
                Some(_) => {}
            }
            let mut d = live_delta(tx, &node, now)?.unwrap_or(DeltaRow {
                node: node.clone(),
                vcluster: vc.clone(),
                delta: Overlay::default(),
                removed: vec![],
                version: 0,
                commits: vec![],
                committed_ms: now,
                expires_ms: None,
            });
            let base = overlay_of(tx, &vc)?;
            let sd = state_delta(&base, &spec.set, &spec.remove);
            let set_keys = super::delta::keyed(&spec.set);
            d.removed.retain(|k| !set_keys.contains_key(k));
            d.delta.merge(&OverlaySpec {
                vcluster: vc.clone(),
                set: spec.set.clone(),
                remove: vec![],
            });
            for k in &spec.remove {
                d.delta.remove(k);
                if !d.removed.contains(k) {
                    d.removed.push(k.clone());
                }
            }
            if spec_touches_services(&spec) {
                let mut merged = base.clone();
                merged.merge(&OverlaySpec {
                    vcluster: vc.clone(),
                    set: d.delta.clone(),
                    remove: d.removed.clone(),
                });
                if let Err(m) = check_merged(&vc, &merged) {
                    return refuse(ExitCode::Invalid, format!("node {node}: {m}"));
                }
            }
            d.version = seq;
            d.commits.push(seq);
            d.committed_ms = now;
            d.expires_ms = entry.ttl_seconds.map(|t| now + u64::from(t) * 1000);
            let n = sd.len();
            entry.entry_type = EntryType::Commit;
            entry.state_delta = Some(sd);
            tables::put_delta(tx, &d, seq)?;
            let rec = Record::new()
                .field("seq", seq)
                .field("node", &node)
                .field("node_version", seq)
                .field("changes", n);
            Ok(Ok((
                rec,
                format!("commit: {n} change(s) on node {node}"),
                vec![Change::Delta { node }],
            )))
        }
        Command::Rollback { entry } => rollback(tx, seq, entry),
        Command::Promote {
            entry,
            node,
            resolution,
        } => promote(tx, seq, entry, node, *resolution),
        Command::Assign {
            entry,
            node,
            vcluster,
        } => {
            for (what, name) in [("node", Some(&*node)), ("vcluster", vcluster.as_ref())] {
                if let Some(n) = name.filter(|n| !crate::config::overlay::valid_name(n)) {
                    let shown: String = n.chars().take(80).collect();
                    return refuse(
                        ExitCode::Invalid,
                        format!(
                            "bad {what} name \"{shown}\": a name is 1 to 64 letters, digits, '-', '_' or '.'"
                        ),
                    );
                }
            }
            let before = tables::assignment(tx, node)?;
            match vcluster {
                Some(_) => entry.entry_type = EntryType::NodeAssigned,
                None if before.is_none() => {
                    return refuse(ExitCode::Invalid, format!("node {node} is not assigned"))
                }
                None => entry.entry_type = EntryType::NodeUnassigned,
            }
            // The assignment keeps the seq of the entry that made it (the
            // moves a rollback checks for): assigning a node where it is
            // changes nothing.
            if before != *vcluster {
                tables::assign(tx, node, vcluster.as_deref(), seq)?;
            }
            let mut changes = vec![Change::Assignment { node: node.clone() }];
            // A delta belongs to its vCluster: moving the node drops it.
            if let Some(mut d) = tables::delta(tx, node)? {
                if Some(&d.vcluster) != vcluster.as_ref() {
                    d.delta = Overlay::default();
                    d.removed.clear();
                    tables::put_delta(tx, &d, seq)?;
                    changes.push(Change::Delta { node: node.clone() });
                }
            }
            let summary = match vcluster {
                Some(vc) => format!("node {node} assigned to vcluster {vc}"),
                None => format!("node {node} unassigned"),
            };
            Ok(Ok((Record::new().field("seq", seq), summary, changes)))
        }
        Command::SetPolicy { entry, policy } => {
            let Scope::VCluster(vc) = entry.scope.clone() else {
                return refuse(ExitCode::Invalid, "a policy needs a vcluster scope");
            };
            let parsed = match parse_policy(&vc, policy) {
                Ok(p) => p,
                Err(e) => return refuse(ExitCode::Invalid, e),
            };
            let mut overlay = overlay_of(tx, &vc)?;
            overlay.policy = Some(parsed.clone());
            entry.entry_type = EntryType::PolicyUpdate;
            // put_overlay keeps the policies table in step.
            tables::put_overlay(tx, &vc, &overlay, seq)?;
            let summary = format!("policy of vcluster {vc} updated");
            Ok(overlay_written(seq, vc, summary))
        }
    }
}

/// A policy from `[vcluster.X.policy]` TOML or from bare policy fields.
pub fn parse_policy(vc: &str, text: &str) -> Result<Policy, String> {
    parse_policy_named("policy", vc, text)
}

/// [`parse_policy`], its errors naming `name` (the CLI's file).
pub fn parse_policy_named(name: &str, vc: &str, text: &str) -> Result<Policy, String> {
    let src = Source::from_str(name, text);
    if text.contains("[vcluster") {
        let spec = one_spec_named(name, text, Some(vc)).map_err(|(_, m)| m)?;
        return spec
            .set
            .policy
            .ok_or_else(|| format!("no [vcluster.{vc}.policy] table"));
    }
    let p: Policy = src.parse().map_err(|e| e.to_string())?;
    if !(p.drift_sensitivity >= 0.0 && p.drift_sensitivity.is_finite()) {
        let at = src
            .key_in(0..text.len(), "drift_sensitivity")
            .map(|r| format!(":{}", text[..r.start].matches('\n').count() + 1))
            .unwrap_or_default();
        return Err(format!(
            "{name}{at}: drift_sensitivity must be a finite number >= 0"
        ));
    }
    Ok(p)
}

fn rollback(
    tx: &Transaction<'_>,
    seq: u64,
    entry: &mut ConfigEntry,
) -> Result<Outcome, StorageError> {
    let Some(target) = entry.parent else {
        return refuse(
            ExitCode::Invalid,
            "rollback needs the sequence to roll back to",
        );
    };
    let scope: Option<String> = tx
        .prepare_cached("SELECT scope FROM config_entries WHERE seq = ?1")
        .and_then(|mut st| {
            use rusqlite::OptionalExtension;
            st.query_row([target as i64], |r| r.get(0)).optional()
        })
        .map_err(tables::sql_err("read a rollback target"))?;
    let scope = match scope.as_deref().map(Scope::parse) {
        Some(Ok(s)) => s,
        _ => {
            return refuse(
                ExitCode::Invalid,
                format!("entry {target} is not a configuration entry"),
            )
        }
    };
    entry.entry_type = EntryType::Rollback;
    entry.scope = scope.clone();
    match scope {
        Scope::VCluster(vc) => {
            let old = overlay_of(tx, &vc)?;
            let restored = tables::overlay_as_of(tx, &vc, target)?;
            entry.state_delta = Some(diff(&old, &restored));
            tables::put_overlay(tx, &vc, &restored, seq)?;
            let summary = format!("rollback of vcluster {vc} to its state at {target}");
            Ok(overlay_written(seq, vc, summary))
        }
        Scope::Node(node) => {
            let current = tables::delta(tx, &node)?;
            let since = tables::assignment_since(tx, &node)?;
            let assigned = since.as_ref().map(|(vc, _)| vc.clone());
            // Moved away and back since `target`: the move dropped that
            // delta, and it stays dropped.
            if let Some((vc, at)) = since.as_ref().filter(|(_, at)| *at > target) {
                return refuse(
                    ExitCode::Conflict,
                    format!(
                        "node {node} was assigned to vcluster {vc} at seq {at}, after {target}: \
                         the move dropped the delta it had then, and a rollback does not bring it back"
                    ),
                );
            }
            let vc = current
                .as_ref()
                .map(|d| d.vcluster.clone())
                .or(assigned.clone())
                .unwrap_or_default();
            let (vc, delta, removed) =
                tables::delta_as_of(tx, &node, target)?.unwrap_or((vc, Overlay::default(), vec![]));
            // A delta belongs to the vCluster the node was in: restoring it
            // after the node moved would put one vCluster's changes on a
            // node of another (and a later promote into the wrong overlay).
            if assigned.is_none() && vc.is_empty() {
                return refuse(
                    ExitCode::Conflict,
                    format!(
                        "node {node} is not assigned to a vcluster: it has no delta to roll back"
                    ),
                );
            }
            if assigned.as_deref() != Some(vc.as_str()) {
                return refuse(
                    ExitCode::Conflict,
                    format!(
                        "node {node} is {} now; its delta at {target} was made in vcluster {vc}: \
                         a node's delta rolls back only within its current vcluster",
                        assigned.map_or("not assigned to a vcluster".to_string(), |a| format!(
                            "in vcluster {a}"
                        ))
                    ),
                );
            }
            let d = DeltaRow {
                node: node.clone(),
                vcluster: vc,
                delta,
                removed,
                version: seq,
                // The delta keeps the expiry it has; one that is gone
                // (promoted) gets the expiry it had then: a rollback is
                // not a reason to make a temporary change permanent.
                expires_ms: match current.as_ref() {
                    Some(c) if !c.delta.is_empty() || !c.removed.is_empty() => c.expires_ms,
                    _ => tables::delta_expiry_as_of(tx, &node, target)?,
                },
                commits: current.map(|c| c.commits).unwrap_or_default(),
                committed_ms: entry.timestamp,
            };
            tables::put_delta(tx, &d, seq)?;
            let rec = Record::new()
                .field("seq", seq)
                .field("node", &node)
                .field("node_version", seq);
            Ok(Ok((
                rec,
                format!("rollback of node {node} to its delta at {target}"),
                vec![Change::Delta { node }],
            )))
        }
        Scope::Global => refuse(
            ExitCode::Invalid,
            format!("entry {target} has global scope: nothing to roll back"),
        ),
    }
}

fn promote(
    tx: &Transaction<'_>,
    seq: u64,
    entry: &mut ConfigEntry,
    node: &str,
    resolution: Resolution,
) -> Result<Outcome, StorageError> {
    let now = entry.timestamp;
    let Some(d) = live_delta(tx, node, now)? else {
        return refuse(
            ExitCode::Invalid,
            format!("node {node} has no committed delta to promote"),
        );
    };
    let vc = d.vcluster.clone();
    let others: Vec<DeltaRow> = tables::deltas(tx, Some(&vc))?
        .into_iter()
        .filter(|o| o.node != node && !o.expired(now))
        .collect();
    let pairs: Vec<(String, Overlay)> = others
        .iter()
        .map(|o| (o.node.clone(), o.delta.clone()))
        .collect();
    let found = conflicts(&d.delta, &pairs);
    if !found.is_empty() && resolution == Resolution::Report {
        let list: Vec<String> = found
            .iter()
            .map(|c| {
                format!(
                    "{} has {}={} (promoting {})",
                    c.node, c.key, c.local, c.promoted
                )
            })
            .collect();
        return refuse(
            ExitCode::Conflict,
            format!("promote conflict: {}; nothing applied: resolve with --overwrite (the local values are dropped) or --keep-local", list.join("; ")),
        );
    }
    let old = overlay_of(tx, &vc)?;
    let mut new = old.clone();
    new.merge(&OverlaySpec {
        vcluster: vc.clone(),
        set: d.delta.clone(),
        remove: d.removed.clone(),
    });
    if let Err(m) = check_size(&vc, &new) {
        return refuse(ExitCode::Invalid, m);
    }
    entry.entry_type = EntryType::Commit;
    entry.scope = Scope::VCluster(vc.clone());
    entry.state_delta = Some(diff(&old, &new));
    tables::put_overlay(tx, &vc, &new, seq)?;
    let emptied = DeltaRow {
        delta: Overlay::default(),
        removed: vec![],
        version: seq,
        ..d.clone()
    };
    tables::put_delta(tx, &emptied, seq)?;
    let mut changes = vec![
        Change::Overlay {
            vcluster: vc.clone(),
        },
        Change::Delta {
            node: node.to_string(),
        },
    ];
    let mut overwritten = Vec::new();
    if resolution == Resolution::Overwrite {
        for mut o in others {
            if found.iter().any(|c| c.node == o.node) {
                drop_keys(&mut o.delta, &d.delta);
                o.version = seq;
                tables::put_delta(tx, &o, seq)?;
                overwritten.push(o.node.clone());
                changes.push(Change::Delta {
                    node: o.node.clone(),
                });
            }
        }
    }
    drop_superseded(tx, &vc, &new, seq, now, &mut changes)?;
    let mut summary = format!(
        "promote: node {node}'s delta (commits {:?}) into vcluster {vc}",
        d.commits
    );
    if !overwritten.is_empty() {
        summary.push_str(&format!(
            "; local values overwritten on {}",
            overwritten.join(", ")
        ));
    }
    let rec = Record::new()
        .field("seq", seq)
        .field("vcluster", &vc)
        .field("version", seq)
        .field(
            "superseded",
            d.commits
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        )
        .field("overwritten", overwritten.join(","));
    Ok(Ok((rec, summary, changes)))
}
