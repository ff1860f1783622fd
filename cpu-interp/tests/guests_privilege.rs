//! Privilege-level changes: interrupts from ring 3 through the IDT with the TSS stack switch
//! and IRET back, data-segment nulling on return to an outer level, call gates with parameter
//! copy and RETF imm16, SYSENTER/SYSEXIT, the I/O permission bitmap, and double/triple fault
//! (SDM Vol. 3A §5.8, §6.12, §6.15, §7.2; Vol. 1 §19.5).

mod common;

use common::*;
use iced_x86::code_asm::*;
use pcvm_core::cpu_state::flags;
use pcvm_core::{CpuBackend, SegReg, VmExit};

const USER: u32 = 0x9000;
const GATE80: u32 = 0xA000;

fn machine(ring0: &[u8], user: &[u8]) -> Machine {
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    m.load(CODE, ring0);
    m.load(u64::from(USER), user);
    let mut s = pm32_state();
    s.idtr.limit = 0x100 * 8 - 1;
    m.set_state(&s);
    // INT 0x81 from ring 3 ends the test: a DPL 3 gate to a handler storing the frame's
    // CS and halting.
    let halt = asm(32, 0xA800, |a| {
        a.mov(eax, dword_ptr(esp + 4))?;
        a.mov(dword_ptr(RESULT as u32 + 32), eax)?;
        a.hlt()
    });
    m.load(0xA800, &halt);
    m.set_idt(0x81, gate_desc(SEL_CODE0, 0xA800, 0xEE, 0));
    m
}

#[test]
fn interrupt_from_ring3_switches_stacks_and_iret_returns() {
    let ring0 = asm(32, CODE, |a| {
        a.mov(ax, SEL_DATA3 as u32)?;
        a.mov(fs, ax)?;
        iret_to_ring3(a, USER)
    });
    let (user, labels) = asm_labels(32, u64::from(USER), |a| {
        let mut after = a.create_label();
        a.mov(eax, 0x1111u32)?;
        a.pushfd()?;
        a.int(0x80)?;
        a.set_label(&mut after)?;
        a.mov(dword_ptr(RESULT as u32 + 16), eax)?;
        a.mov(ebx, cs)?;
        a.mov(dword_ptr(RESULT as u32 + 20), ebx)?;
        a.mov(dword_ptr(RESULT as u32 + 24), esp)?;
        a.int(0x81)?;
        Ok(vec![after])
    });
    let handler = asm(32, u64::from(GATE80), |a| {
        // Frame: EIP, CS, EFLAGS, ESP, SS; copy it out.
        for i in 0..5u32 {
            a.mov(ebx, dword_ptr(esp + 4 * i))?;
            a.mov(dword_ptr(0x600 + 4 * i), ebx)?;
        }
        a.mov(dword_ptr(0x614), esp)?;
        a.pushfd()?;
        a.pop(dword_ptr(0x618))?;
        a.mov(ebx, ss)?;
        a.mov(dword_ptr(0x61C), ebx)?;
        a.add(eax, 0x2222)?;
        a.iretd()
    });
    let mut m = machine(&ring0, &user);
    m.load(u64::from(GATE80), &handler);
    m.set_idt(0x80, gate_desc(SEL_CODE0, GATE80, 0xEE, 0));
    m.run_to_halt();
    assert_eq!(u64::from(m.read_u32(0x600)), labels[0], "return EIP");
    assert_eq!(m.read_u32(0x604), u32::from(SEL_CODE3));
    assert_ne!(m.read_u32(0x608) & flags::IF as u32, 0, "ring-3 IF pushed");
    assert_eq!(m.read_u32(0x60C), STACK3_TOP - 4, "old ESP");
    assert_eq!(m.read_u32(0x610), u32::from(SEL_DATA3), "old SS");
    assert_eq!(
        m.read_u32(0x614),
        STACK0_TOP - 20,
        "ring-0 ESP from the TSS"
    );
    assert_eq!(
        m.read_u32(0x618) & flags::IF as u32,
        0,
        "interrupt gate clears IF"
    );
    assert_eq!(
        m.read_u32(0x61C),
        u32::from(SEL_DATA0),
        "ring-0 SS from the TSS"
    );
    assert_eq!(m.read_u32(RESULT + 16), 0x3333);
    assert_eq!(
        m.read_u32(RESULT + 20),
        u32::from(SEL_CODE3),
        "back in ring 3"
    );
    assert_eq!(
        m.read_u32(RESULT + 24),
        STACK3_TOP - 4,
        "ring-3 stack restored"
    );
    assert_eq!(m.read_u32(RESULT + 32), u32::from(SEL_CODE3));
}

