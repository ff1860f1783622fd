//! The POST diagnostic port 0x80.
//!
//! Firmware writes progress codes here (a POST card shows them on a real board). Each code is
//! logged at debug level and the last one is kept for the monitor and for crash reports.
//! Reads return all-ones, as on a board without a POST card. Guests also write this port just
//! to delay ("outb %al, $0x80"), so logging stays at debug level.

use pcvm_core::{BusAccess, BusDevice};

/// The port.
pub const POST_PORT: u16 = 0x80;

/// Port 0x80.
#[derive(Debug, Default)]
pub struct PostCodePort {
    last: Option<u8>,
    count: u64,
}

impl PostCodePort {
    /// A port that has seen no code yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last code written.
    pub fn last_code(&self) -> Option<u8> {
        self.last
    }

    /// How many codes were written.
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl BusDevice for PostCodePort {
    fn name(&self) -> &str {
        "post"
    }

    fn read(&mut self, _access: BusAccess, data: &mut [u8]) {
        data.fill(0xFF);
    }

    fn write(&mut self, _access: BusAccess, data: &[u8]) {
        if let Some(&code) = data.first() {
            tracing::debug!("POST code {code:#04x}");
            self.last = Some(code);
            self.count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_code() {
        let mut p = PostCodePort::new();
        assert_eq!(p.last_code(), None);
        let a = BusAccess {
            offset: 0,
            addr: 0x80,
        };
        p.write(a, &[0x12]);
        p.write(a, &[0x34, 0x00]);
        assert_eq!(p.last_code(), Some(0x34));
        assert_eq!(p.count(), 2);
        let mut b = [0];
        p.read(a, &mut b);
        assert_eq!(b, [0xFF]);
        p.write(a, &[]);
        assert_eq!(p.count(), 2);
    }
}
