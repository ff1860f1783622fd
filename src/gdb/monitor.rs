//! `monitor` commands (gdb's `monitor CMD`, the `qRcmd` packet).
//!
//! - `info registers`: the full system state — general registers, RIP and its linear
//!   address, RFLAGS, every segment's selector and descriptor cache, LDTR, TR, GDTR, IDTR,
//!   CR0/2/3/4/8, EFER, DR0–7, the MSRs PC guests use, pending events.
//! - `info mem`: mapped linear ranges with their rights, from the guest's page tables.
//! - `info tlb`: every mapped page, linear → physical.
//! - `phys ADDR LEN`: hex dump of guest-physical memory (at most 64 KiB).
//! - `reset`: reset the machine (devices and CPU).
//! - `accel`: the CPU backend in use.

use std::fmt::Write as _;

use anyhow::Result;
use pcvm_core::{CpuState, Platform, SegReg, Segment};

use super::pagewalk;
use super::{GdbMachine, GdbTarget};

/// Most bytes `phys` dumps at once.
const MAX_PHYS_DUMP: u64 = 64 * 1024;
/// Most pages `info tlb` lists.
const MAX_TLB_LINES: usize = 4096;
/// Most pages `info mem` walks.
const MAX_MEM_PAGES: usize = 1 << 20;

const HELP: &str = "\
pcvm monitor commands:
  info registers   full CPU state (segments with descriptor caches, GDTR/IDTR, CRs, MSRs)
  info mem         mapped linear ranges from the guest's page tables
  info tlb         every mapped page: linear -> physical
  phys ADDR LEN    hex dump of guest-physical memory (ADDR, LEN in C syntax, LEN <= 64K)
  reset            reset the machine
  accel            the CPU backend in use
  help             this text
";

/// Run one command; the text to show (errors are shown too, never fatal).
pub fn run<M: GdbMachine>(t: &mut GdbTarget<'_, M>, cmd: &str) -> Result<String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    Ok(match words.as_slice() {
        [] | ["help"] => HELP.to_string(),
        ["info", "registers"] | ["info", "reg"] | ["info", "r"] => {
            let (cpu, _) = t.m.parts();
            let name = cpu.name();
            let s = cpu.state()?;
            format_registers(&s, name)
        }
        ["info", "mem"] => {
            let (cpu, board) = t.m.parts();
            let s = cpu.state()?;
            let maps = pagewalk::mappings(board.memory(), &s, MAX_MEM_PAGES);
            let mut o = format!("paging: {}\n", pagewalk::mode_name(&s));
            for (start, end, w, u, nx) in pagewalk::ranges(&maps) {
                let _ = writeln!(
                    o,
                    "{start:016x}-{end:016x} {:016x} {}r{}{}",
                    end.wrapping_sub(start),
                    if u { 'u' } else { '-' },
                    if w { 'w' } else { '-' },
                    if nx { '-' } else { 'x' },
                );
            }
            if maps.len() >= MAX_MEM_PAGES {
                o.push_str("(listing truncated)\n");
            }
            o
        }
        ["info", "tlb"] => {
            let (cpu, board) = t.m.parts();
            let s = cpu.state()?;
            let maps = pagewalk::mappings(board.memory(), &s, MAX_TLB_LINES + 1);
            let mut o = format!("paging: {}\n", pagewalk::mode_name(&s));
            for m in maps.iter().take(MAX_TLB_LINES) {
                let _ = writeln!(
                    o,
                    "{:016x}: {:016x} {:>5} {}{}{}{}",
                    m.linear,
                    m.phys,
                    match m.size {
                        0x1000 => "4K",
                        0x20_0000 => "2M",
                        0x40_0000 => "4M",
                        _ => "1G",
                    },
                    if m.global { 'G' } else { '-' },
                    if m.user { 'U' } else { 'S' },
                    if m.writable { 'W' } else { 'R' },
                    if m.no_exec { "NX" } else { "" },
                );
            }
            if maps.len() > MAX_TLB_LINES {
                let _ = writeln!(o, "(only the first {MAX_TLB_LINES} pages are listed)");
            }
            o
        }
        ["phys", addr, len] => match (parse_num(addr), parse_num(len)) {
            (Some(addr), Some(len)) if len <= MAX_PHYS_DUMP => {
                let (_, board) = t.m.parts();
                hex_dump(board.memory(), addr, len)
            }
            (Some(_), Some(_)) => format!("phys: at most {MAX_PHYS_DUMP} bytes at once\n"),
            _ => "usage: phys ADDR LEN\n".to_string(),
        },
        ["reset"] => {
            t.m.reset()?;
            t.reset_pending = false;
            "machine reset\n".to_string()
        }
        ["accel"] => {
            let (cpu, _) = t.m.parts();
            format!("accelerator: {}\n", cpu.name())
        }
        _ => format!("unknown monitor command: {}\n{HELP}", cmd.trim()),
    })
}

