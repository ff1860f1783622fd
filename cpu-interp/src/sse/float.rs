//! SSE floating point on one lane: IEEE single and double arithmetic with the MXCSR rounding
//! mode, DAZ/FTZ, exception flags and the x86 NaN rules (Intel SDM Vol. 1 §4.8.3.5, §4.9,
//! §10.2.3, §11.5, Table 4-7).
//!
//! Arithmetic goes through `rustc_apfloat` (exact rounding in every mode with IEEE status);
//! NaN selection, denormal handling and the MXCSR flag rules are done here. A lane function
//! returns the result bits and records flags in an [`Env`]; the caller decides with
//! [`Env::finish`] whether the instruction completes or raises #XM.

use rustc_apfloat::ieee::{Double, Quad, Single};
use rustc_apfloat::{Float, FloatConvert, Round, Status, StatusAnd};

/// MXCSR fields (SDM Vol. 1 §10.2.3, Figure 10-3).
pub(crate) mod mxcsr {
    pub const IE: u32 = 1 << 0;
    pub const DE: u32 = 1 << 1;
    pub const ZE: u32 = 1 << 2;
    pub const OE: u32 = 1 << 3;
    pub const UE: u32 = 1 << 4;
    pub const PE: u32 = 1 << 5;
    pub const DAZ: u32 = 1 << 6;
    /// The exception masks are the flags shifted left by this.
    pub const MASK_SHIFT: u32 = 7;
    pub const OM: u32 = OE << MASK_SHIFT;
    pub const UM: u32 = UE << MASK_SHIFT;
    pub const RC_SHIFT: u32 = 13;
    pub const FZ: u32 = 1 << 15;
    /// Bits that exist (the MXCSR_MASK FXSAVE reports, SDM Vol. 1 §11.6.6); others are
    /// reserved and #GP when set.
    pub const SUPPORTED: u32 = 0xFFFF;
}

/// An IEEE binary format as x86 lays it out.
pub(crate) trait Fmt {
    type F: Float + FloatConvert<Self::W>;
    /// A wider format that holds exact products and quotients' leading bits, for judging
    /// precision with an unbounded exponent.
    type W: Float + FloatConvert<Self::F>;
    const BITS: u32;
    const SIGN: u64;
    const EXP: u64;
    const FRAC: u64;
    /// The quiet bit (most significant fraction bit).
    const QUIET: u64;
    /// The QNaN floating-point indefinite (SDM Vol. 1 Table 4-3): negative, quiet, zero
    /// payload.
    const DEFAULT_NAN: u64 = Self::SIGN | Self::EXP | Self::QUIET;

    fn f(bits: u64) -> Self::F {
        Self::F::from_bits(u128::from(bits))
    }
    fn host(bits: u64) -> f64;
    fn is_nan(x: u64) -> bool {
        x & Self::EXP == Self::EXP && x & Self::FRAC != 0
    }
    fn is_snan(x: u64) -> bool {
        Self::is_nan(x) && x & Self::QUIET == 0
    }
    fn is_denormal(x: u64) -> bool {
        x & Self::EXP == 0 && x & Self::FRAC != 0
    }
    fn is_zero(x: u64) -> bool {
        x & !Self::SIGN == 0
    }
}

/// IEEE binary32.
pub(crate) struct F32;
/// IEEE binary64.
pub(crate) struct F64;

impl Fmt for F32 {
    type F = Single;
    type W = Double;
    const BITS: u32 = 32;
    const SIGN: u64 = 0x8000_0000;
    const EXP: u64 = 0x7F80_0000;
    const FRAC: u64 = 0x007F_FFFF;
    const QUIET: u64 = 0x0040_0000;
    fn host(bits: u64) -> f64 {
        f64::from(f32::from_bits(bits as u32))
    }
}

impl Fmt for F64 {
    type F = Double;
    type W = Quad;
    const BITS: u32 = 64;
    const SIGN: u64 = 0x8000_0000_0000_0000;
    const EXP: u64 = 0x7FF0_0000_0000_0000;
    const FRAC: u64 = 0x000F_FFFF_FFFF_FFFF;
    const QUIET: u64 = 0x0008_0000_0000_0000;
    fn host(bits: u64) -> f64 {
        f64::from_bits(bits)
    }
}

