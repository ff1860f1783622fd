//! Shared helpers for the whole-guest tests: fixture lookup, guest images built with
//! iced-x86's `code_asm` (a boot sector that loads more sectors through INT 13h extended reads,
//! a raw disk, an El Torito no-emulation ISO), and running a machine with a deadline.
#![allow(dead_code)] // each test file uses a different subset

pub mod initramfs;
pub mod linux_checks;
pub mod linux_guest;
pub mod linux_loader;
pub mod sha256;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use iced_x86::code_asm::*;
use pcvm::console::CaptureBuffer;
use pcvm::machine::{CharSpec, MachineConfig};

/// The marker the second stage prints with INT 10h AH=0Eh (teletype).
pub const MARK_INT10: &str = "PCVM-INT10-OK";
/// The marker the second stage writes to COM1 with OUT.
pub const MARK_COM1: &str = "PCVM-COM1-OK";

/// Where tests look for fixtures: `PCVM_FIXTURES`, else `target/fixtures` of the workspace.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("PCVM_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fixtures"),
    }
}

/// `path` if it exists. Otherwise print "skipped: fixture missing: …" and return `None`, or
/// fail the test when `PCVM_REQUIRE_FIXTURES=1` (as CI sets).
pub fn require_fixture(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "fixture missing: {what} at {} (run scripts/fetch-fixtures)",
        path.display()
    );
    if std::env::var("PCVM_REQUIRE_FIXTURES").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("skipped: {msg}");
    None
}

/// SeaBIOS `bios-256k.bin`: `PCVM_BIOS`, else the Debian package unpacked by fetch-fixtures.
pub fn seabios() -> Option<PathBuf> {
    let path = match std::env::var_os("PCVM_BIOS") {
        Some(p) => PathBuf::from(p),
        None => fixtures_dir().join("seabios/usr/share/seabios/bios-256k.bin"),
    };
    require_fixture(path, "SeaBIOS bios-256k.bin")
}

/// A scratch directory unique to this call (process id, a per-process counter and `name`:
/// tests of one binary run in parallel), removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pcvm-test-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Captured COM1 and debug console of a SeaBIOS machine.
pub struct Captures {
    pub serial: CaptureBuffer,
    pub debugcon: CaptureBuffer,
}

/// A SeaBIOS machine configuration with COM1 and the debug console captured, and a wall-clock
/// limit so a hung guest fails the test instead of hanging it.
pub fn seabios_config(bios: &Path, timeout: Duration) -> (MachineConfig, Captures) {
    let serial = CaptureBuffer::new();
    let debugcon = CaptureBuffer::new();
    let config = MachineConfig {
        bios: Some(bios.to_owned()),
        serials: vec![CharSpec::Capture(serial.clone())],
        debugcon: Some((0x402, CharSpec::Capture(debugcon.clone()))),
        timeout: Some(timeout),
        ..MachineConfig::default()
    };
    (config, Captures { serial, debugcon })
}

/// How a boot image reaches its second stage.
#[derive(Clone, Copy, Debug)]
pub struct LoaderParams {
    /// First block of the second stage (in the medium's block size).
    pub lba: u64,
    /// Blocks to read with INT 13h AH=42h.
    pub blocks: u16,
}

/// Physical address the second stage is loaded to and runs at.
pub const STAGE2_ADDR: u16 = 0x8000;

