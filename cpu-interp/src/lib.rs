//! The reference x86 interpreter: decodes with iced-x86 and executes against the shared
//! [`CpuState`]. Every other backend is checked against it.
//!
//! Structure (who owns what is stated so two people can work on it at once):
//! - [`Interpreter`] (this file): the backend object and the `CpuBackend` impl.
//! - `access`: linear and segmented memory access — segmentation checks (`segment`), then
//!   translation (`mmu`), then RAM/ROM through `GuestMemory` or MMIO through the platform.
//! - `fault`: the [`Fault`] an instruction raises; `exception` delivers it (IVT/IDT).
//! - `flags`: lazy arithmetic flags; `rflags()`/`set_rflags()` are the only way to read or write
//!   RFLAGS as a whole.
//! - `decode_cache`: decoded basic blocks keyed by physical address, invalidated on writes.
//! - `exec/`: one file per instruction family.
//! - `segment`, `mmu`, `exception`, `task`: protected-mode machinery (descriptor loads and checks,
//!   paging and the TLB, interrupt/exception delivery, hardware task switch).
#![forbid(unsafe_code)]

mod access;
mod decode_cache;
mod error;
mod exception;
mod exec;
mod fault;
mod flags;
mod jit_support;
mod mmu;
mod segment;
mod sse;
mod task;
mod x87;

pub use error::{Error, Result};
pub use fault::Fault;
pub use jit_support::{
    BlockPeek, JitBlock, JitCacheKey, JitInsn, JitMode, JitStep, JitSync, JitTlbKey, TlbChange,
};

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use iced_x86::{Decoder, DecoderError, DecoderOptions, Formatter, Instruction, IntelFormatter};
use pcvm_core::cpu_state::flags as fl;
use pcvm_core::memory::PhysRegion;
use pcvm_core::{
    CpuBackend, CpuState, DebugConfig, Kicker, Platform, RunLimit, SegReg, Segment, StopReason,
    SystemRequest, VmExit,
};

use access::AccessKind;
use decode_cache::{block_key, Block, MAX_BLOCK_INSNS};
use exception::EventKind;
use exec::{Decoded, CTX, END, SNAP};

/// Instructions between calls to `Platform::poll` (timers), kicker and NMI checks.
const POLL_INTERVAL: u64 = 2048;

/// Entries of the linear-address block lookup cache.
const JMP_CACHE_SIZE: usize = 4096;

/// [`Interpreter::fetch_insns`]'s slot for instructions that belong to no `jmp_cache` entry.
const NO_SLOT: usize = usize::MAX;

/// One entry of the linear-address block lookup cache (`Interpreter::jmp_cache`): valid while
/// both the code context generation (`Interpreter::jmp_gen`, or `jmp_gen_global` for code
/// on a global page) and the decode cache's generation are unchanged.
#[derive(Clone, Default)]
struct JmpEntry {
    /// Linear address of the block's first byte (`u64::MAX` when empty).
    linear: u64,
    gen: u64,
    code_gen: u64,
    /// The block's [`Block::rip`] restriction.
    rip: u64,
    /// Slab index and key of the block in the decode cache.
    idx: u32,
    key: u64,
    /// The block's instructions (`None` when empty).
    insns: Option<Arc<[Decoded]>>,
}

/// What finding a block by its linear address depends on, besides the decode cache: the
/// code segment (bitness, limit), the privilege level, the mode and paging controls, TLB
/// flushes and the physical memory map. `jmp_cache` survives a context generation bump
/// (an IRET, interrupt or SWAPGS within the kernel) when none of these changed.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct CodeContext {
    cs: Segment,
    cpl: u8,
    rflags_vm: bool,
    cr0: u64,
    cr4: u64,
    efer: u64,
    /// Flushes of global translations too.
    tlb_global_flushes: u64,
    map_generation: u64,
    /// What only code reached through non-global translations depends on as well: a MOV
    /// CR3 leaves global TLB entries in place (SDM Vol. 3A §4.10.4.1), so Linux's switches to
    /// and from the text-poking address space keep the kernel's code lookups.
    local: LocalCodeContext,
}

impl CodeContext {
    /// The same apart from the [`LocalCodeContext`]: entries for code on global pages made
    /// in one are valid in the other.
    fn same_global(&self, other: &CodeContext) -> bool {
        CodeContext {
            local: other.local,
            ..*self
        } == *other
    }
}

/// Code contexts remembered with their `jmp_cache` generations.
const JMP_RECENT: usize = 4;

/// A code context and the generations its `jmp_cache` entries carry.
#[derive(Clone, Copy)]
struct JmpGens {
    context: CodeContext,
    local: u64,
    global: u64,
}

/// The part of [`CodeContext`] a MOV CR3 changes.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct LocalCodeContext {
    cr3: u64,
    tlb_full_flushes: u64,
}

/// The `Interpreter::jmp_regions` bit of the 1 GiB region holding `linear`: the largest page
/// an INVLPG can drop lies within one such region.
#[inline]
fn jmp_region_bit(linear: u64) -> u64 {
    let r = linear >> 30;
    1 << ((r ^ (r >> 6) ^ (r >> 12) ^ (r >> 18) ^ (r >> 24)) & 63)
}

/// Registers saved before an instruction marked `SNAP`, restored if it faults.
#[derive(Clone, Copy, Default)]
struct Snapshot {
    gpr: [u64; 16],
    rflags: u64,
    segments: [Segment; 6],
}

