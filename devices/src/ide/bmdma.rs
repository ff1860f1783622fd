//! PIIX bus-master IDE DMA (82371SB datasheet §2.7.3; the SFF-8038i "Bus Master Programming
//! Interface for IDE ATA Controllers"): per channel a command register, a status register and
//! the address of a physical region descriptor (PRD) table in guest memory.
//!
//! A DMA command (READ/WRITE DMA, a PACKET command with the DMA feature bit) leaves its drive
//! with a pending DMA job; the transfer runs, all at once, when both the job exists and the host has
//! set the start bit. Memory is reached only through [`GuestMemory::read_phys`] and
//! [`GuestMemory::write_phys`], so descriptors pointing outside RAM end the transfer with the
//! error bit instead of touching host memory.

use pcvm_core::GuestMemory;
use serde::{Deserialize, Serialize};

/// Bus-master command: start/stop.
pub const BM_CMD_START: u8 = 0x01;
/// Bus-master command: direction, 1 = the controller writes memory (a device read).
pub const BM_CMD_WRITE_MEMORY: u8 = 0x08;
/// Bus-master status: DMA active.
pub const BM_STATUS_ACTIVE: u8 = 0x01;
/// Bus-master status: error (write 1 to clear).
pub const BM_STATUS_ERROR: u8 = 0x02;
/// Bus-master status: interrupt (write 1 to clear).
pub const BM_STATUS_INTERRUPT: u8 = 0x04;
/// Bus-master status: drive 0 and drive 1 DMA capable (software-set, reported back).
pub const BM_STATUS_DRIVES_CAPABLE: u8 = 0x60;
/// Bytes of bus-master registers per channel.
pub const BM_CHANNEL_SIZE: u64 = 8;
/// PRD entry: end of table.
const PRD_EOT: u32 = 0x8000_0000;
/// A PRD table cannot cross a 64 KiB boundary, so it holds at most 8192 entries.
const MAX_PRD_ENTRIES: u64 = 8192;

/// Where a DMA transfer's device-side bytes come from or go to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum DmaData {
    /// Bytes of the drive's backend from `offset`.
    Backend { offset: u64 },
    /// A reply built in memory (ATAPI data-in commands other than reads).
    Reply(Vec<u8>),
}

/// A DMA transfer a drive is waiting to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DmaJob {
    /// true: device → memory (READ DMA, ATAPI data-in).
    pub to_memory: bool,
    /// Total bytes to move.
    pub len: u64,
    pub data: DmaData,
}

/// The bus-master registers of one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BusMaster {
    pub command: u8,
    pub status: u8,
    pub prd: u32,
}

impl BusMaster {
    /// Read a register byte at `reg` (0–7 within the channel's block).
    pub fn read(&self, reg: u64) -> u8 {
        match reg {
            0 => self.command,
            2 => self.status,
            4..=7 => (self.prd >> (8 * (reg - 4))) as u8,
            _ => 0,
        }
    }

    /// Write a register byte; returns true when the start bit went from 0 to 1.
    pub fn write(&mut self, reg: u64, v: u8) -> bool {
        match reg {
            0 => {
                let was = self.command & BM_CMD_START != 0;
                let start = v & BM_CMD_START != 0;
                // The direction bit may only change while stopped.
                let dir = if was {
                    self.command & BM_CMD_WRITE_MEMORY
                } else {
                    v & BM_CMD_WRITE_MEMORY
                };
                self.command = dir | (v & BM_CMD_START);
                if was && !start {
                    // Stopping aborts whatever was in flight.
                    self.status &= !BM_STATUS_ACTIVE;
                }
                if start && !was {
                    self.status |= BM_STATUS_ACTIVE;
                    return true;
                }
                false
            }
            2 => {
                let w1c = v & (BM_STATUS_ERROR | BM_STATUS_INTERRUPT);
                self.status = (self.status & !w1c & !BM_STATUS_DRIVES_CAPABLE)
                    | (v & BM_STATUS_DRIVES_CAPABLE);
                false
            }
            4..=7 => {
                let shift = 8 * (reg - 4);
                self.prd = (self.prd & !(0xFF << shift)) | (u32::from(v) << shift);
                self.prd &= !3;
                false
            }
            _ => false,
        }
    }

    /// The transfer can run now.
    pub fn started(&self) -> bool {
        self.command & BM_CMD_START != 0
    }
}

/// Why a DMA transfer stopped early.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DmaError {
    /// The PRD table ended before the data did.
    ShortTable,
    /// A descriptor or buffer is not guest RAM.
    Memory,
    /// The backend failed.
    Backend,
}

