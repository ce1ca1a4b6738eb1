//! Snapshots, ReadIndex, bootstrap and membership changes.

use super::{cluster, cluster_with, nth_after, val};
use crate::journal::raft::*;

#[test]
fn snapshot_install() {
    let mut c = cluster_with(3, 31, |o| {
        o.compact_every = 10;
        o.raft.snapshot_chunk_bytes = 64;
    });
    for v in 0..5 {
        c.one(val(v), 3, true);
    }
    let leader = c.check_one_leader();
    let lagging = nth_after(leader, 1, 3);
    c.disconnect(lagging);
    for v in 10..60 {
        c.one(val(v), 2, true);
    }
    let first = c.raft(leader).unwrap().first_index();
    let behind = c.raft(lagging).unwrap().last_index();
    // The leader's status shows who lags and by how much.
    let status = c.raft(leader).unwrap().status();
    assert_eq!((status.role, status.peers.len()), (Role::Leader, 2));
    let peer = status.peers.iter().find(|p| p.id == lagging).unwrap();
    assert!(
        peer.voter && peer.lag >= 50 && peer.match_index <= behind,
        "{peer:?}"
    );
    let other = status.peers.iter().find(|p| p.id != lagging).unwrap();
    assert_eq!((other.lag, other.state), (0, ReplicationState::Replicate));
    assert!(
        first > behind + 1,
        "the leader compacted what the follower lacks"
    );
    c.connect(lagging);
    let index = c.one(val(100), 3, true);
    assert!(c.app(lagging).applied >= index);
    assert!(
        c.stats.snapshot_chunks.get(&lagging).copied().unwrap_or(0) > 2,
        "a {} byte snapshot in 64 byte chunks takes several chunks",
        c.raft(leader).unwrap().snapshot_meta().index
    );
    assert_eq!(c.app(lagging).normal, c.app(leader).normal);
    // The installed snapshot survives a restart of the follower.
    c.restart(lagging);
    assert!(c.nodes[&lagging].disk.snapshot.is_some());
    assert!(c.raft(lagging).unwrap().snapshot_meta().index > behind);
    c.one(val(101), 3, true);
    assert_eq!(c.app(lagging).normal, c.app(leader).normal);
}

/// A leader cut off in a minority must not answer reads (its commit index
/// may be stale: the majority elects a new leader and commits); reads on
/// the majority side see the new write. The cluster also checks every
/// answered read against every write acknowledged before it began.
#[test]
fn read_index_linearizable() {
    for check_quorum in [true, false] {
        let n = 5;
        let mut c = cluster_with(n, 32, |o| o.raft.check_quorum = check_quorum);
        c.one(val(1), 5, true);
        let old = c.check_one_leader();
        let buddy = nth_after(old, 1, n);
        let majority: Vec<u64> = (2..=4).map(|k| nth_after(old, k, n)).collect();
        let rid = c.read(old);
        c.run_for(100);
        assert!(
            matches!(c.read_results.get(&rid), Some(Ok(_))),
            "healthy leader reads"
        );
        c.partition(&[vec![old, buddy], majority.clone()]);
        // The majority moves on and commits a write.
        let write = c.one(val(2), 3, true);
        let new = c.check_one_leader();
        assert!(majority.contains(&new));
        // Reads on the minority side fail; none returns a stale index.
        let stale_leader = c.read(old);
        let stale_follower = c.read(buddy);
        let fresh_follower = c.read(majority.iter().copied().find(|&id| id != new).unwrap());
        let fresh_leader = c.read(new);
        c.run_for(3_000);
        for rid in [stale_leader, stale_follower] {
            let r = c.read_results.get(&rid);
            assert!(matches!(r, Some(Err(_))), "minority read {rid}: {r:?}");
        }
        for rid in [fresh_follower, fresh_leader] {
            match c.read_results.get(&rid) {
                Some(Ok(index)) => assert!(*index >= write),
                other => panic!("majority read {rid}: {other:?}"),
            }
        }
        c.heal();
        c.one(val(3), 5, true);
        assert!(c.pending_reads().is_empty());
    }
}

/// Reads on a new leader wait for its first commit, then succeed.
#[test]
fn read_index_waits_for_leader_commit() {
    let mut c = cluster(3, 33);
    let leader = c.check_one_leader();
    c.one(val(1), 3, true);
    c.crash(leader);
    // Ask the next leader the moment it is elected.
    let mut new = None;
    for _ in 0..2_000 {
        c.run_for(1);
        if let Some(l) = c.newest_leader() {
            new = Some(l);
            break;
        }
    }
    let new = new.expect("a new leader");
    let raft = c.raft(new).unwrap();
    assert!(
        raft.term_at(raft.commit_index()) != Some(raft.term()),
        "not committed yet"
    );
    let rid = c.read(new);
    assert!(
        !c.read_results.contains_key(&rid),
        "must wait for the no-op to commit"
    );
    c.run_for(200);
    assert!(matches!(c.read_results.get(&rid), Some(Ok(_))));
}

