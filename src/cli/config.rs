//! The configuration commands of `pact` (against the journal):
//! `apply`, `commit`, `rollback`, `log`, `diff --committed`, `promote`,
//! `watch`, `group`, `node`, and `status NODE|--vcluster X`.
//!
//! Every write names its author: `PACT_PRINCIPAL` (default: `$USER`) and
//! `PACT_ROLE` (default: `pact-platform-admin`), until authentication
//! (OIDC tokens) replaces both.

use std::io::Write;
use std::time::Duration;

use super::journal::{default_endpoints, split_endpoints};
use super::output;
use crate::config::overlay::parse_spec;
use crate::config::Source;
use crate::journal::client::{ClientError, JournalClient};
use crate::proto::client::{Outcome, Response};
use crate::proto::{format_request, ExitCode, Record, ResponseLine};

type CliResult = Result<i32, (i32, String)>;

fn usage(msg: impl Into<String>) -> (i32, String) {
    (
        ExitCode::Invalid as i32,
        format!("{}\n(see pact --help)", msg.into()),
    )
}

fn failed(e: ClientError) -> (i32, String) {
    (e.code, e.message)
}

/// Options shared by the configuration commands.
struct Opts<'a> {
    json: bool,
    endpoints: Vec<String>,
    message: Option<String>,
    rest: Vec<&'a str>,
    flags: Vec<&'a str>,
    values: Vec<(&'a str, String)>,
}

impl Opts<'_> {
    fn value(&self, k: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, f: &str) -> bool {
        self.flags.contains(&f)
    }
}

/// Flags that take a value.
const VALUED: [&str; 8] = [
    "-m",
    "--message",
    "-n",
    "--scope",
    "--vcluster",
    "--ttl",
    "--node",
    "--endpoint",
];

fn parse<'a>(args: &[&'a str], json: bool) -> Result<Opts<'a>, (i32, String)> {
    let mut o = Opts {
        json,
        endpoints: vec![],
        message: None,
        rest: vec![],
        flags: vec![],
        values: vec![],
    };
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        let key = if a == "-e" { "--endpoint" } else { a };
        if VALUED.contains(&key) {
            let v = it
                .next()
                .ok_or_else(|| usage(format!("{a} needs a value")))?;
            match key {
                "--endpoint" => o.endpoints.extend(split_endpoints(v)),
                "-m" | "--message" => o.message = Some(v.to_string()),
                _ => o.values.push((key, v.to_string())),
            }
        } else if a.starts_with("--") {
            o.flags.push(a);
        } else {
            o.rest.push(a);
        }
    }
    if o.endpoints.is_empty() {
        o.endpoints = default_endpoints();
    }
    Ok(o)
}

/// `principal=... role=... [message=...]` of a write.
fn author_words(o: &Opts<'_>) -> Vec<String> {
    let principal = std::env::var("PACT_PRINCIPAL")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "root".to_string());
    let role = std::env::var("PACT_ROLE").unwrap_or_else(|_| "pact-platform-admin".to_string());
    let mut w = vec![
        format!("principal={principal}"),
        format!("role={role}"),
        "principal_type=human".to_string(),
    ];
    if let Some(m) = &o.message {
        w.push(format!("message={m}"));
    }
    w
}

fn line(words: &[String]) -> String {
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    format_request(&refs)
}

/// A journal client whose --timeout bounds the whole command (every
/// client it makes shares the budget from its first).
fn client(o: &Opts<'_>, timeout: Duration) -> JournalClient {
    static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let started = *STARTED.get_or_init(std::time::Instant::now);
    JournalClient::new(o.endpoints.clone(), timeout).bounded_until(started + timeout)
}

fn ok_fields(r: &Response) -> Record {
    match &r.outcome {
        Outcome::Ok(rec) => rec.clone(),
        Outcome::Err(..) => Record::new(),
    }
}

