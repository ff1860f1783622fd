//! The Cranelift JIT CPU backend: hot guest blocks compiled to native code, everything else
//! run by the reference interpreter.
//!
//! Structure:
//! - [`JitBackend`] (this file): the `CpuBackend` and its dispatcher. It owns an
//!   [`Interpreter`] that holds the CPU state, runs cold code, uncovered instructions (called
//!   from compiled blocks, one at a time) and faulting instructions, and delivers interrupts; translated blocks run between its
//!   instruction boundaries. Tiering: a block (keyed by guest-physical address, RIP and code
//!   bitness) is compiled after [`DEFAULT_THRESHOLD`] executions. Compiled blocks chain into
//!   each other for as long as the interpreter would do nothing but fetch at the boundaries
//!   between them (no poll due, budget left, no I/O, no requested interrupt): natively, by a
//!   tail call through the exit's link (constant targets) or the indirect-branch cache
//!   (RET, indirect JMP/CALL), both filled by the dispatcher, which follows its linear-RIP
//!   cache where they miss. Links, caches and the soft TLB share one generation that moves
//!   when a block is dropped or what they depend on changes (`ctx::CacheGen`).
//! - `translate`: interpreter-decoded block → Cranelift IR (32-bit flat protected-mode and
//!   64-bit integer code; lazy flags, also across blocks; inline soft-TLB loads, FS/GS bases
//!   in 64-bit code).
//! - `ctx`: the context block generated code runs against and the out-of-line helpers
//!   (slow memory path through the interpreter, RAM stores with code-page tracking, and one
//!   uncovered instruction run by the interpreter in the middle of a block).
//!
//! Correctness rules: a translated block runs only in the mode it was compiled for (32-bit
//! code with flat CS/DS/ES/SS and a 32-bit stack, or 64-bit code; never one instruction at a
//! time, never under a debugger); the interpreter's block structure is kept exactly (the same
//! block boundaries, budget charges for faults, and event/poll points): an uncovered
//! instruction runs through the interpreter from inside the block, which goes on natively
//! unless that instruction ended it (a fault, a store into code, a context or RFLAGS-system
//! change, a REP stopped early); the dispatcher then finishes the interpreter's block one
//! instruction at a time; code-page write notices from
//! `GuestMemory` drop blocks, a store into a code page ends the block where the interpreter's
//! would, and after the interpreter's own run loop ran (it takes those notices itself) every
//! block is compared with guest RAM once more before it runs; the memory map generation
//! flushes everything.
#![deny(unsafe_op_in_unsafe_fn)]

mod ctx;
mod error;
mod translate;
mod worker;

pub use error::{Error, Result};

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use cranelift_codegen::ir::{types, AbiParam, InstBuilder};
use cranelift_codegen::isa::CallConv;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Module};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use pcvm_core::{
    ClockMode, CpuBackend, CpuState, DebugConfig, Kicker, Platform, RunLimit, SegReg,
    SystemRequest, VmExit,
};
use pcvm_cpu_interp::{Interpreter, JitInsn};

use ctx::{ind_cache_slot, GenTable, JitCtx, Link, IND_CACHE_SIZE, LINKS_PER_BLOCK, NO_LINK};
use translate::{
    interpretable, supported, RegionBlock, SlowPaths, Translator, EXIT_DELIVERED, EXIT_FAULT,
    EXIT_NEXT, EXIT_SHUTDOWN, EXIT_STOP,
};
use worker::CompileWorker;

/// Executions of a block before it is compiled. Optimized compilation costs about as much as
/// interpreting a short block a few thousand times: a Linux boot plus gzip/sha256 workload
/// took 37.7 s user CPU at 128, 27.5 s at 1024 and 29.6 s at 4096 (compile time 11.5, 4.8
/// and 3.0 s), with the same instructions run natively within 1.5%.
pub const DEFAULT_THRESHOLD: u32 = 1024;

/// Instructions between platform polls (timers, kicker), as the interpreter does, when the
/// clock counts instructions: interrupts then arrive at the same instructions as under the
/// interpreter.
const POLL_INTERVAL: u64 = 2048;

/// Instructions between polls on the host clock. Compiled code retires 1–2 G instructions a
/// second, so 2048 meant a host clock read (and a stop of the native chain) every 1–2 µs;
/// reading the clock alone was 1–2.5% of a Linux workload's time. 8192 still checks timers
/// every few microseconds.
const HOST_POLL_INTERVAL: u64 = 8192;

/// Compiled blocks kept before the whole code cache is dropped.
const MAX_BLOCKS: usize = 1 << 15;

/// Native code bytes kept before the whole code cache is dropped.
const MAX_CODE_BYTES: usize = 64 << 20;

/// Most guest instructions in one translated block (compile time grows with the exits).
const MAX_TRANSLATED: usize = 64;

/// Recompilations of one block (after its code changed) before it stays interpreted.
const MAX_RECOMPILES: u32 = 8;

/// RFLAGS.IF.
const IF: u64 = 1 << 9;

/// Entries of the linear-EIP lookup cache.
const JMP_CACHE_SIZE: usize = 1 << 16;

/// A compiled block: `fn(ctx, &mut &mut dyn Platform) -> exit code` in Cranelift's tail
/// calling convention (so blocks can jump into each other), entered through [`Trampoline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlockFn(std::num::NonZeroUsize);

/// The C-convention entry into compiled code: `fn(ctx, plat, block) -> exit code` calls
/// `block(ctx, plat)`.
type Trampoline = unsafe extern "C" fn(*mut JitCtx, *mut u8, *const u8) -> u64;

/// One compiled block (its per-run part is a [`HotBlock`]).
struct CompiledBlock {
    /// The first instruction of the interpreter's block left out of the translation (for
    /// the fallback profile).
    stop: Option<Mnemonic>,
    /// RAM offset and the guest bytes it was compiled from.
    ram_offset: u64,
    bytes: Vec<u8>,
    key: BlockKey,
}

/// A translated block on its way to the code cache: what [`CompiledBlock`] and [`HotBlock`]
/// will hold, and what its code refers to (its links, the interpreter's predecoded copies).
struct Prepared {
    key: BlockKey,
    ram_offset: u64,
    bytes: Vec<u8>,
    stop: Option<Mnemonic>,
    links: Box<[Link; LINKS_PER_BLOCK]>,
    interp_insns: Box<[JitInsn]>,
    insns: u64,
    pure_len: u64,
    /// The compiled block this translation replaces (a loop region rooted at it).
    replaces: Option<u32>,
}

/// A compiled block joining another's function as part of a loop region.
struct RegionMember {
    idx: u32,
    /// Its instructions, decoded again from guest RAM.
    insns: Vec<Instruction>,
    /// It lies on another page than the function's own block.
    other_page: bool,
}

/// Most other blocks joining a block's function as a loop region.
const MAX_REGION_BLOCKS: usize = 16;

/// Most guest instructions in a loop region.
const MAX_REGION_INSNS: usize = 192;

/// The constant RIPs a translated block's exits go to: its last instruction's direct branch
/// target (JMP, Jcc, CALL, LOOP) and the fall-through unless it is an unconditional transfer.
fn exit_targets(insns: &[Instruction]) -> Vec<u64> {
    use iced_x86::FlowControl as F;
    let Some(last) = insns.last() else {
        return Vec::new();
    };
    let mut t = Vec::new();
    if matches!(
        last.op0_kind(),
        iced_x86::OpKind::NearBranch16
            | iced_x86::OpKind::NearBranch32
            | iced_x86::OpKind::NearBranch64
    ) {
        t.push(last.near_branch_target());
    }
    if !matches!(
        last.flow_control(),
        F::UnconditionalBranch
            | F::IndirectBranch
            | F::Return
            | F::Call
            | F::IndirectCall
            | F::Interrupt
    ) {
        t.push(last.next_ip());
    }
    t
}

/// The return address of a block ending in a direct near CALL, if it lies on the page of
/// `root` (a loop region's first block): a RET there goes on in the region's function.
pub(crate) fn return_site(insns: &[Instruction], root: u64) -> Option<u64> {
    let last = insns.last()?;
    let direct_call = last.mnemonic() == Mnemonic::Call
        && matches!(
            last.op0_kind(),
            iced_x86::OpKind::NearBranch16
                | iced_x86::OpKind::NearBranch32
                | iced_x86::OpKind::NearBranch64
        );
    (direct_call && last.next_ip() >> 12 == root >> 12).then(|| last.next_ip())
}

/// Blocks queued for the compile thread at most (more stay cold until there is room).
const MAX_IN_FLIGHT: usize = 256;

/// What the dispatcher touches of a block on every run, kept apart from the rest so chained
/// runs stay in cache.
#[derive(Clone, Copy)]
struct HotBlock {
    /// `None` once the block is dropped.
    func: Option<BlockFn>,
    /// Guest instructions translated, natively or through the interpreter helper (what one
    /// run retires, REP iterations beyond the first aside: those are bounded by the budget
    /// left when the REP runs).
    insns: u64,
    /// Instructions of the interpreter's block at the same address (`insns` or more when the
    /// translation stops before an instruction it cannot run).
    pure_len: u64,
    /// The `JitBackend::epoch` its bytes and code-page mark were last checked in.
    checked: u64,
    /// The last two blocks its exits chained to: (linear RIP, linear-RIP cache tag, index),
    /// valid while the tag is current (so no dropped block and no other context).
    succ: [(u64, u64, u32); 2],
}

