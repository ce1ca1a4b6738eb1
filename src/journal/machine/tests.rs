//! The configuration machine against a real SQLite schema: validation
//! texts, each command's effect, and the replay property.

use rusqlite::Connection;

use super::entry::*;
use super::*;
use crate::journal::state_machine::{ApplyOutcome, CommittedEntry, StateMachine};

struct Db {
    conn: Connection,
    sm: ConfigMachine,
    index: u64,
}

fn author() -> Author {
    Author {
        principal: "alice@example.org".into(),
        principal_type: PrincipalType::Human,
        role: "pact-platform-admin".into(),
    }
}

fn entry(scope: Scope) -> ConfigEntry {
    ConfigEntry {
        sequence: 0,
        timestamp: 1_000_000,
        entry_type: EntryType::Commit,
        scope,
        author: author(),
        parent: None,
        state_delta: None,
        policy_ref: String::new(),
        ttl_seconds: None,
        emergency_reason: None,
        message: None,
    }
}

impl Db {
    fn new() -> Db {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::journal::storage::migrations::migrate(&mut conn).unwrap();
        Db {
            conn,
            sm: ConfigMachine::new(),
            index: 0,
        }
    }

    fn apply_bytes(&mut self, data: &[u8]) -> ApplyOutcome {
        self.index += 1;
        let tx = self.conn.transaction().unwrap();
        let out = self
            .sm
            .apply(
                &tx,
                CommittedEntry {
                    index: self.index,
                    term: 1,
                    data,
                },
            )
            .unwrap();
        tx.commit().unwrap();
        out
    }

    fn run(&mut self, cmd: Command) -> ApplyOutcome {
        self.apply_bytes(&cmd.encode())
    }

    fn ok(&mut self, cmd: Command) -> Record {
        match self.run(cmd) {
            ApplyOutcome::Applied(r) => r,
            ApplyOutcome::Rejected(c, m) => panic!("rejected ({c:?}): {m}"),
        }
    }

    fn refused(&mut self, cmd: Command) -> (ExitCode, String) {
        match self.run(cmd) {
            ApplyOutcome::Rejected(c, m) => (c, m),
            ApplyOutcome::Applied(r) => panic!("accepted: {}", r.to_line()),
        }
    }

    fn apply_spec(&mut self, vc: &str, spec: &str) -> Record {
        self.ok(Command::ApplyOverlay {
            entry: entry(Scope::VCluster(vc.into())),
            spec: spec.into(),
        })
    }

    fn node_delta(&mut self, node: &str, spec: &str, ttl: Option<u32>) -> ApplyOutcome {
        let mut e = entry(Scope::Node(node.into()));
        e.ttl_seconds = ttl;
        self.run(Command::CommitNodeDelta {
            entry: e,
            spec: spec.into(),
        })
    }

    fn assign(&mut self, node: &str, vc: &str) {
        self.ok(Command::Assign {
            entry: entry(Scope::Node(node.into())),
            node: node.into(),
            vcluster: Some(vc.into()),
        });
    }

    /// Every derived table's rows, for comparisons.
    fn dump(&self) -> String {
        let mut out = String::new();
        for (table, order) in [
            ("journal_entries", "seq"),
            ("config_entries", "seq"),
            ("overlays", "vcluster"),
            ("overlay_versions", "vcluster, seq"),
            ("node_deltas", "node"),
            ("node_delta_versions", "node, seq"),
            ("node_assignments", "node"),
            ("policies", "vcluster"),
        ] {
            let mut st = self
                .conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
                .unwrap();
            let n = st.column_count();
            let mut rows = st.query([]).unwrap();
            while let Some(r) = rows.next().unwrap() {
                let cols: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect();
                out.push_str(&format!("{table}: {}\n", cols.join(" | ")));
            }
        }
        out
    }
}

