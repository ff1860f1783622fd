//! A 16550A UART (PC COM port) built on vm-superio's `Serial`.
//!
//! vm-superio models the register file (TI PC16550D data sheet: RBR/THR, IER, IIR, LCR, MCR,
//! LSR, MSR, SCR, the divisor latch, loopback and a 64-byte receive FIFO). This wrapper adds
//! what the PC side needs and vm-superio leaves to its user:
//! - IIR reports the highest-priority pending source (received data beats THR empty) and only
//!   shows the FIFO-enabled bits after FCR bit 0 is set, as a 16550A does; reading IIR does not
//!   withdraw a received-data interrupt while data is still waiting (vm-superio clears it).
//! - FCR bit 1 clears the receive FIFO.
//! - vm-superio's trigger becomes a pulse on the ISA [`IrqLine`] (the PIC input is
//!   edge-triggered); like QEMU, MCR OUT2 does not gate the interrupt.
//! - Guest RX arrives through [`Uart16550::enqueue_input`], callable from another thread
//!   through `Arc<Mutex<Uart16550>>`.
//!
//! SeaBIOS detects a port by writing IER = 2, reading it back and checking IIR & 0x3F == 2
//! (serial.c), then drives its console with LCR = 3, FCR = 1 and polls LSR & 0x60.
//!
//! Left out: transmit timing (THR is always empty), line errors and breaks, and modem status
//! changes (the modem lines read as connected).

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pcvm_core::{BusAccess, BusDevice, IrqLine};
use serde::{Deserialize, Serialize};
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::{Serial, Trigger};

/// COM1 base port.
pub const COM1_PORT: u16 = 0x3F8;
/// COM1 interrupt.
pub const COM1_IRQ: u8 = 4;
/// COM2 base port.
pub const COM2_PORT: u16 = 0x2F8;
/// COM2 interrupt.
pub const COM2_IRQ: u8 = 3;
/// COM3 base port.
pub const COM3_PORT: u16 = 0x3E8;
/// COM3 interrupt.
pub const COM3_IRQ: u8 = 4;
/// COM4 base port.
pub const COM4_PORT: u16 = 0x2E8;
/// COM4 interrupt.
pub const COM4_IRQ: u8 = 3;
/// Ports a UART decodes from its base.
pub const UART_PORT_LEN: u64 = 8;
/// COM1–COM4 as (base port, IRQ).
pub const COM_PORTS: [(u16, u8); 4] = [
    (COM1_PORT, COM1_IRQ),
    (COM2_PORT, COM2_IRQ),
    (COM3_PORT, COM3_IRQ),
    (COM4_PORT, COM4_IRQ),
];

const DATA: u8 = 0;
const IER: u8 = 1;
const IIR_FCR: u8 = 2;
const LCR: u8 = 3;
const LSR: u8 = 5;

/// IER: received data available interrupt.
pub const IER_RDA: u8 = 0b0000_0001;
/// IER: THR empty interrupt.
pub const IER_THRE: u8 = 0b0000_0010;
/// IIR: no interrupt pending.
pub const IIR_NONE: u8 = 0b0000_0001;
/// IIR: THR empty.
pub const IIR_THRE: u8 = 0b0000_0010;
/// IIR: received data available.
pub const IIR_RDA: u8 = 0b0000_0100;
/// IIR: FIFOs enabled (16550A).
pub const IIR_FIFO_ENABLED: u8 = 0b1100_0000;
/// FCR: enable FIFOs.
pub const FCR_ENABLE: u8 = 0b0000_0001;
/// FCR: clear the receive FIFO.
pub const FCR_CLEAR_RX: u8 = 0b0000_0010;
/// LCR: divisor latch access.
pub const LCR_DLAB: u8 = 0b1000_0000;
/// LSR: data ready.
pub const LSR_DATA_READY: u8 = 0b0000_0001;
/// LSR: THR empty.
pub const LSR_THR_EMPTY: u8 = 0b0010_0000;
/// LSR: transmitter empty.
pub const LSR_TX_EMPTY: u8 = 0b0100_0000;

