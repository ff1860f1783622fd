//! BMI1 general-purpose bit manipulation (Intel SDM Vol. 2A ANDN, BEXTR, BLSI, BLSMSK, BLSR;
//! TZCNT lives with LZCNT in `shift`).
//!
//! These are VEX-encoded (Vol. 2A §2.3): 32-bit operands, or 64-bit with VEX.W1 in 64-bit
//! mode; the decoder rejects VEX.L1 forms. VEX is not recognized in real-address and
//! virtual-8086 mode (#UD, §2.3.9). Flags the SDM leaves undefined (AF, PF, and SF for BEXTR)
//! are cleared for AF and follow the result for PF and SF.

use iced_x86::Mnemonic;
use pcvm_core::cpu_state::flags as fl;
use pcvm_core::Platform;

use super::{mask, op_loc, Decoded};
use crate::flags::{szp, ARITH};
use crate::{Fault, Interpreter};

/// Operand `i` (a GPR or the memory operand) at the instruction's operand size.
fn operand(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded, i: u32) -> Result<u64, Fault> {
    let loc = op_loc(&d.insn, i);
    cpu.read_op(p, d, loc)
}

/// ANDN, BEXTR, BLSI, BLSMSK, BLSR.
pub(super) fn bmi1(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    if !cpu.state.protected_mode() || cpu.state.rflags & fl::VM != 0 {
        return Err(Fault::ud());
    }
    let size = d.size;
    let bits = size * 8;
    let m = mask(size);
    let (res, cf) = match d.insn.mnemonic() {
        // dest = NOT src1 AND src2 (src1 in VEX.vvvv, src2 in r/m).
        Mnemonic::Andn => {
            let a = operand(cpu, p, d, 1)?;
            let b = operand(cpu, p, d, 2)?;
            (!a & b & m, false)
        }
        // dest = the LEN bits of src1 from bit START (control in VEX.vvvv: START = bits 7:0,
        // LEN = bits 15:8), zero beyond the operand.
        Mnemonic::Bextr => {
            let src = operand(cpu, p, d, 1)?;
            let control = operand(cpu, p, d, 2)?;
            let start = (control & 0xFF) as u32;
            let len = ((control >> 8) & 0xFF) as u32;
            let shifted = if start >= u32::from(bits) {
                0
            } else {
                src >> start
            };
            let field = if len >= 64 {
                u64::MAX
            } else {
                (1u64 << len) - 1
            };
            (shifted & field & m, false)
        }
        // Lowest set bit (CF = source non-zero).
        Mnemonic::Blsi => {
            let src = operand(cpu, p, d, 1)?;
            (src.wrapping_neg() & src & m, src != 0)
        }
        // Mask up to and including the lowest set bit (CF = source zero).
        Mnemonic::Blsmsk => {
            let src = operand(cpu, p, d, 1)?;
            ((src.wrapping_sub(1) ^ src) & m, src == 0)
        }
        // Source with its lowest set bit cleared (CF = source zero).
        Mnemonic::Blsr => {
            let src = operand(cpu, p, d, 1)?;
            (src.wrapping_sub(1) & src & m, src == 0)
        }
        _ => return Err(Fault::ud()),
    };
    cpu.set_reg(d.o0, size, res);
    let mut f = (cpu.rflags() & !ARITH) | szp(res, bits);
    if d.insn.mnemonic() == Mnemonic::Blsmsk {
        // "ZF is cleared" whatever the result (BLSMSK).
        f &= !fl::ZF;
    }
    if cf {
        f |= fl::CF;
    }
    cpu.set_rflags(f);
    Ok(())
}
