//! agent.toml.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pact::config::agent::AgentFile;
use pact::config::Source;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = AgentFile::parse(&Source::from_str("fuzz.toml", &text)).map_err(|e| e.to_string());
});