/// What identifies a translation: guest-physical address, RIP (the block's branch targets
/// and RIP-relative addresses depend on it) and the code mode it was translated for, so a
/// 32-bit translation never runs in 64-bit code or the other way round.
type BlockKey = (u64, u64, u32);

/// What the dispatcher knows about a (physical address, EIP) block.
#[derive(Clone, Copy, Debug)]
enum Entry {
    /// Executions so far (interpreted).
    Cold(u32),
    /// Translated and being compiled by the compile thread (interpreted meanwhile).
    Pending,
    Compiled(u32),
    /// Its first instruction (this mnemonic, if any) cannot be translated.
    Never(Option<Mnemonic>),
}

/// Counters for benches and reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Blocks compiled.
    pub blocks_compiled: u64,
    /// Guest instructions in compiled blocks.
    pub insns_translated: u64,
    /// Nanoseconds spent translating and compiling.
    pub compile_ns: u64,
    /// Instructions retired by compiled code.
    pub insns_native: u64,
    /// Compiled blocks dropped because their guest bytes changed.
    pub invalidations: u64,
    /// Whole code-cache flushes.
    pub flushes: u64,
    /// Blocks translated together with other compiled blocks as one loop region.
    pub loop_regions: u64,
}

/// What a block's translation is made from: its instructions (each supported, or else run
/// through the interpreter helper from its predecoded copy at the same index), 64-bit code
/// or not, its link array when its constant-target exits may chain, and the indirect-branch
/// cache.
struct BlockSource<'a> {
    insns: &'a [Instruction],
    predecoded: &'a [u64],
    long: bool,
    links: Option<*const [Link; LINKS_PER_BLOCK]>,
    ind_cache: *const Link,
    /// Other compiled blocks translated into the same function as a loop region.
    region: &'a [RegionBlock<'a>],
}

/// Cranelift state for compiling blocks.
struct Compiler {
    module: JITModule,
    cl_ctx: cranelift_codegen::Context,
    fctx: FunctionBuilderContext,
    code_bytes: usize,
    /// Machine-code bytes of the last compiled block.
    last_size: usize,
    /// This module's entry into compiled blocks.
    trampoline: Trampoline,
    /// This module's soft-TLB miss paths, which generated code calls.
    slow: SlowPaths,
    /// Blocks count their native jumps (see [`JitBackend::count_block_runs`]).
    count_runs: bool,
}

/// The code generator for this host, with the JIT's settings.
fn make_isa() -> Result<cranelift_codegen::isa::OwnedTargetIsa> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v).map_err(|e| Error::Codegen(e.to_string()))
    };
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    // With blocks chained natively, hot loops spend their time in generated code, so code
    // quality pays: the optimizing pipeline and backtracking register allocator halved the
    // user CPU of a Linux boot plus gzip/sha256 workload against `none`/`single_pass` (whose
    // spills and reloads of every value dominated the blocks), without costing more
    // compile time overall.
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "regalloc_algorithm", "backtracking")?;
    set(&mut flags, "enable_verifier", "false")?;
    // The context pointer lives in the pinned register (r15) for the whole chain.
    set(&mut flags, "enable_pinned_reg", "true")?;
    // Cranelift's x86-64 tail calls (block chaining) rely on frame pointers.
    set(&mut flags, "preserve_frame_pointers", "true")?;
    cranelift_native::builder()
        .map_err(|e| Error::Codegen(e.to_string()))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| Error::Codegen(e.to_string()))
}

fn new_module() -> Result<JITModule> {
    Ok(JITModule::new(JITBuilder::with_isa(
        make_isa()?,
        default_libcall_names(),
    )))
}

impl Compiler {
    fn new() -> Result<Self> {
        let mut module = new_module()?;
        let mut cl_ctx = module.make_context();
        let mut fctx = FunctionBuilderContext::new();
        let (trampoline, slow) = Self::build_entry_points(&mut module, &mut cl_ctx, &mut fctx)?;
        Ok(Compiler {
            cl_ctx,
            module,
            fctx,
            code_bytes: 0,
            last_size: 0,
            trampoline,
            slow,
            count_runs: false,
        })
    }

    /// The signature of compiled blocks: () -> exit code, tail calling convention (the
    /// context is in the pinned register, the platform in the context).
    fn block_signature() -> cranelift_codegen::ir::Signature {
        let mut sig = cranelift_codegen::ir::Signature::new(CallConv::Tail);
        sig.returns.push(AbiParam::new(types::I64));
        sig
    }

    /// Compile the module's fixed functions: the [`Trampoline`] (Rust cannot call the tail
    /// convention directly) and the [`SlowPaths`].
    fn build_entry_points(
        module: &mut JITModule,
        cl_ctx: &mut cranelift_codegen::Context,
        fctx: &mut FunctionBuilderContext,
    ) -> Result<(Trampoline, SlowPaths)> {
        let ptr = module.target_config().pointer_type();
        let mut sig = module.make_signature();
        for _ in 0..3 {
            sig.params.push(AbiParam::new(ptr));
        }
        sig.returns.push(AbiParam::new(types::I64));
        let block_sig = Self::block_signature();
        let id = Self::define_fixed(module, cl_ctx, fctx, sig, |b, params| {
            let block_sig = b.import_signature(block_sig);
            // The pinned register is the caller's callee-saved r15: kept and given back.
            let saved = b.ins().get_pinned_reg(ptr);
            b.ins().set_pinned_reg(params[0]);
            b.ins().store(
                cranelift_codegen::ir::MemFlagsData::trusted(),
                params[1],
                params[0],
                ctx::OFF_SLOW_PLAT,
            );
            let call = b.ins().call_indirect(block_sig, params[2], &[]);
            let code = b.inst_results(call)[0];
            b.ins().set_pinned_reg(saved);
            b.ins().return_(&[code]);
        })?;
        // helper_load(ctx, plat, seg, offset, flags); helper_store(…, flags, value).
        let load = Self::build_slow_path(
            module,
            cl_ctx,
            fctx,
            ctx::helper_load as *const () as usize,
            3,
        )?;
        let store = Self::build_slow_path(
            module,
            cl_ctx,
            fctx,
            ctx::helper_store as *const () as usize,
            4,
        )?;
        module
            .finalize_definitions()
            .map_err(|e| Error::Codegen(e.to_string()))?;
        let code = module.get_finalized_function(id);
        let slow = SlowPaths {
            load: module.get_finalized_function(load) as u64,
            store: module.get_finalized_function(store) as u64,
        };
        // SAFETY: `code` is the finalized machine code of a function declared with three
        // pointer parameters and an i64 result in the host's default (C) calling convention,
        // which is `Trampoline`; it stays mapped until this module is freed.
        Ok((
            unsafe { std::mem::transmute::<*const u8, Trampoline>(code) },
            slow,
        ))
    }

    /// A soft-TLB miss path: a `preserve_all` function without parameters that calls the
    /// Rust `helper` (C convention: context, platform, then the `args` words of
    /// `JitCtx::slow_args`; one result) and leaves its result in `JitCtx::slow_result`. The
    /// context is the pinned register. Its calls cost the block no spills: with C-convention
    /// calls, each guest register live across a load or store had to sit in a callee-saved
    /// register or a stack slot, and argument registers pinned more, so the hot paths of
    /// decompression loops were mostly reloads.
    fn build_slow_path(
        module: &mut JITModule,
        cl_ctx: &mut cranelift_codegen::Context,
        fctx: &mut FunctionBuilderContext,
        helper: usize,
        args: usize,
    ) -> Result<cranelift_module::FuncId> {
        if args > ctx::SLOW_ARGS {
            return Err(Error::Codegen(format!(
                "a slow path takes at most {} arguments",
                ctx::SLOW_ARGS
            )));
        }
        let sig = translate::slow_path_signature();
        let call_conv = module.isa().default_call_conv();
        Self::define_fixed(module, cl_ctx, fctx, sig, |b, _| {
            let t = cranelift_codegen::ir::MemFlagsData::trusted();
            let mut helper_sig = cranelift_codegen::ir::Signature::new(call_conv);
            for _ in 0..args + 2 {
                helper_sig.params.push(AbiParam::new(types::I64));
            }
            helper_sig.returns.push(AbiParam::new(types::I64));
            let helper_sig = b.import_signature(helper_sig);
            let ctx = b.ins().get_pinned_reg(types::I64);
            let mut call_args = vec![ctx, b.ins().load(types::I64, t, ctx, ctx::OFF_SLOW_PLAT)];
            for i in 0..args {
                let off = ctx::OFF_SLOW_ARGS + 8 * i as i32;
                call_args.push(b.ins().load(types::I64, t, ctx, off));
            }
            let callee = b.ins().iconst(types::I64, helper as i64);
            let call = b.ins().call_indirect(helper_sig, callee, &call_args);
            let v = b.inst_results(call)[0];
            b.ins().store(t, v, ctx, ctx::OFF_SLOW_RESULT);
            b.ins().return_(&[]);
        })
    }

