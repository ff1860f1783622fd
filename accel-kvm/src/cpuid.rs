//! The CPUID the guest sees: `KVM_GET_SUPPORTED_CPUID` filtered to what pcvm's device model
//! can back (KVM API §4.46; CPUID leaves per Intel SDM Vol. 2A "CPUID").
//!
//! CPU features KVM executes itself (SSE*, AVX, XSAVE, NX, long mode …) are kept as KVM
//! reports them. The local APIC (leaf 1 EDX.APIC), x2APIC (leaf 1 ECX bit 21) and the
//! TSC-deadline timer (leaf 1 ECX bit 24) depend on where the APIC lives ([`Lapic`]):
//! - In KVM (kernel irqchip): as KVM reports them.
//! - In pcvm's device model (userspace irqchip) with the APIC's MSRs handed to userspace
//!   ([`crate::msr_exits`]): all three set, since the device model implements them.
//! - Userspace irqchip when KVM refused the MSR exits: all three cleared — the APIC page
//!   would still answer, but APIC-base and x2APIC accesses would not reach it.
//!
//! Also removed in userspace-irqchip mode: the architectural performance-monitoring leaf 0xA
//! (PMU interrupts go through the LAPIC's LVT, which KVM's PMU cannot reach here) and KVM's
//! paravirtual leaves 0x4000_0000.. (PV EOI, async page faults and steal time expect an
//! in-kernel LAPIC). In both modes: MONITOR/MWAIT (leaf 1 ECX bit 3), which KVM does not
//! emulate faithfully.
//!
//! The initial APIC ID (leaf 1 `EBX[31:24]`) and the x2APIC ID (leaves 0xB and 0x1F `EDX`)
//! are 0 for the single vCPU.

use kvm_bindings::kvm_cpuid_entry2;

/// Leaf 1 ECX: MONITOR/MWAIT.
pub const CPUID_1_ECX_MONITOR: u32 = 1 << 3;
/// Leaf 1 ECX: x2APIC.
pub const CPUID_1_ECX_X2APIC: u32 = 1 << 21;
/// Leaf 1 ECX: TSC-deadline timer mode of the LAPIC timer.
pub const CPUID_1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 ECX: XSAVE.
pub const CPUID_1_ECX_XSAVE: u32 = 1 << 26;
/// Leaf 1 EDX: on-chip local APIC.
pub const CPUID_1_EDX_APIC: u32 = 1 << 9;

/// Where the guest's local APIC lives, as far as CPUID is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lapic {
    /// KVM's in-kernel LAPIC (kernel irqchip).
    InKernel,
    /// pcvm's LAPIC, MMIO page and MSRs both reaching it (userspace irqchip).
    Userspace,
    /// Not shown to the guest (userspace irqchip without MSR exits).
    Hidden,
}

/// Filter `entries` in place for where the local APIC lives; returns whether leaf 1 still
/// advertises XSAVE (then XCR0 is part of the vCPU state).
pub fn filter(entries: &mut Vec<kvm_cpuid_entry2>, lapic: Lapic) -> bool {
    let kernel_irqchip = lapic == Lapic::InKernel;
    if !kernel_irqchip {
        entries.retain(|e| !(0x4000_0000..0x4001_0000).contains(&e.function));
    }
    let mut xsave = false;
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx &= 0x00FF_FFFF;
                e.ecx &= !CPUID_1_ECX_MONITOR;
                match lapic {
                    Lapic::InKernel => {}
                    Lapic::Userspace => {
                        e.ecx |= CPUID_1_ECX_X2APIC | CPUID_1_ECX_TSC_DEADLINE;
                        e.edx |= CPUID_1_EDX_APIC;
                    }
                    Lapic::Hidden => {
                        e.ecx &= !(CPUID_1_ECX_X2APIC | CPUID_1_ECX_TSC_DEADLINE);
                        e.edx &= !CPUID_1_EDX_APIC;
                    }
                }
                xsave = e.ecx & CPUID_1_ECX_XSAVE != 0;
            }
            0xB | 0x1F => e.edx = 0,
            0xA if !kernel_irqchip => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {}
        }
    }
    xsave
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            ecx,
            edx,
            ebx: 0x0300_0800,
            ..Default::default()
        }
    }

    #[test]
    fn userspace_irqchip_without_msr_exits_hides_the_lapic_and_pv_leaves() {
        let all = u32::MAX;
        let mut v = vec![entry(0, 0, 0), entry(1, all, all), entry(0xA, 1, 1)];
        v.push(entry(0x4000_0000, 0, 0));
        v.push(entry(0x4000_0001, 0, 0));
        let xsave = filter(&mut v, Lapic::Hidden);
        assert!(xsave);
        assert_eq!(v.len(), 3);
        let leaf1 = v[1];
        assert_eq!(leaf1.edx & CPUID_1_EDX_APIC, 0);
        assert_eq!(
            leaf1.ecx & (CPUID_1_ECX_X2APIC | CPUID_1_ECX_TSC_DEADLINE | CPUID_1_ECX_MONITOR),
            0
        );
        assert_eq!(leaf1.ebx >> 24, 0, "APIC ID 0");
        assert_eq!((v[2].eax, v[2].ecx, v[2].edx), (0, 0, 0));
    }

    #[test]
    fn kernel_irqchip_keeps_the_lapic() {
        let mut v = vec![entry(1, CPUID_1_ECX_X2APIC, CPUID_1_EDX_APIC)];
        v.push(entry(0x4000_0000, 0, 0));
        assert!(!filter(&mut v, Lapic::InKernel));
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].edx, CPUID_1_EDX_APIC);
        assert_eq!(v[0].ecx, CPUID_1_ECX_X2APIC);
    }

    #[test]
    fn userspace_lapic_is_advertised_with_x2apic_and_tsc_deadline_and_id_0() {
        let mut v = vec![entry(1, 0, 0), entry(0xA, 1, 1)];
        let mut topo = entry(0xB, 0, 0);
        topo.edx = 5;
        v.push(topo);
        v.push(entry(0x4000_0000, 0, 0));
        filter(&mut v, Lapic::Userspace);
        assert_eq!(v.len(), 3, "PV leaves still hidden");
        assert_eq!(v[0].edx & CPUID_1_EDX_APIC, CPUID_1_EDX_APIC);
        assert_eq!(
            v[0].ecx & (CPUID_1_ECX_X2APIC | CPUID_1_ECX_TSC_DEADLINE),
            CPUID_1_ECX_X2APIC | CPUID_1_ECX_TSC_DEADLINE
        );
        assert_eq!(v[1].eax, 0, "no PMU leaf");
        assert_eq!(v[2].edx, 0, "x2APIC ID 0");
    }
}
