//! An ATAPI CD-ROM: the ATA commands a packet device accepts and the SCSI/MMC packet commands
//! (SFF-8020i; SPC-3 and MMC-3 for the command blocks), with 2048-byte sectors.
//!
//! Packet commands: TEST UNIT READY, REQUEST SENSE, INQUIRY, START STOP UNIT, PREVENT ALLOW
//! MEDIUM REMOVAL, READ CAPACITY, READ(10), READ(12), SEEK(10), READ TOC (formats 0 and 1),
//! MODE SENSE(6)/(10) (error recovery and capabilities pages), GET CONFIGURATION (profile list
//! and current profile), and a "no event" GET EVENT STATUS NOTIFICATION. Others end with CHECK
//! CONDITION, ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE. Data moves by PIO in DRQ blocks
//! no larger than the byte count limit the host programs into the cylinder registers.

use super::ata::{
    identify_bytes, put_string, CMD_CHECK_POWER_MODE, CMD_DEVICE_RESET, CMD_IDENTIFY_DEVICE,
    CMD_IDENTIFY_PACKET_DEVICE, CMD_PACKET, CMD_SET_FEATURES, FIRMWARE_REVISION,
};
use super::bmdma::{DmaData, DmaJob};
use super::{Drive, Sense, Transfer, ERROR_ABRT, IREASON_COD, IREASON_IO};

/// Bytes in a CD sector.
pub const CD_SECTOR_SIZE: usize = 2048;
/// Bytes in an ATAPI command packet.
pub const PACKET_SIZE: usize = 12;
/// Model string in IDENTIFY PACKET DEVICE.
pub const CDROM_MODEL: &str = "PCVM DVD-ROM";

/// TEST UNIT READY.
pub const SCSI_TEST_UNIT_READY: u8 = 0x00;
/// REQUEST SENSE.
pub const SCSI_REQUEST_SENSE: u8 = 0x03;
/// INQUIRY.
pub const SCSI_INQUIRY: u8 = 0x12;
/// MODE SENSE(6).
pub const SCSI_MODE_SENSE_6: u8 = 0x1A;
/// START STOP UNIT.
pub const SCSI_START_STOP_UNIT: u8 = 0x1B;
/// PREVENT ALLOW MEDIUM REMOVAL.
pub const SCSI_PREVENT_ALLOW: u8 = 0x1E;
/// READ CAPACITY.
pub const SCSI_READ_CAPACITY: u8 = 0x25;
/// READ(10).
pub const SCSI_READ_10: u8 = 0x28;
/// SEEK(10).
pub const SCSI_SEEK_10: u8 = 0x2B;
/// READ TOC/PMA/ATIP.
pub const SCSI_READ_TOC: u8 = 0x43;
/// GET CONFIGURATION.
pub const SCSI_GET_CONFIGURATION: u8 = 0x46;
/// GET EVENT STATUS NOTIFICATION.
pub const SCSI_GET_EVENT_STATUS: u8 = 0x4A;
/// MODE SENSE(10).
pub const SCSI_MODE_SENSE_10: u8 = 0x5A;
/// READ(12).
pub const SCSI_READ_12: u8 = 0xA8;

/// Sense key NOT READY.
pub const SENSE_NOT_READY: u8 = 0x02;
/// Sense key ILLEGAL REQUEST.
pub const SENSE_ILLEGAL_REQUEST: u8 = 0x05;
/// ASC: medium not present.
pub const ASC_MEDIUM_NOT_PRESENT: u8 = 0x3A;
/// ASC: logical block address out of range.
pub const ASC_LBA_OUT_OF_RANGE: u8 = 0x21;
/// ASC: invalid command operation code.
pub const ASC_INVALID_OPCODE: u8 = 0x20;
/// ASC: invalid field in CDB.
pub const ASC_INVALID_FIELD: u8 = 0x24;

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// LBA to minutes/seconds/frames (MMC-3 §4.2.3.6: 75 frames a second, 2 s lead-in).
fn lba_to_msf(lba: u64) -> [u8; 3] {
    let f = lba + 150;
    [(f / (75 * 60)) as u8, ((f / 75) % 60) as u8, (f % 75) as u8]
}

/// What a packet command produced.
enum Reply {
    /// Success with data for the host (truncated to the allocation length by the caller).
    Data(Vec<u8>),
    /// Success with sectors to stream from the disc.
    Sectors { lba: u64, count: u64 },
    /// Success, no data.
    Done,
    /// CHECK CONDITION with this sense.
    Check(Sense),
}

