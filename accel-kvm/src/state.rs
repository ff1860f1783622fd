//! [`CpuState`] to and from KVM's register structures (KVM API: `KVM_GET/SET_REGS`, `_SREGS`,
//! `_FPU`, `_MSRS`, `_DEBUGREGS`, `_VCPU_EVENTS`).
//!
//! Segment attributes in `CpuState` use the VMX access-rights layout (Intel SDM Vol. 3C
//! §24.4.1), which `kvm_segment` unpacks into one field per bit, so the mapping is lossless.
//! What KVM cannot hold:
//! - DR4/DR5 are aliases of DR6/DR7 (SDM Vol. 3B §17.2.2); KVM keeps only DR6/DR7, so they read
//!   back as copies of DR6/DR7.
//! - `mxcsr_mask` is a property of the host CPU; it reads back as the host's value.
//! - `xcr0` only round-trips when the guest's CPUID exposes XSAVE (otherwise it reads as 1).
//! - The APIC base MSR goes through `kvm_sregs.apic_base`; without an in-kernel LAPIC KVM stores
//!   it as given. Once the guest wrote it to the platform's LAPIC (userspace irqchip, MSR
//!   exits), the backend reports the value the LAPIC accepted instead.

use kvm_bindings::{
    kvm_debugregs, kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events,
    KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SHADOW, KVM_X86_SHADOW_INT_MOV_SS,
    KVM_X86_SHADOW_INT_STI,
};
use pcvm_core::cpu_state::PendingException;
use pcvm_core::{CpuState, DescriptorTable, FxsaveArea, Msrs, SegReg, Segment};

/// A `Segment` as `kvm_segment`.
pub fn segment_to_kvm(s: &Segment) -> kvm_segment {
    let a = s.attributes;
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & 0xF) as u8,
        s: u8::from(a & Segment::ATTR_S != 0),
        dpl: ((a >> 5) & 3) as u8,
        present: u8::from(a & Segment::ATTR_P != 0),
        avl: u8::from(a & Segment::ATTR_AVL != 0),
        l: u8::from(a & Segment::ATTR_L != 0),
        db: u8::from(a & Segment::ATTR_DB != 0),
        g: u8::from(a & Segment::ATTR_G != 0),
        unusable: u8::from(a & Segment::ATTR_UNUSABLE != 0),
        padding: 0,
    }
}

/// A `kvm_segment` as `Segment`.
pub fn segment_from_kvm(k: &kvm_segment) -> Segment {
    let bit = |v: u8, b: u32| if v != 0 { b } else { 0 };
    Segment {
        selector: k.selector,
        base: k.base,
        limit: k.limit,
        attributes: u32::from(k.type_ & 0xF)
            | bit(k.s, Segment::ATTR_S)
            | (u32::from(k.dpl & 3) << 5)
            | bit(k.present, Segment::ATTR_P)
            | bit(k.avl, Segment::ATTR_AVL)
            | bit(k.l, Segment::ATTR_L)
            | bit(k.db, Segment::ATTR_DB)
            | bit(k.g, Segment::ATTR_G)
            | bit(k.unusable, Segment::ATTR_UNUSABLE),
    }
}

fn dtable_to_kvm(d: &DescriptorTable) -> kvm_dtable {
    kvm_dtable {
        base: d.base,
        limit: d.limit,
        padding: [0; 3],
    }
}

fn dtable_from_kvm(d: &kvm_dtable) -> DescriptorTable {
    DescriptorTable {
        base: d.base,
        limit: d.limit,
    }
}

/// General-purpose registers, RIP and RFLAGS.
pub fn regs_to_kvm(s: &CpuState) -> kvm_regs {
    let g = &s.gpr;
    kvm_regs {
        rax: g[0],
        rcx: g[1],
        rdx: g[2],
        rbx: g[3],
        rsp: g[4],
        rbp: g[5],
        rsi: g[6],
        rdi: g[7],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
        rip: s.rip,
        rflags: s.rflags,
    }
}

/// Store `kvm_regs` into `s`.
pub fn regs_from_kvm(s: &mut CpuState, r: &kvm_regs) {
    s.gpr = [
        r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ];
    s.rip = r.rip;
    s.rflags = r.rflags;
}

