//! pcvm-devices: the chips of a QEMU-style "pc" machine (i440FX + PIIX3), one module per chip.
//!
//! Every device is host-agnostic: it implements [`pcvm_core::BusDevice`], raises interrupts through
//! an injected [`pcvm_core::IrqLine`], reads time from a [`pcvm_core::VirtualClock`], writes
//! output to a `std::io::Write`, and asks for reset/power-off via [`pcvm_core::SystemRequests`].
//! The machine (root crate) registers them on the buses.
//!
//! Core chips:
//! - [`i8259`]: the 8259A PIC pair with ELCR.
//! - [`i8254`]: the 8254 PIT and system control port B (0x61).
//! - [`mc146818`]: the MC146818 RTC and CMOS NVRAM.
//! - [`uart16550`]: 16550A UARTs (COM1–COM4) over vm-superio.
//! - [`i8042`]: the keyboard controller with a PS/2 keyboard.
//! - [`port92`], [`post`], [`debugcon`], [`debug_exit`], [`reset_control`]: small ISA ports.
//! - [`fw_cfg`]: QEMU's firmware configuration interface.
#![forbid(unsafe_code)]

pub mod debug_exit;
pub mod debugcon;
pub mod error;
pub mod fw_cfg;
pub mod i8042;
pub mod i8254;
pub mod i8259;
pub mod ide;
pub mod mc146818;
pub mod pci;
pub mod port92;
pub mod post;
pub mod reset_control;
pub mod uart16550;

pub use error::{Error, Result};
