//! `cargo bench --bench journal` (part of `make bench`): the figures of the
//! journal issue, against a real 3-node cluster on 127.0.0.1-3. Not a
//! test: it prints numbers.
//!
//! 1. the machine's raw fsync latency (1 KiB write + fdatasync, same
//!    filesystem as the data dirs), alone and three at once (the three
//!    nodes share one disk), and sequential 1 KiB append latency;
//! 2. throughput with 16 and 64 concurrent clients;
//! 3. failover: `kill -9` of the leader to the next acknowledged append;
//! 4. disk used per node by 100,000 x 1 KiB entries after compaction.
//!
//! Environment: PACT_BENCH_RUNS (repetitions, default 3),
//! PACT_BENCH_SECS (seconds per throughput run, default 3),
//! PACT_BENCH_ENTRIES (default 100000), PACT_BENCH_ONLY (comma-separated
//! parts to run: sequential, throughput, failover, disk; default all).

#[path = "stats.rs"]
mod stats;
#[path = "../journal_support/mod.rs"]
mod support;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stats::{env_num, quantile};
use support::{Cluster, Options};

fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("{i:016}").into_bytes();
    p.resize(1024, b'.');
    p
}

/// 1 KiB pwrite + fdatasync, `n` times, in `dir`: latencies in ms.
fn raw_fsync(dir: &Path, n: usize) -> Vec<f64> {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("fsync-probe");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let buf = [0x5au8; 1024];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f.write_all_at(&buf, (i * 1024) as u64).unwrap();
        f.sync_data().unwrap();
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_file(&path);
    out
}

