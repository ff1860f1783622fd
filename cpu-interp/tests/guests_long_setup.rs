//! Long-mode system registers seen from a 32-bit protected-mode guest, before IA-32e mode is
//! active: the EFER and CR0 activation checks (SDM Vol. 3A §9.8.5, §2.2.1), the FS/GS base,
//! SYSCALL and TSC_AUX MSRs with their canonical checks (Vol. 4 Table 2-2), RDTSCP, and the
//! instructions that exist only in 64-bit mode.

mod common;

use common::*;
use iced_x86::code_asm::*;
use pcvm_core::cpu_state::cr;
use pcvm_core::SegReg;

const EFER: u32 = 0xC000_0080;

fn run(
    code: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (Machine, pcvm_core::CpuState) {
    let mut m = pm32_machine(code);
    let s = m.run_to_halt();
    (m, s)
}

/// WRMSR `msr` = `value` in 32-bit code.
fn wrmsr(a: &mut CodeAssembler, msr: u32, value: u64) -> Result<(), IcedError> {
    a.mov(ecx, msr)?;
    a.mov(eax, value as u32)?;
    a.mov(edx, (value >> 32) as u32)?;
    a.wrmsr()
}

/// RDMSR `msr` and store EDX:EAX at `at`.
fn rdmsr_to(a: &mut CodeAssembler, msr: u32, at: u32) -> Result<(), IcedError> {
    a.mov(ecx, msr)?;
    a.rdmsr()?;
    a.mov(dword_ptr(at), eax)?;
    a.mov(dword_ptr(at + 4), edx)
}

#[test]
fn efer_accepts_sce_lme_nxe_and_keeps_lma_read_only() {
    let (m, s) = run(|a| {
        // LMA is read-only: writing it together with SCE/LME/NXE sets only those.
        wrmsr(a, EFER, (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11))?;
        rdmsr_to(a, EFER, 0x600)?;
        // A reserved bit (bit 1) is #GP(0) and changes nothing.
        wrmsr(a, EFER, 1 << 1)?;
        a.hlt()
    });
    assert_eq!(m.read_u64(0x600), (1 << 0) | (1 << 8) | (1 << 11));
    assert_eq!((m.recorded().0, m.recorded().1), (13, 0));
    assert_eq!(s.efer, (1 << 0) | (1 << 8) | (1 << 11));
    assert!(!s.long_mode_active());
}

#[test]
fn paging_with_lme_requires_pae() {
    // EFER.LME then CR0.PG without CR4.PAE: #GP(0), paging stays off, LMA stays clear.
    let (m, s) = run(|a| {
        wrmsr(a, EFER, 1 << 8)?;
        a.mov(eax, 0x10_0000u32)?;
        a.mov(cr3, eax)?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32 as i32)?;
        a.mov(cr0, eax)?;
        a.hlt()
    });
    assert_eq!((m.recorded().0, m.recorded().1), (13, 0));
    assert_eq!(s.cr0 & cr::CR0_PG, 0);
    assert_eq!(s.efer & cr::EFER_LMA, 0);
}

#[test]
fn lme_cannot_change_while_paging_is_on() {
    // Legacy 32-bit paging with an identity-mapped first 4 MiB (one PSE page), then an EFER
    // write that sets LME: #GP(0).
    let mut m = pm32_machine(|a| {
        a.mov(eax, cr4)?;
        a.or(eax, cr::CR4_PSE as i32)?;
        a.mov(cr4, eax)?;
        a.mov(eax, 0x10_0000u32)?;
        a.mov(cr3, eax)?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32 as i32)?;
        a.mov(cr0, eax)?;
        wrmsr(a, EFER, 1 << 8)?;
        a.hlt()
    });
    m.write_u32(0x10_0000, 0x87);
    let s = m.run_to_halt();
    assert_eq!((m.recorded().0, m.recorded().1), (13, 0));
    assert_ne!(s.cr0 & cr::CR0_PG, 0, "paging on");
    assert_eq!(s.efer & cr::EFER_LME, 0, "LME unchanged");
}

