//! The boot/subscription stream as the agent reads it from a journal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pact::proto::boot::{BootDecoder, BootEvent, MAX_OVERLAY};

fuzz_target!(|data: &[u8]| {
    // Split at the first byte's value to exercise partial feeds.
    let cut = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut d = BootDecoder::default();
    for part in [&data[..cut], &data[cut..]] {
        match d.feed(part) {
            Ok(events) => {
                for e in events {
                    if let BootEvent::Overlay(o) = e {
                        assert!(o.data.len() <= MAX_OVERLAY);
                    }
                }
            }
            Err(_) => return,
        }
    }
});
