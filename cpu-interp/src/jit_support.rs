//! The narrow interface the JIT backend (`pcvm-cpu-jit`) uses to share this interpreter's
//! state and semantics (owned by JIT).
//!
//! The JIT keeps an [`Interpreter`] as its state holder and fallback: the interpreter runs cold
//! code, every instruction the translator does not cover and every faulting instruction, so
//! both backends give the guest the same architectural behaviour. Translated code reaches the
//! interpreter only through these calls: decoded blocks at CS:RIP, memory accesses with the
//! interpreter's segmentation, paging, MMIO and code-write rules, RFLAGS in and out of the lazy
//! representation, and the event/housekeeping steps of the run loop at block boundaries.

use iced_x86::Instruction;
use pcvm_core::memory::PhysRegion;
use pcvm_core::{Platform, SegReg, Segment, VmExit};

use crate::access::AccessKind;
use crate::exec::Decoded;
use crate::{Fault, Interpreter, Source};

/// A cached, RAM-resident block of decoded instructions at the current CS:RIP.
#[derive(Clone, Debug)]
pub struct JitBlock {
    /// Guest-physical address of the first byte.
    pub phys: u64,
    /// RAM offset of the first byte (blocks never cross a page).
    pub ram_offset: u64,
    /// Bytes covered by `insns`.
    pub byte_len: u32,
    /// The instructions in order; only the last may end the block (control flow, mode change).
    pub insns: Vec<Instruction>,
}

/// What caches of linear addresses outside the interpreter (the JIT's code lookups, soft TLB
/// and mode checks) depend on. The context generation moves on every fault, interrupt and
/// system instruction; when this key is unchanged across such a bump, those caches are
/// still valid (same paging structures and TLB contents, CPL, segments, memory map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitCacheKey {
    tlb: JitTlbKey,
    segments: [Segment; 6],
}

/// What the JIT's soft TLBs (linear page -> host page, permission-checked at fill time)
/// depend on: the part of [`JitCacheKey`] besides the segments, which matter to them only
/// through the CPL (the soft TLBs are indexed by linear address; segmentation comes first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitTlbKey {
    /// Whole-TLB flushes (an INVLPG is not one: see [`Interpreter::jit_invlpg`]), and those
    /// that dropped global translations too.
    tlb_flushes: u64,
    tlb_global_flushes: u64,
    map_generation: u64,
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    /// RFLAGS.AC and VM (alignment and SMAP checks, virtual-8086 mode).
    rflags_ac_vm: u64,
    cpl: u8,
}

/// What a [`JitTlbKey`] change voids of the soft TLBs' entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbChange {
    /// Everything.
    pub flush_all: bool,
    /// Entries filled in supervisor mode (back in user mode).
    pub drop_supervisor: bool,
    /// Entries of non-global translations (a MOV CR3 keeps global ones, SDM Vol. 3A
    /// §4.10.4.1).
    pub drop_non_global: bool,
}

impl TlbChange {
    /// Everything goes.
    pub const FLUSH: TlbChange = TlbChange {
        flush_all: true,
        drop_supervisor: true,
        drop_non_global: true,
    };
}

impl JitTlbKey {
    /// What the change from `before` to this key voids. Entries filled in user mode allow
    /// the same access from supervisor mode (user pages are supervisor accessible, no SMAP
    /// is modelled, and a write entry exists only for a writable page, so CR0.WP cannot
    /// make it wrong; SDM Vol. 3A §4.6.1), so entering the kernel keeps them; leaving it
    /// drops what the kernel filled.
    pub fn change_from(&self, before: &JitTlbKey) -> TlbChange {
        let rest = JitTlbKey {
            cr3: before.cr3,
            tlb_flushes: before.tlb_flushes,
            cpl: before.cpl,
            ..*self
        };
        if rest != *before {
            return TlbChange::FLUSH;
        }
        TlbChange {
            flush_all: false,
            drop_supervisor: before.cpl < 3 && self.cpl == 3,
            drop_non_global: self.cr3 != before.cr3 || self.tlb_flushes != before.tlb_flushes,
        }
    }

    /// Translations cached under this key were checked for user mode.
    pub fn user(&self) -> bool {
        self.cpl == 3
    }
}

