//! Case generators, one per instruction family. Each generator builds one random case from its
//! own PRNG stream, so a case is reproducible from (seed, family, index) alone.

use super::asm::{
    data_offset, mem16_at, mem_at, mem_at_seg, modrm, modrm16, Mem, Mem16, Rm, EAX, EBP, EBX, ECX,
    EDI, EDX, ESI, ESP,
};
use super::prng::{fill_region, Rng};
use super::undef::{self, ShiftOp, Undefined};
use super::{Case, Segs, DATA_BASE, DATA_SIZE};

/// A named generator.
pub struct Family {
    pub name: &'static str,
    pub gen: fn(&mut Rng) -> Case,
}

/// Every family, in report order.
pub fn all() -> Vec<Family> {
    vec![
        Family {
            name: "alu",
            gen: alu,
        },
        Family {
            name: "inc-dec-neg-not",
            gen: unary,
        },
        Family {
            name: "shift-rotate",
            gen: shift,
        },
        Family {
            name: "shld-shrd",
            gen: double_shift,
        },
        Family {
            name: "mul-imul",
            gen: mul,
        },
        Family {
            name: "div-idiv",
            gen: div,
        },
        Family {
            name: "bt-bts-btr-btc",
            gen: bit_test,
        },
        Family {
            name: "bsf-bsr",
            gen: bit_scan,
        },
        Family {
            name: "bswap",
            gen: bswap,
        },
        Family {
            name: "xadd-cmpxchg",
            gen: xadd_cmpxchg,
        },
        Family {
            name: "cmpxchg8b",
            gen: cmpxchg8b,
        },
        Family {
            name: "cmovcc-setcc",
            gen: cmov_setcc,
        },
        Family {
            name: "movzx-movsx",
            gen: movzx_movsx,
        },
        Family {
            name: "lea",
            gen: lea,
        },
        Family {
            name: "cbw-cwde-cwd-cdq",
            gen: convert,
        },
        Family {
            name: "lahf-sahf-flagops",
            gen: flag_ops,
        },
        Family {
            name: "mov-xchg",
            gen: mov_xchg,
        },
        Family {
            name: "string",
            gen: string,
        },
        Family {
            name: "push-pop",
            gen: push_pop,
        },
        Family {
            name: "enter-leave",
            gen: enter_leave,
        },
        Family {
            name: "bcd",
            gen: bcd,
        },
        Family {
            name: "sequence",
            gen: sequence,
        },
        Family {
            name: "branch",
            gen: branch,
        },
        Family {
            name: "xlat-bound-into",
            gen: xlat_bound_into,
        },
        Family {
            name: "prefixes",
            gen: prefixes,
        },
        Family {
            name: "self-modifying",
            gen: self_modifying,
        },
        Family {
            name: "privileged-cpl3",
            gen: privileged,
        },
        Family {
            name: "seg16-alu-mov",
            gen: seg16_alu,
        },
        Family {
            name: "seg16-string",
            gen: seg16_string,
        },
        Family {
            name: "seg16-stack-branch",
            gen: seg16_stack,
        },
        Family {
            name: "segment-loads",
            gen: segment_loads,
        },
        Family {
            name: "lar-lsl-verr-verw",
            gen: lar_lsl,
        },
        Family {
            name: "seg32-based",
            gen: seg32_based,
        },
        Family {
            name: "page-faults",
            gen: page_faults,
        },
        Family {
            name: "encoding-soup",
            gen: encoding_soup,
        },
        Family {
            name: "single-step",
            gen: single_step,
        },
        Family {
            name: "fetch-page-end",
            gen: fetch_page_end,
        },
        Family {
            name: "soup-sequence",
            gen: soup_sequence,
        },
    ]
}

/// Operand size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sz {
    B,
    W,
    D,
}

impl Sz {
    fn bits(self) -> u32 {
        match self {
            Sz::B => 8,
            Sz::W => 16,
            Sz::D => 32,
        }
    }
    fn bytes(self) -> u32 {
        self.bits() / 8
    }
    fn mask(self) -> u32 {
        match self {
            Sz::B => 0xFF,
            Sz::W => 0xFFFF,
            Sz::D => 0xFFFF_FFFF,
        }
    }
    /// The opcode's w bit.
    fn w(self) -> u8 {
        u8::from(self != Sz::B)
    }
}

fn any_size(rng: &mut Rng) -> Sz {
    rng.pick(&[Sz::B, Sz::W, Sz::D])
}

fn wide_size(rng: &mut Rng) -> Sz {
    rng.pick(&[Sz::W, Sz::D])
}

/// Random registers and flags, random memory.
pub fn base(rng: &mut Rng) -> Case {
    let mut regs = [0u32; 8];
    for r in &mut regs {
        *r = rng.interesting();
    }
    Case {
        code: Vec::new(),
        regs,
        hi: [0; 8],
        ext: [0; 8],
        long_only: false,
        eflags: rng.u32() & 0x0CD5,
        mem_seed: rng.next_u64(),
        mem_style: 0,
        undef: Undefined::default(),
        allow_64: true,
        segs: Segs::FLAT,
        code_offset: 0,
    }
}

fn prefix(code: &mut Vec<u8>, sz: Sz) {
    if sz == Sz::W {
        code.push(0x66);
    }
}

fn imm(code: &mut Vec<u8>, bytes: u32, v: u32) {
    code.extend_from_slice(&v.to_le_bytes()[..bytes as usize]);
}

/// Read register `r` of size `sz` (8-bit numbers 4–7 are AH, CH, DH, BH).
fn get_reg(regs: &[u32; 8], sz: Sz, r: u8) -> u32 {
    match sz {
        Sz::B if r >= 4 => (regs[usize::from(r - 4)] >> 8) & 0xFF,
        _ => regs[usize::from(r)] & sz.mask(),
    }
}

fn set_reg(regs: &mut [u32; 8], sz: Sz, r: u8, v: u32) {
    match sz {
        Sz::B if r >= 4 => {
            let x = &mut regs[usize::from(r - 4)];
            *x = (*x & !0xFF00) | ((v & 0xFF) << 8);
        }
        _ => {
            let x = &mut regs[usize::from(r)];
            *x = (*x & !sz.mask()) | (v & sz.mask());
        }
    }
}

/// An r/m operand: a register, or memory somewhere in the data region with its address
/// registers set (registers in `keep` are left alone). Returns the operand and, for memory,
/// the region offset.
fn rm_operand(rng: &mut Rng, c: &mut Case, len: u32, keep: &[u8]) -> (Rm, Option<u32>) {
    if rng.chance(1, 2) {
        (Rm::Reg(rng.below(8) as u8), None)
    } else {
        let off = data_offset(rng, len);
        (Rm::Mem(mem_at(rng, &mut c.regs, off, keep)), Some(off))
    }
}

/// The little-endian value of `len` bytes at `off` in the case's initial data region.
fn mem_value(c: &Case, off: u32, len: u32) -> u64 {
    let region = fill_region(c.mem_seed, c.mem_style, DATA_SIZE);
    let mut b = [0u8; 8];
    b[..len as usize].copy_from_slice(&region[off as usize..(off + len) as usize]);
    u64::from_le_bytes(b)
}

/// The value an r/m operand holds before the instruction.
fn rm_value(c: &Case, sz: Sz, rm: Rm, off: Option<u32>) -> u32 {
    match (rm, off) {
        (Rm::Reg(r), _) => get_reg(&c.regs, sz, r),
        (Rm::Mem(_), Some(o)) => mem_value(c, o, sz.bytes()) as u32,
        (Rm::Mem(_), None) => 0,
    }
}

fn maybe_lock(rng: &mut Rng, code: &mut Vec<u8>, rm: Rm) {
    if matches!(rm, Rm::Mem(_)) && rng.chance(1, 6) {
        code.push(0xF0);
    }
}

/// A shift/rotate count: mostly the interesting small ones, sometimes any byte.
fn shift_count(rng: &mut Rng) -> u8 {
    match rng.below(6) {
        0 => 1,
        1 => rng.u32() as u8,
        2 => rng.pick(&[0, 8, 9, 16, 17, 31, 32, 33]),
        _ => rng.below(34) as u8,
    }
}

/// ADD OR ADC SBB AND SUB XOR CMP and TEST in every encoding form, 8/16/32-bit.
fn alu(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let op = rng.below(9) as u8; // 8 = TEST
    let sz = any_size(rng);
    let mut code = Vec::new();
    let form = rng.below(5);
    let (rm, _) = rm_operand(rng, &mut c, sz.bytes(), &[]);
    let reg = rng.below(8) as u8;
    let immv = rng.interesting();
    if matches!(form, 0 | 3) && op != 7 && op != 8 {
        maybe_lock(rng, &mut code, rm);
    }
    prefix(&mut code, sz);
    match (form, op) {
        (0 | 1, 8) => {
            code.push(0x84 | sz.w());
            modrm(&mut code, reg, rm);
        }
        (0, _) => {
            code.push(op * 8 + sz.w());
            modrm(&mut code, reg, rm);
        }
        (1, _) => {
            code.push(op * 8 + 2 + sz.w());
            modrm(&mut code, reg, rm);
        }
        (2, 8) => {
            code.push(0xA8 | sz.w());
            imm(&mut code, sz.bytes(), immv);
        }
        (2, _) => {
            code.push(op * 8 + 4 + sz.w());
            imm(&mut code, sz.bytes(), immv);
        }
        (3, 8) => {
            code.push(0xF6 | sz.w());
            modrm(&mut code, 0, rm);
            imm(&mut code, sz.bytes(), immv);
        }
        (_, 8) => {
            // TEST has no sign-extended form: TEST r/m, imm again with an 8-bit operand.
            code.retain(|&b| b != 0x66);
            code.push(0xF6);
            modrm(&mut code, 0, rm);
            imm(&mut code, 1, immv);
        }
        (3, _) => {
            // 0x82 (an alias of 0x80, invalid in 64-bit mode) now and then.
            let opc = if sz == Sz::B && rng.chance(1, 8) {
                0x82
            } else {
                0x80 | sz.w()
            };
            code.push(opc);
            modrm(&mut code, op, rm);
            imm(&mut code, sz.bytes(), immv);
        }
        _ => {
            let opc = if sz == Sz::B { 0x82 } else { 0x83 };
            code.push(opc);
            modrm(&mut code, op, rm);
            imm(&mut code, 1, immv);
        }
    }
    c.code = code;
    if matches!(op, 1 | 4 | 6 | 8) {
        c.undef = Undefined::flags(undef::LOGIC);
    }
    c
}

/// INC DEC NEG NOT, register and memory, including the one-byte INC/DEC r forms.
fn unary(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let sz = any_size(rng);
    let kind = rng.below(5);
    let (rm, _) = rm_operand(rng, &mut c, sz.bytes(), &[]);
    maybe_lock(rng, &mut c.code, rm);
    let mut code = std::mem::take(&mut c.code);
    prefix(&mut code, sz);
    match kind {
        0 | 1 => {
            code.push(0xFE | sz.w());
            modrm(&mut code, kind as u8, rm);
        }
        2 | 3 => {
            code.push(0xF6 | sz.w());
            modrm(&mut code, kind as u8, rm); // /2 NOT, /3 NEG
        }
        _ => {
            code.retain(|&b| b != 0xF0);
            let sz = wide_size(rng);
            code.retain(|&b| b != 0x66);
            prefix(&mut code, sz);
            code.push(rng.pick(&[0x40, 0x48]) + rng.below(8) as u8);
        }
    }
    c.code = code;
    c
}

/// ROL ROR RCL RCR SHL SHR SAL SAR by 1, CL and imm8, 8/16/32-bit, register and memory.
fn shift(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let sz = any_size(rng);
    let op = rng.below(8) as u8;
    let form = rng.below(3);
    let count = shift_count(rng);
    let (rm, _) = rm_operand(rng, &mut c, sz.bytes(), &[ECX]);
    let mut code = Vec::new();
    prefix(&mut code, sz);
    let eff = match form {
        0 => {
            code.push(0xD0 | sz.w());
            modrm(&mut code, op, rm);
            1
        }
        1 => {
            c.regs[ECX as usize] = (c.regs[ECX as usize] & !0xFF) | u32::from(count);
            code.push(0xD2 | sz.w());
            modrm(&mut code, op, rm);
            count
        }
        _ => {
            code.push(0xC0 | sz.w());
            modrm(&mut code, op, rm);
            code.push(count);
            count
        }
    };
    c.code = code;
    c.undef = Undefined::flags(undef::shift(ShiftOp::ALL[op as usize], sz.bits(), eff));
    c
}

