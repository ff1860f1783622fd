//! Memory access as instructions see it: segment → linear (`segment`), linear → physical
//! (`mmu`), physical → RAM/ROM through `GuestMemory` or MMIO through the platform.
//!
//! Owned jointly: EXEC uses these helpers; SYS owns the `segment` and `mmu` calls they make.

use pcvm_core::memory::PhysRegion;
use pcvm_core::{Platform, SegReg};

use crate::segment::is_canonical;
use crate::{Fault, Interpreter};

/// What an access does, for segment and page protection checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    Read,
    Write,
    Execute,
}

/// One entry of the linear-page → RAM-offset caches: valid while the interpreter's context
/// generation (bumped by every system/far instruction, segment load, event delivery and
/// memory-map change, which covers every TLB flush, CPL change and PAM/A20 change) is `gen`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RamEntry {
    /// Linear page number.
    tag: u64,
    gen: u64,
    /// RAM offset of the page's first byte.
    ram: u64,
}

/// Entries in each of the read and write RAM caches (direct mapped by linear page number,
/// so pages 4 MiB apart share a slot).
pub(crate) const RAM_CACHE_SIZE: usize = 1024;

/// An empty cache entry.
pub(crate) const RAM_ENTRY_EMPTY: RamEntry = RamEntry {
    tag: u64::MAX,
    gen: 0,
    ram: 0,
};

impl Interpreter {
    /// The RAM offset of `linear` if a previous access of the same kind at the current
    /// context found its page in RAM (the fast path: no translation, no classification).
    #[inline]
    fn ram_fast(&self, linear: u64, write: bool) -> Option<u64> {
        let page = linear >> 12;
        let cache = if write {
            &self.wr_cache
        } else {
            &self.rd_cache
        };
        let e = cache[(page as usize) & (RAM_CACHE_SIZE - 1)];
        if e.tag == page && e.gen == self.ctx_gen {
            Some(e.ram + (linear & 0xFFF))
        } else {
            None
        }
    }

    /// Remember that the page of `linear` is RAM at offset `off` (of `linear` itself).
    #[inline]
    fn ram_fill(&mut self, linear: u64, off: u64, write: bool) {
        let page = linear >> 12;
        let gen = self.ctx_gen;
        let cache = if write {
            &mut self.wr_cache
        } else {
            &mut self.rd_cache
        };
        cache[(page as usize) & (RAM_CACHE_SIZE - 1)] = RamEntry {
            tag: page,
            gen,
            ram: off - (linear & 0xFFF),
        };
    }

