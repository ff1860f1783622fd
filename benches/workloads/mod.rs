//! The guest workloads the `interp` and `jit` benches share: 32-bit protected-mode flat code
//! assembled with iced-x86's `code_asm`, the CPU state set directly (flat descriptors cached),
//! plus page tables for the paging loop. Instruction counts are architectural (a REP string
//! instruction counts once), computed from the loop structure; a backend's own retired count
//! also counts REP iterations and is checked to be at least that.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use criterion::{Criterion, Throughput};
use iced_x86::code_asm::*;
use pcvm_core::cpu_state::cr;
use pcvm_core::{
    Board, ClockMode, CpuBackend, CpuState, GuestMemory, RunLimit, SegReg, Segment, VirtualClock,
    VmExit,
};

const CODE: u64 = 0x1_0000;
const RAM: u64 = 64 << 20;

/// A flat 32-bit protected-mode state starting at `CODE`.
fn flat_state() -> CpuState {
    let mut s = CpuState::reset();
    s.cr0 = cr::CR0_PE | cr::CR0_ET;
    let code = Segment {
        selector: 0x08,
        base: 0,
        limit: 0xFFFF_FFFF,
        attributes: 0xC09B,
    };
    let data = Segment {
        selector: 0x10,
        base: 0,
        limit: 0xFFFF_FFFF,
        attributes: 0xC093,
    };
    for seg in SegReg::ALL {
        *s.seg_mut(seg) = if seg == SegReg::Cs { code } else { data };
    }
    s.rip = CODE;
    s.gpr[4] = 0x8_0000;
    s
}

/// A guest program on one board, run on one backend.
pub struct Guest<C> {
    board: Board,
    pub cpu: C,
    state: CpuState,
}

impl<C: CpuBackend> Guest<C> {
    fn new(code: &[u8], state: CpuState, cpu: C) -> Result<Self> {
        let mem = GuestMemory::pc(RAM)?;
        let board = Board::new(
            Arc::new(mem),
            VirtualClock::new(ClockMode::InstructionCount {
                ns_per_instruction: 1,
            }),
        );
        board.memory.write_phys(CODE, code)?;
        Ok(Guest { board, cpu, state })
    }

    /// Run the guest once to its HLT; returns the instructions retired.
    pub fn run(&mut self) -> Result<u64> {
        self.cpu.set_state(&self.state)?;
        let before = self.cpu.instructions_retired();
        let exit = self.cpu.run(&mut self.board, RunLimit::Unbounded)?;
        if exit != VmExit::Halted {
            return Err(anyhow!("guest stopped with {exit:?}"));
        }
        Ok(self.cpu.instructions_retired() - before)
    }
}

/// Register ALU loop: 8 instructions per iteration.
fn alu_loop() -> Result<Vec<u8>> {
    let mut a = CodeAssembler::new(32)?;
    let mut top = a.create_label();
    a.mov(ecx, 100_000u32)?;
    a.mov(ebx, 0x1234_5678u32)?;
    a.set_label(&mut top)?;
    a.add(eax, ebx)?;
    a.xor(edx, eax)?;
    a.sub(esi, 3)?;
    a.and(edi, edx)?;
    a.or(ebx, 1)?;
    a.inc(eax)?;
    a.dec(ecx)?;
    a.jnz(top)?;
    a.hlt()?;
    Ok(a.assemble(CODE)?)
}

/// Memory loop: REP MOVSD of 1 KiB, then a byte-copy loop over the same 1 KiB, 200 times.
fn memory_loop() -> Result<Vec<u8>> {
    let mut a = CodeAssembler::new(32)?;
    let mut outer = a.create_label();
    let mut bytes = a.create_label();
    a.mov(ebp, 200u32)?;
    a.set_label(&mut outer)?;
    a.mov(esi, 0x10_0000u32)?;
    a.mov(edi, 0x20_0000u32)?;
    a.mov(ecx, 256u32)?;
    a.rep().movsd()?;
    a.mov(esi, 0x10_0000u32)?;
    a.mov(edi, 0x30_0000u32)?;
    a.mov(ecx, 1024u32)?;
    a.set_label(&mut bytes)?;
    a.mov(al, byte_ptr(esi))?;
    a.add(al, 1)?;
    a.mov(byte_ptr(edi), al)?;
    a.inc(esi)?;
    a.inc(edi)?;
    a.dec(ecx)?;
    a.jnz(bytes)?;
    a.dec(ebp)?;
    a.jnz(outer)?;
    a.hlt()?;
    Ok(a.assemble(CODE)?)
}

