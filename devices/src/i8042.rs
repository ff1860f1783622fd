//! The Intel 8042 keyboard controller of the PC/AT with a PS/2 keyboard attached.
//!
//! Models (IBM PC AT Technical Reference, "Keyboard controller"; IBM PS/2 Hardware Interface
//! Technical Reference, "Keyboard and auxiliary device controller" and "Keyboard"):
//! - the controller: status (0x64 read), commands (0x64 write), data (0x60), the command
//!   byte (0x20/0x60), self-test 0xAA → 0x55, interface tests 0xAB/0xA9 → 0x00, keyboard and
//!   aux enable/disable (0xAE/0xAD/0xA8/0xA7), output port read/write (0xD0/0xD1: bit 1 is
//!   the A20 gate, bit 0 low resets the CPU), 0xD2/0xD3 (write the output buffer as keyboard
//!   or aux), 0xDD/0xDF (A20 off/on), and the pulse commands 0xF0–0xFF (0xFE pulses reset);
//! - a PS/2 keyboard: reset 0xFF → 0xFA 0xAA, 0xF5/0xF4/0xF6 disable/enable/defaults, 0xF0
//!   scan-code set, 0xED LEDs, 0xF2 identify, 0xF3 typematic, 0xEE echo, 0xFE resend, each
//!   acknowledged with 0xFA;
//! - keystrokes fed by the host ([`I8042::key_input`] for ASCII, [`I8042::key_event`] for any
//!   key by its set-2 code) as set-2 make/break codes, translated to set 1 when the command
//!   byte's XLAT bit is set (or the keyboard was switched to set 1);
//! - IRQ1 (keyboard) and IRQ12 (aux) while the output buffer is full and the command byte
//!   enables them.
//!
//! Left out: a PS/2 mouse (bytes sent to the aux port with 0xD4 are dropped; 0xD3 still loops
//! data back as aux input), scan-code set 3 (the keyboard keeps sending set 2), typematic
//! repeat, and the password/RAM commands beyond the command byte.

use std::sync::Arc;

use pcvm_core::{BusAccess, BusDevice, GuestMemory, IrqLine, SystemRequests};
use serde::{Deserialize, Serialize};

/// Data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// Status (read) / command (write) port.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// Keyboard interrupt.
pub const I8042_KBD_IRQ: u8 = 1;
/// Auxiliary (mouse) interrupt.
pub const I8042_AUX_IRQ: u8 = 12;

/// Status: output buffer full.
pub const STATUS_OBF: u8 = 0b0000_0001;
/// Status: input buffer full (never: commands complete at once).
pub const STATUS_IBF: u8 = 0b0000_0010;
/// Status: system flag (self-test passed / command byte bit 2).
pub const STATUS_SYS: u8 = 0b0000_0100;
/// Status: the last write was to the command port.
pub const STATUS_CMD: u8 = 0b0000_1000;
/// Status: keyboard not inhibited.
pub const STATUS_UNLOCKED: u8 = 0b0001_0000;
/// Status: the output buffer holds aux data.
pub const STATUS_AUX_OBF: u8 = 0b0010_0000;

/// Command byte: keyboard interrupt enable.
pub const CTR_KBD_INT: u8 = 0b0000_0001;
/// Command byte: aux interrupt enable.
pub const CTR_AUX_INT: u8 = 0b0000_0010;
/// Command byte: system flag.
pub const CTR_SYS: u8 = 0b0000_0100;
/// Command byte: keyboard disabled.
pub const CTR_KBD_DISABLE: u8 = 0b0001_0000;
/// Command byte: aux disabled.
pub const CTR_AUX_DISABLE: u8 = 0b0010_0000;
/// Command byte: translate set 2 to set 1.
pub const CTR_XLATE: u8 = 0b0100_0000;

/// Output port: CPU reset line (active low).
pub const OUTPORT_RESET: u8 = 0b0000_0001;
/// Output port: A20 gate.
pub const OUTPORT_A20: u8 = 0b0000_0010;
/// Output port: keyboard output buffer full (read only, mirrors status).
const OUTPORT_OBF: u8 = 0b0001_0000;
/// Output port: aux output buffer full (read only, mirrors status).
const OUTPORT_AUX_OBF: u8 = 0b0010_0000;

