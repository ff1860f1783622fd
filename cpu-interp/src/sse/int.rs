//! Packed integer operations on a 128-bit register value (SSE2/SSSE3/SSE4.1 integer
//! instructions, Intel SDM Vol. 2). Lanes are little-endian: lane 0 is the low bits.

/// Lane `i` of `bits` width, zero-extended.
#[inline]
pub(crate) fn lane(v: u128, bits: u32, i: u32) -> u64 {
    ((v >> (i * bits)) as u64) & lane_mask(bits)
}

/// Lane `i` of `bits` width, sign-extended.
#[inline]
pub(crate) fn slane(v: u128, bits: u32, i: u32) -> i64 {
    let x = lane(v, bits, i);
    let sh = 64 - bits;
    ((x << sh) as i64) >> sh
}

#[inline]
pub(crate) const fn lane_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Build a value from `128 / bits` lanes computed by `f(i)`.
#[inline]
pub(crate) fn build(bits: u32, f: impl Fn(u32) -> u64) -> u128 {
    let mut r = 0u128;
    for i in 0..128 / bits {
        r |= u128::from(f(i) & lane_mask(bits)) << (i * bits);
    }
    r
}

/// Lane-wise `f(a_i, b_i)` on unsigned lanes.
#[inline]
pub(crate) fn map2(a: u128, b: u128, bits: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    build(bits, |i| f(lane(a, bits, i), lane(b, bits, i)))
}

/// Lane-wise `f(a_i, b_i)` on signed lanes.
#[inline]
pub(crate) fn smap2(a: u128, b: u128, bits: u32, f: impl Fn(i64, i64) -> i64) -> u128 {
    build(bits, |i| f(slane(a, bits, i), slane(b, bits, i)) as u64)
}

/// Saturate a signed value to `bits`.
pub(crate) fn sat_s(v: i64, bits: u32) -> i64 {
    let max = (1i64 << (bits - 1)) - 1;
    v.clamp(-max - 1, max)
}

/// Saturate a signed value to unsigned `bits`.
pub(crate) fn sat_u(v: i64, bits: u32) -> i64 {
    v.clamp(0, lane_mask(bits) as i64)
}

/// PUNPCKL*/PUNPCKH*: interleave the low (or high) halves of `a` and `b`, `a` first.
pub(crate) fn unpack(a: u128, b: u128, bits: u32, high: bool) -> u128 {
    let half = 64 / bits;
    let base = if high { half } else { 0 };
    build(bits, |i| {
        let src = if i % 2 == 0 { a } else { b };
        lane(src, bits, base + i / 2)
    })
}

/// PACKSSWB/PACKSSDW/PACKUSWB/PACKUSDW: narrow `a` then `b` with saturation.
pub(crate) fn pack(a: u128, b: u128, bits: u32, unsigned: bool) -> u128 {
    let n = 128 / bits;
    let out = bits / 2;
    build(out, |i| {
        let v = if i < n {
            slane(a, bits, i)
        } else {
            slane(b, bits, i - n)
        };
        (if unsigned {
            sat_u(v, out)
        } else {
            sat_s(v, out)
        }) as u64
    })
}

/// PSLL/PSRL/PSRA by `count` (counts ≥ the lane width give zero, or the sign for PSRA).
pub(crate) fn shift(a: u128, bits: u32, count: u64, kind: u8) -> u128 {
    match kind {
        0 => {
            if count >= u64::from(bits) {
                0
            } else {
                build(bits, |i| lane(a, bits, i) << count)
            }
        }
        1 => {
            if count >= u64::from(bits) {
                0
            } else {
                build(bits, |i| lane(a, bits, i) >> count)
            }
        }
        _ => {
            let c = count.min(u64::from(bits) - 1);
            build(bits, |i| (slane(a, bits, i) >> c) as u64)
        }
    }
}

/// PSLLDQ/PSRLDQ: byte shift of the whole register (counts > 15 give zero).
pub(crate) fn byte_shift(a: u128, count: u8, left: bool) -> u128 {
    if count > 15 {
        0
    } else if left {
        a << (u32::from(count) * 8)
    } else {
        a >> (u32::from(count) * 8)
    }
}

/// PSHUFD-style selection of 32-bit lanes by a 2-bit-per-lane immediate.
pub(crate) fn shuffle32(a: u128, imm: u8) -> u128 {
    build(32, |i| lane(a, 32, u32::from((imm >> (2 * i)) & 3)))
}

/// PSHUFLW/PSHUFHW: shuffle the words of one 64-bit half, keep the other.
pub(crate) fn shuffle16_half(a: u128, imm: u8, high: bool) -> u128 {
    let base = if high { 4 } else { 0 };
    build(16, |i| {
        if (i >= 4) == high {
            let k = i - base;
            lane(a, 16, base + u32::from((imm >> (2 * k)) & 3))
        } else {
            lane(a, 16, i)
        }
    })
}

