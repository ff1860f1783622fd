//! Data movement: MOV (GPR, memory, segment registers), MOVZX/MOVSX, XCHG, BSWAP, CMOVcc,
//! SETcc, LEA, CBW/CWDE/CWD/CDQ, XLAT, LAHF/SAHF, SALC, LDS/LES/LFS/LGS/LSS
//! (Intel SDM Vol. 2 instruction pages).

use iced_x86::{Mnemonic, OpKind};
use pcvm_core::cpu_state::{flags as fl, gpr};
use pcvm_core::Platform;

use super::{mask, seg_of, Decoded, MEM};
use crate::{Fault, Interpreter};

/// MOV r/m, r / r, r/m / r/m, imm / moffs forms.
pub(super) fn mov(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let v = cpu.read_op(p, d, d.o1)?;
    cpu.write_op(p, d, d.o0, v)
}

/// MOV r, r with a compile-time size.
pub(super) fn mov_rr<const S: u8>(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let v = cpu.get_reg(d.o1, S);
    cpu.set_reg(d.o0, S, v);
    Ok(())
}

/// MOV r, imm with a compile-time size.
pub(super) fn mov_ri<const S: u8>(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    cpu.set_reg(d.o0, S, d.imm);
    Ok(())
}

/// MOV r, m (load) with a compile-time size.
pub(super) fn mov_rm<const S: u8>(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let off = cpu.ea(d);
    let v = cpu.read_mem(p, d.seg, off, S)?;
    cpu.set_reg(d.o0, S, v);
    Ok(())
}

/// MOV m, r (store) with a compile-time size.
pub(super) fn mov_mr<const S: u8>(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let off = cpu.ea(d);
    let v = cpu.get_reg(d.o1, S);
    cpu.write_mem(p, d.seg, off, S, v)
}

/// MOV Sreg, r/m16: CS is not a valid destination (#UD); MOV SS inhibits interrupts and
/// debug traps for one instruction (SDM Vol. 3A §6.8.3).
pub(super) fn mov_to_sreg(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let Some(seg) = seg_of(d.insn.op0_register()) else {
        return Err(Fault::ud());
    };
    if seg == pcvm_core::SegReg::Cs {
        return Err(Fault::ud());
    }
    let v = cpu.read_op_sized(p, d, d.o1, 2)?;
    cpu.load_segment(p, seg, v as u16)?;
    if seg == pcvm_core::SegReg::Ss {
        cpu.state.mov_ss_shadow = true;
    }
    Ok(())
}

/// MOV r/m, Sreg: a register destination with 32-bit operand size is zero-extended; memory
/// destinations are always 16 bits.
pub(super) fn mov_from_sreg(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let Some(seg) = seg_of(d.insn.op1_register()) else {
        return Err(Fault::ud());
    };
    let sel = u64::from(cpu.state.seg(seg).selector);
    if d.o0 == MEM {
        cpu.write_op_sized(p, d, MEM, 2, sel)
    } else {
        cpu.set_reg(d.o0, d.size, sel);
        Ok(())
    }
}

/// Size in bytes of operand 1.
fn src_size(d: &Decoded) -> u8 {
    match d.insn.op_kind(1) {
        OpKind::Register => d.insn.op1_register().size() as u8,
        _ => d.insn.memory_size().size() as u8,
    }
}

/// MOVZX: zero-extend.
pub(super) fn movzx(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let v = cpu.read_op_sized(p, d, d.o1, src_size(d))?;
    cpu.set_reg(d.o0, d.size, v);
    Ok(())
}

/// MOVZX with the source size `S` (1 or 2 bytes) resolved at decode time.
pub(super) fn movzx_s<const S: u8>(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let v = if d.o1 == MEM {
        let off = cpu.ea(d);
        cpu.read_mem(p, d.seg, off, S)?
    } else {
        cpu.get_reg(d.o1, S)
    };
    cpu.set_reg(d.o0, d.size, v);
    Ok(())
}

/// MOVSX: sign-extend.
pub(super) fn movsx(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let s = src_size(d);
    let v = cpu.read_op_sized(p, d, d.o1, s)?;
    let v = super::alu::sext(v, s) as u64;
    cpu.set_reg(d.o0, d.size, v & mask(d.size));
    Ok(())
}

/// XCHG: the memory side is written first so a fault leaves the register intact.
pub(super) fn xchg(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let rd = |cpu: &mut Interpreter, p: &mut dyn Platform, loc: u8| {
        if loc == MEM {
            let off = cpu.ea(d);
            cpu.read_mem_rmw(p, d.seg, off, d.size)
        } else {
            Ok(cpu.get_reg(loc, d.size))
        }
    };
    let a = rd(cpu, p, d.o0)?;
    let b = rd(cpu, p, d.o1)?;
    if d.o0 == MEM {
        cpu.write_op(p, d, d.o0, b)?;
        cpu.set_reg(d.o1, d.size, a);
    } else if d.o1 == MEM {
        cpu.write_op(p, d, d.o1, a)?;
        cpu.set_reg(d.o0, d.size, b);
    } else {
        cpu.set_reg(d.o0, d.size, b);
        cpu.set_reg(d.o1, d.size, a);
    }
    Ok(())
}

