//! The BIOS memory map (INT 15h AX=E820h, ACPI 6.4 §15) derived from the RAM layout.
//!
//! QEMU hands SeaBIOS this table through fw_cfg `etc/e820` and SeaBIOS builds the guest-visible
//! map from it, adding its own reservations (EBDA, 0xF0000 BIOS area, the flash window). Like
//! QEMU's pc machine without KVM the table holds only RAM: [0, below_4g) and
//! [4 GiB, 4 GiB + above_4g).

use pcvm_core::memory::FOUR_GIB;
use pcvm_core::MemoryLayout;

/// An e820 range type (ACPI 6.4 Table 15.312).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    /// Usable RAM.
    Ram = 1,
    /// Reserved; the OS must not use it.
    Reserved = 2,
    /// ACPI tables, reclaimable after they are read.
    Acpi = 3,
    /// ACPI NVS memory.
    Nvs = 4,
}

/// One e820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub len: u64,
    pub kind: E820Type,
}

impl E820Entry {
    /// Size of the wire format: `{u64 addr; u64 len; u32 type}`, little-endian.
    pub const SIZE: usize = 20;

    /// The 20-byte little-endian form used by fw_cfg `etc/e820` and INT 15h E820h.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..20].copy_from_slice(&(self.kind as u32).to_le_bytes());
        b
    }
}

/// The RAM entries of a PC with this layout.
pub fn pc_map(layout: &MemoryLayout) -> Vec<E820Entry> {
    let mut map = vec![E820Entry {
        addr: 0,
        len: layout.below_4g,
        kind: E820Type::Ram,
    }];
    if layout.above_4g > 0 {
        map.push(E820Entry {
            addr: FOUR_GIB,
            len: layout.above_4g,
            kind: E820Type::Ram,
        });
    }
    map
}

/// The concatenated wire form of `map` (the contents of fw_cfg `etc/e820`).
pub fn to_bytes(map: &[E820Entry]) -> Vec<u8> {
    map.iter().flat_map(|e| e.to_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_ram_range() {
        let l = MemoryLayout::pc(128 << 20).unwrap();
        assert_eq!(
            pc_map(&l),
            vec![E820Entry {
                addr: 0,
                len: 128 << 20,
                kind: E820Type::Ram
            }]
        );
    }

    #[test]
    fn large_guest_splits_around_the_pci_hole() {
        let l = MemoryLayout::pc(4 << 30).unwrap();
        let map = pc_map(&l);
        assert_eq!(map.len(), 2);
        assert_eq!((map[0].addr, map[0].len), (0, 0xC000_0000));
        assert_eq!((map[1].addr, map[1].len), (FOUR_GIB, 0x4000_0000));
        let bytes = to_bytes(&map);
        assert_eq!(bytes.len(), 40);
        assert_eq!(&bytes[20..28], &FOUR_GIB.to_le_bytes());
        assert_eq!(&bytes[36..40], &1u32.to_le_bytes());
    }
}
