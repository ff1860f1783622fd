//! Integer arithmetic and logic: ADD/OR/ADC/SBB/AND/SUB/XOR/CMP, TEST, INC/DEC/NEG/NOT,
//! MUL/IMUL/DIV/IDIV, XADD, CMPXCHG, CMPXCHG8B (Intel SDM Vol. 2A/2B, instruction pages).

use pcvm_core::cpu_state::{flags as fl, gpr};
use pcvm_core::Platform;

use super::{mask, Decoded, MEM};
use crate::flags::FlagOp;
use crate::{Fault, Interpreter};

pub(super) const ADD: u8 = 0;
pub(super) const OR: u8 = 1;
pub(super) const ADC: u8 = 2;
pub(super) const SBB: u8 = 3;
pub(super) const AND: u8 = 4;
pub(super) const SUB: u8 = 5;
pub(super) const XOR: u8 = 6;
pub(super) const CMP: u8 = 7;

#[inline(always)]
fn compute<const OP: u8>(a: u64, b: u64, cf: bool, m: u64) -> (u64, FlagOp) {
    match OP {
        ADD => (a.wrapping_add(b) & m, FlagOp::Add),
        ADC => (
            a.wrapping_add(b).wrapping_add(u64::from(cf)) & m,
            FlagOp::Adc,
        ),
        SUB | CMP => (a.wrapping_sub(b) & m, FlagOp::Sub),
        SBB => (
            a.wrapping_sub(b).wrapping_sub(u64::from(cf)) & m,
            FlagOp::Sbb,
        ),
        AND => (a & b, FlagOp::Logic),
        OR => (a | b, FlagOp::Logic),
        _ => (a ^ b, FlagOp::Logic),
    }
}

/// The eight classic two-operand ALU operations; flags per the SDM's "Flags Affected" (lazy).
pub(super) fn alu<const OP: u8>(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let size = d.size;
    let m = mask(size);
    let cf = if OP == ADC || OP == SBB {
        cpu.cf()
    } else {
        false
    };
    if d.o0 == MEM {
        let off = cpu.ea(d);
        let a = if OP == CMP {
            cpu.read_mem(p, d.seg, off, size)?
        } else {
            cpu.read_mem_rmw(p, d.seg, off, size)?
        };
        let b = cpu.read_op(p, d, d.o1)?;
        let (r, op) = compute::<OP>(a, b, cf, m);
        if OP != CMP {
            cpu.write_mem(p, d.seg, off, size, r)?;
        }
        cpu.set_lazy(op, size * 8, a, b, r);
    } else {
        let a = cpu.get_reg(d.o0, size);
        let b = cpu.read_op(p, d, d.o1)?;
        let (r, op) = compute::<OP>(a, b, cf, m);
        if OP != CMP {
            cpu.set_reg(d.o0, size, r);
        }
        cpu.set_lazy(op, size * 8, a, b, r);
    }
    Ok(())
}

/// Register-register form with a compile-time operand size `S` (bytes).
pub(super) fn alu_rr<const OP: u8, const S: u8>(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let cf = (OP == ADC || OP == SBB) && cpu.cf();
    let a = cpu.get_reg(d.o0, S);
    let b = cpu.get_reg(d.o1, S);
    let (r, op) = compute::<OP>(a, b, cf, mask(S));
    if OP != CMP {
        cpu.set_reg(d.o0, S, r);
    }
    cpu.set_lazy(op, S * 8, a, b, r);
    Ok(())
}

/// Register-immediate form with a compile-time operand size `S` (bytes).
pub(super) fn alu_ri<const OP: u8, const S: u8>(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let cf = (OP == ADC || OP == SBB) && cpu.cf();
    let a = cpu.get_reg(d.o0, S);
    let b = d.imm & mask(S);
    let (r, op) = compute::<OP>(a, b, cf, mask(S));
    if OP != CMP {
        cpu.set_reg(d.o0, S, r);
    }
    cpu.set_lazy(op, S * 8, a, b, r);
    Ok(())
}

/// INC/DEC of a register with a compile-time size.
pub(super) fn incdec_r<const DEC: bool, const S: u8>(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let a = cpu.get_reg(d.o0, S);
    let r = if DEC {
        a.wrapping_sub(1)
    } else {
        a.wrapping_add(1)
    } & mask(S);
    cpu.set_reg(d.o0, S, r);
    let op = if DEC { FlagOp::Dec } else { FlagOp::Inc };
    cpu.set_lazy_incdec(op, S * 8, a, r);
    Ok(())
}

