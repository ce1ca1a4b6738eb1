//! The agent's journal link against a fake journal (a test thread speaking
//! the boot stream): boot from the stream, live updates through the
//! subscription, reconnect, and booting from the cache when the journal is
//! down.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use pact::proto::boot::{encode_delta, encode_overlay};
use pact::util::sha256::sha256_hex;

const S: Duration = Duration::from_secs(1);

fn overlay_msg(vc: &str, version: u64, text: &str) -> Vec<u8> {
    let compressed = zstd::bulk::compress(text.as_bytes(), 3).unwrap();
    encode_overlay(
        vc,
        version,
        &sha256_hex(text.as_bytes()),
        text.len(),
        &compressed,
    )
}

/// Accept one agent, check its request, run `script` on the connection.
fn serve_one(l: &TcpListener, check: impl FnOnce(&str), script: impl FnOnce(&mut TcpStream)) {
    let (mut s, _) = l.accept().unwrap();
    let mut line = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    check(&line);
    script(&mut s);
}

fn svc(name: &str) -> String {
    format!("[vcluster.ml.services.{name}]\nbinary = \"{TESTSVC}\"\n")
}

#[test]
fn boots_from_the_journal_follows_changes_and_falls_back_to_the_cache() {
    if skip("boots_from_the_journal_follows_changes_and_falls_back_to_the_cache") {
        return;
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let extra = format!("\n[agent.journal]\nendpoints = [\"{addr}\"]\nboot_wait_seconds = 1\n");
    // No services file: everything comes from the journal.
    let marker =
        std::env::temp_dir().join(format!("pact-test-journal-file-{}", std::process::id()));
    let v1 = format!(
        "[vcluster.ml.files]\n\"{}\" = {{ content = \"from the journal\" }}\n\n{}",
        marker.display(),
        svc("a")
    );
    let delta = "[vcluster.ml.services.b]\nbinary = \"".to_string() + TESTSVC + "\"\n";
    let server = std::thread::spawn(move || {
        serve_one(
            &l,
            |req| {
                assert!(
                    req.starts_with(
                        "boot node=journaled vcluster= version=0 node_version=0 from=0"
                    ),
                    "{req}"
                );
            },
            |s| {
                s.write_all(&overlay_msg("ml", 5, &v1)).unwrap();
                s.write_all(&encode_delta(
                    "journaled",
                    7,
                    &sha256_hex(delta.as_bytes()),
                    delta.as_bytes(),
                ))
                .unwrap();
                s.write_all(b"complete base_version=5 node_version=7 seq=9\n")
                    .unwrap();
                std::thread::sleep(Duration::from_millis(1500));
                // A live change: service c joins the overlay.
                let v2 = format!("{v1}\n{}", svc("c"));
                s.write_all(b"change seq=10 kind=vcluster scope=ml\n")
                    .unwrap();
                s.write_all(&overlay_msg("ml", 10, &v2)).unwrap();
                s.write_all(b"hb=1\n").unwrap();
                std::thread::sleep(Duration::from_millis(1500));
                // Then the journal goes away.
            },
        );
        l
    });
    let mut node = Node::start_with("journaled", None, &extra, false);
    node.wait_state("a", "running", 10 * S);
    node.wait_state("b", "running", 5 * S);
    node.wait_for(5 * S, "ready", || node.ready_file().exists());
    node.wait_state("c", "running", 5 * S);
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "from the journal"
    );
    let st = node.call("status");
    assert_eq!(st.records[0].get("overlay_version"), Some("10"));
    assert_eq!(st.records[0].get("node_version"), Some("7"));
    assert_eq!(st.records[0].get("journal_seq"), Some("10"));
    let cache = node.dir.join("run/journal");
    assert!(std::fs::read_to_string(cache.join("overlay.toml"))
        .unwrap()
        .contains("services.c"));
    assert!(std::fs::read_to_string(cache.join("state"))
        .unwrap()
        .contains("version=10"));
    // The journal closed: the link reconnects and asks with what it has.
    let l = server.join().unwrap();
    let reconnect = std::thread::spawn(move || {
        serve_one(
            &l,
            |req| {
                assert!(
                    req.contains("vcluster=ml version=10 node_version=7 from=10"),
                    "{req}"
                )
            },
            |s| {
                s.write_all(b"complete base_version=10 node_version=7 seq=10\n")
                    .unwrap();
            },
        );
    });
    reconnect.join().unwrap();
    // Reboot with the journal down: the cache brings the node up.
    node.signal(libc::SIGTERM);
    node.wait_exit(10 * S);
    let dir = node.dir.clone();
    node.keep_dir = true;
    drop(node);
    let node2 = Node::restart_in(&dir, "journaled2", &extra);
    node2.wait_for(10 * S, "ready from cache", || node2.ready_file().exists());
    for s in ["a", "b", "c"] {
        assert_eq!(node2.state(s), "running", "{s}\n{}", node2.log());
    }
    assert!(
        node2
            .log()
            .contains("journal unreachable: booting from the cached overlay v10"),
        "{}",
        node2.log()
    );
    let _ = std::fs::remove_file(marker);
}

#[test]
fn no_journal_and_no_cache_fails_pull_overlay_and_retries() {
    if skip("no_journal_and_no_cache_fails_pull_overlay_and_retries") {
        return;
    }
    // Nothing listens there.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let extra = format!("\n[agent.journal]\nendpoints = [\"{addr}\"]\nboot_wait_seconds = 0.5\n");
    let node = Node::start_with("nojournal", None, &extra, false);
    node.wait_for(5 * S, "pull_overlay failure", || {
        node.log()
            .contains("pull_overlay failed: journal unreachable and no cached overlay")
    });
    let st = node.call("status");
    assert_eq!(st.records[0].get("boot_phase"), Some("pull_overlay"));
    assert_eq!(st.records[0].get("journal"), Some("disconnected"));
    assert!(!node.ready_file().exists());
}
