//! String instructions MOVS CMPS SCAS LODS STOS INS OUTS with REP/REPE/REPNE and 16- or
//! 32-bit address size (Intel SDM Vol. 2B REP/REPE/REPNE and the instruction pages).
//!
//! Each iteration commits rCX/rSI/rDI before the next, so a fault in the middle leaves the
//! progress so far and RIP at the instruction (restartable, SDM Vol. 1 §7.3.9.1). A long REP
//! runs in chunks: after [`CHUNK`] iterations RIP is rewound to the instruction and the run
//! loop takes pending interrupts before it resumes (SDM Vol. 2B REP: "interruptible").

use iced_x86::Mnemonic as M;
use pcvm_core::cpu_state::{flags as fl, gpr};
use pcvm_core::{Platform, SegReg};

use super::Decoded;
use crate::access::AccessKind;
use crate::flags::FlagOp;
use crate::{Fault, Interpreter};

/// Iterations per visit of a REP string instruction.
pub(crate) const CHUNK: u64 = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Movs,
    Cmps,
    Scas,
    Lods,
    Stos,
    Ins,
    Outs,
}

fn classify(m: M) -> (Kind, u8) {
    match m {
        M::Movsb => (Kind::Movs, 1),
        M::Movsw => (Kind::Movs, 2),
        M::Movsd => (Kind::Movs, 4),
        M::Movsq => (Kind::Movs, 8),
        M::Cmpsb => (Kind::Cmps, 1),
        M::Cmpsw => (Kind::Cmps, 2),
        M::Cmpsd => (Kind::Cmps, 4),
        M::Cmpsq => (Kind::Cmps, 8),
        M::Scasb => (Kind::Scas, 1),
        M::Scasw => (Kind::Scas, 2),
        M::Scasd => (Kind::Scas, 4),
        M::Scasq => (Kind::Scas, 8),
        M::Lodsb => (Kind::Lods, 1),
        M::Lodsw => (Kind::Lods, 2),
        M::Lodsd => (Kind::Lods, 4),
        M::Lodsq => (Kind::Lods, 8),
        M::Stosb => (Kind::Stos, 1),
        M::Stosw => (Kind::Stos, 2),
        M::Stosd => (Kind::Stos, 4),
        M::Stosq => (Kind::Stos, 8),
        M::Insb => (Kind::Ins, 1),
        M::Insw => (Kind::Ins, 2),
        M::Insd => (Kind::Ins, 4),
        M::Outsb => (Kind::Outs, 1),
        M::Outsw => (Kind::Outs, 2),
        _ => (Kind::Outs, 4),
    }
}

/// Execute a string instruction (all iterations of a REP, up to [`CHUNK`]).
pub(super) fn string_op(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
) -> Result<(), Fault> {
    let (kind, size) = classify(d.insn.mnemonic());
    let am = d.amask;
    let rep = d.insn.has_rep_prefix() || d.insn.has_repne_prefix();
    // REPE/REPNE only test ZF for CMPS and SCAS.
    let cond_zf: Option<bool> = if matches!(kind, Kind::Cmps | Kind::Scas) && rep {
        Some(d.insn.has_repe_prefix())
    } else {
        None
    };
    let step = if cpu.rflags() & fl::DF != 0 {
        (u64::from(size)).wrapping_neg()
    } else {
        u64::from(size)
    };
    if matches!(kind, Kind::Ins | Kind::Outs) {
        let port = cpu.state.gpr[gpr::RDX] as u16;
        cpu.check_io_permission(p, port, size)?;
        cpu.io_done = true;
    }
    let mut done = 0u64;
    let r = string_loop(cpu, p, d, kind, size, am, rep, cond_zf, step, &mut done);
    // Each iteration after the first counts as a retired instruction, so budgets and the
    // instruction-count clock advance with the work done.
    cpu.rep_extra += done.saturating_sub(1);
    r
}

