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
//! - [`kick`]: signals that get a vCPU out of `KVM_RUN`.
//! - [`detect`]: is KVM usable, is it hardware-backed.

pub mod backend;
pub mod cpuid;
pub mod detect;
pub mod error;
pub mod irq_line;
pub mod kick;
pub mod memslots;
pub mod state;

pub use backend::{IrqchipMode, KvmBackend, KvmOptions};
pub use detect::{hardware_virtualization_available, kvm_usable, KvmInfo};
pub use error::{Error, Result};
pub use irq_line::KvmIrqLine;
