//! Exception and interrupt delivery: IVT in real mode, IDT in protected and virtual-8086 mode,
//! with double- and triple-fault escalation (Intel SDM Vol. 3A §6).
//!
//! Owned by SYS. Protected-mode delivery follows SDM Vol. 2 "INT n/INTO/INT3/INT1" and
//! Vol. 3A §6.12: interrupt, trap and task gates; a stack switch from the TSS when entering a
//! more privileged non-conforming code segment (16- and 32-bit TSS); virtual-8086 interrupts
//! to ring 0 pushing GS/FS/DS/ES; error codes with the EXT and IDT bits (§6.13).
//! [`Interpreter::raise`] applies SDM Vol. 3A §6.15 Table 6-5 (benign, contributory and
//! page-fault classes): #DF with error code 0, and shutdown when #DF delivery itself faults.
//!
//! IA-32e mode (§6.14) uses 16-byte interrupt and trap gates to 64-bit code only: SS:RSP is
//! always pushed, RSP is aligned down to 16 bytes, the stack comes from the 64-bit TSS (RSPn
//! on a privilege change, or the gate's IST entry), SS becomes NULL(new CPL) on a privilege
//! change, and every frame slot is 8 bytes.

use pcvm_core::cpu_state::{flags, gpr};
use pcvm_core::{Platform, SegReg, Segment};

use crate::access::AccessKind;
use crate::fault::vector;
use crate::segment::{
    is_canonical, np, null_segment, null_stack_segment, sel_code, sys_type, ts, Descriptor, Upper,
};
use crate::task::TaskSource;
use crate::{Fault, Interpreter};

/// What kind of event is being delivered: it decides the pushed return address and which
/// privilege checks apply (SDM Vol. 3A §6.12.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// A fault or trap raised by the CPU (return address as set by the caller in RIP).
    Exception,
    /// INT n / INT3 / INTO: RIP has been advanced past the instruction; gate DPL is checked.
    Software,
    /// An external interrupt or NMI.
    External,
}

/// The CPU entered shutdown: a fault while delivering a double fault (triple fault,
/// SDM Vol. 3A §6.15 "Interrupt 8").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shutdown;

/// Exception classes for double-fault detection (SDM Vol. 3A §6.15, Table 6-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Benign,
    Contributory,
    PageFault,
    DoubleFault,
}

fn class_of(v: u8) -> Class {
    match v {
        vector::DE | vector::TS | vector::NP | vector::SS | vector::GP => Class::Contributory,
        vector::PF => Class::PageFault,
        vector::DF => Class::DoubleFault,
        _ => Class::Benign,
    }
}

impl Interpreter {
    /// Deliver an exception raised by an instruction (or during delivery), escalating to #DF
    /// and to shutdown per SDM Vol. 3A §6.15 Table 6-5. The run loop calls this for every
    /// [`Fault`]; on `Err(Shutdown)` it returns `VmExit::Shutdown`.
    pub(crate) fn raise(&mut self, p: &mut dyn Platform, fault: Fault) -> Result<(), Shutdown> {
        self.raise_event(p, fault.vector, fault.error_code(), EventKind::Exception)
    }

