//! Paging: linear → physical translation with a software TLB (Intel SDM Vol. 3A §4).
//!
//! Implements 32-bit paging with 4 MiB pages (CR4.PSE, PSE-36 with a 36-bit physical address
//! width), PAE paging with 2 MiB pages and execute-disable (EFER.NXE), and 4-level paging
//! (IA-32e mode, EFER.LMA) with 1 GiB and 2 MiB pages (SDM Vol. 3A §4.5); U/S and R/W with
//! CR0.WP, accessed/dirty updates in the tables, global pages (CR4.PGE) and #PF error codes
//! with CR2. The PDPTE registers of PAE paging are loaded on MOV CR3/CR0/CR4
//! (SDM Vol. 3A §4.4.1). PCIDs are tolerated: CR3 bits 11:0 are ignored for the walk and
//! the TLB is not tagged (a flush that keeps other PCIDs' entries is allowed to drop more).
//! Not modelled (and not advertised): SMEP/SMAP/PKE, 5-level paging.
//!
//! The TLB is direct-mapped, keyed by linear page number, and holds guest-physical page
//! addresses (not host pointers), so changes of the physical memory map (PAM, A20) do not
//! invalidate it. Each entry carries the access rights computed at fill time; a write through
//! an entry whose dirty bit was clear misses so the walk can set D.

use pcvm_core::cpu_state::cr;
use pcvm_core::{CpuState, Platform};

use crate::access::AccessKind;
use crate::fault::vector;
use crate::{Fault, Interpreter};

/// Number of TLB entries (a power of two).
const TLB_ENTRIES: usize = 1024;

/// Physical address width reported by CPUID 0x8000_0008 (MAXPHYADDR).
pub(crate) const PHYS_ADDR_BITS: u32 = 36;
const PHYS_MASK: u64 = (1 << PHYS_ADDR_BITS) - 1;

/// Paging-entry bits (SDM Vol. 3A §4.3, §4.4.2).
const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;
const PTE_G: u64 = 1 << 8;
const PTE_XD: u64 = 1 << 63;

/// #PF error-code bits (SDM Vol. 3A §4.7).
pub(crate) mod pf_code {
    pub const P: u32 = 1 << 0;
    pub const W: u32 = 1 << 1;
    pub const U: u32 = 1 << 2;
    pub const RSVD: u32 = 1 << 3;
    pub const ID: u32 = 1 << 4;
}

/// Access-right bits of a TLB entry: bit `kind + 3 * user` allows that access.
const ALLOW_READ: u8 = 1;
const ALLOW_WRITE: u8 = 2;
const ALLOW_EXEC: u8 = 4;
const USER_SHIFT: u8 = 3;

#[inline]
fn allow_bit(kind: AccessKind, user: bool) -> u8 {
    let k = match kind {
        AccessKind::Read => ALLOW_READ,
        AccessKind::Write => ALLOW_WRITE,
        AccessKind::Execute => ALLOW_EXEC,
    };
    if user {
        k << USER_SHIFT
    } else {
        k
    }
}

/// One cached translation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TlbEntry {
    /// Linear page number (linear >> 12), or `u64::MAX` when empty.
    pub tag: u64,
    /// Physical address of the 4 KiB page.
    pub phys_page: u64,
    /// Allowed accesses (see `allow_bit`).
    pub allow: u8,
    /// A global page (G with CR4.PGE): survives CR3 writes.
    pub global: bool,
}

const EMPTY: TlbEntry = TlbEntry {
    tag: u64::MAX,
    phys_page: 0,
    allow: 0,
    global: false,
};

/// Software TLB of linear page → physical page translations, plus the PAE PDPTE registers.
pub(crate) struct Tlb {
    entries: Vec<TlbEntry>,
    /// Some entry came from a 2/4 MiB page: INVLPG then flushes everything, since such a page
    /// is cached as many 4 KiB entries.
    has_large: bool,
    /// PDPTE registers of PAE paging; `None` = reload from CR3 on the next walk (after a state
    /// load).
    pub(crate) pdptes: Option<[u64; 4]>,
    /// Flushes and invalidations so far: caches of linear translations outside the TLB (the
    /// JIT's) are valid while this is unchanged.
    pub(crate) flushes: u64,
    /// Whole-TLB flushes so far (not single-page INVLPG): the interpreter's code lookup
    /// cache is valid while this is unchanged.
    pub(crate) full_flushes: u64,
    /// Flushes that dropped global translations too (a subset of `full_flushes`).
    pub(crate) global_flushes: u64,
    /// INVLPGs so far, and the linear addresses of the last [`INVLPG_RING`] of them (the
    /// n-th at `invlpg_ring[n % INVLPG_RING]`): the JIT keeps its caches across an INVLPG
    /// of a region it holds no code from.
    pub(crate) invlpgs: u64,
    pub(crate) invlpg_ring: [u64; INVLPG_RING],
}

