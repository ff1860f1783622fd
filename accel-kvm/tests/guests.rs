//! `code_asm` guests under KVM, in both irqchip modes: port I/O (single and string) and MMIO
//! to a test device on the board's buses, ROM and the PAM-controlled BIOS area, interrupts
//! from the 8259 pair (a device IRQ and the 8254 timer waking HLT), triple fault, kicks.

mod common;

use std::time::Duration;

use common::*;
use iced_x86::code_asm::*;
use pcvm_core::memory::pam;
use pcvm_core::{CpuBackend, RunLimit, VmExit};

const CODE: u64 = 0x8000;
/// Interrupt handlers of the PIC test: IRQ0 at HANDLERS, IRQ5 at HANDLERS + 0x20.
const HANDLERS: u64 = 0x9000;

#[test]
fn real_mode_port_io_single_and_string() {
    require_kvm!();
    for mode in IRQCHIP_MODES {
        let mut tb = TestBoard::new();
        let mut cpu = tb.kvm(mode);
        tb.write(0x510, &[1, 2, 3, 4]);
        let code = asm(16, CODE, |a| {
            a.mov(dx, TEST_PORT as u32)?;
            a.mov(al, 0x5A)?;
            a.out(dx, al)?;
            a.mov(ax, 0x1234)?;
            a.out(dx, ax)?;
            a.mov(eax, 0xCAFE_BABEu32)?;
            a.out(dx, eax)?;
            a.in_(al, dx)?;
            a.mov(byte_ptr(0x500), al)?;
            a.in_(ax, dx)?;
            a.mov(word_ptr(0x502), ax)?;
            a.mov(si, 0x510)?;
            a.mov(cx, 4)?;
            a.cld()?;
            a.rep().outsb()?;
            a.mov(di, 0x520)?;
            a.mov(cx, 3)?;
            a.rep().insb()?;
            a.out(TEST_EXIT_PORT as u32, al)?;
            a.hlt()
        });
        tb.write(CODE, &code);
        cpu.set_state(&real_state(CODE)).expect("set_state");
        let exit = run_until(&mut cpu, &mut tb.board, Duration::from_secs(20));
        assert_eq!(exit, VmExit::PowerOff, "{mode:?}");
        let w = tb.writes_to(u64::from(TEST_PORT));
        assert_eq!(
            w,
            vec![
                vec![0x5A],
                vec![0x34, 0x12],
                vec![0xBE, 0xBA, 0xFE, 0xCA],
                vec![1],
                vec![2],
                vec![3],
                vec![4]
            ],
            "{mode:?}"
        );
        assert_eq!(tb.read(0x500, 4), vec![0x40, 0, 0x40, 0x41], "{mode:?}");
        assert_eq!(tb.read(0x520, 3), vec![0x40; 3], "{mode:?}");
        let s = cpu.state().expect("state");
        assert_eq!(s.rip, CODE + code.len() as u64 - 1, "stopped after the OUT");
    }
}

