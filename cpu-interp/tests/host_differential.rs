//! Differential test of the interpreter against the host CPU (issue 2 §4).
//!
//! Generated instruction sequences run natively (a small C runner, in 64-bit mode and in 32-bit
//! compatibility mode) and in the interpreter (32-bit flat protected mode, CPL 3) from the same
//! registers, flags and memory; registers, flags with architecturally undefined bits masked
//! (`diff/undef.rs`), the data region and exception vectors must agree. Cases that mean the same
//! in 64-bit mode also run in the interpreter in 64-bit mode against the host's 64-bit run
//! ("+long64"), and the 64-bit families (`diff/families64.rs`: REX prefixes, 64-bit operands,
//! RIP-relative addressing) run only there, comparing all sixteen 64-bit GPRs.
//!
//! Environment:
//! - `PCVM_DIFF_CASES`: cases per family (default 8000; 1000 on the JIT twin
//!   `jit_host_differential.rs`, which compiles every case).
//! - `PCVM_DIFF_SEED`: seed (hex with 0x, or decimal; default fixed so runs are reproducible).
//! - `PCVM_DIFF_FAMILY`: comma-separated family names to run (default all).
//! - `PCVM_DIFF_CASE`: run only this case index (with the seed and family, reproduces a
//!   reported mismatch exactly).
//! - `PCVM_DIFF_SHOW=n`: print up to n mismatches per family (one per instruction mix).
//! - `PCVM_DIFF_STRICT=1`: compare architecturally undefined bits too (a diagnostic: shows where
//!   the interpreter's choice differs from this CPU's; expected to fail).
//! - `PCVM_DIFF_FRESH_CPU=1`: a new interpreter per case instead of one reused per worker.
//! - `PCVM_DIFF_DUMP_DIR=dir`: keep each native runner input batch there (to replay by hand).
//! - `PCVM_REQUIRE_FIXTURES=1`: a host that cannot run native code fails instead of skipping.
//!
//! Run: `cargo test -p pcvm-cpu-interp --test host_differential -- --nocapture`.

mod diff;

use std::collections::HashSet;
use std::time::Instant;

use diff::backend;
use diff::driver::{
    case_indices, env_u64, native_runner, report_and_check, run_families, select_families,
    FamilyReport,
};
use diff::families::{self, Family};
use diff::families64;
use diff::interp::InterpSide;
use diff::native::NativeRunner;
use diff::prng::Rng;
use diff::{compare, describe, mnemonics, same_in_64bit_mode, Case, NativeMode, Outcome, Segs};

const DEFAULT_SEED: u64 = 0x5EED_0002_D1FF_0001;
const DEFAULT_CASES: u64 = 8000;
/// Cases per family on the JIT twin (`jit_host_differential`), which compiles every case.
const JIT_DEFAULT_CASES: u64 = 1000;
/// Mismatches printed in full per family (all are counted); one per distinct mnemonic.
const SHOWN_PER_FAMILY: usize = 6;

/// Mismatches printed per family: `PCVM_DIFF_SHOW` or [`SHOWN_PER_FAMILY`].
fn shown_per_family() -> usize {
    env_u64("PCVM_DIFF_SHOW").map_or(SHOWN_PER_FAMILY, |n| n as usize)
}

