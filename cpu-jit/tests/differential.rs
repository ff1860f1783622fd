//! Interpreter-vs-JIT differential over random 32-bit and 64-bit code blocks.
//!
//! Each random program (ALU, shifts and rotates, multiplies and divides, moves, stack,
//! SETcc/CMOVcc, bit tests and scans, XADD/CMPXCHG, Jcc, calls, returns and indirect jumps,
//! plus instructions the translator leaves to the interpreter, faulting divides, TF and
//! interrupt shadows, stores into its own code and wild addresses) runs from many random
//! register and flag states on two machines, one with the interpreter and one with the JIT
//! compiling every block on first sight. 32-bit programs run half with paging (a not-present
//! and a read-only data page); 64-bit programs use REX registers, RIP-relative, FS/GS-based
//! and upper-half addresses, and non-canonical bases. Some runs stop on an instruction budget
//! mid-program. The final CPU state, the instruction count and the memory the program can
//! reach must be identical. Seeded and reproducible: a mismatch names the program and run
//! seed and the smallest budget that shows it, with the state just before.
//!
//! Knobs: `PCVM_JIT_DIFF_RUNS` (32-bit program runs, default 200,000; also the 64-bit default
//! when `PCVM_JIT_DIFF_RUNS_64` is unset, which otherwise is 100,000), `PCVM_JIT_DIFF_FIRST`
//! (first program number), `PCVM_JIT_DIFF_STATES` (states per program, default 500).

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

/// An SSE instruction the translator runs natively (moves, logic, compares, lane adds,
/// PMOVMSKB, PSHUFD, unpacks, MOVQ): (mandatory prefix or 0, opcode bytes after 0F, the
/// r/m operand is the destination, an imm8 follows, the r/m operand must be a register).
fn sse_native_op(r: &mut Rng) -> (u8, u8, bool, bool, bool) {
    const LOADS: [(u8, u8); 22] = [
        (0x66, 0x6F), // MOVDQA xmm, xmm/m128
        (0xF3, 0x6F), // MOVDQU
        (0x00, 0x10), // MOVUPS
        (0x00, 0x28), // MOVAPS
        (0x66, 0x28), // MOVAPD
        (0x66, 0xEF), // PXOR
        (0x66, 0xEB), // POR
        (0x66, 0xDB), // PAND
        (0x66, 0xDF), // PANDN
        (0x00, 0x57), // XORPS
        (0x00, 0x55), // ANDNPS
        (0x66, 0x74), // PCMPEQB
        (0x66, 0x75), // PCMPEQW
        (0x66, 0x76), // PCMPEQD
        (0x66, 0x60), // PUNPCKLBW
        (0x66, 0x61), // PUNPCKLWD
        (0x66, 0x62), // PUNPCKLDQ
        (0x66, 0x6C), // PUNPCKLQDQ
        (0x66, 0x6D), // PUNPCKHQDQ
        (0xF3, 0x7E), // MOVQ xmm, xmm/m64
        (0xF2, 0x10), // MOVSD xmm, xmm/m64
        (0xF3, 0x10), // MOVSS xmm, xmm/m32
    ];
    const ADDS: [u8; 8] = [0xFC, 0xFD, 0xFE, 0xD4, 0xF8, 0xF9, 0xFA, 0xFB];
    match r.below(8) {
        0..=2 => {
            let (p, o) = LOADS[r.below(LOADS.len() as u64) as usize];
            (p, o, false, false, false)
        }
        3 => (0x66, ADDS[r.below(8) as usize], false, false, false),
        4 => {
            // MOVDQA/MOVDQU/MOVUPS/MOVAPS stores, MOVQ xmm/m64, xmm, MOVSD/MOVSS stores.
            let (p, o) = [
                (0x66, 0x7F),
                (0xF3, 0x7F),
                (0x00, 0x11),
                (0x00, 0x29),
                (0x66, 0xD6),
                (0xF2, 0x11),
                (0xF3, 0x11),
            ][r.below(7) as usize];
            (p, o, true, false, false)
        }
        5 => (0x66, 0x70, false, true, false),  // PSHUFD
        6 => (0x66, 0xD7, false, false, true),  // PMOVMSKB r32, xmm
        _ => (0x66, 0xFE, false, false, false), // PADDD
    }
}

/// One random instruction.
fn insn(r: &mut Rng) -> Vec<u8> {
    let mut o = Vec::new();
    let reg = r.below(8) as u8;
    let dreg = r.pick(&DEST);
    match r.below(35) {
        33 | 34 => {
            // Translated natively: SSE moves, logic, compares and lane arithmetic.
            let xmm = r.below(8) as u8;
            let (prefix, op, rm_is_dest, has_imm, reg_rm) = sse_native_op(r);
            if prefix != 0 {
                o.push(prefix);
            }
            o.extend_from_slice(&[0x0F, op]);
            if reg_rm {
                o.push(0xC0 | (dreg << 3) | xmm);
            } else {
                modrm(r, xmm, &mut o, rm_is_dest);
            }
            if has_imm {
                o.push(r.below(256) as u8);
            }
        }
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
                2 => {
                    // XADD / CMPXCHG (LOCKed with a memory destination), BSWAP, LEAVE.
                    match r.below(4) {
                        0 | 1 => {
                            let mut m = Vec::new();
                            modrm(r, reg, &mut m, true);
                            if m[0] < 0xC0 && r.below(2) == 0 {
                                o.push(0xF0);
                            }
                            o.extend_from_slice(&[0x0F, r.pick(&[0xC0, 0xC1, 0xB0, 0xB1])]);
                            o.extend_from_slice(&m);
                        }
                        2 => o.extend_from_slice(&[0x0F, 0xC8 + dreg]),
                        _ => o.push(0xC9),
                    }
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
                2 => o.push(r.pick(&[0x9E, 0x9F, 0xFB, 0xFA])),
                _ => o.push(r.pick(&[0xF8, 0xF9, 0xF5])),
            }
        }
        30 | 31 => {
            // Run by the interpreter helper inside compiled blocks: SSE moves and conversions
            // between GPRs, memory and XMM registers (#UD without CR4.OSFXSR), POPF of
            // changed arithmetic flags, CLD/STD, CMPXCHG8B, CPUID.
            let xmm = r.below(8) as u8;
            match r.below(9) {
                0 => {
                    o.extend_from_slice(&[0x66, 0x0F, 0x6E]);
                    modrm(r, xmm, &mut o, false);
                }
                1 => {
                    o.extend_from_slice(&[0x66, 0x0F, 0x7E]);
                    modrm(r, xmm, &mut o, true);
                }
                2 => {
                    o.extend_from_slice(&[0xF2, 0x0F, 0x2A]);
                    modrm(r, xmm, &mut o, false);
                }
                3 => o.extend_from_slice(&[0xF2, 0x0F, 0x2C, 0xC0 | (dreg << 3) | xmm]),
                4 => {
                    o.extend_from_slice(&[0x9C, 0x80, 0x34, 0x24]);
                    imm(r, 1, &mut o);
                    o.push(0x9D);
                }
                5 => o.push(r.pick(&[0xFC, 0xFD])),
                6 => {
                    let mut m = Vec::new();
                    while m.is_empty() || m[0] >= 0xC0 {
                        m.clear();
                        modrm(r, 1, &mut m, false);
                    }
                    o.extend_from_slice(&[0x0F, 0xC7]);
                    o.extend_from_slice(&m);
                }
                7 => o.extend_from_slice(&[0x0F, 0xA2]),
                _ => {
                    o.extend_from_slice(&[0xF2, 0x0F, r.pick(&[0x10, 0x11])]);
                    modrm(r, xmm, &mut o, false);
                }
            }
        }
        32 => o.extend_from_slice(&string_op(r, false)),
        _ => {
            // Plain ALU reg,reg for dense flag chains.
            let op = r.below(8) as u8;
            o.push(op * 8 + 1);
            o.push(0xC0 | (reg << 3) | dreg);
        }
    }
    o
}

