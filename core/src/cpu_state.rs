//! The architectural CPU state every backend loads and stores.
//!
//! [`CpuState`] is backend-neutral: the interpreter keeps it as its working state, the JIT reads
//! and writes it from generated code, and KVM converts it to and from `kvm_regs`/`kvm_sregs`/
//! `kvm_fpu`/MSRs. Snapshots serialize it with serde; [`CpuState::FORMAT_VERSION`] guards the
//! layout. Segment attributes use the VMX access-rights encoding (Intel SDM Vol. 3C §24.4.1),
//! which is also what KVM's `kvm_segment` fields unpack to.

use serde::{Deserialize, Serialize};

/// A segment register index, in the order of the ModRM `sreg` encoding (Intel SDM Vol. 2 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum SegReg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

impl SegReg {
    /// All six segment registers in encoding order.
    pub const ALL: [SegReg; 6] = [
        SegReg::Es,
        SegReg::Cs,
        SegReg::Ss,
        SegReg::Ds,
        SegReg::Fs,
        SegReg::Gs,
    ];
}

/// A segment register: the visible selector and the hidden descriptor cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Visible selector.
    pub selector: u16,
    /// Cached base address.
    pub base: u64,
    /// Cached limit in bytes (already scaled by the granularity bit).
    pub limit: u32,
    /// Access rights in VMX layout: type 3:0, S 4, DPL 6:5, P 7, AVL 12, L 13, D/B 14, G 15,
    /// unusable 16.
    pub attributes: u32,
}

impl Segment {
    pub const ATTR_ACCESSED: u32 = 1 << 0;
    pub const ATTR_S: u32 = 1 << 4;
    pub const ATTR_P: u32 = 1 << 7;
    pub const ATTR_AVL: u32 = 1 << 12;
    pub const ATTR_L: u32 = 1 << 13;
    pub const ATTR_DB: u32 = 1 << 14;
    pub const ATTR_G: u32 = 1 << 15;
    pub const ATTR_UNUSABLE: u32 = 1 << 16;

    /// A real-mode segment for `selector`: base = selector × 16, 64 KiB limit, read/write data.
    pub fn real_mode(selector: u16) -> Self {
        Segment {
            selector,
            base: u64::from(selector) << 4,
            limit: 0xFFFF,
            attributes: 0x93,
        }
    }

    /// Descriptor type field (bits 3:0).
    pub fn type_field(&self) -> u8 {
        (self.attributes & 0xF) as u8
    }
    /// Descriptor privilege level.
    pub fn dpl(&self) -> u8 {
        ((self.attributes >> 5) & 3) as u8
    }
    /// Present bit.
    pub fn present(&self) -> bool {
        self.attributes & Self::ATTR_P != 0
    }
    /// D/B bit: 32-bit default operand size (code) or big stack (data).
    pub fn db(&self) -> bool {
        self.attributes & Self::ATTR_DB != 0
    }
    /// L bit: 64-bit code segment.
    pub fn long(&self) -> bool {
        self.attributes & Self::ATTR_L != 0
    }
    /// The segment register holds a null selector or was marked unusable.
    pub fn unusable(&self) -> bool {
        self.attributes & Self::ATTR_UNUSABLE != 0
    }
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorTable {
    pub base: u64,
    pub limit: u16,
}

/// Model-specific registers PC guests use (Intel SDM Vol. 4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msrs {
    /// IA32_TIME_STAMP_COUNTER (0x10).
    pub tsc: u64,
    /// IA32_TSC_AUX (0xC000_0103).
    pub tsc_aux: u64,
    /// IA32_APIC_BASE (0x1B).
    pub apic_base: u64,
    /// IA32_SYSENTER_CS/ESP/EIP (0x174–0x176).
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    /// STAR/LSTAR/CSTAR/FMASK (0xC000_0081–0xC000_0084).
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub fmask: u64,
    /// IA32_KERNEL_GS_BASE (0xC000_0102). FS/GS bases live in the segment caches.
    pub kernel_gs_base: u64,
    /// IA32_PAT (0x277).
    pub pat: u64,
    /// IA32_MTRR_DEF_TYPE (0x2FF).
    pub mtrr_def_type: u64,
    /// Fixed-range MTRRs 0x250, 0x258, 0x259, 0x268–0x26F in that order.
    pub mtrr_fixed: [u64; 11],
    /// Variable-range MTRR base/mask pairs (0x200–0x20F).
    pub mtrr_var: [(u64, u64); 8],
    /// IA32_MISC_ENABLE (0x1A0).
    pub misc_enable: u64,
}

impl Default for Msrs {
    fn default() -> Self {
        Msrs {
            tsc: 0,
            tsc_aux: 0,
            // BSP, enabled, xAPIC at the architectural default (SDM Vol. 3A §11.4.4).
            apic_base: 0xFEE0_0000 | (1 << 11) | (1 << 8),
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            star: 0,
            lstar: 0,
            cstar: 0,
            fmask: 0,
            kernel_gs_base: 0,
            // Power-up PAT value (SDM Vol. 3A §11.12.4).
            pat: 0x0007_0406_0007_0406,
            mtrr_def_type: 0,
            mtrr_fixed: [0; 11],
            mtrr_var: [(0, 0); 8],
            // Fast-strings enabled, as firmware leaves it.
            misc_enable: 1,
        }
    }
}

