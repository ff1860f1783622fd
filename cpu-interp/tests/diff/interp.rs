//! The interpreter side: a 32-bit flat protected-mode machine at CPL 3 whose exceptions (and
//! the INT3 end marker) go through a 32-bit interrupt gate to a ring-0 `HLT` stub per vector,
//! with the stack switched through the TSS (SDM Vol. 3A §6.12.1) so the user stack and
//! registers stay exactly as the host's signal context reports them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use pcvm_core::cpu_state::{cr, gpr};
use pcvm_core::{
    Board, ClockMode, CpuBackend, CpuState, DescriptorTable, GuestMemory, RunLimit, SegReg,
    Segment, VirtualClock, VmExit,
};
use pcvm_cpu_interp::Interpreter;

use super::prng::fill_region;
use super::{Case, Outcome, CODE_BASE, DATA_BASE, DATA_SIZE, INT3};

const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const TSS: u64 = 0x3000;
/// 256 one-byte `HLT` handlers: vector v halts with EIP = STUBS + v + 1.
const STUBS: u64 = 0x4000;
const RING0_STACK_TOP: u32 = 0x9000;

const SEL_CODE0: u16 = 0x08;
const SEL_DATA0: u16 = 0x10;
const SEL_CODE3: u16 = 0x1B;
const SEL_DATA3: u16 = 0x23;
const SEL_TSS: u16 = 0x28;

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

/// The machine the interpreter runs cases on (one per worker thread).
pub struct InterpSide {
    board: Board,
    memory: Arc<GuestMemory>,
    /// Reused across cases (set_state must replace everything, and code written by the
    /// harness must invalidate what was decoded) unless `PCVM_DIFF_FRESH_CPU=1`.
    cpu: Option<Interpreter>,
    fresh: bool,
}

impl InterpSide {
    pub fn new() -> Result<Self, String> {
        let memory = Arc::new(GuestMemory::pc(8 << 20).map_err(|e| e.to_string())?);
        let w = |addr: u64, bytes: &[u8]| memory.write_phys(addr, bytes).map_err(|e| e.to_string());
        let mut gdt = Vec::new();
        gdt.extend_from_slice(&[0; 8]);
        gdt.extend_from_slice(&descriptor(0, 0xF_FFFF, 0x9A, 0xC));
        gdt.extend_from_slice(&descriptor(0, 0xF_FFFF, 0x92, 0xC));
        gdt.extend_from_slice(&descriptor(0, 0xF_FFFF, 0xFA, 0xC));
        gdt.extend_from_slice(&descriptor(0, 0xF_FFFF, 0xF2, 0xC));
        gdt.extend_from_slice(&descriptor(TSS as u32, 0x67, 0x8B, 0));
        w(GDT, &gdt)?;
        let mut idt = Vec::new();
        for v in 0..256u64 {
            let off = (STUBS + v) as u32;
            idt.extend_from_slice(&(off as u16).to_le_bytes());
            idt.extend_from_slice(&SEL_CODE0.to_le_bytes());
            // Present 32-bit interrupt gates; like Linux's IDT, only #BP and #OF (and the
            // syscall vector 0x80) may be raised by INT n at CPL 3, others are #GP(n*8+2).
            let dpl3 = matches!(v, 3 | 4 | 0x80);
            idt.extend_from_slice(&[0, if dpl3 { 0xEE } else { 0x8E }]);
            idt.extend_from_slice(&((off >> 16) as u16).to_le_bytes());
        }
        w(IDT, &idt)?;
        let mut tss = [0u8; 0x68];
        tss[4..8].copy_from_slice(&RING0_STACK_TOP.to_le_bytes());
        tss[8..10].copy_from_slice(&SEL_DATA0.to_le_bytes());
        tss[0x66..0x68].copy_from_slice(&0x68u16.to_le_bytes());
        w(TSS, &tss)?;
        w(STUBS, &[0xF4; 256])?;
        let board = Board::new(
            memory.clone(),
            VirtualClock::new(ClockMode::InstructionCount {
                ns_per_instruction: 1,
            }),
        );
        let fresh = std::env::var("PCVM_DIFF_FRESH_CPU").as_deref() == Ok("1");
        Ok(InterpSide {
            board,
            memory,
            cpu: None,
            fresh,
        })
    }

