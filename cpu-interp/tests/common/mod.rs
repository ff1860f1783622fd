//! Shared helpers for the guest tests: a 4 MiB board, assembling with iced-x86's `code_asm`,
//! descriptor encoders, a standard protected-mode layout, and exception "recorder" handlers
//! that store what they received and halt.
#![allow(dead_code)]

use std::sync::Arc;

use iced_x86::code_asm::{CodeAssembler, IcedError};
use iced_x86::{Code, Instruction};
use pcvm_core::cpu_state::cr;
use pcvm_core::{
    Board, ClockMode, CpuBackend, CpuState, DescriptorTable, GuestMemory, RunLimit, SegReg,
    Segment, VirtualClock, VmExit,
};

#[path = "../backend/mod.rs"]
pub mod backend;
pub use backend::TestCpu;

/// Physical layout used by the protected-mode tests.
pub const RESULT: u64 = 0x500;
pub const GDT: u64 = 0x1000;
pub const IDT: u64 = 0x2000;
pub const TSS: u64 = 0x3000;
pub const TSS2: u64 = 0x3800;
pub const STACK3_TOP: u32 = 0x6000;
pub const STACK0_TOP: u32 = 0x7000;
pub const CODE: u64 = 0x8000;
pub const HANDLERS: u64 = 0x2_0000;
/// Size of the GDT the standard layout reserves (32 entries).
pub const GDT_LIMIT: u16 = 32 * 8 - 1;

/// Standard selectors.
pub const SEL_CODE0: u16 = 0x08;
pub const SEL_DATA0: u16 = 0x10;
pub const SEL_CODE3: u16 = 0x18 | 3;
pub const SEL_DATA3: u16 = 0x20 | 3;
pub const SEL_TSS: u16 = 0x28;
pub const SEL_CODE16: u16 = 0x30;
pub const SEL_DATA16: u16 = 0x38;
/// First free GDT slot for test-specific descriptors.
pub const SEL_FREE: u16 = 0x40;

/// Access bytes (P, DPL, S, type).
pub const ACC_CODE0: u8 = 0x9A;
pub const ACC_DATA0: u8 = 0x92;
pub const ACC_CODE3: u8 = 0xFA;
pub const ACC_DATA3: u8 = 0xF2;
pub const ACC_TSS32: u8 = 0x89;
pub const ACC_INT_GATE32: u8 = 0x8E;
pub const ACC_TRAP_GATE32: u8 = 0x8F;
pub const ACC_TASK_GATE: u8 = 0x85;
pub const ACC_CALL_GATE32: u8 = 0x8C;
/// Flags nibble: G and D/B.
pub const FLAGS_4G32: u8 = 0xC;

/// Vectors that push an error code (SDM Vol. 3A Table 6-1).
pub fn has_error_code(v: u8) -> bool {
    matches!(v, 8 | 10 | 11 | 12 | 13 | 14 | 17)
}

/// A segment descriptor.
pub fn seg_desc(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let (limit, flags) = if limit > 0xF_FFFF {
        (limit >> 12, flags | 0x8)
    } else {
        (limit, flags)
    };
    u64::from(limit & 0xFFFF)
        | (u64::from(base & 0xFF_FFFF) << 16)
        | (u64::from(access) << 40)
        | (u64::from((limit >> 16) & 0xF) << 48)
        | (u64::from(flags & 0xF) << 52)
        | (u64::from(base >> 24) << 56)
}

/// A gate descriptor (interrupt/trap/call/task gate).
pub fn gate_desc(selector: u16, offset: u32, access: u8, params: u8) -> u64 {
    u64::from(offset & 0xFFFF)
        | (u64::from(selector) << 16)
        | (u64::from(params & 0x1F) << 32)
        | (u64::from(access) << 40)
        | (u64::from(offset >> 16) << 48)
}