/// Runs one configuration command; `None` when `args` is not one.
pub fn run(args: &[&str], json: bool, timeout: Duration) -> Option<CliResult> {
    let cmd = *args.first()?;
    let sub = args.get(1).copied().unwrap_or("");
    let known = matches!(
        cmd,
        "apply" | "commit" | "rollback" | "log" | "diff" | "promote" | "watch" | "group" | "node"
    ) || (cmd == "status" && args.len() > 1);
    if !known {
        return None;
    }
    let o = match parse(&args[1..], json) {
        Ok(o) => o,
        Err(e) => return Some(Err(e)),
    };
    // A mistyped option must not turn `promote --dryrun` into a promote.
    let allowed: &[&str] = match cmd {
        "apply" | "rollback" | "group" => &["-m", "--message"],
        "commit" => &["-m", "--message", "--node", "--ttl"],
        "log" => &["-n", "--scope"],
        "diff" => &["--committed"],
        "promote" => &[
            "-m",
            "--message",
            "--dry-run",
            "--overwrite",
            "--keep-local",
        ],
        "watch" | "node" | "status" => &["--vcluster"],
        _ => &[],
    };
    let given = o
        .flags
        .iter()
        .copied()
        .chain(o.values.iter().map(|(k, _)| *k));
    let given: Vec<&str> = given.chain(o.message.as_ref().map(|_| "-m")).collect();
    if let Some(bad) = given.iter().find(|f| !allowed.contains(f)) {
        return Some(Err(usage(format!("{cmd}: unknown option {bad}"))));
    }
    if let Some(bad) = o.rest.iter().find(|a| a.starts_with('-') && a.len() > 1) {
        return Some(Err(usage(format!("{cmd}: unknown option {bad}"))));
    }
    Some(match (cmd, sub) {
        ("apply", _) => apply(&o, timeout),
        ("commit", _) => commit(&o, timeout),
        ("rollback", _) => rollback(&o, timeout),
        ("log", _) => log(&o, timeout),
        ("diff", _) => diff(&o, timeout),
        ("promote", _) => promote(&o, timeout),
        ("watch", _) => watch(&o, timeout),
        ("group", _) => group(&o, timeout),
        ("node", _) => node(&o, timeout),
        ("status", _) => status(&o, timeout),
        _ => Err(usage(format!("unknown command \"{cmd}\""))),
    })
}

fn apply(o: &Opts<'_>, timeout: Duration) -> CliResult {
    let [path] = o.rest[..] else {
        return Err(usage("pact apply <spec.toml>"));
    };
    let text = read_input(path)?;
    // Checked here first: errors name this file, its lines and keys.
    let specs = parse_spec(&Source::from_str(path, &text))
        .map_err(|e| (ExitCode::Invalid as i32, e.to_string()))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| (ExitCode::Invalid as i32, format!("{path}: {e}")))?;
    let mut c = client(o, timeout);
    let mut results = Vec::new();
    let mut first_failure = None;
    for spec in &specs {
        // One request per vCluster, with only its part of the file.
        let part = doc
            .get("vcluster")
            .and_then(|v| v.get(&spec.vcluster))
            .cloned()
            .unwrap_or(toml::Value::Table(Default::default()));
        let mut one = toml::Table::new();
        let mut vc = toml::Table::new();
        vc.insert(spec.vcluster.clone(), part);
        one.insert("vcluster".to_string(), toml::Value::Table(vc));
        let body = toml::to_string(&one).unwrap_or_default();
        let mut words = vec![
            "apply".to_string(),
            format!("vcluster={}", spec.vcluster),
            format!("file={path}"),
        ];
        words.extend(author_words(o));
        // The vClusters are independent: a refusal for one is reported
        // and the others are still applied (and reported).
        let r = match c.write(&line(&words), Some(body.as_bytes())) {
            Ok(r) => r,
            Err(e) => {
                let (code, msg) = failed(e);
                eprintln!("pact: vcluster {}: {msg}", spec.vcluster);
                first_failure.get_or_insert(code);
                results.push(
                    Record::new()
                        .field("vcluster", &spec.vcluster)
                        .field("error", &msg)
                        .field("code", code),
                );
                continue;
            }
        };
        let f = ok_fields(&r);
        if !o.json && f.get("unchanged") == Some("true") {
            println!(
                "vcluster {} already declares all of this: nothing written (overlay version {}).",
                spec.vcluster,
                f.get("version").unwrap_or("?")
            );
        } else if !o.json {
            println!(
                "Applied to vcluster {} ({} change(s)). Overlay version {}.",
                spec.vcluster,
                f.get("changes").unwrap_or("?"),
                f.get("version").unwrap_or("?")
            );
        }
        results.push(f);
    }
    if o.json {
        println!("{}", output::json_array(&results));
    }
    match first_failure {
        // Already said per vCluster; the exit code is the first failure's.
        Some(code) => Ok(code),
        None => Ok(0),
    }
}

