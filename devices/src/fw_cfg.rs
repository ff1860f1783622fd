//! QEMU's firmware configuration device (fw_cfg), the x86 I/O-port flavour.
//!
//! Models (QEMU docs/specs/fw_cfg.rst, the interface SeaBIOS fw/paravirt.c uses): a 16-bit
//! selector at 0x510, a byte-wide data port at 0x511 that auto-increments through the selected
//! item, and the DMA interface at 0x514 (high address dword, big-endian) / 0x518 (low dword,
//! big-endian; writing it runs the transfer). A DMA descriptor is `{be32 control; be32 length;
//! be64 address}` with control bits ERROR 1, READ 2, SKIP 4, SELECT 8, WRITE 0x10 and the key
//! in bits 31:16. Every guest access goes through [`GuestMemory::read_phys`] /
//! [`GuestMemory::write_phys`]; a descriptor or buffer outside RAM ends the transfer with the
//! ERROR bit, never a host fault. Reading 0x514 returns the DMA signature "QEMU CFG".
//!
//! Items: signature (key 0, "QEMU"), ID (key 1, traditional + DMA), the legacy keys with
//! setters, and named files from selector 0x20 listed in the directory at key 0x19. DMA
//! WRITE works only on files added with [`FwCfg::add_writable_file`].
//!
//! Left out: the MMIO flavour (ARM), the deprecated write-through-the-data-port path
//! (writes to 0x511 are ignored, as in QEMU ≥ 2.4), and per-item read callbacks.

use std::collections::BTreeMap;
use std::sync::Arc;

use pcvm_core::{BusAccess, BusDevice, GuestMemory};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Selector port (16-bit writes); the data port is `FW_CFG_PORT + 1`.
pub const FW_CFG_PORT: u16 = 0x510;
/// Ports decoded from [`FW_CFG_PORT`]: selector and data.
pub const FW_CFG_PORT_LEN: u64 = 2;
/// DMA address register: high dword at 0x514, low dword at 0x518.
pub const FW_CFG_DMA_PORT: u16 = 0x514;
/// Ports decoded from [`FW_CFG_DMA_PORT`].
pub const FW_CFG_DMA_PORT_LEN: u64 = 8;

/// What reads of the DMA register return, byte by byte ("QEMU CFG").
pub const DMA_SIGNATURE: [u8; 8] = *b"QEMU CFG";

/// Well-known item keys (QEMU include/standard-headers/linux/qemu_fw_cfg.h).
pub mod keys {
    /// "QEMU".
    pub const SIGNATURE: u16 = 0x00;
    /// Feature bits, LE u32: bit 0 traditional interface, bit 1 DMA.
    pub const ID: u16 = 0x01;
    /// 16-byte machine UUID.
    pub const UUID: u16 = 0x02;
    /// RAM size in bytes, LE u64.
    pub const RAM_SIZE: u16 = 0x03;
    /// No graphical display, LE u16.
    pub const NOGRAPHIC: u16 = 0x04;
    /// Boot CPUs, LE u16.
    pub const NB_CPUS: u16 = 0x05;
    /// Kernel load address, LE u32.
    pub const KERNEL_ADDR: u16 = 0x07;
    /// Kernel size, LE u32.
    pub const KERNEL_SIZE: u16 = 0x08;
    /// Initrd load address, LE u32.
    pub const INITRD_ADDR: u16 = 0x0A;
    /// Initrd size, LE u32.
    pub const INITRD_SIZE: u16 = 0x0B;
    /// Legacy boot device, LE u16.
    pub const BOOT_DEVICE: u16 = 0x0C;
    /// NUMA configuration.
    pub const NUMA: u16 = 0x0D;
    /// Boot menu enabled, LE u16.
    pub const BOOT_MENU: u16 = 0x0E;
    /// Maximum CPUs, LE u16.
    pub const MAX_CPUS: u16 = 0x0F;
    /// Kernel entry point, LE u32.
    pub const KERNEL_ENTRY: u16 = 0x10;
    /// Kernel image bytes.
    pub const KERNEL_DATA: u16 = 0x11;
    /// Initrd bytes.
    pub const INITRD_DATA: u16 = 0x12;
    /// Command line load address, LE u32.
    pub const CMDLINE_ADDR: u16 = 0x13;
    /// Command line size including the NUL, LE u32.
    pub const CMDLINE_SIZE: u16 = 0x14;
    /// Command line bytes (NUL-terminated).
    pub const CMDLINE_DATA: u16 = 0x15;
    /// Linux setup (real-mode part) load address, LE u32.
    pub const SETUP_ADDR: u16 = 0x16;
    /// Linux setup size, LE u32.
    pub const SETUP_SIZE: u16 = 0x17;
    /// Linux setup bytes.
    pub const SETUP_DATA: u16 = 0x18;
    /// The file directory.
    pub const FILE_DIR: u16 = 0x19;
    /// Selector of the first file.
    pub const FILE_FIRST: u16 = 0x20;
    /// Set on a selector to ask for write access (legacy; ignored).
    pub const WRITE_CHANNEL: u16 = 0x4000;
    /// Architecture-specific keys start here.
    pub const ARCH_LOCAL: u16 = 0x8000;
    /// x86: ACPI tables (legacy).
    pub const ACPI_TABLES: u16 = 0x8000;
    /// x86: SMBIOS entries (legacy).
    pub const SMBIOS_ENTRIES: u16 = 0x8001;
    /// x86: IRQ0 override.
    pub const IRQ0_OVERRIDE: u16 = 0x8002;
    /// x86: e820 reservations (legacy).
    pub const E820_TABLE: u16 = 0x8003;
    /// x86: HPET.
    pub const HPET: u16 = 0x8004;
}

