//! `/etc/pact/journal.toml`, the `PACT_JOURNAL_*` environment and the
//! command-line flags, resolved into one [`Settings`].
//!
//! Precedence: flags, then environment, then the file, then defaults.
//!
//! Addresses: every member has a Raft address (peers, default port 9444)
//! and a client address (the line protocol, default port 9443). A member
//! written `"id:host:raft_port"` has its client port at `raft_port - 1`;
//! `"id:host:raft_port:client_port"` names it explicitly. In
//! `PACT_JOURNAL_PEERS=1=host:9443,2=host:9443` (the deployment guide's
//! form) each address is the client address and the Raft port is
//! `client_port + 1`. The node listens for clients on `listen_addr` and
//! for peers on `raft_listen_addr`, by default the host of `listen_addr`
//! with its own member's Raft port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::raft::NodeId;
use crate::config::agent::{SizeValue, TelemetryConfig};
use crate::config::{ConfigError, Source};

/// The default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/pact/journal.toml";

/// The whole file. Sections of a shared `pact.toml` that belong to other
/// daemons are accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalFile {
    #[serde(default)]
    pub journal: JournalSection,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub policy: Option<toml::Value>,
    #[serde(default)]
    pub agent: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSection {
    pub node_id: Option<u64>,
    /// Client port (line protocol).
    pub listen_addr: String,
    /// Peer port; default: the host of `listen_addr`, this member's Raft port.
    pub raft_listen_addr: Option<String>,
    pub data_dir: PathBuf,
    /// Peers of another cluster name are refused at the handshake.
    pub cluster_name: String,
    pub raft: RaftSection,
    pub streaming: StreamingSection,
    pub clients: ClientsSection,
    /// Parsed by the enrollment issue.
    pub enrollment: Option<toml::Value>,
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            node_id: None,
            listen_addr: "0.0.0.0:9443".into(),
            raft_listen_addr: None,
            data_dir: PathBuf::from("/var/lib/pact/journal"),
            cluster_name: "pact".into(),
            raft: RaftSection::default(),
            streaming: StreamingSection::default(),
            clients: ClientsSection::default(),
            enrollment: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    /// Voters: `"id:host:raft_port"` or `"id:host:raft_port:client_port"`.
    pub members: Vec<String>,
    /// Non-voting read replicas, same form (added at bootstrap, or later
    /// with `member add ID learner=true`).
    pub learners: Vec<String>,
    pub snapshot_interval: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Largest peer frame accepted.
    pub max_frame_bytes: SizeValue,
    /// Encoded frames queued for one peer before further messages to it
    /// are dropped (Raft resends).
    pub peer_queue_bytes: SizeValue,
    /// Inbound connections on the Raft port at once; one that has not
    /// greeted makes room for a new one.
    pub max_peer_connections: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            members: Vec::new(),
            learners: Vec::new(),
            snapshot_interval: 10_000,
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            max_frame_bytes: SizeValue(64 << 20),
            peer_queue_bytes: SizeValue(32 << 20),
            max_peer_connections: 64,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingSection {
    /// Boot streams (and the subscriptions they become) one node serves at
    /// once; more get `err 5 retry later`.
    pub max_concurrent_boot_streams: u64,
}

impl Default for StreamingSection {
    fn default() -> Self {
        StreamingSection {
            max_concurrent_boot_streams: 15_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsSection {
    pub max_line: usize,
    pub max_words: usize,
    /// Largest `append` body.
    pub max_body: SizeValue,
    pub max_connections: usize,
    /// Pending connections the kernel queues before `accept` (a boot storm
    /// connects thousands at once); capped by `net.core.somaxconn`.
    pub listen_backlog: u32,
    pub idle_timeout_seconds: u64,
    /// A write not committed by then is answered `err 5 indeterminate`.
    pub request_timeout_ms: u64,
    /// Largest number of entries one `range` returns.
    pub max_range: usize,
    /// A `range` stops adding entries once their data reaches this.
    pub max_range_bytes: SizeValue,
}

impl Default for ClientsSection {
    fn default() -> Self {
        ClientsSection {
            max_line: 8 * 1024,
            max_words: 64,
            max_body: SizeValue(16 << 20),
            // Room for max_concurrent_boot_streams agents plus admins.
            max_connections: 20_000,
            listen_backlog: 4096,
            idle_timeout_seconds: 300,
            request_timeout_ms: 5000,
            max_range: 10_000,
            max_range_bytes: SizeValue(64 << 20),
        }
    }
}

/// Where to reach one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// `host:port` of its Raft listener.
    pub raft: String,
    /// `host:port` of its client listener.
    pub client: String,
}

/// Everything the daemon needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: NodeId,
    pub client_listen: SocketAddr,
    pub raft_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub cluster: String,
    /// Every known member's addresses (voters and learners, self included).
    pub peers: BTreeMap<NodeId, PeerAddr>,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub raft: RaftSection,
    pub clients: ClientsSection,
    pub streaming: StreamingSection,
    pub log_level: String,
    pub log_format: String,
}

/// What the command line and environment contribute.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub node_id: Option<String>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub peers: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

impl Overrides {
    /// `PACT_JOURNAL_NODE_ID`, `PACT_JOURNAL_LISTEN`, `PACT_JOURNAL_DATA_DIR`,
    /// `PACT_JOURNAL_PEERS` (unset or empty variables are ignored).
    pub fn from_env() -> Overrides {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Overrides {
            node_id: var("PACT_JOURNAL_NODE_ID"),
            listen: var("PACT_JOURNAL_LISTEN"),
            data_dir: var("PACT_JOURNAL_DATA_DIR").map(PathBuf::from),
            peers: var("PACT_JOURNAL_PEERS"),
            log_level: None,
            log_format: None,
        }
    }

    /// `other` wins where it has a value.
    pub fn merged(self, other: Overrides) -> Overrides {
        Overrides {
            node_id: other.node_id.or(self.node_id),
            listen: other.listen.or(self.listen),
            data_dir: other.data_dir.or(self.data_dir),
            peers: other.peers.or(self.peers),
            log_level: other.log_level.or(self.log_level),
            log_format: other.log_format.or(self.log_format),
        }
    }
}

impl JournalFile {
    /// Reads a file; a missing file at the default path means defaults.
    pub fn load(path: &Path, must_exist: bool) -> Result<(JournalFile, Source), ConfigError> {
        if !must_exist && !path.exists() {
            let src = Source::from_str(&path.display().to_string(), "");
            return Ok((JournalFile::default(), src));
        }
        let src = Source::read(path)?;
        let file = src.parse()?;
        Ok((file, src))
    }
}

/// Splits `"id:host:port[:client_port]"` (hosts with colons in brackets).
pub fn parse_member(entry: &str) -> Result<(NodeId, PeerAddr), String> {
    let bad = |why: &str| format!("member \"{entry}\": {why} (expected \"id:host:raft_port\")");
    let (id, rest) = entry.split_once(':').ok_or_else(|| bad("no id"))?;
    let id = parse_id(id).map_err(|e| bad(&e))?;
    let (host, ports) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        (
            format!("[{h}]"),
            p.strip_prefix(':').unwrap_or(p).to_string(),
        )
    } else {
        let (h, p) = rest.split_once(':').ok_or_else(|| bad("no port"))?;
        (h.to_string(), p.to_string())
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("empty host"));
    }
    let mut ports = ports.split(':');
    let raft = parse_port(ports.next().unwrap_or("")).map_err(|e| bad(&e))?;
    let client = match ports.next() {
        Some(p) => parse_port(p).map_err(|e| bad(&e))?,
        None => raft
            .checked_sub(1)
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("raft port 1 leaves no client port"))?,
    };
    if ports.next().is_some() {
        return Err(bad("too many ':'"));
    }
    Ok((
        id,
        PeerAddr {
            raft: format!("{host}:{raft}"),
            client: format!("{host}:{client}"),
        },
    ))
}

