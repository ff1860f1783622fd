//! Lazy arithmetic flags (Intel SDM Vol. 1 §3.4.3.1).
//!
//! The common flag-setting instructions (ADD/ADC/SUB/SBB/CMP/NEG, the logic group, INC/DEC)
//! record their operands and result here instead of computing OF/SF/ZF/AF/PF/CF; the flags are
//! computed only when something reads them. Every other instruction materializes RFLAGS with
//! [`Interpreter::rflags`] and writes it back with [`Interpreter::set_rflags`].

use pcvm_core::cpu_state::flags as fl;

use crate::Interpreter;

/// The six arithmetic status flags.
pub(crate) const ARITH: u64 = fl::CF | fl::PF | fl::AF | fl::ZF | fl::SF | fl::OF;

/// Which operation produced the lazy result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum FlagOp {
    /// `state.rflags` holds the true flags.
    #[default]
    None,
    /// res = a + b.
    Add,
    /// res = a + b + carry in.
    Adc,
    /// res = a - b.
    Sub,
    /// res = a - b - borrow in.
    Sbb,
    /// AND/OR/XOR/TEST: CF = OF = 0, AF = 0 (undefined per the SDM).
    Logic,
    /// INC: CF preserved (kept in `a`'s companion `cf_in`).
    Inc,
    /// DEC: CF preserved.
    Dec,
    /// CF and OF given in `a` (bit 0 CF, bit 1 OF), SF/ZF/PF from `res`, AF = 0: MUL/IMUL
    /// (SF/ZF/PF of the low half, undefined per the SDM) and SHL/SHR/SAR.
    CfOf,
}

/// The last flag-setting operation, evaluated only when a flag is read.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LazyFlags {
    pub op: FlagOp,
    /// Operand width in bits (8, 16, 32, 64).
    pub bits: u8,
    /// Carry flag to keep (INC/DEC).
    pub cf_in: bool,
    pub a: u64,
    pub b: u64,
    pub res: u64,
}

/// Parity of the low byte: PF is set when it has an even number of 1 bits.
#[inline]
pub(crate) fn parity(v: u64) -> bool {
    (v as u8).count_ones() & 1 == 0
}