fn commit(o: &Opts<'_>, timeout: Duration) -> CliResult {
    let node = o
        .value("--node")
        .ok_or_else(|| usage("pact commit --node <node> <delta.toml> [--ttl SECONDS] [-m MSG]"))?;
    let [path] = o.rest[..] else {
        return Err(usage("pact commit --node <node> <delta.toml>"));
    };
    let text = read_input(path)?;
    parse_spec(&Source::from_str(path, &text))
        .map_err(|e| (ExitCode::Invalid as i32, e.to_string()))?;
    let mut words = vec![
        "commit".to_string(),
        format!("node={node}"),
        format!("file={path}"),
    ];
    if let Some(ttl) = o.value("--ttl") {
        // Checked here too, with the journal's own texts: a TTL out of
        // bounds is an invalid argument even when the journal is down.
        ttl.parse::<u32>()
            .map_err(|_| usage(format!("--ttl {ttl}: not a number of seconds")))
            .and_then(|t| {
                crate::journal::machine::entry::validate_ttl(t)
                    .map_err(|m| (ExitCode::Invalid as i32, m))
            })?;
        words.push(format!("ttl={ttl}"));
    }
    write_report(o, timeout, words, Some(text.as_bytes()), |f| {
        println!(
            "Committed {} change(s) on node {node} (seq {}).",
            f.get("changes").unwrap_or("?"),
            f.get("seq").unwrap_or("?")
        )
    })
}

fn rollback(o: &Opts<'_>, timeout: Duration) -> CliResult {
    let [seq] = o.rest[..] else {
        return Err(usage("pact rollback <seq>"));
    };
    let words = vec!["rollback".to_string(), seq.to_string()];
    write_report(o, timeout, words, None, |f| {
        let what = f
            .get("vcluster")
            .map(|v| format!("vcluster {v}"))
            .or_else(|| f.get("node").map(|n| format!("node {n}")));
        println!(
            "Rolled back {} to its state at {seq} (entry {}).",
            what.unwrap_or_default(),
            f.get("seq").unwrap_or("?")
        )
    })
    .map_err(|(code, m)| {
        // The journal's text (digest) names the rule; say what it means here.
        if m == "parent must precede entry" {
            (
                code,
                format!("rollback {seq}: there is no entry {seq} yet ({m})"),
            )
        } else {
            (code, m)
        }
    })
}

/// A write with its author; prints the answer as JSON or as `human` says.
fn write_report(
    o: &Opts<'_>,
    timeout: Duration,
    mut words: Vec<String>,
    body: Option<&[u8]>,
    human: impl FnOnce(&Record),
) -> CliResult {
    words.extend(author_words(o));
    let r = client(o, timeout)
        .write(&line(&words), body)
        .map_err(failed)?;
    let f = ok_fields(&r);
    if o.json {
        println!("{}", output::json_object(&f));
    } else {
        human(&f);
    }
    Ok(0)
}

/// A spec file's text; `-` is standard input.
fn read_input(path: &str) -> Result<String, (i32, String)> {
    let read = if path == "-" {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).map(|_| t)
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|e| (ExitCode::Invalid as i32, format!("{path}: {e}")))
}

/// At most `max` positional arguments: more is a usage error, not
/// something to ignore.
fn no_extra(o: &Opts<'_>, max: usize, usage_line: &str) -> Result<(), (i32, String)> {
    match o.rest.get(max) {
        Some(extra) => Err(usage(format!(
            "unexpected argument \"{extra}\"; usage: {usage_line}"
        ))),
        None => Ok(()),
    }
}

fn read(o: &Opts<'_>, timeout: Duration, words: &[String]) -> Result<Response, (i32, String)> {
    client(o, timeout).read(&line(words)).map_err(failed)
}

