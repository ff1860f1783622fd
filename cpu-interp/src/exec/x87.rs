//! x87 FPU instructions (Intel SDM Vol. 1 ch. 8; Vol. 2 per instruction), owned by FPU.
//!
//! The architectural store is `state.fpu` (the FXSAVE image fields): FCW, FSW (TOP in bits
//! 11–13), the abridged tag word (bit i = physical register i valid) and `st[i]` = ST(i) as
//! 80-bit little-endian values in stack order, as FXSAVE stores them; ST(i) is physical
//! register (TOP + i) mod 8, so changing TOP rotates the array.
//! The full tag word is derived from the abridged one and the register contents when FSTENV
//! and FSAVE need it (SDM Vol. 1 §8.1.7, §10.5.1.1). Numeric work is in `crate::x87`.
//!
//! Every handler checks CR0.EM/TS (#NM, SDM Vol. 3A §2.5 Table 2-2), then — for waiting
//! instructions — a pending unmasked exception (FSW.ES) which raises #MF before the
//! instruction runs (SDM Vol. 1 §8.7). With CR0.NE = 0 the platform has no FERR#/IRQ 13 path:
//! the interpreter logs that once and raises #MF as if NE were 1. Non-control instructions
//! record FIP/FCS, FDP/FDS and FOP (SDM Vol. 1 §8.1.8, §8.1.9). Outside 64-bit code `fip` and
//! `fdp` hold the 32-bit offset in bits 0–31 and the selector in bits 32–47, which is how the
//! 32-bit FXSAVE image lays out FIP/FCS and FDP/FDS.

use iced_x86::{Instruction, MemorySize, Mnemonic, OpKind, Register};
use pcvm_core::cpu_state::{cr, flags as fl};
use pcvm_core::{Platform, SegReg};
use rustc_apfloat::Round;

use super::{Decoded, Handler};
use crate::access::AccessKind;
use crate::fault::vector;
use crate::x87::transc::{self, Trig};
use crate::x87::{self as fp, sw, Cmp, Env, Op, Outcome, RealFmt};
use crate::{Fault, Interpreter};

/// The handler for an x87 instruction, or `None` if `insn` is not one.
pub(super) fn select(insn: &Instruction) -> Option<(Handler, u8)> {
    let fpu = insn.cpuid_features().iter().any(|f| {
        matches!(
            f,
            iced_x86::CpuidFeature::FPU
                | iced_x86::CpuidFeature::FPU287
                | iced_x86::CpuidFeature::FPU387
        )
    });
    if fpu {
        Some((exec, 0))
    } else {
        None
    }
}

/// WAIT/FWAIT: #NM if CR0.MP and CR0.TS; #MF if an unmasked exception is pending.
pub(super) fn fwait(
    cpu: &mut Interpreter,
    _p: &mut dyn Platform,
    _d: &Decoded,
) -> Result<(), Fault> {
    if cpu.state.cr0 & (cr::CR0_MP | cr::CR0_TS) == (cr::CR0_MP | cr::CR0_TS) {
        return Err(Fault::new(vector::NM));
    }
    cpu.fpu_pending()
}

/// Instructions that do not check for pending exceptions (SDM Vol. 1 §8.3.11).
fn non_waiting(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Fninit
            | M::Fnclex
            | M::Fnstcw
            | M::Fnstsw
            | M::Fnstenv
            | M::Fnsave
            | M::Fneni
            | M::Fndisi
            | M::Fnsetpm
    )
}

/// Control instructions: they leave FIP/FDP/FOP alone (SDM Vol. 1 §8.1.8).
fn control(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Fninit
            | M::Finit
            | M::Fnclex
            | M::Fclex
            | M::Fldcw
            | M::Fnstcw
            | M::Fstcw
            | M::Fnstsw
            | M::Fstsw
            | M::Fnstenv
            | M::Fstenv
            | M::Fldenv
            | M::Fnsave
            | M::Fsave
            | M::Frstor
            | M::Fneni
            | M::Fndisi
            | M::Fnsetpm
            | M::Feni
            | M::Fdisi
            | M::Fsetpm
    )
}

const INDEF: u128 = fp::INDEFINITE;

impl Interpreter {
    /// #MF for a pending unmasked x87 exception (FSW.ES).
    pub(crate) fn fpu_pending(&mut self) -> Result<(), Fault> {
        if self.state.fpu.fsw & sw::ES == 0 {
            return Ok(());
        }
        if self.state.cr0 & cr::CR0_NE == 0 && self.ud_logged.insert(u32::MAX) {
            tracing::warn!("x87 exception with CR0.NE=0: no FERR#/IRQ 13 path, raising #MF");
        }
        Err(Fault::new(vector::MF))
    }

    pub(super) fn top(&self) -> u8 {
        ((self.state.fpu.fsw >> sw::TOP_SHIFT) & 7) as u8
    }
    /// Change TOP, keeping `st` in stack order: the physical registers stay where they are,
    /// so the array rotates by the change.
    pub(super) fn set_top(&mut self, t: u8) {
        let old = self.top();
        let f = &mut self.state.fpu;
        f.st.rotate_left(usize::from(t.wrapping_sub(old) & 7));
        f.fsw = (f.fsw & !sw::TOP) | (u16::from(t & 7) << sw::TOP_SHIFT);
    }
    /// Physical register number of ST(i).
    fn phys(&self, i: u8) -> usize {
        usize::from((self.top() + i) & 7)
    }
    fn st_valid(&self, i: u8) -> bool {
        self.state.fpu.ftw & (1 << self.phys(i)) != 0
    }
    fn st(&self, i: u8) -> u128 {
        reg_bits(&self.state.fpu.st[usize::from(i & 7)])
    }
    fn set_st(&mut self, i: u8, v: u128) {
        let p = self.phys(i);
        self.state.fpu.st[usize::from(i & 7)][..10].copy_from_slice(&v.to_le_bytes()[..10]);
        self.state.fpu.ftw |= 1 << p;
    }
    fn push_st(&mut self, v: u128) {
        let t = self.top().wrapping_sub(1) & 7;
        self.set_top(t);
        self.set_st(0, v);
    }
    fn pop_st(&mut self) {
        let p = self.phys(0);
        self.state.fpu.ftw &= !(1 << p);
        let t = (self.top() + 1) & 7;
        self.set_top(t);
    }
    fn env(&self) -> Env {
        Env::from_fcw(self.state.fpu.fcw)
    }

