//! Write the busybox initramfs of tests/linux_boot.rs and print its kernel command line, so
//! scripts/bench-linux boots exactly what the tests boot.
//!
//!     cargo run --release --example linux_initramfs -- BUSYBOX OUT.cpio.gz [poweroff|reboot]

#[allow(dead_code)]
#[path = "../tests/common/initramfs.rs"]
mod initramfs;
#[allow(dead_code)]
#[path = "../tests/common/linux_guest.rs"]
mod linux_guest;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (busybox, out, end) = match args.as_slice() {
        [b, o] => (b, o, "poweroff"),
        [b, o, e] if e == "poweroff" || e == "reboot" => (b, o, e.as_str()),
        _ => bail!("usage: linux_initramfs BUSYBOX OUT.cpio.gz [poweroff|reboot]"),
    };
    let bb = std::fs::read(busybox).with_context(|| format!("failed to read {busybox}"))?;
    let image = initramfs::busybox_initramfs(&bb, &linux_guest::init_script());
    std::fs::write(out, image).with_context(|| format!("failed to write {out}"))?;
    println!("{}", linux_guest::cmdline(end));
    Ok(())
}
