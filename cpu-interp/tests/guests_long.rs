//! 64-bit mode guests (started directly in IA-32e mode through the CPU state): the 64-bit
//! datapath, REX registers, default operand sizes, RIP-relative addressing, stack and string
//! instructions at 64 bits, and 4-level paging (SDM Vol. 1 §3.2.1, §3.4.1.1; Vol. 2A §2.2.1;
//! Vol. 3A §4.5).

mod common;

use common::*;
use iced_x86::code_asm::*;
use pcvm_core::cpu_state::{flags as fl, gpr};
use pcvm_core::CpuBackend;

const CF: u64 = fl::CF;
const ZF: u64 = fl::ZF;
const SF: u64 = fl::SF;
const OF: u64 = fl::OF;
/// Data area the tests use (identity mapped, RW).
const DATA: u64 = 0x1_0000;

#[test]
fn gprs_rex_registers_and_zero_extension() {
    let mut m = long64_machine(|a| {
        a.mov(r8, 0x1122_3344_5566_7788u64)?;
        a.mov(r9, r8)?;
        a.add(r9d, 1)?; // 32-bit write: upper half zeroed
        a.mov(r10, r8)?;
        a.mov(r10b, 0xAA)?;
        a.mov(r11, r8)?;
        a.mov(r11w, 0xBEEF)?;
        a.mov(rsi, r8)?;
        a.mov(sil, 0x5A)?; // REX byte register, not DH
        a.mov(rdi, r8)?;
        a.xchg(edi, edi)?; // zero-extends even as a no-op exchange
        a.mov(r12, -2i64)?; // imm32 sign-extended to 64 bits
        a.mov(r13, r8)?;
        a.mov(r13d, 5u32)?;
        a.mov(r14, r8)?;
        a.movzx(r14, r10b)?;
        a.mov(r15, r8)?;
        a.movsx(r15, r11w)?;
        a.hlt()?;
        Ok(())
    });
    let s = m.run_to_halt();
    let g = s.gpr;
    assert_eq!(g[9], 0x5566_7789);
    assert_eq!(g[10], 0x1122_3344_5566_77AA);
    assert_eq!(g[11], 0x1122_3344_5566_BEEF);
    assert_eq!(g[gpr::RSI], 0x1122_3344_5566_775A);
    assert_eq!(g[gpr::RDI], 0x5566_7788);
    assert_eq!(g[12], u64::MAX - 1);
    assert_eq!(g[13], 5);
    assert_eq!(g[14], 0xAA);
    assert_eq!(g[15], 0xFFFF_FFFF_FFFF_BEEF);
}

#[test]
fn alu_flags_at_64_bits() {
    let mut m = long64_machine(|a| {
        a.mov(rax, 0x8000_0000_0000_0000u64)?;
        a.mov(rbx, -1i64)?;
        a.add(rax, rbx)?; // 0x7FFF..FF: CF and OF
        a.pushfq()?;
        a.pop(rcx)?;
        a.mov(rdx, 0x1_0000_0000u64)?;
        a.sub(rdx, 1)?; // 0xFFFF_FFFF: no flags but PF
        a.pushfq()?;
        a.pop(r8)?;
        a.mov(r9, 0x1_0000_0000u64)?;
        a.test(r9, r9)?; // ZF clear: only bit 32 set
        a.pushfq()?;
        a.pop(r10)?;
        a.xor(r11, r11)?;
        a.dec(r11)?; // -1: SF
        a.pushfq()?;
        a.pop(r12)?;
        a.mov(r13, 0x7FFF_FFFF_FFFF_FFFFu64)?;
        a.inc(r13)?; // OF, SF
        a.pushfq()?;
        a.pop(r14)?;
        a.mov(r15, 3u64)?;
        a.neg(r15)?;
        a.adc(r15, 0)?; // CF from NEG: -3 + 1
        a.hlt()?;
        Ok(())
    });
    let s = m.run_to_halt();
    let g = s.gpr;
    let arith = CF | ZF | SF | OF;
    assert_eq!(g[gpr::RAX], 0x7FFF_FFFF_FFFF_FFFF);
    assert_eq!(g[gpr::RCX] & arith, CF | OF);
    assert_eq!(g[gpr::RDX], 0xFFFF_FFFF);
    assert_eq!(g[8] & arith, 0);
    assert_eq!(g[10] & ZF, 0);
    assert_eq!(g[12] & arith, SF);
    assert_eq!(g[13], 1 << 63);
    assert_eq!(g[14] & (OF | SF), OF | SF);
    assert_eq!(g[15], (-2i64) as u64);
}

