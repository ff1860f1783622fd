//! Unit tests of the soft-float core against known values.

use super::transc::{self, Trig};
use super::*;

fn env(fcw: u16) -> Env {
    Env::from_fcw(fcw)
}
/// FNINIT control word: all masked, 64-bit precision, round to nearest.
const FCW: u16 = 0x037F;

fn f(x: f64) -> u128 {
    let mut lost = false;
    let v: F80 = rustc_apfloat::ieee::Double::from_bits(u128::from(x.to_bits()))
        .convert(&mut lost)
        .value;
    v.to_bits()
}
fn to_f64(v: u128) -> f64 {
    let mut lost = false;
    let d: rustc_apfloat::ieee::Double = to_f80(v).convert(&mut lost).value;
    f64::from_bits(d.to_bits() as u64)
}

#[test]
fn constants_match_decimal_expansions_in_every_rounding_mode() {
    let cases = [
        (
            konst::PI,
            "3.14159265358979323846264338327950288419716939937510582097494459",
        ),
        (
            konst::L2T,
            "3.32192809488736234787031942948939017586483139302458061205475640",
        ),
        (
            konst::L2E,
            "1.44269504088896340735992468100189213742664595415298593413544940",
        ),
        (
            konst::LG2,
            "0.30102999566398119521373889472449302676818988146210854131",
        ),
        (
            konst::LN2,
            "0.69314718055994530941723212145817656807550013436025525412068001",
        ),
    ];
    for (k, s) in cases {
        for (rc, r) in [
            (0u16, Round::NearestTiesToEven),
            (1, Round::TowardNegative),
            (2, Round::TowardPositive),
            (3, Round::TowardZero),
        ] {
            let want = F80::from_str_r(s, r).expect("parse").value.to_bits();
            assert_eq!(constant(k, round_of(rc << 10)), want, "{s} rc={rc}");
        }
    }
    assert_eq!(
        constant(konst::PI, Round::NearestTiesToEven),
        0x4000_C90F_DAA2_2168_C235
    );
}

#[test]
fn add_mul_div_round_to_nearest_at_64_bits() {
    let e = env(FCW);
    let o = arith(Op::Add, f(1.5), f(2.25), &e);
    assert_eq!(to_f64(o.value), 3.75);
    assert_eq!(o.exc, 0);
    let o = arith(Op::Div, ONE, f(3.0), &e);
    // 1/3 = 0xAAAA…AAAB × 2^-65 when rounded to nearest (0xAAAA… is followed by 1010…).
    assert_eq!(o.value, 0x3FFD_AAAA_AAAA_AAAA_AAAB);
    assert_eq!(o.exc, sw::PE);
    assert!(o.c1, "rounded up");
    let o = arith(Op::Div, ONE, f(3.0), &env(FCW | 0xC00));
    assert_eq!(o.value, 0x3FFD_AAAA_AAAA_AAAA_AAAA);
    assert!(!o.c1);
}

#[test]
fn precision_control_rounds_the_significand_only() {
    // PC = 24 bits: 1/3 rounds to the single-precision significand.
    let o = arith(Op::Div, ONE, f(3.0), &env(0x007F));
    assert_eq!(o.value, 0x3FFD_AAAA_AB00_0000_0000);
    // PC = 53 bits.
    let o = arith(Op::Div, ONE, f(3.0), &env(0x027F));
    assert_eq!(to_f64(o.value), 1.0 / 3.0);
    assert_eq!(sig_of(o.value) & 0x7FF, 0);
    // The exponent range stays extended: 2^-16000 is not flushed at PC = 24.
    let tiny = pack(false, 16383 - 16000, 1 << 63);
    let o = arith(Op::Mul, tiny, f(3.0), &env(0x007F));
    assert_eq!(exp_of(o.value), 16383 - 16000 + 1);
    assert_eq!(o.exc, 0);
}

