//! Leader election: pre-vote, vote, becoming leader, leadership transfer.

use super::message::{MessageBody, VoteRequest, VoteResponse};
use super::node::{Phase, RaftNode, Transfer};
use super::progress::Progress;
use super::types::{EntryKind, NodeId, ReadFailure, TransferError};

impl RaftNode {
    /// Starts a pre-vote (`pre`) or a real election. `transfer` marks a
    /// campaign ordered by the leader (`TimeoutNow`), which peers honour
    /// even while in contact with that leader.
    pub(super) fn campaign(&mut self, now: u64, pre: bool, transfer: bool) {
        if !self.may_campaign() || self.phase == Phase::Leader {
            return;
        }
        self.forget_leader();
        let vote_term = if pre {
            self.phase = Phase::PreCandidate;
            self.term + 1
        } else {
            self.phase = Phase::Candidate;
            self.term += 1;
            self.vote = Some(self.cfg.id);
            self.term
        };
        self.votes.clear();
        self.votes.insert(self.cfg.id, true);
        self.reset_election_timer(now);
        if self.election_won() {
            if pre {
                self.campaign(now, false, transfer);
            } else {
                self.become_leader(now);
            }
            return;
        }
        let request = VoteRequest {
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            transfer,
        };
        let me = self.cfg.id;
        let voters: Vec<NodeId> = self.log.membership().voters.iter().copied().collect();
        for v in voters.into_iter().filter(|&v| v != me) {
            let body = if pre {
                MessageBody::PreVote(request)
            } else {
                MessageBody::Vote(request)
            };
            self.send_with_term(v, vote_term, body);
        }
    }

    /// Drops the current leader (we stopped following it).
    fn forget_leader(&mut self) {
        if self.leader.is_some() {
            self.fail_forwarded_reads(ReadFailure::LeadershipLost);
            self.incoming_snapshot = None;
            self.leader = None;
        }
    }

    fn tally(&self) -> (usize, usize) {
        let membership = self.log.membership();
        let mut granted = 0;
        let mut rejected = 0;
        for (id, &yes) in &self.votes {
            if membership.is_voter(*id) {
                if yes {
                    granted += 1;
                } else {
                    rejected += 1;
                }
            }
        }
        (granted, rejected)
    }

    fn election_won(&self) -> bool {
        self.tally().0 >= self.log.membership().quorum()
    }

    /// Answers a (pre-)vote request whose term is at least ours (the
    /// caller has already applied leader stickiness and term rules).
    pub(super) fn handle_vote_request(
        &mut self,
        now: u64,
        from: NodeId,
        term: u64,
        req: VoteRequest,
        pre: bool,
    ) {
        // Learners answer too: only the candidate's membership decides
        // whose vote counts, and a node that merely believes itself a
        // learner (an uncommitted demotion in its log) may still be a voter
        // of the committed membership. Refusing would deadlock elections.
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && term > self.term);
        let grant = can_vote && self.log.is_up_to_date(req.last_index, req.last_term);
        let answer = VoteResponse { granted: grant };
        let body = if pre {
            MessageBody::PreVoteResponse(answer)
        } else {
            MessageBody::VoteResponse(answer)
        };
        if grant {
            if !pre {
                self.vote = Some(from);
                self.reset_election_timer(now);
            }
            self.send_with_term(from, term, body);
        } else {
            self.send(from, body);
        }
    }

    pub(super) fn handle_vote_response(
        &mut self,
        now: u64,
        from: NodeId,
        term: u64,
        resp: VoteResponse,
        pre: bool,
    ) {
        if pre {
            let expected_term = if resp.granted {
                self.term + 1
            } else {
                self.term
            };
            if self.phase != Phase::PreCandidate || term != expected_term {
                return;
            }
        } else if self.phase != Phase::Candidate || term != self.term {
            return;
        }
        if !self.log.membership().is_voter(from) {
            return;
        }
        self.votes.insert(from, resp.granted);
        let (_, rejected) = self.tally();
        if self.election_won() {
            if pre {
                self.campaign(now, false, false);
            } else {
                self.become_leader(now);
            }
        } else if rejected >= self.log.membership().quorum() {
            self.become_follower(now, self.term, None);
        }
    }

    pub(super) fn become_leader(&mut self, now: u64) {
        self.phase = Phase::Leader;
        self.leader = Some(self.cfg.id);
        self.votes.clear();
        self.transfer = None;
        self.incoming_snapshot = None;
        self.last_leader_contact_ms = Some(now);
        self.heartbeat_deadline_ms = now + self.cfg.heartbeat_ms;
        self.check_quorum_deadline_ms = now + self.cfg.election_timeout_min_ms;
        self.commit_changed = false;
        self.progress.clear();
        self.sync_progress(now);
        // An entry of our own term: committing it commits everything before
        // it (Figure 8) and unlocks reads and membership changes.
        self.append_local(EntryKind::Noop, Vec::new());
    }

    /// Leader: one progress per member other than us (after a membership change).
    pub(super) fn sync_progress(&mut self, now: u64) {
        let next = self.log.last_index() + 1;
        let members: Vec<NodeId> = self.log.membership().members().collect();
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            if id != self.cfg.id {
                self.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next, now));
            }
        }
    }

    pub(super) fn handle_timeout_now(&mut self, now: u64, from: NodeId) {
        if self.phase == Phase::Follower && self.leader == Some(from) {
            self.campaign(now, false, true);
        }
    }

    /// Hands leadership to `target` (a voter): once it has our whole log
    /// it is told to campaign at once. Proposals are refused meanwhile;
    /// the attempt is abandoned after an election timeout.
    pub fn transfer_leadership(
        &mut self,
        now_ms: u64,
        target: NodeId,
    ) -> Result<(), TransferError> {
        let now = self.observe_clock(now_ms);
        if self.phase != Phase::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.cfg.id {
            return Err(TransferError::AlreadyLeader);
        }
        if !self.log.membership().is_voter(target) {
            return Err(TransferError::NotAVoter(target));
        }
        self.transfer = Some(Transfer {
            target,
            deadline_ms: now + self.cfg.election_timeout_min_ms,
        });
        self.maybe_send_timeout_now(target);
        self.pending_replication = true;
        Ok(())
    }

    /// Sends `TimeoutNow` to the transfer target once it is caught up.
    pub(super) fn maybe_send_timeout_now(&mut self, peer: NodeId) {
        let caught_up = self
            .progress
            .get(&peer)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if self.transfer.is_some_and(|t| t.target == peer) && caught_up {
            self.send(peer, MessageBody::TimeoutNow);
        }
    }

    /// Leader no longer a voter and the change committed: hand over to the
    /// most up-to-date voter and step down.
    pub(super) fn step_down_if_removed(&mut self, now: u64) {
        if self.phase != Phase::Leader
            || self.is_voter()
            || self.log.committed() < self.log.membership_index()
        {
            return;
        }
        let last = self.log.last_index();
        let successor = self
            .log
            .membership()
            .voters
            .iter()
            .filter_map(|v| self.progress.get(v).map(|p| (p.match_index, *v)))
            .max();
        if let Some((match_index, id)) = successor {
            if match_index == last {
                self.send(id, MessageBody::TimeoutNow);
            }
        }
        self.become_follower(now, self.term, None);
    }
}