/// Keyboard acknowledge.
pub const KBD_ACK: u8 = 0xFA;
/// Keyboard basic assurance test passed.
pub const KBD_BAT_OK: u8 = 0xAA;
/// Keyboard resend request / unknown command.
pub const KBD_RESEND: u8 = 0xFE;

/// How many scan-code bytes the keyboard buffers before dropping keystrokes.
const KBD_QUEUE_LIMIT: usize = 64;
/// How many controller responses or aux bytes wait at most.
const QUEUE_LIMIT: usize = 16;

/// Who put a byte into the output buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// A controller command response (reported as keyboard data).
    Controller,
    /// The keyboard.
    Keyboard,
    /// The aux port.
    Aux,
}

/// The PS/2 keyboard's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ps2KeyboardState {
    /// Scanning enabled (0xF4) or disabled (0xF5).
    pub scanning: bool,
    /// Selected scan-code set (1–3).
    pub scan_set: u8,
    /// A command waiting for its parameter byte.
    pub expect: Option<u8>,
    /// The last byte sent (for 0xFE resend).
    pub last_sent: u8,
    /// LED state (0xED).
    pub leds: u8,
    /// Typematic rate/delay (0xF3).
    pub typematic: u8,
}

impl Default for Ps2KeyboardState {
    fn default() -> Self {
        Ps2KeyboardState {
            scanning: true,
            scan_set: 2,
            expect: None,
            last_sent: 0,
            leds: 0,
            typematic: 0x2B,
        }
    }
}

/// The controller's state, for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    /// Command byte.
    pub ctr: u8,
    /// Self-test passed (status SYS).
    pub sys_flag: bool,
    /// The last write went to the command port.
    pub last_was_command: bool,
    /// Output port.
    pub outport: u8,
    /// The output buffer.
    pub out: Option<(u8, Source)>,
    /// The data byte last read (re-read when the buffer is empty).
    pub last_out: u8,
    /// A controller command waiting for its data byte.
    pub pending_command: Option<u8>,
    /// Bytes the controller itself puts in the output buffer (command responses, and
    /// 0xD2/0xD3 writes tagged as keyboard/aux data), ahead of the keyboard.
    pub ctrl_queue: Vec<(u8, Source)>,
    /// Keyboard bytes not yet in the output buffer.
    pub kbd_queue: Vec<u8>,
    /// The keyboard.
    pub keyboard: Ps2KeyboardState,
}

impl Default for I8042State {
    fn default() -> Self {
        I8042State {
            ctr: CTR_KBD_INT | CTR_AUX_INT,
            sys_flag: false,
            last_was_command: false,
            outport: OUTPORT_RESET | OUTPORT_A20,
            out: None,
            last_out: 0,
            pending_command: None,
            ctrl_queue: Vec::new(),
            kbd_queue: Vec::new(),
            keyboard: Ps2KeyboardState::default(),
        }
    }
}

