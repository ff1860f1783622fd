//! Guest block → Cranelift IR: 32-bit flat protected-mode and 64-bit integer code.
//!
//! A block is the interpreter's block at one CS:RIP (decoded again at that RIP, so iced's
//! absolute branch targets and RIP-relative addresses are right). Instructions [`supported`]
//! rejects run through the interpreter from inside the block ([`helper_interp`]: the state is
//! stored as at an exit, the helper runs the one instruction, and the block reloads registers
//! and flags or exits); the translation stops before the first one that is not even
//! [`interpretable`]. In 64-bit code the translation follows the interpreter
//! for REX registers, 32-bit writes that zero-extend, 64-bit stack operations, canonical
//! branch targets (a non-canonical one exits for the interpreter's #GP) and FS/GS bases;
//! the soft TLB only ever holds canonical pages, so a hit proves the access canonical. Guest GPRs live in Cranelift variables loaded from `JitCtx::gpr` at
//! entry (only those the block reads or writes in part, see [`entry_loads`]) and the written
//! ones are stored back at every exit; arithmetic flags are carried lazily as the last
//! flag-setting operation's operands and result (SDM Vol. 1 §3.4.3.1) and materialized only
//! when a non-fast condition or an exit needs them. Every instruction does its memory accesses
//! before it changes any register or flag, so a faulting access exits with the state as it was
//! before the instruction and the interpreter re-runs it to deliver the fault precisely.
//!
//! Flag results, including the ones the SDM leaves undefined, match the interpreter's choices
//! (checked by the interpreter-vs-JIT differential test).

use cranelift_codegen::ir::condcodes::{CondCode as _, IntCC};
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, SigRef, Signature, Value};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, Variable};
use iced_x86::{
    Code, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register, RflagsBits,
};
use pcvm_cpu_interp::JitInsn;

use crate::ctx::{
    helper_flags, helper_interp, Link, ACC_FILL, ACC_RMW, FLAGS_ADD, FLAGS_DEC, FLAGS_INC,
    FLAGS_LOGIC, FLAGS_SUB, FLAGS_SUB_PLAIN, IND_CACHE_SIZE, INTERP_GO_ON, LINKS_PER_BLOCK,
    LINK_FUNC, LINK_GEN, LINK_IDX, LINK_INSNS, LINK_TAG, NO_LINK, OFF_CHAINED, OFF_CHAINED_BLOCKS,
    OFF_EXECUTED, OFF_FAULT, OFF_FLAGS_A, OFF_FLAGS_B, OFF_FLAGS_CF, OFF_FLAGS_OP, OFF_FLAGS_RES,
    OFF_GPR, OFF_LAST, OFF_LIMIT, OFF_LINK_GEN, OFF_MISS_LINK, OFF_RFLAGS, OFF_RIP, OFF_SEG_BASE,
    OFF_SLOW_ARGS, OFF_SLOW_PLAT, OFF_SLOW_RESULT, OFF_SSE_OK, OFF_TLB_READ, OFF_TLB_WRITE,
    OFF_XMM, STORE_FAULT, STORE_STOP, TLB_READ_SHIFT, TLB_WRITE_SHIFT, WTLB_ADDEND,
};

/// Exit code: the block ran to its end.
pub(crate) const EXIT_NEXT: i64 = 0;
/// Exit code: an access of the instruction at `rip` faulted; nothing of it was done.
pub(crate) const EXIT_FAULT: i64 = 1;
/// Exit code: a store wrote the block's own bytes; stopped after that instruction.
pub(crate) const EXIT_STOP: i64 = 2;
/// Exit code: an instruction run by [`helper_interp`] faulted and the interpreter delivered
/// the fault (RIP is the handler's); `executed` instructions of the block completed before.
pub(crate) const EXIT_DELIVERED: i64 = 3;
/// Exit code: delivering a fault in [`helper_interp`] shut the CPU down.
pub(crate) const EXIT_SHUTDOWN: i64 = 4;

const I64: types::Type = types::I64;
const I8: types::Type = types::I8;

/// The six arithmetic flags (CF PF AF ZF SF OF).
const ARITH: i64 = 0x8D5;

/// A translation gave up on an instruction [`supported`] accepted.
#[derive(Debug)]
pub(crate) struct Unsupported;

type Tr<T> = Result<T, Unsupported>;

/// Mask of a `size`-byte value.
fn mask(size: u32) -> i64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => -1,
    }
}

/// A register operand: GPR number, byte offset (8 for AH..BH), size in bytes.
fn gpr(r: Register) -> Option<(usize, u32, u32)> {
    let n = r as u32;
    if r.is_gpr8() {
        let d = n - Register::AL as u32;
        return Some(match d {
            0..=3 => (d as usize, 0, 1),
            4..=7 => (d as usize - 4, 8, 1),
            _ => (d as usize - 4, 0, 1),
        });
    }
    if r.is_gpr16() {
        return Some(((n - Register::AX as u32) as usize, 0, 2));
    }
    if r.is_gpr32() {
        return Some(((n - Register::EAX as u32) as usize, 0, 4));
    }
    if r.is_gpr64() {
        return Some(((n - Register::RAX as u32) as usize, 0, 8));
    }
    None
}

fn is_imm(k: OpKind) -> bool {
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

/// Operand `i` is a GPR (of the first eight unless in 64-bit code: only REX reaches the
/// others), memory or immediate.
fn plain_op(insn: &Instruction, i: u32, long: bool) -> bool {
    match insn.op_kind(i) {
        OpKind::Register => {
            gpr(insn.op_register(i)).is_some_and(|(n, _, s)| long || (n < 8 && s <= 4))
        }
        OpKind::Memory => true,
        k => is_imm(k),
    }
}

/// Size in bytes of operand `i`.
fn op_size(insn: &Instruction, i: u32) -> u32 {
    match insn.op_kind(i) {
        OpKind::Register => insn.op_register(i).size() as u32,
        OpKind::Memory => insn.memory_size().size() as u32,
        OpKind::Immediate8 => 1,
        OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
        OpKind::Immediate8to64 | OpKind::Immediate32to64 | OpKind::Immediate64 => 8,
        _ => 4,
    }
}

/// The address is canonical (48-bit linear addresses, SDM Vol. 1 §3.3.7.1).
pub(crate) fn canonical(a: u64) -> bool {
    ((a << 16) as i64 >> 16) as u64 == a
}

/// The instruction can be translated: 32-bit flat code, or 64-bit code when `long`.
pub(crate) fn supported(insn: &Instruction, long: bool) -> bool {
    use Mnemonic as M;
    // LOCK has no effect on one CPU (the interpreter ignores it too); iced already rejects
    // it where it would be #UD.
    if insn.is_invalid() {
        return false;
    }
    let n = insn.op_count();
    let branch_kind = if long {
        OpKind::NearBranch64
    } else {
        OpKind::NearBranch32
    };
    let sse = sse_form(insn).is_some();
    let operand_ok = |i: u32| {
        plain_op(insn, i, long)
            || insn.op_kind(i) == branch_kind
            || (sse && insn.op_kind(i) == OpKind::Register && insn.op_register(i).is_xmm())
    };
    if !(0..n).all(operand_ok) {
        return false;
    }
    if long
        && (0..n).any(|i| insn.op_kind(i) == branch_kind)
        && !canonical(insn.near_branch_target())
    {
        // The interpreter raises #GP for a non-canonical target.
        return false;
    }
    let has_mem = (0..n).any(|i| insn.op_kind(i) == OpKind::Memory);
    if has_mem {
        let base = insn.memory_base();
        let index = insn.memory_index();
        if long {
            // 64-bit addressing only (no 0x67 prefix): GPR or RIP base, GPR index.
            let r64 = |r: Register| r == Register::None || gpr(r).is_some_and(|(_, _, s)| s == 8);
            if !(r64(base) || base == Register::RIP) || !r64(index) {
                return false;
            }
            if base == Register::None && index == Register::None && insn.memory_displ_size() != 8 {
                return false;
            }
        } else {
            // 32- or 16-bit addressing with GPR base/index only.
            let ok_reg = |r: Register| {
                r == Register::None || gpr(r).is_some_and(|(n, _, s)| n < 8 && (2..=4).contains(&s))
            };
            if !ok_reg(base) || !ok_reg(index) {
                return false;
            }
        }
    }
    if sse {
        // The linear address of a memory operand (for the alignment rule) is the offset
        // plus a base known inline: not CS, FS or GS outside 64-bit code.
        let seg = insn.memory_segment();
        return !has_mem || long || !matches!(seg, Register::CS | Register::FS | Register::GS);
    }
    let max = if long { 8 } else { 4 };
    let size0 = if n > 0 { op_size(insn, 0) } else { 0 };
    // A shift by an immediate count of 0 on memory reads its operand with write intent (a
    // write fault on a read-only page) but stores nothing: the inline load path only proves
    // read access, so leave it to the interpreter.
    let last = n.saturating_sub(1);
    let cmask = if size0 == 8 { 0x3F } else { 0x1F };
    if n >= 2
        && insn.op_kind(0) == OpKind::Memory
        && insn.op_kind(last) == OpKind::Immediate8
        && matches!(
            insn.mnemonic(),
            M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Shld | M::Shrd
        )
        && insn.immediate8() & cmask == 0
    {
        return false;
    }
    let reg0 = n > 0 && insn.op_kind(0) == OpKind::Register;
    let count_ok = |insn: &Instruction| {
        n == 1
            || (n == 2
                && (insn.op_kind(1) == OpKind::Immediate8
                    || (reg0
                        && insn.op_kind(1) == OpKind::Register
                        && insn.op1_register() == Register::CL)))
    };
    match insn.mnemonic() {
        M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test => {
            n == 2 && size0 <= max
        }
        M::Inc | M::Dec | M::Neg | M::Not => n == 1 && size0 <= max,
        M::Mov => n == 2 && size0 <= max,
        M::Movzx | M::Movsx => n == 2 && size0 <= max,
        M::Movsxd => n == 2 && size0 == 8,
        M::Lea => n == 2 && reg0 && insn.op_kind(1) == OpKind::Memory && size0 >= 2,
        M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror => size0 <= max && count_ok(insn),
        M::Bt | M::Bts | M::Btr | M::Btc => {
            n == 2
                && size0 >= 2
                && (insn.op_kind(1) == OpKind::Immediate8
                    || (reg0 && insn.op_kind(1) == OpKind::Register))
        }
        M::Bsf | M::Bsr => n == 2 && reg0 && size0 >= 2,
        M::Imul if n == 1 => size0 >= 2 && size0 <= max,
        M::Imul => (n == 2 || n == 3) && reg0 && size0 >= 2,
        M::Mul => n == 1 && size0 >= 2 && size0 <= max,
        M::Push => matches!(
            insn.code(),
            Code::Push_r32
                | Code::Push_r16
                | Code::Pushd_imm32
                | Code::Pushd_imm8
                | Code::Push_r64
                | Code::Pushq_imm32
                | Code::Pushq_imm8
        ),
        M::Pop => matches!(insn.code(), Code::Pop_r32 | Code::Pop_r16 | Code::Pop_r64),
        M::Call => matches!(
            insn.code(),
            Code::Call_rel32_32 | Code::Call_rm32 | Code::Call_rel32_64 | Code::Call_rm64
        ),
        M::Ret => matches!(
            insn.code(),
            Code::Retnd | Code::Retnd_imm16 | Code::Retnq | Code::Retnq_imm16
        ),
        M::Jmp => matches!(
            insn.code(),
            Code::Jmp_rel8_32
                | Code::Jmp_rel32_32
                | Code::Jmp_rm32
                | Code::Jmp_rel8_64
                | Code::Jmp_rel32_64
                | Code::Jmp_rm64
        ),
        m if is_hint(m) => true,
        M::Xadd | M::Cmpxchg => n == 2 && insn.op_kind(1) == OpKind::Register && size0 <= max,
        M::Bswap => n == 1 && reg0 && size0 >= 4,
        M::Div | M::Idiv => n == 1 && size0 >= 4 && size0 <= max,
        M::Shld | M::Shrd => {
            n == 3
                && (size0 == 4 || size0 == 8)
                && insn.op_kind(1) == OpKind::Register
                && (insn.op_kind(2) == OpKind::Immediate8
                    || (reg0 && insn.op_register(2) == Register::CL))
        }
        M::Tzcnt | M::Lzcnt => n == 2 && reg0 && size0 >= 2,
        M::Leave => matches!(insn.code(), Code::Leaveq | Code::Leaved),
        M::Xchg => n == 2 && (reg0 || insn.op_kind(1) == OpKind::Register),
        M::Cwde | M::Cdq | M::Cbw | M::Cwd => true,
        M::Cdqe | M::Cqo => long,
        _ => {
            if insn.is_jcc_short_or_near() {
                insn.op_kind(0) == branch_kind
            } else {
                is_setcc(insn) || is_cmovcc(insn)
            }
        }
    }
}

/// How the translator runs an SSE instruction natively on the XMM registers (two 64-bit
/// halves each, read and written in the interpreter's state through `JitCtx::xmm`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SseForm {
    /// MOVDQU/MOVDQA/MOVUPS/MOVAPS/MOVUPD/MOVAPD, either direction.
    Move,
    /// 128-bit AND, ANDN (NOT the destination), OR and XOR, integer or floating-point.
    And,
    AndNot,
    Or,
    Xor,
    /// PCMPEQB/W/D: lanes of this many bits.
    CmpEq(u32),
    /// PADDB/W/D/Q and PSUBB/W/D/Q: lanes of this many bits.
    Add(u32),
    Sub(u32),
    /// PMOVMSKB r32/r64, xmm.
    MoveMask,
    /// MOVD/MOVQ between a GPR or memory and an XMM register (zero-extended into it), or
    /// MOVQ between XMM registers and memory (the high half cleared).
    MoveLow,
    /// MOVSS/MOVSD (scalar moves of this many bytes): from memory the rest of the register
    /// is cleared, between registers it is kept.
    MoveScalar(u32),
    /// PSHUFD xmm, xmm/m128, imm8.
    ShuffleDwords,
    /// PUNPCKLBW, PUNPCKLWD, PUNPCKLDQ, PUNPCKLQDQ, PUNPCKHQDQ.
    UnpackLowBytes,
    UnpackLowWords,
    UnpackLowDwords,
    UnpackLowQwords,
    UnpackHighQwords,
}

/// The native form of an SSE instruction (legacy encodings with XMM operands only; MMX and
/// VEX forms are left to the interpreter), if the translator has one.
fn sse_form(insn: &Instruction) -> Option<SseForm> {
    use Code as C;
    use SseForm as F;
    Some(match insn.code() {
        C::Movdqu_xmm_xmmm128
        | C::Movdqu_xmmm128_xmm
        | C::Movdqa_xmm_xmmm128
        | C::Movdqa_xmmm128_xmm
        | C::Movups_xmm_xmmm128
        | C::Movups_xmmm128_xmm
        | C::Movaps_xmm_xmmm128
        | C::Movaps_xmmm128_xmm
        | C::Movupd_xmm_xmmm128
        | C::Movupd_xmmm128_xmm
        | C::Movapd_xmm_xmmm128
        | C::Movapd_xmmm128_xmm => F::Move,
        C::Pand_xmm_xmmm128 | C::Andps_xmm_xmmm128 | C::Andpd_xmm_xmmm128 => F::And,
        C::Pandn_xmm_xmmm128 | C::Andnps_xmm_xmmm128 | C::Andnpd_xmm_xmmm128 => F::AndNot,
        C::Por_xmm_xmmm128 | C::Orps_xmm_xmmm128 | C::Orpd_xmm_xmmm128 => F::Or,
        C::Pxor_xmm_xmmm128 | C::Xorps_xmm_xmmm128 | C::Xorpd_xmm_xmmm128 => F::Xor,
        C::Pcmpeqb_xmm_xmmm128 => F::CmpEq(8),
        C::Pcmpeqw_xmm_xmmm128 => F::CmpEq(16),
        C::Pcmpeqd_xmm_xmmm128 => F::CmpEq(32),
        C::Paddb_xmm_xmmm128 => F::Add(8),
        C::Paddw_xmm_xmmm128 => F::Add(16),
        C::Paddd_xmm_xmmm128 => F::Add(32),
        C::Paddq_xmm_xmmm128 => F::Add(64),
        C::Psubb_xmm_xmmm128 => F::Sub(8),
        C::Psubw_xmm_xmmm128 => F::Sub(16),
        C::Psubd_xmm_xmmm128 => F::Sub(32),
        C::Psubq_xmm_xmmm128 => F::Sub(64),
        C::Pmovmskb_r32_xmm | C::Pmovmskb_r64_xmm => F::MoveMask,
        C::Movd_xmm_rm32
        | C::Movq_xmm_rm64
        | C::Movd_rm32_xmm
        | C::Movq_rm64_xmm
        | C::Movq_xmm_xmmm64
        | C::Movq_xmmm64_xmm => F::MoveLow,
        C::Movss_xmm_xmmm32 | C::Movss_xmmm32_xmm => F::MoveScalar(4),
        C::Movsd_xmm_xmmm64 | C::Movsd_xmmm64_xmm => F::MoveScalar(8),
        C::Pshufd_xmm_xmmm128_imm8 => F::ShuffleDwords,
        C::Punpcklbw_xmm_xmmm128 => F::UnpackLowBytes,
        C::Punpcklwd_xmm_xmmm128 => F::UnpackLowWords,
        C::Punpckldq_xmm_xmmm128 => F::UnpackLowDwords,
        C::Punpcklqdq_xmm_xmmm128 => F::UnpackLowQwords,
        C::Punpckhqdq_xmm_xmmm128 => F::UnpackHighQwords,
        _ => return None,
    })
}

/// A 16-byte memory operand of `insn` must be 16-byte aligned (#GP(0) otherwise): every
/// legacy SSE form but the explicitly unaligned moves (SDM Vol. 1 §11.4.1, §12.10.3).
fn sse_aligned(insn: &Instruction) -> bool {
    !matches!(
        insn.mnemonic(),
        Mnemonic::Movdqu | Mnemonic::Movups | Mnemonic::Movupd
    )
}

/// Bit `w - 1` of each `w`-bit lane of a 64-bit value.
fn lane_high_bits(w: u32) -> i64 {
    (0..64 / w).fold(0u64, |m, i| m | 1 << (i * w + w - 1)) as i64
}

