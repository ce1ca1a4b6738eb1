//! The configuration journal: Raft consensus, SQLite storage, the daemon.

pub mod config;
pub mod raft;
