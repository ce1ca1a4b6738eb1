//! Reading and writing the configuration state tables (`sql/002_config.sql`).

use rusqlite::{params, Connection, OptionalExtension};

use crate::config::overlay::Overlay;
use crate::journal::storage::StorageError;

pub fn sql_err(what: &'static str) -> impl Fn(rusqlite::Error) -> StorageError {
    move |e| StorageError::new(format!("{what}: {e}"))
}

/// A vCluster's current overlay.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayRow {
    pub vcluster: String,
    pub overlay: Overlay,
    pub toml: String,
    pub version: u64,
    pub checksum: String,
}

pub fn overlay(conn: &Connection, vcluster: &str) -> Result<Option<OverlayRow>, StorageError> {
    let row: Option<(String, i64, String)> = conn
        .prepare_cached("SELECT toml, version, checksum FROM overlays WHERE vcluster = ?1")
        .and_then(|mut st| {
            st.query_row(params![vcluster], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(sql_err("read an overlay"))?;
    match row {
        None => Ok(None),
        Some((toml, version, checksum)) => {
            let overlay = if toml.is_empty() {
                Overlay::default()
            } else {
                Overlay::from_toml(&toml)
                    .map(|(_, o)| o)
                    .map_err(StorageError::new)?
            };
            Ok(Some(OverlayRow {
                vcluster: vcluster.to_string(),
                overlay,
                toml,
                version: version as u64,
                checksum,
            }))
        }
    }
}

/// An overlay's version and checksum, without reading or parsing its TOML
/// (what a boot stream checks against its cached wire form).
pub fn overlay_head(
    conn: &Connection,
    vcluster: &str,
) -> Result<Option<(u64, String)>, StorageError> {
    conn.prepare_cached("SELECT version, checksum FROM overlays WHERE vcluster = ?1")
        .and_then(|mut st| {
            st.query_row(params![vcluster], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .optional()
        })
        .map_err(sql_err("read an overlay"))
}

/// An overlay's canonical TOML as stored (not parsed).
pub fn overlay_text(conn: &Connection, vcluster: &str) -> Result<Option<String>, StorageError> {
    conn.prepare_cached("SELECT toml FROM overlays WHERE vcluster = ?1")
        .and_then(|mut st| st.query_row(params![vcluster], |r| r.get(0)).optional())
        .map_err(sql_err("read an overlay"))
}

/// Store a new overlay version (and its history row).
pub fn put_overlay(
    conn: &Connection,
    vcluster: &str,
    overlay: &Overlay,
    seq: u64,
) -> Result<OverlayRow, StorageError> {
    let toml = if overlay.is_empty() {
        String::new()
    } else {
        overlay.to_toml(vcluster)
    };
    let checksum = crate::util::sha256::sha256_hex(toml.as_bytes());
    conn.prepare_cached(
        "INSERT INTO overlays (vcluster, toml, version, checksum) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(vcluster) DO UPDATE SET toml = ?2, version = ?3, checksum = ?4",
    )
    .and_then(|mut st| st.execute(params![vcluster, toml, seq as i64, checksum]))
    .map_err(sql_err("write an overlay"))?;
    conn.prepare_cached("INSERT INTO overlay_versions (vcluster, seq, toml) VALUES (?1, ?2, ?3)")
        .and_then(|mut st| st.execute(params![vcluster, seq as i64, toml]))
        .map_err(sql_err("write an overlay version"))?;
    // The policies table follows the overlay's policy (J6: one per
    // vCluster), whichever operation changed it: apply, set-policy, promote
    // or rollback.
    match &overlay.policy {
        Some(p) => put_policy(conn, vcluster, &toml::to_string(p).unwrap_or_default(), seq)?,
        None => {
            conn.prepare_cached("DELETE FROM policies WHERE vcluster = ?1")
                .and_then(|mut st| st.execute(params![vcluster]))
                .map_err(sql_err("drop a policy"))?;
        }
    }
    Ok(OverlayRow {
        vcluster: vcluster.to_string(),
        overlay: overlay.clone(),
        toml,
        version: seq,
        checksum,
    })
}

/// The overlay of `vcluster` as of sequence `seq` (empty before any).
pub fn overlay_as_of(conn: &Connection, vcluster: &str, seq: u64) -> Result<Overlay, StorageError> {
    let toml: Option<String> = conn
        .prepare_cached("SELECT toml FROM overlay_versions WHERE vcluster = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT 1")
        .and_then(|mut st| st.query_row(params![vcluster, seq as i64], |r| r.get(0)).optional())
        .map_err(sql_err("read an overlay version"))?;
    match toml.filter(|t| !t.is_empty()) {
        None => Ok(Overlay::default()),
        Some(t) => Overlay::from_toml(&t)
            .map(|(_, o)| o)
            .map_err(StorageError::new),
    }
}

/// A node's committed delta.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaRow {
    pub node: String,
    pub vcluster: String,
    pub delta: Overlay,
    pub removed: Vec<String>,
    pub version: u64,
    pub commits: Vec<u64>,
    pub committed_ms: u64,
    pub expires_ms: Option<u64>,
}

impl DeltaRow {
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| e <= now_ms)
    }

    /// The delta as overlay TOML (with its removals), what agents apply.
    pub fn to_toml(&self) -> String {
        let mut out = if self.delta.is_empty() {
            String::new()
        } else {
            self.delta.to_toml(&self.vcluster)
        };
        if !self.removed.is_empty() {
            let keys: Vec<toml::Value> = self
                .removed
                .iter()
                .map(|k| toml::Value::String(k.clone()))
                .collect();
            out.push_str(&format!(
                "\n[vcluster.{}.remove]\nkeys = {}\n",
                quote_key(&self.vcluster),
                toml::Value::Array(keys)
            ));
        }
        out
    }
}

fn quote_key(k: &str) -> String {
    if k.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        k.to_string()
    } else {
        toml::Value::String(k.to_string()).to_string()
    }
}

