//! A silent partition: three `pact-journal` nodes in their own network
//! namespaces on a bridge; cutting a node's veth drops its packets without
//! any reset (as a pulled cable or a firewall DROP would), so only timeouts
//! (Raft's, TCP_USER_TIMEOUT, the connect timeout) can notice. Needs root.

#[path = "journal_support/mod.rs"]
mod support;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pact::journal::client::JournalClient;
use support::checks::{check_real_time_order, writers_with};
use support::JOURNAL;

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root for network namespaces");
    }
    let probe = format!("pjprobe{}", std::process::id());
    if !ip(&["netns", "add", &probe]) {
        return Some("cannot create a network namespace (ip netns add failed)");
    }
    ip(&["netns", "del", &probe]);
    let br = format!("pjprobe{}", std::process::id() % 100_000);
    if !ip(&["link", "add", &br, "type", "bridge"]) {
        return Some("cannot create a bridge");
    }
    ip(&["link", "del", &br]);
    None
}

struct Net {
    tag: String,
    subnet: u32,
    dir: PathBuf,
    children: Vec<Option<Child>>,
}

impl Net {
    fn ns(&self, i: u64) -> String {
        format!("pj{}n{i}", self.tag)
    }
    fn host_veth(&self, i: u64) -> String {
        format!("pj{}h{i}", self.tag)
    }
    fn bridge(&self) -> String {
        format!("pj{}br", self.tag)
    }
    fn addr(&self, i: u64, port: u16) -> String {
        format!("10.77.{}.{i}:{port}", self.subnet)
    }

