//! Errors of the JIT backend.

/// What can go wrong creating the backend or compiling a block.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Cranelift rejected the host, a setting or a function.
    #[error("code generation failed: {0}")]
    Codegen(String),
    /// The block holds an instruction the translator does not cover.
    #[error("block not translatable")]
    Untranslatable,
}

/// Result with the JIT's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
