//! Segmentation: offset → linear address with limit and type checks, descriptor-table reads,
//! segment register loads, and the I/O permission check (Intel SDM Vol. 3A §3.4, §3.5, §5.1–5.8;
//! Vol. 1 §19.5).
//!
//! Owned by SYS. Real and virtual-8086 mode load `base = selector << 4` and keep the cached
//! limit (so "unreal" big limits survive, SDM Vol. 3A §9.9.2); protected mode reads the
//! descriptor from the GDT/LDT with the checks of SDM Vol. 2 "MOV—Move to/from Segment
//! Registers" and sets its accessed bit.
//!
//! In IA-32e mode (SDM Vol. 3A §3.4.5, §5.2.1): system descriptors (LDT, TSS, call gates) are
//! 16 bytes with a 64-bit base or offset ([`Interpreter::read_system_descriptor`]); code
//! segments carry the L bit (L = 1 with D = 1 is reserved); 64-bit code may load a null SS at
//! CPL < 3; segmentation checks are off in 64-bit code except the FS/GS bases.

use pcvm_core::cpu_state::flags;
use pcvm_core::{Platform, SegReg, Segment};

use crate::access::AccessKind;
use crate::fault::vector;
use crate::{Fault, Interpreter};

/// Descriptor type values of system descriptors (S = 0), SDM Vol. 3A §3.5 Table 3-2.
pub(crate) mod sys_type {
    pub const TSS16_AVAIL: u8 = 1;
    pub const LDT: u8 = 2;
    pub const TSS16_BUSY: u8 = 3;
    pub const CALL_GATE16: u8 = 4;
    pub const TASK_GATE: u8 = 5;
    pub const INT_GATE16: u8 = 6;
    pub const TRAP_GATE16: u8 = 7;
    pub const TSS32_AVAIL: u8 = 9;
    pub const TSS32_BUSY: u8 = 11;
    pub const CALL_GATE32: u8 = 12;
    pub const INT_GATE32: u8 = 14;
    pub const TRAP_GATE32: u8 = 15;
    /// In IA-32e mode types 9/11/12/14/15 name the 64-bit TSS and gates (SDM Vol. 3A
    /// Table 3-2, "IA-32e Mode" column).
    pub const TSS64_AVAIL: u8 = TSS32_AVAIL;
    pub const CALL_GATE64: u8 = CALL_GATE32;
    pub const INT_GATE64: u8 = INT_GATE32;
    pub const TRAP_GATE64: u8 = TRAP_GATE32;
}

/// Linear addresses are 48 bits wide (4-level paging): bits 63:47 must all be equal
/// (SDM Vol. 1 §3.3.7.1).
pub(crate) const LINEAR_ADDR_BITS: u32 = 48;

/// `addr` is canonical: bits 63:47 are copies of bit 47 (SDM Vol. 1 §3.3.7.1).
#[inline]
pub(crate) fn is_canonical(addr: u64) -> bool {
    let shift = 64 - LINEAR_ADDR_BITS;
    ((addr << shift) as i64 >> shift) as u64 == addr
}

/// Attributes of a real-mode or virtual-8086 data segment: present, writable, accessed; DPL 3
/// in virtual-8086 mode (SDM Vol. 3A §20.2).
pub(crate) const V86_SEG_ATTRIBUTES: u32 = 0xF3;

/// An 8-byte segment or gate descriptor as stored in the GDT/LDT/IDT (SDM Vol. 3A §3.4.5, §6.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Descriptor(pub u64);

