//! The request side of the line protocol: framing, quoting, body lengths.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pact::proto::{reader::parse_stream, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_line: 512, max_words: 16, max_body: 4096 };
    for r in parse_stream(data, limits).into_iter().flatten() {
        assert!(r.words.len() <= limits.max_words);
        assert!(r.body.len() <= limits.max_body);
        // What parses must survive a round trip through the formatter.
        let words: Vec<&str> = r.words.iter().map(String::as_str).collect();
        let again = pact::proto::parse_line(pact::proto::format_request(&words).as_bytes(), &Limits::default());
        assert_eq!(again.map(|x| x.words).ok(), Some(r.words.clone()));
    }
});
