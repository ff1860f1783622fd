//! Decimal arithmetic adjustments: DAA, DAS, AAA, AAS, AAM, AAD (Intel SDM Vol. 2A).
//!
//! Flags the SDM leaves undefined are computed the way the adjusting addition or subtraction
//! would set them; conformance tests mask them.

use pcvm_core::cpu_state::flags as fl;
use pcvm_core::Platform;

use super::Decoded;
use crate::flags::{szp, FlagOp};
use crate::{Fault, Interpreter};

fn al(cpu: &Interpreter) -> u8 {
    cpu.state.gpr[0] as u8
}

fn set_al(cpu: &mut Interpreter, v: u8) {
    cpu.state.gpr[0] = (cpu.state.gpr[0] & !0xFF) | u64::from(v);
}

fn set_ax(cpu: &mut Interpreter, v: u16) {
    cpu.state.gpr[0] = (cpu.state.gpr[0] & !0xFFFF) | u64::from(v);
}

/// DAA: decimal adjust AL after addition.
pub(super) fn daa(cpu: &mut Interpreter, _p: &mut dyn Platform, _d: &Decoded) -> Result<(), Fault> {
    let f = cpu.rflags();
    let old_al = al(cpu);
    let old_cf = f & fl::CF != 0;
    let mut a = old_al;
    let mut af = false;
    if a & 0xF > 9 || f & fl::AF != 0 {
        // The carry out of this step is overwritten by the second step (SDM DAA).
        a = a.wrapping_add(6);
        af = true;
    }
    let cf = old_al > 0x99 || old_cf;
    if cf {
        a = a.wrapping_add(0x60);
    }
    set_al(cpu, a);
    let mut nf = (f & !crate::flags::ARITH) | szp(u64::from(a), 8);
    if cf {
        nf |= fl::CF;
    }
    if af {
        nf |= fl::AF;
    }
    // OF is undefined; Intel processors set it as the signed overflow of the adjustment.
    if (old_al ^ a) & a & 0x80 != 0 && old_al & 0x80 == 0 {
        nf |= fl::OF;
    }
    cpu.set_rflags(nf);
    Ok(())
}

/// DAS: decimal adjust AL after subtraction.
pub(super) fn das(cpu: &mut Interpreter, _p: &mut dyn Platform, _d: &Decoded) -> Result<(), Fault> {
    let f = cpu.rflags();
    let old_al = al(cpu);
    let old_cf = f & fl::CF != 0;
    let mut a = old_al;
    let mut cf = false;
    let mut af = false;
    if a & 0xF > 9 || f & fl::AF != 0 {
        let (r, b) = a.overflowing_sub(6);
        a = r;
        cf = old_cf || b;
        af = true;
    }
    if old_al > 0x99 || old_cf {
        a = a.wrapping_sub(0x60);
        cf = true;
    }
    set_al(cpu, a);
    let mut nf = (f & !crate::flags::ARITH) | szp(u64::from(a), 8);
    if cf {
        nf |= fl::CF;
    }
    if af {
        nf |= fl::AF;
    }
    if (old_al ^ a) & old_al & 0x80 != 0 {
        nf |= fl::OF;
    }
    cpu.set_rflags(nf);
    Ok(())
}

/// AAA: ASCII adjust after addition (AX ← AX + 106H when adjusting).
pub(super) fn aaa(cpu: &mut Interpreter, _p: &mut dyn Platform, _d: &Decoded) -> Result<(), Fault> {
    let f = cpu.rflags();
    let ax = cpu.state.gpr[0] as u16;
    let adjust = ax & 0xF > 9 || f & fl::AF != 0;
    let nax = if adjust { ax.wrapping_add(0x106) } else { ax };
    set_ax(cpu, nax & 0xFF0F);
    let mut nf = (f & !crate::flags::ARITH) | szp(u64::from(nax as u8), 8);
    if adjust {
        nf |= fl::AF | fl::CF;
    }
    cpu.set_rflags(nf);
    Ok(())
}

/// AAS: ASCII adjust after subtraction (AX ← AX − 6, AH ← AH − 1 when adjusting).
pub(super) fn aas(cpu: &mut Interpreter, _p: &mut dyn Platform, _d: &Decoded) -> Result<(), Fault> {
    let f = cpu.rflags();
    let ax = cpu.state.gpr[0] as u16;
    let adjust = ax & 0xF > 9 || f & fl::AF != 0;
    let nax = if adjust {
        ax.wrapping_sub(6).wrapping_sub(0x100)
    } else {
        ax
    };
    set_ax(cpu, nax & 0xFF0F);
    let mut nf = (f & !crate::flags::ARITH) | szp(u64::from(nax as u8), 8);
    if adjust {
        nf |= fl::AF | fl::CF;
    }
    cpu.set_rflags(nf);
    Ok(())
}

/// AAM imm8: AH ← AL / imm8, AL ← AL mod imm8; #DE when imm8 is 0.
pub(super) fn aam(cpu: &mut Interpreter, _p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let base = d.insn.immediate8();
    if base == 0 {
        return Err(Fault::de());
    }
    let a = al(cpu);
    let r = a % base;
    set_ax(cpu, (u16::from(a / base) << 8) | u16::from(r));
    cpu.set_lazy(FlagOp::Logic, 8, u64::from(r), u64::from(r), u64::from(r));
    Ok(())
}

/// AAD imm8: AL ← (AL + AH × imm8) & FFH, AH ← 0.
pub(super) fn aad(cpu: &mut Interpreter, _p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let base = d.insn.immediate8();
    let ax = cpu.state.gpr[0] as u16;
    let a = u64::from(ax as u8);
    let b = (u64::from(ax >> 8) * u64::from(base)) & 0xFF;
    let r = (a + b) & 0xFF;
    set_ax(cpu, r as u16);
    cpu.set_lazy(FlagOp::Add, 8, a, b, r);
    Ok(())
}
