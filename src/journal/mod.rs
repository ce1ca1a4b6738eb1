//! The configuration journal: Raft consensus, SQLite storage, the daemon.
//!
//! - [`raft`]: the sans-IO Raft core (elections, replication, ReadIndex,
//!   snapshots, membership) and its wire codec.
//! - [`storage`]: the SQLite database (one transaction and one fsync per
//!   Raft batch) and its schema in `sql/`.
//! - [`state_machine`]: the [`StateMachine`](state_machine::StateMachine)
//!   hook committed entries are applied through, and the append-only
//!   journal ([`AppendLog`](state_machine::AppendLog)).
//! - [`config`]: `journal.toml`, `PACT_JOURNAL_*` and flags.
//! - `daemon`: the mio loop around all of it; `transport`: peer and
//!   client connections.
//! - [`machine`]: the configuration journal's entries, overlays and node
//!   deltas (the state machine of pact's configuration).
//! - [`client`]: a blocking client that follows leader redirects (the
//!   CLI, the tests and the benchmarks use it).

pub mod client;
pub mod config;
mod daemon;
pub mod histogram;
pub mod machine;
mod main;
pub mod raft;
pub mod state_machine;
pub mod storage;
mod transport;

pub use main::main;
