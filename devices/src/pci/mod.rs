//! PCI: configuration mechanism #1, a bus of functions, and the config-space model they share.
//!
//! - [`PciDevice`]: what a PCI function is to the bus (a 256-byte type-0 configuration space,
//!   BARs, and accesses that hit those BARs). Separate from [`pcvm_core::BusDevice`]: a function
//!   may also sit on the port or MMIO bus at fixed legacy addresses (IDE, VGA).
//! - [`PciConfigSpace`]: the register file with per-byte write masks, write-1-to-clear status
//!   bits and standard BAR sizing (PCI Local Bus Specification 3.0 §6.2.5).
//! - [`PciBus`]: bus 0, functions by (device, function).
//! - [`PciConfigPorts`]: configuration mechanism #1 at 0xCF8/0xCFC (PCI 3.0 §3.2.2.3.2), which
//!   also forwards byte accesses at 0xCF9 to the PIIX3 reset control register.
//! - [`PciMmioWindow`] / [`PciIoWindow`]: the host bridge forwarding the PCI hole to whichever
//!   function's BAR decodes an address (so BARs can move without touching the core buses).
//! - [`i440fx`]: the host bridge (PAM, SMRAM); [`piix`]: the PIIX3 ISA bridge and IDE function.
//!
//! Only bus 0 and type-0 headers exist; 64-bit BARs, capabilities and MSI are not modelled.
//!
//! # Wiring a PC (what the machine registers)
//!
//! | device | port / MMIO ranges | IRQ | PCI |
//! |---|---|---|---|
//! | [`PciConfigPorts`] | 0xCF8 len 8 (0xCF9 → reset control) | – | – |
//! | [`i440fx::I440fx`] | – | – | 00:00.0 |
//! | [`piix::Piix3IsaBridge`] | – | – | 00:01.0 |
//! | [`piix::Piix3Ide`] + [`crate::ide::IdeController`] | [`crate::ide::IdeController::PORT_RANGES`] | 14, 15 | 00:01.1 |
//! | [`crate::vga::Vga`] | [`crate::vga::Vga::PORT_RANGES`], MMIO 0xA0000 len 0x20000 | – | 00:02.0 |
//! | [`PciMmioWindow`] | MMIO `below_4g`..0xFEC0_0000 (BARs, the VGA ROM) | – | – |
//! | [`PciIoWindow`] | ports 0xC000..0x10000 (I/O BARs) | – | – |
//!
//! A device that is both on a bus and on PCI (the VGA) is one `Arc<Mutex<Vga>>` coerced to
//! both `SharedDevice` and [`SharedPciDevice`]. The IDE function is
//! [`piix::Piix3Ide::with_controller`] over the controller's `Arc`, so BAR4 (placed by the
//! firmware in the [`PciIoWindow`]) reaches the bus-master registers; DMA needs
//! [`crate::ide::IdeController::set_dma_memory`]. Lock order is always bus → PCI bus →
//! function → IDE controller → interrupt line.

pub mod i440fx;
pub mod piix;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use pcvm_core::{BusAccess, BusDevice};
use serde::{Deserialize, Serialize};

use crate::reset_control::ResetControl;
use crate::{Error, Result};

/// Vendor ID register (PCI 3.0 §6.2.1).
pub const PCI_VENDOR_ID: usize = 0x00;
/// Device ID register.
pub const PCI_DEVICE_ID: usize = 0x02;
/// Command register.
pub const PCI_COMMAND: usize = 0x04;
/// Status register.
pub const PCI_STATUS: usize = 0x06;
/// Revision ID register.
pub const PCI_REVISION_ID: usize = 0x08;
/// Programming interface byte of the class code.
pub const PCI_CLASS_PROG: usize = 0x09;
/// Cache line size register.
pub const PCI_CACHE_LINE_SIZE: usize = 0x0C;
/// Latency timer register.
pub const PCI_LATENCY_TIMER: usize = 0x0D;
/// Header type register (bit 7: multifunction).
pub const PCI_HEADER_TYPE: usize = 0x0E;
/// First base address register.
pub const PCI_BASE_ADDRESS_0: usize = 0x10;
/// Subsystem vendor ID register.
pub const PCI_SUBSYSTEM_VENDOR_ID: usize = 0x2C;
/// Subsystem ID register.
pub const PCI_SUBSYSTEM_ID: usize = 0x2E;
/// Expansion ROM base address register.
pub const PCI_ROM_ADDRESS: usize = 0x30;
/// Interrupt line register (written by firmware, read by drivers).
pub const PCI_INTERRUPT_LINE: usize = 0x3C;
/// Interrupt pin register (1 = INTA#).
pub const PCI_INTERRUPT_PIN: usize = 0x3D;

/// Command: respond to I/O space accesses.
pub const PCI_COMMAND_IO: u16 = 0b0000_0001;
/// Command: respond to memory space accesses.
pub const PCI_COMMAND_MEMORY: u16 = 0b0000_0010;
/// Command: may act as bus master.
pub const PCI_COMMAND_MASTER: u16 = 0b0000_0100;
/// Header type bit 7: the device has functions 1–7.
pub const PCI_HEADER_MULTIFUNCTION: u8 = 0x80;
/// BAR bit 0: I/O space indicator.
pub const PCI_BAR_IO: u32 = 0x1;
/// Memory BAR bit 3: prefetchable.
pub const PCI_BAR_MEM_PREFETCH: u32 = 0x8;
/// Expansion ROM BAR bit 0: address decode enable.
pub const PCI_ROM_ENABLE: u32 = 0x1;
/// Index of the expansion ROM in [`BarInfo::index`] and the BAR callbacks.
pub const ROM_BAR: usize = 6;