    /// Deliver any event (exception, software or external interrupt); a fault during delivery
    /// is delivered in turn (or escalates to #DF / shutdown). State changes of a failed
    /// delivery attempt are rolled back, except CR2 of a page fault.
    pub(crate) fn raise_event(
        &mut self,
        p: &mut dyn Platform,
        vector: u8,
        error_code: Option<u32>,
        kind: EventKind,
    ) -> Result<(), Shutdown> {
        let mut cur = (vector, error_code, kind);
        let mut first = if kind == EventKind::Exception {
            class_of(vector)
        } else {
            Class::Benign
        };
        // Each step either escalates a class or switches to a benign/serial delivery; bound the
        // chain so a pathological IDT cannot loop forever.
        for _ in 0..8 {
            let saved = self.state.clone();
            let saved_flags = self.flags;
            match self.deliver_event(p, cur.0, cur.1, cur.2) {
                Ok(()) => return Ok(()),
                Err(f) => {
                    let cr2 = self.state.cr2;
                    self.state = saved;
                    self.flags = saved_flags;
                    self.state.cr2 = cr2;
                    if first == Class::DoubleFault {
                        return Err(Shutdown);
                    }
                    let second = class_of(f.vector);
                    let double = matches!(
                        (first, second),
                        (Class::Contributory, Class::Contributory)
                            | (Class::PageFault, Class::Contributory)
                            | (Class::PageFault, Class::PageFault)
                    );
                    if double {
                        cur = (vector::DF, Some(0), EventKind::Exception);
                        first = Class::DoubleFault;
                    } else {
                        cur = (f.vector, f.error_code(), EventKind::Exception);
                        first = second;
                    }
                }
            }
        }
        Err(Shutdown)
    }

    /// Deliver interrupt/exception `vector`. On return the CPU is at the handler's first
    /// instruction. A fault while delivering is returned with the state partly changed; the
    /// caller ([`Self::raise_event`]) rolls back and escalates.
    pub(crate) fn deliver_event(
        &mut self,
        p: &mut dyn Platform,
        vector: u8,
        error_code: Option<u32>,
        kind: EventKind,
    ) -> Result<(), Fault> {
        if vector == vector::NMI && kind == EventKind::External {
            // NMIs are blocked until the next IRET (SDM Vol. 3A §6.7.1).
            self.state.nmi_blocked = true;
        }
        if !self.state.protected_mode() {
            return self.deliver_real(p, vector);
        }
        if self.state.long_mode_active() {
            return self.deliver_long(p, vector, error_code, kind);
        }
        self.deliver_protected(p, vector, error_code, kind)
    }

