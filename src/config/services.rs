//! Service declarations in the vCluster overlay format:
//!
//! ```toml
//! [vcluster.ml-training.services.chronyd]
//! binary = "/usr/sbin/chronyd"
//! args = ["-d"]
//! restart = "always"          # always | on-failure | never
//! order = 10
//! depends_on = []
//! cgroup_slice = "infra"      # infra | network | gpu | audit
//! cgroup_memory_max = "64M"
//! health_check = { type = "tcp", port = 323, interval_seconds = 10 }
//! ```
//!
//! [`ServiceSet::parse`] turns such a file into validated [`ServiceSpec`]s in
//! start order, or into an error naming the file, line and key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::size::parse_size;
use super::users::{lookup_group, lookup_user};
use super::{ConfigError, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

/// How a service tells the agent it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadyMode {
    /// Ready when spawned (or at its first good health check, if it has one).
    #[default]
    Spawned,
    /// `READY=1` on the `NOTIFY_SOCKET` datagram socket (systemd's protocol).
    Notify,
    /// A newline written to the inherited file descriptor (s6, dinit).
    Fd(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ReadyKind {
    Notify,
    Fd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    Process,
    Tcp,
    Http,
}

/// A validated health check.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSpec {
    pub kind: HealthKind,
    /// `host:port` to connect to (tcp, http).
    pub addr: Option<String>,
    /// Path and host header for http.
    pub http_path: String,
    pub http_host: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that make a running service unhealthy.
    pub failure_threshold: u32,
}

/// cgroup limits of a service's scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeLimits {
    pub memory_max: Option<u64>,
    pub cpu_weight: Option<u16>,
    /// `io.max` lines (`MAJ:MIN rbps=... wbps=...`), or a bytes/s figure
    /// applied to every block device.
    pub io_max: Option<IoMax>,
    pub pids_max: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoMax {
    Line(String),
    BytesPerSec(u64),
}

/// A validated service, ready for the supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub user: Option<(u32, u32)>,
    pub restart: RestartPolicy,
    pub restart_delay: Duration,
    pub order: i64,
    pub depends_on: Vec<String>,
    /// Slice path below the cgroup root, e.g. `pact.slice/infra.slice`.
    pub slice: String,
    pub limits: ScopeLimits,
    pub health: Option<HealthSpec>,
    pub ready: ReadyMode,
    pub stop_timeout: Duration,
    pub start_timeout: Duration,
    pub working_directory: Option<PathBuf>,
    /// The service's `oom_score_adj` (-1000..=1000, default 0).
    pub oom_score_adj: i32,
}

/// Validated services of one vCluster, in start order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceSet {
    pub vcluster: String,
    pub services: Vec<ServiceSpec>,
}

// ---- raw TOML shapes -------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverlayFile {
    #[serde(default)]
    vcluster: BTreeMap<String, VClusterDecl>,
}

/// A vCluster table. Only `services` matters to the supervisor; the other
/// sections are accepted here and interpreted by the overlay code.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VClusterDecl {
    #[serde(default)]
    services: ServicesDecl,
    #[allow(dead_code)]
    sysctl: Option<toml::Value>,
    #[allow(dead_code)]
    mounts: Option<toml::Value>,
    #[allow(dead_code)]
    files: Option<toml::Value>,
    #[allow(dead_code)]
    network: Option<toml::Value>,
    #[allow(dead_code)]
    packages: Option<toml::Value>,
    #[allow(dead_code)]
    modules: Option<toml::Value>,
    #[allow(dead_code)]
    policy: Option<toml::Value>,
    /// Keys `pact apply` removes (see `overlay`).
    #[allow(dead_code)]
    remove: Option<toml::Value>,
}

/// `[vcluster.X.services.NAME]` tables, or `[[vcluster.X.services]]` with
/// a `name` key: both forms of the digest are accepted.
#[derive(Debug, Default)]
struct ServicesDecl(Vec<(String, Spanned<ServiceDecl>)>);

