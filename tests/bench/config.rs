//! `cargo bench --bench config` (part of `make bench`): the figures of the
//! configuration-journal issue. Not a test: it prints numbers.
//!
//! 1. Boot storm: N simulated agents (default 10,000; one process, one mio
//!    loop, one connection each, all opened at once on loopback) stream a
//!    ~150 KB overlay plus their own node delta from one journal node:
//!    total time, and per-agent p50/p99 from connect to the completion line.
//! 2. The same N connections left open as subscriptions: the journal's RSS.
//! 3. `apply` of an overlay change on a 3-node journal → 100 subscribed
//!    agents (spread over the three nodes) have the new overlay: p50/p99.
//!
//! Environment: PACT_BENCH_AGENTS (default 10000), PACT_BENCH_RUNS
//! (storm repetitions, default 3), PACT_BENCH_APPLIES (default 50),
//! PACT_BENCH_OVERLAY_KB (default 150).

#[path = "stats.rs"]
mod stats;
#[path = "../journal_support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use pact::journal::client::JournalClient;
use pact::proto::boot::{BootDecoder, BootEvent, BootRequest};
use pact::proto::client::Outcome;
use pact::proto::format_request;
use pact::util::rng::Rng;
use pact::util::sha256::sha256_hex;
use stats::{env_num, quantile};
use support::{Cluster, Options};

fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn author() -> [&'static str; 2] {
    ["principal=bench@example.org", "role=pact-platform-admin"]
}

/// An overlay of about `kb` KiB of TOML: services and configuration files
/// with text that compresses roughly as real configuration does.
fn big_overlay(vc: &str, kb: usize) -> String {
    let mut rng = Rng::new(7);
    let words = [
        "server", "pool", "iburst", "maxpoll", "allow", "deny", "log", "level", "timeout", "retry",
        "mount", "rsize", "wsize", "hard", "intr", "vers", "threads", "queue", "depth", "buffer",
        "cache", "enable", "disable",
    ];
    let mut s = String::new();
    for i in 0..40 {
        s.push_str(&format!(
            "[vcluster.{vc}.services.svc{i:02}]\nbinary = \"/usr/sbin/svc{i:02}\"\n\
             args = [\"--config\", \"/etc/svc{i:02}.conf\"]\norder = {}\nrestart = \"always\"\n\n",
            10 + i
        ));
    }
    let mut f = 0;
    while s.len() < kb * 1024 {
        s.push_str(&format!(
            "[vcluster.{vc}.files.\"/etc/bench/file{f:03}.conf\"]\ncontent = \"\"\"\n"
        ));
        for _ in 0..40 {
            let n = 3 + rng.range(0, 5) as usize;
            let line: Vec<String> = (0..n)
                .map(|_| {
                    let w = words[rng.range(0, words.len() as u64) as usize];
                    format!("{w}{}", rng.range(0, 1000))
                })
                .collect();
            s.push_str(&line.join(" "));
            s.push('\n');
        }
        s.push_str("\"\"\"\n\n");
        f += 1;
    }
    s
}

fn apply(c: &mut JournalClient, vc: &str, body: &str) -> u64 {
    let mut w = vec!["apply".to_string(), format!("vcluster={vc}")];
    w.extend(author().iter().map(|s| s.to_string()));
    let refs: Vec<&str> = w.iter().map(String::as_str).collect();
    let r = c
        .write(&format_request(&refs), Some(body.as_bytes()))
        .expect("apply");
    match r.outcome {
        Outcome::Ok(rec) => rec.get("version").and_then(|v| v.parse().ok()).unwrap_or(0),
        Outcome::Err(code, m) => panic!("apply: err {code} {m}"),
    }
}