/// SHLD/SHRD with imm8 and CL counts, 16/32-bit, register and memory destinations.
fn double_shift(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let sz = wide_size(rng);
    let right = rng.chance(1, 2);
    let by_cl = rng.chance(1, 2);
    let mut count = shift_count(rng);
    let (rm, off) = rm_operand(rng, &mut c, sz.bytes(), &[ECX]);
    if off.is_some() && u32::from(count & 0x1F) > sz.bits() {
        // A memory destination with an undefined result cannot be masked: keep it defined.
        count &= 0x0F;
    }
    let reg = rng.below(8) as u8;
    let mut code = Vec::new();
    prefix(&mut code, sz);
    code.push(0x0F);
    code.push(match (right, by_cl) {
        (false, false) => 0xA4,
        (false, true) => 0xA5,
        (true, false) => 0xAC,
        (true, true) => 0xAD,
    });
    modrm(&mut code, reg, rm);
    if by_cl {
        c.regs[ECX as usize] = (c.regs[ECX as usize] & !0xFF) | u32::from(count);
    } else {
        code.push(count);
    }
    c.code = code;
    let (flags, dest_undef) = undef::double_shift(sz.bits(), count);
    c.undef = Undefined::flags(flags);
    if let (true, Rm::Reg(r)) = (dest_undef, rm) {
        c.undef.regs[r as usize] = sz.mask();
    }
    c
}

/// MUL/IMUL one-operand (all sizes), IMUL r, r/m and IMUL r, r/m, imm8/imm.
fn mul(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let mut code = Vec::new();
    match rng.below(4) {
        0 | 1 => {
            let sz = any_size(rng);
            let (rm, _) = rm_operand(rng, &mut c, sz.bytes(), &[EAX, EDX]);
            prefix(&mut code, sz);
            code.push(0xF6 | sz.w());
            modrm(&mut code, rng.pick(&[4, 5]), rm);
        }
        2 => {
            let sz = wide_size(rng);
            let (rm, _) = rm_operand(rng, &mut c, sz.bytes(), &[]);
            prefix(&mut code, sz);
            code.extend_from_slice(&[0x0F, 0xAF]);
            modrm(&mut code, rng.below(8) as u8, rm);
        }
        _ => {
            let sz = wide_size(rng);
            let (rm, _) = rm_operand(rng, &mut c, sz.bytes(), &[]);
            prefix(&mut code, sz);
            let short = rng.chance(1, 2);
            code.push(if short { 0x6B } else { 0x69 });
            modrm(&mut code, rng.below(8) as u8, rm);
            imm(
                &mut code,
                if short { 1 } else { sz.bytes() },
                rng.interesting(),
            );
        }
    }
    c.code = code;
    c.undef = Undefined::flags(undef::MUL);
    c
}

/// DIV/IDIV, 8/16/32-bit; most dividends are built so the quotient fits, the rest are random
/// (overflow and divide-by-zero #DE).
fn div(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let sz = any_size(rng);
    let signed = rng.chance(1, 2);
    let avoid: &[u8] = if sz == Sz::B { &[0, 4] } else { &[0, 2] };
    let (rm, off) = if rng.chance(1, 2) {
        let off = data_offset(rng, sz.bytes());
        (
            Rm::Mem(mem_at(rng, &mut c.regs, off, &[EAX, EDX])),
            Some(off),
        )
    } else {
        let choices: Vec<u8> = (0..8).filter(|r| !avoid.contains(r)).collect();
        (Rm::Reg(rng.pick(&choices)), None)
    };
    if rng.chance(1, 8) {
        if let Rm::Reg(r) = rm {
            set_reg(&mut c.regs, sz, r, 0);
        }
    }
    let d = rm_value(&c, sz, rm, off);
    if rng.chance(7, 10) && d != 0 {
        let bits = sz.bits();
        let dividend: u64 = if signed {
            let ds = i64::from(((d << (32 - bits)) as i32) >> (32 - bits));
            let qmax = (1i64 << (bits - 1)) - 1;
            let q = i64::from(rng.u32() as i32) % (qmax + 1);
            let r = if rng.chance(1, 4) {
                0
            } else {
                i64::from(rng.u32()) % ds.abs()
            };
            let r = if (q < 0) != (ds < 0) && q != 0 { -r } else { r };
            (q * ds + r) as u64
        } else {
            let qmax = (1u64 << bits) - 1;
            let q = u64::from(rng.u32()) & qmax;
            let r = u64::from(rng.u32()) % u64::from(d);
            q * u64::from(d) + r
        };
        match sz {
            Sz::B => set_reg(&mut c.regs, Sz::W, EAX, dividend as u32),
            Sz::W => {
                set_reg(&mut c.regs, Sz::W, EAX, dividend as u32);
                set_reg(&mut c.regs, Sz::W, EDX, (dividend >> 16) as u32);
            }
            Sz::D => {
                c.regs[EAX as usize] = dividend as u32;
                c.regs[EDX as usize] = (dividend >> 32) as u32;
            }
        }
    }
    let mut code = Vec::new();
    prefix(&mut code, sz);
    code.push(0xF6 | sz.w());
    modrm(&mut code, if signed { 7 } else { 6 }, rm);
    c.code = code;
    c.undef = Undefined::flags(undef::DIV);
    c
}

/// BT/BTS/BTR/BTC with register and imm8 offsets, register and memory bases; memory forms
/// with register offsets reach bytes far from the base address (both signs).
fn bit_test(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let sz = wide_size(rng);
    let op = rng.below(4) as u8; // BT BTS BTR BTC
    let by_imm = rng.chance(1, 3);
    let offreg = rng.below(8) as u8;
    let mem = rng.chance(1, 2);
    let mut code = Vec::new();
    let rm = if mem {
        let ea = rng.range(0x800, 0x1800 - 4);
        let m = mem_at(rng, &mut c.regs, ea, &[offreg]);
        if !by_imm {
            let lo = -((ea as i32 - 4) * 8);
            let hi = (DATA_SIZE as i32 - ea as i32 - 8) * 8;
            let (lo, hi) = if sz == Sz::W {
                (lo.max(-32768), hi.min(32767))
            } else {
                (lo, hi)
            };
            let v = lo + rng.below((hi - lo) as u32) as i32;
            set_reg(&mut c.regs, sz, offreg, v as u32);
        }
        let rm = Rm::Mem(m);
        if op != 0 {
            maybe_lock(rng, &mut code, rm);
        }
        rm
    } else {
        Rm::Reg(rng.below(8) as u8)
    };
    prefix(&mut code, sz);
    code.push(0x0F);
    if by_imm {
        code.push(0xBA);
        modrm(&mut code, 4 + op, rm);
        code.push(rng.u32() as u8);
    } else {
        code.push([0xA3, 0xAB, 0xB3, 0xBB][op as usize]);
        modrm(&mut code, offreg, rm);
    }
    c.code = code;
    c.undef = Undefined::flags(undef::BIT_TEST);
    c
}

/// BSF/BSR, 16/32-bit, register and memory sources, including zero sources.
fn bit_scan(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let sz = wide_size(rng);
    let (rm, off) = rm_operand(rng, &mut c, sz.bytes(), &[]);
    let dst = rng.below(8) as u8;
    if let Rm::Reg(r) = rm {
        if rng.chance(1, 4) {
            set_reg(&mut c.regs, sz, r, 0);
        } else if rng.chance(1, 3) {
            set_reg(&mut c.regs, sz, r, 1 << rng.below(sz.bits()));
        }
    }
    let src = rm_value(&c, sz, rm, off);
    let mut code = Vec::new();
    prefix(&mut code, sz);
    code.extend_from_slice(&[0x0F, rng.pick(&[0xBC, 0xBD])]);
    modrm(&mut code, dst, rm);
    c.code = code;
    let (flags, dest_undef) = undef::bit_scan(src == 0);
    c.undef = Undefined::flags(flags);
    if dest_undef {
        c.undef.regs[dst as usize] = sz.mask();
    }
    c
}

/// BSWAP r32.
fn bswap(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    c.code = vec![0x0F, 0xC8 + rng.below(8) as u8];
    c
}

/// XADD and CMPXCHG (equal and unequal comparisons), 8/16/32-bit, register and memory.
fn xadd_cmpxchg(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let sz = any_size(rng);
    let xadd = rng.chance(1, 2);
    let (rm, off) = rm_operand(rng, &mut c, sz.bytes(), &[EAX]);
    let reg = rng.below(8) as u8;
    if !xadd && rng.chance(1, 2) {
        let v = rm_value(&c, sz, rm, off);
        set_reg(&mut c.regs, sz, EAX, v);
    }
    let mut code = Vec::new();
    maybe_lock(rng, &mut code, rm);
    prefix(&mut code, sz);
    code.extend_from_slice(&[0x0F, if xadd { 0xC0 } else { 0xB0 } | sz.w()]);
    modrm(&mut code, reg, rm);
    c.code = code;
    c
}

/// CMPXCHG8B m64, equal and unequal.
fn cmpxchg8b(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let off = data_offset(rng, 8);
    let m = mem_at(rng, &mut c.regs, off, &[EAX, EDX, ECX, EBX]);
    if rng.chance(1, 2) {
        let v = mem_value(&c, off, 8);
        c.regs[EAX as usize] = v as u32;
        c.regs[EDX as usize] = (v >> 32) as u32;
        if rng.chance(1, 4) {
            c.regs[EDX as usize] ^= 1 << rng.below(32);
        }
    }
    let mut code = Vec::new();
    if rng.chance(1, 4) {
        code.push(0xF0);
    }
    code.extend_from_slice(&[0x0F, 0xC7]);
    modrm(&mut code, 1, Rm::Mem(m));
    c.code = code;
    c
}

/// CMOVcc r, r/m (16/32) and SETcc r/m8 for all 16 conditions.
fn cmov_setcc(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let cc = rng.below(16) as u8;
    let mut code = Vec::new();
    if rng.chance(1, 2) {
        let sz = wide_size(rng);
        let (rm, _) = rm_operand(rng, &mut c, sz.bytes(), &[]);
        prefix(&mut code, sz);
        code.extend_from_slice(&[0x0F, 0x40 + cc]);
        modrm(&mut code, rng.below(8) as u8, rm);
    } else {
        let (rm, _) = rm_operand(rng, &mut c, 1, &[]);
        code.extend_from_slice(&[0x0F, 0x90 + cc]);
        // The reg field is ignored; mostly 0.
        let reg = if rng.chance(1, 4) {
            rng.below(8) as u8
        } else {
            0
        };
        modrm(&mut code, reg, rm);
    }
    c.code = code;
    c
}

/// MOVZX/MOVSX from 8 and 16 bits into 16/32-bit registers.
fn movzx_movsx(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let from16 = rng.chance(1, 2);
    let sz = if from16 && rng.chance(3, 4) {
        Sz::D
    } else {
        wide_size(rng)
    };
    let (rm, _) = rm_operand(rng, &mut c, if from16 { 2 } else { 1 }, &[]);
    let mut code = Vec::new();
    prefix(&mut code, sz);
    let sign = rng.chance(1, 2);
    code.extend_from_slice(&[
        0x0F,
        match (sign, from16) {
            (false, false) => 0xB6,
            (false, true) => 0xB7,
            (true, false) => 0xBE,
            (true, true) => 0xBF,
        },
    ]);
    modrm(&mut code, rng.below(8) as u8, rm);
    c.code = code;
    c
}

/// LEA with every 32-bit addressing form and random register values (wrapping sums), into
/// 16- and 32-bit destinations.
fn lea(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let sz = wide_size(rng);
    let base_reg = if rng.chance(4, 5) {
        Some(rng.below(8) as u8)
    } else {
        None
    };
    let index = if rng.chance(2, 3) {
        Some(rng.pick(&[EAX, ECX, EDX, EBX, EBP, ESI, EDI]))
    } else {
        None
    };
    let m = Mem {
        base: base_reg,
        index,
        scale: rng.below(4) as u8,
        disp: match rng.below(3) {
            0 => 0,
            1 => rng.below(256) as i32 - 128,
            _ => rng.u32() as i32,
        },
        disp32: rng.chance(1, 4),
    };
    let mut code = Vec::new();
    prefix(&mut code, sz);
    code.push(0x8D);
    modrm(&mut code, rng.below(8) as u8, Rm::Mem(m));
    c.code = code;
    c
}

/// CBW, CWDE, CWD, CDQ.
fn convert(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let op = rng.pick(&[0x98u8, 0x99]);
    if rng.chance(1, 2) {
        c.code.push(0x66);
    }
    c.code.push(op);
    c
}

/// LAHF, SAHF, CLC, STC, CMC, CLD, STD in short sequences.
fn flag_ops(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let n = rng.range(1, 4);
    for _ in 0..n {
        c.code
            .push(rng.pick(&[0x9E, 0x9F, 0xF5, 0xF8, 0xF9, 0xFC, 0xFD]));
    }
    c
}