/// TEST: AND without storing the result.
pub(super) fn test(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let a = cpu.read_op(p, d, d.o0)?;
    let b = cpu.read_op(p, d, d.o1)?;
    cpu.set_lazy(FlagOp::Logic, d.size * 8, a, b, a & b);
    Ok(())
}

/// Read-modify-write of operand 0 with `f`; returns (old, new).
#[inline]
fn rmw(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
    f: impl FnOnce(u64) -> u64,
) -> Result<(u64, u64), Fault> {
    let m = mask(d.size);
    if d.o0 == MEM {
        let off = cpu.ea(d);
        let a = cpu.read_mem_rmw(p, d.seg, off, d.size)?;
        let r = f(a) & m;
        cpu.write_mem(p, d.seg, off, d.size, r)?;
        Ok((a, r))
    } else {
        let a = cpu.get_reg(d.o0, d.size);
        let r = f(a) & m;
        cpu.set_reg(d.o0, d.size, r);
        Ok((a, r))
    }
}

/// INC: CF unchanged.
pub(super) fn inc(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let (a, r) = rmw(cpu, p, d, |a| a.wrapping_add(1))?;
    cpu.set_lazy_incdec(FlagOp::Inc, d.size * 8, a, r);
    Ok(())
}

/// DEC: CF unchanged.
pub(super) fn dec(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let (a, r) = rmw(cpu, p, d, |a| a.wrapping_sub(1))?;
    cpu.set_lazy_incdec(FlagOp::Dec, d.size * 8, a, r);
    Ok(())
}

/// NEG: 0 - operand; CF = operand != 0.
pub(super) fn neg(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let (a, r) = rmw(cpu, p, d, |a| 0u64.wrapping_sub(a))?;
    cpu.set_lazy(FlagOp::Sub, d.size * 8, 0, a, r);
    Ok(())
}

/// NOT: no flags.
pub(super) fn not(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    rmw(cpu, p, d, |a| !a)?;
    Ok(())
}

/// Set CF and OF together, SF/ZF/PF from `low` (undefined by the SDM), AF clear (lazily).
#[inline]
fn mul_flags(cpu: &mut Interpreter, overflow: bool, low: u64, bits: u8) {
    let cf_of = if overflow { 3 } else { 0 };
    cpu.set_lazy(FlagOp::CfOf, bits, cf_of, 0, low);
}