#[test]
fn masked_overflow_and_underflow_responses() {
    let big = pack(false, 0x7FFE, 0xFFFF_FFFF_FFFF_FFFF);
    let o = arith(Op::Mul, big, f(2.0), &env(FCW));
    assert_eq!(o.value, pack(false, 0x7FFF, 1 << 63), "∞");
    assert_eq!(o.exc, sw::OE | sw::PE);
    // Round toward zero: the largest finite value.
    let o = arith(Op::Mul, big, f(2.0), &env(FCW | 0xC00));
    assert_eq!(o.value, big);
    // Unmasked overflow: scaled by 2^-24576.
    let o = arith(Op::Mul, big, f(2.0), &env(FCW & !sw::OE));
    assert_eq!(o.exc & sw::OE, sw::OE);
    assert_eq!(exp_of(o.value), 0x7FFF - 24576);
    assert!(o.store);
    // Masked underflow: denormal result with UE only when inexact.
    let min = pack(false, 1, 1 << 63);
    let o = arith(Op::Div, min, f(4.0), &env(FCW));
    assert_eq!(o.value, pack(false, 0, 1 << 61));
    assert_eq!(
        o.exc, 0,
        "exact denormal result: no underflow flag when masked"
    );
    let o = arith(Op::Div, min, f(3.0), &env(FCW));
    assert_eq!(o.exc, sw::UE | sw::PE);
    assert_eq!(exp_of(o.value), 0);
    // Unmasked underflow: exact tiny results flag UE too and are scaled up.
    let o = arith(Op::Div, min, f(4.0), &env(FCW & !sw::UE));
    assert_eq!(o.exc, sw::UE);
    assert_eq!(exp_of(o.value), 24576 - 1);
}

#[test]
fn invalid_operations_give_the_indefinite_and_nans_propagate() {
    let e = env(FCW);
    let inf = pack(false, 0x7FFF, 1 << 63);
    let o = arith(Op::Sub, inf, inf, &e);
    assert_eq!((o.value, o.exc), (INDEFINITE, sw::IE));
    let o = arith(Op::Sqrt, f(-1.0), 0, &e);
    assert_eq!((o.value, o.exc), (INDEFINITE, sw::IE));
    let o = arith(Op::Div, 0, 0, &e);
    assert_eq!((o.value, o.exc), (INDEFINITE, sw::IE));
    let o = arith(Op::Div, ONE, 0, &e);
    assert_eq!((o.value, o.exc), (inf, sw::ZE));
    let o = arith(Op::Div, ONE, 0, &env(FCW & !sw::ZE));
    assert!(!o.store);
    // SNaN + QNaN → the QNaN; SNaN + number → the SNaN made quiet, with #IA.
    let snan = pack(false, 0x7FFF, 0xA000_0000_0000_0001);
    let qnan = pack(true, 0x7FFF, 0xC000_0000_0000_0002);
    let o = arith(Op::Add, snan, qnan, &e);
    assert_eq!((o.value, o.exc), (qnan, sw::IE));
    let o = arith(Op::Mul, ONE, snan, &e);
    assert_eq!((o.value, o.exc), (quiet(snan), sw::IE));
    // Unnormals are unsupported: invalid.
    let unnormal = pack(false, 0x3FFF, 0x4000_0000_0000_0000);
    assert_eq!(arith(Op::Add, unnormal, ONE, &e).value, INDEFINITE);
    // Denormal operands flag DE.
    let den = pack(false, 0, 5);
    assert_eq!(arith(Op::Add, den, den, &e).exc, sw::DE);
    assert!(!arith(Op::Add, den, den, &env(FCW & !sw::DE)).store);
}

