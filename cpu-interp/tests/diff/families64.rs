//! Case generators for 64-bit mode only (SDM Vol. 1 §3.2.1, Vol. 2A §2.2.1): REX prefixes
//! (R8–R15, SPL/BPL/SIL/DIL), 64-bit operands, the default 64-bit stack and branch size,
//! RIP-relative addressing, 64-bit string and loop counters. Every case is `long_only`: it runs
//! natively in 64-bit mode and in the interpreter in 64-bit mode, and all sixteen 64-bit GPRs
//! are compared.
//!
//! Memory operands are addressed through RAX–RDI with their upper halves cleared (see
//! [`rm64`]), so the legacy `mem_at` address forms reach the data region unchanged.

use super::asm::{data_offset, mem_at, modrm, Mem, Rm};
use super::families::{base, Family};
use super::prng::{fill_region, Rng};
use super::undef::{self, ShiftOp, Undefined};
use super::{Case, CODE_BASE, DATA_BASE, DATA_SIZE};

/// Every 64-bit family, in report order.
pub fn all() -> Vec<Family> {
    vec![
        Family {
            name: "alu64",
            gen: alu64,
        },
        Family {
            name: "unary64",
            gen: unary64,
        },
        Family {
            name: "shift-rotate64",
            gen: shift64,
        },
        Family {
            name: "shld-shrd64",
            gen: double_shift64,
        },
        Family {
            name: "mul-div64",
            gen: mul_div64,
        },
        Family {
            name: "bit-ops64",
            gen: bit_ops64,
        },
        Family {
            name: "bmi1-64",
            gen: bmi1_64,
        },
        Family {
            name: "mov-convert64",
            gen: mov_convert64,
        },
        Family {
            name: "xadd-cmpxchg64",
            gen: xadd_cmpxchg64,
        },
        Family {
            name: "string64",
            gen: string64,
        },
        Family {
            name: "stack-call64",
            gen: stack64,
        },
        Family {
            name: "rip-relative",
            gen: rip_relative,
        },
        Family {
            name: "loop-jrcxz64",
            gen: loop64,
        },
    ]
}

/// Operand size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum S {
    B,
    W,
    D,
    Q,
}

impl S {
    fn bytes(self) -> u32 {
        match self {
            S::B => 1,
            S::W => 2,
            S::D => 4,
            S::Q => 8,
        }
    }
    fn bits(self) -> u32 {
        self.bytes() * 8
    }
    /// The opcode's w bit.
    fn w(self) -> u8 {
        u8::from(self != S::B)
    }
}

/// Mostly 64-bit operands, with 32-bit ones (zero extension) and the rest now and then.
fn size(rng: &mut Rng) -> S {
    rng.pick(&[S::Q, S::Q, S::Q, S::D, S::D, S::W, S::B])
}

/// A 64-bit value biased towards the edges of every width.
fn interesting64(rng: &mut Rng) -> u64 {
    const EDGES: [u64; 10] = [
        0,
        1,
        u64::MAX,
        1 << 63,
        (1 << 63) - 1,
        0xFFFF_FFFF,
        1 << 32,
        0x8000_0000,
        0xFFFF_FFFF_8000_0000,
        0x7F,
    ];
    match rng.below(6) {
        0 => rng.pick(&EDGES),
        1 => u64::from(rng.interesting()),
        2 => rng.interesting() as i32 as i64 as u64,
        3 => (u64::from(rng.interesting()) << 32) | u64::from(rng.interesting()),
        4 => u64::from(rng.below(64)),
        _ => rng.next_u64(),
    }
}

/// Random 64-bit registers, flags and memory.
fn base64(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    for r in 0..16 {
        let v = interesting64(rng);
        set64(&mut c, r, v);
    }
    c.long_only = true;
    c
}

fn get64(c: &Case, r: u8) -> u64 {
    let r = usize::from(r & 15);
    if r < 8 {
        u64::from(c.regs[r]) | (u64::from(c.hi[r]) << 32)
    } else {
        c.ext[r - 8]
    }
}

fn set64(c: &mut Case, r: u8, v: u64) {
    let r = usize::from(r & 15);
    if r < 8 {
        c.regs[r] = v as u32;
        c.hi[r] = (v >> 32) as u32;
    } else {
        c.ext[r - 8] = v;
    }
}

/// Mark all 64 bits of GPR `r` undefined.
fn undef_reg(u: &mut Undefined, r: u8) {
    let r = usize::from(r & 15);
    if r < 8 {
        u.regs[r] = u32::MAX;
        u.hi[r] = u32::MAX;
    } else {
        u.ext[r - 8] = u64::MAX;
    }
}

/// An r/m operand: a GPR 0–15 or memory in the data region.
#[derive(Clone, Copy, Debug)]
enum Rm64 {
    Reg(u8),
    Mem(Mem),
}

