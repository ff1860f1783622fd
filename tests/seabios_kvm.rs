//! The SeaBIOS whole-guest boots again under `--accel kvm` (userspace irqchip: the same PIC,
//! PIT, IDE and VGA models as the interpreter, reached through KVM exits).
//!
//! On this project's machines /dev/kvm is kvm-pvm, which runs non-PVM guests in software
//! (about 1000x slower than hardware KVM), so only these small firmware boots run here.
//! Without a usable /dev/kvm the tests print why and skip (an environment fact, not a fixture).

mod common;

use std::time::{Duration, Instant};

use common::*;
use pcvm::machine::{Accel, DriveConfig, DriveMedia, Exit, Machine};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn kvm_available() -> bool {
    match pcvm_accel_kvm::kvm_usable() {
        Ok(info) => {
            if let Some(w) = info.warning() {
                eprintln!("{w}");
            }
            true
        }
        Err(e) => {
            eprintln!("skipped: KVM is not usable here: {e}");
            false
        }
    }
}

#[test]
fn kvm_no_disk_reports_no_bootable_device() {
    let Some(bios) = seabios() else { return };
    if !kvm_available() {
        return;
    }
    let (mut config, cap) = seabios_config(&bios, BOOT_TIMEOUT);
    config.accel = Accel::Kvm;
    let mut m = Machine::new(config).expect("build machine");
    let start = Instant::now();
    let exit = m
        .run_until(|_| {
            cap.debugcon.contains("No bootable device.")
                && cap.serial.contains("No bootable device.")
        })
        .expect("run");
    let log = cap.debugcon.text();
    eprintln!(
        "kvm: SeaBIOS start -> \"No bootable device.\" in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(exit, Exit::Stopped, "debugcon:\n{log}");
    assert!(log.contains("SeaBIOS (version 1.16"), "{log}");
    assert!(log.contains("Found 5 PCI devices"), "{log}");
    assert!(
        cap.serial.contains("No bootable device."),
        "{}",
        cap.serial.text()
    );
}

#[test]
fn kvm_boots_a_raw_disk_through_int13_extended_reads() {
    let Some(bios) = seabios() else { return };
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new("kvm-disk");
    let disk = dir.path("disk.img");
    std::fs::write(&disk, disk_image()).expect("write disk image");
    let (mut config, cap) = seabios_config(&bios, BOOT_TIMEOUT);
    config.accel = Accel::Kvm;
    config.drives.push(DriveConfig {
        path: disk,
        media: DriveMedia::Disk,
        index: Some(0),
        origin: "-hda disk.img".into(),
    });
    let mut m = Machine::new(config).expect("build machine");
    let start = Instant::now();
    let exit = m.run().expect("run");
    eprintln!(
        "kvm: SeaBIOS start -> disk boot marker -> power-off in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let log = cap.debugcon.text();
    let serial = cap.serial.text();
    assert_eq!(
        exit,
        Exit::PowerOff(0),
        "debugcon:\n{log}\nserial:\n{serial}"
    );
    assert!(log.contains("Booting from Hard Disk..."), "{log}");
    assert!(serial.contains(MARK_COM1), "{serial}");
    let screen = m.vga_text().join("\n");
    assert!(screen.contains(MARK_INT10), "{screen}");
}
