//! Rendering responses: JSON for scripts (`--json`), tables and key/value
//! lines for people.

use crate::logger::json_string;
use crate::proto::Record;

/// Fields whose values are names or free text: always JSON strings, even
/// when they look like a number or a boolean (a node called `42`, a
/// message `true`, a sysctl value `11`). The type follows the field, not
/// the value.
const TEXT_FIELDS: &[&str] = &[
    "action",
    "author",
    "change",
    "checksum",
    "cluster",
    "commits",
    "committed",
    "data",
    "detail",
    "dimension",
    "key",
    "kind",
    "local",
    "message",
    "name",
    "node",
    "nodes",
    "peer",
    "previous",
    "promoted",
    "principal",
    "reason",
    "role",
    "scope",
    "state",
    "summary",
    "type",
    "value",
    "vcluster",
];

/// Text fields where `-` is a value someone wrote, not "absent".
const LITERAL_DASH_FIELDS: &[&str] = &["data", "message", "value"];

/// A logfmt value of field `key` as a JSON value: `-` is null (absent),
/// text fields are strings, other fields are typed numbers and booleans
/// when their value is one.
pub fn json_value(key: &str, v: &str) -> String {
    if v == "-" && !LITERAL_DASH_FIELDS.contains(&key) {
        return "null".to_string();
    }
    if TEXT_FIELDS.contains(&key) {
        return json_string(v);
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
        .map(|(k, v)| format!("{}:{}", json_string(k), json_value(k, v)))
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
        // Names and free text stay text whatever they look like.
        let r = Record::new()
            .field("node", "42")
            .field("message", "-")
            .field("value", "true")
            .field("commits", "13")
            .field("vcluster", "-");
        assert_eq!(
            json_object(&r),
            r#"{"node":"42","message":"-","value":"true","commits":"13","vcluster":null}"#
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
