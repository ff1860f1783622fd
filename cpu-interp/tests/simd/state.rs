//! State management families: LDMXCSR/STMXCSR, FXSAVE/FXRSTOR, XSAVE/XRSTOR (SDM Vol. 1
//! §10.5, §13). Sequences address the area through EBX; the MXCSR_MASK field a save writes
//! is overwritten afterwards because it is model-specific (AMD reports misaligned-SSE mode).

use super::super::diff::prng::Rng;
use super::super::diff::DATA_BASE;
use super::gen::{base_case, fx_image, mxcsr_val, xmm_val, Mxcsr, Vals};
use super::{SimdCase, SimdFamily};

const EBX: usize = 3;

/// Random state, EBX at a data offset aligned to `align` (sometimes not).
fn setup(rng: &mut Rng, align: u32) -> (super::super::diff::Case, Box<[u8; 512]>) {
    let mut c = base_case(rng);
    c.allow_64 = false; // 64-bit mode saves XMM8–15 and uses the 64-bit FIP/FDP format
    let mut off = rng.below(0x900) & !(align - 1);
    if rng.chance(1, 10) {
        off += rng.range(1, align - 1);
    }
    c.regs[EBX] = DATA_BASE as u32 + off;
    let mut xmm = [0u128; 16];
    for x in &mut xmm {
        *x = if rng.chance(1, 8) {
            0
        } else {
            xmm_val(rng, Vals::Int)
        };
    }
    let mx = if rng.chance(1, 4) {
        0x1F80
    } else {
        mxcsr_val(rng, Mxcsr::Any)
    };
    (c, fx_image(mx, &xmm))
}

/// `mov dword [ebx+disp32], imm32`.
fn store_imm(code: &mut Vec<u8>, disp: u32, imm: u32) {
    code.extend_from_slice(&[0xC7, 0x83]);
    code.extend_from_slice(&disp.to_le_bytes());
    code.extend_from_slice(&imm.to_le_bytes());
}

/// An MXCSR value for a load: valid, sometimes with reserved bits (#GP). Bits 16–17 are
/// left alone: AMD processors implement bit 17 (misaligned SSE mode).
fn new_mxcsr(rng: &mut Rng) -> u32 {
    let m = mxcsr_val(rng, Mxcsr::Any) | (rng.u32() & 0x3F);
    if rng.chance(1, 10) {
        m | (1 << rng.range(18, 31))
    } else {
        m
    }
}

/// LDMXCSR/STMXCSR, followed by an arithmetic instruction that uses the new mode.
fn mxcsr(rng: &mut Rng) -> SimdCase {
    let (mut c, fx) = setup(rng, 4);
    let m = new_mxcsr(rng);
    if rng.chance(1, 3) {
        c.code.extend_from_slice(&[0x0F, 0xAE, 0x1B]); // stmxcsr [ebx]
    } else {
        store_imm(&mut c.code, 0, m);
        c.code.extend_from_slice(&[0x0F, 0xAE, 0x13]); // ldmxcsr [ebx]
                                                       // addps/mulps/divps/sqrtps xmm0, xmm1
        let op = rng.pick(&[0x58u8, 0x59, 0x5E, 0x51]);
        c.code.extend_from_slice(&[0x0F, op, 0xC1]);
        c.code.extend_from_slice(&[0x0F, 0xAE, 0x1B]); // stmxcsr [ebx]
    }
    SimdCase { case: c, fx }
}

/// FXSAVE, or FXSAVE + changes + FXRSTOR.
fn fxsave(rng: &mut Rng) -> SimdCase {
    let (mut c, fx) = setup(rng, 16);
    c.code.extend_from_slice(&[0x0F, 0xAE, 0x03]); // fxsave [ebx]
    store_imm(&mut c.code, 28, 0);
    if rng.chance(2, 3) {
        for _ in 0..rng.range(0, 4) {
            let at = 160 + 4 * rng.below(64);
            store_imm(&mut c.code, at, rng.u32());
        }
        if rng.chance(1, 2) {
            store_imm(&mut c.code, 24, new_mxcsr(rng));
        }
        c.code.extend_from_slice(&[0x0F, 0xAE, 0x0B]); // fxrstor [ebx]
    }
    SimdCase { case: c, fx }
}

/// XSAVE with a random request mask in EDX:EAX, or XSAVE + changes + XRSTOR.
fn xsave(rng: &mut Rng) -> SimdCase {
    let (mut c, fx) = setup(rng, 64);
    c.regs[0] = rng.below(4);
    c.regs[2] = 0;
    c.code.extend_from_slice(&[0x0F, 0xAE, 0x23]); // xsave [ebx]
    store_imm(&mut c.code, 28, 0);
    if rng.chance(2, 3) {
        for _ in 0..rng.range(0, 4) {
            let at = 160 + 4 * rng.below(64);
            store_imm(&mut c.code, at, rng.u32());
        }
        if rng.chance(1, 2) {
            store_imm(&mut c.code, 24, new_mxcsr(rng));
        }
        if rng.chance(7, 8) {
            // A valid header (random memory has reserved bits set): XSTATE_BV says which
            // components come from memory, the others are initialized.
            store_imm(&mut c.code, 512, rng.below(4));
            for at in (516..536).step_by(4) {
                store_imm(&mut c.code, at, 0);
            }
        }
        if rng.chance(1, 2) {
            // mov eax, imm32: the restore mask.
            c.code.push(0xB8);
            c.code.extend_from_slice(&rng.below(4).to_le_bytes());
        }
        c.code.extend_from_slice(&[0x0F, 0xAE, 0x2B]); // xrstor [ebx]
    }
    SimdCase { case: c, fx }
}

pub fn families() -> Vec<SimdFamily> {
    vec![
        SimdFamily {
            name: "ldmxcsr-stmxcsr",
            gen: Box::new(mxcsr),
        },
        SimdFamily {
            name: "fxsave-fxrstor",
            gen: Box::new(fxsave),
        },
        SimdFamily {
            name: "xsave-xrstor",
            gen: Box::new(xsave),
        },
    ]
}
