//! The Intel 8254 programmable interval timer and the PC's system control port B (0x61).
//!
//! Models (8254 data sheet, "Modes of operation", "Read-back command"; PIIX3 data sheet, NMI
//! status and control register at 0x61): three 16-bit down counters clocked at 1.193182 MHz,
//! modes 0–5, LSB/MSB/LSB-then-MSB access, the counter-latch and read-back commands (count and
//! status), BCD counting, and gate inputs (channels 0 and 1 tied high, channel 2 from port
//! 0x61 bit 0). Counter values and OUT are computed from the virtual clock, never from how
//! often the guest polls. Channel 0's OUT rising edges raise IRQ0 at [`TimerDevice`] deadlines
//! computed from the load time, so periodic modes do not drift.
//!
//! Left out: the speaker tone itself (bit 1 of 0x61 is only stored), the one-clock delay
//! between writing a count and the counter loading it, and loading a new mode 2/3 count only
//! at the end of the current period (a new count restarts the period at once).
//!
//! Lock ordering: [`Port61`] locks the PIT; the PIT calls only its IRQ line (which locks the
//! PIC). Nothing calls back into the PIT while it holds its lock.

use std::sync::{Arc, Mutex};

use pcvm_core::{BusAccess, BusDevice, IrqLine, TimerDevice, TimerHandle, VirtualClock};
use serde::{Deserialize, Serialize};

/// The PIT input clock in Hz (14.31818 MHz / 12).
pub const PIT_FREQ_HZ: u64 = 1_193_182;
/// Channel 0–2 data ports are 0x40–0x42; the mode/command register is 0x43.
pub const PIT_PORT: u16 = 0x40;
/// Number of ports the PIT decodes from [`PIT_PORT`].
pub const PIT_PORT_LEN: u64 = 4;
/// System control port B.
pub const PORT61: u16 = 0x61;
/// The ISA interrupt channel 0 drives.
pub const PIT_IRQ: u8 = 0;

/// Port 0x61 bit 0: channel 2 gate.
pub const PORT61_GATE2: u8 = 0b0000_0001;
/// Port 0x61 bit 1: speaker data enable.
pub const PORT61_SPEAKER: u8 = 0b0000_0010;
/// Port 0x61 bits 2–3: parity/IOCHK check enables (stored only).
const PORT61_CHECK_ENABLES: u8 = 0b0000_1100;
/// Port 0x61 bit 4: refresh request toggle.
pub const PORT61_REFRESH: u8 = 0b0001_0000;
/// Port 0x61 bit 5: channel 2 OUT.
pub const PORT61_OUT2: u8 = 0b0010_0000;
/// Refresh toggle half-period in ns (a DRAM refresh request every ~15 µs).
const REFRESH_PERIOD_NS: u64 = 15_085;

const NS_PER_SEC: u128 = 1_000_000_000;

/// Read-back command status byte bit 7: OUT.
const STATUS_OUT: u8 = 0b1000_0000;
/// Status byte bit 6: null count (a written count is not yet in the counting element).
const STATUS_NULL_COUNT: u8 = 0b0100_0000;

/// Access mode of a channel's data port.
const ACCESS_LSB: u8 = 1;
const ACCESS_MSB: u8 = 2;
const ACCESS_LOHI: u8 = 3;

/// One counter's registers, plainly serializable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitChannelState {
    /// Counter mode 0–5.
    pub mode: u8,
    /// Data port access: 1 LSB, 2 MSB, 3 LSB then MSB.
    pub access: u8,
    /// BCD counting.
    pub bcd: bool,
    /// The initial count in counter clocks (1..=0x10000, or 1..=10000 in BCD).
    pub count: u32,
    /// A complete count has been written since the last control word.
    pub count_written: bool,
    /// Counting is running (for modes 1 and 5: triggered by a gate rising edge).
    pub armed: bool,
    /// Virtual time (ns) at which counting (re)started from `count`.
    pub load_ns: u64,
    /// Gate input level.
    pub gate: bool,
    /// Elapsed counter clocks frozen while the gate holds counting off.
    pub frozen_ticks: Option<u64>,
    /// Latched count (counter-latch or read-back command).
    pub latched_count: Option<u16>,
    /// The high byte of a latched LSB-then-MSB count is next.
    pub latched_hi_next: bool,
    /// Latched status byte (read-back command).
    pub latched_status: Option<u8>,
    /// The high byte of a live LSB-then-MSB read is next.
    pub read_hi_next: bool,
    /// The high byte of an LSB-then-MSB write is next.
    pub write_hi_next: bool,
    /// The low byte of a partly written count.
    pub write_lo: u8,
}

