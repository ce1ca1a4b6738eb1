//! Crashes and restarts from storage, Figure 8, churn on a bad network.
//! A crash loses everything a Ready had not persisted.

use super::{cluster, cluster_with, nth_after, unreliable, val};
use crate::journal::raft::NodeId;

#[test]
fn persist1() {
    let n = 3;
    let mut c = cluster(n, 21);
    c.one(val(11), 3, true);
    // Everyone crashes and restarts.
    for id in 1..=n {
        c.restart(id);
    }
    c.one(val(12), 3, true);
    let leader1 = c.check_one_leader();
    c.restart(leader1);
    c.one(val(13), 3, true);
    let leader2 = c.check_one_leader();
    c.disconnect(leader2);
    c.one(val(14), 2, true);
    c.restart(leader2);
    c.connect(leader2);
    c.one(val(15), 3, true);
    let leader3 = c.check_one_leader();
    let i3 = nth_after(leader3, 1, n);
    c.disconnect(i3);
    c.one(val(16), 2, true);
    c.restart(i3);
    c.connect(i3);
    c.one(val(17), 3, true);
}

#[test]
fn persist2() {
    let n = 5;
    let mut c = cluster(n, 22);
    let mut index = 1;
    for _ in 0..5 {
        c.one(val(10 + index), 5, true);
        index += 1;
        let leader1 = c.check_one_leader();
        c.disconnect(nth_after(leader1, 1, n));
        c.disconnect(nth_after(leader1, 2, n));
        c.one(val(10 + index), 3, true);
        index += 1;
        c.disconnect(leader1);
        c.disconnect(nth_after(leader1, 3, n));
        c.disconnect(nth_after(leader1, 4, n));
        c.restart(nth_after(leader1, 1, n));
        c.restart(nth_after(leader1, 2, n));
        c.connect(nth_after(leader1, 1, n));
        c.connect(nth_after(leader1, 2, n));
        c.run_for(1_000);
        c.restart(nth_after(leader1, 3, n));
        c.connect(nth_after(leader1, 3, n));
        c.one(val(10 + index), 3, true);
        index += 1;
        c.connect(nth_after(leader1, 4, n));
        c.connect(leader1);
    }
    c.one(val(1000), 5, true);
}

#[test]
fn persist3() {
    let n = 3;
    let mut c = cluster(n, 23);
    c.one(val(101), 3, false);
    let leader = c.check_one_leader();
    c.disconnect(nth_after(leader, 2, n));
    c.one(val(102), 2, false);
    c.crash(leader);
    c.crash(nth_after(leader, 1, n));
    c.connect(nth_after(leader, 2, n));
    c.restart(leader);
    c.one(val(103), 2, true);
    c.restart(nth_after(leader, 1, n));
    c.one(val(104), 3, true);
}

/// Figure 8 of the Raft paper, randomized: leaders crash right after
/// proposing, so entries of old terms sit on a minority while others get
/// elected. A leader must never commit an old-term entry by counting
/// replicas; the checker would see two nodes apply different entries.
#[test]
fn figure8() {
    let n = 5;
    let mut c = cluster(n, 24);
    c.one(val(0), 1, true);
    let mut up = n;
    for iter in 0..1_000 {
        let mut leader = None;
        for id in 1..=n {
            if c.is_live(id) && c.propose(id, val(10_000 + iter)).is_ok() {
                leader = Some(id);
            }
        }
        let pause = if c.rng.range(0, 1000) < 100 {
            c.rng.range(0, 500)
        } else {
            c.rng.range(0, 13)
        };
        c.run_for(pause);
        if let Some(l) = leader {
            c.crash(l);
            up -= 1;
        }
        if up < 3 {
            let id = c.rng.range(1, n + 1);
            if !c.is_live(id) {
                c.restart(id);
                up += 1;
            }
        }
    }
    for id in 1..=n {
        if !c.is_live(id) {
            c.restart(id);
        }
    }
    c.one(val(99_999), n as usize, true);
}

/// Figure 8 again over a lossy network with long reorderings, with
/// disconnections instead of crashes.
#[test]
fn figure8_unreliable() {
    let n = 5;
    let mut c = cluster_with(n, 25, |o| o.faults = unreliable());
    c.one(val(0), 1, true);
    let mut connected = n;
    for iter in 0..1_000 {
        if iter == 200 {
            c.net.faults.long_delay = 0.3;
            c.net.faults.long_delay_max_ms = 2_000;
        }
        let mut leader = None;
        for id in 1..=n {
            if c.propose(id, val(10_000 + iter)).is_ok() && c.is_connected(id) {
                leader = Some(id);
            }
        }
        let pause = if c.rng.range(0, 1000) < 100 {
            c.rng.range(0, 500)
        } else {
            c.rng.range(0, 13)
        };
        c.run_for(pause);
        if let Some(l) = leader {
            if c.rng.range(0, 1000) < 500 {
                c.disconnect(l);
                connected -= 1;
            }
        }
        if connected < 3 {
            let id = c.rng.range(1, n + 1);
            if !c.is_connected(id) {
                c.connect(id);
                connected += 1;
            }
        }
    }
    c.net.faults = super::super::sim::NetFaults::reliable();
    for id in 1..=n {
        c.connect(id);
    }
    c.one(val(99_999), n as usize, true);
}