/// A string instruction (REP or not; MOVS, STOS, LODS, CMPS, SCAS) with a small count in
/// ECX and ESI/EDI set up in the data area (64-bit: RCX, RSI, RDI), sometimes reaching the
/// read-only or not-present page so a REP faults part-way. Always the end of the
/// interpreter's block: the helper runs it and the compiled block goes on to its successor.
fn string_op(r: &mut Rng, long: bool) -> Vec<u8> {
    let mut o = vec![0xB9];
    o.extend_from_slice(&(r.below(33) as u32).to_le_bytes());
    let disp = |r: &mut Rng| match r.below(8) {
        0 => 0x1000 - r.below(0x40) as u32,
        1 => 0x2000 - r.below(0x40) as u32,
        _ => 0x80 + r.below(0x80) as u32,
    };
    for modrm in [0xBD, 0xB5] {
        if long {
            o.push(0x48);
        }
        o.extend_from_slice(&[0x8D, modrm]);
        o.extend_from_slice(&disp(r).to_le_bytes());
    }
    let w = if long && r.below(2) == 0 { 0x48 } else { 0 };
    let op = r.pick(&[0xA4, 0xA5, 0xAA, 0xAB, 0xAC, 0xAD, 0xA6, 0xAE]);
    match r.below(6) {
        0 => {}
        1 => o.push(0xF2),
        2 => o.extend_from_slice(&[0xF3, 0x66]),
        _ => o.push(0xF3),
    }
    if w != 0 {
        o.push(w);
    }
    o.push(op);
    o
}

