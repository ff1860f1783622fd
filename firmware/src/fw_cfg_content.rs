//! What QEMU's fw_cfg device carries for SeaBIOS, built from the machine configuration.
//!
//! The device itself (ports 0x510/0x511, DMA) lives in pcvm-devices; this module only decides
//! the items: legacy numbered keys (QEMU docs/specs/fw_cfg.rst) and named files. SeaBIOS
//! (fw/paravirt.c, romfile.c) reads integer files as 1/2/4/8-byte little-endian values.

use pcvm_core::MemoryLayout;

use crate::cmos::BootDevice;
use crate::e820;
use crate::option_rom::OptionRom;

/// Legacy fw_cfg keys (QEMU include/standard-headers/linux/qemu_fw_cfg.h).
pub mod key {
    pub const SIGNATURE: u16 = 0x00;
    pub const ID: u16 = 0x01;
    pub const UUID: u16 = 0x02;
    pub const RAM_SIZE: u16 = 0x03;
    pub const NOGRAPHIC: u16 = 0x04;
    pub const NB_CPUS: u16 = 0x05;
    pub const MACHINE_ID: u16 = 0x06;
    pub const KERNEL_ADDR: u16 = 0x07;
    pub const KERNEL_SIZE: u16 = 0x08;
    pub const KERNEL_CMDLINE: u16 = 0x09;
    pub const INITRD_ADDR: u16 = 0x0A;
    pub const INITRD_SIZE: u16 = 0x0B;
    pub const BOOT_DEVICE: u16 = 0x0C;
    pub const NUMA: u16 = 0x0D;
    /// SeaBIOS reads it as "etc/show-boot-menu".
    pub const BOOT_MENU: u16 = 0x0E;
    /// SeaBIOS reads it as "etc/max-cpus".
    pub const MAX_CPUS: u16 = 0x0F;
    pub const FILE_DIR: u16 = 0x19;
    /// x86-specific: legacy e820 reservation table.
    pub const E820_TABLE: u16 = 0x8003;
}

/// One IDE drive as the boot order needs to name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdeDrive {
    /// 0 = primary, 1 = secondary channel.
    pub channel: u8,
    /// 0 = master, 1 = slave.
    pub unit: u8,
    /// A CD-ROM rather than a hard disk.
    pub cdrom: bool,
}

impl IdeDrive {
    /// The OpenFirmware device path SeaBIOS matches in `bootorder` (boot.c:
    /// `bootprio_find_ata_device`): the PIIX3 IDE function is 00:01.1.
    pub fn boot_path(&self) -> String {
        format!(
            "/pci@i0cf8/ide@1,1/drive@{:x}/disk@{:x}",
            self.channel, self.unit
        )
    }
}

/// The machine facts fw_cfg content depends on.
#[derive(Clone, Debug)]
pub struct PcFwCfgConfig<'a> {
    pub layout: &'a MemoryLayout,
    pub cpus: u16,
    /// Device classes in boot order (from `-boot`).
    pub boot_order: &'a [BootDevice],
    /// The IDE drives attached, in IDE index order.
    pub drives: &'a [IdeDrive],
    /// Show SeaBIOS's boot menu (`-boot menu=on`).
    pub boot_menu: bool,
    /// How long SeaBIOS waits before retrying boot after a failure; `None` = never retry (as
    /// QEMU's default `reboot-timeout=-1`).
    pub boot_fail_wait_ms: Option<u32>,
    /// Make SeaBIOS mirror its screen output to the UART at this port (as `-nographic`).
    pub sercon_port: Option<u16>,
    /// No graphical display (`-display none`).
    pub nographic: bool,
    /// The VGA BIOS offered as `vgaroms/<name>`, when the VGA has no ROM BAR of its own.
    pub vga_rom: Option<&'a OptionRom>,
}

/// A set of fw_cfg items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FwCfgContent {
    /// Numbered items (the signature, ID and file directory are the device's own).
    pub legacy: Vec<(u16, Vec<u8>)>,
    /// Named files, listed in the file directory.
    pub files: Vec<(String, Vec<u8>)>,
}

impl FwCfgContent {
    /// The named file's contents.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_slice())
    }

    /// The numbered item's contents.
    pub fn legacy(&self, k: u16) -> Option<&[u8]> {
        self.legacy
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, d)| d.as_slice())
    }
}

