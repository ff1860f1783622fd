//! Far control transfers: JMP FAR, CALL FAR, RETF, IRET, INT n/INT3/INTO/INT1 in real,
//! protected and virtual-8086 mode (Intel SDM Vol. 2 "JMP", "CALL", "RET", "IRET", "INT n";
//! Vol. 3A §5.8 privilege-level changes, §7.3 task switches, §20.2–20.3 virtual-8086 mode).
//!
//! Owned by SYS. On entry `state.rip` holds the next instruction's address. Each transfer
//! validates before it changes anything where the SDM orders checks first; a fault part-way
//! (a stack push at the new level) is rolled back by [`Interpreter::exec_far`] itself in
//! protected and virtual-8086 mode. In real mode only GPRs, RFLAGS and segment registers can
//! change, which the run loop's snapshot of `SNAP` instructions restores.

use iced_x86::{Code, Instruction, Mnemonic, OpKind};
use pcvm_core::cpu_state::{cr, flags, gpr};
use pcvm_core::{Platform, SegReg, Segment};

use crate::access::AccessKind;
use crate::exception::EventKind;
use crate::fault::vector;
use crate::segment::{np, sel_code, sys_type, Descriptor, V86_SEG_ATTRIBUTES};
use crate::task::TaskSource;
use crate::{Fault, Interpreter};

impl Interpreter {
    /// Execute a far transfer or software interrupt (see the module docs).
    pub(crate) fn exec_far(
        &mut self,
        p: &mut dyn Platform,
        insn: &Instruction,
    ) -> Result<(), Fault> {
        if !self.state.protected_mode() {
            // Real mode touches only the stack, RFLAGS, CS and RIP, which the run loop's
            // register snapshot restores: skip the full copy on this hot path (BIOS calls).
            return self.exec_far_inner(p, insn);
        }
        let saved = self.state.clone();
        let saved_flags = self.flags;
        let r = self.exec_far_inner(p, insn);
        if r.is_err() {
            // Keep CR2: a page fault's address must reach the handler.
            let cr2 = self.state.cr2;
            self.state = saved;
            self.flags = saved_flags;
            self.state.cr2 = cr2;
        }
        r
    }

    fn exec_far_inner(&mut self, p: &mut dyn Platform, insn: &Instruction) -> Result<(), Fault> {
        match insn.mnemonic() {
            Mnemonic::Jmp => {
                let (sel, off, o32) = self.far_pointer_operand(p, insn)?;
                self.far_jmp(p, sel, off, o32)
            }
            Mnemonic::Call => {
                let (sel, off, o32) = self.far_pointer_operand(p, insn)?;
                self.far_call(p, sel, off, o32)
            }
            Mnemonic::Retf => {
                let (o32, imm) = match insn.code() {
                    Code::Retfw => (false, 0),
                    Code::Retfd => (true, 0),
                    Code::Retfw_imm16 => (false, insn.immediate16()),
                    Code::Retfd_imm16 => (true, insn.immediate16()),
                    _ => return Err(Fault::ud()),
                };
                self.far_ret(p, o32, u64::from(imm))
            }
            Mnemonic::Iret => self.iret(p, false),
            Mnemonic::Iretd => self.iret(p, true),
            Mnemonic::Int => self.software_interrupt(p, insn.immediate8(), true),
            Mnemonic::Int3 => self.software_interrupt(p, vector::BP, false),
            Mnemonic::Into => {
                if self.rflags() & flags::OF != 0 {
                    self.software_interrupt(p, vector::OF, false)
                } else {
                    Ok(())
                }
            }
            // ICEBP: a #DB trap without the gate DPL check (SDM Vol. 2 "INT1").
            Mnemonic::Int1 => self.deliver_event(p, vector::DB, None, EventKind::Exception),
            _ => Err(Fault::ud()),
        }
    }

