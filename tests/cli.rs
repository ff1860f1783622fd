//! The `pcvm` binary: the built-in guest, `--help`, and every bad-input case (one clear line on
//! stderr, a non-zero exit, never a panic).

mod common;

use std::path::Path;

use common::{assert_bad_input, pcvm, TempDir};

/// A BIOS-like image of `size` bytes with a far jump at the reset vector.
fn bios_image(size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    if size >= 16 {
        v[size - 16..size - 11].copy_from_slice(&[0xEA, 0x5B, 0xE0, 0x00, 0xF0]);
    }
    v
}

fn write(dir: &TempDir, name: &str, data: &[u8]) -> String {
    let p = dir.path(name);
    std::fs::write(&p, data).unwrap();
    p.display().to_string()
}

#[test]
fn built_in_guest_runs_and_powers_off() {
    let out = pcvm(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout {stdout}");
    for needle in [
        "pcvm built-in guest",
        "protected mode",
        "CPU: ",
        "memory (CMOS): 128 MiB",
        "paging: ok",
        " MIPS",
        "powering off",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
    // -m reaches the CMOS fields the guest reads.
    let out = pcvm(&["-m", "64"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("memory (CMOS): 64 MiB"));
}

#[test]
fn help_reads_like_a_tool() {
    let out = pcvm(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    for needle in [
        "Usage: pcvm [OPTIONS]",
        "--bios <FILE>",
        "-m, --memory <SIZE>",
        "Exit status",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // QEMU's spelling works too.
    assert_eq!(pcvm(&["-help"]).status.code(), Some(0));
}

#[test]
fn bad_bios_images() {
    let dir = TempDir::new("bad-bios");
    assert_bad_input(
        &["-bios", "/nonexistent/bios.bin"],
        "failed to read BIOS image /nonexistent/bios.bin",
    );
    let empty = write(&dir, "empty.bin", &[]);
    assert_bad_input(&["-bios", &empty], "is empty");
    let trunc = write(&dir, "trunc.bin", &bios_image(4096));
    assert_bad_input(&["-bios", &trunc], "is truncated");
    let odd = write(&dir, "odd.bin", &bios_image(192 << 10));
    assert_bad_input(&["-bios", &odd], "not a power of two");
    let big = dir.path("big.bin");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(32 << 20).unwrap();
    assert_bad_input(&["-bios", &big.display().to_string()], "too large");
    let blank = write(&dir, "blank.bin", &vec![0u8; 128 << 10]);
    assert_bad_input(&["-bios", &blank], "no code at the reset vector");
    assert_bad_input(&["-bios", &dir.0.display().to_string()], "BIOS image");
}

#[test]
fn bad_disks_and_isos() {
    let dir = TempDir::new("bad-disk");
    let bios = write(&dir, "bios.bin", &bios_image(128 << 10));
    assert_bad_input(
        &["-bios", &bios, "-hda", "/nonexistent/disk.img"],
        "failed to open disk image /nonexistent/disk.img",
    );
    let d = dir.0.display().to_string();
    assert_bad_input(&["-bios", &bios, "-hda", &d], "disk image");
    let empty = write(&dir, "empty.img", &[]);
    assert_bad_input(&["-bios", &bios, "-hda", &empty], "is empty");
    let odd = write(&dir, "odd.img", &[0u8; 1000]);
    assert_bad_input(
        &["-bios", &bios, "-hda", &odd],
        "not a multiple of 512-byte sectors",
    );
    let iso = write(&dir, "odd.iso", &[0u8; 3 * 512]);
    assert_bad_input(
        &["-bios", &bios, "-cdrom", &iso],
        "not a multiple of 2048-byte sectors",
    );
    let empty_iso = write(&dir, "empty.iso", &[]);
    assert_bad_input(&["-bios", &bios, "-cdrom", &empty_iso], "CD image");
    assert_bad_input(
        &[
            "-bios",
            &bios,
            "-drive",
            &format!("file={odd},format=raw,media=disk"),
        ],
        "not a multiple of 512-byte sectors",
    );
}

#[test]
fn bad_options() {
    for m in ["abc", "1", "0", "12Q", "99999999T", "1000000000000"] {
        assert_bad_input(&["-m", m], "invalid memory size");
    }
    assert_bad_input(&["-frobnicate"], "unexpected argument '--frobnicate'");
    assert_bad_input(&["--no-such-flag"], "unexpected argument");
    assert_bad_input(&["-m"], "a value is required");
    let dir = TempDir::new("bad-opts");
    let img = write(&dir, "a.img", &[0u8; 512]);
    assert_bad_input(&["-hdc", &img, "-cdrom", &img], "conflicting drives");
    assert_bad_input(
        &["-hda", &img, "-drive", &format!("file={img},index=0")],
        "conflicting drives",
    );
    assert_bad_input(&["-hda", &img], "drives need firmware");
    assert_bad_input(&["-drive", "file=x,format=qcow2"], "only format=raw");
    assert_bad_input(&["-display", "gtk"], "invalid value 'gtk'");
    assert_bad_input(&["-kernel", "bzImage"], "failed to read kernel bzImage");
    assert_bad_input(&["-S"], "not supported yet");
    assert_bad_input(&["-smp", "4"], "only 1 CPU");
    assert_bad_input(&["-serial", "pty"], "invalid -serial 'pty'");
    assert_bad_input(&["-device", "e1000"], "unsupported device 'e1000'");
    assert!(!Path::new("x").exists());
}
