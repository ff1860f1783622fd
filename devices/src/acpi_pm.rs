//! The PIIX4 power-management function (Intel 82371AB datasheet §3.4 and §7), PCI 00:01.3
//! 8086:7113: the ACPI fixed hardware the FADT describes.
//!
//! Models: configuration registers PMBA (0x40, a 64-byte I/O block enabled by PMREGMISC 0x80
//! bit 0), DEVACTB byte 0x5B preset to 0x02 as QEMU does without SMM (SeaBIOS otherwise waits
//! forever for an SMI handler), SMBBA (0x90) and SMBHSTCFG (0xD2) as plain registers; the PM I/O
//! block: PM1 status/enable (timer overflow, power button, global, RTC), PM1 control (SCI_EN,
//! sleep type/enable: type [`SLP_TYP_S5`] powers off via [`SystemRequests`]), the 24-bit PM
//! timer at 3.579545 MHz from the [`VirtualClock`] at base + 8, and the GPE0 status/enable
//! pair at base + 0x0C; SCI on ISA IRQ 9 (level).
//!
//! The I/O block moves with PMBA; [`AcpiPmPorts`] windows, registered on the port bus at the
//! bases firmware uses (0x600 with a table-loader, 0xB000 otherwise), forward accesses while
//! PMBA points at them.
//!
//! Left out: the SMBus controller (its I/O reads all-ones), SMI generation, S1–S4 (a sleep
//! request of another type only sets WAK_STS), device monitors and throttling.

use std::sync::{Arc, Mutex};

use pcvm_core::{
    BusAccess, BusDevice, IrqLine, SystemRequests, TimerDevice, TimerHandle, VirtualClock,
};

use crate::pci::{PciConfigSpace, PciDevice, PCI_INTERRUPT_PIN};

/// PM base address register (PMBA).
pub const PMBA: usize = 0x40;
/// DEVACTB byte 3: bit 1 set means "SMI not enabled" to SeaBIOS (no SMM init).
pub const DEVACTB_3: usize = 0x5B;
/// PM register misc: bit 0 enables the PM I/O block.
pub const PMREGMISC: usize = 0x80;
/// SMBus base address register.
pub const SMBBA: usize = 0x90;
/// SMBus host configuration.
pub const SMBHSTCFG: usize = 0xD2;
/// Size of the PM I/O block.
pub const PM_IO_SIZE: u64 = 0x40;
/// PM I/O base SeaBIOS programs when a table-loader is present.
pub const PM_BASE_LOADER: u16 = 0x600;
/// PM I/O base SeaBIOS programs otherwise.
pub const PM_BASE_DEFAULT: u16 = 0xB000;
/// The SCI's ISA IRQ.
pub const SCI_IRQ: u8 = 9;
/// PM timer frequency (ACPI 6.4 §4.8.3.3).
pub const PM_TIMER_HZ: u64 = 3_579_545;

/// PM1 status register offset.
pub const PM1_STS: u64 = 0x00;
/// PM1 enable register offset.
pub const PM1_EN: u64 = 0x02;
/// PM1 control register offset.
pub const PM1_CNT: u64 = 0x04;
/// PM timer register offset.
pub const PM_TMR: u64 = 0x08;
/// GPE0 status register offset (enable follows at + 2).
pub const GPE0_STS: u64 = 0x0C;
/// GPE0 enable register offset.
pub const GPE0_EN: u64 = 0x0E;

/// PM1 status/enable: PM timer bit 23 toggled.
pub const PM1_TMR: u16 = 1 << 0;
/// PM1 status/enable: global lock release.
pub const PM1_GBL: u16 = 1 << 5;
/// PM1 status/enable: power button.
pub const PM1_PWRBTN: u16 = 1 << 8;
/// PM1 status/enable: RTC alarm.
pub const PM1_RTC: u16 = 1 << 10;
/// PM1 status: woke from sleep.
pub const PM1_WAK: u16 = 1 << 15;
/// PM1 control: SCI enable (ACPI mode).
pub const CNT_SCI_EN: u16 = 1 << 0;
/// PM1 control: sleep enable (write-only).
pub const CNT_SLP_EN: u16 = 1 << 13;
/// PM1 control: the sleep type field shift (bits 12:10).
pub const CNT_SLP_TYP_SHIFT: u16 = 10;
/// The SLP_TYP value of S5 (soft off); the DSDT's `\_S5` package must say the same.
pub const SLP_TYP_S5: u16 = 0;

