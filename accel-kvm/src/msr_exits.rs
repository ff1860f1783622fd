//! The local APIC's MSRs in userspace (userspace irqchip): KVM hands guest RDMSR/WRMSR of
//! IA32_APIC_BASE, IA32_TSC_DEADLINE and the x2APIC registers to pcvm, which answers them from
//! the platform's local APIC (`Platform::read_local_msr`/`write_local_msr`), as the
//! interpreter does.
//!
//! How (KVM API §4.97 `KVM_X86_SET_MSR_FILTER`, §7.21 `KVM_CAP_X86_USER_SPACE_MSR`):
//! - `KVM_CAP_X86_USER_SPACE_MSR` with all three reasons: an access KVM refuses (`INVAL`),
//!   does not know (`UNKNOWN`) or is told to deny (`FILTER`) becomes a `KVM_EXIT_X86_RDMSR`/
//!   `WRMSR` instead of a #GP.
//! - A filter denying IA32_APIC_BASE and IA32_TSC_DEADLINE, which KVM would otherwise handle
//!   itself (without an in-kernel LAPIC it stores the APIC base and drops deadline writes).
//! - The x2APIC range cannot be filtered, but without an in-kernel LAPIC KVM refuses every
//!   access to it, so it arrives as an `INVAL` exit.
//!
//! Accesses that reach userspace for other MSRs (or that the platform does not take) are
//! answered with #GP, as KVM would have; the two filtered MSRs fall back to KVM's own handling
//! through host-initiated `KVM_GET/SET_MSRS`, which the filter does not apply to.

use kvm_bindings::{
    kvm_enable_cap, KVM_CAP_X86_USER_SPACE_MSR, KVM_MSR_EXIT_REASON_FILTER,
    KVM_MSR_EXIT_REASON_INVAL, KVM_MSR_EXIT_REASON_UNKNOWN,
};
use kvm_ioctls::{Cap, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VmFd};

/// IA32_TIME_STAMP_COUNTER (SDM Vol. 4 Table 2-2).
pub const MSR_TSC: u32 = 0x10;
/// IA32_APIC_BASE (SDM Vol. 3A §11.4.4).
pub const MSR_APIC_BASE: u32 = 0x1B;
/// IA32_TSC_DEADLINE (SDM Vol. 3A §11.5.4.1).
pub const MSR_TSC_DEADLINE: u32 = 0x6E0;
/// The x2APIC registers (SDM Vol. 3A §11.12.1.2).
pub const X2APIC_MSRS: std::ops::RangeInclusive<u32> = 0x800..=0x8FF;

/// The MSRs the filter takes away from KVM.
pub const FILTERED: [u32; 2] = [MSR_APIC_BASE, MSR_TSC_DEADLINE];

/// An MSR the platform's local APIC owns: one of [`FILTERED`] or an x2APIC register.
pub fn is_local_apic_msr(index: u32) -> bool {
    FILTERED.contains(&index) || X2APIC_MSRS.contains(&index)
}

/// Why KVM cannot hand the local APIC's MSRs to userspace: the step and its errno (0 when the
/// capability is simply absent, or the exits were not asked for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What was asked of KVM.
    pub operation: &'static str,
    /// The errno KVM answered with.
    pub errno: i32,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.errno == 0 {
            write!(f, "{}: not available", self.operation)
        } else {
            write!(
                f,
                "{}: errno {} ({})",
                self.operation,
                self.errno,
                std::io::Error::from_raw_os_error(self.errno)
            )
        }
    }
}

