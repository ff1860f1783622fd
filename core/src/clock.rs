//! The virtual clock and timer deadlines.
//!
//! Time is nanoseconds since machine start, either from the host's monotonic clock or derived
//! from the retired-instruction count (deterministic runs: `ClockMode::InstructionCount`).
//! Devices that need timer interrupts implement [`TimerDevice`] and publish their next deadline
//! through a [`TimerHandle`]; the platform fires them when the clock passes it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How the virtual clock advances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockMode {
    /// Host monotonic time.
    Host,
    /// `ns_per_instruction` nanoseconds per retired guest instruction.
    InstructionCount { ns_per_instruction: u64 },
}

#[derive(Debug)]
struct ClockInner {
    mode: ClockMode,
    start: Instant,
    instructions: AtomicU64,
    /// Time added while halted in instruction-count mode (jump to the next deadline).
    skipped_ns: AtomicU64,
}

/// A shared virtual clock.
#[derive(Clone, Debug)]
pub struct VirtualClock(Arc<ClockInner>);

impl VirtualClock {
    /// A clock starting now.
    pub fn new(mode: ClockMode) -> Self {
        VirtualClock(Arc::new(ClockInner {
            mode,
            start: Instant::now(),
            instructions: AtomicU64::new(0),
            skipped_ns: AtomicU64::new(0),
        }))
    }

    /// The mode.
    pub fn mode(&self) -> ClockMode {
        self.0.mode
    }

    /// Nanoseconds since machine start.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        match self.0.mode {
            ClockMode::Host => self.0.start.elapsed().as_nanos() as u64,
            ClockMode::InstructionCount { ns_per_instruction } => self
                .0
                .instructions
                .load(Ordering::Relaxed)
                .wrapping_mul(ns_per_instruction)
                .wrapping_add(self.0.skipped_ns.load(Ordering::Relaxed)),
        }
    }

    /// Count retired instructions (drives time in instruction-count mode).
    #[inline]
    pub fn add_instructions(&self, n: u64) {
        self.0.instructions.fetch_add(n, Ordering::Relaxed);
    }

    /// Instructions counted so far.
    pub fn instructions(&self) -> u64 {
        self.0.instructions.load(Ordering::Relaxed)
    }

    /// While the CPU is halted in instruction-count mode, jump time forward to `deadline_ns`.
    /// Returns false in host mode, where the caller must sleep instead.
    pub fn skip_to(&self, deadline_ns: u64) -> bool {
        if self.0.mode == ClockMode::Host {
            return false;
        }
        let now = self.now_ns();
        if deadline_ns > now {
            self.0
                .skipped_ns
                .fetch_add(deadline_ns - now, Ordering::Relaxed);
        }
        true
    }
}

/// The next deadline of one timer device; `u64::MAX` when idle.
#[derive(Clone, Debug)]
pub struct TimerHandle(Arc<AtomicU64>);

impl Default for TimerHandle {
    fn default() -> Self {
        TimerHandle(Arc::new(AtomicU64::new(u64::MAX)))
    }
}

impl TimerHandle {
    /// An idle timer.
    pub fn new() -> Self {
        Self::default()
    }
    /// Fire at `deadline_ns` (virtual clock time).
    pub fn set(&self, deadline_ns: u64) {
        self.0.store(deadline_ns, Ordering::Release);
    }
    /// Stop the timer.
    pub fn clear(&self) {
        self.0.store(u64::MAX, Ordering::Release);
    }
    /// The deadline, `u64::MAX` when idle.
    #[inline]
    pub fn deadline(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// A device with timed behaviour.
pub trait TimerDevice: Send {
    /// The clock reached this device's deadline; update state, raise interrupts, and set the
    /// next deadline on the handle (or clear it).
    fn on_timer(&mut self, now_ns: u64);
}

/// The set of timers a platform services.
#[derive(Clone, Default)]
pub struct Timers {
    entries: Vec<(TimerHandle, Arc<Mutex<dyn TimerDevice>>)>,
}

impl Timers {
    /// Register a timer device with its handle.
    pub fn add(&mut self, handle: TimerHandle, device: Arc<Mutex<dyn TimerDevice>>) {
        self.entries.push((handle, device));
    }

    /// The earliest deadline of all timers.
    pub fn next_deadline(&self) -> u64 {
        self.entries
            .iter()
            .map(|(h, _)| h.deadline())
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Fire every timer whose deadline is at or before `now_ns`. Returns how many fired.
    pub fn fire_expired(&self, now_ns: u64) -> usize {
        let mut fired = 0;
        for (h, d) in &self.entries {
            if h.deadline() <= now_ns {
                if let Ok(mut d) = d.lock() {
                    d.on_timer(now_ns);
                    fired += 1;
                }
                // A device that forgot to move its deadline must not fire forever.
                if h.deadline() <= now_ns {
                    h.clear();
                }
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Periodic {
        handle: TimerHandle,
        period: u64,
        ticks: u32,
    }
    impl TimerDevice for Periodic {
        fn on_timer(&mut self, now_ns: u64) {
            self.ticks += 1;
            self.handle.set(now_ns + self.period);
        }
    }

    #[test]
    fn instruction_count_clock_is_deterministic() {
        let clock = VirtualClock::new(ClockMode::InstructionCount {
            ns_per_instruction: 2,
        });
        clock.add_instructions(50);
        assert_eq!(clock.now_ns(), 100);
        assert!(clock.skip_to(1000));
        assert_eq!(clock.now_ns(), 1000);
    }

    #[test]
    fn timers_fire_at_deadline() {
        let handle = TimerHandle::new();
        let dev = Arc::new(Mutex::new(Periodic {
            handle: handle.clone(),
            period: 10,
            ticks: 0,
        }));
        let mut timers = Timers::default();
        timers.add(handle.clone(), dev.clone());
        handle.set(5);
        assert_eq!(timers.fire_expired(4), 0);
        assert_eq!(timers.fire_expired(5), 1);
        assert_eq!(timers.next_deadline(), 15);
        assert_eq!(dev.lock().unwrap().ticks, 1);
    }
}
