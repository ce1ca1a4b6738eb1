//! NOTIFY_SOCKET datagrams from services.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pact::agent::notify::parse_notify(data);
});
