//! Checks shared by the journal's process tests: writers and readers
//! that record what they saw, and the properties a Jepsen-style checker
//! would verify on it (no acknowledged append lost, identical journals,
//! gapless sequence numbers, no duplicates, no stale reads, real-time
//! order of acknowledged appends).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pact::journal::client::JournalClient;

use super::Cluster;

/// What the writers saw.
#[derive(Default)]
pub struct Outcomes {
    /// Acknowledged: (seq, payload).
    pub acked: Vec<(u64, String)>,
    /// Outcome unknown.
    pub maybe: Vec<String>,
    /// Definitely not committed.
    pub failed: Vec<String>,
    /// When each ack arrived.
    pub ack_times: Vec<Instant>,
    /// (sent, acknowledged, seq) of every acknowledged append.
    pub spans: Vec<(Instant, Instant, u64)>,
    /// Reads checked against acknowledged appends, and reads refused.
    pub reads_ok: usize,
    pub reads_refused: usize,
}

pub fn writers(
    cluster: &Cluster,
    n: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Outcomes>>, Vec<std::thread::JoinHandle<()>>) {
    writers_with(n, stop, || cluster.any_client(Duration::from_secs(5)))
}

/// `n` writer threads, each with a client from `client`, appending unique
/// payloads until `stop`; every outcome is recorded.
pub fn writers_with(
    n: usize,
    stop: Arc<AtomicBool>,
    mut client: impl FnMut() -> JournalClient,
) -> (Arc<Mutex<Outcomes>>, Vec<std::thread::JoinHandle<()>>) {
    let out = Arc::new(Mutex::new(Outcomes::default()));
    let mut handles = Vec::new();
    for t in 0..n {
        let mut client = client();
        let (out, stop) = (out.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let payload = format!("w{t}-{k}");
                k += 1;
                let sent = Instant::now();
                let r = client.append(payload.as_bytes());
                let mut o = out.lock().unwrap();
                match r {
                    Ok(seq) => {
                        o.acked.push((seq, payload));
                        o.ack_times.push(Instant::now());
                        o.spans.push((sent, Instant::now(), seq));
                    }
                    Err(e) if e.is_indeterminate() => o.maybe.push(payload),
                    Err(_) => o.failed.push(payload),
                }
            }
        }));
    }
    (out, handles)
}

/// Readers on every node: a read started after an append was acknowledged
/// must see it (no stale reads, even across kills).
pub fn readers(
    cluster: &Cluster,
    out: Arc<Mutex<Outcomes>>,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (1..=3)
        .map(|id| {
            let mut client = cluster.client(id, Duration::from_secs(2));
            let (out, stop) = (out.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let latest = {
                        let o = out.lock().unwrap();
                        o.acked.iter().max_by_key(|(s, _)| *s).cloned()
                    };
                    let Some((seq, payload)) = latest else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let r = client.get(seq);
                    let mut o = out.lock().unwrap();
                    match r {
                        Ok(data) => {
                            assert_eq!(data, payload.as_bytes(), "node {id} read seq {seq} wrong");
                            o.reads_ok += 1;
                        }
                        // Unavailable (killed, electing): fine; stale: not.
                        Err(e) if e.code == 5 => o.reads_refused += 1,
                        Err(e) => panic!("node {id}: read of acknowledged seq {seq} failed: {e}"),
                    }
                }
            })
        })
        .collect()
}

/// Real-time order: an append acknowledged before another was sent has
/// the smaller sequence number.
pub fn check_real_time_order(spans: &[(Instant, Instant, u64)]) {
    let mut by_end: Vec<&(Instant, Instant, u64)> = spans.iter().collect();
    by_end.sort_by_key(|s| s.1);
    let mut prefix_max = Vec::with_capacity(by_end.len());
    let mut m = 0u64;
    for s in &by_end {
        m = m.max(s.2);
        prefix_max.push(m);
    }
    for (sent, _, seq) in spans {
        let before = by_end.partition_point(|s| s.1 < *sent);
        if before > 0 {
            assert!(
                prefix_max[before - 1] < *seq,
                "seq {seq} was sent after seq {} was acknowledged",
                prefix_max[before - 1]
            );
        }
    }
}

/// The journal as node `id` holds it, read through that node.
pub fn journal_of(c: &Cluster, id: u64) -> Vec<(u64, Vec<u8>)> {
    c.client(id, Duration::from_secs(10))
        .all()
        .unwrap_or_else(|e| panic!("read the journal from node {id}: {e}\n{}", c.logs()))
}

pub fn check_journals(c: &Cluster, ids: &[u64], o: &Outcomes) {
    let journals: Vec<Vec<(u64, Vec<u8>)>> = ids.iter().map(|&id| journal_of(c, id)).collect();
    for (i, j) in journals.iter().enumerate().skip(1) {
        assert!(
            j == &journals[0],
            "node {} and node {} disagree ({} vs {} entries)",
            ids[0],
            ids[i],
            journals[0].len(),
            j.len()
        );
    }
    let journal = &journals[0];
    for (i, (seq, _)) in journal.iter().enumerate() {
        assert_eq!(
            *seq, i as u64,
            "sequence numbers must start at 0 without gaps"
        );
    }
    let by_seq: HashMap<u64, &[u8]> = journal.iter().map(|(s, d)| (*s, d.as_slice())).collect();
    for (seq, payload) in &o.acked {
        assert_eq!(
            by_seq.get(seq).copied(),
            Some(payload.as_bytes()),
            "acknowledged {payload} at seq {seq} is missing or different"
        );
    }
    let mut seen = HashSet::new();
    for (_, d) in journal {
        assert!(
            seen.insert(d.clone()),
            "duplicate entry {:?}",
            String::from_utf8_lossy(d)
        );
    }
    for p in &o.failed {
        assert!(
            !seen.contains(p.as_bytes()),
            "{p} was reported failed but committed"
        );
    }
}
