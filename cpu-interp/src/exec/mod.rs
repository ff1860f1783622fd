//! Instruction execution, one file per family (owned by EXEC).
//!
//! Decoding happens once per basic block (`decode_cache`): each iced-x86 [`Instruction`] is
//! turned into a [`Decoded`] holding a pre-resolved handler and pre-computed operand locations,
//! so executing an instruction is one indirect call with no decoding work.
//!
//! Contract of a handler: on entry `state.rip` already holds the next instruction's IP. A
//! handler either completes (returns `Ok`) or returns a [`Fault`] having changed nothing
//! architectural — except REP string progress, which is documented partial state (SDM Vol. 2B
//! REP) — so the run loop only has to restore RIP. Handlers marked [`SNAP`] may change several
//! registers before faulting; the run loop snapshots the registers for them.

mod alu;
mod bcd;
mod bmi;
mod control;
mod data;
mod far;
mod io;
mod mmx;
mod shift;
mod sse;
mod stack;
mod string;
mod system;

mod x87;

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};
use pcvm_core::{Platform, SegReg};

use crate::{Fault, Interpreter};

/// An instruction's executor.
pub(crate) type Handler = fn(&mut Interpreter, &mut dyn Platform, &Decoded) -> Result<(), Fault>;

/// Ends the decoded block after this instruction (control flow, mode or interrupt-state
/// changes, I/O).
pub(crate) const END: u8 = 1;
/// The run loop snapshots the registers before this instruction so a fault is precise.
pub(crate) const SNAP: u8 = 2;
/// The handler computes memory addresses from the iced instruction, whose RIP-relative
/// operands are absolute for the RIP it was decoded at (system and far instructions).
pub(crate) const INSN_ADDR: u8 = 4;
/// The instruction may change CS, the mode, the CPL, paging or a segment register (system
/// and far instructions, segment loads): the run loop bumps the context generation after
/// it, dropping every lookup cached for the old context.
pub(crate) const CTX: u8 = 8;

/// Operand location codes: 0–15 a GPR (low part of the operand's size), `HI | n` the high
/// byte of GPR n (AH, CH, DH, BH), [`MEM`], [`IMM`] or [`NONE`].
pub(crate) const HI: u8 = 0x10;
pub(crate) const MEM: u8 = 0x20;
pub(crate) const IMM: u8 = 0x21;
pub(crate) const NONE: u8 = 0xFF;
/// Memory operand base code for RIP-relative addressing (64-bit mode).
pub(crate) const RIP_BASE: u8 = 0x40;

/// A predecoded instruction.
#[derive(Clone)]
pub(crate) struct Decoded {
    pub handler: Handler,
    /// Length in bytes.
    pub len: u8,
    /// [`END`] / [`SNAP`].
    pub flags: u8,
    /// Operand size in bytes of the main operand (1, 2, 4, 8).
    pub size: u8,
    /// Location of operand 0 and 1.
    pub o0: u8,
    pub o1: u8,
    /// Memory operand: base and index GPR (or [`NONE`]; [`RIP_BASE`] for RIP-relative
    /// addressing), index shift, segment.
    pub base: u8,
    pub index: u8,
    pub scale: u8,
    pub seg: SegReg,
    /// Address-size mask (0xFFFF, 0xFFFF_FFFF or all ones).
    pub amask: u64,
    /// Displacement of the memory operand, sign-extended; for RIP-relative addressing the
    /// displacement from the next instruction's RIP (blocks are cached by physical address,
    /// so absolute targets would be wrong for code reached through another mapping).
    pub disp: u64,
    /// Immediate operand (sign-extended, masked to the operand size), or for relative
    /// branches the displacement from the next instruction's IP.
    pub imm: u64,
    /// Operand size in bytes of the stack and near-branch operations (2, 4, 8): the
    /// operand-size attribute, which defaults to 64 bits for them in 64-bit mode
    /// (SDM Vol. 1 §3.6.1, Vol. 2A §2.2.1.7).
    pub osize: u8,
    /// Condition code nibble of Jcc/SETcc/CMOVcc/LOOPcc (SDM Vol. 1 App. B).
    pub cc: u8,
    /// The full decoded instruction for the less common handlers.
    pub insn: Box<Instruction>,
}

