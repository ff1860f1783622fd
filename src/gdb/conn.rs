//! Transport for the gdb remote protocol: listening on TCP or a unix socket, a connection
//! gdbstub writes to, and a reader thread that frames incoming bytes.
//!
//! The reader thread checks each packet's framing and checksum before the stub sees it (GDB
//! manual, "Overview" of the remote protocol): a bad checksum is answered with `-`, bytes
//! outside a packet other than `+` and Ctrl-C (0x03) are dropped, and an oversized packet is
//! dropped — so line noise never ends a session. Every arrival also kicks the CPU so a
//! running guest stops promptly for Ctrl-C.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pcvm_core::Kicker;

use super::regs::RegLayout;

/// Largest packet body accepted; gdbstub announces the same `PacketSize` to gdb.
pub const MAX_PACKET: usize = 0x4000;

/// The socket to listen on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// `tcp:HOST:PORT` (`tcp::PORT` listens on localhost).
    Tcp { host: String, port: u16 },
    /// `unix:PATH`.
    Unix(PathBuf),
}

/// Where to listen and how to describe the CPU, parsed from `-gdb` / `-s`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    pub addr: ListenAddr,
    /// A register layout forced with `,arch=x86-64|i386|i8086`; `None` chooses by the CPU
    /// mode when gdb connects.
    pub layout: Option<RegLayout>,
}

impl ListenSpec {
    /// TCP at `host:port`, layout by CPU mode.
    pub fn tcp(host: &str, port: u16) -> Self {
        ListenSpec {
            addr: ListenAddr::Tcp {
                host: host.to_string(),
                port,
            },
            layout: None,
        }
    }

    /// A unix socket at `path`, layout by CPU mode.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        ListenSpec {
            addr: ListenAddr::Unix(path.into()),
            layout: None,
        }
    }

    /// Parse QEMU's spellings: `tcp::1234`, `tcp:HOST:PORT`, `unix:PATH` or a bare port,
    /// followed by options: `arch=x86-64|i386|i8086` (pcvm's), and QEMU's `server`,
    /// `wait=on|off`, `nowait`, which change nothing here.
    pub fn parse(s: &str) -> Result<Self> {
        let mut parts = s.split(',');
        let main = parts.next().unwrap_or("");
        let mut layout = None;
        for opt in parts {
            match opt.split_once('=') {
                Some(("arch", a)) => {
                    layout = Some(RegLayout::parse(a).with_context(|| {
                        format!("invalid gdb arch {a:?} in {s:?} (x86-64, i386 or i8086)")
                    })?)
                }
                Some(("server" | "wait", _)) => {}
                None if matches!(opt, "server" | "nowait") => {}
                _ => bail!("unknown gdb option {opt:?} in {s:?}"),
            }
        }
        let addr = if let Some(path) = main.strip_prefix("unix:") {
            if path.is_empty() {
                bail!("-gdb unix: needs a socket path");
            }
            ListenAddr::Unix(PathBuf::from(path))
        } else {
            let rest = main.strip_prefix("tcp:").unwrap_or(main);
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => ("", rest),
            };
            let port: u16 = port.parse().with_context(|| {
                format!(
                    "invalid gdb port in {s:?} (expected tcp::PORT, tcp:HOST:PORT or unix:PATH)"
                )
            })?;
            // No host means localhost: the stub has no authentication, so it is not offered
            // to other machines unless asked for by name (`tcp:0.0.0.0:1234`).
            let host = if host.is_empty() {
                "127.0.0.1".to_string()
            } else {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string()
            };
            ListenAddr::Tcp { host, port }
        };
        Ok(ListenSpec { addr, layout })
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Listener {
    /// Bind the socket.
    pub fn bind(addr: &ListenAddr) -> Result<Self> {
        match addr {
            ListenAddr::Tcp { host, port } => {
                let l = TcpListener::bind((host.as_str(), *port))
                    .with_context(|| format!("failed to listen for gdb on {host}:{port}"))?;
                Ok(Listener::Tcp(l))
            }
            ListenAddr::Unix(path) => {
                // A stale socket file from an earlier run would make bind fail.
                if std::fs::symlink_metadata(path)
                    .map(|m| {
                        use std::os::unix::fs::FileTypeExt;
                        m.file_type().is_socket()
                    })
                    .unwrap_or(false)
                {
                    let _ = std::fs::remove_file(path);
                }
                let l = UnixListener::bind(path).with_context(|| {
                    format!("failed to listen for gdb on unix socket {}", path.display())
                })?;
                Ok(Listener::Unix(l, path.clone()))
            }
        }
    }

    /// The TCP port bound (useful with port 0).
    pub fn tcp_port(&self) -> Option<u16> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| a.port()),
            Listener::Unix(..) => None,
        }
    }

    /// Accept a connection; with `wait` false, return `None` at once if nobody is connecting.
    pub fn accept(&self, wait: bool) -> Result<Option<Stream>> {
        let set = |nb: bool| -> std::io::Result<()> {
            match self {
                Listener::Tcp(l) => l.set_nonblocking(nb),
                Listener::Unix(l, _) => l.set_nonblocking(nb),
            }
        };
        set(!wait)?;
        let r = match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
        };
        match r {
            Ok(s) => {
                s.set_nonblocking(false)?;
                if let Stream::Tcp(t) = &s {
                    let _ = t.set_nodelay(true);
                }
                Ok(Some(s))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e).context("failed to accept a gdb connection"),
        }
    }
}