#[test]
fn iret_to_ring3_nulls_ring0_data_segments() {
    let ring0 = asm(32, CODE, |a| {
        a.mov(ax, SEL_DATA3 as u32)?;
        a.mov(es, ax)?;
        a.mov(ax, SEL_DATA0 as u32)?;
        a.mov(ds, ax)?;
        a.mov(fs, ax)?;
        a.push(u32::from(SEL_DATA3))?;
        a.push(STACK3_TOP)?;
        a.push(0x2u32)?;
        a.push(u32::from(SEL_CODE3))?;
        a.push(USER)?;
        a.iretd()
    });
    let (user, labels) = asm_labels(32, u64::from(USER), |a| {
        let mut fault = a.create_label();
        a.mov(eax, ds)?;
        a.mov(dword_ptr(RESULT as u32 + 16).es(), eax)?;
        a.mov(eax, fs)?;
        a.mov(dword_ptr(RESULT as u32 + 20).es(), eax)?;
        a.mov(eax, es)?;
        a.mov(dword_ptr(RESULT as u32 + 24).es(), eax)?;
        a.set_label(&mut fault)?;
        a.mov(eax, dword_ptr(0x100))?; // DS is null now: #GP(0)
        a.int(0x81)?;
        Ok(vec![fault])
    });
    let mut m = machine(&ring0, &user);
    m.run_to_halt();
    assert_eq!(m.read_u32(RESULT + 16) & 0xFFFF, 0, "DS nulled");
    assert_eq!(m.read_u32(RESULT + 20) & 0xFFFF, 0, "FS nulled");
    assert_eq!(
        m.read_u32(RESULT + 24) & 0xFFFF,
        u32::from(SEL_DATA3),
        "ES kept"
    );
    let (v, e, _, frame) = m.recorded();
    assert_eq!((v, e), (13, 0));
    assert_eq!(u64::from(m.read_u32(u64::from(frame))), labels[0]);
}

#[test]
fn call_gate_to_ring0_copies_parameters_and_retf_returns() {
    const SEL_GATE: u16 = 0x50;
    let ring0 = asm(32, CODE, |a| iret_to_ring3(a, USER));
    let (user, labels) = asm_labels(32, u64::from(USER), |a| {
        let mut ret = a.create_label();
        a.push(0x1111u32)?;
        a.push(0x2222u32)?;
        call_far(a, SEL_GATE | 3, 0, true)?;
        a.set_label(&mut ret)?;
        a.mov(dword_ptr(RESULT as u32 + 16), eax)?;
        a.mov(dword_ptr(RESULT as u32 + 20), esp)?;
        a.mov(dword_ptr(RESULT as u32 + 24), ebx)?;
        a.int(0x81)?;
        Ok(vec![ret])
    });
    let target = asm(32, 0xB000, |a| {
        // New stack: EIP, CS, param0 (0x2222), param1 (0x1111), ESP, SS.
        for i in 0..6u32 {
            a.mov(ecx, dword_ptr(esp + 4 * i))?;
            a.mov(dword_ptr(0x600 + 4 * i), ecx)?;
        }
        a.mov(eax, dword_ptr(esp + 8))?;
        a.add(eax, dword_ptr(esp + 12))?;
        a.mov(ebx, cs)?;
        a.retf_1(8)
    });
    let mut m = machine(&ring0, &user);
    m.load(0xB000, &target);
    m.set_gdt(SEL_GATE, gate_desc(SEL_CODE0, 0xB000, 0xEC, 2));
    m.run_to_halt();
    assert_eq!(u64::from(m.read_u32(0x600)), labels[0]);
    assert_eq!(m.read_u32(0x604), u32::from(SEL_CODE3));
    assert_eq!(m.read_u32(0x608), 0x2222);
    assert_eq!(m.read_u32(0x60C), 0x1111);
    assert_eq!(m.read_u32(0x610), STACK3_TOP - 8);
    assert_eq!(m.read_u32(0x614), u32::from(SEL_DATA3));
    assert_eq!(m.read_u32(RESULT + 16), 0x3333);
    assert_eq!(
        m.read_u32(RESULT + 20),
        STACK3_TOP,
        "RETF 8 released the parameters"
    );
    assert_eq!(
        m.read_u32(RESULT + 24) & 0xFFFF,
        u32::from(SEL_CODE0),
        "ran at ring 0"
    );
}