    /// Record exception flags and recompute ES/B (SDM Vol. 1 §8.1.3.1). An invalid operation
    /// takes precedence over a denormal operand (SDM Vol. 1 §4.9.2).
    fn fpu_flags(&mut self, exc: u16) {
        let exc = if exc & sw::IE != 0 {
            exc & !sw::DE
        } else {
            exc
        };
        let f = &mut self.state.fpu;
        f.fsw |= exc & (sw::EXC | sw::SF);
        update_es(f);
    }
    fn set_c1(&mut self, c1: bool) {
        let f = &mut self.state.fpu;
        f.fsw = (f.fsw & !sw::C1) | if c1 { sw::C1 } else { 0 };
    }
    fn set_cc(&mut self, cc: u16) {
        let f = &mut self.state.fpu;
        f.fsw = (f.fsw & !sw::CC) | (cc & sw::CC);
    }

    /// Stack underflow (#IS with C1 = 0): returns whether the masked response applies.
    fn underflow(&mut self) -> bool {
        self.set_c1(false);
        self.fpu_flags(sw::IE | sw::SF);
        self.state.fpu.fcw & sw::IE != 0
    }
    /// Stack overflow (#IS with C1 = 1): returns whether the masked response applies.
    fn overflow(&mut self) -> bool {
        self.set_c1(true);
        self.fpu_flags(sw::IE | sw::SF);
        self.state.fpu.fcw & sw::IE != 0
    }

    /// Push a loaded value, or respond to stack overflow (masked: push the indefinite).
    fn push_checked(&mut self, o: Outcome) {
        if self.st_valid(7) {
            if self.overflow() {
                self.push_st(INDEF);
            }
            return;
        }
        self.set_c1(false);
        self.fpu_flags(o.exc);
        if o.store {
            self.push_st(o.value);
        }
    }

    /// Write an arithmetic result to ST(i) (and pop if asked) per its outcome.
    fn commit(&mut self, i: u8, o: Outcome, pop: bool) {
        self.fpu_flags(o.exc);
        if o.store {
            self.set_st(i, o.value);
            self.set_c1(o.c1);
            if pop {
                self.pop_st();
            }
        } else {
            self.set_c1(false);
        }
    }
}

fn update_es(f: &mut pcvm_core::cpu_state::FxsaveArea) {
    if f.fsw & !f.fcw & sw::EXC != 0 {
        f.fsw |= sw::ES | sw::B;
    } else {
        f.fsw &= !(sw::ES | sw::B);
    }
}

fn reg_bits(slot: &[u8; 16]) -> u128 {
    let mut b = [0u8; 16];
    b[..10].copy_from_slice(&slot[..10]);
    u128::from_le_bytes(b)
}

fn st_index(r: Register) -> u8 {
    (r as u32).wrapping_sub(Register::ST0 as u32) as u8 & 7
}

/// The ST(i) operand index of operand `k` (iced lists ST registers as operands).
fn op_st(insn: &Instruction, k: u32) -> u8 {
    if k < insn.op_count() && insn.op_kind(k) == OpKind::Register {
        st_index(insn.op_register(k))
    } else {
        0
    }
}

fn has_mem(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|k| insn.op_kind(k) == OpKind::Memory)
}

/// Execute one x87 instruction.
fn exec(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    if cpu.state.cr0 & (cr::CR0_EM | cr::CR0_TS) != 0 {
        return Err(Fault::new(vector::NM));
    }
    let m = d.insn.mnemonic();
    if !non_waiting(m) {
        cpu.fpu_pending()?;
    }
    let mem = has_mem(&d.insn);
    // FIP/FOP/FDP of the instruction, stored once it has not faulted.
    let record = if control(m) {
        None
    } else {
        Some(cpu.fpu_pointers(p, d, mem))
    };
    run(cpu, p, d, m, mem)?;
    if let Some((fip, fdp, fop)) = record {
        let f = &mut cpu.state.fpu;
        f.fip = fip;
        f.fop = fop;
        if mem {
            f.fdp = fdp;
        }
    }
    Ok(())
}