/// BSWAP r32 (with a 16-bit operand the result is undefined; this clears the register
/// half as Intel processors do).
pub(super) fn bswap(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let v = cpu.get_reg(d.o0, d.size);
    let r = match d.size {
        4 => u64::from((v as u32).swap_bytes()),
        8 => v.swap_bytes(),
        _ => 0,
    };
    cpu.set_reg(d.o0, d.size, r);
    Ok(())
}

/// CMOVcc: the source is read (and may fault) whatever the condition. A 32-bit CMOV zeroes
/// the upper half of the destination even when the condition is false (SDM Vol. 2A CMOVcc;
/// outside 64-bit mode those bits are not visible).
pub(super) fn cmov(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let v = cpu.read_op(p, d, d.o1)?;
    if cpu.cond(d.cc) {
        cpu.set_reg(d.o0, d.size, v);
    } else if d.size == 4 {
        let old = cpu.get_reg(d.o0, 4);
        cpu.set_reg(d.o0, 4, old);
    }
    Ok(())
}

/// MOVBE: load or store with the byte order reversed (SDM Vol. 2B MOVBE).
pub(super) fn movbe(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = d.size;
    let v = cpu.read_op(p, d, d.o1)?;
    let swapped = v.swap_bytes() >> (64 - 8 * u32::from(size));
    cpu.write_op(p, d, d.o0, swapped)
}

/// SETcc r/m8.
pub(super) fn setcc(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let v = u64::from(cpu.cond(d.cc));
    cpu.write_op_sized(p, d, d.o0, 1, v)
}

/// LEA: the effective address, truncated to the operand size.
pub(super) fn lea(cpu: &mut Interpreter, _p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    if d.o1 != MEM {
        return Err(Fault::ud());
    }
    let v = cpu.ea(d);
    cpu.set_reg(d.o0, d.size, v & mask(d.size));
    Ok(())
}

/// CBW / CWDE / CDQE: sign-extend the low half of the accumulator into all of it.
pub(super) fn cbw(cpu: &mut Interpreter, _p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let a = cpu.state.gpr[gpr::RAX];
    let (half, size) = match d.insn.mnemonic() {
        Mnemonic::Cdqe => (4, 8),
        Mnemonic::Cwde => (2, 4),
        _ => (1, 2),
    };
    cpu.set_reg(0, size, super::alu::sext(a, half) as u64);
    Ok(())
}

/// CWD / CDQ / CQO: DX/EDX/RDX ← the sign of AX/EAX/RAX.
pub(super) fn cwd(cpu: &mut Interpreter, _p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = match d.insn.mnemonic() {
        Mnemonic::Cqo => 8,
        Mnemonic::Cdq => 4,
        _ => 2,
    };
    let negative = super::alu::sext(cpu.state.gpr[gpr::RAX], size) < 0;
    cpu.set_reg(gpr::RDX as u8, size, if negative { u64::MAX } else { 0 });
    Ok(())
}

/// XLAT: AL ← [seg:(E)BX + AL].
pub(super) fn xlat(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let bx = cpu.state.gpr[gpr::RBX];
    let al = cpu.state.gpr[gpr::RAX] as u8;
    let off = bx.wrapping_add(u64::from(al)) & d.amask;
    let v = cpu.read_mem(p, d.seg, off, 1)?;
    cpu.set_reg(0, 1, v);
    Ok(())
}

/// LAHF: AH ← SF:ZF:0:AF:0:PF:1:CF.
pub(super) fn lahf(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    _d: &Decoded,
) -> Result<(), Fault> {
    let f = cpu.rflags() & 0xD7 | 0x02;
    cpu.set_reg(super::HI, 1, f);
    Ok(())
}

/// SAHF: SF ZF AF PF CF ← AH.
pub(super) fn sahf(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    _d: &Decoded,
) -> Result<(), Fault> {
    let ah = cpu.get_reg(super::HI, 1);
    let m = fl::SF | fl::ZF | fl::AF | fl::PF | fl::CF;
    let f = cpu.rflags();
    cpu.set_rflags((f & !m) | (ah & m));
    Ok(())
}

/// SALC (undocumented D6): AL ← CF ? FFH : 0.
pub(super) fn salc(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    _d: &Decoded,
) -> Result<(), Fault> {
    let v = if cpu.cf() { 0xFF } else { 0 };
    cpu.set_reg(0, 1, v);
    Ok(())
}

/// LDS/LES/LFS/LGS/LSS r, m16:16 / m16:32: offset then selector (SDM Vol. 2A LDS).
pub(super) fn load_far_pointer(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    if d.o1 != MEM {
        return Err(Fault::ud());
    }
    let seg = match d.insn.mnemonic() {
        Mnemonic::Lds => pcvm_core::SegReg::Ds,
        Mnemonic::Les => pcvm_core::SegReg::Es,
        Mnemonic::Lfs => pcvm_core::SegReg::Fs,
        Mnemonic::Lgs => pcvm_core::SegReg::Gs,
        _ => pcvm_core::SegReg::Ss,
    };
    let size = d.size;
    let off = cpu.ea(d);
    let v = cpu.read_mem(p, d.seg, off, size)?;
    let sel_off = off.wrapping_add(u64::from(size)) & d.amask;
    let sel = cpu.read_mem(p, d.seg, sel_off, 2)?;
    cpu.load_segment(p, seg, sel as u16)?;
    cpu.set_reg(d.o0, size, v);
    Ok(())
}
