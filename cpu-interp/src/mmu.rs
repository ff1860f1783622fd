//! Paging: linear → physical translation with a software TLB (Intel SDM Vol. 3A §4).
//!
//! Owned by SYS. The initial version handles paging disabled only.

use pcvm_core::Platform;

use crate::access::AccessKind;
use crate::{Fault, Interpreter};

/// Software TLB of linear page → physical page translations.
#[derive(Default)]
pub(crate) struct Tlb {}

impl Tlb {
    /// Drop every translation (CR3 write, CR0/CR4 paging bit changes, memory map change).
    pub(crate) fn flush(&mut self) {}
}

impl Interpreter {
    /// Translate a linear address for an access of `kind` at the current privilege level.
    #[inline]
    pub(crate) fn translate(
        &mut self,
        _p: &mut dyn Platform,
        linear: u64,
        _kind: AccessKind,
    ) -> Result<u64, Fault> {
        if self.state.cr0 & pcvm_core::cpu_state::cr::CR0_PG == 0 {
            return Ok(linear & 0xFFFF_FFFF);
        }
        Err(Fault::with_code(crate::fault::vector::PF, 0))
    }
}
