//! A TCP listener with an explicit accept backlog (mio's `bind` fixes it
//! at 1024; a boot storm of thousands of agents needs more, up to the
//! kernel's `net.core.somaxconn`).

use std::net::SocketAddr;

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

#[cfg(test)]
mod tests {
    #[test]
    fn listens_and_accepts() {
        let l = super::tcp_listener("127.0.0.1:0".parse().unwrap(), 8192).unwrap();
        let addr = l.local_addr().unwrap();
        let _c = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(l.accept().is_ok());
    }
}
