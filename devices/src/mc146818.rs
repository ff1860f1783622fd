//! The Motorola MC146818 real-time clock with its CMOS NVRAM, as found in every PC/AT.
//!
//! Models (MC146818A data sheet: "Address map", "Registers A–D", "Update cycle", "Interrupts"):
//! index port 0x70 (bit 7 is the NMI mask, kept and exposed) and data port 0x71; the time and
//! alarm registers in BCD or binary and 12- or 24-hour format; register A (UIP, divider,
//! periodic rate), B (SET, PIE/AIE/UIE, DM, 24/12), C (flags, cleared by reading) and D (VRT);
//! periodic, alarm (with "don't care" values 0xC0–0xFF) and update-ended interrupts on IRQ8 at
//! [`TimerDevice`] deadlines; and the 114 bytes of NVRAM above the clock, with setters the
//! machine uses to fill what SeaBIOS reads (the CMOS layout QEMU's pc machine uses).
//!
//! Time: an injected wall-clock function gives the date at power-on (host time by default,
//! fixed for tests); from then on the clock advances with the [`VirtualClock`], so a
//! deterministic run reads deterministic time. The update-in-progress bit is set during the
//! 244 µs before each second's update; the update itself is instantaneous.
//!
//! Left out: daylight-saving adjustment (DSE is stored only), the square-wave output pin,
//! and the extended 128-byte bank some chipsets add at 0x72/0x73.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pcvm_core::{BusAccess, BusDevice, IrqLine, TimerDevice, TimerHandle, VirtualClock};
use serde::{Deserialize, Serialize};

/// Index port (write-only; bit 7 masks NMI).
pub const RTC_PORT: u16 = 0x70;
/// Ports decoded from [`RTC_PORT`]: index and data.
pub const RTC_PORT_LEN: u64 = 2;
/// The ISA interrupt of the RTC.
pub const RTC_IRQ: u8 = 8;

/// Register indices (data sheet address map; 0x32 century is the PC/AT convention).
pub mod reg {
    /// Seconds.
    pub const SECONDS: u8 = 0x00;
    /// Seconds alarm.
    pub const SECONDS_ALARM: u8 = 0x01;
    /// Minutes.
    pub const MINUTES: u8 = 0x02;
    /// Minutes alarm.
    pub const MINUTES_ALARM: u8 = 0x03;
    /// Hours.
    pub const HOURS: u8 = 0x04;
    /// Hours alarm.
    pub const HOURS_ALARM: u8 = 0x05;
    /// Day of week (1 = Sunday).
    pub const DAY_OF_WEEK: u8 = 0x06;
    /// Day of month.
    pub const DAY_OF_MONTH: u8 = 0x07;
    /// Month.
    pub const MONTH: u8 = 0x08;
    /// Year within the century.
    pub const YEAR: u8 = 0x09;
    /// Register A.
    pub const A: u8 = 0x0A;
    /// Register B.
    pub const B: u8 = 0x0B;
    /// Register C.
    pub const C: u8 = 0x0C;
    /// Register D.
    pub const D: u8 = 0x0D;
    /// Shutdown status byte (read by the BIOS on reset).
    pub const SHUTDOWN: u8 = 0x0F;
    /// Floppy drive types (high nibble A:, low nibble B:).
    pub const FLOPPY: u8 = 0x10;
    /// Equipment byte.
    pub const EQUIPMENT: u8 = 0x14;
    /// Base memory in KiB, low byte (0x16 high).
    pub const BASE_MEM_LO: u8 = 0x15;
    /// Extended memory above 1 MiB in KiB, low byte (0x18 high).
    pub const EXT_MEM_LO: u8 = 0x17;
    /// Extended memory above 1 MiB in KiB, low byte (copy; 0x31 high).
    pub const EXT_MEM2_LO: u8 = 0x30;
    /// Century (BCD or binary per DM).
    pub const CENTURY: u8 = 0x32;
    /// Memory above 16 MiB in 64 KiB units, low byte (0x35 high).
    pub const MEM_ABOVE_16M_LO: u8 = 0x34;
    /// Boot order, third device (high nibble) and floppy signature check skip (bit 0).
    pub const BOOT_ORDER_3: u8 = 0x38;
    /// Boot order, first (low nibble) and second (high nibble) devices.
    pub const BOOT_ORDER_12: u8 = 0x3D;
    /// Memory above 4 GiB in 64 KiB units, 3 bytes (0x5B–0x5D).
    pub const MEM_ABOVE_4G: u8 = 0x5B;
    /// Number of CPUs minus one.
    pub const CPU_COUNT_MINUS_1: u8 = 0x5F;
}

