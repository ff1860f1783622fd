//! Hardware task switching through TSS descriptors and task gates (Intel SDM Vol. 3A §7.3).
//!
//! Owned by SYS. JMP/CALL to a TSS descriptor or task gate, an interrupt through a task gate,
//! and IRET with NT = 1 all end in [`Interpreter::task_switch`]: it checks the new TSS, saves
//! the dynamic fields of the current task (32-bit or 16-bit TSS layout, §7.2.1 and §8.2.1 for
//! the 16-bit one), maintains busy bits, NT and the back-link, sets CR0.TS, loads CR3 (32-bit
//! TSS with paging on), the LDT and the segment registers. Faults found before the commit point
//! are returned (old task context); faults while loading the new task's segments are delivered
//! in the new task, as §7.3 step 12 and Table 7-1 describe.

use pcvm_core::cpu_state::{cr, flags, gpr};
use pcvm_core::{Platform, SegReg, Segment};

use crate::exception::EventKind;
use crate::fault::vector;
use crate::segment::{np, null_segment, sel_code, sys_type, ts, Descriptor, V86_SEG_ATTRIBUTES};
use crate::{Fault, Interpreter};

/// What started a task switch: it decides busy-bit, NT and back-link handling
/// (SDM Vol. 3A §7.3, Table 7-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskSource {
    Jmp,
    Call,
    Iret,
    /// An interrupt or exception through a task gate.
    Interrupt,
}

/// Byte offsets of the 32-bit TSS fields (SDM Vol. 3A §7.2.1, Figure 7-2).
mod tss32 {
    pub const CR3: usize = 0x1C;
    pub const EIP: usize = 0x20;
    pub const EFLAGS: usize = 0x24;
    pub const EAX: usize = 0x28;
    pub const ES: usize = 0x48;
    pub const LDT: usize = 0x60;
    pub const T: usize = 0x64;
    pub const SIZE: usize = 0x68;
}

