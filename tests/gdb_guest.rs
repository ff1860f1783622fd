//! The real gdb 13 in batch mode against `code_asm` guests on the interpreter: a flat 32-bit
//! protected-mode guest with an ELF symbol file (break on a function, registers, ten steps
//! compared with the assembled code, memory read/write, a write watchpoint, monitor
//! commands, register writes, detach leaving the guest running, kill) and a 16-bit real-mode
//! guest (CS:IP shown as the linear `$pc`, 16-bit disassembly, steps, watchpoint).

mod gdb_common;

use std::time::Duration;

use gdb_common::{flat32_state, marked_values, run_gdb, write_elf32, Backend, Sym, TempDir, Vm};
use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;
use pcvm::gdb::ListenSpec;
use pcvm::gdb::RunEnd;
use pcvm_core::{CpuState, SegReg, Segment};

const GDT: u64 = 0x1000;
const STACK: u32 = 0x7000;
const COUNTER: u64 = 0x9000;
const SCRATCH: u64 = 0x9010;
const CODE32: u64 = 0x1_0000;

/// Addresses of the 32-bit guest's instructions.
struct Guest32 {
    code: Vec<u8>,
    top: u64,
    after_call: u64,
    jmp: u64,
    func: u64,
    /// func's instructions after the first: mov ebx, add, mov [], ret.
    f: [u64; 4],
    end: u64,
}

