//! Applying an overlay's declarations other than services to the node:
//! sysctls, files (content, mode, owner), mounts and kernel modules.
//!
//! [`plan`] is pure: it compares what was applied with what is declared
//! and lists only the changes (unchanged keys are not touched). [`execute`]
//! does them; it may block (a mount of an unreachable NFS server), so the
//! agent runs it on a worker thread and hears back through a `mio::Waker`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::overlay::{FileSpec, MountSpec, Overlay};

/// What to change on the node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyPlan {
    pub sysctls: Vec<(String, String)>,
    pub files: Vec<(String, FileSpec)>,
    /// Files that were declared and no longer are: removed.
    pub remove_files: Vec<String>,
    pub mounts: Vec<(String, MountSpec)>,
    /// Mount points that were declared and no longer are (or changed).
    pub unmounts: Vec<String>,
    pub modules: Vec<String>,
}

impl ApplyPlan {
    pub fn is_empty(&self) -> bool {
        *self == ApplyPlan::default()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} sysctl(s), {} file(s) (+{} removed), {} mount(s) (-{}), {} module(s)",
            self.sysctls.len(),
            self.files.len(),
            self.remove_files.len(),
            self.mounts.len(),
            self.unmounts.len(),
            self.modules.len()
        )
    }
}

/// The changes that turn the node from `applied` into `declared`.
pub fn plan(applied: &Overlay, declared: &Overlay) -> ApplyPlan {
    let mut p = ApplyPlan::default();
    for (k, v) in &declared.sysctl {
        if applied.sysctl.get(k) != Some(v) {
            p.sysctls.push((k.clone(), v.clone()));
        }
    }
    for (path, f) in &declared.files {
        if applied.files.get(path) != Some(f) {
            p.files.push((path.clone(), f.clone()));
        }
    }
    for path in applied.files.keys() {
        if !declared.files.contains_key(path) {
            p.remove_files.push(path.clone());
        }
    }
    for (path, m) in &declared.mounts {
        match applied.mounts.get(path) {
            Some(old) if old == m => {}
            Some(_) => {
                p.unmounts.push(path.clone());
                p.mounts.push((path.clone(), m.clone()));
            }
            None => p.mounts.push((path.clone(), m.clone())),
        }
    }
    for path in applied.mounts.keys() {
        if !declared.mounts.contains_key(path) {
            p.unmounts.push(path.clone());
        }
    }
    for m in &declared.modules.load {
        if !applied.modules.load.contains(m) {
            p.modules.push(m.clone());
        }
    }
    p
}

/// Where execution happens (tests point it at a scratch root).
#[derive(Debug, Clone)]
pub struct ApplyEnv {
    /// Prefix for files and mount points (`/` on a node).
    pub root: PathBuf,
    pub etc: PathBuf,
    pub modules_dir: PathBuf,
    /// Perform sysctls, mounts and module loads (off in tests as non-root).
    pub system: bool,
}

/// The outcome of one change: `Ok(what)` or `Err(why)`.
pub type Outcome = Result<String, String>;