/// The instruction may run inside a translated block through [`helper_interp`] when
/// [`supported`] rejects it: it does not transfer control (those end the interpreter's
/// blocks anyway, so there is nothing to go on with) and is not HLT. Everything else the
/// helper runs exactly as the interpreter would, ending the block at run time when the
/// instruction changed what translated code relies on (see [`helper_interp`]).
pub(crate) fn interpretable(insn: &Instruction) -> bool {
    !insn.is_invalid()
        && insn.flow_control() == iced_x86::FlowControl::Next
        && insn.mnemonic() != Mnemonic::Hlt
}

/// The GPRs (bit per register) a block of `insns` must load from `JitCtx::gpr` at entry:
/// every register an instruction reads, or writes only in part (8- and 16-bit writes merge
/// into the old value; conditional writes such as CMOVcc or BSF with a zero source keep
/// it), by iced's used-register lists, which include implicit operands (RSP of PUSH, POP,
/// CALL and RET, rAX and rDX of MUL and DIV, CL of shifts) and address registers. RSP is
/// loaded whenever used: outside 64-bit code stack updates keep its bits 32-63. A register
/// the block only ever overwrites whole (a 32- or 64-bit write) is not loaded.
pub(crate) fn entry_loads(insns: &[Instruction]) -> u16 {
    let mut factory = InstructionInfoFactory::new();
    let mut need = 0u16;
    // Registers fully written by an earlier instruction of the block: later reads see that
    // value, not the context's.
    let mut written = 0u16;
    for insn in insns {
        let mut writes = 0u16;
        for u in factory.info(insn).used_registers() {
            let Some((n, _, size)) = gpr(u.register()) else {
                continue;
            };
            if u.access() != OpAccess::Write || size < 4 || n == 4 {
                need |= (1 << n) & !written;
            } else {
                writes |= 1 << n;
            }
        }
        // iced lists the zeroing idioms (XOR/SUB/SBB r, r) as writes only; the translation
        // computes them from the register like any other operands.
        if insn.op_count() >= 2
            && insn.op0_kind() == OpKind::Register
            && insn.op1_kind() == OpKind::Register
        {
            if let (Some(a), Some(b)) = (gpr(insn.op0_register()), gpr(insn.op1_register())) {
                if a.0 == b.0 {
                    need |= (1 << a.0) & !written;
                }
            }
        }
        written |= writes;
    }
    need
}

/// The GPRs (bit per register) some instruction of `insns` may write, in whole or in part,
/// by iced's used-register lists (implicit operands included).
fn written_gprs(insns: &[Instruction]) -> u16 {
    let mut factory = InstructionInfoFactory::new();
    let mut writes = 0u16;
    for insn in insns {
        for u in factory.info(insn).used_registers() {
            if matches!(
                u.access(),
                OpAccess::Write
                    | OpAccess::ReadWrite
                    | OpAccess::CondWrite
                    | OpAccess::ReadCondWrite
            ) {
                if let Some((n, _, _)) = gpr(u.register()) {
                    writes |= 1 << n;
                }
            }
        }
    }
    writes
}

/// The GPRs (bit per register) some instruction of `insns` reads or writes, by iced's
/// used-register lists.
fn used_gprs(insns: &[Instruction]) -> u16 {
    let mut factory = InstructionInfoFactory::new();
    let mut used = 0u16;
    for insn in insns {
        for u in factory.info(insn).used_registers() {
            if let Some((n, _, _)) = gpr(u.register()) {
                used |= 1 << n;
            }
        }
    }
    used
}

/// Instructions with no architectural effect here (NOP, ENDBR, PAUSE, prefetches): the JIT
/// only retires them.
/// The six arithmetic flags in iced's `RflagsBits`.
const ICED_ARITH: u32 = RflagsBits::OF
    | RflagsBits::SF
    | RflagsBits::ZF
    | RflagsBits::AF
    | RflagsBits::CF
    | RflagsBits::PF;

/// The instruction cannot leave the block or touch memory: no memory operand (explicit or
/// implicit), no control transfer, no #DE, and translated. Only at such instructions may
/// flag state differ from the interpreter's, since every exit (a fault before an access, a
/// stop after a store, a branch) stores the flags of that point.
fn stays_in_block(insn: &Instruction, long: bool) -> bool {
    use iced_x86::FlowControl;
    supported(insn, long)
        && insn.flow_control() == FlowControl::Next
        && !insn.is_stack_instruction()
        && !insn.is_string_instruction()
        && !matches!(insn.mnemonic(), Mnemonic::Div | Mnemonic::Idiv)
        // SSE instructions leave to the interpreter when SSE is unusable.
        && sse_form(insn).is_none()
        && (0..insn.op_count()).all(|i| {
            let k = insn.op_kind(i);
            k == OpKind::Register || is_imm(k)
        })
}

/// Arithmetic flags (iced bits) the instruction always overwrites whatever they were: none
/// for shifts and rotates whose count may be zero (they then change nothing); otherwise
/// the flags written, cleared or set (never the undefined ones, which a translation may
/// leave as they were).
fn flags_killed(insn: &Instruction) -> u32 {
    use Mnemonic as M;
    let shift = matches!(
        insn.mnemonic(),
        M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shld | M::Shrd
    );
    if shift {
        let last = insn.op_count().saturating_sub(1);
        let count_imm = insn.op_count() >= 2 && is_imm(insn.op_kind(last));
        let one = insn.op_count() == 1;
        let nonzero = one || (count_imm && insn.immediate8() & 0x1F != 0);
        if !nonzero {
            return 0;
        }
    }
    (insn.rflags_written() | insn.rflags_cleared() | insn.rflags_set()) & ICED_ARITH
}

/// Per instruction: whether every arithmetic flag it may change is overwritten before
/// anything reads it, inside the block and with no possible exit in between (exits store
/// all flags). Such an instruction need not compute its flags, which for rotates and bit
/// scans means not materializing the block's entry flags (a helper call).
fn dead_flag_writes(insns: &[Instruction], long: bool) -> Vec<bool> {
    let mut dead = vec![false; insns.len()];
    let mut live = ICED_ARITH;
    for (i, insn) in insns.iter().enumerate().rev() {
        if !stays_in_block(insn, long) {
            live = ICED_ARITH;
            continue;
        }
        let changed = insn.rflags_modified() & ICED_ARITH;
        let read = insn.rflags_read() & ICED_ARITH;
        if let Some(d) = dead.get_mut(i) {
            *d = read == 0 && changed & live == 0;
        }
        live = (live & !flags_killed(insn)) | read;
    }
    dead
}

fn is_hint(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Nop
            | M::Endbr32
            | M::Endbr64
            | M::Pause
            | M::Prefetch
            | M::Prefetchnta
            | M::Prefetcht0
            | M::Prefetcht1
            | M::Prefetcht2
            | M::Prefetchw
    )
}

/// SETcc r/m8.
fn is_setcc(insn: &Instruction) -> bool {
    use Mnemonic as M;
    matches!(
        insn.mnemonic(),
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
            | M::Setg
    )
}

/// CMOVcc r, r/m.
fn is_cmovcc(insn: &Instruction) -> bool {
    use Mnemonic as M;
    matches!(
        insn.mnemonic(),
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
            | M::Cmovg
    )
}

/// The condition nibble of Jcc/SETcc/CMOVcc (SDM Vol. 1 App. B: O NO B AE E NE BE A S NS P NP
/// L GE LE G).
fn cc_nibble(insn: &Instruction) -> u8 {
    (insn.condition_code() as u8).wrapping_sub(1) & 0xF
}

/// How a memory operand's linear address is formed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SegKind {
    /// Base 0 and no segment check can fail for an in-page access: linear = offset.
    Flat,
    /// 64-bit FS/GS: linear = the base at this `JitCtx` offset + offset.
    Based(i32),
    /// Segment checks needed: always through the helper.
    Slow,
}

/// Which operation the lazy flags describe.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagOp {
    /// ADD/ADC: CF from the carry out (`cf`).
    Add,
    /// SUB/SBB/CMP/NEG: CF the borrow (`cf`); `plain` when no borrow came in (a, b compare
    /// directly).
    Sub {
        plain: bool,
    },
    /// AND/OR/XOR/TEST: CF = OF = AF = 0.
    Logic,
    /// INC/DEC: CF kept (`cf`).
    Inc,
    Dec,
}

impl FlagOp {
    /// The operation's code in `JitCtx::flags_op` (with the operand bits << 8).
    fn code(self) -> u64 {
        match self {
            FlagOp::Add => FLAGS_ADD,
            FlagOp::Sub { plain: false } => FLAGS_SUB,
            FlagOp::Sub { plain: true } => FLAGS_SUB_PLAIN,
            FlagOp::Logic => FLAGS_LOGIC,
            FlagOp::Inc => FLAGS_INC,
            FlagOp::Dec => FLAGS_DEC,
        }
    }
}

/// The arithmetic flags as known at a point of the block.
#[derive(Clone, Copy)]
enum Flags {
    /// Full RFLAGS value. `Mat(entry_flags)` stands for the flags as the block found them
    /// in the context: RFLAGS, or the previous block's lazy flags (materialized by a helper
    /// call at the first read, never at an exit).
    Mat(Value),
    /// The last flag-setting operation: operands and result masked to `bits`, CF as an i8.
    Lazy {
        op: FlagOp,
        bits: u32,
        a: Value,
        b: Value,
        res: Value,
        cf: Value,
    },
}

/// Helper-call signatures.
struct Sigs {
    load: SigRef,
    store: SigRef,
    /// A compiled block's own signature (tail calling convention), for chaining.
    block: SigRef,
    flags: SigRef,
    interp: SigRef,
}

/// Host addresses of a code module's soft-TLB miss paths (`preserve_all` functions taking
/// the helper's arguments and leaving its result in `JitCtx::slow_result`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SlowPaths {
    /// Wraps [`helper_load`].
    pub load: u64,
    /// Wraps [`helper_store`].
    pub store: u64,
}

/// The signature of a slow path: every register preserved, no parameters (they are in
/// `JitCtx::slow_args`) and no results (the convention has none).
pub(crate) fn slow_path_signature() -> Signature {
    Signature::new(CallConv::PreserveAll)
}

/// Translation state of one block.
pub(crate) struct Translator<'a> {
    b: FunctionBuilder<'a>,
    slow: SlowPaths,
    regs: [Variable; 16],
    /// Registers written so far (bit per GPR): stored back at exits.
    dirty: u16,
    /// Registers holding a value at the current point: loaded at entry or written since
    /// (the code is straight-line apart from exits, so emission order is dominance order).
    defined: u16,
    /// A register was read that was neither loaded nor written ([`entry_loads`] missed it):
    /// Cranelift would read it as zero, so the block is not compiled.
    undefined_read: bool,
    /// Values known to be zero-extended from fewer than 8 bytes: `narrow[v]` = that size in
    /// bytes (0: unknown), so [`Self::trunc`] leaves them alone.
    narrow: Vec<u8>,
    /// 64-bit code (REX registers, 64-bit stack and addresses, FS/GS bases).
    long: bool,
    flags: Flags,
    /// RFLAGS as the context holds them: at entry (with the previous block's lazy flags, if
    /// `entry_lazy`) or as [`helper_interp`] left them (materialized). Its system bits are
    /// the block's.
    entry_flags: Value,
    /// The context may hold lazy flags under `entry_flags` (no [`helper_interp`] call yet).
    entry_lazy: bool,
    stop: Variable,
    sigs: Sigs,
    /// Instructions completed before the current one.
    executed: u32,
    /// EIP of the current instruction.
    cur_ip: u64,
    /// The current instruction stored to memory (checked for a self-modifying-code stop).
    stored: bool,
    /// Host address of the block's [`Link`]s when its exits to constant targets may chain
    /// natively (the translation covers the interpreter's whole block).
    links: Option<u64>,
    /// Host address of the indirect-branch cache ([`IND_CACHE_SIZE`] [`Link`]s).
    ind_cache: u64,
    /// The current instruction's flag results are dead (see [`dead_flag_writes`]): it may
    /// leave the flags as they were instead of computing them.
    flags_dead: bool,
    /// A block that branches back to its own start loops inside the function: the header
    /// (after the register loads) its back edges jump to, the start RIP, the block's
    /// instruction count, and the registers it may write (stored back at every exit).
    self_loop: Option<SelfLoop>,
    /// In an in-function loop, the start RIP of the block being translated: `JitCtx::last`
    /// already names it, so a back edge to its own header need not store it again.
    loop_block: u64,
    /// Self loops may be formed (see [`Self::without_self_loop`]).
    loop_allowed: bool,
    /// Count native block-to-block jumps in `JitCtx::chained_blocks` (see
    /// [`Self::counting_runs`]).
    count_runs: bool,
    /// In an in-function loop, the flags the context would hold, carried in variables
    /// across its back edges instead of stored and loaded again at each.
    flag_vars: Option<FlagVars>,
    /// `entry_flags` (with the lazy state) is the loop header's, in `flag_vars`, not the
    /// context's: exits store it, and reads of it take the variables.
    flags_in_vars: bool,
    /// `JitCtx::sse_ok` was tested on every path to this point (since the last loop header
    /// or interpreter call).
    sse_checked: bool,
}

/// The flags in the context's form (RFLAGS and the lazy `flags_op`, `flags_a`, `flags_b`,
/// `flags_res`, `flags_cf`), as variables of an in-function loop.
#[derive(Clone, Copy)]
struct FlagVars {
    rflags: Variable,
    op: Variable,
    a: Variable,
    b: Variable,
    res: Variable,
    cf: Variable,
}

impl FlagVars {
    /// The variables with their context offsets, RFLAGS first.
    fn fields(self) -> [(Variable, i32); 6] {
        [
            (self.rflags, OFF_RFLAGS),
            (self.op, OFF_FLAGS_OP),
            (self.a, OFF_FLAGS_A),
            (self.b, OFF_FLAGS_B),
            (self.res, OFF_FLAGS_RES),
            (self.cf, OFF_FLAGS_CF),
        ]
    }
}

/// The in-function loop of a block whose branch targets its own first instruction, or of a
/// region of blocks that branch to each other ([`RegionBlock`]).
#[derive(Clone)]
struct SelfLoop {
    /// The registers some block of the loop may write.
    writes: u16,
    /// Where each block (the translated one first) starts.
    entries: Vec<LoopEntry>,
}

/// How a back edge leaves the function when it may not go round: through the exit's link
/// slot ([`Translator::exit_linked`]) or as a computed branch ([`Translator::exit_dynamic`],
/// for a RET to a return site).
#[derive(Clone, Copy)]
enum LoopOut {
    Link(usize),
    Dynamic(Value),
}

/// One block of an in-function loop: its header, start RIP, instruction count and what
/// `JitCtx::last` names while it runs (the compiled block's index, or for the function's own
/// block the value it was entered with).
#[derive(Clone, Copy)]
struct LoopEntry {
    header: cranelift_codegen::ir::Block,
    start: u64,
    len: u32,
    last: Value,
    /// For a block on another page than the function's own: its index, which the exit's
    /// link must name for the branch to stay in the function.
    linked: Option<u32>,
    /// It starts at the return address of a direct CALL in the function, on the function's
    /// page: a RET to that address goes on at its header.
    return_site: bool,
}

/// Another compiled block translated into the same function (a loop region): its
/// instructions (all native, the interpreter's whole block), its link array's host address
/// and its index, which `JitCtx::last` holds while its copy runs, so its exits are its own.
pub(crate) struct RegionBlock<'i> {
    pub insns: &'i [Instruction],
    pub links: u64,
    pub idx: u32,
    /// It lies on another page than the function's own block, so the linear address it was
    /// found at may map elsewhere the next time: branches into its copy are taken only while
    /// the exit's link is current and names it (the dispatcher filled that link from a lookup
    /// under the present mapping, and a link outlives neither a change of mapping nor the
    /// block: dropping or replacing any block voids every link).
    pub other_page: bool,
}

fn sig(call_conv: CallConv, params: usize) -> Signature {
    let mut s = Signature::new(call_conv);
    for _ in 0..params {
        s.params.push(AbiParam::new(I64));
    }
    s.returns.push(AbiParam::new(I64));
    s
}

impl<'a> Translator<'a> {
    /// Start a function `fn() -> exit code` in `b`: the context is in the pinned register
    /// and the platform pointer in `JitCtx::slow_plat` (both set by the trampoline).
    ///
    /// Helpers are called in `call_conv`; the block itself has the tail calling convention
    /// so its exits can jump into a successor block. `links` is the block's [`Link`] array
    /// when it may chain.
    pub(crate) fn new(
        mut b: FunctionBuilder<'a>,
        call_conv: CallConv,
        slow: SlowPaths,
        long: bool,
        links: Option<*const [Link; LINKS_PER_BLOCK]>,
        ind_cache: *const Link,
    ) -> Self {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let ctx = b.ins().get_pinned_reg(I64);
        let regs: [Variable; 16] = std::array::from_fn(|_| b.declare_var(I64));
        let entry_flags = b.ins().load(I64, MemFlagsData::trusted(), ctx, OFF_RFLAGS);
        let stop = b.declare_var(I64);
        let zero = b.ins().iconst(I64, 0);
        b.def_var(stop, zero);
        let sigs = Sigs {
            load: b.import_signature(slow_path_signature()),
            store: b.import_signature(slow_path_signature()),
            block: b.import_signature(sig(CallConv::Tail, 0)),
            flags: b.import_signature(sig(call_conv, 1)),
            interp: b.import_signature(sig(call_conv, 5)),
        };
        Translator {
            b,
            slow,
            regs,
            dirty: 0,
            defined: 0,
            undefined_read: false,
            narrow: Vec::new(),
            long,
            flags: Flags::Mat(entry_flags),
            entry_flags,
            entry_lazy: true,
            stop,
            sigs,
            executed: 0,
            cur_ip: 0,
            stored: false,
            links: links.map(|p| p as u64),
            ind_cache: ind_cache as u64,
            flags_dead: false,
            self_loop: None,
            loop_block: 0,
            loop_allowed: true,
            count_runs: false,
            flag_vars: None,
            flags_in_vars: false,
            sse_checked: false,
        }
    }

    /// The context pointer, read from the pinned register the trampoline set (so it never
    /// occupies an allocatable register or a spill slot across the block).
    fn ctx(&mut self) -> Value {
        self.b.ins().get_pinned_reg(I64)
    }

