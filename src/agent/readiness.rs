//! The readiness gate shared with the workload manager (hpc-node
//! contract): once every service that should run is running, the agent
//! writes `/run/pact/ready` and accepts connections on
//! `/run/pact/ready.sock`, answering `ready` to each. Before that, the
//! file does not exist and the socket refuses connections.

use std::io::{self, Write};
use std::path::Path;

/// Remove a stale gate left by an earlier run (before boot).
pub fn clear(file: &Path, socket: &Path) {
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(socket);
}

/// Write the ready file atomically.
pub fn mark_ready(file: &Path) -> io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("tmp");
    let ts =
        crate::util::time::rfc3339_ms(crate::util::time::unix_ms(std::time::SystemTime::now()));
    std::fs::write(&tmp, format!("ready {ts}\n"))?;
    std::fs::rename(&tmp, file)
}

/// The readiness socket: any local process may wait on it (mode 0666);
/// it says nothing but `ready`.
pub fn bind(socket: &Path) -> io::Result<mio::net::UnixListener> {
    crate::util::net::unix_listener(socket, 0o666)
}

/// Answer every waiting connection with `ready` and close it.
pub fn answer_all(listener: &mio::net::UnixListener) {
    loop {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.write_all(b"ready\n");
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// `ReadinessGate` for code in this process (and tests): the ready file
/// is the source of truth.
pub struct FileGate {
    pub file: std::path::PathBuf,
}

impl hpc_node::ReadinessGate for FileGate {
    fn is_ready(&self) -> bool {
        self.file.exists()
    }

    fn wait_ready(&self) -> Result<(), hpc_node::ReadinessError> {
        for _ in 0..600 {
            if self.is_ready() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err(hpc_node::ReadinessError::Timeout)
    }
}