/// The `bootorder` file: one device path per line, in boot order, NUL-terminated as QEMU
/// writes it. Empty when no attached drive matches the order.
pub fn bootorder(order: &[BootDevice], drives: &[IdeDrive]) -> String {
    let mut lines = Vec::new();
    for dev in order {
        let want_cd = match dev {
            BootDevice::HardDisk => false,
            BootDevice::Cdrom => true,
            BootDevice::Floppy | BootDevice::Network => continue,
        };
        for d in drives.iter().filter(|d| d.cdrom == want_cd) {
            let p = d.boot_path();
            if !lines.contains(&p) {
                lines.push(p);
            }
        }
    }
    lines.join("\n")
}

/// The fw_cfg items of a QEMU-style pc machine.
pub fn pc_content(cfg: &PcFwCfgConfig<'_>) -> FwCfgContent {
    let mut c = FwCfgContent::default();
    let u16le = |v: u16| v.to_le_bytes().to_vec();
    c.legacy.push((key::UUID, vec![0; 16]));
    c.legacy
        .push((key::RAM_SIZE, cfg.layout.ram_size.to_le_bytes().to_vec()));
    c.legacy
        .push((key::NOGRAPHIC, u16le(u16::from(cfg.nographic))));
    c.legacy.push((key::NB_CPUS, u16le(cfg.cpus)));
    c.legacy.push((key::MAX_CPUS, u16le(cfg.cpus)));
    c.legacy
        .push((key::BOOT_MENU, u16le(u16::from(cfg.boot_menu))));
    c.legacy.push((key::NUMA, vec![0; 8]));
    // No legacy e820 reservations: count 0 (the map itself is etc/e820).
    c.legacy.push((key::E820_TABLE, vec![0; 4]));

    c.files
        .push(("etc/e820".into(), e820::to_bytes(&e820::pc_map(cfg.layout))));
    let wait = cfg.boot_fail_wait_ms.map_or(u32::MAX, |ms| ms);
    c.files
        .push(("etc/boot-fail-wait".into(), wait.to_le_bytes().to_vec()));
    let order = bootorder(cfg.boot_order, cfg.drives);
    if !order.is_empty() {
        let mut b = order.into_bytes();
        b.push(0);
        c.files.push(("bootorder".into(), b));
    }
    if let Some(port) = cfg.sercon_port {
        c.files.push(("etc/sercon-port".into(), u16le(port)));
    }
    if let Some(rom) = cfg.vga_rom {
        c.files
            .push((format!("vgaroms/{}", rom.file_name()), rom.data().to_vec()));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CD: IdeDrive = IdeDrive {
        channel: 1,
        unit: 0,
        cdrom: true,
    };
    const HD: IdeDrive = IdeDrive {
        channel: 0,
        unit: 0,
        cdrom: false,
    };

    #[test]
    fn bootorder_follows_the_letters() {
        let order = bootorder(&[BootDevice::Cdrom, BootDevice::HardDisk], &[HD, CD]);
        assert_eq!(
            order,
            "/pci@i0cf8/ide@1,1/drive@1/disk@0\n/pci@i0cf8/ide@1,1/drive@0/disk@0"
        );
        assert_eq!(bootorder(&[BootDevice::Network], &[HD]), "");
    }

    #[test]
    fn pc_items() {
        let l = MemoryLayout::pc(256 << 20).unwrap();
        let rom =
            OptionRom::from_bytes(vec![0x55, 0xAA, 1], Path::new("vgabios-stdvga.bin")).unwrap();
        let c = pc_content(&PcFwCfgConfig {
            layout: &l,
            cpus: 1,
            boot_order: &[BootDevice::HardDisk],
            drives: &[HD],
            boot_menu: false,
            boot_fail_wait_ms: None,
            sercon_port: Some(0x3F8),
            nographic: true,
            vga_rom: Some(&rom),
        });
        assert_eq!(c.legacy(key::NB_CPUS), Some(&[1u8, 0][..]));
        assert_eq!(
            c.legacy(key::RAM_SIZE),
            Some(&(256u64 << 20).to_le_bytes()[..])
        );
        assert_eq!(c.file("etc/sercon-port"), Some(&[0xF8u8, 0x03][..]));
        assert_eq!(c.file("etc/boot-fail-wait"), Some(&[0xFFu8; 4][..]));
        assert_eq!(c.file("etc/e820").map(<[u8]>::len), Some(20));
        assert_eq!(
            c.file("bootorder"),
            Some(&b"/pci@i0cf8/ide@1,1/drive@0/disk@0\0"[..])
        );
        assert_eq!(
            c.file("vgaroms/vgabios-stdvga.bin"),
            Some(&[0x55u8, 0xAA, 1][..])
        );
    }
}
