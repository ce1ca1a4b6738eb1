//! The journal's durable state in one SQLite database (`journal.db` in the
//! data directory): Raft's hard state, log and snapshot metadata, the
//! applied-index marker, the membership, and the state machine's tables.
//!
//! WAL mode with `synchronous=FULL`: a committed transaction is on disk
//! (one fsync of the WAL). Each Raft [`Ready`] is persisted by
//! [`Storage::persist`] in exactly one transaction, together with the
//! application of its committed entries; a failed transaction rolls back
//! as a whole and the caller treats it as a crash.
//!
//! A torn tail (a crash while the WAL's last transaction was being
//! written) is cut by SQLite itself at open: frames after the last valid
//! commit frame fail their checksums and are ignored. [`Storage::load`]
//! then checks the Raft invariants before anything is served.

pub(crate) mod migrations;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::raft::{Entry, EntryKind, HardState, Membership, NodeId, Ready, Restored, SnapshotMeta};
use super::state_machine::{ApplyOutcome, CommittedEntry, StateMachine};

/// The database file inside the data directory.
pub const DB_FILE: &str = "journal.db";
/// Held (flock) by the process that owns the data directory.
pub const LOCK_FILE: &str = "journal.lock";

/// Exclusive ownership of a data directory: one `pact-journal` (or one
/// `recover`) at a time; a second one would vote twice.
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    /// Takes the lock or says who (which kind of process) holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::new(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::new(format!("cannot open {}: {e}", path.display())))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(StorageError::new(format!(
                "{} is in use by another pact-journal (stop it first)",
                dir.display()
            ))),
            Err(e) => Err(StorageError::new(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }
}
/// Snapshot metadata rows kept.
pub const SNAPSHOTS_KEPT: usize = 3;

/// A storage failure, with what was being done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError {
    pub message: String,
}

impl StorageError {
    pub fn new(message: impl Into<String>) -> StorageError {
        StorageError {
            message: message.into(),
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StorageError {}

fn ctx(what: &'static str) -> impl Fn(rusqlite::Error) -> StorageError {
    move |e| StorageError::new(format!("{what}: {e}"))
}

/// Knobs for tests; the daemon uses the defaults.
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    /// Disable SQLite's automatic WAL checkpoints (tests that inspect the WAL).
    pub no_autocheckpoint: bool,
}

/// One committed entry after it went through [`Storage::persist`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEntry {
    pub index: u64,
    pub term: u64,
    pub kind: EntryKind,
    /// `Some` for `Normal` entries.
    pub outcome: Option<ApplyOutcome>,
}

/// What one [`Storage::persist`] did.
#[derive(Debug, Default)]
pub struct Persisted {
    pub applied: Vec<AppliedEntry>,
    /// Whether a transaction was committed at all.
    pub wrote: bool,
    /// Whether the commit was fsynced (see [`Storage::persist`]).
    pub synced: bool,
    /// Time spent in the commit (the fsync), microseconds.
    pub commit_us: u64,
}

/// What `pact-journal inspect` prints about a stopped node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub node_id: Option<NodeId>,
    pub cluster: Option<String>,
    pub hard_state: HardState,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub last_term: u64,
    pub snapshot_index: u64,
    pub snapshot_term: u64,
    /// The latest membership in the log (committed or not) and its index.
    pub membership: Membership,
    pub membership_index: u64,
    pub log_entries: u64,
    pub journal_entries: u64,
    pub last_seq: Option<u64>,
}

/// The open database.
pub struct Storage {
    conn: Connection,
    path: PathBuf,
    /// Term and vote as last written (decides whether a batch needs fsync).
    durable_term_vote: (u64, Option<NodeId>),
    /// The connection's current `synchronous` setting is FULL.
    sync_full: bool,
    /// The schema version of the database: [`migrations::SCHEMA_VERSION`],
    /// except for one opened by [`Storage::open_read_only`].
    schema: i64,
}