/// Bits of the command register a guest may change: I/O, memory, bus master, parity error
/// response, SERR#, interrupt disable.
const COMMAND_WRITABLE: u16 = 0x0547;
/// Status bits that are write-1-to-clear (PCI 3.0 §6.2.3): parity, SERR, aborts, master parity.
const STATUS_W1C: u16 = 0xF900;

/// What a base address register decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// I/O space.
    Io,
    /// 32-bit memory space.
    Memory32 {
        /// Reads have no side effects (bit 3).
        prefetchable: bool,
    },
    /// The expansion ROM (config offset 0x30).
    Rom,
}

/// A BAR as currently programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarInfo {
    /// 0–5, or [`ROM_BAR`].
    pub index: usize,
    /// What it decodes.
    pub kind: BarKind,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// Base address the guest programmed.
    pub address: u64,
    /// The function decodes it now (command bit and, for the ROM, its enable bit; address ≠ 0).
    pub enabled: bool,
}

impl BarInfo {
    /// `addr` falls inside this BAR while it is enabled; returns the offset into it.
    pub fn offset_of(&self, addr: u64) -> Option<u64> {
        let off = addr.checked_sub(self.address)?;
        (self.enabled && off < self.size).then_some(off)
    }
}

#[derive(Clone, Copy, Debug)]
struct BarDef {
    kind: BarKind,
    size: u32,
}

/// The guest-visible bytes of a configuration space, for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciConfigState {
    /// The 256 bytes.
    pub bytes: Vec<u8>,
}

/// The configuration mechanism and every function's configuration space, for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciHostState {
    /// CONFIG_ADDRESS.
    pub address: u32,
    /// (device, function, configuration) of each function present.
    pub functions: Vec<(u8, u8, PciConfigState)>,
}

/// A function's 256-byte type-0 configuration space.
///
/// Every byte has a write mask (read-only by default) and a write-1-to-clear mask; BARs get the
/// masks that make the standard sizing probe (write all-ones, read back) return their size.
/// [`PciConfigSpace::reset`] returns to the values set up by the constructor and `set_*` calls.
#[derive(Clone)]
pub struct PciConfigSpace {
    data: [u8; 256],
    initial: [u8; 256],
    wmask: [u8; 256],
    w1cmask: [u8; 256],
    bars: [Option<BarDef>; 7],
}

impl std::fmt::Debug for PciConfigSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciConfigSpace")
            .field(
                "vendor",
                &format_args!("{:#06x}", self.u16_at(PCI_VENDOR_ID)),
            )
            .field(
                "device",
                &format_args!("{:#06x}", self.u16_at(PCI_DEVICE_ID)),
            )
            .finish_non_exhaustive()
    }
}