    /// Translate a block that branches back to its start as straight code with exits
    /// (no in-function loop): the fallback when the loop's translation was refused.
    pub(crate) fn without_self_loop(mut self) -> Self {
        self.loop_allowed = false;
        self
    }

    /// Count each native jump into a successor (or round a self loop) in
    /// `JitCtx::chained_blocks`: a load, add and store per jump, for tests that report how
    /// many compiled-block runs they compared.
    pub(crate) fn counting_runs(mut self, on: bool) -> Self {
        self.count_runs = on;
        self
    }

    /// Count a native jump if [`Self::counting_runs`].
    fn count_chained_block(&mut self) {
        if self.count_runs {
            let f = MemFlagsData::trusted();
            let ctx = self.ctx();
            let jumps = self.b.ins().load(I64, f, ctx, OFF_CHAINED_BLOCKS);
            let jumps = self.b.ins().iadd_imm_s(jumps, 1);
            self.b.ins().store(f, jumps, ctx, OFF_CHAINED_BLOCKS);
        }
    }

    /// Translate `insns` (each [`supported`], or else [`interpretable`]: run through
    /// [`helper_interp`], which gets the address in `predecoded` at the same index of the
    /// interpreter's predecoded copy, kept alive as long as the code); the block then exits
    /// after the last one unless it transferred control.
    pub(crate) fn block(
        mut self,
        insns: &[Instruction],
        predecoded: &[u64],
        cfg: TargetFrontendConfig,
        region: &[RegionBlock<'_>],
    ) -> Tr<()> {
        let long = self.long;
        let native = |i: &Instruction| supported(i, long);
        // Still in the entry block: load the registers the block needs up to its first
        // interpreted instruction.
        let first = insns.iter().position(|i| !native(i)).unwrap_or(insns.len());
        self.load_regs(&insns[..first]);
        let region = if self.loop_allowed { region } else { &[] };
        if first == insns.len() && self.links.is_some() && self.loop_allowed {
            self.start_self_loop(insns, region);
        }
        let dead = dead_flag_writes(insns, long);
        let mut ended = false;
        let size = std::mem::size_of::<JitInsn>() as u64;
        let mut k = 0;
        while let Some(insn) = insns.get(k) {
            self.cur_ip = insn.ip();
            self.stored = false;
            self.flags_dead = dead.get(k).copied().unwrap_or(false);
            if !native(insn) {
                // A run of interpreted instructions is one call (their predecoded copies are
                // consecutive).
                let d = predecoded.get(k).copied().unwrap_or(0);
                let mut count = 1;
                while insns.get(k + count).is_some_and(|i| !native(i))
                    && predecoded.get(k + count) == Some(&(d + size * count as u64))
                {
                    count += 1;
                }
                let rest = insns.get(k + count..).unwrap_or(&[]);
                let until = rest.iter().position(|i| !native(i)).unwrap_or(rest.len());
                self.interp_insns(insn, d, count as u32, &rest[..until]);
                self.executed += count as u32;
                k += count;
                continue;
            }
            k += 1;
            ended = self.native_step(insn)?;
            if ended {
                break;
            }
        }
        if !ended {
            let rip = insns.last().map_or(self.cur_ip, |i| i.next_ip());
            self.exit_linked(rip, self.executed, 0);
        }
        // The region's other blocks, each from its header (reached only by in-function
        // branches), exiting through its own links as its own compiled copy would.
        let entries = self
            .self_loop
            .as_ref()
            .map(|l| l.entries.clone())
            .unwrap_or_default();
        for (m, e) in region.iter().zip(entries.iter().skip(1)) {
            self.b.switch_to_block(e.header);
            self.loop_block = e.start;
            self.enter_loop_block(m.links);
            let dead = dead_flag_writes(m.insns, long);
            let mut ended = false;
            for (k, insn) in m.insns.iter().enumerate() {
                self.cur_ip = insn.ip();
                self.stored = false;
                self.flags_dead = dead.get(k).copied().unwrap_or(false);
                ended = self.native_step(insn)?;
                if ended {
                    break;
                }
            }
            if !ended {
                let rip = m.insns.last().map_or(self.cur_ip, |i| i.next_ip());
                self.exit_linked(rip, self.executed, 0);
            }
        }
        self.b.seal_all_blocks();
        // Finished even when it is thrown away, so the builder context is left clean.
        self.b.finalize(cfg);
        if self
            .self_loop
            .as_ref()
            .is_some_and(|l| self.dirty & !l.writes != 0)
        {
            // iced's lists missed a write: an exit early in the second pass would not
            // store it. The caller translates the block again without the loop.
            return Err(Unsupported);
        }
        if self.undefined_read {
            debug_assert!(false, "a GPR read was not loaded at block entry");
            tracing::warn!(
                "JIT: block at {:#x} reads a GPR it did not load; left to the interpreter",
                insns.first().map_or(0, Instruction::ip)
            );
            return Err(Unsupported);
        }
        Ok(())
    }

    /// Translate native instruction `insn` (`cur_ip`, `stored` and `flags_dead` set for it)
    /// and count it; after a store, leave if it wrote into translated code (the interpreter
    /// would end its block there). Returns whether it ended the block (a control transfer).
    fn native_step(&mut self, insn: &Instruction) -> Tr<bool> {
        if self.insn(insn)? {
            return Ok(true);
        }
        self.executed += 1;
        if self.stored {
            let s = self.b.use_var(self.stop);
            let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, s, 0);
            self.side_exit(c, insn.next_ip(), self.executed, EXIT_STOP);
        }
        Ok(false)
    }

