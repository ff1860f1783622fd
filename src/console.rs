//! Host ends of the guest's character devices (UARTs, debug console): the terminal, files,
//! TCP and unix sockets, or an in-memory capture for tests.
//!
//! Opening a [`CharSpec`] gives a writer for guest output and an [`InputSlot`]; once the device
//! that consumes input exists, the machine attaches a sink to the slot and bytes read from the
//! host (stdin, a socket peer) flow into it from a reader thread.

use std::io::{IsTerminal, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

/// Where a character device's host end goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CharSpec {
    /// The terminal: output to stdout, input from stdin.
    Stdio,
    /// Discard output, no input.
    Null,
    /// Write output to a file (truncated at start).
    File(PathBuf),
    /// A TCP socket: listen (`server`) or connect.
    Tcp {
        host: String,
        port: u16,
        server: bool,
        /// With `server`, wait for the first client before the guest starts.
        wait: bool,
    },
    /// A unix socket: listen (`server`) or connect.
    Unix {
        path: PathBuf,
        server: bool,
        wait: bool,
    },
    /// Keep output in memory (tests).
    Capture(CaptureBuffer),
}

/// Output kept in memory, shared with whoever reads it (tests).
#[derive(Clone, Default)]
pub struct CaptureBuffer(Arc<Mutex<Vec<u8>>>);

impl CaptureBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }
    /// Everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
    /// Everything written so far, as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.contents()).into_owned()
    }
    /// The output contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.text().contains(needle)
    }
}

impl std::fmt::Debug for CaptureBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.0.lock().map(|v| v.len()).unwrap_or(0);
        write!(f, "CaptureBuffer({len} bytes)")
    }
}

impl PartialEq for CaptureBuffer {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for CaptureBuffer {}

impl Write for CaptureBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where host input for a device goes once the device exists.
pub type InputSink = Box<dyn FnMut(&[u8]) + Send>;

/// A slot a reader thread feeds; input arriving before a sink is attached is dropped.
#[derive(Clone, Default)]
pub struct InputSlot(Arc<Mutex<Option<InputSink>>>);

impl InputSlot {
    /// Route input to `sink`.
    pub fn attach(&self, sink: InputSink) {
        if let Ok(mut s) = self.0.lock() {
            *s = Some(sink);
        }
    }
    fn deliver(&self, bytes: &[u8]) {
        if let Ok(mut s) = self.0.lock() {
            if let Some(sink) = s.as_mut() {
                sink(bytes);
            }
        }
    }
}

/// Called when the user asks to quit from the terminal (Ctrl-C, or Ctrl-A x as in QEMU).
pub type QuitHook = Arc<dyn Fn() + Send + Sync>;

/// Shared context for opening character devices: stdin can feed only one device.
#[derive(Default)]
pub struct Consoles {
    stdin_taken: bool,
    stdin_slot: Option<InputSlot>,
    terminal: Option<TerminalGuard>,
}

/// An opened character device.
pub struct OpenedChar {
    /// Guest output goes here.
    pub output: Box<dyn Write + Send>,
    /// Host input arrives here (attach a sink to receive it).
    pub input: InputSlot,
}

impl Consoles {
    /// No device opened yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Open `spec`; `wants_input` says the device can take input (a UART, not debugcon).
    pub fn open(&mut self, spec: &CharSpec, wants_input: bool) -> Result<OpenedChar> {
        let input = InputSlot::default();
        let output: Box<dyn Write + Send> = match spec {
            CharSpec::Null => Box::new(std::io::sink()),
            CharSpec::Capture(buf) => Box::new(buf.clone()),
            CharSpec::File(path) => Box::new(
                std::fs::File::create(path)
                    .with_context(|| format!("failed to create {}", path.display()))?,
            ),
            CharSpec::Stdio => {
                if wants_input && !self.stdin_taken {
                    self.stdin_taken = true;
                    self.stdin_slot = Some(input.clone());
                }
                Box::new(StdoutWriter)
            }
            CharSpec::Tcp {
                host,
                port,
                server,
                wait,
            } => {
                let addr = format!("{host}:{port}");
                let shared = SharedStream::default();
                if *server {
                    let listener = TcpListener::bind(&addr)
                        .with_context(|| format!("failed to listen on tcp:{addr}"))?;
                    let accept = move || {
                        listener
                            .accept()
                            .map(|(s, _)| -> Box<dyn ReadWrite> { Box::new(s) })
                    };
                    serve(accept, &shared, &input, *wait, &format!("tcp:{addr}"))?;
                } else {
                    let s = TcpStream::connect(&addr)
                        .with_context(|| format!("failed to connect to tcp:{addr}"))?;
                    shared.connect(Box::new(s), &input)?;
                }
                Box::new(shared)
            }
            CharSpec::Unix { path, server, wait } => {
                let shared = SharedStream::default();
                let name = format!("unix:{}", path.display());
                if *server {
                    let _ = std::fs::remove_file(path);
                    let listener = UnixListener::bind(path)
                        .with_context(|| format!("failed to listen on {name}"))?;
                    let accept = move || {
                        listener
                            .accept()
                            .map(|(s, _)| -> Box<dyn ReadWrite> { Box::new(s) })
                    };
                    serve(accept, &shared, &input, *wait, &name)?;
                } else {
                    let s = UnixStream::connect(path)
                        .with_context(|| format!("failed to connect to {name}"))?;
                    shared.connect(Box::new(s), &input)?;
                }
                Box::new(shared)
            }
        };
        Ok(OpenedChar { output, input })
    }