/// Every node assigned and given a committed delta, by 16 client threads.
fn commit_deltas(c: &Cluster, vc: &str, nodes: usize) {
    let threads = 16;
    let eps: Vec<String> = c.nodes.iter().map(|n| n.client.to_string()).collect();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let eps = eps.clone();
            let vc = vc.to_string();
            std::thread::spawn(move || {
                let mut client = JournalClient::new(eps, Duration::from_secs(30));
                for i in (t..nodes).step_by(threads) {
                    let body = format!(
                        "[vcluster.{vc}.sysctl]\n\"vm.swappiness\" = \"{}\"\n\n\
                         [vcluster.{vc}.files.\"/etc/node-id\"]\ncontent = \"node{i:05}\\n\"\n",
                        i % 100
                    );
                    let name = node_name(i);
                    let mut w = vec!["assign", &name, &vc];
                    w.extend(author());
                    client.write(&format_request(&w), None).expect("assign");
                    let node = format!("node={name}");
                    let mut w = vec!["commit", &node, "ttl=86400"];
                    w.extend(author());
                    let r = client
                        .write(&format_request(&w), Some(body.as_bytes()))
                        .expect("commit");
                    if let Outcome::Err(code, m) = r.outcome {
                        panic!("commit: err {code} {m}");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn node_name(i: usize) -> String {
    format!("n{i:05}")
}

/// A simulated agent: its connection and what it has seen.
struct Agent {
    stream: TcpStream,
    out: Vec<u8>,
    decoder: BootDecoder,
    started: Instant,
    done: Option<Instant>,
    overlay_bytes: usize,
    delta: bool,
    overlays: Vec<(u64, Instant)>,
    error: Option<String>,
}

impl Agent {
    fn connect(addr: std::net::SocketAddr, req: &BootRequest) -> Agent {
        Agent {
            stream: TcpStream::connect(addr).expect("connect"),
            out: format!("{}\n", req.to_line()).into_bytes(),
            decoder: BootDecoder::default(),
            started: Instant::now(),
            done: None,
            overlay_bytes: 0,
            delta: false,
            overlays: Vec::new(),
            error: None,
        }
    }

    /// Write what is pending, read what is there; false once the
    /// connection is gone.
    fn pump(&mut self, buf: &mut [u8], verify: bool) -> bool {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return true,
                Err(e) => {
                    self.error = Some(e.to_string());
                    return false;
                }
            }
        }
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.error
                        .get_or_insert_with(|| "closed by the journal".into());
                    return false;
                }
                Ok(n) => match self.decoder.feed(&buf[..n]) {
                    Ok(events) => {
                        for e in events {
                            self.on_event(e, verify);
                        }
                    }
                    Err(e) => {
                        self.error = Some(format!("malformed stream: {e}"));
                        return false;
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return true,
                Err(e) => {
                    self.error = Some(e.to_string());
                    return false;
                }
            }
        }
    }

    fn on_event(&mut self, e: BootEvent, verify: bool) {
        match e {
            BootEvent::Overlay(o) => {
                self.overlay_bytes = o.data.len();
                if verify {
                    let text = zstd::bulk::decompress(&o.data, o.size).expect("zstd");
                    assert_eq!(sha256_hex(&text), o.checksum, "overlay checksum");
                }
                self.overlays.push((o.version, Instant::now()));
            }
            BootEvent::Delta(d) => self.delta = d.version != 0,
            BootEvent::Complete { .. } => {
                self.done.get_or_insert_with(Instant::now);
            }
            BootEvent::Error { code, message } => {
                self.error = Some(format!("err {code} {message}"));
            }
            _ => {}
        }
    }
}

fn storm(agents: usize, runs: u64, kb: usize) {
    println!(
        "\n== boot storm: {agents} agents, one journal node, ~{kb} KB overlay + a delta each =="
    );
    let mut c = Cluster::start(
        "storm",
        Options {
            nodes: 1,
            request_timeout_ms: 30_000,
            ..Options::default()
        },
    );
    c.wait_leader(&[1], Duration::from_secs(15));
    let addr = c.node(1).client;
    let mut client = c.client(1, Duration::from_secs(30));
    let overlay = big_overlay("storm", kb);
    let t = Instant::now();
    apply(&mut client, "storm", &overlay);
    println!(
        "overlay: {} bytes of TOML applied in {:.0} ms",
        overlay.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    commit_deltas(&c, "storm", agents);
    println!(
        "{agents} node deltas committed in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let pid = c.node(1).child.as_ref().unwrap().id();
    let rss_idle = rss_kib(pid);
    for run in 1..=runs {
        let (conns, total, lat, errors) = run_storm(addr, agents);
        let rss = rss_kib(pid);
        println!(
            "run {run}: {} of {agents} agents booted in {:.3} s | per agent p50 {:.0} ms p99 {:.0} ms max {:.0} ms | overlay {} bytes compressed | errors {}",
            lat.len(),
            total,
            quantile(&lat, 0.5),
            quantile(&lat, 0.99),
            quantile(&lat, 1.0),
            conns.first().map_or(0, |a| a.overlay_bytes),
            errors
        );
        let with_delta = conns.iter().filter(|a| a.delta).count();
        assert_eq!(with_delta, lat.len(), "every booted agent got its delta");
        std::thread::sleep(Duration::from_secs(6));
        println!(
            "       journal RSS: {:.1} MiB idle, {:.1} MiB with {} open subscriptions, {:.1} MiB after a heartbeat round",
            rss_idle as f64 / 1024.0,
            rss as f64 / 1024.0,
            conns.len(),
            rss_kib(pid) as f64 / 1024.0
        );
        drop(conns);
        std::thread::sleep(Duration::from_millis(500));
    }
    c.kill9(1);
}

/// Connect `n` agents at once; returns them (still connected), the total
/// time to the last completion, per-agent latencies in ms, and errors.
fn run_storm(addr: std::net::SocketAddr, n: usize) -> (Vec<Agent>, f64, Vec<f64>, usize) {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(4096);
    let mut agents = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let req = BootRequest {
            node: node_name(i),
            vcluster: "storm".into(),
            version: 0,
            node_version: 0,
            from: 0,
        };
        let mut a = Agent::connect(addr, &req);
        poll.registry()
            .register(
                &mut a.stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        agents.push(a);
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = n;
    let mut errors = 0;
    let deadline = t0 + Duration::from_secs(60);
    while left > 0 && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        for ev in events.iter() {
            let i = ev.token().0;
            let a = &mut agents[i];
            if a.done.is_some() || a.error.is_some() {
                continue;
            }
            let alive = a.pump(&mut buf, i < 10);
            if a.done.is_some() {
                left -= 1;
            } else if !alive || a.error.is_some() {
                left -= 1;
                errors += 1;
                if errors <= 3 {
                    eprintln!("agent {i}: {}", a.error.as_deref().unwrap_or("?"));
                }
            }
        }
    }
    let last = agents.iter().filter_map(|a| a.done).max().unwrap_or(t0);
    let lat: Vec<f64> = agents
        .iter()
        .filter_map(|a| a.done.map(|d| (d - a.started).as_secs_f64() * 1e3))
        .collect();
    (agents, (last - t0).as_secs_f64(), lat, errors)
}

fn notify(applies: u64) {
    println!("\n== apply -> 100 subscribed agents notified (3 nodes; agents spread over them) ==");
    let c = Cluster::start(
        "notify",
        Options {
            request_timeout_ms: 30_000,
            ..Options::default()
        },
    );
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(15));
    let mut client = c.client(leader, Duration::from_secs(30));
    let base = "[vcluster.notify.sysctl]\n\"vm.swappiness\" = \"0\"\n";
    let v0 = apply(&mut client, "notify", base);
    c.wait_converged(&[1, 2, 3], v0, Duration::from_secs(10));
    let addrs: Vec<_> = c.nodes.iter().map(|n| n.client).collect();
    let (tx, rx) = mpsc::channel::<()>();
    let (res_tx, res_rx) = mpsc::channel();
    let subscribers = std::thread::spawn(move || {
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(256);
        let mut agents: Vec<Agent> = (0..100)
            .map(|i| {
                let req = BootRequest {
                    node: format!("sub{i:03}"),
                    vcluster: "notify".into(),
                    version: 0,
                    node_version: 0,
                    from: 0,
                };
                let mut a = Agent::connect(addrs[i % addrs.len()], &req);
                poll.registry()
                    .register(
                        &mut a.stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .unwrap();
                a
            })
            .collect();
        let mut buf = vec![0u8; 64 * 1024];
        let mut ready_sent = false;
        loop {
            poll.poll(&mut events, Some(Duration::from_millis(20)))
                .unwrap();
            for ev in events.iter() {
                let a = &mut agents[ev.token().0];
                if !a.pump(&mut buf, false) {
                    panic!("subscriber {}: {:?}", ev.token().0, a.error);
                }
            }
            if !ready_sent && agents.iter().all(|a| a.done.is_some()) {
                tx.send(()).unwrap();
                ready_sent = true;
            }
            if rx_stop() {
                break;
            }
        }
        let seen: Vec<Vec<(u64, Instant)>> = agents.iter().map(|a| a.overlays.clone()).collect();
        res_tx.send(seen).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("100 subscriptions open");
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    for k in 1..=applies {
        let body = format!("[vcluster.notify.sysctl]\n\"vm.swappiness\" = \"{k}\"\n");
        let t = Instant::now();
        let v = apply(&mut client, "notify", &body);
        sent.insert(v, t);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
    subscribers.join().unwrap();
    let seen = res_rx.recv().unwrap();
    let mut lat = Vec::new();
    let mut missing = 0;
    for per_agent in &seen {
        for (v, t) in &sent {
            match per_agent.iter().find(|(version, _)| version == v) {
                Some((_, at)) => lat.push((*at - *t).as_secs_f64() * 1e3),
                None => missing += 1,
            }
        }
    }
    println!(
        "{applies} applies x 100 agents: notified p50 {:.2} ms p99 {:.2} ms max {:.2} ms (from the start of the apply to the new overlay fully received; {missing} missing)",
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        quantile(&lat, 1.0)
    );
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn rx_stop() -> bool {
    STOP.load(std::sync::atomic::Ordering::Relaxed)
}

fn main() {
    let limit = raise_nofile();
    let agents = env_num("PACT_BENCH_AGENTS", 10_000) as usize;
    let runs = env_num("PACT_BENCH_RUNS", 3);
    let applies = env_num("PACT_BENCH_APPLIES", 50);
    let kb = env_num("PACT_BENCH_OVERLAY_KB", 150) as usize;
    println!("pact configuration journal benchmarks (open-file limit {limit})");
    let _ = std::io::stdout().flush();
    storm(agents, runs, kb);
    notify(applies);
}
