//! The built-in demo guest `pcvm` runs when given no firmware and no drives.
//!
//! It is a 64 KiB ROM assembled at start-up with iced-x86's `code_asm`, mapped where a BIOS
//! goes (top of 4 GiB, aliased at 0xF0000). From the reset vector it:
//! 1. programs COM1 (16550A at 0x3F8: 115200 8N1) and prints a banner in real mode;
//! 2. loads a flat GDT and enters 32-bit protected mode (Intel SDM Vol. 3A §9.9.1);
//! 3. prints the CPUID vendor, family/model/stepping and feature flags, and the RAM size
//!    from CMOS (0x30/0x31, 0x34/0x35);
//! 4. turns on 2-level paging with a page mapped away from identity, checks that a read and a
//!    write go through the mapping (SDM Vol. 3A §4.3), and turns paging off again;
//! 5. times an ALU loop against PIT channel 0 (mode 2, read by counter latch) and prints MIPS;
//! 6. powers off through the APM shutdown port (the string "Shutdown" to port 0x8900, as
//!    SeaBIOS's APM code and Bochs use), which pcvm maps to exit status 0.

use anyhow::{Context, Result};
use iced_x86::code_asm::*;

/// Size of the ROM.
pub const ROM_SIZE: usize = 64 << 10;
/// Linear address of ROM offset 0 in the legacy alias below 1 MiB.
const ALIAS_BASE: u32 = 0xF_0000;
/// ROM offsets of the three parts.
const CODE16_OFFSET: usize = 0x0000;
const CODE32_OFFSET: usize = 0x2000;
const DATA_OFFSET: usize = 0x8000;
/// Selectors of the flat GDT.
const CODE32_SEL: u16 = 0x08;
const DATA32_SEL: u16 = 0x10;

/// COM1 registers.
const COM1: u16 = 0x3F8;
const COM1_LSR: u16 = COM1 + 5;
const LSR_THR_EMPTY: u32 = 0x20;

/// Scratch RAM used by the guest.
const STACK_TOP: u32 = 0x8_0000;
const VENDOR_BUF: u32 = 0x1000;
const PAGE_DIR: u32 = 0x2_0000;
const PAGE_TABLE0: u32 = 0x2_1000;
const PAGE_TABLE1: u32 = 0x2_2000;
/// The page at virtual 0x400000 is mapped to this physical page.
const PAGING_TARGET: u32 = 0x30_0000;
const PAGING_VIRT: u32 = 0x40_0000;

/// PIT input clock (Hz) and how long the benchmark runs (PIT ticks ≈ 0.25 s).
const PIT_HZ: u32 = 1_193_182;
const BENCH_TICKS: u32 = PIT_HZ / 4;
/// Inner-loop iterations per timer read, 4 instructions each.
const BENCH_INNER: u32 = 10_000;
const BENCH_INSNS_PER_INNER: u32 = 4;
/// Upper bound on outer iterations, so a frozen timer cannot hang the guest.
const BENCH_MAX_OUTER: u32 = 20_000;

/// The APM power-off port and the string that triggers it.
pub const APM_PORT: u16 = 0x8900;
pub const APM_SHUTDOWN: &[u8] = b"Shutdown";

/// Strings, the GDT and tables in the data area, with their linear addresses.
struct Data {
    bytes: Vec<u8>,
}

impl Data {
    fn new() -> Self {
        Data { bytes: Vec::new() }
    }
    fn addr(&self) -> u32 {
        ALIAS_BASE + DATA_OFFSET as u32 + self.bytes.len() as u32
    }
    fn add(&mut self, b: &[u8]) -> u32 {
        let a = self.addr();
        self.bytes.extend_from_slice(b);
        a
    }
    fn add_str(&mut self, s: &str) -> u32 {
        let a = self.addr();
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        a
    }
    fn align(&mut self, n: usize) {
        while !self.bytes.len().is_multiple_of(n) {
            self.bytes.push(0);
        }
    }
}

