//! The pact line protocol, spoken on every control socket (see
//! `man/pact-protocol.7`): requests are lines of words, responses are logfmt
//! records followed by one final `ok ...` or `err <code> <message>` line.

pub mod boot;
pub mod client;
pub mod reader;
pub mod request;
pub mod response;

pub use reader::LineReader;
pub use request::{format_request, parse_line, Request};
pub use response::{err_line, ok_line, parse_response_line, Record, ResponseLine};

use std::fmt;

/// Limits of one server's protocol parser. Every one is explicit and
/// exceeding it is a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line in bytes, newline excluded.
    pub max_line: usize,
    /// Most words in one request line.
    pub max_words: usize,
    /// Largest body a request may announce.
    pub max_body: usize,
}

impl Default for Limits {
    /// The agent's defaults: 8 KiB lines, 64 words, 1 MiB bodies.
    fn default() -> Limits {
        Limits {
            max_line: 8 * 1024,
            max_words: 64,
            max_body: 1024 * 1024,
        }
    }
}

/// The CLI exit codes of the CLI seed's table; an `err` line carries one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    General = 1,
    Auth = 2,
    /// Policy rejection or invalid argument.
    Invalid = 3,
    Conflict = 4,
    /// Journal/agent unreachable, or a timeout.
    Unreachable = 5,
    NotWhitelisted = 6,
    RollbackBlocked = 10,
}

/// Why a request could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    Empty,
    LineTooLong {
        max: usize,
    },
    TooManyWords {
        max: usize,
    },
    NotUtf8,
    BadQuoting(&'static str),
    BadLength(String),
    BodyTooLarge {
        len: usize,
        max: usize,
    },
    /// The stream ended inside a request (see `LineReader::cut_off`).
    CutOff,
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Empty => write!(f, "empty request"),
            ProtoError::LineTooLong { max } => {
                write!(f, "request line longer than {max} bytes")
            }
            ProtoError::TooManyWords { max } => write!(f, "more than {max} words in one request"),
            ProtoError::NotUtf8 => write!(f, "request is not valid UTF-8"),
            ProtoError::BadQuoting(why) => write!(f, "bad quoting: {why}"),
            ProtoError::BadLength(s) => write!(f, "bad body length \"+{s}\""),
            ProtoError::BodyTooLarge { len, max } => {
                write!(f, "body of {len} bytes exceeds the limit of {max} bytes")
            }
            ProtoError::CutOff => write!(
                f,
                "the connection ended inside a request (an unfinished line or body); it was not run"
            ),
        }
    }
}

impl std::error::Error for ProtoError {}
