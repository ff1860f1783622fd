//! SSE3 families (SDM Vol. 1 §12.4).

use super::gen::{family, op, Form::*, Imm, Mxcsr, OpSpec, Vals::*};
use super::SimdFamily;

const ALL: &[OpSpec] = &[
    op("addsubps", &[0xF2, 0x0F, 0xD0], XmmRm, 16, Imm::None, F32),
    op("addsubpd", &[0x66, 0x0F, 0xD0], XmmRm, 16, Imm::None, F64),
    op("haddps", &[0xF2, 0x0F, 0x7C], XmmRm, 16, Imm::None, F32),
    op("haddpd", &[0x66, 0x0F, 0x7C], XmmRm, 16, Imm::None, F64),
    op("hsubps", &[0xF2, 0x0F, 0x7D], XmmRm, 16, Imm::None, F32),
    op("hsubpd", &[0x66, 0x0F, 0x7D], XmmRm, 16, Imm::None, F64),
    op("movddup", &[0xF2, 0x0F, 0x12], XmmRm, 8, Imm::None, F64),
    op("movshdup", &[0xF3, 0x0F, 0x16], XmmRm, 16, Imm::None, F32),
    op("movsldup", &[0xF3, 0x0F, 0x12], XmmRm, 16, Imm::None, F32),
    OpSpec {
        mem_only: true,
        ..op("lddqu", &[0xF2, 0x0F, 0xF0], XmmRm, 16, Imm::None, Int)
    },
];

/// Every instruction table of this module.
pub fn tables() -> Vec<&'static [OpSpec]> {
    vec![ALL]
}

pub fn families() -> Vec<SimdFamily> {
    vec![
        family("sse3", ALL, Mxcsr::Usual),
        family("sse3-mxcsr", ALL, Mxcsr::Any),
    ]
}
