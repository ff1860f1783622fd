//! Port I/O: IN and OUT with the IOPL / TSS I/O-bitmap check (Intel SDM Vol. 1 §19.5,
//! Vol. 2A IN, Vol. 2B OUT).

use iced_x86::OpKind;
use pcvm_core::cpu_state::gpr;
use pcvm_core::Platform;

use super::Decoded;
use crate::{Fault, Interpreter};

/// The port operand: imm8 or DX.
fn port(cpu: &Interpreter, d: &Decoded, op: u32) -> u16 {
    match d.insn.op_kind(op) {
        OpKind::Register => cpu.state.gpr[gpr::RDX] as u16,
        _ => u16::from(d.insn.immediate8()),
    }
}

/// IN AL/AX/EAX, imm8/DX.
pub(super) fn in_(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let port = port(cpu, d, 1);
    let size = d.size;
    cpu.check_io_permission(p, port, size)?;
    let mut b = [0u8; 8];
    p.io_read(port, &mut b[..usize::from(size).min(4)]);
    cpu.io_done = true;
    cpu.dr_hits |= cpu.debug_io_hits(port, u64::from(size));
    cpu.set_reg(0, size, u64::from_le_bytes(b));
    Ok(())
}

/// OUT imm8/DX, AL/AX/EAX.
pub(super) fn out(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let port = port(cpu, d, 0);
    let size = d.insn.op1_register().size() as u8;
    cpu.check_io_permission(p, port, size)?;
    let v = cpu.get_reg(0, size).to_le_bytes();
    p.io_write(port, &v[..usize::from(size)]);
    cpu.io_done = true;
    cpu.dr_hits |= cpu.debug_io_hits(port, u64::from(size));
    Ok(())
}
