//! Rendering responses: JSON for scripts (`--json`), tables and key/value
//! lines for people.

use crate::logger::json_string;
use crate::proto::Record;

/// A logfmt value as a JSON value: numbers and booleans typed, `-` null.
pub fn json_value(v: &str) -> String {
    if v == "-" {
        return "null".to_string();
    }
    if v == "true" || v == "false" {
        return v.to_string();
    }
    // Leading zeros ("0755") stay strings: they are identifiers, not numbers.
    let leading_zero = v.len() > 1 && v.starts_with('0') && !v.starts_with("0.");
    let numeric = v.parse::<f64>().is_ok_and(f64::is_finite)
        && !leading_zero
        && v.bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
    if numeric {
        v.to_string()
    } else {
        json_string(v)
    }
}

pub fn json_object(r: &Record) -> String {
    let fields: Vec<String> = r
        .fields
        .iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_value(v)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

pub fn json_array(records: &[Record]) -> String {
    let items: Vec<String> = records.iter().map(json_object).collect();
    format!("[{}]", items.join(","))
}

/// `key: value` lines, keys aligned.
pub fn key_values(r: &Record) -> String {
    let width = r.fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    r.fields
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// A table of the given columns (missing values shown as `-`).
pub fn table(records: &[Record], columns: &[(&str, &str)]) -> String {
    let cell = |r: &Record, key: &str| {
        r.get(key)
            .filter(|v| !v.is_empty())
            .unwrap_or("-")
            .to_string()
    };
    let mut widths: Vec<usize> = columns.iter().map(|(_, title)| title.len()).collect();
    for r in records {
        for (i, (key, _)) in columns.iter().enumerate() {
            widths[i] = widths[i].max(cell(r, key).chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(&c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(
        columns.iter().map(|(_, t)| t.to_string()).collect(),
        &mut out,
    );
    for r in records {
        line(columns.iter().map(|(k, _)| cell(r, k)).collect(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_typing() {
        let r = Record::new()
            .field("name", "a b")
            .field("pid", 412)
            .field("ok", true)
            .field("none", "-")
            .field("f", "1.5")
            .field("zip", "0755")
            .field("neg", "-3");
        assert_eq!(
            json_object(&r),
            r#"{"name":"a b","pid":412,"ok":true,"none":null,"f":1.5,"zip":"0755","neg":-3}"#
        );
    }

    #[test]
    fn table_layout() {
        let rs = vec![
            Record::new()
                .field("name", "chronyd")
                .field("state", "running"),
            Record::new().field("name", "x").field("state", ""),
        ];
        assert_eq!(
            table(&rs, &[("name", "NAME"), ("state", "STATE")]),
            "NAME     STATE\nchronyd  running\nx        -\n"
        );
    }
}
