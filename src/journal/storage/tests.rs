use std::path::{Path, PathBuf};

use super::*;
use crate::journal::raft::{RaftConfig, RaftNode};
use crate::journal::state_machine::{AppendLog, ReadOp};
use crate::util::rng::Rng;

/// A fresh directory under the temp dir, removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "pact-journal-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn normal(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: data.to_vec(),
    }
}

fn membership_entry(index: u64, term: u64, voters: &[u64]) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Membership,
        data: Membership::new(voters.iter().copied(), []).encode(),
    }
}

/// One batch: append `entries`, commit (and apply) through `commit`.
fn batch(entries: Vec<Entry>, term: u64, committed: Vec<Entry>) -> Ready {
    let commit = committed.last().map_or(0, |e| e.index);
    Ready {
        hard_state: Some(HardState {
            term,
            vote: Some(1),
            commit,
        }),
        entries,
        committed,
        ..Ready::default()
    }
}

fn open(dir: &Path) -> Storage {
    Storage::open(dir, &StorageOptions::default()).unwrap()
}

#[test]
fn persist_then_load_gives_raft_its_state_back() {
    let dir = TempDir::new("roundtrip");
    let mut sm = AppendLog::new();
    {
        let mut st = open(&dir.0);
        st.claim(1, "pact").unwrap();
        let e1 = membership_entry(1, 1, &[1, 2, 3]);
        let e2 = normal(2, 1, b"first");
        let e3 = normal(3, 1, b"second");
        let out = st
            .persist(
                &batch(vec![e1.clone(), e2.clone(), e3.clone()], 1, vec![e1, e2]),
                &mut sm,
            )
            .unwrap();
        assert!(out.wrote);
        assert_eq!(out.applied.len(), 2);
        assert_eq!(
            out.applied[1].outcome,
            Some(ApplyOutcome::Applied(
                crate::proto::Record::new().field("seq", 0)
            ))
        );
    }
    let st = open(&dir.0);
    let mut sm2 = AppendLog::new();
    let restored = st.load(&mut sm2).unwrap();
    assert_eq!(sm2.next_seq(), 1);
    assert_eq!(restored.hard_state.commit, 2);
    assert_eq!(restored.applied, 2);
    assert_eq!(restored.entries.len(), 3);
    let node = RaftNode::new(RaftConfig::new(1), restored).unwrap();
    assert_eq!(node.last_index(), 3);
    assert_eq!(node.membership().voters.len(), 3);
    let reply = sm2.read(st.conn(), ReadOp::Get { seq: 0 }).unwrap();
    assert_eq!(reply[0].1.as_deref(), Some(&b"first"[..]));
    assert!(sm2.read(st.conn(), ReadOp::Get { seq: 1 }).is_err());
}

#[test]
fn claim_refuses_another_node_or_cluster() {
    let dir = TempDir::new("claim");
    let mut st = open(&dir.0);
    st.claim(2, "pact").unwrap();
    st.claim(2, "pact").unwrap();
    let e = st.claim(3, "pact").unwrap_err();
    assert!(e.message.contains("belongs to node 2"), "{e}");
    let e = st.claim(2, "other").unwrap_err();
    assert!(e.message.contains("cluster \"pact\""), "{e}");
}

