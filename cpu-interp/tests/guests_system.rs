//! System instructions seen from a guest: CPUID contents, MSRs, RDTSC, LAR/LSL/VERR/VERW/
//! ARPL, LLDT/LTR/SLDT/STR, control-register checks and DR7.GD (SDM Vol. 2; Vol. 3A §2.5,
//! §17.2.4).

mod common;

use common::*;
use iced_x86::code_asm::*;
use pcvm_core::SegReg;

fn run(
    code: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (Machine, pcvm_core::CpuState) {
    let mut m = pm32_machine(code);
    let s = m.run_to_halt();
    (m, s)
}

#[test]
fn cpuid_describes_the_implemented_cpu() {
    let (m, _) = run(|a| {
        let mut at = 0x600u32;
        for leaf in [0u32, 1, 0x4000_0000, 0x8000_0001] {
            a.mov(eax, leaf)?;
            a.xor(ecx, ecx)?;
            a.cpuid()?;
            for r in [eax, ebx, ecx, edx] {
                a.mov(dword_ptr(at), r)?;
                at += 4;
            }
        }
        a.hlt()
    });
    let w = |i: u64| m.read_u32(0x600 + 4 * i);
    let mut vendor = Vec::new();
    for i in [1, 3, 2] {
        vendor.extend_from_slice(&w(i).to_le_bytes());
    }
    assert_eq!(&vendor, b"GenuineIntel");
    assert_eq!((w(4) >> 8) & 0xF, 6, "family 6");
    let edx1 = w(7);
    for (bit, name) in [
        (4, "TSC"),
        (5, "MSR"),
        (6, "PAE"),
        (8, "CX8"),
        (11, "SEP"),
        (15, "CMOV"),
        (0, "FPU"),
        (23, "MMX"),
        (9, "APIC"),
        (24, "FXSR"),
        (25, "SSE"),
        (26, "SSE2"),
    ] {
        assert_ne!(edx1 & (1 << bit), 0, "{name}");
    }
    assert_eq!(edx1 & (1 << 28), 0, "HTT: one logical processor");
    assert!(w(8) < 0x4000_0000, "no hypervisor leaves");
    assert_ne!(w(15) & (1 << 20), 0, "NX");
    assert_ne!(w(15) & (1 << 29), 0, "long mode");
    assert_ne!(w(15) & (1 << 11), 0, "SYSCALL");
}

#[test]
fn msrs_read_back_and_reject_bad_values() {
    let (m, _) = run(|a| {
        // PAT: write WB everywhere but entry 7 = UC, read back.
        a.mov(ecx, 0x277u32)?;
        a.mov(eax, 0x0606_0606u32)?;
        a.mov(edx, 0x0006_0606u32)?;
        a.wrmsr()?;
        a.xor(eax, eax)?;
        a.xor(edx, edx)?;
        a.rdmsr()?;
        a.mov(dword_ptr(0x600), eax)?;
        a.mov(dword_ptr(0x604), edx)?;
        // SYSENTER_EIP round trip, MTRRcap.
        a.mov(ecx, 0x176u32)?;
        a.mov(eax, 0xC010_0000u32)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.rdmsr()?;
        a.mov(dword_ptr(0x608), eax)?;
        a.mov(ecx, 0xFEu32)?;
        a.rdmsr()?;
        a.mov(dword_ptr(0x60C), eax)?;
        // PAT entry value 2 is reserved: #GP(0).
        a.mov(ecx, 0x277u32)?;
        a.mov(eax, 0x0206_0606u32)?;
        a.wrmsr()?;
        a.hlt()
    });
    assert_eq!(m.read_u32(0x600), 0x0606_0606);
    assert_eq!(m.read_u32(0x604), 0x0006_0606);
    assert_eq!(m.read_u32(0x608), 0xC010_0000);
    assert_eq!(m.read_u32(0x60C), 0x508, "8 variable MTRRs, fixed, WC");
    assert_eq!((m.recorded().0, m.recorded().1), (13, 0));

    let (m, _) = run(|a| {
        a.mov(ecx, 0x1234_5678u32)?;
        a.rdmsr()?;
        a.hlt()
    });
    assert_eq!((m.recorded().0, m.recorded().1), (13, 0), "unknown MSR");
}

#[test]
fn rdtsc_is_monotonic_and_follows_wrmsr() {
    let (m, _) = run(|a| {
        a.rdtsc()?;
        a.mov(dword_ptr(0x600), eax)?;
        a.mov(dword_ptr(0x604), edx)?;
        for _ in 0..10 {
            a.nop()?;
        }
        a.rdtsc()?;
        a.mov(dword_ptr(0x608), eax)?;
        a.mov(dword_ptr(0x60C), edx)?;
        a.mov(ecx, 0x10u32)?;
        a.xor(eax, eax)?;
        a.mov(edx, 0x42u32)?;
        a.wrmsr()?;
        a.rdtsc()?;
        a.mov(dword_ptr(0x610), eax)?;
        a.mov(dword_ptr(0x614), edx)?;
        a.hlt()
    });
    let t0 = m.read_u64(0x600);
    let t1 = m.read_u64(0x608);
    let t2 = m.read_u64(0x610);
    assert!(t1 > t0, "TSC advances: {t0} -> {t1}");
    assert!(
        (0x42_0000_0000..0x42_0001_0000).contains(&t2),
        "TSC after WRMSR: {t2:#x}"
    );
}

#[test]
fn lar_lsl_verr_verw_arpl() {
    let (m, s) = run(|a| {
        let mut at = 0x600u32;
        let zf = |a: &mut CodeAssembler, at: &mut u32| -> Result<(), IcedError> {
            a.pushfd()?;
            a.pop(dword_ptr(*at))?;
            *at += 4;
            Ok(())
        };
        a.mov(bx, SEL_CODE0 as u32)?;
        a.lar(eax, ebx)?;
        a.mov(dword_ptr(0x680), eax)?;
        zf(a, &mut at)?;
        a.mov(bx, SEL_DATA16 as u32)?;
        a.lsl(eax, ebx)?;
        a.mov(dword_ptr(0x684), eax)?;
        zf(a, &mut at)?;
        a.xor(bx, bx)?;
        a.lar(eax, ebx)?; // null: ZF = 0
        zf(a, &mut at)?;
        a.mov(bx, (SEL_DATA0 | 3) as u32)?;
        a.verr(bx)?; // RPL 3 > DPL 0: ZF = 0
        zf(a, &mut at)?;
        a.mov(bx, SEL_CODE0 as u32)?;
        a.verr(bx)?; // readable code: ZF = 1
        zf(a, &mut at)?;
        a.verw(bx)?; // code is never writable: ZF = 0
        zf(a, &mut at)?;
        a.mov(ax, 0x10)?;
        a.mov(cx, 0x1B)?;
        a.arpl(ax, cx)?;
        zf(a, &mut at)?;
        a.hlt()
    });
    let zf = |i: u64| m.read_u32(0x600 + 4 * i) & 0x40 != 0;
    assert!(zf(0));
    assert_eq!(
        u64::from(m.read_u32(0x680)),
        (m.gdt(SEL_CODE0) >> 32) & 0x00F0_FF00,
        "LAR access rights"
    );
    assert!(zf(1));
    assert_eq!(m.read_u32(0x684), 0xFFFF, "LSL limit");
    assert!(!zf(2), "LAR null");
    assert!(!zf(3), "VERR with RPL 3");
    assert!(zf(4), "VERR readable code");
    assert!(!zf(5), "VERW code");
    assert!(zf(6), "ARPL adjusted");
    assert_eq!(s.gpr[0] & 0xFFFF, 0x13);
}

#[test]
fn lldt_ltr_and_ldt_segments() {
    const SEL_LDT: u16 = 0x58;
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    m.set_gdt(SEL_LDT, seg_desc(0x4000, 0x0F, 0x82, 0));
    m.write_u64(0x4008, seg_desc(0x5_0000, 0xFFFF, ACC_DATA0, 0));
    m.write_u32(0x5_0010, 0xD00D_F00D);
    write_task(&m, SEL_TSS2, TSS2, 0, 0, 0);
    let code = asm(32, CODE, |a| {
        a.mov(ax, SEL_LDT as u32)?;
        a.lldt(ax)?;
        a.mov(ax, 0x0C)?;
        a.mov(es, ax)?;
        a.mov(eax, dword_ptr(0x10).es())?;
        a.mov(dword_ptr(0x600), eax)?;
        a.sldt(ebx)?;
        a.mov(ax, SEL_TSS2 as u32)?;
        a.ltr(ax)?;
        a.str(ecx)?;
        a.ltr(ax)?;
        a.hlt()
    });
    m.load(CODE, &code);
    m.set_state(&pm32_state());
    let s = m.run_to_halt();
    assert_eq!(
        m.read_u32(0x600),
        0xD00D_F00D,
        "read through an LDT segment"
    );
    assert_eq!(s.gpr[3], u64::from(SEL_LDT), "SLDT r32 zero-extends");
    assert_eq!(s.gpr[1], u64::from(SEL_TSS2));
    assert_eq!(s.seg(SegReg::Es).base, 0x5_0000);
    assert_eq!((m.gdt(SEL_TSS2) >> 40) & 0xF, 0xB, "LTR marks the TSS busy");
    assert_eq!(m.recorded().0, 13);
    assert_eq!(m.recorded().1, u32::from(SEL_TSS2), "LTR of a busy TSS");
}

#[test]
fn control_register_checks() {
    // A reserved CR4 bit (LA57: no 5-level paging here) is #GP(0).
    let (m, _) = run(|a| {
        a.mov(eax, 1u32 << 12)?;
        a.mov(cr4, eax)?;
        a.hlt()
    });
    assert_eq!((m.recorded().0, m.recorded().1), (13, 0));
    // PG without PE is #GP(0).
    let (m, s) = run(|a| {
        a.mov(eax, 0x8000_0000u32)?;
        a.mov(cr0, eax)?;
        a.hlt()
    });
    assert_eq!((m.recorded().0, m.recorded().1), (13, 0));
    assert_ne!(s.cr0 & 1, 0, "CR0 unchanged");
    // Ring 3 may not read CR0.
    let mut m = pm32_machine(|a| iret_to_ring3(a, 0x9000));
    m.load(
        0x9000,
        &asm(32, 0x9000, |a| {
            a.mov(eax, cr0)?;
            a.hlt()
        }),
    );
    m.run_to_halt();
    assert_eq!((m.recorded().0, m.recorded().1), (13, 0));
}

#[test]
fn dr7_general_detect_raises_debug_fault() {
    let (code, labels) = asm_labels(32, CODE, |a| {
        let mut l = a.create_label();
        a.mov(eax, 0x1000u32)?;
        a.mov(dr0, eax)?;
        a.mov(eax, (1u32 << 13) | 0x400)?;
        a.mov(dr7, eax)?;
        a.set_label(&mut l)?;
        a.mov(ebx, dr0)?;
        a.hlt()?;
        Ok(vec![l])
    });
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    m.load(CODE, &code);
    m.set_state(&pm32_state());
    let s = m.run_to_halt();
    let (v, _, _, frame) = m.recorded();
    assert_eq!(v, 1);
    assert_eq!(
        u64::from(m.read_u32(u64::from(frame))),
        labels[0],
        "a fault"
    );
    assert_ne!(s.dr[6] & (1 << 13), 0, "DR6.BD");
    assert_eq!(s.dr[7] & (1 << 13), 0, "GD cleared for the handler");
    assert_eq!(s.dr[0], 0x1000);
}

/// A stand-in local APIC that owns IA32_APIC_BASE, IA32_TSC_DEADLINE and x2APIC ID (0x802),
/// refuses writes to 0x80F, and records the last write with the TSC it came with.
struct MsrApic {
    writes: Vec<(u32, u64, u64)>,
}

impl pcvm_core::InterruptController for MsrApic {
    fn acknowledge(&mut self) -> Option<u8> {
        None
    }
    fn read_msr(&mut self, msr: u32) -> Option<u64> {
        match msr {
            0x1B => Some(0xFEE0_0D00),
            0x6E0 => Some(0x55),
            0x802 => Some(0x1234_5678_9ABC),
            _ => None,
        }
    }
    fn write_msr(&mut self, msr: u32, value: u64, tsc: u64) -> Option<bool> {
        match msr {
            0x1B | 0x6E0 => {
                self.writes.push((msr, value, tsc));
                Some(true)
            }
            0x80F => Some(false),
            _ => None,
        }
    }
}

/// RDMSR/WRMSR of the local APIC's MSRs go to the board's interrupt controller
/// (`Platform::read_local_msr`/`write_local_msr`); what it does not take falls back (#GP).
#[test]
fn local_apic_msrs_reach_the_board() {
    use std::sync::{Arc, Mutex};
    let mut m = pm32_machine(|a| {
        for (msr, at) in [(0x1Bu32, 0x600u32), (0x6E0, 0x608), (0x802, 0x610)] {
            a.mov(ecx, msr)?;
            a.rdmsr()?;
            a.mov(dword_ptr(at), eax)?;
            a.mov(dword_ptr(at + 4), edx)?;
        }
        a.mov(ecx, 0x6E0u32)?;
        a.mov(eax, 0x1000u32)?;
        a.mov(edx, 0x7u32)?;
        a.wrmsr()?;
        a.mov(ecx, 0x80Fu32)?;
        a.wrmsr()?;
        a.hlt()
    });
    let apic = Arc::new(Mutex::new(MsrApic { writes: Vec::new() }));
    m.board.interrupt_controller = Some(apic.clone());
    m.run_to_halt();
    assert_eq!(m.read_u64(0x600), 0xFEE0_0D00);
    assert_eq!(m.read_u64(0x608), 0x55);
    assert_eq!(m.read_u64(0x610), 0x1234_5678_9ABC);
    let writes = apic.lock().unwrap().writes.clone();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].0, 0x6E0);
    assert_eq!(writes[0].1, 0x7_0000_1000);
    assert!(writes[0].2 > 0, "the TSC at the write");
    assert_eq!(
        (m.recorded().0, m.recorded().1),
        (13, 0),
        "a refused write #GPs"
    );
}

