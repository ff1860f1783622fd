//! CPU state hand-off between the interpreter and KVM in the middle of a guest: the guest must
//! finish exactly as it does on the interpreter alone (registers, flags, memory, device log).

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
