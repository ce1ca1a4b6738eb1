//! The snapshot helper thread: serializes the state machine as of an
//! applied index with its own read-only SQLite connection and hands the
//! bytes back through a `mio::Waker`, so a large journal never stalls
//! the event loop (heartbeats keep flowing while it works).
//!
//! The loop then gives the data to `RaftNode::compact` and records the
//! snapshot (a small transaction). The journal tables are append-only,
//! so the state as of an index can be read at any later time.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;

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
