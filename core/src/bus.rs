//! Port-I/O and MMIO buses over one checked range map.
//!
//! A device is registered for one or more address ranges and sees accesses as (offset within
//! the range, bytes). Reads that hit no device return all-ones, decided here once for every
//! device model user.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::{Error, Result};

/// Where an access landed: the offset into the device's range and the absolute address (so a
/// device registered at several ranges, like the PIC pair at 0x20 and 0xA0, can tell them apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusAccess {
    /// Offset from the start of the range the device was registered at.
    pub offset: u64,
    /// Absolute port or physical address.
    pub addr: u64,
}

/// A device on the port-I/O or MMIO bus.
///
/// Device logic is host-agnostic: interrupts go out through an injected [`crate::IrqLine`],
/// time comes from an injected [`crate::VirtualClock`], output through `std::io::Write`.
pub trait BusDevice: Send {
    /// Name shown in logs and the monitor.
    fn name(&self) -> &str;
    /// Read `data.len()` bytes (1, 2, 4 or 8) at `access`.
    fn read(&mut self, access: BusAccess, data: &mut [u8]);
    /// Write `data` at `access`.
    fn write(&mut self, access: BusAccess, data: &[u8]);
    /// Return to the power-on state.
    fn reset(&mut self) {}
}

/// A device shared between the bus (possibly at several ranges) and whoever else drives it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct Range {
    len: u64,
    device: SharedDevice,
    name: String,
}

/// A bus: non-overlapping address ranges, each routed to a device.
#[derive(Clone, Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Range>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for (base, r) in &self.ranges {
            l.entry(&format_args!("{:#x}+{:#x} {}", base, r.len, r.name));
        }
        l.finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Route [base, base+len) to `device`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<()> {
        let name = device
            .lock()
            .map(|d| d.name().to_string())
            .unwrap_or_else(|_| "<poisoned>".into());
        if len == 0 || base.checked_add(len - 1).is_none() {
            return Err(Error::BusRange { base, len, name });
        }
        let end = base + (len - 1);
        if let Some((&b, r)) = self.ranges.range(..=end).next_back() {
            if b + (r.len - 1) >= base {
                return Err(Error::BusOverlap {
                    base,
                    len,
                    name,
                    other: r.name.clone(),
                });
            }
        }
        self.ranges.insert(base, Range { len, device, name });
        Ok(())
    }

    /// Remove the range starting at `base` (for BAR remapping).
    pub fn remove(&mut self, base: u64) -> Option<SharedDevice> {
        self.ranges.remove(&base).map(|r| r.device)
    }

    /// The device and offset an access at `addr` of `len` bytes reaches; accesses straddling a
    /// range end are not routed.
    fn lookup(&self, addr: u64, len: usize) -> Option<(&Range, u64)> {
        let (&base, r) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset.checked_add(len as u64)? <= r.len).then_some((r, offset))
    }

    /// A device claims `addr`.
    pub fn contains(&self, addr: u64) -> bool {
        self.lookup(addr, 1).is_some()
    }

    /// Read; unclaimed addresses read all-ones. Returns whether a device answered.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.lookup(addr, data.len()) {
            Some((r, offset)) => {
                match r.device.lock() {
                    Ok(mut d) => d.read(BusAccess { offset, addr }, data),
                    Err(_) => data.fill(0xFF),
                }
                true
            }
            None => {
                data.fill(0xFF);
                false
            }
        }
    }

    /// Write; unclaimed addresses drop the write. Returns whether a device took it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.lookup(addr, data.len()) {
            Some((r, offset)) => {
                if let Ok(mut d) = r.device.lock() {
                    d.write(BusAccess { offset, addr }, data);
                }
                true
            }
            None => false,
        }
    }

    /// Reset every device once (a device at several ranges is reset once).
    pub fn reset_all(&self) {
        let mut seen: Vec<*const ()> = Vec::new();
        for r in self.ranges.values() {
            let id = Arc::as_ptr(&r.device) as *const ();
            if !seen.contains(&id) {
                seen.push(id);
                if let Ok(mut d) = r.device.lock() {
                    d.reset();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(Vec<u8>);
    impl BusDevice for Scratch {
        fn name(&self) -> &str {
            "scratch"
        }
        fn read(&mut self, a: BusAccess, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.0[a.offset as usize + i];
            }
        }
        fn write(&mut self, a: BusAccess, data: &[u8]) {
            self.0[a.offset as usize..a.offset as usize + data.len()].copy_from_slice(data);
        }
    }

    #[test]
    fn routes_and_rejects_overlaps() {
        let dev: SharedDevice = Arc::new(Mutex::new(Scratch(vec![0; 8])));
        let mut bus = Bus::new();
        bus.insert(0x70, 8, dev.clone()).unwrap();
        assert!(bus.insert(0x77, 1, dev.clone()).is_err());
        assert!(bus.insert(0x6F, 2, dev.clone()).is_err());
        assert!(bus.insert(0, 0, dev.clone()).is_err());
        bus.insert(0x78, 1, dev.clone()).unwrap();
        assert!(bus.write(0x72, &[0xAB, 0xCD]));
        let mut b = [0u8; 2];
        assert!(bus.read(0x72, &mut b));
        assert_eq!(b, [0xAB, 0xCD]);
        assert!(!bus.read(0x60, &mut b));
        assert_eq!(b, [0xFF, 0xFF]);
        assert!(!bus.read(0x77, &mut b), "straddles the range end");
        assert!(bus.insert(u64::MAX, 2, dev).is_err());
    }
}
