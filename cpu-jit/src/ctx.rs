//! The context block translated code runs against, and the out-of-line helpers it calls.
//!
//! Generated code receives a pointer to a [`JitCtx`] and an opaque pointer to the dispatcher's
//! `&mut dyn Platform`. It keeps guest registers in the context's `gpr` copy, probes the soft
//! TLBs inline for loads and stores to RAM, and calls the `extern "C"` helpers below for
//! everything else (MMIO, page walks, A/D bits, faults, segment checks); the helpers reach the
//! interpreter through `JitCtx::interp`, so every slow access has the interpreter's semantics.

use pcvm_core::{GuestMemory, Platform, SegReg};
use pcvm_cpu_interp::{Interpreter, JitCacheKey, JitInsn, JitTlbKey, TlbChange};

use crate::translate::{EXIT_DELIVERED, EXIT_NEXT, EXIT_SHUTDOWN, EXIT_STOP};
use vm_memory_host::host_page;

/// Entries in each soft TLB (direct mapped by linear page number). With 256, pages 1 MiB
/// apart shared a slot, and a gzip loop whose stack and data pages did so took the slow path
/// (a page walk) on most of its loads.
pub(crate) const TLB_SIZE: usize = 1024;
/// Mixed into a page's second soft-TLB slot so that it differs from the first for the
/// pages of the first 4 MiB too.
pub(crate) const TLB_SECOND_SALT: u64 = 0x200;

/// The two soft-TLB slots a linear page may sit in (generated code probes both, in this
/// order): its low bits, and those mixed with the bits above them. Pages that share the
/// first slot (4 MiB apart, say a stack page and a heap page ASLR put there) almost never
/// share the second; with one slot such a pair missed on every access (about 30% of a
/// guest gzip's samples went to the misses in a run where ASLR put its buffers so).
pub(crate) fn tlb_slots(linear: u64) -> [usize; 2] {
    let page = linear >> 12;
    let mask = TLB_SIZE as u64 - 1;
    [
        (page & mask) as usize,
        ((page ^ (linear >> 22) ^ TLB_SECOND_SALT) & mask) as usize,
    ]
}

/// Filled soft-TLB slots remembered before a flush clears everything instead.
const TLB_FILLS: usize = 1024;
/// [`TlbFills`] record bits besides the slot number: the write TLB, a global translation
/// (kept by a MOV CR3), filled in user mode.
const TLB_FILL_WRITE: u16 = 0x8000;
const TLB_FILL_GLOBAL: u16 = 0x4000;
const TLB_FILL_USER: u16 = 0x2000;
const TLB_FILL_SLOT: u16 = 0x03FF;
const _: () = assert!(TLB_SIZE - 1 <= TLB_FILL_SLOT as usize);

/// Soft-TLB slots filled since the last flush, so that a flush clears only those (a Linux
/// system call changes the key twice, a text poke four times: clearing all 2048 entries
/// each time was 3% of a guest's `sha256sum` of a file) and a partial one only those it
/// voids.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TlbFills {
    records: [u16; TLB_FILLS],
    len: usize,
    /// More than [`TLB_FILLS`] were filled: a flush must clear everything.
    overflow: bool,
}

impl Default for TlbFills {
    fn default() -> Self {
        TlbFills {
            records: [0; TLB_FILLS],
            len: 0,
            overflow: false,
        }
    }
}

/// Words of `JitCtx::slow_args`: the most arguments a slow path passes on after the context
/// and platform (`helper_store`'s segment, offset, flags and value).
pub(crate) const SLOW_ARGS: usize = 4;

/// A tag that matches no page-aligned address.
pub(crate) const TLB_EMPTY: u64 = u64::MAX;

/// One read soft-TLB entry: `tag` is the page-aligned linear address, `linear + addend` the
/// host address.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct TlbEntry {
    pub tag: u64,
    pub addend: u64,
}

/// One write soft-TLB entry: `tag` is the page-aligned linear address, `linear + addend` the
/// host address and `linear + ram_addend` the RAM offset. Only pages that hold no translated
/// code get one (QEMU's "not dirty" idea): a store that hits may bypass `GuestMemory`'s code
/// tracking, and a page that becomes code loses its entry before generated code runs again
/// ([`JitCtx::drop_new_code_pages`]), so stores into code always take the helper.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriteTlbEntry {
    pub tag: u64,
    pub addend: u64,
    pub ram_addend: u64,
    /// Keeps the entry a power of two in size for generated code's slot arithmetic.
    pub unused: u64,
}

/// log2 of the entry sizes, for generated code's slot arithmetic.
pub(crate) const TLB_READ_SHIFT: i64 = 4;
pub(crate) const TLB_WRITE_SHIFT: i64 = 5;
const _: () = assert!(std::mem::size_of::<TlbEntry>() == 1 << TLB_READ_SHIFT);
const _: () = assert!(std::mem::size_of::<WriteTlbEntry>() == 1 << TLB_WRITE_SHIFT);

/// Field offsets inside a write-TLB entry.
pub(crate) const WTLB_ADDEND: i32 = std::mem::offset_of!(WriteTlbEntry, addend) as i32;

/// Status a store helper returns.
pub(crate) const STORE_OK: u64 = 0;
/// The access faulted: nothing was written; the instruction is re-run by the interpreter.
pub(crate) const STORE_FAULT: u64 = 1;
/// The store completed but hit code (a page holding decoded code, or the running block's own
/// bytes): stop after this instruction, as the interpreter ends its block there.
pub(crate) const STORE_STOP: u64 = 2;

/// Flag bits of the helpers' `flags` argument: operand size in the low byte.
pub(crate) const ACC_RMW: u64 = 1 << 8;
/// The offset is the linear address (flat segment): the helper may fill the soft TLB.
pub(crate) const ACC_FILL: u64 = 1 << 9;

