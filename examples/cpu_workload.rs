//! Write a CPU-bound multiboot v1 guest for scripts/bench-jit: one phase of an ALU loop, a
//! memory copy loop or a call/ret loop (or none, to time the VMM's start and exit), assembled
//! here with `code_asm`. It prints `CPU-WORKLOAD <phase> <checksum>` to COM1 and exits through
//! isa-debug-exit at port 0xF4 with 0x31 (status 99 in pcvm and QEMU alike), so the same image
//! times pcvm and `qemu-system-x86_64 -kernel`, and the checksums must agree.
//!
//!     cargo run --release --example cpu_workload -- OUT PHASE [PERCENT]
//!
//! PHASE is `none`, `alu`, `copy` or `call`; PERCENT scales the iteration counts (default 100).

use anyhow::{bail, Context, Result};
use iced_x86::code_asm::*;

/// Where the a.out-kludge header asks the image to be loaded (and where it runs).
const LOAD_ADDR: u32 = 0x10_0000;
/// Multiboot header size with the five address fields (Multiboot 0.6.96 §3.1.1).
const HEADER_LEN: u32 = 32;
/// The checksum variable, the stack top and the two copy buffers (the guest needs 16 MiB).
const CHECKSUM: u32 = 0x8_0000;
const STACK_TOP: u32 = 0x9_0000;
const SRC: u32 = 0x40_0000;
const DST: u32 = 0x80_0000;
/// Copy buffer size in dwords (1 MiB).
const COPY_DWORDS: u32 = 1 << 18;
/// The isa-debug-exit value of a finished run.
const EXIT_OK: u32 = 0x31;
const COM1: u16 = 0x3F8;

/// Iterations at 100 %: about 700, 150 and 300 million guest instructions.
const ALU_ITERS: u64 = 100_000_000;
const COPY_PASSES: u64 = 100;
const CALL_ITERS: u64 = 50_000_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    None,
    Alu,
    Copy,
    Call,
}

/// `n` scaled by `percent`, at least 1.
fn scaled(n: u64, percent: u64) -> u32 {
    u32::try_from((n * percent / 100).max(1)).unwrap_or(u32::MAX)
}