/// Keys by (set-1 code, set-2 code), both with an 0xE0 prefix when the high byte is 0xE0.
/// (IBM PS/2 Keyboard Technical Reference, scan-code tables for sets 1 and 2.)
const KEY_CODES: &[(u16, u16)] = &[
    (0x01, 0x76),     // Esc
    (0x02, 0x16),     // 1
    (0x03, 0x1E),     // 2
    (0x04, 0x26),     // 3
    (0x05, 0x25),     // 4
    (0x06, 0x2E),     // 5
    (0x07, 0x36),     // 6
    (0x08, 0x3D),     // 7
    (0x09, 0x3E),     // 8
    (0x0A, 0x46),     // 9
    (0x0B, 0x45),     // 0
    (0x0C, 0x4E),     // -
    (0x0D, 0x55),     // =
    (0x0E, 0x66),     // Backspace
    (0x0F, 0x0D),     // Tab
    (0x10, 0x15),     // Q
    (0x11, 0x1D),     // W
    (0x12, 0x24),     // E
    (0x13, 0x2D),     // R
    (0x14, 0x2C),     // T
    (0x15, 0x35),     // Y
    (0x16, 0x3C),     // U
    (0x17, 0x43),     // I
    (0x18, 0x44),     // O
    (0x19, 0x4D),     // P
    (0x1A, 0x54),     // [
    (0x1B, 0x5B),     // ]
    (0x1C, 0x5A),     // Enter
    (0x1D, 0x14),     // Left Ctrl
    (0x1E, 0x1C),     // A
    (0x1F, 0x1B),     // S
    (0x20, 0x23),     // D
    (0x21, 0x2B),     // F
    (0x22, 0x34),     // G
    (0x23, 0x33),     // H
    (0x24, 0x3B),     // J
    (0x25, 0x42),     // K
    (0x26, 0x4B),     // L
    (0x27, 0x4C),     // ;
    (0x28, 0x52),     // '
    (0x29, 0x0E),     // `
    (0x2A, 0x12),     // Left Shift
    (0x2B, 0x5D),     // backslash
    (0x2C, 0x1A),     // Z
    (0x2D, 0x22),     // X
    (0x2E, 0x21),     // C
    (0x2F, 0x2A),     // V
    (0x30, 0x32),     // B
    (0x31, 0x31),     // N
    (0x32, 0x3A),     // M
    (0x33, 0x41),     // ,
    (0x34, 0x49),     // .
    (0x35, 0x4A),     // /
    (0x36, 0x59),     // Right Shift
    (0x37, 0x7C),     // Keypad *
    (0x38, 0x11),     // Left Alt
    (0x39, 0x29),     // Space
    (0x3A, 0x58),     // Caps Lock
    (0x3B, 0x05),     // F1
    (0x3C, 0x06),     // F2
    (0x3D, 0x04),     // F3
    (0x3E, 0x0C),     // F4
    (0x3F, 0x03),     // F5
    (0x40, 0x0B),     // F6
    (0x41, 0x83),     // F7
    (0x42, 0x0A),     // F8
    (0x43, 0x01),     // F9
    (0x44, 0x09),     // F10
    (0x45, 0x77),     // Num Lock
    (0x46, 0x7E),     // Scroll Lock
    (0x57, 0x78),     // F11
    (0x58, 0x07),     // F12
    (0xE01D, 0xE014), // Right Ctrl
    (0xE038, 0xE011), // Right Alt
    (0xE047, 0xE06C), // Home
    (0xE048, 0xE075), // Up
    (0xE049, 0xE07D), // Page Up
    (0xE04B, 0xE06B), // Left
    (0xE04D, 0xE074), // Right
    (0xE04F, 0xE069), // End
    (0xE050, 0xE072), // Down
    (0xE051, 0xE07A), // Page Down
    (0xE052, 0xE070), // Insert
    (0xE053, 0xE071), // Delete
];

/// Set-2 codes of keys the terminal commonly sends.
pub mod keys {
    /// Escape.
    pub const ESC: u16 = 0x76;
    /// Enter.
    pub const ENTER: u16 = 0x5A;
    /// Backspace.
    pub const BACKSPACE: u16 = 0x66;
    /// Tab.
    pub const TAB: u16 = 0x0D;
    /// Left Shift.
    pub const LEFT_SHIFT: u16 = 0x12;
    /// Left Ctrl.
    pub const LEFT_CTRL: u16 = 0x14;
    /// Left Alt.
    pub const LEFT_ALT: u16 = 0x11;
    /// F1 (F2..F12: 0x06, 0x04, 0x0C, 0x03, 0x0B, 0x83, 0x0A, 0x01, 0x09, 0x78, 0x07).
    pub const F1: u16 = 0x05;
    /// Cursor up.
    pub const UP: u16 = 0xE075;
    /// Cursor down.
    pub const DOWN: u16 = 0xE072;
    /// Cursor left.
    pub const LEFT: u16 = 0xE06B;
    /// Cursor right.
    pub const RIGHT: u16 = 0xE074;
    /// Home.
    pub const HOME: u16 = 0xE06C;
    /// End.
    pub const END: u16 = 0xE069;
    /// Page up.
    pub const PAGE_UP: u16 = 0xE07D;
    /// Page down.
    pub const PAGE_DOWN: u16 = 0xE07A;
    /// Insert.
    pub const INSERT: u16 = 0xE070;
    /// Delete.
    pub const DELETE: u16 = 0xE071;
}

