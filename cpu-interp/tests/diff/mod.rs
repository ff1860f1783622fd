//! Host-CPU differential testing of the interpreter (issue 2 §4): generated instruction
//! sequences run on this machine's CPU (through `native/runner.c`, in 64-bit mode and in 32-bit
//! compatibility mode) and in [`pcvm_cpu_interp::Interpreter`] in 32-bit flat protected mode at
//! CPL 3 — and in 64-bit mode for the cases that mean the same there and for the 64-bit
//! families (`families64`) — from the same registers, flags and memory; registers, flags
//! (undefined ones masked, see `undef`), the data region and the exception vector must agree.
//!
//! Both sides use the same linear addresses: code at [`CODE_BASE`], a data region of
//! [`DATA_SIZE`] bytes at [`DATA_BASE`] (its upper half serves as stack). Every sequence ends
//! with INT3, so a completed case reports #BP (vector 3) with EIP just past it on both sides.

pub mod asm;
#[path = "../backend/mod.rs"]
pub mod backend;
pub mod driver;
pub mod families;
pub mod families64;
pub mod interp;
pub mod native;
pub mod prng;
pub mod undef;

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, OpKind};

pub use undef::Undefined;

/// Linear address of the code page (must match runner.c).
pub const CODE_BASE: u64 = 0x0031_0000;
/// Linear address of the data region (must match runner.c).
pub const DATA_BASE: u64 = 0x0032_0000;
/// Size of the data region (must match runner.c).
pub const DATA_SIZE: usize = 0x2000;
/// The end marker appended to every sequence.
pub const INT3: u8 = 0xCC;

/// EFLAGS bits compared: status flags, TF, IF, DF, IOPL, NT, AC, VIF, VIP, ID. RF (set in fault
/// frames) and VM are not; bit 1 is fixed.
pub const EFLAGS_COMPARED: u32 = 0x003C_7FD5;

/// One generated test case.
#[derive(Clone, Debug)]
pub struct Case {
    /// Instruction bytes, without the INT3 end marker.
    pub code: Vec<u8>,
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI.
    pub regs: [u32; 8],
    /// Bits 63:32 of RAX..RDI (64-bit-only cases; zero otherwise).
    pub hi: [u32; 8],
    /// R8–R15 (64-bit-only cases; zero otherwise).
    pub ext: [u64; 8],
    /// The case means something only in 64-bit mode (REX prefixes, 64-bit operands): it runs
    /// natively in 64-bit mode and in the interpreter in 64-bit mode, and all 64 bits of all
    /// sixteen GPRs are compared.
    pub long_only: bool,
    /// Initial EFLAGS: only the status flags and DF are used.
    pub eflags: u32,
    /// Seed and style of the data region contents (see `prng::fill_region`).
    pub mem_seed: u64,
    pub mem_style: u8,
    /// Bits the architecture leaves undefined after this case.
    pub undef: Undefined,
    /// The generator allows 64-bit mode (the encoding check must agree too).
    pub allow_64: bool,
    /// Segments at the start (64-bit mode runs only [`Segs::FLAT`]-like cases).
    pub segs: Segs,
    /// Where in the code page the bytes go (cut at the page end; the next page is not mapped);
    /// `segs.eip` must point there.
    pub code_offset: u32,
}

/// The selectors a case starts with and its first EIP. Selectors are those of Linux's GDT
/// (0x23 32-bit user code, 0x2b user data) or of the LDT runner.c installs (see interp.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segs {
    pub cs: u16,
    pub ds: u16,
    pub es: u16,
    pub ss: u16,
    pub eip: u32,
}

impl Segs {
    /// Flat 32-bit: CS = USER32_CS, data = USER_DS, code at CODE_BASE.
    pub const FLAT: Segs = Segs {
        cs: 0x23,
        ds: 0x2B,
        es: 0x2B,
        ss: 0x2B,
        eip: CODE_BASE as u32,
    };
    /// These segments with the code placed `offset` bytes into the code page.
    pub const fn at(self, offset: u32) -> Segs {
        Segs {
            eip: self.eip + offset,
            ..self
        }
    }

    /// 16-bit code segment at the code page (EIP 0), DS = SS = the data region (16-bit, limit
    /// 0x1FFF), ES = its upper half (base +0x1000, limit 0xFFF).
    pub const SEG16: Segs = Segs {
        cs: 0x07,
        ds: 0x0F,
        es: 0x17,
        ss: 0x0F,
        eip: 0,
    };
}