/// GPR location of an iced register (see [`HI`]), or `None` for non-GPRs.
pub(crate) fn gpr_loc(r: Register) -> Option<u8> {
    let n = r as u32;
    if r.is_gpr8() {
        let d = n - Register::AL as u32;
        Some(if d < 4 {
            d as u8
        } else if d < 8 {
            HI | (d as u8 - 4)
        } else {
            d as u8 - 4
        })
    } else if r.is_gpr16() {
        Some((n - Register::AX as u32) as u8)
    } else if r.is_gpr32() {
        Some((n - Register::EAX as u32) as u8)
    } else if r.is_gpr64() {
        Some((n - Register::RAX as u32) as u8)
    } else {
        None
    }
}

/// Segment register of an iced register.
pub(crate) fn seg_of(r: Register) -> Option<SegReg> {
    Some(match r {
        Register::ES => SegReg::Es,
        Register::CS => SegReg::Cs,
        Register::SS => SegReg::Ss,
        Register::DS => SegReg::Ds,
        Register::FS => SegReg::Fs,
        Register::GS => SegReg::Gs,
        _ => return None,
    })
}

fn op_loc(insn: &Instruction, i: u32) -> u8 {
    if i >= insn.op_count() {
        return NONE;
    }
    match insn.op_kind(i) {
        OpKind::Register => gpr_loc(insn.op_register(i)).unwrap_or(NONE),
        OpKind::Memory => MEM,
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate32to64
        | OpKind::Immediate8to64
        | OpKind::Immediate64 => IMM,
        _ => NONE,
    }
}

fn op_size(insn: &Instruction, i: u32) -> u8 {
    if i >= insn.op_count() {
        return 0;
    }
    match insn.op_kind(i) {
        OpKind::Register => insn.op_register(i).size() as u8,
        OpKind::Memory => insn.memory_size().size() as u8,
        OpKind::Immediate8 => 1,
        OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
        OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
        OpKind::Immediate8to64 | OpKind::Immediate32to64 | OpKind::Immediate64 => 8,
        _ => 0,
    }
}

/// The new value of an address register (rSI, rDI, rCX) that string instructions, LOOP and
/// JrCXZ update at address-size mask `am`: a 16-bit update keeps bits 63:16, a 32-bit one
/// is a 32-bit register write and zero-extends (SDM Vol. 1 §3.4.1.1).
#[inline]
pub(crate) const fn addr_update(old: u64, new: u64, am: u64) -> u64 {
    if am == 0xFFFF {
        (old & !0xFFFF) | (new & 0xFFFF)
    } else {
        new & am
    }
}

/// Mask of a `size`-byte value.
#[inline]
pub(crate) const fn mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}

impl Decoded {
    /// Predecode `insn`, decoded in code of `bitness` bits.
    pub(crate) fn new(insn: &Instruction, bitness: u32, bytes: &[u8]) -> Decoded {
        let (handler, flags) = select(insn, bitness);
        let (p66, p67, rex_w) = size_prefixes(bytes, bitness);
        let long = bitness == 64;
        let o32 = rex_w || (bitness != 16) != p66;
        let amask = match (bitness, p67) {
            (64, false) => u64::MAX,
            (16, false) | (32, true) => 0xFFFF,
            _ => 0xFFFF_FFFF,
        };
        // 8-byte operands exist only in 64-bit code (elsewhere an 8-byte memory operand
        // belongs to an instruction that does not use this size).
        let max = if long { 8 } else { 4 };
        let mut size = op_size(insn, 0);
        if size == 0 || size > max {
            size = op_size(insn, 1).clamp(1, max);
        }
        let osize = stack_osize(insn).unwrap_or(if rex_w {
            8
        } else if o32 {
            4
        } else {
            2
        });
        let o0 = op_loc(insn, 0);
        let o1 = op_loc(insn, 1);
        let mut imm = 0u64;
        for i in 0..insn.op_count() {
            match insn.op_kind(i) {
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                    imm = insn.near_branch_target().wrapping_sub(insn.next_ip());
                }
                k if op_loc_kind_is_imm(k) => {
                    imm = insn.immediate(i) & mask(size.max(op_size(insn, i)));
                    if k == OpKind::Immediate8 && i > 0 {
                        // Shift/rotate counts, ENTER, IN/OUT ports: the raw byte.
                        imm = u64::from(insn.immediate8());
                    }
                }
                _ => {}
            }
        }
        let reg = |r: Register| gpr_loc(r).unwrap_or(NONE);
        let (base, disp) = match insn.memory_base() {
            // iced resolves RIP-relative operands to an absolute address; keep the offset
            // from the next instruction instead (see `disp`).
            Register::RIP | Register::EIP => (
                RIP_BASE,
                insn.memory_displacement64().wrapping_sub(insn.next_ip()),
            ),
            r => (reg(r), insn.memory_displacement64()),
        };
        Decoded {
            handler,
            len: insn.len() as u8,
            flags,
            size: match size.clamp(1, max) {
                s @ (1 | 2 | 4 | 8) => s,
                _ => 4,
            },
            o0,
            o1,
            base,
            index: reg(insn.memory_index()),
            scale: insn.memory_index_scale().trailing_zeros() as u8,
            seg: seg_of(insn.memory_segment()).unwrap_or(SegReg::Ds),
            amask,
            disp,
            imm,
            osize,
            cc: (insn.condition_code() as u8).wrapping_sub(1) & 0xF,
            insn: Box::new(*insn),
        }
    }
}

