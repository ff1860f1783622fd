//! System control port A (port 0x92, "fast A20 and reset").
//!
//! Models (PIIX3 data sheet §4.7.x "Port 92h"; IBM PS/2 technical reference): bit 1 opens or
//! closes the A20 gate through [`GuestMemory::set_a20`]; a 0→1 transition of bit 0 pulses
//! the CPU reset line ([`SystemRequests::request_reset`]). Bit 0 reads 0 (the pulse is
//! over), bit 1 reads the A20 gate as the memory sees it (the i8042 output port may have moved
//! it), other bits read back as written. SeaBIOS uses only this port for A20, with a
//! read-modify-write (romlayout.S `transition32`).

use std::sync::Arc;

use pcvm_core::{BusAccess, BusDevice, GuestMemory, SystemRequests};

/// The port.
pub const PORT92: u16 = 0x92;
/// Bit 0: fast reset (pulse on 0→1).
pub const PORT92_RESET: u8 = 0b0000_0001;
/// Bit 1: A20 gate enabled.
pub const PORT92_A20: u8 = 0b0000_0010;

/// Port 0x92.
pub struct FastA20Port {
    /// Bits 2–7 as written.
    value: u8,
    /// The reset bit as last written (for edge detection).
    reset_bit: bool,
    memory: Arc<GuestMemory>,
    requests: SystemRequests,
}

impl FastA20Port {
    /// Port 0x92 driving `memory`'s A20 gate and raising resets on `requests`.
    pub fn new(memory: Arc<GuestMemory>, requests: SystemRequests) -> Self {
        FastA20Port {
            value: 0,
            reset_bit: false,
            memory,
            requests,
        }
    }

    /// Read the port.
    pub fn read_byte(&self) -> u8 {
        let a20 = if self.memory.a20_enabled() {
            PORT92_A20
        } else {
            0
        };
        self.value | a20
    }

    /// Write the port.
    pub fn write_byte(&mut self, v: u8) {
        self.memory.set_a20(v & PORT92_A20 != 0);
        let reset = v & PORT92_RESET != 0;
        if reset && !self.reset_bit {
            tracing::debug!("port 0x92: fast reset");
            self.requests.request_reset();
        }
        self.reset_bit = reset;
        self.value = v & !(PORT92_RESET | PORT92_A20);
    }
}

impl BusDevice for FastA20Port {
    fn name(&self) -> &str {
        "port92"
    }

    fn read(&mut self, _access: BusAccess, data: &mut [u8]) {
        data.fill(0xFF);
        if let Some(b) = data.first_mut() {
            *b = self.read_byte();
        }
    }

    fn write(&mut self, _access: BusAccess, data: &[u8]) {
        if let Some(&v) = data.first() {
            self.write_byte(v);
        }
    }

    fn reset(&mut self) {
        self.value = 0;
        self.reset_bit = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcvm_core::SystemRequest;

    #[test]
    fn a20_read_modify_write_and_reset_edge() {
        let mem = Arc::new(GuestMemory::pc(4 << 20).unwrap());
        let req = SystemRequests::new();
        let mut p = FastA20Port::new(mem.clone(), req.clone());
        // SeaBIOS set_a20(0): read-modify-write clears bit 1.
        let v = p.read_byte();
        assert_eq!(v & PORT92_A20, PORT92_A20, "A20 open at power-on");
        p.write_byte(v & !PORT92_A20);
        assert!(!mem.a20_enabled());
        assert_eq!(p.read_byte(), 0);
        p.write_byte(PORT92_A20);
        assert!(mem.a20_enabled());
        assert_eq!(req.take(), None);
        p.write_byte(PORT92_A20 | PORT92_RESET);
        assert_eq!(req.take(), Some(SystemRequest::Reset));
        assert_eq!(p.read_byte() & PORT92_RESET, 0, "bit 0 reads 0");
        p.write_byte(PORT92_A20 | PORT92_RESET);
        assert_eq!(req.take(), None, "no new edge");
        mem.set_a20(false);
        assert_eq!(
            p.read_byte() & PORT92_A20,
            0,
            "reads the gate as memory sees it"
        );
    }
}