#[test]
fn multiply_divide_and_sign_extension() {
    let mut m = long64_machine(|a| {
        a.mov(rax, -1i64)?;
        a.mov(rbx, -1i64)?;
        a.mul(rbx)?; // (2^64-1)^2
        a.mov(r8, rax)?;
        a.mov(r9, rdx)?;
        a.mov(rdx, 5u64)?;
        a.mov(rax, 7u64)?;
        a.mov(rcx, 0x1_0000_0000u64)?;
        a.div(rcx)?;
        a.mov(r10, rax)?;
        a.mov(r11, rdx)?;
        a.mov(rax, -100i64)?;
        a.cqo()?;
        a.mov(rcx, 7u64)?;
        a.idiv(rcx)?;
        a.mov(r12, rax)?;
        a.mov(r13, rdx)?;
        a.mov(rax, 0x1234_5678_9ABC_DEF0u64)?;
        a.imul_3(r14, rax, 0x10)?;
        a.mov(eax, 0x8000_0000u32)?;
        a.cdqe()?;
        a.mov(r15, rax)?;
        a.mov(dword_ptr(DATA as u32), 0xFFFF_FFFEu32)?;
        a.movsxd(rsi, dword_ptr(DATA as u32))?;
        a.hlt()?;
        Ok(())
    });
    let s = m.run_to_halt();
    let g = s.gpr;
    assert_eq!((g[8], g[9]), (1, 0xFFFF_FFFF_FFFF_FFFE));
    assert_eq!((g[10], g[11]), (5 << 32, 7));
    assert_eq!((g[12] as i64, g[13] as i64), (-14, -2));
    assert_eq!(g[14], 0x2345_6789_ABCD_EF00);
    assert_eq!(g[15], 0xFFFF_FFFF_8000_0000);
    assert_eq!(g[gpr::RSI], (-2i64) as u64);
    assert_ne!(s.rflags & (CF | OF), 0, "IMUL overflowed");
}

#[test]
fn shifts_bits_and_byte_order() {
    let mut m = long64_machine(|a| {
        a.mov(rax, 0x8000_0000_0000_0001u64)?;
        a.mov(r8, rax)?;
        a.shl(r8, 63)?; // count masked to 6 bits: 1 << 63
        a.mov(r9, rax)?;
        a.rol(r9, 4)?;
        a.mov(r10, rax)?;
        a.sar(r10, 62)?;
        a.mov(r11, 0xFF00u64)?;
        a.shld(r11, rax, 8)?;
        a.bsr(r12, rax)?;
        a.mov(r13, 0x10_0000_0000u64)?;
        a.tzcnt(r13, r13)?;
        a.lzcnt(r14, rax)?;
        a.popcnt(r15, rax)?;
        a.mov(rbx, rax)?;
        a.bswap(rbx)?;
        a.bts(rbx, 40)?;
        a.mov(qword_ptr(DATA as u32), rax)?;
        a.movbe(rcx, qword_ptr(DATA as u32))?;
        a.mov(rdx, 0x100u64)?;
        a.bt(qword_ptr(DATA as u32), rdx)?; // bit 256 → qword at DATA+32
        a.setb(dl)?;
        a.hlt()?;
        Ok(())
    });
    m.write_u64(DATA + 32, 1);
    let s = m.run_to_halt();
    let g = s.gpr;
    assert_eq!(g[8], 1 << 63);
    assert_eq!(g[9], 0x18);
    assert_eq!(g[10], 0xFFFF_FFFF_FFFF_FFFE);
    assert_eq!(g[11], 0xFF0080);
    assert_eq!(g[12], 63);
    assert_eq!(g[13], 36);
    assert_eq!(g[14], 0);
    assert_eq!(g[15], 2);
    assert_eq!(g[gpr::RBX], 0x0100_0100_0000_0080);
    assert_eq!(g[gpr::RCX], 0x0100_0000_0000_0080);
    assert_eq!(g[gpr::RDX] & 0xFF, 1);
}

