//! A standard VGA with the Bochs VBE extensions ("stdvga", PCI 1234:1111), as the SeaBIOS
//! vgabios (`vgabios-stdvga.bin`) drives it.
//!
//! Models (IBM VGA Technical Reference; the Bochs VBE "dispi" interface):
//! - the registers: misc output (0x3C2/0x3CC), sequencer (0x3C4/5), CRTC (0x3B4/5 or 0x3D4/5 by
//!   misc bit 0, with write protection by CR11 bit 7), graphics controller (0x3CE/F), attribute
//!   controller (0x3C0/1, index/data flip-flop reset by reading input status 1 at 0x3BA/0x3DA),
//!   DAC (0x3C6–0x3C9), feature control;
//! - the 128 KiB window 0xA0000–0xBFFFF over four planes: read modes 0/1, write modes 0–3
//!   with set/reset, rotate, logical ops, bit mask and map mask, chain-4 and odd/even;
//! - VBE dispi ports 0x1CE/0x1CF (index/data) with banked and linear framebuffer access;
//! - PCI function: BAR0 a 16 MiB prefetchable linear framebuffer, optionally an expansion ROM.
//!
//! Video memory is 16 MiB, stored plane-interleaved (byte `4 * offset + plane`), so chain-4
//! and the linear framebuffer address it directly; text mode keeps character `i` at byte
//! `4 * i` (plane 0) and its attribute at `4 * i + 1` (plane 1).
//!
//! Not modelled: pixel rendering of graphics modes (only the text screen is drawn, by
//! [`TextRenderer`]), split screen, vertical retrace timing (input status 1 toggles its retrace
//! bits on every read so polling loops finish).

use std::io::Write;

use pcvm_core::{BusAccess, BusDevice};
use serde::{Deserialize, Serialize};

use crate::pci::{BarKind, PciConfigSpace, PciDevice, ROM_BAR};

/// Bytes of video memory (also the LFB BAR size).
pub const VRAM_SIZE: usize = 16 << 20;
/// Start of the legacy memory window.
pub const WINDOW_BASE: u64 = 0xA_0000;
/// Length of the legacy memory window.
pub const WINDOW_LEN: u64 = 0x2_0000;

/// VBE dispi index port.
pub const VBE_DISPI_IOPORT_INDEX: u16 = 0x1CE;
/// VBE dispi data port.
pub const VBE_DISPI_IOPORT_DATA: u16 = 0x1CF;
/// VBE register: interface ID.
pub const VBE_DISPI_INDEX_ID: u16 = 0;
/// VBE register: horizontal resolution.
pub const VBE_DISPI_INDEX_XRES: u16 = 1;
/// VBE register: vertical resolution.
pub const VBE_DISPI_INDEX_YRES: u16 = 2;
/// VBE register: bits per pixel.
pub const VBE_DISPI_INDEX_BPP: u16 = 3;
/// VBE register: enable flags.
pub const VBE_DISPI_INDEX_ENABLE: u16 = 4;
/// VBE register: 64 KiB bank shown in the 0xA0000 window.
pub const VBE_DISPI_INDEX_BANK: u16 = 5;
/// VBE register: virtual width in pixels.
pub const VBE_DISPI_INDEX_VIRT_WIDTH: u16 = 6;
/// VBE register: virtual height in lines.
pub const VBE_DISPI_INDEX_VIRT_HEIGHT: u16 = 7;
/// VBE register: display start X.
pub const VBE_DISPI_INDEX_X_OFFSET: u16 = 8;
/// VBE register: display start Y.
pub const VBE_DISPI_INDEX_Y_OFFSET: u16 = 9;
/// VBE register: video memory in 64 KiB units (read-only).
pub const VBE_DISPI_INDEX_VIDEO_MEMORY_64K: u16 = 10;
/// Oldest interface ID.
pub const VBE_DISPI_ID0: u16 = 0xB0C0;
/// Newest interface ID supported.
pub const VBE_DISPI_ID5: u16 = 0xB0C5;
/// ENABLE: the VBE mode is on.
pub const VBE_DISPI_ENABLED: u16 = 0x01;
/// ENABLE: reads of XRES/YRES/BPP return the maxima.
pub const VBE_DISPI_GETCAPS: u16 = 0x02;
/// ENABLE: 8-bit DAC.
pub const VBE_DISPI_8BIT_DAC: u16 = 0x20;
/// ENABLE: linear framebuffer enabled.
pub const VBE_DISPI_LFB_ENABLED: u16 = 0x40;
/// ENABLE: do not clear video memory on enable.
pub const VBE_DISPI_NOCLEARMEM: u16 = 0x80;
/// Largest horizontal resolution.
pub const VBE_DISPI_MAX_XRES: u16 = 2560;
/// Largest vertical resolution.
pub const VBE_DISPI_MAX_YRES: u16 = 1600;
/// Largest depth.
pub const VBE_DISPI_MAX_BPP: u16 = 32;

/// Sequencer memory mode: chain-4.
const SR04_CHAIN4: u8 = 0x08;
/// Sequencer memory mode: odd/even disabled (sequential addressing).
const SR04_SEQUENTIAL: u8 = 0x04;
/// Graphics mode register: host odd/even.
const GR05_ODD_EVEN: u8 = 0x10;
/// Graphics mode register: read mode 1 (color compare).
const GR05_READ_MODE_1: u8 = 0x08;
/// Misc output: CRTC at 0x3Dx (color) rather than 0x3Bx.
const MISC_COLOR: u8 = 0x01;
/// Input status 1: display disabled (blanking) and vertical retrace.
const ST01_TOGGLE: u8 = 0x09;

/// Writable bits of each sequencer register.
const SR_MASK: [u8; 8] = [0x03, 0x3D, 0x0F, 0x3F, 0x0E, 0x00, 0x00, 0xFF];
/// Writable bits of each graphics controller register.
const GR_MASK: [u8; 16] = [
    0x0F, 0x0F, 0x0F, 0x1F, 0x03, 0x7B, 0x0F, 0x0F, 0xFF, 0, 0, 0, 0, 0, 0, 0,
];

/// Register values of BIOS mode 3 (80×25 color text), loaded at power-on so guests that write
/// 0xB8000 without a video BIOS are still readable.
const MODE3_MISC: u8 = 0x67;
const MODE3_SEQ: [u8; 5] = [0x03, 0x00, 0x03, 0x00, 0x02];
const MODE3_CRTC: [u8; 25] = [
    0x5F, 0x4F, 0x50, 0x82, 0x55, 0x81, 0xBF, 0x1F, 0x00, 0x4F, 0x0D, 0x0E, 0x00, 0x00, 0x00, 0x00,
    0x9C, 0x8E, 0x8F, 0x28, 0x1F, 0x96, 0xB9, 0xA3, 0xFF,
];
const MODE3_GC: [u8; 9] = [0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0E, 0x00, 0xFF];
const MODE3_AC: [u8; 21] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F,
    0x0C, 0x00, 0x0F, 0x08, 0x00,
];

