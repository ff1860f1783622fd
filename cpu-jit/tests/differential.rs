//! Interpreter-vs-JIT differential over random 32-bit code blocks.
//!
//! Each random program (ALU, shifts, multiplies, moves, stack, SETcc/CMOVcc, Jcc, calls and
//! returns, plus instructions the translator leaves to the interpreter, faulting divides,
//! stores into its own code and wild addresses) runs from many random register and flag
//! states on two machines, one with the interpreter and one with the JIT compiling every block
//! on first sight. Some runs use paging with a not-present and a read-only data page, some
//! stop on an instruction budget mid-program. The final CPU state, the instruction count and
//! the memory the program can reach must be identical. Seeded and reproducible: a mismatch
//! names the program and run seed.
//!
//! Scale with `PCVM_JIT_DIFF_RUNS` (default 200,000 program runs). Known open mismatch beyond
//! the default: program 405 (a budget-limited paging run with a store into its own code, one
//! instruction apart); reproduce with `PCVM_JIT_DIFF_FIRST=405 PCVM_JIT_DIFF_RUNS=1000`.

#[path = "../../cpu-interp/tests/common/mod.rs"]
mod common;

use common::*;
use pcvm_core::cpu_state::cr;
use pcvm_core::{CpuBackend, CpuState, RunLimit, VmExit};
use pcvm_cpu_jit::JitBackend;

/// Data area the programs address through EBP and absolute displacements.
const DATA: u32 = 0x1_0000;
const DATA_LEN: usize = 0x3000;
/// Page tables for the paging runs.
const PD: u64 = 0x30_0000;
const PT: u64 = 0x30_1000;
/// Data pages made not present / read-only in paging runs.
const NP_PAGE: u32 = DATA + 0x2000;
const RO_PAGE: u32 = DATA + 0x1000;

/// xorshift64*.
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
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
}

/// Registers a program may write: not ESP or EBP (stack and data pointer).
const DEST: [u8; 6] = [0, 1, 2, 3, 6, 7];

/// A ModRM (+SIB/displacement) with `reg` in the reg field: a register (from DEST for
/// destinations) or one of the memory forms.
fn modrm(r: &mut Rng, reg: u8, out: &mut Vec<u8>, rm_is_dest: bool) {
    match r.below(10) {
        0..=4 => {
            let rm = if rm_is_dest {
                r.pick(&DEST)
            } else {
                r.below(8) as u8
            };
            out.push(0xC0 | (reg << 3) | rm);
        }
        5..=6 => {
            // [ebp + disp8]
            out.push(0x45 | (reg << 3));
            out.push(r.below(0x80) as u8);
        }
        7 => {
            // [disp32] in the data area, or (rarely) in the code or far away.
            out.push(0x05 | (reg << 3));
            let addr = match r.below(16) {
                0 => CODE as u32 + r.below(0x40) as u32,
                1 => r.next() as u32,
                _ => DATA + r.below(DATA_LEN as u64 - 4) as u32,
            };
            out.extend_from_slice(&addr.to_le_bytes());
        }
        8 => {
            // [ebp + esi*4 + disp8]
            out.push(0x44 | (reg << 3));
            out.push(0xB5);
            out.push(r.below(0x40) as u8);
        }
        _ => {
            // [ebp + disp32] across the three data pages.
            out.push(0x85 | (reg << 3));
            out.extend_from_slice(&(r.below(DATA_LEN as u64 - 4) as u32).to_le_bytes());
        }
    }
}

fn imm(r: &mut Rng, n: usize, out: &mut Vec<u8>) {
    let v = match r.below(4) {
        0 => 0,
        1 => u64::MAX,
        2 => 0x80 << (8 * (n - 1)),
        _ => r.next(),
    };
    out.extend_from_slice(&v.to_le_bytes()[..n]);
}