fn run_family(
    fam: &Family,
    seed: u64,
    indices: &[u64],
    native: &NativeRunner,
    interp: &mut InterpSide,
) -> FamilyReport {
    let start = Instant::now();
    let strict = std::env::var("PCVM_DIFF_STRICT").as_deref() == Ok("1");
    let cases: Vec<Case> = indices
        .iter()
        .map(|&i| {
            let mut c = (fam.gen)(&mut Rng::for_case(seed, fam.name, i));
            if strict {
                c.undef = Default::default();
            }
            c
        })
        .collect();
    let compat_idx: Vec<usize> = (0..cases.len()).filter(|&i| !cases[i].long_only).collect();
    let all: Vec<&Case> = compat_idx.iter().map(|&i| &cases[i]).collect();
    let long_idx: Vec<usize> = (0..cases.len())
        .filter(|&i| {
            cases[i].long_only
                || (cases[i].allow_64
                    && cases[i].segs == Segs::FLAT.at(cases[i].code_offset)
                    && same_in_64bit_mode(&cases[i].code))
        })
        .collect();
    let long_cases: Vec<&Case> = long_idx.iter().map(|&i| &cases[i]).collect();
    let mut report = FamilyReport {
        cases: cases.len(),
        long64: long_idx.len(),
        ..FamilyReport::new(fam.name)
    };
    let compat = native.run(NativeMode::Compat32, &all);
    let long = native.run(NativeMode::Long64, &long_cases);
    let (compat, long) = match (compat, long) {
        (Ok(c), Ok(l)) => (c, l),
        (Err(e), _) | (_, Err(e)) => {
            report.harness_errors += 1;
            report.details.push(format!("native runner failed: {e}"));
            return report;
        }
    };
    let mut long_of: Vec<Option<&Outcome>> = vec![None; cases.len()];
    for (k, &i) in long_idx.iter().enumerate() {
        long_of[i] = Some(&long[k]);
    }
    let mut compat_of: Vec<Option<&Outcome>> = vec![None; cases.len()];
    for (k, &i) in compat_idx.iter().enumerate() {
        compat_of[i] = Some(&compat[k]);
    }
    // Print one mismatch per distinct instruction mix, up to SHOWN_PER_FAMILY.
    let mut shown = HashSet::new();
    let mut show = |details: &mut Vec<String>, case: &Case| {
        details.len() < shown_per_family() && shown.insert(mnemonics(&case.code))
    };
    let header = |i: usize, case: &Case| {
        format!(
            "family={} seed={:#x} case={} (reproduce: PCVM_DIFF_SEED={:#x} PCVM_DIFF_FAMILY={} PCVM_DIFF_CASE={})\n    {}",
            fam.name,
            seed,
            indices[i],
            seed,
            fam.name,
            indices[i],
            describe(case)
        )
    };
    for (i, case) in cases.iter().enumerate() {
        // The interpreter in 64-bit mode against the host's 64-bit run.
        if let Some(l) = long_of[i] {
            let d = match interp.run64(case) {
                Ok(got) => compare(case, &got, l),
                Err(e) => vec![format!("interpreter: {e}")],
            };
            if !d.is_empty() {
                report.mismatches += 1;
                if show(&mut report.details, case) {
                    report.details.push(format!(
                        "MISMATCH {}\n      interp vs host in 64-bit mode:\n      {}",
                        header(i, case),
                        d.join("\n      ")
                    ));
                }
                continue;
            }
        }
        let Some(host) = compat_of[i] else {
            continue;
        };
        // The two host modes must agree with each other, or the harness is wrong.
        if let Some(l) = long_of[i] {
            let d = compare(case, l, host);
            if !d.is_empty() {
                report.harness_errors += 1;
                if report.harness_errors <= shown_per_family() {
                    report.details.push(format!(
                        "HARNESS: host long64 vs compat32 disagree, {}\n      {}",
                        header(i, case),
                        d.join("\n      ")
                    ));
                }
                continue;
            }
        }
        let got = match interp.run(case) {
            Ok(o) => o,
            Err(e) => {
                report.mismatches += 1;
                if show(&mut report.details, case) {
                    report.details.push(format!(
                        "MISMATCH {}\n      interpreter: {e}",
                        header(i, case)
                    ));
                }
                continue;
            }
        };
        let d = compare(case, &got, host);
        if !d.is_empty() {
            report.mismatches += 1;
            if show(&mut report.details, case) {
                report.details.push(format!(
                    "MISMATCH {}\n      interp vs host (compat32{}):\n      {}",
                    header(i, case),
                    if long_of[i].is_some() {
                        ", long64 agrees"
                    } else {
                        ""
                    },
                    d.join("\n      ")
                ));
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report
}

#[test]
fn host_differential() {
    let Some(native) = native_runner("", "host differential test") else {
        return;
    };
    let seed = env_u64("PCVM_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let indices = case_indices(if backend::on_jit() {
        JIT_DEFAULT_CASES
    } else {
        DEFAULT_CASES
    });
    let all = families::all()
        .into_iter()
        .chain(families64::all())
        .collect();
    let fams: Vec<Family> = select_families(all, |f| f.name);
    let reports = run_families(
        &fams,
        |f| f.name,
        |f, interp| run_family(f, seed, &indices, native, interp),
    );
    report_and_check(&format!("host differential, seed {seed:#x}"), &reports);
    // 32-bit flat protected-mode integer code: what the translator covers.
    backend::report_jit("host differential", true);
}

/// The native runner alone gives the architecturally known answers (validates the harness
/// independently of the interpreter).
#[test]
fn native_runner_known_results() {
    let Some(native) = native_runner("", "host differential test") else {
        return;
    };
    let case = |code: &[u8], regs: [u32; 8], eflags: u32| Case {
        code: code.to_vec(),
        regs,
        hi: [0; 8],
        ext: [0; 8],
        long_only: false,
        eflags,
        mem_seed: 1,
        mem_style: 0,
        undef: Default::default(),
        allow_64: true,
        segs: Segs::FLAT,
        code_offset: 0,
    };
    let data = diff::DATA_BASE as u32;
    // add eax, ebx: 0xFFFFFFFF + 1 = 0 with CF ZF PF AF.
    let add = case(&[0x01, 0xD8], [0xFFFF_FFFF, 0, 0, 1, 0, 0, 0, 0], 0);
    // div ecx with ecx = 0: #DE at the instruction.
    let div0 = case(&[0xF7, 0xF1], [5, 0, 0, 0, 0, 0, 0, 0], 0);
    // daa: AL=0x0F → 0x15, AF set.
    let daa = case(&[0x27], [0x0F, 0, 0, 0, 0, 0, 0, 0], 0);
    // push eax onto a stack in the data region.
    let push = case(&[0x50], [0x1234_5678, 0, 0, 0, data + 0x1800, 0, 0, 0], 0);
    // std; rep stosb: 3 bytes downwards.
    let stos = case(
        &[0xFD, 0xF3, 0xAA],
        [0xAB, 3, 0, 0, 0, 0, 0, data + 0x10],
        0,
    );
    let cases = [&add, &div0, &daa, &push, &stos];
    let compat = native
        .run(NativeMode::Compat32, &cases)
        .expect("compat32 run");
    assert_eq!((compat[0].vector, compat[0].rip_off), (3, 3));
    assert_eq!(compat[0].regs[0], 0);
    assert_eq!(
        compat[0].eflags & 0x8D5,
        0x55,
        "CF PF AF ZF set, SF OF clear"
    );
    assert_eq!(
        (compat[1].vector, compat[1].rip_off),
        (0, 0),
        "#DE at the DIV"
    );
    assert_eq!(compat[2].regs[0] & 0xFF, 0x15);
    assert_eq!(compat[2].eflags & 0x11, 0x10, "AF set, CF clear");
    assert_eq!(compat[3].regs[4], data + 0x17FC);
    assert_eq!(
        compat[3].mem,
        vec![
            (0x17FC, 0x78),
            (0x17FD, 0x56),
            (0x17FE, 0x34),
            (0x17FF, 0x12)
        ]
    );
    assert_eq!(compat[4].mem, vec![(0xE, 0xAB), (0xF, 0xAB), (0x10, 0xAB)]);
    assert_eq!((compat[4].regs[1], compat[4].regs[7]), (0, data + 0xD));
    assert!(!same_in_64bit_mode(&daa.code) && !same_in_64bit_mode(&push.code));
    assert!(same_in_64bit_mode(&add.code) && same_in_64bit_mode(&stos.code));
    let long = native
        .run(NativeMode::Long64, &[&add, &daa, &stos])
        .expect("long64 run");
    assert_eq!(long[0], compat[0]);
    assert_eq!(long[1].vector, 6, "DAA is #UD in 64-bit mode");
    assert_eq!(long[2], compat[4]);
}

/// The interpreter side of the harness reads results back correctly (independently of the
/// host): the same known answers as `native_runner_known_results`.
#[test]
fn interpreter_side_known_results() {
    let mut side = InterpSide::new().expect("interpreter machine");
    let data = diff::DATA_BASE as u32;
    let case = |code: &[u8], regs: [u32; 8], eflags: u32| Case {
        code: code.to_vec(),
        regs,
        hi: [0; 8],
        ext: [0; 8],
        long_only: false,
        eflags,
        mem_seed: 1,
        mem_style: 0,
        undef: Default::default(),
        allow_64: true,
        segs: Segs::FLAT,
        code_offset: 0,
    };
    let add = side
        .run(&case(&[0x01, 0xD8], [0xFFFF_FFFF, 0, 0, 1, 7, 0, 0, 0], 0))
        .expect("add");
    assert_eq!((add.vector, add.rip_off, add.regs[0]), (3, 3, 0));
    assert_eq!(add.regs[4], 7, "user ESP comes from the exception frame");
    assert_eq!(add.eflags & 0x8D5, 0x55);
    let div0 = side
        .run(&case(&[0xF7, 0xF1], [5, 0, 0, 0, 0, 0, 0, 0], 0))
        .expect("div");
    assert_eq!((div0.vector, div0.rip_off), (0, 0));
    let push = side
        .run(&case(
            &[0x50],
            [0x1234_5678, 0, 0, 0, data + 0x1800, 0, 0, 0],
            0,
        ))
        .expect("push");
    assert_eq!(push.regs[4], data + 0x17FC);
    assert_eq!(
        push.mem,
        vec![
            (0x17FC, 0x78),
            (0x17FD, 0x56),
            (0x17FE, 0x34),
            (0x17FF, 0x12)
        ]
    );
}
