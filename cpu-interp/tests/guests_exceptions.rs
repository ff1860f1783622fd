//! Protected-mode exceptions with their error codes and saved return addresses
//! (SDM Vol. 3A §6.13, §6.15 and the per-instruction fault lists of Vol. 2).

mod common;

use common::*;
use iced_x86::code_asm::*;

/// Run a 32-bit guest whose faulting instruction is at the returned label; check the
/// recorded vector, error code, and that the saved EIP is the faulting instruction.
fn expect_fault(
    f: impl FnOnce(&mut CodeAssembler, &mut CodeLabel) -> Result<(), IcedError>,
    setup: impl FnOnce(&Machine),
    vector: u32,
    error: u32,
) -> Machine {
    let (code, labels) = asm_labels(32, CODE, |a| {
        let mut l = a.create_label();
        f(a, &mut l)?;
        Ok(vec![l])
    });
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    m.load(CODE, &code);
    setup(&m);
    m.set_state(&pm32_state());
    let s = m.run_to_halt();
    let (v, e, _cr2, frame) = m.recorded();
    assert_eq!(v, vector, "vector");
    assert_eq!(e, error, "error code");
    assert_eq!(
        u64::from(m.read_u32(u64::from(frame))),
        labels[0],
        "saved EIP"
    );
    assert_eq!(
        m.read_u32(u64::from(frame) + 4),
        u32::from(SEL_CODE0),
        "saved CS"
    );
    assert_eq!(s.seg(pcvm_core::SegReg::Cs).selector, SEL_CODE0);
    m
}

#[test]
fn divide_error() {
    expect_fault(
        |a, l| {
            a.xor(ecx, ecx)?;
            a.mov(eax, 1)?;
            a.set_label(l)?;
            a.div(ecx)?;
            a.hlt()
        },
        |_| {},
        0,
        0xFFFF_FFFF,
    );
}

#[test]
fn invalid_opcode() {
    expect_fault(
        |a, l| {
            a.nop()?;
            a.set_label(l)?;
            a.ud2()?;
            a.hlt()
        },
        |_| {},
        6,
        0xFFFF_FFFF,
    );
}

#[test]
fn bound_range() {
    expect_fault(
        |a, l| {
            a.mov(dword_ptr(0x700), 10)?;
            a.mov(dword_ptr(0x704), 20)?;
            a.mov(eax, 20)?; // inclusive upper bound
            a.bound(eax, qword_ptr(0x700))?;
            a.mov(eax, 9)?;
            a.set_label(l)?;
            a.bound(eax, qword_ptr(0x700))?;
            a.hlt()
        },
        |_| {},
        5,
        0xFFFF_FFFF,
    );
}

#[test]
fn segment_beyond_gdt_limit_is_gp_with_selector() {
    expect_fault(
        |a, l| {
            a.mov(ax, 0x1FB)?; // index 63, RPL 3: beyond the 32-entry GDT
            a.set_label(l)?;
            a.mov(ds, ax)?;
            a.hlt()
        },
        |_| {},
        13,
        0x1F8,
    );
}

#[test]
fn not_present_data_segment_is_np() {
    expect_fault(
        |a, l| {
            a.mov(ax, SEL_FREE as u32)?;
            a.set_label(l)?;
            a.mov(es, ax)?;
            a.hlt()
        },
        |m| m.set_gdt(SEL_FREE, seg_desc(0, 0xFFFF, ACC_DATA0 & 0x7F, 0)),
        11,
        u32::from(SEL_FREE),
    );
}

#[test]
fn not_present_stack_segment_is_ss() {
    expect_fault(
        |a, l| {
            a.mov(ax, SEL_FREE as u32)?;
            a.set_label(l)?;
            a.mov(ss, ax)?;
            a.hlt()
        },
        |m| m.set_gdt(SEL_FREE, seg_desc(0, 0xFFFF, ACC_DATA0 & 0x7F, 0)),
        12,
        u32::from(SEL_FREE),
    );
}

#[test]
fn read_only_stack_segment_is_gp() {
    expect_fault(
        |a, l| {
            a.mov(ax, SEL_FREE as u32)?;
            a.set_label(l)?;
            a.mov(ss, ax)?;
            a.hlt()
        },
        |m| m.set_gdt(SEL_FREE, seg_desc(0, 0xFFFF, 0x90, 0)),
        13,
        u32::from(SEL_FREE),
    );
}

#[test]
fn data_segment_dpl_below_cpl_rpl_is_gp() {
    // RPL 3 selector for a DPL 0 data segment.
    expect_fault(
        |a, l| {
            a.mov(ax, (SEL_DATA0 | 3) as u32)?;
            a.set_label(l)?;
            a.mov(ds, ax)?;
            a.hlt()
        },
        |_| {},
        13,
        u32::from(SEL_DATA0),
    );
}