impl PitChannelState {
    /// The power-on state QEMU uses: mode 3, LSB then MSB, count 0x10000 running.
    fn power_on(gate: bool, now_ns: u64) -> Self {
        PitChannelState {
            mode: 3,
            access: ACCESS_LOHI,
            bcd: false,
            count: 0x10000,
            count_written: true,
            armed: true,
            load_ns: now_ns,
            gate,
            frozen_ticks: None,
            latched_count: None,
            latched_hi_next: false,
            latched_status: None,
            read_hi_next: false,
            write_hi_next: false,
            write_lo: 0,
        }
    }

    /// Counting is held off by a low gate (modes 0, 2, 3, 4).
    fn gated_off(&self) -> bool {
        !self.gate && matches!(self.mode, 0 | 2 | 3 | 4)
    }

    /// Counter clocks since counting (re)started.
    fn elapsed_ticks(&self, now_ns: u64) -> u64 {
        if let Some(t) = self.frozen_ticks {
            return t;
        }
        ns_to_ticks(now_ns.saturating_sub(self.load_ns))
    }

    /// OUT at `now_ns` (8254 data sheet, waveforms of modes 0–5).
    fn out(&self, now_ns: u64) -> bool {
        if !self.armed {
            return self.mode != 0;
        }
        let d = self.elapsed_ticks(now_ns);
        let count = u64::from(self.count.max(1));
        match self.mode {
            0 | 1 => d >= count,
            2 => self.gated_off() || d % count != count - 1,
            3 => self.gated_off() || d % count < count.div_ceil(2),
            _ => d != count, // 4, 5: one-clock low strobe when the count reaches zero
        }
    }

    /// The counting element's value at `now_ns`, as the guest reads it (BCD-encoded in BCD mode).
    fn current_count(&self, now_ns: u64) -> u16 {
        let count = u64::from(self.count.max(1));
        let value = if !self.armed {
            count
        } else {
            let d = self.elapsed_ticks(now_ns);
            let modulus = if self.bcd { 10_000 } else { 0x10000 };
            match self.mode {
                2 => count - d % count,
                3 => count - (2 * d) % count,
                _ => (count + modulus - d % modulus) % modulus,
            }
        };
        if self.bcd {
            bin_to_bcd((value % 10_000) as u16)
        } else {
            (value & 0xFFFF) as u16
        }
    }

    /// The counter clock (since `load_ns`) of OUT's next rising edge after `now_ns`.
    fn next_rising_tick(&self, now_ns: u64) -> Option<u64> {
        if !self.armed || self.gated_off() {
            return None;
        }
        let d = self.elapsed_ticks(now_ns);
        let count = u64::from(self.count.max(1));
        match self.mode {
            0 | 1 => (d < count).then_some(count),
            2 | 3 => Some((d / count + 1) * count),
            _ => (d <= count).then_some(count + 1),
        }
    }

    fn status(&self, now_ns: u64) -> u8 {
        let null = !self.count_written
            || (matches!(self.mode, 1 | 5) && !self.armed)
            || (self.armed && self.frozen_ticks.is_none() && self.elapsed_ticks(now_ns) == 0);
        (if self.out(now_ns) { STATUS_OUT } else { 0 })
            | (if null { STATUS_NULL_COUNT } else { 0 })
            | (self.access << 4)
            | (self.mode << 1)
            | u8::from(self.bcd)
    }
}

fn ns_to_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(PIT_FREQ_HZ) / NS_PER_SEC) as u64
}

