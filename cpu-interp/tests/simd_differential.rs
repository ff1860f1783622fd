//! Differential test of the interpreter's SSE–SSE4.2, MXCSR and FXSAVE/XSAVE against the host
//! CPU (issue 4): each case starts from a seeded FXSAVE image (MXCSR, XMM0–15, x87 control) and
//! the same registers and memory on both sides, runs one instruction (or a short sequence)
//! natively and in the interpreter (CPL 3, CR4.OSFXSR|OSXMMEXCPT|OSXSAVE, XCR0 = x87|SSE) in
//! both 32-bit mode (host: compatibility mode; interpreter: protected mode) and 64-bit mode
//! (every case whose bytes mean the same there, plus the REX-prefixed `rex-64bit` family,
//! whose cases are `long_only`); GPRs (all sixteen in full for those), flags, memory, the
//! exception vector and the final FXSAVE image must agree. Families live in `simd/` (one
//! module per instruction set).
//!
//! Environment (as host_differential.rs): `PCVM_DIFF_CASES` (default 3000 per family;
//! 500 on the JIT twin `jit_simd_differential.rs`),
//! `PCVM_DIFF_SEED`, `PCVM_DIFF_FAMILY`, `PCVM_DIFF_CASE`, `PCVM_DIFF_SHOW`,
//! `PCVM_REQUIRE_FIXTURES=1`.
//!
//! Run: `cargo test -p pcvm-cpu-interp --release --test simd_differential -- --nocapture`.

#[allow(dead_code)]
mod diff;
mod simd;

use std::collections::HashSet;
use std::time::Instant;

use diff::backend;
use diff::driver::{
    case_indices, env_u64, native_runner, report_and_check, run_families, select_families,
    FamilyReport,
};
use diff::interp::InterpSide;
use diff::native::{FxOutcome, NativeRunner, SimdState};
use diff::prng::Rng;
use diff::{compare, describe, same_in_64bit_mode, Case, NativeMode, Segs};
use pcvm_core::cpu_state::cr;
use pcvm_core::CpuState;
use simd::{SimdCase, SimdFamily};

const DEFAULT_SEED: u64 = 0x5EED_0004_551D_0001;
const DEFAULT_CASES: u64 = 3000;
/// Cases per family on the JIT twin (`jit_simd_differential`), which compiles every case.
const JIT_DEFAULT_CASES: u64 = 500;

/// The interpreter starts from the case's FXSAVE image with SSE and XSAVE enabled by the OS
/// (as Linux runs user code).
fn prepare(fx: &[u8; 512]) -> impl Fn(&mut CpuState) + '_ {
    move |s: &mut CpuState| {
        s.cr4 |= cr::CR4_OSFXSR | cr::CR4_OSXMMEXCPT | cr::CR4_OSXSAVE;
        s.xcr0 = 3;
        let f = &mut s.fpu;
        f.fcw = u16::from_le_bytes([fx[0], fx[1]]);
        f.fsw = u16::from_le_bytes([fx[2], fx[3]]);
        f.ftw = fx[4];
        f.mxcsr = u32::from_le_bytes([fx[24], fx[25], fx[26], fx[27]]);
        for i in 0..8 {
            f.st[i][..10].copy_from_slice(&fx[32 + 16 * i..42 + 16 * i]);
        }
        for i in 0..16 {
            f.xmm[i].copy_from_slice(&fx[160 + 16 * i..176 + 16 * i]);
        }
    }
}