/// The US-layout key and Shift state producing `ascii`, as a set-2 code.
fn ascii_to_key(ascii: u8) -> Option<(u16, bool)> {
    const UNSHIFTED: &[u8] = b"1234567890-=qwertyuiop[]asdfghjkl;'`\\zxcvbnm,./";
    const SHIFTED: &[u8] = b"!@#$%^&*()_+QWERTYUIOP{}ASDFGHJKL:\"~|ZXCVBNM<>?";
    const SET2: &[u16] = &[
        0x16, 0x1E, 0x26, 0x25, 0x2E, 0x36, 0x3D, 0x3E, 0x46, 0x45, 0x4E, 0x55, 0x15, 0x1D, 0x24,
        0x2D, 0x2C, 0x35, 0x3C, 0x43, 0x44, 0x4D, 0x54, 0x5B, 0x1C, 0x1B, 0x23, 0x2B, 0x34, 0x33,
        0x3B, 0x42, 0x4B, 0x4C, 0x52, 0x0E, 0x5D, 0x1A, 0x22, 0x21, 0x2A, 0x32, 0x31, 0x3A, 0x41,
        0x49, 0x4A,
    ];
    match ascii {
        b' ' => Some((0x29, false)),
        b'\r' | b'\n' => Some((keys::ENTER, false)),
        b'\t' => Some((keys::TAB, false)),
        0x08 | 0x7F => Some((keys::BACKSPACE, false)),
        0x1B => Some((keys::ESC, false)),
        _ => {
            if let Some(i) = UNSHIFTED.iter().position(|&c| c == ascii) {
                SET2.get(i).map(|&k| (k, false))
            } else {
                SHIFTED
                    .iter()
                    .position(|&c| c == ascii)
                    .and_then(|i| SET2.get(i))
                    .map(|&k| (k, true))
            }
        }
    }
}

/// The set-1 code of a set-2 code (with its 0xE0 prefix in the high byte).
fn set2_to_set1(code: u16) -> Option<u16> {
    KEY_CODES
        .iter()
        .find(|&&(_, s2)| s2 == code)
        .map(|&(s1, _)| s1)
}

/// The i8042 controller and its PS/2 keyboard.
pub struct I8042 {
    s: I8042State,
    kbd_irq: Arc<dyn IrqLine>,
    aux_irq: Arc<dyn IrqLine>,
    memory: Arc<GuestMemory>,
    requests: SystemRequests,
}

impl I8042 {
    /// A controller in the power-on state: IRQ1 and IRQ12 lines, the memory whose A20 gate
    /// the output port drives, and the handle for reset requests.
    pub fn new(
        kbd_irq: Arc<dyn IrqLine>,
        aux_irq: Arc<dyn IrqLine>,
        memory: Arc<GuestMemory>,
        requests: SystemRequests,
    ) -> Self {
        I8042 {
            s: I8042State::default(),
            kbd_irq,
            aux_irq,
            memory,
            requests,
        }
    }

    /// The state, for snapshots.
    pub fn state(&self) -> I8042State {
        self.s.clone()
    }

    /// Restore a snapshot.
    pub fn set_state(&mut self, state: &I8042State) {
        self.s = state.clone();
        self.update_irq();
    }

    /// Type one ASCII character (US layout): Shift/Ctrl as needed, make, break.
    /// Characters with no key are ignored.
    pub fn key_input(&mut self, ascii: u8) {
        if (0x01..=0x1A).contains(&ascii) && !matches!(ascii, 0x08 | 0x09 | 0x0A | 0x0D) {
            // Ctrl+letter.
            let letter = b'a' + ascii - 1;
            if let Some((code, _)) = ascii_to_key(letter) {
                self.key_event(keys::LEFT_CTRL, true);
                self.key_event(code, true);
                self.key_event(code, false);
                self.key_event(keys::LEFT_CTRL, false);
            }
            return;
        }
        let Some((code, shift)) = ascii_to_key(ascii) else {
            tracing::debug!(ascii, "i8042: no key for character");
            return;
        };
        if shift {
            self.key_event(keys::LEFT_SHIFT, true);
        }
        self.key_event(code, true);
        self.key_event(code, false);
        if shift {
            self.key_event(keys::LEFT_SHIFT, false);
        }
    }