/// Replicate the low 4 bits of `v` as bytes of a plane word: bit p → byte p all-ones.
fn expand4(v: u8) -> u32 {
    (0..4).fold(0, |acc, p| {
        if v & (1 << p) != 0 {
            acc | (0xFF << (8 * p))
        } else {
            acc
        }
    })
}

/// A VBE mode as programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VbeMode {
    /// Width in pixels.
    pub xres: u16,
    /// Height in lines.
    pub yres: u16,
    /// Bits per pixel.
    pub bpp: u16,
    /// Linear framebuffer addressing enabled.
    pub lfb: bool,
}

/// The adapter's registers and video memory, for snapshots (its PCI configuration is part of
/// [`crate::pci::PciHostState`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VgaState {
    latch: u32,
    misc: u8,
    feature_control: u8,
    st01: u8,
    seq_index: u8,
    seq: Vec<u8>,
    gc_index: u8,
    gc: Vec<u8>,
    crtc_index: u8,
    crtc: Vec<u8>,
    ar_index: u8,
    ar: Vec<u8>,
    ar_flip_flop: bool,
    pel_mask: u8,
    dac_state: u8,
    dac_read_index: u8,
    dac_write_index: u8,
    dac_sub_index: usize,
    dac_cache: [u8; 3],
    palette: Vec<u8>,
    vbe_index: u16,
    vbe: Vec<u16>,
    vram: Vec<u8>,
}

/// Copy what fits of `src` into `dst`.
fn restore_slice<T: Copy>(dst: &mut [T], src: &[T]) {
    let n = dst.len().min(src.len());
    dst[..n].copy_from_slice(&src[..n]);
}

/// The stdvga adapter: registers, video memory, VBE, and its PCI function.
pub struct Vga {
    vram: Vec<u8>,
    latch: u32,
    misc: u8,
    feature_control: u8,
    st01: u8,
    seq_index: u8,
    seq: [u8; 8],
    gc_index: u8,
    gc: [u8; 16],
    crtc_index: u8,
    crtc: [u8; 256],
    ar_index: u8,
    ar: [u8; 32],
    /// false: the next 0x3C0 write is an index; true: data.
    ar_flip_flop: bool,
    pel_mask: u8,
    dac_state: u8,
    dac_read_index: u8,
    dac_write_index: u8,
    dac_sub_index: usize,
    dac_cache: [u8; 3],
    palette: [u8; 768],
    vbe_index: u16,
    vbe: [u16; 10],
    config: PciConfigSpace,
    rom: Option<Vec<u8>>,
}

impl Default for Vga {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Vga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vga")
            .field("misc", &self.misc)
            .field("vbe", &self.vbe)
            .finish_non_exhaustive()
    }
}

impl Vga {
    /// PCI vendor ID (Bochs/QEMU).
    pub const VENDOR_ID: u16 = 0x1234;
    /// PCI device ID of stdvga.
    pub const DEVICE_ID: u16 = 0x1111;
    /// Where QEMU's pc machine plugs it: 00:02.0.
    pub const SLOT: (u8, u8) = (2, 0);
    /// Port ranges to register: 0x3B0–0x3DF and the VBE ports 0x1CE–0x1D0.
    pub const PORT_RANGES: [(u16, u64); 2] = [(0x3B0, 0x30), (VBE_DISPI_IOPORT_INDEX, 3)];

    /// An adapter with no option ROM (the machine passes the vgabios through fw_cfg).
    pub fn new() -> Self {
        let mut config = PciConfigSpace::new(Self::VENDOR_ID, Self::DEVICE_ID, 0x03_00_00, 0x02);
        config.set_subsystem(0x1AF4, 0x1100);
        config.add_bar(
            0,
            BarKind::Memory32 { prefetchable: true },
            VRAM_SIZE as u32,
        );
        let mut vga = Vga {
            vram: vec![0; VRAM_SIZE],
            latch: 0,
            misc: 0,
            feature_control: 0,
            st01: 0,
            seq_index: 0,
            seq: [0; 8],
            gc_index: 0,
            gc: [0; 16],
            crtc_index: 0,
            crtc: [0; 256],
            ar_index: 0,
            ar: [0; 32],
            ar_flip_flop: false,
            pel_mask: 0xFF,
            dac_state: 0,
            dac_read_index: 0,
            dac_write_index: 0,
            dac_sub_index: 0,
            dac_cache: [0; 3],
            palette: [0; 768],
            vbe_index: 0,
            vbe: [0; 10],
            config,
            rom: None,
        };
        vga.power_on();
        vga
    }

    /// An adapter exposing `rom` (e.g. `vgabios-stdvga.bin`) through its PCI expansion ROM BAR,
    /// where SeaBIOS looks for a VGA option ROM. Images over 16 MiB are not accepted by SeaBIOS
    /// anyway and are truncated.
    pub fn with_rom(mut rom: Vec<u8>) -> Self {
        let mut vga = Self::new();
        rom.truncate(16 << 20);
        if !rom.is_empty() {
            vga.config.add_bar(ROM_BAR, BarKind::Rom, rom.len() as u32);
            vga.rom = Some(rom);
        }
        vga
    }

    fn power_on(&mut self) {
        self.latch = 0;
        self.misc = MODE3_MISC;
        self.feature_control = 0;
        self.st01 = 0;
        self.seq_index = 0;
        self.seq = [0; 8];
        self.seq[..5].copy_from_slice(&MODE3_SEQ);
        self.gc_index = 0;
        self.gc = [0; 16];
        self.gc[..9].copy_from_slice(&MODE3_GC);
        self.crtc_index = 0;
        self.crtc = [0; 256];
        self.crtc[..25].copy_from_slice(&MODE3_CRTC);
        self.ar_index = 0x20;
        self.ar = [0; 32];
        self.ar[..21].copy_from_slice(&MODE3_AC);
        self.ar_flip_flop = false;
        self.pel_mask = 0xFF;
        self.dac_state = 0;
        self.dac_read_index = 0;
        self.dac_write_index = 0;
        self.dac_sub_index = 0;
        self.palette = [0; 768];
        self.vbe_index = 0;
        self.vbe = [0; 10];
        self.vbe[VBE_DISPI_INDEX_ID as usize] = VBE_DISPI_ID5;
        self.vbe[VBE_DISPI_INDEX_BPP as usize] = 8;
        self.config.reset();
    }

