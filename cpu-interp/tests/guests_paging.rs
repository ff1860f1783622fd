//! Paging: 32-bit 2-level paging with 4 KiB and 4 MiB pages, PAE with 2 MiB pages and NX,
//! CR0.WP, U/S, accessed/dirty bits written back to the tables, INVLPG, and #PF error codes
//! with CR2 (SDM Vol. 3A §4.3, §4.4, §4.6–4.8, §4.10).

mod common;

use common::*;
use iced_x86::code_asm::*;

const PD: u64 = 0x10000;
const PT_LOW: u64 = 0x11000;
const PT_HIGH: u64 = 0x12000;
/// Linear window mapped by PT_HIGH.
const WIN: u32 = 0x4000_0000;

const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;

/// 32-bit tables: identity map of the first 4 MiB (user, writable); at WIN: page 0 →
/// 0x200000 supervisor RW, page 1 → 0x201000 user read-only, page 2 not present,
/// page 3 → 0x203000 user RW; at 0x8000_0000 a 4 MiB supervisor page → physical 0.
fn tables_32(m: &Machine) {
    m.write_u32(PD, (PT_LOW | P | RW | US) as u32);
    m.write_u32(
        PD + 4 * (u64::from(WIN) >> 22),
        (PT_HIGH | P | RW | US) as u32,
    );
    m.write_u32(PD + 4 * 512, (P | RW | PS) as u32);
    for i in 0..1024u64 {
        m.write_u32(PT_LOW + 4 * i, ((i << 12) | P | RW | US) as u32);
    }
    m.write_u32(PT_HIGH, (0x20_0000 | P | RW) as u32);
    m.write_u32(PT_HIGH + 4, (0x20_1000 | P | US) as u32);
    m.write_u32(PT_HIGH + 8, 0);
    m.write_u32(PT_HIGH + 12, (0x20_3000 | P | RW | US) as u32);
}

/// Enable 32-bit paging with CR4 = `cr4` and CR0 |= PG | `cr0_extra`.
fn enable_paging(a: &mut CodeAssembler, cr4_value: u32, cr0_extra: u32) -> Result<(), IcedError> {
    a.mov(eax, cr4_value)?;
    a.mov(cr4, eax)?;
    a.mov(eax, PD as u32)?;
    a.mov(cr3, eax)?;
    a.mov(eax, cr0)?;
    a.or(eax, 0x8000_0000u32 as i32)?;
    a.or(eax, cr0_extra as i32)?;
    a.mov(cr0, eax)
}

fn machine(code: &[u8]) -> Machine {
    let mut m = Machine::new();
    m.standard_tables();
    m.install_recorders();
    tables_32(&m);
    m.load(CODE, code);
    m.set_state(&pm32_state());
    m
}

#[test]
fn two_level_paging_sets_accessed_and_dirty() {
    let code = asm(32, CODE, |a| {
        enable_paging(a, 0, 0)?;
        a.mov(dword_ptr(WIN + 0x10), 0xCAFE_BABEu32)?;
        a.mov(eax, dword_ptr(WIN + 0x1000))?;
        a.mov(dword_ptr(RESULT as u32 + 16), eax)?;
        a.mov(eax, dword_ptr(WIN + 0x10))?;
        a.mov(dword_ptr(RESULT as u32 + 20), eax)?;
        a.hlt()
    });
    let mut m = machine(&code);
    m.write_u32(0x20_1000, 0x5151_5151);
    m.run_to_halt();
    assert_eq!(
        m.read_u32(0x20_0010),
        0xCAFE_BABE,
        "write reached the mapped frame"
    );
    assert_eq!(m.read_u32(RESULT + 16), 0x5151_5151);
    assert_eq!(m.read_u32(RESULT + 20), 0xCAFE_BABE);
    let pde = u64::from(m.read_u32(PD + 4 * (u64::from(WIN) >> 22)));
    assert_ne!(pde & A, 0, "PDE accessed");
    assert_eq!(pde & D, 0, "PDE of a page table has no dirty bit set");
    let pte0 = u64::from(m.read_u32(PT_HIGH));
    let pte1 = u64::from(m.read_u32(PT_HIGH + 4));
    assert_eq!(pte0 & (A | D), A | D, "written page: A and D");
    assert_eq!(pte1 & (A | D), A, "read page: A only");
    assert_eq!(u64::from(m.read_u32(PT_HIGH + 12)) & A, 0, "untouched page");
}