/// Register A: update in progress.
pub const REG_A_UIP: u8 = 0b1000_0000;
/// Register A: divider chain select bits.
const REG_A_DV_MASK: u8 = 0b0111_0000;
/// Register A: periodic rate select bits.
const REG_A_RS_MASK: u8 = 0b0000_1111;
/// Register B: halt updates so the time can be set.
pub const REG_B_SET: u8 = 0b1000_0000;
/// Register B: periodic interrupt enable.
pub const REG_B_PIE: u8 = 0b0100_0000;
/// Register B: alarm interrupt enable.
pub const REG_B_AIE: u8 = 0b0010_0000;
/// Register B: update-ended interrupt enable.
pub const REG_B_UIE: u8 = 0b0001_0000;
/// Register B: square-wave enable.
pub const REG_B_SQWE: u8 = 0b0000_1000;
/// Register B: binary (not BCD) data mode.
pub const REG_B_DM_BINARY: u8 = 0b0000_0100;
/// Register B: 24-hour mode.
pub const REG_B_24H: u8 = 0b0000_0010;
/// Register C: an enabled interrupt is pending (IRQ asserted).
pub const REG_C_IRQF: u8 = 0b1000_0000;
/// Register C: periodic flag.
pub const REG_C_PF: u8 = 0b0100_0000;
/// Register C: alarm flag.
pub const REG_C_AF: u8 = 0b0010_0000;
/// Register C: update-ended flag.
pub const REG_C_UF: u8 = 0b0001_0000;
/// Register D: valid RAM and time (battery good).
pub const REG_D_VRT: u8 = 0b1000_0000;

/// Power-on register A: 32.768 kHz time base, 1024 Hz periodic rate.
const REG_A_DEFAULT: u8 = 0x26;
/// Power-on register B: 24-hour, BCD.
const REG_B_DEFAULT: u8 = REG_B_24H;
/// How long before the update UIP is set.
const UIP_LEAD_NS: u64 = 244_000;
const NS_PER_SEC: u64 = 1_000_000_000;
/// Earliest time accepted from the wall clock (0001-01-01).
const MIN_SECS: i64 = -62_135_596_800;
/// Latest time accepted from the wall clock (9999-12-31 23:59:59); with the guest able to set
/// only 100 centuries, calendar arithmetic stays far from overflow.
const MAX_SECS: i64 = 253_402_300_799;
/// NVRAM size including the clock registers.
pub const NVRAM_SIZE: usize = 128;

/// A wall-clock source: Unix seconds at the moment of the call.
pub type WallClock = Box<dyn Fn() -> i64 + Send>;

/// The host's wall clock.
pub fn host_wall_clock() -> WallClock {
    Box::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
    })
}

/// A clock stuck at `unix_secs` (tests, reproducible runs).
pub fn fixed_wall_clock(unix_secs: i64) -> WallClock {
    Box::new(move || unix_secs)
}

/// A boot device in the CMOS boot-order nibbles SeaBIOS reads on QEMU builds (0x38/0x3D).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootDevice {
    /// Floppy (code 1).
    Floppy,
    /// Hard disk (code 2).
    Disk,
    /// CD-ROM (code 3).
    Cdrom,
    /// Network (code 4).
    Network,
}

impl BootDevice {
    /// The CMOS nibble.
    pub fn cmos_code(self) -> u8 {
        match self {
            BootDevice::Floppy => 1,
            BootDevice::Disk => 2,
            BootDevice::Cdrom => 3,
            BootDevice::Network => 4,
        }
    }
}

/// The RTC's state, for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcState {
    /// All 128 bytes (the clock registers 0x00–0x09 are recomputed from the time on read).
    pub nvram: Vec<u8>,
    /// Selected register.
    pub index: u8,
    /// NMI masked by bit 7 of the last index write.
    pub nmi_masked: bool,
    /// Unix seconds at `base_ns`.
    pub base_secs: i64,
    /// Virtual time at which the clock read `base_secs` exactly.
    pub base_ns: u64,
    /// Day-of-week register minus the computed weekday, modulo 7.
    pub wday_offset: u8,
    /// Events up to this virtual time are folded into register C.
    pub processed_ns: u64,
}

/// Broken-down calendar time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday.
    weekday: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (month and day may be out of range;
/// they roll over).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = year + (month - 1).div_euclid(12);
    let month = (month - 1).rem_euclid(12) + 1;
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_secs(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem / 60 % 60) as u32,
        second: (rem % 60) as u32,
        weekday: (days + 4).rem_euclid(7) as u32, // 1970-01-01 was a Thursday
    }
}

fn secs_from_civil(c: &Civil) -> i64 {
    days_from_civil(c.year, i64::from(c.month), i64::from(c.day)) * 86_400
        + i64::from(c.hour) * 3600
        + i64::from(c.minute) * 60
        + i64::from(c.second)
}

fn to_bcd(v: u32) -> u8 {
    let v = v % 100;
    ((v / 10) << 4 | (v % 10)) as u8
}

fn from_bcd(v: u8) -> u32 {
    u32::from(v >> 4) * 10 + u32::from(v & 0xF)
}

/// The MC146818 RTC and CMOS NVRAM on IRQ8.
pub struct Rtc {
    nvram: [u8; NVRAM_SIZE],
    index: u8,
    nmi_masked: bool,
    base_secs: i64,
    base_ns: u64,
    wday_offset: u8,
    processed_ns: u64,
    clock: VirtualClock,
    irq: Arc<dyn IrqLine>,
    timer: TimerHandle,
}