fn decode_delta(vcluster: &str, toml: &str) -> Result<Overlay, StorageError> {
    if toml.is_empty() {
        return Ok(Overlay::default());
    }
    Overlay::from_toml(toml)
        .map(|(_, o)| o)
        .map_err(|e| StorageError::new(format!("delta of {vcluster}: {e}")))
}

type DeltaCols = (
    String,
    String,
    String,
    String,
    i64,
    String,
    i64,
    Option<i64>,
);

fn delta_from(c: DeltaCols) -> Result<DeltaRow, StorageError> {
    let (node, vcluster, toml, removed, version, commits, committed, expires) = c;
    Ok(DeltaRow {
        delta: decode_delta(&vcluster, &toml)?,
        node,
        removed: removed.lines().map(str::to_string).collect(),
        vcluster,
        version: version as u64,
        commits: commits.split(',').filter_map(|s| s.parse().ok()).collect(),
        committed_ms: committed as u64,
        expires_ms: expires.map(|e| e as u64),
    })
}

const DELTA_COLS: &str =
    "node, vcluster, toml, removed, version, commits, committed_ms, expires_ms";

fn delta_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeltaCols> {
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
}

pub fn delta(conn: &Connection, node: &str) -> Result<Option<DeltaRow>, StorageError> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {DELTA_COLS} FROM node_deltas WHERE node = ?1"
        ))
        .and_then(|mut st| st.query_row(params![node], delta_row).optional())
        .map_err(sql_err("read a node delta"))?;
    row.map(delta_from).transpose()
}

/// Nodes whose delta expires in `(after_ms, until_ms]`.
pub fn deltas_expired_between(
    conn: &Connection,
    after_ms: u64,
    until_ms: u64,
) -> Result<std::collections::HashSet<String>, StorageError> {
    let mut st = conn
        .prepare_cached("SELECT node FROM node_deltas WHERE expires_ms > ?1 AND expires_ms <= ?2")
        .map_err(sql_err("read expired deltas"))?;
    st.query_map(params![after_ms as i64, until_ms as i64], |r| r.get(0))
        .and_then(Iterator::collect)
        .map_err(sql_err("read expired deltas"))
}

/// Deltas of a vCluster's nodes (or of every node).
pub fn deltas(conn: &Connection, vcluster: Option<&str>) -> Result<Vec<DeltaRow>, StorageError> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {DELTA_COLS} FROM node_deltas WHERE ?1 IS NULL OR vcluster = ?1 ORDER BY node"
        ))
        .map_err(sql_err("read node deltas"))?;
    let rows = st
        .query_map(params![vcluster], delta_row)
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(sql_err("read node deltas"))?;
    rows.into_iter().map(delta_from).collect()
}