/// Parses `PACT_JOURNAL_PEERS`: `1=host:9443,2=host:9443` (client
/// addresses; each Raft port is the client port + 1).
pub fn parse_peers_env(s: &str) -> Result<BTreeMap<NodeId, PeerAddr>, String> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = |why: &str| {
            format!("PACT_JOURNAL_PEERS entry \"{item}\": {why} (expected id=host:port)")
        };
        let (id, addr) = item.split_once('=').ok_or_else(|| bad("no '='"))?;
        let id = parse_id(id).map_err(|e| bad(&e))?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port = parse_port(port).map_err(|e| bad(&e))?;
        let raft = port
            .checked_add(1)
            .ok_or_else(|| bad("port 65535 leaves no raft port"))?;
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let peer = PeerAddr {
            raft: format!("{host}:{raft}"),
            client: format!("{host}:{port}"),
        };
        if out.insert(id, peer).is_some() {
            return Err(bad("duplicate id"));
        }
    }
    if out.is_empty() {
        return Err("PACT_JOURNAL_PEERS is empty".into());
    }
    Ok(out)
}

fn parse_id(s: &str) -> Result<NodeId, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("node id 0 is reserved".into()),
        Ok(id) => Ok(id),
        Err(_) => Err(format!("\"{s}\" is not a node id (a positive integer)")),
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("\"{s}\" is not a port")),
        Ok(p) => Ok(p),
    }
}

