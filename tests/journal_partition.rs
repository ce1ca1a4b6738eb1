//! Partition tests of `pact-journal` through fault-injecting TCP proxies
//! on every peer link (no root, no `tc netem` needed): the minority side
//! neither serves reads nor acknowledges writes, the majority goes on,
//! and after healing every node holds the same journal.

#[path = "journal_support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

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
