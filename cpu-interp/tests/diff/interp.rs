//! The interpreter side: a 32-bit flat protected-mode machine at CPL 3 whose exceptions (and
//! the INT3 end marker) go through a 32-bit interrupt gate to a ring-0 `HLT` stub per vector,
//! with the stack switched through the TSS (SDM Vol. 3A §6.12.1) so the user stack and
//! registers stay exactly as the host's signal context reports them.
//!
//! The same memory also holds a 64-bit machine (IA-32e mode, 4-level paging, 64-bit IDT and
//! TSS; SDM Vol. 3A §4.5, §6.14) running cases at CPL 3 in 64-bit mode with CS = USER_CS
//! 0x33, as Linux runs 64-bit processes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use pcvm_core::cpu_state::{cr, gpr};
use pcvm_core::{
    Board, ClockMode, CpuBackend, CpuState, DescriptorTable, GuestMemory, RunLimit, SegReg,
    Segment, VirtualClock, VmExit,
};

use super::backend::{self, TestCpu};
use super::prng::fill_region;
use super::{Case, Outcome, CODE_BASE, DATA_BASE, DATA_SIZE, INT3};

const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const TSS: u64 = 0x3000;
/// 256 one-byte `HLT` handlers: vector v halts with EIP = STUBS + v + 1.
const STUBS: u64 = 0x4000;
const LDT: u64 = 0x5000;
/// Two-level paging (SDM Vol. 3A §4.3): one page directory, one page table for 0–4 MiB.
const PAGE_DIR: u64 = 0x6000;
const PAGE_TABLE: u64 = 0x7000;
const SYS_PAGE_TABLE: u64 = 0xA000;
const RING0_STACK_TOP: u32 = 0x9000;
/// The system structures above (GDT … ring-0 stack, physical 0x1000–0x9FFF) are mapped
/// supervisor-only at this linear address, far from anything a test case addresses, so that
/// user accesses everywhere except the code page and data region are "not present" as on
/// the host (a supervisor page would fault with P=1).
const SYS_LINEAR: u64 = 0xBEEF_0000;

/// The 64-bit machine's own structures: GDT (16-byte TSS/LDT descriptors), IDT of 16-byte
/// gates, 64-bit TSS, and 4-level page tables (the low PD/PT map the code page and data
/// region, the sys PD/PT the structures at [`SYS_LINEAR`]).
const GDT64: u64 = 0x1_1000;
const IDT64: u64 = 0x1_2000;
const TSS64: u64 = 0x1_3000;
const PML4: u64 = 0x1_4000;
const PDPT: u64 = 0x1_5000;
const PD_LOW: u64 = 0x1_6000;
const PT_LOW: u64 = 0x1_7000;
const PD_SYS: u64 = 0x1_8000;
const PT_SYS: u64 = 0x1_9000;
/// The 64-bit kernel code selector the IDT gates use (Linux __KERNEL_CS).
const SEL_KERNEL_CODE64: u16 = 0x10;
/// Linux __USER_CS: the 64-bit user code segment.
const SEL_USER_CODE64: u16 = 0x33;

/// Writes guest-physical memory for the machine builders.
type PhysWrite<'a> = dyn Fn(u64, &[u8]) -> Result<(), String> + 'a;

/// Linear address of a system structure at physical `phys`.
const fn sys(phys: u64) -> u64 {
    SYS_LINEAR + phys
}

/// The handlers' code and stack selectors.
const SEL_KERNEL_CODE32: u16 = 0x08;
const SEL_KERNEL_DATA: u16 = 0x18;
const SEL_TSS: u16 = 0x40;
const SEL_LDT: u16 = 0x50;

