//! The built-in guest in-process: it powers off cleanly, and with the instruction-count clock
//! its output (benchmark included) is the same on every run.

use pcvm::console::CaptureBuffer;
use pcvm::machine::{CharSpec, Exit, Machine, MachineConfig};

fn run(icount_ns: Option<u64>) -> (Exit, String) {
    let serial = CaptureBuffer::new();
    let config = MachineConfig {
        serials: vec![CharSpec::Capture(serial.clone())],
        icount_ns,
        timeout: Some(std::time::Duration::from_secs(120)),
        ..MachineConfig::default()
    };
    let mut m = Machine::new(config).expect("build machine");
    let exit = m.run().expect("run");
    (exit, serial.text())
}

#[test]
fn demo_guest_is_deterministic_under_icount() {
    let (exit, out) = run(Some(10));
    assert_eq!(exit, Exit::PowerOff(0), "{out}");
    assert!(out.contains("paging: ok"), "{out}");
    // 10 ns per instruction is 100 MIPS; the loop's timer reads cost a little.
    let mips: f64 = out
        .split(" ms = ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no MIPS figure in {out}"));
    assert!((99.0..=100.0).contains(&mips), "{mips} MIPS in {out}");
    let (exit2, out2) = run(Some(10));
    assert_eq!(exit2, exit);
    assert_eq!(out2, out, "icount runs must be identical");
}

#[test]
fn demo_guest_reports_cpu_facts() {
    let (exit, out) = run(None);
    assert_eq!(exit, Exit::PowerOff(0), "{out}");
    for needle in [
        "real mode",
        "protected mode",
        "CPU: ",
        "family ",
        "features:",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in {out}");
    }
}
