//! The vCluster overlay: the declared state of every node of a vCluster.
//!
//! ```toml
//! [vcluster.ml-training.sysctl]
//! "vm.nr_hugepages" = "1024"
//! [vcluster.ml-training.modules]
//! load = ["nvidia"]
//! [vcluster.ml-training.mounts]
//! "/local-scratch" = { type = "nfs", source = "storage03:/scratch", read_only = false }
//! [vcluster.ml-training.files]
//! "/etc/motd" = { content = "hello\n", mode = "0644", owner = "root" }
//! [vcluster.ml-training.network]      # kept as declared (network issue)
//! [vcluster.ml-training.packages]     # kept as declared (packages issue)
//! [vcluster.ml-training.services.chronyd]
//! binary = "/usr/sbin/chronyd"
//! [vcluster.ml-training.policy]
//! drift_sensitivity = 2.0
//! [vcluster.ml-training.remove]        # only in `pact apply`: keys to drop
//! keys = ["sysctl.vm.swappiness", "services.old-daemon"]
//! ```
//!
//! [`parse_spec`] validates a file (errors name file, line and key);
//! [`Overlay::to_toml`] is canonical (sorted, deterministic), so an
//! overlay's checksum is the SHA-256 of that text (J5).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::services::{CheckEnv, ServiceSet};
use super::{ConfigError, Source};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    #[serde(rename = "type")]
    pub fstype: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub options: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub content: String,
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default = "default_owner")]
    pub owner: String,
    #[serde(default = "default_owner")]
    pub group: String,
}

fn default_mode() -> String {
    "0644".to_string()
}

fn default_owner() -> String {
    "root".to_string()
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulesSpec {
    #[serde(default)]
    pub load: Vec<String>,
}

/// A role binding of a vCluster policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBinding {
    pub role: String,
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub allowed_actions: Vec<String>,
}

/// VClusterPolicy (digest §2). One per vCluster (J6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub drift_sensitivity: f64,
    pub base_commit_window_seconds: u32,
    pub emergency_window_seconds: u32,
    pub auto_converge_categories: Vec<String>,
    pub require_ack_categories: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcement_mode: Option<String>,
    pub role_bindings: Vec<RoleBinding>,
    pub regulated: bool,
    pub two_person_approval: bool,
    pub emergency_allowed: bool,
    pub ai_exec_allowed: bool,
    pub audit_retention_days: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federation_template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supervisor_backend: Option<String>,
    pub exec_whitelist: Vec<String>,
    pub shell_whitelist: Vec<String>,
    pub approval_timeout_seconds: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_mode: Option<String>,
    /// Drift blacklist of the vCluster (live-updatable).
    pub blacklist: Vec<String>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            drift_sensitivity: 2.0,
            base_commit_window_seconds: 900,
            emergency_window_seconds: 14400,
            auto_converge_categories: vec![],
            require_ack_categories: vec![],
            enforcement_mode: None,
            role_bindings: vec![],
            regulated: false,
            two_person_approval: false,
            emergency_allowed: true,
            ai_exec_allowed: false,
            audit_retention_days: 2555,
            federation_template: None,
            supervisor_backend: None,
            exec_whitelist: vec![],
            shell_whitelist: vec![],
            approval_timeout_seconds: 1800,
            identity_mode: None,
            blacklist: vec![],
        }
    }
}

/// One vCluster's declared state, canonical.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Overlay {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_empty_modules")]
    pub modules: ModulesSpec,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub mounts: BTreeMap<String, MountSpec>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, FileSpec>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub network: BTreeMap<String, toml::Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub packages: BTreeMap<String, toml::Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, toml::Table>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

fn is_empty_modules(m: &ModulesSpec) -> bool {
    m.load.is_empty()
}

/// What `pact apply` sends for one vCluster: the sections to set, and the
/// keys to remove.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OverlaySpec {
    pub vcluster: String,
    pub set: Overlay,
    /// `section.key` (e.g. `sysctl.vm.swappiness`, `services.chronyd`).
    pub remove: Vec<String>,
}