#[test]
fn migrations_are_idempotent_and_newer_schemas_refused() {
    let dir = TempDir::new("migrate");
    drop(open(&dir.0));
    drop(open(&dir.0));
    let conn = Connection::open(dir.0.join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let e = Storage::open(&dir.0, &StorageOptions::default())
        .err()
        .unwrap();
    assert!(e.message.contains("newer than this binary"), "{e}");
}

/// A database at schema 2 (written by the previous release).
fn schema_v2(dir: &std::path::Path, hard_state: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let conn = Connection::open(dir.join(DB_FILE)).unwrap();
    conn.execute_batch("PRAGMA page_size=8192; PRAGMA journal_mode=WAL;")
        .unwrap();
    conn.execute_batch(include_str!("../../../sql/001_initial.sql"))
        .unwrap();
    conn.execute_batch(include_str!("../../../sql/002_config.sql"))
        .unwrap();
    conn.pragma_update(None, "user_version", 2).unwrap();
    if hard_state {
        conn.execute(
            "INSERT INTO raft_hard_state (id, term, vote, commit_index) VALUES (1, 4, 2, 7)",
            [],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO raft_applied (id, applied_index) VALUES (1, 7)",
        [],
    )
    .unwrap();
    for seq in 0..3i64 {
        conn.execute(
            "INSERT INTO journal_entries (seq, raft_index, data) VALUES (?1, ?2, ?3)",
            rusqlite::params![seq, seq + 5, format!("payload {seq}").into_bytes()],
        )
        .unwrap();
    }
}

#[test]
fn migration_3_keeps_the_applied_index_and_the_entries() {
    for hard_state in [true, false] {
        let dir = TempDir::new("migrate3");
        schema_v2(&dir.0, hard_state);
        let st = open(&dir.0);
        assert_eq!(
            st.applied_index().unwrap(),
            7,
            "hard state row: {hard_state}"
        );
        let hs = st.hard_state().unwrap();
        if hard_state {
            assert_eq!((hs.term, hs.vote, hs.commit), (4, Some(2), 7));
        } else {
            assert_eq!((hs.term, hs.vote), (0, None));
        }
        drop(st);
        let conn = Connection::open(dir.0.join(DB_FILE)).unwrap();
        let rows: Vec<(i64, i64, Vec<u8>)> = conn
            .prepare("SELECT seq, raft_index, data FROM journal_entries ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2], (2, 7, b"payload 2".to_vec()));
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('raft_applied', 'journal_entries_v3') \
                 OR tbl_name = 'journal_entries' AND type = 'index'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0, "the old table, the copy and the index are gone");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 3);
    }
}

#[test]
fn reading_an_older_database_leaves_it_as_it_was() {
    let dir = TempDir::new("readonly");
    schema_v2(&dir.0, true);
    let st = Storage::open_read_only(&dir.0).unwrap();
    let ins = st.inspect().unwrap();
    assert_eq!(ins.applied, 7);
    assert_eq!(ins.hard_state.term, 4);
    assert_eq!(ins.journal_entries, 3);
    drop(st);
    let conn = Connection::open(dir.0.join(DB_FILE)).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2, "not migrated");
    let applied: i64 = conn
        .query_row("SELECT applied_index FROM raft_applied", [], |r| r.get(0))
        .unwrap();
    assert_eq!(applied, 7);
    drop(conn);
    // Once migrated (the daemon opened it), read the same through schema 3.
    drop(open(&dir.0));
    let st = Storage::open_read_only(&dir.0).unwrap();
    assert_eq!(st.inspect().unwrap().applied, 7);
    drop(st);
    // A newer schema is refused, and left alone.
    let conn = Connection::open(dir.0.join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let e = Storage::open_read_only(&dir.0).err().unwrap();
    assert!(e.message.contains("newer than this binary"), "{e}");
}

#[test]
fn an_entry_applied_twice_is_refused() {
    let dir = TempDir::new("twice");
    let mut sm = AppendLog::new();
    let mut st = open(&dir.0);
    let entries = vec![
        membership_entry(1, 1, &[1]),
        normal(2, 1, b"a"),
        normal(3, 1, b"b"),
    ];
    st.persist(&batch(entries.clone(), 1, entries.clone()), &mut sm)
        .unwrap();
    let e = st
        .persist(&batch(vec![], 1, vec![entries[2].clone()]), &mut sm)
        .unwrap_err();
    assert!(e.message.contains("raft index 3 again"), "{e}");
    assert!(st
        .persist(&batch(vec![], 1, vec![entries[1].clone()]), &mut sm)
        .is_err());
    let next = normal(4, 1, b"c");
    st.persist(&batch(vec![next.clone()], 1, vec![next]), &mut sm)
        .unwrap();
    assert_eq!(sm.next_seq(), 3);
}

#[test]
fn truncation_and_compaction_survive_a_restart() {
    let dir = TempDir::new("compact");
    let mut sm = AppendLog::new();
    let mut st = open(&dir.0);
    let m = membership_entry(1, 1, &[1]);
    let mut entries = vec![m];
    for i in 2..=10 {
        entries.push(normal(i, 1, format!("e{i}").as_bytes()));
    }
    st.persist(&batch(entries.clone(), 1, entries[..6].to_vec()), &mut sm)
        .unwrap();
    // A new leader overwrites the uncommitted tail 7..=10 with term 2.
    let replaced = vec![normal(7, 2, b"x7"), normal(8, 2, b"x8")];
    let ready = Ready {
        truncate_from: Some(7),
        entries: replaced.clone(),
        hard_state: Some(HardState {
            term: 2,
            vote: None,
            commit: 8,
        }),
        committed: replaced.clone(),
        ..Ready::default()
    };
    st.persist(&ready, &mut sm).unwrap();
    assert_eq!(sm.next_seq(), 7);
    // Compact at 6 the way the daemon does.
    let meta = SnapshotMeta {
        index: 6,
        term: 1,
        membership: Membership::new([1], []),
    };
    let data = sm.snapshot(st.conn(), 6).unwrap();
    st.record_snapshot(&meta, data.len()).unwrap();
    drop(st);

    let st = open(&dir.0);
    let mut sm2 = AppendLog::new();
    let restored = st.load(&mut sm2).unwrap();
    let (smeta, sdata) = restored.snapshot.clone().unwrap();
    assert_eq!(smeta, meta);
    assert_eq!(sdata, data);
    let idx: Vec<u64> = restored.entries.iter().map(|e| e.index).collect();
    assert_eq!(idx, [7, 8]);
    assert_eq!(restored.entries[0].data, b"x7");
    let node = RaftNode::new(RaftConfig::new(1), restored).unwrap();
    assert_eq!((node.first_index(), node.last_index()), (7, 8));

    // The snapshot restores into an empty machine elsewhere.
    let dir2 = TempDir::new("restore");
    let mut other = open(&dir2.0);
    let mut sm3 = AppendLog::new();
    let install = Ready {
        snapshot: Some((meta.clone(), data)),
        hard_state: Some(HardState {
            term: 1,
            vote: None,
            commit: 6,
        }),
        ..Ready::default()
    };
    other.persist(&install, &mut sm3).unwrap();
    assert_eq!(sm3.next_seq(), 5);
    assert_eq!(other.applied_index().unwrap(), 6);
    let got = sm3
        .read(
            other.conn(),
            ReadOp::Range {
                from: 0,
                to: 10,
                limit: 100,
                max_bytes: 1 << 20,
            },
        )
        .unwrap();
    let bodies: Vec<Vec<u8>> = got.into_iter().map(|(_, b)| b.unwrap()).collect();
    assert_eq!(
        bodies,
        [
            b"e2".to_vec(),
            b"e3".to_vec(),
            b"e4".to_vec(),
            b"e5".to_vec(),
            b"e6".to_vec()
        ]
    );
}

/// A machine that fails on a chosen payload: an I/O error mid-batch.
struct Failing {
    inner: AppendLog,
    poison: &'static [u8],
}

impl StateMachine for Failing {
    fn load(&mut self, conn: &Connection) -> Result<(), StorageError> {
        self.inner.load(conn)
    }
    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        entry: CommittedEntry<'_>,
    ) -> Result<ApplyOutcome, StorageError> {
        if entry.data == self.poison {
            return Err(StorageError::new("injected I/O error"));
        }
        self.inner.apply(tx, entry)
    }
    fn snapshotter(&self) -> crate::journal::state_machine::Snapshotter {
        self.inner.snapshotter()
    }
    fn restore(&mut self, tx: &Transaction<'_>, data: &[u8]) -> Result<(), StorageError> {
        self.inner.restore(tx, data)
    }
    fn read(
        &self,
        conn: &Connection,
        op: ReadOp,
    ) -> Result<crate::journal::state_machine::ReadReply, (crate::proto::ExitCode, String)> {
        self.inner.read(conn, op)
    }
    fn status(&self) -> crate::proto::Record {
        self.inner.status()
    }
}

