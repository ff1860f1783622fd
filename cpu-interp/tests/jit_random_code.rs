//! `random_code.rs` on the JIT backend: the same test, included here so it runs on the JIT
//! (`tests/backend`: this binary's name starts with `jit_`).
//!
//! Run: `cargo test -p pcvm-cpu-interp --release --test jit_random_code -- --nocapture`.

#[path = "random_code.rs"]
mod random_code;
