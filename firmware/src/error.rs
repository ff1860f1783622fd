//! Errors of firmware loading and configuration.

use std::path::PathBuf;

use thiserror::Error;

/// What went wrong while loading or placing firmware.
#[derive(Debug, Error)]
pub enum Error {
    /// The image file could not be read (missing, unreadable, a directory).
    #[error("failed to read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The image file is empty.
    #[error("{what} {path} is empty")]
    Empty { what: &'static str, path: PathBuf },
    /// The BIOS image is smaller than any real BIOS (likely truncated).
    #[error("BIOS image {path} is truncated: {size} bytes, a BIOS image is at least {min} bytes")]
    BiosTooSmall { path: PathBuf, size: u64, min: u64 },
    /// The BIOS image is larger than the flash window below 4 GiB.
    #[error("BIOS image {path} is too large: {size} bytes, at most {max} bytes fit below 4 GiB")]
    BiosTooLarge { path: PathBuf, size: u64, max: u64 },
    /// The BIOS image size is not a power of two (flash parts are; likely truncated or padded).
    #[error("BIOS image {path} has size {size} bytes, which is not a power of two (truncated?)")]
    BiosNotPowerOfTwo { path: PathBuf, size: u64 },
    /// The 16 bytes at the reset vector are blank, so the CPU would execute nothing.
    #[error("BIOS image {path} has no code at the reset vector (last 16 bytes are blank)")]
    BiosNoResetVector { path: PathBuf },
    /// An option ROM lacks the 0x55 0xAA signature.
    #[error("option ROM {path} has no 0x55AA signature")]
    OptionRomSignature { path: PathBuf },
    /// An option ROM is larger than the 128 KiB expansion area.
    #[error("option ROM {path} is too large: {size} bytes, at most {max} bytes")]
    OptionRomTooLarge { path: PathBuf, size: u64, max: u64 },
    /// A kernel image (bzImage, ELF, multiboot) is malformed, truncated or unsupported.
    #[error("failed to load kernel image: {0}")]
    KernelImage(String),
    /// The kernel, initrd, command line or boot structures do not fit in guest RAM.
    #[error("failed to place {what}: {reason}")]
    KernelPlacement { what: &'static str, reason: String },
    /// Mapping the image into guest memory failed.
    #[error("failed to map {what}")]
    Map {
        what: &'static str,
        #[source]
        source: pcvm_core::Error,
    },
}

/// Result with the firmware [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