    /// Take stdin for a device other than a serial port (the keyboard of the text display);
    /// `None` if a serial port already has it.
    pub fn claim_stdin(&mut self) -> Option<InputSlot> {
        if self.stdin_taken {
            return None;
        }
        self.stdin_taken = true;
        let slot = InputSlot::default();
        self.stdin_slot = Some(slot.clone());
        Some(slot)
    }

    /// Start reading stdin for the device that took it. On a terminal the input is switched to
    /// unbuffered, unechoed mode (restored on drop); Ctrl-C or Ctrl-A x calls `quit`, and
    /// Ctrl-A Ctrl-A sends a Ctrl-A.
    pub fn start_stdin(&mut self, quit: QuitHook) {
        let Some(slot) = self.stdin_slot.take() else {
            return;
        };
        let terminal = std::io::stdin().is_terminal();
        if terminal {
            self.terminal = TerminalGuard::raw();
        }
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || stdin_loop(slot, terminal, quit))
            .ok();
    }
}

fn stdin_loop(slot: InputSlot, terminal: bool, quit: QuitHook) {
    const CTRL_A: u8 = 0x01;
    const CTRL_C: u8 = 0x03;
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 256];
    let mut escape = false;
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !terminal {
            slot.deliver(&buf[..n]);
            continue;
        }
        let mut out = Vec::with_capacity(n);
        for &b in &buf[..n] {
            if escape {
                escape = false;
                match b {
                    b'x' | b'X' => {
                        quit();
                        return;
                    }
                    CTRL_A => out.push(CTRL_A),
                    _ => out.push(b),
                }
            } else if b == CTRL_A {
                escape = true;
            } else if b == CTRL_C {
                quit();
                return;
            } else {
                out.push(b);
            }
        }
        slot.deliver(&out);
    }
}

/// Restores the terminal's settings when dropped.
pub struct TerminalGuard {
    saved: String,
}

impl TerminalGuard {
    /// Put the terminal on stdin into unbuffered, unechoed mode without signal keys; `None` if
    /// `stty` is unavailable.
    fn raw() -> Option<Self> {
        let saved = Command::new("stty")
            .arg("-g")
            .stdin(Stdio::inherit())
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        let saved = String::from_utf8_lossy(&saved.stdout).trim().to_string();
        let ok = Command::new("stty")
            .args([
                "-icanon", "-echo", "-isig", "-ixon", "min", "1", "time", "0",
            ])
            .stdin(Stdio::inherit())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(TerminalGuard { saved })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = Command::new("stty")
            .arg(&self.saved)
            .stdin(Stdio::inherit())
            .status();
    }
}

/// Guest output to stdout, flushed at every write so the console is live.
struct StdoutWriter;