/// Combines the file and the overrides, checking everything.
pub fn resolve(file: &JournalFile, src: &Source, ov: &Overrides) -> Result<Settings, String> {
    let j = &file.journal;
    let located = |key: &str, msg: String| src.error(None, key, msg).to_string();
    let node_id = match &ov.node_id {
        Some(s) => parse_id(s).map_err(|e| format!("node id: {e}"))?,
        None => j.node_id.ok_or(
            "no node id: pass --node-id, set PACT_JOURNAL_NODE_ID or journal.node_id".to_string(),
        )?,
    };
    if node_id == 0 {
        return Err(located("journal.node_id", "node id 0 is reserved".into()));
    }
    let mut peers = BTreeMap::new();
    let mut voters = BTreeSet::new();
    let mut learners = BTreeSet::new();
    match &ov.peers {
        Some(env) => {
            for (id, addr) in parse_peers_env(env)? {
                voters.insert(id);
                peers.insert(id, addr);
            }
        }
        None => {
            for m in &j.raft.members {
                let (id, addr) = parse_member(m).map_err(|e| located("journal.raft.members", e))?;
                if peers.insert(id, addr).is_some() {
                    return Err(located(
                        "journal.raft.members",
                        format!("node {id} listed twice"),
                    ));
                }
                voters.insert(id);
            }
        }
    }
    for m in &j.raft.learners {
        let (id, addr) = parse_member(m).map_err(|e| located("journal.raft.learners", e))?;
        if peers.insert(id, addr).is_some() {
            return Err(located(
                "journal.raft.learners",
                format!("node {id} is already a member"),
            ));
        }
        learners.insert(id);
    }
    let listen = ov.listen.clone().unwrap_or_else(|| j.listen_addr.clone());
    let client_listen: SocketAddr = listen.parse().map_err(|_| {
        located(
            "journal.listen_addr",
            format!("\"{listen}\" is not ip:port"),
        )
    })?;
    let raft_listen: SocketAddr = match &j.raft_listen_addr {
        Some(a) => a.parse().map_err(|_| {
            located(
                "journal.raft_listen_addr",
                format!("\"{a}\" is not ip:port"),
            )
        })?,
        None => {
            let own = peers.get(&node_id).ok_or_else(|| {
                format!(
                    "node {node_id} is not in journal.raft.members or learners (nor in \
                     PACT_JOURNAL_PEERS): add it, or set journal.raft_listen_addr"
                )
            })?;
            let port = own
                .raft
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .ok_or_else(|| format!("bad raft address {}", own.raft))?;
            SocketAddr::new(client_listen.ip(), port)
        }
    };
    let r = &j.raft;
    if r.snapshot_interval == 0 {
        return Err(located(
            "journal.raft.snapshot_interval",
            "must be at least 1".into(),
        ));
    }
    if r.heartbeat_ms == 0
        || r.election_timeout_min_ms <= r.heartbeat_ms
        || r.election_timeout_max_ms <= r.election_timeout_min_ms
    {
        return Err(located(
            "journal.raft",
            "need 0 < heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms".into(),
        ));
    }
    let c = &j.clients;
    if c.request_timeout_ms <= r.heartbeat_ms || c.idle_timeout_seconds == 0 {
        // A request must outlive at least one heartbeat round (a ReadIndex
        // confirmation), or every request would time out.
        return Err(located(
            "journal.clients",
            format!(
                "request_timeout_ms must exceed raft.heartbeat_ms ({}) and idle_timeout_seconds \
                 must be at least 1",
                r.heartbeat_ms
            ),
        ));
    }
    if c.max_line < 64 || c.max_words < 4 || c.max_connections == 0 || c.max_range == 0 {
        return Err(located(
            "journal.clients",
            "max_line >= 64, max_words >= 4, max_connections >= 1 and max_range >= 1 are required"
                .into(),
        ));
    }
    // Peers join a cluster one at a time (`member add`): room for the
    // configured ones and as many more, at least 8.
    let peer_need = (2 * peers.len() as u64).max(8);
    if r.max_peer_connections < peer_need {
        return Err(located(
            "journal.raft.max_peer_connections",
            format!("must be at least {peer_need} (twice the members and learners, at least 8)"),
        ));
    }
    let frame_need = c.max_body.0 + (2 << 20);
    if r.max_frame_bytes.0 < frame_need {
        return Err(located(
            "journal.raft.max_frame_bytes",
            format!(
                "must be at least clients.max_body + 2 MiB = {frame_need} bytes (an entry and \
                 one append batch must fit in a frame)"
            ),
        ));
    }
    let log_level = ov
        .log_level
        .clone()
        .unwrap_or_else(|| file.telemetry.log_level.clone());
    crate::logger::parse_level(&log_level).map_err(|e| located("telemetry.log_level", e))?;
    let log_format = ov
        .log_format
        .clone()
        .unwrap_or_else(|| file.telemetry.log_format.clone());
    log_format
        .parse::<crate::logger::Format>()
        .map_err(|e| located("telemetry.log_format", e))?;
    if j.cluster_name.is_empty() || j.cluster_name.len() > 255 {
        return Err(located(
            "journal.cluster_name",
            "must be 1 to 255 bytes".into(),
        ));
    }
    Ok(Settings {
        node_id,
        client_listen,
        raft_listen,
        data_dir: ov.data_dir.clone().unwrap_or_else(|| j.data_dir.clone()),
        cluster: j.cluster_name.clone(),
        peers,
        voters,
        learners,
        raft: j.raft.clone(),
        clients: j.clients.clone(),
        streaming: j.streaming.clone(),
        log_level,
        log_format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<JournalFile, ConfigError> {
        Source::from_str("journal.toml", text).parse()
    }

    const GUIDE: &str = r#"
[journal]
listen_addr = "0.0.0.0:9443"
data_dir = "/var/lib/pact/journal"

[journal.raft]
members = [
"1:journal-1.mgmt:9444",
"2:journal-2.mgmt:9444",
"3:journal-3.mgmt:9444"
]
snapshot_interval = 10000

[journal.streaming]
max_concurrent_boot_streams = 15000

[policy]
enabled = true

[telemetry]
log_level = "info"
log_format = "json"
prometheus_enabled = true
prometheus_listen = "0.0.0.0:9091"
"#;

    #[test]
    fn the_deployment_guide_file_parses() {
        let f = parse(GUIDE).unwrap();
        let src = Source::from_str("journal.toml", GUIDE);
        let ov = Overrides {
            node_id: Some("2".into()),
            ..Overrides::default()
        };
        let s = resolve(&f, &src, &ov).unwrap();
        assert_eq!(s.node_id, 2);
        assert_eq!(s.voters.len(), 3);
        assert_eq!(s.peers[&3].raft, "journal-3.mgmt:9444");
        assert_eq!(s.peers[&3].client, "journal-3.mgmt:9443");
        assert_eq!(s.raft_listen.to_string(), "0.0.0.0:9444");
        assert_eq!(s.streaming.max_concurrent_boot_streams, 15000);
        assert_eq!(s.clients.max_body.0, 16 << 20);
    }

    #[test]
    fn unknown_keys_are_located() {
        let e = parse("[journal.raft]\nmembers = []\nsnapshot_intervall = 5\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("journal.raft.snapshot_intervall"));
    }

    #[test]
    fn env_peers_use_client_ports() {
        let p = parse_peers_env("1=journal-1:9443, 2=10.0.0.2:9443").unwrap();
        assert_eq!(p[&1].raft, "journal-1:9444");
        assert_eq!(p[&2].client, "10.0.0.2:9443");
        assert!(parse_peers_env("0=a:1").is_err());
        assert!(parse_peers_env("1=a").is_err());
        assert!(parse_peers_env("1=a:1,1=b:1").is_err());
        let f = parse(GUIDE).unwrap();
        let src = Source::from_str("journal.toml", GUIDE);
        let env = Overrides {
            node_id: Some("1".into()),
            peers: Some("1=127.0.0.1:7000,2=127.0.0.2:7000".into()),
            listen: Some("127.0.0.1:7000".into()),
            ..Overrides::default()
        };
        let s = resolve(&f, &src, &env).unwrap();
        assert_eq!(s.voters.len(), 2);
        assert_eq!(s.raft_listen.to_string(), "127.0.0.1:7001");
    }

    #[test]
    fn member_forms() {
        let (id, a) = parse_member("4:[::1]:9444:9000").unwrap();
        assert_eq!(
            (id, a.raft.as_str(), a.client.as_str()),
            (4, "[::1]:9444", "[::1]:9000")
        );
        for bad in ["x:h:1", "1:h", "1::9444", "1:h:0", "1:h:9444:1:2", "0:h:9"] {
            assert!(parse_member(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let text = "[journal]\nnode_id = 1\n[journal.raft]\nmembers = [\"1:127.0.0.1:9444\"]\nheartbeat_ms = 600\n";
        let f = parse(text).unwrap();
        let e = resolve(&f, &Source::from_str("j.toml", text), &Overrides::default()).unwrap_err();
        assert!(
            e.contains("journal.raft") && e.contains("heartbeat_ms"),
            "{e}"
        );
        let e = resolve(
            &JournalFile::default(),
            &Source::from_str("j.toml", ""),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.contains("no node id"), "{e}");
    }
}
