//! gdb 13 against system-level views: SeaBIOS stopped at the reset vector and stepped in real
//! mode (start paused, as `-S`), the x86-64 register description with its control registers
//! and segment bases, the unix-socket transport, and Ctrl-C reaching a halted guest.

mod gdb_common;

use gdb_common::{flat32_state, marked_values, run_gdb, Backend, TempDir, Vm};
use pcvm::gdb::{ListenSpec, RegLayout, RunEnd};
use pcvm_core::CpuState;

#[test]
fn seabios_reset_vector_steps_in_real_mode() {
    seabios_reset_vector(Backend::Interp);
}

#[test]
fn seabios_reset_vector_steps_in_real_mode_on_jit() {
    seabios_reset_vector(Backend::Jit);
}

#[test]
fn seabios_reset_vector_steps_in_real_mode_on_kvm() {
    seabios_reset_vector(Backend::Kvm);
}

fn seabios_reset_vector(backend: Backend) {
    let Some(gdb) = gdb_common::gdb() else { return };
    let Some(bios) = gdb_common::seabios() else {
        return;
    };
    if !backend.usable() {
        return;
    }
    let image = pcvm_firmware::seabios::BiosImage::load(&bios).expect("load SeaBIOS");
    let spec = ListenSpec::tcp("127.0.0.1", 0);
    let mut vm = Vm::start_on(
        backend,
        move |m| image.map(m).expect("map SeaBIOS"),
        CpuState::reset(),
        true,
        &spec,
        None,
    );
    let target = format!("127.0.0.1:{}", vm.port);
    let mut cmds = vec![
        "echo M-PC\\n",
        "p/x $pc",
        "echo M-CS\\n",
        "p/x $cs",
        "x/i $pc",
        "stepi",
        "echo M-PC\\n",
        "p/x $pc",
        "echo M-CS\\n",
        "p/x $cs",
        "x/i $pc",
    ];
    for _ in 0..8 {
        cmds.extend(["stepi", "echo M-STEP\\n", "p/x $pc"]);
    }
    // Kill rather than detach: this bare board has none of the devices SeaBIOS goes on to
    // program, so the guest is not left running.
    cmds.extend(["monitor info registers", "monitor accel", "kill"]);
    let out = run_gdb(&gdb, None, &target, &cmds, None).all();
    assert_eq!(
        marked_values(&out, "M-PC"),
        [0xFFFF_FFF0, 0xF_E05B],
        "reset vector, then the far jump into the BIOS segment: {out}"
    );
    assert_eq!(marked_values(&out, "M-CS"), [0xF000, 0xF000]);
    assert!(
        out.contains("ljmp   $0xf000,$0xe05b"),
        "16-bit disassembly: {out}"
    );
    let steps = marked_values(&out, "M-STEP");
    assert_eq!(steps.len(), 8, "{out}");
    assert!(
        steps.iter().all(|pc| (0xF_0000..0x10_0000).contains(pc)),
        "SeaBIOS's first instructions run in the F segment: {steps:x?}"
    );
    assert!(steps.windows(2).any(|w| w[0] != w[1]), "the CPU advanced");
    assert!(out.contains("real mode"), "{out}");
    assert!(out.contains(&format!("accelerator: {}", backend.name())));
    assert_eq!(vm.join(), RunEnd::Killed);
}

