//! Write the busybox initramfs of tests/linux_boot.rs and print its kernel command line, so
//! scripts/bench-linux boots exactly what the tests boot; or, with `workload`, the initramfs of
//! scripts/bench-jit's CPU workload inside Linux (`gzip` and `sha256sum` over `seq 1 LINES`).
//!
//!     cargo run --release --example linux_initramfs -- BUSYBOX OUT.cpio.gz [poweroff|reboot]
//!     cargo run --release --example linux_initramfs -- BUSYBOX OUT.cpio.gz workload LINES
//!     cargo run --release --example linux_initramfs -- BUSYBOX OUT.cpio.gz script INIT.sh
//!
//! `script` packs your own /init (for profiling one program inside Linux).

#[allow(dead_code)]
#[path = "../tests/common/initramfs.rs"]
mod initramfs;
#[allow(dead_code)]
#[path = "../tests/common/linux_guest.rs"]
mod linux_guest;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: linux_initramfs BUSYBOX OUT.cpio.gz [poweroff|reboot|workload LINES|script INIT.sh]";
    let (busybox, out, end, script) = match args.as_slice() {
        [b, o] => (b, o, "poweroff", linux_guest::init_script()),
        [b, o, e] if e == "poweroff" || e == "reboot" => {
            (b, o, e.as_str(), linux_guest::init_script())
        }
        [b, o, w, n] if w == "workload" => {
            let lines = n.parse().with_context(|| format!("{usage}: bad LINES"))?;
            (b, o, "poweroff", linux_guest::workload_init_script(lines))
        }
        [b, o, s, path] if s == "script" => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read the init script {path}"))?;
            (b, o, "poweroff", text)
        }
        _ => bail!("{usage}"),
    };
    let bb = std::fs::read(busybox).with_context(|| format!("failed to read {busybox}"))?;
    let image = initramfs::busybox_initramfs(&bb, &script);
    std::fs::write(out, image).with_context(|| format!("failed to write {out}"))?;
    println!("{}", linux_guest::cmdline(end));
    Ok(())
}
