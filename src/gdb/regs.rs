//! The register file gdb sees, and the target descriptions that lay it out.
//!
//! gdb numbers registers in the order of the target description XML and reads them all with
//! the `g` packet in that order (GDB manual, "Target Descriptions" and "Standard Target
//! Features"). Two layouts exist, chosen when gdb connects:
//!
//! - [`RegLayout::X86_64`]: `org.gnu.gdb.i386.core` in its 64-bit form (RAX..R15, RIP), x87,
//!   SSE (XMM0–15), `org.gnu.gdb.i386.segments` (FS/GS base) and `org.pcvm.x86.system` (kernel
//!   GS base, CR0/2/3/4/8, EFER) — used when the guest is in IA-32e mode.
//! - [`RegLayout::I386`] / [`RegLayout::I8086`]: the 32-bit form (EAX..EDI, EIP), x87, XMM0–7,
//!   the segment bases, CR0/2/3/4 and EFER; architecture `i386` for protected mode and `i8086`
//!   for real mode, so that gdb 13 disassembles the guest's code with the right operand size.
//!   gdb cannot change the register layout of a connected target, and an x86-64 description
//!   makes it decode 16- and 32-bit code as 64-bit code, so a guest that is not in long mode
//!   gets the 32-bit description. `set architecture i386`/`i8086` switches between the two
//!   32-bit ones at any time.
//!
//! In every layout the program counter (`$pc`, `rip`/`eip`) is the *linear* address of the next
//! instruction, CS.base + EIP outside 64-bit mode: that is where breakpoints, `x/i $pc` and
//! the symbol file's addresses live. The raw offset is EIP = `$pc` − CS.base (`monitor info
//! registers` shows both). Writing `$pc` sets EIP = value − CS.base.

use gdbstub::arch::{Arch, Registers};

/// Which description and `g` packet layout the connection uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RegLayout {
    /// 64-bit registers (guest in IA-32e mode).
    #[default]
    X86_64,
    /// 32-bit registers, 32-bit disassembly (protected mode).
    I386,
    /// 32-bit registers, 16-bit disassembly (real mode).
    I8086,
}

impl RegLayout {
    /// The layout that suits a guest in this state.
    pub fn for_state(s: &pcvm_core::CpuState) -> Self {
        if s.long_mode_active() {
            RegLayout::X86_64
        } else if s.protected_mode() {
            RegLayout::I386
        } else {
            RegLayout::I8086
        }
    }

    /// Parse a user's choice (`x86-64`, `i386`, `i8086`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "x86-64" | "x86_64" | "amd64" | "i386:x86-64" => Some(RegLayout::X86_64),
            "i386" | "x86" => Some(RegLayout::I386),
            "i8086" | "8086" | "real" => Some(RegLayout::I8086),
            _ => None,
        }
    }

    fn wide(self) -> bool {
        self == RegLayout::X86_64
    }

    /// Bytes in a `g` packet of this layout.
    pub fn g_len(self) -> usize {
        let (gprs, word, xmms) = if self.wide() { (16, 8, 16) } else { (8, 4, 8) };
        let core = gprs * word + word + 4 + 6 * 4 + 8 * 10 + 8 * 4;
        let sse = xmms * 16 + 4;
        let segs = 2 * word;
        let system = if self.wide() { 8 * 7 } else { 4 * 4 + 8 };
        core + sse + segs + system
    }

    /// The target description XML.
    pub fn target_xml(self) -> String {
        target_xml(self)
    }
}

/// Every register gdb can read or write, in host-friendly form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct X86Regs {
    /// Layout used for (de)serialization.
    pub layout: RegLayout,
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8–R15 (hardware encoding order).
    pub gpr: [u64; 16],
    /// Linear address of the next instruction (see the module docs).
    pub pc: u64,
    pub eflags: u32,
    /// CS, SS, DS, ES, FS, GS selectors (gdb's order).
    pub seg: [u16; 6],
    /// ST0–ST7, 80 bits each.
    pub st: [[u8; 10]; 8],
    /// fctrl, fstat, ftag (full 16-bit tag word), fiseg, fioff, foseg, fooff, fop.
    pub fpu: [u32; 8],
    pub xmm: [u128; 16],
    pub mxcsr: u32,
    pub fs_base: u64,
    pub gs_base: u64,
    pub k_gs_base: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
}

