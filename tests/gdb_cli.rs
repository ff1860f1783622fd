//! The `pcvm` binary with its gdb options: `-S -gdb tcp:…` stops SeaBIOS at the reset vector
//! for gdb 13, which steps it and kills the machine; `-gdb unix:…,arch=x86-64` attaches to a
//! running machine with the 64-bit description and detaches, leaving it running until its
//! `--timeout`.

mod gdb_common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gdb_common::{marked_values, run_gdb, TempDir};

fn pcvm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pcvm"))
}

/// A TCP port free right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn freeze_at_reset_vector_step_and_kill() {
    let Some(gdb) = gdb_common::gdb() else { return };
    let Some(bios) = gdb_common::seabios() else {
        return;
    };
    let port = free_port();
    let mut child = pcvm()
        .arg("-bios")
        .arg(&bios)
        .args(["-display", "none", "-serial", "null", "-S"])
        .args(["-gdb", &format!("tcp:127.0.0.1:{port}")])
        .args(["--timeout", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pcvm");
    // gdb retries a refused TCP connection (`tcp auto-retry`) while pcvm starts listening.
    let out = run_gdb(
        &gdb,
        None,
        &format!("127.0.0.1:{port}"),
        &[
            "echo M-PC\\n",
            "p/x $pc",
            "stepi",
            "echo M-PC\\n",
            "p/x $pc",
            "echo M-CS\\n",
            "p/x $cs",
            "monitor accel",
            "kill",
        ],
        None,
    )
    .all();
    assert_eq!(
        marked_values(&out, "M-PC"),
        [0xFFFF_FFF0, 0xF_E05B],
        "{out}"
    );
    assert_eq!(marked_values(&out, "M-CS"), [0xF000]);
    // No --accel: `auto`, which is KVM only with hardware virtualization, else the JIT.
    let auto = if pcvm_accel_kvm::hardware_virtualization_available()
        && pcvm_accel_kvm::kvm_usable().is_ok()
    {
        "kvm"
    } else {
        "jit"
    };
    assert!(out.contains(&format!("accelerator: {auto}")), "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "pcvm did not exit after kill");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "kill ends pcvm like a quit");
}

#[test]
fn attach_over_unix_socket_and_detach() {
    let Some(gdb) = gdb_common::gdb() else { return };
    let Some(bios) = gdb_common::seabios() else {
        return;
    };
    let dir = TempDir::new("cli-unix");
    let sock = dir.path("pcvm-gdb.sock");
    let mut child = pcvm()
        .arg("-bios")
        .arg(&bios)
        .args(["-display", "none", "-serial", "null"])
        .arg("-gdb")
        .arg(format!("unix:{},arch=x86-64", sock.display()))
        .args(["--timeout", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pcvm");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "pcvm never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300)); // let SeaBIOS run a little
    let out = run_gdb(
        &gdb,
        None,
        &sock.display().to_string(),
        &[
            "echo M-PC\\n",
            "p/x $pc",
            "echo M-RIP\\n",
            "p/x $rip",
            "monitor info registers",
            "detach",
        ],
        None,
    )
    .all();
    let pc = marked_values(&out, "M-PC");
    assert_eq!(pc.len(), 1, "{out}");
    assert_ne!(pc[0], 0xFFFF_FFF0, "the machine ran before gdb attached");
    assert_eq!(
        marked_values(&out, "M-RIP"),
        pc,
        "arch=x86-64 gives the 64-bit registers"
    );
    assert!(out.contains("detached"), "{out}");
    // Detached, the machine runs on until its --timeout (exit status 124).
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "pcvm did not reach its timeout");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(124));
}