    /// Registers and video memory, for snapshots.
    pub fn state(&self) -> VgaState {
        VgaState {
            latch: self.latch,
            misc: self.misc,
            feature_control: self.feature_control,
            st01: self.st01,
            seq_index: self.seq_index,
            seq: self.seq.to_vec(),
            gc_index: self.gc_index,
            gc: self.gc.to_vec(),
            crtc_index: self.crtc_index,
            crtc: self.crtc.to_vec(),
            ar_index: self.ar_index,
            ar: self.ar.to_vec(),
            ar_flip_flop: self.ar_flip_flop,
            pel_mask: self.pel_mask,
            dac_state: self.dac_state,
            dac_read_index: self.dac_read_index,
            dac_write_index: self.dac_write_index,
            dac_sub_index: self.dac_sub_index,
            dac_cache: self.dac_cache,
            palette: self.palette.to_vec(),
            vbe_index: self.vbe_index,
            vbe: self.vbe.to_vec(),
            vram: self.vram.clone(),
        }
    }

    /// Restore a snapshot (arrays of the wrong length restore what fits).
    pub fn set_state(&mut self, s: &VgaState) {
        self.latch = s.latch;
        self.misc = s.misc;
        self.feature_control = s.feature_control;
        self.st01 = s.st01;
        self.seq_index = s.seq_index;
        restore_slice(&mut self.seq, &s.seq);
        self.gc_index = s.gc_index;
        restore_slice(&mut self.gc, &s.gc);
        self.crtc_index = s.crtc_index;
        restore_slice(&mut self.crtc, &s.crtc);
        self.ar_index = s.ar_index;
        restore_slice(&mut self.ar, &s.ar);
        self.ar_flip_flop = s.ar_flip_flop;
        self.pel_mask = s.pel_mask;
        self.dac_state = s.dac_state;
        self.dac_read_index = s.dac_read_index;
        self.dac_write_index = s.dac_write_index;
        self.dac_sub_index = s.dac_sub_index.min(2);
        self.dac_cache = s.dac_cache;
        restore_slice(&mut self.palette, &s.palette);
        self.vbe_index = s.vbe_index;
        restore_slice(&mut self.vbe, &s.vbe);
        restore_slice(&mut self.vram, &s.vram);
    }

    // ----- VBE -----

    fn vbe_enabled(&self) -> bool {
        self.vbe[VBE_DISPI_INDEX_ENABLE as usize] & VBE_DISPI_ENABLED != 0
    }

    /// The VBE mode in effect, if VBE is enabled.
    pub fn vbe_mode(&self) -> Option<VbeMode> {
        self.vbe_enabled().then(|| VbeMode {
            xres: self.vbe[VBE_DISPI_INDEX_XRES as usize],
            yres: self.vbe[VBE_DISPI_INDEX_YRES as usize],
            bpp: self.vbe[VBE_DISPI_INDEX_BPP as usize],
            lfb: self.vbe[VBE_DISPI_INDEX_ENABLE as usize] & VBE_DISPI_LFB_ENABLED != 0,
        })
    }

    /// Bytes per scanline of the VBE mode (4 bpp counts as planar: one byte per 8 pixels
    /// per plane, stored interleaved as 4 bytes).
    fn vbe_line_bytes(&self, width: u16) -> usize {
        let bpp = self.vbe[VBE_DISPI_INDEX_BPP as usize];
        match bpp {
            4 => usize::from(width) / 2,
            15 => usize::from(width) * 2,
            b => usize::from(width) * usize::from(b).div_ceil(8),
        }
    }

    fn vbe_read(&self) -> u16 {
        let i = self.vbe_index;
        let caps = self.vbe[VBE_DISPI_INDEX_ENABLE as usize] & VBE_DISPI_GETCAPS != 0;
        match i {
            VBE_DISPI_INDEX_XRES if caps => VBE_DISPI_MAX_XRES,
            VBE_DISPI_INDEX_YRES if caps => VBE_DISPI_MAX_YRES,
            VBE_DISPI_INDEX_BPP if caps => VBE_DISPI_MAX_BPP,
            VBE_DISPI_INDEX_VIDEO_MEMORY_64K => (VRAM_SIZE >> 16) as u16,
            _ => self.vbe.get(usize::from(i)).copied().unwrap_or(0),
        }
    }

    fn vbe_write(&mut self, v: u16) {
        let i = self.vbe_index;
        match i {
            VBE_DISPI_INDEX_ID if (VBE_DISPI_ID0..=VBE_DISPI_ID5).contains(&v) => {
                self.vbe[0] = v;
            }
            VBE_DISPI_INDEX_XRES if v <= VBE_DISPI_MAX_XRES && v.is_multiple_of(8) => {
                self.vbe[1] = v;
            }
            VBE_DISPI_INDEX_YRES if v <= VBE_DISPI_MAX_YRES => self.vbe[2] = v,
            VBE_DISPI_INDEX_BPP => {
                let v = if v == 0 { 8 } else { v };
                if matches!(v, 4 | 8 | 15 | 16 | 24 | 32) {
                    self.vbe[3] = v;
                }
            }
            VBE_DISPI_INDEX_BANK => {
                let banks = (VRAM_SIZE >> 16) as u16;
                self.vbe[5] = v % banks;
            }
            VBE_DISPI_INDEX_ENABLE => self.vbe_set_enable(v),
            VBE_DISPI_INDEX_VIRT_WIDTH => {
                let line = self.vbe_line_bytes(v);
                if v <= VBE_DISPI_MAX_XRES * 4 && line > 0 {
                    self.vbe[6] = v;
                    self.vbe[7] = (VRAM_SIZE / line).min(usize::from(u16::MAX)) as u16;
                }
            }
            VBE_DISPI_INDEX_X_OFFSET | VBE_DISPI_INDEX_Y_OFFSET => {
                self.vbe[usize::from(i)] = v;
            }
            _ => {}
        }
    }

    fn vbe_set_enable(&mut self, v: u16) {
        let was = self.vbe_enabled();
        if v & VBE_DISPI_ENABLED != 0 && !was {
            let (x, y) = (self.vbe[1], self.vbe[2]);
            let line = self.vbe_line_bytes(x);
            let size = line * usize::from(y);
            if x == 0 || y == 0 || size > VRAM_SIZE {
                tracing::debug!("vga: VBE mode {x}x{y} rejected");
                return;
            }
            self.vbe[6] = x;
            self.vbe[7] = (VRAM_SIZE / line.max(1)).min(usize::from(u16::MAX)) as u16;
            self.vbe[8] = 0;
            self.vbe[9] = 0;
            self.vbe[5] = 0;
            if v & VBE_DISPI_NOCLEARMEM == 0 {
                self.vram[..size].fill(0);
            }
            // Graphics mode, 0xA0000 64 KiB window, chain-4 (as a VGA programmed for a
            // packed-pixel mode), so the legacy registers agree with the VBE mode.
            self.gc[6] = (self.gc[6] & !0x0C) | 0x05;
            self.seq[4] |= SR04_CHAIN4;
        }
        self.vbe[VBE_DISPI_INDEX_ENABLE as usize] = v;
    }