/// Segments, descriptor tables, control registers, EFER and the APIC base.
pub fn sregs_to_kvm(s: &CpuState) -> kvm_sregs {
    let seg = |r: SegReg| segment_to_kvm(s.seg(r));
    kvm_sregs {
        cs: seg(SegReg::Cs),
        ds: seg(SegReg::Ds),
        es: seg(SegReg::Es),
        fs: seg(SegReg::Fs),
        gs: seg(SegReg::Gs),
        ss: seg(SegReg::Ss),
        tr: segment_to_kvm(&s.tr),
        ldt: segment_to_kvm(&s.ldtr),
        gdt: dtable_to_kvm(&s.gdtr),
        idt: dtable_to_kvm(&s.idtr),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.msrs.apic_base,
        // Pending external interrupts travel in kvm_vcpu_events instead.
        interrupt_bitmap: [0; 4],
    }
}

/// Store `kvm_sregs` into `s`. `interrupt_bitmap` is ignored: with `KVM_CAP_VCPU_EVENTS` the
/// same injected interrupt is read from `kvm_vcpu_events`.
pub fn sregs_from_kvm(s: &mut CpuState, k: &kvm_sregs) {
    *s.seg_mut(SegReg::Cs) = segment_from_kvm(&k.cs);
    *s.seg_mut(SegReg::Ds) = segment_from_kvm(&k.ds);
    *s.seg_mut(SegReg::Es) = segment_from_kvm(&k.es);
    *s.seg_mut(SegReg::Fs) = segment_from_kvm(&k.fs);
    *s.seg_mut(SegReg::Gs) = segment_from_kvm(&k.gs);
    *s.seg_mut(SegReg::Ss) = segment_from_kvm(&k.ss);
    s.tr = segment_from_kvm(&k.tr);
    s.ldtr = segment_from_kvm(&k.ldt);
    s.gdtr = dtable_from_kvm(&k.gdt);
    s.idtr = dtable_from_kvm(&k.idt);
    s.cr0 = k.cr0;
    s.cr2 = k.cr2;
    s.cr3 = k.cr3;
    s.cr4 = k.cr4;
    s.cr8 = k.cr8;
    s.efer = k.efer;
    s.msrs.apic_base = k.apic_base;
}

/// x87/SSE state as `kvm_fpu` (the FXSAVE fields one by one; SDM Vol. 1 §10.5.1).
pub fn fpu_to_kvm(f: &FxsaveArea) -> kvm_fpu {
    kvm_fpu {
        fpr: f.st,
        fcw: f.fcw,
        fsw: f.fsw,
        ftwx: f.ftw,
        pad1: 0,
        last_opcode: f.fop,
        last_ip: f.fip,
        last_dp: f.fdp,
        xmm: f.xmm,
        mxcsr: f.mxcsr,
        pad2: 0,
    }
}

/// Store `kvm_fpu` into `f` (everything but `mxcsr_mask`, which `kvm_fpu` lacks).
pub fn fpu_from_kvm(f: &mut FxsaveArea, k: &kvm_fpu) {
    f.st = k.fpr;
    f.fcw = k.fcw;
    f.fsw = k.fsw;
    f.ftw = k.ftwx;
    f.fop = k.last_opcode;
    f.fip = k.last_ip;
    f.fdp = k.last_dp;
    f.xmm = k.xmm;
    f.mxcsr = k.mxcsr;
}

/// DR0–DR3, DR6, DR7.
pub fn debugregs_to_kvm(s: &CpuState) -> kvm_debugregs {
    kvm_debugregs {
        db: [s.dr[0], s.dr[1], s.dr[2], s.dr[3]],
        dr6: s.dr[6],
        dr7: s.dr[7],
        ..Default::default()
    }
}

/// Store `kvm_debugregs` into `s`; DR4/DR5 become copies of DR6/DR7.
pub fn debugregs_from_kvm(s: &mut CpuState, k: &kvm_debugregs) {
    s.dr = [
        k.db[0], k.db[1], k.db[2], k.db[3], k.dr6, k.dr7, k.dr6, k.dr7,
    ];
}

