//! A small logger for the `log` facade: one line per record on stderr,
//! text by default or JSON (`--log-format json`).
//!
//! Text:  `2026-11-23T13:28:15.123Z INFO  agent: service chronyd running`
//! JSON:  `{"ts":"2026-11-23T13:28:15.123Z","level":"INFO","target":"agent","msg":"..."}`

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::util::time::{rfc3339_ms, unix_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "unknown log format \"{other}\" (expected text or json)"
            )),
        }
    }
}

/// Parse a level name as used in config files and `PACT_LOG`.
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.parse::<LevelFilter>().map_err(|_| {
        format!("unknown log level \"{s}\" (expected off, error, warn, info, debug or trace)")
    })
}

struct Logger {
    json: AtomicBool,
}

static LOGGER: Logger = Logger {
    json: AtomicBool::new(false),
};

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_record(
            unix_ms(SystemTime::now()),
            record.level(),
            short_target(record.target()),
            &record.args().to_string(),
            self.json.load(Ordering::Relaxed),
        );
        // One write per line so concurrent writers do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// `pact::agent::supervisor` → `agent::supervisor`.
fn short_target(target: &str) -> &str {
    target.strip_prefix("pact::").unwrap_or(target)
}

fn format_record(ms: u64, level: Level, target: &str, msg: &str, json: bool) -> String {
    let ts = rfc3339_ms(ms);
    if json {
        format!(
            "{{\"ts\":\"{ts}\",\"level\":\"{level}\",\"target\":{},\"msg\":{}}}\n",
            json_string(target),
            json_string(msg)
        )
    } else {
        format!("{ts} {level:<5} {target}: {msg}\n")
    }
}

/// A JSON string literal for `s`.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Install the logger (once per process); later calls only change settings.
pub fn init(level: LevelFilter, format: Format) {
    LOGGER.json.store(format == Format::Json, Ordering::Relaxed);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_lines() {
        let t = format_record(0, Level::Info, "agent", "hello \"x\"", false);
        assert_eq!(t, "1970-01-01T00:00:00.000Z INFO  agent: hello \"x\"\n");
        let j = format_record(0, Level::Warn, "agent", "a\nb\u{1}", true);
        assert_eq!(
            j,
            "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"level\":\"WARN\",\"target\":\"agent\",\"msg\":\"a\\nb\\u0001\"}\n"
        );
    }

    #[test]
    fn levels_and_formats_parse() {
        assert_eq!(parse_level("debug"), Ok(LevelFilter::Debug));
        assert!(parse_level("loud").is_err());
        assert_eq!("json".parse::<Format>(), Ok(Format::Json));
        assert!("xml".parse::<Format>().is_err());
    }
}