#[test]
fn protected_mode_mmio_rom_and_pam() {
    require_kvm!();
    for mode in IRQCHIP_MODES {
        let mut tb = TestBoard::new();
        let mut cpu = tb.kvm(mode);
        pm32_tables(&tb);
        let code = asm(32, CODE, |a| {
            a.mov(dword_ptr(TEST_MMIO as u32 + 0x10), 0x1122_3344u32)?;
            a.mov(eax, dword_ptr(TEST_MMIO as u32 + 0x10))?;
            a.mov(dword_ptr(0x500), eax)?;
            a.mov(word_ptr(TEST_MMIO as u32 + 0x20), 0xBEEFu32)?;
            a.movzx(ebx, word_ptr(TEST_MMIO as u32 + 0x20))?;
            a.mov(dword_ptr(0x504), ebx)?;
            // The ROM at the top of 4 GiB: reads the image, writes are dropped.
            a.mov(eax, dword_ptr(0xFFFF_0000u32))?;
            a.mov(dword_ptr(0x508), eax)?;
            a.mov(dword_ptr(0xFFFF_0000u32), 0x9999_9999u32)?;
            a.mov(eax, dword_ptr(0xFFFF_0000u32))?;
            a.mov(dword_ptr(0x50C), eax)?;
            // 0xF0000 aliases the ROM while PAM routes reads to the PCI side.
            a.mov(eax, dword_ptr(0xF_0000))?;
            a.mov(dword_ptr(0x510), eax)?;
            // The VGA window is MMIO with nothing behind it here: all ones.
            a.mov(eax, dword_ptr(0xA_0000))?;
            a.mov(dword_ptr(0x514), eax)?;
            a.out(TEST_EXIT_PORT as u32, al)?;
            // Second leg, after the host made 0xF0000 read/write RAM.
            a.mov(eax, dword_ptr(0xF_0000))?;
            a.mov(dword_ptr(0x518), eax)?;
            a.mov(dword_ptr(0xF_0004), 0xAABB_CCDDu32)?;
            a.out(TEST_EXIT_PORT as u32, al)?;
            // Third leg, read-only shadow: the write is dropped.
            a.mov(dword_ptr(0xF_0004), 0x0102_0304u32)?;
            a.mov(eax, dword_ptr(0xF_0004))?;
            a.mov(dword_ptr(0x51C), eax)?;
            a.out(TEST_EXIT_PORT as u32, al)?;
            a.hlt()
        });
        tb.write(CODE, &code);
        cpu.set_state(&pm32_state(CODE)).expect("set_state");
        let timeout = Duration::from_secs(20);
        assert_eq!(
            run_until(&mut cpu, &mut tb.board, timeout),
            VmExit::PowerOff
        );
        assert_eq!(tb.read_u32(0x500), 0x1122_3344, "{mode:?} MMIO dword");
        assert_eq!(tb.read_u32(0x504), 0xBEEF, "{mode:?} MMIO word");
        assert_eq!(tb.read_u32(0x508), 0x0BAD_C0DE, "{mode:?} ROM read");
        assert_eq!(
            tb.read_u32(0x50C),
            0x0BAD_C0DE,
            "{mode:?} ROM write dropped"
        );
        assert_eq!(tb.read_u32(0x510), 0x0BAD_C0DE, "{mode:?} BIOS alias");
        assert_eq!(tb.read_u32(0x514), 0xFFFF_FFFF, "{mode:?} empty VGA window");

        tb.board.requests.take();
        tb.board.memory.set_pam(0, pam::READ_WRITE);
        tb.write(0xF_0000, &0x1234_5678u32.to_le_bytes());
        assert_eq!(
            run_until(&mut cpu, &mut tb.board, timeout),
            VmExit::PowerOff
        );
        assert_eq!(tb.read_u32(0x518), 0x1234_5678, "{mode:?} shadow RAM read");
        assert_eq!(
            tb.read_u32(0xF_0004),
            0xAABB_CCDD,
            "{mode:?} shadow RAM write"
        );

        tb.board.requests.take();
        tb.board.memory.set_pam(0, pam::READ_ONLY);
        assert_eq!(
            run_until(&mut cpu, &mut tb.board, timeout),
            VmExit::PowerOff
        );
        assert_eq!(tb.read_u32(0x51C), 0xAABB_CCDD, "{mode:?} read-only shadow");
        let mmio_writes = tb.writes_to(TEST_MMIO + 0x10);
        assert_eq!(mmio_writes, vec![vec![0x44, 0x33, 0x22, 0x11]]);
    }
}

