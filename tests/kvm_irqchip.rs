//! Interrupts from pcvm's devices and from the PIT, with the interrupt controllers in pcvm
//! (the interpreter; KVM with `--irqchip userspace`) or in KVM (`--irqchip kernel`): a mini-ROM
//! programs both 8259s, the 8254 (IRQ0, 1 kHz) and the RTC's periodic interrupt (IRQ8,
//! 1024 Hz), counts both in their handlers and powers off once each has ticked enough. Under
//! the kernel irqchip the RTC's line reaches KVM's PIC through `KVM_IRQ_LINE` and the PIT is
//! KVM's own.
//!
//! A second guest, a multiboot kernel in flat 32-bit mode, takes the PIT through the I/O APIC
//! and the local APIC only (8259s masked), on I/O APIC pin 2 as the MADT's override says: with
//! the kernel irqchip that needs the PC's GSI routing (GSI 0 → pin 2) in KVM.
//!
//! Third, SeaBIOS to "No bootable device." under KVM in both modes (timed): with the
//! userspace irqchip the guest's CPUID now shows pcvm's local APIC, so SeaBIOS counts CPUs
//! through it instead of reporting "No apic".

mod common;

use std::time::{Duration, Instant};

use common::{pcvm, seabios, seabios_config, TempDir};
use iced_x86::code_asm::*;
use pcvm::direct::KernelConfig;
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
    run_config(
        MachineConfig {
            bios: Some(bios),
            ..MachineConfig::default()
        },
        accel,
        irqchip,
    );
}

