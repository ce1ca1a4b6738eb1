//! What the agent does with its journal link: take the overlay and the
//! node delta it streams, check them, cache them, and apply the effective
//! declaration (overlay with the delta on top) — at boot in PullOverlay,
//! later whenever the subscription pushes a change.
//!
//! The cache (`<state_dir>/journal/`) lets a node reboot with the journal
//! down (A9): PullOverlay waits `boot_wait_seconds` for the journal, then boots
//! from the cache and keeps the link retrying in the background.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::boot::Phase;
use super::daemon::Agent;
use super::journal_link::{decompress, JournalLink};
use crate::config::overlay::{parse_spec, Overlay};
use crate::config::services::{CheckEnv, ServiceSet};
use crate::config::Source;
use crate::proto::boot::{BootEvent, BootRequest};
use crate::proto::Record;
use crate::util::sha256::sha256_hex;

/// The journal's view of this node, as last received (or cached).
#[derive(Debug, Clone, Default)]
pub struct JournalView {
    pub vcluster: String,
    pub version: u64,
    pub overlay: Option<String>,
    pub node_version: u64,
    pub delta: Option<String>,
    pub seq: u64,
    /// A boot stream completed (or the cache was loaded).
    pub complete: bool,
}

impl JournalView {
    /// The declaration to apply: services and everything else.
    pub fn effective(&self) -> Result<(ServiceSet, Overlay), String> {
        let text = self.overlay.as_deref().ok_or("no overlay yet")?;
        // An empty overlay: the vCluster declares nothing (yet).
        let (name, mut overlay) = if text.trim().is_empty() {
            (self.vcluster.clone(), Overlay::default())
        } else {
            Overlay::from_toml(text)?
        };
        if let Some(delta) = self.delta.as_deref().filter(|d| !d.trim().is_empty()) {
            let specs =
                parse_spec(&Source::from_str("node delta", delta)).map_err(|e| e.to_string())?;
            for s in specs.iter().filter(|s| s.vcluster == name) {
                overlay.merge(s);
            }
        }
        let label = format!(
            "journal overlay v{} + delta v{}",
            self.version, self.node_version
        );
        let set = ServiceSet::parse(
            &Source::from_str(&label, &overlay.to_toml(&name)),
            Some(&name),
            &CheckEnv::default(),
        )
        .map_err(|e| e.to_string())?;
        Ok((set, overlay))
    }
}

fn cache_dir(a: &Agent) -> PathBuf {
    a.cfg.state_dir().join("journal")
}

/// Read the cache written by an earlier run.
pub fn read_cache(dir: &std::path::Path) -> Option<JournalView> {
    let state = std::fs::read_to_string(dir.join("state")).ok()?;
    let rec = crate::proto::response::parse_record(state.trim()).ok()?;
    let n = |k: &str| rec.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Some(JournalView {
        vcluster: rec.get("vcluster").unwrap_or("").to_string(),
        version: n("version"),
        overlay: std::fs::read_to_string(dir.join("overlay.toml")).ok(),
        node_version: n("node_version"),
        delta: std::fs::read_to_string(dir.join("delta.toml")).ok(),
        seq: n("seq"),
        complete: true,
    })
}

fn write_cache(dir: &std::path::Path, v: &JournalView) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let put = |name: &str, text: &str| -> std::io::Result<()> {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(name))
    };
    put("overlay.toml", v.overlay.as_deref().unwrap_or(""))?;
    match &v.delta {
        Some(d) => put("delta.toml", d)?,
        None => {
            let _ = std::fs::remove_file(dir.join("delta.toml"));
        }
    }
    let state = Record::new()
        .field("vcluster", &v.vcluster)
        .field("version", v.version)
        .field("node_version", v.node_version)
        .field("seq", v.seq);
    put("state", &format!("{}\n", state.to_line()))
}

impl Agent {
    /// Set up the link when journal endpoints are configured.
    pub(super) fn start_journal_link(&mut self, now: Instant) {
        if self.cfg.journal.endpoints.is_empty() {
            return;
        }
        if self.cfg.journal.tls_enabled {
            log::warn!(target: "agent::journal", "journal TLS is not implemented in this version; connecting in the clear");
        }
        let cached = read_cache(&cache_dir(self)).unwrap_or_default();
        let request = BootRequest {
            node: self.cfg.node_id(),
            vcluster: self
                .cfg
                .vcluster
                .clone()
                .unwrap_or_else(|| cached.vcluster.clone()),
            version: cached.version,
            node_version: cached.node_version,
            from: cached.seq,
        };
        // The cache is only a fallback until the journal answers.
        self.journal_cache = cached.overlay.is_some().then_some(cached);
        self.journal = Some(JournalLink::new(
            self.cfg.journal.endpoints.clone(),
            request,
            super::daemon::JOURNAL,
            self.waker.clone(),
            now,
        ));
    }

    /// PullOverlay with a journal: wait for its boot stream, or fall back.
    pub(super) fn pull_from_journal(&mut self, now: Instant) {
        if self.journal_view.complete {
            self.declare_from_journal(now);
            return;
        }
        let wait = Duration::from_secs_f64(self.cfg.journal.boot_wait_seconds.clamp(0.0, 3600.0));
        self.pull_deadline = Some(now + wait);
    }