/// x87/MMX/SSE state in the FXSAVE image layout (Intel SDM Vol. 1 §10.5.1, Table 10-2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FxsaveArea {
    pub fcw: u16,
    pub fsw: u16,
    /// Abridged tag word: one bit per register, 1 = valid.
    pub ftw: u8,
    pub fop: u16,
    pub fip: u64,
    pub fdp: u64,
    pub mxcsr: u32,
    pub mxcsr_mask: u32,
    /// ST0–ST7 / MM0–MM7, 80 bits each in the low 10 bytes of 16.
    pub st: [[u8; 16]; 8],
    /// XMM0–XMM15.
    pub xmm: [[u8; 16]; 16],
}

impl Default for FxsaveArea {
    fn default() -> Self {
        FxsaveArea {
            // FNINIT values (SDM Vol. 1 §8.1.1): all exceptions masked, 64-bit precision.
            fcw: 0x037F,
            fsw: 0,
            ftw: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            mxcsr: 0x1F80,
            mxcsr_mask: 0xFFFF,
            st: [[0; 16]; 8],
            xmm: [[0; 16]; 16],
        }
    }
}

/// An exception the CPU must deliver before executing anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingException {
    pub vector: u8,
    pub error_code: Option<u32>,
}

/// Index of each general-purpose register in [`CpuState::gpr`].
pub mod gpr {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
}

/// RFLAGS bits (Intel SDM Vol. 1 §3.4.3).
pub mod flags {
    pub const CF: u64 = 1 << 0;
    pub const FIXED1: u64 = 1 << 1;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    pub const IOPL: u64 = 3 << 12;
    pub const NT: u64 = 1 << 14;
    pub const RF: u64 = 1 << 16;
    pub const VM: u64 = 1 << 17;
    pub const AC: u64 = 1 << 18;
    pub const VIF: u64 = 1 << 19;
    pub const VIP: u64 = 1 << 20;
    pub const ID: u64 = 1 << 21;
}

/// Control-register bits (Intel SDM Vol. 3A §2.5).
pub mod cr {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_MP: u64 = 1 << 1;
    pub const CR0_EM: u64 = 1 << 2;
    pub const CR0_TS: u64 = 1 << 3;
    pub const CR0_ET: u64 = 1 << 4;
    pub const CR0_NE: u64 = 1 << 5;
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR0_AM: u64 = 1 << 18;
    pub const CR0_NW: u64 = 1 << 29;
    pub const CR0_CD: u64 = 1 << 30;
    pub const CR0_PG: u64 = 1 << 31;
    pub const CR4_VME: u64 = 1 << 0;
    pub const CR4_PVI: u64 = 1 << 1;
    pub const CR4_TSD: u64 = 1 << 2;
    pub const CR4_DE: u64 = 1 << 3;
    pub const CR4_PSE: u64 = 1 << 4;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_MCE: u64 = 1 << 6;
    pub const CR4_PGE: u64 = 1 << 7;
    pub const CR4_PCE: u64 = 1 << 8;
    pub const CR4_OSFXSR: u64 = 1 << 9;
    pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
    pub const CR4_FSGSBASE: u64 = 1 << 16;
    pub const CR4_PCIDE: u64 = 1 << 17;
    pub const CR4_OSXSAVE: u64 = 1 << 18;
    pub const EFER_SCE: u64 = 1 << 0;
    pub const EFER_LME: u64 = 1 << 8;
    pub const EFER_LMA: u64 = 1 << 10;
    pub const EFER_NXE: u64 = 1 << 11;
}

/// The full architectural state of one x86 CPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuState {
    /// Layout version of this struct; see [`CpuState::FORMAT_VERSION`].
    pub format_version: u32,
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8–R15 (ModRM encoding order).
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    /// ES, CS, SS, DS, FS, GS, indexed by [`SegReg`].
    pub segments: [Segment; 6],
    pub ldtr: Segment,
    pub tr: Segment,
    pub gdtr: DescriptorTable,
    pub idtr: DescriptorTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub xcr0: u64,
    /// DR0–DR7 (DR4/DR5 alias DR6/DR7 and are stored but unused).
    pub dr: [u64; 8],
    pub msrs: Msrs,
    pub fpu: FxsaveArea,
    /// An exception raised but not yet delivered.
    pub pending_exception: Option<PendingException>,
    /// An external interrupt vector acknowledged but not yet delivered.
    pub pending_interrupt: Option<u8>,
    /// An NMI is waiting for delivery.
    pub nmi_pending: bool,
    /// NMIs are blocked until the next IRET.
    pub nmi_blocked: bool,
    /// Interrupts are inhibited for one instruction after STI.
    pub sti_shadow: bool,
    /// Interrupts and debug traps are inhibited for one instruction after MOV SS / POP SS.
    pub mov_ss_shadow: bool,
    /// The CPU executed HLT and waits for an interrupt.
    pub halted: bool,
}