/// gdb's x86-64 core order of the general registers, as indices into [`X86Regs::gpr`].
const GPR_ORDER_64: [usize; 16] = [0, 3, 1, 2, 6, 7, 5, 4, 8, 9, 10, 11, 12, 13, 14, 15];
/// gdb's i386 core order (EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI) is the encoding order.
const GPR_ORDER_32: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// Little-endian byte sink for serialization.
struct Out<'a, F: FnMut(Option<u8>)>(&'a mut F);

impl<F: FnMut(Option<u8>)> Out<'_, F> {
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            (self.0)(Some(x));
        }
    }
    fn word(&mut self, v: u64, wide: bool) {
        if wide {
            self.bytes(&v.to_le_bytes());
        } else {
            self.bytes(&(v as u32).to_le_bytes());
        }
    }
}

/// Little-endian reader for deserialization.
struct In<'a> {
    b: &'a [u8],
}

impl In<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], ()> {
        let (head, rest) = self.b.split_at_checked(N).ok_or(())?;
        self.b = rest;
        head.try_into().map_err(|_| ())
    }
    fn word(&mut self, wide: bool) -> Result<u64, ()> {
        if wide {
            Ok(u64::from_le_bytes(self.take::<8>()?))
        } else {
            Ok(u64::from(u32::from_le_bytes(self.take::<4>()?)))
        }
    }
    fn u32(&mut self) -> Result<u32, ()> {
        Ok(u32::from_le_bytes(self.take::<4>()?))
    }
}

impl Registers for X86Regs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.pc
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        let wide = self.layout.wide();
        let mut o = Out(&mut write_byte);
        if wide {
            for i in GPR_ORDER_64 {
                o.word(self.gpr[i], true);
            }
        } else {
            for i in GPR_ORDER_32 {
                o.word(self.gpr[i], false);
            }
        }
        o.word(self.pc, wide);
        o.bytes(&self.eflags.to_le_bytes());
        for s in self.seg {
            o.bytes(&u32::from(s).to_le_bytes());
        }
        for st in &self.st {
            o.bytes(st);
        }
        for f in self.fpu {
            o.bytes(&f.to_le_bytes());
        }
        let xmms = if wide { 16 } else { 8 };
        for x in &self.xmm[..xmms] {
            o.bytes(&x.to_le_bytes());
        }
        o.bytes(&self.mxcsr.to_le_bytes());
        o.word(self.fs_base, wide);
        o.word(self.gs_base, wide);
        if wide {
            for v in [
                self.k_gs_base,
                self.cr0,
                self.cr2,
                self.cr3,
                self.cr4,
                self.cr8,
                self.efer,
            ] {
                o.word(v, true);
            }
        } else {
            for v in [self.cr0, self.cr2, self.cr3, self.cr4] {
                o.word(v, false);
            }
            o.word(self.efer, true);
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let layout = if bytes.len() == RegLayout::X86_64.g_len() {
            RegLayout::X86_64
        } else if bytes.len() == RegLayout::I386.g_len() {
            RegLayout::I386
        } else {
            return Err(());
        };
        let wide = layout.wide();
        let mut r = X86Regs {
            layout,
            ..X86Regs::default()
        };
        let mut i = In { b: bytes };
        if wide {
            for idx in GPR_ORDER_64 {
                r.gpr[idx] = i.word(true)?;
            }
        } else {
            for idx in GPR_ORDER_32 {
                r.gpr[idx] = i.word(false)?;
            }
        }
        r.pc = i.word(wide)?;
        r.eflags = i.u32()?;
        for s in &mut r.seg {
            *s = i.u32()? as u16;
        }
        for st in &mut r.st {
            *st = i.take::<10>()?;
        }
        for f in &mut r.fpu {
            *f = i.u32()?;
        }
        let xmms = if wide { 16 } else { 8 };
        for x in &mut r.xmm[..xmms] {
            *x = u128::from_le_bytes(i.take::<16>()?);
        }
        r.mxcsr = i.u32()?;
        r.fs_base = i.word(wide)?;
        r.gs_base = i.word(wide)?;
        if wide {
            r.k_gs_base = i.word(true)?;
            r.cr0 = i.word(true)?;
            r.cr2 = i.word(true)?;
            r.cr3 = i.word(true)?;
            r.cr4 = i.word(true)?;
            r.cr8 = i.word(true)?;
            r.efer = i.word(true)?;
        } else {
            r.cr0 = i.word(false)?;
            r.cr2 = i.word(false)?;
            r.cr3 = i.word(false)?;
            r.cr4 = i.word(false)?;
            r.efer = i.word(true)?;
        }
        if !i.b.is_empty() {
            return Err(());
        }
        *self = r;
        Ok(())
    }
}