impl Interpreter {
    /// (FIP, FDP, FOP) of the current instruction.
    fn fpu_pointers(&mut self, p: &mut dyn Platform, d: &Decoded, mem: bool) -> (u64, u64, u16) {
        let long = self.state.in_64bit_code();
        let cs = u64::from(self.state.seg(SegReg::Cs).selector);
        let fip = if long {
            self.cur_rip
        } else {
            (self.cur_rip & 0xFFFF_FFFF) | (cs << 32)
        };
        let fdp = if mem {
            let off = self.ea(d);
            if long {
                off
            } else {
                (off & 0xFFFF_FFFF) | (u64::from(self.state.seg(d.seg).selector) << 32)
            }
        } else {
            0
        };
        // FOP: low 3 bits of the escape opcode and the ModR/M byte, read back from the
        // instruction bytes (already fetched, so the read cannot fault in practice; if it
        // does, FOP is recorded as 0).
        let mut bytes = [0u8; 15];
        let n = usize::from(d.len).min(15);
        let linear = self.state.seg(SegReg::Cs).base.wrapping_add(self.cur_rip);
        let linear = self.wrap_linear(linear);
        let mut fop = 0;
        if self
            .read_linear(p, linear, &mut bytes[..n], AccessKind::Execute)
            .is_ok()
        {
            if let Some(k) = bytes[..n].iter().position(|b| (0xD8..=0xDF).contains(b)) {
                if k + 1 < n {
                    fop = (u16::from(bytes[k] & 7) << 8) | u16::from(bytes[k + 1]);
                }
            }
        }
        (fip, fdp, fop)
    }

    fn mem_read<const N: usize>(
        &mut self,
        p: &mut dyn Platform,
        d: &Decoded,
    ) -> Result<[u8; N], Fault> {
        let off = self.ea(d);
        self.read_seg::<N>(p, d.seg, off)
    }
    fn mem_write<const N: usize>(
        &mut self,
        p: &mut dyn Platform,
        d: &Decoded,
        b: [u8; N],
    ) -> Result<(), Fault> {
        let off = self.ea(d);
        self.write_seg::<N>(p, d.seg, off, b)
    }
    /// Check a memory destination is writable before changing FPU state (FST to a
    /// read-only page faults with the stack unchanged).
    fn mem_probe_write(&mut self, d: &Decoded, n: u64) -> Result<(), Fault> {
        let off = self.ea(d);
        self.seg_linear(d.seg, off, n, AccessKind::Write)
            .map(|_| ())
    }

    /// A memory source operand as an extended value (reals, integers, BCD).
    fn load_mem_operand(&mut self, p: &mut dyn Platform, d: &Decoded) -> Result<Outcome, Fault> {
        let env = self.env();
        Ok(match d.insn.memory_size() {
            MemorySize::Float32 => {
                let b = self.mem_read::<4>(p, d)?;
                fp::load_real(u64::from(u32::from_le_bytes(b)), RealFmt::M32, &env)
            }
            MemorySize::Float64 => {
                let b = self.mem_read::<8>(p, d)?;
                fp::load_real(u64::from_le_bytes(b), RealFmt::M64, &env)
            }
            MemorySize::Float80 => {
                let b = self.mem_read::<10>(p, d)?;
                let mut w = [0u8; 16];
                w[..10].copy_from_slice(&b);
                Outcome::exact(u128::from_le_bytes(w))
            }
            MemorySize::Int16 => {
                let b = self.mem_read::<2>(p, d)?;
                Outcome::exact(fp::from_int(i64::from(i16::from_le_bytes(b))))
            }
            MemorySize::Int32 => {
                let b = self.mem_read::<4>(p, d)?;
                Outcome::exact(fp::from_int(i64::from(i32::from_le_bytes(b))))
            }
            MemorySize::Int64 => {
                let b = self.mem_read::<8>(p, d)?;
                Outcome::exact(fp::from_int(i64::from_le_bytes(b)))
            }
            MemorySize::Bcd => {
                let b = self.mem_read::<10>(p, d)?;
                Outcome::exact(fp::from_bcd(b))
            }
            _ => return Err(Fault::ud()),
        })
    }
}

