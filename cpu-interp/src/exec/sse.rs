//! SSE, SSE2, SSE3, SSSE3, SSE4.1 and SSE4.2 instructions on XMM registers, MXCSR,
//! FXSAVE/FXRSTOR, XSAVE/XRSTOR/XGETBV/XSETBV, the SSE2 cache-control and fence
//! instructions, and CRC32 (Intel SDM Vol. 2; Vol. 1 ch. 10–13).
//!
//! Fault rules common to the SIMD instructions (SDM Vol. 2A §2.5, Table 2-18 class 1–5):
//! CR0.EM = 1 or CR4.OSFXSR = 0 → #UD, then CR0.TS = 1 → #NM; a legacy-SSE 16-byte memory
//! operand must be 16-byte aligned (#GP(0)) except for the explicitly unaligned forms; an
//! unmasked SIMD floating-point exception leaves the destination unchanged and raises #XM
//! when CR4.OSXMMEXCPT = 1, else #UD (SDM Vol. 1 §11.5.1). Forms on MMX registers are not
//! handled here. Every handler reads all its inputs before changing anything.

use iced_x86::{CpuidFeature, Instruction, Mnemonic as M, OpKind, Register};
use pcvm_core::cpu_state::{cr, flags as fl};
use pcvm_core::{Platform, SegReg};
use rustc_apfloat::Round;

use super::{Decoded, Handler};
use crate::access::AccessKind;
use crate::fault::vector;
use crate::sse::float::{self, mxcsr, Env, Fmt, Op, F32, F64};
use crate::sse::{int, strcmp};
use crate::{Fault, Interpreter};

/// SIMD floating-point exception vector (SDM Vol. 3A Table 6-1).
const XM: u8 = 19;

/// The handler for an SSE-family instruction, or `None` if `insn` is not one this file
/// implements (MMX-register forms, AVX, XSAVEOPT/XSAVEC/XSAVES, SSE4a …).
pub(super) fn select(insn: &Instruction) -> Option<(Handler, u8)> {
    // SSE-family instructions on MMX registers (iced lists some, like PADDQ mm, as MMX).
    let mmx = (0..insn.op_count())
        .any(|i| insn.op_kind(i) == OpKind::Register && insn.op_register(i).is_mm());
    if mmx {
        return mmx_form_supported(insn.mnemonic()).then_some((mmx_form as Handler, 0));
    }
    let ours = insn.cpuid_features().iter().all(|f| {
        matches!(
            f,
            CpuidFeature::SSE
                | CpuidFeature::SSE2
                | CpuidFeature::SSE3
                | CpuidFeature::SSSE3
                | CpuidFeature::SSE4_1
                | CpuidFeature::SSE4_2
                | CpuidFeature::FXSR
                | CpuidFeature::XSAVE
                | CpuidFeature::CLFSH
        )
    });
    if !ours {
        return None;
    }
    let h: Handler = match insn.mnemonic() {
        M::Fxsave | M::Fxsave64 | M::Fxrstor | M::Fxrstor64 => state_save,
        M::Xsave | M::Xsave64 | M::Xrstor | M::Xrstor64 | M::Xgetbv | M::Xsetbv => state_save,
        M::Ldmxcsr | M::Stmxcsr => state_save,
        M::Lfence | M::Sfence | M::Mfence => fence,
        M::Clflush => clflush,
        M::Movnti => movnti,
        M::Crc32 => crc32,
        M::Maskmovdqu => maskmovdqu,
        M::Xsaveopt | M::Xsaveopt64 => return None,
        _ => simd,
    };
    Some((h, 0))
}

/// 16-byte memory forms that need not be aligned (SDM Vol. 1 §11.4.1, §12.10.3).
fn unaligned_ok(m: M) -> bool {
    matches!(
        m,
        M::Movups
            | M::Movupd
            | M::Movdqu
            | M::Lddqu
            | M::Pcmpestri
            | M::Pcmpestri64
            | M::Pcmpestrm
            | M::Pcmpestrm64
            | M::Pcmpistri
            | M::Pcmpistrm
    )
}

/// XMM register number of an iced register.
#[inline]
fn xn(r: Register) -> usize {
    r.number() & 15
}

impl Interpreter {
    /// #UD for CR0.EM or no CR4.OSFXSR, then #NM for CR0.TS.
    #[inline]
    fn sse_usable(&self) -> Result<(), Fault> {
        if self.state.cr0 & cr::CR0_EM != 0 || self.state.cr4 & cr::CR4_OSFXSR == 0 {
            return Err(Fault::ud());
        }
        if self.state.cr0 & cr::CR0_TS != 0 {
            return Err(Fault::new(vector::NM));
        }
        Ok(())
    }

    /// The fault for an unmasked SIMD floating-point exception.
    fn simd_fp_fault(&self) -> Fault {
        if self.state.cr4 & cr::CR4_OSXMMEXCPT != 0 {
            Fault::new(XM)
        } else {
            Fault::ud()
        }
    }

    #[inline]
    pub(crate) fn xmm(&self, i: usize) -> u128 {
        u128::from_le_bytes(self.state.fpu.xmm[i & 15])
    }

    #[inline]
    pub(crate) fn set_xmm(&mut self, i: usize, v: u128) {
        self.state.fpu.xmm[i & 15] = v.to_le_bytes();
    }

    /// A GPR operand, zero-extended (AH–BH are the high bytes).
    fn gpr_read(&self, r: Register) -> u64 {
        let Some(loc) = super::gpr_loc(r) else {
            return 0;
        };
        let v = self.state.gpr[usize::from(loc & 0xF)];
        if loc & super::HI != 0 {
            return (v >> 8) & 0xFF;
        }
        v & int::lane_mask(r.size() as u32 * 8)
    }

    /// Write a GPR operand: 32-bit writes zero the upper half, 8/16-bit ones merge.
    fn gpr_write(&mut self, r: Register, v: u64) {
        let Some(loc) = super::gpr_loc(r) else {
            return;
        };
        let g = &mut self.state.gpr[usize::from(loc & 0xF)];
        *g = match (loc & super::HI != 0, r.size()) {
            (true, _) => (*g & !0xFF00) | ((v & 0xFF) << 8),
            (false, 1) => (*g & !0xFF) | (v & 0xFF),
            (false, 2) => (*g & !0xFFFF) | (v & 0xFFFF),
            (false, 4) => v & 0xFFFF_FFFF,
            _ => v,
        };
    }

    /// Linear address of the memory operand for an access of `len` bytes, checking
    /// segmentation and (when `align` > 1) alignment (#GP(0)).
    fn simd_linear(
        &mut self,
        d: &Decoded,
        len: usize,
        align: u64,
        kind: AccessKind,
    ) -> Result<u64, Fault> {
        let off = self.ea(d);
        let linear = self.seg_linear(d.seg, off, len as u64, kind)?;
        if align > 1 && linear & (align - 1) != 0 {
            return Err(Fault::gp(0));
        }
        Ok(linear)
    }

    /// Read `len` (≤ 16) bytes of the memory operand, zero-extended.
    fn simd_load(
        &mut self,
        p: &mut dyn Platform,
        d: &Decoded,
        len: usize,
        align: bool,
    ) -> Result<u128, Fault> {
        let linear = self.simd_linear(d, len, if align { 16 } else { 1 }, AccessKind::Read)?;
        self.check_watchpoints(linear, len as u64, false);
        let mut b = [0u8; 16];
        self.read_linear(p, linear, &mut b[..len.min(16)], AccessKind::Read)?;
        Ok(u128::from_le_bytes(b))
    }

    /// Store the low `len` bytes of `v` to the memory operand.
    fn simd_store(
        &mut self,
        p: &mut dyn Platform,
        d: &Decoded,
        len: usize,
        align: bool,
        v: u128,
    ) -> Result<(), Fault> {
        let linear = self.simd_linear(d, len, if align { 16 } else { 1 }, AccessKind::Write)?;
        let b = v.to_le_bytes();
        self.write_linear(p, linear, &b[..len.min(16)])
    }

    /// Operand `i` as a value: an XMM register, a GPR (zero-extended), memory of the
    /// instruction's memory size (aligned per the legacy-SSE rule) or an immediate.
    fn operand(&mut self, p: &mut dyn Platform, d: &Decoded, i: u32) -> Result<u128, Fault> {
        let insn = &d.insn;
        match insn.op_kind(i) {
            OpKind::Register => {
                let r = insn.op_register(i);
                Ok(if r.is_xmm() {
                    self.xmm(xn(r))
                } else {
                    u128::from(self.gpr_read(r))
                })
            }
            OpKind::Memory => {
                let len = insn.memory_size().size();
                let align = len == 16 && !unaligned_ok(insn.mnemonic());
                self.simd_load(p, d, len, align)
            }
            _ => Ok(u128::from(insn.immediate(i))),
        }
    }

