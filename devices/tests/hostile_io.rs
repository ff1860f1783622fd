//! Random register programming of every core chip: whatever a guest writes, at whatever
//! width or offset, no device may panic, and DMA stays inside guest memory.

use std::io::sink;
use std::sync::{Arc, Mutex};

use pcvm_core::irq::NoIrq;
use pcvm_core::{
    BusAccess, BusDevice, ClockMode, GuestMemory, InterruptController, IntrPin, SystemRequests,
    TimerDevice, TimerHandle, VirtualClock,
};
use pcvm_devices::mc146818::fixed_wall_clock;
use pcvm_devices::{
    DebugCon, DebugExit, FastA20Port, FwCfg, Pic8259Pair, Pit8254, Port61, PostCodePort,
    ResetControl, Rtc, Uart16550, I8042,
};

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn hammer(dev: &mut dyn BusDevice, ports: &[u64], clock: &VirtualClock, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        let r = rng.next();
        let addr = ports[(r % ports.len() as u64) as usize] + (r >> 8) % 3;
        let offset = (r >> 16) % 12;
        let len = [1usize, 1, 1, 2, 4, 8][((r >> 24) % 6) as usize];
        let access = BusAccess { offset, addr };
        let mut data = (rng.next()).to_le_bytes();
        if r >> 40 & 1 == 0 {
            dev.write(access, &data[..len]);
        } else {
            dev.read(access, &mut data[..len]);
        }
        clock.add_instructions((r >> 48) % 5000);
    }
}

#[test]
fn random_programming_never_panics() {
    let clock = VirtualClock::new(ClockMode::InstructionCount {
        ns_per_instruction: 1,
    });
    let mem = Arc::new(GuestMemory::pc(4 << 20).unwrap());
    let req = SystemRequests::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let n = 20_000;

    let mut pic = Pic8259Pair::new(IntrPin::new());
    hammer(&mut pic, &[0x20, 0xA0, 0x4D0], &clock, &mut rng, n);
    for irq in 0..=255u8 {
        pic.set_irq(irq, irq & 1 == 0);
        pic.acknowledge();
    }

    let timer = TimerHandle::new();
    let pit = Arc::new(Mutex::new(Pit8254::new(
        clock.clone(),
        Arc::new(NoIrq),
        timer.clone(),
    )));
    hammer(&mut *pit.lock().unwrap(), &[0x40], &clock, &mut rng, n);
    let mut p61 = Port61::new(pit.clone());
    hammer(&mut p61, &[0x61], &clock, &mut rng, 1000);
    for _ in 0..100 {
        clock.skip_to(timer.deadline().min(clock.now_ns() + 1_000_000));
        pit.lock().unwrap().on_timer(clock.now_ns());
    }

    let rtc_timer = TimerHandle::new();
    let mut rtc = Rtc::new(
        clock.clone(),
        Arc::new(NoIrq),
        rtc_timer.clone(),
        fixed_wall_clock(i64::MAX),
    );
    hammer(&mut rtc, &[0x70], &clock, &mut rng, n);
    rtc.on_timer(clock.now_ns());

    let mut uart = Uart16550::new(Arc::new(NoIrq), Box::new(sink()));
    uart.enqueue_input(&[0x55; 200]);
    hammer(&mut uart, &[0x3F8], &clock, &mut rng, n);

    let mut kbc = I8042::new(Arc::new(NoIrq), Arc::new(NoIrq), mem.clone(), req.clone());
    hammer(&mut kbc, &[0x60, 0x64], &clock, &mut rng, n);
    for c in 0..=255u8 {
        kbc.key_input(c);
        kbc.key_event(u16::from(c) << 8 | u16::from(c), c & 1 == 0);
    }

    let mut fw = FwCfg::new(mem.clone());
    fw.add_file("etc/test", vec![0xAB; 300]).unwrap();
    // Point some DMA descriptors into RAM with random contents, others anywhere.
    for _ in 0..2000 {
        let desc = rng.next() % (5 << 20);
        let bytes = rng.next().to_be_bytes();
        let _ = mem.write_phys(desc, &bytes);
        let word = (desc as u32).swap_bytes().to_le_bytes();
        fw.write(
            BusAccess {
                offset: 4,
                addr: 0x518,
            },
            &word,
        );
    }
    hammer(&mut fw, &[0x510, 0x514], &clock, &mut rng, n);

    let mut a20 = FastA20Port::new(mem.clone(), req.clone());
    hammer(&mut a20, &[0x92], &clock, &mut rng, 1000);
    let mut post = PostCodePort::new();
    hammer(&mut post, &[0x80], &clock, &mut rng, 1000);
    let mut dbg = DebugCon::new(Box::new(sink()));
    hammer(&mut dbg, &[0x402], &clock, &mut rng, 1000);
    let mut exit = DebugExit::new(req.clone());
    hammer(&mut exit, &[0xF4], &clock, &mut rng, 1000);
    let mut rc = ResetControl::new(req.clone());
    hammer(&mut rc, &[0xCF9], &clock, &mut rng, 1000);
    for d in [
        &mut pic as &mut dyn BusDevice,
        &mut rtc,
        &mut uart,
        &mut kbc,
        &mut fw,
        &mut a20,
        &mut rc,
    ] {
        d.reset();
    }
}
