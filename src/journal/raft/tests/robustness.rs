//! Whatever arrives from the network, a node must not panic: random,
//! nonsensical messages are stepped into nodes in every role.

use super::cluster;
use crate::journal::raft::message::*;
use crate::journal::raft::*;
use crate::util::rng::Rng;

/// Mostly edge values, sometimes anything.
fn num(rng: &mut Rng) -> u64 {
    const EDGES: [u64; 9] = [0, 1, 2, 3, 5, 8, 30, u64::MAX - 1, u64::MAX];
    if rng.chance(0.8) {
        EDGES[rng.range(0, EDGES.len() as u64) as usize]
    } else {
        rng.range(0, 100)
    }
}

fn random_entries(rng: &mut Rng) -> Vec<Entry> {
    let start = num(rng);
    let contiguous = rng.chance(0.5);
    (0..rng.range(0, 5))
        .map(|k| Entry {
            index: if contiguous {
                start.wrapping_add(k)
            } else {
                num(rng)
            },
            term: num(rng),
            kind: [EntryKind::Normal, EntryKind::Noop, EntryKind::Membership]
                [rng.range(0, 3) as usize],
            data: if rng.chance(0.5) {
                Membership::new([1, 2, 3], []).encode()
            } else {
                vec![rng.next_u64() as u8; rng.range(0, 4) as usize]
            },
        })
        .collect()
}

fn random_message(rng: &mut Rng) -> Message {
    let vote = VoteRequest {
        last_index: num(rng),
        last_term: num(rng),
        transfer: rng.chance(0.2),
    };
    let body = match rng.range(0, 13) {
        0 => MessageBody::PreVote(vote),
        1 => MessageBody::Vote(vote),
        2 => MessageBody::PreVoteResponse(VoteResponse {
            granted: rng.chance(0.5),
        }),
        3 => MessageBody::VoteResponse(VoteResponse {
            granted: rng.chance(0.5),
        }),
        4 => MessageBody::Append(AppendRequest {
            prev_index: num(rng),
            prev_term: num(rng),
            commit: num(rng),
            entries: random_entries(rng),
        }),
        5 => MessageBody::AppendResponse(if rng.chance(0.5) {
            AppendResponse::Accepted {
                match_index: num(rng),
            }
        } else {
            let hint = if rng.chance(0.5) {
                RejectHint::LogTooShort {
                    last_index: num(rng),
                }
            } else {
                RejectHint::Conflict {
                    term: num(rng),
                    first_index: num(rng),
                }
            };
            AppendResponse::Rejected {
                prev_index: num(rng),
                hint,
            }
        }),
        6 => MessageBody::Heartbeat(Heartbeat {
            commit: num(rng),
            read_ctx: num(rng),
        }),
        7 => MessageBody::HeartbeatResponse(HeartbeatResponse { read_ctx: num(rng) }),
        8 => {
            let data = vec![1u8; rng.range(0, 6) as usize];
            MessageBody::InstallSnapshot(SnapshotChunk {
                meta: SnapshotMeta {
                    index: num(rng),
                    term: num(rng),
                    membership: Membership::new([1, 2, 3], []),
                },
                total_len: num(rng),
                offset: num(rng),
                data,
                done: rng.chance(0.5),
            })
        }
        9 => MessageBody::InstallSnapshotResponse(SnapshotResponse {
            snapshot_index: num(rng),
            installed: rng.chance(0.5),
            next_offset: num(rng),
        }),
        10 => MessageBody::ReadIndex(ReadIndexRequest {
            request_id: num(rng),
        }),
        11 => MessageBody::ReadIndexResponse(ReadIndexResponse {
            request_id: num(rng),
            index: rng.chance(0.5).then(|| num(rng)),
        }),
        _ => MessageBody::TimeoutNow,
    };
    let from = [0, 1, 2, 3, 4, 99][rng.range(0, 6) as usize];
    let term = num(rng);
    Message { from, term, body }
}

