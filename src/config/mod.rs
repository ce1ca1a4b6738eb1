//! TOML configuration: the agent's `agent.toml` and the vCluster overlay
//! with its service declarations. Errors name the file, line and key.

pub mod agent;
pub mod overlay;
pub mod services;
pub mod size;
pub mod users;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A configuration error pinned to a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key the error is about, when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The text of a configuration file, kept to turn byte spans into lines.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Source, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Ok(Source {
            path: path.to_path_buf(),
            text,
        })
    }

    pub fn from_str(path: &str, text: &str) -> Source {
        Source {
            path: PathBuf::from(path),
            text: text.to_string(),
        }
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// An error at `span` about `key`.
    pub fn error(
        &self,
        span: Option<Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            line: span.map(|s| self.line_of(s.start)),
            key: (!key.is_empty()).then(|| key.to_string()),
            message: message.into(),
        }
    }

    /// Where key `name` is set in the table that starts at `span` (its
    /// line, up to the next table header), for an error about one field
    /// of a table read as a whole.
    pub fn key_in(&self, span: Range<usize>, name: &str) -> Option<Range<usize>> {
        let start = span.start.min(self.text.len());
        let mut at = start;
        for (i, line) in self.text[start..].split_inclusive('\n').enumerate() {
            let t = line.trim_start();
            if i > 0 && t.starts_with('[') {
                return None;
            }
            let rest = t
                .strip_prefix(name)
                .or_else(|| t.strip_prefix(&format!("\"{name}\"")));
            if rest.is_some_and(|r| r.trim_start().starts_with('=')) {
                return Some(at..at + line.len());
            }
            at += line.len();
        }
        None
    }

    /// Deserialize the whole file, turning a `toml` error into a located one.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| self.toml_error(&e))
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        // toml's message already quotes the offending key ("unknown field `x`").
        let message = e.message().trim().to_string();
        let key = e.span().and_then(|s| self.key_at(s));
        ConfigError {
            path: self.path.clone(),
            line: e.span().map(|s| self.line_of(s.start)),
            key,
            message,
        }
    }

    /// The dotted key an error span points into: the table header above it
    /// plus the key on its line, as far as can be told from the text.
    fn key_at(&self, span: Range<usize>) -> Option<String> {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line = self.text[line_start..line_end].trim();
        // The table the span is in: its own header line (an error about a
        // whole table, such as a missing field, points there), else the
        // nearest header above.
        let table = std::iter::once(line)
            .filter(|l| l.starts_with('['))
            .chain(before[..line_start].lines().rev().map(str::trim))
            .find(|l| l.starts_with('[') && !l.starts_with("[["))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
        let own = line
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_string())
            .filter(|k| !k.is_empty() && !line.starts_with('['));
        match (table, own) {
            (Some(t), Some(k)) => Some(format!("{t}.{k}")),
            (None, Some(k)) => Some(k),
            (Some(t), None) => Some(t),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: Option<Inner>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        x: Option<u32>,
    }

    #[test]
    fn toml_errors_carry_line_and_key() {
        let src = Source::from_str("f.toml", "# c\n[a]\nx = 1\nbogus = 2\n");
        let e = src.parse::<T>().unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("a.bogus"));
        assert!(e.message.contains("unknown field `bogus`"), "{e}");
        assert!(e
            .to_string()
            .starts_with("f.toml:4: a.bogus: unknown field"));
    }

    #[test]
    fn broken_toml_is_located() {
        let src = Source::from_str("f.toml", "[a]\nx = \n");
        let e = src.parse::<T>().unwrap_err();
        assert_eq!(e.line, Some(2));
    }
}
