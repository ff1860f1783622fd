//! Checks and runners the Linux boot tests share (tests/linux_boot.rs boots the kernel
//! directly, tests/linux_disk_boot.rs through SeaBIOS from a disk): the answers `/init` must
//! print, the console check with the forbidden dmesg lines, a guest process run with a
//! deadline, and the optional QEMU reference.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::initramfs::busybox_initramfs;
use super::linux_guest::*;
use super::sha256::sha256_hex;
use super::{fixtures_dir, TempDir};

/// dmesg lines the issue forbids (arch/x86 warnings about missing or broken emulation);
/// "unstable" catches "Marking clocksource 'tsc' as unstable" and "TSC found unstable".
/// "MTRRs disabled" would mean the direct boot left the MTRRs as at power-up, which no BIOS
/// does (Linux then also turns PAT off).
pub const FORBIDDEN: [&str; 7] = [
    "unchecked MSR access",
    "invalid opcode",
    "APIC calibration not consistent",
    "IO-APIC + timer doesn't work",
    "unstable",
    "Fast TSC calibration failed",
    "MTRRs disabled",
];

/// The answers `/init` must print, computed here.
pub fn expected_answers(kernel_release: &str) -> Vec<(&'static str, String)> {
    let seq: String = (1..=SEQ_COUNT).map(|i| format!("{i}\n")).collect();
    let seq_hash = sha256_hex(seq.as_bytes());
    // Debian's busybox awk has no math library: only + - * / on doubles, parsing, printf.
    let mut s = 0f64;
    for i in 1..=AWK_TERMS {
        let i = f64::from(i);
        s += 1.0 / (i * i);
    }
    let awk = s * 6.0 - 2.5e-3 / 7.0;
    let mut x: i64 = 1;
    let mut values: Vec<i64> = (0..SORT_COUNT)
        .map(|_| {
            x = (x * 75 + 74) % 65537;
            x - 30000
        })
        .collect();
    values.sort();
    let sorted: String = values.iter().map(|v| format!("{v}\n")).collect();
    vec![
        ("UNAME", kernel_release.to_owned()),
        ("ZERO", sha256_hex(&vec![0u8; ZERO_MIB << 20])),
        ("SEQ", seq_hash.clone()),
        ("GUNZIP", seq_hash),
        ("AWK", format!("{awk:.9}")),
        ("SORT", sha256_hex(sorted.as_bytes())),
    ]
}

/// The value of the first `KEY=` line, up to the first space (`sha256sum` appends "  -").
pub fn answer<'a>(output: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    output.lines().find_map(|l| {
        let at = l.find(&prefix)?;
        l[at + prefix.len()..].split_whitespace().next()
    })
}

/// Whether forbidden dmesg lines fail the check or are only reported.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dmesg {
    /// pcvm: they mean an emulation gap.
    Forbid,
    /// The QEMU reference run: its TCG timing on a loaded host is not under test.
    Report,
}

/// Check everything `/init` printed; panics with the whole console on a mismatch.
pub fn check_console(console: &str, kernel_release: &str, dmesg_policy: Dmesg) {
    let fail = |what: String| -> ! { panic!("{what}\n--- console ---\n{console}") };
    if !console.contains(MARK_INIT) {
        fail(format!(
            "{MARK_INIT} missing: the kernel did not reach /init"
        ));
    }
    for (key, want) in expected_answers(kernel_release) {
        match answer(console, key) {
            Some(got) if got == want => {}
            got => fail(format!("{key}: got {got:?}, want {want:?}")),
        }
    }
    if !console.contains("GZIP-DIFFERS") {
        fail("cmp saw no difference between the file and its gzip".into());
    }
    let dmesg = match (console.find("DMESG-BEGIN"), console.find("DMESG-END")) {
        (Some(a), Some(b)) if a < b => &console[a..b],
        _ => fail("dmesg markers missing".into()),
    };
    if !dmesg.contains("Linux version") {
        fail("dmesg printed no kernel log".into());
    }
    let bad: Vec<&str> = dmesg
        .lines()
        .filter(|l| FORBIDDEN.iter().any(|f| l.contains(f)))
        .collect();
    if !bad.is_empty() {
        match dmesg_policy {
            Dmesg::Forbid => fail(format!("forbidden dmesg lines: {bad:#?}")),
            Dmesg::Report => eprintln!("note: dmesg lines forbidden for pcvm: {bad:#?}"),
        }
    }
    if !console.contains(MARK_DONE) {
        fail(format!("{MARK_DONE} missing"));
    }
}

/// The initramfs for this test in `dir`.
pub fn build_initramfs(dir: &TempDir, busybox: &Path) -> PathBuf {
    let bb = std::fs::read(busybox).expect("read busybox");
    let path = dir.path("initramfs.cpio.gz");
    std::fs::write(&path, busybox_initramfs(&bb, &init_script())).expect("write initramfs");
    path
}

