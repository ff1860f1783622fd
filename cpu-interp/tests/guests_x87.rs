//! x87 FPU and MMX seen from a guest: arithmetic and conversions, precision and rounding
//! control, stack faults with masked responses, unmasked exceptions and #MF, CR0.EM/TS/MP
//! and #NM, FSAVE/FSTENV layouts, FCOMI/FCMOV, transcendentals, MMX and its tag/TOP effects
//! (SDM Vol. 1 ch. 8–9; Vol. 3A §2.5).

mod common;

use common::*;
use iced_x86::code_asm::*;
use iced_x86::{Code, Instruction, MemoryOperand, Register};
use pcvm_core::cpu_state::cr;

const DATA: u32 = 0x4000;
const OUT: u32 = 0x5000;

fn run(
    setup: impl FnOnce(&Machine),
    code: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (Machine, pcvm_core::CpuState) {
    let mut m = pm32_machine(code);
    setup(&m);
    let s = m.run_to_halt();
    (m, s)
}

fn out_f64(m: &Machine, k: u32) -> f64 {
    f64::from_bits(m.read_u64(u64::from(OUT + 8 * k)))
}

fn f80(m: &Machine, addr: u32) -> (u16, u64) {
    (m.read_u16(u64::from(addr) + 8), m.read_u64(u64::from(addr)))
}

#[test]
fn arithmetic_conversions_and_constants() {
    let (m, s) = run(
        |m| {
            m.write_u64(u64::from(DATA), 1.5f64.to_bits());
            m.write_u64(u64::from(DATA + 8), 2.25f64.to_bits());
            m.write_u32(u64::from(DATA + 16), 7);
            m.write_u32(u64::from(DATA + 20), 0.1f32.to_bits());
            m.write(
                u64::from(DATA + 32),
                &[0x21, 0x43, 0x65, 0, 0, 0, 0, 0, 0, 0x80],
            );
        },
        |a| {
            a.finit()?;
            // (1.5 + 2.25) * 7 / 0.1f
            a.fld(qword_ptr(DATA))?;
            a.fadd(qword_ptr(DATA + 8))?;
            a.fimul(dword_ptr(DATA + 16))?;
            a.fdiv(dword_ptr(DATA + 20))?;
            a.fstp(qword_ptr(OUT))?;
            // sqrt(2) and π
            a.fld1()?;
            a.fld1()?;
            a.faddp(st1, st0)?;
            a.fsqrt()?;
            a.fstp(qword_ptr(OUT + 8))?;
            a.fldpi()?;
            a.fstp(tword_ptr(OUT + 16))?;
            // FIST with round to nearest: 2.5 → 2; FISTTP truncates -3.75 → -3.
            a.fld(qword_ptr(DATA))?;
            a.fld1()?;
            a.faddp(st1, st0)?;
            a.fistp(word_ptr(OUT + 32))?;
            a.fld(qword_ptr(DATA + 8))?;
            a.fadd(qword_ptr(DATA))?;
            a.fchs()?;
            a.fisttp(dword_ptr(OUT + 36))?;
            // BCD round trip: -654321 → ×2.
            a.fbld(tword_ptr(DATA + 32))?;
            a.fadd_2(st0, st0)?;
            a.fbstp(tword_ptr(OUT + 48))?;
            // Subtraction orders: 1.5 − 2.25 and 2.25 − 1.5 via FSUBR.
            a.fld(qword_ptr(DATA))?;
            a.fsub(qword_ptr(DATA + 8))?;
            a.fstp(qword_ptr(OUT + 64))?;
            a.fld(qword_ptr(DATA))?;
            a.fsubr(qword_ptr(DATA + 8))?;
            a.fstp(qword_ptr(OUT + 72))?;
            a.fnstsw(ax)?;
            a.hlt()
        },
    );
    let want = (1.5 + 2.25) * 7.0 / f64::from(0.1f32);
    assert_eq!(out_f64(&m, 0), want);
    assert_eq!(out_f64(&m, 1), std::f64::consts::SQRT_2);
    assert_eq!(f80(&m, OUT + 16), (0x4000, 0xC90F_DAA2_2168_C235));
    assert_eq!(m.read_u16(u64::from(OUT + 32)), 2);
    assert_eq!(
        m.read_u32(u64::from(OUT + 36)) as i32,
        -3,
        "FISTTP truncates -3.75"
    );
    let mut bcd = [0u8; 10];
    m.board
        .memory
        .read_phys(u64::from(OUT + 48), &mut bcd)
        .expect("read");
    assert_eq!(bcd, [0x42, 0x86, 0x30, 0x01, 0, 0, 0, 0, 0, 0x80]);
    assert_eq!(out_f64(&m, 8), -0.75);
    assert_eq!(out_f64(&m, 9), 0.75);
    let fsw = s.gpr[0] as u16;
    assert_eq!(fsw & 0x3800, 0, "stack balanced: TOP = 0");
    assert_eq!(fsw & 0x20, 0x20, "PE from 0.1f and √2");
    assert_eq!(s.fpu.ftw, 0, "all registers empty");
}

#[test]
fn precision_and_rounding_control() {
    let (m, _) = run(
        |m| {
            m.write_u16(u64::from(DATA), 0x007F); // PC = 24 bits
            m.write_u16(u64::from(DATA + 2), 0x027F); // PC = 53 bits
            m.write_u16(u64::from(DATA + 4), 0x0F7F); // RC = toward zero
            m.write_u16(u64::from(DATA + 6), 0x0B7F); // RC = up
            m.write_u32(u64::from(DATA + 8), 3);
        },
        |a| {
            a.finit()?;
            for (k, cw) in [0u32, 2, 4, 6].into_iter().enumerate() {
                a.fldcw(word_ptr(DATA + cw))?;
                a.fld1()?;
                a.fidiv(dword_ptr(DATA + 8))?;
                a.fstp(tword_ptr(OUT + 16 * k as u32))?;
            }
            // FLDPI rounded toward zero (RC still up from the last FLDCW → …C235).
            a.fldpi()?;
            a.fstp(tword_ptr(OUT + 64))?;
            a.fldcw(word_ptr(DATA + 4))?;
            a.fldpi()?;
            a.fstp(tword_ptr(OUT + 80))?;
            a.hlt()
        },
    );
    assert_eq!(f80(&m, OUT), (0x3FFD, 0xAAAA_AB00_0000_0000));
    assert_eq!(f80(&m, OUT + 16), (0x3FFD, 0xAAAA_AAAA_AAAA_A800));
    assert_eq!(f80(&m, OUT + 32), (0x3FFD, 0xAAAA_AAAA_AAAA_AAAA));
    assert_eq!(f80(&m, OUT + 48), (0x3FFD, 0xAAAA_AAAA_AAAA_AAAB));
    assert_eq!(f80(&m, OUT + 64), (0x4000, 0xC90F_DAA2_2168_C235));
    assert_eq!(f80(&m, OUT + 80), (0x4000, 0xC90F_DAA2_2168_C234));
}

#[test]
fn stack_overflow_and_underflow_masked_responses() {
    let (m, s) = run(
        |_| {},
        |a| {
            a.finit()?;
            for _ in 0..9 {
                a.fld1()?;
            }
            a.fnstsw(word_ptr(OUT))?;
            a.fstp(tword_ptr(OUT + 16))?;
            a.finit()?;
            // Underflow: FADD with an empty stack stores the indefinite in ST0... which is
            // empty, so the stack still has nothing to pop; FST then underflows too.
            a.fadd_2(st0, st1)?;
            a.fnstsw(word_ptr(OUT + 2))?;
            a.fstp(qword_ptr(OUT + 32))?;
            a.hlt()
        },
    );
    let fsw = m.read_u16(u64::from(OUT));
    assert_eq!(fsw & 0x0241, 0x0241, "IE | SF | C1 (overflow): {fsw:#x}");
    assert_eq!(f80(&m, OUT + 16), (0xFFFF, 0xC000_0000_0000_0000));
    let fsw2 = m.read_u16(u64::from(OUT + 2));
    assert_eq!(
        fsw2 & 0x0241,
        0x0041,
        "IE | SF, C1 = 0 (underflow): {fsw2:#x}"
    );
    assert_eq!(m.read_u64(u64::from(OUT + 32)), 0xFFF8_0000_0000_0000);
    assert_eq!(s.fpu.fsw & 0x80, 0, "masked: no ES");
}

#[test]
fn unmasked_exception_raises_mf_at_the_next_waiting_instruction() {
    let mut m = pm32_machine(|a| {
        a.finit()?;
        a.fldcw(word_ptr(DATA))?; // ZE unmasked
        a.fld1()?;
        a.fldz()?;
        a.fdivp(st1, st0)?; // 1/0: ZE pending, no result stored
        a.fnstsw(word_ptr(OUT))?; // non-waiting: no #MF
        a.nop()?;
        a.wait()?; // #MF here
        a.hlt()
    });
    m.write_u16(u64::from(DATA), 0x037B);
    let code = asm(32, CODE, |a| {
        a.finit()?;
        a.fldcw(word_ptr(DATA))?;
        a.fld1()?;
        a.fldz()?;
        a.fdivp(st1, st0)?;
        a.fnstsw(word_ptr(OUT))?;
        a.nop()?;
        Ok(())
    });
    let at = CODE + code.len() as u64;
    let s = m.run_to_halt();
    let (vector, _, _, frame) = m.recorded();
    assert_eq!(vector, 16, "#MF");
    assert_eq!(
        u64::from(m.read_u32(u64::from(frame))),
        at,
        "#MF reported at FWAIT"
    );
    let fsw = m.read_u16(u64::from(OUT));
    assert_eq!(fsw & 0x8084, 0x8084, "ZE | ES | B: {fsw:#x}");
    assert_eq!(s.fpu.ftw.count_ones(), 2, "the operands stay on the stack");
    // FIP/FOP point at the FDIVP (DE F9).
    assert_eq!(s.fpu.fop, 0x6F9);
    assert_eq!(s.fpu.fip >> 32, u64::from(SEL_CODE0));
}

#[test]
fn cr0_em_ts_mp_give_nm_and_ud() {
    for (cr0_bits, mmx, wait, want) in [
        (cr::CR0_TS, false, false, 7u32),
        (cr::CR0_EM, false, false, 7),
        (cr::CR0_EM, true, false, 6),
        (cr::CR0_TS, true, false, 7),
        (cr::CR0_TS, false, true, 0xEE),
        (cr::CR0_TS | cr::CR0_MP, false, true, 7),
    ] {
        let mut m = pm32_machine(|a| {
            if mmx {
                a.paddb(mm0, mm1)?;
            } else if wait {
                a.wait()?;
            } else {
                a.fld1()?;
            }
            a.mov(dword_ptr(RESULT as u32), 0xEEu32)?;
            a.hlt()
        });
        let mut s = m.state();
        s.cr0 |= cr0_bits;
        m.set_state(&s);
        m.run_to_halt();
        assert_eq!(
            m.recorded().0 & 0xFF,
            want,
            "cr0 {cr0_bits:#x} mmx {mmx} wait {wait}"
        );
    }
}

fn mem(addr: u32) -> MemoryOperand {
    MemoryOperand::with_base_displ(Register::None, i64::from(addr))
}

#[test]
fn fsave_frstor_and_fstenv_layouts() {
    let (m, s) = run(
        |m| m.write_u64(u64::from(DATA), 2.5f64.to_bits()),
        |a| {
            a.finit()?;
            a.fld1()?;
            a.fldz()?;
            a.fld(qword_ptr(DATA))?; // FDP = DATA, FOP = DD /0 = 0x505
            a.fnsave(ptr(OUT))?;
            a.fnstsw(word_ptr(OUT + 0x100))?; // after FNSAVE: initialized
            a.frstor(ptr(OUT))?;
            a.fnstenv(ptr(OUT + 0x200))?;
            // 16-bit protected-mode environment (operand-size prefix).
            a.add_instruction(Instruction::with1(Code::Fnstenv_m14byte, mem(OUT + 0x300))?)?;
            a.fstp(st0)?;
            a.hlt()
        },
    );
    let w = |k: u64| m.read_u32(u64::from(OUT) + 4 * k);
    assert_eq!(w(0) & 0xFFFF, 0x037F, "FCW");
    assert_eq!((w(1) >> 11) & 7, 5, "TOP = 5");
    // Physical 7 = 1.0 (valid), 6 = 0 (zero), 5 = 2.5 (valid), others empty.
    assert_eq!(w(2) & 0xFFFF, 0b00_01_00_11_11_11_11_11);
    assert_eq!(w(3), CODE as u32 + 7, "FIP = the FLD m64");
    assert_eq!(w(4) & 0xFFFF, u32::from(SEL_CODE0), "FCS");
    assert_eq!(w(4) >> 16, 0x505, "FOP of DD 05 (FLD m64, disp32)");
    assert_eq!(w(5), DATA, "FDP");
    assert_eq!(w(6) & 0xFFFF, u32::from(SEL_DATA0), "FDS");
    assert_eq!(
        f80(&m, OUT + 28),
        (0x4000, 0xA000_0000_0000_0000),
        "ST0 = 2.5"
    );
    assert_eq!(f80(&m, OUT + 38), (0, 0), "ST1 = 0");
    assert_eq!(f80(&m, OUT + 48), (0x3FFF, 1 << 63), "ST2 = 1");
    assert_eq!(
        m.read_u16(u64::from(OUT + 0x100)),
        0,
        "FNSAVE reinitializes"
    );
    // FRSTOR brought everything back; FNSTENV masks all exceptions afterwards.
    let e = |k: u64| m.read_u32(u64::from(OUT + 0x200) + 4 * k);
    assert_eq!((e(1) >> 11) & 7, 5);
    assert_eq!(e(2) & 0xFFFF, w(2) & 0xFFFF);
    assert_eq!(e(5), DATA);
    let h = |k: u64| m.read_u16(u64::from(OUT + 0x300) + 2 * k);
    assert_eq!(h(0), 0x037F);
    assert_eq!(h(2), (w(2) & 0xFFFF) as u16);
    assert_eq!(h(3), (CODE + 7) as u16);
    assert_eq!(h(4), SEL_CODE0);
    assert_eq!(h(5), DATA as u16);
    assert_eq!(h(6), SEL_DATA0);
    assert_eq!(s.fpu.ftw.count_ones(), 2);
}

#[test]
fn fcomi_fcmov_fxam_and_fcom() {
    let (m, s) = run(
        |m| m.write_u64(u64::from(DATA), (-0.0f64).to_bits()),
        |a| {
            a.finit()?;
            a.fld1()?; // ST1 = 1
            a.fldz()?; // ST0 = 0
            a.fcomi(st0, st1)?; // 0 < 1: CF = 1
            a.setb(byte_ptr(OUT))?;
            a.fcmovb(st0, st1)?; // ST0 = 1
            a.fcomi(st0, st1)?;
            a.sete(byte_ptr(OUT + 1))?;
            a.fcom(qword_ptr(DATA))?; // 1 > -0: C3 C2 C0 = 000
            a.fnstsw(word_ptr(OUT + 2))?;
            a.fld(qword_ptr(DATA))?;
            a.fxam()?; // -0: C3 = 1, C1 = 1 (sign)
            a.fnstsw(word_ptr(OUT + 4))?;
            a.fucompp()?; // -0 vs 1 → less (C0) and pop twice
            a.fnstsw(word_ptr(OUT + 6))?;
            a.fxam()?; // ST0 (1.0) remains: normal
            a.fnstsw(word_ptr(OUT + 8))?;
            a.hlt()
        },
    );
    assert_eq!(m.read_u16(u64::from(OUT)) & 0xFF, 1);
    assert_eq!(m.read_u16(u64::from(OUT)) >> 8, 1, "FCMOVB moved: equal");
    assert_eq!(m.read_u16(u64::from(OUT + 2)) & 0x4500, 0);
    assert_eq!(m.read_u16(u64::from(OUT + 4)) & 0x4700, 0x4200);
    assert_eq!(m.read_u16(u64::from(OUT + 6)) & 0x4500, 0x0100);
    assert_eq!(m.read_u16(u64::from(OUT + 8)) & 0x4700, 0x0400);
    assert_eq!(s.fpu.ftw.count_ones(), 1);
}

#[test]
fn transcendentals_and_remainders() {
    let (m, _) = run(
        |m| {
            m.write_u64(u64::from(DATA), 0.5f64.to_bits());
            m.write_u64(u64::from(DATA + 8), 10.0f64.to_bits());
            m.write_u64(u64::from(DATA + 16), 3.0f64.to_bits());
        },
        |a| {
            a.finit()?;
            a.fld(qword_ptr(DATA))?;
            a.fsincos()?;
            a.fstp(qword_ptr(OUT))?; // cos 0.5
            a.fstp(qword_ptr(OUT + 8))?; // sin 0.5
            a.fld(qword_ptr(DATA))?;
            a.fptan()?;
            a.fstp(qword_ptr(OUT + 16))?; // 1.0
            a.fstp(qword_ptr(OUT + 24))?; // tan 0.5
            a.fld1()?;
            a.fld(qword_ptr(DATA + 8))?;
            a.fyl2x()?;
            a.fstp(qword_ptr(OUT + 32))?; // log2 10
            a.fld(qword_ptr(DATA))?;
            a.f2xm1()?;
            a.fstp(qword_ptr(OUT + 40))?; // √2 − 1
            a.fld1()?;
            a.fld1()?;
            a.fpatan()?;
            a.fstp(qword_ptr(OUT + 48))?; // π/4
            a.fld(qword_ptr(DATA + 16))?;
            a.fld(qword_ptr(DATA + 8))?;
            a.fprem()?; // 10 mod 3 = 1, quotient 3 → C3 C1
            a.fnstsw(word_ptr(OUT + 56))?;
            a.fstp(qword_ptr(OUT + 64))?;
            a.fstp(st0)?;
            a.hlt()
        },
    );
    let close = |k: u32, want: f64| {
        let got = out_f64(&m, k);
        assert!(
            (got - want).abs() <= want.abs() * 2e-16,
            "{k}: {got} vs {want}"
        );
    };
    close(0, 0.5f64.cos());
    close(1, 0.5f64.sin());
    assert_eq!(out_f64(&m, 2), 1.0);
    close(3, 0.5f64.tan());
    close(4, 10f64.log2());
    close(5, 0.414_213_562_373_095_05);
    close(6, std::f64::consts::FRAC_PI_4);
    assert_eq!(m.read_u16(u64::from(OUT + 56)) & 0x4700, 0x4200);
    assert_eq!(out_f64(&m, 8), 1.0);
}

#[test]
fn mmx_arithmetic_and_x87_state_effects() {
    let (m, s) = run(
        |m| {
            m.write_u64(u64::from(DATA), 0x7FFF_8000_00FF_0001);
            m.write_u64(u64::from(DATA + 8), 0x0001_FFFF_0001_0001);
        },
        |a| {
            a.finit()?;
            a.fld1()?; // TOP = 7
            a.movq(mm0, qword_ptr(DATA))?;
            a.movq(mm1, mm0)?;
            a.paddsw(mm1, qword_ptr(DATA + 8))?;
            a.movq(qword_ptr(OUT), mm1)?;
            a.movq(mm2, mm0)?;
            a.pmaddwd(mm2, qword_ptr(DATA + 8))?;
            a.movq(qword_ptr(OUT + 8), mm2)?;
            a.movq(mm3, mm0)?;
            a.packsswb(mm3, mm3)?;
            a.movq(qword_ptr(OUT + 16), mm3)?;
            a.movq(mm4, mm0)?;
            a.psrlq(mm4, 40)?;
            a.movd(eax, mm4)?;
            a.mov(dword_ptr(OUT + 24), eax)?;
            a.pcmpgtw(mm0, qword_ptr(DATA + 8))?;
            a.movq(qword_ptr(OUT + 32), mm0)?;
            a.mov(ecx, 0x8081_8283u32)?;
            a.movd(mm5, ecx)?;
            a.punpcklbw(mm5, mm5)?;
            a.movq(qword_ptr(OUT + 40), mm5)?;
            a.fnstenv(ptr(OUT + 0x100))?;
            a.emms()?;
            a.fnstenv(ptr(OUT + 0x200))?;
            a.hlt()
        },
    );
    assert_eq!(
        m.read_u64(u64::from(OUT)),
        0x7FFF_8000_0100_0002,
        "PADDSW saturates"
    );
    // PMADDWD: (0x00FF·1 + 0x0001·1), (0x7FFF·1 + (−0x8000)·(−1)).
    assert_eq!(m.read_u64(u64::from(OUT + 8)), 0x0000_FFFF_0000_0100);
    assert_eq!(m.read_u64(u64::from(OUT + 16)), 0x7F80_7F01_7F80_7F01);
    assert_eq!(m.read_u32(u64::from(OUT + 24)), 0x7F_FF80);
    assert_eq!(m.read_u64(u64::from(OUT + 32)), 0xFFFF_0000_FFFF_0000);
    assert_eq!(m.read_u64(u64::from(OUT + 40)), 0x8080_8181_8282_8383);
    let env = |base: u32, k: u64| m.read_u32(u64::from(base) + 4 * k);
    assert_eq!((env(OUT + 0x100, 1) >> 11) & 7, 0, "MMX sets TOP = 0");
    // Physical 7 = 1.0 (valid), 6 untouched zero, 0–5 MMX-written (exponent ones: special).
    assert_eq!(
        env(OUT + 0x100, 2) & 0xFFFF,
        0x1AAA,
        "all tags valid after MMX"
    );
    assert_eq!(env(OUT + 0x200, 2) & 0xFFFF, 0xFFFF, "EMMS empties all");
    assert_eq!(
        s.fpu.st[1][8..10],
        [0xFF, 0xFF],
        "MMX writes set the exponent to ones"
    );
}