/// CALL/RET loop: 5 instructions per iteration.
fn call_loop() -> Result<Vec<u8>> {
    let mut a = CodeAssembler::new(32)?;
    let mut top = a.create_label();
    let mut func = a.create_label();
    a.mov(ecx, 100_000u32)?;
    a.set_label(&mut top)?;
    a.call(func)?;
    a.dec(ecx)?;
    a.jnz(top)?;
    a.hlt()?;
    a.set_label(&mut func)?;
    a.add(eax, 1)?;
    a.ret()?;
    Ok(a.assemble(CODE)?)
}

/// Paging on: touch one dword in each of 4096 pages (16 MiB), 20 times.
fn paging_loop() -> Result<Vec<u8>> {
    let mut a = CodeAssembler::new(32)?;
    let mut outer = a.create_label();
    let mut pages = a.create_label();
    a.mov(ebp, 20u32)?;
    a.set_label(&mut outer)?;
    a.mov(ebx, 0x100_0000u32)?;
    a.set_label(&mut pages)?;
    a.mov(eax, dword_ptr(ebx))?;
    a.add(eax, ebp)?;
    a.mov(dword_ptr(ebx + 8), eax)?;
    a.add(ebx, 4096)?;
    a.cmp(ebx, 0x200_0000u32)?;
    a.jb(pages)?;
    a.dec(ebp)?;
    a.jnz(outer)?;
    a.hlt()?;
    Ok(a.assemble(CODE)?)
}

/// Identity-map the first 64 MiB with 4 KiB pages (2-level paging) at 0x40_0000.
fn paging_guest<C: CpuBackend>(cpu: C) -> Result<Guest<C>> {
    let mut state = flat_state();
    let pd = 0x40_0000u64;
    let g = Guest::new(&paging_loop()?, state.clone(), cpu)?;
    for i in 0..16u64 {
        let pt = pd + 0x1000 + i * 0x1000;
        g.board
            .memory
            .write_phys(pd + i * 4, &((pt as u32) | 0x7).to_le_bytes())?;
        for j in 0..1024u64 {
            let frame = (i * 1024 + j) * 4096;
            g.board
                .memory
                .write_phys(pt + j * 4, &((frame as u32) | 0x7).to_le_bytes())?;
        }
    }
    state.cr3 = pd;
    state.cr0 |= cr::CR0_PG;
    Ok(Guest { state, ..g })
}

/// CPU time of this thread in nanoseconds (first field of /proc/thread-self/schedstat), so
/// a rate can be reported that other load on the machine does not distort.
pub fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// The workloads on backends made by `make_cpu`: (name, guest, architectural instructions per
/// run). Counts: set-up + iterations × loop body + HLT.
pub fn cases<C: CpuBackend>(
    make_cpu: &dyn Fn() -> C,
) -> Result<Vec<(&'static str, Guest<C>, u64)>> {
    Ok(vec![
        (
            "alu_loop",
            Guest::new(&alu_loop()?, flat_state(), make_cpu())?,
            2 + 100_000 * 8 + 1,
        ),
        (
            "memory_loop",
            Guest::new(&memory_loop()?, flat_state(), make_cpu())?,
            1 + 200 * (3 + 1 + 3 + 1024 * 7 + 2) + 1,
        ),
        (
            "call_ret_loop",
            Guest::new(&call_loop()?, flat_state(), make_cpu())?,
            1 + 100_000 * 5 + 1,
        ),
        (
            "paging_loop",
            paging_guest(make_cpu())?,
            1 + 20 * (1 + 4096 * 6 + 2) + 1,
        ),
    ])
}

/// Benchmark every workload in criterion group `group_name`, printing M guest instructions
/// per CPU-second of this thread (other load on the machine does not distort it).
pub fn bench_all<C: CpuBackend>(c: &mut Criterion, group_name: &str, make_cpu: &dyn Fn() -> C) {
    let mut group = c.benchmark_group(group_name);
    for (name, mut guest, n) in cases(make_cpu).expect("workloads") {
        let retired = guest.run().expect("warm-up run");
        assert!(retired >= n, "{name}: retired {retired} < {n}");
        if let Some(t0) = thread_cpu_ns() {
            let mut total = 0u64;
            for _ in 0..10 {
                guest.run().expect("run");
                total += n;
            }
            if let Some(t1) = thread_cpu_ns() {
                let secs = (t1 - t0) as f64 / 1e9;
                println!(
                    "{group_name}/{name}: {:.1} M guest instructions per CPU-second ({total} instructions)",
                    total as f64 / secs / 1e6
                );
            }
        }
        group.throughput(Throughput::Elements(n));
        group.bench_function(name, |b| b.iter(|| guest.run().expect("run")));
    }
    group.finish();
}