#[allow(clippy::too_many_arguments)]
fn string_loop(
    cpu: &mut Interpreter,
    p: &mut dyn Platform,
    d: &Decoded,
    kind: Kind,
    size: u8,
    am: u64,
    rep: bool,
    cond_zf: Option<bool>,
    step: u64,
    done: &mut u64,
) -> Result<(), Fault> {
    let src_seg = d.seg;
    let bump = |cpu: &mut Interpreter, r: usize| {
        let v = cpu.state.gpr[r];
        cpu.state.gpr[r] = super::addr_update(v, v.wrapping_add(step), am);
    };
    // Under TF a REP string instruction traps after every iteration (SDM Vol. 3A
    // §17.3.1.4); otherwise a visit runs at most CHUNK iterations and the remaining budget.
    let chunk = if cpu.state.rflags & fl::TF != 0 {
        1
    } else {
        CHUNK.min(cpu.rep_limit)
    };
    loop {
        if rep {
            if cpu.state.gpr[gpr::RCX] & am == 0 {
                return Ok(());
            }
            if *done >= chunk {
                // Let the run loop take interrupts; the instruction resumes where it stopped.
                cpu.state.rip = cpu.cur_rip;
                return Ok(());
            }
        }
        let si = cpu.state.gpr[gpr::RSI] & am;
        let di = cpu.state.gpr[gpr::RDI] & am;
        match kind {
            Kind::Movs => {
                if rep {
                    if let Some(n) = cpu.movs_fast(p, d, size, step, am, chunk - *done)? {
                        *done += n;
                        continue;
                    }
                }
                let v = cpu.read_mem(p, src_seg, si, size)?;
                cpu.write_mem(p, SegReg::Es, di, size, v)?;
                bump(cpu, gpr::RSI);
                bump(cpu, gpr::RDI);
            }
            Kind::Stos => {
                let v = cpu.get_reg(0, size);
                if rep {
                    if let Some(n) = cpu.stos_fast(p, size, step, am, v, chunk - *done)? {
                        *done += n;
                        continue;
                    }
                }
                cpu.write_mem(p, SegReg::Es, di, size, v)?;
                bump(cpu, gpr::RDI);
            }
            Kind::Lods => {
                let v = cpu.read_mem(p, src_seg, si, size)?;
                cpu.set_reg(0, size, v);
                bump(cpu, gpr::RSI);
            }
            Kind::Cmps => {
                let a = cpu.read_mem(p, src_seg, si, size)?;
                let b = cpu.read_mem(p, SegReg::Es, di, size)?;
                bump(cpu, gpr::RSI);
                bump(cpu, gpr::RDI);
                let r = a.wrapping_sub(b) & super::mask(size);
                cpu.set_lazy(FlagOp::Sub, size * 8, a, b, r);
            }
            Kind::Scas => {
                let a = cpu.get_reg(0, size);
                let b = cpu.read_mem(p, SegReg::Es, di, size)?;
                bump(cpu, gpr::RDI);
                let r = a.wrapping_sub(b) & super::mask(size);
                cpu.set_lazy(FlagOp::Sub, size * 8, a, b, r);
            }
            Kind::Ins => {
                // Check the destination before reading the port (a read may have side effects).
                let linear = cpu.seg_linear(SegReg::Es, di, u64::from(size), AccessKind::Write)?;
                cpu.translate(p, linear, AccessKind::Write)?;
                let port = cpu.state.gpr[gpr::RDX] as u16;
                let mut b = [0u8; 8];
                p.io_read(port, &mut b[..usize::from(size).min(4)]);
                cpu.write_mem(p, SegReg::Es, di, size, u64::from_le_bytes(b))?;
                bump(cpu, gpr::RDI);
            }
            Kind::Outs => {
                let v = cpu.read_mem(p, src_seg, si, size)?;
                let port = cpu.state.gpr[gpr::RDX] as u16;
                p.io_write(port, &v.to_le_bytes()[..usize::from(size)]);
                bump(cpu, gpr::RSI);
            }
        }
        if !rep {
            return Ok(());
        }
        let rcx = cpu.state.gpr[gpr::RCX];
        cpu.state.gpr[gpr::RCX] = super::addr_update(rcx, rcx.wrapping_sub(1), am);
        *done += 1;
        if let Some(want_zf) = cond_zf {
            let zf = cpu.rflags() & fl::ZF != 0;
            if zf != want_zf {
                return Ok(());
            }
        }
        if matches!(kind, Kind::Ins | Kind::Outs) && p.system_request().is_some() {
            return Ok(());
        }
    }
}