/// What the interpreter would run next at CS:RIP: enough to size a fallback run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPeek {
    /// Instructions in the block.
    pub count: usize,
    /// The last instruction is a REP-prefixed string instruction (it may iterate many times).
    pub rep_end: bool,
}

/// Mode facts that decide whether, and which, translated code may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitMode {
    /// Default operand/address size of the code (16, 32, 64).
    pub bitness: u32,
    /// DS, ES and SS are flat (base 0, 4 GiB limit, writable expand-up data): linear address
    /// = offset and no segment check can fail for an access inside one page.
    pub flat: bool,
    /// SS.B is set: pushes and pops use ESP.
    pub stack32: bool,
    /// CS has base 0 and a 4 GiB limit: EIP is the linear address and no near branch can
    /// leave the segment.
    pub code_flat: bool,
    /// Instructions must run one at a time (TF/RF, DR7 breakpoints, interrupt shadows,
    /// debugger or trace).
    pub single: bool,
}

/// The outcome of [`Interpreter::jit_step`] and [`Interpreter::jit_exec_insn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitStep {
    /// Instructions retired (REP iterations beyond the first included; after a fault, the
    /// iterations beyond the first that a REP string instruction completed before it).
    pub retired: u64,
    /// The instruction (or its fetch) faulted and the fault was delivered.
    pub faulted: bool,
    /// A store hit a page holding decoded code: the run loop would end the block here.
    pub smc: bool,
    /// Fault delivery shut the CPU down.
    pub shutdown: bool,
}

/// The outcome of [`Interpreter::jit_run_block`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitRun {
    /// Instructions retired (REP iterations beyond the first included).
    pub retired: u64,
    /// Budget used: `retired`, or 1 for a fault on the block's first instruction (the run
    /// loop counts that fault as the instruction's completion so a faulting loop still ends).
    pub charged: u64,
    /// A store hit a page holding decoded code: the block ended there.
    pub smc: bool,
    /// Fault delivery ended the run (shutdown).
    pub exit: Option<VmExit>,
}

/// One instruction predecoded by [`Interpreter::jit_predecode`] for
/// [`Interpreter::jit_exec_predecoded`].
#[derive(Clone)]
pub struct JitInsn(Decoded);

impl JitInsn {
    /// Its length in bytes.
    pub fn byte_len(&self) -> u64 {
        u64::from(self.0.len)
    }

    /// Its mnemonic.
    pub fn mnemonic(&self) -> iced_x86::Mnemonic {
        self.0.insn.mnemonic()
    }
}

impl std::fmt::Debug for JitInsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("JitInsn").field(&self.0.insn.code()).finish()
    }
}

/// What changed since the last [`Interpreter::jit_sync`].
#[derive(Clone, Debug, Default)]
pub struct JitSync {
    /// The physical memory map changed (PAM, A20): every translation is stale.
    pub map_changed: bool,
    /// RAM offsets (page-aligned) of code pages written by the CPU or by DMA.
    pub code_pages: Vec<u64>,
}

/// A segment usable with no checks for in-page accesses: base 0, limit 4 GiB, usable,
/// present, writable expand-up data.
fn flat_data(s: &Segment) -> bool {
    s.base == 0
        && s.limit == 0xFFFF_FFFF
        && s.attributes & (Segment::ATTR_UNUSABLE | 0xC) == 0
        && s.attributes & 2 != 0
}

impl Interpreter {
    /// The mode facts of the current state.
    pub fn jit_mode(&self) -> JitMode {
        let s = &self.state;
        JitMode {
            bitness: s.code_bitness(),
            flat: s.protected_mode()
                && flat_data(s.seg(SegReg::Ds))
                && flat_data(s.seg(SegReg::Es))
                && flat_data(s.seg(SegReg::Ss)),
            stack32: self.stack_mask() != 0xFFFF,
            code_flat: s.seg(SegReg::Cs).base == 0 && s.seg(SegReg::Cs).limit == 0xFFFF_FFFF,
            single: self.needs_single(),
        }
    }

    /// [`JitMode::single`] alone (cheap: for every block boundary).
    pub fn jit_single(&self) -> bool {
        self.needs_single()
    }