/// Assemble with `code_asm` at `base`.
pub fn asm(
    bitness: u32,
    base: u64,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Vec<u8> {
    let mut a = CodeAssembler::new(bitness).expect("bitness");
    f(&mut a).expect("assemble");
    a.assemble(base).expect("encode")
}

/// JMP FAR ptr16:16 (16-bit code) or ptr16:32.
pub fn jmp_far(a: &mut CodeAssembler, sel: u16, off: u32, o32: bool) -> Result<(), IcedError> {
    let code = if o32 {
        Code::Jmp_ptr1632
    } else {
        Code::Jmp_ptr1616
    };
    a.add_instruction(Instruction::with_far_branch(code, sel, off)?)
}

/// CALL FAR ptr16:16 or ptr16:32.
pub fn call_far(a: &mut CodeAssembler, sel: u16, off: u32, o32: bool) -> Result<(), IcedError> {
    let code = if o32 {
        Code::Call_ptr1632
    } else {
        Code::Call_ptr1616
    };
    a.add_instruction(Instruction::with_far_branch(code, sel, off)?)
}

/// A 4 MiB PC board with the CPU of this test binary ([`backend::on_jit`]).
pub struct Machine {
    pub board: Board,
    pub cpu: TestCpu,
    /// On the JIT, print its counters when dropped (off for harnesses with a machine per case).
    pub jit_report: bool,
}

impl Drop for Machine {
    /// On the JIT, say what it translated (shown with `--nocapture` and for failed tests).
    fn drop(&mut self) {
        if let Some(s) = self.cpu.jit_stats().filter(|_| self.jit_report) {
            println!("{}", backend::describe(&s));
        }
    }
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine {
    pub fn new() -> Self {
        let memory = Arc::new(GuestMemory::pc(4 << 20).expect("memory"));
        let clock = VirtualClock::new(ClockMode::InstructionCount {
            ns_per_instruction: 1,
        });
        Machine {
            board: Board::new(memory, clock),
            cpu: TestCpu::new(),
            jit_report: true,
        }
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) {
        self.board.memory.write_phys(addr, bytes).expect("write");
    }
    pub fn write_u16(&self, addr: u64, v: u16) {
        self.write(addr, &v.to_le_bytes());
    }
    pub fn write_u32(&self, addr: u64, v: u32) {
        self.write(addr, &v.to_le_bytes());
    }
    pub fn write_u64(&self, addr: u64, v: u64) {
        self.write(addr, &v.to_le_bytes());
    }
    pub fn read_u16(&self, addr: u64) -> u16 {
        let mut b = [0u8; 2];
        self.board.memory.read_phys(addr, &mut b).expect("read");
        u16::from_le_bytes(b)
    }
    pub fn read_u32(&self, addr: u64) -> u32 {
        let mut b = [0u8; 4];
        self.board.memory.read_phys(addr, &mut b).expect("read");
        u32::from_le_bytes(b)
    }
    pub fn read_u64(&self, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        self.board.memory.read_phys(addr, &mut b).expect("read");
        u64::from_le_bytes(b)
    }

    /// GDT entry `sel >> 3`.
    pub fn set_gdt(&self, sel: u16, desc: u64) {
        self.write_u64(GDT + u64::from(sel & !7), desc);
    }
    pub fn gdt(&self, sel: u16) -> u64 {
        self.read_u64(GDT + u64::from(sel & !7))
    }
    /// IDT entry `vector`.
    pub fn set_idt(&self, vector: u8, desc: u64) {
        self.write_u64(IDT + u64::from(vector) * 8, desc);
    }

    pub fn state(&mut self) -> CpuState {
        self.cpu.state().expect("state")
    }
    pub fn set_state(&mut self, s: &CpuState) {
        self.cpu.set_state(s).expect("set_state");
    }

    /// Run for at most a million instructions.
    pub fn run(&mut self) -> VmExit {
        self.cpu
            .run(&mut self.board, RunLimit::Instructions(1_000_000))
            .expect("run")
    }

    /// Run and require the guest to stop with HLT; return the final state.
    pub fn run_to_halt(&mut self) -> CpuState {
        let exit = self.run();
        let s = self.state();
        assert_eq!(
            exit,
            VmExit::Halted,
            "guest did not halt; cs:eip={:04x}:{:08x}",
            s.seg(SegReg::Cs).selector,
            s.rip
        );
        s
    }

    /// The JIT's counters for this machine's CPU (`None` on the interpreter).
    pub fn jit_stats(&self) -> Option<pcvm_cpu_jit::JitStats> {
        self.cpu.jit_stats()
    }

    /// Load code at `addr`.
    pub fn load(&self, addr: u64, code: &[u8]) {
        self.write(addr, code);
    }

    /// Write the standard GDT (see the `SEL_*` constants) and a 32-bit TSS at [`TSS`] with
    /// ring-0 stack 0010:7000 and an I/O bitmap of 8 KiB (all ports allowed) at offset 0x68.
    pub fn standard_tables(&self) {
        self.set_gdt(0, 0);
        self.set_gdt(SEL_CODE0, seg_desc(0, 0xFFFF_FFFF, ACC_CODE0, FLAGS_4G32));
        self.set_gdt(SEL_DATA0, seg_desc(0, 0xFFFF_FFFF, ACC_DATA0, FLAGS_4G32));
        self.set_gdt(SEL_CODE3, seg_desc(0, 0xFFFF_FFFF, ACC_CODE3, FLAGS_4G32));
        self.set_gdt(SEL_DATA3, seg_desc(0, 0xFFFF_FFFF, ACC_DATA3, FLAGS_4G32));
        // TSS busy (type 0xB) because the state loads TR with it.
        self.set_gdt(SEL_TSS, seg_desc(TSS as u32, 0x68 + 0x2000, 0x8B, 0));
        self.set_gdt(SEL_CODE16, seg_desc(0, 0xFFFF, ACC_CODE0, 0));
        self.set_gdt(SEL_DATA16, seg_desc(0, 0xFFFF, ACC_DATA0, 0));
        self.write_u32(TSS + 4, STACK0_TOP);
        self.write_u32(TSS + 8, u32::from(SEL_DATA0));
        self.write_u16(TSS + 0x66, 0x68);
        self.write(TSS + 0x68, &[0u8; 0x2001]);
        self.write(TSS + 0x68 + 0x2000, &[0xFF]);
        self.write(RESULT, &[0xEE; 0x40]);
    }

    /// Install a recorder handler for every vector 0–31 (32-bit interrupt gates, DPL 0):
    /// it loads DS with the flat ring-0 data segment, stores the vector at RESULT, the error code (or 0xFFFF_FFFF) at RESULT+4, CR2 at
    /// RESULT+8 and ESP (pointing at the return EIP) at RESULT+12, then halts.
    pub fn install_recorders(&self) {
        for v in 0u8..32 {
            let addr = HANDLERS + u64::from(v) * 0x40;
            let code = asm(32, addr, |a| {
                use iced_x86::code_asm::*;
                // The faulting code may have left DS unusable or read-only.
                a.push(u32::from(SEL_DATA0))?;
                a.pop(ds)?;
                a.mov(dword_ptr(RESULT as u32), u32::from(v))?;
                if has_error_code(v) {
                    a.pop(eax)?;
                } else {
                    a.mov(eax, 0xFFFF_FFFFu32)?;
                }
                a.mov(dword_ptr(RESULT as u32 + 4), eax)?;
                a.mov(eax, cr2)?;
                a.mov(dword_ptr(RESULT as u32 + 8), eax)?;
                a.mov(dword_ptr(RESULT as u32 + 12), esp)?;
                a.hlt()?;
                Ok(())
            });
            self.load(addr, &code);
            self.set_idt(v, gate_desc(SEL_CODE0, addr as u32, ACC_INT_GATE32, 0));
        }
    }

    /// The recorded (vector, error code, CR2, ESP).
    pub fn recorded(&self) -> (u32, u32, u32, u32) {
        (
            self.read_u32(RESULT),
            self.read_u32(RESULT + 4),
            self.read_u32(RESULT + 8),
            self.read_u32(RESULT + 12),
        )
    }
}

/// A flat segment cache as a protected-mode load would leave it.
pub fn flat(selector: u16, access: u8) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0xFFFF_FFFF,
        attributes: u32::from(access | 1) | 0xC000,
    }
}

