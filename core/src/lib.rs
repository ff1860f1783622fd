//! pcvm-core: the machine model every CPU backend and device shares.
//!
//! - [`cpu_state`]: the architectural state a backend loads and stores ([`CpuState`]).
//! - [`backend`]: the one trait every CPU backend implements ([`CpuBackend`]).
//! - [`memory`]: guest physical memory with the PC memory map ([`GuestMemory`]).
//! - [`bus`]: port-I/O and MMIO buses over one range map ([`Bus`], [`BusDevice`]).
//! - [`irq`]: interrupt lines and the INTR pin a CPU samples.
//! - [`clock`]: the virtual clock and timer deadlines.
//! - [`platform`]: what a backend sees of the machine while it runs ([`Platform`], [`Board`]).
#![deny(unsafe_code)]

pub mod backend;
pub mod bus;
pub mod clock;
pub mod cpu_state;
pub mod error;
pub mod irq;
#[allow(unsafe_code)] // guest RAM is a host mapping; see memory.rs SAFETY notes
pub mod memory;
pub mod platform;

pub use backend::{
    Breakpoint, CpuBackend, DebugConfig, Kicker, RunLimit, StopReason, VmExit, WatchKind,
    Watchpoint,
};
pub use bus::{Bus, BusAccess, BusDevice, SharedDevice};
pub use clock::{ClockMode, TimerDevice, TimerHandle, Timers, VirtualClock};
pub use cpu_state::{CpuState, DescriptorTable, FxsaveArea, Msrs, SegReg, Segment};
pub use error::{Error, Result};
pub use irq::{InterruptController, IntrPin, IrqLine};
pub use memory::{GuestMemory, MemoryLayout, PhysRegion};
pub use platform::{Board, Platform, SystemRequest, SystemRequests};