    /// If the block (all native, chainable) branches back to its first instruction, or
    /// `region` (blocks it leads to that lead back to it) is given, load every register the
    /// loop uses, and open a header per block: in-function branches jump there with the
    /// registers in variables, while the flags go through the context as at a chained exit
    /// (RFLAGS is read again at each header).
    fn start_self_loop(&mut self, insns: &[Instruction], region: &[RegionBlock<'_>]) {
        let Some(start) = insns.first().map(Instruction::ip) else {
            return;
        };
        let starts: Vec<u64> = std::iter::once(start)
            .chain(
                region
                    .iter()
                    .filter_map(|m| m.insns.first().map(Instruction::ip)),
            )
            .collect();
        let branches_in = |list: &[Instruction]| {
            list.iter().any(|i| {
                matches!(
                    i.op0_kind(),
                    OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
                ) && starts.contains(&i.near_branch_target())
            })
        };
        if !branches_in(insns) && !region.iter().any(|m| branches_in(m.insns)) {
            return;
        }
        let live = if self.long { 0xFFFF } else { 0xFF };
        let mut writes = written_gprs(insns);
        let mut used = 0u16;
        for m in region {
            writes |= written_gprs(m.insns);
            used |= used_gprs(m.insns);
        }
        let writes = writes & live;
        // Every register a block of the loop may read or write has a value at every header.
        let load = (writes | used) & live;
        self.load_gprs(load & !self.defined);
        self.defined |= load;
        // The index the function was entered under names it again at its back edges.
        let ctx = self.ctx();
        let entered = self
            .b
            .ins()
            .load(I64, MemFlagsData::trusted(), ctx, OFF_LAST);
        let header = self.b.create_block();
        let sites: Vec<u64> = crate::return_site(insns, start)
            .into_iter()
            .chain(
                region
                    .iter()
                    .filter_map(|m| crate::return_site(m.insns, start)),
            )
            .collect();
        let mut entries = vec![LoopEntry {
            header,
            start,
            len: insns.len() as u32,
            last: entered,
            linked: None,
            return_site: sites.contains(&start),
        }];
        for m in region {
            let h = self.b.create_block();
            let idx = self.b.ins().iconst(I64, i64::from(m.idx));
            entries.push(LoopEntry {
                header: h,
                start: m.insns.first().map_or(0, Instruction::ip),
                len: m.insns.len() as u32,
                last: idx,
                linked: m.other_page.then_some(m.idx),
                return_site: !m.other_page
                    && m.insns.first().is_some_and(|i| sites.contains(&i.ip())),
            });
        }
        // The flags as the context holds them now, into the loop's variables.
        let vars = FlagVars {
            rflags: self.b.declare_var(I64),
            op: self.b.declare_var(I64),
            a: self.b.declare_var(I64),
            b: self.b.declare_var(I64),
            res: self.b.declare_var(I64),
            cf: self.b.declare_var(I64),
        };
        for (var, off) in vars.fields() {
            let ctx = self.ctx();
            let v = self.b.ins().load(I64, MemFlagsData::trusted(), ctx, off);
            self.b.def_var(var, v);
        }
        self.flag_vars = Some(vars);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        self.self_loop = Some(SelfLoop { writes, entries });
        let links = self.links.unwrap_or(0);
        self.loop_block = start;
        self.enter_loop_block(links);
    }

    /// At a loop header: the state a block starts with (its links, nothing retired, every
    /// register the loop writes to be stored at exits, the flags in the context).
    fn enter_loop_block(&mut self, links: u64) {
        self.links = Some(links);
        self.executed = 0;
        self.dirty = self.self_loop.as_ref().map_or(0, |l| l.writes);
        self.sse_checked = false;
        let f = if let Some(vars) = self.flag_vars {
            self.flags_in_vars = true;
            self.b.use_var(vars.rflags)
        } else {
            let ctx = self.ctx();
            self.b
                .ins()
                .load(I64, MemFlagsData::trusted(), ctx, OFF_RFLAGS)
        };
        self.entry_flags = f;
        self.entry_lazy = true;
        self.flags = Flags::Mat(f);
        let zero = self.iconst(0);
        self.b.def_var(self.stop, zero);
    }

    /// The back edge of a self loop, `executed` instructions into the pass: go round again
    /// when a chained jump into the block would be allowed (chaining on, no poll due, the
    /// next pass fits the budget; for a block on another page, the exit's link names it),
    /// counting the pass as a chained block run; otherwise exit as `out` says.
    fn loop_back(&mut self, l: LoopEntry, executed: u32, out: LoopOut) {
        let f = MemFlagsData::trusted();
        let ctx = self.ctx();
        let before = self.b.ins().load(I64, f, ctx, OFF_CHAINED);
        let total = self.b.ins().iadd_imm_s(before, i64::from(executed));
        let gen = self.b.ins().load(I64, f, ctx, OFF_LINK_GEN);
        // The exit's link, if it has one.
        let link_addr = match (out, self.links) {
            (LoopOut::Link(slot), Some(links)) => {
                Some((links + (slot * std::mem::size_of::<Link>()) as u64) as i64)
            }
            _ => None,
        };
        let chaining = match (l.linked, link_addr) {
            (None, _) => self
                .b
                .ins()
                .icmp_imm_s(IntCC::NotEqual, gen, NO_LINK as i64),
            // No link to prove the mapping: never in the function.
            (Some(_), None) => self.b.ins().iconst(I8, 0),
            (Some(idx), Some(link_addr)) => {
                // A current link carries the generation, never NO_LINK.
                let link = self.b.ins().iconst(I64, link_addr);
                let link_gen = self.b.ins().load(I64, f, link, LINK_GEN);
                let current = self.b.ins().icmp(IntCC::Equal, link_gen, gen);
                let named = self.b.ins().load(I64, f, link, LINK_IDX);
                let same = self.b.ins().icmp_imm_s(IntCC::Equal, named, i64::from(idx));
                self.b.ins().band(current, same)
            }
        };
        let after = self.b.ins().iadd_imm_s(total, i64::from(l.len));
        let limit = self.b.ins().load(I64, f, ctx, OFF_LIMIT);
        let fits = self
            .b
            .ins()
            .icmp(IntCC::UnsignedLessThanOrEqual, after, limit);
        let ok = self.b.ins().band(chaining, fits);
        let exit = self.branch_out(ok, false);
        self.b.ins().store(f, total, ctx, OFF_CHAINED);
        if l.start != self.loop_block {
            self.b.ins().store(f, l.last, ctx, OFF_LAST);
        }
        self.count_chained_block();
        self.flags_to_vars();
        self.b.ins().jump(l.header, &[]);
        self.b.switch_to_block(exit);
        match out {
            LoopOut::Link(_) => {
                let r = self.iconst(l.start as i64);
                match link_addr {
                    Some(addr) => {
                        self.store_state(r);
                        let link = self.b.ins().iconst(I64, addr);
                        self.chain_or_return(link, None, executed, true);
                    }
                    None => self.exit(r, executed, EXIT_NEXT),
                }
            }
            LoopOut::Dynamic(rip) => self.exit_dynamic(rip, executed),
        }
    }

    /// Load the GPRs that `insns` (translated natively) need from the context, as their
    /// values at this point.
    fn load_regs(&mut self, insns: &[Instruction]) {
        let live = if self.long { 0xFFFF } else { 0xFF };
        let need = entry_loads(insns) & live;
        self.load_gprs(need);
        self.defined = need;
    }

    /// Load the GPRs in `mask` (bit per register) from the context into their variables.
    fn load_gprs(&mut self, mask: u16) {
        let ctx = self.ctx();
        for (i, r) in self.regs.iter().enumerate() {
            if mask & (1 << i) != 0 {
                let v =
                    self.b
                        .ins()
                        .load(I64, MemFlagsData::trusted(), ctx, OFF_GPR + 8 * i as i32);
                self.b.def_var(*r, v);
            }
        }
    }

    /// Run `count` instructions from `first` on through [`helper_interp`] (their
    /// predecoded copies consecutive from address `predecoded`): store the state an exit
    /// before `first` would (its RIP, the registers written so far, the flags), call the
    /// helper, return its exit code unless it says go on, then reload the registers the
    /// native instructions up to the next interpreted one (`next`) use, and the flags, from
    /// the context it updated.
    fn interp_insns(
        &mut self,
        first: &Instruction,
        predecoded: u64,
        count: u32,
        next: &[Instruction],
    ) {
        let rip = self.iconst(first.ip() as i64);
        self.store_state(rip);
        let callee = self.iconst(helper_interp as *const () as usize as i64);
        let d = self.iconst(predecoded as i64);
        let index = self.iconst(i64::from(self.executed));
        let count = self.iconst(i64::from(count));
        let ctx = self.ctx();
        let plat = self
            .b
            .ins()
            .load(I64, MemFlagsData::trusted(), ctx, OFF_SLOW_PLAT);
        let call =
            self.b
                .ins()
                .call_indirect(self.sigs.interp, callee, &[ctx, plat, d, index, count]);
        let r = self.b.inst_results(call)[0];
        let stop = self
            .b
            .ins()
            .icmp_imm_s(IntCC::NotEqual, r, INTERP_GO_ON as i64);
        let cont = self.branch_out(stop, true);
        // The helper stored everything, `executed` included.
        self.b.ins().return_(&[r]);
        self.b.switch_to_block(cont);
        // The context holds every register now.
        self.dirty = 0;
        self.load_regs(next);
        let ctx = self.ctx();
        let f = self
            .b
            .ins()
            .load(I64, MemFlagsData::trusted(), ctx, OFF_RFLAGS);
        self.entry_flags = f;
        self.entry_lazy = false;
        self.flags_in_vars = false;
        self.sse_checked = false;
        self.flags = Flags::Mat(f);
    }

    // --- Exits. ---

    /// Store registers, flags, RIP and the count; return `code`.
    fn exit(&mut self, rip: Value, executed: u32, code: i64) {
        self.store_state(rip);
        let n = self.b.ins().iconst(I64, i64::from(executed));
        let ctx = self.ctx();
        self.b
            .ins()
            .store(MemFlagsData::trusted(), n, ctx, OFF_EXECUTED);
        let c = self.b.ins().iconst(I64, code);
        self.b.ins().return_(&[c]);
    }

    /// The block ran to its end and continues at the constant `rip`: store the state like
    /// [`Self::exit`], then, if link `slot` names a compiled successor valid now, the chain
    /// may go on (with the successor, the call stays within `JitCtx::limit`: budget and poll),
    /// jump into it; otherwise return `EXIT_NEXT`, naming the link for the dispatcher to fill.
    fn exit_linked(&mut self, rip: u64, executed: u32, slot: usize) {
        let entry = self
            .self_loop
            .as_ref()
            .and_then(|l| l.entries.iter().find(|e| e.start == rip).copied());
        if let Some(e) = entry {
            self.loop_back(e, executed, LoopOut::Link(slot));
            return;
        }
        let Some(links) = self.links else {
            let v = self.iconst(rip as i64);
            self.exit(v, executed, EXIT_NEXT);
            return;
        };
        let r = self.iconst(rip as i64);
        self.store_state(r);
        let link = self.b.ins().iconst(
            I64,
            (links + (slot * std::mem::size_of::<Link>()) as u64) as i64,
        );
        self.chain_or_return(link, None, executed, true);
    }

    /// A RET to `rip`: at one of the function's return sites, go on at its header as a back
    /// edge would; elsewhere leave as [`Self::exit_dynamic`].
    fn exit_return(&mut self, rip: Value, executed: u32) {
        let sites: Vec<LoopEntry> = self
            .self_loop
            .as_ref()
            .map(|l| {
                l.entries
                    .iter()
                    .filter(|e| e.return_site)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        for e in sites {
            let hit = self.b.ins().icmp_imm_s(IntCC::Equal, rip, e.start as i64);
            let other = self.branch_out(hit, false);
            self.loop_back(e, executed, LoopOut::Dynamic(rip));
            self.b.switch_to_block(other);
        }
        self.exit_dynamic(rip, executed);
    }

    /// The block ran to its end and continues at the computed `rip` (RET, indirect JMP and
    /// CALL): like [`Self::exit_linked`], with the successor looked up in the indirect-branch
    /// cache (the entry whose tag is `rip`); the dispatcher fills the cache after a miss.
    fn exit_dynamic(&mut self, rip: Value, executed: u32) {
        if self.links.is_none() {
            self.exit(rip, executed, EXIT_NEXT);
            return;
        }
        self.store_state(rip);
        let hashed = self.b.ins().ushr_imm_s(rip, 12);
        let hashed = self.b.ins().bxor(hashed, rip);
        let slot = self.b.ins().band_imm_s(hashed, (IND_CACHE_SIZE - 1) as i64);
        let offset = self
            .b
            .ins()
            .imul_imm_s(slot, std::mem::size_of::<Link>() as i64);
        let link = self.b.ins().iadd_imm_s(offset, self.ind_cache as i64);
        let tag = self
            .b
            .ins()
            .load(I64, MemFlagsData::trusted(), link, LINK_TAG);
        let hit = self.b.ins().icmp(IntCC::Equal, tag, rip);
        self.chain_or_return(link, Some(hit), executed, false);
    }

    /// Jump into the successor `link` names when it is valid now (and `cond`, if given,
    /// holds) and the call with it stays within `JitCtx::limit` (budget and next poll);
    /// otherwise return `EXIT_NEXT` (naming `link` for the dispatcher to fill if `report`).
    /// The state is already stored.
    fn chain_or_return(&mut self, link: Value, cond: Option<Value>, executed: u32, report: bool) {
        let f = MemFlagsData::trusted();
        let ctx = self.ctx();
        let before = self.b.ins().load(I64, f, ctx, OFF_CHAINED);
        let total = self.b.ins().iadd_imm_s(before, i64::from(executed));
        let gen = self.b.ins().load(I64, f, link, LINK_GEN);
        let want = self.b.ins().load(I64, f, ctx, OFF_LINK_GEN);
        let valid = self.b.ins().icmp(IntCC::Equal, gen, want);
        let insns = self.b.ins().load(I64, f, link, LINK_INSNS);
        let after = self.b.ins().iadd(total, insns);
        let limit = self.b.ins().load(I64, f, ctx, OFF_LIMIT);
        let fits = self
            .b
            .ins()
            .icmp(IntCC::UnsignedLessThanOrEqual, after, limit);
        let mut ok = self.b.ins().band(valid, fits);
        if let Some(c) = cond {
            ok = self.b.ins().band(ok, c);
        }
        let chain = self.b.create_block();
        let miss = self.b.create_block();
        self.b.ins().brif(ok, chain, &[], miss, &[]);
        self.b.seal_block(chain);
        self.b.seal_block(miss);
        self.b.switch_to_block(chain);
        let ctx = self.ctx();
        self.b.ins().store(f, total, ctx, OFF_CHAINED);
        let idx = self.b.ins().load(I64, f, link, LINK_IDX);
        self.b.ins().store(f, idx, ctx, OFF_LAST);
        self.count_chained_block();
        let func = self.b.ins().load(I64, f, link, LINK_FUNC);
        self.b
            .ins()
            .return_call_indirect(self.sigs.block, func, &[]);
        self.b.switch_to_block(miss);
        let n = self.iconst(i64::from(executed));
        let ctx = self.ctx();
        self.b.ins().store(f, n, ctx, OFF_EXECUTED);
        if report {
            self.b.ins().store(f, link, ctx, OFF_MISS_LINK);
        }
        let c = self.iconst(EXIT_NEXT);
        self.b.ins().return_(&[c]);
    }

    /// Store the dirty registers, the flags and RIP to the context.
    fn store_state(&mut self, rip: Value) {
        let ctx = self.ctx();
        for i in 0..16 {
            if self.dirty & (1 << i) != 0 {
                let v = self.b.use_var(self.regs[i]);
                self.b
                    .ins()
                    .store(MemFlagsData::trusted(), v, ctx, OFF_GPR + 8 * i as i32);
            }
        }
        self.store_flags();
        self.b
            .ins()
            .store(MemFlagsData::trusted(), rip, ctx, OFF_RIP);
    }

    /// Store the flags to the context (lazily, as they are), unless it still holds them.
    fn store_flags(&mut self) {
        if self.entry_pending_any() {
            if self.flags_in_vars {
                // A loop header's flags, in variables.
                self.store_flag_vars();
            }
            // Otherwise the context still holds them.
            return;
        }
        for (off, v) in self.flag_writes() {
            let ctx = self.ctx();
            self.b.ins().store(MemFlagsData::trusted(), v, ctx, off);
        }
    }

    /// The flags are the entry flags (the context's, or a loop header's), lazy or not.
    fn entry_pending_any(&self) -> bool {
        matches!(self.flags, Flags::Mat(f) if f == self.entry_flags)
    }

    /// The flags, other than the entry flags, in the context's form: (context offset, value)
    /// for each field to write. A full value clears `flags_op`; lazy ones are left for the
    /// next block (or the dispatcher) to materialize if it reads them.
    fn flag_writes(&mut self) -> Vec<(i32, Value)> {
        match self.flags {
            Flags::Mat(f) => {
                let zero = self.iconst(0);
                vec![(OFF_RFLAGS, f), (OFF_FLAGS_OP, zero)]
            }
            Flags::Lazy {
                op,
                bits,
                a,
                b,
                res,
                cf,
            } => {
                let code = self.iconst((op.code() | u64::from(bits) << 8) as i64);
                let cf = self.b.ins().uextend(I64, cf);
                vec![
                    (OFF_FLAGS_OP, code),
                    (OFF_FLAGS_A, a),
                    (OFF_FLAGS_B, b),
                    (OFF_FLAGS_RES, res),
                    (OFF_FLAGS_CF, cf),
                ]
            }
        }
    }

    /// The flags, with the block's entry flags materialized (a helper call) if still lazy.
    fn flags_now(&mut self) -> Flags {
        if self.entry_lazy && matches!(self.flags, Flags::Mat(f) if f == self.entry_flags) {
            if self.flags_in_vars {
                // The helper materializes them from the context.
                self.store_flag_vars();
            }
            let helper = self.iconst(helper_flags as *const () as usize as i64);
            let ctx = self.ctx();
            let call = self.b.ins().call_indirect(self.sigs.flags, helper, &[ctx]);
            let f = self.b.inst_results(call)[0];
            self.flags = Flags::Mat(f);
        }
        self.flags
    }

    /// The flags now for an instruction that changes some and keeps the others, or a
    /// dummy if its flag results are dead (nothing is emitted that needs the entry flags).
    fn flags_or_dummy(&mut self) -> Value {
        if self.flags_dead {
            self.iconst(0)
        } else {
            self.flags_value()
        }
    }

    /// Make `f` the flags, unless the current instruction's flag results are dead: the
    /// flags then stay as they were (differing only in flags nobody reads).
    fn set_flags_unless_dead(&mut self, f: Value) {
        if !self.flags_dead {
            self.flags = Flags::Mat(f);
        }
    }

    /// [`Self::exit_linked`] when `cond` (i8) holds; continue in a fresh block otherwise.
    fn side_exit_linked(&mut self, cond: Value, rip: u64, executed: u32, slot: usize) {
        let cont = self.branch_out(cond, false);
        self.exit_linked(rip, executed, slot);
        self.b.switch_to_block(cont);
    }

    /// Exit to `rip` when `cond` (i8) holds; continue in a fresh block otherwise.
    fn side_exit(&mut self, cond: Value, rip: u64, executed: u32, code: i64) {
        let cont = self.branch_out(cond, true);
        let r = self.b.ins().iconst(I64, rip as i64);
        self.exit(r, executed, code);
        self.b.switch_to_block(cont);
    }

    /// Branch on `cond` (i8) to a fresh exit path (`cold`: placed out of line) and switch to
    /// it; returns the fresh block where the code goes on otherwise. Both are sealed at once:
    /// their predecessors are known, so variable lookups stay local instead of growing block
    /// parameters across the whole function.
    fn branch_out(&mut self, cond: Value, cold: bool) -> cranelift_codegen::ir::Block {
        let out = self.b.create_block();
        let cont = self.b.create_block();
        if cold {
            self.b.set_cold_block(out);
        }
        self.b.ins().brif(cond, out, &[], cont, &[]);
        self.b.seal_block(out);
        self.b.seal_block(cont);
        self.b.switch_to_block(out);
        cont
    }

    /// Exit before the current instruction for the interpreter to re-run it (a fault).
    fn fault_exit_if(&mut self, cond: Value) {
        self.side_exit(cond, self.cur_ip, self.executed, EXIT_FAULT);
    }

    // --- Registers. ---

    /// Remember that `v` is below 2^(8 * size).
    fn note_narrow(&mut self, v: Value, size: u32) {
        let i = v.as_u32() as usize;
        if self.narrow.len() <= i {
            self.narrow.resize(i + 1, 0);
        }
        self.narrow[i] = size as u8;
    }

    /// The low `size` bytes of `v`, zero-extended (a 32-bit truncation is one `mov r32, r32`
    /// rather than an AND with a 64-bit constant); nothing at all when `v` is known to fit.
    fn trunc(&mut self, v: Value, size: u32) -> Value {
        if size >= 8 {
            return v;
        }
        let known = self.narrow.get(v.as_u32() as usize).copied().unwrap_or(0);
        if known != 0 && u32::from(known) <= size {
            return v;
        }
        let r = if size == 4 {
            let w = self.b.ins().ireduce(types::I32, v);
            self.b.ins().uextend(I64, w)
        } else {
            self.b.ins().band_imm_s(v, mask(size))
        };
        self.note_narrow(r, size);
        r
    }

    fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    /// The current value of GPR `n` (< 16), which must be loaded or written by now.
    fn use_reg(&mut self, n: usize) -> Value {
        if self.defined & (1 << n) == 0 {
            self.undefined_read = true;
        }
        self.b.use_var(self.regs[n])
    }

    /// GPR `n` (< 16) now holds `v`.
    fn def_reg(&mut self, n: usize, v: Value) {
        self.b.def_var(self.regs[n], v);
        self.dirty |= 1 << n;
        self.defined |= 1 << n;
    }

    fn read_reg(&mut self, r: Register) -> Tr<Value> {
        let (n, shift, size) = gpr(r).ok_or(Unsupported)?;
        if n >= 16 {
            return Err(Unsupported);
        }
        let v = self.use_reg(n);
        let v = if shift != 0 {
            self.b.ins().ushr_imm_s(v, i64::from(shift))
        } else {
            v
        };
        Ok(self.trunc(v, size))
    }

    fn write_reg(&mut self, r: Register, v: Value) -> Tr<()> {
        let (n, shift, size) = gpr(r).ok_or(Unsupported)?;
        if n >= 16 {
            return Err(Unsupported);
        }
        let new = if size == 8 {
            v
        } else if size == 4 {
            self.trunc(v, 4)
        } else {
            let old = self.use_reg(n);
            let m = mask(size) << shift;
            let keep = self.b.ins().band_imm_s(old, !m);
            let part = self.trunc(v, size);
            let part = if shift != 0 {
                self.b.ins().ishl_imm_s(part, i64::from(shift))
            } else {
                part
            };
            self.b.ins().bor(keep, part)
        };
        self.def_reg(n, new);
        Ok(())
    }

    /// Full 64-bit value of GPR `n`.
    fn reg64(&mut self, n: usize) -> Value {
        self.use_reg(n)
    }

    fn set_reg64(&mut self, n: usize, v: Value) {
        self.def_reg(n, v);
    }

    // --- Memory. ---

    /// Effective address of the memory operand, wrapped to the address size.
    fn ea(&mut self, insn: &Instruction) -> Tr<Value> {
        let base = insn.memory_base();
        let index = insn.memory_index();
        if base == Register::RIP {
            // iced resolved it for the IP the block was decoded at, which is its RIP.
            return Ok(self.iconst(insn.memory_displacement64() as i64));
        }
        let asize = if base != Register::None {
            base.size()
        } else if index != Register::None {
            index.size()
        } else if insn.memory_displ_size() == 2 {
            2
        } else if self.long {
            8
        } else {
            4
        };
        let mut v = self.iconst(insn.memory_displacement64() as i64);
        if base != Register::None {
            let b = self.read_reg(base)?;
            v = self.b.ins().iadd(v, b);
        }
        if index != Register::None {
            let i = self.read_reg(index)?;
            let s = insn.memory_index_scale().trailing_zeros();
            let i = if s > 0 {
                self.b.ins().ishl_imm_s(i, i64::from(s))
            } else {
                i
            };
            v = self.b.ins().iadd(v, i);
        }
        Ok(if asize >= 8 {
            v
        } else {
            self.trunc(v, asize as u32)
        })
    }

    /// Segment number (ES CS SS DS FS GS order) of the memory operand and how its linear
    /// address is formed.
    fn mem_seg(&self, insn: &Instruction) -> (i64, SegKind) {
        let flat = |n| (n, SegKind::Flat);
        match insn.memory_segment() {
            Register::ES => flat(0),
            Register::CS if self.long => flat(1),
            Register::CS => (1, SegKind::Slow),
            Register::SS => flat(2),
            Register::FS if self.long => (4, SegKind::Based(OFF_SEG_BASE)),
            Register::GS if self.long => (5, SegKind::Based(OFF_SEG_BASE + 8)),
            Register::FS => (4, SegKind::Slow),
            Register::GS => (5, SegKind::Slow),
            _ => flat(3),
        }
    }

    /// The stack segment: flat in both translated modes.
    const STACK: (i64, SegKind) = (2, SegKind::Flat);

    /// Linear address of `seg:ea` for the soft-TLB probe, if the fast path applies.
    fn fast_linear(&mut self, seg: SegKind, ea: Value) -> Option<Value> {
        match seg {
            SegKind::Flat => Some(ea),
            SegKind::Based(off) => {
                let ctx = self.ctx();
                let base = self.b.ins().load(I64, MemFlagsData::trusted(), ctx, off);
                Some(self.b.ins().iadd(ea, base))
            }
            SegKind::Slow => None,
        }
    }

    /// Load `size` bytes at `seg:ea`.
    fn load_at(&mut self, seg: (i64, SegKind), ea: Value, size: u32, rmw: bool) -> Value {
        let merge = self.b.create_block();
        self.b.append_block_param(merge, I64);
        let slow = self.b.create_block();
        self.b.set_cold_block(slow);
        if let Some(lin) = self.fast_linear(seg.1, ea) {
            let fast = self.b.create_block();
            let entry = self.b.append_block_param(fast, I64);
            self.tlb_probe(lin, size, OFF_TLB_READ, TLB_READ_SHIFT, fast, slow);
            self.b.seal_block(fast);
            self.b.seal_block(slow);
            self.b.switch_to_block(fast);
            let addend = self
                .b
                .ins()
                .load(I64, MemFlagsData::trusted(), entry, OFF_TLB_READ + 8);
            let host = self.b.ins().iadd(lin, addend);
            let fl = MemFlagsData::new().with_notrap();
            let v = match size {
                1 => self.b.ins().uload8(I64, fl, host, 0),
                2 => self.b.ins().uload16(I64, fl, host, 0),
                4 => self.b.ins().uload32(fl, host, 0),
                _ => self.b.ins().load(I64, fl, host, 0),
            };
            self.note_narrow(v, size);
            self.b.ins().jump(merge, &[v.into()]);
        } else {
            self.b.ins().jump(slow, &[]);
            self.b.seal_block(slow);
        }
        self.b.switch_to_block(slow);
        let mut flags = u64::from(size);
        if rmw {
            flags |= ACC_RMW;
        }
        if seg.1 != SegKind::Slow {
            flags |= ACC_FILL;
        }
        let callee = self.iconst(self.slow.load as i64);
        let s = self.iconst(seg.0);
        let f = self.iconst(flags as i64);
        self.slow_args(&[s, ea, f]);
        self.b.ins().call_indirect(self.sigs.load, callee, &[]);
        let ctx = self.ctx();
        let v = self
            .b
            .ins()
            .load(I64, MemFlagsData::trusted(), ctx, OFF_SLOW_RESULT);
        let fault = self
            .b
            .ins()
            .load(I64, MemFlagsData::trusted(), ctx, OFF_FAULT);
        let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, fault, 0);
        self.fault_exit_if(c);
        self.b.ins().jump(merge, &[v.into()]);
        self.b.seal_block(merge);
        self.b.switch_to_block(merge);
        // Both paths give `size` bytes zero-extended.
        let v = self.b.block_params(merge)[0];
        self.note_narrow(v, size);
        v
    }

    /// Store the low `size` bytes of `v` at `seg:ea`.
    ///
    /// A write-TLB hit stores straight to host memory: the write TLB only holds pages without
    /// translated code (see `ctx::WriteTlbEntry`). A miss (a code page, MMIO, a store
    /// crossing a page) takes the interpreter's path, which reports a write into code so the
    /// block stops after this instruction as the interpreter's would.
    fn store_at(&mut self, seg: (i64, SegKind), ea: Value, size: u32, v: Value) {
        // The helpers' status goes to `merge`; the inline store, which can neither fault nor
        // hit code, goes straight on to `done`.
        let merge = self.b.create_block();
        self.b.append_block_param(merge, I64);
        self.b.set_cold_block(merge);
        let done = self.b.create_block();
        let slow = self.b.create_block();
        self.b.set_cold_block(slow);
        if let Some(lin) = self.fast_linear(seg.1, ea) {
            let plain = self.b.create_block();
            let entry = self.b.append_block_param(plain, I64);
            self.tlb_probe(lin, size, OFF_TLB_WRITE, TLB_WRITE_SHIFT, plain, slow);
            self.b.seal_block(plain);
            self.b.seal_block(slow);
            self.b.switch_to_block(plain);
            let addend = self.b.ins().load(
                I64,
                MemFlagsData::trusted(),
                entry,
                OFF_TLB_WRITE + WTLB_ADDEND,
            );
            let host = self.b.ins().iadd(lin, addend);
            let fl = MemFlagsData::new().with_notrap();
            match size {
                1 => self.b.ins().istore8(fl, v, host, 0),
                2 => self.b.ins().istore16(fl, v, host, 0),
                4 => self.b.ins().istore32(fl, v, host, 0),
                _ => self.b.ins().store(fl, v, host, 0),
            };
            self.b.ins().jump(done, &[]);
        } else {
            self.b.ins().jump(slow, &[]);
            self.b.seal_block(slow);
        }
        self.b.switch_to_block(slow);
        let mut flags = u64::from(size);
        if seg.1 != SegKind::Slow {
            flags |= ACC_FILL;
        }
        let callee = self.iconst(self.slow.store as i64);
        let s = self.iconst(seg.0);
        let f = self.iconst(flags as i64);
        self.slow_args(&[s, ea, f, v]);
        self.b.ins().call_indirect(self.sigs.store, callee, &[]);
        let ctx = self.ctx();
        let st = self
            .b
            .ins()
            .load(I64, MemFlagsData::trusted(), ctx, OFF_SLOW_RESULT);
        self.b.ins().jump(merge, &[st.into()]);
        self.b.seal_block(merge);
        self.b.switch_to_block(merge);
        let st = self.b.block_params(merge)[0];
        let c = self
            .b
            .ins()
            .icmp_imm_s(IntCC::Equal, st, STORE_FAULT as i64);
        self.fault_exit_if(c);
        let stop = self.b.ins().icmp_imm_s(IntCC::Equal, st, STORE_STOP as i64);
        let stop = self.b.ins().uextend(I64, stop);
        let old = self.b.use_var(self.stop);
        let new = self.b.ins().bor(old, stop);
        self.b.def_var(self.stop, new);
        self.b.ins().jump(done, &[]);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
        self.stored = true;
    }

    /// Store a slow path's arguments (after the context and platform) to
    /// `JitCtx::slow_args`.
    fn slow_args(&mut self, args: &[Value]) {
        let ctx = self.ctx();
        for (i, &v) in args.iter().enumerate() {
            let off = OFF_SLOW_ARGS + 8 * i as i32;
            self.b.ins().store(MemFlagsData::trusted(), v, ctx, off);
        }
    }

    /// Soft-TLB probe of the table at `table` with entries of `1 << shift` bytes, in the
    /// page's two slots (`ctx::tlb_slots`): on a hit, jump to `hit` with the entry's address
    /// minus `table`, else to `miss`. A hit needs the last byte on the tagged page, so an
    /// access crossing a page always misses.
    fn tlb_probe(
        &mut self,
        ea: Value,
        size: u32,
        table: i32,
        shift: i64,
        hit: cranelift_codegen::ir::Block,
        miss: cranelift_codegen::ir::Block,
    ) {
        let last = self.b.ins().iadd_imm_s(ea, i64::from(size) - 1);
        let want = self.b.ins().band_imm_s(last, !0xFFF);
        let page = self.b.ins().ushr_imm_s(ea, 12);
        let second = self.b.create_block();
        self.tlb_try_slot(page, want, table, shift, hit, second);
        self.b.seal_block(second);
        self.b.switch_to_block(second);
        let high = self.b.ins().ushr_imm_s(ea, 22);
        let mixed = self.b.ins().bxor(page, high);
        let mixed = self
            .b
            .ins()
            .bxor_imm_s(mixed, crate::ctx::TLB_SECOND_SALT as i64);
        self.tlb_try_slot(mixed, want, table, shift, hit, miss);
    }

    /// Probe the soft-TLB slot in the low bits of `index` for tag `want`: jump to `hit`
    /// with the entry's address minus the table's offset, or to `miss`.
    fn tlb_try_slot(
        &mut self,
        index: Value,
        want: Value,
        table: i32,
        shift: i64,
        hit: cranelift_codegen::ir::Block,
        miss: cranelift_codegen::ir::Block,
    ) {
        let slot = self
            .b
            .ins()
            .band_imm_s(index, (crate::ctx::TLB_SIZE - 1) as i64);
        let off = self.b.ins().ishl_imm_s(slot, shift);
        let ctx = self.ctx();
        let entry = self.b.ins().iadd(ctx, off);
        let tag = self
            .b
            .ins()
            .load(I64, MemFlagsData::trusted(), entry, table);
        let found = self.b.ins().icmp(IntCC::Equal, tag, want);
        self.b.ins().brif(found, hit, &[entry.into()], miss, &[]);
    }

    fn load_mem(&mut self, insn: &Instruction, size: u32, rmw: bool) -> Tr<(Value, Value)> {
        let ea = self.ea(insn)?;
        let v = {
            let seg = self.mem_seg(insn);
            self.load_at(seg, ea, size, rmw)
        };
        Ok((v, ea))
    }

    /// Read operand `i` as `size` bytes (immediates masked to `size`).
    fn read_op(&mut self, insn: &Instruction, i: u32, size: u32) -> Tr<Value> {
        match insn.op_kind(i) {
            OpKind::Register => self.read_reg(insn.op_register(i)),
            OpKind::Memory => Ok(self.load_mem(insn, size, false)?.0),
            k if is_imm(k) => {
                let v = self.iconst(insn.immediate(i) as i64 & mask(size));
                self.note_narrow(v, size);
                Ok(v)
            }
            _ => Err(Unsupported),
        }
    }

    /// Write operand 0: a register, or memory at the already computed `ea`.
    fn write_op0(&mut self, insn: &Instruction, ea: Option<Value>, size: u32, v: Value) -> Tr<()> {
        match (insn.op0_kind(), ea) {
            (OpKind::Register, _) => self.write_reg(insn.op0_register(), v),
            (OpKind::Memory, Some(ea)) => {
                let seg = self.mem_seg(insn);
                self.store_at(seg, ea, size, v);
                Ok(())
            }
            (OpKind::Memory, None) => {
                let ea = self.ea(insn)?;
                let seg = self.mem_seg(insn);
                self.store_at(seg, ea, size, v);
                Ok(())
            }
            _ => Err(Unsupported),
        }
    }

    /// Read operand 0 for read-modify-write: (value, ea if memory).
    fn read_op0_rmw(
        &mut self,
        insn: &Instruction,
        size: u32,
        rmw: bool,
    ) -> Tr<(Value, Option<Value>)> {
        if insn.op0_kind() == OpKind::Memory {
            let (v, ea) = self.load_mem(insn, size, rmw)?;
            Ok((v, Some(ea)))
        } else {
            Ok((self.read_op(insn, 0, size)?, None))
        }
    }

    // --- Flags. ---

    fn bit(&mut self, v: Value, n: i64) -> Value {
        let s = self.b.ins().ushr_imm_s(v, n);
        let s = self.b.ins().band_imm_s(s, 1);
        self.b.ins().icmp_imm_s(IntCC::NotEqual, s, 0)
    }

    fn sext(&mut self, v: Value, bits: u32) -> Value {
        let sh = 64 - i64::from(bits);
        let t = self.b.ins().ishl_imm_s(v, sh);
        self.b.ins().sshr_imm_s(t, sh)
    }

    /// The flags are still the block's entry flags, which the context may hold lazily.
    fn entry_pending(&self) -> bool {
        self.entry_lazy && matches!(self.flags, Flags::Mat(f) if f == self.entry_flags)
    }

    /// CF or ZF (`zf`) of the entry flags, read inline from the context without
    /// materializing the rest: lazy flags keep CF in `flags_cf` and the masked result in
    /// `flags_res`; otherwise RFLAGS holds them.
    fn entry_flag(&mut self, zf: bool) -> Value {
        let op = self.entry_field(OFF_FLAGS_OP);
        let lazy = self.b.ins().icmp_imm_s(IntCC::NotEqual, op, 0);
        let (from_lazy, from_rflags) = if zf {
            let res = self.entry_field(OFF_FLAGS_RES);
            let z = self.b.ins().icmp_imm_s(IntCC::Equal, res, 0);
            (z, self.bit(self.entry_flags, 6))
        } else {
            let c = self.entry_field(OFF_FLAGS_CF);
            let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, c, 0);
            (c, self.bit(self.entry_flags, 0))
        };
        self.b.ins().select(lazy, from_lazy, from_rflags)
    }

    /// A field of the entry flags' lazy state (`off`, its context offset): from the loop's
    /// variables after a loop header, else loaded from the context.
    fn entry_field(&mut self, off: i32) -> Value {
        let var = self
            .flag_vars
            .filter(|_| self.flags_in_vars)
            .and_then(|v| v.fields().into_iter().find(|f| f.1 == off));
        if let Some((var, _)) = var {
            return self.b.use_var(var);
        }
        let ctx = self.ctx();
        self.b.ins().load(I64, MemFlagsData::trusted(), ctx, off)
    }

    /// Store a loop header's flags from the loop's variables to the context.
    fn store_flag_vars(&mut self) {
        let Some(vars) = self.flag_vars else {
            return;
        };
        for (var, off) in vars.fields() {
            let v = self.b.use_var(var);
            let ctx = self.ctx();
            self.b.ins().store(MemFlagsData::trusted(), v, ctx, off);
        }
    }

    /// At a loop's back edge: put the flags in the loop's variables, in the context's form
    /// ([`Self::store_flags`] without the stores).
    fn flags_to_vars(&mut self) {
        let Some(vars) = self.flag_vars else {
            self.store_flags();
            return;
        };
        if self.entry_pending_any() {
            if !self.flags_in_vars {
                // Still the context's (no header passed yet): into the variables.
                for (var, off) in vars.fields() {
                    let ctx = self.ctx();
                    let v = self.b.ins().load(I64, MemFlagsData::trusted(), ctx, off);
                    self.b.def_var(var, v);
                }
            }
            // Otherwise still the header's: the variables hold them.
            return;
        }
        for (off, v) in self.flag_writes() {
            if let Some((var, _)) = vars.fields().into_iter().find(|f| f.1 == off) {
                self.b.def_var(var, v);
            }
        }
    }

    fn cf(&mut self) -> Value {
        if self.entry_pending() {
            return self.entry_flag(false);
        }
        match self.flags_now() {
            Flags::Mat(f) => self.bit(f, 0),
            Flags::Lazy { cf, .. } => cf,
        }
    }

    fn zf(&mut self) -> Value {
        if self.entry_pending() {
            return self.entry_flag(true);
        }
        match self.flags_now() {
            Flags::Mat(f) => self.bit(f, 6),
            Flags::Lazy { res, .. } => self.b.ins().icmp_imm_s(IntCC::Equal, res, 0),
        }
    }

    fn sf(&mut self) -> Value {
        match self.flags_now() {
            Flags::Mat(f) => self.bit(f, 7),
            Flags::Lazy { res, bits, .. } => self.bit(res, i64::from(bits) - 1),
        }
    }

    fn pf_of(&mut self, res: Value) -> Value {
        let low = self.b.ins().band_imm_s(res, 0xFF);
        let n = self.b.ins().popcnt(low);
        let n = self.b.ins().band_imm_s(n, 1);
        self.b.ins().icmp_imm_s(IntCC::Equal, n, 0)
    }

    fn pf(&mut self) -> Value {
        match self.flags_now() {
            Flags::Mat(f) => self.bit(f, 2),
            Flags::Lazy { res, .. } => self.pf_of(res),
        }
    }

    fn of(&mut self) -> Value {
        match self.flags_now() {
            Flags::Mat(f) => self.bit(f, 11),
            Flags::Lazy {
                op,
                bits,
                a,
                b,
                res,
                ..
            } => {
                let top = i64::from(bits) - 1;
                match op {
                    FlagOp::Add => {
                        let x = self.b.ins().bxor(a, res);
                        let y = self.b.ins().bxor(b, res);
                        let z = self.b.ins().band(x, y);
                        self.bit(z, top)
                    }
                    FlagOp::Sub { .. } => {
                        let x = self.b.ins().bxor(a, b);
                        let y = self.b.ins().bxor(a, res);
                        let z = self.b.ins().band(x, y);
                        self.bit(z, top)
                    }
                    FlagOp::Logic => self.b.ins().iconst(I8, 0),
                    FlagOp::Inc => self.b.ins().icmp_imm_s(IntCC::Equal, res, 1 << top),
                    FlagOp::Dec => {
                        self.b
                            .ins()
                            .icmp_imm_s(IntCC::Equal, res, (1i64 << top).wrapping_sub(1))
                    }
                }
            }
        }
    }

    /// RFLAGS from the entry value's system bits and the given arithmetic flags (i8 each).
    fn compose(
        &mut self,
        cf: Value,
        pf: Value,
        af: Value,
        zf: Value,
        sf: Value,
        of: Value,
    ) -> Value {
        let mut f = self.b.ins().band_imm_s(self.entry_flags, !ARITH);
        for (v, sh) in [(cf, 0), (pf, 2), (af, 4), (zf, 6), (sf, 7), (of, 11)] {
            let w = self.b.ins().uextend(I64, v);
            let w = if sh > 0 {
                self.b.ins().ishl_imm_s(w, sh)
            } else {
                w
            };
            f = self.b.ins().bor(f, w);
        }
        f
    }

    /// The full RFLAGS value now (not cached: may be emitted on a side path).
    ///
    /// Lazy flags are built in place with shifts and masks rather than one i8 per flag (this
    /// runs at every block exit): AF is bit 4 of `a ^ b ^ res` (the carry or borrow into bit
    /// 4) and OF the top bit of `(a ^ res) & (b ^ res)` for additions or `(a ^ b) & (a ^ res)`
    /// for subtractions, moved to bit 11. INC and DEC are the addition and subtraction of 1
    /// (their `b`), so the same formulas give their AF and OF.
    fn flags_value(&mut self) -> Value {
        let (op, bits, a, b, res, cf) = match self.flags_now() {
            Flags::Mat(f) => return f,
            Flags::Lazy {
                op,
                bits,
                a,
                b,
                res,
                cf,
            } => (op, bits, a, b, res, cf),
        };
        let top = i64::from(bits) - 1;
        let base = self.b.ins().band_imm_s(self.entry_flags, !ARITH);
        let c = self.b.ins().uextend(I64, cf);
        let mut f = self.b.ins().bor(base, c);
        // PF: the low byte has an even number of set bits.
        let low = self.b.ins().band_imm_s(res, 0xFF);
        let n = self.b.ins().popcnt(low);
        let n = self.b.ins().band_imm_s(n, 1);
        let p = self.b.ins().bxor_imm_s(n, 1);
        let p = self.b.ins().ishl_imm_s(p, 2);
        f = self.b.ins().bor(f, p);
        let z = self.b.ins().icmp_imm_s(IntCC::Equal, res, 0);
        let z = self.b.ins().uextend(I64, z);
        let z = self.b.ins().ishl_imm_s(z, 6);
        f = self.b.ins().bor(f, z);
        // SF: bit `top` of the result (the higher ones are clear) to bit 7.
        let sf = self.b.ins().ushr_imm_s(res, top - 7);
        let sf = self.b.ins().band_imm_s(sf, 0x80);
        f = self.b.ins().bor(f, sf);
        let add = match op {
            FlagOp::Logic => return f,
            FlagOp::Add | FlagOp::Inc => true,
            FlagOp::Sub { .. } | FlagOp::Dec => false,
        };
        let x = self.b.ins().bxor(a, b);
        let x = self.b.ins().bxor(x, res);
        let af = self.b.ins().band_imm_s(x, 0x10);
        f = self.b.ins().bor(f, af);
        let (x, y) = if add {
            (self.b.ins().bxor(a, res), self.b.ins().bxor(b, res))
        } else {
            (self.b.ins().bxor(a, b), self.b.ins().bxor(a, res))
        };
        let o = self.b.ins().band(x, y);
        let o = if top >= 11 {
            self.b.ins().ushr_imm_s(o, top - 11)
        } else {
            self.b.ins().ishl_imm_s(o, 11 - top)
        };
        let o = self.b.ins().band_imm_s(o, 0x800);
        self.b.ins().bor(f, o)
    }

    /// Condition code `cc` as an i8 (SDM Vol. 1 App. B).
    fn cond(&mut self, cc: u8) -> Value {
        let neg = cc & 1 != 0;
        // One comparison, negated in place for the odd codes (a compare feeding a branch
        // becomes cmp + jcc).
        let cmp = |c: IntCC| if neg { c.complement() } else { c };
        if self.entry_pending() && matches!(cc >> 1, 1..=3) {
            // B, E, BE and their negations need only CF and ZF: read inline.
            let r = match cc >> 1 {
                1 => self.cf(),
                2 => self.zf(),
                _ => {
                    let c = self.cf();
                    let z = self.zf();
                    self.b.ins().bor(c, z)
                }
            };
            return if neg {
                self.b.ins().bxor_imm_s(r, 1)
            } else {
                r
            };
        }
        let direct = match self.flags_now() {
            Flags::Lazy {
                op: FlagOp::Sub { plain: true },
                bits,
                a,
                b,
                ..
            } => match cc >> 1 {
                1 => Some(self.b.ins().icmp(cmp(IntCC::UnsignedLessThan), a, b)),
                2 => Some(self.b.ins().icmp(cmp(IntCC::Equal), a, b)),
                3 => Some(self.b.ins().icmp(cmp(IntCC::UnsignedLessThanOrEqual), a, b)),
                6 | 7 => {
                    let sa = self.sext(a, bits);
                    let sb = self.sext(b, bits);
                    let c = if cc >> 1 == 6 {
                        IntCC::SignedLessThan
                    } else {
                        IntCC::SignedLessThanOrEqual
                    };
                    Some(self.b.ins().icmp(cmp(c), sa, sb))
                }
                _ => None,
            },
            Flags::Lazy { res, .. } if cc >> 1 == 2 => {
                Some(self.b.ins().icmp_imm_s(cmp(IntCC::Equal), res, 0))
            }
            _ => None,
        };
        if let Some(v) = direct {
            return v;
        }
        let r = match cc >> 1 {
            0 => self.of(),
            1 => self.cf(),
            2 => self.zf(),
            3 => {
                let c = self.cf();
                let z = self.zf();
                self.b.ins().bor(c, z)
            }
            4 => self.sf(),
            5 => self.pf(),
            6 => {
                let s = self.sf();
                let o = self.of();
                self.b.ins().bxor(s, o)
            }
            _ => {
                let s = self.sf();
                let o = self.of();
                let x = self.b.ins().bxor(s, o);
                let z = self.zf();
                self.b.ins().bor(x, z)
            }
        };
        if neg {
            self.b.ins().bxor_imm_s(r, 1)
        } else {
            r
        }
    }

    /// Flags of a shift or multiply result: given CF/OF, SZP from `res`, AF clear.
    fn set_flags_szp(&mut self, res: Value, bits: u32, cf: Value, of: Value) {
        let zf = self.b.ins().icmp_imm_s(IntCC::Equal, res, 0);
        let sf = self.bit(res, i64::from(bits) - 1);
        let pf = self.pf_of(res);
        let af = self.b.ins().iconst(I8, 0);
        let f = self.compose(cf, pf, af, zf, sf, of);
        self.flags = Flags::Mat(f);
    }

    // --- Instructions. ---

    /// Emit one instruction. Returns true if it ended the block (control transfer exit).
    fn insn(&mut self, insn: &Instruction) -> Tr<bool> {
        use Mnemonic as M;
        if let Some(form) = sse_form(insn) {
            self.sse(insn, form)?;
            return Ok(false);
        }
        let m = insn.mnemonic();
        match m {
            M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test => {
                self.alu(insn, m)?
            }
            M::Inc | M::Dec => {
                let size = op_size(insn, 0);
                let (a, ea) = self.read_op0_rmw(insn, size, true)?;
                let r = if m == M::Inc {
                    self.b.ins().iadd_imm_s(a, 1)
                } else {
                    self.b.ins().iadd_imm_s(a, -1)
                };
                let r = self.trunc(r, size);
                self.write_op0(insn, ea, size, r)?;
                let cf = self.cf();
                let one = self.iconst(1);
                self.flags = Flags::Lazy {
                    op: if m == M::Inc {
                        FlagOp::Inc
                    } else {
                        FlagOp::Dec
                    },
                    bits: size * 8,
                    a,
                    b: one,
                    res: r,
                    cf,
                };
            }
            M::Neg => {
                let size = op_size(insn, 0);
                let (a, ea) = self.read_op0_rmw(insn, size, true)?;
                let zero = self.iconst(0);
                let r = self.b.ins().isub(zero, a);
                let r = self.trunc(r, size);
                self.write_op0(insn, ea, size, r)?;
                let cf = self.b.ins().icmp_imm_s(IntCC::NotEqual, a, 0);
                self.flags = Flags::Lazy {
                    op: FlagOp::Sub { plain: true },
                    bits: size * 8,
                    a: zero,
                    b: a,
                    res: r,
                    cf,
                };
            }
            M::Not => {
                let size = op_size(insn, 0);
                let (a, ea) = self.read_op0_rmw(insn, size, true)?;
                let r = self.b.ins().bxor_imm_s(a, mask(size));
                self.write_op0(insn, ea, size, r)?;
            }
            M::Mov => {
                let size = op_size(insn, 0);
                let v = self.read_op(insn, 1, size)?;
                self.write_op0(insn, None, size, v)?;
            }
            M::Movzx | M::Movsx => {
                let src_size = op_size(insn, 1);
                let v = self.read_op(insn, 1, src_size)?;
                let v = if m == M::Movsx {
                    self.sext(v, src_size * 8)
                } else {
                    v
                };
                self.write_reg(insn.op0_register(), v)?;
            }
            M::Lea => {
                let ea = self.ea(insn)?;
                self.write_reg(insn.op0_register(), ea)?;
            }
            M::Movsxd => {
                let v = self.read_op(insn, 1, 4)?;
                let v = self.sext(v, 32);
                self.write_reg(insn.op0_register(), v)?;
            }
            M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror => {
                let by_cl = insn.op_count() == 2 && insn.op_kind(1) == OpKind::Register;
                if by_cl || matches!(m, M::Rol | M::Ror) {
                    self.shift_var(insn, m)?
                } else {
                    self.shift(insn, m)?
                }
            }
            M::Bt | M::Bts | M::Btr | M::Btc => self.bit_test(insn, m)?,
            M::Bsf | M::Bsr => {
                let size = op_size(insn, 0);
                let v = self.read_op(insn, 1, size)?;
                let (n, _, _) = gpr(insn.op0_register()).ok_or(Unsupported)?;
                let idx = if m == M::Bsf {
                    self.b.ins().ctz(v)
                } else {
                    let l = self.b.ins().clz(v);
                    let c = self.iconst(63);
                    self.b.ins().isub(c, l)
                };
                let zero = self.b.ins().icmp_imm_s(IntCC::Equal, v, 0);
                let old = self.reg64(n);
                self.write_reg(insn.op0_register(), idx)?;
                let new = self.reg64(n);
                let r = self.b.ins().select(zero, old, new);
                self.set_reg64(n, r);
                let f = self.flags_or_dummy();
                let set = self.b.ins().bor_imm_s(f, 0x40);
                let clear = self.b.ins().band_imm_s(f, !0x40);
                let f = self.b.ins().select(zero, set, clear);
                self.set_flags_unless_dead(f);
            }
            M::Imul if insn.op_count() == 1 => self.mul1(insn, true)?,
            M::Mul => self.mul1(insn, false)?,
            M::Imul => {
                let size = op_size(insn, 0);
                let bits = size * 8;
                let (a, b) = if insn.op_count() == 2 {
                    let b = self.read_op(insn, 1, size)?;
                    (self.read_reg(insn.op0_register())?, b)
                } else {
                    let a = self.read_op(insn, 1, size)?;
                    (a, self.iconst(insn.immediate(2) as i64 & mask(size)))
                };
                let sa = self.sext(a, bits);
                let sb = self.sext(b, bits);
                let r = self.b.ins().imul(sa, sb);
                let (low, over) = if size == 8 {
                    let hi = self.b.ins().smulhi(sa, sb);
                    let sign = self.b.ins().sshr_imm_s(r, 63);
                    (r, self.b.ins().icmp(IntCC::NotEqual, hi, sign))
                } else {
                    let low = self.trunc(r, size);
                    let back = self.sext(low, bits);
                    (low, self.b.ins().icmp(IntCC::NotEqual, back, r))
                };
                self.write_reg(insn.op0_register(), low)?;
                self.set_flags_szp(low, bits, over, over);
            }
            M::Push => {
                let size = match insn.code() {
                    Code::Push_r16 => 2,
                    Code::Push_r64 | Code::Pushq_imm32 | Code::Pushq_imm8 => 8,
                    _ => 4,
                };
                let v = self.read_op(insn, 0, size)?;
                self.push(v, size);
            }
            M::Pop => {
                let size = op_size(insn, 0);
                let sp = self.stack_ptr(0);
                let v = self.load_at(Self::STACK, sp, size, false);
                self.adjust_sp(i64::from(size));
                self.write_reg(insn.op0_register(), v)?;
            }
            M::Call => {
                let w = self.branch_size();
                let target = if matches!(insn.code(), Code::Call_rm32 | Code::Call_rm64) {
                    let t = self.read_op(insn, 0, w)?;
                    self.check_target(t);
                    t
                } else {
                    self.iconst(insn.near_branch_target() as i64)
                };
                let ret = self.iconst(insn.next_ip() as i64);
                self.push(ret, w);
                let n = self.executed + 1;
                if matches!(insn.code(), Code::Call_rm32 | Code::Call_rm64) {
                    self.exit_dynamic(target, n);
                } else {
                    self.exit_linked(insn.near_branch_target(), n, 0);
                }
                return Ok(true);
            }
            M::Ret => {
                let w = self.branch_size();
                let sp = self.stack_ptr(0);
                let v = self.load_at(Self::STACK, sp, w, false);
                self.check_target(v);
                let extra = if matches!(insn.code(), Code::Retnd_imm16 | Code::Retnq_imm16) {
                    i64::from(insn.immediate16())
                } else {
                    0
                };
                self.adjust_sp(i64::from(w) + extra);
                let n = self.executed + 1;
                self.exit_return(v, n);
                return Ok(true);
            }
            M::Jmp => {
                let n = self.executed + 1;
                if matches!(insn.code(), Code::Jmp_rm32 | Code::Jmp_rm64) {
                    let w = self.branch_size();
                    let t = self.read_op(insn, 0, w)?;
                    self.check_target(t);
                    self.exit_dynamic(t, n);
                } else {
                    self.exit_linked(insn.near_branch_target(), n, 0);
                }
                return Ok(true);
            }
            m if is_hint(m) => {}
            M::Xadd => {
                let size = op_size(insn, 0);
                let b = self.read_reg(insn.op1_register())?;
                let (a, ea) = self.read_op0_rmw(insn, size, true)?;
                let full = self.b.ins().iadd(a, b);
                let r = self.trunc(full, size);
                self.write_op0(insn, ea, size, r)?;
                self.write_reg(insn.op1_register(), a)?;
                if insn.op0_kind() == OpKind::Register {
                    let same = gpr(insn.op0_register()).map(|g| g.0)
                        == gpr(insn.op1_register()).map(|g| g.0);
                    if same {
                        // Same register: the sum wins.
                        self.write_reg(insn.op0_register(), r)?;
                    }
                }
                let cf = if size == 8 {
                    self.b.ins().icmp(IntCC::UnsignedLessThan, r, a)
                } else {
                    self.bit(full, i64::from(size * 8))
                };
                self.flags = Flags::Lazy {
                    op: FlagOp::Add,
                    bits: size * 8,
                    a,
                    b,
                    res: r,
                    cf,
                };
            }
            M::Cmpxchg => {
                let size = op_size(insn, 0);
                let acc_reg = match size {
                    1 => Register::AL,
                    2 => Register::AX,
                    4 => Register::EAX,
                    _ => Register::RAX,
                };
                let acc = self.read_reg(acc_reg)?;
                let src = self.read_reg(insn.op1_register())?;
                let (dst, ea) = self.read_op0_rmw(insn, size, true)?;
                let equal = self.b.ins().icmp(IntCC::Equal, acc, dst);
                if insn.op0_kind() == OpKind::Memory {
                    // The destination is always written (SDM Vol. 2A CMPXCHG).
                    let v = self.b.ins().select(equal, src, dst);
                    self.write_op0(insn, ea, size, v)?;
                } else {
                    let (n, _, _) = gpr(insn.op0_register()).ok_or(Unsupported)?;
                    let old = self.reg64(n);
                    self.write_reg(insn.op0_register(), src)?;
                    let new = self.reg64(n);
                    let v = self.b.ins().select(equal, new, old);
                    self.set_reg64(n, v);
                }
                let old = self.reg64(0);
                self.write_reg(acc_reg, dst)?;
                let new = self.reg64(0);
                let v = self.b.ins().select(equal, old, new);
                self.set_reg64(0, v);
                let diff = self.b.ins().isub(acc, dst);
                let res = self.trunc(diff, size);
                let cf = self.b.ins().icmp(IntCC::UnsignedLessThan, acc, dst);
                self.flags = Flags::Lazy {
                    op: FlagOp::Sub { plain: true },
                    bits: size * 8,
                    a: acc,
                    b: dst,
                    res,
                    cf,
                };
            }
            M::Bswap => {
                let size = op_size(insn, 0);
                let v = self.read_reg(insn.op0_register())?;
                let r = if size == 8 {
                    self.b.ins().bswap(v)
                } else {
                    let x = self.b.ins().ireduce(types::I32, v);
                    let x = self.b.ins().bswap(x);
                    self.b.ins().uextend(I64, x)
                };
                self.write_reg(insn.op0_register(), r)?;
            }
            M::Tzcnt | M::Lzcnt => {
                let size = op_size(insn, 0);
                let bits = i64::from(size * 8);
                let v = self.read_op(insn, 1, size)?;
                let cnt = if m == M::Tzcnt {
                    self.b.ins().ctz(v)
                } else {
                    let l = self.b.ins().clz(v);
                    self.b.ins().iadd_imm_s(l, bits - 64)
                };
                let zero = self.b.ins().icmp_imm_s(IntCC::Equal, v, 0);
                let all = self.iconst(bits);
                let n = self.b.ins().select(zero, all, cnt);
                self.write_reg(insn.op0_register(), n)?;
                let f0 = self.flags_or_dummy();
                let f = self.b.ins().band_imm_s(f0, !0x41);
                let cf = self.b.ins().uextend(I64, zero);
                let f = self.b.ins().bor(f, cf);
                let nz = self.b.ins().icmp_imm_s(IntCC::Equal, n, 0);
                let zf = self.b.ins().uextend(I64, nz);
                let zf = self.b.ins().ishl_imm_s(zf, 6);
                let f = self.b.ins().bor(f, zf);
                self.set_flags_unless_dead(f);
            }
            M::Div | M::Idiv => self.divide(insn, m == M::Idiv)?,
            M::Shld | M::Shrd => self.double_shift(insn, m == M::Shld)?,
            M::Leave => {
                // RSP ← RBP, then POP RBP; nothing changes if the pop faults.
                let w = self.branch_size();
                let rbp = self.reg64(5);
                let sp = if self.long { rbp } else { self.trunc(rbp, 4) };
                let v = self.load_at(Self::STACK, sp, w, false);
                let rsp = if self.long {
                    self.b.ins().iadd_imm_s(rbp, 8)
                } else {
                    let old = self.reg64(4);
                    let hi = self.b.ins().band_imm_s(old, !mask(4));
                    let lo = self.b.ins().iadd_imm_s(rbp, 4);
                    let lo = self.trunc(lo, 4);
                    self.b.ins().bor(hi, lo)
                };
                self.set_reg64(4, rsp);
                let r = if self.long {
                    Register::RBP
                } else {
                    Register::EBP
                };
                self.write_reg(r, v)?;
            }
            M::Xchg => {
                let size = op_size(insn, 0);
                if insn.op0_kind() == OpKind::Memory {
                    // XCHG m, r: load (with write intent), store, then the register.
                    let (a, ea) = self.read_op0_rmw(insn, size, true)?;
                    let b = self.read_reg(insn.op1_register())?;
                    self.write_op0(insn, ea, size, b)?;
                    self.write_reg(insn.op1_register(), a)?;
                } else {
                    let a = self.read_reg(insn.op0_register())?;
                    let b = self.read_op(insn, 1, size)?;
                    self.write_reg(insn.op0_register(), b)?;
                    self.write_reg(insn.op1_register(), a)?;
                }
            }
            M::Cdqe => {
                let v = self.read_reg(Register::EAX)?;
                let v = self.sext(v, 32);
                self.write_reg(Register::RAX, v)?;
            }
            M::Cqo => {
                let v = self.read_reg(Register::RAX)?;
                let v = self.b.ins().sshr_imm_s(v, 63);
                self.write_reg(Register::RDX, v)?;
            }
            M::Cbw | M::Cwde => {
                let (src, dst, bits) = if m == M::Cbw {
                    (Register::AL, Register::AX, 8)
                } else {
                    (Register::AX, Register::EAX, 16)
                };
                let v = self.read_reg(src)?;
                let v = self.sext(v, bits);
                self.write_reg(dst, v)?;
            }
            M::Cwd | M::Cdq => {
                let (src, dst, bits) = if m == M::Cwd {
                    (Register::AX, Register::DX, 16)
                } else {
                    (Register::EAX, Register::EDX, 32)
                };
                let v = self.read_reg(src)?;
                let v = self.sext(v, bits);
                let v = self.b.ins().sshr_imm_s(v, 63);
                self.write_reg(dst, v)?;
            }
            _ if insn.is_jcc_short_or_near() => {
                let c = self.cond(cc_nibble(insn));
                let n = self.executed + 1;
                let taken = insn.near_branch_target();
                self.side_exit_linked(c, taken, n, 0);
                self.exit_linked(insn.next_ip(), n, 1);
                return Ok(true);
            }
            _ if is_setcc(insn) => {
                let c = self.cond(cc_nibble(insn));
                let v = self.b.ins().uextend(I64, c);
                self.write_op0(insn, None, 1, v)?;
            }
            _ if is_cmovcc(insn) => {
                let size = op_size(insn, 0);
                let src = self.read_op(insn, 1, size)?;
                let c = self.cond(cc_nibble(insn));
                let (n, _, _) = gpr(insn.op0_register()).ok_or(Unsupported)?;
                let old = self.reg64(n);
                // A 32-bit CMOV writes (zero-extends) its destination either way.
                let old = if size == 4 { self.trunc(old, 4) } else { old };
                self.write_reg(insn.op0_register(), src)?;
                let new = self.reg64(n);
                let v = self.b.ins().select(c, new, old);
                self.set_reg64(n, v);
            }
            _ => return Err(Unsupported),
        }
        Ok(false)
    }

    // --- SSE. ---

    /// Leave the instruction to the interpreter (which raises #UD or #NM) unless SSE
    /// instructions execute now; tested once per straight stretch of code.
    fn sse_check(&mut self) {
        if self.sse_checked {
            return;
        }
        let ctx = self.ctx();
        let ok = self
            .b
            .ins()
            .load(I64, MemFlagsData::trusted(), ctx, OFF_SSE_OK);
        let off = self.b.ins().icmp_imm_s(IntCC::Equal, ok, 0);
        self.fault_exit_if(off);
        self.sse_checked = true;
    }

    /// The host address of the XMM registers and the offset of `r` there.
    fn xmm_slot(&mut self, r: Register) -> (Value, i32) {
        let ctx = self.ctx();
        let base = self
            .b
            .ins()
            .load(I64, MemFlagsData::trusted(), ctx, OFF_XMM);
        (base, 16 * (r.number() & 15) as i32)
    }

    /// XMM register `r` as (low, high) 64-bit halves.
    fn xmm_read(&mut self, r: Register) -> (Value, Value) {
        let (base, off) = self.xmm_slot(r);
        let fl = MemFlagsData::new().with_notrap();
        let lo = self.b.ins().load(I64, fl, base, off);
        let hi = self.b.ins().load(I64, fl, base, off + 8);
        (lo, hi)
    }

    fn xmm_write(&mut self, r: Register, lo: Value, hi: Value) {
        let (base, off) = self.xmm_slot(r);
        let fl = MemFlagsData::new().with_notrap();
        self.b.ins().store(fl, lo, base, off);
        self.b.ins().store(fl, hi, base, off + 8);
    }

    /// The memory operand's offset and linear address, leaving the instruction to the
    /// interpreter when `len` bytes there would wrap past 4 GiB outside 64-bit code, are
    /// not aligned to `align` bytes (#GP(0)), or (`whole_page`) cross a page: a store of two
    /// halves must not write one and then fault on the other.
    fn sse_address(
        &mut self,
        insn: &Instruction,
        len: u32,
        align: bool,
        whole_page: bool,
    ) -> Tr<Value> {
        let ea = self.ea(insn)?;
        let seg = self.mem_seg(insn);
        let lin = self.fast_linear(seg.1, ea).ok_or(Unsupported)?;
        if !self.long {
            let wraps = self.b.ins().icmp_imm_s(
                IntCC::UnsignedGreaterThan,
                ea,
                0x1_0000_0000 - i64::from(len),
            );
            self.fault_exit_if(wraps);
        }
        if align {
            let low = self.b.ins().band_imm_s(lin, 15);
            let bad = self.b.ins().icmp_imm_s(IntCC::NotEqual, low, 0);
            self.fault_exit_if(bad);
        } else if whole_page {
            let low = self.b.ins().band_imm_s(lin, 0xFFF);
            let bad =
                self.b
                    .ins()
                    .icmp_imm_s(IntCC::UnsignedGreaterThan, low, 0x1000 - i64::from(len));
            self.fault_exit_if(bad);
        }
        Ok(ea)
    }

    /// Operand `i` of 16 bytes: an XMM register or memory (all 16 bytes read, aligned per
    /// the legacy-SSE rule).
    fn xmm_operand(&mut self, insn: &Instruction, i: u32) -> Tr<(Value, Value)> {
        match insn.op_kind(i) {
            OpKind::Register => Ok(self.xmm_read(insn.op_register(i))),
            OpKind::Memory => {
                let align = sse_aligned(insn);
                let ea = self.sse_address(insn, 16, align, false)?;
                let seg = self.mem_seg(insn);
                let lo = self.load_at(seg, ea, 8, false);
                let ea8 = self.b.ins().iadd_imm_s(ea, 8);
                let hi = self.load_at(seg, ea8, 8, false);
                Ok((lo, hi))
            }
            _ => Err(Unsupported),
        }
    }

    /// Lanes of `w` bits that are equal in `a` and `b` all ones, the others zero (per 64-bit
    /// half: a lane of `a ^ b` is zero when adding the low bits' carry sets no top bit).
    fn lanes_equal(&mut self, a: Value, b: Value, w: u32) -> Value {
        let h = lane_high_bits(w);
        let x = self.b.ins().bxor(a, b);
        let low = self.b.ins().band_imm_s(x, !h);
        let t = self.b.ins().iadd_imm_s(low, !h);
        let t = self.b.ins().bor(t, x);
        let nz = self.b.ins().bnot(t);
        let z = self.b.ins().band_imm_s(nz, h);
        let z = self.b.ins().ushr_imm_s(z, i64::from(w) - 1);
        let ones = if w == 64 { -1 } else { (1i64 << w) - 1 };
        self.b.ins().imul_imm_s(z, ones)
    }

    /// Lane-wise `a + b` (or `a - b`) in lanes of `w` bits, carries kept inside each lane.
    fn lanes_add(&mut self, a: Value, b: Value, w: u32, sub: bool) -> Value {
        if w == 64 {
            return if sub {
                self.b.ins().isub(a, b)
            } else {
                self.b.ins().iadd(a, b)
            };
        }
        let h = lane_high_bits(w);
        if sub {
            // ((a | H) - (b & !H)) ^ ((a ^ !b) & H)
            let ah = self.b.ins().bor_imm_s(a, h);
            let bl = self.b.ins().band_imm_s(b, !h);
            let d = self.b.ins().isub(ah, bl);
            let nb = self.b.ins().bnot(b);
            let x = self.b.ins().bxor(a, nb);
            let x = self.b.ins().band_imm_s(x, h);
            self.b.ins().bxor(d, x)
        } else {
            // ((a & !H) + (b & !H)) ^ ((a ^ b) & H)
            let al = self.b.ins().band_imm_s(a, !h);
            let bl = self.b.ins().band_imm_s(b, !h);
            let s = self.b.ins().iadd(al, bl);
            let x = self.b.ins().bxor(a, b);
            let x = self.b.ins().band_imm_s(x, h);
            self.b.ins().bxor(s, x)
        }
    }

    /// The top bit of each byte of `v`, gathered into its low 8 bits.
    fn byte_signs(&mut self, v: Value) -> Value {
        let t = self.b.ins().band_imm_s(v, 0x8080_8080_8080_8080u64 as i64);
        let t = self.b.ins().imul_imm_s(t, 0x0002_0408_1020_4081);
        self.b.ins().ushr_imm_s(t, 56)
    }

    /// An SSE instruction of `form` (see [`sse_form`]).
    fn sse(&mut self, insn: &Instruction, form: SseForm) -> Tr<()> {
        use SseForm as F;
        self.sse_check();
        let dst = insn.op0_register();
        match form {
            F::Move => {
                if insn.op0_kind() == OpKind::Memory {
                    let (lo, hi) = self.xmm_read(insn.op1_register());
                    let align = sse_aligned(insn);
                    let ea = self.sse_address(insn, 16, align, true)?;
                    let seg = self.mem_seg(insn);
                    self.store_at(seg, ea, 8, lo);
                    let ea8 = self.b.ins().iadd_imm_s(ea, 8);
                    self.store_at(seg, ea8, 8, hi);
                } else {
                    let (lo, hi) = self.xmm_operand(insn, 1)?;
                    self.xmm_write(dst, lo, hi);
                }
            }
            F::And | F::AndNot | F::Or | F::Xor => {
                let (blo, bhi) = self.xmm_operand(insn, 1)?;
                let (alo, ahi) = self.xmm_read(dst);
                let mut op = |a: Value, b: Value| match form {
                    F::And => self.b.ins().band(a, b),
                    F::AndNot => self.b.ins().band_not(b, a),
                    F::Or => self.b.ins().bor(a, b),
                    _ => self.b.ins().bxor(a, b),
                };
                let lo = op(alo, blo);
                let hi = op(ahi, bhi);
                self.xmm_write(dst, lo, hi);
            }
            F::CmpEq(w) | F::Add(w) | F::Sub(w) => {
                let (blo, bhi) = self.xmm_operand(insn, 1)?;
                let (alo, ahi) = self.xmm_read(dst);
                let (lo, hi) = match form {
                    F::CmpEq(_) => (self.lanes_equal(alo, blo, w), self.lanes_equal(ahi, bhi, w)),
                    F::Add(_) => (
                        self.lanes_add(alo, blo, w, false),
                        self.lanes_add(ahi, bhi, w, false),
                    ),
                    _ => (
                        self.lanes_add(alo, blo, w, true),
                        self.lanes_add(ahi, bhi, w, true),
                    ),
                };
                self.xmm_write(dst, lo, hi);
            }
            F::MoveMask => {
                let (lo, hi) = self.xmm_read(insn.op1_register());
                let l = self.byte_signs(lo);
                let h = self.byte_signs(hi);
                let h = self.b.ins().ishl_imm_s(h, 8);
                let m = self.b.ins().bor(l, h);
                self.note_narrow(m, 2);
                self.write_reg(dst, m)?;
            }
            F::MoveLow => {
                let zero = self.iconst(0);
                let to_xmm = insn.op0_kind() == OpKind::Register && dst.is_xmm();
                let from_xmm = insn.op1_kind() == OpKind::Register && insn.op1_register().is_xmm();
                let size = if matches!(insn.code(), Code::Movd_xmm_rm32 | Code::Movd_rm32_xmm) {
                    4
                } else {
                    8
                };
                let v = if from_xmm {
                    let (lo, _) = self.xmm_read(insn.op1_register());
                    self.trunc(lo, size)
                } else if insn.op1_kind() == OpKind::Memory {
                    let ea = self.sse_address(insn, size, false, false)?;
                    let seg = self.mem_seg(insn);
                    self.load_at(seg, ea, size, false)
                } else {
                    self.read_op(insn, 1, size)?
                };
                if to_xmm {
                    self.xmm_write(dst, v, zero);
                } else if insn.op0_kind() == OpKind::Memory {
                    let ea = self.sse_address(insn, size, false, false)?;
                    let seg = self.mem_seg(insn);
                    self.store_at(seg, ea, size, v);
                } else {
                    self.write_reg(dst, v)?;
                }
            }
            F::MoveScalar(size) => {
                let src = insn.op1_register();
                if insn.op0_kind() == OpKind::Memory {
                    let (lo, _) = self.xmm_read(src);
                    let v = self.trunc(lo, size);
                    let ea = self.sse_address(insn, size, false, false)?;
                    let seg = self.mem_seg(insn);
                    self.store_at(seg, ea, size, v);
                } else if insn.op1_kind() == OpKind::Memory {
                    let ea = self.sse_address(insn, size, false, false)?;
                    let seg = self.mem_seg(insn);
                    let v = self.load_at(seg, ea, size, false);
                    let zero = self.iconst(0);
                    self.xmm_write(dst, v, zero);
                } else {
                    // The low `size` bytes from the source, the rest of the destination kept.
                    let (slo, _) = self.xmm_read(src);
                    let (dlo, dhi) = self.xmm_read(dst);
                    let lo = if size == 8 {
                        slo
                    } else {
                        let low = self.trunc(slo, 4);
                        let high = self.b.ins().band_imm_s(dlo, !0xFFFF_FFFF);
                        self.b.ins().bor(low, high)
                    };
                    self.xmm_write(dst, lo, dhi);
                }
            }
            F::ShuffleDwords => {
                let (lo, hi) = self.xmm_operand(insn, 1)?;
                let l0 = self.trunc(lo, 4);
                let l1 = self.b.ins().ushr_imm_s(lo, 32);
                let l2 = self.trunc(hi, 4);
                let l3 = self.b.ins().ushr_imm_s(hi, 32);
                let lanes = [l0, l1, l2, l3];
                let imm = insn.immediate8();
                let pick = |k: u32| lanes[usize::from((imm >> (2 * k)) & 3)];
                let (p0, p1, p2, p3) = (pick(0), pick(1), pick(2), pick(3));
                let p1 = self.b.ins().ishl_imm_s(p1, 32);
                let p3 = self.b.ins().ishl_imm_s(p3, 32);
                let nlo = self.b.ins().bor(p0, p1);
                let nhi = self.b.ins().bor(p2, p3);
                self.xmm_write(dst, nlo, nhi);
            }
            F::UnpackLowBytes
            | F::UnpackLowWords
            | F::UnpackLowDwords
            | F::UnpackLowQwords
            | F::UnpackHighQwords => {
                let (blo, bhi) = self.xmm_operand(insn, 1)?;
                let (alo, ahi) = self.xmm_read(dst);
                let (lo, hi) = match form {
                    F::UnpackLowBytes | F::UnpackLowWords => {
                        // Each half of the result interleaves one 32-bit half of the low
                        // quadwords: the destination's lanes in the even places.
                        let bits = if form == F::UnpackLowBytes { 8 } else { 16 };
                        let a1 = self.b.ins().ushr_imm_s(alo, 32);
                        let b1 = self.b.ins().ushr_imm_s(blo, 32);
                        let lo = self.interleave(alo, blo, bits);
                        let hi = self.interleave(a1, b1, bits);
                        (lo, hi)
                    }
                    F::UnpackLowDwords => {
                        let a0 = self.trunc(alo, 4);
                        let b0 = self.b.ins().ishl_imm_s(blo, 32);
                        let a1 = self.b.ins().ushr_imm_s(alo, 32);
                        let b1 = self.b.ins().band_imm_s(blo, !0xFFFF_FFFF);
                        (self.b.ins().bor(a0, b0), self.b.ins().bor(a1, b1))
                    }
                    F::UnpackLowQwords => (alo, blo),
                    _ => (ahi, bhi),
                };
                self.xmm_write(dst, lo, hi);
            }
        }
        Ok(())
    }

    /// The low 32 bits of `a` and `b` interleaved in lanes of `bits` (8 or 16): `a`'s lanes
    /// in the even places, `b`'s in the odd ones (PUNPCKLBW/PUNPCKLWD on one half).
    fn interleave(&mut self, a: Value, b: Value, bits: u32) -> Value {
        let a = self.spread(a, bits);
        let b = self.spread(b, bits);
        let b = self.b.ins().ishl_imm_s(b, i64::from(bits));
        self.b.ins().bor(a, b)
    }

    /// The low 32 bits of `v` with each lane of `bits` (8 or 16) moved to twice its place,
    /// zeros between.
    fn spread(&mut self, v: Value, bits: u32) -> Value {
        let v = self.trunc(v, 4);
        let t = self.b.ins().ishl_imm_s(v, 16);
        let v = self.b.ins().bor(v, t);
        let v = self.b.ins().band_imm_s(v, 0x0000_FFFF_0000_FFFF);
        if bits == 16 {
            return v;
        }
        let t = self.b.ins().ishl_imm_s(v, 8);
        let v = self.b.ins().bor(v, t);
        self.b.ins().band_imm_s(v, 0x00FF_00FF_00FF_00FF)
    }

    /// Operand size of near branches and return addresses: 8 in 64-bit code, else 4.
    fn branch_size(&self) -> u32 {
        if self.long {
            8
        } else {
            4
        }
    }

    /// The stack pointer plus `delta`, wrapped to the stack address size.
    fn stack_ptr(&mut self, delta: i64) -> Value {
        let rsp = self.reg64(4);
        let sp = self.b.ins().iadd_imm_s(rsp, delta);
        if self.long {
            sp
        } else {
            self.trunc(sp, 4)
        }
    }

    /// Exit with a fault (the interpreter raises #GP) if the branch target `t` is not
    /// canonical in 64-bit code (SDM Vol. 2A JMP); 32-bit flat code cannot leave its segment.
    fn check_target(&mut self, t: Value) {
        if self.long {
            let s = self.b.ins().ishl_imm_s(t, 16);
            let s = self.b.ins().sshr_imm_s(s, 16);
            let c = self.b.ins().icmp(IntCC::NotEqual, s, t);
            self.fault_exit_if(c);
        }
    }

    /// PUSH `v` (`size` bytes): the store first, then the stack pointer.
    fn push(&mut self, v: Value, size: u32) {
        let sp = self.stack_ptr(-i64::from(size));
        self.store_at(Self::STACK, sp, size, v);
        self.adjust_sp(-i64::from(size));
    }

    /// RSP += `delta`; outside 64-bit code ESP wraps at 32 bits and bits 32–63 of RSP are
    /// kept, as the interpreter does.
    fn adjust_sp(&mut self, delta: i64) {
        let rsp = self.reg64(4);
        let v = if self.long {
            self.b.ins().iadd_imm_s(rsp, delta)
        } else {
            let sp = self.b.ins().iadd_imm_s(rsp, delta);
            let sp = self.trunc(sp, 4);
            let hi = self.b.ins().band_imm_s(rsp, !mask(4));
            self.b.ins().bor(hi, sp)
        };
        self.set_reg64(4, v);
    }

    /// One-operand MUL/IMUL (16, 32, 64 bits): rDX:rAX = rAX × r/m; CF = OF = the upper half
    /// is needed; SZP from the low half, AF clear (the interpreter's choices).
    fn mul1(&mut self, insn: &Instruction, signed: bool) -> Tr<()> {
        let size = op_size(insn, 0);
        let bits = size * 8;
        let (ra, rd) = match size {
            2 => (Register::AX, Register::DX),
            4 => (Register::EAX, Register::EDX),
            8 => (Register::RAX, Register::RDX),
            _ => return Err(Unsupported),
        };
        let s = self.read_op(insn, 0, size)?;
        let a = self.read_reg(ra)?;
        let (low, high, over) = if size == 8 {
            let low = self.b.ins().imul(a, s);
            if signed {
                let high = self.b.ins().smulhi(a, s);
                let sign = self.b.ins().sshr_imm_s(low, 63);
                (low, high, self.b.ins().icmp(IntCC::NotEqual, high, sign))
            } else {
                let high = self.b.ins().umulhi(a, s);
                (low, high, self.b.ins().icmp_imm_s(IntCC::NotEqual, high, 0))
            }
        } else {
            let (x, y) = if signed {
                (self.sext(a, bits), self.sext(s, bits))
            } else {
                (a, s)
            };
            let r = self.b.ins().imul(x, y);
            let low = self.trunc(r, size);
            let high = self.b.ins().ushr_imm_s(r, i64::from(bits));
            let high = self.trunc(high, size);
            let over = if signed {
                let back = self.sext(low, bits);
                self.b.ins().icmp(IntCC::NotEqual, back, r)
            } else {
                self.b.ins().icmp_imm_s(IntCC::NotEqual, high, 0)
            };
            (low, high, over)
        };
        self.write_reg(ra, low)?;
        self.write_reg(rd, high)?;
        self.set_flags_szp(low, bits, over, over);
        Ok(())
    }

    /// ADD OR ADC SBB AND SUB XOR CMP TEST.
    fn alu(&mut self, insn: &Instruction, m: Mnemonic) -> Tr<()> {
        use Mnemonic as M;
        let size = op_size(insn, 0);
        let bits = size * 8;
        let writes = !matches!(m, M::Cmp | M::Test);
        let (a, ea) = self.read_op0_rmw(insn, size, writes)?;
        let b = self.read_op(insn, 1, size)?;
        let cin = if matches!(m, M::Adc | M::Sbb) {
            let c = self.cf();
            Some(self.b.ins().uextend(I64, c))
        } else {
            None
        };
        let (full, op) = match m {
            M::Add | M::Adc => {
                let s = self.b.ins().iadd(a, b);
                let s = match cin {
                    Some(c) => self.b.ins().iadd(s, c),
                    None => s,
                };
                (s, FlagOp::Add)
            }
            M::Sub | M::Sbb | M::Cmp => {
                let s = self.b.ins().isub(a, b);
                let s = match cin {
                    Some(c) => self.b.ins().isub(s, c),
                    None => s,
                };
                (
                    s,
                    FlagOp::Sub {
                        plain: cin.is_none(),
                    },
                )
            }
            M::And | M::Test => (self.b.ins().band(a, b), FlagOp::Logic),
            M::Or => (self.b.ins().bor(a, b), FlagOp::Logic),
            _ => (self.b.ins().bxor(a, b), FlagOp::Logic),
        };
        let res = self.trunc(full, size);
        if writes {
            self.write_op0(insn, ea, size, res)?;
        }
        let cf = match op {
            FlagOp::Logic => self.b.ins().iconst(I8, 0),
            FlagOp::Sub { plain: true } => self.b.ins().icmp(IntCC::UnsignedLessThan, a, b),
            FlagOp::Add if bits == 64 => {
                // Carry out of bit 63: the sum wrapped below a (or to a with a carry in).
                let lt = self.b.ins().icmp(IntCC::UnsignedLessThan, res, a);
                match cin {
                    Some(c) => {
                        let eq = self.b.ins().icmp(IntCC::Equal, res, a);
                        let c8 = self.b.ins().ireduce(I8, c);
                        let eq = self.b.ins().band(eq, c8);
                        self.b.ins().bor(lt, eq)
                    }
                    None => lt,
                }
            }
            FlagOp::Sub { .. } if bits == 64 => {
                // Borrow: b > a, or b == a with a borrow in.
                let lt = self.b.ins().icmp(IntCC::UnsignedLessThan, a, b);
                let eq = self.b.ins().icmp(IntCC::Equal, a, b);
                let c8 = match cin {
                    Some(c) => self.b.ins().ireduce(I8, c),
                    None => self.b.ins().iconst(I8, 0),
                };
                let eq = self.b.ins().band(eq, c8);
                self.b.ins().bor(lt, eq)
            }
            _ => self.bit(full, i64::from(bits)),
        };
        self.flags = Flags::Lazy {
            op,
            bits,
            a,
            b,
            res,
            cf,
        };
        Ok(())
    }

    /// A shift or rotate by a masked count of 0 changes nothing, but a 32-bit register
    /// destination is still written (zero-extended), as the interpreter does.
    fn zero_count(&mut self, insn: &Instruction, size: u32, a: Value) -> Tr<()> {
        if size == 4 && insn.op0_kind() == OpKind::Register {
            self.write_reg(insn.op0_register(), a)?;
        }
        Ok(())
    }

    /// SHL/SAL/SHR/SAR by an immediate count (or 1), with the interpreter's flag results.
    fn shift(&mut self, insn: &Instruction, m: Mnemonic) -> Tr<()> {
        use Mnemonic as M;
        let size = op_size(insn, 0);
        let bits = size * 8;
        let cmask = if size == 8 { 0x3F } else { 0x1F };
        let n = if insn.op_count() < 2 {
            1
        } else {
            u32::from(insn.immediate8()) & cmask
        };
        let (a, ea) = self.read_op0_rmw(insn, size, true)?;
        if n == 0 {
            return self.zero_count(insn, size, a);
        }
        let top = i64::from(bits) - 1;
        let zero8 = self.b.ins().iconst(I8, 0);
        let (r, cf, of) = match m {
            M::Shl | M::Sal => {
                let wide = self.b.ins().ishl_imm_s(a, i64::from(n));
                let r = self.trunc(wide, size);
                let cf = if bits == 64 {
                    self.bit(a, 64 - i64::from(n))
                } else {
                    self.bit(wide, i64::from(bits))
                };
                let msb = self.bit(r, top);
                let of = self.b.ins().bxor(msb, cf);
                (r, cf, of)
            }
            M::Shr => {
                let r = if n >= bits {
                    self.iconst(0)
                } else {
                    self.b.ins().ushr_imm_s(a, i64::from(n))
                };
                let cf = if n > bits {
                    zero8
                } else {
                    self.bit(a, i64::from(n) - 1)
                };
                let of = if n == 1 { self.bit(a, top) } else { zero8 };
                (r, cf, of)
            }
            _ => {
                let s = self.sext(a, bits);
                let r = self.b.ins().sshr_imm_s(s, i64::from(n.min(63)));
                let r = self.trunc(r, size);
                let cf = self.bit(s, i64::from((n - 1).min(63)));
                (r, cf, zero8)
            }
        };
        self.write_op0(insn, ea, size, r)?;
        self.set_flags_szp(r, bits, cf, of);
        Ok(())
    }

    /// Shifts by CL (register destinations) and rotates by 1, imm8 or CL: the count is a run
    /// time value, and a masked count of 0 keeps value and flags (a 32-bit register is still
    /// zero-extended).
    fn shift_var(&mut self, insn: &Instruction, m: Mnemonic) -> Tr<()> {
        use Mnemonic as M;
        let size = op_size(insn, 0);
        let bits = size * 8;
        let cmask: i64 = if size == 8 { 0x3F } else { 0x1F };
        let by_cl = insn.op_count() == 2 && insn.op_kind(1) == OpKind::Register;
        let n = if by_cl {
            let c = self.reg64(1);
            self.b.ins().band_imm_s(c, cmask)
        } else {
            let k = if insn.op_count() < 2 {
                1
            } else {
                i64::from(insn.immediate8()) & cmask
            };
            if k == 0 {
                let (a, _) = self.read_op0_rmw(insn, size, true)?;
                return self.zero_count(insn, size, a);
            }
            self.iconst(k)
        };
        if by_cl && insn.op0_kind() != OpKind::Register {
            return Err(Unsupported);
        }
        let (a, ea) = self.read_op0_rmw(insn, size, true)?;
        let top = i64::from(bits) - 1;
        let bits_v = self.iconst(i64::from(bits));
        let one = self.iconst(1);
        let n1 = self.b.ins().isub(n, one);
        let f0 = self.flags_or_dummy();
        let (r, f) = match m {
            M::Shl | M::Sal => {
                let wide = self.b.ins().ishl(a, n);
                let r = self.trunc(wide, size);
                let cf = if bits == 64 {
                    let k = self.b.ins().isub(bits_v, n);
                    let t = self.b.ins().ushr(a, k);
                    self.b.ins().band_imm_s(t, 1)
                } else {
                    let t = self.b.ins().ushr_imm_s(wide, i64::from(bits));
                    self.b.ins().band_imm_s(t, 1)
                };
                let msb = self.b.ins().ushr_imm_s(r, top);
                let of = self.b.ins().bxor(msb, cf);
                (r, self.szp_flags(f0, r, bits, cf, of))
            }
            M::Shr => {
                let r = self.b.ins().ushr(a, n);
                let t = self.b.ins().ushr(a, n1);
                let cf = self.b.ins().band_imm_s(t, 1);
                let is1 = self.b.ins().icmp_imm_s(IntCC::Equal, n, 1);
                let msb = self.b.ins().ushr_imm_s(a, top);
                let zero = self.iconst(0);
                let of = self.b.ins().select(is1, msb, zero);
                (r, self.szp_flags(f0, r, bits, cf, of))
            }
            M::Sar => {
                let s = self.sext(a, bits);
                let r = self.b.ins().sshr(s, n);
                let r = self.trunc(r, size);
                let t = self.b.ins().sshr(s, n1);
                let cf = self.b.ins().band_imm_s(t, 1);
                let zero = self.iconst(0);
                (r, self.szp_flags(f0, r, bits, cf, zero))
            }
            _ => {
                // ROL/ROR: k = n mod bits; for 8/16 bits a zero k rotates by nothing (the
                // out-shifted half is empty because `a` < 2^bits).
                // Cranelift's rotates work modulo the width of their type: one ROL/ROR.
                let k = self.b.ins().band_imm_s(n, i64::from(bits) - 1);
                let ty = match bits {
                    8 => I8,
                    16 => types::I16,
                    32 => types::I32,
                    _ => I64,
                };
                let x = if bits == 64 {
                    a
                } else {
                    self.b.ins().ireduce(ty, a)
                };
                let rot = if m == M::Rol {
                    self.b.ins().rotl(x, k)
                } else {
                    self.b.ins().rotr(x, k)
                };
                let r = if bits == 64 {
                    rot
                } else {
                    let r = self.b.ins().uextend(I64, rot);
                    self.note_narrow(r, size);
                    r
                };
                let msb = self.b.ins().ushr_imm_s(r, top);
                let (cf, of) = if m == M::Rol {
                    let cf = self.b.ins().band_imm_s(r, 1);
                    (cf, self.b.ins().bxor(msb, cf))
                } else {
                    let nxt = self.b.ins().ushr_imm_s(r, top - 1);
                    let nxt = self.b.ins().band_imm_s(nxt, 1);
                    (msb, self.b.ins().bxor(msb, nxt))
                };
                let f = self.b.ins().band_imm_s(f0, !0x801);
                let of = self.b.ins().ishl_imm_s(of, 11);
                let f = self.b.ins().bor(f, cf);
                (r, self.b.ins().bor(f, of))
            }
        };
        // Count 0: nothing changes (only a 32-bit register is rewritten, zero-extended).
        let zero = self.b.ins().icmp_imm_s(IntCC::Equal, n, 0);
        let r = self.b.ins().select(zero, a, r);
        let f = self.b.ins().select(zero, f0, f);
        self.write_op0(insn, ea, size, r)?;
        self.set_flags_unless_dead(f);
        Ok(())
    }

    /// DIV/IDIV r/m32 and r/m64 (SDM Vol. 2A DIV, IDIV): rAX = quotient, rDX = remainder,
    /// flags unchanged. Whatever the interpreter might fault on (a zero divisor, a quotient
    /// that does not fit) and the cases a 64-bit host division cannot do (a 128-bit dividend,
    /// a divisor of -1) exit before the instruction for the interpreter to run it.
    fn divide(&mut self, insn: &Instruction, signed: bool) -> Tr<()> {
        let size = op_size(insn, 0);
        let (ra, rd) = if size == 8 {
            (Register::RAX, Register::RDX)
        } else {
            (Register::EAX, Register::EDX)
        };
        let s = self.read_op(insn, 0, size)?;
        let lo = self.read_reg(ra)?;
        let hi = self.read_reg(rd)?;
        let zero = self.b.ins().icmp_imm_s(IntCC::Equal, s, 0);
        self.fault_exit_if(zero);
        let (q, r) = if !signed {
            let (dividend, bad) = if size == 8 {
                (lo, self.b.ins().icmp_imm_s(IntCC::NotEqual, hi, 0))
            } else {
                let h = self.b.ins().ishl_imm_s(hi, 32);
                (
                    self.b.ins().bor(h, lo),
                    self.b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, hi, s),
                )
            };
            self.fault_exit_if(bad);
            (
                self.b.ins().udiv(dividend, s),
                self.b.ins().urem(dividend, s),
            )
        } else {
            let bits = size * 8;
            let ss = self.sext(s, bits);
            let minus1 = self.b.ins().icmp_imm_s(IntCC::Equal, ss, -1);
            self.fault_exit_if(minus1);
            let dividend = if size == 8 {
                // RDX must be RAX's sign extension (a 64-bit dividend).
                let sign = self.b.ins().sshr_imm_s(lo, 63);
                let wide = self.b.ins().icmp(IntCC::NotEqual, hi, sign);
                self.fault_exit_if(wide);
                lo
            } else {
                let h = self.b.ins().ishl_imm_s(hi, 32);
                self.b.ins().bor(h, lo)
            };
            let q = self.b.ins().sdiv(dividend, ss);
            let r = self.b.ins().srem(dividend, ss);
            if size == 4 {
                let back = self.sext(q, 32);
                let bad = self.b.ins().icmp(IntCC::NotEqual, back, q);
                self.fault_exit_if(bad);
            }
            (q, r)
        };
        self.write_reg(ra, q)?;
        self.write_reg(rd, r)?;
        Ok(())
    }