/// MOV in its register, memory, immediate and moffs forms; XCHG r/m and XCHG eAX, r.
fn mov_xchg(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let sz = any_size(rng);
    let mut code = Vec::new();
    let reg = rng.below(8) as u8;
    match rng.below(6) {
        0 => {
            let (rm, _) = rm_operand(rng, &mut c, sz.bytes(), &[]);
            maybe_lock(rng, &mut code, rm);
            prefix(&mut code, sz);
            code.push(0x86 | sz.w());
            modrm(&mut code, reg, rm);
        }
        1 => {
            let sz = wide_size(rng);
            prefix(&mut code, sz);
            code.push(0x91 + rng.below(7) as u8);
        }
        2 => {
            let (rm, _) = rm_operand(rng, &mut c, sz.bytes(), &[]);
            prefix(&mut code, sz);
            code.push(rng.pick(&[0x88, 0x8A]) | sz.w());
            modrm(&mut code, reg, rm);
        }
        3 => {
            let (rm, _) = rm_operand(rng, &mut c, sz.bytes(), &[]);
            prefix(&mut code, sz);
            code.push(0xC6 | sz.w());
            modrm(&mut code, 0, rm);
            imm(&mut code, sz.bytes(), rng.interesting());
        }
        4 => {
            prefix(&mut code, sz);
            code.push(if sz == Sz::B { 0xB0 } else { 0xB8 } + reg);
            imm(&mut code, sz.bytes(), rng.interesting());
        }
        _ => {
            // moffs: absolute 32-bit offset (a different length in 64-bit mode).
            let off = data_offset(rng, sz.bytes());
            prefix(&mut code, sz);
            code.push(rng.pick(&[0xA0, 0xA2]) | sz.w());
            imm(&mut code, 4, DATA_BASE as u32 + off);
        }
    }
    c.code = code;
    c
}

/// MOVS STOS LODS SCAS CMPS (8/16/32), with and without REP/REPE/REPNE, DF clear and set,
/// segment overrides on the source; every access stays in the data region.
fn string(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let sz = any_size(rng);
    let op = rng.below(5); // MOVS STOS LODS SCAS CMPS
    let compare = op >= 3;
    let rep: Option<u8> = match rng.below(3) {
        0 => None,
        1 => Some(0xF3),
        _ => Some(if compare { 0xF2 } else { 0xF3 }),
    };
    let df = rng.chance(1, 2);
    c.eflags = (c.eflags & !0x400) | if df { 0x400 } else { 0 };
    let count = if rep.is_some() {
        if rng.chance(1, 8) {
            0
        } else {
            rng.range(1, 48)
        }
    } else {
        1
    };
    if rep.is_some() {
        c.regs[ECX as usize] = count;
    }
    if compare && rng.chance(1, 2) {
        c.mem_style = 1;
        c.regs[EAX as usize] = rng.u32() & 0x0101_0101;
    }
    let span = count.max(1) * sz.bytes();
    let place = |rng: &mut Rng| -> u32 {
        let off = if df {
            rng.range(span - sz.bytes(), DATA_SIZE as u32 - sz.bytes())
        } else {
            rng.below(DATA_SIZE as u32 - span + 1)
        };
        DATA_BASE as u32 + off
    };
    c.regs[ESI as usize] = place(rng);
    c.regs[EDI as usize] = place(rng);
    let mut code = Vec::new();
    let reads_source = matches!(op, 0 | 2 | 4);
    if reads_source && rng.chance(1, 5) {
        code.push(rng.pick(&[0x26, 0x2E, 0x36, 0x3E]));
    }
    if let Some(p) = rep {
        code.push(p);
    }
    prefix(&mut code, sz);
    code.push([0xA4, 0xAA, 0xAC, 0xAE, 0xA6][op as usize] | sz.w());
    c.code = code;
    c
}

/// PUSH/POP of registers, immediates and memory (including [ESP+disp], whose address POP
/// computes after incrementing ESP), PUSHF/POPF, PUSHA/POPA, 16- and 32-bit, in sequences.
/// 32-bit compatibility mode only (the operand sizes differ in 64-bit mode).
fn push_pop(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    c.allow_64 = false;
    c.regs[ESP as usize] = DATA_BASE as u32 + rng.range(0x1100, 0x1F00);
    let n = rng.range(1, 4);
    let mut code = Vec::new();
    for i in 0..n {
        let sz = if rng.chance(1, 4) { Sz::W } else { Sz::D };
        let last = i + 1 == n;
        prefix(&mut code, sz);
        match rng.below(9) {
            0 => code.push(0x50 + rng.below(8) as u8),
            // POP ESP would move the stack outside the data region (host #PF, interpreter RAM).
            1 => code.push(0x58 + rng.pick(&[EAX, ECX, EDX, EBX, EBP, ESI, EDI])),
            2 => {
                code.push(0x6A);
                code.push(rng.u32() as u8);
            }
            3 => {
                code.push(0x68);
                imm(&mut code, sz.bytes(), rng.interesting());
            }
            4 | 5 => {
                let push = rng.chance(1, 2);
                code.push(if push { 0xFF } else { 0x8F });
                let m = if rng.chance(1, 2) {
                    Mem {
                        base: Some(ESP),
                        index: None,
                        scale: 0,
                        disp: rng.below(64) as i32 - 32,
                        disp32: false,
                    }
                } else {
                    Mem {
                        base: None,
                        index: None,
                        scale: 0,
                        disp: DATA_BASE as i32 + rng.below(0x1000) as i32,
                        disp32: true,
                    }
                };
                modrm(&mut code, if push { 6 } else { 0 }, Rm::Mem(m));
            }
            6 => code.push(0x9C),
            7 => {
                // PUSH imm; POPF. TF stays clear (no single-step trap); AC only on the last
                // one (the host runs with CR0.AM=1, the interpreter case with AM=0).
                let mut v = rng.u32() & !(1 << 8);
                if !last {
                    v &= !(1 << 18);
                }
                code.push(0x68);
                imm(&mut code, sz.bytes(), v);
                prefix(&mut code, sz);
                code.push(0x9D);
            }
            _ => code.push(if rng.chance(1, 2) { 0x60 } else { 0x61 }),
        }
    }
    c.code = code;
    c
}

/// ENTER with nesting levels 0–31 (and masked larger ones), LEAVE, 16- and 32-bit, alone and
/// as ENTER; LEAVE pairs. 32-bit compatibility mode only.
fn enter_leave(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    c.allow_64 = false;
    c.regs[ESP as usize] = DATA_BASE as u32 + rng.range(0x1400, 0x1F00);
    c.regs[EBP as usize] = DATA_BASE as u32 + rng.range(0x200, 0x1FF0);
    let mut code = Vec::new();
    let enter = |rng: &mut Rng, code: &mut Vec<u8>| {
        if rng.chance(1, 4) {
            code.push(0x66);
        }
        code.push(0xC8);
        imm(code, 2, rng.below(0x200));
        code.push(match rng.below(8) {
            0 => rng.range(7, 31) as u8,
            1 => rng.range(32, 36) as u8,
            _ => rng.below(7) as u8,
        });
    };
    let leave = |rng: &mut Rng, code: &mut Vec<u8>| {
        if rng.chance(1, 4) {
            code.push(0x66);
        }
        code.push(0xC9);
    };
    match rng.below(3) {
        0 => enter(rng, &mut code),
        1 => {
            c.regs[EBP as usize] = DATA_BASE as u32 + rng.range(0x1000, 0x1FF0);
            leave(rng, &mut code);
        }
        _ => {
            enter(rng, &mut code);
            leave(rng, &mut code);
        }
    }
    c.code = code;
    c
}

/// DAA DAS AAA AAS AAM AAD (including AAM 0 → #DE). 32-bit compatibility mode only (invalid
/// in 64-bit mode).
fn bcd(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    c.allow_64 = false;
    let mut code = Vec::new();
    let flags = match rng.below(6) {
        0 => {
            code.push(0x27);
            undef::DAA_DAS
        }
        1 => {
            code.push(0x2F);
            undef::DAA_DAS
        }
        2 => {
            code.push(0x37);
            undef::AAA_AAS
        }
        3 => {
            code.push(0x3F);
            undef::AAA_AAS
        }
        k => {
            code.push(if k == 4 { 0xD4 } else { 0xD5 });
            code.push(match rng.below(4) {
                0 => rng.u32() as u8,
                1 if k == 4 => 0,
                _ => 10,
            });
            undef::AAM_AAD
        }
    };
    c.code = code;
    c.undef = Undefined::flags(flags);
    c
}

/// Flags read by condition code `cc` (SDM Vol. 1 Appendix B).
fn cc_reads(cc: u8) -> u32 {
    use undef::{CF, OF, PF, SF, ZF};
    match cc >> 1 {
        0 => OF,
        1 => CF,
        2 => ZF,
        3 => CF | ZF,
        4 => SF,
        5 => PF,
        6 => SF | OF,
        _ => ZF | SF | OF,
    }
}

/// Random sequences of 2–8 flag producers and consumers (the lazy-flags workout): ALU ops
/// (register or absolute memory operands), INC/DEC (CF preserved), NEG/NOT, 1-bit shifts and rotates, ADC/SBB,
/// SETcc/CMOVcc, LAHF/SAHF, CLC/STC/CMC, MUL/IMUL, BT, MOV, XCHG. A consumer is only chosen
/// when every flag it reads is defined at that point, so the final state is well defined
/// except for the flags left undefined at the end.
fn sequence(rng: &mut Rng) -> Case {
    use undef::{AF, CF, OF, STATUS};
    let mut c = base(rng);
    let n = rng.range(2, 8);
    let mut undefined = 0u32;
    let mut flags_before = Vec::new();
    let mut code = Vec::new();
    let mut emitted = 0;
    while emitted < n {
        let mut ins = Vec::new();
        let (reads, defines, undefines): (u32, u32, u32);
        match rng.below(12) {
            0 | 1 => {
                let op = rng.below(8) as u8;
                let sz = any_size(rng);
                prefix(&mut ins, sz);
                ins.push(op * 8 + rng.pick(&[0, 2]) + sz.w());
                // Register or absolute memory operand (no address registers to clobber).
                let rm = if rng.chance(1, 3) {
                    Rm::Mem(Mem {
                        base: None,
                        index: None,
                        scale: 0,
                        disp: DATA_BASE as i32 + data_offset(rng, 4) as i32,
                        disp32: true,
                    })
                } else {
                    Rm::Reg(rng.below(8) as u8)
                };
                modrm(&mut ins, rng.below(8) as u8, rm);
                reads = if matches!(op, 2 | 3) { CF } else { 0 };
                let logic = matches!(op, 1 | 4 | 6);
                defines = if logic { STATUS & !AF } else { STATUS };
                undefines = if logic { AF } else { 0 };
            }
            2 => {
                let sz = any_size(rng);
                prefix(&mut ins, sz);
                // FE/FF /0 INC, /1 DEC (CF kept); F6/F7 /2 NOT (no flags), /3 NEG.
                let digit = rng.below(4) as u8;
                ins.push(if digit < 2 { 0xFE } else { 0xF6 } | sz.w());
                modrm(&mut ins, digit, Rm::Reg(rng.below(8) as u8));
                (reads, defines, undefines) = match digit {
                    0 | 1 => (0, STATUS & !CF, 0),
                    2 => (0, 0, 0),
                    _ => (0, STATUS, 0),
                };
            }
            3 => {
                let sz = any_size(rng);
                prefix(&mut ins, sz);
                ins.push(0xD0 | sz.w());
                let op = rng.pick(&[0u8, 1, 2, 3, 4, 5, 7]);
                modrm(&mut ins, op, Rm::Reg(rng.below(8) as u8));
                (reads, defines, undefines) = match op {
                    0 | 1 => (0, CF | OF, 0),
                    2 | 3 => (CF, CF | OF, 0),
                    _ => (0, STATUS & !AF, AF),
                };
            }
            4 => {
                let cc = rng.below(16) as u8;
                if rng.chance(1, 2) {
                    ins.extend_from_slice(&[0x0F, 0x90 + cc]);
                    modrm(&mut ins, 0, Rm::Reg(rng.below(8) as u8));
                } else {
                    let sz = wide_size(rng);
                    prefix(&mut ins, sz);
                    ins.extend_from_slice(&[0x0F, 0x40 + cc]);
                    modrm(&mut ins, rng.below(8) as u8, Rm::Reg(rng.below(8) as u8));
                }
                (reads, defines, undefines) = (cc_reads(cc), 0, 0);
            }
            5 => {
                ins.push(0x9F); // LAHF
                (reads, defines, undefines) = (STATUS & !OF, 0, 0);
            }
            6 => {
                ins.push(0x9E); // SAHF
                (reads, defines, undefines) = (0, STATUS & !OF, 0);
            }
            7 => {
                let op = rng.pick(&[0xF5u8, 0xF8, 0xF9]);
                ins.push(op);
                (reads, defines, undefines) = (if op == 0xF5 { CF } else { 0 }, CF, 0);
            }
            8 => {
                let sz = any_size(rng);
                prefix(&mut ins, sz);
                ins.push(0xF6 | sz.w());
                modrm(&mut ins, rng.pick(&[4, 5]), Rm::Reg(rng.below(8) as u8));
                (reads, defines, undefines) = (0, CF | OF, undef::MUL);
            }
            9 => {
                let sz = wide_size(rng);
                prefix(&mut ins, sz);
                ins.extend_from_slice(&[0x0F, 0xA3]);
                modrm(&mut ins, rng.below(8) as u8, Rm::Reg(rng.below(8) as u8));
                (reads, defines, undefines) = (0, CF, undef::BIT_TEST);
            }
            10 => {
                let sz = any_size(rng);
                prefix(&mut ins, sz);
                ins.push(rng.pick(&[0x88, 0x86]) | sz.w());
                modrm(&mut ins, rng.below(8) as u8, Rm::Reg(rng.below(8) as u8));
                (reads, defines, undefines) = (0, 0, 0);
            }
            _ => {
                let sz = any_size(rng);
                prefix(&mut ins, sz);
                let op = rng.pick(&[2u8, 3]); // ADC, SBB with an immediate
                ins.push(0x80 | sz.w());
                modrm(&mut ins, op, Rm::Reg(rng.below(8) as u8));
                imm(&mut ins, sz.bytes(), rng.interesting());
                (reads, defines, undefines) = (CF, STATUS, 0);
            }
        }
        if reads & undefined != 0 {
            continue;
        }
        flags_before.push((code.len() as u32, undefined));
        undefined = (undefined & !defines) | undefines;
        code.extend_from_slice(&ins);
        emitted += 1;
    }
    c.code = code;
    c.undef = Undefined {
        flags: undefined,
        flags_before,
        ..Undefined::default()
    };
    c
}

