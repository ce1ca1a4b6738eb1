//! Requests of the line protocol: one line of words, optionally a body.
//!
//! Grammar (see `man/pact-protocol.7`):
//! - one request per line, UTF-8, ended by `\n` (a `\r` before it is dropped);
//! - words are separated by spaces or tabs; a word may contain double-quoted
//!   segments (`grep="ECC error"`), inside which `\"`, `\\`, `\n` and `\t` are
//!   the only escapes; `""` is an empty word;
//! - a last word `+<len>` announces a body of exactly `len` bytes after the line.

use super::{Limits, ProtoError};

/// A parsed request line. `words[0]` is the verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub words: Vec<String>,
    /// Length of the body announced by a trailing `+<len>` word.
    pub body_len: Option<usize>,
    /// The body, once read (filled in by [`super::LineReader`]).
    pub body: Vec<u8>,
}

impl Request {
    /// The words that are not `key=value` options, verb included.
    pub fn positional(&self) -> Vec<&str> {
        self.words
            .iter()
            .filter(|w| split_option(w).is_none())
            .map(String::as_str)
            .collect()
    }

    /// The value of option `key=value`, if given (the last one wins).
    pub fn option(&self, key: &str) -> Option<&str> {
        self.words
            .iter()
            .rev()
            .filter_map(|w| split_option(w))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// All `key=value` options in order.
    pub fn options(&self) -> Vec<(&str, &str)> {
        self.words.iter().filter_map(|w| split_option(w)).collect()
    }
}

/// `key=value` where key is a plain identifier; anything else is positional.
fn split_option(word: &str) -> Option<(&str, &str)> {
    let (k, v) = word.split_once('=')?;
    let ident = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ident.then_some((k, v))
}

/// Parse one request line (without its terminating `\n`).
pub fn parse_line(line: &[u8], limits: &Limits) -> Result<Request, ProtoError> {
    if line.len() > limits.max_line {
        return Err(ProtoError::LineTooLong {
            max: limits.max_line,
        });
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| ProtoError::NotUtf8)?;
    let words = split_words(text, limits.max_words)?;
    if words.is_empty() {
        return Err(ProtoError::Empty);
    }
    let mut words = words;
    let mut body_len = None;
    // The body marker must be a bare last word: `"+5"` in quotes is data.
    let raw_last = text
        .trim_end_matches([' ', '\t'])
        .rsplit([' ', '\t'])
        .next();
    let bare_marker = raw_last.is_some_and(|w| w.starts_with('+') && !w.contains('"'));
    if words.len() > 1 && bare_marker {
        if let Some(len) = words.last().and_then(|w| w.strip_prefix('+')) {
            if !len.is_empty() {
                let n = parse_len(len)?;
                if n > limits.max_body {
                    return Err(ProtoError::BodyTooLarge {
                        len: n,
                        max: limits.max_body,
                    });
                }
                body_len = Some(n);
                words.pop();
            }
        }
    }
    Ok(Request {
        words,
        body_len,
        body: Vec::new(),
    })
}

fn parse_len(s: &str) -> Result<usize, ProtoError> {
    if s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProtoError::BadLength(s.chars().take(24).collect()));
    }
    s.parse::<usize>()
        .map_err(|_| ProtoError::BadLength(s.to_string()))
}

/// Split a line into words, honouring double quotes and their escapes.
pub fn split_words(text: &str, max_words: usize) -> Result<Vec<String>, ProtoError> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(' ' | '\t')) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        if words.len() == max_words {
            return Err(ProtoError::TooManyWords { max: max_words });
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            match c {
                ' ' | '\t' => break,
                '"' => {
                    chars.next();
                    read_quoted(&mut chars, &mut word)?;
                }
                '\\' => return Err(ProtoError::BadQuoting("backslash outside quotes")),
                c if c.is_control() => return Err(ProtoError::BadQuoting("control character")),
                c => {
                    word.push(c);
                    chars.next();
                }
            }
        }
        words.push(word);
    }
}