    /// SHLD/SHRD r/m32/64, r, imm8/CL (SDM Vol. 2B): CF the last bit shifted out, OF the
    /// sign change, SZP from the result, AF clear; a masked count of 0 changes nothing (a
    /// 32-bit register is still zero-extended).
    fn double_shift(&mut self, insn: &Instruction, left: bool) -> Tr<()> {
        let size = op_size(insn, 0);
        let bits = size * 8;
        let cmask: i64 = if size == 8 { 0x3F } else { 0x1F };
        let by_cl = insn.op_kind(2) == OpKind::Register;
        let n = if by_cl {
            let c = self.reg64(1);
            self.b.ins().band_imm_s(c, cmask)
        } else {
            let k = i64::from(insn.immediate8()) & cmask;
            if k == 0 {
                let (a, _) = self.read_op0_rmw(insn, size, true)?;
                return self.zero_count(insn, size, a);
            }
            self.iconst(k)
        };
        let (a, ea) = self.read_op0_rmw(insn, size, true)?;
        let b = self.read_reg(insn.op1_register())?;
        let bits_v = self.iconst(i64::from(bits));
        let back = self.b.ins().isub(bits_v, n);
        let (r, cf) = if left {
            let x = self.b.ins().ishl(a, n);
            let y = self.b.ins().ushr(b, back);
            let t = self.b.ins().ushr(a, back);
            (self.b.ins().bor(x, y), self.b.ins().band_imm_s(t, 1))
        } else {
            let x = self.b.ins().ushr(a, n);
            let y = self.b.ins().ishl(b, back);
            let one = self.iconst(1);
            let n1 = self.b.ins().isub(n, one);
            let t = self.b.ins().ushr(a, n1);
            (self.b.ins().bor(x, y), self.b.ins().band_imm_s(t, 1))
        };
        let r = self.trunc(r, size);
        let x = self.b.ins().bxor(r, a);
        let of = self.b.ins().ushr_imm_s(x, i64::from(bits) - 1);
        let f0 = self.flags_or_dummy();
        let f = self.szp_flags(f0, r, bits, cf, of);
        let zero = self.b.ins().icmp_imm_s(IntCC::Equal, n, 0);
        let r = self.b.ins().select(zero, a, r);
        let f = self.b.ins().select(zero, f0, f);
        self.write_op0(insn, ea, size, r)?;
        self.set_flags_unless_dead(f);
        Ok(())
    }