fn log(o: &Opts<'_>, timeout: Duration) -> CliResult {
    no_extra(o, 0, "pact log [-n N] [--scope S]")?;
    if let Some(n) = o.value("-n").filter(|n| n.parse::<u64>().is_err()) {
        return Err(usage(format!("-n {n}: not a number")));
    }
    let mut words = vec![
        "log".to_string(),
        format!("n={}", o.value("-n").unwrap_or("20")),
    ];
    if let Some(s) = o.value("--scope") {
        // vcluster:X, node:N, global, or a bare name (either).
        let known = match s.split_once(':') {
            Some(("vcluster" | "node", name)) => crate::config::overlay::valid_name(name),
            Some(_) => false,
            None => s == "global" || crate::config::overlay::valid_name(s),
        };
        if !known {
            return Err(usage(format!(
                "--scope {s}: expected vcluster:NAME, node:NAME, global or a name"
            )));
        }
        words.push(format!("scope={s}"));
    }
    let r = read(o, timeout, &words)?;
    if o.json {
        println!("{}", output::json_array(&r.records));
    } else {
        print!(
            "{}",
            output::table(
                &r.records,
                &[
                    ("seq", "SEQ"),
                    ("time", "TIME"),
                    ("type", "TYPE"),
                    ("scope", "SCOPE"),
                    ("author", "AUTHOR"),
                    ("summary", "SUMMARY"),
                    ("message", "MESSAGE")
                ]
            )
        );
    }
    Ok(0)
}

fn diff(o: &Opts<'_>, timeout: Duration) -> CliResult {
    no_extra(o, 1, "pact diff --committed [node]")?;
    if !o.flag("--committed") {
        return Err(usage(
            "pact diff --committed [node] (live drift comes with the drift issue)",
        ));
    }
    let mut words = vec!["diff-committed".to_string()];
    if let Some(n) = o.rest.first() {
        words.push(format!("node={n}"));
    }
    let r = read(o, timeout, &words)?;
    if o.json {
        println!("{}", output::json_array(&r.records));
    } else if r.records.is_empty() {
        println!("(no committed node deltas)");
    } else {
        for rec in &r.records {
            let g = |k: &str| rec.get(k).unwrap_or("-").to_string();
            let expired = if rec.get("expired") == Some("true") {
                ", EXPIRED"
            } else {
                ""
            };
            println!(
                "{} {}: {} = {} ({}, committed seq:{}, {}{expired})",
                g("node"),
                g("dimension"),
                g("key")
                    .split_once('.')
                    .map_or(g("key"), |(_, k)| k.to_string()),
                one_line(&g("value"), 72),
                g("action").to_lowercase(),
                g("commits"),
                g("committed")
            );
        }
    }
    Ok(0)
}

/// A value on one line of at most `max` characters (multi-line file
/// contents included); the whole value is in `--json`.
fn one_line(v: &str, max: usize) -> String {
    let flat = v.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

fn promote(o: &Opts<'_>, timeout: Duration) -> CliResult {
    let [node] = o.rest[..] else {
        return Err(usage(
            "pact promote <node> [--dry-run] [--overwrite | --keep-local]",
        ));
    };
    let preview = read(
        o,
        timeout,
        &["promote-preview".to_string(), node.to_string()],
    )?;
    let text = String::from_utf8_lossy(&preview.bodies.concat()).into_owned();
    let conflicts = &preview.records;
    if o.flag("--dry-run") {
        if o.json {
            // What the promote would write, and its conflicts, as JSON.
            println!(
                "{{\"node\":{},\"fragment\":{},\"conflicts\":{}}}",
                crate::logger::json_string(node),
                crate::logger::json_string(&text),
                output::json_array(conflicts)
            );
        } else {
            print!("{text}");
        }
        // (With --json the conflicts are in the object, not repeated.)
        for c in conflicts.iter().filter(|_| !o.json) {
            eprintln!(
                "conflict: node {} has {} = {} (promoting {})",
                c.get("conflict").unwrap_or("?"),
                c.get("key").unwrap_or("?"),
                c.get("local").unwrap_or("?"),
                c.get("promoted").unwrap_or("?")
            );
        }
        return Ok(if conflicts.is_empty() {
            0
        } else {
            ExitCode::Conflict as i32
        });
    }
    let resolution = match (o.flag("--overwrite"), o.flag("--keep-local")) {
        (true, true) => return Err(usage("--overwrite and --keep-local exclude each other")),
        (true, false) => "overwrite",
        (false, true) => "keep-local",
        (false, false) => "report",
    };
    let words = vec![
        "promote".to_string(),
        node.to_string(),
        format!("resolution={resolution}"),
    ];
    write_report(o, timeout, words, None, |f| {
        print!("{text}");
        eprintln!(
            "Promoted node {node}'s deltas into vcluster {} (overlay version {}); deltas superseded: seq {}{}",
            f.get("vcluster").unwrap_or("?"),
            f.get("version").unwrap_or("?"),
            f.get("superseded").unwrap_or("-"),
            match f.get("overwritten") {
                Some(n) if !n.is_empty() => format!("; local values overwritten on {n}"),
                _ => String::new(),
            }
        );
    })
}

/// How long a watch stream may stay silent (the journal sends a heartbeat
/// every 5 s) before the journal is taken for dead.
const WATCH_SILENCE: Duration = Duration::from_secs(15);

/// Connects to `endpoint`, checks that it answers `hello`, and sends the
/// watch request.
fn open_watch(
    endpoint: &str,
    timeout: Duration,
    request: &str,
) -> std::io::Result<crate::proto::client::Client<std::net::TcpStream>> {
    let hello_wait = timeout.min(crate::journal::client::HELLO_WAIT);
    let mut c =
        crate::journal::client::connect_answering(endpoint, timeout).map_err(|e| {
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    std::io::Error::other(format!(
                        "no answer to hello within {:.1} s",
                        hello_wait.as_secs_f64()
                    ))
                }
                _ => e,
            }
        })?;
    // The stream must not go silent for three of the journal's 5 s
    // heartbeats (the first comes 5 s after the start), or the journal
    // (or the path to it) is taken for dead; --timeout may shorten that.
    c.get_mut()
        .set_read_timeout(Some(timeout.min(WATCH_SILENCE)))?;
    c.send(request, None)?;
    Ok(c)
}