/// The same probe in `k` threads at once, each on its own file (three
/// journal nodes share this machine's one disk): all latencies in ms.
fn raw_fsync_concurrent(dir: &Path, k: usize, n: usize) -> Vec<f64> {
    let handles: Vec<_> = (0..k)
        .map(|i| {
            let d = dir.join(format!("probe{i}"));
            std::thread::spawn(move || raw_fsync(&d, n))
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn start(tag: &str, raft_extra: &str) -> (Cluster, u64) {
    let c = Cluster::start(
        tag,
        Options {
            raft_extra: raft_extra.to_string(),
            request_timeout_ms: 10_000,
            ..Options::default()
        },
    );
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(15));
    (c, leader)
}

fn sequential(runs: u64) {
    println!("\n== sequential 1 KiB appends (1 client, to the leader) ==");
    for run in 1..=runs {
        let (c, leader) = start("seq", "");
        let fs = raw_fsync(&c.dir, 500);
        let fs3 = raw_fsync_concurrent(&c.dir, 3, 300);
        let mut client = c.client(leader, Duration::from_secs(10));
        let n = env_num("PACT_BENCH_SEQ_N", 1000);
        let mut lat = Vec::new();
        for i in 0..n {
            let t = Instant::now();
            client.append(&payload(i)).expect("append");
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "run {run}: raw fsync p50 {:.3} ms p99 {:.3} ms, 3 at once p50 {:.3} ms | append p50 {:.3} ms p99 {:.3} ms (n={n})",
            quantile(&fs, 0.5),
            quantile(&fs, 0.99),
            quantile(&fs3, 0.5),
            quantile(&lat, 0.5),
            quantile(&lat, 0.99)
        );
    }
}

/// Appends/s with `clients` concurrent clients for `secs`.
fn throughput_once(c: &Cluster, leader: u64, clients: usize, secs: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..clients {
        let mut client = c.client(leader, Duration::from_secs(10));
        let (stop, count) = (stop.clone(), count.clone());
        handles.push(std::thread::spawn(move || {
            let mut i = (t as u64) << 32;
            while !stop.load(Ordering::Relaxed) {
                if client.append(&payload(i)).is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let c0 = count.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let n = count.load(Ordering::Relaxed) - c0;
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    rate
}

fn throughput(runs: u64, secs: u64) {
    println!("\n== throughput, 1 KiB appends (target >= 3000/s) ==");
    for clients in [16, 64] {
        let mut rates = Vec::new();
        for _ in 0..runs {
            let (c, leader) = start("tput", "");
            rates.push(throughput_once(&c, leader, clients, secs));
        }
        let list: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "{clients} clients: {:.0} appends/s median (runs: {})",
            quantile(&rates, 0.5),
            list.join(", ")
        );
    }
}

fn failover(runs: u64) {
    println!("\n== failover: kill -9 of the leader -> next acknowledged append (target < 1 s) ==");
    let (mut c, _) = start("failover", "");
    let mut times = Vec::new();
    for run in 1..=runs {
        let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(15));
        c.wait_converged(&[1, 2, 3], 1, Duration::from_secs(15));
        let stop = Arc::new(AtomicBool::new(false));
        // (sent, acknowledged) of every successful append.
        let acks: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
        let mut client = c.any_client(Duration::from_secs(10));
        let (s2, a2) = (stop.clone(), acks.clone());
        let writer = std::thread::spawn(move || {
            let mut i = 0;
            while !s2.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if client.append(&payload(i)).is_ok() {
                    a2.lock().unwrap().push((sent, Instant::now()));
                }
                i += 1;
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let killed = Instant::now();
        c.kill9(leader);
        let deadline = killed + Duration::from_secs(10);
        let took = loop {
            // The first append sent after the kill (one sent before may
            // have been committed by the old leader just in time).
            if let Some((_, done)) = acks.lock().unwrap().iter().find(|(sent, _)| *sent > killed) {
                break done.duration_since(killed);
            }
            assert!(
                Instant::now() < deadline,
                "no append after the kill\n{}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        stop.store(true, Ordering::Relaxed);
        let _ = writer.join();
        times.push(took.as_secs_f64() * 1e3);
        println!(
            "run {run}: killed node {leader}; next append after {:.0} ms",
            took.as_secs_f64() * 1e3
        );
        c.spawn(leader, false);
    }
    println!("median {:.0} ms", quantile(&times, 0.5));
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.blocks() * 512
                })
                .sum()
        })
        .unwrap_or(0)
}

fn disk(entries: u64) {
    println!("\n== disk: {entries} x 1 KiB entries, snapshot_interval 10000 (target <= 160 MB per node) ==");
    let (c, leader) = start("disk", "");
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..64 {
        let mut client = c.client(leader, Duration::from_secs(30));
        let next = next.clone();
        handles.push(std::thread::spawn(move || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= entries {
                return;
            }
            client.append(&payload(i)).expect("append");
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    c.wait_converged(&[1, 2, 3], entries, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "wrote {entries} entries in {secs:.1} s ({:.0}/s)",
        entries as f64 / secs
    );
    for n in &c.nodes {
        let st = c.status(n.id).unwrap_or_default();
        let rss_kb = n
            .child
            .as_ref()
            .and_then(|c| std::fs::read_to_string(format!("/proc/{}/status", c.id())).ok())
            .and_then(|st| {
                st.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
            })
            .unwrap_or(0);
        println!(
            "node {}: {:.1} MB on disk, RSS {:.0} MB (log entries {}, snapshot index {}, last snapshot took {} ms)",
            n.id,
            dir_bytes(&n.data) as f64 / 1e6,
            rss_kb as f64 / 1024.0,
            st.get("log_entries").unwrap_or("?"),
            st.get("snapshot_index").unwrap_or("?"),
            st.get("last_snapshot_ms").unwrap_or("?"),
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is understood.
    let runs = env_num("PACT_BENCH_RUNS", 3);
    let secs = env_num("PACT_BENCH_SECS", 3);
    let entries = env_num("PACT_BENCH_ENTRIES", 100_000);
    println!("pact-journal benchmarks: 3 nodes on 127.0.0.1-3, {runs} runs each");
    let _ = std::io::stdout().flush();
    let only = std::env::var("PACT_BENCH_ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only.split(',').any(|p| p.trim() == name);
    if part("sequential") {
        sequential(runs);
    }
    if part("throughput") {
        throughput(runs, secs);
    }
    if part("failover") {
        failover(runs);
    }
    if part("disk") {
        disk(entries);
    }
}