fn op_loc_kind_is_imm(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
            | OpKind::Immediate64
    )
}

/// The operand size of a stack or near-branch instruction as decoded (these default to 64
/// bits in 64-bit mode, SDM Vol. 2A §2.2.1.7), or `None` for other instructions.
fn stack_osize(insn: &Instruction) -> Option<u8> {
    use Mnemonic as M;
    let bytes = |n: i32| match n.unsigned_abs() {
        2 => Some(2),
        4 => Some(4),
        8 => Some(8),
        _ => None,
    };
    match insn.mnemonic() {
        M::Enter => match insn.code() {
            Code::Enterw_imm16_imm8 => Some(2),
            Code::Enterd_imm16_imm8 => Some(4),
            _ => Some(8),
        },
        M::Leave => match insn.code() {
            Code::Leavew => Some(2),
            Code::Leaved => Some(4),
            _ => Some(8),
        },
        M::Ret => {
            let imm = if insn.op_count() > 0 {
                i32::from(insn.immediate16())
            } else {
                0
            };
            bytes(insn.stack_pointer_increment() - imm)
        }
        M::Push | M::Pop | M::Pushf | M::Pushfd | M::Pushfq | M::Popf | M::Popfd | M::Popfq => {
            bytes(insn.stack_pointer_increment())
        }
        _ => match insn.op0_kind() {
            OpKind::NearBranch16 => Some(2),
            OpKind::NearBranch32 => Some(4),
            OpKind::NearBranch64 => Some(8),
            OpKind::Register | OpKind::Memory if matches!(insn.mnemonic(), M::Jmp | M::Call) => {
                bytes(op_size(insn, 0).into())
            }
            _ => None,
        },
    }
}

/// Log an unimplemented or invalid instruction once per code and raise #UD.
fn undefined(cpu: &mut Interpreter, _p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let code = d.insn.code();
    if cpu.ud_logged.insert(code as u32) {
        tracing::warn!(
            "#UD: unimplemented or invalid instruction {:?} ({:?}) at {:04x}:{:x}",
            code,
            d.insn.mnemonic(),
            cpu.state.seg(SegReg::Cs).selector,
            cpu.state.rip
        );
    }
    Err(Fault::ud())
}

/// An instruction iced rejected is really a valid one behind more than 15 bytes of
/// (repeated) prefixes.
pub(crate) fn longer_than_15(bytes: &[u8], bitness: u32) -> bool {
    let prefixes = bytes
        .iter()
        .take_while(|b| {
            matches!(
                b,
                0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3
            )
        })
        .count();
    if prefixes < 2 {
        return false;
    }
    let mut kept: Vec<u8> = Vec::with_capacity(bytes.len());
    for &b in &bytes[..prefixes] {
        if !kept.contains(&b) {
            kept.push(b);
        }
    }
    let dropped = prefixes - kept.len();
    kept.extend_from_slice(&bytes[prefixes..]);
    let mut dec = iced_x86::Decoder::new(bitness, &kept, iced_x86::DecoderOptions::NONE);
    let insn = dec.decode();
    !insn.is_invalid() && insn.len() + dropped > 15
}

/// Instructions longer than 15 bytes raise #GP(0) (SDM Vol. 2A §2.3.11).
pub(crate) fn too_long(
    _cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    _d: &Decoded,
) -> Result<(), Fault> {
    Err(Fault::gp(0))
}

fn nop(_cpu: &mut Interpreter, _p: &mut dyn Platform, _d: &Decoded) -> Result<(), Fault> {
    Ok(())
}

fn sys(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    cpu.exec_system(p, &d.insn)
}