fn watch(o: &Opts<'_>, timeout: Duration) -> CliResult {
    no_extra(o, 0, "pact watch [--vcluster X]")?;
    let mut words = vec!["watch".to_string()];
    if let Some(v) = o.value("--vcluster") {
        words.push(format!("vcluster={v}"));
    }
    // The first endpoint that answers `hello` within 2 s (a stopped node
    // still accepts connections) gets the watch.
    let mut last = (
        ExitCode::Unreachable as i32,
        "no journal endpoints".to_string(),
    );
    let mut opened = None;
    for endpoint in &o.endpoints {
        match open_watch(endpoint, timeout, &line(&words)) {
            Ok(c) => {
                opened = Some((endpoint.clone(), c));
                break;
            }
            Err(e) => {
                last = (
                    ExitCode::Unreachable as i32,
                    format!("journal {endpoint}: {e}"),
                )
            }
        }
    }
    let Some((endpoint, mut c)) = opened else {
        return Err(last);
    };
    let out = std::io::stdout();
    let mut heard = false;
    loop {
        let next = c.read_line().map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut if heard => {
                    format!("the stream went silent for {} s", WATCH_SILENCE.as_secs())
                }
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                    "no answer within {:.1} s",
                    timeout.min(WATCH_SILENCE).as_secs_f64()
                ),
                _ => e.to_string(),
            };
            (
                ExitCode::Unreachable as i32,
                format!("journal {endpoint}: {why}"),
            )
        })?;
        if !heard {
            heard = true;
            let _ = c.get_mut().set_read_timeout(Some(WATCH_SILENCE));
        }
        match next {
            None => {
                return Err((
                    ExitCode::Unreachable as i32,
                    "the journal closed the stream".to_string(),
                ))
            }
            Some(ResponseLine::Record(r)) if r.get("hb").is_some() => {}
            Some(ResponseLine::Record(r)) => {
                let mut w = out.lock();
                if o.json {
                    let _ = writeln!(w, "{}", output::json_object(&r));
                } else {
                    let g = |k: &str| r.get(k).unwrap_or("-").to_string();
                    let _ = writeln!(
                        w,
                        "{} {} {} {} by {}: {}",
                        g("seq"),
                        g("time"),
                        g("type"),
                        g("scope"),
                        g("author"),
                        g("summary")
                    );
                }
                let _ = w.flush();
            }
            Some(ResponseLine::Err(code, msg)) => return Err((code, msg)),
            Some(_) => {}
        }
    }
}