/// The MXCSR an instruction runs under and the flags its lanes raised, split into
/// pre-computation (IE, DE, ZE) and post-computation (OE, UE, PE) exceptions (SDM Vol. 1
/// §11.5.2).
pub(crate) struct Env {
    pub mxcsr: u32,
    pre: u32,
    post: u32,
}

/// Rounding control of MXCSR or an immediate: 0 nearest, 1 down, 2 up, 3 toward zero.
pub(crate) fn rounding(rc: u32) -> Round {
    match rc & 3 {
        0 => Round::NearestTiesToEven,
        1 => Round::TowardNegative,
        2 => Round::TowardPositive,
        _ => Round::TowardZero,
    }
}

impl Env {
    pub fn new(mxcsr: u32) -> Self {
        Env {
            mxcsr,
            pre: 0,
            post: 0,
        }
    }

    /// The MXCSR rounding mode.
    pub fn round(&self) -> Round {
        rounding(self.mxcsr >> mxcsr::RC_SHIFT)
    }

    /// Every flag raised so far.
    pub fn flags(&self) -> u32 {
        self.pre | self.post
    }

    /// Record flags of a step of a multi-step instruction (DPPS/DPPD) as post-computation
    /// ones: the processor reports all steps' flags together.
    pub fn add_post(&mut self, flags: u32) {
        self.post |= flags;
    }

    /// The new MXCSR and whether an unmasked exception stops the instruction (destination
    /// unchanged). With an unmasked pre-computation exception the post-computation flags are
    /// not recorded (SDM Vol. 1 §11.5.2.1).
    pub fn finish(&self) -> (u32, bool) {
        let unmasked = !(self.mxcsr >> mxcsr::MASK_SHIFT) & 0x3F;
        if self.pre & unmasked != 0 {
            (self.mxcsr | self.pre, true)
        } else {
            let all = self.pre | self.post;
            (self.mxcsr | all, all & unmasked != 0)
        }
    }

    /// A source operand: denormals become signed zero under DAZ, else raise DE.
    pub fn input<T: Fmt>(&mut self, x: u64) -> u64 {
        if T::is_denormal(x) {
            if self.mxcsr & mxcsr::DAZ != 0 {
                return x & T::SIGN;
            }
            self.pre |= mxcsr::DE;
        }
        x
    }

    /// DAZ only (instructions that never report DE).
    pub fn input_no_de<T: Fmt>(&self, x: u64) -> u64 {
        if T::is_denormal(x) && self.mxcsr & mxcsr::DAZ != 0 {
            x & T::SIGN
        } else {
            x
        }
    }

    /// NaN result of a two-source operation, if either is a NaN: the first NaN source
    /// quieted; IE for an SNaN (SDM Vol. 1 Table 4-7).
    pub fn nan2<T: Fmt>(&mut self, a: u64, b: u64) -> Option<u64> {
        let (an, bn) = (T::is_nan(a), T::is_nan(b));
        if !an && !bn {
            return None;
        }
        if T::is_snan(a) || T::is_snan(b) {
            self.pre |= mxcsr::IE;
        }
        Some(if an { a | T::QUIET } else { b | T::QUIET })
    }

    /// NaN result of a one-source operation.
    pub fn nan1<T: Fmt>(&mut self, a: u64) -> Option<u64> {
        if !T::is_nan(a) {
            return None;
        }
        if T::is_snan(a) {
            self.pre |= mxcsr::IE;
        }
        Some(a | T::QUIET)
    }

    /// Deliver a rounded result: invalid → default NaN, FTZ, and the OE/UE/PE flags.
    /// Tininess is detected after rounding, as x86 does.
    ///
    /// An unmasked overflow or underflow delivers no result; its PE then says whether the
    /// result rounded with an unbounded exponent is inexact, which `unbounded_inexact`
    /// decides (only called in that case).
    pub fn result<T: Fmt>(
        &mut self,
        r: StatusAnd<T::F>,
        unbounded_inexact: impl FnOnce() -> bool,
    ) -> u64 {
        let bits = r.value.to_bits() as u64;
        let st = r.status;
        if st.contains(Status::INVALID_OP) {
            self.pre |= mxcsr::IE;
            return T::DEFAULT_NAN;
        }
        if st.contains(Status::DIV_BY_ZERO) {
            self.pre |= mxcsr::ZE;
            return bits;
        }
        if st.contains(Status::OVERFLOW) {
            self.post |= mxcsr::OE;
            if self.mxcsr & mxcsr::OM != 0 || unbounded_inexact() {
                self.post |= mxcsr::PE;
            }
            return bits;
        }
        let inexact = st.contains(Status::INEXACT);
        let tiny = T::is_denormal(bits) || (T::is_zero(bits) && inexact);
        let um_masked = self.mxcsr & mxcsr::UM != 0;
        if tiny {
            if !um_masked {
                self.post |= mxcsr::UE;
                if unbounded_inexact() {
                    self.post |= mxcsr::PE;
                }
                return bits;
            }
            if self.mxcsr & mxcsr::FZ != 0 {
                self.post |= mxcsr::UE | mxcsr::PE;
                return bits & T::SIGN;
            }
            if inexact {
                self.post |= mxcsr::UE;
            }
        }
        if inexact {
            self.post |= mxcsr::PE;
        }
        bits
    }
}

