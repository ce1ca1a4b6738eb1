//! pact-testsvc: a small service for examples, tests and the boot image,
//! which has no shell. It does what its flags say, then sleeps until
//! SIGTERM (or forever with --ignore-term).
//!
//!   --ready-file PATH   write PATH once started
//!   --notify            send READY=1 to $NOTIFY_SOCKET   --status TEXT  with STATUS=
//!   --ready-fd          write a newline to fd $PACT_READY_FD
//!   --ready-delay SECS  wait before any readiness signal
//!   --print TEXT        print TEXT to stdout at start    --print-every SECS  and repeatedly
//!   --exit CODE         exit with CODE after --after SECS (default 0 s)
//!   --ignore-term       ignore SIGTERM
//!   --record FILE       append "<name> stopped" to FILE on SIGTERM
//!   --grandchild FILE   leave a setsid'ed double-forked grandchild; its pid in FILE
//!   --orphans N         make N orphans that exit at once (for the reaper)
//!   --http PORT         answer HTTP 200 on 127.0.0.1:PORT
//!   --tcp PORT          accept and close TCP on 127.0.0.1:PORT
//!   --serve-secs SECS   stop answering (close the listener) after SECS
//!   --alloc-mb N        allocate and touch N MiB (1 MiB per 10 ms)
//!   --alloc-file PATH   ... only once PATH exists
//!   --vmcheck           run the checks of the qemu test VM (see vmcheck.rs)
//!   --forks N           try to fork N sleeping children; print how many worked

mod vmcheck;

use std::io::{Read, Write};
use std::time::Duration;

#[derive(Default)]
struct Opts {
    ready_file: Option<String>,
    notify: bool,
    status: Option<String>,
    ready_fd: bool,
    ready_delay: f64,
    print: Option<String>,
    print_every: Option<f64>,
    exit: Option<i32>,
    after: f64,
    ignore_term: bool,
    record: Option<String>,
    grandchild: Option<String>,
    orphans: u32,
    http: Option<u16>,
    tcp: Option<u16>,
    serve_secs: Option<f64>,
    alloc_mb: u64,
    alloc_file: Option<String>,
    forks: u32,
    vmcheck: bool,
}