    /// Define one of the module's fixed functions: `sig`, with the body `body` emits given
    /// the parameters.
    fn define_fixed(
        module: &mut JITModule,
        cl_ctx: &mut cranelift_codegen::Context,
        fctx: &mut FunctionBuilderContext,
        sig: cranelift_codegen::ir::Signature,
        body: impl FnOnce(&mut FunctionBuilder<'_>, &[cranelift_codegen::ir::Value]),
    ) -> Result<cranelift_module::FuncId> {
        let id = module
            .declare_anonymous_function(&sig)
            .map_err(|e| Error::Codegen(e.to_string()))?;
        cl_ctx.func.signature = sig;
        {
            let mut b = FunctionBuilder::new(&mut cl_ctx.func, fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let params = b.block_params(entry).to_vec();
            body(&mut b, &params);
            b.finalize(module.target_config());
        }
        let r = module.define_function(id, cl_ctx);
        module.clear_context(cl_ctx);
        r.map_err(|e| Error::Codegen(format!("{e:?}")))?;
        Ok(id)
    }

    /// Compile the block `src` describes into a native function.
    fn compile(&mut self, src: &BlockSource<'_>) -> Result<BlockFn> {
        let sig = Self::block_signature();
        let id = self
            .module
            .declare_anonymous_function(&sig)
            .map_err(|e| Error::Codegen(e.to_string()))?;
        self.build(src)?;
        // RUST_LOG=pcvm_cpu_jit::code=trace prints each block's machine code.
        let dump = tracing::enabled!(target: "pcvm_cpu_jit::code", tracing::Level::TRACE);
        self.cl_ctx.set_disasm(dump);
        let r = self.module.define_function(id, &mut self.cl_ctx);
        if let Some(code) = self.cl_ctx.compiled_code() {
            self.last_size = code.code_buffer().len();
            self.code_bytes += self.last_size;
            if dump {
                tracing::trace!(
                    target: "pcvm_cpu_jit::code",
                    "block at {:#x}:\n{}",
                    src.insns.first().map_or(0, Instruction::ip),
                    code.vcode.as_deref().unwrap_or("")
                );
            }
        }
        self.module.clear_context(&mut self.cl_ctx);
        r.map_err(|e| Error::Codegen(format!("{e:?}")))?;
        self.finish(id)
    }

    /// Translate `src` into Cranelift IR (`self.cl_ctx.func`), as [`Self::compile`] does.
    fn build(&mut self, src: &BlockSource<'_>) -> Result<()> {
        self.cl_ctx.func.signature = Self::block_signature();
        let call_conv = self.module.isa().default_call_conv();
        let cfg = self.module.target_config();
        let b = FunctionBuilder::new(&mut self.cl_ctx.func, &mut self.fctx);
        let mut built =
            Translator::new(b, call_conv, self.slow, src.long, src.links, src.ind_cache)
                .counting_runs(self.count_runs)
                .block(src.insns, src.predecoded, cfg, src.region);
        if built.is_err() && src.links.is_some() {
            // Once more without a self loop (refused when iced's write lists fell short).
            self.cl_ctx.func.clear();
            self.cl_ctx.func.signature = Self::block_signature();
            let b = FunctionBuilder::new(&mut self.cl_ctx.func, &mut self.fctx);
            built = Translator::new(b, call_conv, self.slow, src.long, src.links, src.ind_cache)
                .counting_runs(self.count_runs)
                .without_self_loop()
                .block(src.insns, src.predecoded, cfg, &[]);
        }
        if built.is_err() {
            self.module.clear_context(&mut self.cl_ctx);
            return Err(Error::Untranslatable);
        }
        Ok(())
    }

    /// Translate `src` into Cranelift IR for the compile thread (see [`Self::compile`]).
    fn translate(&mut self, src: &BlockSource<'_>) -> Result<cranelift_codegen::ir::Function> {
        self.build(src)?;
        let func = std::mem::replace(
            &mut self.cl_ctx.func,
            cranelift_codegen::ir::Function::new(),
        );
        self.module.clear_context(&mut self.cl_ctx);
        Ok(func)
    }

    /// Place machine code the compile thread made (position independent, no relocations)
    /// in this module's code memory.
    fn install(&mut self, bytes: &[u8], align: u64) -> Result<BlockFn> {
        let sig = Self::block_signature();
        let id = self
            .module
            .declare_anonymous_function(&sig)
            .map_err(|e| Error::Codegen(e.to_string()))?;
        self.module
            .define_function_bytes(id, align, bytes, &[])
            .map_err(|e| Error::Codegen(e.to_string()))?;
        self.last_size = bytes.len();
        self.code_bytes += bytes.len();
        self.finish(id)
    }

    /// Make the defined function `id` executable and return it.
    fn finish(&mut self, id: cranelift_module::FuncId) -> Result<BlockFn> {
        self.module
            .finalize_definitions()
            .map_err(|e| Error::Codegen(e.to_string()))?;
        let code = self.module.get_finalized_function(id);
        std::num::NonZeroUsize::new(code as usize)
            .map(BlockFn)
            .ok_or(Error::Untranslatable)
    }
}

/// The JIT backend.
pub struct JitBackend {
    interp: Interpreter,
    ctx: Box<JitCtx>,
    compiler: Compiler,
    blocks: Vec<Option<CompiledBlock>>,
    /// The per-run part of `blocks`, same indices.
    hot: Vec<HotBlock>,
    map: FastMap<BlockKey, Entry>,
    /// RAM page → compiled blocks decoded from it.
    pages: FastMap<u64, Vec<u32>>,
    /// Times the block at a key was dropped because its code changed.
    drops: FastMap<BlockKey, u32>,
    /// (linear EIP, context generation, block index).
    jmp: Vec<(u64, u64, u32)>,
    threshold: u32,
    stats: JitStats,
    buf: Vec<u8>,
    /// Per mnemonic: block runs and untranslatable blocks that left it to the interpreter.
    fallbacks: Vec<u64>,
    /// Bumped whenever the interpreter's own run loop ran (it takes code-page invalidations
    /// itself, so writes to compiled code may have gone unnoticed): blocks are re-checked
    /// against guest RAM once per epoch.
    epoch: u64,
    /// (context generation, whether its mode allows translated code).
    mode_cache: (u64, bool),
    /// Bumped when compiled blocks are dropped: older linear-RIP cache entries are void.
    drop_gen: u64,
    /// Compiled-block runs (see [`Self::blocks_run`]).
    blocks_run: u64,
    /// Per compiled block (same indices): its exits' native successors. Boxed so generated
    /// code can hold their addresses; freed only with the code cache.
    #[allow(clippy::vec_box)] // the boxes keep each block's links at a fixed address
    links: Vec<Box<[Link; LINKS_PER_BLOCK]>>,
    /// Per compiled block (same indices): the interpreter's predecoded copies of the
    /// instructions its code runs through `helper_interp` (whose addresses the code holds),
    /// freed only with the code cache.
    predecoded: Vec<Box<[JitInsn]>>,
    /// Link generations by what they were made for: (linear-RIP cache tag, epoch). A tag
    /// that comes back (user mode after a system call) finds its links still filled.
    link_gens: GenTable<(u64, u64)>,
    /// The current link generation (links of other ones are void).
    link_gen: u64,
    /// Indirect-branch targets' successors (see `ctx::ind_cache_slot`), same generations.
    ind_cache: Box<[Link]>,
    /// `PCVM_JIT_PERF_MAP=1`: /tmp/perf-PID.map, naming each block's code by its guest RIP
    /// for `perf report` (the perf JIT map convention).
    perf_map: Option<std::fs::File>,
    /// The compile thread, when blocks are compiled in the background.
    worker: Option<CompileWorker>,
    /// Blocks the compile thread is working on, by job number.
    pending: FastMap<u64, Prepared>,
    /// The next job number.
    next_seq: u64,
    /// Blocks translated as loop regions, or tried as one (at most once each).
    region_tried: std::collections::HashSet<BlockKey, BuildHasherDefault<AddressHasher>>,
}

/// A multiply-rotate hasher for the dispatcher's maps: their keys are guest addresses and
/// small integers, and SipHash (HashDoS resistance the guest cannot use against us: a
/// colliding guest only slows itself) cost 1.4% of a Linux workload's time.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<AddressHasher>>;

/// The perf JIT map (/tmp/perf-PID.map) if `PCVM_JIT_PERF_MAP` is set and it can be created.
fn open_perf_map() -> Option<std::fs::File> {
    std::env::var_os("PCVM_JIT_PERF_MAP")?;
    let path = format!("/tmp/perf-{}.map", std::process::id());
    match std::fs::File::create(&path) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!("JIT: cannot create {path}: {e}");
            None
        }
    }
}

/// The `top` largest of per-mnemonic `counts`, most first.
fn top_counts(counts: &[u64], top: usize) -> Vec<(Mnemonic, u64)> {
    let mut v: Vec<(Mnemonic, u64)> = Mnemonic::values()
        .zip(counts.iter().copied())
        .filter(|&(_, c)| c > 0)
        .collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v.truncate(top);
    v
}

/// Linear-RIP cache entry of code that stays interpreted.
const NO_BLOCK: u32 = u32::MAX;
/// Linear-RIP cache entries from `COLD_BASE` up (below [`NO_BLOCK`]) are cold code that ran
/// `entry - COLD_BASE` times: counted there, cold code costs the dispatcher no page walk or
/// hash-map probe per run (those two were 40% of the dispatcher's time in a Linux boot).
const COLD_BASE: u32 = 0xF000_0000;
/// The most runs such an entry counts; beyond it runs take the slow lookup, which counts them
/// in the block map.
const COLD_MAX_RUNS: u32 = NO_BLOCK - 1 - COLD_BASE;

