//! The cascaded pair of Intel 8259A programmable interrupt controllers of the PC/AT, plus the
//! PIIX edge/level control registers (ELCR).
//!
//! Models (8259A data sheet, "Programming the 8259A"; PIIX3 data sheet §2.3.x ELCR): ICW1–ICW4,
//! OCW1 (mask), OCW2 (specific/non-specific EOI, rotation, set priority), OCW3 (read IRR/ISR,
//! poll, special mask mode), auto-EOI with rotation, special fully nested mode, the cascade of
//! the slave's INT into master IR2, and spurious IRQ7/IRQ15 when a request vanishes before INTA.
//! Edge or level sensing per line comes from ELCR at 0x4D0/0x4D1 (the PIIX ignores ICW1 LTIM).
//!
//! Left out: MCS-80/85 call-address mode (only 8086 mode is meaningful on a PC), buffered mode
//! and ICW3 slave IDs other than the PC wiring (slave on master IR2).
//!
//! Lock ordering: a device holding its own lock may call a [`PicIrqLine`], which locks the
//! [`Pic8259Pair`]. The PIC itself never calls out to anything but the lock-free
//! [`IntrPin`], so no cycle is possible. Keep it that way.

use std::sync::{Arc, Mutex};

use pcvm_core::{BusAccess, BusDevice, InterruptController, IntrPin, IrqLine};
use serde::{Deserialize, Serialize};

/// Master PIC command/data ports (0x20, 0x21).
pub const MASTER_PORT: u16 = 0x20;
/// Slave PIC command/data ports (0xA0, 0xA1).
pub const SLAVE_PORT: u16 = 0xA0;
/// ELCR ports: 0x4D0 master, 0x4D1 slave (PIIX3 data sheet).
pub const ELCR_PORT: u16 = 0x4D0;
/// The master input the slave's INT output is wired to.
pub const CASCADE_IRQ: u8 = 2;

/// ICW1: an ICW4 follows.
const ICW1_IC4: u8 = 0b0000_0001;
/// ICW1: single PIC (no ICW3).
const ICW1_SNGL: u8 = 0b0000_0010;
/// ICW1: level-triggered mode for all inputs (ignored on the PIIX: ELCR decides).
const ICW1_LTIM: u8 = 0b0000_1000;
/// A command-port write with this bit set is ICW1.
const ICW1_SELECT: u8 = 0b0001_0000;
/// A command-port write with this bit set (and bit 4 clear) is OCW3, otherwise OCW2.
const OCW3_SELECT: u8 = 0b0000_1000;
/// OCW3: poll command.
const OCW3_POLL: u8 = 0b0000_0100;
/// OCW3: read register command (with RIS selecting ISR or IRR).
const OCW3_RR: u8 = 0b0000_0010;
/// OCW3: read ISR (with RR) instead of IRR.
const OCW3_RIS: u8 = 0b0000_0001;
/// OCW3: act on the special mask mode bit (SMM).
const OCW3_ESMM: u8 = 0b0100_0000;
/// OCW3: special mask mode.
const OCW3_SMM: u8 = 0b0010_0000;
/// ICW4: 8086/8088 mode.
const ICW4_UPM: u8 = 0b0000_0001;
/// ICW4: automatic end of interrupt.
const ICW4_AEOI: u8 = 0b0000_0010;
/// ICW4: special fully nested mode.
const ICW4_SFNM: u8 = 0b0001_0000;

/// ELCR bits that exist: IRQ0, 1 and 2 (master) and IRQ8 and 13 (slave) are always edge.
const ELCR_MASK: [u8; 2] = [0xF8, 0xDE];

/// Where the chip is in its initialization sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitStep {
    /// Initialized: data-port writes are OCW1.
    #[default]
    Ready,
    /// Expecting ICW2 (vector base).
    Icw2,
    /// Expecting ICW3 (cascade wiring).
    Icw3,
    /// Expecting ICW4 (mode).
    Icw4,
}

