//! The status line of a health check's HTTP answer.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pact::agent::health::parse_status_line(data);
});