/// Dispatch on the mnemonic.
fn run(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
    m: Mnemonic,
    mem: bool,
) -> Result<(), Fault> {
    use Mnemonic as M;
    let insn = &d.insn;
    match m {
        M::Fld | M::Fild | M::Fbld => {
            let o = if mem {
                cpu.load_mem_operand(p, d)?
            } else {
                let i = op_st(insn, 0);
                if !cpu.st_valid(i) {
                    // Underflow: the masked response pushes the indefinite (a full ST7 is
                    // not reported as overflow too, as the host CPU shows).
                    if cpu.underflow() {
                        cpu.push_st(INDEF);
                    }
                    return Ok(());
                }
                Outcome::exact(cpu.st(i))
            };
            cpu.push_checked(o);
        }
        M::Fld1 | M::Fldz | M::Fldpi | M::Fldl2e | M::Fldl2t | M::Fldlg2 | M::Fldln2 => {
            let r = fp::round_of(cpu.state.fpu.fcw);
            let v = match m {
                M::Fld1 => fp::ONE,
                M::Fldz => 0,
                M::Fldpi => fp::constant(fp::konst::PI, r),
                M::Fldl2e => fp::constant(fp::konst::L2E, r),
                M::Fldl2t => fp::constant(fp::konst::L2T, r),
                M::Fldlg2 => fp::constant(fp::konst::LG2, r),
                _ => fp::constant(fp::konst::LN2, r),
            };
            cpu.push_checked(Outcome::exact(v));
        }
        M::Fst | M::Fstp | M::Fist | M::Fistp | M::Fisttp | M::Fbstp => {
            let pop = matches!(m, M::Fstp | M::Fistp | M::Fisttp | M::Fbstp);
            store(cpu, p, d, m, mem, pop)?;
        }
        M::Fxch => {
            let i = op_st(insn, 1).max(op_st(insn, 0));
            let (v0, vi) = (cpu.st_valid(0), cpu.st_valid(i));
            if !(v0 && vi) {
                if !cpu.underflow() {
                    return Ok(());
                }
                let a = if v0 { cpu.st(0) } else { INDEF };
                let b = if vi { cpu.st(i) } else { INDEF };
                cpu.set_st(0, b);
                cpu.set_st(i, a);
                return Ok(());
            }
            let (a, b) = (cpu.st(0), cpu.st(i));
            cpu.set_st(0, b);
            cpu.set_st(i, a);
            cpu.set_c1(false);
        }
        M::Fadd | M::Faddp | M::Fiadd => arith(cpu, p, d, Op::Add, false, mem)?,
        M::Fsub | M::Fsubp | M::Fisub => arith(cpu, p, d, Op::Sub, false, mem)?,
        M::Fsubr | M::Fsubrp | M::Fisubr => arith(cpu, p, d, Op::Sub, true, mem)?,
        M::Fmul | M::Fmulp | M::Fimul => arith(cpu, p, d, Op::Mul, false, mem)?,
        M::Fdiv | M::Fdivp | M::Fidiv => arith(cpu, p, d, Op::Div, false, mem)?,
        M::Fdivr | M::Fdivrp | M::Fidivr => arith(cpu, p, d, Op::Div, true, mem)?,
        M::Fcom
        | M::Fcomp
        | M::Fcompp
        | M::Fucom
        | M::Fucomp
        | M::Fucompp
        | M::Ficom
        | M::Ficomp
        | M::Ftst => compare(cpu, p, d, m, mem)?,
        M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip => {
            let i = op_st(insn, 1);
            let pop = matches!(m, M::Fcomip | M::Fucomip);
            let quiet = matches!(m, M::Fucomi | M::Fucomip);
            if !(cpu.st_valid(0) && cpu.st_valid(i)) {
                if cpu.underflow() {
                    set_eflags_cmp(cpu, Cmp::Unordered);
                    if pop {
                        cpu.pop_st();
                    }
                }
                return Ok(());
            }
            let env = cpu.env();
            let (r, exc, ok) = fp::compare(cpu.st(0), cpu.st(i), quiet, false, &env);
            cpu.fpu_flags(exc);
            // C1 is left alone: the SDM says "set to 0", the AMD host this is tested against
            // keeps it.
            if ok {
                set_eflags_cmp(cpu, r);
                if pop {
                    cpu.pop_st();
                }
            }
        }
        M::Fxam => {
            let v = cpu.st(0);
            let c1 = if fp::is_neg(v) { sw::C1 } else { 0 };
            let cc = if cpu.st_valid(0) {
                fp::fxam_bits(v)
            } else {
                sw::C3 | sw::C0
            };
            cpu.set_cc(cc | c1);
        }
        M::Fchs | M::Fabs => {
            if !cpu.st_valid(0) {
                if cpu.underflow() {
                    cpu.set_st(0, INDEF);
                }
                return Ok(());
            }
            let v = cpu.st(0);
            let v = if m == M::Fchs {
                v ^ (1 << 79)
            } else {
                v & !(1 << 79)
            };
            cpu.set_st(0, v);
            cpu.set_c1(false);
        }
        M::Fsqrt | M::Frndint | M::F2xm1 => {
            if !cpu.st_valid(0) {
                if cpu.underflow() {
                    cpu.set_st(0, INDEF);
                }
                return Ok(());
            }
            let env = cpu.env();
            let a = cpu.st(0);
            let o = match m {
                M::Fsqrt => fp::arith(Op::Sqrt, a, a, &env),
                M::Frndint => fp::round_int(a, &env),
                _ => transc::f2xm1(a, &env),
            };
            cpu.commit(0, o, false);
        }
        M::Fscale | M::Fprem | M::Fprem1 => {
            if !(cpu.st_valid(0) && cpu.st_valid(1)) {
                if m != M::Fscale {
                    cpu.state.fpu.fsw &= !sw::C2;
                }
                if cpu.underflow() {
                    cpu.set_st(0, INDEF);
                }
                return Ok(());
            }
            let env = cpu.env();
            let (a, b) = (cpu.st(0), cpu.st(1));
            if m == M::Fscale {
                let o = fp::scale(a, b, &env);
                cpu.commit(0, o, false);
            } else {
                let (o, cc) = fp::partial_remainder(a, b, m == M::Fprem1, &env);
                cpu.fpu_flags(o.exc);
                match cc {
                    Some(cc) if o.store => cpu.set_cc(cc),
                    _ => cpu.state.fpu.fsw &= !(sw::C1 | sw::C2),
                }
                if o.store {
                    cpu.set_st(0, o.value);
                }
            }
        }
        M::Fxtract => {
            if !cpu.st_valid(0) {
                if cpu.underflow() {
                    cpu.set_st(0, INDEF);
                    cpu.push_st(INDEF);
                }
                return Ok(());
            }
            if cpu.st_valid(7) {
                if cpu.overflow() {
                    cpu.set_st(0, INDEF);
                    cpu.push_st(INDEF);
                }
                return Ok(());
            }
            let env = cpu.env();
            match fp::extract(cpu.st(0), &env) {
                Ok((e, s, exc)) => {
                    cpu.fpu_flags(exc);
                    cpu.set_st(0, e);
                    cpu.push_st(s);
                    cpu.set_c1(false);
                }
                Err(o) => {
                    cpu.fpu_flags(o.exc);
                    cpu.set_c1(false);
                    if o.store {
                        cpu.set_st(0, o.value);
                        cpu.push_st(o.value);
                    }
                }
            }
        }
        M::Fsin | M::Fcos | M::Fsincos | M::Fptan => {
            let two = matches!(m, M::Fsincos | M::Fptan);
            if !cpu.st_valid(0) {
                cpu.state.fpu.fsw &= !sw::C2;
                if cpu.underflow() {
                    cpu.set_st(0, INDEF);
                    if two {
                        cpu.push_st(INDEF);
                    }
                }
                return Ok(());
            }
            if two && cpu.st_valid(7) {
                if cpu.overflow() {
                    cpu.set_st(0, INDEF);
                    cpu.push_st(INDEF);
                }
                return Ok(());
            }
            let a = cpu.st(0);
            if !transc::trig_in_range(a) {
                // Out of range: C2 = 1, ST0 unchanged (SDM Vol. 2A FSIN).
                let f = &mut cpu.state.fpu;
                f.fsw = (f.fsw & !sw::C1) | sw::C2;
                return Ok(());
            }
            let env = cpu.env();
            let kind = match m {
                M::Fsin => Trig::Sin,
                M::Fcos => Trig::Cos,
                M::Fsincos => Trig::SinCos,
                _ => Trig::Tan,
            };
            let (first, second) = transc::trig(a, kind, &env);
            cpu.state.fpu.fsw &= !sw::C2;
            cpu.fpu_flags(first.exc | if two { second.exc } else { 0 });
            if first.store {
                cpu.set_st(0, first.value);
                cpu.set_c1(first.c1);
                if two {
                    let v = if fp::classify(a) == fp::Class::Unsupported
                        || transc_is_nan(first.value)
                    {
                        first.value
                    } else {
                        second.value
                    };
                    cpu.push_st(v);
                    if second.c1 && m == M::Fsincos {
                        cpu.set_c1(true);
                    }
                }
            } else {
                cpu.set_c1(false);
            }
        }
        M::Fpatan | M::Fyl2x | M::Fyl2xp1 => {
            if !(cpu.st_valid(0) && cpu.st_valid(1)) {
                if cpu.underflow() {
                    cpu.set_st(1, INDEF);
                    cpu.pop_st();
                }
                return Ok(());
            }
            let env = cpu.env();
            let (x, y) = (cpu.st(0), cpu.st(1));
            let o = match m {
                M::Fpatan => transc::atan2(y, x, &env),
                M::Fyl2x => transc::fyl2x(y, x, &env),
                _ => transc::fyl2xp1(y, x, &env),
            };
            cpu.commit(1, o, true);
        }
        M::Fcmovb
        | M::Fcmove
        | M::Fcmovbe
        | M::Fcmovu
        | M::Fcmovnb
        | M::Fcmovne
        | M::Fcmovnbe
        | M::Fcmovnu => {
            let i = op_st(insn, 1);
            let f = cpu.rflags();
            let (cf, zf, pf) = (f & fl::CF != 0, f & fl::ZF != 0, f & fl::PF != 0);
            let cond = match m {
                M::Fcmovb => cf,
                M::Fcmove => zf,
                M::Fcmovbe => cf || zf,
                M::Fcmovu => pf,
                M::Fcmovnb => !cf,
                M::Fcmovne => !zf,
                M::Fcmovnbe => !cf && !zf,
                _ => !pf,
            };
            if !(cpu.st_valid(0) && cpu.st_valid(i)) {
                if cpu.underflow() {
                    cpu.set_st(0, INDEF);
                }
                return Ok(());
            }
            if cond {
                let v = cpu.st(i);
                cpu.set_st(0, v);
            }
        }
        M::Finit | M::Fninit => fninit(cpu),
        M::Fclex | M::Fnclex => {
            let f = &mut cpu.state.fpu;
            f.fsw &= !(sw::EXC | sw::SF | sw::ES | sw::B);
        }
        M::Fldcw => {
            let b = cpu.mem_read::<2>(p, d)?;
            let f = &mut cpu.state.fpu;
            // Bits 6–7 and 13–15 are reserved; bit 6 reads as 1 (SDM Vol. 1 §8.1.5).
            f.fcw = (u16::from_le_bytes(b) & 0x1F3F) | 0x40;
            update_es(f);
        }
        M::Fstcw | M::Fnstcw => {
            let v = cpu.state.fpu.fcw;
            cpu.mem_write::<2>(p, d, v.to_le_bytes())?;
        }
        M::Fstsw | M::Fnstsw => {
            let v = cpu.state.fpu.fsw;
            if mem {
                cpu.mem_write::<2>(p, d, v.to_le_bytes())?;
            } else {
                cpu.state.gpr[0] = (cpu.state.gpr[0] & !0xFFFF) | u64::from(v);
            }
        }
        M::Fstenv | M::Fnstenv => {
            cpu.store_env(p, d)?;
            // All exceptions become masked after the environment is saved.
            let f = &mut cpu.state.fpu;
            f.fcw |= sw::EXC;
            update_es(f);
        }
        M::Fldenv => cpu.load_env(p, d, false)?,
        M::Fsave | M::Fnsave => {
            cpu.store_env(p, d)?;
            fninit(cpu);
        }
        M::Frstor => cpu.load_env(p, d, true)?,
        M::Ffree | M::Ffreep => {
            let i = op_st(insn, 0);
            let ph = cpu.phys(i);
            cpu.state.fpu.ftw &= !(1 << ph);
            cpu.set_c1(false);
            if m == M::Ffreep {
                cpu.pop_st();
            }
        }
        M::Fincstp | M::Fdecstp => {
            let t = if m == M::Fincstp {
                cpu.top() + 1
            } else {
                cpu.top().wrapping_sub(1)
            };
            cpu.set_top(t);
            cpu.set_c1(false);
        }
        // FNOP; the 8087/287 mode controls are no-ops on the 387 and later.
        M::Fnop | M::Fneni | M::Fndisi | M::Fnsetpm | M::Feni | M::Fdisi | M::Fsetpm => {}
        _ => return super::undefined(cpu, p, d),
    }
    Ok(())
}

