//! Listeners: TCP with an explicit accept backlog (mio's `bind` fixes it
//! at 1024; a boot storm of thousands of agents needs more, up to the
//! kernel's `net.core.somaxconn`), and Unix sockets that appear at their
//! path only once they listen, with their final mode.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// Bind `addr` (SO_REUSEADDR, non-blocking, close-on-exec) and listen with
/// `backlog` pending connections.
pub fn tcp_listener(addr: SocketAddr, backlog: u32) -> std::io::Result<mio::net::TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, backlog.min(i32::MAX as u32) as i32)?;
    Ok(mio::net::TcpListener::from_std(
        std::net::TcpListener::from(fd),
    ))
}

/// Keeps a connection's WRITABLE interest in step with whether it has
/// output waiting (`want_write`); `registered` remembers what the poll has.
/// A failed reregister leaves `registered` as it was, to retry next time.
pub fn sync_write_interest<S: mio::event::Source + ?Sized>(
    registry: &mio::Registry,
    source: &mut S,
    token: mio::Token,
    want_write: bool,
    registered: &mut bool,
) {
    if want_write == *registered {
        return;
    }
    let interest = if want_write {
        mio::Interest::READABLE | mio::Interest::WRITABLE
    } else {
        mio::Interest::READABLE
    };
    if registry.reregister(source, token, interest).is_ok() {
        *registered = want_write;
    }
}

/// Bind a Unix socket at `path` (replacing a stale one) with `mode`.
///
/// The socket is bound and made to listen under a temporary name in the
/// same directory, given its mode, and only then renamed into place: a
/// client that sees the path can connect at once (no `ECONNREFUSED`
/// between bind and listen), and nobody can connect through the umask's
/// mode before the chmod.
pub fn unix_listener(path: &Path, mode: u32) -> std::io::Result<mio::net::UnixListener> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.sock-new", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = mio::net::UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    #[test]
    fn unix_socket_appears_listening_with_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pact-net-{}", std::process::id()));
        let path = dir.join("sub/x.sock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "stale").unwrap();
        let l = super::unix_listener(&path, 0o600).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let _c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(l.accept().is_ok());
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn listens_and_accepts() {
        let l = super::tcp_listener("127.0.0.1:0".parse().unwrap(), 8192).unwrap();
        let addr = l.local_addr().unwrap();
        let _c = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(l.accept().is_ok());
    }
}
