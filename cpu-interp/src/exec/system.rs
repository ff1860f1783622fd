//! System instructions: descriptor-table and task registers, control and debug registers,
//! MSRs, CPUID, TSC, cache/TLB control, segment-checking instructions and SYSENTER/SYSEXIT
//! (Intel SDM Vol. 2; Vol. 3A §2.5–2.8, §4.10, §17.2; Vol. 4 for the MSRs).
//!
//! Owned by SYS. CPUID describes an i686-class "GenuineIntel" family-6 CPU with exactly what
//! this interpreter implements: VME (with PVI), DE, PSE, TSC, MSR, PAE, CX8, SEP, MTRR, PGE,
//! CMOV, PAT, PSE-36 and NX, and the board's local APIC (x2APIC, TSC deadline; its MSRs go to
//! the board). There is no FPU (x87 comes later), no MMX/SSE/FXSR, no MCE/MCA and no long
//! mode. The TSC runs at [`TSC_HZ`] from the virtual clock, invariant, advertised in leaf 0x15.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};
use pcvm_core::cpu_state::{cr, flags, gpr};
use pcvm_core::{Platform, SegReg, Segment};

use crate::access::AccessKind;
use crate::fault::vector;
use crate::segment::{np, null_segment, sel_code, sys_type};
use crate::{Fault, Interpreter};

/// Advertised TSC frequency: one tick per virtual nanosecond.
pub(crate) const TSC_HZ: u64 = 1_000_000_000;

/// CPUID.1:EDX feature bits reported (SDM Vol. 2A "CPUID", Table 3-11).
mod feature {
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
    /// CPUID.1:EDX.APIC: the board's local APIC (its MSRs through `Platform::*_local_msr`).
    pub const APIC: u32 = 1 << 9;
    /// CPUID.1:ECX.x2APIC.
    pub const ECX_X2APIC: u32 = 1 << 21;
    /// CPUID.1:ECX.TSC-Deadline.
    pub const ECX_TSC_DEADLINE: u32 = 1 << 24;
    /// CPUID.80000007H:EDX.InvariantTSC: the TSC counts virtual time at a constant rate.
    pub const INVARIANT_TSC: u32 = 1 << 8;
    /// CPUID.80000001H:EDX.NX.
    pub const NX: u32 = 1 << 20;
}