    /// IA-32e mode delivery (SDM Vol. 3A §6.14, Vol. 2 "INT n" IA-32e-MODE): the IDT holds
    /// 16-byte 64-bit interrupt/trap gates whose target must be a 64-bit code segment at a
    /// canonical offset. The frame (SS, RSP, RFLAGS, CS, RIP and the error code, 8 bytes each)
    /// goes on a 16-byte-aligned stack: the current one, RSPn of the 64-bit TSS on a privilege
    /// change (SS = NULL(n)), or the gate's IST stack.
    fn deliver_long(
        &mut self,
        p: &mut dyn Platform,
        vector: u8,
        error_code: Option<u32>,
        kind: EventKind,
    ) -> Result<(), Fault> {
        let ext = u32::from(kind != EventKind::Software);
        let idt_code = u32::from(vector) * 8 + 2 + ext;
        let entry = u64::from(vector) * 16;
        if entry + 15 > u64::from(self.state.idtr.limit) {
            return Err(Fault::gp(idt_code));
        }
        let mut b = [0u8; 16];
        self.read_sys(p, self.state.idtr.base.wrapping_add(entry), &mut b)?;
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&b[..8]);
        hi.copy_from_slice(&b[8..]);
        let gate = Descriptor(u64::from_le_bytes(lo));
        let upper = Upper(u64::from_le_bytes(hi));
        let typ = gate.typ();
        if gate.is_code_or_data() || !matches!(typ, sys_type::INT_GATE64 | sys_type::TRAP_GATE64) {
            return Err(Fault::gp(idt_code));
        }
        let cpl = self.state.cpl();
        if kind == EventKind::Software && gate.dpl() < cpl {
            return Err(Fault::gp(idt_code));
        }
        if !gate.present() {
            return Err(np(idt_code));
        }
        let sel = gate.gate_selector();
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(ext));
        }
        let Some(desc) = self.read_descriptor(p, sel)? else {
            return Err(Fault::gp(sel_code(sel) + ext));
        };
        if !desc.is_code() || desc.dpl() > cpl || !desc.long() || desc.db() {
            return Err(Fault::gp(sel_code(sel) + ext));
        }
        if !desc.present() {
            return Err(np(sel_code(sel) + ext));
        }
        let offset = u64::from(gate.gate_offset()) | (upper.high() << 32);
        if !is_canonical(offset) {
            return Err(Fault::gp(ext));
        }
        let new_cpl = if desc.conforming() { cpl } else { desc.dpl() };
        let mut old_flags = self.rflags();
        if kind == EventKind::Exception && is_fault(vector) {
            old_flags |= flags::RF;
        }
        let old_ss = u64::from(self.state.seg(SegReg::Ss).selector);
        let old_rsp = self.state.gpr[gpr::RSP];
        let old_cs = u64::from(self.state.seg(SegReg::Cs).selector);
        let old_rip = self.state.rip;
        let ist = gate.gate_ist();
        let rsp = if ist != 0 {
            self.tss64_field(p, tss64_ist(ist), ext)?
        } else if new_cpl < cpl {
            self.tss64_field(p, tss64_rsp(new_cpl), ext)?
        } else {
            old_rsp
        };
        let rsp = rsp & !0xF;
        let frame_len = 8 * (5 + u64::from(error_code.is_some()));
        let bottom = rsp.wrapping_sub(frame_len);
        if !is_canonical(rsp) || !is_canonical(bottom) {
            return Err(Fault::ss(ext));
        }
        if new_cpl < cpl {
            *self.state.seg_mut(SegReg::Ss) = null_stack_segment(u16::from(new_cpl), new_cpl);
        }
        self.set_accessed(p, sel, desc)?;
        let mut cs = desc.to_segment((sel & !3) | u16::from(new_cpl));
        cs.attributes |= Segment::ATTR_ACCESSED;
        *self.state.seg_mut(SegReg::Cs) = cs;
        // The frame is written at the new privilege level (a supervisor access below ring 3).
        let mut frame = [0u64; 6];
        let mut n = 0;
        if let Some(code) = error_code {
            frame[0] = u64::from(code);
            n = 1;
        }
        for v in [old_rip, old_cs, old_flags, old_rsp, old_ss] {
            frame[n] = v;
            n += 1;
        }
        let mut bytes = [0u8; 48];
        for (i, v) in frame[..n].iter().enumerate() {
            bytes[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
        }
        self.write_linear(p, bottom, &bytes[..8 * n])
            .map_err(|f| with_ext(f, ext))?;
        self.state.gpr[gpr::RSP] = bottom;
        self.state.rip = offset;
        let mut f = old_flags & !(flags::TF | flags::VM | flags::RF | flags::NT);
        if typ == sys_type::INT_GATE64 {
            f &= !flags::IF;
        }
        self.set_rflags(f);
        Ok(())
    }

    /// A quadword of the 64-bit TSS at byte `offset` (RSPn or ISTn, SDM Vol. 3A §7.7
    /// Figure 7-11); a TSS too short for it is #TS(TSS selector + EXT).
    pub(crate) fn tss64_field(
        &mut self,
        p: &mut dyn Platform,
        offset: u64,
        ext: u32,
    ) -> Result<u64, Fault> {
        let tr = self.state.tr;
        if tr.unusable() || offset + 7 > u64::from(tr.limit) {
            return Err(ts(sel_code(tr.selector) + ext));
        }
        let mut b = [0u8; 8];
        self.read_sys(p, tr.base.wrapping_add(offset), &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Real-address mode (SDM Vol. 3A §20.1.4): 4-byte IVT entries at IDTR.base; FLAGS, CS
    /// and IP are pushed, IF/TF/AC cleared. No error code.
    fn deliver_real(&mut self, p: &mut dyn Platform, vector: u8) -> Result<(), Fault> {
        let entry = u64::from(vector) * 4;
        if entry + 3 > u64::from(self.state.idtr.limit) {
            return Err(Fault::gp(u32::from(vector) * 8 + 2));
        }
        let linear = self.state.idtr.base.wrapping_add(entry) & 0xFFFF_FFFF;
        let mut b = [0u8; 4];
        self.read_linear(p, linear, &mut b, AccessKind::Read)?;
        let ip = u16::from_le_bytes([b[0], b[1]]);
        let cs = u16::from_le_bytes([b[2], b[3]]);
        let rflags = self.rflags();
        self.push(p, rflags, 2)?;
        self.push(p, u64::from(self.state.seg(SegReg::Cs).selector), 2)?;
        self.push(p, self.state.rip & 0xFFFF, 2)?;
        self.set_rflags(rflags & !(flags::IF | flags::TF | flags::AC | flags::RF));
        let c = self.state.seg_mut(SegReg::Cs);
        c.selector = cs;
        c.base = u64::from(cs) << 4;
        self.state.rip = u64::from(ip);
        Ok(())
    }

    /// Protected-mode and virtual-8086 delivery through the IDT (SDM Vol. 2 "INT n" operation,
    /// Vol. 3A §6.12).
    fn deliver_protected(
        &mut self,
        p: &mut dyn Platform,
        vector: u8,
        error_code: Option<u32>,
        kind: EventKind,
    ) -> Result<(), Fault> {
        let ext = u32::from(kind != EventKind::Software);
        let idt_code = u32::from(vector) * 8 + 2 + ext;
        let entry = u64::from(vector) * 8;
        if entry + 7 > u64::from(self.state.idtr.limit) {
            return Err(Fault::gp(idt_code));
        }
        let mut b = [0u8; 8];
        self.read_sys(p, (self.state.idtr.base + entry) & 0xFFFF_FFFF, &mut b)?;
        let gate = Descriptor(u64::from_le_bytes(b));
        let typ = gate.typ();
        if gate.is_code_or_data()
            || !matches!(
                typ,
                sys_type::TASK_GATE
                    | sys_type::INT_GATE16
                    | sys_type::TRAP_GATE16
                    | sys_type::INT_GATE32
                    | sys_type::TRAP_GATE32
            )
        {
            return Err(Fault::gp(idt_code));
        }
        let cpl = self.state.cpl();
        if kind == EventKind::Software && gate.dpl() < cpl {
            return Err(Fault::gp(idt_code));
        }
        if !gate.present() {
            return Err(np(idt_code));
        }
        if typ == sys_type::TASK_GATE {
            let tss_sel = gate.gate_selector();
            let desc = self.task_gate_target(p, tss_sel, ext)?;
            let tss32 = desc.typ() & 8 != 0;
            self.task_switch(p, tss_sel, desc, TaskSource::Interrupt, ext)?;
            if let Some(code) = error_code {
                self.push(p, u64::from(code), if tss32 { 4 } else { 2 })
                    .map_err(|f| with_ext(f, ext))?;
            }
            return Ok(());
        }
        let sel = gate.gate_selector();
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(ext));
        }
        let Some(desc) = self.read_descriptor(p, sel)? else {
            return Err(Fault::gp(sel_code(sel) + ext));
        };
        if !desc.is_code() || desc.dpl() > cpl {
            return Err(Fault::gp(sel_code(sel) + ext));
        }
        if !desc.present() {
            return Err(np(sel_code(sel) + ext));
        }
        let gate32 = typ & 8 != 0;
        let size: u8 = if gate32 { 4 } else { 2 };
        let offset = if gate32 {
            gate.gate_offset()
        } else {
            gate.gate_offset() & 0xFFFF
        };
        if offset > desc.limit() {
            return Err(Fault::gp(ext));
        }
        let vm = self.state.rflags & flags::VM != 0;
        let mut old_flags = self.rflags();
        if kind == EventKind::Exception && is_fault(vector) {
            // Faults push RF = 1 so IRET re-executes the instruction without re-triggering
            // an instruction breakpoint (SDM Vol. 3A §17.3.1.1).
            old_flags |= flags::RF;
        }
        let old_cs = self.state.seg(SegReg::Cs).selector;
        let old_rip = self.state.rip;
        let new_cpl;
        if !desc.conforming() && desc.dpl() < cpl {
            // Inter-privilege: switch to the stack for the new CPL from the TSS.
            new_cpl = desc.dpl();
            if vm && new_cpl != 0 {
                return Err(Fault::gp(sel_code(sel) + ext));
            }
            let old_ss = self.state.seg(SegReg::Ss).selector;
            let old_esp = self.state.gpr[gpr::RSP];
            let (ss_sel, esp) = self.tss_stack(p, new_cpl, ext)?;
            let frame =
                u32::from(size) * (5 + if vm { 4 } else { 0 } + u32::from(error_code.is_some()));
            self.switch_stack(p, ss_sel, esp, new_cpl, frame, ext)?;
            let push = |cpu: &mut Self, p: &mut dyn Platform, v: u64| {
                cpu.push(p, v, size).map_err(|f| with_ext(f, ext))
            };
            if vm {
                for seg in [SegReg::Gs, SegReg::Fs, SegReg::Ds, SegReg::Es] {
                    let s = u64::from(self.state.seg(seg).selector);
                    push(self, p, s)?;
                }
            }
            push(self, p, u64::from(old_ss))?;
            push(self, p, old_esp)?;
            push(self, p, old_flags)?;
            push(self, p, u64::from(old_cs))?;
            push(self, p, old_rip)?;
            if let Some(code) = error_code {
                push(self, p, u64::from(code))?;
            }
            if vm {
                for seg in [SegReg::Gs, SegReg::Fs, SegReg::Ds, SegReg::Es] {
                    *self.state.seg_mut(seg) = null_segment(0);
                }
            }
        } else if desc.conforming() || desc.dpl() == cpl {
            if vm {
                return Err(Fault::gp(sel_code(sel) + ext));
            }
            new_cpl = cpl;
            let push = |cpu: &mut Self, p: &mut dyn Platform, v: u64| {
                cpu.push(p, v, size).map_err(|f| with_ext(f, ext))
            };
            push(self, p, old_flags)?;
            push(self, p, u64::from(old_cs))?;
            push(self, p, old_rip)?;
            if let Some(code) = error_code {
                push(self, p, u64::from(code))?;
            }
        } else {
            return Err(Fault::gp(sel_code(sel) + ext));
        }
        self.set_accessed(p, sel, desc)?;
        let mut cs = desc.to_segment((sel & !3) | u16::from(new_cpl));
        cs.attributes |= Segment::ATTR_ACCESSED;
        *self.state.seg_mut(SegReg::Cs) = cs;
        self.state.rip = u64::from(offset);
        let mut f = old_flags & !(flags::TF | flags::VM | flags::RF | flags::NT);
        if typ == sys_type::INT_GATE16 || typ == sys_type::INT_GATE32 {
            f &= !flags::IF;
        }
        self.set_rflags(f);
        Ok(())
    }

    /// SS:ESP for privilege level `cpl` from the current TSS (SDM Vol. 3A §7.2.1, §8.2.1 for
    /// the 16-bit layout). A TSS too short for the field is #TS(TSS selector).
    pub(crate) fn tss_stack(
        &mut self,
        p: &mut dyn Platform,
        cpl: u8,
        ext: u32,
    ) -> Result<(u16, u64), Fault> {
        let tr = self.state.tr;
        let tr_fault = ts(sel_code(tr.selector) + ext);
        let t = tr.type_field();
        if tr.unusable() || !matches!(t & 7, 1 | 3) {
            return Err(tr_fault);
        }
        if t & 8 != 0 {
            let off = 4 + 8 * u64::from(cpl);
            if off + 5 > u64::from(tr.limit) {
                return Err(tr_fault);
            }
            let mut b = [0u8; 6];
            self.read_sys(p, (tr.base + off) & 0xFFFF_FFFF, &mut b)?;
            let esp = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            Ok((u16::from_le_bytes([b[4], b[5]]), u64::from(esp)))
        } else {
            let off = 2 + 4 * u64::from(cpl);
            if off + 3 > u64::from(tr.limit) {
                return Err(tr_fault);
            }
            let mut b = [0u8; 4];
            self.read_sys(p, (tr.base + off) & 0xFFFF_FFFF, &mut b)?;
            let sp = u16::from_le_bytes([b[0], b[1]]);
            Ok((u16::from_le_bytes([b[2], b[3]]), u64::from(sp)))
        }
    }

    /// Validate and load a new inner stack `ss_sel:esp` for privilege level `cpl` taken from
    /// the TSS (SDM Vol. 2 "CALL", "INT n": #TS for a bad selector or descriptor, #SS if not
    /// present or without room for `frame` bytes).
    pub(crate) fn switch_stack(
        &mut self,
        p: &mut dyn Platform,
        ss_sel: u16,
        esp: u64,
        cpl: u8,
        frame: u32,
        ext: u32,
    ) -> Result<(), Fault> {
        if ss_sel & 0xFFFC == 0 {
            return Err(ts(ext));
        }
        let code = sel_code(ss_sel) + ext;
        let Some(desc) = self.read_descriptor(p, ss_sel)? else {
            return Err(ts(code));
        };
        if (ss_sel & 3) as u8 != cpl || desc.dpl() != cpl || !desc.writable_data() {
            return Err(ts(code));
        }
        if !desc.present() {
            return Err(Fault::ss(code));
        }
        self.set_accessed(p, ss_sel, desc)?;
        let mut ss = desc.to_segment(ss_sel);
        ss.attributes |= Segment::ATTR_ACCESSED;
        *self.state.seg_mut(SegReg::Ss) = ss;
        let mask = if ss.db() { 0xFFFF_FFFF } else { 0xFFFF };
        self.state.gpr[gpr::RSP] = esp & mask;
        if frame > 0 {
            let bottom = esp.wrapping_sub(u64::from(frame)) & mask;
            if self
                .seg_linear(SegReg::Ss, bottom, u64::from(frame), AccessKind::Write)
                .is_err()
            {
                return Err(Fault::ss(code));
            }
        }
        Ok(())
    }
}

