//! The APM power-off port: writing the string "Shutdown" to port 0x8900 turns the machine off.
//!
//! Bochs introduced the port and SeaBIOS's APM BIOS (apm.c, function 5307h "set power state:
//! off") writes the string there, so a guest that powers off through APM, and pcvm's built-in
//! guest, end the run with status 0 rather than a debug-exit code.

use pcvm_core::{BusAccess, BusDevice, SystemRequests};

/// The port.
pub const APM_SHUTDOWN_PORT: u16 = 0x8900;
/// The string that powers off.
pub const SHUTDOWN: &[u8] = b"Shutdown";

/// Collects bytes written to port 0x8900 and powers off on "Shutdown".
pub struct ApmShutdownPort {
    matched: usize,
    requests: SystemRequests,
}

impl ApmShutdownPort {
    /// A port that raises power-off through `requests`.
    pub fn new(requests: SystemRequests) -> Self {
        ApmShutdownPort {
            matched: 0,
            requests,
        }
    }

    fn write_byte(&mut self, b: u8) {
        if SHUTDOWN.get(self.matched) == Some(&b) {
            self.matched += 1;
        } else {
            self.matched = usize::from(b == SHUTDOWN[0]);
        }
        if self.matched == SHUTDOWN.len() {
            self.matched = 0;
            tracing::info!("APM power-off requested through port 0x8900");
            self.requests.request_power_off(0);
        }
    }
}

impl BusDevice for ApmShutdownPort {
    fn name(&self) -> &str {
        "apm-shutdown"
    }

    fn read(&mut self, _access: BusAccess, data: &mut [u8]) {
        data.fill(0xFF);
    }

    fn write(&mut self, _access: BusAccess, data: &[u8]) {
        // Only byte writes carry characters (OUTB); wider writes restart the match.
        match data {
            [b] => self.write_byte(*b),
            _ => self.matched = 0,
        }
    }

    fn reset(&mut self) {
        self.matched = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcvm_core::SystemRequest;

    fn out(p: &mut ApmShutdownPort, s: &[u8]) {
        for &b in s {
            p.write(
                BusAccess {
                    offset: 0,
                    addr: u64::from(APM_SHUTDOWN_PORT),
                },
                &[b],
            );
        }
    }

    #[test]
    fn shutdown_string_powers_off() {
        let r = SystemRequests::new();
        let mut p = ApmShutdownPort::new(r.clone());
        out(&mut p, b"ShutShutdow");
        assert_eq!(r.take(), None);
        out(&mut p, b"n");
        assert_eq!(r.take(), Some(SystemRequest::PowerOff(0)));
        out(&mut p, b"Standby");
        assert_eq!(r.take(), None);
    }
}