/// The PIIX4 PM function and its I/O block.
pub struct Piix4Pm {
    config: PciConfigSpace,
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    gpe_sts: u16,
    gpe_en: u16,
    /// PM timer ticks when TMR_STS was last brought up to date.
    tmr_seen: u64,
    sci_level: bool,
    clock: VirtualClock,
    timer: TimerHandle,
    sci: Arc<dyn IrqLine>,
    requests: SystemRequests,
}

impl Piix4Pm {
    /// PCI device ID of the 82371AB PM function.
    pub const DEVICE_ID: u16 = 0x7113;
    /// Where the machine plugs it: 00:01.3.
    pub const SLOT: (u8, u8) = (1, 3);

    /// The function in its power-on state; `sci` is ISA IRQ 9.
    pub fn new(
        clock: VirtualClock,
        timer: TimerHandle,
        sci: Arc<dyn IrqLine>,
        requests: SystemRequests,
    ) -> Self {
        let mut config = PciConfigSpace::new(0x8086, Self::DEVICE_ID, 0x06_80_00, 0x03);
        config.set_subsystem(0x1AF4, 0x1100);
        config.set_u8(PCI_INTERRUPT_PIN, 1);
        config.set_u32(PMBA, 1);
        config.set_writable(PMBA, &[0xC0, 0xFF, 0, 0]);
        config.set_u8(DEVACTB_3, 0x02);
        config.set_writable(PMREGMISC, &[0x01]);
        config.set_u32(SMBBA, 1);
        config.set_writable(SMBBA, &[0xF0, 0xFF, 0, 0]);
        config.set_writable(SMBHSTCFG, &[0x0F]);
        Piix4Pm {
            config,
            pm1_sts: 0,
            pm1_en: 0,
            // Our FADT has no SMI command port, so the platform is always in ACPI mode.
            pm1_cnt: CNT_SCI_EN,
            gpe_sts: 0,
            gpe_en: 0,
            tmr_seen: 0,
            sci_level: false,
            clock,
            timer,
            sci,
            requests,
        }
    }

    /// The PM I/O base, if the block is enabled.
    pub fn pm_base(&self) -> Option<u16> {
        (self.config.u8_at(PMREGMISC) & 1 != 0).then(|| self.config.u16_at(PMBA) & 0xFFC0)
    }

    /// Program PMBA and enable the block, as firmware would (for direct boot).
    pub fn set_pm_base(&mut self, base: u16) {
        self.config.set_guest_u8(PMBA, (base as u8 & 0xC0) | 1);
        self.config.set_guest_u8(PMBA + 1, (base >> 8) as u8);
        self.config.set_guest_u8(PMREGMISC, 1);
    }

    /// PM timer ticks since power-on (ACPI 6.4 §4.8.3.3), not yet truncated to 24 bits.
    fn ticks(&self) -> u64 {
        (u128::from(self.clock.now_ns()) * u128::from(PM_TIMER_HZ) / 1_000_000_000) as u64
    }

    /// The PM timer register (24 bits).
    pub fn pm_timer(&self) -> u32 {
        (self.ticks() & 0xFF_FFFF) as u32
    }

    /// Latch TMR_STS if bit 23 toggled since last seen; arm the timer for the next toggle when
    /// its interrupt is enabled.
    fn update_timer(&mut self) {
        let ticks = self.ticks();
        if ticks >> 23 != self.tmr_seen >> 23 {
            self.pm1_sts |= PM1_TMR;
        }
        self.tmr_seen = ticks;
        if self.pm1_en & PM1_TMR != 0 {
            let next = ((ticks >> 23) + 1) << 23;
            let ns = (u128::from(next) * 1_000_000_000).div_ceil(u128::from(PM_TIMER_HZ));
            self.timer.set(ns as u64);
        } else {
            self.timer.clear();
        }
    }

    /// Drive the SCI from status and enables (ACPI 6.4 §4.8.3.1).
    fn update_sci(&mut self) {
        let pm1 = self.pm1_sts & self.pm1_en & (PM1_TMR | PM1_GBL | PM1_PWRBTN | PM1_RTC);
        let level = self.pm1_cnt & CNT_SCI_EN != 0 && (pm1 != 0 || self.gpe_sts & self.gpe_en != 0);
        if level != self.sci_level {
            self.sci_level = level;
            self.sci.set_level(level);
        }
    }

    /// The power button was pressed: set PWRBTN_STS (an SCI if enabled).
    pub fn press_power_button(&mut self) {
        self.pm1_sts |= PM1_PWRBTN;
        self.update_sci();
    }

