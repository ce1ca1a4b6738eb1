//! InitHardware's work besides the cgroup tree: kernel modules (with their
//! dependencies from `modules.dep`, loaded with `finit_module`) and
//! sysctls. No modprobe, no shell: the image needs only the `.ko` files
//! and `modules.dep`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// A module's name as the kernel knows it: basename without `.ko*`,
/// dashes as underscores.
pub fn module_name(path_or_name: &str) -> String {
    let base = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// `modules.dep`: module name → (path relative to the modules dir,
/// dependency names).
pub fn parse_modules_dep(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((path, deps)) = line.split_once(':') else {
            continue;
        };
        let path = path.trim();
        if path.is_empty() {
            continue;
        }
        let deps = deps.split_whitespace().map(module_name).collect();
        out.insert(module_name(path), (path.to_string(), deps));
    }
    out
}

/// The order to load `wanted` and everything it needs: dependencies first,
/// each module once. Unknown names are errors.
pub fn load_order(
    wanted: &[String],
    deps: &BTreeMap<String, (String, Vec<String>)>,
    builtin: &BTreeSet<String>,
) -> Result<Vec<String>, String> {
    fn visit(
        m: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        builtin: &BTreeSet<String>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) -> Result<(), String> {
        if !seen.insert(m.to_string()) || builtin.contains(m) {
            return Ok(());
        }
        let (_, ds) = deps
            .get(m)
            .ok_or_else(|| format!("module {m} not found in modules.dep"))?;
        // modules.dep lists the closure with the deepest dependency last.
        for d in ds.iter().rev() {
            visit(d, deps, builtin, seen, out)?;
        }
        out.push(m.to_string());
        Ok(())
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for w in wanted {
        visit(&module_name(w), deps, builtin, &mut seen, &mut out)?;
    }
    Ok(out)
}

/// The modules directory of the running kernel.
pub fn default_modules_dir() -> PathBuf {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    PathBuf::from("/lib/modules").join(release.trim())
}

/// Load `wanted` (and dependencies). Returns the modules loaded now.
pub fn load_modules(wanted: &[String], dir: &Path) -> Result<Vec<String>, String> {
    if wanted.is_empty() {
        return Ok(vec![]);
    }
    let dep_text = std::fs::read_to_string(dir.join("modules.dep"))
        .map_err(|e| format!("{}: {e}", dir.join("modules.dep").display()))?;
    let deps = parse_modules_dep(&dep_text);
    let builtin: BTreeSet<String> = std::fs::read_to_string(dir.join("modules.builtin"))
        .map(|t| t.lines().map(module_name).collect())
        .unwrap_or_default();
    let mut loaded = Vec::new();
    for m in load_order(wanted, &deps, &builtin)? {
        if Path::new("/sys/module").join(&m).exists() {
            continue; // loaded already (or built in)
        }
        let (rel, _) = &deps[&m];
        let path = dir.join(rel);
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let compressed = !rel.ends_with(".ko");
        // MODULE_INIT_COMPRESSED_FILE lets the kernel decompress (Linux 6.4+).
        let flags = if compressed { 4 } else { 0 };
        let empty = CString::default();
        match rustix::system::finit_module(&file, &empty, flags) {
            Ok(()) => loaded.push(m),
            Err(rustix::io::Errno::EXIST) => {}
            Err(rustix::io::Errno::INVAL) if compressed => {
                return Err(format!(
                    "{}: compressed modules need Linux 6.4 or later",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("finit_module {}: {e}", path.display())),
        }
    }
    Ok(loaded)
}

/// Bring the loopback interface up (a fresh network namespace or a node
/// booted without an init script has `lo` down). Returns whether it had
/// to change anything.
pub fn loopback_up() -> std::io::Result<bool> {
    use std::io::Error;
    // SAFETY: a plain datagram socket for interface ioctls; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; the name is NUL-terminated within
    // IFNAMSIZ and the ioctls read/write only the flags of that struct.
    let result = unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            Err(Error::last_os_error())
        } else if ifr.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0 {
            Ok(false)
        } else {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) < 0 {
                Err(Error::last_os_error())
            } else {
                Ok(true)
            }
        }
    };
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    result
}

pub use crate::config::overlay::sysctl_path;

/// A sysctl value from TOML as the kernel wants it.
pub fn sysctl_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => u8::from(*b).to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Array(a) => a.iter().map(sysctl_value).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

/// Set every sysctl; the first failure is the error.
pub fn apply_sysctls(sysctls: &BTreeMap<String, toml::Value>) -> Result<usize, String> {
    for (k, v) in sysctls {
        let path = sysctl_path(k)?;
        let value = sysctl_value(v);
        std::fs::write(&path, &value).map_err(|e| format!("sysctl {k} = {value}: {e}"))?;
    }
    Ok(sysctls.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/watchdog/i6300esb.ko: kernel/drivers/watchdog/watchdog.ko
kernel/drivers/watchdog/watchdog.ko:
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/fs/squashfs/squashfs.ko:
";

    #[test]
    fn names_and_dependency_order() {
        assert_eq!(
            module_name("kernel/drivers/block/virtio_blk.ko.xz"),
            "virtio_blk"
        );
        assert_eq!(module_name("snd-hda-intel"), "snd_hda_intel");
        let deps = parse_modules_dep(DEP);
        assert_eq!(deps["i6300esb"].1, ["watchdog"]);
        let order = load_order(
            &["i6300esb".into(), "virtio-blk".into()],
            &deps,
            &BTreeSet::new(),
        )
        .unwrap();
        assert_eq!(
            order,
            [
                "watchdog",
                "i6300esb",
                "virtio",
                "virtio_ring",
                "virtio_blk"
            ]
        );
        let builtin: BTreeSet<String> = ["watchdog".to_string()].into();
        assert_eq!(
            load_order(&["i6300esb".into()], &deps, &builtin).unwrap(),
            ["i6300esb"]
        );
        assert!(load_order(&["nope".into()], &deps, &BTreeSet::new())
            .unwrap_err()
            .contains("nope"));
    }

    #[test]
    fn sysctl_keys_and_values() {
        assert_eq!(
            sysctl_path("vm.swappiness").unwrap(),
            PathBuf::from("/proc/sys/vm/swappiness")
        );
        assert_eq!(
            sysctl_path("net/ipv4/ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert!(sysctl_path("../etc/passwd").is_err());
        assert!(sysctl_path("/x").is_err());
        assert_eq!(sysctl_value(&toml::Value::Integer(10)), "10");
        assert_eq!(sysctl_value(&toml::Value::Boolean(true)), "1");
        assert_eq!(
            sysctl_value(&toml::Value::String("4096 87380".into())),
            "4096 87380"
        );
    }

    #[test]
    fn missing_modules_dir_is_an_error() {
        assert!(load_modules(&["x".into()], Path::new("/nonexistent")).is_err());
        assert_eq!(load_modules(&[], Path::new("/nonexistent")), Ok(vec![]));
    }
}