/// The 16-bit boot code loaded at 0x7C00: reads the second stage with INT 13h AH=42h from the
/// boot drive (DL) to 0x8000 and jumps there; prints "LOADFAIL" on a read error.
pub fn loader(p: LoaderParams) -> Vec<u8> {
    let assemble = || -> Result<Vec<u8>, IcedError> {
        let mut a = CodeAssembler::new(16)?;
        let mut fail = a.create_label();
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.mov(sp, 0x7C00u32)?;
        a.sti()?;
        // Disk address packet at 0x600 (Phoenix EDD 3.0 §7.1): size 16, count, buffer, LBA.
        a.mov(byte_ptr(0x600), 0x10)?;
        a.mov(byte_ptr(0x601), 0)?;
        a.mov(word_ptr(0x602), u32::from(p.blocks))?;
        a.mov(word_ptr(0x604), u32::from(STAGE2_ADDR))?;
        a.mov(word_ptr(0x606), 0)?;
        a.mov(word_ptr(0x608), (p.lba & 0xFFFF) as u32)?;
        a.mov(word_ptr(0x60A), ((p.lba >> 16) & 0xFFFF) as u32)?;
        a.mov(word_ptr(0x60C), ((p.lba >> 32) & 0xFFFF) as u32)?;
        a.mov(word_ptr(0x60E), ((p.lba >> 48) & 0xFFFF) as u32)?;
        a.mov(si, 0x600u32)?;
        a.mov(ah, 0x42)?;
        a.int(0x13)?;
        a.jc(fail)?;
        a.mov(ax, u32::from(STAGE2_ADDR))?;
        a.jmp(ax)?;
        a.set_label(&mut fail)?;
        for c in b"LOADFAIL" {
            a.mov(ah, 0x0E)?;
            a.mov(al, u32::from(*c))?;
            a.mov(bx, 7u32)?;
            a.int(0x10)?;
        }
        let mut halt = a.create_label();
        a.set_label(&mut halt)?;
        a.hlt()?;
        a.jmp(halt)?;
        a.assemble(0x7C00)
    };
    assemble().expect("assemble loader")
}

/// The second stage, `len` bytes, run at 0x8000: prints [`MARK_INT10`] through INT 10h and
/// [`MARK_COM1`] straight to COM1, then powers off through the APM port. Both strings sit in
/// the last 128 bytes, so seeing them proves every block was read.
pub fn stage2(len: usize) -> Vec<u8> {
    assert!(len >= 1024);
    let int10_at = STAGE2_ADDR as usize + len - 128;
    let com1_at = STAGE2_ADDR as usize + len - 64;
    let assemble = || -> Result<Vec<u8>, IcedError> {
        let mut a = CodeAssembler::new(16)?;
        // INT 10h teletype.
        let mut l1 = a.create_label();
        let mut d1 = a.create_label();
        a.cld()?;
        a.mov(si, int10_at as u32)?;
        a.set_label(&mut l1)?;
        a.lodsb()?;
        a.test(al, al)?;
        a.jz(d1)?;
        a.mov(ah, 0x0E)?;
        a.mov(bx, 7u32)?;
        a.int(0x10)?;
        a.jmp(l1)?;
        a.set_label(&mut d1)?;
        // COM1, waiting (boundedly) for the transmitter.
        let mut l2 = a.create_label();
        let mut wait = a.create_label();
        let mut send = a.create_label();
        let mut d2 = a.create_label();
        a.mov(si, com1_at as u32)?;
        a.set_label(&mut l2)?;
        a.mov(bl, byte_ptr(si))?;
        a.inc(si)?;
        a.test(bl, bl)?;
        a.jz(d2)?;
        a.mov(cx, 0xFFFFu32)?;
        a.mov(dx, 0x3FDu32)?;
        a.set_label(&mut wait)?;
        a.in_(al, dx)?;
        a.test(al, 0x20)?;
        a.jnz(send)?;
        a.dec(cx)?;
        a.jnz(wait)?;
        a.set_label(&mut send)?;
        a.mov(dx, 0x3F8u32)?;
        a.mov(al, bl)?;
        a.out(dx, al)?;
        a.jmp(l2)?;
        a.set_label(&mut d2)?;
        // Power off: "Shutdown" to the APM port.
        a.mov(dx, 0x8900u32)?;
        for c in b"Shutdown" {
            a.mov(al, u32::from(*c))?;
            a.out(dx, al)?;
        }
        let mut halt = a.create_label();
        a.set_label(&mut halt)?;
        a.cli()?;
        a.hlt()?;
        a.jmp(halt)?;
        a.assemble(u64::from(STAGE2_ADDR))
    };
    let code = assemble().expect("assemble stage 2");
    assert!(code.len() < len - 128);
    let mut img = vec![0u8; len];
    img[..code.len()].copy_from_slice(&code);
    let put = |img: &mut Vec<u8>, at: usize, s: &str| {
        let off = at - STAGE2_ADDR as usize;
        img[off..off + s.len()].copy_from_slice(s.as_bytes());
    };
    put(&mut img, int10_at, &format!("{MARK_INT10}\r\n"));
    put(&mut img, com1_at, &format!("{MARK_COM1}\r\n"));
    img
}

