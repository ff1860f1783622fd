//! The core chips wired the way the machine wires them: PIC pair on the INTR pin, PIT and RTC
//! on timer deadlines and PIC lines, everything reached through a port bus. Checks the
//! interrupt path end to end and that the lock order (timer → device → PIC) cannot deadlock.

use std::sync::{Arc, Mutex};

use pcvm_core::{
    Bus, ClockMode, InterruptController, IntrPin, SharedDevice, TimerHandle, Timers, VirtualClock,
};
use pcvm_devices::i8254::{Pit8254, Port61, PIT_IRQ, PIT_PORT, PIT_PORT_LEN, PORT61};
use pcvm_devices::i8259::{Pic8259Pair, PicIrqLine, ELCR_PORT, MASTER_PORT, SLAVE_PORT};
use pcvm_devices::mc146818::{fixed_wall_clock, Rtc, RTC_IRQ, RTC_PORT, RTC_PORT_LEN};

struct Pc {
    clock: VirtualClock,
    bus: Bus,
    timers: Timers,
    intr: IntrPin,
    pic: Arc<Mutex<Pic8259Pair>>,
}

impl Pc {
    fn new() -> Pc {
        let clock = VirtualClock::new(ClockMode::InstructionCount {
            ns_per_instruction: 1,
        });
        let intr = IntrPin::new();
        let pic = Arc::new(Mutex::new(Pic8259Pair::new(intr.clone())));
        let mut bus = Bus::new();
        let mut timers = Timers::default();
        let pic_dev: SharedDevice = pic.clone();
        bus.insert(u64::from(MASTER_PORT), 2, pic_dev.clone())
            .unwrap();
        bus.insert(u64::from(SLAVE_PORT), 2, pic_dev.clone())
            .unwrap();
        bus.insert(u64::from(ELCR_PORT), 2, pic_dev).unwrap();

        let pit_timer = TimerHandle::new();
        let pit = Arc::new(Mutex::new(Pit8254::new(
            clock.clone(),
            PicIrqLine::shared(&pic, PIT_IRQ),
            pit_timer.clone(),
        )));
        bus.insert(u64::from(PIT_PORT), PIT_PORT_LEN, pit.clone())
            .unwrap();
        bus.insert(
            u64::from(PORT61),
            1,
            Arc::new(Mutex::new(Port61::new(pit.clone()))),
        )
        .unwrap();
        timers.add(pit_timer, pit);

        let rtc_timer = TimerHandle::new();
        let rtc = Arc::new(Mutex::new(Rtc::new(
            clock.clone(),
            PicIrqLine::shared(&pic, RTC_IRQ),
            rtc_timer.clone(),
            fixed_wall_clock(0),
        )));
        bus.insert(u64::from(RTC_PORT), RTC_PORT_LEN, rtc.clone())
            .unwrap();
        timers.add(rtc_timer, rtc);
        Pc {
            clock,
            bus,
            timers,
            intr,
            pic,
        }
    }

    fn outb(&self, port: u16, v: u8) {
        assert!(self.bus.write(u64::from(port), &[v]));
    }
    fn inb(&self, port: u16) -> u8 {
        let mut b = [0];
        self.bus.read(u64::from(port), &mut b);
        b[0]
    }
    /// Run until the next timer deadline and fire it.
    fn run_to_next_deadline(&self) {
        let d = self.timers.next_deadline();
        assert_ne!(d, u64::MAX, "a timer is armed");
        self.clock.skip_to(d);
        self.timers.fire_expired(self.clock.now_ns());
    }
    fn inta(&self) -> Option<u8> {
        self.pic.lock().unwrap().acknowledge()
    }
}

#[test]
fn seabios_timer_setup_delivers_irq0_and_irq8() {
    let pc = Pc::new();
    // PIC: ICW1 0x11, vectors 0x08/0x70, cascade 4/2, 8086 mode; mask all but IRQ0 and IRQ2.
    for (port, v) in [
        (0x20, 0x11),
        (0x21, 0x08),
        (0x21, 0x04),
        (0x21, 0x01),
        (0xA0, 0x11),
        (0xA1, 0x70),
        (0xA1, 0x02),
        (0xA1, 0x01),
        (0x21, 0xFA),
        (0xA1, 0xFF),
    ] {
        pc.outb(port, v);
    }
    // TSC calibration: gate 2 on, ch2 mode 0 count 0x800, spin on 0x61 bit 5.
    let orig = pc.inb(0x61);
    pc.outb(0x61, (orig & !2) | 1);
    pc.outb(0x43, 0xB0);
    pc.outb(0x42, 0x00);
    pc.outb(0x42, 0x08);
    let mut polls = 0u64;
    while pc.inb(0x61) & 0x20 == 0 {
        pc.clock.add_instructions(1000);
        polls += 1;
        assert!(polls < 10_000, "OUT2 never rose");
    }
    assert_eq!(
        polls, 1717,
        "0x800 PIT clocks = 1716.4 µs, seen at the 1717th 1-µs poll"
    );

    // pit_setup: channel 0 mode 2, count 0 → IRQ0 every 54.9 ms.
    pc.outb(0x43, 0x34);
    pc.outb(0x40, 0);
    pc.outb(0x40, 0);
    for _ in 0..3 {
        assert!(!pc.intr.asserted());
        pc.run_to_next_deadline();
        assert!(pc.intr.asserted());
        assert_eq!(pc.inta(), Some(0x08));
        pc.outb(0x20, 0x20);
    }

    // RTC periodic interrupt through the cascade: unmask IRQ8, set PIE.
    pc.outb(0xA1, 0xFE);
    pc.outb(0x70, 0x0B);
    let b = pc.inb(0x71);
    pc.outb(0x70, 0x0B);
    pc.outb(0x71, b | 0x40);
    // PF has been counting since power-on (RS = 6), so enabling PIE interrupts at once.
    assert!(pc.intr.asserted());
    assert_eq!(pc.inta(), Some(0x70));
    pc.outb(0x70, 0x0C);
    assert_eq!(pc.inb(0x71) & 0xC0, 0xC0);
    pc.outb(0xA0, 0x20);
    pc.outb(0x20, 0x20);
    assert!(!pc.intr.asserted());
    // The next one comes from the RTC's own deadline, within 1/1024 s.
    let before = pc.clock.now_ns();
    pc.run_to_next_deadline();
    assert!(pc.clock.now_ns() - before <= 976_563);
    assert!(pc.intr.asserted());
    assert_eq!(pc.inta(), Some(0x70));
    pc.outb(0x70, 0x0C);
    assert_eq!(pc.inb(0x71) & 0xC0, 0xC0);
    pc.outb(0xA0, 0x20);
    pc.outb(0x20, 0x20);
    assert!(!pc.intr.asserted());
}
