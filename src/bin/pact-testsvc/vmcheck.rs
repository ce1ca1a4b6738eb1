//! `pact-testsvc --vmcheck`: the checks that run inside the qemu test VM,
//! as a service of the agent under test. It talks to the agent's control
//! socket, reads cgroup files, and prints `VMCHECK:` markers on the
//! console for the host harness. The scenario comes from `pact.test=` on
//! the kernel command line:
//!
//! - `full`: readiness, cgroup limits (memory.max, cpu.weight, pids.max),
//!   an OOM kill contained in its scope, cgroup.kill of an escaped
//!   grandchild, then `shutdown` (power off, services in reverse order);
//! - `watchdog`: stay up for more than 3x the watchdog timeout, then stall
//!   the agent's loop (test hook) so the watchdog resets the VM;
//! - `sigterm`: SIGTERM to PID 1, which must power off cleanly;
//! - `bench`: print the timings and the agent's RSS, then power off.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use pact::proto::client::{Client, Outcome};
use pact::proto::Record;

const SOCKET: &str = "/run/pact/agent.sock";
const CGROUP: &str = "/sys/fs/cgroup";

struct Console(std::fs::File);

impl Console {
    fn open() -> Console {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/console")
            .or_else(|_| std::fs::OpenOptions::new().write(true).open("/dev/null"))
            .expect("a console");
        Console(f)
    }

    fn say(&mut self, msg: &str) {
        let _ = writeln!(self.0, "VMCHECK: {msg}");
        println!("VMCHECK: {msg}");
    }

    fn fail(&mut self, msg: &str) -> bool {
        self.say(&format!("FAIL {msg}"));
        false
    }
}

