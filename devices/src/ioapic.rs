//! The I/O APIC of the PIIX/ICH chipsets (Intel 82093AA data sheet; version 0x20 as in the
//! ICH, with the directed-EOI register), at 0xFEC00000.
//!
//! Models: IOREGSEL (0x00), IOWIN (0x10), the EOI register (0x40), ID, version (24 entries),
//! arbitration ID, and 24 redirection entries with vector, delivery mode (fixed, lowest
//! priority, NMI), physical/logical destination, polarity, edge/level trigger with remote IRR,
//! and mask. Delivery goes into the local APIC's lock-free [`LapicInput`]; a level EOI from
//! the local APIC (its broadcast) or the EOI register clears remote IRR and re-delivers a
//! line still asserted.
//!
//! Left out: ExtINT, SMI and INIT delivery modes (logged once), the delivery-status bit (always
//! idle: delivery is instantaneous).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pcvm_core::{BusAccess, BusDevice};

use crate::lapic::LapicInput;

/// Default physical base.
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// Size of the register window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Number of redirection entries (inputs).
pub const IOAPIC_PINS: usize = 24;
/// Version register: max redirection entry 23 in bits 23:16, version 0x20.
pub const IOAPIC_VERSION: u32 = ((IOAPIC_PINS as u32 - 1) << 16) | 0x20;
/// Offset of IOREGSEL.
pub const IOREGSEL: u64 = 0x00;
/// Offset of IOWIN.
pub const IOWIN: u64 = 0x10;
/// Offset of the EOI register (version 0x20).
pub const IOEOI: u64 = 0x40;

/// Redirection entry bit 16: masked.
pub const RTE_MASKED: u64 = 1 << 16;
/// Bit 15: level-triggered.
pub const RTE_LEVEL: u64 = 1 << 15;
/// Bit 14: remote IRR (read-only).
pub const RTE_REMOTE_IRR: u64 = 1 << 14;
/// Bit 13: active low.
pub const RTE_ACTIVE_LOW: u64 = 1 << 13;
/// Bit 11: logical destination mode.
pub const RTE_LOGICAL: u64 = 1 << 11;
/// Bits the guest may write: vector, delivery mode, dest mode, polarity, trigger, mask, dest.
const RTE_WRITABLE: u64 = 0xFF00_0000_0001_AFFF;

/// The I/O APIC.
pub struct IoApic {
    id: u32,
    select: u8,
    redirection: [u64; IOAPIC_PINS],
    /// Raw line levels as driven (before polarity).
    lines: u32,
    lapic: Arc<LapicInput>,
    nmi: Option<Arc<AtomicBool>>,
    warned_mode: bool,
}

impl IoApic {
    /// An I/O APIC (ID 0, every entry masked) delivering to `lapic`.
    pub fn new(lapic: Arc<LapicInput>) -> Self {
        IoApic {
            id: 0,
            select: 0,
            redirection: [RTE_MASKED; IOAPIC_PINS],
            lines: 0,
            lapic,
            nmi: None,
            warned_mode: false,
        }
    }

    /// Where NMI-mode entries deliver: the board's NMI latch.
    pub fn set_nmi(&mut self, nmi: Arc<AtomicBool>) {
        self.nmi = Some(nmi);
    }

    /// The redirection entry of `pin` (for tests and snapshots).
    pub fn redirection(&self, pin: usize) -> Option<u64> {
        self.redirection.get(pin).copied()
    }

    fn asserted(&self, pin: usize) -> bool {
        let raw = self.lines & (1 << pin) != 0;
        raw != (self.redirection[pin] & RTE_ACTIVE_LOW != 0)
    }

    /// Drive input `pin` (0–23; others ignored) to the electrical level `high`.
    pub fn set_irq(&mut self, pin: usize, high: bool) {
        if pin >= IOAPIC_PINS {
            return;
        }
        let was = self.asserted(pin);
        if high {
            self.lines |= 1 << pin;
        } else {
            self.lines &= !(1 << pin);
        }
        let now = self.asserted(pin);
        let rte = self.redirection[pin];
        if rte & RTE_LEVEL != 0 {
            if now {
                self.service(pin);
            }
        } else if now && !was {
            self.service(pin);
        }
    }

