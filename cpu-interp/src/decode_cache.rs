//! Decoded basic blocks keyed by physical address (owned by EXEC). Placeholder.

/// Cache of decoded blocks.
#[derive(Default)]
pub(crate) struct DecodeCache {}
