//! SSE seen from a guest: the fault rules (CR4.OSFXSR, CR0.EM/TS, alignment, unmasked
//! exceptions as #XM or #UD), XSETBV/XGETBV and CPUID.OSXSAVE, and 64-bit mode with REX
//! registers XMM8–15 and FXSAVE64 (SDM Vol. 1 §11.5, §11.6, §13; Vol. 2A Table 2-18).
//! Results are checked against the host CPU by `simd_differential.rs`; these cases cover
//! what the harness cannot set up from user mode.

mod common;

use common::*;
use iced_x86::code_asm::*;
use pcvm_core::cpu_state::cr;

const DATA: u32 = 0x1_0000;

/// Run `code` in 32-bit ring 0 with `cr4_bits` and `cr0_bits` added; the vector recorded
/// (0xEEEEEEEE if none) and the final state.
fn run32(
    cr0_bits: u64,
    cr4_bits: u64,
    code: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (u32, pcvm_core::CpuState) {
    let mut m = pm32_machine(code);
    let mut s = m.state();
    s.cr0 |= cr0_bits;
    s.cr4 |= cr4_bits;
    m.set_state(&s);
    let s = m.run_to_halt();
    (m.recorded().0, s)
}

const OS_SSE: u64 = cr::CR4_OSFXSR | cr::CR4_OSXMMEXCPT;

#[test]
fn sse_needs_osfxsr_and_respects_em_and_ts() {
    let addps = |a: &mut CodeAssembler| {
        a.addps(xmm0, xmm1)?;
        a.hlt()
    };
    assert_eq!(run32(0, 0, addps).0, 6, "#UD without CR4.OSFXSR");
    assert_eq!(run32(cr::CR0_EM, OS_SSE, addps).0, 6, "#UD with CR0.EM");
    assert_eq!(run32(cr::CR0_TS, OS_SSE, addps).0, 7, "#NM with CR0.TS");
    let (v, _) = run32(0, OS_SSE, addps);
    assert_eq!(v, 0xEEEE_EEEE, "runs when enabled");
}

#[test]
fn aligned_forms_fault_on_misaligned_memory() {
    let (v, _) = run32(0, OS_SSE, |a| {
        a.movaps(xmm0, xmmword_ptr(DATA + 8))?;
        a.hlt()
    });
    assert_eq!(v, 13, "#GP for MOVAPS");
    let (v, s) = run32(0, OS_SSE, |a| {
        a.mov(dword_ptr(DATA + 8), 0x1234_5678u32)?;
        a.movups(xmm0, xmmword_ptr(DATA + 8))?;
        a.movd(eax, xmm0)?;
        a.hlt()
    });
    assert_eq!(v, 0xEEEE_EEEE, "MOVUPS may be misaligned");
    assert_eq!(s.gpr[0] as u32, 0x1234_5678);
}

/// DIVPS by zero with ZE unmasked: #XM with CR4.OSXMMEXCPT, else #UD; the destination keeps
/// its value and MXCSR.ZE is set either way.
#[test]
fn unmasked_exception_is_xm_or_ud() {
    for (cr4_bits, want) in [(OS_SSE, 19), (cr::CR4_OSFXSR, 6)] {
        let (v, s) = run32(0, cr4_bits, |a| {
            a.mov(dword_ptr(DATA), 0x1F80u32 & !(1 << 9))?;
            a.ldmxcsr(dword_ptr(DATA))?;
            a.mov(eax, 0x3F80_0000u32)?; // 1.0
            a.movd(xmm0, eax)?;
            a.xorps(xmm1, xmm1)?;
            a.divps(xmm0, xmm1)?;
            a.hlt()
        });
        assert_eq!(v, want);
        assert_eq!(
            u32::from_le_bytes(s.fpu.xmm[0][..4].try_into().unwrap()),
            0x3F80_0000
        );
        assert_eq!(
            s.fpu.mxcsr & 0x3F,
            0x05,
            "ZE (1/0 in lane 0), IE (0/0 in lanes 1-3)"
        );
    }
}

#[test]
fn xsetbv_xgetbv_and_cpuid_osxsave() {
    let (v, s) = run32(0, OS_SSE, |a| {
        a.mov(eax, cr4)?;
        a.or(eax, cr::CR4_OSXSAVE as u32)?;
        a.mov(cr4, eax)?;
        a.xor(ecx, ecx)?;
        a.xor(edx, edx)?;
        a.mov(eax, 3)?;
        a.xsetbv()?;
        a.xor(eax, eax)?;
        a.xgetbv()?;
        a.mov(edi, eax)?;
        a.mov(eax, 1)?;
        a.cpuid()?;
        a.mov(esi, ecx)?;
        a.mov(eax, 2)?; // SSE without x87: #GP(0)
        a.xor(ecx, ecx)?;
        a.xsetbv()?;
        a.hlt()
    });
    assert_eq!(v, 13);
    assert_eq!(s.gpr[7] as u32, 3, "XGETBV reads XCR0");
    assert_ne!(s.gpr[6] & (1 << 27), 0, "CPUID.1:ECX.OSXSAVE");
    let (v, _) = run32(0, OS_SSE, |a| {
        a.xgetbv()?;
        a.hlt()
    });
    assert_eq!(v, 6, "XGETBV needs CR4.OSXSAVE");
}

#[test]
fn rex_registers_and_fxsave64() {
    let mut m = long64_machine(|a| {
        a.mov(rax, cr4)?;
        a.or(rax, OS_SSE as i32)?;
        a.mov(cr4, rax)?;
        a.mov(rax, 0x0102_0304_0506_0708u64)?;
        a.movq(xmm9, rax)?;
        a.paddq(xmm9, xmm9)?;
        a.pshufd(xmm15, xmm9, 0x44)?;
        a.movq(rbx, xmm15)?;
        a.psrldq(xmm15, 8)?;
        a.movq(rcx, xmm15)?;
        a.mov(rdi, u64::from(DATA))?;
        a.fxsave64(ptr(rdi))?;
        a.hlt()
    });
    let s = m.run_to_halt();
    assert_eq!(s.gpr[3], 0x0204_0608_0A0C_0E10);
    assert_eq!(s.gpr[1], 0x0204_0608_0A0C_0E10);
    let at = u64::from(DATA) + 160 + 16 * 9;
    assert_eq!(
        m.read_u64(at),
        0x0204_0608_0A0C_0E10,
        "XMM9 saved in 64-bit mode"
    );
    assert_eq!(m.read_u32(u64::from(DATA) + 24), 0x1F80, "MXCSR");
}

/// Random bytes in the SSE opcode maps (with mandatory prefixes, and REX in 64-bit mode)
/// never panic the interpreter: every case ends in a recorded exception or the HLT after it.
#[test]
fn random_sse_encodings_never_panic() {
    let mut seed = 0x5EED_5EEDu64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for case in 0..1000 {
        let long = case % 2 == 1;
        let mut code = Vec::new();
        match next() % 4 {
            0 => {}
            1 => code.push(0x66),
            2 => code.push(0xF2),
            _ => code.push(0xF3),
        }
        if long && next() % 2 == 0 {
            code.push(0x40 | (next() % 16) as u8);
        }
        code.push(0x0F);
        match next() % 4 {
            0 => code.push(0x38),
            1 => code.push(0x3A),
            _ => {}
        }
        for _ in 0..8 {
            code.push(next() as u8);
        }
        code.push(0xF4);
        let mut m = if long {
            long64_machine(|a| a.hlt())
        } else {
            pm32_machine(|a| a.hlt())
        };
        m.load(CODE, &code);
        // On the JIT: compile only code run twice, not each block of the zeroed memory the
        // random bytes often run into.
        m.cpu.set_jit_threshold(2);
        let mut s = m.state();
        s.cr4 |= OS_SSE | cr::CR4_OSXSAVE;
        s.xcr0 = 3;
        for (i, g) in s.gpr.iter_mut().enumerate() {
            *g = 0x1_0000 + 0x100 * i as u64;
        }
        m.set_state(&s);
        // Any exit is fine (halt, shutdown on a fault the 64-bit tables cannot deliver); a
        // panic fails the test.
        let _ = m.run();
    }
}

/// The SSE instructions on MMX registers fault like MMX ones: CR0.EM → #UD, CR0.TS → #NM,
/// a pending unmasked x87 exception → #MF; otherwise they enter MMX state (TOP = 0, all
/// tags valid).
#[test]
fn sse_on_mmx_registers_fault_like_mmx() {
    let pavgb = |a: &mut CodeAssembler| {
        a.pavgb(mm0, mm1)?;
        a.hlt()
    };
    assert_eq!(run32(cr::CR0_EM, OS_SSE, pavgb).0, 6);
    assert_eq!(run32(cr::CR0_TS, OS_SSE, pavgb).0, 7);
    let mut m = pm32_machine(pavgb);
    let mut s = m.state();
    s.cr4 |= OS_SSE;
    s.fpu.fcw = 0x037E; // IM clear
    s.fpu.fsw = 0x8081 | (5 << 11); // IE pending (ES, B), TOP = 5
    m.set_state(&s);
    m.run_to_halt();
    assert_eq!(m.recorded().0, 16, "#MF");
    let (v, s) = run32(0, OS_SSE, |a| {
        a.pavgb(mm0, mm1)?;
        a.hlt()
    });
    assert_eq!(v, 0xEEEE_EEEE);
    assert_eq!((s.fpu.fsw >> 11) & 7, 0, "TOP = 0");
    assert_eq!(s.fpu.ftw, 0xFF, "all tags valid");
    assert_eq!(
        &s.fpu.st[0][8..10],
        &[0xFF, 0xFF],
        "MM0 written with exponent ones"
    );
}
