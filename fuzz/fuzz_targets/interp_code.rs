//! Guest code through the reference interpreter: whatever the bytes, `run` must return
//! normally (execute, fault, deliver, double-fault, shut down) within the instruction budget.
//!
//! Input: byte 0 selects the start mode (real, flat 32-bit protected, flat 32-bit with
//! paging) and seeds the general registers; the rest is the code at `CODE`. Exceptions and
//! interrupts vector back into the code, as in cpu-interp/tests/random_code.rs.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pcvm_core::cpu_state::cr;
use pcvm_core::memory::pam;
use pcvm_core::{
    Board, ClockMode, CpuBackend, CpuState, DescriptorTable, GuestMemory, RunLimit, SegReg,
    Segment, VirtualClock,
};
use pcvm_cpu_interp::Interpreter;

const RAM: u64 = 2 << 20;
const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const PAGE_DIR: u64 = 0x4000;
const PAGE_TABLE: u64 = 0x5000;
const CODE: u64 = 0x1_0000;
const MAX_CODE: usize = 0x1_0000;
const BUDGET: u64 = 10_000;

/// A GDT descriptor from base, limit (bytes, pre-granularity) and access/flags.
fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let (limit, g) = if limit > 0xF_FFFF {
        (limit >> 12, 0x8)
    } else {
        (limit, 0)
    };
    u64::from(limit & 0xFFFF)
        | (u64::from(base & 0xFF_FFFF) << 16)
        | (u64::from(access) << 40)
        | (u64::from((limit >> 16) & 0xF) << 48)
        | (u64::from(flags | g) << 52)
        | (u64::from(base >> 24) << 56)
}

fn write(b: &Board, addr: u64, bytes: &[u8]) {
    b.memory
        .write_phys(addr, bytes)
        .expect("fuzz harness write");
}

fn board() -> Board {
    let mem = GuestMemory::pc(RAM).expect("2 MiB PC memory");
    for area in 0..13 {
        mem.set_pam(area, pam::READ_WRITE);
    }
    Board::new(
        Arc::new(mem),
        VirtualClock::new(ClockMode::InstructionCount {
            ns_per_instruction: 1,
        }),
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, code)) = data.split_first() else {
        return;
    };
    let code = &code[..code.len().min(MAX_CODE)];
    let mode = selector % 3;
    let mut b = board();
    write(&b, CODE, code);

    let mut s = CpuState::reset();
    // Registers from the selector so the fuzzer can vary them cheaply.
    for (r, v) in s.gpr.iter_mut().take(8).enumerate() {
        *v = u64::from(selector)
            .wrapping_mul(0x0101_0101)
            .rotate_left(r as u32 * 4)
            & 0xFFFF_FFFF;
    }
    s.rflags = 0x2;
    if mode == 0 {
        // Real mode: the IVT sends every vector to the start of the code.
        let seg = (CODE >> 4) as u16;
        for v in 0..256u64 {
            let mut e = 0u16.to_le_bytes().to_vec();
            e.extend_from_slice(&seg.to_le_bytes());
            write(&b, v * 4, &e);
        }
        *s.seg_mut(SegReg::Cs) = Segment {
            attributes: 0x9B,
            ..Segment::real_mode(seg)
        };
        for r in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
            *s.seg_mut(r) = Segment::real_mode(0x2000);
        }
        s.gpr[4] = 0xFFFE;
        s.rip = 0;
        s.idtr = DescriptorTable {
            base: 0,
            limit: 0x3FF,
        };
    } else {
        // Flat 32-bit protected mode at CPL 0: null, code32, data32; every IDT gate is a
        // 32-bit interrupt gate to the start of the code.
        let gdt = [
            0,
            descriptor(0, 0xFFFF_FFFF, 0x9B, 0x4),
            descriptor(0, 0xFFFF_FFFF, 0x93, 0x4),
        ];
        for (i, d) in gdt.iter().enumerate() {
            write(&b, GDT + i as u64 * 8, &d.to_le_bytes());
        }
        for v in 0..256u64 {
            let gate = (CODE & 0xFFFF) | (0x08 << 16) | (0x8Eu64 << 40) | ((CODE >> 16) << 48);
            write(&b, IDT + v * 8, &gate.to_le_bytes());
        }
        s.cr0 = cr::CR0_PE | cr::CR0_ET;
        s.gdtr = DescriptorTable {
            base: GDT,
            limit: 3 * 8 - 1,
        };
        s.idtr = DescriptorTable {
            base: IDT,
            limit: 256 * 8 - 1,
        };
        let flat_data = Segment {
            selector: 0x10,
            base: 0,
            limit: 0xFFFF_FFFF,
            attributes: 0xC093,
        };
        for r in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
            *s.seg_mut(r) = flat_data;
        }
        *s.seg_mut(SegReg::Cs) = Segment {
            selector: 0x08,
            base: 0,
            limit: 0xFFFF_FFFF,
            attributes: 0xC09B,
        };
        s.gpr[4] = 0x8_0000;
        s.rip = CODE;
        if mode == 2 {
            // Identity-map the first 4 MiB (the top half is beyond RAM) with 4 KiB pages.
            write(&b, PAGE_DIR, &((PAGE_TABLE as u32) | 0x7).to_le_bytes());
            let mut table = Vec::with_capacity(4096);
            for j in 0..1024u32 {
                table.extend_from_slice(&((j << 12) | 0x7).to_le_bytes());
            }
            write(&b, PAGE_TABLE, &table);
            s.cr3 = PAGE_DIR;
            s.cr0 |= cr::CR0_PG;
        }
    }

    let mut cpu = Interpreter::new();
    cpu.set_state(&s).expect("a valid start state");
    let exit = cpu.run(&mut b, RunLimit::Instructions(BUDGET));
    assert!(exit.is_ok(), "run failed: {exit:?}");
    assert!(
        cpu.instructions_retired() <= BUDGET,
        "retired {} instructions on a budget of {BUDGET}",
        cpu.instructions_retired()
    );
    let after = cpu.state();
    assert!(after.is_ok(), "state after run: {after:?}");
});
