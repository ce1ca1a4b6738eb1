//! Responses of the line protocol: logfmt records, bodies, one final line.
//!
//! ```text
//! name=chronyd state=running pid=412 restarts=0
//! body +12
//! <12 bytes>
//! ok seq=4812            (or)   err 3 unknown service "x"
//! ```

use super::{ExitCode, ProtoError};

/// One logfmt record line under construction.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    pub fields: Vec<(String, String)>,
}

impl Record {
    pub fn new() -> Record {
        Record::default()
    }

    pub fn field(mut self, key: &str, value: impl ToString) -> Record {
        self.fields.push((key.to_string(), value.to_string()));
        self
    }

    pub fn push(&mut self, key: &str, value: impl ToString) {
        self.fields.push((key.to_string(), value.to_string()));
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The record as one line, without the newline.
    pub fn to_line(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(&quote_value(v));
        }
        out
    }
}

/// A logfmt value: bare when it is safe, double-quoted otherwise.
pub fn quote_value(v: &str) -> String {
    let bare = !v.is_empty()
        && v.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '\\' && c != '=');
    if bare {
        v.to_string()
    } else {
        super::request::quote_always(v)
    }
}

/// The final `ok` line with optional fields.
pub fn ok_line(fields: &Record) -> String {
    if fields.fields.is_empty() {
        "ok".to_string()
    } else {
        format!("ok {}", fields.to_line())
    }
}

/// The final `err <code> <message>` line; the message is kept on one line.
pub fn err_line(code: ExitCode, message: &str) -> String {
    let one_line: String = message
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("err {} {}", code as i32, one_line)
}

/// Parse a logfmt record line (as written by [`Record::to_line`]).
pub fn parse_record(line: &str) -> Result<Record, ProtoError> {
    let words = super::request::split_words(line, usize::MAX)?;
    let mut rec = Record::new();
    for w in words {
        let (k, v) = w.split_once('=').unwrap_or((&w, ""));
        if !valid_key(k) {
            return Err(ProtoError::BadQuoting(
                "a record key must be letters, digits, '_', '-' or '.'",
            ));
        }
        rec.push(k, v);
    }
    Ok(rec)
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// What one response line is, as seen by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseLine {
    Record(Record),
    /// `body +<len>`: the next `len` bytes are a body.
    Body(usize),
    Ok(Record),
    Err(i32, String),
}

/// Classify one response line.
pub fn parse_response_line(line: &str) -> Result<ResponseLine, ProtoError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line == "ok" {
        return Ok(ResponseLine::Ok(Record::new()));
    }
    if let Some(rest) = line.strip_prefix("ok ") {
        return Ok(ResponseLine::Ok(parse_record(rest)?));
    }
    if let Some(rest) = line.strip_prefix("err ") {
        let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        let code = code
            .parse::<i32>()
            .map_err(|_| ProtoError::BadQuoting("err line without a numeric code"))?;
        return Ok(ResponseLine::Err(code, msg.to_string()));
    }
    if let Some(len) = line.strip_prefix("body +") {
        let n = len
            .parse::<usize>()
            .map_err(|_| ProtoError::BadLength(len.to_string()))?;
        return Ok(ResponseLine::Body(n));
    }
    Ok(ResponseLine::Record(parse_record(line)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip() {
        let r = Record::new()
            .field("name", "chronyd")
            .field("state", "running")
            .field("since", "2026-11-22 08:01")
            .field("status", "")
            .field("eq", "a=b")
            .field("q", "say \"hi\"");
        let line = r.to_line();
        assert_eq!(
            line,
            r#"name=chronyd state=running since="2026-11-22 08:01" status="" eq="a=b" q="say \"hi\"""#
        );
        assert_eq!(parse_record(&line).unwrap(), r);
        // Found by fuzzing: a key logfmt cannot write back.
        assert!(parse_record("name\"\\\"\" ").is_err());
    }

    #[test]
    fn final_lines() {
        assert_eq!(ok_line(&Record::new()), "ok");
        assert_eq!(ok_line(&Record::new().field("seq", 4812)), "ok seq=4812");
        assert_eq!(err_line(ExitCode::Invalid, "bad\nthing"), "err 3 bad thing");
        assert_eq!(
            parse_response_line("err 3 unknown service \"x\"").unwrap(),
            ResponseLine::Err(3, "unknown service \"x\"".into())
        );
        assert_eq!(
            parse_response_line("body +12").unwrap(),
            ResponseLine::Body(12)
        );
        assert_eq!(
            parse_response_line("ok seq=1").unwrap(),
            ResponseLine::Ok(Record::new().field("seq", 1))
        );
    }
}
