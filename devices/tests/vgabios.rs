//! The real SeaBIOS VGA BIOS (`vgabios-stdvga.bin` from Debian's seabios package) on our
//! stdvga, run by the reference interpreter: its POST finds the card through PCI config space
//! and the VBE ports, sets mode 3 (register tables, font load into plane 2, screen clear), and
//! INT 10h teletype output must then be readable through `Vga::text_screen`.
//!
//! The image is looked up in `$PCVM_VGABIOS`, then in `$PCVM_FIXTURES` or `target/fixtures`
//! (filled by `scripts/fetch-fixtures`); without it the test says so and is skipped, or
//! fails when `PCVM_REQUIRE_FIXTURES=1` (as CI sets).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pcvm_core::memory::pam;
use pcvm_core::{
    Board, ClockMode, CpuBackend, CpuState, GuestMemory, RunLimit, SegReg, SharedDevice,
    VirtualClock, VmExit,
};
use pcvm_cpu_interp::Interpreter;
use pcvm_devices::pci::{PciBus, PciConfigPorts, PciMmioWindow};
use pcvm_devices::vga::{Vga, WINDOW_BASE, WINDOW_LEN};

fn vgabios() -> Option<Vec<u8>> {
    let path = std::env::var_os("PCVM_VGABIOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("PCVM_FIXTURES")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures")
                })
                .join("seabios/usr/share/seabios/vgabios-stdvga.bin")
        });
    std::fs::read(&path).ok()
}

/// Real-mode code at 0x7C00: call the option ROM's init vector with AX = the VGA's PCI
/// address (as SeaBIOS's callrom does), set mode 3 again, print "Hi" with teletype, halt.
const STUB: &[u8] = &[
    0xB8, 0x10, 0x00, // mov ax, 0x0010 (00:02.0)
    0x9A, 0x03, 0x00, 0x00, 0xC0, // call far C000:0003
    0xB8, 0x03, 0x00, // mov ax, 0x0003
    0xCD, 0x10, // int 10h
    0xB8, 0x48, 0x0E, // mov ax, 0x0E48 ('H')
    0xBB, 0x07, 0x00, // mov bx, 0x0007
    0xCD, 0x10, // int 10h
    0xB8, 0x69, 0x0E, // mov ax, 0x0E69 ('i')
    0xCD, 0x10, // int 10h
    0xB8, 0x0D, 0x0E, // mov ax, 0x0E0D (CR)
    0xCD, 0x10, // int 10h
    0xB8, 0x0A, 0x0E, // mov ax, 0x0E0A (LF)
    0xCD, 0x10, // int 10h
    0xB8, 0x21, 0x0E, // mov ax, 0x0E21 ('!')
    0xCD, 0x10, // int 10h
    0xFA, // cli
    0xF4, // hlt
];

