//! What a CPU backend sees of the machine while it runs.
//!
//! [`Platform`] is the only path from a backend to devices: memory, the two buses, the INTR pin
//! and INTA cycle, NMIs, timers, and system requests (reset, power-off) raised by devices.
//! [`Board`] is the one implementation the machine and the tests assemble.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::bus::Bus;
use crate::clock::{Timers, VirtualClock};
use crate::irq::{InterruptController, IntrPin};
use crate::memory::GuestMemory;

/// A request from a device to the whole system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemRequest {
    /// Reset the machine (port 0xCF9, port 0x92 bit 0, i8042 pulse, ACPI reset register).
    Reset,
    /// Power off with this exit status (ACPI S5 → 0, isa-debug-exit → (value << 1) | 1).
    PowerOff(i32),
}

/// A handle devices use to ask for reset or power-off; the backend returns to the machine loop
/// at the next instruction boundary.
#[derive(Clone, Debug, Default)]
pub struct SystemRequests {
    kind: Arc<AtomicU8>,
    status: Arc<AtomicI32>,
}

impl SystemRequests {
    const NONE: u8 = 0;
    const RESET: u8 = 1;
    const POWER_OFF: u8 = 2;

    /// No request pending.
    pub fn new() -> Self {
        Self::default()
    }
    /// Ask for a system reset.
    pub fn request_reset(&self) {
        self.kind.store(Self::RESET, Ordering::Release);
    }
    /// Ask for power-off with an exit status.
    pub fn request_power_off(&self, status: i32) {
        self.status.store(status, Ordering::Release);
        self.kind.store(Self::POWER_OFF, Ordering::Release);
    }
    /// A request is pending (cheap; checked after every I/O access).
    #[inline]
    pub fn pending(&self) -> bool {
        self.kind.load(Ordering::Relaxed) != Self::NONE
    }
    /// Take the pending request.
    pub fn take(&self) -> Option<SystemRequest> {
        match self.kind.swap(Self::NONE, Ordering::AcqRel) {
            Self::RESET => Some(SystemRequest::Reset),
            Self::POWER_OFF => Some(SystemRequest::PowerOff(self.status.load(Ordering::Acquire))),
            _ => None,
        }
    }
    /// Look at the pending request without taking it.
    pub fn peek(&self) -> Option<SystemRequest> {
        match self.kind.load(Ordering::Acquire) {
            Self::RESET => Some(SystemRequest::Reset),
            Self::POWER_OFF => Some(SystemRequest::PowerOff(self.status.load(Ordering::Acquire))),
            _ => None,
        }
    }
}

