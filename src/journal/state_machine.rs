//! The journal's state machine: what committed Raft entries do.
//!
//! [`StateMachine`] is the hook the daemon applies committed `Normal`
//! entries through, inside the storage transaction that persists the
//! Raft batch (so the applied-index marker and the state tables never
//! disagree). Raft's own `Noop` and `Membership` entries never reach it.
//!
//! [`AppendLog`] is this machine: an append-only log of opaque
//! client payloads with journal sequence numbers assigned at apply time,
//! starting at 0 with no gaps. The configuration-entry logic (validation,
//! overlays, node deltas) replaces it in a later issue through the same
//! trait; a rejected entry takes no sequence number.

use std::io::Write;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::storage::StorageError;
use crate::proto::{ExitCode, Record};

/// One committed client entry, as handed to [`StateMachine::apply`].
#[derive(Debug, Clone, Copy)]
pub struct CommittedEntry<'a> {
    pub index: u64,
    pub term: u64,
    pub data: &'a [u8],
}

/// What applying an entry means for the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied; the fields go on the client's `ok` line (`seq=<n>`).
    Applied(Record),
    /// Deterministically refused (every replica refuses it the same way);
    /// nothing changed and no sequence number was taken.
    Rejected(ExitCode, String),
}

/// A linearizable read, parsed from a client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOp {
    /// One entry by sequence number.
    Get { seq: u64 },
    /// Entries `from..=to`, at most `limit` of them, and no more once
    /// their data reaches `max_bytes` (at least one is returned).
    Range {
        from: u64,
        to: u64,
        limit: usize,
        max_bytes: usize,
    },
}

/// Produces snapshot data as of an index from a (read-only) connection.
pub type Snapshotter =
    std::sync::Arc<dyn Fn(&Connection, u64) -> Result<Vec<u8>, StorageError> + Send + Sync>;

/// Records (each with an optional body) answering a read.
/// One entry of a read: its record line and, if any, its body.
pub type ReadItem = (Record, Option<Vec<u8>>);
pub type ReadReply = Vec<ReadItem>;

/// The application behind the Raft log. Every method runs on the daemon's
/// loop; `apply` and `restore` inside the storage transaction of the batch.
///
/// Contract for snapshots: the state must be reproducible as of any
/// applied index (the journal is append-only; derived state can be rebuilt
/// from the entries), because the snapshot data is not stored separately
/// but regenerated from the tables on demand.
pub trait StateMachine {
    /// Reads whatever the machine caches (counters) after the database is
    /// opened or a transaction failed.
    fn load(&mut self, conn: &Connection) -> Result<(), StorageError>;

    /// Applies one committed entry. Must be deterministic: every replica
    /// applies the same entries in the same order with the same outcome.
    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        entry: CommittedEntry<'_>,
    ) -> Result<ApplyOutcome, StorageError>;

    /// Serializes the state as of `index` (at most the applied index).
    fn snapshot(&self, conn: &Connection, index: u64) -> Result<Vec<u8>, StorageError> {
        (self.snapshotter())(conn, index)
    }

    /// The same as a function that runs on another thread with its own
    /// read-only connection, so a large snapshot never stalls the loop.
    fn snapshotter(&self) -> Snapshotter;

    /// Replaces the whole state by a snapshot's data.
    fn restore(&mut self, tx: &Transaction<'_>, data: &[u8]) -> Result<(), StorageError>;

    /// Answers a read from the applied state.
    fn read(&self, conn: &Connection, op: ReadOp) -> Result<ReadReply, (ExitCode, String)>;

    /// Fields for the `status` record (e.g. `last_seq`).
    fn status(&self) -> Record;
}

/// Append-only log of opaque payloads (`journal_entries`).
#[derive(Debug, Default)]
pub struct AppendLog {
    /// The next sequence number to assign.
    next_seq: u64,
}

/// Snapshot formats of [`AppendLog`]. The body is, per entry,
/// `seq u64 | raft_index u64 | len u32 | data`, all big-endian.
/// `"PJS1"` + body (read only: what earlier versions sent); `"PJS2"` + one
/// zstd frame of the body, what is written. A snapshot holds the whole
/// history and the Raft core keeps the latest one in memory to send to
/// lagging followers: compressed, it costs that memory and those chunks
/// several times less.
const SNAPSHOT_MAGIC: &[u8; 4] = b"PJS1";
const SNAPSHOT_MAGIC_ZSTD: &[u8; 4] = b"PJS2";

