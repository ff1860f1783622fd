//! Far control transfers: JMP FAR, CALL FAR, RETF, IRET, INT n/INT3/INTO/INT1 in real,
//! protected and virtual-8086 mode (Intel SDM Vol. 2 "JMP", "CALL", "RET", "IRET", "INT n";
//! Vol. 3A §5.8 privilege-level changes, §7.3 task switches, §20.2–20.3 virtual-8086 mode).
//!
//! IA-32e mode (SDM Vol. 3A §5.8.3.1, §5.8.5.1, §6.14.3): 64-bit code segments (L = 1,
//! canonical targets instead of limits), 16-byte 64-bit call gates with a null SS on a
//! privilege change, REX.W far returns and IRETQ (which always pops SS:RSP in 64-bit mode),
//! and task switches refused with #GP.
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
use crate::exception::{tss64_rsp, EventKind};
use crate::fault::vector;
use crate::segment::{
    is_canonical, np, null_stack_segment, sel_code, sys_type, Descriptor, V86_SEG_ATTRIBUTES,
};
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
                let (sel, off, size) = self.far_pointer_operand(p, insn)?;
                self.far_jmp(p, sel, off, size)
            }
            Mnemonic::Call => {
                let (sel, off, size) = self.far_pointer_operand(p, insn)?;
                self.far_call(p, sel, off, size)
            }
            Mnemonic::Retf => {
                let (size, imm) = match insn.code() {
                    Code::Retfw => (2, 0),
                    Code::Retfd => (4, 0),
                    Code::Retfq => (8, 0),
                    Code::Retfw_imm16 => (2, insn.immediate16()),
                    Code::Retfd_imm16 => (4, insn.immediate16()),
                    Code::Retfq_imm16 => (8, insn.immediate16()),
                    _ => return Err(Fault::ud()),
                };
                self.far_ret(p, size, u64::from(imm))
            }
            Mnemonic::Iret => self.iret(p, 2),
            Mnemonic::Iretd => self.iret(p, 4),
            Mnemonic::Iretq => self.iret(p, 8),
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

    /// The selector, offset and operand size in bytes (2, 4 or 8) of a far JMP/CALL operand:
    /// an immediate ptr16:16/ptr16:32 or a memory m16:16/m16:32/m16:64 (REX.W).
    fn far_pointer_operand(
        &mut self,
        p: &mut dyn Platform,
        insn: &Instruction,
    ) -> Result<(u16, u64, u8), Fault> {
        match insn.op0_kind() {
            OpKind::FarBranch16 => Ok((
                insn.far_branch_selector(),
                u64::from(insn.far_branch16()),
                2,
            )),
            OpKind::FarBranch32 => Ok((
                insn.far_branch_selector(),
                u64::from(insn.far_branch32()),
                4,
            )),
            OpKind::Memory => {
                let size: u8 = match insn.code() {
                    Code::Jmp_m1664 | Code::Call_m1664 => 8,
                    Code::Jmp_m1632 | Code::Call_m1632 => 4,
                    _ => 2,
                };
                let (seg, off) = self.memory_operand(insn);
                let amask = self.address_mask(insn);
                let offset = match size {
                    8 => u64::from_le_bytes(self.read_seg::<8>(p, seg, off)?),
                    4 => u64::from(u32::from_le_bytes(self.read_seg::<4>(p, seg, off)?)),
                    _ => u64::from(u16::from_le_bytes(self.read_seg::<2>(p, seg, off)?)),
                };
                let sel_off = off.wrapping_add(u64::from(size)) & amask;
                let sel = u16::from_le_bytes(self.read_seg::<2>(p, seg, sel_off)?);
                Ok((sel, offset, size))
            }
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
        offset: u64,
    ) -> Result<(), Fault> {
        self.set_accessed(p, sel, desc)?;
        let mut cs = desc.to_segment((sel & !3) | u16::from(cpl));
        cs.attributes |= Segment::ATTR_ACCESSED;
        *self.state.seg_mut(SegReg::Cs) = cs;
        self.state.rip = offset;
        Ok(())
    }

    /// Check the target offset of a transfer into code segment `desc`: within the limit, or
    /// in IA-32e mode for a 64-bit segment (L = 1) canonical; L = 1 with D = 1 is reserved
    /// and #GP(selector) (SDM Vol. 3A §5.2.1, Vol. 2 "JMP"/"CALL"/"RET"/"IRET").
    fn check_cs_offset(&self, sel: u16, desc: Descriptor, offset: u64) -> Result<(), Fault> {
        if self.state.long_mode_active() && desc.long() {
            if desc.db() {
                return Err(Fault::gp(sel_code(sel)));
            }
            if !is_canonical(offset) {
                return Err(Fault::gp(0));
            }
            return Ok(());
        }
        if offset > u64::from(desc.limit()) {
            return Err(Fault::gp(0));
        }
        Ok(())
    }

    /// A 64-bit call gate named by JMP/CALL in IA-32e mode and the 64-bit code segment it
    /// points to: (target selector, target descriptor, offset). Legacy gates, TSS descriptors
    /// and task gates are #GP(selector) here: IA-32e mode has no task switching
    /// (SDM Vol. 3A §5.8.3.1, §7.7; Vol. 2 "CALL" IA-32e call-gate checks).
    fn call_gate64(
        &mut self,
        p: &mut dyn Platform,
        sel: u16,
        cpl: u8,
    ) -> Result<(u16, Descriptor, u64), Fault> {
        let Some((gate, upper)) = self.read_system_descriptor(p, sel)? else {
            return Err(Fault::gp(sel_code(sel)));
        };
        if gate.is_code_or_data() || gate.typ() != sys_type::CALL_GATE64 || !upper.type_ok() {
            return Err(Fault::gp(sel_code(sel)));
        }
        self.check_gate_privilege(sel, gate, cpl)?;
        let tsel = gate.gate_selector();
        if tsel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let Some(desc) = self.read_descriptor(p, tsel)? else {
            return Err(Fault::gp(sel_code(tsel)));
        };
        if !desc.is_code() || desc.dpl() > cpl || !desc.long() || desc.db() {
            return Err(Fault::gp(sel_code(tsel)));
        }
        if !desc.present() {
            return Err(np(sel_code(tsel)));
        }
        let offset = u64::from(gate.gate_offset()) | (upper.high() << 32);
        if !is_canonical(offset) {
            return Err(Fault::gp(0));
        }
        Ok((tsel, desc, offset))
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
    ) -> Result<(u16, Descriptor, u64), Fault> {
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
        Ok((tsel, desc, u64::from(offset)))
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
        offset: u64,
        size: u8,
    ) -> Result<(), Fault> {
        let offset = if size == 2 { offset & 0xFFFF } else { offset };
        if self.real_or_v86() {
            if offset > u64::from(self.real_cs_limit()) {
                return Err(Fault::gp(0));
            }
            self.load_cs_real(sel);
            self.state.rip = offset;
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
            self.check_cs_offset(sel, desc, offset)?;
            return self.load_cs_protected(p, sel, desc, cpl, offset);
        }
        if self.state.long_mode_active() {
            let (tsel, target, offset) = self.call_gate64(p, sel, cpl)?;
            // JMP never changes privilege: non-conforming targets need DPL = CPL.
            if !target.conforming() && target.dpl() != cpl {
                return Err(Fault::gp(sel_code(tsel)));
            }
            return self.load_cs_protected(p, tsel, target, cpl, offset);
        }
        match desc.typ() {
            sys_type::CALL_GATE16 | sys_type::CALL_GATE32 => {
                self.check_gate_privilege(sel, desc, cpl)?;
                let (tsel, target, offset) = self.call_gate_target(p, desc, cpl)?;
                // JMP never changes privilege: non-conforming targets need DPL = CPL.
                if !target.conforming() && target.dpl() != cpl {
                    return Err(Fault::gp(sel_code(tsel)));
                }
                if offset > u64::from(target.limit()) {
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
        offset: u64,
        size: u8,
    ) -> Result<(), Fault> {
        let offset = if size == 2 { offset & 0xFFFF } else { offset };
        let old_cs = u64::from(self.state.seg(SegReg::Cs).selector);
        let old_ip = self.state.rip;
        if self.real_or_v86() {
            if offset > u64::from(self.real_cs_limit()) {
                return Err(Fault::gp(0));
            }
            self.push(p, old_cs, size)?;
            self.push(p, old_ip, size)?;
            self.load_cs_real(sel);
            self.state.rip = offset;
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
            self.check_cs_offset(sel, desc, offset)?;
            self.push(p, old_cs, size)?;
            self.push(p, old_ip, size)?;
            return self.load_cs_protected(p, sel, desc, cpl, offset);
        }
        if self.state.long_mode_active() {
            return self.far_call_gate64(p, sel, cpl, old_cs, old_ip);
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
                if offset > u64::from(target.limit()) {
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

    /// CALL FAR through a 64-bit call gate (SDM Vol. 3A §5.8.5.1, Vol. 2 "CALL" IA-32e
    /// mode): to a more privileged level the new RSP comes from the 64-bit TSS, SS becomes
    /// NULL(new CPL), and SS, RSP, CS, RIP are pushed as quadwords (no parameters are
    /// copied); at the same level CS and RIP are pushed as quadwords.
    fn far_call_gate64(
        &mut self,
        p: &mut dyn Platform,
        sel: u16,
        cpl: u8,
        old_cs: u64,
        old_ip: u64,
    ) -> Result<(), Fault> {
        let (tsel, target, offset) = self.call_gate64(p, sel, cpl)?;
        if !target.conforming() && target.dpl() < cpl {
            let new_cpl = target.dpl();
            let rsp = self.tss64_field(p, tss64_rsp(new_cpl), 0)?;
            if !is_canonical(rsp) {
                return Err(Fault::ss(0));
            }
            let old_ss = u64::from(self.state.seg(SegReg::Ss).selector);
            let old_rsp = self.state.gpr[gpr::RSP];
            *self.state.seg_mut(SegReg::Ss) = null_stack_segment(u16::from(new_cpl), new_cpl);
            self.state.gpr[gpr::RSP] = rsp;
            self.load_cs_protected(p, tsel, target, new_cpl, offset)?;
            for v in [old_ss, old_rsp, old_cs, old_ip] {
                self.push(p, v, 8)?;
            }
            Ok(())
        } else if target.conforming() || target.dpl() == cpl {
            self.load_cs_protected(p, tsel, target, cpl, offset)?;
            self.push(p, old_cs, 8)?;
            self.push(p, old_ip, 8)
        } else {
            Err(Fault::gp(sel_code(tsel)))
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
        self.set_outer_rsp(esp);
        Ok(())
    }

    /// Set the stack pointer after a return loaded CS and SS: the whole (zero-extended
    /// popped) value in IA-32e mode, else ESP or SP by SS.B with the bits above kept.
    fn set_outer_rsp(&mut self, rsp: u64) {
        let mask = if self.state.long_mode_active() {
            u64::MAX
        } else if self.state.seg(SegReg::Ss).db() {
            0xFFFF_FFFF
        } else {
            0xFFFF
        };
        let old = self.state.gpr[gpr::RSP];
        self.state.gpr[gpr::RSP] = (old & !mask) | (rsp & mask);
    }

    /// RETF / RETF imm16 (SDM Vol. 2 "RET").
    pub(crate) fn far_ret(
        &mut self,
        p: &mut dyn Platform,
        size: u8,
        imm: u64,
    ) -> Result<(), Fault> {
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
            let ss_desc = self.check_return_ss_long(p, ss_sel, rpl, desc)?;
            self.check_cs_offset(sel, desc, ip)?;
            self.load_cs_protected(p, sel, desc, rpl, ip)?;
            self.load_return_stack(p, ss_sel, ss_desc, rpl, esp)?;
            self.adjust_sp(imm);
            self.null_inaccessible_data_segments();
        } else {
            self.check_cs_offset(sel, desc, ip)?;
            // Release the frame with the stack size of the calling code.
            self.adjust_sp(2 * sz + imm);
            self.load_cs_protected(p, sel, desc, cpl, ip)?;
        }
        Ok(())
    }

    /// The SS of a return to privilege level `rpl` in code `cs`: `None` for a null selector,
    /// which IA-32e mode accepts when returning to 64-bit code below ring 3
    /// (SDM Vol. 2 "RET", "IRET" IA-32e mode); otherwise the checked descriptor.
    fn check_return_ss_long(
        &mut self,
        p: &mut dyn Platform,
        sel: u16,
        rpl: u8,
        cs: Descriptor,
    ) -> Result<Option<Descriptor>, Fault> {
        if sel & 0xFFFC == 0 && self.state.long_mode_active() && cs.long() && !cs.db() && rpl < 3 {
            return Ok(None);
        }
        self.check_return_ss(p, sel, rpl).map(Some)
    }

    /// Load SS:RSP for a return: a checked descriptor, or a null SS (see
    /// [`Self::check_return_ss_long`]) that keeps DPL = `rpl`.
    fn load_return_stack(
        &mut self,
        p: &mut dyn Platform,
        sel: u16,
        desc: Option<Descriptor>,
        rpl: u8,
        rsp: u64,
    ) -> Result<(), Fault> {
        match desc {
            Some(d) => self.load_outer_stack(p, sel, d, rsp),
            None => {
                *self.state.seg_mut(SegReg::Ss) = null_stack_segment(sel, rpl);
                self.set_outer_rsp(rsp);
                Ok(())
            }
        }
    }

    /// IRET/IRETD (SDM Vol. 2 "IRET"): real mode, virtual-8086 mode (IOPL 3 only), task
    /// return (NT), return to virtual-8086 mode, and protected-mode returns at the same or an
    /// outer level. Unblocks NMIs.
    pub(crate) fn iret(&mut self, p: &mut dyn Platform, size: u8) -> Result<(), Fault> {
        let o32 = size != 2;
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
        if self.state.long_mode_active() {
            return self.iret_long(p, size);
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
        let new_flags = iret_flags(old_flags, fl, cpl, o32);
        match outer {
            Some((ss_sel, ss_desc, esp)) => {
                self.load_cs_protected(p, sel, desc, rpl, ip)?;
                self.load_outer_stack(p, ss_sel, ss_desc, esp)?;
                self.null_inaccessible_data_segments();
            }
            None => {
                self.load_cs_protected(p, sel, desc, cpl, ip)?;
                self.adjust_sp(3 * sz);
            }
        }
        self.set_rflags(new_flags);
        self.state.nmi_blocked = false;
        Ok(())
    }

    /// IRET/IRETD/IRETQ in IA-32e mode (SDM Vol. 2 "IRET", IA-32e-MODE): NT = 1 is #GP(0)
    /// (no task return); RIP, CS and RFLAGS are popped with the operand size, then SS:RSP
    /// too when the IRET runs in 64-bit mode or returns to an outer level. The target may be
    /// 64-bit or compatibility-mode code; VM is never set.
    fn iret_long(&mut self, p: &mut dyn Platform, size: u8) -> Result<(), Fault> {
        let sz = u64::from(size);
        let old_flags = self.rflags();
        if old_flags & flags::NT != 0 {
            return Err(Fault::gp(0));
        }
        let cpl = self.state.cpl();
        let ip = self.peek_stack(p, 0, size)?;
        let sel = self.peek_stack(p, sz, 2)? as u16;
        let fl = self.peek_stack(p, 2 * sz, size)?;
        let desc = self.check_return_cs(p, sel, cpl)?;
        let rpl = (sel & 3) as u8;
        let stack = if self.state.in_64bit_code() || rpl > cpl {
            let rsp = self.peek_stack(p, 3 * sz, size)?;
            let ss_sel = self.peek_stack(p, 4 * sz, 2)? as u16;
            if ss_sel & 0xFFFC == 0 && (rpl == 3 || !desc.long() || desc.db()) {
                return Err(Fault::gp(0));
            }
            let ss_desc = self.check_return_ss_long(p, ss_sel, rpl, desc)?;
            Some((ss_sel, ss_desc, rsp))
        } else {
            None
        };
        self.check_cs_offset(sel, desc, ip)?;
        let new_flags = iret_flags(old_flags, fl, cpl, size != 2) & !flags::VM;
        match stack {
            Some((ss_sel, ss_desc, rsp)) => {
                self.load_cs_protected(p, sel, desc, rpl, ip)?;
                self.load_return_stack(p, ss_sel, ss_desc, rpl, rsp)?;
            }
            None => {
                self.adjust_sp(3 * sz);
                self.load_cs_protected(p, sel, desc, cpl, ip)?;
            }
        }
        if rpl > cpl {
            self.null_inaccessible_data_segments();
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
        if self.state.in_64bit_code() {
            // 64-bit addressing unless a 67h prefix selected 32-bit registers.
            let a32 = base.is_gpr32() || index.is_gpr32() || base == iced_x86::Register::EIP;
            return if a32 { 0xFFFF_FFFF } else { u64::MAX };
        }
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

/// RFLAGS after a protected-mode IRET popped `fl` at privilege level `cpl`: which bits the
/// return may change depends on CPL, IOPL and the operand size (SDM Vol. 2 "IRET"
/// operation).
fn iret_flags(old_flags: u64, fl: u64, cpl: u8, o32: bool) -> u64 {
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
    (old_flags & !mask) | (fl & mask)
}