impl Descriptor {
    /// Segment base (bits 16–39 and 56–63).
    pub fn base(self) -> u32 {
        (((self.0 >> 16) & 0xFF_FFFF) | (((self.0 >> 56) & 0xFF) << 24)) as u32
    }
    /// Segment limit in bytes, scaled by the granularity bit.
    pub fn limit(self) -> u32 {
        let raw = ((self.0 & 0xFFFF) | (((self.0 >> 48) & 0xF) << 16)) as u32;
        if self.0 & (1 << 55) != 0 {
            (raw << 12) | 0xFFF
        } else {
            raw
        }
    }
    /// Access rights in the VMX layout `Segment::attributes` uses (type, S, DPL, P, AVL, L,
    /// D/B, G).
    pub fn attributes(self) -> u32 {
        (((self.0 >> 40) & 0xFF) | (((self.0 >> 52) & 0xF) << 12)) as u32
    }
    /// Type field (4 bits).
    pub fn typ(self) -> u8 {
        ((self.0 >> 40) & 0xF) as u8
    }
    /// S bit: code or data segment (as opposed to a system descriptor).
    pub fn is_code_or_data(self) -> bool {
        self.0 & (1 << 44) != 0
    }
    /// A code segment.
    pub fn is_code(self) -> bool {
        self.is_code_or_data() && self.typ() & 8 != 0
    }
    /// A data segment.
    pub fn is_data(self) -> bool {
        self.is_code_or_data() && self.typ() & 8 == 0
    }
    /// Conforming code segment.
    pub fn conforming(self) -> bool {
        self.is_code() && self.typ() & 4 != 0
    }
    /// Readable code segment or any data segment.
    pub fn readable(self) -> bool {
        self.is_data() || (self.is_code() && self.typ() & 2 != 0)
    }
    /// Writable data segment.
    pub fn writable_data(self) -> bool {
        self.is_data() && self.typ() & 2 != 0
    }
    /// Descriptor privilege level.
    pub fn dpl(self) -> u8 {
        ((self.0 >> 45) & 3) as u8
    }
    /// Present bit.
    pub fn present(self) -> bool {
        self.0 & (1 << 47) != 0
    }
    /// Gate: target selector.
    pub fn gate_selector(self) -> u16 {
        (self.0 >> 16) as u16
    }
    /// Gate: target offset (32-bit gates; 16-bit gates use the low half).
    pub fn gate_offset(self) -> u32 {
        ((self.0 & 0xFFFF) | ((self.0 >> 32) & 0xFFFF_0000)) as u32
    }
    /// L bit: a 64-bit code segment in IA-32e mode.
    pub fn long(self) -> bool {
        self.0 & (1 << 53) != 0
    }
    /// D/B bit: 32-bit default size (code) or big stack (data).
    pub fn db(self) -> bool {
        self.0 & (1 << 54) != 0
    }
    /// Gate: interrupt stack table index (64-bit interrupt/trap gates, SDM Vol. 3A §6.14.1).
    pub fn gate_ist(self) -> u8 {
        ((self.0 >> 32) & 7) as u8
    }
    /// Call gate: parameter count.
    pub fn gate_param_count(self) -> u8 {
        ((self.0 >> 32) & 0x1F) as u8
    }
    /// The hidden-cache image of this descriptor loaded with `selector`.
    pub fn to_segment(self, selector: u16) -> Segment {
        Segment {
            selector,
            base: u64::from(self.base()),
            limit: self.limit(),
            attributes: self.attributes(),
        }
    }
}

/// A null segment register value: selector kept, marked unusable (SDM Vol. 3A §3.4.2).
pub(crate) fn null_segment(selector: u16) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0,
        attributes: Segment::ATTR_UNUSABLE,
    }
}

/// A null SS for privilege level `cpl` as IA-32e mode loads it on an interrupt, a call gate
/// or a return to 64-bit code (SDM Vol. 3A §6.14.4): unusable, but with DPL = `cpl` kept
/// because the current privilege level is read from SS.
pub(crate) fn null_stack_segment(selector: u16, cpl: u8) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0,
        attributes: Segment::ATTR_UNUSABLE | (u32::from(cpl) << 5) | 0x3,
    }
}

