use super::*;

fn env() -> CheckEnv {
    CheckEnv::default()
}

fn parse(text: &str) -> Result<ServiceSet, ConfigError> {
    ServiceSet::parse(&Source::from_str("services.toml", text), None, &env())
}

fn names(set: &ServiceSet) -> Vec<&str> {
    set.services.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn full_service_declaration() {
    let set = parse(
        r#"
[vcluster.ml.services.chronyd]
binary = "/bin/sleep"
args = ["1000"]
env = { TZ = "UTC" }
user = "root"
group = "root"
restart = "on-failure"
restart_delay_seconds = 0.5
order = 10
cgroup_slice = "network"
cgroup_memory_max = "64M"
cgroup_cpu_weight = 200
cgroup_io_max = "8:0 rbps=1048576 wbps=max"
cgroup_pids_max = 64
health_check = { type = "http", url = "http://127.0.0.1:8080/health", interval_seconds = 5, failure_threshold = 2 }
stop_timeout_seconds = 3
start_timeout_seconds = 20
ready = "notify"
"#,
    )
    .unwrap();
    let s = &set.services[0];
    assert_eq!(set.vcluster, "ml");
    assert_eq!(s.binary, PathBuf::from("/bin/sleep"));
    assert_eq!(s.env, [("TZ".to_string(), "UTC".to_string())]);
    assert_eq!(s.user, Some((0, 0)));
    assert_eq!(s.restart, RestartPolicy::OnFailure);
    assert_eq!(s.restart_delay, Duration::from_millis(500));
    assert_eq!(s.slice, "pact.slice/network.slice");
    assert_eq!(s.limits.memory_max, Some(64 << 20));
    assert_eq!(s.limits.cpu_weight, Some(200));
    assert_eq!(
        s.limits.io_max,
        Some(IoMax::Line("8:0 rbps=1048576 wbps=max".into()))
    );
    assert_eq!(s.limits.pids_max, Some(64));
    let h = s.health.as_ref().unwrap();
    assert_eq!(h.kind, HealthKind::Http);
    assert_eq!(h.addr.as_deref(), Some("127.0.0.1:8080"));
    assert_eq!(h.http_path, "/health");
    assert_eq!(h.failure_threshold, 2);
    assert_eq!(s.ready, ReadyMode::Notify);
    assert_eq!(s.stop_timeout, Duration::from_secs(3));
    assert_eq!(s.start_timeout, Duration::from_secs(20));
}

#[test]
fn defaults() {
    let set = parse("[vcluster.v.services.a]\nbinary = \"sleep\"\n").unwrap();
    let s = &set.services[0];
    assert!(s.binary.is_absolute());
    assert_eq!(s.restart, RestartPolicy::Always);
    assert_eq!(s.slice, "pact.slice/infra.slice");
    assert_eq!(s.stop_timeout, DEFAULT_STOP_TIMEOUT);
    assert_eq!(s.start_timeout, DEFAULT_START_TIMEOUT);
    assert_eq!(s.ready, ReadyMode::Spawned);
}

#[test]
fn start_order_respects_order_and_dependencies() {
    let set = parse(
        r#"
[vcluster.v.services.lattice]
binary = "/bin/true"
order = 1
depends_on = ["dbus", "chronyd"]
[vcluster.v.services.dbus]
binary = "/bin/true"
order = 5
[vcluster.v.services.chronyd]
binary = "/bin/true"
order = 10
[vcluster.v.services.aaa]
binary = "/bin/true"
order = 10
"#,
    )
    .unwrap();
    assert_eq!(names(&set), ["dbus", "aaa", "chronyd", "lattice"]);
}

#[test]
fn unknown_key_names_line_and_key() {
    let e = parse("[vcluster.v.services.a]\nbinary = \"/bin/true\"\nrestrat = \"always\"\n")
        .unwrap_err();
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key.as_deref(), Some("vcluster.v.services.a.restrat"));
    assert!(e.message.contains("unknown field `restrat`"), "{e}");
}

#[test]
fn bad_size_names_line_and_key() {
    let e = parse("[vcluster.v.services.a]\nbinary = \"/bin/true\"\ncgroup_memory_max = \"64Q\"\n")
        .unwrap_err();
    assert_eq!(e.line, Some(3));
    assert_eq!(
        e.key.as_deref(),
        Some("vcluster.v.services.a.cgroup_memory_max")
    );
    assert!(e.message.contains("unknown unit \"Q\""), "{e}");
    assert_eq!(
        e.to_string(),
        "services.toml:3: vcluster.v.services.a.cgroup_memory_max: invalid size \"64Q\": unknown unit \"Q\" (expected K, M, G or T)"
    );
}

