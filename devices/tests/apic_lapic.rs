//! Local APIC through its registers with a fixed (instruction-count) clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pcvm_core::{
    BusAccess, BusDevice, ClockMode, InterruptController, IntrPin, TimerDevice, TimerHandle,
    VirtualClock,
};
use pcvm_devices::lapic::*;
use pcvm_devices::Pic8259Pair;

fn clock() -> VirtualClock {
    VirtualClock::new(ClockMode::InstructionCount {
        ns_per_instruction: 1,
    })
}

fn wr(a: &mut LocalApic, reg: u32, v: u32) {
    a.write(
        BusAccess {
            offset: u64::from(reg),
            addr: LAPIC_BASE + u64::from(reg),
        },
        &v.to_le_bytes(),
    );
}

fn rd(a: &mut LocalApic, reg: u32) -> u32 {
    let mut b = [0; 4];
    a.read(
        BusAccess {
            offset: u64::from(reg),
            addr: LAPIC_BASE + u64::from(reg),
        },
        &mut b,
    );
    u32::from_le_bytes(b)
}

fn setup() -> (LocalApic, IntrPin, VirtualClock, TimerHandle) {
    let pin = IntrPin::new();
    let c = clock();
    let t = TimerHandle::new();
    let a = LocalApic::new(&pin, c.clone(), t.clone());
    (a, pin, c, t)
}

#[test]
fn reset_state_and_identification() {
    let (mut a, pin, _, _) = setup();
    assert_eq!(rd(&mut a, REG_VERSION), 0x50014);
    assert_eq!(rd(&mut a, REG_ID), 0);
    assert_eq!(rd(&mut a, REG_SVR), 0xFF);
    assert_eq!(rd(&mut a, REG_LVT_LINT0), 0x700, "BSP LINT0 in ExtINT");
    assert_eq!(rd(&mut a, REG_LVT_TIMER), 0x10000);
    assert_eq!(rd(&mut a, REG_DFR), 0xFFFF_FFFF);
    assert_eq!(a.apic_base(), 0xFEE0_0900);
    assert!(a.pic_passthrough());
    assert!(!pin.asserted());
    wr(&mut a, REG_ID, 0x0300_0000);
    assert_eq!(rd(&mut a, REG_ID), 0x0300_0000);
}

#[test]
fn fixed_interrupt_respects_ppr_and_eoi() {
    let (mut a, pin, _, _) = setup();
    let input = a.input();
    input.accept_interrupt(0x40, false);
    assert!(!pin.asserted(), "software-disabled APIC delivers nothing");
    wr(&mut a, REG_SVR, 0x1FF);
    assert!(pin.asserted());
    assert_eq!(rd(&mut a, REG_IRR + 0x20), 1, "IRR bit 0x40");
    wr(&mut a, REG_TPR, 0x40);
    assert!(!pin.asserted(), "TPR class 4 blocks vector 0x40");
    assert_eq!(a.acknowledge_local(), None);
    wr(&mut a, REG_TPR, 0x30);
    assert_eq!(rd(&mut a, REG_PPR), 0x30);
    assert_eq!(a.acknowledge_local(), Some(0x40));
    assert_eq!(rd(&mut a, REG_ISR + 0x20), 1);
    assert_eq!(rd(&mut a, REG_PPR), 0x40);
    input.accept_interrupt(0x45, false);
    assert!(!pin.asserted(), "same class as the one in service");
    input.accept_interrupt(0x51, false);
    assert!(pin.asserted());
    assert_eq!(a.acknowledge_local(), Some(0x51));
    wr(&mut a, REG_EOI, 0);
    assert_eq!(rd(&mut a, REG_ISR + 0x50), 0);
    wr(&mut a, REG_EOI, 0);
    assert_eq!(rd(&mut a, REG_ISR + 0x20), 0);
    assert_eq!(rd(&mut a, REG_PPR), 0x30);
    assert_eq!(a.acknowledge_local(), Some(0x45));
}

#[test]
fn level_eoi_is_broadcast_and_illegal_vectors_flag_esr() {
    let (mut a, _, _, _) = setup();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    a.set_eoi_broadcast(Arc::new(move |v| s.lock().unwrap().push(v)));
    wr(&mut a, REG_SVR, 0x1FF);
    a.accept_interrupt(0x61, true);
    a.accept_interrupt(0x70, false);
    assert_eq!(rd(&mut a, REG_TMR + 0x30), 2, "TMR bit for 0x61");
    assert_eq!(a.acknowledge_local(), Some(0x70));
    wr(&mut a, REG_EOI, 0);
    assert!(seen.lock().unwrap().is_empty(), "edge EOI is not broadcast");
    assert_eq!(a.acknowledge_local(), Some(0x61));
    wr(&mut a, REG_EOI, 0);
    assert_eq!(*seen.lock().unwrap(), vec![0x61]);
    a.accept_interrupt(5, false);
    wr(&mut a, REG_ESR, 0);
    assert_eq!(rd(&mut a, REG_ESR) & ESR_RECV_ILLEGAL, ESR_RECV_ILLEGAL);
    wr(&mut a, REG_ESR, 0);
    assert_eq!(rd(&mut a, REG_ESR), 0);
}

