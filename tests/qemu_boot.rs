//! pact-agent as `/sbin/init` on a real kernel: boots the image of
//! `make image` under qemu (software emulation) and reads the serial
//! console and QMP events.
//!
//! Skipped, loudly, when qemu or the image is missing — unless
//! `PACT_REQUIRE_QEMU=1` (set by `make test`), which turns that into a
//! failure so CI never skips silently.

#[path = "qemu/command.rs"]
mod command;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Lines = Arc<Mutex<Vec<(Duration, String)>>>;

fn image_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/qemu")
}

fn skip(test: &str) -> bool {
    let why = if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        Some("qemu-system-x86_64 is not installed (make test installs it)".to_string())
    } else if !image_dir().join("initrd").exists() || !image_dir().join("vmlinux").exists() {
        Some("no image in target/qemu (run: make image)".to_string())
    } else {
        None
    };
    match why {
        Some(why) if std::env::var("PACT_REQUIRE_QEMU").as_deref() == Ok("1") => {
            panic!("{test}: cannot run and PACT_REQUIRE_QEMU=1: {why}")
        }
        Some(why) => {
            eprintln!("\n*** {test}: SKIPPED: {why} ***\n");
            true
        }
        None => false,
    }
}

struct Vm {
    child: Child,
    start: Instant,
    serial: Lines,
    qmp: Lines,
    dir: PathBuf,
}

