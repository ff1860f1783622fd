//! A guest that boots from real mode into long mode the way Linux's startup_32/startup_64 do
//! (CR4.PAE, CR3 → 4-level tables, EFER.LME, CR0.PG, far transfer to a 64-bit CS), then
//! exercises the IA-32e system side: 16-byte IDT gates with checked frames (#PF, #GP, #UD,
//! INT3, INT n, an IST stack), delivery from compatibility mode and IRETQ back to it, IRETQ to
//! ring 3, SYSCALL/SYSRET with SWAPGS, a 64-bit call gate and RETFQ, FS base via the MSR,
//! RDTSCP, canonical-address #GP and execution from the upper canonical half
//! (SDM Vol. 3A §2.2.1, §5.8.5.1, §6.14, §9.8.5; Vol. 2B SYSCALL/SYSRET/SWAPGS).

mod common;

use common::*;
use iced_x86::code_asm::*;
use iced_x86::{Code, Instruction, MemoryOperand, Register};
use pcvm_core::cpu_state::cr;
use pcvm_core::{CpuBackend, CpuState, RunLimit, SegReg, Segment};

// GDT selectors, laid out like Linux's (KERNEL_CS 0x10, USER32_CS 0x20, USER_CS 0x30).
const CS32: u16 = 0x08;
const KCS: u16 = 0x10;
const KDS: u16 = 0x18;
const UCS32: u16 = 0x20 | 3;
const UDS: u16 = 0x28 | 3;
const UCS: u16 = 0x30 | 3;
const TSS_SEL: u16 = 0x38;
const GATE_SEL: u16 = 0x48;
const LDT_SEL: u16 = 0x58;

// Physical (= identity-mapped linear) layout.
const GDT_PTR16: u64 = 0x600;
const GDT_PTR64: u64 = 0x610;
const IDT_PTR64: u64 = 0x620;
const OUT: u64 = 0x700;
/// A far pointer (m16:64) for CALL/JMP FAR.
const FAR_PTR: u64 = 0x7E0;
const REC_COUNT: u64 = 0x800;
const RESUME: u64 = 0x808;
const GDT_BASE: u64 = 0x1000;
const IDT_BASE: u64 = 0x2000;
const TSS_BASE: u64 = 0x3000;
const REAL: u64 = 0x8000;
const PM32: u64 = 0x8100;
const KERNEL: u64 = 0x9000;
const USER: u64 = 0xA000;
const SYSCALL_ENTRY: u64 = 0xB000;
const GATE_TARGET: u64 = 0xB800;
const PML4: u64 = 0x1_0000;
const PDPT: u64 = 0x1_1000;
const PD: u64 = 0x1_2000;
const PT: u64 = 0x1_3000;
const REC_BASE: u64 = 0x1_8000;
/// A page mapped supervisor-only.
const SUPERVISOR_PAGE: u64 = 0x1_F000;
const HANDLERS: u64 = 0x2_0000;
const PERCPU: u64 = 0x4_0000;
const SYSCALL_STACK: u64 = 0x4_8000;
const USER_STACK: u64 = 0x5_0000;
const FS_AREA: u64 = 0x5_8000;
const KSTACK: u64 = 0x6_0000;
const RSP0: u64 = 0x6_F000;
/// IST1 deliberately not 16-byte aligned: delivery aligns it down.
const IST1: u64 = 0x7_8008;
/// Start of the upper-half alias of the first 1 GiB (PML4 entry 511).
const HIGH: u64 = 0xFFFF_FF80_0000_0000;
const NOT_PRESENT: u64 = 0x40_0000;

const VEC_SYSCALL_TRAP: u8 = 0x80;
const VEC_IST: u8 = 0x81;
const VEC_DONE: u8 = 0x82;

/// A 16-byte 64-bit interrupt/trap gate.
fn gate64(selector: u16, offset: u64, access: u8, ist: u8) -> (u64, u64) {
    let lo = (offset & 0xFFFF)
        | (u64::from(selector) << 16)
        | (u64::from(ist & 7) << 32)
        | (u64::from(access) << 40)
        | (((offset >> 16) & 0xFFFF) << 48);
    (lo, offset >> 32)
}

/// One recorded event (see [`handler`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    vector: u64,
    /// RSP at handler entry: the lowest frame slot (the error code if there is one).
    frame_at: u64,
    error: Option<u64>,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
    cr2: u64,
    /// SS selector inside the handler.
    handler_ss: u64,
}

fn read_record(m: &Machine, i: u64) -> Record {
    let at = REC_BASE + 128 * i;
    let q = |k: u64| m.read_u64(at + 8 * k);
    let vector = q(0);
    let ec = has_error_code(vector as u8) && vector < 32;
    let f = |k: u64| q(2 + k + u64::from(ec));
    Record {
        vector,
        frame_at: q(1),
        error: ec.then(|| q(2)),
        rip: f(0),
        cs: f(1),
        rflags: f(2),
        rsp: f(3),
        ss: f(4),
        cr2: q(8),
        handler_ss: q(9),
    }
}