/// (selector index, base, raw limit, access byte, flags nibble G D L AVL). The user-visible
/// entries mirror Linux x86-64's GDT (arch/x86/include/asm/segment.h: KERNEL32_CS 0x08,
/// KERNEL_CS 0x10, KERNEL_DS 0x18, USER32_CS 0x23, USER_DS 0x2b, USER_CS 0x33; the TSS at
/// 0x40 and the LDT at 0x50), so segment loads, LAR, LSL, VERR and VERW give the same answers
/// as on the host.
const GDT_ENTRIES: [(u16, u32, u32, u8, u8); 8] = [
    (1, 0, 0xF_FFFF, 0x9B, 0xC),
    (2, 0, 0xF_FFFF, 0x9B, 0xA),
    (3, 0, 0xF_FFFF, 0x93, 0xC),
    (4, 0, 0xF_FFFF, 0xFB, 0xC),
    (5, 0, 0xF_FFFF, 0xF3, 0xC),
    (6, 0, 0xF_FFFF, 0xFB, 0xA),
    (8, sys(TSS) as u32, 0x67, 0x8B, 0x0),
    (10, sys(LDT) as u32, 8 * 8 - 1, 0x82, 0x0),
];
const GDT_LIMIT: u16 = 16 * 8 - 1;

/// The LDT, as runner.c installs it with modify_ldt(2) function 1 (which sets the accessed bit
/// and DPL 3, and in this "old mode" clears AVL): (base, limit, access byte, flags nibble).
const LDT_ENTRIES: [(u32, u32, u8, u8); 8] = [
    (CODE_BASE as u32, 0x0FFF, 0xFB, 0x0),
    (DATA_BASE as u32, 0x1FFF, 0xF3, 0x0),
    (DATA_BASE as u32 + 0x1000, 0x0FFF, 0xF3, 0x0),
    (DATA_BASE as u32, 0x1FFF, 0xF3, 0x4),
    (DATA_BASE as u32, 0x1FFF, 0xF1, 0x4),
    (DATA_BASE as u32 - 0xE000, 0xDFFF, 0xF7, 0x0),
    (DATA_BASE as u32, 0x1FFF, 0x73, 0x4),
    (CODE_BASE as u32, 0x0FFF, 0xFB, 0x4),
];

/// Vectors that push an error code (SDM Vol. 3A §6.13, Table 6-1).
fn has_error_code(v: u8) -> bool {
    matches!(v, 8 | 10..=14 | 17 | 21)
}

/// A legacy segment descriptor (SDM Vol. 3A §3.4.5).
fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> [u8; 8] {
    [
        limit as u8,
        (limit >> 8) as u8,
        base as u8,
        (base >> 8) as u8,
        (base >> 16) as u8,
        access,
        (flags << 4) | ((limit >> 16) as u8 & 0xF),
        (base >> 24) as u8,
    ]
}

/// The descriptor cache a segment load of `selector` produces (what the host CPU has loaded
/// when the case starts).
fn cache_for(selector: u16) -> Segment {
    let entry = if selector & 4 != 0 {
        LDT_ENTRIES
            .get(usize::from(selector >> 3))
            .map(|&(b, l, a, f)| (b, l, a, f))
    } else {
        GDT_ENTRIES
            .iter()
            .find(|e| e.0 == selector >> 3)
            .map(|&(_, b, l, a, f)| (b, l, a, f))
    };
    match entry {
        Some((base, limit, access, flags)) => Segment {
            selector,
            base: u64::from(base),
            limit: if flags & 8 != 0 {
                (limit << 12) | 0xFFF
            } else {
                limit
            },
            attributes: u32::from(access) | (u32::from(flags) << 12),
        },
        None => Segment {
            selector,
            base: 0,
            limit: 0,
            attributes: Segment::ATTR_UNUSABLE,
        },
    }
}

/// The machine the interpreter runs cases on (one per worker thread).
pub struct InterpSide {
    board: Board,
    memory: Arc<GuestMemory>,
    /// Reused across cases (set_state must replace everything, and code written by the
    /// harness must invalidate what was decoded) unless `PCVM_DIFF_FRESH_CPU=1` or on the JIT.
    cpu: Option<TestCpu>,
    fresh: bool,
}

thread_local! {
    /// The interpreter is running a case on this thread: its panics are reported as
    /// mismatches (with the message), not printed with a backtrace each.
    static IN_INTERP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Keep the default panic output for everything except interpreter panics caught per case.
fn quiet_interpreter_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_INTERP.with(|f| f.get()) {
                default(info);
            }
        }));
    });
}