#[test]
fn stack_calls_and_loops_default_to_64_bits() {
    let (code, _) = asm_labels(64, CODE, |a| {
        let mut func = a.create_label();
        let mut lp = a.create_label();
        let mut done = a.create_label();
        let mut skip = a.create_label();
        a.mov(r8, rsp)?;
        a.push(-5i32)?; // pushes 8 bytes, sign-extended
        a.pop(r9)?;
        a.push(rsp)?;
        a.pop(r10)?; // the value before the push
        a.call(func)?;
        a.mov(r12, rsp)?;
        a.mov(rcx, 0x1_0000_0100u64)?;
        a.xor(r13, r13)?;
        a.set_label(&mut lp)?;
        a.inc(r13)?;
        a.loop_(lp)?; // RCX is 64 bits: the test clears bit 32 after a few iterations
        a.set_label(&mut done)?;
        a.xor(ecx, ecx)?;
        a.jrcxz(skip)?;
        a.mov(r13, -1i64)?;
        a.set_label(&mut skip)?;
        a.pushfq()?;
        a.pop(r14)?;
        a.enter(16, 0)?;
        a.mov(r15, rsp)?;
        a.leave()?;
        a.hlt()?;
        a.set_label(&mut func)?;
        a.mov(r11, qword_ptr(rsp))?; // return address
        a.ret()?;
        Ok(vec![])
    });
    let mut m = long64_machine(|a| a.nop());
    m.load(CODE, &code);
    // Stop inside the LOOP by budget, then clear RCX's upper half so it ends.
    let exit = m
        .cpu
        .run(&mut m.board, pcvm_core::RunLimit::Instructions(20))
        .expect("run");
    assert_eq!(exit, pcvm_core::VmExit::BudgetExhausted);
    let mut s = m.state();
    assert_eq!(s.gpr[gpr::RCX] >> 32, 1, "LOOP decrements all of RCX");
    s.gpr[gpr::RCX] &= 0xFFFF_FFFF;
    m.set_state(&s);
    let s = m.run_to_halt();
    let g = s.gpr;
    let top = u64::from(STACK0_TOP);
    assert_eq!(g[8], top);
    assert_eq!(g[9], (-5i64) as u64);
    assert_eq!(g[10], top);
    assert!(g[11] > CODE && g[11] < CODE + 0x100, "return address");
    assert_eq!(g[12], top);
    assert_eq!(g[13], 0x100, "LOOP count, then JRCXZ taken");
    assert_eq!(g[14] & 2, 2);
    assert_eq!(g[15], top - 8 - 16, "ENTER pushed RBP as 8 bytes");
    assert_eq!(g[gpr::RSP], top);
}

#[test]
fn rip_relative_operands_follow_the_executing_rip() {
    // The same physical code runs at its identity address and again through a second
    // mapping whose data page differs: RIP-relative accesses must use the RIP it runs at,
    // not the address the cached block was decoded at.
    let build = |pad: u64| {
        asm_labels(64, CODE, |a| {
            let mut data = a.create_label();
            let mut again = a.create_label();
            a.mov(rax, qword_ptr(data))?;
            a.add(qword_ptr(data), 1)?;
            a.lea(rbx, qword_ptr(data))?;
            a.cmp(r15, 0)?;
            a.jne(again)?;
            a.mov(r8, rax)?;
            a.mov(r9, rbx)?;
            a.mov(r15, 1u64)?;
            a.mov(rcx, HIGH_ALIAS + CODE)?;
            a.jmp(rcx)?;
            a.set_label(&mut again)?;
            a.hlt()?;
            a.zero_bytes()?;
            // The data sits on the next page, which the alias maps elsewhere.
            for _ in 0..pad {
                a.db(&[0])?;
            }
            a.set_label(&mut data)?;
            a.dq(&[0x1111])?;
            Ok(vec![data])
        })
    };
    let (_, first) = build(0);
    let (code, labels) = build(CODE + 0x1000 - first[0]);
    let data = labels[0];
    assert_eq!(
        data & !0xFFF,
        CODE + 0x1000,
        "data on the page after the code"
    );
    let mut m = long64_machine(|a| a.nop());
    m.load(CODE, &code);
    // High alias: its own PDPT/PD/PT, identical except the data page → physical 0x5_0000.
    let (pdpt2, pd2, pt2) = (0x3_4000u64, 0x3_5000u64, 0x3_6000u64);
    m.write_u64(PML4 + 256 * 8, pdpt2 | 3);
    m.write_u64(pdpt2, pd2 | 3);
    m.write_u64(pd2, pt2 | 3);
    for i in 0..512u64 {
        m.write_u64(pt2 + i * 8, (i << 12) | 3);
    }
    m.write_u64(pt2 + (data >> 12) * 8, 0x5_0000 | 3);
    m.write_u64(0x5_0000 + (data & 0xFFF), 0x2222);
    let s = m.run_to_halt();
    assert_eq!(s.gpr[8], 0x1111);
    assert_eq!(s.gpr[9], data);
    assert_eq!(
        s.gpr[gpr::RAX],
        0x2222,
        "read through the alias's data page"
    );
    assert_eq!(s.gpr[gpr::RBX], HIGH_ALIAS + data);
    assert_eq!(m.read_u64(data), 0x1112);
    assert_eq!(m.read_u64(0x5_0000 + (data & 0xFFF)), 0x2223);
    assert_eq!(s.rip, HIGH_ALIAS + labels_after_hlt(&code));
}