/// The registers of one 8259A, plainly serializable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pic8259State {
    /// Interrupt request register.
    pub irr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// In-service register.
    pub isr: u8,
    /// Input line levels last seen (edge detection).
    pub line_levels: u8,
    /// Level-triggered lines (ELCR).
    pub elcr: u8,
    /// Vector of IR0 (ICW2 & 0xF8).
    pub vector_base: u8,
    /// IR line with the lowest priority is `priority_base - 1`; rotation moves it.
    pub priority_base: u8,
    /// Initialization sequence position.
    pub init: InitStep,
    /// ICW1 asked for ICW4.
    pub icw4_needed: bool,
    /// ICW1 said single (no cascade, no ICW3).
    pub single: bool,
    /// ICW3 as written.
    pub icw3: u8,
    /// Automatic EOI (ICW4 AEOI).
    pub auto_eoi: bool,
    /// Rotate priority on automatic EOI (OCW2 R=1, SL=0, EOI=0).
    pub rotate_on_auto_eoi: bool,
    /// Special fully nested mode (ICW4 SFNM).
    pub special_fully_nested: bool,
    /// Special mask mode (OCW3).
    pub special_mask: bool,
    /// The next command-port read is a poll (OCW3 P).
    pub poll: bool,
    /// Command-port reads return ISR instead of IRR.
    pub read_isr: bool,
}

/// One 8259A; the pair wires two of these together.
#[derive(Clone, Debug, Default)]
struct Pic8259 {
    s: Pic8259State,
    is_master: bool,
}

impl Pic8259 {
    fn new(is_master: bool) -> Self {
        Pic8259 {
            s: Pic8259State::default(),
            is_master,
        }
    }

    /// Full power-on reset, ELCR included.
    fn reset(&mut self) {
        self.s = Pic8259State::default();
    }

    /// Drive input `irq` (0–7) to `high`.
    fn set_irq(&mut self, irq: u8, high: bool) {
        let mask = 1u8 << (irq & 7);
        if self.s.elcr & mask != 0 {
            // Level sensitive: IRR follows the line.
            if high {
                self.s.irr |= mask;
                self.s.line_levels |= mask;
            } else {
                self.s.irr &= !mask;
                self.s.line_levels &= !mask;
            }
        } else if high {
            if self.s.line_levels & mask == 0 {
                self.s.irr |= mask;
            }
            self.s.line_levels |= mask;
        } else {
            self.s.line_levels &= !mask;
        }
    }

    /// The highest-priority set bit of `mask` as a priority number (0 = highest), 8 if none.
    fn priority_of(&self, mask: u8) -> u8 {
        if mask == 0 {
            return 8;
        }
        (0..8u8)
            .find(|p| mask & (1 << ((p + self.s.priority_base) & 7)) != 0)
            .unwrap_or(8)
    }

    /// The IR line to raise INT for, if any request beats everything in service.
    fn pending_irq(&self) -> Option<u8> {
        let requested = self.priority_of(self.s.irr & !self.s.imr);
        if requested == 8 {
            return None;
        }
        let mut in_service = self.s.isr;
        if self.s.special_mask {
            in_service &= !self.s.imr;
        }
        if self.s.special_fully_nested && self.is_master {
            // A higher-priority slave request may interrupt the slave's own service.
            in_service &= !(1 << CASCADE_IRQ);
        }
        (requested < self.priority_of(in_service)).then_some((requested + self.s.priority_base) & 7)
    }

    /// INTA for line `irq`: set ISR (unless auto-EOI), clear an edge request.
    fn intack(&mut self, irq: u8) {
        let mask = 1u8 << (irq & 7);
        if self.s.auto_eoi {
            if self.s.rotate_on_auto_eoi {
                self.s.priority_base = (irq + 1) & 7;
            }
        } else {
            self.s.isr |= mask;
        }
        if self.s.elcr & mask == 0 {
            self.s.irr &= !mask;
        }
    }

    /// Non-specific EOI: clear the highest-priority in-service bit; returns it.
    fn eoi_highest(&mut self) -> Option<u8> {
        let p = self.priority_of(self.s.isr);
        if p == 8 {
            return None;
        }
        let irq = (p + self.s.priority_base) & 7;
        self.s.isr &= !(1 << irq);
        Some(irq)
    }

