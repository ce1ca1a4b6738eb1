//! Single rules of the protocol, pinned at one node with hand-made
//! messages: the interleavings that break them are too rare for the
//! randomized simulation to hit reliably.

use crate::journal::raft::message::*;
use crate::journal::raft::*;

const NOW: u64 = 1_000;

/// A follower of a 5-voter cluster with a log of `(index, term)` entries
/// after the membership entry at index 1, in `term`.
fn follower(id: NodeId, log: &[(u64, u64)], term: u64, commit: u64) -> RaftNode {
    let config = Membership::new([1, 2, 3, 4, 5], []);
    let mut entries = vec![Entry {
        index: 1,
        term: 1,
        kind: EntryKind::Membership,
        data: config.encode(),
    }];
    for &(index, t) in log {
        entries.push(Entry {
            index,
            term: t,
            kind: EntryKind::Normal,
            data: vec![index as u8],
        });
    }
    let restored = Restored {
        hard_state: HardState {
            term,
            vote: None,
            commit,
        },
        entries,
        ..Restored::default()
    };
    let mut node = RaftNode::new(RaftConfig::new(id), restored).unwrap();
    node.tick(NOW);
    node
}

fn msg(from: NodeId, term: u64, body: MessageBody) -> Message {
    Message { from, term, body }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: vec![index as u8, term as u8],
    }
}

/// Every message the node wants to send, after persisting.
fn outbox(node: &mut RaftNode) -> Vec<(NodeId, Message)> {
    let mut out = Vec::new();
    while node.has_ready() {
        out.extend(node.ready().messages);
        node.advance(NOW);
    }
    out
}

fn append(prev: (u64, u64), commit: u64, entries: Vec<Entry>) -> MessageBody {
    MessageBody::Append(AppendRequest {
        prev_index: prev.0,
        prev_term: prev.1,
        commit,
        entries,
    })
}

/// A follower only commits what it has verified to match the leader: its
/// stale entries past the last new one stay uncommitted, whatever the
/// leader's commit index says.
#[test]
fn follower_commit_stops_at_last_new_entry() {
    // Entries 2..=6 of term 2; the leader of term 3 shares only 2..=3.
    let log: Vec<(u64, u64)> = (2..=6).map(|i| (i, 2)).collect();
    let mut node = follower(2, &log, 2, 1);
    node.step(
        NOW,
        msg(1, 3, append((1, 1), 5, vec![entry(2, 2), entry(3, 2)])),
    );
    assert_eq!(
        node.commit_index(),
        3,
        "not 5: entries 4..=6 were not verified"
    );
    let out = outbox(&mut node);
    assert!(out.iter().any(|(to, m)| *to == 1
        && m.body == MessageBody::AppendResponse(AppendResponse::Accepted { match_index: 3 })));
    // The stale tail is replaced once the leader's entries arrive.
    node.step(
        NOW,
        msg(1, 3, append((3, 2), 5, vec![entry(4, 3), entry(5, 3)])),
    );
    assert_eq!((node.last_index(), node.term_at(4)), (5, Some(3)));
    assert_eq!(node.commit_index(), 5);
}

/// A follower never truncates committed entries, even if told to.
#[test]
fn follower_never_truncates_committed_entries() {
    let mut node = follower(2, &[(2, 2), (3, 2)], 2, 3);
    node.step(NOW, msg(1, 3, append((1, 1), 3, vec![entry(2, 3)])));
    assert_eq!(node.term_at(2), Some(2));
    assert_eq!(node.term_at(3), Some(2));
}

