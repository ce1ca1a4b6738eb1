//! Readiness notification as daemons written for systemd speak it: a
//! datagram of `KEY=VALUE` lines sent to `$NOTIFY_SOCKET` (`READY=1`,
//! `STATUS=...`, `STOPPING=1`). Each service gets its own socket, so the
//! sender needs no credential lookup.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Largest datagram read; the rest of a longer one is discarded.
pub const MAX_DATAGRAM: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Stopping,
    Reloading,
    Status(String),
    Errno(i32),
}

/// Parse one datagram. Unknown keys and malformed lines are ignored;
/// never panics.
pub fn parse_notify(datagram: &[u8]) -> Vec<Notice> {
    let data = &datagram[..datagram.len().min(MAX_DATAGRAM)];
    let mut out = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match (key, value) {
            ("READY", "1") => out.push(Notice::Ready),
            ("STOPPING", "1") => out.push(Notice::Stopping),
            ("RELOADING", "1") => out.push(Notice::Reloading),
            ("STATUS", v) => out.push(Notice::Status(
                v.chars().filter(|c| !c.is_control()).take(256).collect(),
            )),
            ("ERRNO", v) => {
                if let Ok(n) = v.trim().parse() {
                    out.push(Notice::Errno(n));
                }
            }
            _ => {}
        }
    }
    out
}

/// A service's notify socket.
pub struct NotifySocket {
    pub sock: mio::net::UnixDatagram,
    pub path: PathBuf,
}

impl NotifySocket {
    /// Bind `<dir>/<service>.sock`, owned by the service's uid when it
    /// runs as another user.
    pub fn bind(dir: &Path, service: &str, owner: Option<(u32, u32)>) -> io::Result<NotifySocket> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{service}.sock"));
        let _ = std::fs::remove_file(&path);
        let sock = mio::net::UnixDatagram::bind(&path)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(NotifySocket { sock, path })
    }

    /// Every notice queued on the socket.
    pub fn drain(&self) -> Vec<Notice> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            match self.sock.recv(&mut buf) {
                Ok(n) => out.extend(parse_notify(&buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return out,
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_systemd_style_datagrams() {
        assert_eq!(
            parse_notify(b"READY=1\nSTATUS=Processing requests\nMAINPID=42\n"),
            [Notice::Ready, Notice::Status("Processing requests".into())]
        );
        assert_eq!(parse_notify(b"STOPPING=1"), [Notice::Stopping]);
        assert_eq!(parse_notify(b"ERRNO=5\nREADY=0\n"), [Notice::Errno(5)]);
        assert_eq!(parse_notify(b"\xff\xfe=1\nREADY"), []);
        assert_eq!(
            parse_notify(b"STATUS=a\x07b"),
            [Notice::Status("ab".into())]
        );
    }
}