fn transc_is_nan(v: u128) -> bool {
    fp::is_nan(fp::classify(v))
}

/// FNINIT state (SDM Vol. 1 §8.1.1, Table 8-1 … FINIT).
fn fninit(cpu: &mut Interpreter) {
    cpu.set_top(0);
    let f = &mut cpu.state.fpu;
    f.fcw = 0x037F;
    f.fsw = 0;
    f.ftw = 0;
    f.fop = 0;
    f.fip = 0;
    f.fdp = 0;
}

/// ZF/PF/CF from a comparison, OF/SF/AF cleared (SDM Vol. 2A FCOMI, Table 3-25).
fn set_eflags_cmp(cpu: &mut Interpreter, r: Cmp) {
    let f = match r {
        Cmp::Greater => 0,
        Cmp::Less => fl::CF,
        Cmp::Equal => fl::ZF,
        Cmp::Unordered => fl::ZF | fl::PF | fl::CF,
    };
    cpu.set_arith_flags(f);
}

fn cmp_cc(r: Cmp) -> u16 {
    match r {
        Cmp::Greater => 0,
        Cmp::Less => sw::C0,
        Cmp::Equal => sw::C3,
        Cmp::Unordered => sw::C3 | sw::C2 | sw::C0,
    }
}

/// FCOM/FCOMP/FCOMPP/FUCOM*/FICOM*/FTST.
fn compare(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
    m: Mnemonic,
    mem: bool,
) -> Result<(), Fault> {
    use Mnemonic as M;
    let pops = match m {
        M::Fcomp | M::Fucomp | M::Ficomp => 1,
        M::Fcompp | M::Fucompp => 2,
        _ => 0,
    };
    let quiet = matches!(m, M::Fucom | M::Fucomp | M::Fucompp);
    let mut b_denormal = false;
    let src = if mem {
        let o = cpu.load_mem_operand(p, d)?;
        b_denormal = o.exc & sw::DE != 0;
        // An SNaN memory operand is handled by the comparison itself.
        Some(
            if o.exc & sw::IE != 0 && fp::is_nan(fp::classify(o.value)) {
                o.value & !(1 << 62)
            } else {
                o.value
            },
        )
    } else if m == M::Ftst {
        Some(0)
    } else {
        let i = if m == M::Fcompp || m == M::Fucompp {
            1
        } else {
            op_st(&d.insn, 1).max(op_st(&d.insn, 0))
        };
        cpu.st_valid(i).then(|| cpu.st(i))
    };
    // The condition codes are written even when an unmasked exception suppresses the pop
    // (as the host CPU does).
    let Some(b) = src.filter(|_| cpu.st_valid(0)) else {
        let masked = cpu.underflow();
        cpu.set_cc(cmp_cc(Cmp::Unordered));
        if masked {
            for _ in 0..pops {
                cpu.pop_st();
            }
        }
        return Ok(());
    };
    let env = cpu.env();
    let (r, exc, ok) = fp::compare(cpu.st(0), b, quiet, b_denormal, &env);
    cpu.fpu_flags(exc);
    cpu.set_cc(cmp_cc(r));
    if ok {
        for _ in 0..pops {
            cpu.pop_st();
        }
    }
    Ok(())
}

