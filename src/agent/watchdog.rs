//! The hardware watchdog (`/dev/watchdog`).
//!
//! Used as PID 1 (or with `[agent.watchdog] force = true`). The timeout is
//! set with `WDIOC_SETTIMEOUT` and the device is petted by a timer of the
//! agent's own event loop, every third of the timeout: if the loop hangs,
//! the pets stop and the board resets the node. A missing device or
//! `EBUSY` means running without, logged once.
//!
//! On shutdown the timeout is re-armed to the (longer) shutdown timeout
//! and petting stops, so a shutdown that hangs still ends in a reset. A
//! clean shutdown disarms the device with the magic close (`V`) just
//! before reboot(2), so a planned reboot is not a watchdog reset.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// When to pet, as a pure schedule.
#[derive(Debug, Clone)]
pub struct PetSchedule {
    interval: Duration,
    next: Option<Instant>,
}

impl PetSchedule {
    /// Pets every third of `timeout` (comfortably within the "at least
    /// every timeout/2" rule, even with a busy loop).
    pub fn new(timeout: Duration, now: Instant) -> PetSchedule {
        let interval = (timeout / 3).max(Duration::from_millis(100));
        PetSchedule {
            interval,
            next: Some(now),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn due(&self, now: Instant) -> bool {
        self.next.is_some_and(|t| t <= now)
    }

    pub fn petted(&mut self, now: Instant) {
        if self.next.is_some() {
            self.next = Some(now + self.interval);
        }
    }

    /// No more pets (shutdown path).
    pub fn stop(&mut self) {
        self.next = None;
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.next
    }
}

// ioctl numbers of linux/watchdog.h: _IOR/_IOWR('W', n, int).
const WDIOC_GETSUPPORT: libc::c_ulong = 0x8028_5700;
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;
const WDIOC_GETTIMEOUT: libc::c_ulong = 0x8004_5707;

pub struct Watchdog {
    file: File,
    pub identity: String,
    pub timeout: u32,
    pub schedule: PetSchedule,
    pub pets: u64,
}

impl Watchdog {
    /// Open and arm the device. `Ok(None)` when there is none (or it is
    /// busy): the agent goes on without.
    pub fn open(device: &Path, timeout_secs: u32, now: Instant) -> io::Result<Option<Watchdog>> {
        let file = match std::fs::OpenOptions::new().write(true).open(device) {
            Ok(f) => f,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::EBUSY) | Some(libc::ENODEV)
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let identity = support_identity(&file).unwrap_or_else(|| "watchdog".to_string());
        let mut wd = Watchdog {
            file,
            identity,
            timeout: timeout_secs,
            schedule: PetSchedule::new(Duration::from_secs(timeout_secs.into()), now),
            pets: 0,
        };
        match wd.set_timeout(timeout_secs) {
            Ok(actual) => {
                wd.timeout = actual;
                wd.schedule = PetSchedule::new(Duration::from_secs(actual.into()), now);
            }
            Err(e) => {
                // Keep the driver's own timeout, and pet for it.
                let actual = wd.get_timeout().unwrap_or(timeout_secs);
                log::warn!(target: "agent::watchdog", "cannot set the timeout to {timeout_secs}s ({e}); the device uses {actual}s");
                wd.timeout = actual;
                wd.schedule = PetSchedule::new(Duration::from_secs(actual.into()), now);
            }
        }
        wd.pet(now);
        Ok(Some(wd))
    }

    fn set_timeout(&self, secs: u32) -> io::Result<u32> {
        let mut v: libc::c_int = secs as libc::c_int;
        // SAFETY: WDIOC_SETTIMEOUT reads and writes one int at the pointer.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), WDIOC_SETTIMEOUT, &mut v) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(v.max(1) as u32)
    }

    fn get_timeout(&self) -> Option<u32> {
        let mut v: libc::c_int = 0;
        // SAFETY: WDIOC_GETTIMEOUT writes one int at the pointer.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), WDIOC_GETTIMEOUT, &mut v) };
        (rc == 0 && v > 0).then_some(v as u32)
    }

    /// Pet the device (any write but `V`).
    pub fn pet(&mut self, now: Instant) {
        match self.file.write_all(b"k") {
            Ok(_) => {
                self.pets += 1;
                self.schedule.petted(now);
            }
            Err(e) => {
                log::error!(target: "agent::watchdog", "pet failed: {e}");
                self.schedule.petted(now);
            }
        }
    }

    /// Shutdown: a longer timeout, one pet, then no more pets.
    pub fn arm_for_shutdown(&mut self, timeout_secs: u32, now: Instant) {
        match self.set_timeout(timeout_secs) {
            Ok(actual) => {
                log::info!(target: "agent::watchdog", "shutdown: watchdog re-armed to {actual}s")
            }
            Err(e) => {
                log::warn!(target: "agent::watchdog", "shutdown: cannot re-arm to {timeout_secs}s: {e}")
            }
        }
        self.pet(now);
        self.schedule.stop();
    }

    /// The magic close: the driver disarms instead of resetting.
    pub fn disarm(mut self) {
        match self.file.write_all(b"V") {
            Ok(_) => log::info!(target: "agent::watchdog", "watchdog disarmed (magic close)"),
            Err(e) => log::warn!(target: "agent::watchdog", "magic close failed: {e}"),
        }
    }
}

/// The identity string of `WDIOC_GETSUPPORT` (struct watchdog_info).
fn support_identity(file: &File) -> Option<String> {
    let mut info = [0u8; 40];
    // SAFETY: WDIOC_GETSUPPORT fills a 40-byte struct watchdog_info.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), WDIOC_GETSUPPORT, info.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    let id = &info[8..40];
    let end = id.iter().position(|&b| b == 0).unwrap_or(id.len());
    Some(String::from_utf8_lossy(&id[..end]).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pets_every_third_of_the_timeout_until_stopped() {
        let t0 = Instant::now();
        let mut s = PetSchedule::new(Duration::from_secs(60), t0);
        assert!(s.due(t0));
        s.petted(t0);
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(20)));
        assert!(!s.due(t0 + Duration::from_secs(19)));
        assert!(s.due(t0 + Duration::from_secs(20)));
        // Never more than timeout/2 between pets.
        assert!(s.interval() <= Duration::from_secs(30));
        s.stop();
        assert_eq!(s.next_deadline(), None);
        s.petted(t0);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn missing_device_means_no_watchdog() {
        let r = Watchdog::open(Path::new("/nonexistent/watchdog"), 60, Instant::now()).unwrap();
        assert!(r.is_none());
    }
}
