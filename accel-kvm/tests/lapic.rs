//! The local APIC timer under KVM in both irqchip modes — the platform's LAPIC (userspace
//! irqchip) or KVM's (kernel irqchip) — and, as the reference, under the interpreter: a 32-bit
//! guest programs the LAPIC timer through the xAPIC page — one-shot, then periodic — and takes
//! each interrupt while in HLT. Where the APIC's MSRs work (userspace: KVM hands them to pcvm)
//! it then switches to x2APIC mode through IA32_APIC_BASE, reads the x2APIC ID and version
//! MSRs, arms the TSC-deadline timer and takes that interrupt too.
//!
//! The handler never returns (kvm-pvm's instruction emulator fails on a 32-bit IRETD): it logs
//! the TSC, sends the EOI (MMIO or x2APIC MSR), drops its frame and jumps to the dispatcher.

mod common;

use std::time::Duration;

use common::*;
use iced_x86::code_asm::*;
use pcvm_accel_kvm::IrqchipMode;
use pcvm_core::{CpuBackend, VmExit};
use pcvm_cpu_interp::Interpreter;

const CODE: u64 = 0x8000;
const HANDLER: u64 = 0x9000;
const IDT: u64 = 0x2000;
const VECTOR: u32 = 0x40;
const LAPIC: u32 = 0xFEE0_0000;

/// Guest data: interrupt count, "use x2APIC" flag (set by the host), ticks per ms of the
/// guest TSC (host), one-shot current count after expiry, x2APIC version and ID, the TSC
/// deadline written, IA32_TSC_DEADLINE read in each later interrupt (the guest finishes once it
/// reads 0), IA32_APIC_BASE after the switch,
/// the TSC before arming the one-shot, the TSC at each interrupt.
const COUNT: u32 = 0x500;
const X2APIC: u32 = 0x504;
const TICKS_PER_MS: u32 = 0x508;
const ONESHOT_CURRENT: u32 = 0x510;
const X2_VERSION: u32 = 0x514;
const X2_ID: u32 = 0x518;
const DEADLINE: u32 = 0x520;
const DEADLINE_AFTER: u32 = 0x528;
const APIC_BASE: u32 = 0x530;
const START_TSC: u32 = 0x538;
const TSC_LOG: u32 = 0x600;

/// One-shot 1 ms, then three periodic ticks of 2 ms, then a TSC deadline 20 ms out; the APIC
/// timer counts at 1 GHz (divide by 1).
const ONESHOT_NS: u32 = 1_000_000;
const PERIOD_NS: u32 = 2_000_000;
const DEADLINE_MS: u32 = 20;

