//! Guest physical memory with the PC memory map, on vm-memory.
//!
//! Layout (as QEMU's i440FX "pc" machine lays it out):
//! - RAM from 0 up to `below_4g` (at most 0xE000_0000, or 0xC000_0000 when RAM ≥ 3.5 GiB);
//!   the rest of RAM from 4 GiB up.
//! - 0xA0000–0xBFFFF: the legacy VGA window, always MMIO (SMRAM stays closed).
//! - 0xC0000–0xFFFFF: thirteen PAM areas (i440FX datasheet §3.2.18): each reads and writes RAM
//!   or the PCI side, where 0xE0000–0xFFFFF aliases the last 128 KiB of the BIOS ROM.
//! - `below_4g`–4 GiB: the PCI hole (MMIO) with ROMs (the BIOS) at the top.
//!
//! The A20 gate masks address bit 20 of every access when disabled. Changes to PAM or A20 bump
//! [`GuestMemory::map_generation`] so backends drop cached translations. Writes to pages that a
//! backend marked as holding translated code are reported through
//! [`GuestMemory::take_code_invalidations`], whoever writes them (CPU or device DMA).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use vm_memory::{GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap};

use crate::{Error, Result};

/// 4 GiB.
pub const FOUR_GIB: u64 = 1 << 32;
/// Size of a guest page for code tracking.
pub const PAGE_SIZE: u64 = 4096;
/// Start of the legacy VGA window.
pub const VGA_WINDOW_START: u64 = 0xA_0000;
/// Start of the PAM-controlled BIOS/option-ROM area.
pub const PAM_START: u64 = 0xC_0000;
/// End (exclusive) of the first megabyte.
pub const ONE_MIB: u64 = 0x10_0000;

/// Where guest RAM sits in the physical address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Total RAM in bytes.
    pub ram_size: u64,
    /// RAM mapped from address 0.
    pub below_4g: u64,
    /// RAM mapped from 4 GiB.
    pub above_4g: u64,
}

impl MemoryLayout {
    /// The smallest RAM a PC guest can use here (1 MiB plus room for the BIOS's tables).
    pub const MIN_RAM: u64 = 2 << 20;
    /// The largest RAM accepted (1 TiB).
    pub const MAX_RAM: u64 = 1 << 40;

    /// Split `ram_size` around the PCI hole the way QEMU's pc machine does.
    pub fn pc(ram_size: u64) -> Result<Self> {
        if ram_size < Self::MIN_RAM {
            return Err(Error::InvalidRamSize(ram_size, "at least 2 MiB is needed"));
        }
        if ram_size > Self::MAX_RAM {
            return Err(Error::InvalidRamSize(
                ram_size,
                "at most 1 TiB is supported",
            ));
        }
        if !ram_size.is_multiple_of(PAGE_SIZE) {
            return Err(Error::InvalidRamSize(
                ram_size,
                "must be a multiple of 4 KiB",
            ));
        }
        let lowmem = if ram_size >= 0xE000_0000 {
            0xC000_0000
        } else {
            0xE000_0000
        };
        let below_4g = ram_size.min(lowmem);
        Ok(MemoryLayout {
            ram_size,
            below_4g,
            above_4g: ram_size - below_4g,
        })
    }

    /// Translate a RAM offset (0..ram_size) to its guest physical address.
    pub fn offset_to_gpa(&self, offset: u64) -> u64 {
        if offset < self.below_4g {
            offset
        } else {
            FOUR_GIB + (offset - self.below_4g)
        }
    }
}

/// What a physical access reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhysRegion {
    /// Guest RAM at this offset into RAM.
    Ram(u64),
    /// ROM `index` at `offset` (reads only; writes classify as [`PhysRegion::Dropped`]).
    Rom { index: usize, offset: u64 },
    /// A write the chipset discards (ROM, write-protected shadow).
    Dropped,
    /// Device memory: send the access to the MMIO bus.
    Mmio,
}

/// PAM attribute values (i440FX datasheet §3.2.18).
pub mod pam {
    /// Reads and writes go to the PCI side.
    pub const DISABLED: u8 = 0;
    /// Reads from RAM, writes to the PCI side.
    pub const READ_ONLY: u8 = 1;
    /// Writes to RAM, reads from the PCI side.
    pub const WRITE_ONLY: u8 = 2;
    /// Reads and writes to RAM.
    pub const READ_WRITE: u8 = 3;
}