#[test]
fn bootstrap_refuses_existing_state() {
    let cfg = RaftConfig::new(1);
    let m = Membership::new([1], []);
    // A blank node bootstraps once.
    let mut node = RaftNode::new(cfg.clone(), Restored::default()).unwrap();
    node.bootstrap(m.clone()).unwrap();
    assert_eq!(node.last_index(), 1);
    assert_eq!(node.membership(), &m);
    let again = node.bootstrap(m.clone()).unwrap_err();
    assert!(matches!(
        again,
        BootstrapError::AlreadyInitialized {
            term: 1,
            last_index: 1
        }
    ));
    assert!(again.to_string().contains("refusing to bootstrap"));
    // Any restored state refuses: a term, a log, a snapshot.
    let term_only = Restored {
        hard_state: HardState {
            term: 3,
            vote: None,
            commit: 0,
        },
        ..Restored::default()
    };
    let entry = Entry {
        index: 1,
        term: 1,
        kind: EntryKind::Normal,
        data: vec![],
    };
    let with_log = Restored {
        hard_state: HardState {
            term: 1,
            vote: None,
            commit: 0,
        },
        entries: vec![entry],
        ..Restored::default()
    };
    let meta = SnapshotMeta {
        index: 5,
        term: 2,
        membership: Membership::new([1, 2, 3], []),
    };
    let with_snapshot = Restored {
        hard_state: HardState {
            term: 2,
            vote: None,
            commit: 5,
        },
        snapshot: Some((meta, vec![1, 2, 3])),
        ..Restored::default()
    };
    for restored in [term_only, with_log, with_snapshot] {
        let mut node = RaftNode::new(cfg.clone(), restored).unwrap();
        let before = node.hard_state();
        assert!(node.bootstrap(m.clone()).is_err());
        assert_eq!(
            node.hard_state(),
            before,
            "a refused bootstrap changes nothing"
        );
        assert!(!node.has_ready());
    }
    // The membership must make sense and include this node as a voter.
    let mut node = RaftNode::new(cfg.clone(), Restored::default()).unwrap();
    let without_me = node.bootstrap(Membership::new([2, 3], [])).unwrap_err();
    assert!(matches!(without_me, BootstrapError::InvalidMembership(_)));
    let overlap = node.bootstrap(Membership::new([1, 2], [2])).unwrap_err();
    assert!(matches!(overlap, BootstrapError::InvalidMembership(_)));
    assert_eq!(node.last_index(), 0);
}

/// The real deployment path: node 1 bootstraps alone, leads, then grows
/// the cluster one learner and one promotion at a time.
#[test]
fn bootstrap_single_node_then_grow() {
    let mut c = cluster_with(3, 34, |o| {
        o.voters = 1;
        o.seeded = false;
    });
    c.run_for(1_000);
    assert_eq!(c.newest_leader(), Some(1));
    c.one(val(1), 1, false);
    for id in [2, 3] {
        let mut m = c.raft(1).unwrap().membership().clone();
        m.learners.insert(id);
        propose_membership(&mut c, 1, m.clone()).unwrap();
        c.run_for(300);
        m.learners.remove(&id);
        m.voters.insert(id);
        propose_membership(&mut c, 1, m).unwrap();
        c.run_for(300);
    }
    let full = Membership::new([1, 2, 3], []);
    for id in 1..=3 {
        assert_eq!(c.raft(id).unwrap().membership(), &full);
    }
    c.one(val(2), 3, false);
    // Node 1 can now fail: the others elect a leader.
    c.crash(1);
    c.one(val(3), 2, true);
}

fn propose_membership(
    c: &mut super::super::sim::Cluster,
    leader: NodeId,
    m: Membership,
) -> Result<u64, ProposeError> {
    let now = c.node_now(leader);
    let r = c.raft_mut(leader).unwrap().propose_membership(now, m);
    c.process_ready(leader);
    r
}