/// A register or memory r/m operand of `len` bytes; memory is addressed through RAX–RDI
/// (never those in `keep`) whose upper halves are cleared. Returns the data offset for memory.
fn rm64(rng: &mut Rng, c: &mut Case, len: u32, keep: &[u8]) -> (Rm64, Option<u32>) {
    if rng.chance(1, 2) {
        (Rm64::Reg(rng.below(16) as u8), None)
    } else {
        let off = data_offset(rng, len);
        (Rm64::Mem(mem64(rng, c, off, keep)), Some(off))
    }
}

/// A memory operand at data offset `off` (see [`rm64`]).
fn mem64(rng: &mut Rng, c: &mut Case, off: u32, keep: &[u8]) -> Mem {
    let m = mem_at(rng, &mut c.regs, off, keep);
    for r in [m.base, m.index].into_iter().flatten() {
        c.hi[usize::from(r)] = 0;
    }
    m
}

/// Append [REX] `opcode` ModRM for `reg` (a register 0–15 or /digit) and `rm`. REX.W for
/// 64-bit operands; a REX prefix is forced for byte operands so 4–7 name SPL–DIL.
fn emit(code: &mut Vec<u8>, s: S, reg: u8, rm: Rm64, opcode: &[u8]) {
    let (rm_reg, rm_low) = match rm {
        Rm64::Reg(r) => (r >> 3, Rm::Reg(r & 7)),
        Rm64::Mem(m) => (0, Rm::Mem(m)),
    };
    let rex = 0x40 | (u8::from(s == S::Q) << 3) | ((reg >> 3 & 1) << 2) | (rm_reg & 1);
    if rex != 0x40 || s == S::B {
        code.push(rex);
    }
    code.extend_from_slice(opcode);
    modrm(code, reg & 7, rm_low);
}

/// The operand-size prefix of a 16-bit operand.
fn osize(code: &mut Vec<u8>, s: S) {
    if s == S::W {
        code.push(0x66);
    }
}

/// An immediate of `s` (at most 4 bytes; 64-bit operations sign-extend an imm32).
fn imm(code: &mut Vec<u8>, s: S, v: u32) {
    let n = s.bytes().min(4) as usize;
    code.extend_from_slice(&v.to_le_bytes()[..n]);
}

/// The little-endian value of `len` bytes at `off` in the case's initial data region.
fn mem_value(c: &Case, off: u32, len: u32) -> u64 {
    let region = fill_region(c.mem_seed, c.mem_style, DATA_SIZE);
    let mut b = [0u8; 8];
    b[..len as usize].copy_from_slice(&region[off as usize..(off + len) as usize]);
    u64::from_le_bytes(b)
}

/// The value of an r/m operand before the instruction (low `s` bytes; byte registers 4–7 are
/// SPL–DIL since the generators always emit REX for byte operands).
fn rm_value(c: &Case, s: S, rm: Rm64, off: Option<u32>) -> u64 {
    let m = if s == S::Q {
        u64::MAX
    } else {
        (1u64 << s.bits()) - 1
    };
    match (rm, off) {
        (Rm64::Reg(r), _) => get64(c, r) & m,
        (Rm64::Mem(_), Some(o)) => mem_value(c, o, s.bytes()),
        (Rm64::Mem(_), None) => 0,
    }
}

/// ADD OR ADC SBB AND SUB XOR CMP TEST with REX registers and 64-bit operands.
fn alu64(rng: &mut Rng) -> Case {
    let mut c = base64(rng);
    let op = rng.below(9) as u8; // 8 = TEST
    let s = size(rng);
    let reg = rng.below(16) as u8;
    let (rm, _) = rm64(rng, &mut c, s.bytes(), &[]);
    let immv = rng.interesting();
    let form = rng.below(4);
    let mut code = Vec::new();
    if matches!(rm, Rm64::Mem(_)) && form != 1 && op < 7 && rng.chance(1, 6) {
        code.push(0xF0);
    }
    osize(&mut code, s);
    match (form, op) {
        (0 | 1, 8) => emit(&mut code, s, reg, rm, &[0x84 | s.w()]),
        (0, _) => emit(&mut code, s, reg, rm, &[op * 8 + s.w()]),
        (1, _) => emit(&mut code, s, reg, rm, &[op * 8 + 2 + s.w()]),
        (_, 8) => {
            emit(&mut code, s, 0, rm, &[0xF6 | s.w()]);
            imm(&mut code, s, immv);
        }
        (2, _) => {
            emit(&mut code, s, op, rm, &[0x80 | s.w()]);
            imm(&mut code, s, immv);
        }
        _ => {
            let opc = if s == S::B { 0x80 } else { 0x83 };
            emit(&mut code, s, op, rm, &[opc]);
            code.push(immv as u8);
        }
    }
    c.code = code;
    if matches!(op, 1 | 4 | 6 | 8) {
        c.undef = Undefined::flags(undef::LOGIC);
    }
    c
}

