//! A deterministic in-process cluster: `RaftNode`s, simulated storage that
//! keeps only what a Ready persisted, a toy state machine, the simulated
//! network and a fake clock that jumps to the next event. Every event is
//! followed by the safety checks of [`super::checker`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::checker::Checker;
use super::network::{NetFaults, Network};
use super::node::{App, Disk, NodeClock, SimNode, Unapplied};
use crate::journal::raft::*;
use crate::util::rng::Rng;

/// How to build and abuse a cluster.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Node ids are `1..=nodes`.
    pub nodes: u64,
    /// The first `voters` ids form the initial membership; the rest start blank.
    pub voters: u64,
    /// Every initial voter starts with the membership entry on disk (as if
    /// all were provisioned alike); otherwise node 1 bootstraps alone.
    pub seeded: bool,
    pub raft: RaftConfig,
    pub faults: NetFaults,
    /// Chance, per Ready, of a crash somewhere inside its handling.
    pub crash_in_ready: f64,
    /// Compact once this many entries were applied past the snapshot (0: never).
    pub compact_every: u64,
    /// Send every message through the codec and back.
    pub wire_roundtrip: bool,
    /// Chance, per Ready, that applying and `advance` are put off until
    /// the node's next event (which then steps, and takes another Ready,
    /// before advancing).
    pub defer_advance: f64,
    /// Each node's clock runs at a random rate within this many parts per
    /// million of real time, from a random offset.
    pub clock_skew_ppm: u64,
    /// A randomized run, replayed by `PACT_SIM_SEED` (for failure messages).
    pub randomized: bool,
    pub seed: u64,
}

