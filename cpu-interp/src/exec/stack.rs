//! Stack instructions: PUSH/POP (GPR, memory, immediate, segment register), PUSHA/POPA,
//! PUSHF/POPF, ENTER/LEAVE (Intel SDM Vol. 2 instruction pages).

use pcvm_core::cpu_state::{flags as fl, gpr};
use pcvm_core::{Platform, SegReg};

use super::{seg_of, Decoded, MEM};
use crate::{Fault, Interpreter};

/// Stack operand size in bytes (2, 4 or 8; see [`Decoded::osize`]).
#[inline]
pub(super) fn osize(d: &Decoded) -> u8 {
    d.osize
}

/// PUSH r/m, r, imm. PUSH SP/ESP pushes the value before the decrement (SDM Vol. 2B PUSH).
pub(super) fn push(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = d.size.max(2);
    let v = cpu.read_op_sized(p, d, d.o0, size)?;
    cpu.push(p, v, size)
}

/// PUSH Sreg: a 32-bit push stores the selector zero-extended.
pub(super) fn push_sreg(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let Some(seg) = seg_of(d.insn.op0_register()) else {
        return Err(Fault::ud());
    };
    let v = cpu.state.seg(seg).selector;
    cpu.push(p, u64::from(v), osize(d))
}

/// POP r/m, r. A memory destination addressed through ESP uses the incremented ESP; POP SP
/// loads SP with the popped value.
pub(super) fn pop(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = d.size.max(2);
    let v = cpu.pop(p, size)?;
    if d.o0 == MEM {
        cpu.write_op_sized(p, d, MEM, size, v)
    } else {
        cpu.set_reg(d.o0, size, v);
        Ok(())
    }
}

/// POP Sreg (not CS). POP SS inhibits interrupts for one instruction.
pub(super) fn pop_sreg(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let Some(seg) = seg_of(d.insn.op0_register()) else {
        return Err(Fault::ud());
    };
    if seg == SegReg::Cs {
        return Err(Fault::ud());
    }
    let size = osize(d);
    let v = cpu.peek_stack(p, 0, size)?;
    cpu.load_segment(p, seg, v as u16)?;
    let mask = cpu.stack_mask();
    let rsp = cpu.state.gpr[gpr::RSP];
    cpu.state.gpr[gpr::RSP] = (rsp & !mask) | (rsp.wrapping_add(u64::from(size)) & mask);
    if seg == SegReg::Ss {
        cpu.state.mov_ss_shadow = true;
    }
    Ok(())
}

/// PUSHA/PUSHAD: AX CX DX BX (original SP) BP SI DI.
pub(super) fn pusha(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = osize(d);
    let sp = cpu.state.gpr[gpr::RSP];
    for r in 0..8 {
        let v = if r == gpr::RSP { sp } else { cpu.state.gpr[r] };
        cpu.push(p, v, size)?;
    }
    Ok(())
}

/// POPA/POPAD: DI SI BP (skip SP) BX DX CX AX.
pub(super) fn popa(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = osize(d);
    for r in (0..8).rev() {
        let v = cpu.pop(p, size)?;
        if r != gpr::RSP {
            cpu.set_reg(r as u8, size, v);
        }
    }
    Ok(())
}

/// Virtual-8086 mode with IOPL < 3 and no VME: PUSHF/POPF/CLI/STI/INT/IRET fault
/// (SDM Vol. 3A §20.2.7).
fn v86_iopl_fault(cpu: &Interpreter) -> bool {
    cpu.state.rflags & fl::VM != 0 && cpu.state.rflags & fl::IOPL != fl::IOPL
}

/// PUSHF/PUSHFD: the image has VM and RF clear (SDM Vol. 2B PUSHF).
pub(super) fn pushf(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = osize(d);
    let mut f = cpu.rflags();
    if v86_iopl_fault(cpu) {
        if size == 2 && cpu.state.cr4 & pcvm_core::cpu_state::cr::CR4_VME != 0 {
            // VME: IF in the image comes from VIF, IOPL reads as 3.
            f = (f & !fl::IF) | if f & fl::VIF != 0 { fl::IF } else { 0 } | fl::IOPL;
        } else {
            return Err(Fault::gp(0));
        }
    }
    cpu.push(p, f & !(fl::VM | fl::RF), size)
}

