//! Leader election: timeouts, re-election, pre-vote, check-quorum, learners,
//! leadership transfer.

use super::{cluster, cluster_with, nth_after, val};
use crate::journal::raft::{Membership, MessageBody, Role};

#[test]
fn initial_election() {
    let mut c = cluster(3, 1);
    c.check_one_leader();
    let term1 = c.check_terms();
    assert!(term1 >= 1, "a term should have begun");
    // Nothing fails, so nothing should change.
    c.run_for(2_000);
    assert_eq!(c.check_terms(), term1, "term changed without failures");
    c.check_one_leader();
}

#[test]
fn re_election() {
    let n = 3;
    let mut c = cluster(n, 2);
    let leader1 = c.check_one_leader();
    // The leader disconnects: a new one is elected.
    c.disconnect(leader1);
    c.check_one_leader();
    // The old leader rejoins: it must not disturb the new one.
    c.connect(leader1);
    let leader2 = c.check_one_leader();
    // No quorum: no leader.
    c.disconnect(leader2);
    c.disconnect(nth_after(leader2, 1, n));
    c.run_for(2_000);
    c.check_no_leader();
    // A quorum again: a leader.
    c.connect(nth_after(leader2, 1, n));
    c.check_one_leader();
    c.connect(leader2);
    c.check_one_leader();
}

#[test]
fn many_elections() {
    let n = 7;
    let mut c = cluster(n, 3);
    c.check_one_leader();
    for _ in 0..10 {
        let picks: Vec<u64> = (0..3).map(|_| c.rng.range(1, n + 1)).collect();
        for &p in &picks {
            c.disconnect(p);
        }
        // Four or more of seven connected: a leader, or one is elected.
        c.check_one_leader();
        for &p in &picks {
            c.connect(p);
        }
    }
    c.check_one_leader();
}

/// A partitioned follower keeps running pre-votes, which never raise its
/// term; when it rejoins, the leader stays leader in the same term.
#[test]
fn prevote_rejoin() {
    let mut c = cluster(3, 4);
    let leader = c.check_one_leader();
    let term = c.check_terms();
    let follower = nth_after(leader, 1, 3);
    c.disconnect(follower);
    c.run_for(10_000);
    let isolated = c.raft(follower).unwrap();
    assert_eq!(
        isolated.term(),
        term,
        "pre-vote must not raise the isolated node's term"
    );
    assert!(
        c.stats
            .sent_by
            .get(&(follower, "PreVote"))
            .copied()
            .unwrap_or(0)
            > 5
    );
    assert_eq!(c.stats.sent_by.get(&(follower, "Vote")), None);
    // Rejoin just before its next pre-vote, so that the pre-vote reaches
    // peers (which are in touch with the leader and must ignore it).
    let deadline = c.raft(follower).unwrap().next_deadline_ms().unwrap();
    c.run_until(deadline - 1);
    c.connect(follower);
    c.run_for(3_000);
    let l = c.raft(leader).unwrap();
    assert!(l.is_leader(), "the healthy leader was deposed");
    assert_eq!(l.term(), term, "the leader's term moved");
    assert_eq!(c.raft(follower).unwrap().leader(), Some(leader));

    // Without pre-vote the same isolation inflates the term and the
    // rejoining node deposes the leader: the behaviour pre-vote prevents.
    let mut c = cluster_with(3, 4, |o| {
        o.raft.pre_vote = false;
        o.raft.check_quorum = false;
    });
    let leader = c.check_one_leader();
    let term = c.check_terms();
    let follower = nth_after(leader, 1, 3);
    c.disconnect(follower);
    c.run_for(10_000);
    assert!(c.raft(follower).unwrap().term() > term + 5);
    c.connect(follower);
    c.run_for(3_000);
    assert!(
        c.check_terms() > term + 5,
        "without pre-vote the cluster adopts the inflated term"
    );
}

/// A leader cut off from the quorum steps down by itself within about an
/// election timeout, although no message with a higher term reaches it.
#[test]
fn check_quorum_step_down() {
    let mut c = cluster(3, 5);
    let leader = c.check_one_leader();
    let term = c.raft(leader).unwrap().term();
    c.disconnect(leader);
    let timeout = c.opts.raft.election_timeout_min_ms;
    c.run_for(timeout * 2 + 50);
    let old = c.raft(leader).unwrap();
    assert!(!old.is_leader(), "an isolated leader must step down");
    assert!(matches!(old.role(), Role::Follower | Role::PreCandidate));
    assert_eq!(old.term(), term, "pre-vote keeps its term");
    // Read requests there fail instead of hanging.
    let rid = c.read(leader);
    c.run_for(10);
    assert!(c.read_results.get(&rid).is_some_and(|r| r.is_err()));

    // Without check-quorum the isolated leader believes it leads forever.
    let mut c = cluster_with(3, 5, |o| o.raft.check_quorum = false);
    let leader = c.check_one_leader();
    c.disconnect(leader);
    c.run_for(5_000);
    assert!(c.raft(leader).unwrap().is_leader());
}