fn far(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    cpu.exec_far(p, &d.insn)
}

/// The ALU handler for `insn`'s operand form: register-register and register-immediate forms
/// get handlers specialized by operand size.
fn alu_form<const OP: u8>(insn: &Instruction) -> Handler {
    let k0 = insn.op0_kind();
    let k1 = insn.op1_kind();
    if k0 != OpKind::Register {
        return alu::alu::<OP>;
    }
    let size = insn.op0_register().size();
    let imm = op_loc_kind_is_imm(k1);
    match (k1 == OpKind::Register, imm, size) {
        (true, _, 1) => alu::alu_rr::<OP, 1>,
        (true, _, 2) => alu::alu_rr::<OP, 2>,
        (true, _, 4) => alu::alu_rr::<OP, 4>,
        (true, _, 8) => alu::alu_rr::<OP, 8>,
        (_, true, 1) => alu::alu_ri::<OP, 1>,
        (_, true, 2) => alu::alu_ri::<OP, 2>,
        (_, true, 4) => alu::alu_ri::<OP, 4>,
        (_, true, 8) => alu::alu_ri::<OP, 8>,
        _ => alu::alu::<OP>,
    }
}

/// The MOV handler for `insn`'s operand form (GPR/memory/immediate only).
fn mov_form(insn: &Instruction) -> Handler {
    let k0 = insn.op0_kind();
    let k1 = insn.op1_kind();
    let size = match k0 {
        OpKind::Register => insn.op0_register().size(),
        _ => insn.memory_size().size(),
    };
    let reg1 = k1 == OpKind::Register && gpr_loc(insn.op1_register()).is_some();
    let reg0 = k0 == OpKind::Register && gpr_loc(insn.op0_register()).is_some();
    let imm1 = matches!(
        k1,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate32to64
            | OpKind::Immediate64
    );
    match (k0, reg0, reg1, imm1, size) {
        (OpKind::Register, true, true, _, 1) => data::mov_rr::<1>,
        (OpKind::Register, true, true, _, 2) => data::mov_rr::<2>,
        (OpKind::Register, true, true, _, 4) => data::mov_rr::<4>,
        (OpKind::Register, true, true, _, 8) => data::mov_rr::<8>,
        (OpKind::Register, true, _, true, 1) => data::mov_ri::<1>,
        (OpKind::Register, true, _, true, 2) => data::mov_ri::<2>,
        (OpKind::Register, true, _, true, 4) => data::mov_ri::<4>,
        (OpKind::Register, true, _, true, 8) => data::mov_ri::<8>,
        (OpKind::Register, true, false, false, 1) if k1 == OpKind::Memory => data::mov_rm::<1>,
        (OpKind::Register, true, false, false, 2) if k1 == OpKind::Memory => data::mov_rm::<2>,
        (OpKind::Register, true, false, false, 4) if k1 == OpKind::Memory => data::mov_rm::<4>,
        (OpKind::Register, true, false, false, 8) if k1 == OpKind::Memory => data::mov_rm::<8>,
        (OpKind::Memory, _, true, _, 1) => data::mov_mr::<1>,
        (OpKind::Memory, _, true, _, 2) => data::mov_mr::<2>,
        (OpKind::Memory, _, true, _, 4) => data::mov_mr::<4>,
        (OpKind::Memory, _, true, _, 8) => data::mov_mr::<8>,
        _ => data::mov,
    }
}