    /// Raise general-purpose event `bit` (0–15) in GPE0_STS.
    pub fn raise_gpe(&mut self, bit: u8) {
        self.gpe_sts |= 1 << (bit & 15);
        self.update_sci();
    }

    fn read_reg16(&mut self, offset: u64) -> u16 {
        match offset {
            PM1_STS => {
                self.update_timer();
                self.pm1_sts
            }
            PM1_EN => self.pm1_en,
            PM1_CNT => self.pm1_cnt,
            GPE0_STS => self.gpe_sts,
            GPE0_EN => self.gpe_en,
            _ => 0,
        }
    }

    fn write_reg16(&mut self, offset: u64, value: u16) {
        match offset {
            PM1_STS => {
                self.update_timer();
                self.pm1_sts &= !value;
            }
            PM1_EN => {
                self.pm1_en = value & (PM1_TMR | PM1_GBL | PM1_PWRBTN | PM1_RTC);
                self.update_timer();
            }
            PM1_CNT => {
                self.pm1_cnt = value & !CNT_SLP_EN & 0x1C07;
                if value & CNT_SLP_EN != 0 {
                    let typ = (value >> CNT_SLP_TYP_SHIFT) & 7;
                    if typ == SLP_TYP_S5 {
                        tracing::info!("acpi: S5 soft-off requested");
                        self.requests.request_power_off(0);
                    } else {
                        tracing::warn!(typ, "acpi: sleep type not supported, waking at once");
                        self.pm1_sts |= PM1_WAK;
                    }
                }
            }
            GPE0_STS => self.gpe_sts &= !value,
            GPE0_EN => self.gpe_en = value,
            _ => {}
        }
        self.update_sci();
    }

    /// A read of the PM I/O block at `offset`.
    pub fn io_read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let off = offset + i as u64;
            *b = if (PM_TMR..PM_TMR + 4).contains(&off) {
                self.pm_timer().to_le_bytes()[(off - PM_TMR) as usize]
            } else {
                let r = self.read_reg16(off & !1);
                r.to_le_bytes()[(off & 1) as usize]
            };
        }
    }

    /// A write to the PM I/O block at `offset` (16-bit registers merge byte writes).
    pub fn io_write(&mut self, offset: u64, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            let off = offset + i as u64;
            let reg = off & !1;
            if off & 1 == 0 && i + 1 < data.len() {
                self.write_reg16(reg, u16::from_le_bytes([data[i], data[i + 1]]));
                i += 2;
            } else {
                // A lone byte: write-1-to-clear and enable registers take it as is; the
                // other byte is written as zero (clears nothing) or kept.
                let keep = match reg {
                    PM1_STS | GPE0_STS => 0,
                    _ => self.read_reg16(reg),
                };
                let mut bytes = keep.to_le_bytes();
                bytes[(off & 1) as usize] = data[i];
                self.write_reg16(reg, u16::from_le_bytes(bytes));
                i += 1;
            }
        }
    }
}

impl TimerDevice for Piix4Pm {
    fn on_timer(&mut self, _now_ns: u64) {
        self.update_timer();
        self.update_sci();
    }
}

impl PciDevice for Piix4Pm {
    fn name(&self) -> &str {
        "piix4-pm"
    }
    fn config(&self) -> &PciConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfigSpace {
        &mut self.config
    }
    fn reset(&mut self) {
        self.config.reset();
        self.pm1_sts = 0;
        self.pm1_en = 0;
        self.pm1_cnt = CNT_SCI_EN;
        self.gpe_sts = 0;
        self.gpe_en = 0;
        self.timer.clear();
        self.update_sci();
    }
}

/// A port-bus window onto the PM I/O block: forwards accesses while PMBA equals `base`.
pub struct AcpiPmPorts {
    pm: Arc<Mutex<Piix4Pm>>,
    base: u16,
}

impl AcpiPmPorts {
    /// A window at `base` (register it there with length [`PM_IO_SIZE`]).
    pub fn new(pm: Arc<Mutex<Piix4Pm>>, base: u16) -> Self {
        AcpiPmPorts { pm, base }
    }
}

impl BusDevice for AcpiPmPorts {
    fn name(&self) -> &str {
        "acpi-pm"
    }
    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        data.fill(0xFF);
        if let Ok(mut pm) = self.pm.lock() {
            if pm.pm_base() == Some(self.base) {
                pm.io_read(access.offset, data);
            }
        }
    }
    fn write(&mut self, access: BusAccess, data: &[u8]) {
        if let Ok(mut pm) = self.pm.lock() {
            if pm.pm_base() == Some(self.base) {
                pm.io_write(access.offset, data);
            }
        }
    }
}