/// Run `job` through the PRD table at `prd`, moving data between guest memory and the
/// backend or reply. Returns the bytes moved.
pub(crate) fn run(
    job: &mut DmaJob,
    prd: u32,
    memory: &GuestMemory,
    mut backend: Option<&mut Box<dyn super::BlockBackend>>,
) -> Result<u64, DmaError> {
    let mut done = 0u64;
    let mut chunk = Vec::new();
    for i in 0..MAX_PRD_ENTRIES {
        if done == job.len {
            return Ok(done);
        }
        let entry_addr = u64::from(prd) + 8 * i;
        let mut entry = [0u8; 8];
        memory
            .read_phys(entry_addr, &mut entry)
            .map_err(|_| DmaError::Memory)?;
        let addr = u64::from(u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]) & !1);
        let flags = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
        let count = match flags & 0xFFFE {
            0 => 0x1_0000,
            c => u64::from(c),
        };
        let n = count.min(job.len - done);
        chunk.clear();
        chunk.resize(n as usize, 0);
        if job.to_memory {
            match &job.data {
                DmaData::Backend { offset } => {
                    let b = backend.as_deref_mut().ok_or(DmaError::Backend)?;
                    b.read_at(offset + done, &mut chunk)
                        .map_err(|_| DmaError::Backend)?;
                }
                DmaData::Reply(v) => {
                    let start = done as usize;
                    let src = v.get(start..start + n as usize).ok_or(DmaError::Backend)?;
                    chunk.copy_from_slice(src);
                }
            }
            memory
                .write_phys(addr, &chunk)
                .map_err(|_| DmaError::Memory)?;
        } else {
            memory
                .read_phys(addr, &mut chunk)
                .map_err(|_| DmaError::Memory)?;
            match &mut job.data {
                DmaData::Backend { offset } => {
                    let b = backend.as_deref_mut().ok_or(DmaError::Backend)?;
                    b.write_at(*offset + done, &chunk)
                        .map_err(|_| DmaError::Backend)?;
                }
                DmaData::Reply(_) => return Err(DmaError::Backend),
            }
        }
        done += n;
        if flags & PRD_EOT != 0 {
            break;
        }
    }
    if done == job.len {
        Ok(done)
    } else {
        Err(DmaError::ShortTable)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::ata::{
        CMD_IDENTIFY_DEVICE, CMD_READ_DMA, CMD_READ_DMA_EXT, CMD_SET_FEATURES, CMD_WRITE_DMA,
    };
    use super::super::atapi::CD_SECTOR_SIZE;
    use super::super::tests::Rig;
    use super::super::*;
    use super::*;

    fn memory() -> Arc<GuestMemory> {
        Arc::new(GuestMemory::pc(4 << 20).unwrap())
    }

    fn disk(sectors: usize) -> Vec<u8> {
        (0..sectors * SECTOR_SIZE)
            .map(|i| (i / SECTOR_SIZE) as u8 ^ (i as u8))
            .collect()
    }

    /// Write a PRD table at `at`: (address, byte count) pairs, the last one marked EOT.
    fn prd_table(mem: &GuestMemory, at: u64, entries: &[(u32, u32)]) {
        for (i, &(addr, count)) in entries.iter().enumerate() {
            let eot = if i + 1 == entries.len() { PRD_EOT } else { 0 };
            let mut e = addr.to_le_bytes().to_vec();
            e.extend_from_slice(&((count & 0xFFFF) | eot).to_le_bytes());
            mem.write_phys(at + 8 * i as u64, &e).unwrap();
        }
    }

    fn rig(mem: &Arc<GuestMemory>, drive: Drive, channel: usize) -> Rig {
        let mut r = Rig::new();
        r.ide.attach(channel, 0, drive).unwrap();
        r.ide.set_dma_memory(mem.clone());
        r
    }

    fn bm_write(r: &mut Rig, off: u64, data: &[u8]) {
        r.ide.bmdma_write(off, data);
    }

    fn bm_status(r: &mut Rig, ch: u64) -> u8 {
        let mut b = [0u8];
        r.ide.bmdma_read(ch * 8 + 2, &mut b);
        b[0]
    }

    fn lba28(r: &mut Rig, base: u16, lba: u32, count: u8, cmd: u8) {
        r.outb(base + 6, 0xE0 | (lba >> 24) as u8);
        r.outb(base + 2, count);
        r.outb(base + 3, lba as u8);
        r.outb(base + 4, (lba >> 8) as u8);
        r.outb(base + 5, (lba >> 16) as u8);
        r.outb(base + 7, cmd);
    }

    #[test]
    fn read_dma_scatters_through_the_prd_table() {
        let mem = memory();
        let image = disk(32);
        let mut r = rig(&mem, Drive::disk(MemBackend::new(image.clone())), 0);
        r.outb(0x3F6, 0x00);
        prd_table(&mem, 0x1000, &[(0x10000, 512), (0x20000, 1024)]);
        bm_write(&mut r, 4, &0x1000u32.to_le_bytes());
        lba28(&mut r, 0x1F0, 5, 3, CMD_READ_DMA);
        assert!(!r.irq14(), "nothing happens before the bus master starts");
        assert_eq!(r.inb(0x3F6) & STATUS_DRQ, STATUS_DRQ);
        bm_write(&mut r, 0, &[BM_CMD_WRITE_MEMORY | BM_CMD_START]);
        assert!(r.irq14());
        assert_eq!(
            bm_status(&mut r, 0) & 7,
            BM_STATUS_INTERRUPT,
            "done, not active"
        );
        assert_eq!(r.inb(0x1F7), STATUS_DRDY | STATUS_DSC);
        let mut a = vec![0u8; 512];
        mem.read_phys(0x10000, &mut a).unwrap();
        assert_eq!(a, image[5 * 512..6 * 512]);
        let mut b = vec![0u8; 1024];
        mem.read_phys(0x20000, &mut b).unwrap();
        assert_eq!(b, image[6 * 512..8 * 512]);
        bm_write(&mut r, 2, &[BM_STATUS_INTERRUPT]);
        bm_write(&mut r, 0, &[0]);
        assert_eq!(bm_status(&mut r, 0) & 7, 0);
    }

    #[test]
    fn write_dma_then_read_dma_ext_round_trips() {
        let mem = memory();
        let mut r = rig(&mem, Drive::disk(MemBackend::new(vec![0; 64 * 512])), 0);
        let data: Vec<u8> = (0..2048u32).map(|i| (i * 7) as u8).collect();
        mem.write_phys(0x30000, &data).unwrap();
        prd_table(&mem, 0x2000, &[(0x30000, 2048)]);
        bm_write(&mut r, 4, &0x2000u32.to_le_bytes());
        // Start first, then the command (either order works).
        bm_write(&mut r, 0, &[BM_CMD_START]);
        lba28(&mut r, 0x1F0, 10, 4, CMD_WRITE_DMA);
        assert_eq!(bm_status(&mut r, 0) & 7, BM_STATUS_INTERRUPT);
        assert_eq!(r.inb(0x1F7), STATUS_DRDY | STATUS_DSC);
        bm_write(&mut r, 0, &[0]);
        bm_write(&mut r, 2, &[BM_STATUS_INTERRUPT]);
        prd_table(&mem, 0x2000, &[(0x40000, 0)]); // 0 = 64 KiB
        r.outb(0x1F6, 0x40);
        for (reg, hi, lo) in [(2u16, 0u8, 4u8), (3, 0, 10), (4, 0, 0), (5, 0, 0)] {
            r.outb(0x1F0 + reg, hi);
            r.outb(0x1F0 + reg, lo);
        }
        r.outb(0x1F7, CMD_READ_DMA_EXT);
        bm_write(&mut r, 0, &[BM_CMD_WRITE_MEMORY | BM_CMD_START]);
        let mut back = vec![0u8; 2048];
        mem.read_phys(0x40000, &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(r.inb(0x1F7), STATUS_DRDY | STATUS_DSC);
    }

    #[test]
    fn bad_prd_tables_end_in_errors() {
        let mem = memory();
        let mut r = rig(&mem, Drive::disk(MemBackend::new(disk(16))), 0);
        // Table shorter than the transfer.
        prd_table(&mem, 0x1000, &[(0x10000, 512)]);
        bm_write(&mut r, 4, &0x1000u32.to_le_bytes());
        lba28(&mut r, 0x1F0, 0, 2, CMD_READ_DMA);
        bm_write(&mut r, 0, &[BM_CMD_WRITE_MEMORY | BM_CMD_START]);
        assert_eq!(
            bm_status(&mut r, 0) & 7,
            BM_STATUS_INTERRUPT | BM_STATUS_ERROR
        );
        assert_eq!(r.inb(0x1F7) & STATUS_ERR, STATUS_ERR);
        // Buffer outside RAM (the PCI hole) and a table outside RAM: no host access.
        for (table, buf) in [(0x1000u32, 0xF000_0000u32), (0xFFFF_FFF8, 0x10000)] {
            bm_write(&mut r, 0, &[0]);
            bm_write(&mut r, 2, &[0x06]);
            if table == 0x1000 {
                prd_table(&mem, 0x1000, &[(buf, 1024)]);
            }
            bm_write(&mut r, 4, &table.to_le_bytes());
            lba28(&mut r, 0x1F0, 0, 2, CMD_READ_DMA);
            bm_write(&mut r, 0, &[BM_CMD_WRITE_MEMORY | BM_CMD_START]);
            assert_eq!(bm_status(&mut r, 0) & BM_STATUS_ERROR, BM_STATUS_ERROR);
            assert_eq!(r.inb(0x1F7) & STATUS_ERR, STATUS_ERR);
        }
        // Out-of-range LBA fails before any DMA.
        bm_write(&mut r, 0, &[0]);
        lba28(&mut r, 0x1F0, 15, 2, CMD_READ_DMA);
        assert_eq!(r.inb(0x1F1), ERROR_IDNF);
    }

    #[test]
    fn atapi_dma_read_and_identify_modes() {
        let mem = memory();
        let iso: Vec<u8> = (0..8 * CD_SECTOR_SIZE)
            .map(|i| (i / CD_SECTOR_SIZE) as u8)
            .collect();
        let mut r = rig(&mem, Drive::cdrom(MemBackend::read_only(iso)), 1);
        prd_table(&mem, 0x3000, &[(0x50000, 4096)]);
        bm_write(&mut r, 8 + 4, &0x3000u32.to_le_bytes());
        r.outb(0x176, 0xA0);
        r.outb(0x171, 0x01); // DMA
        r.outb(0x177, 0xA0);
        for w in [0x0028u16, 0x0000, 0x0300, 0x0000, 0x0002, 0x0000] {
            r.outw(0x170, w); // READ(10) LBA 3, 2 sectors
        }
        bm_write(&mut r, 8, &[BM_CMD_WRITE_MEMORY | BM_CMD_START]);
        assert!(r.irq15());
        assert_eq!(bm_status(&mut r, 1) & 7, BM_STATUS_INTERRUPT);
        assert_eq!(r.inb(0x177), STATUS_DRDY | STATUS_DSC);
        assert_eq!(r.inb(0x172) & 3, 3, "I/O and C/D: command complete");
        let mut got = vec![0u8; 4096];
        mem.read_phys(0x50000, &mut got).unwrap();
        assert!(got[..2048].iter().all(|&b| b == 3) && got[2048..].iter().all(|&b| b == 4));

        // IDENTIFY on a DMA-capable disk shows the Ultra DMA mode SET FEATURES picked.
        let mut r = rig(&mem, Drive::disk(MemBackend::new(disk(8))), 0);
        r.outb(0x1F1, 0x03);
        r.outb(0x1F2, 0x45);
        r.outb(0x1F7, CMD_SET_FEATURES);
        assert_eq!(r.inb(0x1F7), STATUS_DRDY | STATUS_DSC);
        r.outb(0x1F7, CMD_IDENTIFY_DEVICE);
        let id = r.insw(0x1F0, 512);
        let word = |i: usize| u16::from_le_bytes([id[2 * i], id[2 * i + 1]]);
        assert_ne!(word(49) & (1 << 8), 0);
        assert_eq!(word(88), 0x203F);
        assert_eq!(word(63), 0x0007);
    }

    #[test]
    fn without_memory_dma_is_refused_and_not_advertised() {
        let mut r = Rig::new();
        r.ide
            .attach(0, 0, Drive::disk(MemBackend::new(disk(8))))
            .unwrap();
        lba28(&mut r, 0x1F0, 0, 1, CMD_READ_DMA);
        assert_eq!(r.inb(0x1F1), ERROR_ABRT);
        r.outb(0x1F7, CMD_IDENTIFY_DEVICE);
        let id = r.insw(0x1F0, 512);
        assert_eq!(
            u16::from_le_bytes([id[98], id[99]]) & (1 << 8),
            0,
            "word 49: no DMA"
        );
        r.outb(0x1F1, 0x03);
        r.outb(0x1F2, 0x42);
        r.outb(0x1F7, CMD_SET_FEATURES);
        assert_eq!(r.inb(0x1F1), ERROR_ABRT);
        // Bus-master registers still store what is written.
        r.ide.bmdma_write(4, &[0x13, 0x10, 0, 0]);
        let mut p = [0u8; 4];
        r.ide.bmdma_read(4, &mut p);
        assert_eq!(p, [0x10, 0x10, 0, 0], "PRD address is dword aligned");
        r.ide.bmdma_write(2, &[0x60]);
        let mut s = [0u8];
        r.ide.bmdma_read(2, &mut s);
        assert_eq!(s[0], 0x60);
        r.ide.read(
            BusAccess {
                offset: 0,
                addr: 0x1F7,
            },
            &mut s,
        );
    }
}