/// The compiled block a linear-RIP cache entry names, if it names one.
fn entry_block(idx: u32) -> Option<u32> {
    (idx < COLD_BASE).then_some(idx)
}

/// Linear-RIP cache slot of `lin`.
fn jmp_slot(lin: u64) -> usize {
    ((lin ^ (lin >> 16) ^ (lin >> 32)) as usize) & (JMP_CACHE_SIZE - 1)
}

impl Drop for JitBackend {
    fn drop(&mut self) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                "JIT: {:?}, {} block runs; fallbacks by mnemonic: {:?}; interpreted in compiled \
                 blocks: {:?}",
                self.stats,
                self.blocks_run,
                self.fallback_profile(40),
                self.interpreted_profile(40)
            );
        }
    }
}

impl std::fmt::Debug for JitBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitBackend")
            .field("interp", &self.interp)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl JitBackend {
    /// A CPU in the RESET state.
    pub fn new() -> Result<Self> {
        Self::with_interpreter(Interpreter::new())
    }

    /// A JIT around an existing interpreter (its state, trace and debug settings).
    pub fn with_interpreter(interp: Interpreter) -> Result<Self> {
        Ok(JitBackend {
            interp,
            ctx: JitCtx::new(),
            compiler: Compiler::new()?,
            blocks: Vec::new(),
            hot: Vec::new(),
            map: FastMap::default(),
            pages: FastMap::default(),
            drops: FastMap::default(),
            jmp: vec![(u64::MAX, 0, 0); JMP_CACHE_SIZE],
            threshold: DEFAULT_THRESHOLD,
            stats: JitStats::default(),
            buf: Vec::new(),
            fallbacks: vec![0; Mnemonic::values().len()],
            epoch: 0,
            mode_cache: (u64::MAX, false),
            drop_gen: 0,
            blocks_run: 0,
            links: Vec::new(),
            predecoded: Vec::new(),
            link_gens: GenTable::new(),
            link_gen: 0,
            ind_cache: vec![Link::EMPTY; IND_CACHE_SIZE].into_boxed_slice(),
            perf_map: open_perf_map(),
            worker: None,
            pending: FastMap::default(),
            next_seq: 0,
            region_tried: Default::default(),
        })
    }

    /// Compile blocks after `n` executions (1 compiles on first sight; for tests).
    pub fn set_threshold(&mut self, n: u32) {
        self.threshold = n.max(1);
    }

    /// Counters since creation.
    pub fn stats(&self) -> JitStats {
        self.stats
    }

    /// Count compiled-block runs, native jumps between blocks included (off by default: it
    /// costs every jump a load, add and store). Affects blocks compiled from now on.
    pub fn count_block_runs(&mut self, on: bool) {
        self.compiler.count_runs = on;
    }

    /// Compiled-block runs counted since creation: one per call from the dispatcher, plus
    /// the native jumps of blocks compiled while [`Self::count_block_runs`] was on.
    pub fn blocks_run(&self) -> u64 {
        self.blocks_run
    }

    /// `--trace` output (tracing runs everything in the interpreter).
    pub fn set_trace(&mut self, out: Option<Box<dyn std::io::Write + Send>>) {
        self.interp.set_trace(out);
    }

    /// Drop every compiled block and the code memory.
    fn flush_code(&mut self) {
        // Blocks still compiling are dropped with the map (their results are ignored).
        self.pending.clear();
        self.region_tried.clear();
        self.blocks.clear();
        self.hot.clear();
        self.links.clear();
        self.predecoded.clear();
        self.map.clear();
        self.pages.clear();
        self.drops.clear();
        self.drop_gen += 1;
        self.stats.flushes += 1;
        match Compiler::new() {
            Ok(mut fresh) => {
                fresh.count_runs = self.compiler.count_runs;
                let old = std::mem::replace(&mut self.compiler, fresh);
                // SAFETY: every function pointer into the old module was in `self.hot`,
                // cleared above (the linear-RIP cache and successor caches hold indices, voided
                // by the drop generation), and no generated code is running (the dispatcher
                // calls this between blocks).
                unsafe { old.module.free_memory() };
            }
            Err(e) => tracing::warn!("JIT: cannot create a new code cache: {e}"),
        }
    }

    /// Drop the compiled blocks decoded from RAM page `page` (offset >> 12).
    fn invalidate_page(&mut self, page: u64) {
        let Some(list) = self.pages.remove(&page) else {
            return;
        };
        for idx in list {
            self.drop_block(idx);
        }
    }

    fn drop_block(&mut self, idx: u32) {
        if let Some(b) = self.blocks.get_mut(idx as usize).and_then(Option::take) {
            if let Some(h) = self.hot.get_mut(idx as usize) {
                h.func = None;
            }
            // Code rewritten again and again (data sharing its page, a patching loop) stays
            // interpreted rather than recompiled each time.
            let drops = self.drops.entry(b.key).or_insert(0);
            *drops += 1;
            let next = if *drops >= MAX_RECOMPILES {
                Entry::Never(None)
            } else {
                Entry::Cold(0)
            };
            self.map.insert(b.key, next);
            self.drop_gen += 1;
            self.stats.invalidations += 1;
        }
    }

    /// Apply memory-map changes and code-page writes.
    fn sync(&mut self, p: &mut dyn Platform) {
        let s = self.interp.jit_sync(p);
        if s.map_changed {
            self.flush_code();
        }
        for off in s.code_pages {
            self.invalidate_page(off >> 12);
        }
    }

    /// Tag of linear-RIP cache entries valid now: the cache generation (`ctx::CacheGen`) and
    /// the drop generation.
    fn jmp_gen(&mut self) -> u64 {
        self.ctx.cache_gen.get(&self.interp) ^ (self.drop_gen << 40)
    }

    /// The compiled block to run at CS:EIP, compiling it if it became hot.
    fn lookup(&mut self, p: &mut dyn Platform) -> Option<u32> {
        if self.worker.as_ref().is_some_and(CompileWorker::has_done) {
            self.install_done(p);
        }
        let lin = self.interp.jit_linear_rip();
        let gen = self.jmp_gen();
        let slot = jmp_slot(lin);
        let (tag, g, idx) = self.jmp[slot];
        // Runs counted in the cache entry of cold code, also under an older generation: the
        // map holds only the count of the last slow lookup, and code entered once per
        // context switch (system calls, interrupts, with PTI a CR3 switch each way) would
        // otherwise start again from it every time and stay interpreted.
        let runs = if tag == lin && idx >= COLD_BASE && idx != NO_BLOCK {
            idx - COLD_BASE + 1
        } else {
            0
        };
        if tag == lin && g == gen {
            if idx < COLD_BASE || idx == NO_BLOCK {
                return entry_block(idx);
            }
            if runs < self.threshold && runs < COLD_MAX_RUNS {
                self.jmp[slot].2 = COLD_BASE + runs;
                return None;
            }
        }
        let phys = self.interp.jit_code_phys(p)?;
        let key = (phys, self.interp.jit_rip(), self.interp.jit_mode().bitness);
        if tag == lin && idx < COLD_BASE {
            // The same linear RIP in another cache generation (with PTI, every kernel entry
            // and exit switches CR3): still the same block if it is live under the same
            // key, which is what the map would answer, without probing it.
            if let Some(Some(b)) = self.blocks.get(idx as usize) {
                if b.key == key {
                    self.jmp[slot] = (lin, gen, idx);
                    return Some(idx);
                }
            }
        }
        let entry = self.map.get(&key).copied().unwrap_or(Entry::Cold(0));
        let idx = match entry {
            Entry::Compiled(idx) => idx,
            Entry::Never(m) => {
                self.note_fallback(m, 1);
                self.ctx.cache_gen.note_code(lin, lin);
                self.jmp[slot] = (lin, gen, NO_BLOCK);
                return None;
            }
            Entry::Cold(n) if n.max(runs) + 1 < self.threshold => {
                let n = n.max(runs) + 1;
                self.map.insert(key, Entry::Cold(n));
                self.jmp[slot] = (lin, gen, COLD_BASE + n.min(COLD_MAX_RUNS));
                return None;
            }
            Entry::Pending => return None,
            Entry::Cold(_) => match self.compile(p, key) {
                Ok(Some(idx)) => idx,
                Ok(None) => return None,
                Err(m) => {
                    self.map.insert(key, Entry::Never(m));
                    return None;
                }
            },
        };
        let len = self
            .blocks
            .get(idx as usize)
            .and_then(|b| Some(b.as_ref()?.bytes.len() as u64))
            .unwrap_or(0x1000);
        self.ctx
            .cache_gen
            .note_code(lin, lin.wrapping_add(len.max(1) - 1));
        self.jmp[slot] = (lin, gen, idx);
        Some(idx)
    }

    /// Translate the block at CS:EIP, and compile it here or queue it for the compile thread
    /// (`Ok(None)`: queued, or the queue is full and it stays cold for now).
    fn compile(
        &mut self,
        p: &mut dyn Platform,
        key: BlockKey,
    ) -> std::result::Result<Option<u32>, Option<Mnemonic>> {
        if self
            .worker
            .as_ref()
            .is_some_and(|w| w.in_flight >= MAX_IN_FLIGHT)
        {
            return Ok(None);
        }
        let block = self.interp.jit_block(p).ok_or(None)?;
        if block.phys != key.0 {
            return Err(None);
        }
        let (rip, bitness) = (key.1, key.2);
        let long = bitness == 64;
        // Decode the block's bytes again at this RIP: the interpreter's cached decode may come
        // from another linear address of the same bytes, and iced's branch targets and
        // RIP-relative addresses are absolute for the IP it decoded at.
        let mut all = vec![0u8; block.byte_len as usize];
        if !p.memory().read_ram(block.ram_offset, &mut all) {
            return Err(None);
        }
        let mut decoder = Decoder::with_ip(bitness, &all, rip, DecoderOptions::NONE);
        let mut insns = Vec::with_capacity(block.insns.len());
        for cached in &block.insns {
            let insn = decoder.decode();
            if insn.is_invalid() || insn.code() != cached.code() || insn.len() != cached.len() {
                return Err(None);
            }
            insns.push(insn);
        }
        // Instructions the translator does not cover run through the interpreter helper in
        // the middle of the block (even all of them: such a block still chains).
        let n = insns
            .iter()
            .take(MAX_TRANSLATED)
            .take_while(|i| supported(i, long) || interpretable(i))
            .count();
        let stop = insns.get(n).map(Instruction::mnemonic);
        if n == 0 {
            return Err(stop);
        }
        if self.blocks.len() >= MAX_BLOCKS || self.compiler.code_bytes >= MAX_CODE_BYTES {
            self.flush_code();
        }
        let insns = &insns[..n];
        let len: usize = insns.iter().map(Instruction::len).sum();
        let bytes = all[..len].to_vec();
        // Constant-target exits chain natively only when the translation is the whole of the
        // interpreter's block (otherwise its end is where the interpreter takes over).
        let links = Box::new([Link::EMPTY; LINKS_PER_BLOCK]);
        let chainable = n == block.insns.len();
        let links_ptr = chainable.then_some(&*links as *const [Link; LINKS_PER_BLOCK]);
        // The interpreter's own decode of each instruction the code leaves to it (from the
        // same bytes at the same RIP).
        let mut off = 0usize;
        let mut interp_insns = Vec::new();
        let mut at = Vec::with_capacity(n);
        for insn in insns {
            if supported(insn, long) {
                at.push(None);
            } else {
                at.push(Some(interp_insns.len()));
                interp_insns.push(self.interp.jit_predecode(insn, bitness, &all[off..]));
            }
            off += insn.len();
        }
        let interp_insns = interp_insns.into_boxed_slice();
        let predecoded: Vec<u64> = at
            .iter()
            .map(|i| {
                i.and_then(|i| interp_insns.get(i))
                    .map_or(0, |d| d as *const JitInsn as u64)
            })
            .collect();
        let t0 = Instant::now();
        // Compiled blocks on the same page that this one leads to and that lead back to it
        // join its function as one loop (all native and whole, like this one).
        let members = if chainable && insns.iter().all(|i| supported(i, long)) {
            self.loop_region(p, key, insns, block.ram_offset)
        } else {
            Vec::new()
        };
        let region = self.region_blocks(&members);
        if !region.is_empty() {
            self.stats.loop_regions += 1;
        }
        let Some((lo, bytes)) = self.region_bytes(p, block.ram_offset, bytes, &members) else {
            return Err(None);
        };
        let prepared = Prepared {
            key,
            ram_offset: lo,
            bytes,
            stop,
            links,
            interp_insns,
            insns: n as u64,
            pure_len: block.insns.len() as u64,
            replaces: None,
        };
        if !region.is_empty() {
            self.region_tried.insert(key);
        }
        self.build_block(p, prepared, insns, &predecoded, links_ptr, &region, t0)
    }

    /// Translate `insns` (with `region`) for `prepared`, then queue its IR for the compile
    /// thread or compile and register it here.
    #[allow(clippy::too_many_arguments)]
    fn build_block(
        &mut self,
        p: &mut dyn Platform,
        prepared: Prepared,
        insns: &[Instruction],
        predecoded: &[u64],
        links_ptr: Option<*const [Link; LINKS_PER_BLOCK]>,
        region: &[RegionBlock<'_>],
        t0: Instant,
    ) -> std::result::Result<Option<u32>, Option<Mnemonic>> {
        let key = prepared.key;
        // With a compile thread, only the translation to IR happens here.
        let src = BlockSource {
            insns,
            predecoded,
            long: key.2 == 64,
            links: links_ptr,
            ind_cache: self.ind_cache.as_ptr(),
            region,
        };
        let built = if self.worker.is_some() {
            self.compiler.translate(&src).map(Err)
        } else {
            self.compiler.compile(&src).map(Ok)
        };
        self.stats.compile_ns += t0.elapsed().as_nanos() as u64;
        match built {
            Ok(Ok(func)) => Ok(Some(self.register(p, prepared, func))),
            Ok(Err(ir)) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let upgrade = prepared.replaces.is_some();
                if self.worker.as_mut().is_some_and(|w| w.submit(seq, ir)) {
                    self.pending.insert(seq, prepared);
                    if !upgrade {
                        self.map.insert(key, Entry::Pending);
                    }
                } else {
                    tracing::warn!("JIT: the compile thread is gone; compiling on this one");
                    self.stop_worker();
                }
                Ok(None)
            }
            Err(e) => {
                tracing::debug!("JIT: block at {:#x} not compiled: {e}", key.1);
                Err(insns.first().map(Instruction::mnemonic))
            }
        }
    }

    /// The compiled blocks that join the block at `key` (translated as `insns`, at RAM offset
    /// `ram_offset`) in one function: reached from its constant exits (directly or through
    /// each other), native and whole, and leading back to it, so the loop they form runs
    /// without leaving the function.
    ///
    /// Blocks on the block's own page are found by physical address: entering the function
    /// proves the page's mapping. Blocks on other pages are found through the linear-RIP cache
    /// and joined as [`RegionMember::other_page`]: their mapping may change while the block's
    /// stays, so generated code enters their copies only while the exit's link names them
    /// (see `RegionBlock::other_page`).
    ///
    /// A direct CALL's return address on the block's page counts as a successor of the CALL
    /// (reached through the callee), and a block ending in RET as a predecessor of every such
    /// return address: the translation goes on in the function when RET pops one of them.
    fn loop_region(
        &self,
        p: &dyn Platform,
        key: BlockKey,
        insns: &[Instruction],
        ram_offset: u64,
    ) -> Vec<RegionMember> {
        let (phys, rip, bitness) = key;
        // RIPs on the block's page are on its linear page only with a page-aligned CS base
        // (the block's physical and RIP page offsets agree).
        if phys & 0xFFF != rip & 0xFFF {
            return Vec::new();
        }
        let long = bitness == 64;
        let page_ram = ram_offset & !0xFFF;
        let mut cand: Vec<(u64, RegionMember)> = Vec::new();
        let mut total = insns.len();
        let mut queue = exit_targets(insns);
        queue.extend(return_site(insns, rip));
        let mut buf = Vec::new();
        let mut page = vec![0u8; 0x1000];
        while let Some(t) = queue.pop() {
            if cand.len() >= MAX_REGION_BLOCKS {
                break;
            }
            if t == rip || cand.iter().any(|c| c.0 == t) {
                continue;
            }
            let other_page = t >> 12 != rip >> 12;
            let idx = if other_page {
                let lin = self.interp.jit_linear(SegReg::Cs, t);
                match self.jmp.get(jmp_slot(lin)).copied() {
                    Some((tag, _, idx)) if tag == lin && idx < COLD_BASE => idx,
                    _ => continue,
                }
            } else {
                let k = ((phys & !0xFFF) | (t & 0xFFF), t, bitness);
                let Some(Entry::Compiled(idx)) = self.map.get(&k).copied() else {
                    continue;
                };
                idx
            };
            let (Some(Some(b)), Some(h)) =
                (self.blocks.get(idx as usize), self.hot.get(idx as usize))
            else {
                continue;
            };
            let member_page = b.ram_offset & !0xFFF;
            let end = b.ram_offset + b.bytes.len() as u64;
            if h.func.is_none()
                || h.insns != h.pure_len
                || (b.key.1, b.key.2) != (t, bitness)
                || member_page != page_ram && !other_page
                || end > member_page + 0x1000
                || total + h.insns as usize > MAX_REGION_INSNS
            {
                continue;
            }
            // Its compiled code is current (so its instruction count is), and its own
            // instructions are decoded from its page (a block's kept bytes may be a whole
            // region's).
            buf.resize(b.bytes.len(), 0);
            if !(p.memory().read_ram(b.ram_offset, &mut buf)
                && buf == b.bytes
                && p.memory().read_ram(member_page, &mut page))
            {
                continue;
            }
            let from = page.get((t & 0xFFF) as usize..).unwrap_or(&[]);
            let mut decoder = Decoder::with_ip(bitness, from, t, DecoderOptions::NONE);
            let list: Vec<Instruction> = (0..h.insns).map(|_| decoder.decode()).collect();
            if list.iter().any(|i| i.is_invalid() || !supported(i, long)) {
                continue;
            }
            total += list.len();
            queue.extend(exit_targets(&list));
            queue.extend(return_site(&list, rip));
            cand.push((
                t,
                RegionMember {
                    idx,
                    insns: list,
                    other_page,
                },
            ));
        }
        // Keep the blocks from which this one is reached again.
        let sites: Vec<u64> = return_site(insns, rip)
            .into_iter()
            .chain(cand.iter().filter_map(|(_, m)| return_site(&m.insns, rip)))
            .collect();
        let leads_to = |list: &[Instruction], back: &[u64]| {
            let ends_in_ret = list.last().is_some_and(|i| i.mnemonic() == Mnemonic::Ret);
            exit_targets(list)
                .into_iter()
                .chain(return_site(list, rip))
                .chain(sites.iter().copied().filter(|_| ends_in_ret))
                .any(|t| back.contains(&t))
        };
        let mut back = vec![rip];
        loop {
            let before = back.len();
            for (start, m) in &cand {
                if !back.contains(start) && leads_to(&m.insns, &back) {
                    back.push(*start);
                }
            }
            if back.len() == before {
                break;
            }
        }
        cand.into_iter()
            .filter(|(start, _)| back.contains(start))
            .map(|(_, m)| m)
            .collect()
    }

    /// A loop region's other blocks (from [`Self::loop_region`]) as the translator takes
    /// them: with the host address of each one's links.
    fn region_blocks<'m>(&self, members: &'m [RegionMember]) -> Vec<RegionBlock<'m>> {
        members
            .iter()
            .filter_map(|m| {
                Some(RegionBlock {
                    insns: &m.insns,
                    links: &**self.links.get(m.idx as usize)? as *const [Link; LINKS_PER_BLOCK]
                        as u64,
                    idx: m.idx,
                    other_page: m.other_page,
                })
            })
            .collect()
    }

    /// The RAM offset and bytes a region's translation is checked against: the block's own
    /// (`own`, at `ram_offset`) widened to every member's on its page, read again from RAM
    /// when they reach further. (Members on other pages are checked through their links as
    /// the code runs.) `None` if RAM cannot be read there.
    fn region_bytes(
        &self,
        p: &dyn Platform,
        ram_offset: u64,
        own: Vec<u8>,
        members: &[RegionMember],
    ) -> Option<(u64, Vec<u8>)> {
        let (mut lo, mut hi) = (ram_offset, ram_offset + own.len() as u64);
        for m in members.iter().filter(|m| !m.other_page) {
            if let Some(Some(b)) = self.blocks.get(m.idx as usize) {
                lo = lo.min(b.ram_offset);
                hi = hi.max(b.ram_offset + b.bytes.len() as u64);
            }
        }
        if (lo, hi) == (ram_offset, ram_offset + own.len() as u64) {
            return Some((lo, own));
        }
        let mut bytes = vec![0u8; (hi - lo) as usize];
        p.memory().read_ram(lo, &mut bytes).then_some((lo, bytes))
    }

    /// Take compiled block `idx` out of use (a newer translation of the same code replaces
    /// it): links and linear-RIP cache entries naming it are voided with the drop generation.
    fn retire_block(&mut self, idx: u32) {
        if self
            .blocks
            .get_mut(idx as usize)
            .and_then(Option::take)
            .is_some()
        {
            if let Some(h) = self.hot.get_mut(idx as usize) {
                h.func = None;
            }
            self.drop_gen += 1;
        }
    }

    /// Compiled block `idx` was just installed: if it now closes a loop with other compiled
    /// blocks (they became hot together, so none found the others compiled when it was
    /// translated), translate it again with them as one function, to replace it.
    fn try_loop_region(&mut self, p: &mut dyn Platform, idx: u32) {
        let (Some(Some(b)), Some(h)) = (self.blocks.get(idx as usize), self.hot.get(idx as usize))
        else {
            return;
        };
        let (key, ram_offset, stop) = (b.key, b.ram_offset, b.stop);
        if h.insns != h.pure_len || h.func.is_none() || self.region_tried.contains(&key) {
            return;
        }
        let long = key.2 == 64;
        let mut decoder = Decoder::with_ip(key.2, &b.bytes, key.1, DecoderOptions::NONE);
        let insns: Vec<Instruction> = (0..h.insns).map(|_| decoder.decode()).collect();
        let (n, pure_len) = (h.insns, h.pure_len);
        if insns.iter().any(|i| i.is_invalid() || !supported(i, long)) {
            return;
        }
        let members = self.loop_region(p, key, &insns, ram_offset);
        if members.is_empty() {
            return;
        }
        self.region_tried.insert(key);
        let region = self.region_blocks(&members);
        let len = insns.iter().map(Instruction::len).sum();
        let own = b.bytes.get(..len).unwrap_or(&b.bytes).to_vec();
        let Some((lo, bytes)) = self.region_bytes(p, ram_offset, own, &members) else {
            return;
        };
        self.stats.loop_regions += 1;
        let links = Box::new([Link::EMPTY; LINKS_PER_BLOCK]);
        let links_ptr = Some(&*links as *const [Link; LINKS_PER_BLOCK]);
        let prepared = Prepared {
            key,
            ram_offset: lo,
            bytes,
            stop,
            links,
            interp_insns: Box::new([]),
            insns: n,
            pure_len,
            replaces: Some(idx),
        };
        let predecoded = vec![0; insns.len()];
        let t0 = Instant::now();
        if let Err(m) = self.build_block(p, prepared, &insns, &predecoded, links_ptr, &region, t0) {
            tracing::debug!("JIT: loop region at {:#x} not built ({m:?})", key.1);
        }
    }

    /// Stop compiling on the compile thread: blocks queued there go back to cold.
    fn stop_worker(&mut self) {
        self.worker = None;
        self.pending.clear();
        for e in self.map.values_mut() {
            if matches!(e, Entry::Pending) {
                *e = Entry::Cold(0);
            }
        }
    }

    /// Compile blocks on a thread of their own (`on`), so the dispatcher goes on
    /// interpreting while Cranelift works; or on the dispatcher's thread when they become
    /// hot (the default: deterministic, for tests).
    pub fn set_background_compile(&mut self, on: bool) -> Result<()> {
        if !on {
            self.stop_worker();
        } else if self.worker.is_none() {
            let isa = make_isa()?;
            self.worker =
                Some(CompileWorker::spawn(isa).map_err(|e| Error::Codegen(e.to_string()))?);
        }
        Ok(())
    }

    /// Install the blocks the compile thread finished whose guest bytes are unchanged.
    #[cold]
    fn install_done(&mut self, p: &mut dyn Platform) {
        while let Some(done) = self.worker.as_mut().and_then(CompileWorker::take) {
            self.stats.compile_ns += done.ns;
            let Some(prep) = self.pending.remove(&done.seq) else {
                continue;
            };
            let current = match self.map.get(&prep.key).copied() {
                Some(Entry::Pending) => prep.replaces.is_none(),
                Some(Entry::Compiled(i)) => prep.replaces == Some(i),
                _ => false,
            };
            if !current {
                continue;
            }
            let (code, align) = match done.code {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!("JIT: block at {:#x} not compiled: {e}", prep.key.1);
                    if prep.replaces.is_none() {
                        self.map.insert(prep.key, Entry::Never(None));
                    }
                    continue;
                }
            };
            // The guest may have rewritten the code while it was compiled.
            self.buf.resize(prep.bytes.len(), 0);
            if !(p.memory().read_ram(prep.ram_offset, &mut self.buf)
                && self.buf[..] == prep.bytes[..])
            {
                if prep.replaces.is_none() {
                    self.map.insert(prep.key, Entry::Cold(0));
                }
                continue;
            }
            if self.blocks.len() >= MAX_BLOCKS || self.compiler.code_bytes >= MAX_CODE_BYTES {
                // Drops this block and every other pending one with the map.
                self.flush_code();
                continue;
            }
            let upgrade = prep.replaces.is_some();
            match self.compiler.install(&code, align) {
                Ok(func) => {
                    let idx = self.register(p, prep, func);
                    if !upgrade {
                        self.try_loop_region(p, idx);
                    }
                }
                Err(e) => {
                    tracing::debug!("JIT: block at {:#x} not installed: {e}", prep.key.1);
                    if !upgrade {
                        self.map.insert(prep.key, Entry::Never(None));
                    }
                }
            }
        }
    }

    /// Record compiled block `prep` (its code is `func`) and return its index.
    fn register(&mut self, p: &dyn Platform, prep: Prepared, func: BlockFn) -> u32 {
        let Prepared {
            key,
            ram_offset,
            bytes,
            stop,
            links,
            interp_insns,
            insns: n,
            pure_len,
            replaces,
        } = prep;
        if let Some(old) = replaces {
            self.retire_block(old);
        }
        let long = key.2 == 64;
        if let Some(f) = self.perf_map.as_mut() {
            use std::io::Write as _;
            let line = format!(
                "{:x} {:x} guest-{:x}{}\n",
                func.0.get(),
                self.compiler.last_size,
                key.1,
                if long { "" } else { "-32" }
            );
            if f.write_all(line.as_bytes()).is_err() {
                self.perf_map = None;
            }
        }
        self.stats.blocks_compiled += 1;
        self.stats.insns_translated += n;
        p.memory().mark_code_page(ram_offset);
        let idx = self.blocks.len() as u32;
        self.links.push(links);
        self.predecoded.push(interp_insns);
        self.blocks.push(Some(CompiledBlock {
            ram_offset,
            bytes,
            key,
            stop,
        }));
        self.hot.push(HotBlock {
            func: Some(func),
            insns: n,
            pure_len,
            checked: self.epoch,
            succ: [(u64::MAX, 0, NO_BLOCK); 2],
        });
        self.map.insert(key, Entry::Compiled(idx));
        self.pages.entry(ram_offset >> 12).or_default().push(idx);
        idx
    }

    /// Make sure compiled block `idx` may run: it fits `budget`, and if code-page tracking may
    /// have been bypassed since it was last checked (the interpreter's own run loop takes
    /// code-page invalidations for itself), its bytes are still the guest's and its page is
    /// marked as code again. Returns the block's function, or `None` (a stale block is dropped).
    #[inline]
    fn ready(&mut self, p: &dyn Platform, idx: u32, budget: u64) -> Option<BlockFn> {
        let h = *self.hot.get(idx as usize)?;
        let func = h.func?;
        if h.insns > budget {
            return None;
        }
        if h.checked != self.epoch && !self.recheck(p, idx) {
            return None;
        }
        Some(func)
    }

    /// The slow part of [`Self::ready`]: compare block `idx` with guest RAM (dropping it if
    /// it changed) and mark its page as code again.
    #[cold]
    fn recheck(&mut self, p: &dyn Platform, idx: u32) -> bool {
        let Some(Some(blk)) = self.blocks.get(idx as usize) else {
            return false;
        };
        self.buf.resize(blk.bytes.len(), 0);
        let mem = p.memory();
        if !(mem.read_ram(blk.ram_offset, &mut self.buf) && self.buf[..] == blk.bytes[..]) {
            self.drop_block(idx);
            return false;
        }
        // The interpreter would fetch (and so re-mark as code) this block's page here; with
        // the page marked, a store into it ends the block where the interpreter's would.
        mem.mark_code_page(blk.ram_offset);
        if let Some(h) = self.hot.get_mut(idx as usize) {
            h.checked = self.epoch;
        }
        true
    }

    /// Run compiled block `idx`, then the blocks its exits lead to, for as long as the
    /// interpreter would have nothing to do between them: each ran to its end, the next is
    /// compiled and fits the budget, no poll is due, no I/O happened (which also keeps the
    /// context generation) and no interrupt is requested while IF is set — so every skipped
    /// boundary is one where the interpreter's run loop would only have fetched the next
    /// block. Returns (instructions retired in all, then for the last block: instructions it
    /// retired, exit code, the interpreter block's length), or `None` if nothing ran.
    fn run_chain(
        &mut self,
        p: &mut dyn Platform,
        idx: u32,
        budget: u64,
        poll_room: u64,
    ) -> Option<(u64, u64, u64, u64)> {
        let mut func = self.ready(p, idx, budget)?;
        let mut idx = idx;
        let gen = self.interp.jit_ctx_gen();
        let jgen = self.jmp_gen();
        let drop_gen = self.drop_gen;
        // Links are valid for one (linear-RIP cache tag, epoch): dropped blocks, another
        // context or blocks needing a re-check void them all.
        self.link_gen = self.link_gens.gen_for((jgen, self.epoch));
        let trampoline = self.compiler.trampoline;
        let ctx = &mut *self.ctx;
        ctx.check_tlb_gen(&self.interp);
        ctx.mem = p.memory();
        ctx.gpr = self.interp.jit_gprs();
        ctx.rflags = self.interp.jit_rflags();
        ctx.flags_op = 0;
        ctx.xmm = self.interp.jit_xmm_ptr();
        ctx.sse_ok = u64::from(self.interp.jit_sse_usable());
        ctx.seg_base = [
            self.interp.jit_linear(SegReg::Fs, 0),
            self.interp.jit_linear(SegReg::Gs, 0),
        ];
        ctx.chain_ctx_gen = gen;
        // Translated code never changes IF, and only polls and I/O (which stop the chain)
        // raise interrupt requests: with one requested now, every boundary is the
        // dispatcher's to look at.
        let requested = ctx.rflags & IF != 0 && p.intr();
        ctx.link_gen = if requested || self.interp.jit_io_pending() {
            NO_LINK
        } else {
            self.link_gen
        };
        let mut total = 0u64;
        let (last, code, pure_len) = loop {
            let ctx = &mut *self.ctx;
            ctx.fault = 0;
            ctx.fault_charge = 0;
            ctx.interp = &mut self.interp;
            ctx.budget = budget - total;
            ctx.limit = ctx.budget.min(poll_room.saturating_sub(total));
            ctx.chained = 0;
            ctx.chained_blocks = 0;
            ctx.last = u64::from(idx);
            ctx.miss_link = 0;
            // Pages that became code since the last chain (this one's own included) lose
            // their inline stores.
            ctx.drop_new_code_pages(p.memory());
            let mut plat: &mut dyn Platform = p;
            let plat_ptr = (&mut plat as *mut &mut dyn Platform).cast::<u8>();
            // SAFETY: `trampoline` is this module's entry (C convention) into compiled code
            // and `func` live compiled code of the same module (`ready` took it from
            // `self.hot`, so the module holding it has not been freed), as are the blocks it
            // chains to (their links are current: no block was dropped and the code cache
            // was not flushed since they were filled). Generated code reads and writes only
            // `*ctx` (exclusively borrowed here), the links (boxed in `self.links`, written
            // only between calls) and guest RAM through host pointers that the soft TLB
            // took from `GuestMemory`'s mapping, which outlives the call; its helpers reach
            // the interpreter through `ctx.interp` and the platform through `plat_ptr`,
            // both valid and otherwise unused until the call returns.
            let code = unsafe { trampoline(ctx, plat_ptr, func.0.get() as *const u8) };
            let ctx = &mut *self.ctx;
            ctx.interp = std::ptr::null_mut();
            let n = ctx.executed;
            total += ctx.chained + n;
            self.blocks_run += 1 + ctx.chained_blocks;
            idx = ctx.last as u32;
            let miss_link = ctx.miss_link;
            let Some(h) = self.hot.get(idx as usize) else {
                break (n, code, n);
            };
            let pure_len = h.pure_len;
            if code != EXIT_NEXT as u64 || n < pure_len {
                if n < pure_len && code == EXIT_NEXT as u64 {
                    let stop = self.blocks.get(idx as usize).and_then(|b| b.as_ref()?.stop);
                    self.note_fallback(stop, 1);
                }
                break (n, code, pure_len);
            }
            // The next boundary: would the interpreter do more than fetch there?
            if total >= poll_room
                || self.interp.jit_ctx_gen() != gen
                || self.interp.jit_io_pending()
                || (ctx.rflags & IF != 0 && p.intr())
            {
                break (n, code, pure_len);
            }
            let lin = ctx.rip;
            if self.drop_gen != drop_gen {
                break (n, code, pure_len);
            }
            let succ = self.hot[idx as usize].succ;
            let next = match succ.iter().find(|&&(l, g, _)| l == lin && g == jgen) {
                Some(&(_, _, next)) => next,
                None => {
                    let (tag, g, next) = self.jmp[jmp_slot(lin)];
                    let Some(next) = entry_block(next).filter(|_| tag == lin && g == jgen) else {
                        break (n, code, pure_len);
                    };
                    // Remember it as this block's newest successor.
                    self.hot[idx as usize].succ = [(lin, jgen, next), succ[0]];
                    next
                }
            };
            match self.ready(p, next, budget - total) {
                Some(f) => {
                    if self.drop_gen == drop_gen {
                        if miss_link != 0 {
                            self.fill_link(idx, miss_link, next, f);
                        } else {
                            self.fill_ind_cache(lin, next, f);
                        }
                    }
                    func = f;
                    idx = next;
                }
                None => break (n, code, pure_len),
            }
        };
        let ctx = &mut *self.ctx;
        let rflags = ctx.materialize_flags();
        self.interp.jit_set_gprs(&ctx.gpr);
        self.interp.jit_set_rflags(rflags);
        self.interp.jit_set_rip(ctx.rip);
        self.interp.jit_retire(total);
        self.stats.insns_native += total;
        Some((total, last, code, pure_len))
    }

    /// Make block `next` (ready in this link generation) the indirect-branch cache's
    /// successor for target `rip`.
    fn fill_ind_cache(&mut self, rip: u64, next: u32, func: BlockFn) {
        let Some(h) = self.hot.get(next as usize) else {
            return;
        };
        let entry = Link {
            gen: self.link_gen,
            func: func.0.get() as u64,
            insns: h.insns,
            idx: u64::from(next),
            tag: rip,
        };
        if let Some(e) = self.ind_cache.get_mut(ind_cache_slot(rip)) {
            *e = entry;
        }
    }

    /// Point the link at address `addr` (one of block `owner`'s, as its generated code
    /// reported it) at block `next`, ready in this link generation.
    fn fill_link(&mut self, owner: u32, addr: u64, next: u32, func: BlockFn) {
        let Some(h) = self.hot.get(next as usize) else {
            return;
        };
        let insns = h.insns;
        let gen = self.link_gen;
        let size = std::mem::size_of::<Link>() as u64;
        // Find the link by address among the block's own (never write through a raw address).
        let Some(links) = self.links.get_mut(owner as usize) else {
            return;
        };
        let base = links.as_ptr() as u64;
        if addr < base || !(addr - base).is_multiple_of(size) {
            return;
        }
        if let Some(link) = links.get_mut(((addr - base) / size) as usize) {
            *link = Link {
                gen,
                func: func.0.get() as u64,
                insns,
                idx: u64::from(next),
                tag: 0,
            };
        }
    }

    /// The mode allows translated code: 32-bit flat protected mode, or 64-bit code, and not
    /// one instruction at a time. The segment part is cached per cache generation.
    fn jit_mode_ok(&mut self) -> bool {
        if self.interp.jit_single() {
            return false;
        }
        let gen = self.ctx.cache_gen.get(&self.interp);
        if self.mode_cache.0 != gen {
            let m = self.interp.jit_mode();
            let ok = m.bitness == 64 || (m.bitness == 32 && m.flat && m.code_flat && m.stack32);
            self.mode_cache = (gen, ok);
        }
        self.mode_cache.1
    }

    /// Count a run of the interpreter for the instruction `m` a translation stopped before
    /// (`weight` 0 when the block could not be translated at all: counted once per lookup).
    fn note_fallback(&mut self, m: Option<Mnemonic>, weight: u64) {
        if let Some(m) = m {
            if let Some(c) = self.fallbacks.get_mut(m as usize) {
                *c += weight.max(1);
            }
        }
    }

    /// The mnemonics translated code most often stopped before, with counts (most first):
    /// what to translate next. Also logged at `debug` level when the backend is dropped.
    pub fn fallback_profile(&self, top: usize) -> Vec<(Mnemonic, u64)> {
        top_counts(&self.fallbacks, top)
    }

    /// The mnemonics compiled blocks most often ran through the interpreter helper, with
    /// counts (most first): what to translate natively next.
    pub fn interpreted_profile(&self, top: usize) -> Vec<(Mnemonic, u64)> {
        top_counts(&self.ctx.interp_runs, top)
    }

    /// The dispatcher: the interpreter's run loop at block granularity, with compiled blocks
    /// standing in for whole interpreter blocks.
    ///
    /// It keeps the interpreter's block structure so budgets, fault accounting and event
    /// delivery points match it exactly: `pure_left` counts the instructions left of the block
    /// the interpreter alone would be running (after a compiled block stopped before an
    /// instruction it does not cover). Inside such a block, instructions run one at a time in
    /// the interpreter with no polling or event delivery, and a faulting one is not charged to
    /// the budget (the interpreter charges a fault only to the first instruction of a block).
    fn run_inner(&mut self, p: &mut dyn Platform, limit: RunLimit) -> pcvm_core::Result<VmExit> {
        let mut budget = match limit {
            RunLimit::Unbounded => u64::MAX,
            RunLimit::Instructions(n) => n,
        };
        let kicker = self.interp.kicker();
        self.sync(p);
        if self.interp.jit_halted() {
            p.poll();
            if !self.interp.jit_event_deliverable(p) {
                return Ok(VmExit::Halted);
            }
        }
        let poll_interval = if p.clock().mode() == ClockMode::Host {
            HOST_POLL_INTERVAL
        } else {
            POLL_INTERVAL
        };
        let mut since_poll = 0u64;
        // Instructions of compiled code not yet added to the virtual clock.
        let mut clock_pending = 0u64;
        // Instructions left of the interpreter block being run piecewise.
        let mut pure_left = 0u64;
        loop {
            if pure_left == 0 {
                if since_poll >= poll_interval || self.interp.jit_take_io_done() {
                    p.clock()
                        .add_instructions(std::mem::take(&mut clock_pending));
                    since_poll = 0;
                    p.poll();
                    match p.system_request() {
                        Some(SystemRequest::Reset) => return Ok(VmExit::Reset),
                        Some(SystemRequest::PowerOff(_)) => return Ok(VmExit::PowerOff),
                        None => {}
                    }
                    if kicker.take() {
                        return Ok(VmExit::Kicked);
                    }
                    self.sync(p);
                }
                if let Some(exit) = self.interp.jit_boundary(p) {
                    p.clock().add_instructions(clock_pending);
                    return Ok(exit);
                }
                if budget == 0 {
                    p.clock().add_instructions(clock_pending);
                    return Ok(VmExit::BudgetExhausted);
                }
                if self.jit_mode_ok() {
                    if let Some(idx) = self.lookup(p) {
                        let poll_room = poll_interval.saturating_sub(since_poll);
                        if let Some((total, n, code, pure_len)) =
                            self.run_chain(p, idx, budget, poll_room)
                        {
                            budget -= total.min(budget);
                            since_poll += total;
                            clock_pending += total;
                            pure_left = match code {
                                // The interpreter re-runs the faulting instruction, the n+1st
                                // of its block.
                                c if c == EXIT_FAULT as u64 => (pure_len - n).max(1),
                                // The interpreter also ends a block after a store into it,
                                // and at a fault it delivered.
                                c if c == EXIT_STOP as u64
                                    || c == EXIT_DELIVERED as u64
                                    || c == EXIT_SHUTDOWN as u64 =>
                                {
                                    0
                                }
                                _ => pure_len - n.min(pure_len),
                            };
                            if code == EXIT_SHUTDOWN as u64 {
                                p.clock().add_instructions(clock_pending);
                                return Ok(VmExit::Shutdown);
                            }
                            if code == EXIT_DELIVERED as u64 && self.ctx.fault_charge != 0 {
                                // A fault on the first instruction of the interpreter's
                                // block with nothing retired costs one instruction there.
                                budget = budget.saturating_sub(1);
                                since_poll += 1;
                                clock_pending += 1;
                            }
                            if code == EXIT_STOP as u64 {
                                // Drop the decodes the store made stale before the next fetch.
                                self.sync(p);
                            }
                            if !(pure_left > 0 && n == 0) {
                                continue;
                            }
                            // A fault on the block's first instruction: the interpreter runs
                            // (and charges) it as the start of its block, below.
                            pure_left = 0;
                        }
                    }
                }
                // The interpreter runs the block at CS:EIP.
                let shadowed = self.interp.jit_shadow_only();
                if !shadowed && self.interp.jit_single() {
                    // One instruction per block (TF, shadows, DR7): the interpreter's own
                    // loop, for one instruction.
                    let exit = self.interp_run(p, 1, &mut since_poll, &mut clock_pending)?;
                    budget -= 1;
                    if let Some(exit) = exit {
                        return Ok(exit);
                    }
                    continue;
                }
                let run = self.interp.jit_run_block(p, budget, shadowed);
                since_poll += run.charged;
                clock_pending += run.charged;
                budget -= run.charged.min(budget);
                if let Some(exit) = run.exit {
                    p.clock().add_instructions(clock_pending);
                    return Ok(exit);
                }
                if run.smc {
                    self.sync(p);
                }
            } else {
                // The rest of an interpreter block, one instruction at a time.
                if budget == 0 {
                    p.clock().add_instructions(clock_pending);
                    return Ok(VmExit::BudgetExhausted);
                }
                let step = self.interp.jit_step(p, budget);
                since_poll += step.retired;
                clock_pending += step.retired;
                if step.shutdown {
                    p.clock().add_instructions(clock_pending);
                    return Ok(VmExit::Shutdown);
                }
                budget -= step.retired.min(budget);
                if step.faulted || step.smc {
                    // The interpreter's block ends at a fault or a store into code.
                    pure_left = 0;
                    if step.smc {
                        self.sync(p);
                    }
                } else {
                    pure_left -= 1;
                }
            }
        }
    }

    /// Let the interpreter run `k` instructions; `Some(exit)` unless it used the budget.
    fn interp_run(
        &mut self,
        p: &mut dyn Platform,
        k: u64,
        since_poll: &mut u64,
        clock_pending: &mut u64,
    ) -> pcvm_core::Result<Option<VmExit>> {
        p.clock().add_instructions(std::mem::take(clock_pending));
        self.epoch += 1;
        let before = self.interp.instructions_retired();
        let exit = self.interp.run(p, RunLimit::Instructions(k))?;
        *since_poll += self.interp.instructions_retired() - before;
        Ok((exit != VmExit::BudgetExhausted).then_some(exit))
    }
}