/// The state after a 32-bit protected-mode boot with the standard tables: CPL 0 at
/// CS:EIP = 0008:[`CODE`], flat data segments, SS:ESP = 0010:[`STACK0_TOP`], TR = TSS,
/// IDT of 32 entries, interrupts disabled.
pub fn pm32_state() -> CpuState {
    let mut s = CpuState::reset();
    s.cr0 = cr::CR0_PE | cr::CR0_ET | cr::CR0_NE;
    s.gdtr = DescriptorTable {
        base: GDT,
        limit: GDT_LIMIT,
    };
    s.idtr = DescriptorTable {
        base: IDT,
        limit: 32 * 8 - 1,
    };
    *s.seg_mut(SegReg::Cs) = flat(SEL_CODE0, ACC_CODE0);
    for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
        *s.seg_mut(seg) = flat(SEL_DATA0, ACC_DATA0);
    }
    s.tr = Segment {
        selector: SEL_TSS,
        base: TSS,
        limit: 0x68 + 0x2000,
        attributes: 0x8B,
    };
    s.ldtr = Segment {
        selector: 0,
        base: 0,
        limit: 0,
        attributes: Segment::ATTR_UNUSABLE,
    };
    s.rip = CODE;
    s.gpr[4] = u64::from(STACK0_TOP);
    s.rflags = 0x2;
    s
}

