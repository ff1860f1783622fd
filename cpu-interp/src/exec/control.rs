//! Near control transfers and flag/processor-control instructions: Jcc, JMP/CALL/RET near,
//! LOOP/LOOPE/LOOPNE, JCXZ/JECXZ, HLT, CLC/STC/CMC/CLD/STD, CLI/STI, BOUND, UD0/UD1/UD2
//! (Intel SDM Vol. 2 instruction pages).

use iced_x86::Mnemonic;
use pcvm_core::cpu_state::{cr, flags as fl, gpr};
use pcvm_core::{Platform, SegReg};

use super::{Decoded, MEM};
use crate::fault::vector;
use crate::{Fault, Interpreter};

/// Operand-size mask for the new IP.
#[inline]
fn ip_mask(d: &Decoded) -> u64 {
    super::mask(d.osize)
}

/// Check a near branch target: within the CS limit, or in 64-bit mode canonical (#GP(0),
/// SDM Vol. 2A JMP).
#[inline]
fn check_target(cpu: &Interpreter, target: u64) -> Result<(), Fault> {
    if target > u64::from(cpu.state.seg(SegReg::Cs).limit)
        && !(cpu.state.in_64bit_code() && crate::segment::is_canonical(target))
    {
        return Err(Fault::gp(0));
    }
    Ok(())
}

/// Set RIP to `target` after [`check_target`].
#[inline]
fn branch(cpu: &mut Interpreter, target: u64) -> Result<(), Fault> {
    check_target(cpu, target)?;
    cpu.state.rip = target;
    Ok(())
}

/// Jcc rel8/rel16/rel32 with the condition code `CC` fixed at decode time, so the flag test
/// folds to the one condition (the common conditional branches of hot loops).
pub(super) fn jcc_cc<const CC: u8>(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    if cpu.cond_inline(CC) {
        let t = cpu.state.rip.wrapping_add(d.imm) & ip_mask(d);
        branch(cpu, t)?;
    }
    Ok(())
}