impl Options {
    pub fn new(nodes: u64, seed: u64) -> Options {
        let mut raft = RaftConfig::new(1);
        raft.heartbeat_ms = 50;
        raft.election_timeout_min_ms = 250;
        raft.election_timeout_max_ms = 500;
        raft.max_entries_per_append = 64;
        raft.max_inflight_appends = 4;
        raft.snapshot_chunk_bytes = 256;
        Options {
            nodes,
            voters: nodes,
            seeded: true,
            raft,
            faults: NetFaults::reliable(),
            crash_in_ready: 0.0,
            compact_every: 0,
            wire_roundtrip: true,
            defer_advance: 0.0,
            clock_skew_ppm: 0,
            randomized: false,
            seed,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Proposal {
    pub node: NodeId,
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
    pub acked: bool,
}

#[derive(Debug, Clone, Copy)]
struct ReadRecord {
    /// Highest index of a write acknowledged before the read was issued.
    min_index: u64,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    pub reads_ok: u64,
    pub reads_failed: u64,
    pub crashes: u64,
    pub events: u64,
    /// AppendEntries rejections sent, by sender.
    pub rejects_sent: BTreeMap<NodeId, u64>,
    /// InstallSnapshot chunks sent, by receiver.
    pub snapshot_chunks: BTreeMap<NodeId, u64>,
    /// Messages sent, by kind.
    pub sent: BTreeMap<&'static str, u64>,
    /// Messages sent, by sender and kind.
    pub sent_by: BTreeMap<(NodeId, &'static str), u64>,
}

pub(crate) struct Cluster {
    pub opts: Options,
    pub now: u64,
    pub rng: Rng,
    pub nodes: BTreeMap<NodeId, SimNode>,
    pub net: Network,
    pub checker: Checker,
    pub proposals: Vec<Proposal>,
    pending: HashMap<(NodeId, u64), usize>,
    pub max_acked_index: u64,
    reads: HashMap<(NodeId, u64), ReadRecord>,
    next_request_id: u64,
    disconnected: BTreeSet<NodeId>,
    pub stats: Stats,
    /// Outcome of every answered read, by request id.
    pub read_results: BTreeMap<u64, Result<u64, ReadFailure>>,
    trace: bool,
    /// (when, to, from): `to` sees its connections with crashed `from` end.
    lost_notices: Vec<(u64, NodeId, NodeId)>,
}

impl Cluster {
    pub fn new(opts: Options) -> Cluster {
        let membership = Membership::new(1..=opts.voters, []);
        let mut nodes = BTreeMap::new();
        for id in 1..=opts.nodes {
            let mut disk = Disk::default();
            if opts.seeded && membership.is_voter(id) {
                disk.hard_state.term = 1;
                let data = membership.encode();
                disk.entries.push(Entry {
                    index: 1,
                    term: 1,
                    kind: EntryKind::Membership,
                    data,
                });
            }
            nodes.insert(
                id,
                SimNode {
                    raft: None,
                    disk,
                    app: App::default(),
                    incarnation: 0,
                    unapplied: Vec::new(),
                    unapplied_due: 0,
                    clock: NodeClock {
                        offset: 0,
                        rate_ppm: 1_000_000,
                    },
                },
            );
        }
        let trace = std::env::var_os("PACT_SIM_TRACE").is_some();
        let mut cluster = Cluster {
            rng: Rng::new(opts.seed),
            net: Network::new(opts.faults),
            opts,
            now: 0,
            nodes,
            checker: Checker::default(),
            proposals: Vec::new(),
            pending: HashMap::new(),
            max_acked_index: 0,
            reads: HashMap::new(),
            next_request_id: 0,
            disconnected: BTreeSet::new(),
            stats: Stats::default(),
            read_results: BTreeMap::new(),
            trace,
            lost_notices: Vec::new(),
        };
        let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
        let skew = cluster.opts.clock_skew_ppm;
        for id in ids {
            if skew > 0 {
                let offset = cluster.rng.range(0, 1 << 30);
                let rate_ppm = cluster.rng.range(1_000_000 - skew, 1_000_000 + skew + 1);
                cluster.nodes.get_mut(&id).expect("known node").clock =
                    NodeClock { offset, rate_ppm };
            }
            cluster.start(id);
        }
        if !cluster.opts.seeded {
            let raft = cluster.raft_mut(1).expect("node 1 runs");
            raft.bootstrap(membership).expect("bootstrap a blank node");
            // The operator sees bootstrap succeed only once it is durable.
            let crash = std::mem::replace(&mut cluster.opts.crash_in_ready, 0.0);
            cluster.process_ready(1);
            cluster.opts.crash_in_ready = crash;
        }
        cluster
    }

    /// Panics with the way to replay this run.
    pub fn fail(&self, what: &str) -> ! {
        let seed = self.opts.seed;
        let thread = std::thread::current();
        let test = thread
            .name()
            .filter(|n| n.contains("::"))
            .unwrap_or("raft::sim");
        let replay = if self.opts.randomized {
            format!("PACT_SIM_SEED={seed} cargo test -p pact --lib {test} -- --nocapture")
        } else {
            format!("cargo test -p pact --lib {test} -- --exact --nocapture")
        };
        panic!(
            "raft simulation failed at t={}ms (seed {seed}): {what}\n  replay: {replay}\n  \
             (add PACT_SIM_TRACE=1 to trace every event)",
            self.now
        );
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>7}] {}", self.now, what());
        }
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn raft(&self, id: NodeId) -> Option<&RaftNode> {
        self.nodes.get(&id).and_then(|n| n.raft.as_ref())
    }

    pub fn raft_mut(&mut self, id: NodeId) -> Option<&mut RaftNode> {
        self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut())
    }

    /// Node `id`'s clock now.
    pub fn node_now(&self, id: NodeId) -> u64 {
        self.nodes
            .get(&id)
            .map_or(self.now, |n| n.clock.local(self.now))
    }

    pub fn is_live(&self, id: NodeId) -> bool {
        self.raft(id).is_some()
    }

    pub fn app(&self, id: NodeId) -> &App {
        &self.nodes[&id].app
    }

    // ------------------------------------------------------------ lifecycle

    fn start(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.incarnation += 1;
        let mut cfg = self.opts.raft.clone();
        cfg.id = id;
        cfg.rng_seed = self.opts.seed ^ (id << 40) ^ (node.incarnation << 20);
        let restored = Restored {
            hard_state: node.disk.hard_state,
            snapshot: node.disk.snapshot.clone(),
            entries: node.disk.entries.clone(),
            applied: 0,
        };
        node.app = match &node.disk.snapshot {
            Some((meta, data)) => App::decode(meta.index, data),
            None => App::default(),
        };
        match RaftNode::new(cfg, restored) {
            Ok(raft) => node.raft = Some(raft),
            Err(e) => self.fail(&format!("node {id} cannot restart from its disk: {e}")),
        }
        self.log(|| format!("node {id} starts"));
    }

    /// Kills a node: its volatile state and any un-persisted Ready are lost.
    pub fn crash(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.raft.take().is_none() {
            return;
        }
        node.app = App::default();
        node.unapplied.clear();
        self.stats.crashes += 1;
        self.pending.retain(|(n, _), _| *n != id);
        self.reads.retain(|(n, _), _| *n != id);
        self.log(|| format!("node {id} crashes"));
        // Its sockets close at once: every node it could reach sees the
        // connection end after what was still in flight on it (TCP), and
        // the daemon tells its node (`peer_lost`).
        for other in self.ids() {
            if other != id && !self.net.is_cut(id, other) {
                let at = self.net.last_delivery(id, other).unwrap_or(self.now) + 1;
                self.lost_notices.push((at, other, id));
            }
        }
    }

    pub fn restart(&mut self, id: NodeId) {
        if self.is_live(id) {
            self.crash(id);
        }
        self.start(id);
    }

    // ------------------------------------------------------------ network

    /// Cuts a node off from everyone.
    pub fn disconnect(&mut self, id: NodeId) {
        self.disconnected.insert(id);
        for other in self.ids() {
            if other != id {
                self.net.cut_pair(id, other);
            }
        }
        self.log(|| format!("node {id} disconnected"));
    }

    /// Reconnects a node to every connected node.
    pub fn connect(&mut self, id: NodeId) {
        self.disconnected.remove(&id);
        for other in self.ids() {
            if other != id && !self.disconnected.contains(&other) {
                self.net.heal_pair(id, other);
            }
        }
        self.log(|| format!("node {id} connected"));
    }

    pub fn is_connected(&self, id: NodeId) -> bool {
        !self.disconnected.contains(&id)
    }

    /// Splits the cluster; nodes not listed are cut off entirely.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.disconnected.clear();
        let mut all: Vec<Vec<NodeId>> = groups.to_vec();
        for id in self.ids() {
            if !groups.iter().any(|g| g.contains(&id)) {
                all.push(vec![id]);
            }
        }
        self.net.partition(&all);
        self.log(|| format!("partition {groups:?}"));
    }