/// Control transfers within the code page: Jcc rel8/rel32 and JMP over a marker instruction,
/// LOOP/LOOPE/LOOPNE as real backward loops, JECXZ/JCXZ, CALL rel32/r/m32 followed by POP of
/// the return address, PUSH target; RET/RET imm16. The outcome shows in AL / the popped
/// register / ESP. (Branch encodings are different instructions in 64-bit mode, so these run
/// in compatibility mode only.)
fn branch(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    c.allow_64 = false;
    c.regs[ESP as usize] = DATA_BASE as u32 + rng.range(0x1100, 0x1F00);
    let mut code = Vec::new();
    let marker = |code: &mut Vec<u8>| code.extend_from_slice(&[0xB0, 0x5A]); // mov al, 0x5A
    match rng.below(8) {
        0 => {
            code.extend_from_slice(&[0x70 + rng.below(16) as u8, 2]);
            marker(&mut code);
        }
        1 => {
            code.extend_from_slice(&[0x0F, 0x80 + rng.below(16) as u8]);
            imm(&mut code, 4, 2);
            marker(&mut code);
        }
        2 => {
            // inc al; loop/loope/loopne back to it.
            c.regs[ECX as usize] = rng.range(1, 60);
            code.extend_from_slice(&[0xFE, 0xC0, rng.pick(&[0xE0u8, 0xE1, 0xE2]), 0xFC]);
        }
        3 => {
            if rng.chance(1, 2) {
                c.regs[ECX as usize] = 0;
            } else if rng.chance(1, 2) {
                c.regs[ECX as usize] &= 0xFFFF_0000;
            }
            if rng.chance(1, 3) {
                code.push(0x67); // JCXZ
            }
            code.extend_from_slice(&[0xE3, 2]);
            marker(&mut code);
        }
        4 => {
            if rng.chance(1, 2) {
                code.extend_from_slice(&[0xEB, 2]);
            } else {
                code.push(0xE9);
                imm(&mut code, 4, 2);
            }
            marker(&mut code);
        }
        5 => {
            code.push(0xE8);
            imm(&mut code, 4, 2);
            marker(&mut code);
            code.push(0x58 + rng.pick(&[EAX, ECX, EDX, EBX, EBP, ESI, EDI]));
        }
        6 => {
            // call reg → target: pop reg2
            let r = rng.pick(&[EAX, ECX, EDX, EBX, EBP, ESI, EDI]);
            c.regs[r as usize] = super::CODE_BASE as u32 + 4;
            code.extend_from_slice(&[0xFF, 0xD0 + r]);
            marker(&mut code);
            code.push(0x58 + rng.pick(&[EAX, ECX, EDX, EBX, EBP, ESI, EDI]));
        }
        _ => {
            // push target; ret [imm16] — target is the end of the sequence.
            let pop = if rng.chance(1, 2) {
                Some(rng.below(64) as u16 * 2)
            } else {
                None
            };
            let len = 5 + if pop.is_some() { 3 } else { 1 } + 2;
            code.push(0x68);
            imm(&mut code, 4, super::CODE_BASE as u32 + len);
            match pop {
                Some(n) => {
                    code.push(0xC2);
                    imm(&mut code, 2, u32::from(n));
                }
                None => code.push(0xC3),
            }
            marker(&mut code);
        }
    }
    c.code = code;
    c
}

/// XLAT (with segment overrides), BOUND (in and out of range → #BR; register form → #UD) and
/// INTO (#OF when OF=1). BOUND and INTO are compatibility-mode only.
fn xlat_bound_into(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let mut code = Vec::new();
    match rng.below(3) {
        0 => {
            c.regs[EBX as usize] = DATA_BASE as u32 + rng.below(DATA_SIZE as u32 - 256);
            if rng.chance(1, 4) {
                code.push(rng.pick(&[0x26, 0x2E, 0x36, 0x3E]));
            }
            code.push(0xD7);
        }
        1 => {
            c.allow_64 = false;
            let sz = wide_size(rng);
            let reg = rng.below(8) as u8;
            prefix(&mut code, sz);
            code.push(0x62);
            if rng.chance(1, 10) {
                modrm(&mut code, reg, Rm::Reg(rng.below(8) as u8));
            } else {
                let off = data_offset(rng, 2 * sz.bytes());
                let m = mem_at(rng, &mut c.regs, off, &[reg]);
                let lo = mem_value(&c, off, sz.bytes()) as u32;
                let hi = mem_value(&c, off + sz.bytes(), sz.bytes()) as u32;
                let v = match rng.below(4) {
                    0 => lo,
                    1 => hi,
                    2 => lo.wrapping_add(rng.below(16)).wrapping_sub(8),
                    _ => rng.interesting(),
                };
                set_reg(&mut c.regs, sz, reg, v);
                modrm(&mut code, reg, Rm::Mem(m));
            }
        }
        _ => {
            c.allow_64 = false;
            code.push(0xCE);
        }
    }
    c.code = code;
    c
}

/// Prefix handling on ALU memory forms: redundant operand-size prefixes, segment overrides
/// (CS on a write is #GP: a code segment is not writable), LOCK on a register destination or
/// a non-lockable instruction (#UD), multi-byte NOP (0F 1F /0) and PAUSE.
fn prefixes(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let mut code = Vec::new();
    match rng.below(4) {
        0 => {
            // Segment override(s) on a read-modify-write or read ALU op with a memory operand.
            c.allow_64 = false;
            let sz = any_size(rng);
            let off = data_offset(rng, sz.bytes());
            let m = mem_at(rng, &mut c.regs, off, &[]);
            for _ in 0..rng.range(1, 2) {
                code.push(rng.pick(&[0x26, 0x2E, 0x36, 0x3E]));
            }
            prefix(&mut code, sz);
            let op = rng.below(8) as u8;
            code.push(op * 8 + rng.pick(&[0, 2]) + sz.w());
            modrm(&mut code, rng.below(8) as u8, Rm::Mem(m));
            if matches!(op, 1 | 4 | 6) {
                c.undef = Undefined::flags(undef::LOGIC);
            }
        }
        1 => {
            // LOCK with a register destination, or on an instruction that cannot be locked.
            code.push(0xF0);
            if rng.chance(1, 2) {
                code.push(rng.below(8) as u8 * 8 + 1);
                modrm(&mut code, rng.below(8) as u8, Rm::Reg(rng.below(8) as u8));
            } else {
                let off = data_offset(rng, 4);
                let m = mem_at(rng, &mut c.regs, off, &[]);
                code.push(rng.pick(&[0x8B, 0x89, 0x85]));
                modrm(&mut code, rng.below(8) as u8, Rm::Mem(m));
            }
        }
        2 => {
            // Redundant operand-size prefixes: the last 66 does not cancel the first.
            let n = rng.range(2, 3) as usize;
            code.extend(std::iter::repeat_n(0x66, n));
            code.push(0x01);
            modrm(&mut code, rng.below(8) as u8, Rm::Reg(rng.below(8) as u8));
        }
        _ => {
            if rng.chance(1, 2) {
                code.extend_from_slice(&[0xF3, 0x90]);
            } else {
                let sz = wide_size(rng);
                prefix(&mut code, sz);
                code.extend_from_slice(&[0x0F, 0x1F]);
                let off = data_offset(rng, 4);
                let rm = if rng.chance(1, 2) {
                    Rm::Mem(mem_at(rng, &mut c.regs, off, &[]))
                } else {
                    Rm::Reg(rng.below(8) as u8)
                };
                modrm(&mut code, 0, rm);
            }
        }
    }
    c.code = code;
    c
}

/// Self-modifying code: a store into the code page changes an instruction that follows it in
/// the same sequence (an immediate, a ModRM byte turning INC into DEC, a whole imm32, or a REP
/// STOSB overwriting instructions with NOPs). x86 guarantees the modified bytes are the ones
/// executed (SDM Vol. 3A §11.6), so the interpreter must drop what it decoded.
fn self_modifying(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let code_base = super::CODE_BASE as u32;
    let abs = |disp: u32| Mem {
        base: None,
        index: None,
        scale: 0,
        disp: disp as i32,
        disp32: true,
    };
    let mut code = Vec::new();
    match rng.below(4) {
        0 => {
            // mov byte [imm8 of the next mov al, imm8], v
            let v = rng.u32() as u8;
            code.push(0xC6);
            modrm(&mut code, 0, Rm::Mem(abs(code_base + 9)));
            code.push(v);
            code.extend_from_slice(&[0xB0, rng.u32() as u8]);
        }
        1 => {
            // Turn inc eax (FF C0) into dec eax (FF C8) or vice versa.
            let from = rng.pick(&[0xC0u8, 0xC8]);
            code.push(0xC6);
            modrm(&mut code, 0, Rm::Mem(abs(code_base + 9)));
            code.push(from ^ 0x08);
            code.extend_from_slice(&[0xFF, from]);
        }
        2 => {
            // mov dword [imm32 of the next mov eax, imm32], v
            code.push(0xC7);
            modrm(&mut code, 0, Rm::Mem(abs(code_base + 12)));
            imm(&mut code, 4, rng.u32());
            code.push(0xB8);
            imm(&mut code, 4, rng.u32());
        }
        _ => {
            // rep stosb writes NOPs over the first n of several inc eax (FF C0).
            let n = rng.below(6) * 2;
            c.eflags &= !0x400;
            c.regs[EAX as usize] = (c.regs[EAX as usize] & !0xFF) | 0x90;
            c.regs[ECX as usize] = n;
            c.regs[EDI as usize] = code_base + 2;
            code.extend_from_slice(&[0xF3, 0xAA]);
            for _ in 0..6 {
                code.extend_from_slice(&[0xFF, 0xC0]);
            }
        }
    }
    c.code = code;
    c
}

/// Instructions a CPL-3 program may not execute (IOPL 0, no I/O bitmap, CR4.PCE clear): each
/// is #GP(0) (SDM Vol. 3A §2.8, §5.9, §18.5.1); INT n through a DPL-0 gate is #GP(n*8+2)
/// (§6.12.1.1); UD2 is #UD.
fn privileged(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let off = data_offset(rng, 8);
    let m = Rm::Mem(mem_at(rng, &mut c.regs, off, &[]));
    let r = Rm::Reg(rng.below(8) as u8);
    let mut code = Vec::new();
    match rng.below(22) {
        0 => code.push(0xFA), // CLI
        1 => code.push(0xFB), // STI
        2 => code.push(0xF4), // HLT
        3 => code.extend_from_slice(&[rng.pick(&[0xE4, 0xE5, 0xE6, 0xE7]), rng.u32() as u8]),
        4 => code.push(rng.pick(&[0xEC, 0xED, 0xEE, 0xEF])), // IN/OUT with DX
        5 => code.push(rng.pick(&[0x6C, 0x6D, 0x6E, 0x6F])), // INS/OUTS
        6 | 7 => {
            code.extend_from_slice(&[0x0F, 0x01]); // LGDT / LIDT / INVLPG m
            modrm(&mut code, rng.pick(&[2, 3, 7]), m);
        }
        8 => {
            code.extend_from_slice(&[0x0F, 0x00]); // LLDT / LTR r/m16
            modrm(
                &mut code,
                rng.pick(&[2, 3]),
                if rng.chance(1, 2) { r } else { m },
            );
        }
        9 | 10 => {
            code.extend_from_slice(&[0x0F, rng.pick(&[0x20, 0x22])]); // MOV from/to CRn
            modrm(
                &mut code,
                rng.pick(&[0, 2, 3, 4]),
                Rm::Reg(rng.below(8) as u8),
            );
        }
        11 => {
            code.extend_from_slice(&[0x0F, rng.pick(&[0x21, 0x23])]); // MOV from/to DRn
            modrm(
                &mut code,
                rng.pick(&[0, 1, 2, 3, 6, 7]),
                Rm::Reg(rng.below(8) as u8),
            );
        }
        12 => code.extend_from_slice(&[0x0F, rng.pick(&[0x30, 0x32])]), // WRMSR / RDMSR
        13 => code.extend_from_slice(&[0x0F, rng.pick(&[0x08, 0x09])]), // INVD / WBINVD
        14 => code.extend_from_slice(&[0x0F, 0x06]),                    // CLTS
        15 => {
            code.extend_from_slice(&[0x0F, 0x01]); // LMSW r/m16
            modrm(&mut code, 6, if rng.chance(1, 2) { r } else { m });
        }
        16 => code.extend_from_slice(&[0x0F, 0x33]), // RDPMC
        17 => code.extend_from_slice(&[0x0F, 0x0B]), // UD2
        18 => code.extend_from_slice(&[0xCD, 4]),    // INT 4: DPL-3 gate, #OF as a trap
        _ => {
            let n = loop {
                let n = rng.u32() as u8;
                if !matches!(n, 3 | 4 | 0x80) {
                    break n;
                }
            };
            code.extend_from_slice(&[0xCD, n]);
        }
    }
    c.code = code;
    c
}