    fn write_command(&mut self, value: u8) {
        if value & ICW1_SELECT != 0 {
            // ICW1: clear IMR, ISR, special mask, rotation; reset the edge detectors, keeping
            // only requests of level-triggered lines that are still high (data sheet, ICW1).
            if value & ICW1_LTIM != 0 {
                tracing::debug!("8259: ICW1 LTIM ignored, ELCR selects level triggering");
            }
            let elcr = self.s.elcr;
            let held = self.s.line_levels & elcr;
            self.s = Pic8259State {
                elcr,
                irr: held,
                line_levels: held,
                init: InitStep::Icw2,
                icw4_needed: value & ICW1_IC4 != 0,
                single: value & ICW1_SNGL != 0,
                ..Pic8259State::default()
            };
        } else if value & OCW3_SELECT != 0 {
            if value & OCW3_POLL != 0 {
                self.s.poll = true;
            }
            if value & OCW3_RR != 0 {
                self.s.read_isr = value & OCW3_RIS != 0;
            }
            if value & OCW3_ESMM != 0 {
                self.s.special_mask = value & OCW3_SMM != 0;
            }
        } else {
            // OCW2: R SL EOI in bits 7..5, level in 2..0.
            let level = value & 7;
            match value >> 5 {
                0b000 => self.s.rotate_on_auto_eoi = false,
                0b100 => self.s.rotate_on_auto_eoi = true,
                0b001 => {
                    self.eoi_highest();
                }
                0b101 => {
                    if let Some(irq) = self.eoi_highest() {
                        self.s.priority_base = (irq + 1) & 7;
                    }
                }
                0b011 => self.s.isr &= !(1 << level),
                0b111 => {
                    self.s.isr &= !(1 << level);
                    self.s.priority_base = (level + 1) & 7;
                }
                0b110 => self.s.priority_base = (level + 1) & 7,
                _ => {} // 0b010: no operation
            }
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.s.init {
            InitStep::Ready => self.s.imr = value,
            InitStep::Icw2 => {
                self.s.vector_base = value & 0xF8;
                self.s.init = if !self.s.single {
                    InitStep::Icw3
                } else if self.s.icw4_needed {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw3 => {
                self.s.icw3 = value;
                self.s.init = if self.s.icw4_needed {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw4 => {
                if value & ICW4_UPM == 0 {
                    tracing::debug!("8259: MCS-80/85 mode requested, running in 8086 mode");
                }
                self.s.auto_eoi = value & ICW4_AEOI != 0;
                self.s.special_fully_nested = value & ICW4_SFNM != 0;
                self.s.init = InitStep::Ready;
            }
        }
    }

    fn read_command(&self) -> u8 {
        if self.s.read_isr {
            self.s.isr
        } else {
            self.s.irr
        }
    }
}

/// The master/slave 8259A pair of the PC/AT, with the PIIX ELCR, driving the CPU's INTR pin.
pub struct Pic8259Pair {
    master: Pic8259,
    slave: Pic8259,
    intr: IntrPin,
}

/// The pair's registers, for snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pic8259PairState {
    /// The master (IRQ0–7).
    pub master: Pic8259State,
    /// The slave (IRQ8–15).
    pub slave: Pic8259State,
}

impl Pic8259Pair {
    /// A pair in the power-on state driving `intr`.
    pub fn new(intr: IntrPin) -> Self {
        let mut pic = Pic8259Pair {
            master: Pic8259::new(true),
            slave: Pic8259::new(false),
            intr,
        };
        pic.update();
        pic
    }

    /// Drive ISA interrupt line `irq` (0–15); out-of-range lines are ignored. Master IR2
    /// carries the cascade, so the ISA bus's IRQ2 pin arrives as IRQ9, as on the PC/AT.
    pub fn set_irq(&mut self, irq: u8, high: bool) {
        match irq {
            CASCADE_IRQ => self.slave.set_irq(1, high),
            0..=7 => self.master.set_irq(irq, high),
            8..=15 => self.slave.set_irq(irq - 8, high),
            _ => {
                tracing::warn!(irq, "8259: interrupt line out of range");
                return;
            }
        }
        self.update();
    }

    /// The INT output is asserted (what the INTR pin shows).
    pub fn int_asserted(&self) -> bool {
        self.master.pending_irq().is_some()
    }

    /// Propagate the slave's INT into master IR2 and the master's INT to the CPU.
    fn update(&mut self) {
        // The slave's INT is a level on master IR2; the master's request follows it, so a
        // slave request withdrawn before INTA is not left latched (it would be spurious).
        let cascade = 1u8 << CASCADE_IRQ;
        if self.slave.pending_irq().is_some() {
            self.master.s.irr |= cascade;
            self.master.s.line_levels |= cascade;
        } else {
            self.master.s.irr &= !cascade;
            self.master.s.line_levels &= !cascade;
        }
        self.intr.set(self.master.pending_irq().is_some());
    }

    /// The registers, for snapshots.
    pub fn state(&self) -> Pic8259PairState {
        Pic8259PairState {
            master: self.master.s.clone(),
            slave: self.slave.s.clone(),
        }
    }

    /// Restore registers from a snapshot.
    pub fn set_state(&mut self, state: &Pic8259PairState) {
        self.master.s = state.master.clone();
        self.slave.s = state.slave.clone();
        self.update();
    }

    /// A poll command read (OCW3 P=1): acknowledge like INTA and report the level.
    fn poll_read(&mut self, slave: bool) -> u8 {
        let chip = if slave {
            &mut self.slave
        } else {
            &mut self.master
        };
        chip.s.poll = false;
        let value = match chip.pending_irq() {
            Some(irq) => {
                chip.intack(irq);
                0x80 | irq
            }
            None => 0,
        };
        self.update();
        value
    }

    fn read_port(&mut self, port: u64) -> u8 {
        match port {
            0x20 | 0x21 | 0xA0 | 0xA1 => {
                let slave = port >= 0xA0;
                let chip = if slave { &self.slave } else { &self.master };
                if chip.s.poll {
                    self.poll_read(slave)
                } else if port & 1 == 0 {
                    chip.read_command()
                } else {
                    chip.s.imr
                }
            }
            0x4D0 => self.master.s.elcr,
            0x4D1 => self.slave.s.elcr,
            _ => 0xFF,
        }
    }

    fn write_port(&mut self, port: u64, value: u8) {
        match port {
            0x20 => self.master.write_command(value),
            0x21 => self.master.write_data(value),
            0xA0 => self.slave.write_command(value),
            0xA1 => self.slave.write_data(value),
            0x4D0 => self.master.s.elcr = value & ELCR_MASK[0],
            0x4D1 => self.slave.s.elcr = value & ELCR_MASK[1],
            _ => {}
        }
        self.update();
    }
}

impl InterruptController for Pic8259Pair {
    /// INTA. A request that vanished between INTR and INTA yields the spurious IR7 vector of
    /// the chip that lost it (IRQ7, or IRQ15 with master IR2 in service), as the 8259A does.
    fn acknowledge(&mut self) -> Option<u8> {
        let vector = match self.master.pending_irq() {
            Some(CASCADE_IRQ) => {
                self.master.intack(CASCADE_IRQ);
                match self.slave.pending_irq() {
                    Some(irq) => {
                        self.slave.intack(irq);
                        self.slave.s.vector_base.wrapping_add(irq)
                    }
                    None => self.slave.s.vector_base.wrapping_add(7),
                }
            }
            Some(irq) => {
                self.master.intack(irq);
                self.master.s.vector_base.wrapping_add(irq)
            }
            None => self.master.s.vector_base.wrapping_add(7),
        };
        self.update();
        Some(vector)
    }
}

impl BusDevice for Pic8259Pair {
    fn name(&self) -> &str {
        "i8259"
    }

    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_port(access.addr.wrapping_add(i as u64));
        }
    }

    fn write(&mut self, access: BusAccess, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            self.write_port(access.addr.wrapping_add(i as u64), b);
        }
    }

    fn reset(&mut self) {
        self.master.reset();
        self.slave.reset();
        self.update();
    }
}

/// One ISA interrupt line into the PIC pair, handed to devices as `Arc<dyn IrqLine>`.
pub struct PicIrqLine {
    /// The controller.
    pub pic: Arc<Mutex<Pic8259Pair>>,
    /// ISA IRQ number (0–15).
    pub irq: u8,
}

impl PicIrqLine {
    /// Line `irq` of `pic`, ready to hand to a device.
    pub fn shared(pic: &Arc<Mutex<Pic8259Pair>>, irq: u8) -> Arc<dyn IrqLine> {
        Arc::new(PicIrqLine {
            pic: pic.clone(),
            irq,
        })
    }
}

impl IrqLine for PicIrqLine {
    fn set_level(&self, high: bool) {
        if let Ok(mut pic) = self.pic.lock() {
            pic.set_irq(self.irq, high);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(addr: u64) -> BusAccess {
        BusAccess { offset: 0, addr }
    }
    fn out(pic: &mut Pic8259Pair, port: u64, v: u8) {
        pic.write(acc(port), &[v]);
    }
    fn inb(pic: &mut Pic8259Pair, port: u64) -> u8 {
        let mut b = [0];
        pic.read(acc(port), &mut b);
        b[0]
    }

    /// The ICW sequence SeaBIOS (and the BIOS-era Linux) uses: vectors 0x08 / 0x70.
    fn init_pc(pic: &mut Pic8259Pair, master_base: u8, slave_base: u8) {
        out(pic, 0x20, 0x11);
        out(pic, 0x21, master_base);
        out(pic, 0x21, 0x04);
        out(pic, 0x21, 0x01);
        out(pic, 0xA0, 0x11);
        out(pic, 0xA1, slave_base);
        out(pic, 0xA1, 0x02);
        out(pic, 0xA1, 0x01);
        out(pic, 0x21, 0x00);
        out(pic, 0xA1, 0x00);
    }

    fn new_pic() -> (Pic8259Pair, IntrPin) {
        let pin = IntrPin::new();
        (Pic8259Pair::new(pin.clone()), pin)
    }

    #[test]
    fn seabios_init_and_timer_interrupt() {
        let (mut pic, pin) = new_pic();
        init_pc(&mut pic, 0x08, 0x70);
        assert!(!pin.asserted());
        pic.set_irq(0, true);
        pic.set_irq(0, false);
        assert!(pin.asserted());
        assert_eq!(pic.acknowledge(), Some(0x08));
        assert!(!pin.asserted());
        // ISR reads back via OCW3.
        out(&mut pic, 0x20, 0x0B);
        assert_eq!(inb(&mut pic, 0x20), 0x01);
        out(&mut pic, 0x20, 0x20); // non-specific EOI
        assert_eq!(inb(&mut pic, 0x20), 0x00);
        out(&mut pic, 0x20, 0x0A);
        assert_eq!(inb(&mut pic, 0x20), 0x00, "IRR clear after INTA");
    }

    #[test]
    fn slave_cascade_and_priorities() {
        let (mut pic, pin) = new_pic();
        init_pc(&mut pic, 0x20, 0x28); // Linux-style remap
        pic.set_irq(14, true);
        pic.set_irq(14, false);
        pic.set_irq(3, true);
        pic.set_irq(3, false);
        assert!(pin.asserted());
        // IR2 (cascade) beats IR3.
        assert_eq!(pic.acknowledge(), Some(0x2E));
        // IRQ3 waits behind the in-service cascade.
        assert!(!pin.asserted());
        out(&mut pic, 0xA0, 0x20);
        out(&mut pic, 0x20, 0x20);
        assert!(pin.asserted());
        assert_eq!(pic.acknowledge(), Some(0x23));
    }

    #[test]
    fn mask_and_spurious_irq7_and_irq15() {
        let (mut pic, pin) = new_pic();
        init_pc(&mut pic, 0x08, 0x70);
        out(&mut pic, 0x21, 0x02); // mask IRQ1
        assert_eq!(inb(&mut pic, 0x21), 0x02);
        pic.set_irq(1, true);
        assert!(!pin.asserted());
        // A request that vanishes before INTA: level line dropped.
        out(&mut pic, 0x4D1, 0x08); // IRQ11 level
        pic.set_irq(11, true);
        assert!(pin.asserted());
        pic.set_irq(11, false);
        assert_eq!(pic.acknowledge(), Some(0x0F), "spurious IRQ7");
        out(&mut pic, 0x20, 0x0B);
        assert_eq!(inb(&mut pic, 0x20), 0, "spurious IRQ7 sets no ISR bit");
        // Slave request vanishing after the master committed to IR2 → IRQ15 vector.
        pic.set_irq(11, true);
        pic.slave.s.irr = 0; // the slave's request disappears between INT and INTA
        assert_eq!(pic.acknowledge(), Some(0x77));
        out(&mut pic, 0xA0, 0x0B);
        assert_eq!(
            inb(&mut pic, 0xA0),
            0,
            "spurious IRQ15 sets no slave ISR bit"
        );
        out(&mut pic, 0x20, 0x0B);
        assert_eq!(inb(&mut pic, 0x20), 0x04, "master IR2 is in service");
    }

    #[test]
    fn level_triggered_via_elcr_stays_pending() {
        let (mut pic, pin) = new_pic();
        init_pc(&mut pic, 0x08, 0x70);
        out(&mut pic, 0x4D0, 0xFF);
        out(&mut pic, 0x4D1, 0xFF);
        assert_eq!(inb(&mut pic, 0x4D0), 0xF8);
        assert_eq!(inb(&mut pic, 0x4D1), 0xDE);
        out(&mut pic, 0x4D0, 0x00);
        out(&mut pic, 0x4D1, 0x0C); // SeaBIOS: IRQ10, 11 level
        pic.set_irq(10, true);
        assert_eq!(pic.acknowledge(), Some(0x72));
        out(&mut pic, 0xA0, 0x20);
        out(&mut pic, 0x20, 0x20);
        assert!(pin.asserted(), "level line still high → request again");
        pic.set_irq(10, false);
        assert!(!pin.asserted());
    }

    #[test]
    fn auto_eoi_and_rotation() {
        let (mut pic, _pin) = new_pic();
        out(&mut pic, 0x20, 0x13); // single, ICW4
        out(&mut pic, 0x21, 0x40);
        out(&mut pic, 0x21, 0x03); // AEOI
        out(&mut pic, 0x20, 0x80); // rotate on AEOI
        for irq in [0, 1] {
            pic.set_irq(irq, true);
            pic.set_irq(irq, false);
        }
        assert_eq!(pic.acknowledge(), Some(0x40));
        out(&mut pic, 0x20, 0x0B);
        assert_eq!(inb(&mut pic, 0x20), 0, "AEOI leaves ISR clear");
        // IRQ0 now lowest priority: IRQ1 before a fresh IRQ0.
        pic.set_irq(0, true);
        pic.set_irq(0, false);
        assert_eq!(pic.acknowledge(), Some(0x41));
        assert_eq!(pic.acknowledge(), Some(0x40));
    }

    #[test]
    fn specific_eoi_set_priority_and_poll() {
        let (mut pic, _pin) = new_pic();
        init_pc(&mut pic, 0x08, 0x70);
        out(&mut pic, 0x20, 0xC4); // set priority: IR4 lowest → IR5 highest
        for irq in [3, 6] {
            pic.set_irq(irq, true);
            pic.set_irq(irq, false);
        }
        assert_eq!(pic.acknowledge(), Some(0x0E));
        out(&mut pic, 0x20, 0x66); // specific EOI IR6
                                   // Poll: returns 0x80 | level and acknowledges.
        out(&mut pic, 0x20, 0x0C);
        assert_eq!(inb(&mut pic, 0x20), 0x83);
        out(&mut pic, 0x20, 0x0B);
        assert_eq!(inb(&mut pic, 0x20), 0x08);
        out(&mut pic, 0x20, 0x0C);
        assert_eq!(inb(&mut pic, 0x21), 0x00, "poll with nothing pending");
    }

    #[test]
    fn special_mask_mode_allows_lower_priority() {
        let (mut pic, pin) = new_pic();
        init_pc(&mut pic, 0x08, 0x70);
        pic.set_irq(1, true);
        pic.set_irq(1, false);
        assert_eq!(pic.acknowledge(), Some(0x09));
        pic.set_irq(4, true);
        pic.set_irq(4, false);
        assert!(!pin.asserted(), "IRQ1 in service blocks IRQ4");
        out(&mut pic, 0x21, 0x02); // mask IR1
        out(&mut pic, 0x20, 0x68); // special mask mode on
        assert!(pin.asserted());
        assert_eq!(pic.acknowledge(), Some(0x0C));
    }

    #[test]
    fn irq_line_and_state_roundtrip() {
        let pin = IntrPin::new();
        let pic = Arc::new(Mutex::new(Pic8259Pair::new(pin.clone())));
        {
            let mut p = pic.lock().unwrap();
            init_pc(&mut p, 0x08, 0x70);
        }
        let line = PicIrqLine::shared(&pic, 4);
        line.pulse();
        assert!(pin.asserted());
        let state = pic.lock().unwrap().state();
        let json = serde_json::to_string(&state).unwrap();
        let back: Pic8259PairState = serde_json::from_str(&json).unwrap();
        let (mut other, pin2) = new_pic();
        other.set_state(&back);
        assert!(pin2.asserted());
        assert_eq!(other.acknowledge(), Some(0x0C));
        // Out-of-range line numbers are ignored.
        PicIrqLine::shared(&pic, 200).pulse();
        // ISA IRQ2 arrives as IRQ9.
        let mut p = pic.lock().unwrap();
        out(&mut p, 0x20, 0x20);
        p.set_irq(2, true);
        p.set_irq(2, false);
        assert_eq!(p.acknowledge(), Some(0x71));
    }
}