    pub fn heal(&mut self) {
        self.disconnected.clear();
        self.net.heal_all();
        self.log(|| "network healed".to_string());
    }

    // ------------------------------------------------------------ driving

    /// Runs every event up to and including time `t`.
    pub fn run_until(&mut self, t: u64) {
        while self.step_once(t) {}
        self.now = self.now.max(t);
    }

    pub fn run_for(&mut self, ms: u64) {
        let t = self.now + ms;
        self.run_until(t);
    }

    /// Handles the earliest event due by `limit`; false if there is none.
    fn step_once(&mut self, limit: u64) -> bool {
        let t_net = self.net.next_delivery();
        let t_timer = self.nodes.values().filter_map(SimNode::next_event).min();
        let t_notice = self.lost_notices.iter().map(|n| n.0).min();
        if let Some(t) = t_notice.filter(|&t| {
            t <= limit && t_net.is_none_or(|n| t <= n) && t_timer.is_none_or(|n| t <= n)
        }) {
            self.now = self.now.max(t);
            let due: Vec<(u64, NodeId, NodeId)> = self
                .lost_notices
                .iter()
                .copied()
                .filter(|n| n.0 <= t)
                .collect();
            self.lost_notices.retain(|n| n.0 > t);
            for (_, to, from) in due {
                let now = self.node_now(to);
                if let Some(raft) = self.raft_mut(to) {
                    raft.peer_lost(now, from);
                    self.log(|| format!("node {to} lost its connection with {from}"));
                }
            }
            return true;
        }
        let next = match (t_net, t_timer) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return false,
            },
        };
        if next > limit {
            return false;
        }
        self.now = self.now.max(next);
        self.stats.events += 1;
        if t_net.is_some_and(|t| t <= self.now) {
            if let Some(m) = self.net.pop_due(self.now) {
                self.deliver(m.from, m.to, m.msg);
            }
        } else {
            let due: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.next_event().is_some_and(|t| t <= self.now))
                .map(|(&id, _)| id)
                .collect();
            for id in due {
                let now = self.node_now(id);
                if let Some(raft) = self.raft_mut(id) {
                    raft.tick(now);
                }
                self.process_ready(id);
            }
        }
        self.check_leaders();
        true
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, msg: Message) {
        let now = self.node_now(to);
        let Some(raft) = self.raft_mut(to) else {
            return;
        };
        raft.step(now, msg);
        let _ = from;
        self.process_ready(to);
    }

    fn check_leaders(&mut self) {
        for node in self.nodes.values() {
            if let Some(raft) = node.raft.as_ref().filter(|r| r.is_leader()) {
                if let Err(e) = self.checker.on_leader(raft) {
                    self.fail(&e);
                }
            }
        }
    }

    /// Handles Readys until the node has none, injecting crashes.
    pub fn process_ready(&mut self, id: NodeId) {
        loop {
            let Some(raft) = self.raft_mut(id) else {
                return;
            };
            let has_ready = raft.has_ready();
            if !self.nodes[&id].unapplied.is_empty() && (!has_ready || self.rng.chance(0.5)) {
                // Finish the deferred batches first: `advance` then runs
                // while newer work (entries, messages) waits in the node.
                self.apply_and_advance(id);
                continue;
            }
            if !has_ready {
                return;
            }
            let Some(raft) = self.raft_mut(id) else {
                return;
            };
            let rd = raft.ready();
            let crash_at =
                if self.opts.crash_in_ready > 0.0 && self.rng.chance(self.opts.crash_in_ready) {
                    self.rng.range(0, 3)
                } else {
                    u64::MAX
                };
            if crash_at == 0 {
                return self.crash(id);
            }
            self.persist(id, &rd);
            if crash_at == 1 {
                return self.crash(id);
            }
            self.send_all(id, rd.messages);
            if crash_at == 2 {
                return self.crash(id);
            }
            let node = self.nodes.get_mut(&id).expect("known node");
            node.unapplied.push(Unapplied {
                snapshot: rd.snapshot,
                committed: rd.committed,
                read_states: rd.read_states,
                failed_reads: rd.failed_reads,
            });
            if self.opts.defer_advance > 0.0 && self.rng.chance(self.opts.defer_advance) {
                let due = self.now + self.rng.range(1, 30);
                let node = self.nodes.get_mut(&id).expect("known node");
                if node.unapplied.len() == 1 {
                    node.unapplied_due = due;
                }
                return;
            }
            self.apply_and_advance(id);
        }
    }

    /// Applies every handed-out batch in order, then advances.
    fn apply_and_advance(&mut self, id: NodeId) {
        let batches = std::mem::take(&mut self.nodes.get_mut(&id).expect("known node").unapplied);
        for b in batches {
            self.apply(id, b.snapshot, b.committed);
            self.answer_reads(id, &b.read_states, &b.failed_reads);
        }
        let now = self.node_now(id);
        if let Some(raft) = self.raft_mut(id) {
            raft.advance(now);
        }
        self.maybe_compact(id);
    }

    fn persist(&mut self, id: NodeId, rd: &Ready) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let disk = &mut node.disk;
        if let Some((meta, data)) = &rd.snapshot {
            disk.snapshot = Some((meta.clone(), data.clone()));
            disk.entries.clear();
        }
        if let Some(from) = rd.truncate_from {
            disk.entries.retain(|e| e.index < from);
        }
        let mut failure = None;
        for e in &rd.entries {
            let (last_index, last_term) = disk.last();
            if e.index != last_index + 1 {
                failure = Some(format!(
                    "node {id}: Ready entry {} does not follow the persisted log ending at {last_index}",
                    e.index
                ));
                break;
            }
            if let Err(err) = self.checker.on_persisted(id, e, last_term) {
                failure = Some(err);
                break;
            }
            disk.entries.push(e.clone());
        }
        if let Some(hs) = rd.hard_state {
            disk.hard_state = hs;
        }
        if let Some(f) = failure {
            self.fail(&f);
        }
    }

    fn send_all(&mut self, id: NodeId, messages: Vec<(NodeId, Message)>) {
        for (to, msg) in messages {
            if msg.from != id {
                self.fail(&format!(
                    "node {id} sent a message claiming to be from {}",
                    msg.from
                ));
            }
            let msg = if self.opts.wire_roundtrip {
                let bytes = encode_message(&msg);
                match decode_message(&bytes) {
                    Ok(decoded) if decoded == msg => decoded,
                    other => self.fail(&format!("codec round trip failed for {msg:?}: {other:?}")),
                }
            } else {
                msg
            };
            *self.stats.sent.entry(msg.body.name()).or_default() += 1;
            *self.stats.sent_by.entry((id, msg.body.name())).or_default() += 1;
            match &msg.body {
                MessageBody::AppendResponse(message::AppendResponse::Rejected { .. }) => {
                    *self.stats.rejects_sent.entry(id).or_default() += 1
                }
                MessageBody::InstallSnapshot(_) => {
                    *self.stats.snapshot_chunks.entry(to).or_default() += 1
                }
                _ => {}
            }
            self.log(|| format!("{id} -> {to}: {:?}", short(&msg)));
            self.net.send(&mut self.rng, self.now, id, to, msg);
        }
    }

    fn apply(
        &mut self,
        id: NodeId,
        snapshot: Option<(SnapshotMeta, Vec<u8>)>,
        committed: Vec<Entry>,
    ) {
        let term = self.raft(id).map_or(0, |r| r.term());
        let node = self.nodes.get_mut(&id).expect("known node");
        let mut failure = None;
        if let Some((meta, data)) = snapshot {
            node.app = App::decode(meta.index, &data);
            if let Err(e) = self.checker.on_snapshot(id, &meta, &node.app.normal) {
                failure = Some(e);
            }
        }
        for e in committed {
            if failure.is_some() {
                break;
            }
            if e.index != node.app.applied + 1 {
                failure = Some(format!(
                    "node {id} applies entry {} after {}",
                    e.index, node.app.applied
                ));
                break;
            }
            if let Err(err) = self.checker.on_applied(id, term, &e) {
                failure = Some(err);
                break;
            }
            node.app.applied = e.index;
            if let Some(p) = self.pending.remove(&(id, e.index)) {
                let p = &mut self.proposals[p];
                if p.term == e.term && p.data == e.data {
                    p.acked = true;
                    self.max_acked_index = self.max_acked_index.max(e.index);
                }
            }
            if e.kind == EntryKind::Normal {
                node.app.normal.insert(e.index, (e.term, e.data));
            }
        }
        if let Some(f) = failure {
            self.fail(&f);
        }
    }

    fn maybe_compact(&mut self, id: NodeId) {
        let every = self.opts.compact_every;
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let applied = node.app.applied;
        if every == 0 || applied < raft.snapshot_meta().index + every || raft.applied() != applied {
            return;
        }
        let data = node.app.encode();
        let result = raft.compact(applied, data.clone());
        match result {
            Ok(meta) => {
                node.disk.entries.retain(|e| e.index > meta.index);
                node.disk.snapshot = Some((meta, data));
            }
            Err(e) => self.fail(&format!("node {id} cannot compact to {applied}: {e}")),
        }
    }

    // ------------------------------------------------------------ clients

    /// Proposes `data` at node `id` (which must believe it leads).
    pub fn propose(&mut self, id: NodeId, data: Vec<u8>) -> Result<u64, ProposeError> {
        let now = self.node_now(id);
        let raft = self
            .raft_mut(id)
            .ok_or(ProposeError::NotLeader { leader: None })?;
        let index = raft.propose(now, data.clone())?;
        let term = raft.term();
        self.pending.insert((id, index), self.proposals.len());
        self.proposals.push(Proposal {
            node: id,
            index,
            term,
            data,
            acked: false,
        });
        self.process_ready(id);
        Ok(index)
    }

    /// Issues a linearizable read at node `id`.
    pub fn read(&mut self, id: NodeId) -> u64 {
        self.next_request_id += 1;
        let rid = self.next_request_id;
        let now = self.node_now(id);
        if let Some(raft) = self.raft_mut(id) {
            raft.read_index(now, rid);
            self.reads.insert(
                (id, rid),
                ReadRecord {
                    min_index: self.max_acked_index,
                },
            );
            self.process_ready(id);
        }
        rid
    }

    fn answer_reads(&mut self, id: NodeId, ok: &[ReadState], failed: &[FailedRead]) {
        for rs in ok {
            let Some(rec) = self.reads.remove(&(id, rs.request_id)) else {
                self.fail(&format!(
                    "node {id} answered unknown read {}",
                    rs.request_id
                ));
            };
            if rs.index < rec.min_index {
                self.fail(&format!(
                    "stale read at node {id}: read index {} but write {} was acknowledged \
                     before the read began",
                    rs.index, rec.min_index
                ));
            }
            self.stats.reads_ok += 1;
            self.read_results.insert(rs.request_id, Ok(rs.index));
        }
        for f in failed {
            if self.reads.remove(&(id, f.request_id)).is_none() {
                self.fail(&format!("node {id} failed unknown read {}", f.request_id));
            }
            self.stats.reads_failed += 1;
            self.read_results.insert(f.request_id, Err(f.reason));
        }
    }

    /// Reads issued and not answered yet, as (node, request id).
    pub fn pending_reads(&self) -> Vec<(NodeId, u64)> {
        let mut v: Vec<(NodeId, u64)> = self.reads.keys().copied().collect();
        v.sort_unstable();
        v
    }

    // ------------------------------------------------------------ queries

    /// Live, connected leaders with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, u64)> {
        self.nodes
            .iter()
            .filter(|(id, _)| self.is_connected(**id))
            .filter_map(|(&id, n)| {
                n.raft
                    .as_ref()
                    .filter(|r| r.is_leader())
                    .map(|r| (id, r.term()))
            })
            .collect()
    }

    /// The live leader with the highest term, connected or not.
    pub fn newest_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| {
                n.raft
                    .as_ref()
                    .filter(|r| r.is_leader())
                    .map(|r| (r.term(), id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// How many nodes applied `index`, and the data there (all must agree).
    pub fn n_committed(&self, index: u64) -> (usize, Option<Vec<u8>>) {
        let mut count = 0;
        let mut data: Option<Vec<u8>> = None;
        for (id, node) in &self.nodes {
            if node.app.applied < index {
                continue;
            }
            let here = node.app.normal.get(&index).map(|(_, d)| d.clone());
            if let (Some(a), Some(b)) = (&data, &here) {
                if a != b {
                    self.fail(&format!("nodes disagree at index {index} (node {id})"));
                }
            }
            if here.is_some() {
                data = here;
            }
            count += 1;
        }
        (count, data)
    }
}

/// A message without entry payloads, for traces.
fn short(m: &Message) -> String {
    match &m.body {
        MessageBody::Append(a) => format!(
            "Append t{} prev=({},{}) n={} commit={}",
            m.term,
            a.prev_index,
            a.prev_term,
            a.entries.len(),
            a.commit
        ),
        MessageBody::InstallSnapshot(c) => format!(
            "InstallSnapshot t{} idx={} off={} len={} done={}",
            m.term,
            c.meta.index,
            c.offset,
            c.data.len(),
            c.done
        ),
        other => format!("t{} {other:?}", m.term),
    }
}
