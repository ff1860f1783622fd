//! The CMOS NVRAM bytes a PC BIOS reads, laid out as QEMU's pc machine fills them.
//!
//! Offsets follow the IBM PC/AT CMOS map (and its later extensions): base and extended memory
//! sizes, the memory above 16 MiB and above 4 GiB in 64 KiB units, the CPU count (0x5F, a QEMU
//! convention SeaBIOS reads), the boot order (0x3D, 0x38: one nibble per device), and the ATA
//! translation hints (0x39). SeaBIOS reads the memory sizes only when fw_cfg `etc/e820` is
//! absent, but other firmware (and old guests) read them directly.

use pcvm_core::MemoryLayout;

/// A device class SeaBIOS can boot from, with its CMOS boot nibble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootDevice {
    /// `a`: the floppy.
    Floppy,
    /// `c`: the first hard disk.
    HardDisk,
    /// `d`: the CD-ROM.
    Cdrom,
    /// `n`: the network.
    Network,
}

impl BootDevice {
    /// The CMOS boot-order nibble (SeaBIOS boot.c, QEMU pc.c).
    pub fn cmos_code(self) -> u8 {
        match self {
            BootDevice::Floppy => 1,
            BootDevice::HardDisk => 2,
            BootDevice::Cdrom => 3,
            BootDevice::Network => 4,
        }
    }

    /// The device for one QEMU `-boot` letter.
    pub fn from_letter(c: char) -> Option<Self> {
        match c {
            'a' | 'b' => Some(BootDevice::Floppy),
            'c' => Some(BootDevice::HardDisk),
            'd' => Some(BootDevice::Cdrom),
            'n'..='p' => Some(BootDevice::Network),
            _ => None,
        }
    }
}

/// ATA CHS translation SeaBIOS applies to a drive (CMOS 0x39, two bits per drive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtaTranslation {
    None = 0,
    Lba = 1,
}

impl AtaTranslation {
    /// What QEMU's "auto" picks: LBA translation when the drive has more than 1024 cylinders at
    /// 16 heads and 63 sectors per track.
    pub fn auto(sectors: u64) -> Self {
        if sectors / (16 * 63) > 1024 {
            AtaTranslation::Lba
        } else {
            AtaTranslation::None
        }
    }
}

/// CMOS register numbers.
pub mod reg {
    pub const SHUTDOWN_STATUS: u8 = 0x0F;
    pub const FLOPPY_TYPES: u8 = 0x10;
    pub const EQUIPMENT: u8 = 0x14;
    pub const BASE_MEM_LOW: u8 = 0x15;
    pub const BASE_MEM_HIGH: u8 = 0x16;
    pub const EXT_MEM_LOW: u8 = 0x17;
    pub const EXT_MEM_HIGH: u8 = 0x18;
    pub const EXT_MEM2_LOW: u8 = 0x30;
    pub const EXT_MEM2_HIGH: u8 = 0x31;
    pub const MEM_ABOVE_16M_LOW: u8 = 0x34;
    pub const MEM_ABOVE_16M_HIGH: u8 = 0x35;
    pub const BOOT_ORDER_3: u8 = 0x38;
    pub const ATA_TRANSLATION: u8 = 0x39;
    pub const BOOT_ORDER_1_2: u8 = 0x3D;
    pub const MEM_ABOVE_4G_LOW: u8 = 0x5B;
    pub const MEM_ABOVE_4G_MID: u8 = 0x5C;
    pub const MEM_ABOVE_4G_HIGH: u8 = 0x5D;
    pub const CPU_COUNT_MINUS_1: u8 = 0x5F;
}

/// What the CMOS contents depend on.
#[derive(Clone, Debug)]
pub struct CmosConfig<'a> {
    pub layout: &'a MemoryLayout,
    pub cpus: u8,
    /// Boot order, first choice first (at most three are recorded).
    pub boot_order: &'a [BootDevice],
    /// Sector counts of the four IDE hard disks (primary master, primary slave, secondary
    /// master, secondary slave); `None` for no disk (or a CD).
    pub disks: [Option<u64>; 4],
}

