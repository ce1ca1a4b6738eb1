//! The configuration journal on top of Raft: entries, overlays, node
//! deltas (issue 5). See `entry` for the model and commands.

pub mod delta;
pub mod entry;
