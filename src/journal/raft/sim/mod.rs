//! Deterministic simulation of Raft clusters (tests only).
//!
//! [`cluster::Cluster`] runs `RaftNode`s over a simulated network with a
//! fake clock; [`checker::Checker`] verifies Raft's safety properties
//! after every event; [`randomized`] runs thousands of seeds of random
//! faults. A failing seed panics with the command that replays it:
//! `PACT_SIM_SEED=<seed> cargo test -p pact raft::sim -- --nocapture`.

pub(crate) mod assertions;
pub(crate) mod checker;
pub(crate) mod cluster;
pub(crate) mod network;
pub(crate) mod node;
mod randomized;

pub(crate) use cluster::{Cluster, Options};
pub(crate) use network::NetFaults;