    fn setup(tag: &str) -> Net {
        let pid = std::process::id();
        let net = Net {
            tag: format!("{}", pid % 100_000),
            subnet: 1 + pid % 250,
            dir: std::env::temp_dir().join(format!("pact-jtest-netns-{tag}-{pid}")),
            children: vec![None, None, None],
        };
        let _ = std::fs::remove_dir_all(&net.dir);
        std::fs::create_dir_all(&net.dir).unwrap();
        let br = net.bridge();
        let sub = net.subnet;
        assert!(
            ip(&["link", "add", &br, "type", "bridge"]),
            "create a bridge"
        );
        assert!(ip(&["link", "set", &br, "up"]));
        assert!(ip(&[
            "addr",
            "add",
            &format!("10.77.{sub}.254/24"),
            "dev",
            &br
        ]));
        for i in 1..=3 {
            let (ns, h, n) = (net.ns(i), net.host_veth(i), format!("pj{}v{i}", net.tag));
            assert!(ip(&["netns", "add", &ns]), "create netns {ns}");
            assert!(ip(&["link", "add", &h, "type", "veth", "peer", "name", &n]));
            assert!(ip(&["link", "set", &h, "master", &br]));
            assert!(ip(&["link", "set", &h, "up"]));
            assert!(ip(&["link", "set", &n, "netns", &ns]));
            let addr = format!("10.77.{sub}.{i}/24");
            assert!(ip(&[
                "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &n
            ]));
            assert!(ip(&["netns", "exec", &ns, "ip", "link", "set", &n, "up"]));
            assert!(ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]));
        }
        net
    }

    fn config(&self, i: u64) -> PathBuf {
        let path = self.dir.join(format!("node{i}.toml"));
        let members: Vec<String> = (1..=3)
            .map(|m| format!("\"{m}:10.77.{}.{m}:9444:9443\"", self.subnet))
            .collect();
        let text = format!(
            "[journal]\nnode_id = {i}\nlisten_addr = \"{}\"\nraft_listen_addr = \"{}\"\n\
             data_dir = \"{}\"\n[journal.clients]\nrequest_timeout_ms = 3000\n\
             [journal.raft]\nmembers = [{}]\n",
            self.addr(i, 9443),
            self.addr(i, 9444),
            self.dir.join(format!("data{i}")).display(),
            members.join(", ")
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn start(&mut self, i: u64, bootstrap: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{i}.log")))
            .unwrap();
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.ns(i),
            JOURNAL,
            "--log-level",
            "debug",
            "--config",
        ])
        .arg(self.config(i))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0);
        if bootstrap {
            cmd.arg("--bootstrap");
        }
        self.children[(i - 1) as usize] = Some(cmd.spawn().unwrap());
    }

    fn client(&self, i: u64, timeout: Duration) -> JournalClient {
        JournalClient::new(vec![self.addr(i, 9443)], timeout)
    }

    fn status(&self, i: u64, key: &str) -> Option<String> {
        let mut c = self.client(i, Duration::from_secs(1));
        let r = c.status().ok()?;
        r.records.first()?.get(key).map(str::to_string)
    }

    fn wait_leader(&self, among: &[u64], within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<Option<String>> =
                among.iter().map(|&i| self.status(i, "leader")).collect();
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
                "no leader among {among:?}: {views:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        (1..=3)
            .map(|i| {
                let t = std::fs::read_to_string(self.dir.join(format!("node{i}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                format!(
                    "--- node {i}:\n{}\n",
                    lines[lines.len().saturating_sub(20)..].join("\n")
                )
            })
            .collect()
    }

    /// Silently cuts node `i` off: its bridge port goes down.
    fn isolate(&self, i: u64, cut: bool) {
        let state = if cut { "down" } else { "up" };
        assert!(ip(&["link", "set", &self.host_veth(i), state]));
    }

    /// Runs `f` on a thread that lives in node `i`'s network namespace.
    fn inside<T: Send + 'static>(&self, i: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.ns(i));
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the netns");
            // SAFETY: setns on a valid namespace fd affects only this thread,
            // which is ours alone and ends with the closure.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 1..=3 {
            ip(&["netns", "del", &self.ns(i)]);
            ip(&["link", "del", &self.host_veth(i)]);
        }
        ip(&["link", "del", &self.bridge()]);
        if std::thread::panicking() {
            eprintln!("{}\nkept {}", self.logs(), self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn journal_silent_partition_of_the_leader_in_network_namespaces() {
    if let Some(why) = skip_reason() {
        eprintln!("\n*** journal_silent_partition_of_the_leader_in_network_namespaces: SKIPPED: {why} ***\n");
        return;
    }
    let mut net = Net::setup("silent");
    for i in 1..=3 {
        net.start(i, i == 1);
    }
    let old = net.wait_leader(&[1, 2, 3], Duration::from_secs(15));
    let majority: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    let endpoints: Vec<String> = (1..=3).map(|i| net.addr(i, 9443)).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let (out, writers) = writers_with(3, stop.clone(), || {
        JournalClient::new(endpoints.clone(), Duration::from_secs(5))
    });
    std::thread::sleep(Duration::from_millis(800));
    net.isolate(old, true);
    let cut_at = Instant::now();
    let new = net.wait_leader(&majority, Duration::from_secs(15));
    eprintln!(
        "node {old} cut off silently; node {new} leads after {:?}",
        cut_at.elapsed()
    );
    std::thread::sleep(Duration::from_millis(1500));
    // On the isolated node (reached from inside its namespace) the latest
    // acknowledged append must not be hidden by a stale read.
    let latest = out
        .lock()
        .unwrap()
        .acked
        .iter()
        .max_by_key(|(s, _)| *s)
        .cloned();
    let (seq, payload) = latest.expect("appends acknowledged by the majority");
    let addr = net.addr(old, 9443);
    let read = net.inside(old, move || {
        JournalClient::new(vec![addr], Duration::from_secs(2)).get(seq)
    });
    // That append was acknowledged after the cut, so the isolated node
    // cannot have it: any answer but "unavailable" would be stale.
    let acked_after_cut = out
        .lock()
        .unwrap()
        .spans
        .iter()
        .any(|(sent, _, s)| *s == seq && *sent > cut_at);
    match read {
        Err(e) => assert_eq!(e.code, 5, "{e}"),
        Ok(d) => panic!(
            "the isolated node served a read ({} bytes, acked after cut: {acked_after_cut}, payload {payload})",
            d.len()
        ),
    }
    net.isolate(old, false);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    // Everyone converges on one journal holding every acknowledged append.
    let deadline = Instant::now() + Duration::from_secs(30);
    let journals = loop {
        let js: Vec<Vec<(u64, Vec<u8>)>> = (1..=3)
            .map(|i| {
                net.client(i, Duration::from_secs(5))
                    .all()
                    .unwrap_or_default()
            })
            .collect();
        if js[0] == js[1] && js[1] == js[2] && !js[0].is_empty() {
            break js;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not converge\n{}",
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let o = out.lock().unwrap();
    eprintln!(
        "acked {}, indeterminate {}, failed {}",
        o.acked.len(),
        o.maybe.len(),
        o.failed.len()
    );
    let j = &journals[0];
    for (i, (s, _)) in j.iter().enumerate() {
        assert_eq!(*s, i as u64);
    }
    for (s, p) in &o.acked {
        assert_eq!(
            j.get(*s as usize).map(|(_, d)| d.as_slice()),
            Some(p.as_bytes()),
            "seq {s}"
        );
    }
    check_real_time_order(&o.spans);
}