#[test]
fn sqrt_is_correctly_rounded() {
    let e = env(FCW);
    assert_eq!(to_f64(arith(Op::Sqrt, f(16.0), 0, &e).value), 4.0);
    let o = arith(Op::Sqrt, f(2.0), 0, &e);
    // √2 = 1.6A09E667F3BCC908B2FB1366… (hex) → 64 bits B504F333F9DE6484 (next bit 0).
    assert_eq!(o.value, 0x3FFF_B504_F333_F9DE_6484);
    assert_eq!(o.exc, sw::PE);
    let o = arith(Op::Sqrt, f(2.0), 0, &env(FCW | 0x800));
    assert_eq!(o.value, 0x3FFF_B504_F333_F9DE_6485);
    // A denormal operand.
    let o = arith(Op::Sqrt, pack(false, 0, 1 << 61), 0, &e);
    assert_eq!(o.exc, sw::DE);
    assert_eq!(to_f80(o.value).ilogb(), -8192);
}

#[test]
fn integer_and_bcd_conversions() {
    let e = env(FCW);
    assert_eq!(from_int(-5), f(-5.0));
    assert_eq!(to_int(f(2.5), 16, Round::NearestTiesToEven, &e).0, 2);
    assert_eq!(to_int(f(-2.5), 32, Round::TowardNegative, &e).0, -3);
    let (v, o) = to_int(f(40000.0), 16, Round::NearestTiesToEven, &e);
    assert_eq!((v as i16, o.exc), (i16::MIN, sw::IE));
    let (v, o) = to_int(INDEFINITE, 64, Round::TowardZero, &e);
    assert_eq!((v, o.exc), (i64::MIN, sw::IE));
    let bcd = [0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0, 0, 0x80];
    assert_eq!(from_bcd(bcd), f(-123456789.0));
    assert_eq!(to_bcd(f(-123456789.0), &e).0, bcd);
    let (b, o) = to_bcd(f(1e18), &e);
    assert_eq!((b[7..].to_vec(), o.exc), (vec![0xC0, 0xFF, 0xFF], sw::IE));
}

#[test]
fn real_loads_and_stores() {
    let e = env(FCW);
    let o = load_real(0x3FC0_0000, RealFmt::M32, &e);
    assert_eq!(to_f64(o.value), 1.5);
    // Single denormal → DE on load; SNaN → IE and quiet.
    assert_eq!(load_real(1, RealFmt::M32, &e).exc, sw::DE);
    let o = load_real(0x7F80_0001, RealFmt::M32, &e);
    assert_eq!(
        (o.value, o.exc),
        (pack(false, 0x7FFF, 0xC000_0100_0000_0000), sw::IE)
    );
    let (b, o) = store_real(f(0.1), RealFmt::M32, &e);
    assert_eq!(b as u32, 0.1f32.to_bits());
    assert_eq!(o.exc, sw::PE);
    let (b, o) = store_real(pack(false, 0x4100, 1 << 63), RealFmt::M32, &e);
    assert_eq!((b as u32, o.exc), (0x7F80_0000, sw::OE | sw::PE));
    let (_, o) = store_real(
        pack(false, 0x4100, 1 << 63),
        RealFmt::M32,
        &env(FCW & !sw::OE),
    );
    assert!(!o.store);
    let (b, _) = store_real(INDEFINITE, RealFmt::M64, &e);
    assert_eq!(b, 0xFFF8_0000_0000_0000);
}

#[test]
fn compare_and_examine() {
    let e = env(FCW);
    assert_eq!(compare(f(1.0), f(2.0), false, false, &e).0, Cmp::Less);
    assert_eq!(compare(f(0.0), f(-0.0), false, false, &e).0, Cmp::Equal);
    let qnan = INDEFINITE;
    assert_eq!(
        compare(qnan, f(1.0), true, false, &e),
        (Cmp::Unordered, 0, true)
    );
    assert_eq!(
        compare(qnan, f(1.0), false, false, &e),
        (Cmp::Unordered, sw::IE, true)
    );
    assert_eq!(fxam_bits(f(-0.0)), sw::C3);
    assert_eq!(fxam_bits(pack(false, 0, 1)), sw::C3 | sw::C2);
    assert_eq!(fxam_bits(qnan), sw::C0);
}

