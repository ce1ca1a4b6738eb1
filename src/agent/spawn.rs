//! Starting one service process.
//!
//! The child moves itself into its scope before `exec` (it writes `0` to
//! the scope's `cgroup.procs`, opened by the agent), so everything it ever
//! forks is inside the scope. It becomes a session leader, gets stdout and
//! stderr on one pipe the agent reads, an optional ready fd, a clean
//! environment, and drops to its user last.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::services::{ReadyMode, ServiceSpec};

/// `PATH` of every service unless it declares its own.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A started process and the agent's ends of its pipes.
pub struct Spawned {
    pub pid: u32,
    /// Read end of the child's stdout+stderr.
    pub output: OwnedFd,
    /// Read end of the ready pipe (`ready = "fd"`).
    pub ready: Option<OwnedFd>,
}

/// Where the child goes and how it reports readiness.
pub struct Placement<'a> {
    /// `cgroup.procs` of the scope, open for writing; `None` without cgroups.
    pub cgroup_procs: Option<&'a File>,
    /// `NOTIFY_SOCKET` for `ready = "notify"`.
    pub notify_socket: Option<&'a Path>,
}

pub fn spawn_service(spec: &ServiceSpec, place: &Placement<'_>) -> io::Result<Spawned> {
    let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let err_w = out_w.try_clone()?;
    let ready = match spec.ready {
        ReadyMode::Fd(target) => {
            let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
            Some((r, w, target))
        }
        _ => None,
    };

    let mut cmd = Command::new(&spec.binary);
    cmd.args(&spec.args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("PACT_SERVICE", &spec.name)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .current_dir(spec.working_directory.as_deref().unwrap_or(Path::new("/")));
    if let Some(sock) = place.notify_socket {
        cmd.env("NOTIFY_SOCKET", sock);
    }
    if let Some((_, _, target)) = &ready {
        cmd.env("PACT_READY_FD", target.to_string());
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }

    let procs_fd: Option<RawFd> = place.cgroup_procs.map(AsRawFd::as_raw_fd);
    let ready_fds: Option<(RawFd, RawFd)> = ready.as_ref().map(|(_, w, t)| (w.as_raw_fd(), *t));
    let user = spec.user;
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls on plain integers (no
    // allocation, no locks).
    unsafe {
        cmd.pre_exec(move || child_setup(procs_fd, ready_fds, user));
    }
    let child = cmd.spawn()?;
    // Dropping `cmd` closes our copies of the write ends.
    drop(cmd);
    let ready = ready.map(|(r, w, _)| {
        drop(w);
        r
    });
    set_nonblocking(&out_r)?;
    if let Some(r) = &ready {
        set_nonblocking(r)?;
    }
    Ok(Spawned {
        pid: child.id(),
        output: out_r,
        ready,
    })
}

/// In the child, between fork and exec.
fn child_setup(
    procs_fd: Option<RawFd>,
    ready: Option<(RawFd, RawFd)>,
    user: Option<(u32, u32)>,
) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: plain system calls on integers in the child; see spawn_service.
    unsafe {
        // The agent blocks the signals it reads through its signalfd and
        // the Rust runtime ignores SIGPIPE: a service starts with neither.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            &empty,
            std::ptr::null_mut(),
        ))?;
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        check(libc::setsid())?;
        if let Some(fd) = procs_fd {
            // "0" moves the writing process itself into the cgroup.
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some((src, target)) = ready {
            if src == target {
                check(libc::fcntl(target, libc::F_SETFD, 0))?;
            } else {
                check(libc::dup2(src, target))?;
            }
        }
        if let Some((uid, gid)) = user {
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))?;
        }
    }
    Ok(())
}

pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}
