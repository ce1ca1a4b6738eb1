//! Cluster membership: bootstrap and single-server changes (thesis 4.1).
//!
//! The membership in effect is the latest Membership entry in the log,
//! committed or not (else the snapshot's). A leader accepts one change at
//! a time, only after its own term has committed an entry, and only
//! changes that move at most one voter; learners may be added, removed or
//! promoted freely as long as the voter set changes by at most one.

use super::node::{Phase, RaftNode};
use super::types::{BootstrapError, EntryKind, Membership, ProposeError};

/// Checks that going from `old` to `new` is a single-server change.
pub fn validate_membership_change(old: &Membership, new: &Membership) -> Result<(), &'static str> {
    new.validate()?;
    if old == new {
        return Err("the membership is unchanged");
    }
    let changed_voters = old.voters.symmetric_difference(&new.voters).count();
    if changed_voters > 1 {
        return Err("more than one voter would change at once");
    }
    Ok(())
}

impl RaftNode {
    /// Starts a new cluster on a blank node: appends `membership` as entry
    /// 1 of term 1. This node must be one of its voters. Refuses (and
    /// changes nothing) if the node has any Raft state at all.
    pub fn bootstrap(&mut self, membership: Membership) -> Result<(), BootstrapError> {
        let blank = self.term == 0
            && self.vote.is_none()
            && self.log.last_index() == 0
            && self.log.committed() == 0
            && self.log.snapshot_meta().index == 0;
        if !blank {
            return Err(BootstrapError::AlreadyInitialized {
                term: self.term,
                last_index: self.log.last_index(),
            });
        }
        membership
            .validate()
            .map_err(BootstrapError::InvalidMembership)?;
        if !membership.is_voter(self.cfg.id) {
            return Err(BootstrapError::InvalidMembership(
                "the bootstrapping node must be a voter",
            ));
        }
        self.term = 1;
        self.append_local(EntryKind::Membership, membership.encode());
        self.pending_replication = false;
        let now = self.now_ms.unwrap_or(0);
        self.on_membership_changed(now);
        Ok(())
    }

    /// Leader: proposes a new membership (a single-server change). Returns
    /// the index of the Membership entry; it takes effect at once.
    pub fn propose_membership(
        &mut self,
        now_ms: u64,
        new: Membership,
    ) -> Result<u64, ProposeError> {
        let now = self.observe_clock(now_ms);
        if self.phase != Phase::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let committed = self.log.committed();
        if self.log.membership_index() > committed || self.log.term(committed) != Some(self.term) {
            return Err(ProposeError::MembershipChangePending);
        }
        validate_membership_change(self.log.membership(), &new)
            .map_err(ProposeError::InvalidMembership)?;
        let index = self.append_local(EntryKind::Membership, new.encode());
        self.on_membership_changed(now);
        Ok(index)
    }

    /// The latest membership changed (appended, truncated or from a snapshot).
    pub(super) fn on_membership_changed(&mut self, now: u64) {
        if self.phase != Phase::Leader {
            if !self.may_campaign() && self.phase != Phase::Follower {
                // No longer a voter: stop campaigning.
                let leader = self.leader;
                self.become_follower(now, self.term, leader);
            }
            return;
        }
        self.sync_progress(now);
        if let Some(t) = self.transfer {
            if !self.log.membership().is_voter(t.target) {
                self.transfer = None;
            }
        }
        // A smaller quorum may commit at once; a removed leader may be done.
        self.maybe_commit(now);
        self.confirm_reads();
        self.step_down_if_removed(now);
    }
}
