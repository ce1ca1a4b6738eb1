//! The configuration journal's entries (digest §2) and the commands that
//! create them through Raft.
//!
//! A command is proposed as a Raft entry (tag byte [`TAG_COMMAND`], then
//! JSON). Applying it validates it deterministically — every replica
//! accepts or rejects it the same way — and, when accepted, gives the
//! resulting [`ConfigEntry`] the next sequence number (J1: from 0, no
//! gaps; a rejected command takes none). Entries are never modified (J2).

use serde::{Deserialize, Serialize};

/// Raft payload tags: opaque `append` payloads (the low-level journal API)
/// and typed configuration commands.
pub const TAG_RAW: u8 = 0;
pub const TAG_COMMAND: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryType {
    Commit,
    Rollback,
    AutoConverge,
    DriftDetected,
    CapabilityChange,
    PolicyUpdate,
    BootConfig,
    EmergencyStart,
    EmergencyEnd,
    ExecLog,
    ShellSession,
    ServiceLifecycle,
    PendingApproval,
    NodeEnrolled,
    NodeActivated,
    NodeDeactivated,
    NodeDecommissioned,
    NodeAssigned,
    NodeUnassigned,
    CertSigned,
    CertRevoked,
    PromoteConflictDetected,
    /// An opaque `append` payload.
    Raw,
}

impl EntryType {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::Commit => "Commit",
            EntryType::Rollback => "Rollback",
            EntryType::AutoConverge => "AutoConverge",
            EntryType::DriftDetected => "DriftDetected",
            EntryType::CapabilityChange => "CapabilityChange",
            EntryType::PolicyUpdate => "PolicyUpdate",
            EntryType::BootConfig => "BootConfig",
            EntryType::EmergencyStart => "EmergencyStart",
            EntryType::EmergencyEnd => "EmergencyEnd",
            EntryType::ExecLog => "ExecLog",
            EntryType::ShellSession => "ShellSession",
            EntryType::ServiceLifecycle => "ServiceLifecycle",
            EntryType::PendingApproval => "PendingApproval",
            EntryType::NodeEnrolled => "NodeEnrolled",
            EntryType::NodeActivated => "NodeActivated",
            EntryType::NodeDeactivated => "NodeDeactivated",
            EntryType::NodeDecommissioned => "NodeDecommissioned",
            EntryType::NodeAssigned => "NodeAssigned",
            EntryType::NodeUnassigned => "NodeUnassigned",
            EntryType::CertSigned => "CertSigned",
            EntryType::CertRevoked => "CertRevoked",
            EntryType::PromoteConflictDetected => "PromoteConflictDetected",
            EntryType::Raw => "Raw",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    Global,
    VCluster(String),
    Node(String),
}

impl Scope {
    /// `global`, `vcluster:<name>`, `node:<name>`.
    pub fn to_text(&self) -> String {
        match self {
            Scope::Global => "global".to_string(),
            Scope::VCluster(v) => format!("vcluster:{v}"),
            Scope::Node(n) => format!("node:{n}"),
        }
    }