/// ID bit 0: the traditional selector/data interface.
pub const ID_TRADITIONAL: u32 = 1;
/// ID bit 1: the DMA interface.
pub const ID_DMA: u32 = 2;

/// DMA control: the transfer failed.
pub const DMA_CTL_ERROR: u32 = 0x01;
/// DMA control: read the item into guest memory.
pub const DMA_CTL_READ: u32 = 0x02;
/// DMA control: skip `length` bytes of the item.
pub const DMA_CTL_SKIP: u32 = 0x04;
/// DMA control: select the key in bits 31:16 first.
pub const DMA_CTL_SELECT: u32 = 0x08;
/// DMA control: write guest memory into the item.
pub const DMA_CTL_WRITE: u32 = 0x10;

/// Size of a DMA descriptor.
const DMA_DESCRIPTOR_LEN: usize = 16;
/// Longest file name (the directory entry holds 56 bytes including the NUL).
pub const MAX_FILE_NAME: usize = 55;
/// Size of one directory entry.
const DIR_ENTRY_LEN: usize = 64;
/// The highest file selector (keys from 0x4000 carry the write-channel bit).
const FILE_LAST: u16 = 0x3FFF;

#[derive(Clone, Debug, Default)]
struct Item {
    data: Vec<u8>,
    writable: bool,
}

#[derive(Clone, Debug)]
struct File {
    name: String,
    select: u16,
}

/// The guest-visible position of the interface, for snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwCfgState {
    /// Selected key.
    pub selector: u16,
    /// Read/write position in the selected item.
    pub offset: u32,
    /// DMA address being assembled from the two halves.
    pub dma_addr: u64,
}

/// QEMU-compatible fw_cfg.
pub struct FwCfg {
    items: BTreeMap<u16, Item>,
    files: Vec<File>,
    state: FwCfgState,
    memory: Arc<GuestMemory>,
}

impl FwCfg {
    /// A device with the signature, ID (traditional + DMA), one CPU, and an empty directory;
    /// DMA goes to `memory`.
    pub fn new(memory: Arc<GuestMemory>) -> Self {
        let mut fw = FwCfg {
            items: BTreeMap::new(),
            files: Vec::new(),
            state: FwCfgState::default(),
            memory,
        };
        fw.put(keys::SIGNATURE, b"QEMU".to_vec());
        fw.put(keys::ID, (ID_TRADITIONAL | ID_DMA).to_le_bytes().to_vec());
        fw.put(keys::UUID, vec![0; 16]);
        fw.set_cpu_count(1);
        fw.set_max_cpus(1);
        fw.set_nographic(false);
        fw.set_boot_menu(false);
        fw.rebuild_directory();
        fw
    }

    fn put(&mut self, key: u16, data: Vec<u8>) {
        self.items.insert(
            key,
            Item {
                data,
                writable: false,
            },
        );
    }