#[test]
fn j1_sequences_start_at_zero_without_gaps_even_with_refusals() {
    let mut db = Db::new();
    assert_eq!(
        db.apply_spec("ml", "[vcluster.ml.sysctl]\n\"vm.a\" = \"1\"\n")
            .get("seq"),
        Some("0")
    );
    // A refused command takes no sequence number.
    let mut e = entry(Scope::VCluster("ml".into()));
    e.author.principal.clear();
    db.refused(Command::ApplyOverlay {
        entry: e,
        spec: String::new(),
    });
    assert!(
        matches!(db.apply_bytes(&raw_payload(b"opaque")), ApplyOutcome::Applied(r) if r.get("seq") == Some("1"))
    );
    assert_eq!(
        db.apply_spec("ml", "[vcluster.ml.sysctl]\n\"vm.b\" = \"2\"\n")
            .get("seq"),
        Some("2")
    );
    assert_eq!(db.sm.next_seq(), 3);
}

#[test]
fn j3_j4_and_ttl_texts() {
    let mut db = Db::new();
    let mut e = entry(Scope::Global);
    e.entry_type = EntryType::DriftDetected;
    e.author.principal = String::new();
    assert_eq!(
        db.refused(Command::Record { entry: e.clone() }).1,
        "author principal required"
    );
    e.author = author();
    e.author.role = String::new();
    assert_eq!(
        db.refused(Command::Record { entry: e.clone() }).1,
        "author role required"
    );
    e.author = author();
    e.parent = Some(0);
    assert_eq!(
        db.refused(Command::Record { entry: e.clone() }).1,
        "parent must precede entry"
    );
    e.parent = None;
    db.ok(Command::Record { entry: e });
    db.assign("n1", "ml");
    let spec = "[vcluster.ml.sysctl]\n\"vm.x\" = \"1\"\n";
    match db.node_delta("n1", spec, Some(300)) {
        ApplyOutcome::Rejected(c, m) => {
            assert_eq!(c, ExitCode::Invalid);
            assert_eq!(m, "TTL must be >= 900 seconds (15 minutes)");
        }
        other => panic!("{other:?}"),
    }
    match db.node_delta("n1", spec, Some(864_001)) {
        ApplyOutcome::Rejected(_, m) => assert_eq!(m, "TTL must be <= 864000 seconds (10 days)"),
        other => panic!("{other:?}"),
    }
    // Nothing was written by the refusals.
    assert!(tables::delta(&db.conn, "n1").unwrap().is_none());
    assert!(matches!(
        db.node_delta("n1", spec, Some(900)),
        ApplyOutcome::Applied(_)
    ));
}

#[test]
fn overlays_version_checksum_and_only_their_vcluster_changes() {
    let mut db = Db::new();
    db.apply_spec("ml", "[vcluster.ml.sysctl]\n\"vm.a\" = \"1\"\n");
    db.apply_spec("sandbox", "[vcluster.sandbox.sysctl]\n\"vm.a\" = \"9\"\n");
    let r = db.apply_spec("ml", "[vcluster.ml.sysctl]\n\"vm.b\" = \"2\"\n");
    assert_eq!(r.get("version"), Some("2"));
    let ml = tables::overlay(&db.conn, "ml").unwrap().unwrap();
    assert_eq!(ml.version, 2);
    // J5: checksum = hash(data).
    assert_eq!(
        ml.checksum,
        crate::util::sha256::sha256_hex(ml.toml.as_bytes())
    );
    assert_eq!(ml.overlay.sysctl.len(), 2);
    assert_eq!(
        tables::overlay(&db.conn, "sandbox")
            .unwrap()
            .unwrap()
            .version,
        1
    );
    // A spec for another vCluster than the scope is refused.
    let (_, m) = db.refused(Command::ApplyOverlay {
        entry: entry(Scope::VCluster("ml".into())),
        spec: "[vcluster.other.sysctl]\n\"vm.a\" = \"1\"\n".into(),
    });
    assert!(m.contains("must declare vcluster ml only"), "{m}");
    let (_, m) = db.refused(Command::ApplyOverlay {
        entry: entry(Scope::VCluster("ml".into())),
        spec: "[vcluster.ml.sysctl]\n\"../etc\" = \"1\"\n".into(),
    });
    assert!(m.contains("spec:2") && m.contains("bad sysctl key"), "{m}");
}

