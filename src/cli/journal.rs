//! `pact journal ...`: the journal's client port from the command line.
//!
//! Endpoints come from `--endpoint HOST:PORT` (repeatable, or comma
//! separated), else `PACT_JOURNAL_ENDPOINTS`, else `PACT_ENDPOINT`, else
//! `localhost:9443`. Writes follow the leader redirect automatically;
//! a write whose outcome is unknown exits 5 with "indeterminate".

use std::io::{Read, Write};
use std::time::Duration;

use super::output;
use crate::journal::client::{ClientError, JournalClient};
use crate::proto::client::Outcome;
use crate::proto::{ExitCode, Record};

type CliResult = Result<i32, (i32, String)>;

fn usage(msg: impl Into<String>) -> (i32, String) {
    (
        ExitCode::Invalid as i32,
        format!("{}\n(see pact --help)", msg.into()),
    )
}

fn failed(e: ClientError) -> (i32, String) {
    (e.code, format!("journal: {}", e.message))
}

/// `host:port` endpoints from a list like `http://a:9443,b:9443`.
pub(super) fn split_endpoints(s: &str) -> Vec<String> {
    s.split(',')
        .map(|e| e.trim())
        .map(|e| {
            e.strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"))
                .unwrap_or(e)
        })
        .map(|e| e.trim_end_matches('/').to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

pub(super) fn default_endpoints() -> Vec<String> {
    for var in ["PACT_JOURNAL_ENDPOINTS", "PACT_ENDPOINT"] {
        if let Ok(v) = std::env::var(var) {
            let eps = split_endpoints(&v);
            if !eps.is_empty() {
                return eps;
            }
        }
    }
    vec!["localhost:9443".to_string()]
}

/// Runs `pact journal <args>`; `args` excludes the word `journal`.
pub fn run(args: &[&str], json: bool, timeout: Duration) -> CliResult {
    let mut endpoints = Vec::new();
    let mut rest: Vec<&str> = Vec::new();
    let mut learner = false;
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "--endpoint" | "-e" => {
                let v = it
                    .next()
                    .ok_or_else(|| usage("--endpoint needs host:port"))?;
                endpoints.extend(split_endpoints(v));
            }
            "--learner" => learner = true,
            _ => rest.push(a),
        }
    }
    if endpoints.is_empty() {
        endpoints = default_endpoints();
    }
    let mut client = JournalClient::new(endpoints, timeout).bounded();
    match rest.as_slice() {
        ["status"] => status(&mut client, json),
        ["append"] => append(&mut client, "-", json),
        ["append", file] => append(&mut client, file, json),
        ["get", seq] => {
            let seq = seq
                .parse::<u64>()
                .map_err(|_| usage(format!("get {seq}: not a sequence number")))?;
            let data = client.get(seq).map_err(failed)?;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&data);
            let _ = out.flush();
            Ok(0)
        }
        ["range", from, to] => {
            let parse = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| usage(format!("range: {s} is not a sequence number")))
            };
            range(&mut client, parse(from)?, parse(to)?, json)
        }
        ["member", verb @ ("add" | "remove" | "promote"), id] => {
            id.parse::<u64>()
                .map_err(|_| usage(format!("member {verb}: {id} is not a node id")))?;
            let mut line = format!("member {verb} {id}");
            if learner {
                line.push_str(" learner=true");
            }
            let resp = client.write(&line, None).map_err(failed)?;
            let rec = match resp.outcome {
                Outcome::Ok(r) => r,
                Outcome::Err(c, m) => return Err((c, m)),
            };
            if json {
                println!("{}", output::json_object(&rec));
            } else {
                println!(
                    "membership changed at log index {}",
                    rec.get("index").unwrap_or("?")
                );
            }
            Ok(0)
        }
        [] => Err(usage(
            "journal: which command? (status, append, get, range, member)",
        )),
        other => Err(usage(format!(
            "unknown journal command \"{}\"",
            other.join(" ")
        ))),
    }
}

fn status(client: &mut JournalClient, json: bool) -> CliResult {
    let resp = client.status().map_err(failed)?;
    let node = resp.records.first().cloned().unwrap_or_default();
    let peers: Vec<Record> = resp.records.iter().skip(1).cloned().collect();
    if json {
        let peers_json = output::json_array(&peers);
        let obj = output::json_object(&node);
        // {"node":..., ..., "peers":[...]}
        let body = obj.trim_end_matches('}');
        let sep = if node.fields.is_empty() { "" } else { "," };
        println!("{body}{sep}\"peers\":{peers_json}}}");
    } else {
        print!("{}", output::key_values(&node));
        if !peers.is_empty() {
            println!();
            print!(
                "{}",
                output::table(
                    &peers,
                    &[
                        ("peer", "PEER"),
                        ("voter", "VOTER"),
                        ("match_index", "MATCH"),
                        ("lag", "LAG"),
                        ("state", "STATE"),
                        ("connected", "CONNECTED"),
                        ("heard_ms_ago", "HEARD_MS_AGO"),
                    ],
                )
            );
        }
    }
    Ok(0)
}

fn append(client: &mut JournalClient, file: &str, json: bool) -> CliResult {
    let data = if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| (ExitCode::General as i32, format!("read stdin: {e}")))?;
        buf
    } else {
        std::fs::read(file).map_err(|e| (ExitCode::Invalid as i32, format!("read {file}: {e}")))?
    };
    let seq = client.append(&data).map_err(failed)?;
    if json {
        println!("{{\"seq\":{seq}}}");
    } else {
        println!("{seq}");
    }
    Ok(0)
}

/// `journal range FROM TO`: every entry of the range, fetched in pages
/// (the server answers at most `max_range` entries, or `max_range_bytes`,
/// per request).
fn range(client: &mut JournalClient, from: u64, to: u64, json: bool) -> CliResult {
    let mut records = Vec::new();
    let mut next = from;
    while next <= to {
        let page = client.range(next, to).map_err(failed)?;
        let Some(&(last, _)) = page.last() else {
            break;
        };
        for (seq, data) in &page {
            let rec = entry_record(*seq, data);
            if json {
                records.push(rec);
            } else {
                println!("{}", rec.to_line());
            }
        }
        if last == u64::MAX {
            break;
        }
        next = last + 1;
    }
    if json {
        println!("{}", output::json_array(&records));
    }
    Ok(0)
}

/// One entry as a record: its bytes as `data` when they are text, else as
/// `data_hex` (nothing is dropped, and no control byte reaches a terminal).
fn entry_record(seq: u64, data: &[u8]) -> Record {
    let rec = Record::new().field("seq", seq).field("len", data.len());
    match std::str::from_utf8(data) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => {
            rec.field("data", s)
        }
        _ => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            rec.field("data_hex", hex)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_that_are_not_text_are_shown_in_hex() {
        let line = entry_record(3, b"a\tb\0c\xff").to_line();
        assert_eq!(line, "seq=3 len=6 data_hex=6109620063ff");
        let line = entry_record(4, b"plain text").to_line();
        assert_eq!(line, "seq=4 len=10 data=\"plain text\"");
        assert!(entry_record(5, b"cr\r")
            .to_line()
            .ends_with("data_hex=63720d"));
    }

    #[test]
    fn endpoints_are_normalized() {
        assert_eq!(
            split_endpoints("http://a:9443/, b:9443,,https://c:1"),
            ["a:9443", "b:9443", "c:1"]
        );
    }
}
