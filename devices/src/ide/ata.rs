//! ATA commands of a hard disk (ATA/ATAPI-6, T13/1410D), PIO data transfers only.
//!
//! Supported: IDENTIFY DEVICE, READ/WRITE SECTORS (+EXT), READ/WRITE MULTIPLE (+EXT), READ/WRITE
//! DMA (+EXT, when the controller has bus-master DMA), SET
//! MULTIPLE MODE, READ VERIFY (+EXT), READ NATIVE MAX ADDRESS (+EXT), FLUSH CACHE (+EXT),
//! INITIALIZE DEVICE PARAMETERS, SET FEATURES, the power-management no-ops, CHECK POWER MODE,
//! RECALIBRATE, SEEK. Anything else is aborted (ERR, ABRT). Addresses outside the disk end the
//! command with IDNF before any data moves.

use super::bmdma::{DmaData, DmaJob};
use super::{
    Drive, Transfer, DEVHEAD_LBA, ERROR_ABRT, ERROR_IDNF, SECTOR_SIZE, STATUS_DRDY, STATUS_DRQ,
    STATUS_DSC,
};

/// NOP (always aborts, ATA-6 §8.23).
pub const CMD_NOP: u8 = 0x00;
/// DEVICE RESET (ATAPI only).
pub const CMD_DEVICE_RESET: u8 = 0x08;
/// READ SECTORS.
pub const CMD_READ_SECTORS: u8 = 0x20;
/// READ SECTORS without retries (obsolete alias).
pub const CMD_READ_SECTORS_NORETRY: u8 = 0x21;
/// READ SECTORS EXT (48-bit).
pub const CMD_READ_SECTORS_EXT: u8 = 0x24;
/// READ DMA EXT.
pub const CMD_READ_DMA_EXT: u8 = 0x25;
/// WRITE DMA EXT.
pub const CMD_WRITE_DMA_EXT: u8 = 0x35;
/// READ DMA.
pub const CMD_READ_DMA: u8 = 0xC8;
/// READ DMA without retries (obsolete alias).
pub const CMD_READ_DMA_NORETRY: u8 = 0xC9;
/// WRITE DMA.
pub const CMD_WRITE_DMA: u8 = 0xCA;
/// WRITE DMA without retries (obsolete alias).
pub const CMD_WRITE_DMA_NORETRY: u8 = 0xCB;
/// READ NATIVE MAX ADDRESS EXT.
pub const CMD_READ_NATIVE_MAX_EXT: u8 = 0x27;
/// READ MULTIPLE EXT.
pub const CMD_READ_MULTIPLE_EXT: u8 = 0x29;
/// WRITE SECTORS.
pub const CMD_WRITE_SECTORS: u8 = 0x30;
/// WRITE SECTORS without retries (obsolete alias).
pub const CMD_WRITE_SECTORS_NORETRY: u8 = 0x31;
/// WRITE SECTORS EXT.
pub const CMD_WRITE_SECTORS_EXT: u8 = 0x34;
/// WRITE MULTIPLE EXT.
pub const CMD_WRITE_MULTIPLE_EXT: u8 = 0x39;
/// READ VERIFY SECTORS.
pub const CMD_READ_VERIFY: u8 = 0x40;
/// READ VERIFY SECTORS without retries.
pub const CMD_READ_VERIFY_NORETRY: u8 = 0x41;
/// READ VERIFY SECTORS EXT.
pub const CMD_READ_VERIFY_EXT: u8 = 0x42;
/// EXECUTE DEVICE DIAGNOSTIC (handled by the channel: it addresses both devices).
pub const CMD_EXECUTE_DEVICE_DIAGNOSTIC: u8 = 0x90;
/// INITIALIZE DEVICE PARAMETERS.
pub const CMD_INITIALIZE_DEVICE_PARAMETERS: u8 = 0x91;
/// PACKET (ATAPI).
pub const CMD_PACKET: u8 = 0xA0;
/// IDENTIFY PACKET DEVICE (ATAPI).
pub const CMD_IDENTIFY_PACKET_DEVICE: u8 = 0xA1;
/// READ MULTIPLE.
pub const CMD_READ_MULTIPLE: u8 = 0xC4;
/// WRITE MULTIPLE.
pub const CMD_WRITE_MULTIPLE: u8 = 0xC5;
/// SET MULTIPLE MODE.
pub const CMD_SET_MULTIPLE_MODE: u8 = 0xC6;
/// CHECK POWER MODE.
pub const CMD_CHECK_POWER_MODE: u8 = 0xE5;
/// FLUSH CACHE.
pub const CMD_FLUSH_CACHE: u8 = 0xE7;
/// IDENTIFY DEVICE.
pub const CMD_IDENTIFY_DEVICE: u8 = 0xEC;
/// FLUSH CACHE EXT.
pub const CMD_FLUSH_CACHE_EXT: u8 = 0xEA;
/// SET FEATURES.
pub const CMD_SET_FEATURES: u8 = 0xEF;
/// READ NATIVE MAX ADDRESS.
pub const CMD_READ_NATIVE_MAX: u8 = 0xF8;

