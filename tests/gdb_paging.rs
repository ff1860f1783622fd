//! gdb 13 against a paged 32-bit guest with an IDT: single-step across a software interrupt
//! and a fault (each step stops at the handler's first instruction), memory at
//! guest-virtual addresses through the page tables (an unmapped page is an error), writes,
//! `monitor info mem`/`info tlb`, a read watchpoint, a software breakpoint the guest never
//! sees in its code, an access watchpoint and a hardware breakpoint.

mod gdb_common;

use gdb_common::{flat32_state, marked_values, run_gdb, Vm};
use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;
use pcvm::gdb::RunEnd;
use pcvm_core::cpu_state::cr;
use pcvm_core::DescriptorTable;

const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const CODE: u64 = 0x1_0000;
const COUNTER: u64 = 0x9000;
const PD: u64 = 0x2_0000;
const PT: u64 = 0x2_1000;
/// Linear 0x4000_0000 maps physical 0x10_0000 through a 4 KiB page.
const MAPPED: u64 = 0x4000_0000;
const MAPPED_PHYS: u64 = 0x10_0000;
const UNMAPPED: u64 = 0x5000_0000;
const MARKER: u32 = 0xCAFE_BABE;
/// Where the guest stores the first byte of its `inc` instruction as it reads it.
const SEEN: u64 = 0x9100;

struct Guest {
    code: Vec<u8>,
    /// The instruction after the read of MAPPED.
    after_read: u64,
    start: u64,
    int30: u64,
    after_int: u64,
    ud2: u64,
    h30: u64,
    hud: u64,
    inc: u64,
    jmp: u64,
}

/// The guest, assembled twice: the first pass finds the `inc` address the code reads.
fn guest() -> Guest {
    let first = guest_reading(0);
    guest_reading(first.inc as u32)
}