    // ----- Legacy memory window -----

    /// Map a window offset to a plane offset under GR06's memory map, or `None` if unmapped.
    fn window_offset(&self, offset: u64) -> Option<usize> {
        let (base, len) = match (self.gc[6] >> 2) & 3 {
            0 => (0, 0x20000),
            1 => (0, 0x10000),
            2 => (0x10000, 0x8000),
            _ => (0x18000, 0x8000),
        };
        let off = offset.checked_sub(base)?;
        (off < len).then_some(off as usize)
    }

    fn mem_read(&mut self, offset: u64) -> u8 {
        let Some(addr) = self.window_offset(offset) else {
            return 0xFF;
        };
        if self.vbe_enabled() {
            let bank = usize::from(self.vbe[5]) << 16;
            return if addr < 0x10000 {
                self.vram.get(bank + addr).copied().unwrap_or(0xFF)
            } else {
                0xFF
            };
        }
        if self.seq[4] & SR04_CHAIN4 != 0 {
            return self.vram[addr];
        }
        if self.gc[5] & GR05_ODD_EVEN != 0 {
            let plane = usize::from(self.gc[4] & 2) | (addr & 1);
            return self.vram[((addr & !1) << 1) | plane];
        }
        let i = addr * 4;
        self.latch = u32::from_le_bytes([
            self.vram[i],
            self.vram[i + 1],
            self.vram[i + 2],
            self.vram[i + 3],
        ]);
        if self.gc[5] & GR05_READ_MODE_1 == 0 {
            let plane = self.gc[4] & 3;
            (self.latch >> (8 * plane)) as u8
        } else {
            // Color compare: a pixel reads 1 where every plane in "color don't care" matches
            // the color compare register.
            let care = expand4(self.gc[7]);
            let color = expand4(self.gc[2]);
            let diff = (self.latch ^ color) & care;
            let any = diff.to_le_bytes().iter().fold(0u8, |a, &b| a | b);
            !any
        }
    }

    fn mem_write(&mut self, offset: u64, v: u8) {
        let Some(addr) = self.window_offset(offset) else {
            return;
        };
        if self.vbe_enabled() {
            let bank = usize::from(self.vbe[5]) << 16;
            if addr < 0x10000 {
                if let Some(b) = self.vram.get_mut(bank + addr) {
                    *b = v;
                }
            }
            return;
        }
        let map_mask = self.seq[2] & 0x0F;
        if self.seq[4] & SR04_CHAIN4 != 0 {
            if map_mask & (1 << (addr & 3)) != 0 {
                self.vram[addr] = v;
            }
            return;
        }
        if self.seq[4] & SR04_SEQUENTIAL == 0 {
            let plane = addr & 1;
            if map_mask & (1 << plane) != 0 {
                self.vram[((addr & !1) << 1) | plane] = v;
            }
            return;
        }
        // Planar write (VGA reference, graphics controller write modes 0–3).
        let mode = self.gc[5] & 3;
        let rotate = u32::from(self.gc[3] & 7);
        let mut bit_mask = self.gc[8];
        let mut value: u32 = match mode {
            0 => {
                let b = v.rotate_right(rotate);
                let data = u32::from(b) * 0x0101_0101;
                let enable = expand4(self.gc[1]);
                (data & !enable) | (expand4(self.gc[0]) & enable)
            }
            1 => self.latch,
            2 => expand4(v),
            _ => {
                bit_mask &= v.rotate_right(rotate);
                expand4(self.gc[0])
            }
        };
        if mode != 1 {
            value = match (self.gc[3] >> 3) & 3 {
                0 => value,
                1 => value & self.latch,
                2 => value | self.latch,
                _ => value ^ self.latch,
            };
            let bm = u32::from(bit_mask) * 0x0101_0101;
            value = (value & bm) | (self.latch & !bm);
        }
        let plane_mask = expand4(map_mask);
        let i = addr * 4;
        let old = u32::from_le_bytes([
            self.vram[i],
            self.vram[i + 1],
            self.vram[i + 2],
            self.vram[i + 3],
        ]);
        let new = (old & !plane_mask) | (value & plane_mask);
        self.vram[i..i + 4].copy_from_slice(&new.to_le_bytes());
    }

    // ----- Ports -----

    /// The CRTC answers at 0x3Bx in mono mode and 0x3Dx in color mode.
    fn crtc_port_active(&self, port: u16) -> bool {
        let color = self.misc & MISC_COLOR != 0;
        if port & 0xFFF0 == 0x3B0 {
            !color
        } else {
            color
        }
    }

    fn port_read(&mut self, port: u16) -> u8 {
        match port {
            0x3C0 => self.ar_index,
            0x3C1 => self.ar[usize::from(self.ar_index & 0x1F)],
            0x3C2 => 0, // input status 0: no switch sense, no CRT interrupt
            0x3C4 => self.seq_index,
            0x3C5 => self.seq[usize::from(self.seq_index & 7)],
            0x3C6 => self.pel_mask,
            0x3C7 => self.dac_state,
            0x3C8 => self.dac_write_index,
            0x3C9 => {
                let v = self.palette[usize::from(self.dac_read_index) * 3 + self.dac_sub_index];
                self.dac_sub_index += 1;
                if self.dac_sub_index == 3 {
                    self.dac_sub_index = 0;
                    self.dac_read_index = self.dac_read_index.wrapping_add(1);
                }
                v
            }
            0x3CA => self.feature_control,
            0x3CC => self.misc,
            0x3CE => self.gc_index,
            0x3CF => self.gc[usize::from(self.gc_index & 0x0F)],
            0x3B4 | 0x3D4 if self.crtc_port_active(port) => self.crtc_index,
            0x3B5 | 0x3D5 if self.crtc_port_active(port) => self.crtc[usize::from(self.crtc_index)],
            0x3BA | 0x3DA if self.crtc_port_active(port) => {
                self.ar_flip_flop = false;
                self.st01 ^= ST01_TOGGLE;
                self.st01
            }
            _ => 0xFF,
        }
    }

