//! Errors of the core machine model.

use thiserror::Error;

/// What went wrong in the core machine model.
#[derive(Debug, Error)]
pub enum Error {
    /// The requested guest RAM size cannot be laid out.
    #[error("invalid guest RAM size {0:#x} bytes: {1}")]
    InvalidRamSize(u64, &'static str),
    /// Allocating the host mapping for guest RAM failed.
    #[error("failed to map guest RAM: {0}")]
    MapRam(String),
    /// A ROM image does not fit where it should be mapped.
    #[error("failed to map ROM at {addr:#x}: {reason}")]
    MapRom { addr: u64, reason: String },
    /// Two devices claim overlapping bus ranges.
    #[error("failed to add bus range {base:#x}+{len:#x} for {name}: overlaps {other}")]
    BusOverlap {
        base: u64,
        len: u64,
        name: String,
        other: String,
    },
    /// A bus range is empty or wraps the address space.
    #[error("failed to add bus range {base:#x}+{len:#x} for {name}: empty or wrapping range")]
    BusRange { base: u64, len: u64, name: String },
    /// A guest physical access fell outside RAM and ROM.
    #[error("guest physical address {0:#x} is not backed by RAM")]
    NotRam(u64),
    /// A CPU state snapshot has an unknown format version.
    #[error("unsupported CPU state format version {found} (expected {expected})")]
    StateVersion { found: u32, expected: u32 },
    /// A backend could not do what was asked.
    #[error("CPU backend {backend} failed to {operation}: {reason}")]
    Backend {
        backend: &'static str,
        operation: &'static str,
        reason: String,
    },
}

/// Result with the core [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