/// The main code at [`CODE`] and the address of its dispatcher (where the handler jumps).
fn guest() -> (Vec<u8>, u64) {
    let mut a = CodeAssembler::new(32).expect("asm");
    let mut dispatch = a.create_label();
    (|| -> Result<(), IcedError> {
        let mut wait = a.create_label();
        let mut not_first = a.create_label();
        let mut not_periodic_end = a.create_label();
        let mut done = a.create_label();
        a.cli()?;
        a.mov(dword_ptr(COUNT), 0u32)?;
        a.mov(dword_ptr(LAPIC + 0xF0), 0x1FFu32)?; // SVR: enabled, spurious 0xFF
                                                   // LINT0 masked: the board's 8254 runs from power-on and its IRQ0 would otherwise reach
                                                   // the CPU through the (unprogrammed) 8259 in virtual-wire mode.
        a.mov(dword_ptr(LAPIC + 0x350), 1u32 << 16)?;
        a.mov(dword_ptr(LAPIC + 0x3E0), 0xBu32)?; // divide by 1
        a.mov(dword_ptr(LAPIC + 0x320), VECTOR)?; // LVT timer: one-shot
        a.rdtsc()?;
        a.mov(dword_ptr(START_TSC), eax)?;
        a.mov(dword_ptr(START_TSC + 4), edx)?;
        a.mov(dword_ptr(LAPIC + 0x380), ONESHOT_NS)?;
        a.set_label(&mut wait)?;
        a.sti()?;
        a.hlt()?;
        a.jmp(wait)?;

        // Entered from the handler with IF = 0.
        a.set_label(&mut dispatch)?;
        a.mov(eax, dword_ptr(COUNT))?;
        a.cmp(eax, 1)?;
        a.jne(not_first)?;
        a.mov(ebx, dword_ptr(LAPIC + 0x390))?;
        a.mov(dword_ptr(ONESHOT_CURRENT), ebx)?;
        a.mov(dword_ptr(LAPIC + 0x320), VECTOR | 1 << 17)?; // periodic
        a.mov(dword_ptr(LAPIC + 0x380), PERIOD_NS)?;
        a.jmp(wait)?;
        a.set_label(&mut not_first)?;
        a.cmp(eax, 4)?;
        a.jne(not_periodic_end)?;
        a.mov(dword_ptr(LAPIC + 0x320), VECTOR | 1 << 16)?; // masked
        a.mov(dword_ptr(LAPIC + 0x380), 0u32)?; // stopped
        a.cmp(dword_ptr(X2APIC), 0)?;
        a.je(done)?;
        // x2APIC mode (EXTD, bit 10), then everything through MSRs.
        a.mov(ecx, 0x1Bu32)?;
        a.rdmsr()?;
        a.or(eax, 1 << 10)?;
        a.wrmsr()?;
        a.rdmsr()?;
        a.mov(dword_ptr(APIC_BASE), eax)?;
        a.mov(ecx, 0x803u32)?;
        a.rdmsr()?;
        a.mov(dword_ptr(X2_VERSION), eax)?;
        a.mov(ecx, 0x802u32)?;
        a.rdmsr()?;
        a.mov(dword_ptr(X2_ID), eax)?;
        a.mov(ecx, 0x832u32)?; // LVT timer: TSC-deadline mode
        a.mov(eax, VECTOR | 2 << 17)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        // Deadline = now + DEADLINE_MS × ticks per ms.
        a.mov(eax, dword_ptr(TICKS_PER_MS))?;
        a.mov(ebx, DEADLINE_MS)?;
        a.mul(ebx)?;
        a.mov(esi, eax)?;
        a.mov(edi, edx)?;
        a.rdtsc()?;
        a.add(eax, esi)?;
        a.adc(edx, edi)?;
        a.mov(dword_ptr(DEADLINE), eax)?;
        a.mov(dword_ptr(DEADLINE + 4), edx)?;
        a.mov(ecx, 0x6E0u32)?;
        a.wrmsr()?;
        a.jmp(wait)?;
        // A periodic tick that was already pending when the timer was stopped may still
        // arrive: done once IA32_TSC_DEADLINE reads 0 (the deadline fired).
        a.set_label(&mut not_periodic_end)?;
        a.cmp(eax, 5)?;
        a.jb(wait)?;
        a.mov(ecx, 0x6E0u32)?;
        a.rdmsr()?;
        a.mov(dword_ptr(DEADLINE_AFTER), eax)?;
        a.mov(dword_ptr(DEADLINE_AFTER + 4), edx)?;
        a.or(eax, edx)?;
        a.jnz(wait)?;
        a.set_label(&mut done)?;
        a.out(TEST_EXIT_PORT as u32, al)?;
        a.hlt()?;
        a.jmp(done)?;

        Ok(())
    })()
    .expect("assemble");
    let r = a
        .assemble_options(
            CODE,
            iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .expect("encode");
    let dispatch = r.label_ip(&dispatch).expect("dispatch label");
    (r.inner.code_buffer, dispatch)
}

/// The handler alone at [`HANDLER`], jumping to `dispatch` in the main code.
fn handler(dispatch: u64) -> Vec<u8> {
    asm(32, HANDLER, |a| {
        let mut x2_eoi = a.create_label();
        let mut eoi_done = a.create_label();
        a.rdtsc()?;
        a.mov(ecx, dword_ptr(COUNT))?;
        a.and(ecx, 7)?;
        a.mov(dword_ptr(ecx * 8 + TSC_LOG), eax)?;
        a.mov(dword_ptr(ecx * 8 + TSC_LOG + 4), edx)?;
        a.inc(dword_ptr(COUNT))?;
        // Interrupts 1–4 arrive in xAPIC mode, later ones in x2APIC mode.
        a.cmp(dword_ptr(COUNT), 4)?;
        a.ja(x2_eoi)?;
        a.mov(dword_ptr(LAPIC + 0xB0), 0u32)?;
        a.jmp(eoi_done)?;
        a.set_label(&mut x2_eoi)?;
        a.mov(ecx, 0x80Bu32)?;
        a.xor(eax, eax)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.set_label(&mut eoi_done)?;
        a.add(esp, 12)?;
        a.jmp(dispatch)
    })
}

/// A 32-bit interrupt gate for [`VECTOR`] → [`HANDLER`], CS 0x08, DPL 0 (SDM Vol. 3A §6.11).
fn install_gate(tb: &TestBoard) {
    let gate = (HANDLER & 0xFFFF) | (0x08 << 16) | (0x8E00 << 32) | ((HANDLER >> 16) << 48);
    tb.write(IDT + 8 * u64::from(VECTOR), &gate.to_le_bytes());
}

/// Flat 32-bit protected mode at [`CODE`] with the IDT covering [`VECTOR`].
fn state_with_idt() -> pcvm_core::CpuState {
    let mut s = pm32_state(CODE);
    s.idtr = pcvm_core::DescriptorTable {
        base: IDT,
        limit: (8 * (VECTOR + 1) - 1) as _,
    };
    s
}

/// What the guest left in memory.
#[derive(Debug)]
struct Outcome {
    count: u32,
    oneshot_current: u32,
    start_tsc: u64,
    tsc_log: Vec<u64>,
    x2_version: u32,
    x2_id: u32,
    deadline: u64,
    apic_base: u32,
}

fn read_u64(tb: &TestBoard, addr: u32) -> u64 {
    u64::from_le_bytes(tb.read(u64::from(addr), 8).try_into().unwrap())
}

/// Load the guest on `tb`, run it on `cpu` to power-off and collect what it recorded.
fn run_guest(cpu: &mut dyn CpuBackend, tb: &mut TestBoard, x2apic: bool, tsc_khz: u32) -> Outcome {
    pm32_tables(tb);
    let (code, dispatch) = guest();
    tb.write(CODE, &code);
    tb.write(HANDLER, &handler(dispatch));
    install_gate(tb);
    tb.write(u64::from(X2APIC), &u32::from(x2apic).to_le_bytes());
    tb.write(u64::from(TICKS_PER_MS), &tsc_khz.to_le_bytes());
    cpu.set_state(&state_with_idt()).expect("set_state");
    let exit = run_until(cpu, &mut tb.board, Duration::from_secs(60));
    if exit != VmExit::PowerOff {
        let s = cpu.state().expect("state");
        panic!(
            "{}: {exit:?} at EIP {:#x} after {} interrupts (ESP {:#x}, exception {:?})",
            cpu.name(),
            s.rip,
            tb.read_u32(u64::from(COUNT)),
            s.gpr[4],
            s.pending_exception
        );
    }
    Outcome {
        count: tb.read_u32(u64::from(COUNT)),
        oneshot_current: tb.read_u32(u64::from(ONESHOT_CURRENT)),
        start_tsc: read_u64(tb, START_TSC),
        tsc_log: (0..6).map(|i| read_u64(tb, TSC_LOG + 8 * i)).collect(),
        x2_version: tb.read_u32(u64::from(X2_VERSION)),
        x2_id: tb.read_u32(u64::from(X2_ID)),
        deadline: read_u64(tb, DEADLINE),
        apic_base: tb.read_u32(u64::from(APIC_BASE)),
    }
}

/// The interrupts came in order, none before its time (guest TSC at `tsc_khz`), and the
/// x2APIC part (when run) saw the right registers and a deadline met within 20 ms.
fn check(o: &Outcome, x2apic: bool, tsc_khz: u32, who: &str) {
    eprintln!("{who}: {o:x?}");
    let ticks = |ns: u32| u64::from(tsc_khz) * u64::from(ns) / 1_000_000;
    if x2apic {
        // At most one stray periodic tick before the deadline.
        assert!((5..=6).contains(&o.count), "{who}: {} interrupts", o.count);
    } else {
        assert_eq!(o.count, 4, "{who}: interrupts");
    }
    assert_eq!(o.oneshot_current, 0, "{who}: one-shot count ran out");
    let log = &o.tsc_log;
    // 5% slack for the TSC frequency KVM reports (kHz, rounded) against the host clock.
    let at_least = |t: u64| t - t / 20;
    let first = log[0].wrapping_sub(o.start_tsc);
    assert!(
        first >= at_least(ticks(ONESHOT_NS)),
        "{who}: one-shot after {first} ticks"
    );
    // Periodic tick i is due i periods after the timer was armed (after interrupt 0); a late
    // tick may be followed by a quick one, but none comes before its time.
    for i in 1..4 {
        assert!(
            log[i].wrapping_sub(log[0]) >= at_least(ticks(PERIOD_NS) * i as u64),
            "{who}: periodic tick {i} early: {log:?}"
        );
    }
    if x2apic {
        assert_eq!(o.x2_version, 0x0005_0014, "{who}: x2APIC version MSR");
        assert_eq!(o.x2_id, 0, "{who}: x2APIC ID MSR");
        assert_eq!(o.apic_base & 0xC00, 0xC00, "{who}: x2APIC mode enabled");
        let last = log[o.count as usize - 1];
        let late = last.wrapping_sub(o.deadline) as i64;
        assert!(
            late >= 0,
            "{who}: TSC-deadline interrupt {} ticks early",
            -late
        );
        assert!(
            late < ticks(DEADLINE_MS * 1_000_000) as i64,
            "{who}: TSC-deadline interrupt {late} ticks late (TSC {tsc_khz} kHz)"
        );
    }
}

#[test]
fn interpreter_takes_the_lapic_timer_in_hlt_xapic_and_x2apic() {
    let mut tb = TestBoard::with_lapic();
    let mut cpu = Interpreter::new();
    // The interpreter's TSC counts virtual-clock ns.
    let o = run_guest(&mut cpu, &mut tb, true, 1_000_000);
    check(&o, true, 1_000_000, "interp");
}

/// The guest on KVM in `mode`. Userspace irqchip: the platform's LAPIC, with the x2APIC /
/// TSC-deadline part when KVM hands its MSRs over (CPUID must say so either way). Kernel
/// irqchip: KVM's own LAPIC, with the x2APIC part when KVM's CPUID offers x2APIC and the
/// TSC-deadline timer.
fn kvm_lapic_timer(mode: IrqchipMode, lapic_msr_exits: bool) {
    let mut tb = TestBoard::with_lapic();
    let mut cpu = tb.kvm_with(pcvm_accel_kvm::KvmOptions {
        irqchip: mode,
        lapic_msr_exits,
        ..Default::default()
    });
    let leaf1 = cpu.cpuid(1, 0).expect("leaf 1");
    let shown = (leaf1[3] & (1 << 9) != 0, leaf1[2] & (1 << 21 | 1 << 24));
    let x2apic = match (mode, cpu.lapic_msrs()) {
        (IrqchipMode::Kernel, _) => {
            assert!(shown.0, "KVM's LAPIC is advertised");
            if shown.1 != 1 << 21 | 1 << 24 {
                eprintln!("KVM's CPUID lacks x2APIC or TSC deadline: xAPIC page only");
            }
            shown.1 == 1 << 21 | 1 << 24
        }
        (IrqchipMode::Userspace, Ok(())) => {
            assert_eq!(
                shown,
                (true, 1 << 21 | 1 << 24),
                "APIC, x2APIC, TSC deadline"
            );
            true
        }
        (IrqchipMode::Userspace, Err(refusal)) => {
            eprintln!(
                "no local-APIC MSR exits ({refusal}): xAPIC page only, and CPUID must hide \
                 the APIC"
            );
            assert_eq!(shown, (false, 0));
            false
        }
    };
    let khz = cpu.tsc_khz();
    let o = run_guest(&mut cpu, &mut tb, x2apic, khz);
    let who = format!("kvm {mode:?}");
    check(&o, x2apic, khz, &who);
    if x2apic {
        let s = cpu.state().expect("state");
        assert_eq!(
            s.msrs.apic_base & 0xC00,
            0xC00,
            "{who}: CpuState carries the APIC base the guest wrote"
        );
    }
}

#[test]
fn kvm_userspace_irqchip_takes_the_lapic_timer_in_hlt() {
    require_kvm!();
    kvm_lapic_timer(IrqchipMode::Userspace, true);
}

/// The path taken when KVM refuses the MSR exits: CPUID hides the APIC, the guest still takes
/// the timer through the APIC page.
#[test]
fn kvm_userspace_irqchip_without_msr_exits_hides_the_apic_but_the_page_works() {
    require_kvm!();
    kvm_lapic_timer(IrqchipMode::Userspace, false);
}

#[test]
fn kvm_kernel_irqchip_takes_the_lapic_timer_in_hlt() {
    require_kvm!();
    kvm_lapic_timer(IrqchipMode::Kernel, true);
}

/// The exit timer is armed for the LAPIC timer's deadline, not only for the run cap: a guest
/// spinning with interrupts enabled (no exits of its own) gets its 2 ms one-shot interrupt
/// long before a 5 s `max_run_interval` would bring the vCPU out.
#[test]
fn kvm_userspace_irqchip_comes_out_at_the_lapic_deadline_of_a_spinning_guest() {
    require_kvm!();
    let mut tb = TestBoard::with_lapic();
    let mut cpu = tb.kvm_with(pcvm_accel_kvm::KvmOptions {
        irqchip: IrqchipMode::Userspace,
        max_run_interval: Duration::from_secs(5),
        ..Default::default()
    });
    pm32_tables(&tb);
    let code = asm(32, CODE, |a| {
        let mut spin = a.create_label();
        a.mov(dword_ptr(LAPIC + 0xF0), 0x1FFu32)?;
        a.mov(dword_ptr(LAPIC + 0x350), 1u32 << 16)?;
        a.mov(dword_ptr(LAPIC + 0x3E0), 0xBu32)?;
        a.mov(dword_ptr(LAPIC + 0x320), VECTOR)?;
        a.rdtsc()?;
        a.mov(dword_ptr(START_TSC), eax)?;
        a.mov(dword_ptr(START_TSC + 4), edx)?;
        a.mov(dword_ptr(LAPIC + 0x380), 2 * ONESHOT_NS)?;
        a.sti()?;
        a.set_label(&mut spin)?;
        a.jmp(spin)
    });
    let handler = asm(32, HANDLER, |a| {
        a.rdtsc()?;
        a.mov(dword_ptr(TSC_LOG), eax)?;
        a.mov(dword_ptr(TSC_LOG + 4), edx)?;
        a.out(TEST_EXIT_PORT as u32, al)?;
        a.hlt()
    });
    tb.write(CODE, &code);
    tb.write(HANDLER, &handler);
    install_gate(&tb);
    cpu.set_state(&state_with_idt()).expect("set_state");
    let start = std::time::Instant::now();
    let exit = cpu
        .run(&mut tb.board, pcvm_core::RunLimit::Unbounded)
        .expect("run");
    let wall = start.elapsed();
    assert_eq!(exit, VmExit::PowerOff);
    let ticks = read_u64(&tb, TSC_LOG).wrapping_sub(read_u64(&tb, START_TSC));
    let ms = ticks as f64 / f64::from(cpu.tsc_khz());
    eprintln!("one-shot of 2 ms taken after {ms:.2} ms (guest TSC); run took {wall:?}");
    assert!(ms >= 1.9, "interrupt before the deadline: {ms:.2} ms");
    assert!(
        wall < Duration::from_secs(2),
        "the vCPU only came out at the run cap: {wall:?}"
    );
}

/// Results of the CR8 guest: CR8 read back after MOV CR8 ← 0xF, the TPR register then, the
/// "self-IPI held off" marker as the handler saw it, CR8 in the handler, the handler ran.
const CR8_READ: u32 = 0x700;
const CR8_TPR: u32 = 0x704;
const CR8_BLOCKED: u32 = 0x708;
const CR8_BLOCKED_SEEN: u32 = 0x70C;
const CR8_IN_HANDLER: u32 = 0x710;
const CR8_HANDLED: u32 = 0x714;

/// Long mode with identity-mapped 2 MiB pages for the low 2 MiB and the APIC page
/// (PML4 0x14000 → PDPT 0x15000 → PDs 0x13000 and 0x16000), a 64-bit code segment at GDT
/// selector 0x20, and a 64-bit IDT with [`VECTOR`] → [`HANDLER`].
fn long_mode_state(tb: &TestBoard) -> pcvm_core::CpuState {
    use pcvm_core::cpu_state::cr;
    pm32_tables(tb);
    tb.write(
        GDT + 0x20,
        &seg_desc(0, 0xFFFF_FFFF, 0x9B, 0x2).to_le_bytes(),
    );
    tb.write(0x1_4000, &(0x1_5000u64 | 3).to_le_bytes());
    tb.write(0x1_5000, &(0x1_3000u64 | 3).to_le_bytes());
    tb.write(0x1_5000 + 3 * 8, &(0x1_6000u64 | 3).to_le_bytes());
    tb.write(0x1_3000, &0x83u64.to_le_bytes());
    let apic_pde = 0x1_6000 + 8 * ((u64::from(LAPIC) >> 21) & 511);
    tb.write(apic_pde, &(u64::from(LAPIC) | 0x93).to_le_bytes());
    // 64-bit interrupt gate: 16 bytes (SDM Vol. 3A §6.14.1).
    let gate = (HANDLER & 0xFFFF) | (0x20 << 16) | (0x8E00 << 32) | ((HANDLER >> 16) << 48);
    tb.write(IDT + 16 * u64::from(VECTOR), &gate.to_le_bytes());
    tb.write(IDT + 16 * u64::from(VECTOR) + 8, &0u64.to_le_bytes());
    let mut s = pm32_state(CODE);
    s.gdtr.limit = 5 * 8 - 1;
    s.idtr = pcvm_core::DescriptorTable {
        base: IDT,
        limit: (16 * (VECTOR + 1) - 1) as _,
    };
    s.cr3 = 0x1_4000;
    s.cr4 |= cr::CR4_PAE;
    s.cr0 |= cr::CR0_PG;
    s.efer = cr::EFER_LME | cr::EFER_LMA;
    let code_segment = s.seg_mut(pcvm_core::SegReg::Cs);
    code_segment.selector = 0x20;
    code_segment.attributes = 0x9B | pcvm_core::Segment::ATTR_L | pcvm_core::Segment::ATTR_G;
    s
}

/// CR8 is the LAPIC's TPR[7:4] (SDM Vol. 3A §10.8.6.1 "Interaction of Task Priorities
/// between CR8 and APIC"): MOV CR8 ← 0xF shows as TPR 0xF0 and holds off a class-4 self-IPI;
/// lowering the TPR through the APIC page lets it in, and CR8 reads 0 in the handler.
fn cr8_guest(cpu: &mut dyn CpuBackend, tb: &mut TestBoard) {
    let code = asm(64, CODE, |a| {
        let mut spin = a.create_label();
        // The APIC page is above 2 GiB: addressed through RBX (a 32-bit displacement is
        // sign-extended in 64-bit mode).
        a.mov(ebx, LAPIC)?;
        a.mov(dword_ptr(rbx + 0xF0), 0x1FFu32)?;
        a.mov(dword_ptr(rbx + 0x350), 1u32 << 16)?;
        a.mov(eax, 0xFu32)?;
        a.mov(cr8, rax)?;
        a.mov(rax, cr8)?;
        a.mov(dword_ptr(CR8_READ), eax)?;
        a.mov(eax, dword_ptr(rbx + 0x80))?;
        a.mov(dword_ptr(CR8_TPR), eax)?;
        a.sti()?;
        // Fixed self-IPI (shorthand "self"), vector 0x40: priority class 4 < 0xF.
        a.mov(dword_ptr(rbx + 0x300), VECTOR | 1 << 18)?;
        a.mov(ecx, 50u32)?;
        let mut delay = a.create_label();
        a.set_label(&mut delay)?;
        a.dec(ecx)?;
        a.jnz(delay)?;
        a.mov(dword_ptr(CR8_BLOCKED), 1u32)?;
        a.mov(dword_ptr(rbx + 0x80), 0u32)?;
        a.set_label(&mut spin)?;
        a.jmp(spin)
    });
    let handler = asm(64, HANDLER, |a| {
        a.mov(rax, cr8)?;
        a.mov(dword_ptr(CR8_IN_HANDLER), eax)?;
        a.mov(eax, dword_ptr(CR8_BLOCKED))?;
        a.mov(dword_ptr(CR8_BLOCKED_SEEN), eax)?;
        a.mov(dword_ptr(CR8_HANDLED), 1u32)?;
        a.out(TEST_EXIT_PORT as u32, al)?;
        a.hlt()
    });
    let state = long_mode_state(tb);
    tb.write(CODE, &code);
    tb.write(HANDLER, &handler);
    cpu.set_state(&state).expect("set_state");
    let exit = run_until(cpu, &mut tb.board, Duration::from_secs(30));
    let who = cpu.name();
    let r = |addr: u32| tb.read_u32(u64::from(addr));
    assert_eq!(exit, VmExit::PowerOff, "{who}");
    assert_eq!(r(CR8_READ), 0xF, "{who}: CR8 reads back");
    assert_eq!(r(CR8_TPR), 0xF0, "{who}: MOV CR8 set the APIC's TPR");
    assert_eq!(r(CR8_HANDLED), 1, "{who}: the self-IPI was taken");
    assert_eq!(
        r(CR8_BLOCKED_SEEN),
        1,
        "{who}: the self-IPI came while CR8 = 0xF"
    );
    assert_eq!(
        r(CR8_IN_HANDLER),
        0,
        "{who}: TPR 0 through the page is CR8 0"
    );
}

#[test]
fn interpreter_cr8_is_the_lapic_task_priority() {
    let mut tb = TestBoard::with_lapic();
    cr8_guest(&mut Interpreter::new(), &mut tb);
}

#[test]
fn kvm_userspace_irqchip_cr8_is_the_lapic_task_priority() {
    require_kvm!();
    let mut tb = TestBoard::with_lapic();
    let mut cpu = tb.kvm(IrqchipMode::Userspace);
    cr8_guest(&mut cpu, &mut tb);
}

#[test]
fn kvm_kernel_irqchip_cr8_is_the_lapic_task_priority() {
    require_kvm!();
    let mut tb = TestBoard::with_lapic();
    let mut cpu = tb.kvm(IrqchipMode::Kernel);
    cr8_guest(&mut cpu, &mut tb);
}
