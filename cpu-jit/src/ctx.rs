//! The context block translated code runs against, and the out-of-line helpers it calls.
//!
//! Generated code receives a pointer to a [`JitCtx`] and an opaque pointer to the dispatcher's
//! `&mut dyn Platform`. It keeps guest registers in the context's `gpr` copy, probes the soft
//! TLBs inline for loads and stores to RAM, and calls the `extern "C"` helpers below for
//! everything else (MMIO, page walks, A/D bits, faults, segment checks); the helpers reach the
//! interpreter through `JitCtx::interp`, so every slow access has the interpreter's semantics.

use std::sync::atomic::{AtomicBool, AtomicU64};

use pcvm_core::{GuestMemory, Platform, SegReg};
use pcvm_cpu_interp::Interpreter;
use vm_memory_host::host_page;

/// Entries in each soft TLB (direct mapped by linear page number).
pub(crate) const TLB_SIZE: usize = 256;

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
/// host address and `linear + ram_addend` the RAM offset; `code_word` points at the word of
/// the guest memory's code-page bitmap holding the page's bit (`(ram offset >> 12) % 64`),
/// so generated code can tell a store into a code page (out of line, to report it) from a
/// plain one (inline).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriteTlbEntry {
    pub tag: u64,
    pub addend: u64,
    pub ram_addend: u64,
    pub code_word: *const AtomicU64,
}

/// log2 of the entry sizes, for generated code's slot arithmetic.
pub(crate) const TLB_READ_SHIFT: i64 = 4;
pub(crate) const TLB_WRITE_SHIFT: i64 = 5;
const _: () = assert!(std::mem::size_of::<TlbEntry>() == 1 << TLB_READ_SHIFT);
const _: () = assert!(std::mem::size_of::<WriteTlbEntry>() == 1 << TLB_WRITE_SHIFT);

/// Field offsets inside a write-TLB entry.
pub(crate) const WTLB_ADDEND: i32 = std::mem::offset_of!(WriteTlbEntry, addend) as i32;
pub(crate) const WTLB_RAM_ADDEND: i32 = std::mem::offset_of!(WriteTlbEntry, ram_addend) as i32;
pub(crate) const WTLB_CODE_WORD: i32 = std::mem::offset_of!(WriteTlbEntry, code_word) as i32;

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
    pub tlb_read: [TlbEntry; TLB_SIZE],
    pub tlb_write: [WriteTlbEntry; TLB_SIZE],
    /// The code-written flag of the guest memory the write-TLB entries came from (set by
    /// `fill` with the first entry; null before): an inline store with the flag set goes out
    /// of line, as `GuestMemory::write_ram` then reports a code write (the interpreter ends
    /// its block after any RAM store while the flag is set).
    pub code_dirty: *const AtomicBool,
    /// The interpreter holding the rest of the state (valid while generated code runs).
    pub interp: *mut Interpreter,
    /// Interpreter context generation the soft TLBs were filled in.
    pub tlb_gen: u64,
    /// FS and GS bases for 64-bit code (constant while a block runs: translated code never
    /// changes them).
    pub seg_base: [u64; 2],
    /// The platform's guest memory (valid while generated code runs), so the RAM store
    /// helper needs no call through the platform.
    pub mem: *const GuestMemory,
}

// SAFETY: the raw `interp` and `mem` pointers are only used while the owning backend runs
// generated code on its thread (`interp` is null between calls; `mem` is re-set before each
// chain and never dereferenced outside one); `code_dirty` and the write TLB's `code_word`
// point into the guest memory's atomics, read only by generated code on that thread like the
// soft TLBs' host addresses. Moving the context to another thread moves no live borrow.
unsafe impl Send for JitCtx {}

pub(crate) const OFF_GPR: i32 = std::mem::offset_of!(JitCtx, gpr) as i32;
pub(crate) const OFF_RFLAGS: i32 = std::mem::offset_of!(JitCtx, rflags) as i32;
pub(crate) const OFF_RIP: i32 = std::mem::offset_of!(JitCtx, rip) as i32;
pub(crate) const OFF_EXECUTED: i32 = std::mem::offset_of!(JitCtx, executed) as i32;
pub(crate) const OFF_FAULT: i32 = std::mem::offset_of!(JitCtx, fault) as i32;
pub(crate) const OFF_TLB_READ: i32 = std::mem::offset_of!(JitCtx, tlb_read) as i32;
pub(crate) const OFF_TLB_WRITE: i32 = std::mem::offset_of!(JitCtx, tlb_write) as i32;
pub(crate) const OFF_CODE_DIRTY: i32 = std::mem::offset_of!(JitCtx, code_dirty) as i32;
pub(crate) const OFF_SEG_BASE: i32 = std::mem::offset_of!(JitCtx, seg_base) as i32;

