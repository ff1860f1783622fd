//! I/O APIC through its registers, delivering into a local APIC; the ISA IRQ fan-out.

use std::sync::{Arc, Mutex};

use pcvm_core::{
    BusAccess, BusDevice, ClockMode, InterruptController, IntrPin, TimerHandle, VirtualClock,
};
use pcvm_devices::gsi::{isa_irq_to_gsi, IsaIrqLine};
use pcvm_devices::ioapic::*;
use pcvm_devices::lapic::*;
use pcvm_devices::Pic8259Pair;

fn acc(offset: u64) -> BusAccess {
    BusAccess {
        offset,
        addr: IOAPIC_BASE + offset,
    }
}

fn reg_write(io: &mut IoApic, reg: u8, v: u32) {
    io.write(acc(IOREGSEL), &[reg]);
    io.write(acc(IOWIN), &v.to_le_bytes());
}

fn reg_read(io: &mut IoApic, reg: u8) -> u32 {
    io.write(acc(IOREGSEL), &[reg]);
    let mut b = [0; 4];
    io.read(acc(IOWIN), &mut b);
    u32::from_le_bytes(b)
}

fn lapic_mmio(a: &mut LocalApic, reg: u32, v: u32) {
    a.write(
        BusAccess {
            offset: u64::from(reg),
            addr: 0,
        },
        &v.to_le_bytes(),
    );
}

fn setup() -> (Arc<Mutex<LocalApic>>, IoApic, IntrPin) {
    let pin = IntrPin::new();
    let clock = VirtualClock::new(ClockMode::InstructionCount {
        ns_per_instruction: 1,
    });
    let lapic = Arc::new(Mutex::new(LocalApic::new(&pin, clock, TimerHandle::new())));
    lapic_mmio(&mut lapic.lock().unwrap(), REG_SVR, 0x1FF);
    let io = IoApic::new(lapic.lock().unwrap().input());
    (lapic, io, pin)
}

#[test]
fn identification_registers() {
    let (_, mut io, _) = setup();
    assert_eq!(reg_read(&mut io, 1), 0x0017_0020);
    reg_write(&mut io, 0, 0x0200_0000);
    assert_eq!(reg_read(&mut io, 0), 0x0200_0000);
    assert_eq!(reg_read(&mut io, 0x10), 0x0001_0000, "entries reset masked");
    reg_write(&mut io, 0x11, 0xFF00_0000);
    assert_eq!(reg_read(&mut io, 0x11), 0xFF00_0000);
    assert_eq!(reg_read(&mut io, 0x40), 0, "no register 0x40");
}

#[test]
fn edge_entry_delivers_on_rising_edges_only_when_unmasked() {
    let (lapic, mut io, pin) = setup();
    io.set_irq(4, true);
    io.set_irq(4, false);
    assert!(!pin.asserted(), "masked");
    reg_write(&mut io, 0x10 + 8, 0x34);
    io.set_irq(4, true);
    assert!(pin.asserted());
    assert_eq!(lapic.lock().unwrap().acknowledge_local(), Some(0x34));
    io.set_irq(4, true);
    assert_eq!(
        lapic.lock().unwrap().acknowledge_local(),
        None,
        "no new edge"
    );
}

