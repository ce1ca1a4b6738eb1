//! Harness for process tests: runs the real `pact-agent`, either as PID 1
//! of a fresh PID namespace (`unshare --pid --fork --mount-proc`) or as a
//! plain process, each test with its own state directory and cgroup root.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pact::proto::client::{Client, Outcome, Response};

pub const AGENT: &str = env!("CARGO_BIN_EXE_pact-agent");
pub const CLI: &str = env!("CARGO_BIN_EXE_pact");
pub const TESTSVC: &str = env!("CARGO_BIN_EXE_pact-testsvc");

/// Why these tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (PID namespaces and cgroups)".into());
    }
    if !Path::new("/usr/bin/unshare").exists() && !Path::new("/bin/unshare").exists() {
        return Some("unshare(1) is not installed".into());
    }
    if cgroup_base().is_none() {
        return Some("no cgroup v2 hierarchy found".into());
    }
    None
}

/// Print a loud skip line and return true when a test must be skipped.
pub fn skip(test: &str) -> bool {
    match skip_reason() {
        Some(why) => {
            eprintln!("\n*** {test}: SKIPPED: {why} ***\n");
            true
        }
        None => false,
    }
}

/// Where cgroup v2 is mounted on this host (unified or hybrid mode).
pub fn cgroup_base() -> Option<PathBuf> {
    for p in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        if Path::new(p).join("cgroup.procs").exists()
            && Path::new(p).join("cgroup.subtree_control").exists()
        {
            return Some(PathBuf::from(p));
        }
    }
    None
}

pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub child: Option<Child>,
    pub pid1: bool,
    /// Leave the state directory behind (for a restart in it).
    pub keep_dir: bool,
}

/// A services file with one `[vcluster.test.services.NAME]` per entry;
/// `body` lines go in as they are.
pub fn services(entries: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (name, body) in entries {
        s.push_str(&format!(
            "[vcluster.test.services.{name}]\nbinary = \"{TESTSVC}\"\n{body}\n\n"
        ));
    }
    s
}

impl Node {
    /// Start an agent; `pid1` runs it as PID 1 of a new PID namespace.
    pub fn start(name: &str, services_toml: &str, extra_config: &str, pid1: bool) -> Node {
        Node::start_with(name, Some(services_toml), extra_config, pid1)
    }

