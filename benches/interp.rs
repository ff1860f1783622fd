//! Criterion benchmark of the reference interpreter: guest instructions per second on the
//! shared workloads (`workloads/`; `Throughput::Elements` = architectural instructions).
//!
//! Run: `cargo bench --bench interp`.

mod workloads;

use criterion::{criterion_group, criterion_main, Criterion};
use pcvm_cpu_interp::Interpreter;

fn bench(c: &mut Criterion) {
    workloads::bench_all(c, "interp", &Interpreter::new);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
