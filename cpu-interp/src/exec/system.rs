//! System instructions: descriptor-table and task registers, control and debug registers,
//! MSRs, CPUID, TSC, cache/TLB control, segment-checking instructions and SYSENTER/SYSEXIT
//! (Intel SDM Vol. 2; Vol. 3A §2.5–2.8, §4.10, §17.2; Vol. 4 for the MSRs).
//!
//! Owned by SYS. CPUID describes a "GenuineIntel" family-6 x86-64 CPU with exactly what this
//! interpreter implements: FPU, VME (with PVI), DE, PSE, TSC, MSR, PAE, CX8, SEP, MTRR, PGE,
//! CMOV, PAT, PSE-36, CLFLUSH, MMX, FXSR, SSE, SSE2, SSE3, SSSE3, SSE4.1, SSE4.2, XSAVE
//! (XCR0 = x87|SSE, leaf 0xD; `exec/sse.rs`), CMPXCHG16B, PCID, MOVBE, POPCNT, the board's
//! local APIC (x2APIC, TSC deadline; its MSRs go to the board), and in the extended leaves long
//! mode, SYSCALL/SYSRET, NX, 1 GiB pages, RDTSCP, LAHF/SAHF in 64-bit mode, LZCNT and an
//! invariant TSC; leaf 7 reports BMI1 (`exec/bmi.rs`, TZCNT) and IA32_ARCH_CAPABILITIES, whose
//! "not affected" bits are true of an interpreter that does not speculate. There is no MCE/MCA, no INVPCID and no
//! RDFSBASE family. The TSC runs at [`TSC_HZ`] from the virtual clock, advertised in leaves
//! 0x15/0x16.
//!
//! Long mode (SDM Vol. 3A §9.8.5, §2.2.1): EFER.LME with CR0.PG (and CR4.PAE) activates
//! IA-32e mode (EFER.LMA); SYSCALL/SYSRET (Vol. 2B), SWAPGS, RDTSCP, the FS/GS base MSRs and
//! CR8 (the task-priority register, kept in `state.cr8`) are here too.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};
use pcvm_core::cpu_state::{cr, flags, gpr};
use pcvm_core::{Platform, SegReg, Segment};

use crate::access::AccessKind;
use crate::fault::vector;
use crate::segment::{
    is_canonical, np, null_segment, sel_code, sys_type, Descriptor, LINEAR_ADDR_BITS,
};
use crate::{Fault, Interpreter};

/// Advertised TSC frequency: one tick per virtual nanosecond.
pub(crate) const TSC_HZ: u64 = 1_000_000_000;

/// CPUID.1:EDX feature bits reported (SDM Vol. 2A "CPUID", Table 3-11).
mod feature {
    /// x87 FPU on chip.
    pub const FPU: u32 = 1 << 0;
    pub const VME: u32 = 1 << 1;
    pub const DE: u32 = 1 << 2;
    pub const PSE: u32 = 1 << 3;
    pub const TSC: u32 = 1 << 4;
    pub const MSR: u32 = 1 << 5;
    pub const PAE: u32 = 1 << 6;
    pub const CX8: u32 = 1 << 8;
    pub const SEP: u32 = 1 << 11;
    pub const MTRR: u32 = 1 << 12;
    pub const PGE: u32 = 1 << 13;
    pub const CMOV: u32 = 1 << 15;
    pub const PAT: u32 = 1 << 16;
    pub const PSE36: u32 = 1 << 17;
    pub const CLFSH: u32 = 1 << 19;
    pub const MMX: u32 = 1 << 23;
    /// CPUID.1:ECX.CMPXCHG16B.
    pub const CX16: u32 = 1 << 13;
    pub const FXSR: u32 = 1 << 24;
    pub const SSE: u32 = 1 << 25;
    pub const SSE2: u32 = 1 << 26;
    /// CPUID.1:ECX SIMD and XSAVE bits (`exec/sse.rs`).
    pub const SSE3: u32 = 1 << 0;
    pub const SSSE3: u32 = 1 << 9;
    pub const SSE4_1: u32 = 1 << 19;
    pub const SSE4_2: u32 = 1 << 20;
    pub const XSAVE: u32 = 1 << 26;
    pub const OSXSAVE: u32 = 1 << 27;
    /// CPUID.1:ECX.PCID.
    pub const PCID: u32 = 1 << 17;
    /// CPUID.1:ECX.MOVBE.
    pub const MOVBE: u32 = 1 << 22;
    /// CPUID.1:ECX.POPCNT.
    pub const POPCNT: u32 = 1 << 23;
    /// CPUID.80000001H:EDX.Page1GB (1 GiB pages in 4-level paging).
    pub const PAGE1GB: u32 = 1 << 26;
    /// CPUID.80000001H:ECX.LZCNT.
    pub const LZCNT: u32 = 1 << 5;
    /// CPUID.80000001H:EDX.SYSCALL (SYSCALL/SYSRET in 64-bit mode).
    pub const SYSCALL: u32 = 1 << 11;
    /// CPUID.1:EDX.APIC: the board's local APIC (its MSRs through `Platform::*_local_msr`).
    pub const APIC: u32 = 1 << 9;
    /// CPUID.1:ECX.x2APIC.
    pub const ECX_X2APIC: u32 = 1 << 21;
    /// CPUID.1:ECX.TSC-Deadline.
    pub const ECX_TSC_DEADLINE: u32 = 1 << 24;
    /// CPUID.80000001H:EDX.NX.
    pub const NX: u32 = 1 << 20;
    /// CPUID.80000001H:EDX.RDTSCP.
    pub const RDTSCP: u32 = 1 << 27;
    /// CPUID.80000001H:EDX.LM (Intel 64 architecture).
    pub const LM: u32 = 1 << 29;
    /// CPUID.80000001H:ECX.LAHF-SAHF (available in 64-bit mode).
    pub const LAHF_LM: u32 = 1 << 0;
    /// CPUID.(EAX=7,ECX=0):EBX.BMI1.
    pub const BMI1: u32 = 1 << 3;
    /// CPUID.(EAX=7,ECX=0):EDX.IA32_ARCH_CAPABILITIES.
    pub const ARCH_CAPABILITIES: u32 = 1 << 29;
    /// CPUID.80000007H:EDX.InvariantTSC.
    pub const INVARIANT_TSC: u32 = 1 << 8;
}

/// MSR indices (SDM Vol. 4 Table 2-2).
pub(crate) mod msr {
    pub const TSC: u32 = 0x10;
    pub const APIC_BASE: u32 = 0x1B;
    pub const PLATFORM_ID: u32 = 0x17;
    pub const ARCH_CAPABILITIES: u32 = 0x10A;
    pub const BIOS_SIGN_ID: u32 = 0x8B;
    pub const MTRRCAP: u32 = 0xFE;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const MISC_ENABLE: u32 = 0x1A0;
    pub const MTRR_PHYS_BASE0: u32 = 0x200;
    pub const MTRR_PHYS_MASK7: u32 = 0x20F;
    pub const MTRR_FIX64K: u32 = 0x250;
    pub const MTRR_FIX16K_80000: u32 = 0x258;
    pub const MTRR_FIX16K_A0000: u32 = 0x259;
    pub const MTRR_FIX4K_C0000: u32 = 0x268;
    pub const MTRR_FIX4K_F8000: u32 = 0x26F;
    pub const PAT: u32 = 0x277;
    pub const MTRR_DEF_TYPE: u32 = 0x2FF;
    pub const EFER: u32 = 0xC000_0080;
    pub const STAR: u32 = 0xC000_0081;
    pub const LSTAR: u32 = 0xC000_0082;
    pub const CSTAR: u32 = 0xC000_0083;
    pub const FMASK: u32 = 0xC000_0084;
    pub const FS_BASE: u32 = 0xC000_0100;
    pub const GS_BASE: u32 = 0xC000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xC000_0102;
    pub const TSC_AUX: u32 = 0xC000_0103;
    pub const TSC_DEADLINE: u32 = 0x6E0;
    pub const X2APIC_FIRST: u32 = 0x800;
    pub const X2APIC_LAST: u32 = 0x8FF;
}

/// MSRs of the board's local APIC: IA32_APIC_BASE, IA32_TSC_DEADLINE, x2APIC (SDM Vol. 3A
/// §11.4.4, §11.5.4.1, §11.12.1).
fn local_apic_msr(index: u32) -> bool {
    matches!(
        index,
        msr::APIC_BASE | msr::TSC_DEADLINE | msr::X2APIC_FIRST..=msr::X2APIC_LAST
    )
}

