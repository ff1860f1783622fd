//! Criterion benchmark of the JIT backend on the same workloads as `interp` (`workloads/`),
//! plus the translation cost per guest instruction (Cranelift compile time of the blocks the
//! workloads make hot, divided by the instructions in them).
//!
//! Run: `cargo bench --bench jit`.

mod workloads;

use criterion::{criterion_group, criterion_main, Criterion};
use pcvm_cpu_jit::JitBackend;

fn jit() -> JitBackend {
    JitBackend::new().expect("JIT backend")
}

/// Run every workload once on a backend that compiles each block on first sight, and report
/// the compile time per guest instruction and per block.
fn translation_cost() {
    let eager = || {
        let mut j = jit();
        j.set_threshold(1);
        j
    };
    let (mut compile_ns, mut insns, mut blocks) = (0u64, 0u64, 0u64);
    for (_, mut guest, _) in workloads::cases(&eager).expect("workloads") {
        guest.run().expect("run");
        let s = guest.cpu.stats();
        compile_ns += s.compile_ns;
        insns += s.insns_translated;
        blocks += s.blocks_compiled;
    }
    println!(
        "jit/translation: {blocks} blocks, {insns} guest instructions, {:.1} µs per guest \
         instruction, {:.1} µs per block",
        compile_ns as f64 / insns.max(1) as f64 / 1e3,
        compile_ns as f64 / blocks.max(1) as f64 / 1e3
    );
}

fn bench(c: &mut Criterion) {
    translation_cost();
    workloads::bench_all(c, "jit", &jit);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