/// Wall-clock limit per boot: `PCVM_LINUX_TIMEOUT` seconds, default 900.
pub fn boot_timeout() -> Duration {
    let secs = std::env::var("PCVM_LINUX_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    Duration::from_secs(secs)
}

/// How a guest run ended: exit status (None if killed at the deadline), console, stderr,
/// seconds taken.
pub struct Run {
    pub status: Option<i32>,
    pub console: String,
    pub stderr: String,
    pub secs: f64,
}

/// Run `cmd` with its stdout (the serial console) and stderr in files, killing it at `limit`.
pub fn run_with_limit(mut cmd: Command, dir: &TempDir, limit: Duration) -> Run {
    let out = std::fs::File::create(dir.path("console.txt")).expect("console file");
    let err = std::fs::File::create(dir.path("stderr.txt")).expect("stderr file");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn the VM");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |f: &str| {
        String::from_utf8_lossy(&std::fs::read(dir.path(f)).unwrap_or_default()).replace('\r', "")
    };
    Run {
        status,
        console: read("console.txt"),
        stderr: read("stderr.txt"),
        secs: start.elapsed().as_secs_f64(),
    }
}

pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// The interpreter's CPUID has what an x86-64 Linux requires (arch/x86/include/asm/
/// required-features.h: FPU, PAE, MSR, CX8, CMOV, FXSR, SSE, SSE2 and long mode); otherwise
/// print what is missing and skip. The interpreter boots run by themselves once it is all there.
pub fn interp_runs_x86_64_linux() -> bool {
    use pcvm_core::CpuBackend as _;
    let cpu = pcvm_cpu_interp::Interpreter::new();
    let edx1 = cpu.cpuid(1, 0).map_or(0, |r| r[3]);
    let mut missing: Vec<&str> = [
        (0, "FPU"),
        (5, "MSR"),
        (6, "PAE"),
        (8, "CX8"),
        (15, "CMOV"),
        (24, "FXSR"),
        (25, "SSE"),
        (26, "SSE2"),
    ]
    .iter()
    .filter(|(bit, _)| edx1 & (1 << bit) == 0)
    .map(|&(_, name)| name)
    .collect();
    if !cpu.supports_long_mode() {
        missing.push("LM");
    }
    if !missing.is_empty() {
        eprintln!(
            "skipped: the interpreter lacks what x86-64 Linux requires: {} (issue 4)",
            missing.join(", ")
        );
    }
    missing.is_empty()
}

/// QEMU and the `-L` firmware directories it needs: one on PATH (with its own data), else
/// the Debian packages unpacked by `fetch-fixtures qemu` (qemu-system-data's linuxboot_dma.bin
/// and kvmvapic.bin, SeaBIOS's bios-256k.bin and vgabios-stdvga.bin; the TCG module from
/// qemu-system-common through `QEMU_MODULE_DIR`, set by [`qemu_command`]).
pub fn qemu_binary() -> Option<(PathBuf, Vec<PathBuf>)> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("qemu-system-x86_64"))
            .find(|p| p.is_file())
    });
    if let Some(p) = on_path {
        return Some((p, Vec::new()));
    }
    let f = fixtures_dir();
    let unpacked = f.join("qemu/usr/bin/qemu-system-x86_64");
    unpacked.is_file().then(|| {
        let dirs = vec![
            f.join("qemu-data/usr/share/qemu"),
            f.join("seabios/usr/share/seabios"),
        ];
        (unpacked, dirs)
    })
}

/// A command running `qemu` with its firmware and module directories.
pub fn qemu_command(qemu: &(PathBuf, Vec<PathBuf>)) -> Command {
    let mut cmd = Command::new(&qemu.0);
    for dir in &qemu.1 {
        cmd.arg("-L").arg(dir);
    }
    if !qemu.1.is_empty() {
        let modules = fixtures_dir().join("qemu-common/usr/lib/x86_64-linux-gnu/qemu");
        cmd.env("QEMU_MODULE_DIR", modules);
    }
    cmd
}

/// Boot under `qemu-system-x86_64 -accel tcg -m <mem> <boot args>` with no display, reboot or
/// network (a reference for the guest script, the answers and the disk layout, never needed
/// by pcvm): print the time as `label`, check the answers (dmesg only reported, QEMU is not
/// held to pcvm's list) and a 0 exit.
pub fn qemu_tcg_boot_checked(
    qemu: &(PathBuf, Vec<PathBuf>),
    dir: &TempDir,
    label: &str,
    mem: &str,
    boot: &[&str],
    release: &str,
) -> Run {
    let mut cmd = qemu_command(qemu);
    cmd.args(["-accel", "tcg", "-m", mem]).args(boot).args([
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
    ]);
    let run = run_with_limit(cmd, dir, Duration::from_secs(300));
    eprintln!(
        "qemu tcg {label}: status {:?} after {:.1} s",
        run.status, run.secs
    );
    check_console(&run.console, release, Dmesg::Report);
    assert_eq!(run.status, Some(0), "qemu stderr:\n{}", run.stderr);
    run
}
