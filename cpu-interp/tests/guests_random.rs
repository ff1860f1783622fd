//! Hostile-guest robustness of the protected-mode machinery: random code, random GDT/IDT/TSS
//! contents and random register values in every mode (real, 16/32-bit protected at ring 0
//! and 3, 2-level and PAE paging, virtual-8086). Any outcome is architectural; the host must
//! never panic. Seeded and reproducible: a failure names the trial's seed.

mod common;

use common::*;
use pcvm_core::cpu_state::{cr, flags};
use pcvm_core::{CpuBackend, CpuState, RunLimit, SegReg, Segment};

/// xorshift64*: a small reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A plausible-looking but random descriptor: mostly valid types with random fields.
fn random_descriptor(r: &mut Rng) -> u64 {
    match r.below(4) {
        0 => r.next(),
        1 => seg_desc(
            (r.below(0x40) as u32) << 12,
            if r.below(2) == 0 {
                0xFFFF_FFFF
            } else {
                r.below(0x10000) as u32
            },
            (0x80 | (r.below(4) << 5) | 0x10 | r.below(16)) as u8,
            (r.below(2) << 2) as u8,
        ),
        2 => gate_desc(
            (r.below(32) as u16) << 3 | r.below(4) as u16,
            r.below(0x20000) as u32,
            (0x80 | (r.below(4) << 5) | [4, 5, 6, 7, 0xC, 0xE, 0xF][r.below(7) as usize]) as u8,
            r.below(32) as u8,
        ),
        _ => seg_desc(
            (0x3000 + r.below(8) * 0x100) as u32,
            [0x2B, 0x67, 0x20, 0x2068][r.below(4) as usize],
            [0x81, 0x83, 0x89, 0x8B][r.below(4) as usize],
            0,
        ),
    }
}

fn identity_paging(m: &Machine, pae: bool) {
    if pae {
        m.write_u64(0x13000, 0x14000 | 1);
        for i in 1..4 {
            m.write_u64(0x13000 + 8 * i, 0);
        }
        m.write_u64(0x14000, 0x87);
        m.write_u64(0x14008, 0x20_0000 | 0x87 | (1 << 63));
    } else {
        m.write_u32(0x10000, 0x87);
    }
}

fn trial(seed: u64) -> u64 {
    let mut r = Rng(seed | 1);
    let mut m = Machine::new();
    // On the JIT: compile only code run twice, not each block of random straight-line bytes.
    m.cpu.set_jit_threshold(2);
    m.standard_tables();
    m.install_recorders();
    // Random code around CODE and in the user/v86 areas, random data below.
    m.load(CODE, &r.bytes(0x1000));
    m.load(0x9000, &r.bytes(0x1000));
    m.load(0x1_0000 + 0x100, &r.bytes(0x100));
    // Corrupt some descriptors, gates and TSS fields.
    for _ in 0..r.below(12) {
        let sel = (8 + r.below(24)) as u16 * 8;
        m.set_gdt(sel, random_descriptor(&mut r));
    }
    for _ in 0..r.below(12) {
        m.set_idt(r.below(32) as u8, random_descriptor(&mut r));
    }
    for _ in 0..r.below(4) {
        m.write_u32((TSS + r.below(0x68)) & !3, r.next() as u32);
    }
    let mode = r.below(7);
    let mut s = match mode {
        0 => {
            let mut s = CpuState::reset();
            *s.seg_mut(SegReg::Cs) = Segment {
                selector: 0,
                base: 0,
                limit: 0xFFFF,
                attributes: 0x9B,
            };
            s.rip = CODE;
            s
        }
        _ => pm32_state(),
    };
    s.idtr.limit = if r.below(8) == 0 {
        r.below(0x800) as u16
    } else {
        0xFF
    };
    for i in 0..8 {
        if i != 4 {
            s.gpr[i] = r.next() & 0xFFFF_FFFF;
        }
    }
    // Keep REP counts short so the trials stay quick (string ops are not the subject here).
    s.gpr[1] &= 0xFFFF;
    match mode {
        2 | 3 => {
            identity_paging(&m, mode == 3);
            s.cr4 = cr::CR4_PSE | if mode == 3 { cr::CR4_PAE } else { 0 };
            s.cr3 = if mode == 3 { 0x13000 } else { 0x10000 };
            s.efer = if mode == 3 { cr::EFER_NXE } else { 0 };
            s.cr0 |= cr::CR0_PG | cr::CR0_WP;
        }
        4 => {
            *s.seg_mut(SegReg::Cs) = flat(SEL_CODE3, ACC_CODE3);
            for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss] {
                *s.seg_mut(seg) = flat(SEL_DATA3, ACC_DATA3);
            }
            s.rip = 0x9000;
            s.gpr[4] = u64::from(STACK3_TOP);
            s.rflags |= r.below(4) << 12;
        }
        5 => {
            for seg in SegReg::ALL {
                *s.seg_mut(seg) = Segment {
                    selector: 0x900,
                    base: 0x9000,
                    limit: 0xFFFF,
                    attributes: 0xF3,
                };
            }
            s.rip = 0;
            s.gpr[4] = 0xFFF0;
            s.rflags |= flags::VM | (r.below(4) << 12);
        }
        6 => {
            *s.seg_mut(SegReg::Cs) = Segment {
                selector: SEL_CODE16,
                base: 0,
                limit: 0xFFFF,
                attributes: 0x9B,
            };
        }
        _ => {}
    }
    m.set_state(&s);
    let before = m.cpu.instructions_retired();
    for _ in 0..20 {
        let exit = m
            .cpu
            .run(&mut m.board, RunLimit::Instructions(5_000))
            .expect("run");
        match exit {
            pcvm_core::VmExit::Shutdown => break,
            pcvm_core::VmExit::Halted => {
                // Wake it with an interrupt so delivery paths get exercised too.
                let v = r.below(256) as u8;
                if r.below(2) == 0 {
                    m.cpu.inject_interrupt(v).expect("inject");
                } else {
                    m.cpu.inject_nmi().expect("nmi");
                }
                let mut st = m.state();
                st.rflags |= flags::IF;
                m.set_state(&st);
            }
            _ => {}
        }
        let _ = m.cpu.translate(&m.board, r.next() & 0xFFFF_FFFF);
    }
    m.cpu.instructions_retired() - before
}

#[test]
fn random_system_state_never_panics() {
    let trials: u64 = std::env::var("PCVM_RANDOM_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let mut steps = 0;
    // PCVM_RANDOM_SEED=<hex> reruns one trial.
    let only: Option<u64> = std::env::var("PCVM_RANDOM_SEED")
        .ok()
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok());
    for seed in 0..trials {
        let seed = only.unwrap_or(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(seed + 1));
        let result = std::panic::catch_unwind(|| trial(seed));
        match result {
            Ok(n) => steps += n,
            Err(_) => panic!("host panic in trial with seed {seed:#x}"),
        }
    }
    eprintln!("random system-state trials: {trials}, instructions: {steps}");
    assert!(steps > trials, "the trials executed code");
}