    /// Start an agent, with or without a services file.
    pub fn start_with(
        name: &str,
        services_toml: Option<&str>,
        extra_config: &str,
        pid1: bool,
    ) -> Node {
        let dir = std::env::temp_dir().join(format!("pact-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(text) = services_toml {
            std::fs::write(dir.join("services.toml"), text).unwrap();
        }
        Node::launch(name, &dir, services_toml.is_some(), extra_config, pid1)
    }

    /// Start another agent in the state directory of an earlier one.
    pub fn restart_in(dir: &Path, name: &str, extra_config: &str) -> Node {
        let with_services = dir.join("services.toml").exists();
        Node::launch(name, dir, with_services, extra_config, false)
    }

    fn launch(name: &str, dir: &Path, with_services: bool, extra_config: &str, pid1: bool) -> Node {
        let dir = dir.to_path_buf();
        let cgroup_root = cgroup_base()
            .expect("cgroup v2")
            .join(format!("pact-test-{name}-{}", std::process::id()));
        remove_cgroup_tree(&cgroup_root);
        let services_line = if with_services {
            format!(
                "services_file = \"{}\"\n",
                dir.join("services.toml").display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "[agent]\nnode_id = \"{name}\"\nstate_dir = \"{}\"\n{services_line}\n[agent.supervisor]\ncgroup_root = \"{}\"\n{extra_config}\n",
            dir.join("run").display(),
            cgroup_root.display()
        );
        std::fs::write(dir.join("agent.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join(format!("agent-{name}.log"))).unwrap();
        let mut cmd = if pid1 {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", AGENT]);
            c
        } else {
            Command::new(AGENT)
        };
        cmd.arg("--config")
            .arg(dir.join("agent.toml"))
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        let child = cmd.spawn().expect("start the agent");
        let node = Node {
            name: name.to_string(),
            dir,
            cgroup_root,
            child: Some(child),
            pid1,
            keep_dir: false,
        };
        node.wait_for(Duration::from_secs(10), "control socket", || {
            node.socket().exists()
        });
        node
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/agent.sock")
    }

    pub fn ready_file(&self) -> PathBuf {
        self.dir.join("run/ready")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("agent-{}.log", self.name)))
            .unwrap_or_default()
    }

    /// Poll `cond` every 10 ms; panic with the agent log on timeout.
    pub fn wait_for(&self, timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "{}: timed out waiting for {what}\n--- agent log ---\n{}",
            self.name,
            self.log()
        );
    }

    pub fn call(&self, line: &str) -> Response {
        let mut c = Client::connect_unix(&self.socket(), Some(Duration::from_secs(60)))
            .unwrap_or_else(|e| panic!("{}: connect: {e}\n{}", self.name, self.log()));
        c.call(line, None)
            .unwrap_or_else(|e| panic!("{}: {line}: {e}\n{}", self.name, self.log()))
    }

    /// A field of `service status NAME`.
    pub fn service_field(&self, service: &str, key: &str) -> Option<String> {
        let r = self.call(&format!("service status {service}"));
        r.records
            .first()
            .and_then(|rec| rec.get(key))
            .map(str::to_string)
    }

    pub fn state(&self, service: &str) -> String {
        self.service_field(service, "state").unwrap_or_default()
    }

    pub fn wait_state(&self, service: &str, state: &str, timeout: Duration) {
        self.wait_for(timeout, &format!("{service} to be {state}"), || {
            self.state(service) == state
        });
    }

    /// Host pids in a service's scope.
    pub fn scope_pids(&self, service: &str) -> Vec<i32> {
        let scope = self.service_field(service, "scope").expect("scope");
        std::fs::read_to_string(Path::new(&scope).join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The host pid of the agent itself.
    pub fn agent_pid(&self) -> i32 {
        let outer = self.child.as_ref().unwrap().id() as i32;
        if !self.pid1 {
            return outer;
        }
        // unshare --fork: the agent is unshare's only child.
        let children = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
            .unwrap_or_default();
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(outer)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with a pid we started and a signal number.
        unsafe { libc::kill(self.agent_pid(), sig) };
    }

    /// Wait for the agent (and unshare) to end; returns how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> Duration {
        let start = Instant::now();
        let child = self.child.as_mut().unwrap();
        while start.elapsed() < timeout {
            if child.try_wait().unwrap().is_some() {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "{}: the agent did not exit within {timeout:?}\n{}",
            self.name,
            self.log()
        );
    }

    pub fn rewrite_services(&self, text: &str) {
        let mut f = std::fs::File::create(self.dir.join("services.toml")).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
}

pub fn ok(r: &Response) -> bool {
    matches!(r.outcome, Outcome::Ok(_))
}

pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // state is the field after the ")" of the command name
            let state = s
                .rsplit_once(") ")
                .map(|(_, r)| r.chars().next().unwrap_or('?'));
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

/// Zombie children of a process.
pub fn zombie_children(pid: i32) -> usize {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
                .unwrap_or(false)
        })
        .count()
}

pub fn remove_cgroup_tree(root: &Path) {
    if !root.exists() {
        return;
    }
    // Kill anything left, then remove directories bottom-up.
    let _ = std::fs::write(root.join("cgroup.kill"), "1");
    std::thread::sleep(Duration::from_millis(50));
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
        dirs.push(d);
    }
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if c.try_wait().ok().flatten().is_none() {
                // SAFETY: killing the process group we created for this test.
                unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
                let _ = c.wait();
            }
        }
        remove_cgroup_tree(&self.cgroup_root);
        if !std::thread::panicking() && !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
