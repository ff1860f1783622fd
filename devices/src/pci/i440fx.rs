//! The Intel 440FX PCI and memory controller (PMC) as host bridge 00:00.0.
//!
//! Models what firmware touches (Intel 82441FX PMC datasheet §3.2): the identity registers
//! with QEMU's subsystem 1AF4:1100 (SeaBIOS only sets PF_QEMU when it sees it), the seven PAM
//! registers 0x59–0x5F that route 0xC0000–0xFFFFF between RAM and the PCI side (applied through
//! [`GuestMemory::set_pam`]), and SMRAM control 0x72, stored with its D_LCK lock semantics. SMRAM
//! itself always stays closed: 0xA0000–0xBFFFF remains the VGA window.

use std::sync::Arc;

use pcvm_core::GuestMemory;

use super::{PciConfigSpace, PciConfigState, PciDevice};

/// First PAM register (PAM0: high nibble = 0xF0000–0xFFFFF; low nibble reserved).
pub const PAM0: usize = 0x59;
/// Number of PAM registers (PAM0–PAM6).
pub const PAM_COUNT: usize = 7;
/// SMRAM control register.
pub const SMRAM: usize = 0x72;
/// SMRAM: D_OPEN, SMRAM visible outside SMM.
pub const SMRAM_D_OPEN: u8 = 0b0100_0000;
/// SMRAM: D_CLS, data accesses go to the PCI side.
pub const SMRAM_D_CLS: u8 = 0b0010_0000;
/// SMRAM: D_LCK, D_OPEN and D_LCK become read-only until reset.
pub const SMRAM_D_LCK: u8 = 0b0001_0000;
/// SMRAM: G_SMRAME, SMRAM enabled.
pub const SMRAM_G_SMRAME: u8 = 0b0000_1000;
/// SMRAM: C_BASE_SEG, hard-wired to 010 (0xA0000).
pub const SMRAM_C_BASE_SEG: u8 = 0b0000_0010;

/// The i440FX host bridge function.
pub struct I440fx {
    config: PciConfigSpace,
    memory: Arc<GuestMemory>,
}

impl I440fx {
    /// PCI vendor ID (Intel).
    pub const VENDOR_ID: u16 = 0x8086;
    /// PCI device ID of the 82441FX.
    pub const DEVICE_ID: u16 = 0x1237;
    /// Where the machine plugs it: 00:00.0.
    pub const SLOT: (u8, u8) = (0, 0);

    /// The host bridge driving the PAM routing of `memory`.
    pub fn new(memory: Arc<GuestMemory>) -> Self {
        let mut config = PciConfigSpace::new(Self::VENDOR_ID, Self::DEVICE_ID, 0x06_00_00, 0x02);
        config.set_subsystem(0x1AF4, 0x1100);
        config.set_writable(PAM0, &[0x30]);
        config.set_writable(PAM0 + 1, &[0x33; PAM_COUNT - 1]);
        config.set_u8(SMRAM, SMRAM_C_BASE_SEG);
        let bridge = I440fx { config, memory };
        bridge.apply_pam();
        bridge
    }

    /// The PAM attribute (see [`pcvm_core::memory::pam`]) of each of the 13 areas, in the order
    /// of [`GuestMemory::set_pam`]: area 0 = 0xF0000, then 16 KiB areas from 0xC0000.
    pub fn pam_attributes(&self) -> [u8; 13] {
        let mut a = [0u8; 13];
        a[0] = (self.config.u8_at(PAM0) >> 4) & 3;
        for k in 0..PAM_COUNT - 1 {
            let r = self.config.u8_at(PAM0 + 1 + k);
            a[1 + 2 * k] = r & 3;
            a[2 + 2 * k] = (r >> 4) & 3;
        }
        a
    }

    /// The SMRAM control register.
    pub fn smram(&self) -> u8 {
        self.config.u8_at(SMRAM)
    }

    fn apply_pam(&self) {
        for (area, attr) in self.pam_attributes().into_iter().enumerate() {
            self.memory.set_pam(area, attr);
        }
    }

    /// SMRAM write rules (82441FX §3.2.22): C_BASE_SEG is fixed; once D_LCK is set, D_OPEN
    /// reads 0 and both bits stay until reset.
    fn write_smram(&mut self, value: u8) {
        let old = self.smram();
        let mut new = (value & (SMRAM_D_OPEN | SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME))
            | SMRAM_C_BASE_SEG;
        if old & SMRAM_D_LCK != 0 {
            new = (new & !SMRAM_D_OPEN & !SMRAM_G_SMRAME) | SMRAM_D_LCK | (old & SMRAM_G_SMRAME);
        }
        if new & SMRAM_D_OPEN != 0 && new & SMRAM_D_CLS != 0 {
            tracing::debug!("i440fx: SMRAM D_OPEN with D_CLS; SMRAM stays closed");
        }
        self.config.set_guest_u8(SMRAM, new);
    }
}