    fn port_write(&mut self, port: u16, v: u8) {
        match port {
            0x3C0 => {
                if !self.ar_flip_flop {
                    self.ar_index = v & 0x3F;
                } else {
                    let i = usize::from(self.ar_index & 0x1F);
                    self.ar[i] = match i {
                        0x00..=0x0F => v & 0x3F,
                        0x12..=0x14 => v & 0x0F,
                        _ => v,
                    };
                }
                self.ar_flip_flop = !self.ar_flip_flop;
            }
            0x3C2 => self.misc = v,
            0x3C4 => self.seq_index = v & 7,
            0x3C5 => {
                let i = usize::from(self.seq_index & 7);
                self.seq[i] = v & SR_MASK[i];
            }
            0x3C6 => self.pel_mask = v,
            0x3C7 => {
                self.dac_read_index = v;
                self.dac_sub_index = 0;
                self.dac_state = 3;
            }
            0x3C8 => {
                self.dac_write_index = v;
                self.dac_sub_index = 0;
                self.dac_state = 0;
            }
            0x3C9 => {
                self.dac_cache[self.dac_sub_index] = v;
                self.dac_sub_index += 1;
                if self.dac_sub_index == 3 {
                    let i = usize::from(self.dac_write_index) * 3;
                    self.palette[i..i + 3].copy_from_slice(&self.dac_cache);
                    self.dac_sub_index = 0;
                    self.dac_write_index = self.dac_write_index.wrapping_add(1);
                }
            }
            0x3CE => self.gc_index = v & 0x0F,
            0x3CF => {
                let i = usize::from(self.gc_index & 0x0F);
                self.gc[i] = v & GR_MASK[i];
            }
            0x3B4 | 0x3D4 if self.crtc_port_active(port) => self.crtc_index = v,
            0x3B5 | 0x3D5 if self.crtc_port_active(port) => {
                let i = self.crtc_index;
                // CR11 bit 7 protects CR00–CR07, except the line compare bit 4 of CR07.
                if self.crtc[0x11] & 0x80 != 0 && i <= 7 {
                    if i == 7 {
                        self.crtc[7] = (self.crtc[7] & !0x10) | (v & 0x10);
                    }
                } else {
                    self.crtc[usize::from(i)] = v;
                }
            }
            0x3BA | 0x3DA if self.crtc_port_active(port) => self.feature_control = v & 0x03,
            _ => {}
        }
    }

    // ----- Text screen -----

    /// The adapter shows text (not a graphics or VBE mode).
    pub fn text_mode(&self) -> bool {
        !self.vbe_enabled() && self.gc[6] & 1 == 0
    }

    /// Columns, rows and the row stride in character cells from the CRTC.
    pub fn text_geometry(&self) -> (usize, usize, usize) {
        let cols = usize::from(self.crtc[0x01]) + 1;
        let char_height = usize::from(self.crtc[0x09] & 0x1F) + 1;
        let vde = usize::from(self.crtc[0x12])
            | (usize::from(self.crtc[0x07] & 0x02) << 7)
            | (usize::from(self.crtc[0x07] & 0x40) << 3);
        let rows = ((vde + 1) / char_height).clamp(1, 100);
        let stride = match usize::from(self.crtc[0x13]) * 2 {
            0 => cols,
            s => s,
        };
        (cols.clamp(1, 256), rows, stride)
    }

    fn start_address(&self) -> usize {
        usize::from(self.crtc[0x0C]) << 8 | usize::from(self.crtc[0x0D])
    }

    /// Character and attribute bytes of each text cell, row by row.
    pub fn text_cells(&self) -> Vec<Vec<(u8, u8)>> {
        let (cols, rows, stride) = self.text_geometry();
        let start = self.start_address();
        (0..rows)
            .map(|r| {
                (0..cols)
                    .map(|c| {
                        // Text memory is 64 KiB of plane 0/1 cells; addresses wrap there.
                        let cell = (start + r * stride + c) & 0xFFFF;
                        (self.vram[4 * cell], self.vram[4 * cell + 1])
                    })
                    .collect()
            })
            .collect()
    }

    /// The text screen as strings (code page 437 decoded), one per row, full width; empty in
    /// graphics modes.
    pub fn text_screen(&self) -> Vec<String> {
        if !self.text_mode() {
            return Vec::new();
        }
        self.text_cells()
            .iter()
            .map(|row| row.iter().map(|&(ch, _)| cp437(ch)).collect())
            .collect()
    }

    /// The text cursor as (row, column), if enabled and on screen (CRTC 0x0A–0x0F).
    pub fn cursor(&self) -> Option<(usize, usize)> {
        if self.crtc[0x0A] & 0x20 != 0 {
            return None;
        }
        let loc = usize::from(self.crtc[0x0E]) << 8 | usize::from(self.crtc[0x0F]);
        let (cols, rows, stride) = self.text_geometry();
        let rel = loc.checked_sub(self.start_address())?;
        let (r, c) = (rel / stride, rel % stride);
        (r < rows && c < cols).then_some((r, c))
    }

    /// The DAC palette entry `index` as 6-bit (R, G, B).
    pub fn palette(&self, index: u8) -> (u8, u8, u8) {
        let i = usize::from(index) * 3;
        (self.palette[i], self.palette[i + 1], self.palette[i + 2])
    }
}

/// Code page 437 glyphs for 0x80–0xFF.
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐\
└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{A0}";
/// Code page 437 glyphs for 0x01–0x1F (0x00 shows as a space).
const CP437_LOW: &str = "☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼";

/// The character code page 437 shows for `b`.
pub fn cp437(b: u8) -> char {
    match b {
        0 => ' ',
        0x01..=0x1F => CP437_LOW.chars().nth(usize::from(b) - 1).unwrap_or(' '),
        0x7F => '⌂',
        0x20..=0x7E => char::from(b),
        _ => CP437_HIGH.chars().nth(usize::from(b) - 0x80).unwrap_or(' '),
    }
}

impl BusDevice for Vga {
    fn name(&self) -> &str {
        "vga"
    }

    /// Ports (below 0x10000) and the memory window (0xA0000–0xBFFFF) share this device; the
    /// absolute address tells them apart.
    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        let a = access.addr;
        if (WINDOW_BASE..WINDOW_BASE + WINDOW_LEN).contains(&a) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.mem_read(a - WINDOW_BASE + i as u64);
            }
            return;
        }
        match a {
            0x1CE => {
                let v = self.vbe_index.to_le_bytes();
                data.fill(0);
                let n = data.len().min(2);
                data[..n].copy_from_slice(&v[..n]);
            }
            0x1CF | 0x1D0 => {
                let v = self.vbe_read().to_le_bytes();
                data.fill(0);
                let n = data.len().min(2);
                data[..n].copy_from_slice(&v[..n]);
            }
            _ => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = u16::try_from(a + i as u64).map_or(0xFF, |p| self.port_read(p));
                }
            }
        }
    }

    fn write(&mut self, access: BusAccess, data: &[u8]) {
        let a = access.addr;
        if (WINDOW_BASE..WINDOW_BASE + WINDOW_LEN).contains(&a) {
            for (i, &b) in data.iter().enumerate() {
                self.mem_write(a - WINDOW_BASE + i as u64, b);
            }
            return;
        }
        let word = || {
            let lo = data.first().copied().unwrap_or(0);
            let hi = data.get(1).copied().unwrap_or(0);
            u16::from_le_bytes([lo, hi])
        };
        match a {
            0x1CE => self.vbe_index = word(),
            0x1CF | 0x1D0 => self.vbe_write(word()),
            _ => {
                for (i, &b) in data.iter().enumerate() {
                    if let Ok(p) = u16::try_from(a + i as u64) {
                        self.port_write(p, b);
                    }
                }
            }
        }
    }

    fn reset(&mut self) {
        self.power_on();
    }
}

