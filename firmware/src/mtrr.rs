//! The memory-type ranges a PC BIOS programs before it boots an OS, for `-kernel` boots that
//! run no BIOS.
//!
//! At power-up the MTRRs are disabled (IA32_MTRR_DEF_TYPE = 0, everything uncacheable; Intel
//! SDM Vol. 3A §11.11.5). Firmware enables them; an OS that finds them disabled also turns off
//! PAT (Linux logs "x86/PAT: MTRRs disabled, skipping PAT initialization"). This module sets
//! the usual PC layout: write-back by default, the legacy VGA window uncacheable, the option
//! ROM/BIOS area write-protected, and the PCI hole below 4 GiB uncacheable through variable
//! ranges (SDM Vol. 3A §11.11.2–§11.11.4).

use pcvm_core::cpu_state::Msrs;
use pcvm_core::MemoryLayout;

/// Memory types (SDM Vol. 3A Table 11-8).
const UC: u64 = 0;
const WP: u64 = 5;
const WB: u64 = 6;

/// IA32_MTRR_DEF_TYPE: MTRRs enabled (E, bit 11), fixed ranges enabled (FE, bit 10).
const DEF_TYPE_E: u64 = 1 << 11;
const DEF_TYPE_FE: u64 = 1 << 10;

/// IA32_MTRR_PHYSMASKn.V: the range is valid.
const MASK_VALID: u64 = 1 << 11;

/// One memory type repeated over the eight sub-ranges of a fixed-range MTRR.
const fn fixed(kind: u64) -> u64 {
    kind * 0x0101_0101_0101_0101
}

