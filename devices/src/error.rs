//! Errors of the device models (host-side failures only; guest oddities are emulated, not errors).

use thiserror::Error;

/// What went wrong while building or configuring a device.
#[derive(Debug, Error)]
pub enum Error {
    /// A fw_cfg file name is empty or longer than the 55 bytes the directory entry holds.
    #[error("failed to add fw_cfg file {0:?}: name must be 1..=55 bytes")]
    FwCfgFileName(String),
    /// Two fw_cfg files share a name.
    #[error("failed to add fw_cfg file {0:?}: a file with this name exists")]
    FwCfgDuplicateFile(String),
    /// fw_cfg ran out of file selectors.
    #[error("failed to add fw_cfg file {0:?}: no free selector")]
    FwCfgFull(String),
    /// A fw_cfg item is larger than its 32-bit size field.
    #[error("failed to add fw_cfg item {0:?}: larger than 4 GiB")]
    FwCfgTooLarge(String),
    /// A device was given an I/O range it cannot decode.
    #[error("failed to configure {device}: {reason}")]
    Config {
        device: &'static str,
        reason: String,
    },
    /// Writing device output to the host failed.
    #[error("failed to write {device} output")]
    Output {
        device: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Result with the devices [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;
