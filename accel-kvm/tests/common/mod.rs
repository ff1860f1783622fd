//! Shared helpers for the KVM tests: a KVM check that skips loudly, a small board with a test
//! device on the port-I/O and MMIO buses, the 8259 pair and the 8254, and `code_asm` helpers.
//!
//! kvm-pvm (this project's development hosts) runs guests about 1000x slower than hardware
//! KVM, so every guest here is a few hundred instructions at most.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iced_x86::code_asm::{CodeAssembler, IcedError};
use pcvm_accel_kvm::{kvm_usable, IrqchipMode, KvmBackend, KvmOptions};
use pcvm_core::cpu_state::cr;
use pcvm_core::{
    Board, BusAccess, BusDevice, ClockMode, CpuBackend, CpuState, DescriptorTable, GuestMemory,
    IrqLine, RunLimit, SegReg, Segment, SystemRequests, TimerHandle, VirtualClock, VmExit,
};
use pcvm_devices::lapic::{LocalApic, LocalApicFront, LAPIC_BASE, LAPIC_SIZE};
use pcvm_devices::{Pic8259Pair, PicIrqLine, Pit8254};

/// Whether KVM can be used; prints why not (an environment fact: the test then skips).
pub fn kvm_available() -> bool {
    match kvm_usable() {
        Ok(info) => {
            if let Some(w) = info.warning() {
                eprintln!("{w}");
            }
            true
        }
        Err(e) => {
            eprintln!("skipped: KVM is not usable on this host: {e}");
            false
        }
    }
}

/// Return from the test early, with a printed reason, when KVM is not usable.
#[macro_export]
macro_rules! require_kvm {
    () => {
        if !common::kvm_available() {
            return;
        }
    };
}

/// Test device ports: data at 0xE0..0xE3, IRQ pulse at 0xE4, power-off at 0xE8.
pub const TEST_PORT: u16 = 0xE0;
pub const TEST_IRQ_PORT: u16 = 0xE4;
pub const TEST_EXIT_PORT: u16 = 0xE8;
/// Test MMIO device: 4 KiB of registers in the PCI hole.
pub const TEST_MMIO: u64 = 0xFEB0_0000;
/// Size of the BIOS-like ROM the board maps at the top of 4 GiB.
pub const ROM_SIZE: usize = 64 << 10;

/// What the test device saw.
#[derive(Default)]
pub struct DeviceLog {
    /// (port or address, bytes) of every write, in order.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// Number of reads.
    pub reads: u32,
}

/// A port-I/O and MMIO device that logs writes, answers reads with a counter pattern, pulses
/// an interrupt line and asks for power-off.
pub struct TestDevice {
    pub log: Arc<Mutex<DeviceLog>>,
    pub irq: Arc<Mutex<Option<Arc<dyn IrqLine>>>>,
    pub requests: SystemRequests,
    pub regs: Vec<u8>,
}

impl BusDevice for TestDevice {
    fn name(&self) -> &str {
        "kvm-test"
    }
    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        let mut log = self.log.lock().unwrap();
        log.reads += 1;
        if access.addr >= TEST_MMIO {
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.regs[access.offset as usize + i];
            }
        } else {
            for (i, b) in data.iter_mut().enumerate() {
                *b = 0x40 + access.offset as u8 + i as u8;
            }
        }
    }
    fn write(&mut self, access: BusAccess, data: &[u8]) {
        self.log
            .lock()
            .unwrap()
            .writes
            .push((access.addr, data.to_vec()));
        if access.addr >= TEST_MMIO {
            for (i, b) in data.iter().enumerate() {
                self.regs[access.offset as usize + i] = *b;
            }
        } else if access.addr == u64::from(TEST_IRQ_PORT) {
            if let Some(irq) = self.irq.lock().unwrap().as_ref() {
                irq.pulse();
            }
        } else if access.addr == u64::from(TEST_EXIT_PORT) {
            self.requests.request_power_off(i32::from(data[0]));
        }
    }
}

/// A 4 MiB board with the test device, the PIC pair (IRQ0 from an 8254) and a 64 KiB ROM at
/// the top of 4 GiB filled with 0xF4 (HLT) and a marker at its start.
pub struct TestBoard {
    pub board: Board,
    pub log: Arc<Mutex<DeviceLog>>,
    pub test_irq: Arc<Mutex<Option<Arc<dyn IrqLine>>>>,
    pub pic: Arc<Mutex<Pic8259Pair>>,
}