struct Strings {
    banner_rm: u32,
    pm: u32,
    vendor: u32,
    max_leaf: u32,
    family: u32,
    model: u32,
    stepping: u32,
    features: u32,
    memory: u32,
    mib: u32,
    paging_ok: u32,
    paging_bad: u32,
    bench: u32,
    bench_insns: u32,
    bench_ms: u32,
    bench_mips: u32,
    bench_frozen: u32,
    off: u32,
    feature_table: u32,
}

/// CPUID.1:EDX feature bits worth showing (Intel SDM Vol. 2A, CPUID, Table 3-11).
const FEATURES: &[(u32, &str)] = &[
    (0, "fpu"),
    (1, "vme"),
    (2, "de"),
    (3, "pse"),
    (4, "tsc"),
    (5, "msr"),
    (6, "pae"),
    (8, "cx8"),
    (9, "apic"),
    (11, "sep"),
    (12, "mtrr"),
    (13, "pge"),
    (15, "cmov"),
    (16, "pat"),
    (23, "mmx"),
    (24, "fxsr"),
    (25, "sse"),
    (26, "sse2"),
];

fn build_data() -> (Data, u32, Strings) {
    let mut d = Data::new();
    // Flat 4 GiB code (0x9A: present, ring 0, execute/read) and data (0x92: read/write)
    // segments with 4 KiB granularity and 32-bit default size (SDM Vol. 3A §3.4.5).
    let gdt = d.add(&[
        0, 0, 0, 0, 0, 0, 0, 0, //
        0xFF, 0xFF, 0, 0, 0, 0x9A, 0xCF, 0, //
        0xFF, 0xFF, 0, 0, 0, 0x92, 0xCF, 0,
    ]);
    let mut gdtr = Vec::new();
    gdtr.extend_from_slice(&23u16.to_le_bytes());
    gdtr.extend_from_slice(&gdt.to_le_bytes());
    let gdtr = d.add(&gdtr);
    let s = Strings {
        banner_rm: d
            .add_str("\r\npcvm built-in guest\r\n  real mode: COM1 ready, loading a flat GDT\r\n"),
        pm: d.add_str("  protected mode: 32-bit flat segments\r\n"),
        vendor: d.add_str("  CPU: "),
        max_leaf: d.add_str(", max CPUID leaf "),
        family: d.add_str("\r\n  family "),
        model: d.add_str(" model "),
        stepping: d.add_str(" stepping "),
        features: d.add_str("\r\n  features:"),
        memory: d.add_str("\r\n  memory (CMOS): "),
        mib: d.add_str(" MiB\r\n"),
        paging_ok: d.add_str("  paging: ok (virtual 0x400000 -> physical 0x300000)\r\n"),
        paging_bad: d.add_str("  paging: FAILED\r\n"),
        bench: d.add_str("  benchmark: "),
        bench_insns: d.add_str(" instructions in "),
        bench_ms: d.add_str(" ms = "),
        bench_mips: d.add_str(" MIPS\r\n"),
        bench_frozen: d.add_str("the PIT did not advance\r\n"),
        off: d.add_str("  done; powering off\r\n"),
        feature_table: 0,
    };
    let names: Vec<u32> = FEATURES
        .iter()
        .map(|(_, n)| d.add_str(&format!(" {n}")))
        .collect();
    d.align(4);
    let mut table = Vec::new();
    for ((bit, _), name) in FEATURES.iter().zip(names) {
        table.extend_from_slice(&bit.to_le_bytes());
        table.extend_from_slice(&name.to_le_bytes());
    }
    table.extend_from_slice(&u32::MAX.to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes());
    let feature_table = d.add(&table);
    (d, gdtr, Strings { feature_table, ..s })
}