/// The (register, value) pairs to store in CMOS NVRAM.
pub fn pc_cmos(cfg: &CmosConfig<'_>) -> Vec<(u8, u8)> {
    let mut out = Vec::new();
    let put16 = |out: &mut Vec<(u8, u8)>, low: u8, v: u16| {
        out.push((low, v as u8));
        out.push((low + 1, (v >> 8) as u8));
    };
    // 640 KiB conventional memory.
    put16(&mut out, reg::BASE_MEM_LOW, 640);
    // KiB above 1 MiB, saturated at 65535 (the 16-bit field's limit).
    let ext_kib = (cfg.layout.below_4g / 1024)
        .saturating_sub(1024)
        .min(0xFFFF) as u16;
    put16(&mut out, reg::EXT_MEM_LOW, ext_kib);
    put16(&mut out, reg::EXT_MEM2_LOW, ext_kib);
    // 64 KiB units above 16 MiB.
    let above_16m = (cfg.layout.below_4g.saturating_sub(16 << 20) >> 16).min(0xFFFF) as u16;
    put16(&mut out, reg::MEM_ABOVE_16M_LOW, above_16m);
    // 64 KiB units above 4 GiB, 24 bits.
    let above_4g = (cfg.layout.above_4g >> 16).min(0xFF_FFFF);
    out.push((reg::MEM_ABOVE_4G_LOW, above_4g as u8));
    out.push((reg::MEM_ABOVE_4G_MID, (above_4g >> 8) as u8));
    out.push((reg::MEM_ABOVE_4G_HIGH, (above_4g >> 16) as u8));
    out.push((reg::CPU_COUNT_MINUS_1, cfg.cpus.saturating_sub(1)));
    // No floppy drives, no FPU (the interpreter reports none yet), VGA-class display.
    out.push((reg::FLOPPY_TYPES, 0));
    out.push((reg::EQUIPMENT, 0));
    out.push((reg::SHUTDOWN_STATUS, 0));
    let code = |i: usize| cfg.boot_order.get(i).map_or(0, |d| d.cmos_code());
    out.push((reg::BOOT_ORDER_1_2, code(0) | (code(1) << 4)));
    // Bit 0 set: skip the floppy boot-signature check (there is no floppy).
    out.push((reg::BOOT_ORDER_3, (code(2) << 4) | 1));
    let mut translation = 0u8;
    for (i, d) in cfg.disks.iter().enumerate() {
        if let Some(sectors) = d {
            translation |= (AtaTranslation::auto(*sectors) as u8) << (i * 2);
        }
    }
    out.push((reg::ATA_TRANSLATION, translation));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(v: &[(u8, u8)], r: u8) -> u8 {
        v.iter()
            .rev()
            .find(|(i, _)| *i == r)
            .map(|(_, b)| *b)
            .unwrap()
    }

    #[test]
    fn memory_sizes_for_128m() {
        let l = MemoryLayout::pc(128 << 20).unwrap();
        let v = pc_cmos(&CmosConfig {
            layout: &l,
            cpus: 1,
            boot_order: &[BootDevice::Cdrom, BootDevice::HardDisk],
            disks: [Some(2048), None, None, None],
        });
        assert_eq!(get(&v, 0x15) as u16 | (get(&v, 0x16) as u16) << 8, 640);
        // 127 MiB above 1 MiB in KiB saturates the 16-bit field.
        assert_eq!(get(&v, 0x30) as u16 | (get(&v, 0x31) as u16) << 8, 0xFFFF);
        let small = MemoryLayout::pc(32 << 20).unwrap();
        let w = pc_cmos(&CmosConfig {
            layout: &small,
            cpus: 1,
            boot_order: &[],
            disks: [None; 4],
        });
        assert_eq!(
            get(&w, 0x17) as u16 | (get(&w, 0x18) as u16) << 8,
            31 * 1024
        );
        // 112 MiB above 16 MiB in 64 KiB units.
        assert_eq!(get(&v, 0x34) as u16 | (get(&v, 0x35) as u16) << 8, 112 * 16);
        assert_eq!(get(&v, 0x5B), 0);
        assert_eq!(get(&v, 0x5F), 0);
        assert_eq!(get(&v, 0x3D), 0x23);
        assert_eq!(get(&v, 0x38), 0x01);
        assert_eq!(get(&v, 0x39), 0);
    }

    #[test]
    fn large_memory_saturates_and_counts_above_4g() {
        let l = MemoryLayout::pc(6 << 30).unwrap();
        let v = pc_cmos(&CmosConfig {
            layout: &l,
            cpus: 2,
            boot_order: &[BootDevice::HardDisk],
            disks: [Some(8 << 21), None, None, Some(100)],
        });
        assert_eq!(get(&v, 0x30), 0xFF);
        assert_eq!(get(&v, 0x31), 0xFF);
        // 3 GiB above 4 GiB = 0xC000 units of 64 KiB.
        assert_eq!(get(&v, 0x5B), 0x00);
        assert_eq!(get(&v, 0x5C), 0xC0);
        assert_eq!(get(&v, 0x5D), 0x00);
        assert_eq!(get(&v, 0x5F), 1);
        assert_eq!(get(&v, 0x39), 0b01, "8 GiB disk gets LBA, small one none");
    }

    #[test]
    fn boot_letters() {
        assert_eq!(BootDevice::from_letter('c'), Some(BootDevice::HardDisk));
        assert_eq!(BootDevice::from_letter('d'), Some(BootDevice::Cdrom));
        assert_eq!(BootDevice::from_letter('z'), None);
    }
}