/// A recorder for `vector`: stores (vector, RSP at entry, six frame quadwords, CR2, SS) in
/// record slot [REC_COUNT], bumps it, then either halts (VEC_DONE) or rewrites the return
/// RIP to [RESUME] and returns with IRETQ.
fn handler(vector: u8, addr: u64) -> Vec<u8> {
    let ec = vector < 32 && has_error_code(vector);
    asm(64, addr, |a| {
        a.push(rax)?;
        a.push(rbx)?;
        a.push(rcx)?;
        a.mov(rbx, qword_ptr(REC_COUNT))?;
        a.shl(rbx, 7)?;
        a.add(rbx, REC_BASE as i32)?;
        a.mov(qword_ptr(rbx), i32::from(vector))?;
        a.lea(rcx, qword_ptr(rsp + 24))?;
        a.mov(qword_ptr(rbx + 8), rcx)?;
        for i in 0..6 {
            a.mov(rax, qword_ptr(rcx + 8 * i))?;
            a.mov(qword_ptr(rbx + 16 + 8 * i), rax)?;
        }
        a.mov(rax, cr2)?;
        a.mov(qword_ptr(rbx + 64), rax)?;
        a.mov(eax, ss)?;
        a.mov(qword_ptr(rbx + 72), rax)?;
        a.pushfq()?;
        a.pop(rax)?;
        a.mov(qword_ptr(rbx + 80), rax)?;
        a.inc(qword_ptr(REC_COUNT))?;
        if vector == VEC_DONE {
            a.hlt()?;
        }
        a.mov(rax, qword_ptr(RESUME))?;
        a.mov(qword_ptr(rcx + if ec { 8 } else { 0 }), rax)?;
        a.pop(rcx)?;
        a.pop(rbx)?;
        a.pop(rax)?;
        if ec {
            a.add(rsp, 8)?;
        }
        a.iretq()
    })
}

/// Point [RESUME] at `label` (64-bit code).
fn resume_at(a: &mut CodeAssembler, label: CodeLabel) -> Result<(), IcedError> {
    a.lea(rax, ptr(label))?;
    a.mov(qword_ptr(RESUME), rax)
}

/// WRMSR `msr` = `value`.
fn wrmsr(a: &mut CodeAssembler, msr: u32, value: u64) -> Result<(), IcedError> {
    a.mov(ecx, msr)?;
    a.mov(eax, value as u32)?;
    a.mov(edx, (value >> 32) as u32)?;
    a.wrmsr()
}

/// Addresses of interesting instructions, for the frame checks.
struct Labels {
    compat_int3_next: u64,
    int3_next: u64,
    ud2: u64,
    noncanonical_load: u64,
    not_present_load: u64,
    int_ist_next: u64,
    bad_sysret: u64,
    high_lea: u64,
    user_after_syscall: u64,
    user_supervisor_load: u64,
    user_int80_next: u64,
    user_hlt: u64,
    user_swapgs: u64,
    user_after_gate: u64,
}