    /// The selector, offset and operand size (32-bit?) of a far JMP/CALL operand: an
    /// immediate ptr16:16/ptr16:32 or a memory m16:16/m16:32.
    fn far_pointer_operand(
        &mut self,
        p: &mut dyn Platform,
        insn: &Instruction,
    ) -> Result<(u16, u32, bool), Fault> {
        match insn.op0_kind() {
            OpKind::FarBranch16 => Ok((
                insn.far_branch_selector(),
                u32::from(insn.far_branch16()),
                false,
            )),
            OpKind::FarBranch32 => Ok((insn.far_branch_selector(), insn.far_branch32(), true)),
            OpKind::Memory => {
                let o32 = matches!(insn.code(), Code::Jmp_m1632 | Code::Call_m1632);
                let (seg, off) = self.memory_operand(insn);
                let amask = self.address_mask(insn);
                let offset = if o32 {
                    u32::from_le_bytes(self.read_seg::<4>(p, seg, off)?)
                } else {
                    u32::from(u16::from_le_bytes(self.read_seg::<2>(p, seg, off)?))
                };
                let sel_off = (off + if o32 { 4 } else { 2 }) & amask;
                let sel = u16::from_le_bytes(self.read_seg::<2>(p, seg, sel_off)?);
                Ok((sel, offset, o32))
            }
            // 64-bit m16:64 forms do not decode outside 64-bit mode.
            _ => Err(Fault::ud()),
        }
    }

    /// Real or virtual-8086 mode: load CS as a paragraph selector.
    fn load_cs_real(&mut self, sel: u16) {
        if self.state.rflags & flags::VM != 0 {
            *self.state.seg_mut(SegReg::Cs) = Segment {
                selector: sel,
                base: u64::from(sel) << 4,
                limit: 0xFFFF,
                attributes: V86_SEG_ATTRIBUTES,
            };
        } else {
            // Real mode keeps the cached limit and attributes (SDM Vol. 3A §20.1.1).
            let cs = self.state.seg_mut(SegReg::Cs);
            cs.selector = sel;
            cs.base = u64::from(sel) << 4;
        }
    }

    /// The limit a real-mode or virtual-8086 far transfer is checked against: the cached CS
    /// limit in real mode (kept across loads), 64 KiB in virtual-8086 mode.
    fn real_cs_limit(&self) -> u32 {
        if self.state.rflags & flags::VM != 0 {
            0xFFFF
        } else {
            self.state.seg(SegReg::Cs).limit
        }
    }

    /// Real mode or virtual-8086 mode (where segment loads do not consult descriptors).
    fn real_or_v86(&self) -> bool {
        !self.state.protected_mode() || self.state.rflags & flags::VM != 0
    }

    /// Load CS from a code-segment descriptor with RPL = `cpl` and jump to `offset`.
    fn load_cs_protected(
        &mut self,
        p: &mut dyn Platform,
        sel: u16,
        desc: Descriptor,
        cpl: u8,
        offset: u32,
    ) -> Result<(), Fault> {
        self.set_accessed(p, sel, desc)?;
        let mut cs = desc.to_segment((sel & !3) | u16::from(cpl));
        cs.attributes |= Segment::ATTR_ACCESSED;
        *self.state.seg_mut(SegReg::Cs) = cs;
        self.state.rip = u64::from(offset);
        Ok(())
    }

    /// Check a direct code-segment target of JMP/CALL (SDM Vol. 2 "JMP" protected-mode
    /// operation): conforming needs DPL ≤ CPL, non-conforming RPL ≤ CPL and DPL = CPL.
    fn check_direct_code(&self, sel: u16, desc: Descriptor, cpl: u8) -> Result<(), Fault> {
        let rpl = (sel & 3) as u8;
        if !desc.is_code() {
            return Err(Fault::gp(sel_code(sel)));
        }
        if desc.conforming() {
            if desc.dpl() > cpl {
                return Err(Fault::gp(sel_code(sel)));
            }
        } else if rpl > cpl || desc.dpl() != cpl {
            return Err(Fault::gp(sel_code(sel)));
        }
        if !desc.present() {
            return Err(np(sel_code(sel)));
        }
        Ok(())
    }