impl JitCtx {
    pub(crate) fn new() -> Box<JitCtx> {
        Box::new(JitCtx {
            gpr: [0; 16],
            rflags: 0,
            rip: 0,
            executed: 0,
            fault: 0,
            tlb_read: [TlbEntry {
                tag: TLB_EMPTY,
                addend: 0,
            }; TLB_SIZE],
            tlb_write: [WriteTlbEntry {
                tag: TLB_EMPTY,
                addend: 0,
                ram_addend: 0,
                code_word: std::ptr::null(),
            }; TLB_SIZE],
            code_dirty: std::ptr::null(),
            interp: std::ptr::null_mut(),
            tlb_gen: u64::MAX,
            seg_base: [0; 2],
            mem: std::ptr::null(),
        })
    }

    /// Empty both soft TLBs.
    pub(crate) fn flush_tlb(&mut self, gen: u64) {
        for e in self.tlb_read.iter_mut() {
            e.tag = TLB_EMPTY;
        }
        for e in self.tlb_write.iter_mut() {
            e.tag = TLB_EMPTY;
        }
        self.tlb_gen = gen;
    }

    /// Follow the interpreter's context generation: a change drops every soft-TLB entry.
    pub(crate) fn check_tlb_gen(&mut self, interp: &Interpreter) {
        let gen = interp.jit_ctx_gen();
        if gen != self.tlb_gen {
            self.flush_tlb(gen);
        }
    }

    /// Remember the RAM page of `seg:offset` for inline loads or stores (host pointer; for
    /// stores also the RAM offset and code-page bit), if the interpreter's TLB proves the
    /// access allowed without a walk. Called
    /// only after the access succeeded (so the address passed the segment and canonical
    /// checks) and only for segments whose linear address generated code forms itself.
    fn fill(
        &mut self,
        interp: &Interpreter,
        p: &dyn Platform,
        seg: SegReg,
        offset: u64,
        write: bool,
    ) {
        let linear = interp.jit_linear(seg, offset);
        let Some(off) = interp.jit_ram_offset(p, linear, write) else {
            return;
        };
        let page = linear & !0xFFF;
        let off_page = off & !0xFFF;
        let slot = ((linear >> 12) as usize) & (TLB_SIZE - 1);
        if write {
            let (bits, dirty) = p.memory().code_tracking();
            let (Some(word), Some(host)) =
                (bits.get((off_page >> 18) as usize), host_page(p, off_page))
            else {
                return;
            };
            self.code_dirty = dirty;
            self.tlb_write[slot] = WriteTlbEntry {
                tag: page,
                addend: (host as u64).wrapping_sub(page),
                ram_addend: off_page.wrapping_sub(page),
                code_word: word,
            };
        } else if let Some(host) = host_page(p, off_page) {
            self.tlb_read[slot] = TlbEntry {
                tag: page,
                addend: (host as u64).wrapping_sub(page),
            };
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

/// Store to a RAM page found in the write TLB that holds code (or while some code page was
/// written): goes through `GuestMemory` so the write is reported, and stops the block if it
/// wrote a page holding decoded code (as the interpreter does). The context argument keeps
/// the helpers' common calling shape.
pub(crate) extern "C" fn helper_store_ram(
    ctx: *mut JitCtx,
    _plat: *mut PlatRef<'_>,
    ram_off: u64,
    size: u64,
    value: u64,
) -> u64 {
    // SAFETY: generated code passes the context pointer it was called with; the dispatcher
    // set `mem` to the platform's guest memory, which outlives the block's run, before
    // calling it.
    let mem = unsafe { &*(*ctx).mem };
    let n = (size as usize).clamp(1, 8);
    if !mem.write_ram(ram_off, &value.to_le_bytes()[..n]) {
        return STORE_FAULT;
    }
    if mem.code_dirty() {
        STORE_STOP
    } else {
        STORE_OK
    }
}