#[test]
fn a_failed_batch_rolls_back_as_a_whole() {
    let dir = TempDir::new("rollback");
    let mut st = open(&dir.0);
    let mut sm = Failing {
        inner: AppendLog::new(),
        poison: b"poison",
    };
    let ok = vec![membership_entry(1, 1, &[1]), normal(2, 1, b"a")];
    st.persist(&batch(ok.clone(), 1, ok), &mut sm).unwrap();
    let bad = vec![normal(3, 1, b"b"), normal(4, 1, b"poison")];
    let e = st
        .persist(&batch(bad.clone(), 1, bad), &mut sm)
        .unwrap_err();
    assert!(e.message.contains("injected"), "{e}");
    // Nothing of the failed batch is visible, and the counter rolled back.
    assert_eq!(sm.inner.next_seq(), 1);
    let mut fresh = AppendLog::new();
    let restored = st.load(&mut fresh).unwrap();
    assert_eq!(restored.entries.len(), 2);
    assert_eq!(restored.hard_state.commit, 2);
    assert_eq!(fresh.next_seq(), 1);
}

#[test]
fn recovery_makes_the_survivor_the_sole_voter() {
    let dir = TempDir::new("recover");
    let mut st = open(&dir.0);
    let mut sm = AppendLog::new();
    let entries = vec![
        membership_entry(1, 1, &[1, 2, 3]),
        normal(2, 3, b"a"),
        normal(3, 3, b"b"),
    ];
    st.persist(&batch(entries.clone(), 3, entries[..2].to_vec()), &mut sm)
        .unwrap();
    let idx = st.recover_as_sole_member(2).unwrap();
    assert_eq!(idx, 4);
    let ins = st.inspect().unwrap();
    assert_eq!(ins.membership, Membership::new([2], []));
    assert_eq!(ins.last_index, 4);
    let restored = st.load(&mut AppendLog::new()).unwrap();
    let node = RaftNode::new(RaftConfig::new(2), restored).unwrap();
    assert!(node.membership().is_voter(2) && node.membership().voters.len() == 1);
}