#[test]
fn four_mib_pages_with_pse() {
    let code = asm(32, CODE, |a| {
        enable_paging(a, 1 << 4, 0)?;
        a.mov(dword_ptr(0x8030_0004u32), 0x600D_F00Du32)?;
        a.hlt()
    });
    let mut m = machine(&code);
    m.run_to_halt();
    assert_eq!(m.read_u32(0x30_0004), 0x600D_F00D);
    assert_eq!(u64::from(m.read_u32(PD + 4 * 512)) & (A | D), A | D);
}

fn expect_pf(
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    error: u32,
    cr2_value: u32,
) -> Machine {
    let code = asm(32, CODE, body);
    let mut m = machine(&code);
    m.run_to_halt();
    let (v, e, c2, _) = m.recorded();
    assert_eq!(v, 14, "vector");
    assert_eq!(e, error, "#PF error code");
    assert_eq!(c2, cr2_value, "CR2");
    m
}

#[test]
fn page_fault_error_codes_supervisor() {
    // Not present: read, write.
    expect_pf(
        |a| {
            enable_paging(a, 0, 0)?;
            a.mov(eax, dword_ptr(WIN + 0x2010))?;
            a.hlt()
        },
        0,
        WIN + 0x2010,
    );
    expect_pf(
        |a| {
            enable_paging(a, 0, 0)?;
            a.mov(dword_ptr(WIN + 0x2FFC), eax)?;
            a.hlt()
        },
        2,
        WIN + 0x2FFC,
    );
    // CR0.WP = 1: a supervisor write to a read-only page faults (P | W).
    expect_pf(
        |a| {
            enable_paging(a, 0, 1 << 16)?;
            a.mov(dword_ptr(WIN + 0x1000), eax)?;
            a.hlt()
        },
        3,
        WIN + 0x1000,
    );
}

#[test]
fn supervisor_write_to_read_only_page_without_wp_succeeds() {
    let code = asm(32, CODE, |a| {
        enable_paging(a, 0, 0)?;
        a.mov(dword_ptr(WIN + 0x1008), 0x1357_9BDFu32)?;
        a.hlt()
    });
    let mut m = machine(&code);
    m.run_to_halt();
    assert_eq!(m.read_u32(0x20_1008), 0x1357_9BDF);
}

#[test]
fn page_fault_error_codes_user() {
    // User read of a supervisor page: P | U.
    let user = asm(32, 0x9000, |a| {
        a.mov(eax, dword_ptr(WIN + 4))?;
        a.hlt()
    });
    let mut m = expect_pf_user(&user);
    let (v, e, c2, frame) = m.recorded();
    assert_eq!((v, e, c2), (14, 5, WIN + 4));
    assert_eq!(
        m.read_u32(u64::from(frame) + 4),
        u32::from(SEL_CODE3),
        "from ring 3"
    );
    // User write to a user read-only page: P | W | U.
    let user = asm(32, 0x9000, |a| {
        a.mov(eax, dword_ptr(WIN + 0x1000))?; // readable
        a.mov(dword_ptr(WIN + 0x3000), eax)?; // user RW page
        a.mov(dword_ptr(WIN + 0x1000), eax)?;
        a.hlt()
    });
    m = expect_pf_user(&user);
    let (v, e, c2, _) = m.recorded();
    assert_eq!((v, e, c2), (14, 7, WIN + 0x1000));
    // User fetch from a supervisor page: P | U (no I/D bit without NXE).
    let user = asm(32, 0x9000, |a| {
        a.mov(eax, WIN + 0x10)?;
        a.jmp(eax)
    });
    m = expect_pf_user(&user);
    let (v, e, c2, _) = m.recorded();
    assert_eq!((v, e, c2), (14, 5, WIN + 0x10));
}

fn expect_pf_user(user: &[u8]) -> Machine {
    let code = asm(32, CODE, |a| {
        enable_paging(a, 0, 1 << 16)?;
        iret_to_ring3(a, 0x9000)
    });
    let mut m = machine(&code);
    m.load(0x9000, user);
    m.run_to_halt();
    m
}

