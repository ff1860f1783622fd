//! Errors of the interpreter as a backend (host-side failures; guest faults are [`crate::Fault`]).

use thiserror::Error;

/// What went wrong on the host side.
#[derive(Debug, Error)]
pub enum Error {
    /// A CPU state to load is not valid for this backend.
    #[error("failed to load CPU state: {0}")]
    InvalidState(String),
}

/// Result with the interpreter [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