/// A machine in 32-bit protected mode with the standard tables and recorders, running
/// `code` (assembled for 32-bit at [`CODE`]).
pub fn pm32_machine(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Machine {
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    let code = asm(32, CODE, f);
    m.load(CODE, &code);
    let s = pm32_state();
    m.set_state(&s);
    m
}

/// Assemble like [`asm`], also returning the addresses of the labels `f` returns.
pub fn asm_labels(
    bitness: u32,
    base: u64,
    f: impl FnOnce(&mut CodeAssembler) -> Result<Vec<iced_x86::code_asm::CodeLabel>, IcedError>,
) -> (Vec<u8>, Vec<u64>) {
    let mut a = CodeAssembler::new(bitness).expect("bitness");
    let labels = f(&mut a).expect("assemble");
    let r = a
        .assemble_options(
            base,
            iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .expect("encode");
    let ips = labels
        .iter()
        .map(|l| r.label_ip(l).expect("label"))
        .collect();
    (r.inner.code_buffer, ips)
}

/// Drop to ring 3 at `eip` with the flat ring-3 segments, SS:ESP = SEL_DATA3:STACK3_TOP and
/// EFLAGS = IF | 2 (IOPL 0), by IRETD from ring 0.
pub fn iret_to_ring3(a: &mut CodeAssembler, eip: u32) -> Result<(), IcedError> {
    use iced_x86::code_asm::*;
    a.mov(ax, u32::from(SEL_DATA3))?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.push(u32::from(SEL_DATA3))?;
    a.push(STACK3_TOP)?;
    a.push(0x202u32)?;
    a.push(u32::from(SEL_CODE3))?;
    a.push(eip)?;
    a.iretd()
}

/// GDT slot of a second TSS used by task-switch tests.
pub const SEL_TSS2: u16 = 0x48;

/// Write a 32-bit TSS at `addr` for a ring-0 task starting at `eip` with stack `esp`, flat
/// ring-0 segments, EFLAGS = 2, CR3 = `cr3`, and describe it (available) in GDT slot `sel`.
pub fn write_task(m: &Machine, sel: u16, addr: u64, eip: u32, esp: u32, cr3: u32) {
    m.write(addr, &[0u8; 0x68]);
    m.write_u32(addr + 0x1C, cr3);
    m.write_u32(addr + 0x20, eip);
    m.write_u32(addr + 0x24, 2);
    m.write_u32(addr + 0x38, esp);
    for (i, s) in [
        SEL_DATA0, SEL_CODE0, SEL_DATA0, SEL_DATA0, SEL_DATA0, SEL_DATA0,
    ]
    .iter()
    .enumerate()
    {
        m.write_u32(addr + 0x48 + 4 * i as u64, u32::from(*s));
    }
    m.write_u16(addr + 0x66, 0x68);
    m.set_gdt(sel, seg_desc(addr as u32, 0x67, ACC_TSS32, 0));
}

/// Page tables of the 64-bit tests: PML4, PDPT, PD and one PT.
pub const PML4: u64 = 0x3_0000;
pub const PDPT: u64 = 0x3_1000;
pub const PD: u64 = 0x3_2000;
pub const PT: u64 = 0x3_3000;
/// Where the low 4 MiB are mapped a second time (PML4 slot 256, the start of the upper
/// canonical half).
pub const HIGH_ALIAS: u64 = 0xFFFF_8000_0000_0000;
/// Selector of the 64-bit code segment in the long-mode tests.
pub const SEL_CODE64: u16 = 0x50;

/// 4-level page tables (SDM Vol. 3A §4.5) mapping the first 4 MiB identically and again at
/// [`HIGH_ALIAS`]: the first 2 MiB through 4 KiB pages of [`PT`] (supervisor, RW), the next
/// 2 MiB as one 2 MiB page.
pub fn long_mode_tables(m: &Machine) {
    for t in [PML4, PDPT, PD, PT] {
        m.write(t, &[0u8; 4096]);
    }
    m.write_u64(PML4, PDPT | 3);
    m.write_u64(PML4 + 256 * 8, PDPT | 3);
    m.write_u64(PDPT, PD | 3);
    m.write_u64(PD, PT | 3);
    m.write_u64(PD + 8, 0x20_0000 | 0x83);
    for i in 0..512u64 {
        m.write_u64(PT + i * 8, (i << 12) | 3);
    }
}

/// The state of a CPU running 64-bit code at CPL 0: EFER.LME|LMA|NXE, CR0.PG|PE, CR4.PAE,
/// CR3 = [`PML4`], CS a 64-bit code segment (L=1), flat data segments, RSP = STACK0_TOP,
/// RIP = [`CODE`].
pub fn long64_state() -> CpuState {
    let mut s = pm32_state();
    s.cr0 |= cr::CR0_PG;
    s.cr4 |= cr::CR4_PAE;
    s.cr3 = PML4;
    s.efer = cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE;
    *s.seg_mut(SegReg::Cs) = Segment {
        selector: SEL_CODE64,
        base: 0,
        limit: 0xFFFF_FFFF,
        attributes: 0x9B | Segment::ATTR_L | Segment::ATTR_G,
    };
    s
}

/// A machine running `code` (assembled for 64-bit at [`CODE`]) in 64-bit mode with
/// [`long_mode_tables`] and [`long64_state`].
pub fn long64_machine(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Machine {
    let mut m = Machine::new();
    m.standard_tables();
    m.set_gdt(SEL_CODE64, 0x00AF_9A00_0000_FFFF);
    long_mode_tables(&m);
    let code = asm(64, CODE, f);
    m.load(CODE, &code);
    let s = long64_state();
    m.set_state(&s);
    m
}

/// Install 64-bit recorder handlers for vectors 0–31 (16-byte interrupt gates to
/// [`SEL_CODE64`], SDM Vol. 3A §6.14.1) and point IDTR at them: handler v stores the vector at
/// RESULT, the error code (or all ones) at RESULT+8, CR2 at RESULT+16 and the pushed RIP at
/// RESULT+24, then halts. #SS and #DF run on IST1 (a stack at STACK3_TOP) so a bad RSP can be
/// reported.
pub fn install_recorders64(m: &mut Machine) {
    for v in 0u8..32 {
        let addr = HANDLERS + u64::from(v) * 0x40;
        let code = asm(64, addr, |a| {
            use iced_x86::code_asm::*;
            a.mov(qword_ptr(RESULT as u32), u32::from(v) as i32)?;
            if has_error_code(v) {
                a.pop(rax)?;
            } else {
                a.mov(rax, -1i64)?;
            }
            a.mov(qword_ptr(RESULT as u32 + 8), rax)?;
            a.mov(rax, cr2)?;
            a.mov(qword_ptr(RESULT as u32 + 16), rax)?;
            a.mov(rax, qword_ptr(rsp))?;
            a.mov(qword_ptr(RESULT as u32 + 24), rax)?;
            a.hlt()?;
            Ok(())
        });
        m.load(addr, &code);
        let ist = u64::from(matches!(v, 8 | 12));
        let low = (addr & 0xFFFF)
            | (u64::from(SEL_CODE64) << 16)
            | (ist << 32)
            | (0x8Eu64 << 40)
            | ((addr >> 16) << 48);
        m.write_u64(IDT + u64::from(v) * 16, low);
        m.write_u64(IDT + u64::from(v) * 16 + 8, addr >> 32);
    }
    // 64-bit TSS: IST1 at offset 0x24.
    m.write_u64(TSS + 0x24, u64::from(STACK3_TOP));
    let mut s = m.state();
    s.idtr = DescriptorTable {
        base: IDT,
        limit: 32 * 16 - 1,
    };
    m.set_state(&s);
}

/// The recorded (vector, error code, CR2, RIP) of [`install_recorders64`].
pub fn recorded64(m: &Machine) -> (u64, u64, u64, u64) {
    (
        m.read_u64(RESULT),
        m.read_u64(RESULT + 8),
        m.read_u64(RESULT + 16),
        m.read_u64(RESULT + 24),
    )
}