    /// Press or release the key with set-2 code `code` (0xE0xx for extended keys).
    pub fn key_event(&mut self, code: u16, pressed: bool) {
        if !self.s.keyboard.scanning {
            return;
        }
        let extended = code >> 8 == 0xE0;
        let mut bytes = Vec::with_capacity(3);
        let set1 = self.s.ctr & CTR_XLATE != 0 || self.s.keyboard.scan_set == 1;
        if set1 {
            let Some(c1) = set2_to_set1(code) else {
                tracing::debug!(code, "i8042: key has no set-1 code");
                return;
            };
            if extended {
                bytes.push(0xE0);
            }
            let b = c1 as u8;
            bytes.push(if pressed { b } else { b | 0x80 });
        } else {
            if extended {
                bytes.push(0xE0);
            }
            if !pressed {
                bytes.push(0xF0);
            }
            bytes.push(code as u8);
        }
        if self.s.kbd_queue.len() + bytes.len() > KBD_QUEUE_LIMIT {
            tracing::debug!("i8042: keyboard buffer full, keystroke dropped");
            return;
        }
        self.s.kbd_queue.extend_from_slice(&bytes);
        self.refill();
    }

    /// Move the next waiting byte into the output buffer and update IRQ1/IRQ12.
    fn refill(&mut self) {
        if self.s.out.is_none() {
            if !self.s.ctrl_queue.is_empty() {
                self.s.out = Some(self.s.ctrl_queue.remove(0));
            } else if self.s.ctr & CTR_KBD_DISABLE == 0 && !self.s.kbd_queue.is_empty() {
                self.s.out = Some((self.s.kbd_queue.remove(0), Source::Keyboard));
            }
        }
        self.update_irq();
    }

    fn update_irq(&self) {
        let (kbd, aux) = match self.s.out {
            Some((_, Source::Aux)) => (false, self.s.ctr & CTR_AUX_INT != 0),
            Some(_) => (self.s.ctr & CTR_KBD_INT != 0, false),
            None => (false, false),
        };
        self.kbd_irq.set_level(kbd);
        self.aux_irq.set_level(aux);
    }

    fn respond(&mut self, byte: u8) {
        self.respond_as(byte, Source::Controller);
    }

    /// Queue a byte from the controller itself; it reaches the output buffer even while the
    /// keyboard or aux interface is disabled.
    fn respond_as(&mut self, byte: u8, source: Source) {
        // The real controller has one output buffer; a guest that never reads must not make
        // the queue grow without bound.
        if self.s.ctrl_queue.len() < QUEUE_LIMIT {
            self.s.ctrl_queue.push((byte, source));
        }
        self.refill();
    }

    fn status(&self) -> u8 {
        let mut st = STATUS_UNLOCKED;
        match self.s.out {
            Some((_, Source::Aux)) => st |= STATUS_OBF | STATUS_AUX_OBF,
            Some(_) => st |= STATUS_OBF,
            None => {}
        }
        if self.s.sys_flag {
            st |= STATUS_SYS;
        }
        if self.s.last_was_command {
            st |= STATUS_CMD;
        }
        st
    }

    fn read_data(&mut self) -> u8 {
        if let Some((b, _)) = self.s.out.take() {
            self.s.last_out = b;
        }
        self.refill();
        self.s.last_out
    }

    fn write_outport(&mut self, value: u8) {
        self.s.outport = value & (OUTPORT_RESET | OUTPORT_A20);
        self.memory.set_a20(value & OUTPORT_A20 != 0);
        if value & OUTPORT_RESET == 0 {
            tracing::debug!("i8042: output port reset line pulled");
            self.requests.request_reset();
            self.s.outport |= OUTPORT_RESET;
        }
    }

    fn write_command(&mut self, cmd: u8) {
        self.s.last_was_command = true;
        self.s.pending_command = None;
        match cmd {
            0x20 => self.respond(self.s.ctr),
            0x21..=0x3F => self.respond(0),
            0x60..=0x7F | 0xD1..=0xD4 => self.s.pending_command = Some(cmd),
            0xA7 => {
                self.s.ctr |= CTR_AUX_DISABLE;
                self.refill();
            }
            0xA8 => {
                self.s.ctr &= !CTR_AUX_DISABLE;
                self.refill();
            }
            0xA9 | 0xAB => self.respond(0x00),
            0xAA => {
                self.s.sys_flag = true;
                self.respond(0x55);
            }
            0xAD => {
                self.s.ctr |= CTR_KBD_DISABLE;
                self.refill();
            }
            0xAE => {
                self.s.ctr &= !CTR_KBD_DISABLE;
                self.refill();
            }
            // Input port: bit 7 = keyboard not inhibited (IBM AT technical reference).
            0xC0 => self.respond(0x80),
            0xD0 => {
                let mut v = self.s.outport;
                match self.s.out {
                    Some((_, Source::Aux)) => v |= OUTPORT_AUX_OBF,
                    Some(_) => v |= OUTPORT_OBF,
                    None => {}
                }
                self.respond(v);
            }
            0xDD => self.memory.set_a20(false),
            0xDF => self.memory.set_a20(true),
            0xE0 => self.respond(0x00),
            0xF0..=0xFF => {
                if cmd & OUTPORT_RESET == 0 {
                    tracing::debug!("i8042: reset pulse");
                    self.requests.request_reset();
                }
            }
            _ => tracing::debug!(cmd, "i8042: unsupported controller command ignored"),
        }
    }

