//! x87 transcendental instructions: FSIN, FCOS, FSINCOS, FPTAN, FPATAN, F2XM1, FYL2X,
//! FYL2XP1 (SDM Vol. 2A, per instruction).
//!
//! Accuracy: every function is evaluated in IEEE quad precision (113-bit significand) with
//! series whose truncation error is below 2^-110 relative, then rounded once to the 64-bit
//! extended result per RC. The result is therefore within 1 ULP of the exact value and
//! correctly rounded except when the exact value lies within about 2^-45 ULP of a rounding
//! boundary. Trigonometric arguments are reduced exactly modulo π66/2, where π66 is the 66-bit
//! π the x87 itself uses (SDM Vol. 1 §8.3.10): results match hardware for large arguments,
//! and for |x| ≥ about 2^10 they differ from sin/cos/tan of the exact argument as hardware
//! results do.
//! Precision control does not apply to these instructions (SDM Vol. 1 §8.1.5.2).

use rustc_apfloat::ieee::Quad;
use rustc_apfloat::{Float, FloatConvert, Round, Status};

use super::{
    classify, denormal_check, pack, screen1, screen2, sw, to_f80, Class, Env, Outcome, F80, ONE,
};

fn q(v: u128) -> Quad {
    let mut lost = false;
    to_f80(v).convert(&mut lost).value
}
fn add(a: Quad, b: Quad) -> Quad {
    (a + b).value
}
fn sub(a: Quad, b: Quad) -> Quad {
    (a - b).value
}
fn mul(a: Quad, b: Quad) -> Quad {
    (a * b).value
}
fn div(a: Quad, b: Quad) -> Quad {
    (a / b).value
}
fn qi(n: i64) -> Quad {
    Quad::from_i128(i128::from(n)).value
}

/// The leading 256 bits of π, as a binary fraction 0xC90F… × 2^-254.
const PI_BITS: [u64; 4] = [
    0xC90F_DAA2_2168_C234,
    0xC4C6_628B_80DC_1CD1,
    0x2902_4E08_8A67_CC74,
    0x020B_BEA6_3B13_9B22,
];

/// Bits `[hi-len, hi)` of the 256-bit π (bit 255 = most significant) as an integer.
fn pi_chunk(hi: u32, len: u32) -> u128 {
    let mut v: u128 = 0;
    for i in 0..len {
        let bit = hi - 1 - i;
        let word = PI_BITS[(3 - bit / 64) as usize];
        v = (v << 1) | u128::from((word >> (bit % 64)) & 1);
    }
    v
}

/// π/2 split in three parts P1 (49 bits), P2 (49 bits), P3 (113 bits): P1 + P2 + P3 ≈ π/2
/// to 210 bits, with n·P1 and n·P2 exact for any 64-bit n.
fn half_pi_parts() -> [Quad; 3] {
    half_pi_split(49, 49, 113)
}

/// The 66-bit π/2 the x87 reduces trigonometric arguments with (SDM Vol. 1 §8.3.10), as two
/// parts (49 + 17 bits) whose products with a 64-bit n are exact.
fn half_pi66_parts() -> [Quad; 3] {
    half_pi_split(49, 17, 0)
}

fn half_pi_split(l1: u32, l2: u32, l3: u32) -> [Quad; 3] {
    // π = I · 2^-254, so π/2 = I · 2^-255; chunk k starting at bit `hi` has scale
    // 2^(hi − len − 255).
    let part = |hi: u32, len: u32| {
        Quad::from_u128(pi_chunk(hi, len))
            .value
            .scalbn(hi as i32 - len as i32 - 255)
    };
    let part = |hi: u32, len: u32| if len == 0 { Quad::ZERO } else { part(hi, len) };
    [part(256, l1), part(256 - l1, l2), part(256 - l1 - l2, l3)]
}

fn pi_quad() -> Quad {
    let [a, b, c] = half_pi_parts();
    add(add(a, b), c).scalbn(1)
}

/// x reduced modulo the x87's 66-bit π/2: (r, n mod 4) with r ∈ about [-π/4, π/4]. The
/// subtraction of n·π66/2 is exact, so the result is what hardware computes, not sin of the
/// exact argument: for large |x| the two differ (SDM Vol. 1 §8.3.10).
fn reduce(x: Quad) -> (Quad, u8) {
    let [p1, p2, p3] = half_pi66_parts();
    let two_over_pi = div(qi(1), add(p1, p2));
    let n = mul(x, two_over_pi)
        .round_to_integral(Round::NearestTiesToEven)
        .value;
    let r = sub(sub(sub(x, mul(n, p1)), mul(n, p2)), mul(n, p3));
    let mut exact = false;
    let nn = n.to_i128_r(128, Round::TowardZero, &mut exact).value;
    (r, (nn & 3) as u8)
}

