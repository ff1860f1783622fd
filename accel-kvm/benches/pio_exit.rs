//! Port-I/O exit round trip under KVM: a real-mode guest loops on `OUT` to a device on the
//! board's port bus, so each iteration is one KVM_RUN exit, one bus dispatch and one re-entry.
//! Reports exits per second (`Throughput::Elements`), in both irqchip modes.
//!
//! Skips (with a printed reason) where /dev/kvm is not usable.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iced_x86::code_asm::*;
use pcvm_accel_kvm::{kvm_usable, IrqchipMode, KvmBackend, KvmOptions};
use pcvm_core::{
    Board, BusAccess, BusDevice, ClockMode, CpuBackend, CpuState, GuestMemory, RunLimit, SegReg,
    Segment, SystemRequests, VirtualClock, VmExit,
};

const CODE: u64 = 0x8000;

/// Counts writes to port 0xE0; a write to 0xE8 asks for power-off.
struct Sink {
    writes: u64,
    requests: SystemRequests,
}

impl BusDevice for Sink {
    fn name(&self) -> &str {
        "sink"
    }
    fn read(&mut self, _access: BusAccess, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, access: BusAccess, _data: &[u8]) {
        if access.addr == 0xE8 {
            self.requests.request_power_off(0);
        } else {
            self.writes += 1;
        }
    }
}

fn guest() -> Vec<u8> {
    let mut a = CodeAssembler::new(16).expect("asm");
    let mut top = a.create_label();
    (|| -> Result<(), IcedError> {
        a.set_label(&mut top)?;
        a.out(0xE0, al)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.out(0xE8, al)?;
        a.hlt()
    })()
    .expect("assemble");
    a.assemble(CODE).expect("encode")
}

fn bench(c: &mut Criterion) {
    if let Err(e) = kvm_usable() {
        eprintln!("skipped: KVM is not usable on this host: {e}");
        return;
    }
    let mut group = c.benchmark_group("kvm_pio_exit");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for mode in [IrqchipMode::Userspace, IrqchipMode::Kernel] {
        let memory = Arc::new(GuestMemory::pc(4 << 20).expect("memory"));
        let mut board = Board::new(memory.clone(), VirtualClock::new(ClockMode::Host));
        let sink = Arc::new(Mutex::new(Sink {
            writes: 0,
            requests: board.requests.clone(),
        }));
        board.pio.insert(0xE0, 16, sink.clone()).expect("pio");
        memory.write_phys(CODE, &guest()).expect("load");
        let mut cpu = KvmBackend::new(
            &memory,
            KvmOptions {
                irqchip: mode,
                ..Default::default()
            },
        )
        .expect("KVM backend");
        group.bench_function(format!("{mode:?}"), |b| {
            b.iter_custom(|iters| {
                let mut s = CpuState::reset();
                *s.seg_mut(SegReg::Cs) = Segment::real_mode(0);
                s.seg_mut(SegReg::Cs).attributes = 0x9B;
                s.rip = CODE;
                s.gpr[1] = iters.max(1);
                cpu.set_state(&s).expect("set_state");
                board.requests.take();
                let start = Instant::now();
                let exit = cpu.run(&mut board, RunLimit::Unbounded).expect("run");
                let elapsed = start.elapsed();
                assert_eq!(exit, VmExit::PowerOff);
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