/// PMOVMSKB: the top bit of each byte.
pub(crate) fn movmsk(a: u128, bits: u32) -> u32 {
    let mut m = 0;
    for i in 0..128 / bits {
        m |= ((lane(a, bits, i) >> (bits - 1)) as u32 & 1) << i;
    }
    m
}

/// PSADBW: sums of absolute byte differences of each 64-bit half.
pub(crate) fn sad(a: u128, b: u128) -> u128 {
    build(64, |h| {
        (0..8)
            .map(|k| lane(a, 8, h * 8 + k).abs_diff(lane(b, 8, h * 8 + k)))
            .sum()
    })
}

/// PMADDWD: signed word products summed in pairs.
pub(crate) fn madd_wd(a: u128, b: u128) -> u128 {
    build(32, |i| {
        let p0 = slane(a, 16, 2 * i) * slane(b, 16, 2 * i);
        let p1 = slane(a, 16, 2 * i + 1) * slane(b, 16, 2 * i + 1);
        (p0 + p1) as u64
    })
}

/// PSHUFB: bytes of `a` selected by the low 4 bits of each byte of `b`, zero where its top
/// bit is set.
pub(crate) fn pshufb(a: u128, b: u128) -> u128 {
    build(8, |i| {
        let s = lane(b, 8, i);
        if s & 0x80 != 0 {
            0
        } else {
            lane(a, 8, (s & 15) as u32)
        }
    })
}

/// PALIGNR: bytes `imm`.. of the 32-byte concatenation `a:b` (`b` low).
pub(crate) fn palignr(a: u128, b: u128, imm: u8) -> u128 {
    let sh = u32::from(imm) * 8;
    let lo = if sh >= 128 {
        0
    } else {
        b.checked_shr(sh).unwrap_or(0)
    };
    let hi = if sh >= 256 {
        0
    } else if sh >= 128 {
        a >> (sh - 128)
    } else if sh == 0 {
        0
    } else {
        a << (128 - sh)
    };
    lo | hi
}

/// Horizontal add/subtract of adjacent signed lanes, `a`'s pairs then `b`'s (PHADDW …).
pub(crate) fn horizontal(a: u128, b: u128, bits: u32, f: impl Fn(i64, i64) -> i64) -> u128 {
    let n = 128 / bits;
    build(bits, |i| {
        let (src, k) = if i < n / 2 { (a, i) } else { (b, i - n / 2) };
        f(slane(src, bits, 2 * k), slane(src, bits, 2 * k + 1)) as u64
    })
}

/// MPSADBW: eight sums of absolute differences of 4-byte groups (SDM Vol. 2B MPSADBW).
pub(crate) fn mpsadbw(a: u128, b: u128, imm: u8) -> u128 {
    let aoff = u32::from((imm >> 2) & 1) * 4;
    let boff = u32::from(imm & 3) * 4;
    build(16, |i| {
        (0..4)
            .map(|k| lane(a, 8, aoff + i + k).abs_diff(lane(b, 8, boff + k)))
            .sum()
    })
}

/// PHMINPOSUW: the minimum unsigned word and its index (lowest index on ties).
pub(crate) fn phminposuw(a: u128) -> u128 {
    let (mut best, mut idx) = (lane(a, 16, 0), 0u64);
    for i in 1..8 {
        let v = lane(a, 16, i);
        if v < best {
            best = v;
            idx = u64::from(i);
        }
    }
    u128::from(best) | (u128::from(idx) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_and_packing() {
        let a = 0x8000_7FFF_0001_FFFF_0000_0100_FF80_007Fu128;
        assert_eq!(lane(a, 16, 1), 0xFF80);
        assert_eq!(slane(a, 16, 1), -128);
        let p = pack(a, 0, 16, false);
        assert_eq!(lane(p, 8, 0), 0x7F);
        assert_eq!(lane(p, 8, 1), 0x80);
        assert_eq!(lane(p, 8, 2), 0x7F, "0x100 saturates to 127");
        assert_eq!(lane(pack(a, 0, 16, true), 8, 1), 0, "negative → 0 unsigned");
        assert_eq!(unpack(0x0201, 0x0403, 8, false) & 0xFFFF_FFFF, 0x0402_0301);
    }

    #[test]
    fn shifts_saturate_counts() {
        let a = 0x8000_0000_0000_0001u128;
        assert_eq!(shift(a, 64, 64, 0), 0);
        assert_eq!(shift(a, 64, 63, 2) as u64, u64::MAX);
        assert_eq!(byte_shift(a, 16, true), 0);
        assert_eq!(palignr(1, 2, 16), 1);
        assert_eq!(palignr(1, 2, 32), 0);
    }

    #[test]
    fn sad_and_movmsk() {
        assert_eq!(sad(0x0A, 0x03), 7);
        assert_eq!(movmsk(0x80 | (0x80 << 120), 8), 0x8001);
        let words = (u128::MAX << 48) | 0x0005_0003_0009;
        assert_eq!(phminposuw(words), 0x0001_0003);
    }
}
