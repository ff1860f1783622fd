//! Exception and interrupt delivery: IVT in real mode, IDT in protected mode, with double- and
//! triple-fault escalation (Intel SDM Vol. 3A §6).
//!
//! Owned by SYS. The initial version delivers through the real-mode IVT only; protected-mode
//! IDT delivery, privilege changes, error codes, #DF and triple fault are SYS's work.

use pcvm_core::cpu_state::flags;
use pcvm_core::{Platform, SegReg};

use crate::access::AccessKind;
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

impl Interpreter {
    /// Deliver interrupt/exception `vector`. On return the CPU is at the handler's first
    /// instruction. A fault while delivering escalates as SDM Vol. 3A §6.15 Table 6-5 says;
    /// the caller handles a returned fault (double fault / shutdown).
    pub(crate) fn deliver_event(
        &mut self,
        p: &mut dyn Platform,
        vector: u8,
        error_code: Option<u32>,
        kind: EventKind,
    ) -> Result<(), Fault> {
        let _ = (error_code, kind);
        // Real-address mode (SDM Vol. 3A §20.1.4): 4-byte IVT entries at IDTR.base.
        let entry = u64::from(vector) * 4;
        if entry + 3 > u64::from(self.state.idtr.limit) {
            return Err(Fault::gp(u32::from(vector) * 8 + 2));
        }
        let linear = self.state.idtr.base.wrapping_add(entry);
        let mut b = [0u8; 4];
        self.read_linear(p, linear, &mut b, AccessKind::Read)?;
        let ip = u16::from_le_bytes([b[0], b[1]]);
        let cs = u16::from_le_bytes([b[2], b[3]]);
        let rflags = self.rflags();
        self.push(p, rflags, 2)?;
        self.push(p, u64::from(self.state.seg(SegReg::Cs).selector), 2)?;
        self.push(p, self.state.rip, 2)?;
        self.set_rflags(rflags & !(flags::IF | flags::TF | flags::AC | flags::RF));
        *self.state.seg_mut(SegReg::Cs) = pcvm_core::Segment {
            attributes: self.state.seg(SegReg::Cs).attributes,
            limit: self.state.seg(SegReg::Cs).limit,
            ..pcvm_core::Segment::real_mode(cs)
        };
        self.state.rip = u64::from(ip);
        Ok(())
    }
}
