//! `make bench` (agent part): the figures of the agent issue, measured on
//! the release binaries. Not a test: it prints numbers.
//!
//! 1. exec of pact-agent → 9 trivial services running (ready files), as
//!    PID 1 of a PID namespace and as a plain process, beside a baseline
//!    that forks/execs the same 9 processes directly;
//! 2. restart latency after SIGKILL (no backoff pending), beside a bare
//!    fork/exec of the same service;
//! 3. voluntary context switches of the idle agent with 9 services;
//! 4. agent RSS with 9 services, stripped binary size, dynamic libraries;
//! 5. dependency tree: no async runtime, unique crates.
//!
//! Environment: PACT_BENCH_RUNS (default 15), PACT_BENCH_IDLE_SECS (30).

#[path = "stats.rs"]
mod stats;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stats::env_num;

fn release_bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/release")
        .join(name);
    assert!(
        p.exists(),
        "{} missing: run cargo build --release --bins first",
        p.display()
    );
    p
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn p90(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

fn cgroup_base() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.subtree_control").exists())
}

struct Run {
    dir: PathBuf,
    cgroup: Option<PathBuf>,
    child: Child,
    pid1: bool,
}

impl Run {
    fn start(tag: &str, services: &str, extra: &str, pid1: bool) -> Run {
        Run::start_bin(&release_bin("pact-agent"), tag, services, extra, pid1)
    }