fn check(key: u8, asc: u8) -> Reply {
    Reply::Check(Sense { key, asc, ascq: 0 })
}

impl Drive {
    /// IDENTIFY PACKET DEVICE data (ATA-6 §8.16, table 27).
    fn identify_packet(&self) -> [u16; 256] {
        let mut w = [0u16; 256];
        // ATAPI, CD-ROM device type 5, removable, accelerated DRQ (50 µs), 12-byte packets.
        w[0] = (2 << 14) | (5 << 8) | (1 << 7) | (2 << 5);
        put_string(&mut w[10..20], "PCVMCD0000000001");
        put_string(&mut w[23..27], FIRMWARE_REVISION);
        put_string(&mut w[27..47], CDROM_MODEL);
        w[48] = 1;
        w[49] = (1 << 11) | (1 << 9); // IORDY, LBA
        w[53] = 0x0003;
        w[64] = 0x0003;
        w[65] = 0xB4;
        w[66] = 0xB4;
        w[67] = 0x12C;
        w[68] = 0xB4;
        w[71] = 30;
        w[72] = 30;
        w[80] = 0x001E; // ATA/ATAPI-1 .. 4
        w[82] = 1 << 4; // PACKET feature set
        w[83] = 1 << 14;
        w[84] = 1 << 14;
        w[85] = 1 << 4;
        w[87] = 1 << 14;
        w[93] = self.reset_result_word();
        self.identify_dma_words(&mut w);
        w
    }

    /// The ATA commands a packet device takes (ATA-6 §8: a packet device aborts IDENTIFY
    /// DEVICE, posting its signature so the host knows to use IDENTIFY PACKET DEVICE).
    pub(crate) fn atapi_ata_command(&mut self, cmd: u8) {
        match cmd {
            CMD_IDENTIFY_PACKET_DEVICE => {
                let data = identify_bytes(self.identify_packet());
                self.start_block(Some(data), 0);
                self.transfer = Transfer::DataIn;
                self.irq = true;
            }
            CMD_PACKET => {
                self.atapi_dma = self.tf.feature & 1 != 0;
                if self.atapi_dma && !self.dma {
                    self.fail(ERROR_ABRT);
                    return;
                }
                self.start_block(None, PACKET_SIZE);
                self.tf.nsector = IREASON_COD;
                self.transfer = Transfer::AtapiCommand;
            }
            CMD_DEVICE_RESET => {
                self.reset_signature();
            }
            CMD_IDENTIFY_DEVICE => {
                self.reset_signature();
                self.fail(ERROR_ABRT);
            }
            CMD_SET_FEATURES => self.set_features(),
            CMD_CHECK_POWER_MODE => {
                self.tf.nsector = 0xFF;
                self.complete(true);
            }
            0xE0..=0xE3 | 0xE6 => self.complete(true),
            _ => {
                tracing::debug!("ide: CD-ROM aborts ATA command {cmd:#04x}");
                self.fail(ERROR_ABRT);
            }
        }
    }

    /// The byte count limit the host programmed for this PACKET command.
    fn byte_limit(&self) -> usize {
        let limit = usize::from(self.tf.hcyl) << 8 | usize::from(self.tf.lcyl);
        match limit {
            0 | 0xFFFF => 0xFFFE,
            l => l & !1,
        }
        .max(2)
    }

    /// The command packet is complete: execute it.
    pub(crate) fn atapi_packet(&mut self) {
        let mut cdb = [0u8; PACKET_SIZE];
        let n = self.buf.len().min(PACKET_SIZE);
        cdb[..n].copy_from_slice(&self.buf[..n]);
        let limit = self.byte_limit();
        let reply = self.scsi_command(&cdb);
        match reply {
            Reply::Check(sense) => self.atapi_error(sense),
            Reply::Done => self.atapi_ok(),
            Reply::Data(data) if data.is_empty() => self.atapi_ok(),
            Reply::Sectors { count: 0, .. } => self.atapi_ok(),
            Reply::Data(data) if self.atapi_dma => {
                self.tf.nsector = IREASON_IO;
                self.start_dma(DmaJob {
                    to_memory: true,
                    len: data.len() as u64,
                    data: DmaData::Reply(data),
                });
            }
            Reply::Sectors { lba, count } if self.atapi_dma => {
                self.tf.nsector = IREASON_IO;
                self.start_dma(DmaJob {
                    to_memory: true,
                    len: count * CD_SECTOR_SIZE as u64,
                    data: DmaData::Backend {
                        offset: lba * CD_SECTOR_SIZE as u64,
                    },
                });
            }
            Reply::Data(data) => self.atapi_next_block(data, 0, 0, limit),
            Reply::Sectors { lba, count } => self.atapi_next_block(Vec::new(), lba, count, limit),
        }
    }