impl PciConfigSpace {
    /// A configuration space with the identity registers set, the standard writable registers
    /// (command, status W1C, cache line, latency timer, interrupt line) and no BARs.
    /// `class` is base class, subclass and programming interface as one 24-bit value.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8) -> Self {
        let mut c = PciConfigSpace {
            data: [0; 256],
            initial: [0; 256],
            wmask: [0; 256],
            w1cmask: [0; 256],
            bars: [None; 7],
        };
        c.set_u16(PCI_VENDOR_ID, vendor);
        c.set_u16(PCI_DEVICE_ID, device);
        c.set_u8(PCI_REVISION_ID, revision);
        c.set_u8(PCI_CLASS_PROG, class as u8);
        c.set_u16(PCI_CLASS_PROG + 1, (class >> 8) as u16);
        c.set_writable(PCI_COMMAND, &COMMAND_WRITABLE.to_le_bytes());
        c.w1cmask[PCI_STATUS..PCI_STATUS + 2].copy_from_slice(&STATUS_W1C.to_le_bytes());
        c.set_writable(PCI_CACHE_LINE_SIZE, &[0xFF, 0xFF]);
        c.set_writable(PCI_INTERRUPT_LINE, &[0xFF]);
        c
    }

    /// Set a byte's initial value (ignores write masks).
    pub fn set_u8(&mut self, offset: usize, value: u8) {
        self.set_bytes(offset, &[value]);
    }

    /// Set a word's initial value (ignores write masks).
    pub fn set_u16(&mut self, offset: usize, value: u16) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    /// Set a dword's initial value (ignores write masks).
    pub fn set_u32(&mut self, offset: usize, value: u32) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    fn set_bytes(&mut self, offset: usize, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            if let Some(slot) = self.data.get_mut(offset + i) {
                *slot = b;
                self.initial[offset + i] = b;
            }
        }
    }

    /// Make bytes from `offset` guest-writable with the given per-byte masks.
    pub fn set_writable(&mut self, offset: usize, masks: &[u8]) {
        for (i, &m) in masks.iter().enumerate() {
            if let Some(slot) = self.wmask.get_mut(offset + i) {
                *slot = m;
            }
        }
    }

    /// Set the subsystem vendor and ID (QEMU gives every device 1AF4:1100).
    pub fn set_subsystem(&mut self, vendor: u16, id: u16) {
        self.set_u16(PCI_SUBSYSTEM_VENDOR_ID, vendor);
        self.set_u16(PCI_SUBSYSTEM_ID, id);
    }

    /// Declare BAR `index` (0–5 or [`ROM_BAR`]) of `size` bytes, rounded up to a power of two
    /// and to the minimum the kind allows (4 bytes for I/O, 16 for memory, 2 KiB for the ROM).
    /// A BAR index that does not fit its kind is ignored.
    pub fn add_bar(&mut self, index: usize, kind: BarKind, size: u32) {
        let (reg, min, low_bits, low_mask) = match (kind, index) {
            (BarKind::Rom, ROM_BAR) => (PCI_ROM_ADDRESS, 0x800u32, 0u32, PCI_ROM_ENABLE),
            (BarKind::Io, 0..=5) => (PCI_BASE_ADDRESS_0 + 4 * index, 4, PCI_BAR_IO, 0),
            (BarKind::Memory32 { prefetchable }, 0..=5) => (
                PCI_BASE_ADDRESS_0 + 4 * index,
                16,
                if prefetchable {
                    PCI_BAR_MEM_PREFETCH
                } else {
                    0
                },
                0,
            ),
            _ => return,
        };
        let size = size.max(min).checked_next_power_of_two().unwrap_or(1 << 31);
        self.bars[index] = Some(BarDef { kind, size });
        self.set_u32(reg, low_bits);
        self.set_writable(reg, &((!(size - 1)) | low_mask).to_le_bytes());
    }

    /// Store a byte as the guest wrote it, after device-specific rules (not a power-on value).
    pub fn set_guest_u8(&mut self, offset: usize, value: u8) {
        if let Some(slot) = self.data.get_mut(offset) {
            *slot = value;
        }
    }

    /// Restore the power-on values.
    pub fn reset(&mut self) {
        self.data = self.initial;
    }

    /// The current bytes (for debugging and snapshots).
    pub fn bytes(&self) -> &[u8; 256] {
        &self.data
    }

    /// The guest-visible state, for snapshots.
    pub fn state(&self) -> PciConfigState {
        PciConfigState {
            bytes: self.data.to_vec(),
        }
    }

    /// Restore a snapshot (a short one restores only its bytes).
    pub fn set_state(&mut self, state: &PciConfigState) {
        let n = state.bytes.len().min(256);
        self.data[..n].copy_from_slice(&state.bytes[..n]);
    }

    /// Read `data.len()` bytes at `offset`; bytes beyond 0xFF read all-ones.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.data.get(offset + i).copied().unwrap_or(0xFF);
        }
    }

    /// A guest write: only writable bits change; W1C bits clear where a one is written.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let Some(slot) = self.data.get_mut(offset + i) else {
                continue;
            };
            let w = self.wmask[offset + i];
            let c = self.w1cmask[offset + i];
            *slot = ((*slot & !w) | (v & w)) & !(v & c);
        }
    }

    /// A little-endian byte at `offset` (0xFF past the end).
    pub fn u8_at(&self, offset: usize) -> u8 {
        self.data.get(offset).copied().unwrap_or(0xFF)
    }

    /// A little-endian word at `offset`.
    pub fn u16_at(&self, offset: usize) -> u16 {
        let mut b = [0u8; 2];
        self.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    /// A little-endian dword at `offset`.
    pub fn u32_at(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        self.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.u16_at(PCI_COMMAND)
    }

    /// BAR `index` as programmed, if the function has it.
    pub fn bar(&self, index: usize) -> Option<BarInfo> {
        let def = (*self.bars.get(index)?)?;
        let command = self.command();
        let (address, enabled) = match def.kind {
            BarKind::Rom => {
                let raw = self.u32_at(PCI_ROM_ADDRESS);
                (
                    u64::from(raw & !0x7FF),
                    raw & PCI_ROM_ENABLE != 0 && command & PCI_COMMAND_MEMORY != 0,
                )
            }
            BarKind::Io => (
                u64::from(self.u32_at(PCI_BASE_ADDRESS_0 + 4 * index) & !0x3),
                command & PCI_COMMAND_IO != 0,
            ),
            BarKind::Memory32 { .. } => (
                u64::from(self.u32_at(PCI_BASE_ADDRESS_0 + 4 * index) & !0xF),
                command & PCI_COMMAND_MEMORY != 0,
            ),
        };
        Some(BarInfo {
            index,
            kind: def.kind,
            size: u64::from(def.size),
            address,
            enabled: enabled && address != 0,
        })
    }

    /// All BARs the function has, as programmed.
    pub fn bars(&self) -> Vec<BarInfo> {
        (0..7).filter_map(|i| self.bar(i)).collect()
    }
}

/// A PCI function as the bus sees it.
///
/// Config accesses never cross a dword boundary and `offset + data.len() <= 256`.
pub trait PciDevice: Send {
    /// Name shown in logs.
    fn name(&self) -> &str;
    /// The configuration space.
    fn config(&self) -> &PciConfigSpace;
    /// The configuration space, mutably.
    fn config_mut(&mut self) -> &mut PciConfigSpace;
    /// A configuration read (override for registers with read side effects).
    fn read_config(&mut self, offset: usize, data: &mut [u8]) {
        self.config().read(offset, data);
    }
    /// A configuration write (override for registers with side effects, like PAM).
    fn write_config(&mut self, offset: usize, data: &[u8]) {
        self.config_mut().write(offset, data);
    }
    /// A read that hit BAR `bar` at `offset` (memory or I/O); unbacked BARs read all-ones.
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        let _ = (bar, offset);
        data.fill(0xFF);
    }
    /// A write that hit BAR `bar` at `offset`; dropped unless the function decodes it.
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        let _ = (bar, offset, data);
    }
    /// Return to the power-on state.
    fn reset(&mut self) {
        self.config_mut().reset();
    }
    /// Restore a configuration snapshot (override to re-apply side effects such as PAM).
    fn set_config_state(&mut self, state: &PciConfigState) {
        self.config_mut().set_state(state);
    }
}

/// A PCI function shared between the bus and whoever else drives it.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// PCI bus 0: functions by (device 0–31, function 0–7).
#[derive(Default)]
pub struct PciBus {
    functions: BTreeMap<(u8, u8), SharedPciDevice>,
}

impl std::fmt::Debug for PciBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.functions
                    .keys()
                    .map(|(d, f)| format!("00:{d:02x}.{f}")),
            )
            .finish()
    }
}