impl Vm {
    fn boot(name: &str, scenario: &str) -> Vm {
        let dir = std::env::temp_dir().join(format!("pact-qemu-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let qmp_path = dir.join("qmp.sock");
        let img = image_dir();
        let start = Instant::now();
        let mut child = command::qemu(&img, scenario, "2")
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qemu");
        let serial: Lines = Arc::default();
        let out = child.stdout.take().unwrap();
        let s2 = serial.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                s2.lock()
                    .unwrap()
                    .push((start.elapsed(), line.trim_end_matches('\r').to_string()));
            }
        });
        let err = child.stderr.take().unwrap();
        let s3 = serial.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                s3.lock()
                    .unwrap()
                    .push((start.elapsed(), format!("qemu-stderr: {line}")));
            }
        });
        let qmp: Lines = Arc::default();
        let q2 = qmp.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(20);
            let stream = loop {
                match UnixStream::connect(&qmp_path) {
                    Ok(s) => break s,
                    Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => return,
                }
            };
            let mut w = stream.try_clone().unwrap();
            let _ = w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n");
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if line.contains("\"event\"") {
                    q2.lock().unwrap().push((start.elapsed(), line));
                }
            }
        });
        Vm {
            child,
            start,
            serial,
            qmp,
            dir,
        }
    }

    fn transcript(&self) -> String {
        self.serial
            .lock()
            .unwrap()
            .iter()
            .map(|(t, l)| format!("{:8.3} {l}\n", t.as_secs_f64()))
            .collect()
    }

    /// The first console line containing `pat`, waiting up to `timeout`.
    fn wait_line(&self, pat: &str, timeout: Duration) -> (Duration, String) {
        let end = Instant::now() + timeout;
        loop {
            if let Some(hit) = self
                .serial
                .lock()
                .unwrap()
                .iter()
                .find(|(_, l)| l.contains(pat))
                .cloned()
            {
                return hit;
            }
            if Instant::now() > end {
                panic!(
                    "no console line with {pat:?} within {timeout:?}\n--- console ---\n{}",
                    self.transcript()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Duration {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.child.try_wait().unwrap().is_some() {
                // Let the reader threads drain.
                std::thread::sleep(Duration::from_millis(200));
                return self.start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "qemu did not exit within {timeout:?}\n{}",
            self.transcript()
        );
    }

    fn events(&self) -> Vec<(Duration, String)> {
        self.qmp.lock().unwrap().clone()
    }

    fn lines(&self) -> Vec<String> {
        self.serial
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const BOOT: Duration = Duration::from_secs(180);

/// The number after `key=` in a line.
fn num(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn boots_to_ready_enforces_cgroups_and_powers_off_cleanly() {
    if skip("boots_to_ready_enforces_cgroups_and_powers_off_cleanly") {
        return;
    }
    let mut vm = Vm::boot("full", "full");
    let (_, ready) = vm.wait_line("VMCHECK: READY", BOOT);
    eprintln!(
        "boot: kernel start -> agent exec {:.0} ms, agent exec -> Ready {:.0} ms",
        num(&ready, "kernel_ms_at_start"),
        num(&ready, "ready_ms")
    );
    assert!(ready.contains("services=13 running=13"), "{ready}");
    // 1. Ready with the example services; 2.-3. limits, OOM containment,
    // pids.max, cgroup.kill — checked inside the VM by vmcheck.
    let (_, result) = vm.wait_line("VMCHECK: RESULT", BOOT);
    assert_eq!(result, "VMCHECK: RESULT OK", "{}", vm.transcript());
    for marker in ["LIMITS-OK", "OOM-OK", "PIDS-OK", "KILL-OK"] {
        vm.wait_line(&format!("VMCHECK: {marker}"), Duration::from_secs(1));
    }
    // The OOM kill was attributed by the agent and only the hog restarted.
    vm.wait_line("hog: OOM kill in its scope", Duration::from_secs(1));
    vm.wait_line("hog: died after", Duration::from_secs(1));
    // 6. shutdown: reverse order, magic close, power off; no reset, no panic.
    vm.wait_exit(BOOT);
    let lines = vm.lines();
    let stops: Vec<String> = lines
        .iter()
        .skip_while(|l| !l.contains("shutdown: stopping"))
        .filter_map(|l| l.split("agent::supervisor: ").nth(1))
        .filter_map(|rest| {
            rest.split_once(": stopped (")
                .map(|(name, _)| name.to_string())
        })
        .collect();
    assert_eq!(
        stops,
        [
            "vmcheck",
            "escaper",
            "forker",
            "hog",
            "lattice-node-agent",
            "audit-forwarder",
            "auditd",
            "rasdaemon",
            "nv-hostengine",
            "nvidia-persistenced",
            "cxi_rh",
            "dbus-daemon",
            "chronyd"
        ],
        "{}",
        vm.transcript()
    );
    assert!(lines
        .iter()
        .any(|l| l.contains("watchdog disarmed (magic close)")));
    assert!(
        lines.iter().any(|l| l.contains("reboot: Power down")),
        "{}",
        vm.transcript()
    );
    assert!(
        !lines.iter().any(|l| l.contains("Kernel panic")),
        "{}",
        vm.transcript()
    );
    let events = vm.events();
    assert!(
        !events.iter().any(|(_, e)| e.contains("WATCHDOG")),
        "watchdog fired: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(_, e)| e.contains("SHUTDOWN") && e.contains("guest-shutdown")),
        "{events:?}"
    );
}

#[test]
fn sigterm_to_pid1_powers_off_cleanly() {
    if skip("sigterm_to_pid1_powers_off_cleanly") {
        return;
    }
    let mut vm = Vm::boot("sigterm", "sigterm");
    vm.wait_line("VMCHECK: SIGTERM to PID 1", BOOT);
    vm.wait_exit(BOOT);
    let lines = vm.lines();
    for want in [
        "SIGTERM: shutting down",
        "shutdown: all services stopped",
        "watchdog disarmed (magic close)",
        "reboot: Power down",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "missing {want:?}\n{}",
            vm.transcript()
        );
    }
    assert!(!lines.iter().any(|l| l.contains("Kernel panic")));
    assert!(!vm.events().iter().any(|(_, e)| e.contains("WATCHDOG")));
}

#[test]
fn watchdog_is_petted_and_fires_when_the_loop_stalls() {
    if skip("watchdog_is_petted_and_fires_when_the_loop_stalls") {
        return;
    }
    let mut vm = Vm::boot("watchdog", "watchdog");
    let (_, ready) = vm.wait_line("VMCHECK: READY", BOOT);
    let timeout = num(&ready, "timeout");
    assert_eq!(timeout, 3.0, "{ready}");
    let (t_armed, _) = vm.wait_line("i6300ESB timer) armed", Duration::from_secs(1));
    // 4. Petted: still up after more than 3x the timeout.
    let (t_alive, alive) = vm.wait_line("VMCHECK: WDT-ALIVE", BOOT);
    assert!((t_alive - t_armed).as_secs_f64() > 3.0 * timeout, "{alive}");
    assert!(
        vm.events().iter().all(|(_, e)| !e.contains("WATCHDOG")),
        "fired while petted"
    );
    // 5. The loop stalls on purpose: the watchdog resets the VM within
    // timeout + 2 s.
    let (t_stall, _) = vm.wait_line("VMCHECK: WDT-STALL", Duration::from_secs(10));
    vm.wait_exit(Duration::from_secs(60));
    let events = vm.events();
    let fired = events
        .iter()
        .find(|(_, e)| e.contains("WATCHDOG"))
        .unwrap_or_else(|| panic!("no WATCHDOG event: {events:?}\n{}", vm.transcript()));
    let delay = (fired.0 - t_stall).as_secs_f64();
    eprintln!("watchdog: stall -> reset in {delay:.2} s (timeout {timeout} s)");
    assert!(
        delay <= timeout + 2.0,
        "reset came {delay:.2} s after the stall"
    );
    assert!(fired.1.contains("reset"), "{}", fired.1);
}
