//! Integer arithmetic and logic: ADD/OR/ADC/SBB/AND/SUB/XOR/CMP, TEST, INC/DEC/NEG/NOT,
//! MUL/IMUL/DIV/IDIV, XADD, CMPXCHG, CMPXCHG8B (Intel SDM Vol. 2A/2B, instruction pages).

use pcvm_core::cpu_state::{flags as fl, gpr};
use pcvm_core::Platform;

use super::{mask, Decoded, MEM};
use crate::flags::{szp, FlagOp};
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
fn compute<const OP: u8>(a: u32, b: u32, cf: bool, m: u32) -> (u32, FlagOp) {
    match OP {
        ADD => (a.wrapping_add(b) & m, FlagOp::Add),
        ADC => (
            a.wrapping_add(b).wrapping_add(u32::from(cf)) & m,
            FlagOp::Adc,
        ),
        SUB | CMP => (a.wrapping_sub(b) & m, FlagOp::Sub),
        SBB => (
            a.wrapping_sub(b).wrapping_sub(u32::from(cf)) & m,
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
    f: impl FnOnce(u32) -> u32,
) -> Result<(u32, u32), Fault> {
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
    let (a, r) = rmw(cpu, p, d, |a| 0u32.wrapping_sub(a))?;
    cpu.set_lazy(FlagOp::Sub, d.size * 8, 0, a, r);
    Ok(())
}

/// NOT: no flags.
pub(super) fn not(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    rmw(cpu, p, d, |a| !a)?;
    Ok(())
}

/// Set CF and OF together, SF/ZF/PF from `low` (undefined by the SDM), AF clear.
fn mul_flags(cpu: &mut Interpreter, overflow: bool, low: u32, bits: u8) {
    let mut f = szp(low, bits);
    if overflow {
        f |= fl::CF | fl::OF;
    }
    cpu.set_arith_flags(f);
}

/// Read the r/m source operand of the one-operand MUL/IMUL/DIV/IDIV forms.
fn src(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<u32, Fault> {
    cpu.read_op(p, d, d.o0)
}

/// MUL: unsigned AX/DX:AX/EDX:EAX ← accumulator × r/m; CF = OF = upper half non-zero.
pub(super) fn mul(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let s = u64::from(src(cpu, p, d)?);
    let bits = d.size * 8;
    let a = u64::from(cpu.get_reg(gpr::RAX as u8, d.size));
    let r = a * s;
    let high = (r >> bits) as u32;
    match d.size {
        1 => cpu.set_reg(gpr::RAX as u8, 2, r as u32),
        2 => {
            cpu.set_reg(gpr::RAX as u8, 2, r as u32);
            cpu.set_reg(gpr::RDX as u8, 2, high);
        }
        _ => {
            cpu.set_reg(gpr::RAX as u8, 4, r as u32);
            cpu.set_reg(gpr::RDX as u8, 4, high);
        }
    }
    mul_flags(cpu, high & mask(d.size) != 0, r as u32, bits);
    Ok(())
}

#[inline]
fn sext(v: u32, size: u8) -> i64 {
    match size {
        1 => i64::from(v as u8 as i8),
        2 => i64::from(v as u16 as i16),
        _ => i64::from(v as i32),
    }
}

/// IMUL, one-, two- and three-operand forms: CF = OF = the signed result does not fit.
pub(super) fn imul(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = d.size;
    let bits = size * 8;
    match d.insn.op_count() {
        1 => {
            let s = sext(src(cpu, p, d)?, size);
            let a = sext(cpu.get_reg(gpr::RAX as u8, size), size);
            let r = a * s;
            let fits = sext(r as u32 & mask(size), size) == r;
            match size {
                1 => cpu.set_reg(gpr::RAX as u8, 2, r as u32),
                2 => {
                    cpu.set_reg(gpr::RAX as u8, 2, r as u32);
                    cpu.set_reg(gpr::RDX as u8, 2, (r >> 16) as u32);
                }
                _ => {
                    cpu.set_reg(gpr::RAX as u8, 4, r as u32);
                    cpu.set_reg(gpr::RDX as u8, 4, (r >> 32) as u32);
                }
            }
            mul_flags(cpu, !fits, r as u32, bits);
        }
        n => {
            let (a, b) = if n == 2 {
                (cpu.get_reg(d.o0, size), cpu.read_op(p, d, d.o1)?)
            } else {
                (cpu.read_op(p, d, d.o1)?, d.imm & mask(size))
            };
            let r = sext(a, size) * sext(b, size);
            let fits = sext(r as u32 & mask(size), size) == r;
            cpu.set_reg(d.o0, size, r as u32);
            mul_flags(cpu, !fits, r as u32, bits);
        }
    }
    Ok(())
}

/// DIV: unsigned divide of AX/DX:AX/EDX:EAX; #DE on a zero divisor or a quotient that does
/// not fit. Flags are undefined and left unchanged.
pub(super) fn div(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let s = u64::from(src(cpu, p, d)?);
    if s == 0 {
        return Err(Fault::de());
    }
    let size = d.size;
    let bits = u32::from(size) * 8;
    let dividend = match size {
        1 => u64::from(cpu.get_reg(gpr::RAX as u8, 2)),
        _ => {
            (u64::from(cpu.get_reg(gpr::RDX as u8, size)) << bits)
                | u64::from(cpu.get_reg(gpr::RAX as u8, size))
        }
    };
    let q = dividend / s;
    let r = dividend % s;
    if q > u64::from(mask(size)) {
        return Err(Fault::de());
    }
    if size == 1 {
        cpu.set_reg(gpr::RAX as u8, 2, (q as u32) | ((r as u32) << 8));
    } else {
        cpu.set_reg(gpr::RAX as u8, size, q as u32);
        cpu.set_reg(gpr::RDX as u8, size, r as u32);
    }
    Ok(())
}

/// IDIV: signed divide, quotient truncated toward zero; #DE on zero or out-of-range quotient.
pub(super) fn idiv(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = d.size;
    let s = sext(src(cpu, p, d)?, size);
    if s == 0 {
        return Err(Fault::de());
    }
    let bits = u32::from(size) * 8;
    let dividend: i64 = match size {
        1 => i64::from(cpu.get_reg(gpr::RAX as u8, 2) as u16 as i16),
        2 => i64::from(
            ((cpu.get_reg(gpr::RDX as u8, 2) << 16) | cpu.get_reg(gpr::RAX as u8, 2)) as i32,
        ),
        _ => {
            ((u64::from(cpu.get_reg(gpr::RDX as u8, 4)) << 32)
                | u64::from(cpu.get_reg(gpr::RAX as u8, 4))) as i64
        }
    };
    // i64::MIN / -1 cannot occur for 32-bit operands' range checks below except through
    // overflow, so use checked arithmetic.
    let (Some(q), Some(r)) = (dividend.checked_div(s), dividend.checked_rem(s)) else {
        return Err(Fault::de());
    };
    let lim = 1i64 << (bits - 1);
    if q >= lim || q < -lim {
        return Err(Fault::de());
    }
    if size == 1 {
        cpu.set_reg(
            gpr::RAX as u8,
            2,
            (q as u32 & 0xFF) | ((r as u32 & 0xFF) << 8),
        );
    } else {
        cpu.set_reg(gpr::RAX as u8, size, q as u32);
        cpu.set_reg(gpr::RDX as u8, size, r as u32);
    }
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
    let edx_eax = (u64::from(cpu.get_reg(gpr::RDX as u8, 4)) << 32)
        | u64::from(cpu.get_reg(gpr::RAX as u8, 4));
    let f = cpu.rflags();
    if m == edx_eax {
        let ecx_ebx = (u64::from(cpu.get_reg(gpr::RCX as u8, 4)) << 32)
            | u64::from(cpu.get_reg(gpr::RBX as u8, 4));
        cpu.write_seg::<8>(p, d.seg, off, ecx_ebx.to_le_bytes())?;
        cpu.set_rflags(f | fl::ZF);
    } else {
        cpu.write_seg::<8>(p, d.seg, off, m.to_le_bytes())?;
        cpu.set_reg(gpr::RAX as u8, 4, m as u32);
        cpu.set_reg(gpr::RDX as u8, 4, (m >> 32) as u32);
        cpu.set_rflags(f & !fl::ZF);
    }
    Ok(())
}