impl CpuBackend for JitBackend {
    fn name(&self) -> &'static str {
        "jit"
    }

    fn run(&mut self, platform: &mut dyn Platform, limit: RunLimit) -> pcvm_core::Result<VmExit> {
        if self.interp.jit_debugging() {
            // Breakpoints, watchpoints, single-step and tracing: the interpreter alone.
            self.epoch += 1;
            return self.interp.run(platform, limit);
        }
        self.run_inner(platform, limit)
    }

    fn state(&mut self) -> pcvm_core::Result<CpuState> {
        self.interp.state()
    }

    fn set_state(&mut self, state: &CpuState) -> pcvm_core::Result<()> {
        self.interp.set_state(state)
    }

    fn set_debug(&mut self, config: &DebugConfig) -> pcvm_core::Result<()> {
        self.interp.set_debug(config)
    }

    fn translate(
        &mut self,
        platform: &dyn Platform,
        linear: u64,
    ) -> pcvm_core::Result<Option<u64>> {
        self.interp.translate(platform, linear)
    }

    fn kicker(&self) -> Kicker {
        self.interp.kicker()
    }

    fn flush_caches(&mut self) {
        self.interp.flush_caches();
        self.flush_code();
    }

    fn instructions_retired(&self) -> u64 {
        self.interp.instructions_retired()
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        self.interp.cpuid(leaf, subleaf)
    }
}
