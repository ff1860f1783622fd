//! SSE4.2 families: PCMPGTQ, the string compares, CRC32 (SDM Vol. 1 §12.12).

use super::gen::{family, op, Form::*, Imm, Mxcsr, OpSpec, Vals::*};
use super::SimdFamily;

const ALL: &[OpSpec] = &[
    op(
        "pcmpgtq",
        &[0x66, 0x0F, 0x38, 0x37],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "pcmpestrm",
        &[0x66, 0x0F, 0x3A, 0x60],
        XmmRm,
        16,
        Imm::Any,
        Int,
    ),
    op(
        "pcmpestri",
        &[0x66, 0x0F, 0x3A, 0x61],
        XmmRm,
        16,
        Imm::Any,
        Int,
    ),
    op(
        "pcmpistrm",
        &[0x66, 0x0F, 0x3A, 0x62],
        XmmRm,
        16,
        Imm::Any,
        Int,
    ),
    op(
        "pcmpistri",
        &[0x66, 0x0F, 0x3A, 0x63],
        XmmRm,
        16,
        Imm::Any,
        Int,
    ),
    op(
        "crc32-8",
        &[0xF2, 0x0F, 0x38, 0xF0],
        GprRm,
        1,
        Imm::None,
        Int,
    ),
    op(
        "crc32-16",
        &[0x66, 0xF2, 0x0F, 0x38, 0xF1],
        GprRm,
        2,
        Imm::None,
        Int,
    ),
    op(
        "crc32-32",
        &[0xF2, 0x0F, 0x38, 0xF1],
        GprRm,
        4,
        Imm::None,
        Int,
    ),
];

/// Every instruction table of this module.
pub fn tables() -> Vec<&'static [OpSpec]> {
    vec![ALL]
}

pub fn families() -> Vec<SimdFamily> {
    vec![family("sse42", ALL, Mxcsr::Usual)]
}