    /// RFLAGS `f0` with CF/OF (0/1 as i64) given, SZP from `res`, AF clear.
    fn szp_flags(&mut self, f0: Value, res: Value, bits: u32, cf: Value, of: Value) -> Value {
        let zf = self.b.ins().icmp_imm_s(IntCC::Equal, res, 0);
        let sf = self.bit(res, i64::from(bits) - 1);
        let pf = self.pf_of(res);
        let mut f = self.b.ins().band_imm_s(f0, !ARITH);
        let cf = self.b.ins().band_imm_s(cf, 1);
        let of = self.b.ins().band_imm_s(of, 1);
        let of = self.b.ins().ishl_imm_s(of, 11);
        f = self.b.ins().bor(f, cf);
        f = self.b.ins().bor(f, of);
        for (v, sh) in [(pf, 2), (zf, 6), (sf, 7)] {
            let w = self.b.ins().uextend(I64, v);
            let w = self.b.ins().ishl_imm_s(w, sh);
            f = self.b.ins().bor(f, w);
        }
        f
    }

    /// BT/BTS/BTR/BTC with an immediate bit offset, or a register operand with a register
    /// offset: CF = the bit; the others keep their value.
    fn bit_test(&mut self, insn: &Instruction, m: Mnemonic) -> Tr<()> {
        use Mnemonic as M;
        let size = op_size(insn, 0);
        let bits = i64::from(size * 8);
        let writes = m != M::Bt;
        let bit = if insn.op_kind(1) == OpKind::Register {
            let r = self.read_reg(insn.op1_register())?;
            self.b.ins().band_imm_s(r, bits - 1)
        } else {
            self.iconst(i64::from(insn.immediate8()) % bits)
        };
        let (v, ea) = self.read_op0_rmw(insn, size, writes)?;
        let t = self.b.ins().ushr(v, bit);
        let cf = self.b.ins().band_imm_s(t, 1);
        let one = self.iconst(1);
        let sel = self.b.ins().ishl(one, bit);
        let nv = match m {
            M::Bts => Some(self.b.ins().bor(v, sel)),
            M::Btr => {
                let inv = self.b.ins().bnot(sel);
                Some(self.b.ins().band(v, inv))
            }
            M::Btc => Some(self.b.ins().bxor(v, sel)),
            _ => None,
        };
        let f0 = self.flags_or_dummy();
        if let Some(nv) = nv {
            let nv = self.trunc(nv, size);
            self.write_op0(insn, ea, size, nv)?;
        }
        let f = self.b.ins().band_imm_s(f0, !1);
        let f = self.b.ins().bor(f, cf);
        self.set_flags_unless_dead(f);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cranelift_codegen::ir::{Function, UserFuncName};
    use cranelift_codegen::settings;
    use cranelift_frontend::FunctionBuilderContext;
    use iced_x86::{Decoder, DecoderOptions};

    /// Translate `insns` as one block the way `Compiler::compile` does (IR only).
    fn translate(insns: &[Instruction], long: bool) -> Tr<()> {
        let isa = cranelift_native::builder()
            .expect("host ISA")
            .finish(settings::Flags::new(settings::builder()))
            .expect("ISA");
        let mut sig = Signature::new(isa.default_call_conv());
        sig.params.push(AbiParam::new(I64));
        sig.params.push(AbiParam::new(I64));
        sig.returns.push(AbiParam::new(I64));
        let mut func = Function::with_name_signature(UserFuncName::default(), sig);
        let mut fctx = FunctionBuilderContext::new();
        let b = FunctionBuilder::new(&mut func, &mut fctx);
        // Unchained exits (no link array): the exits' form does not change register use.
        Translator::new(
            b,
            isa.default_call_conv(),
            SlowPaths::default(),
            long,
            None,
            std::ptr::null(),
        )
        .block(insns, &vec![0; insns.len()], isa.frontend_config(), &[])
    }

    /// Translate random blocks: random bytes decoded in 32- and 64-bit code, so all operand
    /// forms, sub-registers and idioms such as `xor r, r` turn up, cut at the first
    /// instruction that is neither [`supported`] nor (with `helper`) [`interpretable`].
    /// Returns (blocks translated, blocks with an interpreted instruction between
    /// translated ones).
    fn translate_random_blocks(helper: bool) -> (u32, u32) {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut blocks, mut mixed) = (0, 0);
        for round in 0..6000 {
            let long = round % 2 == 1;
            let bytes: Vec<u8> = (0..8).flat_map(|_| next().to_le_bytes()).collect();
            let bitness = if long { 64 } else { 32 };
            let mut decoder = Decoder::with_ip(bitness, &bytes, 0x1000, DecoderOptions::NONE);
            let mut insns = Vec::new();
            while decoder.can_decode() && insns.len() < 6 {
                let insn = decoder.decode();
                if !(supported(&insn, long) || (helper && interpretable(&insn))) {
                    break;
                }
                let ends = insn.flow_control() != iced_x86::FlowControl::Next;
                insns.push(insn);
                if ends {
                    break;
                }
            }
            let native: Vec<bool> = insns.iter().map(|i| supported(i, long)).collect();
            if !native.contains(&true) {
                continue;
            }
            blocks += 1;
            let first = native.iter().position(|&n| n);
            let last = native.iter().rposition(|&n| n);
            if let (Some(a), Some(b)) = (first, last) {
                if native[a..b].contains(&false) {
                    mixed += 1;
                }
            }
            let text: Vec<String> = insns.iter().map(ToString::to_string).collect();
            assert!(
                translate(&insns, long).is_ok(),
                "{bitness}-bit block not translated: {text:?}"
            );
        }
        (blocks, mixed)
    }

    /// Every register a translation reads is loaded at block entry or written before.
    #[test]
    fn translations_read_only_loaded_or_written_registers() {
        let (blocks, _) = translate_random_blocks(false);
        assert!(
            blocks > 1000,
            "only {blocks} blocks of supported instructions"
        );
    }

    /// The same after instructions run through the interpreter helper: the registers the
    /// native instructions after one use are reloaded from the context it updated.
    #[test]
    fn translations_reload_registers_after_interpreted_instructions() {
        let (blocks, mixed) = translate_random_blocks(true);
        assert!(blocks > 1000, "only {blocks} blocks");
        assert!(
            mixed > 200,
            "only {mixed} blocks with an interpreted instruction between translated ones"
        );
    }
}