/// Offset just past the first HLT (0xF4) of `code`: where RIP stops.
fn labels_after_hlt(code: &[u8]) -> u64 {
    let mut dec = iced_x86::Decoder::with_ip(64, code, CODE, iced_x86::DecoderOptions::NONE);
    for insn in &mut dec {
        if insn.mnemonic() == iced_x86::Mnemonic::Hlt {
            return insn.next_ip();
        }
    }
    panic!("no HLT");
}

#[test]
fn string_instructions_use_rsi_rdi_rcx() {
    let src = DATA;
    let dst = DATA + 0x1000;
    let mut m = long64_machine(|a| {
        a.mov(rsi, src)?;
        a.mov(rdi, dst)?;
        a.mov(rcx, 5u64)?;
        a.rep().movsq()?;
        a.mov(r8, rsi)?;
        a.mov(r9, rdi)?;
        a.mov(r10, rcx)?;
        a.mov(rax, 0x0123_4567_89AB_CDEFu64)?;
        a.mov(rcx, 3u64)?;
        a.rep().stosq()?;
        a.mov(r11, rdi)?;
        a.mov(rsi, dst)?;
        a.lodsq()?;
        a.mov(r12, rax)?;
        // REPE CMPSQ over the copied qwords stops at the first difference (index 2).
        a.mov(qword_ptr(dst as u32 + 16), 0)?;
        a.mov(rsi, src)?;
        a.mov(rdi, dst)?;
        a.mov(rcx, 5u64)?;
        a.repe().cmpsq()?;
        a.mov(r13, rcx)?;
        // SCASQ with a 32-bit address size (67): EDI, and the upper half of RDI is dropped.
        a.mov(rdi, 0xFFFF_FFFF_0000_0000u64 | (dst + 0x28))?;
        a.mov(rax, 0x0123_4567_89AB_CDEFu64)?;
        a.db(&[0x67, 0x48, 0xAF])?; // scas rax, qword ptr es:[edi]
        a.mov(r14, rdi)?;
        a.hlt()?;
        Ok(())
    });
    for i in 0..5u64 {
        m.write_u64(src + 8 * i, 0x1000 + i);
    }
    m.write_u64(dst + 0x28, 0x0123_4567_89AB_CDEF);
    let s = m.run_to_halt();
    let g = s.gpr;
    assert_eq!((g[8], g[9], g[10]), (src + 40, dst + 40, 0));
    assert_eq!(g[11], dst + 40 + 24);
    assert_eq!(g[12], 0x1000);
    assert_eq!(g[13], 2, "mismatch at the third qword: RCX = 5 - 3");
    assert_eq!(g[14], dst + 0x30, "EDI advanced and zero-extended");
    assert_ne!(s.rflags & ZF, 0, "SCASQ found the equal qword");
    for i in 0..3u64 {
        assert_eq!(m.read_u64(dst + 40 + 8 * i), 0x0123_4567_89AB_CDEF);
    }
}