fn parse() -> Result<Opts, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Opts::default();
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("ready-file") => o.ready_file = Some(p.value()?.string()?),
            Long("notify") => o.notify = true,
            Long("status") => o.status = Some(p.value()?.string()?),
            Long("ready-fd") => o.ready_fd = true,
            Long("ready-delay") => o.ready_delay = p.value()?.parse()?,
            Long("print") => o.print = Some(p.value()?.string()?),
            Long("print-every") => o.print_every = Some(p.value()?.parse()?),
            Long("exit") => o.exit = Some(p.value()?.parse()?),
            Long("after") => o.after = p.value()?.parse()?,
            Long("ignore-term") => o.ignore_term = true,
            Long("record") => o.record = Some(p.value()?.string()?),
            Long("grandchild") => o.grandchild = Some(p.value()?.string()?),
            Long("orphans") => o.orphans = p.value()?.parse()?,
            Long("http") => o.http = Some(p.value()?.parse()?),
            Long("tcp") => o.tcp = Some(p.value()?.parse()?),
            Long("serve-secs") => o.serve_secs = Some(p.value()?.parse()?),
            Long("alloc-mb") => o.alloc_mb = p.value()?.parse()?,
            Long("forks") => o.forks = p.value()?.parse()?,
            Long("alloc-file") => o.alloc_file = Some(p.value()?.string()?),
            Long("vmcheck") => o.vmcheck = true,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(o)
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pact-testsvc: {e}");
            std::process::exit(2);
        }
    };
    if o.vmcheck {
        vmcheck::run();
    }
    let name = std::env::var("PACT_SERVICE").unwrap_or_else(|_| "testsvc".into());
    if !o.ignore_term {
        // Before anything else: a SIGTERM from now on waits for wait_loop.
        set_term_blocked(true);
    }
    if o.ignore_term {
        // SAFETY: setting a signal to be ignored.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    if let Some(t) = &o.print {
        println!("{t}");
    }
    if let Some(f) = &o.grandchild {
        leave_grandchild(f);
    }
    for _ in 0..o.orphans {
        make_orphan();
    }
    if o.forks > 0 {
        let ok = (0..o.forks).filter(|_| fork_sleeper()).count();
        println!("forks: {ok} of {}", o.forks);
    }
    if let Some(port) = o.http.or(o.tcp) {
        let http = o.http.is_some();
        let until = o
            .serve_secs
            .map(|s| std::time::Instant::now() + Duration::from_secs_f64(s));
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => {
                std::thread::spawn(move || serve(l, http, until));
            }
            Err(e) => {
                eprintln!("pact-testsvc: bind {port}: {e}");
                std::process::exit(3);
            }
        }
    }
    if o.alloc_mb > 0 && o.alloc_file.is_some() {
        // Ready now; allocate once the trigger file appears.
        let file = o.alloc_file.clone().unwrap_or_default();
        let mb = o.alloc_mb;
        std::thread::spawn(move || {
            while !std::path::Path::new(&file).exists() {
                std::thread::sleep(Duration::from_millis(100));
            }
            hog(mb);
        });
    } else if o.alloc_mb > 0 {
        hog(o.alloc_mb);
    }
    if o.ready_delay > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(o.ready_delay));
    }
    if let Some(f) = &o.ready_file {
        let _ = std::fs::write(f, format!("{}\n", std::process::id()));
    }
    if o.notify {
        notify(&o);
    }
    if o.ready_fd {
        if let Some(fd) = std::env::var("PACT_READY_FD")
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
        {
            // SAFETY: writing one byte to an inherited descriptor number.
            unsafe {
                libc::write(fd, b"\n".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
    }
    wait_loop(&o, &name);
}

/// Sleep until SIGTERM (or forever with --ignore-term), doing the timed
/// things on the way. SIGTERM is blocked and taken with sigtimedwait, so a
/// signal arriving at any moment is never missed.
fn wait_loop(o: &Opts, name: &str) {
    let start = std::time::Instant::now();
    let mut next_print = o.print_every;
    let set = term_set();
    loop {
        let elapsed = start.elapsed().as_secs_f64();
        if let Some(code) = o.exit {
            if elapsed >= o.after {
                std::process::exit(code);
            }
        }
        if let (Some(every), Some(at)) = (o.print_every, next_print) {
            if elapsed >= at {
                println!(
                    "{} tick {elapsed:.1}",
                    o.print.as_deref().unwrap_or("pact-testsvc")
                );
                next_print = Some(at + every);
            }
        }
        let due = [o.exit.map(|_| o.after), next_print]
            .into_iter()
            .flatten()
            .fold(f64::INFINITY, f64::min);
        let wait = (due - start.elapsed().as_secs_f64()).max(0.0);
        if o.ignore_term {
            if wait.is_finite() {
                std::thread::sleep(Duration::from_secs_f64(wait));
            } else {
                // SAFETY: pause() takes no arguments.
                unsafe { libc::pause() };
            }
            continue;
        }
        let ts = libc::timespec {
            tv_sec: wait.min(86_400.0) as libc::time_t,
            tv_nsec: (wait.fract() * 1e9) as libc::c_long,
        };
        // SAFETY: waits on the initialised set; info may be null.
        let sig = unsafe {
            if wait.is_finite() {
                libc::sigtimedwait(&set, std::ptr::null_mut(), &ts)
            } else {
                libc::sigwaitinfo(&set, std::ptr::null_mut())
            }
        };
        if sig == libc::SIGTERM {
            if let Some(f) = &o.record {
                if let Ok(mut file) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(f)
                {
                    let _ = writeln!(file, "{name} stopped");
                }
            }
            std::process::exit(0);
        }
    }
}

fn term_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Block (or unblock, in forked children) SIGTERM.
fn set_term_blocked(blocked: bool) {
    let set = term_set();
    let how = if blocked {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    // SAFETY: changes this thread's mask with an initialised set.
    unsafe { libc::sigprocmask(how, &set, std::ptr::null_mut()) };
}

/// Allocate and touch `mb` MiB, slowly enough for the OOM killer to act.
fn hog(mb: u64) {
    let mut hog: Vec<Vec<u8>> = Vec::new();
    for i in 0..mb {
        hog.push(vec![(i % 251) as u8 + 1; 1 << 20]);
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("allocated {mb} MiB");
    std::mem::forget(hog);
}

fn notify(o: &Opts) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        eprintln!("pact-testsvc: --notify without NOTIFY_SOCKET");
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pact-testsvc: socket: {e}");
            return;
        }
    };
    let mut msg = String::from("READY=1\n");
    if let Some(s) = &o.status {
        msg.push_str(&format!("STATUS={s}\n"));
    }
    if let Err(e) = sock.send_to(msg.as_bytes(), &path) {
        eprintln!("pact-testsvc: notify {path}: {e}");
    }
}

fn serve(l: std::net::TcpListener, http: bool, until: Option<std::time::Instant>) {
    if until.is_some() {
        let _ = l.set_nonblocking(true);
    }
    loop {
        if until.is_some_and(|t| std::time::Instant::now() >= t) {
            return; // dropping the listener: connections are refused from now on
        }
        match l.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                if http {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => return,
        }
    }
}

/// fork → setsid → fork: the grandchild is no longer our child nor in our
/// session; only its cgroup still holds it.
fn leave_grandchild(pidfile: &str) {
    // The process has started no threads yet.
    // SAFETY: after fork the children only make async-signal-safe calls.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            set_term_blocked(false);
            libc::setsid();
            let g = libc::fork();
            if g == 0 {
                let me = libc::getpid();
                let text = format!("{me}\n");
                let fd = libc::open(
                    std::ffi::CString::new(pidfile).expect("path").as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                    0o644,
                );
                if fd >= 0 {
                    libc::write(fd, text.as_ptr().cast(), text.len());
                    libc::close(fd);
                }
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                loop {
                    libc::pause();
                }
            }
            libc::_exit(0);
        }
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
    }
}

/// A child that forks a grandchild and exits: the grandchild exits at once
/// and, re-parented to PID 1 (or the subreaper), must be reaped there.
fn make_orphan() {
    // SAFETY: as in leave_grandchild.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            set_term_blocked(false);
            if libc::fork() == 0 {
                libc::usleep(20_000);
                libc::_exit(0);
            }
            libc::_exit(0);
        }
        if pid > 0 {
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
        }
    }
}

fn fork_sleeper() -> bool {
    // SAFETY: as in leave_grandchild.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            set_term_blocked(false);
            loop {
                libc::pause();
            }
        }
        pid > 0
    }
}