impl PciDevice for Vga {
    fn name(&self) -> &str {
        "stdvga"
    }
    fn config(&self) -> &PciConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfigSpace {
        &mut self.config
    }
    /// BAR0 is the linear framebuffer over video memory; the ROM BAR serves the option ROM.
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        let src: &[u8] = match bar {
            0 => &self.vram,
            ROM_BAR => self.rom.as_deref().unwrap_or(&[]),
            _ => &[],
        };
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| src.get(o))
                .copied()
                .unwrap_or(0xFF);
        }
    }
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != 0 {
            return;
        }
        for (i, &b) in data.iter().enumerate() {
            if let Some(slot) = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| self.vram.get_mut(o))
            {
                *slot = b;
            }
        }
    }
    fn reset(&mut self) {
        self.power_on();
    }
}

/// What the renderer last drew: cells, cursor, text mode.
type Drawn = (Vec<Vec<(u8, u8)>>, Option<(usize, usize)>, bool);

/// Draws the VGA text screen on an ANSI terminal, redrawing only when something changed.
#[derive(Debug, Default)]
pub struct TextRenderer {
    last: Option<Drawn>,
}

/// VGA color index (IRGB order: blue = 1, green = 2, red = 4) to ANSI color number.
const VGA_TO_ANSI: [u8; 8] = [0, 4, 2, 6, 1, 5, 3, 7];

impl TextRenderer {
    /// A renderer that draws everything on its first call.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget what was drawn, so the next call redraws the whole screen.
    pub fn invalidate(&mut self) {
        self.last = None;
    }

