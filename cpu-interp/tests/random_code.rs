//! Random byte streams executed in every mode: whatever the bytes, the interpreter must reach
//! an architectural outcome (execute, fault, deliver, double-fault, shut down) and `run` must
//! return normally — never a host panic.
//!
//! Modes: real mode, 16-bit and 32-bit protected mode (CPL 0, GDT and IDT set up with gates
//! into the random code), 32-bit protected mode with 2-level paging, and 64-bit mode (IA-32e
//! with 4-level paging and a 64-bit IDT). The generator is a
//! seeded xorshift64*, so a failure reproduces from the printed seed and episode.
//!
//! Environment: `PCVM_RANDOM_STEPS` (default 10 000 000 instructions in total; 3 000 000 on
//! the JIT twin `jit_random_code.rs`),
//! `PCVM_RANDOM_SEED` (default 0x5EED_2026).

use std::sync::Arc;

use pcvm_core::cpu_state::cr;
use pcvm_core::memory::pam;
use pcvm_core::{
    Board, ClockMode, CpuBackend, CpuState, DescriptorTable, GuestMemory, RunLimit, SegReg,
    Segment, VirtualClock, VmExit,
};

mod backend;
use backend::TestCpu;

/// xorshift64* (Vigna): small, seeded, good enough to pick random bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CODE: u64 = 0x1_0000;
const CODE_LEN: u64 = 0x1_0000;
const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const PAGE_DIR: u64 = 0x30_0000;
/// 4-level tables of the 64-bit mode: PML4, PDPT, PD (2 MiB pages over 32 MiB).
const PML4: u64 = 0x38_0000;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Real,
    Protected16,
    Protected32,
    Paging32,
    Long64,
}

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

fn board() -> Board {
    let mem = GuestMemory::pc(32 << 20).expect("memory");
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

fn write(b: &Board, addr: u64, bytes: &[u8]) {
    b.memory
        .write_phys(addr, bytes)
        .expect("write guest memory");
}

/// Descriptor tables, interrupt vectors and page tables for `mode`, pointing into the
/// random code.
fn set_up_tables(b: &Board, rng: &mut Rng, mode: Mode) {
    // GDT: null, flat code32, flat data32, code16 at CODE, data16.
    let gdt = [
        0,
        descriptor(0, 0xFFFF_FFFF, 0x9B, 0x4),
        descriptor(0, 0xFFFF_FFFF, 0x93, 0x4),
        descriptor(CODE as u32, 0xFFFF, 0x9B, 0),
        descriptor(0, 0xFFFF, 0x93, 0),
        descriptor(0, 0xFFFF_FFFF, 0x9B, 0x2), // 64-bit code (L = 1)
    ];
    for (i, d) in gdt.iter().enumerate() {
        write(b, GDT + i as u64 * 8, &d.to_le_bytes());
    }
    for v in 0..256u64 {
        let off = rng.below(CODE_LEN - 16);
        match mode {
            Mode::Real => {
                let seg = (CODE >> 4) as u16;
                let mut e = (off as u16).to_le_bytes().to_vec();
                e.extend_from_slice(&seg.to_le_bytes());
                write(b, v * 4, &e);
            }
            Mode::Protected16 => {
                // 16-bit interrupt gate to the code16 segment.
                let gate = (off & 0xFFFF) | (0x18 << 16) | (0x86u64 << 40);
                write(b, IDT + v * 8, &gate.to_le_bytes());
            }
            Mode::Protected32 | Mode::Paging32 => {
                let target = CODE + off;
                let gate =
                    (target & 0xFFFF) | (0x08 << 16) | (0x8Eu64 << 40) | ((target >> 16) << 48);
                write(b, IDT + v * 8, &gate.to_le_bytes());
            }
            Mode::Long64 => {
                // 16-byte 64-bit interrupt gate to the 64-bit code segment.
                let target = CODE + off;
                let low =
                    (target & 0xFFFF) | (0x28 << 16) | (0x8Eu64 << 40) | ((target >> 16) << 48);
                let mut gate = low.to_le_bytes().to_vec();
                gate.extend_from_slice(&(target >> 32).to_le_bytes());
                write(b, IDT + v * 16, &gate);
            }
        }
    }
    if let Mode::Long64 = mode {
        let (pdpt, pd) = (PML4 + 0x1000, PML4 + 0x2000);
        write(b, PML4, &(pdpt | 0x7).to_le_bytes());
        write(b, pdpt, &(pd | 0x7).to_le_bytes());
        let entries: Vec<u8> = (0..16u64)
            .flat_map(|i| ((i << 21) | 0x87).to_le_bytes())
            .collect();
        write(b, pd, &entries);
    }
    if let Mode::Paging32 = mode {
        // Identity-map 32 MiB with 4 KiB pages.
        for i in 0..8u64 {
            let pt = PAGE_DIR + 0x1000 + i * 0x1000;
            write(b, PAGE_DIR + i * 4, &((pt as u32) | 0x7).to_le_bytes());
            let mut table = Vec::with_capacity(4096);
            for j in 0..1024u64 {
                let frame = (i * 1024 + j) * 4096;
                table.extend_from_slice(&((frame as u32) | 0x7).to_le_bytes());
            }
            write(b, pt, &table);
        }
    }
}

fn state_for(mode: Mode, rng: &mut Rng) -> CpuState {
    let mut s = CpuState::reset();
    for r in 0..8 {
        s.gpr[r] = rng.next() & 0xFFFF_FFFF;
    }
    if let Mode::Long64 = mode {
        for r in 0..16 {
            s.gpr[r] = match rng.below(3) {
                0 => rng.next(),
                1 => rng.below(32 << 20),
                _ => rng.next() & 0xFFFF_FFFF,
            };
        }
    }
    s.rflags = 0x2 | (rng.next() & 0x0CD5);
    let start = rng.below(CODE_LEN - 0x1000);
    match mode {
        Mode::Real => {
            *s.seg_mut(SegReg::Cs) = Segment {
                attributes: 0x9B,
                ..Segment::real_mode((CODE >> 4) as u16)
            };
            for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
                *s.seg_mut(seg) = Segment::real_mode((rng.below(0x100) as u16) << 8);
            }
            s.gpr[4] = 0xFFFE;
            s.rip = start;
            s.idtr = DescriptorTable {
                base: 0,
                limit: 0x3FF,
            };
        }
        Mode::Protected16 | Mode::Protected32 | Mode::Paging32 | Mode::Long64 => {
            s.cr0 = cr::CR0_PE | cr::CR0_ET;
            s.gdtr = DescriptorTable {
                base: GDT,
                limit: 6 * 8 - 1,
            };
            s.idtr = DescriptorTable {
                base: IDT,
                limit: if let Mode::Long64 = mode {
                    256 * 16 - 1
                } else {
                    256 * 8 - 1
                },
            };
            let flat_data = Segment {
                selector: 0x10,
                base: 0,
                limit: 0xFFFF_FFFF,
                attributes: 0xC093,
            };
            for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
                *s.seg_mut(seg) = flat_data;
            }
            s.gpr[4] = 0x8_0000 + rng.below(0x1000);
            if let Mode::Protected16 = mode {
                *s.seg_mut(SegReg::Cs) = Segment {
                    selector: 0x18,
                    base: CODE,
                    limit: 0xFFFF,
                    attributes: 0x9B,
                };
                s.rip = start;
            } else {
                *s.seg_mut(SegReg::Cs) = Segment {
                    selector: 0x08,
                    base: 0,
                    limit: 0xFFFF_FFFF,
                    attributes: 0xC09B,
                };
                s.rip = CODE + start;
            }
            if let Mode::Paging32 = mode {
                s.cr3 = PAGE_DIR;
                s.cr0 |= cr::CR0_PG;
            }
            if let Mode::Long64 = mode {
                s.cr3 = PML4;
                s.cr0 |= cr::CR0_PG;
                s.cr4 |= cr::CR4_PAE;
                s.efer = cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE;
                *s.seg_mut(SegReg::Cs) = Segment {
                    selector: 0x28,
                    base: 0,
                    limit: 0xFFFF_FFFF,
                    attributes: 0x9B | Segment::ATTR_L | Segment::ATTR_G,
                };
            }
        }
    }
    s
}

