//! `pact-agent`: the PID-1 supervisor of a diskless compute node.
//!
//! Start here: [`main`] sets the node up (pseudo-filesystems as PID 1,
//! signals, config, cgroup tree, service declarations) and hands over to
//! [`daemon::Agent::run`], the single event loop. The supervision logic is
//! the sans-IO [`supervisor::Supervisor`].

pub mod applier;
pub mod apply;
pub mod boot;
pub mod cgroup;
pub mod control;
pub mod daemon;
pub mod hardware;
pub mod health;
pub mod journal_link;
mod journal_sync;
pub mod logs;
pub mod notify;
mod phases;
pub mod pid1;
pub mod readiness;
mod requests;
pub mod signals;
pub mod spawn;
pub mod supervisor;
pub mod watchdog;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::agent::{AgentConfig, AgentFile};
use crate::config::services::{CheckEnv, ServiceSet};
use crate::logger;
use daemon::{Agent, ExitPlan};

const DEFAULT_CONFIG: &str = "/etc/pact/agent.toml";

const HELP: &str = "\
pact-agent - the pact node supervisor (PID 1 on diskless nodes)

Usage: pact-agent [options]

Options:
  -c, --config PATH      agent configuration (default /etc/pact/agent.toml)
      --services FILE    service declarations (vCluster overlay TOML)
      --state-dir DIR    runtime state: sockets, logs, cache (default /run/pact)
      --cgroup-root DIR  where the cgroup tree goes (default /sys/fs/cgroup;
                         \"none\" runs without cgroups)
      --log-level LEVEL  error, warn, info, debug or trace (or PACT_LOG)
      --log-format FMT   text or json
      --check            validate the configuration and services, then exit
  -V, --version          print the version
  -h, --help             print this help

See pact-agent(8) and pact.toml(5).
";

/// Command-line options.
#[derive(Debug, Default)]
struct Args {
    config: Option<PathBuf>,
    services: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    cgroup_root: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    check: bool,
}

/// What the command line asks for.
enum Parsed {
    Run(Args),
    /// `--help` or `--version` was printed (not PID 1): exit 0.
    Done,
}

/// Writes to stdout or stderr without panicking on a closed stream (the
/// print macros do, and PID 1 must not die of a console gone away).
fn say(to_stderr: bool, text: &str) {
    use std::io::Write;
    if to_stderr {
        let _ = std::io::stderr().write_all(text.as_bytes());
    } else {
        let _ = std::io::stdout().write_all(text.as_bytes());
    }
}

/// The value of option `key`: attached (`--key=v`) or the next word, but
/// not a next word that is an option (`--log-level --state-dir X` is a
/// missing value, and --state-dir is still read).
fn value_of(p: &mut lexopt::Parser, key: &str) -> Result<std::ffi::OsString, lexopt::Error> {
    if let Some(v) = p.optional_value() {
        return Ok(v);
    }
    let next_is_option = p
        .raw_args()
        .ok()
        .and_then(|r| {
            r.peek()
                .map(|w| w.len() > 1 && w.to_string_lossy().starts_with('-'))
        })
        .unwrap_or(false);
    if next_is_option {
        return Err(lexopt::Error::MissingValue {
            option: Some(key.to_string()),
        });
    }
    p.value()
}

/// Parses the command line. Not PID 1: the first bad argument is the
/// error (exit 2). As PID 1 nothing ends the program: a word it does not
/// know (the kernel passes unknown boot parameters to init) or a bad value
/// is skipped with a warning in `notes`, the valid options are kept, and
/// `--help`, `--version` and `--check` are printed or ignored, then the
/// boot goes on.
fn parse_args(
    argv: impl IntoIterator<Item = std::ffi::OsString>,
    pid1: bool,
    notes: &mut Vec<String>,
) -> Result<Parsed, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args::default();
    let mut p = lexopt::Parser::from_args(argv);
    loop {
        let arg = match p.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) if pid1 => {
                notes.push(format!("ignored: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        // The option as text, so the parser is free for its value.
        let key = match arg {
            Short(c) => format!("-{c}"),
            Long(l) => format!("--{l}"),
            Value(v) => {
                let e = lexopt::Error::UnexpectedArgument(v);
                if pid1 {
                    notes.push(format!("ignored: {e}"));
                    continue;
                }
                return Err(e);
            }
        };
        let one: Result<(), lexopt::Error> = match key.as_str() {
            "-c" | "--config" => value_of(&mut p, &key).map(|v| a.config = Some(v.into())),
            "--services" => value_of(&mut p, &key).map(|v| a.services = Some(v.into())),
            "--state-dir" => value_of(&mut p, &key).map(|v| a.state_dir = Some(v.into())),
            "--cgroup-root" => value_of(&mut p, &key)
                .and_then(|v| v.string())
                .map(|v| a.cgroup_root = Some(v)),
            "--log-level" => value_of(&mut p, &key)
                .and_then(|v| v.string())
                .and_then(|v| {
                    logger::parse_level(&v).map_err(|e| lexopt::Error::Custom(e.into()))?;
                    a.log_level = Some(v);
                    Ok(())
                }),
            "--log-format" => value_of(&mut p, &key)
                .and_then(|v| v.string())
                .and_then(|v| {
                    v.parse::<logger::Format>()
                        .map_err(|e| lexopt::Error::Custom(e.to_string().into()))?;
                    a.log_format = Some(v);
                    Ok(())
                }),
            "--check" if pid1 => {
                notes.push(
                    "ignored: --check (PID 1 boots; run the check as another process)".into(),
                );
                Ok(())
            }
            "--check" => {
                a.check = true;
                Ok(())
            }
            "-V" | "--version" | "-h" | "--help" => {
                if key == "-V" || key == "--version" {
                    say(
                        false,
                        &format!("pact-agent {}\n", env!("CARGO_PKG_VERSION")),
                    );
                } else {
                    say(false, HELP);
                }
                if !pid1 {
                    return Ok(Parsed::Done);
                }
                Ok(())
            }
            _ => Err(lexopt::Error::UnexpectedOption(key)),
        };
        match one {
            Ok(()) => {}
            Err(e) if pid1 => notes.push(format!("ignored: {e}")),
            Err(e) => return Err(e),
        }
    }
    Ok(Parsed::Run(a))
}

/// Supervisor tunables from the configuration.
pub fn tunables(cfg: &AgentConfig) -> supervisor::Tunables {
    supervisor::Tunables {
        crash_loop_max: cfg.supervisor.crash_loop_max,
        stable_run: Duration::from_secs(cfg.supervisor.stable_run_seconds),
        backoff_cap: Duration::from_secs(cfg.supervisor.backoff_cap_seconds),
        scope_kill_timeout: Duration::from_secs(cfg.supervisor.scope_kill_timeout_seconds),
        boot_settle: Duration::from_millis(cfg.supervisor.boot_settle_ms),
        jitter_seed: crate::util::rng::Rng::from_entropy().next_u64(),
    }
}

/// Keep a copy of the last good declarations (used when the file is bad
/// or gone at the next start).
pub fn cache_services(from: &Path, to: &Path) {
    if from == to {
        return;
    }
    let tmp = to.with_extension("tmp");
    let result = std::fs::create_dir_all(to.parent().unwrap_or(Path::new("/")))
        .and_then(|_| std::fs::copy(from, &tmp))
        .and_then(|_| std::fs::rename(&tmp, to));
    if let Err(e) = result {
        log::warn!(target: "agent", "cannot cache {} as {}: {e}", from.display(), to.display());
    }
}

/// The agent's whole life. As PID 1 it never returns.
pub fn main() -> i32 {
    let started = Instant::now();
    let pid1 = pid1::is_pid1();
    // Block the handled signals before anything else can start a thread.
    let signals = match signals::SignalFd::open() {
        Ok(s) => s,
        Err(e) => {
            say(true, &format!("pact-agent: signalfd: {e}\n"));
            if pid1 {
                pid1::mount_pseudo_filesystems();
            }
            return fatal(pid1, 1);
        }
    };
    // As PID 1, the pseudo-filesystems are mounted on a helper thread while
    // this one reads the configuration (neither needs the other); joined
    // below, before anything else happens.
    let mounter = pid1
        .then(|| {
            std::thread::Builder::new()
                .name("mounts".into())
                .spawn(pid1::mount_pseudo_filesystems)
                .ok()
        })
        .flatten();
    let mut arg_notes = Vec::new();
    let args = match parse_args(std::env::args_os().skip(1), pid1, &mut arg_notes) {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Done) => return 0,
        Err(e) => {
            say(true, &format!("pact-agent: {e}\n\n{HELP}"));
            return 2;
        }
    };
    let explicit = args.config.is_some();
    let config_path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let (mut file, config_error) = match AgentFile::load(&config_path, explicit) {
        Ok(f) => (f, None),
        Err(e) => (AgentFile::default(), Some(e)),
    };
    let mounted = match mounter.map(std::thread::JoinHandle::join) {
        Some(Ok(m)) => m,
        Some(Err(_)) => vec!["(the mount thread panicked)".to_string()],
        None if pid1 => pid1::mount_pseudo_filesystems(),
        None => vec![],
    };
    if let Some(d) = &args.state_dir {
        file.agent.state_dir = Some(d.clone());
    }
    if let Some(s) = &args.services {
        file.agent.services_file = Some(s.clone());
    }
    init_logging(&args, &file);
    install_panic_hook();
    for n in arg_notes {
        log::warn!(target: "agent", "command line: {n}");
    }
    if let Some(e) = config_error {
        log::error!(target: "agent", "{e}");
        if !pid1 {
            return 1;
        }
        log::error!(target: "agent", "continuing with the default configuration (PID 1 must not exit)");
    }
    if args.check {
        return check(&file.agent);
    }
    let cfg = file.agent;
    log::info!(
        target: "agent",
        "pact-agent {} starting on {}{}",
        env!("CARGO_PKG_VERSION"),
        cfg.node_id(),
        if pid1 { " as PID 1" } else { "" }
    );
    if !mounted.is_empty() {
        log::info!(target: "agent", "mounted {}", mounted.join(", "));
    }
    log::debug!(target: "agent", "configured at {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    if let Err(e) = pid1::protect_from_oom() {
        log::warn!(target: "agent", "cannot set oom_score_adj: {e}");
    }
    if !pid1 {
        if let Err(e) = pid1::become_subreaper() {
            log::warn!(target: "agent", "cannot become a child subreaper: {e}");
        }
    }
    let state = cfg.state_dir();
    if let Err(e) = std::fs::create_dir_all(&state) {
        log::error!(target: "agent", "cannot create {}: {e}", state.display());
    }
    readiness::clear(&cfg.ready_file(), &cfg.ready_socket());

    let cgroup_choice = match args.cgroup_root.as_deref() {
        None => phases::CgroupChoice::Config,
        Some("none") => phases::CgroupChoice::Disabled,
        Some(r) => phases::CgroupChoice::Root(PathBuf::from(r)),
    };
    let services_file = cfg.services_file.clone();
    let control = match bind_control(&cfg, pid1) {
        Ok(c) => c,
        Err(e) => {
            log::error!(target: "agent", "control socket: {e}");
            return fatal(pid1, 1);
        }
    };
    let mut agent = match Agent::new(
        cfg,
        pid1,
        started,
        services_file,
        cgroup_choice,
        signals,
        control,
    ) {
        Ok(a) => a,
        Err(e) => {
            log::error!(target: "agent", "event loop: {e}");
            return fatal(pid1, 1);
        }
    };
    let plan = agent.run();
    let watchdog = agent.take_watchdog();
    drop(agent);
    match plan {
        ExitPlan::Exit(code) => {
            if let Some(wd) = watchdog {
                wd.disarm();
            }
            code
        }
        ExitPlan::PowerOff | ExitPlan::Reboot => {
            let e = pid1::final_shutdown(
                plan == ExitPlan::Reboot,
                Duration::from_secs(5),
                move || {
                    if let Some(wd) = watchdog {
                        wd.disarm();
                    }
                },
            );
            log::error!(target: "agent", "reboot(2) failed: {e}");
            fatal(true, 1)
        }
    }
}

/// Leave with `code`, except as PID 1, which must never exit: it logs and
/// sleeps, keeping the kernel alive for an operator on the console.
fn fatal(pid1: bool, code: i32) -> i32 {
    if !pid1 {
        return code;
    }
    log::error!(target: "agent", "PID 1 cannot continue; halting here (the watchdog, if armed, will reset the node)");
    loop {
        pid1::reap();
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn init_logging(args: &Args, file: &AgentFile) {
    let level = args
        .log_level
        .clone()
        .or_else(|| std::env::var("PACT_LOG").ok())
        .unwrap_or_else(|| file.telemetry.log_level.clone());
    let level = logger::parse_level(&level).unwrap_or_else(|e| {
        say(true, &format!("pact-agent: {e}; using info\n"));
        log::LevelFilter::Info
    });
    let format = args
        .log_format
        .clone()
        .unwrap_or_else(|| file.telemetry.log_format.clone());
    let format = format.parse().unwrap_or_else(|e| {
        say(true, &format!("pact-agent: {e}; using text\n"));
        logger::Format::Text
    });
    logger::init(level, format);
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        log::error!(target: "agent", "panic{at}: {msg}");
    }));
}