/// INVLPG addresses [`Tlb`] remembers.
pub(crate) const INVLPG_RING: usize = 16;

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            entries: vec![EMPTY; TLB_ENTRIES],
            has_large: false,
            pdptes: None,
            flushes: 0,
            full_flushes: 0,
            global_flushes: 0,
            invlpgs: 0,
            invlpg_ring: [0; INVLPG_RING],
        }
    }
}

impl Tlb {
    /// Drop every translation and the PDPTE registers (state load, memory map change).
    pub(crate) fn flush(&mut self) {
        self.flushes += 1;
        self.full_flushes += 1;
        self.global_flushes += 1;
        self.entries.fill(EMPTY);
        self.has_large = false;
        self.pdptes = None;
    }

    /// Drop every non-global translation (MOV CR3, task switch; SDM Vol. 3A §4.10.4.1).
    pub(crate) fn flush_non_global(&mut self) {
        self.flushes += 1;
        self.full_flushes += 1;
        for e in &mut self.entries {
            if !e.global {
                *e = EMPTY;
            }
        }
    }

    /// Drop the translation of the page holding `linear` (INVLPG).
    pub(crate) fn invalidate(&mut self, linear: u64) {
        self.flushes += 1;
        if let Some(slot) = self
            .invlpg_ring
            .get_mut((self.invlpgs % INVLPG_RING as u64) as usize)
        {
            *slot = linear;
        }
        self.invlpgs += 1;
        if self.has_large {
            self.entries.fill(EMPTY);
            self.has_large = false;
            return;
        }
        let page = linear >> 12;
        let e = &mut self.entries[(page as usize) & (TLB_ENTRIES - 1)];
        if e.tag == page {
            *e = EMPTY;
        }
    }

    /// The TLB holds a global translation of the page holding `linear`.
    pub(crate) fn is_global(&self, linear: u64) -> bool {
        let page = linear >> 12;
        let e = &self.entries[(page as usize) & (TLB_ENTRIES - 1)];
        e.tag == page && e.global
    }

    /// The cached physical address for an access of `kind` at `linear` by a user-mode
    /// (`user`) or supervisor access, if the TLB holds a translation allowing it.
    #[inline]
    pub(crate) fn lookup(&self, linear: u64, kind: AccessKind, user: bool) -> Option<u64> {
        let page = linear >> 12;
        let e = &self.entries[(page as usize) & (TLB_ENTRIES - 1)];
        if e.tag == page && e.allow & allow_bit(kind, user) != 0 {
            Some(e.phys_page | (linear & 0xFFF))
        } else {
            None
        }
    }

    fn insert(&mut self, linear: u64, phys_page: u64, allow: u8, global: bool, large: bool) {
        let page = linear >> 12;
        self.entries[(page as usize) & (TLB_ENTRIES - 1)] = TlbEntry {
            tag: page,
            phys_page,
            allow,
            global,
        };
        self.has_large |= large;
    }
}

/// The paging controls a walk depends on.
#[derive(Clone, Copy, Debug)]
struct PagingMode {
    pae: bool,
    /// 4-level paging (IA-32e mode: EFER.LMA, which implies CR4.PAE).
    long: bool,
    pse: bool,
    nxe: bool,
    pge: bool,
    cr3: u64,
}

impl PagingMode {
    fn of(state: &CpuState) -> Self {
        let pae = state.cr4 & cr::CR4_PAE != 0;
        let long = state.efer & cr::EFER_LMA != 0;
        PagingMode {
            pae,
            long,
            pse: state.cr4 & cr::CR4_PSE != 0,
            nxe: (pae || long) && state.efer & cr::EFER_NXE != 0,
            pge: state.cr4 & cr::CR4_PGE != 0,
            cr3: state.cr3,
        }
    }
}

