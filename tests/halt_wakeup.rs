//! The run loop's halt handling: a mini-ROM programs the PIC and PIT (1 kHz), then sleeps in
//! HLT until 50 IRQ0 ticks have arrived and powers off. With the host clock the 50 ticks take
//! about 50 ms of wall time; with the instruction-count clock the machine jumps to each timer
//! deadline instead of sleeping.

mod common;

use std::time::{Duration, Instant};

use common::TempDir;
use iced_x86::code_asm::*;
use pcvm::machine::{Exit, Machine, MachineConfig};

const HANDLER: u16 = 0x100;
const TICKS: u32 = 50;

fn rom() -> Vec<u8> {
    let main = (|| -> Result<Vec<u8>, IcedError> {
        let mut a = CodeAssembler::new(16)?;
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(ss, ax)?;
        a.mov(sp, 0x7000u32)?;
        // IVT entry 8 (IRQ0 after the ICW2 below) -> F000:HANDLER.
        a.mov(word_ptr(0x20), u32::from(HANDLER))?;
        a.mov(word_ptr(0x22), 0xF000u32)?;
        a.mov(word_ptr(0x500), 0)?;
        // 8259A: ICW1 edge/cascade/ICW4, ICW2 vector 8, ICW3 slave on IR2, ICW4 8086 mode;
        // then mask everything but IRQ0.
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x08),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0xFE),
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
        a.sti()?;
        let mut wait = a.create_label();
        a.set_label(&mut wait)?;
        a.hlt()?;
        a.cmp(word_ptr(0x500), TICKS)?;
        a.jb(wait)?;
        a.mov(dx, 0x8900u32)?;
        for c in b"Shutdown" {
            a.mov(al, u32::from(*c))?;
            a.out(dx, al)?;
        }
        a.cli()?;
        a.hlt()?;
        a.assemble(0)
    })()
    .expect("assemble main");
    let handler = (|| -> Result<Vec<u8>, IcedError> {
        let mut a = CodeAssembler::new(16)?;
        a.push(ax)?;
        a.inc(word_ptr(0x500))?;
        a.mov(al, 0x20)?; // non-specific EOI
        a.out(0x20, al)?;
        a.pop(ax)?;
        a.iret()?;
        a.assemble(u64::from(HANDLER))
    })()
    .expect("assemble handler");
    assert!(main.len() < usize::from(HANDLER));
    let mut rom = vec![0xF4u8; 64 << 10];
    rom[..main.len()].copy_from_slice(&main);
    rom[usize::from(HANDLER)..usize::from(HANDLER) + handler.len()].copy_from_slice(&handler);
    let rv = rom.len() - 16;
    rom[rv..rv + 5].copy_from_slice(&[0xEA, 0x00, 0x00, 0x00, 0xF0]);
    rom
}

fn run(icount_ns: Option<u64>) -> (Exit, Duration, u64) {
    let dir = TempDir::new(if icount_ns.is_some() {
        "halt-icount"
    } else {
        "halt-host"
    });
    let bios = dir.path("bios.bin");
    std::fs::write(&bios, rom()).unwrap();
    let config = MachineConfig {
        bios: Some(bios),
        icount_ns,
        timeout: Some(Duration::from_secs(30)),
        ..MachineConfig::default()
    };
    let mut m = Machine::new(config).expect("build machine");
    let start = Instant::now();
    let exit = m.run().expect("run");
    (exit, start.elapsed(), m.instructions())
}

#[test]
fn halted_cpu_wakes_on_timer_interrupts_with_host_clock() {
    let (exit, elapsed, _) = run(None);
    assert_eq!(exit, Exit::PowerOff(0));
    assert!(
        elapsed >= Duration::from_millis(45),
        "{elapsed:?}: ticks came too fast"
    );
}

#[test]
fn halted_cpu_skips_to_timer_deadlines_with_instruction_clock() {
    let (exit, _, insns) = run(Some(10));
    assert_eq!(exit, Exit::PowerOff(0));
    // 50 wake-ups of a few instructions each: nowhere near the 5 M instructions that 50 ms
    // would take at 10 ns each if the CPU spun instead of skipping.
    assert!(insns < 10_000, "{insns} instructions");
}
