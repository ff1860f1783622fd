//! Debian's Linux 6.1 booted the way a PC boots it: SeaBIOS starts a raw IDE disk made here,
//! whose boot loader (tests/common/linux_loader.rs, our own, assembled with code_asm) reads the
//! bzImage, command line and busybox initramfs with INT 13h extended reads, moves them above
//! 1 MiB with INT 15h AH=87h and enters the kernel per the boot protocol. `/init` and its
//! checks are those of tests/linux_boot.rs.
//!
//! Stand-in kernels check the loader itself in seconds: where it puts each part, the header
//! fields and registers it hands over, and its error path. When `qemu-system-x86_64` is there,
//! the same disk boots under QEMU's TCG as a reference independent of pcvm.

mod common;

use std::process::Command;
use std::time::Duration;

use common::linux_checks::*;
use common::linux_guest::*;
use common::linux_loader::*;
use common::{busybox_static, linux_kernel, seabios, seabios_config, TempDir};
use pcvm::machine::{Accel, DriveConfig, DriveMedia, Exit, Machine};

/// Limit for the stand-in kernels, which need only SeaBIOS and the loader.
const LOADER_TIMEOUT: Duration = Duration::from_secs(120);

/// `n` bytes that differ from offset to offset and from `seed` to `seed`, so a misplaced or
/// short copy shows.
fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Boot `disk` through SeaBIOS in-process on `accel` with `memory` bytes of RAM
/// until COM1 shows `until` (or the machine exits); the machine and its COM1 text.
fn run_disk(accel: Accel, disk: &[u8], memory: u64, until: &str) -> (Machine, Exit, String) {
    let bios = seabios().expect("checked by the caller");
    let dir = TempDir::new("loader");
    let path = dir.path("disk.img");
    std::fs::write(&path, disk).expect("write disk");
    let (mut config, cap) = seabios_config(&bios, LOADER_TIMEOUT);
    config.memory = memory;
    config.accel = accel;
    config.drives.push(DriveConfig {
        path,
        media: DriveMedia::Disk,
        index: Some(0),
        origin: "-hda disk.img".into(),
    });
    let mut m = Machine::new(config).expect("build machine");
    let exit = m.run_until(|_| cap.serial.contains(until)).expect("run");
    let serial = cap.serial.text();
    (m, exit, serial)
}

fn read_u16(m: &Machine, gpa: u64) -> u16 {
    let mut b = [0u8; 2];
    m.memory()
        .read_phys(gpa, &mut b)
        .expect("read guest memory");
    u16::from_le_bytes(b)
}

fn read_u32(m: &Machine, gpa: u64) -> u32 {
    let mut b = [0u8; 4];
    m.memory()
        .read_phys(gpa, &mut b)
        .expect("read guest memory");
    u32::from_le_bytes(b)
}

fn read_bytes(m: &Machine, gpa: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    m.memory()
        .read_phys(gpa, &mut b)
        .expect("read guest memory");
    b
}

/// The loader puts a stand-in kernel's setup at 0x10000, its protected-mode part (several
/// 64-sector chunks and a partial one) at 1 MiB and an odd-sized initrd page-aligned in the
/// top MiB of RAM, fills the header fields and enters setup with the segments and stack the boot
/// protocol asks for.
#[test]
fn loader_places_kernel_initrd_and_cmdline_and_fills_the_header() {
    check_loader_placement(Accel::Interp, 256 << 20);
}

/// The same on KVM with pcvm's devices, where /dev/kvm is usable (SeaBIOS's INT 15h AH=87h
/// and E820 then run on the host CPU's protected mode).
#[test]
fn kvm_loader_places_kernel_initrd_and_cmdline() {
    match pcvm_accel_kvm::kvm_usable() {
        Ok(_) => check_loader_placement(Accel::Kvm, 256 << 20),
        Err(e) => eprintln!("skipped: /dev/kvm is not usable: {e}"),
    }
}

/// With 3 GiB the highest RAM below 4 GiB lies above the stand-in kernel's initrd_addr_max
/// (2 GiB - 1, as Linux's): the initrd must end below 2 GiB.
#[test]
fn loader_keeps_the_initrd_below_initrd_addr_max_with_3g() {
    check_loader_placement(Accel::Interp, 3 << 30);
}