/// Pending exception, pending (acknowledged) interrupt, NMI state and interrupt shadows.
pub fn events_to_kvm(s: &CpuState) -> kvm_vcpu_events {
    let mut e = kvm_vcpu_events::default();
    if let Some(x) = s.pending_exception {
        e.exception.injected = 1;
        e.exception.nr = x.vector;
        e.exception.has_error_code = u8::from(x.error_code.is_some());
        e.exception.error_code = x.error_code.unwrap_or(0);
    }
    if let Some(v) = s.pending_interrupt {
        e.interrupt.injected = 1;
        e.interrupt.nr = v;
        e.interrupt.soft = 0;
    }
    let mut shadow = 0;
    if s.sti_shadow {
        shadow |= KVM_X86_SHADOW_INT_STI;
    }
    if s.mov_ss_shadow {
        shadow |= KVM_X86_SHADOW_INT_MOV_SS;
    }
    e.interrupt.shadow = shadow as u8;
    e.nmi.pending = u8::from(s.nmi_pending);
    e.nmi.masked = u8::from(s.nmi_blocked);
    e.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW;
    e
}

/// Store `kvm_vcpu_events` into `s`. An NMI KVM was in the middle of injecting counts as
/// pending: it has not been delivered yet.
pub fn events_from_kvm(s: &mut CpuState, e: &kvm_vcpu_events) {
    s.pending_exception =
        (e.exception.injected != 0 || e.exception.pending != 0).then_some(PendingException {
            vector: e.exception.nr,
            error_code: (e.exception.has_error_code != 0).then_some(e.exception.error_code),
        });
    // A software interrupt (INT n) being injected is part of that instruction, not an
    // external interrupt; KVM re-executes the instruction if it is dropped.
    s.pending_interrupt =
        (e.interrupt.injected != 0 && e.interrupt.soft == 0).then_some(e.interrupt.nr);
    let shadow = u32::from(e.interrupt.shadow);
    s.sti_shadow = shadow & KVM_X86_SHADOW_INT_STI != 0;
    s.mov_ss_shadow = shadow & KVM_X86_SHADOW_INT_MOV_SS != 0;
    s.nmi_pending = e.nmi.pending != 0 || e.nmi.injected != 0;
    s.nmi_blocked = e.nmi.masked != 0;
}

/// IA32_TIME_STAMP_COUNTER.
pub const MSR_TSC: u32 = 0x10;
/// IA32_TSC_AUX.
pub const MSR_TSC_AUX: u32 = 0xC000_0103;
/// IA32_MISC_ENABLE.
pub const MSR_MISC_ENABLE: u32 = 0x1A0;
/// Fixed-range MTRR indices in `Msrs::mtrr_fixed` order (SDM Vol. 3A §11.11.2.2).
pub const MTRR_FIXED: [u32; 11] = [
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F,
];

/// Every MSR of [`Msrs`] that travels through `KVM_GET/SET_MSRS` (APIC base uses sregs).
pub fn msr_indices() -> Vec<u32> {
    let mut v = vec![
        MSR_TSC,
        MSR_TSC_AUX,
        0x174,
        0x175,
        0x176,
        0xC000_0081,
        0xC000_0082,
        0xC000_0083,
        0xC000_0084,
        0xC000_0102,
        0x277,
        0x2FF,
        MSR_MISC_ENABLE,
    ];
    v.extend_from_slice(&MTRR_FIXED);
    v.extend(0x200..0x210);
    v
}

/// The value of MSR `index` in `m`, `None` for an index [`msr_indices`] does not list.
pub fn msr_get(m: &Msrs, index: u32) -> Option<u64> {
    Some(match index {
        MSR_TSC => m.tsc,
        MSR_TSC_AUX => m.tsc_aux,
        0x174 => m.sysenter_cs,
        0x175 => m.sysenter_esp,
        0x176 => m.sysenter_eip,
        0xC000_0081 => m.star,
        0xC000_0082 => m.lstar,
        0xC000_0083 => m.cstar,
        0xC000_0084 => m.fmask,
        0xC000_0102 => m.kernel_gs_base,
        0x277 => m.pat,
        0x2FF => m.mtrr_def_type,
        MSR_MISC_ENABLE => m.misc_enable,
        0x200..=0x20F => {
            let pair = m.mtrr_var.get(((index - 0x200) / 2) as usize)?;
            if index & 1 == 0 {
                pair.0
            } else {
                pair.1
            }
        }
        _ => {
            let i = MTRR_FIXED.iter().position(|&x| x == index)?;
            m.mtrr_fixed[i]
        }
    })
}

