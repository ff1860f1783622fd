//! `sst286.rs` on the JIT backend: the same test, included here so it runs on the JIT
//! (`tests/backend`: this binary's name starts with `jit_`).
//!
//! Run: `cargo test -p pcvm-cpu-interp --release --test jit_sst286 -- --nocapture`.

#[path = "sst286.rs"]
mod sst286;
