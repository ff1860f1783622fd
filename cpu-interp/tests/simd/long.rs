//! The interpreter side in 64-bit mode: CPL 3 code in a 64-bit code segment (Linux's
//! USER_CS 0x33) under 4-level paging, exceptions through 64-bit interrupt gates to ring-0
//! `HLT` stubs with the stack switched to the TSS's RSP0 (SDM Vol. 3A §6.14), so the user
//! registers and stack stay as the host's signal context reports them. Same code page and
//! data region as the 32-bit side (`diff/interp.rs`).

use std::sync::Arc;

use pcvm_core::cpu_state::{cr, gpr};
use pcvm_core::{
    Board, ClockMode, CpuBackend, CpuState, DescriptorTable, GuestMemory, RunLimit, SegReg,
    Segment, VirtualClock, VmExit,
};
use pcvm_cpu_interp::Interpreter;

use crate::diff::prng::fill_region;
use crate::diff::{Case, Outcome, CODE_BASE, DATA_BASE, DATA_SIZE, INT3};

const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const TSS: u64 = 0x3000;
/// 256 one-byte `HLT` handlers: vector v halts with RIP = STUBS + v + 1.
const STUBS: u64 = 0x4000;
const PML4: u64 = 0x5000;
const PDPT: u64 = 0x6000;
const PD: u64 = 0x7000;
const RING0_STACK_TOP: u64 = 0x9000;
/// Page tables for 0–2 MiB (system structures, supervisor) and 2–4 MiB (code and data, user).
const PT_LOW: u64 = 0xA000;
const PT_USER: u64 = 0xB000;

const SEL_KERNEL_CODE64: u16 = 0x10;
const SEL_USER_DATA: u16 = 0x2B;
const SEL_USER_CODE64: u16 = 0x33;
const SEL_TSS: u16 = 0x40;

/// Vectors that push an error code (SDM Vol. 3A Table 6-1).
fn has_error_code(v: u8) -> bool {
    matches!(v, 8 | 10..=14 | 17 | 21)
}

/// The 64-bit machine.
pub struct Interp64 {
    board: Board,
    memory: Arc<GuestMemory>,
}

impl Interp64 {
    pub fn new() -> Result<Self, String> {
        let memory = Arc::new(GuestMemory::pc(8 << 20).map_err(|e| e.to_string())?);
        let w = |addr: u64, bytes: &[u8]| memory.write_phys(addr, bytes).map_err(|e| e.to_string());
        // GDT: kernel code64 0x10, kernel data 0x18, user code32 0x23, user data 0x2b, user
        // code64 0x33, 64-bit TSS 0x40 (two slots).
        let mut gdt = vec![0u8; 0x50];
        let entries: [(usize, u64); 5] = [
            (2, 0x00AF_9B00_0000_FFFF),
            (3, 0x00CF_9300_0000_FFFF),
            (4, 0x00CF_FB00_0000_FFFF),
            (5, 0x00CF_F300_0000_FFFF),
            (6, 0x00AF_FB00_0000_FFFF),
        ];
        for (i, d) in entries {
            gdt[8 * i..8 * i + 8].copy_from_slice(&d.to_le_bytes());
        }
        let tss_lo =
            0x67u64 | ((TSS & 0xFF_FFFF) << 16) | (0x8Bu64 << 40) | (((TSS >> 24) & 0xFF) << 56);
        gdt[0x40..0x48].copy_from_slice(&tss_lo.to_le_bytes());
        w(GDT, &gdt)?;
        let mut idt = Vec::with_capacity(256 * 16);
        for v in 0..256u64 {
            let off = STUBS + v;
            // Present 64-bit interrupt gates; #BP and #OF may be raised by INT3/INTO at CPL 3.
            let dpl3 = matches!(v, 3 | 4);
            idt.extend_from_slice(&(off as u16).to_le_bytes());
            idt.extend_from_slice(&SEL_KERNEL_CODE64.to_le_bytes());
            idt.extend_from_slice(&[0, if dpl3 { 0xEE } else { 0x8E }]);
            idt.extend_from_slice(&((off >> 16) as u16).to_le_bytes());
            idt.extend_from_slice(&((off >> 32) as u32).to_le_bytes());
            idt.extend_from_slice(&[0; 4]);
        }
        w(IDT, &idt)?;
        let mut tss = [0u8; 0x68];
        tss[4..12].copy_from_slice(&RING0_STACK_TOP.to_le_bytes());
        tss[0x66..0x68].copy_from_slice(&0x68u16.to_le_bytes());
        w(TSS, &tss)?;
        w(STUBS, &[0xF4; 256])?;
        let entry = |t: u64, flags: u64| (t | flags).to_le_bytes();
        w(PML4, &entry(PDPT, 7))?;
        w(PDPT, &entry(PD, 7))?;
        let mut pd = vec![0u8; 4096];
        pd[..8].copy_from_slice(&entry(PT_LOW, 7));
        pd[8..16].copy_from_slice(&entry(PT_USER, 7));
        w(PD, &pd)?;
        let mut low = vec![0u8; 4096];
        for phys in [GDT, IDT, TSS, STUBS, RING0_STACK_TOP - 0x1000] {
            let i = (phys >> 12) as usize * 8;
            low[i..i + 8].copy_from_slice(&entry(phys, 3)); // supervisor, writable
        }
        w(PT_LOW, &low)?;
        let mut user = vec![0u8; 4096];
        let mut map = |linear: u64| {
            let i = ((linear >> 12) & 0x1FF) as usize * 8;
            user[i..i + 8].copy_from_slice(&entry(linear, 7));
        };
        map(CODE_BASE);
        for page in (0..DATA_SIZE as u64).step_by(4096) {
            map(DATA_BASE + page);
        }
        w(PT_USER, &user)?;
        let board = Board::new(
            memory.clone(),
            VirtualClock::new(ClockMode::InstructionCount {
                ns_per_instruction: 1,
            }),
        );
        Ok(Interp64 { board, memory })
    }

