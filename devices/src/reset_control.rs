//! The PIIX3 reset control register at port 0xCF9.
//!
//! Models (PIIX3 data sheet §4.1.3, "RC—Reset Control Register"): bit 1 selects a hard or
//! soft reset, and a write with bit 2 (RCPU) set starts it. Both kinds reset the whole machine
//! here through [`SystemRequests::request_reset`]. RCPU is self-clearing, so reads return the
//! last value written with bit 2 clear (as QEMU's PIIX does). SeaBIOS reboots by writing 2
//! then 6 (fw/shadow.c `tryReboot`).
//!
//! Left out: the difference between soft reset (INIT only) and hard reset.
//!
//! # Sharing 0xCF8–0xCFF with PCI configuration
//!
//! 0xCF9 lies inside the range of PCI configuration mechanism #1, which the machine registers
//! as one device ([`crate::pci::PciConfigPorts`] at 0xCF8, length 8: CONFIG_ADDRESS takes only
//! dword accesses at 0xCF8, CONFIG_DATA is 0xCFC–0xCFF). The bus cannot give 0xCF9 a range of
//! its own, so the agreement between the two modules is:
//! - the machine creates one `Arc<Mutex<ResetControl>>` and hands it to
//!   `PciConfigPorts::new(bus, Some(reset_control))`;
//! - `PciConfigPorts` forwards single-byte reads and writes at offset 1 (port 0xCF9) to
//!   [`ResetControl::read_byte`] / [`ResetControl::write_byte`]; every other access at
//!   0xCF8–0xCFB keeps QEMU's semantics (only dword accesses reach CONFIG_ADDRESS).
//!
//! Lock ordering: `PciConfigPorts` (locked by the bus) locks `ResetControl`; `ResetControl`
//! calls only the lock-free [`SystemRequests`]. [`ResetControl`] is also a [`BusDevice`] for a
//! machine without PCI, which may register it alone at 0xCF9.

use pcvm_core::{BusAccess, BusDevice, SystemRequests};

/// The reset control port.
pub const RESET_CONTROL_PORT: u16 = 0xCF9;
/// Bit 1: hard reset (1) or soft reset (0).
pub const RC_SYSTEM_RESET: u8 = 0b0000_0010;
/// Bit 2: start the reset selected by bit 1 (self-clearing).
pub const RC_RESET_CPU: u8 = 0b0000_0100;

/// The reset control register.
#[derive(Debug)]
pub struct ResetControl {
    value: u8,
    requests: SystemRequests,
}

impl ResetControl {
    /// A register that raises reset requests on `requests`.
    pub fn new(requests: SystemRequests) -> Self {
        ResetControl { value: 0, requests }
    }

    /// A byte read of 0xCF9.
    pub fn read_byte(&mut self) -> u8 {
        self.value
    }

    /// A byte write of 0xCF9.
    pub fn write_byte(&mut self, value: u8) {
        if value & RC_RESET_CPU != 0 {
            let kind = if value & RC_SYSTEM_RESET != 0 {
                "hard"
            } else {
                "soft"
            };
            tracing::debug!(value, kind, "reset control: reset requested");
            self.requests.request_reset();
        }
        self.value = value & !RC_RESET_CPU;
    }
}

impl BusDevice for ResetControl {
    fn name(&self) -> &str {
        "reset-control"
    }

    fn read(&mut self, _access: BusAccess, data: &mut [u8]) {
        data.fill(0xFF);
        if let [b] = data {
            *b = self.read_byte();
        }
    }

    fn write(&mut self, _access: BusAccess, data: &[u8]) {
        if let [b] = data {
            self.write_byte(*b);
        }
    }

    fn reset(&mut self) {
        self.value = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcvm_core::SystemRequest;

    #[test]
    fn seabios_reboot_sequence() {
        let req = SystemRequests::new();
        let mut rc = ResetControl::new(req.clone());
        rc.write_byte(0x02);
        assert_eq!(req.take(), None);
        assert_eq!(rc.read_byte(), 0x02);
        rc.write_byte(0x06);
        assert_eq!(req.take(), Some(SystemRequest::Reset));
        assert_eq!(rc.read_byte(), 0x02, "RCPU self-clears");
        let a = BusAccess {
            offset: 0,
            addr: 0xCF9,
        };
        rc.write(a, &[0x04, 0x04]);
        assert_eq!(req.take(), None, "only byte accesses");
        rc.write(a, &[0x04]);
        assert_eq!(req.take(), Some(SystemRequest::Reset));
        let mut b = [0u8; 2];
        rc.read(a, &mut b);
        assert_eq!(b, [0xFF, 0xFF]);
    }
}
