//! CPU state hand-off between the interpreter and KVM in the middle of a guest: the guest must
//! finish exactly as it does on the interpreter alone (registers, flags, memory, device log).
//! And a halted guest whose local-APIC timer is running moves to KVM's userspace irqchip,
//! where the same board LAPIC keeps waking it.

mod common;

use std::time::Duration;

use common::*;
use iced_x86::code_asm::*;
use pcvm_core::{Breakpoint, CpuBackend, CpuState, DebugConfig, RunLimit, StopReason, VmExit};
use pcvm_cpu_interp::Interpreter;

const CODE: u64 = 0x8000;

/// A 32-bit guest: 40 rounds of an LCG mixed into EAX, each stored to memory and sent to the
/// test port, then the flags of a CMP stored and power-off. Returns the code and the address
/// of the OUT inside the loop.
fn guest() -> (Vec<u8>, u64) {
    let mut a = CodeAssembler::new(32).expect("asm");
    let mut top = a.create_label();
    let mut out = a.create_label();
    (|| -> Result<(), IcedError> {
        a.mov(ecx, 40u32)?;
        a.xor(eax, eax)?;
        a.mov(ebx, 0x12345u32)?;
        a.set_label(&mut top)?;
        a.imul_3(ebx, ebx, 1_103_515_245)?;
        a.add(ebx, 12345)?;
        a.xor(eax, ebx)?;
        a.rol(eax, 3)?;
        a.mov(dword_ptr(ecx * 4 + 0x600), eax)?;
        a.set_label(&mut out)?;
        a.out(TEST_PORT as u32, al)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.cmp(eax, ebx)?;
        a.pushfd()?;
        a.pop(edx)?;
        a.mov(dword_ptr(0x500), eax)?;
        a.mov(dword_ptr(0x504), edx)?;
        a.out(TEST_EXIT_PORT as u32, al)?;
        a.hlt()
    })()
    .expect("assemble");
    let r = a
        .assemble_options(
            CODE,
            iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .expect("encode");
    let out_ip = r.label_ip(&out).expect("label");
    (r.inner.code_buffer, out_ip)
}

fn prepared_board() -> TestBoard {
    let tb = TestBoard::new();
    pm32_tables(&tb);
    tb.write(CODE, &guest().0);
    tb
}

/// What a finished run leaves: architectural registers, memory, the device's port log.
fn outcome(s: &CpuState, tb: &TestBoard) -> (Vec<u64>, u64, u64, Vec<u8>, Vec<Vec<u8>>) {
    (
        s.gpr[..8].to_vec(),
        s.rip,
        s.rflags,
        tb.read(0x500, 0x200),
        tb.writes_to(u64::from(TEST_PORT)),
    )
}

fn interp_only() -> (Vec<u64>, u64, u64, Vec<u8>, Vec<Vec<u8>>) {
    let mut tb = prepared_board();
    let mut cpu = Interpreter::new();
    cpu.set_state(&pm32_state(CODE)).expect("set_state");
    let exit = run_until(&mut cpu, &mut tb.board, Duration::from_secs(10));
    assert_eq!(exit, VmExit::PowerOff);
    outcome(&cpu.state().expect("state"), &tb)
}

#[test]
fn interpreter_to_kvm_mid_run() {
    require_kvm!();
    let expected = interp_only();
    for mode in IRQCHIP_MODES {
        let mut tb = prepared_board();
        let mut interp = Interpreter::new();
        interp.set_state(&pm32_state(CODE)).expect("set_state");
        let exit = interp
            .run(&mut tb.board, RunLimit::Instructions(101))
            .expect("run");
        assert_eq!(exit, VmExit::BudgetExhausted);
        let mid = interp.state().expect("state");
        assert!(mid.gpr[1] < 40 && mid.gpr[1] > 0, "stopped inside the loop");
        let mut kvm = tb.kvm(mode);
        kvm.set_state(&mid).expect("set_state");
        let exit = run_until(&mut kvm, &mut tb.board, Duration::from_secs(20));
        assert_eq!(exit, VmExit::PowerOff, "{mode:?}");
        assert_eq!(
            outcome(&kvm.state().expect("state"), &tb),
            expected,
            "{mode:?}"
        );
    }
}

#[test]
fn kvm_to_interpreter_mid_run() {
    require_kvm!();
    let expected = interp_only();
    let out_ip = guest().1;
    for mode in IRQCHIP_MODES {
        let mut tb = prepared_board();
        let mut kvm = tb.kvm(mode);
        kvm.set_state(&pm32_state(CODE)).expect("set_state");
        kvm.set_debug(&DebugConfig {
            breakpoints: vec![Breakpoint { addr: out_ip }],
            ..Default::default()
        })
        .expect("set_debug");
        // Stop at the OUT of the 15th round.
        for _ in 0..15 {
            let exit = kvm.run(&mut tb.board, RunLimit::Unbounded).expect("run");
            assert_eq!(
                exit,
                VmExit::Debug(StopReason::Breakpoint(out_ip)),
                "{mode:?}"
            );
        }
        let mid = kvm.state().expect("state");
        assert_eq!(mid.rip, out_ip);
        assert_eq!(mid.gpr[1], 40 - 14, "{mode:?}: round 15");
        assert_eq!(tb.writes_to(u64::from(TEST_PORT)).len(), 14);
        let mut interp = Interpreter::new();
        interp.set_state(&mid).expect("set_state");
        let exit = run_until(&mut interp, &mut tb.board, Duration::from_secs(10));
        assert_eq!(exit, VmExit::PowerOff, "{mode:?}");
        assert_eq!(
            outcome(&interp.state().expect("state"), &tb),
            expected,
            "{mode:?}"
        );
    }
}

/// A 32-bit guest with the board's LAPIC timer periodic at 1 ms, counting ticks in HLT (its
/// handler drops the frame and jumps back: kvm-pvm cannot emulate a 32-bit IRETD), powering
/// off at 6. Returns the main code and the handler.
fn lapic_tick_guest() -> (Vec<u8>, Vec<u8>) {
    const LAPIC: u32 = 0xFEE0_0000;
    let mut a = CodeAssembler::new(32).expect("asm");
    let mut wait = a.create_label();
    (|| -> Result<(), IcedError> {
        a.mov(dword_ptr(0x500), 0u32)?;
        a.mov(dword_ptr(LAPIC + 0xF0), 0x1FFu32)?;
        a.mov(dword_ptr(LAPIC + 0x350), 1u32 << 16)?;
        a.mov(dword_ptr(LAPIC + 0x3E0), 0xBu32)?;
        a.mov(dword_ptr(LAPIC + 0x320), 0x40u32 | 1 << 17)?;
        a.mov(dword_ptr(LAPIC + 0x380), 1_000_000u32)?;
        a.set_label(&mut wait)?;
        a.sti()?;
        a.hlt()?;
        a.jmp(wait)
    })()
    .expect("assemble");
    let r = a
        .assemble_options(
            CODE,
            iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .expect("encode");
    let wait_ip = r.label_ip(&wait).expect("label");
    let handler = asm(32, HANDLER, |a| {
        let mut more = a.create_label();
        a.inc(dword_ptr(0x500))?;
        a.mov(dword_ptr(LAPIC + 0xB0), 0u32)?;
        a.add(esp, 12)?;
        a.cmp(dword_ptr(0x500), 6)?;
        a.jb(more)?;
        a.out(TEST_EXIT_PORT as u32, al)?;
        a.hlt()?;
        a.set_label(&mut more)?;
        a.jmp(wait_ip)
    });
    (r.inner.code_buffer, handler)
}

const HANDLER: u64 = 0x9000;
const IDT: u64 = 0x2000;

/// The LAPIC-timer guest starts on the interpreter, is handed to KVM (userspace irqchip, the
/// same board and so the same running LAPIC timer) while halted after its third tick, and
/// KVM takes the remaining ticks to power-off.
#[test]
fn lapic_timer_guest_moves_from_the_interpreter_to_kvm_while_halted() {
    require_kvm!();
    let mut tb = TestBoard::with_lapic();
    pm32_tables(&tb);
    let (code, handler) = lapic_tick_guest();
    tb.write(CODE, &code);
    tb.write(HANDLER, &handler);
    let gate = (HANDLER & 0xFFFF) | (0x08 << 16) | (0x8E00 << 32) | ((HANDLER >> 16) << 48);
    tb.write(IDT + 8 * 0x40, &gate.to_le_bytes());
    let mut s = pm32_state(CODE);
    s.idtr = pcvm_core::DescriptorTable {
        base: IDT,
        limit: 8 * 0x41 - 1,
    };
    let mut interp = Interpreter::new();
    interp.set_state(&s).expect("set_state");
    let start = std::time::Instant::now();
    let mid = loop {
        let exit = interp
            .run(&mut tb.board, RunLimit::Instructions(1000))
            .expect("run");
        assert!(
            matches!(exit, VmExit::Halted | VmExit::BudgetExhausted),
            "{exit:?}"
        );
        let state = interp.state().expect("state");
        if tb.read_u32(0x500) >= 3 && state.halted {
            break state;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no ticks");
        if exit == VmExit::Halted {
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    assert_eq!(tb.read_u32(0x500), 3, "handed over after the third tick");
    let mut kvm = tb.kvm(pcvm_accel_kvm::IrqchipMode::Userspace);
    kvm.set_state(&mid).expect("set_state");
    assert!(kvm.state().expect("state").halted, "still halted under KVM");
    let exit = run_until(&mut kvm, &mut tb.board, Duration::from_secs(20));
    assert_eq!(exit, VmExit::PowerOff);
    assert_eq!(tb.read_u32(0x500), 6, "KVM took the last three ticks");
}