/// Choose the handler for `insn`.
fn select(insn: &Instruction, bitness: u32) -> (Handler, u8) {
    use Mnemonic as M;
    if insn.is_invalid() {
        return (undefined, END);
    }
    let has_reg = |i: u32, f: fn(Register) -> bool| {
        (0..insn.op_count()).any(|k| k == i && insn.op_kind(k) == OpKind::Register)
            && f(insn.op_register(i))
    };
    let is_far = (0..insn.op_count())
        .any(|k| matches!(insn.op_kind(k), OpKind::FarBranch16 | OpKind::FarBranch32))
        || matches!(
            insn.code(),
            Code::Jmp_m1616
                | Code::Jmp_m1632
                | Code::Jmp_m1664
                | Code::Call_m1616
                | Code::Call_m1632
                | Code::Call_m1664
        );
    let _ = bitness;
    let code = insn.code();
    match insn.mnemonic() {
        M::Add => (alu_form::<{ alu::ADD }>(insn), 0),
        M::Or => (alu_form::<{ alu::OR }>(insn), 0),
        M::Adc => (alu_form::<{ alu::ADC }>(insn), 0),
        M::Sbb => (alu_form::<{ alu::SBB }>(insn), 0),
        M::And => (alu_form::<{ alu::AND }>(insn), 0),
        M::Sub => (alu_form::<{ alu::SUB }>(insn), 0),
        M::Xor => (alu_form::<{ alu::XOR }>(insn), 0),
        M::Cmp => (alu_form::<{ alu::CMP }>(insn), 0),
        M::Test => (alu::test, 0),
        M::Inc | M::Dec if insn.op0_kind() == OpKind::Register => {
            let dec = insn.mnemonic() == M::Dec;
            let h: Handler = match (dec, insn.op0_register().size()) {
                (false, 1) => alu::incdec_r::<false, 1>,
                (false, 2) => alu::incdec_r::<false, 2>,
                (false, 8) => alu::incdec_r::<false, 8>,
                (false, _) => alu::incdec_r::<false, 4>,
                (true, 1) => alu::incdec_r::<true, 1>,
                (true, 2) => alu::incdec_r::<true, 2>,
                (true, 8) => alu::incdec_r::<true, 8>,
                (true, _) => alu::incdec_r::<true, 4>,
            };
            (h, 0)
        }
        M::Inc => (alu::inc, 0),
        M::Dec => (alu::dec, 0),
        M::Neg => (alu::neg, 0),
        M::Not => (alu::not, 0),
        M::Mul => (alu::mul, 0),
        M::Imul => (alu::imul, 0),
        M::Div => (alu::div, 0),
        M::Idiv => (alu::idiv, 0),
        M::Xadd => (alu::xadd, 0),
        M::Cmpxchg => (alu::cmpxchg, 0),
        M::Cmpxchg8b => (alu::cmpxchg8b, 0),
        M::Cmpxchg16b => (alu::cmpxchg16b, 0),
        M::Popcnt => (shift::popcnt, 0),
        M::Lzcnt | M::Tzcnt => (shift::count_zeros, 0),
        M::Andn | M::Bextr | M::Blsi | M::Blsmsk | M::Blsr => (bmi::bmi1, 0),

        M::Shl | M::Sal => (shift::shift_fast::<{ shift::SHL }>, 0),
        M::Shr => (shift::shift_fast::<{ shift::SHR }>, 0),
        M::Sar => (shift::shift_fast::<{ shift::SAR }>, 0),
        M::Rol | M::Ror | M::Rcl | M::Rcr => (shift::shift, 0),
        M::Shld | M::Shrd => (shift::shxd, 0),
        M::Bt | M::Bts | M::Btr | M::Btc => (shift::bit_test, 0),
        M::Bsf | M::Bsr => (shift::bit_scan, 0),

        M::Daa => (bcd::daa, 0),
        M::Das => (bcd::das, 0),
        M::Aaa => (bcd::aaa, 0),
        M::Aas => (bcd::aas, 0),
        M::Aam => (bcd::aam, 0),
        M::Aad => (bcd::aad, 0),

        M::Mov => {
            if has_reg(0, |r| r.is_segment_register()) {
                (data::mov_to_sreg, END | SNAP | CTX)
            } else if has_reg(1, |r| r.is_segment_register()) {
                (data::mov_from_sreg, 0)
            } else if has_reg(0, |r| r.is_cr() || r.is_dr() || r.is_tr())
                || has_reg(1, |r| r.is_cr() || r.is_dr() || r.is_tr())
            {
                (sys, END | SNAP | CTX | INSN_ADDR)
            } else {
                (mov_form(insn), 0)
            }
        }
        M::Movzx => {
            let src = match insn.op1_kind() {
                OpKind::Register => insn.op1_register().size(),
                _ => insn.memory_size().size(),
            };
            let h: Handler = match src {
                1 => data::movzx_s::<1>,
                2 => data::movzx_s::<2>,
                _ => data::movzx,
            };
            (h, 0)
        }
        M::Movsx | M::Movsxd => (data::movsx, 0),
        M::Movbe => (data::movbe, 0),
        M::Xchg => (data::xchg, 0),
        M::Bswap => (data::bswap, 0),
        M::Cmovo
        | M::Cmovno
        | M::Cmovb
        | M::Cmovae
        | M::Cmove
        | M::Cmovne
        | M::Cmovbe
        | M::Cmova
        | M::Cmovs
        | M::Cmovns
        | M::Cmovp
        | M::Cmovnp
        | M::Cmovl
        | M::Cmovge
        | M::Cmovle
        | M::Cmovg => (data::cmov, 0),
        M::Seto
        | M::Setno
        | M::Setb
        | M::Setae
        | M::Sete
        | M::Setne
        | M::Setbe
        | M::Seta
        | M::Sets
        | M::Setns
        | M::Setp
        | M::Setnp
        | M::Setl
        | M::Setge
        | M::Setle
        | M::Setg => (data::setcc, 0),
        M::Lea => (data::lea, 0),
        M::Cbw | M::Cwde | M::Cdqe => (data::cbw, 0),
        M::Cwd | M::Cdq | M::Cqo => (data::cwd, 0),
        M::Xlatb => (data::xlat, 0),
        M::Lahf => (data::lahf, 0),
        M::Sahf => (data::sahf, 0),
        M::Salc => (data::salc, 0),
        M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => (data::load_far_pointer, END | SNAP | CTX),
        // 0F 0D with a register operand is the PREFETCH group without a memory operand:
        // #UD, as on the AMD processors the differential harness runs against.
        M::Reservednop
            if matches!(
                code,
                Code::Reservednop_rm16_r16_0F0D
                    | Code::Reservednop_rm32_r32_0F0D
                    | Code::Reservednop_rm64_r64_0F0D
            ) && insn.op0_kind() == OpKind::Register =>
        {
            (undefined, END)
        }
        // NOP, the reserved-NOP space (0F 18–0F 1F), PAUSE and prefetch hints: no
        // architectural effect and no memory access (SDM Vol. 2B NOP, PREFETCHh).
        M::Nop
        | M::Reservednop
        | M::Pause
        | M::Prefetch
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchw
        | M::Endbr32
        | M::Endbr64 => (nop, 0),
        M::Wait => (x87::fwait, 0),

        M::Push => {
            if has_reg(0, |r| r.is_segment_register()) {
                (stack::push_sreg, 0)
            } else {
                (stack::push, 0)
            }
        }
        M::Pop => {
            if has_reg(0, |r| r.is_segment_register()) {
                (stack::pop_sreg, END | SNAP | CTX)
            } else if insn.op0_kind() == OpKind::Memory {
                (stack::pop, SNAP)
            } else {
                (stack::pop, 0)
            }
        }
        M::Pusha | M::Pushad => (stack::pusha, SNAP),
        M::Popa | M::Popad => (stack::popa, SNAP),
        M::Pushf | M::Pushfd | M::Pushfq => (stack::pushf, 0),
        M::Popf | M::Popfd | M::Popfq => (stack::popf, END | SNAP),
        M::Enter => (stack::enter, SNAP),
        M::Leave => (stack::leave, SNAP),

        M::Jo
        | M::Jno
        | M::Jb
        | M::Jae
        | M::Je
        | M::Jne
        | M::Jbe
        | M::Ja
        | M::Js
        | M::Jns
        | M::Jp
        | M::Jnp
        | M::Jl
        | M::Jge
        | M::Jle
        | M::Jg => {
            const JCC: [Handler; 16] = [
                control::jcc_cc::<0>,
                control::jcc_cc::<1>,
                control::jcc_cc::<2>,
                control::jcc_cc::<3>,
                control::jcc_cc::<4>,
                control::jcc_cc::<5>,
                control::jcc_cc::<6>,
                control::jcc_cc::<7>,
                control::jcc_cc::<8>,
                control::jcc_cc::<9>,
                control::jcc_cc::<10>,
                control::jcc_cc::<11>,
                control::jcc_cc::<12>,
                control::jcc_cc::<13>,
                control::jcc_cc::<14>,
                control::jcc_cc::<15>,
            ];
            let cc = (insn.condition_code() as u8).wrapping_sub(1) & 0xF;
            (JCC[usize::from(cc)], END)
        }
        M::Jmp if is_far => (far, END | SNAP | CTX | INSN_ADDR),
        M::Call if is_far => (far, END | SNAP | CTX | INSN_ADDR),
        M::Jmp => (control::jmp, END),
        M::Call => (control::call, END),
        M::Ret => (control::ret, END),
        M::Retf | M::Iret | M::Iretd | M::Iretq | M::Int | M::Int3 | M::Into | M::Int1 => {
            (far, END | SNAP | CTX | INSN_ADDR)
        }
        M::Loop | M::Loope | M::Loopne => (control::loop_, END),
        M::Jcxz | M::Jecxz | M::Jrcxz => (control::jcxz, END),
        M::Hlt => (control::hlt, END),
        M::Clc | M::Stc | M::Cmc | M::Cld | M::Std => (control::flag_op, 0),
        M::Cli | M::Sti => (control::cli_sti, END),
        M::Bound => (control::bound, 0),
        M::Ud0 | M::Ud1 | M::Ud2 => (control::ud, END),

        M::In => (io::in_, END),
        M::Out => (io::out, END),

        M::Movsb
        | M::Movsw
        | M::Cmpsb
        | M::Cmpsw
        | M::Stosb
        | M::Stosw
        | M::Stosd
        | M::Stosq
        | M::Lodsb
        | M::Lodsw
        | M::Lodsd
        | M::Lodsq
        | M::Scasb
        | M::Scasw
        | M::Scasd
        | M::Scasq
        | M::Movsq
        | M::Cmpsq
        | M::Insb
        | M::Insw
        | M::Insd
        | M::Outsb
        | M::Outsw
        | M::Outsd => (string::string_op, END),
        M::Movsd if code == Code::Movsd_m32_m32 => (string::string_op, END),
        M::Cmpsd if code == Code::Cmpsd_m32_m32 => (string::string_op, END),

        M::Lgdt
        | M::Lidt
        | M::Lldt
        | M::Ltr
        | M::Lmsw
        | M::Clts
        | M::Invlpg
        | M::Wrmsr
        | M::Sysenter
        | M::Sysexit
        | M::Sysexitq
        | M::Syscall
        | M::Sysret
        | M::Sysretq
        | M::Swapgs => (sys, END | SNAP | CTX | INSN_ADDR),
        // System instructions that only read system state (or store it to memory): CS, the
        // mode, paging and the segments stay as they were.
        M::Sgdt
        | M::Sidt
        | M::Sldt
        | M::Str
        | M::Smsw
        | M::Arpl
        | M::Lar
        | M::Lsl
        | M::Verr
        | M::Verw
        | M::Wbinvd
        | M::Invd
        | M::Rdmsr
        | M::Rdtsc
        | M::Rdpmc
        | M::Cpuid
        | M::Rdtscp
        | M::Clflush => (sys, END | SNAP | INSN_ADDR),

        _ => sse::select(insn)
            .or_else(|| x87::select(insn))
            .or_else(|| mmx::select(insn))
            .unwrap_or((undefined, END)),
    }
}