/// Operand-size prefix in 16-bit code: 0x66 selects 32 bits.
fn prefix16(code: &mut Vec<u8>, sz: Sz) {
    if sz == Sz::D {
        code.push(0x66);
    }
}

/// An offset in a 16-bit segment of limit 0x1FFF: mostly inside (room for `len` bytes),
/// sometimes straddling or past the limit, sometimes anywhere in 64 KiB (#GP/#SS).
fn seg16_offset(rng: &mut Rng, len: u32) -> u16 {
    match rng.below(10) {
        0 => rng.u32() as u16,
        1 => (0x2000 - rng.below(len + 2)) as u16,
        _ => rng.below(0x2000 - len + 1) as u16,
    }
}

/// A memory operand for 16-bit code: usually 16-bit addressing, sometimes 0x67 with 32-bit
/// addressing; sometimes with a segment override (ES has another base and limit 0xFFF; CS is
/// the 16-bit code segment, readable but not writable). Returns the prefixes to emit first.
fn seg16_mem(rng: &mut Rng, c: &mut Case, len: u32, keep: &[u8]) -> (Vec<u8>, Mem16OrMem) {
    let mut pre = Vec::new();
    if rng.chance(1, 5) {
        pre.push(rng.pick(&[0x26, 0x2E, 0x36, 0x3E]));
    }
    let off = seg16_offset(rng, len);
    if rng.chance(1, 6) {
        pre.push(0x67);
        let off32 = if rng.chance(1, 8) {
            rng.u32()
        } else {
            u32::from(off)
        };
        (
            pre,
            Mem16OrMem::M32(mem_at_seg(rng, &mut c.regs, off32, keep)),
        )
    } else {
        (pre, Mem16OrMem::M16(mem16_at(rng, &mut c.regs, off, keep)))
    }
}

/// Either addressing form.
#[derive(Clone, Copy)]
enum Mem16OrMem {
    M16(Mem16),
    M32(Mem),
}

/// r/m operand in 16-bit code.
#[derive(Clone, Copy)]
enum Rm16 {
    Reg(u8),
    Mem(Mem16OrMem),
}

fn modrm_any(code: &mut Vec<u8>, reg: u8, rm: Rm16) {
    match rm {
        Rm16::Reg(r) => modrm(code, reg, Rm::Reg(r)),
        Rm16::Mem(Mem16OrMem::M16(m)) => modrm16(code, reg, m),
        Rm16::Mem(Mem16OrMem::M32(m)) => modrm(code, reg, Rm::Mem(m)),
    }
}

/// A 16-bit-code case (CS = the LDT's 16-bit code segment).
fn base16(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    c.allow_64 = false;
    c.segs = Segs::SEG16;
    c
}

/// 16-bit code: ALU ops, INC/DEC/NEG/NOT, shifts, MUL/IMUL, MOV (incl. moffs16), XCHG, LEA
/// and MOVZX/MOVSX with 16-bit addressing ([BX+SI], [BP+DI] → SS, ...), 0x67 32-bit
/// addressing, segment overrides, and offsets at or past the segment limit (#GP, #SS).
fn seg16_alu(rng: &mut Rng) -> Case {
    let mut c = base16(rng);
    let sz = any_size(rng);
    let mut code = Vec::new();
    let rm = if rng.chance(1, 3) {
        Rm16::Reg(rng.below(8) as u8)
    } else {
        let (pre, m) = seg16_mem(rng, &mut c, sz.bytes(), &[ECX]);
        code.extend_from_slice(&pre);
        Rm16::Mem(m)
    };
    let reg = rng.below(8) as u8;
    match rng.below(9) {
        0 | 1 => {
            let op = rng.below(8) as u8;
            prefix16(&mut code, sz);
            match rng.below(3) {
                0 => {
                    code.push(op * 8 + rng.pick(&[0, 2]) + sz.w());
                    modrm_any(&mut code, reg, rm);
                }
                1 => {
                    code.push(0x80 | sz.w());
                    modrm_any(&mut code, op, rm);
                    imm(&mut code, sz.bytes(), rng.interesting());
                }
                _ => {
                    code.push(if sz == Sz::B { 0x80 } else { 0x83 });
                    modrm_any(&mut code, op, rm);
                    imm(&mut code, 1, rng.interesting());
                }
            }
            if matches!(op, 1 | 4 | 6) {
                c.undef = Undefined::flags(undef::LOGIC);
            }
        }
        2 => {
            prefix16(&mut code, sz);
            let digit = rng.below(4) as u8;
            code.push(if digit < 2 { 0xFE } else { 0xF6 } | sz.w());
            modrm_any(&mut code, digit, rm);
        }
        3 => {
            let op = rng.below(8) as u8;
            let count = shift_count(rng);
            prefix16(&mut code, sz);
            let eff = if rng.chance(1, 2) {
                c.regs[ECX as usize] = (c.regs[ECX as usize] & !0xFF) | u32::from(count);
                code.push(0xD2 | sz.w());
                modrm_any(&mut code, op, rm);
                count
            } else {
                code.push(0xC0 | sz.w());
                modrm_any(&mut code, op, rm);
                code.push(count);
                count
            };
            c.undef = Undefined::flags(undef::shift(ShiftOp::ALL[op as usize], sz.bits(), eff));
        }
        4 => {
            prefix16(&mut code, sz);
            code.push(0xF6 | sz.w());
            modrm_any(&mut code, rng.pick(&[4, 5]), rm);
            c.undef = Undefined::flags(undef::MUL);
        }
        5 => {
            prefix16(&mut code, sz);
            code.push(rng.pick(&[0x88, 0x8A, 0x86]) | sz.w());
            modrm_any(&mut code, reg, rm);
        }
        6 => {
            // moffs16 (no ModRM): mov al/ax/eax, [off] and back.
            code.retain(|&b| b != 0x67);
            prefix16(&mut code, sz);
            code.push(rng.pick(&[0xA0, 0xA2]) | sz.w());
            imm(&mut code, 2, u32::from(seg16_offset(rng, sz.bytes())));
        }
        7 => {
            // LEA: 16-bit address arithmetic wraps at 64 KiB; no memory access.
            let sz = wide_size(rng);
            prefix16(&mut code, sz);
            code.push(0x8D);
            let m = match rm {
                Rm16::Mem(m) => m,
                Rm16::Reg(_) => {
                    let off = rng.u32() as u16;
                    Mem16OrMem::M16(mem16_at(rng, &mut c.regs, off, &[]))
                }
            };
            modrm_any(&mut code, reg, Rm16::Mem(m));
        }
        _ => {
            let sz = wide_size(rng);
            prefix16(&mut code, sz);
            code.extend_from_slice(&[0x0F, rng.pick(&[0xB6, 0xBE])]);
            modrm_any(&mut code, reg, rm);
        }
    }
    c.code = code;
    c
}

/// 16-bit code string operations: SI/DI/CX are 16-bit (the upper halves must survive), ES
/// has a different base and limit than DS, and REP runs may cross a segment limit or wrap SI/DI
/// past 0xFFFF and fault part-way (the registers and memory then show the progress made).
/// With 0x67 the 32-bit ESI/EDI/ECX are used instead.
fn seg16_string(rng: &mut Rng) -> Case {
    let mut c = base16(rng);
    let sz = any_size(rng);
    let op = rng.below(5);
    let compare = op >= 3;
    let rep: Option<u8> = match rng.below(3) {
        0 => None,
        1 => Some(0xF3),
        _ => Some(if compare { 0xF2 } else { 0xF3 }),
    };
    let df = rng.chance(1, 2);
    c.eflags = (c.eflags & !0x400) | if df { 0x400 } else { 0 };
    let a32 = rng.chance(1, 6);
    let count = if rng.chance(1, 10) {
        0
    } else {
        rng.range(1, 40)
    };
    let set_low = |r: &mut u32, v: u32| {
        *r = if a32 {
            v
        } else {
            (*r & 0xFFFF_0000) | (v & 0xFFFF)
        }
    };
    if rep.is_some() {
        set_low(&mut c.regs[ECX as usize], count);
    }
    if compare && rng.chance(1, 2) {
        c.mem_style = 1;
        c.regs[EAX as usize] = rng.u32() & 0x0101_0101;
    }
    // DS limit 0x1FFF, ES limit 0x0FFF; now and then start near (or past) the end.
    let place = |rng: &mut Rng, limit: u32| -> u32 {
        match rng.below(8) {
            0 => limit + 1 - rng.below(24),
            1 => rng.below(24),
            2 if !a32 => 0xFFFF - rng.below(8),
            _ => rng.below(limit + 1),
        }
    };
    // MOVS and CMPS access two operands; the SDM does not order those accesses, so when both
    // would fault the vector is the implementation's choice (#GP for ES:DI first on this host).
    // Only one of the two may start near a limit; the other stays clear for the whole run.
    let span = (count.max(1) + 1) * sz.bytes();
    let safe = |rng: &mut Rng, limit: u32| rng.range(span, limit + 1 - span);
    let (si, di) = if matches!(op, 0 | 4) {
        if rng.chance(1, 2) {
            (place(rng, 0x1FFF), safe(rng, 0xFFF))
        } else {
            (safe(rng, 0x1FFF), place(rng, 0xFFF))
        }
    } else {
        (place(rng, 0x1FFF), place(rng, 0xFFF))
    };
    set_low(&mut c.regs[ESI as usize], si);
    set_low(&mut c.regs[EDI as usize], di);
    let mut code = Vec::new();
    if matches!(op, 0 | 2 | 4) && rng.chance(1, 5) {
        code.push(rng.pick(&[0x26, 0x2E, 0x36, 0x3E]));
    }
    if a32 {
        code.push(0x67);
    }
    if let Some(p) = rep {
        code.push(p);
    }
    prefix16(&mut code, sz);
    code.push([0xA4, 0xAA, 0xAC, 0xAE, 0xA6][op as usize] | sz.w());
    c.code = code;
    c
}

