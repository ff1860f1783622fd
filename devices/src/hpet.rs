//! The High Precision Event Timer (IA-PC HPET Specification 1.0a) at 0xFED00000: a 64-bit main
//! counter at 100 MHz (period 10 ns) from the [`VirtualClock`] and three comparators.
//!
//! Models: general capabilities (vendor 0x8086, 3 timers, 64-bit counter, legacy replacement
//! capable), general configuration (enable, legacy replacement route: timer 0 → IRQ0, timer 1 →
//! IRQ8), the level interrupt status register (write 1 to clear), the main counter (writable
//! while halted), and per timer: edge/level, enable, one-shot/periodic with VAL_SET, 32-bit
//! mode, and I/O APIC routing (pins 20–23 advertised).
//!
//! Left out: FSB (MSI) delivery (capability clear).

use std::sync::Arc;

use pcvm_core::{BusAccess, BusDevice, IrqLine, TimerDevice, TimerHandle, VirtualClock};

/// Default physical base.
pub const HPET_BASE: u64 = 0xFED0_0000;
/// Size of the register block.
pub const HPET_SIZE: u64 = 0x400;
/// Number of comparators.
pub const HPET_TIMERS: usize = 3;
/// Counter period in femtoseconds (10 ns: 100 MHz).
pub const HPET_PERIOD_FS: u64 = 10_000_000;
/// Counter period in nanoseconds.
const PERIOD_NS: u64 = HPET_PERIOD_FS / 1_000_000;

/// General capabilities and ID register.
pub const REG_CAPABILITIES: u64 = 0x000;
/// General configuration register.
pub const REG_CONFIG: u64 = 0x010;
/// General interrupt status register.
pub const REG_INT_STATUS: u64 = 0x020;
/// Main counter value register.
pub const REG_COUNTER: u64 = 0x0F0;
/// Timer 0 configuration and capabilities; timer n at + 0x20 × n.
pub const REG_TIMER0_CONFIG: u64 = 0x100;
/// Timer 0 comparator.
pub const REG_TIMER0_COMPARATOR: u64 = 0x108;

/// Config bit 0: the main counter runs and timers may interrupt.
pub const CFG_ENABLE: u64 = 1 << 0;
/// Config bit 1: legacy replacement route.
pub const CFG_LEGACY: u64 = 1 << 1;
/// Timer config bit 1: level-triggered.
pub const TN_LEVEL: u64 = 1 << 1;
/// Timer config bit 2: interrupt enable.
pub const TN_INT_ENABLE: u64 = 1 << 2;
/// Timer config bit 3: periodic.
pub const TN_PERIODIC: u64 = 1 << 3;
/// Timer capability bit 4: periodic capable.
pub const TN_PERIODIC_CAP: u64 = 1 << 4;
/// Timer capability bit 5: 64-bit comparator.
pub const TN_SIZE_CAP: u64 = 1 << 5;
/// Timer config bit 6: the next comparator write sets the periodic accumulator.
pub const TN_VAL_SET: u64 = 1 << 6;
/// Timer config bit 8: force 32-bit mode.
pub const TN_32BIT: u64 = 1 << 8;
/// I/O APIC pins a timer may be routed to (bits 63:32 of the timer config register).
pub const TN_ROUTE_CAP: u64 = 0x00F0_0000;
/// Writable timer configuration bits.
const TN_WRITABLE: u64 = TN_LEVEL | TN_INT_ENABLE | TN_PERIODIC | TN_VAL_SET | TN_32BIT | 0x3E00;

#[derive(Clone, Copy, Debug, Default)]
struct HpetTimer {
    config: u64,
    comparator: u64,
    period: u64,
    /// Virtual time of the next match (None when it cannot fire).
    due_ns: Option<u64>,
    /// The line this timer currently drives high (level mode).
    asserted_gsi: Option<usize>,
    /// A one-shot comparator already matched (next match only after a counter wrap).
    matched: bool,
}

impl HpetTimer {
    /// Reset state: comparators all-ones (as QEMU), everything else clear.
    const RESET: HpetTimer = HpetTimer {
        config: 0,
        comparator: u64::MAX,
        period: 0,
        due_ns: None,
        asserted_gsi: None,
        matched: false,
    };
}