/// The FXSAVE image of the interpreter's final state (the compared fields).
fn image_of(s: &CpuState) -> Vec<u8> {
    let mut img = vec![0u8; 512];
    let f = &s.fpu;
    img[0..2].copy_from_slice(&f.fcw.to_le_bytes());
    img[2..4].copy_from_slice(&f.fsw.to_le_bytes());
    img[4] = f.ftw;
    img[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
    for i in 0..8 {
        img[32 + 16 * i..42 + 16 * i].copy_from_slice(&f.st[i][..10]);
    }
    for i in 0..16 {
        img[160 + 16 * i..176 + 16 * i].copy_from_slice(&f.xmm[i]);
    }
    img
}

/// Field-by-field differences of two outcomes, the FXSAVE image included.
fn differences(case: &Case, a: &FxOutcome, b: &FxOutcome) -> Vec<String> {
    let mut d = compare(case, &a.0, &b.0);
    if a.0.mem != b.0.mem {
        // The bytes where the two differ (the full lists can be long: FXSAVE writes 512).
        let only = |x: &[(u16, u8)], y: &[(u16, u8)]| -> String {
            x.iter()
                .filter(|e| !y.contains(e))
                .take(16)
                .map(|(o, v)| format!("{o:#x}:{v:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        d.push(format!(
            "memory only in interp [{}] only in host [{}]",
            only(&a.0.mem, &b.0.mem),
            only(&b.0.mem, &a.0.mem)
        ));
    }
    match (&a.1, &b.1) {
        (Some(x), Some(y)) => d.extend(simd::fx_differences(&x.fx, &y.fx)),
        _ => d.push("no FXSAVE image".into()),
    }
    d
}

/// The interpreter's final state as the runner reports the host's.
fn simd_state(st: &CpuState) -> Option<SimdState> {
    Some(SimdState { fx: image_of(st) })
}

fn run_family(
    fam: &SimdFamily,
    seed: u64,
    indices: &[u64],
    native: &NativeRunner,
    interp: &mut InterpSide,
) -> FamilyReport {
    let start = Instant::now();
    let cases: Vec<SimdCase> = indices
        .iter()
        .map(|&i| (fam.gen)(&mut Rng::for_case(seed, fam.name, i)))
        .collect();
    let compat_idx: Vec<usize> = (0..cases.len())
        .filter(|&i| !cases[i].case.long_only)
        .collect();
    let long_idx: Vec<usize> = (0..cases.len())
        .filter(|&i| {
            let c = &cases[i].case;
            c.long_only
                || (c.allow_64
                    && c.segs == Segs::FLAT.at(c.code_offset)
                    && same_in_64bit_mode(&c.code))
        })
        .collect();
    let pick = |idx: &[usize]| -> (Vec<&Case>, Vec<&[u8; 512]>) {
        idx.iter().map(|&i| (&cases[i].case, &*cases[i].fx)).unzip()
    };
    let (compat_cases, compat_fx) = pick(&compat_idx);
    let (long_cases, long_fx) = pick(&long_idx);
    let mut r = FamilyReport {
        cases: cases.len(),
        long64: long_idx.len(),
        ..FamilyReport::new(fam.name)
    };
    let compat = native.run_fx(NativeMode::Compat32, &compat_cases, Some(&compat_fx));
    let long = native.run_fx(NativeMode::Long64, &long_cases, Some(&long_fx));
    let (compat, long) = match (compat, long) {
        (Ok(c), Ok(l)) => (c, l),
        (Err(e), _) | (_, Err(e)) => {
            r.harness_errors += 1;
            r.details.push(format!("native runner failed: {e}"));
            return r;
        }
    };
    let mut compat_of = vec![None; cases.len()];
    for (k, &i) in compat_idx.iter().enumerate() {
        compat_of[i] = Some(&compat[k]);
    }
    let mut long_of = vec![None; cases.len()];
    for (k, &i) in long_idx.iter().enumerate() {
        long_of[i] = Some(&long[k]);
    }
    let show_max = env_u64("PCVM_DIFF_SHOW").map_or(6, |n| n as usize);
    let mut shown = HashSet::new();
    for (i, sc) in cases.iter().enumerate() {
        let case = &sc.case;
        let header = |bits: u32| {
            format!(
                "family={} case={} (PCVM_DIFF_SEED={seed:#x} PCVM_DIFF_FAMILY={} PCVM_DIFF_CASE={})\n    {}\n    {bits}-bit: `{}` mxcsr={:#x}",
                fam.name,
                indices[i],
                fam.name,
                indices[i],
                describe(case),
                diff::disassemble(&case.code, bits),
                u32::from_le_bytes([sc.fx[24], sc.fx[25], sc.fx[26], sc.fx[27]])
            )
        };
        let mut failed: Vec<(u32, Vec<String>)> = Vec::new();
        if let Some(c) = compat_of[i] {
            // The two host modes must agree with each other, or the harness is wrong.
            if let Some(l) = long_of[i] {
                let d = differences(case, l, c);
                if !d.is_empty() {
                    r.harness_errors += 1;
                    if r.harness_errors <= show_max {
                        r.details.push(format!(
                            "HARNESS: host long64 vs compat32 disagree, {}\n      {}",
                            header(32),
                            d.join("\n      ")
                        ));
                    }
                    continue;
                }
            }
            let got = interp
                .run_with(case, &prepare(&sc.fx))
                .map(|(o, st)| (o, simd_state(&st)));
            let d = match got {
                Ok(o) => differences(case, &o, c),
                Err(e) => vec![format!("interpreter: {e}")],
            };
            if !d.is_empty() {
                failed.push((32, d));
            }
        }
        if let Some(l) = long_of[i] {
            let got = interp
                .run64_with(case, &prepare(&sc.fx))
                .map(|(o, st)| (o, simd_state(&st)));
            let d = match got {
                Ok(o) => differences(case, &o, l),
                Err(e) => vec![format!("interpreter (64-bit): {e}")],
            };
            if !d.is_empty() {
                failed.push((64, d));
            }
        }
        if let Some((bits, d)) = failed.first() {
            r.mismatches += 1;
            let bitness = if case.long_only { 64 } else { 32 };
            if r.details.len() < show_max
                && shown.insert((*bits, mnemonics_in(&case.code, bitness)))
            {
                let regs: Vec<String> = (0..if *bits == 64 { 16 } else { 8 })
                    .map(|k| {
                        let b = &sc.fx[160 + 16 * k..176 + 16 * k];
                        format!(
                            "xmm{k}={}",
                            b.iter()
                                .rev()
                                .map(|x| format!("{x:02x}"))
                                .collect::<String>()
                        )
                    })
                    .collect();
                r.details.push(format!(
                    "MISMATCH ({bits}-bit interpreter) {}\n    {}\n      {}",
                    header(bitness),
                    regs.join(" "),
                    d.join("\n      ")
                ));
            }
        }
    }
    r.seconds = start.elapsed().as_secs_f64();
    r
}

/// The mnemonics of `code` decoded as `bitness`-bit code (groups mismatches).
fn mnemonics_in(code: &[u8], bitness: u32) -> String {
    let mut dec = iced_x86::Decoder::new(bitness, code, iced_x86::DecoderOptions::NONE);
    let mut out = Vec::new();
    while dec.can_decode() {
        out.push(format!("{:?}", dec.decode().mnemonic()));
    }
    out.join(";")
}

#[test]
fn simd_differential() {
    let Some(native) = native_runner("simd", "SIMD differential test") else {
        return;
    };
    let seed = env_u64("PCVM_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let indices = case_indices(if backend::on_jit() {
        JIT_DEFAULT_CASES
    } else {
        DEFAULT_CASES
    });
    let fams: Vec<SimdFamily> = select_families(simd::all(), |f| f.name);
    let reports = run_families(
        &fams,
        |f| f.name,
        |f, interp| run_family(f, seed, &indices, native, interp),
    );
    report_and_check(&format!("SIMD differential, seed {seed:#x}"), &reports);
    // SSE code runs in the JIT's interpreter fallback until the translator covers it.
    backend::report_jit("SIMD differential", false);
}

/// The native side loads and reports the FXSAVE image: known results of ADDPS and an unmasked
/// divide by zero (#XM), independent of the interpreter.
#[test]
fn native_simd_known_results() {
    let Some(native) = native_runner("simd", "SIMD differential test") else {
        return;
    };
    let case = |code: &[u8]| Case {
        code: code.to_vec(),
        regs: [0; 8],
        hi: [0; 8],
        ext: [0; 8],
        long_only: false,
        eflags: 0,
        mem_seed: 1,
        mem_style: 0,
        undef: Default::default(),
        allow_64: true,
        segs: Segs::FLAT,
        code_offset: 0,
    };
    let one = 1.0f32.to_bits();
    let mut xmm = [0u128; 16];
    xmm[0] = u128::from(one) * 0x0000_0001_0000_0001_0000_0001_0000_0001;
    xmm[1] = xmm[0];
    let fx_ok = simd::gen::fx_image(0x1F80, &xmm);
    let fx_zm = simd::gen::fx_image(0x1F80 & !(1 << 9), &xmm);
    let add = case(&[0x0F, 0x58, 0xC1]); // addps xmm0, xmm1
    let div = case(&[0x0F, 0x5E, 0xC2]); // divps xmm0, xmm2 (zero)
    let out = native
        .run_fx(NativeMode::Compat32, &[&add, &div], Some(&[&fx_ok, &fx_zm]))
        .expect("runner");
    let two = u128::from(2.0f32.to_bits()) * 0x0000_0001_0000_0001_0000_0001_0000_0001;
    let img = &out[0].1.as_ref().expect("image").fx;
    assert_eq!(out[0].0.vector, 3);
    assert_eq!(&img[160..176], &two.to_le_bytes());
    let img = &out[1].1.as_ref().expect("image").fx;
    assert_eq!(out[1].0.vector, 19, "#XM");
    assert_eq!(
        &img[160..176],
        &xmm[0].to_le_bytes(),
        "destination unchanged"
    );
    assert_eq!(img[24] & 0x3F, 0x04, "ZE");
}

/// Each table entry encodes the instruction its name says (iced's mnemonic, up to the first
/// `-`; `a/b` names two forms of one opcode), so a typo in an opcode cannot silently test something else.
#[test]
fn simd_tables_decode_to_their_names() {
    for spec in simd::specs() {
        let mut rng = Rng::for_case(1, spec.name, 0);
        let c = simd::gen::case(&mut rng, &spec, simd::gen::Mxcsr::Usual);
        let got = diff::mnemonics(&c.case.code).to_lowercase();
        let base = spec.name.split('-').next().unwrap_or_default();
        assert!(
            base.split('/').any(|n| n == got),
            "{} encodes {:02x?} = {got}",
            spec.name,
            c.case.code
        );
    }
}