fn check_loader_placement(accel: Accel, ram: u64) {
    if seabios().is_none() {
        return;
    }
    const MARK: &str = "PCVM-FAKE-SETUP-ENTERED";
    let payload = pattern(300_001, 1);
    let initrd = pattern(100_003, 2);
    let cmdline = "console=ttyS0 pcvm_loader_test=1";
    let kernel = fake_bzimage(MARK, &payload);
    let disk = linux_disk_image(&kernel, &initrd, cmdline).expect("disk image");
    let (m, exit, serial) = run_disk(accel, &disk, ram, MARK);
    assert_eq!(exit, Exit::Stopped, "serial:\n{serial}");
    assert!(serial.contains(LOADER_STARTS_KERNEL), "{serial}");
    assert!(!serial.contains(LOADER_ERROR), "{serial}");

    // CS, DS, ES, SS, SP as setup saw them.
    let regs: Vec<u16> = (0..5)
        .map(|i| read_u16(&m, u64::from(FAKE_REGS_ADDR) + 2 * i))
        .collect();
    let seg = (SETUP_BASE >> 4) as u16;
    assert_eq!(regs, [seg + 0x20, seg, seg, seg, HEAP_END]);

    // Boot sector and setup sector as on disk, apart from the fields the loader writes.
    let base = u64::from(SETUP_BASE);
    let setup = read_bytes(&m, base, 1024);
    // Untouched: all but vid_mode, type_of_loader, loadflags, ramdisk_image/size,
    // heap_end_ptr and cmd_line_ptr.
    for (from, to) in [
        (0, 0x1FA),
        (0x1FC, 0x210),
        (0x212, 0x218),
        (0x220, 0x224),
        (0x22C, 0x400),
    ] {
        assert_eq!(&setup[from..to], &kernel[from..to], "{from:#x}..{to:#x}");
    }
    assert_eq!(setup[0x210], 0xFF, "type_of_loader");
    assert_eq!(setup[0x211], 0x81, "loadflags: LOADED_HIGH | CAN_USE_HEAP");
    assert_eq!(read_u16(&m, base + 0x1FA), 0xFFFF, "vid_mode");
    assert_eq!(read_u16(&m, base + 0x224), HEAP_END - 0x200, "heap_end_ptr");
    assert_eq!(read_u32(&m, base + 0x228), CMDLINE_ADDR, "cmd_line_ptr");
    let line = read_bytes(&m, u64::from(CMDLINE_ADDR), cmdline.len() + 1);
    assert_eq!(&line[..cmdline.len()], cmdline.as_bytes());
    assert_eq!(line[cmdline.len()], 0);

    // The protected-mode part at 1 MiB.
    assert!(read_bytes(&m, u64::from(KERNEL_HIGH_ADDR), payload.len()) == payload);

    // The initrd: page aligned, above the kernel, in the top MiB of RAM, intact.
    let image = read_u32(&m, base + 0x218);
    let size = read_u32(&m, base + 0x21C);
    assert_eq!(size as usize, initrd.len());
    assert_eq!(image % 4096, 0, "ramdisk_image {image:#x}");
    let top = ram.min(0x8000_0000); // initrd_addr_max + 1
    assert!(
        u64::from(image) + u64::from(size) <= top && u64::from(image) > top - (1 << 20),
        "ramdisk_image {image:#x} not in the MiB below {top:#x} ({ram:#x} bytes of RAM)"
    );
    assert!(read_bytes(&m, u64::from(image), initrd.len()) == initrd);
}

/// A disk whose "kernel" has no setup header: the loader says so on the console and powers
/// off instead of jumping into it.
#[test]
fn loader_rejects_a_kernel_without_a_setup_header() {
    if seabios().is_none() {
        return;
    }
    let disk = disk_image_unchecked(&pattern(8192, 3), &[], "console=ttyS0");
    let (_, exit, serial) = run_disk(Accel::Interp, &disk, 128 << 20, "\u{0}never");
    assert_eq!(exit, Exit::PowerOff(0), "serial:\n{serial}");
    assert!(
        serial.contains(&format!(
            "{LOADER_ERROR}: not a bzImage with boot protocol >= 2.06"
        )),
        "{serial}"
    );
    assert!(!serial.contains(LOADER_STARTS_KERNEL), "{serial}");
}