#[test]
fn write_to_read_only_segment_is_gp0() {
    expect_fault(
        |a, l| {
            a.mov(ax, SEL_FREE as u32)?;
            a.mov(ds, ax)?;
            a.mov(eax, dword_ptr(0x100))?; // reads are fine
            a.set_label(l)?;
            a.mov(dword_ptr(0x100), eax)?;
            a.hlt()
        },
        |m| m.set_gdt(SEL_FREE, seg_desc(0, 0xFFFF, 0x90, 0)),
        13,
        0,
    );
}

#[test]
fn limit_violation_is_gp0_and_stack_limit_is_ss0() {
    expect_fault(
        |a, l| {
            a.mov(ax, SEL_DATA16 as u32)?;
            a.mov(ds, ax)?;
            a.mov(eax, dword_ptr(0xFFFC))?;
            a.set_label(l)?;
            a.mov(eax, dword_ptr(0xFFFD))?; // last byte at 0x10000 > limit
            a.hlt()
        },
        |_| {},
        13,
        0,
    );
    // Expand-down stack: valid offsets are limit+1 ..= 0xFFFF; below that is #SS(0).
    expect_fault(
        |a, l| {
            a.mov(ax, SEL_FREE as u32)?;
            a.mov(ss, ax)?;
            a.mov(esp, 0x1100)?;
            a.push(eax)?;
            a.mov(ebp, 0x1000)?;
            a.mov(eax, dword_ptr(ebp))?; // lowest valid offset
            a.mov(ebp, 0xFFE)?;
            a.set_label(l)?;
            a.mov(eax, dword_ptr(ebp))?; // starts at or below the limit
            a.hlt()
        },
        |m| m.set_gdt(SEL_FREE, seg_desc(0, 0x0FFF, 0x96, 0)),
        12,
        0,
    );
}

#[test]
fn int_through_gate_with_low_dpl_from_ring3_is_gp_idt() {
    // INT 0x20 at CPL 3 through a DPL 0 gate: #GP(vector*8 + 2), handled on the ring-0 stack.
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    let user = asm_labels(32, 0x9000, |a| {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.int(0x20)?;
        a.hlt()?;
        Ok(vec![l])
    });
    m.load(0x9000, &user.0);
    m.set_idt(0x20, gate_desc(SEL_CODE0, 0x9F00, ACC_INT_GATE32, 0));
    let mut s = pm32_state();
    s.idtr.limit = 0x21 * 8 - 1;
    *s.seg_mut(pcvm_core::SegReg::Cs) = flat(SEL_CODE3, ACC_CODE3);
    for seg in [
        pcvm_core::SegReg::Ds,
        pcvm_core::SegReg::Es,
        pcvm_core::SegReg::Ss,
    ] {
        *s.seg_mut(seg) = flat(SEL_DATA3, ACC_DATA3);
    }
    s.rip = 0x9000;
    s.gpr[4] = u64::from(STACK3_TOP);
    m.set_state(&s);
    m.run_to_halt();
    let (v, e, _, frame) = m.recorded();
    assert_eq!((v, e), (13, 0x20 * 8 + 2));
    assert_eq!(
        frame,
        STACK0_TOP - 20,
        "ring-0 stack from the TSS: EIP CS EFLAGS ESP SS"
    );
    assert_eq!(u64::from(m.read_u32(u64::from(frame))), user.1[0]);
    assert_eq!(m.read_u32(u64::from(frame) + 4), u32::from(SEL_CODE3));
    assert_eq!(m.read_u32(u64::from(frame) + 12), STACK3_TOP);
    assert_eq!(m.read_u32(u64::from(frame) + 16), u32::from(SEL_DATA3));
}

#[test]
fn not_present_gate_is_np_with_idt_bit() {
    let m = expect_fault(
        |a, l| {
            a.set_label(l)?;
            a.int(0x1F)?;
            a.hlt()
        },
        |m| m.set_idt(0x1F, gate_desc(SEL_CODE0, 0x9F00, ACC_INT_GATE32 & 0x7F, 0)),
        11,
        0x1F * 8 + 2,
    );
    drop(m);
}

#[test]
fn int3_and_into_are_traps_after_the_instruction() {
    let (code, labels) = asm_labels(32, CODE, |a| {
        let mut after = a.create_label();
        a.int3()?;
        a.set_label(&mut after)?;
        a.hlt()?;
        Ok(vec![after])
    });
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    m.load(CODE, &code);
    m.set_state(&pm32_state());
    m.run_to_halt();
    let (v, _, _, frame) = m.recorded();
    assert_eq!(v, 3);
    assert_eq!(u64::from(m.read_u32(u64::from(frame))), labels[0]);

    let (code, labels) = asm_labels(32, CODE, |a| {
        let mut after = a.create_label();
        a.mov(al, 0x7F)?;
        a.into()?; // OF clear: nothing
        a.add(al, 1)?; // OF set
        a.into()?;
        a.set_label(&mut after)?;
        a.hlt()?;
        Ok(vec![after])
    });
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    m.load(CODE, &code);
    m.set_state(&pm32_state());
    m.run_to_halt();
    let (v, _, _, frame) = m.recorded();
    assert_eq!(v, 4);
    assert_eq!(u64::from(m.read_u32(u64::from(frame))), labels[0]);
}