impl PciBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Plug `function` in at 00:`device`.`func`.
    pub fn add(&mut self, device: u8, func: u8, function: SharedPciDevice) -> Result<()> {
        if device > 31 || func > 7 {
            return Err(Error::Config {
                device: "pci",
                reason: format!("slot {device:#x}.{func} is outside 0..=31.0..=7"),
            });
        }
        if self.functions.contains_key(&(device, func)) {
            return Err(Error::Config {
                device: "pci",
                reason: format!("slot 00:{device:02x}.{func} is already in use"),
            });
        }
        self.functions.insert((device, func), function);
        Ok(())
    }

    /// The function at 00:`device`.`func`.
    pub fn get(&self, device: u8, func: u8) -> Option<&SharedPciDevice> {
        self.functions.get(&(device, func))
    }

    /// Every (device, function) present, in order.
    pub fn slots(&self) -> Vec<(u8, u8)> {
        self.functions.keys().copied().collect()
    }

    /// A configuration read; absent functions and other buses read all-ones.
    pub fn config_read(&self, bus: u8, device: u8, func: u8, offset: usize, data: &mut [u8]) {
        data.fill(0xFF);
        if bus != 0 || offset + data.len() > 256 {
            return;
        }
        if let Some(f) = self.functions.get(&(device, func)) {
            if let Ok(mut f) = f.lock() {
                f.read_config(offset, data);
            }
        }
    }

    /// A configuration write; absent functions drop it.
    pub fn config_write(&self, bus: u8, device: u8, func: u8, offset: usize, data: &[u8]) {
        if bus != 0 || offset + data.len() > 256 {
            return;
        }
        if let Some(f) = self.functions.get(&(device, func)) {
            if let Ok(mut f) = f.lock() {
                f.write_config(offset, data);
            }
        }
    }

    /// Send an access to the function whose enabled BAR of the given space decodes `addr`.
    fn dispatch(
        &self,
        io: bool,
        addr: u64,
        access: &mut dyn FnMut(&mut dyn PciDevice, usize, u64),
    ) -> bool {
        for f in self.functions.values() {
            let Ok(mut f) = f.lock() else { continue };
            let hit = f.config().bars().into_iter().find_map(|b| {
                let is_io = b.kind == BarKind::Io;
                (is_io == io).then(|| b.offset_of(addr).map(|o| (b.index, o)))?
            });
            if let Some((bar, offset)) = hit {
                access(&mut *f, bar, offset);
                return true;
            }
        }
        false
    }

    /// A memory read in the PCI hole; nothing decoding it reads all-ones.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        data.fill(0xFF);
        self.dispatch(false, addr, &mut |f, bar, off| f.bar_read(bar, off, data))
    }

    /// A memory write in the PCI hole.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        self.dispatch(false, addr, &mut |f, bar, off| f.bar_write(bar, off, data))
    }

    /// An I/O read that may hit an I/O BAR.
    pub fn io_read(&self, port: u64, data: &mut [u8]) -> bool {
        data.fill(0xFF);
        self.dispatch(true, port, &mut |f, bar, off| f.bar_read(bar, off, data))
    }

    /// An I/O write that may hit an I/O BAR.
    pub fn io_write(&self, port: u64, data: &[u8]) -> bool {
        self.dispatch(true, port, &mut |f, bar, off| f.bar_write(bar, off, data))
    }

    /// Reset every function.
    pub fn reset(&self) {
        for f in self.functions.values() {
            if let Ok(mut f) = f.lock() {
                f.reset();
            }
        }
    }
}

/// Configuration mechanism #1 (PCI 3.0 §3.2.2.3.2): CONFIG_ADDRESS at 0xCF8 (dword accesses
/// only), CONFIG_DATA at 0xCFC–0xCFF; register at 0xCF8 with length 8.
///
/// Byte accesses at 0xCF9 go to the PIIX3 reset control register when one is attached
/// (PIIX3 datasheet §4.1.3 "RC"), since the two share the range.
pub struct PciConfigPorts {
    address: u32,
    bus: Arc<Mutex<PciBus>>,
    reset_control: Option<Arc<Mutex<ResetControl>>>,
}

impl PciConfigPorts {
    /// First port of the range.
    pub const BASE: u16 = 0xCF8;
    /// Length of the range (0xCF8–0xCFF).
    pub const LEN: u64 = 8;
    /// CONFIG_ADDRESS bit 31: the data port reaches configuration space.
    pub const ENABLE: u32 = 0x8000_0000;

    /// Config ports over `bus`, with 0xCF9 byte accesses sent to `reset_control`.
    pub fn new(bus: Arc<Mutex<PciBus>>, reset_control: Option<Arc<Mutex<ResetControl>>>) -> Self {
        PciConfigPorts {
            address: 0,
            bus,
            reset_control,
        }
    }

    /// The bus behind the ports.
    pub fn bus(&self) -> &Arc<Mutex<PciBus>> {
        &self.bus
    }

    /// CONFIG_ADDRESS and every function's configuration space, for snapshots.
    pub fn state(&self) -> PciHostState {
        let mut functions = Vec::new();
        if let Ok(bus) = self.bus.lock() {
            for ((dev, func), f) in &bus.functions {
                if let Ok(f) = f.lock() {
                    functions.push((*dev, *func, f.config().state()));
                }
            }
        }
        PciHostState {
            address: self.address,
            functions,
        }
    }

    /// Restore a snapshot; functions not present now are skipped.
    pub fn set_state(&mut self, state: &PciHostState) {
        self.address = state.address;
        if let Ok(bus) = self.bus.lock() {
            for (dev, func, cfg) in &state.functions {
                if let Some(Ok(mut f)) = bus.get(*dev, *func).map(|f| f.lock()) {
                    f.set_config_state(cfg);
                }
            }
        }
    }

