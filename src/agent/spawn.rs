//! Starting one service process.
//!
//! The child is born inside its scope: `clone3(CLONE_INTO_CGROUP)` creates
//! it directly in the scope's cgroup, so everything it ever forks is there
//! too, and no migration (which waits for an RCU grace period, ~10 ms) is
//! needed. On kernels without clone3 the child moves itself by writing `0`
//! to the scope's `cgroup.procs` before exec.
//!
//! Between clone and exec the child only makes async-signal-safe system
//! calls on data prepared beforehand: it resets its signal mask, takes
//! `/dev/null` and the output pipe as stdio, becomes a session leader,
//! passes the ready fd, drops to its user and execs. An exec failure is
//! reported to the parent through a close-on-exec pipe, which the agent
//! reads when it reaps the child: it does not wait for the exec (under
//! emulation, or on a loaded node, that wait serialised a boot's spawns).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::config::services::{ReadyMode, ServiceSpec};

/// `PATH` of every service unless it declares its own.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Most arguments (and, separately, environment variables) a service may
/// have: the child builds its pointer arrays on the stack.
pub const MAX_VECTOR: usize = 255;

/// A started process and the agent's ends of its pipes.
pub struct Spawned {
    pub pid: u32,
    /// Read end of the child's stdout+stderr.
    pub output: OwnedFd,
    /// Read end of the ready pipe (`ready = "fd"`).
    pub ready: Option<OwnedFd>,
    /// Read end of the close-on-exec error pipe: EOF once the exec
    /// succeeded, the errno when it failed (see [`exec_error`]).
    pub exec_status: OwnedFd,
}

/// Where the child goes and how it reports readiness.
pub struct Placement<'a> {
    /// The scope directory; `None` without cgroups.
    pub scope: Option<&'a Path>,
    /// `NOTIFY_SOCKET` for `ready = "notify"`.
    pub notify_socket: Option<&'a Path>,
}

/// Everything the child needs, prepared before cloning.
struct ChildPlan {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    /// `cgroup.procs` to write when clone3 is not available.
    procs_fd: Option<RawFd>,
    ready: Option<(RawFd, RawFd)>,
    user: Option<(u32, u32)>,
    /// `oom_score_adj` text for the child (the agent's own -1000 must not
    /// be inherited, or the OOM killer could never act in a scope); `None`
    /// when the child inherits the right value already (an agent without
    /// CAP_SYS_RESOURCE could not lower it again, nor need to).
    oom_score_adj: Option<CString>,
    error_pipe: RawFd,
}

pub fn spawn_service(spec: &ServiceSpec, place: &Placement<'_>) -> io::Result<Spawned> {
    let (out_r, out_w) = pipe()?;
    let ready = match spec.ready {
        ReadyMode::Fd(target) => {
            let (r, w) = pipe()?;
            Some((r, w, target))
        }
        _ => None,
    };
    let (err_r, err_w) = pipe()?;
    let devnull = std::fs::File::open("/dev/null")?;
    let scope_dir = match place.scope {
        Some(p) => Some(open_dir(p)?),
        None => None,
    };

    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("PACT_SERVICE".into(), spec.name.clone()),
    ];
    if let Some(sock) = place.notify_socket {
        env.push(("NOTIFY_SOCKET".into(), sock.display().to_string()));
    }
    if let Some((_, _, target)) = &ready {
        env.push(("PACT_READY_FD".into(), target.to_string()));
    }
    for (k, v) in &spec.env {
        env.retain(|(x, _)| x != k);
        env.push((k.clone(), v.clone()));
    }
    let mut plan = ChildPlan {
        path: cstring(spec.binary.as_os_str())?,
        argv: std::iter::once(cstring(spec.binary.as_os_str()))
            .chain(spec.args.iter().map(|a| cstring(OsStr::new(a))))
            .collect::<io::Result<_>>()?,
        envp: env
            .iter()
            .map(|(k, v)| cstring(OsStr::new(&format!("{k}={v}"))))
            .collect::<io::Result<_>>()?,
        cwd: cstring(
            spec.working_directory
                .as_deref()
                .unwrap_or(Path::new("/"))
                .as_os_str(),
        )?,
        stdin: devnull.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: out_w.as_raw_fd(),
        procs_fd: None,
        ready: ready.as_ref().map(|(_, w, t)| (w.as_raw_fd(), *t)),
        user: spec.user,
        oom_score_adj: (own_oom_score_adj() != Some(spec.oom_score_adj))
            .then(|| CString::new(spec.oom_score_adj.to_string()).expect("digits")),
        error_pipe: err_w.as_raw_fd(),
    };

    if plan.argv.len() > MAX_VECTOR || plan.envp.len() > MAX_VECTOR {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("more than {MAX_VECTOR} arguments or environment variables"),
        ));
    }
    let mut procs_file = None;
    let pid = match clone_into(scope_dir.as_ref()) {
        Ok(0) => child(&plan),
        Ok(pid) => pid,
        Err(e) if clone3_unsupported(&e) => {
            // An older kernel: fork, and let the child join its scope.
            if let Some(scope) = place.scope {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(scope.join("cgroup.procs"))?;
                plan.procs_fd = Some(f.as_raw_fd());
                procs_file = Some(f);
            }
            // SAFETY: the agent is single-threaded; the child only runs
            // `child`, which makes async-signal-safe calls and never returns.
            match unsafe { libc::fork() } {
                -1 => return Err(io::Error::last_os_error()),
                0 => child(&plan),
                pid => pid,
            }
        }
        Err(e) => return Err(e),
    };
    drop(procs_file);
    drop(out_w);
    drop(err_w);
    let ready = ready.map(|(r, w, _)| {
        drop(w);
        r
    });
    set_nonblocking(&err_r)?;
    set_nonblocking(&out_r)?;
    if let Some(r) = &ready {
        set_nonblocking(r)?;
    }
    Ok(Spawned {
        pid: pid as u32,
        output: out_r,
        ready,
        exec_status: err_r,
    })
}

