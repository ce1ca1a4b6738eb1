//! The real pact-agent as PID 1 of a PID namespace: reaping, ordered
//! shutdown, stop timeouts, cgroup.kill of escaped grandchildren, restart
//! policies, and reloads that must not disturb running services.

mod common;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::*;

const S: Duration = Duration::from_secs(1);

#[test]
fn reaps_1000_orphans() {
    if skip("reaps_1000_orphans") {
        return;
    }
    let svc = services(&[(
        "spawner",
        "args = [\"--orphans\", \"1000\", \"--ready-file\", \"@DIR@/spawned\"]",
    )]);
    let dir = std::env::temp_dir().join(format!("pact-test-orphans-{}", std::process::id()));
    let svc = svc.replace("@DIR@", &dir.display().to_string());
    let node = Node::start("orphans", &svc, "", true);
    node.wait_for(60 * S, "1000 orphans made", || dir.join("spawned").exists());
    node.wait_for(30 * S, "orphans reaped", || {
        let r = node.call("status");
        r.records[0]
            .get("orphans_reaped")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
            >= 1000
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        zombie_children(node.agent_pid()),
        0,
        "zombies left under PID 1"
    );
}

#[test]
fn sigterm_stops_nine_services_in_reverse_order() {
    if skip("sigterm_stops_nine_services_in_reverse_order") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pact-test-order-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let record = dir.join("stops");
    let _ = std::fs::remove_file(&record);
    let names: Vec<String> = (1..=9).map(|i| format!("s{i}")).collect();
    let bodies: Vec<String> = (1..=9)
        .map(|i| {
            let dep = if i % 3 == 0 {
                format!("depends_on = [\"s{}\"]\n", i - 1)
            } else {
                String::new()
            };
            format!(
                "args = [\"--record\", \"{}\"]\norder = {i}\n{dep}",
                record.display()
            )
        })
        .collect();
    let entries: Vec<(&str, &str)> = names
        .iter()
        .map(String::as_str)
        .zip(bodies.iter().map(String::as_str))
        .collect();
    let mut node = Node::start("order", &services(&entries), "", true);
    node.wait_for(10 * S, "ready", || node.ready_file().exists());
    node.signal(libc::SIGTERM);
    let took = node.wait_exit(20 * S);
    let stops = std::fs::read_to_string(&record).unwrap();
    let order: Vec<&str> = stops
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        order,
        ["s9", "s8", "s7", "s6", "s5", "s4", "s3", "s2", "s1"]
    );
    assert!(took < 5 * S, "shutdown took {took:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigint_behaves_like_sigterm() {
    if skip("sigint_behaves_like_sigterm") {
        return;
    }
    let mut node = Node::start("sigint", &services(&[("a", ""), ("b", "")]), "", true);
    node.wait_for(10 * S, "ready", || node.ready_file().exists());
    node.signal(libc::SIGINT);
    node.wait_exit(10 * S);
    assert!(node.log().contains("SIGINT: shutting down"));
    assert!(node.log().contains("shutdown: all services stopped"));
}

#[test]
fn service_ignoring_sigterm_is_killed_after_its_stop_timeout() {
    if skip("service_ignoring_sigterm_is_killed_after_its_stop_timeout") {
        return;
    }
    let svc = services(&[
        (
            "stubborn",
            "args = [\"--ignore-term\"]\nstop_timeout_seconds = 1.5",
        ),
        ("plain", ""),
    ]);
    let mut node = Node::start("stubborn", &svc, "", true);
    node.wait_for(10 * S, "ready", || node.ready_file().exists());
    let pids = node.scope_pids("stubborn");
    assert_eq!(pids.len(), 1);
    node.signal(libc::SIGTERM);
    // Going down, the node is no longer ready (at once, not at the end).
    let ready_sock = node.ready_file().with_file_name("ready.sock");
    node.wait_for(S, "readiness withdrawn", || {
        !node.ready_file().exists() && !ready_sock.exists()
    });
    // A reload while going down changes nothing and says so.
    let r = node.call("reload");
    assert!(
        matches!(&r.outcome, pact::proto::client::Outcome::Err(4, m) if m.contains("shutting down")),
        "{r:?}"
    );
    let took = node.wait_exit(15 * S);
    assert!(
        took >= Duration::from_millis(1200),
        "stopped too early: {took:?}"
    );
    assert!(took < 5 * S, "took {took:?}");
    assert!(!pid_alive(pids[0]));
    assert!(node
        .log()
        .contains("stubborn: still running 1.5s after SIGTERM, sending SIGKILL"));
}

#[test]
fn escaped_grandchild_dies_with_its_service() {
    if skip("escaped_grandchild_dies_with_its_service") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pact-test-gc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("gc.pid");
    let svc = services(&[(
        "forker",
        &format!(
            "args = [\"--grandchild\", \"{}\"]\nrestart_delay_seconds = 0.2",
            pidfile.display()
        ),
    )]);
    let node = Node::start("grandchild", &svc, "", true);
    node.wait_for(10 * S, "grandchild", || {
        pidfile.exists() && node.scope_pids("forker").len() == 2
    });
    let pids = node.scope_pids("forker");
    let main_pid: i32 = node
        .service_field("forker", "pid")
        .unwrap()
        .parse()
        .unwrap();
    // Host pids: the main one is the older (lower) of the two in practice;
    // find the grandchild as the one whose namespace pid is not main's.
    let gc_host = pids
        .iter()
        .copied()
        .find(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            let nspid = status
                .lines()
                .find(|l| l.starts_with("NSpid:"))
                .unwrap_or("");
            nspid.split_whitespace().last() != Some(&main_pid.to_string())
        })
        .expect("grandchild in scope");
    let main_host = *pids.iter().find(|p| **p != gc_host).unwrap();
    // SAFETY: killing a process of this test's service.
    unsafe { libc::kill(main_host, libc::SIGKILL) };
    node.wait_for(5 * S, "grandchild killed", || !pid_alive(gc_host));
    node.wait_for(5 * S, "restart", || {
        node.state("forker") == "running"
            && node.service_field("forker", "restarts").as_deref() == Some("1")
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn restarts_after_sigkill() {
    if skip("restarts_after_sigkill") {
        return;
    }
    let node = Node::start(
        "sigkill",
        &services(&[("victim", "restart_delay_seconds = 0")]),
        "",
        true,
    );
    node.wait_state("victim", "running", 10 * S);
    let host = node.scope_pids("victim")[0];
    // SAFETY: killing this test's service.
    unsafe { libc::kill(host, libc::SIGKILL) };
    node.wait_for(5 * S, "restart", || {
        node.service_field("victim", "restarts").as_deref() == Some("1")
    });
    node.wait_state("victim", "running", 5 * S);
    assert_eq!(
        node.service_field("victim", "last_exit").as_deref(),
        Some("killed by signal 9")
    );
    let r = node.call("service logs victim lines=10");
    let text = String::from_utf8_lossy(&r.bodies.concat()).into_owned();
    assert!(text.contains("ended: killed by signal 9"), "{text}");
}

#[test]
fn on_failure_with_exit_zero_stays_stopped() {
    if skip("on_failure_with_exit_zero_stays_stopped") {
        return;
    }
    let svc = services(&[
        ("oneshot", "args = [\"--exit\", \"0\", \"--after\", \"0.2\"]\nrestart = \"on-failure\"\nrestart_delay_seconds = 0"),
        ("failing", "args = [\"--exit\", \"3\", \"--after\", \"0.2\"]\nrestart = \"on-failure\"\nrestart_delay_seconds = 0.1"),
    ]);
    let node = Node::start("onfailure", &svc, "", true);
    node.wait_state("oneshot", "stopped", 5 * S);
    node.wait_for(5 * S, "failing restarted", || {
        node.service_field("failing", "restarts")
            .and_then(|r| r.parse::<u32>().ok())
            .unwrap_or(0)
            >= 1
    });
    std::thread::sleep(S);
    assert_eq!(node.state("oneshot"), "stopped");
    assert_eq!(
        node.service_field("oneshot", "restarts").as_deref(),
        Some("0")
    );
}

#[test]
fn malformed_services_file_leaves_running_set_untouched() {
    if skip("malformed_services_file_leaves_running_set_untouched") {
        return;
    }
    let good = services(&[("a", ""), ("b", "depends_on = [\"a\"]")]);
    let node = Node::start("badreload", &good, "", true);
    node.wait_for(10 * S, "ready", || node.ready_file().exists());
    let before = (node.scope_pids("a"), node.scope_pids("b"));

    node.rewrite_services(&format!(
        "{good}\n[vcluster.test.services.c]\nbinary = \"/bin/true\"\ncgroup_memory_max = \"64Q\"\n"
    ));
    let r = node.call("reload");
    match &r.outcome {
        pact::proto::client::Outcome::Err(code, msg) => {
            assert_eq!(*code, 3);
            assert!(msg.contains("services.toml:"), "{msg}");
            assert!(msg.contains("cgroup_memory_max"), "{msg}");
            assert!(msg.contains("64Q"), "{msg}");
        }
        other => panic!("reload accepted a bad file: {other:?}"),
    }
    // SIGHUP with a cycle: logged, nothing changes.
    node.rewrite_services(&services(&[
        ("a", "depends_on = [\"b\"]"),
        ("b", "depends_on = [\"a\"]"),
    ]));
    node.signal(libc::SIGHUP);
    node.wait_for(5 * S, "reload error logged", || {
        node.log().contains("dependency cycle")
    });
    // Broken TOML.
    node.rewrite_services("[vcluster.test.services.a\nbinary = ");
    assert!(!ok(&node.call("reload")));
    assert_eq!((node.scope_pids("a"), node.scope_pids("b")), before);
    assert_eq!(node.state("a"), "running");
    assert_eq!(node.state("b"), "running");

    // A good file is then taken, touching only what changed.
    node.rewrite_services(&services(&[
        ("a", ""),
        ("b", "depends_on = [\"a\"]"),
        ("c", ""),
    ]));
    let r = node.call("reload");
    assert!(ok(&r), "{r:?}");
    node.wait_state("c", "running", 5 * S);
    assert_eq!((node.scope_pids("a"), node.scope_pids("b")), before);
}

#[test]
fn control_socket_errors_and_cli_exit_codes() {
    if skip("control_socket_errors_and_cli_exit_codes") {
        return;
    }
    let node = Node::start(
        "cli",
        &services(&[("a", "args = [\"--print\", \"hello\"]")]),
        "",
        true,
    );
    node.wait_state("a", "running", 10 * S);
    let cli = |args: &[&str]| {
        std::process::Command::new(CLI)
            .arg("--agent-socket")
            .arg(node.socket())
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&["service", "status", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown service \"nope\""));
    let out = cli(&["--json", "service", "status"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("[{\"name\":\"a\",\"state\":\"running\""),
        "{text}"
    );
    let out = cli(&["service", "logs", "a", "-n", "5"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello"));
    let out = cli(&["service", "restart", "a"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "a: running");
    let out = cli(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(3));
    let gone = std::process::Command::new(CLI)
        .args(["--agent-socket", "/nonexistent/agent.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(5));
}

#[test]
fn pid1_keeps_its_good_options_and_never_exits_on_arguments() {
    if skip("pid1_keeps_its_good_options_and_never_exits_on_arguments") {
        return;
    }
    // The kernel hands unknown boot parameters to init: a stray word, a
    // --help or a --check must not end PID 1 (a kernel panic), nor throw
    // away the options around them. Its stdout and stderr are a pipe
    // nobody reads (a console gone away): writing there must not kill it.
    let dir = std::env::temp_dir().join(format!("pact-test-pid1args-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run = dir.join("run");
    let mut child = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", AGENT])
        .args([
            "--help",
            "splash",
            "--version",
            "--check",
            "--log-level",
            "loud",
        ])
        .arg("--state-dir")
        .arg(&run)
        .args(["--cgroup-root", "none", "--bogus"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    // Nobody reads its output.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let sock = run.join("agent.sock");
    let deadline = std::time::Instant::now() + 10 * S;
    while !sock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "PID 1 exited");
    assert!(sock.exists(), "--state-dir was not kept");
    // SIGTERM to the namespace's init (unshare's child) ends it cleanly.
    let unshare = child.id() as i32;
    let init = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<i32>().ok())
        .expect("the agent's pid");
    // SAFETY: kill(2) of a process this test started.
    unsafe { libc::kill(init, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + 10 * S;
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        child.try_wait().unwrap().is_some(),
        "no power-off after SIGTERM"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