impl Rtc {
    /// An RTC reading `wall()` now, advancing with `clock`, interrupting on `irq` (ISA IRQ8);
    /// `timer` is the handle the machine registers with this device in [`pcvm_core::Timers`].
    pub fn new(
        clock: VirtualClock,
        irq: Arc<dyn IrqLine>,
        timer: TimerHandle,
        wall: WallClock,
    ) -> Self {
        let now = clock.now_ns();
        let mut nvram = [0u8; NVRAM_SIZE];
        nvram[usize::from(reg::A)] = REG_A_DEFAULT;
        nvram[usize::from(reg::B)] = REG_B_DEFAULT;
        nvram[usize::from(reg::D)] = REG_D_VRT;
        let mut rtc = Rtc {
            nvram,
            index: 0,
            nmi_masked: false,
            base_secs: wall().clamp(MIN_SECS, MAX_SECS),
            base_ns: now,
            wday_offset: 0,
            processed_ns: now,
            clock,
            irq,
            timer,
        };
        rtc.reschedule(now);
        rtc
    }

    /// NMI is masked (bit 7 of the last write to 0x70).
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    fn r(&self, index: u8) -> u8 {
        self.nvram[usize::from(index) % NVRAM_SIZE]
    }

    fn binary(&self) -> bool {
        self.r(reg::B) & REG_B_DM_BINARY != 0
    }

    fn hour24(&self) -> bool {
        self.r(reg::B) & REG_B_24H != 0
    }

    /// The oscillator and divider run (DV = 000, 001 or 010; 11x holds the divider in reset).
    fn divider_running(&self) -> bool {
        self.r(reg::A) & REG_A_DV_MASK <= 0x20
    }

    /// Seconds advance (divider running and SET clear).
    fn updating(&self) -> bool {
        self.divider_running() && self.r(reg::B) & REG_B_SET == 0
    }

    /// Unix seconds and nanoseconds into that second at `now`.
    fn time_at(&self, now: u64) -> (i64, u64) {
        if !self.updating() {
            return (self.base_secs, 0);
        }
        let elapsed = now.saturating_sub(self.base_ns);
        let secs = i64::try_from(elapsed / NS_PER_SEC).unwrap_or(i64::MAX);
        (self.base_secs.saturating_add(secs), elapsed % NS_PER_SEC)
    }

    /// Freeze the running time into `base_secs` (SET, divider reset) or restart the second.
    /// Keeps the fraction of the current second while running.
    fn rebase(&mut self, now: u64) {
        let (secs, into) = self.time_at(now);
        self.base_secs = secs;
        self.base_ns = now.saturating_sub(into);
    }