impl Interpreter {
    /// Effective address (offset in the segment) of the memory operand.
    #[inline]
    pub(crate) fn ea(&self, d: &Decoded) -> u64 {
        let mut a = d.disp;
        if d.base < 16 {
            a = a.wrapping_add(self.state.gpr[d.base as usize]);
        } else if d.base == RIP_BASE {
            a = a.wrapping_add(self.state.rip);
        }
        if d.index < 16 {
            a = a.wrapping_add(self.state.gpr[d.index as usize] << d.scale);
        }
        a & d.amask
    }

    /// Read a GPR of `size` bytes at location `loc`.
    #[inline]
    pub(crate) fn get_reg(&self, loc: u8, size: u8) -> u64 {
        let v = self.state.gpr[(loc & 0xF) as usize];
        if loc & HI != 0 {
            return (v >> 8) & 0xFF;
        }
        v & mask(size)
    }

    /// Write a GPR of `size` bytes at location `loc`. A 32-bit write zero-extends into the
    /// whole 64-bit register (SDM Vol. 1 §3.4.1.1); 8- and 16-bit writes keep the rest.
    #[inline]
    pub(crate) fn set_reg(&mut self, loc: u8, size: u8, v: u64) {
        let r = &mut self.state.gpr[(loc & 0xF) as usize];
        if loc & HI != 0 {
            *r = (*r & !0xFF00) | ((v & 0xFF) << 8);
            return;
        }
        *r = match size {
            1 => (*r & !0xFF) | (v & 0xFF),
            2 => (*r & !0xFFFF) | (v & 0xFFFF),
            4 => v & 0xFFFF_FFFF,
            _ => v,
        };
    }