/// The first virtual ns at which [`ns_to_ticks`] reaches `ticks`.
fn ticks_to_ns(ticks: u64) -> u64 {
    (u128::from(ticks) * NS_PER_SEC).div_ceil(u128::from(PIT_FREQ_HZ)) as u64
}

fn bin_to_bcd(v: u16) -> u16 {
    (v / 1000 % 10) << 12 | (v / 100 % 10) << 8 | (v / 10 % 10) << 4 | (v % 10)
}

fn bcd_to_bin(v: u16) -> u32 {
    // Nibbles above 9 are not valid BCD; the counter still counts, weight them as written.
    u32::from(v >> 12) * 1000
        + u32::from((v >> 8) & 0xF) * 100
        + u32::from((v >> 4) & 0xF) * 10
        + u32::from(v & 0xF)
}

/// The PIT's registers, for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pit8254State {
    /// Counters 0–2.
    pub channels: [PitChannelState; 3],
    /// Port 0x61 bits 1–3 as written (speaker data and check enables).
    pub port61_latch: u8,
}

/// The 8254 PIT with channel 0 on IRQ0 and channel 2 gated by port 0x61.
pub struct Pit8254 {
    ch: [PitChannelState; 3],
    port61_latch: u8,
    clock: VirtualClock,
    irq: Arc<dyn IrqLine>,
    timer: TimerHandle,
}

impl Pit8254 {
    /// A PIT in the power-on state. `timer` is the handle the machine registers with this
    /// device in [`pcvm_core::Timers`]; `irq` is ISA IRQ0.
    pub fn new(clock: VirtualClock, irq: Arc<dyn IrqLine>, timer: TimerHandle) -> Self {
        let now = clock.now_ns();
        let mut pit = Pit8254 {
            ch: [
                PitChannelState::power_on(true, now),
                PitChannelState::power_on(true, now),
                PitChannelState::power_on(false, now),
            ],
            port61_latch: 0,
            clock,
            irq,
            timer,
        };
        pit.reschedule(now);
        pit
    }

    /// The registers, for snapshots.
    pub fn state(&self) -> Pit8254State {
        Pit8254State {
            channels: self.ch.clone(),
            port61_latch: self.port61_latch,
        }
    }

    /// Restore registers from a snapshot (taken against the same virtual clock).
    pub fn set_state(&mut self, state: &Pit8254State) {
        self.ch = state.channels.clone();
        for c in &mut self.ch {
            c.access = c.access.clamp(ACCESS_LSB, ACCESS_LOHI);
            c.mode = c.mode.min(5);
            c.count = c.count.clamp(1, 0x10000);
        }
        self.port61_latch = state.port61_latch;
        self.reschedule(self.clock.now_ns());
    }

    /// OUT of channel `channel` (0–2) now; out-of-range channels read low.
    pub fn out(&self, channel: usize) -> bool {
        let now = self.clock.now_ns();
        self.ch.get(channel).is_some_and(|c| c.out(now))
    }

    /// Set the gate input of `channel` (the PC wires only channel 2's to port 0x61).
    pub fn set_gate(&mut self, channel: usize, level: bool) {
        let now = self.clock.now_ns();
        let Some(c) = self.ch.get_mut(channel) else {
            return;
        };
        if c.gate == level {
            return;
        }
        c.gate = level;
        match (c.mode, level) {
            (0 | 4, false) if c.armed => c.frozen_ticks = Some(c.elapsed_ticks(now)),
            (0 | 4, true) => {
                if let Some(t) = c.frozen_ticks.take() {
                    c.load_ns = now.saturating_sub(ticks_to_ns(t));
                }
            }
            (2 | 3, false) if c.armed => c.frozen_ticks = Some(c.elapsed_ticks(now)),
            (2 | 3, true) | (1 | 5, true) => {
                // Rising gate: modes 2/3 reload and restart, modes 1/5 trigger.
                c.frozen_ticks = None;
                if c.count_written {
                    c.armed = true;
                    c.load_ns = now;
                }
            }
            _ => {}
        }
        if channel == 0 {
            self.reschedule(now);
        }
    }

