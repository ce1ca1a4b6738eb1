//! Service output: stdout and stderr of each service go to
//! `<log_dir>/<svc>.log`, rotated by size to `<svc>.log.1` ... `.N`, and
//! the last lines stay in memory for `service logs`.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest line kept in memory; longer lines are cut (the file keeps all).
const MAX_LINE: usize = 2048;

pub struct LogStore {
    dir: PathBuf,
    max_bytes: u64,
    keep: u32,
    tail_lines: usize,
    logs: HashMap<String, ServiceLog>,
}

#[derive(Default)]
struct ServiceLog {
    file: Option<File>,
    size: u64,
    tail: VecDeque<String>,
    partial: Vec<u8>,
    failed: bool,
}

impl LogStore {
    pub fn new(dir: &Path, max_bytes: u64, keep: u32, tail_lines: usize) -> LogStore {
        if let Err(e) = fs::create_dir_all(dir) {
            log::warn!(target: "agent::logs", "cannot create {}: {e}; service output is kept in memory only", dir.display());
        }
        LogStore {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(4096),
            keep,
            tail_lines: tail_lines.max(1),
            logs: HashMap::new(),
        }
    }

    pub fn path(&self, service: &str) -> PathBuf {
        self.dir.join(format!("{service}.log"))
    }

    /// Append raw output; returns the lines it completed (for followers).
    pub fn append(&mut self, service: &str, bytes: &[u8]) -> Vec<String> {
        self.write_file(service, bytes);
        let tail_lines = self.tail_lines;
        let log = self.logs.entry(service.to_string()).or_default();
        log.partial.extend_from_slice(bytes);
        let mut done = Vec::new();
        while let Some(nl) = log.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = log.partial.drain(..=nl).collect();
            done.push(clip(&line[..nl]));
        }
        if log.partial.len() > MAX_LINE {
            // A line without end: keep it as a line of its own.
            let line: Vec<u8> = std::mem::take(&mut log.partial);
            done.push(clip(&line));
        }
        for l in &done {
            if log.tail.len() == tail_lines {
                log.tail.pop_front();
            }
            log.tail.push_back(l.clone());
        }
        done
    }

    /// A line written by the agent itself about the service.
    pub fn note(&mut self, service: &str, message: &str) -> Vec<String> {
        let ts =
            crate::util::time::rfc3339_ms(crate::util::time::unix_ms(std::time::SystemTime::now()));
        let line = format!("[pact-agent {ts}] {message}\n");
        self.append(service, line.as_bytes())
    }

    /// The last `n` lines in memory.
    pub fn tail(&self, service: &str, n: usize) -> Vec<String> {
        self.logs
            .get(service)
            .map(|l| {
                l.tail
                    .iter()
                    .skip(l.tail.len().saturating_sub(n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn write_file(&mut self, service: &str, bytes: &[u8]) {
        let path = self.path(service);
        let (max, keep) = (self.max_bytes, self.keep);
        let log = self.logs.entry(service.to_string()).or_default();
        if log.failed {
            return;
        }
        if log.file.is_none() {
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => {
                    log.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    log.file = Some(f);
                }
                Err(e) => {
                    log::warn!(target: "agent::logs", "cannot open {}: {e}", path.display());
                    log.failed = true;
                    return;
                }
            }
        }
        if log.size + bytes.len() as u64 > max {
            log.file = None;
            rotate(&path, keep);
            match OpenOptions::new()
                .create(true)
                .append(true)
                .truncate(false)
                .open(&path)
            {
                Ok(f) => {
                    log.file = Some(f);
                    log.size = 0;
                }
                Err(e) => {
                    log::warn!(target: "agent::logs", "cannot reopen {}: {e}", path.display());
                    log.failed = true;
                    return;
                }
            }
        }
        if let Some(f) = &mut log.file {
            match f.write_all(bytes) {
                Ok(()) => log.size += bytes.len() as u64,
                Err(e) => {
                    // A full /run must not stop the service or the agent.
                    log::warn!(target: "agent::logs", "cannot write {}: {e}", path.display());
                }
            }
        }
    }
}

/// `x.log.(k-1)` → `x.log.k` ..., `x.log` → `x.log.1`; with `keep` = 0 the
/// file is simply truncated.
fn rotate(path: &Path, keep: u32) {
    let numbered = |k: u32| PathBuf::from(format!("{}.{k}", path.display()));
    if keep == 0 {
        let _ = fs::remove_file(path);
        return;
    }
    let _ = fs::remove_file(numbered(keep));
    for k in (1..keep).rev() {
        let _ = fs::rename(numbered(k), numbered(k + 1));
    }
    let _ = fs::rename(path, numbered(1));
}

fn clip(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let cut = &line[..line.len().min(MAX_LINE)];
    String::from_utf8_lossy(cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pact-logs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn lines_tail_and_partial() {
        let dir = tmp("tail");
        let mut s = LogStore::new(&dir, 1 << 20, 2, 3);
        assert_eq!(s.append("a", b"one\ntw"), ["one"]);
        assert_eq!(s.append("a", b"o\nthree\nfour\n"), ["two", "three", "four"]);
        assert_eq!(s.tail("a", 10), ["two", "three", "four"]);
        assert_eq!(s.tail("a", 1), ["four"]);
        assert_eq!(
            fs::read_to_string(s.path("a")).unwrap(),
            "one\ntwo\nthree\nfour\n"
        );
        assert!(s.note("a", "started")[0].contains("] started"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rotation_by_size() {
        let dir = tmp("rot");
        let mut s = LogStore::new(&dir, 4096, 2, 10);
        let chunk = vec![b'x'; 1000];
        for _ in 0..15 {
            s.append("b", &chunk);
        }
        let p = s.path("b");
        assert!(fs::metadata(&p).unwrap().len() <= 4096);
        assert!(Path::new(&format!("{}.1", p.display())).exists());
        assert!(Path::new(&format!("{}.2", p.display())).exists());
        assert!(!Path::new(&format!("{}.3", p.display())).exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn endless_line_is_cut() {
        let dir = tmp("cut");
        let mut s = LogStore::new(&dir, 1 << 20, 1, 10);
        let out = s.append("c", &vec![b'y'; MAX_LINE + 10]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), MAX_LINE);
        fs::remove_dir_all(dir).unwrap();
    }
}