/// Size of the receive FIFO vm-superio keeps.
const RX_FIFO_SIZE: usize = 64;

/// vm-superio's interrupt trigger: records that the UART wants to interrupt.
struct FlagTrigger(Arc<AtomicBool>);

impl Trigger for FlagTrigger {
    type E = Infallible;
    fn trigger(&self) -> Result<(), Infallible> {
        self.0.store(true, Ordering::Release);
        Ok(())
    }
}

type Inner = Serial<FlagTrigger, NoEvents, Box<dyn Write + Send>>;

/// The UART's registers, for snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uart16550State {
    /// Divisor latch low byte.
    pub divisor_low: u8,
    /// Divisor latch high byte.
    pub divisor_high: u8,
    /// IER.
    pub ier: u8,
    /// vm-superio's internal IIR bits.
    pub iir: u8,
    /// LCR.
    pub lcr: u8,
    /// LSR.
    pub lsr: u8,
    /// MCR.
    pub mcr: u8,
    /// MSR.
    pub msr: u8,
    /// Scratch register.
    pub scratch: u8,
    /// FCR bit 0 (FIFOs enabled).
    pub fifo_enabled: bool,
    /// Received bytes not yet read.
    pub rx: Vec<u8>,
}

/// A 16550A UART on one ISA interrupt line, writing what the guest sends to `out`.
pub struct Uart16550 {
    serial: Inner,
    wants_irq: Arc<AtomicBool>,
    irq: Arc<dyn IrqLine>,
    lcr: u8,
    ier: u8,
    fifo_enabled: bool,
    output_failed: bool,
}

impl Uart16550 {
    /// A UART in the power-on state.
    pub fn new(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>) -> Self {
        let wants_irq = Arc::new(AtomicBool::new(false));
        let serial = Serial::new(FlagTrigger(wants_irq.clone()), out);
        let lcr = serial.state().line_control;
        Uart16550 {
            serial,
            wants_irq,
            irq,
            lcr,
            ier: 0,
            fifo_enabled: false,
            output_failed: false,
        }
    }