/// POPF/POPFD with the mode rules of SDM Vol. 2B POPF: IOPL changes only at CPL 0, IF only
/// when CPL ≤ IOPL; VM, VIP, VIF never change; RF is cleared.
pub(super) fn popf(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = osize(d);
    let old = cpu.rflags();
    let vm = old & fl::VM != 0;
    let vme_path = vm
        && old & fl::IOPL != fl::IOPL
        && size == 2
        && cpu.state.cr4 & pcvm_core::cpu_state::cr::CR4_VME != 0;
    if vm && old & fl::IOPL != fl::IOPL && !vme_path {
        return Err(Fault::gp(0));
    }
    let v = cpu.peek_stack(p, 0, size)?;
    if vme_path {
        // SDM Vol. 3A §20.3.2: TF set in the image or VIP with IF set → #GP; IF goes to VIF.
        if v & fl::TF != 0 || (old & fl::VIP != 0 && v & fl::IF != 0) {
            return Err(Fault::gp(0));
        }
    }
    let _ = cpu.pop(p, size)?;
    let mut writable =
        fl::CF | fl::PF | fl::AF | fl::ZF | fl::SF | fl::TF | fl::DF | fl::OF | fl::NT;
    if size >= 4 {
        writable |= fl::AC | fl::ID;
    }
    let cpl = cpu.state.cpl();
    let iopl = ((old & fl::IOPL) >> 12) as u8;
    if vme_path {
        let mut nf = (old & !writable) | (v & writable);
        nf = (nf & !fl::VIF) | if v & fl::IF != 0 { fl::VIF } else { 0 };
        cpu.set_rflags(nf & !fl::RF);
        return Ok(());
    }
    if !vm {
        if cpl == 0 {
            writable |= fl::IOPL;
        }
        if cpl <= iopl {
            writable |= fl::IF;
        }
    } else {
        // IOPL = 3 here: IF is writable, IOPL is not.
        writable |= fl::IF;
    }
    let nf = (old & !writable) | (v & writable);
    cpu.set_rflags(nf & !fl::RF);
    Ok(())
}

/// ENTER imm16, imm8: create a stack frame with `level` nesting (SDM Vol. 2A ENTER).
pub(super) fn enter(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = osize(d);
    let alloc = u64::from(d.insn.immediate16());
    let level = d.insn.immediate8_2nd() & 31;
    let mask = cpu.stack_mask();
    cpu.push(p, cpu.state.gpr[gpr::RBP], size)?;
    // FrameTemp takes the operand size: all of ESP for a 32-bit ENTER even on a 16-bit
    // stack (as processors do), SP for a 16-bit one.
    let frame = cpu.state.gpr[gpr::RSP] & super::mask(size);
    if level > 0 {
        let mut bp = cpu.state.gpr[gpr::RBP];
        for _ in 1..level {
            bp = (bp & !mask) | (bp.wrapping_sub(u64::from(size)) & mask);
            let linear = cpu.seg_linear(
                SegReg::Ss,
                bp & mask,
                u64::from(size),
                crate::access::AccessKind::Read,
            )?;
            let mut b = [0u8; 8];
            cpu.read_linear(
                p,
                linear,
                &mut b[..usize::from(size)],
                crate::access::AccessKind::Read,
            )?;
            cpu.push(p, u64::from_le_bytes(b), size)?;
        }
        cpu.push(p, frame, size)?;
    }
    // Probe the lowest byte of the new frame before committing (#SS/#PF on the stack).
    let rsp = cpu.state.gpr[gpr::RSP];
    let new_sp = rsp.wrapping_sub(alloc) & mask;
    if alloc > 0 {
        cpu.seg_linear(SegReg::Ss, new_sp, 1, crate::access::AccessKind::Write)?;
    }
    cpu.set_reg(gpr::RBP as u8, size, frame);
    cpu.state.gpr[gpr::RSP] = (rsp & !mask) | new_sp;
    Ok(())
}

/// LEAVE: SP ← BP, then pop BP.
pub(super) fn leave(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let size = osize(d);
    let mask = cpu.stack_mask();
    let rsp = cpu.state.gpr[gpr::RSP];
    cpu.state.gpr[gpr::RSP] = (rsp & !mask) | (cpu.state.gpr[gpr::RBP] & mask);
    let v = cpu.pop(p, size)?;
    cpu.set_reg(gpr::RBP as u8, size, v);
    Ok(())
}