    fn write_data(&mut self, value: u8) {
        self.s.last_was_command = false;
        match self.s.pending_command.take() {
            Some(0x60) => {
                self.s.ctr = value;
                self.s.sys_flag = value & CTR_SYS != 0;
                self.refill();
            }
            Some(0x61..=0x7F) => {} // controller RAM beyond the command byte: not kept
            Some(0xD1) => self.write_outport(value),
            Some(0xD2) => self.respond_as(value, Source::Keyboard),
            Some(0xD3) => self.respond_as(value, Source::Aux),
            Some(0xD4) => tracing::debug!(value, "i8042: no aux device, byte dropped"),
            _ => {
                // Sending to the keyboard re-enables its interface (as QEMU does).
                self.s.ctr &= !CTR_KBD_DISABLE;
                self.keyboard_command(value);
                self.refill();
            }
        }
    }

    fn kbd_send(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.s.keyboard.last_sent = b;
            if self.s.kbd_queue.len() < KBD_QUEUE_LIMIT {
                self.s.kbd_queue.push(b);
            }
        }
    }

    /// A byte from the host to the PS/2 keyboard.
    fn keyboard_command(&mut self, value: u8) {
        if let Some(cmd) = self.s.keyboard.expect.take() {
            match cmd {
                0xED => {
                    self.s.keyboard.leds = value & 7;
                    self.kbd_send(&[KBD_ACK]);
                    return;
                }
                0xF3 => {
                    self.s.keyboard.typematic = value & 0x7F;
                    self.kbd_send(&[KBD_ACK]);
                    return;
                }
                0xF0 => {
                    match value {
                        0 => {
                            let set = self.s.keyboard.scan_set;
                            self.kbd_send(&[KBD_ACK, set]);
                        }
                        1..=3 => {
                            self.s.keyboard.scan_set = value;
                            self.kbd_send(&[KBD_ACK]);
                        }
                        _ => self.kbd_send(&[KBD_RESEND]),
                    }
                    return;
                }
                // A new command instead of the expected parameter: handle it as a command.
                _ => {}
            }
        }
        match value {
            0xED | 0xF3 | 0xF0 => {
                self.s.keyboard.expect = Some(value);
                self.kbd_send(&[KBD_ACK]);
            }
            0xEE => self.kbd_send(&[0xEE]),
            0xF2 => {
                // With translation on, the keyboard's ID is seen translated (0x83 → 0x41).
                let id = if self.s.ctr & CTR_XLATE != 0 {
                    0x41
                } else {
                    0x83
                };
                self.kbd_send(&[KBD_ACK, 0xAB, id]);
            }
            0xF4 => {
                self.s.kbd_queue.clear();
                self.s.keyboard.scanning = true;
                self.kbd_send(&[KBD_ACK]);
            }
            0xF5 | 0xF6 => {
                let keep = self.s.keyboard.last_sent;
                self.s.keyboard = Ps2KeyboardState {
                    scanning: value == 0xF6,
                    last_sent: keep,
                    ..Ps2KeyboardState::default()
                };
                self.s.kbd_queue.clear();
                self.kbd_send(&[KBD_ACK]);
            }
            0xF7..=0xFD => self.kbd_send(&[KBD_ACK]),
            0xFE => {
                let last = self.s.keyboard.last_sent;
                self.kbd_send(&[last]);
            }
            0xFF => {
                self.s.keyboard = Ps2KeyboardState::default();
                self.s.kbd_queue.clear();
                self.kbd_send(&[KBD_ACK, KBD_BAT_OK]);
            }
            _ => self.kbd_send(&[KBD_RESEND]),
        }
    }
}