    /// Set a raw item (legacy or arch-local key). Keys of the file range and the directory
    /// are managed by [`FwCfg::add_file`] and rejected here.
    pub fn set_item(&mut self, key: u16, data: Vec<u8>) -> Result<()> {
        if key == keys::FILE_DIR || (keys::FILE_FIRST..=FILE_LAST).contains(&key) {
            return Err(Error::Config {
                device: "fw_cfg",
                reason: format!("key {key:#x} is reserved for files"),
            });
        }
        if u32::try_from(data.len()).is_err() {
            return Err(Error::FwCfgTooLarge(format!("key {key:#x}")));
        }
        self.put(key & !keys::WRITE_CHANNEL, data);
        Ok(())
    }

    /// RAM size in bytes (key 0x03).
    pub fn set_ram_size(&mut self, bytes: u64) {
        self.put(keys::RAM_SIZE, bytes.to_le_bytes().to_vec());
    }

    /// Boot CPU count (key 0x05).
    pub fn set_cpu_count(&mut self, cpus: u16) {
        self.put(keys::NB_CPUS, cpus.to_le_bytes().to_vec());
    }

    /// Maximum CPU count (key 0x0F).
    pub fn set_max_cpus(&mut self, cpus: u16) {
        self.put(keys::MAX_CPUS, cpus.to_le_bytes().to_vec());
    }

    /// No graphical display (key 0x04); SeaBIOS then defaults its console to COM1.
    pub fn set_nographic(&mut self, nographic: bool) {
        self.put(keys::NOGRAPHIC, u16::from(nographic).to_le_bytes().to_vec());
    }

    /// Boot menu enabled (key 0x0E).
    pub fn set_boot_menu(&mut self, enabled: bool) {
        self.put(keys::BOOT_MENU, u16::from(enabled).to_le_bytes().to_vec());
    }

    /// Legacy boot device letter (key 0x0C).
    pub fn set_boot_device(&mut self, device: u16) {
        self.put(keys::BOOT_DEVICE, device.to_le_bytes().to_vec());
    }

    /// Machine UUID (key 0x02).
    pub fn set_uuid(&mut self, uuid: [u8; 16]) {
        self.put(keys::UUID, uuid.to_vec());
    }

