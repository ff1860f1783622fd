//! Host input reaches the guest through COM1: a mini-ROM echoes each received byte plus one
//! back over a TCP-connected serial port and powers off at a newline.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{tiny_bios, TempDir};
use iced_x86::code_asm::*;
use pcvm::machine::{CharSpec, Exit, Machine, MachineConfig};

#[test]
fn com1_receives_host_input_over_tcp() {
    let rom = tiny_bios(|a| {
        let mut poll = a.create_label();
        let mut done = a.create_label();
        a.set_label(&mut poll)?;
        a.mov(dx, 0x3FDu32)?;
        a.in_(al, dx)?;
        a.test(al, 1)?; // LSR data ready
        a.jz(poll)?;
        a.mov(dx, 0x3F8u32)?;
        a.in_(al, dx)?;
        a.cmp(al, u32::from(b'\n'))?;
        a.je(done)?;
        a.inc(al)?;
        a.out(dx, al)?;
        a.jmp(poll)?;
        a.set_label(&mut done)?;
        a.mov(dx, 0x8900u32)?;
        for c in b"Shutdown" {
            a.mov(al, u32::from(*c))?;
            a.out(dx, al)?;
        }
        a.hlt()
    });
    let dir = TempDir::new("serial-input");
    let bios = dir.path("bios.bin");
    std::fs::write(&bios, rom).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = MachineConfig {
        bios: Some(bios),
        serials: vec![CharSpec::Tcp {
            host: "127.0.0.1".into(),
            port,
            server: false,
            wait: false,
        }],
        timeout: Some(Duration::from_secs(60)),
        ..MachineConfig::default()
    };
    let mut m = Machine::new(config).expect("build machine");
    let (mut peer, _) = listener.accept().unwrap();
    peer.write_all(b"HAL\n").unwrap();
    let exit = m.run().expect("run");
    assert_eq!(exit, Exit::PowerOff(0));
    drop(m);
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = [0u8; 3];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"IBM");
}
