//! The CPU backend a conformance or guest test runs on: the interpreter, or the JIT for the
//! `jit_*` twins of the test files (the same tests, included with `#[path]`), so every
//! conformance, differential and guest test also checks the JIT (issue 7).
//!
//! The twins compile every block on first sight ([`jit_threshold`]) so the translator, not
//! only the JIT's interpreter fallback, runs the tests; the JIT counters of
//! every CPU a test binary used are summed in [`jit_totals`] so a twin can show (and assert)
//! that it translated code.
#![allow(dead_code)]

use std::sync::Mutex;

use pcvm_core::{CpuBackend, CpuState, DebugConfig, Kicker, Platform, RunLimit, VmExit};
use pcvm_cpu_interp::Interpreter;
use pcvm_cpu_jit::{JitBackend, JitStats};

/// This test binary is a JIT twin: its crate (test target) name starts with `jit_`.
pub fn on_jit() -> bool {
    env!("CARGO_CRATE_NAME").starts_with("jit_")
}

/// Executions of a block before the JIT twins compile it: `PCVM_JIT_THRESHOLD` or 1 (most
/// guest snippets run once). Tests that run megabytes of random straight-line code raise it
/// with [`TestCpu::set_jit_threshold`] rather than pay a compile per block.
pub fn jit_threshold() -> u32 {
    std::env::var("PCVM_JIT_THRESHOLD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// One CPU under test.
pub enum TestCpu {
    Interp(Box<Interpreter>),
    Jit(Box<JitBackend>),
}

impl std::fmt::Debug for TestCpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TestCpu::Interp(c) => c.fmt(f),
            TestCpu::Jit(c) => c.fmt(f),
        }
    }
}

impl Default for TestCpu {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCpu {
    /// A CPU in the RESET state on this binary's backend ([`on_jit`]).
    pub fn new() -> Self {
        if on_jit() {
            Self::jit()
        } else {
            Self::interpreter()
        }
    }

    /// Like [`TestCpu::new`], with the JIT compiling blocks after `n` executions (1 for
    /// harnesses that run each piece of code once).
    pub fn with_threshold(n: u32) -> Self {
        if on_jit() {
            Self::jit_at(n)
        } else {
            Self::interpreter()
        }
    }

    pub fn interpreter() -> Self {
        TestCpu::Interp(Box::new(Interpreter::new()))
    }

    /// The JIT compiling blocks after [`jit_threshold`] executions.
    pub fn jit() -> Self {
        Self::jit_at(jit_threshold())
    }

    /// The JIT compiling blocks after `n` executions.
    pub fn jit_at(n: u32) -> Self {
        let mut j = JitBackend::new().expect("create the JIT");
        j.set_threshold(n);
        TestCpu::Jit(Box::new(j))
    }

    fn backend(&mut self) -> &mut dyn CpuBackend {
        match self {
            TestCpu::Interp(c) => &mut **c,
            TestCpu::Jit(c) => &mut **c,
        }
    }

    fn backend_ref(&self) -> &dyn CpuBackend {
        match self {
            TestCpu::Interp(c) => &**c,
            TestCpu::Jit(c) => &**c,
        }
    }

    /// On the JIT, compile blocks after `n` executions from now on.
    pub fn set_jit_threshold(&mut self, n: u32) {
        if let TestCpu::Jit(j) = self {
            j.set_threshold(n);
        }
    }

    /// `--trace`-style instruction trace (the JIT then runs everything in its interpreter).
    pub fn set_trace(&mut self, out: Option<Box<dyn std::io::Write + Send>>) {
        match self {
            TestCpu::Interp(c) => c.set_trace(out),
            TestCpu::Jit(c) => c.set_trace(out),
        }
    }