/// INC DEC NOT NEG (FE/FF /0 /1, F6/F7 /2 /3) with REX.
fn unary64(rng: &mut Rng) -> Case {
    let mut c = base64(rng);
    let s = size(rng);
    let (rm, _) = rm64(rng, &mut c, s.bytes(), &[]);
    let mut code = Vec::new();
    if matches!(rm, Rm64::Mem(_)) && rng.chance(1, 6) {
        code.push(0xF0);
    }
    osize(&mut code, s);
    let kind = rng.below(4) as u8;
    let opc = if kind < 2 { 0xFE } else { 0xF6 } | s.w();
    emit(&mut code, s, kind, rm, &[opc]);
    c.code = code;
    c
}

/// A shift count: the 6-bit edges of 64-bit operands and any byte.
fn shift_count(rng: &mut Rng) -> u8 {
    match rng.below(5) {
        0 => 1,
        1 => rng.u32() as u8,
        2 => rng.pick(&[0, 31, 32, 33, 63, 64, 65, 127]),
        _ => rng.below(66) as u8,
    }
}

/// Flags a shift of `s` by raw `count` leaves undefined: as [`undef::shift`], with the count
/// masked to 6 bits for 64-bit operands.
fn shift_undef(op: ShiftOp, s: S, count: u8) -> u32 {
    if s != S::Q {
        return undef::shift(op, s.bits(), count);
    }
    let c = count & 0x3F;
    if c == 0 {
        return 0;
    }
    let of = if c == 1 { 0 } else { undef::OF };
    match op {
        ShiftOp::Rol | ShiftOp::Ror | ShiftOp::Rcl | ShiftOp::Rcr => of,
        _ => undef::AF | of,
    }
}

/// ROL ROR RCL RCR SHL SHR SAL SAR by 1, CL and imm8 at 64 bits (and smaller with REX).
fn shift64(rng: &mut Rng) -> Case {
    let mut c = base64(rng);
    let s = size(rng);
    let op = rng.below(8) as u8;
    let count = shift_count(rng);
    let (rm, _) = rm64(rng, &mut c, s.bytes(), &[1]);
    let mut code = Vec::new();
    osize(&mut code, s);
    let raw = match rng.below(3) {
        0 => {
            emit(&mut code, s, op, rm, &[0xD0 | s.w()]);
            1
        }
        1 => {
            emit(&mut code, s, op, rm, &[0xD2 | s.w()]);
            let rcx = get64(&c, 1);
            if matches!(rm, Rm64::Reg(1)) {
                rcx as u8
            } else {
                set64(&mut c, 1, (rcx & !0xFF) | u64::from(count));
                count
            }
        }
        _ => {
            emit(&mut code, s, op, rm, &[0xC0 | s.w()]);
            code.push(count);
            count
        }
    };
    c.code = code;
    c.undef = Undefined::flags(shift_undef(ShiftOp::ALL[usize::from(op)], s, raw));
    c
}

/// SHLD/SHRD by imm8 and CL at 64 and 32 bits.
fn double_shift64(rng: &mut Rng) -> Case {
    let mut c = base64(rng);
    let s = rng.pick(&[S::Q, S::Q, S::D]);
    let count = shift_count(rng);
    let reg = rng.below(16) as u8;
    let (rm, _) = rm64(rng, &mut c, s.bytes(), &[1]);
    let right = rng.chance(1, 2);
    let by_cl = rng.chance(1, 2);
    let opc = match (right, by_cl) {
        (false, false) => 0xA4,
        (false, true) => 0xA5,
        (true, false) => 0xAC,
        (true, true) => 0xAD,
    };
    let mut code = Vec::new();
    emit(&mut code, s, reg, rm, &[0x0F, opc]);
    let raw = if by_cl {
        let rcx = get64(&c, 1);
        if matches!(rm, Rm64::Reg(1)) || reg == 1 {
            rcx as u8
        } else {
            set64(&mut c, 1, (rcx & !0xFF) | u64::from(count));
            count
        }
    } else {
        code.push(count);
        count
    };
    c.code = code;
    let mask = if s == S::Q { 0x3F } else { 0x1F };
    let n = raw & mask;
    let flags = match n {
        0 => 0,
        1 => undef::AF,
        _ => undef::AF | undef::OF,
    };
    c.undef = Undefined::flags(flags);
    c
}