/// Carry out a plan; every change is tried and reported.
pub fn execute(p: &ApplyPlan, env: &ApplyEnv) -> Vec<Outcome> {
    let mut out = Vec::new();
    let at = |path: &str| env.root.join(path.trim_start_matches('/'));
    for path in &p.unmounts {
        out.push(unmount(&at(path), env.system).map(|()| format!("unmounted {path}")));
    }
    for path in &p.remove_files {
        out.push(match std::fs::remove_file(at(path)) {
            Ok(()) => Ok(format!("removed {path}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(format!("{path} already absent"))
            }
            Err(e) => Err(format!("remove {path}: {e}")),
        });
    }
    for (path, f) in &p.files {
        out.push(write_file(&at(path), f, &env.etc).map(|()| format!("wrote {path}")));
    }
    if env.system {
        if !p.modules.is_empty() {
            out.push(
                crate::agent::hardware::load_modules(&p.modules, &env.modules_dir)
                    .map(|m| format!("loaded modules {}", m.join(" "))),
            );
        }
        for (k, v) in &p.sysctls {
            let r = crate::agent::hardware::sysctl_path(k).and_then(|path| {
                std::fs::write(&path, v).map_err(|e| format!("sysctl {k} = {v}: {e}"))
            });
            out.push(r.map(|()| format!("sysctl {k} = {v}")));
        }
        for (path, m) in &p.mounts {
            out.push(mount(&at(path), m).map(|()| format!("mounted {} on {path}", m.source)));
        }
    }
    out
}

/// Write a declared file atomically, then its mode and owner.
fn write_file(path: &Path, f: &FileSpec, etc: &Path) -> Result<(), String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.pact-tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mode = u32::from_str_radix(&f.mode, 8).map_err(|_| format!("bad mode {}", f.mode))?;
    let result = (|| -> Result<(), String> {
        std::fs::write(&tmp, &f.content).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        let uid = crate::config::users::lookup_user(&f.owner, etc).map(|(u, _)| u);
        let gid = crate::config::users::lookup_group(&f.group, etc);
        match (uid, gid) {
            (Some(u), Some(g)) => {
                // Not being root (tests) just keeps the current owner.
                if let Err(e) = std::os::unix::fs::chown(&tmp, Some(u), Some(g)) {
                    if rustix::process::geteuid().is_root() {
                        return Err(format!("chown {}: {e}", path.display()));
                    }
                }
            }
            _ => {
                return Err(format!(
                    "{}: unknown owner {}:{}",
                    path.display(),
                    f.owner,
                    f.group
                ))
            }
        }
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn mount(target: &Path, m: &MountSpec) -> Result<(), String> {
    use rustix::mount::MountFlags;
    std::fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
    let mut flags = MountFlags::empty();
    if m.read_only {
        flags |= MountFlags::RDONLY;
    }
    let data = std::ffi::CString::new(m.options.clone())
        .map_err(|_| "NUL in mount options".to_string())?;
    rustix::mount::mount(
        m.source.as_str(),
        target,
        m.fstype.as_str(),
        flags,
        data.as_c_str(),
    )
    .map_err(|e| {
        format!(
            "mount {} ({}) on {}: {e}",
            m.source,
            m.fstype,
            target.display()
        )
    })
}

fn unmount(target: &Path, system: bool) -> Result<(), String> {
    if !system {
        return Ok(());
    }
    match rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(format!("umount {}: {e}", target.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::overlay::{parse_spec, Overlay};
    use crate::config::Source;

    fn overlay(text: &str) -> Overlay {
        let mut o = Overlay::default();
        for s in parse_spec(&Source::from_str("t.toml", text)).unwrap() {
            o.merge(&s);
        }
        o
    }

    #[test]
    fn plan_lists_only_changes() {
        let a = overlay(
            "[vcluster.v.sysctl]\n\"vm.a\" = \"1\"\n\"vm.b\" = \"2\"\n[vcluster.v.files]\n\"/etc/x\" = { content = \"x\" }\n\"/etc/gone\" = { content = \"g\" }\n[vcluster.v.mounts]\n\"/m\" = { type = \"tmpfs\", source = \"tmpfs\" }\n",
        );
        let b = overlay(
            "[vcluster.v.sysctl]\n\"vm.a\" = \"1\"\n\"vm.b\" = \"3\"\n[vcluster.v.files]\n\"/etc/x\" = { content = \"x\" }\n[vcluster.v.mounts]\n\"/m\" = { type = \"tmpfs\", source = \"tmpfs\", options = \"size=1m\" }\n[vcluster.v.modules]\nload = [\"loop\"]\n",
        );
        let p = plan(&a, &b);
        assert_eq!(p.sysctls, [("vm.b".to_string(), "3".to_string())]);
        assert!(p.files.is_empty(), "unchanged file rewritten");
        assert_eq!(p.remove_files, ["/etc/gone"]);
        assert_eq!(p.unmounts, ["/m"]);
        assert_eq!(p.mounts.len(), 1);
        assert_eq!(p.modules, ["loop"]);
        assert!(plan(&b, &b).is_empty());
    }

    #[test]
    fn files_are_written_with_mode_and_removed() {
        let root = std::env::temp_dir().join(format!("pact-apply-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let env = ApplyEnv {
            root: root.clone(),
            etc: PathBuf::from("/etc"),
            modules_dir: PathBuf::from("/nonexistent"),
            system: false,
        };
        let a = overlay(
            "[vcluster.v.files]\n\"/etc/motd\" = { content = \"hi\\n\", mode = \"0600\" }\n",
        );
        let out = execute(&plan(&Overlay::default(), &a), &env);
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        let p = root.join("etc/motd");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "hi\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        let out = execute(&plan(&a, &Overlay::default()), &env);
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        assert!(!p.exists());
        let bad = overlay(
            "[vcluster.v.files]\n\"/etc/x\" = { content = \"\", owner = \"no-such-user\" }\n",
        );
        let out = execute(&plan(&Overlay::default(), &bad), &env);
        assert!(
            out[0].as_ref().unwrap_err().contains("unknown owner"),
            "{out:?}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