/// One random instruction.
fn insn(r: &mut Rng) -> Vec<u8> {
    let mut o = Vec::new();
    let reg = r.below(8) as u8;
    let dreg = r.pick(&DEST);
    match r.below(30) {
        0..=5 => {
            // ALU r/m,r / r,r/m in 8/16/32 bits.
            let op = r.below(8) as u8;
            if r.below(4) == 0 {
                o.push(0x66);
            }
            let form = r.below(4) as u8;
            o.push(op * 8 + form);
            if form < 2 {
                modrm(r, reg, &mut o, true);
            } else {
                modrm(r, dreg, &mut o, false);
            }
        }
        6..=8 => {
            let op = r.below(8) as u8;
            let p66 = r.below(4) == 0;
            if p66 {
                o.push(0x66);
            }
            match r.below(4) {
                0 => {
                    o.push(0x80);
                    modrm(r, op, &mut o, true);
                    imm(r, 1, &mut o);
                }
                1 => {
                    o.push(0x81);
                    modrm(r, op, &mut o, true);
                    imm(r, if p66 { 2 } else { 4 }, &mut o);
                }
                2 => {
                    o.push(0x83);
                    modrm(r, op, &mut o, true);
                    imm(r, 1, &mut o);
                }
                _ => {
                    o.push(op * 8 + 5);
                    imm(r, if p66 { 2 } else { 4 }, &mut o);
                }
            }
        }
        9 => {
            o.push(r.pick(&[0x84, 0x85]));
            modrm(r, reg, &mut o, false);
        }
        10 => {
            // INC/DEC reg, FE/FF /0 /1, NEG/NOT F6/F7 /2 /3.
            match r.below(3) {
                0 => o.push(r.pick(&[0x40, 0x48]) + dreg),
                1 => {
                    o.push(r.pick(&[0xFE, 0xFF]));
                    let k = r.below(2) as u8;
                    modrm(r, k, &mut o, true);
                }
                _ => {
                    o.push(r.pick(&[0xF6, 0xF7]));
                    let k = 2 + r.below(2) as u8;
                    modrm(r, k, &mut o, true);
                }
            }
        }
        11..=13 => {
            // MOV forms.
            match r.below(5) {
                0 => {
                    o.push(r.pick(&[0x88, 0x89]));
                    modrm(r, reg, &mut o, true);
                }
                1 => {
                    o.push(r.pick(&[0x8A, 0x8B]));
                    modrm(r, dreg, &mut o, false);
                }
                2 => {
                    o.push(0xB8 + dreg);
                    imm(r, 4, &mut o);
                }
                3 => {
                    o.push(0xB0 + r.pick(&[0, 1, 2, 3, 4, 5, 6, 7]) % 8);
                    imm(r, 1, &mut o);
                }
                _ => {
                    o.push(0xC7);
                    modrm(r, 0, &mut o, true);
                    imm(r, 4, &mut o);
                }
            }
        }
        14 => {
            // MOVZX/MOVSX, LEA.
            if r.below(3) == 0 {
                o.push(0x8D);
                let mut m = Vec::new();
                while m.is_empty() || m[0] >= 0xC0 {
                    m.clear();
                    modrm(r, dreg, &mut m, false);
                }
                o.extend_from_slice(&m);
            } else {
                if r.below(4) == 0 {
                    o.push(0x66);
                }
                o.push(0x0F);
                o.push(r.pick(&[0xB6, 0xB7, 0xBE, 0xBF]));
                modrm(r, dreg, &mut o, false);
            }
        }
        15..=16 => {
            // Shifts and rotates by imm8, 1 or CL.
            let op = r.below(8) as u8;
            match r.below(3) {
                0 => {
                    o.push(r.pick(&[0xC0, 0xC1]));
                    modrm(r, op, &mut o, true);
                    o.push(r.pick(&[0, 1, 2, 7, 8, 15, 16, 31, 33]));
                }
                1 => {
                    o.push(r.pick(&[0xD0, 0xD1]));
                    modrm(r, op, &mut o, true);
                }
                _ => {
                    o.push(r.pick(&[0xD2, 0xD3]));
                    modrm(r, op, &mut o, true);
                }
            }
        }
        17 => {
            // IMUL forms.
            if r.below(4) == 0 {
                o.push(0x66);
            }
            match r.below(3) {
                0 => {
                    o.extend_from_slice(&[0x0F, 0xAF]);
                    modrm(r, dreg, &mut o, false);
                }
                1 => {
                    o.push(0x6B);
                    modrm(r, dreg, &mut o, false);
                    imm(r, 1, &mut o);
                }
                _ => {
                    o.push(0x69);
                    modrm(r, dreg, &mut o, false);
                    imm(r, if o[0] == 0x66 { 2 } else { 4 }, &mut o);
                }
            }
        }
        18..=19 => {
            // PUSH/POP.
            match r.below(4) {
                0 => o.push(0x50 + reg),
                1 => o.push(0x58 + dreg),
                2 => {
                    o.push(0x6A);
                    imm(r, 1, &mut o);
                }
                _ => {
                    o.push(0x68);
                    imm(r, 4, &mut o);
                }
            }
        }
        20..=21 => {
            // SETcc / CMOVcc.
            let cc = r.below(16) as u8;
            if r.below(2) == 0 {
                o.extend_from_slice(&[0x0F, 0x90 + cc]);
                modrm(r, 0, &mut o, true);
            } else {
                o.extend_from_slice(&[0x0F, 0x40 + cc]);
                modrm(r, dreg, &mut o, false);
            }
        }
        22 => {
            // CBW/CWDE/CWD/CDQ, XCHG r,r, NOP.
            match r.below(4) {
                0 => {
                    if r.below(2) == 0 {
                        o.push(0x66);
                    }
                    o.push(r.pick(&[0x98, 0x99]));
                }
                1 => {
                    o.push(0x87);
                    o.push(0xC0 | (dreg << 3) | r.pick(&DEST));
                }
                _ => o.push(0x90),
            }
        }
        23 => {
            // Left to the interpreter: DIV (may #DE), BT, ADC via SAHF/LAHF, CLC/STC/CMC.
            match r.below(4) {
                0 => {
                    o.push(0xF7);
                    modrm(r, 6, &mut o, false);
                }
                1 => {
                    o.extend_from_slice(&[0x0F, 0xA3]);
                    modrm(r, reg, &mut o, false);
                }
                2 => o.push(r.pick(&[0x9E, 0x9F])),
                _ => o.push(r.pick(&[0xF8, 0xF9, 0xF5])),
            }
        }
        _ => {
            // Plain ALU reg,reg for dense flag chains.
            let op = r.below(8) as u8;
            o.push(op * 8 + 1);
            o.push(0xC0 | (reg << 3) | dreg);
        }
    }
    o
}