/// MUL IMUL (all forms) DIV IDIV at 64 bits (and 32 with REX registers).
fn mul_div64(rng: &mut Rng) -> Case {
    let mut c = base64(rng);
    let s = rng.pick(&[S::Q, S::Q, S::Q, S::D]);
    let kind = rng.below(7);
    let reg = rng.below(16) as u8;
    let (rm, off) = rm64(rng, &mut c, s.bytes(), &[0, 2]);
    let mut code = Vec::new();
    match kind {
        0 => emit(&mut code, s, 4, rm, &[0xF7]),
        1 => emit(&mut code, s, 5, rm, &[0xF7]),
        2 => emit(&mut code, s, reg, rm, &[0x0F, 0xAF]),
        3 => {
            emit(&mut code, s, reg, rm, &[0x69]);
            imm(&mut code, S::D, rng.interesting());
        }
        4 => {
            emit(&mut code, s, reg, rm, &[0x6B]);
            code.push(rng.u32() as u8);
        }
        k => {
            // DIV (/6) or IDIV (/7): mostly with a quotient that fits.
            let signed = k == 6;
            emit(&mut code, s, if signed { 7 } else { 6 }, rm, &[0xF7]);
            let divisor = rm_value(&c, s, rm, off);
            let m = if s == S::Q { u64::MAX } else { 0xFFFF_FFFF };
            if rng.chance(4, 5) {
                let rdx = if signed {
                    let top = 1u64 << (s.bits() - 1);
                    if get64(&c, 0) & top != 0 {
                        m
                    } else {
                        0
                    }
                } else if divisor > 1 {
                    rng.next_u64() % divisor
                } else {
                    0
                };
                let old = get64(&c, 2);
                set64(&mut c, 2, (old & !m) | (rdx & m));
            }
            c.code = code;
            c.undef = Undefined::flags(undef::DIV);
            return c;
        }
    }
    c.code = code;
    c.undef = Undefined::flags(undef::MUL);
    c
}

/// BT/BTS/BTR/BTC (register and immediate offsets), BSF/BSR, POPCNT, LZCNT, TZCNT, BSWAP,
/// MOVBE with REX registers and 64-bit operands.
fn bit_ops64(rng: &mut Rng) -> Case {
    let mut c = base64(rng);
    let s = rng.pick(&[S::Q, S::Q, S::D, S::W]);
    let reg = rng.below(16) as u8;
    let mut code = Vec::new();
    let kind = rng.below(8);
    match kind {
        0 | 1 => {
            // BT family. A register bit offset with a memory operand addresses up to 64
            // bytes either side (the operand sits in the middle of the region).
            let op = rng.below(4) as u8;
            let by_imm = kind == 1;
            let off = 0x800 + rng.below(0x800);
            let rm = if rng.chance(1, 2) {
                Rm64::Reg(rng.below(16) as u8)
            } else {
                Rm64::Mem(mem64(rng, &mut c, off, &[]))
            };
            if matches!(rm, Rm64::Mem(_)) && op > 0 && rng.chance(1, 6) {
                code.push(0xF0);
            }
            osize(&mut code, s);
            if by_imm {
                emit(&mut code, s, 4 + op, rm, &[0x0F, 0xBA]);
                code.push(rng.u32() as u8);
            } else {
                let bit_reg = if let Rm64::Mem(m) = rm {
                    // Not an address register, small signed offset.
                    let used: Vec<u8> = [m.base, m.index].into_iter().flatten().collect();
                    let r = loop {
                        let r = rng.below(16) as u8;
                        if !used.contains(&r) {
                            break r;
                        }
                    };
                    set64(&mut c, r, (rng.below(1024) as i64 - 512) as u64);
                    r
                } else {
                    reg
                };
                emit(&mut code, s, bit_reg, rm, &[0x0F, 0xA3 + 8 * op]);
            }
            c.undef = Undefined::flags(undef::BIT_TEST);
        }
        2 => {
            // BSF / BSR: destination undefined for a zero source.
            let (rm, off) = rm64(rng, &mut c, s.bytes(), &[]);
            if rng.chance(1, 3) {
                if let Rm64::Reg(r) = rm {
                    set64(&mut c, r, 0);
                }
            }
            osize(&mut code, s);
            emit(&mut code, s, reg, rm, &[0x0F, rng.pick(&[0xBC, 0xBD])]);
            let (flags, dest_undef) = undef::bit_scan(rm_value(&c, s, rm, off) == 0);
            c.undef = Undefined::flags(flags);
            if dest_undef {
                undef_reg(&mut c.undef, reg);
            }
        }
        3..=5 => {
            // POPCNT (F3 0F B8), TZCNT (F3 0F BC), LZCNT (F3 0F BD).
            let (rm, _) = rm64(rng, &mut c, s.bytes(), &[]);
            if rng.chance(1, 4) {
                if let Rm64::Reg(r) = rm {
                    set64(&mut c, r, 0);
                }
            }
            osize(&mut code, s);
            code.push(0xF3);
            let opc = [0xB8, 0xBC, 0xBD][kind as usize - 3];
            emit(&mut code, s, reg, rm, &[0x0F, opc]);
            if kind != 3 {
                // "The OF, SF, PF and AF flags are undefined." (SDM Vol. 2A LZCNT, 2B TZCNT)
                c.undef = Undefined::flags(undef::OF | undef::SF | undef::PF | undef::AF);
            }
        }
        6 => {
            // BSWAP r32/r64 (the 16-bit form is undefined).
            let w = rng.chance(2, 3);
            let rex = 0x40 | (u8::from(w) << 3) | (reg >> 3);
            if rex != 0x40 {
                code.push(rex);
            }
            code.extend_from_slice(&[0x0F, 0xC8 + (reg & 7)]);
        }
        _ => {
            // MOVBE r, m (0F 38 F0) / m, r (0F 38 F1).
            let off = data_offset(rng, s.bytes());
            let m = Rm64::Mem(mem64(rng, &mut c, off, &[]));
            osize(&mut code, s);
            emit(&mut code, s, reg, m, &[0x0F, 0x38, rng.pick(&[0xF0, 0xF1])]);
        }
    }
    c.code = code;
    c
}