    pub(crate) fn atapi_ok(&mut self) {
        self.complete(true);
        self.sense = Sense::default();
        self.tf.nsector = IREASON_IO | IREASON_COD;
    }

    pub(crate) fn atapi_error(&mut self, sense: Sense) {
        self.sense = sense;
        self.fail(sense.key << 4);
        self.tf.nsector = IREASON_IO | IREASON_COD;
    }

    /// Start the next DRQ block of a data-in packet command, or finish it.
    pub(crate) fn atapi_next_block(
        &mut self,
        mut staged: Vec<u8>,
        mut next_lba: u64,
        mut sectors_left: u64,
        limit: usize,
    ) {
        let total = (staged.len() as u64)
            .saturating_add(sectors_left.saturating_mul(CD_SECTOR_SIZE as u64));
        if total == 0 {
            self.atapi_ok();
            return;
        }
        let block = (limit as u64).min(total) as usize;
        while staged.len() < block && sectors_left > 0 {
            let mut sector = vec![0u8; CD_SECTOR_SIZE];
            let ok = self.backend.as_mut().is_some_and(|b| {
                b.read_at(next_lba * CD_SECTOR_SIZE as u64, &mut sector)
                    .is_ok()
            });
            if !ok {
                tracing::warn!("ide: reading CD sector {next_lba} failed");
                // MEDIUM ERROR / UNRECOVERED READ ERROR.
                self.atapi_error(Sense {
                    key: 0x03,
                    asc: 0x11,
                    ascq: 0,
                });
                return;
            }
            staged.extend_from_slice(&sector);
            next_lba += 1;
            sectors_left -= 1;
        }
        let rest = staged.split_off(block.min(staged.len()));
        self.start_block(Some(staged), 0);
        self.tf.nsector = IREASON_IO;
        self.tf.lcyl = block as u8;
        self.tf.hcyl = (block >> 8) as u8;
        self.transfer = Transfer::AtapiIn {
            staged: rest,
            next_lba,
            sectors_left,
            limit,
        };
        self.irq = true;
    }

    /// The medium is present, or the sense to report.
    fn need_medium(&self) -> Option<Reply> {
        self.backend
            .is_none()
            .then(|| check(SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT))
    }