/// The reference interpreter backend.
///
/// The true CPU state lives in `state`, except the arithmetic flags while `flags` holds a lazy
/// result (see `flags.rs`); `rflags()` materializes them.
pub struct Interpreter {
    /// Architectural state (arithmetic flag bits of `state.rflags` are stale while lazy).
    pub(crate) state: CpuState,
    pub(crate) flags: flags::LazyFlags,
    pub(crate) tlb: mmu::Tlb,
    pub(crate) cache: decode_cache::DecodeCache,
    pub(crate) debug: DebugConfig,
    pub(crate) kicker: Kicker,
    /// Instructions retired since creation.
    pub(crate) retired: u64,
    /// Memory map generation the TLB and decode cache were built against.
    pub(crate) map_generation: u64,
    /// A watchpoint matched during the current instruction: (kind, watched address).
    pub(crate) watch_hit: Option<(pcvm_core::WatchKind, u64)>,
    /// RIP of the instruction being executed (its first byte).
    pub(crate) cur_rip: u64,
    /// A store hit a page holding decoded code: end the block and invalidate.
    pub(crate) smc: bool,
    /// The instruction did port or MMIO I/O: check system requests and the memory map.
    pub(crate) io_done: bool,
    /// REP string iterations beyond the first in the current block, counted as retired
    /// instructions.
    pub(crate) rep_extra: u64,
    /// Most REP iterations one visit may run: the remaining instruction budget.
    pub(crate) rep_limit: u64,
    /// DR0–DR3 data/I/O breakpoint matches of the current instruction (DR6 B0–B3 bits).
    pub(crate) dr_hits: u64,
    /// Codes already reported as #UD (logged once each).
    pub(crate) ud_logged: HashSet<u32>,
    /// (virtual-clock ns, TSC) at the last TSC reading (SYS: `exec/system.rs` `tsc_now`).
    pub(crate) tsc_anchor: Option<(u64, u64)>,
    /// `--trace` output: one line per executed instruction.
    trace: Option<Box<dyn Write + Send>>,
    snapshot: Snapshot,
    /// Bumped whenever CS, the mode or the paging context may have changed (instructions
    /// marked `CTX`: system and far instructions, segment loads; event delivery, state
    /// loads): invalidates `jmp_cache`.
    pub(crate) ctx_gen: u64,
    /// Linear RIP → block, valid for one `jmp_gen` and decode-cache generation.
    jmp_cache: Vec<JmpEntry>,
    /// Generations of `jmp_cache` entries valid now: new ones when the [`CodeContext`]
    /// changes to one not seen recently or an INVLPG hits a region holding cached code.
    /// Even: entries for code reached through non-global translations.
    jmp_gen: u64,
    /// Odd: entries for code on global pages (or with paging off), which a MOV CR3 keeps.
    jmp_gen_global: u64,
    /// The `ctx_gen` at which `jmp_context` was last compared with the state.
    jmp_ctx_seen: u64,
    /// The code context `jmp_cache` entries of `jmp_gen` were made in.
    jmp_context: CodeContext,
    /// The contexts before it, newest first: one that comes back (the kernel after a system
    /// call, a process after a task switch) gets its generations and so its entries back.
    jmp_recent: [Option<JmpGens>; JMP_RECENT],
    /// The next unused (even) generation.
    jmp_fresh: u64,
    /// 1 GiB regions (see [`jmp_region_bit`]) holding `jmp_cache` entries of `jmp_gen`.
    jmp_regions: u64,
    /// Debugging or tracing is on: run one instruction at a time.
    debug_active: bool,
    /// Linear page → RAM offset for reads and writes (see `access::RamEntry`).
    pub(crate) rd_cache: Vec<access::RamEntry>,
    pub(crate) wr_cache: Vec<access::RamEntry>,
}

impl Default for Interpreter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interpreter")
            .field("rip", &self.state.rip)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

/// Where the instructions to run next come from.
enum Source {
    /// A cached block: slab index and key.
    Cached(u32, u64),
    /// Decoded for this visit only (MMIO code, an instruction crossing a page).
    Fresh(Vec<Decoded>),
}

impl Interpreter {
    /// A CPU in the RESET state (Intel SDM Vol. 3A §9.1.1).
    pub fn new() -> Self {
        Interpreter {
            state: CpuState::reset(),
            flags: flags::LazyFlags::default(),
            tlb: mmu::Tlb::default(),
            cache: decode_cache::DecodeCache::default(),
            debug: DebugConfig::default(),
            kicker: Kicker::new(),
            retired: 0,
            map_generation: u64::MAX,
            watch_hit: None,
            cur_rip: 0,
            smc: false,
            io_done: false,
            ud_logged: HashSet::new(),
            rep_extra: 0,
            rep_limit: u64::MAX,
            dr_hits: 0,
            tsc_anchor: None,
            trace: None,
            snapshot: Snapshot::default(),
            ctx_gen: 1,
            jmp_cache: vec![
                JmpEntry {
                    linear: u64::MAX,
                    ..JmpEntry::default()
                };
                JMP_CACHE_SIZE
            ],
            jmp_gen: 2,
            jmp_gen_global: 3,
            jmp_recent: [None; JMP_RECENT],
            jmp_fresh: 4,
            jmp_ctx_seen: 0,
            jmp_context: CodeContext::default(),
            jmp_regions: 0,
            debug_active: false,
            rd_cache: vec![access::RAM_ENTRY_EMPTY; access::RAM_CACHE_SIZE],
            wr_cache: vec![access::RAM_ENTRY_EMPTY; access::RAM_CACHE_SIZE],
        }
    }

    /// Write one line per executed instruction (CS:RIP, bytes, Intel-syntax disassembly) to
    /// `out`, or stop tracing with `None`. Tracing runs the interpreter one instruction at a time.
    pub fn set_trace(&mut self, out: Option<Box<dyn Write + Send>>) {
        self.trace = out;
        self.update_debug_active();
    }

    fn update_debug_active(&mut self) {
        self.debug_active = self.trace.is_some()
            || self.debug.single_step
            || !self.debug.breakpoints.is_empty()
            || !self.debug.watchpoints.is_empty();
    }

    /// Drop decoded blocks and translations if the physical memory map changed (PAM, A20).
    fn sync_memory_map(&mut self, p: &dyn Platform) {
        let g = p.memory().map_generation();
        if g != self.map_generation {
            self.map_generation = g;
            self.ctx_gen += 1;
            self.cache.flush();
            self.tlb.flush();
        }
    }

    /// Apply pending code-page invalidations (guest stores and DMA).
    fn sync_code_writes(&mut self, p: &dyn Platform) {
        self.smc = false;
        if p.memory().code_dirty() {
            for off in p.memory().take_code_invalidations() {
                self.cache.invalidate_page(off >> 12);
            }
        }
    }

    /// An interrupt or NMI could be delivered now (wakes a halted CPU).
    fn event_deliverable(&mut self, p: &mut dyn Platform) -> bool {
        if p.take_nmi() {
            self.state.nmi_pending = true;
        }
        (self.state.nmi_pending && !self.state.nmi_blocked)
            || (self.state.rflags & fl::IF != 0
                && (self.state.pending_interrupt.is_some() || p.intr()))
    }

