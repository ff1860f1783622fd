//! Interrupt lines and the INTR pin a CPU samples.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// An interrupt request line from a device to an interrupt controller.
pub trait IrqLine: Send + Sync {
    /// Drive the line high or low (level-triggered devices hold it; edge devices pulse it).
    fn set_level(&self, high: bool);
    /// A rising then falling edge.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// An interrupt line connected to nothing (for devices tested alone).
#[derive(Debug, Default)]
pub struct NoIrq;

impl IrqLine for NoIrq {
    fn set_level(&self, _high: bool) {}
}

/// The CPU's INTR input, readable without locking the interrupt controller, so a backend can
/// sample it at every block boundary. The controller sets it whenever its output changes.
#[derive(Clone, Debug, Default)]
pub struct IntrPin(Arc<AtomicBool>);

impl IntrPin {
    /// A new deasserted pin.
    pub fn new() -> Self {
        Self::default()
    }
    /// Drive INTR.
    pub fn set(&self, asserted: bool) {
        self.0.store(asserted, Ordering::Release);
    }
    /// INTR is asserted.
    #[inline]
    pub fn asserted(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The interrupt controller as the CPU sees it (the PIC, later the local APIC in front of it).
pub trait InterruptController: Send {
    /// INTA cycle: the vector of the highest-priority pending interrupt, now in service, or
    /// `None` if the request went away (the CPU then takes nothing).
    fn acknowledge(&mut self) -> Option<u8>;
}