/// BMI1: ANDN, BEXTR, BLSI, BLSMSK, BLSR (VEX.0F38, Intel SDM Vol. 2A §2.3) with 32- and
/// 64-bit operands, register and memory sources, and REX-range registers through VEX.R/B and
/// VEX.vvvv.
fn bmi1_64(rng: &mut Rng) -> Case {
    let mut c = base64(rng);
    let s = rng.pick(&[S::Q, S::D]);
    let kind = rng.below(5);
    let vvvv = rng.below(16) as u8;
    // BEXTR's control register gets a chosen value below: never an address register.
    let keep = if kind == 1 { vec![vvvv] } else { Vec::new() };
    let (rm, _) = rm64(rng, &mut c, s.bytes(), &keep);
    if rng.chance(1, 4) {
        if let Rm64::Reg(r) = rm {
            set64(&mut c, r, 0);
        }
    }
    let mut reg = rng.below(16) as u8;
    if kind == 1 && rng.chance(2, 3) {
        // BEXTR control: mostly in-range start/length, sometimes past the operand.
        let start_range = if rng.chance(3, 4) { s.bits() } else { 256 };
        let start = rng.below(start_range);
        let len_range = if rng.chance(3, 4) { s.bits() + 1 } else { 256 };
        let len = rng.below(len_range);
        set64(
            &mut c,
            vvvv,
            (rng.u32() as u64) << 16 | u64::from(len) << 8 | u64::from(start),
        );
    }
    // Opcode, and for the F3 group the /digit that selects BLSR (1), BLSMSK (2) or BLSI (3).
    let opcode = match kind {
        0 => 0xF2, // ANDN reg, vvvv, r/m
        1 => 0xF7, // BEXTR reg, r/m, vvvv
        _ => {
            reg = kind as u8 - 1; // BLSR / BLSMSK / BLSI vvvv, r/m
            0xF3
        }
    };
    let (rm_reg, rm_low) = match rm {
        Rm64::Reg(r) => (r >> 3, Rm::Reg(r & 7)),
        Rm64::Mem(m) => (0, Rm::Mem(m)),
    };
    let mut code = vec![
        0xC4,
        (((reg >> 3) & 1) ^ 1) << 7 | 1 << 6 | ((rm_reg & 1) ^ 1) << 5 | 0x02,
        u8::from(s == S::Q) << 7 | ((!vvvv) & 0xF) << 3,
        opcode,
    ];
    modrm(&mut code, reg & 7, rm_low);
    c.code = code;
    // AF and PF are undefined for all five; SF too for BEXTR (SDM Vol. 2A).
    c.undef = Undefined::flags(if kind == 1 {
        undef::AF | undef::PF | undef::SF
    } else {
        undef::AF | undef::PF
    });
    c
}

