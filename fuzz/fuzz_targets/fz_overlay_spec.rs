//! What the journal reads from clients and from its log: an overlay spec
//! (the body of `apply`/`commit`) and a command payload of a Raft entry.
//! A spec that validates must survive the canonical round trip: merged
//! into an empty overlay, written as TOML and read back, it is the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pact::config::overlay::{parse_spec, Overlay};
use pact::config::Source;
use pact::journal::machine::entry::Command;

fuzz_target!(|data: &[u8]| {
    let _ = Command::decode(data);
    let text = String::from_utf8_lossy(data);
    if let Ok(specs) = parse_spec(&Source::from_str("fuzz.toml", &text)) {
        for spec in specs {
            let mut o = Overlay::default();
            o.merge(&spec);
            if o.is_empty() {
                continue;
            }
            let toml = o.to_toml(&spec.vcluster);
            let (name, back) = Overlay::from_toml(&toml).expect("canonical TOML parses");
            assert_eq!(name, spec.vcluster);
            assert_eq!(back, o, "round trip of\n{toml}");
        }
    }
});