/// A successful walk of the paging structures.
#[derive(Clone, Copy, Debug)]
struct Walk {
    /// Physical address and value of each entry used, root first.
    entries: [(u64, u64); 4],
    n: usize,
    /// Physical address of the 4 KiB page holding the linear address.
    phys_page: u64,
    large: bool,
    user_ok: bool,
    writable: bool,
    no_exec: bool,
}

/// Why a walk failed (before access rights are considered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WalkError {
    NotPresent,
    Reserved,
}

/// Reserved bits of a PAE PDPTE (SDM Vol. 3A §4.4.1, Table 4-8).
const PDPTE_RESERVED: u64 = 0x1E6 | !PHYS_MASK;

/// Walk the paging structures for `linear`. `read(addr, wide)` reads an entry.
fn walk_tables(
    mode: PagingMode,
    pdptes: [u64; 4],
    linear: u64,
    read: &mut dyn FnMut(u64, bool) -> u64,
) -> Result<Walk, WalkError> {
    if mode.long {
        return walk_4level(mode, linear, read);
    }
    if mode.pae {
        let pdpte = pdptes[((linear >> 30) & 3) as usize];
        if pdpte & PTE_P == 0 {
            return Err(WalkError::NotPresent);
        }
        if pdpte & PDPTE_RESERVED != 0 {
            return Err(WalkError::Reserved);
        }
        // Bits 62:MAXPHYADDR are reserved; bit 63 too unless EFER.NXE (Table 4-11, 4-12).
        let reserved = (!PHYS_MASK & !PTE_XD) | if mode.nxe { 0 } else { PTE_XD };
        let pde_addr = (pdpte & PHYS_MASK & !0xFFF) + ((linear >> 21) & 0x1FF) * 8;
        let pde = read(pde_addr, true);
        if pde & PTE_P == 0 {
            return Err(WalkError::NotPresent);
        }
        if pde & reserved != 0 {
            return Err(WalkError::Reserved);
        }
        if pde & PTE_PS != 0 {
            // 2 MiB page: bits 20:13 reserved.
            if pde & 0x1F_E000 != 0 {
                return Err(WalkError::Reserved);
            }
            return Ok(Walk {
                entries: [(pde_addr, pde), (0, 0), (0, 0), (0, 0)],
                n: 1,
                phys_page: (pde & PHYS_MASK & !0x1F_FFFF) | (linear & 0x1F_F000),
                large: true,
                user_ok: pde & PTE_US != 0,
                writable: pde & PTE_RW != 0,
                no_exec: mode.nxe && pde & PTE_XD != 0,
            });
        }
        let pte_addr = (pde & PHYS_MASK & !0xFFF) + ((linear >> 12) & 0x1FF) * 8;
        let pte = read(pte_addr, true);
        if pte & PTE_P == 0 {
            return Err(WalkError::NotPresent);
        }
        if pte & reserved != 0 {
            return Err(WalkError::Reserved);
        }
        return Ok(Walk {
            entries: [(pde_addr, pde), (pte_addr, pte), (0, 0), (0, 0)],
            n: 2,
            phys_page: pte & PHYS_MASK & !0xFFF,
            large: false,
            user_ok: pde & pte & PTE_US != 0,
            writable: pde & pte & PTE_RW != 0,
            no_exec: mode.nxe && (pde | pte) & PTE_XD != 0,
        });
    }
    // 32-bit paging (SDM Vol. 3A §4.3).
    let pde_addr = (mode.cr3 & 0xFFFF_F000) + ((linear >> 22) & 0x3FF) * 4;
    let pde = read(pde_addr, false);
    if pde & PTE_P == 0 {
        return Err(WalkError::NotPresent);
    }
    if mode.pse && pde & PTE_PS != 0 {
        // 4 MiB page; PSE-36: bits 16:13 are physical address bits 35:32, bits 21:17 are
        // reserved with MAXPHYADDR = 36 (Table 4-4).
        if pde & 0x3E_0000 != 0 {
            return Err(WalkError::Reserved);
        }
        let high = ((pde >> 13) & 0xF) << 32;
        return Ok(Walk {
            entries: [(pde_addr, pde), (0, 0), (0, 0), (0, 0)],
            n: 1,
            phys_page: high | (pde & 0xFFC0_0000) | (linear & 0x3F_F000),
            large: true,
            user_ok: pde & PTE_US != 0,
            writable: pde & PTE_RW != 0,
            no_exec: false,
        });
    }
    let pte_addr = (pde & 0xFFFF_F000) + ((linear >> 12) & 0x3FF) * 4;
    let pte = read(pte_addr, false);
    if pte & PTE_P == 0 {
        return Err(WalkError::NotPresent);
    }
    Ok(Walk {
        entries: [(pde_addr, pde), (pte_addr, pte), (0, 0), (0, 0)],
        n: 2,
        phys_page: pte & 0xFFFF_F000,
        large: false,
        user_ok: pde & pte & PTE_US != 0,
        writable: pde & pte & PTE_RW != 0,
        no_exec: false,
    })
}

