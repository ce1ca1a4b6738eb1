//! Harness for the journal's process tests: real `pact-journal` processes
//! on 127.0.0.x with ports free at start, optional fault-injecting TCP
//! proxies on every peer link, `kill -9` and restarts.
#![allow(dead_code)]

pub mod checks;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pact::journal::client::JournalClient;
use pact::proto::Record;

pub const JOURNAL: &str = env!("CARGO_BIN_EXE_pact-journal");

/// A port that was free on `ip` a moment ago.
pub fn free_port(ip: &str) -> u16 {
    let l = TcpListener::bind(format!("{ip}:0")).expect("bind an ephemeral port");
    l.local_addr().unwrap().port()
}

/// A TCP forwarder whose link can be cut (both ways) and restored.
pub struct Proxy {
    pub addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(ip: &str, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(format!("{ip}:0")).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let blocked = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s, st) = (blocked.clone(), streams.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((inbound, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if b.load(Ordering::Relaxed) {
                    drop(inbound);
                    continue;
                }
                let _ = inbound.set_nonblocking(false);
                let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(1))
                else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                {
                    let mut g = s.lock().unwrap();
                    g.push(inbound.try_clone().unwrap());
                    g.push(outbound.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            addr,
            blocked,
            streams,
            stop,
        }
    }

    /// Cuts the link: open connections die, new ones are refused.
    pub fn block(&self) {
        self.blocked.store(true, Ordering::Relaxed);
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.blocked.store(false, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.block();
    }
}

pub struct NodeProc {
    pub id: u64,
    pub ip: String,
    pub client: SocketAddr,
    pub raft: SocketAddr,
    pub config: PathBuf,
    pub data: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub nodes: Vec<NodeProc>,
    /// `proxies[(from, to)]`: the link from node `from` to node `to`.
    pub proxies: Vec<((u64, u64), Proxy)>,
    /// tmpfs mounts to undo.
    pub mounts: Vec<PathBuf>,
}

/// Options for [`Cluster::start`].
#[derive(Clone)]
pub struct Options {
    pub nodes: u64,
    /// How many of the last `nodes` are learners instead of voters.
    pub learners: u64,
    pub proxies: bool,
    /// Extra lines for `[journal.raft]`.
    pub raft_extra: String,
    pub request_timeout_ms: u64,
    /// Put this node's data dir on a tmpfs of this size (root only).
    pub tmpfs: Option<(u64, &'static str)>,
    /// Extra lines for `[journal.clients]`.
    pub clients_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 3,
            learners: 0,
            proxies: false,
            raft_extra: String::new(),
            request_timeout_ms: 3000,
            tmpfs: None,
            clients_extra: String::new(),
        }
    }
}

impl Cluster {
    /// Writes configs and starts every node (node 1 with `--bootstrap`).
    pub fn start(tag: &str, opts: Options) -> Cluster {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pact-jtest-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for id in 1..=opts.nodes {
            let ip = format!("127.0.0.{id}");
            let client: SocketAddr = format!("{ip}:{}", free_port(&ip)).parse().unwrap();
            let raft: SocketAddr = format!("{ip}:{}", free_port(&ip)).parse().unwrap();
            nodes.push(NodeProc {
                id,
                ip: ip.clone(),
                client,
                raft,
                config: dir.join(format!("node{id}.toml")),
                data: dir.join(format!("data{id}")),
                log: dir.join(format!("node{id}.log")),
                child: None,
            });
        }
        let mut proxies = Vec::new();
        if opts.proxies {
            for from in &nodes {
                for to in &nodes {
                    if from.id != to.id {
                        proxies.push(((from.id, to.id), Proxy::start(&from.ip, to.raft)));
                    }
                }
            }
        }
        for n in &nodes {
            let entry = |m: &NodeProc| {
                let raft = if m.id == n.id || !opts.proxies {
                    m.raft
                } else {
                    proxies
                        .iter()
                        .find(|(k, _)| *k == (n.id, m.id))
                        .map(|(_, p)| p.addr)
                        .unwrap()
                };
                format!(
                    "\"{}:{}:{}:{}\"",
                    m.id,
                    raft.ip(),
                    raft.port(),
                    m.client.port()
                )
            };
            let first_learner = opts.nodes - opts.learners + 1;
            let members: Vec<String> = nodes
                .iter()
                .filter(|m| m.id < first_learner)
                .map(&entry)
                .collect();
            let learners: Vec<String> = nodes
                .iter()
                .filter(|m| m.id >= first_learner)
                .map(&entry)
                .collect();
            let text = format!(
                "[journal]\nnode_id = {}\nlisten_addr = \"{}\"\nraft_listen_addr = \"{}\"\n\
                 data_dir = \"{}\"\n\n[journal.clients]\nrequest_timeout_ms = {}\n{}\n\
                 [journal.raft]\nmembers = [{}]\nlearners = [{}]\n{}\n",
                n.id,
                n.client,
                n.raft,
                n.data.display(),
                opts.request_timeout_ms,
                opts.clients_extra,
                members.join(", "),
                learners.join(", "),
                opts.raft_extra
            );
            std::fs::write(&n.config, text).unwrap();
        }
        let mut mounts = Vec::new();
        if let Some((id, size)) = opts.tmpfs {
            let data = &nodes[(id - 1) as usize].data;
            std::fs::create_dir_all(data).unwrap();
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "pact-jtest"])
                .arg(data)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "mount a tmpfs on {}", data.display());
            mounts.push(data.clone());
        }
        let mut c = Cluster {
            dir,
            nodes,
            proxies,
            mounts,
        };
        for id in 1..=opts.nodes {
            c.spawn(id, id == 1);
        }
        c
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[(id - 1) as usize]
    }

    /// Starts node `id` (again).
    pub fn spawn(&mut self, id: u64, bootstrap: bool) {
        let n = &mut self.nodes[(id - 1) as usize];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .unwrap();
        let mut cmd = Command::new(JOURNAL);
        cmd.arg("--config")
            .arg(&n.config)
            .args(["--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        if bootstrap {
            cmd.arg("--bootstrap");
        }
        n.child = Some(cmd.spawn().expect("start pact-journal"));
    }

    /// `kill -9` of node `id` (its PID only).
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.nodes[(id - 1) as usize].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A client of node `id` alone.
    pub fn client(&self, id: u64, timeout: Duration) -> JournalClient {
        JournalClient::new(vec![self.node(id).client.to_string()], timeout)
    }

    /// A client that knows every node.
    pub fn any_client(&self, timeout: Duration) -> JournalClient {
        JournalClient::new(
            self.nodes.iter().map(|n| n.client.to_string()).collect(),
            timeout,
        )
    }

    /// Node `id`'s own status record, if it answers.
    pub fn status(&self, id: u64) -> Option<Record> {
        let mut c = self.client(id, Duration::from_secs(2));
        c.status().ok().and_then(|r| r.records.into_iter().next())
    }

    /// Waits for a leader that every live node in `among` agrees on.
    pub fn wait_leader(&self, among: &[u64], within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<Option<String>> = among
                .iter()
                .map(|&id| {
                    self.status(id)
                        .and_then(|r| r.get("leader").map(str::to_string))
                })
                .collect();
            if let Some(Some(l)) = views.first() {
                if l != "-" && views.iter().all(|v| v.as_deref() == Some(l.as_str())) {
                    let id: u64 = l.parse().unwrap();
                    if among.contains(&id) {
                        return id;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {among:?} within {within:?}: {views:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the nodes report the same applied index (at least `min`).
    pub fn wait_converged(&self, among: &[u64], min: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let applied: Vec<Option<u64>> = among
                .iter()
                .map(|&id| {
                    self.status(id)
                        .and_then(|r| r.get("applied_index").and_then(|a| a.parse().ok()))
                })
                .collect();
            if let Some(Some(a)) = applied.first() {
                if *a >= min && applied.iter().all(|x| *x == Some(*a)) {
                    return *a;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nodes {among:?} did not converge: applied {applied:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn proxy(&self, from: u64, to: u64) -> &Proxy {
        &self
            .proxies
            .iter()
            .find(|(k, _)| *k == (from, to))
            .expect("a proxied cluster")
            .1
    }

    /// Cuts every link between `side` and the other nodes, both ways.
    pub fn partition(&self, side: &[u64]) {
        for ((from, to), p) in &self.proxies {
            if side.contains(from) != side.contains(to) {
                p.block();
            }
        }
    }

    /// Resizes the tmpfs under node `id`'s data dir.
    pub fn resize_tmpfs(&self, id: u64, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.node(id).data)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount the tmpfs");
    }

    pub fn heal(&self) {
        for (_, p) in &self.proxies {
            p.heal();
        }
    }

    /// The tail of every node's log (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            out.push_str(&format!(
                "--- node {} ({}):\n{}\n",
                n.id,
                n.log.display(),
                tail.join("\n")
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for m in &self.mounts {
            let _ = Command::new("umount").arg(m).status();
        }
        if std::thread::panicking() || std::env::var_os("PACT_KEEP").is_some() {
            eprintln!("{}", self.logs());
            eprintln!("kept {} for inspection", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