/// Byte offsets of the 16-bit TSS fields (SDM Vol. 3A §8.2.1 (80286 TSS), Figure 8-?).
mod tss16 {
    pub const IP: usize = 0x0E;
    pub const FLAGS: usize = 0x10;
    pub const AX: usize = 0x12;
    pub const ES: usize = 0x22;
    pub const LDT: usize = 0x2A;
    pub const SIZE: usize = 0x2C;
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Interpreter {
    /// The TSS descriptor a task gate names: it must be in the GDT, an available TSS and
    /// present (SDM Vol. 2 "JMP"/"CALL"/"INT n": #GP(TSS selector + EXT), #NP if absent).
    pub(crate) fn task_gate_target(
        &mut self,
        p: &mut dyn Platform,
        tss_sel: u16,
        ext: u32,
    ) -> Result<Descriptor, Fault> {
        let code = sel_code(tss_sel) + ext;
        if tss_sel & 4 != 0 {
            return Err(Fault::gp(code));
        }
        let Some(desc) = self.read_descriptor(p, tss_sel)? else {
            return Err(Fault::gp(code));
        };
        if desc.is_code_or_data()
            || !matches!(desc.typ(), sys_type::TSS16_AVAIL | sys_type::TSS32_AVAIL)
        {
            return Err(Fault::gp(code));
        }
        if !desc.present() {
            return Err(np(code));
        }
        Ok(desc)
    }

    /// Switch to the task whose TSS descriptor (already checked for type and presence by the
    /// caller) is `desc`, selected by `sel` (SDM Vol. 3A §7.3 steps 3–13).
    pub(crate) fn task_switch(
        &mut self,
        p: &mut dyn Platform,
        sel: u16,
        desc: Descriptor,
        source: TaskSource,
        ext: u32,
    ) -> Result<(), Fault> {
        // IA-32e mode has no hardware task switching (SDM Vol. 3A §7.7): the callers refuse
        // TSS descriptors and task gates first; this keeps the rule in one place too.
        if self.state.long_mode_active() {
            return Err(Fault::gp(sel_code(sel) + ext));
        }
        let new32 = desc.typ() & 8 != 0;
        let new_size = if new32 { tss32::SIZE } else { tss16::SIZE };
        if (desc.limit() as usize) < new_size - 1 {
            return Err(ts(sel_code(sel) + ext));
        }
        let old = self.state.tr;
        let old32 = old.type_field() & 8 != 0;
        // The current TSS must hold the dynamic fields it is about to receive.
        let old_needed = if old32 { 0x5F } else { 0x29 };
        if old.unusable() || old.limit < old_needed {
            return Err(ts(sel_code(old.selector) + ext));
        }
        let new_base = u64::from(desc.base());
        let mut img = [0u8; tss32::SIZE];
        self.read_sys(p, new_base, &mut img[..new_size])?;

        // Save the current task's dynamic state.
        let mut eflags = self.rflags();
        if source == TaskSource::Iret {
            eflags &= !flags::NT;
        }
        if old32 {
            let mut b = [0u8; 0x40];
            let put = |b: &mut [u8], at: usize, v: u32| {
                b[at - 0x20..at - 0x20 + 4].copy_from_slice(&v.to_le_bytes())
            };
            put(&mut b, tss32::EIP, self.state.rip as u32);
            put(&mut b, tss32::EFLAGS, eflags as u32);
            for i in 0..8 {
                put(&mut b, tss32::EAX + 4 * i, self.state.gpr[i] as u32);
            }
            for (i, seg) in SegReg::ALL.iter().enumerate() {
                put(
                    &mut b,
                    tss32::ES + 4 * i,
                    u32::from(self.state.seg(*seg).selector),
                );
            }
            self.write_sys(p, (old.base + 0x20) & 0xFFFF_FFFF, &b)?;
        } else {
            let mut b = [0u8; 0x1C];
            let put = |b: &mut [u8], at: usize, v: u16| {
                b[at - 0x0E..at - 0x0E + 2].copy_from_slice(&v.to_le_bytes())
            };
            put(&mut b, tss16::IP, self.state.rip as u16);
            put(&mut b, tss16::FLAGS, eflags as u16);
            for i in 0..8 {
                put(&mut b, tss16::AX + 2 * i, self.state.gpr[i] as u16);
            }
            for (i, seg) in SegReg::ALL.iter().take(4).enumerate() {
                put(&mut b, tss16::ES + 2 * i, self.state.seg(*seg).selector);
            }
            self.write_sys(p, (old.base + 0x0E) & 0xFFFF_FFFF, &b)?;
        }

        // Busy bits, back-link and NT (Table 7-2).
        if matches!(source, TaskSource::Jmp | TaskSource::Iret) {
            if let Some(d) = self.read_descriptor(p, old.selector)? {
                let access = ((d.0 >> 40) as u8) & !2;
                self.write_descriptor_access(p, old.selector, access)?;
            }
        }
        let mut new_flags = if new32 {
            u64::from(le32(&img, tss32::EFLAGS))
        } else {
            u64::from(le16(&img, tss16::FLAGS))
        };
        if matches!(source, TaskSource::Call | TaskSource::Interrupt) {
            self.write_sys(p, new_base, &old.selector.to_le_bytes())?;
            new_flags |= flags::NT;
        }
        let new_access = ((desc.0 >> 40) as u8) | 2;
        if source != TaskSource::Iret {
            self.write_descriptor_access(p, sel, new_access)?;
        }

        // Commit point: from here on the new task is current.
        self.state.tr = Segment {
            selector: sel,
            base: new_base,
            limit: desc.limit(),
            attributes: desc.attributes() | 2,
        };
        self.state.cr0 |= cr::CR0_TS;
        if new32 && self.state.cr0 & cr::CR0_PG != 0 {
            self.state.cr3 = u64::from(le32(&img, tss32::CR3));
            self.tlb.flush_non_global();
            if self.pae_paging() {
                if let Err(f) = self.load_pdptes(p) {
                    return self.task_fault(p, f, ext);
                }
            }
        }
        let (eip, ldt_sel, t_bit) = if new32 {
            for i in 0..8 {
                self.state.gpr[i] = u64::from(le32(&img, tss32::EAX + 4 * i));
            }
            for (i, seg) in SegReg::ALL.iter().enumerate() {
                self.state.seg_mut(*seg).selector = le16(&img, tss32::ES + 4 * i);
            }
            (
                u64::from(le32(&img, tss32::EIP)),
                le16(&img, tss32::LDT),
                img[tss32::T] & 1 != 0,
            )
        } else {
            for i in 0..8 {
                let r = &mut self.state.gpr[i];
                *r = (*r & !0xFFFF) | u64::from(le16(&img, tss16::AX + 2 * i));
            }
            for (i, seg) in SegReg::ALL.iter().take(4).enumerate() {
                self.state.seg_mut(*seg).selector = le16(&img, tss16::ES + 2 * i);
            }
            (
                u64::from(le16(&img, tss16::IP)),
                le16(&img, tss16::LDT),
                false,
            )
        };
        self.state.rip = eip;
        self.set_rflags(new_flags);
        self.state.ldtr = null_segment(ldt_sel);
        if let Err(f) = self.load_task_segments(p, ldt_sel) {
            return self.task_fault(p, f, ext);
        }
        if self.state.rip > u64::from(self.state.seg(SegReg::Cs).limit) {
            return self.task_fault(p, Fault::gp(0), 0);
        }
        if t_bit {
            // Debug trap flag of the new TSS: #DB with DR6.BT before its first instruction
            // (SDM Vol. 3A §17.2.3).
            self.state.dr[6] |= 1 << 15;
            return self.deliver_event(p, vector::DB, None, EventKind::Exception);
        }
        Ok(())
    }

    /// Deliver a fault detected after the commit point in the context of the new task.
    fn task_fault(&mut self, p: &mut dyn Platform, f: Fault, ext: u32) -> Result<(), Fault> {
        let code = f.error_code().map(|c| c | ext);
        self.deliver_event(p, f.vector, code, EventKind::Exception)
    }

    /// Load LDTR and the segment registers from the selectors just taken from the new TSS,
    /// with the checks of SDM Vol. 3A §7.3 step 12 / Table 7-1.
    fn load_task_segments(&mut self, p: &mut dyn Platform, ldt_sel: u16) -> Result<(), Fault> {
        if ldt_sel & 0xFFFC != 0 {
            let code = sel_code(ldt_sel);
            if ldt_sel & 4 != 0 {
                return Err(ts(code));
            }
            let Some(d) = self.read_descriptor(p, ldt_sel)? else {
                return Err(ts(code));
            };
            if d.is_code_or_data() || d.typ() != sys_type::LDT || !d.present() {
                return Err(ts(code));
            }
            self.state.ldtr = d.to_segment(ldt_sel);
        }
        if self.state.rflags & flags::VM != 0 {
            for seg in SegReg::ALL {
                let sel = self.state.seg(seg).selector;
                *self.state.seg_mut(seg) = Segment {
                    selector: sel,
                    base: u64::from(sel) << 4,
                    limit: 0xFFFF,
                    attributes: V86_SEG_ATTRIBUTES,
                };
            }
            return Ok(());
        }
        let sels: Vec<u16> = SegReg::ALL
            .iter()
            .map(|s| self.state.seg(*s).selector)
            .collect();
        // Until validated, every register is unusable.
        for (seg, sel) in SegReg::ALL.iter().zip(&sels) {
            *self.state.seg_mut(*seg) = null_segment(*sel);
        }
        let cs_sel = sels[SegReg::Cs as usize];
        let cpl = (cs_sel & 3) as u8;
        let code = sel_code(cs_sel);
        if cs_sel & 0xFFFC == 0 {
            return Err(ts(code));
        }
        let Some(d) = self.read_descriptor(p, cs_sel)? else {
            return Err(ts(code));
        };
        if !d.is_code() || (d.conforming() && d.dpl() > cpl) || (!d.conforming() && d.dpl() != cpl)
        {
            return Err(ts(code));
        }
        if !d.present() {
            return Err(np(code));
        }
        self.set_accessed(p, cs_sel, d)?;
        let mut s = d.to_segment(cs_sel);
        s.attributes |= Segment::ATTR_ACCESSED;
        let cs = s;

        let ss_sel = sels[SegReg::Ss as usize];
        let code = sel_code(ss_sel);
        if ss_sel & 0xFFFC == 0 {
            return Err(ts(code));
        }
        let Some(d) = self.read_descriptor(p, ss_sel)? else {
            return Err(ts(code));
        };
        if (ss_sel & 3) as u8 != cpl || d.dpl() != cpl || !d.writable_data() {
            return Err(ts(code));
        }
        if !d.present() {
            return Err(Fault::ss(code));
        }
        self.set_accessed(p, ss_sel, d)?;
        let mut ss = d.to_segment(ss_sel);
        ss.attributes |= Segment::ATTR_ACCESSED;
        *self.state.seg_mut(SegReg::Cs) = cs;
        *self.state.seg_mut(SegReg::Ss) = ss;

        for seg in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            let sel = sels[seg as usize];
            if sel & 0xFFFC == 0 {
                continue;
            }
            let code = sel_code(sel);
            let Some(d) = self.read_descriptor(p, sel)? else {
                return Err(ts(code));
            };
            let rpl = (sel & 3) as u8;
            if !d.readable() || (!d.conforming() && (d.dpl() < cpl || d.dpl() < rpl)) {
                return Err(ts(code));
            }
            if !d.present() {
                return Err(np(code));
            }
            self.set_accessed(p, sel, d)?;
            let mut s = d.to_segment(sel);
            s.attributes |= Segment::ATTR_ACCESSED;
            *self.state.seg_mut(seg) = s;
        }
        let _ = gpr::RSP;
        Ok(())
    }

    /// IRET with NT = 1: return to the task named by the back-link of the current TSS
    /// (SDM Vol. 2 "IRET", Vol. 3A §7.3): it must be a busy TSS in the GDT.
    pub(crate) fn task_return(&mut self, p: &mut dyn Platform) -> Result<(), Fault> {
        let tr = self.state.tr;
        let mut b = [0u8; 2];
        self.read_sys(p, tr.base & 0xFFFF_FFFF, &mut b)?;
        let link = u16::from_le_bytes(b);
        let code = sel_code(link);
        if link & 4 != 0 {
            return Err(ts(code));
        }
        let Some(desc) = self.read_descriptor(p, link)? else {
            return Err(ts(code));
        };
        if desc.is_code_or_data()
            || !matches!(desc.typ(), sys_type::TSS16_BUSY | sys_type::TSS32_BUSY)
        {
            return Err(ts(code));
        }
        if !desc.present() {
            return Err(np(code));
        }
        self.task_switch(p, link, desc, TaskSource::Iret, 0)
    }
}