#[test]
fn random_code_never_panics() {
    let target: u64 = std::env::var("PCVM_RANDOM_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if backend::on_jit() {
            3_000_000
        } else {
            10_000_000
        });
    let seed: u64 = std::env::var("PCVM_RANDOM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_2026);
    let modes = [
        Mode::Real,
        Mode::Protected16,
        Mode::Protected32,
        Mode::Paging32,
        Mode::Long64,
    ];
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut total = 0u64;
    let mut per_mode = [0u64; 5];
    let mut exits = std::collections::BTreeMap::<String, u64>::new();
    let mut episode = 0u64;
    let mut b = board();
    let mut code = vec![0u8; CODE_LEN as usize];
    for byte in code.iter_mut() {
        *byte = rng.next() as u8;
    }
    while total < target {
        let mi = (episode % 5) as usize;
        let mode = modes[mi];
        if episode % 64 < 4 {
            // Fresh tables and code now and then: random stores corrupt both.
            for byte in code.iter_mut() {
                *byte = rng.next() as u8;
            }
            write(&b, CODE, &code);
            set_up_tables(&b, &mut rng, mode);
        } else {
            // Re-randomize a 4 KiB window.
            let at = rng.below(CODE_LEN / 4096) * 4096;
            let window: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
            write(&b, CODE + at, &window);
            set_up_tables(&b, &mut rng, mode);
        }
        let mut cpu = TestCpu::new();
        cpu.set_state(&state_for(mode, &mut rng))
            .expect("set state");
        let before = cpu.instructions_retired();
        let exit = cpu
            .run(&mut b, RunLimit::Instructions(4000))
            .unwrap_or_else(|e| panic!("seed {seed} episode {episode}: run failed: {e}"));
        let n = cpu.instructions_retired() - before;
        total += n;
        per_mode[mi] += n;
        let key = match exit {
            VmExit::Debug(_) => "Debug".to_string(),
            other => format!("{other:?}"),
        };
        *exits.entry(key).or_default() += 1;
        episode += 1;
        if episode.is_multiple_of(1000) {
            // A new board now and then so RAM garbage does not accumulate forever.
            b = board();
        }
    }
    println!(
        "random code: {total} instructions in {episode} episodes (seed {seed}); \
         real {}, pm16 {}, pm32 {}, pm32+paging {}, long64 {}; exits {exits:?}",
        per_mode[0], per_mode[1], per_mode[2], per_mode[3], per_mode[4]
    );
    assert!(total >= target);
    backend::report_jit("random code", false);
}