    /// Read physical memory: RAM/ROM directly, everything else from the MMIO bus.
    pub(crate) fn phys_read(&mut self, p: &mut dyn Platform, phys: u64, buf: &mut [u8]) {
        match p.memory().classify(phys, false) {
            PhysRegion::Ram(off) => {
                if !p.memory().read_ram(off, buf) {
                    // Straddles the end of RAM: split bytewise.
                    for (i, b) in buf.iter_mut().enumerate() {
                        let mut one = [0u8];
                        self.phys_read(p, phys + i as u64, &mut one);
                        *b = one[0];
                    }
                }
            }
            PhysRegion::Rom { index, offset } => {
                let rom = p.memory().rom(index);
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = rom.get(offset as usize + i).copied().unwrap_or(0xFF);
                }
            }
            PhysRegion::Mmio | PhysRegion::Dropped => {
                p.mmio_read(phys, buf);
                self.io_done = true;
            }
        }
    }

    /// Write physical memory: RAM directly (with code-page tracking), ROM writes dropped,
    /// everything else to the MMIO bus.
    pub(crate) fn phys_write(&mut self, p: &mut dyn Platform, phys: u64, buf: &[u8]) {
        match p.memory().classify(phys, true) {
            PhysRegion::Ram(off) => {
                let mem = p.memory();
                if !mem.write_ram(off, buf) {
                    for (i, b) in buf.iter().enumerate() {
                        self.phys_write(p, phys + i as u64, &[*b]);
                    }
                } else if mem.code_dirty() {
                    // The store hit decoded code: the run loop ends the block (SMC).
                    self.smc = true;
                }
            }
            PhysRegion::Dropped | PhysRegion::Rom { .. } => {}
            PhysRegion::Mmio => {
                p.mmio_write(phys, buf);
                // A device may have started DMA or changed the memory map.
                self.io_done = true;
                self.ctx_gen += 1;
            }
        }
    }

    /// Read `buf.len()` bytes at a linear address, splitting at page boundaries.
    pub(crate) fn read_linear(
        &mut self,
        p: &mut dyn Platform,
        linear: u64,
        buf: &mut [u8],
        kind: AccessKind,
    ) -> Result<(), Fault> {
        let first = 4096 - (linear & 0xFFF) as usize;
        if buf.len() <= first {
            // A read-modify-write operand is read with write intent: only the write cache
            // proves the page writable.
            let write = kind == AccessKind::Write;
            if kind != AccessKind::Execute {
                if let Some(off) = self.ram_fast(linear, write) {
                    if p.memory().read_ram(off, buf) {
                        return Ok(());
                    }
                }
            }
            let phys = self.translate(p, linear, kind)?;
            if let PhysRegion::Ram(off) = p.memory().classify(phys, write) {
                if p.memory().read_ram(off, buf) {
                    if kind != AccessKind::Execute {
                        self.ram_fill(linear, off, write);
                    }
                    return Ok(());
                }
            }
            self.phys_read(p, phys, buf);
        } else {
            // Translate both pages before touching memory so a fault leaves no side effects.
            let second_linear = self.wrap_linear(linear.wrapping_add(first as u64));
            let phys1 = self.translate(p, linear, kind)?;
            let phys2 = self.translate(p, second_linear, kind)?;
            let (a, b) = buf.split_at_mut(first);
            self.phys_read(p, phys1, a);
            self.phys_read(p, phys2, b);
        }
        Ok(())
    }

    /// Write `buf` at a linear address, splitting at page boundaries; both pages are checked
    /// before either is written.
    pub(crate) fn write_linear(
        &mut self,
        p: &mut dyn Platform,
        linear: u64,
        buf: &[u8],
    ) -> Result<(), Fault> {
        self.check_watchpoints(linear, buf.len() as u64, true);
        let first = 4096 - (linear & 0xFFF) as usize;
        if buf.len() <= first {
            if let Some(off) = self.ram_fast(linear, true) {
                let mem = p.memory();
                if mem.write_ram(off, buf) {
                    if mem.code_dirty() {
                        self.smc = true;
                    }
                    return Ok(());
                }
            }
            let phys = self.translate(p, linear, AccessKind::Write)?;
            if let PhysRegion::Ram(off) = p.memory().classify(phys, true) {
                self.ram_fill(linear, off, true);
            }
            self.phys_write(p, phys, buf);
        } else {
            let second_linear = self.wrap_linear(linear.wrapping_add(first as u64));
            let phys1 = self.translate(p, linear, AccessKind::Write)?;
            let phys2 = self.translate(p, second_linear, AccessKind::Write)?;
            let (a, b) = buf.split_at(first);
            self.phys_write(p, phys1, a);
            self.phys_write(p, phys2, b);
        }
        Ok(())
    }

    /// Linear addresses wrap at 4 GiB outside 64-bit mode.
    #[inline]
    pub(crate) fn wrap_linear(&self, linear: u64) -> u64 {
        if self.state.long_mode_active() {
            linear
        } else {
            linear & 0xFFFF_FFFF
        }
    }

    /// Read an N-byte little-endian value through segment `seg` at `offset`.
    pub(crate) fn read_seg<const N: usize>(
        &mut self,
        p: &mut dyn Platform,
        seg: SegReg,
        offset: u64,
    ) -> Result<[u8; N], Fault> {
        let linear = self.seg_linear(seg, offset, N as u64, AccessKind::Read)?;
        self.check_watchpoints(linear, N as u64, false);
        // Fast path: a page already known to be RAM, read with a fixed-size copy.
        if (linear & 0xFFF) as usize + N <= 4096 {
            if let Some(off) = self.ram_fast(linear, false) {
                if let Some(b) = p.memory().read_ram_le::<N>(off) {
                    return Ok(b);
                }
            }
        }
        let mut b = [0u8; N];
        self.read_linear(p, linear, &mut b, AccessKind::Read)?;
        Ok(b)
    }

    /// Fast path of a read-modify-write operand read: `size` bytes at `linear` from a page the
    /// write cache already proves writable RAM, with a fixed-size copy; `None` to take the
    /// checked path.
    #[inline]
    pub(crate) fn read_ram_writable(&self, p: &dyn Platform, linear: u64, size: u8) -> Option<u64> {
        if (linear & 0xFFF) + u64::from(size) > 4096 {
            return None;
        }
        let off = self.ram_fast(linear, true)?;
        let mem = p.memory();
        Some(match size {
            1 => u64::from(mem.read_ram_le::<1>(off)?[0]),
            2 => u64::from(u16::from_le_bytes(mem.read_ram_le::<2>(off)?)),
            4 => u64::from(u32::from_le_bytes(mem.read_ram_le::<4>(off)?)),
            _ => u64::from_le_bytes(mem.read_ram_le::<8>(off)?),
        })
    }

    /// Write an N-byte little-endian value through segment `seg` at `offset`.
    pub(crate) fn write_seg<const N: usize>(
        &mut self,
        p: &mut dyn Platform,
        seg: SegReg,
        offset: u64,
        bytes: [u8; N],
    ) -> Result<(), Fault> {
        let linear = self.seg_linear(seg, offset, N as u64, AccessKind::Write)?;
        if (linear & 0xFFF) as usize + N <= 4096 && self.no_watch() {
            if let Some(off) = self.ram_fast(linear, true) {
                let mem = p.memory();
                if mem.write_ram(off, &bytes) {
                    if mem.code_dirty() {
                        self.smc = true;
                    }
                    return Ok(());
                }
            }
        }
        self.write_linear(p, linear, &bytes)
    }

    /// No debugger watchpoint and no DR0–DR3 breakpoint is armed.
    #[inline]
    fn no_watch(&self) -> bool {
        self.state.dr[7] & 0xFF == 0 && self.debug.watchpoints.is_empty()
    }

    /// Record a watchpoint hit for the debugger (reported after the instruction completes).
    #[inline]
    pub(crate) fn check_watchpoints(&mut self, linear: u64, len: u64, write: bool) {
        if !self.no_watch() {
            self.check_watchpoints_slow(linear, len, write);
        }
    }

    fn check_watchpoints_slow(&mut self, linear: u64, len: u64, write: bool) {
        if self.state.dr[7] & 0xFF != 0 {
            let kind = if write {
                AccessKind::Write
            } else {
                AccessKind::Read
            };
            self.dr_hits |= self.debug_register_hits(linear, len, kind);
        }
        if self.debug.watchpoints.is_empty() {
            return;
        }
        for w in &self.debug.watchpoints {
            let hit_kind = match w.kind {
                pcvm_core::WatchKind::Write => write,
                pcvm_core::WatchKind::Read => !write,
                pcvm_core::WatchKind::Access => true,
            };
            if hit_kind && linear < w.addr.wrapping_add(w.len) && w.addr < linear.wrapping_add(len)
            {
                self.watch_hit = Some((w.kind, w.addr));
                return;
            }
        }
    }
}