/// The agent's own `oom_score_adj`, which a child starts with. The agent
/// sets it once at start-up, before its first spawn, so it is read once
/// (not on every restart).
fn own_oom_score_adj() -> Option<i32> {
    static OWN: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| {
        std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()?
            .trim()
            .parse()
            .ok()
    })
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in an argument"))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        p,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    Ok(fd)
}

fn clone3_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::E2BIG))
}

/// The kernel's `struct clone_args` (up to the `cgroup` field, Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Fork-like clone3, into the cgroup `scope` when given. Returns 0 in the
/// child and the child's pid in the parent.
///
/// Not `CLONE_VM | CLONE_VFORK` (posix_spawn's way, which spares the
/// copy of the page tables): the agent's loop would then wait for the
/// child's chdir and exec, and a working directory or binary on a hung
/// network filesystem would stop the loop, and with it the watchdog.
fn clone_into(scope: Option<&OwnedFd>) -> io::Result<i32> {
    let mut args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = scope {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // clone3 without CLONE_VM behaves like fork: the child gets a copy of
    // the address space and continues here with a return of 0.
    // SAFETY: the child only runs `child` (system calls, then exec).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as i32)
}

/// In the child: set up and exec. Never returns.
fn child(p: &ChildPlan) -> ! {
    // SAFETY: only async-signal-safe system calls on data prepared before
    // the clone; the process ends in execve or _exit.
    unsafe {
        // The errno and the step that failed, in one write (atomic on a
        // pipe): see `read_exec_status`.
        let fail = |fd: RawFd, step: u8| -> ! {
            let errno = *libc::__errno_location();
            let mut msg = [0u8; EXEC_STATUS_LEN];
            msg[..4].copy_from_slice(&errno.to_ne_bytes());
            msg[4] = step;
            libc::write(fd, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        };
        // The agent blocks the signals it reads through its signalfd and
        // the Rust runtime ignores SIGPIPE: a service starts with neither.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            fail(p.error_pipe, STEP_SIGNALS);
        }
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if let Some(fd) = p.procs_fd {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(p.error_pipe, STEP_CGROUP);
            }
        }
        let adj = match &p.oom_score_adj {
            Some(_) => libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            ),
            None => -1,
        };
        if let (true, Some(text)) = (adj >= 0, &p.oom_score_adj) {
            let text = text.as_bytes();
            let n = libc::write(adj, text.as_ptr().cast(), text.len());
            libc::close(adj);
            if n < 0 {
                fail(p.error_pipe, STEP_OOM);
            }
        }
        if libc::dup2(p.stdin, 0) < 0 || libc::dup2(p.stdout, 1) < 0 || libc::dup2(p.stderr, 2) < 0
        {
            fail(p.error_pipe, STEP_STDIO);
        }
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            fail(p.error_pipe, STEP_CWD);
        }
        if libc::setsid() < 0 {
            fail(p.error_pipe, STEP_SESSION);
        }
        if let Some((src, target)) = p.ready {
            let rc = if src == target {
                libc::fcntl(target, libc::F_SETFD, 0)
            } else {
                libc::dup2(src, target)
            };
            if rc < 0 {
                fail(p.error_pipe, STEP_READY_FD);
            }
        }
        if let Some((uid, gid)) = p.user {
            // The system calls themselves, not glibc's wrappers: clone3
            // is not glibc's fork, so the child's copy of glibc still
            // lists the agent's other threads, and the wrappers would
            // take glibc's locks (perhaps held by one of those threads at
            // the clone, for ever) and signal those threads to change
            // their ids too.
            if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setgid, gid as libc::c_long) != 0
                || libc::syscall(libc::SYS_setuid, uid as libc::c_long) != 0
            {
                fail(p.error_pipe, STEP_USER);
            }
        }
        // Null-terminated pointer arrays, on the stack (no allocation here).
        let mut argv: [*const libc::c_char; MAX_VECTOR + 1] = [std::ptr::null(); MAX_VECTOR + 1];
        let mut envp: [*const libc::c_char; MAX_VECTOR + 1] = [std::ptr::null(); MAX_VECTOR + 1];
        for (i, a) in p.argv.iter().take(MAX_VECTOR).enumerate() {
            argv[i] = a.as_ptr();
        }
        for (i, e) in p.envp.iter().take(MAX_VECTOR).enumerate() {
            envp[i] = e.as_ptr();
        }
        libc::execve(p.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(p.error_pipe, STEP_EXEC)
    }
}