/// Self-modifying code through a store that ran before its page held code: a loop patches
/// the immediate of a function on another page (`mov eax, imm32; ret`) and calls it. The
/// first patch happens before the function was ever run, so on the JIT the store's page is
/// already in its write soft-TLB when the page becomes code; every later patch must still be
/// seen (it ends the block, as the interpreter does, and drops the stale translation), so the
/// function returns each new value.
#[test]
fn patched_function_returns_each_new_value() {
    const FUNC: u32 = 0x3_0000;
    let (_, s) = run(|a| {
        // mov eax, 0; ret
        a.mov(dword_ptr(FUNC), 0x0000_00B8u32)?;
        a.mov(dword_ptr(FUNC + 4), 0xC300u32)?;
        a.xor(ebx, ebx)?;
        a.xor(ecx, ecx)?;
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.mov(dword_ptr(FUNC + 1), ecx)?;
        a.mov(edx, FUNC)?;
        a.call(edx)?;
        a.add(ebx, eax)?;
        a.inc(ecx)?;
        a.cmp(ecx, 200)?;
        a.jne(top)?;
        a.hlt()?;
        Ok(())
    });
    assert_eq!(s.gpr[3], (0..200).sum::<u64>(), "sum of the patched values");
    assert_eq!(s.gpr[1], 200);
}