/// The guest: header, message text, then the code.
fn image(phase: Phase, name: &str, percent: u64) -> Result<Vec<u8>, IcedError> {
    let text = format!("CPU-WORKLOAD {name} ");
    let mut strings = text.as_bytes().to_vec();
    strings.push(0);
    let text_addr = LOAD_ADDR + HEADER_LEN;
    let entry = text_addr + strings.len().next_multiple_of(4) as u32;
    strings.resize(strings.len().next_multiple_of(4), 0);
    let magic = 0x1BAD_B002u32;
    let flags = 1u32 << 16;
    let header = [
        magic,
        flags,
        magic.wrapping_add(flags).wrapping_neg(),
        LOAD_ADDR, // header_addr
        LOAD_ADDR, // load_addr
        0,         // load_end_addr: the whole file
        0,         // bss_end_addr: no bss
        entry,     // entry_addr
    ];

    let mut a = CodeAssembler::new(32)?;
    let words: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
    a.db(&words)?;
    a.db(&strings)?;
    // Multiboot enters with flat 32-bit segments and no stack.
    a.mov(esp, STACK_TOP)?;
    a.mov(dword_ptr(CHECKSUM), 0u32)?;
    match phase {
        Phase::None => {}
        Phase::Alu => {
            // Adds, XOR, LEA, IMUL and SUB through a dependency chain.
            let mut top = a.create_label();
            a.mov(ecx, scaled(ALU_ITERS, percent))?;
            a.mov(eax, 1u32)?;
            a.mov(ebx, 0x1234_5678u32)?;
            a.mov(edx, 0x09AB_CDEFu32)?;
            a.set_label(&mut top)?;
            a.add(eax, ebx)?;
            a.xor(ebx, edx)?;
            a.lea(edx, dword_ptr(edx + eax * 2 + 7))?;
            a.imul_3(eax, eax, 0x0100_0193)?;
            a.sub(ebx, ecx)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.add(eax, ebx)?;
            a.add(eax, edx)?;
            a.mov(dword_ptr(CHECKSUM), eax)?;
        }
        Phase::Copy => {
            // Fill the source with a pattern, then copy it back and forth, adding the pass
            // number to every dword.
            let mut fill = a.create_label();
            let mut pass = a.create_label();
            let mut copy = a.create_label();
            a.mov(edi, SRC)?;
            a.mov(ecx, COPY_DWORDS)?;
            a.set_label(&mut fill)?;
            a.imul_3(eax, ecx, 0x9E37_79B9u32 as i32)?;
            a.mov(dword_ptr(edi), eax)?;
            a.add(edi, 4)?;
            a.dec(ecx)?;
            a.jnz(fill)?;
            a.mov(edx, scaled(COPY_PASSES, percent))?;
            a.mov(ebx, SRC)?;
            a.mov(ebp, DST)?;
            a.set_label(&mut pass)?;
            a.mov(esi, ebx)?;
            a.mov(edi, ebp)?;
            a.mov(ecx, COPY_DWORDS)?;
            a.set_label(&mut copy)?;
            a.mov(eax, dword_ptr(esi))?;
            a.add(eax, edx)?;
            a.mov(dword_ptr(edi), eax)?;
            a.add(esi, 4)?;
            a.add(edi, 4)?;
            a.dec(ecx)?;
            a.jnz(copy)?;
            a.xchg(ebx, ebp)?;
            a.dec(edx)?;
            a.jnz(pass)?;
            // The last destination's first, middle and last dwords.
            a.mov(eax, dword_ptr(ebx))?;
            a.add(eax, dword_ptr(ebx + COPY_DWORDS * 2))?;
            a.add(eax, dword_ptr(ebx + (COPY_DWORDS * 4 - 4)))?;
            a.mov(dword_ptr(CHECKSUM), eax)?;
        }
        Phase::Call => {
            // A near call to a two-instruction function and its return, per iteration.
            let mut top = a.create_label();
            let mut func = a.create_label();
            let mut done = a.create_label();
            a.mov(ecx, scaled(CALL_ITERS, percent))?;
            a.xor(eax, eax)?;
            a.set_label(&mut top)?;
            a.call(func)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.mov(dword_ptr(CHECKSUM), eax)?;
            a.jmp(done)?;
            a.set_label(&mut func)?;
            a.add(eax, ecx)?;
            a.rol(eax, 3)?;
            a.ret()?;
            a.set_label(&mut done)?;
        }
    }
    // The message, the checksum in hex and a newline to COM1.
    let mut print = a.create_label();
    let mut printed = a.create_label();
    let mut digit = a.create_label();
    let mut decimal = a.create_label();
    a.mov(dx, u32::from(COM1))?;
    a.mov(esi, text_addr)?;
    a.set_label(&mut print)?;
    a.mov(al, byte_ptr(esi))?;
    a.test(al, al)?;
    a.jz(printed)?;
    a.out(dx, al)?;
    a.inc(esi)?;
    a.jmp(print)?;
    a.set_label(&mut printed)?;
    a.mov(ebx, dword_ptr(CHECKSUM))?;
    a.mov(ecx, 8u32)?;
    a.set_label(&mut digit)?;
    a.rol(ebx, 4)?;
    a.mov(eax, ebx)?;
    a.and(eax, 0xFu32)?;
    a.add(eax, u32::from(b'0'))?;
    a.cmp(eax, u32::from(b'9'))?;
    a.jbe(decimal)?;
    a.add(eax, u32::from(b'a' - b'9' - 1))?;
    a.set_label(&mut decimal)?;
    a.out(dx, al)?;
    a.dec(ecx)?;
    a.jnz(digit)?;
    a.mov(al, b'\n' as u32)?;
    a.out(dx, al)?;
    // Done: isa-debug-exit, and halt should the device be missing.
    let mut halt = a.create_label();
    a.mov(eax, EXIT_OK)?;
    a.out(0xF4, eax)?;
    a.set_label(&mut halt)?;
    a.cli()?;
    a.hlt()?;
    a.jmp(halt)?;
    a.assemble(u64::from(LOAD_ADDR))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: cpu_workload OUT none|alu|copy|call [PERCENT]";
    let (out, name, percent) = match args.as_slice() {
        [o, p] => (o, p, 100),
        [o, p, s] => (
            o,
            p,
            s.parse().with_context(|| format!("{usage}: bad PERCENT"))?,
        ),
        _ => bail!("{usage}"),
    };
    let phase = match name.as_str() {
        "none" => Phase::None,
        "alu" => Phase::Alu,
        "copy" => Phase::Copy,
        "call" => Phase::Call,
        _ => bail!("{usage}"),
    };
    let bytes = image(phase, name, percent).map_err(|e| anyhow::anyhow!("assemble: {e}"))?;
    std::fs::write(out, bytes).with_context(|| format!("failed to write {out}"))?;
    Ok(())
}