/// Real-mode start: COM1, banner, GDT, CR0.PE, far jump into 32-bit code.
fn code16(gdtr: u32, s: &Strings) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(16)?;
    let mut puts = a.create_label();
    let mut putc = a.create_label();
    let ds_off = |lin: u32| lin - ALIAS_BASE;

    a.cli()?;
    a.cld()?;
    a.xor(ax, ax)?;
    a.mov(ss, ax)?;
    a.mov(sp, 0x7000u32)?;
    a.mov(ax, 0xF000u32)?;
    a.mov(ds, ax)?;
    // COM1: DLAB, divisor 1 (115200 baud), 8N1, FIFOs on and cleared, DTR|RTS.
    for (port, val) in [
        (COM1 + 3, 0x80u32),
        (COM1, 1),
        (COM1 + 1, 0),
        (COM1 + 3, 0x03),
        (COM1 + 2, 0xC7),
        (COM1 + 4, 0x03),
    ] {
        a.mov(dx, u32::from(port))?;
        a.mov(al, val)?;
        a.out(dx, al)?;
    }
    a.mov(si, ds_off(s.banner_rm))?;
    a.call(puts)?;
    a.lgdt(ptr(ds_off(gdtr)))?;
    a.mov(eax, cr0)?;
    a.or(eax, 1)?;
    a.mov(cr0, eax)?;
    // JMP FAR 0x08:linear(code32) with a 32-bit offset (operand-size prefix).
    let target = ALIAS_BASE + CODE32_OFFSET as u32;
    let mut far = vec![0x66, 0xEA];
    far.extend_from_slice(&target.to_le_bytes());
    far.extend_from_slice(&CODE32_SEL.to_le_bytes());
    a.db(&far)?;

    // puts: DS:SI → COM1 until NUL.
    a.set_label(&mut puts)?;
    let mut puts_done = a.create_label();
    a.mov(bl, byte_ptr(si))?;
    a.test(bl, bl)?;
    a.jz(puts_done)?;
    a.call(putc)?;
    a.inc(si)?;
    a.jmp(puts)?;
    a.set_label(&mut puts_done)?;
    a.ret()?;

    // putc: BL → COM1 once the transmitter is empty (bounded wait).
    a.set_label(&mut putc)?;
    let mut wait = a.create_label();
    let mut send = a.create_label();
    a.mov(cx, 0xFFFFu32)?;
    a.mov(dx, u32::from(COM1_LSR))?;
    a.set_label(&mut wait)?;
    a.in_(al, dx)?;
    a.test(al, LSR_THR_EMPTY)?;
    a.jnz(send)?;
    a.dec(cx)?;
    a.jnz(wait)?;
    a.set_label(&mut send)?;
    a.mov(dx, u32::from(COM1))?;
    a.mov(al, bl)?;
    a.out(dx, al)?;
    a.ret()?;

    a.assemble(u64::from(CODE16_OFFSET as u32))
}

