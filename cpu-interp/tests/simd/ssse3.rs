//! SSSE3 families (SDM Vol. 1 §12.9).

use super::gen::{family, op, Form::*, Imm, Mxcsr, OpSpec, Vals::*};
use super::SimdFamily;

const ALL: &[OpSpec] = &[
    op(
        "pshufb",
        &[0x66, 0x0F, 0x38, 0x00],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "phaddw",
        &[0x66, 0x0F, 0x38, 0x01],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "phaddd",
        &[0x66, 0x0F, 0x38, 0x02],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "phaddsw",
        &[0x66, 0x0F, 0x38, 0x03],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "pmaddubsw",
        &[0x66, 0x0F, 0x38, 0x04],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "phsubw",
        &[0x66, 0x0F, 0x38, 0x05],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "phsubd",
        &[0x66, 0x0F, 0x38, 0x06],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "phsubsw",
        &[0x66, 0x0F, 0x38, 0x07],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "psignb",
        &[0x66, 0x0F, 0x38, 0x08],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "psignw",
        &[0x66, 0x0F, 0x38, 0x09],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "psignd",
        &[0x66, 0x0F, 0x38, 0x0A],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "pmulhrsw",
        &[0x66, 0x0F, 0x38, 0x0B],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "pabsb",
        &[0x66, 0x0F, 0x38, 0x1C],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "pabsw",
        &[0x66, 0x0F, 0x38, 0x1D],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "pabsd",
        &[0x66, 0x0F, 0x38, 0x1E],
        XmmRm,
        16,
        Imm::None,
        Int,
    ),
    op(
        "palignr",
        &[0x66, 0x0F, 0x3A, 0x0F],
        XmmRm,
        16,
        Imm::Any,
        Int,
    ),
];

/// Every instruction table of this module.
pub fn tables() -> Vec<&'static [OpSpec]> {
    vec![ALL]
}

pub fn families() -> Vec<SimdFamily> {
    vec![family("ssse3", ALL, Mxcsr::Usual)]
}
