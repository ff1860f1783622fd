//! gdb 13 against Debian's Linux 6.1 kernel under the interpreter (issue 6, "Must show" 2).
//!
//! Debian's System.map is a placeholder, so the address of `start_kernel` comes from the guest
//! itself: a first boot whose `/init` prints `grep -w start_kernel /proc/kallsyms` (with
//! `nokaslr` the kernel sits at the same address every boot). A second boot starts paused
//! (`-S`) with gdb attached; gdb breaks at that address, continues to it, shows the registers,
//! disassembles ten instructions, steps one, and continues until the guest's `/init` prints its
//! marker and powers off.

mod common;
mod gdb_common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::initramfs::busybox_initramfs;
use common::{busybox_static, linux_kernel, TempDir};
use gdb_common::{marked_values, run_gdb_with_timeout};

/// `/init` of the second boot prints this once user space runs.
const MARK_INIT: &str = "PCVM-GDB-INIT";

/// Wall-clock limit of one boot (`PCVM_LINUX_TIMEOUT` seconds, default 900): the interpreter
/// boots this kernel in about two minutes on an idle core.
fn boot_limit() -> Duration {
    let secs = std::env::var("PCVM_LINUX_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    Duration::from_secs(secs)
}

/// Debian's vmlinuz and busybox-static from the fixtures (skips loudly when absent).
fn fixtures() -> Option<(PathBuf, PathBuf)> {
    Some((linux_kernel()?.0, busybox_static()?))
}

/// A pcvm booting `kernel` with an initramfs whose `/init` runs `body` then powers off.
fn spawn_linux(dir: &TempDir, kernel: &Path, busybox: &Path, body: &str, extra: &[&str]) -> Child {
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox --install -s\nexport PATH=/bin:/sbin\n\
         mount -t proc proc /proc\n{body}\npoweroff -f\n"
    );
    let bb = std::fs::read(busybox).expect("read busybox");
    let initrd = dir.path("initramfs.cpio.gz");
    std::fs::write(&initrd, busybox_initramfs(&bb, &init)).expect("write initramfs");
    Command::new(env!("CARGO_BIN_EXE_pcvm"))
        .env("RUST_LOG", "warn")
        .args(["-m", "512M", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 nokaslr panic=-1 quiet"])
        .args(["-nographic", "-no-reboot", "--accel", "interp"])
        .args(["--timeout", &boot_limit().as_secs().to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pcvm")
}

/// Wait for `child` (at most the boot limit) and return its exit code, console and stderr.
fn finish(mut child: Child) -> (Option<i32>, String, String) {
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        String::from_utf8_lossy(&s).replace('\r', "")
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + boot_limit() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait pcvm") {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status,
        out_thread.join().unwrap_or_default(),
        err_thread.join().unwrap_or_default(),
    )
}

/// The address `/proc/kallsyms` gives `start_kernel` ("ffffffff8xxxxxxx T start_kernel").
fn start_kernel_address(console: &str) -> Option<u64> {
    console.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let addr = f.next()?;
        let kind = f.next()?;
        let name = f.next()?;
        (name == "start_kernel" && kind.eq_ignore_ascii_case("t"))
            .then(|| u64::from_str_radix(addr, 16).ok())
            .flatten()
    })
}

/// A TCP port free right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Addresses of the instruction lines `x/Ni` printed ("=> 0x…:" or "   0x…:").
fn disassembly_addresses(out: &str) -> Vec<(u64, String)> {
    out.lines()
        .filter_map(|l| {
            let t = l.trim_start_matches("=>").trim_start();
            let rest = t.strip_prefix("0x")?;
            let (hex, tail) = rest.split_once(':')?;
            let hex = hex.split_whitespace().next()?;
            Some((u64::from_str_radix(hex, 16).ok()?, tail.trim().to_string()))
        })
        .collect()
}

#[test]
fn break_at_start_kernel_step_and_continue_to_init() {
    let Some(gdb) = gdb_common::gdb() else { return };
    let Some((kernel, busybox)) = fixtures() else {
        return;
    };

    // Boot 1: where is start_kernel?
    let dir = TempDir::new("gdb-linux-kallsyms");
    let child = spawn_linux(
        &dir,
        &kernel,
        &busybox,
        "grep -w start_kernel /proc/kallsyms",
        &[],
    );
    let (status, console, stderr) = finish(child);
    assert_eq!(
        status,
        Some(0),
        "first boot: stderr:\n{stderr}\nconsole:\n{console}"
    );
    let addr = start_kernel_address(&console)
        .unwrap_or_else(|| panic!("no start_kernel in /proc/kallsyms output:\n{console}"));
    assert!(
        addr >= 0xFFFF_FFFF_8000_0000,
        "kernel text address {addr:#x}"
    );
    eprintln!("start_kernel at {addr:#x} (from the guest's /proc/kallsyms)");

    // Boot 2: paused at the kernel entry, gdb attached.
    let dir = TempDir::new("gdb-linux-session");
    let port = free_port();
    let child = spawn_linux(
        &dir,
        &kernel,
        &busybox,
        &format!("echo {MARK_INIT}"),
        &["-S", "-gdb", &format!("tcp:127.0.0.1:{port},arch=x86-64")],
    );
    let brk = format!("break *{addr:#x}");
    let out = run_gdb_with_timeout(
        &gdb,
        None,
        &format!("127.0.0.1:{port}"),
        &[
            &brk,
            "continue",
            "echo M-PC\\n",
            "p/x $pc",
            "info registers",
            "echo M-DIS\\n",
            "x/10i $pc",
            "echo M-DIS-END\\n",
            "stepi",
            "echo M-PC\\n",
            "p/x $pc",
            "delete",
            "continue",
        ],
        None,
        boot_limit(),
    )
    .all();
    let (status, console, stderr) = finish(child);

    let pcs = marked_values(&out, "M-PC");
    assert_eq!(pcs.first(), Some(&addr), "stopped at start_kernel\n{out}");
    // `info registers`: the 64-bit layout, kernel code segment, the breakpoint address.
    assert!(
        out.lines()
            .any(|l| l.starts_with("rip") && l.contains(&format!("{addr:#x}"))),
        "info registers shows rip = start_kernel\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("cs") && l.contains("0x10")),
        "kernel CS 0x10\n{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("r15")),
        "x86-64 registers\n{out}"
    );
    // `x/10i $pc`: ten instructions starting at start_kernel.
    let dis = out
        .split("M-DIS\n")
        .nth(1)
        .and_then(|s| s.split("M-DIS-END").next())
        .unwrap_or("");
    let insns = disassembly_addresses(dis);
    assert_eq!(insns.len(), 10, "ten instructions\n{dis}");
    assert_eq!(insns[0].0, addr, "disassembly starts at $pc\n{dis}");
    assert!(
        insns
            .windows(2)
            .all(|w| w[1].0 > w[0].0 && w[1].0 - w[0].0 <= 15),
        "consecutive instructions\n{dis}"
    );
    // `stepi`: the next instruction, unless the first one transfers control.
    let after = *pcs
        .get(1)
        .unwrap_or_else(|| panic!("no pc after stepi\n{out}"));
    let first = &insns[0].1;
    if first.starts_with("call") || first.starts_with("jmp") {
        // A direct transfer: stepi lands on its target.
        let target = first
            .split_whitespace()
            .nth(1)
            .and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok());
        match target {
            Some(t) => assert_eq!(after, t, "stepi followed `{first}`\n{out}"),
            None => assert_ne!(after, addr, "stepi moved\n{out}"),
        }
    } else {
        assert_eq!(after, insns[1].0, "stepi ran exactly `{first}`\n{out}");
    }
    // `continue` runs the kernel on to /init, which powers the machine off.
    assert!(
        console.contains(MARK_INIT),
        "/init ran after continue; gdb:\n{out}\nconsole:\n{console}\nstderr:\n{stderr}"
    );
    assert_eq!(
        status,
        Some(0),
        "power-off ends pcvm with 0; stderr:\n{stderr}"
    );
}