    /// Deliver a pending NMI or external interrupt at an instruction boundary. Returns
    /// `Some(exit)` on shutdown.
    #[inline]
    fn deliver_pending(&mut self, p: &mut dyn Platform) -> Option<VmExit> {
        if self.state.nmi_pending && !self.state.nmi_blocked {
            self.ctx_gen += 1;
            self.state.nmi_pending = false;
            self.state.halted = false;
            if self
                .raise_event(p, fault::vector::NMI, None, EventKind::External)
                .is_err()
            {
                return Some(VmExit::Shutdown);
            }
            return None;
        }
        if self.state.rflags & fl::IF == 0 {
            return None;
        }
        let vector = if let Some(v) = self.state.pending_interrupt.take() {
            Some(v)
        } else if p.intr() {
            p.acknowledge_interrupt()
        } else {
            None
        };
        if let Some(v) = vector {
            self.ctx_gen += 1;
            self.state.halted = false;
            if self.raise_event(p, v, None, EventKind::External).is_err() {
                return Some(VmExit::Shutdown);
            }
        }
        None
    }

    /// Deliver an instruction's fault (escalating per SDM Vol. 3A §6.15).
    fn fault(&mut self, p: &mut dyn Platform, f: Fault) -> Option<VmExit> {
        self.ctx_gen += 1;
        match self.raise(p, f) {
            Ok(()) => None,
            Err(_) => Some(VmExit::Shutdown),
        }
    }

    /// The linear address of CS:RIP, its `jmp_cache` slot, and whether the slot holds the
    /// block to run there.
    #[inline(always)]
    fn jmp_lookup(&mut self) -> (u64, usize, bool) {
        if self.jmp_ctx_seen != self.ctx_gen {
            self.jmp_check_context();
        }
        let linear = self.state.seg(SegReg::Cs).base.wrapping_add(self.state.rip);
        let slot = ((linear ^ (linear >> 10)) as usize) & (JMP_CACHE_SIZE - 1);
        let e = &self.jmp_cache[slot];
        let mut hit = e.linear == linear
            && (e.gen == self.jmp_gen || e.gen == self.jmp_gen_global)
            && (e.rip == decode_cache::ANY_RIP || e.rip == self.state.rip);
        if hit && e.code_gen != self.cache.generation() {
            hit = self.jmp_revalidate(slot);
        }
        (linear, slot, hit)
    }

    /// The context generation moved: drop `jmp_cache` if the code context really changed.
    #[inline(never)]
    fn jmp_check_context(&mut self) {
        self.jmp_ctx_seen = self.ctx_gen;
        let s = &self.state;
        let now = CodeContext {
            cs: *s.seg(SegReg::Cs),
            cpl: s.cpl(),
            rflags_vm: s.rflags & fl::VM != 0,
            cr0: s.cr0,
            cr4: s.cr4,
            efer: s.efer,
            tlb_global_flushes: self.tlb.global_flushes,
            map_generation: self.map_generation,
            local: LocalCodeContext {
                cr3: s.cr3,
                tlb_full_flushes: self.tlb.full_flushes,
            },
        };
        if now == self.jmp_context {
            return;
        }
        let old = JmpGens {
            context: self.jmp_context,
            local: self.jmp_gen,
            global: self.jmp_gen_global,
        };
        // Contexts with the same global part share their global generation (a new one is
        // made only when none is remembered); the local one needs the very same context.
        let known = std::iter::once(old).chain(self.jmp_recent.iter().flatten().copied());
        let (mut local, mut global) = (None, None);
        for g in known {
            if g.context.same_global(&now) {
                global = global.or(Some(g.global));
                if g.context.local == now.local {
                    local = local.or(Some(g.local));
                }
            }
        }
        let fresh = self.jmp_fresh;
        match (local, global) {
            (Some(l), Some(g)) => (self.jmp_gen, self.jmp_gen_global) = (l, g),
            (_, Some(g)) => {
                // Code on non-global pages was made in another address space.
                self.jmp_fresh += 2;
                (self.jmp_gen, self.jmp_gen_global) = (fresh, g);
            }
            _ => {
                self.jmp_fresh += 2;
                (self.jmp_gen, self.jmp_gen_global) = (fresh, fresh + 1);
            }
        }
        let mut recent = [None; JMP_RECENT];
        let kept = self
            .jmp_recent
            .iter()
            .flatten()
            .filter(|g| g.context != old.context && g.context != now);
        for (slot, g) in recent.iter_mut().zip(std::iter::once(&old).chain(kept)) {
            *slot = Some(*g);
        }
        self.jmp_recent = recent;
        self.jmp_context = now;
    }

    /// Invalidate every `jmp_cache` entry, of every remembered context too.
    fn jmp_drop_all(&mut self) {
        self.jmp_gen = self.jmp_fresh;
        self.jmp_gen_global = self.jmp_fresh + 1;
        self.jmp_fresh += 2;
        self.jmp_recent = [None; JMP_RECENT];
        self.jmp_regions = 0;
    }

    /// The translation of the code page holding `linear` outlives a MOV CR3: paging is off,
    /// or the TLB holds it as a global translation.
    fn code_page_global(&self, linear: u64) -> bool {
        self.state.cr0 & pcvm_core::cpu_state::cr::CR0_PG == 0 || self.tlb.is_global(linear)
    }

    /// INVLPG of `linear`: drop `jmp_cache` if it may hold code translated through that page.
    pub(crate) fn jmp_invalidate(&mut self, linear: u64) {
        if self.jmp_regions & jmp_region_bit(linear) != 0 {
            self.jmp_drop_all();
        }
    }

    /// Some block was dropped since `jmp_cache` slot `slot` was filled: it is still valid if
    /// its block is still the live one at the same slab index.
    #[cold]
    fn jmp_revalidate(&mut self, slot: usize) -> bool {
        let generation = self.cache.generation();
        let e = &mut self.jmp_cache[slot];
        let live = match (self.cache.block(e.idx), &e.insns) {
            (Some(b), Some(insns)) => b.key == e.key && Arc::ptr_eq(&b.insns, insns),
            _ => false,
        };
        if live {
            e.code_gen = generation;
        }
        live
    }

    /// The instructions to run at the current CS:RIP and the `jmp_cache` slot they were taken
    /// from ([`NO_SLOT`] for code decoded for this visit only); give them back with
    /// [`Self::return_insns`]. Taking them out of the slot (a move, not a reference count
    /// update) lets handlers borrow the interpreter mutably while the block runs. The hit
    /// is inlined into the run loop so its result stays in registers; misses go out of line.
    #[inline(always)]
    fn fetch_insns(
        &mut self,
        p: &mut dyn Platform,
    ) -> std::result::Result<(Arc<[Decoded]>, usize), Fault> {
        let (linear, slot, hit) = self.jmp_lookup();
        if hit {
            if let Some(insns) = self.jmp_cache[slot].insns.take() {
                return Ok((insns, slot));
            }
        }
        self.fetch_insns_miss(p, linear, slot)
    }

