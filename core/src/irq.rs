//! Interrupt lines and the INTR pin a CPU samples.

use std::sync::atomic::{AtomicU32, Ordering};
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
///
/// The pin is a wired-OR of up to 16 inputs ([`IntrPin::input`]); each input can be gated off
/// ([`IntrPin::set_input_enabled`]). The local APIC uses this to put the 8259's INT (input 1)
/// behind LINT0 while driving input 0 itself. A plain [`IntrPin::new`] pin is input 0.
#[derive(Clone, Debug)]
pub struct IntrPin {
    /// Bits 0–15: input levels; bits 16–31: input `n` gated off.
    wires: Arc<AtomicU32>,
    /// This handle's input (0–15).
    input: u32,
}

impl Default for IntrPin {
    fn default() -> Self {
        IntrPin {
            wires: Arc::new(AtomicU32::new(0)),
            input: 0,
        }
    }
}

impl IntrPin {
    /// A new deasserted pin.
    pub fn new() -> Self {
        Self::default()
    }
    /// Drive INTR (this handle's input).
    pub fn set(&self, asserted: bool) {
        let bit = 1u32 << self.input;
        if asserted {
            self.wires.fetch_or(bit, Ordering::AcqRel);
        } else {
            self.wires.fetch_and(!bit, Ordering::AcqRel);
        }
    }
    /// INTR is asserted: some enabled input is high.
    #[inline]
    pub fn asserted(&self) -> bool {
        let w = self.wires.load(Ordering::Acquire);
        (w & 0xFFFF) & !(w >> 16) != 0
    }
    /// Another input (`index` 0–15, taken modulo 16) of the same pin.
    pub fn input(&self, index: u32) -> IntrPin {
        IntrPin {
            wires: self.wires.clone(),
            input: index & 15,
        }
    }
    /// This handle's input is high (whether or not it is gated).
    pub fn input_level(&self) -> bool {
        self.wires.load(Ordering::Acquire) & (1 << self.input) != 0
    }
    /// Let this handle's input reach the pin (`true`, the default) or gate it off.
    pub fn set_input_enabled(&self, enabled: bool) {
        let bit = 1u32 << (self.input + 16);
        if enabled {
            self.wires.fetch_and(!bit, Ordering::AcqRel);
        } else {
            self.wires.fetch_or(bit, Ordering::AcqRel);
        }
    }
}

/// The interrupt controller as the CPU sees it (the PIC, later the local APIC in front of it).
pub trait InterruptController: Send {
    /// INTA cycle: the vector of the highest-priority pending interrupt, now in service, or
    /// `None` if the request went away (the CPU then takes nothing).
    fn acknowledge(&mut self) -> Option<u8>;

    /// RDMSR of a CPU-local MSR the controller implements (a local APIC: IA32_APIC_BASE,
    /// the x2APIC range, IA32_TSC_DEADLINE); `None` if it has no such MSR or the access
    /// faults in its current mode. See [`crate::Platform::read_local_msr`].
    fn read_msr(&mut self, _msr: u32) -> Option<u64> {
        None
    }

    /// WRMSR of a CPU-local MSR with the CPU's time-stamp counter `tsc` at the write:
    /// `Some(true)` done, `Some(false)` #GP, `None` not an MSR of this controller.
    fn write_msr(&mut self, _msr: u32, _value: u64, _tsc: u64) -> Option<bool> {
        None
    }

    /// MOV from CR8: the local APIC's task-priority class, TPR[7:4] (Intel SDM Vol. 3A
    /// "Interaction of Task Priorities between CR8 and APIC"); `None` without a local APIC.
    fn task_priority_class(&mut self) -> Option<u8> {
        None
    }

    /// MOV to CR8: TPR = `class` << 4, with the APIC's priority re-evaluated; `false`
    /// without a local APIC (the CPU then keeps CR8 itself).
    fn set_task_priority_class(&mut self, _class: u8) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intr_pin_is_a_gated_wired_or() {
        let pin = IntrPin::new();
        let pic = pin.input(1);
        pic.set(true);
        assert!(pin.asserted());
        pic.set_input_enabled(false);
        assert!(!pin.asserted() && pic.input_level());
        pin.set(true);
        assert!(pin.asserted());
        pin.set(false);
        pic.set_input_enabled(true);
        assert!(pin.asserted());
        pic.set(false);
        assert!(!pin.asserted());
    }
}