#[test]
fn cmpxchg_xadd_and_cmpxchg16b_at_64_bits() {
    let mut m = long64_machine(|a| {
        a.mov(rbx, 0x1111_2222_3333_4444u64)?;
        a.mov(rcx, 0x5555_6666_7777_8888u64)?;
        a.mov(rax, 0xAAAA_0000_0000_0001u64)?;
        a.mov(rdx, 0xBBBB_0000_0000_0002u64)?;
        a.cmpxchg16b(xmmword_ptr(DATA as u32))?; // equal: stores RCX:RBX
        a.setz(r8b)?;
        a.cmpxchg16b(xmmword_ptr(DATA as u32))?; // now different: loads RDX:RAX
        a.setz(r9b)?;
        a.mov(r10, rax)?;
        a.mov(r11, rdx)?;
        a.mov(rax, 7u64)?;
        a.mov(r12, 9u64)?;
        a.cmpxchg(qword_ptr(DATA as u32 + 0x20), r12)?;
        a.mov(r13, 0x1_0000_0000u64)?;
        a.xadd(qword_ptr(DATA as u32 + 0x28), r13)?;
        a.hlt()?;
        Ok(())
    });
    m.write_u64(DATA, 0xAAAA_0000_0000_0001);
    m.write_u64(DATA + 8, 0xBBBB_0000_0000_0002);
    m.write_u64(DATA + 0x20, 7);
    m.write_u64(DATA + 0x28, 0xFFFF_FFFF);
    let s = m.run_to_halt();
    let g = s.gpr;
    assert_eq!((g[8] & 0xFF, g[9] & 0xFF), (1, 0));
    assert_eq!(
        (g[10], g[11]),
        (0x1111_2222_3333_4444, 0x5555_6666_7777_8888)
    );
    assert_eq!(m.read_u64(DATA), 0x1111_2222_3333_4444);
    assert_eq!(m.read_u64(DATA + 8), 0x5555_6666_7777_8888);
    assert_eq!(m.read_u64(DATA + 0x20), 9);
    assert_eq!(m.read_u64(DATA + 0x28), 0x1_FFFF_FFFF);
    assert_eq!(g[13], 0xFFFF_FFFF);
}

#[test]
fn four_level_paging_sets_accessed_and_dirty_bits_and_maps_large_pages() {
    let mut m = long64_machine(|a| {
        a.mov(rax, qword_ptr(DATA as u32))?; // read through a 4 KiB page
        a.mov(qword_ptr(0x20_1000u32), rax)?; // write through the 2 MiB page
        a.mov(rbx, HIGH_ALIAS + 0x20_1000)?;
        a.mov(rcx, qword_ptr(rbx))?; // the same bytes through the high alias
        a.hlt()?;
        Ok(())
    });
    m.write_u64(DATA, 0xDEAD_BEEF_0BAD_F00D);
    let s = m.run_to_halt();
    assert_eq!(s.gpr[gpr::RCX], 0xDEAD_BEEF_0BAD_F00D);
    const A: u64 = 1 << 5;
    const D: u64 = 1 << 6;
    assert_ne!(m.read_u64(PML4) & A, 0, "PML4E accessed");
    assert_ne!(m.read_u64(PDPT) & A, 0, "PDPTE accessed");
    assert_ne!(m.read_u64(PD) & A, 0, "PDE accessed");
    let pte = m.read_u64(PT + (DATA >> 12) * 8);
    assert_eq!(pte & (A | D), A, "read: accessed, not dirty");
    assert_eq!(
        m.read_u64(PD + 8) & (A | D),
        A | D,
        "2 MiB page written: dirty"
    );
    // The debugger's translation agrees, for both halves of the address space and a
    // 1 GiB page.
    m.write_u64(PDPT + 8, 0x4000_0000 | 0x83);
    let t = |m: &mut Machine, lin: u64| m.cpu.translate(&m.board, lin).expect("translate");
    assert_eq!(t(&mut m, HIGH_ALIAS + 0x20_1234), Some(0x20_1234));
    assert_eq!(t(&mut m, 0x4567_8ABC), Some(0x4567_8ABC));
    assert_eq!(t(&mut m, 0x8000_0000), None);
}
