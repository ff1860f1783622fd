//! SSE through SSE4.2 state and arithmetic, independent of instruction decoding (owned by
//! the `sse` work; the handlers are in `exec/sse.rs`).
//!
//! - `float`: IEEE lanes under MXCSR (rounding, DAZ/FTZ, flags, NaN rules).
//! - `int`: packed integer lane operations.
//! - `strcmp`: the SSE4.2 PCMPxSTRx string compare engine.
//! - this file: the FXSAVE/XSAVE image of [`FxsaveArea`] (SDM Vol. 1 §10.5.1, §13.4).

pub(crate) mod float;
pub(crate) mod int;
pub(crate) mod strcmp;

use pcvm_core::cpu_state::FxsaveArea;

/// Size of the FXSAVE image and of the XSAVE legacy region.
pub(crate) const FXSAVE_SIZE: usize = 512;
/// XSAVE area for XCR0 = x87|SSE: legacy region plus the 64-byte header (CPUID.(EAX=0DH)).
pub(crate) const XSAVE_SIZE: usize = 576;
/// XCR0 bits this CPU supports: x87 and SSE state (SDM Vol. 1 §13.3).
pub(crate) const XCR0_SUPPORTED: u64 = 0b11;

/// Write the x87 part of the legacy image (FCW … FDP and ST0–ST7). FIP and FDP are stored as
/// the 8 bytes at offsets 8 and 16: in the 32-bit format that is offset, then selector in
/// bits 32–47 (SDM Vol. 1 Table 10-2).
pub(crate) fn save_x87(fx: &FxsaveArea, img: &mut [u8; FXSAVE_SIZE]) {
    img[0..2].copy_from_slice(&fx.fcw.to_le_bytes());
    img[2..4].copy_from_slice(&fx.fsw.to_le_bytes());
    img[4] = fx.ftw;
    img[5] = 0;
    img[6..8].copy_from_slice(&fx.fop.to_le_bytes());
    img[8..16].copy_from_slice(&fx.fip.to_le_bytes());
    img[16..24].copy_from_slice(&fx.fdp.to_le_bytes());
    for (i, st) in fx.st.iter().enumerate() {
        let at = 32 + 16 * i;
        img[at..at + 10].copy_from_slice(&st[..10]);
        img[at + 10..at + 16].fill(0);
    }
}

/// Write MXCSR and MXCSR_MASK.
pub(crate) fn save_mxcsr(fx: &FxsaveArea, img: &mut [u8; FXSAVE_SIZE]) {
    img[24..28].copy_from_slice(&fx.mxcsr.to_le_bytes());
    img[28..32].copy_from_slice(&float::mxcsr::SUPPORTED.to_le_bytes());
}

/// Write the first `count` XMM registers (8 outside 64-bit mode, 16 in it).
pub(crate) fn save_xmm(fx: &FxsaveArea, img: &mut [u8; FXSAVE_SIZE], count: usize) {
    for (i, x) in fx.xmm.iter().take(count).enumerate() {
        img[160 + 16 * i..176 + 16 * i].copy_from_slice(x);
    }
}

/// Load the x87 part of a legacy image.
pub(crate) fn load_x87(fx: &mut FxsaveArea, img: &[u8; FXSAVE_SIZE]) {
    let w16 = |at: usize| u16::from_le_bytes([img[at], img[at + 1]]);
    let w64 = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&img[at..at + 8]);
        u64::from_le_bytes(b)
    };
    // FCW bits 13–15 and 7 do not exist and bit 6 reads as 1; FSW.ES and FSW.B summarize
    // the unmasked exceptions (SDM Vol. 1 §8.1.3, §8.1.5).
    fx.fcw = (w16(0) & 0x1F3F) | 0x40;
    let fsw = w16(2);
    let es = fsw & !fx.fcw & 0x3F != 0;
    fx.fsw = (fsw & !0x8080) | if es { 0x8080 } else { 0 };
    fx.ftw = img[4];
    fx.fop = w16(6) & 0x7FF;
    fx.fip = w64(8);
    fx.fdp = w64(16);
    for (i, st) in fx.st.iter_mut().enumerate() {
        let at = 32 + 16 * i;
        st[..10].copy_from_slice(&img[at..at + 10]);
        st[10..].fill(0);
    }
}

/// MXCSR of a legacy image.
pub(crate) fn image_mxcsr(img: &[u8; FXSAVE_SIZE]) -> u32 {
    u32::from_le_bytes([img[24], img[25], img[26], img[27]])
}

/// Load the first `count` XMM registers.
pub(crate) fn load_xmm(fx: &mut FxsaveArea, img: &[u8; FXSAVE_SIZE], count: usize) {
    for (i, x) in fx.xmm.iter_mut().take(count).enumerate() {
        x.copy_from_slice(&img[160 + 16 * i..176 + 16 * i]);
    }
}

/// The x87 state after FNINIT/XRSTOR init (SDM Vol. 1 §13.6): FCW 0x037F, everything else
/// zero.
pub(crate) fn init_x87(fx: &mut FxsaveArea) {
    fx.fcw = 0x037F;
    fx.fsw = 0;
    fx.ftw = 0;
    fx.fop = 0;
    fx.fip = 0;
    fx.fdp = 0;
    fx.st = [[0; 16]; 8];
}

/// XINUSE (SDM Vol. 1 §13.6): which state components differ from their initial
/// configuration — x87: FCW 0x037F and everything else clear; SSE: XMM registers zero and
/// MXCSR 0x1F80. Reported in XSTATE_BV by XSAVE.
pub(crate) fn in_use(fx: &FxsaveArea) -> u64 {
    let x87 = fx.fcw != 0x037F
        || fx.fsw != 0
        || fx.ftw != 0
        || fx.fop != 0
        || fx.fip != 0
        || fx.fdp != 0
        || fx.st.iter().any(|r| r[..10].iter().any(|&b| b != 0));
    let sse = fx.mxcsr != 0x1F80 || fx.xmm.iter().any(|r| r.iter().any(|&b| b != 0));
    u64::from(x87) | (u64::from(sse) << 1)
}