fn build() -> (Machine, Labels) {
    let m = Machine::new();
    // GDT.
    let gdt = [
        (0u16, 0u64),
        (CS32, seg_desc(0, 0xFFFF_FFFF, 0x9A, 0xC)),
        (KCS, seg_desc(0, 0xFFFF_FFFF, 0x9A, 0xA)),
        (KDS, seg_desc(0, 0xFFFF_FFFF, 0x92, 0xC)),
        (UCS32, seg_desc(0, 0xFFFF_FFFF, 0xFA, 0xC)),
        (UDS, seg_desc(0, 0xFFFF_FFFF, 0xF2, 0xC)),
        (UCS, seg_desc(0, 0xFFFF_FFFF, 0xFA, 0xA)),
        (TSS_SEL, seg_desc(TSS_BASE as u32, 0x67, 0x89, 0)),
        (TSS_SEL + 8, 0),
        // 64-bit call gate, DPL 3, to KCS:GATE_TARGET.
        (GATE_SEL, gate64(KCS, GATE_TARGET, 0xEC, 0).0),
        (GATE_SEL + 8, gate64(KCS, GATE_TARGET, 0xEC, 0).1),
        // A 16-byte LDT descriptor with a base above 4 GiB (not used for accesses).
        (LDT_SEL, seg_desc(0x2345_6000, 0xFFF, 0x82, 0)),
        (LDT_SEL + 8, 0x1),
    ];
    for (sel, d) in gdt {
        m.write_u64(GDT_BASE + u64::from(sel & !7), d);
    }
    let gdt_limit = 0x67u16;
    m.write_u16(GDT_PTR16, gdt_limit);
    m.write_u32(GDT_PTR16 + 2, GDT_BASE as u32);
    m.write_u16(GDT_PTR64, gdt_limit);
    m.write_u64(GDT_PTR64 + 2, GDT_BASE);
    m.write_u16(IDT_PTR64, 256 * 16 - 1);
    m.write_u64(IDT_PTR64 + 2, IDT_BASE);
    // 64-bit TSS: RSP0 and IST1.
    m.write(TSS_BASE, &[0u8; 0x68]);
    m.write_u64(TSS_BASE + 4, RSP0);
    m.write_u64(TSS_BASE + 0x24, IST1);
    m.write_u16(TSS_BASE + 0x66, 0x68);
    // IDT: recorders for 0–31 (interrupt gates), INT 0x80 (trap gate, DPL 3), 0x81 (IST1),
    // 0x82 (DPL 3, halts).
    let mut vectors: Vec<(u8, u8, u8)> = (0u8..32).map(|v| (v, 0x8E, 0)).collect();
    vectors.push((VEC_SYSCALL_TRAP, 0xEF, 0));
    vectors.push((VEC_IST, 0x8E, 1));
    vectors.push((VEC_DONE, 0xEE, 0));
    for (v, access, ist) in vectors {
        let addr = HANDLERS + u64::from(v) * 0x100;
        m.load(addr, &handler(v, addr));
        let (lo, hi) = gate64(KCS, addr, access, ist);
        m.write_u64(IDT_BASE + 16 * u64::from(v), lo);
        m.write_u64(IDT_BASE + 16 * u64::from(v) + 8, hi);
    }
    // Vector 0x83 names a 32-bit code segment: not a valid 64-bit gate target.
    let (lo, hi) = gate64(CS32, HANDLERS, 0x8E, 0);
    m.write_u64(IDT_BASE + 16 * 0x83, lo);
    m.write_u64(IDT_BASE + 16 * 0x83 + 8, hi);
    // 4-level tables: the first 2 MiB in 4 KiB user pages (one supervisor-only), the next
    // 2 MiB as one supervisor 2 MiB page, nothing above; PML4 entry 511 aliases the same
    // 1 GiB in the upper half (supervisor).
    m.write_u64(PML4, PDPT | 7);
    m.write_u64(PML4 + 511 * 8, PDPT | 3);
    m.write_u64(PDPT, PD | 7);
    m.write_u64(PD, PT | 7);
    m.write_u64(PD + 8, 0x20_0000 | 0x83);
    for i in 0..512u64 {
        let flags = if i * 4096 == SUPERVISOR_PAGE { 3 } else { 7 };
        m.write_u64(PT + 8 * i, (i * 4096) | flags);
    }
    // Data the guest reads back.
    m.write_u64(FS_AREA + 0x10, 0xF5F5_0000_1234_5678);
    m.write_u64(0x20_0010, 0x2222_0000_0000_0001);
    m.write_u64(PERCPU, SYSCALL_STACK);
    m.write_u64(REC_COUNT, 0);

    // Real mode: LGDT, CR0.PE, far jump to 32-bit code.
    let real = asm(16, REAL, |a| {
        a.cli()?;
        a.lgdt(ptr(GDT_PTR16 as u32))?;
        a.mov(eax, cr0)?;
        a.or(eax, 1)?;
        a.mov(cr0, eax)?;
        jmp_far(a, CS32, PM32 as u32, true)
    });
    m.load(REAL, &real);

    // 32-bit protected mode, startup_32 style, then compatibility mode. Assembled twice: the
    // first pass finds the address the INT3 handler returns to (no RIP-relative LEA here).
    let pm32_code = |resume: u32| {
        asm_labels(32, PM32, |a| {
            let mut after_int3 = a.create_label();
            a.mov(ax, u32::from(KDS))?;
            a.mov(ds, ax)?;
            a.mov(es, ax)?;
            a.mov(ss, ax)?;
            a.mov(esp, KSTACK as u32)?;
            a.mov(eax, cr4)?;
            a.or(eax, cr::CR4_PAE as i32)?;
            a.mov(cr4, eax)?;
            a.mov(eax, PML4 as u32)?;
            a.mov(cr3, eax)?;
            a.mov(ecx, 0xC000_0080u32)?;
            a.rdmsr()?;
            a.or(eax, 0x901)?; // SCE | LME | NXE
            a.wrmsr()?;
            a.mov(eax, cr0)?;
            a.or(eax, 0x8000_0001u32 as i32)?;
            a.mov(cr0, eax)?;
            // IA-32e mode is active; this is 32-bit compatibility-mode code.
            a.mov(ecx, 0xC000_0080u32)?;
            a.rdmsr()?;
            a.mov(dword_ptr(OUT as u32), eax)?;
            // An exception from compatibility mode goes through the 64-bit IDT and IRETQ
            // returns here.
            a.lidt(ptr(IDT_PTR64 as u32))?;
            a.mov(dword_ptr(RESUME as u32), resume)?;
            a.mov(dword_ptr(RESUME as u32 + 4), 0u32)?;
            a.int3()?;
            a.set_label(&mut after_int3)?;
            // Like startup_32: a far return into the 64-bit code segment.
            a.push(u32::from(KCS))?;
            a.push(KERNEL as u32)?;
            a.retf()?;
            Ok(vec![after_int3])
        })
    };
    let (_, first) = pm32_code(0);
    let (pm32, l32) = pm32_code(first[0] as u32);
    assert_eq!(first, l32);
    m.load(PM32, &pm32);

    // 64-bit kernel.
    let (kernel, lk) = asm_labels(64, KERNEL, |a| {
        let mut l = Vec::new();
        let lab = |a: &mut CodeAssembler| a.create_label();
        let mut int3_next = lab(a);
        let mut ud2_at = lab(a);
        let mut after_ud2 = lab(a);
        let mut nc_load = lab(a);
        let mut after_nc = lab(a);
        let mut np_load = lab(a);
        let mut after_np = lab(a);
        let mut ist_next = lab(a);
        let mut bad_sysret = lab(a);
        let mut after_sysret = lab(a);
        let mut high_lea = lab(a);
        let mut back_low = lab(a);

        a.lgdt(ptr(GDT_PTR64))?;
        a.lidt(ptr(IDT_PTR64))?;
        a.mov(ax, u32::from(KDS))?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.xor(eax, eax)?;
        a.mov(fs, ax)?;
        a.mov(gs, ax)?;
        a.mov(rsp, KSTACK)?;
        a.mov(ax, u32::from(TSS_SEL))?;
        a.ltr(ax)?;
        // FS base through the MSR; a load through FS uses it.
        wrmsr(a, 0xC000_0100, FS_AREA)?;
        a.mov(rax, qword_ptr(0x10).fs())?;
        a.mov(qword_ptr(OUT + 8), rax)?;
        // RDTSCP returns TSC_AUX.
        wrmsr(a, 0xC000_0103, 7)?;
        a.rdtscp()?;
        a.mov(qword_ptr(OUT + 16), rcx)?;
        // A read through the supervisor 2 MiB page.
        a.mov(eax, 0x20_0010u32)?;
        a.mov(rax, qword_ptr(rax))?;
        a.mov(qword_ptr(OUT + 24), rax)?;
        // SYSCALL/SYSRET and SWAPGS set-up, as Linux does.
        wrmsr(
            a,
            0xC000_0081,
            (u64::from(UCS32 & !3) << 48) | (u64::from(KCS) << 32),
        )?;
        wrmsr(a, 0xC000_0082, SYSCALL_ENTRY)?;
        wrmsr(a, 0xC000_0084, 0x4_7700)?;
        wrmsr(a, 0xC000_0102, PERCPU)?;

        resume_at(a, int3_next)?;
        a.int3()?;
        a.set_label(&mut int3_next)?;

        resume_at(a, after_ud2)?;
        a.set_label(&mut ud2_at)?;
        a.ud2()?;
        a.set_label(&mut after_ud2)?;

        resume_at(a, after_nc)?;
        a.mov(rax, 0x8000_0000_0000_0000u64)?;
        a.set_label(&mut nc_load)?;
        a.mov(rbx, qword_ptr(rax))?;
        a.set_label(&mut after_nc)?;

        resume_at(a, after_np)?;
        a.mov(eax, NOT_PRESENT as u32)?;
        a.set_label(&mut np_load)?;
        a.mov(rbx, qword_ptr(rax))?;
        a.set_label(&mut after_np)?;

        resume_at(a, ist_next)?;
        a.int(u32::from(VEC_IST))?;
        a.set_label(&mut ist_next)?;

        // SYSRET to a non-canonical RIP: #GP(0) at CPL 0, nothing changed.
        resume_at(a, after_sysret)?;
        a.mov(rcx, 0x0000_8000_0000_0000u64)?;
        a.set_label(&mut bad_sysret)?;
        a.sysretq()?;
        a.set_label(&mut after_sysret)?;

        // Run from the upper-half alias, then come back.
        a.lea(rax, ptr(high_lea))?;
        a.mov(rbx, HIGH)?;
        a.add(rax, rbx)?;
        a.jmp(rax)?;
        a.set_label(&mut high_lea)?;
        a.lea(rax, ptr(high_lea))?;
        a.mov(qword_ptr(OUT + 32), rax)?;
        a.lea(rax, ptr(back_low))?;
        a.mov(rbx, HIGH)?;
        a.sub(rax, rbx)?;
        a.jmp(rax)?;
        a.set_label(&mut back_low)?;

        // To ring 3 with IRETQ.
        a.push(i32::from(UDS))?;
        a.push(USER_STACK as i32)?;
        a.push(0x202)?;
        a.push(i32::from(UCS))?;
        a.push(USER as i32)?;
        a.iretq()?;
        l.extend([
            int3_next, ud2_at, nc_load, np_load, ist_next, bad_sysret, high_lea,
        ]);
        Ok(l)
    });
    m.load(KERNEL, &kernel);

    // Ring 3.
    let (user, lu) = asm_labels(64, USER, |a| {
        let mut after_syscall = a.create_label();
        let mut sup_load = a.create_label();
        let mut after_sup = a.create_label();
        let mut int80_next = a.create_label();
        let mut hlt_at = a.create_label();
        let mut after_hlt = a.create_label();
        let mut swapgs_at = a.create_label();
        let mut after_swapgs = a.create_label();
        let mut after_gate = a.create_label();
        a.mov(eax, 0x1234)?;
        a.syscall()?;
        a.set_label(&mut after_syscall)?;
        a.mov(qword_ptr(OUT + 40), rax)?;
        a.mov(ebx, cs)?;
        a.mov(qword_ptr(OUT + 48), rbx)?;
        a.mov(ebx, ss)?;
        a.mov(qword_ptr(OUT + 56), rbx)?;
        a.pushfq()?;
        a.pop(rbx)?;
        a.mov(qword_ptr(OUT + 64), rbx)?;
        // Through the 64-bit call gate to ring 0 and back with RETFQ.
        a.mov(qword_ptr(FAR_PTR), 0)?;
        a.mov(word_ptr(FAR_PTR + 8), u32::from(GATE_SEL | 3))?;
        a.add_instruction(Instruction::with1(
            Code::Call_m1664,
            MemoryOperand::with_base_displ(Register::None, FAR_PTR as i64),
        )?)?;
        a.set_label(&mut after_gate)?;
        a.mov(qword_ptr(OUT + 72), rsp)?;

        resume_at(a, after_sup)?;
        a.set_label(&mut sup_load)?;
        a.mov(rbx, qword_ptr(SUPERVISOR_PAGE))?;
        a.set_label(&mut after_sup)?;

        resume_at(a, int80_next)?;
        a.int(u32::from(VEC_SYSCALL_TRAP))?;
        a.set_label(&mut int80_next)?;

        resume_at(a, after_hlt)?;
        a.set_label(&mut hlt_at)?;
        a.hlt()?;
        a.set_label(&mut after_hlt)?;

        resume_at(a, after_swapgs)?;
        a.set_label(&mut swapgs_at)?;
        a.swapgs()?;
        a.set_label(&mut after_swapgs)?;

        a.int(u32::from(VEC_DONE))?;
        Ok(vec![
            after_syscall,
            sup_load,
            int80_next,
            hlt_at,
            swapgs_at,
            after_gate,
        ])
    });
    m.load(USER, &user);

    // SYSCALL entry: SWAPGS to the per-CPU area, switch stacks, record, SYSRETQ.
    let entry = asm(64, SYSCALL_ENTRY, |a| {
        a.swapgs()?;
        a.mov(qword_ptr(8).gs(), rsp)?;
        a.mov(rsp, qword_ptr(0).gs())?;
        a.mov(qword_ptr(OUT + 80), rax)?;
        a.mov(qword_ptr(OUT + 88), rcx)?;
        a.mov(qword_ptr(OUT + 96), r11)?;
        a.mov(eax, cs)?;
        a.mov(qword_ptr(OUT + 104), rax)?;
        a.mov(eax, ss)?;
        a.mov(qword_ptr(OUT + 112), rax)?;
        a.pushfq()?;
        a.pop(rax)?;
        a.mov(qword_ptr(OUT + 120), rax)?;
        a.mov(qword_ptr(OUT + 128), rsp)?;
        a.mov(eax, 0x5678)?;
        a.mov(rsp, qword_ptr(8).gs())?;
        a.swapgs()?;
        a.sysretq()
    });
    m.load(SYSCALL_ENTRY, &entry);

    // Call-gate target at ring 0: record the stack the gate built, return with RETFQ.
    let gate = asm(64, GATE_TARGET, |a| {
        a.mov(qword_ptr(OUT + 136), rsp)?;
        for i in 0..4 {
            a.mov(rax, qword_ptr(rsp + 8 * i))?;
            a.mov(qword_ptr(OUT + 144 + 8 * i as u64), rax)?;
        }
        a.mov(eax, ss)?;
        a.mov(qword_ptr(OUT + 176), rax)?;
        a.add_instruction(Instruction::with(Code::Retfq))
    });
    m.load(GATE_TARGET, &gate);

    let labels = Labels {
        compat_int3_next: l32[0],
        int3_next: lk[0],
        ud2: lk[1],
        noncanonical_load: lk[2],
        not_present_load: lk[3],
        int_ist_next: lk[4],
        bad_sysret: lk[5],
        high_lea: lk[6],
        user_after_syscall: lu[0],
        user_supervisor_load: lu[1],
        user_int80_next: lu[2],
        user_hlt: lu[3],
        user_swapgs: lu[4],
        user_after_gate: lu[5],
    };
    (m, labels)
}

