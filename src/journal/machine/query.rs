//! Reads of the configuration state, served from the local replica (J8):
//! `log`, `overlay`, `delta`, `diff --committed`, `group`, node status and
//! promote previews.

use rusqlite::{params, Connection};

use super::delta::{conflicts, keyed, promote_toml, state_delta, PromoteConflict};
use super::entry::StateDelta;
use super::tables::{self, DeltaRow};
use crate::config::overlay::Overlay;
use crate::journal::storage::StorageError;
use crate::proto::Record;
use crate::util::time::rfc3339_ms;

/// One configuration entry as `watch` shows it: seq, type, scope,
/// timestamp, principal, summary.
pub type WatchRow = (u64, String, String, u64, String, String);

/// Configuration entries from `from` on, oldest first, at most `limit`.
pub fn entries_from(
    conn: &Connection,
    from: u64,
    limit: usize,
) -> Result<Vec<WatchRow>, StorageError> {
    conn.prepare_cached(
        "SELECT seq, entry_type, scope, timestamp, principal, summary FROM config_entries \
         WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
    )
    .and_then(|mut st| {
        st.query_map(params![from as i64, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, i64>(3)? as u64,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .and_then(Iterator::collect)
    })
    .map_err(tables::sql_err("read entries for a watch"))
}

/// The vCluster `node` was in just after entry `seq` (from the
/// assignment entries, so also for entries a snapshot brought in).
pub fn vcluster_at(conn: &Connection, node: &str, seq: u64) -> Option<String> {
    let summary: Option<String> = conn
        .prepare_cached(
            "SELECT summary FROM config_entries WHERE scope = ?1 AND seq <= ?2 \
             AND entry_type IN ('NodeAssigned', 'NodeUnassigned') ORDER BY seq DESC LIMIT 1",
        )
        .and_then(|mut st| {
            use rusqlite::OptionalExtension;
            st.query_row(params![format!("node:{node}"), seq as i64], |r| r.get(0))
                .optional()
        })
        .ok()
        .flatten();
    // "node N assigned to vcluster V" (see apply) or "node N unassigned".
    summary.and_then(|s| {
        s.rsplit_once(" assigned to vcluster ")
            .map(|(_, vc)| vc.to_string())
    })
}

/// seq, type, scope, timestamp, principal, role, summary, entry JSON.
type LogRow = (i64, String, String, i64, String, String, String, String);

/// The last `n` entries (newest last), optionally of one scope
/// (`vcluster:ml`, `node:n1`, `global`, or a bare name matching either).
pub fn log(conn: &Connection, n: usize, scope: Option<&str>) -> Result<Vec<Record>, StorageError> {
    let scopes: Vec<String> = match scope {
        None => vec![],
        Some(s) if s.contains(':') || s == "global" => vec![s.to_string()],
        Some(s) => vec![format!("vcluster:{s}"), format!("node:{s}")],
    };
    let mut st = conn
        .prepare_cached(
            "SELECT seq, entry_type, scope, timestamp, principal, role, summary, entry FROM config_entries \
             WHERE ?1 IS NULL OR scope = ?1 OR scope = ?2 ORDER BY seq DESC LIMIT ?3",
        )
        .map_err(tables::sql_err("read the log"))?;
    let first = scopes.first().cloned();
    let second = scopes.get(1).cloned();
    let rows: Vec<LogRow> = st
        .query_map(params![first, second, n.min(100_000) as i64], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .and_then(Iterator::collect)
        .map_err(tables::sql_err("read the log"))?;
    let mut out: Vec<Record> = rows
        .into_iter()
        .map(|(seq, ty, scope, ts, principal, role, summary, json)| {
            let entry: Option<super::entry::ConfigEntry> = serde_json::from_str(&json).ok();
            let mut r = Record::new()
                .field("seq", seq)
                .field("type", ty)
                .field("scope", scope)
                .field("time", rfc3339_ms(ts as u64))
                .field("author", principal)
                .field("role", role)
                .field("summary", summary);
            if let Some(e) = entry {
                if let Some(m) = e.message {
                    r.push("message", m);
                }
                if let Some(p) = e.parent {
                    r.push("parent", p);
                }
                if let Some(t) = e.ttl_seconds {
                    r.push("ttl_seconds", t);
                }
                if let Some(sd) = e.state_delta {
                    r.push("changes", sd.len());
                }
            }
            r
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// One entry as JSON.
pub fn entry_json(conn: &Connection, seq: u64) -> Result<Option<String>, StorageError> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        "SELECT entry FROM config_entries WHERE seq = ?1",
        params![seq as i64],
        |r| r.get(0),
    )
    .optional()
    .map_err(tables::sql_err("read an entry"))
}

/// Committed node deltas not in the overlay, one record per changed key.
pub fn diff_committed(
    conn: &Connection,
    node: Option<&str>,
    now_ms: u64,
) -> Result<Vec<Record>, StorageError> {
    let rows: Vec<DeltaRow> = match node {
        Some(n) => tables::delta(conn, n)?.into_iter().collect(),
        None => tables::deltas(conn, None)?,
    };
    let mut out = Vec::new();
    for d in rows {
        let overlay = tables::overlay(conn, &d.vcluster)?
            .map(|r| r.overlay)
            .unwrap_or_default();
        let sd: StateDelta = state_delta(&overlay, &d.delta, &d.removed);
        for (dim, item) in sd.items() {
            let mut r = Record::new()
                .field("node", &d.node)
                .field("vcluster", &d.vcluster)
                .field("dimension", dim)
                .field("action", format!("{:?}", item.action))
                .field("key", &item.key)
                .field("value", item.value.as_deref().unwrap_or("-"))
                .field("previous", item.previous.as_deref().unwrap_or("-"))
                .field("version", d.version)
                .field(
                    "commits",
                    d.commits
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                )
                .field("committed", rfc3339_ms(d.committed_ms));
            if let Some(e) = d.expires_ms {
                r.push("expires", rfc3339_ms(e));
                r.push("expired", d.expired(now_ms));
            }
            out.push(r);
        }
    }
    Ok(out)
}

/// The vClusters: version, checksum, nodes, deltas, policy.
pub fn groups(conn: &Connection) -> Result<Vec<Record>, StorageError> {
    let mut out = Vec::new();
    for vc in tables::vclusters(conn)? {
        let o = tables::overlay(conn, &vc)?;
        let nodes = tables::nodes_of(conn, &vc)?;
        let deltas = tables::deltas(conn, Some(&vc))?.len();
        let mut r = Record::new().field("vcluster", &vc);
        match &o {
            Some(o) => {
                r.push("version", o.version);
                r.push("checksum", &o.checksum);
                r.push("keys", o.overlay.key_count());
                r.push("services", o.overlay.services.len());
                r.push("policy", o.overlay.policy.is_some());
            }
            None => r.push("version", 0),
        }
        r.push("nodes", nodes.len());
        r.push("deltas", deltas);
        out.push(r);
    }
    Ok(out)
}

/// Nodes: their vCluster and delta, optionally one node or one vCluster.
pub fn nodes(
    conn: &Connection,
    node: Option<&str>,
    vcluster: Option<&str>,
    now_ms: u64,
) -> Result<Vec<Record>, StorageError> {
    let mut st = conn
        .prepare_cached(
            "SELECT node, vcluster FROM node_assignments WHERE (?1 IS NULL OR node = ?1) AND (?2 IS NULL OR vcluster = ?2) \
             UNION SELECT node, vcluster FROM node_deltas WHERE (?1 IS NULL OR node = ?1) AND (?2 IS NULL OR vcluster = ?2) \
             ORDER BY 1",
        )
        .map_err(tables::sql_err("read nodes"))?;
    let list: Vec<(String, String)> = st
        .query_map(params![node, vcluster], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(Iterator::collect)
        .map_err(tables::sql_err("read nodes"))?;
    let mut out = Vec::new();
    for (n, vc) in list {
        let assigned = tables::assignment(conn, &n)?;
        let d = tables::delta(conn, &n)?;
        let overlay_version = tables::overlay(conn, &vc)?.map_or(0, |o| o.version);
        let mut r = Record::new()
            .field("node", &n)
            .field("vcluster", assigned.as_deref().unwrap_or(&vc))
            .field("assigned", assigned.is_some())
            .field("overlay_version", overlay_version);
        match d {
            Some(d) => {
                r.push(
                    "state",
                    if d.expired(now_ms) {
                        "delta-expired"
                    } else {
                        "committed-delta"
                    },
                );
                r.push("node_version", d.version);
                r.push("delta_keys", keyed(&d.delta).len() + d.removed.len());
                if let Some(e) = d.expires_ms {
                    r.push("delta_expires", rfc3339_ms(e));
                }
            }
            None => {
                r.push("state", "as-declared");
                r.push("node_version", 0);
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// What promoting `node` would write, and the conflicts it would meet.
pub fn promote_preview(
    conn: &Connection,
    node: &str,
    now_ms: u64,
) -> Result<Result<(String, Vec<PromoteConflict>), String>, StorageError> {
    let Some(d) = tables::delta(conn, node)?.filter(|d| !d.expired(now_ms)) else {
        return Ok(Err(format!(
            "node {node} has no committed delta to promote"
        )));
    };
    let others: Vec<(String, Overlay)> = tables::deltas(conn, Some(&d.vcluster))?
        .into_iter()
        .filter(|o| o.node != node && !o.expired(now_ms))
        .map(|o| (o.node, o.delta))
        .collect();
    let mut text = promote_toml(&d.vcluster, node, d.commits.len(), &d.delta, &[]);
    if !d.removed.is_empty() {
        let keys: Vec<toml::Value> = d
            .removed
            .iter()
            .map(|k| toml::Value::String(k.clone()))
            .collect();
        text.push_str(&format!(
            "\n[vcluster.{}.remove]\nkeys = {}\n",
            d.vcluster,
            toml::Value::Array(keys)
        ));
    }
    Ok(Ok((text, conflicts(&d.delta, &others))))
}
