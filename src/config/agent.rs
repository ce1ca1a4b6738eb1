//! `/etc/pact/agent.toml`: the `[agent]` schema of the digest plus the
//! agent's own operational settings, and `[telemetry]`.
//!
//! Everything is parsed now; sections that later issues use (shell,
//! commit window, enrollment ...) are kept for them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, Source};

/// The whole agent configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Sections of a shared pact.toml that belong to other daemons.
    #[serde(default)]
    pub journal: Option<toml::Value>,
    #[serde(default)]
    pub policy: Option<toml::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnforcementMode {
    #[default]
    Observe,
    Warn,
    Enforce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SupervisorBackend {
    #[default]
    Pact,
    Systemd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhitelistMode {
    Strict,
    #[default]
    Learning,
    Bypass,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Defaults to the hostname.
    pub node_id: Option<String>,
    pub vcluster: Option<String>,
    #[serde(default)]
    pub enforcement_mode: EnforcementMode,
    /// Runtime state: sockets, logs, the cached overlay. Default `/run/pact`.
    pub state_dir: Option<PathBuf>,
    /// Default `<state_dir>/agent.sock`.
    pub control_socket: Option<PathBuf>,
    /// Local service declarations (until the journal serves them).
    pub services_file: Option<PathBuf>,
    #[serde(default)]
    pub supervisor: SupervisorConfig,
    #[serde(default)]
    pub logs: LogsConfig,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub readiness: ReadinessConfig,
    #[serde(default)]
    pub watchdog: WatchdogConfig,
    #[serde(default)]
    pub boot: BootConfig,
    #[serde(default)]
    pub journal: JournalConnection,
    #[serde(default)]
    pub observer: ObserverConfig,
    #[serde(default)]
    pub shell: ShellConfig,
    #[serde(default)]
    pub commit_window: CommitWindowConfig,
    #[serde(default)]
    pub blacklist: BlacklistConfig,
    pub capability: Option<CapabilityConfig>,
    pub enrollment: Option<EnrollmentConfig>,
    pub identity: Option<IdentityConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    pub backend: SupervisorBackend,
    /// Where cgroup v2 is mounted; the agent's tree goes below it.
    pub cgroup_root: PathBuf,
    /// Deaths in a row, each before `stable_run_seconds`, that mark a
    /// service Failed instead of restarting it again.
    pub crash_loop_max: u32,
    /// A run at least this long resets the backoff and the crash count.
    pub stable_run_seconds: u64,
    /// Upper bound of the restart backoff.
    pub backoff_cap_seconds: u64,
    /// How long a killed scope may take to empty before it is abandoned
    /// as a zombie and the service restarts in a fresh scope.
    pub scope_kill_timeout_seconds: u64,
    /// For the node's readiness at boot, a service without a readiness
    /// protocol must have been running this long (one that dies right
    /// after its exec fails the boot instead of being counted ready).
    pub boot_settle_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            backend: SupervisorBackend::Pact,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            crash_loop_max: 5,
            stable_run_seconds: 10,
            backoff_cap_seconds: 60,
            scope_kill_timeout_seconds: 10,
            boot_settle_ms: 200,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Default `<state_dir>/logs`.
    pub dir: Option<PathBuf>,
    /// Size at which `<svc>.log` is rotated to `<svc>.log.1`.
    pub max_bytes: SizeValue,
    /// Rotated files kept per service.
    pub keep: u32,
    /// Lines kept in memory per service for `service logs`.
    pub tail_lines: usize,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            dir: None,
            max_bytes: SizeValue(1 << 20),
            keep: 2,
            tail_lines: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    pub max_line: usize,
    pub max_words: usize,
    pub max_body: SizeValue,
    pub max_connections: usize,
    pub idle_timeout_seconds: u64,
    /// uids allowed besides root (and the agent's own uid).
    pub allowed_uids: Vec<u32>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            max_line: 8 * 1024,
            max_words: 64,
            max_body: SizeValue(1 << 20),
            max_connections: 64,
            idle_timeout_seconds: 300,
            allowed_uids: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadinessConfig {
    /// Default `hpc_node::readiness::READINESS_FILE_PATH` (`/run/pact/ready`).
    pub file: Option<PathBuf>,
    /// Default `/run/pact/ready.sock`.
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    pub device: PathBuf,
    pub timeout_seconds: u32,
    /// Use the watchdog even when not PID 1 (tests).
    pub force: bool,
    /// The watchdog timeout set for the shutdown path.
    pub shutdown_timeout_seconds: u32,
    /// TEST HOOK, off by default: `stall` on the control socket makes the
    /// event loop hang so the watchdog fires.
    pub stall_hook: bool,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            device: PathBuf::from("/dev/watchdog"),
            timeout_seconds: 60,
            force: false,
            shutdown_timeout_seconds: 600,
            stall_hook: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootConfig {
    /// Kernel modules to load in InitHardware.
    pub modules: Vec<String>,
    /// Where modules live; default `/lib/modules/<release>`.
    pub modules_dir: Option<PathBuf>,
    /// sysctls to set in InitHardware (`"vm.swappiness" = "10"`).
    pub sysctl: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConnection {
    pub endpoints: Vec<String>,
    pub tls_enabled: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// How long PullOverlay waits for the journal before booting from the
    /// cached overlay.
    pub boot_wait_seconds: f64,
}

impl Default for JournalConnection {
    fn default() -> Self {
        JournalConnection {
            endpoints: Vec::new(),
            tls_enabled: false,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            boot_wait_seconds: 10.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObserverConfig {
    pub ebpf_enabled: bool,
    pub inotify_enabled: bool,
    pub netlink_enabled: bool,
}

impl Default for ObserverConfig {
    fn default() -> Self {
        ObserverConfig {
            ebpf_enabled: false,
            inotify_enabled: true,
            netlink_enabled: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShellConfig {
    pub enabled: bool,
    pub listen: String,
    pub whitelist_mode: WhitelistMode,
    pub auth: Option<ShellAuth>,
}

impl Default for ShellConfig {
    fn default() -> Self {
        ShellConfig {
            enabled: true,
            listen: "0.0.0.0:9445".to_string(),
            whitelist_mode: WhitelistMode::Learning,
            auth: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellAuth {
    pub issuer: String,
    pub audience: String,
    pub hmac_secret: Option<String>,
    pub jwks_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommitWindowConfig {
    pub base_window_seconds: u32,
    pub drift_sensitivity: f64,
    pub emergency_window_seconds: u32,
}

impl Default for CommitWindowConfig {
    fn default() -> Self {
        CommitWindowConfig {
            base_window_seconds: 900,
            drift_sensitivity: 2.0,
            emergency_window_seconds: 14400,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlacklistConfig {
    pub patterns: Vec<String>,
}

impl Default for BlacklistConfig {
    fn default() -> Self {
        BlacklistConfig {
            patterns: [
                "/tmp/**",
                "/var/log/**",
                "/proc/**",
                "/sys/**",
                "/dev/**",
                "/run/user/**",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityConfig {
    pub manifest_path: PathBuf,
    pub socket_path: PathBuf,
    #[serde(default = "default_gpu_poll")]
    pub gpu_poll_interval_seconds: u32,
}

fn default_gpu_poll() -> u32 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentConfig {
    pub journal_endpoints: Vec<String>,
    pub ca_cert: PathBuf,
    #[serde(default = "default_cert_dir")]
    pub cert_dir: PathBuf,
    #[serde(default = "default_renewal")]
    pub renewal_before_expiry_seconds: u32,
}

fn default_cert_dir() -> PathBuf {
    PathBuf::from("/var/lib/pact/certs")
}

fn default_renewal() -> u32 {
    43200
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub provider: String,
    pub spire_socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub log_level: String,
    pub log_format: String,
    pub prometheus_enabled: bool,
    pub prometheus_listen: Option<String>,
    pub loki_enabled: bool,
    pub loki_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_level: "info".to_string(),
            log_format: "text".to_string(),
            prometheus_enabled: false,
            prometheus_listen: None,
            loki_enabled: false,
            loki_endpoint: None,
        }
    }
}

/// A byte size written as an integer or a string with a unit (`"1M"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeValue(pub u64);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SizeValue, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size in bytes or a string like \"64M\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeValue, E> {
                u64::try_from(v)
                    .map(SizeValue)
                    .map_err(|_| E::custom("size must not be negative"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeValue, E> {
                Ok(SizeValue(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeValue, E> {
                match super::size::parse_size(v).map_err(E::custom)? {
                    Some(n) => Ok(SizeValue(n)),
                    None => Err(E::custom("\"max\" is not allowed here")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl AgentFile {
    /// Read and check an agent configuration file. A missing file at the
    /// default path is not an error (defaults apply); elsewhere it is.
    pub fn load(path: &Path, must_exist: bool) -> Result<AgentFile, ConfigError> {
        if !must_exist && !path.exists() {
            return Ok(AgentFile::default());
        }
        let src = Source::read(path)?;
        AgentFile::parse(&src)
    }

    pub fn parse(src: &Source) -> Result<AgentFile, ConfigError> {
        let file: AgentFile = src.parse()?;
        file.check(src)?;
        Ok(file)
    }

    fn check(&self, src: &Source) -> Result<(), ConfigError> {
        let a = &self.agent;
        if let Err(e) = crate::logger::parse_level(&self.telemetry.log_level) {
            return Err(src.error(None, "telemetry.log_level", e));
        }
        if let Err(e) = self.telemetry.log_format.parse::<crate::logger::Format>() {
            return Err(src.error(None, "telemetry.log_format", e));
        }
        if a.supervisor.crash_loop_max == 0 {
            return Err(src.error(
                None,
                "agent.supervisor.crash_loop_max",
                "must be at least 1",
            ));
        }
        if a.control.max_line < 64 || a.control.max_words < 4 {
            return Err(src.error(
                None,
                "agent.control",
                "max_line must be at least 64 and max_words at least 4",
            ));
        }
        if a.watchdog.timeout_seconds < 2 {
            return Err(src.error(None, "agent.watchdog.timeout_seconds", "must be at least 2"));
        }
        Ok(())
    }
}

impl AgentConfig {
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/pact"))
    }

    pub fn control_socket(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| self.state_dir().join("agent.sock"))
    }

    pub fn log_dir(&self) -> PathBuf {
        self.logs
            .dir
            .clone()
            .unwrap_or_else(|| self.state_dir().join("logs"))
    }

    pub fn ready_file(&self) -> PathBuf {
        self.readiness
            .file
            .clone()
            .unwrap_or_else(|| self.relocate(hpc_node::readiness::READINESS_FILE_PATH))
    }

    pub fn ready_socket(&self) -> PathBuf {
        self.readiness
            .socket
            .clone()
            .unwrap_or_else(|| self.relocate(hpc_node::readiness::READINESS_SOCKET_PATH))
    }

    /// The cached copy of the last good service declarations.
    pub fn cached_services(&self) -> PathBuf {
        self.state_dir().join("services.toml")
    }

    /// A well-known `/run/pact/...` path moved under a custom state dir.
    fn relocate(&self, well_known: &str) -> PathBuf {
        let rel = well_known.strip_prefix("/run/pact/").unwrap_or(well_known);
        self.state_dir().join(rel)
    }

    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(hostname)
    }
}

/// The kernel's hostname, or "localhost".
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_schema_parses() {
        let text = r#"
[agent]
node_id = "node-042"
vcluster = "ml-training"
enforcement_mode = "enforce"
state_dir = "/tmp/pact-test"

[agent.supervisor]
backend = "pact"
cgroup_root = "/sys/fs/cgroup/unified"
crash_loop_max = 3

[agent.logs]
max_bytes = "64K"

[agent.journal]
endpoints = ["journal-1.mgmt:9443"]
tls_enabled = true
tls_cert = "/etc/pact/agent.crt"
tls_key = "/etc/pact/agent.key"
tls_ca = "/etc/pact/ca.crt"

[agent.observer]
ebpf_enabled = true

[agent.shell]
listen = "0.0.0.0:9445"
whitelist_mode = "strict"

[agent.shell.auth]
issuer = "https://idp/realm"
audience = "pact-cli"

[agent.commit_window]
base_window_seconds = 900
drift_sensitivity = 2.0
emergency_window_seconds = 14400

[agent.blacklist]
patterns = ["/tmp/**"]

[agent.watchdog]
timeout_seconds = 30

[agent.boot]
modules = ["i6300esb"]
sysctl = { "vm.swappiness" = "10" }

[telemetry]
log_level = "debug"
log_format = "json"
"#;
        let f = AgentFile::parse(&Source::from_str("agent.toml", text)).unwrap();
        assert_eq!(f.agent.node_id(), "node-042");
        assert_eq!(f.agent.enforcement_mode, EnforcementMode::Enforce);
        assert_eq!(f.agent.supervisor.crash_loop_max, 3);
        assert_eq!(f.agent.logs.max_bytes, SizeValue(64 << 10));
        assert_eq!(f.agent.shell.whitelist_mode, WhitelistMode::Strict);
        assert_eq!(
            f.agent.control_socket(),
            PathBuf::from("/tmp/pact-test/agent.sock")
        );
        assert_eq!(f.agent.ready_file(), PathBuf::from("/tmp/pact-test/ready"));
        assert_eq!(f.agent.watchdog.timeout_seconds, 30);
    }

    #[test]
    fn defaults_without_file() {
        let f = AgentFile::load(Path::new("/nonexistent/agent.toml"), false).unwrap();
        assert_eq!(f.agent.enforcement_mode, EnforcementMode::Observe);
        assert_eq!(f.agent.ready_file(), PathBuf::from("/run/pact/ready"));
        assert_eq!(
            f.agent.supervisor.cgroup_root,
            PathBuf::from("/sys/fs/cgroup")
        );
        assert!(AgentFile::load(Path::new("/nonexistent/agent.toml"), true).is_err());
    }

    #[test]
    fn errors_name_line_and_key() {
        let text =
            "[agent]\nnode_id = \"n\"\n\n[agent.supervisor]\nbackend = \"pact\"\nbogus = 1\n";
        let e = AgentFile::parse(&Source::from_str("agent.toml", text)).unwrap_err();
        assert_eq!(e.line, Some(6));
        assert_eq!(e.key.as_deref(), Some("agent.supervisor.bogus"));

        let text = "[agent]\nenforcement_mode = \"strict\"\n";
        let e = AgentFile::parse(&Source::from_str("agent.toml", text)).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("unknown variant"), "{e}");

        let text = "[telemetry]\nlog_level = \"loud\"\n";
        let e = AgentFile::parse(&Source::from_str("agent.toml", text)).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("telemetry.log_level"));
    }
}