struct Rom {
    base: u64,
    data: Vec<u8>,
}

/// Guest physical memory: RAM (as a vm-memory mapping), ROMs and the chipset's routing.
pub struct GuestMemory {
    layout: MemoryLayout,
    ram: GuestMemoryMmap<()>,
    /// Host address of RAM offset 0 and of RAM offset `below_4g`.
    low_host: usize,
    high_host: usize,
    roms: Vec<Rom>,
    /// Index into `roms` of the ROM aliased at 0xE0000–0xFFFFF (the BIOS).
    bios_rom: Option<usize>,
    pam: [AtomicU8; 13],
    a20_enabled: AtomicBool,
    generation: AtomicU64,
    code_pages: Vec<AtomicU64>,
    code_dirty: AtomicBool,
    /// Pages that became code pages so far (see [`Self::code_marks`]).
    code_marks: AtomicU64,
    invalidated: Mutex<Vec<u64>>,
}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMemory")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl GuestMemory {
    /// Allocate RAM for `layout`. Pages are mapped lazily by the host, so untouched RAM costs
    /// nothing.
    pub fn new(layout: MemoryLayout) -> Result<Self> {
        let mut ranges = vec![(GuestAddress(0), layout.below_4g as usize)];
        if layout.above_4g > 0 {
            ranges.push((GuestAddress(FOUR_GIB), layout.above_4g as usize));
        }
        let ram = GuestMemoryMmap::<()>::from_ranges(&ranges)
            .map_err(|e| Error::MapRam(e.to_string()))?;
        let host = |gpa: u64| {
            ram.get_host_address(GuestAddress(gpa))
                .map(|p| p as usize)
                .map_err(|e| Error::MapRam(e.to_string()))
        };
        let low_host = host(0)?;
        let high_host = if layout.above_4g > 0 {
            host(FOUR_GIB)?
        } else {
            0
        };
        let pages = layout.ram_size.div_ceil(PAGE_SIZE);
        Ok(GuestMemory {
            layout,
            ram,
            low_host,
            high_host,
            roms: Vec::new(),
            bios_rom: None,
            pam: Default::default(),
            a20_enabled: AtomicBool::new(true),
            generation: AtomicU64::new(0),
            code_pages: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            code_dirty: AtomicBool::new(false),
            code_marks: AtomicU64::new(0),
            invalidated: Mutex::new(Vec::new()),
        })
    }

    /// PC memory of `ram_size` bytes.
    pub fn pc(ram_size: u64) -> Result<Self> {
        Self::new(MemoryLayout::pc(ram_size)?)
    }

    /// The RAM layout.
    pub fn layout(&self) -> &MemoryLayout {
        &self.layout
    }

    /// The vm-memory view of RAM, for KVM memslots and image loaders.
    pub fn vm_memory(&self) -> &GuestMemoryMmap<()> {
        &self.ram
    }

    /// Map a ROM image at `base` in the PCI hole below 4 GiB.
    pub fn add_rom(&mut self, base: u64, data: Vec<u8>) -> Result<usize> {
        let end = base
            .checked_add(data.len() as u64)
            .filter(|&e| e <= FOUR_GIB);
        let Some(end) = end else {
            return Err(Error::MapRom {
                addr: base,
                reason: "ROM crosses 4 GiB".into(),
            });
        };
        if base < self.layout.below_4g || data.is_empty() {
            return Err(Error::MapRom {
                addr: base,
                reason: "ROM overlaps RAM or is empty".into(),
            });
        }
        if self
            .roms
            .iter()
            .any(|r| base < r.base + r.data.len() as u64 && r.base < end)
        {
            return Err(Error::MapRom {
                addr: base,
                reason: "ROM overlaps another ROM".into(),
            });
        }
        self.roms.push(Rom { base, data });
        Ok(self.roms.len() - 1)
    }

    /// Map the BIOS at the top of 4 GiB with its last 128 KiB aliased below 1 MiB
    /// (reached there while the PAM areas point to the PCI side).
    pub fn map_bios(&mut self, image: Vec<u8>) -> Result<()> {
        let len = image.len() as u64;
        let index = self.add_rom(FOUR_GIB - len, image)?;
        self.bios_rom = Some(index);
        Ok(())
    }

    /// Bytes of ROM `index`.
    pub fn rom(&self, index: usize) -> &[u8] {
        &self.roms[index].data
    }

    /// Set the attribute (see [`pam`]) of PAM area `area`: 0 = 0xF0000–0xFFFFF, 1.. = the
    /// 16 KiB areas from 0xC0000 up.
    pub fn set_pam(&self, area: usize, attr: u8) {
        if let Some(slot) = self.pam.get(area) {
            if slot.swap(attr & 3, Ordering::AcqRel) != attr & 3 {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Open or close the A20 gate.
    pub fn set_a20(&self, enabled: bool) {
        if self.a20_enabled.swap(enabled, Ordering::AcqRel) != enabled {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The A20 gate is open.
    pub fn a20_enabled(&self) -> bool {
        self.a20_enabled.load(Ordering::Acquire)
    }

    /// Bumped whenever the physical map changes (PAM, A20): cached translations are stale.
    #[inline]
    pub fn map_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Apply the A20 gate to a physical address.
    #[inline]
    pub fn a20_mask(&self, gpa: u64) -> u64 {
        if self.a20_enabled.load(Ordering::Relaxed) {
            gpa
        } else {
            gpa & !(1 << 20)
        }
    }

    fn pam_area(gpa: u64) -> usize {
        if gpa >= 0xF_0000 {
            0
        } else {
            1 + ((gpa - PAM_START) >> 14) as usize
        }
    }

    /// Where an access to `gpa` goes (after the A20 gate).
    #[inline]
    pub fn classify(&self, gpa: u64, write: bool) -> PhysRegion {
        let gpa = self.a20_mask(gpa);
        if gpa < VGA_WINDOW_START {
            return PhysRegion::Ram(gpa);
        }
        if gpa < ONE_MIB {
            if gpa < PAM_START {
                return PhysRegion::Mmio;
            }
            let attr = self.pam[Self::pam_area(gpa)].load(Ordering::Relaxed);
            let to_ram = if write {
                attr & pam::WRITE_ONLY != 0
            } else {
                attr & pam::READ_ONLY != 0
            };
            if to_ram {
                return PhysRegion::Ram(gpa);
            }
            if write {
                return PhysRegion::Dropped;
            }
            if let Some(index) = self.bios_rom {
                let rom = &self.roms[index];
                let alias_len = (rom.data.len() as u64).min(0x2_0000);
                let alias_base = ONE_MIB - alias_len;
                if gpa >= alias_base {
                    let offset = rom.data.len() as u64 - alias_len + (gpa - alias_base);
                    return PhysRegion::Rom { index, offset };
                }
            }
            return PhysRegion::Mmio;
        }
        if gpa < self.layout.below_4g {
            return PhysRegion::Ram(gpa);
        }
        if gpa < FOUR_GIB {
            for (index, rom) in self.roms.iter().enumerate() {
                if gpa >= rom.base && gpa - rom.base < rom.data.len() as u64 {
                    return if write {
                        PhysRegion::Dropped
                    } else {
                        PhysRegion::Rom {
                            index,
                            offset: gpa - rom.base,
                        }
                    };
                }
            }
            return PhysRegion::Mmio;
        }
        if gpa - FOUR_GIB < self.layout.above_4g {
            return PhysRegion::Ram(self.layout.below_4g + (gpa - FOUR_GIB));
        }
        PhysRegion::Mmio
    }

    /// Host pointer for `len` bytes of RAM at `offset`, or `None` if any byte lies outside RAM
    /// or the range crosses from low to high RAM.
    #[inline]
    fn ram_ptr(&self, offset: u64, len: usize) -> Option<*mut u8> {
        let end = offset.checked_add(len as u64)?;
        if end <= self.layout.below_4g {
            Some((self.low_host + offset as usize) as *mut u8)
        } else if offset >= self.layout.below_4g && end <= self.layout.ram_size {
            Some((self.high_host + (offset - self.layout.below_4g) as usize) as *mut u8)
        } else {
            None
        }
    }

    /// Read RAM at `offset` into `buf`; false if the range is not all RAM.
    #[inline]
    pub fn read_ram(&self, offset: u64, buf: &mut [u8]) -> bool {
        match self.ram_ptr(offset, buf.len()) {
            Some(p) => {
                // SAFETY: `ram_ptr` checked that [offset, offset+len) lies inside one mapping
                // owned by `self.ram`, which lives as long as `self` and is never remapped.
                // Guest RAM is shared with other vCPUs/devices like hardware memory: a racing
                // write yields some mix of bytes, never undefined host behaviour, as in
                // vm-memory's own copies.
                unsafe {
                    std::ptr::copy_nonoverlapping(p as *const u8, buf.as_mut_ptr(), buf.len())
                };
                true
            }
            None => false,
        }
    }

    /// Write `buf` to RAM at `offset`; false if the range is not all RAM.
    #[inline(always)]
    pub fn write_ram(&self, offset: u64, buf: &[u8]) -> bool {
        match self.ram_ptr(offset, buf.len()) {
            Some(p) => {
                self.note_write(offset, buf.len() as u64);
                // SAFETY: as in `read_ram`: the range was bounds-checked against a live mapping.
                unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), p, buf.len()) };
                true
            }
            None => false,
        }
    }

    /// Copy `len` bytes of RAM from offset `src` to offset `dst` (the ranges may overlap, as
    /// with `memmove`); false if either range is not all RAM. REP MOVS's bulk path: no bounce
    /// buffer between guest pages.
    pub fn copy_ram(&self, src: u64, dst: u64, len: usize) -> bool {
        let (Some(from), Some(to)) = (self.ram_ptr(src, len), self.ram_ptr(dst, len)) else {
            return false;
        };
        self.note_write(dst, len as u64);
        // SAFETY: `ram_ptr` bounds-checked both ranges against live mappings owned by `self`
        // (see `read_ram`); `ptr::copy` allows them to overlap.
        unsafe { std::ptr::copy(from as *const u8, to, len) };
        true
    }

    /// Fill `len` bytes of RAM at `offset` with the 8 little-endian bytes of `pattern`
    /// repeated (byte `i` is `pattern`'s byte `i % 8`); false if the range is not all RAM.
    /// REP STOS's bulk path: the caller replicates its element across the 8 bytes.
    pub fn fill_ram(&self, offset: u64, len: usize, pattern: u64) -> bool {
        let Some(to) = self.ram_ptr(offset, len) else {
            return false;
        };
        self.note_write(offset, len as u64);
        let bytes = pattern.to_le_bytes();
        if pattern == u64::from(bytes[0]) * 0x0101_0101_0101_0101 {
            // SAFETY: as in `read_ram`: the range was bounds-checked against a live mapping.
            unsafe { std::ptr::write_bytes(to, bytes[0], len) };
            return true;
        }
        let words = len / 8;
        for i in 0..words {
            // SAFETY: word `i` lies inside the checked range; unaligned stores are allowed.
            unsafe { std::ptr::write_unaligned(to.add(i * 8) as *mut u64, pattern) };
        }
        for (i, b) in bytes.iter().enumerate().take(len % 8) {
            // SAFETY: byte `words * 8 + i` < `len` lies inside the checked range.
            unsafe { to.add(words * 8 + i).write(*b) };
        }
        true
    }

    /// Read a little-endian value of N bytes from RAM.
    #[inline]
    pub fn read_ram_le<const N: usize>(&self, offset: u64) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.read_ram(offset, &mut b).then_some(b)
    }

    /// Mark the page holding RAM offset `offset` as containing translated code.
    pub fn mark_code_page(&self, offset: u64) {
        let page = offset / PAGE_SIZE;
        if let Some(word) = self.code_pages.get((page / 64) as usize) {
            let bit = 1 << (page % 64);
            if word.fetch_or(bit, Ordering::AcqRel) & bit == 0 {
                self.code_marks.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// The page holding RAM offset `offset` is marked as holding translated code.
    #[inline]
    pub fn is_code_page(&self, offset: u64) -> bool {
        let page = offset / PAGE_SIZE;
        self.code_pages
            .get((page / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (page % 64)) != 0)
    }

    /// How many times a page became a code page: a JIT that lets stores to non-code pages
    /// bypass [`Self::write_ram`] re-checks its shortcuts when this changes.
    #[inline]
    pub fn code_marks(&self) -> u64 {
        self.code_marks.load(Ordering::Acquire)
    }

    #[inline(always)]
    fn note_write(&self, offset: u64, len: u64) {
        let first = offset / PAGE_SIZE;
        let last = (offset + len.max(1) - 1) / PAGE_SIZE;
        for page in first..=last {
            let Some(word) = self.code_pages.get((page / 64) as usize) else {
                continue;
            };
            let bit = 1u64 << (page % 64);
            if word.load(Ordering::Relaxed) & bit != 0 {
                self.note_code_write(word, bit, page);
            }
        }
    }

    /// A write hit a code page (bit `bit` of `word` for page `page`): record it, out of line
    /// so [`Self::write_ram`]'s common path stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn note_code_write(&self, word: &AtomicU64, bit: u64, page: u64) {
        if word.fetch_and(!bit, Ordering::AcqRel) & bit != 0 {
            if let Ok(mut v) = self.invalidated.lock() {
                v.push(page * PAGE_SIZE);
            }
            self.code_dirty.store(true, Ordering::Release);
        }
    }

    /// Some code page was written since the last [`Self::take_code_invalidations`].
    #[inline]
    pub fn code_dirty(&self) -> bool {
        self.code_dirty.load(Ordering::Relaxed)
    }

    /// RAM offsets (page-aligned) of code pages written since the last call.
    pub fn take_code_invalidations(&self) -> Vec<u64> {
        self.code_dirty.store(false, Ordering::Release);
        match self.invalidated.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => Vec::new(),
        }
    }

    /// Read guest-physical memory (RAM and ROM) for DMA and loaders; MMIO and holes are an error.
    pub fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let addr = gpa.wrapping_add(done as u64);
            let chunk = ((PAGE_SIZE - addr % PAGE_SIZE) as usize).min(buf.len() - done);
            match self.classify(addr, false) {
                PhysRegion::Ram(off) => {
                    if !self.read_ram(off, &mut buf[done..done + chunk]) {
                        return Err(Error::NotRam(addr));
                    }
                }
                PhysRegion::Rom { index, offset } => {
                    let data = &self.roms[index].data;
                    let n = chunk.min(data.len() - offset as usize);
                    buf[done..done + n]
                        .copy_from_slice(&data[offset as usize..offset as usize + n]);
                    done += n;
                    continue;
                }
                _ => return Err(Error::NotRam(addr)),
            }
            done += chunk;
        }
        Ok(())
    }

    /// Write guest-physical RAM for DMA and loaders; writes to ROM are dropped, MMIO and holes
    /// are an error.
    pub fn write_phys(&self, gpa: u64, buf: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let addr = gpa.wrapping_add(done as u64);
            let chunk = ((PAGE_SIZE - addr % PAGE_SIZE) as usize).min(buf.len() - done);
            match self.classify(addr, true) {
                PhysRegion::Ram(off) => {
                    if !self.write_ram(off, &buf[done..done + chunk]) {
                        return Err(Error::NotRam(addr));
                    }
                }
                PhysRegion::Dropped => {}
                _ => return Err(Error::NotRam(addr)),
            }
            done += chunk;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_qemu_pc() {
        let l = MemoryLayout::pc(128 << 20).unwrap();
        assert_eq!((l.below_4g, l.above_4g), (128 << 20, 0));
        let l = MemoryLayout::pc(4 << 30).unwrap();
        assert_eq!((l.below_4g, l.above_4g), (0xC000_0000, 0x4000_0000));
        let l = MemoryLayout::pc(0xD000_0000).unwrap();
        assert_eq!((l.below_4g, l.above_4g), (0xD000_0000, 0));
        assert!(MemoryLayout::pc(1 << 20).is_err());
        assert!(MemoryLayout::pc((64 << 20) + 1).is_err());
    }

    #[test]
    fn bios_is_aliased_below_1mib_until_shadowed() {
        let mut m = GuestMemory::pc(16 << 20).unwrap();
        let mut bios = vec![0u8; 256 << 10];
        bios[(256 << 10) - 16] = 0xEA;
        m.map_bios(bios).unwrap();
        let mut b = [0u8; 1];
        m.read_phys(0xFFFF_FFF0, &mut b).unwrap();
        assert_eq!(b[0], 0xEA);
        m.read_phys(0xFFFF0, &mut b).unwrap();
        assert_eq!(b[0], 0xEA);
        // Write-only shadow: writes reach RAM, reads still see ROM.
        m.set_pam(0, pam::WRITE_ONLY);
        m.write_phys(0xFFFF0, &[0x90]).unwrap();
        m.read_phys(0xFFFF0, &mut b).unwrap();
        assert_eq!(b[0], 0xEA);
        m.set_pam(0, pam::READ_ONLY);
        m.read_phys(0xFFFF0, &mut b).unwrap();
        assert_eq!(b[0], 0x90);
        assert_eq!(m.classify(0xFFFF0, true), PhysRegion::Dropped);
        assert_eq!(m.classify(0xB8000, false), PhysRegion::Mmio);
    }

    #[test]
    fn bulk_copy_and_fill_stay_in_ram_and_track_code_pages() {
        let m = GuestMemory::pc(16 << 20).unwrap();
        let src: Vec<u8> = (0..100u8).collect();
        assert!(m.write_ram(0x1000, &src));
        // Overlapping forward copy behaves as memmove.
        assert!(m.copy_ram(0x1000, 0x1010, 100));
        let mut b = [0u8; 100];
        assert!(m.read_ram(0x1010, &mut b));
        assert_eq!(&b[..], &src[..]);
        // A 4-byte element replicated over 8 bytes, with a 3-byte tail.
        assert!(m.fill_ram(0x2001, 11, 0xDDCC_BBAA_DDCC_BBAA));
        let mut f = [0u8; 13];
        assert!(m.read_ram(0x2000, &mut f));
        assert_eq!(
            f,
            [0, 0xAA, 0xBB, 0xCC, 0xDD, 0xAA, 0xBB, 0xCC, 0xDD, 0xAA, 0xBB, 0xCC, 0]
        );
        assert!(m.fill_ram(0x3000, 5, 0));
        // Ranges past the end of RAM are refused whole.
        let end = 16 << 20;
        assert!(!m.copy_ram(0x1000, end - 4, 8));
        assert!(!m.copy_ram(end - 4, 0x1000, 8));
        assert!(!m.fill_ram(end - 4, 8, 0));
        // Writes into a code page are reported.
        m.mark_code_page(0x5000);
        assert!(m.fill_ram(0x5FF0, 0x20, 0x0101_0101_0101_0101));
        assert!(m.code_dirty());
        assert_eq!(m.take_code_invalidations(), vec![0x5000]);
        m.mark_code_page(0x7000);
        assert!(m.copy_ram(0x1000, 0x7000, 4));
        assert_eq!(m.take_code_invalidations(), vec![0x7000]);
    }

    #[test]
    fn high_ram_and_a20() {
        let m = GuestMemory::pc(4 << 30).unwrap();
        assert_eq!(
            m.classify(FOUR_GIB + 5, false),
            PhysRegion::Ram(0xC000_0005)
        );
        assert_eq!(m.classify(0xD000_0000, false), PhysRegion::Mmio);
        m.write_phys(0x10_0010, &[1, 2, 3]).unwrap();
        m.set_a20(false);
        let mut b = [0u8; 3];
        m.read_phys(0x10_0010, &mut b).unwrap();
        assert_eq!(b, [0, 0, 0], "A20 off wraps 1 MiB to 0");
        m.set_a20(true);
        m.read_phys(0x10_0010, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3]);
        assert!(m.read_phys((4 << 30) + (1 << 30), &mut b).is_err());
    }

    #[test]
    fn code_page_writes_are_reported() {
        let m = GuestMemory::pc(4 << 20).unwrap();
        m.mark_code_page(0x2000);
        assert!(!m.code_dirty());
        m.write_phys(0x1FFF, &[1, 2]).unwrap();
        assert!(m.code_dirty());
        assert_eq!(m.take_code_invalidations(), vec![0x2000]);
        m.write_phys(0x2000, &[1]).unwrap();
        assert!(
            !m.code_dirty(),
            "page unmarked after the first invalidation"
        );
    }

    #[test]
    fn code_marks_count_pages_becoming_code() {
        let m = GuestMemory::pc(4 << 20).unwrap();
        assert_eq!(m.code_marks(), 0);
        m.mark_code_page(0x43000);
        m.mark_code_page(0x43800);
        assert!(m.is_code_page(0x43fff) && !m.is_code_page(0x44000));
        assert_eq!(
            m.code_marks(),
            1,
            "marking a code page again is no new mark"
        );
        assert!(m.write_ram(0x43010, &[7]));
        assert!(!m.is_code_page(0x43000) && m.code_dirty());
        m.mark_code_page(0x43000);
        assert_eq!(m.code_marks(), 2, "a written page marked again counts");
        assert!(!m.is_code_page(u64::MAX), "beyond RAM is no code page");
    }
}