    /// [`Self::fetch_insns`] after a `jmp_cache` miss.
    #[inline(never)]
    fn fetch_insns_miss(
        &mut self,
        p: &mut dyn Platform,
        linear: u64,
        slot: usize,
    ) -> std::result::Result<(Arc<[Decoded]>, usize), Fault> {
        match self.fetch_block_miss(p, linear, slot)? {
            Source::Cached(idx, _) => match self.jmp_cache[slot].insns.take() {
                Some(insns) => Ok((insns, slot)),
                // Not remembered (cannot happen for a live block): run the slab's copy.
                None => Ok((
                    self.cache
                        .block(idx)
                        .map_or_else(|| Arc::from(Vec::new()), |b| Arc::clone(&b.insns)),
                    NO_SLOT,
                )),
            },
            Source::Fresh(v) => Ok((Arc::from(v), NO_SLOT)),
        }
    }

    /// Give instructions from [`Self::fetch_insns`] back to their `jmp_cache` slot.
    #[inline(always)]
    fn return_insns(&mut self, insns: Arc<[Decoded]>, slot: usize) {
        if let Some(e) = self.jmp_cache.get_mut(slot) {
            if e.insns.is_none() {
                e.insns = Some(insns);
            }
        }
    }

    /// The block at the current CS:RIP: cached (slab index and key) or decoded for this visit.
    #[inline]
    fn fetch_block(&mut self, p: &mut dyn Platform) -> std::result::Result<Source, Fault> {
        let (linear, slot, hit) = self.jmp_lookup();
        if hit {
            let e = &self.jmp_cache[slot];
            return Ok(Source::Cached(e.idx, e.key));
        }
        self.fetch_block_miss(p, linear, slot)
    }

    /// Look the block at CS:RIP up or decode it, and remember a cached one in `jmp_cache`
    /// slot `slot` for `linear`.
    #[inline(never)]
    fn fetch_block_miss(
        &mut self,
        p: &mut dyn Platform,
        linear: u64,
        slot: usize,
    ) -> std::result::Result<Source, Fault> {
        let src = self.fetch_block_slow(p)?;
        if let Source::Cached(idx, key) = src {
            if let Some(b) = self.cache.block(idx) {
                self.jmp_regions |= jmp_region_bit(linear);
                self.jmp_cache[slot] = JmpEntry {
                    linear,
                    gen: if self.code_page_global(linear) {
                        self.jmp_gen_global
                    } else {
                        self.jmp_gen
                    },
                    code_gen: self.cache.generation(),
                    rip: b.rip,
                    idx,
                    key,
                    insns: Some(Arc::clone(&b.insns)),
                };
            }
        }
        Ok(src)
    }

    fn fetch_block_slow(&mut self, p: &mut dyn Platform) -> std::result::Result<Source, Fault> {
        let bitness = self.state.code_bitness();
        let rip = self.state.rip;
        let cs = *self.state.seg(SegReg::Cs);
        if bitness != 64 && rip > u64::from(cs.limit) {
            return Err(Fault::gp(0));
        }
        if bitness == 64 && !segment::is_canonical(rip) {
            return Err(Fault::gp(0));
        }
        let linear = self.state.linear_rip();
        let phys = self.translate(p, linear, AccessKind::Execute)?;
        let key = block_key(phys, bitness);
        if let Some((idx, b)) = self
            .cache
            .lookup(key)
            .and_then(|idx| Some((idx, self.cache.block(idx)?)))
        {
            let len = u64::from(b.byte_len);
            let end = rip.wrapping_add(len).wrapping_sub(1);
            let reusable = if bitness == 64 {
                b.rip == decode_cache::ANY_RIP || b.rip == rip
            } else {
                end <= u64::from(cs.limit) && (bitness == 32 || end <= 0xFFFF)
            };
            if reusable {
                return Ok(Source::Cached(idx, key));
            }
        }
        // Bytes available before the page end, the CS limit and (16-bit code) the IP wrap.
        let page_room = 4096 - (linear & 0xFFF);
        let mut seg_room = if bitness == 64 {
            u64::MAX
        } else {
            u64::from(cs.limit) - rip + 1
        };
        if bitness == 16 {
            seg_room = seg_room.min(0x1_0000 - (rip & 0xFFFF));
        }
        let room = page_room.min(seg_room) as usize;
        let region = p.memory().classify(phys, false);
        let cacheable = matches!(region, PhysRegion::Ram(_) | PhysRegion::Rom { .. });
        let mut buf = [0u8; 4096];
        let first_len = if cacheable { room } else { room.min(15) };
        self.phys_read(p, phys, &mut buf[..first_len]);
        let mut insns = Vec::new();
        let mut decoder = Decoder::with_ip(bitness, &buf[..first_len], rip, DecoderOptions::NONE);
        let mut insn = Instruction::default();
        let mut pos = 0usize;
        let mut crossing = false;
        while decoder.can_decode() {
            decoder.decode_out(&mut insn);
            if decoder.last_error() == DecoderError::NoMoreBytes {
                if insns.is_empty() {
                    crossing = true;
                }
                break;
            }
            let len = insn.len();
            let d = self.predecode(&insn, bitness, &buf[pos..first_len]);
            pos += len;
            let end = d.flags & END != 0;
            insns.push(d);
            if end || insns.len() >= MAX_BLOCK_INSNS || !cacheable {
                break;
            }
        }
        if insns.is_empty() && !crossing {
            crossing = true;
        }
        if crossing {
            // The first instruction runs past the page end (or the fetch window): fetch up to
            // 15 bytes across it, or fault if the CS limit / IP wrap cuts it short.
            let avail = seg_room.min(15) as usize;
            let mut bytes = [0u8; 15];
            let in_first = first_len.min(avail);
            bytes[..in_first].copy_from_slice(&buf[..in_first]);
            if avail > in_first {
                let next_linear = self.wrap_linear(linear.wrapping_add(in_first as u64));
                let phys2 = self.translate(p, next_linear, AccessKind::Execute)?;
                self.phys_read(p, phys2, &mut bytes[in_first..avail]);
            }
            let mut decoder = Decoder::with_ip(bitness, &bytes[..avail], rip, DecoderOptions::NONE);
            decoder.decode_out(&mut insn);
            if decoder.last_error() == DecoderError::NoMoreBytes {
                // Instruction fetch beyond the CS limit or the 16-bit IP wrap, or an
                // instruction of more than 15 bytes.
                return Err(Fault::gp(0));
            }
            let d = self.predecode(&insn, bitness, &bytes[..avail]);
            return Ok(Source::Fresh(vec![d]));
        }
        if !cacheable {
            return Ok(Source::Fresh(insns));
        }
        let ram_page = match region {
            PhysRegion::Ram(off) => {
                p.memory().mark_code_page(off);
                off >> 12
            }
            _ => u64::MAX,
        };
        // Handlers of RIP-relative operands that go through the iced instruction (system,
        // far) see the RIP it was decoded at: such a block serves only that RIP. Everything
        // else adds the displacement to the current RIP and runs anywhere.
        let rip_bound = insns
            .iter()
            .any(|d| d.base == exec::RIP_BASE && d.flags & exec::INSN_ADDR != 0);
        let idx = self.cache.insert(Block {
            key,
            insns: Arc::from(insns),
            byte_len: pos as u32,
            ram_page,
            rip: if rip_bound {
                rip
            } else {
                decode_cache::ANY_RIP
            },
        });
        Ok(Source::Cached(idx, key))
    }

