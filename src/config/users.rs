//! User and group names from `/etc/passwd` and `/etc/group` (files only: a
//! diskless image has no NSS daemons when the agent starts).

use std::path::Path;

/// uid and primary gid of a user name or numeric uid.
pub fn lookup_user(name: &str, etc: &Path) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let by_name = text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    });
    by_name.or_else(|| {
        let uid: u32 = name.parse().ok()?;
        let gid = text
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 4 && f[2].parse() == Ok(uid)).then(|| f[3].parse().ok())?
            })
            .unwrap_or(uid);
        Some((uid, gid))
    })
}

/// gid of a group name or numeric gid.
pub fn lookup_group(name: &str, etc: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(etc.join("group")).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
        })
        .or_else(|| name.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_from_files() {
        let dir = std::env::temp_dir().join(format!("pact-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nchrony:x:101:102::/var/lib/chrony:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(dir.join("group"), "root:x:0:\nchrony:x:102:\n").unwrap();
        assert_eq!(lookup_user("chrony", &dir), Some((101, 102)));
        assert_eq!(lookup_user("101", &dir), Some((101, 102)));
        assert_eq!(lookup_user("4242", &dir), Some((4242, 4242)));
        assert_eq!(lookup_user("nobody-here", &dir), None);
        assert_eq!(lookup_group("chrony", &dir), Some(102));
        assert_eq!(lookup_group("7", &dir), Some(7));
        assert_eq!(lookup_group("nope", &dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