impl TestBoard {
    /// The board with the 8259 pair as its interrupt controller.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// The board with a local APIC in front of the CPU (the xAPIC page at 0xFEE00000, its
    /// timer on the virtual clock) and the 8259 pair behind its LINT0, as the pcvm machine
    /// wires them.
    pub fn with_lapic() -> Self {
        Self::build(true)
    }

    fn build(lapic: bool) -> Self {
        let mut memory = GuestMemory::pc(4 << 20).expect("memory");
        let mut rom = vec![0xF4u8; ROM_SIZE];
        rom[..4].copy_from_slice(&[0xDE, 0xC0, 0xAD, 0x0B]);
        memory.map_bios(rom).expect("rom");
        let clock = VirtualClock::new(ClockMode::Host);
        let mut board = Board::new(Arc::new(memory), clock.clone());
        let log = Arc::new(Mutex::new(DeviceLog::default()));
        let test_irq: Arc<Mutex<Option<Arc<dyn IrqLine>>>> = Arc::default();
        let dev = Arc::new(Mutex::new(TestDevice {
            log: log.clone(),
            irq: test_irq.clone(),
            requests: board.requests.clone(),
            regs: vec![0; 0x1000],
        }));
        board
            .pio
            .insert(u64::from(TEST_PORT), 16, dev.clone())
            .expect("pio");
        board.mmio.insert(TEST_MMIO, 0x1000, dev).expect("mmio");
        let pic_intr = if lapic {
            board.intr.input(1)
        } else {
            board.intr.clone()
        };
        let pic = Arc::new(Mutex::new(Pic8259Pair::new(pic_intr)));
        for (base, len) in [(0x20, 2), (0xA0, 2), (0x4D0, 2)] {
            board.pio.insert(base, len, pic.clone()).expect("pic");
        }
        if lapic {
            let timer = TimerHandle::new();
            let apic = Arc::new(Mutex::new(LocalApic::new(
                &board.intr,
                clock.clone(),
                timer.clone(),
            )));
            board
                .mmio
                .insert(LAPIC_BASE, LAPIC_SIZE, apic.clone())
                .expect("lapic");
            board.timers.add(timer, apic.clone());
            board.interrupt_controller = Some(Arc::new(Mutex::new(LocalApicFront::new(
                apic,
                pic.clone(),
                &board.intr,
            ))));
        } else {
            board.interrupt_controller = Some(pic.clone());
        }
        let pit_timer = TimerHandle::new();
        let pit = Arc::new(Mutex::new(Pit8254::new(
            clock,
            PicIrqLine::shared(&pic, 0),
            pit_timer.clone(),
        )));
        board.pio.insert(0x40, 4, pit.clone()).expect("pit");
        board.timers.add(pit_timer, pit);
        TestBoard {
            board,
            log,
            test_irq,
            pic,
        }
    }

    /// A KVM vCPU for this board; the test device's interrupt goes to IRQ5 of the PIC the
    /// irqchip mode uses (ours, or KVM's through `KVM_IRQ_LINE`).
    pub fn kvm(&self, irqchip: IrqchipMode) -> KvmBackend {
        self.kvm_with(KvmOptions {
            irqchip,
            ..Default::default()
        })
    }