/// State shared between the dispatcher, generated code and helpers.
#[repr(C)]
pub(crate) struct JitCtx {
    /// Guest GPRs, copied in before and out after a block.
    pub gpr: [u64; 16],
    /// RFLAGS in (materialized) and out.
    pub rflags: u64,
    /// RIP at exit.
    pub rip: u64,
    /// Instructions completed at exit.
    pub executed: u64,
    /// Set by a load helper whose access faulted.
    pub fault: u64,
    /// Set by [`helper_interp`] when the instruction it ran faulted as the first of its block
    /// with nothing retired: the run loop charges such a fault one instruction of budget (and
    /// of the poll interval and clock) without retiring it.
    pub fault_charge: u64,
    /// The result of the last slow-path load or store (see `Compiler`'s slow-path wrappers,
    /// which cannot return values in their calling convention).
    pub slow_result: u64,
    /// A slow path's arguments (segment, offset, flags, value), stored by generated code
    /// so that calls to it pin no registers.
    pub slow_args: [u64; SLOW_ARGS],
    /// The platform pointer of the running chain (set by the trampoline), for slow paths.
    pub slow_plat: u64,
    pub tlb_read: [TlbEntry; TLB_SIZE],
    pub tlb_write: [WriteTlbEntry; TLB_SIZE],
    /// `GuestMemory::code_marks` when the write TLB was last cleared of code pages.
    pub code_marks_seen: u64,
    /// The interpreter holding the rest of the state (valid while generated code runs).
    pub interp: *mut Interpreter,
    /// The interpreter's XMM0–XMM15, which translated SSE code reads and writes in place
    /// (valid while generated code runs).
    pub xmm: *mut [[u8; 16]; 16],
    /// 1 when SSE instructions execute (see `Interpreter::jit_sse_usable`), for the chain:
    /// changing CR0 or CR4 ends it. Translated SSE code leaves them to the interpreter at 0.
    pub sse_ok: u64,
    /// What the soft TLBs' entries were checked against, and the interpreter context
    /// generation it was last compared at.
    pub tlb_key: Option<JitTlbKey>,
    pub tlb_raw: u64,
    /// Soft-TLB slots filled since the last flush.
    pub tlb_fills: TlbFills,
    /// The JIT's cache generation.
    pub cache_gen: CacheGen,
    /// FS and GS bases for 64-bit code (constant while a block runs: translated code never
    /// changes them).
    pub seg_base: [u64; 2],
    /// The platform's guest memory (valid while generated code runs), so the RAM store
    /// helper needs no call through the platform.
    pub mem: *const GuestMemory,
    // --- Native chaining: a block's exit to a constant target jumps straight into the
    // compiled successor its [`Link`] names, under the same conditions the dispatcher checks
    // between blocks. The dispatcher sets these before each call of generated code. ---
    /// The [`Link::gen`] valid now, or [`NO_LINK`] while the dispatcher must see every
    /// boundary (an interrupt is requested, I/O happened, the context changed).
    pub link_gen: u64,
    /// Instructions the run may still retire (the budget, for [`helper_interp`]'s REP
    /// iterations).
    pub budget: u64,
    /// A successor runs natively only if the call's retired instructions with it stay within
    /// this: the lesser of the budget and the room before the next poll. (The dispatcher
    /// itself goes on into a successor while fewer than the poll room retired, so polls
    /// land where they would without native chaining; one limit keeps the check short.)
    pub limit: u64,
    /// Instructions retired in this call that the last block's `executed` does not count: by
    /// the blocks before it, and the REP iterations beyond the first of the instructions
    /// [`helper_interp`] ran (so `chained + executed` is what the call retired, `executed`
    /// the position reached in the interpreter's block).
    pub chained: u64,
    /// Block-to-block jumps taken natively in this call, counted only by blocks compiled
    /// with run counting on (see `JitBackend::count_block_runs`).
    pub chained_blocks: u64,
    /// Index of the block that ran last.
    pub last: u64,
    /// Address of the [`Link`] whose miss ended the call (0: none) for the dispatcher to fill.
    pub miss_link: u64,
    /// Interpreter context generation at the start of the call.
    pub chain_ctx_gen: u64,
    // --- Lazy arithmetic flags between blocks (SDM Vol. 1 §3.4.3.1): a block exit leaves
    // the last flag-setting operation here instead of computing six flags nobody may read.
    /// 0 when `rflags` holds the arithmetic flags; else a `FLAGS_*` code | operand bits << 8
    /// (the other RFLAGS bits are always in `rflags`).
    pub flags_op: u64,
    /// Its operands and result (masked to the operand size) and carry/borrow out (0 or 1).
    pub flags_a: u64,
    pub flags_b: u64,
    pub flags_res: u64,
    pub flags_cf: u64,
    /// Per mnemonic (`iced_x86::Mnemonic as usize`): instructions [`helper_interp`] ran, for
    /// the fallback profile.
    pub interp_runs: Box<[u64]>,
}

/// `JitCtx::flags_op` codes: ADD/ADC (CF from `flags_cf`).
pub(crate) const FLAGS_ADD: u64 = 1;
/// SUB/SBB/CMP/NEG with a borrow in (CF from `flags_cf`).
pub(crate) const FLAGS_SUB: u64 = 2;
/// SUB/CMP/NEG without a borrow in.
pub(crate) const FLAGS_SUB_PLAIN: u64 = 3;
/// AND/OR/XOR/TEST: CF = OF = AF = 0.
pub(crate) const FLAGS_LOGIC: u64 = 4;
/// INC (CF kept in `flags_cf`).
pub(crate) const FLAGS_INC: u64 = 5;
/// DEC (CF kept in `flags_cf`).
pub(crate) const FLAGS_DEC: u64 = 6;

/// The six arithmetic flags (CF PF AF ZF SF OF).
const ARITH_FLAGS: u64 = 0x8D5;

/// Generations for the last few keys seen: a key that comes back gets its old generation
/// again, so caches tagged with it stay valid across an excursion to another key. A new key
/// (or one pushed out by [`GEN_TABLE_SIZE`] newer ones) gets a fresh generation, never used
/// before, so nothing cached under an older one can match it.
#[derive(Debug)]
pub(crate) struct GenTable<K> {
    entries: [Option<(K, u64)>; GEN_TABLE_SIZE],
    /// Entry the next new key replaces (round robin).
    victim: usize,
    /// The last generation handed out.
    last: u64,
}

/// Keys a [`GenTable`] remembers: enough for a kernel and a few processes' user modes.
const GEN_TABLE_SIZE: usize = 8;

impl<K: PartialEq + Copy> GenTable<K> {
    pub(crate) fn new() -> Self {
        Self {
            entries: [None; GEN_TABLE_SIZE],
            victim: 0,
            last: 0,
        }
    }

