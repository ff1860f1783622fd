//! Mode switches: real → protected (LGDT, CR0.PE, far jump), back to real mode, and "unreal"
//! mode big segment limits surviving real-mode segment loads (SDM Vol. 3A §9.9, §20.1.1).

mod common;

use common::*;
use iced_x86::code_asm::*;
use pcvm_core::cpu_state::cr;
use pcvm_core::{CpuState, SegReg, Segment};

/// Real mode CS:IP = 0000:addr.
fn real_state(ip: u64) -> CpuState {
    let mut s = CpuState::reset();
    *s.seg_mut(SegReg::Cs) = Segment {
        selector: 0,
        base: 0,
        limit: 0xFFFF,
        attributes: 0x9B,
    };
    s.rip = ip;
    s
}

#[test]
fn real_to_protected_to_unreal_mode() {
    let mut m = Machine::new();
    m.standard_tables();
    // Pseudo-descriptors: GDT, an empty protected-mode IDT, the real-mode IVT.
    m.write_u16(0x600, GDT_LIMIT);
    m.write_u32(0x602, GDT as u32);
    m.write_u16(0x610, 0);
    m.write_u32(0x612, IDT as u32);
    m.write_u16(0x620, 0x3FF);
    m.write_u32(0x622, 0);
    let real1 = asm(16, 0x8000, |a| {
        a.cli()?;
        a.lgdt(ptr(0x600))?;
        a.lidt(ptr(0x610))?;
        a.mov(eax, cr0)?;
        a.or(eax, 1)?;
        a.mov(cr0, eax)?;
        jmp_far(a, SEL_CODE0, 0x8100, true)
    });
    let pm32 = asm(32, 0x8100, |a| {
        a.mov(ax, SEL_DATA0 as u32)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.mov(esp, 0x7000u32)?;
        a.mov(ax, SEL_DATA16 as u32)?;
        a.mov(fs, ax)?;
        a.mov(dword_ptr(0x10_0010), 0x1234_5678u32)?;
        a.mov(eax, dword_ptr(0x10_0010))?;
        a.mov(dword_ptr(RESULT as u32), eax)?;
        a.lidt(ptr(0x620))?;
        jmp_far(a, SEL_CODE16, 0x8200, true)
    });
    let pm16 = asm(16, 0x8200, |a| {
        a.mov(eax, cr0)?;
        a.and(eax, 0xFFFF_FFFEu32 as i32)?;
        a.mov(cr0, eax)?;
        jmp_far(a, 0, 0x8300, false)
    });
    let (real2, labels) = asm_labels(16, 0x8300, |a| {
        let mut fault = a.create_label();
        a.xor(ax, ax)?;
        a.mov(ss, ax)?;
        a.mov(sp, 0x7000)?;
        a.mov(esi, 0x10_0010u32)?;
        a.mov(ebx, dword_ptr(esi))?;
        // A real-mode load changes only selector and base: the 4 GiB limit stays.
        a.mov(ds, ax)?;
        a.mov(ecx, dword_ptr(esi))?;
        a.set_label(&mut fault)?;
        // FS kept the 64 KiB limit of its protected-mode descriptor: #GP(0) via the IVT.
        a.mov(edx, dword_ptr(esi).fs())?;
        a.hlt()?;
        Ok(vec![fault])
    });
    let handler = asm(16, 0x8400, |a| {
        a.mov(word_ptr(0x510), 13)?;
        a.pop(ax)?;
        a.mov(word_ptr(0x512), ax)?;
        a.pop(ax)?;
        a.mov(word_ptr(0x514), ax)?;
        a.hlt()
    });
    m.load(0x8000, &real1);
    m.load(0x8100, &pm32);
    m.load(0x8200, &pm16);
    m.load(0x8300, &real2);
    m.load(0x8400, &handler);
    m.write_u16(13 * 4, 0x8400);
    m.write_u16(13 * 4 + 2, 0);
    m.set_state(&real_state(0x8000));

    let s = m.run_to_halt();
    assert_eq!(m.read_u32(RESULT), 0x1234_5678, "32-bit store above 1 MiB");
    assert_eq!(s.gpr[3] as u32, 0x1234_5678, "unreal DS read");
    assert_eq!(
        s.gpr[1] as u32, 0x1234_5678,
        "limit kept across real-mode DS load"
    );
    assert_eq!(s.cr0 & cr::CR0_PE, 0, "back in real mode");
    assert_eq!(s.seg(SegReg::Ds).limit, 0xFFFF_FFFF);
    assert_eq!(s.seg(SegReg::Fs).limit, 0xFFFF);
    assert_eq!(m.read_u16(0x510), 13, "#GP through the IVT");
    assert_eq!(
        u64::from(m.read_u16(0x512)),
        labels[0],
        "IP of the faulting MOV"
    );
    assert_eq!(m.read_u16(0x514), 0, "CS pushed");
    // The processor set the accessed bit of every descriptor it loaded.
    for sel in [SEL_CODE0, SEL_DATA0, SEL_CODE16, SEL_DATA16] {
        assert_ne!(m.gdt(sel) & (1 << 40), 0, "accessed bit of {sel:#x}");
    }
}

#[test]
fn protected_mode_state_after_far_jump() {
    // LMSW sets PE; the far jump loads a 32-bit CS from the GDT.
    let mut m = Machine::new();
    m.standard_tables();
    m.write_u16(0x600, GDT_LIMIT);
    m.write_u32(0x602, GDT as u32);
    let real = asm(16, 0x8000, |a| {
        a.lgdt(ptr(0x600))?;
        a.smsw(ax)?;
        a.or(ax, 1)?;
        a.lmsw(ax)?;
        jmp_far(a, SEL_CODE0, 0x8100, true)
    });
    let pm = asm(32, 0x8100, |a| {
        a.smsw(ebx)?;
        a.mov(ecx, cs)?;
        a.sgdt(ptr(0x700))?;
        a.hlt()
    });
    m.load(0x8000, &real);
    m.load(0x8100, &pm);
    m.set_state(&real_state(0x8000));
    let s = m.run_to_halt();
    assert_eq!(s.gpr[3] & 1, 1, "SMSW shows PE");
    assert_eq!(s.gpr[1] & 0xFFFF, u64::from(SEL_CODE0));
    assert_eq!(s.code_bitness(), 32);
    assert_eq!(m.read_u16(0x700), GDT_LIMIT);
    assert_eq!(m.read_u32(0x702), GDT as u32);
}