#[test]
fn invlpg_makes_a_changed_mapping_visible() {
    let code = asm(32, CODE, |a| {
        enable_paging(a, 0, 0)?;
        a.mov(eax, dword_ptr(WIN))?;
        a.mov(dword_ptr(RESULT as u32 + 16), eax)?;
        // Remap WIN page 0 to 0x204000 through the identity-mapped page table.
        a.mov(dword_ptr(PT_HIGH as u32), (0x20_4000 | P | RW) as u32)?;
        a.invlpg(ptr(WIN))?;
        a.mov(eax, dword_ptr(WIN))?;
        a.mov(dword_ptr(RESULT as u32 + 20), eax)?;
        // A CR3 reload flushes too.
        a.mov(dword_ptr(PT_HIGH as u32), (0x20_0000 | P | RW) as u32)?;
        a.mov(eax, cr3)?;
        a.mov(cr3, eax)?;
        a.mov(eax, dword_ptr(WIN))?;
        a.mov(dword_ptr(RESULT as u32 + 24), eax)?;
        a.hlt()
    });
    let mut m = machine(&code);
    m.write_u32(0x20_0000, 0xAAAA_0000);
    m.write_u32(0x20_4000, 0xBBBB_4000);
    m.run_to_halt();
    assert_eq!(m.read_u32(RESULT + 16), 0xAAAA_0000);
    assert_eq!(m.read_u32(RESULT + 20), 0xBBBB_4000);
    assert_eq!(m.read_u32(RESULT + 24), 0xAAAA_0000);
}

/// Code reached through a linear page whose mapping changes: after the PTE is rewritten
/// and the page INVLPG'd, a call to the same linear address runs the new frame's code,
/// however many times (and however hot) the old one ran before.
/// `count` passes that call each of `funcs` (each returns a value in EAX) and add the
/// values up in EBX, with an `INT int_per_pass` at the end of each pass if given; the sum is
/// stored at `result`. Uses EAX, EBX and ECX.
fn sum_calls(
    a: &mut CodeAssembler,
    funcs: &[u32],
    count: u32,
    int_per_pass: Option<u32>,
    result: u32,
) -> Result<(), IcedError> {
    a.xor(ebx, ebx)?;
    a.mov(ecx, count)?;
    let mut top = a.create_label();
    a.set_label(&mut top)?;
    for &f in funcs {
        a.call(u64::from(f))?;
        a.add(ebx, eax)?;
    }
    if let Some(vector) = int_per_pass {
        a.int(vector)?;
    }
    a.dec(ecx)?;
    a.jnz(top)?;
    a.mov(dword_ptr(result), ebx)
}

/// A function at `at` that returns `value` in EAX.
fn returns(value: u32, at: u32) -> Vec<u8> {
    asm(32, u64::from(at), |a| {
        a.mov(eax, value)?;
        a.ret()
    })
}

#[test]
fn invlpg_of_a_code_page_runs_the_new_frame() {
    const FUNC: u32 = 0x3F_0000;
    let pte = PT_LOW + 4 * u64::from(FUNC >> 12);
    let code = asm(32, CODE, |a| {
        enable_paging(a, 0, 0)?;
        sum_calls(a, &[FUNC], 3000, None, RESULT as u32 + 16)?;
        // Point FUNC's page at the other frame.
        a.mov(dword_ptr(pte as u32), (0x3F_1000 | P | RW | US) as u32)?;
        a.invlpg(ptr(FUNC))?;
        sum_calls(a, &[FUNC], 3000, None, RESULT as u32 + 20)?;
        a.hlt()
    });
    let mut m = machine(&code);
    m.load(u64::from(FUNC), &returns(1, FUNC));
    m.load(u64::from(FUNC) + 0x1000, &returns(2, FUNC));
    m.run_to_halt();
    assert_eq!(m.read_u32(RESULT + 16), 3000, "the old frame's code");
    assert_eq!(
        m.read_u32(RESULT + 20),
        6000,
        "the new frame's code after INVLPG"
    );
}