/// The near target of JMP/CALL: relative or r/m.
#[inline]
fn near_target(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<u64, Fault> {
    let m = ip_mask(d);
    if d.o0 == MEM || d.o0 < 0x20 {
        Ok(cpu.read_op_sized(p, d, d.o0, d.osize)? & m)
    } else {
        Ok(cpu.state.rip.wrapping_add(d.imm) & m)
    }
}

/// JMP near.
pub(super) fn jmp(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let t = near_target(cpu, p, d)?;
    branch(cpu, t)
}

/// CALL near: push the return IP, then branch.
pub(super) fn call(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let t = near_target(cpu, p, d)?;
    check_target(cpu, t)?;
    cpu.push(p, cpu.state.rip, d.osize)?;
    cpu.state.rip = t;
    Ok(())
}

/// RET near [imm16].
pub(super) fn ret(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = d.osize;
    let t = cpu.peek_stack(p, 0, size)? & ip_mask(d);
    check_target(cpu, t)?;
    let extra = if d.insn.op_count() > 0 {
        u64::from(d.insn.immediate16())
    } else {
        0
    };
    let mask = cpu.stack_mask();
    let rsp = cpu.state.gpr[gpr::RSP];
    cpu.state.gpr[gpr::RSP] = (rsp & !mask) | (rsp.wrapping_add(u64::from(size) + extra) & mask);
    cpu.state.rip = t;
    Ok(())
}

/// LOOP/LOOPE/LOOPNE: decrement CX/ECX (by address size) and branch while non-zero (and
/// ZF matches).
pub(super) fn loop_(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let am = d.amask;
    let rcx = cpu.state.gpr[gpr::RCX];
    let count = rcx.wrapping_sub(1) & am;
    let zf = cpu.rflags() & fl::ZF != 0;
    let take = count != 0
        && match d.insn.mnemonic() {
            Mnemonic::Loope => zf,
            Mnemonic::Loopne => !zf,
            _ => true,
        };
    if take {
        let t = cpu.state.rip.wrapping_add(d.imm) & ip_mask(d);
        branch(cpu, t)?;
    }
    cpu.state.gpr[gpr::RCX] = super::addr_update(rcx, count, am);
    Ok(())
}

/// JCXZ/JECXZ/JRCXZ: the counter width is the address size.
pub(super) fn jcxz(cpu: &mut Interpreter, _p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    if cpu.state.gpr[gpr::RCX] & d.amask == 0 {
        let t = cpu.state.rip.wrapping_add(d.imm) & ip_mask(d);
        branch(cpu, t)?;
    }
    Ok(())
}

/// HLT: privileged (#GP(0) at CPL > 0); the run loop returns `VmExit::Halted`.
pub(super) fn hlt(cpu: &mut Interpreter, _p: &mut dyn Platform, _d: &Decoded) -> Result<(), Fault> {
    if cpu.state.cpl() != 0 {
        return Err(Fault::gp(0));
    }
    cpu.state.halted = true;
    Ok(())
}

/// CLC STC CMC CLD STD.
pub(super) fn flag_op(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let f = cpu.rflags();
    let nf = match d.insn.mnemonic() {
        Mnemonic::Clc => f & !fl::CF,
        Mnemonic::Stc => f | fl::CF,
        Mnemonic::Cmc => f ^ fl::CF,
        Mnemonic::Cld => f & !fl::DF,
        _ => f | fl::DF,
    };
    cpu.set_rflags(nf);
    Ok(())
}

/// CLI/STI with the IOPL and VME/PVI rules of SDM Vol. 2A CLI / Vol. 2B STI. STI that sets
/// IF blocks interrupts until after the next instruction.
pub(super) fn cli_sti(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let sti = d.insn.mnemonic() == Mnemonic::Sti;
    let f = cpu.rflags();
    let iopl = ((f & fl::IOPL) >> 12) as u8;
    let bit = if !cpu.state.protected_mode() {
        fl::IF
    } else if f & fl::VM == 0 {
        let cpl = cpu.state.cpl();
        if iopl >= cpl {
            fl::IF
        } else if cpl == 3 && cpu.state.cr4 & cr::CR4_PVI != 0 {
            if sti && f & fl::VIP != 0 {
                return Err(Fault::gp(0));
            }
            fl::VIF
        } else {
            return Err(Fault::gp(0));
        }
    } else if iopl == 3 {
        fl::IF
    } else if cpu.state.cr4 & cr::CR4_VME != 0 {
        if sti && f & fl::VIP != 0 {
            return Err(Fault::gp(0));
        }
        fl::VIF
    } else {
        return Err(Fault::gp(0));
    };
    if sti {
        if bit == fl::IF && f & fl::IF == 0 {
            cpu.state.sti_shadow = true;
        }
        cpu.set_rflags(f | bit);
    } else {
        cpu.set_rflags(f & !bit);
    }
    Ok(())
}

/// BOUND r, m: #BR unless lower ≤ r ≤ upper (signed).
pub(super) fn bound(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    if d.o1 != MEM {
        return Err(Fault::ud());
    }
    let size = d.size;
    let off = cpu.ea(d);
    let lo = cpu.read_mem(p, d.seg, off, size)?;
    let hi_off = off.wrapping_add(u64::from(size)) & d.amask;
    let hi = cpu.read_mem(p, d.seg, hi_off, size)?;
    let v = cpu.get_reg(d.o0, size);
    let s = |x: u64| super::alu::sext(x, size);
    if s(v) < s(lo) || s(v) > s(hi) {
        return Err(Fault::new(vector::BR));
    }
    Ok(())
}

/// UD0/UD1/UD2: always #UD.
pub(super) fn ud(_cpu: &mut Interpreter, _p: &mut dyn Platform, _d: &Decoded) -> Result<(), Fault> {
    Err(Fault::ud())
}
