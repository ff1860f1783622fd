//! KVM must be much faster than the interpreter on plain computation — when KVM is backed by
//! hardware virtualization. On hosts without VMX/SVM (kvm-pvm emulates guests in software)
//! the comparison is skipped with a printed reason, after a short measurement for the record.

mod common;

use std::time::{Duration, Instant};

use common::*;
use iced_x86::code_asm::*;
use pcvm_core::{CpuBackend, VmExit};
use pcvm_cpu_interp::Interpreter;

const CODE: u64 = 0x8000;

/// A 32-bit ALU loop of `rounds` × 4 instructions, then power-off.
fn load_loop(tb: &TestBoard, rounds: u32) {
    let mut a = CodeAssembler::new(32).expect("asm");
    let mut top = a.create_label();
    (|| -> Result<(), IcedError> {
        a.mov(ecx, rounds)?;
        a.set_label(&mut top)?;
        a.add(eax, ecx)?;
        a.xor(ebx, eax)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.mov(dword_ptr(0x500), ebx)?;
        a.out(TEST_EXIT_PORT as u32, al)?;
        a.hlt()
    })()
    .expect("assemble");
    pm32_tables(tb);
    tb.write(CODE, &a.assemble(CODE).expect("encode"));
}

fn time_run(cpu: &mut dyn CpuBackend, tb: &mut TestBoard) -> Duration {
    cpu.set_state(&pm32_state(CODE)).expect("set_state");
    let start = Instant::now();
    assert_eq!(
        run_until(cpu, &mut tb.board, Duration::from_secs(300)),
        VmExit::PowerOff
    );
    start.elapsed()
}

#[test]
fn kvm_outruns_the_interpreter_with_hardware_virtualization() {
    require_kvm!();
    if !pcvm_accel_kvm::hardware_virtualization_available() {
        let mut tb = TestBoard::new();
        let mut kvm = tb.kvm(pcvm_accel_kvm::IrqchipMode::Userspace);
        load_loop(&tb, 50_000);
        let t = time_run(&mut kvm, &mut tb);
        eprintln!(
            "skipped: no hardware virtualization (no vmx/svm); software KVM ran {:.2} M guest \
             instructions/s on a 200k-instruction ALU loop",
            200_000.0 / t.as_secs_f64() / 1e6
        );
        return;
    }
    let rounds = 20_000_000;
    let mut tb = TestBoard::new();
    load_loop(&tb, rounds);
    let mut interp = Interpreter::new();
    let t_interp = time_run(&mut interp, &mut tb);
    let interp_result = tb.read_u32(0x500);

    let mut tb = TestBoard::new();
    let mut kvm = tb.kvm(pcvm_accel_kvm::IrqchipMode::Userspace);
    load_loop(&tb, rounds);
    let t_kvm = time_run(&mut kvm, &mut tb);
    assert_eq!(tb.read_u32(0x500), interp_result, "same result");
    eprintln!(
        "ALU loop, {} M instructions: interpreter {t_interp:?}, KVM {t_kvm:?}",
        rounds * 4 / 1_000_000
    );
    assert!(
        t_kvm * 5 < t_interp,
        "hardware KVM ({t_kvm:?}) should be at least 5x faster than the interpreter ({t_interp:?})"
    );
}