#[test]
fn rollback_restores_a_vcluster_and_a_node() {
    let mut db = Db::new();
    db.apply_spec("ml", "[vcluster.ml.sysctl]\n\"vm.a\" = \"1\"\n"); // 0
    db.apply_spec(
        "ml",
        "[vcluster.ml.sysctl]\n\"vm.a\" = \"2\"\n\"vm.b\" = \"3\"\n",
    ); // 1
    let mut e = entry(Scope::Global);
    e.parent = Some(0);
    let r = db.ok(Command::Rollback { entry: e });
    assert_eq!(r.get("vcluster"), Some("ml"));
    let ml = tables::overlay(&db.conn, "ml").unwrap().unwrap();
    assert_eq!(ml.overlay.sysctl.get("vm.a").map(String::as_str), Some("1"));
    assert!(!ml.overlay.sysctl.contains_key("vm.b"));
    assert_eq!(ml.version, 2);
    // Node deltas roll back too; a rollback to before any delta removes it.
    db.assign("n1", "ml"); // 3
    assert!(matches!(
        db.node_delta("n1", "[vcluster.ml.sysctl]\n\"vm.c\" = \"4\"\n", None),
        ApplyOutcome::Applied(_)
    )); // 4
    assert!(matches!(
        db.node_delta("n1", "[vcluster.ml.sysctl]\n\"vm.d\" = \"5\"\n", None),
        ApplyOutcome::Applied(_)
    )); // 5
    let mut e = entry(Scope::Global);
    e.parent = Some(4);
    db.ok(Command::Rollback { entry: e });
    let d = tables::delta(&db.conn, "n1").unwrap().unwrap();
    assert_eq!(d.delta.sysctl.keys().collect::<Vec<_>>(), ["vm.c"]);
    // A rollback to the assignment (node scope) empties the delta again.
    let mut e = entry(Scope::Global);
    e.parent = Some(3);
    db.ok(Command::Rollback { entry: e });
    assert!(tables::delta(&db.conn, "n1").unwrap().is_none());
    // Moved to another vCluster, the node's old deltas stay where they
    // were made: rolling back to one is a conflict, and nothing changes.
    db.assign("n1", "other");
    let mut e = entry(Scope::Global);
    e.parent = Some(4);
    let (code, m) = db.refused(Command::Rollback { entry: e });
    assert_eq!(code, ExitCode::Conflict, "{m}");
    assert!(
        m.contains("node n1 was assigned to vcluster other at seq 8, after 4"),
        "{m}"
    );
    assert!(tables::delta(&db.conn, "n1").unwrap().is_none());
    // Moved back: the delta the move dropped stays dropped.
    db.assign("n1", "ml");
    let mut e = entry(Scope::Global);
    e.parent = Some(4);
    let (code, m) = db.refused(Command::Rollback { entry: e });
    assert_eq!(code, ExitCode::Conflict, "{m}");
    assert!(m.contains("at seq 9, after 4"), "{m}");
    assert!(tables::delta(&db.conn, "n1").unwrap().is_none());
    // Assigning a node where it is moves nothing: still no conflict for
    // what came after the move back.
    assert!(matches!(
        db.node_delta("n1", "[vcluster.ml.sysctl]\n\"vm.e\" = \"6\"\n", None),
        ApplyOutcome::Applied(_)
    )); // 10
    db.assign("n1", "ml");
    let mut e = entry(Scope::Global);
    e.parent = Some(10);
    db.ok(Command::Rollback { entry: e });
    let mut drift = entry(Scope::Global);
    drift.entry_type = EntryType::DriftDetected;
    let seq: u64 = db
        .ok(Command::Record { entry: drift })
        .get("seq")
        .unwrap()
        .parse()
        .unwrap();
    let mut e = entry(Scope::Global);
    e.parent = Some(seq);
    assert_eq!(
        db.refused(Command::Rollback { entry: e }).1,
        format!("entry {seq} has global scope: nothing to roll back")
    );
}