    /// Read `size` bytes of memory through `seg`.
    #[inline]
    pub(crate) fn read_mem(
        &mut self,
        p: &mut dyn Platform,
        seg: SegReg,
        off: u64,
        size: u8,
    ) -> Result<u64, Fault> {
        Ok(match size {
            1 => u64::from(self.read_seg::<1>(p, seg, off)?[0]),
            2 => u64::from(u16::from_le_bytes(self.read_seg::<2>(p, seg, off)?)),
            4 => u64::from(u32::from_le_bytes(self.read_seg::<4>(p, seg, off)?)),
            _ => u64::from_le_bytes(self.read_seg::<8>(p, seg, off)?),
        })
    }

    /// Read `size` bytes of a read-modify-write operand: the segment and page checks are
    /// those of a write (a read-only segment or page faults before the read, and a #PF
    /// reports W=1; SDM Vol. 3A §4.7).
    #[inline]
    pub(crate) fn read_mem_rmw(
        &mut self,
        p: &mut dyn Platform,
        seg: SegReg,
        off: u64,
        size: u8,
    ) -> Result<u64, Fault> {
        let n = u64::from(size);
        let linear = self.seg_linear(seg, off, n, crate::access::AccessKind::Write)?;
        self.check_watchpoints(linear, n, false);
        if let Some(v) = self.read_ram_writable(p, linear, size) {
            return Ok(v);
        }
        let mut b = [0u8; 8];
        self.read_linear(
            p,
            linear,
            &mut b[..usize::from(size).min(8)],
            crate::access::AccessKind::Write,
        )?;
        Ok(u64::from_le_bytes(b))
    }