/// A random program at CODE ending in HLT: instructions with Jcc/CALL/RET woven in.
fn program(r: &mut Rng) -> Vec<u8> {
    let n = 4 + r.below(28) as usize;
    let mut code = Vec::new();
    for _ in 0..n {
        match r.below(12) {
            0 => {
                // Jcc over the next instruction.
                let next = insn(r);
                code.extend_from_slice(&[0x70 + r.below(16) as u8, next.len() as u8]);
                code.extend_from_slice(&next);
            }
            1 => {
                // CALL to the next instruction, then POP it (PIC idiom).
                code.extend_from_slice(&[0xE8, 0, 0, 0, 0, 0x58 + r.pick(&DEST)]);
            }
            2 => {
                // PUSH the address after RET, RET.
                let after = CODE as u32 + code.len() as u32 + 6;
                code.push(0x68);
                code.extend_from_slice(&after.to_le_bytes());
                code.push(0xC3);
            }
            _ => code.extend_from_slice(&insn(r)),
        }
    }
    code.push(0xF4);
    code
}

fn machine(paging: bool) -> Machine {
    let m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    if paging {
        // Identity-map the first 4 MiB with 4 KiB pages.
        m.write_u32(PD, PT as u32 | 3);
        for i in 0..1024u32 {
            let mut pte = (i << 12) | 3;
            if i == NP_PAGE >> 12 {
                pte = 0;
            } else if i == RO_PAGE >> 12 {
                pte = (i << 12) | 1;
            }
            m.write_u32(PT + 4 * u64::from(i), pte);
        }
    }
    m
}

fn random_state(r: &mut Rng, paging: bool) -> CpuState {
    let mut s = pm32_state();
    for i in [0usize, 1, 2, 3, 6, 7] {
        s.gpr[i] = match r.below(4) {
            0 => r.below(0x100),
            1 => u64::from(DATA) + r.below(DATA_LEN as u64),
            _ => r.next() & 0xFFFF_FFFF,
        };
    }
    // ESI small so [ebp+esi*4] stays near the data area most of the time.
    if r.below(2) == 0 {
        s.gpr[6] = r.below(0x200);
    }
    s.gpr[5] = u64::from(DATA) + r.below(0x100);
    s.rflags = 0x2 | (r.next() & 0x8D5);
    if paging {
        s.cr3 = PD;
        s.cr0 |= cr::CR0_PG | cr::CR0_WP;
    }
    s
}

