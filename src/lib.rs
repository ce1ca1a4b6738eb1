//! pact: node management for diskless HPC compute nodes.
//!
//! - [`agent`]: `pact-agent`, the PID-1 supervisor (one mio loop, sans-IO cores).
//! - [`journal`]: `pact-journal`, the Raft-replicated configuration journal.
//! - [`proto`]: the line protocol every control socket speaks.
//! - [`config`]: TOML configuration (agent, services overlay).

pub mod agent;
pub mod cli;
pub mod config;
pub mod journal;
pub mod logger;
pub mod proto;
pub mod util;