/// The machine as a backend sees it.
pub trait Platform {
    /// Guest physical memory.
    fn memory(&self) -> &GuestMemory;
    /// Port input (IN, INS).
    fn io_read(&mut self, port: u16, data: &mut [u8]);
    /// Port output (OUT, OUTS).
    fn io_write(&mut self, port: u16, data: &[u8]);
    /// A load from device memory.
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]);
    /// A store to device memory.
    fn mmio_write(&mut self, addr: u64, data: &[u8]);
    /// The INTR pin is asserted (cheap; sample at every instruction boundary where IF=1).
    fn intr(&self) -> bool;
    /// INTA: the vector to deliver, or `None` if the request vanished.
    fn acknowledge_interrupt(&mut self) -> Option<u8>;
    /// Take a pending NMI.
    fn take_nmi(&mut self) -> bool;
    /// Fire expired timers; call every few thousand instructions and at every block exit.
    fn poll(&mut self);
    /// The virtual clock.
    fn clock(&self) -> &VirtualClock;
    /// A device asked for reset or power-off; the backend should return
    /// [`crate::VmExit::Reset`] / [`crate::VmExit::PowerOff`] at the next instruction boundary.
    fn system_request(&self) -> Option<SystemRequest>;

    /// RDMSR of a CPU-local MSR the board's interrupt controller implements (the local APIC's
    /// IA32_APIC_BASE 0x1B, x2APIC registers 0x800–0x8FF, IA32_TSC_DEADLINE 0x6E0; Intel SDM
    /// Vol. 3A §11.4.4, §11.12.1, §11.5.4.1). `None`: the board does not take this MSR now,
    /// and the backend handles it itself (or raises #GP, as for x2APIC MSRs in xAPIC mode).
    fn read_local_msr(&mut self, _msr: u32) -> Option<u64> {
        None
    }

    /// WRMSR of such an MSR; `tsc` is the CPU's time-stamp counter at the write (the
    /// TSC-deadline timer compares against it). `Some(true)`: done; `Some(false)`: the write
    /// is invalid, #GP(0); `None`: not the board's, the backend handles it.
    fn write_local_msr(&mut self, _msr: u32, _value: u64, _tsc: u64) -> Option<bool> {
        None
    }

    /// The earliest timer deadline in virtual-clock ns (`u64::MAX`: no timer armed), so a
    /// backend that runs guest code outside the emulator (KVM) can come back out exactly when
    /// [`Platform::poll`] has work. `None`: unknown, the backend must poll periodically.
    fn next_timer_deadline(&self) -> Option<u64> {
        None
    }

    /// MOV from CR8 in 64-bit mode: the local APIC's TPR[7:4] (Intel SDM Vol. 3A
    /// "Interaction of Task Priorities between CR8 and APIC"); `None` when the board has no
    /// local APIC and CR8 is the CPU's own register.
    fn read_cr8(&mut self) -> Option<u64> {
        None
    }

    /// MOV to CR8: sets TPR[7:4] (TPR[3:0] = 0); `false` when the board has no local APIC.
    fn write_cr8(&mut self, _value: u64) -> bool {
        false
    }
}

/// The assembled machine: memory, buses, timers, interrupt routing.
pub struct Board {
    pub memory: Arc<GuestMemory>,
    pub pio: Bus,
    pub mmio: Bus,
    pub clock: VirtualClock,
    pub timers: Timers,
    pub intr: IntrPin,
    pub interrupt_controller: Option<Arc<Mutex<dyn InterruptController>>>,
    pub requests: SystemRequests,
    pub nmi: Arc<AtomicBool>,
}

impl Board {
    /// A board with no devices.
    pub fn new(memory: Arc<GuestMemory>, clock: VirtualClock) -> Self {
        Board {
            memory,
            pio: Bus::new(),
            mmio: Bus::new(),
            clock,
            timers: Timers::default(),
            intr: IntrPin::new(),
            interrupt_controller: None,
            requests: SystemRequests::new(),
            nmi: Arc::default(),
        }
    }

    /// The earliest timer deadline (virtual ns), `u64::MAX` if none.
    pub fn next_deadline(&self) -> u64 {
        self.timers.next_deadline()
    }
}