/// How a case ended, on either side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Exception vector that ended the run (3 = the INT3 end marker).
    pub vector: u8,
    /// EIP of the exception frame minus the case's first EIP.
    pub rip_off: u32,
    /// The error code pushed with the exception (0 when the vector has none).
    pub error_code: u32,
    /// CR2 after a #PF (meaningless otherwise).
    pub fault_addr: u32,
    pub regs: [u32; 8],
    /// Bits 63:32 of RAX..RDI and R8–R15 (meaningful in 64-bit mode only).
    pub hi: [u32; 8],
    pub ext: [u64; 8],
    pub eflags: u32,
    /// Bytes of the data region that differ from the initial contents: (offset, new value).
    pub mem: Vec<(u16, u8)>,
}

/// Which native execution mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeMode {
    /// 32-bit compatibility mode (CS = __USER32_CS).
    Compat32,
    /// 64-bit mode, running only encodings that mean the same there.
    Long64,
}

const REG_NAMES: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];

/// Intel-syntax disassembly of the case bytes (32-bit), one instruction per `; `.
pub fn disassemble(code: &[u8], bitness: u32) -> String {
    let mut dec = Decoder::with_ip(bitness, code, 0, DecoderOptions::NONE);
    let mut fmt = IntelFormatter::new();
    let mut out = Vec::new();
    let mut ins = Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut ins);
        let mut s = String::new();
        fmt.format(&ins, &mut s);
        out.push(s);
    }
    out.join("; ")
}

/// The mnemonics of the case bytes ("add;inc"), to group mismatches by instruction mix.
pub fn mnemonics(code: &[u8]) -> String {
    let mut dec = Decoder::with_ip(32, code, CODE_BASE, DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut ins = Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut ins);
        out.push(format!("{:?}", ins.mnemonic()));
    }
    out.join(";")
}

/// The bytes decode to the same instructions with the same operands (modulo 32-bit vs 64-bit
/// address registers) in 64-bit mode as in 32-bit mode — e.g. no INC r32 (a REX prefix there),
/// no PUSH/POP/LEAVE (64-bit operand size), no moffs forms, no BCD (invalid).
pub fn same_in_64bit_mode(code: &[u8]) -> bool {
    let mut d32 = Decoder::with_ip(32, code, CODE_BASE, DecoderOptions::NONE);
    let mut d64 = Decoder::with_ip(64, code, CODE_BASE, DecoderOptions::NONE);
    let (mut a, mut b) = (Instruction::default(), Instruction::default());
    while d32.can_decode() {
        if !d64.can_decode() {
            return false;
        }
        d32.decode_out(&mut a);
        d64.decode_out(&mut b);
        if a.is_invalid()
            || b.is_invalid()
            || a.code() != b.code()
            || a.len() != b.len()
            || a.op_count() != b.op_count()
            || b.is_ip_rel_memory_operand()
            || a.stack_pointer_increment() != 0
            || a.is_stack_instruction()
            || a.segment_prefix() != iced_x86::Register::None
        {
            return false;
        }
        for i in 0..a.op_count() {
            let (ka, kb) = (a.op_kind(i), b.op_kind(i));
            let same_kind = ka == kb
                || matches!(
                    (ka, kb),
                    (OpKind::MemorySegESI, OpKind::MemorySegRSI)
                        | (OpKind::MemorySegEDI, OpKind::MemorySegRDI)
                        | (OpKind::MemoryESEDI, OpKind::MemoryESRDI)
                );
            if !same_kind {
                return false;
            }
            if ka == OpKind::Register && a.op_register(i) != b.op_register(i) {
                return false;
            }
            if ka == OpKind::Memory
                && (a.memory_base().full_register32() != b.memory_base().full_register32()
                    || a.memory_index().full_register32() != b.memory_index().full_register32()
                    || a.memory_index_scale() != b.memory_index_scale()
                    || a.memory_displacement32() != b.memory_displacement32())
            {
                return false;
            }
        }
    }
    !d64.can_decode()
}