impl Interpreter {
    /// Bulk REP MOVS within one page of RAM on each side: copies as many elements as fit
    /// without crossing a page, segment limit or the count, then commits the registers.
    /// Returns false when the general path must take this iteration.
    fn movs_fast(
        &mut self,
        p: &mut dyn Platform,
        d: &Decoded,
        size: u8,
        step: u64,
        am: u64,
        limit: u64,
    ) -> Result<Option<u64>, Fault> {
        if !self.debug.watchpoints.is_empty()
            || step > 8
            || self.state.rflags & fl::TF != 0
            || self.state.dr[7] & 0xFF != 0
        {
            // Only ascending copies take the fast path.
            return Ok(None);
        }
        let count = self.state.gpr[gpr::RCX] & am;
        let si = self.state.gpr[gpr::RSI] & am;
        let di = self.state.gpr[gpr::RDI] & am;
        let sz = u64::from(size);
        // Elements until a page end, a 16-bit wrap or the count.
        let room = |off: u64, linear: u64| -> u64 {
            let page = (4096 - (linear & 0xFFF)) / sz;
            let wrap = ((am - off) / sz).saturating_add(1);
            page.min(wrap)
        };
        let src_lin = self.seg_linear(d.seg, si, sz, AccessKind::Read)?;
        let dst_lin = self.seg_linear(SegReg::Es, di, sz, AccessKind::Write)?;
        let n = count
            .min(room(si, src_lin))
            .min(room(di, dst_lin))
            .min(1024)
            .min(limit);
        if n < 2 {
            return Ok(None);
        }
        let bytes = n * sz;
        // Both ends must pass the segment checks.
        self.seg_linear(d.seg, si, bytes, AccessKind::Read)?;
        self.seg_linear(SegReg::Es, di, bytes, AccessKind::Write)?;
        let src_phys = self.translate(p, src_lin, AccessKind::Read)?;
        let dst_phys = self.translate(p, dst_lin, AccessKind::Write)?;
        let mem = p.memory();
        let (pcvm_core::PhysRegion::Ram(so), pcvm_core::PhysRegion::Ram(dof)) =
            (mem.classify(src_phys, false), mem.classify(dst_phys, true))
        else {
            return Ok(None);
        };
        // Overlapping forward copies must replicate element by element.
        if dof > so && dof < so + bytes {
            return Ok(None);
        }
        if !mem.copy_ram(so, dof, bytes as usize) {
            return Ok(None);
        }
        if mem.code_dirty() {
            self.smc = true;
        }
        let adv = |v: u64| super::addr_update(v, v.wrapping_add(bytes), am);
        self.state.gpr[gpr::RSI] = adv(self.state.gpr[gpr::RSI]);
        self.state.gpr[gpr::RDI] = adv(self.state.gpr[gpr::RDI]);
        let rcx = self.state.gpr[gpr::RCX];
        self.state.gpr[gpr::RCX] = super::addr_update(rcx, rcx.wrapping_sub(n), am);
        Ok(Some(n))
    }

    /// Bulk REP STOS within one page of RAM, as [`Self::movs_fast`].
    fn stos_fast(
        &mut self,
        p: &mut dyn Platform,
        size: u8,
        step: u64,
        am: u64,
        v: u64,
        limit: u64,
    ) -> Result<Option<u64>, Fault> {
        if !self.debug.watchpoints.is_empty()
            || step > 8
            || self.state.rflags & fl::TF != 0
            || self.state.dr[7] & 0xFF != 0
        {
            return Ok(None);
        }
        let count = self.state.gpr[gpr::RCX] & am;
        let di = self.state.gpr[gpr::RDI] & am;
        let sz = u64::from(size);
        let dst_lin = self.seg_linear(SegReg::Es, di, sz, AccessKind::Write)?;
        let n = count
            .min((4096 - (dst_lin & 0xFFF)) / sz)
            .min(((am - di) / sz).saturating_add(1))
            .min(1024)
            .min(limit);
        if n < 2 {
            return Ok(None);
        }
        let bytes = n * sz;
        self.seg_linear(SegReg::Es, di, bytes, AccessKind::Write)?;
        let dst_phys = self.translate(p, dst_lin, AccessKind::Write)?;
        let mem = p.memory();
        let pcvm_core::PhysRegion::Ram(dof) = mem.classify(dst_phys, true) else {
            return Ok(None);
        };
        // The element repeated over 8 bytes (sizes are 1, 2, 4 or 8).
        let pattern = match size {
            1 => (v & 0xFF) * 0x0101_0101_0101_0101,
            2 => (v & 0xFFFF) * 0x0001_0001_0001_0001,
            4 => (v & 0xFFFF_FFFF) * 0x0000_0001_0000_0001,
            _ => v,
        };
        if !mem.fill_ram(dof, bytes as usize, pattern) {
            return Ok(None);
        }
        if mem.code_dirty() {
            self.smc = true;
        }
        let rdi = self.state.gpr[gpr::RDI];
        self.state.gpr[gpr::RDI] = super::addr_update(rdi, rdi.wrapping_add(bytes), am);
        let rcx = self.state.gpr[gpr::RCX];
        self.state.gpr[gpr::RCX] = super::addr_update(rcx, rcx.wrapping_sub(n), am);
        Ok(Some(n))
    }
}
