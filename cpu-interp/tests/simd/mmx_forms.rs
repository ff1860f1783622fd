//! SSE, SSE2 and SSSE3 instructions on MMX registers (SDM Vol. 1 §10.4.4, §11.4.2, §12.9):
//! they also put the x87 unit into MMX state (TOP = 0, all tags valid), which the compared
//! FXSAVE image shows.

use super::gen::{family, op, Form::*, Imm, Mxcsr, OpSpec, Vals::*};
use super::SimdFamily;

const ALL: &[OpSpec] = &[
    op("pavgb", &[0x0F, 0xE0], XmmRm, 8, Imm::None, Mmx),
    op("pavgw", &[0x0F, 0xE3], XmmRm, 8, Imm::None, Mmx),
    op("pmaxsw", &[0x0F, 0xEE], XmmRm, 8, Imm::None, Mmx),
    op("pmaxub", &[0x0F, 0xDE], XmmRm, 8, Imm::None, Mmx),
    op("pminsw", &[0x0F, 0xEA], XmmRm, 8, Imm::None, Mmx),
    op("pminub", &[0x0F, 0xDA], XmmRm, 8, Imm::None, Mmx),
    op("pmulhuw", &[0x0F, 0xE4], XmmRm, 8, Imm::None, Mmx),
    op("psadbw", &[0x0F, 0xF6], XmmRm, 8, Imm::None, Mmx),
    op("pshufw", &[0x0F, 0x70], XmmRm, 8, Imm::Any, Mmx),
    op("pextrw", &[0x0F, 0xC5], GprXmm, 0, Imm::Any, Mmx),
    op("pinsrw", &[0x0F, 0xC4], XmmGpr, 2, Imm::Any, Mmx),
    op("pmovmskb", &[0x0F, 0xD7], GprXmm, 0, Imm::None, Mmx),
    OpSpec {
        mem_only: true,
        ..op("movntq", &[0x0F, 0xE7], Store, 8, Imm::None, Mmx)
    },
    op("cvtpi2ps", &[0x0F, 0x2A], XmmRm, 0, Imm::None, Mmx),
    op("cvtps2pi", &[0x0F, 0x2D], XmmRm, 8, Imm::None, F32),
    op("cvttps2pi", &[0x0F, 0x2C], XmmRm, 8, Imm::None, F32),
    op("cvtpi2pd", &[0x66, 0x0F, 0x2A], XmmRm, 0, Imm::None, Mmx),
    op("cvtpd2pi", &[0x66, 0x0F, 0x2D], XmmRm, 16, Imm::None, F64),
    op("cvttpd2pi", &[0x66, 0x0F, 0x2C], XmmRm, 16, Imm::None, F64),
    op("paddq", &[0x0F, 0xD4], XmmRm, 8, Imm::None, Mmx),
    op("psubq", &[0x0F, 0xFB], XmmRm, 8, Imm::None, Mmx),
    op("pmuludq", &[0x0F, 0xF4], XmmRm, 8, Imm::None, Mmx),
    op("movdq2q", &[0xF2, 0x0F, 0xD6], XmmRm, 0, Imm::None, Mmx),
    op("movq2dq", &[0xF3, 0x0F, 0xD6], XmmRm, 0, Imm::None, Mmx),
    op("pshufb", &[0x0F, 0x38, 0x00], XmmRm, 8, Imm::None, Mmx),
    op("phaddw", &[0x0F, 0x38, 0x01], XmmRm, 8, Imm::None, Mmx),
    op("phaddd", &[0x0F, 0x38, 0x02], XmmRm, 8, Imm::None, Mmx),
    op("phaddsw", &[0x0F, 0x38, 0x03], XmmRm, 8, Imm::None, Mmx),
    op("pmaddubsw", &[0x0F, 0x38, 0x04], XmmRm, 8, Imm::None, Mmx),
    op("phsubw", &[0x0F, 0x38, 0x05], XmmRm, 8, Imm::None, Mmx),
    op("phsubd", &[0x0F, 0x38, 0x06], XmmRm, 8, Imm::None, Mmx),
    op("phsubsw", &[0x0F, 0x38, 0x07], XmmRm, 8, Imm::None, Mmx),
    op("psignb", &[0x0F, 0x38, 0x08], XmmRm, 8, Imm::None, Mmx),
    op("psignw", &[0x0F, 0x38, 0x09], XmmRm, 8, Imm::None, Mmx),
    op("psignd", &[0x0F, 0x38, 0x0A], XmmRm, 8, Imm::None, Mmx),
    op("pmulhrsw", &[0x0F, 0x38, 0x0B], XmmRm, 8, Imm::None, Mmx),
    op("pabsb", &[0x0F, 0x38, 0x1C], XmmRm, 8, Imm::None, Mmx),
    op("pabsw", &[0x0F, 0x38, 0x1D], XmmRm, 8, Imm::None, Mmx),
    op("pabsd", &[0x0F, 0x38, 0x1E], XmmRm, 8, Imm::None, Mmx),
    op("palignr", &[0x0F, 0x3A, 0x0F], XmmRm, 8, Imm::Any, Mmx),
];

/// Every instruction table of this module.
pub fn tables() -> Vec<&'static [OpSpec]> {
    vec![ALL]
}

pub fn families() -> Vec<SimdFamily> {
    vec![
        family("sse-on-mmx", ALL, Mxcsr::Usual),
        family("sse-on-mmx-mxcsr", ALL, Mxcsr::Any),
    ]
}
