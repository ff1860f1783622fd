//! HPET through its registers with a fixed clock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use pcvm_core::{BusAccess, BusDevice, ClockMode, IrqLine, TimerDevice, TimerHandle, VirtualClock};
use pcvm_devices::hpet::*;

/// Counts rising edges and remembers the level.
#[derive(Default)]
struct Probe {
    edges: AtomicU32,
    level: AtomicU32,
}
impl IrqLine for Probe {
    fn set_level(&self, high: bool) {
        if high && self.level.swap(1, Ordering::AcqRel) == 0 {
            self.edges.fetch_add(1, Ordering::AcqRel);
        }
        if !high {
            self.level.store(0, Ordering::Release);
        }
    }
}

fn wr(h: &mut Hpet, reg: u64, v: u64) {
    h.write(
        BusAccess {
            offset: reg,
            addr: HPET_BASE + reg,
        },
        &v.to_le_bytes(),
    );
}
fn rd(h: &mut Hpet, reg: u64) -> u64 {
    let mut b = [0; 8];
    h.read(
        BusAccess {
            offset: reg,
            addr: HPET_BASE + reg,
        },
        &mut b,
    );
    u64::from_le_bytes(b)
}
fn rd32(h: &mut Hpet, reg: u64) -> u32 {
    let mut b = [0; 4];
    h.read(
        BusAccess {
            offset: reg,
            addr: HPET_BASE + reg,
        },
        &mut b,
    );
    u32::from_le_bytes(b)
}

fn setup() -> (Hpet, VirtualClock, TimerHandle, Vec<Arc<Probe>>) {
    let clock = VirtualClock::new(ClockMode::InstructionCount {
        ns_per_instruction: 1,
    });
    let handle = TimerHandle::new();
    let probes: Vec<Arc<Probe>> = (0..24).map(|_| Arc::new(Probe::default())).collect();
    let lines = probes
        .iter()
        .map(|p| Some(p.clone() as Arc<dyn IrqLine>))
        .collect();
    (
        Hpet::new(clock.clone(), handle.clone(), lines),
        clock,
        handle,
        probes,
    )
}

#[test]
fn capabilities_and_counter() {
    let (mut h, c, _, _) = setup();
    let cap = rd(&mut h, REG_CAPABILITIES);
    assert_eq!(cap >> 32, 10_000_000, "10 ns period");
    assert_eq!((cap >> 16) & 0xFFFF, 0x8086);
    assert_eq!((cap >> 8) & 0x1F, 2, "3 timers");
    assert_ne!(cap & (1 << 13), 0, "64-bit counter");
    assert_ne!(cap & (1 << 15), 0, "legacy route capable");
    assert_eq!(rd32(&mut h, REG_CAPABILITIES + 4), 10_000_000);
    c.add_instructions(1000);
    assert_eq!(rd(&mut h, REG_COUNTER), 0, "halted");
    wr(&mut h, REG_COUNTER, 500);
    wr(&mut h, REG_CONFIG, CFG_ENABLE);
    c.add_instructions(1000);
    assert_eq!(rd(&mut h, REG_COUNTER), 600);
    wr(&mut h, REG_CONFIG, 0);
    c.add_instructions(1000);
    assert_eq!(rd(&mut h, REG_COUNTER), 600, "holds when halted");
    assert_eq!(
        rd(&mut h, 0x100) & (TN_PERIODIC_CAP | TN_SIZE_CAP),
        TN_PERIODIC_CAP | TN_SIZE_CAP
    );
}

#[test]
fn legacy_periodic_timer0_on_irq0_line() {
    let (mut h, c, handle, probes) = setup();
    wr(
        &mut h,
        REG_TIMER0_CONFIG,
        TN_INT_ENABLE | TN_PERIODIC | TN_VAL_SET,
    );
    wr(&mut h, REG_TIMER0_COMPARATOR, 100);
    wr(&mut h, REG_TIMER0_COMPARATOR, 100); // period
    wr(&mut h, REG_CONFIG, CFG_ENABLE | CFG_LEGACY);
    assert_eq!(handle.deadline(), 1000);
    c.add_instructions(1000);
    h.on_timer(c.now_ns());
    assert_eq!(
        probes[2].edges.load(Ordering::Acquire),
        1,
        "timer 0 → IRQ0 (GSI 2)"
    );
    assert_eq!(rd(&mut h, REG_TIMER0_COMPARATOR), 200);
    assert_eq!(handle.deadline(), 2000);
    c.add_instructions(3000);
    h.on_timer(c.now_ns());
    assert_eq!(probes[2].edges.load(Ordering::Acquire), 4, "caught up");
}

#[test]
fn level_one_shot_on_routed_pin_with_status() {
    let (mut h, c, handle, probes) = setup();
    let t1 = REG_TIMER0_CONFIG + 0x20;
    wr(&mut h, t1, TN_INT_ENABLE | TN_LEVEL | (21 << 9));
    assert_eq!(rd(&mut h, t1) >> 32, TN_ROUTE_CAP);
    wr(&mut h, t1 + 8, 50);
    wr(&mut h, REG_CONFIG, CFG_ENABLE);
    c.add_instructions(500);
    h.on_timer(c.now_ns());
    assert_eq!(probes[21].level.load(Ordering::Acquire), 1);
    assert_eq!(rd(&mut h, REG_INT_STATUS), 2);
    assert_eq!(
        handle.deadline(),
        u64::MAX,
        "64-bit one-shot does not repeat"
    );
    wr(&mut h, REG_INT_STATUS, 2);
    assert_eq!(rd(&mut h, REG_INT_STATUS), 0);
    assert_eq!(probes[21].level.load(Ordering::Acquire), 0);
}

#[test]
fn hostile_accesses_do_not_panic() {
    let (mut h, c, _, _) = setup();
    for off in 0..HPET_SIZE {
        let mut b = [0u8; 8];
        let len = (off as usize % 8) + 1;
        h.read(
            BusAccess {
                offset: off,
                addr: 0,
            },
            &mut b[..len],
        );
        h.write(
            BusAccess {
                offset: off,
                addr: 0,
            },
            &[0xFF; 8][..len],
        );
    }
    c.add_instructions(1 << 40);
    h.on_timer(c.now_ns());
}