    /// A debugger or trace is attached: the whole run belongs to the interpreter.
    pub fn jit_debugging(&self) -> bool {
        self.debug_active
    }

    /// Generation of everything cached about the current context (CS, mode, CPL, paging,
    /// segments, memory map): translations keyed by linear address are valid for one value.
    pub fn jit_ctx_gen(&self) -> u64 {
        self.ctx_gen
    }

    /// The [`JitCacheKey`] now.
    pub fn jit_cache_key(&self) -> JitCacheKey {
        JitCacheKey {
            tlb: self.jit_tlb_key(),
            segments: self.state.segments,
        }
    }

    /// The [`JitTlbKey`] now.
    pub fn jit_tlb_key(&self) -> JitTlbKey {
        let s = &self.state;
        JitTlbKey {
            tlb_flushes: self.tlb.full_flushes,
            tlb_global_flushes: self.tlb.global_flushes,
            map_generation: self.map_generation,
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
            rflags_ac_vm: s.rflags & (1 << 18 | 1 << 17),
            cpl: s.cpl(),
        }
    }

    /// INVLPGs executed so far ([`JitCacheKey`] does not change on one).
    pub fn jit_invlpgs(&self) -> u64 {
        self.tlb.invlpgs
    }

    /// The linear address of INVLPG number `n` (counting from 0), if it is among the last
    /// few; `None` once it was forgotten (the JIT then drops everything).
    pub fn jit_invlpg(&self, n: u64) -> Option<u64> {
        let ring = crate::mmu::INVLPG_RING as u64;
        if n >= self.tlb.invlpgs || self.tlb.invlpgs - n > ring {
            return None;
        }
        self.tlb.invlpg_ring.get((n % ring) as usize).copied()
    }

    /// The CPU is halted.
    pub fn jit_halted(&self) -> bool {
        self.state.halted
    }

    /// Linear address of CS:RIP.
    pub fn jit_linear_rip(&self) -> u64 {
        self.state.linear_rip()
    }

    /// Physical address of CS:RIP for an instruction fetch; `None` if the fetch faults (the
    /// interpreter then delivers the fault).
    pub fn jit_code_phys(&mut self, p: &mut dyn Platform) -> Option<u64> {
        let linear = self.state.linear_rip();
        self.translate(p, linear, AccessKind::Execute).ok()
    }

    /// Linear address of `seg:offset`, without segment checks.
    pub fn jit_linear(&self, seg: SegReg, offset: u64) -> u64 {
        let base = if self.state.in_64bit_code() && !matches!(seg, SegReg::Fs | SegReg::Gs) {
            0
        } else {
            self.state.seg(seg).base
        };
        self.wrap_linear(base.wrapping_add(offset))
    }

    /// RIP.
    pub fn jit_rip(&self) -> u64 {
        self.state.rip
    }

    /// Set RIP (after translated code ran).
    pub fn jit_set_rip(&mut self, rip: u64) {
        self.state.rip = rip;
    }

    /// The general-purpose registers.
    pub fn jit_gprs(&self) -> [u64; 16] {
        self.state.gpr
    }

    /// Replace the general-purpose registers.
    pub fn jit_set_gprs(&mut self, gpr: &[u64; 16]) {
        self.state.gpr = *gpr;
    }

    /// Where XMM0–XMM15 live, for translated SSE code that reads and writes them in place
    /// while it runs (the interpreter is not otherwise used meanwhile, and not moved).
    pub fn jit_xmm_ptr(&mut self) -> *mut [[u8; 16]; 16] {
        &mut self.state.fpu.xmm
    }

    /// SSE instructions execute rather than fault: CR0.EM clear, CR4.OSFXSR set and CR0.TS
    /// clear (otherwise #UD or #NM, SDM Vol. 1 §13.1.3 and Vol. 3A §2.5). Changing CR0 or
    /// CR4 changes [`Self::jit_ctx_gen`].
    pub fn jit_sse_usable(&self) -> bool {
        use pcvm_core::cpu_state::cr;
        self.state.cr0 & (cr::CR0_EM | cr::CR0_TS) == 0 && self.state.cr4 & cr::CR4_OSFXSR != 0
    }