    /// Write a result to operand `i`: XMM register (all 128 bits), GPR, or memory of the
    /// instruction's memory size.
    fn write_operand(
        &mut self,
        p: &mut dyn Platform,
        d: &Decoded,
        i: u32,
        v: u128,
    ) -> Result<(), Fault> {
        let insn = &d.insn;
        match insn.op_kind(i) {
            OpKind::Register => {
                let r = insn.op_register(i);
                if r.is_xmm() {
                    self.set_xmm(xn(r), v);
                } else {
                    self.gpr_write(r, v as u64);
                }
                Ok(())
            }
            _ => {
                let len = insn.memory_size().size();
                let align = len == 16 && !unaligned_ok(insn.mnemonic());
                self.simd_store(p, d, len, align, v)
            }
        }
    }

    /// Finish a floating-point instruction: update MXCSR, then write `v` to operand 0
    /// unless an unmasked exception stops it.
    fn fp_commit(
        &mut self,
        p: &mut dyn Platform,
        d: &Decoded,
        env: &Env,
        v: u128,
    ) -> Result<(), Fault> {
        let (m, fault) = env.finish();
        self.state.fpu.mxcsr = m;
        if fault {
            return Err(self.simd_fp_fault());
        }
        self.write_operand(p, d, 0, v)
    }
}

/// Lane-wise binary float operation over all lanes of format `T`.
fn fp_packed<T: Fmt>(
    env: &mut Env,
    a: u128,
    b: u128,
    f: impl Fn(&mut Env, u64, u64) -> u64,
) -> u128 {
    let bits = T::BITS;
    let mut r = 0u128;
    for i in 0..128 / bits {
        let x = f(env, int::lane(a, bits, i), int::lane(b, bits, i));
        r |= u128::from(x & int::lane_mask(bits)) << (i * bits);
    }
    r
}

/// Scalar float operation on lane 0; the other lanes of `a` are kept.
fn fp_scalar<T: Fmt>(
    env: &mut Env,
    a: u128,
    b: u128,
    f: impl Fn(&mut Env, u64, u64) -> u64,
) -> u128 {
    let bits = T::BITS;
    let m = u128::from(int::lane_mask(bits));
    let x = f(env, int::lane(a, bits, 0), int::lane(b, bits, 0));
    (a & !m) | u128::from(x & int::lane_mask(bits))
}

/// Set CF PF AF ZF SF OF (others kept).
fn set_status(cpu: &mut Interpreter, f: u64) {
    cpu.set_arith_flags(f);
}

fn fence(_cpu: &mut Interpreter, _p: &mut dyn Platform, _d: &Decoded) -> Result<(), Fault> {
    // Memory is sequentially consistent in this interpreter: fences order nothing more.
    Ok(())
}

/// CLFLUSH: checks the byte's address like a read (segment, paging) and does nothing else;
/// there are no caches to flush (SDM Vol. 2A CLFLUSH).
fn clflush(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let linear = cpu.simd_linear(d, 1, 1, AccessKind::Read)?;
    cpu.translate(p, linear, AccessKind::Read)?;
    Ok(())
}

/// MOVNTI m32/m64, r32/r64: an ordinary store here (no write-combining to model).
fn movnti(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let r = d.insn.op1_register();
    let v = cpu.gpr_read(r);
    let len = r.size();
    let linear = cpu.simd_linear(d, len, 1, AccessKind::Write)?;
    cpu.write_linear(p, linear, &v.to_le_bytes()[..len.min(8)])
}

/// CRC32 r32/r64, r/m8/16/32/64: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78)
/// accumulated over the source bytes (SDM Vol. 2A CRC32). Not an SSE-state instruction.
fn crc32(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let dst = d.insn.op0_register();
    let (v, len) = match d.insn.op1_kind() {
        OpKind::Register => {
            let r = d.insn.op1_register();
            (cpu.gpr_read(r), r.size())
        }
        _ => {
            let len = d.insn.memory_size().size();
            (cpu.simd_load(p, d, len, false)? as u64, len)
        }
    };
    let crc = crc32c(cpu.gpr_read(dst) as u32, v, len);
    cpu.gpr_write(dst, u64::from(crc));
    Ok(())
}

/// Accumulate the low `len` bytes of `v` (least significant first) into a CRC-32C value,
/// bit-reflected, without the conventional pre/post inversion (as the instruction does).
fn crc32c(mut crc: u32, v: u64, len: usize) -> u32 {
    for k in 0..len.min(8) {
        crc ^= u32::from((v >> (8 * k)) as u8);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

/// MASKMOVDQU xmm1, xmm2: store the bytes of xmm1 whose mask byte in xmm2 has its top bit
/// set to DS:rDI (segment overridable) (SDM Vol. 2B MASKMOVDQU).
fn maskmovdqu(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    cpu.sse_usable()?;
    let insn = &d.insn;
    let data = cpu.xmm(xn(insn.op1_register())).to_le_bytes();
    let mask = cpu.xmm(xn(insn.op2_register())).to_le_bytes();
    cpu.masked_store(p, d, &data, &mask)
}

impl Interpreter {
    /// The store of MASKMOVDQU/MASKMOVQ: bytes of `data` whose `mask` byte has its top bit
    /// set go to DS:rDI + index (segment overridable); every byte is checked before any is
    /// stored.
    fn masked_store(
        &mut self,
        p: &mut dyn Platform,
        d: &Decoded,
        data: &[u8],
        mask: &[u8],
    ) -> Result<(), Fault> {
        let insn = &d.insn;
        let rdi = self.state.gpr[7];
        let wrap = match insn.op0_kind() {
            OpKind::MemorySegDI => 0xFFFF,
            OpKind::MemorySegEDI => 0xFFFF_FFFF,
            _ => u64::MAX,
        };
        let seg = super::seg_of(insn.memory_segment()).unwrap_or(SegReg::Ds);
        let mut targets = Vec::new();
        for (k, (&b, &m)) in data.iter().zip(mask).enumerate() {
            if m & 0x80 != 0 {
                let off = rdi.wrapping_add(k as u64) & wrap;
                let linear = self.seg_linear(seg, off, 1, AccessKind::Write)?;
                self.translate(p, linear, AccessKind::Write)?;
                targets.push((linear, b));
            }
        }
        for (linear, b) in targets {
            self.write_linear(p, linear, &[b])?;
        }
        Ok(())
    }
}

/// FXSAVE/FXRSTOR, XSAVE/XRSTOR, XGETBV/XSETBV, LDMXCSR/STMXCSR (SDM Vol. 2A/2B and Vol. 1
/// §10.5, §13).
fn state_save(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    use crate::sse::{self as s, FXSAVE_SIZE};
    let insn = &d.insn;
    let osxsave = cpu.state.cr4 & cr::CR4_OSXSAVE != 0;
    let nm = || Fault::new(vector::NM);
    let xmm_count = if cpu.state.in_64bit_code() { 16 } else { 8 };
    match insn.mnemonic() {
        M::Ldmxcsr | M::Stmxcsr => {
            cpu.sse_usable()?;
            if insn.mnemonic() == M::Stmxcsr {
                let m = cpu.state.fpu.mxcsr;
                return cpu.simd_store(p, d, 4, false, u128::from(m));
            }
            let m = cpu.simd_load(p, d, 4, false)? as u32;
            if m & !mxcsr::SUPPORTED != 0 {
                return Err(Fault::gp(0));
            }
            cpu.state.fpu.mxcsr = m;
            Ok(())
        }
        M::Fxsave | M::Fxsave64 => {
            if cpu.state.cr0 & (cr::CR0_EM | cr::CR0_TS) != 0 {
                return Err(nm());
            }
            let linear = cpu.simd_linear(d, FXSAVE_SIZE, 16, AccessKind::Write)?;
            let mut img = [0u8; FXSAVE_SIZE];
            // Bytes 288–511 (XMM8–15 outside 64-bit mode, reserved, available) are left as
            // they are in memory: read them first so the image write keeps them.
            let mut old = [0u8; FXSAVE_SIZE];
            cpu.read_linear(p, linear, &mut old, AccessKind::Write)?;
            img[160..].copy_from_slice(&old[160..]);
            s::save_x87(&cpu.state.fpu, &mut img);
            s::save_mxcsr(&cpu.state.fpu, &mut img);
            s::save_xmm(&cpu.state.fpu, &mut img, xmm_count);
            cpu.write_linear(p, linear, &img)
        }
        M::Fxrstor | M::Fxrstor64 => {
            if cpu.state.cr0 & (cr::CR0_EM | cr::CR0_TS) != 0 {
                return Err(nm());
            }
            let linear = cpu.simd_linear(d, FXSAVE_SIZE, 16, AccessKind::Read)?;
            let mut img = [0u8; FXSAVE_SIZE];
            cpu.read_linear(p, linear, &mut img, AccessKind::Read)?;
            let m = s::image_mxcsr(&img);
            if m & !mxcsr::SUPPORTED != 0 {
                return Err(Fault::gp(0));
            }
            let fx = &mut cpu.state.fpu;
            s::load_x87(fx, &img);
            fx.mxcsr = m;
            s::load_xmm(fx, &img, xmm_count);
            Ok(())
        }
        M::Xgetbv => {
            if !osxsave {
                return Err(Fault::ud());
            }
            if cpu.state.gpr[1] as u32 != 0 {
                return Err(Fault::gp(0));
            }
            let x = cpu.state.xcr0;
            cpu.state.gpr[0] = x & 0xFFFF_FFFF;
            cpu.state.gpr[2] = x >> 32;
            Ok(())
        }
        M::Xsetbv => {
            if !osxsave {
                return Err(Fault::ud());
            }
            let vm = cpu.state.rflags & fl::VM != 0;
            if cpu.state.cpl() != 0 || vm || cpu.state.gpr[1] as u32 != 0 {
                return Err(Fault::gp(0));
            }
            let v = (cpu.state.gpr[2] << 32) | (cpu.state.gpr[0] & 0xFFFF_FFFF);
            if v & 1 == 0 || v & !s::XCR0_SUPPORTED != 0 {
                return Err(Fault::gp(0));
            }
            cpu.state.xcr0 = v;
            Ok(())
        }
        M::Xsave | M::Xsave64 | M::Xrstor | M::Xrstor64 => {
            if !osxsave {
                return Err(Fault::ud());
            }
            if cpu.state.cr0 & cr::CR0_TS != 0 {
                return Err(nm());
            }
            let rfbm = cpu.state.xcr0
                & ((cpu.state.gpr[2] << 32) | (cpu.state.gpr[0] & 0xFFFF_FFFF))
                & s::XCR0_SUPPORTED;
            let linear = cpu.simd_linear(d, s::XSAVE_SIZE, 64, AccessKind::Write)?;
            let mut area = [0u8; s::XSAVE_SIZE];
            let kind = if matches!(insn.mnemonic(), M::Xsave | M::Xsave64) {
                AccessKind::Write
            } else {
                AccessKind::Read
            };
            cpu.read_linear(p, linear, &mut area, kind)?;
            let mut img = [0u8; FXSAVE_SIZE];
            img.copy_from_slice(&area[..FXSAVE_SIZE]);
            let hdr = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&area[FXSAVE_SIZE + at..FXSAVE_SIZE + at + 8]);
                u64::from_le_bytes(b)
            };
            let xstate_bv = hdr(0);
            if kind == AccessKind::Write {
                let fx = &cpu.state.fpu;
                if rfbm & 1 != 0 {
                    s::save_x87(fx, &mut img);
                }
                if rfbm & 2 != 0 {
                    s::save_mxcsr(fx, &mut img);
                    s::save_xmm(fx, &mut img, xmm_count);
                }
                area[..FXSAVE_SIZE].copy_from_slice(&img);
                // XSTATE_BV: XINUSE for the saved components; other bits kept.
                let bv = (xstate_bv & !rfbm) | (s::in_use(&cpu.state.fpu) & rfbm);
                area[FXSAVE_SIZE..FXSAVE_SIZE + 8].copy_from_slice(&bv.to_le_bytes());
                return cpu.write_linear(p, linear, &area);
            }
            // XRSTOR, standard form only: XCOMP_BV and reserved header bytes must be zero,
            // XSTATE_BV within XCR0 (SDM Vol. 1 §13.8.1).
            if hdr(8) != 0 || hdr(16) != 0 || xstate_bv & !cpu.state.xcr0 != 0 {
                return Err(Fault::gp(0));
            }
            let m = s::image_mxcsr(&img);
            if rfbm & 2 != 0 && m & !mxcsr::SUPPORTED != 0 {
                return Err(Fault::gp(0));
            }
            let fx = &mut cpu.state.fpu;
            if rfbm & 1 != 0 {
                if xstate_bv & 1 != 0 {
                    s::load_x87(fx, &img);
                } else {
                    s::init_x87(fx);
                }
            }
            if rfbm & 2 != 0 {
                fx.mxcsr = m;
                if xstate_bv & 2 != 0 {
                    s::load_xmm(fx, &img, xmm_count);
                } else {
                    for x in fx.xmm.iter_mut().take(xmm_count) {
                        *x = [0; 16];
                    }
                }
            }
            Ok(())
        }
        _ => Err(Fault::ud()),
    }
}