/// A raw disk: an MBR boot sector with the loader, then a 4-sector second stage at LBA 1,
/// padded to 1 MiB.
pub fn disk_image() -> Vec<u8> {
    let mut disk = vec![0u8; 1 << 20];
    let boot = loader(LoaderParams { lba: 1, blocks: 4 });
    assert!(
        boot.len() <= 440,
        "boot code must fit before the disk signature"
    );
    disk[..boot.len()].copy_from_slice(&boot);
    disk[510] = 0x55;
    disk[511] = 0xAA;
    let s2 = stage2(4 * 512);
    disk[512..512 + s2.len()].copy_from_slice(&s2);
    disk
}

const ISO_BLOCK: usize = 2048;

/// Both-endian 32-bit field of ISO 9660 (ECMA-119 §7.3.3).
fn both32(v: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..].copy_from_slice(&v.to_be_bytes());
    b
}

/// Both-endian 16-bit field (ECMA-119 §7.2.3).
fn both16(v: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..].copy_from_slice(&v.to_be_bytes());
    b
}

/// An ISO 9660 image with an El Torito no-emulation boot entry (El Torito 1.0 §2–§5): PVD at
/// block 16, boot record at 17, terminator at 18, boot catalog at 19, the 2048-byte boot image
/// (the loader) at 20, and a 4096-byte second stage at blocks 21–22.
pub fn iso_image() -> Vec<u8> {
    const PVD: usize = 16;
    const BOOT_RECORD: usize = 17;
    const TERMINATOR: usize = 18;
    const CATALOG: usize = 19;
    const BOOT_IMAGE: usize = 20;
    const STAGE2: usize = 21;
    const ROOT_DIR: usize = 30;
    const BLOCKS: usize = 32;
    let mut iso = vec![0u8; BLOCKS * ISO_BLOCK];
    let block = |n: usize| n * ISO_BLOCK;

    // Primary volume descriptor (ECMA-119 §8.4).
    let p = block(PVD);
    iso[p] = 1;
    iso[p + 1..p + 6].copy_from_slice(b"CD001");
    iso[p + 6] = 1;
    iso[p + 8..p + 40].fill(b' ');
    iso[p + 40..p + 72].fill(b' ');
    iso[p + 40..p + 49].copy_from_slice(b"PCVM_TEST");
    iso[p + 80..p + 88].copy_from_slice(&both32(BLOCKS as u32));
    iso[p + 120..p + 124].copy_from_slice(&both16(1));
    iso[p + 124..p + 128].copy_from_slice(&both16(1));
    iso[p + 128..p + 132].copy_from_slice(&both16(ISO_BLOCK as u16));
    // Root directory record (§9.1) in the PVD, and the root directory itself holding only
    // "." and "..".
    let dir_record = |iso: &mut Vec<u8>, r: usize, name: u8| {
        iso[r] = 34;
        iso[r + 2..r + 10].copy_from_slice(&both32(ROOT_DIR as u32));
        iso[r + 10..r + 18].copy_from_slice(&both32(ISO_BLOCK as u32));
        iso[r + 25] = 0x02; // directory
        iso[r + 28..r + 32].copy_from_slice(&both16(1));
        iso[r + 32] = 1;
        iso[r + 33] = name;
    };
    dir_record(&mut iso, p + 156, 0);
    dir_record(&mut iso, block(ROOT_DIR), 0);
    dir_record(&mut iso, block(ROOT_DIR) + 34, 1);
    iso[p + 881] = 1; // file structure version

    // Boot record volume descriptor (El Torito §2.0).
    let b = block(BOOT_RECORD);
    iso[b] = 0;
    iso[b + 1..b + 6].copy_from_slice(b"CD001");
    iso[b + 6] = 1;
    iso[b + 7..b + 7 + 23].copy_from_slice(b"EL TORITO SPECIFICATION");
    iso[b + 0x47..b + 0x4B].copy_from_slice(&(CATALOG as u32).to_le_bytes());

    // Volume descriptor set terminator (ECMA-119 §8.3).
    let t = block(TERMINATOR);
    iso[t] = 255;
    iso[t + 1..t + 6].copy_from_slice(b"CD001");
    iso[t + 6] = 1;

    // Boot catalog: validation entry (§2.1) and initial/default entry (§2.2).
    let c = block(CATALOG);
    iso[c] = 1; // header ID
    iso[c + 1] = 0; // platform: 80x86
    iso[c + 4..c + 4 + 4].copy_from_slice(b"PCVM");
    iso[c + 30] = 0x55;
    iso[c + 31] = 0xAA;
    let sum = (0..32)
        .step_by(2)
        .map(|i| u16::from_le_bytes([iso[c + i], iso[c + i + 1]]))
        .fold(0u16, u16::wrapping_add);
    iso[c + 28..c + 30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    let e = c + 32;
    iso[e] = 0x88; // bootable
    iso[e + 1] = 0; // no emulation
    iso[e + 2..e + 4].copy_from_slice(&0u16.to_le_bytes()); // load segment: default 0x7C0
    iso[e + 4] = 0; // system type
    iso[e + 6..e + 8].copy_from_slice(&4u16.to_le_bytes()); // 4 virtual 512-byte sectors
    iso[e + 8..e + 12].copy_from_slice(&(BOOT_IMAGE as u32).to_le_bytes());

    // Boot image and second stage.
    let boot = loader(LoaderParams {
        lba: STAGE2 as u64,
        blocks: 2,
    });
    iso[block(BOOT_IMAGE)..block(BOOT_IMAGE) + boot.len()].copy_from_slice(&boot);
    let s2 = stage2(2 * ISO_BLOCK);
    iso[block(STAGE2)..block(STAGE2) + s2.len()].copy_from_slice(&s2);
    iso
}

/// A 64 KiB ROM whose reset vector jumps to `code`, assembled at F000:0000 in 16-bit mode.
pub fn tiny_bios(code: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(16).expect("assembler");
    code(&mut a).expect("assemble tiny BIOS");
    let bytes = a.assemble(0).expect("assemble tiny BIOS");
    let mut rom = vec![0xF4u8; 64 << 10];
    rom[..bytes.len()].copy_from_slice(&bytes);
    let rv = rom.len() - 16;
    rom[rv..rv + 5].copy_from_slice(&[0xEA, 0x00, 0x00, 0x00, 0xF0]); // JMP FAR F000:0000
    rom
}

/// Run the `pcvm` binary with `args`, stdin closed, logging off.
pub fn pcvm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pcvm"))
        .args(args)
        .env("RUST_LOG", "off")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run pcvm")
}

