//! The system BIOS image: loading, checking and mapping.
//!
//! A PC's BIOS sits in flash at the top of the 4 GiB space; the CPU starts at 0xFFFF_FFF0 (Intel
//! SDM Vol. 3A §9.1.4), and the chipset also decodes the last 128 KiB at 0xE0000–0xFFFFF until
//! the BIOS shadows itself into RAM through the PAM registers (i440FX datasheet §3.2.18). SeaBIOS
//! relies on both windows (it copies itself from the high alias). Mapping is done by
//! [`pcvm_core::GuestMemory::map_bios`]; this module checks the image first so a bad file gives
//! one clear error rather than a guest that hangs.

use std::path::{Path, PathBuf};

use pcvm_core::GuestMemory;

use crate::{Error, Result};

/// The smallest BIOS image accepted (64 KiB, the original PC BIOS segment 0xF000).
pub const MIN_BIOS_SIZE: u64 = 64 << 10;
/// The largest BIOS image accepted (16 MiB, the size of the top-of-4-GiB flash window before
/// the I/O APIC and local APIC ranges).
pub const MAX_BIOS_SIZE: u64 = 16 << 20;

/// A checked BIOS image ready to be mapped.
#[derive(Clone, PartialEq, Eq)]
pub struct BiosImage {
    data: Vec<u8>,
    source: PathBuf,
}

impl std::fmt::Debug for BiosImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BiosImage")
            .field("source", &self.source)
            .field("size", &self.data.len())
            .finish()
    }
}

impl BiosImage {
    /// Read and check the BIOS image at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        // Check the size before reading so a huge file is refused without being read.
        let meta = std::fs::metadata(path).map_err(|source| Error::Read {
            what: "BIOS image",
            path: path.to_owned(),
            source,
        })?;
        if meta.is_file() && meta.len() > MAX_BIOS_SIZE {
            return Err(Error::BiosTooLarge {
                path: path.to_owned(),
                size: meta.len(),
                max: MAX_BIOS_SIZE,
            });
        }
        let data = std::fs::read(path).map_err(|source| Error::Read {
            what: "BIOS image",
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(data, path)
    }

    /// Check an image already in memory; `source` names it in errors.
    pub fn from_bytes(data: Vec<u8>, source: &Path) -> Result<Self> {
        let path = source.to_owned();
        let size = data.len() as u64;
        if size == 0 {
            return Err(Error::Empty {
                what: "BIOS image",
                path,
            });
        }
        if size > MAX_BIOS_SIZE {
            return Err(Error::BiosTooLarge {
                path,
                size,
                max: MAX_BIOS_SIZE,
            });
        }
        if size < MIN_BIOS_SIZE {
            return Err(Error::BiosTooSmall {
                path,
                size,
                min: MIN_BIOS_SIZE,
            });
        }
        if !size.is_power_of_two() {
            return Err(Error::BiosNotPowerOfTwo { path, size });
        }
        let reset_vector = &data[data.len() - 16..];
        if reset_vector.iter().all(|&b| b == 0) || reset_vector.iter().all(|&b| b == 0xFF) {
            return Err(Error::BiosNoResetVector { path });
        }
        Ok(BiosImage { data, source: path })
    }

    /// The image bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Where the image came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Size in bytes (a power of two).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Always false: an empty image is refused by the constructors.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Map the image at the top of 4 GiB, with its last 128 KiB aliased at 0xE0000–0xFFFFF.
    pub fn map(self, memory: &mut GuestMemory) -> Result<()> {
        memory.map_bios(self.data).map_err(|source| Error::Map {
            what: "BIOS image",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(size: usize) -> Vec<u8> {
        let mut v = vec![0u8; size];
        if size >= 16 {
            // JMP FAR F000:E05B, as a PC BIOS has at the reset vector.
            v[size - 16..size - 11].copy_from_slice(&[0xEA, 0x5B, 0xE0, 0x00, 0xF0]);
        }
        v
    }

    fn err(data: Vec<u8>) -> String {
        BiosImage::from_bytes(data, Path::new("bios.bin"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn accepts_power_of_two_images_with_code() {
        for size in [64 << 10, 128 << 10, 256 << 10, 16 << 20] {
            let b = BiosImage::from_bytes(image(size), Path::new("b")).unwrap();
            assert_eq!(b.len(), size);
        }
    }

    #[test]
    fn refuses_bad_images_with_clear_messages() {
        assert_eq!(err(Vec::new()), "BIOS image bios.bin is empty");
        assert!(err(image(32 << 10)).contains("truncated: 32768 bytes"));
        assert!(err(image((256 << 10) - 512)).contains("not a power of two"));
        assert!(err(image(32 << 20)).contains("too large"));
        assert!(err(vec![0u8; 128 << 10]).contains("no code at the reset vector"));
        assert!(err(vec![0xFFu8; 128 << 10]).contains("no code at the reset vector"));
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = BiosImage::load(Path::new("/nonexistent/pcvm-bios.bin")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("failed to read BIOS image /nonexistent/pcvm-bios.bin"));
    }

    #[test]
    fn maps_at_top_of_4g_and_below_1m() {
        let mut mem = GuestMemory::pc(16 << 20).unwrap();
        BiosImage::from_bytes(image(128 << 10), Path::new("b"))
            .unwrap()
            .map(&mut mem)
            .unwrap();
        let mut b = [0u8; 5];
        mem.read_phys(0xFFFF_FFF0, &mut b).unwrap();
        assert_eq!(b, [0xEA, 0x5B, 0xE0, 0x00, 0xF0]);
        mem.read_phys(0xF_FFF0, &mut b).unwrap();
        assert_eq!(b, [0xEA, 0x5B, 0xE0, 0x00, 0xF0]);
    }
}