    /// Decode CONFIG_ADDRESS into (bus, device, function, register) if enabled.
    fn target(&self) -> Option<(u8, u8, u8, usize)> {
        let a = self.address;
        (a & Self::ENABLE != 0).then_some((
            (a >> 16) as u8,
            ((a >> 11) & 0x1F) as u8,
            ((a >> 8) & 0x7) as u8,
            (a & 0xFC) as usize,
        ))
    }
}

impl BusDevice for PciConfigPorts {
    fn name(&self) -> &str {
        "pci-config"
    }

    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        data.fill(0xFF);
        let off = access.offset as usize;
        match off {
            1 if data.len() == 1 && self.reset_control.is_some() => {
                if let Some(Ok(mut rc)) = self.reset_control.as_ref().map(|r| r.lock()) {
                    data[0] = rc.read_byte();
                }
            }
            0..=3 => {
                let bytes = self.address.to_le_bytes();
                for (i, b) in data.iter_mut().enumerate() {
                    *b = bytes.get(off + i).copied().unwrap_or(0xFF);
                }
            }
            4..=7 => {
                if let (Some((bus, dev, func, reg)), Ok(pci)) = (self.target(), self.bus.lock()) {
                    pci.config_read(bus, dev, func, reg + (off - 4), data);
                }
            }
            _ => {}
        }
    }

    fn write(&mut self, access: BusAccess, data: &[u8]) {
        let off = access.offset as usize;
        match off {
            0 if data.len() == 4 => {
                self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            1 if data.len() == 1 => {
                if let Some(Ok(mut rc)) = self.reset_control.as_ref().map(|r| r.lock()) {
                    rc.write_byte(data[0]);
                }
            }
            4..=7 => {
                if let (Some((bus, dev, func, reg)), Ok(pci)) = (self.target(), self.bus.lock()) {
                    pci.config_write(bus, dev, func, reg + (off - 4), data);
                }
            }
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.address = 0;
        if let Ok(bus) = self.bus.lock() {
            bus.reset();
        }
    }
}

/// The host bridge's forwarding of the 32-bit PCI memory hole to function BARs; register it on
/// the MMIO bus over the hole (e.g. `below_4g`..0xFEC0_0000). Undecoded reads are all-ones.
pub struct PciMmioWindow {
    bus: Arc<Mutex<PciBus>>,
}

impl PciMmioWindow {
    /// A window onto `bus`.
    pub fn new(bus: Arc<Mutex<PciBus>>) -> Self {
        PciMmioWindow { bus }
    }
}

impl BusDevice for PciMmioWindow {
    fn name(&self) -> &str {
        "pci-mmio"
    }
    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        data.fill(0xFF);
        if let Ok(bus) = self.bus.lock() {
            bus.mmio_read(access.addr, data);
        }
    }
    fn write(&mut self, access: BusAccess, data: &[u8]) {
        if let Ok(bus) = self.bus.lock() {
            bus.mmio_write(access.addr, data);
        }
    }
}

/// The forwarding of an I/O port range (SeaBIOS assigns I/O BARs from 0xC000) to function
/// I/O BARs; register it on the port bus over that range.
pub struct PciIoWindow {
    bus: Arc<Mutex<PciBus>>,
}

impl PciIoWindow {
    /// Where SeaBIOS starts its I/O BAR allocations when they total under 16 KiB.
    pub const SEABIOS_BASE: u16 = 0xC000;

    /// A window onto `bus`.
    pub fn new(bus: Arc<Mutex<PciBus>>) -> Self {
        PciIoWindow { bus }
    }
}

