//! `pact-journal`'s command line: the daemon, `inspect` and `recover`.

use std::ffi::OsString;
use std::path::PathBuf;

use super::config::{self, JournalFile, Overrides};
use super::daemon::Daemon;
use super::storage::{DirLock, Storage, StorageOptions, DB_FILE};

const HELP: &str = "\
pact-journal - the Raft-replicated configuration journal of pact

Usage:
  pact-journal [options]                 run the daemon
  pact-journal inspect --data-dir DIR    print a stopped node's Raft state
  pact-journal recover --data-dir DIR --as-sole-member [--node-id N]
                                         make a stopped survivor the only voter

Options:
  -c, --config PATH        configuration file (default /etc/pact/journal.toml)
      --bootstrap          start a new cluster from journal.raft.members
                           (first start of node 1 only; refused with state)
      --node-id N          this node's id (PACT_JOURNAL_NODE_ID)
      --data-dir DIR       where journal.db lives (PACT_JOURNAL_DATA_DIR)
      --listen ADDR        client address ip:port (PACT_JOURNAL_LISTEN)
      --log-level LEVEL    off, error, warn, info, debug, trace
      --log-format FORMAT  text or json
  -h, --help               this help
  -V, --version            the version

Environment: PACT_JOURNAL_PEERS=1=host:9443,2=host:9443 replaces
journal.raft.members (client addresses; Raft port = client port + 1).
Exit codes: 0 clean stop, 1 runtime failure, 3 bad configuration or
arguments. See pact-journal(8).
";

/// Exit status for bad arguments or configuration.
const EXIT_USAGE: i32 = 3;

enum Command {
    Run,
    Inspect,
    Recover,
}

struct Args {
    command: Command,
    config: Option<PathBuf>,
    bootstrap: bool,
    sole_member: bool,
    flags: Overrides,
}

fn parse_args(argv: Vec<OsString>) -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(argv);
    let mut a = Args {
        command: Command::Run,
        config: None,
        bootstrap: false,
        sole_member: false,
        flags: Overrides::default(),
    };
    let mut first = true;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let value = |p: &mut lexopt::Parser| -> Result<String, String> {
            p.value()
                .map_err(|e| e.to_string())?
                .into_string()
                .map_err(|_| "argument is not UTF-8".to_string())
        };
        match arg {
            Value(v) if first => match v.to_str() {
                Some("inspect") => a.command = Command::Inspect,
                Some("recover") => a.command = Command::Recover,
                _ => return Err(format!("unknown command {v:?}")),
            },
            Short('c') | Long("config") => a.config = Some(value(&mut p)?.into()),
            Long("bootstrap") => a.bootstrap = true,
            Long("as-sole-member") => a.sole_member = true,
            Long("node-id") => a.flags.node_id = Some(value(&mut p)?),
            Long("data-dir") => a.flags.data_dir = Some(value(&mut p)?.into()),
            Long("listen") => a.flags.listen = Some(value(&mut p)?),
            Long("log-level") => a.flags.log_level = Some(value(&mut p)?),
            Long("log-format") => a.flags.log_format = Some(value(&mut p)?),
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("pact-journal {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            other => return Err(other.unexpected().to_string()),
        }
        first = false;
    }
    Ok(Some(a))
}

/// Runs `pact-journal`; returns the exit status.
pub fn main() -> i32 {
    let args = match parse_args(std::env::args_os().skip(1).collect()) {
        Ok(Some(a)) => a,
        Ok(None) => return 0,
        Err(e) => {
            eprintln!("pact-journal: {e}\n(see pact-journal --help)");
            return EXIT_USAGE;
        }
    };
    match args.command {
        Command::Run => run_daemon(args),
        Command::Inspect => inspect(&args),
        Command::Recover => recover(&args),
    }
}

fn run_daemon(args: Args) -> i32 {
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG));
    let (file, src) = match JournalFile::load(&path, args.config.is_some()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("pact-journal: {e}");
            return EXIT_USAGE;
        }
    };
    let ov = Overrides::from_env().merged(args.flags);
    let settings = match config::resolve(&file, &src, &ov) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pact-journal: {e}");
            return EXIT_USAGE;
        }
    };
    let level = crate::logger::parse_level(&settings.log_level).unwrap_or(log::LevelFilter::Info);
    let format = settings
        .log_format
        .parse()
        .unwrap_or(crate::logger::Format::Text);
    crate::logger::init(level, format);
    let signals = match crate::agent::signals::SignalFd::open() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pact-journal: signalfd: {e}");
            return 1;
        }
    };
    raise_fd_limit(settings.clients.max_connections as u64 + 256);
    let mut daemon = match Daemon::new(settings, args.bootstrap) {
        Ok(d) => d,
        Err(e) => {
            log::error!(target: "journal", "{e}");
            return if e.starts_with("refusing to bootstrap") {
                EXIT_USAGE
            } else {
                1
            };
        }
    };
    match daemon.run(&signals) {
        Ok(()) => 0,
        Err(e) => {
            log::error!(target: "journal", "{e}");
            1
        }
    }
}