/// A MOV CR3 to tables mapping two hot functions' pages elsewhere: the function on a
/// non-global page runs from its new frame, the one on a global page (CR4.PGE) keeps its
/// cached translation, as the TLB keeps it (SDM Vol. 3A §4.10.2.4, §4.10.4.1).
#[test]
fn mov_cr3_drops_code_lookups_of_non_global_pages_only() {
    const FUNC: u32 = 0x3F_0000;
    const GFUNC: u32 = 0x3E_0000;
    const G: u64 = 1 << 8;
    const PD2: u64 = 0x13000;
    const PT2: u64 = 0x14000;
    let code = asm(32, CODE, |a| {
        enable_paging(a, 0x80, 0)?;
        for result in [RESULT as u32 + 16, RESULT as u32 + 20] {
            sum_calls(a, &[FUNC, GFUNC], 3000, None, result)?;
            a.mov(eax, PD2 as u32)?;
            a.mov(cr3, eax)?;
        }
        a.hlt()
    });
    let mut m = machine(&code);
    m.write_u32(
        PT_LOW + 4 * u64::from(GFUNC >> 12),
        (u64::from(GFUNC) | P | RW | US | G) as u32,
    );
    // The second address space: the same, but both functions' pages on the next frame.
    m.write_u32(PD2, (PT2 | P | RW | US) as u32);
    for i in 0..1024u64 {
        m.write_u32(PT2 + 4 * i, ((i << 12) | P | RW | US) as u32);
    }
    for f in [FUNC, GFUNC] {
        m.write_u32(
            PT2 + 4 * u64::from(f >> 12),
            ((u64::from(f) + 0x1000) | P | RW | US) as u32,
        );
    }
    m.load(u64::from(FUNC), &returns(1, FUNC));
    m.load(u64::from(FUNC) + 0x1000, &returns(2, FUNC));
    m.load(u64::from(GFUNC), &returns(10, GFUNC));
    m.load(u64::from(GFUNC) + 0x1000, &returns(20, GFUNC));
    m.run_to_halt();
    assert_eq!(m.read_u32(RESULT + 16), 3000 * 11, "both old frames");
    assert_eq!(
        m.read_u32(RESULT + 20),
        3000 * 12,
        "the non-global page's new frame, the global page's old one"
    );
}

/// User code calls a function in a loop with a system call (INT 0x1E) per pass, so the
/// code lookups of user and kernel mode are remembered across each switch; a system call
/// (INT 0x1D) then moves the function's page and INVLPGs it, and the next passes must run
/// the new frame although user mode's remembered lookups were made before. (Vectors below
/// 32: the test IDT has 32 gates.)
#[test]
fn invlpg_in_the_kernel_voids_the_code_lookups_user_mode_left() {
    const UF: u32 = 0x3F_0000;
    let pte = PT_LOW + 4 * u64::from(UF >> 12);
    let user = asm(32, 0x9000, |a| {
        for (syscall, result) in [(0x1D, RESULT as u32 + 16), (0x1F, RESULT as u32 + 20)] {
            sum_calls(a, &[UF], 2000, Some(0x1E), result)?;
            a.int(syscall)?;
        }
        Ok(())
    });
    let code = asm(32, CODE, |a| {
        enable_paging(a, 0, 0)?;
        iret_to_ring3(a, 0x9000)
    });
    let mut m = machine(&code);
    m.load(0x9000, &user);
    m.load(u64::from(UF), &returns(1, UF));
    m.load(u64::from(UF) + 0x1000, &returns(2, UF));
    type Body<'a> = &'a dyn Fn(&mut CodeAssembler) -> Result<(), IcedError>;
    let handlers: [(u8, Body); 3] = [
        (0x1D, &|a| {
            a.mov(dword_ptr(pte as u32), (0x3F_1000 | P | RW | US) as u32)?;
            a.invlpg(ptr(UF))?;
            a.iretd()
        }),
        (0x1E, &|a| a.iretd()),
        (0x1F, &|a| a.hlt()),
    ];
    for (vector, body) in handlers {
        let at = HANDLERS + 0x1000 + u64::from(vector) * 0x40;
        m.load(at, &asm(32, at, body));
        m.set_idt(
            vector,
            gate_desc(SEL_CODE0, at as u32, ACC_INT_GATE32 | 0x60, 0),
        );
    }
    m.run_to_halt();
    assert_eq!(m.read_u32(RESULT + 16), 2000, "the old frame's code");
    assert_eq!(m.read_u32(RESULT + 20), 4000, "the new frame's code");
}

