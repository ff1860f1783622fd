//! `simd_differential.rs` on the JIT backend: the same test, included here so it runs on the JIT
//! (`tests/backend`: this binary's name starts with `jit_`).
//!
//! Run: `cargo test -p pcvm-cpu-interp --release --test jit_simd_differential -- --nocapture`.

#[path = "simd_differential.rs"]
mod simd_differential;