#[test]
fn level_entry_remote_irr_and_eoi_redelivery() {
    let (lapic, mut io, _) = setup();
    let io = Arc::new(Mutex::new({
        reg_write(&mut io, 0x10 + 2 * 9, 0x0000_A000 | 0x49); // level, active low, 0x49
        io
    }));
    let io2 = io.clone();
    lapic
        .lock()
        .unwrap()
        .set_eoi_broadcast(Arc::new(move |v| io2.lock().unwrap().end_of_interrupt(v)));
    // Active low: the line at 0 V is asserted.
    io.lock().unwrap().set_irq(9, false);
    let rte = io.lock().unwrap().redirection(9).unwrap();
    assert_ne!(rte & RTE_REMOTE_IRR, 0);
    assert_eq!(lapic.lock().unwrap().acknowledge_local(), Some(0x49));
    // Still asserted: the EOI broadcast clears remote IRR and delivers again.
    lapic_mmio(&mut lapic.lock().unwrap(), REG_EOI, 0);
    assert_eq!(lapic.lock().unwrap().acknowledge_local(), Some(0x49));
    io.lock().unwrap().set_irq(9, true); // deasserted
    lapic_mmio(&mut lapic.lock().unwrap(), REG_EOI, 0);
    assert_eq!(
        io.lock().unwrap().redirection(9).unwrap() & RTE_REMOTE_IRR,
        0
    );
    assert_eq!(lapic.lock().unwrap().acknowledge_local(), None);
    // The directed EOI register does the same.
    io.lock().unwrap().set_irq(9, false);
    assert_eq!(lapic.lock().unwrap().acknowledge_local(), Some(0x49));
    io.lock().unwrap().write(acc(IOEOI), &[0x49, 0, 0, 0]);
    assert_eq!(
        lapic.lock().unwrap().acknowledge_local(),
        None,
        "same class in service"
    );
    lapic_mmio(&mut lapic.lock().unwrap(), REG_EOI, 0);
    assert_eq!(lapic.lock().unwrap().acknowledge_local(), Some(0x49));
}

#[test]
fn destinations_physical_and_logical() {
    let (lapic, mut io, _) = setup();
    reg_write(&mut io, 0x11 + 2, 0x0100_0000); // physical APIC 1: not us
    reg_write(&mut io, 0x10 + 2, 0x30);
    io.set_irq(1, true);
    assert_eq!(lapic.lock().unwrap().acknowledge_local(), None);
    lapic_mmio(&mut lapic.lock().unwrap(), REG_LDR, 0x0100_0000);
    reg_write(&mut io, 0x10 + 2, 0x830); // logical, flat, mask 1
    io.set_irq(1, false);
    io.set_irq(1, true);
    assert_eq!(lapic.lock().unwrap().acknowledge_local(), Some(0x30));
}

#[test]
fn isa_lines_fan_out_with_irq0_on_pin2() {
    let pin = IntrPin::new();
    let clock = VirtualClock::new(ClockMode::InstructionCount {
        ns_per_instruction: 1,
    });
    let lapic = Arc::new(Mutex::new(LocalApic::new(&pin, clock, TimerHandle::new())));
    let pic = Arc::new(Mutex::new(Pic8259Pair::new(pin.input(1))));
    let io = Arc::new(Mutex::new(IoApic::new(lapic.lock().unwrap().input())));
    let mut front = LocalApicFront::new(lapic.clone(), pic.clone(), &pin);
    assert_eq!(isa_irq_to_gsi(0), 2);
    assert_eq!(isa_irq_to_gsi(9), 9);
    {
        let mut l = lapic.lock().unwrap();
        lapic_mmio(&mut l, REG_SVR, 0x1FF);
        lapic_mmio(&mut l, REG_LVT_LINT0, 0x10700); // the 8259 is cut off
    }
    reg_write(&mut io.lock().unwrap(), 0x10 + 4, 0x20);
    let irq0 = IsaIrqLine::shared(&pic, &io, 0);
    irq0.pulse();
    assert_eq!(front.acknowledge(), Some(0x20));
    assert_eq!(front.acknowledge(), None);
}

#[test]
fn hostile_register_accesses_do_not_panic() {
    let (_, mut io, _) = setup();
    for sel in 0..=255u8 {
        reg_write(&mut io, sel, 0xFFFF_FFFF);
        reg_read(&mut io, sel);
    }
    for off in 0..0x1000u64 {
        let mut b = [0u8; 8];
        io.read(acc(off), &mut b[..(off as usize % 8) + 1]);
        io.write(acc(off), &b[..(off as usize % 8) + 1]);
    }
    io.set_irq(24, true);
    io.set_irq(usize::MAX, true);
}