impl BusDevice for PciIoWindow {
    fn name(&self) -> &str {
        "pci-io"
    }
    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        data.fill(0xFF);
        if let Ok(bus) = self.bus.lock() {
            bus.io_read(access.addr, data);
        }
    }
    fn write(&mut self, access: BusAccess, data: &[u8]) {
        if let Ok(bus) = self.bus.lock() {
            bus.io_write(access.addr, data);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A bare function for bus tests.
    pub(crate) struct Plain(pub PciConfigSpace, pub Vec<u8>);
    impl PciDevice for Plain {
        fn name(&self) -> &str {
            "plain"
        }
        fn config(&self) -> &PciConfigSpace {
            &self.0
        }
        fn config_mut(&mut self) -> &mut PciConfigSpace {
            &mut self.0
        }
        fn bar_read(&mut self, _bar: usize, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.1.get(offset as usize + i).copied().unwrap_or(0xFF);
            }
        }
        fn bar_write(&mut self, _bar: usize, offset: u64, data: &[u8]) {
            for (i, &b) in data.iter().enumerate() {
                if let Some(s) = self.1.get_mut(offset as usize + i) {
                    *s = b;
                }
            }
        }
    }

    /// Config ports over a bus, for tests of individual functions.
    pub(crate) struct Cfg(pub PciConfigPorts);
    impl Cfg {
        pub(crate) fn new(bus: PciBus) -> Self {
            Cfg(PciConfigPorts::new(Arc::new(Mutex::new(bus)), None))
        }
        fn at(off: u64) -> BusAccess {
            BusAccess {
                offset: off,
                addr: 0xCF8 + off,
            }
        }
        pub(crate) fn select(&mut self, dev: u8, func: u8, reg: u8) {
            let a = 0x8000_0000
                | (u32::from(dev) << 11)
                | (u32::from(func) << 8)
                | u32::from(reg & 0xFC);
            self.0.write(Self::at(0), &a.to_le_bytes());
        }
        pub(crate) fn read(&mut self, dev: u8, func: u8, reg: u8, len: usize) -> u32 {
            self.select(dev, func, reg);
            let mut b = [0u8; 4];
            self.0.read(Self::at(4 + u64::from(reg & 3)), &mut b[..len]);
            u32::from_le_bytes(b)
        }
        pub(crate) fn write(&mut self, dev: u8, func: u8, reg: u8, len: usize, v: u32) {
            self.select(dev, func, reg);
            self.0
                .write(Self::at(4 + u64::from(reg & 3)), &v.to_le_bytes()[..len]);
        }
    }

    fn plain_bus() -> (Cfg, Arc<Mutex<Plain>>) {
        let mut c = PciConfigSpace::new(0x1234, 0x5678, 0x0C0330, 1);
        c.add_bar(0, BarKind::Memory32 { prefetchable: true }, 0x100_0000);
        c.add_bar(1, BarKind::Io, 0x10);
        c.add_bar(ROM_BAR, BarKind::Rom, 0x9000);
        let dev = Arc::new(Mutex::new(Plain(c, vec![0xAB; 0x100])));
        let mut bus = PciBus::new();
        bus.add(3, 0, dev.clone()).unwrap();
        assert!(bus.add(3, 0, dev.clone()).is_err(), "slot in use");
        assert!(bus.add(32, 0, dev.clone()).is_err(), "no device 32");
        (Cfg::new(bus), dev)
    }

    #[test]
    fn address_register_reads_back_dword_writes_only() {
        let (mut cfg, _) = plain_bus();
        let at = |o| BusAccess {
            offset: o,
            addr: 0xCF8 + o,
        };
        cfg.0.write(at(0), &0x8000_0000u32.to_le_bytes());
        let mut b = [0u8; 4];
        cfg.0.read(at(0), &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x8000_0000);
        cfg.0.write(at(0), &[0x12, 0x34]);
        cfg.0.read(at(0), &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x8000_0000, "word writes ignored");
    }

    #[test]
    fn vendor_device_and_absent_functions() {
        let (mut cfg, _) = plain_bus();
        assert_eq!(cfg.read(3, 0, 0, 4), 0x5678_1234);
        assert_eq!(cfg.read(3, 0, 2, 2), 0x5678);
        assert_eq!(cfg.read(3, 0, 0x0B, 1), 0x0C);
        assert_eq!(cfg.read(3, 0, 0x0A, 2), 0x0C03);
        assert_eq!(cfg.read(4, 0, 0, 4), 0xFFFF_FFFF);
        assert_eq!(cfg.read(3, 1, 0, 2), 0xFFFF);
        // Bus 1 does not exist.
        cfg.0.write(
            BusAccess {
                offset: 0,
                addr: 0xCF8,
            },
            &(0x8001_1800u32).to_le_bytes(),
        );
        let mut b = [0u8; 4];
        cfg.0.read(
            BusAccess {
                offset: 4,
                addr: 0xCFC,
            },
            &mut b,
        );
        assert_eq!(b, [0xFF; 4]);
        // Enable bit clear: no configuration cycle.
        cfg.0.write(
            BusAccess {
                offset: 0,
                addr: 0xCF8,
            },
            &(0x1800u32).to_le_bytes(),
        );
        cfg.0.read(
            BusAccess {
                offset: 4,
                addr: 0xCFC,
            },
            &mut b,
        );
        assert_eq!(b, [0xFF; 4]);
    }

    #[test]
    fn bar_sizing_and_restore() {
        let (mut cfg, _) = plain_bus();
        cfg.write(3, 0, 0x10, 4, 0xFFFF_FFFF);
        assert_eq!(cfg.read(3, 0, 0x10, 4), 0xFF00_0008, "16 MiB prefetchable");
        cfg.write(3, 0, 0x14, 4, 0xFFFF_FFFF);
        assert_eq!(cfg.read(3, 0, 0x14, 4), 0xFFFF_FFF1, "16-byte I/O");
        cfg.write(3, 0, 0x30, 4, 0xFFFF_F800);
        assert_eq!(
            cfg.read(3, 0, 0x30, 4),
            0xFFFF_0000,
            "ROM rounded to 64 KiB"
        );
        cfg.write(3, 0, 0x18, 4, 0xFFFF_FFFF);
        assert_eq!(cfg.read(3, 0, 0x18, 4), 0, "no BAR2");
        cfg.write(3, 0, 0x10, 4, 0xFD00_0000);
        assert_eq!(cfg.read(3, 0, 0x10, 4), 0xFD00_0008);
        cfg.write(3, 0, 0x14, 4, 0xC000);
        assert_eq!(cfg.read(3, 0, 0x14, 4), 0xC001);
        // Read-only identity survives writes.
        cfg.write(3, 0, 0x00, 4, 0);
        assert_eq!(cfg.read(3, 0, 0x00, 4), 0x5678_1234);
    }

    #[test]
    fn bars_decode_only_when_enabled() {
        let (mut cfg, dev) = plain_bus();
        let bus = cfg.0.bus().clone();
        cfg.write(3, 0, 0x10, 4, 0xFD00_0000);
        cfg.write(3, 0, 0x14, 4, 0xC040);
        let mut b = [0u8; 2];
        assert!(!bus.lock().unwrap().mmio_read(0xFD00_0010, &mut b));
        assert_eq!(b, [0xFF, 0xFF]);
        cfg.write(
            3,
            0,
            0x04,
            2,
            u32::from(PCI_COMMAND_MEMORY | PCI_COMMAND_IO),
        );
        assert!(bus.lock().unwrap().mmio_write(0xFD00_0010, &[1, 2]));
        assert_eq!(dev.lock().unwrap().1[0x10..0x12], [1, 2]);
        assert!(bus.lock().unwrap().mmio_read(0xFD00_0010, &mut b));
        assert_eq!(b, [1, 2]);
        assert!(bus.lock().unwrap().io_read(0xC04F, &mut b[..1]));
        assert!(!bus.lock().unwrap().io_read(0xC050, &mut b[..1]));
        let bar = dev.lock().unwrap().config().bar(0).unwrap();
        assert_eq!(
            (bar.address, bar.size, bar.enabled),
            (0xFD00_0000, 0x100_0000, true)
        );
        // ROM decodes only with its enable bit.
        cfg.write(3, 0, 0x30, 4, 0xFE00_0000);
        assert!(!dev.lock().unwrap().config().bar(ROM_BAR).unwrap().enabled);
        cfg.write(3, 0, 0x30, 4, 0xFE00_0001);
        assert!(dev.lock().unwrap().config().bar(ROM_BAR).unwrap().enabled);
    }

    #[test]
    fn port_cf9_goes_to_reset_control() {
        let requests = pcvm_core::SystemRequests::new();
        let rc = Arc::new(Mutex::new(ResetControl::new(requests.clone())));
        let mut ports = PciConfigPorts::new(Arc::new(Mutex::new(PciBus::new())), Some(rc));
        let cf9 = BusAccess {
            offset: 1,
            addr: 0xCF9,
        };
        ports.write(cf9, &[0x02]);
        let mut b = [0u8];
        ports.read(cf9, &mut b);
        assert_eq!(b[0], 0x02);
        assert!(requests.take().is_none());
        ports.write(cf9, &[0x06]);
        assert_eq!(requests.take(), Some(pcvm_core::SystemRequest::Reset));
        // The address register is untouched by 0xCF9 bytes.
        let mut a = [0u8; 4];
        ports.read(
            BusAccess {
                offset: 0,
                addr: 0xCF8,
            },
            &mut a,
        );
        assert_eq!(a, [0; 4]);
    }

    /// The machine's wiring from the module docs, driven the way SeaBIOS enumerates it.
    #[test]
    fn machine_wiring_as_seabios_sees_it() {
        use crate::ide::{Drive, IdeController, MemBackend};
        use crate::vga::Vga;
        use pcvm_core::irq::NoIrq;
        use pcvm_core::{Bus, GuestMemory, SharedDevice};

        let memory = Arc::new(GuestMemory::pc(32 << 20).unwrap());
        let pci = Arc::new(Mutex::new(PciBus::new()));
        let vga = Arc::new(Mutex::new(Vga::with_rom(vec![0x55, 0xAA, 0x40])));
        let ide = Arc::new(Mutex::new(IdeController::new(
            Arc::new(NoIrq),
            Arc::new(NoIrq),
        )));
        ide.lock()
            .unwrap()
            .attach(0, 0, Drive::disk(MemBackend::new(vec![0; 1 << 20])))
            .unwrap();
        {
            let mut bus = pci.lock().unwrap();
            bus.add(
                0,
                0,
                Arc::new(Mutex::new(i440fx::I440fx::new(memory.clone()))),
            )
            .unwrap();
            bus.add(1, 0, Arc::new(Mutex::new(piix::Piix3IsaBridge::new())))
                .unwrap();
            bus.add(1, 1, Arc::new(Mutex::new(piix::Piix3Ide::new())))
                .unwrap();
            bus.add(2, 0, vga.clone()).unwrap();
        }
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let ports: SharedDevice = Arc::new(Mutex::new(PciConfigPorts::new(pci.clone(), None)));
        pio.insert(0xCF8, PciConfigPorts::LEN, ports).unwrap();
        for (base, len) in IdeController::PORT_RANGES {
            pio.insert(u64::from(base), len, ide.clone()).unwrap();
        }
        for (base, len) in Vga::PORT_RANGES {
            pio.insert(u64::from(base), len, vga.clone()).unwrap();
        }
        mmio.insert(crate::vga::WINDOW_BASE, crate::vga::WINDOW_LEN, vga.clone())
            .unwrap();
        let window: SharedDevice = Arc::new(Mutex::new(PciMmioWindow::new(pci.clone())));
        let below_4g = memory.layout().below_4g;
        mmio.insert(below_4g, 0xFEC0_0000 - below_4g, window)
            .unwrap();

        let cfg_read = |pio: &Bus, bdf: u32, reg: u32| {
            pio.write(0xCF8, &(0x8000_0000 | bdf << 8 | reg).to_le_bytes());
            let mut b = [0u8; 4];
            pio.read(0xCFC, &mut b);
            u32::from_le_bytes(b)
        };
        let cfg_write = |pio: &Bus, bdf: u32, reg: u32, v: u32| {
            pio.write(0xCF8, &(0x8000_0000 | bdf << 8 | reg).to_le_bytes());
            pio.write(0xCFC, &v.to_le_bytes());
        };
        // pci_probe_devices: function 0 of each slot, functions 1-7 only if multifunction.
        let mut found = Vec::new();
        for dev in 0..32u32 {
            for func in 0..8u32 {
                let bdf = dev << 3 | func;
                let id = cfg_read(&pio, bdf, 0);
                if id & 0xFFFF != 0xFFFF {
                    found.push((dev, func, id));
                }
                if func == 0
                    && (id & 0xFFFF == 0xFFFF || cfg_read(&pio, bdf, 0x0C) & 0x80_0000 == 0)
                {
                    break;
                }
            }
        }
        assert_eq!(
            found,
            [
                (0, 0, 0x1237_8086),
                (1, 0, 0x7000_8086),
                (1, 1, 0x7010_8086),
                (2, 0, 0x1111_1234)
            ]
        );
        // Size and place the VGA BARs, enable memory decoding, read the ROM through the hole.
        cfg_write(&pio, 2 << 3, 0x10, 0xFFFF_FFFF);
        assert_eq!(cfg_read(&pio, 2 << 3, 0x10), 0xFF00_0008);
        cfg_write(&pio, 2 << 3, 0x10, 0xFD00_0000);
        cfg_write(&pio, 2 << 3, 0x30, 0xFFFF_FFFE);
        assert_eq!(cfg_read(&pio, 2 << 3, 0x30), 0xFFFF_F800);
        cfg_write(&pio, 2 << 3, 0x30, 0xFEB0_0001);
        cfg_write(
            &pio,
            2 << 3,
            0x04,
            u32::from(PCI_COMMAND_IO | PCI_COMMAND_MEMORY),
        );
        let mut sig = [0u8; 2];
        mmio.read(0xFEB0_0000, &mut sig);
        assert_eq!(sig, [0x55, 0xAA]);
        mmio.write(0xFD00_1000, &[0x12]);
        let mut b = [0u8];
        mmio.read(0xFD00_1000, &mut b);
        assert_eq!(b[0], 0x12, "LFB is video memory");
        mmio.read(0xE000_0000, &mut b);
        assert_eq!(b[0], 0xFF, "nothing decodes there");
        // The legacy devices answer on their ports.
        let mut st = [0u8];
        pio.read(0x1F7, &mut st);
        assert_eq!(st[0], 0x50);
        pio.write(0x3D4, &[0x0F]);
        let mut c = [0u8];
        pio.read(0x3D4, &mut c);
        assert_eq!(c[0], 0x0F);
    }

    /// Random config-port traffic over the whole PC set of functions never panics.
    #[test]
    fn hostile_config_traffic_never_panics() {
        let memory = Arc::new(pcvm_core::GuestMemory::pc(8 << 20).unwrap());
        let mut bus = PciBus::new();
        bus.add(0, 0, Arc::new(Mutex::new(i440fx::I440fx::new(memory))))
            .unwrap();
        bus.add(1, 0, Arc::new(Mutex::new(piix::Piix3IsaBridge::new())))
            .unwrap();
        bus.add(1, 1, Arc::new(Mutex::new(piix::Piix3Ide::new())))
            .unwrap();
        bus.add(
            2,
            0,
            Arc::new(Mutex::new(crate::vga::Vga::with_rom(vec![1; 100]))),
        )
        .unwrap();
        let bus = Arc::new(Mutex::new(bus));
        let rc = Arc::new(Mutex::new(ResetControl::new(
            pcvm_core::SystemRequests::new(),
        )));
        let mut ports = PciConfigPorts::new(bus.clone(), Some(rc));
        let mut window = PciMmioWindow::new(bus.clone());
        let mut io = PciIoWindow::new(bus);
        let mut rng = crate::ide::tests::Rng(0x0123_4567_89AB_CDEF);
        for _ in 0..100_000 {
            let x = rng.next();
            let len = [1usize, 2, 4, 8][(x % 4) as usize];
            let mut data = rng.next().to_le_bytes();
            if (x >> 2).is_multiple_of(4) {
                // Point CONFIG_ADDRESS at a present function most of the time.
                let dev = [0u64, 1, 2, 3][((x >> 4) % 4) as usize];
                let a = 0x8000_0000 | dev << 11 | ((x >> 8) % 8) << 8 | ((x >> 16) & 0xFC);
                ports.write(
                    BusAccess {
                        offset: 0,
                        addr: 0xCF8,
                    },
                    &(a as u32).to_le_bytes(),
                );
                continue;
            }
            let offset = (x >> 8) % 10;
            let access = BusAccess {
                offset,
                addr: 0xCF8 + offset,
            };
            if (x >> 20) & 1 == 0 {
                ports.read(access, &mut data[..len]);
            } else {
                ports.write(access, &data[..len]);
            }
            let addr = (x >> 24) & 0xFFFF_FFFF;
            window.read(BusAccess { offset: 0, addr }, &mut data[..len]);
            window.write(BusAccess { offset: 0, addr }, &data[..len]);
            io.read(
                BusAccess {
                    offset: 0,
                    addr: addr & 0xFFFF,
                },
                &mut data[..len],
            );
        }
        ports.reset();
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let (mut cfg, _) = plain_bus();
        cfg.write(3, 0, 0x10, 4, 0xFD00_0000);
        cfg.write(3, 0, 0x3C, 1, 11);
        let state = cfg.0.state();
        let json = serde_json::to_string(&state).unwrap();
        let back: PciHostState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
        cfg.0.reset();
        assert_eq!(cfg.read(3, 0, 0x10, 4), 0x8);
        cfg.0.set_state(&back);
        assert_eq!(cfg.read(3, 0, 0x3C, 1), 11);
        assert_eq!(cfg.read(3, 0, 0x10, 4), 0xFD00_0008);
    }

    #[test]
    fn status_bits_are_write_one_to_clear_and_reset_restores() {
        let (mut cfg, dev) = plain_bus();
        dev.lock().unwrap().0.set_u16(PCI_STATUS, 0x2000 | 0x0010);
        cfg.write(3, 0, 0x06, 2, 0x2000);
        assert_eq!(cfg.read(3, 0, 0x06, 2), 0x0010);
        cfg.write(3, 0, 0x04, 2, 0xFFFF);
        assert_eq!(cfg.read(3, 0, 0x04, 2), 0x0547);
        cfg.write(3, 0, 0x3C, 1, 11);
        cfg.0.reset();
        assert_eq!(cfg.read(3, 0, 0x04, 2), 0);
        assert_eq!(cfg.read(3, 0, 0x3C, 1), 0);
    }
}
