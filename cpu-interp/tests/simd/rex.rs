//! REX-prefixed forms in 64-bit mode: XMM8–15 through REX.R/REX.B and the 64-bit GPR forms
//! through REX.W (MOVQ r64, CVTSI2SD r64, CVTSD2SI r64, PEXTRQ/PINSRQ, CRC32 r64 …), over
//! every table of the other families (SDM Vol. 2A §2.2.1).

use super::super::diff::prng::Rng;
use super::gen::{case_with_rex, Mxcsr};
use super::{specs, SimdCase, SimdFamily};

fn any_rex(rng: &mut Rng) -> SimdCase {
    let all = specs();
    let spec = all[rng.below(all.len() as u32) as usize];
    let mut c = case_with_rex(rng, &spec, Mxcsr::Usual, true);
    c.case.long_only = true;
    c
}

pub fn families() -> Vec<SimdFamily> {
    vec![SimdFamily {
        name: "rex-64bit",
        gen: Box::new(any_rex),
    }]
}
