//! The x87 soft-float core: 80-bit extended-precision arithmetic with the x87 rounding
//! control, precision control, masked responses and status flags (Intel SDM Vol. 1 ch. 8, §4.9).
//!
//! Pure functions over raw 80-bit values (`u128`, low 80 bits): the instruction handlers in
//! `exec/x87.rs` own the register stack. Arithmetic is done with `rustc_apfloat`, which rounds
//! correctly in every IEEE mode; precision control rounds the significand to 24 or 53 bits
//! while keeping the 15-bit exponent (SDM Vol. 1 §8.1.5.2) through private "narrow significand,
//! extended exponent" formats, and unmasked overflow/underflow use formats with a 17-bit
//! exponent to produce the scaled result (SDM Vol. 1 §8.5.4, §8.5.5).

pub(crate) mod transc;

use rustc_apfloat::ieee::{IeeeFloat, Quad, Semantics, X87DoubleExtended};
use rustc_apfloat::{Float, FloatConvert, Round, Status, StatusAnd};

/// The 80-bit double extended-precision format.
pub(crate) type F80 = X87DoubleExtended;

/// A 24-bit significand with the 15-bit extended exponent (precision control = single).
pub(crate) struct Ext24S;
impl Semantics for Ext24S {
    const BITS: usize = 39;
    const EXP_BITS: usize = 15;
}
/// A 53-bit significand with the 15-bit extended exponent (precision control = double).
pub(crate) struct Ext53S;
impl Semantics for Ext53S {
    const BITS: usize = 68;
    const EXP_BITS: usize = 15;
}
/// 64-bit significand, 17-bit exponent: the rounded result with an "unbounded" exponent.
pub(crate) struct Wide64S;
impl Semantics for Wide64S {
    const BITS: usize = 81;
    const EXP_BITS: usize = 17;
}
pub(crate) struct Wide53S;
impl Semantics for Wide53S {
    const BITS: usize = 70;
    const EXP_BITS: usize = 17;
}
pub(crate) struct Wide24S;
impl Semantics for Wide24S {
    const BITS: usize = 41;
    const EXP_BITS: usize = 17;
}
/// 113-bit significand, 17-bit exponent: exact enough that rounding it again to 24 or 53 bits
/// equals rounding the exact result once (2p + 2 ≤ 113).
pub(crate) struct WideQuadS;
impl Semantics for WideQuadS {
    const BITS: usize = 130;
    const EXP_BITS: usize = 17;
}
type Ext24 = IeeeFloat<Ext24S>;
type Ext53 = IeeeFloat<Ext53S>;
type Wide64 = IeeeFloat<Wide64S>;
type Wide53 = IeeeFloat<Wide53S>;
type Wide24 = IeeeFloat<Wide24S>;
type WideQuad = IeeeFloat<WideQuadS>;

/// FSW exception and condition bits (SDM Vol. 1 §8.1.3).
pub(crate) mod sw {
    pub const IE: u16 = 1 << 0;
    pub const DE: u16 = 1 << 1;
    pub const ZE: u16 = 1 << 2;
    pub const OE: u16 = 1 << 3;
    pub const UE: u16 = 1 << 4;
    pub const PE: u16 = 1 << 5;
    pub const SF: u16 = 1 << 6;
    pub const ES: u16 = 1 << 7;
    pub const C0: u16 = 1 << 8;
    pub const C1: u16 = 1 << 9;
    pub const C2: u16 = 1 << 10;
    pub const C3: u16 = 1 << 14;
    pub const B: u16 = 1 << 15;
    pub const TOP_SHIFT: u16 = 11;
    pub const TOP: u16 = 7 << TOP_SHIFT;
    pub const CC: u16 = C0 | C1 | C2 | C3;
    /// The six exception flags.
    pub const EXC: u16 = 0x3F;
}

/// The QNaN floating-point indefinite (SDM Vol. 1 §4.8.3.7, Table 4-3).
pub(crate) const INDEFINITE: u128 = 0xFFFF_C000_0000_0000_0000;
const SIGN: u128 = 1 << 79;
const EXP_MASK: u16 = 0x7FFF;
const INT_BIT: u64 = 1 << 63;

/// Exponent field (15 bits).
pub(crate) fn exp_of(v: u128) -> u16 {
    ((v >> 64) as u16) & EXP_MASK
}
/// Significand (64 bits, explicit integer bit).
pub(crate) fn sig_of(v: u128) -> u64 {
    v as u64
}
pub(crate) fn is_neg(v: u128) -> bool {
    v & SIGN != 0
}
/// Assemble sign, exponent field and significand.
pub(crate) fn pack(neg: bool, exp: u16, sig: u64) -> u128 {
    (u128::from(neg) << 79) | (u128::from(exp & EXP_MASK) << 64) | u128::from(sig)
}

/// The class of an 80-bit operand (SDM Vol. 1 §8.2.2, Table 8-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Zero,
    /// Denormal or pseudo-denormal.
    Denormal,
    Normal,
    Infinity,
    QNan,
    SNan,
    /// Pseudo-NaN, pseudo-infinity, unnormal: rejected with #IA since the 387.
    Unsupported,
}

pub(crate) fn classify(v: u128) -> Class {
    let e = exp_of(v);
    let s = sig_of(v);
    match e {
        0 if s == 0 => Class::Zero,
        0 => Class::Denormal,
        EXP_MASK => {
            if s & INT_BIT == 0 {
                Class::Unsupported
            } else if s << 1 == 0 {
                Class::Infinity
            } else if s & (1 << 62) != 0 {
                Class::QNan
            } else {
                Class::SNan
            }
        }
        _ if s & INT_BIT == 0 => Class::Unsupported,
        _ => Class::Normal,
    }
}