/// A number in C syntax: `0x10`, `0o17`/`017`, `0b101`, or decimal.
pub fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(b) = s.strip_prefix("0b") {
        u64::from_str_radix(b, 2).ok()
    } else if let Some(o) = s.strip_prefix("0o") {
        u64::from_str_radix(o, 8).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// 16 bytes a line with ASCII; unreadable bytes (MMIO, holes) shown as `??`.
fn hex_dump(mem: &pcvm_core::GuestMemory, addr: u64, len: u64) -> String {
    let mut o = String::new();
    // u128 so a range that ends at the top of the address space cannot overflow.
    let (start, end) = (u128::from(addr), u128::from(addr) + u128::from(len));
    let mut line = start & !0xF;
    while line < end {
        let _ = write!(o, "{line:016x}:");
        let mut ascii = String::new();
        for a in line..line + 16 {
            if a < start || a >= end {
                o.push_str("   ");
                ascii.push(' ');
                continue;
            }
            let mut b = [0u8];
            match mem.read_phys(a as u64, &mut b) {
                Ok(()) => {
                    let _ = write!(o, " {:02x}", b[0]);
                    ascii.push(if b[0].is_ascii_graphic() || b[0] == b' ' {
                        b[0] as char
                    } else {
                        '.'
                    });
                }
                Err(_) => {
                    o.push_str(" ??");
                    ascii.push('?');
                }
            }
        }
        let _ = writeln!(o, "  |{ascii}|");
        line += 16;
    }
    o
}

fn seg_line(o: &mut String, name: &str, s: &Segment) {
    let _ = writeln!(
        o,
        "{name:<4}={:04x} base={:016x} limit={:08x} attr={:05x} {}",
        s.selector,
        s.base,
        s.limit,
        s.attributes,
        describe_segment(s)
    );
}

/// The descriptor cache in words: type, DPL, present, size.
fn describe_segment(s: &Segment) -> String {
    if s.unusable() {
        return "unusable".into();
    }
    let ty = s.type_field();
    let kind = if s.attributes & Segment::ATTR_S == 0 {
        match ty {
            0x1 | 0x3 => "TSS16",
            0x2 => "LDT",
            0x9 | 0xB => "TSS32",
            _ => "system",
        }
    } else if ty & 0x8 != 0 {
        if ty & 0x4 != 0 {
            "code conforming"
        } else {
            "code"
        }
    } else if ty & 0x4 != 0 {
        "data expand-down"
    } else {
        "data"
    };
    let size = if s.long() {
        "64-bit"
    } else if s.db() {
        "32-bit"
    } else {
        "16-bit"
    };
    format!(
        "{kind} dpl={} {} {size}{}",
        s.dpl(),
        if s.present() { "P" } else { "NP" },
        if s.attributes & Segment::ATTR_G != 0 {
            " G"
        } else {
            ""
        }
    )
}

/// The full state, QEMU-`info registers`-like.
pub fn format_registers(s: &CpuState, backend: &str) -> String {
    let mut o = String::new();
    let g = &s.gpr;
    let names = [
        "RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI", "R8", "R9", "R10", "R11", "R12",
        "R13", "R14", "R15",
    ];
    for (i, n) in names.iter().enumerate() {
        let _ = write!(o, "{n:<3}={:016x}", g[i]);
        o.push(if i % 4 == 3 { '\n' } else { ' ' });
    }
    let mode = if s.long_mode_active() {
        if s.in_64bit_code() {
            "long mode, 64-bit code"
        } else {
            "long mode, compatibility code"
        }
    } else if !s.protected_mode() {
        "real mode"
    } else if s.rflags & pcvm_core::cpu_state::flags::VM != 0 {
        "virtual-8086 mode"
    } else {
        "protected mode"
    };
    let _ = writeln!(
        o,
        "RIP={:016x} (linear {:016x}) RFL={:08x} CPL={} {}-bit code, {mode}{}",
        s.rip,
        s.linear_rip(),
        s.rflags,
        s.cpl(),
        s.code_bitness(),
        if s.halted { ", halted" } else { "" }
    );
    for (name, reg) in ["ES", "CS", "SS", "DS", "FS", "GS"].iter().zip(SegReg::ALL) {
        seg_line(&mut o, name, s.seg(reg));
    }
    seg_line(&mut o, "LDT", &s.ldtr);
    seg_line(&mut o, "TR", &s.tr);
    let _ = writeln!(
        o,
        "GDT=     {:016x} {:08x}\nIDT=     {:016x} {:08x}",
        s.gdtr.base, s.gdtr.limit, s.idtr.base, s.idtr.limit
    );
    let _ = writeln!(
        o,
        "CR0={:08x} CR2={:016x} CR3={:016x} CR4={:08x} CR8={:x}",
        s.cr0, s.cr2, s.cr3, s.cr4, s.cr8
    );
    let _ = writeln!(o, "EFER={:016x} XCR0={:016x}", s.efer, s.xcr0);
    for i in 0..4 {
        let _ = write!(o, "DR{i}={:016x} ", s.dr[i]);
    }
    let _ = writeln!(o, "\nDR6={:016x} DR7={:016x}", s.dr[6], s.dr[7]);
    let m = &s.msrs;
    let _ = writeln!(
        o,
        "APIC_BASE={:x} PAT={:016x} TSC={:x} KERNEL_GS_BASE={:x}",
        m.apic_base, m.pat, m.tsc, m.kernel_gs_base
    );
    let _ = writeln!(
        o,
        "SYSENTER_CS={:x} SYSENTER_ESP={:x} SYSENTER_EIP={:x}",
        m.sysenter_cs, m.sysenter_esp, m.sysenter_eip
    );
    let _ = writeln!(
        o,
        "STAR={:x} LSTAR={:x} CSTAR={:x} FMASK={:x}",
        m.star, m.lstar, m.cstar, m.fmask
    );
    let f = &s.fpu;
    let _ = writeln!(
        o,
        "FCW={:04x} FSW={:04x} FTW={:02x} MXCSR={:08x}",
        f.fcw, f.fsw, f.ftw, f.mxcsr
    );
    let _ = writeln!(
        o,
        "pending: exception={:?} interrupt={:?} nmi={} nmi_blocked={} sti_shadow={} mov_ss_shadow={}",
        s.pending_exception.map(|e| e.vector),
        s.pending_interrupt,
        s.nmi_pending,
        s.nmi_blocked,
        s.sti_shadow,
        s.mov_ss_shadow
    );
    let _ = writeln!(o, "accelerator: {backend}");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_c_syntax() {
        assert_eq!(parse_num("0x10"), Some(16));
        assert_eq!(parse_num("010"), Some(8));
        assert_eq!(parse_num("0b11"), Some(3));
        assert_eq!(parse_num("42"), Some(42));
        assert_eq!(parse_num("0"), Some(0));
        assert_eq!(parse_num("zz"), None);
    }

    #[test]
    fn dump_marks_unreadable_bytes() {
        let mem = pcvm_core::GuestMemory::pc(4 << 20).expect("memory");
        mem.write_phys(0x100, b"AB").expect("write");
        let d = hex_dump(&mem, 0x100, 2);
        assert!(d.starts_with("0000000000000100: 41 42"), "{d}");
        assert!(d.contains("|AB"), "{d}");
        // The VGA window is MMIO: not plain memory.
        assert!(hex_dump(&mem, 0xA0000, 1).contains("??"));
        // The top of the address space neither overflows nor loops.
        let top = hex_dump(&mem, u64::MAX - 3, 16);
        assert_eq!(top.lines().count(), 2, "{top}");
    }

    #[test]
    fn registers_show_descriptor_caches_and_tables() {
        let s = CpuState::reset();
        let text = format_registers(&s, "interp");
        assert!(text.contains("CS  =f000 base=00000000ffff0000"), "{text}");
        assert!(text.contains("real mode"));
        assert!(text.contains("GDT="));
        assert!(text.contains("accelerator: interp"));
    }
}
