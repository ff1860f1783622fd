//! SIMD extension of the host-CPU differential harness (`tests/simd_differential.rs`): cases
//! that start from a seeded FXSAVE image (x87 control, MXCSR, XMM0–15) and whose final image is
//! compared too. One module per instruction-set family; each contributes [`SimdFamily`]s to
//! [`all`], so another set (x87, MMX) only adds a module and a line there.

pub mod gen;
pub mod mmx_forms;
pub mod rex;
pub mod sse;
pub mod sse2;
pub mod sse3;
pub mod sse41;
pub mod sse42;
pub mod ssse3;
pub mod state;

use super::diff::prng::Rng;
use super::diff::Case;

/// One case: the instruction bytes and GPR/memory set-up plus the FXSAVE image to start from.
pub struct SimdCase {
    pub case: Case,
    pub fx: Box<[u8; 512]>,
}

/// A named generator.
pub struct SimdFamily {
    pub name: &'static str,
    pub gen: Box<dyn Fn(&mut Rng) -> SimdCase + Send + Sync>,
}

/// Every family, in report order.
pub fn all() -> Vec<SimdFamily> {
    [
        state::families(),
        sse::families(),
        sse2::families(),
        sse3::families(),
        ssse3::families(),
        sse41::families(),
        sse42::families(),
        mmx_forms::families(),
        rex::families(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Every table-driven instruction form.
pub fn specs() -> Vec<gen::OpSpec> {
    [
        sse::tables(),
        sse2::tables(),
        sse3::tables(),
        ssse3::tables(),
        sse41::tables(),
        sse42::tables(),
        mmx_forms::tables(),
    ]
    .into_iter()
    .flatten()
    .flat_map(|t| t.iter().copied())
    .collect()
}

/// Byte ranges of the FXSAVE image compared: FCW, FSW, abridged FTW, MXCSR, ST0–7 (10 bytes
/// each) and XMM0–15. FOP/FIP/FDP are not: AMD processors store them only when an x87
/// exception is pending.
pub fn fx_differences(interp: &[u8], host: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: String, r: std::ops::Range<usize>| {
        if interp.get(r.clone()) != host.get(r.clone()) {
            let hex = |b: Option<&[u8]>| {
                b.map(|b| {
                    b.iter()
                        .rev()
                        .map(|x| format!("{x:02x}"))
                        .collect::<String>()
                })
                .unwrap_or_default()
            };
            out.push(format!(
                "{name}: interp {} host {}",
                hex(interp.get(r.clone())),
                hex(host.get(r))
            ));
        }
    };
    field("fcw".into(), 0..2);
    field("fsw".into(), 2..4);
    field("ftw".into(), 4..5);
    field("mxcsr".into(), 24..28);
    for i in 0..8 {
        field(format!("st{i}"), 32 + 16 * i..42 + 16 * i);
    }
    for i in 0..16 {
        field(format!("xmm{i}"), 160 + 16 * i..176 + 16 * i);
    }
    out
}
