//! `pact-agent`: the PID-1 supervisor of a diskless compute node.

pub mod supervisor;