#[test]
fn pic_reaches_cpu_through_lint0_extint_only() {
    let pin = IntrPin::new();
    let lapic = Arc::new(Mutex::new(LocalApic::new(
        &pin,
        clock(),
        TimerHandle::new(),
    )));
    let pic = Arc::new(Mutex::new(Pic8259Pair::new(pin.input(1))));
    let mut front = LocalApicFront::new(lapic.clone(), pic.clone(), &pin);
    {
        let mut p = pic.lock().unwrap();
        for (port, v) in [(0x20, 0x11), (0x21, 0x08), (0x21, 4), (0x21, 1), (0x21, 0)] {
            p.write(
                BusAccess {
                    offset: 0,
                    addr: port,
                },
                &[v],
            );
        }
        p.set_irq(1, true);
    }
    assert!(pin.asserted());
    // Mask LINT0: the 8259 no longer reaches INTR.
    wr(&mut lapic.lock().unwrap(), REG_SVR, 0x1FF);
    wr(&mut lapic.lock().unwrap(), REG_LVT_LINT0, 0x10700);
    assert!(!pin.asserted());
    assert_eq!(front.acknowledge(), None);
    wr(&mut lapic.lock().unwrap(), REG_LVT_LINT0, 0x8700);
    assert!(pin.asserted());
    // APIC interrupts win over ExtINT.
    lapic.lock().unwrap().accept_interrupt(0x80, false);
    assert_eq!(front.acknowledge(), Some(0x80));
    assert_eq!(front.acknowledge(), Some(0x09), "then the 8259's IRQ1");
    // A hardware-disabled APIC passes the 8259 through whatever LINT0 says.
    pic.lock().unwrap().set_irq(1, false);
    lapic.lock().unwrap().set_apic_base(0xFEE0_0000);
    wr(&mut lapic.lock().unwrap(), REG_LVT_LINT0, 0x10000);
    assert!(lapic.lock().unwrap().pic_passthrough());
}

#[test]
fn one_shot_and_periodic_timer_from_the_virtual_clock() {
    let (mut a, pin, c, t) = setup();
    wr(&mut a, REG_SVR, 0x1FF);
    wr(&mut a, REG_TIMER_DIVIDE, 0b0001); // divide by 4
    wr(&mut a, REG_LVT_TIMER, 0x30);
    wr(&mut a, REG_TIMER_INITIAL, 1000);
    assert_eq!(t.deadline(), 4000);
    c.add_instructions(400);
    assert_eq!(rd(&mut a, REG_TIMER_CURRENT), 900);
    c.add_instructions(3600);
    a.on_timer(c.now_ns());
    assert!(pin.asserted());
    assert_eq!(rd(&mut a, REG_TIMER_CURRENT), 0);
    assert_eq!(t.deadline(), u64::MAX, "one-shot stops");
    assert_eq!(a.acknowledge_local(), Some(0x30));
    wr(&mut a, REG_EOI, 0);
    // Periodic, divide by 1.
    wr(&mut a, REG_LVT_TIMER, TIMER_PERIODIC | 0x31);
    wr(&mut a, REG_TIMER_DIVIDE, 0b1011);
    wr(&mut a, REG_TIMER_INITIAL, 100);
    assert_eq!(t.deadline(), 4100);
    c.add_instructions(130);
    assert_eq!(rd(&mut a, REG_TIMER_CURRENT), 70);
    a.on_timer(c.now_ns());
    assert_eq!(t.deadline(), 4200, "periodic re-arms");
    assert_eq!(a.acknowledge_local(), Some(0x31));
    // Masked: counts but raises nothing.
    wr(&mut a, REG_EOI, 0);
    wr(&mut a, REG_LVT_TIMER, TIMER_PERIODIC | LVT_MASKED | 0x31);
    c.add_instructions(100);
    a.on_timer(c.now_ns());
    assert_eq!(a.acknowledge_local(), None);
}