    /// The code segment a call gate names (SDM Vol. 2 "CALL" / "JMP" call-gate paths).
    fn call_gate_target(
        &mut self,
        p: &mut dyn Platform,
        gate: Descriptor,
        cpl: u8,
    ) -> Result<(u16, Descriptor, u32), Fault> {
        let tsel = gate.gate_selector();
        if tsel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let Some(desc) = self.read_descriptor(p, tsel)? else {
            return Err(Fault::gp(sel_code(tsel)));
        };
        if !desc.is_code() || desc.dpl() > cpl {
            return Err(Fault::gp(sel_code(tsel)));
        }
        if !desc.present() {
            return Err(np(sel_code(tsel)));
        }
        let offset = if gate.typ() == sys_type::CALL_GATE32 {
            gate.gate_offset()
        } else {
            gate.gate_offset() & 0xFFFF
        };
        Ok((tsel, desc, offset))
    }

    /// Common checks of a gate or TSS named by JMP/CALL: DPL ≥ max(CPL, RPL), present.
    fn check_gate_privilege(&self, sel: u16, gate: Descriptor, cpl: u8) -> Result<(), Fault> {
        let rpl = (sel & 3) as u8;
        if gate.dpl() < cpl || gate.dpl() < rpl {
            return Err(Fault::gp(sel_code(sel)));
        }
        if !gate.present() {
            return Err(np(sel_code(sel)));
        }
        Ok(())
    }

    /// JMP FAR (SDM Vol. 2 "JMP").
    pub(crate) fn far_jmp(
        &mut self,
        p: &mut dyn Platform,
        sel: u16,
        offset: u32,
        o32: bool,
    ) -> Result<(), Fault> {
        let offset = if o32 { offset } else { offset & 0xFFFF };
        if self.real_or_v86() {
            if offset > self.real_cs_limit() {
                return Err(Fault::gp(0));
            }
            self.load_cs_real(sel);
            self.state.rip = u64::from(offset);
            return Ok(());
        }
        let cpl = self.state.cpl();
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let Some(desc) = self.read_descriptor(p, sel)? else {
            return Err(Fault::gp(sel_code(sel)));
        };
        if desc.is_code_or_data() {
            self.check_direct_code(sel, desc, cpl)?;
            if offset > desc.limit() {
                return Err(Fault::gp(0));
            }
            return self.load_cs_protected(p, sel, desc, cpl, offset);
        }
        match desc.typ() {
            sys_type::CALL_GATE16 | sys_type::CALL_GATE32 => {
                self.check_gate_privilege(sel, desc, cpl)?;
                let (tsel, target, offset) = self.call_gate_target(p, desc, cpl)?;
                // JMP never changes privilege: non-conforming targets need DPL = CPL.
                if !target.conforming() && target.dpl() != cpl {
                    return Err(Fault::gp(sel_code(tsel)));
                }
                if offset > target.limit() {
                    return Err(Fault::gp(0));
                }
                self.load_cs_protected(p, tsel, target, cpl, offset)
            }
            sys_type::TASK_GATE => {
                self.check_gate_privilege(sel, desc, cpl)?;
                let tss_sel = desc.gate_selector();
                let tss = self.task_gate_target(p, tss_sel, 0)?;
                self.task_switch(p, tss_sel, tss, TaskSource::Jmp, 0)
            }
            sys_type::TSS16_AVAIL | sys_type::TSS32_AVAIL => {
                if sel & 4 != 0 {
                    return Err(Fault::gp(sel_code(sel)));
                }
                self.check_gate_privilege(sel, desc, cpl)?;
                self.task_switch(p, sel, desc, TaskSource::Jmp, 0)
            }
            _ => Err(Fault::gp(sel_code(sel))),
        }
    }