/// The two-operand arithmetic forms: `ST0 ← ST0 op mem`, `ST(d) ← ST(d) op ST(s)` (+P pops);
/// `reverse` swaps the operands (FSUBR, FDIVR).
fn arith(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
    op: Op,
    reverse: bool,
    mem: bool,
) -> Result<(), Fault> {
    let insn = &d.insn;
    let pop = matches!(
        insn.mnemonic(),
        Mnemonic::Faddp
            | Mnemonic::Fsubp
            | Mnemonic::Fsubrp
            | Mnemonic::Fmulp
            | Mnemonic::Fdivp
            | Mnemonic::Fdivrp
    );
    let (dst, src_val, src_ok, pre_exc) = if mem {
        let o = cpu.load_mem_operand(p, d)?;
        // SNaN from a memory real: the comparison of the operand classes below re-raises IE.
        let v = if o.exc & sw::IE != 0 {
            o.value & !(1 << 62)
        } else {
            o.value
        };
        (0u8, v, true, o.exc & sw::DE)
    } else {
        let (dst, src) = if insn.op_count() >= 2 {
            (op_st(insn, 0), op_st(insn, 1))
        } else {
            (1, 0)
        };
        (dst, cpu.st(src), cpu.st_valid(src), 0)
    };
    if !(src_ok && cpu.st_valid(dst)) {
        if cpu.underflow() {
            cpu.set_st(dst, INDEF);
            if pop {
                cpu.pop_st();
            }
        }
        return Ok(());
    }
    let env = cpu.env();
    let dv = cpu.st(dst);
    // #D from a denormal memory real counts only when no NaN decides the result first.
    let special = |v: u128| {
        matches!(
            fp::classify(v),
            fp::Class::QNan | fp::Class::SNan | fp::Class::Unsupported
        )
    };
    let pre_exc = if special(dv) || special(src_val) {
        0
    } else {
        pre_exc
    };
    if pre_exc != 0 && cpu.state.fpu.fcw & sw::DE == 0 {
        cpu.fpu_flags(pre_exc);
        return Ok(());
    }
    let o = if reverse {
        fp::arith(op, src_val, dv, &env)
    } else {
        fp::arith(op, dv, src_val, &env)
    };
    let mut o = o;
    o.exc |= pre_exc;
    cpu.commit(dst, o, pop);
    Ok(())
}

