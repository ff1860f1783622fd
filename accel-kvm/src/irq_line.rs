//! Interrupt lines into KVM's in-kernel interrupt controllers (`KVM_IRQ_LINE`, KVM API §4.25).

use std::sync::Arc;

use kvm_ioctls::VmFd;
use pcvm_core::IrqLine;

/// Input `gsi` of the in-kernel PIC pair and IOAPIC (GSI 0–15 reach both, as on a PC), for
/// `--irqchip kernel`: a device model wired to this line raises its interrupt in KVM.
pub struct KvmIrqLine {
    vm: Arc<VmFd>,
    gsi: u32,
}

impl std::fmt::Debug for KvmIrqLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmIrqLine")
            .field("gsi", &self.gsi)
            .finish()
    }
}

impl KvmIrqLine {
    /// The line for `gsi` of the VM behind `vm` (which must have an in-kernel irqchip).
    pub fn new(vm: Arc<VmFd>, gsi: u32) -> Self {
        KvmIrqLine { vm, gsi }
    }
}

impl IrqLine for KvmIrqLine {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, high) {
            tracing::warn!(gsi = self.gsi, error = %e, "KVM_IRQ_LINE failed");
        }
    }
}