/// Store MSR `index` into `m`; false for an index [`msr_indices`] does not list.
pub fn msr_set(m: &mut Msrs, index: u32, value: u64) -> bool {
    let slot: &mut u64 = match index {
        MSR_TSC => &mut m.tsc,
        MSR_TSC_AUX => &mut m.tsc_aux,
        0x174 => &mut m.sysenter_cs,
        0x175 => &mut m.sysenter_esp,
        0x176 => &mut m.sysenter_eip,
        0xC000_0081 => &mut m.star,
        0xC000_0082 => &mut m.lstar,
        0xC000_0083 => &mut m.cstar,
        0xC000_0084 => &mut m.fmask,
        0xC000_0102 => &mut m.kernel_gs_base,
        0x277 => &mut m.pat,
        0x2FF => &mut m.mtrr_def_type,
        MSR_MISC_ENABLE => &mut m.misc_enable,
        0x200..=0x20F => {
            let Some(pair) = m.mtrr_var.get_mut(((index - 0x200) / 2) as usize) else {
                return false;
            };
            if index & 1 == 0 {
                &mut pair.0
            } else {
                &mut pair.1
            }
        }
        _ => match MTRR_FIXED.iter().position(|&x| x == index) {
            Some(i) => &mut m.mtrr_fixed[i],
            None => return false,
        },
    };
    *slot = value;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_attributes_survive_kvm_layout() {
        for attributes in [
            0x9B, 0x93, 0xC09B, 0xA09B, 0x1_0000, 0x8B, 0x82, 0xF3, 0x10FB,
        ] {
            let s = Segment {
                selector: 0x2B,
                base: 0x1234_5000,
                limit: 0xFFFF_FFFF,
                attributes,
            };
            assert_eq!(segment_from_kvm(&segment_to_kvm(&s)), s, "{attributes:#x}");
        }
    }

    #[test]
    fn registers_and_events_survive() {
        let mut s = CpuState::reset();
        for (i, g) in s.gpr.iter_mut().enumerate() {
            *g = 0x0101_0101_0101_0101u64.wrapping_mul(i as u64 + 1);
        }
        s.rip = 0xDEAD;
        s.rflags = 0x246;
        s.pending_exception = Some(PendingException {
            vector: 13,
            error_code: Some(0x18),
        });
        s.pending_interrupt = Some(0x30);
        s.sti_shadow = true;
        s.nmi_pending = true;
        s.nmi_blocked = true;
        let mut back = CpuState::reset();
        regs_from_kvm(&mut back, &regs_to_kvm(&s));
        sregs_from_kvm(&mut back, &sregs_to_kvm(&s));
        events_from_kvm(&mut back, &events_to_kvm(&s));
        assert_eq!(back, s);
    }

    #[test]
    fn every_listed_msr_is_stored() {
        let mut m = Msrs::default();
        for (n, index) in msr_indices().into_iter().enumerate() {
            assert!(msr_set(&mut m, index, n as u64 + 100), "{index:#x}");
        }
        for (n, index) in msr_indices().into_iter().enumerate() {
            assert_eq!(msr_get(&m, index), Some(n as u64 + 100), "{index:#x}");
        }
        assert!(!msr_set(&mut m, 0x1B, 0), "APIC base goes through sregs");
        assert_eq!(msr_get(&m, 0x3A), None);
    }
}