    /// The CPU state a case starts from.
    fn initial_state(case: &Case) -> CpuState {
        let mut s = CpuState::reset();
        s.cr0 = cr::CR0_PE | cr::CR0_ET | cr::CR0_NE;
        let flat = |selector: u16, attributes: u32| Segment {
            selector,
            base: 0,
            limit: 0xFFFF_FFFF,
            attributes,
        };
        for seg in SegReg::ALL {
            *s.seg_mut(seg) = flat(SEL_DATA3, 0xC0F3);
        }
        *s.seg_mut(SegReg::Cs) = flat(SEL_CODE3, 0xC0FB);
        s.gdtr = DescriptorTable {
            base: GDT,
            limit: 6 * 8 - 1,
        };
        s.idtr = DescriptorTable {
            base: IDT,
            limit: 256 * 8 - 1,
        };
        s.tr = Segment {
            selector: SEL_TSS,
            base: TSS,
            limit: 0x67,
            attributes: 0x8B,
        };
        s.ldtr = Segment {
            selector: 0,
            base: 0,
            limit: 0,
            attributes: Segment::ATTR_UNUSABLE,
        };
        for (i, r) in case.regs.iter().enumerate() {
            s.gpr[i] = u64::from(*r);
        }
        s.rip = CODE_BASE;
        s.rflags = 0x202 | u64::from(case.eflags & 0x0CD5);
        s
    }

    /// Run one case to its end marker or first exception.
    pub fn run(&mut self, case: &Case) -> Result<Outcome, String> {
        let init = fill_region(case.mem_seed, case.mem_style, DATA_SIZE);
        let mut code = case.code.clone();
        code.extend_from_slice(&[INT3; 16]);
        self.memory
            .write_phys(DATA_BASE, &init)
            .and_then(|()| self.memory.write_phys(CODE_BASE, &code))
            .map_err(|e| e.to_string())?;
        let state = Self::initial_state(case);
        let board = &mut self.board;
        if self.fresh {
            self.cpu = None;
        }
        // A panic leaves `cpu` taken, so the next case starts from a new interpreter.
        let mut cpu = self.cpu.take().unwrap_or_default();
        let ran = catch_unwind(AssertUnwindSafe(|| -> Result<CpuState, String> {
            cpu.set_state(&state)
                .map_err(|e| format!("set_state: {e}"))?;
            match cpu.run(board, RunLimit::Instructions(100_000)) {
                Ok(VmExit::Halted) => {}
                Ok(other) => return Err(format!("interpreter exit {other:?} instead of HLT")),
                Err(e) => return Err(format!("interpreter run failed: {e}")),
            }
            cpu.state().map_err(|e| format!("state: {e}"))
        }));
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
        let v = st.rip.wrapping_sub(STUBS + 1);
        if v >= 256 {
            return Err(format!("halted at {:#x}, not in a vector stub", st.rip));
        }
        let vector = v as u8;
        let mut frame = [0u8; 24];
        let sp = st.gpr[gpr::RSP] & 0xFFFF_FFFF;
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
        if cs as u16 != SEL_CODE3 {
            return Err(format!(
                "vector {vector} frame shows CS {cs:#x} (expected the CPL-3 code selector; nested fault?)"
            ));
        }
        let mut regs = [0u32; 8];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = st.gpr[i] as u32;
        }
        regs[gpr::RSP] = esp3;
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
        Ok(Outcome {
            vector,
            rip_off: eip.wrapping_sub(CODE_BASE as u32),
            error_code: if skip == 1 { word(0) } else { 0 },
            regs,
            eflags,
            mem,
        })
    }
}