    /// RFLAGS with the arithmetic flags materialized.
    pub fn jit_rflags(&self) -> u64 {
        self.rflags()
    }

    /// Replace RFLAGS as translated code left it (only arithmetic flags ever change there).
    pub fn jit_set_rflags(&mut self, value: u64) {
        self.set_rflags(value);
    }

    /// Count `n` instructions run by translated code as retired.
    pub fn jit_retire(&mut self, n: u64) {
        self.retired += n;
    }

    /// The instruction at CS:RIP fits in the code segment when `byte_len` bytes long
    /// (translated blocks are checked once against the CS limit, SDM Vol. 3A §5.3).
    pub fn jit_code_fits(&self, byte_len: u32) -> bool {
        let s = &self.state;
        if s.in_64bit_code() {
            return true;
        }
        let end = s.rip + u64::from(byte_len.max(1)) - 1;
        end <= u64::from(s.seg(SegReg::Cs).limit)
    }

    /// Size of the block the interpreter would run at CS:RIP; `None` if fetching it faults
    /// (the interpreter then delivers the fault).
    pub fn jit_peek_block(&mut self, p: &mut dyn Platform) -> Option<BlockPeek> {
        let last_rep = |i: &Instruction| {
            (i.has_rep_prefix() || i.has_repne_prefix()) && i.is_string_instruction()
        };
        match self.fetch_block(p).ok()? {
            Source::Cached(idx, _) => {
                let insns = &self.cache.block(idx)?.insns;
                Some(BlockPeek {
                    count: insns.len(),
                    rep_end: insns.last().is_some_and(|d| last_rep(&d.insn)),
                })
            }
            Source::Fresh(v) => Some(BlockPeek {
                count: v.len(),
                rep_end: v.last().is_some_and(|d| last_rep(&d.insn)),
            }),
        }
    }

    /// The cached RAM block at CS:RIP for translation; `None` for MMIO/ROM code, instructions
    /// crossing a page, and fetch faults.
    pub fn jit_block(&mut self, p: &mut dyn Platform) -> Option<JitBlock> {
        let Source::Cached(idx, key) = self.fetch_block(p).ok()? else {
            return None;
        };
        let phys = key >> 2;
        let PhysRegion::Ram(ram_offset) = p.memory().classify(phys, false) else {
            return None;
        };
        let b = self.cache.block(idx)?;
        Some(JitBlock {
            phys,
            ram_offset,
            byte_len: b.byte_len,
            insns: b.insns.iter().map(|d| *d.insn).collect(),
        })
    }

    /// Run the instruction at CS:RIP as the middle of a block in the run loop (no event
    /// delivery or polling before it; a fault is delivered but not counted). `rep_budget`
    /// bounds the iterations of a REP string instruction. Not for single-step mode.
    pub fn jit_step(&mut self, p: &mut dyn Platform, rep_budget: u64) -> JitStep {
        let out = self.jit_exec_insn(p, rep_budget);
        self.retired += out.retired;
        out
    }

    /// [`Self::jit_step`] without counting the instructions it retires (the caller counts
    /// them with [`Self::jit_retire`]).
    pub fn jit_exec_insn(&mut self, p: &mut dyn Platform, rep_budget: u64) -> JitStep {
        let first = match self.fetch_insns(p) {
            Ok((insns, slot)) => {
                let first = insns.first().cloned();
                self.return_insns(insns, slot);
                first
            }
            Err(f) => {
                return JitStep {
                    retired: 0,
                    faulted: true,
                    smc: false,
                    shutdown: self.fault(p, f).is_some(),
                };
            }
        };
        match first {
            Some(d) => self.exec_decoded(p, &d, rep_budget),
            None => JitStep {
                retired: 0,
                faulted: false,
                smc: false,
                shutdown: false,
            },
        }
    }

    /// Predecode `insn` (decoded from `bytes` in code of `bitness` bits at the RIP it will
    /// run at) exactly as this interpreter's decode cache would, for
    /// [`Self::jit_exec_predecoded`].
    pub fn jit_predecode(&self, insn: &Instruction, bitness: u32, bytes: &[u8]) -> JitInsn {
        JitInsn(self.predecode(insn, bitness, bytes))
    }