    /// Predecode one instruction (`bytes` starts at it and may run past it), turning an
    /// invalid over-long instruction into #GP(0).
    fn predecode(&self, insn: &Instruction, bitness: u32, bytes: &[u8]) -> Decoded {
        let mut d = Decoded::new(insn, bitness, bytes);
        if insn.is_invalid() && exec::longer_than_15(bytes, bitness) {
            d.handler = exec::too_long;
        }
        d
    }

    /// Write the trace line for the instruction at CS:RIP.
    fn trace_insn(&mut self, p: &mut dyn Platform, d: &Decoded) {
        if self.trace.is_none() {
            return;
        }
        let mut bytes = [0u8; 15];
        let len = usize::from(d.len).min(15);
        let lin = self.state.linear_rip();
        let hex = match self.probe_translate(p, lin) {
            Some(_)
                if self
                    .read_linear(p, lin, &mut bytes[..len], AccessKind::Execute)
                    .is_ok() =>
            {
                bytes[..len]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            }
            _ => String::from("??"),
        };
        let Some(out) = self.trace.as_mut() else {
            return;
        };
        let mut text = String::new();
        let mut fmt = IntelFormatter::new();
        fmt.format(&d.insn, &mut text);
        let _ = writeln!(
            out,
            "{:04x}:{:08x} {:<30} {}",
            self.state.seg(SegReg::Cs).selector,
            self.state.rip,
            hex,
            text
        );
    }

    fn take_snapshot(&mut self) {
        self.snapshot = Snapshot {
            gpr: self.state.gpr,
            rflags: self.rflags(),
            segments: self.state.segments,
        };
    }

    fn restore_snapshot(&mut self) {
        self.state.gpr = self.snapshot.gpr;
        self.set_rflags(self.snapshot.rflags);
        self.state.segments = self.snapshot.segments;
    }

    /// Execute `insns` in order until one faults or stores into cached code; returns the
    /// instructions completed and the fault. With `rep_limit_at_end`, a block-ending
    /// instruction (the only place a REP string op can be) may iterate for what is left of
    /// `budget`.
    #[inline(always)]
    fn exec_run(
        &mut self,
        p: &mut dyn Platform,
        insns: &[Decoded],
        budget: u64,
        ip_mask: u64,
        rep_limit_at_end: bool,
    ) -> (u64, Option<Fault>) {
        // Only a block's last instruction can end it (and be a REP string instruction): it
        // runs after all the others, with what is left of the budget.
        if rep_limit_at_end {
            if let Some(last) = insns.last() {
                if last.flags & END != 0 {
                    self.rep_limit = (budget - (insns.len() as u64 - 1)).max(1);
                }
            }
        }
        let mut executed = 0u64;
        for d in insns {
            if let Err(f) = self.exec_one(p, d, ip_mask) {
                return (executed, Some(f));
            }
            executed += 1;
            if self.smc {
                break;
            }
        }
        (executed, None)
    }

    /// Execute one decoded instruction at the current RIP. On a fault the state is restored
    /// to the instruction's start (REP progress excepted) and the fault returned.
    #[inline(always)]
    fn exec_one(
        &mut self,
        p: &mut dyn Platform,
        d: &Decoded,
        ip_mask: u64,
    ) -> std::result::Result<(), Fault> {
        let start = self.state.rip;
        self.cur_rip = start;
        self.state.rip = start.wrapping_add(u64::from(d.len)) & ip_mask;
        if d.flags & SNAP != 0 {
            self.take_snapshot();
        }
        let r = (d.handler)(self, p, d);
        if d.flags & CTX != 0 {
            // Far/system instructions and segment loads may change CS, the mode or paging.
            self.ctx_gen += 1;
        }
        match r {
            Ok(()) => Ok(()),
            Err(f) => {
                if d.flags & SNAP != 0 {
                    self.restore_snapshot();
                }
                self.state.rip = start;
                self.state.halted = false;
                Err(f)
            }
        }
    }

    /// Whether instructions must run one at a time (debugging, tracing, TF/RF, interrupt
    /// shadows).
    #[inline]
    fn needs_single(&self) -> bool {
        self.debug_active
            || self.state.rflags & (fl::TF | fl::RF) != 0
            || self.state.dr[7] & 0xFF != 0
            || self.state.sti_shadow
            || self.state.mov_ss_shadow
    }