/// Program `msrs` as a BIOS would for a PC with `layout`, on a CPU with `phys_bits`
/// physical-address bits (CPUID 80000008H:EAX[7:0]).
///
/// Fixed ranges (order of [`Msrs::mtrr_fixed`]): 0–0x9FFFF write-back, the VGA window
/// 0xA0000–0xBFFFF uncacheable, 0xC0000–0xFFFFF (option ROMs, BIOS) write-protected. Variable
/// ranges: [`MemoryLayout::below_4g`]..4 GiB uncacheable, split into naturally aligned
/// power-of-two blocks as the PHYSBASE/PHYSMASK pairs require; the default type is write-back,
/// which covers RAM below the hole and all RAM above 4 GiB.
pub fn program_boot_mtrrs(msrs: &mut Msrs, layout: &MemoryLayout, phys_bits: u32) {
    let phys_bits = phys_bits.clamp(36, 52);
    let addr_mask = (1u64 << phys_bits) - 1;
    msrs.mtrr_fixed = [
        fixed(WB), // 0x250: 0x00000-0x7FFFF, 64 KiB each
        fixed(WB), // 0x258: 0x80000-0x9FFFF, 16 KiB each
        fixed(UC), // 0x259: 0xA0000-0xBFFFF
        fixed(WP), // 0x268..0x26F: 0xC0000-0xFFFFF, 4 KiB each
        fixed(WP),
        fixed(WP),
        fixed(WP),
        fixed(WP),
        fixed(WP),
        fixed(WP),
        fixed(WP),
    ];
    // Naturally aligned power-of-two blocks from the top of RAM below 4 GiB up to 4 GiB.
    let mut blocks = Vec::new();
    let mut start = layout.below_4g.min(1 << 32);
    let end = 1u64 << 32;
    while start < end {
        let mut size = if start == 0 {
            end
        } else {
            1u64 << start.trailing_zeros()
        };
        while start + size > end {
            size >>= 1;
        }
        blocks.push((start, size));
        start += size;
    }
    // Eight pairs exist (MTRRCAP.VCNT). A hole that needs more (only RAM sizes of a few MiB)
    // keeps its lowest, unmapped, blocks write-back: the device ranges sit at the top.
    let skip = blocks.len().saturating_sub(msrs.mtrr_var.len());
    msrs.mtrr_var = [(0, 0); 8];
    for (slot, &(base, size)) in msrs.mtrr_var.iter_mut().zip(&blocks[skip..]) {
        *slot = (base | UC, (!(size - 1) & addr_mask) | MASK_VALID);
    }
    msrs.mtrr_def_type = DEF_TYPE_E | DEF_TYPE_FE | WB;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory type of `addr` under `msrs`, by the SDM's precedence rules (Vol. 3A
    /// §11.11.4.1: fixed ranges below 1 MiB, then UC wins among overlapping variable ranges).
    fn type_of(msrs: &Msrs, addr: u64) -> u64 {
        if addr < 0x10_0000 {
            let (reg, sub) = match addr {
                0..=0x7_FFFF => (0, addr / 0x1_0000),
                0x8_0000..=0x9_FFFF => (1, (addr - 0x8_0000) / 0x4000),
                0xA_0000..=0xB_FFFF => (2, (addr - 0xA_0000) / 0x4000),
                _ => (3 + (addr - 0xC_0000) / 0x8000, (addr % 0x8000) / 0x1000),
            };
            return (msrs.mtrr_fixed[reg as usize] >> (sub * 8)) & 0xFF;
        }
        let mut hit = None;
        for &(base, mask) in &msrs.mtrr_var {
            if mask & MASK_VALID != 0 && (addr & mask & !0xFFF) == (base & mask & !0xFFF) {
                hit = Some(base & 0xFF);
            }
        }
        hit.unwrap_or(msrs.mtrr_def_type & 0xFF)
    }

    #[test]
    fn one_gib_guest_has_ram_write_back_and_the_hole_uncacheable() {
        let layout = MemoryLayout::pc(1 << 30).unwrap();
        let mut m = Msrs::default();
        program_boot_mtrrs(&mut m, &layout, 36);
        assert_eq!(m.mtrr_def_type, 0xC06);
        assert_eq!(type_of(&m, 0), WB);
        assert_eq!(type_of(&m, 0x9_F000), WB);
        assert_eq!(type_of(&m, 0xB_8000), UC);
        assert_eq!(type_of(&m, 0xF_0000), WP);
        assert_eq!(type_of(&m, 0x10_0000), WB);
        assert_eq!(type_of(&m, (1 << 30) - 4096), WB);
        assert_eq!(type_of(&m, 1 << 30), UC);
        assert_eq!(type_of(&m, 0xFEE0_0000), UC);
        assert_eq!(type_of(&m, 0xFFFF_F000), UC);
        // [1 GiB, 2 GiB) and [2 GiB, 4 GiB).
        assert_eq!(m.mtrr_var[0], (0x4000_0000, 0xF_C000_0800));
        assert_eq!(m.mtrr_var[1], (0x8000_0000, 0xF_8000_0800));
        assert_eq!(m.mtrr_var[2], (0, 0));
    }

    #[test]
    fn ranges_cover_exactly_the_hole_for_odd_sizes() {
        for mib in [100u64, 640, 2047, 3000, 3584, 8192] {
            let layout = MemoryLayout::pc(mib << 20).unwrap();
            let mut m = Msrs::default();
            program_boot_mtrrs(&mut m, &layout, 40);
            let hole = layout.below_4g;
            for probe in [hole.saturating_sub(4096), hole, hole + 4096, 0xFFFF_F000] {
                if probe < 0x10_0000 {
                    continue;
                }
                let want = if probe >= hole { UC } else { WB };
                assert_eq!(type_of(&m, probe), want, "{mib} MiB, address {probe:#x}");
            }
            assert_eq!(type_of(&m, 1 << 32), WB, "{mib} MiB: RAM above 4 GiB");
            // Masks stay within the physical-address width.
            assert!(m.mtrr_var.iter().all(|&(_, mask)| mask >> 40 == 0));
        }
    }

    #[test]
    fn tiny_guest_keeps_the_device_ranges_uncacheable() {
        let layout = MemoryLayout::pc(2 << 20).unwrap();
        let mut m = Msrs::default();
        program_boot_mtrrs(&mut m, &layout, 36);
        assert!(m.mtrr_var.iter().all(|&(_, mask)| mask & MASK_VALID != 0));
        assert_eq!(type_of(&m, 0x10_0000), WB);
        for device in [
            0x0800_0000,
            0xC000_0000,
            0xFEC0_0000,
            0xFEE0_0000,
            0xFFFF_0000,
        ] {
            assert_eq!(type_of(&m, device), UC, "{device:#x}");
        }
    }
}
