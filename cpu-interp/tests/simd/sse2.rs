//! SSE2 families: packed/scalar double precision, conversions, 128-bit integer operations,
//! moves (SDM Vol. 1 §11.4).

use super::gen::{family, op, Form::*, Imm, Mxcsr, OpSpec, Vals::*};
use super::SimdFamily;

const ARITH: &[OpSpec] = &[
    op("addpd", &[0x66, 0x0F, 0x58], XmmRm, 16, Imm::None, F64),
    op("mulpd", &[0x66, 0x0F, 0x59], XmmRm, 16, Imm::None, F64),
    op("subpd", &[0x66, 0x0F, 0x5C], XmmRm, 16, Imm::None, F64),
    op("minpd", &[0x66, 0x0F, 0x5D], XmmRm, 16, Imm::None, F64),
    op("divpd", &[0x66, 0x0F, 0x5E], XmmRm, 16, Imm::None, F64),
    op("maxpd", &[0x66, 0x0F, 0x5F], XmmRm, 16, Imm::None, F64),
    op("sqrtpd", &[0x66, 0x0F, 0x51], XmmRm, 16, Imm::None, F64),
    op("addsd", &[0xF2, 0x0F, 0x58], XmmRm, 8, Imm::None, F64),
    op("mulsd", &[0xF2, 0x0F, 0x59], XmmRm, 8, Imm::None, F64),
    op("subsd", &[0xF2, 0x0F, 0x5C], XmmRm, 8, Imm::None, F64),
    op("minsd", &[0xF2, 0x0F, 0x5D], XmmRm, 8, Imm::None, F64),
    op("divsd", &[0xF2, 0x0F, 0x5E], XmmRm, 8, Imm::None, F64),
    op("maxsd", &[0xF2, 0x0F, 0x5F], XmmRm, 8, Imm::None, F64),
    op("sqrtsd", &[0xF2, 0x0F, 0x51], XmmRm, 8, Imm::None, F64),
];

const COMPARE_CONVERT: &[OpSpec] = &[
    OpSpec {
        mem_only: true,
        ..op("cvtpi2pd", &[0x66, 0x0F, 0x2A], XmmRm, 8, Imm::None, Int)
    },
    op("cmppd", &[0x66, 0x0F, 0xC2], XmmRm, 16, Imm::Pred, F64),
    op("cmpsd", &[0xF2, 0x0F, 0xC2], XmmRm, 8, Imm::Pred, F64),
    op("comisd", &[0x66, 0x0F, 0x2F], XmmRm, 8, Imm::None, F64),
    op("ucomisd", &[0x66, 0x0F, 0x2E], XmmRm, 8, Imm::None, F64),
    op("cvtsi2sd", &[0xF2, 0x0F, 0x2A], XmmGpr, 4, Imm::None, F64),
    op("cvtsd2si", &[0xF2, 0x0F, 0x2D], GprXmm, 8, Imm::None, F64),
    op("cvttsd2si", &[0xF2, 0x0F, 0x2C], GprXmm, 8, Imm::None, F64),
    op("cvtsd2ss", &[0xF2, 0x0F, 0x5A], XmmRm, 8, Imm::None, F64),
    op("cvtss2sd", &[0xF3, 0x0F, 0x5A], XmmRm, 4, Imm::None, F32),
    op("cvtps2pd", &[0x0F, 0x5A], XmmRm, 8, Imm::None, F32),
    op("cvtpd2ps", &[0x66, 0x0F, 0x5A], XmmRm, 16, Imm::None, F64),
    op("cvtdq2ps", &[0x0F, 0x5B], XmmRm, 16, Imm::None, Int),
    op("cvtps2dq", &[0x66, 0x0F, 0x5B], XmmRm, 16, Imm::None, F32),
    op("cvttps2dq", &[0xF3, 0x0F, 0x5B], XmmRm, 16, Imm::None, F32),
    op("cvtdq2pd", &[0xF3, 0x0F, 0xE6], XmmRm, 8, Imm::None, Int),
    op("cvtpd2dq", &[0xF2, 0x0F, 0xE6], XmmRm, 16, Imm::None, F64),
    op("cvttpd2dq", &[0x66, 0x0F, 0xE6], XmmRm, 16, Imm::None, F64),
];

