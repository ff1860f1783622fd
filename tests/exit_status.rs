//! How guest endings map to pcvm's exit status, through the binary: isa-debug-exit,
//! reset under -no-reboot, triple fault (with a CPU state dump), and the wall-clock timeout.

mod common;

use common::{pcvm, tiny_bios, TempDir};
use iced_x86::code_asm::*;

fn bios_file(dir: &TempDir, rom: Vec<u8>) -> String {
    let p = dir.path("bios.bin");
    std::fs::write(&p, rom).unwrap();
    p.display().to_string()
}

#[test]
fn debug_exit_status_is_value_shifted_or_one() {
    let dir = TempDir::new("debug-exit");
    let bios = bios_file(
        &dir,
        tiny_bios(|a| {
            a.mov(ax, 0x2Au32)?;
            a.out(0xF4, ax)?;
            a.hlt()
        }),
    );
    let out = pcvm(&[
        "-bios",
        &bios,
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-serial",
        "none",
    ]);
    assert_eq!(out.status.code(), Some((0x2A << 1) | 1), "{out:?}");
}

#[test]
fn reset_with_no_reboot_exits_zero() {
    let dir = TempDir::new("reset");
    // PIIX3 reset control: 0xCF9 <- 6 (system reset, as SeaBIOS and Linux do).
    let bios = bios_file(
        &dir,
        tiny_bios(|a| {
            a.mov(dx, 0xCF9u32)?;
            a.mov(al, 0x06)?;
            a.out(dx, al)?;
            a.hlt()
        }),
    );
    let out = pcvm(&["-bios", &bios, "-no-reboot", "-serial", "none"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn triple_fault_with_no_reboot_dumps_state_and_fails() {
    let dir = TempDir::new("triple");
    // An empty IDT: INT3 cannot be delivered, nor can #GP or #DF, so the CPU shuts down.
    let bios = bios_file(
        &dir,
        tiny_bios(|a| {
            a.xor(ax, ax)?;
            a.mov(ds, ax)?;
            a.mov(word_ptr(0x500), 0)?;
            a.mov(dword_ptr(0x502), 0)?;
            a.lidt(ptr(0x500))?;
            a.mov(eax, cr0)?;
            a.or(eax, 1)?;
            a.mov(cr0, eax)?;
            a.int3()?;
            a.hlt()
        }),
    );
    let out = pcvm(&["-bios", &bios, "-no-reboot", "-serial", "none"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("triple fault"), "{stderr}");
    assert!(
        stderr.contains("EIP=") && stderr.contains("CR0="),
        "{stderr}"
    );
}

#[test]
fn timeout_stops_a_spinning_guest() {
    let dir = TempDir::new("timeout");
    let bios = bios_file(
        &dir,
        tiny_bios(|a| {
            let mut l = a.create_label();
            a.set_label(&mut l)?;
            a.jmp(l)
        }),
    );
    let start = std::time::Instant::now();
    let out = pcvm(&["-bios", &bios, "--timeout", "0.5", "-serial", "none"]);
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeout"));
}