/// Run `config` with `accel`/`irqchip` until power-off; both counters must have reached
/// [`TICKS`].
fn run_config(config: MachineConfig, accel: Accel, irqchip: Irqchip) {
    let config = MachineConfig {
        accel,
        irqchip,
        timeout: Some(Duration::from_secs(60)),
        ..config
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

/// Where the multiboot image is loaded and runs.
const LOAD_ADDR: u32 = 0x10_0000;
/// The IDT, and the vector the I/O APIC delivers the PIT on.
const IDT: u32 = 0x8_0000;
const PIT_VECTOR: u32 = 0x30;
const IDTR: u32 = 0x7_0000;
const LAPIC: u32 = 0xFEE0_0000;
const IOAPIC: u32 = 0xFEC0_0000;

/// A multiboot v1 kernel (a.out kludge, loaded whole at 1 MiB) that masks both 8259s, enables
/// the local APIC, routes I/O APIC pin 2 to [`PIT_VECTOR`], runs the PIT at 1 kHz and powers
/// off after [`TICKS`] interrupts, counted in both counters (one handler).
fn ioapic_multiboot_kernel() -> Vec<u8> {
    let magic = 0x1BAD_B002u32;
    let flags = 1u32 << 16;
    let handler_addr = LOAD_ADDR + 0x800;
    let mut a = CodeAssembler::new(32).expect("assembler");
    let assemble = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        let mut entry = a.create_label();
        let mut wait = a.create_label();
        let header = [
            magic,
            flags,
            magic.wrapping_add(flags).wrapping_neg(),
            LOAD_ADDR, // header_addr
            LOAD_ADDR, // load_addr
            0,         // load_end_addr: the whole file
            0,         // bss_end_addr
            LOAD_ADDR + 32,
        ];
        let words: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
        a.db(&words)?;
        a.set_label(&mut entry)?;
        a.cli()?;
        a.mov(esp, 0x9_0000u32)?;
        a.mov(dword_ptr(PIT_COUNT), 0u32)?; // and RTC_COUNT
                                            // Interrupt gate PIT_VECTOR -> handler in the loader's code segment.
        let gate = IDT + PIT_VECTOR * 8;
        a.mov(eax, handler_addr)?;
        a.mov(word_ptr(gate), ax)?;
        a.mov(bx, cs)?;
        a.mov(word_ptr(gate + 2), bx)?;
        a.mov(word_ptr(gate + 4), 0x8E00u32)?;
        a.shr(eax, 16)?;
        a.mov(word_ptr(gate + 6), ax)?;
        a.mov(word_ptr(IDTR), PIT_VECTOR * 8 + 7)?;
        a.mov(dword_ptr(IDTR + 2), IDT)?;
        a.lidt(ptr(IDTR))?;
        // Both 8259s masked: only the APICs deliver.
        a.mov(al, 0xFF)?;
        a.out(0x21, al)?;
        a.out(0xA1, al)?;
        // Local APIC software-enabled (SVR), I/O APIC redirection entry 2: fixed, physical
        // destination 0, edge, active high, unmasked.
        a.mov(dword_ptr(LAPIC + 0xF0), 0x1FFu32)?;
        a.mov(dword_ptr(IOAPIC), 0x10 + 2 * 2)?;
        a.mov(dword_ptr(IOAPIC + 0x10), PIT_VECTOR)?;
        a.mov(dword_ptr(IOAPIC), 0x10 + 2 * 2 + 1)?;
        a.mov(dword_ptr(IOAPIC + 0x10), 0u32)?;
        // 8254 channel 0, mode 2, 1 ms.
        a.mov(al, 0x34)?;
        a.out(0x43, al)?;
        a.mov(al, 1193 & 0xFF)?;
        a.out(0x40, al)?;
        a.mov(al, 1193 >> 8)?;
        a.out(0x40, al)?;
        a.sti()?;
        a.set_label(&mut wait)?;
        a.hlt()?;
        a.jmp(wait)
    };
    assemble(&mut a).expect("assemble");
    let mut image = a.assemble(u64::from(LOAD_ADDR)).expect("assemble");
    // The handler never returns (kvm-pvm's instruction emulator fails on a 32-bit IRETD): it
    // drops its frame and waits for the next interrupt itself.
    let mut h = CodeAssembler::new(32).expect("assembler");
    let handler = (|| -> Result<Vec<u8>, IcedError> {
        let mut done = h.create_label();
        h.inc(word_ptr(PIT_COUNT))?;
        h.inc(word_ptr(RTC_COUNT))?;
        h.mov(dword_ptr(LAPIC + 0xB0), 0u32)?; // EOI
        h.add(esp, 12)?;
        h.cmp(word_ptr(PIT_COUNT), TICKS)?;
        h.jae(done)?;
        h.sti()?;
        h.hlt()?;
        h.set_label(&mut done)?;
        h.mov(dx, 0x8900u32)?;
        for c in b"Shutdown" {
            h.mov(al, u32::from(*c))?;
            h.out(dx, al)?;
        }
        h.hlt()?;
        h.assemble(u64::from(handler_addr))
    })()
    .expect("assemble handler");
    let at = (handler_addr - LOAD_ADDR) as usize;
    assert!(image.len() <= at);
    image.resize(at, 0xF4);
    image.extend_from_slice(&handler);
    image
}

fn run_ioapic_guest(accel: Accel, irqchip: Irqchip) {
    let dir = TempDir::new("ioapic-mb");
    let kernel = dir.path("kernel.mb");
    std::fs::write(&kernel, ioapic_multiboot_kernel()).unwrap();
    let config = MachineConfig {
        kernel: Some(KernelConfig {
            path: kernel,
            initrd: None,
            cmdline: String::new(),
        }),
        ..MachineConfig::default()
    };
    run_config(config, accel, irqchip);
}

#[test]
fn interp_pit_through_the_ioapic() {
    run_ioapic_guest(Accel::Interp, Irqchip::Userspace);
}

#[test]
fn kvm_userspace_irqchip_pit_through_the_ioapic() {
    if kvm_available() {
        run_ioapic_guest(Accel::Kvm, Irqchip::Userspace);
    }
}

#[test]
fn kvm_kernel_irqchip_pit_through_the_ioapic_pin_2() {
    if kvm_available() {
        run_ioapic_guest(Accel::Kvm, Irqchip::Kernel);
    }
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

/// SeaBIOS with no disk under KVM with `irqchip`, until "No bootable device." on the debug
/// console; SeaBIOS must have found the local APIC (its SMP setup ran) and our ACPI tables.
fn seabios_no_bootable_device(irqchip: Irqchip) {
    let Some(bios) = seabios() else { return };
    let (mut config, cap) = seabios_config(&bios, Duration::from_secs(120));
    config.accel = Accel::Kvm;
    config.irqchip = irqchip;
    let mut m = Machine::new(config).expect("build machine");
    let start = Instant::now();
    let exit = m
        .run_until(|_| cap.debugcon.contains("No bootable device."))
        .expect("run");
    let log = cap.debugcon.text();
    eprintln!(
        "kvm/{irqchip:?}: SeaBIOS reached \"No bootable device.\" in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(exit, Exit::Stopped, "{irqchip:?}:\n{log}");
    assert!(log.contains("SeaBIOS (version 1.16"), "{log}");
    assert!(
        log.contains("Found 1 cpu(s) max supported 1 cpu(s)"),
        "{irqchip:?}: SeaBIOS did not find the local APIC:\n{log}"
    );
    assert!(!log.contains("No apic"), "{irqchip:?}:\n{log}");
    assert!(log.contains("ACPI: parse DSDT"), "{irqchip:?}:\n{log}");
}

#[test]
fn kvm_userspace_irqchip_seabios_no_bootable_device() {
    if kvm_available() {
        seabios_no_bootable_device(Irqchip::Userspace);
    }
}

#[test]
fn kvm_kernel_irqchip_seabios_no_bootable_device() {
    if kvm_available() {
        seabios_no_bootable_device(Irqchip::Kernel);
    }
}