    /// Run `insn`, the instruction at CS:RIP (the caller guarantees its bytes are the
    /// guest's there), as [`Self::jit_step`] would, without fetching it and without counting
    /// it as retired: translated code runs an instruction it does not cover through this,
    /// in the middle of its own run.
    pub fn jit_exec_predecoded(
        &mut self,
        p: &mut dyn Platform,
        insn: &JitInsn,
        rep_budget: u64,
    ) -> JitStep {
        self.exec_decoded(p, &insn.0, rep_budget)
    }

    /// Execute `d` at CS:RIP as the middle of a block: REP iterations bounded by
    /// `rep_budget`, a fault delivered, nothing counted as retired. As in the run loop, the
    /// REP iterations a faulting string instruction completed before the fault count.
    fn exec_decoded(&mut self, p: &mut dyn Platform, d: &Decoded, rep_budget: u64) -> JitStep {
        let mut out = JitStep {
            retired: 0,
            faulted: false,
            smc: false,
            shutdown: false,
        };
        let ip_mask = match self.state.code_bitness() {
            16 => 0xFFFF,
            32 => 0xFFFF_FFFF,
            _ => u64::MAX,
        };
        self.rep_limit = rep_budget.max(1);
        self.rep_extra = 0;
        self.smc = false;
        match self.exec_one(p, d, ip_mask) {
            Ok(()) => {
                out.retired = 1 + std::mem::take(&mut self.rep_extra);
                out.smc = self.smc;
            }
            Err(f) => {
                out.retired = std::mem::take(&mut self.rep_extra);
                out.faulted = true;
                out.shutdown = self.fault(p, f).is_some();
            }
        }
        out
    }

    /// One instruction at a time only because of an STI or MOV SS interrupt shadow (no
    /// debugger, trace, TF, RF or DR7 breakpoints): [`Self::jit_run_block`] with `shadowed`
    /// runs that instruction as the run loop would.
    pub fn jit_shadow_only(&self) -> bool {
        !self.debug_active
            && self.state.rflags
                & (pcvm_core::cpu_state::flags::TF | pcvm_core::cpu_state::flags::RF)
                == 0
            && self.state.dr[7] & 0xFF == 0
            && (self.state.sti_shadow || self.state.mov_ss_shadow)
    }

    /// Run the block at CS:RIP exactly as one execute step of the run loop (the caller does
    /// the boundary work before it: polling, code-write sync, event delivery, halt): at most
    /// `budget` instructions, ending early at a fault (delivered) or a store into decoded
    /// code. A fetch fault is delivered and charged nothing, as in the run loop. With
    /// `shadowed` (when [`Self::jit_shadow_only`]) the shadow ends and only the first
    /// instruction runs, as in the run loop's one-at-a-time mode; otherwise not for that
    /// mode ([`JitMode::single`]).
    pub fn jit_run_block(&mut self, p: &mut dyn Platform, budget: u64, shadowed: bool) -> JitRun {
        let mut out = JitRun {
            retired: 0,
            charged: 0,
            smc: false,
            exit: None,
        };
        let (insns, slot) = match self.fetch_insns(p) {
            Ok(s) => s,
            Err(f) => {
                out.exit = self.fault(p, f);
                return out;
            }
        };
        let ip_mask = match self.state.code_bitness() {
            16 => 0xFFFF,
            32 => 0xFFFF_FFFF,
            _ => u64::MAX,
        };
        self.rep_limit = budget.max(1);
        self.rep_extra = 0;
        self.smc = false;
        let n = if shadowed {
            self.state.sti_shadow = false;
            self.state.mov_ss_shadow = false;
            1.min(insns.len())
        } else {
            (insns.len() as u64).min(budget) as usize
        };
        let (mut executed, fault) = self.exec_run(p, &insns[..n], budget, ip_mask, !shadowed);
        self.return_insns(insns, slot);
        executed += std::mem::take(&mut self.rep_extra);
        self.retired += executed;
        out.retired = executed;
        out.charged = executed;
        out.smc = self.smc;
        if let Some(f) = fault {
            if executed == 0 {
                out.charged = 1;
            }
            out.exit = self.fault(p, f);
        }
        out
    }