/// Largest READ/WRITE MULTIPLE block, in sectors (IDENTIFY word 47).
pub const MAX_MULTIPLE: u16 = 16;
/// Model string in IDENTIFY (words 27–46).
pub const DISK_MODEL: &str = "PCVM HARDDISK";
/// Firmware revision in IDENTIFY (words 23–26).
pub const FIRMWARE_REVISION: &str = "1.0";
/// Largest LBA28 capacity.
const LBA28_MAX: u64 = 0x0FFF_FFFF;

/// How a read/write command addresses the disk and how many sectors per DRQ block.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Addressing {
    /// 28-bit LBA or CHS, by the device/head LBA bit.
    Lba28,
    /// 48-bit LBA (the EXT commands).
    Lba48,
}

impl Addressing {
    fn from_lba48(lba48: bool) -> Self {
        if lba48 {
            Addressing::Lba48
        } else {
            Addressing::Lba28
        }
    }
}

/// Put `s` into IDENTIFY words, two characters per word, first character in the high byte
/// (ATA-6 §8.15.8), padded with spaces.
pub(crate) fn put_string(words: &mut [u16], s: &str) {
    let bytes = s.as_bytes();
    for (i, w) in words.iter_mut().enumerate() {
        let hi = bytes.get(2 * i).copied().unwrap_or(b' ');
        let lo = bytes.get(2 * i + 1).copied().unwrap_or(b' ');
        *w = u16::from(hi) << 8 | u16::from(lo);
    }
}

