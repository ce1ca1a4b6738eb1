//! The client port's limits on a one-node cluster: connections, bodies,
//! lines, idle time; and configuration errors named by file, line and key.

#[path = "journal_support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Cluster, Options, JOURNAL};

const PACT: &str = env!("CARGO_BIN_EXE_pact");

fn line(s: &TcpStream) -> String {
    let mut l = String::new();
    let _ = BufReader::new(s).read_line(&mut l);
    l
}

fn connect(c: &Cluster) -> TcpStream {
    let s = TcpStream::connect(c.node(1).client).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

#[test]
fn journal_client_limits_are_explicit_errors() {
    let opts = Options {
        nodes: 1,
        clients_extra:
            "max_connections = 3\nidle_timeout_seconds = 1\nmax_body = 1024\nmax_line = 128".into(),
        raft_extra: "max_frame_bytes = \"4M\"".into(),
        ..Options::default()
    };
    let c = Cluster::start("limits", opts);
    c.wait_leader(&[1], Duration::from_secs(10));

    // Body over the limit: refused before it is read.
    let mut s = connect(&c);
    s.write_all(b"append +1025\n").unwrap();
    let l = line(&s);
    assert!(
        l.starts_with("err 3") && l.contains("exceeds the limit of 1024"),
        "{l}"
    );
    // Its body is skipped, never run as requests (it holds one here), and
    // the connection goes on: a body of exactly the limit is taken.
    let mut body = b"append +1\nX\n".to_vec();
    body.resize(1025, b'.');
    s.write_all(&body).unwrap();
    s.write_all(b"append +1024\n").unwrap();
    s.write_all(&[b'y'; 1024]).unwrap();
    s.write_all(b"range 0 100\n").unwrap();
    let mut r = BufReader::new(&s);
    let mut lines = Vec::new();
    // (The entry's body has no newline: `ok count=` ends its line.)
    while lines
        .last()
        .is_none_or(|l: &String| !l.contains("ok count="))
    {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 {
            break;
        }
        lines.push(l);
    }
    assert!(lines[0].starts_with("ok seq="), "{lines:?}");
    assert!(lines.last().unwrap().ends_with("ok count=1\n"), "{lines:?}");
    // A client's end of stream inside a request: the complete requests
    // before it are answered, the cut-off one is named, then the close.
    let s = connect(&c);
    (&s).write_all(b"status\nappend +5\nabc").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = String::new();
    BufReader::new(&s).read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("role=leader") && rest.contains("\nok\n"),
        "{rest}"
    );
    assert!(
        rest.ends_with("err 3 the connection ended inside a request (an unfinished line or body); it was not run\n"),
        "{rest}"
    );
    // The end of stream inside a refused (skipped) body: that request has
    // its one answer, then the close, at once.
    let s = connect(&c);
    (&s).write_all(b"append +5000\n0123456789").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let started = Instant::now();
    let mut rest = String::new();
    BufReader::new(&s).read_to_string(&mut rest).unwrap();
    assert_eq!(rest.lines().count(), 1, "{rest}");
    assert!(rest.contains("exceeds the limit of 1024"), "{rest}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "closed only by the idle timeout"
    );
    // The CLI, with a file over the limit: the refusal, not "indeterminate".
    let big = c.dir.join("big.bin");
    std::fs::write(&big, vec![b'z'; 200_000]).unwrap();
    let out = Command::new(PACT)
        .args(["--timeout", "20", "journal", "-e"])
        .arg(c.node(1).client.to_string())
        .arg("append")
        .arg(&big)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("exceeds the limit of 1024"), "{err}");
    // -e may also come before the command word.
    let out = Command::new(PACT)
        .arg("-e")
        .arg(c.node(1).client.to_string())
        .args(["journal", "status"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A node that accepts but never answers is left for the next endpoint
    // (a read waits a little over the server's request timeout), and the
    // timeout is named as one.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoints = format!("{},{}", hung.local_addr().unwrap(), c.node(1).client);
    let started = Instant::now();
    let out = Command::new(PACT)
        .args(["--timeout", "30", "journal", "-e", &endpoints, "get", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(out.stdout, vec![b'y'; 1024]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let out = Command::new(PACT)
        .args(["--timeout", "2", "journal", "-e"])
        .arg(hung.local_addr().unwrap().to_string())
        .arg("status")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("no answer within 2.0 s"), "{err}");
    // So does `watch`, which then keeps an eye on the journal's heartbeats.
    let started = Instant::now();
    let out = Command::new(PACT)
        .args(["--timeout", "2", "watch", "-e"])
        .arg(hung.local_addr().unwrap().to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("no answer to hello within 2.0 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(6));
    drop(hung);
    // A line over the limit: the connection lost framing and is closed.
    let mut s = connect(&c);
    s.write_all(&[b'a'; 300]).unwrap();
    let l = line(&s);
    assert!(
        l.starts_with("err 3") && l.contains("longer than 128"),
        "{l}"
    );
    // Unknown verbs and bad arguments are per-request errors.
    let mut s = connect(&c);
    s.write_all(
        b"frobnicate\nget x\nrange 5 1\nhello\nget\nrange 0 10 foo=1\nappend 5\nhello foo bar=1\n",
    )
    .unwrap();
    let mut r = BufReader::new(&s);
    let mut lines = Vec::new();
    for _ in 0..8 {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        lines.push(l);
    }
    assert!(lines[0].starts_with("err 3 unknown request"), "{lines:?}");
    assert!(lines[1].starts_with("err 3 seq \"x\""), "{lines:?}");
    assert!(lines[2].starts_with("err 3 range 5 1"), "{lines:?}");
    assert!(lines[3].starts_with("ok name=pact-journal"), "{lines:?}");
    assert_eq!(lines[4], "err 3 usage: get <seq>\n");
    assert_eq!(lines[5], "err 3 unknown option \"foo\" (options: limit)\n");
    assert_eq!(lines[6], "err 3 usage: append +<len>, then <len> bytes\n");
    assert_eq!(lines[7], "err 3 usage: hello\n");

    // Connection limit: the fourth is told so.
    let held: Vec<TcpStream> = (0..3).map(|_| connect(&c)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let extra = connect(&c);
    let l = line(&extra);
    assert!(l.starts_with("err 5 too many connections (limit 3)"), "{l}");
    // Idle connections are closed after idle_timeout_seconds.
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let mut first = &held[0];
    assert_eq!(first.read(&mut buf).unwrap_or(0), 0, "expected EOF");
    assert!(started.elapsed() < Duration::from_secs(4));
    drop(held);
}

#[test]
fn journal_config_errors_name_the_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("pact-jtest-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("journal.toml");
    std::fs::write(
        &path,
        "[journal]\nnode_id = 1\n\n[journal.raft]\nmembers = [\"1:127.0.0.1:9444\"]\nsnapshot_intervall = 5\n",
    )
    .unwrap();
    let out = Command::new(JOURNAL)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let want = format!("{}:6: journal.raft.snapshot_intervall", path.display());
    assert!(err.contains(&want), "{err}");
    // The environment names the node; a bad value is refused clearly.
    std::fs::write(&path, "[journal.raft]\nmembers = [\"1:127.0.0.1:9444\"]\n").unwrap();
    let out = Command::new(JOURNAL)
        .arg("--config")
        .arg(&path)
        .env("PACT_JOURNAL_NODE_ID", "zero")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("\"zero\" is not a node id"), "{err}");
    let out = Command::new(JOURNAL).args(["--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Idle sockets on the Raft port (a scanner, a stuck health check) are
/// closed when they do not greet in time, and make room for a member's
/// connection before that: a restarted node rejoins although every
/// connection slot of its peers was taken.
#[test]
fn journal_idle_raft_connections_cannot_keep_a_member_out() {
    let opts = Options {
        nodes: 3,
        raft_extra: "max_peer_connections = 8".into(),
        ..Options::default()
    };
    let mut c = Cluster::start("raftslots", opts);
    c.wait_leader(&[1, 2, 3], Duration::from_secs(15));
    let mut client = c.any_client(Duration::from_secs(10));
    client.append(b"before").unwrap();
    c.kill9(3);
    // Every slot of nodes 1 and 2 taken by sockets that never greet.
    let idle: Vec<TcpStream> = [1u64, 2]
        .iter()
        .flat_map(|&id| (0..8).map(move |_| id))
        .map(|id| TcpStream::connect(c.node(id).raft).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    c.spawn(3, false);
    let seq = client.append(b"after").unwrap();
    let applied = c.wait_converged(&[1, 2, 3], seq + 1, Duration::from_secs(10));
    assert!(applied > seq, "{}", c.logs());
    // The idle ones are closed once the Hello deadline has passed.
    let started = Instant::now();
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 16];
        let n = s.read(&mut b);
        assert!(
            matches!(n, Ok(0))
                || n.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "an idle Raft connection was not closed: {n:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let logs = c.logs();
    assert!(
        logs.contains("no Hello within 2000 ms") || logs.contains("has not greeted; making room"),
        "{logs}"
    );
}