/// 16-bit code stack and control transfer: PUSH/POP (registers, immediates, memory,
/// segment registers DS/ES), PUSHF/POPF, PUSHA/POPA, CALL rel16 / CALL r/m16 + POP, RET [imm16],
/// ENTER/LEAVE, Jcc rel8/rel16, LOOP, JCXZ — with the 16-bit SS (SP wraps; the limit is 0x1FFF
/// so pushes at low SP fault with #SS) and 0x66 for 32-bit operands.
fn seg16_stack(rng: &mut Rng) -> Case {
    let mut c = base16(rng);
    let sp = match rng.below(10) {
        0 => rng.below(8),
        1 => 0x2000 - rng.below(8),
        2 => rng.u32() & 0xFFFF,
        _ => rng.range(0x100, 0x1F00),
    };
    c.regs[ESP as usize] = (c.regs[ESP as usize] & 0xFFFF_0000) | sp;
    c.regs[EBP as usize] = (c.regs[EBP as usize] & 0xFFFF_0000) | rng.range(0x40, 0x1FF0);
    if rng.chance(1, 3) {
        // A 32-bit stack segment (B=1) under 16-bit code: ESP and EBP are used whole.
        c.segs.ss = 0x1F;
        c.regs[ESP as usize] &= 0xFFFF;
        c.regs[EBP as usize] &= 0xFFFF;
    }
    let n = rng.range(1, 3);
    let mut code = Vec::new();
    // A LOOP was emitted: its CX must keep the small count it was given.
    let mut cx_locked = false;
    for i in 0..n {
        let sz = if rng.chance(1, 4) { Sz::D } else { Sz::W };
        let last = i + 1 == n;
        match rng.below(12) {
            0 => {
                prefix16(&mut code, sz);
                code.push(0x50 + rng.below(8) as u8);
            }
            1 => {
                prefix16(&mut code, sz);
                code.push(0x58 + rng.pick(&[EAX, ECX, EDX, EBX, EBP, ESI, EDI]));
            }
            2 => {
                prefix16(&mut code, sz);
                code.push(0x68);
                imm(&mut code, sz.bytes(), rng.interesting());
            }
            3 => {
                let push = rng.chance(1, 2);
                prefix16(&mut code, sz);
                code.push(if push { 0xFF } else { 0x8F });
                modrm16(
                    &mut code,
                    if push { 6 } else { 0 },
                    Mem16::Abs(seg16_offset(rng, 4)),
                );
            }
            4 => code.push(rng.pick(&[0x06, 0x1E])), // push es / push ds
            5 => {
                // push imm16 selector; pop ds/es
                code.push(0x68);
                imm(&mut code, 2, u32::from(rng.pick(&SELECTORS)));
                code.push(rng.pick(&[0x07, 0x1F]));
            }
            6 => {
                let mut v = rng.u32() & !(1 << 8);
                if !last {
                    v &= !(1 << 18);
                }
                prefix16(&mut code, sz);
                code.push(0x68);
                imm(&mut code, sz.bytes(), v);
                prefix16(&mut code, sz);
                code.push(0x9D);
            }
            7 => {
                // POPA only first and well inside the segment: when a later pop of POPA faults
                // at the limit, this AMD host has already loaded DI (not an SDM behaviour).
                let safe = i == 0 && (0x100..=0x1F00).contains(&sp);
                prefix16(&mut code, sz);
                code.push(if safe {
                    rng.pick(&[0x9C, 0x60, 0x61])
                } else {
                    rng.pick(&[0x9C, 0x60])
                });
            }
            8 => {
                // call rel16 over a marker, then pop the return address.
                code.extend_from_slice(&[0xE8, 2, 0, 0xB0, 0x5A]);
                code.push(0x58 + rng.pick(&[EAX, ECX, EDX, EBX, ESI, EDI]));
            }
            9 => {
                // push target; ret [imm16]
                let pop = rng.chance(1, 2);
                let here = code.len() as u32;
                let target = here + 3 + if pop { 3 } else { 1 } + 2;
                code.push(0x68);
                imm(&mut code, 2, target);
                if pop {
                    code.push(0xC2);
                    imm(&mut code, 2, rng.below(16) * 2);
                } else {
                    code.push(0xC3);
                }
                code.extend_from_slice(&[0xB0, 0x5A]);
            }
            10 => {
                prefix16(&mut code, sz);
                code.push(0xC8);
                imm(&mut code, 2, rng.below(0x100));
                code.push(rng.below(5) as u8);
                if rng.chance(1, 2) {
                    prefix16(&mut code, sz);
                    code.push(0xC9);
                }
            }
            _ => match rng.below(3) {
                0 => code.extend_from_slice(&[0x70 + rng.below(16) as u8, 2, 0xB0, 0x5A]),
                1 => {
                    cx_locked = true;
                    c.regs[ECX as usize] = (c.regs[ECX as usize] & 0xFFFF_0000) | rng.range(1, 40);
                    code.extend_from_slice(&[0xFE, 0xC0, rng.pick(&[0xE0u8, 0xE1, 0xE2]), 0xFC]);
                }
                _ => {
                    if !cx_locked && rng.chance(1, 2) {
                        c.regs[ECX as usize] &= 0xFFFF_0000;
                    }
                    code.extend_from_slice(&[0xE3, 2, 0xB0, 0x5A]);
                }
            },
        }
    }
    c.code = code;
    c
}

/// Selectors worth loading: null (RPL 0–3), Linux's kernel (DPL 0) and user GDT entries with
/// both RPLs, every LDT entry (16-bit, based, read-only, expand-down, not present, code), and
/// selectors past the end of the GDT (limit 0x7F) and the LDT (8 entries). GDT entries
/// 0x40–0x7F (TSS, LDT, TLS, per-CPU) differ between the host and the test machine and are
/// left out.
const SELECTORS: [u16; 30] = [
    0x00, 0x01, 0x03, 0x08, 0x10, 0x13, 0x18, 0x1B, 0x20, 0x23, 0x28, 0x2B, 0x30, 0x33, 0x04, 0x07,
    0x0C, 0x0F, 0x14, 0x17, 0x1F, 0x27, 0x2F, 0x37, 0x3F, 0x3C, 0x47, 0x7F, 0x83, 0xFFFB,
];

/// Offset (in the segment `sel` names) of a byte of the data region or code page, so an
/// access after a successful load lands in mapped memory on the host.
fn offset_in(rng: &mut Rng, sel: u16, len: u32) -> u32 {
    match sel & !3 {
        0x20 => CODE_BASE32 + rng.below(0x1000 - len),
        0x04 | 0x3C => rng.below(0x1000 - len),
        0x14 => rng.below(0x1000 - len),
        0x2C => 0xE000 + rng.below(0x2000 - len),
        0x0C | 0x1C | 0x24 | 0x34 => rng.below(0x2000 - len),
        _ => DATA_BASE as u32 + rng.below(0x2000 - len),
    }
}

const CODE_BASE32: u32 = super::CODE_BASE as u32;

/// MOV Sreg, r/m16; POP DS/ES/SS; LDS/LES/LSS; MOV r/m16, Sreg — loading every kind of
/// selector (null, DPL 0, RPL ≠ CPL, code into DS, read-only or not-present into SS, past the
/// table limit: #GP(sel), #NP(sel), #SS(sel), null → #GP(0) at the access), followed by an
/// access through the loaded register (read-only and code segments refuse writes, expand-down
/// and limit checks apply). Runs in flat 32-bit code and in 16-bit code.
fn segment_loads(rng: &mut Rng) -> Case {
    let sixteen = rng.chance(1, 3);
    let mut c = if sixteen { base16(rng) } else { base(rng) };
    c.allow_64 = false;
    // A stack in the region for POP/PUSH, in whichever SS the case starts with.
    let sp = if sixteen {
        rng.range(0x100, 0x1F00)
    } else {
        DATA_BASE as u32 + rng.range(0x100, 0x1F00)
    };
    c.regs[ESP as usize] = if sixteen {
        (c.regs[ESP as usize] & 0xFFFF_0000) | sp
    } else {
        sp
    };
    let sel = rng.pick(&SELECTORS);
    let sreg = rng.pick(&[0u8, 2, 3]); // ES, SS, DS
    let mut code = Vec::new();
    let reg = rng.pick(&[EAX, ECX, EDX, EBX, ESI, EDI]);
    match rng.below(4) {
        0 | 1 => {
            // mov sreg, reg
            set_reg(&mut c.regs, Sz::W, reg, u32::from(sel));
            code.push(0x8E);
            modrm(&mut code, sreg, Rm::Reg(reg));
        }
        2 => {
            // push imm; pop sreg
            if sixteen {
                code.push(0x68);
                imm(&mut code, 2, u32::from(sel));
            } else {
                code.push(0x68);
                imm(&mut code, 4, u32::from(sel) | (rng.u32() & 0xFFFF_0000));
            }
            code.push([0x07, 0, 0x17, 0x1F][sreg as usize]);
        }
        _ => {
            // mov word [ptr+off_size], sel; lds/les/lss reg, [ptr]
            let off_size = if sixteen { 2 } else { 4 };
            if sixteen {
                let p = rng.below(0x1000) as u16;
                code.extend_from_slice(&[0xC7]);
                modrm16(&mut code, 0, Mem16::Abs(p + off_size));
                imm(&mut code, 2, u32::from(sel));
                match sreg {
                    0 => code.push(0xC4),
                    2 => code.extend_from_slice(&[0x0F, 0xB2]),
                    _ => code.push(0xC5),
                }
                modrm16(&mut code, reg, Mem16::Abs(p));
            } else {
                let p = DATA_BASE as u32 + rng.below(0x1000);
                let abs = |d: u32| {
                    Rm::Mem(Mem {
                        base: None,
                        index: None,
                        scale: 0,
                        disp: d as i32,
                        disp32: true,
                    })
                };
                code.push(0x66);
                code.push(0xC7);
                modrm(&mut code, 0, abs(p + u32::from(off_size)));
                imm(&mut code, 2, u32::from(sel));
                match sreg {
                    0 => code.push(0xC4),
                    2 => code.extend_from_slice(&[0x0F, 0xB2]),
                    _ => code.push(0xC5),
                }
                modrm(&mut code, reg, abs(p));
            }
        }
    }
    // Then use it.
    let off = offset_in(rng, sel, 4);
    match (sreg, rng.below(3)) {
        (2, _) => {
            // Through SS: a push at an ESP inside the new stack segment.
            let esp = offset_in(rng, sel, 4) + 4;
            if sixteen {
                code.push(0x66); // mov esp, imm32 in 16-bit code
            }
            code.push(0xBC);
            imm(&mut code, 4, esp);
            code.push(0x50 + reg);
        }
        (_, k) => {
            let seg_prefix = if sreg == 0 { 0x26 } else { 0x3E };
            code.push(seg_prefix);
            if sixteen {
                code.push(0x67);
            }
            let op = if k == 0 { 0x89 } else { 0x8B };
            code.push(op);
            modrm(
                &mut code,
                rng.below(8) as u8,
                Rm::Mem(Mem {
                    base: None,
                    index: None,
                    scale: 0,
                    disp: off as i32,
                    disp32: true,
                }),
            );
            if rng.chance(1, 3) {
                // And read the selector back.
                code.push(0x8C);
                modrm(&mut code, sreg, Rm::Reg(rng.below(8) as u8));
            }
        }
    }
    c.code = code;
    c
}

/// LAR, LSL, VERR, VERW on every kind of selector, from a register or memory, 16/32-bit
/// destinations (SDM Vol. 2A LAR, LSL; 2B VERR/VERW): ZF reports success, the destination
/// changes only then.
fn lar_lsl(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let sel = if rng.chance(1, 8) {
        rng.u32() as u16
    } else {
        rng.pick(&SELECTORS)
    };
    // GDT entries 8–15 differ from the host's; keep those selectors out.
    let sel = if sel & 4 == 0 && (0x40..0x80).contains(&(sel & !7)) {
        sel & 7
    } else {
        sel
    };
    let src = rng.pick(&[EAX, ECX, EDX, EBX, ESI, EDI]);
    c.regs[src as usize] = (c.regs[src as usize] & 0xFFFF_0000) | u32::from(sel);
    let mut code = Vec::new();
    let rm = if rng.chance(1, 4) {
        let off = data_offset(rng, 2);
        let m = mem_at(rng, &mut c.regs, off, &[]);
        // The selector comes from memory: write it there first.
        code.push(0x66);
        code.push(0xC7);
        modrm(&mut code, 0, Rm::Mem(m));
        imm(&mut code, 2, u32::from(sel));
        Rm::Mem(m)
    } else {
        Rm::Reg(src)
    };
    match rng.below(3) {
        0 | 1 => {
            let sz = wide_size(rng);
            let lar = rng.chance(1, 2);
            let dst = rng.below(8) as u8;
            prefix(&mut code, sz);
            code.extend_from_slice(&[0x0F, if lar { 0x02 } else { 0x03 }]);
            modrm(&mut code, dst, rm);
            if lar && sz == Sz::D {
                c.undef.regs[dst as usize] = undef::LAR32_UNDEFINED;
            }
        }
        _ => {
            code.extend_from_slice(&[0x0F, 0x00]);
            modrm(&mut code, rng.pick(&[4, 5]), rm);
        }
    }
    c.code = code;
    c
}