/// IA32_ARCH_CAPABILITIES (read-only; SDM Vol. 4 Table 2-2): an interpreter does not
/// speculate, so it is not affected by the transient-execution issues these bits rule out —
/// RDCL_NO (0), SKIP_L1DFL_VMENTRY (3), SSB_NO (4), MDS_NO (5), IF_PSCHANGE_MC_NO (6),
/// TAA_NO (8), SBDR_SSDP_NO (13), FBSDP_NO (14), PSDP_NO (15), GDS_NO (26), RFDS_NO (27).
/// Guests then skip mitigations such as kernel page-table isolation.
const ARCH_CAPABILITIES_VALUE: u64 = (1 << 0)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 8)
    | (1 << 13)
    | (1 << 14)
    | (1 << 15)
    | (1 << 26)
    | (1 << 27);

/// IA32_MTRRCAP: 8 variable ranges, fixed ranges, write-combining (SDM Vol. 3A §11.11.1).
const MTRRCAP_VALUE: u64 = 0x508;

/// CR4 bits a guest may set: the features CPUID reports (SDM Vol. 3A §2.5; others are
/// reserved → #GP(0)).
const CR4_SUPPORTED: u64 = cr::CR4_VME
    | cr::CR4_PVI
    | cr::CR4_TSD
    | cr::CR4_DE
    | cr::CR4_PSE
    | cr::CR4_PAE
    | cr::CR4_PGE
    | cr::CR4_PCE
    | cr::CR4_OSFXSR
    | cr::CR4_OSXMMEXCPT
    | cr::CR4_PCIDE
    | cr::CR4_OSXSAVE;

/// CR4 bits whose change flushes the whole TLB, global entries included (SDM Vol. 3A
/// §4.10.4.1).
const CR4_PAGING: u64 = cr::CR4_PAE | cr::CR4_PSE | cr::CR4_PGE | cr::CR4_PCIDE;

/// EFER bits that exist: SCE, LME, LMA (read-only) and NXE (SDM Vol. 3A §2.2.1, Table 2-1).
const EFER_DEFINED: u64 = cr::EFER_SCE | cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE;

/// CR3 with CR4.PCIDE: bit 63 asks not to flush the PCID's translations and is not stored
/// (SDM Vol. 3A §4.10.4.1).
const CR3_PCID_NOFLUSH: u64 = 1 << 63;

/// RFLAGS bits SYSRET restores from R11: all but VM, RF and the reserved ones
/// (SDM Vol. 2B "SYSRET": `RFLAGS := (R11 & 3C7FD7H) | 2`).
const SYSRET_FLAGS: u64 = 0x3C_7FD7;

/// CR0 bits that exist on this CPU; writes to others are ignored (SDM Vol. 3A §2.5).
const CR0_WRITABLE: u64 = cr::CR0_PE
    | cr::CR0_MP
    | cr::CR0_EM
    | cr::CR0_TS
    | cr::CR0_NE
    | cr::CR0_WP
    | cr::CR0_AM
    | cr::CR0_NW
    | cr::CR0_CD
    | cr::CR0_PG;

/// Brand string of CPUID 0x80000002–4 (48 bytes, NUL padded).
const BRAND: &[u8] = b"pcvm x86-64 reference interpreter";

/// A memory type encoding valid in MTRRs: UC, WC, WT, WP, WB (SDM Vol. 3A §11.11.2.1).
fn valid_mtrr_type(t: u8) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

impl Interpreter {
    /// Execute a system instruction (see the module docs). `state.rip` holds the next
    /// instruction's address; nothing is changed when a fault is returned.
    pub(crate) fn exec_system(
        &mut self,
        p: &mut dyn Platform,
        insn: &Instruction,
    ) -> Result<(), Fault> {
        let pm = self.state.protected_mode();
        let vm = self.state.rflags & flags::VM != 0;
        let cpl = self.state.cpl();
        // Instructions that exist only in protected mode (#UD in real and v86 mode).
        let pm_only = || {
            if pm && !vm {
                Ok(())
            } else {
                Err(Fault::ud())
            }
        };
        // CPL 0 required (v86 runs at CPL 3).
        let ring0 = || if cpl == 0 { Ok(()) } else { Err(Fault::gp(0)) };
        match insn.mnemonic() {
            Mnemonic::Lgdt | Mnemonic::Lidt => {
                ring0()?;
                let (seg, off) = self.memory_operand(insn);
                let limit = u16::from_le_bytes(self.read_seg::<2>(p, seg, off)?);
                let amask = self.address_mask(insn);
                let base_off = off.wrapping_add(2) & amask;
                // 64-bit mode loads an 8-byte base, which must be canonical (SDM Vol. 2A
                // "LGDT/LIDT").
                let base = if matches!(insn.code(), Code::Lgdt_m1664 | Code::Lidt_m1664) {
                    let b = u64::from_le_bytes(self.read_seg::<8>(p, seg, base_off)?);
                    if !is_canonical(b) {
                        return Err(Fault::gp(0));
                    }
                    b
                } else {
                    let mut b = u32::from_le_bytes(self.read_seg::<4>(p, seg, base_off)?);
                    if matches!(insn.code(), Code::Lgdt_m1632_16 | Code::Lidt_m1632_16) {
                        b &= 0x00FF_FFFF;
                    }
                    u64::from(b)
                };
                let t = if insn.mnemonic() == Mnemonic::Lgdt {
                    &mut self.state.gdtr
                } else {
                    &mut self.state.idtr
                };
                t.base = base;
                t.limit = limit;
                Ok(())
            }
            Mnemonic::Sgdt | Mnemonic::Sidt => {
                let t = if insn.mnemonic() == Mnemonic::Sgdt {
                    self.state.gdtr
                } else {
                    self.state.idtr
                };
                let (seg, off) = self.memory_operand(insn);
                let amask = self.address_mask(insn);
                // 64-bit mode stores the full 8-byte base (SDM Vol. 2B "SGDT").
                let n: usize = if self.state.in_64bit_code() { 10 } else { 6 };
                // Check both parts before writing either.
                self.seg_linear(seg, off, 2, AccessKind::Write)?;
                self.seg_linear(
                    seg,
                    off.wrapping_add(2) & amask,
                    n as u64 - 2,
                    AccessKind::Write,
                )?;
                let mut b = [0u8; 10];
                b[..2].copy_from_slice(&t.limit.to_le_bytes());
                b[2..].copy_from_slice(&t.base.to_le_bytes());
                let linear = self.seg_linear(seg, off, n as u64, AccessKind::Write)?;
                self.write_linear(p, linear, &b[..n])
            }
            Mnemonic::Sldt | Mnemonic::Str => {
                pm_only()?;
                let v = if insn.mnemonic() == Mnemonic::Sldt {
                    self.state.ldtr.selector
                } else {
                    self.state.tr.selector
                };
                self.write_rm(p, insn, u32::from(v), 2)
            }
            Mnemonic::Lldt => {
                pm_only()?;
                ring0()?;
                let sel = self.read_rm16(p, insn)?;
                self.lldt(p, sel)
            }
            Mnemonic::Ltr => {
                pm_only()?;
                ring0()?;
                let sel = self.read_rm16(p, insn)?;
                self.ltr(p, sel)
            }
            Mnemonic::Smsw => self.write_rm(p, insn, self.state.cr0 as u32, 2),
            Mnemonic::Lmsw => {
                ring0()?;
                let v = u64::from(self.read_rm16(p, insn)?);
                // Loads MP/EM/TS and can set but not clear PE (SDM Vol. 2 "LMSW").
                let cr0 = self.state.cr0;
                let new = (cr0 & !0xE) | (v & 0xF) | (cr0 & cr::CR0_PE);
                self.write_cr0(p, new)
            }
            Mnemonic::Clts => {
                ring0()?;
                self.state.cr0 &= !cr::CR0_TS;
                Ok(())
            }
            Mnemonic::Arpl => {
                pm_only()?;
                let dest = self.read_rm16(p, insn)?;
                let src = self.get_reg(reg_loc(insn.op1_register())?, 2) as u16;
                let f = self.rflags();
                if dest & 3 < src & 3 {
                    let v = u32::from((dest & !3) | (src & 3));
                    if insn.op0_kind() == OpKind::Register {
                        // Only the low 16 bits of a register destination change, whatever
                        // the operand size (SDM Vol. 2A ARPL: "DEST[RPL] := SRC[RPL]").
                        self.set_reg(reg_loc(insn.op0_register())?, 2, u64::from(v));
                    } else {
                        self.write_rm(p, insn, v, 2)?;
                    }
                    self.set_rflags(f | flags::ZF);
                } else {
                    self.set_rflags(f & !flags::ZF);
                }
                Ok(())
            }
            Mnemonic::Lar | Mnemonic::Lsl => {
                pm_only()?;
                let sel = self.read_rm16_op(p, insn, 1)?;
                let result = self.lar_lsl(p, sel, insn.mnemonic() == Mnemonic::Lar)?;
                let f = self.rflags();
                match result {
                    Some(v) => {
                        let r = insn.op0_register();
                        let loc = reg_loc(r)?;
                        self.set_reg(loc, r.size() as u8, u64::from(v));
                        self.set_rflags(f | flags::ZF);
                    }
                    None => self.set_rflags(f & !flags::ZF),
                }
                Ok(())
            }
            Mnemonic::Verr | Mnemonic::Verw => {
                pm_only()?;
                let sel = self.read_rm16(p, insn)?;
                let ok = self.verify(p, sel, insn.mnemonic() == Mnemonic::Verw)?;
                let f = self.rflags();
                self.set_rflags(if ok { f | flags::ZF } else { f & !flags::ZF });
                Ok(())
            }
            Mnemonic::Invlpg => {
                ring0()?;
                // Never faults, whatever the address (SDM Vol. 2A "INVLPG").
                let (seg, off) = self.memory_operand(insn);
                let base = if self.state.in_64bit_code() && !matches!(seg, SegReg::Fs | SegReg::Gs)
                {
                    0
                } else {
                    self.state.seg(seg).base
                };
                let linear = self.wrap_linear(base.wrapping_add(off));
                self.tlb.invalidate(linear);
                self.jmp_invalidate(linear);
                Ok(())
            }
            Mnemonic::Wbinvd | Mnemonic::Invd => ring0(),
            // Caches are not modelled: CLFLUSH only checks that the byte could be read
            // (segment and page checks, SDM Vol. 2A "CLFLUSH").
            Mnemonic::Clflush => {
                let (seg, off) = self.memory_operand(insn);
                let linear = self.seg_linear(seg, off, 1, AccessKind::Read)?;
                self.translate(p, linear, AccessKind::Read).map(|_| ())
            }
            Mnemonic::Rdmsr => {
                ring0()?;
                let index = self.state.gpr[gpr::RCX] as u32;
                let v = self.read_msr(p, index)?;
                self.state.gpr[gpr::RAX] = v & 0xFFFF_FFFF;
                self.state.gpr[gpr::RDX] = v >> 32;
                Ok(())
            }
            Mnemonic::Wrmsr => {
                ring0()?;
                let index = self.state.gpr[gpr::RCX] as u32;
                let v = (self.state.gpr[gpr::RDX] << 32) | (self.state.gpr[gpr::RAX] & 0xFFFF_FFFF);
                self.write_msr(p, index, v)
            }
            Mnemonic::Rdtsc | Mnemonic::Rdtscp => {
                if self.state.cr4 & cr::CR4_TSD != 0 && cpl > 0 {
                    return Err(Fault::gp(0));
                }
                let t = self.tsc_now(p);
                self.state.gpr[gpr::RAX] = t & 0xFFFF_FFFF;
                self.state.gpr[gpr::RDX] = t >> 32;
                if insn.mnemonic() == Mnemonic::Rdtscp {
                    // ECX = IA32_TSC_AUX[31:0] (SDM Vol. 2B "RDTSCP").
                    self.state.gpr[gpr::RCX] = self.state.msrs.tsc_aux & 0xFFFF_FFFF;
                }
                Ok(())
            }
            Mnemonic::Rdpmc => {
                if self.state.cr4 & cr::CR4_PCE == 0 && cpl > 0 {
                    return Err(Fault::gp(0));
                }
                // No performance-monitoring counters exist (CPUID leaf 0xA is not reported),
                // so every counter index is invalid.
                Err(Fault::gp(0))
            }
            Mnemonic::Cpuid => {
                let leaf = self.state.gpr[gpr::RAX] as u32;
                let (a, b, mut c, d) = cpuid(leaf, self.state.gpr[gpr::RCX] as u32);
                // CPUID.1:ECX.OSXSAVE mirrors CR4.OSXSAVE (SDM Vol. 2A Table 3-10).
                if leaf == 1 && self.state.cr4 & cr::CR4_OSXSAVE != 0 {
                    c |= feature::OSXSAVE;
                }
                self.state.gpr[gpr::RAX] = u64::from(a);
                self.state.gpr[gpr::RBX] = u64::from(b);
                self.state.gpr[gpr::RCX] = u64::from(c);
                self.state.gpr[gpr::RDX] = u64::from(d);
                Ok(())
            }
            Mnemonic::Mov => self.mov_cr_dr(p, insn, cpl),
            Mnemonic::Sysenter => self.sysenter(),
            Mnemonic::Sysexit => self.sysexit(cpl, false),
            Mnemonic::Sysexitq => self.sysexit(cpl, true),
            Mnemonic::Syscall => self.syscall(),
            Mnemonic::Sysret => self.sysret(cpl, false),
            Mnemonic::Sysretq => self.sysret(cpl, true),
            Mnemonic::Swapgs => {
                // 64-bit mode only, CPL 0 (SDM Vol. 2B "SWAPGS").
                if !self.state.in_64bit_code() {
                    return Err(Fault::ud());
                }
                ring0()?;
                let gs = self.state.seg(SegReg::Gs).base;
                self.state.seg_mut(SegReg::Gs).base = self.state.msrs.kernel_gs_base;
                self.state.msrs.kernel_gs_base = gs;
                Ok(())
            }
            _ => Err(Fault::ud()),
        }
    }

