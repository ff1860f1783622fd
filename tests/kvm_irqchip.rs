//! Interrupts from pcvm's devices and from the PIT, with the interrupt controllers in pcvm
//! (the interpreter; KVM with `--irqchip userspace`) or in KVM (`--irqchip kernel`): a mini-ROM
//! programs both 8259s, the 8254 (IRQ0, 1 kHz) and the RTC's periodic interrupt (IRQ8,
//! 1024 Hz), counts both in their handlers and powers off once each has ticked enough. Under
//! the kernel irqchip the RTC's line reaches KVM's PIC through `KVM_IRQ_LINE` and the PIT is
//! KVM's own.

mod common;

use std::time::{Duration, Instant};

use common::{pcvm, TempDir};
use iced_x86::code_asm::*;
use pcvm::machine::{Accel, Exit, Irqchip, Machine, MachineConfig};

/// Handler offsets in the F000 segment.
const PIT_HANDLER: u16 = 0x200;
const RTC_HANDLER: u16 = 0x300;
/// Counters in low RAM.
const PIT_COUNT: u32 = 0x500;
const RTC_COUNT: u32 = 0x502;
const TICKS: u32 = 20;

fn assemble16(base: u16, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(16).expect("assembler");
    f(&mut a).expect("assemble");
    a.assemble(u64::from(base)).expect("assemble")
}

fn rom() -> Vec<u8> {
    let main = assemble16(0, |a| {
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(ss, ax)?;
        a.mov(sp, 0x7000u32)?;
        // IVT: vector 8 (IRQ0) and 0x70 (IRQ8) -> F000:handler.
        a.mov(word_ptr(8 * 4), u32::from(PIT_HANDLER))?;
        a.mov(word_ptr(8 * 4 + 2), 0xF000u32)?;
        a.mov(word_ptr(0x70 * 4), u32::from(RTC_HANDLER))?;
        a.mov(word_ptr(0x70 * 4 + 2), 0xF000u32)?;
        a.mov(word_ptr(PIT_COUNT), 0)?;
        a.mov(word_ptr(RTC_COUNT), 0)?;
        // 8259A pair: ICW1..ICW4 (vectors 8 and 0x70, slave on IR2), then unmask IRQ0, the
        // cascade and IRQ8.
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x08),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xA0, 0x11),
            (0xA1, 0x70),
            (0xA1, 0x02),
            (0xA1, 0x01),
            (0x21, 0xFA),
            (0xA1, 0xFE),
        ] {
            a.mov(al, v)?;
            a.out(port, al)?;
        }
        // 8254 channel 0, mode 2, 1193 counts = 1 ms.
        a.mov(al, 0x34)?;
        a.out(0x43, al)?;
        a.mov(al, 1193 & 0xFF)?;
        a.out(0x40, al)?;
        a.mov(al, 1193 >> 8)?;
        a.out(0x40, al)?;
        // MC146818: register A rate 6 (1024 Hz), register B periodic interrupt + 24 h.
        for (reg, v) in [(0x0A, 0x26), (0x0B, 0x42)] {
            a.mov(al, reg)?;
            a.out(0x70, al)?;
            a.mov(al, v)?;
            a.out(0x71, al)?;
        }
        a.sti()?;
        let mut wait = a.create_label();
        a.set_label(&mut wait)?;
        a.hlt()?;
        a.cmp(word_ptr(PIT_COUNT), TICKS)?;
        a.jb(wait)?;
        a.cmp(word_ptr(RTC_COUNT), TICKS)?;
        a.jb(wait)?;
        a.mov(dx, 0x8900u32)?;
        for c in b"Shutdown" {
            a.mov(al, u32::from(*c))?;
            a.out(dx, al)?;
        }
        a.cli()?;
        a.hlt()
    });
    let pit = assemble16(PIT_HANDLER, |a| {
        a.push(ax)?;
        a.inc(word_ptr(PIT_COUNT))?;
        a.mov(al, 0x20)?; // non-specific EOI
        a.out(0x20, al)?;
        a.pop(ax)?;
        a.iret()
    });
    let rtc = assemble16(RTC_HANDLER, |a| {
        a.push(ax)?;
        // Reading register C acknowledges the RTC's interrupt.
        a.mov(al, 0x0C)?;
        a.out(0x70, al)?;
        a.in_(al, 0x71)?;
        a.inc(word_ptr(RTC_COUNT))?;
        a.mov(al, 0x20)?;
        a.out(0xA0, al)?;
        a.out(0x20, al)?;
        a.pop(ax)?;
        a.iret()
    });
    assert!(main.len() < usize::from(PIT_HANDLER));
    let mut rom = vec![0xF4u8; 64 << 10];
    rom[..main.len()].copy_from_slice(&main);
    for (at, code) in [(PIT_HANDLER, &pit), (RTC_HANDLER, &rtc)] {
        rom[usize::from(at)..usize::from(at) + code.len()].copy_from_slice(code);
    }
    let rv = rom.len() - 16;
    rom[rv..rv + 5].copy_from_slice(&[0xEA, 0x00, 0x00, 0x00, 0xF0]); // JMP FAR F000:0000
    rom
}

/// KVM is usable here; otherwise print why the KVM cases skip.
fn kvm_available() -> bool {
    match pcvm_accel_kvm::kvm_usable() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipped: /dev/kvm is not usable: {e}");
            false
        }
    }
}

fn run(accel: Accel, irqchip: Irqchip) {
    let dir = TempDir::new("irqchip");
    let bios = dir.path("bios.bin");
    std::fs::write(&bios, rom()).unwrap();
    let config = MachineConfig {
        bios: Some(bios),
        accel,
        irqchip,
        timeout: Some(Duration::from_secs(60)),
        ..MachineConfig::default()
    };
    let mut m = Machine::new(config).expect("build machine");
    let start = Instant::now();
    let exit = m.run().expect("run");
    let count = |at: u32| {
        m.memory()
            .read_ram_le::<2>(u64::from(at))
            .map(u16::from_le_bytes)
    };
    eprintln!(
        "{accel:?}/{irqchip:?}: {exit:?} after {:.2} s, PIT {:?} RTC {:?}",
        start.elapsed().as_secs_f64(),
        count(PIT_COUNT),
        count(RTC_COUNT)
    );
    assert_eq!(exit, Exit::PowerOff(0), "{accel:?}/{irqchip:?}");
}

#[test]
fn interp_with_pcvms_interrupt_controllers() {
    run(Accel::Interp, Irqchip::Userspace);
}

#[test]
fn kvm_userspace_irqchip() {
    if kvm_available() {
        run(Accel::Kvm, Irqchip::Userspace);
    }
}

#[test]
fn kvm_kernel_irqchip() {
    if kvm_available() {
        run(Accel::Kvm, Irqchip::Kernel);
    }
}

#[test]
fn kernel_irqchip_needs_kvm() {
    let e = Machine::new(MachineConfig {
        accel: Accel::Interp,
        irqchip: Irqchip::Kernel,
        ..MachineConfig::default()
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("--irqchip kernel needs --accel kvm"),
        "{e}"
    );
    let out = pcvm(&["--accel", "interp", "-machine", "kernel_irqchip=on"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