impl InterpSide {
    pub fn new() -> Result<Self, String> {
        quiet_interpreter_panics();
        let memory = Arc::new(GuestMemory::pc(8 << 20).map_err(|e| e.to_string())?);
        let w = |addr: u64, bytes: &[u8]| memory.write_phys(addr, bytes).map_err(|e| e.to_string());
        let mut gdt = vec![0u8; usize::from(GDT_LIMIT) + 1];
        for (index, base, limit, access, flags) in GDT_ENTRIES {
            let at = usize::from(index) * 8;
            gdt[at..at + 8].copy_from_slice(&descriptor(base, limit, access, flags));
        }
        w(GDT, &gdt)?;
        let mut ldt = Vec::new();
        for (base, limit, access, flags) in LDT_ENTRIES {
            ldt.extend_from_slice(&descriptor(base, limit, access, flags));
        }
        w(LDT, &ldt)?;
        let mut idt = Vec::new();
        for v in 0..256u64 {
            let off = sys(STUBS + v) as u32;
            idt.extend_from_slice(&(off as u16).to_le_bytes());
            idt.extend_from_slice(&SEL_KERNEL_CODE32.to_le_bytes());
            // Present 32-bit interrupt gates; like Linux's IDT, only #BP and #OF (and the
            // syscall vector 0x80) may be raised by INT n at CPL 3, others are #GP(n*8+2).
            let dpl3 = matches!(v, 3 | 4 | 0x80);
            idt.extend_from_slice(&[0, if dpl3 { 0xEE } else { 0x8E }]);
            idt.extend_from_slice(&((off >> 16) as u16).to_le_bytes());
        }
        w(IDT, &idt)?;
        let mut tss = [0u8; 0x68];
        tss[4..8].copy_from_slice(&(sys(u64::from(RING0_STACK_TOP)) as u32).to_le_bytes());
        tss[8..10].copy_from_slice(&SEL_KERNEL_DATA.to_le_bytes());
        tss[0x66..0x68].copy_from_slice(&0x68u16.to_le_bytes());
        w(TSS, &tss)?;
        w(STUBS, &[0xF4; 256])?;
        // Identity-mapped pages: the system structures and the ring-0 stack supervisor-only,
        // the code page and the data region user read/write (as the host maps them), the rest
        // of the address space not present.
        let mut pd = vec![0u8; 4096];
        pd[..4].copy_from_slice(&(PAGE_TABLE as u32 | 0x7).to_le_bytes());
        let pde = (SYS_LINEAR >> 22) as usize * 4;
        pd[pde..pde + 4].copy_from_slice(&(SYS_PAGE_TABLE as u32 | 0x3).to_le_bytes());
        w(PAGE_DIR, &pd)?;
        let pte = |pt: &mut [u8], linear: u64, phys: u64, flags: u32| {
            let i = ((linear >> 12) & 0x3FF) as usize * 4;
            pt[i..i + 4].copy_from_slice(&(phys as u32 | flags).to_le_bytes());
        };
        let mut spt = vec![0u8; 4096];
        for phys in [GDT, IDT, TSS, STUBS, LDT, 0x8000] {
            pte(&mut spt, sys(phys), phys, 0x3); // present, writable, supervisor
        }
        w(SYS_PAGE_TABLE, &spt)?;
        let mut pt = vec![0u8; 4096];
        pte(&mut pt, CODE_BASE, CODE_BASE, 0x7);
        for page in (0..DATA_SIZE as u64).step_by(4096) {
            pte(&mut pt, DATA_BASE + page, DATA_BASE + page, 0x7);
        }
        w(PAGE_TABLE, &pt)?;
        Self::build_long_mode(&w)?;
        let board = Board::new(
            memory.clone(),
            VirtualClock::new(ClockMode::InstructionCount {
                ns_per_instruction: 1,
            }),
        );
        // A JIT starts fresh per case: a reused one gives up on an address whose code keeps
        // changing, and would run the cases in its interpreter.
        let fresh = std::env::var("PCVM_DIFF_FRESH_CPU").as_deref() == Ok("1") || backend::on_jit();
        Ok(InterpSide {
            board,
            memory,
            cpu: None,
            fresh,
        })
    }

