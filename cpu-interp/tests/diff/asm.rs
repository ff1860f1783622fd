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
    let target = DATA_BASE as u32 + offset;
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