/// Read the r/m source operand of the one-operand MUL/IMUL/DIV/IDIV forms.
fn src(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<u64, Fault> {
    cpu.read_op(p, d, d.o0)
}

/// Store a double-width product or the quotient/remainder pair: AX for byte operands, else
/// rDX:rAX (high/remainder in rDX).
fn set_acc_pair(cpu: &mut Interpreter, size: u8, low: u64, high: u64) {
    if size == 1 {
        cpu.set_reg(gpr::RAX as u8, 2, (low & 0xFF) | ((high & 0xFF) << 8));
    } else {
        cpu.set_reg(gpr::RAX as u8, size, low);
        cpu.set_reg(gpr::RDX as u8, size, high);
    }
}

/// MUL: unsigned AX/DX:AX/EDX:EAX/RDX:RAX ← accumulator × r/m; CF = OF = upper half
/// non-zero.
pub(super) fn mul(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let s = u128::from(src(cpu, p, d)?);
    let size = d.size;
    let bits = size * 8;
    let a = u128::from(cpu.get_reg(gpr::RAX as u8, size));
    let r = a * s;
    let m = mask(size);
    let low = r as u64 & m;
    let high = (r >> bits) as u64 & m;
    set_acc_pair(cpu, size, low, high);
    mul_flags(cpu, high != 0, low, bits);
    Ok(())
}

/// Sign-extend the low `size` bytes of `v`.
#[inline]
pub(super) fn sext(v: u64, size: u8) -> i64 {
    match size {
        1 => i64::from(v as u8 as i8),
        2 => i64::from(v as u16 as i16),
        4 => i64::from(v as u32 as i32),
        _ => v as i64,
    }
}

/// IMUL, one-, two- and three-operand forms: CF = OF = the signed result does not fit.
pub(super) fn imul(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = d.size;
    let bits = size * 8;
    let m = mask(size);
    match d.insn.op_count() {
        1 => {
            let s = i128::from(sext(src(cpu, p, d)?, size));
            let a = i128::from(sext(cpu.get_reg(gpr::RAX as u8, size), size));
            let r = a * s;
            let low = r as u64 & m;
            let fits = i128::from(sext(low, size)) == r;
            set_acc_pair(cpu, size, low, (r >> bits) as u64 & m);
            mul_flags(cpu, !fits, low, bits);
        }
        n => {
            let (a, b) = if n == 2 {
                (cpu.get_reg(d.o0, size), cpu.read_op(p, d, d.o1)?)
            } else {
                (cpu.read_op(p, d, d.o1)?, d.imm & m)
            };
            let (low, fits) = if size == 8 {
                let (r, overflow) = (a as i64).overflowing_mul(b as i64);
                (r as u64, !overflow)
            } else {
                let r = sext(a, size) * sext(b, size);
                (r as u64 & m, sext(r as u64 & m, size) == r)
            };
            cpu.set_reg(d.o0, size, low);
            mul_flags(cpu, !fits, low, bits);
        }
    }
    Ok(())
}

/// DIV: unsigned divide of AX/DX:AX/EDX:EAX/RDX:RAX; #DE on a zero divisor or a quotient
/// that does not fit. Flags are undefined and left unchanged.
pub(super) fn div(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let s = src(cpu, p, d)?;
    if s == 0 {
        return Err(Fault::de());
    }
    let size = d.size;
    let bits = u32::from(size) * 8;
    if size == 8 {
        let dividend =
            (u128::from(cpu.state.gpr[gpr::RDX]) << 64) | u128::from(cpu.state.gpr[gpr::RAX]);
        let q = dividend / u128::from(s);
        let r = dividend % u128::from(s);
        if q > u128::from(u64::MAX) {
            return Err(Fault::de());
        }
        set_acc_pair(cpu, size, q as u64, r as u64);
        return Ok(());
    }
    let dividend = match size {
        1 => cpu.get_reg(gpr::RAX as u8, 2),
        _ => (cpu.get_reg(gpr::RDX as u8, size) << bits) | cpu.get_reg(gpr::RAX as u8, size),
    };
    let q = dividend / s;
    let r = dividend % s;
    if q > mask(size) {
        return Err(Fault::de());
    }
    set_acc_pair(cpu, size, q, r);
    Ok(())
}

/// IDIV: signed divide, quotient truncated toward zero; #DE on zero or out-of-range quotient.
pub(super) fn idiv(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = d.size;
    let s = i128::from(sext(src(cpu, p, d)?, size));
    if s == 0 {
        return Err(Fault::de());
    }
    let bits = u32::from(size) * 8;
    let dividend: i128 = match size {
        1 => i128::from(cpu.get_reg(gpr::RAX as u8, 2) as u16 as i16),
        2 => i128::from(
            ((cpu.get_reg(gpr::RDX as u8, 2) << 16) | cpu.get_reg(gpr::RAX as u8, 2)) as u32 as i32,
        ),
        4 => i128::from(
            ((cpu.get_reg(gpr::RDX as u8, 4) << 32) | cpu.get_reg(gpr::RAX as u8, 4)) as i64,
        ),
        _ => {
            ((u128::from(cpu.state.gpr[gpr::RDX]) << 64) | u128::from(cpu.state.gpr[gpr::RAX]))
                as i128
        }
    };
    // i128::MIN / -1 overflows: checked arithmetic turns it into #DE as well.
    let (Some(q), Some(r)) = (dividend.checked_div(s), dividend.checked_rem(s)) else {
        return Err(Fault::de());
    };
    let lim = 1i128 << (bits - 1);
    if q >= lim || q < -lim {
        return Err(Fault::de());
    }
    let m = mask(size);
    set_acc_pair(cpu, size, q as u64 & m, r as u64 & m);
    Ok(())
}

/// XADD: exchange, then store the sum in the destination (SDM Vol. 2B XADD).
pub(super) fn xadd(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = d.size;
    let b = cpu.get_reg(d.o1, size);
    let (a, r) = rmw(cpu, p, d, |a| a.wrapping_add(b))?;
    cpu.set_reg(d.o1, size, a);
    if d.o0 != MEM && (d.o0 & 0x1F) == (d.o1 & 0x1F) {
        // Same register: the sum wins.
        cpu.set_reg(d.o0, size, r);
    }
    cpu.set_lazy(FlagOp::Add, size * 8, a, b, r);
    Ok(())
}

/// CMPXCHG: compare the accumulator with the destination; equal → store the source,
/// else load the destination into the accumulator. The destination is always written
/// (SDM Vol. 2A CMPXCHG).
pub(super) fn cmpxchg(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let size = d.size;
    let acc = cpu.get_reg(gpr::RAX as u8, size);
    let s = cpu.get_reg(d.o1, size);
    let dst = if d.o0 == MEM {
        let off = cpu.ea(d);
        cpu.read_mem_rmw(p, d.seg, off, size)?
    } else {
        cpu.get_reg(d.o0, size)
    };
    let equal = acc == dst;
    if d.o0 == MEM {
        cpu.write_op(p, d, d.o0, if equal { s } else { dst })?;
    } else if equal {
        cpu.set_reg(d.o0, size, s);
    }
    if !equal {
        cpu.set_reg(gpr::RAX as u8, size, dst);
    }
    cpu.set_lazy(
        FlagOp::Sub,
        size * 8,
        acc,
        dst,
        acc.wrapping_sub(dst) & mask(size),
    );
    Ok(())
}

/// CMPXCHG8B m64: compare EDX:EAX with m64 (SDM Vol. 2A CMPXCHG8B).
pub(super) fn cmpxchg8b(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    if d.o0 != MEM {
        return Err(Fault::ud());
    }
    let off = cpu.ea(d);
    // Checked as a write before the read (locked read-modify-write).
    let linear = cpu.seg_linear(d.seg, off, 8, crate::access::AccessKind::Write)?;
    let mut mb = [0u8; 8];
    cpu.read_linear(p, linear, &mut mb, crate::access::AccessKind::Write)?;
    let m = u64::from_le_bytes(mb);
    let edx_eax = (cpu.get_reg(gpr::RDX as u8, 4) << 32) | cpu.get_reg(gpr::RAX as u8, 4);
    let f = cpu.rflags();
    if m == edx_eax {
        let ecx_ebx = (cpu.get_reg(gpr::RCX as u8, 4) << 32) | cpu.get_reg(gpr::RBX as u8, 4);
        cpu.write_seg::<8>(p, d.seg, off, ecx_ebx.to_le_bytes())?;
        cpu.set_rflags(f | fl::ZF);
    } else {
        cpu.write_seg::<8>(p, d.seg, off, m.to_le_bytes())?;
        cpu.set_reg(gpr::RAX as u8, 4, m);
        cpu.set_reg(gpr::RDX as u8, 4, m >> 32);
        cpu.set_rflags(f & !fl::ZF);
    }
    Ok(())
}

/// CMPXCHG16B m128: compare RDX:RAX with m128; equal → store RCX:RBX, else load m128 into
/// RDX:RAX. The operand must be 16-byte aligned (#GP(0)); the destination is always written
/// (SDM Vol. 2A CMPXCHG8B/CMPXCHG16B).
pub(super) fn cmpxchg16b(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    if d.o0 != MEM {
        return Err(Fault::ud());
    }
    let off = cpu.ea(d);
    let linear = cpu.seg_linear(d.seg, off, 16, crate::access::AccessKind::Write)?;
    if linear & 15 != 0 {
        return Err(Fault::gp(0));
    }
    let mut mb = [0u8; 16];
    cpu.read_linear(p, linear, &mut mb, crate::access::AccessKind::Write)?;
    let m = u128::from_le_bytes(mb);
    let g = &cpu.state.gpr;
    let rdx_rax = (u128::from(g[gpr::RDX]) << 64) | u128::from(g[gpr::RAX]);
    let rcx_rbx = (u128::from(g[gpr::RCX]) << 64) | u128::from(g[gpr::RBX]);
    let f = cpu.rflags();
    let equal = m == rdx_rax;
    let store = if equal { rcx_rbx } else { m };
    cpu.write_seg::<16>(p, d.seg, off, store.to_le_bytes())?;
    if equal {
        cpu.set_rflags(f | fl::ZF);
    } else {
        cpu.state.gpr[gpr::RAX] = m as u64;
        cpu.state.gpr[gpr::RDX] = (m >> 64) as u64;
        cpu.set_rflags(f & !fl::ZF);
    }
    Ok(())
}
