//! `pact`: the command-line client. Every command speaks the line
//! protocol to the agent's control socket (and, in later issues, to the
//! journal); exit codes are those of the CLI seed's table, carried by the
//! server's `err <code>` lines.

pub mod config;
pub mod journal;
pub mod output;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::proto::client::{Client, Outcome, Response};
use crate::proto::{format_request, ExitCode, Record, ResponseLine};

const HELP: &str = "\
pact - node management for diskless HPC clusters

Usage: pact [global options] <command> [arguments]

Commands (local agent):
  status                          the node: state, services, cgroups, boot timing
  service status [NAME]           one or every supervised service
  service start NAME [--no-wait]  start (and wait until running)
  service stop NAME [--no-wait]   stop (and wait until stopped)
  service restart NAME [--no-wait]
  service logs NAME [-n N] [-f]   the last N lines (default 50), -f to follow
  agent reload                    re-read the service declarations
  agent shutdown [--reboot]       ordered shutdown (power off, or reboot)

Commands (configuration, against the journal):
  apply SPEC.toml [-m MSG]        declare vCluster overlay changes (sysctl, files, mounts,
                                  services, policy ...); checked locally first
  commit --node N DELTA.toml [--ttl S] [-m MSG]
                                  a node's committed delta (TTL 900..864000 s)
  rollback SEQ [-m MSG]           restore the scope of entry SEQ to its state then
  log [-n N] [--scope S]          configuration history (S: vcluster:X, node:N, or a name)
  diff --committed [NODE]         committed node deltas not in their overlay
  promote NODE [--dry-run] [--overwrite | --keep-local]
                                  move a node's deltas into its vCluster's overlay
  watch [--vcluster X]            live stream of entries
  group list | show V | set-policy V POLICY.toml
  node assign N V | unassign N | list [--vcluster V]
  status NODE | --vcluster X      a node or vCluster as the journal sees it

Commands (journal; -e/--endpoint HOST:PORT, or PACT_JOURNAL_ENDPOINTS / PACT_ENDPOINT):
  journal status                  the node's Raft state, peers, latency histograms
  journal append [FILE|-]         append FILE (or stdin); prints the sequence number
  journal get SEQ                 the entry's bytes on stdout
  journal range FROM TO           entries FROM..TO
  journal member add|remove|promote ID [--learner]

Global options:
      --json                      machine-readable output
      --agent-socket PATH         agent control socket (PACT_AGENT_SOCKET,
                                  default /run/pact/agent.sock)
      --timeout SECS              give up after SECS (default 120)
  -h, --help                      this help
  -V, --version                   the version

Exit codes: 0 ok, 1 general error, 2 authentication/authorization,
3 policy rejection or invalid argument, 4 conflict, 5 unreachable or
timeout, 6 not whitelisted, 10 rollback blocked. See pact(1).
";

struct Global {
    json: bool,
    agent_socket: PathBuf,
    timeout: Duration,
}

/// Run the CLI; returns the process exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args) {
        Ok(code) => code,
        Err((code, msg)) => {
            eprintln!("pact: {msg}");
            code
        }
    }
}

type CliResult = Result<i32, (i32, String)>;

fn usage(msg: impl Into<String>) -> (i32, String) {
    (
        ExitCode::Invalid as i32,
        format!("{}\n(see pact --help)", msg.into()),
    )
}

fn run(args: Vec<String>) -> CliResult {
    let mut g = Global {
        json: false,
        agent_socket: std::env::var_os("PACT_AGENT_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/run/pact/agent.sock")),
        timeout: Duration::from_secs(120),
    };
    let mut rest = Vec::new();
    let mut endpoint_first = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => g.json = true,
            "--agent-socket" => {
                g.agent_socket = it
                    .next()
                    .ok_or_else(|| usage("--agent-socket needs a path"))?
                    .into()
            }
            "--timeout" => {
                let v = it.next().ok_or_else(|| usage("--timeout needs seconds"))?;
                let secs = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0 * 365.0)
                    .ok_or_else(|| {
                        usage(format!(
                            "--timeout {v}: not a number of seconds (0 < s <= 1 year)"
                        ))
                    })?;
                g.timeout = Duration::from_secs_f64(secs.max(0.1));
            }
            "-h" | "--help" if rest.is_empty() => {
                print!("{HELP}");
                return Ok(0);
            }
            "-V" | "--version" if rest.is_empty() => {
                println!("pact {}", env!("CARGO_PKG_VERSION"));
                return Ok(0);
            }
            // `-e HOST` before the command: an option of the journal
            // commands, taken as if it came after the command's name.
            "-e" | "--endpoint" if rest.is_empty() => {
                let v = it
                    .next()
                    .ok_or_else(|| usage(format!("{a} needs HOST:PORT")))?;
                endpoint_first.extend([a, v]);
            }
            _ => rest.push(a),
        }
    }
    rest.extend(endpoint_first);
    let words: Vec<&str> = rest.iter().map(String::as_str).collect();
    if let Some(result) = config::run(&words, g.json, g.timeout) {
        return result;
    }
    match words.as_slice() {
        [] => Err(usage("no command given")),
        ["status"] => status(&g),
        ["service", "status"] => service_status(&g, None),
        ["service", "status", name] => service_status(&g, Some(name)),
        ["service", verb @ ("start" | "stop" | "restart"), name, opts @ ..] => {
            service_command(&g, verb, name, opts)
        }
        ["service", "logs", name, opts @ ..] => service_logs(&g, name, opts),
        ["agent", "reload"] => simple(&g, &["reload"]),
        ["agent", "shutdown"] => simple(&g, &["shutdown"]),
        ["agent", "shutdown", "--reboot"] => simple(&g, &["shutdown", "reboot=true"]),
        ["journal", rest @ ..] => journal::run(rest, g.json, g.timeout),
        _ => Err(usage(format!(
            "unknown command \"{}\"",
            words[..words.len().min(2)].join(" ")
        ))),
    }
}