/// One accepted connection.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }
    fn set_nonblocking(&self, nb: bool) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(nb),
            Stream::Unix(s) => s.set_nonblocking(nb),
        }
    }
    /// Close both directions (ends the reader thread).
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// The stub's side of the connection: buffers each reply and writes it on flush.
pub struct Conn {
    stream: Stream,
    out: Vec<u8>,
}

impl Conn {
    fn new(stream: Stream) -> Self {
        Conn {
            stream,
            out: Vec::with_capacity(1024),
        }
    }
    /// Send raw bytes at once (a `-` for a damaged packet).
    pub fn send_raw(&mut self, b: &[u8]) {
        let _ = self.stream.write_all(b);
    }
    /// Close the connection.
    pub fn shutdown(&self) {
        self.stream.shutdown();
    }
}

impl gdbstub::conn::Connection for Conn {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        self.out.push(byte);
        Ok(())
    }
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.out.extend_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        let r = self.stream.write_all(&self.out);
        self.out.clear();
        r?;
        self.stream.flush()
    }
}

/// What the reader thread delivers.
#[derive(Debug)]
pub enum Incoming {
    /// One well-formed packet (`$...#xx`), an ack `+`, or Ctrl-C (`[0x03]`).
    Packet(Vec<u8>),
    /// A packet with a bad checksum or too long: answer `-`.
    Damaged,
    /// The peer closed the connection or it failed.
    Closed,
}

