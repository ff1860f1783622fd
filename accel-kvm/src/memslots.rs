//! Guest memory as KVM memory slots (KVM API §4.35 `KVM_SET_USER_MEMORY_REGION`).
//!
//! - RAM below 0xA0000, RAM from 1 MiB to the PCI hole, and RAM above 4 GiB: one read/write slot
//!   each, backed by the same host mapping the interpreter uses (`GuestMemory::vm_memory`).
//! - ROMs in the PCI hole (the BIOS at the top of 4 GiB): read-only slots (`KVM_MEM_READONLY`)
//!   over a page-aligned private copy; guest writes arrive as MMIO exits and are dropped.
//! - 0xA0000–0xBFFFF: no slot, so VGA accesses exit to the MMIO bus.
//! - 0xC0000–0xFFFFF: one slot per PAM area (i440FX datasheet §3.2.18), following
//!   `GuestMemory::classify`: RAM (read/write or read-only) when the area reads RAM, the BIOS
//!   alias (read-only) when it reads ROM, nothing (MMIO exits, resolved by `classify`) for
//!   write-only shadowing and option-ROM space. Re-planned when `map_generation` changes.
//!
//! The A20 gate is not modelled under KVM (as in QEMU's KVM mode): addresses never wrap at
//! 1 MiB. Firmware enables A20 before it relies on memory above 1 MiB.

use std::alloc::Layout;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use pcvm_core::memory::{FOUR_GIB, ONE_MIB, PAGE_SIZE, PAM_START, VGA_WINDOW_START};
use pcvm_core::{GuestMemory, PhysRegion};
use vm_memory::{GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap};

use crate::{Error, Result};

/// One memory slot: `size` bytes at guest-physical `gpa`, backed by host memory at `host`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub gpa: u64,
    pub size: u64,
    pub host: u64,
    pub readonly: bool,
}

/// Slot ids: three RAM slots, thirteen PAM areas, then ROMs.
const SLOT_LOW_RAM: u32 = 0;
const SLOT_RAM: u32 = 1;
const SLOT_HIGH_RAM: u32 = 2;
const SLOT_PAM_FIRST: u32 = 3;
const SLOT_ROM_FIRST: u32 = SLOT_PAM_FIRST + PAM_AREAS as u32;

/// Number of PAM areas.
pub const PAM_AREAS: usize = 13;

/// Guest-physical start and size of PAM area `i`: 0 is 0xF0000–0xFFFFF, 1.. the 16 KiB areas
/// from 0xC0000 up (the numbering `GuestMemory::set_pam` uses).
pub fn pam_area(i: usize) -> (u64, u64) {
    if i == 0 {
        (0xF_0000, 0x1_0000)
    } else {
        (PAM_START + (i as u64 - 1) * 0x4000, 0x4000)
    }
}

/// What PAM area `i` should be mapped as, given where each ROM's page-aligned host copy is
/// (`rom_host[index]`). `None`: leave it unmapped so every access exits and goes through
/// `classify`.
pub fn plan_pam_area(
    mem: &GuestMemory,
    i: usize,
    low_host: u64,
    rom_host: &[Option<u64>],
) -> Option<Slot> {
    let (start, size) = pam_area(i);
    let last = start + size - 1;
    let read = mem.classify(start, false);
    let write = mem.classify(start, true);
    match (read, write) {
        (PhysRegion::Ram(a), PhysRegion::Ram(_)) | (PhysRegion::Ram(a), PhysRegion::Dropped) => {
            // The area is uniform (one PAM attribute) and RAM there is identity-mapped.
            (a == start).then_some(Slot {
                gpa: start,
                size,
                host: low_host + a,
                readonly: write == PhysRegion::Dropped,
            })
        }
        (PhysRegion::Rom { index, offset }, PhysRegion::Dropped) => {
            let host = (*rom_host.get(index)?)?;
            let uniform = mem.classify(last, false)
                == PhysRegion::Rom {
                    index,
                    offset: offset + size - 1,
                };
            (uniform && offset % PAGE_SIZE == 0).then_some(Slot {
                gpa: start,
                size,
                host: host + offset,
                readonly: true,
            })
        }
        _ => None,
    }
}

/// Find the ROMs in the PCI hole below 4 GiB: (index, base) for each, in address order.
pub fn find_roms(mem: &GuestMemory) -> Vec<(usize, u64)> {
    let mut found = Vec::new();
    let mut gpa = mem.layout().below_4g.next_multiple_of(PAGE_SIZE);
    while gpa < FOUR_GIB {
        match mem.classify(gpa, false) {
            PhysRegion::Rom { index, offset } => {
                let base = gpa - offset;
                let len = mem.rom(index).len() as u64;
                found.push((index, base));
                gpa = (base + len)
                    .next_multiple_of(PAGE_SIZE)
                    .max(gpa + PAGE_SIZE);
            }
            _ => gpa += PAGE_SIZE,
        }
    }
    found
}

