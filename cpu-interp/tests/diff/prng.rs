//! A small seeded PRNG (xorshift64*) so every generated case is reproducible from
//! (seed, family, case index) without a `rand` dependency.

/// splitmix64 step: a good mixer for turning (seed, index) into an independent stream seed.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of a family name, to give each family its own stream.
pub fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// xorshift64* generator.
pub struct Rng(u64);

impl Rng {
    /// A generator for one case: independent of every other case.
    pub fn for_case(seed: u64, family: &str, index: u64) -> Self {
        Rng(splitmix64(seed ^ name_hash(family) ^ splitmix64(index)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.u32()) * u64::from(n)) >> 32) as u32
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u32, den: u32) -> bool {
        self.below(den) < num
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u32) as usize]
    }

    /// A 32-bit value biased towards the edges where flag bugs live (0, ±1, sign boundaries
    /// of each width, all-ones, small numbers), otherwise uniform.
    pub fn interesting(&mut self) -> u32 {
        const EDGES: [u32; 16] = [
            0,
            1,
            2,
            0x7F,
            0x80,
            0xFF,
            0x7FFF,
            0x8000,
            0xFFFF,
            0x7FFF_FFFF,
            0x8000_0000,
            0xFFFF_FFFF,
            0xFFFF_FFFE,
            0x8000_0001,
            0x0F,
            0x10,
        ];
        match self.below(8) {
            0 => self.pick(&EDGES),
            1 => self.pick(&EDGES) ^ (self.u32() & 0xFFFF_FF00),
            2 => self.below(64),
            3 => self
                .pick(&EDGES)
                .wrapping_add(self.below(5))
                .wrapping_sub(2),
            _ => self.u32(),
        }
    }
}

/// The initial contents of the data region for `seed` — must match `fill()` in
/// native/runner.c byte for byte. Style 1 keeps only bit 0 of every byte so string compares
/// find equal elements.
pub fn fill_region(seed: u64, style: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut s = seed;
    while out.len() < len {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        for b in z.to_le_bytes() {
            out.push(if style == 1 { b & 1 } else { b });
        }
    }
    out.truncate(len);
    out
}
