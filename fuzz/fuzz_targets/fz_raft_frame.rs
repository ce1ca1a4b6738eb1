//! A Raft peer connection's inbound bytes: frame lengths, the Hello, every
//! message type. Must return (never panic) and never allocate a claimed
//! length up front.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pact::journal::raft::{decode_frame_stream, encode_message_frame, PeerFrame};

fuzz_target!(|data: &[u8]| {
    // A small maximum so oversized headers are exercised too.
    if let Ok(frames) = decode_frame_stream(data, 1 << 16) {
        for f in frames {
            if let PeerFrame::Raft(m) = f {
                // What decodes must encode back to a frame that decodes equal.
                let again = encode_message_frame(&m);
                let mut hello = pact::journal::raft::encode_hello_frame(&pact::journal::raft::Hello {
                    version: pact::journal::raft::PROTOCOL_VERSION,
                    from: m.from,
                    cluster: "fuzz".into(),
                });
                hello.extend_from_slice(&again);
                let decoded = decode_frame_stream(&hello, usize::MAX).expect("re-decode");
                assert_eq!(decoded.get(1), Some(&PeerFrame::Raft(m)));
            }
        }
    }
});