/// Sign bit of each `bits` lane of `m`, as a lane mask.
fn lane_sign_mask(m: u128, bits: u32) -> u128 {
    int::build(bits, |i| {
        if int::lane(m, bits, i) >> (bits - 1) != 0 {
            u64::MAX
        } else {
            0
        }
    })
}

/// Select lanes: where `mask` lane is all ones take `b`, else `a`.
fn blend(a: u128, b: u128, mask: u128) -> u128 {
    (a & !mask) | (b & mask)
}

/// Lane mask from an immediate (one bit per lane).
fn imm_mask(imm: u8, bits: u32) -> u128 {
    int::build(bits, |i| if imm >> i & 1 != 0 { u64::MAX } else { 0 })
}

/// The SSE instructions proper (XMM operands).
fn simd(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    cpu.sse_usable()?;
    let insn = &d.insn;
    let m = insn.mnemonic();
    // Most forms: operand 0 is the XMM destination (and first source), operand 1 the source.
    let dst_is_xmm = insn.op0_kind() == OpKind::Register && insn.op0_register().is_xmm();
    let imm = insn.immediate8();
    use int::{lane, map2, slane, smap2};

    // Moves with a memory or GPR destination, and the other non-arithmetic forms first.
    match m {
        M::Movaps
        | M::Movapd
        | M::Movdqa
        | M::Movups
        | M::Movupd
        | M::Movdqu
        | M::Lddqu
        | M::Movntps
        | M::Movntpd
        | M::Movntdq
        | M::Movntdqa => {
            let v = cpu.operand(p, d, 1)?;
            return cpu.write_operand(p, d, 0, v);
        }
        M::Movss | M::Movsd => {
            let bits = if m == M::Movss { 32 } else { 64 };
            let v = cpu.operand(p, d, 1)?;
            let keep = insn.op0_kind() == OpKind::Register && insn.op1_kind() == OpKind::Register;
            let r = if keep {
                let lm = u128::from(int::lane_mask(bits));
                (cpu.xmm(xn(insn.op0_register())) & !lm) | (v & lm)
            } else {
                v
            };
            return cpu.write_operand(p, d, 0, r);
        }
        M::Movd | M::Movq => {
            let v = cpu.operand(p, d, 1)?;
            let src_size = match insn.op1_kind() {
                OpKind::Register => insn.op1_register().size(),
                _ => insn.memory_size().size(),
            };
            let v = if dst_is_xmm {
                let w = if insn.op1_kind() == OpKind::Register && insn.op1_register().is_xmm() {
                    8
                } else {
                    src_size
                };
                v & u128::from(int::lane_mask(w as u32 * 8))
            } else {
                v
            };
            return cpu.write_operand(p, d, 0, v);
        }
        M::Movhps | M::Movhpd | M::Movlps | M::Movlpd | M::Movhlps | M::Movlhps => {
            let high_dst = matches!(m, M::Movhps | M::Movhpd | M::Movlhps);
            let lo = u128::from(u64::MAX);
            if !dst_is_xmm {
                let x = cpu.xmm(xn(insn.op1_register()));
                let v = if high_dst { x >> 64 } else { x & lo };
                return cpu.write_operand(p, d, 0, v);
            }
            let s = cpu.operand(p, d, 1)?;
            let s64 = if m == M::Movhlps { s >> 64 } else { s & lo };
            let a = cpu.xmm(xn(insn.op0_register()));
            let r = if high_dst {
                (a & lo) | (s64 << 64)
            } else {
                (a & !lo) | s64
            };
            cpu.set_xmm(xn(insn.op0_register()), r);
            return Ok(());
        }
        M::Movmskps | M::Movmskpd | M::Pmovmskb => {
            let x = cpu.operand(p, d, 1)?;
            let bits = match m {
                M::Movmskps => 32,
                M::Movmskpd => 64,
                _ => 8,
            };
            cpu.gpr_write(insn.op0_register(), u64::from(int::movmsk(x, bits)));
            return Ok(());
        }
        M::Pextrb | M::Pextrw | M::Pextrd | M::Pextrq | M::Extractps => {
            let (bits, n) = match m {
                M::Pextrb => (8, 16),
                M::Pextrw => (16, 8),
                M::Pextrd | M::Extractps => (32, 4),
                _ => (64, 2),
            };
            let x = cpu.xmm(xn(insn.op1_register()));
            let v = lane(x, bits, u32::from(imm) % n);
            return cpu.write_operand(p, d, 0, u128::from(v));
        }
        M::Pinsrb | M::Pinsrw | M::Pinsrd | M::Pinsrq => {
            let (bits, n) = match m {
                M::Pinsrb => (8, 16),
                M::Pinsrw => (16, 8),
                M::Pinsrd => (32, 4),
                _ => (64, 2),
            };
            let v = cpu.operand(p, d, 1)? as u64 & int::lane_mask(bits);
            let sh = (u32::from(imm) % n) * bits;
            let lm = u128::from(int::lane_mask(bits)) << sh;
            let a = cpu.xmm(xn(insn.op0_register()));
            cpu.set_xmm(xn(insn.op0_register()), (a & !lm) | (u128::from(v) << sh));
            return Ok(());
        }
        M::Ptest => {
            let a = cpu.xmm(xn(insn.op0_register()));
            let b = cpu.operand(p, d, 1)?;
            let mut f = 0;
            if a & b == 0 {
                f |= fl::ZF;
            }
            if !a & b == 0 {
                f |= fl::CF;
            }
            set_status(cpu, f);
            return Ok(());
        }
        M::Pcmpestri
        | M::Pcmpestri64
        | M::Pcmpestrm
        | M::Pcmpestrm64
        | M::Pcmpistri
        | M::Pcmpistrm => {
            let a = cpu.xmm(xn(insn.op0_register()));
            let b = cpu.operand(p, d, 1)?;
            let explicit = matches!(
                m,
                M::Pcmpestri | M::Pcmpestri64 | M::Pcmpestrm | M::Pcmpestrm64
            );
            let (l1, l2) = if explicit {
                let wide = matches!(m, M::Pcmpestri64 | M::Pcmpestrm64);
                let reg = |v: u64| {
                    if wide {
                        v as i64
                    } else {
                        i64::from(v as u32 as i32)
                    }
                };
                (
                    strcmp::explicit_len(reg(cpu.state.gpr[0]), imm),
                    strcmp::explicit_len(reg(cpu.state.gpr[2]), imm),
                )
            } else {
                (strcmp::implicit_len(a, imm), strcmp::implicit_len(b, imm))
            };
            let r = strcmp::compare(a, b, l1, l2, imm);
            if matches!(m, M::Pcmpestri | M::Pcmpestri64 | M::Pcmpistri) {
                cpu.state.gpr[1] = u64::from(r.index(imm));
            } else {
                cpu.set_xmm(0, r.mask(imm));
            }
            set_status(cpu, r.flags());
            return Ok(());
        }
        M::Comiss | M::Ucomiss | M::Comisd | M::Ucomisd => {
            let a = cpu.xmm(xn(insn.op0_register()));
            let b = cpu.operand(p, d, 1)?;
            let mut env = Env::new(cpu.state.fpu.mxcsr);
            let signaling = matches!(m, M::Comiss | M::Comisd);
            let (z, pf, c) = if matches!(m, M::Comiss | M::Ucomiss) {
                float::comis::<F32>(&mut env, signaling, lane(a, 32, 0), lane(b, 32, 0))
            } else {
                float::comis::<F64>(&mut env, signaling, a as u64, b as u64)
            };
            let (mx, fault) = env.finish();
            cpu.state.fpu.mxcsr = mx;
            if fault {
                return Err(cpu.simd_fp_fault());
            }
            let f = if z { fl::ZF } else { 0 }
                | if pf { fl::PF } else { 0 }
                | if c { fl::CF } else { 0 };
            set_status(cpu, f);
            return Ok(());
        }
        M::Cvtss2si | M::Cvttss2si | M::Cvtsd2si | M::Cvttsd2si => {
            let b = cpu.operand(p, d, 1)?;
            let mut env = Env::new(cpu.state.fpu.mxcsr);
            let width = insn.op0_register().size() * 8;
            let rm = if matches!(m, M::Cvttss2si | M::Cvttsd2si) {
                Round::TowardZero
            } else {
                env.round()
            };
            let v = if matches!(m, M::Cvtss2si | M::Cvttss2si) {
                float::to_int::<F32>(&mut env, lane(b, 32, 0), width, rm)
            } else {
                float::to_int::<F64>(&mut env, b as u64, width, rm)
            };
            return cpu.fp_commit(p, d, &env, u128::from(v));
        }
        _ => {}
    }

    if !dst_is_xmm {
        return Err(Fault::ud());
    }
    let di = xn(insn.op0_register());
    let a = cpu.xmm(di);
    let b = cpu.operand(p, d, 1)?;

    // Floating point: results through fp_commit.
    let mut env = Env::new(cpu.state.fpu.mxcsr);
    let e = &mut env;
    let fp: Option<u128> = match m {
        M::Addps => Some(fp_packed::<F32>(e, a, b, |e, x, y| {
            float::arith::<F32>(e, Op::Add, x, y)
        })),
        M::Addpd => Some(fp_packed::<F64>(e, a, b, |e, x, y| {
            float::arith::<F64>(e, Op::Add, x, y)
        })),
        M::Addss => Some(fp_scalar::<F32>(e, a, b, |e, x, y| {
            float::arith::<F32>(e, Op::Add, x, y)
        })),
        M::Addsd => Some(fp_scalar::<F64>(e, a, b, |e, x, y| {
            float::arith::<F64>(e, Op::Add, x, y)
        })),
        M::Subps => Some(fp_packed::<F32>(e, a, b, |e, x, y| {
            float::arith::<F32>(e, Op::Sub, x, y)
        })),
        M::Subpd => Some(fp_packed::<F64>(e, a, b, |e, x, y| {
            float::arith::<F64>(e, Op::Sub, x, y)
        })),
        M::Subss => Some(fp_scalar::<F32>(e, a, b, |e, x, y| {
            float::arith::<F32>(e, Op::Sub, x, y)
        })),
        M::Subsd => Some(fp_scalar::<F64>(e, a, b, |e, x, y| {
            float::arith::<F64>(e, Op::Sub, x, y)
        })),
        M::Mulps => Some(fp_packed::<F32>(e, a, b, |e, x, y| {
            float::arith::<F32>(e, Op::Mul, x, y)
        })),
        M::Mulpd => Some(fp_packed::<F64>(e, a, b, |e, x, y| {
            float::arith::<F64>(e, Op::Mul, x, y)
        })),
        M::Mulss => Some(fp_scalar::<F32>(e, a, b, |e, x, y| {
            float::arith::<F32>(e, Op::Mul, x, y)
        })),
        M::Mulsd => Some(fp_scalar::<F64>(e, a, b, |e, x, y| {
            float::arith::<F64>(e, Op::Mul, x, y)
        })),
        M::Divps => Some(fp_packed::<F32>(e, a, b, |e, x, y| {
            float::arith::<F32>(e, Op::Div, x, y)
        })),
        M::Divpd => Some(fp_packed::<F64>(e, a, b, |e, x, y| {
            float::arith::<F64>(e, Op::Div, x, y)
        })),
        M::Divss => Some(fp_scalar::<F32>(e, a, b, |e, x, y| {
            float::arith::<F32>(e, Op::Div, x, y)
        })),
        M::Divsd => Some(fp_scalar::<F64>(e, a, b, |e, x, y| {
            float::arith::<F64>(e, Op::Div, x, y)
        })),
        M::Minps => Some(fp_packed::<F32>(e, a, b, |e, x, y| {
            float::min_max::<F32>(e, false, x, y)
        })),
        M::Minpd => Some(fp_packed::<F64>(e, a, b, |e, x, y| {
            float::min_max::<F64>(e, false, x, y)
        })),
        M::Minss => Some(fp_scalar::<F32>(e, a, b, |e, x, y| {
            float::min_max::<F32>(e, false, x, y)
        })),
        M::Minsd => Some(fp_scalar::<F64>(e, a, b, |e, x, y| {
            float::min_max::<F64>(e, false, x, y)
        })),
        M::Maxps => Some(fp_packed::<F32>(e, a, b, |e, x, y| {
            float::min_max::<F32>(e, true, x, y)
        })),
        M::Maxpd => Some(fp_packed::<F64>(e, a, b, |e, x, y| {
            float::min_max::<F64>(e, true, x, y)
        })),
        M::Maxss => Some(fp_scalar::<F32>(e, a, b, |e, x, y| {
            float::min_max::<F32>(e, true, x, y)
        })),
        M::Maxsd => Some(fp_scalar::<F64>(e, a, b, |e, x, y| {
            float::min_max::<F64>(e, true, x, y)
        })),
        M::Sqrtps => Some(fp_packed::<F32>(e, b, b, |e, x, _| {
            float::sqrt::<F32>(e, x)
        })),
        M::Sqrtpd => Some(fp_packed::<F64>(e, b, b, |e, x, _| {
            float::sqrt::<F64>(e, x)
        })),
        M::Sqrtss => Some(fp_scalar::<F32>(e, a, b, |e, _, y| {
            float::sqrt::<F32>(e, y)
        })),
        M::Sqrtsd => Some(fp_scalar::<F64>(e, a, b, |e, _, y| {
            float::sqrt::<F64>(e, y)
        })),
        M::Cmpps => Some(fp_packed::<F32>(e, a, b, |e, x, y| {
            if float::compare::<F32>(e, imm, x, y) {
                u64::MAX
            } else {
                0
            }
        })),
        M::Cmppd => Some(fp_packed::<F64>(e, a, b, |e, x, y| {
            if float::compare::<F64>(e, imm, x, y) {
                u64::MAX
            } else {
                0
            }
        })),
        M::Cmpss => Some(fp_scalar::<F32>(e, a, b, |e, x, y| {
            if float::compare::<F32>(e, imm, x, y) {
                u64::MAX
            } else {
                0
            }
        })),
        M::Cmpsd => Some(fp_scalar::<F64>(e, a, b, |e, x, y| {
            if float::compare::<F64>(e, imm, x, y) {
                u64::MAX
            } else {
                0
            }
        })),
        M::Addsubps => {
            let mut r = 0u128;
            for i in 0..4 {
                let op = if i % 2 == 0 { Op::Sub } else { Op::Add };
                let x = float::arith::<F32>(e, op, lane(a, 32, i), lane(b, 32, i));
                r |= u128::from(x) << (32 * i);
            }
            Some(r)
        }
        M::Addsubpd => {
            let lo = float::arith::<F64>(e, Op::Sub, a as u64, b as u64);
            let hi = float::arith::<F64>(e, Op::Add, (a >> 64) as u64, (b >> 64) as u64);
            Some(u128::from(lo) | (u128::from(hi) << 64))
        }
        M::Haddps | M::Hsubps => {
            let op = if m == M::Haddps { Op::Add } else { Op::Sub };
            let mut r = 0u128;
            for i in 0..4u32 {
                let src = if i < 2 { a } else { b };
                let k = (i % 2) * 2;
                let x = float::arith::<F32>(e, op, lane(src, 32, k), lane(src, 32, k + 1));
                r |= u128::from(x) << (32 * i);
            }
            Some(r)
        }
        M::Haddpd | M::Hsubpd => {
            let op = if m == M::Haddpd { Op::Add } else { Op::Sub };
            let lo = float::arith::<F64>(e, op, a as u64, (a >> 64) as u64);
            let hi = float::arith::<F64>(e, op, b as u64, (b >> 64) as u64);
            Some(u128::from(lo) | (u128::from(hi) << 64))
        }
        M::Cvtsi2ss | M::Cvtsi2sd => {
            let w = match insn.op1_kind() {
                OpKind::Register => insn.op1_register().size(),
                _ => insn.memory_size().size(),
            };
            let v = if w == 8 {
                b as u64 as i64
            } else {
                i64::from(b as u32 as i32)
            };
            if m == M::Cvtsi2ss {
                let r = float::from_int::<F32>(e, v);
                Some((a & !0xFFFF_FFFFu128) | u128::from(r))
            } else {
                let r = float::from_int::<F64>(e, v);
                Some((a & !u128::from(u64::MAX)) | u128::from(r))
            }
        }
        M::Cvtss2sd => {
            let r = float::convert::<F32, F64>(e, lane(b, 32, 0));
            Some((a & !u128::from(u64::MAX)) | u128::from(r))
        }
        M::Cvtsd2ss => {
            let r = float::convert::<F64, F32>(e, b as u64);
            Some((a & !0xFFFF_FFFFu128) | u128::from(r))
        }
        M::Cvtps2pd => {
            let lo = float::convert::<F32, F64>(e, lane(b, 32, 0));
            let hi = float::convert::<F32, F64>(e, lane(b, 32, 1));
            Some(u128::from(lo) | (u128::from(hi) << 64))
        }
        M::Cvtpd2ps => {
            let lo = float::convert::<F64, F32>(e, b as u64);
            let hi = float::convert::<F64, F32>(e, (b >> 64) as u64);
            Some(u128::from(lo) | (u128::from(hi) << 32))
        }
        M::Cvtdq2ps => Some(fp_packed::<F32>(e, b, b, |e, x, _| {
            float::from_int::<F32>(e, i64::from(x as u32 as i32))
        })),
        // The memory forms of CVTPI2PS/CVTPI2PD (the MMX-register forms belong with MMX).
        M::Cvtpi2ps => {
            let lo = float::from_int::<F32>(e, slane(b, 32, 0));
            let hi = float::from_int::<F32>(e, slane(b, 32, 1));
            Some((a & !u128::from(u64::MAX)) | u128::from(lo) | (u128::from(hi) << 32))
        }
        M::Cvtdq2pd | M::Cvtpi2pd => {
            let lo = float::from_int::<F64>(e, slane(b, 32, 0));
            let hi = float::from_int::<F64>(e, slane(b, 32, 1));
            Some(u128::from(lo) | (u128::from(hi) << 64))
        }
        M::Cvtps2dq | M::Cvttps2dq => {
            let rm = if m == M::Cvttps2dq {
                Round::TowardZero
            } else {
                e.round()
            };
            Some(fp_packed::<F32>(e, b, b, |e, x, _| {
                float::to_int::<F32>(e, x, 32, rm)
            }))
        }
        M::Cvtpd2dq | M::Cvttpd2dq => {
            let rm = if m == M::Cvttpd2dq {
                Round::TowardZero
            } else {
                e.round()
            };
            let lo = float::to_int::<F64>(e, b as u64, 32, rm);
            let hi = float::to_int::<F64>(e, (b >> 64) as u64, 32, rm);
            Some(u128::from(lo) | (u128::from(hi) << 32))
        }
        M::Roundps => Some(fp_packed::<F32>(e, b, b, |e, x, _| {
            float::round_integral::<F32>(e, x, imm)
        })),
        M::Roundpd => Some(fp_packed::<F64>(e, b, b, |e, x, _| {
            float::round_integral::<F64>(e, x, imm)
        })),
        M::Roundss => Some(fp_scalar::<F32>(e, a, b, |e, _, y| {
            float::round_integral::<F32>(e, y, imm)
        })),
        M::Roundsd => Some(fp_scalar::<F64>(e, a, b, |e, _, y| {
            float::round_integral::<F64>(e, y, imm)
        })),
        M::Dpps => Some(dpps(e, a, b, imm)),
        M::Dppd => Some(dppd(e, a, b, imm)),
        M::Rcpps | M::Rcpss | M::Rsqrtps | M::Rsqrtss => {
            let rsqrt = matches!(m, M::Rsqrtps | M::Rsqrtss);
            let f = |x: u64| u64::from(approx_recip(x as u32, rsqrt));
            Some(if matches!(m, M::Rcpps | M::Rsqrtps) {
                int::build(32, |i| f(lane(b, 32, i)))
            } else {
                (a & !0xFFFF_FFFFu128) | u128::from(f(lane(b, 32, 0)))
            })
        }
        _ => None,
    };
    if let Some(v) = fp {
        return cpu.fp_commit(p, d, &env, v);
    }

    // Bitwise, integer, shuffles: no MXCSR involvement.
    let r: u128 = match m {
        M::Andps | M::Andpd | M::Pand => a & b,
        M::Andnps | M::Andnpd | M::Pandn => !a & b,
        M::Orps | M::Orpd | M::Por => a | b,
        M::Xorps | M::Xorpd | M::Pxor => a ^ b,
        M::Paddb => map2(a, b, 8, u64::wrapping_add),
        M::Paddw => map2(a, b, 16, u64::wrapping_add),
        M::Paddd => map2(a, b, 32, u64::wrapping_add),
        M::Paddq => map2(a, b, 64, u64::wrapping_add),
        M::Psubb => map2(a, b, 8, u64::wrapping_sub),
        M::Psubw => map2(a, b, 16, u64::wrapping_sub),
        M::Psubd => map2(a, b, 32, u64::wrapping_sub),
        M::Psubq => map2(a, b, 64, u64::wrapping_sub),
        M::Paddsb => smap2(a, b, 8, |x, y| int::sat_s(x + y, 8)),
        M::Paddsw => smap2(a, b, 16, |x, y| int::sat_s(x + y, 16)),
        M::Psubsb => smap2(a, b, 8, |x, y| int::sat_s(x - y, 8)),
        M::Psubsw => smap2(a, b, 16, |x, y| int::sat_s(x - y, 16)),
        M::Paddusb => map2(a, b, 8, |x, y| (x + y).min(0xFF)),
        M::Paddusw => map2(a, b, 16, |x, y| (x + y).min(0xFFFF)),
        M::Psubusb | M::Psubusw => map2(
            a,
            b,
            if m == M::Psubusb { 8 } else { 16 },
            u64::saturating_sub,
        ),
        M::Pcmpeqb | M::Pcmpeqw | M::Pcmpeqd | M::Pcmpeqq => {
            let bits = match m {
                M::Pcmpeqb => 8,
                M::Pcmpeqw => 16,
                M::Pcmpeqd => 32,
                _ => 64,
            };
            map2(a, b, bits, |x, y| if x == y { u64::MAX } else { 0 })
        }
        M::Pcmpgtb | M::Pcmpgtw | M::Pcmpgtd | M::Pcmpgtq => {
            let bits = match m {
                M::Pcmpgtb => 8,
                M::Pcmpgtw => 16,
                M::Pcmpgtd => 32,
                _ => 64,
            };
            smap2(a, b, bits, |x, y| if x > y { -1 } else { 0 })
        }
        M::Pminub => map2(a, b, 8, u64::min),
        M::Pmaxub => map2(a, b, 8, u64::max),
        M::Pminuw => map2(a, b, 16, u64::min),
        M::Pmaxuw => map2(a, b, 16, u64::max),
        M::Pminud => map2(a, b, 32, u64::min),
        M::Pmaxud => map2(a, b, 32, u64::max),
        M::Pminsb => smap2(a, b, 8, i64::min),
        M::Pmaxsb => smap2(a, b, 8, i64::max),
        M::Pminsw => smap2(a, b, 16, i64::min),
        M::Pmaxsw => smap2(a, b, 16, i64::max),
        M::Pminsd => smap2(a, b, 32, i64::min),
        M::Pmaxsd => smap2(a, b, 32, i64::max),
        M::Pavgb => map2(a, b, 8, |x, y| (x + y + 1) >> 1),
        M::Pavgw => map2(a, b, 16, |x, y| (x + y + 1) >> 1),
        M::Pmullw => smap2(a, b, 16, |x, y| x * y),
        M::Pmulhw => smap2(a, b, 16, |x, y| (x * y) >> 16),
        M::Pmulhuw => map2(a, b, 16, |x, y| (x * y) >> 16),
        M::Pmulld => smap2(a, b, 32, |x, y| x.wrapping_mul(y)),
        M::Pmuludq => int::build(64, |i| {
            lane(a, 64, i) as u32 as u64 * (lane(b, 64, i) as u32 as u64)
        }),
        M::Pmuldq => int::build(64, |i| {
            (i64::from(lane(a, 64, i) as u32 as i32) * i64::from(lane(b, 64, i) as u32 as i32))
                as u64
        }),
        M::Pmaddwd => int::madd_wd(a, b),
        M::Pmaddubsw => int::build(16, |i| {
            let p0 = lane(a, 8, 2 * i) as i64 * slane(b, 8, 2 * i);
            let p1 = lane(a, 8, 2 * i + 1) as i64 * slane(b, 8, 2 * i + 1);
            int::sat_s(p0 + p1, 16) as u64
        }),
        M::Pmulhrsw => smap2(a, b, 16, |x, y| (((x * y) >> 14) + 1) >> 1),
        M::Psadbw => int::sad(a, b),
        M::Pabsb | M::Pabsw | M::Pabsd => {
            let bits = match m {
                M::Pabsb => 8,
                M::Pabsw => 16,
                _ => 32,
            };
            int::build(bits, |i| slane(b, bits, i).unsigned_abs())
        }
        M::Psignb | M::Psignw | M::Psignd => {
            let bits = match m {
                M::Psignb => 8,
                M::Psignw => 16,
                _ => 32,
            };
            smap2(a, b, bits, |x, y| match y.signum() {
                -1 => x.wrapping_neg(),
                0 => 0,
                _ => x,
            })
        }
        M::Phaddw => int::horizontal(a, b, 16, |x, y| x + y),
        M::Phaddd => int::horizontal(a, b, 32, |x, y| x + y),
        M::Phaddsw => int::horizontal(a, b, 16, |x, y| int::sat_s(x + y, 16)),
        M::Phsubw => int::horizontal(a, b, 16, |x, y| x - y),
        M::Phsubd => int::horizontal(a, b, 32, |x, y| x - y),
        M::Phsubsw => int::horizontal(a, b, 16, |x, y| int::sat_s(x - y, 16)),
        M::Psllw | M::Pslld | M::Psllq | M::Psrlw | M::Psrld | M::Psrlq | M::Psraw | M::Psrad => {
            let (bits, kind) = match m {
                M::Psllw => (16, 0),
                M::Pslld => (32, 0),
                M::Psllq => (64, 0),
                M::Psrlw => (16, 1),
                M::Psrld => (32, 1),
                M::Psrlq => (64, 1),
                M::Psraw => (16, 2),
                _ => (32, 2),
            };
            // The count is the immediate or the low 64 bits of the source.
            int::shift(a, bits, b as u64, kind)
        }
        M::Pslldq => int::byte_shift(a, imm, true),
        M::Psrldq => int::byte_shift(a, imm, false),
        M::Pshufd => int::shuffle32(b, imm),
        M::Pshuflw => int::shuffle16_half(b, imm, false),
        M::Pshufhw => int::shuffle16_half(b, imm, true),
        M::Pshufb => int::pshufb(a, b),
        M::Palignr => int::palignr(a, b, imm),
        M::Punpcklbw => int::unpack(a, b, 8, false),
        M::Punpcklwd => int::unpack(a, b, 16, false),
        M::Punpckldq | M::Unpcklps => int::unpack(a, b, 32, false),
        M::Punpcklqdq | M::Unpcklpd => int::unpack(a, b, 64, false),
        M::Punpckhbw => int::unpack(a, b, 8, true),
        M::Punpckhwd => int::unpack(a, b, 16, true),
        M::Punpckhdq | M::Unpckhps => int::unpack(a, b, 32, true),
        M::Punpckhqdq | M::Unpckhpd => int::unpack(a, b, 64, true),
        M::Packsswb => int::pack(a, b, 16, false),
        M::Packssdw => int::pack(a, b, 32, false),
        M::Packuswb => int::pack(a, b, 16, true),
        M::Packusdw => int::pack(a, b, 32, true),
        M::Shufps => int::build(32, |i| {
            let src = if i < 2 { a } else { b };
            lane(src, 32, u32::from((imm >> (2 * i)) & 3))
        }),
        M::Shufpd => {
            u128::from(lane(a, 64, u32::from(imm & 1)))
                | (u128::from(lane(b, 64, u32::from((imm >> 1) & 1))) << 64)
        }
        M::Movddup => {
            let lo = b & u128::from(u64::MAX);
            lo | (lo << 64)
        }
        M::Movshdup => int::build(32, |i| lane(b, 32, i | 1)),
        M::Movsldup => int::build(32, |i| lane(b, 32, i & !1)),
        M::Pblendvb => blend(a, b, lane_sign_mask(cpu.xmm(0), 8)),
        M::Blendvps => blend(a, b, lane_sign_mask(cpu.xmm(0), 32)),
        M::Blendvpd => blend(a, b, lane_sign_mask(cpu.xmm(0), 64)),
        M::Blendps => blend(a, b, imm_mask(imm, 32)),
        M::Blendpd => blend(a, b, imm_mask(imm, 64)),
        M::Pblendw => blend(a, b, imm_mask(imm, 16)),
        M::Pmovsxbw
        | M::Pmovsxbd
        | M::Pmovsxbq
        | M::Pmovsxwd
        | M::Pmovsxwq
        | M::Pmovsxdq
        | M::Pmovzxbw
        | M::Pmovzxbd
        | M::Pmovzxbq
        | M::Pmovzxwd
        | M::Pmovzxwq
        | M::Pmovzxdq => {
            let (from, to) = match m {
                M::Pmovsxbw | M::Pmovzxbw => (8, 16),
                M::Pmovsxbd | M::Pmovzxbd => (8, 32),
                M::Pmovsxbq | M::Pmovzxbq => (8, 64),
                M::Pmovsxwd | M::Pmovzxwd => (16, 32),
                M::Pmovsxwq | M::Pmovzxwq => (16, 64),
                _ => (32, 64),
            };
            let signed = matches!(
                m,
                M::Pmovsxbw | M::Pmovsxbd | M::Pmovsxbq | M::Pmovsxwd | M::Pmovsxwq | M::Pmovsxdq
            );
            int::build(to, |i| {
                if signed {
                    slane(b, from, i) as u64
                } else {
                    lane(b, from, i)
                }
            })
        }
        M::Insertps => {
            let src = if insn.op1_kind() == OpKind::Memory {
                lane(b, 32, 0)
            } else {
                lane(b, 32, u32::from(imm >> 6))
            };
            let at = u32::from((imm >> 4) & 3);
            let t = (a & !(0xFFFF_FFFFu128 << (32 * at))) | (u128::from(src) << (32 * at));
            t & !imm_mask(imm & 0xF, 32)
        }
        M::Phminposuw => int::phminposuw(b),
        M::Mpsadbw => int::mpsadbw(a, b, imm),
        _ => {
            return super::undefined(cpu, p, d);
        }
    };
    cpu.set_xmm(di, r);
    Ok(())
}

