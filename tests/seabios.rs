//! SeaBIOS 1.16 (Debian's bios-256k.bin): no disk, a raw disk booted through INT 13h extended
//! reads, an El Torito no-emulation CD, and the boot order — each on every backend (the
//! interpreter, and KVM with pcvm's device model in userspace when /dev/kvm is usable).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use pcvm::machine::{Accel, DriveConfig, DriveMedia, Exit, Machine};
use pcvm_firmware::cmos::BootDevice;

/// Generous wall-clock limit per boot; a hang fails the test rather than CI.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

fn no_disk_reports_no_bootable_device_on_debugcon_serial_and_vga(accel: Accel) {
    let Some(bios) = seabios() else { return };
    let (mut config, cap) = seabios_config(&bios, BOOT_TIMEOUT);
    config.accel = accel;
    let mut m = Machine::new(config).expect("build machine");
    let exit = m
        .run_until(|m| {
            cap.debugcon.contains("No bootable device.")
                && cap.serial.contains("No bootable device.")
                && m.vga_text()
                    .iter()
                    .any(|l| l.contains("No bootable device."))
        })
        .expect("run");
    let log = cap.debugcon.text();
    let serial = cap.serial.text();
    assert_eq!(exit, Exit::Stopped, "debugcon:\n{log}\nserial:\n{serial}");
    // Banner, RAM size from fw_cfg etc/e820, the PCI functions, the failure.
    assert!(log.contains("SeaBIOS (version 1.16"), "{log}");
    assert!(
        log.contains("qemu/e820: addr 0x0000000000000000 len 0x0000000008000000 [RAM]"),
        "{log}"
    );
    for id in [
        "8086:1237",
        "8086:7000",
        "8086:7010",
        "8086:7113",
        "1234:1111",
    ] {
        assert!(
            log.contains(&format!("id={id}")),
            "PCI {id} missing:\n{log}"
        );
    }
    assert!(log.contains("Found 5 PCI devices"), "{log}");
    // ACPI: SeaBIOS ran our table-loader (PM block at 0x600) and found our tables.
    assert!(log.contains("Moving pm_base to 0x600"), "{log}");
    assert!(log.contains("Using pmtimer, ioport 0x608"), "{log}");
    assert!(log.contains("ACPI: parse DSDT"), "{log}");
    // sercon (etc/sercon-port) mirrors the screen to COM1.
    assert!(serial.contains("SeaBIOS (version 1.16"), "{serial}");
    // The VGA BIOS ran and SeaBIOS's banner is on the text screen.
    let screen = m.vga_text().join("\n");
    assert!(screen.contains("SeaBIOS (version 1.16"), "{screen}");
}

/// Boot `image` (written to a scratch file) from one drive through SeaBIOS: the loader must
/// bring up the second stage, which prints its markers through INT 10h and COM1 and powers
/// off. Returns the debug-console log and the COM1 output for the caller's own checks.
fn boot_marker_image(
    bios: &Path,
    accel: Accel,
    image: Vec<u8>,
    media: DriveMedia,
    index: u8,
) -> (String, String) {
    let dir = TempDir::new("boot");
    let (file, origin) = match media {
        DriveMedia::Disk => ("disk.img", "-hda disk.img"),
        DriveMedia::Cdrom => ("boot.iso", "-cdrom boot.iso"),
    };
    let path = dir.path(file);
    std::fs::write(&path, image).expect("write boot image");
    let (mut config, cap) = seabios_config(bios, BOOT_TIMEOUT);
    config.accel = accel;
    config.drives.push(DriveConfig {
        path,
        media,
        index: Some(index),
        origin: origin.into(),
    });
    let mut m = Machine::new(config).expect("build machine");
    let exit = m.run().expect("run");
    let log = cap.debugcon.text();
    let serial = cap.serial.text();
    assert_eq!(
        exit,
        Exit::PowerOff(0),
        "debugcon:\n{log}\nserial:\n{serial}"
    );
    assert!(serial.contains(MARK_COM1), "{serial}");
    let screen = m.vga_text().join("\n");
    assert!(screen.contains(MARK_INT10), "{screen}");
    (log, serial)
}

fn boots_a_raw_disk_through_int13_extended_reads(accel: Accel) {
    let Some(bios) = seabios() else { return };
    let (log, serial) = boot_marker_image(&bios, accel, disk_image(), DriveMedia::Disk, 0);
    assert!(log.contains("Booting from Hard Disk..."), "{log}");
    assert!(!serial.contains("LOADFAIL"), "{serial}");
}

fn boots_an_el_torito_no_emulation_cd(accel: Accel) {
    let Some(bios) = seabios() else { return };
    let (log, _) = boot_marker_image(&bios, accel, iso_image(), DriveMedia::Cdrom, 2);
    assert!(log.contains("Booting from DVD/CD..."), "{log}");
}

fn boot_order_d_prefers_the_cd_over_a_bootable_disk(accel: Accel) {
    let Some(bios) = seabios() else { return };
    let dir = TempDir::new("order");
    let iso = dir.path("boot.iso");
    std::fs::write(&iso, iso_image()).unwrap();
    // A bootable disk that would just halt: if it were chosen, the CD's power-off never comes.
    let disk = dir.path("halt.img");
    let mut img = vec![0u8; 1 << 20];
    img[..3].copy_from_slice(&[0xFA, 0xF4, 0xEB]);
    img[3] = 0xFD;
    img[510] = 0x55;
    img[511] = 0xAA;
    std::fs::write(&disk, img).unwrap();
    let (mut config, cap) = seabios_config(&bios, BOOT_TIMEOUT);
    config.accel = accel;
    config.drives.push(DriveConfig {
        path: disk,
        media: DriveMedia::Disk,
        index: Some(0),
        origin: "-hda halt.img".into(),
    });
    config.drives.push(DriveConfig {
        path: iso,
        media: DriveMedia::Cdrom,
        index: Some(2),
        origin: "-cdrom boot.iso".into(),
    });
    config.boot.order = vec![BootDevice::Cdrom, BootDevice::HardDisk];
    let mut m = Machine::new(config).expect("build machine");
    let exit = m.run().expect("run");
    let log = cap.debugcon.text();
    assert_eq!(exit, Exit::PowerOff(0), "{log}");
    assert!(log.contains("Booting from DVD/CD..."), "{log}");
    assert!(!log.contains("Booting from Hard Disk..."), "{log}");
}

/// KVM runs only where /dev/kvm opens; otherwise the KVM variants say why and skip (an
/// environment fact, not a fixture). Here /dev/kvm is kvm-pvm: software-emulated, slow, but
/// real KVM exits into the same device model.
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

/// One test per backend for a whole-guest scenario.
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;

            #[test]
            fn interp() {
                super::$scenario(Accel::Interp);
            }

            #[test]
            fn jit() {
                super::$scenario(Accel::Jit);
            }

            #[test]
            fn kvm() {
                if kvm_available() {
                    let start = std::time::Instant::now();
                    super::$scenario(Accel::Kvm);
                    eprintln!("kvm: {} in {:.2} s", stringify!($scenario), start.elapsed().as_secs_f64());
                }
            }
        }
    )*};
}

on_every_backend!(
    no_disk_reports_no_bootable_device_on_debugcon_serial_and_vga,
    boots_a_raw_disk_through_int13_extended_reads,
    boots_an_el_torito_no_emulation_cd,
    boot_order_d_prefers_the_cd_over_a_bootable_disk
);
