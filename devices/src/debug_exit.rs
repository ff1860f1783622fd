//! QEMU's isa-debug-exit: a port that powers the machine off with a chosen exit status.
//!
//! A write of value `v` (the access's bytes, little-endian, at most `iosize` of them) asks for
//! power-off with exit status `(v << 1) | 1`, as QEMU does, so a test guest can report
//! pass/fail through the VMM's exit code (`-device isa-debug-exit,iobase=0xf4,iosize=4`).
//! Reads return all-ones.

use pcvm_core::{BusAccess, BusDevice, SystemRequests};

/// QEMU's usual port.
pub const DEBUG_EXIT_PORT: u16 = 0xF4;
/// QEMU's default size (in ports).
pub const DEBUG_EXIT_SIZE: u64 = 4;

/// The debug-exit port.
#[derive(Debug)]
pub struct DebugExit {
    requests: SystemRequests,
}

impl DebugExit {
    /// A debug-exit device raising power-off requests on `requests`.
    pub fn new(requests: SystemRequests) -> Self {
        DebugExit { requests }
    }

    /// The exit status a write of `value` produces.
    pub fn exit_status(value: u32) -> i32 {
        ((value << 1) | 1) as i32
    }
}

impl BusDevice for DebugExit {
    fn name(&self) -> &str {
        "isa-debug-exit"
    }

    fn read(&mut self, _access: BusAccess, data: &mut [u8]) {
        data.fill(0xFF);
    }

    fn write(&mut self, _access: BusAccess, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut bytes = [0u8; 4];
        for (d, s) in bytes.iter_mut().zip(data) {
            *d = *s;
        }
        let value = u32::from_le_bytes(bytes);
        let status = Self::exit_status(value);
        tracing::debug!(value, status, "isa-debug-exit: power off");
        self.requests.request_power_off(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcvm_core::SystemRequest;

    #[test]
    fn exit_status_is_value_shifted_or_one() {
        let req = SystemRequests::new();
        let mut d = DebugExit::new(req.clone());
        let a = BusAccess {
            offset: 0,
            addr: 0xF4,
        };
        d.write(a, &[0x10]);
        assert_eq!(req.take(), Some(SystemRequest::PowerOff(0x21)));
        d.write(a, &[0x00]);
        assert_eq!(req.take(), Some(SystemRequest::PowerOff(1)));
        d.write(a, &0x1234u16.to_le_bytes());
        assert_eq!(req.take(), Some(SystemRequest::PowerOff(0x2469)));
        d.write(a, &u32::MAX.to_le_bytes());
        assert_eq!(req.take(), Some(SystemRequest::PowerOff(-1)));
        d.write(a, &[]);
        assert_eq!(req.take(), None);
        let mut b = [0u8; 4];
        d.read(a, &mut b);
        assert_eq!(b, [0xFF; 4]);
    }
}
