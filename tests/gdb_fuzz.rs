//! Malformed input over a raw socket: random bytes, truncated packets, bad checksums, and
//! well-framed packets with random bodies. The stub answers, NAKs or drops the connection,
//! never panics or hangs, and the guest is unharmed: a fresh `?` still answers, EIP is in the
//! guest's loop, its code is unchanged, and after a detach the guest runs.

mod gdb_common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gdb_common::{flat32_state, Vm};
use pcvm::gdb::RunEnd;

const GDT: u64 = 0x1000;
const CODE: u64 = 0x1_0000;
const COUNTER: u64 = 0x9000;

/// xorshift64*: a small seeded generator, so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn packet(body: &[u8]) -> Vec<u8> {
    let sum = body.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    let mut p = vec![b'$'];
    p.extend_from_slice(body);
    p.extend_from_slice(format!("#{sum:02x}").as_bytes());
    p
}

/// Undo the protocol's run-length encoding: `X*N` repeats X (N − 29) more times.
fn unrle(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '*' {
            let n = it.next().map_or(0, |n| n as usize - 29);
            let last = out.chars().last().unwrap_or('0');
            out.extend(std::iter::repeat_n(last, n));
        } else {
            out.push(c);
        }
    }
    out
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    s
}

/// Everything the stub sends within `wait`, and whether it closed the connection.
fn drain(s: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// Send `body` as a packet and collect the reply until it contains `want`.
fn ask(s: &mut TcpStream, body: &[u8], want: &str) -> String {
    s.write_all(&packet(body)).expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = String::new();
    while Instant::now() < deadline {
        let (b, closed) = drain(s, Duration::from_millis(50));
        got.push_str(&String::from_utf8_lossy(&b));
        if got.contains(want) {
            return got;
        }
        assert!(
            !closed,
            "connection closed waiting for {want:?} after {:?}; got {got:?}",
            String::from_utf8_lossy(body)
        );
    }
    panic!(
        "no {want:?} in reply to {:?}: {got:?}",
        String::from_utf8_lossy(body)
    );
}

/// Packets a debugger really sends (some cut short below).
const REAL: &[&[u8]] = &[
    b"qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+",
    b"qXfer:features:read:target.xml:0,ffb",
    b"m10000,10",
    b"g",
    b"?",
    b"Hg0",
    b"qAttached",
    b"qRcmd,696e666f207265676973746572",
    b"z0,10000,1",
    b"qfThreadInfo",
];

/// First letters of packets that can only read or answer (no resume, write, kill, detach).
const SAFE_HEADS: &[u8] = b"mqQ?gpHTzjJ_yWbBwEe";

#[test]
fn random_and_truncated_packets_leave_the_guest_unharmed() {
    let seed = std::env::var("PCVM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_6DB5_u64);
    eprintln!("fuzz seed {seed:#x} (PCVM_FUZZ_SEED replays)");
    let mut rng = Rng(seed | 1);

    // The guest: an endless loop incrementing COUNTER, started paused.
    let mut a = iced_x86::code_asm::CodeAssembler::new(32).expect("asm");
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.inc(iced_x86::code_asm::dword_ptr(COUNTER as u32))
        .unwrap();
    a.jmp(top).unwrap();
    let code = a.assemble(CODE).expect("assemble");
    let (state, gdt) = flat32_state(GDT, CODE as u32, 0x7000);
    let code2 = code.clone();
    let vm = Vm::start(
        move |m| {
            m.write_phys(GDT, &gdt).expect("gdt");
            m.write_phys(CODE, &code2).expect("code");
        },
        state,
        true,
    );

    let mut s = connect(vm.port);
    ask(&mut s, b"?", "05");
    let mut drops = 0;
    let mut answered = 0;
    for round in 0..400 {
        let mut bytes = Vec::new();
        match rng.below(5) {
            0 => {
                // Line noise.
                for _ in 0..1 + rng.below(64) {
                    bytes.push(rng.next() as u8);
                }
            }
            1 => {
                // A real packet cut short, then noise.
                let p = packet(REAL[rng.below(REAL.len() as u64) as usize]);
                let cut = rng.below(p.len() as u64) as usize;
                bytes.extend_from_slice(&p[..cut]);
            }
            2 => {
                // A real packet with a wrong checksum.
                let mut p = packet(REAL[rng.below(REAL.len() as u64) as usize]);
                let n = p.len();
                p[n - 1] = if p[n - 1] == b'0' { b'1' } else { b'0' };
                bytes = p;
            }
            3 => {
                // Well framed, random body behind a harmless command letter.
                let mut body = vec![SAFE_HEADS[rng.below(SAFE_HEADS.len() as u64) as usize]];
                for _ in 0..rng.below(40) {
                    let b = 0x20 + rng.below(0x5F) as u8;
                    if !matches!(b, b'$' | b'#' | b'}' | b'*') {
                        body.push(b);
                    }
                }
                bytes = packet(&body);
            }
            _ => {
                // A real packet, intact.
                bytes = packet(REAL[rng.below(REAL.len() as u64) as usize]);
            }
        }
        if s.write_all(&bytes).is_err() {
            drops += 1;
            s = connect(vm.port);
            continue;
        }
        let (reply, closed) = drain(&mut s, Duration::from_millis(15));
        if !reply.is_empty() {
            answered += 1;
        }
        if closed {
            drops += 1;
            s = connect(vm.port);
        }
        assert!(
            !vm.handle.as_ref().expect("running").is_finished(),
            "machine loop ended at round {round}"
        );
    }
    eprintln!("fuzz: {answered} replies, {drops} dropped connections");
    assert!(answered > 50, "the stub kept answering ({answered})");

    // A clean session still works and the guest is exactly where it was.
    drop(s);
    let mut s = connect(vm.port);
    let _ = drain(&mut s, Duration::from_millis(50));
    ask(&mut s, b"?", "05");
    let regs = ask(&mut s, b"g", "#");
    let body = unrle(
        regs.split('$')
            .nth(1)
            .and_then(|r| r.split('#').next())
            .expect("reply"),
    );
    // i386 layout: EAX..EDI (8 × 4 bytes), then EIP.
    let eip_hex = &body[64..72];
    let eip = u32::from_str_radix(eip_hex, 16).expect("hex").swap_bytes();
    // A dropped connection lets the guest run on (as a detach does), so EIP is somewhere in
    // its loop, and nothing else changed.
    assert!(
        (CODE..CODE + code.len() as u64).contains(&u64::from(eip)),
        "EIP {eip:#x} inside the guest's loop: {regs}"
    );
    let mut now = vec![0u8; code.len()];
    vm.memory.read_phys(CODE, &mut now).expect("read");
    assert_eq!(now, code, "code unchanged");
    let before = vm.read_u32(COUNTER);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(vm.read_u32(COUNTER), before, "stopped while attached");
    ask(&mut s, b"D", "$OK");
    std::thread::sleep(Duration::from_millis(200));
    assert!(vm.read_u32(COUNTER) > before, "the guest runs after detach");
    assert_eq!(vm.finish(), RunEnd::Stopped);
}