fn data_dir(args: &Args) -> Result<PathBuf, String> {
    let dir = args
        .flags
        .data_dir
        .clone()
        .or_else(|| Overrides::from_env().data_dir)
        .ok_or("--data-dir is required")?;
    if !dir.join(DB_FILE).exists() {
        return Err(format!("{} has no {DB_FILE}", dir.display()));
    }
    Ok(dir)
}

/// For `recover`, which holds the directory lock: opened as the daemon
/// opens it (migrated to this binary's schema).
fn open_stopped(args: &Args) -> Result<Storage, String> {
    let dir = data_dir(args)?;
    Storage::open(&dir, &StorageOptions::default()).map_err(|e| e.to_string())
}

fn inspect(args: &Args) -> i32 {
    // Read-only, without migrations: inspecting a node of an older
    // release, even a running one, must not upgrade its database under it.
    let storage =
        match data_dir(args).and_then(|d| Storage::open_read_only(&d).map_err(|e| e.to_string())) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("pact-journal inspect: {e}");
                return EXIT_USAGE;
            }
        };
    let ins = match storage.inspect() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("pact-journal inspect: {e}");
            return 1;
        }
    };
    let ids = |s: &std::collections::BTreeSet<u64>| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        }
    };
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let rec = crate::proto::Record::new()
        .field("node", opt(ins.node_id))
        .field("cluster", ins.cluster.as_deref().unwrap_or("-"))
        .field("term", ins.hard_state.term)
        .field("vote", opt(ins.hard_state.vote))
        .field("commit_index", ins.hard_state.commit)
        .field("applied_index", ins.applied)
        .field("last_index", ins.last_index)
        .field("last_term", ins.last_term)
        .field("snapshot_index", ins.snapshot_index)
        .field("snapshot_term", ins.snapshot_term)
        .field("voters", ids(&ins.membership.voters))
        .field("learners", ids(&ins.membership.learners))
        .field("membership_index", ins.membership_index)
        .field("log_entries", ins.log_entries)
        .field("journal_entries", ins.journal_entries)
        .field("last_seq", opt(ins.last_seq));
    println!("{}", rec.to_line());
    0
}

fn recover(args: &Args) -> i32 {
    if !args.sole_member {
        eprintln!("pact-journal recover: say --as-sole-member (the only recovery there is)");
        return EXIT_USAGE;
    }
    let _lock = match data_dir(args).and_then(|d| DirLock::acquire(&d).map_err(|e| e.to_string())) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pact-journal recover: {e}");
            return EXIT_USAGE;
        }
    };
    let mut storage = match open_stopped(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pact-journal recover: {e}");
            return EXIT_USAGE;
        }
    };
    let ins = match storage.inspect() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("pact-journal recover: {e}");
            return 1;
        }
    };
    let id = match (&args.flags.node_id, ins.node_id) {
        (Some(s), _) => match s.parse::<u64>() {
            Ok(id) if id > 0 => id,
            _ => {
                eprintln!("pact-journal recover: bad --node-id {s}");
                return EXIT_USAGE;
            }
        },
        (None, Some(id)) => id,
        (None, None) => {
            eprintln!("pact-journal recover: the data dir names no node: pass --node-id");
            return EXIT_USAGE;
        }
    };
    match storage.recover_as_sole_member(id) {
        Ok(index) => {
            println!(
                "node {id} is now the only voter (membership entry {index}, term {}); start it, \
                 wipe the other nodes' data dirs, start them blank and add each with \
                 `pact journal member add <id>`",
                ins.hard_state.term.max(ins.last_term)
            );
            0
        }
        Err(e) => {
            eprintln!("pact-journal recover: {e}");
            1
        }
    }
}

/// Lift the soft open-file limit toward `want` (bounded by the hard limit):
/// every boot stream is a connection.
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= want {
            return;
        }
        let target = want.min(lim.rlim_max);
        lim.rlim_cur = target;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            log::warn!(target: "journal", "cannot raise the open-file limit to {target}");
        } else if target < want {
            log::warn!(target: "journal", "open-file limit is {target} (hard limit): fewer than {want} connections fit");
        }
    }
}
