//! PIIX4 PM through PCI config space and its I/O block, with a fixed clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pcvm_core::{
    BusAccess, BusDevice, ClockMode, IrqLine, SystemRequest, SystemRequests, TimerDevice,
    TimerHandle, VirtualClock,
};
use pcvm_devices::acpi_pm::*;
use pcvm_devices::pci::PciDevice;

#[derive(Default)]
struct Level(AtomicBool);
impl IrqLine for Level {
    fn set_level(&self, high: bool) {
        self.0.store(high, Ordering::Release);
    }
}

struct Rig {
    pm: Arc<Mutex<Piix4Pm>>,
    ports: AcpiPmPorts,
    clock: VirtualClock,
    timer: TimerHandle,
    sci: Arc<Level>,
    req: SystemRequests,
}

fn rig() -> Rig {
    let clock = VirtualClock::new(ClockMode::InstructionCount {
        ns_per_instruction: 1,
    });
    let timer = TimerHandle::new();
    let sci = Arc::new(Level::default());
    let req = SystemRequests::new();
    let pm = Arc::new(Mutex::new(Piix4Pm::new(
        clock.clone(),
        timer.clone(),
        sci.clone(),
        req.clone(),
    )));
    let ports = AcpiPmPorts::new(pm.clone(), PM_BASE_LOADER);
    Rig {
        pm,
        ports,
        clock,
        timer,
        sci,
        req,
    }
}

fn cfg_read32(pm: &Arc<Mutex<Piix4Pm>>, off: usize) -> u32 {
    let mut b = [0; 4];
    pm.lock().unwrap().read_config(off, &mut b);
    u32::from_le_bytes(b)
}
fn cfg_write32(pm: &Arc<Mutex<Piix4Pm>>, off: usize, v: u32) {
    pm.lock().unwrap().write_config(off, &v.to_le_bytes());
}
fn io_read(p: &mut AcpiPmPorts, off: u64, len: usize) -> u32 {
    let mut b = [0u8; 4];
    p.read(
        BusAccess {
            offset: off,
            addr: 0x600 + off,
        },
        &mut b[..len],
    );
    u32::from_le_bytes(b)
}
fn io_write(p: &mut AcpiPmPorts, off: u64, v: u32, len: usize) {
    p.write(
        BusAccess {
            offset: off,
            addr: 0x600 + off,
        },
        &v.to_le_bytes()[..len],
    );
}

#[test]
fn identity_and_seabios_config_sequence() {
    let r = rig();
    assert_eq!(cfg_read32(&r.pm, 0), 0x7113_8086);
    assert_eq!(cfg_read32(&r.pm, 8) >> 8, 0x06_80_00);
    assert_eq!(cfg_read32(&r.pm, 8) & 0xFF, 3);
    assert_eq!(cfg_read32(&r.pm, 0x58) & (1 << 25), 1 << 25, "no SMM init");
    cfg_write32(&r.pm, 0x58, 0);
    assert_eq!(cfg_read32(&r.pm, 0x58) & (1 << 25), 1 << 25, "read-only");
    // SeaBIOS piix4_pm_config_setup with a table-loader.
    cfg_write32(&r.pm, PMBA, 0x601);
    assert_eq!(r.pm.lock().unwrap().pm_base(), None, "not enabled yet");
    r.pm.lock().unwrap().write_config(PMREGMISC, &[1]);
    assert_eq!(r.pm.lock().unwrap().pm_base(), Some(0x600));
    cfg_write32(&r.pm, SMBBA, 0x701);
    assert_eq!(cfg_read32(&r.pm, SMBBA), 0x701);
    cfg_write32(&r.pm, PMBA, 0xFFFF_FFFF);
    assert_eq!(cfg_read32(&r.pm, PMBA), 0xFFC1, "64-byte I/O block");
    r.pm.lock().unwrap().reset();
    assert_eq!(cfg_read32(&r.pm, PMBA), 1);
}