const MOVE_LOGIC: &[OpSpec] = &[
    op("movapd", &[0x66, 0x0F, 0x28], XmmRm, 16, Imm::None, F64),
    op("movapd-st", &[0x66, 0x0F, 0x29], Store, 16, Imm::None, F64),
    op("movupd", &[0x66, 0x0F, 0x10], XmmRm, 16, Imm::None, F64),
    op("movupd-st", &[0x66, 0x0F, 0x11], Store, 16, Imm::None, F64),
    op("movsd", &[0xF2, 0x0F, 0x10], XmmRm, 8, Imm::None, F64),
    op("movsd-st", &[0xF2, 0x0F, 0x11], Store, 8, Imm::None, F64),
    OpSpec {
        mem_only: true,
        ..op("movlpd", &[0x66, 0x0F, 0x12], XmmRm, 8, Imm::None, F64)
    },
    OpSpec {
        mem_only: true,
        ..op("movhpd", &[0x66, 0x0F, 0x16], XmmRm, 8, Imm::None, F64)
    },
    OpSpec {
        mem_only: true,
        ..op("movlpd-st", &[0x66, 0x0F, 0x13], Store, 8, Imm::None, F64)
    },
    OpSpec {
        mem_only: true,
        ..op("movhpd-st", &[0x66, 0x0F, 0x17], Store, 8, Imm::None, F64)
    },
    OpSpec {
        mem_only: true,
        ..op("movntpd", &[0x66, 0x0F, 0x2B], Store, 16, Imm::None, F64)
    },
    OpSpec {
        mem_only: true,
        ..op("movntdq", &[0x66, 0x0F, 0xE7], Store, 16, Imm::None, Int)
    },
    op("movmskpd", &[0x66, 0x0F, 0x50], GprXmm, 0, Imm::None, F64),
    op("andpd", &[0x66, 0x0F, 0x54], XmmRm, 16, Imm::None, Int),
    op("andnpd", &[0x66, 0x0F, 0x55], XmmRm, 16, Imm::None, Int),
    op("orpd", &[0x66, 0x0F, 0x56], XmmRm, 16, Imm::None, Int),
    op("xorpd", &[0x66, 0x0F, 0x57], XmmRm, 16, Imm::None, Int),
    op("shufpd", &[0x66, 0x0F, 0xC6], XmmRm, 16, Imm::Any, Int),
    op("unpcklpd", &[0x66, 0x0F, 0x14], XmmRm, 16, Imm::None, Int),
    op("unpckhpd", &[0x66, 0x0F, 0x15], XmmRm, 16, Imm::None, Int),
    op("movdqa", &[0x66, 0x0F, 0x6F], XmmRm, 16, Imm::None, Int),
    op("movdqa-st", &[0x66, 0x0F, 0x7F], Store, 16, Imm::None, Int),
    op("movdqu", &[0xF3, 0x0F, 0x6F], XmmRm, 16, Imm::None, Int),
    op("movdqu-st", &[0xF3, 0x0F, 0x7F], Store, 16, Imm::None, Int),
    op(
        "movd-to-xmm",
        &[0x66, 0x0F, 0x6E],
        XmmGpr,
        4,
        Imm::None,
        Int,
    ),
    op(
        "movd-from-xmm",
        &[0x66, 0x0F, 0x7E],
        GprStore,
        4,
        Imm::None,
        Int,
    ),
    op("movq-load", &[0xF3, 0x0F, 0x7E], XmmRm, 8, Imm::None, Int),
    op("movq-st", &[0x66, 0x0F, 0xD6], Store, 8, Imm::None, Int),
    op("pmovmskb", &[0x66, 0x0F, 0xD7], GprXmm, 0, Imm::None, Int),
    op("pextrw", &[0x66, 0x0F, 0xC5], GprXmm, 0, Imm::Any, Int),
    op("pinsrw", &[0x66, 0x0F, 0xC4], XmmGpr, 2, Imm::Any, Int),
    OpSpec {
        mem_only: true,
        ..op("movnti", &[0x0F, 0xC3], GprRm, 4, Imm::None, Int)
    },
];

