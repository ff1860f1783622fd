//! Virtual-8086 mode (SDM Vol. 3A §20.2–20.3): entry by IRETD with VM = 1, paragraph
//! segment arithmetic, INT n with IOPL < 3 trapping to the ring-0 monitor with the v86
//! frame (ES/DS/FS/GS pushed and zeroed), the I/O permission bitmap, and INT n with
//! IOPL = 3 through the IDT and IRETD back.

mod common;

use common::*;
use iced_x86::code_asm::*;
use pcvm_core::cpu_state::flags;
use pcvm_core::SegReg;

const V86_CS: u16 = 0x1000;
const V86_SS: u16 = 0x2000;
const V86_DS: u16 = 0x3000;

/// Ring-0 code entering v86 mode at V86_CS:0 with the given IOPL.
fn enter_v86(iopl: u32) -> Vec<u8> {
    asm(32, CODE, |a| {
        a.push(0x5555u32)?; // GS
        a.push(0x4444u32)?; // FS
        a.push(u32::from(V86_DS))?; // DS
        a.push(0x6666u32)?; // ES
        a.push(u32::from(V86_SS))?;
        a.push(0xFFFEu32)?;
        a.push((flags::VM as u32) | (iopl << 12) | 2)?;
        a.push(u32::from(V86_CS))?;
        a.push(0u32)?;
        a.iretd()
    })
}

fn machine(iopl: u32, v86: &[u8]) -> Machine {
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    m.load(CODE, &enter_v86(iopl));
    m.load(u64::from(V86_CS) << 4, v86);
    let mut s = pm32_state();
    s.idtr.limit = 0x100 * 8 - 1;
    m.set_state(&s);
    m
}

#[test]
fn int_with_iopl0_traps_to_the_monitor_with_a_v86_frame() {
    let (v86, labels) = asm_labels(16, 0, |a| {
        let mut int = a.create_label();
        a.mov(ax, 0x1234)?;
        a.mov(word_ptr(0x10), ax)?; // DS:0x10 = 0x30010
        a.out(0x80, al)?; // allowed by the bitmap
        a.set_label(&mut int)?;
        a.int(0x21)?;
        a.hlt()?;
        Ok(vec![int])
    });
    let mut m = machine(0, &v86);
    let s = m.run_to_halt();
    assert_eq!(m.read_u16(0x3_0010), 0x1234, "DS base = 0x3000 << 4");
    let (v, e, _, frame) = m.recorded();
    assert_eq!((v, e), (13, 0), "INT n at IOPL < 3 is #GP(0)");
    let f = |i: u64| m.read_u32(u64::from(frame) + 4 * i);
    assert_eq!(u64::from(f(0)), labels[0], "IP of the INT");
    assert_eq!(f(1), u32::from(V86_CS));
    assert_ne!(f(2) & flags::VM as u32, 0, "VM in the pushed EFLAGS");
    assert_eq!(f(3), 0xFFFE, "v86 SP");
    assert_eq!(f(4), u32::from(V86_SS));
    assert_eq!(f(5), 0x6666, "ES");
    assert_eq!(f(6), u32::from(V86_DS), "DS");
    assert_eq!(f(7), 0x4444, "FS");
    assert_eq!(f(8), 0x5555, "GS");
    assert_eq!(frame, STACK0_TOP - 36, "nine dwords on the ring-0 stack");
    assert_eq!(s.rflags & flags::VM, 0, "monitor runs in protected mode");
    assert_eq!(s.seg(SegReg::Fs).selector, 0, "FS zeroed on entry");
    assert_eq!(s.seg(SegReg::Gs).selector, 0, "GS zeroed on entry");
    assert_eq!(s.seg(SegReg::Es).selector, 0, "ES zeroed on entry");
}

#[test]
fn io_bitmap_applies_in_v86_even_with_iopl3() {
    let (v86, labels) = asm_labels(16, 0, |a| {
        let mut fault = a.create_label();
        a.in_(al, 0x70)?;
        a.set_label(&mut fault)?;
        a.in_(al, 0x71)?;
        a.hlt()?;
        Ok(vec![fault])
    });
    let mut m = machine(3, &v86);
    m.write(TSS + 0x68 + 0x71 / 8, &[1 << (0x71 % 8)]);
    m.run_to_halt();
    let (v, e, _, frame) = m.recorded();
    assert_eq!((v, e), (13, 0));
    assert_eq!(u64::from(m.read_u32(u64::from(frame))), labels[0]);
}