impl<'de> Deserialize<'de> for ServicesDecl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ServicesDecl, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ServicesDecl;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of services or an array of services with names")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<ServicesDecl, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Spanned<ServiceDecl>>()? {
                    out.push((k, v));
                }
                Ok(ServicesDecl(out))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<ServicesDecl, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = s.next_element::<Spanned<ServiceDecl>>()? {
                    let name = v.get_ref().name.clone().ok_or_else(|| {
                        serde::de::Error::custom("a service of a [[services]] array needs a `name`")
                    })?;
                    out.push((name, v));
                }
                Ok(ServicesDecl(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceDecl {
    /// Only in the `[[services]]` array form.
    name: Option<String>,
    binary: Spanned<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    #[serde(default)]
    restart: RestartPolicy,
    restart_delay_seconds: Option<Spanned<f64>>,
    #[serde(default)]
    order: i64,
    depends_on: Option<Spanned<Vec<String>>>,
    cgroup_slice: Option<Spanned<String>>,
    cgroup_memory_max: Option<Spanned<SizeOrInt>>,
    cgroup_cpu_weight: Option<Spanned<i64>>,
    cgroup_io_max: Option<Spanned<SizeOrInt>>,
    cgroup_pids_max: Option<Spanned<i64>>,
    health_check: Option<Spanned<HealthDecl>>,
    stop_timeout_seconds: Option<Spanned<f64>>,
    start_timeout_seconds: Option<Spanned<f64>>,
    ready: Option<ReadyKind>,
    ready_fd: Option<Spanned<i64>>,
    working_directory: Option<String>,
    oom_score_adj: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeOrInt {
    Int(i64),
    Str(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthDecl {
    #[serde(rename = "type")]
    kind: HealthKind,
    port: Option<u16>,
    host: Option<String>,
    url: Option<String>,
    #[serde(default = "default_interval")]
    interval_seconds: f64,
    timeout_seconds: Option<f64>,
    #[serde(default = "default_threshold")]
    failure_threshold: u32,
}

fn default_interval() -> f64 {
    10.0
}

fn default_threshold() -> u32 {
    3
}

/// Default stop timeout before SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a service may take to become ready.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Default delay before the first restart.
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(1);

/// Where binaries named without a path are looked up.
const SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What validation may consult on the host.
#[derive(Debug, Clone)]
pub struct CheckEnv {
    /// Directory holding `passwd` and `group`.
    pub etc: PathBuf,
    /// Check that binaries exist and are executable.
    pub check_binaries: bool,
    /// Resolve `user`/`group` in `etc` (false where the file is checked
    /// away from the node that runs it: the CLI and the journal).
    pub check_users: bool,
    /// The file is a fragment merged into an overlay that may declare the
    /// services it depends on: unknown `depends_on` names are not errors.
    pub partial: bool,
}

impl Default for CheckEnv {
    fn default() -> Self {
        CheckEnv {
            etc: PathBuf::from("/etc"),
            check_binaries: true,
            check_users: true,
            partial: false,
        }
    }
}

impl ServiceSet {
    /// Read and validate the services of `vcluster` (or of the only vCluster
    /// in the file when `None`).
    pub fn load(
        path: &Path,
        vcluster: Option<&str>,
        env: &CheckEnv,
    ) -> Result<ServiceSet, ConfigError> {
        let src = Source::read(path)?;
        ServiceSet::parse(&src, vcluster, env)
    }

    pub fn parse(
        src: &Source,
        vcluster: Option<&str>,
        env: &CheckEnv,
    ) -> Result<ServiceSet, ConfigError> {
        let file: OverlayFile = src.parse()?;
        let names: Vec<&String> = file.vcluster.keys().collect();
        let (vc_name, vc) = match vcluster {
            Some(want) => match file.vcluster.get_key_value(want) {
                Some(kv) => kv,
                None => {
                    return Err(src.error(
                        None,
                        &format!("vcluster.{want}"),
                        format!(
                            "no [vcluster.{want}] in this file (it has: {})",
                            join_or_none(&names)
                        ),
                    ))
                }
            },
            None if file.vcluster.len() == 1 => file.vcluster.iter().next().expect("one entry"),
            None if file.vcluster.is_empty() => {
                return Err(src.error(None, "vcluster", "no [vcluster.<name>] table in this file"))
            }
            None => {
                return Err(src.error(
                    None,
                    "vcluster",
                    format!(
                        "several vClusters ({}); set agent.vcluster to pick one",
                        join_or_none(&names)
                    ),
                ))
            }
        };
        let mut services: BTreeMap<&String, &Spanned<ServiceDecl>> = BTreeMap::new();
        for (name, decl) in &vc.services.0 {
            if services.insert(name, decl).is_some() {
                return Err(src.error(
                    Some(decl.span()),
                    &format!("vcluster.{vc_name}.services.{name}"),
                    format!("service \"{name}\" is declared twice"),
                ));
            }
        }
        let mut specs = Vec::new();
        for (name, decl) in &services {
            let key = format!("vcluster.{vc_name}.services.{name}");
            specs.push(check_service(src, &key, name, decl, env)?);
        }
        // Every dependency must be declared.
        for (spec, decl) in specs.iter().zip(services.values()) {
            for dep in &spec.depends_on {
                if !services.contains_key(dep) && !env.partial {
                    return Err(src.error(
                        decl.get_ref().depends_on.as_ref().map(|d| d.span()),
                        &format!("vcluster.{vc_name}.services.{}.depends_on", spec.name),
                        format!("unknown service \"{dep}\""),
                    ));
                }
                if dep == &spec.name {
                    return Err(src.error(
                        decl.get_ref().depends_on.as_ref().map(|d| d.span()),
                        &format!("vcluster.{vc_name}.services.{}.depends_on", spec.name),
                        "a service cannot depend on itself",
                    ));
                }
            }
        }
        let order = start_sequence(&specs).map_err(|cycle| {
            let first = &cycle[0];
            let span = services
                .get(first)
                .and_then(|d| d.get_ref().depends_on.as_ref().map(|d| d.span()));
            src.error(
                span,
                &format!("vcluster.{vc_name}.services.{first}.depends_on"),
                format!("dependency cycle: {}", cycle.join(" -> ")),
            )
        })?;
        if env.partial {
            // Dependencies may also live in the overlay this fragment joins
            // (a cycle among the fragment's own services is refused above):
            // the whole order is checked once merged.
            return Ok(ServiceSet {
                vcluster: vc_name.clone(),
                services: specs,
            });
        }
        let mut by_index: Vec<Option<ServiceSpec>> = specs.into_iter().map(Some).collect();
        let services = order
            .into_iter()
            .map(|i| by_index[i].take().expect("each index once"))
            .collect();
        Ok(ServiceSet {
            vcluster: vc_name.clone(),
            services,
        })
    }

    pub fn get(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }
}

fn join_or_none(names: &[&String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn valid_service_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'@'))
}

fn seconds(
    src: &Source,
    key: &str,
    v: &Option<Spanned<f64>>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => {
            let x = *s.get_ref();
            if !(0.0..=86_400.0 * 365.0).contains(&x) || x.is_nan() {
                return Err(src.error(
                    Some(s.span()),
                    key,
                    format!("{x} is not a duration in seconds"),
                ));
            }
            Ok(Duration::from_secs_f64(x))
        }
    }
}

fn check_service(
    src: &Source,
    key: &str,
    name: &str,
    decl: &Spanned<ServiceDecl>,
    env: &CheckEnv,
) -> Result<ServiceSpec, ConfigError> {
    let d = decl.get_ref();
    if !valid_service_name(name) {
        return Err(src.error(
            Some(decl.span()),
            key,
            "service names are 1-64 characters of letters, digits, '_', '-', '.', '@'",
        ));
    }
    let binary = resolve_binary(d.binary.get_ref(), env.check_binaries)
        .map_err(|m| src.error(Some(d.binary.span()), &format!("{key}.binary"), m))?;

    if d.args.len() >= crate::agent::spawn::MAX_VECTOR
        || d.env.len() > crate::agent::spawn::MAX_VECTOR - 8
    {
        return Err(src.error(
            Some(decl.span()),
            key,
            format!(
                "at most {} args and {} env entries",
                crate::agent::spawn::MAX_VECTOR - 1,
                crate::agent::spawn::MAX_VECTOR - 8
            ),
        ));
    }
    let mut envs = Vec::new();
    for (k, v) in &d.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(src.error(
                Some(decl.span()),
                &format!("{key}.env"),
                format!("invalid variable \"{k}\""),
            ));
        }
        envs.push((k.clone(), v.clone()));
    }

    let user = match &d.user {
        None => None,
        Some(_) if !env.check_users => None,
        Some(u) => Some(lookup_user(u.get_ref(), &env.etc).ok_or_else(|| {
            src.error(
                Some(u.span()),
                &format!("{key}.user"),
                format!("unknown user \"{}\"", u.get_ref()),
            )
        })?),
    };
    let user = match (&d.group, user) {
        (None, u) => u,
        (Some(_), u) if !env.check_users => u,
        (Some(g), u) => {
            let gid = lookup_group(g.get_ref(), &env.etc).ok_or_else(|| {
                src.error(
                    Some(g.span()),
                    &format!("{key}.group"),
                    format!("unknown group \"{}\"", g.get_ref()),
                )
            })?;
            Some((u.map_or(0, |(uid, _)| uid), gid))
        }
    };

    let slice = match &d.cgroup_slice {
        None => hpc_node::cgroup::slices::PACT_INFRA.to_string(),
        Some(s) => resolve_slice(s.get_ref())
            .map_err(|m| src.error(Some(s.span()), &format!("{key}.cgroup_slice"), m))?,
    };

    let mut limits = ScopeLimits::default();
    if let Some(m) = &d.cgroup_memory_max {
        limits.memory_max = size_value(m.get_ref())
            .map_err(|e| src.error(Some(m.span()), &format!("{key}.cgroup_memory_max"), e))?;
    }
    if let Some(w) = &d.cgroup_cpu_weight {
        let v = *w.get_ref();
        if !(1..=10_000).contains(&v) {
            return Err(src.error(
                Some(w.span()),
                &format!("{key}.cgroup_cpu_weight"),
                format!("{v} is outside 1..=10000"),
            ));
        }
        limits.cpu_weight = Some(v as u16);
    }
    if let Some(io) = &d.cgroup_io_max {
        limits.io_max = Some(
            io_max_value(io.get_ref())
                .map_err(|e| src.error(Some(io.span()), &format!("{key}.cgroup_io_max"), e))?,
        );
    }
    if let Some(p) = &d.cgroup_pids_max {
        let v = *p.get_ref();
        if v < 1 {
            return Err(src.error(
                Some(p.span()),
                &format!("{key}.cgroup_pids_max"),
                "must be at least 1",
            ));
        }
        limits.pids_max = Some(v as u64);
    }

    let health = match &d.health_check {
        None => None,
        Some(h) => Some(
            check_health(h.get_ref())
                .map_err(|m| src.error(Some(h.span()), &format!("{key}.health_check"), m))?,
        ),
    };

    let ready = match (d.ready, &d.ready_fd) {
        (None, None) => ReadyMode::Spawned,
        (Some(ReadyKind::Notify), None) => ReadyMode::Notify,
        (Some(ReadyKind::Fd), None) => ReadyMode::Fd(3),
        (Some(ReadyKind::Fd), Some(fd)) => {
            let n = *fd.get_ref();
            if !(3..=255).contains(&n) {
                return Err(src.error(
                    Some(fd.span()),
                    &format!("{key}.ready_fd"),
                    "must be between 3 and 255",
                ));
            }
            ReadyMode::Fd(n as i32)
        }
        (_, Some(fd)) => {
            return Err(src.error(
                Some(fd.span()),
                &format!("{key}.ready_fd"),
                "only meaningful with ready = \"fd\"",
            ))
        }
    };

    let oom_score_adj = match &d.oom_score_adj {
        None => 0,
        Some(v) if (-1000..=1000).contains(v.get_ref()) => *v.get_ref() as i32,
        Some(v) => {
            return Err(src.error(
                Some(v.span()),
                &format!("{key}.oom_score_adj"),
                "must be between -1000 and 1000",
            ));
        }
    };
    Ok(ServiceSpec {
        name: name.to_string(),
        binary,
        args: d.args.clone(),
        env: envs,
        user,
        restart: d.restart,
        restart_delay: seconds(
            src,
            &format!("{key}.restart_delay_seconds"),
            &d.restart_delay_seconds,
            DEFAULT_RESTART_DELAY,
        )?,
        order: d.order,
        depends_on: d
            .depends_on
            .as_ref()
            .map(|v| v.get_ref().clone())
            .unwrap_or_default(),
        slice,
        limits,
        health,
        ready,
        stop_timeout: seconds(
            src,
            &format!("{key}.stop_timeout_seconds"),
            &d.stop_timeout_seconds,
            DEFAULT_STOP_TIMEOUT,
        )?,
        start_timeout: seconds(
            src,
            &format!("{key}.start_timeout_seconds"),
            &d.start_timeout_seconds,
            DEFAULT_START_TIMEOUT,
        )?,
        working_directory: d.working_directory.as_ref().map(PathBuf::from),
        oom_score_adj,
    })
}

fn size_value(v: &SizeOrInt) -> Result<Option<u64>, String> {
    match v {
        SizeOrInt::Int(n) if *n >= 0 => Ok(Some(*n as u64)),
        SizeOrInt::Int(n) => Err(format!("invalid size {n}: must not be negative")),
        SizeOrInt::Str(s) => parse_size(s),
    }
}

fn io_max_value(v: &SizeOrInt) -> Result<IoMax, String> {
    if let SizeOrInt::Str(s) = v {
        // A literal io.max line: "MAJ:MIN key=value ...".
        if let Some((dev, rest)) = s.trim().split_once(' ') {
            let dev_ok = dev
                .split_once(':')
                .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok());
            let keys_ok = rest.split_whitespace().all(|kv| {
                kv.split_once('=').is_some_and(|(k, v)| {
                    matches!(k, "rbps" | "wbps" | "riops" | "wiops")
                        && (v == "max" || v.parse::<u64>().is_ok())
                })
            });
            if dev_ok && keys_ok {
                return Ok(IoMax::Line(s.trim().to_string()));
            }
            return Err(format!(
                "invalid io.max \"{s}\": expected \"MAJ:MIN rbps=N wbps=N riops=N wiops=N\" or a size per second"
            ));
        }
    }
    match size_value(v)? {
        Some(n) => Ok(IoMax::BytesPerSec(n)),
        None => Err("\"max\" means no limit; leave cgroup_io_max out instead".to_string()),
    }
}