/// DPPS: products of the lanes selected by imm[7:4], summed ((0+1)+(2+3)) with each step
/// rounded, written to the lanes selected by imm[3:0] (SDM Vol. 2A DPPS). The summing
/// step's flags count as post-computation flags.
fn dpps(e: &mut Env, a: u128, b: u128, imm: u8) -> u128 {
    let mut t = [0u64; 4];
    for (i, ti) in t.iter_mut().enumerate() {
        let i = i as u32;
        *ti = if imm >> (4 + i) & 1 != 0 {
            float::arith::<F32>(e, Op::Mul, int::lane(a, 32, i), int::lane(b, 32, i))
        } else {
            0
        };
    }
    let mut sum = Env::new(e.mxcsr);
    let s01 = float::arith::<F32>(&mut sum, Op::Add, t[0], t[1]);
    let s23 = float::arith::<F32>(&mut sum, Op::Add, t[2], t[3]);
    let s = float::arith::<F32>(&mut sum, Op::Add, s01, s23);
    e.add_post(sum.flags());
    int::build(32, |i| if imm >> i & 1 != 0 { s } else { 0 })
}

/// DPPD: the two-lane version of DPPS.
fn dppd(e: &mut Env, a: u128, b: u128, imm: u8) -> u128 {
    let mut t = [0u64; 2];
    for (i, ti) in t.iter_mut().enumerate() {
        let i = i as u32;
        *ti = if imm >> (4 + i) & 1 != 0 {
            float::arith::<F64>(e, Op::Mul, int::lane(a, 64, i), int::lane(b, 64, i))
        } else {
            0
        };
    }
    let mut sum = Env::new(e.mxcsr);
    let s = float::arith::<F64>(&mut sum, Op::Add, t[0], t[1]);
    e.add_post(sum.flags());
    int::build(64, |i| if imm >> i & 1 != 0 { s } else { 0 })
}

