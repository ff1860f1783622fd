//! Shifts, rotates, double shifts, bit tests and bit scans (Intel SDM Vol. 2B SAL/SAR/SHL/SHR,
//! RCL/RCR/ROL/ROR, SHLD, SHRD; Vol. 2A BT/BTS/BTR/BTC, BSF/BSR).
//!
//! Counts are masked to 5 bits (6 for 64-bit operands). With a masked count of 0 nothing
//! changes, flags included. OF
//! is architecturally defined only for 1-bit shifts; for other counts this computes it with
//! the same formula (tests mask it as undefined).

use iced_x86::{Mnemonic, OpKind};
use pcvm_core::cpu_state::flags as fl;
use pcvm_core::Platform;

use super::{mask, Decoded, IMM, MEM, NONE};
use crate::flags::{szp, FlagOp};
use crate::{Fault, Interpreter};

/// Count mask: 6 bits for 64-bit operands, 5 otherwise.
#[inline]
fn count_mask(size: u8) -> u32 {
    if size == 8 {
        0x3F
    } else {
        0x1F
    }
}

/// The shift/rotate count operand: 1, CL or imm8 (masked to 5 or 6 bits).
fn count(cpu: &Interpreter, d: &Decoded) -> u32 {
    if d.insn.op_count() < 2 {
        return 1;
    }
    let c = match d.insn.op_kind(1) {
        OpKind::Register => cpu.state.gpr[1] as u32,
        _ => d.imm as u32,
    };
    c & count_mask(d.size)
}