// ---- raw shapes with spans (for errors) -------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(default)]
    vcluster: BTreeMap<String, Spanned<SpecSections>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecSections {
    #[serde(default)]
    sysctl: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    modules: Option<Spanned<ModulesSpec>>,
    #[serde(default)]
    mounts: BTreeMap<String, Spanned<MountSpec>>,
    #[serde(default)]
    files: BTreeMap<String, Spanned<FileSpec>>,
    #[serde(default)]
    network: BTreeMap<String, toml::Value>,
    #[serde(default)]
    packages: BTreeMap<String, toml::Value>,
    #[serde(default)]
    services: Option<toml::Value>,
    policy: Option<Spanned<Policy>>,
    remove: Option<RemoveSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveSpec {
    #[serde(default)]
    keys: Vec<Spanned<String>>,
}

/// `/proc/sys` path of a sysctl key (`vm.swappiness` or `vm/swappiness`).
pub fn sysctl_path(key: &str) -> Result<std::path::PathBuf, String> {
    if key.is_empty() || key.contains("..") || key.starts_with('/') || key.starts_with('.') {
        return Err(format!("bad sysctl key \"{key}\""));
    }
    Ok(std::path::Path::new("/proc/sys").join(key.replace('.', "/")))
}

/// A sysctl value as the kernel takes it.
pub fn sysctl_string(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(u8::from(*b).to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

const SECTIONS: [&str; 8] = [
    "sysctl", "modules", "mounts", "files", "network", "packages", "services", "policy",
];

/// Parse and validate an overlay spec file (one or more vClusters).
/// Service binaries are not checked (they live on the nodes).
pub fn parse_spec(src: &Source) -> Result<Vec<OverlaySpec>, ConfigError> {
    let file: SpecFile = src.parse()?;
    if file.vcluster.is_empty() {
        return Err(src.error(None, "vcluster", "no [vcluster.<name>] table in this file"));
    }
    let mut out = Vec::new();
    for (name, sections) in file.vcluster {
        let span = sections.span();
        let s = sections.into_inner();
        if !valid_name(&name) {
            return Err(src.error(
                Some(span),
                &format!("vcluster.{name}"),
                "vCluster names are 1-64 letters, digits, '-', '_' or '.'",
            ));
        }
        let key = |section: &str, k: &str| format!("vcluster.{name}.{section}.{k}");
        let mut set = Overlay::default();
        for (k, v) in s.sysctl {
            if sysctl_path(&k).is_err() {
                return Err(src.error(
                    Some(v.span()),
                    &key("sysctl", &k),
                    format!("bad sysctl key \"{k}\""),
                ));
            }
            let value = sysctl_string(v.get_ref()).ok_or_else(|| {
                src.error(
                    Some(v.span()),
                    &key("sysctl", &k),
                    "a sysctl value is a string, number or boolean",
                )
            })?;
            set.sysctl.insert(k, value);
        }
        if let Some(m) = s.modules {
            let span = m.span();
            let m = m.into_inner();
            for module in &m.load {
                if module.is_empty() || module.contains('/') {
                    return Err(src.error(
                        src.key_in(span.clone(), "load").or(Some(span.clone())),
                        &format!("vcluster.{name}.modules.load"),
                        format!("bad module name \"{module}\""),
                    ));
                }
            }
            set.modules = m;
        }
        for (path, m) in s.mounts {
            check_path(src, &key("mounts", &path), &path, m.span())?;
            if m.get_ref().fstype.is_empty() || m.get_ref().source.is_empty() {
                return Err(src.error(
                    Some(m.span()),
                    &key("mounts", &path),
                    "a mount needs a type and a source",
                ));
            }
            set.mounts.insert(path, m.into_inner());
        }
        for (path, f) in s.files {
            check_path(src, &key("files", &path), &path, f.span())?;
            let mode = &f.get_ref().mode;
            if u32::from_str_radix(mode, 8).map_or(true, |m| m > 0o7777) {
                return Err(src.error(
                    Some(src.key_in(f.span(), "mode").unwrap_or(f.span())),
                    &format!("{}.mode", key("files", &path)),
                    format!("mode \"{mode}\" is not an octal mode like \"0644\""),
                ));
            }
            set.files.insert(path, f.into_inner());
        }
        set.network = s.network;
        set.packages = s.packages;
        if let Some(services) = s.services {
            // Validate exactly as the agent will, with the original spans.
            // Users, groups and binaries belong to the nodes that run the
            // services, and dependencies may be declared by the overlay
            // this fragment joins: checked by the agent and once merged.
            let check = CheckEnv {
                etc: std::path::PathBuf::from("/etc"),
                check_binaries: false,
                check_users: false,
                partial: true,
            };
            ServiceSet::parse(src, Some(&name), &check)?;
            set.services = service_tables(services);
        }
        if let Some(p) = s.policy {
            let span = p.span();
            let p = p.into_inner();
            if !(p.drift_sensitivity >= 0.0 && p.drift_sensitivity.is_finite()) {
                return Err(src.error(
                    Some(span),
                    &format!("vcluster.{name}.policy.drift_sensitivity"),
                    "must be a finite number >= 0",
                ));
            }
            set.policy = Some(p);
        }
        let mut remove = Vec::new();
        if let Some(r) = s.remove {
            for k in r.keys {
                let (section, _) = k.get_ref().split_once('.').unwrap_or((k.get_ref(), ""));
                if !SECTIONS.contains(&section) {
                    return Err(src.error(
                        Some(k.span()),
                        &format!("vcluster.{name}.remove.keys"),
                        format!(
                            "\"{}\" does not name a section.key ({})",
                            k.get_ref(),
                            SECTIONS.join(", ")
                        ),
                    ));
                }
                remove.push(k.into_inner());
            }
        }
        out.push(OverlaySpec {
            vcluster: name,
            set,
            remove,
        });
    }
    Ok(out)
}

/// Service tables by name, from either declaration form.
fn service_tables(v: toml::Value) -> BTreeMap<String, toml::Table> {
    let mut out = BTreeMap::new();
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                if let toml::Value::Table(t) = v {
                    out.insert(k, t);
                }
            }
        }
        toml::Value::Array(a) => {
            for v in a {
                if let toml::Value::Table(mut t) = v {
                    if let Some(toml::Value::String(n)) = t.remove("name") {
                        out.insert(n, t);
                    }
                }
            }
        }
        _ => {}
    }
    out
}

