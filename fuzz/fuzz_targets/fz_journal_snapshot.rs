//! Snapshot data of the append-only journal, as received from a leader in
//! InstallSnapshot chunks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A small bound: a zstd bomb must be refused, not inflated.
    if let Ok(entries) = pact::journal::state_machine::decode_snapshot_limited(data, 16 << 20) {
        for (i, (seq, _, _)) in entries.iter().enumerate() {
            assert_eq!(*seq, i as u64);
        }
    }
});