/// Walk the 4-level structures of IA-32e paging: PML4 → PDPT (1 GiB pages) → PD (2 MiB
/// pages) → PT (SDM Vol. 3A §4.5). Bits 51:MAXPHYADDR of every entry are reserved, bit 63
/// too without EFER.NXE, bit 7 of a PML4E; bits 62:52 are ignored (software uses them).
fn walk_4level(
    mode: PagingMode,
    linear: u64,
    read: &mut dyn FnMut(u64, bool) -> u64,
) -> Result<Walk, WalkError> {
    let reserved = (((1u64 << 52) - 1) & !PHYS_MASK) | if mode.nxe { 0 } else { PTE_XD };
    let mut w = Walk {
        entries: [(0, 0); 4],
        n: 0,
        phys_page: 0,
        large: false,
        user_ok: true,
        writable: true,
        no_exec: false,
    };
    let mut table = mode.cr3 & PHYS_MASK & !0xFFF;
    // Levels: shift of the index field, and the page size a PS=1 entry maps (0: PS is
    // reserved at this level, 1: the entry always maps a page).
    for (level, shift) in [39u32, 30, 21, 12].into_iter().enumerate() {
        let addr = table + ((linear >> shift) & 0x1FF) * 8;
        let e = read(addr, true);
        if e & PTE_P == 0 {
            return Err(WalkError::NotPresent);
        }
        let ps = level > 0 && level < 3 && e & PTE_PS != 0;
        // PS is reserved in a PML4E; a large page's low address bits (above the PAT bit
        // 12) must be zero.
        let large_reserved = match (level, ps) {
            (0, _) => PTE_PS,
            (1, true) => 0x3FFF_E000,
            (2, true) => 0x1F_E000,
            _ => 0,
        };
        if e & (reserved | large_reserved) != 0 {
            return Err(WalkError::Reserved);
        }
        w.entries[level] = (addr, e);
        w.n = level + 1;
        w.user_ok &= e & PTE_US != 0;
        w.writable &= e & PTE_RW != 0;
        w.no_exec |= mode.nxe && e & PTE_XD != 0;
        if ps || level == 3 {
            let page_mask = (1u64 << shift) - 1;
            w.phys_page = (e & PHYS_MASK & !page_mask) | (linear & page_mask & !0xFFF);
            w.large = ps;
            return Ok(w);
        }
        table = e & PHYS_MASK & !0xFFF;
    }
    Err(WalkError::NotPresent)
}

impl Interpreter {
    /// Translate a linear address for an access of `kind` at the current privilege level
    /// (user-mode access at CPL 3, SDM Vol. 3A §4.6).
    #[inline]
    pub(crate) fn translate(
        &mut self,
        p: &mut dyn Platform,
        linear: u64,
        kind: AccessKind,
    ) -> Result<u64, Fault> {
        if self.state.cr0 & cr::CR0_PG == 0 {
            return Ok(linear & 0xFFFF_FFFF);
        }
        let user = self.state.cpl() == 3;
        if let Some(phys) = self.tlb.lookup(linear, kind, user) {
            return Ok(phys);
        }
        self.translate_slow(p, linear, kind, user)
    }

    /// Translate as a supervisor-mode access whatever the CPL: the implicit accesses to the
    /// GDT, LDT, IDT and TSS (SDM Vol. 3A §4.6).
    #[inline]
    pub(crate) fn translate_supervisor(
        &mut self,
        p: &mut dyn Platform,
        linear: u64,
        kind: AccessKind,
    ) -> Result<u64, Fault> {
        if self.state.cr0 & cr::CR0_PG == 0 {
            return Ok(linear & 0xFFFF_FFFF);
        }
        if let Some(phys) = self.tlb.lookup(linear, kind, false) {
            return Ok(phys);
        }
        self.translate_slow(p, linear, kind, false)
    }