    /// Kernel image, its load address and entry point (keys 0x07, 0x08, 0x10, 0x11).
    pub fn set_kernel(&mut self, load_addr: u32, entry: u32, data: Vec<u8>) -> Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| Error::FwCfgTooLarge("kernel".into()))?;
        self.put(keys::KERNEL_ADDR, load_addr.to_le_bytes().to_vec());
        self.put(keys::KERNEL_SIZE, size.to_le_bytes().to_vec());
        self.put(keys::KERNEL_ENTRY, entry.to_le_bytes().to_vec());
        self.put(keys::KERNEL_DATA, data);
        Ok(())
    }

    /// Initrd and its load address (keys 0x0A, 0x0B, 0x12).
    pub fn set_initrd(&mut self, load_addr: u32, data: Vec<u8>) -> Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| Error::FwCfgTooLarge("initrd".into()))?;
        self.put(keys::INITRD_ADDR, load_addr.to_le_bytes().to_vec());
        self.put(keys::INITRD_SIZE, size.to_le_bytes().to_vec());
        self.put(keys::INITRD_DATA, data);
        Ok(())
    }

    /// Kernel command line (keys 0x13, 0x14, 0x15); a terminating NUL is added.
    pub fn set_cmdline(&mut self, load_addr: u32, cmdline: &[u8]) -> Result<()> {
        let mut data = cmdline.to_vec();
        data.push(0);
        let size = u32::try_from(data.len()).map_err(|_| Error::FwCfgTooLarge("cmdline".into()))?;
        self.put(keys::CMDLINE_ADDR, load_addr.to_le_bytes().to_vec());
        self.put(keys::CMDLINE_SIZE, size.to_le_bytes().to_vec());
        self.put(keys::CMDLINE_DATA, data);
        Ok(())
    }

    /// Linux real-mode setup code and its load address (keys 0x16, 0x17, 0x18).
    pub fn set_setup(&mut self, load_addr: u32, data: Vec<u8>) -> Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| Error::FwCfgTooLarge("setup".into()))?;
        self.put(keys::SETUP_ADDR, load_addr.to_le_bytes().to_vec());
        self.put(keys::SETUP_SIZE, size.to_le_bytes().to_vec());
        self.put(keys::SETUP_DATA, data);
        Ok(())
    }

    /// Add a read-only named file; returns its selector (0x20 upwards).
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16> {
        self.insert_file(name, data, false)
    }

    /// Add a file the guest may also write with DMA WRITE (within its current size).
    pub fn add_writable_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16> {
        self.insert_file(name, data, true)
    }

    /// Replace the contents of an existing file, or add it read-only.
    pub fn set_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16> {
        match self.files.iter().find(|f| f.name == name) {
            Some(f) => {
                let select = f.select;
                if u32::try_from(data.len()).is_err() {
                    return Err(Error::FwCfgTooLarge(name.into()));
                }
                if let Some(item) = self.items.get_mut(&select) {
                    item.data = data;
                }
                self.rebuild_directory();
                Ok(select)
            }
            None => self.add_file(name, data),
        }
    }

    /// The contents of file `name`.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        let f = self.files.iter().find(|f| f.name == name)?;
        self.items.get(&f.select).map(|i| i.data.as_slice())
    }

    /// The contents of item `key`.
    pub fn item(&self, key: u16) -> Option<&[u8]> {
        self.items.get(&key).map(|i| i.data.as_slice())
    }

    fn insert_file(&mut self, name: &str, data: Vec<u8>, writable: bool) -> Result<u16> {
        if name.is_empty() || name.len() > MAX_FILE_NAME || name.contains('\0') {
            return Err(Error::FwCfgFileName(name.into()));
        }
        if self.files.iter().any(|f| f.name == name) {
            return Err(Error::FwCfgDuplicateFile(name.into()));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(Error::FwCfgTooLarge(name.into()));
        }
        let select = u16::try_from(self.files.len())
            .ok()
            .and_then(|n| keys::FILE_FIRST.checked_add(n))
            .filter(|&s| s <= FILE_LAST)
            .ok_or_else(|| Error::FwCfgFull(name.into()))?;
        self.items.insert(select, Item { data, writable });
        self.files.push(File {
            name: name.into(),
            select,
        });
        self.rebuild_directory();
        Ok(select)
    }

    /// Key 0x19: BE u32 count, then per file (sorted by name, as QEMU lists them)
    /// `{BE u32 size; BE u16 select; u16 reserved; char name[56]}`.
    fn rebuild_directory(&mut self) {
        let mut files: Vec<&File> = self.files.iter().collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let mut dir = Vec::with_capacity(4 + files.len() * DIR_ENTRY_LEN);
        dir.extend_from_slice(&(files.len() as u32).to_be_bytes());
        for f in files {
            let size = self.items.get(&f.select).map_or(0, |i| i.data.len() as u32);
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&f.select.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut name = [0u8; DIR_ENTRY_LEN - 8];
            name[..f.name.len()].copy_from_slice(f.name.as_bytes());
            dir.extend_from_slice(&name);
        }
        self.put(keys::FILE_DIR, dir);
    }

    /// The interface position, for snapshots.
    pub fn state(&self) -> FwCfgState {
        self.state
    }

    /// Restore the interface position.
    pub fn set_state(&mut self, state: FwCfgState) {
        self.state = state;
    }

    fn select(&mut self, key: u16) {
        // The write-channel bit is a legacy request for write access; it names the same item.
        self.state.selector = key & !keys::WRITE_CHANNEL;
        self.state.offset = 0;
    }

    fn read_data_byte(&mut self) -> u8 {
        let Some(item) = self.items.get(&self.state.selector) else {
            return 0;
        };
        match item.data.get(self.state.offset as usize) {
            Some(&b) => {
                self.state.offset += 1;
                b
            }
            None => 0,
        }
    }

    /// Run the DMA transfer whose descriptor is at `desc_addr`; the guest sees completion as
    /// the control word becoming 0 (or just ERROR).
    fn dma_transfer(&mut self, desc_addr: u64) {
        let mut desc = [0u8; DMA_DESCRIPTOR_LEN];
        if self.memory.read_phys(desc_addr, &mut desc).is_err() {
            tracing::warn!(desc_addr, "fw_cfg: DMA descriptor outside RAM, ignored");
            return;
        }
        let word = |i: usize| u32::from_be_bytes([desc[i], desc[i + 1], desc[i + 2], desc[i + 3]]);
        let control = word(0);
        let length = word(4);
        let address = u64::from(word(8)) << 32 | u64::from(word(12));
        if control & DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let ok = if control & DMA_CTL_READ != 0 {
            self.dma_read(address, length)
        } else if control & DMA_CTL_WRITE != 0 {
            self.dma_write(address, length)
        } else if control & DMA_CTL_SKIP != 0 {
            self.state.offset = self.state.offset.saturating_add(length);
            true
        } else {
            true
        };
        let result = if ok { 0 } else { DMA_CTL_ERROR };
        if self
            .memory
            .write_phys(desc_addr, &result.to_be_bytes())
            .is_err()
        {
            tracing::warn!(desc_addr, "fw_cfg: cannot write DMA completion");
        }
    }

    /// Copy `length` bytes of the selected item into guest memory; past the end of the item
    /// the guest gets zeros (as QEMU does).
    fn dma_read(&mut self, address: u64, length: u32) -> bool {
        const ZEROS: [u8; 4096] = [0; 4096];
        let data: &[u8] = self
            .items
            .get(&self.state.selector)
            .map_or(&[], |i| i.data.as_slice());
        let mut done: u32 = 0;
        while done < length {
            let Some(dest) = address.checked_add(u64::from(done)) else {
                return false;
            };
            let offset = self.state.offset as usize;
            let want = (length - done) as usize;
            let chunk: &[u8] = match data.get(offset..) {
                Some(rest) if !rest.is_empty() => &rest[..rest.len().min(want)],
                _ => &ZEROS[..ZEROS.len().min(want)],
            };
            if self.memory.write_phys(dest, chunk).is_err() {
                return false;
            }
            let n = chunk.len() as u32;
            done += n;
            if offset < data.len() {
                self.state.offset += n;
            }
        }
        true
    }

    /// Copy `length` bytes of guest memory into the selected item, which must be writable
    /// and large enough.
    fn dma_write(&mut self, address: u64, length: u32) -> bool {
        let offset = self.state.offset as usize;
        let Some(item) = self.items.get_mut(&self.state.selector) else {
            return false;
        };
        let end = offset.checked_add(length as usize);
        let Some(dest) = end
            .filter(|_| item.writable)
            .and_then(|end| item.data.get_mut(offset..end))
        else {
            return false;
        };
        if self.memory.read_phys(address, dest).is_err() {
            return false;
        }
        self.state.offset += length;
        true
    }
}