const INT_ARITH: &[OpSpec] = &[
    op("paddb", &[0x66, 0x0F, 0xFC], XmmRm, 16, Imm::None, Int),
    op("paddw", &[0x66, 0x0F, 0xFD], XmmRm, 16, Imm::None, Int),
    op("paddd", &[0x66, 0x0F, 0xFE], XmmRm, 16, Imm::None, Int),
    op("paddq", &[0x66, 0x0F, 0xD4], XmmRm, 16, Imm::None, Int),
    op("psubb", &[0x66, 0x0F, 0xF8], XmmRm, 16, Imm::None, Int),
    op("psubw", &[0x66, 0x0F, 0xF9], XmmRm, 16, Imm::None, Int),
    op("psubd", &[0x66, 0x0F, 0xFA], XmmRm, 16, Imm::None, Int),
    op("psubq", &[0x66, 0x0F, 0xFB], XmmRm, 16, Imm::None, Int),
    op("paddsb", &[0x66, 0x0F, 0xEC], XmmRm, 16, Imm::None, Int),
    op("paddsw", &[0x66, 0x0F, 0xED], XmmRm, 16, Imm::None, Int),
    op("paddusb", &[0x66, 0x0F, 0xDC], XmmRm, 16, Imm::None, Int),
    op("paddusw", &[0x66, 0x0F, 0xDD], XmmRm, 16, Imm::None, Int),
    op("psubsb", &[0x66, 0x0F, 0xE8], XmmRm, 16, Imm::None, Int),
    op("psubsw", &[0x66, 0x0F, 0xE9], XmmRm, 16, Imm::None, Int),
    op("psubusb", &[0x66, 0x0F, 0xD8], XmmRm, 16, Imm::None, Int),
    op("psubusw", &[0x66, 0x0F, 0xD9], XmmRm, 16, Imm::None, Int),
    op("pcmpeqb", &[0x66, 0x0F, 0x74], XmmRm, 16, Imm::None, Int),
    op("pcmpeqw", &[0x66, 0x0F, 0x75], XmmRm, 16, Imm::None, Int),
    op("pcmpeqd", &[0x66, 0x0F, 0x76], XmmRm, 16, Imm::None, Int),
    op("pcmpgtb", &[0x66, 0x0F, 0x64], XmmRm, 16, Imm::None, Int),
    op("pcmpgtw", &[0x66, 0x0F, 0x65], XmmRm, 16, Imm::None, Int),
    op("pcmpgtd", &[0x66, 0x0F, 0x66], XmmRm, 16, Imm::None, Int),
    op("pminub", &[0x66, 0x0F, 0xDA], XmmRm, 16, Imm::None, Int),
    op("pmaxub", &[0x66, 0x0F, 0xDE], XmmRm, 16, Imm::None, Int),
    op("pminsw", &[0x66, 0x0F, 0xEA], XmmRm, 16, Imm::None, Int),
    op("pmaxsw", &[0x66, 0x0F, 0xEE], XmmRm, 16, Imm::None, Int),
    op("pavgb", &[0x66, 0x0F, 0xE0], XmmRm, 16, Imm::None, Int),
    op("pavgw", &[0x66, 0x0F, 0xE3], XmmRm, 16, Imm::None, Int),
    op("pmullw", &[0x66, 0x0F, 0xD5], XmmRm, 16, Imm::None, Int),
    op("pmulhw", &[0x66, 0x0F, 0xE5], XmmRm, 16, Imm::None, Int),
    op("pmulhuw", &[0x66, 0x0F, 0xE4], XmmRm, 16, Imm::None, Int),
    op("pmuludq", &[0x66, 0x0F, 0xF4], XmmRm, 16, Imm::None, Int),
    op("pmaddwd", &[0x66, 0x0F, 0xF5], XmmRm, 16, Imm::None, Int),
    op("psadbw", &[0x66, 0x0F, 0xF6], XmmRm, 16, Imm::None, Int),
    op("pand", &[0x66, 0x0F, 0xDB], XmmRm, 16, Imm::None, Int),
    op("pandn", &[0x66, 0x0F, 0xDF], XmmRm, 16, Imm::None, Int),
    op("por", &[0x66, 0x0F, 0xEB], XmmRm, 16, Imm::None, Int),
    op("pxor", &[0x66, 0x0F, 0xEF], XmmRm, 16, Imm::None, Int),
];