/// Add the overflow flag apfloat omits when rounding toward zero turns an overflow into the
/// largest finite number: the result overflowed iff the exact value is at least 2^(emax+1),
/// i.e. iff the same operation on halved inputs (`halved`) rounds to at least 2^emax
/// (IEEE 754 §7.4: overflow is judged on the result rounded with unbounded exponent).
fn with_overflow<T: Fmt>(
    r: StatusAnd<T::F>,
    halved: impl FnOnce() -> StatusAnd<T::F>,
) -> StatusAnd<T::F> {
    let bits = r.value.to_bits() as u64;
    let largest = T::EXP - 1;
    if r.status.contains(Status::OVERFLOW)
        || !r.status.contains(Status::INEXACT)
        || bits & !T::SIGN != largest
    {
        return r;
    }
    let two_pow_emax = T::EXP - (T::FRAC + 1);
    let h = halved().value.to_bits() as u64;
    if h & !T::SIGN >= two_pow_emax {
        StatusAnd {
            status: r.status | Status::OVERFLOW,
            value: r.value,
        }
    } else {
        r
    }
}

/// `v` (exact in the wide format, or `wide_inexact`) rounded to `T`'s precision with an
/// unbounded exponent is inexact: normalize it to [1, 2) and narrow.
fn narrow_inexact<T: Fmt>(v: T::W, wide_inexact: bool) -> bool {
    if wide_inexact {
        return true;
    }
    if v.is_zero() || !v.is_finite() {
        return false;
    }
    let m = v.scalbn(-v.ilogb());
    let mut loses = false;
    let n: StatusAnd<T::F> = m.convert_r(Round::NearestTiesToEven, &mut loses);
    n.status.contains(Status::INEXACT) || loses
}

/// Widen a `T` value exactly.
fn widen<T: Fmt>(x: T::F) -> T::W {
    let mut loses = false;
    x.convert_r(Round::NearestTiesToEven, &mut loses).value
}

/// Half of `x` (exact for the large magnitudes [`with_overflow`] deals with).
fn half<F: Float>(x: F) -> F {
    x.scalbn(-1)
}

/// A binary arithmetic operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

/// `a op b` (ADDSS/SUBPD/MULPS/DIVSD …).
pub(crate) fn arith<T: Fmt>(env: &mut Env, op: Op, a: u64, b: u64) -> u64 {
    if let Some(n) = env.nan2::<T>(a, b) {
        return n;
    }
    // A finite dividend over a zero divisor raises ZE and not DE.
    let zero_divisor = op == Op::Div && T::is_zero(env.input_no_de::<T>(b));
    let a = if zero_divisor {
        env.input_no_de::<T>(a)
    } else {
        env.input::<T>(a)
    };
    let a = T::f(a);
    let b = T::f(env.input::<T>(b));
    let rm = env.round();
    let apply = |a: T::F, b: T::F| match op {
        Op::Add => a.add_r(b, rm),
        Op::Sub => a.sub_r(b, rm),
        Op::Mul => a.mul_r(b, rm),
        Op::Div => a.div_r(b, rm),
    };
    let r = with_overflow::<T>(apply(a, b), || match op {
        Op::Add | Op::Sub => apply(half(a), half(b)),
        Op::Mul | Op::Div => apply(half(a), b),
    });
    env.result::<T>(r, || {
        let (x, y) = (widen::<T>(a), widen::<T>(b));
        let w = match op {
            Op::Add => x.add_r(y, rm),
            Op::Sub => x.sub_r(y, rm),
            Op::Mul => x.mul_r(y, rm),
            Op::Div => x.div_r(y, rm),
        };
        narrow_inexact::<T>(w.value, w.status.contains(Status::INEXACT))
    })
}

