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

/// Where a GSI goes with the in-kernel irqchip: `(gsi, irqchip, pin)` with irqchip
/// `KVM_IRQCHIP_PIC_MASTER`, `_PIC_SLAVE` or `_IOAPIC` (KVM API §4.52 KVM_SET_GSI_ROUTING).
pub type GsiRoute = (u32, u32, u32);

/// The PC's GSI routes, as QEMU sets them for the i440FX: GSI 0–15 reach the 8259 input of
/// the same number and GSI 0–23 the I/O APIC pin of the same number, except that GSI 0 (the
/// PIT's IRQ0) goes to I/O APIC pin 2, as the MADT's interrupt source override tells the
/// guest, and GSI 2 (the 8259 cascade) goes nowhere. KVM's default table routes GSI 0 to pin
/// 0, where a guest following the MADT never looks.
pub fn pc_gsi_routes() -> Vec<GsiRoute> {
    use kvm_bindings::{KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};
    let mut routes = Vec::new();
    for gsi in (0..16u32).filter(|&g| g != 2) {
        let (chip, pin) = if gsi < 8 {
            (KVM_IRQCHIP_PIC_MASTER, gsi)
        } else {
            (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
        };
        routes.push((gsi, chip, pin));
    }
    for gsi in (0..24u32).filter(|&g| g != 2) {
        let pin = if gsi == 0 { 2 } else { gsi };
        routes.push((gsi, KVM_IRQCHIP_IOAPIC, pin));
    }
    routes
}

/// [`pc_gsi_routes`] as the `KVM_SET_GSI_ROUTING` table.
pub fn pc_gsi_routing() -> std::result::Result<kvm_bindings::KvmIrqRouting, String> {
    use kvm_bindings::{
        kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
        KVM_IRQ_ROUTING_IRQCHIP,
    };
    let entries: Vec<kvm_irq_routing_entry> = pc_gsi_routes()
        .into_iter()
        .map(|(gsi, irqchip, pin)| kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_IRQCHIP,
            u: kvm_irq_routing_entry__bindgen_ty_1 {
                irqchip: kvm_irq_routing_irqchip { irqchip, pin },
            },
            ..Default::default()
        })
        .collect();
    kvm_bindings::KvmIrqRouting::from_entries(&entries).map_err(|e| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::{KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};

    #[test]
    fn pc_routes_put_the_pit_on_ioapic_pin_2_and_the_cascade_nowhere() {
        let r = pc_gsi_routes();
        let of = |gsi: u32| -> Vec<(u32, u32)> {
            r.iter()
                .filter(|e| e.0 == gsi)
                .map(|e| (e.1, e.2))
                .collect()
        };
        assert_eq!(
            of(0),
            [(KVM_IRQCHIP_PIC_MASTER, 0), (KVM_IRQCHIP_IOAPIC, 2)]
        );
        assert!(of(2).is_empty());
        assert_eq!(
            of(4),
            [(KVM_IRQCHIP_PIC_MASTER, 4), (KVM_IRQCHIP_IOAPIC, 4)]
        );
        assert_eq!(of(9), [(KVM_IRQCHIP_PIC_SLAVE, 1), (KVM_IRQCHIP_IOAPIC, 9)]);
        assert_eq!(of(23), [(KVM_IRQCHIP_IOAPIC, 23)]);
        assert_eq!(r.len(), 15 + 23);
        assert_eq!(pc_gsi_routing().unwrap().as_slice().len(), r.len());
    }
}