/// MOVSXD, CDQE/CQO (and CWDE/CDQ/CBW), MOVZX/MOVSX to 64 bits, CMOVcc, SETcc with REX byte
/// registers, MOV r64, imm64, MOV r/m64, imm32, MOV/XCHG r64, LEA with 64- and 32-bit operand
/// and address sizes, MOV moffs64.
fn mov_convert64(rng: &mut Rng) -> Case {
    let mut c = base64(rng);
    let reg = rng.below(16) as u8;
    let mut code = Vec::new();
    match rng.below(11) {
        0 => {
            let (rm, _) = rm64(rng, &mut c, 4, &[]);
            let s = rng.pick(&[S::Q, S::Q, S::D]);
            emit(&mut code, s, reg, rm, &[0x63]);
        }
        1 => {
            let w = rng.below(3);
            match w {
                0 => code.push(0x48),
                1 => {}
                _ => code.push(0x66),
            }
            code.push(rng.pick(&[0x98, 0x99]));
        }
        2 => {
            let (rm, _) = rm64(rng, &mut c, 2, &[]);
            let opc = rng.pick(&[0xB6, 0xB7, 0xBE, 0xBF]);
            let s = rng.pick(&[S::Q, S::D]);
            // Byte sources with REX name SPL–DIL; emit() adds REX for S::B only, so force it.
            let mut body = Vec::new();
            emit(&mut body, s, reg, rm, &[0x0F, opc]);
            if body[0] & 0xF0 != 0x40 {
                code.push(0x40);
            }
            code.extend_from_slice(&body);
        }
        3 => {
            let s = rng.pick(&[S::Q, S::D, S::D, S::W]);
            let (rm, _) = rm64(rng, &mut c, s.bytes(), &[]);
            osize(&mut code, s);
            emit(&mut code, s, reg, rm, &[0x0F, 0x40 + rng.below(16) as u8]);
        }
        4 => {
            let (rm, _) = rm64(rng, &mut c, 1, &[]);
            emit(&mut code, S::B, 0, rm, &[0x0F, 0x90 + rng.below(16) as u8]);
        }
        5 => {
            code.push(0x48 | (reg >> 3));
            code.push(0xB8 + (reg & 7));
            code.extend_from_slice(&interesting64(rng).to_le_bytes());
        }
        6 => {
            let (rm, _) = rm64(rng, &mut c, 8, &[]);
            emit(&mut code, S::Q, 0, rm, &[0xC7]);
            imm(&mut code, S::D, rng.interesting());
        }
        7 => {
            let s = size(rng);
            let (rm, _) = rm64(rng, &mut c, s.bytes(), &[]);
            osize(&mut code, s);
            let opc = rng.pick(&[0x88, 0x8A, 0x86]) | s.w();
            emit(&mut code, s, reg, rm, &[opc]);
        }
        8 => {
            // LEA with any address: 64-bit address size, or 32-bit (67) which truncates.
            let s = rng.pick(&[S::Q, S::D, S::W]);
            let m = Mem {
                base: Some(rng.below(8) as u8),
                index: rng.chance(1, 2).then(|| rng.pick(&[0u8, 1, 2, 3, 5, 6, 7])),
                scale: rng.below(4) as u8,
                disp: rng.u32() as i32,
                disp32: rng.chance(1, 2),
            };
            if rng.chance(1, 3) {
                code.push(0x67);
            }
            osize(&mut code, s);
            emit(&mut code, s, reg, Rm64::Mem(m), &[0x8D]);
        }
        9 => {
            // MOV rAX, moffs64 / moffs64, rAX (A0–A3 with an 8-byte address).
            let s = size(rng);
            let off = data_offset(rng, s.bytes());
            osize(&mut code, s);
            if s == S::Q {
                code.push(0x48);
            }
            code.push(rng.pick(&[0xA0, 0xA2]) | s.w());
            code.extend_from_slice(&(DATA_BASE + u64::from(off)).to_le_bytes());
        }
        _ => {
            // XCHG rAX, r64 (90+r with REX.B: 49 90 is XCHG RAX, R8, not NOP).
            let s = rng.pick(&[S::Q, S::D]);
            let rex = 0x40 | (u8::from(s == S::Q) << 3) | (reg >> 3);
            if rex != 0x40 {
                code.push(rex);
            }
            code.push(0x90 + (reg & 7));
        }
    }
    c.code = code;
    c
}

/// XADD, CMPXCHG at 64 bits, CMPXCHG16B (aligned and not, equal and not).
fn xadd_cmpxchg64(rng: &mut Rng) -> Case {
    let mut c = base64(rng);
    let reg = rng.below(16) as u8;
    let mut code = Vec::new();
    if rng.chance(1, 3) {
        // CMPXCHG16B m128.
        let aligned = rng.chance(3, 4);
        let off = if aligned {
            rng.below((DATA_SIZE as u32 - 16) / 16) * 16
        } else {
            data_offset(rng, 16)
        };
        let m = mem64(rng, &mut c, off, &[0, 1, 2, 3]);
        if rng.chance(1, 2) {
            let (lo, hi) = (mem_value(&c, off, 8), mem_value(&c, off + 8, 8));
            set64(&mut c, 0, lo);
            set64(&mut c, 2, hi);
        }
        if rng.chance(1, 4) {
            code.push(0xF0);
        }
        emit(&mut code, S::Q, 1, Rm64::Mem(m), &[0x0F, 0xC7]);
    } else {
        let s = size(rng);
        let (rm, off) = rm64(rng, &mut c, s.bytes(), &[0]);
        if rng.chance(1, 2) {
            // Make the accumulator match the destination.
            let v = rm_value(&c, s, rm, off);
            let old = get64(&c, 0);
            let m = if s == S::Q {
                u64::MAX
            } else {
                (1u64 << s.bits()) - 1
            };
            set64(&mut c, 0, (old & !m) | v);
        }
        if matches!(rm, Rm64::Mem(_)) && rng.chance(1, 4) {
            code.push(0xF0);
        }
        osize(&mut code, s);
        let opc = rng.pick(&[0xB0, 0xC0]) | s.w();
        emit(&mut code, s, reg, rm, &[0x0F, opc]);
    }
    c.code = code;
    c
}