    /// Point the timer at channel 0's next OUT rising edge (IRQ0), or idle it.
    fn reschedule(&mut self, now: u64) {
        let c = &self.ch[0];
        match c.next_rising_tick(now) {
            Some(t) => self.timer.set(c.load_ns.saturating_add(ticks_to_ns(t))),
            None => self.timer.clear(),
        }
    }

    fn write_control(&mut self, value: u8, now: u64) {
        let select = usize::from(value >> 6);
        if select == 3 {
            // Read-back: bit 5 = 0 latches counts, bit 4 = 0 latches status, bits 1–3 select.
            for (i, c) in self.ch.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                if value & 0x20 == 0 && c.latched_count.is_none() {
                    c.latched_count = Some(c.current_count(now));
                    c.latched_hi_next = false;
                }
                if value & 0x10 == 0 && c.latched_status.is_none() {
                    c.latched_status = Some(c.status(now));
                }
            }
            return;
        }
        let access = (value >> 4) & 3;
        let c = &mut self.ch[select];
        if access == 0 {
            // Counter latch command; a second latch before the read is ignored.
            if c.latched_count.is_none() {
                c.latched_count = Some(c.current_count(now));
                c.latched_hi_next = false;
            }
            return;
        }
        let mut mode = (value >> 1) & 7;
        if mode > 5 {
            mode &= 3; // 6 and 7 alias modes 2 and 3
        }
        c.mode = mode;
        c.access = access;
        c.bcd = value & 1 != 0;
        c.armed = false;
        c.count_written = false;
        c.frozen_ticks = None;
        c.latched_count = None;
        c.latched_status = None;
        c.read_hi_next = false;
        c.write_hi_next = false;
        if select == 0 {
            self.reschedule(now);
        }
    }

    fn write_count(&mut self, channel: usize, value: u8, now: u64) {
        let c = &mut self.ch[channel];
        let raw = match c.access {
            ACCESS_LSB => u16::from(value),
            ACCESS_MSB => u16::from(value) << 8,
            _ => {
                if !c.write_hi_next {
                    c.write_lo = value;
                    c.write_hi_next = true;
                    if c.mode == 0 {
                        // Mode 0: writing the first byte stops the count (OUT stays low).
                        c.armed = false;
                        if channel == 0 {
                            self.reschedule(now);
                        }
                    }
                    return;
                }
                c.write_hi_next = false;
                u16::from(c.write_lo) | u16::from(value) << 8
            }
        };
        let count = if c.bcd {
            bcd_to_bin(raw)
        } else {
            u32::from(raw)
        };
        c.count = match (count, c.bcd) {
            (0, true) => 10_000,
            (0, false) => 0x10000,
            (n, _) => n,
        };
        c.count_written = true;
        c.load_ns = now;
        c.frozen_ticks = None;
        match c.mode {
            // Gate-triggered modes wait for a rising gate edge.
            1 | 5 => c.armed = false,
            _ => {
                c.armed = true;
                if c.gated_off() {
                    c.frozen_ticks = Some(0);
                }
            }
        }
        if channel == 0 {
            self.reschedule(now);
        }
    }

    fn read_count(&mut self, channel: usize, now: u64) -> u8 {
        let c = &mut self.ch[channel];
        if let Some(status) = c.latched_status.take() {
            return status;
        }
        if let Some(latched) = c.latched_count {
            let [lo, hi] = latched.to_le_bytes();
            return match c.access {
                ACCESS_LSB => {
                    c.latched_count = None;
                    lo
                }
                ACCESS_MSB => {
                    c.latched_count = None;
                    hi
                }
                _ if !c.latched_hi_next => {
                    c.latched_hi_next = true;
                    lo
                }
                _ => {
                    c.latched_hi_next = false;
                    c.latched_count = None;
                    hi
                }
            };
        }
        let [lo, hi] = c.current_count(now).to_le_bytes();
        match c.access {
            ACCESS_LSB => lo,
            ACCESS_MSB => hi,
            _ => {
                c.read_hi_next = !c.read_hi_next;
                if c.read_hi_next {
                    lo
                } else {
                    hi
                }
            }
        }
    }

    /// Read system control port B (0x61).
    pub fn read_port61(&self) -> u8 {
        let now = self.clock.now_ns();
        let refresh = if (now / REFRESH_PERIOD_NS) & 1 != 0 {
            PORT61_REFRESH
        } else {
            0
        };
        let out2 = if self.ch[2].out(now) { PORT61_OUT2 } else { 0 };
        u8::from(self.ch[2].gate) | self.port61_latch | refresh | out2
    }

    /// Write system control port B (0x61): gate 2, speaker data, check enables.
    pub fn write_port61(&mut self, value: u8) {
        self.port61_latch = value & (PORT61_SPEAKER | PORT61_CHECK_ENABLES);
        self.set_gate(2, value & PORT61_GATE2 != 0);
    }
}