/// Data read in a hot loop through a linear page in another 1 GiB region than the code:
/// after the PTE is rewritten and the page INVLPG'd, the loop reads the new frame.
#[test]
fn invlpg_of_a_data_page_far_from_code_reads_the_new_frame() {
    let code = asm(32, CODE, |a| {
        enable_paging(a, 0, 0)?;
        for (result, frame) in [(16u32, 0x20_0000u64), (20, 0x20_4000)] {
            if frame != 0x20_0000 {
                a.mov(dword_ptr(PT_HIGH as u32), (frame | P | RW) as u32)?;
                a.invlpg(ptr(WIN))?;
            }
            a.xor(ebx, ebx)?;
            a.mov(ecx, 3000)?;
            let mut again = a.create_label();
            a.set_label(&mut again)?;
            a.add(ebx, dword_ptr(WIN))?;
            a.dec(ecx)?;
            a.jnz(again)?;
            a.mov(dword_ptr(RESULT as u32 + result), ebx)?;
        }
        a.hlt()
    });
    let mut m = machine(&code);
    m.write_u32(0x20_0000, 3);
    m.write_u32(0x20_4000, 5);
    m.run_to_halt();
    assert_eq!(m.read_u32(RESULT + 16), 9000);
    assert_eq!(m.read_u32(RESULT + 20), 15000);
}

const PDPT: u64 = 0x13000;
const PAE_PD: u64 = 0x14000;
const PAE_PT: u64 = 0x15000;
const NX: u64 = 1 << 63;

/// PAE tables: 0–2 MiB identity (2 MiB page, user RW); 0x200000: PT with page 0 → 0x300000
/// RW + NX, page 1 with a reserved bit (bit 40), page 2 → 0x302000 RW executable.
fn pae_machine(body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Machine {
    let code = asm(32, CODE, |a| {
        a.mov(ecx, 0xC000_0080u32)?; // EFER
        a.rdmsr()?;
        a.or(eax, 1 << 11)?; // NXE
        a.wrmsr()?;
        a.mov(eax, (1u32 << 5) | (1 << 7))?; // PAE | PGE
        a.mov(cr4, eax)?;
        a.mov(eax, PDPT as u32)?;
        a.mov(cr3, eax)?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8001_0000u32 as i32)?;
        a.mov(cr0, eax)?;
        body(a)
    });
    let m = machine(&code);
    m.write_u64(PDPT, PAE_PD | P);
    for i in 1..4 {
        m.write_u64(PDPT + 8 * i, 0);
    }
    m.write_u64(PAE_PD, P | RW | US | PS);
    m.write_u64(PAE_PD + 8, PAE_PT | P | RW | US);
    m.write_u64(PAE_PT, 0x30_0000 | P | RW | NX);
    m.write_u64(PAE_PT + 8, 0x30_1000 | P | RW | (1 << 40));
    m.write_u64(PAE_PT + 16, 0x30_2000 | P | RW);
    m
}

#[test]
fn pae_paging_with_nx_and_dirty_bits() {
    let mut m = pae_machine(|a| {
        a.mov(dword_ptr(0x20_0008), 0x1122_3344u32)?;
        a.mov(eax, dword_ptr(0x20_2000))?;
        a.mov(dword_ptr(RESULT as u32 + 16), eax)?;
        // Execute from the executable page (it holds RET), then from the NX page.
        a.mov(eax, 0x20_2000u32)?;
        a.call(eax)?;
        a.mov(dword_ptr(RESULT as u32 + 20), 1u32)?;
        a.mov(eax, 0x20_0000u32)?;
        a.jmp(eax)
    });
    m.write(0x30_2000, &[0xC3]);
    m.run_to_halt();
    assert_eq!(m.read_u32(0x30_0008), 0x1122_3344);
    assert_eq!(m.read_u32(RESULT + 16), 0xC3);
    assert_eq!(m.read_u32(RESULT + 20), 1, "executable page ran");
    let (v, e, c2, _) = m.recorded();
    assert_eq!((v, e, c2), (14, 0x11, 0x20_0000), "NX fetch: P | I/D");
    assert_eq!(m.read_u64(PAE_PT) & (A | D), A | D);
    assert_eq!(m.read_u64(PAE_PT + 16) & (A | D), A);
    assert_eq!(
        m.read_u64(PAE_PD) & (A | D),
        A | D,
        "2 MiB page holding the code"
    );
    let s = m.state();
    assert_ne!(s.efer & (1 << 11), 0);
}