/// RCPPS/RSQRTPS: processors return an approximation within 1.5·2⁻¹² relative error whose
/// exact bits differ between vendors; this returns the double-precision result rounded to
/// single, well within that bound. Denormal inputs count as zero (±∞ results), results below the normal
/// range flush to zero, NaNs are quieted, a negative RSQRTPS input gives the default NaN,
/// and no MXCSR flags are raised (SDM Vol. 2B RCPPS, RSQRTPS).
fn approx_recip(x: u32, rsqrt: bool) -> u32 {
    let nan = x & 0x7F80_0000 == 0x7F80_0000 && x & 0x7F_FFFF != 0;
    if nan {
        return x | 0x40_0000;
    }
    let sign = x & 0x8000_0000;
    if x & 0x7F80_0000 == 0 {
        return sign | 0x7F80_0000;
    }
    if rsqrt && sign != 0 {
        return 0xFFC0_0000;
    }
    let v = f64::from(f32::from_bits(x));
    let r = if rsqrt { 1.0 / v.sqrt() } else { 1.0 / v };
    let r32 = r as f32;
    if r32.abs() < f32::MIN_POSITIVE {
        return sign;
    }
    r32.to_bits()
}

/// SSE, SSE2 and SSSE3 instructions on MMX registers: [`mmx_form`] handles these.
fn mmx_form_supported(m: M) -> bool {
    matches!(
        m,
        M::Pavgb
            | M::Pavgw
            | M::Pmaxsw
            | M::Pmaxub
            | M::Pminsw
            | M::Pminub
            | M::Pmulhuw
            | M::Psadbw
            | M::Pshufw
            | M::Pextrw
            | M::Pinsrw
            | M::Pmovmskb
            | M::Movntq
            | M::Maskmovq
            | M::Cvtpi2ps
            | M::Cvtps2pi
            | M::Cvttps2pi
            | M::Cvtpi2pd
            | M::Cvtpd2pi
            | M::Cvttpd2pi
            | M::Paddq
            | M::Psubq
            | M::Pmuludq
            | M::Movdq2q
            | M::Movq2dq
            | M::Pshufb
            | M::Phaddw
            | M::Phaddd
            | M::Phaddsw
            | M::Phsubw
            | M::Phsubd
            | M::Phsubsw
            | M::Pmaddubsw
            | M::Pmulhrsw
            | M::Psignb
            | M::Psignw
            | M::Psignd
            | M::Pabsb
            | M::Pabsw
            | M::Pabsd
            | M::Palignr
    )
}

