//! The configuration journal: Raft consensus, SQLite storage, the daemon.

pub mod raft;
pub mod state_machine;
pub mod storage;