/// MINSS/MAXPD…: the second source when either is a NaN (IE for any NaN) or both are
/// zero, else the smaller/larger (SDM Vol. 2B MINPS).
pub(crate) fn min_max<T: Fmt>(env: &mut Env, max: bool, a: u64, b: u64) -> u64 {
    if T::is_nan(a) || T::is_nan(b) {
        env.pre |= mxcsr::IE;
        return env.input_no_de::<T>(b);
    }
    let a = env.input::<T>(a);
    let b = env.input::<T>(b);
    let (x, y) = (T::host(a), T::host(b));
    if (max && x > y) || (!max && x < y) {
        a
    } else {
        b
    }
}

/// Correctly rounded square root in the MXCSR rounding mode (SQRTSS/SQRTPD): the host's
/// round-to-nearest root corrected by the sign of the exact residual r² − x.
pub(crate) fn sqrt<T: Fmt>(env: &mut Env, a: u64) -> u64 {
    if let Some(n) = env.nan1::<T>(a) {
        return n;
    }
    // A negative operand is invalid before it is a denormal (SDM Vol. 1 §4.9.2 precedence).
    if a & T::SIGN != 0 && !T::is_zero(env.input_no_de::<T>(a)) {
        env.pre |= mxcsr::IE;
        return T::DEFAULT_NAN;
    }
    let a = env.input::<T>(a);
    if T::is_zero(a) || a & T::EXP == T::EXP {
        return a; // ±0, +infinity
    }
    // Small inputs are scaled by an even power of two first so the residual below cannot
    // underflow; halving that power on the root is exact.
    let scale = (T::BITS * 2) as i32;
    let small = (a & T::EXP) >> T::FRAC.count_ones() < u64::from(T::BITS * 2);
    let x = if small {
        T::f(a).scalbn(scale)
    } else {
        T::f(a)
    };
    let host = T::host(x.to_bits() as u64).sqrt();
    let r0 = if T::BITS == 32 {
        u64::from((host as f32).to_bits())
    } else {
        host.to_bits()
    };
    let r = T::f(r0);
    let residual = r.mul_add_r(r, -x, Round::NearestTiesToEven).value;
    let fixed = if residual.is_zero() {
        r
    } else {
        env.post |= mxcsr::PE;
        let above = !residual.is_negative();
        match (env.round(), above) {
            (Round::TowardNegative | Round::TowardZero, true) => r.next_down().value,
            (Round::TowardPositive, false) => r.next_up().value,
            _ => r,
        }
    };
    let out = if small {
        fixed.scalbn(-scale / 2)
    } else {
        fixed
    };
    out.to_bits() as u64
}

/// CMPPS/CMPSD predicate `pred` (0–7: EQ LT LE UNORD NEQ NLT NLE ORD): all ones or zero.
/// The ordered-relation predicates (LT LE NLT NLE) raise IE for any NaN, the others only for
/// an SNaN (SDM Vol. 2A CMPPS, Table 3-1).
pub(crate) fn compare<T: Fmt>(env: &mut Env, pred: u8, a: u64, b: u64) -> bool {
    let nan = T::is_nan(a) || T::is_nan(b);
    let signaling_pred = matches!(pred & 7, 1 | 2 | 5 | 6);
    if nan {
        if signaling_pred || T::is_snan(a) || T::is_snan(b) {
            env.pre |= mxcsr::IE;
        }
        return matches!(pred & 7, 3..=6);
    }
    let (x, y) = (T::host(env.input::<T>(a)), T::host(env.input::<T>(b)));
    match pred & 7 {
        0 => x == y,
        1 => x < y,
        2 => x <= y,
        3 => false,
        4 => x != y,
        5 => x >= y,
        6 => x > y,
        _ => true,
    }
}

/// COMISS/UCOMISD: ZF PF CF as 111 unordered, 000 greater, 001 less, 100 equal. COMIS raises
/// IE for any NaN, UCOMIS only for an SNaN (SDM Vol. 2A COMISS).
pub(crate) fn comis<T: Fmt>(env: &mut Env, signaling: bool, a: u64, b: u64) -> (bool, bool, bool) {
    if T::is_nan(a) || T::is_nan(b) {
        if signaling || T::is_snan(a) || T::is_snan(b) {
            env.pre |= mxcsr::IE;
        }
        return (true, true, true);
    }
    let (x, y) = (T::host(env.input::<T>(a)), T::host(env.input::<T>(b)));
    if x == y {
        (true, false, false)
    } else if x < y {
        (false, false, true)
    } else {
        (false, false, false)
    }
}