/// Store (or, with an empty delta and no removals, delete) a node delta,
/// with its history row.
pub fn put_delta(conn: &Connection, d: &DeltaRow, seq: u64) -> Result<(), StorageError> {
    let toml = if d.delta.is_empty() {
        String::new()
    } else {
        d.delta.to_toml(&d.vcluster)
    };
    let removed = d.removed.join("\n");
    if toml.is_empty() && removed.is_empty() {
        conn.prepare_cached("DELETE FROM node_deltas WHERE node = ?1")
            .and_then(|mut st| st.execute(params![d.node]))
            .map_err(sql_err("delete a node delta"))?;
    } else {
        let commits: Vec<String> = d.commits.iter().map(u64::to_string).collect();
        conn.prepare_cached(&format!(
            "INSERT OR REPLACE INTO node_deltas ({DELTA_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ))
        .and_then(|mut st| {
            st.execute(params![
                d.node,
                d.vcluster,
                toml,
                removed,
                d.version as i64,
                commits.join(","),
                d.committed_ms as i64,
                d.expires_ms.map(|e| e as i64)
            ])
        })
        .map_err(sql_err("write a node delta"))?;
    }
    conn.prepare_cached("INSERT INTO node_delta_versions (node, seq, vcluster, toml, removed) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut st| st.execute(params![d.node, seq as i64, d.vcluster, toml, removed]))
        .map_err(sql_err("write a node delta version"))?;
    Ok(())
}

/// A node's delta as of sequence `seq` (`None`: it had none).
pub fn delta_as_of(
    conn: &Connection,
    node: &str,
    seq: u64,
) -> Result<Option<(String, Overlay, Vec<String>)>, StorageError> {
    let row: Option<(String, String, String)> = conn
        .prepare_cached(
            "SELECT vcluster, toml, removed FROM node_delta_versions WHERE node = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT 1",
        )
        .and_then(|mut st| st.query_row(params![node, seq as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .map_err(sql_err("read a node delta version"))?;
    match row {
        Some((vc, toml, removed)) if !toml.is_empty() || !removed.is_empty() => {
            let removed = removed.lines().map(str::to_string).collect();
            Ok(Some((vc.clone(), decode_delta(&vc, &toml)?, removed)))
        }
        _ => Ok(None),
    }
}

/// The node's vCluster and the entry that assigned it there.
pub fn assignment_since(
    conn: &Connection,
    node: &str,
) -> Result<Option<(String, u64)>, StorageError> {
    conn.prepare_cached("SELECT vcluster, seq FROM node_assignments WHERE node = ?1")
        .and_then(|mut st| {
            st.query_row(params![node], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
            })
            .optional()
        })
        .map_err(sql_err("read an assignment"))
}

/// The expiry a node's delta had just after entry `seq`: that of its last
/// commit up to `seq` (None: permanent, or no commit).
pub fn delta_expiry_as_of(
    conn: &Connection,
    node: &str,
    seq: u64,
) -> Result<Option<u64>, StorageError> {
    let json: Option<String> = conn
        .prepare_cached(
            "SELECT entry FROM config_entries WHERE scope = ?1 AND entry_type = 'Commit' \
             AND seq <= ?2 ORDER BY seq DESC LIMIT 1",
        )
        .and_then(|mut st| {
            st.query_row(params![format!("node:{node}"), seq as i64], |r| r.get(0))
                .optional()
        })
        .map_err(sql_err("read a node's last commit"))?;
    Ok(json
        .and_then(|j| serde_json::from_str::<super::entry::ConfigEntry>(&j).ok())
        .and_then(|e| e.ttl_seconds.map(|t| e.timestamp + u64::from(t) * 1000)))
}

/// The node's vCluster.
pub fn assignment(conn: &Connection, node: &str) -> Result<Option<String>, StorageError> {
    Ok(assignment_since(conn, node)?.map(|(vcluster, _)| vcluster))
}

pub fn assign(
    conn: &Connection,
    node: &str,
    vcluster: Option<&str>,
    seq: u64,
) -> Result<(), StorageError> {
    match vcluster {
        Some(vc) => conn
            .prepare_cached(
                "INSERT OR REPLACE INTO node_assignments (node, vcluster, seq) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut st| st.execute(params![node, vc, seq as i64])),
        None => conn
            .prepare_cached("DELETE FROM node_assignments WHERE node = ?1")
            .and_then(|mut st| st.execute(params![node])),
    }
    .map(|_| ())
    .map_err(sql_err("write an assignment"))
}

/// Nodes assigned to a vCluster.
pub fn nodes_of(conn: &Connection, vcluster: &str) -> Result<Vec<String>, StorageError> {
    let mut st = conn
        .prepare_cached("SELECT node FROM node_assignments WHERE vcluster = ?1 ORDER BY node")
        .map_err(sql_err("read assignments"))?;
    st.query_map(params![vcluster], |r| r.get(0))
        .and_then(Iterator::collect)
        .map_err(sql_err("read assignments"))
}

pub fn put_policy(
    conn: &Connection,
    vcluster: &str,
    toml: &str,
    seq: u64,
) -> Result<(), StorageError> {
    conn.prepare_cached("INSERT OR REPLACE INTO policies (vcluster, toml, seq) VALUES (?1, ?2, ?3)")
        .and_then(|mut st| st.execute(params![vcluster, toml, seq as i64]))
        .map(|_| ())
        .map_err(sql_err("write a policy"))
}

/// Every vCluster with an overlay or nodes.
pub fn vclusters(conn: &Connection) -> Result<Vec<String>, StorageError> {
    let mut st = conn
        .prepare_cached(
            "SELECT vcluster FROM overlays UNION SELECT vcluster FROM node_assignments ORDER BY 1",
        )
        .map_err(sql_err("list vclusters"))?;
    st.query_map([], |r| r.get(0))
        .and_then(Iterator::collect)
        .map_err(sql_err("list vclusters"))
}

/// Clear every derived table (before a restore replays the entries).
pub fn clear(conn: &Connection) -> Result<(), StorageError> {
    conn.execute_batch(
        "DELETE FROM config_entries; DELETE FROM overlays; DELETE FROM overlay_versions; \
         DELETE FROM node_deltas; DELETE FROM node_delta_versions; DELETE FROM node_assignments; \
         DELETE FROM policies; DELETE FROM journal_entries;",
    )
    .map_err(sql_err("clear the configuration tables"))
}