    /// CALL FAR (SDM Vol. 2 "CALL"), including call gates to more privileged code with the
    /// stack switch and parameter copy of SDM Vol. 3A §5.8.5.
    pub(crate) fn far_call(
        &mut self,
        p: &mut dyn Platform,
        sel: u16,
        offset: u32,
        o32: bool,
    ) -> Result<(), Fault> {
        let size: u8 = if o32 { 4 } else { 2 };
        let offset = if o32 { offset } else { offset & 0xFFFF };
        let old_cs = u64::from(self.state.seg(SegReg::Cs).selector);
        let old_ip = self.state.rip;
        if self.real_or_v86() {
            if offset > self.real_cs_limit() {
                return Err(Fault::gp(0));
            }
            self.push(p, old_cs, size)?;
            self.push(p, old_ip, size)?;
            self.load_cs_real(sel);
            self.state.rip = u64::from(offset);
            return Ok(());
        }
        let cpl = self.state.cpl();
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let Some(desc) = self.read_descriptor(p, sel)? else {
            return Err(Fault::gp(sel_code(sel)));
        };
        if desc.is_code_or_data() {
            self.check_direct_code(sel, desc, cpl)?;
            if offset > desc.limit() {
                return Err(Fault::gp(0));
            }
            self.push(p, old_cs, size)?;
            self.push(p, old_ip, size)?;
            return self.load_cs_protected(p, sel, desc, cpl, offset);
        }
        match desc.typ() {
            sys_type::CALL_GATE16 | sys_type::CALL_GATE32 => {
                self.check_gate_privilege(sel, desc, cpl)?;
                let (tsel, target, offset) = self.call_gate_target(p, desc, cpl)?;
                let size: u8 = if desc.typ() == sys_type::CALL_GATE32 {
                    4
                } else {
                    2
                };
                if offset > target.limit() {
                    return Err(Fault::gp(0));
                }
                if !target.conforming() && target.dpl() < cpl {
                    // More privileged: new stack from the TSS, copy the parameters.
                    let new_cpl = target.dpl();
                    let count = gate_params(desc);
                    let old_ss = u64::from(self.state.seg(SegReg::Ss).selector);
                    let old_esp = self.state.gpr[gpr::RSP];
                    let mut params = [0u64; 31];
                    for (i, v) in params.iter_mut().enumerate().take(count) {
                        *v = self.peek_stack(p, (i as u64) * u64::from(size), size)?;
                    }
                    let (ss_sel, esp) = self.tss_stack(p, new_cpl, 0)?;
                    let frame = u32::from(size) * (4 + count as u32);
                    self.switch_stack(p, ss_sel, esp, new_cpl, frame, 0)?;
                    self.push(p, old_ss, size)?;
                    self.push(p, old_esp, size)?;
                    for v in params[..count].iter().rev() {
                        self.push(p, *v, size)?;
                    }
                    self.push(p, old_cs, size)?;
                    self.push(p, old_ip, size)?;
                    self.load_cs_protected(p, tsel, target, new_cpl, offset)
                } else if target.conforming() || target.dpl() == cpl {
                    self.push(p, old_cs, size)?;
                    self.push(p, old_ip, size)?;
                    self.load_cs_protected(p, tsel, target, cpl, offset)
                } else {
                    Err(Fault::gp(sel_code(tsel)))
                }
            }
            sys_type::TASK_GATE => {
                self.check_gate_privilege(sel, desc, cpl)?;
                let tss_sel = desc.gate_selector();
                let tss = self.task_gate_target(p, tss_sel, 0)?;
                self.task_switch(p, tss_sel, tss, TaskSource::Call, 0)
            }
            sys_type::TSS16_AVAIL | sys_type::TSS32_AVAIL => {
                if sel & 4 != 0 {
                    return Err(Fault::gp(sel_code(sel)));
                }
                self.check_gate_privilege(sel, desc, cpl)?;
                self.task_switch(p, sel, desc, TaskSource::Call, 0)
            }
            _ => Err(Fault::gp(sel_code(sel))),
        }
    }

    /// Add `n` to the stack pointer within the current stack-size mask.
    fn adjust_sp(&mut self, n: u64) {
        let mask = self.stack_mask();
        let rsp = self.state.gpr[gpr::RSP];
        self.state.gpr[gpr::RSP] = (rsp & !mask) | (rsp.wrapping_add(n) & mask);
    }

