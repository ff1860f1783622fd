//! ISA interrupt routing with an I/O APIC: each ISA IRQ line drives both its 8259 input and
//! an I/O APIC pin, as on the PIIX/ICH (the I/O APIC sees IRQ0 on pin 2 — the "ISA IRQ0 →
//! GSI2" override the MADT announces — and every other ISA IRQ on the pin of the same number).
//!
//! Lock order: device → 8259, then device → I/O APIC; neither calls back.

use std::sync::{Arc, Mutex};

use pcvm_core::IrqLine;

use crate::i8259::Pic8259Pair;
use crate::ioapic::IoApic;

/// The global system interrupt (I/O APIC pin) of ISA IRQ `irq`.
pub fn isa_irq_to_gsi(irq: u8) -> u8 {
    if irq == 0 {
        2
    } else {
        irq
    }
}

/// One ISA IRQ line fanned out to the 8259 pair and the I/O APIC.
pub struct IsaIrqLine {
    pic: Arc<Mutex<Pic8259Pair>>,
    ioapic: Arc<Mutex<IoApic>>,
    irq: u8,
}

impl IsaIrqLine {
    /// ISA line `irq` (0–15), ready to hand to a device.
    pub fn shared(
        pic: &Arc<Mutex<Pic8259Pair>>,
        ioapic: &Arc<Mutex<IoApic>>,
        irq: u8,
    ) -> Arc<dyn IrqLine> {
        Arc::new(IsaIrqLine {
            pic: pic.clone(),
            ioapic: ioapic.clone(),
            irq,
        })
    }
}

impl IrqLine for IsaIrqLine {
    fn set_level(&self, high: bool) {
        if let Ok(mut pic) = self.pic.lock() {
            pic.set_irq(self.irq, high);
        }
        if let Ok(mut io) = self.ioapic.lock() {
            io.set_irq(usize::from(isa_irq_to_gsi(self.irq)), high);
        }
    }
}

/// An I/O APIC input with no 8259 behind it (GSI 16–23: PCI or HPET routes).
pub struct IoApicPinLine {
    ioapic: Arc<Mutex<IoApic>>,
    pin: usize,
}

impl IoApicPinLine {
    /// Pin `pin` of `ioapic`, ready to hand to a device.
    pub fn shared(ioapic: &Arc<Mutex<IoApic>>, pin: usize) -> Arc<dyn IrqLine> {
        Arc::new(IoApicPinLine {
            ioapic: ioapic.clone(),
            pin,
        })
    }
}

impl IrqLine for IoApicPinLine {
    fn set_level(&self, high: bool) {
        if let Ok(mut io) = self.ioapic.lock() {
            io.set_irq(self.pin, high);
        }
    }
}