/// FSW.TOP (SDM Vol. 1 §8.1.3).
const FSW_TOP_SHIFT: u16 = 11;

impl Interpreter {
    /// MMi, the low 64 bits of physical x87 register i. `fpu.st` is in stack order (ST0
    /// first, as in the FXSAVE image), so register i is ST((i − TOP) mod 8).
    fn mmx_reg(&self, i: usize) -> u64 {
        let top = usize::from((self.state.fpu.fsw >> FSW_TOP_SHIFT) & 7);
        let s = &self.state.fpu.st[(i + 8 - top) & 7];
        let mut b = [0u8; 8];
        b.copy_from_slice(&s[..8]);
        u64::from_le_bytes(b)
    }

    /// The x87 state change of an MMX-register instruction: TOP = 0 (the stack-ordered
    /// array rotates with it) and every register tagged valid (SDM Vol. 1 §9.5.1).
    fn mmx_enter(&mut self) {
        let f = &mut self.state.fpu;
        let top = usize::from((f.fsw >> FSW_TOP_SHIFT) & 7);
        f.st.rotate_right(top);
        f.fsw &= !(7 << FSW_TOP_SHIFT);
        f.ftw = 0xFF;
    }

    /// Write MMi (after [`Self::mmx_enter`]): the exponent field reads as all ones.
    fn set_mmx_reg(&mut self, i: usize, v: u64) {
        let s = &mut self.state.fpu.st[i & 7];
        s[..8].copy_from_slice(&v.to_le_bytes());
        s[8] = 0xFF;
        s[9] = 0xFF;
    }
}