#[test]
fn call_gate_with_dpl_below_cpl_is_gp() {
    const SEL_GATE: u16 = 0x50;
    let ring0 = asm(32, CODE, |a| iret_to_ring3(a, USER));
    let user = asm(32, u64::from(USER), |a| {
        call_far(a, SEL_GATE | 3, 0, true)?;
        a.int(0x81)
    });
    let mut m = machine(&ring0, &user);
    m.set_gdt(SEL_GATE, gate_desc(SEL_CODE0, 0xB000, ACC_CALL_GATE32, 0));
    m.run_to_halt();
    let (v, e, _, _) = m.recorded();
    assert_eq!((v, e), (13, u32::from(SEL_GATE)));
}

#[test]
fn sysenter_and_sysexit_round_trip() {
    let ring0 = asm(32, CODE, |a| {
        for (msr, v) in [
            (0x174u32, u32::from(SEL_CODE0)),
            (0x175, 0x6F00),
            (0x176, 0xB800),
        ] {
            a.mov(ecx, msr)?;
            a.mov(eax, v)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
        }
        iret_to_ring3(a, USER)
    });
    let user = asm(32, u64::from(USER), |a| {
        a.mov(ecx, esp)?;
        a.mov(edx, 0x9800u32)?;
        a.sysenter()
    });
    let back = asm(32, 0x9800, |a| {
        a.mov(dword_ptr(RESULT as u32 + 16), eax)?;
        a.mov(ebx, cs)?;
        a.mov(dword_ptr(RESULT as u32 + 20), ebx)?;
        a.mov(ebx, ss)?;
        a.mov(dword_ptr(RESULT as u32 + 24), ebx)?;
        a.mov(dword_ptr(RESULT as u32 + 28), esp)?;
        a.int(0x81)
    });
    let kernel = asm(32, 0xB800, |a| {
        a.mov(ebx, cs)?;
        a.mov(dword_ptr(0x600), ebx)?;
        a.mov(ebx, ss)?;
        a.mov(dword_ptr(0x604), ebx)?;
        a.mov(dword_ptr(0x608), esp)?;
        a.mov(eax, 0x77u32)?;
        a.sysexit()
    });
    let mut m = machine(&ring0, &user);
    m.load(0x9800, &back);
    m.load(0xB800, &kernel);
    m.run_to_halt();
    assert_eq!(m.read_u32(0x600), u32::from(SEL_CODE0));
    assert_eq!(m.read_u32(0x604), u32::from(SEL_DATA0));
    assert_eq!(m.read_u32(0x608), 0x6F00);
    assert_eq!(m.read_u32(RESULT + 16), 0x77);
    assert_eq!(m.read_u32(RESULT + 20), u32::from(SEL_CODE3));
    assert_eq!(m.read_u32(RESULT + 24), u32::from(SEL_DATA3));
    assert_eq!(m.read_u32(RESULT + 28), STACK3_TOP, "ESP from ECX");
}

#[test]
fn io_permission_bitmap_at_ring3() {
    let ring0 = asm(32, CODE, |a| iret_to_ring3(a, USER));
    let (user, labels) = asm_labels(32, u64::from(USER), |a| {
        let mut fault = a.create_label();
        a.in_(al, 0x60)?; // bit clear: allowed
        a.mov(dword_ptr(RESULT as u32 + 16), eax)?;
        a.set_label(&mut fault)?;
        a.in_(ax, 0x60)?; // covers port 0x61, whose bit is set
        a.int(0x81)?;
        Ok(vec![fault])
    });
    let mut m = machine(&ring0, &user);
    m.write(TSS + 0x68 + 0x60 / 8, &[1 << (0x61 % 8)]);
    m.run_to_halt();
    assert_eq!(
        m.read_u32(RESULT + 16) & 0xFF,
        0xFF,
        "unmapped port reads all ones"
    );
    let (v, e, _, frame) = m.recorded();
    assert_eq!((v, e), (13, 0));
    assert_eq!(u64::from(m.read_u32(u64::from(frame))), labels[0]);
}