#[test]
fn seabios_vgabios_sets_mode_3_and_prints() {
    let Some(rom) = vgabios() else {
        assert!(
            std::env::var("PCVM_REQUIRE_FIXTURES").as_deref() != Ok("1"),
            "fixture missing: vgabios-stdvga.bin (run scripts/fetch-fixtures) and PCVM_REQUIRE_FIXTURES=1"
        );
        eprintln!("skipped: fixture missing: vgabios-stdvga.bin (run scripts/fetch-fixtures)");
        return;
    };
    let memory = Arc::new(GuestMemory::pc(16 << 20).unwrap());
    // The option ROM area as shadow RAM, as SeaBIOS leaves it when it runs option ROMs.
    for area in 0..13 {
        memory.set_pam(area, pam::READ_WRITE);
    }
    memory.write_phys(0xC0000, &rom).unwrap();
    memory.write_phys(0x7C00, STUB).unwrap();

    let vga = Arc::new(Mutex::new(Vga::new()));
    let pci = Arc::new(Mutex::new(PciBus::new()));
    pci.lock().unwrap().add(2, 0, vga.clone()).unwrap();
    let clock = VirtualClock::new(ClockMode::InstructionCount {
        ns_per_instruction: 1,
    });
    let mut board = Board::new(memory.clone(), clock);
    let ports: SharedDevice = Arc::new(Mutex::new(PciConfigPorts::new(pci.clone(), None)));
    board.pio.insert(0xCF8, PciConfigPorts::LEN, ports).unwrap();
    for (base, len) in Vga::PORT_RANGES {
        board.pio.insert(u64::from(base), len, vga.clone()).unwrap();
    }
    board
        .mmio
        .insert(WINDOW_BASE, WINDOW_LEN, vga.clone())
        .unwrap();
    let window: SharedDevice = Arc::new(Mutex::new(PciMmioWindow::new(pci.clone())));
    board
        .mmio
        .insert(16 << 20, 0xFEC0_0000 - (16 << 20), window)
        .unwrap();
    // SeaBIOS would have placed BAR0 and enabled decoding before running the ROM.
    {
        let mut v = vga.lock().unwrap();
        let c = pcvm_devices::pci::PciDevice::config_mut(&mut *v);
        c.write(0x10, &0xFD00_0000u32.to_le_bytes());
        c.write(0x04, &[0x03, 0x00]);
    }

    let mut cpu = Interpreter::new();
    let mut state = CpuState::reset();
    for reg in [SegReg::Cs, SegReg::Ds, SegReg::Es, SegReg::Ss] {
        *state.seg_mut(reg) = pcvm_core::Segment::real_mode(0);
    }
    state.seg_mut(SegReg::Cs).attributes = 0x9B;
    state.rip = 0x7C00;
    state.gpr[4] = 0x7000; // SP
    cpu.set_state(&state).unwrap();

    let mut exit = VmExit::BudgetExhausted;
    for _ in 0..200 {
        exit = cpu
            .run(&mut board, RunLimit::Instructions(1_000_000))
            .unwrap();
        if exit != VmExit::BudgetExhausted {
            break;
        }
    }
    let end = cpu.state().unwrap();
    assert_eq!(exit, VmExit::Halted, "stopped at {:#x}", end.linear_rip());
    assert_eq!(
        end.linear_rip(),
        0x7C00 + STUB.len() as u64,
        "ran to the final hlt"
    );

    let v = vga.lock().unwrap();
    assert!(v.text_mode());
    assert_eq!(v.text_geometry().0, 80);
    let screen = v.text_screen();
    assert_eq!(screen.len(), 25, "{screen:?}");
    assert_eq!(screen[0].trim_end(), "Hi", "{screen:?}");
    assert_eq!(screen[1].trim_end(), "!", "{screen:?}");
    assert!(screen[2..].iter().all(|r| r.trim().is_empty()));
    assert_eq!(
        v.text_cells()[0][0],
        (b'H', 0x07),
        "cleared with light grey on black"
    );
    assert_eq!(v.cursor(), Some((1, 1)));
    drop(v);
    // The font went to plane 2: map it as the BIOS does for font access and look at 'A'.
    for (port, v) in [
        (0x3C4u64, 0x0402u16),
        (0x3C4, 0x0704),
        (0x3CE, 0x0204),
        (0x3CE, 0x0005),
    ] {
        board.pio.write(port, &v.to_le_bytes());
    }
    board.pio.write(0x3CE, &0x0406u16.to_le_bytes());
    let mut glyph = [0u8; 16];
    board.mmio.read(0xA0000 + 0x41 * 32, &mut glyph[..8]);
    board.mmio.read(0xA0000 + 0x41 * 32 + 8, &mut glyph[8..]);
    assert!(
        glyph.iter().filter(|&&b| b != 0).count() >= 6,
        "'A' glyph: {glyph:02x?}"
    );
    let mut space = [0u8; 8];
    board.mmio.read(0xA0000 + 0x20 * 32, &mut space);
    assert_eq!(space, [0; 8], "' ' is blank");
    // The VBE interface was found: the BIOS left the ID at 0xB0C5 after probing with B0C0.
    let mut id = [0u8; 2];
    board.pio.write(0x1CE, &0u16.to_le_bytes());
    board.pio.read(0x1CF, &mut id);
    assert_eq!(u16::from_le_bytes(id), 0xB0C5);
}