#[test]
fn pm_timer_counts_at_3_58_mhz_only_when_mapped_here() {
    let mut r = rig();
    let mut b = [0u8; 4];
    r.ports.read(
        BusAccess {
            offset: 8,
            addr: 0x608,
        },
        &mut b,
    );
    assert_eq!(b, [0xFF; 4], "PMBA elsewhere: all-ones");
    r.pm.lock().unwrap().set_pm_base(0x600);
    r.clock.add_instructions(1_000_000_000); // 1 s
    assert_eq!(
        io_read(&mut r.ports, PM_TMR, 4),
        (3_579_545 & 0xFF_FFFF) as u32
    );
    r.clock.add_instructions(4_000_000_000); // 5 s: wraps 24 bits
    let t = io_read(&mut r.ports, PM_TMR, 4);
    assert_eq!(t, ((3_579_545u64 * 5) & 0xFF_FFFF) as u32);
    assert_eq!(io_read(&mut r.ports, PM_TMR, 4) >> 24, 0);
}

#[test]
fn timer_overflow_status_raises_sci_when_enabled() {
    let mut r = rig();
    r.pm.lock().unwrap().set_pm_base(0x600);
    io_write(&mut r.ports, PM1_EN, PM1_TMR.into(), 2);
    let deadline = r.timer.deadline();
    // 2^23 ticks at 3.579545 MHz ≈ 2.343 s.
    assert_eq!(
        deadline,
        ((1u128 << 23) * 1_000_000_000).div_ceil(3_579_545) as u64
    );
    r.clock.add_instructions(deadline);
    r.pm.lock().unwrap().on_timer(deadline);
    assert_eq!(io_read(&mut r.ports, PM1_STS, 2) & 1, 1);
    assert!(r.sci.0.load(Ordering::Acquire));
    io_write(&mut r.ports, PM1_STS, 1, 2);
    assert_eq!(io_read(&mut r.ports, PM1_STS, 2) & 1, 0);
    assert!(!r.sci.0.load(Ordering::Acquire));
}

#[test]
fn power_button_gpe_and_s5() {
    let mut r = rig();
    r.pm.lock().unwrap().set_pm_base(0x600);
    assert_eq!(
        io_read(&mut r.ports, PM1_CNT, 2) & 1,
        1,
        "SCI_EN: always ACPI mode"
    );
    r.pm.lock().unwrap().press_power_button();
    assert!(!r.sci.0.load(Ordering::Acquire), "not enabled");
    io_write(&mut r.ports, PM1_EN, PM1_PWRBTN.into(), 2);
    assert!(r.sci.0.load(Ordering::Acquire));
    io_write(&mut r.ports, PM1_STS, PM1_PWRBTN.into(), 2);
    assert!(!r.sci.0.load(Ordering::Acquire));
    io_write(&mut r.ports, GPE0_EN, 0x4, 2);
    r.pm.lock().unwrap().raise_gpe(2);
    assert!(r.sci.0.load(Ordering::Acquire));
    io_write(&mut r.ports, GPE0_STS, 0x4, 1);
    assert!(!r.sci.0.load(Ordering::Acquire));
    // S3 is not supported: it wakes at once and does not power off.
    io_write(
        &mut r.ports,
        PM1_CNT,
        1 | (1 << 10) | u32::from(CNT_SLP_EN),
        2,
    );
    assert_eq!(r.req.take(), None);
    assert_ne!(io_read(&mut r.ports, PM1_STS, 2) & u32::from(PM1_WAK), 0);
    io_write(
        &mut r.ports,
        PM1_CNT,
        1 | (u32::from(SLP_TYP_S5) << 10) | u32::from(CNT_SLP_EN),
        2,
    );
    assert_eq!(r.req.take(), Some(SystemRequest::PowerOff(0)));
    assert_eq!(io_read(&mut r.ports, PM1_CNT, 2) & u32::from(CNT_SLP_EN), 0);
}

#[test]
fn hostile_io_does_not_panic() {
    let mut r = rig();
    r.pm.lock().unwrap().set_pm_base(0x600);
    for off in 0..PM_IO_SIZE {
        for len in 1..=4usize {
            if off + len as u64 > PM_IO_SIZE {
                continue;
            }
            io_read(&mut r.ports, off, len);
            // Never ask for sleep here.
            if off <= PM1_CNT + 1 && off + len as u64 > PM1_CNT {
                continue;
            }
            io_write(&mut r.ports, off, 0xFFFF_FFFF, len);
        }
    }
    assert_eq!(r.req.take(), None);
}