    /// [`Self::kvm`] with explicit options.
    pub fn kvm_with(&self, options: KvmOptions) -> KvmBackend {
        let irqchip = options.irqchip;
        let cpu = KvmBackend::new(&self.board.memory, options).expect("KVM backend");
        let line = match irqchip {
            IrqchipMode::Userspace => PicIrqLine::shared(&self.pic, 5),
            IrqchipMode::Kernel => cpu.irq_line(5).expect("kernel irq line"),
        };
        *self.test_irq.lock().unwrap() = Some(line);
        cpu
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) {
        self.board.memory.write_phys(addr, bytes).expect("write");
    }
    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        self.board.memory.read_phys(addr, &mut b).expect("read");
        b
    }
    pub fn read_u16(&self, addr: u64) -> u16 {
        u16::from_le_bytes(self.read(addr, 2).try_into().unwrap())
    }
    pub fn read_u32(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.read(addr, 4).try_into().unwrap())
    }
    /// Port writes the test device logged at `port`.
    pub fn writes_to(&self, port: u64) -> Vec<Vec<u8>> {
        self.log
            .lock()
            .unwrap()
            .writes
            .iter()
            .filter(|(a, _)| *a == port)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

impl Default for TestBoard {
    fn default() -> Self {
        Self::new()
    }
}

/// Run like a machine loop: on Halted, sleep briefly and run again (timers fire at the next
/// `run`), until another exit or `timeout`.
pub fn run_until(cpu: &mut dyn CpuBackend, board: &mut Board, timeout: Duration) -> VmExit {
    let start = Instant::now();
    loop {
        let exit = cpu.run(board, RunLimit::Unbounded).expect("run");
        if exit != VmExit::Halted {
            return exit;
        }
        assert!(
            start.elapsed() < timeout,
            "guest stayed halted for {timeout:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Assemble with `code_asm` at `base`.
pub fn asm(
    bitness: u32,
    base: u64,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Vec<u8> {
    let mut a = CodeAssembler::new(bitness).expect("bitness");
    f(&mut a).expect("assemble");
    a.assemble(base).expect("encode")
}

/// Real mode with CS:IP = 0000:`ip`, SS:SP = 0000:7000.
pub fn real_state(ip: u64) -> CpuState {
    let mut s = CpuState::reset();
    *s.seg_mut(SegReg::Cs) = Segment {
        selector: 0,
        base: 0,
        limit: 0xFFFF,
        attributes: 0x9B,
    };
    s.rip = ip;
    s.gpr[4] = 0x7000;
    s
}

/// A segment descriptor (base, limit in bytes, access byte, flags nibble G/DB/L/AVL).
pub fn seg_desc(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let (limit, flags) = if limit > 0xF_FFFF {
        (limit >> 12, flags | 0x8)
    } else {
        (limit, flags)
    };
    u64::from(limit & 0xFFFF)
        | (u64::from(base & 0xFF_FFFF) << 16)
        | (u64::from(access) << 40)
        | (u64::from((limit >> 16) & 0xF) << 48)
        | (u64::from(flags & 0xF) << 52)
        | (u64::from(base >> 24) << 56)
}

/// GDT at 0x1000: null, flat 32-bit code (0x08), flat data (0x10), a 32-bit TSS (0x18) at
/// 0x3000.
pub const GDT: u64 = 0x1000;
pub const TSS: u64 = 0x3000;

/// Write the GDT and TSS for [`pm32_state`].
pub fn pm32_tables(tb: &TestBoard) {
    let descs = [
        0,
        seg_desc(0, 0xFFFF_FFFF, 0x9B, 0xC),
        seg_desc(0, 0xFFFF_FFFF, 0x93, 0xC),
        seg_desc(TSS as u32, 0x67, 0x8B, 0),
    ];
    for (i, d) in descs.iter().enumerate() {
        tb.write(GDT + 8 * i as u64, &d.to_le_bytes());
    }
    tb.write(TSS, &[0; 0x68]);
}

/// 32-bit protected mode, CPL 0, flat segments as loaded from [`pm32_tables`], EIP = `eip`.
pub fn pm32_state(eip: u64) -> CpuState {
    let mut s = CpuState::reset();
    s.cr0 = cr::CR0_PE | cr::CR0_ET | cr::CR0_NE;
    s.gdtr = DescriptorTable {
        base: GDT,
        limit: 4 * 8 - 1,
    };
    s.idtr = DescriptorTable { base: 0, limit: 0 };
    let flat = |selector: u16, ty: u32| Segment {
        selector,
        base: 0,
        limit: 0xFFFF_FFFF,
        attributes: ty | Segment::ATTR_S | Segment::ATTR_P | Segment::ATTR_DB | Segment::ATTR_G,
    };
    *s.seg_mut(SegReg::Cs) = flat(0x08, 0xB);
    for r in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
        *s.seg_mut(r) = flat(0x10, 0x3);
    }
    s.tr = Segment {
        selector: 0x18,
        base: TSS,
        limit: 0x67,
        attributes: 0x8B,
    };
    s.ldtr = Segment {
        selector: 0,
        base: 0,
        limit: 0,
        attributes: Segment::ATTR_UNUSABLE,
    };
    s.rip = eip;
    s.gpr[4] = 0x7000;
    s.rflags = 0x2;
    s
}

/// Both irqchip modes, for tests parameterized over them.
pub const IRQCHIP_MODES: [IrqchipMode; 2] = [IrqchipMode::Userspace, IrqchipMode::Kernel];