/// Reassembles packets from the byte stream, checking framing and checksums.
#[derive(Debug, Default)]
pub struct Framer {
    body: Option<Vec<u8>>,
    checksum: Vec<u8>,
    overflow: bool,
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

impl Framer {
    /// Feed one byte; returns a complete item when one ends.
    pub fn push(&mut self, b: u8) -> Option<Incoming> {
        let Some(body) = self.body.as_mut() else {
            return match b {
                b'$' => {
                    self.body = Some(Vec::new());
                    self.checksum.clear();
                    self.overflow = false;
                    None
                }
                b'+' | 0x03 => Some(Incoming::Packet(vec![b])),
                // `-` (a NAK for our last reply; gdbstub does not retransmit) and line noise.
                _ => None,
            };
        };
        if self.checksum.is_empty() {
            match b {
                b'#' => self.checksum.push(b),
                // A `$` inside a body (gdb escapes its own) means a new packet began: resync.
                b'$' => {
                    body.clear();
                    self.overflow = false;
                }
                _ if body.len() >= MAX_PACKET => self.overflow = true,
                _ => body.push(b),
            }
            return None;
        }
        self.checksum.push(b);
        if self.checksum.len() < 3 {
            return None;
        }
        let body = self.body.take().unwrap_or_default();
        let sum = body.iter().fold(0u8, |a, &x| a.wrapping_add(x));
        let given = match (hex(self.checksum[1]), hex(self.checksum[2])) {
            (Some(h), Some(l)) => Some(h << 4 | l),
            _ => None,
        };
        if self.overflow || given != Some(sum) {
            return Some(Incoming::Damaged);
        }
        let mut pkt = Vec::with_capacity(body.len() + 4);
        pkt.push(b'$');
        pkt.extend_from_slice(&body);
        pkt.push(b'#');
        pkt.extend_from_slice(&self.checksum[1..3]);
        Some(Incoming::Packet(pkt))
    }
}

/// The pieces of a started connection.
pub type Started = (
    Conn,
    Receiver<Incoming>,
    std::thread::JoinHandle<()>,
    Stream,
);

/// Split a stream into the stub's writer, a channel of framed input fed by a thread (which
/// kicks the CPU on every arrival), and a handle that closes the connection.
pub fn start(stream: Stream, kicker: Kicker) -> Result<Started> {
    stream.set_nonblocking(false)?;
    let mut reader = stream.try_clone()?;
    let closer = stream.try_clone()?;
    let (tx, rx): (Sender<Incoming>, Receiver<Incoming>) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("gdb-reader".into())
        .spawn(move || {
            let mut framer = Framer::default();
            let mut buf = [0u8; 4096];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Incoming::Closed);
                        kicker.kick();
                        return;
                    }
                    Ok(n) => n,
                };
                let mut any = false;
                for &b in &buf[..n] {
                    if let Some(item) = framer.push(b) {
                        any = true;
                        if tx.send(item).is_err() {
                            return;
                        }
                    }
                }
                if any {
                    kicker.kick();
                }
            }
        })
        .context("failed to start the gdb reader thread")?;
    Ok((Conn::new(stream), rx, handle, closer))
}

/// How long the session loop waits for gdb while the guest is stopped before re-checking.
pub const IDLE_POLL: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(f: &mut Framer, s: &[u8]) -> Vec<Incoming> {
        s.iter().filter_map(|&b| f.push(b)).collect()
    }

    #[test]
    fn frames_good_packets_and_flags_bad_checksums() {
        let mut f = Framer::default();
        let got = feed(&mut f, b"junk+$?#3f$g#00\x03$#00");
        let kinds: Vec<String> = got
            .iter()
            .map(|i| match i {
                Incoming::Packet(p) => String::from_utf8_lossy(p).into_owned(),
                Incoming::Damaged => "DAMAGED".into(),
                Incoming::Closed => "CLOSED".into(),
            })
            .collect();
        assert_eq!(kinds, ["+", "$?#3f", "DAMAGED", "\u{3}", "$#00"]);
    }

    #[test]
    fn oversized_packet_is_damaged_not_buffered_forever() {
        let mut f = Framer::default();
        let mut big = vec![b'$'];
        big.extend(std::iter::repeat_n(b'a', MAX_PACKET + 10));
        big.extend_from_slice(b"#00");
        let got = feed(&mut f, &big);
        assert!(matches!(got.as_slice(), [Incoming::Damaged]));
        assert!(matches!(
            feed(&mut f, b"$?#3f").as_slice(),
            [Incoming::Packet(_)]
        ));
    }

    #[test]
    fn listen_specs() {
        let p = |s| ListenSpec::parse(s).unwrap();
        assert_eq!(p("tcp::1234"), ListenSpec::tcp("127.0.0.1", 1234));
        assert_eq!(p("tcp:127.0.0.1:99"), ListenSpec::tcp("127.0.0.1", 99));
        assert_eq!(
            p("unix:/tmp/x.sock,server,wait=off"),
            ListenSpec::unix("/tmp/x.sock")
        );
        assert_eq!(p("4321"), ListenSpec::tcp("127.0.0.1", 4321));
        assert_eq!(p("tcp::1,arch=x86-64").layout, Some(RegLayout::X86_64));
        assert_eq!(p("tcp::1,nowait,arch=i8086").layout, Some(RegLayout::I8086));
        assert!(ListenSpec::parse("tcp::notaport").is_err());
        assert!(ListenSpec::parse("unix:").is_err());
        assert!(ListenSpec::parse("tcp::1,arch=arm").is_err());
        assert!(ListenSpec::parse("tcp::1,frob").is_err());
    }
}