#[test]
fn contributory_fault_during_delivery_is_double_fault() {
    // The #GP gate is not present: delivering #GP raises #NP, both contributory → #DF(0).
    let (code, labels) = asm_labels(32, CODE, |a| {
        let mut l = a.create_label();
        a.mov(ax, 0x1F8)?;
        a.set_label(&mut l)?;
        a.mov(ds, ax)?;
        a.hlt()?;
        Ok(vec![l])
    });
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    m.load(CODE, &code);
    m.set_idt(13, gate_desc(SEL_CODE0, 0xA000, ACC_INT_GATE32 & 0x7F, 0));
    m.set_state(&pm32_state());
    m.run_to_halt();
    let (v, e, _, frame) = m.recorded();
    assert_eq!((v, e), (8, 0));
    assert_eq!(u64::from(m.read_u32(u64::from(frame))), labels[0]);
}

#[test]
fn triple_fault_shuts_down() {
    // An IDT too small for any vector: #UD → #GP (IDT limit) → #DF → #GP → shutdown.
    let code = asm(32, CODE, |a| {
        a.ud2()?;
        a.hlt()
    });
    let mut m = Machine::new();
    m.standard_tables();
    m.load(CODE, &code);
    let mut s = pm32_state();
    s.idtr.limit = 0;
    m.set_state(&s);
    assert_eq!(m.run(), VmExit::Shutdown);
    // A benign exception whose delivery faults is not a double fault: #UD with the #UD gate
    // absent becomes #NP delivered normally.
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    m.load(CODE, &code);
    m.set_idt(6, 0);
    m.set_state(&pm32_state());
    m.run_to_halt();
    let (v, e, _, _) = m.recorded();
    assert_eq!((v, e), (13, 6 * 8 + 2 + 1), "#GP(IDT entry 6, IDT|EXT)");
    let _ = SegReg::Cs;
}

#[test]
fn sixteen_bit_gate_and_tss_from_ring3() {
    // 16-bit protected mode: a 16-bit TSS (SP0/SS0 at offsets 2/4) and a 16-bit interrupt
    // gate push a 5-word frame on the ring-0 stack.
    const SEL_C16_3: u16 = 0x50 | 3;
    const SEL_D16_3: u16 = 0x58 | 3;
    const SEL_TSS16: u16 = 0x60;
    const TSS16: u64 = 0x3400;
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    m.set_gdt(SEL_C16_3, seg_desc(0, 0xFFFF, ACC_CODE3, 0));
    m.set_gdt(SEL_D16_3, seg_desc(0, 0xFFFF, ACC_DATA3, 0));
    m.set_gdt(SEL_TSS16, seg_desc(TSS16 as u32, 0x2B, 0x83, 0)); // busy 16-bit TSS
    m.write(TSS16, &[0u8; 0x2C]);
    m.write_u16(TSS16 + 2, 0x6F00);
    m.write_u16(TSS16 + 4, SEL_DATA16);
    m.set_idt(0x40, gate_desc(SEL_CODE16, 0xA000, 0xE6, 0)); // 16-bit interrupt gate, DPL 3
    let (user, labels) = asm_labels(16, 0x9000, |a| {
        let mut after = a.create_label();
        a.int(0x40)?;
        a.set_label(&mut after)?;
        a.hlt()?;
        Ok(vec![after])
    });
    let handler = asm(16, 0xA000, |a| {
        a.mov(word_ptr(0x600), sp)?;
        a.mov(ax, ss)?;
        a.mov(word_ptr(0x602), ax)?;
        a.hlt()
    });
    m.load(0x9000, &user);
    m.load(0xA000, &handler);
    let mut s = pm32_state();
    s.idtr.limit = 0x100 * 8 - 1;
    s.tr = pcvm_core::Segment {
        selector: SEL_TSS16,
        base: TSS16,
        limit: 0x2B,
        attributes: 0x83,
    };
    let seg16 = |sel: u16, acc: u8| pcvm_core::Segment {
        selector: sel,
        base: 0,
        limit: 0xFFFF,
        attributes: u32::from(acc | 1),
    };
    *s.seg_mut(SegReg::Cs) = seg16(SEL_C16_3, ACC_CODE3);
    for r in [SegReg::Ss, SegReg::Ds, SegReg::Es] {
        *s.seg_mut(r) = seg16(SEL_D16_3, ACC_DATA3);
    }
    s.rip = 0x9000;
    s.gpr[4] = 0x5000;
    m.set_state(&s);
    m.run_to_halt();
    assert_eq!(m.read_u16(0x600), 0x6F00 - 10, "five words pushed");
    assert_eq!(m.read_u16(0x602), SEL_DATA16);
    let frame = 0x6F00 - 10;
    assert_eq!(u64::from(m.read_u16(frame)), labels[0], "IP");
    assert_eq!(m.read_u16(frame + 2), SEL_C16_3, "CS");
    assert_eq!(m.read_u16(frame + 6), 0x5000, "SP");
    assert_eq!(m.read_u16(frame + 8), SEL_D16_3, "SS");
}