#[test]
fn cycle_is_named() {
    let e = parse(
        r#"
[vcluster.v.services.a]
binary = "/bin/true"
depends_on = ["b"]
[vcluster.v.services.b]
binary = "/bin/true"
depends_on = ["c"]
[vcluster.v.services.c]
binary = "/bin/true"
depends_on = ["a"]
[vcluster.v.services.d]
binary = "/bin/true"
"#,
    )
    .unwrap_err();
    assert!(e.message.starts_with("dependency cycle: "), "{e}");
    assert!(e.message.contains("a -> b -> c -> a"), "{e}");
    assert_eq!(e.line, Some(4));
}

#[test]
fn unknown_dependency() {
    let e = parse("[vcluster.v.services.a]\nbinary = \"/bin/true\"\ndepends_on = [\"ghost\"]\n")
        .unwrap_err();
    assert_eq!(e.line, Some(3));
    assert_eq!(e.message, "unknown service \"ghost\"");
    let e = parse("[vcluster.v.services.a]\nbinary = \"/bin/true\"\ndepends_on = [\"a\"]\n")
        .unwrap_err();
    assert!(e.message.contains("itself"));
}

#[test]
fn missing_binary() {
    let e = parse("[vcluster.v.services.a]\nbinary = \"/nonexistent/chronyd\"\n").unwrap_err();
    assert_eq!(e.line, Some(2));
    assert_eq!(e.key.as_deref(), Some("vcluster.v.services.a.binary"));
    assert_eq!(e.message, "/nonexistent/chronyd does not exist");
    let e = parse("[vcluster.v.services.a]\nbinary = \"no-such-command-x\"\n").unwrap_err();
    assert!(e.message.contains("not found"), "{e}");
    let e = parse("[vcluster.v.services.a]\nbinary = \"bin/x\"\n").unwrap_err();
    assert!(e.message.contains("absolute"), "{e}");
    let e = parse("[vcluster.v.services.a]\nbinary = \"/etc/passwd\"\n").unwrap_err();
    assert!(e.message.contains("not an executable"), "{e}");
    let e = parse("[vcluster.v.services.a]\nargs = []\n").unwrap_err();
    assert!(e.message.contains("missing field `binary`"), "{e}");
    // Named by the table it is missing from.
    assert_eq!(e.key.as_deref(), Some("vcluster.v.services.a"), "{e}");
}

#[test]
fn bad_values() {
    let cases = [
        ("restart = \"sometimes\"", "unknown variant"),
        ("cgroup_cpu_weight = 0", "outside 1..=10000"),
        ("cgroup_cpu_weight = 10001", "outside 1..=10000"),
        (
            "cgroup_slice = \"workload.slice\"",
            "belongs to the workload manager",
        ),
        ("cgroup_slice = \"fast\"", "unknown slice"),
        ("cgroup_io_max = \"8:0 speed=1\"", "invalid io.max"),
        ("cgroup_pids_max = 0", "at least 1"),
        ("health_check = { type = \"tcp\" }", "needs a port"),
        (
            "health_check = { type = \"http\", url = \"https://x/\" }",
            "http://",
        ),
        (
            "health_check = { type = \"http\", url = \"http://example.org/\" }",
            "IP address",
        ),
        (
            "health_check = { type = \"tcp\", port = 1, interval_seconds = 0 }",
            "interval_seconds",
        ),
        (
            "health_check = { type = \"tcp\", port = 1, failure_threshold = 0 }",
            "failure_threshold",
        ),
        ("ready = \"fd\"\nready_fd = 1", "between 3 and 255"),
        ("ready_fd = 4", "only meaningful"),
        ("user = \"no-such-user-xyz\"", "unknown user"),
        ("group = \"no-such-group-xyz\"", "unknown group"),
        ("stop_timeout_seconds = -1", "not a duration"),
        ("env = { \"A=B\" = \"x\" }", "invalid variable"),
        ("oom_score_adj = -1001", "between -1000 and 1000"),
    ];
    for (line, want) in cases {
        let text = format!("[vcluster.v.services.a]\nbinary = \"/bin/true\"\n{line}\n");
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains(want), "{line}: got {e}");
        assert!(e.line.is_some(), "{line}: no line in {e}");
    }
}