/// 32-bit part: CPU facts, paging check, benchmark, power-off.
fn code32(s: &Strings) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(32)?;
    let mut puts = a.create_label();
    let mut putc = a.create_label();
    let mut putdec = a.create_label();
    let mut read_pit = a.create_label();

    a.mov(ax, u32::from(DATA32_SEL))?;
    for seg in [ds, es, ss, fs, gs] {
        a.mov(seg, ax)?;
    }
    a.mov(esp, STACK_TOP)?;
    a.mov(esi, s.pm)?;
    a.call(puts)?;

    // --- CPUID: vendor and maximum leaf.
    a.xor(eax, eax)?;
    a.cpuid()?;
    a.mov(dword_ptr(VENDOR_BUF), ebx)?;
    a.mov(dword_ptr(VENDOR_BUF + 4), edx)?;
    a.mov(dword_ptr(VENDOR_BUF + 8), ecx)?;
    a.mov(byte_ptr(VENDOR_BUF + 12), 0)?;
    a.mov(edi, eax)?;
    a.mov(esi, s.vendor)?;
    a.call(puts)?;
    a.mov(esi, VENDOR_BUF)?;
    a.call(puts)?;
    a.mov(esi, s.max_leaf)?;
    a.call(puts)?;
    a.mov(eax, edi)?;
    a.call(putdec)?;
    let mut feat_done = a.create_label();
    a.test(edi, edi)?;
    a.jz(feat_done)?;
    // --- CPUID leaf 1: signature and features.
    a.mov(eax, 1)?;
    a.cpuid()?;
    a.mov(edi, eax)?; // signature
    a.mov(ebp, edx)?; // features
    a.mov(esi, s.family)?;
    a.call(puts)?;
    // family = base + extended when base is 0xF.
    let mut fam_done = a.create_label();
    a.mov(eax, edi)?;
    a.shr(eax, 8)?;
    a.and(eax, 0xF)?;
    a.cmp(eax, 0xF)?;
    a.jne(fam_done)?;
    a.mov(ebx, edi)?;
    a.shr(ebx, 20)?;
    a.and(ebx, 0xFF)?;
    a.add(eax, ebx)?;
    a.set_label(&mut fam_done)?;
    a.call(putdec)?;
    a.mov(esi, s.model)?;
    a.call(puts)?;
    // model = base | extended << 4 (the extended field is zero on CPUs where it does not apply).
    a.mov(eax, edi)?;
    a.shr(eax, 4)?;
    a.and(eax, 0xF)?;
    a.mov(ebx, edi)?;
    a.shr(ebx, 12)?;
    a.and(ebx, 0xF0)?;
    a.or(eax, ebx)?;
    a.call(putdec)?;
    a.mov(esi, s.stepping)?;
    a.call(puts)?;
    a.mov(eax, edi)?;
    a.and(eax, 0xF)?;
    a.call(putdec)?;
    a.mov(esi, s.features)?;
    a.call(puts)?;
    // Walk the {bit, name} table.
    let mut feat_loop = a.create_label();
    let mut feat_next = a.create_label();
    a.mov(ebx, s.feature_table)?;
    a.set_label(&mut feat_loop)?;
    a.mov(ecx, dword_ptr(ebx))?;
    a.cmp(ecx, -1)?;
    a.je(feat_done)?;
    a.bt(ebp, ecx)?;
    a.jnc(feat_next)?;
    a.mov(esi, dword_ptr(ebx + 4))?;
    a.call(puts)?;
    a.set_label(&mut feat_next)?;
    a.add(ebx, 8)?;
    a.jmp(feat_loop)?;
    a.set_label(&mut feat_done)?;

    // --- RAM size from CMOS: 64 KiB units above 16 MiB, else KiB above 1 MiB.
    let mut read_cmos = a.create_label();
    let mut mem_small = a.create_label();
    let mut mem_print = a.create_label();
    a.mov(esi, s.memory)?;
    a.call(puts)?;
    a.mov(al, 0x35)?;
    a.call(read_cmos)?;
    a.movzx(ebx, al)?;
    a.shl(ebx, 8)?;
    a.mov(al, 0x34)?;
    a.call(read_cmos)?;
    a.mov(bl, al)?;
    a.test(ebx, ebx)?;
    a.jz(mem_small)?;
    a.mov(eax, ebx)?;
    a.shr(eax, 4)?;
    a.add(eax, 16)?;
    a.jmp(mem_print)?;
    a.set_label(&mut mem_small)?;
    a.mov(al, 0x31)?;
    a.call(read_cmos)?;
    a.movzx(ebx, al)?;
    a.shl(ebx, 8)?;
    a.mov(al, 0x30)?;
    a.call(read_cmos)?;
    a.mov(bl, al)?;
    a.mov(eax, ebx)?;
    a.shr(eax, 10)?;
    a.add(eax, 1)?;
    a.set_label(&mut mem_print)?;
    a.call(putdec)?;
    a.mov(esi, s.mib)?;
    a.call(puts)?;

    // --- Paging: identity-map 0–4 MiB, map virtual 4 MiB to PAGING_TARGET.
    a.mov(edi, PAGE_DIR)?;
    a.xor(eax, eax)?;
    a.mov(ecx, 3 * 1024)?; // directory and both tables
    a.rep().stosd()?;
    a.mov(dword_ptr(PAGE_DIR), PAGE_TABLE0 | 3)?;
    a.mov(dword_ptr(PAGE_DIR + 4), PAGE_TABLE1 | 3)?;
    let mut fill = a.create_label();
    a.mov(edi, PAGE_TABLE0)?;
    a.mov(eax, 3)?; // present | writable
    a.mov(ecx, 1024)?;
    a.set_label(&mut fill)?;
    a.stosd()?;
    a.add(eax, 0x1000)?;
    a.loop_(fill)?;
    a.mov(dword_ptr(PAGE_TABLE1), PAGING_TARGET | 3)?;
    a.mov(dword_ptr(PAGING_TARGET), 0xC0FF_EE42u32)?;
    a.mov(dword_ptr(PAGING_TARGET + 4), 0)?;
    a.mov(dword_ptr(PAGING_VIRT), 0)?;
    a.mov(eax, PAGE_DIR)?;
    a.mov(cr3, eax)?;
    a.mov(eax, cr0)?;
    a.or(eax, 0x8000_0000u32)?;
    a.mov(cr0, eax)?;
    a.mov(ebx, dword_ptr(PAGING_VIRT))?;
    a.mov(dword_ptr(PAGING_VIRT + 4), 0x5A5A_5A5Au32)?;
    a.mov(eax, cr0)?;
    a.and(eax, 0x7FFF_FFFF)?;
    a.mov(cr0, eax)?;
    let mut paging_bad = a.create_label();
    let mut paging_done = a.create_label();
    a.cmp(ebx, 0xC0FF_EE42u32)?;
    a.jne(paging_bad)?;
    a.cmp(dword_ptr(PAGING_TARGET + 4), 0x5A5A_5A5Au32)?;
    a.jne(paging_bad)?;
    a.cmp(dword_ptr(PAGING_VIRT + 4), 0)?;
    a.jne(paging_bad)?;
    a.mov(esi, s.paging_ok)?;
    a.jmp(paging_done)?;
    a.set_label(&mut paging_bad)?;
    a.mov(esi, s.paging_bad)?;
    a.set_label(&mut paging_done)?;
    a.call(puts)?;

    // --- Benchmark: PIT channel 0, mode 2, count 65536, binary; read by latch.
    a.mov(al, 0x34)?;
    a.out(0x43, al)?;
    a.xor(al, al)?;
    a.out(0x40, al)?;
    a.out(0x40, al)?;
    a.call(read_pit)?;
    a.mov(esi, eax)?; // previous count
    a.xor(edi, edi)?; // ticks so far
    a.xor(ebp, ebp)?; // outer iterations
    let mut outer = a.create_label();
    let mut inner = a.create_label();
    let mut bench_end = a.create_label();
    let mut bench_frozen = a.create_label();
    a.set_label(&mut outer)?;
    a.mov(ecx, BENCH_INNER)?;
    a.set_label(&mut inner)?;
    a.add(eax, ecx)?;
    a.xor(edx, eax)?;
    a.dec(ecx)?;
    a.jnz(inner)?;
    a.call(read_pit)?;
    a.mov(ebx, esi)?;
    a.sub(ebx, eax)?;
    a.and(ebx, 0xFFFF)?; // the counter counts down and wraps at 65536
    a.mov(esi, eax)?;
    a.add(edi, ebx)?;
    a.inc(ebp)?;
    a.cmp(edi, BENCH_TICKS)?;
    a.jae(bench_end)?;
    a.cmp(ebp, BENCH_MAX_OUTER)?;
    a.jb(outer)?;
    a.set_label(&mut bench_end)?;
    a.mov(esi, s.bench)?;
    a.call(puts)?;
    a.test(edi, edi)?;
    a.jz(bench_frozen)?;
    // instructions = outer × inner × 4
    a.mov(eax, ebp)?;
    a.mov(ecx, BENCH_INNER * BENCH_INSNS_PER_INNER)?;
    a.mul(ecx)?;
    a.mov(ebp, eax)?;
    a.call(putdec)?;
    a.mov(esi, s.bench_insns)?;
    a.call(puts)?;
    // ms = ticks × 1000 / PIT_HZ
    a.mov(eax, edi)?;
    a.mov(ecx, 1000)?;
    a.mul(ecx)?;
    a.mov(ecx, PIT_HZ)?;
    a.div(ecx)?;
    a.call(putdec)?;
    a.mov(esi, s.bench_ms)?;
    a.call(puts)?;
    // q = instructions × 119318 / ticks = MIPS × 100000 (PIT_HZ / 10).
    a.mov(eax, ebp)?;
    a.mov(ecx, PIT_HZ / 10)?;
    a.mul(ecx)?;
    a.div(edi)?;
    a.mov(ebx, eax)?;
    a.xor(edx, edx)?;
    a.mov(ecx, 100_000)?;
    a.div(ecx)?;
    a.call(putdec)?;
    a.mov(bl, b'.' as u32)?;
    a.call(putc)?;
    // two decimals: (q / 1000) % 100, zero-padded
    a.mov(eax, edx)?;
    a.xor(edx, edx)?;
    a.mov(ecx, 1000)?;
    a.div(ecx)?;
    a.xor(edx, edx)?;
    a.mov(ecx, 10)?;
    a.div(ecx)?;
    a.add(al, b'0' as u32)?;
    a.mov(bl, al)?;
    a.call(putc)?;
    a.add(dl, b'0' as u32)?;
    a.mov(bl, dl)?;
    a.call(putc)?;
    a.mov(esi, s.bench_mips)?;
    a.call(puts)?;
    let mut power_off = a.create_label();
    a.jmp(power_off)?;
    a.set_label(&mut bench_frozen)?;
    a.mov(esi, s.bench_frozen)?;
    a.call(puts)?;

    // --- Power off: "Shutdown" to the APM port, then halt for good.
    a.set_label(&mut power_off)?;
    a.mov(esi, s.off)?;
    a.call(puts)?;
    a.mov(dx, u32::from(APM_PORT))?;
    for &c in APM_SHUTDOWN {
        a.mov(al, u32::from(c))?;
        a.out(dx, al)?;
    }
    let mut halt = a.create_label();
    a.set_label(&mut halt)?;
    a.cli()?;
    a.hlt()?;
    a.jmp(halt)?;

    // puts: ESI → COM1 until NUL.
    a.set_label(&mut puts)?;
    let mut puts_loop = a.create_label();
    let mut puts_done = a.create_label();
    a.push(ebx)?;
    a.set_label(&mut puts_loop)?;
    a.mov(bl, byte_ptr(esi))?;
    a.test(bl, bl)?;
    a.jz(puts_done)?;
    a.call(putc)?;
    a.inc(esi)?;
    a.jmp(puts_loop)?;
    a.set_label(&mut puts_done)?;
    a.pop(ebx)?;
    a.ret()?;

    // putc: BL → COM1 once the transmitter is empty (bounded wait).
    a.set_label(&mut putc)?;
    let mut wait = a.create_label();
    let mut send = a.create_label();
    a.push(eax)?;
    a.push(ecx)?;
    a.push(edx)?;
    a.mov(ecx, 0x1_0000)?;
    a.mov(dx, u32::from(COM1_LSR))?;
    a.set_label(&mut wait)?;
    a.in_(al, dx)?;
    a.test(al, LSR_THR_EMPTY)?;
    a.jnz(send)?;
    a.dec(ecx)?;
    a.jnz(wait)?;
    a.set_label(&mut send)?;
    a.mov(dx, u32::from(COM1))?;
    a.mov(al, bl)?;
    a.out(dx, al)?;
    a.pop(edx)?;
    a.pop(ecx)?;
    a.pop(eax)?;
    a.ret()?;

    // putdec: EAX as unsigned decimal (keeps EDX, clobbers nothing else visible).
    a.set_label(&mut putdec)?;
    let mut div_loop = a.create_label();
    let mut out_loop = a.create_label();
    a.push(eax)?;
    a.push(ebx)?;
    a.push(ecx)?;
    a.push(edx)?;
    a.mov(ecx, 10)?;
    a.push(-1)?; // sentinel
    a.set_label(&mut div_loop)?;
    a.xor(edx, edx)?;
    a.div(ecx)?;
    a.push(edx)?;
    a.test(eax, eax)?;
    a.jnz(div_loop)?;
    a.set_label(&mut out_loop)?;
    let mut dec_done = a.create_label();
    a.pop(ebx)?;
    a.cmp(ebx, -1)?;
    a.je(dec_done)?;
    a.add(bl, b'0' as u32)?;
    a.call(putc)?;
    a.jmp(out_loop)?;
    a.set_label(&mut dec_done)?;
    a.pop(edx)?;
    a.pop(ecx)?;
    a.pop(ebx)?;
    a.pop(eax)?;
    a.ret()?;

    // read_pit: latch channel 0 and return its 16-bit count in EAX.
    a.set_label(&mut read_pit)?;
    a.xor(eax, eax)?;
    a.out(0x43, al)?;
    a.in_(al, 0x40)?;
    a.mov(ah, al)?;
    a.in_(al, 0x40)?;
    a.xchg(al, ah)?;
    a.ret()?;

    // read_cmos: AL = CMOS register AL (NMI stays enabled).
    a.set_label(&mut read_cmos)?;
    a.out(0x70, al)?;
    a.in_(al, 0x71)?;
    a.ret()?;

    a.assemble(u64::from(ALIAS_BASE + CODE32_OFFSET as u32))
}

