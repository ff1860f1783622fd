//! pcvm: an x86 PC emulator. This crate assembles the machine from the workspace crates and
//! provides the command line; the library half lets tests build and run machines in-process.
//!
//! - [`cli`]: QEMU-style options → [`machine::MachineConfig`].
//! - [`machine`]: builds the PC and runs it.
//! - [`console`]: host ends of serial ports and the debug console.
//! - [`direct`]: `-kernel` direct boot (bzImage, multiboot, PVH).
//! - [`guest`]: the built-in demo guest.
//! - [`power`]: the APM power-off port.

pub mod cli;
pub mod console;
pub mod direct;
pub mod gdb;
pub mod guest;
pub mod machine;
pub mod power;

pub use machine::{Exit, Machine, MachineConfig};
