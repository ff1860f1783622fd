//! pcvm-accel-kvm: the KVM CPU backend.
//!
//! [`KvmBackend`] runs guest code in a KVM vCPU and implements [`pcvm_core::CpuBackend`] on the
//! same device model as the interpreter: port-I/O and MMIO exits go to the platform's buses,
//! the platform's 8259 pair drives interrupts by default (userspace irqchip), guest RAM is the
//! same host mapping. [`hardware_virtualization_available`] and [`kvm_usable`] let the machine
//! decide whether `--accel auto` should pick KVM.
//!
//! - [`backend`]: the vCPU run loop, state transfer, debugging.
//! - [`state`]: `CpuState` ↔ `kvm_regs`/`kvm_sregs`/`kvm_fpu`/MSRs/events.
//! - [`memslots`]: RAM, ROM and PAM areas as KVM memory slots.
//! - [`cpuid`]: the guest CPUID.
//! - [`msr_exits`]: the local APIC's MSRs handed to the platform (userspace irqchip).
//! - [`kick`]: signals that get a vCPU out of `KVM_RUN`.
//! - [`detect`]: is KVM usable, is it hardware-backed.
//!
//! # Userspace vs kernel irqchip
//! By default ([`IrqchipMode::Userspace`]) the platform's interrupt controller (its local
//! APIC with the 8259 pair behind LINT0, or just the PIC) decides what to inject, exactly as
//! for the interpreter, and HLT returns [`pcvm_core::VmExit::Halted`] to the machine loop. The
//! xAPIC page at 0xFEE00000 has no memory slot, so its accesses are MMIO exits to the
//! platform's bus; the APIC's MSRs reach the platform through [`msr_exits`] when KVM allows it
//! (otherwise CPUID hides the APIC). CR8 is the APIC's TPR bits 7:4: before each entry the
//! backend puts the LAPIC's value in `kvm_run.cr8`, and a changed value after the exit (a
//! guest MOV to CR8) goes back to the LAPIC before the exit's own MMIO is performed. Timers (PIT, RTC, HPET, the LAPIC timer) run on the
//! platform's virtual clock; the vCPU comes out of `KVM_RUN` at the next deadline.
//!
//! The TSC-deadline timer: under KVM the guest's TSC is KVM's (host TSC plus an offset, at
//! [`KvmBackend::tsc_khz`]), not the interpreter's 1 GHz virtual-clock TSC. A guest's
//! IA32_TSC_DEADLINE write is converted: the delay `deadline − guest TSC` in guest ticks
//! becomes ns of the virtual clock at `KVM_GET_TSC_KHZ`, so the LAPIC fires after the delay
//! the guest asked for, and reads back the guest's own deadline value. With [`IrqchipMode::Kernel`],
//! KVM's in-kernel PIC/IOAPIC/LAPIC and PIT handle ports 0x20/0xA0/0x4D0/0x40–0x43 and the
//! APIC pages without exits; devices must raise interrupts through
//! [`KvmBackend::irq_line`] (`KVM_IRQ_LINE`), and HLT waits inside KVM.
//!
//! # What software KVM (kvm-pvm, no VMX/SVM) does differently — measured
//! - Guest code runs at about 1.8 M instructions/s; one port-I/O exit round trip costs about
//!   15 µs (`benches/pio_exit.rs`).
//! - `KVM_GET_FPU` returns MXCSR as 0, so x87/SSE state travels through `KVM_GET/SET_XSAVE`.
//! - Host writes of IA32_TSC are accepted but ignored.
//! - Paging outside long mode is unsupported: `KVM_SET_SREGS` drops CR0.PG (reported as an
//!   error by `set_state`) and a guest that sets it triple-faults. Long mode works.
//! - The single-step trap after an instruction that exited for I/O is not reported; the
//!   backend completes such instructions itself (`immediate_exit`) and counts the step.
//! - A descriptor load whose accessed-bit update hits read-only memory (a GDT in ROM with
//!   clear accessed bits) never completes: the dropped write is retried forever.
//! - `KVM_CAP_GUEST_DEBUG_HW_BPS` is 0: breakpoints and write watchpoints are emulated by
//!   single-stepping; read/access watchpoints are refused.
//! - `KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)` and `KVM_X86_SET_MSR_FILTER` are accepted,
//!   and RDMSR/WRMSR exits arrive from its instruction emulator too (x2APIC, APIC base, TSC
//!   deadline all reach the userspace LAPIC; `tests/lapic.rs`). With the kernel irqchip its
//!   CPUID offers x2APIC and the TSC-deadline timer. `KVM_GET_TSC_KHZ` works.

pub mod backend;
pub mod cpuid;
pub mod detect;
pub mod error;
pub mod irq_line;
pub mod kick;
pub mod memslots;
pub mod msr_exits;
pub mod state;

pub use backend::{IrqchipMode, KvmBackend, KvmOptions};
pub use detect::{hardware_virtualization_available, kvm_usable, KvmInfo};
pub use error::{Error, Result};
pub use irq_line::KvmIrqLine;