    /// LLDT (SDM Vol. 2 "LLDT"): a null selector leaves LDTR unusable.
    fn lldt(&mut self, p: &mut dyn Platform, sel: u16) -> Result<(), Fault> {
        if sel & 0xFFFC == 0 {
            self.state.ldtr = null_segment(sel);
            return Ok(());
        }
        let code = sel_code(sel);
        if sel & 4 != 0 {
            return Err(Fault::gp(code));
        }
        let (d, base) = self.read_ldt_tss_descriptor(p, sel)?;
        if d.is_code_or_data() || d.typ() != sys_type::LDT {
            return Err(Fault::gp(code));
        }
        if !d.present() {
            return Err(np(code));
        }
        let mut ldtr = d.to_segment(sel);
        ldtr.base = base;
        self.state.ldtr = ldtr;
        Ok(())
    }

    /// The LDT or TSS descriptor LLDT/LTR name, with its base: 8 bytes in legacy mode, 16 in
    /// IA-32e mode (64-bit base, canonical, upper type field zero; SDM Vol. 3A §7.2.3,
    /// Vol. 2A "LLDT"/"LTR" #GP(selector) conditions).
    fn read_ldt_tss_descriptor(
        &mut self,
        p: &mut dyn Platform,
        sel: u16,
    ) -> Result<(Descriptor, u64), Fault> {
        let code = sel_code(sel);
        if !self.state.long_mode_active() {
            let Some(d) = self.read_descriptor(p, sel)? else {
                return Err(Fault::gp(code));
            };
            return Ok((d, u64::from(d.base())));
        }
        let Some((d, upper)) = self.read_system_descriptor(p, sel)? else {
            return Err(Fault::gp(code));
        };
        let base = u64::from(d.base()) | (upper.high() << 32);
        if !d.is_code_or_data() && (!upper.type_ok() || !is_canonical(base)) {
            return Err(Fault::gp(code));
        }
        Ok((d, base))
    }

    /// LTR (SDM Vol. 2 "LTR"): loads an available TSS and marks it busy.
    fn ltr(&mut self, p: &mut dyn Platform, sel: u16) -> Result<(), Fault> {
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let code = sel_code(sel);
        if sel & 4 != 0 {
            return Err(Fault::gp(code));
        }
        let (d, base) = self.read_ldt_tss_descriptor(p, sel)?;
        // IA-32e mode knows only the 64-bit TSS (type 9, SDM Vol. 3A §7.7).
        let ok = if self.state.long_mode_active() {
            d.typ() == sys_type::TSS64_AVAIL
        } else {
            matches!(d.typ(), sys_type::TSS16_AVAIL | sys_type::TSS32_AVAIL)
        };
        if d.is_code_or_data() || !ok {
            return Err(Fault::gp(code));
        }
        if !d.present() {
            return Err(np(code));
        }
        let access = ((d.0 >> 40) as u8) | 2;
        self.write_descriptor_access(p, sel, access)?;
        let mut tr = d.to_segment(sel);
        tr.base = base;
        tr.attributes |= 2;
        self.state.tr = tr;
        Ok(())
    }