/// Assert a bad-input failure: exit status 2 and exactly one stderr line containing `needle`.
pub fn assert_bad_input(args: &[&str], needle: &str) {
    let out = pcvm(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: stderr {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: stderr {stderr}");
    assert!(stderr.starts_with("pcvm: "), "{args:?}: stderr {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Each cause once: an error that both prints its source and returns it from `source()`
    // reads "…: No such file or directory (os error 2): No such file or directory (os error 2)".
    let parts: Vec<&str> = stderr.trim_end().split(": ").collect();
    assert!(
        parts.windows(2).all(|w| w[0] != w[1]),
        "{args:?}: a cause repeats in {stderr}"
    );
}

/// Debian's kernel from the fixtures and its release string (from the file name
/// `vmlinuz-<release>`), or `None` (skipped) when the fixture is missing.
pub fn linux_kernel() -> Option<(PathBuf, String)> {
    let boot = fixtures_dir().join("linux/boot");
    let found = std::fs::read_dir(&boot).ok().and_then(|d| {
        d.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
    });
    let path = require_fixture(
        found.unwrap_or_else(|| boot.join("vmlinuz-6.1.0-amd64")),
        "Debian linux-image-6.1 vmlinuz",
    )?;
    let release = path
        .file_name()?
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_owned();
    Some((path, release))
}

/// The static busybox from Debian's busybox-static.
pub fn busybox_static() -> Option<PathBuf> {
    require_fixture(fixtures_dir().join("busybox/bin/busybox"), "busybox-static")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_checksum_sums_to_zero() {
        let iso = iso_image();
        let c = 19 * ISO_BLOCK;
        let sum = (0..32)
            .step_by(2)
            .map(|i| u16::from_le_bytes([iso[c + i], iso[c + i + 1]]))
            .fold(0u16, u16::wrapping_add);
        assert_eq!(sum, 0);
    }
}