#[test]
fn assignments_need_proper_names() {
    let mut db = Db::new();
    for (node, vc, what) in [
        ("", "ml", "node"),
        ("bad node!", "ml", "node"),
        ("n5", "", "vcluster"),
        ("n3", "bad name!", "vcluster"),
    ] {
        let (code, m) = db.refused(Command::Assign {
            entry: entry(Scope::Node(node.into())),
            node: node.into(),
            vcluster: Some(vc.into()),
        });
        assert_eq!(code, ExitCode::Invalid, "{m}");
        assert!(m.starts_with(&format!("bad {what} name")), "{m}");
    }
    let long = "n".repeat(65);
    let (_, m) = db.refused(Command::Assign {
        entry: entry(Scope::Node(long.clone())),
        node: long,
        vcluster: Some("ml".into()),
    });
    assert!(m.contains("1 to 64"), "{m}");
    db.assign("node-01.rack_2", "ml");
}

#[test]
fn promote_reports_conflicts_and_resolves_them() {
    let mut db = Db::new();
    db.apply_spec("ml", "[vcluster.ml.sysctl]\n\"vm.base\" = \"1\"\n");
    for n in ["n1", "n2", "n3"] {
        db.assign(n, "ml");
    }
    let hp = |v: &str| format!("[vcluster.ml.sysctl]\n\"vm.nr_hugepages\" = \"{v}\"\n");
    assert!(matches!(
        db.node_delta("n1", &hp("1024"), None),
        ApplyOutcome::Applied(_)
    ));
    assert!(matches!(
        db.node_delta("n2", &hp("512"), None),
        ApplyOutcome::Applied(_)
    ));
    assert!(matches!(
        db.node_delta("n3", &hp("1024"), None),
        ApplyOutcome::Applied(_)
    ));
    let before = db.dump();
    let promote = |r| Command::Promote {
        entry: entry(Scope::Node("n1".into())),
        node: "n1".into(),
        resolution: r,
    };
    let (code, m) = db.refused(promote(Resolution::Report));
    assert_eq!(code, ExitCode::Conflict);
    assert!(
        m.contains("n2 has sysctl.vm.nr_hugepages=512 (promoting 1024)"),
        "{m}"
    );
    assert_eq!(db.dump(), before, "a refused promote wrote something");
    // Keep-local: n2 keeps its value; n3's identical value is superseded.
    let r = db.ok(promote(Resolution::KeepLocal));
    assert_eq!(r.get("superseded"), Some("4"));
    let ml = tables::overlay(&db.conn, "ml").unwrap().unwrap();
    assert_eq!(
        ml.overlay.sysctl.get("vm.nr_hugepages").map(String::as_str),
        Some("1024")
    );
    assert!(tables::delta(&db.conn, "n1").unwrap().is_none());
    assert!(tables::delta(&db.conn, "n3").unwrap().is_none());
    assert_eq!(
        tables::delta(&db.conn, "n2").unwrap().unwrap().delta.sysctl["vm.nr_hugepages"],
        "512"
    );
    let (changes, applied) = db.sm.take_changes();
    assert!(changes
        .iter()
        .any(|(_, c)| *c == apply::Change::Delta { node: "n3".into() }));
    assert!(applied);
}

#[test]
fn promote_overwrite_drops_local_values() {
    let mut db = Db::new();
    for n in ["n1", "n2"] {
        db.assign(n, "ml");
    }
    assert!(matches!(
        db.node_delta("n1", "[vcluster.ml.sysctl]\n\"vm.x\" = \"1\"\n", None),
        ApplyOutcome::Applied(_)
    ));
    assert!(matches!(
        db.node_delta(
            "n2",
            "[vcluster.ml.sysctl]\n\"vm.x\" = \"2\"\n\"vm.y\" = \"3\"\n",
            None
        ),
        ApplyOutcome::Applied(_)
    ));
    let r = db.ok(Command::Promote {
        entry: entry(Scope::Node("n1".into())),
        node: "n1".into(),
        resolution: Resolution::Overwrite,
    });
    assert_eq!(r.get("overwritten"), Some("n2"));
    let n2 = tables::delta(&db.conn, "n2").unwrap().unwrap();
    assert_eq!(n2.delta.sysctl.keys().collect::<Vec<_>>(), ["vm.y"]);
}