    /// The generation of `key`: its old one if it is still remembered, else a fresh one.
    pub(crate) fn gen_for(&mut self, key: K) -> u64 {
        if let Some((_, gen)) = self.entries.iter().flatten().find(|(k, _)| *k == key) {
            return *gen;
        }
        self.last += 1;
        if let Some(e) = self.entries.get_mut(self.victim) {
            *e = Some((key, self.last));
        }
        self.victim = (self.victim + 1) % GEN_TABLE_SIZE;
        self.last
    }
}

/// RFLAGS.IF and DF.
const FLAG_IF: u64 = 1 << 9;
const FLAG_DF: u64 = 1 << 10;

/// [`helper_interp`]'s result when the block goes on natively (any other value is the exit
/// code the block returns at once).
pub(crate) const INTERP_GO_ON: u64 = u64::MAX;

/// The generation of the JIT's caches of linear addresses (linear-RIP lookups, links, soft
/// TLB, mode checks). It follows the interpreter's context generation, which moves on every
/// fault, interrupt and system instruction, but only moves itself when what those caches
/// depend on ([`JitCacheKey`]) changed, so a Linux guest's interrupts, RDTSCs and POPFs no
/// longer empty them. A key seen recently gets its old generation back ([`GenTable`]): a
/// system call's return to user mode finds the user-mode entries it left (the key holds the
/// whole-TLB flush count, and an INVLPG near cached code salts it, so entries never outlive
/// a flush).
#[derive(Debug)]
pub(crate) struct CacheGen {
    raw: u64,
    key: Option<(JitCacheKey, u64)>,
    gen: u64,
    table: GenTable<(JitCacheKey, u64)>,
    /// Bumped by an INVLPG in a region holding cached code: with the key, it makes a fresh
    /// generation (INVLPG is not in [`JitCacheKey`]).
    salt: u64,
    /// INVLPGs accounted for.
    invlpgs_seen: u64,
    /// Regions that linear-RIP cache entries, links and indirect-branch entries were made
    /// in: an INVLPG there voids them all.
    code_regions: RegionSet,
    /// Regions whose soft-TLB entries an INVLPG voided, for [`JitCtx::check_tlb_gen`].
    pub purge: RegionSet,
}

/// Regions a [`RegionSet`] names exactly; more are kept as bits folded by address.
const REGIONS: usize = 8;

/// A set of 1 GiB regions of linear addresses (the largest page an INVLPG may drop): the
/// first [`REGIONS`] exactly, more as bits of a 64-bit mask (a shared bit only costs a
/// needless invalidation). Exact regions keep Linux's direct map apart from a process's
/// low addresses: folded, every INVLPG of a direct-map page voided a `gzip`'s soft-TLB
/// entries and code lookups.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RegionSet {
    regions: [u64; REGIONS],
    len: usize,
    folded: u64,
    all: bool,
}

impl RegionSet {
    /// Every region.
    const ALL: RegionSet = RegionSet {
        regions: [0; REGIONS],
        len: 0,
        folded: 0,
        all: true,
    };

    fn bit(region: u64) -> u64 {
        1 << (region & 63)
    }

    /// Add the region holding `linear`.
    pub(crate) fn insert(&mut self, linear: u64) {
        let region = linear >> 30;
        if self.contains(linear) {
            return;
        }
        match self.regions.get_mut(self.len) {
            Some(r) => {
                *r = region;
                self.len += 1;
            }
            None => self.folded |= Self::bit(region),
        }
    }

    /// The region holding `linear` is in the set.
    pub(crate) fn contains(&self, linear: u64) -> bool {
        let region = linear >> 30;
        self.all
            || self.regions[..self.len].contains(&region)
            || self.folded & Self::bit(region) != 0
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.all && self.len == 0 && self.folded == 0
    }
}

impl Default for CacheGen {
    fn default() -> Self {
        Self {
            raw: 0,
            key: None,
            gen: 0,
            table: GenTable::new(),
            salt: 0,
            invlpgs_seen: 0,
            code_regions: RegionSet::default(),
            purge: RegionSet::default(),
        }
    }
}

impl CacheGen {
    /// The generation now.
    #[inline]
    pub(crate) fn get(&mut self, interp: &Interpreter) -> u64 {
        let raw = interp.jit_ctx_gen();
        if interp.jit_invlpgs() != self.invlpgs_seen {
            self.absorb_invlpgs(interp);
        }
        if raw != self.raw || self.key.is_none() {
            self.raw = raw;
            let key = (interp.jit_cache_key(), self.salt);
            if self.key != Some(key) {
                self.key = Some(key);
                self.gen = self.table.gen_for(key);
            }
        }
        self.gen
    }

    /// Cached code is about to depend on the translation of `linear..=last`.
    pub(crate) fn note_code(&mut self, linear: u64, last: u64) {
        self.code_regions.insert(linear);
        self.code_regions.insert(last);
    }

    /// Account for the INVLPGs since the last call (SDM Vol. 3A §4.10.4.1: each drops the
    /// translations of one page, of whatever size): one in a region with cached code voids
    /// the generation; any other only the soft-TLB entries of its region. Linux's early
    /// boot remaps its fixmap pages tens of thousands of times, far from any code.
    #[cold]
    fn absorb_invlpgs(&mut self, interp: &Interpreter) {
        let now = interp.jit_invlpgs();
        while self.invlpgs_seen < now {
            let Some(linear) = interp.jit_invlpg(self.invlpgs_seen) else {
                // Forgotten: assume the worst.
                self.salt += 1;
                self.purge = RegionSet::ALL;
                break;
            };
            if self.code_regions.contains(linear) {
                self.salt += 1;
            }
            self.purge.insert(linear);
            self.invlpgs_seen += 1;
        }
        self.invlpgs_seen = now;
        // Force the key comparison (the salt may have moved).
        self.key = None;
    }
}

/// [`JitCtx::link_gen`] while native chaining is off: no link carries it.
pub(crate) const NO_LINK: u64 = u64::MAX;

/// One exit's native successor: valid while `gen` equals [`JitCtx::link_gen`] (a generation
/// that changes whenever a block is dropped, the context changes, or blocks need re-checking
/// against guest RAM). Generated code reads it at the exit it belongs to; only the dispatcher
/// writes it, between calls.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Link {
    pub gen: u64,
    /// The successor's code (tail calling convention).
    pub func: u64,
    /// Its instruction count (it runs only if it fits [`JitCtx::budget`]).
    pub insns: u64,
    /// Its block index.
    pub idx: u64,
    /// In the indirect-branch cache: the RIP it is the successor for.
    pub tag: u64,
}