    /// Deliver `pin`'s interrupt if unmasked (and, for level, not awaiting EOI).
    fn service(&mut self, pin: usize) {
        let rte = self.redirection[pin];
        if rte & RTE_MASKED != 0 {
            return;
        }
        let level = rte & RTE_LEVEL != 0;
        if level && rte & RTE_REMOTE_IRR != 0 {
            return;
        }
        let dest = (rte >> 56) as u8;
        if !self.lapic.matches_destination(dest, rte & RTE_LOGICAL != 0) {
            return;
        }
        match (rte >> 8) & 7 {
            0b000 | 0b001 => {
                if level {
                    self.redirection[pin] |= RTE_REMOTE_IRR;
                }
                self.lapic.accept_interrupt(rte as u8, level);
            }
            0b100 => {
                if let Some(nmi) = &self.nmi {
                    nmi.store(true, Ordering::Release);
                }
            }
            mode => {
                if !self.warned_mode {
                    self.warned_mode = true;
                    tracing::warn!(pin, mode, "ioapic: delivery mode not modelled");
                }
            }
        }
    }

    /// EOI for `vector` (the local APIC's broadcast or the EOI register): clear remote IRR of
    /// the level entries with that vector and re-deliver those still asserted.
    pub fn end_of_interrupt(&mut self, vector: u8) {
        for pin in 0..IOAPIC_PINS {
            let rte = self.redirection[pin];
            if rte as u8 == vector && rte & RTE_REMOTE_IRR != 0 {
                self.redirection[pin] &= !RTE_REMOTE_IRR;
                if rte & RTE_LEVEL != 0 && self.asserted(pin) {
                    self.service(pin);
                }
            }
        }
    }

    fn read_register(&self) -> u32 {
        match self.select {
            0x00 => self.id << 24,
            0x01 => IOAPIC_VERSION,
            0x02 => self.id << 24,
            r @ 0x10..=0x3F => {
                let pin = usize::from((r - 0x10) / 2);
                let rte = self.redirection[pin];
                if r & 1 == 0 {
                    rte as u32
                } else {
                    (rte >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_register(&mut self, value: u32) {
        match self.select {
            0x00 => self.id = (value >> 24) & 0xF,
            r @ 0x10..=0x3F => {
                let pin = usize::from((r - 0x10) / 2);
                let old = self.redirection[pin];
                let new = if r & 1 == 0 {
                    (old & !0xFFFF_FFFF) | u64::from(value)
                } else {
                    (old & 0xFFFF_FFFF) | (u64::from(value) << 32)
                };
                let mut rte = (new & RTE_WRITABLE) | (old & RTE_REMOTE_IRR);
                if rte & RTE_LEVEL == 0 {
                    rte &= !RTE_REMOTE_IRR;
                }
                self.redirection[pin] = rte;
                // Unmasking a level input that is asserted delivers it now.
                if rte & RTE_LEVEL != 0 && self.asserted(pin) {
                    self.service(pin);
                }
            }
            _ => {}
        }
    }
}

impl BusDevice for IoApic {
    fn name(&self) -> &str {
        "ioapic"
    }

    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        let value = match access.offset & !3 {
            IOREGSEL => u32::from(self.select),
            IOWIN => self.read_register(),
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let within = (access.offset & 3) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(within + i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, access: BusAccess, data: &[u8]) {
        let mut bytes = [0u8; 4];
        for (i, &b) in data.iter().take(4).enumerate() {
            bytes[i] = b;
        }
        let value = u32::from_le_bytes(bytes);
        match access.offset {
            IOREGSEL => self.select = value as u8,
            IOWIN if data.len() == 4 => self.write_register(value),
            IOEOI => self.end_of_interrupt(value as u8),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.id = 0;
        self.select = 0;
        self.redirection = [RTE_MASKED; IOAPIC_PINS];
    }
}