fn wal_path(dir: &Path) -> PathBuf {
    dir.join(format!("{DB_FILE}-wal"))
}

fn copy_db(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join(DB_FILE), to.join(DB_FILE)).unwrap();
    std::fs::copy(wal_path(from), wal_path(to)).unwrap();
}

/// A crash while the WAL's tail was being written: truncate (and garble)
/// the WAL at random points. What survives must be exactly the batches
/// whose WAL frames were complete, with every Raft invariant intact.
#[test]
fn torn_wal_tail_recovers_a_committed_prefix() {
    let dir = TempDir::new("torn");
    let opts = StorageOptions {
        no_autocheckpoint: true,
    };
    let mut st = Storage::open(&dir.0, &opts).unwrap();
    let mut sm = AppendLog::new();
    // (WAL size after the batch, last index after the batch)
    let mut marks = Vec::new();
    let first = vec![membership_entry(1, 1, &[1])];
    st.persist(&batch(first.clone(), 1, first), &mut sm)
        .unwrap();
    marks.push((std::fs::metadata(wal_path(&dir.0)).unwrap().len(), 1u64));
    let mut next = 2u64;
    let mut rng = Rng::new(0x7042);
    for _ in 0..40 {
        let n = rng.range(1, 6);
        let entries: Vec<Entry> = (0..n)
            .map(|k| normal(next + k, 1, &vec![b'x'; rng.range(10, 3000) as usize]))
            .collect();
        next += n;
        st.persist(&batch(entries.clone(), 1, entries), &mut sm)
            .unwrap();
        marks.push((std::fs::metadata(wal_path(&dir.0)).unwrap().len(), next - 1));
    }
    let wal_len = marks.last().unwrap().0;
    for round in 0..25u64 {
        let cut = if round == 0 {
            wal_len - 1
        } else {
            rng.range(0, wal_len)
        };
        let copy = TempDir::new("torn-copy");
        copy_db(&dir.0, &copy.0);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(wal_path(&copy.0))
            .unwrap();
        f.set_len(cut).unwrap();
        if round % 2 == 1 {
            // Garbage where the tail was (a torn sector).
            use std::io::{Seek, SeekFrom, Write};
            let mut f = f;
            f.seek(SeekFrom::Start(cut)).unwrap();
            let junk: Vec<u8> = (0..rng.range(1, 5000))
                .map(|_| rng.next_u64() as u8)
                .collect();
            f.write_all(&junk).unwrap();
        }
        let expect_last = marks
            .iter()
            .take_while(|(size, _)| *size <= cut)
            .last()
            .map_or(0, |(_, last)| *last);
        let st2 = Storage::open(&copy.0, &opts).unwrap();
        let mut sm2 = AppendLog::new();
        let restored = st2.load(&mut sm2).unwrap();
        let last = restored.entries.last().map_or(0, |e| e.index);
        assert_eq!(last, expect_last, "cut at {cut} of {wal_len}");
        assert_eq!(restored.hard_state.commit, expect_last);
        assert_eq!(restored.applied, expect_last);
        // Sequence numbers: one per normal entry, no gaps.
        assert_eq!(sm2.next_seq(), expect_last.saturating_sub(1));
        RaftNode::new(RaftConfig::new(1), restored).expect("raft accepts the recovered state");
    }
}