impl BusDevice for Pit8254 {
    fn name(&self) -> &str {
        "i8254"
    }

    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        let now = self.clock.now_ns();
        for (i, b) in data.iter_mut().enumerate() {
            *b = match access.offset.wrapping_add(i as u64) {
                o @ 0..=2 => self.read_count(o as usize, now),
                _ => 0xFF, // the control register is write-only
            };
        }
    }

    fn write(&mut self, access: BusAccess, data: &[u8]) {
        let now = self.clock.now_ns();
        for (i, &b) in data.iter().enumerate() {
            match access.offset.wrapping_add(i as u64) {
                o @ 0..=2 => self.write_count(o as usize, b, now),
                3 => self.write_control(b, now),
                _ => {}
            }
        }
    }

    fn reset(&mut self) {
        let now = self.clock.now_ns();
        self.ch = [
            PitChannelState::power_on(true, now),
            PitChannelState::power_on(true, now),
            PitChannelState::power_on(false, now),
        ];
        self.port61_latch = 0;
        self.reschedule(now);
    }
}

impl TimerDevice for Pit8254 {
    fn on_timer(&mut self, now_ns: u64) {
        if self.timer.deadline() <= now_ns {
            // OUT0 rose: IRQ0 is edge-triggered, so a pulse is what the PIC sees.
            self.irq.pulse();
        }
        self.reschedule(now_ns);
    }
}

/// System control port B at 0x61, a window onto the PIT's channel 2 gate and OUT.
///
/// SeaBIOS calibrates its TSC with channel 2 in mode 0 and spins on bit 5 with no timeout,
/// so OUT2 here comes from the same clock-derived state as the PIT's own ports.
pub struct Port61 {
    pit: Arc<Mutex<Pit8254>>,
}

impl Port61 {
    /// Port 0x61 backed by `pit`.
    pub fn new(pit: Arc<Mutex<Pit8254>>) -> Self {
        Port61 { pit }
    }
}

impl BusDevice for Port61 {
    fn name(&self) -> &str {
        "port61"
    }

