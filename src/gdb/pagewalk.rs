//! A read-only walk of the guest's page tables for `monitor info mem` / `info tlb`.
//!
//! Handles the four x86 paging modes (Intel SDM Vol. 3A §4.3 32-bit with and without PSE,
//! §4.4 PAE, §4.5 4-level): it reads the tables through [`GuestMemory::read_phys`] only, never
//! sets accessed/dirty bits, and treats an entry it cannot read as not present. The CPU
//! backend's own `translate` stays the authority for single addresses; this lists everything.

use pcvm_core::cpu_state::cr;
use pcvm_core::{CpuState, GuestMemory};

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;
const NX: u64 = 1 << 63;
/// Physical-address bits of a PAE/4-level entry (bits 51:12).
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// One mapped page (or large page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Linear address (sign-extended in 4-level mode).
    pub linear: u64,
    pub phys: u64,
    /// 4 KiB, 2 MiB, 4 MiB or 1 GiB.
    pub size: u64,
    pub writable: bool,
    pub user: bool,
    pub global: bool,
    pub no_exec: bool,
}

/// The paging mode in force, for headers.
pub fn mode_name(s: &CpuState) -> &'static str {
    if s.cr0 & cr::CR0_PG == 0 || s.cr0 & cr::CR0_PE == 0 {
        "paging disabled"
    } else if s.efer & cr::EFER_LMA != 0 {
        "4-level"
    } else if s.cr4 & cr::CR4_PAE != 0 {
        "PAE"
    } else if s.cr4 & cr::CR4_PSE != 0 {
        "32-bit with PSE"
    } else {
        "32-bit"
    }
}

/// Most table entries one listing reads: a guest whose tables point at themselves or at
/// huge empty tables ends the walk early instead of taking minutes.
const MAX_VISITS: usize = 1 << 22;

struct Walker<'a> {
    mem: &'a GuestMemory,
    out: Vec<Mapping>,
    limit: usize,
    visits: usize,
}

impl Walker<'_> {
    fn read32(&mut self, addr: u64) -> u64 {
        self.visits += 1;
        let mut b = [0u8; 4];
        match self.mem.read_phys(addr, &mut b) {
            Ok(()) => u64::from(u32::from_le_bytes(b)),
            Err(_) => 0,
        }
    }
    fn read64(&mut self, addr: u64) -> u64 {
        self.visits += 1;
        let mut b = [0u8; 8];
        match self.mem.read_phys(addr, &mut b) {
            Ok(()) => u64::from_le_bytes(b),
            Err(_) => 0,
        }
    }
    fn full(&self) -> bool {
        self.out.len() >= self.limit || self.visits >= MAX_VISITS
    }
    fn push(&mut self, m: Mapping) {
        if !self.full() {
            self.out.push(m);
        }
    }

    /// 32-bit paging: 1024 PDEs, each a 4 MiB page (PSE) or 1024 PTEs.
    fn walk32(&mut self, cr3: u64, pse: bool) {
        let pd = cr3 & 0xFFFF_F000;
        for i in 0..1024u64 {
            if self.full() {
                return;
            }
            let pde = self.read32(pd + i * 4);
            if pde & P == 0 {
                continue;
            }
            let linear = i << 22;
            if pse && pde & PS != 0 {
                // Bits 20:13 hold physical bits 39:32 (PSE-36).
                let phys = (pde & 0xFFC0_0000) | ((pde >> 13) & 0xFF) << 32;
                self.push(Mapping {
                    linear,
                    phys,
                    size: 4 << 20,
                    writable: pde & RW != 0,
                    user: pde & US != 0,
                    global: pde & G != 0,
                    no_exec: false,
                });
                continue;
            }
            let pt = pde & 0xFFFF_F000;
            for j in 0..1024u64 {
                if self.full() {
                    return;
                }
                let pte = self.read32(pt + j * 4);
                if pte & P == 0 {
                    continue;
                }
                self.push(Mapping {
                    linear: linear | j << 12,
                    phys: pte & 0xFFFF_F000,
                    size: 4096,
                    writable: pde & pte & RW != 0,
                    user: pde & pte & US != 0,
                    global: pte & G != 0,
                    no_exec: false,
                });
            }
        }
    }

    /// One 64-bit-entry table level: `level` 4 = PML4, 3 = PDPT, 2 = PD, 1 = PT.
    /// `rw`/`us`/`nx` accumulate the permissions of the levels above.
    #[allow(clippy::too_many_arguments)]
    fn walk64(
        &mut self,
        table: u64,
        level: u32,
        entries: u64,
        base: u64,
        rw: bool,
        us: bool,
        nx: bool,
    ) {
        let shift = 12 + 9 * (level - 1);
        for i in 0..entries {
            if self.full() {
                return;
            }
            let e = self.read64(table + i * 8);
            if e & P == 0 {
                continue;
            }
            let linear = base | i << shift;
            let (w, u, x) = (rw && e & RW != 0, us && e & US != 0, nx || e & NX != 0);
            if level == 1 || ((level == 2 || level == 3) && e & PS != 0) {
                let size = 1u64 << shift;
                self.push(Mapping {
                    linear,
                    phys: e & ADDR_MASK & !(size - 1),
                    size,
                    writable: w,
                    user: u,
                    global: e & G != 0,
                    no_exec: x,
                });
                continue;
            }
            self.walk64(e & ADDR_MASK, level - 1, 512, linear, w, u, x);
        }
    }
}