const INT_SHUFFLE: &[OpSpec] = &[
    op("psrlw", &[0x66, 0x0F, 0xD1], XmmRm, 16, Imm::None, Int),
    op("psrld", &[0x66, 0x0F, 0xD2], XmmRm, 16, Imm::None, Int),
    op("psrlq", &[0x66, 0x0F, 0xD3], XmmRm, 16, Imm::None, Int),
    op("psraw", &[0x66, 0x0F, 0xE1], XmmRm, 16, Imm::None, Int),
    op("psrad", &[0x66, 0x0F, 0xE2], XmmRm, 16, Imm::None, Int),
    op("psllw", &[0x66, 0x0F, 0xF1], XmmRm, 16, Imm::None, Int),
    op("pslld", &[0x66, 0x0F, 0xF2], XmmRm, 16, Imm::None, Int),
    op("psllq", &[0x66, 0x0F, 0xF3], XmmRm, 16, Imm::None, Int),
    op("psrlw-imm", &[0x66, 0x0F, 0x71], Digit(2), 0, Imm::Any, Int),
    op("psraw-imm", &[0x66, 0x0F, 0x71], Digit(4), 0, Imm::Any, Int),
    op("psllw-imm", &[0x66, 0x0F, 0x71], Digit(6), 0, Imm::Any, Int),
    op("psrld-imm", &[0x66, 0x0F, 0x72], Digit(2), 0, Imm::Any, Int),
    op("psrad-imm", &[0x66, 0x0F, 0x72], Digit(4), 0, Imm::Any, Int),
    op("pslld-imm", &[0x66, 0x0F, 0x72], Digit(6), 0, Imm::Any, Int),
    op("psrlq-imm", &[0x66, 0x0F, 0x73], Digit(2), 0, Imm::Any, Int),
    op("psrldq", &[0x66, 0x0F, 0x73], Digit(3), 0, Imm::Any, Int),
    op("psllq-imm", &[0x66, 0x0F, 0x73], Digit(6), 0, Imm::Any, Int),
    op("pslldq", &[0x66, 0x0F, 0x73], Digit(7), 0, Imm::Any, Int),
    op("pshufd", &[0x66, 0x0F, 0x70], XmmRm, 16, Imm::Any, Int),
    op("pshuflw", &[0xF2, 0x0F, 0x70], XmmRm, 16, Imm::Any, Int),
    op("pshufhw", &[0xF3, 0x0F, 0x70], XmmRm, 16, Imm::Any, Int),
    op("punpcklbw", &[0x66, 0x0F, 0x60], XmmRm, 16, Imm::None, Int),
    op("punpcklwd", &[0x66, 0x0F, 0x61], XmmRm, 16, Imm::None, Int),
    op("punpckldq", &[0x66, 0x0F, 0x62], XmmRm, 16, Imm::None, Int),
    op("punpcklqdq", &[0x66, 0x0F, 0x6C], XmmRm, 16, Imm::None, Int),
    op("punpckhbw", &[0x66, 0x0F, 0x68], XmmRm, 16, Imm::None, Int),
    op("punpckhwd", &[0x66, 0x0F, 0x69], XmmRm, 16, Imm::None, Int),
    op("punpckhdq", &[0x66, 0x0F, 0x6A], XmmRm, 16, Imm::None, Int),
    op("punpckhqdq", &[0x66, 0x0F, 0x6D], XmmRm, 16, Imm::None, Int),
    op("packsswb", &[0x66, 0x0F, 0x63], XmmRm, 16, Imm::None, Int),
    op("packssdw", &[0x66, 0x0F, 0x6B], XmmRm, 16, Imm::None, Int),
    op("packuswb", &[0x66, 0x0F, 0x67], XmmRm, 16, Imm::None, Int),
];

/// Every instruction table of this module.
pub fn tables() -> Vec<&'static [OpSpec]> {
    vec![ARITH, COMPARE_CONVERT, MOVE_LOGIC, INT_ARITH, INT_SHUFFLE]
}

pub fn families() -> Vec<SimdFamily> {
    vec![
        family("sse2-arith", ARITH, Mxcsr::Usual),
        family("sse2-arith-mxcsr", ARITH, Mxcsr::Any),
        family("sse2-cmp-cvt", COMPARE_CONVERT, Mxcsr::Usual),
        family("sse2-cmp-cvt-mxcsr", COMPARE_CONVERT, Mxcsr::Any),
        family("sse2-move-logic", MOVE_LOGIC, Mxcsr::Usual),
        family("sse2-int-arith", INT_ARITH, Mxcsr::Usual),
        family("sse2-int-shift-shuffle", INT_SHUFFLE, Mxcsr::Usual),
    ]
}