    /// The JIT's counters (`None` on the interpreter).
    pub fn jit_stats(&self) -> Option<JitStats> {
        match self {
            TestCpu::Interp(_) => None,
            TestCpu::Jit(c) => Some(c.stats()),
        }
    }
}

/// Counters of the JIT CPUs dropped so far in this process.
static TOTALS: Mutex<JitStats> = Mutex::new(JitStats {
    blocks_compiled: 0,
    insns_translated: 0,
    compile_ns: 0,
    insns_native: 0,
    invalidations: 0,
    flushes: 0,
    loop_regions: 0,
});

/// Add one JIT's counters to [`TOTALS`].
fn add_totals(s: &JitStats) {
    let mut t = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    t.blocks_compiled += s.blocks_compiled;
    t.insns_translated += s.insns_translated;
    t.compile_ns += s.compile_ns;
    t.insns_native += s.insns_native;
    t.invalidations += s.invalidations;
    t.flushes += s.flushes;
    t.loop_regions += s.loop_regions;
}

/// The summed counters of every JIT CPU dropped so far (plus `live`, e.g. a CPU still in use).
pub fn jit_totals(live: Option<&TestCpu>) -> JitStats {
    let mut t = *TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = live.and_then(TestCpu::jit_stats) {
        t.blocks_compiled += s.blocks_compiled;
        t.insns_translated += s.insns_translated;
        t.compile_ns += s.compile_ns;
        t.insns_native += s.insns_native;
        t.invalidations += s.invalidations;
        t.flushes += s.flushes;
        t.loop_regions += s.loop_regions;
    }
    t
}

/// One line for test output: blocks compiled, instructions translated and run natively.
pub fn describe(s: &JitStats) -> String {
    format!(
        "JIT: {} blocks compiled ({} instructions, {:.1} ms), {} instructions run natively, \
         {} invalidations, {} flushes, {} loop regions",
        s.blocks_compiled,
        s.insns_translated,
        s.compile_ns as f64 / 1e6,
        s.insns_native,
        s.invalidations,
        s.flushes,
        s.loop_regions
    )
}

/// On a JIT twin, print what the JIT CPUs of this test binary translated; with
/// `translatable` (the workload is code the translator covers) require that blocks were
/// compiled and run natively, so the twin cannot pass on the JIT's interpreter fallback alone.
pub fn report_jit(what: &str, translatable: bool) {
    if !on_jit() {
        return;
    }
    let t = jit_totals(None);
    println!("{what}: {}", describe(&t));
    if translatable {
        assert!(
            t.blocks_compiled > 0 && t.insns_native > 0,
            "{what}: the JIT translated nothing ({})",
            describe(&t)
        );
    }
}

impl Drop for TestCpu {
    fn drop(&mut self) {
        if let Some(s) = self.jit_stats() {
            add_totals(&s);
        }
    }
}

impl CpuBackend for TestCpu {
    fn name(&self) -> &'static str {
        self.backend_ref().name()
    }
    fn run(&mut self, platform: &mut dyn Platform, limit: RunLimit) -> pcvm_core::Result<VmExit> {
        self.backend().run(platform, limit)
    }
    fn state(&mut self) -> pcvm_core::Result<CpuState> {
        self.backend().state()
    }
    fn set_state(&mut self, state: &CpuState) -> pcvm_core::Result<()> {
        self.backend().set_state(state)
    }
    fn set_debug(&mut self, config: &DebugConfig) -> pcvm_core::Result<()> {
        self.backend().set_debug(config)
    }
    fn translate(
        &mut self,
        platform: &dyn Platform,
        linear: u64,
    ) -> pcvm_core::Result<Option<u64>> {
        self.backend().translate(platform, linear)
    }
    fn inject_interrupt(&mut self, vector: u8) -> pcvm_core::Result<()> {
        self.backend().inject_interrupt(vector)
    }
    fn inject_nmi(&mut self) -> pcvm_core::Result<()> {
        self.backend().inject_nmi()
    }
    fn kicker(&self) -> Kicker {
        self.backend_ref().kicker()
    }
    fn flush_caches(&mut self) {
        self.backend().flush_caches()
    }
    fn instructions_retired(&self) -> u64 {
        self.backend_ref().instructions_retired()
    }
    fn cpuid(&self, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        self.backend_ref().cpuid(leaf, subleaf)
    }
}