/// `top: call func; inc dword [COUNTER]; jmp top` and
/// `func: mov eax,..; mov ebx,..; add eax,ebx; mov [SCRATCH],eax; ret`.
fn guest32() -> Guest32 {
    let mut a = CodeAssembler::new(32).expect("asm");
    let mut top = a.create_label();
    let mut after_call = a.create_label();
    let mut jmp = a.create_label();
    let mut func = a.create_label();
    let mut f: Vec<CodeLabel> = (0..4).map(|_| a.create_label()).collect();
    let mut end = a.create_label();
    a.set_label(&mut top).unwrap();
    a.call(func).unwrap();
    a.set_label(&mut after_call).unwrap();
    a.inc(dword_ptr(COUNTER as u32)).unwrap();
    a.set_label(&mut jmp).unwrap();
    a.jmp(top).unwrap();
    a.set_label(&mut func).unwrap();
    a.mov(eax, 0x1111_1111u32).unwrap();
    a.set_label(&mut f[0]).unwrap();
    a.mov(ebx, 0x2222_2222u32).unwrap();
    a.set_label(&mut f[1]).unwrap();
    a.add(eax, ebx).unwrap();
    a.set_label(&mut f[2]).unwrap();
    a.mov(dword_ptr(SCRATCH as u32), eax).unwrap();
    a.set_label(&mut f[3]).unwrap();
    a.ret().unwrap();
    a.set_label(&mut end).unwrap();
    a.nop().unwrap();
    let r = a
        .assemble_options(CODE32, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .expect("assemble");
    let ip = |l: &CodeLabel| r.label_ip(l).expect("label");
    Guest32 {
        code: r.inner.code_buffer.clone(),
        top: ip(&top),
        after_call: ip(&after_call),
        jmp: ip(&jmp),
        func: ip(&func),
        f: [ip(&f[0]), ip(&f[1]), ip(&f[2]), ip(&f[3])],
        end: ip(&end),
    }
}

fn start32(g: &Guest32, backend: Backend) -> Vm {
    let code = g.code.clone();
    let (state, gdt) = flat32_state(GDT, CODE32 as u32, STACK);
    let spec = ListenSpec::tcp("127.0.0.1", 0);
    Vm::start_on(
        backend,
        move |m| {
            m.write_phys(GDT, &gdt).expect("gdt");
            m.write_phys(CODE32, &code).expect("code");
        },
        state,
        true,
        &spec,
        None,
    )
}

#[test]
fn protected_mode_guest_under_gdb() {
    protected_mode_guest(Backend::Interp);
}

#[test]
fn protected_mode_guest_under_gdb_on_jit() {
    protected_mode_guest(Backend::Jit);
}

#[test]
fn protected_mode_guest_under_gdb_on_kvm() {
    protected_mode_guest(Backend::Kvm);
}

fn protected_mode_guest(backend: Backend) {
    let Some(gdb) = gdb_common::gdb() else { return };
    if !backend.usable() {
        return;
    }
    let g = guest32();
    let dir = TempDir::new("pm32");
    let elf = dir.path("guest32.elf");
    write_elf32(
        &elf,
        CODE32 as u32,
        &g.code,
        &[
            Sym {
                name: "main_loop".into(),
                addr: g.top,
                size: g.func - g.top,
                func: true,
            },
            Sym {
                name: "func".into(),
                addr: g.func,
                size: g.end - g.func,
                func: true,
            },
            Sym {
                name: "counter".into(),
                addr: COUNTER,
                size: 4,
                func: false,
            },
        ],
    );
    let mut vm = start32(&g, backend);
    let target = format!("127.0.0.1:{}", vm.port);
    let mut cmds: Vec<String> = vec![
        "echo M-PC0\\n".into(),
        "p/x $pc".into(),
        "break func".into(),
        "continue".into(),
        "echo M-FUNC\\n".into(),
        "p/x $pc".into(),
        "echo M-ESP\\n".into(),
        "p/x $esp".into(),
        "echo M-CS\\n".into(),
        "p/x $cs".into(),
    ];
    for _ in 0..10 {
        cmds.push("stepi".into());
        cmds.push("echo M-STEP\\n".into());
        cmds.push("p/x $pc".into());
    }
    cmds.extend(
        [
            // After the steps, func ran once (0x33333333 stored at SCRATCH) and its second
            // run has set EAX again.
            "echo M-EAX\n",
            "p/x $eax",
            "echo M-SCRATCH\n",
            "p/x *(unsigned int*)0x9010",
            "set {unsigned int}0x9020 = 0x12345678",
            "monitor phys 0x9020 4",
            "echo M-POKE\n",
            "p/x *(unsigned int*)0x9020",
            "x/x 0xa0000",
            "x/x 0x7fff000",
            "x/2i $pc",
            "delete",
            "watch *(int*)&counter",
            "continue",
            "echo M-WATCH\n",
            "p/x $pc",
            "delete",
            "monitor info registers",
            "monitor accel",
            "set $ecx = 0x77",
            "set $pc = main_loop",
            "stepi",
            "echo M-SETPC\n",
            "p/x $pc",
            "monitor info registers",
            "detach",
        ]
        .iter()
        .map(|s| s.replace('\n', "\\n")),
    );
    let cmd_refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let out = run_gdb(&gdb, Some(&elf), &target, &cmd_refs, None).all();

    assert_eq!(marked_values(&out, "M-PC0"), [CODE32], "stopped at entry");
    assert_eq!(
        marked_values(&out, "M-FUNC"),
        [g.func],
        "breakpoint on func"
    );
    assert!(out.contains("Breakpoint 1, "), "{out}");
    assert_eq!(marked_values(&out, "M-ESP"), [u64::from(STACK) - 4]);
    assert_eq!(marked_values(&out, "M-CS"), [0x8]);
    let expected = [
        g.f[0],
        g.f[1],
        g.f[2],
        g.f[3],
        g.after_call,
        g.jmp,
        g.top,
        g.func,
        g.f[0],
        g.f[1],
    ];
    assert_eq!(marked_values(&out, "M-STEP"), expected, "ten steps");
    assert_eq!(marked_values(&out, "M-EAX"), [0x1111_1111]);
    assert_eq!(marked_values(&out, "M-SCRATCH"), [0x3333_3333]);
    assert!(
        out.contains("0000000000009020: 78 56 34 12"),
        "monitor phys shows the write: {out}"
    );
    assert_eq!(marked_values(&out, "M-POKE"), [0x1234_5678]);
    assert!(
        out.contains("Cannot access memory at address 0xa0000"),
        "MMIO is an error, not data"
    );
    assert!(
        out.contains("Cannot access memory at address 0x7fff000"),
        "a hole is an error"
    );
    assert!(
        out.contains("Hardware watchpoint 2: *(int*)&counter"),
        "{out}"
    );
    assert!(out.contains("Old value = "), "{out}");
    assert_eq!(
        marked_values(&out, "M-WATCH"),
        [g.jmp],
        "the write watchpoint stops right after the incrementing instruction"
    );
    assert!(
        out.contains("CS  =0008 base=0000000000000000 limit=ffffffff"),
        "{out}"
    );
    assert!(out.contains("GDT=     0000000000001000 00000017"), "{out}");
    assert!(out.contains(&format!("accelerator: {}", backend.name())));
    assert!(
        out.contains("RCX=0000000000000077"),
        "register write took effect"
    );
    assert_eq!(
        marked_values(&out, "M-SETPC"),
        [g.func],
        "writing $pc moves EIP"
    );

    // Detached: the guest runs on.
    let c1 = vm.read_u32(COUNTER);
    std::thread::sleep(Duration::from_millis(300));
    let c2 = vm.read_u32(COUNTER);
    assert!(c2 > c1, "counter {c1} -> {c2} after detach");

    // Attach again, interrupt nothing, kill: the machine loop ends.
    let out = run_gdb(
        &gdb,
        Some(&elf),
        &target,
        &["echo M-PC\\n", "p/x $pc", "kill"],
        None,
    )
    .all();
    let pc = marked_values(&out, "M-PC");
    assert_eq!(pc.len(), 1, "{out}");
    assert!(
        (g.top..g.end).contains(&pc[0]),
        "stopped inside the loop: {pc:?}"
    );
    assert_eq!(vm.join(), RunEnd::Killed);
}

#[test]
fn ctrl_c_stops_a_running_guest() {
    ctrl_c(Backend::Interp);
}

#[test]
fn ctrl_c_stops_a_running_guest_on_jit() {
    ctrl_c(Backend::Jit);
}

#[test]
fn ctrl_c_stops_a_running_guest_on_kvm() {
    ctrl_c(Backend::Kvm);
}

fn ctrl_c(backend: Backend) {
    let Some(gdb) = gdb_common::gdb() else { return };
    if !backend.usable() {
        return;
    }
    let g = guest32();
    let vm = start32(&g, backend);
    let target = format!("127.0.0.1:{}", vm.port);
    // gdb forwards the SIGINT to the target as Ctrl-C while `continue` waits.
    let out = run_gdb(
        &gdb,
        None,
        &target,
        &["continue", "echo M-PC\\n", "p/x $pc", "detach"],
        Some(Duration::from_millis(3000)),
    )
    .all();
    assert!(out.contains("SIGINT"), "{out}");
    let pc = marked_values(&out, "M-PC");
    assert_eq!(pc.len(), 1, "{out}");
    assert!((g.top..g.end).contains(&pc[0]), "{pc:?}");
    assert!(
        vm.read_u32(COUNTER) > 0,
        "the guest ran before the interrupt"
    );
    assert_eq!(vm.finish(), RunEnd::Stopped);
}

/// Real-mode guest at 1000:0100.
struct Guest16 {
    code: Vec<u8>,
    top: u64,
    func: u64,
    f: [u64; 3],
    after_call: u64,
    jmp: u64,
}

const SEG16: u16 = 0x1000;
const IP16: u64 = 0x100;
const VAR16: u64 = 0x200;

fn guest16() -> Guest16 {
    let base = (u64::from(SEG16) << 4) + IP16;
    let mut a = CodeAssembler::new(16).expect("asm");
    let mut top = a.create_label();
    let mut after_call = a.create_label();
    let mut jmp = a.create_label();
    let mut func = a.create_label();
    let mut f: Vec<CodeLabel> = (0..3).map(|_| a.create_label()).collect();
    a.set_label(&mut top).unwrap();
    a.call(func).unwrap();
    a.set_label(&mut after_call).unwrap();
    a.inc(word_ptr(VAR16 as u32)).unwrap();
    a.set_label(&mut jmp).unwrap();
    a.jmp(top).unwrap();
    a.set_label(&mut func).unwrap();
    a.mov(ax, 0x1234u32).unwrap();
    a.set_label(&mut f[0]).unwrap();
    a.mov(bx, 0x5678u32).unwrap();
    a.set_label(&mut f[1]).unwrap();
    a.add(ax, bx).unwrap();
    a.set_label(&mut f[2]).unwrap();
    a.ret().unwrap();
    // Labels are assembled at the linear address so they read as what gdb shows; the code
    // itself is position independent (relative call/jmp).
    let r = a
        .assemble_options(base, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .expect("assemble");
    let ip = |l: &CodeLabel| r.label_ip(l).expect("label");
    Guest16 {
        code: r.inner.code_buffer.clone(),
        top: ip(&top),
        func: ip(&func),
        f: [ip(&f[0]), ip(&f[1]), ip(&f[2])],
        after_call: ip(&after_call),
        jmp: ip(&jmp),
    }
}

#[test]
fn real_mode_guest_shows_linear_pc_and_16bit_code() {
    real_mode_guest(Backend::Interp);
}

#[test]
fn real_mode_guest_shows_linear_pc_and_16bit_code_on_jit() {
    real_mode_guest(Backend::Jit);
}

#[test]
fn real_mode_guest_shows_linear_pc_and_16bit_code_on_kvm() {
    real_mode_guest(Backend::Kvm);
}

fn real_mode_guest(backend: Backend) {
    let Some(gdb) = gdb_common::gdb() else { return };
    if !backend.usable() {
        return;
    }
    let g = guest16();
    let base = (u64::from(SEG16) << 4) + IP16;
    let mut state = CpuState::reset();
    for r in SegReg::ALL {
        *state.seg_mut(r) = Segment::real_mode(SEG16);
    }
    *state.seg_mut(SegReg::Cs) = Segment {
        attributes: 0x9B,
        ..Segment::real_mode(SEG16)
    };
    state.rip = IP16;
    state.gpr[4] = 0xFFF0;
    let code = g.code.clone();
    let spec = ListenSpec::tcp("127.0.0.1", 0);
    let vm = Vm::start_on(
        backend,
        move |m| m.write_phys(base, &code).expect("code"),
        state,
        true,
        &spec,
        None,
    );
    let target = format!("127.0.0.1:{}", vm.port);
    let var_lin = (u64::from(SEG16) << 4) + VAR16;
    let func_bp = format!("break *{:#x}", g.func);
    let watch = format!("watch *(short*){var_lin:#x}");
    let mut cmds: Vec<String> = vec![
        "echo M-PC0\\n".into(),
        "p/x $pc".into(),
        func_bp,
        "continue".into(),
        "echo M-FUNC\\n".into(),
        "p/x $pc".into(),
        "echo M-CS\\n".into(),
        "p/x $cs".into(),
        "x/i $pc".into(),
    ];
    for _ in 0..6 {
        cmds.push("stepi".into());
        cmds.push("echo M-STEP\\n".into());
        cmds.push("p/x $pc".into());
    }
    cmds.extend(
        [
            "echo M-AX\\n",
            "p/x $eax",
            "delete",
            watch.as_str(),
            "continue",
            "echo M-WATCH\\n",
            "p/x $pc",
            "monitor info registers",
            "detach",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let cmd_refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let out = run_gdb(&gdb, None, &target, &cmd_refs, None).all();
    assert_eq!(marked_values(&out, "M-PC0"), [base], "$pc = CS.base + IP");
    assert_eq!(marked_values(&out, "M-FUNC"), [g.func]);
    assert_eq!(marked_values(&out, "M-CS"), [u64::from(SEG16)]);
    assert!(
        out.contains("mov    $0x1234,%ax"),
        "16-bit disassembly (i8086 description): {out}"
    );
    assert_eq!(
        marked_values(&out, "M-STEP"),
        [g.f[0], g.f[1], g.f[2], g.after_call, g.jmp, g.top]
    );
    assert_eq!(marked_values(&out, "M-AX"), [0x1234 + 0x5678]);
    assert!(out.contains("Hardware watchpoint 2"), "{out}");
    assert_eq!(marked_values(&out, "M-WATCH"), [g.jmp]);
    assert!(out.contains("CS  =1000 base=0000000000010000"), "{out}");
    assert!(out.contains("real mode"), "{out}");
    assert_eq!(vm.finish(), RunEnd::Stopped);
}
