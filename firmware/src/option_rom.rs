//! Legacy option ROMs (the VGA BIOS), as the firmware finds them in fw_cfg `vgaroms/` or behind
//! a PCI expansion ROM BAR.
//!
//! A legacy option ROM starts with 0x55 0xAA and a length byte in 512-byte units (PCI Firmware
//! Specification 3.0 §5.1); the BIOS copies it into 0xC0000–0xDFFFF, so it cannot exceed 128 KiB.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The largest option ROM accepted: the whole 0xC0000–0xDFFFF expansion area.
pub const MAX_OPTION_ROM_SIZE: u64 = 128 << 10;

/// A checked option ROM image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionRom {
    data: Vec<u8>,
    source: PathBuf,
}

impl OptionRom {
    /// Read and check the option ROM at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|source| Error::Read {
            what: "option ROM",
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(data, path)
    }

    /// Check an image in memory; `source` names it in errors.
    pub fn from_bytes(data: Vec<u8>, source: &Path) -> Result<Self> {
        let path = source.to_owned();
        if data.is_empty() {
            return Err(Error::Empty {
                what: "option ROM",
                path,
            });
        }
        if data.len() as u64 > MAX_OPTION_ROM_SIZE {
            return Err(Error::OptionRomTooLarge {
                path,
                size: data.len() as u64,
                max: MAX_OPTION_ROM_SIZE,
            });
        }
        if !data.starts_with(&[0x55, 0xAA]) {
            return Err(Error::OptionRomSignature { path });
        }
        Ok(OptionRom { data, source: path })
    }

    /// The image bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Where the image came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The file name under which fw_cfg offers it (`vgaroms/<name>`).
    pub fn file_name(&self) -> String {
        self.source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "vgabios.bin".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_signature_and_size() {
        let p = Path::new("/x/vgabios-stdvga.bin");
        let rom = OptionRom::from_bytes(vec![0x55, 0xAA, 0x40, 0xCB], p).unwrap();
        assert_eq!(rom.file_name(), "vgabios-stdvga.bin");
        assert!(OptionRom::from_bytes(vec![0x00, 0xAA], p)
            .unwrap_err()
            .to_string()
            .contains("no 0x55AA signature"));
        assert!(OptionRom::from_bytes(Vec::new(), p)
            .unwrap_err()
            .to_string()
            .contains("is empty"));
        let mut big = vec![0u8; (MAX_OPTION_ROM_SIZE + 1) as usize];
        big[..2].copy_from_slice(&[0x55, 0xAA]);
        assert!(OptionRom::from_bytes(big, p).is_err());
    }
}