    /// LAR/LSL: the access rights (masked as LAR stores them) or the scaled limit of a
    /// visible descriptor, `None` if the selector fails the checks (ZF = 0)
    /// (SDM Vol. 2 "LAR", "LSL").
    fn lar_lsl(&mut self, p: &mut dyn Platform, sel: u16, lar: bool) -> Result<Option<u32>, Fault> {
        if sel & 0xFFFC == 0 {
            return Ok(None);
        }
        let Some(d) = self.read_descriptor(p, sel)? else {
            return Ok(None);
        };
        if !d.is_code_or_data() {
            // IA-32e mode has only the LDT, the 64-bit TSS and the 64-bit call gate
            // (SDM Vol. 2A "LAR", "LSL" IA-32e mode tables).
            let ok = match (self.state.long_mode_active(), lar) {
                (false, true) => matches!(d.typ(), 1 | 2 | 3 | 4 | 5 | 9 | 11 | 12),
                (false, false) => matches!(d.typ(), 1 | 2 | 3 | 9 | 11),
                (true, true) => matches!(d.typ(), 2 | 9 | 11 | 12),
                (true, false) => matches!(d.typ(), 2 | 9 | 11),
            };
            if !ok {
                return Ok(None);
            }
        }
        if !d.conforming() {
            let cpl = self.state.cpl();
            let rpl = (sel & 3) as u8;
            if d.dpl() < cpl || d.dpl() < rpl {
                return Ok(None);
            }
        }
        Ok(Some(if lar {
            ((d.0 >> 32) as u32) & 0x00F0_FF00
        } else {
            d.limit()
        }))
    }

