//! `make bench` (boot part): boots the `make image` image under qemu
//! (software emulation), 5 times in each of two configurations, and
//! reports medians of kernel start → agent exec, agent exec → Ready and
//! the agent's share of the boot:
//! - the target's own: the nine example services alone, no journal
//!   (`pact.config=/etc/pact/agent-nine.toml`; read from the agent's
//!   "node ready" line on the console);
//! - the agent's fixed cost: the same with no services
//!   (`pact.config=/etc/pact/agent-zero.toml`);
//! - the test image's 13 services (with `pact.test=bench`: the vmcheck
//!   service also reports the agent's RSS at Ready and the cost of the
//!   pieces of a spawn under emulation).
//!
//! Environment: PACT_BENCH_BOOTS (default 5), PACT_BENCH_SMP (default 2).

#[path = "../qemu/command.rs"]
mod command;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn num(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

/// The median of the measured values (a boot that did not report one
/// leaves NaN, which is left out).
fn median(v: Vec<f64>) -> f64 {
    let mut v: Vec<f64> = v.into_iter().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

struct Boot {
    kernel_ms: f64,
    ready_ms: f64,
    rss_kb: f64,
    host_ready_s: f64,
    micro: String,
    /// The console's last lines, shown for a boot that never got Ready.
    tail: std::collections::VecDeque<String>,
}

/// A boot configuration: its kernel command line words, and whether Ready
/// is read from the agent's "node ready" line (else from vmcheck).
struct Setup {
    scenario: &'static str,
    what: &'static str,
    from_ready_line: bool,
    target: bool,
}

const SETUPS: [Setup; 3] = [
    Setup {
        scenario: "nine pact.config=/etc/pact/agent-nine.toml",
        what: "the 9 example services, no journal",
        from_ready_line: true,
        target: true,
    },
    Setup {
        scenario: "nine pact.config=/etc/pact/agent-zero.toml",
        what: "no services: the agent's own fixed cost",
        from_ready_line: true,
        target: false,
    },
    Setup {
        scenario: "bench",
        what: "13 services: the 9 example services + 4 test services",
        from_ready_line: false,
        target: false,
    },
];

fn boot(img: &Path, smp: &str, setup: &Setup) -> Option<Boot> {
    let start = Instant::now();
    let scenario = setup.scenario;
    let nine = setup.from_ready_line;
    let mut child = command::qemu(img, scenario, smp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let out = child.stdout.take()?;
    let mut b = Boot {
        kernel_ms: f64::NAN,
        ready_ms: f64::NAN,
        rss_kb: f64::NAN,
        host_ready_s: f64::NAN,
        micro: String::new(),
        tail: Default::default(),
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if b.tail.len() == 12 {
            b.tail.pop_front();
        }
        b.tail.push_back(line.clone());
        // "node ready: 9 service(s) running, 93.1 ms after agent start,
        // 2100.0 ms after kernel start (phases done at ms: ...)"
        if nine && line.contains("node ready:") {
            let before = |what: &str| -> Option<f64> {
                let head = &line[..line.find(what)?];
                head.rsplit([' ', ','])
                    .find(|w| !w.is_empty())?
                    .parse()
                    .ok()
            };
            if let (Some(ready), Some(kernel_total)) = (
                before(" ms after agent start"),
                before(" ms after kernel start"),
            ) {
                b.ready_ms = ready;
                b.kernel_ms = kernel_total - ready;
                b.host_ready_s = start.elapsed().as_secs_f64();
            }
            b.micro = line
                .split_once("(phases done at ms: ")
                .map(|(_, p)| p.trim_end_matches(')').to_string())
                .unwrap_or_default();
            break;
        }
        if line.contains("VMCHECK: READY") {
            b.kernel_ms = num(&line, "kernel_ms_at_start").unwrap_or(f64::NAN);
            b.ready_ms = num(&line, "ready_ms").unwrap_or(f64::NAN);
            b.host_ready_s = start.elapsed().as_secs_f64();
        }
        if let Some(rss) = line.split("VMCHECK: AGENT-RSS-KB ").nth(1) {
            b.rss_kb = rss.trim().parse().unwrap_or(f64::NAN);
        }
        if let Some(m) = line.split("VMCHECK: MICRO ").nth(1) {
            b.micro = m.trim().to_string();
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Some(b)
}

fn main() {
    let img = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/qemu");
    if !img.join("initrd").exists()
        || Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_err()
    {
        println!("boot benchmarks: skipped: needs qemu and `make image`");
        return;
    }
    let n: usize = std::env::var("PACT_BENCH_BOOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let smp = std::env::var("PACT_BENCH_SMP").unwrap_or_else(|_| "2".to_string());
    for setup in &SETUPS {
        let boots: Vec<Boot> = (0..n).filter_map(|_| boot(&img, &smp, setup)).collect();
        report(&boots, &smp, setup);
    }
}

fn report(boots: &[Boot], smp: &str, setup: &Setup) {
    let nine = setup.from_ready_line;
    let k = median(boots.iter().map(|b| b.kernel_ms).collect());
    let r = median(boots.iter().map(|b| b.ready_ms).collect());
    let share = median(
        boots
            .iter()
            .map(|b| b.ready_ms / (b.kernel_ms + b.ready_ms) * 100.0)
            .collect(),
    );
    let host = median(boots.iter().map(|b| b.host_ready_s).collect());
    let what = setup.what;
    println!(
        "\npact-agent boot under qemu (TCG, -smp {smp}, 512 MiB; {} boots, medians; {what})\n",
        boots.len()
    );
    println!("   kernel start -> agent exec:   {k:.0} ms");
    if setup.target {
        println!("   agent exec -> Ready:          {r:.0} ms   (target <= 100 ms)");
    } else {
        println!("   agent exec -> Ready:          {r:.0} ms");
    }
    println!("   agent's share of the boot:    {share:.1} %");
    println!("   qemu start -> Ready (host):   {host:.2} s");
    if !nine {
        let rss = median(boots.iter().map(|b| b.rss_kb).collect());
        println!("   agent RSS at Ready:           {rss:.0} KiB");
        if let Some(b) = boots.first() {
            println!("   spawn pieces in the guest:    {}", b.micro);
        }
    }
    for (i, b) in boots.iter().enumerate() {
        println!(
            "   boot {}: kernel->agent {:.0} ms, agent->Ready {:.0} ms",
            i + 1,
            b.kernel_ms,
            b.ready_ms
        );
        if nine && !b.micro.is_empty() {
            println!("           phases done at (ms): {}", b.micro);
        }
        if b.ready_ms.is_nan() {
            println!("           no Ready; the console's last lines:");
            for l in &b.tail {
                println!("           | {l}");
            }
        }
    }
}
