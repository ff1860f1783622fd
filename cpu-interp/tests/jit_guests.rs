//! The guest tests (`guests_*.rs`, `code_asm` guests) on the JIT backend: the same test
//! files, included here so their `Machine` runs on the JIT (`tests/backend`: this binary's
//! name starts with `jit_`), compiling every block on first sight.
//!
//! Run: `cargo test -p pcvm-cpu-interp --release --test jit_guests`.

// Each included file declares `mod common;` as it does in its own test binary.
#![allow(clippy::duplicate_mod)]

#[path = "guests_exceptions.rs"]
mod exceptions;

#[path = "guests_long.rs"]
mod long;

#[path = "guests_long_mode.rs"]
mod long_mode;

#[path = "guests_long_setup.rs"]
mod long_setup;

#[path = "guests_modes.rs"]
mod modes;

#[path = "guests_paging.rs"]
mod paging;

#[path = "guests_privilege.rs"]
mod privilege;

#[path = "guests_random.rs"]
mod random;

#[path = "guests_sse.rs"]
mod sse;

#[path = "guests_system.rs"]
mod system;

#[path = "guests_tasks.rs"]
mod tasks;

#[path = "guests_v86.rs"]
mod v86;

#[path = "guests_x87.rs"]
mod x87;

/// The JIT translated the guest tests rather than leaving them all to its interpreter: the
/// other tests of this binary (less the random-code ones), run again in a child process, print
/// their machines' JIT counters; the sum must show compiled blocks and instructions run
/// natively. Prints how many tests translated code and which did not (64-bit, 16-bit and x87
/// code stay in the interpreter until the translator covers them).
#[test]
fn the_jit_translated_the_guest_tests() {
    let exe = std::env::current_exe().expect("this test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--nocapture",
            "--test-threads=1",
            "--skip",
            "the_jit_translated",
        ])
        .args(["--skip", "random"])
        .output()
        .expect("run the guest tests again");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the guest tests failed:\n{text}");
    // Each "test NAME ... " line is followed by what that test printed.
    let (mut tests, mut translating, mut blocks, mut native) = (0, 0, 0u64, 0u64);
    let mut untranslated = Vec::new();
    for chunk in text.split("\ntest ").skip(1) {
        let Some((name, body)) = chunk.split_once(" ... ") else {
            continue;
        };
        tests += 1;
        let mut test_blocks = 0;
        for line in body.lines() {
            let Some(rest) = line.strip_prefix("JIT: ") else {
                continue;
            };
            // The number just before `what` (see `backend::describe`).
            let number = |what: &str| -> u64 {
                let i = rest.find(what).expect("JIT counter line");
                rest[..i]
                    .split_whitespace()
                    .last()
                    .and_then(|n| n.parse().ok())
                    .expect("JIT counter")
            };
            test_blocks += number(" blocks compiled");
            native += number(" instructions run natively");
        }
        blocks += test_blocks;
        if test_blocks > 0 {
            translating += 1;
        } else {
            untranslated.push(name.to_owned());
        }
    }
    println!(
        "JIT guest tests: {translating} of {tests} translated code: {blocks} blocks compiled, \
         {native} instructions run natively; nothing translated in: {}",
        untranslated.join(", ")
    );
    assert!(tests > 0, "no guest test ran:\n{text}");
    assert!(
        blocks > 0 && native > 0,
        "the JIT translated none of the guest tests"
    );
}