pub(crate) fn is_nan(c: Class) -> bool {
    matches!(c, Class::QNan | Class::SNan)
}

/// Precision control field of the FCW (SDM Vol. 1 §8.1.5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Precision {
    P24,
    P53,
    P64,
}

/// Rounding and precision environment plus exception masks, from the FCW.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Env {
    pub round: Round,
    pub precision: Precision,
    /// FCW bits 0–5: 1 = masked.
    pub masks: u16,
}

impl Env {
    pub(crate) fn from_fcw(fcw: u16) -> Env {
        Env {
            round: round_of(fcw),
            precision: match (fcw >> 8) & 3 {
                0 => Precision::P24,
                2 => Precision::P53,
                _ => Precision::P64,
            },
            masks: fcw & sw::EXC,
        }
    }
    pub(crate) fn masked(&self, e: u16) -> bool {
        self.masks & e == e
    }
}

/// Rounding control (SDM Vol. 1 §4.8.4, Table 4-8).
pub(crate) fn round_of(fcw: u16) -> Round {
    match (fcw >> 10) & 3 {
        0 => Round::NearestTiesToEven,
        1 => Round::TowardNegative,
        2 => Round::TowardPositive,
        _ => Round::TowardZero,
    }
}

/// The outcome of an operation that produces a floating-point value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub value: u128,
    /// Exception flags raised (FSW bits 0–5).
    pub exc: u16,
    /// C1: the result was rounded up in magnitude (meaningful with PE).
    pub c1: bool,
    /// False when an unmasked exception forbids writing the destination.
    pub store: bool,
}

impl Outcome {
    pub(crate) fn exact(value: u128) -> Outcome {
        Outcome {
            value,
            exc: 0,
            c1: false,
            store: true,
        }
    }
    /// An invalid operation: QNaN indefinite when masked, nothing stored otherwise.
    pub(crate) fn invalid(env: &Env) -> Outcome {
        Outcome {
            value: INDEFINITE,
            exc: sw::IE,
            c1: false,
            store: env.masked(sw::IE),
        }
    }
    fn with(mut self, exc: u16) -> Outcome {
        self.exc |= exc;
        self
    }
}

pub(crate) fn to_f80(v: u128) -> F80 {
    F80::from_bits(v & ((1 << 80) - 1))
}

/// An SNaN made quiet.
pub(crate) fn quiet(v: u128) -> u128 {
    v | (1 << 62)
}

/// The NaN result of a two-operand x87 operation with at least one NaN operand (SDM Vol. 1
/// §4.8.3.5, Table 4-7: the QNaN if only one is quiet, else the larger significand).
pub(crate) fn propagate_nan(a: u128, b: u128, env: &Env) -> Outcome {
    let (ca, cb) = (classify(a), classify(b));
    let snan = ca == Class::SNan || cb == Class::SNan;
    let v = match (is_nan(ca), is_nan(cb)) {
        (true, false) => quiet(a),
        (false, true) => quiet(b),
        _ => {
            if ca == Class::QNan && cb == Class::SNan {
                a
            } else if ca == Class::SNan && cb == Class::QNan {
                b
            } else {
                let (sa, sb) = (sig_of(a) | (1 << 62), sig_of(b) | (1 << 62));
                if sa > sb || (sa == sb && !is_neg(a)) {
                    quiet(a)
                } else {
                    quiet(b)
                }
            }
        }
    };
    if snan {
        Outcome {
            value: v,
            exc: sw::IE,
            c1: false,
            store: env.masked(sw::IE),
        }
    } else {
        Outcome::exact(v)
    }
}

/// One-operand NaN / unsupported screening: `Some(outcome)` if `a` decides the result.
pub(crate) fn screen1(a: u128, env: &Env) -> Option<Outcome> {
    match classify(a) {
        Class::Unsupported => Some(Outcome::invalid(env)),
        Class::SNan | Class::QNan => Some(propagate_nan(a, a, env)),
        _ => None,
    }
}

/// Two-operand screening: unsupported formats and NaNs, then the denormal-operand exception.
/// Returns the outcome if the operation must not proceed, else the DE flag to add.
pub(crate) fn screen2(a: u128, b: u128, env: &Env) -> Result<u16, Outcome> {
    let denormal = screen2_nan(a, b, env)?;
    denormal_check(denormal, env)
}

/// The NaN / unsupported part of [`screen2`]: `Ok(true)` if an operand is denormal, for
/// operations whose own invalid cases take precedence over #D (SDM Vol. 1 §4.9.2).
pub(crate) fn screen2_nan(a: u128, b: u128, env: &Env) -> Result<bool, Outcome> {
    let (ca, cb) = (classify(a), classify(b));
    if ca == Class::Unsupported || cb == Class::Unsupported {
        return Err(Outcome::invalid(env));
    }
    if is_nan(ca) || is_nan(cb) {
        return Err(propagate_nan(a, b, env));
    }
    Ok(ca == Class::Denormal || cb == Class::Denormal)
}

/// The denormal-operand exception: unmasked, it stops the operation (SDM Vol. 1 §8.5.2).
pub(crate) fn denormal_check(denormal: bool, env: &Env) -> Result<u16, Outcome> {
    if !denormal {
        Ok(0)
    } else if env.masked(sw::DE) {
        Ok(sw::DE)
    } else {
        Err(Outcome {
            value: 0,
            exc: sw::DE,
            c1: false,
            store: false,
        })
    }
}