/// Offset of RSPn in the 64-bit TSS (SDM Vol. 3A Figure 7-11).
pub(crate) fn tss64_rsp(cpl: u8) -> u64 {
    4 + 8 * u64::from(cpl)
}

/// Offset of ISTn (n = 1–7) in the 64-bit TSS (SDM Vol. 3A Figure 7-11).
pub(crate) fn tss64_ist(n: u8) -> u64 {
    0x24 + 8 * u64::from(n - 1)
}

/// Fault-class exceptions (SDM Vol. 3A Table 6-1); #DB is left out because only its
/// instruction-breakpoint form is a fault, and that one pushes RF = 0.
fn is_fault(v: u8) -> bool {
    matches!(
        v,
        vector::DE
            | vector::BR
            | vector::UD
            | vector::NM
            | vector::TS
            | vector::NP
            | vector::SS
            | vector::GP
            | vector::PF
            | vector::MF
            | vector::AC
    )
}

/// Add the EXT bit to a selector error code raised while delivering an event
/// (SDM Vol. 3A §6.13).
pub(crate) fn with_ext(f: Fault, ext: u32) -> Fault {
    match (f.vector, f.error_code()) {
        (vector::TS | vector::NP | vector::SS | vector::GP, Some(c)) => {
            Fault::with_code(f.vector, c | ext)
        }
        _ => f,
    }
}