/// Program the 8259 pair (vectors 0x08/0x70) with IRQ0 and IRQ5 unmasked, take one IRQ5 from
/// the test device, then count three 8254 ticks, sleeping in HLT between them.
#[test]
fn pic_interrupts_wake_hlt() {
    require_kvm!();
    for mode in IRQCHIP_MODES {
        let mut tb = TestBoard::new();
        let mut cpu = tb.kvm(mode);
        let mut a = CodeAssembler::new(16).expect("asm");
        let mut spin = a.create_label();
        let mut tick = a.create_label();
        let body = (|| -> Result<(), IcedError> {
            a.cli()?;
            a.xor(ax, ax)?;
            a.mov(ds, ax)?;
            a.mov(ss, ax)?;
            a.mov(sp, 0x7000)?;
            a.mov(word_ptr(0x600), 0)?;
            a.mov(word_ptr(0x602), 0)?;
            a.mov(word_ptr(0x22), 0)?;
            a.mov(word_ptr(0x36), 0)?;
            a.mov(word_ptr(0x20), HANDLERS as u32)?;
            a.mov(word_ptr(0x34), HANDLERS as u32 + 0x20)?;
            for (port, value) in [
                (0x20, 0x11),
                (0x21, 0x08),
                (0x21, 0x04),
                (0x21, 0x01),
                (0xA0, 0x11),
                (0xA1, 0x70),
                (0xA1, 0x02),
                (0xA1, 0x01),
                (0xA1, 0xFF),
                (0x21, 0xDE),
            ] {
                a.mov(al, value)?;
                a.out(port, al)?;
            }
            a.out(TEST_IRQ_PORT as u32, al)?;
            a.sti()?;
            a.set_label(&mut spin)?;
            a.cmp(word_ptr(0x602), 0)?;
            a.je(spin)?;
            a.cli()?;
            // 8254 channel 0, mode 2, 1193 counts (1 ms).
            a.mov(al, 0x34)?;
            a.out(0x43, al)?;
            a.mov(ax, 1193)?;
            a.out(0x40, al)?;
            a.mov(al, ah)?;
            a.out(0x40, al)?;
            a.set_label(&mut tick)?;
            a.sti()?;
            a.hlt()?;
            a.cli()?;
            a.cmp(word_ptr(0x600), 3)?;
            a.jb(tick)?;
            a.mov(ax, word_ptr(0x600))?;
            a.out(TEST_PORT as u32, ax)?;
            a.mov(ax, word_ptr(0x602))?;
            a.out(TEST_PORT as u32, ax)?;
            a.out(TEST_EXIT_PORT as u32, al)?;
            a.hlt()
        })();
        body.expect("assemble");
        let code = a.assemble(CODE).expect("encode");
        tb.write(CODE, &code);
        for (n, counter) in [0x600u32, 0x602].into_iter().enumerate() {
            let at = HANDLERS + 0x20 * n as u64;
            let handler = asm(16, at, |a| {
                a.push(ax)?;
                a.inc(word_ptr(counter))?;
                a.mov(al, 0x20)?;
                a.out(0x20, al)?;
                a.pop(ax)?;
                a.iret()
            });
            tb.write(at, &handler);
        }
        cpu.set_state(&real_state(CODE)).expect("set_state");
        let exit = run_until(&mut cpu, &mut tb.board, Duration::from_secs(30));
        assert_eq!(exit, VmExit::PowerOff, "{mode:?}");
        let w = tb.writes_to(u64::from(TEST_PORT));
        assert_eq!(w.len(), 2, "{mode:?}: {w:?}");
        let ticks = u16::from_le_bytes([w[0][0], w[0][1]]);
        let irq5 = u16::from_le_bytes([w[1][0], w[1][1]]);
        assert_eq!(irq5, 1, "{mode:?}: one IRQ5");
        assert!(ticks >= 3, "{mode:?}: {ticks} ticks");
    }
}

#[test]
fn triple_fault_is_shutdown() {
    require_kvm!();
    for mode in IRQCHIP_MODES {
        let mut tb = TestBoard::new();
        let mut cpu = tb.kvm(mode);
        pm32_tables(&tb);
        let code = asm(32, CODE, |a| a.ud2());
        tb.write(CODE, &code);
        // IDT limit 0: #UD cannot be delivered, nor can #DF.
        cpu.set_state(&pm32_state(CODE)).expect("set_state");
        let exit = cpu.run(&mut tb.board, RunLimit::Unbounded).expect("run");
        assert_eq!(exit, VmExit::Shutdown, "{mode:?}");
    }
}

#[test]
fn kicker_stops_a_spinning_guest() {
    require_kvm!();
    for mode in IRQCHIP_MODES {
        let mut tb = TestBoard::new();
        let mut cpu = tb.kvm(mode);
        let mut a = CodeAssembler::new(16).expect("asm");
        let mut top = a.create_label();
        a.set_label(&mut top).expect("label");
        a.jmp(top).expect("jmp");
        let code = a.assemble(CODE).expect("encode");
        tb.write(CODE, &code);
        cpu.set_state(&real_state(CODE)).expect("set_state");
        let kicker = cpu.kicker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            kicker.kick();
        });
        let exit = cpu.run(&mut tb.board, RunLimit::Unbounded).expect("run");
        t.join().expect("kicker thread");
        assert_eq!(exit, VmExit::Kicked, "{mode:?}");
        // A time slice ends the next run.
        let exit = cpu
            .run(&mut tb.board, RunLimit::Instructions(2_000_000))
            .expect("run");
        assert_eq!(exit, VmExit::BudgetExhausted, "{mode:?}");
        assert_eq!(cpu.state().expect("state").rip, CODE);
    }
}
