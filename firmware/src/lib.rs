//! pcvm-firmware: what the machine hands its firmware.
//!
//! - [`seabios`]: load and check a BIOS image (SeaBIOS `bios.bin`, `bios-256k.bin`, or any ROM
//!   with code at the reset vector) and map it at the top of 4 GiB.
//! - [`option_rom`]: load and check a legacy option ROM (the VGA BIOS).
//! - [`e820`]: the BIOS memory map derived from the RAM layout.
//! - [`fw_cfg_content`]: the items QEMU's fw_cfg device carries for SeaBIOS (e820, CPU count,
//!   boot order, sercon port, VGA ROM, ...), independent of the device that serves them.
//! - [`acpi`]: ACPI tables (RSDP, RSDT/XSDT, FADT, MADT, HPET, DSDT) for fw_cfg's table-loader
//!   or direct placement.
//! - [`linux`]: direct boot of a bzImage (64-bit entry) or a PVH ELF kernel.
//! - [`mtrr`]: the memory-type ranges a BIOS sets, for `-kernel` boots that run none.
//! - [`multiboot`]: multiboot v1 kernels (a.out kludge or ELF32) for `-kernel`.
//! - [`cmos`]: the CMOS NVRAM bytes a PC BIOS reads (memory sizes, boot order, equipment).
#![forbid(unsafe_code)]

pub mod acpi;
pub mod cmos;
pub mod e820;
pub mod error;
pub mod fw_cfg_content;
pub mod linux;
pub mod mtrr;
pub mod multiboot;
pub mod option_rom;
pub mod seabios;

pub use error::{Error, Result};