    fn run_inner(&mut self, p: &mut dyn Platform, limit: RunLimit) -> VmExit {
        let mut budget = match limit {
            RunLimit::Unbounded => u64::MAX,
            RunLimit::Instructions(n) => n,
        };
        self.sync_memory_map(p);
        self.sync_code_writes(p);
        if self.state.halted {
            p.poll();
            if !self.event_deliverable(p) {
                return VmExit::Halted;
            }
        }
        let mut since_poll = 0u64;
        let mut first = true;
        let mut ip_mask_gen = 0u64;
        let mut ip_mask = 0xFFFFu64;
        loop {
            // --- Instruction boundary: housekeeping and events. ---
            if since_poll >= POLL_INTERVAL || self.io_done {
                if since_poll > 0 {
                    p.clock().add_instructions(since_poll);
                    since_poll = 0;
                }
                self.io_done = false;
                p.poll();
                match p.system_request() {
                    Some(SystemRequest::Reset) => return VmExit::Reset,
                    Some(SystemRequest::PowerOff(_)) => return VmExit::PowerOff,
                    None => {}
                }
                if self.kicker.take() {
                    return VmExit::Kicked;
                }
                if p.take_nmi() {
                    self.state.nmi_pending = true;
                }
                self.sync_memory_map(p);
                self.sync_code_writes(p);
            }
            if self.smc {
                self.sync_code_writes(p);
            }
            let shadow = self.state.sti_shadow || self.state.mov_ss_shadow;
            if !shadow {
                if let Some(exit) = self.deliver_pending(p) {
                    return exit;
                }
            }
            if self.state.halted {
                p.clock().add_instructions(since_poll);
                return VmExit::Halted;
            }
            if budget == 0 {
                p.clock().add_instructions(since_poll);
                return VmExit::BudgetExhausted;
            }
            if !first && !self.debug.breakpoints.is_empty() {
                let lin = self.state.linear_rip();
                if self.debug.breakpoints.iter().any(|b| b.addr == lin) {
                    p.clock().add_instructions(since_poll);
                    return VmExit::Debug(StopReason::Breakpoint(lin));
                }
            }
            // --- Fetch. ---
            let (insns, slot) = match self.fetch_insns(p) {
                Ok(s) => s,
                Err(f) => {
                    if let Some(exit) = self.fault(p, f) {
                        return exit;
                    }
                    first = false;
                    continue;
                }
            };
            if ip_mask_gen != self.ctx_gen {
                ip_mask_gen = self.ctx_gen;
                ip_mask = match self.state.code_bitness() {
                    16 => 0xFFFF,
                    32 => 0xFFFF_FFFF,
                    _ => u64::MAX,
                };
            }
            // --- Execute. ---
            self.rep_limit = budget.max(1);
            let single = self.needs_single();
            let mut fault = None;
            let mut executed = 0u64;
            if single {
                if let Some(d) = insns.first() {
                    if shadow {
                        self.state.sti_shadow = false;
                        self.state.mov_ss_shadow = false;
                    }
                    self.trace_insn(p, d);
                    let tf = self.state.rflags & fl::TF != 0;
                    let rf = self.state.rflags & fl::RF != 0;
                    self.dr_hits = 0;
                    // DR0–DR3 instruction breakpoints: a fault before the instruction,
                    // suppressed by RF (SDM Vol. 3A §17.3.1.1).
                    let bp_hits = if rf {
                        0
                    } else {
                        self.debug_register_hits(self.state.linear_rip(), 1, AccessKind::Execute)
                    };
                    let outcome = if bp_hits != 0 {
                        self.state.dr[6] = (self.state.dr[6] & !0xF) | bp_hits;
                        Err(Fault::new(fault::vector::DB))
                    } else {
                        self.exec_one(p, d, ip_mask)
                    };
                    match outcome {
                        Ok(()) => {
                            executed = 1;
                            if rf
                                && !matches!(
                                    d.insn.mnemonic(),
                                    iced_x86::Mnemonic::Iretd | iced_x86::Mnemonic::Iretq
                                )
                            {
                                self.state.rflags &= !fl::RF;
                            }
                            let step = tf && !self.state.mov_ss_shadow && !is_software_interrupt(d);
                            if step || self.dr_hits != 0 {
                                // Single-step and data/I/O breakpoint traps after the
                                // instruction (SDM Vol. 3A §17.3.1.2, §17.3.1.4): DR6.BS
                                // and B0–B3, then #DB as a trap.
                                let mut dr6 = self.state.dr[6] & !0xF;
                                if step {
                                    dr6 |= 1 << 14;
                                }
                                self.state.dr[6] = dr6 | self.dr_hits;
                                self.dr_hits = 0;
                                fault = Some(Fault::new(fault::vector::DB));
                            }
                        }
                        Err(f) => fault = Some(f),
                    }
                }
            } else {
                let n = (insns.len() as u64).min(budget) as usize;
                (executed, fault) = self.exec_run(p, &insns[..n], budget, ip_mask, true);
            }
            self.return_insns(insns, slot);
            executed += std::mem::take(&mut self.rep_extra);
            self.retired += executed;
            since_poll += executed;
            budget -= executed.min(budget);
            if let Some(f) = fault {
                // A fault counts as the instruction's completion for budget purposes so a
                // faulting loop still ends.
                if executed == 0 {
                    budget = budget.saturating_sub(1);
                    since_poll += 1;
                }
                if let Some(exit) = self.fault(p, f) {
                    p.clock().add_instructions(since_poll);
                    return exit;
                }
            }
            first = false;
            if single {
                if let Some((kind, addr)) = self.watch_hit.take() {
                    p.clock().add_instructions(since_poll);
                    return VmExit::Debug(StopReason::Watchpoint { kind, addr });
                }
                if self.debug.single_step {
                    p.clock().add_instructions(since_poll);
                    return VmExit::Debug(StopReason::Step);
                }
            }
        }
    }
}

/// INT n / INT3 / INTO / INT1 clear TF on entry to the handler; no single-step trap follows.
fn is_software_interrupt(d: &Decoded) -> bool {
    use iced_x86::Mnemonic as M;
    matches!(d.insn.mnemonic(), M::Int | M::Int3 | M::Into | M::Int1)
}

impl CpuBackend for Interpreter {
    fn name(&self) -> &'static str {
        "interp"
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        Some(self.guest_cpuid(leaf, subleaf))
    }

    fn run(&mut self, platform: &mut dyn Platform, limit: RunLimit) -> pcvm_core::Result<VmExit> {
        Ok(self.run_inner(platform, limit))
    }

    fn state(&mut self) -> pcvm_core::Result<CpuState> {
        let mut s = self.state.clone();
        s.rflags = self.rflags();
        Ok(s)
    }

    fn set_state(&mut self, state: &CpuState) -> pcvm_core::Result<()> {
        state.check_version()?;
        self.state = state.clone();
        self.flags = flags::LazyFlags::default();
        self.set_rflags(state.rflags);
        self.tlb.flush();
        self.ctx_gen += 1;
        Ok(())
    }

    fn set_debug(&mut self, config: &DebugConfig) -> pcvm_core::Result<()> {
        self.debug = config.clone();
        self.update_debug_active();
        Ok(())
    }

    fn translate(
        &mut self,
        platform: &dyn Platform,
        linear: u64,
    ) -> pcvm_core::Result<Option<u64>> {
        Ok(self.probe_translate(platform, linear))
    }

    fn kicker(&self) -> Kicker {
        self.kicker.clone()
    }

    fn flush_caches(&mut self) {
        self.ctx_gen += 1;
        self.cache.flush();
        self.tlb.flush();
    }

    fn instructions_retired(&self) -> u64 {
        self.retired
    }
}

#[cfg(test)]
mod tests {
    //! The run loop through the backend trait, in real mode: block cache and self-modifying
    //! code, interrupts and HLT, debug stops, TF, budgets, precise faults.
    use std::sync::{Arc, Mutex};

