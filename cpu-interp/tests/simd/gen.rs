//! Table-driven generation of single SIMD instructions: an [`OpSpec`] says how an
//! instruction is encoded and what values its operands should get; [`case`] builds a random
//! case for it (registers, memory operand, immediate, MXCSR).

use super::super::diff::asm::{mem_at, modrm, Rm};
use super::super::diff::prng::Rng;
use super::super::diff::{Case, Segs, DATA_SIZE};

use super::{SimdCase, SimdFamily};

/// Operand shape of the ModRM byte.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Form {
    /// reg = XMM destination (and first source), r/m = XMM or memory source.
    XmmRm,
    /// reg = XMM source, r/m = memory (or XMM) destination.
    Store,
    /// reg = GPR destination, r/m = XMM (or memory) source.
    GprXmm,
    /// reg = XMM destination, r/m = GPR or memory source.
    XmmGpr,
    /// reg = XMM source, r/m = GPR or memory destination.
    GprStore,
    /// reg = /digit, r/m = XMM (shift-by-immediate group).
    Digit(u8),
    /// reg = GPR, r/m = GPR or memory (CRC32's destination and source, MOVNTI's source and
    /// destination).
    GprRm,
}

/// Immediate byte.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Imm {
    None,
    Any,
    /// A CMPPS predicate 0–7.
    Pred,
    /// A ROUNDPS control 0–15.
    Round,
}

/// What values the XMM registers get.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Vals {
    Int,
    F32,
    F64,
    /// Integers in the XMM registers and in MM0–MM7, with a random x87 TOP and tag word (the
    /// SSE instructions on MMX registers).
    Mmx,
}

/// One instruction form.
#[derive(Clone, Copy, Debug)]
pub struct OpSpec {
    pub name: &'static str,
    /// Mandatory prefix (if any) and opcode bytes, up to the ModRM.
    pub opcode: &'static [u8],
    pub form: Form,
    /// Memory operand size for the r/m; 0 = register only.
    pub mem: u8,
    /// The memory form only (MOVNTPS, LDDQU …).
    pub mem_only: bool,
    pub imm: Imm,
    pub vals: Vals,
}

/// Shorthand constructor.
pub const fn op(
    name: &'static str,
    opcode: &'static [u8],
    form: Form,
    mem: u8,
    imm: Imm,
    vals: Vals,
) -> OpSpec {
    OpSpec {
        name,
        opcode,
        form,
        mem,
        mem_only: false,
        imm,
        vals,
    }
}

/// How MXCSR is chosen.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mxcsr {
    /// Mostly the default 0x1F80, sometimes another rounding mode, DAZ or FTZ.
    Usual,
    /// Random rounding, DAZ, FTZ and exception masks (unmasked exceptions raise #XM).
    Any,
}

/// Interesting single-precision values.
const F32_SPECIAL: [u32; 18] = [
    0x0000_0000,
    0x8000_0000,
    0x3F80_0000,
    0xBF80_0000,
    0x7F80_0000,
    0xFF80_0000,
    0x7FC0_0000,
    0xFFC0_0000,
    0x7FA0_0001,
    0xFF80_0001,
    0x0000_0001,
    0x807F_FFFF,
    0x0080_0000,
    0x7F7F_FFFF,
    0x4F00_0000,
    0xCF00_0000,
    0x3F00_0000,
    0x4B00_0001,
];

/// Interesting double-precision values.
const F64_SPECIAL: [u64; 18] = [
    0,
    0x8000_0000_0000_0000,
    0x3FF0_0000_0000_0000,
    0xBFF0_0000_0000_0000,
    0x7FF0_0000_0000_0000,
    0xFFF0_0000_0000_0000,
    0x7FF8_0000_0000_0000,
    0xFFF8_0000_0000_0001,
    0x7FF4_0000_0000_0001,
    0xFFF0_0000_0000_0001,
    0x0000_0000_0000_0001,
    0x800F_FFFF_FFFF_FFFF,
    0x0010_0000_0000_0000,
    0x7FEF_FFFF_FFFF_FFFF,
    0x41E0_0000_0000_0000,
    0xC3E0_0000_0000_0000,
    0x3FE0_0000_0000_0000,
    0x4330_0000_0000_0001,
];

/// A random f32 bit pattern: special values, small integers, random normals, denormals.
pub fn f32_val(rng: &mut Rng) -> u32 {
    match rng.below(8) {
        0 | 1 => rng.pick(&F32_SPECIAL),
        2 => {
            let i = rng.range(0, 200) as f32 - 100.0;
            (i / f32::from(rng.range(1, 8) as u8)).to_bits()
        }
        3 => rng.u32() & 0x807F_FFFF, // denormal or zero
        4 => (rng.u32() & 0x81FF_FFFF) | 0x3E00_0000, // near 1
        _ => {
            let exp = rng.range(1, 254);
            (rng.u32() & 0x807F_FFFF) | (exp << 23)
        }
    }
}