/// The arithmetic operations that round to the precision-control width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Sqrt,
    /// Multiply by 2^n (FSCALE).
    Scale(i32),
}

/// `op` on `a`, `b` performed in format `F`, rounding once to `F`'s precision.
fn op_in<F>(op: Op, a: F80, b: F80, r: Round) -> StatusAnd<F>
where
    F: Float,
    F80: FloatConvert<F>,
{
    let mut lost = false;
    let x: F = a.convert(&mut lost).value;
    let y: F = b.convert(&mut lost).value;
    match op {
        Op::Add => x.add_r(y, r),
        Op::Sub => x.sub_r(y, r),
        Op::Mul => x.mul_r(y, r),
        Op::Div => x.div_r(y, r),
        Op::Sqrt => sqrt_in(a, r),
        Op::Scale(n) => {
            let v = x.scalbn_r(n, r);
            // scalbn reports no status: an inexact result is one that does not scale back.
            let back = v.scalbn_r(n.saturating_neg(), r);
            let mut st = Status::OK;
            if !v.is_nan()
                && (v.is_infinite() || back.partial_cmp(&x) != Some(std::cmp::Ordering::Equal))
            {
                st = Status::INEXACT;
                if v.is_infinite() || (n > 0 && v.is_largest()) {
                    st |= Status::OVERFLOW;
                } else if v.is_zero() || v.is_denormal() || (n < 0 && v.is_smallest()) {
                    st |= Status::UNDERFLOW;
                }
            }
            st.and(v)
        }
    }
}

/// Correctly rounded square root of a finite positive `a` in format `F`: the root's bits are
/// found digit by digit with a sticky remainder bit, then rounded once by `from_u128_r`.
fn sqrt_in<F: Float>(a: F80, r: Round) -> StatusAnd<F> {
    let bits = a.to_bits();
    let mut sig = sig_of(bits);
    let mut e = i32::from(exp_of(bits)).max(1) - 16383 - 63;
    if sig == 0 {
        return Status::OK.and(F::ZERO);
    }
    // Normalise denormals so the root has full precision.
    let lz = sig.leading_zeros() as i32;
    sig <<= lz;
    e -= lz;
    // value = sig * 2^e with e made even: radicand = sig * 2^(e & 1).
    let mut m = u128::from(sig);
    if e & 1 != 0 {
        m <<= 1;
        e -= 1;
    }
    // Root of m * 2^(2k) for k = 64 gives 96+ significant bits.
    const K: u32 = 64;
    // Bitwise restoring square root over the radicand m << 2K, consumed two bits at a time
    // from the top: radicand bits are (m << 128), i.e. 65..66 + 128 bits; process in two
    // halves to stay within u128.
    let mut root: u128 = 0;
    let mut rem: u128 = 0;
    let total_pairs = 33 + K; // m has at most 66 bits = 33 pairs, then K zero pairs.
    for i in (0..total_pairs).rev() {
        let pair = if i >= K { (m >> (2 * (i - K))) & 3 } else { 0 };
        rem = (rem << 2) | pair;
        let trial = (root << 2) | 1;
        root <<= 1;
        if rem >= trial {
            rem -= trial;
            root |= 1;
        }
    }
    let sticky = u128::from(rem != 0);
    // root ≈ sqrt(m) * 2^K; fold the sticky bit below it.
    let v = (root << 1) | sticky;
    let st = F::from_u128_r(v, r);
    let exp = e / 2 - K as i32 - 1;
    let scaled = st.value.scalbn_r(exp, r);
    st.status.and(scaled)
}

/// Round an F80 into the precision-controlled width, keeping the exponent range (used for
/// values already computed at 64 bits where no double rounding can occur: exact inputs).
/// `op` rounded per the environment: (the result with the masked response, the unmasked
/// response's scaled result and whether scaling it lost bits, tiny, huge).
type Computed = (StatusAnd<F80>, (F80, bool), bool, bool);

fn compute(op: Op, a: F80, b: F80, env: &Env) -> Computed {
    let r = env.round;
    let mut lost = false;
    match env.precision {
        Precision::P64 => {
            let w: StatusAnd<Wide64> = op_in(op, a, b, r);
            let n: StatusAnd<F80> = op_in(op, a, b, r);
            let (tiny, huge) = range_of(w.value, w.status);
            let back = rescale(w.value, tiny, huge, r);
            (n, back, tiny, huge)
        }
        Precision::P53 => {
            let q: StatusAnd<WideQuad> = op_in(op, a, b, r);
            let w: StatusAnd<Wide53> = q.value.convert_r(r, &mut lost);
            let nq: StatusAnd<Quad> = op_in(op, a, b, r);
            let n: StatusAnd<Ext53> = nq.value.convert_r(r, &mut lost);
            let nst = n.status | nq.status;
            let n80: F80 = n.value.convert(&mut lost).value;
            let (tiny, huge) = range_of(w.value, w.status | q.status);
            let w64: Wide64 = w.value.convert(&mut lost).value;
            let back = rescale(w64, tiny, huge, r);
            (nst.and(n80), back, tiny, huge)
        }
        Precision::P24 => {
            let q: StatusAnd<WideQuad> = op_in(op, a, b, r);
            let w: StatusAnd<Wide24> = q.value.convert_r(r, &mut lost);
            let nq: StatusAnd<Quad> = op_in(op, a, b, r);
            let n: StatusAnd<Ext24> = nq.value.convert_r(r, &mut lost);
            let nst = n.status | nq.status;
            let n80: F80 = n.value.convert(&mut lost).value;
            let (tiny, huge) = range_of(w.value, w.status | q.status);
            let w64: Wide64 = w.value.convert(&mut lost).value;
            let back = rescale(w64, tiny, huge, r);
            (nst.and(n80), back, tiny, huge)
        }
    }
}