#[test]
fn pae_reserved_bit_fault() {
    let mut m = pae_machine(|a| {
        a.mov(eax, dword_ptr(0x20_1000))?;
        a.hlt()
    });
    m.run_to_halt();
    let (v, e, c2, _) = m.recorded();
    assert_eq!((v, e, c2), (14, 0x9, 0x20_1000), "P | RSVD");
}

#[test]
fn pae_pdpte_with_reserved_bits_is_gp_on_cr3_load() {
    let mut m = pae_machine(|a| a.hlt());
    m.write_u64(PDPT + 8, P | (1 << 1)); // reserved bit 1 in a present PDPTE
    m.run_to_halt();
    let (v, e, _, _) = m.recorded();
    assert_eq!((v, e), (13, 0));
}

#[test]
fn page_fault_while_delivering_page_fault_is_double_fault() {
    // The stack is in a not-present page: the #PF's own frame push faults again, which is a
    // #DF (SDM Vol. 3A Table 6-5). #DF goes through a task gate to a task with its own stack,
    // which finds error code 0 pushed and CR2 of the second fault.
    let (code, labels) = asm_labels(32, CODE, |a| {
        let mut l = a.create_label();
        enable_paging(a, 0, 0)?;
        a.mov(esp, WIN + 0x3000)?;
        a.set_label(&mut l)?;
        a.mov(eax, dword_ptr(WIN + 0x2000))?;
        a.hlt()?;
        Ok(vec![l])
    });
    let mut m = machine(&code);
    let handler = asm(32, 0x9800, |a| {
        a.pop(eax)?;
        a.mov(dword_ptr(RESULT as u32 + 4), eax)?;
        a.mov(dword_ptr(RESULT as u32), 8u32)?;
        a.mov(eax, cr2)?;
        a.mov(dword_ptr(RESULT as u32 + 8), eax)?;
        a.hlt()
    });
    m.load(0x9800, &handler);
    write_task(&m, SEL_TSS2, TSS2, 0x9800, 0x6800, PD as u32);
    m.set_idt(8, gate_desc(SEL_TSS2, 0, ACC_TASK_GATE, 0));
    let s = m.run_to_halt();
    let (v, e, c2, _) = m.recorded();
    assert_eq!((v, e), (8, 0));
    assert_eq!(c2, WIN + 0x2FFC, "CR2 of the faulting push");
    assert_eq!(s.tr.selector, SEL_TSS2);
    assert_eq!(
        u64::from(m.read_u32(TSS + 0x20)),
        labels[0],
        "old task EIP saved"
    );
    assert_eq!(m.read_u32(TSS + 0x38), WIN + 0x3000, "old task ESP saved");
    assert_eq!(m.read_u16(TSS2), SEL_TSS, "back-link");
}

#[test]
fn debugger_translation_has_no_side_effects() {
    let code = asm(32, CODE, |a| {
        enable_paging(a, 1 << 4, 0)?;
        a.hlt()
    });
    let mut m = machine(&code);
    m.run_to_halt();
    let pte3 = m.read_u32(PT_HIGH + 12);
    use pcvm_core::CpuBackend;
    let t = |m: &mut Machine, lin: u32| {
        m.cpu
            .translate(&m.board, u64::from(lin))
            .expect("translate")
    };
    assert_eq!(t(&mut m, WIN + 0x3123), Some(0x20_3123));
    assert_eq!(t(&mut m, WIN + 0x2000), None, "not present");
    assert_eq!(t(&mut m, 0x8012_3456), Some(0x12_3456), "4 MiB page");
    assert_eq!(
        m.read_u32(PT_HIGH + 12),
        pte3,
        "no accessed bit from the debugger"
    );
}
