//! Direct kernel boot (`-kernel`, `-initrd`, `-append`): the kernel is loaded straight into RAM
//! and the CPU starts at its entry point, as Firecracker does. QEMU instead runs SeaBIOS and its
//! linuxboot option ROM; the kernel sees the same boot protocols either way.
//!
//! Formats, checked in this order: a bzImage ("HdrS" at 0x202, Documentation/arch/x86/boot.rst),
//! a multiboot v1 kernel (header in the first 8 KiB, Multiboot Specification 0.6.96 §3.1), an
//! ELF kernel with a PVH entry note.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use pcvm_core::{CpuState, GuestMemory};
use pcvm_firmware::{linux, multiboot};

/// What `-kernel`, `-initrd` and `-append` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    pub path: PathBuf,
    /// `-initrd`: one file for Linux; for multiboot, QEMU's module list
    /// (`FILE [ARGS],FILE [ARGS]`, ",," a literal comma).
    pub initrd: Option<String>,
    /// `-append`.
    pub cmdline: String,
}

/// A kernel's boot protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// Linux bzImage, entered through the 64-bit boot protocol.
    BzImage,
    /// Multiboot v1, entered in 32-bit flat protected mode.
    Multiboot,
    /// ELF with a PVH note, entered in 32-bit flat protected mode.
    Pvh,
}

/// A kernel read from disk with its modules, ready to be (re)loaded on every reset.
#[derive(Clone, Debug)]
pub struct DirectKernel {
    pub format: KernelFormat,
    path: PathBuf,
    kernel: Vec<u8>,
    /// Module contents and their strings (one initrd for Linux/PVH, with an empty string).
    modules: Vec<(Vec<u8>, String)>,
    cmdline: String,
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>> {
    let data =
        std::fs::read(path).with_context(|| format!("failed to read {what} {}", path.display()))?;
    if data.is_empty() {
        bail!("{what} {} is empty", path.display());
    }
    Ok(data)
}

/// Split at single commas; ",," is a literal comma (QEMU's option syntax).
fn split_commas(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' && chars.peek() == Some(&',') {
            chars.next();
            if let Some(p) = parts.last_mut() {
                p.push(',');
            }
        } else if c == ',' {
            parts.push(String::new());
        } else if let Some(p) = parts.last_mut() {
            p.push(c);
        }
    }
    parts
}

/// The format of a kernel image, or why it has none we boot.
pub fn detect(kernel: &[u8]) -> Result<KernelFormat> {
    if kernel.get(0x202..0x206) == Some(b"HdrS".as_slice()) {
        return Ok(KernelFormat::BzImage);
    }
    if multiboot::find_header(kernel)?.is_some() {
        return Ok(KernelFormat::Multiboot);
    }
    if kernel.starts_with(b"\x7fELF") {
        return Ok(KernelFormat::Pvh);
    }
    bail!("not a bzImage, multiboot kernel or ELF kernel with a PVH note")
}

impl DirectKernel {
    /// Read and identify the kernel and its initrd or modules.
    pub fn open(cfg: &KernelConfig) -> Result<Self> {
        let kernel = read_file("kernel", &cfg.path)?;
        let format = detect(&kernel).with_context(|| format!("kernel {}", cfg.path.display()))?;
        let mut modules = Vec::new();
        if let Some(initrd) = &cfg.initrd {
            if format == KernelFormat::Multiboot {
                for part in split_commas(initrd) {
                    let file = part.split(' ').next().unwrap_or_default();
                    if file.is_empty() {
                        bail!("invalid -initrd '{initrd}': a module has no file name");
                    }
                    let data = read_file("multiboot module", Path::new(file))?;
                    modules.push((data, part.clone()));
                }
            } else {
                modules.push((read_file("initrd", Path::new(initrd))?, String::new()));
            }
        }
        Ok(DirectKernel {
            format,
            path: cfg.path.clone(),
            kernel,
            modules,
            cmdline: cfg.cmdline.clone(),
        })
    }

    /// Whether the kernel is entered in 64-bit long mode.
    pub fn needs_long_mode(&self) -> bool {
        self.format == KernelFormat::BzImage
    }

    /// Load everything into RAM (with the ACPI tables) and return the entry CPU state.
    pub fn load(&self, memory: &GuestMemory) -> Result<CpuState> {
        let initrd = self.modules.first().map(|(d, _)| d.as_slice());
        let loaded = match self.format {
            KernelFormat::BzImage => {
                linux::load_bzimage(memory, &self.kernel, initrd, &self.cmdline)
            }
            KernelFormat::Pvh => linux::load_pvh(memory, &self.kernel, initrd, &self.cmdline),
            KernelFormat::Multiboot => {
                let modules: Vec<(&[u8], &str)> = self
                    .modules
                    .iter()
                    .map(|(d, s)| (d.as_slice(), s.as_str()))
                    .collect();
                let e820 = linux::direct_boot_e820(memory.layout());
                // The e820 map declares the ACPI area, so fill it as for Linux.
                linux::place_acpi(memory).and_then(|_| {
                    multiboot::load_multiboot(memory, &self.kernel, &modules, &self.cmdline, &e820)
                })
            }
        };
        loaded
            .map(|d| d.cpu)
            .map_err(|e| anyhow!("kernel {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect(&bz).unwrap(), KernelFormat::BzImage);
        let mut mb = vec![0u8; 64];
        let magic = 0x1BAD_B002u32;
        mb[0..4].copy_from_slice(&magic.to_le_bytes());
        mb[8..12].copy_from_slice(&magic.wrapping_neg().to_le_bytes());
        assert_eq!(detect(&mb).unwrap(), KernelFormat::Multiboot);
        assert_eq!(detect(b"\x7fELF\x01").unwrap(), KernelFormat::Pvh);
        assert!(detect(b"garbage garbage").is_err());
    }

    #[test]
    fn module_list_splits_at_single_commas() {
        assert_eq!(split_commas("a x,,y,b"), vec!["a x,y", "b"]);
    }
}
