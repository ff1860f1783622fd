//! Hardware task switching (SDM Vol. 3A §7.3): CALL through a task gate with NT and the
//! back-link, IRET back to the caller, JMP to a TSS, busy bits, CR0.TS, and #TS for a TSS
//! that is too small.

mod common;

use common::*;
use iced_x86::code_asm::*;
use pcvm_core::cpu_state::{cr, flags};

const SEL_TASK_GATE: u16 = 0x50;
const TASK_B: u32 = 0x9000;

fn machine(code: &[u8], task_b: &[u8]) -> Machine {
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    m.load(CODE, code);
    m.load(u64::from(TASK_B), task_b);
    write_task(&m, SEL_TSS2, TSS2, TASK_B, 0x6800, 0);
    m.set_gdt(SEL_TASK_GATE, gate_desc(SEL_TSS2, 0, ACC_TASK_GATE, 0));
    m.set_state(&pm32_state());
    m
}

#[test]
fn call_through_task_gate_and_iret_back() {
    let (code, labels) = asm_labels(32, CODE, |a| {
        let mut ret = a.create_label();
        a.mov(ebx, 0xAAAAu32)?;
        a.mov(esi, 0x5151u32)?;
        call_far(a, SEL_TASK_GATE, 0, true)?;
        a.set_label(&mut ret)?;
        a.mov(dword_ptr(RESULT as u32 + 16), ebx)?;
        a.mov(dword_ptr(RESULT as u32 + 20), esi)?;
        a.str(ax)?;
        a.mov(dword_ptr(RESULT as u32 + 24), eax)?;
        a.pushfd()?;
        a.pop(dword_ptr(RESULT as u32 + 28))?;
        a.mov(eax, cr0)?;
        a.mov(dword_ptr(RESULT as u32 + 32), eax)?;
        // Call task B again: it resumes after its IRET.
        call_far(a, SEL_TASK_GATE, 0, true)?;
        let mut ret2 = a.create_label();
        a.set_label(&mut ret2)?;
        a.hlt()?;
        Ok(vec![ret, ret2])
    });
    let task_b = asm(32, u64::from(TASK_B), |a| {
        a.pushfd()?;
        a.pop(dword_ptr(0x600))?;
        a.str(ax)?;
        a.mov(dword_ptr(0x604), eax)?;
        a.mov(dword_ptr(0x608), esp)?;
        a.mov(eax, cr0)?;
        a.mov(dword_ptr(0x60C), eax)?;
        a.mov(ebx, 0xBBBBu32)?;
        a.clts()?;
        a.iretd()?;
        // A second CALL resumes here, after the IRET.
        a.mov(dword_ptr(0x610), 0xC0DEu32)?;
        a.hlt()
    });
    let mut m = machine(&code, &task_b);
    let s = m.run_to_halt();
    assert_ne!(
        m.read_u32(0x600) & flags::NT as u32,
        0,
        "NT set in the called task"
    );
    assert_eq!(m.read_u32(0x604) & 0xFFFF, u32::from(SEL_TSS2));
    assert_eq!(m.read_u32(0x608), 0x6800, "task B's stack");
    assert_ne!(
        m.read_u32(0x60C) & cr::CR0_TS as u32,
        0,
        "CR0.TS set by the switch"
    );
    assert_eq!(m.read_u16(TSS2), SEL_TSS, "back-link to task A");
    // Back in task A with its own registers and TR.
    assert_eq!(m.read_u32(RESULT + 16), 0xAAAA);
    assert_eq!(m.read_u32(RESULT + 20), 0x5151);
    assert_eq!(m.read_u32(RESULT + 24) & 0xFFFF, u32::from(SEL_TSS));
    assert_eq!(m.read_u32(RESULT + 28) & flags::NT as u32, 0);
    // IRET cleared B's busy bit; A is busy; B's state was saved at its IRET.
    assert_ne!(
        m.read_u32(RESULT + 32) & cr::CR0_TS as u32,
        0,
        "TS set by the switch back"
    );
    assert_eq!(
        m.read_u32(TSS2 + 0x34),
        0xBBBB,
        "task B's EBX saved at its IRET"
    );
    assert_eq!(
        u64::from(m.read_u32(TSS + 0x20)),
        labels[1],
        "task A's EIP saved at the second CALL"
    );
    // The second call resumed task B after its IRET.
    assert_eq!(m.read_u32(0x610), 0xC0DE);
    assert_eq!(s.tr.selector, SEL_TSS2);
    assert_eq!(s.gpr[3] as u32, 0xBBBB, "task B's EBX restored");
    assert_eq!((m.gdt(SEL_TSS2) >> 40) & 0xF, 0xB, "task B busy");
    assert_eq!((m.gdt(SEL_TSS) >> 40) & 0xF, 0xB, "task A busy (nested)");
}