    /// Check a return CS selector (SDM Vol. 2 "RET"/"IRET" protected-mode return checks).
    fn check_return_cs(
        &mut self,
        p: &mut dyn Platform,
        sel: u16,
        cpl: u8,
    ) -> Result<Descriptor, Fault> {
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let code = sel_code(sel);
        let Some(desc) = self.read_descriptor(p, sel)? else {
            return Err(Fault::gp(code));
        };
        let rpl = (sel & 3) as u8;
        if !desc.is_code() || rpl < cpl {
            return Err(Fault::gp(code));
        }
        if desc.conforming() {
            if desc.dpl() > rpl {
                return Err(Fault::gp(code));
            }
        } else if desc.dpl() != rpl {
            return Err(Fault::gp(code));
        }
        if !desc.present() {
            return Err(np(code));
        }
        Ok(desc)
    }

    /// Check the outer stack selector of a return to privilege level `rpl`.
    fn check_return_ss(
        &mut self,
        p: &mut dyn Platform,
        sel: u16,
        rpl: u8,
    ) -> Result<Descriptor, Fault> {
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let code = sel_code(sel);
        let Some(desc) = self.read_descriptor(p, sel)? else {
            return Err(Fault::gp(code));
        };
        if (sel & 3) as u8 != rpl || !desc.writable_data() || desc.dpl() != rpl {
            return Err(Fault::gp(code));
        }
        if !desc.present() {
            return Err(Fault::ss(code));
        }
        Ok(desc)
    }

    /// Load SS and ESP for a return to an outer level.
    fn load_outer_stack(
        &mut self,
        p: &mut dyn Platform,
        sel: u16,
        desc: Descriptor,
        esp: u64,
    ) -> Result<(), Fault> {
        self.set_accessed(p, sel, desc)?;
        let mut ss = desc.to_segment(sel);
        ss.attributes |= Segment::ATTR_ACCESSED;
        *self.state.seg_mut(SegReg::Ss) = ss;
        let mask = if ss.db() { 0xFFFF_FFFF } else { 0xFFFF };
        let rsp = self.state.gpr[gpr::RSP];
        self.state.gpr[gpr::RSP] = (rsp & !mask) | (esp & mask);
        Ok(())
    }

    /// RETF / RETF imm16 (SDM Vol. 2 "RET").
    pub(crate) fn far_ret(
        &mut self,
        p: &mut dyn Platform,
        o32: bool,
        imm: u64,
    ) -> Result<(), Fault> {
        let size: u8 = if o32 { 4 } else { 2 };
        let sz = u64::from(size);
        let ip = self.peek_stack(p, 0, size)?;
        let sel = self.peek_stack(p, sz, 2)? as u16;
        if self.real_or_v86() {
            if ip > u64::from(self.state.seg(SegReg::Cs).limit) {
                return Err(Fault::gp(0));
            }
            self.load_cs_real(sel);
            self.state.rip = ip;
            self.adjust_sp(2 * sz + imm);
            return Ok(());
        }
        let cpl = self.state.cpl();
        let desc = self.check_return_cs(p, sel, cpl)?;
        let rpl = (sel & 3) as u8;
        if rpl > cpl {
            // Return to an outer level: SS:ESP follow the parameters.
            let esp = self.peek_stack(p, 2 * sz + imm, size)?;
            let ss_sel = self.peek_stack(p, 3 * sz + imm, 2)? as u16;
            let ss_desc = self.check_return_ss(p, ss_sel, rpl)?;
            if ip > u64::from(desc.limit()) {
                return Err(Fault::gp(0));
            }
            self.load_cs_protected(p, sel, desc, rpl, ip as u32)?;
            self.load_outer_stack(p, ss_sel, ss_desc, esp)?;
            self.adjust_sp(imm);
            self.null_inaccessible_data_segments();
        } else {
            if ip > u64::from(desc.limit()) {
                return Err(Fault::gp(0));
            }
            self.load_cs_protected(p, sel, desc, cpl, ip as u32)?;
            self.adjust_sp(2 * sz + imm);
        }
        Ok(())
    }