fn call(line: &str) -> Result<(Vec<Record>, Record), String> {
    let mut c = Client::connect_unix(Path::new(SOCKET), Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let r = c.call(line, None).map_err(|e| e.to_string())?;
    match r.outcome {
        Outcome::Ok(rec) => Ok((r.records, rec)),
        Outcome::Err(code, msg) => Err(format!("err {code} {msg}")),
    }
}

fn field(service: &str, key: &str) -> Option<String> {
    call(&format!("service status {service}"))
        .ok()
        .and_then(|(recs, _)| recs.first().and_then(|r| r.get(key)).map(str::to_string))
}

fn wait(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn scenario() -> String {
    read("/proc/cmdline")
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pact.test=").map(str::to_string))
        .unwrap_or_else(|| "full".to_string())
}

fn wait_ready(con: &mut Console) -> Option<Record> {
    let mut last = None;
    let ok = wait(Duration::from_secs(60), || match call("status") {
        Ok((recs, _)) => {
            let r = recs.into_iter().next();
            let ready = r.as_ref().and_then(|r| r.get("state")) == Some("ready");
            last = r;
            ready
        }
        Err(_) => false,
    });
    if !ok {
        con.fail(&format!(
            "agent not ready: {:?}",
            last.as_ref().map(Record::to_line)
        ));
        return None;
    }
    last
}

pub fn run() -> ! {
    let mut con = Console::open();
    let scenario = scenario();
    con.say(&format!("start scenario={scenario}"));
    let Some(status) = wait_ready(&mut con) else {
        finish(&mut con, false)
    };
    let get = |k: &str| status.get(k).unwrap_or("?").to_string();
    con.say(&format!(
        "READY services={} running={} kernel_ms_at_start={} ready_ms={} watchdog={} timeout={}",
        get("services"),
        get("running"),
        get("kernel_ms_at_start"),
        get("ready_ms"),
        get("watchdog"),
        get("watchdog_timeout_s")
    ));
    let rss = read("/proc/1/status")
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default();
    con.say(&format!("AGENT-RSS-KB {rss}"));
    match scenario.as_str() {
        "watchdog" => watchdog(&mut con, &get("watchdog_timeout_s")),
        "sigterm" => {
            con.say("SIGTERM to PID 1");
            // SAFETY: signalling PID 1, the agent under test.
            unsafe { libc::kill(1, libc::SIGTERM) };
            hold()
        }
        "bench" => {
            micro(&mut con);
            let _ = call("shutdown");
            hold()
        }
        _ => {
            let ok = full(&mut con);
            finish(&mut con, ok)
        }
    }
}

/// Report, then ask the agent for an ordered power-off.
fn finish(con: &mut Console, ok: bool) -> ! {
    con.say(if ok { "RESULT OK" } else { "RESULT FAIL" });
    if let Err(e) = call("shutdown") {
        con.say(&format!("FAIL shutdown request: {e}"));
    }
    hold()
}

/// Wait for SIGTERM like any service.
fn hold() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn full(con: &mut Console) -> bool {
    let mut ok = true;
    let controllers = read(&format!("{CGROUP}/cgroup.controllers"));
    con.say(&format!("controllers: {controllers}"));
    for c in ["memory", "cpu", "pids"] {
        if !controllers.split_whitespace().any(|x| x == c) {
            ok = con.fail(&format!("controller {c} missing"));
        }
    }
    ok &= limits(con);
    ok &= oom(con);
    ok &= pids(con);
    ok &= cgroup_kill(con);
    ok
}

fn scope_of(service: &str) -> String {
    field(service, "scope").unwrap_or_default()
}

fn limits(con: &mut Console) -> bool {
    let hog = scope_of("hog");
    let mem = read(&format!("{hog}/memory.max"));
    let weight = read(&format!("{hog}/cpu.weight"));
    let forker = scope_of("forker");
    let pmax = read(&format!("{forker}/pids.max"));
    con.say(&format!(
        "LIMITS hog memory.max={mem} cpu.weight={weight}; forker pids.max={pmax}"
    ));
    if mem != "16777216" || weight != "50" || pmax != "5" {
        return con.fail("limits not applied as declared");
    }
    con.say("LIMITS-OK");
    true
}

/// hog allocates past memory.max once /run/hog.go exists: the kernel
/// kills it inside its scope, the agent says so and restarts it, and
/// nothing else dies.
fn oom(con: &mut Console) -> bool {
    let before: Vec<(String, String)> = ["chronyd", "dbus-daemon", "lattice-node-agent"]
        .iter()
        .map(|s| (s.to_string(), field(s, "pid").unwrap_or_default()))
        .collect();
    let agent_pid_before = read("/proc/1/stat");
    if let Err(e) = std::fs::write("/run/hog.go", "go") {
        return con.fail(&format!("cannot write /run/hog.go: {e}"));
    }
    let killed = wait(Duration::from_secs(30), || {
        field("hog", "oom_kills").is_some_and(|n| n != "0")
    });
    let _ = std::fs::remove_file("/run/hog.go");
    if !killed {
        let scope = scope_of("hog");
        let logs = service_log("hog");
        return con.fail(&format!(
            "hog was not OOM-killed: memory.current={} memory.events={} trigger={} log={:?}",
            read(&format!("{scope}/memory.current")),
            read(&format!("{scope}/memory.events")).replace('\n', ","),
            Path::new("/run/hog.go").exists(),
            logs
        ));
    }
    let restarted = wait(Duration::from_secs(30), || {
        field("hog", "state").as_deref() == Some("running")
            && field("hog", "restarts").is_some_and(|r| r != "0")
    });
    let oom_killed = field("hog", "oom_killed").unwrap_or_default();
    let events = read(&format!("{}/memory.events", scope_of("hog")));
    con.say(&format!(
        "OOM hog oom_kills={:?} oom_killed={oom_killed} restarted={restarted} memory.events={}",
        field("hog", "oom_kills"),
        events.replace('\n', ",")
    ));
    let untouched = before
        .iter()
        .all(|(s, pid)| field(s, "pid").as_deref() == Some(pid.as_str()));
    let agent_alive = !agent_pid_before.is_empty() && Path::new("/proc/1/stat").exists();
    if !restarted || !untouched || !agent_alive || oom_killed != "true" {
        return con.fail(&format!("OOM containment: restarted={restarted} others_untouched={untouched} agent={agent_alive}"));
    }
    con.say("OOM-OK");
    true
}

fn service_log(service: &str) -> String {
    Client::connect_unix(Path::new(SOCKET), Some(Duration::from_secs(10)))
        .and_then(|mut c| c.call(&format!("service logs {service} lines=50"), None))
        .map(|r| String::from_utf8_lossy(&r.bodies.concat()).into_owned())
        .unwrap_or_default()
}

fn pids(con: &mut Console) -> bool {
    // On a busy machine the forker may not have reported yet.
    let mut line = String::new();
    wait(Duration::from_secs(20), || {
        line = service_log("forker")
            .lines()
            .find(|l| l.starts_with("forks:"))
            .unwrap_or("")
            .to_string();
        !line.is_empty()
    });
    let events = read(&format!("{}/pids.events", scope_of("forker")));
    con.say(&format!(
        "PIDS {line}; pids.events {}",
        events.replace('\n', ",")
    ));
    // pids.max = 5: the main process and 4 children at most.
    if line != "forks: 4 of 20" {
        return con.fail("pids.max not enforced");
    }
    con.say("PIDS-OK");
    true
}

fn cgroup_kill(con: &mut Console) -> bool {
    let scope = scope_of("escaper");
    let ok = wait(Duration::from_secs(10), || {
        read("/run/escaper.pid").parse::<i32>().is_ok()
    });
    let gc: i32 = read("/run/escaper.pid").parse().unwrap_or(0);
    let main: i32 = field("escaper", "pid")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    if !ok || gc == 0 || main == 0 {
        return con.fail("escaper did not start its grandchild");
    }
    let procs = read(&format!("{scope}/cgroup.procs"));
    // SAFETY: killing a test service's main process by pid.
    unsafe { libc::kill(main, libc::SIGKILL) };
    let gone = wait(Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{gc}")).exists()
    });
    con.say(&format!(
        "KILL escaper main={main} grandchild={gc} scope procs before=[{}] grandchild gone={gone}",
        procs.replace('\n', " ")
    ));
    if !gone {
        return con.fail("the escaped grandchild survived its service");
    }
    let back = wait(Duration::from_secs(10), || {
        field("escaper", "state").as_deref() == Some("running")
            && field("escaper", "restarts").is_some_and(|r| r != "0")
    });
    if !back {
        return con.fail("escaper was not restarted");
    }
    con.say("KILL-OK");
    true
}

/// Costs of the pieces of a spawn under emulation, for the boot figures.
fn micro(con: &mut Console) {
    let n = 10;
    let base = format!("{CGROUP}/pact.slice/infra.slice");
    let t = Instant::now();
    for i in 0..n {
        let d = format!("{base}/bench-{i}.scope");
        let _ = std::fs::create_dir(&d);
        let _ = std::fs::remove_dir(&d);
    }
    let cg = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let t = Instant::now();
    for _ in 0..n {
        let _ = std::process::Command::new("/usr/bin/pact-testsvc")
            .args(["--exit", "0"])
            .status();
    }
    let run = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
    con.say(&format!(
        "MICRO cgroup mkdir+rmdir {cg:.2} ms; fork+exec+run+exit of pact-testsvc {run:.2} ms"
    ));
}

fn watchdog(con: &mut Console, timeout: &str) -> ! {
    let t: u64 = timeout.parse().unwrap_or(0);
    if t == 0 {
        con.say("FAIL no watchdog armed");
        finish(con, false);
    }
    let hold_for = Duration::from_millis(t * 3500);
    con.say(&format!(
        "WDT-HOLD {:.1}s (timeout {t}s)",
        hold_for.as_secs_f64()
    ));
    std::thread::sleep(hold_for);
    let pets = call("status")
        .ok()
        .and_then(|(r, _)| {
            r.first()
                .and_then(|r| r.get("watchdog_pets"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    con.say(&format!(
        "WDT-ALIVE after {:.1}s pets={pets}",
        hold_for.as_secs_f64()
    ));
    con.say("WDT-STALL");
    let _ = call("stall");
    hold()
}