/// Largest snapshot body a node accepts (decompressed), 4 GiB.
pub const MAX_SNAPSHOT_BODY: u64 = 4 << 30;

impl AppendLog {
    pub fn new() -> AppendLog {
        AppendLog::default()
    }

    /// The sequence number the next applied entry gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

fn sql_err(what: &str) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
    move |e| StorageError::new(format!("{what}: {e}"))
}

impl StateMachine for AppendLog {
    fn load(&mut self, conn: &Connection) -> Result<(), StorageError> {
        self.next_seq = stored_next_seq(conn)?;
        Ok(())
    }

    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        entry: CommittedEntry<'_>,
    ) -> Result<ApplyOutcome, StorageError> {
        let seq = self.next_seq;
        insert_entry(tx, seq, entry.index, entry.data)?;
        self.next_seq += 1;
        Ok(ApplyOutcome::Applied(Record::new().field("seq", seq)))
    }

    fn snapshotter(&self) -> Snapshotter {
        std::sync::Arc::new(append_log_snapshot)
    }

    fn restore(&mut self, tx: &Transaction<'_>, data: &[u8]) -> Result<(), StorageError> {
        let entries = decode_snapshot(data)?;
        tx.execute("DELETE FROM journal_entries", [])
            .map_err(sql_err("clear the journal"))?;
        for (seq, raft_index, payload) in &entries {
            insert_entry(tx, *seq, *raft_index, payload)?;
        }
        self.next_seq = entries.last().map_or(0, |(s, _, _)| s + 1);
        Ok(())
    }

    fn read(&self, conn: &Connection, op: ReadOp) -> Result<ReadReply, (ExitCode, String)> {
        read_entries(conn, op, self.next_seq, |seq, index, data| {
            Ok((entry_record(seq, index, &data), Some(data)))
        })
    }

    fn status(&self) -> Record {
        seq_status(self.next_seq)
    }
}

/// [`AppendLog`]'s snapshot: every entry applied at or before `index`,
/// compressed as it is read (the plain body never sits in memory whole).
pub fn append_log_snapshot(conn: &Connection, index: u64) -> Result<Vec<u8>, StorageError> {
    let zerr = |e: std::io::Error| StorageError::new(format!("compress the snapshot: {e}"));
    let mut z = zstd::stream::write::Encoder::new(SNAPSHOT_MAGIC_ZSTD.to_vec(), 3).map_err(zerr)?;
    let mut st = conn
        .prepare_cached(
            "SELECT seq, raft_index, data FROM journal_entries WHERE raft_index <= ?1 ORDER BY seq",
        )
        .map_err(sql_err("snapshot the journal"))?;
    let mut rows = st
        .query(params![index as i64])
        .map_err(sql_err("snapshot the journal"))?;
    while let Some(row) = rows.next().map_err(sql_err("snapshot the journal"))? {
        let seq: i64 = row.get(0).map_err(sql_err("snapshot row"))?;
        let raft_index: i64 = row.get(1).map_err(sql_err("snapshot row"))?;
        let data = row.get_ref(2).map_err(sql_err("snapshot row"))?;
        let data = data
            .as_blob()
            .map_err(|e| StorageError::new(e.to_string()))?;
        let mut head = [0u8; 20];
        head[0..8].copy_from_slice(&(seq as u64).to_be_bytes());
        head[8..16].copy_from_slice(&(raft_index as u64).to_be_bytes());
        head[16..20].copy_from_slice(&(data.len() as u32).to_be_bytes());
        z.write_all(&head).map_err(zerr)?;
        z.write_all(data).map_err(zerr)?;
    }
    z.finish().map_err(zerr)
}

/// The sequence number the next entry gets, from `journal_entries`.
pub fn stored_next_seq(conn: &Connection) -> Result<u64, StorageError> {
    let max: Option<i64> = conn
        .query_row("SELECT MAX(seq) FROM journal_entries", [], |r| r.get(0))
        .map_err(sql_err("read the last sequence number"))?;
    Ok(max.map_or(0, |m| m as u64 + 1))
}

