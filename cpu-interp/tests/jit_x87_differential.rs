//! `x87_differential.rs` on the JIT backend: the same test, included here so it runs on the JIT
//! (`tests/backend`: this binary's name starts with `jit_`).
//!
//! Run: `cargo test -p pcvm-cpu-interp --release --test jit_x87_differential -- --nocapture`.

#[path = "x87_differential.rs"]
mod x87_differential;