/// `infra` → `pact.slice/infra.slice`; full paths of pact's slices are
/// accepted too. The workload slice belongs to lattice (RI1).
fn resolve_slice(s: &str) -> Result<String, String> {
    use hpc_node::cgroup::slices::*;
    let full = match s {
        "infra" | "infra.slice" => PACT_INFRA,
        "network" | "network.slice" => PACT_NETWORK,
        "gpu" | "gpu.slice" => PACT_GPU,
        "audit" | "audit.slice" => PACT_AUDIT,
        other if [PACT_INFRA, PACT_NETWORK, PACT_GPU, PACT_AUDIT].contains(&other) => other,
        other if other.starts_with(WORKLOAD_ROOT) => {
            return Err(format!(
                "\"{other}\" belongs to the workload manager (lattice), not to pact"
            ))
        }
        other => {
            return Err(format!(
                "unknown slice \"{other}\" (expected infra, network, gpu or audit)"
            ))
        }
    };
    Ok(full.to_string())
}

fn check_health(h: &HealthDecl) -> Result<HealthSpec, String> {
    if !(h.interval_seconds >= 0.1 && h.interval_seconds <= 86_400.0) {
        return Err("interval_seconds must be between 0.1 and 86400".to_string());
    }
    let interval = Duration::from_secs_f64(h.interval_seconds);
    let timeout = match h.timeout_seconds {
        Some(t) if t > 0.0 && t <= h.interval_seconds => Duration::from_secs_f64(t),
        Some(_) => {
            return Err("timeout_seconds must be positive and at most interval_seconds".to_string())
        }
        None => interval.min(Duration::from_secs(5)),
    };
    if h.failure_threshold == 0 {
        return Err("failure_threshold must be at least 1".to_string());
    }
    let host = h.host.clone().unwrap_or_else(|| "127.0.0.1".to_string());
    let (addr, http_path, http_host) = match h.kind {
        HealthKind::Process => {
            if h.port.is_some() || h.url.is_some() {
                return Err("a process check takes no port or url".to_string());
            }
            (None, String::new(), String::new())
        }
        HealthKind::Tcp => {
            let port = h.port.ok_or("a tcp check needs a port")?;
            (Some(format!("{host}:{port}")), String::new(), String::new())
        }
        HealthKind::Http => {
            let url = h.url.as_deref().ok_or("an http check needs a url")?;
            let (authority, path) = parse_http_url(url)?;
            let addr = if authority.contains(':') {
                authority.clone()
            } else {
                format!("{authority}:80")
            };
            (Some(addr), path, authority)
        }
    };
    Ok(HealthSpec {
        kind: h.kind,
        addr,
        http_path,
        http_host,
        interval,
        timeout,
        failure_threshold: h.failure_threshold,
    })
}