/// A page-aligned, zero-filled host buffer holding a ROM copy for a read-only slot.
struct RomCopy {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: the buffer is plain memory owned by this struct; only KVM (through the slot) and the
// owner read it, nothing writes it after the copy in `new`.
unsafe impl Send for RomCopy {}

impl RomCopy {
    fn new(data: &[u8]) -> Result<Self> {
        let size = (data.len() as u64)
            .next_multiple_of(PAGE_SIZE)
            .max(PAGE_SIZE) as usize;
        let layout = Layout::from_size_align(size, PAGE_SIZE as usize)
            .map_err(|e| Error::Memory(e.to_string()))?;
        // SAFETY: `layout` has a non-zero size (at least one page).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(Error::Memory("failed to allocate a ROM copy".into()));
        }
        // SAFETY: `ptr` points to `size >= data.len()` fresh bytes that nothing else aliases.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr, data.len()) };
        Ok(RomCopy { ptr, layout })
    }
}

impl Drop for RomCopy {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the slots that point here are deleted
        // (or the VM fd is closed) before the owning `MemoryMap` drops its copies.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// The memory slots of one VM and the state they were planned from.
pub struct MemoryMap {
    /// Keeps the RAM mappings alive as long as KVM may access them (vm-memory regions are
    /// reference-counted).
    _ram: GuestMemoryMmap<()>,
    low_host: u64,
    /// Page-aligned copies of the ROMs, by ROM index (`None`: not page-aligned, left to MMIO).
    rom_host: Vec<Option<u64>>,
    rom_copies: Vec<RomCopy>,
    pam: [Option<Slot>; PAM_AREAS],
    generation: u64,
    readonly_supported: bool,
    /// Ids of the slots that exist in KVM now.
    live: Vec<u32>,
}

impl MemoryMap {
    /// Map RAM and ROMs of `mem` into `vm`, and the PAM areas as they are now.
    pub fn new(vm: &VmFd, mem: &GuestMemory, readonly_supported: bool) -> Result<Self> {
        if !mem.a20_enabled() {
            return Err(Error::Memory(
                "the A20 gate must be open while the KVM backend maps memory".into(),
            ));
        }
        let ram = mem.vm_memory().clone();
        let host = |gpa: u64| {
            ram.get_host_address(GuestAddress(gpa))
                .map(|p| p as u64)
                .map_err(|e| Error::Memory(e.to_string()))
        };
        let layout = *mem.layout();
        let low_host = host(0)?;
        let mut map = MemoryMap {
            _ram: ram.clone(),
            low_host,
            rom_host: Vec::new(),
            rom_copies: Vec::new(),
            pam: [None; PAM_AREAS],
            generation: mem.map_generation(),
            readonly_supported,
            live: Vec::new(),
        };
        map.set_slot(
            vm,
            SLOT_LOW_RAM,
            Some(Slot {
                gpa: 0,
                size: VGA_WINDOW_START,
                host: low_host,
                readonly: false,
            }),
        )?;
        if layout.below_4g > ONE_MIB {
            map.set_slot(
                vm,
                SLOT_RAM,
                Some(Slot {
                    gpa: ONE_MIB,
                    size: layout.below_4g - ONE_MIB,
                    host: low_host + ONE_MIB,
                    readonly: false,
                }),
            )?;
        }
        if layout.above_4g > 0 {
            map.set_slot(
                vm,
                SLOT_HIGH_RAM,
                Some(Slot {
                    gpa: FOUR_GIB,
                    size: layout.above_4g,
                    host: host(FOUR_GIB)?,
                    readonly: false,
                }),
            )?;
        }
        for (n, (index, base)) in find_roms(mem).into_iter().enumerate() {
            let data = mem.rom(index);
            if base % PAGE_SIZE != 0 {
                tracing::warn!(base, "ROM not page-aligned: reads go through MMIO exits");
                continue;
            }
            let copy = RomCopy::new(data)?;
            let host = copy.ptr as u64;
            if map.rom_host.len() <= index {
                map.rom_host.resize(index + 1, None);
            }
            map.rom_host[index] = Some(host);
            map.rom_copies.push(copy);
            map.set_slot(
                vm,
                SLOT_ROM_FIRST + n as u32,
                Some(Slot {
                    gpa: base,
                    size: (data.len() as u64).next_multiple_of(PAGE_SIZE),
                    host,
                    readonly: true,
                }),
            )?;
        }
        map.sync(vm, mem, true)?;
        Ok(map)
    }