/// Assemble the demo guest's ROM image.
pub fn rom() -> Result<Vec<u8>> {
    let (data, gdtr, strings) = build_data();
    let c16 = code16(gdtr, &strings).context("failed to assemble the demo guest (16-bit part)")?;
    let c32 = code32(&strings).context("failed to assemble the demo guest (32-bit part)")?;
    let mut rom = vec![0xF4u8; ROM_SIZE]; // HLT everywhere else
    let place = |rom: &mut Vec<u8>, at: usize, bytes: &[u8], limit: usize, what: &str| {
        anyhow::ensure!(
            at + bytes.len() <= limit,
            "demo guest {what} is {} bytes, too large for its slot",
            bytes.len()
        );
        rom[at..at + bytes.len()].copy_from_slice(bytes);
        Ok(())
    };
    place(&mut rom, CODE16_OFFSET, &c16, CODE32_OFFSET, "16-bit code")?;
    place(&mut rom, CODE32_OFFSET, &c32, DATA_OFFSET, "32-bit code")?;
    place(&mut rom, DATA_OFFSET, &data.bytes, ROM_SIZE - 16, "data")?;
    // Reset vector (0xFFFF_FFF0): JMP FAR F000:CODE16, into the alias below 1 MiB.
    let mut reset = vec![0xEA];
    reset.extend_from_slice(&(CODE16_OFFSET as u16).to_le_bytes());
    reset.extend_from_slice(&0xF000u16.to_le_bytes());
    place(&mut rom, ROM_SIZE - 16, &reset, ROM_SIZE, "reset vector")?;
    Ok(rom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rom_has_reset_vector_and_fits() {
        let rom = rom().unwrap();
        assert_eq!(rom.len(), ROM_SIZE);
        assert_eq!(
            &rom[ROM_SIZE - 16..ROM_SIZE - 11],
            &[0xEA, 0, 0, 0x00, 0xF0]
        );
        // The first instruction is CLI.
        assert_eq!(rom[0], 0xFA);
    }
}