/// Learners get the log but never campaign, and their votes never make a
/// leader: the learner answers vote requests (a node that merely believes
/// it is a learner may still be a voter of the committed membership), but
/// only the candidate's voters count.
#[test]
fn learner_never_votes() {
    let mut c = cluster_with(4, 6, |o| o.voters = 3);
    let leader = c.check_one_leader();
    let now = c.node_now(leader);
    let with_learner = Membership::new([1, 2, 3], [4]);
    c.raft_mut(leader)
        .unwrap()
        .propose_membership(now, with_learner.clone())
        .unwrap();
    c.process_ready(leader);
    let index = c.one(val(1), 4, false);
    assert_eq!(c.raft(4).unwrap().role(), Role::Learner);
    assert_eq!(c.raft(4).unwrap().membership(), &with_learner);
    assert!(c.app(4).applied >= index, "the learner receives the log");
    // Commits need two of the three voters: the learner does not count.
    let voters: Vec<u64> = (1..=3).filter(|&v| v != leader).collect();
    c.disconnect(voters[0]);
    c.disconnect(voters[1]);
    let stuck = c.propose(leader, val(2)).unwrap();
    c.run_for(3_000);
    assert!(c.app(4).applied < stuck, "leader + learner is not a quorum");
    assert!(
        c.raft(leader).is_none_or(|r| !r.is_leader()),
        "check-quorum"
    );
    // Leave one voter with the learner: no election succeeds, ever.
    c.connect(voters[0]);
    c.disconnect(leader);
    c.run_for(10_000);
    c.check_no_leader();
    for (who, kind) in c.stats.sent_by.keys() {
        let campaign = *kind == "PreVote" || *kind == "Vote";
        assert!(!(*who == 4 && campaign), "the learner campaigned");
    }
    assert_ne!(c.raft(4).unwrap().role(), Role::Candidate);
}

#[test]
fn leadership_transfer() {
    let mut c = cluster(3, 7);
    let leader = c.check_one_leader();
    c.one(val(1), 3, false);
    let target = nth_after(leader, 1, 3);
    let now = c.node_now(leader);
    c.raft_mut(leader)
        .unwrap()
        .transfer_leadership(now, target)
        .unwrap();
    c.process_ready(leader);
    assert!(
        c.propose(leader, val(2)).is_err(),
        "proposals are refused during a transfer"
    );
    c.run_for(200);
    assert_eq!(c.newest_leader(), Some(target));
    assert!(c.stats.sent.contains_key("TimeoutNow"));
    c.one(val(3), 3, false);
    let transfers = c
        .stats
        .sent_by
        .keys()
        .filter(|(_, k)| *k == "TimeoutNow")
        .count();
    assert_eq!(transfers, 1);
    let _ = MessageBody::TimeoutNow.name();
}

/// A leader whose process dies closes its sockets at once; the followers
/// that see it (`peer_lost`) campaign within about a heartbeat, not after
/// an election timeout. Two of them may pick nearly the same moment and
/// split the vote (likelier here, with 1-5 ms message delays against a
/// 50 ms heartbeat, than on a LAN); that run then falls back to the
/// ordinary timeouts. Without the notice no run could elect before the
/// shortest election timeout.
#[test]
fn a_crashed_leader_seen_by_the_transport_is_replaced_within_a_heartbeat() {
    let runs = 40;
    let mut fast = 0;
    for seed in 1..=runs {
        let mut c = cluster(3, seed);
        let old = c.check_one_leader();
        let hb = c.opts.raft.heartbeat_ms;
        let timeout_max = c.opts.raft.election_timeout_max_ms;
        c.run_for(hb + 1);
        let term = c.raft(nth_after(old, 1, 3)).unwrap().term();
        c.crash(old);
        let crashed_at = c.now;
        while c.now < crashed_at + 3 * timeout_max && c.leaders().is_empty() {
            c.run_for(5);
        }
        let took = c.now - crashed_at;
        let leaders = c.leaders();
        assert_eq!(
            leaders.len(),
            1,
            "seed {seed}: no leader {took} ms after the crash"
        );
        assert!(leaders[0].1 > term, "seed {seed}");
        if took <= 2 * hb + 20 {
            fast += 1;
            assert_eq!(
                leaders[0].1,
                term + 1,
                "seed {seed}: one election, one term"
            );
        }
    }
    assert!(
        fast * 4 >= runs * 3,
        "only {fast} of {runs} runs elected within two heartbeats"
    );
}

/// The transport losing its connection to a leader that is alive (a reset,
/// a restarted proxy) does not depose it: the others still hear it and
/// refuse the pre-vote, and the term does not move.
#[test]
fn a_lost_connection_to_a_live_leader_does_not_depose_it() {
    for seed in 1..=10 {
        let mut c = cluster(3, seed);
        let leader = c.check_one_leader();
        let term = c.raft(leader).unwrap().term();
        let follower = nth_after(leader, 1, 3);
        for _ in 0..20 {
            let now = c.node_now(follower);
            c.raft_mut(follower).unwrap().peer_lost(now, leader);
            c.run_for(97);
        }
        c.run_for(1_000);
        assert_eq!(c.check_one_leader(), leader, "seed {seed}");
        assert_eq!(c.check_terms(), term, "seed {seed}: the term moved");
    }
}
