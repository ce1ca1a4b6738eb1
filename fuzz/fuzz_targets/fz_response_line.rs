//! Response lines as a client reads them (records, bodies, ok/err).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(pact::proto::ResponseLine::Record(r)) = pact::proto::parse_response_line(text) {
            // A parsed record written back parses to the same record.
            let again = pact::proto::response::parse_record(&r.to_line()).expect("own output parses");
            assert_eq!(again, r);
        }
    }
});