    fn read(&mut self, _access: BusAccess, data: &mut [u8]) {
        let v = self.pit.lock().map(|p| p.read_port61()).unwrap_or(0xFF);
        data.fill(0xFF);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, _access: BusAccess, data: &[u8]) {
        if let (Some(&v), Ok(mut pit)) = (data.first(), self.pit.lock()) {
            pit.write_port61(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcvm_core::ClockMode;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct CountEdges(AtomicU32);
    impl IrqLine for CountEdges {
        fn set_level(&self, high: bool) {
            if high {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn setup() -> (Pit8254, VirtualClock, Arc<CountEdges>, TimerHandle) {
        let clock = VirtualClock::new(ClockMode::InstructionCount {
            ns_per_instruction: 1,
        });
        let irq = Arc::new(CountEdges::default());
        let timer = TimerHandle::new();
        let pit = Pit8254::new(clock.clone(), irq.clone(), timer.clone());
        (pit, clock, irq, timer)
    }

    fn out(pit: &mut Pit8254, offset: u64, v: u8) {
        pit.write(
            BusAccess {
                offset,
                addr: 0x40 + offset,
            },
            &[v],
        );
    }
    fn inb(pit: &mut Pit8254, offset: u64) -> u8 {
        let mut b = [0];
        pit.read(
            BusAccess {
                offset,
                addr: 0x40 + offset,
            },
            &mut b,
        );
        b[0]
    }

    #[test]
    fn seabios_calibration_ch2_mode0() {
        let (mut pit, clock, _, _) = setup();
        // SeaBIOS: port 0x61 = (orig & ~2) | 1, ch2 mode 0 lohi, count 0x800.
        let orig = pit.read_port61();
        pit.write_port61((orig & !2) | 1);
        out(&mut pit, 3, 0xB0);
        out(&mut pit, 2, 0x00);
        out(&mut pit, 2, 0x08);
        assert_eq!(pit.read_port61() & PORT61_OUT2, 0);
        // 0x800 clocks = 1_716_418.8 ns.
        clock.add_instructions(1_716_418);
        assert_eq!(pit.read_port61() & PORT61_OUT2, 0, "not yet");
        clock.add_instructions(2);
        assert_ne!(
            pit.read_port61() & PORT61_OUT2,
            0,
            "OUT2 high after 0x800 clocks"
        );
        assert_eq!(pit.read_port61() & 1, 1, "gate reads back");
    }

    #[test]
    fn channel0_mode2_periodic_irq_without_drift() {
        let (mut pit, clock, irq, timer) = setup();
        out(&mut pit, 3, 0x34); // ch0 mode 2 lohi
        out(&mut pit, 0, 0x9C);
        out(&mut pit, 0, 0x2E); // 11932 → ~100 Hz
        let period = |k: u64| ticks_to_ns(k * 11932);
        assert_eq!(timer.deadline(), period(1));
        for k in 1..=1000u64 {
            let d = timer.deadline();
            assert_eq!(d, period(k), "deadline {k} exact, no drift");
            clock.skip_to(d);
            pit.on_timer(clock.now_ns());
        }
        assert_eq!(irq.0.load(Ordering::SeqCst), 1000);
    }

    #[test]
    fn seabios_pit_setup_mode2_count0() {
        let (mut pit, clock, irq, timer) = setup();
        out(&mut pit, 3, 0x34);
        out(&mut pit, 0, 0);
        out(&mut pit, 0, 0);
        assert_eq!(timer.deadline(), ticks_to_ns(0x10000)); // ~54.9 ms
        clock.skip_to(timer.deadline() + 5 * ticks_to_ns(0x10000));
        pit.on_timer(clock.now_ns());
        assert_eq!(irq.0.load(Ordering::SeqCst), 1, "late timer fires once");
        assert!(timer.deadline() > clock.now_ns());
    }

    #[test]
    fn mode0_one_shot_and_counter_reads() {
        let (mut pit, clock, irq, timer) = setup();
        out(&mut pit, 3, 0x30); // ch0 mode 0
        out(&mut pit, 0, 100);
        out(&mut pit, 0, 0);
        clock.add_instructions(ticks_to_ns(40));
        // Live lohi read.
        let lo = inb(&mut pit, 0);
        let hi = inb(&mut pit, 0);
        assert_eq!(u16::from_le_bytes([lo, hi]), 60);
        clock.skip_to(timer.deadline());
        pit.on_timer(clock.now_ns());
        assert_eq!(irq.0.load(Ordering::SeqCst), 1);
        assert_eq!(timer.deadline(), u64::MAX, "mode 0 fires once");
        assert!(pit.out(0));
        // Counter wraps past zero.
        clock.add_instructions(ticks_to_ns(10));
        out(&mut pit, 3, 0x00); // latch ch0
        clock.add_instructions(ticks_to_ns(5));
        let lo = inb(&mut pit, 0);
        let hi = inb(&mut pit, 0);
        assert_eq!(
            u16::from_le_bytes([lo, hi]),
            0x10000u32.wrapping_sub(10) as u16
        );
    }

    #[test]
    fn read_back_status_and_count() {
        let (mut pit, clock, _, _) = setup();
        out(&mut pit, 3, 0x94); // ch2 mode 2, LSB only
        assert!(!pit.state().channels[2].count_written);
        out(&mut pit, 3, 0xE8); // read-back status of ch2 (count not latched)
        assert_eq!(inb(&mut pit, 2), STATUS_NULL_COUNT | STATUS_OUT | 0x14);
        pit.write_port61(1);
        out(&mut pit, 2, 50);
        clock.add_instructions(ticks_to_ns(20));
        out(&mut pit, 3, 0xC8); // read-back count+status ch2
        clock.add_instructions(ticks_to_ns(7));
        assert_eq!(
            inb(&mut pit, 2),
            STATUS_OUT | 0x14,
            "status first, count loaded"
        );
        assert_eq!(inb(&mut pit, 2), 30, "then the latched count");
        assert_eq!(inb(&mut pit, 2), 23, "then live");
    }

    #[test]
    fn bcd_mode3_and_gate() {
        let (mut pit, clock, _, _) = setup();
        pit.write_port61(0); // gate 2 low
        out(&mut pit, 3, 0xB7); // ch2 mode 3 lohi BCD
        out(&mut pit, 2, 0x00);
        out(&mut pit, 2, 0x10); // BCD 1000
        clock.add_instructions(ticks_to_ns(100));
        out(&mut pit, 3, 0x80);
        assert_eq!(
            u16::from_le_bytes([inb(&mut pit, 2), inb(&mut pit, 2)]),
            0x1000,
            "gate low holds"
        );
        assert!(pit.out(2), "mode 3 OUT high while gated off");
        pit.write_port61(1);
        clock.add_instructions(ticks_to_ns(100));
        out(&mut pit, 3, 0x80);
        // Mode 3 counts by two: 1000 - 200 = 800 → BCD 0x0800.
        assert_eq!(
            u16::from_le_bytes([inb(&mut pit, 2), inb(&mut pit, 2)]),
            0x0800
        );
        assert!(pit.out(2));
        clock.add_instructions(ticks_to_ns(450));
        assert!(!pit.out(2), "second half of the square wave is low");
    }

    #[test]
    fn mode4_strobe_and_mode1_gate_trigger() {
        let (mut pit, clock, irq, timer) = setup();
        out(&mut pit, 3, 0x18); // ch0 mode 4 LSB
        out(&mut pit, 0, 10);
        clock.skip_to(timer.deadline());
        assert_eq!(timer.deadline(), ticks_to_ns(11));
        pit.on_timer(clock.now_ns());
        assert_eq!(irq.0.load(Ordering::SeqCst), 1);
        // Channel 2 mode 1: waits for a gate rising edge.
        pit.write_port61(0);
        out(&mut pit, 3, 0x92);
        out(&mut pit, 2, 10);
        assert!(pit.out(2), "mode 1 OUT high before the trigger");
        pit.write_port61(1);
        assert!(!pit.out(2), "triggered: OUT low");
        clock.add_instructions(ticks_to_ns(10) + 1);
        assert!(pit.out(2));
    }

    #[test]
    fn port61_refresh_toggles_and_hostile_writes() {
        let (mut pit, clock, _, _) = setup();
        let a = pit.read_port61() & PORT61_REFRESH;
        clock.add_instructions(REFRESH_PERIOD_NS);
        assert_ne!(pit.read_port61() & PORT61_REFRESH, a);
        for v in 0..=255u8 {
            out(&mut pit, 3, v);
            out(&mut pit, v as u64 % 4, v);
            inb(&mut pit, v as u64 % 4);
        }
        inb(&mut pit, 7);
        out(&mut pit, 9, 1);
        let pit = Arc::new(Mutex::new(pit));
        let mut p61 = Port61::new(pit.clone());
        p61.write(
            BusAccess {
                offset: 0,
                addr: 0x61,
            },
            &[0x03],
        );
        let mut b = [0u8; 1];
        p61.read(
            BusAccess {
                offset: 0,
                addr: 0x61,
            },
            &mut b,
        );
        assert_eq!(b[0] & 3, 3);
    }
}