impl Interpreter {
    /// The linear address of a 64-bit-mode access of `len` bytes at `offset` through `seg`:
    /// only FS and GS have a base, there are no limit checks, and every byte must be
    /// canonical — #SS(0) for stack references, #GP(0) otherwise (SDM Vol. 3A §3.4.2.1,
    /// §6.15 #GP/#SS).
    #[inline]
    pub(crate) fn linear_64(&self, seg: SegReg, offset: u64, len: u64) -> Result<u64, Fault> {
        let base = if matches!(seg, SegReg::Fs | SegReg::Gs) {
            self.state.seg(seg).base
        } else {
            0
        };
        let linear = base.wrapping_add(offset);
        if is_canonical(linear) && is_canonical(linear.wrapping_add(len.max(1) - 1)) {
            Ok(linear)
        } else if seg == SegReg::Ss {
            Err(Fault::ss(0))
        } else {
            Err(Fault::gp(0))
        }
    }

    /// Mask for the stack pointer: SS.B selects ESP over SP outside 64-bit mode
    /// (Intel SDM Vol. 1 §6.2.3).
    #[inline]
    pub(crate) fn stack_mask(&self) -> u64 {
        if self.state.in_64bit_code() {
            u64::MAX
        } else if self.state.protected_mode() && self.state.seg(SegReg::Ss).db() {
            0xFFFF_FFFF
        } else {
            0xFFFF
        }
    }