impl Default for CpuState {
    fn default() -> Self {
        Self::reset()
    }
}

impl CpuState {
    /// Bumped whenever a field is added, removed or changes meaning.
    pub const FORMAT_VERSION: u32 = 1;

    /// The state after RESET (Intel SDM Vol. 3A §9.1.1, Table 9-1): real mode, CS.base
    /// 0xFFFF0000 so the first fetch is at 0xFFFFFFF0.
    pub fn reset() -> Self {
        let mut segments = [Segment::real_mode(0); 6];
        segments[SegReg::Cs as usize] = Segment {
            selector: 0xF000,
            base: 0xFFFF_0000,
            limit: 0xFFFF,
            attributes: 0x9B,
        };
        let system = |ty: u32| Segment {
            selector: 0,
            base: 0,
            limit: 0xFFFF,
            attributes: ty | Segment::ATTR_P,
        };
        let mut gpr = [0u64; 16];
        // EDX holds the processor signature after reset.
        gpr[gpr::RDX] = 0x0000_0600;
        CpuState {
            format_version: Self::FORMAT_VERSION,
            gpr,
            rip: 0xFFF0,
            rflags: flags::FIXED1,
            segments,
            ldtr: system(0x2),
            tr: system(0xB),
            gdtr: DescriptorTable {
                base: 0,
                limit: 0xFFFF,
            },
            idtr: DescriptorTable {
                base: 0,
                limit: 0xFFFF,
            },
            cr0: cr::CR0_ET | cr::CR0_CD | cr::CR0_NW,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            xcr0: 1,
            dr: [0, 0, 0, 0, 0xFFFF_0FF0, 0x400, 0xFFFF_0FF0, 0x400],
            msrs: Msrs::default(),
            fpu: FxsaveArea::default(),
            pending_exception: None,
            pending_interrupt: None,
            nmi_pending: false,
            nmi_blocked: false,
            sti_shadow: false,
            mov_ss_shadow: false,
            halted: false,
        }
    }

    /// The given segment register.
    pub fn seg(&self, reg: SegReg) -> &Segment {
        &self.segments[reg as usize]
    }

    /// The given segment register, mutably.
    pub fn seg_mut(&mut self, reg: SegReg) -> &mut Segment {
        &mut self.segments[reg as usize]
    }

    /// Current privilege level: CS.DPL in protected mode (SS.DPL equals it), 3 in virtual-8086
    /// mode, 0 in real mode.
    pub fn cpl(&self) -> u8 {
        if self.cr0 & cr::CR0_PE == 0 {
            0
        } else if self.rflags & flags::VM != 0 {
            3
        } else {
            self.segments[SegReg::Ss as usize].dpl()
        }
    }

    /// Protected mode is enabled.
    pub fn protected_mode(&self) -> bool {
        self.cr0 & cr::CR0_PE != 0
    }

    /// IA-32e mode is active (EFER.LMA).
    pub fn long_mode_active(&self) -> bool {
        self.efer & cr::EFER_LMA != 0
    }

    /// The CPU executes 64-bit code (IA-32e mode with CS.L).
    pub fn in_64bit_code(&self) -> bool {
        self.long_mode_active() && self.seg(SegReg::Cs).long()
    }

    /// Default operand/address size in bits of the current code segment: 16, 32 or 64.
    pub fn code_bitness(&self) -> u32 {
        if self.in_64bit_code() {
            64
        } else if self.protected_mode() && self.rflags & flags::VM == 0 && self.seg(SegReg::Cs).db()
        {
            32
        } else {
            16
        }
    }

    /// Linear address of the next instruction (CS.base + RIP).
    pub fn linear_rip(&self) -> u64 {
        if self.in_64bit_code() {
            self.rip
        } else {
            (self.seg(SegReg::Cs).base + self.rip) & 0xFFFF_FFFF
        }
    }

    /// Refuse a snapshot written by a different layout.
    pub fn check_version(&self) -> crate::Result<()> {
        if self.format_version == Self::FORMAT_VERSION {
            Ok(())
        } else {
            Err(crate::Error::StateVersion {
                found: self.format_version,
                expected: Self::FORMAT_VERSION,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_fetches_from_reset_vector() {
        let s = CpuState::reset();
        assert_eq!(s.linear_rip(), 0xFFFF_FFF0);
        assert_eq!(s.code_bitness(), 16);
        assert_eq!(s.cpl(), 0);
    }

    #[test]
    fn serde_round_trip_keeps_every_field() {
        let mut s = CpuState::reset();
        s.gpr[5] = 0x1234_5678_9abc_def0;
        s.fpu.xmm[15][3] = 7;
        s.pending_exception = Some(PendingException {
            vector: 14,
            error_code: Some(2),
        });
        let json = serde_json::to_string(&s).expect("serialize");
        let back: CpuState = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(s, back);
        back.check_version().expect("same version");
    }
}