/// An MMX register number.
fn mn(r: Register) -> usize {
    r.number() & 7
}

/// SSE/SSE2/SSSE3 instructions with an MMX register operand (SDM Vol. 2; fault order of
/// MMX instructions, Vol. 2A §2.5 Table 22-?: CR0.EM → #UD, the forms with an XMM operand
/// also need CR4.OSFXSR; CR0.TS → #NM; a pending unmasked x87 exception → #MF). The result
/// is computed first, then the x87 state enters MMX mode and the destination is written.
fn mmx_form(cpu: &mut Interpreter, p: &mut dyn Platform, d: &Decoded) -> Result<(), Fault> {
    let insn = &d.insn;
    let m = insn.mnemonic();
    let has_xmm = (0..insn.op_count())
        .any(|i| insn.op_kind(i) == OpKind::Register && insn.op_register(i).is_xmm());
    if cpu.state.cr0 & cr::CR0_EM != 0 || (has_xmm && cpu.state.cr4 & cr::CR4_OSFXSR == 0) {
        return Err(Fault::ud());
    }
    if cpu.state.cr0 & cr::CR0_TS != 0 {
        return Err(Fault::new(vector::NM));
    }
    if cpu.state.fpu.fsw & 0x80 != 0 {
        return Err(Fault::new(vector::MF));
    }
    // Operand i as a 64-bit value (MMX register, XMM register's low half, GPR, memory of
    // the instruction's memory size, immediate), or the full 128 bits for XMM/m128.
    let value = |cpu: &mut Interpreter, p: &mut dyn Platform, i: u32| -> Result<u128, Fault> {
        if insn.op_kind(i) == OpKind::Register && insn.op_register(i).is_mm() {
            Ok(u128::from(cpu.mmx_reg(mn(insn.op_register(i)))))
        } else {
            cpu.operand(p, d, i)
        }
    };
    let imm = insn.immediate8();
    use int::{lane, map2, slane, smap2};
    let lo64 = |v: u128| v & u128::from(u64::MAX);
    // MMX-destination integer operations.
    let a = if insn.op0_kind() == OpKind::Register && insn.op0_register().is_mm() {
        u128::from(cpu.mmx_reg(mn(insn.op0_register())))
    } else {
        0
    };
    let int_result: Option<u128> = match m {
        M::Pavgb => Some(map2(a, value(cpu, p, 1)?, 8, |x, y| (x + y + 1) >> 1)),
        M::Pavgw => Some(map2(a, value(cpu, p, 1)?, 16, |x, y| (x + y + 1) >> 1)),
        M::Pmaxsw => Some(smap2(a, value(cpu, p, 1)?, 16, i64::max)),
        M::Pminsw => Some(smap2(a, value(cpu, p, 1)?, 16, i64::min)),
        M::Pmaxub => Some(map2(a, value(cpu, p, 1)?, 8, u64::max)),
        M::Pminub => Some(map2(a, value(cpu, p, 1)?, 8, u64::min)),
        M::Pmulhuw => Some(map2(a, value(cpu, p, 1)?, 16, |x, y| (x * y) >> 16)),
        M::Psadbw => Some(lo64(int::sad(a, lo64(value(cpu, p, 1)?)))),
        M::Paddq => Some(map2(a, value(cpu, p, 1)?, 64, u64::wrapping_add)),
        M::Psubq => Some(map2(a, value(cpu, p, 1)?, 64, u64::wrapping_sub)),
        M::Pmuludq => {
            let b = value(cpu, p, 1)?;
            Some(u128::from(lane(a, 32, 0) * lane(b, 32, 0)))
        }
        M::Pshufw => {
            let b = value(cpu, p, 1)?;
            Some(int::build(16, |i| {
                if i < 4 {
                    lane(b, 16, u32::from((imm >> (2 * i)) & 3))
                } else {
                    0
                }
            }))
        }
        M::Pinsrw => {
            let v = value(cpu, p, 1)? as u64 & 0xFFFF;
            let sh = u32::from(imm & 3) * 16;
            Some((a & !(0xFFFFu128 << sh)) | (u128::from(v) << sh))
        }
        M::Movdq2q => Some(lo64(value(cpu, p, 1)?)),
        M::Pshufb => {
            let b = value(cpu, p, 1)?;
            Some(int::build(8, |i| {
                let s = lane(b, 8, i);
                if i >= 8 || s & 0x80 != 0 {
                    0
                } else {
                    lane(a, 8, (s & 7) as u32)
                }
            }))
        }
        M::Phaddw | M::Phaddsw | M::Phsubw | M::Phsubsw | M::Phaddd | M::Phsubd => {
            let b = value(cpu, p, 1)?;
            let bits = if matches!(m, M::Phaddd | M::Phsubd) {
                32
            } else {
                16
            };
            let f = |x: i64, y: i64| -> i64 {
                match m {
                    M::Phaddw | M::Phaddd => x + y,
                    M::Phsubw | M::Phsubd => x - y,
                    M::Phaddsw => int::sat_s(x + y, 16),
                    _ => int::sat_s(x - y, 16),
                }
            };
            let half = 32 / bits; // results per source
            Some(int::build(bits, |i| {
                if i >= 2 * half {
                    return 0;
                }
                let (src, k) = if i < half { (a, i) } else { (b, i - half) };
                f(slane(src, bits, 2 * k), slane(src, bits, 2 * k + 1)) as u64
            }))
        }
        M::Pmaddubsw => {
            let b = value(cpu, p, 1)?;
            Some(lo64(int::build(16, |i| {
                let p0 = lane(a, 8, 2 * i) as i64 * slane(b, 8, 2 * i);
                let p1 = lane(a, 8, 2 * i + 1) as i64 * slane(b, 8, 2 * i + 1);
                int::sat_s(p0 + p1, 16) as u64
            })))
        }
        M::Pmulhrsw => Some(lo64(smap2(a, value(cpu, p, 1)?, 16, |x, y| {
            (((x * y) >> 14) + 1) >> 1
        }))),
        M::Psignb | M::Psignw | M::Psignd => {
            let bits = match m {
                M::Psignb => 8,
                M::Psignw => 16,
                _ => 32,
            };
            Some(lo64(smap2(a, value(cpu, p, 1)?, bits, |x, y| {
                match y.signum() {
                    -1 => x.wrapping_neg(),
                    0 => 0,
                    _ => x,
                }
            })))
        }
        M::Pabsb | M::Pabsw | M::Pabsd => {
            let bits = match m {
                M::Pabsb => 8,
                M::Pabsw => 16,
                _ => 32,
            };
            let b = lo64(value(cpu, p, 1)?);
            Some(lo64(int::build(bits, |i| slane(b, bits, i).unsigned_abs())))
        }
        M::Palignr => {
            let b = value(cpu, p, 1)?;
            let cat = (a << 64) | lo64(b);
            let sh = u32::from(imm) * 8;
            Some(if sh >= 128 { 0 } else { lo64(cat >> sh) })
        }
        _ => None,
    };
    if let Some(r) = int_result {
        cpu.mmx_enter();
        cpu.set_mmx_reg(mn(insn.op0_register()), lo64(r) as u64);
        return Ok(());
    }
    match m {
        M::Pextrw => {
            let v = lane(value(cpu, p, 1)?, 16, u32::from(imm & 3));
            cpu.mmx_enter();
            cpu.gpr_write(insn.op0_register(), v);
            Ok(())
        }
        M::Pmovmskb => {
            let v = lo64(value(cpu, p, 1)?);
            let mask = (0..8).fold(0u64, |acc, i| acc | ((lane(v, 8, i) >> 7) << i));
            cpu.mmx_enter();
            cpu.gpr_write(insn.op0_register(), mask);
            Ok(())
        }
        M::Movntq => {
            let v = value(cpu, p, 1)?;
            cpu.simd_store(p, d, 8, false, v)?;
            cpu.mmx_enter();
            Ok(())
        }
        M::Maskmovq => {
            let data = cpu.mmx_reg(mn(insn.op1_register())).to_le_bytes();
            let mask = cpu.mmx_reg(mn(insn.op2_register())).to_le_bytes();
            cpu.masked_store(p, d, &data, &mask)?;
            cpu.mmx_enter();
            Ok(())
        }
        M::Movq2dq => {
            let v = value(cpu, p, 1)?;
            cpu.mmx_enter();
            cpu.set_xmm(xn(insn.op0_register()), v);
            Ok(())
        }
        M::Cvtpi2ps | M::Cvtpi2pd => {
            let b = value(cpu, p, 1)?;
            let x = cpu.xmm(xn(insn.op0_register()));
            let mut env = Env::new(cpu.state.fpu.mxcsr);
            let r = if m == M::Cvtpi2ps {
                let l0 = float::from_int::<F32>(&mut env, slane(b, 32, 0));
                let l1 = float::from_int::<F32>(&mut env, slane(b, 32, 1));
                (x & !u128::from(u64::MAX)) | u128::from(l0) | (u128::from(l1) << 32)
            } else {
                let l0 = float::from_int::<F64>(&mut env, slane(b, 32, 0));
                let l1 = float::from_int::<F64>(&mut env, slane(b, 32, 1));
                u128::from(l0) | (u128::from(l1) << 64)
            };
            // The x87 state enters MMX mode even when #XM follows (as the host shows).
            let (mx, fault) = env.finish();
            cpu.state.fpu.mxcsr = mx;
            cpu.mmx_enter();
            if fault {
                return Err(cpu.simd_fp_fault());
            }
            cpu.set_xmm(xn(insn.op0_register()), r);
            Ok(())
        }
        M::Cvtps2pi | M::Cvttps2pi | M::Cvtpd2pi | M::Cvttpd2pi => {
            let b = value(cpu, p, 1)?;
            let mut env = Env::new(cpu.state.fpu.mxcsr);
            let rm = if matches!(m, M::Cvttps2pi | M::Cvttpd2pi) {
                Round::TowardZero
            } else {
                env.round()
            };
            let (l0, l1) = if matches!(m, M::Cvtps2pi | M::Cvttps2pi) {
                (
                    float::to_int::<F32>(&mut env, lane(b, 32, 0), 32, rm),
                    float::to_int::<F32>(&mut env, lane(b, 32, 1), 32, rm),
                )
            } else {
                (
                    float::to_int::<F64>(&mut env, lane(b, 64, 0), 32, rm),
                    float::to_int::<F64>(&mut env, lane(b, 64, 1), 32, rm),
                )
            };
            let (mx, fault) = env.finish();
            cpu.state.fpu.mxcsr = mx;
            cpu.mmx_enter();
            if fault {
                return Err(cpu.simd_fp_fault());
            }
            cpu.set_mmx_reg(mn(insn.op0_register()), l0 | (l1 << 32));
            Ok(())
        }
        _ => super::undefined(cpu, p, d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reciprocal_approximations_meet_the_sdm_bound() {
        for x in [1.0f32, 3.0, 0.1, 1e30, -7.5, 1.2e-38] {
            let r = f32::from_bits(approx_recip(x.to_bits(), false));
            if x.abs() < 1e30 {
                assert!(((r * x) - 1.0).abs() <= 1.5 / 4096.0, "rcp({x}) = {r}");
            }
            if x > 0.0 {
                let q = f32::from_bits(approx_recip(x.to_bits(), true));
                assert!(
                    ((q * q * x) - 1.0).abs() <= 3.0 / 4096.0,
                    "rsqrt({x}) = {q}"
                );
            }
        }
        assert_eq!(
            approx_recip(0x8000_0001, false),
            0xFF80_0000,
            "denormal → −∞"
        );
        assert_eq!(approx_recip(0x7F7F_FFFF, false), 0, "tiny result flushes");
        assert_eq!(
            approx_recip(0xBF80_0000, true),
            0xFFC0_0000,
            "rsqrt(−1) = QNaN indefinite"
        );
        assert_eq!(approx_recip(0x7F80_0001, true), 0x7FC0_0001, "SNaN quieted");
    }

    #[test]
    fn crc32c_of_a_known_string() {
        // CRC-32C("123456789") = 0xE3069283 with the conventional pre/post inversion; fed
        // as one 8-byte and one 1-byte step like CRC32 r64, m64 then CRC32 r32, m8.
        let s = b"123456789";
        let mut q = [0u8; 8];
        q.copy_from_slice(&s[..8]);
        let crc = crc32c(!0, u64::from_le_bytes(q), 8);
        assert_eq!(!crc32c(crc, u64::from(s[8]), 1), 0xE306_9283);
    }
}