#[test]
fn membership_single_change() {
    let mut c = cluster_with(5, 35, |o| o.voters = 3);
    let leader = c.check_one_leader();
    c.one(val(1), 3, false);
    // One change at a time.
    let add4 = Membership::new([1, 2, 3], [4]);
    propose_membership(&mut c, leader, add4.clone()).unwrap();
    let second = propose_membership(&mut c, leader, Membership::new([1, 2, 3], [4, 5]));
    assert_eq!(second, Err(ProposeError::MembershipChangePending));
    c.run_for(300);
    // Never two voters at once, never an empty or overlapping membership.
    for bad in [
        Membership::new([1, 2, 3, 4, 5], []),
        Membership::new([1, 4, 5], []),
        Membership::new([1, 2, 3], [3, 4]),
        Membership::new([], [1, 2, 3]),
        add4.clone(),
    ] {
        let r = propose_membership(&mut c, leader, bad.clone());
        assert!(
            matches!(r, Err(ProposeError::InvalidMembership(_))),
            "{bad:?}: {r:?}"
        );
    }
    // Followers cannot change membership.
    let follower = nth_after(leader, 1, 3);
    let r = propose_membership(&mut c, follower, Membership::new([1, 2, 3, 4], []));
    assert_eq!(
        r,
        Err(ProposeError::NotLeader {
            leader: Some(leader)
        })
    );
    // Promote 4, remove a follower: the cluster keeps committing.
    propose_membership(&mut c, leader, Membership::new([1, 2, 3, 4], [])).unwrap();
    c.run_for(300);
    let removed = nth_after(leader, 2, 3);
    let mut m = Membership::new([1, 2, 3, 4], []);
    m.voters.remove(&removed);
    propose_membership(&mut c, leader, m.clone()).unwrap();
    c.run_for(300);
    let index = c.one(val(2), 3, false);
    for id in m.voters.iter() {
        assert_eq!(c.raft(*id).unwrap().membership(), &m);
        assert!(c.app(*id).applied >= index);
    }
    c.run_for(1_000);
    assert!(
        c.app(removed).applied < index,
        "a removed node hears no more"
    );
    assert!(
        c.newest_leader() == Some(leader),
        "the removed node does not disrupt"
    );
    // The leader removes itself: it steps down once that commits.
    let mut without_leader = m.clone();
    without_leader.voters.remove(&leader);
    propose_membership(&mut c, leader, without_leader.clone()).unwrap();
    c.run_for(2_000);
    let new = c.newest_leader().expect("a new leader");
    assert_ne!(new, leader);
    assert!(!c.raft(leader).unwrap().is_leader());
    assert_eq!(c.raft(new).unwrap().membership(), &without_leader);
    c.one(val(3), without_leader.voters.len(), true);
}

/// A single voter commits its own entries, but only once they are durable.
#[test]
fn single_node_commits_after_advance() {
    let mut node = RaftNode::new(RaftConfig::new(1), Restored::default()).unwrap();
    node.bootstrap(Membership::new([1], [])).unwrap();
    let mut now = 0;
    while !node.is_leader() {
        now = node.next_deadline_ms().unwrap().max(now);
        node.tick(now);
        drain(&mut node, now);
    }
    let index = node.propose(now, b"x".to_vec()).unwrap();
    let rd = node.ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(
        rd.committed.is_empty(),
        "not committed before it is durable"
    );
    assert_eq!(node.commit_index(), index - 1);
    node.advance(now);
    assert_eq!(node.commit_index(), index);
    let rd = node.ready();
    assert_eq!(
        rd.committed.last().map(|e| e.data.clone()),
        Some(b"x".to_vec())
    );
    assert_eq!(rd.hard_state.map(|h| h.commit), Some(index));
    node.advance(now);
    assert_eq!(node.applied(), index);
    assert!(!node.has_ready());
    // Reads on a single voter need no round trip.
    node.read_index(now, 7);
    let rd = node.ready();
    assert_eq!(
        rd.read_states,
        vec![ReadState {
            request_id: 7,
            index
        }]
    );
    node.advance(now);
    // Compaction keeps the snapshot and drops the log.
    let meta = node.compact(index, b"state".to_vec()).unwrap();
    assert_eq!((meta.index, node.first_index()), (index, index + 1));
    assert_eq!(
        node.compact(index, vec![]),
        Err(CompactError::AlreadyCompacted {
            index,
            snapshot_index: index
        })
    );
    assert!(matches!(
        node.compact(index + 5, vec![]),
        Err(CompactError::NotApplied { .. })
    ));
}

fn drain(node: &mut RaftNode, now: u64) {
    while node.has_ready() {
        let _ = node.ready();
        node.advance(now);
    }
}

#[test]
fn restore_rejects_inconsistent_state() {
    let e = |index, term| Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: vec![],
    };
    let hs = HardState {
        term: 5,
        vote: None,
        commit: 0,
    };
    let bad_logs = [
        vec![e(2, 1)],
        vec![e(1, 1), e(3, 1)],
        vec![e(1, 2), e(2, 1)],
        vec![e(1, 0)],
        vec![Entry {
            index: 1,
            term: 1,
            kind: EntryKind::Membership,
            data: vec![1],
        }],
    ];
    for entries in bad_logs {
        let restored = Restored {
            hard_state: hs,
            entries,
            ..Restored::default()
        };
        assert!(RaftNode::new(RaftConfig::new(1), restored).is_err());
    }
    let future = Restored {
        hard_state: HardState {
            term: 1,
            vote: None,
            commit: 0,
        },
        entries: vec![e(1, 2)],
        ..Restored::default()
    };
    assert!(
        RaftNode::new(RaftConfig::new(1), future).is_err(),
        "log term above the term"
    );
    // Commit beyond the log is clamped, not trusted.
    let restored = Restored {
        hard_state: HardState {
            term: 5,
            vote: None,
            commit: 9,
        },
        entries: vec![e(1, 1)],
        ..Restored::default()
    };
    assert_eq!(
        RaftNode::new(RaftConfig::new(1), restored)
            .unwrap()
            .commit_index(),
        1
    );
    let mut bad_cfg = RaftConfig::new(1);
    bad_cfg.election_timeout_max_ms = bad_cfg.election_timeout_min_ms;
    assert!(matches!(
        RaftNode::new(bad_cfg, Restored::default()),
        Err(InitError::Config(_))
    ));
    assert!(RaftNode::new(RaftConfig::new(0), Restored::default()).is_err());
}