    /// TLB miss: walk the tables, check rights, update A/D bits, fill the TLB; on failure set
    /// CR2 and return #PF with its error code.
    #[cold]
    fn translate_slow(
        &mut self,
        p: &mut dyn Platform,
        linear: u64,
        kind: AccessKind,
        user: bool,
    ) -> Result<u64, Fault> {
        let linear = self.wrap_linear(linear);
        let mode = PagingMode::of(&self.state);
        let pdptes = if mode.pae && !mode.long {
            self.current_pdptes(p)
        } else {
            [0; 4]
        };
        let write = kind == AccessKind::Write;
        let fetch = kind == AccessKind::Execute;
        let mut code = 0u32;
        if write {
            code |= pf_code::W;
        }
        if user {
            code |= pf_code::U;
        }
        if fetch && mode.nxe {
            code |= pf_code::ID;
        }
        let walk = {
            let mut read = |addr: u64, wide: bool| -> u64 {
                let mut b = [0u8; 8];
                let n = if wide { 8 } else { 4 };
                self.phys_read(p, addr, &mut b[..n]);
                u64::from_le_bytes(b)
            };
            walk_tables(mode, pdptes, linear, &mut read)
        };
        let walk = match walk {
            Ok(w) => w,
            Err(e) => {
                if e == WalkError::Reserved {
                    code |= pf_code::RSVD | pf_code::P;
                }
                self.state.cr2 = linear;
                return Err(Fault::with_code(vector::PF, code));
            }
        };
        let wp = self.state.cr0 & cr::CR0_WP != 0;
        let allowed = if user && !walk.user_ok {
            false
        } else if write {
            walk.writable || (!user && !wp)
        } else if fetch {
            !walk.no_exec
        } else {
            true
        };
        if !allowed {
            self.state.cr2 = linear;
            return Err(Fault::with_code(vector::PF, code | pf_code::P));
        }
        // Accessed bits on every entry used, dirty on the leaf for a write (SDM Vol. 3A §4.8).
        let leaf = walk.n - 1;
        let mut dirty = walk.entries[leaf].1 & PTE_D != 0;
        for (i, &(addr, value)) in walk.entries[..walk.n].iter().enumerate() {
            let mut new = value | PTE_A;
            if i == leaf && write {
                new |= PTE_D;
                dirty = true;
            }
            if new != value {
                // A and D live in the low byte.
                self.phys_write(p, addr, &[new as u8]);
            }
        }
        let leaf_value = walk.entries[leaf].1;
        let mut allow = ALLOW_READ;
        if dirty && (walk.writable || !wp) {
            allow |= ALLOW_WRITE;
        }
        if !walk.no_exec {
            allow |= ALLOW_EXEC;
        }
        if walk.user_ok {
            allow |= ALLOW_READ << USER_SHIFT;
            if dirty && walk.writable {
                allow |= ALLOW_WRITE << USER_SHIFT;
            }
            if !walk.no_exec {
                allow |= ALLOW_EXEC << USER_SHIFT;
            }
        }
        let global = mode.pge && leaf_value & PTE_G != 0;
        self.tlb
            .insert(linear, walk.phys_page, allow, global, walk.large);
        Ok(walk.phys_page | (linear & 0xFFF))
    }

    /// The PDPTE registers, reloading them from CR3 if they were dropped by a state load.
    fn current_pdptes(&mut self, p: &mut dyn Platform) -> [u64; 4] {
        if let Some(v) = self.tlb.pdptes {
            return v;
        }
        let v = self.read_pdptes(p);
        self.tlb.pdptes = Some(v);
        v
    }