/// A full disk (a tiny tmpfs): the failing batch is refused with a clear
/// error, everything committed before stays readable.
#[test]
fn disk_full_fails_the_batch_and_keeps_committed_data() {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("\n*** disk_full_fails_the_batch_and_keeps_committed_data: SKIPPED: needs root to mount a tmpfs ***\n");
        return;
    }
    let dir = TempDir::new("diskfull");
    let mnt = dir.0.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "pact-test",
            mnt.to_str().unwrap(),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("\n*** disk_full...: SKIPPED: mount -t tmpfs failed ***\n");
        return;
    }
    let result = std::panic::catch_unwind(|| {
        let mut st = open(&mnt);
        let mut sm = AppendLog::new();
        let first = vec![membership_entry(1, 1, &[1])];
        st.persist(&batch(first.clone(), 1, first), &mut sm)
            .unwrap();
        let mut next = 2;
        let mut acked = 1;
        let err = loop {
            let e = vec![normal(next, 1, &[7u8; 16 * 1024])];
            match st.persist(&batch(e.clone(), 1, e), &mut sm) {
                Ok(_) => acked = next,
                Err(e) => break e,
            }
            next += 1;
            assert!(next < 1000, "the disk never filled up");
        };
        assert!(
            err.message.contains("full") || err.message.contains("disk"),
            "unclear error: {err}"
        );
        drop(st);
        // Read it back where there is room (the full tmpfs may not even
        // fit SQLite's shared-memory file).
        let roomy = TempDir::new("diskfull-copy");
        std::fs::copy(mnt.join(DB_FILE), roomy.0.join(DB_FILE)).unwrap();
        if wal_path(&mnt).exists() {
            std::fs::copy(wal_path(&mnt), wal_path(&roomy.0)).unwrap();
        }
        let st = open(&roomy.0);
        let mut sm2 = AppendLog::new();
        let restored = st.load(&mut sm2).unwrap();
        assert_eq!(restored.entries.last().unwrap().index, acked);
        assert_eq!(sm2.next_seq(), acked - 1);
    });
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn only_batches_raft_needs_durable_are_fsynced() {
    let dir = TempDir::new("sync");
    let mut st = open(&dir.0);
    let mut sm = AppendLog::new();
    let e = vec![membership_entry(1, 1, &[1]), normal(2, 1, b"a")];
    let out = st.persist(&batch(e.clone(), 1, vec![]), &mut sm).unwrap();
    assert!(out.synced, "new entries must be durable");
    // Commit index and apply only: no fsync needed.
    let out = st.persist(&batch(vec![], 1, e), &mut sm).unwrap();
    assert!(!out.synced);
    assert_eq!(out.applied.len(), 2);
    // A vote is durable before anyone hears of it.
    let vote = Ready {
        hard_state: Some(HardState {
            term: 2,
            vote: Some(3),
            commit: 2,
        }),
        ..Ready::default()
    };
    assert!(st.persist(&vote, &mut sm).unwrap().synced);
    drop(st);
    let restored = open(&dir.0).load(&mut AppendLog::new()).unwrap();
    assert_eq!(restored.hard_state.vote, Some(3));
    assert_eq!(restored.applied, 2);
}

#[test]
fn a_range_stops_at_its_byte_budget() {
    let dir = TempDir::new("range");
    let mut st = open(&dir.0);
    let mut sm = AppendLog::new();
    let mut e = vec![membership_entry(1, 1, &[1])];
    for i in 2..=6 {
        e.push(normal(i, 1, &[b'z'; 100]));
    }
    st.persist(&batch(e.clone(), 1, e), &mut sm).unwrap();
    let op = |max_bytes| ReadOp::Range {
        from: 0,
        to: 100,
        limit: 100,
        max_bytes,
    };
    assert_eq!(sm.read(st.conn(), op(250)).unwrap().len(), 2);
    assert_eq!(sm.read(st.conn(), op(10)).unwrap().len(), 1, "at least one");
    assert_eq!(sm.read(st.conn(), op(1 << 20)).unwrap().len(), 5);
}