/// A random f64 bit pattern.
pub fn f64_val(rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0 | 1 => rng.pick(&F64_SPECIAL),
        2 => {
            let i = f64::from(rng.range(0, 200)) - 100.0;
            (i / f64::from(rng.range(1, 8))).to_bits()
        }
        3 => rng.next_u64() & 0x800F_FFFF_FFFF_FFFF,
        4 => (rng.next_u64() & 0x803F_FFFF_FFFF_FFFF) | 0x3FC0_0000_0000_0000,
        _ => {
            let exp = u64::from(rng.range(1, 2046));
            (rng.next_u64() & 0x800F_FFFF_FFFF_FFFF) | (exp << 52)
        }
    }
}

/// A random 128-bit register value of the given kind.
pub fn xmm_val(rng: &mut Rng, vals: Vals) -> u128 {
    match vals {
        Vals::Int | Vals::Mmx => {
            let mut v = 0u128;
            for i in 0..4 {
                let w = match rng.below(6) {
                    0 => rng.interesting(),
                    1 => rng.u32() & 0x8080_8080,
                    2 => rng.u32() & 0x00FF_00FF,
                    _ => rng.u32(),
                };
                v |= u128::from(w) << (32 * i);
            }
            v
        }
        Vals::F32 => (0..4).fold(0u128, |v, i| v | (u128::from(f32_val(rng)) << (32 * i))),
        Vals::F64 => (0..2).fold(0u128, |v, i| v | (u128::from(f64_val(rng)) << (64 * i))),
    }
}

/// An MXCSR value.
pub fn mxcsr_val(rng: &mut Rng, how: Mxcsr) -> u32 {
    match how {
        Mxcsr::Usual => {
            let mut m = 0x1F80;
            if rng.chance(1, 3) {
                m |= rng.below(4) << 13;
            }
            if rng.chance(1, 8) {
                m |= 0x40; // DAZ
            }
            if rng.chance(1, 8) {
                m |= 0x8000; // FTZ
            }
            m
        }
        Mxcsr::Any => {
            let mut m = rng.u32() & 0xFFC0;
            if rng.chance(1, 2) {
                m |= 0x1F80;
                m &= !(1 << (7 + rng.below(6)));
            }
            m
        }
    }
}