    fn initial_state(case: &Case) -> CpuState {
        let mut s = CpuState::reset();
        s.cr0 = cr::CR0_PE | cr::CR0_ET | cr::CR0_NE | cr::CR0_WP | cr::CR0_PG;
        s.cr3 = PML4;
        s.cr4 = cr::CR4_PAE | cr::CR4_OSFXSR | cr::CR4_OSXMMEXCPT | cr::CR4_OSXSAVE;
        s.efer = cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE;
        s.xcr0 = 3;
        let user = |selector: u16, code64: bool| Segment {
            selector,
            base: 0,
            limit: 0xFFFF_FFFF,
            attributes: if code64 {
                0xFB | Segment::ATTR_L | Segment::ATTR_G
            } else {
                0xF3 | Segment::ATTR_DB | Segment::ATTR_G
            },
        };
        *s.seg_mut(SegReg::Cs) = user(SEL_USER_CODE64, true);
        for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
            *s.seg_mut(seg) = user(SEL_USER_DATA, false);
        }
        s.gdtr = DescriptorTable {
            base: GDT,
            limit: 0x4F,
        };
        s.idtr = DescriptorTable {
            base: IDT,
            limit: 256 * 16 - 1,
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
        s.rip = CODE_BASE + u64::from(case.code_offset);
        s.rflags = 0x202 | u64::from(case.eflags & 0x0CD5);
        s
    }

    /// Run one case (flat segments only) to its end marker or first exception; the outcome
    /// (registers truncated to 32 bits as the runner reports them) and the final state.
    pub fn run_with(
        &mut self,
        case: &Case,
        prepare: &dyn Fn(&mut CpuState),
    ) -> Result<(Outcome, CpuState), String> {
        let init = fill_region(case.mem_seed, case.mem_style, DATA_SIZE);
        let mut code = vec![INT3; 4096];
        let at = case.code_offset as usize;
        let n = case.code.len().min(4096 - at);
        code[at..at + n].copy_from_slice(&case.code[..n]);
        self.memory
            .write_phys(DATA_BASE, &init)
            .and_then(|()| self.memory.write_phys(CODE_BASE, &code))
            .map_err(|e| e.to_string())?;
        let mut state = Self::initial_state(case);
        prepare(&mut state);
        // The cr4/xcr0 a `prepare` for the 32-bit side sets are the same here.
        let mut cpu = Interpreter::new();
        cpu.set_state(&state)
            .map_err(|e| format!("set_state: {e}"))?;
        match cpu.run(&mut self.board, RunLimit::Instructions(2_000_000)) {
            Ok(VmExit::Halted) => {}
            Ok(other) => return Err(format!("interpreter exit {other:?} instead of HLT")),
            Err(e) => return Err(format!("interpreter run failed: {e}")),
        }
        let st = cpu.state().map_err(|e| format!("state: {e}"))?;
        let v = st.rip.wrapping_sub(STUBS + 1);
        if v >= 256 {
            return Err(format!("halted at {:#x}, not in a vector stub", st.rip));
        }
        let vector = v as u8;
        let mut frame = [0u8; 48];
        self.memory
            .read_phys(st.gpr[gpr::RSP], &mut frame)
            .map_err(|e| format!("exception frame: {e}"))?;
        let q = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&frame[8 * i..8 * i + 8]);
            u64::from_le_bytes(b)
        };
        let skip = usize::from(has_error_code(vector));
        let (rip, cs, rflags, rsp3) = (q(skip), q(skip + 1), q(skip + 2), q(skip + 3));
        if cs as u16 != SEL_USER_CODE64 {
            return Err(format!("vector {vector} frame shows CS {cs:#x}"));
        }
        let mut regs = [0u32; 8];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = st.gpr[i] as u32;
        }
        regs[gpr::RSP] = rsp3 as u32;
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
        let mut st = st;
        st.gpr[gpr::RSP] = rsp3;
        Ok((
            Outcome {
                vector,
                rip_off: (rip.wrapping_sub(CODE_BASE) as u32).wrapping_sub(case.code_offset),
                error_code: if skip == 1 { q(0) as u32 } else { 0 },
                fault_addr: st.cr2 as u32,
                regs,
                eflags: rflags as u32,
                mem,
            },
            st,
        ))
    }
}