/// (tiny, huge) of a result rounded with an unbounded exponent (x87 detects tininess after
/// rounding, SDM Vol. 1 §4.9.1.5). Only FSCALE can leave even the wide formats' range,
/// which their status reports.
fn range_of<F: Float>(v: F, st: Status) -> (bool, bool) {
    if st.contains(Status::OVERFLOW) {
        return (false, true);
    }
    if st.contains(Status::UNDERFLOW) {
        return (true, false);
    }
    if !v.is_finite_non_zero() {
        return (false, false);
    }
    let e = v.ilogb();
    (e < -16382, e > 16383)
}

/// The unmasked overflow/underflow response: the wide result scaled into range by 2^∓24576
/// (SDM Vol. 1 §8.5.4, §8.5.5); in-range results convert exactly. Only FSCALE can leave
/// the range even after scaling: then the result is ∞ or zero whatever RC says, inexact,
/// as the host CPU shows.
fn rescale(w: Wide64, tiny: bool, huge: bool, round: Round) -> (F80, bool) {
    let mut lost = false;
    let s = if huge {
        w.scalbn(-24576)
    } else if tiny {
        w.scalbn(24576)
    } else {
        w
    };
    if tiny && s.is_finite_non_zero() && s.ilogb() < -16382 {
        // Still tiny after scaling: the host CPU delivers a zero, inexact.
        let z = if s.is_negative() {
            -F80::ZERO
        } else {
            F80::ZERO
        };
        return (z, true);
    }
    if huge && s.is_finite_non_zero() && s.ilogb() > 16383 {
        // Still huge after scaling: ∞ whatever the rounding control, inexact.
        let inf = if s.is_negative() {
            -F80::INFINITY
        } else {
            F80::INFINITY
        };
        return (inf, true);
    }
    let r: StatusAnd<F80> = s.convert_r(round, &mut lost);
    (r.value, r.status.contains(Status::INEXACT))
}

/// A rounded arithmetic operation with the full x87 response: invalid, zero-divide,
/// overflow, underflow and precision with masked and unmasked behaviour; C1 = rounded up.
pub(crate) fn arith(op: Op, a: u128, b: u128, env: &Env) -> Outcome {
    let denormal = match screen2_nan(a, b, env) {
        Ok(d) => d,
        Err(o) => return o,
    };
    let (fa, fb) = (to_f80(a), to_f80(b));
    if op == Op::Sqrt && fa.is_negative() && !fa.is_zero() {
        return Outcome::invalid(env);
    }
    let de = match denormal_check(denormal, env) {
        Ok(d) => d,
        Err(o) => return o,
    };
    if op == Op::Sqrt {
        if fa.is_zero() {
            return Outcome::exact(a).with(de);
        }
        if fa.is_negative() {
            return Outcome::invalid(env).with(de);
        }
        if fa.is_infinite() {
            return Outcome::exact(a).with(de);
        }
    }
    if op == Op::Div && fb.is_zero() && !fa.is_zero() && !fa.is_infinite() {
        let neg = fa.is_negative() != fb.is_negative();
        return Outcome {
            value: pack(neg, EXP_MASK, INT_BIT),
            exc: de | sw::ZE,
            c1: false,
            store: env.masked(sw::ZE),
        };
    }
    let (n, (wide, wide_lossy), tiny, huge) = compute(op, fa, fb, env);
    if n.status.contains(Status::INVALID_OP) {
        return Outcome::invalid(env).with(de);
    }
    let inexact = n.status.contains(Status::INEXACT);
    let mut out = Outcome {
        value: n.value.to_bits(),
        exc: de,
        c1: false,
        store: true,
    };
    if huge {
        out.exc |= sw::OE;
        if !env.masked(sw::OE) {
            out.value = wide.to_bits();
            out.exc |= if wide_lossy || wide_inexact(op, fa, fb, env) {
                sw::PE
            } else {
                0
            };
        } else {
            out.exc |= sw::PE;
        }
    } else if tiny {
        if !env.masked(sw::UE) {
            out.value = wide.to_bits();
            out.exc |= sw::UE;
            if wide_lossy || wide_inexact(op, fa, fb, env) {
                out.exc |= sw::PE;
            }
        } else if inexact {
            out.exc |= sw::UE | sw::PE;
        }
    } else if inexact {
        out.exc |= sw::PE;
    }
    if out.exc & sw::PE != 0 {
        out.c1 = rounded_up(op, fa, fb, env, to_f80(out.value));
        // An unmasked overflow still out of range after scaling delivered ∞: rounded up.
        if huge && !env.masked(sw::OE) && to_f80(out.value).is_infinite() {
            out.c1 = true;
        }
    }
    out
}