/// Links per block: the constant-target exits of one block (taken and not-taken).
pub(crate) const LINKS_PER_BLOCK: usize = 2;

impl Link {
    /// A link no generation matches.
    pub(crate) const EMPTY: Link = Link {
        gen: 0,
        func: 0,
        insns: 0,
        idx: 0,
        tag: u64::MAX,
    };
}

pub(crate) const LINK_GEN: i32 = std::mem::offset_of!(Link, gen) as i32;
pub(crate) const LINK_FUNC: i32 = std::mem::offset_of!(Link, func) as i32;
pub(crate) const LINK_INSNS: i32 = std::mem::offset_of!(Link, insns) as i32;
pub(crate) const LINK_IDX: i32 = std::mem::offset_of!(Link, idx) as i32;
pub(crate) const LINK_TAG: i32 = std::mem::offset_of!(Link, tag) as i32;

/// Entries of the indirect-branch cache (RET and indirect JMP/CALL targets → successor), a
/// power of two.
pub(crate) const IND_CACHE_SIZE: usize = 4096;

/// The indirect-branch cache slot of target `rip` (generated code computes the same).
pub(crate) fn ind_cache_slot(rip: u64) -> usize {
    ((rip ^ (rip >> 12)) as usize) & (IND_CACHE_SIZE - 1)
}

// SAFETY: the raw `interp` and `mem` pointers are only used while the owning backend runs
// generated code on its thread (`interp` is null between calls; `mem` is re-set before each
// chain and never dereferenced outside one); the soft TLBs' host addresses are used only by
// generated code on that thread. Moving the context to another thread moves no live borrow.
unsafe impl Send for JitCtx {}

pub(crate) const OFF_GPR: i32 = std::mem::offset_of!(JitCtx, gpr) as i32;
pub(crate) const OFF_RFLAGS: i32 = std::mem::offset_of!(JitCtx, rflags) as i32;
pub(crate) const OFF_RIP: i32 = std::mem::offset_of!(JitCtx, rip) as i32;
pub(crate) const OFF_EXECUTED: i32 = std::mem::offset_of!(JitCtx, executed) as i32;
pub(crate) const OFF_FAULT: i32 = std::mem::offset_of!(JitCtx, fault) as i32;
pub(crate) const OFF_SLOW_RESULT: i32 = std::mem::offset_of!(JitCtx, slow_result) as i32;
pub(crate) const OFF_SLOW_ARGS: i32 = std::mem::offset_of!(JitCtx, slow_args) as i32;
pub(crate) const OFF_SLOW_PLAT: i32 = std::mem::offset_of!(JitCtx, slow_plat) as i32;
pub(crate) const OFF_TLB_READ: i32 = std::mem::offset_of!(JitCtx, tlb_read) as i32;
pub(crate) const OFF_TLB_WRITE: i32 = std::mem::offset_of!(JitCtx, tlb_write) as i32;
pub(crate) const OFF_SEG_BASE: i32 = std::mem::offset_of!(JitCtx, seg_base) as i32;
pub(crate) const OFF_LINK_GEN: i32 = std::mem::offset_of!(JitCtx, link_gen) as i32;
pub(crate) const OFF_LIMIT: i32 = std::mem::offset_of!(JitCtx, limit) as i32;
pub(crate) const OFF_CHAINED: i32 = std::mem::offset_of!(JitCtx, chained) as i32;
pub(crate) const OFF_CHAINED_BLOCKS: i32 = std::mem::offset_of!(JitCtx, chained_blocks) as i32;
pub(crate) const OFF_LAST: i32 = std::mem::offset_of!(JitCtx, last) as i32;
pub(crate) const OFF_MISS_LINK: i32 = std::mem::offset_of!(JitCtx, miss_link) as i32;
pub(crate) const OFF_FLAGS_OP: i32 = std::mem::offset_of!(JitCtx, flags_op) as i32;
pub(crate) const OFF_FLAGS_A: i32 = std::mem::offset_of!(JitCtx, flags_a) as i32;
pub(crate) const OFF_FLAGS_B: i32 = std::mem::offset_of!(JitCtx, flags_b) as i32;
pub(crate) const OFF_FLAGS_RES: i32 = std::mem::offset_of!(JitCtx, flags_res) as i32;
pub(crate) const OFF_FLAGS_CF: i32 = std::mem::offset_of!(JitCtx, flags_cf) as i32;
pub(crate) const OFF_XMM: i32 = std::mem::offset_of!(JitCtx, xmm) as i32;
pub(crate) const OFF_SSE_OK: i32 = std::mem::offset_of!(JitCtx, sse_ok) as i32;

impl JitCtx {
    pub(crate) fn new() -> Box<JitCtx> {
        Box::new(JitCtx {
            gpr: [0; 16],
            rflags: 0,
            rip: 0,
            executed: 0,
            fault: 0,
            slow_result: 0,
            slow_args: [0; SLOW_ARGS],
            slow_plat: 0,
            fault_charge: 0,
            tlb_read: [TlbEntry {
                tag: TLB_EMPTY,
                addend: 0,
            }; TLB_SIZE],
            tlb_write: [WriteTlbEntry {
                tag: TLB_EMPTY,
                addend: 0,
                ram_addend: 0,
                unused: 0,
            }; TLB_SIZE],
            code_marks_seen: 0,
            interp: std::ptr::null_mut(),
            xmm: std::ptr::null_mut(),
            sse_ok: 0,
            tlb_key: None,
            tlb_raw: u64::MAX,
            tlb_fills: TlbFills::default(),
            cache_gen: CacheGen::default(),
            seg_base: [0; 2],
            mem: std::ptr::null(),
            link_gen: NO_LINK,
            limit: 0,
            budget: 0,
            chained: 0,
            chained_blocks: 0,
            last: 0,
            miss_link: 0,
            chain_ctx_gen: 0,
            flags_op: 0,
            flags_a: 0,
            flags_b: 0,
            flags_res: 0,
            flags_cf: 0,
            interp_runs: vec![0; iced_x86::Mnemonic::values().len()].into_boxed_slice(),
        })
    }

