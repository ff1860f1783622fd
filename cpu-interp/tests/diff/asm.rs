//! A tiny x86 encoder for the classic one-byte/0F-map instructions the generators emit. Written
//! by hand (rather than through iced's assembler) so every encoding form is reachable: both
//! directions of reg/reg ALU ops, the accumulator and sign-extended immediate forms, /6 SAL,
//! 0x82, forced 32-bit displacements, SIB without base, etc.
//!
//! Addresses never use the ModRM "disp32" form (mod=00 rm=101), which is RIP-relative in 64-bit
//! mode; a SIB with no base and no index encodes the same absolute address in both modes.

use super::prng::Rng;
use super::{DATA_BASE, DATA_SIZE};

pub const EAX: u8 = 0;
pub const ECX: u8 = 1;
pub const EDX: u8 = 2;
pub const EBX: u8 = 3;
pub const ESP: u8 = 4;
pub const EBP: u8 = 5;
pub const ESI: u8 = 6;
pub const EDI: u8 = 7;

/// A 32-bit-addressing memory operand.
#[derive(Clone, Copy, Debug)]
pub struct Mem {
    pub base: Option<u8>,
    pub index: Option<u8>,
    /// log2 of the scale.
    pub scale: u8,
    pub disp: i32,
    /// Encode the displacement as 32 bits even if it fits in 8.
    pub disp32: bool,
}

/// A ModRM r/m operand.
#[derive(Clone, Copy, Debug)]
pub enum Rm {
    Reg(u8),
    Mem(Mem),
}

/// Append ModRM (+SIB, +displacement) for `reg` (register or /digit) and `rm`.
pub fn modrm(out: &mut Vec<u8>, reg: u8, rm: Rm) {
    let reg = (reg & 7) << 3;
    let m = match rm {
        Rm::Reg(r) => {
            out.push(0xC0 | reg | (r & 7));
            return;
        }
        Rm::Mem(m) => m,
    };
    let disp_mod = |base: u8| -> u8 {
        if m.disp32 || !(-128..=127).contains(&m.disp) {
            2
        } else if m.disp != 0 || base == EBP {
            1
        } else {
            0
        }
    };
    let push_disp = |out: &mut Vec<u8>, md: u8| match md {
        1 => out.push(m.disp as i8 as u8),
        2 => out.extend_from_slice(&m.disp.to_le_bytes()),
        _ => {}
    };
    match (m.base, m.index) {
        (Some(b), None) if b != ESP => {
            let md = disp_mod(b);
            out.push((md << 6) | reg | b);
            push_disp(out, md);
        }
        (base, index) => {
            let idx = index.unwrap_or(4);
            debug_assert!(idx != ESP || index.is_none(), "ESP cannot be an index");
            let scale = if index.is_some() { m.scale & 3 } else { 0 };
            match base {
                Some(b) => {
                    let md = disp_mod(b);
                    out.push((md << 6) | reg | 4);
                    out.push((scale << 6) | (idx << 3) | b);
                    push_disp(out, md);
                }
                None => {
                    out.push(reg | 4);
                    out.push((scale << 6) | (idx << 3) | 5);
                    out.extend_from_slice(&m.disp.to_le_bytes());
                }
            }
        }
    }
}

/// Choose an addressing form that reaches `DATA_BASE + offset` and set the registers it uses.
/// Registers in `keep` are never used for addressing (their values matter to the instruction).
/// No intermediate sum wraps past 4 GiB, so the address is the same in 64-bit mode.
pub fn mem_at(rng: &mut Rng, regs: &mut [u32; 8], offset: u32, keep: &[u8]) -> Mem {
    let target = (DATA_BASE as u32).wrapping_add(offset);
    let free: Vec<u8> = (0..8u8).filter(|r| !keep.contains(r)).collect();
    let disp: i32 = match rng.below(4) {
        0 => 0,
        1 => rng.range(0, 255) as i32 - 128,
        2 => rng.range(0, 0x2000) as i32 - 0x1000,
        _ => -(rng.below(0x4000) as i32),
    };
    let disp32 = rng.chance(1, 8);
    let form = if free.is_empty() { 0 } else { rng.below(4) };
    match form {
        // Absolute: SIB without base or index.
        0 => Mem {
            base: None,
            index: None,
            scale: 0,
            disp: target as i32,
            disp32: true,
        },
        1 => {
            let b = rng.pick(&free);
            regs[b as usize] = target.wrapping_sub(disp as u32);
            Mem {
                base: Some(b),
                index: None,
                scale: 0,
                disp,
                disp32,
            }
        }
        _ => {
            let idx_choices: Vec<u8> = free.iter().copied().filter(|&r| r != ESP).collect();
            if idx_choices.is_empty() {
                return mem_at(rng, regs, offset, &[0, 1, 2, 3, 4, 5, 6, 7]);
            }
            let i = rng.pick(&idx_choices);
            let scale = rng.below(4) as u8;
            let iv = rng.below(0x100);
            regs[i as usize] = iv;
            let scaled = iv << scale;
            let with_base = form == 3 && free.len() > 1;
            if with_base {
                let bases: Vec<u8> = free.iter().copied().filter(|&r| r != i).collect();
                let b = rng.pick(&bases);
                regs[b as usize] = target.wrapping_sub(scaled).wrapping_sub(disp as u32);
                Mem {
                    base: Some(b),
                    index: Some(i),
                    scale,
                    disp,
                    disp32,
                }
            } else {
                Mem {
                    base: None,
                    index: Some(i),
                    scale,
                    disp: target.wrapping_sub(scaled) as i32,
                    disp32: true,
                }
            }
        }
    }
}