/// The second half of a 16-byte system descriptor in IA-32e mode (SDM Vol. 3A §7.2.3
/// Figure 7-4, §5.8.3.1 Figure 5-9): bits 31:0 of the base or offset, and a type field that
/// must be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Upper(pub u64);

impl Upper {
    /// Bits 63:32 of the base or offset.
    pub fn high(self) -> u64 {
        self.0 & 0xFFFF_FFFF
    }
    /// The type field of the upper half (bits 12:8 of its second doubleword) is zero, as
    /// required: it reads as a null descriptor if it were a legacy one.
    pub fn type_ok(self) -> bool {
        (self.0 >> 40) & 0x1F == 0
    }
}

/// #NP(code).
pub(crate) const fn np(code: u32) -> Fault {
    Fault::with_code(vector::NP, code)
}

/// #TS(code).
pub(crate) const fn ts(code: u32) -> Fault {
    Fault::with_code(vector::TS, code)
}

/// Selector error code: index and TI, RPL cleared (SDM Vol. 3A §6.13).
#[inline]
pub(crate) fn sel_code(selector: u16) -> u32 {
    u32::from(selector & 0xFFFC)
}

impl Interpreter {
    /// Linear address of `len` bytes at `offset` in segment `seg`, after the limit and type
    /// checks of SDM Vol. 3A §5.3–5.4: violations raise #SS(0) for SS and #GP(0) otherwise.
    /// The common case — a usable expand-up data segment, or a code segment read or executed
    /// within its limit — takes the first branch.
    #[inline]
    pub(crate) fn seg_linear(
        &self,
        seg: SegReg,
        offset: u64,
        len: u64,
        kind: AccessKind,
    ) -> Result<u64, Fault> {
        if self.state.in_64bit_code() {
            return self.linear_64(seg, offset, len);
        }
        let s = self.state.seg(seg);
        let last = offset.wrapping_add(len.max(1) - 1);
        let a = s.attributes;
        // Usable, expand-up data (type bit 2 clear, code bit 3 clear) and writable, or any
        // non-write access to a usable expand-up data segment.
        if a & (Segment::ATTR_UNUSABLE | 0xC) == 0
            && (a & 2 != 0 || kind != AccessKind::Write)
            && last <= u64::from(s.limit)
            && last >= offset
        {
            return Ok(s.base.wrapping_add(offset) & 0xFFFF_FFFF);
        }
        self.seg_linear_slow(seg, offset, last, kind)
    }

    /// The less common cases of [`Self::seg_linear`]: code segments, read-only data,
    /// expand-down segments, unusable segments, and limit violations.
    #[cold]
    fn seg_linear_slow(
        &self,
        seg: SegReg,
        offset: u64,
        last: u64,
        kind: AccessKind,
    ) -> Result<u64, Fault> {
        let s = self.state.seg(seg);
        let fault = if seg == SegReg::Ss {
            Fault::ss(0)
        } else {
            Fault::gp(0)
        };
        let a = s.attributes;
        // Type and usability are checked only in protected mode proper; real and v86 mode
        // use the cached limit alone (SDM Vol. 3A §20.1.1).
        let checks = self.state.protected_mode() && self.state.rflags & flags::VM == 0;
        if checks {
            if a & Segment::ATTR_UNUSABLE != 0 {
                return Err(fault);
            }
            let code = a & 8 != 0;
            let ok = match kind {
                AccessKind::Write => !code && a & 2 != 0,
                AccessKind::Read => !code || a & 2 != 0,
                AccessKind::Execute => code || seg != SegReg::Cs,
            };
            if !ok {
                return Err(fault);
            }
        }
        let expand_down = a & 0xC == 0x4 && (checks || a & Segment::ATTR_S != 0);
        if last < offset {
            return Err(fault);
        }
        if expand_down {
            // Valid offsets are limit+1 ..= 0xFFFF or 0xFFFFFFFF (SDM Vol. 3A §5.3).
            let upper = if s.db() { 0xFFFF_FFFF } else { 0xFFFF };
            if offset <= u64::from(s.limit) || last > upper {
                return Err(fault);
            }
        } else if last > u64::from(s.limit) {
            return Err(fault);
        }
        Ok(s.base.wrapping_add(offset) & 0xFFFF_FFFF)
    }