fn group(o: &Opts<'_>, timeout: Duration) -> CliResult {
    match o.rest[..] {
        ["list"] | [] => {
            let r = read(o, timeout, &["groups".to_string()])?;
            if o.json {
                println!("{}", output::json_array(&r.records));
            } else {
                print!(
                    "{}",
                    output::table(
                        &r.records,
                        &[
                            ("vcluster", "VCLUSTER"),
                            ("version", "VERSION"),
                            ("nodes", "NODES"),
                            ("deltas", "DELTAS"),
                            ("services", "SERVICES"),
                            ("policy", "POLICY")
                        ]
                    )
                );
            }
            Ok(0)
        }
        ["show", vc] => {
            let r = read(o, timeout, &["group".to_string(), vc.to_string()]).inspect_err(|e| {
                if o.json && e.0 == ExitCode::Invalid as i32 {
                    println!("null");
                }
            })?;
            let rec = r.records.first().cloned().unwrap_or_default();
            if o.json {
                let mut rec = rec;
                rec.push("overlay", String::from_utf8_lossy(&r.bodies.concat()));
                println!("{}", output::json_object(&rec));
            } else {
                println!(
                    "# vcluster {vc}: overlay version {}, checksum {}",
                    rec.get("version").unwrap_or("?"),
                    rec.get("checksum").unwrap_or("?")
                );
                println!(
                    "# nodes: {}",
                    rec.get("nodes")
                        .filter(|n| !n.is_empty())
                        .unwrap_or("(none)")
                );
                print!("{}", String::from_utf8_lossy(&r.bodies.concat()));
            }
            Ok(0)
        }
        ["set-policy", vc, path] => {
            let text = read_input(path)?;
            // Checked here first: errors name this file.
            crate::journal::machine::apply::parse_policy_named(path, vc, &text)
                .map_err(|e| (ExitCode::Invalid as i32, e))?;
            let words = vec!["set-policy".to_string(), vc.to_string()];
            write_report(o, timeout, words, Some(text.as_bytes()), |f| {
                println!(
                    "Policy of vcluster {vc} set (overlay version {}).",
                    f.get("version").unwrap_or("?")
                )
            })
        }
        _ => Err(usage(
            "pact group list | show <vcluster> | set-policy <vcluster> <policy.toml>",
        )),
    }
}

fn node(o: &Opts<'_>, timeout: Duration) -> CliResult {
    let words: Vec<String> = match o.rest[..] {
        ["assign", n, vc] => vec!["assign".into(), n.into(), vc.into()],
        ["unassign", n] => vec!["unassign".into(), n.into()],
        ["list"] | [] => return node_list(o, timeout, None),
        _ => {
            return Err(usage(
                "pact node assign <node> <vcluster> | unassign <node> | list [--vcluster V]",
            ))
        }
    };
    write_report(o, timeout, words, None, |f| {
        println!("ok (entry {})", f.get("seq").unwrap_or("?"))
    })
}

fn node_list(o: &Opts<'_>, timeout: Duration, node: Option<&str>) -> CliResult {
    let mut words = vec!["nodes".to_string()];
    if let Some(n) = node {
        words.push(format!("node={n}"));
    }
    if let Some(v) = o.value("--vcluster") {
        words.push(format!("vcluster={v}"));
    }
    let r = read(o, timeout, &words)?;
    if let (Some(n), None) = (node, r.records.first()) {
        return Err((
            ExitCode::Invalid as i32,
            format!("node {n} is unknown to the journal"),
        ));
    }
    if o.json {
        match node {
            Some(_) => println!(
                "{}",
                r.records
                    .first()
                    .map(output::json_object)
                    .unwrap_or_else(|| "null".into())
            ),
            None => println!("{}", output::json_array(&r.records)),
        }
    } else if node.is_some() {
        match r.records.first() {
            Some(rec) => print!("{}", output::key_values(rec)),
            None => {
                return Err((
                    ExitCode::Invalid as i32,
                    format!("node {} is unknown to the journal", node.unwrap_or("")),
                ))
            }
        }
    } else {
        print!(
            "{}",
            output::table(
                &r.records,
                &[
                    ("node", "NODE"),
                    ("vcluster", "VCLUSTER"),
                    ("state", "STATE"),
                    ("overlay_version", "OVERLAY"),
                    ("node_version", "DELTA"),
                    ("connected_here", "CONNECTED")
                ]
            )
        );
    }
    Ok(0)
}

/// `pact status NODE` or `pact status --vcluster X` (the journal's view).
fn status(o: &Opts<'_>, timeout: Duration) -> CliResult {
    no_extra(o, 1, "pact status [node] [--vcluster X]")?;
    match (o.rest.first(), o.value("--vcluster")) {
        (Some(n), _) => {
            let r = node_list(o, timeout, Some(n));
            if o.json && matches!(r, Err((3, _))) {
                // A node the journal does not know: null, and exit 3.
                println!("null");
            }
            r
        }
        (None, Some(_)) => node_list(o, timeout, None),
        (None, None) => Err(usage("pact status [node] [--vcluster X]")),
    }
}