#[test]
fn base_and_syscall_msrs_read_back_with_canonical_checks() {
    const FS_BASE: u32 = 0xC000_0100;
    const GS_BASE: u32 = 0xC000_0101;
    const KERNEL_GS_BASE: u32 = 0xC000_0102;
    const STAR: u32 = 0xC000_0081;
    const LSTAR: u32 = 0xC000_0082;
    const FMASK: u32 = 0xC000_0084;
    const TSC_AUX: u32 = 0xC000_0103;
    let values: [(u32, u64); 7] = [
        (FS_BASE, 0x0000_7FFF_1234_5000),
        (GS_BASE, 0xFFFF_8000_0000_1000),
        (KERNEL_GS_BASE, 0xFFFF_FFFF_8000_0000),
        (STAR, 0x0023_0010_0000_0000),
        (LSTAR, 0xFFFF_FFFF_8100_0000),
        (FMASK, 0x4_7700),
        (TSC_AUX, 0x42),
    ];
    let (m, s) = run(|a| {
        for (i, (msr, v)) in values.iter().enumerate() {
            wrmsr(a, *msr, *v)?;
            rdmsr_to(a, *msr, 0x600 + 8 * i as u32)?;
        }
        // RDTSCP returns IA32_TSC_AUX in ECX.
        a.xor(ecx, ecx)?;
        a.rdtscp()?;
        a.mov(dword_ptr(0x680), ecx)?;
        // A non-canonical LSTAR is #GP(0).
        wrmsr(a, LSTAR, 0x0000_8000_0000_0000)?;
        a.hlt()
    });
    for (i, (msr, v)) in values.iter().enumerate() {
        assert_eq!(m.read_u64(0x600 + 8 * i as u64), *v, "MSR {msr:#x}");
    }
    assert_eq!(m.read_u32(0x680), 0x42, "RDTSCP ECX");
    assert_eq!(
        s.seg(SegReg::Fs).base,
        0x0000_7FFF_1234_5000,
        "FS_BASE is FS.base"
    );
    assert_eq!(s.seg(SegReg::Gs).base, 0xFFFF_8000_0000_1000);
    assert_eq!((m.recorded().0, m.recorded().1), (13, 0));
    assert_eq!(s.msrs.lstar, 0xFFFF_FFFF_8100_0000, "LSTAR unchanged");
}

#[test]
fn loading_fs_from_the_gdt_replaces_the_msr_base() {
    // A selector load takes the 32-bit base from the descriptor, upper half cleared.
    let (_, s) = run(|a| {
        wrmsr(a, 0xC000_0100, 0xFFFF_8000_0000_0000)?;
        a.mov(ax, SEL_DATA0 as u32)?;
        a.mov(fs, ax)?;
        a.hlt()
    });
    assert_eq!(s.seg(SegReg::Fs).base, 0);
}

#[test]
fn syscall_is_undefined_outside_64_bit_mode() {
    let (m, s) = run(|a| {
        wrmsr(a, EFER, 1)?;
        a.syscall()?;
        a.hlt()
    });
    assert_eq!(m.recorded().0, 6, "#UD");
    assert_eq!(s.seg(SegReg::Cs).selector, SEL_CODE0);
}

#[test]
fn arch_capabilities_and_platform_id_are_read_only() {
    let (m, _) = run(|a| {
        // CPUID.(7,0):EDX[29] announces IA32_ARCH_CAPABILITIES.
        a.mov(eax, 7)?;
        a.xor(ecx, ecx)?;
        a.cpuid()?;
        a.mov(dword_ptr(0x600), edx)?;
        rdmsr_to(a, 0x10A, 0x608)?;
        rdmsr_to(a, 0x17, 0x610)?;
        wrmsr(a, 0x10A, 0)?;
        a.hlt()
    });
    assert_ne!(m.read_u32(0x600) & (1 << 29), 0);
    let caps = m.read_u64(0x608);
    assert_ne!(caps & 1, 0, "RDCL_NO: no Meltdown");
    assert_ne!(caps & (1 << 5), 0, "MDS_NO");
    assert_eq!(m.read_u64(0x610), 0, "platform ID");
    assert_eq!((m.recorded().0, m.recorded().1), (13, 0), "read-only");
}