impl BusDevice for FwCfg {
    fn name(&self) -> &str {
        "fw_cfg"
    }

    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let port = access.addr.wrapping_add(i as u64);
            *b = match port {
                0x511 => self.read_data_byte(),
                0x514..=0x51B => DMA_SIGNATURE[(port - 0x514) as usize],
                _ => 0xFF, // the selector is write-only
            };
        }
    }

    fn write(&mut self, access: BusAccess, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        match (access.addr, data.len()) {
            (0x510, 1) => self.select(u16::from(data[0])),
            (0x510, _) => self.select(u16::from_le_bytes([data[0], data[1]])),
            (0x511, _) => tracing::debug!("fw_cfg: data port write ignored"),
            (0x514, 4) => {
                // The high dword, big-endian; the transfer waits for the low half.
                let high = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                self.state.dma_addr = u64::from(high) << 32;
            }
            (0x514, 8) => {
                let addr = u64::from_be_bytes([
                    data[0], data[1], data[2], data[3], data[4], data[5], data[6], data[7],
                ]);
                self.state.dma_addr = 0;
                self.dma_transfer(addr);
            }
            (0x518, 4) => {
                let low = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                let addr = self.state.dma_addr | u64::from(low);
                self.state.dma_addr = 0;
                self.dma_transfer(addr);
            }
            (port, len) => tracing::debug!(port, len, "fw_cfg: unsupported access ignored"),
        }
    }

    fn reset(&mut self) {
        self.state = FwCfgState::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (FwCfg, Arc<GuestMemory>) {
        let mem = Arc::new(GuestMemory::pc(16 << 20).unwrap());
        (FwCfg::new(mem.clone()), mem)
    }
    fn select(fw: &mut FwCfg, key: u16) {
        fw.write(
            BusAccess {
                offset: 0,
                addr: 0x510,
            },
            &key.to_le_bytes(),
        );
    }
    fn read_bytes(fw: &mut FwCfg, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let mut b = [0];
                fw.read(
                    BusAccess {
                        offset: 1,
                        addr: 0x511,
                    },
                    &mut b,
                );
                b[0]
            })
            .collect()
    }
    /// SeaBIOS's sequence: write the descriptor, then `outl(bswap(addr), 0x518)`.
    fn dma(fw: &mut FwCfg, mem: &GuestMemory, desc: u64, control: u32, len: u32, addr: u64) -> u32 {
        let mut d = Vec::new();
        d.extend_from_slice(&control.to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&addr.to_be_bytes());
        mem.write_phys(desc, &d).unwrap();
        let outl = (desc as u32).swap_bytes();
        fw.write(
            BusAccess {
                offset: 4,
                addr: 0x518,
            },
            &outl.to_le_bytes(),
        );
        let mut c = [0u8; 4];
        mem.read_phys(desc, &mut c).unwrap();
        u32::from_be_bytes(c)
    }

    #[test]
    fn signature_id_and_dma_signature() {
        let (mut fw, _) = setup();
        select(&mut fw, keys::SIGNATURE);
        assert_eq!(read_bytes(&mut fw, 4), b"QEMU");
        assert_eq!(read_bytes(&mut fw, 2), [0, 0], "past the end reads 0");
        select(&mut fw, keys::ID);
        assert_eq!(read_bytes(&mut fw, 4), 3u32.to_le_bytes());
        let mut sig = [0u8; 8];
        fw.read(
            BusAccess {
                offset: 0,
                addr: 0x514,
            },
            &mut sig[..4],
        );
        fw.read(
            BusAccess {
                offset: 4,
                addr: 0x518,
            },
            &mut sig[4..],
        );
        assert_eq!(&sig, b"QEMU CFG");
        select(&mut fw, keys::NB_CPUS);
        assert_eq!(read_bytes(&mut fw, 2), [1, 0]);
        select(&mut fw, 0x7777);
        assert_eq!(read_bytes(&mut fw, 1), [0], "unknown key reads 0");
    }

    #[test]
    fn file_directory_layout() {
        let (mut fw, _) = setup();
        assert_eq!(fw.add_file("etc/e820", vec![1; 40]).unwrap(), 0x20);
        assert_eq!(fw.add_file("bootorder", b"/pci\n".to_vec()).unwrap(), 0x21);
        assert!(matches!(
            fw.add_file("bootorder", vec![]),
            Err(Error::FwCfgDuplicateFile(_))
        ));
        assert!(fw.add_file(&"x".repeat(56), vec![]).is_err());
        assert!(fw.add_file("", vec![]).is_err());
        assert!(fw.set_item(keys::FILE_DIR, vec![]).is_err());
        select(&mut fw, keys::FILE_DIR);
        let dir = read_bytes(&mut fw, 4 + 2 * 64);
        assert_eq!(&dir[..4], &2u32.to_be_bytes());
        // Sorted by name: bootorder first.
        assert_eq!(&dir[4..8], &5u32.to_be_bytes());
        assert_eq!(&dir[8..10], &0x21u16.to_be_bytes());
        assert_eq!(&dir[12..21], b"bootorder");
        assert_eq!(dir[21], 0);
        assert_eq!(&dir[68..72], &40u32.to_be_bytes());
        assert_eq!(&dir[72..74], &0x20u16.to_be_bytes());
        assert_eq!(&dir[76..84], b"etc/e820");
        select(&mut fw, 0x21);
        assert_eq!(read_bytes(&mut fw, 5), b"/pci\n");
        fw.set_file("bootorder", b"/x\n".to_vec()).unwrap();
        assert_eq!(fw.file("bootorder"), Some(&b"/x\n"[..]));
    }

    #[test]
    fn dma_select_read_skip_into_guest_memory() {
        let (mut fw, mem) = setup();
        let data: Vec<u8> = (0..100u8).collect();
        let sel = fw.add_file("etc/test", data.clone()).unwrap();
        let ctl = (u32::from(sel) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
        assert_eq!(dma(&mut fw, &mem, 0x1000, ctl, 10, 0x2000), 0);
        let mut buf = [0u8; 10];
        mem.read_phys(0x2000, &mut buf).unwrap();
        assert_eq!(&buf, &data[..10]);
        assert_eq!(dma(&mut fw, &mem, 0x1000, DMA_CTL_SKIP, 80, 0), 0);
        // 10 bytes left, then zeros past the end.
        mem.write_phys(0x3000, &[0xAA; 16]).unwrap();
        assert_eq!(dma(&mut fw, &mem, 0x1000, DMA_CTL_READ, 16, 0x3000), 0);
        let mut buf = [0u8; 16];
        mem.read_phys(0x3000, &mut buf).unwrap();
        assert_eq!(&buf[..10], &data[90..]);
        assert_eq!(&buf[10..], &[0; 6]);
        // The high dword register: a descriptor above 4 GiB does not exist here → ignored.
        fw.write(
            BusAccess {
                offset: 0,
                addr: 0x514,
            },
            &1u32.to_be_bytes(),
        );
        fw.write(
            BusAccess {
                offset: 4,
                addr: 0x518,
            },
            &0u32.to_be_bytes(),
        );
    }

    #[test]
    fn hostile_dma_sets_error_bit() {
        let (mut fw, mem) = setup();
        let sel = fw.add_file("etc/test", vec![7; 64]).unwrap();
        let ctl = (u32::from(sel) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
        // Destination beyond RAM (16 MiB) and in the PCI hole.
        assert_eq!(
            dma(&mut fw, &mem, 0x1000, ctl, 64, 0xFEC0_0000),
            DMA_CTL_ERROR
        );
        assert_eq!(
            dma(&mut fw, &mem, 0x1000, ctl, 64, u64::MAX - 8),
            DMA_CTL_ERROR
        );
        // Writes to a read-only file fail; to a writable one within its size succeed.
        mem.write_phys(0x4000, &[9; 8]).unwrap();
        let wctl = (u32::from(sel) << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE;
        assert_eq!(dma(&mut fw, &mem, 0x1000, wctl, 8, 0x4000), DMA_CTL_ERROR);
        let wsel = fw.add_writable_file("etc/w", vec![0; 8]).unwrap();
        let wctl = (u32::from(wsel) << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE;
        assert_eq!(dma(&mut fw, &mem, 0x1000, wctl, 8, 0x4000), 0);
        assert_eq!(fw.file("etc/w"), Some(&[9u8; 8][..]));
        assert_eq!(
            dma(&mut fw, &mem, 0x1000, wctl, 9, 0x4000),
            DMA_CTL_ERROR,
            "too long"
        );
        // A descriptor outside RAM cannot be answered and is ignored.
        fw.write(
            BusAccess {
                offset: 4,
                addr: 0x518,
            },
            &0xFFFF_FFF0u32.swap_bytes().to_le_bytes(),
        );
        // Odd-sized accesses are ignored.
        fw.write(
            BusAccess {
                offset: 1,
                addr: 0x515,
            },
            &[1],
        );
    }

    #[test]
    fn legacy_kernel_keys() {
        let (mut fw, _) = setup();
        fw.set_ram_size(256 << 20);
        fw.set_kernel(0x10_0000, 0x10_0000, vec![0xCC; 3]).unwrap();
        fw.set_cmdline(0x2_0000, b"console=ttyS0").unwrap();
        select(&mut fw, keys::RAM_SIZE);
        assert_eq!(read_bytes(&mut fw, 8), (256u64 << 20).to_le_bytes());
        select(&mut fw, keys::KERNEL_SIZE);
        assert_eq!(read_bytes(&mut fw, 4), 3u32.to_le_bytes());
        select(&mut fw, keys::CMDLINE_SIZE);
        assert_eq!(read_bytes(&mut fw, 4), 14u32.to_le_bytes());
        select(&mut fw, keys::CMDLINE_DATA);
        assert_eq!(read_bytes(&mut fw, 14), b"console=ttyS0\0");
        select(&mut fw, keys::KERNEL_DATA | keys::WRITE_CHANNEL);
        assert_eq!(read_bytes(&mut fw, 3), [0xCC; 3]);
    }
}