/// The HPET block.
pub struct Hpet {
    config: u64,
    int_status: u64,
    /// Counter value at `counter_base_ns` (while enabled) or the held value (while halted).
    counter_base: u64,
    counter_base_ns: u64,
    timers: [HpetTimer; HPET_TIMERS],
    clock: VirtualClock,
    handle: TimerHandle,
    /// Interrupt lines by GSI (I/O APIC pin); index 2 must be the ISA IRQ0 line and index 8
    /// the ISA IRQ8 line for legacy replacement routing.
    lines: Vec<Option<Arc<dyn IrqLine>>>,
}

impl Hpet {
    /// A halted HPET; `lines` are its interrupt outputs by GSI.
    pub fn new(
        clock: VirtualClock,
        handle: TimerHandle,
        lines: Vec<Option<Arc<dyn IrqLine>>>,
    ) -> Self {
        Hpet {
            config: 0,
            int_status: 0,
            counter_base: 0,
            counter_base_ns: 0,
            timers: [HpetTimer::RESET; HPET_TIMERS],
            clock,
            handle,
            lines,
        }
    }

    fn capabilities() -> u64 {
        (HPET_PERIOD_FS << 32)
            | (0x8086 << 16)
            | (1 << 15) // legacy replacement capable
            | (1 << 13) // 64-bit counter
            | ((HPET_TIMERS as u64 - 1) << 8)
            | 0x01
    }

    fn enabled(&self) -> bool {
        self.config & CFG_ENABLE != 0
    }

    /// The main counter now.
    pub fn counter(&self) -> u64 {
        if self.enabled() {
            let elapsed = self.clock.now_ns().saturating_sub(self.counter_base_ns);
            self.counter_base.wrapping_add(elapsed / PERIOD_NS)
        } else {
            self.counter_base
        }
    }

    fn timer_config(&self, n: usize) -> u64 {
        let fixed = TN_PERIODIC_CAP | TN_SIZE_CAP | (TN_ROUTE_CAP << 32);
        self.timers[n].config | fixed
    }

    /// The GSI timer `n` interrupts on.
    fn gsi(&self, n: usize) -> usize {
        if self.config & CFG_LEGACY != 0 && n < 2 {
            if n == 0 {
                2
            } else {
                8
            }
        } else {
            ((self.timers[n].config >> 9) & 0x1F) as usize
        }
    }

    fn line(&self, gsi: usize) -> Option<&Arc<dyn IrqLine>> {
        self.lines.get(gsi).and_then(|l| l.as_ref())
    }

    /// Recompute every timer's next match and the timer handle.
    fn schedule(&mut self) {
        let now_ns = self.clock.now_ns();
        let counter = self.counter();
        let enabled = self.enabled();
        for t in &mut self.timers {
            t.due_ns = None;
            // Status without an interrupt is not modelled, so only enabled timers run.
            if !enabled || t.config & TN_INT_ENABLE == 0 {
                continue;
            }
            let mut ticks = if t.config & TN_32BIT != 0 {
                u64::from((t.comparator as u32).wrapping_sub(counter as u32))
            } else {
                t.comparator.wrapping_sub(counter)
            };
            let passed = if t.config & TN_32BIT != 0 {
                (ticks as u32 as i32) < 0
            } else {
                (ticks as i64) < 0
            };
            if t.config & TN_PERIODIC != 0 && t.period != 0 && passed {
                // Periodic interrupts that were missed are delivered now, one by one.
                ticks = 0;
            } else if t.matched && ticks == 0 {
                // Matched already: the next match is a full (32-bit) wrap away.
                ticks = if t.config & TN_32BIT != 0 {
                    1 << 32
                } else {
                    u64::MAX
                };
            }
            // A comparator already passed (in 64-bit mode) would fire after a full wrap.
            if ticks < (1 << 62) {
                t.due_ns = Some(now_ns + ticks * PERIOD_NS);
            }
        }
        let next = self.timers.iter().filter_map(|t| t.due_ns).min();
        match next {
            Some(ns) => self.handle.set(ns),
            None => self.handle.clear(),
        }
    }

    /// Timer `n` matched: interrupt and advance.
    fn fire(&mut self, n: usize) {
        let gsi = self.gsi(n);
        let t = self.timers[n];
        if t.config & TN_INT_ENABLE != 0 {
            if t.config & TN_LEVEL != 0 {
                self.int_status |= 1 << n;
                self.timers[n].asserted_gsi = Some(gsi);
                if let Some(l) = self.line(gsi) {
                    l.set_level(true);
                }
            } else if let Some(l) = self.line(gsi) {
                l.pulse();
            }
        }
        let t = &mut self.timers[n];
        if t.config & TN_PERIODIC != 0 && t.period != 0 {
            t.comparator = t.comparator.wrapping_add(t.period);
            if t.config & TN_32BIT != 0 {
                t.comparator &= 0xFFFF_FFFF;
            }
        } else {
            t.matched = true;
        }
    }

