//! What only the first process must do: mount the pseudo-filesystems,
//! protect itself from the OOM killer, reap every orphan, and at the end
//! kill what is left, sync and reboot or power off.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::mount::{mount, MountFlags};
use rustix::process::{Pid, WaitOptions};

pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Mount points of the current mount namespace.
fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| {
            t.lines()
                .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Mount `/proc`, `/sys`, `/dev` (devtmpfs), `/dev/pts`, `/dev/shm`, `/run`
/// (tmpfs) and cgroup2 on `/sys/fs/cgroup`, each only when not mounted
/// yet (idempotent). Returns what was mounted.
pub fn mount_pseudo_filesystems() -> Vec<String> {
    let mut done = Vec::new();
    // /proc first: the others are checked through /proc/self/mountinfo.
    if !Path::new("/proc/self").exists() {
        try_mount(
            "proc",
            "/proc",
            "proc",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            None,
            &mut done,
        );
    }
    let table: &[(&str, &str, &str, MountFlags, Option<&str>)] = &[
        (
            "sysfs",
            "/sys",
            "sysfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            None,
        ),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MountFlags::NOSUID,
            Some("mode=0755"),
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            Some("gid=5,mode=0620,ptmxmode=0666"),
        ),
        (
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some("mode=1777"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some("mode=0755"),
        ),
        (
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            Some("nsdelegate"),
        ),
    ];
    // One read of the mount table (re-reading it per mount costs
    // milliseconds each on an emulated or small machine).
    let mounted = mount_points();
    for &(src, target, fstype, flags, data) in table {
        if mounted.iter().any(|m| m == target) {
            continue;
        }
        try_mount(src, target, fstype, flags, data, &mut done);
    }
    done
}

fn try_mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MountFlags,
    data: Option<&str>,
    done: &mut Vec<String>,
) {
    let _ = std::fs::create_dir_all(target);
    let data_c = data.map(|d| std::ffi::CString::new(d).expect("no NUL in mount options"));
    match mount(src, target, fstype, flags, data_c.as_deref()) {
        Ok(()) => done.push(target.to_string()),
        Err(rustix::io::Errno::BUSY) => {}
        Err(e) => log::warn!(target: "agent::pid1", "cannot mount {fstype} on {target}: {e}"),
    }
}

/// OOMScoreAdj = -1000: the kernel never picks the agent.
pub fn protect_from_oom() -> io::Result<()> {
    std::fs::write("/proc/self/oom_score_adj", "-1000")
}

/// When not PID 1, orphans of services are re-parented to the agent.
pub fn become_subreaper() -> io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(io::Error::from)
}

/// Reap every exited child without blocking: `(pid, status)` pairs.
pub fn reap() -> Vec<(u32, rustix::process::WaitStatus)> {
    let mut out = Vec::new();
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => out.push((pid.as_raw_nonzero().get() as u32, status)),
            Ok(None) => return out,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return out, // ECHILD: nothing left
        }
    }
}

/// The end of PID 1: SIGTERM to everything left, SIGKILL after `grace`,
/// reap, sync, then reboot(2). Never returns when it succeeds.
pub fn final_shutdown(reboot: bool, grace: Duration, before_reboot: impl FnOnce()) -> io::Error {
    let everyone = |sig| {
        // SAFETY: kill(-1, sig) takes plain integers; as PID 1 it signals
        // every other process of the namespace and never the caller.
        unsafe { libc::kill(-1, sig) }
    };
    everyone(libc::SIGTERM);
    reap_until_none_left(Instant::now() + grace);
    everyone(libc::SIGKILL);
    reap_until_none_left(Instant::now() + Duration::from_secs(2));
    rustix::fs::sync();
    before_reboot();
    let cmd = if reboot {
        rustix::system::RebootCommand::Restart
    } else {
        rustix::system::RebootCommand::PowerOff
    };
    log::info!(target: "agent::pid1", "{}", if reboot { "rebooting" } else { "powering off" });
    match rustix::system::reboot(cmd) {
        Ok(()) => io::Error::other("reboot returned"),
        Err(e) => io::Error::from(e),
    }
}

/// Reap children until none is left or the deadline passes.
fn reap_until_none_left(deadline: Instant) {
    while Instant::now() < deadline {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some(_)) | Err(rustix::io::Errno::INTR) => {}
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return, // ECHILD: nobody left
        }
    }
}

/// Convert a wait status for the supervisor.
pub fn exit_of(status: rustix::process::WaitStatus) -> crate::agent::supervisor::Exit {
    use crate::agent::supervisor::Exit;
    if let Some(code) = status.exit_status() {
        Exit::Code(code)
    } else if let Some(sig) = status.terminating_signal() {
        Exit::Signal(sig)
    } else {
        Exit::Code(-1)
    }
}

/// A pid as rustix wants it.
pub fn pid(raw: u32) -> Option<Pid> {
    Pid::from_raw(raw as i32)
}
