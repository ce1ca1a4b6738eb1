//! Named scenario tests (in the spirit of the MIT 6.824 Raft labs) on the
//! simulated cluster, plus unit tests of the node and the codec.

mod agreement;
mod codec_tests;
mod elections;
mod features;
mod persistence;
mod robustness;
mod rules;

use super::sim::{Cluster, NetFaults, Options};

/// A cluster of `n` voters with a reliable network.
fn cluster(n: u64, seed: u64) -> Cluster {
    Cluster::new(Options::new(n, seed))
}

fn cluster_with(n: u64, seed: u64, tweak: impl FnOnce(&mut Options)) -> Cluster {
    let mut opts = Options::new(n, seed);
    tweak(&mut opts);
    Cluster::new(opts)
}

/// Command bytes for value `v`.
fn val(v: u64) -> Vec<u8> {
    format!("cmd-{v}").into_bytes()
}

/// The node after `id` in `1..=n`, wrapping (6.824's `(i + k) % n`).
fn nth_after(id: u64, k: u64, n: u64) -> u64 {
    (id - 1 + k) % n + 1
}

#[allow(dead_code)]
fn unreliable() -> NetFaults {
    NetFaults::unreliable()
}