/// Float → float (CVTSS2SD, CVTPD2PS …): NaNs keep sign and the top of the payload, quieted.
pub(crate) fn convert<S: Fmt, D: Fmt>(env: &mut Env, a: u64) -> u64
where
    S::F: FloatConvert<D::F> + FloatConvert<D::W>,
{
    if S::is_nan(a) {
        if S::is_snan(a) {
            env.pre |= mxcsr::IE;
        }
        let sign = if a & S::SIGN != 0 { D::SIGN } else { 0 };
        let frac = a & S::FRAC;
        let frac = if D::BITS > S::BITS {
            frac << (52 - 23)
        } else {
            frac >> (52 - 23)
        };
        return sign | D::EXP | D::QUIET | frac;
    }
    let a = env.input::<S>(a);
    let rm = env.round();
    let conv = |x: S::F| -> StatusAnd<D::F> {
        let mut loses = false;
        FloatConvert::convert_r(x, rm, &mut loses)
    };
    let r = with_overflow::<D>(conv(S::f(a)), || conv(half(S::f(a))));
    env.result::<D>(r, || {
        let mut loses = false;
        let w: StatusAnd<D::W> = S::f(a).convert_r(Round::NearestTiesToEven, &mut loses);
        narrow_inexact::<D>(w.value, loses)
    })
}

/// Float → signed integer of `width` bits (32 or 64), rounded by `round` (CVTSS2SI rounds by
/// MXCSR, CVTTSS2SI truncates). NaN and out-of-range raise IE and give the integer
/// indefinite 1 << (width − 1). No DE is reported (SDM Vol. 2A CVTSS2SI).
pub(crate) fn to_int<T: Fmt>(env: &mut Env, a: u64, width: usize, round: Round) -> u64 {
    let indefinite = 1u64 << (width - 1);
    if T::is_nan(a) {
        env.pre |= mxcsr::IE;
        return indefinite;
    }
    let a = env.input_no_de::<T>(a);
    let mut exact = true;
    let r = T::f(a).to_i128_r(width, round, &mut exact);
    if r.status.contains(Status::INVALID_OP) {
        env.pre |= mxcsr::IE;
        return indefinite;
    }
    if r.status.contains(Status::INEXACT) {
        env.post |= mxcsr::PE;
    }
    let mask = if width == 64 { u64::MAX } else { 0xFFFF_FFFF };
    (r.value as u64) & mask
}

/// Signed integer → float, rounded by MXCSR (CVTSI2SS, CVTDQ2PS …).
pub(crate) fn from_int<T: Fmt>(env: &mut Env, v: i64) -> u64 {
    let r = T::F::from_i128_r(i128::from(v), env.round());
    if r.status.contains(Status::INEXACT) {
        env.post |= mxcsr::PE;
    }
    r.value.to_bits() as u64
}