impl Platform for Board {
    fn memory(&self) -> &GuestMemory {
        &self.memory
    }
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        self.pio.read(u64::from(port), data);
    }
    fn io_write(&mut self, port: u16, data: &[u8]) {
        self.pio.write(u64::from(port), data);
    }
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) {
        self.mmio.read(addr, data);
    }
    fn mmio_write(&mut self, addr: u64, data: &[u8]) {
        self.mmio.write(addr, data);
    }
    #[inline]
    fn intr(&self) -> bool {
        self.intr.asserted()
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        let ctl = self.interrupt_controller.as_ref()?;
        ctl.lock().ok()?.acknowledge()
    }
    fn take_nmi(&mut self) -> bool {
        self.nmi.swap(false, Ordering::AcqRel)
    }
    fn poll(&mut self) {
        let now = self.clock.now_ns();
        if self.timers.next_deadline() <= now {
            self.timers.fire_expired(now);
        }
    }
    fn clock(&self) -> &VirtualClock {
        &self.clock
    }
    #[inline]
    fn system_request(&self) -> Option<SystemRequest> {
        if self.requests.pending() {
            self.requests.peek()
        } else {
            None
        }
    }
    fn read_local_msr(&mut self, msr: u32) -> Option<u64> {
        self.interrupt_controller
            .as_ref()?
            .lock()
            .ok()?
            .read_msr(msr)
    }
    fn write_local_msr(&mut self, msr: u32, value: u64, tsc: u64) -> Option<bool> {
        self.interrupt_controller
            .as_ref()?
            .lock()
            .ok()?
            .write_msr(msr, value, tsc)
    }
    fn next_timer_deadline(&self) -> Option<u64> {
        Some(self.timers.next_deadline())
    }
    fn read_cr8(&mut self) -> Option<u64> {
        let class = self
            .interrupt_controller
            .as_ref()?
            .lock()
            .ok()?
            .task_priority_class()?;
        Some(u64::from(class))
    }
    fn write_cr8(&mut self, value: u64) -> bool {
        self.interrupt_controller
            .as_ref()
            .and_then(|c| c.lock().ok())
            .is_some_and(|mut c| c.set_task_priority_class((value & 0xF) as u8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ClockMode;
    use crate::memory::MemoryLayout;

    /// A controller owning MSR 0x1B only, recording the TSC of the last write.
    struct OneMsr(u64, u64);

    impl InterruptController for OneMsr {
        fn acknowledge(&mut self) -> Option<u8> {
            None
        }
        fn read_msr(&mut self, msr: u32) -> Option<u64> {
            (msr == 0x1B).then_some(self.0)
        }
        fn write_msr(&mut self, msr: u32, value: u64, tsc: u64) -> Option<bool> {
            (msr == 0x1B).then(|| {
                self.0 = value;
                self.1 = tsc;
                value & 1 == 0
            })
        }
    }

    #[test]
    fn local_msrs_go_to_the_interrupt_controller() {
        let layout = MemoryLayout::pc(16 << 20).unwrap();
        let memory = Arc::new(GuestMemory::new(layout).unwrap());
        let mut board = Board::new(memory, VirtualClock::new(ClockMode::Host));
        assert_eq!(board.read_local_msr(0x1B), None, "no controller");
        assert_eq!(board.write_local_msr(0x1B, 0, 0), None);
        let ctl = Arc::new(Mutex::new(OneMsr(0xFEE0_0900, 0)));
        board.interrupt_controller = Some(ctl.clone());
        assert_eq!(board.read_local_msr(0x1B), Some(0xFEE0_0900));
        assert_eq!(board.read_local_msr(0x10), None);
        assert_eq!(board.write_local_msr(0x1B, 0xFEE0_0800, 77), Some(true));
        assert_eq!(ctl.lock().unwrap().1, 77, "the TSC reaches the controller");
        assert_eq!(board.write_local_msr(0x1B, 1, 0), Some(false));
        assert_eq!(board.write_local_msr(0x6E0, 1, 0), None);
    }

    struct Idle;

    impl crate::clock::TimerDevice for Idle {
        fn on_timer(&mut self, _now_ns: u64) {}
    }

    #[test]
    fn the_next_timer_deadline_is_the_earliest_armed_one() {
        let layout = MemoryLayout::pc(16 << 20).unwrap();
        let memory = Arc::new(GuestMemory::new(layout).unwrap());
        let mut board = Board::new(memory, VirtualClock::new(ClockMode::Host));
        assert_eq!(
            board.next_timer_deadline(),
            Some(u64::MAX),
            "no timer armed"
        );
        let (a, b) = (crate::TimerHandle::new(), crate::TimerHandle::new());
        board.timers.add(a.clone(), Arc::new(Mutex::new(Idle)));
        board.timers.add(b.clone(), Arc::new(Mutex::new(Idle)));
        a.set(5_000);
        b.set(3_000);
        assert_eq!(board.next_timer_deadline(), Some(3_000));
        b.clear();
        assert_eq!(board.next_timer_deadline(), Some(5_000));
    }
}