    /// Push the low `size` bytes (2, 4 or 8) of `value`. RSP is updated only if the write
    /// succeeds, so a faulting push leaves the state unchanged.
    pub(crate) fn push(&mut self, p: &mut dyn Platform, value: u64, size: u8) -> Result<(), Fault> {
        let mask = self.stack_mask();
        let rsp = self.state.gpr[pcvm_core::cpu_state::gpr::RSP];
        let new_sp = rsp.wrapping_sub(u64::from(size)) & mask;
        let bytes = value.to_le_bytes();
        let linear = self.seg_linear(SegReg::Ss, new_sp, u64::from(size), AccessKind::Write)?;
        self.write_linear(p, linear, &bytes[..usize::from(size)])?;
        self.state.gpr[pcvm_core::cpu_state::gpr::RSP] = (rsp & !mask) | new_sp;
        Ok(())
    }

    /// Pop `size` bytes (2, 4 or 8), zero-extended.
    pub(crate) fn pop(&mut self, p: &mut dyn Platform, size: u8) -> Result<u64, Fault> {
        let value = self.peek_stack(p, 0, size)?;
        let mask = self.stack_mask();
        let rsp = self.state.gpr[pcvm_core::cpu_state::gpr::RSP];
        self.state.gpr[pcvm_core::cpu_state::gpr::RSP] =
            (rsp & !mask) | (rsp.wrapping_add(u64::from(size)) & mask);
        Ok(value)
    }

    /// Read `size` bytes at SS:(rSP + `offset`) without moving the stack pointer.
    pub(crate) fn peek_stack(
        &mut self,
        p: &mut dyn Platform,
        offset: u64,
        size: u8,
    ) -> Result<u64, Fault> {
        let mask = self.stack_mask();
        let sp = self.state.gpr[pcvm_core::cpu_state::gpr::RSP].wrapping_add(offset) & mask;
        let linear = self.seg_linear(SegReg::Ss, sp, u64::from(size), AccessKind::Read)?;
        let mut b = [0u8; 8];
        self.read_linear(p, linear, &mut b[..usize::from(size)], AccessKind::Read)?;
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use pcvm_core::cpu_state::cr;
    use pcvm_core::Segment;

    use super::*;

    #[test]
    fn long_mode_segmentation_uses_fs_gs_bases_and_canonical_checks() {
        let mut cpu = Interpreter::new();
        cpu.state.efer = cr::EFER_LME | cr::EFER_LMA;
        cpu.state.cr0 |= cr::CR0_PE;
        cpu.state.seg_mut(SegReg::Cs).attributes |= Segment::ATTR_L;
        cpu.state.seg_mut(SegReg::Ds).base = 0x1000;
        cpu.state.seg_mut(SegReg::Ds).limit = 0;
        cpu.state.seg_mut(SegReg::Fs).base = 0xFFFF_8000_0000_0000;
        let read = AccessKind::Read;
        // No DS base and no limit check in 64-bit mode; FS keeps its base.
        assert_eq!(cpu.seg_linear(SegReg::Ds, 0x10, 8, read), Ok(0x10));
        assert_eq!(
            cpu.seg_linear(SegReg::Fs, 0x10, 8, AccessKind::Write),
            Ok(0xFFFF_8000_0000_0010)
        );
        // An access whose last byte leaves the lower canonical half: #GP(0); through SS: #SS(0).
        assert_eq!(
            cpu.seg_linear(SegReg::Ds, 0x7FFF_FFFF_FFFC, 8, read),
            Err(Fault::gp(0))
        );
        assert_eq!(
            cpu.seg_linear(SegReg::Ss, 0x8000_0000_0000, 1, read),
            Err(Fault::ss(0))
        );
        assert_eq!(
            cpu.seg_linear(SegReg::Fs, u64::MAX, 1, read),
            Err(Fault::gp(0)),
            "FS base - 1 is in the hole"
        );
        assert_eq!(
            cpu.seg_linear(SegReg::Es, u64::MAX - 7, 8, read),
            Ok(u64::MAX - 7)
        );
    }
}
