//! Process tests of `pact-journal`: a real 3-node cluster on 127.0.0.1-3
//! (ports free at start), `kill -9` of the leader under load, restarts,
//! follower redirects, bootstrap refusal, inspect and recovery.

#[path = "journal_support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::checks::{check_journals, check_real_time_order, readers, writers, Outcomes};
use support::{Cluster, Options, JOURNAL};

#[test]
fn journal_leader_kill_under_load_loses_no_acknowledged_append() {
    let mut c = Cluster::start("kill", Options::default());
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let (out, mut handles) = writers(&c, 4, stop.clone());
    handles.extend(readers(&c, out.clone(), stop.clone()));
    std::thread::sleep(Duration::from_millis(1200));
    let before = out.lock().unwrap().acked.len();
    assert!(
        before > 0,
        "no append acknowledged before the kill\n{}",
        c.logs()
    );
    let killed_at = Instant::now();
    c.kill9(leader);
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != leader).collect();
    let new_leader = c.wait_leader(&others, Duration::from_secs(10));
    assert_ne!(new_leader, leader);
    // The survivors saw the leader's connections end (what shortens the
    // failover to about a heartbeat; timed by `make bench`).
    let noticed = others.iter().any(|&id| {
        std::fs::read_to_string(&c.nodes[id as usize - 1].log)
            .unwrap_or_default()
            .contains(&format!("the connection with leader {leader} ended"))
    });
    assert!(
        noticed,
        "no survivor noticed the lost connection\n{}",
        c.logs()
    );
    std::thread::sleep(Duration::from_millis(1500));
    c.spawn(leader, false);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let o = out.lock().unwrap();
    let resumed = o
        .ack_times
        .iter()
        .find(|t| **t > killed_at)
        .map(|t| t.duration_since(killed_at));
    eprintln!(
        "acked {} (before kill {before}), indeterminate {}, failed {}, first ack after kill {:?}, \
         reads checked {} refused {}",
        o.acked.len(),
        o.maybe.len(),
        o.failed.len(),
        resumed,
        o.reads_ok,
        o.reads_refused
    );
    assert!(o.reads_ok > 0, "no read succeeded");
    check_real_time_order(&o.spans);
    assert!(
        resumed.is_some_and(|d| d < Duration::from_secs(5)),
        "writes did not resume\n{}",
        c.logs()
    );
    c.wait_converged(&[1, 2, 3], 1, Duration::from_secs(15));
    check_journals(&c, &[1, 2, 3], &o);
}

#[test]
fn journal_follower_redirects_writes_to_the_leader() {
    let c = Cluster::start("redirect", Options::default());
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10));
    let follower = if leader == 1 { 2 } else { 1 };
    // Raw protocol: the follower names the leader's client address.
    let mut s = TcpStream::connect(c.node(follower).client).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"append +3\nabc").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let want = format!("leader_addr={}", c.node(leader).client);
    assert!(
        line.starts_with("err 5 not-leader") && line.contains(&want),
        "{line}"
    );
    // The client library (and so the CLI) follows it.
    let mut client = c.client(follower, Duration::from_secs(5));
    assert_eq!(client.append(b"via follower").unwrap(), 0);
    assert_eq!(
        client.connected_to(),
        Some(c.node(leader).client.to_string().as_str())
    );
    // Linearizable reads from the follower itself.
    let mut reader = c.client(follower, Duration::from_secs(5));
    assert_eq!(reader.get(0).unwrap(), b"via follower");
    let e = reader.get(1).unwrap_err();
    assert_eq!(e.code, 3, "{e}");
}