    /// VERR/VERW: the segment is readable (writable) at the current privilege level.
    fn verify(&mut self, p: &mut dyn Platform, sel: u16, write: bool) -> Result<bool, Fault> {
        if sel & 0xFFFC == 0 {
            return Ok(false);
        }
        let Some(d) = self.read_descriptor(p, sel)? else {
            return Ok(false);
        };
        if !d.is_code_or_data() {
            return Ok(false);
        }
        let usable = if write {
            d.writable_data()
        } else {
            d.readable()
        };
        if !usable {
            return Ok(false);
        }
        if !d.conforming() {
            let cpl = self.state.cpl();
            let rpl = (sel & 3) as u8;
            if d.dpl() < cpl || d.dpl() < rpl {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// MOV to/from CRn and DRn (SDM Vol. 2 "MOV—Move to/from Control Registers", "MOV—Move
    /// to/from Debug Registers"). The GPR operand is 64 bits wide in 64-bit mode (the decoder
    /// gives a 64-bit register there) and 32 bits elsewhere; CR8 exists only in 64-bit mode.
    fn mov_cr_dr(
        &mut self,
        p: &mut dyn Platform,
        insn: &Instruction,
        cpl: u8,
    ) -> Result<(), Fault> {
        let (dst, src) = (insn.op0_register(), insn.op1_register());
        let to_special = dst.is_cr() || dst.is_dr();
        let special = if to_special { dst } else { src };
        let gpr_reg = if to_special { src } else { dst };
        if special.is_tr() || (!special.is_cr() && !special.is_dr()) || !gpr_reg.is_gpr() {
            return Err(Fault::ud());
        }
        let gpr_index = usize::from(gpr_reg.number() as u8 & 0xF);
        let wide = gpr_reg.is_gpr64();
        let gpr_value = if wide {
            self.state.gpr[gpr_index]
        } else {
            self.state.gpr[gpr_index] & 0xFFFF_FFFF
        };
        if special.is_cr() {
            let n = special as u32 - Register::CR0 as u32;
            // CR1, CR5–CR7 and CR9+ are reserved; CR8 decodes only in 64-bit mode.
            if !matches!(n, 0 | 2 | 3 | 4 | 8) {
                return Err(Fault::ud());
            }
            if cpl != 0 {
                return Err(Fault::gp(0));
            }
            if to_special {
                let v = gpr_value;
                match n {
                    0 => self.write_cr0(p, v),
                    2 => {
                        self.state.cr2 = v;
                        Ok(())
                    }
                    3 => self.write_cr3(p, v),
                    4 => self.write_cr4(p, v),
                    _ => {
                        // TPR: bits 63:4 are reserved (SDM Vol. 3A §10.8.6.1).
                        if v & !0xF != 0 {
                            return Err(Fault::gp(0));
                        }
                        // CR8 is the local APIC's TPR[7:4] when the board has one (SDM
                        // Vol. 3A "Interaction of Task Priorities between CR8 and APIC").
                        p.write_cr8(v);
                        self.state.cr8 = v;
                        Ok(())
                    }
                }
            } else {
                let v = match n {
                    0 => self.state.cr0,
                    2 => self.state.cr2,
                    3 => self.state.cr3,
                    4 => self.state.cr4,
                    _ => {
                        if let Some(class) = p.read_cr8() {
                            self.state.cr8 = class;
                        }
                        self.state.cr8 & 0xF
                    }
                };
                self.state.gpr[gpr_index] = if wide { v } else { v & 0xFFFF_FFFF };
                Ok(())
            }
        } else {
            let mut n = (special as u32 - Register::DR0 as u32) as usize;
            if n > 7 {
                return Err(Fault::ud());
            }
            if n == 4 || n == 5 {
                // DR4/DR5 alias DR6/DR7 unless CR4.DE (SDM Vol. 3A §17.2.2).
                if self.state.cr4 & cr::CR4_DE != 0 {
                    return Err(Fault::ud());
                }
                n += 2;
            }
            if cpl != 0 {
                return Err(Fault::gp(0));
            }
            if self.state.dr[7] & DR7_GD != 0 {
                // General detect: #DB fault with DR6.BD, GD cleared for the handler
                // (SDM Vol. 3A §17.2.4). Delivered here so DR6/DR7 changes are kept.
                return self.general_detect(p, insn);
            }
            if to_special {
                let v = gpr_value;
                // The upper halves of DR6/DR7 are reserved: #GP(0) if set (SDM Vol. 3A
                // §17.2.4, §17.2.6).
                if (n == 6 || n == 7) && v >> 32 != 0 {
                    return Err(Fault::gp(0));
                }
                self.state.dr[n] = match n {
                    6 => (v & 0xE00F) | 0xFFFF_0FF0,
                    7 => (v & 0xFFFF_23FF) | 0x400,
                    _ => v,
                };
            } else {
                let v = self.state.dr[n];
                self.state.gpr[gpr_index] = if wide { v } else { v & 0xFFFF_FFFF };
            }
            Ok(())
        }
    }

    /// Raise the general-detect #DB for a MOV DRn (a fault: RIP back at the instruction).
    fn general_detect(&mut self, p: &mut dyn Platform, insn: &Instruction) -> Result<(), Fault> {
        let start = self.state.rip.wrapping_sub(insn.len() as u64) & self.ip_mask();
        self.state.rip = start;
        self.state.dr[6] = (self.state.dr[6] & !0xF) | DR6_BD;
        self.state.dr[7] &= !DR7_GD;
        match self.raise(p, Fault::new(vector::DB)) {
            Ok(()) => Ok(()),
            // Triple fault: report a #DF so the run loop escalates to shutdown as well.
            Err(_) => Err(Fault::with_code(vector::DF, 0)),
        }
    }

    fn ip_mask(&self) -> u64 {
        match self.state.code_bitness() {
            16 => 0xFFFF,
            32 => 0xFFFF_FFFF,
            _ => u64::MAX,
        }
    }

    /// MOV CR0 / LMSW (SDM Vol. 3A §2.5, §9.8.5, §9.9): PG without PE, NW without CD and
    /// bits 63:32 are #GP(0). Setting PG with EFER.LME activates IA-32e mode (EFER.LMA) and
    /// needs CR4.PAE and a CS without L; clearing PG leaves IA-32e mode and is refused in
    /// 64-bit code. Enabling legacy PAE paging loads the PDPTEs; paging-mode changes flush
    /// the TLB.
    pub(crate) fn write_cr0(&mut self, p: &mut dyn Platform, v: u64) -> Result<(), Fault> {
        if v >> 32 != 0 {
            return Err(Fault::gp(0));
        }
        let new = (v & CR0_WRITABLE) | cr::CR0_ET;
        if new & cr::CR0_PG != 0 && new & cr::CR0_PE == 0 {
            return Err(Fault::gp(0));
        }
        if new & cr::CR0_NW != 0 && new & cr::CR0_CD == 0 {
            return Err(Fault::gp(0));
        }
        let old = self.state.cr0;
        let pg_on = new & cr::CR0_PG != 0 && old & cr::CR0_PG == 0;
        let pg_off = new & cr::CR0_PG == 0 && old & cr::CR0_PG != 0;
        let lme = self.state.efer & cr::EFER_LME != 0;
        if pg_on && lme {
            if self.state.cr4 & cr::CR4_PAE == 0 || self.state.seg(SegReg::Cs).long() {
                return Err(Fault::gp(0));
            }
        } else if pg_on && self.state.cr4 & cr::CR4_PAE != 0 {
            self.load_pdptes(p)?;
        }
        if pg_off && self.state.in_64bit_code() {
            return Err(Fault::gp(0));
        }
        if pg_on && lme {
            self.state.efer |= cr::EFER_LMA;
        } else if pg_off {
            self.state.efer &= !cr::EFER_LMA;
        }
        self.state.cr0 = new;
        if (old ^ new) & (cr::CR0_PG | cr::CR0_WP | cr::CR0_PE) != 0 {
            self.tlb_flush_keep_pdptes();
        }
        Ok(())
    }

    /// MOV CR3: flushes non-global translations; with legacy PAE paging loads the PDPTEs
    /// (SDM Vol. 3A §4.4.1, §4.10.4.1). In IA-32e mode the bits above the physical-address
    /// width are #GP(0); with CR4.PCIDE bit 63 (no flush) is accepted and not stored — the
    /// TLB is not tagged by PCID, so every CR3 load flushes non-global entries.
    pub(crate) fn write_cr3(&mut self, p: &mut dyn Platform, v: u64) -> Result<(), Fault> {
        let old = self.state.cr3;
        let new = if self.state.long_mode_active() {
            let v = if self.state.cr4 & cr::CR4_PCIDE != 0 {
                v & !CR3_PCID_NOFLUSH
            } else {
                v
            };
            if v >> crate::mmu::PHYS_ADDR_BITS != 0 {
                return Err(Fault::gp(0));
            }
            v
        } else {
            v & 0xFFFF_FFFF
        };
        self.state.cr3 = new;
        if self.pae_paging() && !self.state.long_mode_active() {
            if let Err(f) = self.load_pdptes(p) {
                self.state.cr3 = old;
                return Err(f);
            }
        }
        self.tlb.flush_non_global();
        Ok(())
    }

    /// MOV CR4: reserved bits are #GP(0), as are clearing PAE in IA-32e mode and setting
    /// PCIDE outside IA-32e mode or with CR3[11:0] ≠ 0; paging-control changes flush the
    /// whole TLB (SDM Vol. 3A §2.5, §4.10.4.1).
    pub(crate) fn write_cr4(&mut self, p: &mut dyn Platform, v: u64) -> Result<(), Fault> {
        if v & !CR4_SUPPORTED != 0 {
            return Err(Fault::gp(0));
        }
        let old = self.state.cr4;
        let changed = old ^ v;
        let lma = self.state.long_mode_active();
        if lma && v & cr::CR4_PAE == 0 {
            return Err(Fault::gp(0));
        }
        if changed & v & cr::CR4_PCIDE != 0 && (!lma || self.state.cr3 & 0xFFF != 0) {
            return Err(Fault::gp(0));
        }
        self.state.cr4 = v;
        if self.pae_paging() && !lma && changed & (cr::CR4_PAE | cr::CR4_PSE | cr::CR4_PGE) != 0 {
            if let Err(f) = self.load_pdptes(p) {
                self.state.cr4 = old;
                return Err(f);
            }
        }
        if changed & CR4_PAGING != 0 {
            self.tlb_flush_keep_pdptes();
        }
        Ok(())
    }

    /// Flush all translations but keep the PDPTE registers just loaded.
    fn tlb_flush_keep_pdptes(&mut self) {
        let pdptes = self.tlb.pdptes;
        self.tlb.flush();
        self.tlb.pdptes = pdptes;
    }

    /// The current TSC: the last value plus the virtual time since, at [`TSC_HZ`] (at least
    /// one tick). A value
    /// changed by WRMSR or a state load re-anchors the count (SDM Vol. 3B §18.17).
    pub(crate) fn tsc_now(&mut self, p: &mut dyn Platform) -> u64 {
        let now = p.clock().now_ns();
        let (ns, last) = match self.tsc_anchor {
            Some((ns, tsc)) if tsc == self.state.msrs.tsc && now >= ns => (ns, tsc),
            _ => (now, self.state.msrs.tsc),
        };
        let elapsed = u128::from(now - ns) * u128::from(TSC_HZ) / 1_000_000_000;
        // Strictly increasing even when the clock has not moved since the last reading (it
        // advances in steps in instruction-count mode): back-to-back reads differ, as on
        // hardware.
        let tsc = last.wrapping_add((elapsed as u64).max(1));
        self.state.msrs.tsc = tsc;
        self.tsc_anchor = Some((now, tsc));
        tsc
    }

    /// CPUID as the guest sees it, for `CpuBackend::cpuid`.
    pub(crate) fn guest_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let (a, b, c, d) = cpuid(leaf, subleaf);
        [a, b, c, d]
    }

    /// RDMSR (SDM Vol. 4): unknown MSRs are #GP(0).
    pub(crate) fn read_msr(&mut self, p: &mut dyn Platform, index: u32) -> Result<u64, Fault> {
        if local_apic_msr(index) {
            if let Some(v) = p.read_local_msr(index) {
                if index == msr::APIC_BASE {
                    self.state.msrs.apic_base = v;
                }
                return Ok(v);
            }
        }
        let m = &self.state.msrs;
        Ok(match index {
            msr::TSC => return Ok(self.tsc_now(p)),
            msr::APIC_BASE => m.apic_base,
            msr::BIOS_SIGN_ID => 0,
            // Platform ID 0: microcode loaders read it unconditionally on family 6
            // (SDM Vol. 4 Table 2-2); it is read-only.
            msr::PLATFORM_ID => 0,
            msr::ARCH_CAPABILITIES => ARCH_CAPABILITIES_VALUE,
            msr::MTRRCAP => MTRRCAP_VALUE,
            msr::SYSENTER_CS => m.sysenter_cs,
            msr::SYSENTER_ESP => m.sysenter_esp,
            msr::SYSENTER_EIP => m.sysenter_eip,
            msr::MISC_ENABLE => m.misc_enable,
            msr::MTRR_PHYS_BASE0..=msr::MTRR_PHYS_MASK7 => {
                let i = (index - msr::MTRR_PHYS_BASE0) as usize;
                let pair = m.mtrr_var[i / 2];
                if i.is_multiple_of(2) {
                    pair.0
                } else {
                    pair.1
                }
            }
            msr::MTRR_FIX64K | msr::MTRR_FIX16K_80000 | msr::MTRR_FIX16K_A0000 => {
                m.mtrr_fixed[fixed_index(index)]
            }
            msr::MTRR_FIX4K_C0000..=msr::MTRR_FIX4K_F8000 => m.mtrr_fixed[fixed_index(index)],
            msr::PAT => m.pat,
            msr::MTRR_DEF_TYPE => m.mtrr_def_type,
            msr::EFER => self.state.efer,
            msr::STAR => m.star,
            msr::LSTAR => m.lstar,
            msr::CSTAR => m.cstar,
            msr::FMASK => m.fmask,
            msr::FS_BASE => self.state.seg(SegReg::Fs).base,
            msr::GS_BASE => self.state.seg(SegReg::Gs).base,
            msr::KERNEL_GS_BASE => m.kernel_gs_base,
            msr::TSC_AUX => m.tsc_aux,
            _ => return Err(Fault::gp(0)),
        })
    }

    /// WRMSR (SDM Vol. 4): unknown MSRs, read-only MSRs and reserved bits are #GP(0).
    pub(crate) fn write_msr(
        &mut self,
        p: &mut dyn Platform,
        index: u32,
        v: u64,
    ) -> Result<(), Fault> {
        let phys_reserved = !((1u64 << crate::mmu::PHYS_ADDR_BITS) - 1);
        if local_apic_msr(index) {
            let tsc = if index == msr::TSC_DEADLINE {
                self.tsc_now(p)
            } else {
                0
            };
            match p.write_local_msr(index, v, tsc) {
                Some(true) if index == msr::APIC_BASE => {
                    self.state.msrs.apic_base = p.read_local_msr(index).unwrap_or(v);
                    return Ok(());
                }
                Some(true) => return Ok(()),
                Some(false) => return Err(Fault::gp(0)),
                None => {}
            }
        }
        match index {
            msr::TSC => {
                self.state.msrs.tsc = v;
                self.tsc_anchor = Some((p.clock().now_ns(), v));
            }
            msr::APIC_BASE => {
                // Base (bits 35:12) and global enable (bit 11); BSP (bit 8) is read-only;
                // x2APIC (bit 10) is not supported.
                if v & (0xFF | (1 << 9) | (1 << 10) | phys_reserved) != 0 {
                    return Err(Fault::gp(0));
                }
                let m = &mut self.state.msrs;
                m.apic_base = (v & !(1 << 8)) | (m.apic_base & (1 << 8));
            }
            // Writing the microcode signature register is how software asks for the
            // revision; there is no microcode, so it reads back 0.
            msr::BIOS_SIGN_ID => {}
            msr::SYSENTER_CS => self.state.msrs.sysenter_cs = v & 0xFFFF_FFFF,
            // Addresses held in MSRs must be canonical (SDM Vol. 4 Table 2-2; Vol. 3A
            // §5.8.7, §5.8.8).
            msr::SYSENTER_ESP => self.state.msrs.sysenter_esp = canonical_msr(v)?,
            msr::SYSENTER_EIP => self.state.msrs.sysenter_eip = canonical_msr(v)?,
            msr::STAR => self.state.msrs.star = v,
            msr::LSTAR => self.state.msrs.lstar = canonical_msr(v)?,
            msr::CSTAR => self.state.msrs.cstar = canonical_msr(v)?,
            // SFMASK bits 63:32 are reserved.
            msr::FMASK => {
                if v >> 32 != 0 {
                    return Err(Fault::gp(0));
                }
                self.state.msrs.fmask = v;
            }
            msr::FS_BASE => self.state.seg_mut(SegReg::Fs).base = canonical_msr(v)?,
            msr::GS_BASE => self.state.seg_mut(SegReg::Gs).base = canonical_msr(v)?,
            msr::KERNEL_GS_BASE => self.state.msrs.kernel_gs_base = canonical_msr(v)?,
            // IA32_TSC_AUX bits 63:32 are reserved.
            msr::TSC_AUX => {
                if v >> 32 != 0 {
                    return Err(Fault::gp(0));
                }
                self.state.msrs.tsc_aux = v;
            }
            msr::MISC_ENABLE => self.state.msrs.misc_enable = v,
            msr::MTRR_PHYS_BASE0..=msr::MTRR_PHYS_MASK7 => {
                let i = (index - msr::MTRR_PHYS_BASE0) as usize;
                let pair = &mut self.state.msrs.mtrr_var[i / 2];
                if i.is_multiple_of(2) {
                    if v & (0xF00 | phys_reserved) != 0 || !valid_mtrr_type(v as u8) {
                        return Err(Fault::gp(0));
                    }
                    pair.0 = v;
                } else {
                    if v & (0x7FF | phys_reserved) != 0 {
                        return Err(Fault::gp(0));
                    }
                    pair.1 = v;
                }
            }
            msr::MTRR_FIX64K
            | msr::MTRR_FIX16K_80000
            | msr::MTRR_FIX16K_A0000
            | msr::MTRR_FIX4K_C0000..=msr::MTRR_FIX4K_F8000 => {
                if !v.to_le_bytes().iter().all(|&t| valid_mtrr_type(t)) {
                    return Err(Fault::gp(0));
                }
                self.state.msrs.mtrr_fixed[fixed_index(index)] = v;
            }
            msr::PAT => {
                // Each entry is UC, WC, WT, WP, WB or UC- (SDM Vol. 3A §11.12.2).
                if !v
                    .to_le_bytes()
                    .iter()
                    .all(|&t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
                {
                    return Err(Fault::gp(0));
                }
                self.state.msrs.pat = v;
            }
            msr::MTRR_DEF_TYPE => {
                if v & !0xCFF != 0 || !valid_mtrr_type(v as u8) {
                    return Err(Fault::gp(0));
                }
                self.state.msrs.mtrr_def_type = v;
            }
            msr::EFER => {
                // SCE, LME, NXE are writable; LMA is read-only (kept); others are reserved.
                // LME may not change while paging is on (SDM Vol. 3A §9.8.5, §2.2.1).
                if v & !EFER_DEFINED != 0 {
                    return Err(Fault::gp(0));
                }
                let old = self.state.efer;
                if (old ^ v) & cr::EFER_LME != 0 && self.state.cr0 & cr::CR0_PG != 0 {
                    return Err(Fault::gp(0));
                }
                let new = (v & !cr::EFER_LMA) | (old & cr::EFER_LMA);
                if (old ^ new) & cr::EFER_NXE != 0 {
                    self.tlb_flush_keep_pdptes();
                }
                self.state.efer = new;
            }
            _ => return Err(Fault::gp(0)),
        }
        Ok(())
    }

    /// SYSENTER (SDM Vol. 2B "SYSENTER"): flat ring-0 CS/SS from IA32_SYSENTER_CS, ESP/EIP
    /// from the MSRs; in IA-32e mode CS is 64-bit code and RSP/RIP are loaded whole.
    fn sysenter(&mut self) -> Result<(), Fault> {
        let cs = self.state.msrs.sysenter_cs as u16;
        if !self.state.protected_mode() || cs & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let lma = self.state.long_mode_active();
        let f = self.rflags();
        self.set_rflags(f & !(flags::VM | flags::IF | flags::RF));
        *self.state.seg_mut(SegReg::Cs) = flat_code(cs & 0xFFFC, 0, lma);
        *self.state.seg_mut(SegReg::Ss) = flat_data((cs & 0xFFFC) + 8, 0);
        let (rsp, rip) = (self.state.msrs.sysenter_esp, self.state.msrs.sysenter_eip);
        if lma {
            self.state.gpr[gpr::RSP] = rsp;
            self.state.rip = rip;
        } else {
            self.state.gpr[gpr::RSP] = rsp & 0xFFFF_FFFF;
            self.state.rip = rip & 0xFFFF_FFFF;
        }
        Ok(())
    }

    /// SYSEXIT (SDM Vol. 2B "SYSEXIT"): flat ring-3 CS/SS at IA32_SYSENTER_CS + 16/24,
    /// EIP = EDX, ESP = ECX; with REX.W (64-bit mode) a 64-bit CS at + 32 and SS at + 40 with
    /// RIP = RDX, RSP = RCX, which must be canonical.
    fn sysexit(&mut self, cpl: u8, to64: bool) -> Result<(), Fault> {
        let cs = self.state.msrs.sysenter_cs as u16;
        if !self.state.protected_mode()
            || self.state.rflags & flags::VM != 0
            || cpl != 0
            || cs & 0xFFFC == 0
        {
            return Err(Fault::gp(0));
        }
        let (rip, rsp) = (self.state.gpr[gpr::RDX], self.state.gpr[gpr::RCX]);
        if to64 && (!is_canonical(rip) || !is_canonical(rsp)) {
            return Err(Fault::gp(0));
        }
        let (cs_sel, ss_sel) = if to64 {
            (cs.wrapping_add(32) | 3, cs.wrapping_add(40) | 3)
        } else {
            (cs.wrapping_add(16) | 3, cs.wrapping_add(24) | 3)
        };
        *self.state.seg_mut(SegReg::Cs) = flat_code(cs_sel, 3, to64);
        *self.state.seg_mut(SegReg::Ss) = flat_data(ss_sel, 3);
        if to64 {
            self.state.gpr[gpr::RSP] = rsp;
            self.state.rip = rip;
        } else {
            self.state.gpr[gpr::RSP] = rsp & 0xFFFF_FFFF;
            self.state.rip = rip & 0xFFFF_FFFF;
        }
        Ok(())
    }

    /// SYSCALL (SDM Vol. 2B "SYSCALL"): only in 64-bit mode with EFER.SCE (#UD otherwise).
    /// RCX = next RIP, R11 = RFLAGS; CS/SS are flat ring-0 segments at IA32_STAR[47:32]
    /// (+ 8); RIP = IA32_LSTAR; RFLAGS is masked by IA32_FMASK and loses RF.
    fn syscall(&mut self) -> Result<(), Fault> {
        if !self.state.in_64bit_code() || self.state.efer & cr::EFER_SCE == 0 {
            return Err(Fault::ud());
        }
        let f = self.rflags();
        self.state.gpr[gpr::RCX] = self.state.rip;
        self.state.gpr[R11] = f;
        let sel = ((self.state.msrs.star >> 32) as u16) & 0xFFFC;
        *self.state.seg_mut(SegReg::Cs) = flat_code(sel, 0, true);
        *self.state.seg_mut(SegReg::Ss) = flat_data(sel.wrapping_add(8), 0);
        self.state.rip = self.state.msrs.lstar;
        self.set_rflags((f & !self.state.msrs.fmask & !flags::RF) | flags::FIXED1);
        Ok(())
    }

    /// SYSRET (SDM Vol. 2B "SYSRET"): 64-bit mode, EFER.SCE (#UD otherwise), CPL 0
    /// (#GP(0)). REX.W returns to 64-bit code at IA32_STAR[63:48] + 16 with RIP = RCX, which
    /// must be canonical (#GP(0), checked before anything changes); without REX.W to
    /// compatibility mode at IA32_STAR[63:48] with EIP = ECX. SS = IA32_STAR[63:48] + 8;
    /// RFLAGS comes from R11.
    fn sysret(&mut self, cpl: u8, to64: bool) -> Result<(), Fault> {
        if !self.state.in_64bit_code() || self.state.efer & cr::EFER_SCE == 0 {
            return Err(Fault::ud());
        }
        if cpl != 0 {
            return Err(Fault::gp(0));
        }
        let rcx = self.state.gpr[gpr::RCX];
        if to64 && !is_canonical(rcx) {
            return Err(Fault::gp(0));
        }
        let base = (self.state.msrs.star >> 48) as u16;
        let cs_sel = if to64 { base.wrapping_add(16) } else { base } | 3;
        *self.state.seg_mut(SegReg::Cs) = flat_code(cs_sel, 3, to64);
        *self.state.seg_mut(SegReg::Ss) = flat_data(base.wrapping_add(8) | 3, 3);
        self.state.rip = if to64 { rcx } else { rcx & 0xFFFF_FFFF };
        let r11 = self.state.gpr[R11];
        self.set_rflags((r11 & SYSRET_FLAGS) | flags::FIXED1);
        Ok(())
    }

    /// Read a 16-bit r/m operand 0 (selector operands).
    fn read_rm16(&mut self, p: &mut dyn Platform, insn: &Instruction) -> Result<u16, Fault> {
        self.read_rm16_op(p, insn, 0)
    }

    fn read_rm16_op(
        &mut self,
        p: &mut dyn Platform,
        insn: &Instruction,
        op: u32,
    ) -> Result<u16, Fault> {
        match insn.op_kind(op) {
            OpKind::Register => Ok(self.get_reg(reg_loc(insn.op_register(op))?, 2) as u16),
            OpKind::Memory => {
                let (seg, off) = self.memory_operand(insn);
                Ok(u16::from_le_bytes(self.read_seg::<2>(p, seg, off)?))
            }
            _ => Err(Fault::ud()),
        }
    }

    /// Write operand 0: a register gets its full width (SMSW r32 stores all of CR0's low
    /// half, SLDT/STR r32 zero-extend), memory gets `mem_size` bytes.
    fn write_rm(
        &mut self,
        p: &mut dyn Platform,
        insn: &Instruction,
        v: u32,
        mem_size: u8,
    ) -> Result<(), Fault> {
        match insn.op0_kind() {
            OpKind::Register => {
                let r = insn.op0_register();
                let size = r.size() as u8;
                let v = if size == 4 && insn.mnemonic() != Mnemonic::Smsw {
                    v & 0xFFFF
                } else {
                    v
                };
                self.set_reg(reg_loc(r)?, size, u64::from(v));
                Ok(())
            }
            OpKind::Memory => {
                let (seg, off) = self.memory_operand(insn);
                self.write_mem(p, seg, off, mem_size, u64::from(v))
            }
            _ => Err(Fault::ud()),
        }
    }

    /// DR6 B0–B3 bits of the enabled DR0–DR3 breakpoints an access matches
    /// (SDM Vol. 3B §17.2.4–17.2.5): execution breakpoints (R/W = 00) match an instruction
    /// fetch at exactly that address; data breakpoints (01 write, 11 read/write) match an
    /// overlapping access of the right kind. I/O breakpoints are checked by
    /// [`Self::debug_io_hits`]. For the run loop (instruction fetch and data accesses).
    #[allow(dead_code)]
    pub(crate) fn debug_register_hits(&self, linear: u64, len: u64, kind: AccessKind) -> u64 {
        let dr7 = self.state.dr[7];
        if dr7 & 0xFF == 0 {
            return 0;
        }
        let mut hits = 0;
        for i in 0..4 {
            if dr7 & (3 << (2 * i)) == 0 {
                continue;
            }
            let rw = (dr7 >> (16 + 4 * i)) & 3;
            let addr = self.wrap_linear(self.state.dr[i]);
            let hit = match (rw, kind) {
                (0, AccessKind::Execute) => addr == linear,
                (1, AccessKind::Write) | (3, AccessKind::Read | AccessKind::Write) => {
                    let blen = match (dr7 >> (18 + 4 * i)) & 3 {
                        0 => 1,
                        1 => 2,
                        2 => 8,
                        _ => 4,
                    };
                    let start = addr & !(blen - 1);
                    linear < start + blen && start < linear.wrapping_add(len)
                }
                _ => false,
            };
            if hit {
                hits |= 1 << i;
            }
        }
        hits
    }

    /// DR6 B0–B3 bits of enabled I/O breakpoints (R/W = 10, only with CR4.DE) an access to
    /// `len` ports from `port` matches. For IN/OUT/INS/OUTS.
    #[allow(dead_code)]
    pub(crate) fn debug_io_hits(&self, port: u16, len: u64) -> u64 {
        let dr7 = self.state.dr[7];
        if dr7 & 0xFF == 0 || self.state.cr4 & cr::CR4_DE == 0 {
            return 0;
        }
        let mut hits = 0;
        for i in 0..4 {
            if dr7 & (3 << (2 * i)) == 0 || (dr7 >> (16 + 4 * i)) & 3 != 2 {
                continue;
            }
            let blen = match (dr7 >> (18 + 4 * i)) & 3 {
                0 => 1,
                1 => 2,
                2 => 8,
                _ => 4,
            };
            let start = (self.state.dr[i] & 0xFFFF) & !(blen - 1);
            let port = u64::from(port);
            if port < start + blen && start < port + len {
                hits |= 1 << i;
            }
        }
        hits
    }
}

/// The flat code segment SYSCALL/SYSRET/SYSENTER/SYSEXIT load: base 0, 4 GiB, readable,
/// accessed, DPL `dpl`; 64-bit (L = 1) or 32-bit (D = 1) (SDM Vol. 2B "SYSCALL").
fn flat_code(selector: u16, dpl: u8, long: bool) -> Segment {
    let size = if long {
        Segment::ATTR_L
    } else {
        Segment::ATTR_DB
    };
    Segment {
        selector,
        base: 0,
        limit: 0xFFFF_FFFF,
        attributes: 0x9B | (u32::from(dpl) << 5) | size | Segment::ATTR_G,
    }
}

/// The flat stack segment those instructions load: base 0, 4 GiB, read/write, accessed,
/// B = 1, DPL `dpl`.
fn flat_data(selector: u16, dpl: u8) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0xFFFF_FFFF,
        attributes: 0x93 | (u32::from(dpl) << 5) | Segment::ATTR_DB | Segment::ATTR_G,
    }
}

/// A canonical address for an MSR, or #GP(0) (SDM Vol. 4 Table 2-2).
fn canonical_msr(v: u64) -> Result<u64, Fault> {
    if is_canonical(v) {
        Ok(v)
    } else {
        Err(Fault::gp(0))
    }
}

/// GPR index of R11 (SYSCALL saves RFLAGS there).
const R11: usize = 11;

/// DR7.GD: general detect enable.
const DR7_GD: u64 = 1 << 13;
/// DR6.BD: the #DB was a general-detect condition.
const DR6_BD: u64 = 1 << 13;

/// Position of a fixed-range MTRR in `Msrs::mtrr_fixed` (0x250, 0x258, 0x259, 0x268–0x26F).
fn fixed_index(index: u32) -> usize {
    match index {
        msr::MTRR_FIX64K => 0,
        msr::MTRR_FIX16K_80000 => 1,
        msr::MTRR_FIX16K_A0000 => 2,
        _ => 3 + (index - msr::MTRR_FIX4K_C0000) as usize,
    }
}

/// GPR location of a register operand (the decoder only gives GPRs here).
fn reg_loc(r: Register) -> Result<u8, Fault> {
    super::gpr_loc(r).ok_or(Fault::ud())
}

/// CPUID (SDM Vol. 2A "CPUID"): `(eax, ebx, ecx, edx)` for leaf `leaf`. Leaves beyond the
/// maximum (including the hypervisor range 0x4000_0000) return the highest basic leaf, as
/// Intel processors do.
pub(crate) fn cpuid(leaf: u32, subleaf: u32) -> (u32, u32, u32, u32) {
    const MAX_BASIC: u32 = 0x16;
    const MAX_EXT: u32 = 0x8000_0008;
    let vendor = |s: &[u8; 4]| u32::from_le_bytes(*s);
    match leaf {
        0 => (MAX_BASIC, vendor(b"Genu"), vendor(b"ntel"), vendor(b"ineI")),
        // Family 6, model 15, stepping 11 (a first 64-bit "Core" generation part: Linux
        // treats its TSC as constant-rate); CLFLUSH line size 8 × 8 bytes; one logical
        // processor, APIC ID 0.
        1 => (
            0x0000_06FB,
            8 << 8,
            feature::SSE3
                | feature::SSSE3
                | feature::CX16
                | feature::PCID
                | feature::SSE4_1
                | feature::SSE4_2
                | feature::MOVBE
                | feature::POPCNT
                | feature::XSAVE
                | feature::ECX_X2APIC
                | feature::ECX_TSC_DEADLINE,
            feature::FPU
                | feature::VME
                | feature::DE
                | feature::PSE
                | feature::TSC
                | feature::MSR
                | feature::PAE
                | feature::CX8
                | feature::SEP
                | feature::MTRR
                | feature::PGE
                | feature::CMOV
                | feature::PAT
                | feature::PSE36
                | feature::CLFSH
                | feature::MMX
                | feature::FXSR
                | feature::SSE
                | feature::SSE2
                | feature::APIC,
        ),
        // One iteration, no cache/TLB descriptors (all null).
        2 => (0x0000_0001, 0, 0, 0),
        // No serial number, no deterministic cache parameters (leaf 4 type 0 = none),
        // no MONITOR/MWAIT, no thermal and power management.
        3..=6 => (0, 0, 0, 0),
        // Structured extended features: BMI1 (ANDN, BEXTR, BLSI, BLSMSK, BLSR, TZCNT) and
        // IA32_ARCH_CAPABILITIES; one subleaf.
        7 if subleaf == 0 => (0, feature::BMI1, 0, feature::ARCH_CAPABILITIES),
        7 => (0, 0, 0, 0),
        // No performance monitoring or topology leaves.
        8..=0xC => (0, 0, 0, 0),
        // XSAVE (SDM Vol. 1 §13.2): XCR0 may hold x87|SSE; the area is the 512-byte legacy
        // region plus the 64-byte header for either; no XSAVEOPT/XSAVEC/XGETBV1/XSAVES.
        0xD => match subleaf {
            0 => (
                crate::sse::XCR0_SUPPORTED as u32,
                crate::sse::XSAVE_SIZE as u32,
                crate::sse::XSAVE_SIZE as u32,
                0,
            ),
            _ => (0, 0, 0, 0),
        },
        // Nothing in leaves 0xE–0x14 (no processor trace, SGX, ...).
        0xE..=0x14 => (0, 0, 0, 0),
        // TSC/crystal ratio 1/1 with a 1 GHz crystal: the TSC runs at TSC_HZ and, as Linux
        // assumes from this leaf, the local APIC timer at the crystal clock (1 GHz,
        // devices' lapic::TIMER_HZ), so neither needs calibrating.
        0x15 => (1, 1, TSC_HZ as u32, 0),
        // Base, maximum and bus frequency in MHz.
        0x16 => {
            let mhz = (TSC_HZ / 1_000_000) as u32;
            (mhz, mhz, mhz, 0)
        }
        0x8000_0000 => (MAX_EXT, 0, 0, 0),
        0x8000_0001 => (
            0,
            0,
            feature::LAHF_LM | feature::LZCNT,
            feature::SYSCALL | feature::NX | feature::PAGE1GB | feature::RDTSCP | feature::LM,
        ),
        0x8000_0002..=0x8000_0004 => {
            let mut brand = [0u8; 48];
            brand[..BRAND.len()].copy_from_slice(BRAND);
            let chunk = &brand[((leaf - 0x8000_0002) * 16) as usize..][..16];
            let w =
                |i: usize| u32::from_le_bytes([chunk[i], chunk[i + 1], chunk[i + 2], chunk[i + 3]]);
            (w(0), w(4), w(8), w(12))
        }
        0x8000_0005 | 0x8000_0006 => (0, 0, 0, 0),
        // The TSC follows the virtual clock at a fixed rate in every state.
        0x8000_0007 => (0, 0, 0, feature::INVARIANT_TSC),
        // Physical and linear address widths.
        0x8000_0008 => (
            (LINEAR_ADDR_BITS << 8) | crate::mmu::PHYS_ADDR_BITS,
            0,
            0,
            0,
        ),
        _ => cpuid(MAX_BASIC, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_reports_intel_64_without_hypervisor() {
        let (max, b, c, d) = cpuid(0, 0);
        assert_eq!(max, 0x16);
        for leaf in 3..=6 {
            assert_eq!(cpuid(leaf, 0), (0, 0, 0, 0), "leaf {leaf}");
        }
        let (max_sub, b7, c7, d7) = cpuid(7, 0);
        assert_eq!(
            (max_sub, b7, c7),
            (0, 1 << 3, 0),
            "no extended features but BMI1 and..."
        );
        assert_ne!(d7 & (1 << 29), 0, "...IA32_ARCH_CAPABILITIES");
        let mut v = Vec::new();
        for r in [b, d, c] {
            v.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&v, b"GenuineIntel");
        let (a, _, c, d) = cpuid(1, 0);
        assert_eq!((a >> 8) & 0xF, 6, "family 6");
        assert_ne!(d & (1 << 19), 0, "CLFLUSH");
        assert_eq!(d & 1, 1, "FPU");
        assert_ne!(d & (1 << 23), 0, "MMX");
        assert_ne!(d & (1 << 9), 0, "local APIC");
        assert_eq!(
            c & ((1 << 21) | (1 << 24)),
            (1 << 21) | (1 << 24),
            "x2APIC, TSC deadline"
        );
        let (den, num, crystal, _) = cpuid(0x15, 0);
        assert_eq!(u64::from(crystal) * u64::from(num) / u64::from(den), TSC_HZ);
        assert_eq!(cpuid(0x16, 0).0, 1000);
        assert_eq!(d & (7 << 24), 7 << 24, "FXSR SSE SSE2");
        assert_eq!(
            c & 0x0418_0201,
            0x0418_0201,
            "SSE3 SSSE3 SSE4.1 SSE4.2 XSAVE"
        );
        assert_eq!(c & (1 << 27), 0, "OSXSAVE comes from CR4 at execution");
        assert_eq!(c & (1 << 28), 0, "no AVX");
        assert_eq!(cpuid(0xD, 0), (3, 576, 576, 0));
        assert_eq!(cpuid(0xD, 1).0, 0, "no XSAVEOPT/XSAVEC");
        assert!(cpuid(0x4000_0000, 0).0 < 0x4000_0000);
        let (max_ext, ..) = cpuid(0x8000_0000, 0);
        assert!(max_ext >= 0x8000_0008);
        let (_, _, c, d) = cpuid(0x8000_0001, 0);
        for (bit, what) in [(29, "LM"), (11, "SYSCALL"), (20, "NX"), (27, "RDTSCP")] {
            assert_ne!(d & (1 << bit), 0, "{what}");
        }
        assert_ne!(c & 1, 0, "LAHF/SAHF in 64-bit mode");
        assert_ne!(c & (1 << 5), 0, "LZCNT");
        assert_ne!(d & (1 << 26), 0, "1 GiB pages");
        let (_, _, c1, _) = cpuid(1, 0);
        for (bit, what) in [(13, "CX16"), (17, "PCID"), (22, "MOVBE"), (23, "POPCNT")] {
            assert_ne!(c1 & (1 << bit), 0, "{what}");
        }
        assert_eq!(c1 & (1 << 31), 0, "no hypervisor bit");
        let (a, ..) = cpuid(0x8000_0008, 0);
        assert_eq!(a & 0xFF, crate::mmu::PHYS_ADDR_BITS);
        assert_eq!((a >> 8) & 0xFF, 48, "48-bit linear addresses");
        let mut brand = Vec::new();
        for leaf in 0x8000_0002..=0x8000_0004 {
            let (a, b, c, d) = cpuid(leaf, 0);
            for r in [a, b, c, d] {
                brand.extend_from_slice(&r.to_le_bytes());
            }
        }
        assert!(brand.starts_with(b"pcvm x86-64"));
    }

    #[test]
    fn debug_registers_match_enabled_breakpoints() {
        let mut cpu = Interpreter::new();
        cpu.state.dr[0] = 0x1000;
        cpu.state.dr[1] = 0x2004;
        cpu.state.dr[2] = 0x80;
        // DR0: execute, L0. DR1: write, 4 bytes, G1. DR2: I/O, 1 byte, L2.
        cpu.state.dr[7] = 0x400 | 1 | (1 << 3) | (0b1101 << 20) | (1 << 4) | (0b0010 << 24);
        assert_eq!(cpu.debug_register_hits(0x1000, 1, AccessKind::Execute), 1);
        assert_eq!(cpu.debug_register_hits(0x1000, 4, AccessKind::Read), 0);
        assert_eq!(cpu.debug_register_hits(0x2006, 2, AccessKind::Write), 2);
        assert_eq!(cpu.debug_register_hits(0x2006, 2, AccessKind::Read), 0);
        assert_eq!(cpu.debug_register_hits(0x2008, 4, AccessKind::Write), 0);
        assert_eq!(cpu.debug_io_hits(0x80, 1), 0, "I/O breakpoints need CR4.DE");
        cpu.state.cr4 |= cr::CR4_DE;
        assert_eq!(cpu.debug_io_hits(0x7F, 2), 4);
    }

    #[test]
    fn fixed_mtrr_slots_are_distinct() {
        let idx: Vec<usize> = [0x250, 0x258, 0x259, 0x268, 0x26F]
            .iter()
            .map(|&i| fixed_index(i))
            .collect();
        assert_eq!(idx, vec![0, 1, 2, 3, 10]);
    }
}