impl PciDevice for I440fx {
    fn name(&self) -> &str {
        "i440fx"
    }
    fn config(&self) -> &PciConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfigSpace {
        &mut self.config
    }
    fn write_config(&mut self, offset: usize, data: &[u8]) {
        let end = offset + data.len();
        for (i, &b) in data.iter().enumerate() {
            if offset + i == SMRAM {
                self.write_smram(b);
            } else {
                self.config.write(offset + i, &[b]);
            }
        }
        if offset < PAM0 + PAM_COUNT && end > PAM0 {
            self.apply_pam();
        }
    }
    fn reset(&mut self) {
        self.config.reset();
        self.apply_pam();
    }
    fn set_config_state(&mut self, state: &PciConfigState) {
        self.config.set_state(state);
        self.apply_pam();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use pcvm_core::{BusDevice, PhysRegion};

    use super::super::tests::Cfg;
    use super::super::PciBus;
    use super::*;

    fn setup() -> (Cfg, Arc<GuestMemory>) {
        let mut mem = GuestMemory::pc(16 << 20).unwrap();
        mem.map_bios(vec![0xEA; 128 << 10]).unwrap();
        let mem = Arc::new(mem);
        let mut bus = PciBus::new();
        bus.add(0, 0, Arc::new(Mutex::new(I440fx::new(mem.clone()))))
            .unwrap();
        (Cfg::new(bus), mem)
    }

    #[test]
    fn identity_as_seabios_detects_qemu() {
        let (mut cfg, _) = setup();
        assert_eq!(cfg.read(0, 0, 0, 4), 0x1237_8086);
        assert_eq!(cfg.read(0, 0, 0x2C, 4), 0x1100_1AF4);
        assert_eq!(cfg.read(0, 0, 0x0A, 2), 0x0600);
        assert_eq!(cfg.read(0, 0, 0x0E, 1), 0, "single function");
        assert_eq!(cfg.read(0, 1, 0, 4), 0xFFFF_FFFF);
    }

    #[test]
    fn pam_writes_route_memory() {
        let (mut cfg, mem) = setup();
        assert!(matches!(
            mem.classify(0xF0000, false),
            PhysRegion::Rom { .. }
        ));
        // SeaBIOS's unlock: dwords at 0x58/0x5C so that 0x59 = 0x30 and 0x5A..0x5F = 0x33.
        let v58 = cfg.read(0, 0, 0x58, 4);
        cfg.write(0, 0, 0x58, 4, (v58 & 0xFF) | 0x3333_3000);
        cfg.write(0, 0, 0x5C, 4, 0x3333_3333);
        assert_eq!(cfg.read(0, 0, 0x59, 1), 0x30);
        assert_eq!(cfg.read(0, 0, 0x5A, 2), 0x3333);
        assert_eq!(mem.classify(0xF0000, false), PhysRegion::Ram(0xF0000));
        assert_eq!(mem.classify(0xC4000, true), PhysRegion::Ram(0xC4000));
        assert_eq!(mem.classify(0xEC000, true), PhysRegion::Ram(0xEC000));
        // Before boot: 0x59 = 0x10 (read-only F segment).
        cfg.write(0, 0, 0x59, 1, 0x10);
        assert_eq!(mem.classify(0xF0000, true), PhysRegion::Dropped);
        assert_eq!(mem.classify(0xF0000, false), PhysRegion::Ram(0xF0000));
        // 0x5A low nibble = 0xC0000 area, high nibble = 0xC4000.
        cfg.write(0, 0, 0x5A, 1, 0x01);
        assert_eq!(mem.classify(0xC0000, true), PhysRegion::Dropped);
        assert_eq!(mem.classify(0xC4000, false), PhysRegion::Mmio);
        // Reserved low nibble of PAM0 stays 0.
        cfg.write(0, 0, 0x59, 1, 0xFF);
        assert_eq!(cfg.read(0, 0, 0x59, 1), 0x30);
    }

    #[test]
    fn smram_lock_is_sticky() {
        let (mut cfg, _) = setup();
        assert_eq!(cfg.read(0, 0, 0x72, 1), 0x02);
        cfg.write(0, 0, 0x72, 1, 0x4A);
        assert_eq!(cfg.read(0, 0, 0x72, 1), 0x4A);
        cfg.write(0, 0, 0x72, 1, 0x1A);
        assert_eq!(cfg.read(0, 0, 0x72, 1), 0x1A);
        cfg.write(0, 0, 0x72, 1, 0x40);
        assert_eq!(cfg.read(0, 0, 0x72, 1), 0x1A, "D_LCK holds D_OPEN at 0");
    }

    #[test]
    fn restoring_a_snapshot_reapplies_pam() {
        let (mut cfg, mem) = setup();
        cfg.write(0, 0, 0x59, 1, 0x30);
        let state = cfg.0.state();
        cfg.0.reset();
        assert!(matches!(
            mem.classify(0xF0000, false),
            PhysRegion::Rom { .. }
        ));
        cfg.0.set_state(&state);
        assert_eq!(mem.classify(0xF0000, false), PhysRegion::Ram(0xF0000));
    }

    #[test]
    fn reset_closes_shadow() {
        let (mut cfg, mem) = setup();
        cfg.write(0, 0, 0x59, 1, 0x30);
        assert_eq!(mem.classify(0xF0000, false), PhysRegion::Ram(0xF0000));
        cfg.0.reset();
        assert!(matches!(
            mem.classify(0xF0000, false),
            PhysRegion::Rom { .. }
        ));
    }
}
