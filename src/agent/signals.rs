//! Signals as a file descriptor (`signalfd`): the loop wakes on SIGCHLD,
//! SIGTERM, SIGINT, SIGPWR, SIGHUP, SIGUSR1 and SIGUSR2 like on any other fd.
//!
//! The signals are blocked in the agent, so they queue for the signalfd
//! (for PID 1 too: blocked signals are never discarded as "unhandled").
//! Children start with an empty mask (std's spawn resets it).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The signals the agent handles.
pub const HANDLED: [i32; 7] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGPWR,
    libc::SIGHUP,
    // Read and ignored (logged): their default action would end the agent
    // when it is not PID 1.
    libc::SIGUSR1,
    libc::SIGUSR2,
];

pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Block [`HANDLED`] in this thread and open a non-blocking signalfd.
    /// Call before any other thread is started so they inherit the mask.
    pub fn open() -> io::Result<SignalFd> {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it
        // fully before use, and pthread_sigmask/signalfd only read it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in HANDLED {
                libc::sigaddset(&mut set, s);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalFd {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// Drain pending signals (each signal number once per read batch).
    pub fn read(&self) -> io::Result<Vec<i32>> {
        let mut out = Vec::new();
        loop {
            let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
            let fd = self.fd.as_raw_fd();
            // SAFETY: reads at most one siginfo record, into a buffer of that size.
            let n = unsafe { libc::read(fd, info.as_mut_ptr().cast(), info.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Ok(out);
                }
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if (n as usize) < info.len() {
                return Ok(out);
            }
            let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32;
            if !out.contains(&signo) {
                out.push(signo);
            }
        }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Human name of a signal number.
pub fn name(signo: i32) -> &'static str {
    match signo {
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGPWR => "SIGPWR",
        libc::SIGHUP => "SIGHUP",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGKILL => "SIGKILL",
        _ => "signal",
    }
}