/// Whether the wide (unbounded-exponent) result was inexact.
fn wide_inexact(op: Op, a: F80, b: F80, env: &Env) -> bool {
    let mut lost = false;
    let r = env.round;
    match env.precision {
        Precision::P64 => op_in::<Wide64>(op, a, b, r)
            .status
            .contains(Status::INEXACT),
        Precision::P53 => {
            let q: StatusAnd<WideQuad> = op_in(op, a, b, r);
            let w: StatusAnd<Wide53> = q.value.convert_r(r, &mut lost);
            (q.status | w.status).contains(Status::INEXACT)
        }
        Precision::P24 => {
            let q: StatusAnd<WideQuad> = op_in(op, a, b, r);
            let w: StatusAnd<Wide24> = q.value.convert_r(r, &mut lost);
            (q.status | w.status).contains(Status::INEXACT)
        }
    }
}

/// C1 for an inexact result: its magnitude is larger than the truncated result's.
fn rounded_up(op: Op, a: F80, b: F80, env: &Env, got: F80) -> bool {
    let tz = Env {
        round: Round::TowardZero,
        ..*env
    };
    let (n, (wide, _), tiny, huge) = compute(op, a, b, &tz);
    let t = if (tiny && !env.masked(sw::UE)) || (huge && !env.masked(sw::OE)) {
        wide
    } else {
        n.value
    };
    got.abs().partial_cmp(&t.abs()) == Some(std::cmp::Ordering::Greater)
}

/// Round an extended value to an integer per RC (FRNDINT; SDM Vol. 2A FRNDINT).
pub(crate) fn round_int(a: u128, env: &Env) -> Outcome {
    if let Some(o) = screen1(a, env) {
        return o;
    }
    let c = classify(a);
    let de = match denormal_check(c == Class::Denormal, env) {
        Ok(d) => d,
        Err(o) => return o,
    };
    let f = to_f80(a);
    let r = f.round_to_integral(env.round);
    let mut out = Outcome::exact(r.value.to_bits()).with(de);
    if r.status.contains(Status::INEXACT) {
        out.exc |= sw::PE;
        out.c1 = r.value.abs().partial_cmp(&f.abs()) == Some(std::cmp::Ordering::Greater);
    }
    out
}

/// Memory real formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RealFmt {
    M32,
    M64,
}

/// Load a single or double real into extended format: exact; SNaN raises #IA and loads as
/// QNaN, denormals raise #D (SDM Vol. 2A FLD).
pub(crate) fn load_real(raw: u64, fmt: RealFmt, env: &Env) -> Outcome {
    let mut lost = false;
    let (v, snan, denormal) = match fmt {
        RealFmt::M32 => {
            let s = rustc_apfloat::ieee::Single::from_bits(u128::from(raw as u32));
            (
                s.convert(&mut lost).value,
                s.is_signaling(),
                s.is_denormal(),
            )
        }
        RealFmt::M64 => {
            let d = rustc_apfloat::ieee::Double::from_bits(u128::from(raw));
            (
                d.convert(&mut lost).value,
                d.is_signaling(),
                d.is_denormal(),
            )
        }
    };
    let v: F80 = v;
    let mut bits = v.to_bits();
    if v.is_nan() {
        // Keep the payload: shift it into the extended significand, then set the quiet bit.
        let (neg, payload) = match fmt {
            RealFmt::M32 => (raw & 0x8000_0000 != 0, (raw & 0x7F_FFFF) << 40),
            RealFmt::M64 => (raw & (1 << 63) != 0, (raw & 0xF_FFFF_FFFF_FFFF) << 11),
        };
        bits = pack(neg, EXP_MASK, INT_BIT | payload | (1 << 62));
    }
    if snan {
        return Outcome {
            value: bits,
            exc: sw::IE,
            c1: false,
            store: env.masked(sw::IE),
        };
    }
    // An unmasked #D still loads the value (the host CPU pushes it and signals #MF later).
    Outcome::exact(bits).with(if denormal { sw::DE } else { 0 })
}

/// Store an extended value as a single or double real, rounding per RC (precision control
/// does not apply); unmasked overflow/underflow store nothing (SDM Vol. 1 §8.5.4).
pub(crate) fn store_real(a: u128, fmt: RealFmt, env: &Env) -> (u64, Outcome) {
    let c = classify(a);
    let mut out = Outcome::exact(0);
    let bits;
    match c {
        Class::Unsupported => {
            out = Outcome::invalid(env);
            bits = match fmt {
                RealFmt::M32 => 0xFFC0_0000,
                RealFmt::M64 => 0xFFF8_0000_0000_0000,
            };
        }
        Class::QNan | Class::SNan => {
            let q = quiet(a);
            let neg = is_neg(q);
            let s = sig_of(q) & !INT_BIT;
            bits = match fmt {
                RealFmt::M32 => (u64::from(neg) << 31) | 0x7F80_0000 | (s >> 40),
                RealFmt::M64 => (u64::from(neg) << 63) | 0x7FF0_0000_0000_0000 | (s >> 11),
            };
            if c == Class::SNan {
                out.exc = sw::IE;
                out.store = env.masked(sw::IE);
            }
        }
        _ => {
            // FST/FSTP to memory do not signal #D (SDM Vol. 2A FST: no #D listed).
            let de = 0;
            let f = to_f80(a);
            let mut lost = false;
            let (b, st, tiny, huge) = match fmt {
                RealFmt::M32 => {
                    let n: StatusAnd<rustc_apfloat::ieee::Single> =
                        f.convert_r(env.round, &mut lost);
                    let w: StatusAnd<Wide24> = f.convert_r(env.round, &mut lost);
                    let (t, h) = range_single(w.value, -126, 127);
                    (n.value.to_bits() as u64, n.status, t, h)
                }
                RealFmt::M64 => {
                    let n: StatusAnd<rustc_apfloat::ieee::Double> =
                        f.convert_r(env.round, &mut lost);
                    let w: StatusAnd<Wide53> = f.convert_r(env.round, &mut lost);
                    let (t, h) = range_single(w.value, -1022, 1023);
                    (n.value.to_bits() as u64, n.status, t, h)
                }
            };
            bits = b;
            out.exc = de;
            let inexact = st.contains(Status::INEXACT);
            if huge {
                out.exc |= sw::OE;
                if !env.masked(sw::OE) {
                    out.store = false;
                } else {
                    out.exc |= sw::PE;
                }
            } else if tiny && !env.masked(sw::UE) {
                out.exc |= sw::UE;
                out.store = false;
            } else if tiny && inexact {
                out.exc |= sw::UE | sw::PE;
            } else if inexact {
                out.exc |= sw::PE;
            }
            if out.exc & sw::PE != 0 && out.store {
                let back = match fmt {
                    RealFmt::M32 => {
                        load_real(
                            b,
                            fmt,
                            &Env {
                                masks: 0x3F,
                                ..*env
                            },
                        )
                        .value
                    }
                    RealFmt::M64 => {
                        load_real(
                            b,
                            fmt,
                            &Env {
                                masks: 0x3F,
                                ..*env
                            },
                        )
                        .value
                    }
                };
                out.c1 =
                    to_f80(back).abs().partial_cmp(&f.abs()) == Some(std::cmp::Ordering::Greater);
            }
        }
    }
    (bits, out)
}