/// IDENTIFY data as bytes, with the integrity word 255 (signature 0xA5, checksum).
pub(crate) fn identify_bytes(mut words: [u16; 256]) -> Vec<u8> {
    words[255] = 0x00A5;
    let sum = words
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .fold(0u8, |a, b| a.wrapping_add(b));
    words[255] |= u16::from(0u8.wrapping_sub(sum)) << 8;
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

impl Drive {
    /// IDENTIFY DEVICE data (ATA-6 §8.15, table 26).
    pub(crate) fn identify_disk(&self) -> [u16; 256] {
        let mut w = [0u16; 256];
        w[0] = 0x0040; // fixed, not removable
        w[1] = self.cylinders;
        w[3] = u16::from(self.heads);
        w[6] = u16::from(self.spt);
        put_string(&mut w[10..20], &format!("PCVM{:016}", self.sectors));
        w[20] = 3;
        w[21] = 512;
        w[22] = 4;
        put_string(&mut w[23..27], FIRMWARE_REVISION);
        put_string(&mut w[27..47], DISK_MODEL);
        w[47] = 0x8000 | MAX_MULTIPLE;
        w[48] = 1;
        w[49] = (1 << 11) | (1 << 9); // IORDY, LBA
        w[51] = 0x200;
        w[52] = 0x200;
        w[53] = 0x0003; // words 54-58 and 64-70 valid
        let cur_cyl = self.current_cylinders();
        w[54] = cur_cyl;
        w[55] = u16::from(self.cur_heads);
        w[56] = u16::from(self.cur_spt);
        let cur_cap = u32::from(cur_cyl) * u32::from(self.cur_heads) * u32::from(self.cur_spt);
        w[57] = cur_cap as u16;
        w[58] = (cur_cap >> 16) as u16;
        if self.multiple != 0 {
            w[59] = 0x100 | self.multiple;
        }
        let lba28 = self.sectors.min(LBA28_MAX) as u32;
        w[60] = lba28 as u16;
        w[61] = (lba28 >> 16) as u16;
        w[64] = 0x0003; // PIO modes 3 and 4
        w[65] = 120;
        w[66] = 120;
        w[67] = 120;
        w[68] = 120;
        w[80] = 0x007E; // ATA-1 .. ATA-6
        w[82] = (1 << 14) | (1 << 5); // NOP, write cache
        w[83] = (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10); // FLUSH EXT, FLUSH, LBA48
        w[84] = 1 << 14;
        w[85] = (1 << 14) | (1 << 5);
        w[86] = (1 << 13) | (1 << 12) | (1 << 10);
        w[87] = 1 << 14;
        w[93] = self.reset_result_word();
        self.identify_dma_words(&mut w);
        for (i, word) in w[100..104].iter_mut().enumerate() {
            *word = (self.sectors >> (16 * i)) as u16;
        }
        w
    }

    /// DMA capability words (49 bit 8, 53 bit 2, 63, 88) when the controller has bus-master
    /// DMA: multiword modes 0–2 and Ultra DMA modes 0–5, with the mode SET FEATURES chose.
    pub(crate) fn identify_dma_words(&self, w: &mut [u16; 256]) {
        if !self.dma {
            return;
        }
        w[49] |= 1 << 8;
        w[53] |= 1 << 2;
        w[63] = 0x0007;
        w[88] = 0x003F;
        match self.xfer_mode {
            m @ 0x20..=0x22 => w[63] |= 1 << (8 + (m & 7)),
            m @ 0x40..=0x45 => w[88] |= 1 << (8 + (m & 7)),
            _ => {}
        }
    }

    /// Word 93, hardware reset result: 80-conductor cable, this device passed diagnostics.
    pub(crate) fn reset_result_word(&self) -> u16 {
        let own = if self.slot == 0 { 0x000B } else { 0x0B00 };
        0x6000 | own
    }

    /// Cylinders under the current translation (INITIALIZE DEVICE PARAMETERS).
    fn current_cylinders(&self) -> u16 {
        let per_cyl = u64::from(self.cur_heads) * u64::from(self.cur_spt);
        if per_cyl == 0 {
            return 0;
        }
        (self.sectors.min(16383 * 16 * 63) / per_cyl).min(65535) as u16
    }

    /// The starting sector a command addresses, or `None` for an invalid CHS address.
    fn command_lba(&self, addressing: Addressing) -> Option<u64> {
        let tf = &self.tf;
        match addressing {
            Addressing::Lba48 => Some(
                u64::from(tf.hob_hcyl) << 40
                    | u64::from(tf.hob_lcyl) << 32
                    | u64::from(tf.hob_sector) << 24
                    | u64::from(tf.hcyl) << 16
                    | u64::from(tf.lcyl) << 8
                    | u64::from(tf.sector),
            ),
            Addressing::Lba28 if tf.select & DEVHEAD_LBA != 0 => Some(
                u64::from(tf.select & 0x0F) << 24
                    | u64::from(tf.hcyl) << 16
                    | u64::from(tf.lcyl) << 8
                    | u64::from(tf.sector),
            ),
            Addressing::Lba28 => {
                let cyl = u64::from(tf.hcyl) << 8 | u64::from(tf.lcyl);
                let head = u64::from(tf.select & 0x0F);
                let sector = u64::from(tf.sector);
                let (heads, spt) = (u64::from(self.cur_heads), u64::from(self.cur_spt));
                if sector == 0 || sector > spt || head >= heads {
                    return None;
                }
                Some((cyl * heads + head) * spt + sector - 1)
            }
        }
    }

    /// The sector count of a command (0 means 256, or 65536 for 48-bit commands).
    fn command_count(&self, addressing: Addressing) -> u64 {
        match addressing {
            Addressing::Lba28 => match self.tf.nsector {
                0 => 256,
                n => u64::from(n),
            },
            Addressing::Lba48 => {
                match u64::from(self.tf.hob_nsector) << 8 | u64::from(self.tf.nsector) {
                    0 => 65536,
                    n => n,
                }
            }
        }
    }

    /// Record `lba` in the taskfile (the last sector transferred, or the failing one).
    fn set_lba(&mut self, lba: u64, addressing: Addressing) {
        let tf = &mut self.tf;
        match addressing {
            Addressing::Lba48 => {
                tf.sector = lba as u8;
                tf.lcyl = (lba >> 8) as u8;
                tf.hcyl = (lba >> 16) as u8;
                tf.hob_sector = (lba >> 24) as u8;
                tf.hob_lcyl = (lba >> 32) as u8;
                tf.hob_hcyl = (lba >> 40) as u8;
            }
            Addressing::Lba28 if tf.select & DEVHEAD_LBA != 0 => {
                tf.sector = lba as u8;
                tf.lcyl = (lba >> 8) as u8;
                tf.hcyl = (lba >> 16) as u8;
                tf.select = (tf.select & 0xF0) | ((lba >> 24) as u8 & 0x0F);
            }
            Addressing::Lba28 => {
                let (heads, spt) = (u64::from(self.cur_heads), u64::from(self.cur_spt));
                if heads == 0 || spt == 0 {
                    return;
                }
                let cyl = lba / (heads * spt);
                let rest = lba % (heads * spt);
                tf.hcyl = (cyl >> 8) as u8;
                tf.lcyl = cyl as u8;
                tf.select = (tf.select & 0xF0) | ((rest / spt) as u8 & 0x0F);
                tf.sector = (rest % spt + 1) as u8;
            }
        }
    }

    /// Validate the addressed range; on failure the command ends with IDNF.
    fn command_range(&mut self, addressing: Addressing) -> Option<(u64, u64)> {
        let Some(lba) = self.command_lba(addressing) else {
            self.fail(ERROR_IDNF);
            return None;
        };
        let count = self.command_count(addressing);
        match lba.checked_add(count) {
            Some(end) if end <= self.sectors => Some((lba, count)),
            _ => {
                self.fail(ERROR_IDNF);
                None
            }
        }
    }

    /// Run an ATA command on a disk (ATA-6 §8).
    pub(crate) fn ata_command(&mut self, cmd: u8) {
        use Addressing::{Lba28, Lba48};
        match cmd {
            CMD_IDENTIFY_DEVICE => {
                let data = identify_bytes(self.identify_disk());
                self.start_block(Some(data), SECTOR_SIZE);
                self.transfer = Transfer::DataIn;
                self.irq = true;
            }
            CMD_READ_SECTORS | CMD_READ_SECTORS_NORETRY => self.start_read(Lba28, 1),
            CMD_READ_SECTORS_EXT => self.start_read(Lba48, 1),
            CMD_READ_MULTIPLE => self.start_multiple(Lba28, false),
            CMD_READ_MULTIPLE_EXT => self.start_multiple(Lba48, false),
            CMD_WRITE_SECTORS | CMD_WRITE_SECTORS_NORETRY => self.start_write(Lba28, 1),
            CMD_WRITE_SECTORS_EXT => self.start_write(Lba48, 1),
            CMD_WRITE_MULTIPLE => self.start_multiple(Lba28, true),
            CMD_WRITE_MULTIPLE_EXT => self.start_multiple(Lba48, true),
            CMD_READ_DMA | CMD_READ_DMA_NORETRY => self.start_dma_command(Lba28, true),
            CMD_READ_DMA_EXT => self.start_dma_command(Lba48, true),
            CMD_WRITE_DMA | CMD_WRITE_DMA_NORETRY => self.start_dma_command(Lba28, false),
            CMD_WRITE_DMA_EXT => self.start_dma_command(Lba48, false),
            CMD_READ_VERIFY | CMD_READ_VERIFY_NORETRY | CMD_READ_VERIFY_EXT => {
                let a = if cmd == CMD_READ_VERIFY_EXT {
                    Lba48
                } else {
                    Lba28
                };
                if let Some((lba, count)) = self.command_range(a) {
                    self.set_lba(lba + count - 1, a);
                    self.complete(true);
                }
            }
            CMD_READ_NATIVE_MAX | CMD_READ_NATIVE_MAX_EXT => {
                let max = self.sectors.saturating_sub(1);
                if cmd == CMD_READ_NATIVE_MAX {
                    self.tf.select |= DEVHEAD_LBA;
                    self.set_lba(max.min(LBA28_MAX), Lba28);
                } else {
                    self.set_lba(max, Lba48);
                }
                self.complete(true);
            }
            CMD_SET_MULTIPLE_MODE => {
                let n = u16::from(self.tf.nsector);
                if n <= MAX_MULTIPLE && (n == 0 || n.is_power_of_two()) {
                    self.multiple = n;
                    self.complete(true);
                } else {
                    self.fail(ERROR_ABRT);
                }
            }
            CMD_FLUSH_CACHE | CMD_FLUSH_CACHE_EXT => {
                let ok = self.backend.as_mut().is_some_and(|b| b.flush().is_ok());
                if ok {
                    self.complete(true);
                } else {
                    tracing::warn!("ide: flush of the disk image failed");
                    self.fail(ERROR_ABRT);
                }
            }
            CMD_INITIALIZE_DEVICE_PARAMETERS => {
                // Logical sectors per track from SC, heads from DH bits 3:0 plus one.
                let spt = self.tf.nsector;
                if spt == 0 {
                    self.fail(ERROR_ABRT);
                    return;
                }
                self.cur_spt = spt;
                self.cur_heads = (self.tf.select & 0x0F) + 1;
                self.complete(true);
            }
            CMD_SET_FEATURES => self.set_features(),
            CMD_CHECK_POWER_MODE | 0x98 => {
                self.tf.nsector = 0xFF; // active or idle
                self.complete(true);
            }
            // STANDBY/IDLE (immediate), SLEEP, and their old aliases: no power states here.
            0xE0..=0xE3 | 0xE6 | 0x94..=0x97 | 0x99 => self.complete(true),
            // RECALIBRATE and SEEK: no heads to move.
            0x10..=0x1F | 0x70..=0x7F => self.complete(true),
            _ => {
                tracing::debug!("ide: disk aborts command {cmd:#04x}");
                self.fail(ERROR_ABRT);
            }
        }
    }

    /// SET FEATURES (ATA-6 §8.37): the subcommands firmware and drivers send are accepted
    /// (transfer mode, write cache, read look-ahead, reverting to defaults).
    pub(crate) fn set_features(&mut self) {
        match self.tf.feature {
            0x03 => {
                // Transfer mode in SC: PIO default/flow control, multiword or Ultra DMA.
                let mode = self.tf.nsector;
                let ok = match mode {
                    0x00 | 0x01 | 0x08..=0x0C => true,
                    0x20..=0x22 | 0x40..=0x45 => self.dma,
                    _ => false,
                };
                if ok {
                    self.xfer_mode = mode;
                    self.complete(true);
                } else {
                    self.fail(ERROR_ABRT);
                }
            }
            0x02 | 0x05 | 0x55 | 0x66 | 0x82 | 0x85 | 0xAA | 0xCC => self.complete(true),
            f => {
                tracing::debug!("ide: SET FEATURES subcommand {f:#04x} aborted");
                self.fail(ERROR_ABRT);
            }
        }
    }

    /// READ/WRITE DMA: check the range, then wait for the bus master (no interrupt until the
    /// transfer is done).
    fn start_dma_command(&mut self, a: Addressing, to_memory: bool) {
        if !self.dma || (!to_memory && self.backend.as_ref().is_none_or(|b| b.read_only())) {
            self.fail(ERROR_ABRT);
            return;
        }
        if let Some((lba, count)) = self.command_range(a) {
            self.set_lba(lba + count - 1, a);
            self.start_dma(DmaJob {
                to_memory,
                len: count * SECTOR_SIZE as u64,
                data: DmaData::Backend {
                    offset: lba * SECTOR_SIZE as u64,
                },
            });
        }
    }

    /// READ/WRITE MULTIPLE: blocks of the count SET MULTIPLE MODE chose; aborted before that
    /// command enabled it (ATA/ATAPI-6 §8.30, §8.51).
    fn start_multiple(&mut self, a: Addressing, write: bool) {
        if self.multiple == 0 {
            self.fail(ERROR_ABRT);
        } else if write {
            self.start_write(a, u64::from(self.multiple));
        } else {
            self.start_read(a, u64::from(self.multiple));
        }
    }

    fn start_read(&mut self, a: Addressing, per_block: u64) {
        if let Some((lba, count)) = self.command_range(a) {
            self.ata_read_next_with(lba, count, per_block, a);
        }
    }

    fn start_write(&mut self, a: Addressing, per_block: u64) {
        if self.backend.as_ref().is_none_or(|b| b.read_only()) {
            self.fail(ERROR_ABRT);
            return;
        }
        if let Some((lba, count)) = self.command_range(a) {
            let n = per_block.min(count);
            self.start_block(None, n as usize * SECTOR_SIZE);
            self.transfer = Transfer::AtaWrite {
                lba,
                remaining: count,
                per_block,
                lba48: a == Addressing::Lba48,
            };
            // No interrupt before the first block of a PIO data-out command (ATA-6 §9.8).
        }
    }

    /// The previous data-in block was read: load the next or finish (no interrupt at the
    /// end of a PIO data-in command).
    pub(crate) fn ata_read_next(&mut self, lba: u64, remaining: u64, per_block: u64, lba48: bool) {
        if remaining == 0 {
            self.complete(false);
            return;
        }
        self.ata_read_next_with(lba, remaining, per_block, Addressing::from_lba48(lba48));
    }

    fn ata_read_next_with(&mut self, lba: u64, remaining: u64, per_block: u64, a: Addressing) {
        let n = per_block.min(remaining);
        let mut data = vec![0u8; n as usize * SECTOR_SIZE];
        let ok = self
            .backend
            .as_mut()
            .is_some_and(|b| b.read_at(lba * SECTOR_SIZE as u64, &mut data).is_ok());
        if !ok {
            tracing::warn!("ide: reading sector {lba} of the disk image failed");
            self.set_lba(lba, a);
            self.fail(ERROR_ABRT);
            return;
        }
        self.set_lba(lba + n - 1, a);
        self.start_block(Some(data), 0);
        self.transfer = Transfer::AtaRead {
            lba: lba + n,
            remaining: remaining - n,
            per_block,
            lba48: a == Addressing::Lba48,
        };
        self.irq = true;
    }

    /// A data-out block is full: write it, then ask for the next or finish.
    pub(crate) fn ata_write_block(
        &mut self,
        lba: u64,
        remaining: u64,
        per_block: u64,
        lba48: bool,
    ) {
        let a = Addressing::from_lba48(lba48);
        let n = per_block.min(remaining);
        let data = std::mem::take(&mut self.buf);
        let ok = self
            .backend
            .as_mut()
            .is_some_and(|b| b.write_at(lba * SECTOR_SIZE as u64, &data).is_ok());
        if !ok {
            tracing::warn!("ide: writing sector {lba} of the disk image failed");
            self.set_lba(lba, a);
            self.fail(ERROR_ABRT);
            return;
        }
        self.set_lba(lba + n - 1, a);
        let remaining = remaining - n;
        if remaining == 0 {
            self.complete(true);
            return;
        }
        self.start_block(None, per_block.min(remaining) as usize * SECTOR_SIZE);
        self.status = STATUS_DRDY | STATUS_DSC | STATUS_DRQ;
        self.transfer = Transfer::AtaWrite {
            lba: lba + n,
            remaining,
            per_block,
            lba48,
        };
        self.irq = true;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Rig;
    use super::super::*;
    use super::*;

    const BASE: u16 = 0x1F0;
    const CTRL: u16 = 0x3F6;

    /// A disk whose sector n is filled with byte n (mod 251) and its LBA in the first 8 bytes.
    fn pattern_disk(sectors: usize) -> Vec<u8> {
        let mut d = vec![0u8; sectors * SECTOR_SIZE];
        for (n, s) in d.chunks_mut(SECTOR_SIZE).enumerate() {
            s.fill((n % 251) as u8);
            s[..8].copy_from_slice(&(n as u64).to_le_bytes());
        }
        d
    }

    fn rig_with_disk(sectors: usize) -> Rig {
        let mut r = Rig::new();
        r.ide
            .attach(0, 0, Drive::disk(MemBackend::new(pattern_disk(sectors))))
            .unwrap();
        r
    }

    /// SeaBIOS's ata_detect: DH, SC/SN read-back, SRST pulse, IDENTIFY PACKET, then IDENTIFY.
    #[test]
    fn seabios_probe_sequence_finds_the_disk() {
        let mut r = rig_with_disk(100);
        assert_ne!(r.inb(BASE + 7), 0xFF, "not a floating bus");
        r.outb(BASE + 6, 0xA0);
        let dh = r.inb(BASE + 6);
        r.outb(BASE + 2, 0x55);
        r.outb(BASE + 3, 0xAA);
        assert_eq!((r.inb(BASE + 2), r.inb(BASE + 3), dh), (0x55, 0xAA, 0xA0));
        r.outb(CTRL, 0x0E);
        assert_eq!(r.inb(CTRL) & STATUS_BSY, STATUS_BSY);
        r.outb(CTRL, 0x0A);
        assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_DSC);
        assert_eq!((r.inb(BASE + 4), r.inb(BASE + 5)), (0, 0), "ATA signature");
        assert_eq!((r.inb(BASE + 2), r.inb(BASE + 3)), (1, 1));
        assert_eq!(r.inb(BASE + 1), 1, "diagnostic passed");
        // IDENTIFY PACKET DEVICE is aborted by a disk.
        r.outb(BASE + 7, CMD_IDENTIFY_PACKET_DEVICE);
        let st = r.inb(BASE + 7);
        assert_eq!(st & (STATUS_ERR | STATUS_DRQ | STATUS_BSY), STATUS_ERR);
        assert_eq!(r.inb(BASE + 1), ERROR_ABRT);
        assert_eq!(st & STATUS_DRDY, STATUS_DRDY);
        r.outb(BASE + 7, CMD_IDENTIFY_DEVICE);
        assert!(!r.irq14(), "nIEN set by the SRST sequence");
        assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
        let id = r.insw(BASE, 512);
        assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_DSC);
        let word = |i: usize| u16::from_le_bytes([id[2 * i], id[2 * i + 1]]);
        assert_eq!(word(0), 0x0040);
        let model: String = (27..47)
            .flat_map(|i| word(i).to_be_bytes())
            .map(char::from)
            .collect();
        assert_eq!(model.trim_end(), "PCVM HARDDISK");
        assert_eq!((word(1), word(3), word(6)), (2, 16, 63));
        assert_eq!(u32::from(word(60)) | u32::from(word(61)) << 16, 100);
        assert_ne!(word(83) & (1 << 10), 0, "LBA48");
        assert_eq!(word(100), 100);
        assert_eq!((word(101), word(102), word(103)), (0, 0, 0));
        assert_eq!(word(93) & 0x6000, 0x6000);
        assert_eq!(word(255) & 0xFF, 0xA5);
        assert_eq!(
            id.iter().fold(0u8, |a, &b| a.wrapping_add(b)),
            0,
            "checksum"
        );
    }

    /// READ SECTORS as SeaBIOS does it: one DRQ block per sector, DRQ-only status between.
    #[test]
    fn read_sectors_lba28_status_sequencing_and_irq() {
        let mut r = rig_with_disk(64);
        r.outb(CTRL, 0x08); // nIEN clear
        r.outb(BASE + 6, 0xE0);
        r.outb(BASE + 2, 3);
        r.outb(BASE + 3, 10);
        r.outb(BASE + 4, 0);
        r.outb(BASE + 5, 0);
        r.outb(BASE + 7, CMD_READ_SECTORS);
        for n in 10..13u64 {
            assert!(r.irq14(), "IRQ for the block of sector {n}");
            let st = r.inb(BASE + 7);
            assert!(!r.irq14(), "status read acknowledges");
            assert_eq!(st & (STATUS_BSY | STATUS_DRQ | STATUS_ERR), STATUS_DRQ);
            let s = r.insw(BASE, SECTOR_SIZE);
            assert_eq!(u64::from_le_bytes(s[..8].try_into().unwrap()), n);
            assert!(s[8..].iter().all(|&b| b == (n % 251) as u8));
        }
        assert!(!r.irq14(), "no interrupt after the last data-in block");
        assert_eq!(r.inb(CTRL), STATUS_DRDY | STATUS_DSC, "clean at the end");
        assert_eq!(r.inb(BASE + 3), 12, "taskfile holds the last sector");
    }

    #[test]
    fn read_sectors_ext_lba48_with_hob_and_32_bit_data_reads() {
        let mut r = rig_with_disk(300);
        r.outb(BASE + 6, 0x40);
        // High bytes first, then low bytes (ATA-6 §9.10 48-bit taskfile loading).
        r.outb(BASE + 2, 0);
        r.outb(BASE + 3, 0);
        r.outb(BASE + 4, 0);
        r.outb(BASE + 5, 0);
        r.outb(BASE + 2, 2);
        r.outb(BASE + 3, 0x2A);
        r.outb(BASE + 4, 0x01);
        r.outb(BASE + 5, 0);
        r.outb(BASE + 7, CMD_READ_SECTORS_EXT);
        for n in [0x12Au64, 0x12B] {
            assert_eq!(
                r.inb(BASE + 7) & (STATUS_BSY | STATUS_DRQ | STATUS_ERR),
                STATUS_DRQ
            );
            let mut s = Vec::new();
            for _ in 0..SECTOR_SIZE / 4 {
                let mut b = [0u8; 4];
                r.ide.read(
                    BusAccess {
                        offset: 0,
                        addr: 0x1F0,
                    },
                    &mut b,
                );
                s.extend_from_slice(&b);
            }
            assert_eq!(u64::from_le_bytes(s[..8].try_into().unwrap()), n);
        }
        assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_DSC);
        // HOB reads the previous bytes.
        r.outb(CTRL, 0x80 | 0x02);
        assert_eq!(r.inb(BASE + 4), 0);
        r.outb(CTRL, 0x02);
        assert_eq!(r.inb(BASE + 4), 0x01);
        assert_eq!(r.inb(BASE + 3), 0x2B);
    }

    #[test]
    fn out_of_range_lba_gives_idnf_without_data() {
        let mut r = rig_with_disk(16);
        r.outb(BASE + 6, 0xE0);
        r.outb(BASE + 2, 2);
        r.outb(BASE + 3, 15);
        r.outb(BASE + 4, 0);
        r.outb(BASE + 5, 0);
        r.outb(BASE + 7, CMD_READ_SECTORS);
        assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_ERR);
        assert_eq!(r.inb(BASE + 1), ERROR_IDNF);
        assert_eq!(r.inw(BASE), 0xFFFF, "no data phase");
        // A huge LBA48 address and a write past the end fail the same way.
        for &cmd in &[CMD_READ_SECTORS_EXT, CMD_WRITE_SECTORS_EXT] {
            for reg in 2..=5 {
                r.outb(BASE + reg, 0xFF);
                r.outb(BASE + reg, 0xFF);
            }
            r.outb(BASE + 7, cmd);
            assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_ERR);
            assert_eq!(r.inb(BASE + 1), ERROR_IDNF);
        }
        // An invalid CHS sector number (0) is IDNF too.
        r.outb(BASE + 6, 0xA0);
        r.outb(BASE + 2, 1);
        r.outb(BASE + 3, 0);
        r.outb(BASE + 7, CMD_READ_SECTORS);
        assert_eq!(r.inb(BASE + 1), ERROR_IDNF);
    }

    #[test]
    fn write_then_read_back_chs_and_multiple() {
        let mut r = rig_with_disk(2048);
        // SET MULTIPLE MODE 4, then WRITE MULTIPLE 6 sectors at CHS 0/1/1 (LBA 63).
        r.outb(BASE + 6, 0xA0);
        r.outb(BASE + 2, 3);
        r.outb(BASE + 7, CMD_SET_MULTIPLE_MODE);
        assert_eq!(
            r.inb(BASE + 7) & STATUS_ERR,
            STATUS_ERR,
            "3 is not a power of two"
        );
        r.outb(BASE + 2, 4);
        r.outb(BASE + 7, CMD_SET_MULTIPLE_MODE);
        assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_DSC);
        r.outb(CTRL, 0x00);
        r.outb(BASE + 6, 0xA1); // head 1
        r.outb(BASE + 2, 6);
        r.outb(BASE + 3, 1);
        r.outb(BASE + 4, 0);
        r.outb(BASE + 5, 0);
        r.outb(BASE + 7, CMD_WRITE_MULTIPLE);
        assert!(!r.irq14(), "no IRQ before the first data-out block");
        let mut blocks = 0;
        for i in 0..6 * SECTOR_SIZE / 2 {
            if i % (4 * SECTOR_SIZE / 2) == 0 || i == 4 * SECTOR_SIZE / 2 {
                assert_eq!(r.inb(BASE + 7) & (STATUS_DRQ | STATUS_ERR), STATUS_DRQ);
                blocks += 1;
            }
            r.outw(BASE, 0xC000 | i as u16);
        }
        assert_eq!(blocks, 2);
        assert!(r.irq14(), "completion interrupt");
        assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_DSC);
        // Read LBA 62..=69 back with READ SECTORS EXT.
        r.outb(BASE + 6, 0x40);
        r.outb(BASE + 2, 0);
        r.outb(BASE + 2, 8);
        r.outb(BASE + 3, 0);
        r.outb(BASE + 3, 62);
        r.outb(BASE + 4, 0);
        r.outb(BASE + 4, 0);
        r.outb(BASE + 5, 0);
        r.outb(BASE + 5, 0);
        r.outb(BASE + 7, CMD_READ_SECTORS_EXT);
        let mut all = Vec::new();
        for _ in 0..8 {
            all.extend(r.insw(BASE, SECTOR_SIZE));
        }
        assert_eq!(u64::from_le_bytes(all[..8].try_into().unwrap()), 62);
        let written: Vec<u8> = (0..6 * SECTOR_SIZE / 2)
            .flat_map(|i| (0xC000u16 | i as u16).to_le_bytes())
            .collect();
        assert_eq!(&all[SECTOR_SIZE..7 * SECTOR_SIZE], &written[..]);
        assert_eq!(
            u64::from_le_bytes(all[7 * SECTOR_SIZE..][..8].try_into().unwrap()),
            69
        );
    }

    #[test]
    fn unknown_and_refused_commands_abort() {
        let mut r = rig_with_disk(16);
        for cmd in [CMD_NOP, 0x50, CMD_PACKET, CMD_READ_MULTIPLE, 0xFF] {
            r.outb(BASE + 7, cmd);
            assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_ERR, "{cmd:#x}");
            assert_eq!(r.inb(BASE + 1), ERROR_ABRT);
        }
        r.outb(BASE + 1, 0x03);
        r.outb(BASE + 7, CMD_SET_FEATURES);
        assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_DSC);
        r.outb(BASE + 1, 0x77);
        r.outb(BASE + 7, CMD_SET_FEATURES);
        assert_eq!(r.inb(BASE + 1), ERROR_ABRT);
        for cmd in [
            CMD_FLUSH_CACHE,
            CMD_FLUSH_CACHE_EXT,
            0xE0,
            0xE1,
            CMD_CHECK_POWER_MODE,
        ] {
            r.outb(BASE + 7, cmd);
            assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_DSC, "{cmd:#x}");
        }
        // A read-only image refuses writes.
        let mut r = Rig::new();
        r.ide
            .attach(0, 0, Drive::disk(MemBackend::read_only(vec![0; 4096])))
            .unwrap();
        r.outb(BASE + 6, 0xE0);
        r.outb(BASE + 2, 1);
        r.outb(BASE + 7, CMD_WRITE_SECTORS);
        assert_eq!(r.inb(BASE + 1), ERROR_ABRT);
    }

    #[test]
    fn initialize_device_parameters_changes_chs_translation() {
        let mut r = rig_with_disk(4096);
        // 4 heads, 32 sectors per track.
        r.outb(BASE + 6, 0xA3);
        r.outb(BASE + 2, 32);
        r.outb(BASE + 7, CMD_INITIALIZE_DEVICE_PARAMETERS);
        assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_DSC);
        // C/H/S 1/2/5 → ((1*4)+2)*32 + 4 = 196.
        r.outb(BASE + 6, 0xA2);
        r.outb(BASE + 2, 1);
        r.outb(BASE + 3, 5);
        r.outb(BASE + 4, 1);
        r.outb(BASE + 5, 0);
        r.outb(BASE + 7, CMD_READ_SECTORS);
        let s = r.insw(BASE, SECTOR_SIZE);
        assert_eq!(u64::from_le_bytes(s[..8].try_into().unwrap()), 196);
        r.outb(BASE + 7, CMD_IDENTIFY_DEVICE);
        let id = r.insw(BASE, 512);
        assert_eq!(
            u16::from_le_bytes([id[110], id[111]]),
            4,
            "word 55: current heads"
        );
        assert_eq!(
            u16::from_le_bytes([id[112], id[113]]),
            32,
            "word 56: current spt"
        );
        // Head 4 is now outside the translation.
        r.outb(BASE + 6, 0xA4);
        r.outb(BASE + 3, 1);
        r.outb(BASE + 7, CMD_READ_SECTORS);
        assert_eq!(r.inb(BASE + 1), ERROR_IDNF);
    }

    #[test]
    fn failing_backend_reports_error_status() {
        struct Broken;
        impl BlockBackend for Broken {
            fn size(&self) -> u64 {
                1 << 20
            }
            fn read_at(&mut self, _: u64, _: &mut [u8]) -> std::io::Result<()> {
                Err(std::io::Error::other("gone"))
            }
            fn write_at(&mut self, _: u64, _: &[u8]) -> std::io::Result<()> {
                Err(std::io::Error::other("gone"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::Error::other("gone"))
            }
        }
        let mut r = Rig::new();
        r.ide.attach(0, 0, Drive::disk(Broken)).unwrap();
        r.outb(BASE + 6, 0xE0);
        r.outb(BASE + 2, 1);
        r.outb(BASE + 7, CMD_READ_SECTORS);
        assert_eq!(r.inb(BASE + 7) & STATUS_ERR, STATUS_ERR);
        r.outb(BASE + 7, CMD_WRITE_SECTORS);
        for _ in 0..256 {
            r.outw(BASE, 0);
        }
        assert_eq!(r.inb(BASE + 7) & STATUS_ERR, STATUS_ERR);
        r.outb(BASE + 7, CMD_FLUSH_CACHE);
        assert_eq!(r.inb(BASE + 7) & STATUS_ERR, STATUS_ERR);
    }
}