#[test]
fn tsc_deadline_timer() {
    let (mut a, _, c, t) = setup();
    wr(&mut a, REG_SVR, 0x1FF);
    wr(&mut a, REG_LVT_TIMER, TIMER_TSC_DEADLINE | 0x40);
    a.write_tsc_deadline(5_000, 1_000);
    assert_eq!(t.deadline(), 4_000);
    assert_eq!(a.tsc_deadline(), 5_000);
    c.add_instructions(4_000);
    a.on_timer(c.now_ns());
    assert_eq!(a.tsc_deadline(), 0, "fired deadline reads 0");
    assert_eq!(a.acknowledge_local(), Some(0x40));
    a.write_tsc_deadline(9_000, 5_000);
    a.write_tsc_deadline(0, 5_000);
    assert_eq!(t.deadline(), u64::MAX, "writing 0 disarms");
}

#[test]
fn self_ipi_nmi_and_recorded_init_sipi() {
    let (mut a, _, _, _) = setup();
    let nmi = Arc::new(AtomicBool::new(false));
    a.set_nmi(nmi.clone());
    wr(&mut a, REG_SVR, 0x1FF);
    wr(&mut a, REG_ICR_LOW, 0x0004_0055); // shorthand self, fixed 0x55
    assert_eq!(a.acknowledge_local(), Some(0x55));
    assert_eq!(
        rd(&mut a, REG_ICR_LOW) & (1 << 12),
        0,
        "delivery status idle"
    );
    wr(&mut a, REG_ICR_HIGH, 0);
    wr(&mut a, REG_ICR_LOW, 0x0000_0400); // NMI to physical 0 = self
    assert!(nmi.load(Ordering::Acquire));
    assert!(a.take_ipis().is_empty());
    wr(&mut a, REG_ICR_LOW, 0x000C_4500); // INIT all-but-self
    wr(&mut a, REG_ICR_LOW, 0x000C_4610); // SIPI all-but-self
    let ipis = a.take_ipis();
    assert_eq!(ipis.len(), 2);
    assert_eq!(ipis[1].icr as u32 & 0x7FF, 0x610);
    assert_eq!(a.acknowledge_local(), None, "nothing reached self");
}

#[test]
fn x2apic_msrs() {
    let (mut a, _, _, _) = setup();
    assert_eq!(a.read_msr(0x802), None, "xAPIC mode: MSRs #GP");
    a.set_apic_base(0xFEE0_0000 | APIC_BASE_ENABLE | APIC_BASE_EXTD);
    assert_eq!(a.read_msr(0x803), Some(0x50014));
    assert_eq!(a.read_msr(0x802), Some(0));
    assert_eq!(a.read_msr(0x80D), Some(1), "LDR derived from the ID");
    assert!(a.write_msr(0x80F, 0x1FF));
    assert!(a.write_msr(0x83F, 0x66), "SELF IPI");
    assert_eq!(a.acknowledge_local(), Some(0x66));
    assert!(a.write_msr(0x80B, 0));
    assert!(a.write_msr(0x830, 0x0004_0067));
    assert_eq!(a.read_msr(0x830), Some(0x0004_0067));
    assert_eq!(a.acknowledge_local(), Some(0x67));
    assert!(!a.write_msr(0x80B, 1), "EOI with a non-zero value #GPs");
    assert!(a.write_msr(0x80B, 0));
    assert_eq!(a.read_msr(0x80E), None, "no DFR in x2APIC mode");
    assert!(!a.write_msr(0x802, 5), "ID is read-only");
    // The MMIO page goes dark in x2APIC mode.
    assert_eq!(rd(&mut a, REG_VERSION), u32::MAX);
}

#[test]
fn hostile_mmio_accesses_do_not_panic() {
    let (mut a, _, _, _) = setup();
    for off in (0..0x1000u64).step_by(3) {
        for len in [1usize, 2, 4, 8] {
            let mut b = vec![0u8; len];
            a.read(
                BusAccess {
                    offset: off,
                    addr: LAPIC_BASE + off,
                },
                &mut b,
            );
            a.write(
                BusAccess {
                    offset: off,
                    addr: LAPIC_BASE + off,
                },
                &[0xFF; 8][..len],
            );
        }
    }
    assert!(a.read_msr(0x7FF).is_none());
    assert!(!a.write_msr(0x900, 0));
}