/// The disk for the Linux boots in `dir`: Debian's kernel, the busybox initramfs of
/// tests/linux_boot.rs and its command line ending with `end`.
fn linux_disk(dir: &TempDir, end: &str) -> Option<(std::path::PathBuf, String)> {
    let (Some((vmlinuz, release)), Some(bb)) = (linux_kernel(), busybox_static()) else {
        return None;
    };
    let initrd = std::fs::read(build_initramfs(dir, &bb)).expect("read initramfs");
    let kernel = std::fs::read(vmlinuz).expect("read kernel");
    let disk = linux_disk_image(&kernel, &initrd, &cmdline(end)).expect("disk image");
    let path = dir.path("disk.img");
    std::fs::write(&path, disk).expect("write disk");
    Some((path, release))
}

/// SeaBIOS boots the disk under the interpreter with 1 GiB; Linux reaches /init, the answers
/// match, dmesg is clean, and `poweroff -f` makes pcvm exit 0.
#[test]
fn interp_1g_seabios_disk_poweroff() {
    if !interp_runs_x86_64_linux() {
        return;
    }
    let Some(bios) = seabios() else { return };
    let dir = TempDir::new("linux-disk");
    let Some((disk, release)) = linux_disk(&dir, "poweroff") else {
        return;
    };
    let limit = boot_timeout();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pcvm"));
    cmd.env("RUST_LOG", "warn").args([
        "-bios",
        bios.to_str().expect("UTF-8 path"),
        "-m",
        "1G",
        "-drive",
        &format!("file={},format=raw", disk.to_str().expect("UTF-8 path")),
        "-serial",
        "stdio",
        "-nographic",
        "-no-reboot",
        "--accel",
        "interp",
        "--timeout",
        &limit.as_secs().to_string(),
    ]);
    let run = run_with_limit(cmd, &dir, limit + Duration::from_secs(30));
    eprintln!(
        "pcvm interp SeaBIOS disk -m 1G: status {:?} after {:.1} s",
        run.status, run.secs
    );
    assert!(
        run.console.contains(LOADER_STARTS_KERNEL) && !run.console.contains(LOADER_ERROR),
        "loader failed; console:\n{}",
        run.console
    );
    report_pat(&run.console);
    check_console(&run.console, &release, Dmesg::Forbid);
    assert_eq!(
        run.status,
        Some(0),
        "pcvm exit status; stderr:\n{}\nconsole tail:\n{}",
        run.stderr,
        tail(&run.console, 30)
    );
}

/// Say whether the kernel found PAT usable (it reports "x86/PAT: MTRRs disabled, skipping PAT
/// initialization too." when the MTRRs are off).
fn report_pat(console: &str) {
    match console.lines().find(|l| l.contains("x86/PAT")) {
        Some(l) => eprintln!("note: {}", l.trim()),
        None => eprintln!("note: no x86/PAT line in the console"),
    }
}

/// The same disk under QEMU's TCG with Debian's SeaBIOS, when QEMU is there: proves the loader
/// and disk layout independently of pcvm.
#[test]
fn disk_boots_under_qemu_tcg() {
    let Some(qemu) = qemu_binary() else {
        eprintln!("skipped: qemu-system-x86_64 not found (scripts/fetch-fixtures qemu)");
        return;
    };
    let dir = TempDir::new("linux-disk-qemu");
    let Some((disk, release)) = linux_disk(&dir, "poweroff") else {
        return;
    };
    // QEMU's SeaBIOS draws INT 10h output on its VGA only: no loader messages on COM1 here.
    let drive = format!("file={},format=raw", disk.to_str().expect("UTF-8 path"));
    qemu_tcg_boot_checked(
        &qemu,
        &dir,
        "SeaBIOS disk -m 1G",
        "1G",
        &["-drive", &drive],
        &release,
    );
}