/// The destination operand of a shift: its offset (memory forms; 0 for a register) and its
/// value, read for the write-back that follows.
#[inline(always)]
fn destination(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(u64, u64), Fault> {
    if d.o0 == MEM {
        let off = cpu.ea(d);
        Ok((off, cpu.read_mem_rmw(p, d.seg, off, d.size)?))
    } else {
        Ok((0, cpu.get_reg(d.o0, d.size)))
    }
}

/// Store a shift's result `r` where [`destination`] read it (memory at `off`, or the
/// register), then its flags `f`.
#[inline(always)]
fn write_back(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
    off: u64,
    r: u64,
    f: u64,
) -> Result<(), Fault> {
    if d.o0 == MEM {
        cpu.write_mem(p, d.seg, off, d.size, r)?;
    } else {
        cpu.set_reg(d.o0, d.size, r);
    }
    cpu.set_rflags(f);
    Ok(())
}

/// ROL ROR RCL RCR SHL SAL SHR SAR.
pub(super) fn shift(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let n = count(cpu, d);
    let size = d.size;
    let bits = u32::from(size) * 8;
    let m = mask(size);
    let (off, a) = destination(cpu, p, d)?;
    if n == 0 {
        zero_count_write(cpu, d, a);
        return Ok(());
    }
    let f0 = cpu.rflags();
    let cf_in = f0 & fl::CF != 0;
    let msb = |v: u64| (v >> (bits - 1)) & 1 != 0;
    let (r, f) = match d.insn.mnemonic() {
        Mnemonic::Rol => {
            let k = n % bits;
            let r = if k == 0 {
                a
            } else {
                ((a << k) | (a >> (bits - k))) & m
            };
            let cf = r & 1 != 0;
            let of = msb(r) ^ cf;
            (r, with_cf_of(f0, cf, of))
        }
        Mnemonic::Ror => {
            let k = n % bits;
            let r = if k == 0 {
                a
            } else {
                ((a >> k) | (a << (bits - k))) & m
            };
            let cf = msb(r);
            let of = msb(r) ^ ((r >> (bits - 2)) & 1 != 0);
            (r, with_cf_of(f0, cf, of))
        }
        Mnemonic::Rcl => {
            let k = n % (bits + 1);
            let mut r = a;
            let mut cf = cf_in;
            for _ in 0..k {
                let t = (r >> (bits - 1)) & 1 != 0;
                r = ((r << 1) | u64::from(cf)) & m;
                cf = t;
            }
            let of = msb(r) ^ cf;
            (r, with_cf_of(f0, cf, of))
        }
        Mnemonic::Rcr => {
            let k = n % (bits + 1);
            let mut r = a;
            let mut cf = cf_in;
            let of = msb(a) ^ cf_in;
            for _ in 0..k {
                let t = r & 1 != 0;
                r = (r >> 1) | (u64::from(cf) << (bits - 1));
                cf = t;
            }
            // For counts other than 1 OF is undefined; this uses the result's top bits.
            let of = if n == 1 {
                of
            } else {
                msb(r) ^ ((r >> (bits - 2)) & 1 != 0)
            };
            (r, with_cf_of(f0, cf, of))
        }
        Mnemonic::Shl | Mnemonic::Sal => {
            let wide = u128::from(a) << n;
            let r = (wide as u64) & m;
            let cf = (wide >> bits) & 1 != 0;
            let of = msb(r) ^ cf;
            let mut f = (f0 & !crate::flags::ARITH) | szp(r, bits as u8);
            if cf {
                f |= fl::CF;
            }
            if of {
                f |= fl::OF;
            }
            (r, f)
        }
        Mnemonic::Shr => {
            let r = if n >= bits { 0 } else { a >> n };
            let cf = if n > bits {
                false
            } else {
                (a >> (n - 1)) & 1 != 0
            };
            let mut f = (f0 & !crate::flags::ARITH) | szp(r, bits as u8);
            if cf {
                f |= fl::CF;
            }
            if msb(a) && n == 1 {
                f |= fl::OF;
            }
            (r, f)
        }
        _ => {
            // SAR
            let s = super::alu::sext(a, size);
            let r = ((s >> n.min(63)) as u64) & m;
            let cf = (s >> (n - 1).min(63)) & 1 != 0;
            let mut f = (f0 & !crate::flags::ARITH) | szp(r, bits as u8);
            if cf {
                f |= fl::CF;
            }
            (r, f)
        }
    };
    write_back(cpu, p, d, off, r, f)
}

/// [`shift_fast`] operation selectors.
pub(super) const SHL: u8 = 0;
pub(super) const SHR: u8 = 1;
pub(super) const SAR: u8 = 2;

/// SHL/SAL, SHR and SAR with the count form resolved at decode time (`d.o1`: [`IMM`], CL,
/// or [`NONE`] for the implicit 1). These write all six arithmetic flags (AF cleared, as the
/// generic [`shift`] does), recorded lazily: CF and OF now, SF/ZF/PF from the result when
/// read.
pub(super) fn shift_fast<const OP: u8>(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let raw = match d.o1 {
        IMM => d.imm as u32,
        NONE => 1,
        _ => cpu.state.gpr[1] as u32,
    };
    let n = raw & count_mask(d.size);
    let size = d.size;
    let bits = u32::from(size) * 8;
    let m = mask(size);
    let (off, a) = destination(cpu, p, d)?;
    if n == 0 {
        zero_count_write(cpu, d, a);
        return Ok(());
    }
    let (r, cf, of) = match OP {
        SHL => {
            let wide = u128::from(a) << n;
            let r = (wide as u64) & m;
            let cf = (wide >> bits) & 1 != 0;
            (r, cf, ((r >> (bits - 1)) & 1 != 0) ^ cf)
        }
        SHR => {
            let r = if n >= bits { 0 } else { a >> n };
            let cf = n <= bits && (a >> (n - 1)) & 1 != 0;
            (r, cf, n == 1 && (a >> (bits - 1)) & 1 != 0)
        }
        _ => {
            let s = super::alu::sext(a, size);
            let r = ((s >> n.min(63)) as u64) & m;
            (r, (s >> (n - 1).min(63)) & 1 != 0, false)
        }
    };
    if d.o0 == MEM {
        cpu.write_mem(p, d.seg, off, d.size, r)?;
    } else {
        cpu.set_reg(d.o0, d.size, r);
    }
    let cf_of = u64::from(cf) | (u64::from(of) << 1);
    cpu.set_lazy(FlagOp::CfOf, bits as u8, cf_of, 0, r);
    Ok(())
}

/// A shift by a masked count of 0 changes no flags and no value, but a 32-bit register
/// destination is still written, which clears bits 63:32 (SDM Vol. 1 §3.4.1.1; as the
/// processors the differential test runs on do).
#[inline]
fn zero_count_write(cpu: &mut Interpreter, d: &Decoded, a: u64) {
    if d.size == 4 && d.o0 != MEM {
        cpu.set_reg(d.o0, 4, a);
    }
}

/// SHLD / SHRD: double-precision shifts (SDM Vol. 2B SHLD, SHRD).
pub(super) fn shxd(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = d.size;
    let bits = u32::from(size) * 8;
    let m = mask(size);
    let n = match d.insn.op_kind(2) {
        OpKind::Register => cpu.state.gpr[1] as u32,
        _ => d.imm as u32,
    } & count_mask(size);
    let (off, a) = destination(cpu, p, d)?;
    let b = cpu.get_reg(d.o1, size);
    if n == 0 {
        zero_count_write(cpu, d, a);
        return Ok(());
    }
    let shld = d.insn.mnemonic() == Mnemonic::Shld;
    let (r, cf) = if size == 8 {
        // The count is below 64: dest:src in a u128 suffices.
        if shld {
            let cat = (u128::from(a) << 64) | u128::from(b);
            ((cat << n >> 64) as u64, (a >> (64 - n)) & 1 != 0)
        } else {
            let cat = (u128::from(b) << 64) | u128::from(a);
            ((cat >> n) as u64, (a >> (n - 1)) & 1 != 0)
        }
    } else {
        // Work on the 96-bit (at most) concatenation dest:src:dest in a u128 so no shift
        // overflows; 16-bit counts above 16 pull dest bits back in, as Intel processors do.
        let (a128, b128, m128) = (u128::from(a), u128::from(b), u128::from(m));
        let cat = (a128 << (2 * bits)) | (b128 << bits) | a128;
        if shld {
            let total = 3 * bits;
            let shifted = cat << n;
            let r = (shifted >> (total - bits)) & m128;
            let cf = (shifted >> total) & 1 != 0;
            (r as u64, cf)
        } else {
            let r = (cat >> n) & m128;
            let cf = (cat >> (n - 1)) & 1 != 0;
            (r as u64, cf)
        }
    };
    let f0 = cpu.rflags();
    let mut f = (f0 & !crate::flags::ARITH) | szp(r, bits as u8);
    if cf {
        f |= fl::CF;
    }
    if ((r ^ a) >> (bits - 1)) & 1 != 0 {
        f |= fl::OF;
    }
    write_back(cpu, p, d, off, r, f)
}

/// BT BTS BTR BTC: CF ← the selected bit; the others as the mnemonic says. With a register
/// bit offset and a memory operand the offset addresses any bit relative to the operand.
pub(super) fn bit_test(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let size = d.size;
    let bits = u32::from(size) * 8;
    let raw = if d.o1 == IMM {
        d.imm
    } else {
        cpu.get_reg(d.o1, size)
    };
    let bits = u64::from(bits);
    let (off, bit) = if d.o0 == MEM {
        let base = cpu.ea(d);
        if d.o1 == IMM {
            (base, raw % bits)
        } else {
            let sraw = super::alu::sext(raw, size);
            let delta = (sraw >> bits.trailing_zeros()).wrapping_mul(i64::from(size));
            (
                (base as i64).wrapping_add(delta) as u64 & d.amask,
                raw % bits,
            )
        }
    } else {
        (0, raw % bits)
    };
    let writes = d.insn.mnemonic() != Mnemonic::Bt;
    let v = if d.o0 != MEM {
        cpu.get_reg(d.o0, size)
    } else if writes {
        cpu.read_mem_rmw(p, d.seg, off, size)?
    } else {
        cpu.read_mem(p, d.seg, off, size)?
    };
    let cf = (v >> bit) & 1 != 0;
    let nv = match d.insn.mnemonic() {
        Mnemonic::Bts => Some(v | (1u64 << bit)),
        Mnemonic::Btr => Some(v & !(1u64 << bit)),
        Mnemonic::Btc => Some(v ^ (1u64 << bit)),
        _ => None,
    };
    if let Some(nv) = nv {
        if d.o0 == MEM {
            cpu.write_mem(p, d.seg, off, size, nv)?;
        } else {
            cpu.set_reg(d.o0, size, nv);
        }
    }
    let f = cpu.rflags();
    cpu.set_rflags(if cf { f | fl::CF } else { f & !fl::CF });
    Ok(())
}

/// BSF / BSR: index of the lowest/highest set bit; ZF = source is zero (destination then
/// unchanged).
pub(super) fn bit_scan(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let size = d.size;
    let v = cpu.read_op(p, d, d.o1)?;
    let f = cpu.rflags();
    if v == 0 {
        cpu.set_rflags(f | fl::ZF);
        return Ok(());
    }
    let idx = if d.insn.mnemonic() == Mnemonic::Bsf {
        v.trailing_zeros()
    } else {
        63 - v.leading_zeros()
    };
    cpu.set_reg(d.o0, size, u64::from(idx));
    cpu.set_rflags(f & !fl::ZF);
    Ok(())
}

/// `flags` with CF and OF replaced: the flags a rotate defines (SDM Vol. 2B RCL/RCR/ROL/ROR).
#[inline]
fn with_cf_of(flags: u64, cf: bool, of: bool) -> u64 {
    let mut f = flags & !(fl::CF | fl::OF);
    if cf {
        f |= fl::CF;
    }
    if of {
        f |= fl::OF;
    }
    f
}

/// POPCNT: the number of set bits; ZF = source is zero, CF OF SF AF PF cleared
/// (SDM Vol. 2B POPCNT).
pub(super) fn popcnt(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let v = cpu.read_op(p, d, d.o1)?;
    cpu.set_reg(d.o0, d.size, u64::from(v.count_ones()));
    let f = cpu.rflags() & !crate::flags::ARITH;
    cpu.set_rflags(if v == 0 { f | fl::ZF } else { f });
    Ok(())
}

/// LZCNT / TZCNT: leading or trailing zero bits of the operand (its width if zero);
/// CF = source is zero, ZF = result is zero, the other arithmetic flags unchanged
/// (undefined by the SDM, Vol. 2A LZCNT, Vol. 2B TZCNT).
pub(super) fn count_zeros(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let size = d.size;
    let bits = u32::from(size) * 8;
    let v = cpu.read_op(p, d, d.o1)?;
    let n = if v == 0 {
        bits
    } else if d.insn.mnemonic() == Mnemonic::Lzcnt {
        v.leading_zeros() - (64 - bits)
    } else {
        v.trailing_zeros()
    };
    cpu.set_reg(d.o0, size, u64::from(n));
    let mut f = cpu.rflags() & !(fl::CF | fl::ZF);
    if v == 0 {
        f |= fl::CF;
    }
    if n == 0 {
        f |= fl::ZF;
    }
    cpu.set_rflags(f);
    Ok(())
}