fn guest_reading(inc_addr: u32) -> Guest {
    let mut a = CodeAssembler::new(32).expect("asm");
    let mut l: Vec<CodeLabel> = (0..9).map(|_| a.create_label()).collect();
    // start: nop; int 0x30; nop; ud2
    a.set_label(&mut l[0]).unwrap();
    a.nop().unwrap();
    a.set_label(&mut l[1]).unwrap();
    a.int(0x30).unwrap();
    a.set_label(&mut l[2]).unwrap();
    a.nop().unwrap();
    a.set_label(&mut l[3]).unwrap();
    a.ud2().unwrap();
    // INT 0x30 handler: iretd. #UD handler: on to the loop.
    a.set_label(&mut l[4]).unwrap();
    a.iretd().unwrap();
    a.set_label(&mut l[5]).unwrap();
    a.jmp(l[6]).unwrap();
    // top: mov eax,[MAPPED]; mov bl,[inc]; mov [SEEN],bl; inc dword [COUNTER]; jmp top
    a.set_label(&mut l[6]).unwrap();
    a.mov(eax, dword_ptr(MAPPED as u32)).unwrap();
    let mut after_read = a.create_label();
    a.set_label(&mut after_read).unwrap();
    a.mov(bl, byte_ptr(inc_addr)).unwrap();
    a.mov(byte_ptr(SEEN as u32), bl).unwrap();
    a.set_label(&mut l[7]).unwrap();
    a.inc(dword_ptr(COUNTER as u32)).unwrap();
    a.set_label(&mut l[8]).unwrap();
    a.jmp(l[6]).unwrap();
    let r = a
        .assemble_options(CODE, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .expect("assemble");
    let ip = |i: usize| r.label_ip(&l[i]).expect("label");
    let after_read = r.label_ip(&after_read).expect("label");
    Guest {
        after_read,
        code: r.inner.code_buffer.clone(),
        start: ip(0),
        int30: ip(1),
        after_int: ip(2),
        ud2: ip(3),
        h30: ip(4),
        hud: ip(5),
        inc: ip(7),
        jmp: ip(8),
    }
}

fn gate(offset: u64) -> u64 {
    let o = offset & 0xFFFF_FFFF;
    (o & 0xFFFF) | (0x08 << 16) | (0x8E << 40) | ((o >> 16) << 48)
}

#[test]
fn paged_guest_steps_across_interrupts_and_faults_and_watches() {
    let Some(gdb) = gdb_common::gdb() else { return };
    let g = guest();
    let (mut state, gdt) = flat32_state(GDT, g.start as u32, 0x7000);
    state.cr0 |= cr::CR0_PG;
    state.cr3 = PD;
    state.cr4 |= cr::CR4_PSE;
    state.idtr = DescriptorTable {
        base: IDT,
        limit: 0x31 * 8 - 1,
    };
    let code = g.code.clone();
    let (h30, hud) = (g.h30, g.hud);
    let vm = Vm::start(
        move |m| {
            let w = |a: u64, b: &[u8]| m.write_phys(a, b).expect("write");
            w(GDT, &gdt);
            w(CODE, &code);
            w(IDT + 6 * 8, &gate(hud).to_le_bytes());
            w(IDT + 0x30 * 8, &gate(h30).to_le_bytes());
            // PDE 0: 4 MiB identity page; PDE 0x100 → page table with PTE 0 → MAPPED_PHYS.
            w(PD, &0x83u32.to_le_bytes());
            w(PD + 0x100 * 4, &(PT as u32 | 3).to_le_bytes());
            w(PT, &(MAPPED_PHYS as u32 | 3).to_le_bytes());
            w(MAPPED_PHYS, &MARKER.to_le_bytes());
        },
        state,
        true,
    );
    let target = format!("127.0.0.1:{}", vm.port);
    let mut cmds: Vec<String> = Vec::new();
    for _ in 0..5 {
        cmds.extend(["stepi".into(), "echo M-STEP\\n".into(), "p/x $pc".into()]);
    }
    let s = |x: &str| x.to_string();
    cmds.extend([
        s("echo M-MAPPED\\n"),
        format!("p/x *(unsigned int*){MAPPED:#x}"),
        format!("x/x {UNMAPPED:#x}"),
        format!("set {{unsigned int}}{:#x} = 0x55", MAPPED + 4),
        format!("monitor phys {:#x} 4", MAPPED_PHYS + 4),
        s("monitor info tlb"),
        s("monitor info mem"),
        format!("rwatch *(int*){MAPPED:#x}"),
        s("continue"),
        s("echo M-RWATCH\\n"),
        s("p/x $pc"),
        s("delete"),
        // A software breakpoint on the instruction the guest reads: the guest sees the real
        // opcode, never an INT3.
        format!("break *{:#x}", g.inc),
        s("continue"),
        s("echo M-SEEN\\n"),
        format!("p/x *(unsigned char*){SEEN:#x}"),
        s("delete"),
        format!("hbreak *{:#x}", g.jmp),
        s("continue"),
        s("echo M-HBREAK\\n"),
        s("p/x $pc"),
        s("delete"),
        format!("awatch *(int*){COUNTER:#x}"),
        s("continue"),
        s("echo M-AWATCH\\n"),
        s("p/x $pc"),
        s("delete"),
        s("detach"),
    ]);
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let out = run_gdb(&gdb, None, &target, &refs, None).all();

    assert_eq!(
        marked_values(&out, "M-STEP"),
        [g.int30, g.h30, g.after_int, g.ud2, g.hud],
        "steps stop at each handler's first instruction and return from it"
    );
    assert_eq!(marked_values(&out, "M-MAPPED"), [u64::from(MARKER)]);
    assert!(
        out.contains("Cannot access memory at address 0x50000000"),
        "an unmapped page is an error: {out}"
    );
    assert!(
        out.contains("0000000000100000:             55 00 00 00"),
        "{out}"
    );
    assert!(out.contains("paging: 32-bit with PSE"), "{out}");
    assert!(
        out.contains("0000000040000000: 0000000000100000    4K"),
        "info tlb lists the 4K mapping: {out}"
    );
    assert!(
        out.contains("0000000000000000: 0000000000000000    4M"),
        "and the 4M page: {out}"
    );
    assert!(
        out.contains("0000000000000000-0000000000400000 0000000000400000 -rwx"),
        "info mem merges ranges: {out}"
    );
    assert!(out.contains("Hardware read watchpoint 1"), "{out}");
    assert_eq!(
        marked_values(&out, "M-RWATCH"),
        [g.after_read],
        "read watchpoint after the reading instruction"
    );
    assert_eq!(
        marked_values(&out, "M-SEEN"),
        [u64::from(g.code[(g.inc - CODE) as usize])],
        "the guest reads its own code, not a breakpoint"
    );
    assert!(out.contains("Hardware assisted breakpoint 3"), "{out}");
    assert_eq!(marked_values(&out, "M-HBREAK"), [g.jmp]);
    assert!(
        out.contains("Hardware access (read/write) watchpoint 4"),
        "{out}"
    );
    assert_eq!(marked_values(&out, "M-AWATCH"), [g.jmp]);
    assert_eq!(vm.finish(), RunEnd::Stopped);
}