#[test]
fn int_with_iopl3_goes_through_the_idt_and_iret_returns() {
    let v86 = asm(16, 0, |a| {
        a.mov(ax, 0x1111)?;
        a.int(0x30)?;
        a.mov(word_ptr(0x20), ax)?;
        a.mov(bx, ds)?;
        a.mov(word_ptr(0x22), bx)?;
        a.hlt()?; // privileged at CPL 3: #GP(0) ends the test
        Ok(())
    });
    let handler = asm(32, 0xA000, |a| {
        a.mov(eax, 0x5A5Au32)?;
        a.iretd()
    });
    let mut m = machine(3, &v86);
    m.load(0xA000, &handler);
    m.set_idt(0x30, gate_desc(SEL_CODE0, 0xA000, 0xEE, 0));
    m.run_to_halt();
    assert_eq!(
        m.read_u16(0x3_0020),
        0x5A5A,
        "handler result seen back in v86"
    );
    assert_eq!(m.read_u16(0x3_0022), V86_DS, "DS restored by IRETD to v86");
    let (v, e, _, frame) = m.recorded();
    assert_eq!((v, e), (13, 0), "HLT in v86 mode");
    assert_ne!(m.read_u32(u64::from(frame) + 8) & flags::VM as u32, 0);
}

#[test]
fn vme_redirects_int_through_the_v86_ivt() {
    // CR4.VME with IOPL 0: STI/CLI work on VIF; INT 0x21 (redirection bit clear) goes to the
    // v86 IVT with an IOPL-3, IF=VIF flags image; a 16-bit IRET returns; INT 0x22 (bit set)
    // is #GP(0) to the monitor (SDM Vol. 3A §20.3.3, Table 20-2).
    let (v86, labels) = asm_labels(16, 0, |a| {
        let mut trap = a.create_label();
        a.sti()?;
        a.mov(ax, 0x1111)?;
        a.int(0x21)?;
        a.mov(word_ptr(0x20), ax)?;
        a.set_label(&mut trap)?;
        a.int(0x22)?;
        a.hlt()?;
        Ok(vec![trap])
    });
    let handler = asm(16, 0x700, |a| {
        a.mov(bp, sp)?;
        a.mov(bx, word_ptr(bp + 4))?; // FLAGS image pushed by the redirected INT
        a.mov(word_ptr(0x30), bx)?;
        a.pushf()?; // IF in the image is VIF, which the INT cleared
        a.pop(bx)?;
        a.mov(word_ptr(0x32), bx)?;
        a.mov(ax, 0x2222)?;
        a.iret()
    });
    let mut m = machine(0, &v86);
    m.load(0x700, &handler);
    m.write_u16(0x21 * 4, 0x700);
    m.write_u16(0x21 * 4 + 2, 0);
    // I/O bitmap base 0x88: the redirection bitmap is TSS bytes 0x68–0x87.
    m.write_u16(TSS + 0x66, 0x88);
    m.write(TSS + 0x68, &[0u8; 32]);
    m.write(TSS + 0x68 + 0x22 / 8, &[1 << (0x22 % 8)]);
    let mut s = m.state();
    s.cr4 |= pcvm_core::cpu_state::cr::CR4_VME;
    m.set_state(&s);
    m.run_to_halt();
    assert_eq!(
        m.read_u16(0x3_0020),
        0x2222,
        "redirected handler ran and returned"
    );
    let image = m.read_u16(0x3_0030);
    assert_ne!(image & flags::IF as u16, 0, "image IF = VIF (set by STI)");
    assert_eq!(
        image & flags::IOPL as u16,
        flags::IOPL as u16,
        "image IOPL reads 3"
    );
    assert_eq!(
        m.read_u16(0x3_0032) & flags::IF as u16,
        0,
        "VIF cleared on entry"
    );
    let (v, e, _, frame) = m.recorded();
    assert_eq!((v, e), (13, 0));
    assert_eq!(u64::from(m.read_u32(u64::from(frame))), labels[0]);
    let eflags = u64::from(m.read_u32(u64::from(frame) + 8));
    assert_ne!(eflags & flags::VIF, 0, "IRET restored VIF");
    assert_eq!(eflags & flags::IF, 0, "real IF untouched at IOPL 0");
}