/// FST/FSTP/FIST/FISTP/FISTTP/FBSTP.
fn store(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
    m: Mnemonic,
    mem: bool,
    pop: bool,
) -> Result<(), Fault> {
    use Mnemonic as M;
    let env = cpu.env();
    if !mem {
        let i = op_st(&d.insn, 0);
        if !cpu.st_valid(0) {
            if cpu.underflow() {
                cpu.set_st(i, INDEF);
                if pop {
                    cpu.pop_st();
                }
            }
            return Ok(());
        }
        let v = cpu.st(0);
        cpu.set_st(i, v);
        cpu.set_c1(false);
        if pop {
            cpu.pop_st();
        }
        return Ok(());
    }
    let size = d.insn.memory_size();
    let empty = !cpu.st_valid(0);
    let v = if empty { INDEF } else { cpu.st(0) };
    let (bytes, n, o): ([u8; 10], usize, Outcome) = match (m, size) {
        (_, MemorySize::Float32) | (_, MemorySize::Float64) => {
            let fmt = if size == MemorySize::Float32 {
                RealFmt::M32
            } else {
                RealFmt::M64
            };
            let (b, o) = fp::store_real(v, fmt, &env);
            let n = if fmt == RealFmt::M32 { 4 } else { 8 };
            let mut out = [0u8; 10];
            out[..8].copy_from_slice(&b.to_le_bytes());
            (out, n, o)
        }
        (_, MemorySize::Float80) => {
            let mut out = [0u8; 10];
            out.copy_from_slice(&v.to_le_bytes()[..10]);
            (out, 10, Outcome::exact(0))
        }
        (M::Fbstp, _) => {
            let (b, o) = fp::to_bcd(v, &env);
            (b, 10, o)
        }
        (_, MemorySize::Int16 | MemorySize::Int32 | MemorySize::Int64) => {
            let bits = match size {
                MemorySize::Int16 => 16,
                MemorySize::Int32 => 32,
                _ => 64,
            };
            let round = if m == M::Fisttp {
                Round::TowardZero
            } else {
                env.round
            };
            let (iv, o) = fp::to_int(v, bits, round, &env);
            let mut out = [0u8; 10];
            out[..8].copy_from_slice(&iv.to_le_bytes());
            (out, bits as usize / 8, o)
        }
        _ => return super::undefined(cpu, p, d),
    };
    if empty {
        // Stack underflow: the masked response stores the indefinite of the format.
        cpu.mem_probe_write(d, n as u64)?;
        let masked = cpu.state.fpu.fcw & sw::IE != 0;
        if masked {
            write_n(cpu, p, d, &bytes, n)?;
        }
        if cpu.underflow() && pop {
            cpu.pop_st();
        }
        return Ok(());
    }
    if o.store {
        write_n(cpu, p, d, &bytes, n)?;
    }
    cpu.fpu_flags(o.exc);
    cpu.set_c1(o.store && o.c1);
    if pop && o.store {
        cpu.pop_st();
    }
    Ok(())
}

