//! The PIIX3 south bridge's PCI functions (Intel 82371SB datasheet): the PCI-to-ISA bridge
//! 00:01.0 with the PIRQ route registers, and the IDE function 00:01.1 in legacy mode.
//!
//! The ISA chips behind the bridge (PIC, PIT, RTC, ...) and the IDE channels themselves are
//! separate modules; these are their PCI configuration faces. The PIIX4 power-management
//! function (8086:7113) is not modelled: without it SeaBIOS skips SMM and ACPI PM setup.

use std::sync::{Arc, Mutex};

use super::{BarKind, PciConfigSpace, PciDevice, PCI_HEADER_MULTIFUNCTION, PCI_HEADER_TYPE};
use crate::ide::IdeController;

/// First PIRQ route control register (PIRQRCA, 82371SB §2.2.9); PIRQRCB–D follow.
pub const PIRQRC: usize = 0x60;
/// PIRQ route control bit 7: routing disabled.
pub const PIRQ_DISABLE: u8 = 0x80;
/// IDE timing registers (primary 0x40–0x41, secondary 0x42–0x43; bit 15 = IDE decode enable).
pub const IDETIM: usize = 0x40;
/// Index of the bus-master IDE BAR.
pub const BMIBA_BAR: usize = 4;

/// PIIX3 PCI-to-ISA bridge, 8086:7000, multifunction (so firmware scans 00:01.1).
pub struct Piix3IsaBridge {
    config: PciConfigSpace,
}

impl Default for Piix3IsaBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl Piix3IsaBridge {
    /// PCI device ID of the 82371SB ISA bridge.
    pub const DEVICE_ID: u16 = 0x7000;
    /// Where the machine plugs it: 00:01.0.
    pub const SLOT: (u8, u8) = (1, 0);

    /// The bridge with all PIRQs unrouted, as after reset.
    pub fn new() -> Self {
        let mut config = PciConfigSpace::new(0x8086, Self::DEVICE_ID, 0x06_01_00, 0x00);
        config.set_subsystem(0x1AF4, 0x1100);
        config.set_u8(PCI_HEADER_TYPE, PCI_HEADER_MULTIFUNCTION);
        for i in 0..4 {
            config.set_u8(PIRQRC + i, PIRQ_DISABLE);
        }
        config.set_writable(PIRQRC, &[0x8F; 4]);
        Piix3IsaBridge { config }
    }

    /// The ISA IRQ PCI interrupt `pirq` (0 = PIRQA … 3 = PIRQD) is routed to, if routing is
    /// enabled and names an IRQ the PIIX3 can drive (3–7, 9–12, 14, 15).
    pub fn pirq_route(&self, pirq: usize) -> Option<u8> {
        if pirq > 3 {
            return None;
        }
        let r = self.config.u8_at(PIRQRC + pirq);
        let irq = r & 0x0F;
        (r & PIRQ_DISABLE == 0 && matches!(irq, 3..=7 | 9..=12 | 14 | 15)).then_some(irq)
    }

    /// The ISA IRQ of device `slot`'s interrupt pin `pin` (1 = INTA#), with the usual i440FX
    /// swizzle PIRQ = (pin − 1 + slot) mod 4 that QEMU and SeaBIOS assume.
    pub fn intx_route(&self, slot: u8, pin: u8) -> Option<u8> {
        if !(1..=4).contains(&pin) {
            return None;
        }
        self.pirq_route((usize::from(pin) - 1 + usize::from(slot)) & 3)
    }
}

impl PciDevice for Piix3IsaBridge {
    fn name(&self) -> &str {
        "piix3-isa"
    }
    fn config(&self) -> &PciConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfigSpace {
        &mut self.config
    }
}

/// PIIX3 IDE function, 8086:7010, class 01:01 prog-if 0x80: both channels at the legacy ports
/// and IRQ14/15 (prog-if bits 0 and 2 clear, not switchable), bus-master capable (bit 7).
///
/// BAR4 is the 16-byte bus-master register block. Built with [`Piix3Ide::with_controller`],
/// accesses to it reach the controller's bus-master registers
/// ([`IdeController::bmdma_read`]); without one it sizes and stores but reads all-ones.
pub struct Piix3Ide {
    config: PciConfigSpace,
    controller: Option<Arc<Mutex<IdeController>>>,
}

impl Default for Piix3Ide {
    fn default() -> Self {
        Self::new()
    }
}

impl Piix3Ide {
    /// PCI device ID of the 82371SB IDE function.
    pub const DEVICE_ID: u16 = 0x7010;
    /// Where the machine plugs it: 00:01.1.
    pub const SLOT: (u8, u8) = (1, 1);

    /// The IDE function after reset (decoding disabled until firmware sets IDETIM bit 15).
    pub fn new() -> Self {
        let mut config = PciConfigSpace::new(0x8086, Self::DEVICE_ID, 0x01_01_80, 0x00);
        config.set_subsystem(0x1AF4, 0x1100);
        config.add_bar(BMIBA_BAR, BarKind::Io, 16);
        config.set_writable(IDETIM, &[0xFF, 0xF3, 0xFF, 0xF3]);
        Piix3Ide {
            config,
            controller: None,
        }
    }

