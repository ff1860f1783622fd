//! Debian's Linux 6.1 (linux-image-6.1.*-amd64) booted directly (`-kernel`, `-initrd`,
//! `-append`) with a busybox initramfs built here. `/init` prints a marker, runs commands whose
//! output is checked against answers computed on the host (`uname -r`, `sha256sum` of data the
//! guest generates, a `gzip | gunzip` round trip, `awk` floating point, `sort -n`), prints
//! `dmesg` for the forbidden warnings, and ends with `poweroff -f` (ACPI S5: exit 0) or
//! `reboot -f` (with `-no-reboot`: exit 0).
//!
//! The same initramfs and checks run under `qemu-system-x86_64 -accel tcg` when it is
//! installed, which proves the script and the expected answers independently of pcvm. The
//! interpreter boots skip (saying what is missing) while the interpreter's CPUID lacks part of
//! the x86-64 baseline Linux requires; each takes minutes once it is complete (`PCVM_LINUX_TIMEOUT` bounds a boot, default 900 s).

mod common;

use std::process::Command;
use std::time::Duration;

use common::linux_checks::*;
use common::linux_guest::*;
use common::{busybox_static, linux_kernel, TempDir};

/// Boot under pcvm with `accel`, `mem` of RAM and `end` (`poweroff`/`reboot`); check the
/// answers and that pcvm exits 0.
fn boot_pcvm(accel: &str, mem: &str, end: &str) {
    boot_pcvm_with(&["--accel", accel], mem, end);
}

/// [`boot_pcvm`] with backend options `backend` (e.g. `--accel kvm --irqchip kernel`).
fn boot_pcvm_with(backend: &[&str], mem: &str, end: &str) {
    let accel = backend.join(" ");
    let (Some((vmlinuz, release)), Some(bb)) = (linux_kernel(), busybox_static()) else {
        return;
    };
    let dir = TempDir::new(&format!("linux-{mem}-{end}"));
    let initrd = build_initramfs(&dir, &bb);
    let limit = boot_timeout();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pcvm"));
    cmd.env("RUST_LOG", "warn").args([
        "-m",
        mem,
        "-kernel",
        vmlinuz.to_str().expect("UTF-8 path"),
        "-initrd",
        initrd.to_str().expect("UTF-8 path"),
        "-append",
        &cmdline(end),
        "-nographic",
        "-no-reboot",
        "--timeout",
        &limit.as_secs().to_string(),
    ]);
    cmd.args(backend);
    let run = run_with_limit(cmd, &dir, limit + Duration::from_secs(30));
    eprintln!(
        "pcvm {accel} -m {mem} ({end}): status {:?} after {:.1} s",
        run.status, run.secs
    );
    if run.status != Some(0) {
        eprintln!("pcvm stderr:\n{}", run.stderr);
    }
    check_console(&run.console, &release, Dmesg::Forbid);
    assert_eq!(
        run.status,
        Some(0),
        "pcvm exit status; stderr:\n{}\nconsole tail:\n{}",
        run.stderr,
        tail(&run.console, 30)
    );
}

#[test]
fn interp_1g_poweroff() {
    if interp_runs_x86_64_linux() {
        boot_pcvm("interp", "1G", "poweroff");
    }
}

#[test]
fn interp_3g_poweroff() {
    if interp_runs_x86_64_linux() {
        boot_pcvm("interp", "3G", "poweroff");
    }
}

#[test]
fn interp_reboot_with_no_reboot_exits() {
    if interp_runs_x86_64_linux() {
        boot_pcvm("interp", "1G", "reboot");
    }
}

/// The JIT (`--accel jit`, issue 7): the same boot and checked answers; it runs 64-bit code in
/// its interpreter until the translator covers it, so it needs what the interpreter needs.
#[test]
fn jit_1g_poweroff() {
    if interp_runs_x86_64_linux() {
        boot_pcvm("jit", "1G", "poweroff");
    }
}

/// KVM is hardware-backed and usable; otherwise print why the KVM boots skip (a software
/// /dev/kvm such as kvm-pvm takes far too long to boot Linux, see issue 5).
fn hardware_kvm() -> bool {
    if !pcvm_accel_kvm::hardware_virtualization_available() {
        eprintln!(
            "skipped: the host CPU has no hardware virtualization (no vmx/svm in /proc/cpuinfo)"
        );
        return false;
    }
    if let Err(e) = pcvm_accel_kvm::kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable: {e}");
        return false;
    }
    true
}

/// KVM with pcvm's interrupt controllers and timers.
#[test]
fn kvm_1g_poweroff() {
    if hardware_kvm() {
        boot_pcvm("kvm", "1G", "poweroff");
    }
}

/// KVM with its in-kernel PIC, I/O APIC, local APIC and PIT.
#[test]
fn kvm_kernel_irqchip_3g_reboot() {
    if hardware_kvm() {
        boot_pcvm_with(&["--accel", "kvm", "--irqchip", "kernel"], "3G", "reboot");
    }
}

/// The harness itself under QEMU's TCG, when `qemu-system-x86_64` is installed (it is only a
/// reference here, never needed by pcvm): the script runs and the host's answers match.
#[test]
fn answers_match_under_qemu_tcg() {
    let Some(qemu) = qemu_binary() else {
        eprintln!("skipped: qemu-system-x86_64 not found (scripts/fetch-fixtures qemu)");
        return;
    };
    let (Some((vmlinuz, release)), Some(bb)) = (linux_kernel(), busybox_static()) else {
        return;
    };
    let dir = TempDir::new("linux-qemu");
    let initrd = build_initramfs(&dir, &bb);
    for (mem, end) in [("1G", "poweroff"), ("3G", "reboot")] {
        let append = cmdline(end);
        qemu_tcg_boot_checked(
            &qemu,
            &dir,
            &format!("-m {mem} ({end})"),
            mem,
            &[
                "-kernel",
                vmlinuz.to_str().expect("UTF-8 path"),
                "-initrd",
                initrd.to_str().expect("UTF-8 path"),
                "-append",
                &append,
            ],
            &release,
        );
    }
}

#[test]
fn expected_answers_agree_with_the_host_tools() {
    let a = expected_answers("6.1.0-56-amd64");
    assert_eq!(a[0], ("UNAME", "6.1.0-56-amd64".to_owned()));
    // sha256 of 4 MiB of zeros, as coreutils' sha256sum prints it.
    assert_eq!(
        a[1].1,
        "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"
    );
    assert_eq!(answer("x ZERO=abc  -\n", "ZERO"), Some("abc"));
    assert_eq!(answer("AWK=1.5\n", "ZERO"), None);
    // The SEQ digest against the host's seq | sha256sum, where both exist.
    let host = Command::new("sh")
        .args(["-c", &format!("seq 1 {SEQ_COUNT} | sha256sum")])
        .output();
    match host {
        Ok(o) if o.status.success() => {
            let out = String::from_utf8_lossy(&o.stdout);
            assert_eq!(out.split_whitespace().next(), Some(a[2].1.as_str()));
        }
        _ => eprintln!("host seq/sha256sum not available; SEQ digest not cross-checked"),
    }
}