fn range_single<F: Float>(v: F, min: i32, max: i32) -> (bool, bool) {
    if !v.is_finite_non_zero() {
        return (false, false);
    }
    let e = v.ilogb();
    (e < min, e > max)
}

/// Integer → extended (FILD): always exact.
pub(crate) fn from_int(v: i64) -> u128 {
    F80::from_i128(i128::from(v)).value.to_bits()
}

/// Extended → signed integer of `bits` width (FIST/FISTP per RC, FISTTP with truncation).
/// Out of range, NaN or infinity: #IA, integer indefinite when masked (SDM Vol. 2A FIST).
pub(crate) fn to_int(a: u128, bits: u32, round: Round, env: &Env) -> (i64, Outcome) {
    let indefinite = i64::MIN >> (64 - bits);
    let c = classify(a);
    if matches!(
        c,
        Class::Unsupported | Class::QNan | Class::SNan | Class::Infinity
    ) {
        return (indefinite, Outcome::invalid(env));
    }
    // Stores to memory do not signal #D (SDM Vol. 2A FIST, FBSTP: no #D listed).
    let de = 0;
    let f = to_f80(a);
    let mut exact = false;
    let r = f.to_i128_r(bits as usize, round, &mut exact);
    if r.status.contains(Status::INVALID_OP) {
        return (indefinite, Outcome::invalid(env).with(de));
    }
    let mut out = Outcome::exact(0).with(de);
    if r.status.contains(Status::INEXACT) {
        out.exc |= sw::PE;
        let back = F80::from_i128(r.value).value;
        out.c1 = back.abs().partial_cmp(&f.abs()) == Some(std::cmp::Ordering::Greater);
    }
    (r.value as i64, out)
}

/// Packed BCD (18 digits + sign byte) → extended (FBLD; invalid digits give undefined
/// results on hardware, here they are taken at face value).
pub(crate) fn from_bcd(b: [u8; 10]) -> u128 {
    let mut v: u64 = 0;
    for i in (0..9).rev() {
        let byte = b[i];
        v = v.wrapping_mul(100) + u64::from(byte >> 4) * 10 + u64::from(byte & 0xF);
    }
    let f = F80::from_u128(u128::from(v)).value;
    let f = if b[9] & 0x80 != 0 { -f } else { f };
    f.to_bits()
}

/// Extended → packed BCD, rounding per RC (FBSTP). Out of range (> 18 digits), NaN,
/// infinity: #IA, BCD indefinite when masked.
pub(crate) fn to_bcd(a: u128, env: &Env) -> ([u8; 10], Outcome) {
    const BCD_INDEFINITE: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0xC0, 0xFF, 0xFF];
    let c = classify(a);
    if matches!(
        c,
        Class::Unsupported | Class::QNan | Class::SNan | Class::Infinity
    ) {
        return (BCD_INDEFINITE, Outcome::invalid(env));
    }
    // Stores to memory do not signal #D (SDM Vol. 2A FIST, FBSTP: no #D listed).
    let de = 0;
    let f = to_f80(a);
    let r = f.round_to_integral(env.round);
    let mag = r.value.abs();
    let mut exact = false;
    let m = mag.to_u128_r(64, Round::TowardZero, &mut exact);
    if m.status.contains(Status::INVALID_OP) || m.value > 999_999_999_999_999_999 {
        return (BCD_INDEFINITE, Outcome::invalid(env).with(de));
    }
    let mut v = m.value as u64;
    let mut out = [0u8; 10];
    for byte in out.iter_mut().take(9) {
        let lo = (v % 10) as u8;
        v /= 10;
        let hi = (v % 10) as u8;
        v /= 10;
        *byte = (hi << 4) | lo;
    }
    if f.is_negative() {
        out[9] = 0x80;
    }
    let mut o = Outcome::exact(0).with(de);
    if r.status.contains(Status::INEXACT) {
        o.exc |= sw::PE;
        o.c1 = mag.partial_cmp(&f.abs()) == Some(std::cmp::Ordering::Greater);
    }
    (out, o)
}

