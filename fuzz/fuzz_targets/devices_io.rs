//! A byte script of port accesses against the PC chips on a board's port-I/O bus: whatever
//! a guest writes or reads, at whatever width, no device may panic and DMA (fw_cfg, IDE
//! bus master) stays inside guest memory.
//!
//! Script: 7-byte operations `[op, a, b, v0, v1, v2, v3]`.
//! - `op` bits 0–1: width (1, 2, 4, 1 bytes); bit 2: read (else write); bit 3: advance the
//!   virtual clock by `a * 1000` ns and fire expired timers; bit 4: acknowledge an interrupt;
//!   bits 5–7: where — 0–5 a port from [`PORTS`] (`a` picks it, `b & 3` adds an offset),
//!   6 a raw port `a | b << 8`, 7 a RAM poke of `v` at `(a | b << 8) << 5` (so DMA
//!   descriptors and PRD tables can be planted).
#![no_main]

use std::io::sink;
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use pcvm_core::{
    Board, ClockMode, GuestMemory, InterruptController, SharedDevice, TimerHandle, VirtualClock,
};
use pcvm_devices::fw_cfg::{FW_CFG_DMA_PORT, FW_CFG_DMA_PORT_LEN, FW_CFG_PORT, FW_CFG_PORT_LEN};
use pcvm_devices::ide::{Drive, IdeController, MemBackend};
use pcvm_devices::mc146818::fixed_wall_clock;
use pcvm_devices::pci::i440fx::I440fx;
use pcvm_devices::pci::piix::{Piix3Ide, Piix3IsaBridge};
use pcvm_devices::pci::{PciBus, PciConfigPorts, PciIoWindow};
use pcvm_devices::{
    FastA20Port, FwCfg, Pic8259Pair, PicIrqLine, Pit8254, Port61, PostCodePort, ResetControl, Rtc,
    Uart16550, I8042,
};

const RAM: u64 = 2 << 20;

/// Ports worth hitting, several times over so the fuzzer finds them with one byte.
const PORTS: &[u16] = &[
    0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, // 8259 pair, ELCR
    0x40, 0x41, 0x42, 0x43, 0x61, // 8254, port 61h
    0x70, 0x71, // RTC/CMOS
    0x3F8, 0x3F9, 0x3FA, 0x3FB, 0x3FC, 0x3FD, 0x3FE, 0x3FF, // COM1
    0x60, 0x64, 0x92, 0x80, // i8042, fast A20, POST
    0x510, 0x511, 0x514, 0x518, // fw_cfg selector/data, DMA address high/low
    0xCF8, 0xCF9, 0xCFC, 0xCFD, 0xCFE, 0xCFF, // PCI configuration mechanism #1
    0x1F0, 0x1F1, 0x1F2, 0x1F3, 0x1F4, 0x1F5, 0x1F6, 0x1F7, 0x3F6, // IDE primary
    0x170, 0x171, 0x172, 0x173, 0x174, 0x175, 0x176, 0x177, 0x376, // IDE secondary
    0xC000, 0xC004, 0xC008, 0xC00C, 0xC040, 0xC100, // PCI I/O window (BMDMA BAR lands here)
];

fn add(board: &mut Board, ranges: &[(u16, u64)], dev: SharedDevice) {
    for &(base, len) in ranges {
        board
            .pio
            .insert(u64::from(base), len, dev.clone())
            .expect("fuzz harness port map");
    }
}