    fn read_pdptes(&mut self, p: &mut dyn Platform) -> [u64; 4] {
        let base = self.state.cr3 & 0xFFFF_FFE0;
        let mut v = [0u64; 4];
        for (i, e) in v.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            self.phys_read(p, base + 8 * i as u64, &mut b);
            *e = u64::from_le_bytes(b);
        }
        v
    }

    /// Load the PDPTE registers from CR3 when PAE paging is (being) enabled
    /// (SDM Vol. 3A §4.4.1): a present PDPTE with reserved bits set is #GP(0), and nothing
    /// is loaded then.
    pub(crate) fn load_pdptes(&mut self, p: &mut dyn Platform) -> Result<(), Fault> {
        let v = self.read_pdptes(p);
        if v.iter().any(|&e| e & PTE_P != 0 && e & PDPTE_RESERVED != 0) {
            return Err(Fault::gp(0));
        }
        self.tlb.pdptes = Some(v);
        Ok(())
    }

    /// PAE paging is enabled (CR0.PG and CR4.PAE outside IA-32e mode): the mode with PDPTE
    /// registers. 4-level paging (EFER.LMA) has none.
    pub(crate) fn pae_paging(&self) -> bool {
        self.state.cr0 & cr::CR0_PG != 0
            && self.state.cr4 & cr::CR4_PAE != 0
            && self.state.efer & cr::EFER_LMA == 0
    }

    /// Side-effect-free translation for the debugger: no A/D writes, no faults, no TLB fill,
    /// no MMIO reads. `None` if the address is not mapped.
    pub(crate) fn probe_translate(&self, p: &dyn Platform, linear: u64) -> Option<u64> {
        if self.state.cr0 & cr::CR0_PG == 0 {
            return Some(linear & 0xFFFF_FFFF);
        }
        let linear = self.wrap_linear(linear);
        let mode = PagingMode::of(&self.state);
        let mut read = |addr: u64, wide: bool| -> u64 {
            let mut b = [0u8; 8];
            let n = if wide { 8 } else { 4 };
            let _ = p.memory().read_phys(addr, &mut b[..n]);
            u64::from_le_bytes(b)
        };
        let pdptes = match self.tlb.pdptes {
            _ if mode.long => [0; 4],
            Some(v) if mode.pae => v,
            _ if mode.pae => {
                let base = mode.cr3 & 0xFFFF_FFE0;
                let mut v = [0u64; 4];
                for (i, e) in v.iter_mut().enumerate() {
                    *e = read(base + 8 * i as u64, true);
                }
                v
            }
            _ => [0; 4],
        };
        walk_tables(mode, pdptes, linear, &mut read)
            .ok()
            .map(|w| w.phys_page | (linear & 0xFFF))
    }

    /// Read `buf.len()` bytes at a linear address as a supervisor access (descriptor tables,
    /// TSS, IDT), splitting at page boundaries.
    pub(crate) fn read_sys(
        &mut self,
        p: &mut dyn Platform,
        linear: u64,
        buf: &mut [u8],
    ) -> Result<(), Fault> {
        let first = 4096 - (linear & 0xFFF) as usize;
        if buf.len() <= first {
            let phys = self.translate_supervisor(p, linear, AccessKind::Read)?;
            self.phys_read(p, phys, buf);
        } else {
            let second = self.wrap_linear(linear.wrapping_add(first as u64));
            let phys1 = self.translate_supervisor(p, linear, AccessKind::Read)?;
            let phys2 = self.translate_supervisor(p, second, AccessKind::Read)?;
            let (a, b) = buf.split_at_mut(first);
            self.phys_read(p, phys1, a);
            self.phys_read(p, phys2, b);
        }
        Ok(())
    }

    /// Write `buf` at a linear address as a supervisor access; both pages are checked first.
    pub(crate) fn write_sys(
        &mut self,
        p: &mut dyn Platform,
        linear: u64,
        buf: &[u8],
    ) -> Result<(), Fault> {
        let first = 4096 - (linear & 0xFFF) as usize;
        if buf.len() <= first {
            let phys = self.translate_supervisor(p, linear, AccessKind::Write)?;
            self.phys_write(p, phys, buf);
        } else {
            let second = self.wrap_linear(linear.wrapping_add(first as u64));
            let phys1 = self.translate_supervisor(p, linear, AccessKind::Write)?;
            let phys2 = self.translate_supervisor(p, second, AccessKind::Write)?;
            let (a, b) = buf.split_at(first);
            self.phys_write(p, phys1, a);
            self.phys_write(p, phys2, b);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlb_lookup_respects_rights_and_flushes() {
        let mut t = Tlb::default();
        t.insert(0x1234_5000, 0x9000, ALLOW_READ | ALLOW_EXEC, false, false);
        assert_eq!(t.lookup(0x1234_5678, AccessKind::Read, false), Some(0x9678));
        assert_eq!(t.lookup(0x1234_5678, AccessKind::Write, false), None);
        assert_eq!(t.lookup(0x1234_5678, AccessKind::Read, true), None);
        t.insert(0x1000, 0x2000, ALLOW_READ, true, false);
        t.flush_non_global();
        assert_eq!(t.lookup(0x1234_5678, AccessKind::Read, false), None);
        assert_eq!(t.lookup(0x1000, AccessKind::Read, false), Some(0x2000));
        t.invalidate(0x1FFF);
        assert_eq!(t.lookup(0x1000, AccessKind::Read, false), None);
    }

    #[test]
    fn walk_32bit_and_large_pages() {
        let mode = PagingMode {
            pae: false,
            long: false,
            pse: true,
            nxe: false,
            pge: false,
            cr3: 0x1000,
        };
        let mut mem = std::collections::HashMap::new();
        mem.insert(0x1000u64, 0x2000u64 | 7); // PDE 0 → PT at 0x2000
        mem.insert(0x2000 + 5 * 4, 0x0005_5000 | 3); // PTE 5: supervisor RW
        mem.insert(0x1000 + 4, 0x0040_0000 | 0x87 | (1 << 13)); // PDE 1: 4 MiB page, PSE-36
        let mut read = |a: u64, _w: bool| mem.get(&a).copied().unwrap_or(0);
        let w = walk_tables(mode, [0; 4], 0x5123, &mut read).expect("mapped");
        assert_eq!(w.phys_page, 0x55000);
        assert!(!w.user_ok && w.writable);
        let w = walk_tables(mode, [0; 4], 0x0041_2345, &mut read).expect("mapped");
        assert_eq!(w.phys_page, 0x1_0041_2000);
        assert!(w.large && w.user_ok);
        assert_eq!(
            walk_tables(mode, [0; 4], 0x0080_0000, &mut read).err(),
            Some(WalkError::NotPresent)
        );
    }

    #[test]
    fn walk_4level_with_large_pages_nx_and_reserved_bits() {
        let mode = PagingMode {
            pae: true,
            long: true,
            pse: false,
            nxe: true,
            pge: true,
            cr3: 0x1000 | 0x5, // PCID bits are ignored
        };
        let high = 0xFFFF_8000_0000_0000u64; // PML4 slot 256
        let mut mem = std::collections::HashMap::new();
        mem.insert(0x1000u64, 0x2000u64 | 7); // PML4E 0 → PDPT 0x2000 (user, RW)
        mem.insert(0x1000 + 256 * 8, 0x3000 | 3); // PML4E 256 → PDPT 0x3000 (supervisor)
        mem.insert(0x2000, 0x4000 | 7); // PDPTE 0 → PD 0x4000
        mem.insert(0x2000 + 8, 0x4000_0000 | 0x83); // PDPTE 1: 1 GiB page, supervisor
        mem.insert(0x4000, 0x5000 | 7); // PDE 0 → PT 0x5000
        mem.insert(0x4000 + 8, 0x0060_0000 | 0x85 | PTE_XD); // PDE 1: 2 MiB, user, RO, NX
        mem.insert(0x5000 + 3 * 8, 0x000A_B000 | 7 | (0x7F << 52)); // ignored bits 58:52
        mem.insert(0x3000, 0x1_0000_0000 | 0x83 | (1 << 13)); // 1 GiB with a reserved bit
        let mut read = |a: u64, _w: bool| mem.get(&a).copied().unwrap_or(0);
        let w = walk_4level(mode, 0x3123, &mut read).expect("4 KiB page");
        assert_eq!((w.phys_page, w.n, w.large), (0xAB000, 4, false));
        assert!(w.user_ok && w.writable && !w.no_exec);
        let w = walk_4level(mode, 0x4567_8000, &mut read).expect("1 GiB page");
        assert_eq!((w.phys_page, w.n, w.large), (0x4567_8000, 2, true));
        assert!(!w.user_ok);
        let w = walk_4level(mode, 0x0025_4000, &mut read).expect("2 MiB page");
        assert_eq!((w.phys_page, w.n), (0x0065_4000, 3));
        assert!(w.user_ok && !w.writable && w.no_exec);
        assert_eq!(
            walk_4level(mode, high, &mut read).err(),
            Some(WalkError::Reserved)
        );
        assert_eq!(
            walk_4level(mode, 0x0080_0000_0000, &mut read).err(),
            Some(WalkError::NotPresent)
        );
        let no_nx = PagingMode { nxe: false, ..mode };
        assert_eq!(
            walk_4level(no_nx, 0x0025_4000, &mut read).err(),
            Some(WalkError::Reserved),
            "XD is reserved without EFER.NXE"
        );
    }
}