    /// Empty both soft TLBs.
    pub(crate) fn flush_tlb(&mut self) {
        self.clear_fills(|_| true);
    }

    /// Empty the soft-TLB slots of the fills `void` picks (by their [`TlbFills`] record),
    /// or every slot if there were too many fills to remember.
    fn clear_fills(&mut self, void: impl Fn(u16) -> bool) {
        // In place: the record list is 2 KiB.
        if self.tlb_fills.overflow {
            self.tlb_fills.overflow = false;
            self.tlb_fills.len = 0;
            self.flush_tlb_all();
            return;
        }
        let mut kept = 0;
        for i in 0..self.tlb_fills.len {
            let record = self.tlb_fills.records[i];
            if void(record) {
                let slot = usize::from(record & TLB_FILL_SLOT);
                if record & TLB_FILL_WRITE != 0 {
                    self.tlb_write[slot].tag = TLB_EMPTY;
                } else {
                    self.tlb_read[slot].tag = TLB_EMPTY;
                }
            } else {
                self.tlb_fills.records[kept] = record;
                kept += 1;
            }
        }
        self.tlb_fills.len = kept;
    }

    /// Empty the soft-TLB entries of the regions in `purge` (INVLPGs there).
    fn purge_tlb(&mut self, purge: &RegionSet) {
        if purge.all {
            self.flush_tlb();
            return;
        }
        let void = |tag: &mut u64| {
            if *tag != TLB_EMPTY && purge.contains(*tag) {
                *tag = TLB_EMPTY;
            }
        };
        if self.tlb_fills.overflow {
            self.tlb_read.iter_mut().for_each(|e| void(&mut e.tag));
            self.tlb_write.iter_mut().for_each(|e| void(&mut e.tag));
            return;
        }
        // Only filled slots can hold entries.
        for i in 0..self.tlb_fills.len {
            let record = self.tlb_fills.records[i];
            let slot = usize::from(record & TLB_FILL_SLOT);
            if record & TLB_FILL_WRITE != 0 {
                void(&mut self.tlb_write[slot].tag);
            } else {
                void(&mut self.tlb_read[slot].tag);
            }
        }
    }

    fn flush_tlb_all(&mut self) {
        for e in self.tlb_read.iter_mut() {
            e.tag = TLB_EMPTY;
        }
        for e in self.tlb_write.iter_mut() {
            e.tag = TLB_EMPTY;
        }
    }

    /// Follow the cache generation: a change drops every soft-TLB entry.
    /// Drop the write-TLB entries of pages that became code pages since the last call (pages
    /// become code only between chains: when the dispatcher or the interpreter decodes from
    /// them), so no inline store reaches translated code.
    #[inline]
    pub(crate) fn drop_new_code_pages(&mut self, mem: &GuestMemory) {
        let marks = mem.code_marks();
        if marks == self.code_marks_seen {
            return;
        }
        self.code_marks_seen = marks;
        for e in self.tlb_write.iter_mut() {
            if e.tag != TLB_EMPTY && mem.is_code_page(e.tag.wrapping_add(e.ram_addend)) {
                e.tag = TLB_EMPTY;
            }
        }
    }

    pub(crate) fn check_tlb_gen(&mut self, interp: &Interpreter) {
        // Absorbs INVLPGs into `purge`.
        self.cache_gen.get(interp);
        let raw = interp.jit_ctx_gen();
        if raw != self.tlb_raw {
            self.tlb_raw = raw;
            if self.follow_tlb_key(interp.jit_tlb_key()) {
                self.cache_gen.purge = RegionSet::default();
                return;
            }
        }
        if !self.cache_gen.purge.is_empty() {
            let purge = std::mem::take(&mut self.cache_gen.purge);
            self.purge_tlb(&purge);
        }
    }

    /// Compute `rflags` from lazy flags, if a block left them lazy. The formulas are the
    /// translator's own (translate.rs `cf`..`of`), which the differential test holds to the
    /// interpreter's.
    pub(crate) fn materialize_flags(&mut self) -> u64 {
        let op = self.flags_op;
        if op == 0 {
            return self.rflags;
        }
        let bits = ((op >> 8) & 0x7F).clamp(8, 64) as u32;
        let top = bits - 1;
        let (a, b, res) = (self.flags_a, self.flags_b, self.flags_res);
        let bit = |v: u64, n: u32| (v >> n) & 1;
        let cf = self.flags_cf & 1;
        let pf = u64::from((res & 0xFF).count_ones() % 2 == 0);
        let zf = u64::from(res == 0);
        let sf = bit(res, top);
        let (of, af) = match op & 0xFF {
            FLAGS_ADD => (bit((a ^ res) & (b ^ res), top), bit(a ^ b ^ res, 4)),
            FLAGS_SUB | FLAGS_SUB_PLAIN => (bit((a ^ b) & (a ^ res), top), bit(a ^ b ^ res, 4)),
            FLAGS_INC => (u64::from(res == 1 << top), u64::from(res & 0xF == 0)),
            FLAGS_DEC => (
                u64::from(res == (1 << top) - 1),
                u64::from(res & 0xF == 0xF),
            ),
            _ => (0, 0),
        };
        self.rflags =
            (self.rflags & !ARITH_FLAGS) | cf | pf << 2 | af << 4 | zf << 6 | sf << 7 | of << 11;
        self.flags_op = 0;
        self.rflags
    }

    /// After a slow access: I/O or a context change means the dispatcher must look at the
    /// next boundary, so native chaining stops.
    fn check_chain(&mut self, interp: &Interpreter) {
        if interp.jit_io_pending() || interp.jit_ctx_gen() != self.chain_ctx_gen {
            self.link_gen = NO_LINK;
        }
    }

    /// Remember the RAM page of `seg:offset` for inline loads or stores (host pointer; for
    /// stores also the RAM offset and code-page bit), if the interpreter's TLB proves the
    /// access allowed without a walk. Called
    /// only after the access succeeded (so the address passed the segment and canonical
    /// checks) and only for segments whose linear address generated code forms itself.
    /// Drop what soft-TLB entries `key` voids; true if that was all of them. Entries filled
    /// in user mode survive a system call or interrupt into the kernel and back (only the
    /// kernel's own are dropped on the way out), as a hardware TLB keeps them.
    fn follow_tlb_key(&mut self, key: JitTlbKey) -> bool {
        let change = match self.tlb_key.replace(key) {
            Some(old) if old == key => return false,
            Some(old) => key.change_from(&old),
            None => TlbChange::FLUSH,
        };
        if change.flush_all {
            self.flush_tlb();
            return true;
        }
        self.clear_fills(|record| {
            (change.drop_supervisor && record & TLB_FILL_USER == 0)
                || (change.drop_non_global && record & TLB_FILL_GLOBAL == 0)
        });
        false
    }