    /// Draw the screen if it changed since the last call; returns whether anything was drawn.
    pub fn render(&mut self, vga: &Vga, out: &mut dyn Write) -> std::io::Result<bool> {
        let text = vga.text_mode();
        let cells = if text { vga.text_cells() } else { Vec::new() };
        let cursor = if text { vga.cursor() } else { None };
        let state = (cells, cursor, text);
        if self.last.as_ref() == Some(&state) {
            return Ok(false);
        }
        let mut s = String::from("\x1b[?25l\x1b[H");
        if !text {
            s.push_str("\x1b[0m\x1b[2J\x1b[H");
            match vga.vbe_mode() {
                Some(m) => s.push_str(&format!("[graphics mode {}x{}x{}]", m.xres, m.yres, m.bpp)),
                None => s.push_str("[VGA graphics mode]"),
            }
        } else {
            for (r, row) in state.0.iter().enumerate() {
                s.push_str(&format!("\x1b[{};1H", r + 1));
                let mut attr = None;
                for &(ch, a) in row {
                    if attr != Some(a) {
                        let fg = VGA_TO_ANSI[usize::from(a & 7)] + if a & 8 != 0 { 90 } else { 30 };
                        let bg = VGA_TO_ANSI[usize::from((a >> 4) & 7)] + 40;
                        s.push_str(&format!("\x1b[0;{fg};{bg}m"));
                        attr = Some(a);
                    }
                    s.push(cp437(ch));
                }
            }
            s.push_str("\x1b[0m");
            if let Some((r, c)) = cursor {
                s.push_str(&format!("\x1b[{};{}H\x1b[?25h", r + 1, c + 1));
            }
        }
        out.write_all(s.as_bytes())?;
        out.flush()?;
        self.last = Some(state);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outb(v: &mut Vga, port: u16, b: u8) {
        BusDevice::write(
            v,
            BusAccess {
                offset: 0,
                addr: u64::from(port),
            },
            &[b],
        );
    }
    fn inb(v: &mut Vga, port: u16) -> u8 {
        let mut b = [0u8];
        BusDevice::read(
            v,
            BusAccess {
                offset: 0,
                addr: u64::from(port),
            },
            &mut b,
        );
        b[0]
    }
    fn outw(v: &mut Vga, port: u16, w: u16) {
        BusDevice::write(
            v,
            BusAccess {
                offset: 0,
                addr: u64::from(port),
            },
            &w.to_le_bytes(),
        );
    }
    fn inw(v: &mut Vga, port: u16) -> u16 {
        let mut b = [0u8; 2];
        BusDevice::read(
            v,
            BusAccess {
                offset: 0,
                addr: u64::from(port),
            },
            &mut b,
        );
        u16::from_le_bytes(b)
    }
    fn memw(v: &mut Vga, addr: u64, data: &[u8]) {
        BusDevice::write(
            v,
            BusAccess {
                offset: addr - WINDOW_BASE,
                addr,
            },
            data,
        );
    }
    fn memr(v: &mut Vga, addr: u64) -> u8 {
        let mut b = [0u8];
        BusDevice::read(
            v,
            BusAccess {
                offset: addr - WINDOW_BASE,
                addr,
            },
            &mut b,
        );
        b[0]
    }

    #[test]
    fn text_written_at_b8000_shows_on_screen() {
        let mut v = Vga::new();
        let msg = b"SeaBIOS (version 1.16.2)";
        let cells: Vec<u8> = msg.iter().flat_map(|&c| [c, 0x07]).collect();
        memw(&mut v, 0xB8000 + 160 * 2, &cells);
        memw(&mut v, 0xB8000 + 160 * 24 + 158, &[0xC9, 0x1F]);
        let screen = v.text_screen();
        assert_eq!(screen.len(), 25);
        assert!(screen.iter().all(|r| r.chars().count() == 80));
        assert!(screen[2].starts_with("SeaBIOS (version 1.16.2)"));
        assert_eq!(screen[24].chars().last(), Some('╔'));
        assert_eq!(v.text_cells()[2][0], (b'S', 0x07));
        assert_eq!(memr(&mut v, 0xB8000 + 320), b'S');
        assert_eq!(memr(&mut v, 0xB8000 + 321), 0x07);
        // Start address scrolls the view by cells.
        outb(&mut v, 0x3D4, 0x0C);
        outb(&mut v, 0x3D5, 0x00);
        outb(&mut v, 0x3D4, 0x0D);
        outb(&mut v, 0x3D5, 80);
        assert!(v.text_screen()[1].starts_with("SeaBIOS"));
    }

    #[test]
    fn crtc_cursor_and_index_readback() {
        let mut v = Vga::new();
        outw(&mut v, 0x3D4, 0x0E | (0x01 << 8));
        outw(&mut v, 0x3D4, 0x0F | (0x45 << 8)); // 0x145 = 325 = row 4, col 5
        assert_eq!(v.cursor(), Some((4, 5)));
        outb(&mut v, 0x3D4, 0x0F);
        assert_eq!(inb(&mut v, 0x3D4), 0x0F);
        assert_eq!(inb(&mut v, 0x3D5), 0x45);
        outw(&mut v, 0x3D4, 0x0A | (0x20 << 8));
        assert_eq!(v.cursor(), None, "cursor disabled");
        // Mono ports are dead while misc selects color.
        assert_eq!(inb(&mut v, 0x3B5), 0xFF);
        outb(&mut v, 0x3C2, 0x66);
        assert_eq!(inb(&mut v, 0x3CC), 0x66);
        outb(&mut v, 0x3B4, 0x0F);
        assert_eq!(inb(&mut v, 0x3B5), 0x45);
        // CR11 bit 7 protects CR00-CR07.
        outw(&mut v, 0x3B4, 0x11 | (0x80 << 8));
        outw(&mut v, 0x3B4, 0x01 | (0x27 << 8));
        outb(&mut v, 0x3B4, 0x01);
        assert_eq!(inb(&mut v, 0x3B5), 0x4F);
    }

    #[test]
    fn attribute_flip_flop_resets_on_input_status_read() {
        let mut v = Vga::new();
        inb(&mut v, 0x3DA);
        outb(&mut v, 0x3C0, 0x10);
        outb(&mut v, 0x3C0, 0x0C);
        assert_eq!(inb(&mut v, 0x3C1), 0x0C);
        // Flip-flop is back at "index": this write selects register 0x01.
        outb(&mut v, 0x3C0, 0x01);
        assert_eq!(inb(&mut v, 0x3C0), 0x01, "index register reads back");
        // Reading input status 1 forces the next write to be an index.
        inb(&mut v, 0x3DA);
        outb(&mut v, 0x3C0, 0x20 | 0x02);
        assert_eq!(inb(&mut v, 0x3C0), 0x22);
        outb(&mut v, 0x3C0, 0x3F);
        assert_eq!(inb(&mut v, 0x3C1), 0x3F);
        let a = inb(&mut v, 0x3DA);
        let b = inb(&mut v, 0x3DA);
        assert_ne!(a & 0x08, b & 0x08, "retrace toggles so polls finish");
    }

    #[test]
    fn vbe_id_caps_and_mode_set() {
        let mut v = Vga::new();
        outw(&mut v, 0x1CE, VBE_DISPI_INDEX_ID);
        outw(&mut v, 0x1CF, VBE_DISPI_ID0);
        assert_eq!(inw(&mut v, 0x1CF), VBE_DISPI_ID0);
        outw(&mut v, 0x1CF, 0x1234);
        assert_eq!(inw(&mut v, 0x1CF), VBE_DISPI_ID0, "bad IDs ignored");
        outw(&mut v, 0x1CF, VBE_DISPI_ID5);
        assert_eq!(inw(&mut v, 0x1CF), VBE_DISPI_ID5);
        outw(&mut v, 0x1CE, VBE_DISPI_INDEX_VIDEO_MEMORY_64K);
        assert_eq!(inw(&mut v, 0x1CF), 256);
        outw(&mut v, 0x1CE, VBE_DISPI_INDEX_ENABLE);
        outw(&mut v, 0x1CF, VBE_DISPI_GETCAPS);
        outw(&mut v, 0x1CE, VBE_DISPI_INDEX_XRES);
        assert_eq!(inw(&mut v, 0x1CF), VBE_DISPI_MAX_XRES);
        outw(&mut v, 0x1CE, VBE_DISPI_INDEX_ENABLE);
        outw(&mut v, 0x1CF, 0);
        for (i, val) in [(1, 800), (2, 600), (3, 32)] {
            outw(&mut v, 0x1CE, i);
            outw(&mut v, 0x1CF, val);
        }
        outw(&mut v, 0x1CE, VBE_DISPI_INDEX_ENABLE);
        outw(&mut v, 0x1CF, VBE_DISPI_ENABLED | VBE_DISPI_LFB_ENABLED);
        assert_eq!(
            v.vbe_mode(),
            Some(VbeMode {
                xres: 800,
                yres: 600,
                bpp: 32,
                lfb: true
            })
        );
        assert!(v.text_screen().is_empty());
        outw(&mut v, 0x1CE, VBE_DISPI_INDEX_VIRT_WIDTH);
        assert_eq!(inw(&mut v, 0x1CF), 800);
        // Bank 2 in the 0xA0000 window is LFB offset 0x20000.
        outw(&mut v, 0x1CE, VBE_DISPI_INDEX_BANK);
        outw(&mut v, 0x1CF, 2);
        memw(&mut v, 0xA0010, &[0xAB]);
        let mut b = [0u8];
        PciDevice::bar_read(&mut v, 0, 0x20010, &mut b);
        assert_eq!(b[0], 0xAB);
        let mut out = Vec::new();
        TextRenderer::new().render(&v, &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("800x600x32"));
    }

    #[test]
    fn planar_font_load_and_write_modes() {
        let mut v = Vga::new();
        // The vgabios font-load setup: plane 2 only, sequential, 0xA0000 64 KiB.
        outw(&mut v, 0x3C4, 0x0402);
        outw(&mut v, 0x3C4, 0x0704);
        outw(&mut v, 0x3CE, 0x0204);
        outw(&mut v, 0x3CE, 0x0005);
        outw(&mut v, 0x3CE, 0x0406);
        memw(&mut v, 0xA0000 + 0x41 * 32, &[0x18, 0x3C]);
        assert_eq!(memr(&mut v, 0xA0000 + 0x41 * 32 + 1), 0x3C, "read map 2");
        assert_eq!(v.vram[4 * (0x41 * 32) + 2], 0x18);
        assert_eq!(v.vram[4 * (0x41 * 32)], 0, "plane 0 untouched");
        // Write mode 2 with all planes and bit mask 0x0F.
        outw(&mut v, 0x3C4, 0x0F02);
        outw(&mut v, 0x3CE, 0x0205);
        outw(&mut v, 0x3CE, 0x0F08);
        memr(&mut v, 0xA0100); // load latches (zero)
        memw(&mut v, 0xA0100, &[0x05]);
        assert_eq!(&v.vram[0x400..0x404], &[0x0F, 0x00, 0x0F, 0x00]);
        // Read mode 1: color compare against 0b0101 over all planes.
        outw(&mut v, 0x3CE, 0x0805);
        outw(&mut v, 0x3CE, 0x0502);
        outw(&mut v, 0x3CE, 0x0F07);
        assert_eq!(memr(&mut v, 0xA0100), 0x0F);
        // Write mode 1 copies the latches.
        outw(&mut v, 0x3CE, 0x0105);
        memr(&mut v, 0xA0100);
        memw(&mut v, 0xA0200, &[0x00]);
        assert_eq!(&v.vram[0x800..0x804], &[0x0F, 0x00, 0x0F, 0x00]);
        // Write mode 0 with set/reset on plane 1 and XOR with the latches.
        outw(&mut v, 0x3CE, 0x0005);
        outw(&mut v, 0x3CE, 0x0200);
        outw(&mut v, 0x3CE, 0x0201);
        outw(&mut v, 0x3CE, 0x1803);
        outw(&mut v, 0x3CE, 0xFF08);
        memr(&mut v, 0xA0100);
        memw(&mut v, 0xA0100, &[0xF0]);
        assert_eq!(&v.vram[0x400..0x404], &[0xFF, 0xFF, 0xFF, 0xF0]);
        // Chain-4 addresses video memory linearly.
        outw(&mut v, 0x3C4, 0x0E04);
        memw(&mut v, 0xA0005, &[0x77]);
        assert_eq!(v.vram[5], 0x77);
        assert_eq!(memr(&mut v, 0xA0005), 0x77);
    }

    #[test]
    fn dac_palette_and_memory_map_window() {
        let mut v = Vga::new();
        outb(&mut v, 0x3C8, 5);
        for c in [10, 20, 30, 40, 50, 60] {
            outb(&mut v, 0x3C9, c);
        }
        assert_eq!(v.palette(5), (10, 20, 30));
        assert_eq!(v.palette(6), (40, 50, 60));
        outb(&mut v, 0x3C7, 6);
        assert_eq!(inb(&mut v, 0x3C7), 3);
        assert_eq!(
            [inb(&mut v, 0x3C9), inb(&mut v, 0x3C9), inb(&mut v, 0x3C9)],
            [40, 50, 60]
        );
        assert_eq!(inb(&mut v, 0x3C8), 7);
        // Mode 3 maps only 0xB8000-0xBFFFF.
        assert_eq!(memr(&mut v, 0xA0000), 0xFF);
        memw(&mut v, 0xB0000, &[1]);
        assert_eq!(memr(&mut v, 0xB0000), 0xFF);
    }

    #[test]
    fn pci_function_sizes_lfb_and_serves_rom() {
        let mut rom = vec![0u8; 40 << 10];
        rom[0] = 0x55;
        rom[1] = 0xAA;
        let mut v = Vga::with_rom(rom);
        let c = v.config_mut();
        assert_eq!(c.u32_at(0), 0x1111_1234);
        assert_eq!(c.u32_at(0x08) >> 8, 0x03_00_00);
        c.write(0x10, &0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(c.u32_at(0x10), 0xFF00_0008);
        c.write(0x30, &0xFFFF_F800u32.to_le_bytes());
        assert_eq!(c.u32_at(0x30), 0xFFFF_0000, "64 KiB ROM BAR");
        let mut b = [0u8; 2];
        v.bar_read(ROM_BAR, 0, &mut b);
        assert_eq!(b, [0x55, 0xAA]);
        v.bar_read(ROM_BAR, 50 << 10, &mut b);
        assert_eq!(b, [0xFF, 0xFF], "past the image");
        v.bar_read(0, u64::MAX, &mut b);
        assert_eq!(b, [0xFF, 0xFF]);
        v.bar_write(0, (VRAM_SIZE - 1) as u64, &[1, 2]);
        assert_eq!(v.vram[VRAM_SIZE - 1], 1);
        assert!(Vga::new().config().bar(ROM_BAR).is_none());
    }

    #[test]
    fn renderer_draws_colors_and_only_on_change() {
        let mut v = Vga::new();
        memw(&mut v, 0xB8000, &[b'H', 0x1E, b'i', 0x1E]);
        let mut r = TextRenderer::new();
        let mut out = Vec::new();
        assert!(r.render(&v, &mut out).unwrap());
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("\x1b[0;93;44mHi"), "yellow on blue");
        let mut out = Vec::new();
        assert!(!r.render(&v, &mut out).unwrap());
        assert!(out.is_empty());
        memw(&mut v, 0xB8000, b"h");
        assert!(r.render(&v, &mut out).unwrap());
    }

    /// Random port, VBE, memory-window and BAR accesses never panic, and the text screen can
    /// still be read and drawn afterwards.
    #[test]
    fn hostile_programming_never_panics() {
        let mut v = Vga::with_rom(vec![0x55; 3000]);
        let mut rng = crate::ide::tests::Rng(0xDEAD_BEEF_0BAD_F00D);
        let mut r = TextRenderer::new();
        for i in 0..200_000u32 {
            let x = rng.next();
            let len = [1usize, 2, 4, 8][(x % 4) as usize];
            let mut data = rng.next().to_le_bytes();
            let addr = match (x >> 2) % 8 {
                0..=2 => 0x3B0 + (x >> 8) % 0x30,
                3 => 0x1CE + (x >> 8) % 3,
                4 | 5 => WINDOW_BASE + (x >> 8) % WINDOW_LEN,
                6 => (x >> 8) & 0xFFFF,
                _ => {
                    let off = (x >> 8) % (VRAM_SIZE as u64 + 16);
                    let bar = [0, 1, ROM_BAR][((x >> 40) % 3) as usize];
                    if x >> 50 & 1 == 0 {
                        PciDevice::bar_read(&mut v, bar, off, &mut data[..len]);
                    } else {
                        PciDevice::bar_write(&mut v, bar, off, &data[..len]);
                    }
                    continue;
                }
            };
            let access = BusAccess { offset: 0, addr };
            if (x >> 60).is_multiple_of(3) {
                BusDevice::read(&mut v, access, &mut data[..len]);
            } else {
                BusDevice::write(&mut v, access, &data[..len]);
            }
            if i % 20_000 == 0 {
                let _ = v.text_screen();
                let _ = v.cursor();
                r.render(&v, &mut std::io::sink()).unwrap();
            }
        }
        BusDevice::reset(&mut v);
        assert_eq!(v.text_screen().len(), 25);
    }

    #[test]
    fn snapshot_restores_screen_and_registers() {
        let mut v = Vga::new();
        memw(&mut v, 0xB8000, b"O\x07K\x07");
        outw(&mut v, 0x3D4, 0x0F | (0x02 << 8));
        outb(&mut v, 0x3C8, 1);
        for c in [1, 2, 3] {
            outb(&mut v, 0x3C9, c);
        }
        let state = v.state();
        let mut w = Vga::new();
        w.set_state(&state);
        assert_eq!(w.state(), state);
        assert!(w.text_screen()[0].starts_with("OK"));
        assert_eq!(w.cursor(), Some((0, 2)));
        assert_eq!(w.palette(1), (1, 2, 3));
    }

    #[test]
    fn cp437_table_is_complete() {
        assert_eq!(CP437_HIGH.chars().count(), 128);
        assert_eq!(CP437_LOW.chars().count(), 31);
        assert_eq!(cp437(0xB3), '│');
        assert_eq!(cp437(0x01), '☺');
        assert_eq!(cp437(b'A'), 'A');
        assert_eq!(cp437(0xFF), '\u{A0}');
    }
}