/// Sign-extend a 48-bit linear address (4-level paging).
fn canonical(a: u64) -> u64 {
    if a & (1 << 47) != 0 {
        a | 0xFFFF_0000_0000_0000
    } else {
        a
    }
}

/// Every present mapping, at most `limit` of them, in address order.
pub fn mappings(mem: &GuestMemory, s: &CpuState, limit: usize) -> Vec<Mapping> {
    let mut w = Walker {
        mem,
        out: Vec::new(),
        limit,
        visits: 0,
    };
    if s.cr0 & cr::CR0_PG == 0 || s.cr0 & cr::CR0_PE == 0 {
        return w.out;
    }
    if s.efer & cr::EFER_LMA != 0 {
        w.walk64(s.cr3 & ADDR_MASK, 4, 512, 0, true, true, false);
        for m in &mut w.out {
            m.linear = canonical(m.linear);
        }
    } else if s.cr4 & cr::CR4_PAE != 0 {
        // The four PDPTEs carry no permission bits (SDM Vol. 3A §4.4.1).
        let pdpt = s.cr3 & 0xFFFF_FFE0;
        for i in 0..4u64 {
            let e = w.read64(pdpt + i * 8);
            if e & P != 0 {
                w.walk64(e & ADDR_MASK, 2, 512, i << 30, true, true, false);
            }
        }
    } else {
        w.walk32(s.cr3, s.cr4 & cr::CR4_PSE != 0);
    }
    w.out
}