    /// Read the descriptor `selector` refers to from the GDT or LDT. `Ok(None)` if the
    /// selector lies beyond the table limit (or names an unusable LDT); page faults on the
    /// table read propagate. Table reads are supervisor accesses (SDM Vol. 3A §4.6).
    pub(crate) fn read_descriptor(
        &mut self,
        p: &mut dyn Platform,
        selector: u16,
    ) -> Result<Option<Descriptor>, Fault> {
        let Some(linear) = self.descriptor_address(selector) else {
            return Ok(None);
        };
        let mut b = [0u8; 8];
        self.read_sys(p, linear, &mut b)?;
        Ok(Some(Descriptor(u64::from_le_bytes(b))))
    }

    /// Linear address of the descriptor for `selector`, if inside its table.
    pub(crate) fn descriptor_address(&self, selector: u16) -> Option<u64> {
        let (base, limit) = if selector & 4 != 0 {
            let l = &self.state.ldtr;
            if l.unusable() || !l.present() {
                return None;
            }
            (l.base, l.limit)
        } else {
            (self.state.gdtr.base, u32::from(self.state.gdtr.limit))
        };
        let index = u64::from(selector & !7);
        if index + 7 > u64::from(limit) {
            return None;
        }
        Some(self.wrap_linear(base.wrapping_add(index)))
    }