/// ROUNDSS/ROUNDPD: round to an integral value by `imm` (bits 1:0 mode, bit 2 use MXCSR.RC,
/// bit 3 suppress PE). IE only for an SNaN; no DE (SDM Vol. 2B ROUNDPS).
pub(crate) fn round_integral<T: Fmt>(env: &mut Env, a: u64, imm: u8) -> u64 {
    if let Some(n) = env.nan1::<T>(a) {
        return n;
    }
    let a = env.input_no_de::<T>(a);
    let rm = if imm & 4 != 0 {
        env.round()
    } else {
        rounding(u32::from(imm))
    };
    let r = T::f(a).round_to_integral(rm);
    if r.status.contains(Status::INEXACT) && imm & 8 == 0 {
        env.post |= mxcsr::PE;
    }
    let bits = r.value.to_bits() as u64;
    // round_to_integral keeps the sign of zero results (−0.3 → −0), as x86 does.
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: u32 = 0x1F80;

    #[test]
    fn add_rounds_by_mxcsr_and_flags_inexact() {
        let one = 1.0f32.to_bits() as u64;
        let tiny = 1e-10f32.to_bits() as u64;
        let mut env = Env::new(DEFAULT);
        assert_eq!(arith::<F32>(&mut env, Op::Add, one, tiny), one);
        assert_eq!(env.finish(), (DEFAULT | mxcsr::PE, false));
        let mut up = Env::new(DEFAULT | (2 << mxcsr::RC_SHIFT));
        let r = arith::<F32>(&mut up, Op::Add, one, tiny);
        assert_eq!(r, one + 1, "round up gives the next float");
    }

    #[test]
    fn invalid_gives_default_nan_and_nan_operands_propagate() {
        let inf = f64::INFINITY.to_bits();
        let mut env = Env::new(DEFAULT);
        assert_eq!(arith::<F64>(&mut env, Op::Sub, inf, inf), F64::DEFAULT_NAN);
        assert_eq!(env.finish().0 & 0x3F, mxcsr::IE);
        let snan = 0x7FA0_0001u64;
        let qnan = 0xFFC0_0002u64;
        let mut env = Env::new(DEFAULT);
        assert_eq!(
            arith::<F32>(&mut env, Op::Mul, qnan, snan),
            qnan,
            "first NaN source"
        );
        assert_eq!(env.finish().0 & 0x3F, mxcsr::IE);
        let mut env = Env::new(DEFAULT);
        assert_eq!(arith::<F32>(&mut env, Op::Mul, 0, snan), snan | F32::QUIET);
    }

    #[test]
    fn unmasked_divide_by_zero_faults() {
        let mut env = Env::new(DEFAULT & !(mxcsr::ZE << mxcsr::MASK_SHIFT));
        let r = arith::<F32>(&mut env, Op::Div, 1.0f32.to_bits() as u64, 0);
        assert_eq!(r, f32::INFINITY.to_bits() as u64);
        let (m, fault) = env.finish();
        assert!(fault);
        assert_eq!(m & 0x3F, mxcsr::ZE);
    }

    #[test]
    fn ftz_and_daz() {
        let min = f32::MIN_POSITIVE.to_bits() as u64;
        let half = 0.5f32.to_bits() as u64;
        let mut env = Env::new(DEFAULT | mxcsr::FZ);
        assert_eq!(arith::<F32>(&mut env, Op::Mul, min, half), 0);
        assert_eq!(env.finish().0 & 0x3F, mxcsr::UE | mxcsr::PE);
        let mut env = Env::new(DEFAULT);
        assert_eq!(arith::<F32>(&mut env, Op::Mul, min, half), min >> 1);
        assert_eq!(
            env.finish().0 & 0x3F,
            0,
            "exact denormal result: no UE when masked"
        );
        let mut env = Env::new(DEFAULT | mxcsr::DAZ);
        assert_eq!(
            arith::<F32>(&mut env, Op::Add, 1 | F32::SIGN, F32::SIGN),
            F32::SIGN
        );
        assert_eq!(env.finish().0 & 0x3F, 0);
    }

    #[test]
    fn sqrt_directed_rounding() {
        let two = 2.0f64.to_bits();
        let mut near = Env::new(DEFAULT);
        let n = sqrt::<F64>(&mut near, two);
        assert_eq!(n, std::f64::consts::SQRT_2.to_bits());
        let mut down = Env::new(DEFAULT | (1 << mxcsr::RC_SHIFT));
        let mut up = Env::new(DEFAULT | (2 << mxcsr::RC_SHIFT));
        let (d, u) = (sqrt::<F64>(&mut down, two), sqrt::<F64>(&mut up, two));
        assert_eq!(u - d, 1);
        assert!(d == n || u == n);
        let mut exact = Env::new(DEFAULT);
        assert_eq!(sqrt::<F64>(&mut exact, 4.0f64.to_bits()), 2.0f64.to_bits());
        assert_eq!(exact.finish().0, DEFAULT);
    }

    #[test]
    fn float_to_int_indefinite_and_truncation() {
        let mut env = Env::new(DEFAULT);
        let big = 3e9f32.to_bits() as u64;
        assert_eq!(
            to_int::<F32>(&mut env, big, 32, Round::TowardZero),
            0x8000_0000
        );
        assert_eq!(env.finish().0 & 0x3F, mxcsr::IE);
        let mut env = Env::new(DEFAULT);
        let v = (-2.5f64).to_bits();
        let rm = env.round();
        assert_eq!(
            to_int::<F64>(&mut env, v, 32, rm),
            (-2i64) as u64 & 0xFFFF_FFFF
        );
        assert_eq!(
            to_int::<F64>(&mut env, v, 64, Round::TowardZero),
            (-2i64) as u64
        );
    }
}
