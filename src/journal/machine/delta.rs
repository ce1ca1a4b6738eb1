//! Node deltas: a node's committed local state on top of its vCluster
//! overlay, kept as an overlay fragment (so the agent applies it exactly
//! like the overlay) and described as a seven-dimension [`StateDelta`].
//!
//! Promotion maps a delta back into overlay TOML (the CLI seed's table:
//! kernel → `sysctl`, mounts → `mounts`, files → `files`, services →
//! `services.<svc>`, network → `network`, packages → `packages`); GPU
//! changes cannot be declared and are emitted as comments.

use std::collections::BTreeMap;

use super::entry::{DeltaAction, DeltaItem, StateDelta};
use crate::config::overlay::Overlay;

/// Every declared key of an overlay with a canonical value text:
/// `sysctl.vm.swappiness` → `10`, `services.chronyd` → its TOML, ...
pub fn keyed(o: &Overlay) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in &o.sysctl {
        out.insert(format!("sysctl.{k}"), v.clone());
    }
    for m in &o.modules.load {
        out.insert(format!("modules.{m}"), "load".to_string());
    }
    for (k, v) in &o.mounts {
        out.insert(format!("mounts.{k}"), text(v));
    }
    for (k, v) in &o.files {
        out.insert(format!("files.{k}"), text(v));
    }
    for (k, v) in &o.network {
        out.insert(format!("network.{k}"), v.to_string());
    }
    for (k, v) in &o.packages {
        out.insert(format!("packages.{k}"), v.to_string());
    }
    for (k, v) in &o.services {
        out.insert(
            format!("services.{k}"),
            toml::to_string(v).unwrap_or_default(),
        );
    }
    out
}

/// A declaration as one line of TOML, for comparison.
fn text<T: serde::Serialize>(v: &T) -> String {
    toml::to_string(v)
        .unwrap_or_default()
        .replace('\n', " ")
        .trim()
        .to_string()
}

/// The dimension a key belongs to.
pub fn dimension(key: &str) -> &'static str {
    match key.split_once('.').map(|(s, _)| s).unwrap_or(key) {
        "sysctl" | "modules" => "kernel",
        "mounts" => "mounts",
        "files" => "files",
        "services" => "services",
        "network" => "network",
        "packages" => "packages",
        _ => "gpu",
    }
}

/// What `delta` (a node's overlay fragment, with `removed` keys) changes
/// relative to the vCluster `overlay`.
pub fn state_delta(overlay: &Overlay, delta: &Overlay, removed: &[String]) -> StateDelta {
    let base = keyed(overlay);
    let mut sd = StateDelta::default();
    for (k, v) in keyed(delta) {
        let item = match base.get(&k) {
            Some(prev) if *prev == v => continue,
            Some(prev) => DeltaItem {
                action: DeltaAction::Modify,
                key: k.clone(),
                value: Some(v),
                previous: Some(prev.clone()),
            },
            None => DeltaItem {
                action: DeltaAction::Add,
                key: k.clone(),
                value: Some(v),
                previous: None,
            },
        };
        push(&mut sd, item);
    }
    for k in removed {
        let previous = base.get(k).cloned();
        push(
            &mut sd,
            DeltaItem {
                action: DeltaAction::Remove,
                key: k.clone(),
                value: None,
                previous,
            },
        );
    }
    sd
}

/// What changed from `old` to `new` (an overlay's new version).
pub fn diff(old: &Overlay, new: &Overlay) -> StateDelta {
    let (a, b) = (keyed(old), keyed(new));
    let mut sd = StateDelta::default();
    for (k, v) in &b {
        match a.get(k) {
            Some(prev) if prev == v => {}
            Some(prev) => push(
                &mut sd,
                DeltaItem {
                    action: DeltaAction::Modify,
                    key: k.clone(),
                    value: Some(v.clone()),
                    previous: Some(prev.clone()),
                },
            ),
            None => push(
                &mut sd,
                DeltaItem {
                    action: DeltaAction::Add,
                    key: k.clone(),
                    value: Some(v.clone()),
                    previous: None,
                },
            ),
        }
    }
    for (k, prev) in &a {
        if !b.contains_key(k) {
            push(
                &mut sd,
                DeltaItem {
                    action: DeltaAction::Remove,
                    key: k.clone(),
                    value: None,
                    previous: Some(prev.clone()),
                },
            );
        }
    }
    sd
}

/// Keys of `delta` whose value the overlay now declares too (a delta
/// that promotion or an apply made redundant).
pub fn superseded(overlay: &Overlay, delta: &Overlay) -> Vec<String> {
    let base = keyed(overlay);
    keyed(delta)
        .into_iter()
        .filter(|(k, v)| base.get(k) == Some(v))
        .map(|(k, _)| k)
        .collect()
}

fn push(sd: &mut StateDelta, item: DeltaItem) {
    let v = match dimension(&item.key) {
        "kernel" => &mut sd.kernel,
        "mounts" => &mut sd.mounts,
        "files" => &mut sd.files,
        "services" => &mut sd.services,
        "network" => &mut sd.network,
        "packages" => &mut sd.packages,
        _ => &mut sd.gpu,
    };
    v.push(item);
}