    /// Remember a filled slot (a [`TlbFills`] record without the user bit) for the next
    /// flush.
    fn note_fill(&mut self, record: u16) {
        let user = if self.tlb_key.is_some_and(|k| k.user()) {
            TLB_FILL_USER
        } else {
            0
        };
        let fills = &mut self.tlb_fills;
        match fills.records.get_mut(fills.len) {
            Some(r) => {
                *r = record | user;
                fills.len += 1;
            }
            None => fills.overflow = true,
        }
    }

    fn fill(
        &mut self,
        interp: &Interpreter,
        p: &dyn Platform,
        seg: SegReg,
        offset: u64,
        write: bool,
    ) {
        let linear = interp.jit_linear(seg, offset);
        let Some((off, global)) = interp.jit_ram_offset(p, linear, write) else {
            return;
        };
        let global = if global { TLB_FILL_GLOBAL } else { 0 };
        let page = linear & !0xFFF;
        let off_page = off & !0xFFF;
        // The first slot if free; else the second if free; else the first again.
        let [first, second] = tlb_slots(linear);
        let free = |tag: u64| tag == TLB_EMPTY || tag == page;
        let slot = if write {
            if free(self.tlb_write[first].tag) || !free(self.tlb_write[second].tag) {
                first
            } else {
                second
            }
        } else if free(self.tlb_read[first].tag) || !free(self.tlb_read[second].tag) {
            first
        } else {
            second
        };
        if write {
            // Stores into code pages stay out of line: `GuestMemory` reports them.
            if p.memory().is_code_page(off_page) {
                return;
            }
            let Some(host) = host_page(p, off_page) else {
                return;
            };
            self.tlb_write[slot] = WriteTlbEntry {
                tag: page,
                addend: (host as u64).wrapping_sub(page),
                ram_addend: off_page.wrapping_sub(page),
                unused: 0,
            };
            self.note_fill(slot as u16 | TLB_FILL_WRITE | global);
        } else if let Some(host) = host_page(p, off_page) {
            self.tlb_read[slot] = TlbEntry {
                tag: page,
                addend: (host as u64).wrapping_sub(page),
            };
            self.note_fill(slot as u16 | global);
        }
    }
}

/// Host-address lookup of guest RAM pages.
mod vm_memory_host {
    use pcvm_core::Platform;
    use vm_memory::{GuestAddress, GuestMemoryBackend as _};

    /// Host address of the RAM page at RAM offset `off_page` (page-aligned).
    pub(crate) fn host_page(p: &dyn Platform, off_page: u64) -> Option<*mut u8> {
        let mem = p.memory();
        let gpa = mem.layout().offset_to_gpa(off_page);
        mem.vm_memory().get_host_address(GuestAddress(gpa)).ok()
    }
}

/// The segment register numbered as iced/`SegReg::ALL` order (ES CS SS DS FS GS).
pub(crate) fn seg_from(n: u64) -> SegReg {
    SegReg::ALL.get(n as usize).copied().unwrap_or(SegReg::Ds)
}

/// The dispatcher's platform reference as generated code passes it through.
pub(crate) type PlatRef<'a> = &'a mut dyn Platform;

/// Materialize lazy flags a previous block left (see [`JitCtx::materialize_flags`]).
pub(crate) extern "C" fn helper_flags(ctx: *mut JitCtx) -> u64 {
    // SAFETY: generated code passes the context pointer it was called with; the dispatcher
    // keeps it alive and unaliased for the whole call of the block.
    unsafe { &mut *ctx }.materialize_flags()
}

/// Slow-path load: any segment, any memory type. Sets `ctx.fault` if the access faults.
pub(crate) extern "C" fn helper_load(
    ctx: *mut JitCtx,
    plat: *mut PlatRef<'_>,
    seg: u64,
    offset: u64,
    flags: u64,
) -> u64 {
    // SAFETY: generated code passes the context and platform pointers it was called with;
    // the dispatcher keeps both alive and unaliased for the whole call of the block, and
    // `ctx.interp` points at the backend's interpreter, which no Rust reference covers while
    // the block runs.
    let (ctx, p, interp) = unsafe { (&mut *ctx, &mut **plat, &mut *(*ctx).interp) };
    let size = (flags & 0xFF) as u8;
    match interp.jit_read(p, seg_from(seg), offset, size, flags & ACC_RMW != 0) {
        Ok(v) => {
            ctx.check_tlb_gen(interp);
            ctx.check_chain(interp);
            if flags & ACC_FILL != 0 {
                ctx.fill(interp, p, seg_from(seg), offset, false);
            }
            v
        }
        Err(_) => {
            ctx.fault = 1;
            0
        }
    }
}

/// Slow-path store: any segment, any memory type; returns a `STORE_*` status.
pub(crate) extern "C" fn helper_store(
    ctx: *mut JitCtx,
    plat: *mut PlatRef<'_>,
    seg: u64,
    offset: u64,
    flags: u64,
    value: u64,
) -> u64 {
    // SAFETY: as in `helper_load`.
    let (ctx, p, interp) = unsafe { (&mut *ctx, &mut **plat, &mut *(*ctx).interp) };
    let size = (flags & 0xFF) as u8;
    let seg = seg_from(seg);
    match interp.jit_write(p, seg, offset, size, value) {
        Ok(()) => {
            ctx.check_tlb_gen(interp);
            ctx.check_chain(interp);
            if flags & ACC_FILL != 0 {
                ctx.fill(interp, p, seg, offset, true);
            }
            // Self-modifying code: the interpreter ends its block after a store that hit a
            // page holding decoded code (the running block's page is marked before it runs).
            if p.memory().code_dirty() {
                STORE_STOP
            } else {
                STORE_OK
            }
        }
        Err(_) => STORE_FAULT,
    }
}