fn check(cfg: &AgentConfig) -> i32 {
    match &cfg.services_file {
        None => {
            say(false, "configuration ok (no services file)\n");
            0
        }
        Some(p) => match ServiceSet::load(p, cfg.vcluster.as_deref(), &CheckEnv::default()) {
            Ok(set) => {
                let names: Vec<&str> = set.services.iter().map(|s| s.name.as_str()).collect();
                say(
                    false,
                    &format!(
                        "configuration ok: vcluster {}, {} service(s) in start order: {}\n",
                        set.vcluster,
                        names.len(),
                        names.join(", ")
                    ),
                );
                0
            }
            Err(e) => {
                say(true, &format!("{e}\n"));
                1
            }
        },
    }
}

fn bind_control(cfg: &AgentConfig, pid1: bool) -> std::io::Result<control::ControlServer> {
    let limits = crate::proto::Limits {
        max_line: cfg.control.max_line,
        max_words: cfg.control.max_words,
        max_body: cfg.control.max_body.0 as usize,
    };
    let bind = |path: &Path| {
        control::ControlServer::bind(
            path,
            limits,
            cfg.control.max_connections,
            Duration::from_secs(cfg.control.idle_timeout_seconds),
            cfg.control.allowed_uids.clone(),
        )
    };
    match bind(&cfg.control_socket()) {
        Err(e) if pid1 => {
            let fallback = PathBuf::from("/run/pact-agent.sock");
            log::error!(target: "agent", "{}: {e}; trying {}", cfg.control_socket().display(), fallback.display());
            bind(&fallback)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str], pid1: bool) -> (Result<Parsed, lexopt::Error>, Vec<String>) {
        let mut notes = Vec::new();
        let argv = words.iter().map(std::ffi::OsString::from);
        (parse_args(argv, pid1, &mut notes), notes)
    }

    #[test]
    fn as_pid1_a_bad_word_keeps_the_good_options() {
        let words = [
            "--state-dir",
            "/x",
            "splash",
            "--frob=1",
            "--log-level",
            "loud",
            "--cgroup-root",
            "none",
            "--help",
            "--version",
            "--check",
            "-c",
            "/etc/a.toml",
        ];
        let (r, notes) = parse(&words, true);
        let Ok(Parsed::Run(a)) = r else {
            panic!("PID 1 must go on booting");
        };
        assert_eq!(a.state_dir.as_deref(), Some(Path::new("/x")));
        assert_eq!(a.cgroup_root.as_deref(), Some("none"));
        assert_eq!(a.config.as_deref(), Some(Path::new("/etc/a.toml")));
        assert!(!a.check && a.log_level.is_none());
        assert_eq!(notes.len(), 5, "{notes:?}");
        assert!(notes[0].contains("splash"), "{notes:?}");
        // An option without its value does not swallow the next option.
        let (r, notes) = parse(&["--log-level", "--state-dir", "/y"], true);
        let Ok(Parsed::Run(a)) = r else {
            panic!("PID 1 must go on booting");
        };
        assert_eq!(a.state_dir.as_deref(), Some(Path::new("/y")), "{notes:?}");
        // Not PID 1: the first bad word is the error, --help ends it.
        assert!(parse(&words, false).0.is_err());
        assert!(matches!(parse(&["--help"], false).0, Ok(Parsed::Done)));
        assert!(matches!(parse(&["--check"], false).0, Ok(Parsed::Run(a)) if a.check));
    }
}