    fn encode(&self, v: u32) -> u8 {
        if self.binary() {
            v as u8
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> u32 {
        if self.binary() {
            u32::from(v)
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.hour24() {
            self.encode(hour)
        } else {
            let h12 = match hour % 12 {
                0 => 12,
                h => h,
            };
            self.encode(h12) | if hour >= 12 { 0x80 } else { 0 }
        }
    }

    fn decode_hour(&self, v: u8) -> u32 {
        if self.hour24() {
            self.decode(v)
        } else {
            let h = self.decode(v & 0x7F) % 12;
            if v & 0x80 != 0 {
                h + 12
            } else {
                h
            }
        }
    }

    /// The value of clock register `index` for time `secs`.
    fn clock_register(&self, index: u8, secs: i64) -> u8 {
        let c = civil_from_secs(secs);
        match index {
            reg::SECONDS => self.encode(c.second),
            reg::MINUTES => self.encode(c.minute),
            reg::HOURS => self.encode_hour(c.hour),
            reg::DAY_OF_WEEK => self.encode((c.weekday + u32::from(self.wday_offset)) % 7 + 1),
            reg::DAY_OF_MONTH => self.encode(c.day),
            reg::MONTH => self.encode(c.month),
            reg::YEAR => self.encode(c.year.rem_euclid(100) as u32),
            _ => self.encode(c.year.div_euclid(100).rem_euclid(100) as u32), // century
        }
    }

    /// A guest write to a clock register: change that field of the time.
    fn write_clock_register(&mut self, index: u8, value: u8, now: u64) {
        let (secs, _) = self.time_at(now);
        let mut c = civil_from_secs(secs);
        match index {
            reg::SECONDS => c.second = self.decode(value),
            reg::MINUTES => c.minute = self.decode(value),
            reg::HOURS => c.hour = self.decode_hour(value),
            reg::DAY_OF_WEEK => {
                let wanted = (self.decode(value) + 6) % 7;
                self.wday_offset = ((wanted + 7 - c.weekday) % 7) as u8;
                return;
            }
            reg::DAY_OF_MONTH => c.day = self.decode(value),
            reg::MONTH => c.month = self.decode(value),
            reg::YEAR => {
                c.year = c.year.div_euclid(100) * 100 + i64::from(self.decode(value) % 100)
            }
            _ => c.year = i64::from(self.decode(value)) * 100 + c.year.rem_euclid(100),
        }
        let weekday = c.weekday;
        let new_secs = secs_from_civil(&c);
        self.base_secs = self.base_secs.saturating_add(new_secs.saturating_sub(secs));
        // Keep the day-of-week register where it was relative to the date.
        let new_weekday = civil_from_secs(new_secs).weekday;
        self.wday_offset = ((u32::from(self.wday_offset) + weekday + 7 - new_weekday) % 7) as u8;
    }

    /// The periodic interrupt period in ns, if enabled by RS (data sheet table 4).
    fn periodic_ns(&self) -> Option<u64> {
        let rs = u32::from(self.r(reg::A) & REG_A_RS_MASK);
        if rs == 0 || !self.divider_running() {
            return None;
        }
        let shift = if rs <= 2 { rs + 6 } else { rs - 1 };
        Some(((1u64 << shift) * NS_PER_SEC) / 32_768)
    }

    /// An alarm register matches (0xC0–0xFF is "don't care").
    fn alarm_matches(&self, secs: i64) -> bool {
        [
            (reg::SECONDS_ALARM, reg::SECONDS),
            (reg::MINUTES_ALARM, reg::MINUTES),
            (reg::HOURS_ALARM, reg::HOURS),
        ]
        .iter()
        .all(|&(alarm, field)| {
            let a = self.r(alarm);
            a & 0xC0 == 0xC0 || a == self.clock_register(field, secs)
        })
    }

    /// Fold the periodic, update and alarm events up to `now` into register C and raise IRQ8
    /// if an enabled one is new.
    fn advance(&mut self, now: u64) {
        if now <= self.processed_ns {
            return;
        }
        let mut flags = 0u8;
        if let Some(period) = self.periodic_ns() {
            if now / period > self.processed_ns / period {
                flags |= REG_C_PF;
            }
        }
        if self.updating() {
            let (s0, _) = self.time_at(self.processed_ns);
            let (s1, _) = self.time_at(now);
            if s1 > s0 {
                flags |= REG_C_UF;
                // Look at every second updated since, capped at a day (all alarm
                // combinations repeat within one).
                let first = s1.saturating_sub(86_399).max(s0 + 1);
                if (first..=s1).any(|s| self.alarm_matches(s)) {
                    flags |= REG_C_AF;
                }
            }
        }
        self.processed_ns = now;
        self.set_flags(flags);
    }

    /// Add `flags` to register C; assert IRQ8 (IRQF) when an enabled flag is set.
    fn set_flags(&mut self, flags: u8) {
        let enabled = self.r(reg::B);
        let c = &mut self.nvram[usize::from(reg::C)];
        *c |= flags;
        let pending = (*c & REG_C_PF != 0 && enabled & REG_B_PIE != 0)
            || (*c & REG_C_AF != 0 && enabled & REG_B_AIE != 0)
            || (*c & REG_C_UF != 0 && enabled & REG_B_UIE != 0);
        if pending && *c & REG_C_IRQF == 0 {
            *c |= REG_C_IRQF;
            self.irq.set_level(true);
        }
    }

    /// Point the timer at the next event that would raise IRQ8, or idle it.
    fn reschedule(&mut self, now: u64) {
        let b = self.r(reg::B);
        if self.r(reg::C) & REG_C_IRQF != 0 {
            // IRQ8 is already asserted; flags are folded in lazily until C is read.
            self.timer.clear();
            return;
        }
        let mut next = u64::MAX;
        if b & REG_B_PIE != 0 {
            if let Some(period) = self.periodic_ns() {
                next = next.min((now / period + 1).saturating_mul(period));
            }
        }
        if b & (REG_B_AIE | REG_B_UIE) != 0 && self.updating() {
            let (_, into) = self.time_at(now);
            next = next.min(now.saturating_add(NS_PER_SEC - into));
        }
        if next == u64::MAX {
            self.timer.clear();
        } else {
            self.timer.set(next);
        }
    }

    fn read_register(&mut self, index: u8, now: u64) -> u8 {
        self.advance(now);
        match index {
            reg::SECONDS
            | reg::MINUTES
            | reg::HOURS
            | reg::DAY_OF_WEEK
            | reg::DAY_OF_MONTH
            | reg::MONTH
            | reg::YEAR
            | reg::CENTURY => self.clock_register(index, self.time_at(now).0),
            reg::A => {
                let (_, into) = self.time_at(now);
                let uip = self.updating() && into >= NS_PER_SEC - UIP_LEAD_NS;
                self.r(reg::A) | if uip { REG_A_UIP } else { 0 }
            }
            reg::C => {
                let c = self.r(reg::C);
                self.nvram[usize::from(reg::C)] = 0;
                if c & REG_C_IRQF != 0 {
                    self.irq.set_level(false);
                }
                self.reschedule(now);
                c
            }
            _ => self.r(index),
        }
    }

    fn write_register(&mut self, index: u8, value: u8, now: u64) {
        self.advance(now);
        match index {
            reg::SECONDS
            | reg::MINUTES
            | reg::HOURS
            | reg::DAY_OF_WEEK
            | reg::DAY_OF_MONTH
            | reg::MONTH
            | reg::YEAR
            | reg::CENTURY => self.write_clock_register(index, value, now),
            reg::A => {
                let was_running = self.updating();
                self.rebase(now);
                self.nvram[usize::from(reg::A)] = value & !REG_A_UIP;
                if !was_running && self.updating() {
                    self.base_ns = now;
                }
            }
            reg::B => {
                let was_running = self.updating();
                self.rebase(now);
                let mut value = value;
                if value & REG_B_SET != 0 {
                    // Setting SET aborts an update cycle and clears UIE (data sheet).
                    value &= !REG_B_UIE;
                }
                self.nvram[usize::from(reg::B)] = value;
                if !was_running && self.updating() {
                    self.base_ns = now;
                }
                // Enabling an interrupt whose flag is already set asserts IRQ8.
                self.set_flags(0);
            }
            reg::C | reg::D => {} // read-only
            _ => self.nvram[usize::from(index) % NVRAM_SIZE] = value,
        }
        self.reschedule(now);
    }

    /// Set a CMOS byte as the machine's firmware setup does (0x0E–0x7F are plain NVRAM;
    /// lower indices go through the register logic). Indices ≥ 128 are ignored.
    pub fn set_nvram(&mut self, index: u8, value: u8) {
        if usize::from(index) >= NVRAM_SIZE {
            return;
        }
        let now = self.clock.now_ns();
        self.write_register(index, value, now);
    }

    /// Read a CMOS byte (for tests and the monitor); clock registers give the current time.
    pub fn nvram(&mut self, index: u8) -> u8 {
        let now = self.clock.now_ns();
        match index {
            reg::C => self.r(reg::C), // no read side effect here
            i if usize::from(i) < NVRAM_SIZE => self.read_register(i, now),
            _ => 0xFF,
        }
    }

    /// Fill the memory-size bytes as QEMU's pc machine does: base memory (0x15–0x16, 640
    /// KiB), KiB above 1 MiB (0x17–0x18 and 0x30–0x31, capped at 0xFFFF), 64 KiB units above
    /// 16 MiB (0x34–0x35) and above 4 GiB (0x5B–0x5D).
    pub fn set_memory_fields(&mut self, ram_below_4g: u64, ram_above_4g: u64) {
        let le = |v: u64| (v as u8, (v >> 8) as u8);
        let (lo, hi) = le(640);
        self.nvram[usize::from(reg::BASE_MEM_LO)] = lo;
        self.nvram[usize::from(reg::BASE_MEM_LO) + 1] = hi;
        let ext_kib = (ram_below_4g / 1024).saturating_sub(1024).min(0xFFFF);
        let (lo, hi) = le(ext_kib);
        for base in [reg::EXT_MEM_LO, reg::EXT_MEM2_LO] {
            self.nvram[usize::from(base)] = lo;
            self.nvram[usize::from(base) + 1] = hi;
        }
        let above_16m = (ram_below_4g.saturating_sub(16 << 20) / 65_536).min(0xFFFF);
        let (lo, hi) = le(above_16m);
        self.nvram[usize::from(reg::MEM_ABOVE_16M_LO)] = lo;
        self.nvram[usize::from(reg::MEM_ABOVE_16M_LO) + 1] = hi;
        let above_4g = (ram_above_4g / 65_536).min(0xFF_FFFF);
        for i in 0..3 {
            self.nvram[usize::from(reg::MEM_ABOVE_4G) + i] = (above_4g >> (8 * i)) as u8;
        }
    }

    /// Boot order nibbles (0x3D low/high = first/second, 0x38 high = third); bit 0 of 0x38
    /// stays clear so SeaBIOS checks the floppy boot signature (QEMU's default).
    pub fn set_boot_order(&mut self, order: &[BootDevice]) {
        let code = |i: usize| order.get(i).map_or(0, |d| d.cmos_code());
        self.nvram[usize::from(reg::BOOT_ORDER_12)] = code(1) << 4 | code(0);
        self.nvram[usize::from(reg::BOOT_ORDER_3)] = code(2) << 4;
    }

    /// CPUs minus one at 0x5F.
    pub fn set_cpu_count(&mut self, cpus: u8) {
        self.nvram[usize::from(reg::CPU_COUNT_MINUS_1)] = cpus.saturating_sub(1);
    }

    /// Equipment byte 0x14 as QEMU sets it: FPU and PS/2 mouse present, VGA, and the floppy
    /// count (0–4); floppy types at 0x10 (`types` high nibble A:, low nibble B:).
    pub fn set_equipment(&mut self, floppies: u8, types: u8) {
        let mut eq = 0b0000_0110; // x87 present, pointing device present
        if floppies > 0 {
            eq |= 0x01 | ((floppies.min(4) - 1) << 6);
        }
        self.nvram[usize::from(reg::EQUIPMENT)] = eq;
        self.nvram[usize::from(reg::FLOPPY)] = types;
    }

    /// The state, for snapshots.
    pub fn state(&self) -> RtcState {
        RtcState {
            nvram: self.nvram.to_vec(),
            index: self.index,
            nmi_masked: self.nmi_masked,
            base_secs: self.base_secs,
            base_ns: self.base_ns,
            wday_offset: self.wday_offset,
            processed_ns: self.processed_ns,
        }
    }

    /// Restore a snapshot (taken against the same virtual clock).
    pub fn set_state(&mut self, state: &RtcState) {
        for (d, s) in self.nvram.iter_mut().zip(state.nvram.iter()) {
            *d = *s;
        }
        self.index = state.index & 0x7F;
        self.nmi_masked = state.nmi_masked;
        self.base_secs = state.base_secs.clamp(MIN_SECS, MAX_SECS);
        self.base_ns = state.base_ns;
        self.wday_offset = state.wday_offset % 7;
        self.processed_ns = state.processed_ns;
        self.reschedule(self.clock.now_ns());
    }
}

impl BusDevice for Rtc {
    fn name(&self) -> &str {
        "mc146818"
    }

    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        let now = self.clock.now_ns();
        for (i, b) in data.iter_mut().enumerate() {
            *b = match access.addr.wrapping_add(i as u64) {
                0x71 => self.read_register(self.index, now),
                _ => 0xFF, // the index register is write-only
            };
        }
    }

    fn write(&mut self, access: BusAccess, data: &[u8]) {
        let now = self.clock.now_ns();
        for (i, &b) in data.iter().enumerate() {
            match access.addr.wrapping_add(i as u64) {
                0x70 => {
                    self.index = b & 0x7F;
                    self.nmi_masked = b & 0x80 != 0;
                }
                0x71 => self.write_register(self.index, b, now),
                _ => {}
            }
        }
    }

    /// The RESET pin: clears PIE, AIE, UIE, SQWE and all of register C; time and NVRAM live on.
    fn reset(&mut self) {
        let now = self.clock.now_ns();
        self.advance(now);
        self.nvram[usize::from(reg::B)] &= !(REG_B_PIE | REG_B_AIE | REG_B_UIE | REG_B_SQWE);
        if self.nvram[usize::from(reg::C)] & REG_C_IRQF != 0 {
            self.irq.set_level(false);
        }
        self.nvram[usize::from(reg::C)] = 0;
        self.reschedule(now);
    }
}

impl TimerDevice for Rtc {
    fn on_timer(&mut self, now_ns: u64) {
        self.advance(now_ns);
        self.reschedule(now_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcvm_core::ClockMode;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// 2024-02-29 23:59:58 UTC, a Thursday.
    const LEAP_EVE: i64 = 1_709_251_198;

    #[derive(Default)]
    struct Level {
        high: AtomicBool,
        rises: AtomicU32,
    }
    impl IrqLine for Level {
        fn set_level(&self, high: bool) {
            if high && !self.high.swap(true, Ordering::SeqCst) {
                self.rises.fetch_add(1, Ordering::SeqCst);
            }
            self.high.store(high, Ordering::SeqCst);
        }
    }

    fn setup() -> (Rtc, VirtualClock, Arc<Level>, TimerHandle) {
        let clock = VirtualClock::new(ClockMode::InstructionCount {
            ns_per_instruction: 1,
        });
        let irq = Arc::new(Level::default());
        let timer = TimerHandle::new();
        let rtc = Rtc::new(
            clock.clone(),
            irq.clone(),
            timer.clone(),
            fixed_wall_clock(LEAP_EVE),
        );
        (rtc, clock, irq, timer)
    }

    fn cmos_read(rtc: &mut Rtc, index: u8) -> u8 {
        rtc.write(
            BusAccess {
                offset: 0,
                addr: 0x70,
            },
            &[0x80 | index],
        );
        let mut b = [0];
        rtc.read(
            BusAccess {
                offset: 1,
                addr: 0x71,
            },
            &mut b,
        );
        b[0]
    }
    fn cmos_write(rtc: &mut Rtc, index: u8, v: u8) {
        rtc.write(
            BusAccess {
                offset: 0,
                addr: 0x70,
            },
            &[index],
        );
        rtc.write(
            BusAccess {
                offset: 1,
                addr: 0x71,
            },
            &[v],
        );
    }
    fn time(rtc: &mut Rtc) -> [u8; 8] {
        [
            reg::SECONDS,
            reg::MINUTES,
            reg::HOURS,
            reg::DAY_OF_WEEK,
            reg::DAY_OF_MONTH,
            reg::MONTH,
            reg::YEAR,
            reg::CENTURY,
        ]
        .map(|r| cmos_read(rtc, r))
    }

    #[test]
    fn bcd_time_advances_over_leap_day_midnight() {
        let (mut rtc, clock, _, _) = setup();
        assert_eq!(
            time(&mut rtc),
            [0x58, 0x59, 0x23, 5, 0x29, 0x02, 0x24, 0x20]
        );
        assert!(rtc.nmi_masked(), "index writes with bit 7 mask NMI");
        clock.add_instructions(2 * NS_PER_SEC);
        assert_eq!(
            time(&mut rtc),
            [0x00, 0x00, 0x00, 6, 0x01, 0x03, 0x24, 0x20]
        );
        assert_eq!(cmos_read(&mut rtc, reg::A), 0x26);
        assert_eq!(cmos_read(&mut rtc, reg::B), 0x02);
        assert_eq!(cmos_read(&mut rtc, reg::D), 0x80);
        let mut b = [0];
        rtc.read(
            BusAccess {
                offset: 0,
                addr: 0x70,
            },
            &mut b,
        );
        assert_eq!(b[0], 0xFF, "index port is write-only");
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let (mut rtc, _, _, _) = setup();
        cmos_write(&mut rtc, reg::B, REG_B_DM_BINARY);
        assert_eq!(cmos_read(&mut rtc, reg::HOURS), 0x80 | 11, "11 PM");
        assert_eq!(cmos_read(&mut rtc, reg::SECONDS), 58);
        assert_eq!(cmos_read(&mut rtc, reg::CENTURY), 20);
        cmos_write(&mut rtc, reg::B, 0);
        assert_eq!(cmos_read(&mut rtc, reg::HOURS), 0x91, "BCD 11 | PM");
        // Set 12 AM (midnight) in 12-hour BCD mode.
        cmos_write(&mut rtc, reg::B, REG_B_SET);
        cmos_write(&mut rtc, reg::HOURS, 0x12);
        cmos_write(&mut rtc, reg::B, REG_B_24H);
        assert_eq!(cmos_read(&mut rtc, reg::HOURS), 0x00);
        assert_eq!(cmos_read(&mut rtc, reg::DAY_OF_MONTH), 0x29);
    }

    #[test]
    fn set_bit_freezes_and_writes_time() {
        let (mut rtc, clock, _, _) = setup();
        cmos_write(&mut rtc, reg::B, REG_B_SET | REG_B_24H);
        cmos_write(&mut rtc, reg::YEAR, 0x99);
        cmos_write(&mut rtc, reg::CENTURY, 0x19);
        cmos_write(&mut rtc, reg::MONTH, 0x12);
        cmos_write(&mut rtc, reg::DAY_OF_MONTH, 0x31);
        cmos_write(&mut rtc, reg::HOURS, 0x23);
        cmos_write(&mut rtc, reg::MINUTES, 0x59);
        cmos_write(&mut rtc, reg::SECONDS, 0x59);
        cmos_write(&mut rtc, reg::DAY_OF_WEEK, 6);
        clock.add_instructions(5 * NS_PER_SEC);
        assert_eq!(
            time(&mut rtc),
            [0x59, 0x59, 0x23, 6, 0x31, 0x12, 0x99, 0x19],
            "frozen"
        );
        cmos_write(&mut rtc, reg::B, REG_B_24H);
        clock.add_instructions(NS_PER_SEC);
        assert_eq!(
            time(&mut rtc),
            [0x00, 0x00, 0x00, 7, 0x01, 0x01, 0x00, 0x20]
        );
        // Hostile values never panic.
        for v in [0xFF, 0x00, 0x9A] {
            for r in 0..=0x0D {
                cmos_write(&mut rtc, r, v);
                cmos_read(&mut rtc, r);
            }
        }
    }

    #[test]
    fn uip_is_set_just_before_the_update() {
        let (mut rtc, clock, _, _) = setup();
        clock.add_instructions(NS_PER_SEC - UIP_LEAD_NS - 1);
        assert_eq!(cmos_read(&mut rtc, reg::A) & REG_A_UIP, 0);
        clock.add_instructions(2);
        assert_ne!(cmos_read(&mut rtc, reg::A) & REG_A_UIP, 0);
        assert_eq!(cmos_read(&mut rtc, reg::SECONDS), 0x58, "not updated yet");
        clock.add_instructions(UIP_LEAD_NS);
        assert_eq!(cmos_read(&mut rtc, reg::A) & REG_A_UIP, 0);
        assert_eq!(cmos_read(&mut rtc, reg::SECONDS), 0x59);
        // Divider in reset: no UIP, no updates.
        cmos_write(&mut rtc, reg::A, 0x70);
        clock.add_instructions(3 * NS_PER_SEC - 1000);
        assert_eq!(cmos_read(&mut rtc, reg::A), 0x70);
        assert_eq!(cmos_read(&mut rtc, reg::SECONDS), 0x59);
    }

    #[test]
    fn periodic_interrupt_on_irq8() {
        let (mut rtc, clock, irq, timer) = setup();
        assert_eq!(timer.deadline(), u64::MAX);
        cmos_write(&mut rtc, reg::B, REG_B_24H | REG_B_PIE);
        // RS = 6: 1024 Hz → 976_562 ns.
        assert_eq!(timer.deadline(), 976_562);
        clock.skip_to(timer.deadline());
        rtc.on_timer(clock.now_ns());
        assert!(irq.high.load(Ordering::SeqCst));
        assert_eq!(timer.deadline(), u64::MAX, "no timer while IRQF is set");
        assert_eq!(cmos_read(&mut rtc, reg::C), REG_C_IRQF | REG_C_PF);
        assert!(!irq.high.load(Ordering::SeqCst));
        assert_eq!(cmos_read(&mut rtc, reg::C), 0);
        assert_eq!(timer.deadline(), 2 * 976_562);
        // RS = 15: 500 ms.
        cmos_write(&mut rtc, reg::A, 0x2F);
        assert_eq!(timer.deadline(), 500_000_000);
    }

    #[test]
    fn update_ended_and_alarm_interrupts() {
        let (mut rtc, clock, irq, timer) = setup();
        // Alarm at 00:00:00 (BCD), don't-care hours.
        cmos_write(&mut rtc, reg::SECONDS_ALARM, 0x00);
        cmos_write(&mut rtc, reg::MINUTES_ALARM, 0x00);
        cmos_write(&mut rtc, reg::HOURS_ALARM, 0xC0);
        cmos_write(&mut rtc, reg::B, REG_B_24H | REG_B_AIE);
        assert_eq!(timer.deadline(), NS_PER_SEC);
        clock.skip_to(timer.deadline());
        rtc.on_timer(clock.now_ns());
        assert!(!irq.high.load(Ordering::SeqCst), "23:59:59 is no match");
        // PF follows RS = 6 even without PIE; UF without UIE.
        assert_eq!(cmos_read(&mut rtc, reg::C), REG_C_PF | REG_C_UF);
        clock.skip_to(timer.deadline());
        rtc.on_timer(clock.now_ns());
        assert!(irq.high.load(Ordering::SeqCst));
        assert_eq!(
            cmos_read(&mut rtc, reg::C),
            REG_C_IRQF | REG_C_PF | REG_C_AF | REG_C_UF
        );
        cmos_write(&mut rtc, reg::B, REG_B_24H | REG_B_UIE);
        clock.skip_to(timer.deadline());
        rtc.on_timer(clock.now_ns());
        assert_eq!(irq.rises.load(Ordering::SeqCst), 2);
        rtc.reset();
        assert!(!irq.high.load(Ordering::SeqCst));
        assert_eq!(cmos_read(&mut rtc, reg::B), REG_B_24H, "RESET clears UIE");
    }

    #[test]
    fn memory_boot_and_cpu_fields() {
        let (mut rtc, _, _, _) = setup();
        rtc.set_memory_fields(128 << 20, 0);
        assert_eq!(
            [cmos_read(&mut rtc, 0x15), cmos_read(&mut rtc, 0x16)],
            [0x80, 0x02]
        );
        assert_eq!(
            [cmos_read(&mut rtc, 0x17), cmos_read(&mut rtc, 0x18)],
            [0xFF, 0xFF]
        );
        assert_eq!(
            [cmos_read(&mut rtc, 0x30), cmos_read(&mut rtc, 0x31)],
            [0xFF, 0xFF]
        );
        assert_eq!(
            [cmos_read(&mut rtc, 0x34), cmos_read(&mut rtc, 0x35)],
            [0x00, 0x07]
        );
        rtc.set_memory_fields(8 << 20, 0);
        assert_eq!(
            [cmos_read(&mut rtc, 0x17), cmos_read(&mut rtc, 0x18)],
            [0x00, 0x1C]
        );
        assert_eq!(
            [cmos_read(&mut rtc, 0x34), cmos_read(&mut rtc, 0x35)],
            [0, 0]
        );
        rtc.set_memory_fields(0xC000_0000, 3 << 30);
        assert_eq!(
            [0x5B, 0x5C, 0x5D].map(|i| cmos_read(&mut rtc, i)),
            [0x00, 0xC0, 0x00]
        );
        assert_eq!(
            [cmos_read(&mut rtc, 0x34), cmos_read(&mut rtc, 0x35)],
            [0x00, 0xBF]
        );
        rtc.set_boot_order(&[BootDevice::Cdrom, BootDevice::Disk, BootDevice::Floppy]);
        assert_eq!(cmos_read(&mut rtc, 0x3D), 0x23);
        assert_eq!(cmos_read(&mut rtc, 0x38), 0x10);
        rtc.set_cpu_count(4);
        assert_eq!(cmos_read(&mut rtc, 0x5F), 3);
        rtc.set_equipment(0, 0);
        assert_eq!(cmos_read(&mut rtc, 0x14), 0x06);
        rtc.set_nvram(0x0F, 0xFE);
        assert_eq!(rtc.nvram(0x0F), 0xFE);
        rtc.set_nvram(200, 1);
        let state = rtc.state();
        let json = serde_json::to_string(&state).unwrap();
        let back: RtcState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn calendar_conversion_roundtrips() {
        for secs in [0i64, LEAP_EVE, 951_782_400, 4_102_444_800, -86_400] {
            let c = civil_from_secs(secs);
            assert_eq!(secs_from_civil(&c), secs);
        }
        let c = civil_from_secs(951_782_400); // 2000-02-29
        assert_eq!((c.year, c.month, c.day, c.weekday), (2000, 2, 29, 2));
    }
}