/// Clients writing and reading all the time while servers are randomly
/// disconnected, reconnected, crashed and restarted on a lossy network
/// (6.824's churn test); at the end the cluster heals and every
/// acknowledged write must be on every node (`Cluster::heal_and_check`).
#[test]
fn unreliable_churn() {
    // How much gets through depends a lot on the schedule: judge liveness
    // over several seeds, safety (heal_and_check) on each.
    let (mut acked, mut reads) = (0, 0);
    for seed in 1..=16 {
        let (a, r) = churn(seed);
        acked += a;
        reads += r;
    }
    assert!(
        acked > 16 * 40,
        "too little got through: {acked} in 16 runs"
    );
    assert!(
        reads > 16 * 10,
        "too few reads succeeded: {reads} in 16 runs"
    );
}

/// One churn run; returns the acknowledged writes and successful reads.
fn churn(seed: u64) -> (usize, u64) {
    let n = 5;
    let mut c = cluster_with(n, seed, |o| {
        o.faults = unreliable();
        o.crash_in_ready = 0.005;
        o.compact_every = 25;
    });
    let mut v = 0;
    for _ in 0..30 {
        let pick = |c: &mut super::super::sim::Cluster| -> NodeId { c.rng.range(1, n + 1) };
        if c.rng.chance(0.2) {
            let id = pick(&mut c);
            c.disconnect(id);
        }
        if c.rng.chance(0.5) {
            let id = pick(&mut c);
            if !c.is_live(id) {
                c.restart(id);
            }
            c.connect(id);
        }
        if c.rng.chance(0.2) {
            let id = pick(&mut c);
            c.crash(id);
        }
        // 0.7 election timeouts of client traffic.
        let until = c.now + 350;
        while c.now < until {
            let pause = c.rng.range(1, 20);
            c.run_for(pause);
            let id = pick(&mut c);
            let at = if c.rng.chance(0.8) {
                c.newest_leader().unwrap_or(id)
            } else {
                id
            };
            v += 1;
            let _ = c.propose(at, val(v));
            if c.rng.chance(0.3) {
                c.read(id);
            }
        }
    }
    let acked = c.proposals.iter().filter(|p| p.acked).count();
    let reads = c.stats.reads_ok;
    c.heal_and_check();
    (acked, reads)
}

/// The rule behind Figure 8, at the node: a new leader must not commit an
/// entry of an older term just because a majority stores it; only its own
/// term's entries commit by counting (and take the older ones along).
#[test]
fn figure8_commit_rule() {
    use crate::journal::raft::message::{AppendResponse, Message, MessageBody, VoteResponse};
    use crate::journal::raft::*;
    let config = Membership::new([1, 2, 3, 4, 5], []);
    let entries = vec![
        Entry {
            index: 1,
            term: 1,
            kind: EntryKind::Membership,
            data: config.encode(),
        },
        Entry {
            index: 2,
            term: 2,
            kind: EntryKind::Normal,
            data: b"x".to_vec(),
        },
    ];
    let restored = Restored {
        hard_state: HardState {
            term: 3,
            vote: None,
            commit: 1,
        },
        entries,
        ..Restored::default()
    };
    let mut cfg = RaftConfig::new(1);
    cfg.max_entries_per_append = 1;
    let mut node = RaftNode::new(cfg, restored).unwrap();
    let drain = |node: &mut RaftNode, now| {
        while node.has_ready() {
            let _ = node.ready();
            node.advance(now);
        }
    };
    let mut now = 0;
    node.tick(now);
    now = node.next_deadline_ms().unwrap();
    node.tick(now);
    assert_eq!(node.role(), Role::PreCandidate);
    drain(&mut node, now);
    let grant = |from, term, pre: bool| Message {
        from,
        term,
        body: if pre {
            MessageBody::PreVoteResponse(VoteResponse { granted: true })
        } else {
            MessageBody::VoteResponse(VoteResponse { granted: true })
        },
    };
    node.step(now, grant(2, 4, true));
    node.step(now, grant(3, 4, true));
    assert_eq!((node.role(), node.term()), (Role::Candidate, 4));
    drain(&mut node, now);
    node.step(now, grant(2, 4, false));
    node.step(now, grant(3, 4, false));
    assert!(node.is_leader());
    drain(&mut node, now);
    assert_eq!(
        (node.last_index(), node.term_at(3)),
        (3, Some(4)),
        "no-op of term 4"
    );
    let ack = |from, match_index| Message {
        from,
        term: 4,
        body: MessageBody::AppendResponse(AppendResponse::Accepted { match_index }),
    };
    // Entry 2 (term 2) is now on three of five nodes: not committed.
    node.step(now, ack(2, 2));
    node.step(now, ack(3, 2));
    drain(&mut node, now);
    assert_eq!(
        node.commit_index(),
        1,
        "an old-term entry committed by counting replicas"
    );
    // The no-op (term 4) on a majority commits both.
    node.step(now, ack(2, 3));
    node.step(now, ack(3, 3));
    assert_eq!(node.commit_index(), 3);
}