/// MOVS CMPS STOS LODS SCAS at all sizes with REP/REPE/REPNE, both directions, 64-bit
/// (RSI/RDI/RCX) and 32-bit (67: ESI/EDI/ECX, upper halves ignored and cleared) addressing.
fn string64(rng: &mut Rng) -> Case {
    let mut c = base64(rng);
    if rng.chance(1, 2) {
        c.mem_style = 1;
    }
    let s = rng.pick(&[S::Q, S::Q, S::D, S::W, S::B]);
    let a32 = rng.chance(1, 3);
    let count = rng.below(40);
    let room = 0x180;
    let si = room + rng.below(DATA_SIZE as u32 - 2 * room);
    let di = room + rng.below(DATA_SIZE as u32 - 2 * room);
    let high = |rng: &mut Rng| if a32 { rng.u32() } else { 0 };
    c.regs[6] = DATA_BASE as u32 + si;
    c.hi[6] = high(rng);
    c.regs[7] = DATA_BASE as u32 + di;
    c.hi[7] = high(rng);
    c.regs[1] = count;
    c.hi[1] = high(rng);
    if rng.chance(1, 2) {
        c.eflags |= 1 << 10; // DF
    } else {
        c.eflags &= !(1 << 10);
    }
    let mut code = Vec::new();
    match rng.below(4) {
        0 => code.push(0xF3),
        1 => code.push(0xF2),
        _ => {}
    }
    if a32 {
        code.push(0x67);
    }
    osize(&mut code, s);
    if s == S::Q {
        code.push(0x48);
    }
    let op = rng.pick(&[0xA4, 0xA6, 0xAA, 0xAC, 0xAE]);
    code.push(op | s.w());
    c.code = code;
    c
}

/// PUSH/POP of r64 (REX.B), imm, memory and 16-bit forms, PUSHFQ/POPFQ, CALL rel32/r/m64, RET
/// [imm16] through a RIP-relative return address, ENTER/LEAVE with nesting levels. POPs and
/// scratch values go to R8–R15 so the address registers of later memory operands survive.
fn stack64(rng: &mut Rng) -> Case {
    let mut c = base64(rng);
    // A stack in the upper half of the region, mostly 8-byte aligned.
    let misalign = if rng.chance(3, 4) { 0 } else { rng.below(8) };
    let rsp = DATA_BASE as u32 + 0x1400 + rng.below(0x100) * 8 + misalign;
    c.regs[4] = rsp;
    c.hi[4] = 0;
    let mut code = Vec::new();
    let n = 1 + rng.below(4);
    let mut ret_fixup = None;
    let mut addr_regs: Vec<u8> = Vec::new();
    for _ in 0..n {
        let reg = rng.below(16) as u8;
        let pop_reg = 8 | reg;
        let rex_b = |code: &mut Vec<u8>| {
            if reg >= 8 {
                code.push(0x41);
            }
        };
        match rng.below(10) {
            0 => {
                if rng.chance(1, 5) {
                    code.push(0x66);
                }
                rex_b(&mut code);
                code.push(0x50 + (reg & 7));
            }
            1 => {
                if rng.chance(1, 5) {
                    code.push(0x66);
                }
                code.push(0x41);
                code.push(0x58 + (pop_reg & 7));
            }
            2 => {
                if rng.chance(1, 2) {
                    code.push(0x68);
                    code.extend_from_slice(&rng.interesting().to_le_bytes());
                } else {
                    code.push(0x6A);
                    code.push(rng.u32() as u8);
                }
            }
            3 => {
                let off = 0x100 + rng.below(0x600);
                // Earlier operands' address registers stay as they are.
                let mut keep = vec![4, 5];
                keep.extend_from_slice(&addr_regs);
                let m = mem64(rng, &mut c, off, &keep);
                addr_regs.extend([m.base, m.index].into_iter().flatten());
                let pop = rng.chance(1, 2);
                emit(
                    &mut code,
                    S::D,
                    if pop { 0 } else { 6 },
                    Rm64::Mem(m),
                    &[if pop { 0x8F } else { 0xFF }],
                );
            }
            4 => {
                // PUSHFQ; POP R11; flip status flags and DF; PUSH R11; POPFQ.
                let flip = rng.u32() & 0x0CD5;
                code.extend_from_slice(&[0x9C, 0x41, 0x5B, 0x49, 0x81, 0xF3]);
                code.extend_from_slice(&flip.to_le_bytes());
                code.extend_from_slice(&[0x41, 0x53, 0x9D]);
            }
            5 => {
                // CALL rel32 to the next instruction; POP the return address.
                code.extend_from_slice(&[0xE8, 0, 0, 0, 0, 0x41, 0x58 + (pop_reg & 7)]);
            }
            6 => {
                // CALL r/m64 through R11 holding the next instruction's address; POP R10.
                let target = CODE_BASE + code.len() as u64 + 10 + 3;
                code.extend_from_slice(&[0x49, 0xBB]);
                code.extend_from_slice(&target.to_le_bytes());
                code.extend_from_slice(&[0x41, 0xFF, 0xD3, 0x41, 0x5A]);
            }
            7 => {
                let level = rng.pick(&[0u8, 0, 1, 2, 3]);
                c.regs[5] = rsp.wrapping_add(rng.below(0x100));
                c.hi[5] = 0;
                code.push(0xC8);
                code.extend_from_slice(&(rng.below(0x80) as u16).to_le_bytes());
                code.push(level);
                if rng.chance(2, 3) {
                    code.push(0xC9);
                }
            }
            8 => {
                code.push(0xC9);
                c.regs[5] = rsp.wrapping_add(rng.below(0x100) * 8);
                c.hi[5] = 0;
            }
            _ => {
                if ret_fixup.is_none() {
                    // LEA R11, [RIP + d] (the final INT3); PUSH R11; RET [imm16].
                    code.extend_from_slice(&[0x4C, 0x8D, 0x1D, 0, 0, 0, 0]);
                    let at = code.len() - 4;
                    code.extend_from_slice(&[0x41, 0x53]);
                    if rng.chance(1, 2) {
                        code.push(0xC3);
                    } else {
                        code.push(0xC2);
                        code.extend_from_slice(&(rng.below(0x40) as u16 * 8).to_le_bytes());
                    }
                    ret_fixup = Some(at);
                }
            }
        }
    }
    if let Some(at) = ret_fixup {
        let disp = (code.len() - (at + 4)) as i32;
        code[at..at + 4].copy_from_slice(&disp.to_le_bytes());
    }
    c.code = code;
    c
}

