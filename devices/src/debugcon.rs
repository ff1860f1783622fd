//! QEMU's isa-debugcon: a port whose writes go straight to a host output.
//!
//! Any byte written to the port (0x402 by default, as SeaBIOS's QEMU build uses; Bochs used
//! 0xE9) is written to the output. Reads return the readback value 0xE9: SeaBIOS checks for
//! it (hw/serialio.c `qemu_debug_preinit`) and turns its debug output off otherwise.

use std::io::Write;

use pcvm_core::{BusAccess, BusDevice};

/// The default port.
pub const DEBUGCON_PORT: u16 = 0x402;
/// What reads return (QEMU's default `readback`).
pub const DEBUGCON_READBACK: u8 = 0xE9;

/// The debug console port.
pub struct DebugCon {
    out: Box<dyn Write + Send>,
    failed: bool,
}

impl DebugCon {
    /// A debug console writing to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        DebugCon { out, failed: false }
    }

    /// Flush the output (the machine calls this on exit).
    pub fn flush(&mut self) -> crate::Result<()> {
        self.out.flush().map_err(|source| crate::Error::Output {
            device: "debugcon",
            source,
        })
    }
}

impl BusDevice for DebugCon {
    fn name(&self) -> &str {
        "isa-debugcon"
    }

    fn read(&mut self, _access: BusAccess, data: &mut [u8]) {
        data.fill(DEBUGCON_READBACK);
    }

    fn write(&mut self, _access: BusAccess, data: &[u8]) {
        if self.failed {
            return;
        }
        // A multi-byte OUT writes its bytes in order, like QEMU's per-byte handling.
        let result = self.out.write_all(data).and_then(|()| {
            if data.contains(&b'\n') {
                self.out.flush()
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            tracing::warn!("isa-debugcon: output failed, further output dropped: {e}");
            self.failed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("closed"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_pass_through_and_reads_e9() {
        let buf = SharedBuf::default();
        let mut d = DebugCon::new(Box::new(buf.clone()));
        let a = BusAccess {
            offset: 0,
            addr: 0x402,
        };
        let mut b = [0];
        d.read(a, &mut b);
        assert_eq!(b, [0xE9]);
        for &c in b"SeaBIOS\n" {
            d.write(a, &[c]);
        }
        d.flush().unwrap();
        assert_eq!(&*buf.0.lock().unwrap(), b"SeaBIOS\n");
        let mut broken = DebugCon::new(Box::new(Broken));
        broken.write(a, b"x");
        broken.write(a, b"y");
        assert!(broken.failed);
    }
}