/// The gdbstub architecture: x86 with a register layout chosen per connection.
pub enum PcvmX86 {}

impl Arch for PcvmX86 {
    type Usize = u64;
    type Registers = X86Regs;
    type RegId = ();
    type BreakpointKind = usize;
}

/// EFLAGS as a flags type so gdb prints `[ ZF PF IF ]` (Intel SDM Vol. 1 §3.4.3).
const EFLAGS_TYPE: &str = r#"<flags id="pcvm_eflags" size="4"><field name="CF" start="0" end="0"/><field name="" start="1" end="1"/><field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/><field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/><field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/><field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/><field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/><field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/><field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/><field name="ID" start="21" end="21"/></flags>"#;

/// MXCSR flags (Intel SDM Vol. 1 §10.2.3).
const MXCSR_TYPE: &str = r#"<flags id="pcvm_mxcsr" size="4"><field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/><field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/><field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/><field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/><field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/><field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/><field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/></flags>"#;

/// A 128-bit XMM register viewed as the vector shapes gdb knows.
const VEC128_TYPE: &str = r#"<vector id="pcvm_v4f" type="ieee_single" count="4"/><vector id="pcvm_v2d" type="ieee_double" count="2"/><vector id="pcvm_v16i8" type="int8" count="16"/><vector id="pcvm_v8i16" type="int16" count="8"/><vector id="pcvm_v4i32" type="int32" count="4"/><vector id="pcvm_v2i64" type="int64" count="2"/><union id="pcvm_vec128"><field name="v4_float" type="pcvm_v4f"/><field name="v2_double" type="pcvm_v2d"/><field name="v16_int8" type="pcvm_v16i8"/><field name="v8_int16" type="pcvm_v8i16"/><field name="v4_int32" type="pcvm_v4i32"/><field name="v2_int64" type="pcvm_v2i64"/><field name="uint128" type="uint128"/></union>"#;