    /// IRET/IRETD (SDM Vol. 2 "IRET"): real mode, virtual-8086 mode (IOPL 3 only), task
    /// return (NT), return to virtual-8086 mode, and protected-mode returns at the same or an
    /// outer level. Unblocks NMIs.
    pub(crate) fn iret(&mut self, p: &mut dyn Platform, o32: bool) -> Result<(), Fault> {
        let size: u8 = if o32 { 4 } else { 2 };
        let sz = u64::from(size);
        let old_flags = self.rflags();
        if !self.state.protected_mode() {
            let ip = self.peek_stack(p, 0, size)?;
            let sel = self.peek_stack(p, sz, 2)? as u16;
            let fl = self.peek_stack(p, 2 * sz, size)?;
            if ip > u64::from(self.state.seg(SegReg::Cs).limit) {
                return Err(Fault::gp(0));
            }
            let new = if o32 {
                (fl & 0x25_7FD5) | (old_flags & 0x1A_0000)
            } else {
                (old_flags & !0xFFFF) | (fl & 0xFFFF)
            };
            self.load_cs_real(sel);
            self.state.rip = ip;
            self.adjust_sp(3 * sz);
            self.set_rflags(new);
            self.state.nmi_blocked = false;
            return Ok(());
        }
        if old_flags & flags::VM != 0 {
            // Virtual-8086 mode: IRET is IOPL-sensitive (SDM Vol. 3A §20.2.7); with CR4.VME a
            // 16-bit IRET at IOPL < 3 works on VIF instead (§20.3.2).
            let iopl3 = old_flags & flags::IOPL == flags::IOPL;
            let vme = !iopl3 && !o32 && self.state.cr4 & cr::CR4_VME != 0;
            if !iopl3 && !vme {
                return Err(Fault::gp(0));
            }
            let ip = self.peek_stack(p, 0, size)?;
            let sel = self.peek_stack(p, sz, 2)? as u16;
            let fl = self.peek_stack(p, 2 * sz, size)?;
            if ip > 0xFFFF {
                return Err(Fault::gp(0));
            }
            let new = if vme {
                if fl & flags::TF != 0 || (old_flags & flags::VIP != 0 && fl & flags::IF != 0) {
                    return Err(Fault::gp(0));
                }
                let keep = flags::IOPL | flags::IF;
                let low = (fl & 0xFFFF & !keep) | (old_flags & keep);
                let vif = if fl & flags::IF != 0 { flags::VIF } else { 0 };
                (old_flags & !(0xFFFF | flags::VIF)) | low | vif
            } else if o32 {
                let keep = flags::VM | flags::IOPL | flags::VIP | flags::VIF;
                (fl & 0x25_7FD5 & !keep) | (old_flags & keep)
            } else {
                (old_flags & !0xFFFF) | (fl & 0xFFFF & !flags::IOPL) | (old_flags & flags::IOPL)
            };
            self.load_cs_real(sel);
            self.state.rip = ip;
            self.adjust_sp(3 * sz);
            self.set_rflags(new);
            self.state.nmi_blocked = false;
            return Ok(());
        }
        if old_flags & flags::NT != 0 {
            self.task_return(p)?;
            self.state.nmi_blocked = false;
            return Ok(());
        }
        let cpl = self.state.cpl();
        let ip = self.peek_stack(p, 0, size)?;
        let sel = self.peek_stack(p, sz, 2)? as u16;
        let fl = self.peek_stack(p, 2 * sz, size)?;
        if o32 && fl & flags::VM != 0 && cpl == 0 {
            return self.iret_to_v86(p, ip, sel, fl);
        }
        let desc = self.check_return_cs(p, sel, cpl)?;
        let rpl = (sel & 3) as u8;
        let outer = if rpl > cpl {
            let esp = self.peek_stack(p, 3 * sz, size)?;
            let ss_sel = self.peek_stack(p, 4 * sz, 2)? as u16;
            let ss_desc = self.check_return_ss(p, ss_sel, rpl)?;
            Some((ss_sel, ss_desc, esp))
        } else {
            None
        };
        if ip > u64::from(desc.limit()) {
            return Err(Fault::gp(0));
        }
        // Which flags the return may change (SDM Vol. 2 "IRET" operation).
        let iopl = ((old_flags & flags::IOPL) >> 12) as u8;
        let mut mask = flags::CF
            | flags::PF
            | flags::AF
            | flags::ZF
            | flags::SF
            | flags::TF
            | flags::DF
            | flags::OF
            | flags::NT;
        if o32 {
            mask |= flags::RF | flags::AC | flags::ID;
        }
        if cpl <= iopl {
            mask |= flags::IF;
        }
        if cpl == 0 {
            mask |= flags::IOPL;
            if o32 {
                mask |= flags::VIF | flags::VIP;
            }
        }
        let new_flags = (old_flags & !mask) | (fl & mask);
        match outer {
            Some((ss_sel, ss_desc, esp)) => {
                self.load_cs_protected(p, sel, desc, rpl, ip as u32)?;
                self.load_outer_stack(p, ss_sel, ss_desc, esp)?;
                self.null_inaccessible_data_segments();
            }
            None => {
                self.load_cs_protected(p, sel, desc, cpl, ip as u32)?;
                self.adjust_sp(3 * sz);
            }
        }
        self.set_rflags(new_flags);
        self.state.nmi_blocked = false;
        Ok(())
    }

