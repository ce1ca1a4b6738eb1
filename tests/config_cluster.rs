//! The configuration journal end to end: a 3-node `pact-journal`, two real
//! agents booting from it, and the `pact` CLI as an admin uses it.
//!
//! - overlays applied with `pact apply` reach both agents, which change
//!   only what changed; killing the leader mid-stream loses and duplicates
//!   nothing (the agents' logs show every change sequence once, in order);
//! - promote with and without conflicts;
//! - TTL bounds and broken specs are rejected with nothing written.

mod common;
mod journal_support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use journal_support::{Cluster, Options};

const S: Duration = Duration::from_secs(1);

/// Runs `pact ARGS` against every node of `c`.
fn pact(c: &Cluster, args: &[&str]) -> Output {
    let eps: Vec<String> = c.nodes.iter().map(|n| n.client.to_string()).collect();
    pact_at(&eps, args)
}

/// Runs `pact ARGS` against these endpoints, in this order.
fn pact_at(eps: &[String], args: &[&str]) -> Output {
    Command::new(CLI)
        .args(args)
        .env("PACT_JOURNAL_ENDPOINTS", eps.join(","))
        .env("PACT_PRINCIPAL", "alice@example.org")
        .env("PACT_ROLE", "pact-platform-admin")
        .env_remove("PACT_ENDPOINT")
        .output()
        .expect("run pact")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `pact ARGS` must succeed; its stdout.
fn pact_ok(c: &Cluster, args: &[&str]) -> String {
    let o = pact(c, args);
    assert!(
        o.status.success(),
        "pact {args:?}: {}\n{}",
        text(&o),
        c.logs()
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A write that may meet an election: retried until it succeeds.
fn pact_retry(c: &Cluster, args: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let o = pact(c, args);
        if o.status.success() {
            return String::from_utf8_lossy(&o.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "pact {args:?} kept failing: {}\n{}",
            text(&o),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last entry's sequence number, from `pact log --json -n 1`.
fn last_seq(c: &Cluster) -> u64 {
    let out = pact_ok(c, &["log", "--json", "-n", "1"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .and_then(|a| a.last())
        .map_or(0, |e| e["seq"].as_u64().unwrap())
}

fn entry_count(c: &Cluster) -> usize {
    let out = pact_ok(c, &["log", "--json", "-n", "1000"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array().unwrap().len()
}

fn write_spec(c: &Cluster, name: &str, body: &str) -> String {
    let p = c.dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// Numbers after `prefix` on the agent's log lines, in order.
fn numbers_after(log: &str, prefix: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split_once(prefix))
        .filter_map(|(_, rest)| {
            rest.split(|ch: char| !ch.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

fn strictly_increasing(v: &[u64]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

fn overlay(file: &std::path::Path, content: &str, extra: &str) -> String {
    format!(
        "[vcluster.ml.files]\n\"{}\" = {{ content = \"{content}\" }}\n\n\
         [vcluster.ml.services.steady]\nbinary = \"{TESTSVC}\"\norder = 10\n\n{extra}",
        file.display()
    )
}

#[test]
fn agents_converge_and_survive_a_leader_kill() {
    if skip("agents_converge_and_survive_a_leader_kill") {
        return;
    }
    let mut c = Cluster::start("config-converge", Options::default());
    let leader = c.wait_leader(&[1, 2, 3], 20 * S);
    let tag = std::process::id();
    // Both agents run on this host: they write the same file, same content.
    let files = [std::env::temp_dir().join(format!("pact-cc-{tag}.conf"))];
    let spec = write_spec(&c, "v0.toml", &overlay(&files[0], "v0", ""));
    pact_ok(&c, &["apply", &spec, "-m", "first overlay"]);
    pact_ok(&c, &["node", "assign", "a1", "ml"]);
    pact_ok(&c, &["node", "assign", "a2", "ml"]);
    // Leader first: the agents stream from the node about to be killed.
    let mut order = vec![leader];
    order.extend([1u64, 2, 3].into_iter().filter(|&i| i != leader));
    let eps: Vec<String> = order
        .iter()
        .map(|&i| format!("\"{}\"", c.node(i).client))
        .collect();
    let extra = format!(
        "[agent.journal]\nendpoints = [{}]\nboot_wait_seconds = 10\n",
        eps.join(", ")
    );
    let agents: Vec<Node> = ["a1", "a2"]
        .iter()
        .map(|n| Node::start_with(n, None, &extra, false))
        .collect();
    for a in &agents {
        a.wait_state("steady", "running", 20 * S);
        a.wait_for(10 * S, "the overlay's file", || {
            std::fs::read_to_string(&files[0]).ok().as_deref() == Some("v0")
        });
    }
    let steady_pids: Vec<String> = agents
        .iter()
        .map(|a| a.service_field("steady", "pid").unwrap())
        .collect();

    // A stream of changes; the leader dies in the middle of it.
    const N: usize = 16;
    for i in 1..=N {
        let extra = if i >= N / 2 + 2 {
            format!("[vcluster.ml.services.late]\nbinary = \"{TESTSVC}\"\norder = 20\n")
        } else {
            String::new()
        };
        let spec = write_spec(
            &c,
            &format!("v{i}.toml"),
            &overlay(&files[0], &format!("v{i}"), &extra),
        );
        pact_retry(&c, &["apply", &spec, "-m", &format!("change {i}")], 30 * S);
        if i == N / 2 {
            c.kill9(leader);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let live: Vec<u64> = [1u64, 2, 3].into_iter().filter(|&i| i != leader).collect();
    c.wait_leader(&live, 20 * S);
    let final_seq = last_seq(&c);
    let final_version: u64 = {
        let out = pact_ok(&c, &["group", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["version"].as_u64().unwrap()
    };
    for a in &agents {
        a.wait_for(30 * S, "the last overlay version", || {
            let st = a.call("status");
            st.records[0].get("overlay_version") == Some(&final_version.to_string()[..])
                && st.records[0].get("journal_seq") == Some(&final_seq.to_string()[..])
        });
        a.wait_state("late", "running", 20 * S);
        assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), format!("v{N}"));
        let log = a.log();
        // Nothing twice, nothing backwards: every overlay version and every
        // change notice arrives once, in order, across the reconnect.
        let versions = numbers_after(&log, "overlay ml v");
        assert!(
            strictly_increasing(&versions),
            "{}: overlay versions {versions:?}",
            a.name
        );
        assert_eq!(versions.last(), Some(&final_version));
        let changes = numbers_after(&log, "change seq ");
        eprintln!(
            "{}: overlay versions {versions:?}, change seqs {changes:?}",
            a.name
        );
        assert!(
            strictly_increasing(&changes),
            "{}: change seqs {changes:?}",
            a.name
        );
        assert!(
            log.contains("retrying in"),
            "{}: never reconnected:\n{log}",
            a.name
        );
    }
    // Only what changed was touched: the steady service never restarted.
    for (a, pid) in agents.iter().zip(&steady_pids) {
        assert_eq!(
            a.service_field("steady", "pid").as_ref(),
            Some(pid),
            "{}",
            a.name
        );
        assert_eq!(a.service_field("steady", "restarts").as_deref(), Some("0"));
    }
    // The journal's view of the nodes.
    let out = pact_ok(&c, &["status", "a1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["vcluster"], "ml");
    assert_eq!(v["overlay_version"].as_u64(), Some(final_version));
    drop(agents);
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn promote_with_and_without_conflicts() {
    if skip("promote_with_and_without_conflicts") {
        return;
    }
    let c = Cluster::start("config-promote", Options::default());
    c.wait_leader(&[1, 2, 3], 20 * S);
    let base = write_spec(
        &c,
        "base.toml",
        "[vcluster.ml.sysctl]\n\"vm.swappiness\" = \"10\"\n",
    );
    pact_ok(&c, &["apply", &base]);
    for n in ["n1", "n2", "n3"] {
        pact_ok(&c, &["node", "assign", n, "ml"]);
    }
    // No conflict: n1's delta alone.
    let d1 = write_spec(
        &c,
        "d1.toml",
        "[vcluster.ml.sysctl]\n\"vm.swappiness\" = \"30\"\n\"kernel.pid_max\" = \"99999\"\n",
    );
    pact_ok(&c, &["commit", "--node", "n1", &d1, "--ttl", "3600"]);
    let dry = pact_ok(&c, &["promote", "n1", "--dry-run"]);
    assert!(
        dry.contains("[vcluster.ml.sysctl]") && dry.contains("\"vm.swappiness\" = \"30\""),
        "{dry}"
    );
    pact_ok(&c, &["promote", "n1"]);
    let show = pact_ok(&c, &["group", "show", "ml"]);
    assert!(
        show.contains("\"vm.swappiness\" = \"30\"") && show.contains("kernel.pid_max"),
        "{show}"
    );
    let diff = pact_ok(&c, &["diff", "--committed", "--json"]);
    assert_eq!(diff.trim(), "[]", "promoted deltas are superseded");

    // Conflict: n2 holds a different local value for a key n1 promotes.
    let d1b = write_spec(
        &c,
        "d1b.toml",
        "[vcluster.ml.sysctl]\n\"vm.swappiness\" = \"40\"\n",
    );
    let d2 = write_spec(
        &c,
        "d2.toml",
        "[vcluster.ml.sysctl]\n\"vm.swappiness\" = \"70\"\n",
    );
    pact_ok(&c, &["commit", "--node", "n1", &d1b]);
    pact_ok(&c, &["commit", "--node", "n2", &d2]);
    let before = entry_count(&c);
    let dry = pact(&c, &["promote", "n1", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(4), "{}", text(&dry));
    assert!(
        String::from_utf8_lossy(&dry.stderr).contains("n2"),
        "{}",
        text(&dry)
    );
    // The same with --json: one object, the fragment and the conflicts.
    let dry = pact(&c, &["--json", "promote", "n1", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(4), "{}", text(&dry));
    let v: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(v["node"], "n1");
    assert!(
        v["fragment"].as_str().unwrap().contains("vm.swappiness"),
        "{v}"
    );
    assert_eq!(v["conflicts"][0]["conflict"], "n2", "{v}");
    // Values are text, whatever they look like; stderr stays quiet.
    assert!(v["conflicts"][0]["promoted"].is_string(), "{v}");
    assert!(v["conflicts"][0]["local"].is_string(), "{v}");
    assert!(dry.stderr.is_empty(), "{}", text(&dry));
    let o = pact(&c, &["promote", "n1"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("promote conflict") && err.contains("n2") && err.contains("nothing applied"),
        "{err}"
    );
    assert_eq!(
        entry_count(&c),
        before,
        "a conflicting promote wrote nothing"
    );
    assert!(pact_ok(&c, &["group", "show", "ml"]).contains("\"vm.swappiness\" = \"30\""));

    // Resolved by keeping n2's local value.
    pact_ok(&c, &["promote", "n1", "--keep-local"]);
    assert!(pact_ok(&c, &["group", "show", "ml"]).contains("\"vm.swappiness\" = \"40\""));
    let diff = pact_ok(&c, &["diff", "--committed"]);
    assert!(diff.contains("n2 kernel: vm.swappiness = 70"), "{diff}");
    assert!(!diff.contains("n1 "), "{diff}");

    // Resolved by overwriting: n2's delta goes, the overlay wins.
    let d3 = write_spec(
        &c,
        "d3.toml",
        "[vcluster.ml.sysctl]\n\"vm.swappiness\" = \"5\"\n",
    );
    pact_ok(&c, &["commit", "--node", "n3", &d3]);
    pact_ok(&c, &["promote", "n3", "--overwrite"]);
    assert!(pact_ok(&c, &["group", "show", "ml"]).contains("\"vm.swappiness\" = \"5\""));
    assert_eq!(pact_ok(&c, &["diff", "--committed", "--json"]).trim(), "[]");
    let log = pact_ok(&c, &["log", "-n", "3"]);
    assert!(
        log.contains("promote") && log.contains("alice@example.org"),
        "{log}"
    );
}

#[test]
fn ttl_bounds_and_bad_specs_write_nothing() {
    if skip("ttl_bounds_and_bad_specs_write_nothing") {
        return;
    }
    let c = Cluster::start("config-ttl", Options::default());
    c.wait_leader(&[1, 2, 3], 20 * S);
    let base = write_spec(
        &c,
        "base.toml",
        "[vcluster.ml.sysctl]\n\"vm.swappiness\" = \"10\"\n",
    );
    pact_ok(&c, &["apply", &base]);
    pact_ok(&c, &["node", "assign", "n1", "ml"]);
    // Checked locally, named by file and line; nothing is written.
    let before = entry_count(&c);
    let pol = write_spec(&c, "pol.toml", "\ndrift_sensitivity = -1\n");
    let o = pact(&c, &["group", "set-policy", "ml", &pol]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("{pol}:2: drift_sensitivity")),
        "{}",
        text(&o)
    );
    let o = pact(&c, &["log", "--scope", "bogus:x"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(entry_count(&c), before);
    let before = entry_count(&c);
    // Applying what is already declared writes nothing (here read from
    // standard input, as `-`).
    let eps: Vec<String> = c.nodes.iter().map(|n| n.client.to_string()).collect();
    let mut child = Command::new(CLI)
        .args(["apply", "-"])
        .env("PACT_JOURNAL_ENDPOINTS", eps.join(","))
        .env("PACT_PRINCIPAL", "alice@example.org")
        .env("PACT_ROLE", "pact-platform-admin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        &std::fs::read(&base).unwrap(),
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    let again = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && again.contains("nothing written"),
        "{again}"
    );
    // A mistyped option is refused, not ignored.
    let o = pact(&c, &["promote", "n1", "--dryrun"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown option --dryrun"));
    let o = pact(&c, &["status", "no-such-node", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "null\n");
    // Arguments that are not used are refused, not ignored.
    for args in [
        &["log", "extra"][..],
        &["status", "n1", "n2"],
        &["watch", "x"],
    ] {
        let o = pact(&c, args);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("unexpected argument"), "{}", text(&o));
    }
    pact_ok(&c, &["log", "-n", "2", "--scope", "vcluster:ml"]);
    pact_ok(&c, &["status", "n1"]);
    let d = write_spec(
        &c,
        "d.toml",
        "[vcluster.ml.sysctl]\n\"vm.swappiness\" = \"60\"\n",
    );
    for (ttl, msg) in [
        ("899", "TTL must be >= 900 seconds (15 minutes)"),
        ("864001", "TTL must be <= 864000 seconds (10 days)"),
    ] {
        let o = pact(&c, &["commit", "--node", "n1", &d, "--ttl", ttl]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(msg),
            "{}",
            text(&o)
        );
    }
    // A spec with an unknown key: the error names file, line and key.
    let bad = write_spec(
        &c,
        "bad.toml",
        "[vcluster.ml.services.x]\nbinary = \"/bin/true\"\nrestrat = \"always\"\n",
    );
    let o = pact(&c, &["apply", &bad]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.toml:3") && err.contains("restrat"),
        "{err}"
    );
    let broken = write_spec(&c, "broken.toml", "[vcluster.ml.sysctl\n");
    let o = pact(&c, &["apply", &broken]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(entry_count(&c), before, "rejected writes left no entry");
    // A TTL out of bounds is refused before the journal is asked (here:
    // none is reachable), as an invalid argument, not an unknown outcome.
    let o = Command::new(CLI)
        .args(["commit", "--node", "n1", &d, "--ttl", "5"])
        .env("PACT_JOURNAL_ENDPOINTS", "127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("TTL must be >= 900 seconds"),
        "{}",
        text(&o)
    );
    let o = pact(&c, &["rollback", "99999"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("rollback 99999: there is no entry 99999 yet"),
        "{}",
        text(&o)
    );
    // The bounds themselves are accepted.
    pact_ok(&c, &["commit", "--node", "n1", &d, "--ttl", "900"]);
    pact_ok(&c, &["commit", "--node", "n1", &d, "--ttl", "864000"]);
    assert_eq!(entry_count(&c), before + 2);
    // Rollback restores the overlay as of an entry, as a new entry.
    let seq = last_seq(&c);
    pact_ok(&c, &["rollback", "0"]);
    let log = pact_ok(&c, &["log", "--json", "-n", "1"]);
    let v: serde_json::Value = serde_json::from_str(&log).unwrap();
    assert_eq!(v[0]["type"], "Rollback");
    assert_eq!(v[0]["seq"].as_u64(), Some(seq + 1));
    // Several vClusters in one file are independent: a refusal for one is
    // reported, the others are still written, and --json says which.
    let multi = write_spec(
        &c,
        "multi.toml",
        "[vcluster.a1.sysctl]\n\"vm.a\" = \"1\"\n\n\
         [vcluster.bb.services.x]\nbinary = \"/bin/true\"\ndepends_on = [\"nope\"]\n\n\
         [vcluster.cc.sysctl]\n\"vm.c\" = \"1\"\n",
    );
    let o = pact(&c, &["--json", "apply", &multi]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let got: Vec<(String, bool)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["vcluster"].as_str().unwrap().to_string(),
                r.get("error").is_some(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a1".into(), false),
            ("bb".into(), true),
            ("cc".into(), false)
        ],
        "{v}"
    );
}

/// A boot stream held open like an agent's: everything read so far.
struct Stream {
    bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Stream {
    fn open(c: &Cluster, request: &str) -> Stream {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(c.node(1).client).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let bytes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let b2 = bytes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                b2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Stream { bytes }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    /// Waits until `what` has arrived `times` times in all.
    fn wait(&self, what: &str, times: usize) {
        let deadline = Instant::now() + 10 * S;
        while self.text().matches(what).count() < times {
            assert!(
                Instant::now() < deadline,
                "no {what:?} ({times}x) in:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn live_streams_follow_moves_and_the_very_first_overlay() {
    if skip("live_streams_follow_moves_and_the_very_first_overlay") {
        return;
    }
    let c = Cluster::start(
        "config-streams",
        Options {
            nodes: 1,
            ..Options::default()
        },
    );
    c.wait_leader(&[1], 10 * S);
    // A node streaming before anything is written: entry 0 is its
    // vCluster's first overlay (version 0, like "none"); it must arrive.
    let st = Stream::open(&c, "boot node=n1 vcluster=va\n");
    st.wait("complete", 1);
    let spec = write_spec(
        &c,
        "a.toml",
        "[vcluster.va.sysctl]\n\"vm.swappiness\" = \"10\"\n",
    );
    pact_ok(&c, &["apply", &spec]);
    st.wait(" vcluster=va version=0 ", 2);
    // Assigned, with a delta.
    pact_ok(&c, &["node", "assign", "n1", "va"]);
    let d = write_spec(
        &c,
        "d.toml",
        "[vcluster.va.sysctl]\n\"vm.overcommit_memory\" = \"1\"\n",
    );
    pact_ok(&c, &["commit", "--node", "n1", &d]);
    st.wait(" node=n1 version=2 ", 1);
    // Moved to a vCluster with no overlay: its (empty) overlay, and the
    // delta gone.
    pact_ok(&c, &["node", "assign", "n1", "vempty"]);
    st.wait(" vcluster=vempty version=0 ", 1);
    st.wait(" node=n1 version=0 ", 1);
    // And back: va's overlay again, and still no delta (the move dropped it).
    pact_ok(&c, &["node", "assign", "n1", "va"]);
    st.wait(" vcluster=va version=0 ", 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        st.text().matches(" node=n1 version=2 ").count(),
        1,
        "{}",
        st.text()
    );
}

#[test]
fn a_watch_on_a_node_that_catches_up_by_snapshot_misses_nothing() {
    if skip("a_watch_on_a_node_that_catches_up_by_snapshot_misses_nothing") {
        return;
    }
    let c = Cluster::start(
        "config-watchsnap",
        Options {
            raft_extra: "snapshot_interval = 40".into(),
            ..Options::default()
        },
    );
    let leader = c.wait_leader(&[1, 2, 3], 20 * S);
    let lagging = (1..=3).find(|&i| i != leader).unwrap();
    let watch = {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(c.node(lagging).client).unwrap();
        s.write_all(b"watch\n").unwrap();
        s
    };
    std::thread::sleep(Duration::from_millis(200));
    let pid = c.node(lagging).child.as_ref().unwrap().id() as i32;
    // SAFETY: SIGSTOP/SIGCONT of a process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let ep = c.node(leader).client.to_string();
    for i in 0..100 {
        let o = pact_at(
            std::slice::from_ref(&ep),
            &["node", "assign", &format!("n{i}"), "ml"],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // Every seq from 0 to 99 exactly once, in order.
    let mut r = std::io::BufReader::new(watch);
    r.get_ref().set_read_timeout(Some(20 * S)).unwrap();
    let mut seqs = Vec::new();
    while seqs.last() != Some(&99) {
        let mut l = String::new();
        use std::io::BufRead;
        if r.read_line(&mut l).unwrap_or(0) == 0 {
            panic!("watch ended at {seqs:?}\n{}", c.logs());
        }
        if let Some(rest) = l.strip_prefix("seq=") {
            seqs.push(rest.split(' ').next().unwrap().parse::<u64>().unwrap());
        }
    }
    assert_eq!(seqs, (0..100).collect::<Vec<u64>>());
    assert!(
        c.logs().contains("installing a snapshot at index"),
        "no snapshot was installed: the test proves nothing"
    );
}

#[test]
fn a_frozen_endpoint_is_passed_over_and_the_timeout_bounds_the_command() {
    if skip("a_frozen_endpoint_is_passed_over_and_the_timeout_bounds_the_command") {
        return;
    }
    let c = Cluster::start("config-frozen", Options::default());
    let leader = c.wait_leader(&[1, 2, 3], 20 * S);
    let frozen = (1..=3).find(|&i| i != leader).unwrap();
    let pid = |i: u64| c.node(i).child.as_ref().unwrap().id() as i32;
    // SAFETY: SIGSTOP/SIGCONT of processes this test started.
    unsafe { libc::kill(pid(frozen), libc::SIGSTOP) };
    // The frozen node first: it accepts the connection but never answers.
    let mut eps = vec![c.node(frozen).client.to_string()];
    eps.extend(
        (1..=3)
            .filter(|&i| i != frozen)
            .map(|i| c.node(i).client.to_string()),
    );
    let run = |args: &[&str]| {
        let t = Instant::now();
        let o = pact_at(&eps, args);
        (o, t.elapsed())
    };
    let (o, took) = run(&["--timeout", "30", "node", "assign", "f1", "ml"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(took < 6 * S, "took {took:?}: the frozen endpoint held it");
    let (o, took) = run(&["--timeout", "30", "log", "-n", "5"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(took < 6 * S, "took {took:?}");
    // A watch too: on the next endpoint, it shows the next write.
    let mut w = Command::new(CLI)
        .args(["--timeout", "30", "watch"])
        .env("PACT_JOURNAL_ENDPOINTS", eps.join(","))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let (o, _) = run(&["--timeout", "30", "node", "assign", "f2", "ml"]);
    assert!(o.status.success(), "{}", text(&o));
    let mut first = String::new();
    let mut out = std::io::BufReader::new(w.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let _ = out.read_line(&mut first);
        first
    });
    let deadline = Instant::now() + 6 * S;
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = w.kill();
    let _ = w.wait();
    let first = reader.join().unwrap();
    assert!(
        first.contains("node f2 assigned to vcluster ml"),
        "watch printed {first:?}"
    );
    // No quorum: a 3-vCluster apply gives up within its --timeout, all
    // of it, not 3 s per vCluster.
    let other = (1..=3).find(|&i| i != leader && i != frozen).unwrap();
    unsafe { libc::kill(pid(other), libc::SIGSTOP) };
    let spec = write_spec(
        &c,
        "three.toml",
        "[vcluster.a.sysctl]\n\"x\" = \"1\"\n[vcluster.b.sysctl]\n\"x\" = \"1\"\n[vcluster.c.sysctl]\n\"x\" = \"1\"\n",
    );
    let (o, took) = run(&["--timeout", "3", "apply", &spec]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(took < Duration::from_millis(4500), "took {took:?}");
    unsafe { libc::kill(pid(other), libc::SIGCONT) };
    unsafe { libc::kill(pid(frozen), libc::SIGCONT) };
}

#[test]
fn a_vcluster_watch_shows_a_node_while_it_is_in_it_and_its_moves() {
    if skip("a_vcluster_watch_shows_a_node_while_it_is_in_it_and_its_moves") {
        return;
    }
    let c = Cluster::start(
        "config-watchvc",
        Options {
            nodes: 1,
            ..Options::default()
        },
    );
    c.wait_leader(&[1], 10 * S);
    let st = Stream::open(&c, "watch vcluster=ml\n");
    std::thread::sleep(Duration::from_millis(200));
    let d_ml = write_spec(&c, "dml.toml", "[vcluster.ml.sysctl]\n\"vm.a\" = \"1\"\n");
    let d_other = write_spec(
        &c,
        "dot.toml",
        "[vcluster.other.sysctl]\n\"vm.a\" = \"2\"\n",
    );
    pact_ok(&c, &["node", "assign", "n1", "ml"]); // 0
    pact_ok(&c, &["commit", "--node", "n1", &d_ml]); // 1
    pact_ok(&c, &["node", "assign", "n1", "other"]); // 2: leaves ml
    pact_ok(&c, &["commit", "--node", "n1", &d_other]); // 3: not ml's
    pact_ok(&c, &["node", "assign", "n2", "ml"]); // 4
    st.wait("seq=4 ", 1);
    let text = st.text();
    let seqs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("seq="))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(seqs, ["0", "1", "2", "4"], "{text}");
}
