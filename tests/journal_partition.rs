//! Partition tests of `pact-journal` through fault-injecting TCP proxies
//! on every peer link (no root, no `tc netem` needed): the minority side
//! neither serves reads nor acknowledges writes, the majority goes on,
//! and after healing every node holds the same journal.

#[path = "journal_support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::checks::{check_journals, check_real_time_order, readers, writers};
use support::{Cluster, Options};

fn proxied() -> Options {
    Options {
        proxies: true,
        request_timeout_ms: 2000,
        ..Options::default()
    }
}

#[test]
fn journal_isolated_leader_serves_nothing_and_the_majority_goes_on() {
    let c = Cluster::start("part-leader", proxied());
    let old = c.wait_leader(&[1, 2, 3], Duration::from_secs(10));
    let mut any = c.any_client(Duration::from_secs(5));
    for i in 0..3 {
        assert_eq!(any.append(format!("before-{i}").as_bytes()).unwrap(), i);
    }
    let majority: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != old).collect();
    c.partition(&[old]);

    // A write on the isolated leader is never acknowledged.
    let mut minority = c.client(old, Duration::from_secs(4));
    let started = Instant::now();
    let e = minority.append(b"minority write").unwrap_err();
    assert_eq!(e.code, 5, "{e}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "answered too fast: {e}"
    );

    // The majority elects a leader and commits.
    let new = c.wait_leader(&majority, Duration::from_secs(10));
    assert_ne!(new, old);
    let mut maj = c.client(new, Duration::from_secs(5));
    assert_eq!(maj.append(b"majority write").unwrap(), 3);

    // The old leader must not serve a read: it would miss "majority write".
    let mut reader = c.client(old, Duration::from_secs(2));
    match reader.get(3) {
        Err(e) => assert_eq!(e.code, 5, "{e}"),
        Ok(d) => panic!(
            "the isolated node served a read: {:?}",
            String::from_utf8_lossy(&d)
        ),
    }
    // And nothing it holds is served either.
    assert!(reader.get(0).is_err(), "isolated node served a stale read");

    c.heal();
    c.wait_leader(&[1, 2, 3], Duration::from_secs(10));
    c.wait_converged(&[1, 2, 3], 1, Duration::from_secs(15));
    let journals: Vec<Vec<(u64, Vec<u8>)>> = [1, 2, 3]
        .iter()
        .map(|&id| c.client(id, Duration::from_secs(5)).all().unwrap())
        .collect();
    assert_eq!(journals[0], journals[1]);
    assert_eq!(journals[0], journals[2]);
    let datas: Vec<&[u8]> = journals[0].iter().map(|(_, d)| d.as_slice()).collect();
    assert_eq!(
        datas,
        [
            &b"before-0"[..],
            b"before-1",
            b"before-2",
            b"majority write"
        ],
        "the minority write must have been discarded"
    );
}

#[test]
fn journal_isolated_follower_refuses_reads_until_healed() {
    let c = Cluster::start("part-follower", proxied());
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10));
    let follower = if leader == 3 { 2 } else { 3 };
    let mut writer = c.client(leader, Duration::from_secs(5));
    assert_eq!(writer.append(b"one").unwrap(), 0);
    c.wait_converged(&[1, 2, 3], 3, Duration::from_secs(10));
    c.partition(&[follower]);
    assert_eq!(writer.append(b"two").unwrap(), 1);
    // The follower has "one" locally but cannot confirm it is current.
    let mut reader = c.client(follower, Duration::from_millis(1500));
    assert!(reader.get(0).is_err(), "minority follower served a read");
    // It never takes a write itself: it redirects (to a leader it may no
    // longer reach) or says there is no leader.
    let mut s = TcpStream::connect(c.node(follower).client).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"append +4\nnope").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert!(
        line.starts_with("err 5 not-leader") || line.starts_with("err 5 no-leader"),
        "minority follower answered {line}"
    );
    c.heal();
    let mut reader = c.client(follower, Duration::from_secs(10));
    assert_eq!(reader.get(1).unwrap(), b"two");
    c.wait_converged(&[1, 2, 3], 4, Duration::from_secs(10));
    let all = c.client(follower, Duration::from_secs(5)).all().unwrap();
    let datas: Vec<&[u8]> = all.iter().map(|(_, d)| d.as_slice()).collect();
    assert_eq!(datas, [&b"one"[..], b"two"]);
}

/// A short Jepsen-style run: writers and readers on every node while a
/// nemesis partitions, heals, kills and restarts nodes at random; then
/// everything heals and the history is checked.
#[test]
fn journal_nemesis_kills_and_partitions_keep_the_journal_consistent() {
    let mut c = Cluster::start("nemesis", proxied());
    c.wait_leader(&[1, 2, 3], Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let (out, mut handles) = writers(&c, 3, stop.clone());
    handles.extend(readers(&c, out.clone(), stop.clone()));
    let seed: u64 = std::env::var("PACT_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64);
    eprintln!("nemesis seed {seed} (replay with PACT_NEMESIS_SEED={seed})");
    let mut rng = pact::util::rng::Rng::new(seed);
    let mut down: Option<u64> = None;
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let victim = rng.range(1, 4);
        match rng.range(0, 4) {
            0 => {
                c.heal();
                c.partition(&[victim]);
                eprintln!("nemesis: isolate node {victim}");
            }
            1 => {
                c.heal();
                eprintln!("nemesis: heal");
            }
            2 if down.is_none() => {
                c.kill9(victim);
                down = Some(victim);
                eprintln!("nemesis: kill -9 node {victim}");
            }
            _ => {
                if let Some(d) = down.take() {
                    c.spawn(d, false);
                    eprintln!("nemesis: restart node {d}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.range(300, 1500)));
    }
    c.heal();
    if let Some(d) = down.take() {
        c.spawn(d, false);
    }
    // Let the writers see the healed cluster for a moment.
    c.wait_leader(&[1, 2, 3], Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let o = out.lock().unwrap();
    eprintln!(
        "acked {}, indeterminate {}, failed {}, reads checked {} refused {}",
        o.acked.len(),
        o.maybe.len(),
        o.failed.len(),
        o.reads_ok,
        o.reads_refused
    );
    assert!(!o.acked.is_empty());
    c.wait_converged(&[1, 2, 3], 1, Duration::from_secs(20));
    check_journals(&c, &[1, 2, 3], &o);
    check_real_time_order(&o.spans);
}