#[test]
fn bad_service_name() {
    let e = parse("[vcluster.v.services.\"a/b\"]\nbinary = \"/bin/true\"\n").unwrap_err();
    assert!(e.message.contains("service names"), "{e}");
}

#[test]
fn vcluster_selection() {
    let text = "[vcluster.a.services.x]\nbinary = \"/bin/true\"\n[vcluster.b.services.y]\nbinary = \"/bin/true\"\n";
    let src = Source::from_str("s.toml", text);
    let e = ServiceSet::parse(&src, None, &env()).unwrap_err();
    assert!(e.message.contains("several vClusters (a, b)"), "{e}");
    let set = ServiceSet::parse(&src, Some("b"), &env()).unwrap();
    assert_eq!(names(&set), ["y"]);
    let e = ServiceSet::parse(&src, Some("c"), &env()).unwrap_err();
    assert!(e.message.contains("no [vcluster.c]"), "{e}");
    let e = parse("").unwrap_err();
    assert!(e.message.contains("no [vcluster.<name>]"), "{e}");
}

#[test]
fn other_overlay_sections_are_accepted() {
    let set = parse(
        r#"
[vcluster.v.sysctl]
"vm.nr_hugepages" = "1024"
[vcluster.v.mounts]
"/scratch" = { type = "nfs", source = "s:/x" }
[vcluster.v.services.a]
binary = "/bin/true"
"#,
    )
    .unwrap();
    assert_eq!(names(&set), ["a"]);
    let e = parse("[vcluster.v.bogus]\nx = 1\n").unwrap_err();
    assert!(e.message.contains("unknown field `bogus`"), "{e}");
}

#[test]
fn broken_toml() {
    let e = parse("[vcluster.v.services.a]\nbinary = \"/bin/true\n").unwrap_err();
    assert_eq!(e.line, Some(2));
}

#[test]
fn array_form_with_names() {
    let set = parse(
        r#"
[[vcluster.v.services]]
name = "b"
binary = "/bin/true"
depends_on = ["a"]

[[vcluster.v.services]]
name = "a"
binary = "/bin/true"
"#,
    )
    .unwrap();
    assert_eq!(names(&set), ["a", "b"]);
    let e = parse("[[vcluster.v.services]]\nbinary = \"/bin/true\"\n").unwrap_err();
    assert!(e.message.contains("needs a `name`"), "{e}");
    let e = parse("[[vcluster.v.services]]\nname = \"a\"\nbinary = \"/bin/true\"\n[[vcluster.v.services]]\nname = \"a\"\nbinary = \"/bin/true\"\n").unwrap_err();
    assert!(e.message.contains("declared twice"), "{e}");
    // Errors inside an array element still name the line.
    let e = parse("[[vcluster.v.services]]\nname = \"a\"\nbinary = \"/bin/true\"\ncgroup_memory_max = \"1Q\"\n").unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
}

#[test]
fn fragments_skip_users_and_foreign_dependencies() {
    let text = "[vcluster.v.services.a]\nbinary = \"/bin/true\"\nuser = \"no-such-user-here\"\ndepends_on = [\"elsewhere\"]\n";
    let src = Source::from_str("frag.toml", text);
    // The node itself resolves users and requires every dependency.
    let e = ServiceSet::parse(&src, None, &env()).unwrap_err();
    assert!(e.to_string().contains("unknown user"), "{e}");
    let lenient = CheckEnv {
        check_users: false,
        partial: true,
        ..CheckEnv::default()
    };
    let set = ServiceSet::parse(&src, None, &lenient).unwrap();
    assert_eq!(set.services.len(), 1);
    // A cycle among the fragment's own services is one in any overlay:
    // refused at once, with its line.
    let text = "[vcluster.v.services.a]\nbinary = \"/bin/true\"\ndepends_on = [\"b\", \"elsewhere\"]\n\n[vcluster.v.services.b]\nbinary = \"/bin/true\"\ndepends_on = [\"a\"]\n";
    let e = ServiceSet::parse(&Source::from_str("frag.toml", text), None, &lenient).unwrap_err();
    assert!(
        e.message.starts_with("dependency cycle: a -> b -> a"),
        "{e}"
    );
    assert_eq!(e.line, Some(3), "{e}");
}