/// Run `count` consecutive instructions the translator does not cover (`insns`, predecoded
/// by the interpreter), the first `index` instructions into the interpreter's block,
/// through the interpreter (issue 7: "anything the translator does not cover calls an
/// interpreter helper per instruction"). Generated code stored its state (RIP of the first,
/// the registers it wrote, lazy flags) before the call; the interpreter runs each as the
/// middle of its own block would, and the context gets its registers, RFLAGS and RIP back,
/// for generated code to reload.
///
/// Returns [`INTERP_GO_ON`] when the block may go on natively after them; otherwise the
/// exit code for the block to return, with `executed` set: [`EXIT_DELIVERED`] (a fault was
/// delivered, RIP is its handler), [`EXIT_SHUTDOWN`], [`EXIT_STOP`] (a store into code: the
/// interpreter's block ends there) or [`EXIT_NEXT`] after an instruction that may have
/// changed what translated code relies on: the context generation (CR, segment, mode, TLB
/// flush, MMIO write), the RFLAGS bits other than the arithmetic flags, DF and a cleared IF
/// (an enabled IF may let an interrupt in), one-at-a-time mode (TF, an STI or MOV SS
/// shadow), HLT, or RIP not just after it (a REP string instruction stopped by its chunk or
/// the budget). REP iterations beyond the first are added to `chained`, so budget, poll and
/// clock see every retired instruction while `executed` stays the position in the block;
/// REP iterations are bounded by what is left of the call's budget.
pub(crate) extern "C" fn helper_interp(
    ctx: *mut JitCtx,
    plat: *mut PlatRef<'_>,
    insns: *const JitInsn,
    index: u64,
    count: u64,
) -> u64 {
    // SAFETY: as in `helper_load`; `insns` points at `count` consecutive predecoded
    // instructions in a boxed slice the backend keeps, unchanged, as long as the code that
    // passes it.
    let (ctx, p, interp, insns) = unsafe {
        (
            &mut *ctx,
            &mut **plat,
            &mut *(*ctx).interp,
            std::slice::from_raw_parts(insns, count as usize),
        )
    };
    let mut flags = ctx.materialize_flags();
    interp.jit_set_gprs(&ctx.gpr);
    interp.jit_set_rflags(flags);
    interp.jit_set_rip(ctx.rip);
    let gen = interp.jit_ctx_gen();
    let mut code = INTERP_GO_ON;
    for (pos, insn) in (index..).zip(insns) {
        if let Some(c) = ctx.interp_runs.get_mut(insn.mnemonic() as usize) {
            *c += 1;
        }
        let rip = interp.jit_rip();
        let room = ctx.budget.saturating_sub(ctx.chained + pos);
        let step = interp.jit_exec_predecoded(p, insn, room);
        if step.faulted || step.shutdown {
            ctx.executed = pos;
            ctx.chained += step.retired;
            ctx.fault_charge = u64::from(pos == 0 && step.retired == 0);
            code = if step.shutdown {
                EXIT_SHUTDOWN
            } else {
                EXIT_DELIVERED
            } as u64;
            break;
        }
        ctx.executed = pos + 1;
        ctx.chained += step.retired.saturating_sub(1);
        if step.smc {
            code = EXIT_STOP as u64;
            break;
        }
        let after = interp.jit_rflags();
        let changed = flags ^ after;
        flags = after;
        if interp.jit_ctx_gen() != gen
            || changed & !(ARITH_FLAGS | FLAG_DF | FLAG_IF) != 0
            || after & changed & FLAG_IF != 0
            || interp.jit_rip() != rip.wrapping_add(insn.byte_len())
            || interp.jit_halted()
            || interp.jit_single()
        {
            code = EXIT_NEXT as u64;
            break;
        }
    }
    ctx.gpr = interp.jit_gprs();
    ctx.rflags = interp.jit_rflags();
    ctx.rip = interp.jit_rip();
    ctx.seg_base = [
        interp.jit_linear(SegReg::Fs, 0),
        interp.jit_linear(SegReg::Gs, 0),
    ];
    ctx.check_tlb_gen(interp);
    ctx.check_chain(interp);
    code
}

#[cfg(test)]
mod tests {
    use super::{
        tlb_slots, GenTable, JitCtx, RegionSet, GEN_TABLE_SIZE, REGIONS, TLB_EMPTY, TLB_FILLS,
        TLB_FILL_GLOBAL, TLB_FILL_WRITE, TLB_SIZE,
    };
    use pcvm_core::cpu_state::cr;
    use pcvm_core::{CpuBackend, CpuState, SegReg};
    use pcvm_cpu_interp::{Interpreter, JitTlbKey};

    /// The soft-TLB key of a protected-mode CPU at `cpl` with page tables at `cr3`.
    fn key(cpl: u8, cr3: u64) -> JitTlbKey {
        let mut state = CpuState::default();
        state.cr0 |= cr::CR0_PE;
        state.cr3 = cr3;
        let ss = state.seg_mut(SegReg::Ss);
        ss.attributes = (ss.attributes & !(3 << 5)) | (u32::from(cpl) << 5);
        let mut interp = Interpreter::new();
        interp.set_state(&state).unwrap();
        interp.jit_tlb_key()
    }

    fn fill(ctx: &mut JitCtx, slot: usize, write: bool, global: bool) {
        let global = if global { TLB_FILL_GLOBAL } else { 0 };
        if write {
            ctx.tlb_write[slot].tag = (slot as u64) << 12;
            ctx.note_fill(slot as u16 | TLB_FILL_WRITE | global);
        } else {
            ctx.tlb_read[slot].tag = (slot as u64) << 12;
            ctx.note_fill(slot as u16 | global);
        }
    }

    #[test]
    fn pages_sharing_a_first_tlb_slot_get_different_second_ones() {
        // The guest gzip's stack and heap pages that ASLR put 4 MiB-multiples apart.
        let (stack, heap) = (0x7FFD_8EB1_B000, 0x7FA3_69F1_B000);
        assert_eq!(tlb_slots(stack)[0], tlb_slots(heap)[0]);
        assert_ne!(tlb_slots(stack)[1], tlb_slots(heap)[1]);
        for page in [0u64, 0x1000, 0x40_0000, 0x40_1000] {
            let [first, second] = tlb_slots(page);
            assert_ne!(first, second, "{page:#x}");
            assert!(first < TLB_SIZE && second < TLB_SIZE);
        }
    }