#[test]
fn jmp_to_tss_leaves_no_link() {
    let code = asm(32, CODE, |a| {
        a.mov(ecx, 0x4242u32)?;
        jmp_far(a, SEL_TSS2, 0, true)
    });
    let task_b = asm(32, u64::from(TASK_B), |a| {
        a.pushfd()?;
        a.pop(dword_ptr(0x600))?;
        a.hlt()
    });
    let mut m = machine(&code, &task_b);
    let s = m.run_to_halt();
    assert_eq!(s.tr.selector, SEL_TSS2);
    assert_eq!(m.read_u32(0x600) & flags::NT as u32, 0, "JMP does not nest");
    assert_eq!(m.read_u16(TSS2), 0, "no back-link");
    assert_eq!((m.gdt(SEL_TSS) >> 40) & 0xF, 0x9, "old task no longer busy");
    assert_eq!((m.gdt(SEL_TSS2) >> 40) & 0xF, 0xB, "new task busy");
    assert_eq!(m.read_u32(TSS + 0x2C), 0x4242, "old ECX saved");
}

#[test]
fn busy_tss_target_is_gp_and_short_tss_is_ts() {
    // JMP to the current (busy) TSS: #GP(selector).
    let code = asm(32, CODE, |a| {
        jmp_far(a, SEL_TSS, 0, true)?;
        a.hlt()
    });
    let mut m = machine(&code, &[0xF4]);
    m.run_to_halt();
    assert_eq!(m.recorded().0, 13);
    assert_eq!(m.recorded().1, u32::from(SEL_TSS));
    // A 32-bit TSS with a limit below 0x67: #TS(selector).
    let code = asm(32, CODE, |a| {
        call_far(a, SEL_TSS2, 0, true)?;
        a.hlt()
    });
    let mut m = machine(&code, &[0xF4]);
    m.set_gdt(SEL_TSS2, seg_desc(TSS2 as u32, 0x50, ACC_TSS32, 0));
    m.run_to_halt();
    assert_eq!(m.recorded().0, 10);
    assert_eq!(m.recorded().1, u32::from(SEL_TSS2));
}

#[test]
fn sixteen_bit_tss_round_trip_by_jmp() {
    // Task A (32-bit TSS) jumps to task B (16-bit TSS, SDM Vol. 3A §8.2.1 layout), which
    // jumps back; A resumes after its JMP with its registers, B's state is saved 16-bit.
    const SEL_TSS16: u16 = 0x60;
    const TSS16: u64 = 0x3400;
    let (code, labels) = asm_labels(32, CODE, |a| {
        let mut back = a.create_label();
        a.mov(edi, 0xA5A5_A5A5u32)?;
        jmp_far(a, SEL_TSS16, 0, true)?;
        a.set_label(&mut back)?;
        a.hlt()?;
        Ok(vec![back])
    });
    let task_b = asm(16, 0x9000, |a| {
        a.mov(word_ptr(0x600), 0x1616)?;
        a.mov(ax, 0xB0B0)?;
        a.mov(di, 0x1234)?;
        jmp_far(a, SEL_TSS, 0, false)
    });
    let mut m = machine(&code, &task_b);
    m.write(TSS16, &[0u8; 0x2C]);
    m.write_u16(TSS16 + 0x0E, 0x9000); // IP
    m.write_u16(TSS16 + 0x10, 0x0002); // FLAGS
    m.write_u16(TSS16 + 0x1A, 0x7000); // SP
    m.write_u16(TSS16 + 0x22, SEL_DATA16); // ES
    m.write_u16(TSS16 + 0x24, SEL_CODE16); // CS
    m.write_u16(TSS16 + 0x26, SEL_DATA16); // SS
    m.write_u16(TSS16 + 0x28, SEL_DATA16); // DS
    m.set_gdt(SEL_TSS16, seg_desc(TSS16 as u32, 0x2B, 0x81, 0));
    let s = m.run_to_halt();
    assert_eq!(m.read_u16(0x600), 0x1616, "task B ran");
    assert_eq!(s.tr.selector, SEL_TSS);
    assert_eq!(s.gpr[7] as u32, 0xA5A5_A5A5, "task A's EDI restored");
    assert_eq!(
        s.rip,
        labels[0] + 1,
        "halted after the HLT that follows the JMP"
    );
    assert_eq!(
        m.read_u16(TSS16 + 0x12),
        0xB0B0,
        "B's AX saved in the 16-bit TSS"
    );
    assert_eq!(m.read_u16(TSS16 + 0x20), 0x1234, "B's DI saved");
    assert_eq!(m.read_u16(TSS16 + 0x24), SEL_CODE16, "B's CS saved");
    assert_eq!((m.gdt(SEL_TSS16) >> 40) & 0xF, 0x1, "B available again");
    assert_eq!(s.code_bitness(), 32);
}