impl Write for StdoutWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

/// A socket that is both read and written.
trait ReadWrite: Read + Write + Send {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn ReadWrite>>;
}

impl ReadWrite for TcpStream {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn ReadWrite>> {
        Ok(Box::new(self.try_clone()?))
    }
}

impl ReadWrite for UnixStream {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn ReadWrite>> {
        Ok(Box::new(self.try_clone()?))
    }
}

/// Output to the currently connected peer, dropped while none is connected (as QEMU's
/// `nowait` server does).
#[derive(Clone, Default)]
struct SharedStream {
    peer: Arc<Mutex<Option<Box<dyn ReadWrite>>>>,
    connected: Arc<AtomicBool>,
}

impl SharedStream {
    /// Make `stream` the peer and start reading its input into `input`.
    fn connect(&self, stream: Box<dyn ReadWrite>, input: &InputSlot) -> std::io::Result<()> {
        let mut reader = stream.try_clone_box()?;
        if let Ok(mut p) = self.peer.lock() {
            *p = Some(stream);
        }
        self.connected.store(true, Ordering::Release);
        let input = input.clone();
        let me = self.clone();
        std::thread::Builder::new()
            .name("chardev-socket".into())
            .spawn(move || {
                let mut buf = [0u8; 256];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => input.deliver(&buf[..n]),
                    }
                }
                me.disconnect();
            })?;
        Ok(())
    }

    fn disconnect(&self) {
        if let Ok(mut p) = self.peer.lock() {
            *p = None;
        }
        self.connected.store(false, Ordering::Release);
    }
}

impl Write for SharedStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut p) = self.peer.lock() {
            if let Some(s) = p.as_mut() {
                if s.write_all(buf).is_err() {
                    *p = None;
                }
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Accept clients on a listening socket: the first one synchronously when `wait`, and every
/// later one (after the previous disconnects) on a background thread.
fn serve<F>(
    mut accept: F,
    shared: &SharedStream,
    input: &InputSlot,
    wait: bool,
    name: &str,
) -> Result<()>
where
    F: FnMut() -> std::io::Result<Box<dyn ReadWrite>> + Send + 'static,
{
    if wait {
        eprintln!("pcvm: waiting for a connection on {name}");
        let s = accept().with_context(|| format!("failed to accept on {name}"))?;
        shared
            .connect(s, input)
            .with_context(|| format!("failed to use the connection on {name}"))?;
    }
    let shared = shared.clone();
    let input = input.clone();
    std::thread::Builder::new()
        .name("chardev-accept".into())
        .spawn(move || loop {
            while shared.connected.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            match accept() {
                Ok(s) => {
                    if shared.connect(s, &input).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        })
        .context("failed to start the socket accept thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn capture_and_file() {
        let mut c = Consoles::new();
        let buf = CaptureBuffer::new();
        let mut o = c.open(&CharSpec::Capture(buf.clone()), true).unwrap();
        o.output.write_all(b"hello").unwrap();
        assert!(buf.contains("hello"));

        let dir = std::env::temp_dir().join(format!("pcvm-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.txt");
        let mut o = c.open(&CharSpec::File(path.clone()), false).unwrap();
        o.output.write_all(b"abc").unwrap();
        drop(o);
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tcp_server_nowait_carries_both_directions() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut c = Consoles::new();
        let spec = CharSpec::Tcp {
            host: "127.0.0.1".into(),
            port,
            server: true,
            wait: false,
        };
        let mut o = c.open(&spec, true).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        o.input
            .attach(Box::new(move |b| g.lock().unwrap().extend_from_slice(b)));
        // Output before a client connects is dropped, not an error.
        o.output.write_all(b"lost\n").unwrap();
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // Wait for the server side to take the connection.
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(5) {
            o.output.write_all(b"hi\n").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            if got.lock().unwrap().is_empty() {
                client.write_all(b"k").unwrap();
            } else {
                break;
            }
        }
        let mut line = String::new();
        std::io::BufReader::new(client.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "hi\n");
        assert!(got.lock().unwrap().starts_with(b"k"));
    }
}