    /// Queue bytes for the guest to receive; returns how many fit in the 64-byte FIFO (the
    /// caller keeps the rest and retries later).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let n = self.serial.enqueue_raw_bytes(bytes).unwrap_or(0);
        self.forward_irq();
        n
    }

    /// Free space in the receive FIFO.
    pub fn input_capacity(&self) -> usize {
        self.serial.fifo_capacity()
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    fn forward_irq(&mut self) {
        if self.wants_irq.swap(false, Ordering::AcqRel) {
            self.irq.pulse();
        }
    }

    fn read_reg(&mut self, offset: u8) -> u8 {
        let value = match offset {
            IIR_FCR => {
                let fifo = if self.fifo_enabled {
                    IIR_FIFO_ENABLED
                } else {
                    0
                };
                let lsr = self.serial.read(LSR);
                if self.ier & IER_RDA != 0 && lsr & LSR_DATA_READY != 0 {
                    // Received data outranks THR empty and stays pending until read.
                    IIR_RDA | fifo
                } else {
                    // vm-superio clears its pending bits on this read, which is right for THRE.
                    let raw = self.serial.read(IIR_FCR);
                    let id = if raw & IIR_THRE != 0 && self.ier & IER_THRE != 0 {
                        IIR_THRE
                    } else {
                        IIR_NONE
                    };
                    id | fifo
                }
            }
            0..=7 => self.serial.read(offset),
            _ => 0xFF,
        };
        self.forward_irq();
        value
    }

    fn write_reg(&mut self, offset: u8, value: u8) {
        match offset {
            IER if !self.dlab() => self.ier = value & 0x0F,
            IIR_FCR => {
                self.fifo_enabled = value & FCR_ENABLE != 0;
                if value & FCR_CLEAR_RX != 0 {
                    for _ in 0..RX_FIFO_SIZE {
                        if self.serial.read(LSR) & LSR_DATA_READY == 0 {
                            break;
                        }
                        self.serial.read(DATA);
                    }
                }
            }
            LCR => self.lcr = value,
            _ => {}
        }
        if offset < 8 {
            if let Err(e) = self.serial.write(offset, value) {
                if !self.output_failed {
                    tracing::warn!("uart16550: output failed, further bytes dropped: {e:?}");
                    self.output_failed = true;
                }
            }
        }
        self.forward_irq();
    }

    /// The registers, for snapshots.
    pub fn state(&self) -> Uart16550State {
        let s = self.serial.state();
        Uart16550State {
            divisor_low: s.baud_divisor_low,
            divisor_high: s.baud_divisor_high,
            ier: s.interrupt_enable,
            iir: s.interrupt_identification,
            lcr: s.line_control,
            lsr: s.line_status,
            mcr: s.modem_control,
            msr: s.modem_status,
            scratch: s.scratch,
            fifo_enabled: self.fifo_enabled,
            rx: s.in_buffer,
        }
    }

    /// Restore registers from a snapshot, keeping the output writer.
    pub fn set_state(&mut self, state: &Uart16550State) {
        let placeholder = Serial::new(
            FlagTrigger(self.wants_irq.clone()),
            Box::new(std::io::sink()) as Box<dyn Write + Send>,
        );
        let out = std::mem::replace(&mut self.serial, placeholder).into_writer();
        let mut rx = state.rx.clone();
        rx.truncate(RX_FIFO_SIZE);
        let s = SerialState {
            baud_divisor_low: state.divisor_low,
            baud_divisor_high: state.divisor_high,
            interrupt_enable: state.ier & 0x0F,
            interrupt_identification: state.iir,
            line_control: state.lcr,
            line_status: state.lsr,
            modem_control: state.mcr,
            modem_status: state.msr,
            scratch: state.scratch,
            in_buffer: rx,
        };
        self.serial = Serial::from_state(&s, FlagTrigger(self.wants_irq.clone()), NoEvents, out)
            .unwrap_or_else(|_| {
                Serial::new(
                    FlagTrigger(self.wants_irq.clone()),
                    Box::new(std::io::sink()) as Box<dyn Write + Send>,
                )
            });
        self.lcr = state.lcr;
        self.ier = state.ier & 0x0F;
        self.fifo_enabled = state.fifo_enabled;
        self.forward_irq();
    }
}