fn real_mode_start() -> CpuState {
    let mut s = CpuState::reset();
    *s.seg_mut(SegReg::Cs) = Segment {
        selector: 0,
        base: 0,
        limit: 0xFFFF,
        attributes: 0x9B,
    };
    s.rip = REAL;
    s
}

#[test]
fn boot_to_long_mode_and_exercise_the_system_side() {
    let (mut m, l) = build();
    m.set_state(&real_mode_start());
    let s = m.run_to_halt();

    // Mode: IA-32e active, 64-bit ring-0 code in the final handler.
    assert_ne!(s.efer & cr::EFER_LMA, 0, "EFER.LMA");
    assert!(s.in_64bit_code());
    assert_eq!(s.seg(SegReg::Cs).selector, KCS);
    let efer_in_compat = m.read_u32(OUT);
    assert_eq!(
        efer_in_compat & 0xD01,
        0xD01,
        "SCE|LME|LMA|NXE: {efer_in_compat:#x}"
    );
    assert_eq!(
        m.read_u64(OUT + 8),
        0xF5F5_0000_1234_5678,
        "FS-relative load"
    );
    assert_eq!(m.read_u64(OUT + 16), 7, "RDTSCP ECX = TSC_AUX");
    assert_eq!(m.read_u64(OUT + 24), 0x2222_0000_0000_0001, "2 MiB page");
    assert_eq!(
        m.read_u64(OUT + 32),
        HIGH + l.high_lea,
        "RIP in the upper half"
    );

    // SYSCALL as seen by the kernel, SYSRET as seen by the user.
    assert_eq!(m.read_u64(OUT + 80), 0x1234, "RAX into SYSCALL");
    assert_eq!(
        m.read_u64(OUT + 88),
        l.user_after_syscall,
        "RCX = return RIP"
    );
    assert_eq!(m.read_u64(OUT + 96), 0x202, "R11 = user RFLAGS");
    assert_eq!(m.read_u64(OUT + 104), u64::from(KCS), "kernel CS from STAR");
    assert_eq!(
        m.read_u64(OUT + 112),
        u64::from(KCS + 8),
        "kernel SS from STAR"
    );
    assert_eq!(m.read_u64(OUT + 120), 0x2, "RFLAGS masked by FMASK");
    assert_eq!(
        m.read_u64(OUT + 128),
        SYSCALL_STACK,
        "stack from GS:0 after SWAPGS"
    );
    assert_eq!(m.read_u64(PERCPU + 8), USER_STACK, "user RSP saved at GS:8");
    assert_eq!(m.read_u64(OUT + 40), 0x5678, "RAX after SYSRET");
    assert_eq!(
        m.read_u64(OUT + 48),
        u64::from(UCS),
        "user CS from STAR + 16"
    );
    assert_eq!(
        m.read_u64(OUT + 56),
        u64::from(UDS),
        "user SS from STAR + 8"
    );
    assert_eq!(m.read_u64(OUT + 64), 0x202, "RFLAGS from R11");
    assert_eq!(
        s.msrs.kernel_gs_base, PERCPU,
        "SWAPGS pairs restored KERNEL_GS_BASE"
    );

    // The call gate: new stack from RSP0, SS = NULL(0), four quadwords pushed.
    assert_eq!(m.read_u64(OUT + 136), RSP0 - 32, "RSP at the gate target");
    assert_eq!(m.read_u64(OUT + 144), l.user_after_gate, "pushed RIP");
    assert_eq!(m.read_u64(OUT + 152), u64::from(UCS), "pushed CS");
    assert_eq!(m.read_u64(OUT + 160), USER_STACK, "pushed RSP");
    assert_eq!(m.read_u64(OUT + 168), u64::from(UDS), "pushed SS");
    assert_eq!(m.read_u64(OUT + 176) & 0xFFFC, 0, "null SS at ring 0");
    assert_eq!(
        m.read_u64(OUT + 72),
        USER_STACK,
        "RETFQ restored the user RSP"
    );

    let count = m.read_u64(REC_COUNT);
    let recs: Vec<Record> = (0..count).map(|i| read_record(&m, i)).collect();
    let vectors: Vec<u64> = recs.iter().map(|r| r.vector).collect();
    assert_eq!(
        vectors,
        vec![3, 3, 6, 13, 14, 0x81, 13, 14, 0x80, 13, 13, 0x82],
        "{recs:#x?}"
    );
    let kernel_frame = |r: &Record, rip: u64| {
        assert_eq!(
            (r.rip, r.cs, r.rsp, r.ss),
            (rip, u64::from(KCS), KSTACK, u64::from(KDS)),
            "{r:#x?}"
        );
    };
    // INT3 in compatibility mode: the 64-bit frame holds the 32-bit CS:EIP and SS:ESP.
    let r = &recs[0];
    assert_eq!(
        (r.rip, r.cs, r.rsp, r.ss),
        (l.compat_int3_next, u64::from(CS32), KSTACK, u64::from(KDS)),
        "{r:#x?}"
    );
    assert_eq!(r.frame_at, KSTACK - 40, "five quadwords");
    // INT3, #UD, #GP(0) for a non-canonical address, #PF for a non-present page.
    kernel_frame(&recs[1], l.int3_next);
    assert_eq!(recs[1].frame_at, KSTACK - 40);
    kernel_frame(&recs[2], l.ud2);
    kernel_frame(&recs[3], l.noncanonical_load);
    assert_eq!(recs[3].error, Some(0));
    assert_eq!(
        recs[3].frame_at,
        KSTACK - 48,
        "six quadwords with the error code"
    );
    kernel_frame(&recs[4], l.not_present_load);
    assert_eq!((recs[4].error, recs[4].cr2), (Some(0), NOT_PRESENT));
    // INT n through a gate with IST1: the frame sits on the aligned IST stack.
    kernel_frame(&recs[5], l.int_ist_next);
    assert_eq!(recs[5].frame_at, (IST1 & !0xF) - 40);
    // SYSRET to a non-canonical RCX faults in ring 0 before changing anything.
    kernel_frame(&recs[6], l.bad_sysret);
    assert_eq!(recs[6].error, Some(0));

    // From ring 3: RSP0, SS = NULL(0) in the handler, user SS:RSP in the frame.
    let user_frame = |r: &Record, rip: u64, with_error: bool| {
        assert_eq!(
            (r.rip, r.cs, r.rsp, r.ss),
            (rip, u64::from(UCS), USER_STACK, u64::from(UDS)),
            "{r:#x?}"
        );
        assert_eq!(r.frame_at, RSP0 - if with_error { 48 } else { 40 });
        assert_eq!(r.handler_ss & 0xFFFC, 0, "null SS");
    };
    user_frame(&recs[7], l.user_supervisor_load, true);
    assert_eq!(
        (recs[7].error, recs[7].cr2),
        (Some(5), SUPERVISOR_PAGE),
        "user read of a supervisor page"
    );
    user_frame(&recs[8], l.user_int80_next, false);
    let in_handler_flags = m.read_u64(REC_BASE + 128 * 8 + 80);
    assert_ne!(in_handler_flags & 0x200, 0, "a trap gate keeps IF");
    let in_handler_flags = m.read_u64(REC_BASE + 128 * 7 + 80);
    assert_eq!(in_handler_flags & 0x200, 0, "an interrupt gate clears IF");
    user_frame(&recs[9], l.user_hlt, true);
    assert_eq!(recs[9].error, Some(0), "HLT at CPL 3");
    user_frame(&recs[10], l.user_swapgs, true);
    assert_eq!(recs[10].error, Some(0), "SWAPGS at CPL 3");
    assert_eq!(recs[11].cs, u64::from(UCS));
}