    pub fn parse(s: &str) -> Result<Scope, String> {
        match s.split_once(':') {
            None if s == "global" => Ok(Scope::Global),
            Some(("vcluster", v)) if !v.is_empty() => Ok(Scope::VCluster(v.to_string())),
            Some(("node", n)) if !n.is_empty() => Ok(Scope::Node(n.to_string())),
            _ => Err(format!(
                "bad scope \"{s}\" (global, vcluster:<name> or node:<name>)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrincipalType {
    Human,
    Agent,
    Service,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    pub principal: String,
    pub principal_type: PrincipalType,
    pub role: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeltaAction {
    Add,
    Remove,
    Modify,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaItem {
    pub action: DeltaAction,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

/// Seven dimensions of change (digest §2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StateDelta {
    pub mounts: Vec<DeltaItem>,
    pub files: Vec<DeltaItem>,
    pub network: Vec<DeltaItem>,
    pub services: Vec<DeltaItem>,
    pub kernel: Vec<DeltaItem>,
    pub packages: Vec<DeltaItem>,
    pub gpu: Vec<DeltaItem>,
}

impl StateDelta {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.mounts.len()
            + self.files.len()
            + self.network.len()
            + self.services.len()
            + self.kernel.len()
            + self.packages.len()
            + self.gpu.len()
    }

    /// `(dimension, item)` pairs in a fixed order.
    pub fn items(&self) -> Vec<(&'static str, &DeltaItem)> {
        let dims: [(&'static str, &Vec<DeltaItem>); 7] = [
            ("kernel", &self.kernel),
            ("mounts", &self.mounts),
            ("files", &self.files),
            ("services", &self.services),
            ("network", &self.network),
            ("packages", &self.packages),
            ("gpu", &self.gpu),
        ];
        dims.iter()
            .flat_map(|(d, v)| v.iter().map(move |i| (*d, i)))
            .collect()
    }
}

/// One entry of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigEntry {
    /// Assigned at apply time.
    #[serde(default)]
    pub sequence: u64,
    /// Unix milliseconds, set by the node that proposed it.
    pub timestamp: u64,
    pub entry_type: EntryType,
    pub scope: Scope,
    pub author: Author,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_delta: Option<StateDelta>,
    #[serde(default)]
    pub policy_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_reason: Option<String>,
    /// The commit message (`-m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How a promote treats other nodes' local values for promoted keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// Report conflicts and change nothing.
    Report,
    /// The overlay wins; other nodes' local values are dropped (logged).
    Overwrite,
    /// Other nodes keep their local values as their deltas.
    KeepLocal,
}

/// What is proposed through Raft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A plain entry (DriftDetected, ServiceLifecycle, ...).
    Record { entry: ConfigEntry },
    /// `pact apply`: an overlay spec for the entry's vCluster scope.
    ApplyOverlay { entry: ConfigEntry, spec: String },
    /// A node's committed delta, as an overlay spec fragment.
    CommitNodeDelta { entry: ConfigEntry, spec: String },
    /// Restore the declared state of a scope as of `entry.parent`.
    Rollback { entry: ConfigEntry },
    /// Promote a node's committed deltas into its vCluster's overlay.
    Promote {
        entry: ConfigEntry,
        node: String,
        resolution: Resolution,
    },
    /// Assign a node to a vCluster (or unassign with `vcluster: None`).
    Assign {
        entry: ConfigEntry,
        node: String,
        vcluster: Option<String>,
    },
    /// A vCluster's policy, as TOML (`[vcluster.X.policy]` or bare fields).
    SetPolicy { entry: ConfigEntry, policy: String },
}

impl Command {
    pub fn entry(&self) -> &ConfigEntry {
        match self {
            Command::Record { entry }
            | Command::ApplyOverlay { entry, .. }
            | Command::CommitNodeDelta { entry, .. }
            | Command::Rollback { entry }
            | Command::Promote { entry, .. }
            | Command::Assign { entry, .. }
            | Command::SetPolicy { entry, .. } => entry,
        }
    }

    pub fn entry_mut(&mut self) -> &mut ConfigEntry {
        match self {
            Command::Record { entry }
            | Command::ApplyOverlay { entry, .. }
            | Command::CommitNodeDelta { entry, .. }
            | Command::Rollback { entry }
            | Command::Promote { entry, .. }
            | Command::Assign { entry, .. }
            | Command::SetPolicy { entry, .. } => entry,
        }
    }

    /// The Raft payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![TAG_COMMAND];
        out.extend(serde_json::to_vec(self).expect("commands serialize"));
        out
    }

    /// Read a Raft payload; raw payloads are not commands.
    pub fn decode(data: &[u8]) -> Result<Option<Command>, String> {
        match data.split_first() {
            Some((&TAG_COMMAND, json)) => serde_json::from_slice(json)
                .map(Some)
                .map_err(|e| format!("bad command: {e}")),
            _ => Ok(None),
        }
    }
}

/// Bounds of a delta's TTL (seconds).
pub const TTL_MIN: u32 = 900;
pub const TTL_MAX: u32 = 864_000;

/// The checks every entry passes before it is written (digest §4 texts).
pub fn validate_entry(e: &ConfigEntry, next_sequence: u64) -> Result<(), String> {
    if e.author.principal.trim().is_empty() {
        return Err("author principal required".to_string());
    }
    if e.author.role.trim().is_empty() {
        return Err("author role required".to_string());
    }
    if let Some(p) = e.parent {
        if p >= next_sequence {
            return Err("parent must precede entry".to_string());
        }
    }
    if let Some(ttl) = e.ttl_seconds {
        validate_ttl(ttl)?;
    }
    Ok(())
}

pub fn validate_ttl(ttl: u32) -> Result<(), String> {
    if ttl < TTL_MIN {
        return Err("TTL must be >= 900 seconds (15 minutes)".to_string());
    }
    if ttl > TTL_MAX {
        return Err("TTL must be <= 864000 seconds (10 days)".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ConfigEntry {
        ConfigEntry {
            sequence: 0,
            timestamp: 1,
            entry_type: EntryType::Commit,
            scope: Scope::VCluster("ml".into()),
            author: Author {
                principal: "alice@org".into(),
                principal_type: PrincipalType::Human,
                role: "pact-ops-ml".into(),
            },
            parent: None,
            state_delta: None,
            policy_ref: String::new(),
            ttl_seconds: None,
            emergency_reason: None,
            message: None,
        }
    }

    #[test]
    fn validation_texts_match_the_spec() {
        let mut e = entry();
        assert_eq!(validate_entry(&e, 0), Ok(()));
        e.author.principal = "".into();
        assert_eq!(
            validate_entry(&e, 0).unwrap_err(),
            "author principal required"
        );
        e = entry();
        e.author.role = " ".into();
        assert_eq!(validate_entry(&e, 0).unwrap_err(), "author role required");
        e = entry();
        e.parent = Some(5);
        assert_eq!(
            validate_entry(&e, 5).unwrap_err(),
            "parent must precede entry"
        );
        assert_eq!(validate_entry(&e, 6), Ok(()));
        e = entry();
        e.ttl_seconds = Some(300);
        assert_eq!(
            validate_entry(&e, 0).unwrap_err(),
            "TTL must be >= 900 seconds (15 minutes)"
        );
        e.ttl_seconds = Some(864_001);
        assert_eq!(
            validate_entry(&e, 0).unwrap_err(),
            "TTL must be <= 864000 seconds (10 days)"
        );
        e.ttl_seconds = Some(900);
        assert_eq!(validate_entry(&e, 0), Ok(()));
        e.ttl_seconds = Some(864_000);
        assert_eq!(validate_entry(&e, 0), Ok(()));
    }

    #[test]
    fn commands_round_trip_and_raw_is_not_a_command() {
        let c = Command::ApplyOverlay {
            entry: entry(),
            spec: "[vcluster.ml.sysctl]\n".into(),
        };
        assert_eq!(Command::decode(&c.encode()).unwrap(), Some(c));
        assert_eq!(Command::decode(b"\x00opaque").unwrap(), None);
        assert_eq!(Command::decode(b"").unwrap(), None);
        assert!(Command::decode(b"\x01{nope").is_err());
        assert_eq!(
            Scope::parse("vcluster:ml"),
            Ok(Scope::VCluster("ml".into()))
        );
        assert_eq!(
            Scope::parse(&Scope::Node("n1".into()).to_text()),
            Ok(Scope::Node("n1".into()))
        );
        assert!(Scope::parse("planet:x").is_err());
    }
}
