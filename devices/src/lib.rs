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
//!
//! Wiring of the core chips (constants in each module):
//!
//! | chip | ports | IRQ | also |
//! |------|-------|-----|------|
//! | [`Pic8259Pair`] | 0x20–0x21, 0xA0–0xA1, 0x4D0–0x4D1 (one device, three ranges) | — | drives the `IntrPin`; is the board's `InterruptController` |
//! | [`Pit8254`] | 0x40–0x43 | 0 | `TimerDevice` with its `TimerHandle` |
//! | [`Port61`] | 0x61 | — | shares the PIT |
//! | [`Rtc`] | 0x70–0x71 | 8 | `TimerDevice`; NVRAM setters for the firmware |
//! | [`Uart16550`] | 0x3F8/0x2F8/0x3E8/0x2E8, 8 each | 4/3/4/3 | |
//! | [`I8042`] | 0x60, 0x64 | 1, 12 | A20 via `GuestMemory`, reset via `SystemRequests` |
//! | [`FastA20Port`] | 0x92 | — | |
//! | [`PostCodePort`] | 0x80 | — | |
//! | [`DebugCon`] | 0x402 (any) | — | |
//! | [`DebugExit`] | 0xF4, 4 ports (any) | — | |
//! | [`ResetControl`] | 0xCF9 through the PCI config ports | — | |
//! | [`FwCfg`] | 0x510–0x511, 0x514–0x51B | — | DMA via `GuestMemory` |
//!
//! | [`lapic::LocalApic`] | MMIO 0xFEE00000 len 0x1000 | — | `TimerDevice`; [`lapic::LocalApicFront`] is the board's `InterruptController` (8259 on INTR input 1 behind LINT0) |
//! | [`ioapic::IoApic`] | MMIO 0xFEC00000 len 0x1000 | — | GSI 0–23; the LAPIC's EOI broadcast calls `end_of_interrupt` |
//! | [`hpet::Hpet`] | MMIO 0xFED00000 len 0x400 | 0/8 (legacy), GSI 20–23 | `TimerDevice` |
//! | [`acpi_pm::Piix4Pm`] | [`acpi_pm::AcpiPmPorts`] windows at 0x600 and 0xB000, len 0x40 | 9 (SCI) | PCI 00:01.3, `TimerDevice` |
//!
//! Interrupt lines are [`PicIrqLine`]s, or with the I/O APIC [`gsi::IsaIrqLine`]s (8259 input
//! and I/O APIC pin, IRQ0 on GSI 2). Lock order: device → PIC → I/O APIC, never the reverse;
//! the I/O APIC reaches the local APIC only through its lock-free [`lapic::LapicInput`].
#![forbid(unsafe_code)]

pub mod acpi_pm;
pub mod debug_exit;
pub mod debugcon;
pub mod error;
pub mod fw_cfg;
pub mod gsi;
pub mod hpet;
pub mod i8042;
pub mod i8254;
pub mod i8259;
pub mod ide;
pub mod ioapic;
pub mod lapic;
pub mod mc146818;
pub mod pci;
pub mod port92;
pub mod post;
pub mod reset_control;
pub mod uart16550;
pub mod vga;

pub use debug_exit::DebugExit;
pub use debugcon::DebugCon;
pub use error::{Error, Result};
pub use fw_cfg::FwCfg;
pub use i8042::I8042;
pub use i8254::{Pit8254, Port61};
pub use i8259::{Pic8259Pair, PicIrqLine};
pub use mc146818::{BootDevice, Rtc};
pub use port92::FastA20Port;
pub use post::PostCodePort;
pub use reset_control::ResetControl;
pub use uart16550::Uart16550;