    use pcvm_core::cpu_state::gpr;
    use pcvm_core::{
        Board, Breakpoint, ClockMode, GuestMemory, InterruptController, VirtualClock, WatchKind,
        Watchpoint,
    };

    use super::*;

    const CODE: u64 = 0x1000;

    /// A board with `code` at 0x100:0000 and every IVT vector v pointing at
    /// `mov al, v; hlt` at 0:0x500+4v.
    fn setup(code: &[u8]) -> (Interpreter, Board) {
        let mem = GuestMemory::pc(2 << 20).expect("memory");
        let b = Board::new(
            Arc::new(mem),
            VirtualClock::new(ClockMode::InstructionCount {
                ns_per_instruction: 1,
            }),
        );
        for v in 0..256u64 {
            let handler = 0x500 + v * 4;
            let entry = [(handler & 0xFF) as u8, (handler >> 8) as u8, 0, 0];
            b.memory.write_phys(v * 4, &entry).expect("ivt");
            b.memory
                .write_phys(handler, &[0xB0, v as u8, 0xF4])
                .expect("handler");
        }
        b.memory.write_phys(CODE, code).expect("code");
        let mut s = CpuState::reset();
        *s.seg_mut(SegReg::Cs) = Segment {
            attributes: 0x9B,
            ..Segment::real_mode(0x100)
        };
        for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss] {
            *s.seg_mut(seg) = Segment::real_mode(0x100);
        }
        s.rip = 0;
        s.gpr[gpr::RSP] = 0x8000;
        s.gpr[gpr::RDX] = 0;
        let mut cpu = Interpreter::new();
        cpu.set_state(&s).expect("state");
        (cpu, b)
    }

    fn run(cpu: &mut Interpreter, b: &mut Board) -> VmExit {
        cpu.run(b, RunLimit::Instructions(100_000)).expect("run")
    }

    /// AL as set by the IVT handler stub: which vector was delivered.
    fn al(cpu: &mut Interpreter) -> u8 {
        cpu.state().expect("state").gpr[gpr::RAX] as u8
    }

    #[test]
    fn self_modifying_code_in_the_same_block() {
        // mov byte [8], 0x40 (INC AX) patches the NOP at offset 8 of this very block.
        let code = [0xC6, 0x06, 0x08, 0x00, 0x40, 0x90, 0x90, 0x90, 0x90, 0xF4];
        let (mut cpu, mut b) = setup(&code);
        assert_eq!(run(&mut cpu, &mut b), VmExit::Halted);
        assert_eq!(cpu.state().unwrap().gpr[gpr::RAX] & 0xFFFF, 1);
        // Run the patched code again from the cache: still INC AX.
        let mut s = cpu.state().unwrap();
        s.rip = 0;
        s.halted = false;
        cpu.set_state(&s).unwrap();
        assert_eq!(run(&mut cpu, &mut b), VmExit::Halted);
        assert_eq!(cpu.state().unwrap().gpr[gpr::RAX] & 0xFFFF, 2);
    }

    #[test]
    fn dma_style_write_invalidates_cached_block() {
        let (mut cpu, mut b) = setup(&[0x40, 0xF4]); // inc ax; hlt
        run(&mut cpu, &mut b);
        b.memory.write_phys(CODE, &[0x48]).unwrap(); // dec ax
        let mut s = cpu.state().unwrap();
        s.rip = 0;
        s.halted = false;
        cpu.set_state(&s).unwrap();
        run(&mut cpu, &mut b);
        assert_eq!(cpu.state().unwrap().gpr[gpr::RAX] & 0xFFFF, 0);
    }

    struct FixedVector(u8);
    impl InterruptController for FixedVector {
        fn acknowledge(&mut self) -> Option<u8> {
            Some(self.0)
        }
    }

    #[test]
    fn interrupt_wakes_hlt_and_is_delivered_through_the_ivt() {
        let (mut cpu, mut b) = setup(&[0xFB, 0xF4, 0xF4]); // sti; hlt; hlt
        assert_eq!(run(&mut cpu, &mut b), VmExit::Halted);
        assert_eq!(
            run(&mut cpu, &mut b),
            VmExit::Halted,
            "no interrupt: stays halted"
        );
        b.interrupt_controller = Some(Arc::new(Mutex::new(FixedVector(0x21))));
        b.intr.set(true);
        assert_eq!(run(&mut cpu, &mut b), VmExit::Halted);
        assert_eq!(al(&mut cpu), 0x21);
        // The frame holds the address after the HLT.
        let s = cpu.state().unwrap();
        let mut ret = [0u8; 2];
        b.memory.read_phys(0x1000 + 0x8000 - 6, &mut ret).unwrap();
        assert_eq!(u16::from_le_bytes(ret), 2);
        assert_eq!(s.rflags & fl::IF, 0, "IF cleared by delivery");
    }

    #[test]
    fn sti_shadow_delays_the_interrupt_by_one_instruction() {
        // sti; inc bx; hlt — the interrupt is pending from the start.
        let (mut cpu, mut b) = setup(&[0xFB, 0x43, 0xF4]);
        b.interrupt_controller = Some(Arc::new(Mutex::new(FixedVector(0x30))));
        b.intr.set(true);
        assert_eq!(run(&mut cpu, &mut b), VmExit::Halted);
        let s = cpu.state().unwrap();
        assert_eq!(al(&mut cpu), 0x30);
        assert_eq!(
            s.gpr[gpr::RBX] & 0xFFFF,
            1,
            "INC BX ran inside the STI shadow"
        );
    }

    #[test]
    fn breakpoint_stops_before_the_instruction_and_continue_resumes() {
        let (mut cpu, mut b) = setup(&[0x40, 0x40, 0x40, 0xF4]);
        cpu.set_debug(&DebugConfig {
            breakpoints: vec![Breakpoint { addr: CODE + 2 }],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            run(&mut cpu, &mut b),
            VmExit::Debug(StopReason::Breakpoint(CODE + 2))
        );
        let s = cpu.state().unwrap();
        assert_eq!((s.rip, s.gpr[gpr::RAX] & 0xFFFF), (2, 2));
        assert_eq!(run(&mut cpu, &mut b), VmExit::Halted);
        assert_eq!(cpu.state().unwrap().gpr[gpr::RAX] & 0xFFFF, 3);
    }

    #[test]
    fn single_step_and_watchpoint() {
        // inc ax; mov [0x100], ax; hlt
        let (mut cpu, mut b) = setup(&[0x40, 0xA3, 0x00, 0x01, 0xF4]);
        cpu.set_debug(&DebugConfig {
            single_step: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(run(&mut cpu, &mut b), VmExit::Debug(StopReason::Step));
        assert_eq!(cpu.state().unwrap().rip, 1);
        cpu.set_debug(&DebugConfig {
            watchpoints: vec![Watchpoint {
                addr: CODE + 0x100,
                len: 2,
                kind: WatchKind::Write,
            }],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            run(&mut cpu, &mut b),
            VmExit::Debug(StopReason::Watchpoint {
                kind: WatchKind::Write,
                addr: CODE + 0x100
            })
        );
        assert_eq!(cpu.state().unwrap().rip, 4, "stops after the store");
    }

    #[test]
    fn trap_flag_raises_db_after_one_instruction() {
        // pushf; pop ax; or ah, 1; push ax; popf; inc bx; inc bx; hlt
        let code = [0x9C, 0x58, 0x80, 0xCC, 0x01, 0x50, 0x9D, 0x43, 0x43, 0xF4];
        let (mut cpu, mut b) = setup(&code);
        assert_eq!(run(&mut cpu, &mut b), VmExit::Halted);
        assert_eq!(al(&mut cpu), 1, "#DB delivered");
        let s = cpu.state().unwrap();
        assert_eq!(
            s.gpr[gpr::RBX] & 0xFFFF,
            1,
            "one instruction after POPF set TF"
        );
        assert_ne!(s.dr[6] & (1 << 14), 0, "DR6.BS");
    }

    #[test]
    fn budget_counts_instructions_exactly() {
        let (mut cpu, mut b) = setup(&[0x40, 0xEB, 0xFD]); // l: inc ax; jmp l
        assert_eq!(
            cpu.run(&mut b, RunLimit::Instructions(7)).unwrap(),
            VmExit::BudgetExhausted
        );
        assert_eq!(cpu.instructions_retired(), 7);
        assert_eq!(cpu.state().unwrap().gpr[gpr::RAX] & 0xFFFF, 4);
    }

    #[test]
    fn rep_iterations_respect_the_budget() {
        // mov cx, 1000; mov di, 0x400; rep stosb; hlt
        let code = [0xB9, 0xE8, 0x03, 0xBF, 0x00, 0x04, 0xF3, 0xAA, 0xF4];
        let (mut cpu, mut b) = setup(&code);
        assert_eq!(
            cpu.run(&mut b, RunLimit::Instructions(102)).unwrap(),
            VmExit::BudgetExhausted
        );
        assert_eq!(cpu.instructions_retired(), 102);
        let s = cpu.state().unwrap();
        assert_eq!(s.gpr[gpr::RCX] & 0xFFFF, 900, "100 iterations done");
        assert_eq!(s.rip, 6, "RIP stays at the REP instruction");
        assert_eq!(run(&mut cpu, &mut b), VmExit::Halted);
        let s = cpu.state().unwrap();
        assert_eq!(
            (s.gpr[gpr::RCX] & 0xFFFF, s.rip, cpu.instructions_retired()),
            (0, 9, 2 + 1000 + 1)
        );
    }

    #[test]
    fn kicker_stops_the_run() {
        let (mut cpu, mut b) = setup(&[0xEB, 0xFE]); // jmp $
        cpu.kicker().kick();
        assert_eq!(
            cpu.run(&mut b, RunLimit::Unbounded).unwrap(),
            VmExit::Kicked
        );
    }

    #[test]
    fn faults_are_precise_and_vectored() {
        // div bl with BL = 0 → #DE; the pushed IP is the DIV itself.
        let (mut cpu, mut b) = setup(&[0xF6, 0xF3, 0xF4]);
        assert_eq!(run(&mut cpu, &mut b), VmExit::Halted);
        assert_eq!(al(&mut cpu), 0);
        let mut ret = [0u8; 2];
        b.memory.read_phys(0x1000 + 0x8000 - 6, &mut ret).unwrap();
        assert_eq!(u16::from_le_bytes(ret), 0);
        // LOCK on a register destination → #UD.
        let (mut cpu, mut b) = setup(&[0xF0, 0x01, 0xC0, 0xF4]);
        run(&mut cpu, &mut b);
        assert_eq!(al(&mut cpu), 6);
        // 16 bytes: 15 prefixes + NOP → #GP(0).
        let mut long = vec![0x26; 15];
        long.extend_from_slice(&[0x90, 0xF4]);
        let (mut cpu, mut b) = setup(&long);
        run(&mut cpu, &mut b);
        assert_eq!(al(&mut cpu), 13);
        // The same with 14 prefixes is a valid 15-byte NOP.
        let mut ok = vec![0x26; 14];
        ok.extend_from_slice(&[0x90, 0xF4]);
        let (mut cpu, mut b) = setup(&ok);
        run(&mut cpu, &mut b);
        assert_eq!(cpu.state().unwrap().rip, 16);
    }

    /// A `Write` that appends to a shared buffer.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn trace_writes_one_line_per_instruction() {
        let (mut cpu, mut b) = setup(&[0x40, 0x43, 0xF4]); // inc ax; inc bx; hlt
        let out = SharedBuf::default();
        cpu.set_trace(Some(Box::new(out.clone())));
        assert_eq!(run(&mut cpu, &mut b), VmExit::Halted);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("0100:00000000 40"), "{}", lines[0]);
        assert!(lines[1].contains("inc bx"), "{}", lines[1]);
        assert!(lines[2].contains("hlt"), "{}", lines[2]);
    }

    #[test]
    fn rep_movsb_copies_and_counts_iterations() {
        // mov cx, 300; mov si, 0x200; mov di, 0x600; rep movsb; hlt
        let code = [
            0xB9, 0x2C, 0x01, 0xBE, 0x00, 0x02, 0xBF, 0x00, 0x06, 0xF3, 0xA4, 0xF4,
        ];
        let (mut cpu, mut b) = setup(&code);
        let src: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        b.memory.write_phys(0x1200, &src).unwrap();
        assert_eq!(run(&mut cpu, &mut b), VmExit::Halted);
        let mut dst = vec![0u8; 300];
        b.memory.read_phys(0x1600, &mut dst).unwrap();
        assert_eq!(dst, src);
        let s = cpu.state().unwrap();
        assert_eq!(s.gpr[gpr::RCX] & 0xFFFF, 0);
        assert_eq!(s.gpr[gpr::RSI] & 0xFFFF, 0x200 + 300);
        assert!(cpu.instructions_retired() >= 5 + 299);
    }
}