/// 32-bit code in a based code segment (the LDT's 32-bit code segment: base = the code page,
/// EIP starts at 0, limit 0xFFF) with based, limited data and stack segments (DS = SS = the
/// region with B=1, ES its upper half; sometimes a 16-bit SS, a read-only DS or an
/// expand-down ES): memory operands by segment offset (limit faults at the edges, #SS for
/// ESP/EBP-based ones), string instructions across ES's limit, PUSH/POP/CALL/RET (return
/// addresses are segment offsets), LOOP and Jcc.
fn seg32_based(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    c.allow_64 = false;
    c.segs = Segs {
        cs: 0x3F,
        ds: rng.pick(&[0x1F, 0x1F, 0x1F, 0x27]),
        es: rng.pick(&[0x17, 0x17, 0x2F]),
        ss: rng.pick(&[0x1F, 0x1F, 0x0F]),
        eip: 0,
    };
    let ds_limit = 0x1FFF;
    let edge = |rng: &mut Rng, limit: u32, len: u32| -> u32 {
        match rng.below(8) {
            0 => limit + 1 - rng.below(len + 3),
            1 => rng.u32(),
            _ => rng.below(limit + 1 - len),
        }
    };
    c.regs[ESP as usize] = rng.range(0x200, 0x1F00);
    if c.segs.ss == 0x0F {
        c.regs[ESP as usize] |= rng.u32() & 0xFFFF_0000;
    }
    let mut code = Vec::new();
    match rng.below(5) {
        0 | 1 => {
            // ALU / MOV with a memory operand at a segment offset.
            let sz = any_size(rng);
            let off = edge(rng, ds_limit, sz.bytes());
            let m = mem_at_seg(rng, &mut c.regs, off, &[ESP]);
            prefix(&mut code, sz);
            let op = rng.below(9) as u8;
            if op == 8 {
                code.push(rng.pick(&[0x88, 0x8A]) | sz.w());
            } else {
                code.push(op * 8 + rng.pick(&[0, 2]) + sz.w());
                if matches!(op, 1 | 4 | 6) {
                    c.undef = Undefined::flags(undef::LOGIC);
                }
            }
            modrm(&mut code, rng.below(8) as u8, Rm::Mem(m));
        }
        2 => {
            // String instruction with EDI near ES's limit (0xFFF, or expand-down E000-FFFF).
            let sz = any_size(rng);
            let count = rng.range(0, 24);
            let df = rng.chance(1, 2);
            c.eflags = (c.eflags & !0x400) | if df { 0x400 } else { 0 };
            c.regs[ECX as usize] = count;
            let span = (count + 1) * sz.bytes();
            c.regs[ESI as usize] = rng.range(span, ds_limit + 1 - span);
            c.regs[EDI as usize] = if c.segs.es == 0x2F {
                0xE000 + edge(rng, 0x1FFF, sz.bytes())
            } else {
                edge(rng, 0xFFF, sz.bytes())
            };
            code.push(0xF3);
            prefix(&mut code, sz);
            code.push(rng.pick(&[0xA4u8, 0xAA, 0xAC]) | sz.w());
        }
        3 => {
            // call rel32 / call r/m32 / push target; ret: offsets within the based CS.
            match rng.below(3) {
                0 => {
                    code.push(0xE8);
                    imm(&mut code, 4, 2);
                    code.extend_from_slice(&[0xB0, 0x5A]);
                    code.push(0x58 + rng.pick(&[EAX, ECX, EDX, EBX, EBP, ESI, EDI]));
                }
                1 => {
                    let r = rng.pick(&[EAX, ECX, EDX, EBX, EBP, ESI, EDI]);
                    // Sometimes a target past CS's limit: #GP at the CALL.
                    c.regs[r as usize] = if rng.chance(1, 6) {
                        0x1000 + rng.below(64)
                    } else {
                        4
                    };
                    code.extend_from_slice(&[0xFF, 0xD0 + r, 0xB0, 0x5A]);
                    code.push(0x58 + rng.pick(&[EAX, ECX, EDX, EBX, EBP, ESI, EDI]));
                }
                _ => {
                    code.push(0x68);
                    imm(&mut code, 4, 8);
                    code.extend_from_slice(&[0xC3, 0x90, 0xB0, 0x5A]);
                }
            }
        }
        _ => {
            // PUSH/POP near the stack segment's ends.
            let esp = edge(rng, 0x1FFF, 4);
            c.regs[ESP as usize] = if c.segs.ss == 0x0F {
                (c.regs[ESP as usize] & 0xFFFF_0000) | (esp & 0xFFFF)
            } else {
                esp
            };
            for _ in 0..rng.range(1, 3) {
                if rng.chance(1, 4) {
                    code.push(0x66);
                }
                code.push(rng.pick(&[0x50u8, 0x53, 0x58, 0x5B, 0x9C, 0x60]));
            }
        }
    }
    c.code = code;
    c
}

/// A linear address at or across an edge of the mapped pages (the data region, the code
/// page), or anywhere: accesses there raise #PF on the host, and must in the interpreter.
fn near_edge(rng: &mut Rng, len: u32) -> u32 {
    let data = DATA_BASE as u32;
    let code = CODE_BASE32;
    match rng.below(6) {
        0 => data - rng.range(1, len + 2),
        1 => data + DATA_SIZE as u32 - rng.below(len + 2),
        2 => code + 0x1000 - rng.below(len + 2),
        3 => code - rng.range(1, len + 2),
        4 => 0x0100_0000 + rng.below(0x0F00_0000), // unmapped, below 256 MiB
        _ => data + 0x1000 - rng.below(len + 2),   // the inner page boundary (both mapped)
    }
}

/// #PF cases (the interpreter pages like the host: see interp.rs): loads, stores and
/// read-modify-writes at and across the edges of the mapped pages (a write straddling into a
/// not-present page must not write the first part), REP MOVS/STOS running off the region
/// (the registers show the progress made), PUSH/POP across the edges, ENTER reading frame
/// pointers off the region, and jumps to unmapped code (instruction-fetch #PF). CR2 and the
/// error code are compared.
fn page_faults(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let abs = |a: u32| Mem {
        base: None,
        index: None,
        scale: 0,
        disp: a as i32,
        disp32: true,
    };
    let mut code = Vec::new();
    match rng.below(6) {
        0 | 1 => {
            let sz = any_size(rng);
            let addr = near_edge(rng, sz.bytes());
            let m = if rng.chance(1, 2) {
                abs(addr)
            } else {
                let b = rng.pick(&[EAX, ECX, EDX, EBX, EBP, ESI, EDI]);
                let d = rng.below(256) as i32 - 128;
                c.regs[b as usize] = addr.wrapping_sub(d as u32);
                // Keep the 64-bit-mode address equal (no carry out of 32 bits).
                if i64::from(c.regs[b as usize]) + i64::from(d) != i64::from(addr) {
                    c.allow_64 = false;
                }
                Mem {
                    base: Some(b),
                    index: None,
                    scale: 0,
                    disp: d,
                    disp32: false,
                }
            };
            prefix(&mut code, sz);
            let op = rng.below(10) as u8;
            match op {
                8 => code.push(rng.pick(&[0x88, 0x8A]) | sz.w()),
                9 => code.push(0x86 | sz.w()),
                _ => {
                    code.push(op * 8 + rng.pick(&[0, 2]) + sz.w());
                    if matches!(op, 1 | 4 | 6) {
                        c.undef = Undefined::flags(undef::LOGIC);
                    }
                }
            }
            modrm(&mut code, rng.below(8) as u8, Rm::Mem(m));
        }
        2 => {
            // rep movs/stos off an edge of the region.
            let sz = any_size(rng);
            let df = rng.chance(1, 2);
            c.eflags = (c.eflags & !0x400) | if df { 0x400 } else { 0 };
            let count = rng.range(1, 40);
            c.regs[ECX as usize] = count;
            let data = DATA_BASE as u32;
            let end = data + DATA_SIZE as u32;
            let near = |rng: &mut Rng| {
                if df {
                    data + rng.below(count * sz.bytes())
                } else {
                    end - rng.range(1, count * sz.bytes())
                }
            };
            let inside = |rng: &mut Rng| data + rng.range(0x800, 0x1800);
            let (si, di) = if rng.chance(1, 2) {
                (near(rng), inside(rng))
            } else {
                (inside(rng), near(rng))
            };
            c.regs[ESI as usize] = si;
            c.regs[EDI as usize] = di;
            code.push(0xF3);
            prefix(&mut code, sz);
            code.push(rng.pick(&[0xA4u8, 0xAA, 0xAC]) | sz.w());
        }
        3 => {
            // push/pop across the region's ends (compatibility mode: 32-bit stack ops).
            c.allow_64 = false;
            let data = DATA_BASE as u32;
            c.regs[ESP as usize] = if rng.chance(1, 2) {
                data + rng.below(6)
            } else {
                data + DATA_SIZE as u32 - rng.below(6)
            };
            for _ in 0..rng.range(1, 3) {
                if rng.chance(1, 4) {
                    code.push(0x66);
                }
                // No POPA: when one of its later pops faults, this AMD host has already loaded
                // the registers popped before (not an SDM behaviour; see seg16_stack).
                code.push(rng.pick(&[0x50u8, 0x53, 0x58, 0x5B, 0x9C, 0x60]));
            }
        }
        4 => {
            // enter with a nesting level: the frame pointers are read at EBP-4, EBP-8, ...
            c.allow_64 = false;
            c.regs[ESP as usize] = DATA_BASE as u32 + rng.range(0x1000, 0x1F00);
            c.regs[EBP as usize] = DATA_BASE as u32 + rng.below(24);
            code.push(0xC8);
            imm(&mut code, 2, rng.below(0x100));
            code.push(rng.range(1, 8) as u8);
        }
        _ => {
            // jmp/call to an unmapped address: #PF on the instruction fetch.
            c.allow_64 = false;
            c.regs[ESP as usize] = DATA_BASE as u32 + rng.range(0x1000, 0x1F00);
            // Never into the data region: it is not executable on the host (NX), which 2-level
            // paging cannot express.
            let r = rng.pick(&[EAX, ECX, EDX, EBX, ESI, EDI]);
            let data = DATA_BASE as u32..DATA_BASE as u32 + DATA_SIZE as u32;
            let target = loop {
                let t = match rng.below(4) {
                    0 => CODE_BASE32 + 0x1000 - rng.below(3), // runs into the INT3 fill
                    1 => CODE_BASE32 + 0x1000 + rng.below(3),
                    2 => CODE_BASE32 - rng.range(1, 3),
                    _ => rng.u32(),
                };
                if !data.contains(&t) {
                    break t;
                }
            };
            c.regs[r as usize] = target;
            code.extend_from_slice(&[0xFF, rng.pick(&[0xD0u8, 0xE0]) + r]);
        }
    }
    c.code = code;
    c
}