fn check_path(
    src: &Source,
    key: &str,
    path: &str,
    span: std::ops::Range<usize>,
) -> Result<(), ConfigError> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") || path.contains('\0') {
        return Err(src.error(
            Some(span),
            key,
            format!("\"{path}\" must be an absolute path without \"..\""),
        ));
    }
    Ok(())
}

/// A vCluster or node name: 1 to 64 letters, digits, '-', '_' or '.'.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Overlay {
    /// Set everything `spec` sets, then remove what it removes.
    pub fn merge(&mut self, spec: &OverlaySpec) {
        let s = &spec.set;
        self.sysctl
            .extend(s.sysctl.iter().map(|(k, v)| (k.clone(), v.clone())));
        for m in &s.modules.load {
            if !self.modules.load.contains(m) {
                self.modules.load.push(m.clone());
            }
        }
        self.mounts
            .extend(s.mounts.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.files
            .extend(s.files.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.network
            .extend(s.network.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.packages
            .extend(s.packages.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.services
            .extend(s.services.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(p) = &s.policy {
            self.policy = Some(p.clone());
        }
        for key in &spec.remove {
            self.remove(key);
        }
    }

    /// Drop `section.key` (or a whole section).
    pub fn remove(&mut self, key: &str) -> bool {
        let (section, k) = key.split_once('.').unwrap_or((key, ""));
        match (section, k) {
            ("sysctl", "") => !std::mem::take(&mut self.sysctl).is_empty(),
            ("sysctl", k) => self.sysctl.remove(k).is_some(),
            ("modules", "") => !std::mem::take(&mut self.modules.load).is_empty(),
            ("modules", k) => {
                let before = self.modules.load.len();
                self.modules.load.retain(|m| m != k);
                before != self.modules.load.len()
            }
            ("mounts", k) => self.mounts.remove(k).is_some(),
            ("files", k) => self.files.remove(k).is_some(),
            ("network", k) => self.network.remove(k).is_some(),
            ("packages", k) => self.packages.remove(k).is_some(),
            ("services", k) => self.services.remove(k).is_some(),
            ("policy", _) => self.policy.take().is_some(),
            _ => false,
        }
    }

    /// Canonical TOML of this vCluster (`[vcluster.<name>...]`), the bytes
    /// whose SHA-256 is the overlay checksum.
    pub fn to_toml(&self, vcluster: &str) -> String {
        #[derive(Serialize)]
        struct Doc<'a> {
            vcluster: BTreeMap<&'a str, &'a Overlay>,
        }
        let doc = Doc {
            vcluster: [(vcluster, self)].into_iter().collect(),
        };
        toml::to_string(&doc).unwrap_or_default()
    }

    /// Read back what [`to_toml`](Self::to_toml) wrote.
    pub fn from_toml(text: &str) -> Result<(String, Overlay), String> {
        #[derive(Deserialize)]
        struct Doc {
            vcluster: BTreeMap<String, Overlay>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
        doc.vcluster
            .into_iter()
            .next()
            .ok_or_else(|| "no [vcluster.<name>] table".to_string())
    }

    pub fn is_empty(&self) -> bool {
        *self == Overlay::default()
    }

    /// Number of declared keys, for summaries.
    pub fn key_count(&self) -> usize {
        self.sysctl.len()
            + self.modules.load.len()
            + self.mounts.len()
            + self.files.len()
            + self.network.len()
            + self.packages.len()
            + self.services.len()
            + usize::from(self.policy.is_some())
    }
}

#[cfg(test)]
#[path = "overlay_tests.rs"]
mod tests;