/// A random offset in the data region where `len` bytes fit.
pub fn data_offset(rng: &mut Rng, len: u32) -> u32 {
    rng.below(DATA_SIZE as u32 - len + 1)
}

/// A 16-bit-addressing memory operand (ModRM rm field meaning, SDM Vol. 2A Table 2-1).
#[derive(Clone, Copy, Debug)]
pub enum Mem16 {
    /// `[disp16]` (mod=00 rm=110).
    Abs(u16),
    /// rm 0–7 = [BX+SI] [BX+DI] [BP+SI] [BP+DI] [SI] [DI] [BP] [BX] plus a displacement of
    /// `disp_size` bytes (0, 1 or 2; [BP] needs at least 1).
    Rm { rm: u8, disp: i16, disp_size: u8 },
}

/// Append a 16-bit-addressing ModRM (+displacement) for `reg` (register or /digit).
pub fn modrm16(out: &mut Vec<u8>, reg: u8, m: Mem16) {
    let reg = (reg & 7) << 3;
    match m {
        Mem16::Abs(a) => {
            out.push(reg | 6);
            out.extend_from_slice(&a.to_le_bytes());
        }
        Mem16::Rm {
            rm,
            disp,
            disp_size,
        } => {
            let size = if rm == 6 && disp_size == 0 {
                1
            } else {
                disp_size
            };
            let md = match size {
                0 => 0,
                1 => 1,
                _ => 2,
            };
            out.push((md << 6) | reg | (rm & 7));
            match md {
                1 => out.push(disp as i8 as u8),
                2 => out.extend_from_slice(&disp.to_le_bytes()),
                _ => {}
            }
        }
    }
}

/// The registers (base, index) a 16-bit rm uses, and whether it defaults to SS (BP-based).
pub fn rm16_regs(rm: u8) -> (Option<u8>, Option<u8>, bool) {
    match rm & 7 {
        0 => (Some(EBX), Some(ESI), false),
        1 => (Some(EBX), Some(EDI), false),
        2 => (Some(EBP), Some(ESI), true),
        3 => (Some(EBP), Some(EDI), true),
        4 => (Some(ESI), None, false),
        5 => (Some(EDI), None, false),
        6 => (Some(EBP), None, true),
        _ => (Some(EBX), None, false),
    }
}

/// A 16-bit memory operand whose offset is `offset` (wrapping at 64 KiB), with the low halves
/// of its registers set and their upper halves left random. `None` if it would need a
/// register in `keep`.
pub fn mem16_at(rng: &mut Rng, regs: &mut [u32; 8], offset: u16, keep: &[u8]) -> Mem16 {
    if rng.chance(1, 6) {
        return Mem16::Abs(offset);
    }
    for _ in 0..8 {
        let rm = rng.below(8) as u8;
        let (b, i, _) = rm16_regs(rm);
        if b.is_some_and(|r| keep.contains(&r)) || i.is_some_and(|r| keep.contains(&r)) {
            continue;
        }
        let disp_size = rng.below(3) as u8;
        let disp: i16 = match disp_size {
            0 => 0,
            1 => rng.below(256) as i16 - 128,
            _ => rng.u32() as i16,
        };
        let disp = if rm == 6 && disp_size == 0 { 0 } else { disp };
        let mut rest = offset.wrapping_sub(disp as u16);
        if let Some(i) = i {
            let iv = rng.u32() as u16;
            regs[i as usize] = (regs[i as usize] & 0xFFFF_0000) | u32::from(iv);
            rest = rest.wrapping_sub(iv);
        }
        if let Some(b) = b {
            regs[b as usize] = (regs[b as usize] & 0xFFFF_0000) | u32::from(rest);
        }
        return Mem16::Rm {
            rm,
            disp,
            disp_size,
        };
    }
    Mem16::Abs(offset)
}

/// Like [`mem_at`] for a segment whose base is `seg_base` (32-bit addressing, `offset` is
/// relative to the segment).
pub fn mem_at_seg(rng: &mut Rng, regs: &mut [u32; 8], seg_offset: u32, keep: &[u8]) -> Mem {
    mem_at(rng, regs, seg_offset.wrapping_sub(DATA_BASE as u32), keep)
}