/// Boot as [`build`] does up to the first 64-bit kernel instruction, then run `f`'s code
/// (assembled at [`USER`]) at ring 0 in 64-bit mode until HLT. Returns the machine, the final
/// state and the addresses of the labels `f` returns.
fn boot_and_run(
    f: impl FnOnce(&mut CodeAssembler) -> Result<Vec<CodeLabel>, IcedError>,
) -> (Machine, CpuState, Vec<u64>) {
    let (mut m, _) = build();
    let (code, labels) = asm_labels(64, USER, f);
    m.load(USER, &code);
    m.set_state(&real_mode_start());
    let mut steps = 0;
    while m.state().rip != KERNEL {
        steps += 1;
        assert!(steps < 10_000, "never reached the 64-bit kernel");
        m.cpu
            .run(&mut m.board, RunLimit::Instructions(1))
            .expect("run");
    }
    // Records of the boot itself (the compatibility-mode INT3) are dropped.
    m.write_u64(REC_COUNT, 0);
    let mut st = m.state();
    assert!(st.in_64bit_code());
    // The kernel's own set-up (stack, TR) is skipped: do the part the snippets need.
    st.rip = USER;
    st.gpr[4] = KSTACK;
    m.set_state(&st);
    let s = m.run_to_halt();
    (m, s, labels)
}