/// Mask of an operand of `bits` width.
#[inline]
pub(crate) const fn width_mask(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// SF, ZF and PF of a result of `bits` width.
#[inline]
pub(crate) fn szp(res: u64, bits: u8) -> u64 {
    let m = width_mask(bits);
    let r = res & m;
    let mut f = 0;
    if r == 0 {
        f |= fl::ZF;
    }
    if (r >> (bits - 1)) & 1 != 0 {
        f |= fl::SF;
    }
    if parity(r) {
        f |= fl::PF;
    }
    f
}

impl LazyFlags {
    /// The arithmetic flags this operation produced (only the [`ARITH`] bits).
    #[inline]
    fn compute(&self) -> u64 {
        let bits = self.bits;
        let top = u64::from(bits) - 1;
        let (a, b, r) = (self.a, self.b, self.res);
        let mut f = szp(r, bits);
        match self.op {
            FlagOp::None => {}
            FlagOp::Add | FlagOp::Adc => {
                let carry = (a & b) | ((a | b) & !r);
                if (carry >> top) & 1 != 0 {
                    f |= fl::CF;
                }
                if (((a ^ r) & (b ^ r)) >> top) & 1 != 0 {
                    f |= fl::OF;
                }
                if (a ^ b ^ r) & 0x10 != 0 {
                    f |= fl::AF;
                }
            }
            FlagOp::Sub | FlagOp::Sbb => {
                let borrow = (!a & b) | ((!a | b) & r);
                if (borrow >> top) & 1 != 0 {
                    f |= fl::CF;
                }
                if (((a ^ b) & (a ^ r)) >> top) & 1 != 0 {
                    f |= fl::OF;
                }
                if (a ^ b ^ r) & 0x10 != 0 {
                    f |= fl::AF;
                }
            }
            FlagOp::Logic => {}
            FlagOp::CfOf => {
                if self.a & 1 != 0 {
                    f |= fl::CF;
                }
                if self.a & 2 != 0 {
                    f |= fl::OF;
                }
            }
            FlagOp::Inc => {
                if self.cf_in {
                    f |= fl::CF;
                }
                if r & width_mask(bits) == 1 << top {
                    f |= fl::OF;
                }
                if r & 0xF == 0 {
                    f |= fl::AF;
                }
            }
            FlagOp::Dec => {
                if self.cf_in {
                    f |= fl::CF;
                }
                if r & width_mask(bits) == (1 << top) - 1 {
                    f |= fl::OF;
                }
                if r & 0xF == 0xF {
                    f |= fl::AF;
                }
            }
        }
        f
    }
}

impl Interpreter {
    /// RFLAGS with the arithmetic flags materialized.
    #[inline]
    pub(crate) fn rflags(&self) -> u64 {
        if self.flags.op == FlagOp::None {
            self.state.rflags
        } else {
            (self.state.rflags & !ARITH) | self.flags.compute()
        }
    }

    /// Replace RFLAGS (the caller has applied the mode's writable-bit rules). Reserved bits
    /// 3, 5, 15 and 22–63 read as 0 and bit 1 as 1 (SDM Vol. 1 §3.4.3).
    #[inline]
    pub(crate) fn set_rflags(&mut self, value: u64) {
        self.flags.op = FlagOp::None;
        self.state.rflags = (value & 0x003F_7FD7) | fl::FIXED1;
    }

    /// Write the arithmetic flags only, leaving the system flags alone.
    #[inline]
    pub(crate) fn set_arith_flags(&mut self, arith: u64) {
        let f = self.rflags();
        self.set_rflags((f & !ARITH) | (arith & ARITH));
    }

    /// Record a lazy flag result.
    #[inline]
    pub(crate) fn set_lazy(&mut self, op: FlagOp, bits: u8, a: u64, b: u64, res: u64) {
        self.flags = LazyFlags {
            op,
            bits,
            cf_in: false,
            a,
            b,
            res,
        };
    }

    /// Record INC/DEC, which keep CF.
    #[inline]
    pub(crate) fn set_lazy_incdec(&mut self, op: FlagOp, bits: u8, a: u64, res: u64) {
        let cf_in = self.cf();
        self.flags = LazyFlags {
            op,
            bits,
            cf_in,
            a,
            b: 1,
            res,
        };
    }

    /// The carry flag.
    #[inline]
    pub(crate) fn cf(&self) -> bool {
        let l = &self.flags;
        match l.op {
            FlagOp::None => self.state.rflags & fl::CF != 0,
            FlagOp::Add => l.res < l.a,
            FlagOp::Sub => l.a < l.b,
            FlagOp::Logic => false,
            FlagOp::CfOf => l.a & 1 != 0,
            FlagOp::Inc | FlagOp::Dec => l.cf_in,
            FlagOp::Adc | FlagOp::Sbb => l.compute() & fl::CF != 0,
        }
    }

    /// The zero flag.
    #[inline]
    pub(crate) fn zf(&self) -> bool {
        if self.flags.op == FlagOp::None {
            self.state.rflags & fl::ZF != 0
        } else {
            self.flags.res & width_mask(self.flags.bits) == 0
        }
    }

    /// The sign flag.
    #[inline]
    pub(crate) fn sf(&self) -> bool {
        if self.flags.op == FlagOp::None {
            self.state.rflags & fl::SF != 0
        } else {
            (self.flags.res >> (self.flags.bits - 1)) & 1 != 0
        }
    }

    /// The overflow flag.
    #[inline]
    pub(crate) fn of(&self) -> bool {
        let l = &self.flags;
        let top = u32::from(l.bits).wrapping_sub(1) & 63;
        match l.op {
            FlagOp::None => self.state.rflags & fl::OF != 0,
            FlagOp::Logic => false,
            FlagOp::CfOf => l.a & 2 != 0,
            // The same formulas as `compute`, without the other five flags.
            FlagOp::Add | FlagOp::Adc => (((l.a ^ l.res) & (l.b ^ l.res)) >> top) & 1 != 0,
            FlagOp::Sub | FlagOp::Sbb => (((l.a ^ l.b) & (l.a ^ l.res)) >> top) & 1 != 0,
            FlagOp::Inc | FlagOp::Dec => l.compute() & fl::OF != 0,
        }
    }

    /// Evaluate condition code `cc` (the low nibble of Jcc/SETcc/CMOVcc, SDM Vol. 1 App. B).
    #[inline]
    pub(crate) fn cond(&self, cc: u8) -> bool {
        self.cond_inline(cc)
    }

    /// [`Self::cond`], always inlined: with a constant `cc` only that condition's test remains.
    #[inline(always)]
    pub(crate) fn cond_inline(&self, cc: u8) -> bool {
        let r = match cc >> 1 {
            0 => self.of(),
            1 => self.cf(),
            2 => self.zf(),
            3 => self.cf() || self.zf(),
            4 => self.sf(),
            5 => self.rflags() & fl::PF != 0,
            6 => self.sf() != self.of(),
            _ => self.zf() || (self.sf() != self.of()),
        };
        r ^ (cc & 1 != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lazy(op: FlagOp, bits: u8, a: u64, b: u64, res: u64) -> u64 {
        LazyFlags {
            op,
            bits,
            cf_in: false,
            a,
            b,
            res,
        }
        .compute()
    }

    #[test]
    fn add_and_sub_flags() {
        // 0x7F + 1 = 0x80: OF, SF, AF.
        let f = lazy(FlagOp::Add, 8, 0x7F, 1, 0x80);
        assert_eq!(f, fl::OF | fl::SF | fl::AF);
        // 0xFF + 1 = 0x00: CF, ZF, AF, PF.
        let f = lazy(FlagOp::Add, 8, 0xFF, 1, 0x00);
        assert_eq!(f, fl::CF | fl::ZF | fl::AF | fl::PF);
        // 0 - 1 = 0xFFFF: CF, SF, AF, PF.
        let f = lazy(FlagOp::Sub, 16, 0, 1, 0xFFFF);
        assert_eq!(f, fl::CF | fl::SF | fl::AF | fl::PF);
        // 0x80000000 - 1: OF.
        let f = lazy(FlagOp::Sub, 32, 0x8000_0000, 1, 0x7FFF_FFFF);
        assert_eq!(f, fl::OF | fl::AF | fl::PF);
    }

    #[test]
    fn fast_getters_match_compute() {
        let mut cpu = crate::Interpreter::new();
        let cases = [
            (FlagOp::Add, 8u8, 0xF0u64, 0x20u64),
            (FlagOp::Sub, 16, 0x10, 0x20),
            (FlagOp::Sub, 32, 0x8000_0000, 1),
            (FlagOp::Logic, 8, 0x80, 0x80),
            (FlagOp::Add, 32, 0xFFFF_FFFF, 1),
            (FlagOp::Add, 64, u64::MAX, 1),
            (FlagOp::Sub, 64, 1 << 63, 1),
            (FlagOp::Sub, 64, 0, 1),
        ];
        for (op, bits, a, b) in cases {
            let m = width_mask(bits);
            let res = match op {
                FlagOp::Add => a.wrapping_add(b) & m,
                FlagOp::Sub => a.wrapping_sub(b) & m,
                _ => a & b,
            };
            cpu.set_lazy(op, bits, a, b, res);
            let f = cpu.rflags();
            for cc in 0..16u8 {
                let slow = {
                    let cf = f & fl::CF != 0;
                    let zf = f & fl::ZF != 0;
                    let sf = f & fl::SF != 0;
                    let of = f & fl::OF != 0;
                    let pf = f & fl::PF != 0;
                    let r = match cc >> 1 {
                        0 => of,
                        1 => cf,
                        2 => zf,
                        3 => cf || zf,
                        4 => sf,
                        5 => pf,
                        6 => sf != of,
                        _ => zf || sf != of,
                    };
                    r ^ (cc & 1 != 0)
                };
                assert_eq!(cpu.cond(cc), slow, "{op:?} {bits} {a:#x} {b:#x} cc {cc}");
            }
        }
    }

    #[test]
    fn lazy_cf_of_flags() {
        let mut cpu = crate::Interpreter::new();
        cpu.set_lazy(FlagOp::CfOf, 16, 3, 0, 0x8000);
        assert_eq!(cpu.rflags() & ARITH, fl::CF | fl::OF | fl::SF | fl::PF);
        assert!(cpu.cf() && cpu.of() && cpu.sf() && !cpu.zf());
        cpu.set_lazy(FlagOp::CfOf, 32, 0, 0, 0);
        assert_eq!(cpu.rflags() & ARITH, fl::ZF | fl::PF);
        assert!(!cpu.cf() && !cpu.of());
        cpu.set_lazy(FlagOp::CfOf, 8, 2, 0, 1);
        assert_eq!(cpu.rflags() & ARITH, fl::OF);
        assert!(!cpu.cf() && cpu.of());
    }

    #[test]
    fn flags_of_64_bit_results() {
        // 2^63 - 1 + 1: OF, SF, AF, PF (low byte 0).
        let f = lazy(FlagOp::Add, 64, i64::MAX as u64, 1, 1 << 63);
        assert_eq!(f, fl::OF | fl::SF | fl::AF | fl::PF);
        // 2^64 - 1 + 1 = 0: CF, ZF.
        let f = lazy(FlagOp::Add, 64, u64::MAX, 1, 0);
        assert_eq!(f, fl::CF | fl::ZF | fl::AF | fl::PF);
        // 0 - 1: CF, SF.
        let f = lazy(FlagOp::Sub, 64, 0, 1, u64::MAX);
        assert_eq!(f, fl::CF | fl::SF | fl::AF | fl::PF);
        // Bit 32 set only: a 32-bit view would say zero.
        assert_eq!(lazy(FlagOp::Logic, 64, 0, 0, 1 << 32) & fl::ZF, 0);
        assert_eq!(
            lazy(FlagOp::Dec, 64, 1 << 63, 1, i64::MAX as u64) & fl::OF,
            fl::OF
        );
    }

    #[test]
    fn inc_dec_overflow() {
        assert_eq!(lazy(FlagOp::Inc, 16, 0x7FFF, 1, 0x8000) & fl::OF, fl::OF);
        assert_eq!(lazy(FlagOp::Dec, 8, 0x80, 1, 0x7F) & fl::OF, fl::OF);
    }
}