/// Stores one entry of the journal.
pub fn insert_entry(
    tx: &Transaction<'_>,
    seq: u64,
    index: u64,
    data: &[u8],
) -> Result<(), StorageError> {
    tx.prepare_cached("INSERT INTO journal_entries (seq, raft_index, data) VALUES (?1, ?2, ?3)")
        .and_then(|mut st| st.execute(params![seq as i64, index as i64, data]))
        .map(|_| ())
        .map_err(sql_err("append a journal entry"))
}

/// `status` fields of a journal whose next entry gets `next_seq`.
pub fn seq_status(next_seq: u64) -> Record {
    let last = next_seq
        .checked_sub(1)
        .map_or("-".to_string(), |s| s.to_string());
    Record::new()
        .field("last_seq", last)
        .field("next_seq", next_seq)
}

/// Answers `op` from `journal_entries`; `item` turns each row (seq, raft
/// index, stored data) into what the reply carries. A range stops before
/// its bodies pass `max_bytes` (it always holds at least one entry).
pub fn read_entries(
    conn: &Connection,
    op: ReadOp,
    next_seq: u64,
    mut item: impl FnMut(u64, u64, Vec<u8>) -> Result<ReadItem, (ExitCode, String)>,
) -> Result<ReadReply, (ExitCode, String)> {
    let internal = |e: rusqlite::Error| (ExitCode::General, format!("storage: {e}"));
    let cap = |v: u64| v.min(i64::MAX as u64) as i64;
    match op {
        ReadOp::Get { seq } => {
            let row: Option<(i64, Vec<u8>)> = conn
                .query_row(
                    "SELECT raft_index, data FROM journal_entries WHERE seq = ?1",
                    params![cap(seq)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(internal)?;
            match row {
                Some((index, data)) => Ok(vec![item(seq, index as u64, data)?]),
                None => Err((
                    ExitCode::Invalid,
                    format!("no entry with sequence number {seq} (next is {next_seq})"),
                )),
            }
        }
        ReadOp::Range {
            from,
            to,
            limit,
            max_bytes,
        } => {
            let mut st = conn
                .prepare_cached(
                    "SELECT seq, raft_index, data FROM journal_entries \
                     WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
                )
                .map_err(internal)?;
            let rows = st
                .query_map(params![cap(from), cap(to), limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .map_err(internal)?;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for row in rows {
                let (seq, index, data) = row.map_err(internal)?;
                let (rec, body) = item(seq as u64, index as u64, data)?;
                let len = body.as_ref().map_or(0, Vec::len);
                if !out.is_empty() && bytes.saturating_add(len) > max_bytes {
                    break;
                }
                bytes = bytes.saturating_add(len);
                out.push((rec, body));
            }
            Ok(out)
        }
    }
}

fn entry_record(seq: u64, index: u64, data: &[u8]) -> Record {
    Record::new()
        .field("seq", seq)
        .field("index", index)
        .field("len", data.len())
}

/// `(seq, raft_index, data)` of one entry in a snapshot.
pub type SnapshotEntry = (u64, u64, Vec<u8>);

/// Parses [`AppendLog`] snapshot data (strict: sequence numbers from 0
/// without gaps, nothing trailing). The data comes from the leader over
/// the network: it is fuzzed (`fz_journal_snapshot`).
pub fn decode_snapshot(data: &[u8]) -> Result<Vec<SnapshotEntry>, StorageError> {
    decode_snapshot_limited(data, MAX_SNAPSHOT_BODY)
}

/// [`decode_snapshot`] with a smaller bound on the decompressed body.
pub fn decode_snapshot_limited(
    data: &[u8],
    max_body: u64,
) -> Result<Vec<SnapshotEntry>, StorageError> {
    let bad = |why: &str| StorageError::new(format!("bad journal snapshot: {why}"));
    let inflated;
    let mut rest = if let Some(frame) = data.strip_prefix(SNAPSHOT_MAGIC_ZSTD) {
        use std::io::Read;
        let mut body = Vec::new();
        zstd::stream::read::Decoder::with_buffer(frame)
            .map_err(|e| bad(&format!("zstd: {e}")))?
            .take(max_body.saturating_add(1))
            .read_to_end(&mut body)
            .map_err(|e| bad(&format!("zstd: {e}")))?;
        if body.len() as u64 > max_body {
            return Err(bad(&format!("larger than {max_body} bytes decompressed")));
        }
        inflated = body;
        &inflated[..]
    } else {
        let body = data
            .strip_prefix(SNAPSHOT_MAGIC)
            .ok_or_else(|| bad("magic"))?;
        if body.len() as u64 > max_body {
            return Err(bad(&format!("larger than {max_body} bytes")));
        }
        body
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 20 {
            return Err(bad("truncated entry header"));
        }
        let seq = u64::from_be_bytes(rest[0..8].try_into().unwrap_or_default());
        let index = u64::from_be_bytes(rest[8..16].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(rest[16..20].try_into().unwrap_or_default()) as usize;
        rest = &rest[20..];
        if rest.len() < len {
            return Err(bad("truncated entry data"));
        }
        if seq != out.len() as u64 {
            return Err(bad("sequence numbers not contiguous from 0"));
        }
        out.push((seq, index, rest[..len].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(entries: &[(u64, u64, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (seq, index, data) in entries {
            b.extend_from_slice(&seq.to_be_bytes());
            b.extend_from_slice(&index.to_be_bytes());
            b.extend_from_slice(&(data.len() as u32).to_be_bytes());
            b.extend_from_slice(data);
        }
        b
    }

    fn journal_with(n: u64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE journal_entries (seq INTEGER PRIMARY KEY, \
             raft_index INTEGER NOT NULL, data BLOB NOT NULL);",
        )
        .unwrap();
        for i in 0..n {
            let data = format!("entry {i} ").repeat(50);
            conn.execute(
                "INSERT INTO journal_entries VALUES (?1, ?2, ?3)",
                params![i as i64, (i * 2 + 3) as i64, data.as_bytes()],
            )
            .unwrap();
        }
        conn
    }

    #[test]
    fn snapshots_are_compressed_and_read_back_up_to_an_index() {
        let conn = journal_with(1000);
        let snap = append_log_snapshot(&conn, 1001).unwrap();
        assert!(snap.starts_with(b"PJS2"));
        let entries = decode_snapshot(&snap).unwrap();
        // raft_index 3, 5, ... 1001: entries 0..=499.
        assert_eq!(entries.len(), 500);
        let plain: usize = entries.iter().map(|e| 20 + e.2.len()).sum();
        assert!(snap.len() * 5 < plain, "{} vs {plain}", snap.len());
        assert_eq!(entries[499].0, 499);
        assert_eq!(entries[499].1, 1001);
        assert_eq!(entries[7].2, "entry 7 ".repeat(50).into_bytes());
    }

    #[test]
    fn the_uncompressed_format_is_still_read() {
        let mut data = b"PJS1".to_vec();
        data.extend(body(&[(0, 1, b"a"), (1, 4, b"bc")]));
        let entries = decode_snapshot(&data).unwrap();
        assert_eq!(entries, vec![(0, 1, b"a".to_vec()), (1, 4, b"bc".to_vec())]);
        // The fuzzer's seeds: one of each format, the same entries.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/fz_journal_snapshot");
        let plain = decode_snapshot(&std::fs::read(dir.join("seed")).unwrap()).unwrap();
        let packed = decode_snapshot(&std::fs::read(dir.join("seed-zstd")).unwrap()).unwrap();
        assert!(!plain.is_empty());
        assert_eq!(plain, packed);
    }

    #[test]
    fn a_snapshot_inflating_past_the_bound_is_refused_without_inflating_it() {
        let big = vec![0u8; 4 << 20];
        let mut data = b"PJS2".to_vec();
        data.extend(zstd::bulk::compress(&big, 3).unwrap());
        assert!(data.len() < 4096);
        let err = decode_snapshot_limited(&data, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("larger than 1048576"), "{err}");
        // Garbage after the magic is an error, not a panic.
        let err = decode_snapshot(b"PJS2not zstd").unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
    }
}