/// Load TR the way the kernel prologue does (GDT and IDT are already loaded by then only in
/// the full boot, so load them too).
fn kernel_prologue(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.lgdt(ptr(GDT_PTR64))?;
    a.lidt(ptr(IDT_PTR64))?;
    a.mov(ax, u32::from(KDS))?;
    a.mov(ss, ax)?;
    a.mov(ax, u32::from(TSS_SEL))?;
    a.ltr(ax)
}

#[test]
fn paging_off_in_64_bit_code_is_refused() {
    // Clearing CR0.PG from 64-bit code: #GP(0), IA-32e mode stays active.
    let (m, s, _) = boot_and_run(|a| {
        let mut done = a.create_label();
        kernel_prologue(a)?;
        resume_at(a, done)?;
        a.mov(rax, cr0)?;
        a.btr(rax, 31)?;
        a.mov(cr0, rax)?;
        a.set_label(&mut done)?;
        a.hlt()?;
        Ok(vec![])
    });
    let rec = read_record(&m, m.read_u64(REC_COUNT) - 1);
    assert_eq!((rec.vector, rec.error), (13, Some(0)), "{rec:#x?}");
    assert_ne!(s.cr0 & cr::CR0_PG, 0);
    assert_ne!(s.efer & cr::EFER_LMA, 0);
}