    fn start_bin(agent: &Path, tag: &str, services: &str, extra: &str, pid1: bool) -> Run {
        let dir = std::env::temp_dir().join(format!("pact-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ready")).unwrap();
        let cgroup =
            cgroup_base().map(|b| b.join(format!("pact-bench-{tag}-{}", std::process::id())));
        std::fs::write(
            dir.join("services.toml"),
            services.replace("@DIR@", &dir.display().to_string()),
        )
        .unwrap();
        let root = cgroup
            .as_ref()
            .map_or("none".to_string(), |c| c.display().to_string());
        std::fs::write(
            dir.join("agent.toml"),
            format!(
                "[agent]\nstate_dir = \"{}\"\nservices_file = \"{}\"\n[agent.supervisor]\ncgroup_root = \"{root}\"\n{extra}\n[telemetry]\nlog_level = \"warn\"\n",
                dir.join("run").display(),
                dir.join("services.toml").display()
            ),
        )
        .unwrap();
        let mut cmd = if pid1 {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc"]).arg(agent);
            c
        } else {
            Command::new(agent)
        };
        cmd.arg("--config").arg(dir.join("agent.toml"));
        if cgroup.is_none() {
            cmd.args(["--cgroup-root", "none"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        Run {
            dir,
            cgroup,
            child,
            pid1,
        }
    }

    fn agent_pid(&self) -> i32 {
        let outer = self.child.id() as i32;
        if !self.pid1 {
            return outer;
        }
        for _ in 0..1000 {
            let c = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
                .unwrap_or_default();
            if let Some(p) = c.split_whitespace().next().and_then(|p| p.parse().ok()) {
                return p;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        outer
    }

    fn ready_count(&self) -> usize {
        std::fs::read_dir(self.dir.join("ready"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn stop(mut self) {
        // SAFETY: signalling the process group this run created.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end && self.child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: as above, for whatever is left.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        if let Some(c) = &self.cgroup {
            remove_tree(c);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn remove_tree(root: &Path) {
    let _ = std::fs::write(root.join("cgroup.kill"), "1");
    std::thread::sleep(Duration::from_millis(20));
    let mut dirs = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        dirs.push(d);
    }
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

fn nine_services() -> String {
    let svc = release_bin("pact-testsvc");
    (1..=9)
        .map(|i| {
            format!(
                "[vcluster.bench.services.s{i}]\nbinary = \"{}\"\nargs = [\"--ready-file\", \"@DIR@/ready/s{i}\"]\norder = {i}\nrestart_delay_seconds = 0\n\n",
                svc.display()
            )
        })
        .collect()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    false
}

fn status_field(pid: i32, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
}

fn bench_boot(runs: u64, pid1: bool) -> (f64, f64) {
    let mut v = vec![];
    for _ in 0..runs {
        let t0 = Instant::now();
        let r = Run::start(
            if pid1 { "boot1" } else { "boot" },
            &nine_services(),
            "",
            pid1,
        );
        assert!(
            wait_until(Duration::from_secs(10), || r.ready_count() == 9),
            "services did not start"
        );
        v.push(t0.elapsed().as_secs_f64() * 1000.0);
        r.stop();
    }
    (median(v.clone()), p90(v))
}

fn bench_direct_baseline(runs: u64) -> f64 {
    let svc = release_bin("pact-testsvc");
    let dir = std::env::temp_dir().join(format!("pact-bench-direct-{}", std::process::id()));
    let mut v = vec![];
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t0 = Instant::now();
        let mut kids: Vec<Child> = (1..=9)
            .map(|i| {
                Command::new(&svc)
                    .args(["--ready-file", &format!("{}/s{i}", dir.display())])
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        wait_until(Duration::from_secs(10), || {
            std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) == 9
        });
        v.push(t0.elapsed().as_secs_f64() * 1000.0);
        for k in &mut kids {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    median(v)
}

fn bench_restart(runs: u64) -> (f64, f64, f64) {
    let svc = release_bin("pact-testsvc");
    let services = format!(
        "[vcluster.bench.services.victim]\nbinary = \"{}\"\nargs = [\"--ready-file\", \"@DIR@/ready/victim\"]\nrestart_delay_seconds = 0\n",
        svc.display()
    );
    let r = Run::start(
        "restart",
        &services,
        "stable_run_seconds = 0\ncrash_loop_max = 1000000",
        true,
    );
    let file = r.dir.join("ready/victim");
    assert!(wait_until(Duration::from_secs(10), || file.exists()));
    let mut v = vec![];
    for _ in 0..runs {
        let old = std::fs::read_to_string(&file).unwrap_or_default();
        let ns_pid: i32 = old.trim().parse().unwrap_or(0);
        // The ready file holds the pid inside the namespace; find the host pid.
        let host = host_pid_of(r.agent_pid(), ns_pid).expect("service pid");
        let t0 = Instant::now();
        // SAFETY: killing this benchmark's own service.
        unsafe { libc::kill(host, libc::SIGKILL) };
        assert!(wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&file).is_ok_and(|s| !s.is_empty() && s != old)
        }));
        v.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    r.stop();
    // Baseline: a bare fork/exec of the same service until its ready file.
    let dir = std::env::temp_dir().join(format!("pact-bench-bare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut bare = vec![];
    for _ in 0..runs {
        let f = dir.join("r");
        let _ = std::fs::remove_file(&f);
        let t0 = Instant::now();
        let mut k = Command::new(&svc)
            .arg("--ready-file")
            .arg(&f)
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(5), || f.exists());
        bare.push(t0.elapsed().as_secs_f64() * 1000.0);
        let _ = k.kill();
        let _ = k.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    (median(v.clone()), p90(v), median(bare))
}

/// Host pid of the child of `parent` whose namespace pid is `ns_pid`.
fn host_pid_of(agent: i32, ns_pid: i32) -> Option<i32> {
    let kids = std::fs::read_to_string(format!("/proc/{agent}/task/{agent}/children")).ok()?;
    kids.split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("NSpid:"))
                        .map(|l| l.to_string())
                })
                .is_some_and(|l| l.split_whitespace().last() == Some(&ns_pid.to_string()))
        })
}

/// Context switches of an idle agent with nine services over `secs`, and
/// its memory then: (voluntary, involuntary, VmRSS KiB, RssAnon KiB).
fn bench_idle(agent: &Path, secs: u64) -> (u64, u64, u64, u64) {
    let r = Run::start_bin(agent, "idle", &nine_services(), "", true);
    assert!(wait_until(Duration::from_secs(10), || r.ready_count() == 9));
    std::thread::sleep(Duration::from_secs(1));
    let pid = r.agent_pid();
    let before = status_field(pid, "voluntary_ctxt_switches:").unwrap_or(0);
    let inv_before = status_field(pid, "nonvoluntary_ctxt_switches:").unwrap_or(0);
    std::thread::sleep(Duration::from_secs(secs));
    let after = status_field(pid, "voluntary_ctxt_switches:").unwrap_or(0);
    let inv_after = status_field(pid, "nonvoluntary_ctxt_switches:").unwrap_or(0);
    let rss = status_field(pid, "VmRSS:").unwrap_or(0);
    let anon = status_field(pid, "RssAnon:").unwrap_or(0);
    r.stop();
    (after - before, inv_after - inv_before, rss, anon)
}

fn main() {
    // `cargo bench` passes --bench; nothing else is read from the command line.
    let runs = env_num("PACT_BENCH_RUNS", 15);
    let idle_secs = env_num("PACT_BENCH_IDLE_SECS", 30);
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        println!("agent benchmarks: skipped: need root (PID namespaces, cgroups)");
        return;
    }
    println!(
        "pact-agent benchmarks ({runs} runs each, medians; cgroup root under {:?})\n",
        cgroup_base()
    );

    let (pid1_med, pid1_p90) = bench_boot(runs, true);
    let (plain_med, plain_p90) = bench_boot(runs, false);
    let direct = bench_direct_baseline(runs);
    println!("1. exec of pact-agent -> 9 services running (ready files written), target <= 25 ms");
    println!("   as PID 1 (unshare --pid --fork, incl. unshare): median {pid1_med:.1} ms, p90 {pid1_p90:.1} ms");
    println!("   as a plain process:                            median {plain_med:.1} ms, p90 {plain_p90:.1} ms");
    println!("   baseline, 9 direct fork/execs from this process: median {direct:.1} ms\n");

    let (rs_med, rs_p90, bare) = bench_restart(runs * 2);
    println!("2. restart latency after SIGKILL (no backoff pending), target <= 5 ms median");
    println!("   kill -9 -> new process has written its ready file: median {rs_med:.2} ms, p90 {rs_p90:.2} ms");
    println!("   baseline, bare fork/exec -> ready file:              median {bare:.2} ms\n");

    let (vol, invol, rss, anon) = bench_idle(&release_bin("pact-agent"), idle_secs);
    println!("3. idle agent with 9 services, no health checks, over {idle_secs} s, target 0");
    println!("   voluntary context switches: {vol} (involuntary: {invol})\n");

    let agent = release_bin("pact-agent");
    let size = std::fs::metadata(&agent).map(|m| m.len()).unwrap_or(0);
    let ldd = Command::new("ldd")
        .arg(&agent)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let libs: Vec<&str> = ldd
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    println!(
        "4. agent RSS with 9 services, target <= 3 MiB:\n   dynamic build (target/release): {rss} KiB ({:.2} MiB), of it private {anon} KiB (the rest: shared pages of the binary and libc)",
        rss as f64 / 1024.0
    );
    // The build a node runs as PID 1 (`make image`, README): static.
    let static_agent =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/static"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("release/pact-agent"))
            .find(|p| p.exists());
    if let Some(static_agent) = static_agent {
        let (_, _, srss, sanon) = bench_idle(&static_agent, 1);
        println!(
            "   static build (target/static, as in the image): {srss} KiB ({:.2} MiB), of it private {sanon} KiB",
            srss as f64 / 1024.0
        );
    } else {
        println!("   static build: not measured (run make image first)");
    }
    println!(
        "   stripped pact-agent: {size} bytes ({:.2} MB), target <= 3 MB",
        size as f64 / 1e6
    );
    println!("   dynamic libraries: {}\n", libs.join(" "));

    let tree = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--manifest-path",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    crates.sort();
    crates.dedup();
    let async_rt: Vec<&&str> = crates
        .iter()
        .filter(|c| {
            [
                "tokio",
                "async-std",
                "smol",
                "async-executor",
                "futures-executor",
                "async-io",
            ]
            .contains(c)
        })
        .collect();
    println!(
        "5. cargo tree (normal dependencies of the pact package): {} unique crates",
        crates.len()
    );
    println!(
        "   async runtimes: {}",
        if async_rt.is_empty() {
            "none".to_string()
        } else {
            format!("{async_rt:?}")
        }
    );
    println!("   crates: {}", crates.join(" "));
}
