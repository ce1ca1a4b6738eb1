//! Storage faults in a running cluster: a node whose disk fills up stops
//! taking part (with a clear error in `status`), the others go on, and
//! once space is back it rebuilds itself from disk and catches up.

#[path = "journal_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{Cluster, Options};

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn journal_full_disk_node_leaves_then_rejoins_without_losing_data() {
    if !is_root() {
        eprintln!("\n*** journal_full_disk_node_leaves_then_rejoins_without_losing_data: SKIPPED: needs root to mount a tmpfs ***\n");
        return;
    }
    let opts = Options {
        tmpfs: Some((2, "3m")),
        ..Options::default()
    };
    let c = Cluster::start("diskfull", opts);
    c.wait_leader(&[1, 2, 3], Duration::from_secs(10));
    let mut client = c.any_client(Duration::from_secs(10));
    let big = vec![b'x'; 48 * 1024];
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Fill node 2's disk; the cluster keeps acknowledging through 1 and 3.
    loop {
        let mut payload = big.clone();
        payload[..8].copy_from_slice(&(acked.len() as u64).to_be_bytes());
        let seq = client
            .append(&payload)
            .expect("the majority keeps accepting writes");
        acked.push((seq, payload));
        let st = c.status(2);
        if st.as_ref().and_then(|r| r.get("storage")) == Some("failed") {
            let msg = st.unwrap().get("storage_error").unwrap_or("").to_string();
            assert!(
                msg.contains("full") || msg.contains("disk"),
                "unclear error: {msg}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 never reported the full disk\n{}",
            c.logs()
        );
    }
    for i in 0..20u64 {
        let seq = client
            .append(format!("while-2-is-out-{i}").as_bytes())
            .unwrap();
        acked.push((seq, format!("while-2-is-out-{i}").into_bytes()));
    }
    // Node 2 refuses clients clearly meanwhile.
    let e = c.client(2, Duration::from_millis(500)).get(0);
    assert!(e.is_err());
    // Space is back: node 2 rebuilds from disk and catches up.
    c.resize_tmpfs(2, "256m");
    let last = c.wait_converged(&[1, 2, 3], 1, Duration::from_secs(40));
    assert!(last > 0);
    let all = c.client(2, Duration::from_secs(10)).all().unwrap();
    for (seq, data) in &acked {
        assert_eq!(
            all.get(*seq as usize).map(|(_, d)| d),
            Some(data),
            "seq {seq}"
        );
    }
    assert_eq!(c.status(2).unwrap().get("storage"), Some("ok"));
}