    /// Execute one SCSI/MMC command block.
    fn scsi_command(&mut self, cdb: &[u8; PACKET_SIZE]) -> Reply {
        let truncate = |mut v: Vec<u8>, alloc: usize| {
            v.truncate(alloc);
            Reply::Data(v)
        };
        match cdb[0] {
            SCSI_TEST_UNIT_READY => self.need_medium().unwrap_or(Reply::Done),
            SCSI_REQUEST_SENSE => {
                let mut s = vec![0u8; 18];
                s[0] = 0x70; // current error, fixed format
                s[2] = self.sense.key;
                s[7] = 10;
                s[12] = self.sense.asc;
                s[13] = self.sense.ascq;
                self.sense = Sense::default();
                truncate(s, usize::from(cdb[4]))
            }
            SCSI_INQUIRY => {
                let mut d = vec![0u8; 36];
                d[0] = 0x05; // CD/DVD device
                d[1] = 0x80; // removable
                d[2] = 0x00;
                d[3] = 0x21; // ATAPI, response format 1
                d[4] = 31;
                d[8..16].copy_from_slice(b"PCVM    ");
                d[16..32].copy_from_slice(b"PCVM DVD-ROM    ");
                d[32..36].copy_from_slice(b"1.0 ");
                truncate(d, usize::from(be16(cdb, 3)))
            }
            SCSI_START_STOP_UNIT | SCSI_PREVENT_ALLOW => Reply::Done,
            SCSI_READ_CAPACITY => {
                if let Some(r) = self.need_medium() {
                    return r;
                }
                let last = self.sectors.saturating_sub(1).min(u64::from(u32::MAX)) as u32;
                let mut d = last.to_be_bytes().to_vec();
                d.extend_from_slice(&(CD_SECTOR_SIZE as u32).to_be_bytes());
                Reply::Data(d)
            }
            SCSI_READ_10 | SCSI_READ_12 => {
                if let Some(r) = self.need_medium() {
                    return r;
                }
                let lba = u64::from(be32(cdb, 2));
                let count = if cdb[0] == SCSI_READ_10 {
                    u64::from(be16(cdb, 7))
                } else {
                    u64::from(be32(cdb, 6))
                };
                if lba + count > self.sectors {
                    return check(SENSE_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
                }
                Reply::Sectors { lba, count }
            }
            SCSI_SEEK_10 => {
                if let Some(r) = self.need_medium() {
                    return r;
                }
                if u64::from(be32(cdb, 2)) >= self.sectors {
                    return check(SENSE_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
                }
                Reply::Done
            }
            SCSI_READ_TOC => {
                if let Some(r) = self.need_medium() {
                    return r;
                }
                let msf = cdb[1] & 0x02 != 0;
                let format = match cdb[2] & 0x0F {
                    0 => cdb[9] >> 6,
                    f => f,
                };
                match self.read_toc(format, msf, cdb[6]) {
                    Some(d) => truncate(d, usize::from(be16(cdb, 7))),
                    None => check(SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD),
                }
            }
            SCSI_MODE_SENSE_6 | SCSI_MODE_SENSE_10 => {
                let page = cdb[2] & 0x3F;
                let control = cdb[2] >> 6;
                let Some(pages) = self.mode_pages(page, control == 1) else {
                    return check(SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD);
                };
                let medium = if self.backend.is_some() { 0x01 } else { 0x70 };
                if cdb[0] == SCSI_MODE_SENSE_10 {
                    let mut d = vec![0u8; 8];
                    d[0..2].copy_from_slice(&((6 + pages.len()) as u16).to_be_bytes());
                    d[2] = medium;
                    d.extend(pages);
                    truncate(d, usize::from(be16(cdb, 7)))
                } else {
                    let mut d = vec![(3 + pages.len()).min(255) as u8, medium, 0, 0];
                    d.extend(pages);
                    truncate(d, usize::from(cdb[4]))
                }
            }
            SCSI_GET_CONFIGURATION => {
                let current: u16 = if self.backend.is_some() { 0x0008 } else { 0 };
                let mut d = vec![0u8; 8];
                d[6..8].copy_from_slice(&current.to_be_bytes());
                // Feature 0: profile list with the CD-ROM profile, current when a disc is in.
                d.extend_from_slice(&[0x00, 0x00, 0x03, 0x04]);
                d.extend_from_slice(&[0x00, 0x08, u8::from(current != 0), 0x00]);
                let len = (d.len() - 4) as u32;
                d[0..4].copy_from_slice(&len.to_be_bytes());
                truncate(d, usize::from(be16(cdb, 7)))
            }
            SCSI_GET_EVENT_STATUS => {
                if cdb[1] & 1 == 0 {
                    // Only polled operation is defined for ATAPI.
                    return check(SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD);
                }
                // No event available; media class supported.
                let d = vec![0x00, 0x02, 0x80, 0x10];
                truncate(d, usize::from(be16(cdb, 7)))
            }
            op => {
                tracing::debug!("ide: CD-ROM rejects packet command {op:#04x}");
                check(SENSE_ILLEGAL_REQUEST, ASC_INVALID_OPCODE)
            }
        }
    }

    /// READ TOC data (MMC-3 §6.26): format 0 (track 1 and the lead-out) or 1 (session info).
    fn read_toc(&self, format: u8, msf: bool, start_track: u8) -> Option<Vec<u8>> {
        let addr = |lba: u64| -> [u8; 4] {
            if msf {
                let [m, s, f] = lba_to_msf(lba);
                [0, m, s, f]
            } else {
                (lba as u32).to_be_bytes()
            }
        };
        let mut d = vec![0u8, 0, 1, 1];
        match format {
            0 => {
                if start_track > 1 && start_track != 0xAA {
                    return None;
                }
                if start_track <= 1 {
                    d.extend_from_slice(&[0, 0x14, 1, 0]);
                    d.extend_from_slice(&addr(0));
                }
                d.extend_from_slice(&[0, 0x16, 0xAA, 0]);
                d.extend_from_slice(&addr(self.sectors));
            }
            1 => {
                d.extend_from_slice(&[0, 0x14, 1, 0]);
                d.extend_from_slice(&addr(0));
            }
            _ => return None,
        }
        let len = (d.len() - 2) as u16;
        d[0..2].copy_from_slice(&len.to_be_bytes());
        Some(d)
    }

    /// Mode pages (MMC-3 §6.3): 0x01 read error recovery, 0x2A capabilities, 0x3F all.
    fn mode_pages(&self, page: u8, changeable: bool) -> Option<Vec<u8>> {
        let recovery = |c: bool| {
            let mut p = vec![0x01, 0x06, 0, 0, 0, 0, 0, 0];
            if !c {
                p[3] = 5; // read retry count
            }
            p
        };
        let capabilities = |c: bool| {
            let mut p = vec![0u8; 22];
            p[0] = 0x2A;
            p[1] = 20;
            if !c {
                p[2] = 0x3B; // reads CD-R/RW, DVD-ROM/R/RAM
                p[4] = 0x71; // multi-session, mode 2 form 1/2, audio play
                p[5] = 0xFF;
                p[6] = 0x29; // tray, eject, lock
                p[7] = 0x03; // separate volume, separate mute
                p[8..10].copy_from_slice(&(706u16).to_be_bytes()); // max speed kB/s (4x)
                p[10..12].copy_from_slice(&(256u16).to_be_bytes()); // volume levels
                p[12..14].copy_from_slice(&(512u16).to_be_bytes()); // buffer KiB
                p[14..16].copy_from_slice(&(706u16).to_be_bytes()); // current speed
            }
            p
        };
        match page {
            0x01 => Some(recovery(changeable)),
            0x2A => Some(capabilities(changeable)),
            0x3F => {
                let mut v = recovery(changeable);
                v.extend(capabilities(changeable));
                Some(v)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Rig;
    use super::super::*;
    use super::*;

    const BASE: u16 = 0x170;
    const CTRL: u16 = 0x376;

    fn iso(sectors: usize) -> Vec<u8> {
        let mut d = vec![0u8; sectors * CD_SECTOR_SIZE];
        for (n, s) in d.chunks_mut(CD_SECTOR_SIZE).enumerate() {
            s.fill(n as u8 ^ 0x5A);
            s[..4].copy_from_slice(&(n as u32).to_le_bytes());
        }
        d
    }

    fn rig(drive: Drive) -> Rig {
        let mut r = Rig::new();
        r.ide.attach(1, 0, drive).unwrap();
        r.outb(CTRL, 0x0A);
        r.outb(BASE + 6, 0xA0);
        r
    }

    /// Send a packet as SeaBIOS's atapi_cmd_data does; returns the alternate status after it
    /// (leaving any interrupt pending).
    fn packet(r: &mut Rig, cdb: &[u8], limit: u16) -> u8 {
        r.outb(BASE + 1, 0);
        r.outb(BASE + 2, 0);
        r.outb(BASE + 3, 0);
        r.outb(BASE + 4, limit as u8);
        r.outb(BASE + 5, (limit >> 8) as u8);
        r.outb(BASE + 6, 0xA0);
        r.outb(BASE + 7, CMD_PACKET);
        let st = r.inb(CTRL);
        assert_eq!(st & (STATUS_BSY | STATUS_DRQ | STATUS_ERR), STATUS_DRQ);
        assert_eq!(r.inb(BASE + 2) & 3, IREASON_COD);
        let mut full = [0u8; PACKET_SIZE];
        full[..cdb.len()].copy_from_slice(cdb);
        for w in full.chunks(2) {
            r.outw(BASE, u16::from_le_bytes([w[0], w[1]]));
        }
        r.inb(CTRL)
    }

    /// Read every DRQ block, checking the DRQ-only status between blocks; returns the data.
    fn data_in(r: &mut Rig) -> Vec<u8> {
        let mut out = Vec::new();
        while r.inb(CTRL) & STATUS_DRQ != 0 {
            assert_eq!(r.inb(CTRL) & (STATUS_BSY | STATUS_ERR), 0);
            assert_eq!(r.inb(BASE + 2) & 3, IREASON_IO);
            let n = usize::from(r.inb(BASE + 4)) | usize::from(r.inb(BASE + 5)) << 8;
            out.extend(r.insw(BASE, n));
        }
        assert_eq!(r.inb(BASE + 2) & 3, IREASON_IO | IREASON_COD);
        out
    }

    #[test]
    fn signature_and_identify_packet() {
        let mut r = rig(Drive::cdrom(MemBackend::read_only(iso(4))));
        r.outb(CTRL, 0x0E);
        r.outb(CTRL, 0x0A);
        assert_eq!((r.inb(BASE + 4), r.inb(BASE + 5)), (0x14, 0xEB));
        assert_eq!(
            r.inb(BASE + 7),
            0,
            "packet devices are not DRDY after reset"
        );
        r.outb(BASE + 7, CMD_IDENTIFY_DEVICE);
        assert_eq!(r.inb(BASE + 7) & STATUS_ERR, STATUS_ERR);
        assert_eq!((r.inb(BASE + 4), r.inb(BASE + 5)), (0x14, 0xEB));
        r.outb(BASE + 7, CMD_IDENTIFY_PACKET_DEVICE);
        assert_eq!(r.inb(BASE + 7) & (STATUS_DRQ | STATUS_ERR), STATUS_DRQ);
        let id = r.insw(BASE, 512);
        let w0 = u16::from_le_bytes([id[0], id[1]]);
        assert_eq!(w0 >> 14, 2, "ATAPI");
        assert_eq!((w0 >> 8) & 0x1F, 5, "CD-ROM");
        let model: String = id[54..94]
            .iter()
            .collect::<Vec<_>>()
            .chunks(2)
            .flat_map(|c| [*c[1], *c[0]])
            .map(char::from)
            .collect();
        assert_eq!(model.trim_end(), CDROM_MODEL);
        assert_eq!(r.inb(BASE + 7) & (STATUS_DRQ | STATUS_ERR), 0);
    }

    #[test]
    fn inquiry_and_read_capacity() {
        let mut r = rig(Drive::cdrom(MemBackend::read_only(iso(40))));
        let st = packet(&mut r, &[SCSI_INQUIRY, 0, 0, 0, 36], 36);
        assert_eq!(st & STATUS_ERR, 0);
        let d = data_in(&mut r);
        assert_eq!(d.len(), 36);
        assert_eq!(d[0] & 0x1F, 5);
        assert_eq!(d[1], 0x80);
        assert_eq!(&d[8..16], b"PCVM    ");
        packet(&mut r, &[SCSI_READ_CAPACITY], 8);
        let d = data_in(&mut r);
        assert_eq!(d, [0, 0, 0, 39, 0, 0, 8, 0]);
        assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_DSC);
    }

    #[test]
    fn read_10_in_2048_byte_blocks() {
        let mut r = rig(Drive::cdrom(MemBackend::read_only(iso(40))));
        r.outb(CTRL, 0x08);
        let st = packet(&mut r, &[SCSI_READ_10, 0, 0, 0, 0, 0x11, 0, 0, 3], 2048);
        assert_eq!(st & (STATUS_DRQ | STATUS_ERR), STATUS_DRQ);
        assert!(r.irq15(), "IRQ for the first data block");
        assert_eq!(r.inb(BASE + 7) & STATUS_DRQ, STATUS_DRQ);
        assert!(!r.irq15(), "acknowledged by the status read");
        let d = data_in(&mut r);
        assert!(r.irq15(), "completion interrupt");
        assert_eq!(d.len(), 3 * 2048);
        for (i, s) in d.chunks(2048).enumerate() {
            let n = 0x11 + i;
            assert_eq!(u32::from_le_bytes(s[..4].try_into().unwrap()) as usize, n);
            assert!(s[4..].iter().all(|&b| b == n as u8 ^ 0x5A));
        }
        assert_eq!(r.inb(BASE + 7), STATUS_DRDY | STATUS_DSC);
        // A large byte count limit moves several sectors per DRQ block.
        packet(&mut r, &[SCSI_READ_12, 0, 0, 0, 0, 2, 0, 0, 0, 5], 0xFFFF);
        assert_eq!(
            usize::from(r.inb(BASE + 5)) << 8 | usize::from(r.inb(BASE + 4)),
            5 * 2048
        );
        let d = data_in(&mut r);
        assert_eq!(d.len(), 5 * 2048);
        assert_eq!(
            u32::from_le_bytes(d[4 * 2048..][..4].try_into().unwrap()),
            6
        );
    }

    #[test]
    fn errors_set_sense_data() {
        let mut r = rig(Drive::cdrom(MemBackend::read_only(iso(10))));
        let st = packet(&mut r, &[SCSI_READ_10, 0, 0, 0, 0, 9, 0, 0, 2], 2048);
        assert_eq!(st, STATUS_DRDY | STATUS_ERR);
        assert_eq!(r.inb(BASE + 1) >> 4, SENSE_ILLEGAL_REQUEST);
        packet(&mut r, &[SCSI_REQUEST_SENSE, 0, 0, 0, 18], 18);
        let s = data_in(&mut r);
        assert_eq!(
            (s[0], s[2], s[12]),
            (0x70, SENSE_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE)
        );
        packet(&mut r, &[SCSI_REQUEST_SENSE, 0, 0, 0, 18], 18);
        assert_eq!(data_in(&mut r)[2], 0, "sense cleared once reported");
        let st = packet(&mut r, &[0xFF], 2048);
        assert_eq!(st & STATUS_ERR, STATUS_ERR);
        packet(&mut r, &[SCSI_REQUEST_SENSE, 0, 0, 0, 18], 18);
        assert_eq!(data_in(&mut r)[12], ASC_INVALID_OPCODE);
    }

    #[test]
    fn no_medium_reports_not_ready() {
        let mut r = rig(Drive::empty_cdrom());
        let st = packet(&mut r, &[SCSI_TEST_UNIT_READY], 0);
        assert_eq!(st & STATUS_ERR, STATUS_ERR);
        assert_eq!(r.inb(BASE + 1) >> 4, SENSE_NOT_READY);
        packet(&mut r, &[SCSI_REQUEST_SENSE, 0, 0, 0, 18], 18);
        let s = data_in(&mut r);
        assert_eq!((s[2], s[12]), (SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT));
        let st = packet(&mut r, &[SCSI_READ_CAPACITY], 8);
        assert_eq!(st & STATUS_ERR, STATUS_ERR);
        // Inquiry still works without a disc.
        packet(&mut r, &[SCSI_INQUIRY, 0, 0, 0, 36], 36);
        assert_eq!(data_in(&mut r).len(), 36);
    }

    #[test]
    fn toc_mode_sense_and_configuration() {
        let mut r = rig(Drive::cdrom(MemBackend::read_only(iso(300))));
        packet(&mut r, &[SCSI_READ_TOC, 0, 0, 0, 0, 0, 0, 0, 100], 100);
        let t = data_in(&mut r);
        assert_eq!(t.len(), 20);
        assert_eq!((t[2], t[3]), (1, 1));
        assert_eq!((t[6], t[14]), (1, 0xAA));
        assert_eq!(u32::from_be_bytes(t[16..20].try_into().unwrap()), 300);
        packet(&mut r, &[SCSI_READ_TOC, 2, 0, 0, 0, 0, 0, 0, 100], 100);
        let t = data_in(&mut r);
        assert_eq!(&t[8..12], &[0, 0, 2, 0], "MSF 00:02:00 for LBA 0");
        packet(
            &mut r,
            &[SCSI_MODE_SENSE_10, 0, 0x2A, 0, 0, 0, 0, 0, 64],
            64,
        );
        let m = data_in(&mut r);
        assert_eq!(m[8], 0x2A);
        assert_eq!(usize::from(u16::from_be_bytes([m[0], m[1]])) + 2, m.len());
        let st = packet(
            &mut r,
            &[SCSI_MODE_SENSE_10, 0, 0x05, 0, 0, 0, 0, 0, 64],
            64,
        );
        assert_eq!(st & STATUS_ERR, STATUS_ERR);
        packet(
            &mut r,
            &[SCSI_GET_CONFIGURATION, 0, 0, 0, 0, 0, 0, 0, 32],
            32,
        );
        let c = data_in(&mut r);
        assert_eq!(u16::from_be_bytes([c[6], c[7]]), 0x0008);
        for op in [
            SCSI_START_STOP_UNIT,
            SCSI_PREVENT_ALLOW,
            SCSI_TEST_UNIT_READY,
        ] {
            assert_eq!(packet(&mut r, &[op], 0), STATUS_DRDY | STATUS_DSC);
        }
    }
}