impl BusDevice for Uart16550 {
    fn name(&self) -> &str {
        "uart16550"
    }

    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let offset = access.offset.wrapping_add(i as u64);
            *b = u8::try_from(offset).map_or(0xFF, |o| self.read_reg(o));
        }
    }

    fn write(&mut self, access: BusAccess, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            if let Ok(o) = u8::try_from(access.offset.wrapping_add(i as u64)) {
                self.write_reg(o, b);
            }
        }
    }

    fn reset(&mut self) {
        let mut s = Uart16550State::default();
        let fresh = SerialState::default();
        s.divisor_low = fresh.baud_divisor_low;
        s.divisor_high = fresh.baud_divisor_high;
        s.iir = fresh.interrupt_identification;
        s.lcr = fresh.line_control;
        s.lsr = fresh.line_status;
        s.mcr = fresh.modem_control;
        s.msr = fresh.modem_status;
        self.set_state(&s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Edges(AtomicU32);
    impl IrqLine for Edges {
        fn set_level(&self, high: bool) {
            if high {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn setup() -> (Uart16550, Arc<Edges>, SharedBuf) {
        let irq = Arc::new(Edges::default());
        let out = SharedBuf::default();
        (Uart16550::new(irq.clone(), Box::new(out.clone())), irq, out)
    }
    fn outb(u: &mut Uart16550, off: u64, v: u8) {
        u.write(
            BusAccess {
                offset: off,
                addr: 0x3F8 + off,
            },
            &[v],
        );
    }
    fn inb(u: &mut Uart16550, off: u64) -> u8 {
        let mut b = [0];
        u.read(
            BusAccess {
                offset: off,
                addr: 0x3F8 + off,
            },
            &mut b,
        );
        b[0]
    }

    #[test]
    fn seabios_detection_and_console() {
        let (mut u, _, out) = setup();
        outb(&mut u, 1, 0x02);
        assert_eq!(inb(&mut u, 1), 0x02, "IER reads back");
        assert_eq!(inb(&mut u, 2) & 0x3F, 0x02, "IIR reports THR empty");
        outb(&mut u, 1, 0x00);
        // sercon setup.
        outb(&mut u, 3, 0x03);
        outb(&mut u, 2, 0x01);
        assert_eq!(inb(&mut u, 5) & 0x60, 0x60);
        for &b in b"SeaBIOS" {
            outb(&mut u, 0, b);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"SeaBIOS");
        assert_eq!(inb(&mut u, 2), IIR_FIFO_ENABLED | IIR_NONE);
    }

    #[test]
    fn receive_with_interrupt_priority() {
        let (mut u, irq, _) = setup();
        outb(&mut u, 1, IER_RDA | IER_THRE);
        let before = irq.0.load(Ordering::SeqCst);
        assert_eq!(u.enqueue_input(b"hi"), 2);
        assert!(irq.0.load(Ordering::SeqCst) > before);
        assert_eq!(inb(&mut u, 2) & 0x0F, IIR_RDA, "RDA outranks THRE");
        assert_eq!(
            inb(&mut u, 2) & 0x0F,
            IIR_RDA,
            "still pending after an IIR read"
        );
        assert_eq!(inb(&mut u, 5) & LSR_DATA_READY, 1);
        assert_eq!(inb(&mut u, 0), b'h');
        assert_eq!(inb(&mut u, 0), b'i');
        assert_eq!(inb(&mut u, 5) & LSR_DATA_READY, 0);
        assert_ne!(inb(&mut u, 2) & 0x0F, IIR_RDA);
        // FIFO full: the rest is refused.
        assert_eq!(u.enqueue_input(&[0u8; 100]), 64);
        assert_eq!(u.input_capacity(), 0);
        assert_eq!(u.enqueue_input(b"x"), 0);
        outb(&mut u, 2, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(
            inb(&mut u, 5) & LSR_DATA_READY,
            0,
            "FCR cleared the RX FIFO"
        );
    }

    #[test]
    fn divisor_latch_scratch_and_loopback() {
        let (mut u, _, out) = setup();
        outb(&mut u, 3, 0x80);
        outb(&mut u, 0, 0x01);
        outb(&mut u, 1, 0x00);
        assert_eq!(inb(&mut u, 0), 0x01);
        outb(&mut u, 3, 0x03);
        assert_eq!(inb(&mut u, 1), 0x00, "IER untouched by divisor writes");
        outb(&mut u, 7, 0x5A);
        assert_eq!(inb(&mut u, 7), 0x5A);
        outb(&mut u, 4, 0x10); // loopback
        outb(&mut u, 0, b'L');
        assert_eq!(inb(&mut u, 0), b'L');
        assert!(out.0.lock().unwrap().is_empty());
        assert_eq!(inb(&mut u, 9), 0xFF);
    }

    #[test]
    fn input_from_another_thread_and_state() {
        let (u, _, _) = setup();
        let u = Arc::new(Mutex::new(u));
        let u2 = u.clone();
        std::thread::spawn(move || u2.lock().unwrap().enqueue_input(b"abc"))
            .join()
            .unwrap();
        let mut g = u.lock().unwrap();
        assert_eq!(inb(&mut g, 0), b'a');
        let state = g.state();
        let json = serde_json::to_string(&state).unwrap();
        let back: Uart16550State = serde_json::from_str(&json).unwrap();
        let (mut other, _, _) = setup();
        other.set_state(&back);
        assert_eq!(inb(&mut other, 0), b'b');
        other.reset();
        assert_eq!(inb(&mut other, 5) & LSR_DATA_READY, 0);
    }
}