/// Comparison result of FCOM/FUCOM/FCOMI (SDM Vol. 2A FCOM, Table 3-21).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Greater,
    Less,
    Equal,
    Unordered,
}

/// Compare `a` with `b`. `quiet`: only SNaNs (and unsupported formats) are invalid (FUCOM*);
/// otherwise any NaN is (FCOM*). `b_denormal`: `b` came from a denormal memory real (its
/// extended form is normal). Returns the relation, the exception flags and whether no
/// unmasked exception occurred (the relation is reported either way).
pub(crate) fn compare(
    a: u128,
    b: u128,
    quiet_nan: bool,
    b_denormal: bool,
    env: &Env,
) -> (Cmp, u16, bool) {
    let (ca, cb) = (classify(a), classify(b));
    if ca == Class::Unsupported || cb == Class::Unsupported {
        return (Cmp::Unordered, sw::IE, env.masked(sw::IE));
    }
    if is_nan(ca) || is_nan(cb) {
        let invalid = !quiet_nan || ca == Class::SNan || cb == Class::SNan;
        return if invalid {
            (Cmp::Unordered, sw::IE, env.masked(sw::IE))
        } else {
            (Cmp::Unordered, 0, true)
        };
    }
    let denormal = ca == Class::Denormal || cb == Class::Denormal || b_denormal;
    let (de, ok) = match denormal_check(denormal, env) {
        Ok(d) => (d, true),
        Err(o) => (o.exc, false),
    };
    let r = match to_f80(a).partial_cmp(&to_f80(b)) {
        Some(std::cmp::Ordering::Greater) => Cmp::Greater,
        Some(std::cmp::Ordering::Less) => Cmp::Less,
        Some(std::cmp::Ordering::Equal) => Cmp::Equal,
        None => Cmp::Unordered,
    };
    (r, de, ok)
}

/// FXAM's C3,C2,C0 encoding of a (non-empty) register (SDM Vol. 2A FXAM, Table 3-39).
pub(crate) fn fxam_bits(v: u128) -> u16 {
    match classify(v) {
        Class::Unsupported => 0,
        Class::QNan | Class::SNan => sw::C0,
        Class::Normal => sw::C2,
        Class::Infinity => sw::C2 | sw::C0,
        Class::Zero => sw::C3,
        Class::Denormal => sw::C3 | sw::C2,
    }
}

/// Full-tag-word class of a valid register: 00 valid, 01 zero, 10 special (SDM Vol. 1 §8.1.7).
pub(crate) fn tag_of(v: u128) -> u16 {
    match classify(v) {
        Class::Normal => 0,
        Class::Zero => 1,
        _ => 2,
    }
}

/// The x87 constants: 64 truncated significand bits, exponent field, and whether the bits
/// beyond are above one half ULP (all are inexact). Rounded per RC (SDM Vol. 2A FLD1/FLDZ/…).
pub(crate) mod konst {
    /// π.
    pub const PI: (u64, u16, bool) = (0xC90F_DAA2_2168_C234, 0x4000, true);
    /// log2(10).
    pub const L2T: (u64, u16, bool) = (0xD49A_784B_CD1B_8AFE, 0x4000, false);
    /// log2(e).
    pub const L2E: (u64, u16, bool) = (0xB8AA_3B29_5C17_F0BB, 0x3FFF, true);
    /// log10(2).
    pub const LG2: (u64, u16, bool) = (0x9A20_9A84_FBCF_F798, 0x3FFD, true);
    /// ln(2).
    pub const LN2: (u64, u16, bool) = (0xB172_17F7_D1CF_79AB, 0x3FFE, true);
}

/// A positive inexact constant rounded per RC.
pub(crate) fn constant(k: (u64, u16, bool), round: Round) -> u128 {
    let (sig, exp, above_half) = k;
    let up = match round {
        Round::NearestTiesToEven | Round::NearestTiesToAway => above_half,
        Round::TowardPositive => true,
        Round::TowardNegative | Round::TowardZero => false,
    };
    // No constant's significand is all ones, so rounding up never carries out.
    pack(false, exp, if up { sig + 1 } else { sig })
}

/// 1.0.
pub(crate) const ONE: u128 = 0x3FFF_8000_0000_0000_0000;

/// FXTRACT: (exponent as a real, significand with exponent 0x3FFF) (SDM Vol. 2A FXTRACT).
/// Zero gives -∞ exponent with #Z.
pub(crate) fn extract(a: u128, env: &Env) -> Result<(u128, u128, u16), Outcome> {
    if let Some(o) = screen1(a, env) {
        return Err(o);
    }
    match classify(a) {
        Class::Zero => {
            if !env.masked(sw::ZE) {
                return Err(Outcome {
                    value: 0,
                    exc: sw::ZE,
                    c1: false,
                    store: false,
                });
            }
            Ok((pack(true, EXP_MASK, INT_BIT), a, sw::ZE))
        }
        Class::Infinity => Ok((pack(false, EXP_MASK, INT_BIT), a, 0)),
        c => {
            let de = denormal_check(c == Class::Denormal, env)?;
            let f = to_f80(a);
            let e = f.ilogb();
            let sig = f.scalbn(-e);
            Ok((from_int(i64::from(e)), sig.to_bits(), de))
        }
    }
}

