//! MMX instructions (Intel SDM Vol. 1 ch. 9; Vol. 2 per instruction), owned by FPU.
//!
//! MM0–MM7 alias the low 64 bits of the x87 physical registers. Every MMX instruction but
//! EMMS sets TOP to 0 and marks all registers valid; a write also sets the register's
//! exponent bits to ones; EMMS empties the tag word (SDM Vol. 1 §9.5.1, Table 9-2). Faults:
//! CR0.EM → #UD, CR0.TS → #NM, a pending x87 exception → #MF (SDM Vol. 3A §2.5; Vol. 2
//! "Numeric Exceptions" of each MMX instruction). The SSE extensions that operate on MMX
//! registers (PSHUFW, PMINUB, PADDQ, …) are not here.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use pcvm_core::cpu_state::cr;
use pcvm_core::Platform;

use super::{Decoded, Handler};
use crate::fault::vector;
use crate::{Fault, Interpreter};

/// The handler for an MMX instruction, or `None`.
pub(super) fn select(insn: &Instruction) -> Option<(Handler, u8)> {
    let mmx = insn.cpuid_features() == [iced_x86::CpuidFeature::MMX];
    let xmm = (0..insn.op_count())
        .any(|k| insn.op_kind(k) == OpKind::Register && insn.op_register(k).is_xmm());
    (mmx && !xmm).then_some((exec as Handler, 0))
}

fn mm_index(r: Register) -> usize {
    ((r as u32).wrapping_sub(Register::MM0 as u32) & 7) as usize
}

impl Interpreter {
    /// MMi: physical register i, which is ST((i − TOP) mod 8).
    fn mm(&self, i: usize) -> u64 {
        let s = &self.state.fpu.st[(i + 8 - usize::from(self.top())) & 7];
        u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
    }
    /// Write MMi (after [`Self::mmx_enter`], so TOP = 0 and MMi = ST(i)).
    fn set_mm(&mut self, i: usize, v: u64) {
        let s = &mut self.state.fpu.st[i & 7];
        s[..8].copy_from_slice(&v.to_le_bytes());
        s[8] = 0xFF;
        s[9] = 0xFF;
    }
    /// The x87 state change of an MMX instruction: TOP = 0, all tags valid.
    fn mmx_enter(&mut self) {
        self.set_top(0);
        self.state.fpu.ftw = 0xFF;
    }
}

/// Lane-wise operation on `bits`-wide lanes.
fn lanes(a: u64, b: u64, bits: u32, f: impl Fn(u64, u64) -> u64) -> u64 {
    let m = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let mut r = 0;
    let mut s = 0;
    while s < 64 {
        r |= (f((a >> s) & m, (b >> s) & m) & m) << s;
        s += bits;
    }
    r
}

fn sext(v: u64, bits: u32) -> i64 {
    ((v << (64 - bits)) as i64) >> (64 - bits)
}

fn sat_s(v: i64, bits: u32) -> u64 {
    let max = (1i64 << (bits - 1)) - 1;
    let min = -(1i64 << (bits - 1));
    v.clamp(min, max) as u64
}

fn sat_u(v: i64, bits: u32) -> u64 {
    v.clamp(0, (1i64 << bits) - 1) as u64
}

/// Interleave the low (or high) halves' `bits`-wide elements of a and b.
fn unpack(a: u64, b: u64, bits: u32, high: bool) -> u64 {
    let m = (1u64 << bits) - 1;
    let n = 32 / bits;
    let base = if high { 32 } else { 0 };
    let mut r = 0;
    for i in 0..n {
        let ea = (a >> (base + i * bits)) & m;
        let eb = (b >> (base + i * bits)) & m;
        r |= ea << (2 * i * bits);
        r |= eb << ((2 * i + 1) * bits);
    }
    r
}

/// Pack `from`-bit signed elements of a then b into saturated `from/2`-bit elements.
fn pack(a: u64, b: u64, from: u32, unsigned: bool) -> u64 {
    let to = from / 2;
    let n = 64 / from;
    let m = (1u64 << from) - 1;
    let mut r = 0;
    for (k, src) in [a, b].into_iter().enumerate() {
        for i in 0..n {
            let v = sext((src >> (i * from)) & m, from);
            let s = if unsigned { sat_u(v, to) } else { sat_s(v, to) };
            r |= (s & ((1 << to) - 1)) << ((k as u32 * n + i) * to);
        }
    }
    r
}