#[test]
fn remainder_scale_extract_round() {
    let e = env(FCW);
    let (o, cc) = partial_remainder(f(17.0), f(5.0), false, &e);
    assert_eq!(to_f64(o.value), 2.0);
    assert_eq!(cc, Some(sw::C3 | sw::C1), "quotient 3: Q1 in C3, Q0 in C1");
    let (o, _) = partial_remainder(f(17.0), f(5.0), true, &e);
    assert_eq!(to_f64(o.value), 2.0);
    let (o, cc) = partial_remainder(f(18.0), f(5.0), true, &e);
    assert_eq!(to_f64(o.value), -2.0);
    assert_eq!(cc, Some(sw::C0), "quotient 4");
    let (o, cc) = partial_remainder(f(-7.5), f(2.0), false, &e);
    assert_eq!((to_f64(o.value), cc), (-1.5, Some(sw::C3 | sw::C1)));
    // Huge exponent difference: incomplete, C2 set, value still congruent.
    let (o, cc) = partial_remainder(f(1e300), f(3.0), false, &e);
    assert_eq!(cc, Some(sw::C2));
    assert!(to_f64(o.value) < 1e300);
    assert_eq!(to_f64(scale(f(3.0), f(4.7), &e).value), 48.0);
    assert_eq!(to_f64(scale(f(3.0), f(-1.0), &e).value), 1.5);
    let (ex, sig, _) = extract(f(-12.0), &e).expect("extract");
    assert_eq!((to_f64(ex), to_f64(sig)), (3.0, -1.5));
    assert_eq!(to_f64(round_int(f(2.5), &e).value), 2.0);
    assert_eq!(to_f64(round_int(f(2.5), &env(FCW | 0x800)).value), 3.0);
}

#[test]
fn transcendentals_match_known_values() {
    let e = env(FCW);
    let close = |v: u128, want: f64| {
        let got = to_f64(v);
        assert!((got - want).abs() <= want.abs() * 1e-15, "{got} != {want}");
    };
    close(transc::trig(f(1.0), Trig::Sin, &e).0.value, 1f64.sin());
    close(transc::trig(f(1.0), Trig::Cos, &e).0.value, 1f64.cos());
    close(transc::trig(f(0.5), Trig::Tan, &e).0.value, 0.5f64.tan());
    // Moderate arguments: the 66-bit-π reduction error stays below f64 resolution.
    for x in [1.0, 10.0, 100.0, 1000.0, -3.0] {
        close(transc::trig(f(x), Trig::Sin, &e).0.value, x.sin());
        close(transc::trig(f(x), Trig::Cos, &e).0.value, x.cos());
    }
    close(
        transc::atan2(f(1.0), f(-1.0), &e).value,
        3.0 * std::f64::consts::FRAC_PI_4,
    );
    close(
        transc::f2xm1(f(0.5), &e).value,
        std::f64::consts::SQRT_2 - 1.0,
    );
    let o = transc::f2xm1(f(-1.0), &e);
    assert_eq!(
        (to_f64(o.value), o.exc),
        (-0.5, sw::PE),
        "reported inexact like hardware"
    );
    close(transc::fyl2x(f(3.0), f(10.0), &e).value, 3.0 * 10f64.log2());
    close(
        transc::fyl2xp1(f(2.0), f(0.25), &e).value,
        2.0 * 1.25f64.log2(),
    );
    // Exact cases stay exact: log2(8) = 3.
    let o = transc::fyl2x(ONE, f(8.0), &e);
    assert_eq!((to_f64(o.value), o.exc), (3.0, 0));
    // π/2 rounds like FLDPI scaled: atan(∞).
    let o = transc::atan2(f(1.0), f(0.0), &e);
    assert_eq!(
        o.value,
        constant(konst::PI, Round::NearestTiesToEven) - (1 << 64)
    );
    assert!(!transc::trig_in_range(f(1e19)));
}
