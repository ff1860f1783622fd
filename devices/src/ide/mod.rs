//! The PIIX IDE controller's two legacy channels: ATA disks and ATAPI CD-ROMs over PIO.
//!
//! Primary channel: command block 0x1F0–0x1F7, control block 0x3F6, IRQ14; secondary:
//! 0x170–0x177, 0x376, IRQ15 (82371SB datasheet §2.7; ATA/ATAPI-6 §7 for the registers). Each
//! channel holds a master and a slave [`Drive`]; [`ata`] executes ATA commands, [`atapi`] the
//! SFF-8020/MMC packet commands of CD-ROMs; [`bmdma`] the bus-master DMA engine reached through
//! the IDE function's BAR4 (only when the controller was given guest memory). Everything
//! completes synchronously: BSY is never seen by the guest except during a software reset.
//!
//! Absent devices follow QEMU: with no device on a channel every register reads 0 (data 0xFF);
//! with only a master, the selected-but-absent slave reads 0 in its status and taskfile
//! registers, so firmware's SC/SN read-back probe fails and it moves on.

pub mod ata;
pub mod atapi;
pub mod bmdma;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use pcvm_core::{BusAccess, BusDevice, GuestMemory, IrqLine};
use serde::{Deserialize, Serialize};

use self::bmdma::{BusMaster, DmaJob, BM_CHANNEL_SIZE};

use crate::{Error, Result};

/// Status: the device is busy.
pub const STATUS_BSY: u8 = 0x80;
/// Status: the device is ready for commands.
pub const STATUS_DRDY: u8 = 0x40;
/// Status: device fault.
pub const STATUS_DF: u8 = 0x20;
/// Status: seek complete (obsolete in ATA-6, still set by most devices).
pub const STATUS_DSC: u8 = 0x10;
/// Status: a data block is ready to transfer.
pub const STATUS_DRQ: u8 = 0x08;
/// Status: the command ended in error; see the error register.
pub const STATUS_ERR: u8 = 0x01;

/// Error: address mark not found (also "diagnostic passed" after reset).
pub const ERROR_AMNF: u8 = 0x01;
/// Error: command aborted.
pub const ERROR_ABRT: u8 = 0x04;
/// Error: ID not found (address out of range).
pub const ERROR_IDNF: u8 = 0x10;
/// Error: uncorrectable data.
pub const ERROR_UNC: u8 = 0x40;

/// Device control: interrupts disabled.
pub const DEVCTL_NIEN: u8 = 0x02;
/// Device control: software reset.
pub const DEVCTL_SRST: u8 = 0x04;
/// Device control: read the previous (high-order) taskfile bytes.
pub const DEVCTL_HOB: u8 = 0x80;

/// Device/head: LBA addressing.
pub const DEVHEAD_LBA: u8 = 0x40;
/// Device/head: device 1 (slave) selected.
pub const DEVHEAD_DEV: u8 = 0x10;

/// ATAPI interrupt reason (sector count register): command/data (1 = command packet).
pub(crate) const IREASON_COD: u8 = 0x01;
/// ATAPI interrupt reason: direction (1 = to the host).
pub(crate) const IREASON_IO: u8 = 0x02;

/// Bytes in an ATA sector.
pub const SECTOR_SIZE: usize = 512;