#[test]
fn node_deltas_need_their_vcluster_and_expire() {
    let mut db = Db::new();
    let spec = "[vcluster.ml.sysctl]\n\"vm.x\" = \"1\"\n";
    match db.node_delta("n1", spec, None) {
        ApplyOutcome::Rejected(_, m) => assert!(m.contains("not assigned to a vcluster"), "{m}"),
        other => panic!("{other:?}"),
    }
    db.assign("n1", "other");
    match db.node_delta("n1", spec, None) {
        ApplyOutcome::Rejected(c, m) => {
            assert_eq!(c, ExitCode::Conflict);
            assert_eq!(m, "node n1 belongs to vcluster other, not ml");
        }
        other => panic!("{other:?}"),
    }
    db.assign("n1", "ml");
    assert!(matches!(
        db.node_delta("n1", spec, Some(900)),
        ApplyOutcome::Applied(_)
    ));
    let d = tables::delta(&db.conn, "n1").unwrap().unwrap();
    assert_eq!(d.expires_ms, Some(1_000_000 + 900_000));
    assert!(!d.expired(1_000_000 + 899_999));
    assert!(d.expired(1_000_000 + 900_000));
    let rows = query::diff_committed(&db.conn, Some("n1"), 1_000_000).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get("key"), Some("sysctl.vm.x"));
    assert_eq!(rows[0].get("action"), Some("Add"));
    let later = query::diff_committed(&db.conn, Some("n1"), 2_000_000).unwrap();
    assert_eq!(later[0].get("expired"), Some("true"));
}