/// A node whose own delta sets a promoted key to something else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromoteConflict {
    pub node: String,
    pub key: String,
    pub local: String,
    pub promoted: String,
}

/// Conflicts between the promoted `delta` and other nodes' deltas.
pub fn conflicts(delta: &Overlay, others: &[(String, Overlay)]) -> Vec<PromoteConflict> {
    let promoted = keyed(delta);
    let mut out = Vec::new();
    for (node, other) in others {
        for (k, local) in keyed(other) {
            if let Some(p) = promoted.get(&k) {
                if *p != local {
                    out.push(PromoteConflict {
                        node: node.clone(),
                        key: k,
                        local,
                        promoted: p.clone(),
                    });
                }
            }
        }
    }
    out
}

/// Remove from `o` every key `promoted` declares (keep-local's opposite:
/// the overlay wins).
pub fn drop_keys(o: &mut Overlay, promoted: &Overlay) {
    for k in keyed(promoted).keys() {
        o.remove(k);
    }
}

/// The overlay TOML a promote produces, with a header and GPU changes as
/// comments (they cannot be declared).
pub fn promote_toml(
    vcluster: &str,
    node: &str,
    commits: usize,
    delta: &Overlay,
    gpu: &[DeltaItem],
) -> String {
    let mut out = format!(
        "# Generated overlay fragment for vcluster: {vcluster}\n# From {commits} committed node delta(s) on {node}\n"
    );
    if !delta.is_empty() {
        out.push_str(&delta.to_toml(vcluster));
    }
    for g in gpu {
        out.push_str(&format!(
            "# gpu (not declarable, apply by hand): {:?} {} = {}\n",
            g.action,
            g.key,
            g.value.as_deref().unwrap_or("-")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::overlay::parse_spec;
    use crate::config::Source;

    fn ov(text: &str) -> Overlay {
        let mut o = Overlay::default();
        for s in parse_spec(&Source::from_str("t", text)).unwrap() {
            o.merge(&s);
        }
        o
    }

    #[test]
    fn state_delta_classifies_add_modify_remove() {
        let overlay = ov("[vcluster.ml.sysctl]\n\"vm.a\" = \"1\"\n\"vm.b\" = \"2\"\n");
        let delta = ov("[vcluster.ml.sysctl]\n\"vm.a\" = \"1\"\n\"vm.b\" = \"3\"\n\"vm.c\" = \"4\"\n[vcluster.ml.mounts]\n\"/s\" = { type = \"nfs\", source = \"h:/x\" }\n");
        let sd = state_delta(&overlay, &delta, &["sysctl.vm.a".to_string()]);
        assert_eq!(sd.kernel.len(), 3);
        assert_eq!(sd.kernel[0].action, DeltaAction::Modify);
        assert_eq!(sd.kernel[0].previous.as_deref(), Some("2"));
        assert_eq!(sd.kernel[1].action, DeltaAction::Add);
        assert_eq!(sd.kernel[2].action, DeltaAction::Remove);
        assert_eq!(sd.mounts.len(), 1);
        assert_eq!(sd.len(), 4);
    }

    #[test]
    fn promote_output_and_conflicts() {
        let delta = ov("[vcluster.ml.sysctl]\n\"vm.nr_hugepages\" = \"1024\"\n[vcluster.ml.mounts]\n\"/local-scratch\" = { type = \"nfs\", source = \"storage03:/scratch\" }\n");
        let gpu = [DeltaItem {
            action: DeltaAction::Modify,
            key: "gpu.3".into(),
            value: Some("DEGRADED".into()),
            previous: None,
        }];
        let text = promote_toml("ml", "node042", 2, &delta, &gpu);
        assert!(text.starts_with("# Generated overlay fragment for vcluster: ml\n# From 2 committed node delta(s) on node042\n"));
        assert!(text.contains("# gpu (not declarable"));
        // What promote writes is a spec `pact apply` takes.
        let back = parse_spec(&Source::from_str("p", &text)).unwrap();
        let mut o = Overlay::default();
        o.merge(&back[0]);
        assert_eq!(o, delta);
        let other = ov("[vcluster.ml.sysctl]\n\"vm.nr_hugepages\" = \"512\"\n\"vm.x\" = \"1\"\n");
        let same = ov("[vcluster.ml.sysctl]\n\"vm.nr_hugepages\" = \"1024\"\n");
        let c = conflicts(&delta, &[("n7".into(), other.clone()), ("n8".into(), same)]);
        assert_eq!(
            c,
            [PromoteConflict {
                node: "n7".into(),
                key: "sysctl.vm.nr_hugepages".into(),
                local: "512".into(),
                promoted: "1024".into()
            }]
        );
        let mut o7 = other;
        drop_keys(&mut o7, &delta);
        assert_eq!(o7.sysctl.keys().collect::<Vec<_>>(), ["vm.x"]);
    }
}