    /// Host address of RAM at guest-physical 0 (to check a platform hands in the same memory).
    pub fn low_host(&self) -> u64 {
        self.low_host
    }

    /// Re-plan the PAM areas if the memory map changed since the last call.
    pub fn sync(&mut self, vm: &VmFd, mem: &GuestMemory, force: bool) -> Result<()> {
        let generation = mem.map_generation();
        if !force && generation == self.generation {
            return Ok(());
        }
        self.generation = generation;
        for i in 0..PAM_AREAS {
            let want = plan_pam_area(mem, i, self.low_host, &self.rom_host);
            if force || want != self.pam[i] {
                if self.pam[i].is_some() {
                    // KVM cannot change a slot's address or flags in place: delete first.
                    self.set_slot(vm, SLOT_PAM_FIRST + i as u32, None)?;
                    self.pam[i] = None;
                }
                if want.is_some() {
                    self.set_slot(vm, SLOT_PAM_FIRST + i as u32, want)?;
                }
                self.pam[i] = want;
            }
        }
        Ok(())
    }

    /// Delete every slot (before the host memory behind them goes away).
    pub fn clear(&mut self, vm: &VmFd) {
        for id in std::mem::take(&mut self.live) {
            let _ = self.set_slot(vm, id, None);
        }
        self.pam = [None; PAM_AREAS];
    }

    fn set_slot(&mut self, vm: &VmFd, id: u32, slot: Option<Slot>) -> Result<()> {
        let region = match slot {
            Some(s) => kvm_userspace_memory_region {
                slot: id,
                flags: if s.readonly && self.readonly_supported {
                    KVM_MEM_READONLY
                } else {
                    0
                },
                guest_phys_addr: s.gpa,
                memory_size: s.size,
                userspace_addr: s.host,
            },
            None => kvm_userspace_memory_region {
                slot: id,
                ..Default::default()
            },
        };
        // SAFETY: every host range handed to KVM stays mapped while the slot exists: RAM
        // belongs to `self._ram` (reference-counted mappings that outlive the VM fd, which
        // the backend drops first), ROM copies to `self.rom_copies`; each range lies inside
        // its mapping (sizes come from the same layout and ROM lengths rounded up to the page
        // the copy was allocated with). Deleting a slot (size 0) touches no memory.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| Error::ioctl("set a KVM memory slot", e))?;
        self.live.retain(|&l| l != id);
        if slot.is_some() {
            self.live.push(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcvm_core::memory::pam;

    fn memory() -> GuestMemory {
        let mut m = GuestMemory::pc(16 << 20).expect("memory");
        m.map_bios(vec![0xAB; 256 << 10]).expect("bios");
        m
    }

    #[test]
    fn roms_are_found_at_the_top_of_4g() {
        let m = memory();
        assert_eq!(find_roms(&m), vec![(0, FOUR_GIB - (256 << 10))]);
    }

    #[test]
    fn pam_areas_follow_the_chipset() {
        let m = memory();
        let rom = Some(0x7000_0000u64);
        let low = 0x1000_0000;
        // Reset: 0xF0000 reads the BIOS alias (last 64 KiB of the 256 KiB ROM).
        assert_eq!(
            plan_pam_area(&m, 0, low, &[rom]),
            Some(Slot {
                gpa: 0xF_0000,
                size: 0x1_0000,
                host: 0x7000_0000 + (256 << 10) - 0x1_0000,
                readonly: true
            })
        );
        // 0xC0000 is option-ROM space: no slot, MMIO exits.
        assert_eq!(plan_pam_area(&m, 1, low, &[rom]), None);
        m.set_pam(0, pam::WRITE_ONLY);
        assert_eq!(plan_pam_area(&m, 0, low, &[rom]), None);
        m.set_pam(0, pam::READ_WRITE);
        assert_eq!(
            plan_pam_area(&m, 0, low, &[rom]),
            Some(Slot {
                gpa: 0xF_0000,
                size: 0x1_0000,
                host: low + 0xF_0000,
                readonly: false
            })
        );
        m.set_pam(5, pam::READ_ONLY);
        let s = plan_pam_area(&m, 5, low, &[rom]).expect("slot");
        assert_eq!((s.gpa, s.readonly), (0xD_0000, true));
        // No page-aligned copy of the ROM: the alias is left to MMIO exits.
        m.set_pam(0, pam::DISABLED);
        assert_eq!(plan_pam_area(&m, 0, low, &[None]), None);
    }
}
