//! The qemu command line of the boot tests and the boot benchmark: the
//! `make image` kernel and initrd, software emulation, the i6300esb
//! watchdog (a reset ends qemu, as does a power-off), the serial console
//! on stdout.

use std::path::Path;
use std::process::Command;

pub fn qemu(img: &Path, scenario: &str, smp: &str) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        "tcg",
        "-M",
        "pc",
        "-smp",
        smp,
        "-m",
        "512M",
        "-nodefaults",
        "-no-user-config",
    ])
    .args([
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-action",
        "watchdog=reset",
    ])
    .arg("-kernel")
    .arg(img.join("vmlinux"))
    .arg("-initrd")
    .arg(img.join("initrd"))
    .arg("-append")
    .arg(format!("console=ttyS0 quiet panic=-1 pact.test={scenario}"))
    .args(["-device", "i6300esb"]);
    c
}