/// Storage behind a drive: reads and writes at byte offsets.
///
/// Failures are host errors; the drive reports them to the guest as ATA errors.
pub trait BlockBackend: Send {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`; reading past the end is an error.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    /// Write `buf` at `offset`; writing past the end is an error.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()>;
    /// Make written data durable.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    /// Writes are refused.
    fn read_only(&self) -> bool {
        false
    }
}

fn past_end(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("{what} past the end"),
    )
}

/// A backend held in memory (tests, small generated images).
#[derive(Clone, Debug, Default)]
pub struct MemBackend {
    data: Vec<u8>,
    read_only: bool,
}

impl MemBackend {
    /// A writable image.
    pub fn new(data: Vec<u8>) -> Self {
        MemBackend {
            data,
            read_only: false,
        }
    }
    /// A read-only image (an ISO).
    pub fn read_only(data: Vec<u8>) -> Self {
        MemBackend {
            data,
            read_only: true,
        }
    }
    /// The bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

impl BlockBackend for MemBackend {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| past_end("read"))?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.data.get(start..end))
            .ok_or_else(|| past_end("read"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        if self.read_only {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "read-only image",
            ));
        }
        let start = usize::try_from(offset).map_err(|_| past_end("write"))?;
        let dst = start
            .checked_add(buf.len())
            .and_then(|end| self.data.get_mut(start..end))
            .ok_or_else(|| past_end("write"))?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
}

/// A backend over a host file (a raw disk image or an ISO).
#[derive(Debug)]
pub struct FileBackend {
    file: File,
    size: u64,
    read_only: bool,
}

impl FileBackend {
    /// Use `file`, whose size is taken now; `read_only` refuses guest writes.
    pub fn new(file: File, read_only: bool) -> std::io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(FileBackend {
            file,
            size,
            read_only,
        })
    }
}

impl BlockBackend for FileBackend {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.size)
        {
            return Err(past_end("read"));
        }
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.read_exact(buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        if self.read_only {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "read-only image",
            ));
        }
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.size)
        {
            return Err(past_end("write"));
        }
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.flush()?;
        self.file.sync_data()
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
}

/// What kind of device a drive is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveKind {
    /// An ATA hard disk with 512-byte sectors.
    Disk,
    /// An ATAPI CD-ROM with 2048-byte sectors.
    Cdrom,
}

/// The command and control block registers a device latches (ATA-6 §7): the current bytes
/// and, for 48-bit commands, the previous ones ("HOB").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskFile {
    pub feature: u8,
    pub nsector: u8,
    pub sector: u8,
    pub lcyl: u8,
    pub hcyl: u8,
    pub hob_feature: u8,
    pub hob_nsector: u8,
    pub hob_sector: u8,
    pub hob_lcyl: u8,
    pub hob_hcyl: u8,
    pub select: u8,
}

/// What happens when the current PIO block is used up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Transfer {
    /// No command in progress.
    Idle,
    /// A one-block data-in command (IDENTIFY): complete when read.
    DataIn,
    /// READ SECTORS/MULTIPLE: `remaining` sectors from `lba` still to deliver after this block.
    AtaRead {
        lba: u64,
        remaining: u64,
        per_block: u64,
        lba48: bool,
    },
    /// WRITE SECTORS/MULTIPLE: the block being filled goes to `lba`; `remaining` includes it.
    AtaWrite {
        lba: u64,
        remaining: u64,
        per_block: u64,
        lba48: bool,
    },
    /// PACKET: the 12-byte command block is being written.
    AtapiCommand,
    /// ATAPI data-in: `staged` bytes ready plus `sectors_left` sectors from `next_lba`.
    AtapiIn {
        staged: Vec<u8>,
        next_lba: u64,
        sectors_left: u64,
        limit: usize,
    },
    /// A DMA command waits for the bus master to start.
    Dma(DmaJob),
}

/// SCSI sense data of an ATAPI device (SPC-3 §4.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sense {
    /// Sense key.
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
}

/// An IDE device: an ATA disk or an ATAPI CD-ROM, with its registers and transfer state.
pub struct Drive {
    pub(crate) kind: DriveKind,
    pub(crate) backend: Option<Box<dyn BlockBackend>>,
    /// Capacity in sectors of the device's size (512 for disks, 2048 for CDs).
    pub(crate) sectors: u64,
    pub(crate) tf: TaskFile,
    pub(crate) status: u8,
    pub(crate) error: u8,
    pub(crate) buf: Vec<u8>,
    pub(crate) pos: usize,
    pub(crate) transfer: Transfer,
    /// Sectors per block of READ/WRITE MULTIPLE (0: SET MULTIPLE MODE not done).
    pub(crate) multiple: u16,
    /// Default geometry (IDENTIFY words 1/3/6).
    pub(crate) cylinders: u16,
    /// The BIOS translation that geometry calls for.
    pub(crate) translation: ChsTranslation,
    pub(crate) heads: u8,
    pub(crate) spt: u8,
    /// Current translation set by INITIALIZE DEVICE PARAMETERS.
    pub(crate) cur_heads: u8,
    pub(crate) cur_spt: u8,
    pub(crate) sense: Sense,
    /// The device wants to assert INTRQ (taken by the channel).
    pub(crate) irq: bool,
    /// Master (0) or slave (1), for IDENTIFY word 93.
    pub(crate) slot: usize,
    /// The controller can do bus-master DMA (IDENTIFY advertises DMA modes).
    pub(crate) dma: bool,
    /// Transfer mode chosen with SET FEATURES 0x03 (ATA-6 table 44).
    pub(crate) xfer_mode: u8,
    /// The PACKET command in progress asked for DMA.
    pub(crate) atapi_dma: bool,
}

impl std::fmt::Debug for Drive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drive")
            .field("kind", &self.kind)
            .field("sectors", &self.sectors)
            .field("status", &format_args!("{:#04x}", self.status))
            .finish_non_exhaustive()
    }
}

/// A drive's registers and transfer in progress, for snapshots (the image itself is not
/// part of it: restore onto a controller with the same drives attached).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveState {
    tf: TaskFile,
    status: u8,
    error: u8,
    buf: Vec<u8>,
    pos: usize,
    transfer: Transfer,
    multiple: u16,
    cur_heads: u8,
    cur_spt: u8,
    sense: Sense,
    irq: bool,
    xfer_mode: u8,
    atapi_dma: bool,
}

/// One channel's registers and drives, for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdeChannelState {
    select: u8,
    devctl: u8,
    intrq: bool,
    bm: BusMaster,
    drives: Vec<Option<DriveState>>,
}

/// The controller's state, for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdeState {
    channels: Vec<IdeChannelState>,
}

/// The BIOS CHS translation a disk's geometry calls for, as QEMU reports it in CMOS 0x39
/// (two bits per drive: 0 none, 1 LBA, 2 large).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChsTranslation {
    /// The BIOS uses the physical geometry as is.
    None,
    /// LBA-assisted translation.
    Lba,
    /// "Large" (bit-shift) translation.
    Large,
}

impl ChsTranslation {
    /// The 2-bit code of CMOS register 0x39.
    pub fn cmos_code(self) -> u8 {
        match self {
            ChsTranslation::None => 0,
            ChsTranslation::Lba => 1,
            ChsTranslation::Large => 2,
        }
    }
}

/// The physical geometry of a disk of `sectors` sectors the way QEMU guesses it: from the
/// MBR's partition ends if they describe a plausible geometry, otherwise 16 heads and 63
/// sectors per track with 2..=16383 cylinders (ATA-6 §6.2.1 limits CHS to 16383/16/63).
fn guess_geometry(
    backend: Option<&mut Box<dyn BlockBackend>>,
    sectors: u64,
) -> (u16, u8, u8, ChsTranslation) {
    let standard = || (sectors / (16 * 63)).clamp(2, 16383) as u16;
    let mut mbr = [0u8; SECTOR_SIZE];
    let lchs = backend
        .filter(|_| sectors > 0)
        .and_then(|b| b.read_at(0, &mut mbr).ok())
        .filter(|_| mbr[510..512] == [0x55, 0xAA])
        .and_then(|_| {
            mbr[0x1BE..0x1FE].chunks(16).find_map(|p| {
                let nr_sects = u32::from_le_bytes([p[12], p[13], p[14], p[15]]);
                let (end_head, end_sector) = (p[5], p[6] & 63);
                if nr_sects == 0 || end_head == 0 || end_sector == 0 {
                    return None;
                }
                let heads = u64::from(end_head) + 1;
                let cyls = sectors / (heads * u64::from(end_sector));
                (1..=16383)
                    .contains(&cyls)
                    .then_some((cyls as u16, heads, end_sector))
            })
        });
    match lchs {
        Some((cyls, heads, spt)) if heads <= 16 => (cyls, heads as u8, spt, ChsTranslation::None),
        Some(_) => {
            let c = standard();
            let t = if u32::from(c) * 16 <= 131_072 {
                ChsTranslation::Large
            } else {
                ChsTranslation::Lba
            };
            (c, 16, 63, t)
        }
        None => {
            let c = standard();
            let t = if c <= 1024 {
                ChsTranslation::None
            } else {
                ChsTranslation::Lba
            };
            (c, 16, 63, t)
        }
    }
}

impl Drive {
    fn with(kind: DriveKind, mut backend: Option<Box<dyn BlockBackend>>) -> Self {
        let sector = match kind {
            DriveKind::Disk => SECTOR_SIZE as u64,
            DriveKind::Cdrom => atapi::CD_SECTOR_SIZE as u64,
        };
        let sectors = backend.as_ref().map_or(0, |b| b.size() / sector);
        let (cylinders, heads, spt, translation) = match kind {
            DriveKind::Disk => guess_geometry(backend.as_mut(), sectors),
            DriveKind::Cdrom => (0, 0, 0, ChsTranslation::None),
        };
        let mut d = Drive {
            kind,
            backend,
            sectors,
            tf: TaskFile::default(),
            status: 0,
            error: 0,
            buf: Vec::new(),
            pos: 0,
            transfer: Transfer::Idle,
            multiple: 0,
            cylinders,
            heads,
            spt,
            cur_heads: heads,
            cur_spt: spt,
            translation,
            sense: Sense::default(),
            irq: false,
            slot: 0,
            dma: false,
            xfer_mode: 0,
            atapi_dma: false,
        };
        d.power_on();
        d
    }

    /// An ATA hard disk over `backend` (its size is rounded down to whole sectors).
    pub fn disk(backend: impl BlockBackend + 'static) -> Self {
        Self::with(DriveKind::Disk, Some(Box::new(backend)))
    }

    /// An ATAPI CD-ROM with `backend` as the inserted disc.
    pub fn cdrom(backend: impl BlockBackend + 'static) -> Self {
        Self::with(DriveKind::Cdrom, Some(Box::new(backend)))
    }

    /// An ATAPI CD-ROM with no disc.
    pub fn empty_cdrom() -> Self {
        Self::with(DriveKind::Cdrom, None)
    }

    /// What kind of device this is.
    pub fn kind(&self) -> DriveKind {
        self.kind
    }

    /// Capacity in device sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Physical geometry (cylinders, heads, sectors per track) of a disk, as in IDENTIFY
    /// words 1, 3 and 6 (all zero for a CD-ROM).
    pub fn geometry(&self) -> (u16, u8, u8) {
        (self.cylinders, self.heads, self.spt)
    }

    /// The BIOS translation for this disk's geometry (for CMOS 0x39, as QEMU fills it).
    pub fn translation(&self) -> ChsTranslation {
        self.translation
    }

    /// The registers and transfer in progress, for snapshots.
    pub fn state(&self) -> DriveState {
        DriveState {
            tf: self.tf,
            status: self.status,
            error: self.error,
            buf: self.buf.clone(),
            pos: self.pos,
            transfer: self.transfer.clone(),
            multiple: self.multiple,
            cur_heads: self.cur_heads,
            cur_spt: self.cur_spt,
            sense: self.sense,
            irq: self.irq,
            xfer_mode: self.xfer_mode,
            atapi_dma: self.atapi_dma,
        }
    }

    /// Restore a snapshot.
    pub fn set_state(&mut self, s: &DriveState) {
        self.tf = s.tf;
        self.status = s.status;
        self.error = s.error;
        self.buf = s.buf.clone();
        self.pos = s.pos.min(self.buf.len());
        self.transfer = s.transfer.clone();
        self.multiple = s.multiple;
        self.cur_heads = s.cur_heads;
        self.cur_spt = s.cur_spt;
        self.sense = s.sense;
        self.irq = s.irq;
        self.xfer_mode = s.xfer_mode;
        self.atapi_dma = s.atapi_dma;
    }

    /// The power-on / hardware reset state.
    fn power_on(&mut self) {
        self.multiple = 0;
        self.xfer_mode = 0;
        self.cur_heads = self.heads;
        self.cur_spt = self.spt;
        self.sense = Sense::default();
        self.tf = TaskFile::default();
        self.reset_signature();
    }

    /// After a reset or EXECUTE DEVICE DIAGNOSTIC: the signature in the taskfile (ATA-6
    /// §9.12), "diagnostic passed" in the error register, and the idle status.
    pub(crate) fn reset_signature(&mut self) {
        self.transfer = Transfer::Idle;
        self.buf.clear();
        self.pos = 0;
        self.tf.nsector = 1;
        self.tf.sector = 1;
        match self.kind {
            DriveKind::Disk => {
                self.tf.lcyl = 0;
                self.tf.hcyl = 0;
                self.status = STATUS_DRDY | STATUS_DSC;
            }
            DriveKind::Cdrom => {
                self.tf.lcyl = 0x14;
                self.tf.hcyl = 0xEB;
                self.status = 0;
            }
        }
        self.tf.select &= DEVHEAD_DEV;
        self.error = ERROR_AMNF;
    }

    /// Start a PIO data block from `buf` (data-in) or of `len` bytes to fill (data-out).
    pub(crate) fn start_block(&mut self, data: Option<Vec<u8>>, len: usize) {
        match data {
            Some(d) => self.buf = d,
            None => {
                self.buf.clear();
                self.buf.resize(len, 0);
            }
        }
        self.pos = 0;
        self.status = STATUS_DRDY | STATUS_DSC | STATUS_DRQ;
    }

    /// End the command successfully.
    pub(crate) fn complete(&mut self, irq: bool) {
        self.transfer = Transfer::Idle;
        self.buf.clear();
        self.pos = 0;
        self.status = STATUS_DRDY | STATUS_DSC;
        self.error = 0;
        self.irq |= irq;
    }

    /// End the command with ERR and `error`.
    pub(crate) fn fail(&mut self, error: u8) {
        self.transfer = Transfer::Idle;
        self.buf.clear();
        self.pos = 0;
        self.status = STATUS_DRDY | STATUS_ERR;
        self.error = error;
        self.irq = true;
    }

    /// The host reads the data register.
    fn read_data(&mut self, data: &mut [u8]) {
        if self.status & STATUS_DRQ == 0 || self.pos >= self.buf.len() {
            data.fill(0xFF);
            return;
        }
        for b in data.iter_mut() {
            *b = self.buf.get(self.pos).copied().unwrap_or(0xFF);
            self.pos = (self.pos + 1).min(self.buf.len());
        }
        if self.pos >= self.buf.len() {
            self.block_done();
        }
    }

    /// The host writes the data register.
    fn write_data(&mut self, data: &[u8]) {
        if self.status & STATUS_DRQ == 0 || self.pos >= self.buf.len() {
            return;
        }
        for &b in data {
            if let Some(slot) = self.buf.get_mut(self.pos) {
                *slot = b;
                self.pos += 1;
            }
        }
        if self.pos >= self.buf.len() {
            self.block_done();
        }
    }

    /// The current DRQ block is used up: continue or finish the command.
    fn block_done(&mut self) {
        match std::mem::replace(&mut self.transfer, Transfer::Idle) {
            Transfer::Idle | Transfer::DataIn => self.complete(false),
            Transfer::AtaRead {
                lba,
                remaining,
                per_block,
                lba48,
            } => self.ata_read_next(lba, remaining, per_block, lba48),
            Transfer::AtaWrite {
                lba,
                remaining,
                per_block,
                lba48,
            } => self.ata_write_block(lba, remaining, per_block, lba48),
            Transfer::AtapiCommand => self.atapi_packet(),
            Transfer::AtapiIn {
                staged,
                next_lba,
                sectors_left,
                limit,
            } => self.atapi_next_block(staged, next_lba, sectors_left, limit),
            dma @ Transfer::Dma(_) => self.transfer = dma,
        }
    }

    /// The bus master moved all of a DMA job's data.
    pub(crate) fn dma_done(&mut self) {
        match self.kind {
            DriveKind::Disk => self.complete(true),
            DriveKind::Cdrom => self.atapi_ok(),
        }
    }

    /// A DMA transfer stopped early (bad PRD table, memory or backend error).
    pub(crate) fn dma_failed(&mut self) {
        match self.kind {
            DriveKind::Disk => self.fail(ERROR_ABRT),
            // MEDIUM ERROR / UNRECOVERED READ ERROR.
            DriveKind::Cdrom => self.atapi_error(Sense {
                key: 0x03,
                asc: 0x11,
                ascq: 0,
            }),
        }
    }

    /// Wait for the bus master with `job` (DRQ set as the device requests DMA).
    pub(crate) fn start_dma(&mut self, job: DmaJob) {
        self.buf.clear();
        self.pos = 0;
        self.status = STATUS_DRDY | STATUS_DSC | STATUS_DRQ;
        self.transfer = Transfer::Dma(job);
    }

    /// Read one taskfile register (1–7) as the device presents it.
    fn read_register(&self, reg: u64, hob: bool) -> u8 {
        let tf = &self.tf;
        match (reg, hob) {
            (1, false) => self.error,
            (1, true) => tf.hob_feature,
            (2, false) => tf.nsector,
            (2, true) => tf.hob_nsector,
            (3, false) => tf.sector,
            (3, true) => tf.hob_sector,
            (4, false) => tf.lcyl,
            (4, true) => tf.hob_lcyl,
            (5, false) => tf.hcyl,
            (5, true) => tf.hob_hcyl,
            (6, _) => tf.select,
            _ => self.status,
        }
    }

    /// Latch a write to a taskfile register (1–6); the previous byte moves to the HOB copy.
    fn write_register(&mut self, reg: u64, v: u8) {
        let tf = &mut self.tf;
        match reg {
            1 => (tf.hob_feature, tf.feature) = (tf.feature, v),
            2 => (tf.hob_nsector, tf.nsector) = (tf.nsector, v),
            3 => (tf.hob_sector, tf.sector) = (tf.sector, v),
            4 => (tf.hob_lcyl, tf.lcyl) = (tf.lcyl, v),
            5 => (tf.hob_hcyl, tf.hcyl) = (tf.hcyl, v),
            6 => tf.select = v | 0xA0,
            _ => {}
        }
    }

    /// Run a command written to the command register.
    fn command(&mut self, cmd: u8) {
        self.irq = false;
        self.transfer = Transfer::Idle;
        match self.kind {
            DriveKind::Disk => self.ata_command(cmd),
            DriveKind::Cdrom => self.atapi_ata_command(cmd),
        }
    }
}

/// Which register block an I/O address reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Command(u64),
    Control,
}

/// One IDE channel: two device slots sharing registers, an interrupt line and device control.
struct Channel {
    drives: [Option<Drive>; 2],
    /// Device/head as last written (selects the device; kept even with no device).
    select: u8,
    devctl: u8,
    /// INTRQ from the selected device (before nIEN).
    intrq: bool,
    irq: Arc<dyn IrqLine>,
    bm: BusMaster,
}

impl Channel {
    fn new(irq: Arc<dyn IrqLine>) -> Self {
        Channel {
            drives: [None, None],
            select: 0xA0,
            devctl: 0,
            intrq: false,
            irq,
            bm: BusMaster::default(),
        }
    }

    fn selected(&self) -> usize {
        usize::from(self.select & DEVHEAD_DEV != 0)
    }

    fn empty(&self) -> bool {
        self.drives.iter().all(Option::is_none)
    }

    fn update_irq(&self) {
        self.irq
            .set_level(self.intrq && self.devctl & DEVCTL_NIEN == 0);
    }

    /// Pick up INTRQ requests the drives made.
    fn collect_irq(&mut self) {
        let mut raise = false;
        for d in self.drives.iter_mut().flatten() {
            raise |= std::mem::take(&mut d.irq);
        }
        if raise {
            self.intrq = true;
            self.update_irq();
        }
    }

    fn set_intrq(&mut self, level: bool) {
        if self.intrq != level {
            self.intrq = level;
            self.update_irq();
        }
    }

    fn read(&mut self, block: Block, data: &mut [u8]) {
        let sel = self.selected();
        if block == Block::Command(0) {
            match self.drives[sel].as_mut() {
                Some(d) => d.read_data(data),
                None => data.fill(0xFF),
            }
            self.collect_irq();
            return;
        }
        let hob = self.devctl & DEVCTL_HOB != 0;
        let value = match (block, self.drives[sel].as_ref()) {
            (_, _) if self.empty() => 0,
            (Block::Command(6), _) => self.select,
            (_, None) => 0,
            (Block::Control, Some(d)) => d.status,
            (Block::Command(reg), Some(d)) => d.read_register(reg, hob),
        };
        if block == Block::Command(7) {
            // Reading the status register acknowledges the interrupt (ATA-6 §5.2.13).
            self.set_intrq(false);
        }
        data.fill(0);
        data[0] = value;
    }

    fn write(&mut self, block: Block, data: &[u8]) {
        let sel = self.selected();
        match block {
            Block::Command(0) => {
                if let Some(d) = self.drives[sel].as_mut() {
                    d.write_data(data);
                }
                self.collect_irq();
            }
            Block::Command(reg @ 1..=6) => {
                let v = data[0];
                self.devctl &= !DEVCTL_HOB;
                if reg == 6 {
                    self.select = v | 0xA0;
                }
                for d in self.drives.iter_mut().flatten() {
                    d.write_register(reg, v);
                }
            }
            Block::Command(_) => {
                let cmd = data[0];
                // EXECUTE DEVICE DIAGNOSTIC addresses both devices (ATA-6 §8.11).
                if cmd == ata::CMD_EXECUTE_DEVICE_DIAGNOSTIC {
                    for d in self.drives.iter_mut().flatten() {
                        d.reset_signature();
                    }
                    if !self.empty() {
                        self.intrq = true;
                        self.update_irq();
                    }
                    return;
                }
                let Some(d) = self.drives[sel].as_mut() else {
                    return;
                };
                self.intrq = false;
                d.command(cmd);
                self.update_irq();
                self.collect_irq();
            }
            Block::Control => self.write_devctl(data[0]),
        }
    }

    /// Device control (ATA-6 §7.9): nIEN gates INTRQ; SRST resets both devices.
    fn write_devctl(&mut self, v: u8) {
        let old = self.devctl;
        self.devctl = v;
        if v & DEVCTL_SRST != 0 && old & DEVCTL_SRST == 0 {
            for d in self.drives.iter_mut().flatten() {
                d.transfer = Transfer::Idle;
                d.status = STATUS_BSY | STATUS_DSC;
                d.error = ERROR_AMNF;
            }
            self.intrq = false;
        } else if v & DEVCTL_SRST == 0 && old & DEVCTL_SRST != 0 {
            for d in self.drives.iter_mut().flatten() {
                d.reset_signature();
            }
            self.select = 0xA0;
            for d in self.drives.iter_mut().flatten() {
                d.tf.select = 0xA0;
            }
        }
        self.update_irq();
    }

    /// Run a waiting DMA job if the bus master is started (SFF-8038i §3).
    fn try_dma(&mut self, memory: Option<&GuestMemory>) {
        if !self.bm.started() {
            return;
        }
        for d in self.drives.iter_mut().flatten() {
            let Transfer::Dma(mut job) = std::mem::replace(&mut d.transfer, Transfer::Idle) else {
                continue;
            };
            let result = match memory {
                Some(m) => bmdma::run(&mut job, self.bm.prd, m, d.backend.as_mut()),
                None => Err(bmdma::DmaError::Memory),
            };
            self.bm.status &= !bmdma::BM_STATUS_ACTIVE;
            self.bm.status |= bmdma::BM_STATUS_INTERRUPT;
            match result {
                Ok(_) => d.dma_done(),
                Err(e) => {
                    tracing::debug!("ide: DMA transfer failed: {e:?}");
                    self.bm.status |= bmdma::BM_STATUS_ERROR;
                    d.dma_failed();
                }
            }
        }
        self.collect_irq();
    }

    fn reset(&mut self) {
        self.select = 0xA0;
        self.devctl = 0;
        self.intrq = false;
        self.bm = BusMaster::default();
        for d in self.drives.iter_mut().flatten() {
            d.power_on();
        }
        self.update_irq();
    }
}

/// The PIIX IDE controller's two legacy channels.
///
/// Register on the port bus at [`IdeController::PORT_RANGES`]; the device tells the ranges
/// apart by absolute port. The PCI face (00:01.1) is [`crate::pci::piix::Piix3Ide`].
pub struct IdeController {
    channels: [Channel; 2],
    memory: Option<Arc<GuestMemory>>,
}

impl IdeController {
    /// Primary command block.
    pub const PRIMARY_COMMAND: u16 = 0x1F0;
    /// Primary control block (device control / alternate status).
    pub const PRIMARY_CONTROL: u16 = 0x3F6;
    /// Secondary command block.
    pub const SECONDARY_COMMAND: u16 = 0x170;
    /// Secondary control block.
    pub const SECONDARY_CONTROL: u16 = 0x376;
    /// ISA IRQ of the primary channel.
    pub const PRIMARY_IRQ: u8 = 14;
    /// ISA IRQ of the secondary channel.
    pub const SECONDARY_IRQ: u8 = 15;
    /// (base, length) of every port range to register.
    pub const PORT_RANGES: [(u16, u64); 4] = [
        (Self::PRIMARY_COMMAND, 8),
        (Self::PRIMARY_CONTROL, 1),
        (Self::SECONDARY_COMMAND, 8),
        (Self::SECONDARY_CONTROL, 1),
    ];

    /// A controller with no drives, interrupting on `irq14` and `irq15`.
    pub fn new(irq14: Arc<dyn IrqLine>, irq15: Arc<dyn IrqLine>) -> Self {
        IdeController {
            channels: [Channel::new(irq14), Channel::new(irq15)],
            memory: None,
        }
    }

    /// Enable bus-master DMA into `memory` (drives then advertise DMA modes). Without it DMA
    /// commands are aborted and guests use PIO.
    pub fn set_dma_memory(&mut self, memory: Arc<GuestMemory>) {
        self.memory = Some(memory);
        for c in &mut self.channels {
            for d in c.drives.iter_mut().flatten() {
                d.dma = true;
            }
        }
    }

    /// Read the bus-master registers (BAR4 of the IDE function) at `offset` (0–15).
    pub fn bmdma_read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let off = offset.saturating_add(i as u64);
            *b = match self.channels.get((off / BM_CHANNEL_SIZE) as usize) {
                Some(c) => c.bm.read(off % BM_CHANNEL_SIZE),
                None => 0xFF,
            };
        }
    }

    /// Write the bus-master registers at `offset`; setting the start bit runs a waiting
    /// transfer.
    pub fn bmdma_write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let off = offset.saturating_add(i as u64);
            let memory = self.memory.as_deref();
            if let Some(c) = self.channels.get_mut((off / BM_CHANNEL_SIZE) as usize) {
                if c.bm.write(off % BM_CHANNEL_SIZE, b) {
                    c.try_dma(memory);
                }
            }
        }
    }

    /// Plug `drive` into `channel` (0 primary, 1 secondary) as `slot` (0 master, 1 slave).
    pub fn attach(&mut self, channel: usize, slot: usize, mut drive: Drive) -> Result<()> {
        let place = self
            .channels
            .get_mut(channel)
            .and_then(|c| c.drives.get_mut(slot))
            .ok_or_else(|| Error::Config {
                device: "ide",
                reason: format!("no IDE position {channel}:{slot} (channels 0-1, slots 0-1)"),
            })?;
        if place.is_some() {
            return Err(Error::Config {
                device: "ide",
                reason: format!("IDE position {channel}:{slot} already has a drive"),
            });
        }
        drive.slot = slot;
        drive.dma = self.memory.is_some();
        drive.tf.select = if slot == 1 { 0xB0 } else { 0xA0 };
        *place = Some(drive);
        Ok(())
    }

    /// The drive at `channel`/`slot`.
    pub fn drive(&self, channel: usize, slot: usize) -> Option<&Drive> {
        self.channels.get(channel)?.drives.get(slot)?.as_ref()
    }

    /// Registers, bus-master state and transfers in progress, for snapshots.
    pub fn state(&self) -> IdeState {
        IdeState {
            channels: self
                .channels
                .iter()
                .map(|c| IdeChannelState {
                    select: c.select,
                    devctl: c.devctl,
                    intrq: c.intrq,
                    bm: c.bm,
                    drives: c
                        .drives
                        .iter()
                        .map(|d| d.as_ref().map(Drive::state))
                        .collect(),
                })
                .collect(),
        }
    }

    /// Restore a snapshot taken with the same drives attached (drives present on only one
    /// side keep their current state).
    pub fn set_state(&mut self, state: &IdeState) {
        for (c, s) in self.channels.iter_mut().zip(&state.channels) {
            c.select = s.select;
            c.devctl = s.devctl;
            c.intrq = s.intrq;
            c.bm = s.bm;
            for (d, ds) in c.drives.iter_mut().zip(&s.drives) {
                if let (Some(d), Some(ds)) = (d.as_mut(), ds) {
                    d.set_state(ds);
                }
            }
            c.update_irq();
        }
    }

    fn decode(addr: u64) -> Option<(usize, Block)> {
        let p = |port: u16| u64::from(port);
        match addr {
            a if (p(Self::PRIMARY_COMMAND)..p(Self::PRIMARY_COMMAND) + 8).contains(&a) => {
                Some((0, Block::Command(a - p(Self::PRIMARY_COMMAND))))
            }
            a if (p(Self::SECONDARY_COMMAND)..p(Self::SECONDARY_COMMAND) + 8).contains(&a) => {
                Some((1, Block::Command(a - p(Self::SECONDARY_COMMAND))))
            }
            a if a == p(Self::PRIMARY_CONTROL) => Some((0, Block::Control)),
            a if a == p(Self::SECONDARY_CONTROL) => Some((1, Block::Control)),
            _ => None,
        }
    }
}

impl BusDevice for IdeController {
    fn name(&self) -> &str {
        "piix-ide"
    }

    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        data.fill(0xFF);
        match Self::decode(access.addr) {
            Some((ch, Block::Command(0))) => self.channels[ch].read(Block::Command(0), data),
            Some((ch, block)) => {
                // Wider accesses to byte registers read consecutive registers.
                for (i, b) in data.iter_mut().enumerate() {
                    let block = match block {
                        Block::Command(r) if r + i as u64 <= 7 => Block::Command(r + i as u64),
                        Block::Control if i == 0 => Block::Control,
                        _ => break,
                    };
                    let mut one = [0u8];
                    self.channels[ch].read(block, &mut one);
                    *b = one[0];
                }
            }
            None => {}
        }
    }

    fn write(&mut self, access: BusAccess, data: &[u8]) {
        let Some((ch, block)) = Self::decode(access.addr) else {
            return;
        };
        if block == Block::Command(0) {
            self.channels[ch].write(Block::Command(0), data);
        } else {
            for (i, &b) in data.iter().enumerate() {
                let block = match block {
                    Block::Command(r) if r + i as u64 <= 7 => Block::Command(r + i as u64),
                    Block::Control if i == 0 => Block::Control,
                    _ => break,
                };
                self.channels[ch].write(block, &[b]);
            }
        }
        // A command (or the last byte of a PACKET) may have queued DMA.
        self.channels[ch].try_dma(self.memory.as_deref());
    }

    fn reset(&mut self) {
        for c in &mut self.channels {
            c.reset();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// xorshift64*: deterministic pseudo-random numbers for the hostile-guest tests.
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    /// An IRQ line that remembers its level.
    #[derive(Default)]
    pub(crate) struct Level(pub AtomicBool);
    impl IrqLine for Level {
        fn set_level(&self, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    /// A controller and its two IRQ lines, driven through ports.
    pub(crate) struct Rig {
        pub ide: IdeController,
        pub irq14: Arc<Level>,
        pub irq15: Arc<Level>,
    }

    impl Rig {
        pub(crate) fn new() -> Self {
            let irq14 = Arc::new(Level::default());
            let irq15 = Arc::new(Level::default());
            Rig {
                ide: IdeController::new(irq14.clone(), irq15.clone()),
                irq14,
                irq15,
            }
        }
        pub(crate) fn outb(&mut self, port: u16, v: u8) {
            self.ide.write(
                BusAccess {
                    offset: 0,
                    addr: u64::from(port),
                },
                &[v],
            );
        }
        pub(crate) fn inb(&mut self, port: u16) -> u8 {
            let mut b = [0u8];
            self.ide.read(
                BusAccess {
                    offset: 0,
                    addr: u64::from(port),
                },
                &mut b,
            );
            b[0]
        }
        pub(crate) fn inw(&mut self, port: u16) -> u16 {
            let mut b = [0u8; 2];
            self.ide.read(
                BusAccess {
                    offset: 0,
                    addr: u64::from(port),
                },
                &mut b,
            );
            u16::from_le_bytes(b)
        }
        pub(crate) fn outw(&mut self, port: u16, v: u16) {
            self.ide.write(
                BusAccess {
                    offset: 0,
                    addr: u64::from(port),
                },
                &v.to_le_bytes(),
            );
        }
        /// Read `n` bytes through the data port with 16-bit accesses.
        pub(crate) fn insw(&mut self, base: u16, n: usize) -> Vec<u8> {
            (0..n / 2)
                .flat_map(|_| self.inw(base).to_le_bytes())
                .collect()
        }
        pub(crate) fn irq14(&self) -> bool {
            self.irq14.0.load(Ordering::SeqCst)
        }
        pub(crate) fn irq15(&self) -> bool {
            self.irq15.0.load(Ordering::SeqCst)
        }
    }

    /// Whatever a guest writes to the IDE ports, at any width, nothing panics; commands are
    /// biased towards real ones so transfers actually start.
    #[test]
    fn hostile_programming_never_panics() {
        let mut r = Rig::new();
        r.ide
            .attach(0, 0, Drive::disk(MemBackend::new(vec![0x11; 64 * 512])))
            .unwrap();
        r.ide
            .attach(
                0,
                1,
                Drive::cdrom(MemBackend::read_only(vec![0x22; 8 * 2048])),
            )
            .unwrap();
        r.ide.attach(1, 0, Drive::empty_cdrom()).unwrap();
        let memory = Arc::new(GuestMemory::pc(2 << 20).unwrap());
        r.ide.set_dma_memory(memory.clone());
        let commands = [
            0x20, 0x24, 0x29, 0x30, 0x34, 0x39, 0x40, 0x42, 0x90, 0x91, 0xA0, 0xA1, 0xC4, 0xC5,
            0xC6, 0xE7, 0xEC, 0xEF, 0xF8, 0x27, 0x08, 0xC8, 0xCA, 0x25, 0x35,
        ];
        let mut rng = Rng(0x1234_5678_9ABC_DEF1);
        for _ in 0..200_000 {
            let x = rng.next();
            let ch = (x & 1) as usize;
            let base = if ch == 0 { 0x1F0u64 } else { 0x170 };
            let ctrl = if ch == 0 { 0x3F6u64 } else { 0x376 };
            let addr = match (x >> 1) % 16 {
                0..=5 => base,
                6 => ctrl,
                7 => base + 7,
                n => base + (n % 8),
            };
            let len = [1usize, 2, 4, 8][((x >> 8) % 4) as usize];
            let mut data = rng.next().to_le_bytes();
            if addr == base + 7 && !(x >> 12).is_multiple_of(4) {
                data[0] = commands[((x >> 16) % commands.len() as u64) as usize];
            }
            if addr == ctrl && !(x >> 12).is_multiple_of(8) {
                data[0] &= !DEVCTL_SRST;
            }
            let access = BusAccess { offset: 0, addr };
            match (x >> 20) % 8 {
                0..=2 => r.ide.read(access, &mut data[..len]),
                3 => {
                    // Bus-master registers, with PRD tables of random bytes in guest memory.
                    let off = (x >> 24) % 18;
                    if (x >> 30) & 1 == 0 {
                        r.ide.bmdma_read(off, &mut data[..len]);
                    } else {
                        let _ = memory.write_phys((x >> 32) % (2 << 20), &data[..len]);
                        r.ide.bmdma_write(off, &data[..len]);
                    }
                }
                _ => r.ide.write(access, &data[..len]),
            }
        }
        // Still a working disk afterwards.
        r.outb(0x3F6, 0x02);
        r.outb(0x1F6, 0xE0);
        r.outb(0x1F2, 1);
        r.outb(0x1F3, 0);
        r.outb(0x1F4, 0);
        r.outb(0x1F5, 0);
        r.outb(0x1F7, ata::CMD_READ_SECTORS);
        let st = r.inb(0x1F7);
        assert_eq!(st & (STATUS_DRQ | STATUS_ERR), STATUS_DRQ, "status {st:#x}");
    }

    #[test]
    fn geometry_follows_the_mbr_or_qemus_default() {
        // No partition table: 16 heads, 63 sectors, at least 2 cylinders.
        let d = Drive::disk(MemBackend::new(vec![0; 64 * 512]));
        assert_eq!(d.geometry(), (2, 16, 63));
        assert_eq!(d.translation(), ChsTranslation::None);
        let d = Drive::disk(MemBackend::new(vec![0; 20_000 * 1008 * 512 / 1000]));
        assert_eq!(d.geometry(), (20, 16, 63));
        // A partition ending at head 3, sector 32: 4 heads, 32 sectors per track.
        let mut img = vec![0u8; 4096 * 512];
        img[510] = 0x55;
        img[511] = 0xAA;
        let p = &mut img[0x1BE..0x1CE];
        p[5] = 3;
        p[6] = 32;
        p[12..16].copy_from_slice(&4000u32.to_le_bytes());
        let d = Drive::disk(MemBackend::new(img.clone()));
        assert_eq!(d.geometry(), (32, 4, 32));
        assert_eq!(d.translation(), ChsTranslation::None);
        // More than 16 heads means the BIOS translated: standard physical geometry.
        img.resize(20_000 * 512, 0);
        img[0x1BE + 5] = 254;
        img[0x1BE + 6] = 63;
        let d = Drive::disk(MemBackend::new(img));
        assert_eq!(d.geometry(), (19, 16, 63));
        assert_eq!(d.translation(), ChsTranslation::Large);
        assert_eq!(d.translation().cmos_code(), 2);
        // A disk beyond 1024 cylinders needs LBA translation.
        struct Big;
        impl BlockBackend for Big {
            fn size(&self) -> u64 {
                8 << 30
            }
            fn read_at(&mut self, _: u64, buf: &mut [u8]) -> std::io::Result<()> {
                buf.fill(0);
                Ok(())
            }
            fn write_at(&mut self, _: u64, _: &[u8]) -> std::io::Result<()> {
                Ok(())
            }
        }
        let d = Drive::disk(Big);
        assert_eq!(d.geometry(), (16383, 16, 63));
        assert_eq!(d.translation(), ChsTranslation::Lba);
        assert_eq!(Drive::empty_cdrom().geometry(), (0, 0, 0));
    }

    #[test]
    fn snapshot_restores_a_transfer_in_progress() {
        let image: Vec<u8> = (0..8 * 512).map(|i| (i / 512) as u8).collect();
        let mut r = Rig::new();
        r.ide
            .attach(0, 0, Drive::disk(MemBackend::new(image.clone())))
            .unwrap();
        r.outb(0x1F6, 0xE0);
        r.outb(0x1F2, 2);
        r.outb(0x1F3, 3);
        r.outb(0x1F7, ata::CMD_READ_SECTORS);
        let _ = r.insw(0x1F0, 100);
        let json = serde_json::to_string(&r.ide.state()).unwrap();
        let state: IdeState = serde_json::from_str(&json).unwrap();
        let mut r2 = Rig::new();
        r2.ide
            .attach(0, 0, Drive::disk(MemBackend::new(image)))
            .unwrap();
        r2.ide.set_state(&state);
        assert_eq!(r2.ide.state(), state);
        assert!(r2.irq14(), "pending interrupt restored");
        let rest = r2.insw(0x1F0, 412 + 512);
        assert!(rest[..412].iter().all(|&b| b == 3));
        assert!(rest[412..].iter().all(|&b| b == 4));
        assert_eq!(r2.inb(0x1F7), STATUS_DRDY | STATUS_DSC);
    }

    #[test]
    fn attach_rejects_conflicts_and_bad_positions() {
        let mut r = Rig::new();
        r.ide
            .attach(0, 0, Drive::disk(MemBackend::new(vec![0; 4096])))
            .unwrap();
        assert!(r
            .ide
            .attach(0, 0, Drive::disk(MemBackend::new(vec![0; 4096])))
            .is_err());
        assert!(r.ide.attach(2, 0, Drive::empty_cdrom()).is_err());
        assert!(r.ide.attach(0, 2, Drive::empty_cdrom()).is_err());
        r.ide.attach(1, 1, Drive::empty_cdrom()).unwrap();
        assert_eq!(r.ide.drive(1, 1).unwrap().kind(), DriveKind::Cdrom);
    }

    #[test]
    fn empty_channel_and_absent_slave_read_zero() {
        let mut r = Rig::new();
        r.ide
            .attach(0, 0, Drive::disk(MemBackend::new(vec![0; 4096])))
            .unwrap();
        // Secondary channel has nothing: SeaBIOS's probe reads back 0.
        r.outb(0x176, 0xA0);
        r.outb(0x172, 0x55);
        r.outb(0x173, 0xAA);
        assert_eq!((r.inb(0x172), r.inb(0x173), r.inb(0x177)), (0, 0, 0));
        // Primary slave absent: status and taskfile read 0, device/head reads back.
        r.outb(0x1F6, 0xB0);
        r.outb(0x1F2, 0x55);
        r.outb(0x1F3, 0xAA);
        assert_eq!((r.inb(0x1F2), r.inb(0x1F3), r.inb(0x1F7)), (0, 0, 0));
        assert_eq!(r.inb(0x1F6), 0xB0);
        // The master answers.
        r.outb(0x1F6, 0xA0);
        r.outb(0x1F2, 0x55);
        r.outb(0x1F3, 0xAA);
        assert_eq!((r.inb(0x1F2), r.inb(0x1F3)), (0x55, 0xAA));
        assert_eq!(r.inb(0x1F6), 0xA0);
        assert_eq!(r.inb(0x1F7), STATUS_DRDY | STATUS_DSC);
        // Commands to the absent slave do nothing.
        r.outb(0x1F6, 0xB0);
        r.outb(0x1F7, ata::CMD_IDENTIFY_DEVICE);
        assert_eq!(r.inb(0x1F7), 0);
        assert!(!r.irq14());
    }

    #[test]
    fn file_backend_reads_and_refuses_past_end() {
        let path = std::env::temp_dir().join(format!("pcvm-ide-{}.img", std::process::id()));
        std::fs::write(&path, vec![7u8; 1024]).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut b = FileBackend::new(f, false).unwrap();
        assert_eq!(b.size(), 1024);
        let mut buf = [0u8; 512];
        b.read_at(512, &mut buf).unwrap();
        assert_eq!(buf, [7u8; 512]);
        assert!(b.read_at(1000, &mut buf).is_err());
        b.write_at(0, &[1, 2]).unwrap();
        assert!(b.write_at(1023, &[1, 2]).is_err());
        b.flush().unwrap();
        let ro = FileBackend::new(std::fs::File::open(&path).unwrap(), true).unwrap();
        let mut ro = ro;
        assert!(ro.write_at(0, &[1]).is_err());
        std::fs::remove_file(&path).unwrap();
        let mut m = MemBackend::new(vec![0; 16]);
        assert!(m.read_at(u64::MAX, &mut buf[..1]).is_err());
        assert!(m.write_at(u64::MAX - 1, &[0; 4]).is_err());
    }
}