fn board() -> (Board, Arc<Mutex<Pic8259Pair>>) {
    let memory = Arc::new(GuestMemory::pc(RAM).expect("2 MiB PC memory"));
    let clock = VirtualClock::new(ClockMode::InstructionCount {
        ns_per_instruction: 1,
    });
    let mut board = Board::new(memory.clone(), clock.clone());
    let pic = Arc::new(Mutex::new(Pic8259Pair::new(board.intr.input(0))));
    add(&mut board, &[(0x20, 2), (0xA0, 2), (0x4D0, 2)], pic.clone());
    let irq = |n: u8| PicIrqLine::shared(&pic, n);

    let pit_timer = TimerHandle::new();
    let pit = Arc::new(Mutex::new(Pit8254::new(
        clock.clone(),
        irq(0),
        pit_timer.clone(),
    )));
    add(&mut board, &[(0x40, 4)], pit.clone());
    add(
        &mut board,
        &[(0x61, 1)],
        Arc::new(Mutex::new(Port61::new(pit.clone()))),
    );
    board.timers.add(pit_timer, pit);

    let rtc_timer = TimerHandle::new();
    let rtc = Arc::new(Mutex::new(Rtc::new(
        clock.clone(),
        irq(8),
        rtc_timer.clone(),
        fixed_wall_clock(1_700_000_000),
    )));
    add(&mut board, &[(0x70, 2)], rtc.clone());
    board.timers.add(rtc_timer, rtc);

    let mut uart = Uart16550::new(irq(4), Box::new(sink()));
    uart.enqueue_input(b"fuzz input on COM1");
    add(&mut board, &[(0x3F8, 8)], Arc::new(Mutex::new(uart)));

    let kbc = I8042::new(irq(1), irq(12), memory.clone(), board.requests.clone());
    add(
        &mut board,
        &[(0x60, 1), (0x64, 1)],
        Arc::new(Mutex::new(kbc)),
    );
    let a20 = FastA20Port::new(memory.clone(), board.requests.clone());
    add(&mut board, &[(0x92, 1)], Arc::new(Mutex::new(a20)));
    add(
        &mut board,
        &[(0x80, 1)],
        Arc::new(Mutex::new(PostCodePort::new())),
    );

    let mut fw = FwCfg::new(memory.clone());
    fw.add_file("etc/fuzz", (0..=255u8).cycle().take(700).collect())
        .expect("fw_cfg file");
    fw.set_item(0x05, 1u16.to_le_bytes().to_vec())
        .expect("fw_cfg item");
    add(
        &mut board,
        &[
            (FW_CFG_PORT, FW_CFG_PORT_LEN),
            (FW_CFG_DMA_PORT, FW_CFG_DMA_PORT_LEN),
        ],
        Arc::new(Mutex::new(fw)),
    );

    let mut ide = IdeController::new(irq(14), irq(15));
    let disk: Vec<u8> = (0..64 * 512).map(|i| (i * 7 / 3) as u8).collect();
    ide.attach(0, 0, Drive::disk(MemBackend::new(disk)))
        .expect("attach disk");
    let iso: Vec<u8> = (0..16 * 2048).map(|i| (i / 2048) as u8).collect();
    ide.attach(1, 0, Drive::cdrom(MemBackend::read_only(iso)))
        .expect("attach CD");
    ide.set_dma_memory(memory.clone());
    let ide = Arc::new(Mutex::new(ide));
    for (base, len) in IdeController::PORT_RANGES {
        board
            .pio
            .insert(u64::from(base), len, ide.clone())
            .expect("IDE ports");
    }

    let pci = Arc::new(Mutex::new(PciBus::new()));
    {
        let mut bus = pci.lock().expect("PCI bus");
        bus.add(0, 0, Arc::new(Mutex::new(I440fx::new(memory.clone()))))
            .expect("i440FX");
        let (dev, func) = Piix3IsaBridge::SLOT;
        bus.add(dev, func, Arc::new(Mutex::new(Piix3IsaBridge::new())))
            .expect("PIIX3");
        let (dev, func) = Piix3Ide::SLOT;
        bus.add(
            dev,
            func,
            Arc::new(Mutex::new(Piix3Ide::with_controller(ide))),
        )
        .expect("PIIX3 IDE");
    }
    let reset = Arc::new(Mutex::new(ResetControl::new(board.requests.clone())));
    add(
        &mut board,
        &[(PciConfigPorts::BASE, PciConfigPorts::LEN)],
        Arc::new(Mutex::new(PciConfigPorts::new(pci.clone(), Some(reset)))),
    );
    add(
        &mut board,
        &[(
            PciIoWindow::SEABIOS_BASE,
            0x1_0000 - u64::from(PciIoWindow::SEABIOS_BASE),
        )],
        Arc::new(Mutex::new(PciIoWindow::new(pci))),
    );
    board.interrupt_controller = Some(pic.clone());
    (board, pic)
}

fuzz_target!(|data: &[u8]| {
    let (board, pic) = board();
    for op in data.chunks_exact(7) {
        let (kind, a, b) = (op[0], op[1], op[2]);
        let width = [1usize, 2, 4, 1][usize::from(kind & 3)];
        let value = [op[3], op[4], op[5], op[6]];
        let place = kind >> 5;
        if place == 7 {
            let addr = u64::from(u16::from(a) | u16::from(b) << 8) << 5;
            // Holes (VGA window, ROM) refuse the poke; that is fine.
            let _ = board.memory.write_phys(addr, &value);
        } else {
            let port = if place == 6 {
                u16::from(a) | u16::from(b) << 8
            } else {
                PORTS[usize::from(a) % PORTS.len()].wrapping_add(u16::from(b & 3))
            };
            let addr = u64::from(port);
            if kind & 4 != 0 {
                let mut buf = [0u8; 4];
                let hit = board.pio.read(addr, &mut buf[..width]);
                if !hit {
                    assert!(
                        buf[..width].iter().all(|&x| x == 0xFF),
                        "unmapped port {port:#x} read {:x?}",
                        &buf[..width]
                    );
                }
            } else {
                board.pio.write(addr, &value[..width]);
            }
        }
        if kind & 8 != 0 {
            board.clock.add_instructions(u64::from(a) * 1000);
            board.timers.fire_expired(board.clock.now_ns());
        }
        if kind & 16 != 0 {
            let _vector = pic.lock().expect("PIC lock").acknowledge();
        }
    }
    // Reset must bring every chip back whatever state the script left it in.
    board.pio.reset_all();
    let mut status = [0u8; 1];
    board.pio.read(0x1F7, &mut status);
});
