//! Log agreement: commits with and without failures, rejoining leaders,
//! fast backtracking over long divergent logs.

use std::collections::BTreeMap;

use super::super::sim::Cluster;
use super::{cluster, nth_after, val};

#[test]
fn basic_agreement() {
    let mut c = cluster(3, 11);
    c.check_one_leader();
    let mut last = 0;
    for v in 1..=3 {
        let index = c.one(val(v), 3, false);
        assert!(index > last, "indices must grow");
        last = index;
    }
}

#[test]
fn fail_agree() {
    let n = 3;
    let mut c = cluster(n, 12);
    c.one(val(101), n as usize, false);
    let leader = c.check_one_leader();
    c.disconnect(nth_after(leader, 1, n));
    // Two of three still agree.
    c.one(val(102), 2, false);
    c.one(val(103), 2, false);
    c.run_for(1_000);
    c.one(val(104), 2, false);
    c.one(val(105), 2, false);
    // The follower rejoins and catches up.
    c.connect(nth_after(leader, 1, n));
    c.one(val(106), 3, true);
    c.run_for(1_000);
    c.one(val(107), 3, true);
}

#[test]
fn fail_no_agree() {
    let n = 5;
    let mut c = cluster(n, 13);
    c.one(val(10), 5, false);
    let leader = c.check_one_leader();
    for k in 1..=3 {
        c.disconnect(nth_after(leader, k, n));
    }
    let index = c.propose(leader, val(20)).expect("the leader accepts");
    c.run_for(2_000);
    let (count, _) = c.n_committed(index);
    assert_eq!(count, 0, "committed without a majority");
    for k in 1..=3 {
        c.connect(nth_after(leader, k, n));
    }
    // The uncommitted entry may survive or not; the cluster goes on.
    c.check_one_leader();
    c.one(val(1000), 5, true);
}

#[test]
fn concurrent_starts() {
    let mut c = cluster(3, 14);
    let leader = c.check_one_leader();
    let term = c.raft(leader).unwrap().term();
    let mut indices = Vec::new();
    for v in 0..5 {
        indices.push(c.propose(leader, val(100 + v)).expect("leader"));
    }
    c.run_for(500);
    assert_eq!(
        c.raft(leader).unwrap().term(),
        term,
        "no election should occur"
    );
    for (v, index) in indices.into_iter().enumerate() {
        let (count, data) = c.n_committed(index);
        assert_eq!(count, 3);
        assert_eq!(data, Some(val(100 + v as u64)));
    }
}

#[test]
fn rejoin() {
    let n = 3;
    let mut c = cluster(n, 15);
    c.one(val(101), 3, true);
    // The leader is partitioned and gets proposals that never commit.
    let leader1 = c.check_one_leader();
    c.disconnect(leader1);
    for v in 102..=104 {
        let _ = c.propose(leader1, val(v));
    }
    // A new leader commits the index of one of them with other data.
    c.one(val(103), 2, true);
    let leader2 = c.check_one_leader();
    c.disconnect(leader2);
    // The old leader comes back and loses its uncommitted entries.
    c.connect(leader1);
    c.one(val(104), 2, true);
    c.connect(leader2);
    c.one(val(105), 3, true);
}

/// Followers with long divergent logs are caught up in a few round trips
/// thanks to the conflict hint, not one round trip per entry.
#[test]
fn backup() {
    let n = 5;
    let mut c = cluster(n, 16);
    c.one(val(0), 5, true);
    // Leader and one follower in a minority: 60 entries that never commit.
    let leader1 = c.check_one_leader();
    let follower1 = nth_after(leader1, 1, n);
    for k in 2..=4 {
        c.disconnect(nth_after(leader1, k, n));
    }
    for v in 0..60 {
        let _ = c.propose(leader1, val(1_000 + v));
    }
    c.run_for(500);
    // The majority side commits 60 other entries.
    c.disconnect(leader1);
    c.disconnect(follower1);
    for k in 2..=4 {
        c.connect(nth_after(leader1, k, n));
    }
    for v in 0..60 {
        c.one(val(2_000 + v), 3, true);
    }
    // Its leader and one follower in a minority again: 60 more that fail.
    let leader2 = c.check_one_leader();
    let other = (2..=4)
        .map(|k| nth_after(leader1, k, n))
        .find(|&id| id != leader2)
        .unwrap();
    c.disconnect(other);
    for v in 0..60 {
        let _ = c.propose(leader2, val(3_000 + v));
    }
    c.run_for(500);
    // The first minority comes back with `other`: they must agree.
    for id in 1..=n {
        c.disconnect(id);
    }
    c.connect(leader1);
    c.connect(follower1);
    c.connect(other);
    // They really diverge: 60 entries of an old term past the commit point.
    for id in [leader1, follower1] {
        let r = c.raft(id).unwrap();
        assert!(
            r.last_index() >= r.commit_index() + 60,
            "node {id} lacks the divergent tail"
        );
    }
    let before = c.stats.rejects_sent.clone();
    for v in 0..60 {
        c.one(val(4_000 + v), 3, true);
    }
    // 60 divergent entries: a per-entry backtrack would reject ~60 times.
    for id in [leader1, follower1] {
        assert!(
            rejects_since(&c, &before, id) <= 3,
            "node {id} needed {} rejections",
            rejects_since(&c, &before, id)
        );
    }
    // Everyone together.
    for id in 1..=n {
        c.connect(id);
    }
    let before = c.stats.rejects_sent.clone();
    c.one(val(5_000), 5, true);
    c.run_for(1_000);
    for id in 1..=n {
        assert!(
            rejects_since(&c, &before, id) <= 4,
            "node {id} needed {} rejections",
            rejects_since(&c, &before, id)
        );
    }
}

/// AppendEntries rejections `id` sent since the `before` snapshot of the counters.
fn rejects_since(c: &Cluster, before: &BTreeMap<u64, u64>, id: u64) -> u64 {
    let now = c.stats.rejects_sent.get(&id).copied().unwrap_or(0);
    now - before.get(&id).copied().unwrap_or(0)
}