#[test]
fn control_registers_in_long_mode() {
    let (m, s, l) = boot_and_run(|a| {
        let mut gp1 = a.create_label();
        let mut gp2 = a.create_label();
        let mut gp3 = a.create_label();
        let mut after1 = a.create_label();
        let mut after2 = a.create_label();
        let mut after3 = a.create_label();
        kernel_prologue(a)?;
        // CR8 is the TPR: 4 bits.
        a.mov(eax, 9)?;
        a.mov(cr8, rax)?;
        a.mov(rbx, cr8)?;
        a.mov(qword_ptr(OUT), rbx)?;
        resume_at(a, after1)?;
        a.mov(eax, 0x10)?;
        a.set_label(&mut gp1)?;
        a.mov(cr8, rax)?;
        a.set_label(&mut after1)?;
        // Clearing CR4.PAE in IA-32e mode is #GP(0).
        resume_at(a, after2)?;
        a.mov(rax, cr4)?;
        a.btr(rax, 5)?;
        a.set_label(&mut gp2)?;
        a.mov(cr4, rax)?;
        a.set_label(&mut after2)?;
        // PCIDE with CR3[11:0] = 0, then a CR3 load with the no-flush bit.
        a.mov(rax, cr4)?;
        a.bts(rax, 17)?;
        a.mov(cr4, rax)?;
        a.mov(rax, cr3)?;
        a.bts(rax, 63)?;
        a.mov(cr3, rax)?;
        a.mov(rax, cr3)?;
        a.mov(qword_ptr(OUT + 8), rax)?;
        // A CR3 beyond the physical address width is #GP(0).
        resume_at(a, after3)?;
        a.mov(rax, 0x4000_0000_0000_0000u64)?;
        a.set_label(&mut gp3)?;
        a.mov(cr3, rax)?;
        a.set_label(&mut after3)?;
        a.hlt()?;
        Ok(vec![gp1, gp2, gp3])
    });
    assert_eq!(m.read_u64(OUT), 9, "CR8 read back");
    assert_eq!(s.cr8, 9);
    assert_eq!(m.read_u64(OUT + 8), PML4, "bit 63 of CR3 is not stored");
    assert_ne!(s.cr4 & cr::CR4_PCIDE, 0);
    assert_ne!(s.cr4 & cr::CR4_PAE, 0);
    let recs: Vec<Record> = (0..m.read_u64(REC_COUNT))
        .map(|i| read_record(&m, i))
        .collect();
    assert_eq!(recs.len(), 3, "{recs:#x?}");
    for (r, at) in recs.iter().zip(&l) {
        assert_eq!((r.vector, r.error, r.rip), (13, Some(0), *at), "{r:#x?}");
    }
}