fn read_quoted(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    word: &mut String,
) -> Result<(), ProtoError> {
    loop {
        match chars.next() {
            None => return Err(ProtoError::BadQuoting("unterminated quote")),
            Some('"') => return Ok(()),
            Some('\\') => match chars.next() {
                Some('"') => word.push('"'),
                Some('\\') => word.push('\\'),
                Some('n') => word.push('\n'),
                Some('t') => word.push('\t'),
                _ => {
                    return Err(ProtoError::BadQuoting(
                        "unknown escape (only \\\" \\\\ \\n \\t)",
                    ))
                }
            },
            Some(c) => word.push(c),
        }
    }
}

/// Quote a word for a request line if it needs it (the inverse of parsing).
pub fn quote_word(word: &str) -> String {
    let plain = !word.is_empty()
        && !word.starts_with('+')
        && word
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '\\');
    if plain {
        word.to_string()
    } else {
        quote_always(word)
    }
}

/// Double-quote a word, escaping what must be escaped.
pub fn quote_always(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Build a request line from words (quoting as needed), without the newline.
pub fn format_request(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| quote_word(w))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, ProtoError> {
        parse_line(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn words_and_options() {
        let r = parse("service logs chronyd lines=200 grep=\"ECC error\"").unwrap();
        assert_eq!(r.words[..3], ["service", "logs", "chronyd"]);
        assert_eq!(r.option("lines"), Some("200"));
        assert_eq!(r.option("grep"), Some("ECC error"));
        assert_eq!(r.positional(), ["service", "logs", "chronyd"]);
        assert_eq!(r.body_len, None);
    }

    #[test]
    fn quoting_and_escapes() {
        let r = parse(r#"echo "a b" "" "q\"x\\y\n\t" mid"dle"s"#).unwrap();
        assert_eq!(r.words, ["echo", "a b", "", "q\"x\\y\n\t", "middles"]);
    }

    #[test]
    fn crlf_tolerated_and_blank_rejected() {
        assert_eq!(parse("status\r").unwrap().words, ["status"]);
        assert_eq!(parse("   "), Err(ProtoError::Empty));
    }

    #[test]
    fn body_length() {
        let r = parse("apply +1832").unwrap();
        assert_eq!(r.words, ["apply"]);
        assert_eq!(r.body_len, Some(1832));
        // A lone "+5" is a verb, not a body announcement.
        assert_eq!(parse("+5").unwrap().words, ["+5"]);
    }

    #[test]
    fn length_lies_are_rejected() {
        assert!(matches!(parse("apply +12x"), Err(ProtoError::BadLength(_))));
        assert!(matches!(parse("apply +-1"), Err(ProtoError::BadLength(_))));
        assert!(matches!(
            parse("apply +99999999999999999999"),
            Err(ProtoError::BadLength(_))
        ));
        let limits = Limits {
            max_body: 10,
            ..Limits::default()
        };
        assert_eq!(
            parse_line(b"apply +11", &limits),
            Err(ProtoError::BodyTooLarge { len: 11, max: 10 })
        );
    }

    #[test]
    fn bad_quoting_is_rejected() {
        assert!(matches!(parse("a \"open"), Err(ProtoError::BadQuoting(_))));
        assert!(matches!(parse("a \"\\x\""), Err(ProtoError::BadQuoting(_))));
        assert!(matches!(parse("a b\\c"), Err(ProtoError::BadQuoting(_))));
        assert!(matches!(parse("a \u{7}"), Err(ProtoError::BadQuoting(_))));
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_line: 8,
            max_words: 2,
            ..Limits::default()
        };
        assert_eq!(
            parse_line(b"123456789", &limits),
            Err(ProtoError::LineTooLong { max: 8 })
        );
        assert_eq!(
            parse_line(b"a b c", &limits),
            Err(ProtoError::TooManyWords { max: 2 })
        );
        assert_eq!(
            parse_line(b"a\xff", &Limits::default()),
            Err(ProtoError::NotUtf8)
        );
    }

    #[test]
    fn quote_roundtrip() {
        for w in [
            "plain",
            "two words",
            "",
            "q\"uote",
            "back\\slash",
            "+5",
            "tab\there",
        ] {
            let line = format_request(&["verb", w]);
            let r = parse(&line).unwrap();
            assert_eq!(r.words, ["verb", w], "line {line:?}");
        }
    }
}