#[test]
fn journal_bootstrap_is_refused_with_state_and_inspect_and_recover_work() {
    let mut c = Cluster::start("boot", Options::default());
    c.wait_leader(&[1, 2, 3], Duration::from_secs(10));
    let mut client = c.any_client(Duration::from_secs(5));
    for i in 0..5 {
        assert_eq!(client.append(format!("e{i}").as_bytes()).unwrap(), i);
    }
    c.wait_converged(&[1, 2, 3], 7, Duration::from_secs(10));
    // A second process on a data dir in use is refused (it would vote twice).
    let out = Command::new(JOURNAL)
        .arg("--config")
        .arg(&c.node(1).config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("in use by another pact-journal"), "{err}");
    let out = Command::new(JOURNAL)
        .args(["recover", "--as-sole-member", "--data-dir"])
        .arg(&c.node(1).data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    c.kill9(1);
    // A second --bootstrap on a node with state: a clear refusal, exit 3.
    let out = Command::new(JOURNAL)
        .arg("--config")
        .arg(&c.node(1).config)
        .arg("--bootstrap")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("refusing to bootstrap"), "{err}");
    // inspect on the stopped node.
    let out = Command::new(JOURNAL)
        .args(["inspect", "--data-dir"])
        .arg(&c.node(1).data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in ["node=1", "last_seq=4", "voters=1,2,3", "journal_entries=5"] {
        assert!(text.contains(want), "inspect: {text}");
    }
    // Quorum loss: 2 and 3 gone for good; 1 becomes the sole voter.
    c.kill9(2);
    c.kill9(3);
    let out = Command::new(JOURNAL)
        .args(["recover", "--as-sole-member", "--data-dir"])
        .arg(&c.node(1).data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.spawn(1, false);
    c.wait_leader(&[1], Duration::from_secs(10));
    let mut client = c.client(1, Duration::from_secs(5));
    assert_eq!(client.append(b"after recovery").unwrap(), 5);
    assert_eq!(client.get(4).unwrap(), b"e4");
    let st = c.status(1).unwrap();
    assert_eq!(st.get("voters"), Some("1"));
}

#[test]
fn journal_lagging_follower_catches_up_from_a_snapshot() {
    let opts = Options {
        raft_extra: "snapshot_interval = 40".into(),
        ..Options::default()
    };
    let mut c = Cluster::start("snapshot", opts);
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10));
    let lagging = if leader == 3 { 2 } else { 3 };
    c.kill9(lagging);
    let mut client = c.client(leader, Duration::from_secs(5));
    for i in 0..150u64 {
        assert_eq!(client.append(format!("s{i}").as_bytes()).unwrap(), i);
    }
    // The leader compacted past everything the lagging node has.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c
        .status(leader)
        .and_then(|r| r.get("snapshot_index").and_then(|s| s.parse::<u64>().ok()))
        .unwrap_or(0)
        < 40
    {
        assert!(
            Instant::now() < deadline,
            "the leader never compacted\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.spawn(lagging, false);
    c.wait_converged(&[1, 2, 3], 150, Duration::from_secs(15));
    let o = Outcomes {
        acked: (0..150).map(|i| (i, format!("s{i}"))).collect(),
        ..Outcomes::default()
    };
    check_journals(&c, &[1, 2, 3], &o);
    // It goes on from there after a restart too.
    c.kill9(lagging);
    c.spawn(lagging, false);
    assert_eq!(client.append(b"after").unwrap(), 150);
    c.wait_converged(&[1, 2, 3], 151, Duration::from_secs(15));
    assert_eq!(
        c.client(lagging, Duration::from_secs(5)).get(150).unwrap(),
        b"after"
    );
}

#[test]
fn journal_learner_replicates_and_serves_reads_without_voting() {
    let opts = Options {
        nodes: 4,
        learners: 1,
        ..Options::default()
    };
    let mut c = Cluster::start("learner", opts);
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10));
    let mut client = c.client(leader, Duration::from_secs(5));
    assert_eq!(client.append(b"to the learner").unwrap(), 0);
    c.wait_converged(&[1, 2, 3, 4], 2, Duration::from_secs(10));
    let st = c.status(4).unwrap();
    assert_eq!(st.get("role"), Some("learner"), "{st:?}");
    assert_eq!(st.get("learners"), Some("4"));
    assert_eq!(
        c.client(4, Duration::from_secs(5)).get(0).unwrap(),
        b"to the learner"
    );
    // Losing one voter keeps the quorum; the learner never counts.
    let other = [1, 2, 3].into_iter().find(|&i| i != leader).unwrap();
    c.kill9(other);
    assert_eq!(client.append(b"still a quorum").unwrap(), 1);
    // Promote it to voter through the leader.
    let resp = c
        .any_client(Duration::from_secs(5))
        .write("member promote 4", None)
        .unwrap();
    assert!(resp.is_ok());
    let st = c.status(4).unwrap();
    assert!(st.get("voters").unwrap().contains('4'), "{st:?}");
}