/// sin and cos of |r| ≤ ~π/4 by Taylor series.
fn sin_cos_small(r: Quad) -> (Quad, Quad) {
    let r2 = mul(r, r);
    let mut s = r;
    let mut term = r;
    let mut c = qi(1);
    let mut cterm = qi(1);
    for k in 1..30i64 {
        term = div(mul(term, -r2), qi((2 * k) * (2 * k + 1)));
        s = add(s, term);
        cterm = div(mul(cterm, -r2), qi((2 * k - 1) * (2 * k)));
        c = add(c, cterm);
    }
    (s, c)
}

fn sin_cos(x: Quad) -> (Quad, Quad) {
    let (r, n) = reduce(x);
    let (s, c) = sin_cos_small(r);
    match n {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

/// atan(z) for any finite z, via atan(z) = π/2 − atan(1/z) and halving to |z| ≤ ~0.2.
fn atan(z: Quad) -> Quad {
    let neg = z.is_negative();
    let mut z = z.abs();
    let mut add_half_pi = false;
    if z > qi(1) {
        z = div(qi(1), z);
        add_half_pi = true;
    }
    // atan(z) = 2·atan(z / (1 + sqrt(1 + z²))), twice.
    let mut doublings = 0;
    for _ in 0..2 {
        let root = sqrt_quad(add(qi(1), mul(z, z)));
        z = div(z, add(qi(1), root));
        doublings += 1;
    }
    let z2 = mul(z, z);
    let mut term = z;
    let mut sum = z;
    for k in 1..40i64 {
        term = mul(term, -z2);
        sum = add(sum, div(term, qi(2 * k + 1)));
    }
    let mut r = sum.scalbn(doublings);
    if add_half_pi {
        r = sub(pi_quad().scalbn(-1), r);
    }
    if neg {
        -r
    } else {
        r
    }
}

/// Square root in quad precision (Newton from the f64 estimate; three steps double 53 bits
/// past 113).
fn sqrt_quad(v: Quad) -> Quad {
    if v.is_zero() {
        return v;
    }
    let e = v.ilogb();
    let m = v.scalbn(-(e & !1));
    let mut lost = false;
    let md: rustc_apfloat::ieee::Double = m.convert(&mut lost).value;
    let est = f64::from_bits(md.to_bits() as u64).sqrt();
    let mut x: Quad = rustc_apfloat::ieee::Double::from_bits(u128::from(est.to_bits()))
        .convert(&mut lost)
        .value;
    for _ in 0..3 {
        x = div(add(x, div(m, x)), qi(2));
    }
    x.scalbn((e & !1) / 2)
}

/// ln(m) for m in [√½, √2] by the atanh series of s = (m − 1)/(m + 1).
fn ln_near_one(s: Quad) -> Quad {
    let s2 = mul(s, s);
    let mut term = s;
    let mut sum = s;
    for k in 1..60i64 {
        term = mul(term, s2);
        sum = add(sum, div(term, qi(2 * k + 1)));
    }
    sum.scalbn(1)
}

fn ln2() -> Quad {
    // ln 2 = 2·atanh(1/3).
    ln_near_one(div(qi(1), qi(3)))
}

/// log2(x) for finite x > 0.
fn log2(x: Quad) -> Quad {
    let mut e = x.ilogb();
    let mut m = x.scalbn(-e);
    // Bring m into [√½, √2).
    if m > div(qi(181), qi(128)) {
        m = m.scalbn(-1);
        e += 1;
    }
    let s = div(sub(m, qi(1)), add(m, qi(1)));
    add(qi(i64::from(e)), div(ln_near_one(s), ln2()))
}

/// 2^x − 1 for |x| ≤ 1 by the series of e^t − 1, t = x·ln 2.
fn exp2m1(x: Quad) -> Quad {
    let t = mul(x, ln2());
    let mut term = t;
    let mut sum = t;
    for k in 2..45i64 {
        term = div(mul(term, t), qi(k));
        sum = add(sum, term);
    }
    sum
}

/// Round a quad result to the 64-bit extended result per RC: PE, C1 = rounded up, and UE
/// when it is tiny.
fn finish(v: Quad, env: &Env, de: u16) -> Outcome {
    finish_hinted(v, env, de, None)
}

/// [`finish`] for a result known to be irrational: if the quad value happens to convert
/// exactly (tiny arguments, where sin x ≈ x and cos x ≈ 1), it is still inexact, and
/// `exact_is_above` tells whether that value is above the true magnitude (C1 = 1).
fn finish_hinted(v: Quad, env: &Env, de: u16, exact_is_above: Option<bool>) -> Outcome {
    let mut lost = false;
    let r = v.convert_r(env.round, &mut lost);
    let r: F80 = r.value;
    let mut out = Outcome::exact(r.to_bits());
    out.exc = de;
    if !v.is_zero() && v.is_finite() {
        if lost || r.to_bits() != v_to_bits_exact(v) {
            out.exc |= sw::PE;
            let back: Quad = r.convert(&mut lost).value;
            out.c1 = back.abs() > v.abs();
        } else if let Some(above) = exact_is_above {
            out.exc |= sw::PE;
            out.c1 = above;
        }
        if r.is_denormal() || r.is_zero() {
            out.exc |= sw::UE;
        }
    }
    out
}

/// The F80 bits of a quad value if it converts without loss, else a value no F80 equals.
fn v_to_bits_exact(v: Quad) -> u128 {
    let mut lost = false;
    let r: rustc_apfloat::StatusAnd<F80> = v.convert_r(Round::NearestTiesToEven, &mut lost);
    if r.status == Status::OK {
        r.value.to_bits()
    } else {
        u128::MAX
    }
}

/// Whether an argument is in FSIN/FCOS/FSINCOS/FPTAN range |x| < 2^63; if not, C2 is set
/// and the stack is unchanged.
pub(crate) fn trig_in_range(a: u128) -> bool {
    let c = classify(a);
    if !matches!(c, Class::Normal | Class::Denormal | Class::Zero) {
        return true;
    }
    to_f80(a).abs() < F80::from_u128(1 << 63).value
}

/// Which trigonometric function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trig {
    Sin,
    Cos,
    /// (sin, cos).
    SinCos,
    /// (tan, 1.0).
    Tan,
}

/// FSIN/FCOS/FSINCOS/FPTAN for an in-range operand: (first result, second result).
/// The second result is ST0 after FSINCOS (cos) and FPTAN (1.0).
pub(crate) fn trig(a: u128, f: Trig, env: &Env) -> (Outcome, Outcome) {
    if let Some(o) = screen1(a, env) {
        return (o, o);
    }
    let c = classify(a);
    if c == Class::Infinity {
        let o = Outcome::invalid(env);
        return (o, o);
    }
    let de = match denormal_check(c == Class::Denormal, env) {
        Ok(d) => d,
        Err(o) => return (o, o),
    };
    if c == Class::Zero {
        let z = Outcome::exact(a).with_exc(de);
        return match f {
            Trig::Sin => (z, z),
            Trig::Cos => (Outcome::exact(ONE).with_exc(de), z),
            Trig::SinCos => (z, Outcome::exact(ONE).with_exc(de)),
            Trig::Tan => (z, Outcome::exact(ONE).with_exc(de)),
        };
    }
    let (s, co) = sin_cos(q(a));
    // For tiny x, |sin x| < |x| and cos x < 1: an exact-looking value is above the true one;
    // |tan x| > |x|: below it.
    let (sin_o, cos_o) = (
        finish_hinted(s, env, de, Some(true)),
        finish_hinted(co, env, de, Some(true)),
    );
    match f {
        Trig::Sin => (sin_o, sin_o),
        Trig::Cos => (cos_o, cos_o),
        Trig::SinCos => (sin_o, finish_hinted(co, env, 0, Some(true))),
        Trig::Tan => (
            finish_hinted(div(s, co), env, de, Some(false)),
            Outcome::exact(ONE),
        ),
    }
}

impl Outcome {
    fn with_exc(mut self, e: u16) -> Outcome {
        self.exc |= e;
        self
    }
}

/// FPATAN: arctan(ST1/ST0) with the quadrant of (ST0, ST1) (SDM Vol. 2A FPATAN, Table 3-30).
/// `y` = ST1, `x` = ST0.
pub(crate) fn atan2(y: u128, x: u128, env: &Env) -> Outcome {
    let de = match screen2(y, x, env) {
        Ok(d) => d,
        Err(o) => return o,
    };
    let (fy, fx) = (q(y), q(x));
    let pi = pi_quad();
    let sign = |v: Quad, neg: bool| if neg { -v } else { v };
    let ny = fy.is_negative();
    let v = if fy.is_zero() {
        // ±0 for x > +0 or +0; ±π for x < 0 or −0.
        if fx.is_negative() {
            sign(pi, ny)
        } else {
            return Outcome::exact(y).with_exc(de);
        }
    } else if fx.is_infinite() && fy.is_infinite() {
        let quarter = pi.scalbn(-2);
        let v = if fx.is_negative() {
            mul(quarter, qi(3))
        } else {
            quarter
        };
        sign(v, ny)
    } else if fx.is_infinite() {
        if fx.is_negative() {
            sign(pi, ny)
        } else {
            return Outcome::exact(pack(ny, 0, 0)).with_exc(de);
        }
    } else if fy.is_infinite() || fx.is_zero() {
        sign(pi.scalbn(-1), ny)
    } else {
        let base = atan(div(fy, fx));
        if fx.is_negative() {
            if ny {
                sub(base, pi)
            } else {
                add(base, pi)
            }
        } else {
            base
        }
    };
    finish(v, env, de)
}

/// F2XM1: 2^ST0 − 1 for −1 ≤ ST0 ≤ 1 (out-of-range values are computed the same way).
pub(crate) fn f2xm1(a: u128, env: &Env) -> Outcome {
    if let Some(o) = screen1(a, env) {
        return o;
    }
    let c = classify(a);
    let de = match denormal_check(c == Class::Denormal, env) {
        Ok(d) => d,
        Err(o) => return o,
    };
    match c {
        Class::Zero => Outcome::exact(a).with_exc(de),
        Class::Infinity => {
            if super::is_neg(a) {
                Outcome::exact(pack(true, 0x3FFF, 1 << 63))
            } else {
                Outcome::exact(a)
            }
        }
        _ => {
            let x = q(a);
            let v = if x.abs() <= qi(1) {
                exp2m1(x)
            } else {
                // 2^x = 2^n · 2^f with |f| ≤ ½.
                let n = x.round_to_integral(Round::NearestTiesToEven).value;
                let f = sub(x, n);
                let mut exact = false;
                let ni = n
                    .to_i128_r(32, Round::TowardZero, &mut exact)
                    .value
                    .clamp(-40_000, 40_000) as i32;
                sub(add(exp2m1(f), qi(1)).scalbn(ni), qi(1))
            };
            // The host CPU reports F2XM1 of any non-zero number as inexact, also when the
            // result is exact (2^-1 − 1), without rounding up.
            finish_hinted(v, env, de, Some(false))
        }
    }
}

/// FYL2X: ST1 · log2(ST0) (SDM Vol. 2A FYL2X, Table 3-50). `y` = ST1, `x` = ST0.
pub(crate) fn fyl2x(y: u128, x: u128, env: &Env) -> Outcome {
    let de = match screen2(y, x, env) {
        Ok(d) => d,
        Err(o) => return o,
    };
    let (fy, fx) = (q(y), q(x));
    if fx.is_negative() && !fx.is_zero() {
        return Outcome::invalid(env).with_exc(de);
    }
    let inf = |neg: bool| Outcome::exact(pack(neg, 0x7FFF, 1 << 63)).with_exc(de);
    if fx.is_zero() {
        if fy.is_zero() {
            return Outcome::invalid(env).with_exc(de);
        }
        if fy.is_infinite() {
            return inf(!fy.is_negative());
        }
        // Finite y: divide-by-zero, −∞·sign(y).
        let mut o = inf(!fy.is_negative());
        o.exc |= sw::ZE;
        o.store = env.masked(sw::ZE);
        return o;
    }
    if fx.is_infinite() {
        if fy.is_zero() {
            return Outcome::invalid(env).with_exc(de);
        }
        return inf(fy.is_negative());
    }
    let l = log2(fx);
    if fy.is_infinite() {
        if l.is_zero() {
            return Outcome::invalid(env).with_exc(de);
        }
        return inf(fy.is_negative() != l.is_negative());
    }
    if l.is_zero() || fy.is_zero() {
        let neg = fy.is_negative() != (l.is_negative() && !l.is_zero());
        return Outcome::exact(pack(neg, 0, 0)).with_exc(de);
    }
    finish(mul(fy, l), env, de)
}

/// FYL2XP1: ST1 · log2(ST0 + 1) for |ST0| < 1 − √2/2 (SDM Vol. 2A FYL2XP1).
pub(crate) fn fyl2xp1(y: u128, x: u128, env: &Env) -> Outcome {
    let de = match screen2(y, x, env) {
        Ok(d) => d,
        Err(o) => return o,
    };
    let (fy, fx) = (q(y), q(x));
    if fx <= qi(-1) || fx.is_infinite() {
        return Outcome::invalid(env).with_exc(de);
    }
    if fy.is_infinite() {
        if fx.is_zero() {
            return Outcome::invalid(env).with_exc(de);
        }
        let neg = fy.is_negative() != fx.is_negative();
        return Outcome::exact(pack(neg, 0x7FFF, 1 << 63)).with_exc(de);
    }
    if fx.is_zero() || fy.is_zero() {
        let neg = fy.is_negative() != fx.is_negative();
        return Outcome::exact(pack(neg, 0, 0)).with_exc(de);
    }
    let s = div(fx, add(qi(2), fx));
    let l = div(ln_near_one(s), ln2());
    finish(mul(fy, l), env, de)
}