    fn clear_status(&mut self, bits: u64) {
        for n in 0..HPET_TIMERS {
            if bits & (1 << n) != 0 && self.int_status & (1 << n) != 0 {
                self.int_status &= !(1 << n);
                if let Some(gsi) = self.timers[n].asserted_gsi.take() {
                    if let Some(l) = self.line(gsi) {
                        l.set_level(false);
                    }
                }
            }
        }
    }

    fn read64(&self, reg: u64) -> u64 {
        match reg {
            REG_CAPABILITIES => Self::capabilities(),
            REG_CONFIG => self.config,
            REG_INT_STATUS => self.int_status,
            REG_COUNTER => self.counter(),
            0x100..=0x15F => {
                let n = ((reg - 0x100) / 0x20) as usize;
                match (reg - 0x100) % 0x20 {
                    0x00 => self.timer_config(n),
                    0x08 => self.timers[n].comparator,
                    _ => 0,
                }
            }
            _ => 0,
        }
    }

    fn write64(&mut self, reg: u64, value: u64, mask: u64) {
        let merge = |old: u64| (old & !mask) | (value & mask);
        match reg {
            REG_CONFIG => {
                let counter = self.counter();
                let new = merge(self.config) & (CFG_ENABLE | CFG_LEGACY);
                self.config = new;
                self.counter_base = counter;
                self.counter_base_ns = self.clock.now_ns();
            }
            REG_INT_STATUS => self.clear_status(value & mask),
            REG_COUNTER => {
                if self.enabled() {
                    tracing::debug!("hpet: main counter written while running (ignored)");
                } else {
                    self.counter_base = merge(self.counter_base);
                }
            }
            0x100..=0x15F => {
                let n = ((reg - 0x100) / 0x20) as usize;
                match (reg - 0x100) % 0x20 {
                    0x00 => {
                        let t = &mut self.timers[n];
                        t.config = merge(t.config) & TN_WRITABLE;
                        if t.config & TN_32BIT != 0 {
                            t.comparator &= 0xFFFF_FFFF;
                        }
                        t.matched = false;
                    }
                    0x08 => {
                        // As QEMU: the written value always becomes the period; the
                        // comparator changes unless periodic without VAL_SET (so Linux's
                        // "VAL_SET, start, period" sequence works).
                        let t = &mut self.timers[n];
                        let width = if t.config & TN_32BIT != 0 {
                            0xFFFF_FFFF
                        } else {
                            u64::MAX
                        };
                        if t.config & TN_PERIODIC == 0 || t.config & TN_VAL_SET != 0 {
                            t.comparator = merge(t.comparator) & width;
                        }
                        t.period = merge(t.period) & width;
                        t.config &= !TN_VAL_SET;
                        t.matched = false;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        self.schedule();
    }
}

impl TimerDevice for Hpet {
    fn on_timer(&mut self, now_ns: u64) {
        for _ in 0..64 {
            let Some(n) =
                (0..HPET_TIMERS).find(|&n| self.timers[n].due_ns.is_some_and(|d| d <= now_ns))
            else {
                break;
            };
            self.fire(n);
            self.timers[n].due_ns = None;
            self.schedule();
        }
        self.schedule();
    }
}

impl BusDevice for Hpet {
    fn name(&self) -> &str {
        "hpet"
    }

    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        let reg = access.offset & !7;
        let value = self.read64(reg).to_le_bytes();
        let within = (access.offset & 7) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = value.get(within + i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, access: BusAccess, data: &[u8]) {
        let reg = access.offset & !7;
        let within = (access.offset & 7) as usize;
        let mut value = [0u8; 8];
        let mut mask = [0u8; 8];
        for (i, &b) in data.iter().enumerate() {
            if let Some(slot) = value.get_mut(within + i) {
                *slot = b;
                mask[within + i] = 0xFF;
            }
        }
        self.write64(reg, u64::from_le_bytes(value), u64::from_le_bytes(mask));
    }

    fn reset(&mut self) {
        for n in 0..HPET_TIMERS {
            self.clear_status(1 << n);
        }
        self.config = 0;
        self.counter_base = 0;
        self.timers = [HpetTimer::RESET; HPET_TIMERS];
        self.handle.clear();
    }
}