    /// Read `size` (1, 2, 4, 8) bytes at `seg:offset` as the instruction being run would:
    /// segment checks, paging (A/D bits, #PF), RAM/ROM/MMIO. `rmw` checks and translates with
    /// write intent, for read-modify-write operands.
    pub fn jit_read(
        &mut self,
        p: &mut dyn Platform,
        seg: SegReg,
        offset: u64,
        size: u8,
        rmw: bool,
    ) -> Result<u64, Fault> {
        let n = usize::from(size.clamp(1, 8));
        let kind = if rmw {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        let linear = self.seg_linear(seg, offset, n as u64, kind)?;
        self.check_watchpoints(linear, n as u64, false);
        let mut b = [0u8; 8];
        self.read_linear(p, linear, &mut b[..n], kind)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Write the low `size` bytes of `value` at `seg:offset` (checks as [`Self::jit_read`],
    /// code-page write tracking included).
    pub fn jit_write(
        &mut self,
        p: &mut dyn Platform,
        seg: SegReg,
        offset: u64,
        size: u8,
        value: u64,
    ) -> Result<(), Fault> {
        let n = usize::from(size.clamp(1, 8));
        let linear = self.seg_linear(seg, offset, n as u64, AccessKind::Write)?;
        self.write_linear(p, linear, &value.to_le_bytes()[..n])
    }

    /// RAM offset of `linear` if the TLB already holds a translation allowing this access
    /// (read, or write with the dirty bit set) and the page is RAM, and whether that
    /// translation is global (or paging is off): no walk, no side effects. Valid while
    /// [`JitTlbKey`] stays the same, or changes as [`JitTlbKey::change_from`] allows.
    pub fn jit_ram_offset(
        &self,
        p: &dyn Platform,
        linear: u64,
        write: bool,
    ) -> Option<(u64, bool)> {
        let (phys, global) = if self.state.cr0 & pcvm_core::cpu_state::cr::CR0_PG == 0 {
            (linear & 0xFFFF_FFFF, true)
        } else {
            let kind = if write {
                AccessKind::Write
            } else {
                AccessKind::Read
            };
            let phys = self.tlb.lookup(linear, kind, self.state.cpl() == 3)?;
            (phys, self.tlb.is_global(linear))
        };
        match p.memory().classify(phys, write) {
            PhysRegion::Ram(off) => Some((off, global)),
            _ => None,
        }
    }

    /// The instruction-boundary event step of the run loop: deliver a pending NMI or
    /// interrupt (outside interrupt shadows). Returns an exit on shutdown or when halted.
    pub fn jit_boundary(&mut self, p: &mut dyn Platform) -> Option<VmExit> {
        if !(self.state.sti_shadow || self.state.mov_ss_shadow) {
            if let Some(exit) = self.deliver_pending(p) {
                return Some(exit);
            }
        }
        self.state.halted.then_some(VmExit::Halted)
    }

    /// An NMI or interrupt could be delivered now (wakes a halted CPU), as the run loop checks
    /// on entry while halted.
    pub fn jit_event_deliverable(&mut self, p: &mut dyn Platform) -> bool {
        self.event_deliverable(p)
    }

    /// Port or MMIO I/O happened since the last [`Self::jit_take_io_done`] (not cleared).
    pub fn jit_io_pending(&self) -> bool {
        self.io_done
    }

    /// Port or MMIO I/O happened since the last call: the platform should be polled.
    pub fn jit_take_io_done(&mut self) -> bool {
        std::mem::take(&mut self.io_done)
    }

    /// Periodic housekeeping: latch a platform NMI, follow memory-map changes and apply
    /// code-page writes to the decode cache, reporting both to the caller.
    pub fn jit_sync(&mut self, p: &mut dyn Platform) -> JitSync {
        if p.take_nmi() {
            self.state.nmi_pending = true;
        }
        let before = self.map_generation;
        self.sync_memory_map(p);
        let mut out = JitSync {
            map_changed: before != self.map_generation,
            code_pages: Vec::new(),
        };
        self.smc = false;
        if p.memory().code_dirty() {
            out.code_pages = p.memory().take_code_invalidations();
            for off in &out.code_pages {
                self.cache.invalidate_page(off >> 12);
            }
        }
        out
    }
}