/// Field-by-field differences between the interpreter and the host, after masking.
pub fn compare(case: &Case, interp: &Outcome, host: &Outcome) -> Vec<String> {
    let mut diffs = Vec::new();
    if interp.vector != host.vector {
        diffs.push(format!(
            "vector: interp {} host {}",
            interp.vector, host.vector
        ));
    }
    // Error codes of #TS #NP #SS #GP #AC (the kernel does not report #PF's faithfully, and
    // the harness never provokes #PF).
    if interp.vector == host.vector
        && matches!(host.vector, 10..=13 | 17)
        && interp.error_code != host.error_code
    {
        diffs.push(format!(
            "error code: interp {:#x} host {:#x}",
            interp.error_code, host.error_code
        ));
    }
    // #PF: the faulting linear address and the P, W/R, U/S and RSVD bits of the error code
    // (the I/D bit depends on EFER.NXE, which Linux sets and the 2-level test paging lacks).
    if interp.vector == 14 && host.vector == 14 {
        if interp.fault_addr != host.fault_addr {
            diffs.push(format!(
                "CR2: interp {:#x} host {:#x}",
                interp.fault_addr, host.fault_addr
            ));
        }
        if (interp.error_code ^ host.error_code) & 0xF != 0 {
            diffs.push(format!(
                "#PF error code: interp {:#x} host {:#x}",
                interp.error_code, host.error_code
            ));
        }
    }
    if interp.rip_off != host.rip_off {
        diffs.push(format!(
            "eip: interp CODE+{:#x} host CODE+{:#x}",
            interp.rip_off, host.rip_off
        ));
    }
    for (i, name) in REG_NAMES.iter().enumerate() {
        let mask = !case.undef.regs[i];
        if (interp.regs[i] ^ host.regs[i]) & mask != 0 {
            diffs.push(format!(
                "{name}: interp {:#010x} host {:#010x} (initial {:#010x})",
                interp.regs[i], host.regs[i], case.regs[i]
            ));
        }
    }
    if case.long_only {
        for (i, name) in REG_NAMES.iter().enumerate() {
            let mask = !case.undef.hi[i];
            if (interp.hi[i] ^ host.hi[i]) & mask != 0 {
                diffs.push(format!(
                    "{name}[63:32]: interp {:#010x} host {:#010x} (initial {:#010x})",
                    interp.hi[i], host.hi[i], case.hi[i]
                ));
            }
            let mask = !case.undef.ext[i];
            if (interp.ext[i] ^ host.ext[i]) & mask != 0 {
                diffs.push(format!(
                    "r{}: interp {:#018x} host {:#018x} (initial {:#018x})",
                    i + 8,
                    interp.ext[i],
                    host.ext[i],
                    case.ext[i]
                ));
            }
        }
    }
    let undefined = case.undef.flags_at(host.rip_off);
    let fmask = EFLAGS_COMPARED & !undefined;
    if (interp.eflags ^ host.eflags) & fmask != 0 {
        diffs.push(format!(
            "eflags: interp {:#010x} host {:#010x} differ in {} (undefined mask {:#x})",
            interp.eflags,
            host.eflags,
            flag_names((interp.eflags ^ host.eflags) & fmask),
            undefined
        ));
    }
    if interp.mem != host.mem {
        let show = |m: &[(u16, u8)]| {
            let mut s: Vec<String> = m
                .iter()
                .take(24)
                .map(|(o, v)| format!("{o:#x}:{v:02x}"))
                .collect();
            if m.len() > 24 {
                s.push(format!("... ({} bytes)", m.len()));
            }
            s.join(" ")
        };
        diffs.push(format!(
            "memory (changed bytes, offset:value): interp [{}] host [{}]",
            show(&interp.mem),
            show(&host.mem)
        ));
    }
    diffs
}

fn flag_names(bits: u32) -> String {
    const NAMES: [(u32, &str); 15] = [
        (1 << 0, "CF"),
        (1 << 2, "PF"),
        (1 << 4, "AF"),
        (1 << 6, "ZF"),
        (1 << 7, "SF"),
        (1 << 8, "TF"),
        (1 << 9, "IF"),
        (1 << 10, "DF"),
        (1 << 11, "OF"),
        (3 << 12, "IOPL"),
        (1 << 14, "NT"),
        (1 << 18, "AC"),
        (1 << 19, "VIF"),
        (1 << 20, "VIP"),
        (1 << 21, "ID"),
    ];
    NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

/// A readable description of a case for failure reports.
pub fn describe(case: &Case) -> String {
    let mut regs: Vec<String> = (0..8)
        .map(|i| {
            if case.long_only {
                let v = u64::from(case.regs[i]) | (u64::from(case.hi[i]) << 32);
                format!("r{}={v:#x}", &REG_NAMES[i][1..])
            } else {
                format!("{}={:#010x}", REG_NAMES[i], case.regs[i])
            }
        })
        .collect();
    if case.long_only {
        regs.extend((0..8).map(|i| format!("r{}={:#x}", i + 8, case.ext[i])));
    }
    format!(
        "bytes [{}] = `{}`\n    initial {} eflags={:#06x} mem_seed={:#x} mem_style={} cs={:#x} ds={:#x} es={:#x} ss={:#x}",
        case.code
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" "),
        disassemble(
            &case.code,
            if case.long_only {
                64
            } else if case.segs.cs == 0x07 {
                16
            } else {
                32
            }
        ),
        regs.join(" "),
        case.eflags,
        case.mem_seed,
        case.mem_style,
        case.segs.cs,
        case.segs.ds,
        case.segs.es,
        case.segs.ss
    )
}
