//! `host_differential.rs` on the JIT backend: the same test, included here so it runs on the JIT
//! (`tests/backend`: this binary's name starts with `jit_`).
//!
//! Run: `cargo test -p pcvm-cpu-interp --release --test jit_host_differential -- --nocapture`.

#[path = "host_differential.rs"]
mod host_differential;