/// A legacy FXSAVE image: FCW 0x037F (x87 as after FNINIT), `mxcsr`, XMM registers `xmm`.
pub fn fx_image(mxcsr: u32, xmm: &[u128; 16]) -> Box<[u8; 512]> {
    let mut img = Box::new([0u8; 512]);
    img[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
    img[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    img[28..32].copy_from_slice(&0xFFFFu32.to_le_bytes());
    for (i, x) in xmm.iter().enumerate() {
        img[160 + 16 * i..176 + 16 * i].copy_from_slice(&x.to_le_bytes());
    }
    img
}

/// GPRs a case may name as operands (not ESP: the stack pointer stays valid).
const GPRS: [u8; 7] = [0, 1, 2, 3, 5, 6, 7];

/// A case with random registers and memory and nothing encoded yet.
pub fn base_case(rng: &mut Rng) -> Case {
    let mut regs = [0u32; 8];
    for r in &mut regs {
        *r = rng.interesting();
    }
    regs[4] = super::super::diff::DATA_BASE as u32 + DATA_SIZE as u32 - 0x100;
    Case {
        code: Vec::new(),
        regs,
        hi: [0; 8],
        ext: [0; 8],
        long_only: false,
        eflags: rng.u32() & 0x0CD5,
        mem_seed: rng.next_u64(),
        mem_style: 0,
        undef: Default::default(),
        allow_64: true,
        segs: Segs::FLAT,
        code_offset: 0,
    }
}

/// Offset in the data region for an `size`-byte operand: usually aligned to 16, sometimes
/// misaligned (alignment checks).
pub fn mem_offset(rng: &mut Rng, size: u32) -> u32 {
    let size = size.max(1);
    let room = DATA_SIZE as u32 / 2 - 64;
    let mut off = rng.below(room) & !15;
    if rng.chance(1, 10) {
        off += rng.range(1, 15);
    }
    off.min(DATA_SIZE as u32 / 2 - size)
}

/// Append ModRM for `reg` with a register (`rm_reg`) or a random memory operand of `size`
/// bytes; `keep` are GPRs whose values the instruction uses.
pub fn rm_operand(
    rng: &mut Rng,
    c: &mut Case,
    reg: u8,
    rm_reg: Option<u8>,
    size: u32,
    keep: &[u8],
) {
    match rm_reg {
        Some(r) => modrm(&mut c.code, reg, Rm::Reg(r)),
        None => {
            let off = mem_offset(rng, size);
            let m = mem_at(rng, &mut c.regs, off, keep);
            modrm(&mut c.code, reg, Rm::Mem(m));
        }
    }
}

/// A case for one instruction form.
pub fn case(rng: &mut Rng, spec: &OpSpec, how: Mxcsr) -> SimdCase {
    case_with_rex(rng, spec, how, false)
}

/// A case for one instruction form, with a random REX prefix when `rex` (64-bit mode only):
/// REX.W, REX.R for an XMM ModRM.reg, REX.B for an XMM ModRM.rm — never on a GPR or memory
/// operand's registers, so every GPR involved is one of the eight the runner sets.
pub fn case_with_rex(rng: &mut Rng, spec: &OpSpec, how: Mxcsr, rex: bool) -> SimdCase {
    let mut c = base_case(rng);
    let mut xmm = [0u128; 16];
    for x in &mut xmm {
        *x = xmm_val(rng, spec.vals);
    }
    // Sometimes two operands are the same value (equal compares, x − x).
    if rng.chance(1, 8) {
        xmm[1] = xmm[0];
    }
    let mx = mxcsr_val(rng, how);
    let mut fx = fx_image(mx, &xmm);
    if spec.vals == Vals::Mmx {
        // x87 registers in stack order with their exponent bytes, a random TOP and tags;
        // the exception flags stay masked (no #MF).
        for i in 0..8 {
            let v = xmm_val(rng, Vals::Int);
            fx[32 + 16 * i..42 + 16 * i].copy_from_slice(&v.to_le_bytes()[..10]);
        }
        let fsw = (rng.below(8) << 11) as u16 | (rng.below(64) as u16);
        fx[2..4].copy_from_slice(&fsw.to_le_bytes());
        fx[4] = rng.u32() as u8;
    }
    let use_mem = spec.mem > 0 && (spec.mem_only || rng.chance(1, 3));
    let prefixes = spec
        .opcode
        .iter()
        .take_while(|b| matches!(b, 0x66 | 0xF2 | 0xF3))
        .count();
    c.code.extend_from_slice(&spec.opcode[..prefixes]);
    if rex {
        let reg_is_xmm = !matches!(spec.form, Form::GprXmm | Form::GprRm | Form::Digit(_));
        let rm_is_xmm = !use_mem
            && matches!(
                spec.form,
                Form::XmmRm | Form::Store | Form::GprXmm | Form::Digit(_)
            );
        let mut b = 0x40;
        if rng.chance(1, 2) {
            b |= 8;
        }
        if reg_is_xmm && rng.chance(1, 2) {
            b |= 4;
        }
        if rm_is_xmm && rng.chance(1, 2) {
            b |= 1;
        }
        c.code.push(b);
    }
    c.code.extend_from_slice(&spec.opcode[prefixes..]);
    let x = |rng: &mut Rng| rng.below(8) as u8;
    let g = |rng: &mut Rng| rng.pick(&GPRS);
    let size = u32::from(spec.mem);
    match spec.form {
        Form::XmmRm | Form::Store => {
            let reg = x(rng);
            let rm = if use_mem { None } else { Some(x(rng)) };
            rm_operand(rng, &mut c, reg, rm, size, &[]);
        }
        Form::GprXmm => {
            let reg = g(rng);
            let rm = if use_mem { None } else { Some(x(rng)) };
            rm_operand(rng, &mut c, reg, rm, size, &[reg]);
        }
        Form::GprRm => {
            let reg = g(rng);
            let r = g(rng);
            let rm = if use_mem { None } else { Some(r) };
            rm_operand(rng, &mut c, reg, rm, size, &[reg, r]);
        }
        Form::XmmGpr | Form::GprStore => {
            let reg = x(rng);
            let r = g(rng);
            let rm = if use_mem { None } else { Some(r) };
            rm_operand(rng, &mut c, reg, rm, size, &[r]);
        }
        Form::Digit(d) => {
            let r = x(rng);
            modrm(&mut c.code, d, Rm::Reg(r));
        }
    }
    match spec.imm {
        Imm::None => {}
        Imm::Any => c.code.push(rng.u32() as u8),
        Imm::Pred => c.code.push(if rng.chance(1, 8) {
            rng.u32() as u8
        } else {
            rng.below(8) as u8
        }),
        Imm::Round => c.code.push(rng.below(16) as u8),
    }
    SimdCase { case: c, fx }
}

/// A family that picks one of `specs` per case.
pub fn family(name: &'static str, specs: &'static [OpSpec], how: Mxcsr) -> SimdFamily {
    SimdFamily {
        name,
        gen: Box::new(move |rng: &mut Rng| {
            let spec = specs[rng.below(specs.len() as u32) as usize];
            case(rng, &spec, how)
        }),
    }
}