/// Memory a program can reach that matters for the comparison.
fn snapshot(m: &Machine) -> Vec<u8> {
    let mut v = vec![0u8; DATA_LEN + 0x1000 + 0x100 + 0x20];
    let (data, rest) = v.split_at_mut(DATA_LEN);
    let (stack, rest) = rest.split_at_mut(0x1000);
    let (code, result) = rest.split_at_mut(0x100);
    m.board
        .memory
        .read_phys(u64::from(DATA), data)
        .expect("data");
    m.board
        .memory
        .read_phys(u64::from(STACK0_TOP) - 0x1000, stack)
        .expect("stack");
    m.board.memory.read_phys(CODE, code).expect("code");
    m.board.memory.read_phys(RESULT, result).expect("result");
    v
}

struct Side {
    m: Machine,
    jit: Option<JitBackend>,
}

impl Side {
    fn cpu(&mut self) -> &mut dyn CpuBackend {
        match &mut self.jit {
            Some(j) => j,
            None => &mut self.m.cpu,
        }
    }

    fn run(&mut self, limit: RunLimit) -> (VmExit, CpuState, u64, Vec<u8>) {
        let before = self.cpu().instructions_retired();
        let exit = match &mut self.jit {
            Some(j) => j.run(&mut self.m.board, limit),
            None => self.m.cpu.run(&mut self.m.board, limit),
        }
        .expect("run");
        let n = self.cpu().instructions_retired() - before;
        let s = self.cpu().state().expect("state");
        (exit, s, n, snapshot(&self.m))
    }
}

fn setup(side: &mut Side, code: &[u8], data: &[u8], s: &CpuState) {
    // Rewrite the code only when it changed (a write drops the page's compiled blocks).
    let mut old = vec![0u8; code.len()];
    side.m.board.memory.read_phys(CODE, &mut old).expect("code");
    if old != code {
        side.m.write(CODE, code);
    }
    side.m.write(u64::from(DATA), data);
    side.m.write(RESULT, &[0u8; 0x20]);
    side.cpu().set_state(s).expect("set_state");
}

#[test]
fn interpreter_and_jit_agree_on_random_blocks() {
    let runs: u64 = std::env::var("PCVM_JIT_DIFF_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let states_per_program = 500u64;
    let programs = runs.div_ceil(states_per_program);
    let mut sides = [false, true].map(|paging| {
        let interp = Side {
            m: machine(paging),
            jit: None,
        };
        let mut j = JitBackend::new().expect("jit");
        j.set_threshold(1);
        let jit = Side {
            m: machine(paging),
            jit: Some(j),
        };
        (interp, jit)
    });
    // Start at a given program to reproduce a reported mismatch quickly.
    let first: u64 = std::env::var("PCVM_JIT_DIFF_FIRST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut total = 0u64;
    for prog in first..first + programs {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ prog.wrapping_mul(0x1000_0001));
        let code = program(&mut r);
        let paging = prog % 2 == 1;
        let (a, b) = &mut sides[usize::from(paging)];
        for run in 0..states_per_program {
            let seed = r.next();
            let mut rs = Rng(seed | 1);
            let s = random_state(&mut rs, paging);
            let data: Vec<u8> = (0..DATA_LEN / 8)
                .flat_map(|_| rs.next().to_le_bytes())
                .collect();
            let limit = if rs.below(8) == 0 {
                RunLimit::Instructions(1 + rs.below(40))
            } else {
                RunLimit::Instructions(10_000)
            };
            setup(a, &code, &data, &s);
            setup(b, &code, &data, &s);
            let ra = a.run(limit);
            let rb = b.run(limit);
            if ra != rb {
                let (ea, sa, na, ma) = &ra;
                let (eb, sb, nb, mb) = &rb;
                let first_mem = ma.iter().zip(mb).position(|(x, y)| x != y);
                panic!(
                    "program {prog} run {run} (seed {seed:#x}, paging {paging}) differs\n\
                     code: {code:02x?}\nexit {ea:?} vs {eb:?}, retired {na} vs {nb}\n\
                     rip {:#x} vs {:#x}, rflags {:#x} vs {:#x}\ngpr {:x?}\n    {:x?}\n\
                     first memory difference at {first_mem:?}",
                    sa.rip, sb.rip, sa.rflags, sb.rflags, sa.gpr, sb.gpr
                );
            }
            total += 1;
        }
    }
    let stats = sides.iter().map(|(_, j)| j.jit.as_ref().map(|j| j.stats()));
    let native: u64 = stats.clone().flatten().map(|s| s.insns_native).sum();
    eprintln!(
        "{total} runs agree; JIT stats: {:?}",
        stats.collect::<Vec<_>>()
    );
    assert!(total >= runs);
    assert!(native > 0, "the JIT never ran compiled code");
}