/// The CPU's RDMSR/WRMSR of IA32_APIC_BASE, IA32_TSC_DEADLINE and the x2APIC range reach the
/// APIC through its front (SDM Vol. 3A §11.4.4, §11.5.4.1, §11.12).
#[test]
fn msrs_through_the_front() {
    let pin = IntrPin::new();
    let c = clock();
    let t = TimerHandle::new();
    let lapic = Arc::new(Mutex::new(LocalApic::new(&pin, c.clone(), t.clone())));
    let pic = Arc::new(Mutex::new(Pic8259Pair::new(pin.input(1))));
    let mut front = LocalApicFront::new(lapic.clone(), pic, &pin);
    assert_eq!(front.read_msr(MSR_APIC_BASE), Some(0xFEE0_0900));
    assert_eq!(front.read_msr(0x10), None, "not an APIC MSR");
    assert_eq!(front.write_msr(0x10, 0, 0), None);
    // xAPIC mode: the x2APIC MSRs are not there (the CPU raises #GP).
    assert_eq!(front.read_msr(0x803), None);
    assert_eq!(front.write_msr(0x808, 0, 0), Some(false));
    // Reserved bits, x2APIC without enable: #GP, nothing changes.
    for bad in [0xFEE0_0901, 0xFEE0_0B00, 0xFEE0_0400, 1 << 60 | 0xFEE0_0800] {
        assert_eq!(
            front.write_msr(MSR_APIC_BASE, bad, 0),
            Some(false),
            "{bad:#x}"
        );
    }
    assert_eq!(front.read_msr(MSR_APIC_BASE), Some(0xFEE0_0900));
    // Into x2APIC mode; then straight back to xAPIC is invalid, disabling first is not.
    assert_eq!(front.write_msr(MSR_APIC_BASE, 0xFEE0_0C00, 0), Some(true));
    assert_eq!(
        front.read_msr(MSR_APIC_BASE),
        Some(0xFEE0_0D00),
        "BSP bit kept"
    );
    assert_eq!(front.read_msr(0x803), Some(u64::from(APIC_VERSION)));
    assert_eq!(front.write_msr(0x808, 0x20, 0), Some(true), "TPR");
    assert_eq!(front.read_msr(0x808), Some(0x20));
    assert_eq!(front.write_msr(MSR_APIC_BASE, 0xFEE0_0800, 0), Some(false));
    assert_eq!(front.write_msr(MSR_APIC_BASE, 0xFEE0_0000, 0), Some(true));
    assert_eq!(front.write_msr(MSR_APIC_BASE, 0xFEE0_0800, 0), Some(true));
    assert_eq!(front.read_msr(0x808), None, "xAPIC again");
    // TSC deadline: ignored and reading 0 outside deadline mode; armed in it.
    assert_eq!(front.write_msr(MSR_TSC_DEADLINE, 7_000, 1_000), Some(true));
    assert_eq!(front.read_msr(MSR_TSC_DEADLINE), Some(0));
    assert_eq!(t.deadline(), u64::MAX);
    wr(&mut lapic.lock().unwrap(), REG_SVR, 0x1FF);
    wr(
        &mut lapic.lock().unwrap(),
        REG_LVT_TIMER,
        TIMER_TSC_DEADLINE | 0xEC,
    );
    assert_eq!(front.write_msr(MSR_TSC_DEADLINE, 7_000, 1_000), Some(true));
    assert_eq!(front.read_msr(MSR_TSC_DEADLINE), Some(7_000));
    assert_eq!(t.deadline(), c.now_ns() + 6_000);
    c.add_instructions(6_000);
    lapic.lock().unwrap().on_timer(c.now_ns());
    assert_eq!(front.acknowledge(), Some(0xEC));
    assert_eq!(front.read_msr(MSR_TSC_DEADLINE), Some(0), "fired");
}

/// MOV to/from CR8 reach TPR[7:4] through the front, and the priority they set masks
/// interrupts like an MMIO TPR write (SDM Vol. 3A "Interaction of Task Priorities between CR8
/// and APIC").
#[test]
fn cr8_is_the_task_priority_class() {
    let pin = IntrPin::new();
    let lapic = Arc::new(Mutex::new(LocalApic::new(
        &pin,
        clock(),
        TimerHandle::new(),
    )));
    let pic = Arc::new(Mutex::new(Pic8259Pair::new(pin.input(1))));
    let mut front = LocalApicFront::new(lapic.clone(), pic, &pin);
    wr(&mut lapic.lock().unwrap(), REG_SVR, 0x1FF);
    assert_eq!(front.task_priority_class(), Some(0));
    assert!(front.set_task_priority_class(5));
    assert_eq!(rd(&mut lapic.lock().unwrap(), REG_TPR), 0x50);
    assert_eq!(front.task_priority_class(), Some(5));
    let input = lapic.lock().unwrap().input();
    input.accept_interrupt(0x58, false);
    assert_eq!(front.acknowledge(), None, "class 5 is not above CR8 = 5");
    assert!(front.set_task_priority_class(4));
    assert_eq!(front.acknowledge(), Some(0x58));
    // TPR written through MMIO shows in CR8; TPR[3:0] does not.
    wr(&mut lapic.lock().unwrap(), REG_TPR, 0x9F);
    assert_eq!(front.task_priority_class(), Some(9));
}