/// A message that passes the term and shape checks, so it reaches the
/// deeper paths: near our term, near our log's end, contiguous entries.
fn plausible_message(node: &RaftNode, rng: &mut Rng) -> Message {
    let term = node.term() + rng.range(0, 2);
    let near = |rng: &mut Rng, x: u64| x.saturating_sub(2) + rng.range(0, 5);
    let mut m = random_message(rng);
    m.term = term;
    m.from = rng.range(1, 5);
    match &mut m.body {
        MessageBody::Append(a) => {
            a.prev_index = near(rng, node.last_index());
            a.prev_term = node.term_at(a.prev_index).unwrap_or(term).min(term);
            a.commit = near(rng, node.last_index());
            let mut t = a.prev_term;
            for (k, e) in a.entries.iter_mut().enumerate() {
                e.index = a.prev_index + 1 + k as u64;
                t = (t + rng.range(0, 2)).min(term).max(1);
                e.term = t;
                if e.kind == EntryKind::Membership {
                    e.data = Membership::new([1, 2, 3], [4]).encode();
                }
            }
        }
        MessageBody::AppendResponse(AppendResponse::Accepted { match_index }) => {
            *match_index = near(rng, node.last_index());
        }
        MessageBody::AppendResponse(AppendResponse::Rejected { prev_index, hint }) => {
            *prev_index = near(rng, node.last_index());
            if let RejectHint::Conflict {
                term: t,
                first_index,
            } = hint
            {
                *t = near(rng, term).max(1);
                *first_index = near(rng, *prev_index);
            }
        }
        MessageBody::InstallSnapshot(c) => {
            c.meta.index = near(rng, node.last_index() + 3);
            c.meta.term = term;
            c.total_len = rng.range(0, 12);
            c.offset = rng.range(0, c.total_len + 1);
            c.data.truncate((c.total_len - c.offset) as usize);
            c.done = c.offset + c.data.len() as u64 == c.total_len && rng.chance(0.7);
        }
        MessageBody::InstallSnapshotResponse(r) => {
            r.snapshot_index = near(rng, node.snapshot_meta().index);
            r.next_offset = rng.range(0, 12);
        }
        MessageBody::Heartbeat(h) => h.commit = near(rng, node.last_index()),
        _ => {}
    }
    m
}

/// Steps garbage into `node`, handling Readys as a caller would, and
/// checks the basic invariants after each step.
fn abuse(mut node: RaftNode, rng: &mut Rng, rounds: usize) {
    let mut now = 1_000_000;
    for _ in 0..rounds {
        now += rng.range(0, 50);
        let term_before = node.term();
        match rng.range(0, 10) {
            0 => node.tick(now),
            1 => node.read_index(now, num(rng)),
            2 => {
                let _ = node.propose(now, vec![1, 2]);
            }
            3..=5 => node.step(now, plausible_message(&node, rng)),
            _ => node.step(now, random_message(rng)),
        }
        while node.has_ready() {
            let rd = node.ready();
            for e in &rd.committed {
                assert!(e.index <= node.commit_index());
            }
            node.advance(now);
        }
        assert!(node.term() >= term_before, "terms never go back");
        assert!(node.commit_index() <= node.last_index());
        assert!(node.applied() <= node.commit_index());
        let _ = node.status();
        let _ = node.next_deadline_ms();
    }
}

#[test]
fn random_messages_never_panic() {
    let mut rng = Rng::new(2024);
    // A blank node, a bootstrapped one, and each member of a live cluster.
    abuse(
        RaftNode::new(RaftConfig::new(1), Restored::default()).unwrap(),
        &mut rng,
        3_000,
    );
    let mut boot = RaftNode::new(RaftConfig::new(1), Restored::default()).unwrap();
    boot.bootstrap(Membership::new([1], [])).unwrap();
    abuse(boot, &mut rng, 3_000);
    let mut c = cluster(3, 77);
    c.one(super::val(1), 3, true);
    for id in 1..=3 {
        let node = c.nodes.get_mut(&id).and_then(|n| n.raft.take()).unwrap();
        abuse(node, &mut rng, 3_000);
    }
}