    /// IRETD from CPL 0 with VM set in the popped EFLAGS: enter virtual-8086 mode, popping
    /// ESP, SS, ES, DS, FS, GS as well (SDM Vol. 2 "IRET", RETURN-TO-VIRTUAL-8086-MODE).
    fn iret_to_v86(
        &mut self,
        p: &mut dyn Platform,
        ip: u64,
        cs: u16,
        fl: u64,
    ) -> Result<(), Fault> {
        let mut v = [0u64; 6];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = self.peek_stack(p, 12 + 4 * i as u64, 4)?;
        }
        let [esp, ss, es, ds, fs, gs] = v;
        self.set_rflags(fl);
        let load = |cpu: &mut Self, seg: SegReg, sel: u64| {
            let sel = sel as u16;
            *cpu.state.seg_mut(seg) = Segment {
                selector: sel,
                base: u64::from(sel) << 4,
                limit: 0xFFFF,
                attributes: V86_SEG_ATTRIBUTES,
            };
        };
        load(self, SegReg::Cs, u64::from(cs));
        load(self, SegReg::Ss, ss);
        load(self, SegReg::Es, es);
        load(self, SegReg::Ds, ds);
        load(self, SegReg::Fs, fs);
        load(self, SegReg::Gs, gs);
        self.state.gpr[gpr::RSP] = esp & 0xFFFF_FFFF;
        self.state.rip = ip & 0xFFFF;
        self.state.nmi_blocked = false;
        Ok(())
    }

    /// INT n / INT3 / INTO (SDM Vol. 2 "INT n"). In virtual-8086 mode INT n is
    /// IOPL-sensitive (INT3 and INTO are not): without CR4.VME, IOPL < 3 is #GP(0); with
    /// CR4.VME the TSS interrupt redirection bitmap decides (SDM Vol. 3A §20.3.3, Table 20-2):
    /// a clear bit redirects to the virtual-8086 IVT at linear 0, a set bit goes through the
    /// IDT at IOPL 3 and is #GP(0) below. Elsewhere the event goes through the IVT/IDT with
    /// the gate DPL check of a software interrupt.
    fn software_interrupt(
        &mut self,
        p: &mut dyn Platform,
        vector: u8,
        int_n: bool,
    ) -> Result<(), Fault> {
        let f = self.state.rflags;
        if int_n && f & flags::VM != 0 {
            let iopl3 = f & flags::IOPL == flags::IOPL;
            if self.state.cr4 & cr::CR4_VME != 0 && !self.v86_int_redirected(p, vector)? {
                return self.v86_redirect(p, vector);
            }
            if !iopl3 {
                return Err(Fault::gp(0));
            }
        }
        self.deliver_event(p, vector, None, EventKind::Software)
    }

    /// The bit for `vector` in the interrupt redirection bitmap: the 32 bytes just below the
    /// I/O permission bitmap base of the current 32-bit TSS (SDM Vol. 3A §20.3.3.5). A TSS
    /// without room for it is #GP(0).
    fn v86_int_redirected(&mut self, p: &mut dyn Platform, vector: u8) -> Result<bool, Fault> {
        let tr = self.state.tr;
        if tr.unusable() || tr.type_field() & 0xD != 0x9 || tr.limit < 0x67 {
            return Err(Fault::gp(0));
        }
        let mut b = [0u8; 2];
        self.read_sys(p, (tr.base + 0x66) & 0xFFFF_FFFF, &mut b)?;
        let io_base = u64::from(u16::from_le_bytes(b));
        let byte = (io_base + u64::from(vector / 8)).checked_sub(32);
        let Some(byte) = byte.filter(|&o| o <= u64::from(tr.limit)) else {
            return Err(Fault::gp(0));
        };
        let mut bit = [0u8; 1];
        self.read_sys(p, (tr.base + byte) & 0xFFFF_FFFF, &mut bit)?;
        Ok(bit[0] & (1 << (vector % 8)) != 0)
    }

    /// Deliver INT n inside virtual-8086 mode through the IVT at linear 0, as real mode does,
    /// with the VME rules for the flags image: at IOPL < 3 the pushed IF is VIF, the pushed
    /// IOPL is 3, and VIF (not IF) is cleared (SDM Vol. 3A §20.3.3.4, Table 20-2 methods 5, 6).
    fn v86_redirect(&mut self, p: &mut dyn Platform, vector: u8) -> Result<(), Fault> {
        let mut b = [0u8; 4];
        self.read_linear(p, u64::from(vector) * 4, &mut b, AccessKind::Read)?;
        let ip = u16::from_le_bytes([b[0], b[1]]);
        let cs = u16::from_le_bytes([b[2], b[3]]);
        let f = self.rflags();
        let iopl3 = f & flags::IOPL == flags::IOPL;
        let image = if iopl3 {
            f
        } else {
            let vif = if f & flags::VIF != 0 { flags::IF } else { 0 };
            (f & !flags::IF) | vif | flags::IOPL
        };
        self.push(p, image & 0xFFFF, 2)?;
        self.push(p, u64::from(self.state.seg(SegReg::Cs).selector), 2)?;
        self.push(p, self.state.rip & 0xFFFF, 2)?;
        let cleared = if iopl3 {
            flags::IF | flags::TF
        } else {
            flags::VIF | flags::TF
        };
        self.set_rflags(f & !cleared);
        self.load_cs_real(cs);
        self.state.rip = u64::from(ip);
        Ok(())
    }

    /// The segment and offset of an instruction's memory operand.
    pub(crate) fn memory_operand(&self, insn: &Instruction) -> (SegReg, u64) {
        let seg = super::seg_of(insn.memory_segment()).unwrap_or(SegReg::Ds);
        // The memory operand is not always operand 0 (LAR/LSL r, m16 have it second).
        let operand = (0..insn.op_count())
            .find(|&i| insn.op_kind(i) == iced_x86::OpKind::Memory)
            .unwrap_or(0);
        let off = insn
            .virtual_address(operand, 0, |reg, _, _| {
                if reg.is_segment_register() {
                    return Some(0);
                }
                let loc = super::gpr_loc(reg)?;
                Some(self.get_reg(loc, reg.size() as u8))
            })
            .unwrap_or(0);
        (seg, off & self.address_mask(insn))
    }

    /// Address-size mask of an instruction's memory operand.
    pub(crate) fn address_mask(&self, insn: &Instruction) -> u64 {
        let base = insn.memory_base();
        let index = insn.memory_index();
        let sixteen = if base != iced_x86::Register::None {
            base.is_gpr16()
        } else if index != iced_x86::Register::None {
            index.is_gpr16()
        } else {
            insn.memory_displ_size() == 2
                || (insn.memory_displ_size() == 0 && self.state.code_bitness() == 16)
        };
        if sixteen {
            0xFFFF
        } else {
            0xFFFF_FFFF
        }
    }
}

/// Parameter count of a call gate (at most 31).
fn gate_params(gate: Descriptor) -> usize {
    usize::from(gate.gate_param_count())
}