impl Storage {
    /// Opens (creating if needed) `journal.db` in `dir` and migrates it.
    pub fn open(dir: &Path, opts: &StorageOptions) -> Result<Storage, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::new(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path)
            .map_err(|e| StorageError::new(format!("cannot open {}: {e}", path.display())))?;
        // 8 KiB pages hold seven 1 KiB entries (4 KiB pages only three):
        // effective only when the database is created.
        conn.execute_batch("PRAGMA page_size=8192;")
            .map_err(ctx("set the page size"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(ctx("set WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::new(format!(
                "{}: SQLite refused WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000; \
             PRAGMA journal_size_limit=8388608;",
        )
        .map_err(ctx("set pragmas"))?;
        if opts.no_autocheckpoint {
            conn.execute_batch("PRAGMA wal_autocheckpoint=0;")
                .map_err(ctx("disable checkpoints"))?;
        }
        let mut storage = Storage {
            conn,
            path,
            durable_term_vote: (0, None),
            sync_full: true,
            schema: migrations::SCHEMA_VERSION,
        };
        migrations::migrate(&mut storage.conn)?;
        let hs = storage.hard_state()?;
        storage.durable_term_vote = (hs.term, hs.vote);
        Ok(storage)
    }

    /// Opens an existing database for reading only ([`Storage::inspect`]):
    /// no pragma is set and no migration runs, so inspecting a node (even
    /// a running one, even one of an older release) changes nothing in it.
    /// Its schema may be older than this binary's; a newer one is refused.
    pub fn open_read_only(dir: &Path) -> Result<Storage, StorageError> {
        let path = dir.join(DB_FILE);
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StorageError::new(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(ctx("set a busy timeout"))?;
        let schema = migrations::check_readable(&conn)?;
        Ok(Storage {
            conn,
            path,
            durable_term_vote: (0, None),
            sync_full: true,
            schema,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for reads by the state machine.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    // ------------------------------------------------------------ identity

    fn meta(&self, key: &str) -> Result<Option<String>, StorageError> {
        self.conn
            .query_row(
                "SELECT value FROM node_meta WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(ctx("read node metadata"))
    }

    /// Binds this data directory to a node id and cluster on first use;
    /// later refuses to run it as anything else.
    pub fn claim(&mut self, node_id: NodeId, cluster: &str) -> Result<(), StorageError> {
        let id = self.meta("node_id")?;
        let name = self.meta("cluster")?;
        match (id, name) {
            (Some(id), Some(name)) => {
                if id != node_id.to_string() {
                    return Err(StorageError::new(format!(
                        "{} belongs to node {id}, not node {node_id}: check --node-id and --data-dir",
                        self.path.display()
                    )));
                }
                if name != cluster {
                    return Err(StorageError::new(format!(
                        "{} belongs to cluster \"{name}\", not \"{cluster}\"",
                        self.path.display()
                    )));
                }
                Ok(())
            }
            _ => {
                let now = crate::util::time::unix_ms(std::time::SystemTime::now());
                let tx = self.conn.transaction().map_err(ctx("begin"))?;
                for (k, v) in [
                    ("node_id", node_id.to_string()),
                    ("cluster", cluster.to_string()),
                    ("created_ms", now.to_string()),
                ] {
                    tx.execute(
                        "INSERT OR REPLACE INTO node_meta (key, value) VALUES (?1, ?2)",
                        params![k, v],
                    )
                    .map_err(ctx("write node metadata"))?;
                }
                tx.commit().map_err(ctx("commit node metadata"))
            }
        }
    }

    // ------------------------------------------------------------ loading

    pub fn hard_state(&self) -> Result<HardState, StorageError> {
        let hs = self
            .conn
            .query_row(
                "SELECT term, vote, commit_index FROM raft_hard_state WHERE id = 1",
                [],
                |r| {
                    Ok(HardState {
                        term: r.get::<_, i64>(0)? as u64,
                        vote: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                        commit: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()
            .map_err(ctx("read the hard state"))?;
        Ok(hs.unwrap_or_default())
    }

    pub fn applied_index(&self) -> Result<u64, StorageError> {
        // Schemas 1 and 2 kept it in a table of its own.
        let sql = if self.schema < 3 {
            "SELECT applied_index FROM raft_applied WHERE id = 1"
        } else {
            "SELECT applied_index FROM raft_hard_state WHERE id = 1"
        };
        let a: Option<i64> = self
            .conn
            .query_row(sql, [], |r| r.get(0))
            .optional()
            .map_err(ctx("read the applied index"))?;
        Ok(a.map_or(0, |a| a as u64))
    }

    /// The newest snapshot's metadata, if any.
    pub fn latest_snapshot(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        let row: Option<(i64, i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT idx, term, membership FROM raft_snapshots ORDER BY idx DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(ctx("read the latest snapshot"))?;
        let Some((idx, term, m)) = row else {
            return Ok(None);
        };
        let membership = Membership::decode(&m)
            .map_err(|e| StorageError::new(format!("snapshot {idx}: bad membership: {e}")))?;
        Ok(Some(SnapshotMeta {
            index: idx as u64,
            term: term as u64,
            membership,
        }))
    }

    /// Log entries with index > `after`, ascending.
    pub fn entries_after(&self, after: u64) -> Result<Vec<Entry>, StorageError> {
        let mut st = self
            .conn
            .prepare("SELECT idx, term, kind, data FROM raft_log WHERE idx > ?1 ORDER BY idx")
            .map_err(ctx("read the log"))?;
        let rows = st
            .query_map(params![after as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(ctx("read the log"))?;
        let mut out = Vec::new();
        for row in rows {
            let (idx, term, kind, data) = row.map_err(ctx("read a log entry"))?;
            let kind = kind_from_i64(kind).ok_or_else(|| {
                StorageError::new(format!("log entry {idx}: unknown kind {kind}"))
            })?;
            out.push(Entry {
                index: idx as u64,
                term: term as u64,
                kind,
                data,
            });
        }
        Ok(out)
    }

    /// Everything Raft needs to restart, and the state machine reloaded.
    /// The snapshot's data is regenerated from the state machine tables.
    pub fn load(&self, sm: &mut dyn StateMachine) -> Result<Restored, StorageError> {
        sm.load(&self.conn)?;
        let hard_state = self.hard_state()?;
        let applied = self.applied_index()?;
        let snapshot = match self.latest_snapshot()? {
            Some(meta) => {
                let data = sm.snapshot(&self.conn, meta.index)?;
                Some((meta, data))
            }
            None => None,
        };
        let after = snapshot.as_ref().map_or(0, |(m, _)| m.index);
        let entries = self.entries_after(after)?;
        let mut expect = after + 1;
        for e in &entries {
            if e.index != expect {
                return Err(StorageError::new(format!(
                    "the log has a gap: entry {} follows {}",
                    e.index,
                    expect - 1
                )));
            }
            expect += 1;
        }
        let last = expect - 1;
        if applied > hard_state.commit.max(after) || applied > last.max(after) {
            return Err(StorageError::new(format!(
                "applied index {applied} is beyond the commit index {} or the log end {last}",
                hard_state.commit
            )));
        }
        Ok(Restored {
            hard_state,
            snapshot,
            entries,
            applied,
        })
    }

    // ------------------------------------------------------------ writing

    /// Persists one Ready and applies its committed entries, in one
    /// transaction with one fsync. Messages may be sent only afterwards.
    pub fn persist(
        &mut self,
        ready: &Ready,
        sm: &mut dyn StateMachine,
    ) -> Result<Persisted, StorageError> {
        if !ready.must_persist() && ready.committed.is_empty() {
            return Ok(Persisted::default());
        }
        // Raft needs the log, the term and the vote durable before any
        // message goes out. A batch that only raises the commit index and
        // applies committed entries does not: those entries are already
        // durable here and on a quorum, the commit index may go back after
        // a crash, and the state machine is deterministic, so a lost apply
        // is redone from the log with the same outcome (same seq). Such a
        // batch skips the fsync (synchronous=NORMAL; the next FULL commit
        // syncs it along, the WAL being sequential).
        let term_vote = ready.hard_state.map(|h| (h.term, h.vote));
        let durable = ready.snapshot.is_some()
            || ready.truncate_from.is_some()
            || !ready.entries.is_empty()
            || term_vote.is_some_and(|tv| tv != self.durable_term_vote);
        if durable != self.sync_full {
            let mode = if durable { "FULL" } else { "NORMAL" };
            self.conn
                .pragma_update(None, "synchronous", mode)
                .map_err(ctx("set synchronous"))?;
            self.sync_full = durable;
        }
        let tx = self.conn.transaction().map_err(ctx("begin a batch"))?;
        let result = write_batch(&tx, ready, sm);
        let applied = match result {
            Ok(applied) => applied,
            Err(e) => {
                drop(tx);
                // The machine may have counted entries that rolled back.
                let _ = sm.load(&self.conn);
                return Err(e);
            }
        };
        let started = Instant::now();
        if let Err(e) = tx.commit() {
            let _ = sm.load(&self.conn);
            return Err(StorageError::new(format!("commit a batch: {e}")));
        }
        if let Some(tv) = term_vote {
            self.durable_term_vote = tv;
        }
        Ok(Persisted {
            applied,
            wrote: true,
            synced: durable,
            commit_us: started.elapsed().as_micros() as u64,
        })
    }

    /// Records a compaction the Raft core made: snapshot metadata, log
    /// entries up to its index deleted, older snapshot rows trimmed.
    pub fn record_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data_len: usize,
    ) -> Result<(), StorageError> {
        self.ensure_full()?;
        let tx = self.conn.transaction().map_err(ctx("begin a compaction"))?;
        insert_snapshot(&tx, meta, data_len)?;
        tx.execute(
            "DELETE FROM raft_log WHERE idx <= ?1",
            params![meta.index as i64],
        )
        .map_err(ctx("compact the log"))?;
        tx.commit().map_err(ctx("commit a compaction"))
    }

    fn ensure_full(&mut self) -> Result<(), StorageError> {
        if !self.sync_full {
            self.conn
                .pragma_update(None, "synchronous", "FULL")
                .map_err(ctx("set synchronous"))?;
            self.sync_full = true;
        }
        Ok(())
    }

    /// Entries in the log table and the database's size in bytes (db + WAL).
    pub fn sizes(&self) -> (u64, u64) {
        let entries: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM raft_log", [], |r| r.get(0))
            .unwrap_or(0);
        let file = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        (entries as u64, file(&self.path) + file(Path::new(&wal)))
    }

    /// What a stopped node holds (for `pact-journal inspect`).
    pub fn inspect(&self) -> Result<Inspection, StorageError> {
        let hard_state = self.hard_state()?;
        let applied = self.applied_index()?;
        let snap = self.latest_snapshot()?.unwrap_or_default();
        let entries = self.entries_after(snap.index)?;
        let mut membership = snap.membership.clone();
        let mut membership_index = snap.index;
        for e in entries.iter().filter(|e| e.kind == EntryKind::Membership) {
            if let Ok(m) = Membership::decode(&e.data) {
                membership = m;
                membership_index = e.index;
            }
        }
        let count = |sql: &str| -> Result<i64, StorageError> {
            self.conn
                .query_row(sql, [], |r| r.get(0))
                .map_err(ctx("count rows"))
        };
        let journal_entries = count("SELECT COUNT(*) FROM journal_entries")? as u64;
        let last_seq: Option<i64> = self
            .conn
            .query_row("SELECT MAX(seq) FROM journal_entries", [], |r| r.get(0))
            .map_err(ctx("read the last sequence number"))?;
        Ok(Inspection {
            node_id: self.meta("node_id")?.and_then(|s| s.parse().ok()),
            cluster: self.meta("cluster")?,
            hard_state,
            applied,
            first_index: snap.index + 1,
            last_index: entries.last().map_or(snap.index, |e| e.index),
            last_term: entries.last().map_or(snap.term, |e| e.term),
            snapshot_index: snap.index,
            snapshot_term: snap.term,
            membership,
            membership_index,
            log_entries: entries.len() as u64,
            journal_entries,
            last_seq: last_seq.map(|s| s as u64),
        })
    }

    /// Disaster recovery after quorum loss: appends a Membership entry
    /// that makes `node_id` the only voter (learners dropped), so this
    /// node can elect itself and commit everything in its log. Every other
    /// node must then be wiped and re-added. Returns the new entry's index.
    pub fn recover_as_sole_member(&mut self, node_id: NodeId) -> Result<u64, StorageError> {
        let ins = self.inspect()?;
        let term = ins.hard_state.term.max(ins.last_term).max(1);
        let index = ins.last_index + 1;
        let m = Membership::new([node_id], []);
        let tx = self.conn.transaction().map_err(ctx("begin recovery"))?;
        tx.execute(
            "INSERT INTO raft_log (idx, term, kind, data) VALUES (?1, ?2, ?3, ?4)",
            params![
                index as i64,
                term as i64,
                kind_to_i64(EntryKind::Membership),
                m.encode()
            ],
        )
        .map_err(ctx("append the recovery membership"))?;
        let hs = HardState {
            term,
            vote: None,
            commit: ins.hard_state.commit,
        };
        write_hard_state(&tx, &hs)?;
        tx.commit().map_err(ctx("commit recovery"))?;
        Ok(index)
    }
}

fn kind_to_i64(kind: EntryKind) -> i64 {
    match kind {
        EntryKind::Normal => 0,
        EntryKind::Noop => 1,
        EntryKind::Membership => 2,
    }
}

fn kind_from_i64(v: i64) -> Option<EntryKind> {
    match v {
        0 => Some(EntryKind::Normal),
        1 => Some(EntryKind::Noop),
        2 => Some(EntryKind::Membership),
        _ => None,
    }
}

fn write_hard_state(tx: &Transaction<'_>, hs: &HardState) -> Result<(), StorageError> {
    tx.prepare_cached(
        "INSERT INTO raft_hard_state (id, term, vote, commit_index) VALUES (1, ?1, ?2, ?3) \
         ON CONFLICT(id) DO UPDATE SET term = excluded.term, vote = excluded.vote, \
         commit_index = excluded.commit_index",
    )
    .and_then(|mut st| {
        st.execute(params![
            hs.term as i64,
            hs.vote.map(|v| v as i64),
            hs.commit as i64
        ])
    })
    .map_err(ctx("write the hard state"))?;
    Ok(())
}

fn write_applied(tx: &Transaction<'_>, index: u64) -> Result<(), StorageError> {
    tx.prepare_cached(
        "INSERT INTO raft_hard_state (id, term, vote, commit_index, applied_index) \
         VALUES (1, 0, NULL, 0, ?1) \
         ON CONFLICT(id) DO UPDATE SET applied_index = excluded.applied_index",
    )
    .and_then(|mut st| st.execute(params![index as i64]))
    .map_err(ctx("write the applied index"))?;
    Ok(())
}

fn write_membership(tx: &Transaction<'_>, index: u64, m: &Membership) -> Result<(), StorageError> {
    let ids = |s: &std::collections::BTreeSet<NodeId>| {
        s.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    };
    tx.execute(
        "INSERT INTO raft_membership (id, idx, voters, learners) VALUES (1, ?1, ?2, ?3) \
         ON CONFLICT(id) DO UPDATE SET idx = excluded.idx, voters = excluded.voters, \
         learners = excluded.learners",
        params![index as i64, ids(&m.voters), ids(&m.learners)],
    )
    .map_err(ctx("write the membership"))?;
    Ok(())
}

fn insert_snapshot(
    tx: &Transaction<'_>,
    meta: &SnapshotMeta,
    data_len: usize,
) -> Result<(), StorageError> {
    let now = crate::util::time::unix_ms(std::time::SystemTime::now());
    tx.execute(
        "INSERT OR REPLACE INTO raft_snapshots (idx, term, membership, data_len, created_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            meta.index as i64,
            meta.term as i64,
            meta.membership.encode(),
            data_len as i64,
            now as i64
        ],
    )
    .map_err(ctx("record a snapshot"))?;
    tx.execute(
        "DELETE FROM raft_snapshots WHERE idx NOT IN \
         (SELECT idx FROM raft_snapshots ORDER BY idx DESC LIMIT ?1)",
        params![SNAPSHOTS_KEPT as i64],
    )
    .map_err(ctx("trim old snapshots"))?;
    Ok(())
}

/// The body of [`Storage::persist`]: Ready's order, inside `tx`.
fn write_batch(
    tx: &Transaction<'_>,
    ready: &Ready,
    sm: &mut dyn StateMachine,
) -> Result<Vec<AppliedEntry>, StorageError> {
    if let Some((meta, data)) = &ready.snapshot {
        insert_snapshot(tx, meta, data.len())?;
        tx.execute("DELETE FROM raft_log", [])
            .map_err(ctx("drop the log for a snapshot"))?;
        sm.restore(tx, data)?;
        write_membership(tx, meta.index, &meta.membership)?;
        write_applied(tx, meta.index)?;
    }
    if let Some(from) = ready.truncate_from {
        tx.execute("DELETE FROM raft_log WHERE idx >= ?1", params![from as i64])
            .map_err(ctx("truncate the log"))?;
    }
    if !ready.entries.is_empty() {
        let mut st = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO raft_log (idx, term, kind, data) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(ctx("append to the log"))?;
        for e in &ready.entries {
            st.execute(params![
                e.index as i64,
                e.term as i64,
                kind_to_i64(e.kind),
                e.data
            ])
            .map_err(ctx("append to the log"))?;
        }
    }
    if let Some(hs) = &ready.hard_state {
        write_hard_state(tx, hs)?;
    }
    // Committed entries come in log order after the applied index; one at
    // or below it would be applied twice (a second journal entry for one
    // raft index): refused, once per batch.
    if let Some(first) = ready.committed.first() {
        let done: i64 = tx
            .prepare_cached("SELECT applied_index FROM raft_hard_state WHERE id = 1")
            .and_then(|mut st| st.query_row([], |r| r.get(0)).optional())
            .map_err(ctx("read the applied index"))?
            .unwrap_or(0);
        if first.index <= done as u64 {
            return Err(StorageError::new(format!(
                "refusing to apply raft index {} again: applied up to {done}",
                first.index
            )));
        }
    }
    let mut applied = Vec::with_capacity(ready.committed.len());
    for e in &ready.committed {
        let outcome = match e.kind {
            EntryKind::Normal => Some(sm.apply(
                tx,
                CommittedEntry {
                    index: e.index,
                    term: e.term,
                    data: &e.data,
                },
            )?),
            EntryKind::Membership => {
                if let Ok(m) = Membership::decode(&e.data) {
                    write_membership(tx, e.index, &m)?;
                }
                None
            }
            EntryKind::Noop => None,
        };
        applied.push(AppliedEntry {
            index: e.index,
            term: e.term,
            kind: e.kind,
            outcome,
        });
    }
    if let Some(last) = ready.committed.last() {
        write_applied(tx, last.index)?;
    }
    Ok(applied)
}