    /// PullOverlay waited long enough: boot from the cache if there is one.
    pub(super) fn pull_timed_out(&mut self, now: Instant) {
        self.pull_deadline = None;
        match self.journal_cache.clone() {
            Some(cached) => {
                log::warn!(
                    target: "agent::journal",
                    "journal unreachable: booting from the cached overlay v{} (delta v{}); the link keeps retrying",
                    cached.version,
                    cached.node_version
                );
                self.journal_view = cached;
                self.declare_from_journal(now);
            }
            None => self.phase_done(
                now,
                Phase::PullOverlay,
                Err("journal unreachable and no cached overlay".into()),
            ),
        }
    }

    /// Socket readiness or a wake-up of the link.
    pub(super) fn on_journal(&mut self, now: Instant) {
        let Some(link) = &mut self.journal else {
            return;
        };
        let events = link.on_ready(self.poll.registry(), now);
        for e in events {
            self.on_boot_event(now, e);
        }
    }

    fn on_boot_event(&mut self, now: Instant, e: BootEvent) {
        let v = &mut self.journal_view;
        match e {
            BootEvent::Overlay(o) => {
                let text = match decompress(&o.data, o.size)
                    .and_then(|t| String::from_utf8(t).map_err(|_| "overlay is not UTF-8".into()))
                {
                    Ok(t) => t,
                    Err(e) => {
                        return log::error!(target: "agent::journal", "overlay v{}: {e}", o.version)
                    }
                };
                if sha256_hex(text.as_bytes()) != o.checksum {
                    return log::error!(target: "agent::journal", "overlay v{}: checksum mismatch; ignored", o.version);
                }
                log::info!(target: "agent::journal", "overlay {} v{} received ({} bytes)", o.vcluster, o.version, text.len());
                v.vcluster = o.vcluster;
                v.version = o.version;
                v.overlay = Some(text);
                if v.complete {
                    self.journal_changed(now);
                }
            }
            BootEvent::Delta(d) => {
                if d.version != 0 && sha256_hex(&d.text) != d.checksum {
                    return log::error!(target: "agent::journal", "delta v{}: checksum mismatch; ignored", d.version);
                }
                log::info!(target: "agent::journal", "node delta v{} received ({} bytes)", d.version, d.text.len());
                v.node_version = d.version;
                v.delta = (d.version != 0).then(|| String::from_utf8_lossy(&d.text).into_owned());
                if v.complete {
                    self.journal_changed(now);
                }
            }
            BootEvent::Complete {
                base_version,
                node_version,
                seq,
            } => {
                log::info!(target: "agent::journal", "boot config complete: overlay v{base_version}, delta v{node_version}, seq {seq}");
                v.seq = v.seq.max(seq);
                let first = !v.complete;
                v.complete = true;
                if v.overlay.is_none() {
                    // Versions matched what the agent had: the cache is current.
                    if let Some(c) = &self.journal_cache {
                        let seq = v.seq;
                        *v = c.clone();
                        v.seq = seq;
                    }
                }
                self.journal_changed(now);
                if first && self.pull_deadline.is_some() {
                    self.pull_deadline = None;
                    self.declare_from_journal(now);
                }
            }
            BootEvent::Change { seq, kind, scope } => {
                log::debug!(target: "agent::journal", "change seq {seq}: {kind} {scope}");
                v.seq = v.seq.max(seq);
            }
            BootEvent::Heartbeat(_) | BootEvent::Error { .. } => {}
        }
        if let Some(link) = &mut self.journal {
            let v = &self.journal_view;
            link.request.vcluster = v.vcluster.clone();
            link.request.version = v.version;
            link.request.node_version = v.node_version;
            link.request.from = v.seq;
        }
    }

    /// Cache what the journal declared and, once booted, apply it.
    fn journal_changed(&mut self, now: Instant) {
        if let Err(e) = write_cache(&cache_dir(self), &self.journal_view) {
            log::warn!(target: "agent::journal", "cannot cache the overlay: {e}");
        }
        self.journal_cache = Some(self.journal_view.clone());
        if self.boot.done(Phase::PullOverlay) {
            self.apply_journal_view(now);
        }
    }

    /// PullOverlay's work once there is something to boot with.
    fn declare_from_journal(&mut self, now: Instant) {
        match self.journal_view.effective() {
            Ok((set, overlay)) => {
                log::info!(
                    target: "agent::boot",
                    "pull_overlay: {} service(s) and {} other declaration(s) of vcluster {} from the journal (overlay v{}, delta v{})",
                    set.services.len(),
                    overlay.key_count() - overlay.services.len(),
                    set.vcluster,
                    self.journal_view.version,
                    self.journal_view.node_version
                );
                self.services = set;
                self.declared = overlay.clone();
                self.boot_apply_pending = true;
                self.applier.submit(overlay);
            }
            Err(e) => self.phase_done(
                now,
                Phase::PullOverlay,
                Err(format!("journal overlay: {e}")),
            ),
        }
    }

    /// A live change: like a reload, touching only what changed.
    fn apply_journal_view(&mut self, now: Instant) {
        match self.journal_view.effective() {
            Ok((set, overlay)) => {
                if overlay != self.declared {
                    self.declared = overlay.clone();
                    self.applier.submit(overlay);
                }
                if set != self.services {
                    self.services = set.clone();
                    if self.boot.done(Phase::PullOverlay) {
                        let actions = self.sup.replace(now, &set);
                        self.perform(now, actions);
                    }
                }
            }
            Err(e) => {
                log::error!(target: "agent::journal", "new declaration not applied, keeping the running one: {e}")
            }
        }
    }
}
