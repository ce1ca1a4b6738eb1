//! Sockets of the daemon: Raft peers and line-protocol clients.

pub mod clients;
pub mod peers;
