//! SSE (Pentium III) families: packed/scalar single precision, compares, conversions, moves,
//! logic (SDM Vol. 1 §10.4).

use super::gen::{family, op, Form::*, Imm, Mxcsr, OpSpec, Vals::*};
use super::SimdFamily;

const ARITH: &[OpSpec] = &[
    op("addps", &[0x0F, 0x58], XmmRm, 16, Imm::None, F32),
    op("mulps", &[0x0F, 0x59], XmmRm, 16, Imm::None, F32),
    op("subps", &[0x0F, 0x5C], XmmRm, 16, Imm::None, F32),
    op("minps", &[0x0F, 0x5D], XmmRm, 16, Imm::None, F32),
    op("divps", &[0x0F, 0x5E], XmmRm, 16, Imm::None, F32),
    op("maxps", &[0x0F, 0x5F], XmmRm, 16, Imm::None, F32),
    op("sqrtps", &[0x0F, 0x51], XmmRm, 16, Imm::None, F32),
    op("addss", &[0xF3, 0x0F, 0x58], XmmRm, 4, Imm::None, F32),
    op("mulss", &[0xF3, 0x0F, 0x59], XmmRm, 4, Imm::None, F32),
    op("subss", &[0xF3, 0x0F, 0x5C], XmmRm, 4, Imm::None, F32),
    op("minss", &[0xF3, 0x0F, 0x5D], XmmRm, 4, Imm::None, F32),
    op("divss", &[0xF3, 0x0F, 0x5E], XmmRm, 4, Imm::None, F32),
    op("maxss", &[0xF3, 0x0F, 0x5F], XmmRm, 4, Imm::None, F32),
    op("sqrtss", &[0xF3, 0x0F, 0x51], XmmRm, 4, Imm::None, F32),
];

const COMPARE_CONVERT: &[OpSpec] = &[
    OpSpec {
        mem_only: true,
        ..op("cvtpi2ps", &[0x0F, 0x2A], XmmRm, 8, Imm::None, Int)
    },
    op("cmpps", &[0x0F, 0xC2], XmmRm, 16, Imm::Pred, F32),
    op("cmpss", &[0xF3, 0x0F, 0xC2], XmmRm, 4, Imm::Pred, F32),
    op("comiss", &[0x0F, 0x2F], XmmRm, 4, Imm::None, F32),
    op("ucomiss", &[0x0F, 0x2E], XmmRm, 4, Imm::None, F32),
    op("cvtsi2ss", &[0xF3, 0x0F, 0x2A], XmmGpr, 4, Imm::None, F32),
    op("cvtss2si", &[0xF3, 0x0F, 0x2D], GprXmm, 4, Imm::None, F32),
    op("cvttss2si", &[0xF3, 0x0F, 0x2C], GprXmm, 4, Imm::None, F32),
];

const MOVE_LOGIC: &[OpSpec] = &[
    op("movaps", &[0x0F, 0x28], XmmRm, 16, Imm::None, F32),
    op("movaps-st", &[0x0F, 0x29], Store, 16, Imm::None, F32),
    op("movups", &[0x0F, 0x10], XmmRm, 16, Imm::None, F32),
    op("movups-st", &[0x0F, 0x11], Store, 16, Imm::None, F32),
    op("movss", &[0xF3, 0x0F, 0x10], XmmRm, 4, Imm::None, F32),
    op("movss-st", &[0xF3, 0x0F, 0x11], Store, 4, Imm::None, F32),
    op("movhlps/movlps", &[0x0F, 0x12], XmmRm, 8, Imm::None, F32),
    op("movhps/movlhps", &[0x0F, 0x16], XmmRm, 8, Imm::None, F32),
    OpSpec {
        mem_only: true,
        ..op("movlps-st", &[0x0F, 0x13], Store, 8, Imm::None, F32)
    },
    OpSpec {
        mem_only: true,
        ..op("movhps-st", &[0x0F, 0x17], Store, 8, Imm::None, F32)
    },
    OpSpec {
        mem_only: true,
        ..op("movntps", &[0x0F, 0x2B], Store, 16, Imm::None, F32)
    },
    op("movmskps", &[0x0F, 0x50], GprXmm, 0, Imm::None, F32),
    op("andps", &[0x0F, 0x54], XmmRm, 16, Imm::None, Int),
    op("andnps", &[0x0F, 0x55], XmmRm, 16, Imm::None, Int),
    op("orps", &[0x0F, 0x56], XmmRm, 16, Imm::None, Int),
    op("xorps", &[0x0F, 0x57], XmmRm, 16, Imm::None, Int),
    op("shufps", &[0x0F, 0xC6], XmmRm, 16, Imm::Any, Int),
    op("unpcklps", &[0x0F, 0x14], XmmRm, 16, Imm::None, Int),
    op("unpckhps", &[0x0F, 0x15], XmmRm, 16, Imm::None, Int),
];

/// Every instruction table of this module.
pub fn tables() -> Vec<&'static [OpSpec]> {
    vec![ARITH, COMPARE_CONVERT, MOVE_LOGIC]
}

pub fn families() -> Vec<SimdFamily> {
    vec![
        family("sse-arith", ARITH, Mxcsr::Usual),
        family("sse-arith-mxcsr", ARITH, Mxcsr::Any),
        family("sse-cmp-cvt", COMPARE_CONVERT, Mxcsr::Usual),
        family("sse-cmp-cvt-mxcsr", COMPARE_CONVERT, Mxcsr::Any),
        family("sse-move-logic", MOVE_LOGIC, Mxcsr::Usual),
    ]
}