/// FSCALE: ST0 × 2^trunc(ST1) (SDM Vol. 2A FSCALE).
pub(crate) fn scale(a: u128, b: u128, env: &Env) -> Outcome {
    let de = match screen2(a, b, env) {
        Ok(d) => d,
        Err(o) => return o,
    };
    let (fa, fb) = (to_f80(a), to_f80(b));
    if fb.is_infinite() {
        return if fa.is_zero() && !fb.is_negative() || fa.is_infinite() && fb.is_negative() {
            Outcome::invalid(env).with(de)
        } else if fb.is_negative() {
            Outcome::exact(pack(fa.is_negative(), 0, 0)).with(de)
        } else if fa.is_zero() {
            Outcome::exact(a).with(de)
        } else {
            Outcome::exact(pack(fa.is_negative(), EXP_MASK, INT_BIT)).with(de)
        };
    }
    if fa.is_zero() || fa.is_infinite() {
        return Outcome::exact(a).with(de);
    }
    let mut exact = false;
    let n = fb
        .round_to_integral(Round::TowardZero)
        .value
        .to_i128_r(32, Round::TowardZero, &mut exact)
        .value
        // Beyond this every result overflows or underflows even after the 2^∓24576 scaling,
        // and the wide formats (17-bit exponent) still hold the exact value.
        .clamp(-41_000, 41_000) as i32;
    // Precision control does not apply to FSCALE (SDM Vol. 1 §8.1.5.2).
    let full = Env {
        precision: Precision::P64,
        ..*env
    };
    arith(Op::Scale(n), a, a, &full).with(de)
}

/// Partial remainder (FPREM: truncating quotient; FPREM1: IEEE round-to-nearest quotient).
/// Returns the result and condition bits: C2 = incomplete, C0/C3/C1 = quotient bits 2/1/0
/// (SDM Vol. 2A FPREM, FPREM1). A reduction step shrinks the exponent by 32..63 bits.
/// `None` for the condition bits: a NaN or invalid operand, where C0 and C3 keep their
/// values (C1 and C2 are cleared), as the host CPU does.
pub(crate) fn partial_remainder(a: u128, b: u128, ieee: bool, env: &Env) -> (Outcome, Option<u16>) {
    let denormal = match screen2_nan(a, b, env) {
        Ok(d) => d,
        Err(o) => return (o, None),
    };
    let (fa, fb) = (to_f80(a), to_f80(b));
    if fa.is_infinite() || fb.is_zero() {
        return (Outcome::invalid(env), None);
    }
    let de = match denormal_check(denormal, env) {
        Ok(d) => d,
        Err(o) => return (o, None),
    };
    if fa.is_zero() || fb.is_infinite() {
        return (Outcome::exact(a).with(de), Some(0));
    }
    // Integer significands and exponents: value = sig · 2^exp.
    let norm = |v: u128| -> (u64, i32) {
        let mut s = sig_of(v);
        let mut e = i32::from(exp_of(v)).max(1) - 16383 - 63;
        let lz = s.leading_zeros() as i32;
        s <<= lz;
        e -= lz;
        (s, e)
    };
    let (sa, ea) = norm(a);
    let (sb, eb) = norm(b);
    let neg_a = is_neg(a);
    let d = ea - eb;
    if d >= 64 {
        // Partial reduction: N = 32 + (d mod 32) quotient bits this step.
        let n = 32 + (d % 32);
        let num = u128::from(sa) << n;
        let q = num / u128::from(sb);
        let r = num - q * u128::from(sb);
        // Remaining value = r · 2^(ea − n).
        let v = F80::from_u128(r).value.scalbn(ea - n);
        let v = if neg_a { -v } else { v };
        let bits = if v.is_zero() {
            pack(neg_a, 0, 0)
        } else {
            v.to_bits()
        };
        return (Outcome::exact(bits).with(de), Some(sw::C2));
    }
    if d < -1 || (d == -1 && !ieee) {
        return (tiny_remainder(a, de, env), Some(0));
    }
    // Work in units of 2^min(ea, eb).
    let (na, nb, unit) = if d >= 0 {
        (u128::from(sa) << d, u128::from(sb), eb)
    } else {
        (u128::from(sa), u128::from(sb) << 1, ea)
    };
    let mut q = na / nb;
    let mut r = na - q * nb;
    let mut neg = neg_a;
    if ieee && (r > nb - r || (r == nb - r && q & 1 == 1)) {
        r = nb - r;
        q += 1;
        neg = !neg;
    }
    let v = F80::from_u128(r).value.scalbn(unit);
    let bits = if r == 0 {
        pack(neg_a, 0, 0)
    } else if neg {
        (-v).to_bits()
    } else {
        v.to_bits()
    };
    let mut cc = 0;
    if q & 4 != 0 {
        cc |= sw::C0;
    }
    if q & 2 != 0 {
        cc |= sw::C3;
    }
    if q & 1 != 0 {
        cc |= sw::C1;
    }
    (tiny_remainder(bits, de, env), Some(cc))
}

/// A (exact) remainder: a denormal one with #U unmasked is delivered scaled by 2^24576 with UE
/// (SDM Vol. 1 §8.5.5; the host CPU does so for FPREM/FPREM1).
fn tiny_remainder(v: u128, de: u16, env: &Env) -> Outcome {
    let mut out = Outcome::exact(v).with(de);
    if classify(v) == Class::Denormal && !env.masked(sw::UE) {
        out.exc |= sw::UE;
        out.value = to_f80(v).scalbn(24576).to_bits();
    }
    out
}

#[cfg(test)]
mod tests;