    /// Write the 64-bit machine's structures (see [`GDT64`]).
    fn build_long_mode(w: &PhysWrite) -> Result<(), String> {
        let mut gdt = vec![0u8; usize::from(GDT_LIMIT) + 1];
        for (index, base, limit, access, flags) in GDT_ENTRIES {
            let base = if index == SEL_TSS >> 3 {
                sys(TSS64) as u32
            } else {
                base
            };
            let at = usize::from(index) * 8;
            gdt[at..at + 8].copy_from_slice(&descriptor(base, limit, access, flags));
        }
        w(GDT64, &gdt)?;
        let mut idt = Vec::new();
        for v in 0..256u64 {
            let off = sys(STUBS + v);
            idt.extend_from_slice(&(off as u16).to_le_bytes());
            idt.extend_from_slice(&SEL_KERNEL_CODE64.to_le_bytes());
            let dpl3 = matches!(v, 3 | 4 | 0x80);
            idt.extend_from_slice(&[0, if dpl3 { 0xEE } else { 0x8E }]);
            idt.extend_from_slice(&((off >> 16) as u16).to_le_bytes());
            idt.extend_from_slice(&((off >> 32) as u32).to_le_bytes());
            idt.extend_from_slice(&[0; 4]);
        }
        w(IDT64, &idt)?;
        let mut tss = [0u8; 0x68];
        tss[4..12].copy_from_slice(&sys(u64::from(RING0_STACK_TOP)).to_le_bytes());
        tss[0x66..0x68].copy_from_slice(&0x68u16.to_le_bytes());
        w(TSS64, &tss)?;
        let entry = |table: &mut [u8], index: u64, value: u64| {
            let i = (index & 0x1FF) as usize * 8;
            table[i..i + 8].copy_from_slice(&value.to_le_bytes());
        };
        let mut pml4 = vec![0u8; 4096];
        entry(&mut pml4, 0, PDPT | 0x7);
        w(PML4, &pml4)?;
        let mut pdpt = vec![0u8; 4096];
        entry(&mut pdpt, CODE_BASE >> 30, PD_LOW | 0x7);
        entry(&mut pdpt, SYS_LINEAR >> 30, PD_SYS | 0x3);
        w(PDPT, &pdpt)?;
        let mut pd = vec![0u8; 4096];
        entry(&mut pd, CODE_BASE >> 21, PT_LOW | 0x7);
        w(PD_LOW, &pd)?;
        let mut pd = vec![0u8; 4096];
        entry(&mut pd, SYS_LINEAR >> 21, PT_SYS | 0x3);
        w(PD_SYS, &pd)?;
        let mut pt = vec![0u8; 4096];
        entry(&mut pt, CODE_BASE >> 12, CODE_BASE | 0x7);
        for page in (0..DATA_SIZE as u64).step_by(4096) {
            entry(&mut pt, (DATA_BASE + page) >> 12, (DATA_BASE + page) | 0x7);
        }
        w(PT_LOW, &pt)?;
        let mut pt = vec![0u8; 4096];
        for phys in [GDT64, IDT64, TSS64, STUBS, LDT, 0x8000] {
            entry(&mut pt, sys(phys) >> 12, phys | 0x3);
        }
        w(PT_SYS, &pt)?;
        Ok(())
    }