/// Memory operands addressed RIP-relative (and EIP-relative with 67) reaching the data
/// region: loads, stores, read-modify-write with immediates, LEA.
fn rip_relative(rng: &mut Rng) -> Case {
    let mut c = base64(rng);
    let s = size(rng);
    let reg = rng.below(16) as u8;
    let off = data_offset(rng, s.bytes());
    let mut code = Vec::new();
    let a32 = rng.chance(1, 4);
    if a32 {
        code.push(0x67);
    }
    osize(&mut code, s);
    let rex = 0x40 | (u8::from(s == S::Q) << 3) | ((reg >> 3) << 2);
    if rex != 0x40 || s == S::B {
        code.push(rex);
    }
    let kind = rng.below(5);
    let (opc, digit, imm_len): (&[u8], Option<u8>, u32) = match kind {
        0 => (&[0x8A], None, 0),
        1 => (&[0x88], None, 0),
        2 => (&[0x80], Some(rng.below(8) as u8), 1),
        3 => (&[0x02 + 8 * rng.below(8) as u8], None, 0),
        _ => (&[0x8D], None, 0),
    };
    let opc0 = match kind {
        4 => opc[0],
        2 if s != S::B => 0x83,
        _ => opc[0] | s.w(),
    };
    code.push(opc0);
    code.push(((digit.unwrap_or(reg) & 7) << 3) | 5); // mod=00 rm=101: [rip+disp32]
    let at = code.len();
    code.extend_from_slice(&[0; 4]);
    for _ in 0..imm_len {
        code.push(rng.u32() as u8);
    }
    let next = CODE_BASE + code.len() as u64;
    let target = if kind == 4 && rng.chance(1, 2) {
        next.wrapping_add(rng.u32() as i32 as i64 as u64)
    } else {
        DATA_BASE + u64::from(off)
    };
    let disp = target.wrapping_sub(next) as u32;
    code[at..at + 4].copy_from_slice(&disp.to_le_bytes());
    c.code = code;
    c
}

/// LOOP/LOOPE/LOOPNE over a one-instruction body and JRCXZ, with RCX (64-bit address size)
/// or ECX (67).
fn loop64(rng: &mut Rng) -> Case {
    let mut c = base64(rng);
    let a32 = rng.chance(1, 3);
    c.regs[1] = rng.below(50);
    c.hi[1] = if a32 { rng.u32() } else { 0 };
    let mut code = Vec::new();
    if rng.chance(2, 3) {
        // body: ADD R8, R9 or INC R8 (3 bytes); LOOPcc back to it.
        if c.regs[1] == 0 {
            c.regs[1] = 1;
        }
        if rng.chance(1, 2) {
            code.extend_from_slice(&[0x4D, 0x01, 0xC8]);
        } else {
            code.extend_from_slice(&[0x49, 0xFF, 0xC0]);
        }
        if a32 {
            code.push(0x67);
        }
        let back = -(code.len() as i32 + 2) as i8;
        code.push(rng.pick(&[0xE0, 0xE1, 0xE2]));
        code.push(back as u8);
    } else {
        if rng.chance(1, 2) {
            c.regs[1] = 0;
        }
        if a32 {
            code.push(0x67);
        }
        code.extend_from_slice(&[0xE3, 0x03, 0x49, 0xFF, 0xC1]); // jrcxz +3; inc r9
    }
    c.code = code;
    c
}
