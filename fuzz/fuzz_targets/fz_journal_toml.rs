//! journal.toml, resolved with a PACT_JOURNAL_PEERS-style override taken
//! from the input's first line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pact::config::Source;
use pact::journal::config::{resolve, JournalFile, Overrides};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, rest) = text.split_once('\n').unwrap_or(("", &text));
    let _ = pact::journal::config::parse_peers_env(first);
    let _ = pact::journal::config::parse_member(first);
    let src = Source::from_str("fuzz.toml", rest);
    if let Ok(file) = src.parse::<JournalFile>() {
        let ov = Overrides { node_id: Some("1".into()), ..Overrides::default() };
        let _ = resolve(&file, &src, &ov).map_err(|e| e.len());
    }
});