/// Turn on the MSR exits and the filter on `vm`. If the filter is refused after the exits
/// were enabled, those exits stay on; the run loop answers them with #GP as KVM would have.
pub fn enable(vm: &VmFd) -> Result<(), Refusal> {
    if !vm.check_extension(Cap::X86UserSpaceMsr) {
        return Err(Refusal {
            operation: "KVM_CHECK_EXTENSION(KVM_CAP_X86_USER_SPACE_MSR)",
            errno: 0,
        });
    }
    if !vm.check_extension(Cap::X86MsrFilter) {
        return Err(Refusal {
            operation: "KVM_CHECK_EXTENSION(KVM_CAP_X86_MSR_FILTER)",
            errno: 0,
        });
    }
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_X86_USER_SPACE_MSR,
        ..Default::default()
    };
    cap.args[0] = u64::from(
        KVM_MSR_EXIT_REASON_INVAL | KVM_MSR_EXIT_REASON_UNKNOWN | KVM_MSR_EXIT_REASON_FILTER,
    );
    vm.enable_cap(&cap).map_err(|e| Refusal {
        operation: "KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)",
        errno: e.errno(),
    })?;
    // One MSR per range, bit 0 clear: denied for reads and writes.
    let deny = [0u8];
    let ranges: Vec<MsrFilterRange<'_>> = FILTERED
        .iter()
        .map(|&base| MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base,
            msr_count: 1,
            bitmap: &deny,
        })
        .collect();
    vm.set_msr_filter(MsrFilterDefaultAction::ALLOW, &ranges)
        .map_err(|e| Refusal {
            operation: "KVM_X86_SET_MSR_FILTER",
            errno: e.errno(),
        })
}

/// The TSC value to pass with a TSC-deadline write to the platform, whose local APIC counts
/// the deadline in 1 GHz ticks of the virtual clock: `deadline − result` must be the delay in
/// ns. The guest's TSC under KVM runs at `tsc_khz` with its own offset, so the delay is
/// `(deadline − guest_tsc) / tsc_khz` ms; a deadline already passed gives a zero delay. The
/// APIC still stores (and the guest reads back) the guest's own `deadline`.
pub fn deadline_reference_tsc(deadline: u64, guest_tsc: u64, tsc_khz: u32) -> u64 {
    let ticks = deadline.saturating_sub(guest_tsc);
    let khz = u128::from(tsc_khz.max(1));
    let delay_ns = (u128::from(ticks) * 1_000_000 / khz).min(u128::from(u64::MAX)) as u64;
    deadline.saturating_sub(delay_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_delay_is_converted_from_guest_tsc_ticks_to_ns() {
        // 3 GHz guest TSC: 3000 ticks ahead is 1 us.
        let r = deadline_reference_tsc(1_000_003_000, 1_000_000_000, 3_000_000);
        assert_eq!(1_000_003_000 - r, 1_000);
        // 1 GHz: ticks are ns.
        assert_eq!(deadline_reference_tsc(5_000, 2_000, 1_000_000), 2_000);
        // Passed: no delay.
        assert_eq!(deadline_reference_tsc(10, 20, 2_000_000), 10);
        // A slow 1 MHz TSC on a far deadline saturates instead of wrapping.
        assert_eq!(deadline_reference_tsc(u64::MAX, 0, 1_000), 0);
    }

    #[test]
    fn the_local_apic_msrs_are_the_base_the_deadline_and_the_x2apic_range() {
        for m in [0x1B, 0x6E0, 0x800, 0x830, 0x8FF] {
            assert!(is_local_apic_msr(m), "{m:#x}");
        }
        for m in [0x10, 0x1A, 0x6E1, 0x7FF, 0x900, 0xC000_0080] {
            assert!(!is_local_apic_msr(m), "{m:#x}");
        }
    }

    #[test]
    fn refusals_name_the_step_and_the_errno() {
        let r = Refusal {
            operation: "KVM_X86_SET_MSR_FILTER",
            errno: libc::EINVAL,
        };
        let s = r.to_string();
        assert!(s.starts_with("KVM_X86_SET_MSR_FILTER: errno 22 ("), "{s}");
        let absent = Refusal {
            operation: "KVM_CHECK_EXTENSION(KVM_CAP_X86_MSR_FILTER)",
            errno: 0,
        };
        assert!(absent.to_string().ends_with("not available"));
    }
}