/// Bytes a failing child writes to its exec pipe: errno, then the step.
const EXEC_STATUS_LEN: usize = 5;
const STEP_SIGNALS: u8 = 1;
const STEP_CGROUP: u8 = 2;
const STEP_OOM: u8 = 3;
const STEP_STDIO: u8 = 4;
const STEP_CWD: u8 = 5;
const STEP_SESSION: u8 = 6;
const STEP_READY_FD: u8 = 7;
const STEP_USER: u8 = 8;
const STEP_EXEC: u8 = 9;

/// What a child's exec pipe says.
#[derive(Debug)]
pub enum ExecStatus {
    /// Nothing yet: the child is still on its way to exec.
    Pending,
    /// EOF: the exec succeeded (the pipe closed on exec).
    Ran,
    /// The child could not be started; the error names the step.
    Failed(io::Error),
}

/// Reads a child's exec pipe (non-blocking).
pub fn read_exec_status(pipe: &OwnedFd) -> ExecStatus {
    let mut buf = [0u8; EXEC_STATUS_LEN];
    match rustix::io::retry_on_intr(|| rustix::io::read(pipe, &mut buf)) {
        Ok(0) => ExecStatus::Ran,
        // One write of EXEC_STATUS_LEN bytes: it arrives whole.
        Ok(EXEC_STATUS_LEN) => ExecStatus::Failed(describe_failure(&buf)),
        Ok(_) => ExecStatus::Failed(io::Error::other("a garbled exec status")),
        Err(rustix::io::Errno::AGAIN) => ExecStatus::Pending,
        Err(e) => ExecStatus::Failed(io::Error::other(format!("reading its exec status: {e}"))),
    }
}

fn describe_failure(buf: &[u8; EXEC_STATUS_LEN]) -> io::Error {
    let os = io::Error::from_raw_os_error(i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]));
    let step = match buf[4] {
        STEP_EXEC => "executing it",
        STEP_SIGNALS => "resetting the signal mask",
        STEP_CGROUP => "joining its cgroup scope",
        STEP_OOM => "setting oom_score_adj",
        STEP_STDIO => "redirecting stdin/stdout/stderr",
        STEP_CWD => "entering the working directory",
        STEP_SESSION => "starting a session",
        STEP_READY_FD => "passing the ready fd",
        STEP_USER => "switching to the service's user",
        _ => "setting up",
    };
    io::Error::new(os.kind(), format!("{step}: {os}"))
}

/// Why the exec of a child that has ended failed, if it did (its pipe has
/// the error or EOF by now).
pub fn exec_error(pipe: &OwnedFd) -> Option<io::Error> {
    match read_exec_status(pipe) {
        ExecStatus::Failed(e) => Some(e),
        ExecStatus::Ran | ExecStatus::Pending => None,
    }
}

pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}
