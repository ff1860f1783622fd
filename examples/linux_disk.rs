//! Write the raw disk tests/linux_disk_boot.rs boots through SeaBIOS: our boot loader
//! (tests/common/linux_loader.rs), the kernel command line of tests/linux_boot.rs, KERNEL
//! and the busybox initramfs, so the disk boot can be run and timed by hand:
//!
//!     cargo run --release --example linux_disk -- KERNEL BUSYBOX OUT.img [poweroff|reboot]
//!     pcvm -bios bios-256k.bin -m 1G -drive file=OUT.img,format=raw -nographic -no-reboot

#[allow(dead_code)]
#[path = "../tests/common/initramfs.rs"]
mod initramfs;
#[allow(dead_code)]
#[path = "../tests/common/linux_guest.rs"]
mod linux_guest;
#[allow(dead_code)]
#[path = "../tests/common/linux_loader.rs"]
mod linux_loader;

use anyhow::{anyhow, bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kernel, busybox, out, end) = match args.as_slice() {
        [k, b, o] => (k, b, o, "poweroff"),
        [k, b, o, e] if e == "poweroff" || e == "reboot" => (k, b, o, e.as_str()),
        _ => bail!("usage: linux_disk KERNEL BUSYBOX OUT.img [poweroff|reboot]"),
    };
    let read = |p: &String| std::fs::read(p).with_context(|| format!("failed to read {p}"));
    let initrd = initramfs::busybox_initramfs(&read(busybox)?, &linux_guest::init_script());
    let disk = linux_loader::linux_disk_image(&read(kernel)?, &initrd, &linux_guest::cmdline(end))
        .map_err(|e| anyhow!("{kernel}: {e}"))?;
    std::fs::write(out, disk).with_context(|| format!("failed to write {out}"))?;
    Ok(())
}