/// A random program at CODE ending in HLT: instructions with Jcc/CALL/RET woven in.
fn program(r: &mut Rng) -> Vec<u8> {
    let n = 4 + r.below(28) as usize;
    let mut code = Vec::new();
    for _ in 0..n {
        match r.below(12) {
            0 if r.below(16) == 0 => {
                // Set TF: single-step traps from here (#DB ends the run in its recorder).
                code.extend_from_slice(&[0x9C, 0x81, 0x0C, 0x24, 0, 1, 0, 0, 0x9D]);
            }
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

// --- 64-bit (long-mode) programs. ---

/// Registers a 64-bit program may write: not RSP, RBP, R12 (data pointers) or R13 (index).
const DEST64: [u8; 12] = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 14, 15];

/// A 64-bit instruction under construction: prefixes, REX bits, opcode, ModRM and friends,
/// with an optional RIP-relative displacement to fix up once its address is known.
#[derive(Default)]
struct Enc {
    prefixes: Vec<u8>,
    rex: u8,
    force_rex: bool,
    opcode: Vec<u8>,
    modrm: Vec<u8>,
    imm: Vec<u8>,
    /// (offset of the disp32 within `modrm`, target address) of a RIP-relative operand.
    rip_target: Option<(usize, u64)>,
}

impl Enc {
    /// The bytes of the instruction placed at `addr`.
    fn bytes(&self, addr: u64) -> Vec<u8> {
        let mut o = self.prefixes.clone();
        if self.rex != 0 || self.force_rex {
            o.push(0x40 | self.rex);
        }
        o.extend_from_slice(&self.opcode);
        let at = o.len();
        o.extend_from_slice(&self.modrm);
        o.extend_from_slice(&self.imm);
        if let Some((pos, target)) = self.rip_target {
            let next = addr + o.len() as u64;
            let disp = target.wrapping_sub(next) as u32;
            o[at + pos..at + pos + 4].copy_from_slice(&disp.to_le_bytes());
        }
        o
    }

    fn w(&mut self) {
        self.rex |= 8;
    }

    /// The reg field (0–15).
    fn reg(&mut self, reg: u8) -> u8 {
        if reg & 8 != 0 {
            self.rex |= 4;
        }
        (reg & 7) << 3
    }

    /// ModRM with `reg` and a register or memory r/m.
    fn modrm(&mut self, r: &mut Rng, reg: u8, rm_is_dest: bool) {
        let rf = self.reg(reg);
        match r.below(14) {
            0..=5 => {
                let rm = if rm_is_dest {
                    r.pick(&DEST64)
                } else {
                    r.below(16) as u8
                };
                if rm & 8 != 0 {
                    self.rex |= 1;
                }
                self.modrm.push(0xC0 | rf | (rm & 7));
            }
            6 => {
                // [rbp + disp8]
                self.modrm.push(0x45 | rf);
                self.modrm.push(r.below(0x80) as u8);
            }
            7 => {
                // [rip + disp32]: the data area, or (rarely) the code itself.
                self.modrm.push(0x05 | rf);
                self.modrm.extend_from_slice(&[0; 4]);
                let target = if r.below(12) == 0 {
                    CODE + r.below(0x40)
                } else {
                    u64::from(DATA) + r.below(DATA_LEN as u64 - 8)
                };
                self.rip_target = Some((1, target));
            }
            8 => {
                // [r12 + r13*8 + disp8]
                self.rex |= 3;
                self.modrm
                    .extend_from_slice(&[0x44 | rf, 0xEC, r.below(0x40) as u8]);
            }
            9 => {
                // [disp32] (no base, no index): the data area, or wild.
                self.modrm.extend_from_slice(&[0x04 | rf, 0x25]);
                let addr = if r.below(16) == 0 {
                    r.next() as u32
                } else {
                    DATA + r.below(DATA_LEN as u64 - 8) as u32
                };
                self.modrm.extend_from_slice(&addr.to_le_bytes());
            }
            10 => {
                // gs:[disp32]: GS-based, the base in the data area's alias.
                self.prefixes.push(0x65);
                self.modrm.extend_from_slice(&[0x04 | rf, 0x25]);
                let off = r.below(DATA_LEN as u64 - 8) as u32;
                self.modrm.extend_from_slice(&off.to_le_bytes());
            }
            11 => {
                // fs:[rbp + disp8]
                self.prefixes.push(0x64);
                self.modrm.push(0x45 | rf);
                self.modrm.push(r.below(0x80) as u8);
            }
            12 => {
                // [r12 + disp8] (r12 may be in the upper half, or not canonical).
                self.rex |= 1;
                self.modrm
                    .extend_from_slice(&[0x44 | rf, 0x24, r.below(0x80) as u8]);
            }
            _ => {
                // [rbp + disp32] across the three data pages.
                self.modrm.push(0x85 | rf);
                let d = r.below(DATA_LEN as u64 - 8) as u32;
                self.modrm.extend_from_slice(&d.to_le_bytes());
            }
        }
    }

    fn is_reg_rm(&self) -> bool {
        self.modrm.first().is_some_and(|m| m >> 6 == 3)
    }
}

fn imm_bytes(r: &mut Rng, n: usize) -> Vec<u8> {
    let v = match r.below(4) {
        0 => 0,
        1 => u64::MAX,
        2 => 0x80 << (8 * (n - 1)),
        _ => r.next(),
    };
    v.to_le_bytes()[..n].to_vec()
}

/// One random 64-bit instruction.
fn insn64(r: &mut Rng) -> Enc {
    let mut e = Enc::default();
    let reg = r.below(16) as u8;
    let dreg = r.pick(&DEST64);
    // Operand size: 8 (REX.W), 4, or (rarely) 2.
    let osz = match r.below(8) {
        0..=3 => 8,
        4..=6 => 4,
        _ => 2,
    };
    let sized = |e: &mut Enc| match osz {
        8 => e.w(),
        2 => e.prefixes.push(0x66),
        _ => {}
    };
    let imm_n = if osz == 2 { 2 } else { 4 };
    match r.below(39) {
        37 | 38 => {
            // Translated natively: SSE moves, logic, compares and lane arithmetic.
            let xmm = r.below(16) as u8;
            let (prefix, op, rm_is_dest, has_imm, reg_rm) = sse_native_op(r);
            if prefix != 0 {
                e.prefixes.push(prefix);
            }
            e.opcode.extend_from_slice(&[0x0F, op]);
            if reg_rm {
                if r.below(2) == 0 {
                    e.w();
                }
                let rf = e.reg(dreg);
                if xmm & 8 != 0 {
                    e.rex |= 1;
                }
                e.modrm.push(0xC0 | rf | (xmm & 7));
            } else {
                e.modrm(r, xmm, rm_is_dest);
            }
            if has_imm {
                e.imm.push(r.below(256) as u8);
            }
        }
        0..=5 => {
            // ALU r/m,r / r,r/m: byte forms (REX selects SPL..DIL, R8B..) or sized.
            let op = r.below(8) as u8;
            let form = r.below(4) as u8;
            if form & 1 == 1 {
                sized(&mut e);
            } else if r.below(2) == 0 {
                e.force_rex = true;
            }
            e.opcode.push(op * 8 + form);
            if form < 2 {
                e.modrm(r, reg, true);
            } else {
                e.modrm(r, dreg, false);
            }
        }
        6..=8 => {
            let op = r.below(8) as u8;
            match r.below(4) {
                0 => {
                    e.opcode.push(0x80);
                    e.modrm(r, op, true);
                    e.imm = imm_bytes(r, 1);
                }
                1 => {
                    sized(&mut e);
                    e.opcode.push(0x81);
                    e.modrm(r, op, true);
                    e.imm = imm_bytes(r, imm_n);
                }
                2 => {
                    sized(&mut e);
                    e.opcode.push(0x83);
                    e.modrm(r, op, true);
                    e.imm = imm_bytes(r, 1);
                }
                _ => {
                    sized(&mut e);
                    e.opcode.push(op * 8 + 5);
                    e.imm = imm_bytes(r, imm_n);
                }
            }
        }
        9 => {
            // TEST r/m,r and TEST r/m,imm.
            sized(&mut e);
            if r.below(2) == 0 {
                e.opcode.push(0x85);
                e.modrm(r, reg, false);
            } else {
                e.opcode.push(0xF7);
                e.modrm(r, 0, false);
                e.imm = imm_bytes(r, imm_n);
            }
        }
        10 => {
            // INC/DEC FE/FF /0 /1, NEG/NOT F6/F7 /2 /3.
            let byte = r.below(3) == 0;
            if !byte {
                sized(&mut e);
            }
            let k = if r.below(2) == 0 {
                r.below(2)
            } else {
                2 + r.below(2)
            } as u8;
            e.opcode.push(match (k < 2, byte) {
                (true, true) => 0xFE,
                (true, false) => 0xFF,
                (false, true) => 0xF6,
                (false, false) => 0xF7,
            });
            e.modrm(r, k, true);
        }
        11..=13 => {
            // MOV forms, MOVABS.
            match r.below(6) {
                0 => {
                    sized(&mut e);
                    e.opcode.push(0x89);
                    e.modrm(r, reg, true);
                }
                1 => {
                    sized(&mut e);
                    e.opcode.push(0x8B);
                    e.modrm(r, dreg, false);
                }
                2 => {
                    e.force_rex = r.below(2) == 0;
                    e.opcode.push(r.pick(&[0x88, 0x8A]));
                    e.modrm(r, dreg, true);
                }
                3 => {
                    // MOV r, imm32 / MOVABS r, imm64.
                    if dreg & 8 != 0 {
                        e.rex |= 1;
                    }
                    e.opcode.push(0xB8 + (dreg & 7));
                    if r.below(2) == 0 {
                        e.w();
                        e.imm = imm_bytes(r, 8);
                    } else {
                        e.imm = imm_bytes(r, 4);
                    }
                }
                _ => {
                    sized(&mut e);
                    e.opcode.push(0xC7);
                    e.modrm(r, 0, true);
                    e.imm = imm_bytes(r, imm_n);
                }
            }
        }
        14 => {
            // MOVZX/MOVSX, MOVSXD, LEA.
            match r.below(4) {
                0 => {
                    sized(&mut e);
                    e.opcode.push(0x8D);
                    while e.modrm.is_empty() || e.is_reg_rm() {
                        e.modrm.clear();
                        e.prefixes.retain(|&p| p == 0x66);
                        e.rip_target = None;
                        e.rex &= 8;
                        e.modrm(r, dreg, false);
                    }
                }
                1 => {
                    e.w();
                    e.opcode.push(0x63);
                    e.modrm(r, dreg, false);
                }
                _ => {
                    sized(&mut e);
                    e.opcode
                        .extend_from_slice(&[0x0F, r.pick(&[0xB6, 0xB7, 0xBE, 0xBF])]);
                    e.modrm(r, dreg, false);
                }
            }
        }
        15..=16 => {
            // Shifts and rotates by imm8, 1 or CL (RCL/RCR too).
            let op = r.below(8) as u8;
            let byte = r.below(4) == 0;
            if !byte {
                sized(&mut e);
            }
            match r.below(3) {
                0 => {
                    e.opcode.push(if byte { 0xC0 } else { 0xC1 });
                    e.modrm(r, op, true);
                    e.imm = vec![r.pick(&[0, 1, 2, 7, 8, 15, 16, 31, 32, 33, 63, 64])];
                }
                1 => {
                    e.opcode.push(if byte { 0xD0 } else { 0xD1 });
                    e.modrm(r, op, true);
                }
                _ => {
                    e.opcode.push(if byte { 0xD2 } else { 0xD3 });
                    e.modrm(r, op, true);
                }
            }
        }
        17 => {
            // IMUL forms, one-operand MUL/IMUL.
            sized(&mut e);
            match r.below(4) {
                0 => {
                    e.opcode.extend_from_slice(&[0x0F, 0xAF]);
                    e.modrm(r, dreg, false);
                }
                1 => {
                    e.opcode.push(0x6B);
                    e.modrm(r, dreg, false);
                    e.imm = imm_bytes(r, 1);
                }
                2 => {
                    e.opcode.push(0x69);
                    e.modrm(r, dreg, false);
                    e.imm = imm_bytes(r, imm_n);
                }
                _ => {
                    e.opcode.push(0xF7);
                    let k = r.pick(&[4, 5]);
                    e.modrm(r, k, false);
                }
            }
        }
        18..=19 => {
            // PUSH/POP (r8–r15 through REX.B), PUSH imm.
            match r.below(4) {
                0 => {
                    if reg & 8 != 0 {
                        e.rex |= 1;
                    }
                    e.opcode.push(0x50 + (reg & 7));
                }
                1 => {
                    if dreg & 8 != 0 {
                        e.rex |= 1;
                    }
                    e.opcode.push(0x58 + (dreg & 7));
                }
                2 => {
                    e.opcode.push(0x6A);
                    e.imm = imm_bytes(r, 1);
                }
                _ => {
                    e.opcode.push(0x68);
                    e.imm = imm_bytes(r, 4);
                }
            }
        }
        20..=21 => {
            // SETcc / CMOVcc.
            let cc = r.below(16) as u8;
            if r.below(2) == 0 {
                e.force_rex = r.below(2) == 0;
                e.opcode.extend_from_slice(&[0x0F, 0x90 + cc]);
                e.modrm(r, 0, true);
            } else {
                sized(&mut e);
                e.opcode.extend_from_slice(&[0x0F, 0x40 + cc]);
                e.modrm(r, dreg, false);
            }
        }
        22 => {
            // CBW/CWDE/CDQE, CWD/CDQ/CQO, XCHG, multi-byte NOP, ENDBR64.
            match r.below(5) {
                0 => {
                    sized(&mut e);
                    e.opcode.push(r.pick(&[0x98, 0x99]));
                }
                1 => {
                    sized(&mut e);
                    e.opcode.push(0x87);
                    e.modrm(r, dreg, true);
                }
                2 => {
                    e.opcode.extend_from_slice(&[0x0F, 0x1F]);
                    e.modrm(r, 0, false);
                }
                3 => e.opcode.extend_from_slice(&[0xF3, 0x0F, 0x1E, 0xFA]),
                _ => e.opcode.push(0x90),
            }
        }
        23 => {
            // BT/BTS/BTR/BTC r/m,r and r/m,imm8; BSF/BSR.
            sized(&mut e);
            match r.below(3) {
                0 => {
                    e.opcode
                        .extend_from_slice(&[0x0F, r.pick(&[0xA3, 0xAB, 0xB3, 0xBB])]);
                    e.modrm(r, reg, true);
                }
                1 => {
                    e.opcode.extend_from_slice(&[0x0F, 0xBA]);
                    let k = 4 + r.below(4) as u8;
                    e.modrm(r, k, true);
                    e.imm = vec![r.next() as u8];
                }
                _ => {
                    e.opcode.extend_from_slice(&[0x0F, r.pick(&[0xBC, 0xBD])]);
                    e.modrm(r, dreg, false);
                }
            }
        }
        25 => {
            // XADD / CMPXCHG (sometimes LOCKed with a memory destination), BSWAP.
            match r.below(3) {
                0 | 1 => {
                    let byte = r.below(4) == 0;
                    if !byte {
                        sized(&mut e);
                    }
                    let op = if r.below(2) == 0 { 0xC0 } else { 0xB0 } + u8::from(!byte);
                    e.opcode.extend_from_slice(&[0x0F, op]);
                    e.modrm(r, reg, true);
                    if !e.is_reg_rm() && r.below(2) == 0 {
                        e.prefixes.insert(0, 0xF0);
                    }
                }
                _ => {
                    if r.below(2) == 0 {
                        e.w();
                    }
                    if dreg & 8 != 0 {
                        e.rex |= 1;
                    }
                    e.opcode.extend_from_slice(&[0x0F, 0xC8 + (dreg & 7)]);
                }
            }
        }
        26 => {
            // TZCNT/LZCNT, PREFETCHT0, LEAVE (rarely: it moves RSP into the data area).
            match r.below(5) {
                0..=2 => {
                    e.prefixes.push(0xF3);
                    sized(&mut e);
                    e.opcode.extend_from_slice(&[0x0F, r.pick(&[0xBC, 0xBD])]);
                    e.modrm(r, dreg, false);
                }
                3 => {
                    e.opcode.extend_from_slice(&[0x0F, 0x18]);
                    while e.modrm.is_empty() || e.is_reg_rm() {
                        e.modrm.clear();
                        e.prefixes.clear();
                        e.rip_target = None;
                        e.rex = 0;
                        e.modrm(r, 1, false);
                    }
                }
                _ => e.opcode.push(0xC9),
            }
        }
        24 => {
            // DIV/IDIV (may #DE; often after XOR EDX,EDX or CQO so the quotient fits),
            // CLC/STC/CMC/STI/CLI, SHLD/SHRD by CL or imm8.
            match r.below(3) {
                0 => {
                    // The set-up instruction rides in front of the prefixes.
                    match r.below(3) {
                        0 => e.prefixes.extend_from_slice(&[0x31, 0xD2]),
                        1 => e.prefixes.extend_from_slice(&[0x48, 0x99]),
                        _ => {}
                    }
                    sized(&mut e);
                    e.opcode.push(0xF7);
                    let k = r.pick(&[6, 7]);
                    e.modrm(r, k, false);
                }
                1 => e.opcode.push(r.pick(&[0xF8, 0xF9, 0xF5, 0xFB, 0xFA])),
                _ => {
                    sized(&mut e);
                    if r.below(2) == 0 {
                        e.opcode.extend_from_slice(&[0x0F, r.pick(&[0xA5, 0xAD])]);
                        e.modrm(r, reg, true);
                    } else {
                        e.opcode.extend_from_slice(&[0x0F, r.pick(&[0xA4, 0xAC])]);
                        e.modrm(r, reg, true);
                        e.imm = vec![r.pick(&[0, 1, 4, 31, 32, 33, 63, 64, 200])];
                    }
                }
            }
        }
        34 | 35 => {
            // Run by the interpreter helper inside compiled blocks: SSE moves and conversions
            // (MOVD/MOVQ, CVTSI2SD, CVTTSD2SI, MOVSD), POPFQ of changed arithmetic flags,
            // CLD/STD, CMPXCHG8B/16B (16B faults when misaligned), CPUID.
            let xmm = r.below(16) as u8;
            match r.below(9) {
                0 | 1 => {
                    e.prefixes.push(0x66);
                    if r.below(2) == 0 {
                        e.w();
                    }
                    e.opcode
                        .extend_from_slice(&[0x0F, if r.below(2) == 0 { 0x6E } else { 0x7E }]);
                    e.modrm(r, xmm, true);
                }
                2 => {
                    e.prefixes.push(0xF2);
                    if r.below(2) == 0 {
                        e.w();
                    }
                    e.opcode.extend_from_slice(&[0x0F, 0x2A]);
                    e.modrm(r, xmm, false);
                }
                3 => {
                    e.prefixes.push(0xF2);
                    if r.below(2) == 0 {
                        e.w();
                    }
                    e.opcode.extend_from_slice(&[0x0F, 0x2C]);
                    let rf = e.reg(dreg);
                    if xmm & 8 != 0 {
                        e.rex |= 1;
                    }
                    e.modrm.push(0xC0 | rf | (xmm & 7));
                }
                4 => {
                    e.opcode.extend_from_slice(&[0x9C, 0x80, 0x34, 0x24]);
                    e.opcode.extend_from_slice(&imm_bytes(r, 1));
                    e.opcode.push(0x9D);
                }
                5 => e.opcode.push(r.pick(&[0xFC, 0xFD])),
                6 => {
                    if r.below(2) == 0 {
                        e.w();
                    }
                    e.opcode.extend_from_slice(&[0x0F, 0xC7]);
                    while e.modrm.is_empty() || e.is_reg_rm() {
                        e.modrm.clear();
                        e.prefixes.clear();
                        e.rip_target = None;
                        e.rex &= 8;
                        e.modrm(r, 1, false);
                    }
                }
                7 => e.opcode.extend_from_slice(&[0x0F, 0xA2]),
                _ => {
                    e.prefixes.push(0xF2);
                    e.opcode.extend_from_slice(&[0x0F, r.pick(&[0x10, 0x11])]);
                    e.modrm(r, xmm, false);
                }
            }
        }
        36 => e.opcode = string_op(r, true),
        _ => {
            // Plain ALU reg,reg for dense flag chains.
            sized(&mut e);
            let op = r.below(8) as u8;
            e.opcode.push(op * 8 + 1);
            let rf = e.reg(reg);
            if dreg & 8 != 0 {
                e.rex |= 1;
            }
            e.modrm.push(0xC0 | rf | (dreg & 7));
        }
    }
    e
}

/// A random 64-bit program at CODE ending in HLT, with Jcc/CALL/RET/indirect JMP woven in.
fn program64(r: &mut Rng) -> Vec<u8> {
    let n = 4 + r.below(28) as usize;
    let mut code = Vec::new();
    let at = |code: &Vec<u8>| CODE + code.len() as u64;
    for _ in 0..n {
        match r.below(14) {
            0 if r.below(16) == 0 => {
                // Set TF: single-step traps from here (#DB ends the run in its recorder).
                code.extend_from_slice(&[0x9C, 0x48, 0x81, 0x0C, 0x24, 0, 1, 0, 0, 0x9D]);
            }
            0 => {
                // Jcc over the next instruction.
                let next = insn64(r).bytes(at(&code) + 2);
                code.extend_from_slice(&[0x70 + r.below(16) as u8, next.len() as u8]);
                code.extend_from_slice(&next);
            }
            1 => {
                // CALL to the next instruction, then POP it.
                let d = r.pick(&DEST64);
                code.extend_from_slice(&[0xE8, 0, 0, 0, 0]);
                if d & 8 != 0 {
                    code.push(0x41);
                }
                code.push(0x58 + (d & 7));
            }
            2 => {
                // PUSH the address after RET, RET.
                let after = at(&code) as u32 + 6;
                code.push(0x68);
                code.extend_from_slice(&after.to_le_bytes());
                code.push(0xC3);
            }
            3 => {
                // LEA r, [rip+3]; JMP r (to the instruction after the JMP).
                let d = r.pick(&DEST64);
                let rex = 0x48 | if d & 8 != 0 { 4 } else { 0 };
                code.extend_from_slice(&[rex, 0x8D, 0x05 | ((d & 7) << 3), 3, 0, 0, 0]);
                code.extend_from_slice(&[0x41, 0xFF, 0xE0 | (d & 7)]);
                if d & 8 == 0 {
                    // No REX.B needed: replace it by a one-byte NOP after the JMP instead.
                    let len = code.len();
                    code[len - 3] = 0xFF;
                    code[len - 2] = 0xE0 | (d & 7);
                    code[len - 1] = 0x90;
                }
            }
            _ => {
                let e = insn64(r);
                let b = e.bytes(at(&code));
                code.extend_from_slice(&b);
            }
        }
    }
    code.push(0xF4);
    code
}

fn machine64() -> Machine {
    let mut m = Machine::new();
    m.standard_tables();
    m.set_gdt(SEL_CODE64, 0x00AF_9A00_0000_FFFF);
    long_mode_tables(&m);
    install_recorders64(&mut m);
    // A not-present and a read-only data page.
    m.write_u64(common::PT + 8 * u64::from(NP_PAGE >> 12), 0);
    m.write_u64(
        common::PT + 8 * u64::from(RO_PAGE >> 12),
        u64::from(RO_PAGE) | 1,
    );
    m
}

fn random_state64(r: &mut Rng) -> CpuState {
    let mut s = long64_state();
    s.idtr = pcvm_core::DescriptorTable {
        base: IDT,
        limit: 32 * 16 - 1,
    };
    for &i in &DEST64 {
        s.gpr[usize::from(i)] = match r.below(5) {
            0 => r.below(0x100),
            1 => u64::from(DATA) + r.below(DATA_LEN as u64),
            2 => r.next() & 0xFFFF_FFFF,
            _ => r.next(),
        };
    }
    // RBP: the data area (low or through the upper-half alias); R12/R13: base and index.
    let alias = if r.below(4) == 0 { HIGH_ALIAS } else { 0 };
    s.gpr[5] = alias + u64::from(DATA) + r.below(0x100);
    s.gpr[12] = match r.below(16) {
        0 => 0x8000_0000_0000_0000 | r.next(),
        1..=4 => HIGH_ALIAS + u64::from(DATA) + r.below(0x100),
        _ => u64::from(DATA) + r.below(0x100),
    };
    s.gpr[13] = r.below(0x100);
    if r.below(2) == 0 {
        s.gpr[4] = HIGH_ALIAS + u64::from(STACK0_TOP);
    }
    // fs:[rbp+disp8] stays in the data area (never the handlers or tables above it).
    s.seg_mut(pcvm_core::SegReg::Fs).base = r.below(0x800);
    s.seg_mut(pcvm_core::SegReg::Gs).base = HIGH_ALIAS + u64::from(DATA);
    s.cr0 |= cr::CR0_WP;
    s.rflags = 0x2 | (r.next() & 0x8D5);
    if r.below(4) != 0 {
        s.cr4 |= cr::CR4_OSFXSR;
    }
    random_xmm(r, &mut s);
    s
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
    if r.below(4) != 0 {
        s.cr4 |= cr::CR4_OSFXSR;
    }
    random_xmm(r, &mut s);
    if paging {
        s.cr3 = PD;
        s.cr0 |= cr::CR0_PG | cr::CR0_WP;
    }
    s
}

/// XMM registers of a few byte values, so that lanes of different registers are often
/// equal (PCMPEQ) and sign bits vary (PMOVMSKB).
fn random_xmm(r: &mut Rng, s: &mut CpuState) {
    for x in s.fpu.xmm.iter_mut() {
        for b in x.iter_mut() {
            *b = r.pick(&[0x00, 0x01, 0x7F, 0x80, 0xFF, 0x00]);
        }
    }
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

    fn run(&mut self, limit: RunLimit) -> Outcome {
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

/// Random contents for the data area.
fn random_data(r: &mut Rng) -> Vec<u8> {
    (0..DATA_LEN / 8)
        .flat_map(|_| r.next().to_le_bytes())
        .collect()
}

/// What a run gives: the exit, the state, instructions retired and the compared memory.
type Outcome = (VmExit, CpuState, u64, Vec<u8>);

/// Start both sides from `s` with `code` and `data` and run them to `limit`.
fn run_both(
    a: &mut Side,
    b: &mut Side,
    code: &[u8],
    data: &[u8],
    s: &CpuState,
    limit: RunLimit,
) -> (Outcome, Outcome) {
    setup(a, code, data, s);
    setup(b, code, data, s);
    (a.run(limit), b.run(limit))
}

fn setup(side: &mut Side, code: &[u8], data: &[u8], s: &CpuState) {
    // Rewrite the code (and the compared bytes after it) only when it changed: a write drops
    // the page's compiled blocks.
    let mut want = code.to_vec();
    want.resize(code.len().max(0x100), 0);
    let mut old = vec![0u8; want.len()];
    side.m.board.memory.read_phys(CODE, &mut old).expect("code");
    if old != want {
        side.m.write(CODE, &want);
    }
    side.m.write(u64::from(DATA), data);
    // The stack is compared too: every run starts from the same one.
    side.m.write(u64::from(STACK0_TOP) - 0x1000, &[0u8; 0x1000]);
    side.m.write(RESULT, &[0u8; 0x20]);
    side.cpu().set_state(s).expect("set_state");
}

/// The smallest instruction budget (up to the failing run's) for which the two backends
/// disagree, with both results there and the agreed state one instruction earlier: where to
/// start reading a mismatch.
fn first_divergence(
    a: &mut Side,
    b: &mut Side,
    code: &[u8],
    data: &[u8],
    s: &CpuState,
    limit: RunLimit,
) -> String {
    let RunLimit::Instructions(max) = limit else {
        return String::new();
    };
    let run = |a: &mut Side, b: &mut Side, n: u64| {
        run_both(a, b, code, data, s, RunLimit::Instructions(n))
    };
    let Some(n) = (1..=max).find(|&n| {
        let (x, y) = run(a, b, n);
        x != y
    }) else {
        return "no budget below the run's own shows the difference".into();
    };
    let show = |r: &Outcome| {
        format!(
            "exit {:?} retired {} rip {:#x} rflags {:#x} gpr {:x?}",
            r.0, r.2, r.1.rip, r.1.rflags, r.1.gpr
        )
    };
    let (pa, _) = run(a, b, n - 1);
    let mut bytes = [0u8; 24];
    let at = pa.1.rip & 0x3F_FFFF;
    let _ = a.m.board.memory.read_phys(at, &mut bytes);
    let (x, y) = run(a, b, n);
    let (dx, dy) = (format!("{:?}", x.1), format!("{:?}", y.1));
    let at = dx.bytes().zip(dy.bytes()).position(|(p, q)| p != q);
    let state_diff = at.map(|i| {
        let lo = i.saturating_sub(60);
        format!(
            "\n  state differs at: {} | {}",
            &dx[lo..(i + 60).min(dx.len())],
            &dy[lo..(i + 60).min(dy.len())]
        )
    });
    let mem_diff = x.3.iter().zip(&y.3).position(|(p, q)| p != q);
    format!(
        "memory differs at {mem_diff:?}{}\n",
        state_diff.unwrap_or_default()
    ) + &format!(
        "first difference at budget {n}; agreed before: {}\n  code there: {bytes:02x?}\n  \
         interp: {}\n  jit:    {}",
        show(&pa),
        show(&x),
        show(&y)
    )
}

/// Which random programs a differential run generates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// 32-bit protected mode, half of the programs with paging.
    Pm32,
    /// 64-bit long mode (always paging).
    Long64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Run `runs` random (program, state) pairs of `kind` on both backends and require equal
/// results. Knobs: `PCVM_JIT_DIFF_FIRST` (first program number), `PCVM_JIT_DIFF_STATES`
/// (states per program).
fn differential(kind: Kind, runs: u64) {
    let states_per_program = env_u64("PCVM_JIT_DIFF_STATES", 500).max(1);
    let programs = runs.div_ceil(states_per_program);
    let mut sides = [false, true].map(|paging| {
        let m = || match kind {
            Kind::Pm32 => machine(paging),
            Kind::Long64 => machine64(),
        };
        let interp = Side { m: m(), jit: None };
        let mut j = JitBackend::new().expect("jit");
        j.set_threshold(1);
        // The report counts every compiled-block run, native jumps included.
        j.count_block_runs(true);
        let jit = Side {
            m: m(),
            jit: Some(j),
        };
        (interp, jit)
    });
    // Start at a given program to reproduce a reported mismatch quickly.
    let first = env_u64("PCVM_JIT_DIFF_FIRST", 0);
    let mut total = 0u64;
    for prog in first..first + programs {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ prog.wrapping_mul(0x1000_0001));
        let code = match kind {
            Kind::Pm32 => program(&mut r),
            Kind::Long64 => program64(&mut r),
        };
        let paging = kind == Kind::Long64 || prog % 2 == 1;
        let (a, b) = &mut sides[usize::from(kind == Kind::Pm32 && paging)];
        // Every program rewrites the same code bytes; without a flush the JIT would soon
        // leave that often-rewritten code to its interpreter for good (its recompile limit).
        a.cpu().flush_caches();
        b.cpu().flush_caches();
        for run in 0..states_per_program {
            let seed = r.next();
            let mut rs = Rng(seed | 1);
            let s = match kind {
                Kind::Pm32 => random_state(&mut rs, paging),
                Kind::Long64 => random_state64(&mut rs),
            };
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
                let first_diff = first_divergence(a, b, &code, &data, &s, limit);
                let (ea, sa, na, ma) = &ra;
                let (eb, sb, nb, mb) = &rb;
                let first_mem = ma.iter().zip(mb).position(|(x, y)| x != y);
                panic!(
                    "program {prog} run {run} (seed {seed:#x}, paging {paging}) differs\n\
                     code: {code:02x?}\nexit {ea:?} vs {eb:?}, retired {na} vs {nb}\n\
                     rip {:#x} vs {:#x}, rflags {:#x} vs {:#x}\ngpr {:x?}\n    {:x?}\n\
                     first memory difference at {first_mem:?}\n{first_diff}",
                    sa.rip, sb.rip, sa.rflags, sb.rflags, sa.gpr, sb.gpr
                );
            }
            total += 1;
        }
    }
    let stats: Vec<_> = sides
        .iter()
        .filter_map(|(_, j)| j.jit.as_ref().map(JitBackend::stats))
        .collect();
    let native: u64 = stats.iter().map(|s| s.insns_native).sum();
    let blocks: u64 = sides
        .iter()
        .filter_map(|(_, j)| j.jit.as_ref().map(JitBackend::blocks_run))
        .sum();
    let fallbacks: Vec<_> = sides
        .iter()
        .filter_map(|(_, j)| j.jit.as_ref().map(|j| j.fallback_profile(8)))
        .collect();
    let interpreted: Vec<_> = sides
        .iter()
        .filter_map(|(_, j)| j.jit.as_ref().map(|j| j.interpreted_profile(8)))
        .collect();
    eprintln!(
        "{total} runs agree ({blocks} compiled-block runs, {native} instructions native); \
         JIT stats: {stats:?}; top fallbacks: {fallbacks:?}; interpreted in compiled blocks: \
         {interpreted:?}"
    );
    assert!(total >= runs);
    assert!(native > 0, "the JIT never ran compiled code");
}

#[test]
fn interpreter_and_jit_agree_on_random_blocks() {
    differential(Kind::Pm32, env_u64("PCVM_JIT_DIFF_RUNS", 200_000));
}

#[test]
fn interpreter_and_jit_agree_on_random_64bit_blocks() {
    differential(
        Kind::Long64,
        env_u64(
            "PCVM_JIT_DIFF_RUNS_64",
            env_u64("PCVM_JIT_DIFF_RUNS", 100_000),
        ),
    );
}

/// A rotate whose flags the next instructions overwrite, with a native SSE instruction in
/// between that leaves the block when SSE is unusable: the interpreter then delivers #UD
/// with the rotate's flags, so they must be computed (the case the 2,000,000-run random
/// differential found).
fn sse_exit_program(long: bool) -> Vec<u8> {
    use iced_x86::code_asm::*;
    let bitness = if long { 64 } else { 32 };
    asm(bitness, CODE, |a| {
        a.imul_3(ax, ax, -0x80)?;
        a.rol(esi, 1)?;
        a.pmovmskb(ebx, xmm6)?;
        a.cmove(edi, eax)?;
        a.or(edx, eax)?;
        a.movdqa(xmm1, xmm6)?;
        a.pxor(xmm1, xmmword_ptr(ebp + 0x10))?;
        a.hlt()
    })
}

/// Native SSE instructions leave the block with the right flags whether SSE is usable or
/// not (CR4.OSFXSR set in half the states): [`sse_exit_program`] at every budget.
#[test]
fn sse_exits_keep_the_flags() {
    let jits =
        program_matches_the_interpreter_at_every_budget(sse_exit_program, 0x55E0_0000, 12, |s| {
            if s.gpr[1] & 1 == 0 {
                s.cr4 &= !cr::CR4_OSFXSR;
            } else {
                s.cr4 |= cr::CR4_OSFXSR;
            }
        });
    assert!(jits.iter().all(|j| j.stats().insns_native > 0));
}

/// A fixed program whose translated instructions write registers and leave lazy flags right
/// before instructions the JIT runs through its interpreter helper, and read them right
/// after (GPRs to and from XMM registers, LAHF/CMC/PUSHF on the flags, CPUID writing four
/// registers, a REP STOSB with DF set and cleared).
fn helper_program(long: bool) -> Vec<u8> {
    use iced_x86::code_asm::*;
    let bitness = if long { 64 } else { 32 };
    asm(bitness, CODE, |a| {
        if long {
            a.add(rax, rbx)?;
            a.mov(r8, rcx)?;
            a.xor(r9d, edx)?;
            a.lea(r10, qword_ptr(rbp + 8))?;
            a.inc(r14)?;
            a.movq(xmm0, rax)?;
            a.adc(r15, r8)?;
            a.cmc()?;
            a.setb(cl)?;
            a.movd(edx, xmm0)?;
            a.add(rdx, rsi)?;
            a.pushfq()?;
            a.pop(rbx)?;
            a.sub(rsi, rdi)?;
            a.cvtsi2sd(xmm1, rsi)?;
            a.cmovb(rdi, rax)?;
            a.lahf()?;
            a.adc(r11, r9)?;
            a.cpuid()?;
            a.mov(r11, rax)?;
            a.xor(r11, rbx)?;
            a.std()?;
            a.mov(ecx, 5)?;
            a.lea(rdi, qword_ptr(rbp + 0x40))?;
            a.rep().stosb()?;
            a.cld()?;
            a.add(rax, rcx)?;
            a.adc(rdi, rdx)?;
        } else {
            a.add(eax, ebx)?;
            a.mov(esi, ecx)?;
            a.xor(edi, edx)?;
            a.movd(xmm0, eax)?;
            a.adc(esi, edi)?;
            a.cmc()?;
            a.setb(cl)?;
            a.movd(edx, xmm0)?;
            a.add(edx, esi)?;
            a.lahf()?;
            a.sbb(ebx, eax)?;
            a.pushfd()?;
            a.pop(ebx)?;
            a.sub(esi, edi)?;
            a.cvtsi2sd(xmm1, esi)?;
            a.cmovb(edi, eax)?;
            a.cpuid()?;
            a.xor(ebx, eax)?;
            a.std()?;
            a.mov(ecx, 5)?;
            a.lea(edi, dword_ptr(ebp + 0x40))?;
            a.rep().stosb()?;
            a.cld()?;
            a.add(eax, ecx)?;
            a.adc(edi, edx)?;
        }
        a.hlt()
    })
}

/// The helper path loses no register or flag: the fixed [`helper_program`] from random
/// states, stopped at every instruction budget, ends in the interpreter's state on the JIT
/// (which compiles every block on first sight and must have run instructions through the
/// helper).
#[test]
fn interpreter_helper_keeps_registers_and_flags() {
    let jits =
        program_matches_the_interpreter_at_every_budget(helper_program, 0x5EED_0000, 40, |s| {
            s.cr4 |= cr::CR4_OSFXSR
        });
    for jit in &jits {
        let interpreted = jit.interpreted_profile(16);
        assert!(
            // MOVD is translated natively now; CVTSI2SD is not.
            [
                iced_x86::Mnemonic::Cvtsi2sd,
                iced_x86::Mnemonic::Cmc,
                iced_x86::Mnemonic::Cpuid
            ]
            .iter()
            .all(|m| interpreted.iter().any(|(i, _)| i == m)),
            "the helper did not run the uncovered instructions: {interpreted:?}"
        );
        assert!(jit.stats().insns_native > 0);
    }
}

/// `program` (32- and 64-bit) from 20 random states (each adjusted by `adjust`), stopped at
/// every instruction budget from 1 to `budgets` and at 10,000, ends in the same state on the
/// interpreter and on the JIT, which compiles every block on first sight. Returns the JITs.
fn program_matches_the_interpreter_at_every_budget(
    program: fn(bool) -> Vec<u8>,
    seed: u64,
    budgets: u64,
    adjust: fn(&mut CpuState),
) -> Vec<JitBackend> {
    let mut jits = Vec::new();
    for kind in [Kind::Pm32, Kind::Long64] {
        let long = kind == Kind::Long64;
        let m = || if long { machine64() } else { machine(false) };
        let mut a = Side { m: m(), jit: None };
        let mut j = JitBackend::new().expect("jit");
        j.set_threshold(1);
        let mut b = Side {
            m: m(),
            jit: Some(j),
        };
        let code = program(long);
        let mut r = Rng(seed + u64::from(long));
        for _ in 0..20 {
            let mut s = if long {
                random_state64(&mut r)
            } else {
                random_state(&mut r, false)
            };
            adjust(&mut s);
            let data = random_data(&mut r);
            for budget in (1..=budgets).chain([10_000]) {
                let limit = RunLimit::Instructions(budget);
                let (ra, rb) = run_both(&mut a, &mut b, &code, &data, &s, limit);
                assert!(
                    ra == rb,
                    "{}-bit program differs at budget {budget}\n{}",
                    if long { 64 } else { 32 },
                    first_divergence(&mut a, &mut b, &code, &data, &s, limit)
                );
            }
        }
        jits.extend(b.jit);
    }
    jits
}

/// A loop whose body is one block branching back to its own start, which the JIT runs as a
/// loop inside the compiled function: partial register writes, a carry read from the
/// previous pass, memory reads, writes and read-modify-writes, the stack, and an address
/// register that moves each pass.
fn self_loop_program(long: bool) -> Vec<u8> {
    use iced_x86::code_asm::*;
    let bitness = if long { 64 } else { 32 };
    asm(bitness, CODE, |a| {
        let mut top = a.create_label();
        if long {
            a.mov(ecx, 7)?;
            a.set_label(&mut top)?;
            a.mov(rbx, qword_ptr(rbp + 8))?;
            a.adc(rax, rbx)?;
            a.mov(qword_ptr(rbp + 0x20), rax)?;
            a.mov(r9b, al)?;
            a.add(byte_ptr(rbp + 0x30), r9b)?;
            a.add(r12, qword_ptr(rbp + 0x18))?;
            a.push(rax)?;
            a.pop(rsi)?;
            a.rol(rdi, 3)?;
            a.mov(dh, cl)?;
            a.inc(rbp)?;
            a.dec(ecx)?;
            a.jne(top)?;
        } else {
            a.mov(ecx, 7)?;
            a.set_label(&mut top)?;
            a.mov(ebx, dword_ptr(ebp + 8))?;
            a.adc(eax, ebx)?;
            a.mov(dword_ptr(ebp + 0x20), eax)?;
            a.mov(dl, al)?;
            a.add(byte_ptr(ebp + 0x30), dl)?;
            a.push(eax)?;
            a.pop(esi)?;
            a.rol(edi, 3)?;
            a.mov(dh, cl)?;
            a.inc(ebp)?;
            a.dec(ecx)?;
            a.jne(top)?;
        }
        a.hlt()
    })
}

/// A self loop keeps every register, flag and memory write: [`self_loop_program`] from
/// random states, stopped at every instruction budget (inside and between passes), ends in
/// the interpreter's state on the JIT.
#[test]
fn self_loop_matches_the_interpreter_at_every_budget() {
    let jits = program_matches_the_interpreter_at_every_budget(
        self_loop_program,
        0x100B_0000,
        100,
        |_| {},
    );
    assert!(jits.iter().all(|j| j.stats().insns_native > 0));
}

/// A loop of three blocks (one branching around another), which the JIT compiles into one
/// function once its blocks are compiled: carries, partial registers, memory and a moving
/// address register across its in-function branches.
fn region_loop_program(long: bool) -> Vec<u8> {
    use iced_x86::code_asm::*;
    let bitness = if long { 64 } else { 32 };
    asm(bitness, CODE, |a| {
        let mut top = a.create_label();
        let mut skip = a.create_label();
        a.mov(ecx, 11)?;
        a.set_label(&mut top)?;
        if long {
            a.mov(rbx, qword_ptr(rbp + 8))?;
            a.add(rax, rbx)?;
            a.cmp(rax, qword_ptr(rbp + 0x10))?;
            a.jb(skip)?;
            a.mov(qword_ptr(rbp + 0x20), rax)?;
            a.adc(r10, 3)?;
            a.mov(r9b, al)?;
            a.set_label(&mut skip)?;
            a.rol(rdi, 3)?;
            a.mov(dh, cl)?;
            a.sbb(r11d, esi)?;
        } else {
            a.mov(ebx, dword_ptr(ebp + 8))?;
            a.add(eax, ebx)?;
            a.cmp(eax, dword_ptr(ebp + 0x10))?;
            a.jb(skip)?;
            a.mov(dword_ptr(ebp + 0x20), eax)?;
            a.adc(edx, 3)?;
            a.mov(bl, al)?;
            a.set_label(&mut skip)?;
            a.rol(edi, 3)?;
            a.mov(dh, cl)?;
            a.sbb(esi, ebx)?;
        }
        a.inc(ebp)?;
        a.dec(ecx)?;
        a.jne(top)?;
        a.hlt()
    })
}

/// A loop region keeps every register, flag and memory write: [`region_loop_program`] from
/// random states, stopped at every instruction budget, ends in the interpreter's state.
#[test]
fn loop_region_matches_the_interpreter_at_every_budget() {
    let jits = program_matches_the_interpreter_at_every_budget(
        region_loop_program,
        0x4E61_0000,
        160,
        |_| {},
    );
    for j in &jits {
        assert!(j.stats().insns_native > 0);
        assert!(j.stats().loop_regions > 0, "no loop region was formed");
    }
}

/// A loop that calls a function from two places: `func` (its RET returns to either) follows
/// the loop's code at `CODE`, or starts on the next page with `other_page`.
fn call_loop_program(long: bool, other_page: bool) -> Vec<u8> {
    use iced_x86::code_asm::*;
    let bitness = if long { 64 } else { 32 };
    let func_at = CODE + 0x1000;
    let body = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.rol(eax, 3)?;
        if long {
            a.add(rax, qword_ptr(rbp + 8))?;
        } else {
            a.add(eax, dword_ptr(ebp + 8))?;
        }
        a.sbb(edx, esi)?;
        a.ret()
    };
    let mut code = asm(bitness, CODE, |a| {
        let mut top = a.create_label();
        let mut func = a.create_label();
        a.mov(ecx, 9)?;
        a.set_label(&mut top)?;
        a.add(eax, ebx)?;
        if other_page {
            a.call(func_at)?;
        } else {
            a.call(func)?;
        }
        a.xor(ebx, eax)?;
        if other_page {
            a.call(func_at)?;
        } else {
            a.call(func)?;
        }
        a.sub(edx, eax)?;
        if long {
            a.mov(qword_ptr(rbp + 0x20), rbx)?;
        } else {
            a.mov(dword_ptr(ebp + 0x20), ebx)?;
        }
        a.dec(ecx)?;
        a.jne(top)?;
        a.hlt()?;
        a.set_label(&mut func)?;
        if other_page {
            a.nop()
        } else {
            body(a)
        }
    });
    if other_page {
        code.resize(0x1000, 0xCC);
        code.extend(asm(bitness, func_at, body));
    }
    code
}

/// A loop region takes in the function a loop calls, on the loop's page or the next: its
/// RET goes on in the function, and every budget ends where the interpreter ends.
#[test]
fn call_region_matches_the_interpreter_at_every_budget() {
    for other_page in [false, true] {
        let program = if other_page {
            |long| call_loop_program(long, true)
        } else {
            |long| call_loop_program(long, false)
        };
        let jits =
            program_matches_the_interpreter_at_every_budget(program, 0xCA11_0000, 120, |_| {});
        for j in &jits {
            assert!(j.stats().insns_native > 0);
            assert!(
                j.stats().loop_regions > 0,
                "no loop region was formed (callee on the next page: {other_page})"
            );
        }
    }
}

/// A region's copy of a block on another page runs only while that page still maps where it
/// did: the callee's page is mapped elsewhere (other code there) between runs, and the JIT
/// follows the new mapping as the interpreter does.
#[test]
fn region_follows_a_remapped_callee_page() {
    use iced_x86::code_asm::*;
    let code = call_loop_program(false, true);
    // The other physical page: the callee adding instead of rotating.
    const OTHER: u64 = 0x2_0000;
    let other = asm(32, CODE + 0x1000, |a| {
        a.add(eax, 0x1234_5678)?;
        a.add(eax, dword_ptr(ebp + 8))?;
        a.sbb(edx, esi)?;
        a.ret()
    });
    let callee_pte = PT + 4 * ((CODE + 0x1000) >> 12);
    let mut a = Side {
        m: machine(true),
        jit: None,
    };
    let mut j = JitBackend::new().expect("jit");
    j.set_threshold(1);
    let mut b = Side {
        m: machine(true),
        jit: Some(j),
    };
    for side in [&mut a, &mut b] {
        side.m.write(OTHER, &other);
    }
    let mut r = Rng(0x5EA_0000);
    let limit = RunLimit::Instructions(10_000);
    for round in 0..6 {
        // Even rounds: the callee's page maps to itself; odd rounds: to OTHER.
        let frame = if round % 2 == 0 { CODE + 0x1000 } else { OTHER };
        for side in [&mut a, &mut b] {
            side.m.write_u32(callee_pte, frame as u32 | 3);
        }
        for run in 0..4 {
            let s = random_state(&mut r, true);
            let data = random_data(&mut r);
            let (ra, rb) = run_both(&mut a, &mut b, &code, &data, &s, limit);
            assert!(
                ra == rb,
                "round {round} run {run} differs\n{}",
                first_divergence(&mut a, &mut b, &code, &data, &s, limit)
            );
        }
    }
    let stats = b.jit.as_ref().map(JitBackend::stats).expect("jit");
    assert!(stats.loop_regions > 0, "no loop region was formed");
}

/// Blocks compiled on the compile thread run like the ones compiled inline: a long loop
/// (interpreted until its block is installed, then native) ends in the interpreter's state,
/// and some of it did run natively.
#[test]
fn background_compiled_blocks_match_the_interpreter() {
    use iced_x86::code_asm::*;
    let code = asm(32, CODE, |a| {
        let mut top = a.create_label();
        a.mov(ecx, 400_000)?;
        a.set_label(&mut top)?;
        a.add(eax, ebx)?;
        a.xor(ebx, eax)?;
        a.rol(ebx, 5)?;
        a.mov(dword_ptr(ebp + 0x20), eax)?;
        a.dec(ecx)?;
        a.jne(top)?;
        a.hlt()
    });
    let mut a = Side {
        m: machine(false),
        jit: None,
    };
    let mut j = JitBackend::new().expect("jit");
    j.set_threshold(1);
    j.set_background_compile(true).expect("compile thread");
    let mut b = Side {
        m: machine(false),
        jit: Some(j),
    };
    let mut r = Rng(0xB6_0000);
    let limit = RunLimit::Instructions(10_000_000);
    // The compile thread's timing varies: run until some of the loop ran natively (its
    // block is installed within the first run unless the host is starved).
    for run in 0..20 {
        let s = random_state(&mut r, false);
        let data = random_data(&mut r);
        let (ra, rb) = run_both(&mut a, &mut b, &code, &data, &s, limit);
        assert!(ra == rb, "background-compiled loop differs in run {run}");
        if b.jit.as_ref().is_some_and(|j| j.stats().insns_native > 0) {
            return;
        }
    }
    panic!("no block compiled on the compile thread ever ran");
}

/// Code stays interpreted until its block has run as many times as the threshold says, and is
/// compiled on the run after: the run counts the dispatcher keeps for cold code (in its
/// linear-RIP cache and its block map) add up exactly while nothing else runs.
#[test]
fn blocks_compile_once_they_ran_threshold_times() {
    use iced_x86::code_asm::*;
    const THRESHOLD: u64 = 40;
    let code = asm(32, CODE, |a| {
        let mut top = a.create_label();
        a.mov(ecx, 1000)?;
        a.set_label(&mut top)?;
        a.add(eax, ebx)?;
        a.xor(ebx, eax)?;
        a.dec(ecx)?;
        a.jne(top)?;
        a.hlt()
    });
    let mut j = JitBackend::new().expect("jit");
    j.set_threshold(THRESHOLD as u32);
    let mut b = Side {
        m: machine(false),
        jit: Some(j),
    };
    let mut a = Side {
        m: machine(false),
        jit: None,
    };
    let mut r = Rng(0xC0_1D00);
    let s = random_state(&mut r, false);
    let data = vec![0u8; DATA_LEN];
    setup(&mut a, &code, &data, &s);
    setup(&mut b, &code, &data, &s);
    let compiled = |b: &Side| b.jit.as_ref().map_or(0, |j| j.stats().blocks_compiled);
    // The first block (MOV and the first pass) is 5 instructions, each later pass 4: the
    // loop's own block has run THRESHOLD - 1 times.
    let first = 5 + 4 * (THRESHOLD - 1);
    let limit = RunLimit::Instructions(first);
    assert!(a.run(limit) == b.run(limit));
    assert_eq!(compiled(&b), 0, "compiled before the threshold");
    let limit = RunLimit::Instructions(4 * 10);
    assert!(a.run(limit) == b.run(limit), "the compiled loop differs");
    assert_eq!(
        compiled(&b),
        1,
        "the loop's block was not compiled at the threshold"
    );
    assert!(b.jit.as_ref().is_some_and(|j| j.stats().insns_native > 0));
}