/// MSR indices (SDM Vol. 4 Table 2-2).
pub(crate) mod msr {
    pub const TSC: u32 = 0x10;
    pub const APIC_BASE: u32 = 0x1B;
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
    | cr::CR4_PCE;

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
const BRAND: &[u8] = b"pcvm i686 reference interpreter";

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
                let mut base = u32::from_le_bytes(self.read_seg::<4>(p, seg, (off + 2) & amask)?);
                if matches!(insn.code(), Code::Lgdt_m1632_16 | Code::Lidt_m1632_16) {
                    base &= 0x00FF_FFFF;
                }
                let t = if insn.mnemonic() == Mnemonic::Lgdt {
                    &mut self.state.gdtr
                } else {
                    &mut self.state.idtr
                };
                t.base = u64::from(base);
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
                // Check both parts before writing either.
                self.seg_linear(seg, off, 2, AccessKind::Write)?;
                self.seg_linear(seg, (off + 2) & amask, 4, AccessKind::Write)?;
                let mut b = [0u8; 6];
                b[..2].copy_from_slice(&t.limit.to_le_bytes());
                b[2..].copy_from_slice(&(t.base as u32).to_le_bytes());
                let linear = self.seg_linear(seg, off, 6, AccessKind::Write)?;
                self.write_linear(p, linear, &b)
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
                        self.set_reg(reg_loc(insn.op0_register())?, 2, v);
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
                        self.set_reg(loc, r.size() as u8, v);
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
                let (seg, off) = self.memory_operand(insn);
                let linear = self.state.seg(seg).base.wrapping_add(off) & 0xFFFF_FFFF;
                self.tlb.invalidate(linear);
                Ok(())
            }
            Mnemonic::Wbinvd | Mnemonic::Invd => ring0(),
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
            Mnemonic::Rdtsc => {
                if self.state.cr4 & cr::CR4_TSD != 0 && cpl > 0 {
                    return Err(Fault::gp(0));
                }
                let t = self.tsc_now(p);
                self.state.gpr[gpr::RAX] = t & 0xFFFF_FFFF;
                self.state.gpr[gpr::RDX] = t >> 32;
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
                let (a, b, c, d) = cpuid(
                    self.state.gpr[gpr::RAX] as u32,
                    self.state.gpr[gpr::RCX] as u32,
                );
                self.state.gpr[gpr::RAX] = u64::from(a);
                self.state.gpr[gpr::RBX] = u64::from(b);
                self.state.gpr[gpr::RCX] = u64::from(c);
                self.state.gpr[gpr::RDX] = u64::from(d);
                Ok(())
            }
            Mnemonic::Mov => self.mov_cr_dr(p, insn, cpl),
            Mnemonic::Sysenter => self.sysenter(),
            Mnemonic::Sysexit => self.sysexit(cpl),
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
        let Some(d) = self.read_descriptor(p, sel)? else {
            return Err(Fault::gp(code));
        };
        if d.is_code_or_data() || d.typ() != sys_type::LDT {
            return Err(Fault::gp(code));
        }
        if !d.present() {
            return Err(np(code));
        }
        self.state.ldtr = d.to_segment(sel);
        Ok(())
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
        let Some(d) = self.read_descriptor(p, sel)? else {
            return Err(Fault::gp(code));
        };
        if d.is_code_or_data() || !matches!(d.typ(), sys_type::TSS16_AVAIL | sys_type::TSS32_AVAIL)
        {
            return Err(Fault::gp(code));
        }
        if !d.present() {
            return Err(np(code));
        }
        let access = ((d.0 >> 40) as u8) | 2;
        self.write_descriptor_access(p, sel, access)?;
        let mut tr = d.to_segment(sel);
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
            let ok = if lar {
                matches!(d.typ(), 1 | 2 | 3 | 4 | 5 | 9 | 11 | 12)
            } else {
                matches!(d.typ(), 1 | 2 | 3 | 9 | 11)
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
    /// to/from Debug Registers").
    fn mov_cr_dr(
        &mut self,
        p: &mut dyn Platform,
        insn: &Instruction,
        cpl: u8,
    ) -> Result<(), Fault> {
        let (dst, src) = (insn.op0_register(), insn.op1_register());
        let to_special = dst.is_cr() || dst.is_dr();
        let special = if to_special { dst } else { src };
        if special.is_tr() || (!special.is_cr() && !special.is_dr()) {
            return Err(Fault::ud());
        }
        if special.is_cr() {
            let n = special as u32 - Register::CR0 as u32;
            // CR8 exists only in 64-bit mode; CR1, CR5–CR7 and CR9+ are reserved.
            if !matches!(n, 0 | 2 | 3 | 4) {
                return Err(Fault::ud());
            }
            if cpl != 0 {
                return Err(Fault::gp(0));
            }
            if to_special {
                let v = u64::from(self.get_reg(reg_loc(src)?, 4));
                match n {
                    0 => self.write_cr0(p, v),
                    2 => {
                        self.state.cr2 = v;
                        Ok(())
                    }
                    3 => self.write_cr3(p, v),
                    _ => self.write_cr4(p, v),
                }
            } else {
                let v = match n {
                    0 => self.state.cr0,
                    2 => self.state.cr2,
                    3 => self.state.cr3,
                    _ => self.state.cr4,
                };
                self.set_reg(reg_loc(dst)?, 4, v as u32);
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
                let v = u64::from(self.get_reg(reg_loc(src)?, 4));
                self.state.dr[n] = match n {
                    6 => (v & 0xE00F) | 0xFFFF_0FF0,
                    7 => (v & 0xFFFF_23FF) | 0x400,
                    _ => v,
                };
            } else {
                let v = self.state.dr[n] as u32;
                self.set_reg(reg_loc(dst)?, 4, v);
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
        if self.state.code_bitness() == 16 {
            0xFFFF
        } else {
            0xFFFF_FFFF
        }
    }

    /// MOV CR0 / LMSW (SDM Vol. 3A §2.5, §9.9): PG without PE and NW without CD are #GP(0);
    /// enabling PAE paging loads the PDPTEs; paging-mode changes flush the TLB.
    pub(crate) fn write_cr0(&mut self, p: &mut dyn Platform, v: u64) -> Result<(), Fault> {
        let new = (v & CR0_WRITABLE) | cr::CR0_ET;
        if new & cr::CR0_PG != 0 && new & cr::CR0_PE == 0 {
            return Err(Fault::gp(0));
        }
        if new & cr::CR0_NW != 0 && new & cr::CR0_CD == 0 {
            return Err(Fault::gp(0));
        }
        let old = self.state.cr0;
        let enabling_pae =
            new & cr::CR0_PG != 0 && old & cr::CR0_PG == 0 && self.state.cr4 & cr::CR4_PAE != 0;
        if enabling_pae {
            self.load_pdptes(p)?;
        }
        self.state.cr0 = new;
        if (old ^ new) & (cr::CR0_PG | cr::CR0_WP | cr::CR0_PE) != 0 {
            self.tlb_flush_keep_pdptes();
        }
        Ok(())
    }

    /// MOV CR3: flushes non-global translations; with PAE paging loads the PDPTEs
    /// (SDM Vol. 3A §4.4.1, §4.10.4.1).
    pub(crate) fn write_cr3(&mut self, p: &mut dyn Platform, v: u64) -> Result<(), Fault> {
        let old = self.state.cr3;
        self.state.cr3 = v & 0xFFFF_FFFF;
        if self.pae_paging() {
            if let Err(f) = self.load_pdptes(p) {
                self.state.cr3 = old;
                return Err(f);
            }
        }
        self.tlb.flush_non_global();
        Ok(())
    }

    /// MOV CR4: reserved bits are #GP(0); PAE/PSE/PGE changes flush the whole TLB
    /// (SDM Vol. 3A §2.5, §4.10.4.1).
    pub(crate) fn write_cr4(&mut self, p: &mut dyn Platform, v: u64) -> Result<(), Fault> {
        if v & !CR4_SUPPORTED != 0 {
            return Err(Fault::gp(0));
        }
        let old = self.state.cr4;
        let changed = old ^ v;
        self.state.cr4 = v;
        if self.pae_paging() && changed & (cr::CR4_PAE | cr::CR4_PSE | cr::CR4_PGE) != 0 {
            if let Err(f) = self.load_pdptes(p) {
                self.state.cr4 = old;
                return Err(f);
            }
        }
        if changed & (cr::CR4_PAE | cr::CR4_PSE | cr::CR4_PGE) != 0 {
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
            msr::SYSENTER_ESP => self.state.msrs.sysenter_esp = v,
            msr::SYSENTER_EIP => self.state.msrs.sysenter_eip = v,
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
                // Only NXE exists here (no SYSCALL, no long mode).
                if v & !cr::EFER_NXE != 0 {
                    return Err(Fault::gp(0));
                }
                if (self.state.efer ^ v) & cr::EFER_NXE != 0 {
                    self.tlb_flush_keep_pdptes();
                }
                self.state.efer = v;
            }
            _ => return Err(Fault::gp(0)),
        }
        Ok(())
    }

    /// SYSENTER (SDM Vol. 2 "SYSENTER"): flat ring-0 CS/SS from IA32_SYSENTER_CS.
    fn sysenter(&mut self) -> Result<(), Fault> {
        let cs = self.state.msrs.sysenter_cs as u16;
        if !self.state.protected_mode() || cs & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let f = self.rflags();
        self.set_rflags(f & !(flags::VM | flags::IF | flags::RF));
        *self.state.seg_mut(SegReg::Cs) = Segment {
            selector: cs & 0xFFFC,
            base: 0,
            limit: 0xFFFF_FFFF,
            attributes: 0xC09B,
        };
        *self.state.seg_mut(SegReg::Ss) = Segment {
            selector: (cs & 0xFFFC) + 8,
            base: 0,
            limit: 0xFFFF_FFFF,
            attributes: 0xC093,
        };
        self.state.gpr[gpr::RSP] = self.state.msrs.sysenter_esp & 0xFFFF_FFFF;
        self.state.rip = self.state.msrs.sysenter_eip & 0xFFFF_FFFF;
        Ok(())
    }

    /// SYSEXIT (SDM Vol. 2 "SYSEXIT"): flat ring-3 CS/SS, EIP = EDX, ESP = ECX.
    fn sysexit(&mut self, cpl: u8) -> Result<(), Fault> {
        let cs = self.state.msrs.sysenter_cs as u16;
        if !self.state.protected_mode()
            || self.state.rflags & flags::VM != 0
            || cpl != 0
            || cs & 0xFFFC == 0
        {
            return Err(Fault::gp(0));
        }
        *self.state.seg_mut(SegReg::Cs) = Segment {
            selector: (cs + 16) | 3,
            base: 0,
            limit: 0xFFFF_FFFF,
            attributes: 0xC0FB,
        };
        *self.state.seg_mut(SegReg::Ss) = Segment {
            selector: (cs + 24) | 3,
            base: 0,
            limit: 0xFFFF_FFFF,
            attributes: 0xC0F3,
        };
        self.state.gpr[gpr::RSP] = self.state.gpr[gpr::RCX] & 0xFFFF_FFFF;
        self.state.rip = self.state.gpr[gpr::RDX] & 0xFFFF_FFFF;
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
                self.set_reg(reg_loc(r)?, size, v);
                Ok(())
            }
            OpKind::Memory => {
                let (seg, off) = self.memory_operand(insn);
                self.write_mem(p, seg, off, mem_size, v)
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
            let addr = self.state.dr[i] & 0xFFFF_FFFF;
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
pub(crate) fn cpuid(leaf: u32, _subleaf: u32) -> (u32, u32, u32, u32) {
    const MAX_BASIC: u32 = 0x16;
    const MAX_EXT: u32 = 0x8000_0008;
    let vendor = |s: &[u8; 4]| u32::from_le_bytes(*s);
    match leaf {
        0 => (MAX_BASIC, vendor(b"Genu"), vendor(b"ntel"), vendor(b"ineI")),
        // Family 6, model 8, stepping 3 (an i686 "P6" part); no brand index, no CLFLUSH,
        // one logical processor, APIC ID 0.
        1 => (
            0x0000_0683,
            0,
            feature::ECX_X2APIC | feature::ECX_TSC_DEADLINE,
            feature::VME
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
                | feature::APIC,
        ),
        // One iteration, no cache/TLB descriptors (all null).
        2 => (0x0000_0001, 0, 0, 0),
        // Cache parameters, MONITOR, power, structured features, topology …: none.
        3..=0x14 => (0, 0, 0, 0),
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
        0x8000_0001 => (0, 0, 0, feature::NX),
        0x8000_0002..=0x8000_0004 => {
            let mut brand = [0u8; 48];
            brand[..BRAND.len()].copy_from_slice(BRAND);
            let chunk = &brand[((leaf - 0x8000_0002) * 16) as usize..][..16];
            let w =
                |i: usize| u32::from_le_bytes([chunk[i], chunk[i + 1], chunk[i + 2], chunk[i + 3]]);
            (w(0), w(4), w(8), w(12))
        }
        0x8000_0005 | 0x8000_0006 => (0, 0, 0, 0),
        0x8000_0007 => (0, 0, 0, feature::INVARIANT_TSC),
        // Physical address bits 36, linear address bits 32.
        0x8000_0008 => (0x2000 | crate::mmu::PHYS_ADDR_BITS, 0, 0, 0),
        _ => cpuid(MAX_BASIC, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_reports_intel_without_fpu_or_hypervisor() {
        let (max, b, c, d) = cpuid(0, 0);
        assert_eq!(max, 0x16);
        let mut v = Vec::new();
        for r in [b, d, c] {
            v.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&v, b"GenuineIntel");
        let (a, _, c, d) = cpuid(1, 0);
        assert_eq!((a >> 8) & 0xF, 6, "family 6");
        assert_eq!(d & 1, 0, "no FPU");
        assert_ne!(d & (1 << 9), 0, "local APIC");
        assert_eq!(d & (1 << 23 | 1 << 24 | 1 << 25), 0, "no MMX/FXSR/SSE");
        assert_eq!(c, (1 << 21) | (1 << 24), "x2APIC, TSC deadline");
        let (den, num, crystal, _) = cpuid(0x15, 0);
        assert_eq!(u64::from(crystal) * u64::from(num) / u64::from(den), TSC_HZ);
        assert_eq!(cpuid(0x16, 0).0, 1000);
        assert_eq!(cpuid(7, 0), (0, 0, 0, 0));
        assert!(cpuid(0x4000_0000, 0).0 < 0x4000_0000);
        assert_eq!(cpuid(0x8000_0001, 0).3 & (1 << 29), 0, "no long mode");
        assert_eq!(cpuid(0x8000_0008, 0).0 & 0xFF, 36);
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