fn write_n(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
    b: &[u8; 10],
    n: usize,
) -> Result<(), Fault> {
    match n {
        2 => cpu.mem_write::<2>(p, d, [b[0], b[1]]),
        4 => cpu.mem_write::<4>(p, d, [b[0], b[1], b[2], b[3]]),
        8 => cpu.mem_write::<8>(p, d, [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        _ => cpu.mem_write::<10>(p, d, *b),
    }
}

impl Interpreter {
    /// The full tag word: 2 bits per physical register (SDM Vol. 1 §8.1.7).
    pub(crate) fn full_tag_word(&self) -> u16 {
        let f = &self.state.fpu;
        let top = usize::from(self.top());
        let mut tw = 0u16;
        for r in 0..8 {
            let tag = if f.ftw & (1 << r) == 0 {
                3
            } else {
                fp::tag_of(reg_bits(&f.st[(r + 8 - top) & 7]))
            };
            tw |= tag << (2 * r);
        }
        tw
    }

    /// Real-address or virtual-8086 mode (the real-mode FSTENV/FSAVE layouts).
    fn fpu_real_format(&self) -> bool {
        self.state.cr0 & cr::CR0_PE == 0 || self.rflags() & fl::VM != 0
    }

    /// FSTENV/FSAVE: the 14- or 28-byte environment, then for FSAVE the eight registers in
    /// stack order (SDM Vol. 1 §8.1.10, Figures 8-9 to 8-12).
    fn store_env(&mut self, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
        let o32 = matches!(
            d.insn.memory_size(),
            MemorySize::FpuEnv28 | MemorySize::FpuState108
        );
        let real = self.fpu_real_format();
        let f = &self.state.fpu;
        let (fcw, fsw, ftw) = (f.fcw, f.fsw, self.full_tag_word());
        let (ip_off, cs) = (f.fip as u32, (f.fip >> 32) as u16);
        let (dp_off, ds) = (f.fdp as u32, (f.fdp >> 32) as u16);
        let fop = f.fop & 0x7FF;
        let ip_lin = (u32::from(cs) << 4).wrapping_add(ip_off);
        let dp_lin = (u32::from(ds) << 4).wrapping_add(dp_off);
        let mut buf = [0u8; 108];
        let env_len = if o32 { 28 } else { 14 };
        if o32 {
            let mut put =
                |k: usize, v: u32| buf[k * 4..k * 4 + 4].copy_from_slice(&v.to_le_bytes());
            // Reserved upper halves are written as ones.
            put(0, 0xFFFF_0000 | u32::from(fcw));
            put(1, 0xFFFF_0000 | u32::from(fsw));
            put(2, 0xFFFF_0000 | u32::from(ftw));
            if real {
                put(3, 0xFFFF_0000 | (ip_lin & 0xFFFF));
                put(4, ((ip_lin >> 16) << 12) | u32::from(fop));
                put(5, 0xFFFF_0000 | (dp_lin & 0xFFFF));
                put(6, (dp_lin >> 16) << 12);
            } else {
                put(3, ip_off);
                put(4, u32::from(cs) | (u32::from(fop) << 16));
                put(5, dp_off);
                put(6, 0xFFFF_0000 | u32::from(ds));
            }
        } else {
            let mut put =
                |k: usize, v: u16| buf[k * 2..k * 2 + 2].copy_from_slice(&v.to_le_bytes());
            put(0, fcw);
            put(1, fsw);
            put(2, ftw);
            if real {
                put(3, ip_lin as u16);
                put(4, (((ip_lin >> 16) as u16) << 12) | fop);
                put(5, dp_lin as u16);
                put(6, ((dp_lin >> 16) as u16) << 12);
            } else {
                put(3, ip_off as u16);
                put(4, cs);
                put(5, dp_off as u16);
                put(6, ds);
            }
        }
        let save = matches!(d.insn.mnemonic(), Mnemonic::Fsave | Mnemonic::Fnsave);
        if save {
            for i in 0..8u8 {
                let v = self.st(i);
                let k = env_len + usize::from(i) * 10;
                buf[k..k + 10].copy_from_slice(&v.to_le_bytes()[..10]);
            }
        }
        let off = self.ea(d);
        let seg = d.seg;
        match (save, o32) {
            (false, false) => self.write_seg::<14>(p, seg, off, first(&buf)),
            (false, true) => self.write_seg::<28>(p, seg, off, first(&buf)),
            (true, false) => self.write_seg::<94>(p, seg, off, first(&buf)),
            (true, true) => self.write_seg::<108>(p, seg, off, buf),
        }
    }

    /// FLDENV/FRSTOR.
    fn load_env(&mut self, p: &mut dyn Platform, d: &Decoded, regs: bool) -> Result<(), Fault> {
        let o32 = matches!(
            d.insn.memory_size(),
            MemorySize::FpuEnv28 | MemorySize::FpuState108
        );
        let real = self.fpu_real_format();
        let off = self.ea(d);
        let seg = d.seg;
        let mut buf = [0u8; 108];
        match (regs, o32) {
            (false, false) => buf[..14].copy_from_slice(&self.read_seg::<14>(p, seg, off)?),
            (false, true) => buf[..28].copy_from_slice(&self.read_seg::<28>(p, seg, off)?),
            (true, false) => buf[..94].copy_from_slice(&self.read_seg::<94>(p, seg, off)?),
            (true, true) => buf = self.read_seg::<108>(p, seg, off)?,
        }
        let (fcw, fsw, ftw, fip, fdp, fop, env_len);
        if o32 {
            let get = |k: usize| {
                u32::from_le_bytes([buf[k * 4], buf[k * 4 + 1], buf[k * 4 + 2], buf[k * 4 + 3]])
            };
            fcw = get(0) as u16;
            fsw = get(1) as u16;
            ftw = get(2) as u16;
            if real {
                let ip = (get(3) & 0xFFFF) | ((get(4) >> 12) << 16);
                let dp = (get(5) & 0xFFFF) | ((get(6) >> 12) << 16);
                fip = u64::from(ip);
                fdp = u64::from(dp);
                fop = (get(4) & 0x7FF) as u16;
            } else {
                fip = u64::from(get(3)) | (u64::from(get(4) & 0xFFFF) << 32);
                fdp = u64::from(get(5)) | (u64::from(get(6) & 0xFFFF) << 32);
                fop = ((get(4) >> 16) & 0x7FF) as u16;
            }
            env_len = 28;
        } else {
            let get = |k: usize| u16::from_le_bytes([buf[k * 2], buf[k * 2 + 1]]);
            fcw = get(0);
            fsw = get(1);
            ftw = get(2);
            if real {
                fip = u64::from(get(3)) | (u64::from(get(4) >> 12) << 16);
                fdp = u64::from(get(5)) | (u64::from(get(6) >> 12) << 16);
                fop = get(4) & 0x7FF;
            } else {
                fip = u64::from(get(3)) | (u64::from(get(4)) << 32);
                fdp = u64::from(get(5)) | (u64::from(get(6)) << 32);
                fop = 0;
            }
            env_len = 14;
        }
        if !regs {
            // FLDENV moves TOP over registers that stay in place.
            self.set_top(((fsw >> sw::TOP_SHIFT) & 7) as u8);
        }
        let f = &mut self.state.fpu;
        f.fcw = (fcw & 0x1F3F) | 0x40;
        f.fsw = fsw;
        f.fip = fip;
        f.fdp = fdp;
        f.fop = fop;
        // Tag 11 = empty; any other tag marks the register valid (its class is recomputed
        // from the contents).
        f.ftw = (0..8).fold(0u8, |a, r| {
            if (ftw >> (2 * r)) & 3 == 3 {
                a
            } else {
                a | (1 << r)
            }
        });
        if regs {
            for (i, reg) in f.st.iter_mut().enumerate() {
                let k = env_len + i * 10;
                reg[..10].copy_from_slice(&buf[k..k + 10]);
            }
        }
        update_es(f);
        Ok(())
    }
}

/// The first N bytes of the save buffer.
fn first<const N: usize>(buf: &[u8; 108]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[..N]);
    out
}