/// `http://host[:port][/path]` → (`host[:port]`, `/path`). Only plain http
/// on an IP literal or `localhost`: the agent resolves no names and speaks
/// no TLS in its PID-1 loop.
fn parse_http_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("url \"{url}\" must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let host_ok = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok();
    if authority.is_empty() || !host_ok {
        return Err(format!(
            "url \"{url}\" must name an IP address or localhost"
        ));
    }
    let authority = authority.replace("localhost", "127.0.0.1");
    if let Some((_, port)) = authority.rsplit_once(':') {
        port.parse::<u16>()
            .map_err(|_| format!("url \"{url}\" has a bad port"))?;
    }
    Ok((authority, path.to_string()))
}

fn resolve_binary(b: &str, check: bool) -> Result<PathBuf, String> {
    if b.is_empty() {
        return Err("binary must not be empty".to_string());
    }
    let path = if b.starts_with('/') {
        PathBuf::from(b)
    } else if b.contains('/') {
        return Err(format!(
            "\"{b}\" must be an absolute path or a bare command name"
        ));
    } else {
        let found = SEARCH_PATH
            .split(':')
            .map(|d| Path::new(d).join(b))
            .find(|p| is_executable(p));
        match found {
            Some(p) => p,
            None if !check => PathBuf::from(b),
            None => return Err(format!("\"{b}\" not found in {SEARCH_PATH}")),
        }
    };
    if check && !path.exists() {
        return Err(format!("{} does not exist", path.display()));
    }
    if check && !is_executable(&path) {
        return Err(format!("{} is not an executable file", path.display()));
    }
    Ok(path)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Start order: a topological order of `depends_on`, ties broken by
/// (`order`, name). On a cycle, returns its members as `a, b, c, a`.
pub fn start_sequence(specs: &[ServiceSpec]) -> Result<Vec<usize>, Vec<String>> {
    let index: BTreeMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut indegree = vec![0usize; specs.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); specs.len()];
    for (i, s) in specs.iter().enumerate() {
        for d in &s.depends_on {
            if let Some(&j) = index.get(d.as_str()) {
                indegree[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let key = |i: usize| (specs[i].order, specs[i].name.clone(), i);
    let mut ready: BTreeSet<(i64, String, usize)> = (0..specs.len())
        .filter(|&i| indegree[i] == 0)
        .map(key)
        .collect();
    let mut out = Vec::with_capacity(specs.len());
    while let Some(first) = ready.pop_first() {
        let i = first.2;
        out.push(i);
        for &j in &dependents[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.insert(key(j));
            }
        }
    }
    if out.len() == specs.len() {
        return Ok(out);
    }
    // Walk dependencies from a node left over until one repeats.
    let left: BTreeSet<usize> = (0..specs.len()).filter(|i| indegree[*i] > 0).collect();
    let mut path = vec![*left.iter().next().expect("a cycle exists")];
    loop {
        let cur = *path.last().expect("non-empty");
        let next = specs[cur]
            .depends_on
            .iter()
            .filter_map(|d| index.get(d.as_str()).copied())
            .find(|j| left.contains(j))
            .expect("a node in a cycle has a dependency in it");
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle: Vec<String> =
                path[pos..].iter().map(|&i| specs[i].name.clone()).collect();
            cycle.push(specs[next].name.clone());
            return Err(cycle);
        }
        path.push(next);
    }
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;
