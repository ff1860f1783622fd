//! Segmentation: offset → linear address with limit and type checks, and descriptor loads
//! (Intel SDM Vol. 3A §3.4, §5.3–5.6).
//!
//! Owned by SYS. The initial version implements real-mode and flat protected-mode limit checks;
//! descriptor loading, privilege checks, expand-down segments and gates are SYS's work.

use pcvm_core::SegReg;

use crate::access::AccessKind;
use crate::{Fault, Interpreter};

impl Interpreter {
    /// Linear address of `len` bytes at `offset` in segment `seg`, after limit checks.
    /// Violations raise #SS(0) for SS and #GP(0) otherwise (SDM Vol. 3A §5.3).
    #[inline]
    pub(crate) fn seg_linear(
        &self,
        seg: SegReg,
        offset: u64,
        len: u64,
        _kind: AccessKind,
    ) -> Result<u64, Fault> {
        let s = self.state.seg(seg);
        if self.state.in_64bit_code() {
            let base = if matches!(seg, SegReg::Fs | SegReg::Gs) {
                s.base
            } else {
                0
            };
            return Ok(base.wrapping_add(offset));
        }
        let last = offset.wrapping_add(len - 1);
        if last > u64::from(s.limit) || last < offset {
            return Err(if seg == SegReg::Ss {
                Fault::ss(0)
            } else {
                Fault::gp(0)
            });
        }
        Ok((s.base.wrapping_add(offset)) & 0xFFFF_FFFF)
    }
}