    /// The CPU state a 64-bit-mode case starts from: CPL 3 in 64-bit mode.
    fn initial_state64(case: &Case) -> CpuState {
        let mut s = Self::initial_state(case);
        s.cr4 |= cr::CR4_PAE;
        s.cr3 = PML4;
        s.efer = cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE | cr::EFER_SCE;
        *s.seg_mut(SegReg::Cs) = cache_for(SEL_USER_CODE64);
        for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss] {
            *s.seg_mut(seg) = cache_for(0x2B);
        }
        s.gdtr.base = sys(GDT64);
        s.idtr = DescriptorTable {
            base: sys(IDT64),
            limit: 256 * 16 - 1,
        };
        s.tr.base = sys(TSS64);
        for i in 0..8 {
            s.gpr[i] = u64::from(case.regs[i]) | (u64::from(case.hi[i]) << 32);
            s.gpr[8 + i] = case.ext[i];
        }
        s.rip = CODE_BASE + u64::from(case.code_offset);
        s
    }

    /// The CPU state a case starts from.
    fn initial_state(case: &Case) -> CpuState {
        let mut s = CpuState::reset();
        s.cr0 = cr::CR0_PE | cr::CR0_ET | cr::CR0_NE | cr::CR0_WP | cr::CR0_PG;
        s.cr3 = PAGE_DIR;
        for seg in [SegReg::Fs, SegReg::Gs] {
            *s.seg_mut(seg) = cache_for(0x2B);
        }
        *s.seg_mut(SegReg::Cs) = cache_for(case.segs.cs);
        *s.seg_mut(SegReg::Ds) = cache_for(case.segs.ds);
        *s.seg_mut(SegReg::Es) = cache_for(case.segs.es);
        *s.seg_mut(SegReg::Ss) = cache_for(case.segs.ss);
        s.gdtr = DescriptorTable {
            base: sys(GDT),
            limit: GDT_LIMIT,
        };
        s.idtr = DescriptorTable {
            base: sys(IDT),
            limit: 256 * 8 - 1,
        };
        s.tr = Segment {
            selector: SEL_TSS,
            base: sys(TSS),
            limit: 0x67,
            attributes: 0x8B,
        };
        s.ldtr = cache_for(SEL_LDT);
        for (i, r) in case.regs.iter().enumerate() {
            s.gpr[i] = u64::from(*r);
        }
        s.rip = u64::from(case.segs.eip);
        s.rflags = 0x202 | u64::from(case.eflags & 0x0CD5);
        s
    }

    /// Run one case to its end marker or first exception in 32-bit protected mode.
    pub fn run(&mut self, case: &Case) -> Result<Outcome, String> {
        self.run_with(case, &|_| {}).map(|(o, _)| o)
    }

    /// Run one case to its end marker or first exception in 64-bit mode.
    pub fn run64(&mut self, case: &Case) -> Result<Outcome, String> {
        self.run64_with(case, &|_| {}).map(|(o, _)| o)
    }

    /// Run one case in 32-bit protected mode whose initial state `prepare` adjusts (e.g.
    /// x87/SSE state and CR4); also returns the final CPU state.
    pub fn run_with(
        &mut self,
        case: &Case,
        prepare: &dyn Fn(&mut CpuState),
    ) -> Result<(Outcome, CpuState), String> {
        self.run_in(case, false, prepare)
    }

    /// Like [`Self::run_with`], in 64-bit mode.
    pub fn run64_with(
        &mut self,
        case: &Case,
        prepare: &dyn Fn(&mut CpuState),
    ) -> Result<(Outcome, CpuState), String> {
        self.run_in(case, true, prepare)
    }

    fn run_in(
        &mut self,
        case: &Case,
        long: bool,
        prepare: &dyn Fn(&mut CpuState),
    ) -> Result<(Outcome, CpuState), String> {
        let init = fill_region(case.mem_seed, case.mem_style, DATA_SIZE);
        // The whole code page: INT3 after the sequence (CS-relative reads see the same bytes
        // as on the host).
        let mut code = vec![INT3; 4096];
        let at = case.code_offset as usize;
        let n = case.code.len().min(4096 - at);
        code[at..at + n].copy_from_slice(&case.code[..n]);
        self.memory
            .write_phys(DATA_BASE, &init)
            .and_then(|()| self.memory.write_phys(CODE_BASE, &code))
            .map_err(|e| e.to_string())?;
        let mut state = if long {
            Self::initial_state64(case)
        } else {
            Self::initial_state(case)
        };
        prepare(&mut state);
        let board = &mut self.board;
        if self.fresh {
            self.cpu = None;
        }
        // A panic leaves `cpu` taken, so the next case starts from a new interpreter.
        // Each case runs once: the JIT compiles its code on first sight.
        let mut cpu = self
            .cpu
            .take()
            .unwrap_or_else(|| TestCpu::with_threshold(1));
        IN_INTERP.with(|f| f.set(true));
        let ran = catch_unwind(AssertUnwindSafe(|| -> Result<CpuState, String> {
            cpu.set_state(&state)
                .map_err(|e| format!("set_state: {e}"))?;
            match cpu.run(board, RunLimit::Instructions(2_000_000)) {
                Ok(VmExit::Halted) => {}
                Ok(other) => return Err(format!("interpreter exit {other:?} instead of HLT")),
                Err(e) => return Err(format!("interpreter run failed: {e}")),
            }
            cpu.state().map_err(|e| format!("state: {e}"))
        }));
        IN_INTERP.with(|f| f.set(false));
        let st = match ran {
            Ok(r) => {
                self.cpu = Some(cpu);
                r?
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                return Err(format!("interpreter PANICKED: {msg}"));
            }
        };
        let v = st.rip.wrapping_sub(sys(STUBS) + 1);
        if v >= 256 {
            return Err(format!("halted at {:#x}, not in a vector stub", st.rip));
        }
        let vector = v as u8;
        let mut now = vec![0u8; DATA_SIZE];
        self.memory
            .read_phys(DATA_BASE, &mut now)
            .map_err(|e| e.to_string())?;
        let mem = now
            .iter()
            .zip(&init)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, _))| (i as u16, *a))
            .collect();
        if long {
            let outcome = self.outcome64(case, &st, vector, mem)?;
            return Ok((outcome, st));
        }
        let mut frame = [0u8; 24];
        // The ring-0 stack is at its system linear address; read it physically.
        let sp = (st.gpr[gpr::RSP] & 0xFFFF_FFFF).wrapping_sub(SYS_LINEAR);
        self.memory
            .read_phys(sp, &mut frame)
            .map_err(|e| format!("exception frame at {sp:#x}: {e}"))?;
        let word = |i: usize| {
            u32::from_le_bytes([
                frame[4 * i],
                frame[4 * i + 1],
                frame[4 * i + 2],
                frame[4 * i + 3],
            ])
        };
        let skip = usize::from(has_error_code(vector));
        let (eip, cs, eflags, esp3) = (word(skip), word(skip + 1), word(skip + 2), word(skip + 3));
        if cs as u16 != case.segs.cs {
            return Err(format!(
                "vector {vector} frame shows CS {cs:#x}, expected {:#x} (nested fault or far transfer?)",
                case.segs.cs
            ));
        }
        let mut regs = [0u32; 8];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = st.gpr[i] as u32;
        }
        regs[gpr::RSP] = esp3;
        let outcome = Outcome {
            vector,
            rip_off: eip.wrapping_sub(case.segs.eip),
            error_code: if skip == 1 { word(0) } else { 0 },
            fault_addr: st.cr2 as u32,
            regs,
            hi: [0; 8],
            ext: [0; 8],
            eflags,
            mem,
        };
        Ok((outcome, st))
    }

    /// Read a 64-bit exception frame (SDM Vol. 3A §6.14.2: [error code,] RIP, CS, RFLAGS,
    /// RSP, SS as 8-byte slots) and the registers after a 64-bit-mode case.
    fn outcome64(
        &self,
        case: &Case,
        st: &CpuState,
        vector: u8,
        mem: Vec<(u16, u8)>,
    ) -> Result<Outcome, String> {
        let mut frame = [0u8; 48];
        let sp = st.gpr[gpr::RSP].wrapping_sub(SYS_LINEAR);
        self.memory
            .read_phys(sp, &mut frame)
            .map_err(|e| format!("exception frame at {sp:#x}: {e}"))?;
        let slot = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&frame[8 * i..8 * i + 8]);
            u64::from_le_bytes(b)
        };
        let skip = usize::from(has_error_code(vector));
        let (rip, cs, rflags, rsp3) = (slot(skip), slot(skip + 1), slot(skip + 2), slot(skip + 3));
        if cs as u16 != SEL_USER_CODE64 {
            return Err(format!(
                "vector {vector} frame shows CS {cs:#x}, expected {SEL_USER_CODE64:#x}"
            ));
        }
        let mut full = [0u64; 8];
        full.copy_from_slice(&st.gpr[..8]);
        full[gpr::RSP] = rsp3;
        let mut ext = [0u64; 8];
        ext.copy_from_slice(&st.gpr[8..16]);
        Ok(Outcome {
            vector,
            rip_off: rip.wrapping_sub(CODE_BASE + u64::from(case.code_offset)) as u32,
            error_code: if skip == 1 { slot(0) as u32 } else { 0 },
            fault_addr: st.cr2 as u32,
            regs: full.map(|v| v as u32),
            hi: full.map(|v| (v >> 32) as u32),
            ext,
            eflags: rflags as u32,
            mem,
        })
    }
}