/// Write `f` into the legacy (FXSAVE) part of a `kvm_xsave` region and mark x87 and SSE state
/// present in XSTATE_BV (SDM Vol. 1 §13.4), so KVM loads it rather than the init state.
pub fn fxsave_to_xsave_region(f: &FxsaveArea, region: &mut [u32; 1024]) {
    let mut bytes = [0u8; 520];
    for (i, w) in region.iter().take(130).enumerate() {
        bytes[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    bytes[0..2].copy_from_slice(&f.fcw.to_le_bytes());
    bytes[2..4].copy_from_slice(&f.fsw.to_le_bytes());
    bytes[4] = f.ftw;
    bytes[5] = 0;
    bytes[6..8].copy_from_slice(&f.fop.to_le_bytes());
    bytes[8..16].copy_from_slice(&f.fip.to_le_bytes());
    bytes[16..24].copy_from_slice(&f.fdp.to_le_bytes());
    bytes[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
    for (i, st) in f.st.iter().enumerate() {
        bytes[32 + 16 * i..48 + 16 * i].copy_from_slice(st);
    }
    for (i, x) in f.xmm.iter().enumerate() {
        bytes[160 + 16 * i..176 + 16 * i].copy_from_slice(x);
    }
    // XSTATE_BV at byte 512: x87 (bit 0) and SSE (bit 1) come from the legacy area.
    bytes[512] |= 0b11;
    for (i, w) in region.iter_mut().take(130).enumerate() {
        *w = u32::from_le_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ]);
    }
}

/// Read the legacy (FXSAVE) part of a `kvm_xsave` region into `f`. Components whose
/// XSTATE_BV bit is clear are in their init state (SDM Vol. 1 §13.6), whatever the bytes say.
pub fn fxsave_from_xsave_region(f: &mut FxsaveArea, region: &[u32; 1024]) {
    let mut bytes = [0u8; 520];
    for (i, w) in region.iter().take(130).enumerate() {
        bytes[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    let xstate_bv = bytes[512];
    let init = FxsaveArea::default();
    if xstate_bv & 1 != 0 {
        f.fcw = u16_at(0);
        f.fsw = u16_at(2);
        f.ftw = bytes[4];
        f.fop = u16_at(6);
        f.fip = u64_at(8);
        f.fdp = u64_at(16);
        for (i, st) in f.st.iter_mut().enumerate() {
            st.copy_from_slice(&bytes[32 + 16 * i..48 + 16 * i]);
        }
    } else {
        f.fcw = init.fcw;
        f.fsw = init.fsw;
        f.ftw = init.ftw;
        f.fop = init.fop;
        f.fip = init.fip;
        f.fdp = init.fdp;
        f.st = init.st;
    }
    // MXCSR is saved whenever SSE or AVX state is (XSAVE saves it with either component).
    f.mxcsr = u32_at(24);
    f.mxcsr_mask = u32_at(28);
    if xstate_bv & 2 != 0 {
        for (i, x) in f.xmm.iter_mut().enumerate() {
            x.copy_from_slice(&bytes[160 + 16 * i..176 + 16 * i]);
        }
    } else {
        f.xmm = init.xmm;
    }
}

#[cfg(test)]
mod xsave_tests {
    use super::*;

    #[test]
    fn fxsave_layout_round_trips_through_an_xsave_region() {
        let mut f = FxsaveArea {
            fcw: 0x027F,
            fsw: 0x3800,
            ftw: 0x81,
            fop: 0x1DB,
            fip: 0x1234_5678_9ABC,
            fdp: 0x500,
            mxcsr: 0x9F80,
            mxcsr_mask: 0xFFFF,
            ..Default::default()
        };
        f.st[3] = [7; 16];
        f.xmm[15] = [9; 16];
        let mut region = [0u32; 1024];
        region[7] = 0xFFFF; // MXCSR_MASK as the CPU writes it
        fxsave_to_xsave_region(&f, &mut region);
        assert_eq!(region[128] & 3, 3, "XSTATE_BV x87|SSE");
        let mut back = FxsaveArea::default();
        fxsave_from_xsave_region(&mut back, &region);
        assert_eq!(back, f);
        region[128] = 0;
        fxsave_from_xsave_region(&mut back, &region);
        assert_eq!(
            back.fcw, 0x037F,
            "init x87 state when XSTATE_BV.x87 is clear"
        );
        assert_eq!(back.xmm[15], [0; 16]);
    }
}
