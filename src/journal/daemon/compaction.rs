//! The snapshot helper thread: serializes the state machine as of an
//! applied index with its own read-only SQLite connection and hands the
//! bytes back through a `mio::Waker`, so a large journal never stalls
//! the event loop (heartbeats keep flowing while it works).
//!
//! The loop then gives the data to `RaftNode::compact` and records the
//! snapshot (a small transaction). The journal tables are append-only,
//! so the state as of an index can be read at any later time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};

use mio::Waker;
use rusqlite::{Connection, OpenFlags};

use crate::journal::state_machine::Snapshotter;
use crate::journal::storage::StorageError;

pub type SnapshotResult = Result<(u64, Vec<u8>), StorageError>;

pub struct SnapshotWorker {
    requests: Sender<u64>,
    results: Receiver<SnapshotResult>,
    in_flight: Option<u64>,
}

impl SnapshotWorker {
    pub fn start(
        db: PathBuf,
        snapshotter: Snapshotter,
        waker: Arc<Waker>,
    ) -> std::io::Result<SnapshotWorker> {
        let (req_tx, req_rx) = channel::<u64>();
        let (res_tx, res_rx) = channel::<SnapshotResult>();
        std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                let mut conn: Option<Connection> = None;
                while let Ok(index) = req_rx.recv() {
                    let result = (|| {
                        if conn.is_none() {
                            let c = Connection::open_with_flags(
                                &db,
                                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                            )
                            .map_err(|e| StorageError::new(format!("snapshot reader: {e}")))?;
                            conn = Some(c);
                        }
                        let c = conn
                            .as_ref()
                            .ok_or_else(|| StorageError::new("no reader"))?;
                        snapshotter(c, index).map(|data| (index, data))
                    })();
                    if result.is_err() {
                        conn = None;
                    }
                    if res_tx.send(result).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(SnapshotWorker {
            requests: req_tx,
            results: res_rx,
            in_flight: None,
        })
    }

    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Asks for a snapshot as of `index` (one at a time).
    pub fn request(&mut self, index: u64) {
        if self.in_flight.is_none() && self.requests.send(index).is_ok() {
            self.in_flight = Some(index);
        }
    }

    /// A finished snapshot, if one is ready.
    pub fn take_result(&mut self) -> Option<SnapshotResult> {
        match self.results.try_recv() {
            Ok(r) => {
                self.in_flight = None;
                Some(r)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.in_flight = None;
                Some(Err(StorageError::new("the snapshot thread is gone")))
            }
        }
    }
}

/// The WAL checkpointer thread. SQLite's own automatic checkpoint runs
/// inside the commit that crosses 1000 WAL pages, in the event loop: it
/// copies every page written since the last one into the database and
/// fsyncs it, a stall of several milliseconds for the append that
/// triggers it. This thread backfills the WAL with PASSIVE checkpoints
/// on its own connection (they never block the writer), at most every
/// [`CHECKPOINT_EVERY`] while writes come in and never when idle, so the
/// automatic checkpoint finds almost nothing left to copy and the WAL is
/// recycled from its start as before.
pub struct Checkpointer {
    shared: Arc<CheckpointShared>,
}

/// Minimum time between two background checkpoints.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

struct CheckpointShared {
    /// Written since the last checkpoint began (only the first write of
    /// a cycle takes the lock and wakes the thread).
    dirty: AtomicBool,
    wake: Mutex<bool>,
    cond: Condvar,
    stop: AtomicBool,
}

impl Checkpointer {
    pub fn start(db: PathBuf) -> std::io::Result<Checkpointer> {
        let shared = Arc::new(CheckpointShared {
            dirty: AtomicBool::new(false),
            wake: Mutex::new(false),
            cond: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || checkpoint_loop(&db, &s))?;
        Ok(Checkpointer { shared })
    }

    /// The loop committed a write transaction.
    pub fn wrote(&self) {
        if !self.shared.dirty.swap(true, Ordering::AcqRel) {
            let mut w = self.shared.wake.lock().unwrap_or_else(|p| p.into_inner());
            *w = true;
            self.shared.cond.notify_one();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let mut w = self.shared.wake.lock().unwrap_or_else(|p| p.into_inner());
        *w = true;
        self.shared.cond.notify_one();
    }
}

fn checkpoint_loop(db: &std::path::Path, s: &CheckpointShared) {
    let mut conn: Option<Connection> = None;
    loop {
        {
            let mut w = s.wake.lock().unwrap_or_else(|p| p.into_inner());
            while !*w {
                w = s.cond.wait(w).unwrap_or_else(|p| p.into_inner());
            }
            *w = false;
        }
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        s.dirty.store(false, Ordering::Release);
        if conn.is_none() {
            match Connection::open_with_flags(
                db,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ) {
                Ok(c) => conn = Some(c),
                Err(e) => log::debug!(target: "journal", "checkpointer: open: {e}"),
            }
        }
        if let Some(c) = &conn {
            // (busy, WAL pages, pages backfilled); busy only means the
            // loop's own checkpoint holds the lock right now.
            let r = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
            if let Err(e) = r {
                log::debug!(target: "journal", "checkpointer: {e}");
                conn = None;
            }
        }
        std::thread::sleep(CHECKPOINT_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages in the WAL and how many of them are in the database already
    /// (a NOOP checkpoint only reports).
    fn wal_state(c: &Connection) -> (i64, i64) {
        c.query_row("PRAGMA wal_checkpoint(NOOP)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })
        .unwrap()
    }

    #[test]
    fn the_checkpointer_backfills_the_wal_after_writes_only() {
        let dir = std::env::temp_dir().join(format!("pact-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("t.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; \
             CREATE TABLE t (x BLOB);",
        )
        .unwrap();
        for _ in 0..50 {
            c.execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                .unwrap();
        }
        let (log, done) = wal_state(&c);
        assert!(log > 50 && done == 0, "{log} {done}");
        let ck = Checkpointer::start(db.clone()).unwrap();
        // Not told of a write: the thread does nothing.
        std::thread::sleep(CHECKPOINT_EVERY * 2);
        assert_eq!(wal_state(&c), (log, 0));
        ck.wrote();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while wal_state(&c) != (log, log) {
            assert!(
                std::time::Instant::now() < end,
                "WAL not backfilled: {:?} of {log}",
                wal_state(&c)
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(ck);
        let _ = std::fs::remove_dir_all(dir);
    }
}