    /// Write `size` bytes of memory through `seg`.
    #[inline]
    pub(crate) fn write_mem(
        &mut self,
        p: &mut dyn Platform,
        seg: SegReg,
        off: u64,
        size: u8,
        v: u64,
    ) -> Result<(), Fault> {
        match size {
            1 => self.write_seg::<1>(p, seg, off, [v as u8]),
            2 => self.write_seg::<2>(p, seg, off, (v as u16).to_le_bytes()),
            4 => self.write_seg::<4>(p, seg, off, (v as u32).to_le_bytes()),
            _ => self.write_seg::<8>(p, seg, off, v.to_le_bytes()),
        }
    }

    /// Read the operand at `loc` with the decoded size.
    #[inline]
    pub(crate) fn read_op(
        &mut self,
        p: &mut dyn Platform,
        d: &Decoded,
        loc: u8,
    ) -> Result<u64, Fault> {
        self.read_op_sized(p, d, loc, d.size)
    }

    /// Read the operand at `loc` as `size` bytes.
    #[inline]
    pub(crate) fn read_op_sized(
        &mut self,
        p: &mut dyn Platform,
        d: &Decoded,
        loc: u8,
        size: u8,
    ) -> Result<u64, Fault> {
        match loc {
            MEM => {
                let off = self.ea(d);
                self.read_mem(p, d.seg, off, size)
            }
            IMM => Ok(d.imm & mask(size)),
            NONE => Ok(0),
            _ => Ok(self.get_reg(loc, size)),
        }
    }

    /// Write the operand at `loc` with the decoded size.
    #[inline]
    pub(crate) fn write_op(
        &mut self,
        p: &mut dyn Platform,
        d: &Decoded,
        loc: u8,
        v: u64,
    ) -> Result<(), Fault> {
        self.write_op_sized(p, d, loc, d.size, v)
    }

    /// Write the operand at `loc` as `size` bytes.
    #[inline]
    pub(crate) fn write_op_sized(
        &mut self,
        p: &mut dyn Platform,
        d: &Decoded,
        loc: u8,
        size: u8,
        v: u64,
    ) -> Result<(), Fault> {
        match loc {
            MEM => {
                let off = self.ea(d);
                self.write_mem(p, d.seg, off, size, v)
            }
            IMM | NONE => Ok(()),
            _ => {
                self.set_reg(loc, size, v);
                Ok(())
            }
        }
    }
}

/// Scan the prefixes of an instruction's bytes: (operand-size 0x66, address-size 0x67,
/// REX.W). A REX prefix counts only in 64-bit code and only right before the opcode
/// (SDM Vol. 2A §2.2.1).
pub(crate) fn size_prefixes(bytes: &[u8], bitness: u32) -> (bool, bool, bool) {
    let (mut o, mut a, mut w) = (false, false, false);
    for &b in bytes {
        match b {
            0x66 => o = true,
            0x67 => a = true,
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0xF0 | 0xF2 | 0xF3 => {}
            0x40..=0x4F if bitness == 64 => {
                w = b & 8 != 0;
                continue;
            }
            _ => break,
        }
        w = false;
    }
    (o, a, w)
}