impl BusDevice for I8042 {
    fn name(&self) -> &str {
        "i8042"
    }

    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        let v = match access.addr {
            0x60 => self.read_data(),
            0x64 => self.status(),
            _ => 0xFF,
        };
        data.fill(0xFF);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, access: BusAccess, data: &[u8]) {
        let Some(&v) = data.first() else {
            return;
        };
        match access.addr {
            0x60 => self.write_data(v),
            0x64 => self.write_command(v),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.s = I8042State::default();
        self.update_irq();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcvm_core::SystemRequest;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    struct Level(AtomicBool);
    impl IrqLine for Level {
        fn set_level(&self, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    struct Rig {
        kbc: I8042,
        irq1: Arc<Level>,
        mem: Arc<GuestMemory>,
        req: SystemRequests,
    }

    fn setup() -> Rig {
        let irq1 = Arc::new(Level::default());
        let mem = Arc::new(GuestMemory::pc(4 << 20).unwrap());
        let req = SystemRequests::new();
        let kbc = I8042::new(
            irq1.clone(),
            Arc::new(Level::default()),
            mem.clone(),
            req.clone(),
        );
        Rig {
            kbc,
            irq1,
            mem,
            req,
        }
    }

    fn out(k: &mut I8042, port: u64, v: u8) {
        k.write(
            BusAccess {
                offset: 0,
                addr: port,
            },
            &[v],
        );
    }
    fn inb(k: &mut I8042, port: u64) -> u8 {
        let mut b = [0];
        k.read(
            BusAccess {
                offset: 0,
                addr: port,
            },
            &mut b,
        );
        b[0]
    }
    /// Read a byte the way SeaBIOS's ps2_recvbyte does: wait for OBF, then read 0x60.
    fn recv(k: &mut I8042) -> Option<u8> {
        (inb(k, 0x64) & STATUS_OBF != 0).then(|| inb(k, 0x60))
    }
    fn command(k: &mut I8042, cmd: u8) -> Option<u8> {
        out(k, 0x64, cmd);
        recv(k)
    }

    #[test]
    fn seabios_ps2_keyboard_setup() {
        let Rig { mut kbc, .. } = setup();
        let k = &mut kbc;
        while recv(k).is_some() {}
        out(k, 0x64, 0xAD);
        out(k, 0x64, 0xA7);
        assert_eq!(command(k, 0xAA), Some(0x55));
        assert_ne!(inb(k, 0x64) & STATUS_SYS, 0);
        assert_eq!(command(k, 0xAB), Some(0x00));
        // ps2_command: CTR with interrupts off and the keyboard enabled, then reset.
        assert_eq!(
            command(k, 0x20),
            Some(CTR_KBD_INT | CTR_AUX_INT | CTR_KBD_DISABLE | CTR_AUX_DISABLE)
        );
        out(k, 0x64, 0x60);
        out(k, 0x60, CTR_AUX_DISABLE | CTR_SYS);
        out(k, 0x60, 0xFF);
        assert_eq!(recv(k), Some(KBD_ACK));
        assert_eq!(recv(k), Some(KBD_BAT_OK));
        assert_eq!(recv(k), None);
        out(k, 0x60, 0xF5);
        assert_eq!(recv(k), Some(KBD_ACK));
        out(k, 0x60, 0xF0);
        assert_eq!(recv(k), Some(KBD_ACK));
        out(k, 0x60, 0x02);
        assert_eq!(recv(k), Some(KBD_ACK));
        // Final CTR: translate, SYS, keyboard IRQ; then enable scanning.
        out(k, 0x64, 0x60);
        out(k, 0x60, CTR_XLATE | CTR_SYS | CTR_AUX_DISABLE | CTR_KBD_INT);
        out(k, 0x60, 0xF4);
        assert_eq!(recv(k), Some(KBD_ACK));
        assert_eq!(command(k, 0x20), Some(0x65));
    }

    #[test]
    fn keystrokes_translate_and_raise_irq1() {
        let Rig { mut kbc, irq1, .. } = setup();
        let k = &mut kbc;
        out(k, 0x64, 0x60);
        out(k, 0x60, CTR_XLATE | CTR_KBD_INT);
        k.key_input(b'A');
        assert!(irq1.0.load(Ordering::SeqCst));
        let mut got = Vec::new();
        while let Some(b) = recv(k) {
            got.push(b);
        }
        // Shift make, A make, A break, Shift break in set 1.
        assert_eq!(got, [0x2A, 0x1E, 0x9E, 0xAA]);
        assert!(!irq1.0.load(Ordering::SeqCst));
        // Untranslated set 2, extended key.
        out(k, 0x64, 0x60);
        out(k, 0x60, CTR_KBD_INT);
        k.key_event(keys::UP, true);
        k.key_event(keys::UP, false);
        k.key_input(b'\r');
        let mut got = Vec::new();
        while let Some(b) = recv(k) {
            got.push(b);
        }
        assert_eq!(got, [0xE0, 0x75, 0xE0, 0xF0, 0x75, 0x5A, 0xF0, 0x5A]);
        // Ctrl+C.
        k.key_input(0x03);
        let mut got = Vec::new();
        while let Some(b) = recv(k) {
            got.push(b);
        }
        assert_eq!(got, [0x14, 0x21, 0xF0, 0x21, 0xF0, 0x14]);
        // Disabled scanning drops keys.
        out(k, 0x60, 0xF5);
        assert_eq!(recv(k), Some(KBD_ACK));
        k.key_input(b'x');
        assert_eq!(recv(k), None);
    }

    #[test]
    fn output_port_a20_and_reset() {
        let Rig {
            mut kbc, mem, req, ..
        } = setup();
        let k = &mut kbc;
        assert_eq!(command(k, 0xD0), Some(OUTPORT_RESET | OUTPORT_A20));
        out(k, 0x64, 0xD1);
        out(k, 0x60, OUTPORT_RESET);
        assert!(!mem.a20_enabled());
        out(k, 0x64, 0xDF);
        assert!(mem.a20_enabled());
        assert_eq!(req.take(), None);
        out(k, 0x64, 0xFE);
        assert_eq!(req.take(), Some(SystemRequest::Reset));
        out(k, 0x64, 0xFF);
        assert_eq!(req.take(), None, "0xFF pulses nothing");
        out(k, 0x64, 0xD1);
        out(k, 0x60, 0x00);
        assert_eq!(req.take(), Some(SystemRequest::Reset));
    }

    #[test]
    fn keyboard_commands_and_hostile_bytes() {
        let Rig { mut kbc, .. } = setup();
        let k = &mut kbc;
        out(k, 0x60, 0xF2);
        assert_eq!(
            [recv(k), recv(k), recv(k)],
            [Some(0xFA), Some(0xAB), Some(0x83)]
        );
        out(k, 0x60, 0xED);
        out(k, 0x60, 0x07);
        assert_eq!([recv(k), recv(k)], [Some(0xFA), Some(0xFA)]);
        out(k, 0x60, 0xF0);
        out(k, 0x60, 0x00);
        assert_eq!(
            [recv(k), recv(k), recv(k)],
            [Some(0xFA), Some(0xFA), Some(0x02)]
        );
        out(k, 0x60, 0xEE);
        assert_eq!(recv(k), Some(0xEE));
        out(k, 0x60, 0xFE);
        assert_eq!(recv(k), Some(0xEE), "resend repeats the last byte");
        out(k, 0x60, 0x42);
        assert_eq!(recv(k), Some(KBD_RESEND));
        // Aux loopback through 0xD3 reports as aux data, even with the aux port disabled
        // (Linux's i8042 aux check).
        out(k, 0x64, 0xA7);
        out(k, 0x64, 0xD3);
        out(k, 0x60, 0x5A);
        assert_eq!(
            inb(k, 0x64) & (STATUS_OBF | STATUS_AUX_OBF),
            STATUS_OBF | STATUS_AUX_OBF
        );
        assert_eq!(inb(k, 0x60), 0x5A);
        assert_eq!(inb(k, 0x60), 0x5A, "empty buffer re-reads the last byte");
        for v in 0..=255u8 {
            out(k, 0x64, v);
            out(k, 0x60, v);
            inb(k, 0x60);
            inb(k, 0x64);
        }
        for _ in 0..1000 {
            out(k, 0x64, 0x20);
        }
        assert!(k.state().ctrl_queue.len() <= QUEUE_LIMIT);
        k.write(
            BusAccess {
                offset: 0,
                addr: 0x64,
            },
            &[],
        );
        let state = k.state();
        let json = serde_json::to_string(&state).unwrap();
        let back: I8042State = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
    }
}