    #[test]
    fn region_sets_keep_the_direct_map_apart_from_low_addresses() {
        let mut set = RegionSet::default();
        assert!(set.is_empty());
        set.insert(0x40_0000);
        // Linux's direct map folds onto the same bit as the first GiB; it is not in the set.
        assert!(set.contains(0x3FFF_F000) && !set.contains(0xFFFF_8880_0000_1000));
        // Past REGIONS exact regions, more are kept folded: none is ever lost.
        for i in 1..=REGIONS as u64 + 3 {
            set.insert(i << 30);
        }
        assert!((0..=REGIONS as u64 + 3).all(|i| set.contains(i << 30)));
        assert!(!set.is_empty() && !RegionSet::ALL.is_empty() && RegionSet::ALL.contains(0));
    }

    #[test]
    fn invlpg_purges_soft_tlb_entries_of_its_region_only() {
        let mut ctx = JitCtx::new();
        assert!(ctx.follow_tlb_key(key(3, 0x1000)));
        fill(&mut ctx, 4, false, false);
        ctx.tlb_read[4].tag = 0x40_4000;
        fill(&mut ctx, 8, true, false);
        ctx.tlb_write[8].tag = 0xFFFF_8880_0000_8000;
        let mut purge = RegionSet::default();
        purge.insert(0xFFFF_8880_0123_4000);
        ctx.purge_tlb(&purge);
        assert_eq!(ctx.tlb_read[4].tag, 0x40_4000);
        assert_eq!(ctx.tlb_write[8].tag, TLB_EMPTY);
        // With more fills than remembered, the whole tables are searched.
        for slot in 0..TLB_FILLS + 1 {
            fill(&mut ctx, 100 + slot % 800, false, false);
        }
        ctx.tlb_read[4].tag = 0x40_4000;
        purge = RegionSet::default();
        purge.insert(0x40_0000);
        ctx.purge_tlb(&purge);
        assert_eq!(ctx.tlb_read[4].tag, TLB_EMPTY);
    }

    #[test]
    fn soft_tlb_entries_survive_what_a_hardware_tlb_keeps() {
        let (user, kernel) = (key(3, 0x1000), key(0, 0x1000));
        let (kernel2, other_user) = (key(0, 0x2000), key(3, 0x2000));
        assert!(user.user() && !kernel.user());
        let mut ctx = JitCtx::new();
        assert!(ctx.follow_tlb_key(user));
        fill(&mut ctx, 5, false, false);
        fill(&mut ctx, 7, true, false);
        // Into the kernel: user entries stay valid.
        assert!(!ctx.follow_tlb_key(kernel));
        assert_eq!(ctx.tlb_read[5].tag, 5 << 12);
        fill(&mut ctx, 6, true, false);
        fill(&mut ctx, 9, false, false);
        fill(&mut ctx, 11, false, true);
        // Back to user mode: only the kernel's entries go.
        assert!(!ctx.follow_tlb_key(user));
        assert_eq!(ctx.tlb_read[5].tag, 5 << 12);
        assert_eq!(ctx.tlb_write[7].tag, 7 << 12);
        assert_eq!(ctx.tlb_write[6].tag, TLB_EMPTY);
        assert_eq!(ctx.tlb_read[9].tag, TLB_EMPTY);
        assert_eq!(ctx.tlb_read[11].tag, TLB_EMPTY);
        // A MOV CR3 in the kernel: global entries stay, the rest go.
        assert!(!ctx.follow_tlb_key(kernel));
        fill(&mut ctx, 12, false, true);
        fill(&mut ctx, 13, true, false);
        assert!(!ctx.follow_tlb_key(kernel2));
        assert_eq!(ctx.tlb_read[12].tag, 12 << 12);
        assert_eq!(ctx.tlb_write[13].tag, TLB_EMPTY);
        assert_eq!(
            ctx.tlb_read[5].tag, TLB_EMPTY,
            "the user entry was not global"
        );
        // Back in user mode in the new address space, then a full flush (CR0 changes).
        assert!(!ctx.follow_tlb_key(other_user));
        assert_eq!(ctx.tlb_read[12].tag, TLB_EMPTY, "filled in supervisor mode");
        fill(&mut ctx, 14, false, true);
        let mut state = CpuState::default();
        state.cr0 |= cr::CR0_PE | cr::CR0_WP;
        let mut interp = Interpreter::new();
        interp.set_state(&state).unwrap();
        assert!(ctx.follow_tlb_key(interp.jit_tlb_key()));
        assert_eq!(ctx.tlb_read[14].tag, TLB_EMPTY);
        // More fills than remembered: a flush still clears every one of them.
        for slot in 0..TLB_FILLS + 10 {
            fill(&mut ctx, slot % 1024, slot % 2 == 0, true);
        }
        assert!(ctx.follow_tlb_key(user));
        assert!(ctx.tlb_read.iter().all(|e| e.tag == TLB_EMPTY));
        assert!(ctx.tlb_write.iter().all(|e| e.tag == TLB_EMPTY));
        assert!(ctx.tlb_fills.len == 0 && !ctx.tlb_fills.overflow);
        // A kernel excursion that fills too many: the way out clears everything.
        fill(&mut ctx, 3, false, false);
        assert!(!ctx.follow_tlb_key(kernel));
        for slot in 100..100 + TLB_FILLS + 1 {
            fill(&mut ctx, slot % 1024, false, false);
        }
        assert!(!ctx.follow_tlb_key(user));
        assert!(ctx.tlb_read.iter().all(|e| e.tag == TLB_EMPTY));
    }

    #[test]
    fn a_returning_key_gets_its_generation_back_until_pushed_out() {
        let mut t = GenTable::new();
        let (user, kernel) = (t.gen_for(1u32), t.gen_for(2));
        assert_ne!(user, kernel);
        assert_eq!(t.gen_for(1), user, "back from the kernel: same generation");
        assert_eq!(t.gen_for(2), kernel);
        // Enough new keys push key 1 out: it comes back with a generation never used before.
        let mut seen = vec![user, kernel];
        for k in 3..3 + GEN_TABLE_SIZE as u32 {
            let g = t.gen_for(k);
            assert!(!seen.contains(&g), "fresh generations are new");
            seen.push(g);
        }
        let again = t.gen_for(1);
        assert!(
            !seen.contains(&again),
            "a forgotten key never revives old entries"
        );
    }
}
