//! Small shared pieces with no better home: a seeded PRNG, time formatting.

pub mod net;
pub mod rng;
pub mod sha256;
pub mod time;