fn reg(out: &mut String, name: &str, bits: u32, ty: &str, group: Option<&str>) {
    use std::fmt::Write as _;
    let _ = write!(out, r#"<reg name="{name}" bitsize="{bits}" type="{ty}""#);
    if let Some(g) = group {
        let _ = write!(out, r#" group="{g}""#);
    }
    out.push_str("/>");
}

fn target_xml(layout: RegLayout) -> String {
    let wide = layout.wide();
    let arch = match layout {
        RegLayout::X86_64 => "i386:x86-64",
        RegLayout::I386 => "i386",
        RegLayout::I8086 => "i8086",
    };
    let w = if wide { 64 } else { 32 };
    let mut x = String::with_capacity(8192);
    x.push_str(
        r#"<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target version="1.0">"#,
    );
    // No OS ABI: a bare machine (gdb would otherwise assume GNU/Linux and warn).
    x.push_str(&format!(
        "<architecture>{arch}</architecture><osabi>none</osabi>"
    ));

    x.push_str(r#"<feature name="org.gnu.gdb.i386.core">"#);
    x.push_str(EFLAGS_TYPE);
    let gprs: &[&str] = if wide {
        &[
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15",
        ]
    } else {
        &["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"]
    };
    for name in gprs {
        let ty = match *name {
            "rsp" | "rbp" | "esp" | "ebp" => "data_ptr",
            _ => {
                if wide {
                    "int64"
                } else {
                    "int32"
                }
            }
        };
        reg(&mut x, name, w, ty, None);
    }
    reg(
        &mut x,
        if wide { "rip" } else { "eip" },
        w,
        "code_ptr",
        None,
    );
    reg(&mut x, "eflags", 32, "pcvm_eflags", None);
    for s in ["cs", "ss", "ds", "es", "fs", "gs"] {
        reg(&mut x, s, 32, "int32", None);
    }
    for i in 0..8 {
        reg(&mut x, &format!("st{i}"), 80, "i387_ext", None);
    }
    for name in [
        "fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop",
    ] {
        reg(&mut x, name, 32, "int", Some("float"));
    }
    x.push_str("</feature>");

    x.push_str(r#"<feature name="org.gnu.gdb.i386.sse">"#);
    x.push_str(VEC128_TYPE);
    x.push_str(MXCSR_TYPE);
    for i in 0..if wide { 16 } else { 8 } {
        reg(
            &mut x,
            &format!("xmm{i}"),
            128,
            "pcvm_vec128",
            Some("vector"),
        );
    }
    reg(&mut x, "mxcsr", 32, "pcvm_mxcsr", Some("vector"));
    x.push_str("</feature>");

    // With the GNU/Linux OS ABI gdb 13's i386 architecture asserts on this feature; the
    // description above says `osabi none`, which is also what a bare machine is.
    x.push_str(r#"<feature name="org.gnu.gdb.i386.segments">"#);
    reg(&mut x, "fs_base", w, "int", None);
    reg(&mut x, "gs_base", w, "int", None);
    x.push_str("</feature>");
    x.push_str(r#"<feature name="org.pcvm.x86.system">"#);
    if wide {
        reg(&mut x, "k_gs_base", 64, "int", Some("system"));
    }
    for cr in ["cr0", "cr2", "cr3", "cr4"] {
        reg(&mut x, cr, w, "int", Some("system"));
    }
    if wide {
        reg(&mut x, "cr8", 64, "int", Some("system"));
    }
    reg(&mut x, "efer", 64, "int", Some("system"));
    x.push_str("</feature></target>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialize(r: &X86Regs) -> Vec<u8> {
        let mut v = Vec::new();
        r.gdb_serialize(|b| v.push(b.unwrap_or(0)));
        v
    }

    #[test]
    fn layouts_round_trip_and_match_their_length() {
        for layout in [RegLayout::X86_64, RegLayout::I386] {
            let mut r = X86Regs {
                layout,
                pc: 0x1234,
                eflags: 0x246,
                cr0: 0x8000_0011,
                efer: 0x500,
                ..X86Regs::default()
            };
            r.gpr[3] = 0xB;
            r.seg[0] = 0x8;
            r.xmm[7] = 0x0102_0304;
            r.st[2][9] = 0x40;
            let bytes = serialize(&r);
            assert_eq!(bytes.len(), layout.g_len());
            let mut back = X86Regs::default();
            back.gdb_deserialize(&bytes).expect("deserialize");
            assert_eq!(back, r);
        }
    }

    #[test]
    fn wrong_length_is_refused() {
        let mut r = X86Regs::default();
        assert!(r.gdb_deserialize(&[0; 17]).is_err());
        assert!(r.gdb_deserialize(&[]).is_err());
    }

    #[test]
    fn register_count_in_xml_matches_layout() {
        for (layout, count) in [
            (RegLayout::X86_64, 24 + 16 + 17 + 2 + 7),
            (RegLayout::I386, 16 + 16 + 9 + 2 + 5),
        ] {
            let xml = layout.target_xml();
            assert_eq!(xml.matches("<reg ").count(), count, "{layout:?}");
        }
        assert!(RegLayout::I8086
            .target_xml()
            .contains("<architecture>i8086<"));
    }
}