    /// The IDE function with BAR4 reaching `controller`'s bus-master DMA registers.
    pub fn with_controller(controller: Arc<Mutex<IdeController>>) -> Self {
        Piix3Ide {
            controller: Some(controller),
            ..Self::new()
        }
    }

    /// IDE decode enable for `channel` (0 primary, 1 secondary): IDETIM bit 15.
    pub fn decode_enabled(&self, channel: usize) -> bool {
        channel < 2 && self.config.u16_at(IDETIM + 2 * channel) & 0x8000 != 0
    }
}

impl PciDevice for Piix3Ide {
    fn name(&self) -> &str {
        "piix3-ide"
    }
    fn config(&self) -> &PciConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfigSpace {
        &mut self.config
    }
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0xFF);
        if bar == BMIBA_BAR {
            if let Some(Ok(mut ide)) = self.controller.as_ref().map(|c| c.lock()) {
                ide.bmdma_read(offset, data);
            }
        }
    }
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar == BMIBA_BAR {
            if let Some(Ok(mut ide)) = self.controller.as_ref().map(|c| c.lock()) {
                ide.bmdma_write(offset, data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Cfg;
    use super::super::PciBus;
    use super::*;

    fn setup() -> (Cfg, Arc<Mutex<Piix3IsaBridge>>, Arc<Mutex<Piix3Ide>>) {
        let isa = Arc::new(Mutex::new(Piix3IsaBridge::new()));
        let ide = Arc::new(Mutex::new(Piix3Ide::new()));
        let mut bus = PciBus::new();
        bus.add(1, 0, isa.clone()).unwrap();
        bus.add(1, 1, ide.clone()).unwrap();
        (Cfg::new(bus), isa, ide)
    }

    #[test]
    fn multifunction_bridge_and_ide_identity() {
        let (mut cfg, _, _) = setup();
        assert_eq!(cfg.read(1, 0, 0, 4), 0x7000_8086);
        assert_eq!(cfg.read(1, 0, 0x0E, 1), 0x80);
        assert_eq!(cfg.read(1, 1, 0, 4), 0x7010_8086);
        assert_eq!(cfg.read(1, 1, 0x08, 4) >> 8, 0x01_01_80);
        assert_eq!(cfg.read(1, 2, 0, 4), 0xFFFF_FFFF);
    }

    #[test]
    fn pirq_routing_as_seabios_programs_it() {
        let (mut cfg, isa, _) = setup();
        assert_eq!(isa.lock().unwrap().pirq_route(0), None);
        cfg.write(1, 0, 0x60, 4, 0x0B0B_0A0A);
        assert_eq!(cfg.read(1, 0, 0x60, 4), 0x0B0B_0A0A);
        let isa = isa.lock().unwrap();
        assert_eq!(
            (0..4).map(|p| isa.pirq_route(p)).collect::<Vec<_>>(),
            [Some(10), Some(10), Some(11), Some(11)]
        );
        assert_eq!(isa.intx_route(3, 1), Some(11));
        assert_eq!(isa.intx_route(1, 0), None);
        assert_eq!(isa.pirq_route(4), None);
    }

    #[test]
    fn ide_bar4_reaches_the_bus_master_registers() {
        use pcvm_core::irq::NoIrq;
        let ide = Arc::new(Mutex::new(IdeController::new(
            Arc::new(NoIrq),
            Arc::new(NoIrq),
        )));
        let mut bus = PciBus::new();
        bus.add(
            1,
            1,
            Arc::new(Mutex::new(Piix3Ide::with_controller(ide.clone()))),
        )
        .unwrap();
        let mut cfg = Cfg::new(bus);
        cfg.write(1, 1, 0x20, 4, 0xC040);
        cfg.write(1, 1, 0x04, 2, 0x0005);
        let bus = cfg.0.bus().clone();
        let bus = bus.lock().unwrap();
        assert!(bus.io_write(0xC04C, &0x0012_3400u32.to_le_bytes()));
        let mut b = [0u8; 4];
        ide.lock().unwrap().bmdma_read(0x0C, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x0012_3400, "secondary PRD address");
        assert!(bus.io_read(0xC04C, &mut b));
        assert_eq!(u32::from_le_bytes(b), 0x0012_3400);
        assert!(!bus.io_read(0xC050, &mut b));
    }

    #[test]
    fn ide_bar4_sizes_and_timing_registers_store() {
        let (mut cfg, _, ide) = setup();
        cfg.write(1, 1, 0x20, 4, 0xFFFF_FFFF);
        assert_eq!(cfg.read(1, 1, 0x20, 4), 0xFFFF_FFF1);
        cfg.write(1, 1, 0x20, 4, 0xC000);
        assert_eq!(cfg.read(1, 1, 0x20, 4), 0xC001);
        cfg.write(1, 1, 0x40, 4, 0x8000_8000);
        assert_eq!(cfg.read(1, 1, 0x40, 4), 0x8000_8000);
        assert!(ide.lock().unwrap().decode_enabled(1));
        assert!(!ide.lock().unwrap().decode_enabled(2));
    }
}