    /// Read a 16-byte IA-32e system descriptor (LDT, 64-bit TSS, 64-bit call gate) for
    /// `selector`: `Ok(None)` if either half lies beyond the table limit (SDM Vol. 3A §3.5.2,
    /// "LLDT"/"LTR"/"CALL" #GP(selector) conditions).
    pub(crate) fn read_system_descriptor(
        &mut self,
        p: &mut dyn Platform,
        selector: u16,
    ) -> Result<Option<(Descriptor, Upper)>, Fault> {
        let Some(linear) = self.descriptor_address(selector) else {
            return Ok(None);
        };
        let limit = if selector & 4 != 0 {
            self.state.ldtr.limit
        } else {
            u32::from(self.state.gdtr.limit)
        };
        if u64::from(selector & !7) + 15 > u64::from(limit) {
            return Ok(None);
        }
        let mut b = [0u8; 16];
        self.read_sys(p, linear, &mut b)?;
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&b[..8]);
        hi.copy_from_slice(&b[8..]);
        Ok(Some((
            Descriptor(u64::from_le_bytes(lo)),
            Upper(u64::from_le_bytes(hi)),
        )))
    }

    /// Set the accessed bit of a code/data descriptor in memory if it is clear
    /// (SDM Vol. 3A §3.4.5.1: the processor sets it when loading the segment register).
    pub(crate) fn set_accessed(
        &mut self,
        p: &mut dyn Platform,
        selector: u16,
        desc: Descriptor,
    ) -> Result<(), Fault> {
        if desc.0 & (1 << 40) != 0 {
            return Ok(());
        }
        if let Some(linear) = self.descriptor_address(selector) {
            let byte = ((desc.0 >> 40) as u8) | 1;
            self.write_sys(p, linear + 5, &[byte])?;
        }
        Ok(())
    }

    /// Rewrite the type byte (access byte) of the descriptor for `selector`, e.g. to set or
    /// clear a TSS busy bit.
    pub(crate) fn write_descriptor_access(
        &mut self,
        p: &mut dyn Platform,
        selector: u16,
        access: u8,
    ) -> Result<(), Fault> {
        if let Some(linear) = self.descriptor_address(selector) {
            self.write_sys(p, linear + 5, &[access])?;
        }
        Ok(())
    }

    /// Load segment register `seg` (not CS) with `selector` as MOV Sreg, POP Sreg and LDS/LES/
    /// LFS/LGS/LSS do (SDM Vol. 2 "MOV", Vol. 3A §5.5–5.7).
    pub(crate) fn load_segment(
        &mut self,
        p: &mut dyn Platform,
        seg: SegReg,
        selector: u16,
    ) -> Result<(), Fault> {
        if !self.state.protected_mode() {
            // Real mode: only selector and base change (SDM Vol. 3A §20.1.1), so big limits
            // set up in protected mode survive ("unreal mode").
            let s = self.state.seg_mut(seg);
            if s.unusable() || !s.present() {
                // A cache left null by protected mode has no usable limit: start afresh.
                *s = Segment::real_mode(selector);
            } else {
                s.selector = selector;
                s.base = u64::from(selector) << 4;
            }
            return Ok(());
        }
        if self.state.rflags & flags::VM != 0 {
            *self.state.seg_mut(seg) = Segment {
                selector,
                base: u64::from(selector) << 4,
                limit: 0xFFFF,
                attributes: V86_SEG_ATTRIBUTES,
            };
            return Ok(());
        }
        let cpl = self.state.cpl();
        let rpl = (selector & 3) as u8;
        let code = sel_code(selector);
        if selector & 0xFFFC == 0 {
            if seg == SegReg::Ss {
                // 64-bit mode allows a null SS below ring 3 with RPL = CPL
                // (SDM Vol. 2B "MOV", 64-bit mode exceptions).
                if self.state.in_64bit_code() && cpl < 3 && rpl == cpl {
                    *self.state.seg_mut(seg) = null_stack_segment(selector, cpl);
                    return Ok(());
                }
                return Err(Fault::gp(0));
            }
            *self.state.seg_mut(seg) = null_segment(selector);
            return Ok(());
        }
        let Some(desc) = self.read_descriptor(p, selector)? else {
            return Err(Fault::gp(code));
        };
        if seg == SegReg::Ss {
            if rpl != cpl || !desc.writable_data() || desc.dpl() != cpl {
                return Err(Fault::gp(code));
            }
            if !desc.present() {
                return Err(Fault::ss(code));
            }
        } else {
            if !desc.readable() {
                return Err(Fault::gp(code));
            }
            if !desc.conforming() && (rpl > desc.dpl() || cpl > desc.dpl()) {
                return Err(Fault::gp(code));
            }
            if !desc.present() {
                return Err(np(code));
            }
        }
        self.set_accessed(p, selector, desc)?;
        let mut s = desc.to_segment(selector);
        s.attributes |= Segment::ATTR_ACCESSED;
        *self.state.seg_mut(seg) = s;
        Ok(())
    }

    /// After a return or IRET to an outer privilege level, null every data segment register
    /// the new CPL may not use (SDM Vol. 2 "RET", "IRET": data or non-conforming code segments
    /// with DPL < CPL).
    pub(crate) fn null_inaccessible_data_segments(&mut self) {
        let cpl = self.state.cpl();
        for seg in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            let s = self.state.seg(seg);
            let conforming_code = s.attributes & 0xC == 0xC;
            if s.attributes & Segment::ATTR_UNUSABLE == 0 && !conforming_code && s.dpl() < cpl {
                *self.state.seg_mut(seg) = null_segment(0);
            }
        }
    }

    /// Check that the current privilege level may access `len` bytes of I/O ports from `port`
    /// (SDM Vol. 1 §19.5): CPL ≤ IOPL passes in protected mode; otherwise (and always in
    /// virtual-8086 mode) every bit for the ports in the TSS I/O permission bitmap must be
    /// clear. Failure is #GP(0).
    pub(crate) fn check_io_permission(
        &mut self,
        p: &mut dyn Platform,
        port: u16,
        len: u8,
    ) -> Result<(), Fault> {
        if !self.state.protected_mode() {
            return Ok(());
        }
        let vm = self.state.rflags & flags::VM != 0;
        let iopl = ((self.state.rflags & flags::IOPL) >> 12) as u8;
        if !vm && self.state.cpl() <= iopl {
            return Ok(());
        }
        let tr = self.state.tr;
        // Only a 32-bit (or, in IA-32e mode, 64-bit) TSS has a bitmap.
        if tr.unusable() || tr.type_field() & 0xD != 0x9 {
            return Err(Fault::gp(0));
        }
        if tr.limit < 0x67 {
            return Err(Fault::gp(0));
        }
        let mut b = [0u8; 2];
        self.read_sys(p, self.wrap_linear(tr.base.wrapping_add(0x66)), &mut b)?;
        let map_base = u64::from(u16::from_le_bytes(b));
        let byte = map_base + u64::from(port / 8);
        if byte + 1 > u64::from(tr.limit) {
            return Err(Fault::gp(0));
        }
        self.read_sys(p, self.wrap_linear(tr.base.wrapping_add(byte)), &mut b)?;
        let bits = u16::from_le_bytes(b);
        let mask = ((1u32 << len) - 1) << (port & 7);
        if u32::from(bits) & mask != 0 {
            return Err(Fault::gp(0));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_fields_decode() {
        // Flat 4 GiB 32-bit code, DPL 0: base 0, limit 0xFFFFF pages.
        let d = Descriptor(0x00CF_9A00_0000_FFFF);
        assert_eq!(d.base(), 0);
        assert_eq!(d.limit(), 0xFFFF_FFFF);
        assert!(d.is_code() && d.readable() && !d.conforming());
        assert_eq!(d.attributes(), 0xC09A);
        let d = Descriptor(0x0040_F212_3456_0FFF);
        assert_eq!(d.base(), 0x0012_3456);
        assert_eq!(d.limit(), 0xFFF);
        assert_eq!(d.dpl(), 3);
        assert!(d.writable_data());
        // 32-bit call gate to 0008:12345678 with 2 parameters, DPL 3.
        let g = Descriptor(0x1234_EC02_0008_5678);
        assert_eq!(g.gate_selector(), 8);
        assert_eq!(g.gate_offset(), 0x1234_5678);
        assert_eq!(g.gate_param_count(), 2);
        assert_eq!(g.typ(), sys_type::CALL_GATE32);
        assert!(!g.is_code_or_data());
        // 64-bit code, DPL 3: L = 1, D = 0.
        let c = Descriptor(0x00AF_FA00_0000_FFFF);
        assert!(c.long() && !c.db() && c.is_code());
        // 64-bit interrupt gate with IST 3.
        let i = Descriptor(0x5678_8E03_0010_1234);
        assert_eq!((i.gate_ist(), i.gate_offset()), (3, 0x5678_1234));
    }

    #[test]
    fn canonical_addresses_have_bits_63_to_47_equal() {
        for a in [0, 0x7FFF_FFFF_FFFF, 0xFFFF_8000_0000_0000, u64::MAX] {
            assert!(is_canonical(a), "{a:#x}");
        }
        for a in [0x8000_0000_0000, 0xFFFF_7FFF_FFFF_FFFF, 1 << 63, 1 << 48] {
            assert!(!is_canonical(a), "{a:#x}");
        }
    }

    #[test]
    fn upper_half_of_a_system_descriptor() {
        let u = Upper(0x0000_0000_FFFF_8000);
        assert_eq!(u.high(), 0xFFFF_8000);
        assert!(u.type_ok());
        // A legacy descriptor in the upper slot (type bits set) is rejected.
        assert!(!Upper(0x0000_8900_0000_0000).type_ok());
        let ss = null_stack_segment(2, 2);
        assert!(ss.unusable());
        assert_eq!(ss.dpl(), 2);
    }
}