#[test]
fn external_interrupts_and_nmi_through_the_idt() {
    // An injected external interrupt is delivered once IF = 1; a not-present gate for it
    // gives #NP with the IDT and EXT bits.
    let code = asm(32, CODE, |a| {
        a.sti()?;
        a.nop()?;
        a.nop()?;
        a.hlt()
    });
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    m.load(CODE, &code);
    let mut s = pm32_state();
    s.idtr.limit = 0x100 * 8 - 1;
    m.set_state(&s);
    m.set_idt(0x30, gate_desc(SEL_CODE0, 0xA000, ACC_INT_GATE32 & 0x7F, 0));
    m.cpu.inject_interrupt(0x30).expect("inject");
    m.run_to_halt();
    assert_eq!((m.recorded().0, m.recorded().1), (11, 0x30 * 8 + 2 + 1));

    // NMI: blocked from delivery until IRET.
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    m.load(CODE, &code);
    let nmi = asm(32, 0xA000, |a| {
        a.inc(dword_ptr(0x600))?;
        a.iretd()
    });
    m.load(0xA000, &nmi);
    m.write_u32(0x600, 0);
    m.set_idt(2, gate_desc(SEL_CODE0, 0xA000, ACC_INT_GATE32, 0));
    m.set_state(&pm32_state());
    m.cpu.inject_nmi().expect("nmi");
    let s = m.run_to_halt();
    assert_eq!(m.read_u32(0x600), 1, "NMI handler ran once");
    assert!(!s.nmi_blocked, "IRET unblocked NMIs");

    // Without IRET the block stays: a second NMI stays pending while the handler goes on.
    let mut m = Machine::new();
    m.standard_tables();
    m.load(CODE, &code);
    let nmi = asm(32, 0xA000, |a| {
        a.inc(dword_ptr(0x600))?;
        a.hlt()?;
        a.inc(dword_ptr(0x604))?;
        a.hlt()
    });
    m.load(0xA000, &nmi);
    m.write_u32(0x600, 0);
    m.write_u32(0x604, 0);
    m.set_idt(2, gate_desc(SEL_CODE0, 0xA000, ACC_INT_GATE32, 0));
    m.set_state(&pm32_state());
    m.cpu.inject_nmi().expect("nmi");
    m.run_to_halt();
    m.cpu.inject_nmi().expect("nmi"); // also wakes the CPU from HLT
    let s = m.state();
    assert!(s.nmi_blocked && s.nmi_pending);
    m.run_to_halt();
    assert_eq!(m.read_u32(0x600), 1, "no nested NMI");
    assert_eq!(m.read_u32(0x604), 1, "handler resumed after HLT");
}

#[test]
fn conforming_code_keeps_cpl_and_nonconforming_needs_equal_dpl() {
    const SEL_CONF: u16 = 0x50;
    let ring0 = asm(32, CODE, |a| iret_to_ring3(a, USER));
    let user = asm(32, u64::from(USER), |a| {
        call_far(a, SEL_CONF | 3, 0xB000, true)?;
        a.mov(dword_ptr(RESULT as u32 + 16), eax)?;
        a.mov(dword_ptr(RESULT as u32 + 20), ebx)?;
        jmp_far(a, SEL_CODE0, 0xB100, true)?; // DPL 0 non-conforming from CPL 3: #GP
        a.int(0x81)
    });
    let conforming = asm(32, 0xB000, |a| {
        a.mov(eax, cs)?;
        a.mov(ebx, ss)?;
        a.retf()
    });
    let mut m = machine(&ring0, &user);
    m.load(0xB000, &conforming);
    m.set_gdt(SEL_CONF, seg_desc(0, 0xFFFF_FFFF, 0x9E, FLAGS_4G32));
    m.run_to_halt();
    assert_eq!(
        m.read_u32(RESULT + 16) & 0xFFFF,
        u32::from(SEL_CONF | 3),
        "CS.RPL = CPL 3"
    );
    assert_eq!(
        m.read_u32(RESULT + 20) & 0xFFFF,
        u32::from(SEL_DATA3),
        "no stack switch"
    );
    let (v, e, _, _) = m.recorded();
    assert_eq!((v, e), (13, u32::from(SEL_CODE0)));
}
