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
mod mmu;
mod segment;
mod task;

pub use error::{Error, Result};
pub use fault::Fault;

use pcvm_core::{CpuState, DebugConfig, Kicker};

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
}

impl Default for Interpreter {
    fn default() -> Self {
        Self::new()
    }
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
        }
    }
}