#[test]
fn policies_one_per_vcluster_in_the_overlay() {
    let mut db = Db::new();
    let set = |db: &mut Db, text: &str| {
        db.run(Command::SetPolicy {
            entry: entry(Scope::VCluster("ml".into())),
            policy: text.into(),
        })
    };
    assert!(matches!(
        set(
            &mut db,
            "drift_sensitivity = 5.0\ntwo_person_approval = true\n"
        ),
        ApplyOutcome::Applied(_)
    ));
    assert!(matches!(
        set(&mut db, "[vcluster.ml.policy]\ndrift_sensitivity = 1.0\n"),
        ApplyOutcome::Applied(_)
    ));
    let p = tables::overlay(&db.conn, "ml")
        .unwrap()
        .unwrap()
        .overlay
        .policy
        .unwrap();
    assert_eq!(p.drift_sensitivity, 1.0);
    assert!(!p.two_person_approval, "the whole policy is replaced (J6)");
    match set(&mut db, "bogus = 1\n") {
        ApplyOutcome::Rejected(_, m) => assert!(m.contains("unknown field `bogus`"), "{m}"),
        other => panic!("{other:?}"),
    }
    let n: i64 = db
        .conn
        .query_row("SELECT COUNT(*) FROM policies", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn replaying_from_scratch_or_any_snapshot_gives_identical_tables() {
    let mut db = Db::new();
    let mut rng = crate::util::rng::Rng::new(7);
    for i in 0..120u64 {
        let vc = ["ml", "sandbox"][rng.range(0, 2) as usize];
        let node = format!("n{}", rng.range(0, 4));
        let cmd = match rng.range(0, 7) {
            0 | 1 => Command::ApplyOverlay {
                entry: entry(Scope::VCluster(vc.into())),
                spec: format!(
                    "[vcluster.{vc}.sysctl]\n\"vm.k{}\" = \"{i}\"\n",
                    rng.range(0, 5)
                ),
            },
            2 => Command::Assign {
                entry: entry(Scope::Node(node.clone())),
                node,
                vcluster: Some(vc.into()),
            },
            3 => {
                let mut e = entry(Scope::Node(node));
                e.ttl_seconds = Some(900 + rng.range(0, 1000) as u32);
                Command::CommitNodeDelta {
                    entry: e,
                    spec: format!(
                        "[vcluster.{vc}.sysctl]\n\"vm.k{}\" = \"n{i}\"\n",
                        rng.range(0, 5)
                    ),
                }
            }
            4 => {
                let mut e = entry(Scope::Global);
                e.parent = Some(rng.range(0, db.sm.next_seq().max(1)));
                Command::Rollback { entry: e }
            }
            5 => Command::Promote {
                entry: entry(Scope::Node(node.clone())),
                node,
                resolution: [
                    Resolution::Report,
                    Resolution::Overwrite,
                    Resolution::KeepLocal,
                ][rng.range(0, 3) as usize],
            },
            _ => {
                db.apply_bytes(&raw_payload(format!("raw {i}").as_bytes()));
                continue;
            }
        };
        db.run(cmd);
    }
    let full = db.dump();
    assert!(
        db.sm.next_seq() > 40,
        "too few entries were accepted to mean anything"
    );
    let last_index = db.index;
    for at in [0, last_index / 3, last_index / 2, last_index] {
        let snapshot = append_log_snapshot(&db.conn, at).unwrap();
        // Restore into a fresh database, then apply the rest of the log.
        let mut fresh = Db::new();
        let tx = fresh.conn.transaction().unwrap();
        fresh.sm.restore(&tx, &snapshot).unwrap();
        tx.commit().unwrap();
        let rest: Vec<(i64, Vec<u8>)> = db
            .conn
            .prepare(
                "SELECT raft_index, data FROM journal_entries WHERE raft_index > ?1 ORDER BY seq",
            )
            .unwrap()
            .query_map([at as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (index, data) in rest {
            let tx = fresh.conn.transaction().unwrap();
            let out = fresh
                .sm
                .apply(
                    &tx,
                    CommittedEntry {
                        index: index as u64,
                        term: 1,
                        data: &data,
                    },
                )
                .unwrap();
            tx.commit().unwrap();
            assert!(matches!(out, ApplyOutcome::Applied(_)));
        }
        assert_eq!(
            fresh.dump(),
            full,
            "state differs after restoring the snapshot at index {at}"
        );
    }
}

#[test]
fn services_are_checked_once_merged_not_per_fragment() {
    let mut db = Db::new();
    db.apply_spec(
        "ml",
        "[vcluster.ml.services.base]\nbinary = \"/usr/sbin/base\"\n",
    );
    // A later fragment may depend on a service the overlay already has, and
    // name users that only the nodes know.
    let r = db.apply_spec(
        "ml",
        "[vcluster.ml.services.top]\nbinary = \"/usr/sbin/top\"\nuser = \"svc-user-only-on-nodes\"\ndepends_on = [\"base\"]\n",
    );
    assert_eq!(r.get("changes"), Some("1"));
    // A dependency declared nowhere, or a cycle through the overlay, is not.
    let (code, m) = db.refused(Command::ApplyOverlay {
        entry: entry(Scope::VCluster("ml".into())),
        spec: "[vcluster.ml.services.x]\nbinary = \"/x\"\ndepends_on = [\"ghost\"]\n".into(),
    });
    assert_eq!(code, ExitCode::Invalid);
    assert!(m.contains("unknown service \"ghost\""), "{m}");
    let (_, m) = db.refused(Command::ApplyOverlay {
        entry: entry(Scope::VCluster("ml".into())),
        spec: "[vcluster.ml.services.base]\nbinary = \"/usr/sbin/base\"\ndepends_on = [\"top\"]\n"
            .into(),
    });
    assert!(m.contains("dependency cycle"), "{m}");
    // Nothing was written by the refusals: the overlay is as before.
    let o = tables::overlay(&db.conn, "ml").unwrap().unwrap();
    assert_eq!(o.overlay.services.len(), 2);
    assert_eq!(o.version, 1);
    // A node delta is checked against its overlay the same way.
    db.assign("n1", "ml");
    let out = db.node_delta(
        "n1",
        "[vcluster.ml.services.extra]\nbinary = \"/e\"\ndepends_on = [\"nope\"]\n",
        None,
    );
    match out {
        ApplyOutcome::Rejected(_, m) => {
            assert!(m.starts_with("node n1: ") && m.contains("nope"), "{m}")
        }
        ApplyOutcome::Applied(r) => panic!("accepted: {}", r.to_line()),
    }
}

#[test]
fn expiring_deltas_are_found_by_window() {
    let mut db = Db::new();
    db.apply_spec("ml", "[vcluster.ml.sysctl]\n\"vm.a\" = \"1\"\n");
    db.assign("n1", "ml");
    db.assign("n2", "ml");
    let spec = "[vcluster.ml.sysctl]\n\"vm.a\" = \"2\"\n";
    assert!(matches!(
        db.node_delta("n1", spec, Some(900)),
        ApplyOutcome::Applied(_)
    ));
    assert!(matches!(
        db.node_delta("n2", spec, None),
        ApplyOutcome::Applied(_)
    ));
    // Entries are stamped at 1_000_000 ms: n1 expires at 1_900_000.
    let found = |a, b| tables::deltas_expired_between(&db.conn, a, b).unwrap();
    assert!(found(1_000_000, 1_899_999).is_empty());
    let hit = found(1_899_999, 1_900_000);
    assert!(hit.contains("n1") && hit.len() == 1, "{hit:?}");
    assert!(
        found(1_900_000, u64::MAX >> 2).is_empty(),
        "each expiry is reported once"
    );
}

#[test]
fn overlays_are_bounded_at_10_mib() {
    let mut db = Db::new();
    db.apply_spec("ml", "[vcluster.ml.sysctl]\n\"vm.a\" = \"1\"\n");
    let big = "x".repeat(apply::MAX_OVERLAY_BYTES);
    let (code, m) = db.refused(Command::ApplyOverlay {
        entry: entry(Scope::VCluster("ml".into())),
        spec: format!("[vcluster.ml.files.\"/etc/big\"]\ncontent = \"{big}\"\n"),
    });
    assert_eq!(code, ExitCode::Invalid);
    assert!(m.contains("the limit is 10485760 (10 MiB)"), "{m}");
    let o = tables::overlay(&db.conn, "ml").unwrap().unwrap();
    assert!(o.overlay.files.is_empty(), "nothing was written");
    assert_eq!(o.version, 0);
}

#[test]
fn a_rollback_never_makes_a_temporary_delta_permanent() {
    let mut db = Db::new();
    db.apply_spec("ml", "[vcluster.ml.sysctl]\n\"vm.a\" = \"1\"\n"); // 0
    db.assign("n1", "ml"); // 1
    assert!(matches!(
        db.node_delta("n1", "[vcluster.ml.sysctl]\n\"vm.t\" = \"2\"\n", Some(900)),
        ApplyOutcome::Applied(_)
    )); // 2
    db.ok(Command::Promote {
        entry: entry(Scope::Node("n1".into())),
        node: "n1".into(),
        resolution: Resolution::Overwrite,
    }); // 3: the delta is in the overlay now, gone from the node
    let mut e = entry(Scope::Global);
    e.parent = Some(2);
    db.ok(Command::Rollback { entry: e });
    let d = tables::delta(&db.conn, "n1").unwrap().unwrap();
    assert_eq!(d.delta.sysctl.keys().collect::<Vec<_>>(), ["vm.t"]);
    // The expiry its commit gave it (timestamp + 900 s), not none.
    assert_eq!(d.expires_ms, Some(1_000_000 + 900_000));
}
