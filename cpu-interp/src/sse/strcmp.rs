//! The SSE4.2 packed string compare engine of PCMPESTRI/PCMPESTRM/PCMPISTRI/PCMPISTRM
//! (Intel SDM Vol. 2B §4.1, "Imm8 Control Byte Operation for PCMPESTRI …").

use super::int::{lane, slane};

/// Result of a string compare: IntRes2 and the two valid lengths.
pub(crate) struct StrResult {
    /// One bit per element (bit j for element j of the second operand).
    pub res: u32,
    /// Elements per register (16 bytes or 8 words).
    pub n: u32,
    pub len1: u32,
    pub len2: u32,
}

impl StrResult {
    /// CF ZF SF OF as the instructions set them (AF and PF are cleared).
    pub fn flags(&self) -> u64 {
        use pcvm_core::cpu_state::flags as fl;
        let mut f = 0;
        if self.res != 0 {
            f |= fl::CF;
        }
        if self.len2 < self.n {
            f |= fl::ZF;
        }
        if self.len1 < self.n {
            f |= fl::SF;
        }
        if self.res & 1 != 0 {
            f |= fl::OF;
        }
        f
    }

    /// The index result (…STRI): least or most significant set bit, or `n` if none.
    pub fn index(&self, imm: u8) -> u32 {
        if self.res == 0 {
            self.n
        } else if imm & 0x40 != 0 {
            31 - self.res.leading_zeros()
        } else {
            self.res.trailing_zeros()
        }
    }

    /// The mask result (…STRM): bits, or each bit expanded to an element.
    pub fn mask(&self, imm: u8) -> u128 {
        if imm & 0x40 == 0 {
            return u128::from(self.res);
        }
        let bits = 128 / self.n;
        let ones = if bits == 8 { 0xFF } else { 0xFFFF };
        (0..self.n)
            .filter(|j| self.res >> j & 1 != 0)
            .fold(0u128, |m, j| m | (ones << (j * bits)))
    }
}

/// Elements per register and element width for imm8[0].
fn geometry(imm: u8) -> (u32, u32) {
    if imm & 1 != 0 {
        (8, 16)
    } else {
        (16, 8)
    }
}

/// Implicit length: elements before the first zero element.
pub(crate) fn implicit_len(v: u128, imm: u8) -> u32 {
    let (n, bits) = geometry(imm);
    (0..n).find(|&i| lane(v, bits, i) == 0).unwrap_or(n)
}

/// Explicit length from EAX/EDX (or RAX/RDX): |value| saturated to the element count.
pub(crate) fn explicit_len(v: i64, imm: u8) -> u32 {
    let (n, _) = geometry(imm);
    v.unsigned_abs().min(u64::from(n)) as u32
}

/// Compare `a` (first operand, `len1` valid elements) with `b` (`len2`) under `imm`.
pub(crate) fn compare(a: u128, b: u128, len1: u32, len2: u32, imm: u8) -> StrResult {
    let (n, bits) = geometry(imm);
    let signed = imm & 2 != 0;
    let elem = |v: u128, i: u32| -> i64 {
        if signed {
            slane(v, bits, i)
        } else {
            lane(v, bits, i) as i64
        }
    };
    let va = |i: u32| i < len1;
    let vb = |j: u32| j < len2;
    let mut res1 = 0u32;
    match (imm >> 2) & 3 {
        // Equal any: b[j] equals some valid a[i].
        0 => {
            for j in (0..n).filter(|&j| vb(j)) {
                if (0..n).any(|i| va(i) && elem(a, i) == elem(b, j)) {
                    res1 |= 1 << j;
                }
            }
        }
        // Ranges: a holds (low, high) pairs.
        1 => {
            for j in (0..n).filter(|&j| vb(j)) {
                let x = elem(b, j);
                let hit = (0..n)
                    .step_by(2)
                    .any(|i| va(i) && va(i + 1) && elem(a, i) <= x && x <= elem(a, i + 1));
                if hit {
                    res1 |= 1 << j;
                }
            }
        }
        // Equal each: element-wise, two invalid elements compare equal.
        2 => {
            for i in 0..n {
                let eq = match (va(i), vb(i)) {
                    (true, true) => elem(a, i) == elem(b, i),
                    (false, false) => true,
                    _ => false,
                };
                if eq {
                    res1 |= 1 << i;
                }
            }
        }
        // Equal ordered: substring a starts at b[j]; an invalid a element matches anything.
        _ => {
            for j in 0..n {
                let all = (0..n - j).all(|i| {
                    let k = j + i;
                    match (va(i), vb(k)) {
                        (false, _) => true,
                        (true, false) => false,
                        (true, true) => elem(a, i) == elem(b, k),
                    }
                });
                if all {
                    res1 |= 1 << j;
                }
            }
        }
    }
    let all_mask = (1u32 << n) - 1;
    let res = match (imm >> 4) & 3 {
        1 => !res1 & all_mask,
        3 => (res1 ^ ((1u32 << len2) - 1)) & all_mask,
        _ => res1,
    };
    StrResult { res, n, len1, len2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &[u8]) -> u128 {
        let mut b = [0u8; 16];
        b[..s.len()].copy_from_slice(s);
        u128::from_le_bytes(b)
    }

    #[test]
    fn equal_any_finds_first_match() {
        // imm 0x00: unsigned bytes, equal any, positive, least significant index.
        let set = bytes(b"xz");
        let text = bytes(b"abcz");
        let r = compare(set, text, implicit_len(set, 0), implicit_len(text, 0), 0);
        assert_eq!(r.index(0), 3);
        assert_eq!(r.flags() & 1, 1, "CF: a match");
    }

    #[test]
    fn equal_ordered_finds_substring() {
        let needle = bytes(b"lo");
        let hay = bytes(b"hello world");
        let imm = 0x0C;
        let r = compare(needle, hay, 2, 11, imm);
        assert_eq!(r.index(imm), 3);
    }

    #[test]
    fn ranges_and_negation() {
        let range = bytes(b"az");
        let text = bytes(b"ab1");
        let imm = 0x04 | 0x10; // ranges, negative polarity
        let r = compare(range, text, 2, 3, imm);
        assert_eq!(r.res & 7, 0b100, "only '1' is outside a..z");
        assert_eq!(r.mask(0x40 | imm) & 0xFF_FFFF, 0xFF_0000);
    }
}