fn connect(g: &Global) -> Result<Client<std::os::unix::net::UnixStream>, (i32, String)> {
    Client::connect_unix(&g.agent_socket, Some(g.timeout)).map_err(|e| {
        (
            ExitCode::Unreachable as i32,
            format!(
                "cannot reach the agent at {}: {e}",
                g.agent_socket.display()
            ),
        )
    })
}

fn call(g: &Global, words: &[&str]) -> Result<Response, (i32, String)> {
    let mut c = connect(g)?;
    c.call(&format_request(words), None)
        .map_err(|e| agent_error(g, &e))
}

/// An I/O error talking to the agent: a read timeout is "no answer within
/// the --timeout" (exit 5), not the socket's EAGAIN.
fn agent_error(g: &Global, e: &std::io::Error) -> (i32, String) {
    if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ) {
        return (
            ExitCode::Unreachable as i32,
            format!(
                "agent: no answer within {:.1} s (--timeout); the request may still complete",
                g.timeout.as_secs_f64()
            ),
        );
    }
    let code = if matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::UnexpectedEof
    ) {
        ExitCode::Unreachable
    } else {
        ExitCode::General
    };
    (code as i32, format!("agent: {e}"))
}

/// Turn an `err` outcome into the CLI's exit.
fn check(resp: &Response) -> Result<&Record, (i32, String)> {
    match &resp.outcome {
        Outcome::Ok(r) => Ok(r),
        Outcome::Err(code, msg) => Err((*code, msg.clone())),
    }
}

fn status(g: &Global) -> CliResult {
    let resp = call(g, &["status"])?;
    check(&resp)?;
    let rec = resp.records.first().cloned().unwrap_or_default();
    if g.json {
        println!("{}", output::json_object(&rec));
    } else {
        print!("{}", output::key_values(&rec));
    }
    Ok(0)
}

fn service_status(g: &Global, name: Option<&str>) -> CliResult {
    let mut words = vec!["service", "status"];
    words.extend(name);
    let resp = call(g, &words)?;
    check(&resp)?;
    if g.json {
        match name {
            Some(_) => println!(
                "{}",
                resp.records
                    .first()
                    .map(output::json_object)
                    .unwrap_or_else(|| "null".into())
            ),
            None => println!("{}", output::json_array(&resp.records)),
        }
    } else if name.is_some() {
        for r in &resp.records {
            print!("{}", output::key_values(r));
        }
    } else {
        print!(
            "{}",
            output::table(
                &resp.records,
                &[
                    ("name", "NAME"),
                    ("state", "STATE"),
                    ("pid", "PID"),
                    ("restarts", "RESTARTS"),
                    ("since", "SINCE"),
                    ("health", "HEALTH"),
                    ("reason", "REASON"),
                ],
            )
        );
    }
    Ok(0)
}

fn service_command(g: &Global, verb: &str, name: &str, opts: &[&str]) -> CliResult {
    let mut words = vec!["service", verb, name];
    for o in opts {
        match *o {
            "--no-wait" => words.push("wait=false"),
            other => return Err(usage(format!("unexpected argument \"{other}\""))),
        }
    }
    let resp = call(g, &words)?;
    let rec = check(&resp)?;
    if g.json {
        println!("{}", output::json_object(rec));
    } else {
        println!("{name}: {}", rec.get("state").unwrap_or("ok"));
    }
    Ok(0)
}

fn service_logs(g: &Global, name: &str, opts: &[&str]) -> CliResult {
    let mut words = vec!["service".to_string(), "logs".to_string(), name.to_string()];
    let mut follow = false;
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        match *o {
            "-f" | "--follow" => follow = true,
            "-n" | "--lines" => {
                let n = it.next().ok_or_else(|| usage("-n needs a number"))?;
                n.parse::<usize>()
                    .map_err(|_| usage(format!("-n {n}: not a number")))?;
                words.push(format!("lines={n}"));
            }
            other => return Err(usage(format!("unexpected argument \"{other}\""))),
        }
    }
    if follow {
        words.push("follow=true".into());
    }
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut c = connect(g)?;
    if follow {
        c.get_mut().set_read_timeout(None).ok();
    }
    c.send(&format_request(&refs), None)
        .map_err(|e| agent_error(g, &e))?;
    let stdout = std::io::stdout();
    loop {
        let line = c.read_line().map_err(|e| agent_error(g, &e))?;
        match line {
            None => return Ok(0),
            Some(ResponseLine::Body(n)) => {
                let body = c.read_body(n).map_err(|e| agent_error(g, &e))?;
                let mut out = stdout.lock();
                let _ = out.write_all(&body);
                let _ = out.flush();
            }
            Some(ResponseLine::Record(_)) => {}
            Some(ResponseLine::Ok(_)) => return Ok(0),
            Some(ResponseLine::Err(code, msg)) => return Err((code, msg)),
        }
    }
}

fn simple(g: &Global, words: &[&str]) -> CliResult {
    let resp = call(g, words)?;
    let rec = check(&resp)?;
    if g.json {
        println!("{}", output::json_object(rec));
    } else if rec.fields.is_empty() {
        println!("ok");
    } else {
        println!("{}", rec.to_line());
    }
    Ok(0)
}
