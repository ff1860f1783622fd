//! Lazy arithmetic flags (owned by EXEC). Placeholder: flags are always materialized.

use crate::Interpreter;

/// The last flag-setting operation, evaluated only when a flag is read.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LazyFlags {}

impl Interpreter {
    /// RFLAGS with the arithmetic flags materialized.
    #[inline]
    pub(crate) fn rflags(&self) -> u64 {
        self.state.rflags
    }

    /// Replace RFLAGS (the caller has applied the mode's writable-bit rules).
    #[inline]
    pub(crate) fn set_rflags(&mut self, value: u64) {
        self.state.rflags = value | pcvm_core::cpu_state::flags::FIXED1;
    }
}