#[test]
fn x86_64_description_shows_system_registers_and_takes_writes() {
    let Some(gdb) = gdb_common::gdb() else { return };
    let (mut state, gdt) = flat32_state(0x1000, 0x2_0000, 0x7000);
    state.cr4 = 0x10;
    state.efer = 0x0;
    state.segments[4].base = 0x1234_5000; // FS
    let code = [0x90u8, 0x90, 0x90, 0xEB, 0xFB]; // nop; nop; nop; jmp back to start
    let spec = ListenSpec::tcp("127.0.0.1", 0);
    let vm = Vm::start_with(
        move |m| {
            m.write_phys(0x1000, &gdt).expect("gdt");
            m.write_phys(0x2_0000, &code).expect("code");
        },
        state,
        true,
        &spec,
        Some(RegLayout::X86_64),
    );
    let target = format!("127.0.0.1:{}", vm.port);
    let out = run_gdb(
        &gdb,
        None,
        &target,
        &[
            "echo M-RIP\\n",
            "p/x $rip",
            "echo M-CR0\\n",
            "p/x $cr0",
            "echo M-CR4\\n",
            "p/x $cr4",
            "echo M-FSBASE\\n",
            "p/x $fs_base",
            "echo M-EFER\\n",
            "p/x $efer",
            "set $r9 = 0x1122334455667788",
            "set $cr2 = 0xdead000",
            "stepi",
            "echo M-R9\\n",
            "p/x $r9",
            "echo M-CR2\\n",
            "p/x $cr2",
            "echo M-RIP\\n",
            "p/x $rip",
            "info registers eflags",
            "detach",
        ],
        None,
    )
    .all();
    assert_eq!(marked_values(&out, "M-RIP"), [0x2_0000, 0x2_0001]);
    assert_eq!(marked_values(&out, "M-CR0")[0] & 1, 1, "CR0.PE: {out}");
    assert_eq!(marked_values(&out, "M-CR4"), [0x10]);
    assert_eq!(marked_values(&out, "M-FSBASE"), [0x1234_5000]);
    assert_eq!(marked_values(&out, "M-EFER"), [0]);
    assert_eq!(marked_values(&out, "M-R9"), [0x1122_3344_5566_7788]);
    assert_eq!(marked_values(&out, "M-CR2"), [0xDEAD000]);
    assert!(out.contains("eflags "), "{out}");
    assert_eq!(vm.finish(), RunEnd::Stopped);
}

#[test]
fn unix_socket_transport() {
    let Some(gdb) = gdb_common::gdb() else { return };
    let dir = TempDir::new("unix");
    let sock = dir.path("gdb.sock");
    let (state, gdt) = flat32_state(0x1000, 0x2_0000, 0x7000);
    let vm = Vm::start_with(
        move |m| {
            m.write_phys(0x1000, &gdt).expect("gdt");
            m.write_phys(0x2_0000, &[0xEB, 0xFE]).expect("code");
        },
        state,
        true,
        &ListenSpec::unix(sock.clone()),
        None,
    );
    let target = sock.display().to_string();
    let out = run_gdb(
        &gdb,
        None,
        &target,
        &["echo M-PC\\n", "p/x $pc", "detach"],
        None,
    )
    .all();
    assert_eq!(marked_values(&out, "M-PC"), [0x2_0000], "{out}");
    assert_eq!(vm.finish(), RunEnd::Stopped);
}

#[test]
fn ctrl_c_stops_a_halted_guest() {
    let Some(gdb) = gdb_common::gdb() else { return };
    let (state, gdt) = flat32_state(0x1000, 0x2_0000, 0x7000);
    // cli; hlt; jmp back to the hlt: halted with interrupts off, forever.
    let code = [0xFAu8, 0xF4, 0xEB, 0xFD];
    let vm = Vm::start(
        move |m| {
            m.write_phys(0x1000, &gdt).expect("gdt");
            m.write_phys(0x2_0000, &code).expect("code");
        },
        state,
        true,
    );
    let target = format!("127.0.0.1:{}", vm.port);
    let out = run_gdb(
        &gdb,
        None,
        &target,
        &[
            "continue",
            "echo M-PC\\n",
            "p/x $pc",
            "monitor info registers",
            "detach",
        ],
        Some(std::time::Duration::from_millis(2500)),
    )
    .all();
    assert!(out.contains("SIGINT"), "{out}");
    assert_eq!(
        marked_values(&out, "M-PC"),
        [0x2_0002],
        "stopped after the HLT: {out}"
    );
    assert!(out.contains(", halted"), "{out}");
    assert_eq!(vm.finish(), RunEnd::Stopped);
}
