//! Service declarations (vCluster overlay TOML) as the agent validates them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pact::config::services::{CheckEnv, ServiceSet};
use pact::config::Source;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let env = CheckEnv { etc: std::path::PathBuf::from("/nonexistent"), check_binaries: false, check_users: true, partial: data.first().is_some_and(|b| b & 1 == 1) };
    if let Err(e) = ServiceSet::parse(&Source::from_str("fuzz.toml", &text), None, &env) {
        let _ = e.to_string();
    }
});