fn shift(a: u64, count: u64, bits: u32, kind: Mnemonic) -> u64 {
    use Mnemonic as M;
    let arith = matches!(kind, M::Psraw | M::Psrad);
    if count >= u64::from(bits) {
        return if arith {
            lanes(
                a,
                0,
                bits,
                |x, _| if sext(x, bits) < 0 { u64::MAX } else { 0 },
            )
        } else {
            0
        };
    }
    let c = count as u32;
    lanes(a, 0, bits, |x, _| match kind {
        M::Psllw | M::Pslld | M::Psllq => x << c,
        M::Psrlw | M::Psrld | M::Psrlq => x >> c,
        _ => (sext(x, bits) >> c) as u64,
    })
}

fn exec(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    use Mnemonic as M;
    if cpu.state.cr0 & cr::CR0_EM != 0 {
        return Err(Fault::ud());
    }
    if cpu.state.cr0 & cr::CR0_TS != 0 {
        return Err(Fault::new(vector::NM));
    }
    cpu.fpu_pending()?;
    let insn = &d.insn;
    let m = insn.mnemonic();
    if m == M::Emms {
        cpu.set_top(0);
        cpu.state.fpu.ftw = 0;
        return Ok(());
    }
    // Source operand (operand 1): MMX register, GPR, memory or immediate.
    let k1 = if insn.op_count() > 1 {
        insn.op_kind(1)
    } else {
        OpKind::Register
    };
    let src: u64 = match k1 {
        OpKind::Register => {
            let r = insn.op_register(1);
            if r.is_mm() {
                cpu.mm(mm_index(r))
            } else {
                let loc = super::gpr_loc(r).unwrap_or(0);
                let v = cpu.state.gpr[usize::from(loc & 0xF)];
                if r.is_gpr32() {
                    v & 0xFFFF_FFFF
                } else {
                    v
                }
            }
        }
        OpKind::Memory => {
            let off = cpu.ea(d);
            if insn.memory_size().size() == 4 {
                u64::from(u32::from_le_bytes(cpu.read_seg::<4>(p, d.seg, off)?))
            } else {
                u64::from_le_bytes(cpu.read_seg::<8>(p, d.seg, off)?)
            }
        }
        OpKind::Immediate8 => u64::from(insn.immediate8()),
        _ => return super::undefined(cpu, p, d),
    };
    // MOVD/MOVQ to a GPR or memory.
    if insn.op_kind(0) != OpKind::Register || !insn.op_register(0).is_mm() {
        if !matches!(m, M::Movd | M::Movq) {
            return super::undefined(cpu, p, d);
        }
        let wide = m == M::Movq;
        match insn.op_kind(0) {
            OpKind::Memory => {
                let off = cpu.ea(d);
                if wide {
                    cpu.write_seg::<8>(p, d.seg, off, src.to_le_bytes())?;
                } else {
                    cpu.write_seg::<4>(p, d.seg, off, (src as u32).to_le_bytes())?;
                }
            }
            OpKind::Register => {
                let r = insn.op_register(0);
                let Some(loc) = super::gpr_loc(r) else {
                    return super::undefined(cpu, p, d);
                };
                let g = &mut cpu.state.gpr[usize::from(loc & 0xF)];
                *g = if wide { src } else { src & 0xFFFF_FFFF };
            }
            _ => return super::undefined(cpu, p, d),
        }
        cpu.mmx_enter();
        return Ok(());
    }
    let di = mm_index(insn.op_register(0));
    let a = cpu.mm(di);
    let b = src;
    cpu.mmx_enter();
    let ss = |x: u64, y: u64, bits: u32, sub: bool| {
        let (p, q) = (sext(x, bits), sext(y, bits));
        sat_s(if sub { p - q } else { p + q }, bits)
    };
    let us = |x: u64, y: u64, bits: u32, sub: bool| {
        let (p, q) = (x as i64, y as i64);
        sat_u(if sub { p - q } else { p + q }, bits)
    };
    let r = match m {
        M::Movd => b & 0xFFFF_FFFF,
        M::Movq => b,
        M::Paddb => lanes(a, b, 8, u64::wrapping_add),
        M::Paddw => lanes(a, b, 16, u64::wrapping_add),
        M::Paddd => lanes(a, b, 32, u64::wrapping_add),
        M::Paddsb => lanes(a, b, 8, |x, y| ss(x, y, 8, false)),
        M::Paddsw => lanes(a, b, 16, |x, y| ss(x, y, 16, false)),
        M::Paddusb => lanes(a, b, 8, |x, y| us(x, y, 8, false)),
        M::Paddusw => lanes(a, b, 16, |x, y| us(x, y, 16, false)),
        M::Psubb => lanes(a, b, 8, u64::wrapping_sub),
        M::Psubw => lanes(a, b, 16, u64::wrapping_sub),
        M::Psubd => lanes(a, b, 32, u64::wrapping_sub),
        M::Psubsb => lanes(a, b, 8, |x, y| ss(x, y, 8, true)),
        M::Psubsw => lanes(a, b, 16, |x, y| ss(x, y, 16, true)),
        M::Psubusb => lanes(a, b, 8, |x, y| us(x, y, 8, true)),
        M::Psubusw => lanes(a, b, 16, |x, y| us(x, y, 16, true)),
        M::Pcmpeqb => lanes(a, b, 8, |x, y| if x == y { u64::MAX } else { 0 }),
        M::Pcmpeqw => lanes(a, b, 16, |x, y| if x == y { u64::MAX } else { 0 }),
        M::Pcmpeqd => lanes(a, b, 32, |x, y| if x == y { u64::MAX } else { 0 }),
        M::Pcmpgtb => lanes(
            a,
            b,
            8,
            |x, y| if sext(x, 8) > sext(y, 8) { u64::MAX } else { 0 },
        ),
        M::Pcmpgtw => lanes(a, b, 16, |x, y| {
            if sext(x, 16) > sext(y, 16) {
                u64::MAX
            } else {
                0
            }
        }),
        M::Pcmpgtd => lanes(a, b, 32, |x, y| {
            if sext(x, 32) > sext(y, 32) {
                u64::MAX
            } else {
                0
            }
        }),
        M::Pand => a & b,
        M::Pandn => !a & b,
        M::Por => a | b,
        M::Pxor => a ^ b,
        M::Psllw | M::Psrlw | M::Psraw => shift(a, b, 16, m),
        M::Pslld | M::Psrld | M::Psrad => shift(a, b, 32, m),
        M::Psllq | M::Psrlq => shift(a, b, 64, m),
        M::Pmullw => lanes(a, b, 16, |x, y| {
            (sext(x, 16).wrapping_mul(sext(y, 16))) as u64
        }),
        M::Pmulhw => lanes(a, b, 16, |x, y| ((sext(x, 16) * sext(y, 16)) >> 16) as u64),
        M::Pmaddwd => {
            let w = |v: u64, i: u32| sext((v >> (16 * i)) & 0xFFFF, 16);
            let lo = (w(a, 0) * w(b, 0)).wrapping_add(w(a, 1) * w(b, 1));
            let hi = (w(a, 2) * w(b, 2)).wrapping_add(w(a, 3) * w(b, 3));
            (lo as u64 & 0xFFFF_FFFF) | ((hi as u64) << 32)
        }
        M::Packsswb => pack(a, b, 16, false),
        M::Packssdw => pack(a, b, 32, false),
        M::Packuswb => pack(a, b, 16, true),
        M::Punpcklbw => unpack(a, b, 8, false),
        M::Punpcklwd => unpack(a, b, 16, false),
        M::Punpckldq => unpack(a, b, 32, false),
        M::Punpckhbw => unpack(a, b, 8, true),
        M::Punpckhwd => unpack(a, b, 16, true),
        M::Punpckhdq => unpack(a, b, 32, true),
        _ => return super::undefined(cpu, p, d),
    };
    cpu.set_mm(di, r);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_helpers() {
        assert_eq!(pack(0x7FFF_8000_0100_FF80, 0, 16, false), 0x7F80_7F80);
        assert_eq!(pack(0x7FFF_8000_0100_FF80, 0, 16, true), 0xFF00_FF00);
        assert_eq!(
            unpack(0x0403_0201, 0x0807_0605, 8, false),
            0x0804_0703_0602_0501
        );
        assert_eq!(
            unpack(0x1111_2222_0000_0000, 0x3333_4444_0000_0000, 32, true),
            0x3333_4444_1111_2222
        );
        assert_eq!(shift(0x8000_0001, 1, 32, Mnemonic::Psrad), 0xC000_0000);
        assert_eq!(shift(0x8000, 16, 16, Mnemonic::Psraw), 0xFFFF);
        assert_eq!(shift(0xFFFF, 16, 16, Mnemonic::Psllw), 0);
    }
}