/// Rejections carry the hint the leader needs to skip whole terms.
#[test]
fn reject_hints() {
    let log = [(2, 2), (3, 2), (4, 2), (5, 4), (6, 4)];
    let mut node = follower(2, &log, 4, 1);
    node.step(NOW, msg(1, 5, append((9, 5), 1, vec![])));
    node.step(NOW, msg(1, 5, append((6, 5), 1, vec![])));
    let hints: Vec<AppendResponse> = outbox(&mut node)
        .into_iter()
        .filter_map(|(_, m)| match m.body {
            MessageBody::AppendResponse(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(
        hints,
        vec![
            AppendResponse::Rejected {
                prev_index: 9,
                hint: RejectHint::LogTooShort { last_index: 6 }
            },
            AppendResponse::Rejected {
                prev_index: 6,
                hint: RejectHint::Conflict {
                    term: 4,
                    first_index: 5
                }
            },
        ]
    );
}

#[test]
fn vote_requires_an_up_to_date_log_and_is_given_once_per_term() {
    let mut node = follower(3, &[(2, 2), (3, 2)], 2, 1);
    let ask = |last_index, last_term| {
        MessageBody::Vote(VoteRequest {
            last_index,
            last_term,
            transfer: false,
        })
    };
    let granted = |node: &mut RaftNode| -> Vec<(NodeId, bool)> {
        outbox(node)
            .into_iter()
            .filter_map(|(to, m)| match m.body {
                MessageBody::VoteResponse(r) => Some((to, r.granted)),
                _ => None,
            })
            .collect()
    };
    node.step(NOW, msg(1, 3, ask(2, 2)));
    assert_eq!(
        granted(&mut node),
        vec![(1, false)],
        "shorter log of the same term"
    );
    node.step(NOW, msg(2, 3, ask(9, 1)));
    assert_eq!(
        granted(&mut node),
        vec![(2, false)],
        "longer log of an older term"
    );
    node.step(NOW, msg(4, 3, ask(3, 2)));
    assert_eq!(granted(&mut node), vec![(4, true)]);
    assert_eq!(node.hard_state().vote, Some(4));
    node.step(NOW, msg(5, 3, ask(7, 2)));
    assert_eq!(
        granted(&mut node),
        vec![(5, false)],
        "already voted in term 3"
    );
    node.step(NOW, msg(4, 3, ask(3, 2)));
    assert_eq!(
        granted(&mut node),
        vec![(4, true)],
        "a repeated request gets the same answer"
    );
    // The vote is persisted before the answer goes out.
    let mut node = follower(3, &[], 2, 1);
    node.step(NOW, msg(4, 3, ask(1, 1)));
    let rd = node.ready();
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((3, Some(4))));
    assert_eq!(rd.messages.len(), 1);
}

/// Pre-votes never change anyone's term; a node in contact with its
/// leader ignores (pre-)vote requests.
#[test]
fn prevote_and_stickiness() {
    let mut node = follower(3, &[(2, 2)], 2, 1);
    let pre = MessageBody::PreVote(VoteRequest {
        last_index: 2,
        last_term: 2,
        transfer: false,
    });
    node.step(NOW, msg(5, 3, pre.clone()));
    assert_eq!(node.term(), 2, "a pre-vote request does not raise our term");
    let out = outbox(&mut node);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.term, 3);
    assert_eq!(
        out[0].1.body,
        MessageBody::PreVoteResponse(VoteResponse { granted: true })
    );
    // Now hear from a leader of term 2: requests are ignored for a while.
    node.step(
        NOW,
        msg(
            1,
            2,
            MessageBody::Heartbeat(Heartbeat {
                commit: 1,
                read_ctx: 0,
            }),
        ),
    );
    outbox(&mut node);
    let vote = MessageBody::Vote(VoteRequest {
        last_index: 9,
        last_term: 9,
        transfer: false,
    });
    node.step(NOW + 10, msg(5, 3, pre));
    node.step(NOW + 10, msg(5, 3, vote));
    assert_eq!(node.term(), 2, "leader stickiness");
    assert!(outbox(&mut node).is_empty());
    // Unless the leader itself hands over.
    let forced = MessageBody::Vote(VoteRequest {
        last_index: 9,
        last_term: 9,
        transfer: true,
    });
    node.step(NOW + 10, msg(5, 3, forced));
    assert_eq!((node.term(), node.vote()), (3, Some(5)));
}

/// Messages from an older term are ignored, but a stale leader is told
/// the current term so it steps down.
#[test]
fn stale_terms_are_answered_with_ours() {
    let mut node = follower(3, &[(2, 2)], 5, 1);
    node.step(NOW, msg(1, 4, append((2, 2), 2, vec![entry(3, 4)])));
    assert_eq!(node.last_index(), 2, "nothing appended from a stale leader");
    let out = outbox(&mut node);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, out[0].1.term), (1, 5));
    node.step(
        NOW,
        msg(
            1,
            4,
            MessageBody::VoteResponse(VoteResponse { granted: true }),
        ),
    );
    assert!(outbox(&mut node).is_empty());
}

/// A leader's heartbeat never carries a commit index past what the
/// follower is known to share.
#[test]
fn heartbeat_commit_is_bounded_by_match() {
    let mut node = follower(1, &[(2, 2)], 2, 1);
    let now = node.next_deadline_ms().unwrap();
    node.tick(now);
    for from in [2, 3] {
        node.step(
            now,
            msg(
                from,
                3,
                MessageBody::PreVoteResponse(VoteResponse { granted: true }),
            ),
        );
    }
    for from in [2, 3] {
        node.step(
            now,
            msg(
                from,
                3,
                MessageBody::VoteResponse(VoteResponse { granted: true }),
            ),
        );
    }
    assert!(node.is_leader());
    outbox(&mut node);
    for from in [2, 3] {
        let ack = AppendResponse::Accepted { match_index: 3 };
        node.step(now, msg(from, 3, MessageBody::AppendResponse(ack)));
    }
    assert_eq!(node.commit_index(), 3);
    outbox(&mut node);
    node.tick(now + 100);
    for (to, m) in outbox(&mut node) {
        if let MessageBody::Heartbeat(h) = m.body {
            let expected = if to == 2 || to == 3 { 3 } else { 0 };
            assert_eq!(h.commit, expected, "heartbeat to {to}");
        }
    }
}
