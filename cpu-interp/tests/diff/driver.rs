//! The part of a differential test run that does not depend on what is compared: the
//! `PCVM_DIFF_*` environment knobs, running families on worker threads (each with its own
//! interpreter machine), and the per-family report table that must show zero mismatches.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use super::interp::InterpSide;
use super::native::NativeRunner;

/// What one family of cases came to.
pub struct FamilyReport {
    pub name: &'static str,
    pub cases: usize,
    /// Cases also run (and compared) in 64-bit mode.
    pub long64: usize,
    pub mismatches: usize,
    pub harness_errors: usize,
    pub seconds: f64,
    /// Printed before the table: the first mismatches in full.
    pub details: Vec<String>,
}

impl FamilyReport {
    /// An empty report for family `name`.
    pub fn new(name: &'static str) -> Self {
        FamilyReport {
            name,
            cases: 0,
            long64: 0,
            mismatches: 0,
            harness_errors: 0,
            seconds: 0.0,
            details: Vec::new(),
        }
    }
}

/// A number from the environment, decimal or `0x` hex (underscores allowed).
pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => v.replace('_', "").parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

/// The case indices to run per family: `PCVM_DIFF_CASE` alone, else `PCVM_DIFF_CASES` (default
/// `default_cases`) from 0.
pub fn case_indices(default_cases: u64) -> Vec<u64> {
    match env_u64("PCVM_DIFF_CASE") {
        Some(i) => vec![i],
        None => (0..env_u64("PCVM_DIFF_CASES").unwrap_or(default_cases)).collect(),
    }
}

/// The families `PCVM_DIFF_FAMILY` (a comma-separated list of names) selects; all without it.
pub fn select_families<F>(all: Vec<F>, name: impl Fn(&F) -> &'static str) -> Vec<F> {
    let filter: Option<Vec<String>> = std::env::var("PCVM_DIFF_FAMILY")
        .ok()
        .map(|s| s.split(',').map(|f| f.trim().to_string()).collect());
    let fams: Vec<F> = all
        .into_iter()
        .filter(|f| {
            filter
                .as_ref()
                .is_none_or(|l| l.iter().any(|n| n == name(f)))
        })
        .collect();
    assert!(!fams.is_empty(), "PCVM_DIFF_FAMILY matches no family");
    fams
}

/// Run every family through `run` on up to four worker threads, each with its own interpreter
/// machine; the reports come back in the order of `fams`.
pub fn run_families<F: Sync>(
    fams: &[F],
    name: impl Fn(&F) -> &'static str,
    run: impl Fn(&F, &mut InterpSide) -> FamilyReport + Sync,
) -> Vec<FamilyReport> {
    let queue = Mutex::new(fams.iter().collect::<Vec<_>>());
    let reports = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut interp = InterpSide::new().expect("interpreter machine");
                loop {
                    let Some(f) = queue.lock().expect("queue").pop() else {
                        break;
                    };
                    let r = run(f, &mut interp);
                    reports.lock().expect("reports").push(r);
                }
            });
        }
    });
    let mut reports = reports.into_inner().expect("reports");
    let order: Vec<&str> = fams.iter().map(&name).collect();
    reports.sort_by_key(|r| order.iter().position(|n| *n == r.name));
    reports
}

/// Print the mismatch details and the per-family table under `title`, then require zero
/// mismatches and zero harness errors.
pub fn report_and_check(title: &str, reports: &[FamilyReport]) {
    for r in reports {
        for d in &r.details {
            println!("{d}\n");
        }
    }
    println!("{title}:");
    println!(
        "  {:<24} {:>7} {:>8} {:>10} {:>8} {:>7}",
        "family", "cases", "+long64", "mismatches", "harness", "secs"
    );
    let (mut cases, mut long, mut mism, mut harness) = (0, 0, 0, 0);
    for r in reports {
        println!(
            "  {:<24} {:>7} {:>8} {:>10} {:>8} {:>7.1}",
            r.name, r.cases, r.long64, r.mismatches, r.harness_errors, r.seconds
        );
        cases += r.cases;
        long += r.long64;
        mism += r.mismatches;
        harness += r.harness_errors;
    }
    println!(
        "  {:<24} {:>7} {:>8} {:>10} {:>8}",
        "TOTAL", cases, long, mism, harness
    );
    assert_eq!(
        (mism, harness),
        (0, 0),
        "interpreter/host mismatches and harness errors (details above)"
    );
}

/// The native runner, compiled once per test process into `CARGO_TARGET_TMPDIR/subdir`.
/// `None` (a loud "SKIPPED") when it cannot be built, a failure under
/// `PCVM_REQUIRE_FIXTURES=1`; `what` names the test in those messages.
pub fn native_runner(subdir: &str, what: &str) -> Option<&'static NativeRunner> {
    static RUNNER: OnceLock<Result<NativeRunner, String>> = OnceLock::new();
    let built = RUNNER
        .get_or_init(|| NativeRunner::build(&Path::new(env!("CARGO_TARGET_TMPDIR")).join(subdir)));
    match built {
        Ok(r) => Some(r),
        Err(why) => {
            if std::env::var("PCVM_REQUIRE_FIXTURES").as_deref() == Ok("1") {
                panic!("{what} cannot run: {why}");
            }
            eprintln!("SKIPPED {what}: {why}");
            None
        }
    }
}