#[test]
fn sysenter_and_sysexitq_in_long_mode() {
    let (m, s, l) = boot_and_run(|a| {
        let mut user = a.create_label();
        let mut entry = a.create_label();
        kernel_prologue(a)?;
        wrmsr(a, 0x174, u64::from(KCS))?;
        wrmsr(a, 0x175, SYSCALL_STACK)?;
        a.lea(rax, ptr(entry))?;
        a.mov(rdx, rax)?;
        a.shr(rdx, 32)?;
        a.mov(ecx, 0x176)?;
        a.wrmsr()?;
        // SYSEXITQ: 64-bit ring 3 at RDX with RSP = RCX.
        a.lea(rdx, ptr(user))?;
        a.mov(ecx, USER_STACK as u32)?;
        a.sysexitq()?;
        a.set_label(&mut user)?;
        a.mov(ebx, cs)?;
        a.mov(r8, rsp)?;
        a.sysenter()?;
        a.set_label(&mut entry)?;
        a.mov(r9, rsp)?;
        a.mov(r10d, cs)?;
        a.hlt()?;
        Ok(vec![])
    });
    let _ = l;
    assert_eq!(
        s.gpr[3],
        u64::from(KCS + 32) | 3,
        "SYSEXITQ CS = SYSENTER_CS + 32"
    );
    assert_eq!(s.gpr[8], USER_STACK, "RSP = RCX");
    assert_eq!(s.gpr[9], SYSCALL_STACK, "SYSENTER RSP");
    assert_eq!(s.gpr[10], u64::from(KCS), "SYSENTER CS");
    assert!(s.in_64bit_code());
    let _ = m;
}

#[test]
fn system_descriptors_are_16_bytes_in_long_mode() {
    let (m, s, l) = boot_and_run(|a| {
        let mut bad_gate = a.create_label();
        let mut after_gate = a.create_label();
        let mut compat = a.create_label();
        let mut patch = a.create_label();
        let mut back = a.create_label();
        kernel_prologue(a)?;
        // An LDT descriptor with a base above 4 GiB.
        a.mov(ax, u32::from(LDT_SEL))?;
        a.lldt(ax)?;
        // LAR/LSL of the busy 64-bit TSS.
        a.mov(ax, u32::from(TSS_SEL))?;
        a.lar(ebx, eax)?;
        a.lsl(ecx, eax)?;
        // INT through a gate whose target is not 64-bit code: #GP(selector).
        resume_at(a, after_gate)?;
        a.set_label(&mut bad_gate)?;
        a.int(0x83)?;
        a.set_label(&mut after_gate)?;
        // JMP FAR m16:64 to compatibility-mode code, which jumps back with ptr16:32.
        a.lea(rax, ptr(back))?;
        a.mov(dword_ptr(patch), eax)?;
        a.lea(rax, ptr(compat))?;
        a.mov(qword_ptr(FAR_PTR), rax)?;
        a.mov(word_ptr(FAR_PTR + 8), u32::from(CS32))?;
        a.add_instruction(Instruction::with1(
            Code::Jmp_m1664,
            MemoryOperand::with_base_displ(Register::None, FAR_PTR as i64),
        )?)?;
        a.set_label(&mut compat)?;
        // 32-bit code: mov esi, 0x1234; jmp far KCS:back (offset patched above).
        a.db(&[0xBE, 0x34, 0x12, 0x00, 0x00, 0xEA])?;
        a.set_label(&mut patch)?;
        a.dd(&[0])?;
        a.dw(&[KCS])?;
        a.set_label(&mut back)?;
        a.hlt()?;
        Ok(vec![bad_gate, compat, back])
    });
    let _ = m;
    assert_eq!(s.ldtr.base, 0x1_2345_6000, "64-bit LDT base");
    assert_eq!(s.gpr[3] & 0xFFFF_FF00, 0x0000_8B00, "LAR: present busy TSS");
    assert_eq!(s.gpr[1], 0x67, "LSL");
    let rec = read_record(&m, 0);
    assert_eq!(
        (rec.vector, rec.error, rec.rip),
        (13, Some(u64::from(CS32)), l[0])
    );
    assert_eq!(s.gpr[6], 0x1234, "ran compatibility-mode code");
}