/// One random encoding — random legacy prefixes (operand/address size, REP/REPNE, LOCK, ES CS
/// SS DS overrides), a random one- or two-byte opcode and random ModRM/SIB/displacement/
/// immediate bytes — kept if iced decodes it to an i486-level instruction (plus CMOV, CMPXCHG8B,
/// PAUSE, multi-byte NOP) whose flow continues to the next instruction and whose result on the
/// host is deterministic and reproducible in the test machine: no FS/GS (Linux's TLS selectors),
/// no segment-register loads or reads (Linux's per-CPU GDT entries), no POPF (single-step), no
/// UMIP-emulated SGDT/SIDT/SLDT/STR/SMSW, no CPUID/RDTSC, no undocumented opcodes. Half the
/// memory operands are pointed into the data region; the others fault (#PF, or #GP/#UD/... on
/// both sides). Undefined flags come from iced's per-instruction table (`rflags_undefined`),
/// conservatively (e.g. shift counts are not known when generating).
fn soup_one(rng: &mut Rng, c: &mut Case) -> iced_x86::Instruction {
    use iced_x86::{
        CpuidFeature, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic as M,
    };
    loop {
        let mut bytes = Vec::new();
        for _ in 0..rng.below(4) {
            bytes.push(rng.pick(&[0x66u8, 0x66, 0x67, 0xF2, 0xF3, 0xF0, 0x26, 0x2E, 0x36, 0x3E]));
        }
        if rng.chance(1, 3) {
            bytes.push(0x0F);
        }
        for _ in 0..8 {
            bytes.push(rng.u32() as u8);
        }
        let mut dec = Decoder::with_ip(32, &bytes, super::CODE_BASE, DecoderOptions::NONE);
        let mut ins = Instruction::default();
        dec.decode_out(&mut ins);
        if ins.is_invalid() || ins.flow_control() != FlowControl::Next {
            continue;
        }
        let allowed_cpu = ins.cpuid_features().iter().all(|f| {
            matches!(
                f,
                CpuidFeature::INTEL8086
                    | CpuidFeature::INTEL186
                    | CpuidFeature::INTEL286
                    | CpuidFeature::INTEL386
                    | CpuidFeature::INTEL486
                    | CpuidFeature::CMOV
                    | CpuidFeature::CX8
                    | CpuidFeature::PAUSE
                    | CpuidFeature::MULTIBYTENOP
            )
        });
        let seg_regs = (0..ins.op_count()).any(|i| {
            ins.op_kind(i) == iced_x86::OpKind::Register && ins.op_register(i).is_segment_register()
        });
        let banned = matches!(
            ins.mnemonic(),
            M::Cpuid
                | M::Rdtsc
                | M::Rdtscp
                | M::Rdpmc
                | M::Sgdt
                | M::Sidt
                | M::Sldt
                | M::Str
                | M::Smsw
                | M::Lar
                | M::Lsl
                | M::Verr
                | M::Verw
                | M::Popf
                | M::Popfd
                | M::Lds
                | M::Les
                | M::Lss
                | M::Lfs
                | M::Lgs
                | M::Salc
                | M::Int1
                | M::Int3
                | M::Into
                | M::Int
                | M::Hlt
                | M::Wait
                | M::Ud0
                | M::Ud1
                | M::Ud2
        ) || (matches!(ins.mnemonic(), M::Shld | M::Shrd)
            && ins.op0_register().size() != 4
            && ins.op0_kind() == iced_x86::OpKind::Memory);
        let fs_gs = matches!(
            ins.segment_prefix(),
            iced_x86::Register::FS | iced_x86::Register::GS
        );
        if !allowed_cpu || seg_regs || banned || fs_gs {
            continue;
        }
        let len = ins.len();
        c.code = bytes[..len].to_vec();
        // MOVS/CMPS: when both operands would fault, which one faults first is the
        // implementation's choice; keep the source in the data region.
        if matches!(
            ins.mnemonic(),
            M::Movsb | M::Movsw | M::Movsd | M::Cmpsb | M::Cmpsw | M::Cmpsd
        ) {
            if ins.op1_kind() == iced_x86::OpKind::MemorySegSI
                || ins.op0_kind() == iced_x86::OpKind::MemorySegSI
            {
                // 16-bit addressing cannot reach the region: both operands would fault.
                continue;
            }
            c.regs[ESI as usize] = DATA_BASE as u32 + data_offset(rng, 8);
        }
        // Point the memory operand (if any, 32-bit addressing with a base register) into the
        // data region half the time.
        let mem_op = (0..ins.op_count()).find(|&i| ins.op_kind(i) == iced_x86::OpKind::Memory);
        let base_reg = ins.memory_base();
        if let (Some(idx), true) = (mem_op, base_reg.size() == 4 && rng.chance(1, 2)) {
            let regs = c.regs;
            let ea = ins.virtual_address(idx, 0, |r, _, _| {
                if r.is_segment_register() {
                    return Some(0);
                }
                let i = (r.full_register32() as u32).wrapping_sub(iced_x86::Register::EAX as u32);
                regs.get(i as usize).map(|&v| u64::from(v))
            });
            if let Some(ea) = ea {
                let target = u64::from(DATA_BASE as u32 + data_offset(rng, 8));
                let delta = target.wrapping_sub(ea) as u32;
                let bi = (base_reg as u32).wrapping_sub(iced_x86::Register::EAX as u32) as usize;
                if bi < 8 {
                    c.regs[bi] = c.regs[bi].wrapping_add(delta);
                }
            }
        }
        // 64-bit mode adds the address without wrapping at 4 GiB: only run it there when the
        // sum does not wrap.
        if let Some(idx) = mem_op {
            let _ = idx;
            let reg = |r: iced_x86::Register| -> i64 {
                let i = (r.full_register32() as u32).wrapping_sub(iced_x86::Register::EAX as u32);
                c.regs.get(i as usize).map_or(0, |&v| i64::from(v))
            };
            let b = if base_reg == iced_x86::Register::None {
                0
            } else {
                reg(base_reg)
            };
            let ix = ins.memory_index();
            let x = if ix == iced_x86::Register::None {
                0
            } else {
                reg(ix) * i64::from(ins.memory_index_scale())
            };
            let sum = b + x + i64::from(ins.memory_displacement32() as i32);
            // (An access reaching past 4 GiB is #GP in compatibility mode, #PF in 64-bit mode.)
            if !(0..(1 << 32) - 8).contains(&sum) || base_reg.size() != 4 {
                c.allow_64 = false;
            }
            // BT* with a register bit offset: the offset is added at 64-bit width there.
            if matches!(ins.mnemonic(), M::Bt | M::Bts | M::Btr | M::Btc)
                && ins.op1_kind() == iced_x86::OpKind::Register
            {
                c.allow_64 = false;
            }
        }
        // String instructions address through ESI/EDI: same rule.
        if (0..ins.op_count()).any(|i| {
            matches!(
                ins.op_kind(i),
                iced_x86::OpKind::MemorySegESI
                    | iced_x86::OpKind::MemorySegEDI
                    | iced_x86::OpKind::MemoryESEDI
                    | iced_x86::OpKind::MemorySegSI
                    | iced_x86::OpKind::MemorySegDI
                    | iced_x86::OpKind::MemoryESDI
            )
        }) && (c.regs[ESI as usize] > 0xFFFF_0000 || c.regs[EDI as usize] > 0xFFFF_0000)
        {
            c.allow_64 = false;
        }
        let undefined = ins.rflags_undefined();
        let mut flags = 0;
        for (iced, ours) in [
            (iced_x86::RflagsBits::OF, undef::OF),
            (iced_x86::RflagsBits::SF, undef::SF),
            (iced_x86::RflagsBits::ZF, undef::ZF),
            (iced_x86::RflagsBits::AF, undef::AF),
            (iced_x86::RflagsBits::CF, undef::CF),
            (iced_x86::RflagsBits::PF, undef::PF),
        ] {
            if undefined & iced != 0 {
                flags |= ours;
            }
        }
        c.undef = Undefined::flags(flags);
        // BSF/BSR leave the destination undefined for a zero source.
        if matches!(ins.mnemonic(), M::Bsf | M::Bsr) {
            let r = ins.op0_register().full_register32() as u32;
            let i = r.wrapping_sub(iced_x86::Register::EAX as u32) as usize;
            if i < 8 {
                c.undef.regs[i] = 0xFFFF_FFFF;
            }
        }
        // SHLD/SHRD, 16-bit: counts above 16 leave the flags undefined too (undef::double_shift).
        if matches!(ins.mnemonic(), M::Shld | M::Shrd) && ins.op0_register().size() != 4 {
            c.undef.flags |= undef::STATUS;
        }
        // SHLD/SHRD with a 16-bit register destination: counts above 16 leave it undefined.
        if matches!(ins.mnemonic(), M::Shld | M::Shrd)
            && ins.op0_kind() == iced_x86::OpKind::Register
        {
            let r = ins.op0_register().full_register32() as u32;
            let i = r.wrapping_sub(iced_x86::Register::EAX as u32) as usize;
            if i < 8 && ins.op0_register().size() == 2 {
                c.undef.regs[i] = 0xFFFF;
            }
        }
        return ins;
    }
}

/// Single-step traps (EFLAGS.TF, SDM Vol. 3A §17.3.1.4): POPF sets TF (the POPF itself does not
/// trap), the next instruction completes and #DB follows with EIP after it — after each
/// iteration of a REP string instruction (EIP still at the REP), after a taken or not-taken
/// branch, and one instruction late after MOV SS / POP SS (the interrupt shadow).
/// Compatibility mode only (PUSH/POPF).
fn single_step(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    c.allow_64 = false;
    c.regs[ESP as usize] = DATA_BASE as u32 + rng.range(0x1000, 0x1F00);
    let mut code = Vec::new();
    // push imm32 (TF, random status flags and DF, no AC); popf
    let flags = (rng.u32() & 0x0CD5) | 0x100;
    code.push(0x68);
    imm(&mut code, 4, flags);
    code.push(0x9D);
    let df = flags & 0x400 != 0;
    match rng.below(6) {
        0 => {
            let op = rng.below(8) as u8;
            code.push(op * 8 + 1);
            modrm(&mut code, rng.below(8) as u8, Rm::Reg(rng.below(8) as u8));
            if matches!(op, 1 | 4 | 6) {
                c.undef = Undefined::flags(undef::LOGIC);
            }
        }
        1 => {
            // rep movsb/stosb: a trap after every iteration.
            let count = rng.range(0, 6);
            c.regs[ECX as usize] = count;
            let pos = |rng: &mut Rng| {
                DATA_BASE as u32
                    + if df {
                        rng.range(0x20, 0x1000)
                    } else {
                        rng.range(0, 0xF00)
                    }
            };
            c.regs[ESI as usize] = pos(rng);
            c.regs[EDI as usize] = pos(rng);
            code.extend_from_slice(&[0xF3, rng.pick(&[0xA4u8, 0xAA, 0xA5, 0xAB])]);
        }
        2 => {
            // jcc over a marker, taken or not.
            code.extend_from_slice(&[0x70 + rng.below(16) as u8, 2, 0xB0, 0x5A]);
        }
        3 => {
            // mov ss, r / pop ss: the trap waits one more instruction.
            let r = rng.pick(&[EAX, ECX, EDX, EBX, ESI, EDI]);
            c.regs[r as usize] = (c.regs[r as usize] & 0xFFFF_0000) | 0x2B;
            if rng.chance(1, 2) {
                code.push(0x8E);
                modrm(&mut code, 2, Rm::Reg(r));
            } else {
                code.extend_from_slice(&[0x6A, 0x2B, 0x17]); // push 0x2b; pop ss
            }
            code.push(0x40 + rng.below(8) as u8); // inc r32
        }
        4 => {
            // loop back once or twice.
            c.regs[ECX as usize] = rng.range(1, 3);
            code.extend_from_slice(&[0xFE, 0xC0, 0xE2, 0xFC]);
        }
        _ => {
            // popf clearing TF again: no trap after it? (TF is sampled before the POPF.)
            code.push(0x68);
            imm(&mut code, 4, rng.u32() & 0x0CD5);
            code.push(0x9D);
            code.push(0x40 + rng.below(8) as u8);
        }
    }
    code.push(0x40 + rng.below(8) as u8);
    c.code = code;
    c
}

/// Instructions at the end of the code page, whose next page is not mapped: an instruction
/// that crosses the boundary raises #PF on the fetch (CR2 = the next page, EIP = the
/// instruction) before it has any effect; one that ends exactly there completes and the fetch
/// of the following instruction faults. Instructions come from the other families (flat
/// 32-bit ones, 16-bit code ones too).
fn fetch_page_end(rng: &mut Rng) -> Case {
    let gens: [fn(&mut Rng) -> Case; 6] = [alu, mov_xchg, shift, string, seg16_alu, mul];
    let g = gens[rng.below(gens.len() as u32) as usize];
    let mut c = g(rng);
    // The first instruction ends at most 3 bytes before or after the page end.
    let first_len = {
        let bitness = if c.segs.cs == 0x07 { 16 } else { 32 };
        let mut dec =
            iced_x86::Decoder::with_ip(bitness, &c.code, 0, iced_x86::DecoderOptions::NONE);
        dec.decode().len() as u32
    };
    let end = 0x1000 + rng.below(7) - 3;
    let offset = end.saturating_sub(first_len).min(0xFFF);
    c.code_offset = offset;
    c.segs = c.segs.at(offset);
    c
}

/// One [`soup_one`] instruction as a case.
fn encoding_soup(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    soup_one(rng, &mut c);
    c
}

/// 2–6 encoding-soup instructions in a row, chosen so that no instruction reads a flag an
/// earlier one left undefined (iced's rflags_read / rflags_modified / rflags_undefined), and
/// without the instructions whose destination can be undefined (BSF, BSR, 16-bit SHLD/SHRD):
/// lazy-flag and decode-cache interplay across arbitrary instruction mixes. The first fault
/// ends the case on both sides.
fn soup_sequence(rng: &mut Rng) -> Case {
    use iced_x86::{Mnemonic as M, RflagsBits as R};
    let to_ours = |bits: u32| {
        [
            (R::OF, undef::OF),
            (R::SF, undef::SF),
            (R::ZF, undef::ZF),
            (R::AF, undef::AF),
            (R::CF, undef::CF),
            (R::PF, undef::PF),
        ]
        .iter()
        .filter(|(i, _)| bits & i != 0)
        .fold(0, |acc, (_, o)| acc | o)
    };
    let mut c = base(rng);
    let mut code = Vec::new();
    let mut undefined = 0u32;
    let mut flags_before = Vec::new();
    let n = rng.range(2, 6);
    let mut emitted = 0;
    while emitted < n {
        let ins = soup_one(rng, &mut c);
        // Also no MOVS/CMPS: with registers changed by earlier instructions both operands may
        // fault, and which faults first is not architectural.
        let bad_dest = matches!(
            ins.mnemonic(),
            M::Bsf | M::Bsr | M::Movsb | M::Movsw | M::Movsd | M::Cmpsb | M::Cmpsw | M::Cmpsd
        ) || (matches!(ins.mnemonic(), M::Shld | M::Shrd)
            && ins.op0_register().size() != 4);
        if bad_dest || to_ours(ins.rflags_read()) & undefined != 0 {
            continue;
        }
        // A fault at this instruction sees the flags as they were before it.
        flags_before.push((code.len() as u32, undefined));
        undefined = (undefined & !to_ours(ins.rflags_modified())) | to_ours(ins.rflags_undefined());
        // 16-bit SHLD/SHRD are excluded; soup_one's register masks do not carry over.
        code.extend_from_slice(&c.code);
        emitted += 1;
    }
    c.code = code;
    c.undef = Undefined {
        flags: undefined,
        flags_before,
        ..Undefined::default()
    };
    // The 64-bit-mode address checks of soup_one looked at the initial registers only.
    c.allow_64 = false;
    c
}