/// Merge adjacent mappings with the same permissions into ranges (`info mem`):
/// (start, end, writable, user, no_exec).
pub fn ranges(maps: &[Mapping]) -> Vec<(u64, u64, bool, bool, bool)> {
    let mut out: Vec<(u64, u64, bool, bool, bool)> = Vec::new();
    for m in maps {
        let end = m.linear.wrapping_add(m.size);
        if let Some(last) = out.last_mut() {
            if last.1 == m.linear && (last.2, last.3, last.4) == (m.writable, m.user, m.no_exec) {
                last.1 = end;
                continue;
            }
        }
        out.push((m.linear, end, m.writable, m.user, m.no_exec));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemory {
        GuestMemory::pc(8 << 20).expect("memory")
    }

    fn put32(m: &GuestMemory, a: u64, v: u32) {
        m.write_phys(a, &v.to_le_bytes()).expect("write");
    }
    fn put64(m: &GuestMemory, a: u64, v: u64) {
        m.write_phys(a, &v.to_le_bytes()).expect("write");
    }

    fn paged(cr4: u64, efer: u64) -> CpuState {
        let mut s = CpuState::reset();
        s.cr0 = cr::CR0_PE | cr::CR0_PG;
        s.cr3 = 0x10_0000;
        s.cr4 = cr4;
        s.efer = efer;
        s
    }

    #[test]
    fn two_level_with_pse_large_page() {
        let m = mem();
        put32(&m, 0x10_0000, 0x10_1000 | 0x7); // PDE 0 → PT
        put32(&m, 0x10_1000 + 5 * 4, 0x0003_0000 | 0x3); // PTE 5: 0x5000 → 0x30000, RW
        put32(&m, 0x10_0000 + 4, 0x0040_0000 | 0x83); // PDE 1: 4 MiB page at 4 MiB
        let maps = mappings(&m, &paged(cr::CR4_PSE, 0), 100);
        assert_eq!(maps.len(), 2);
        assert_eq!(
            (maps[0].linear, maps[0].phys, maps[0].size),
            (0x5000, 0x30000, 4096)
        );
        assert!(maps[0].writable && !maps[0].user);
        assert_eq!(
            (maps[1].linear, maps[1].phys, maps[1].size),
            (0x40_0000, 0x40_0000, 4 << 20)
        );
        // Without PSE, the PS bit is ignored and the entry points to a page table.
        let maps = mappings(&m, &paged(0, 0), 5000);
        assert!(maps.iter().all(|x| x.size == 4096));
    }

    #[test]
    fn pae_and_four_level() {
        let m = mem();
        put64(&m, 0x10_0000 + 8, 0x10_1000 | 1); // PDPTE 1 → PD (1 GiB..2 GiB)
        put64(&m, 0x10_1000, 0x20_0000 | 0x83); // 2 MiB page
        let maps = mappings(&m, &paged(cr::CR4_PAE, 0), 100);
        assert_eq!(maps.len(), 1);
        assert_eq!(
            (maps[0].linear, maps[0].phys, maps[0].size),
            (1 << 30, 0x20_0000, 2 << 20)
        );

        let m = mem();
        put64(&m, 0x10_0000 + 511 * 8, 0x10_1000 | 7); // PML4[511]
        put64(&m, 0x10_1000, 0x10_2000 | 7 | NX); // PDPT[0]
        put64(&m, 0x10_2000, 0x10_3000 | 7); // PD[0]
        put64(&m, 0x10_3000 + 8, 0x7000 | 5); // PT[1]: read-only user
        let maps = mappings(&m, &paged(cr::CR4_PAE, cr::EFER_LMA | cr::EFER_LME), 100);
        assert_eq!(maps.len(), 1);
        let x = maps[0];
        assert_eq!(x.linear, 0xFFFF_FF80_0000_1000);
        assert_eq!(x.phys, 0x7000);
        assert!(!x.writable && x.user && x.no_exec);
    }

    #[test]
    fn ranges_merge_neighbours_with_same_rights() {
        let mk = |linear, writable| Mapping {
            linear,
            phys: linear,
            size: 4096,
            writable,
            user: false,
            global: false,
            no_exec: false,
        };
        let r = ranges(&[
            mk(0, true),
            mk(0x1000, true),
            mk(0x2000, false),
            mk(0x5000, false),
        ]);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].0, r[0].1), (0, 0x2000));
    }

    #[test]
    fn self_referencing_tables_end_the_walk() {
        let m = mem();
        // Every PML4/PDPT/PD entry points back at the same table: 512^3 paths.
        for i in 0..512u64 {
            put64(&m, 0x10_0000 + i * 8, 0x10_0000 | 7);
        }
        let maps = mappings(&m, &paged(cr::CR4_PAE, cr::EFER_LMA), usize::MAX);
        assert!(!maps.is_empty() && maps.len() <= MAX_VISITS);
    }

    #[test]
    fn no_paging_lists_nothing() {
        assert!(mappings(&mem(), &CpuState::reset(), 10).is_empty());
    }
}
