//! The local APIC of the one CPU (Intel SDM Vol. 3A ch. 11 "Advanced Programmable Interrupt
//! Controller"), in xAPIC mode (the 4 KiB MMIO page at 0xFEE00000) and x2APIC mode (MSRs
//! 0x800–0x8FF, [`LocalApic::read_msr`]/[`LocalApic::write_msr`]).
//!
//! Models: ID, version 0x50014, TPR/PPR, EOI with the level-triggered EOI broadcast to the I/O
//! APIC (a callback), LDR/DFR, SVR (software enable, spurious vector), the 256-bit ISR/TMR/IRR,
//! ESR, ICR (fixed and NMI IPIs to self are delivered; INIT/SIPI and IPIs to other CPUs are
//! recorded — there is no other CPU), the LVT (CMCI, timer, thermal, perf, LINT0, LINT1, error)
//! and the timer in one-shot, periodic and TSC-deadline modes, counting at 1 GHz / divide
//! from the [`VirtualClock`].
//!
//! The CPU sees the APIC through [`LocalApicFront`], its [`InterruptController`]: the APIC's
//! own deliverable interrupt drives input 0 of the CPU's [`IntrPin`], and the 8259's INT is
//! input 1, gated on while the APIC is hardware-disabled or LINT0 is unmasked ExtINT (virtual
//! wire mode, MP spec §3.6.2.2 — reset leaves the BSP's LINT0 in ExtINT as QEMU does).
//!
//! Interrupts from the I/O APIC arrive through a [`LapicInput`], a lock-free inbox the APIC
//! merges into its IRR, so the I/O APIC never takes the APIC's lock (the APIC takes the I/O
//! APIC's lock for the EOI broadcast; the reverse would deadlock).
//!
//! Left out: LINT1 NMI input (nothing drives it), thermal/perf/CMCI sources (never fire),
//! APIC base relocation (logged), the arbitration priority register (reads 0).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use pcvm_core::{
    BusAccess, BusDevice, InterruptController, IntrPin, TimerDevice, TimerHandle, VirtualClock,
};

use crate::i8259::Pic8259Pair;

/// Default physical base of the xAPIC page.
pub const LAPIC_BASE: u64 = 0xFEE0_0000;
/// Size of the xAPIC page.
pub const LAPIC_SIZE: u64 = 0x1000;
/// IA32_APIC_BASE MSR (SDM Vol. 3A §11.4.4).
pub const MSR_APIC_BASE: u32 = 0x1B;
/// IA32_TSC_DEADLINE MSR (SDM Vol. 3A §11.5.4.1).
pub const MSR_TSC_DEADLINE: u32 = 0x6E0;
/// IA32_APIC_BASE bit 8: this is the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE bit 10: x2APIC mode.
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE bit 11: APIC global enable.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// Version register: version 0x14, 6 LVT entries − 1 = 5 in bits 23:16 (as QEMU).
pub const APIC_VERSION: u32 = 0x0005_0014;

/// Register offsets in the xAPIC page (SDM Vol. 3A Table 11-1).
pub const REG_ID: u32 = 0x20;
/// Version.
pub const REG_VERSION: u32 = 0x30;
/// Task priority.
pub const REG_TPR: u32 = 0x80;
/// Arbitration priority.
pub const REG_APR: u32 = 0x90;
/// Processor priority.
pub const REG_PPR: u32 = 0xA0;
/// End of interrupt.
pub const REG_EOI: u32 = 0xB0;
/// Remote read.
pub const REG_RRD: u32 = 0xC0;
/// Logical destination.
pub const REG_LDR: u32 = 0xD0;
/// Destination format.
pub const REG_DFR: u32 = 0xE0;
/// Spurious interrupt vector.
pub const REG_SVR: u32 = 0xF0;
/// In-service register, 8 × 32 bits.
pub const REG_ISR: u32 = 0x100;
/// Trigger mode register.
pub const REG_TMR: u32 = 0x180;
/// Interrupt request register.
pub const REG_IRR: u32 = 0x200;
/// Error status.
pub const REG_ESR: u32 = 0x280;
/// LVT corrected machine check.
pub const REG_LVT_CMCI: u32 = 0x2F0;
/// Interrupt command, low half.
pub const REG_ICR_LOW: u32 = 0x300;
/// Interrupt command, high half (xAPIC destination).
pub const REG_ICR_HIGH: u32 = 0x310;
/// LVT timer.
pub const REG_LVT_TIMER: u32 = 0x320;
/// LVT thermal sensor.
pub const REG_LVT_THERMAL: u32 = 0x330;
/// LVT performance counter.
pub const REG_LVT_PERF: u32 = 0x340;
/// LVT LINT0.
pub const REG_LVT_LINT0: u32 = 0x350;
/// LVT LINT1.
pub const REG_LVT_LINT1: u32 = 0x360;
/// LVT error.
pub const REG_LVT_ERROR: u32 = 0x370;
/// Timer initial count.
pub const REG_TIMER_INITIAL: u32 = 0x380;
/// Timer current count.
pub const REG_TIMER_CURRENT: u32 = 0x390;
/// Timer divide configuration.
pub const REG_TIMER_DIVIDE: u32 = 0x3E0;
/// x2APIC self IPI (MSR 0x83F only).
pub const REG_SELF_IPI: u32 = 0x3F0;

/// SVR bit 8: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;
/// LVT bit 16: masked.
pub const LVT_MASKED: u32 = 1 << 16;
/// LVT bits 10:8 delivery mode ExtINT.
pub const LVT_DM_EXTINT: u32 = 0b111 << 8;
/// LVT bits 10:8 delivery mode NMI.
pub const LVT_DM_NMI: u32 = 0b100 << 8;
/// LVT timer mode bits 18:17.
pub const LVT_TIMER_MODE: u32 = 0b11 << 17;
/// Timer mode: periodic.
pub const TIMER_PERIODIC: u32 = 0b01 << 17;
/// Timer mode: TSC deadline.
pub const TIMER_TSC_DEADLINE: u32 = 0b10 << 17;
/// ESR bit 5: send illegal vector.
pub const ESR_SEND_ILLEGAL: u32 = 1 << 5;
/// ESR bit 6: received illegal vector.
pub const ESR_RECV_ILLEGAL: u32 = 1 << 6;
/// ESR bit 7: illegal register address.
pub const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// LVT slots: index into [`LocalApic::lvt`].
const LVT_CMCI: usize = 0;
const LVT_TIMER: usize = 1;
const LVT_THERMAL: usize = 2;
const LVT_PERF: usize = 3;
const LVT_LINT0: usize = 4;
const LVT_LINT1: usize = 5;
const LVT_ERROR: usize = 6;
/// Writable LVT bits per slot: vector, delivery mode, polarity, trigger, mask, timer mode.
const LVT_WRITABLE: [u32; 7] = [
    0x0001_07FF,
    0x0007_00FF,
    0x0001_07FF,
    0x0001_07FF,
    0x0001_A7FF,
    0x0001_A7FF,
    0x0001_00FF,
];
/// APIC timer input clock: the APIC bus runs at 1 GHz (as QEMU), so one tick per ns / divide.
pub const TIMER_HZ: u64 = 1_000_000_000;

/// A 256-bit vector register (ISR/TMR/IRR) as four 64-bit words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bits256([u64; 4]);

impl Bits256 {
    fn get(&self, v: u8) -> bool {
        self.0[usize::from(v >> 6)] & (1 << (v & 63)) != 0
    }
    fn set(&mut self, v: u8, on: bool) {
        let w = &mut self.0[usize::from(v >> 6)];
        if on {
            *w |= 1 << (v & 63);
        } else {
            *w &= !(1 << (v & 63));
        }
    }
    fn highest(&self) -> Option<u8> {
        (0..4usize).rev().find_map(|i| {
            let w = self.0[i];
            (w != 0).then(|| (i as u8) * 64 + (63 - w.leading_zeros() as u8))
        })
    }
    /// The 32-bit register `n` (0–7) as the guest sees it.
    fn dword(&self, n: usize) -> u32 {
        (self.0[(n / 2) & 3] >> ((n & 1) * 32)) as u32
    }
}

/// The APIC's lock-free input: interrupts the I/O APIC (or anything else) sends it, merged into
/// the IRR when the APIC next evaluates. Also publishes what senders must know to address it.
#[derive(Debug)]
pub struct LapicInput {
    /// Edge-triggered requests not yet merged (vector bitmap).
    edge: [AtomicU64; 4],
    /// Level-triggered requests not yet merged.
    level: [AtomicU64; 4],
    /// Current PPR, so a sender only raises INTR for a vector that can be delivered.
    ppr: AtomicU8,
    /// APIC ID.
    id: AtomicU32,
    /// Logical destination register.
    ldr: AtomicU32,
    /// Destination format register (flat 0xFFFFFFFF or cluster 0x0FFFFFFF).
    dfr: AtomicU32,
    /// Software and hardware enabled.
    enabled: AtomicBool,
    /// Input 0 of the CPU's INTR pin.
    pin: IntrPin,
}

impl LapicInput {
    /// Accept a fixed interrupt `vector` (SDM Vol. 3A §11.5.5/§11.8.3); `level_triggered`
    /// sets its TMR bit so its EOI is broadcast to the I/O APIC.
    pub fn accept_interrupt(&self, vector: u8, level_triggered: bool) {
        let (w, bit) = (usize::from(vector >> 6), 1u64 << (vector & 63));
        if level_triggered {
            self.level[w].fetch_or(bit, Ordering::AcqRel);
        } else {
            self.edge[w].fetch_or(bit, Ordering::AcqRel);
        }
        if self.enabled.load(Ordering::Acquire)
            && (vector >> 4) > (self.ppr.load(Ordering::Acquire) >> 4)
        {
            self.pin.set(true);
        }
    }

    /// The APIC is addressed by `dest` in physical (APIC ID, 0xFF broadcast) or logical
    /// (flat or cluster model, SDM Vol. 3A §11.6.2.2) destination mode.
    pub fn matches_destination(&self, dest: u8, logical: bool) -> bool {
        let id = self.id.load(Ordering::Acquire);
        if !logical {
            return dest == 0xFF || u32::from(dest) == id;
        }
        let ldr = (self.ldr.load(Ordering::Acquire) >> 24) as u8;
        if self.dfr.load(Ordering::Acquire) >> 28 == 0xF {
            dest & ldr != 0
        } else {
            (dest >> 4 == 0xF || dest >> 4 == ldr >> 4) && (dest & ldr & 0xF) != 0
        }
    }
}

/// An inter-processor interrupt the APIC could not deliver to itself (no other CPU exists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpiRecord {
    /// The ICR, destination in bits 63:32 (x2APIC) or 63:56 (xAPIC).
    pub icr: u64,
}

/// Called with the vector of every EOI of a level-triggered interrupt (the EOI broadcast).
pub type EoiBroadcast = Arc<dyn Fn(u8) + Send + Sync>;

/// The local APIC registers and timer.
pub struct LocalApic {
    apic_base: u64,
    id: u32,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: Bits256,
    tmr: Bits256,
    irr: Bits256,
    esr: u32,
    esr_pending: u32,
    icr: u64,
    lvt: [u32; 7],
    timer_initial: u32,
    timer_divide: u32,
    /// When the current count was last loaded (ns).
    timer_start_ns: u64,
    /// TSC-deadline target in ns of virtual time (None when disarmed).
    tsc_deadline_ns: Option<u64>,
    tsc_deadline: u64,
    clock: VirtualClock,
    timer: TimerHandle,
    input: Arc<LapicInput>,
    pic_input: IntrPin,
    nmi: Option<Arc<AtomicBool>>,
    eoi_broadcast: Option<EoiBroadcast>,
    ipis: Vec<IpiRecord>,
}

impl LocalApic {
    /// The BSP's APIC (ID 0) in the reset state, driving input 0 of `cpu_intr` and gating its
    /// input 1 (where the 8259 must be wired: `Pic8259Pair::new(cpu_intr.input(1))`).
    pub fn new(cpu_intr: &IntrPin, clock: VirtualClock, timer: TimerHandle) -> Self {
        let input = Arc::new(LapicInput {
            edge: Default::default(),
            level: Default::default(),
            ppr: AtomicU8::new(0),
            id: AtomicU32::new(0),
            ldr: AtomicU32::new(0),
            dfr: AtomicU32::new(u32::MAX),
            enabled: AtomicBool::new(false),
            pin: cpu_intr.input(0),
        });
        let mut apic = LocalApic {
            apic_base: 0,
            id: 0,
            tpr: 0,
            ldr: 0,
            dfr: u32::MAX,
            svr: 0xFF,
            isr: Bits256::default(),
            tmr: Bits256::default(),
            irr: Bits256::default(),
            esr: 0,
            esr_pending: 0,
            icr: 0,
            lvt: [LVT_MASKED; 7],
            timer_initial: 0,
            timer_divide: 0,
            timer_start_ns: 0,
            tsc_deadline_ns: None,
            tsc_deadline: 0,
            clock,
            timer,
            input,
            pic_input: cpu_intr.input(1),
            nmi: None,
            eoi_broadcast: None,
            ipis: Vec::new(),
        };
        apic.reset_registers();
        apic
    }

    /// Where NMIs (LVT NMI delivery, NMI IPIs to self) go: the board's NMI latch.
    pub fn set_nmi(&mut self, nmi: Arc<AtomicBool>) {
        self.nmi = Some(nmi);
    }

    /// Where EOIs of level-triggered interrupts are broadcast (the I/O APIC).
    pub fn set_eoi_broadcast(&mut self, f: EoiBroadcast) {
        self.eoi_broadcast = Some(f);
    }

    /// The input the I/O APIC delivers to.
    pub fn input(&self) -> Arc<LapicInput> {
        self.input.clone()
    }

    /// Accept a fixed interrupt (as [`LapicInput::accept_interrupt`]).
    pub fn accept_interrupt(&mut self, vector: u8, level_triggered: bool) {
        self.input.accept_interrupt(vector, level_triggered);
        self.update();
    }

    /// IPIs sent to other CPUs (or INIT/SIPI), oldest first; drained by the caller.
    pub fn take_ipis(&mut self) -> Vec<IpiRecord> {
        std::mem::take(&mut self.ipis)
    }

    /// The IA32_APIC_BASE MSR.
    pub fn apic_base(&self) -> u64 {
        self.apic_base
    }

    /// Write IA32_APIC_BASE (SDM Vol. 3A §11.4.4/§11.12.5): clearing the enable bit resets the
    /// APIC to its disabled state; bits other than base, EXTD, EN and BSP are reserved.
    pub fn set_apic_base(&mut self, value: u64) {
        let value = (value & 0x000F_FFFF_FFFF_FD00) | (self.apic_base & APIC_BASE_BSP);
        if value & 0x000F_FFFF_FFFF_F000 != LAPIC_BASE {
            tracing::warn!(value, "lapic: base relocation is not modelled");
        }
        let was_enabled = self.apic_base & APIC_BASE_ENABLE != 0;
        self.apic_base = value;
        if value & APIC_BASE_ENABLE == 0 {
            self.apic_base &= !APIC_BASE_EXTD;
        } else if !was_enabled {
            self.reset_registers_keep_base();
        }
        if self.x2apic() {
            self.ldr = ((self.id & 0xFFFF0) << 12) | (1 << (self.id & 0xF));
        }
        self.update();
    }

    fn hw_enabled(&self) -> bool {
        self.apic_base & APIC_BASE_ENABLE != 0
    }

    fn sw_enabled(&self) -> bool {
        self.hw_enabled() && self.svr & SVR_ENABLE != 0
    }

    fn x2apic(&self) -> bool {
        self.apic_base & (APIC_BASE_EXTD | APIC_BASE_ENABLE) == APIC_BASE_EXTD | APIC_BASE_ENABLE
    }

    /// Power-on/INIT state of the registers (SDM Vol. 3A §11.4.7.1), with the BSP's LINT0 in
    /// ExtINT so the 8259 reaches the CPU before firmware programs the APIC (as QEMU).
    fn reset_registers(&mut self) {
        self.apic_base = LAPIC_BASE | APIC_BASE_BSP | APIC_BASE_ENABLE;
        self.reset_registers_keep_base();
    }

    fn reset_registers_keep_base(&mut self) {
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = u32::MAX;
        self.svr = 0xFF;
        self.isr = Bits256::default();
        self.tmr = Bits256::default();
        self.irr = Bits256::default();
        self.esr = 0;
        self.esr_pending = 0;
        self.icr = 0;
        self.lvt = [LVT_MASKED; 7];
        self.lvt[LVT_LINT0] = LVT_DM_EXTINT;
        self.timer_initial = 0;
        self.timer_divide = 0;
        self.tsc_deadline_ns = None;
        self.tsc_deadline = 0;
        self.timer.clear();
        for w in self.input.edge.iter().chain(self.input.level.iter()) {
            w.store(0, Ordering::Release);
        }
        self.update();
    }

    /// Processor priority (SDM Vol. 3A §11.8.3.1).
    fn ppr(&self) -> u32 {
        let isrv = self.isr.highest().map_or(0, u32::from);
        if (self.tpr >> 4) >= (isrv >> 4) {
            self.tpr & 0xFF
        } else {
            isrv & 0xF0
        }
    }

    /// Move requests from the lock-free input into IRR/TMR.
    fn merge_input(&mut self) {
        for i in 0..4 {
            let e = self.input.edge[i].swap(0, Ordering::AcqRel);
            let l = self.input.level[i].swap(0, Ordering::AcqRel);
            self.irr.0[i] |= e | l;
            self.tmr.0[i] = (self.tmr.0[i] & !e) | l;
        }
        // Vectors 0–15 are illegal (SDM Vol. 3A §11.5.3): drop and flag them.
        if self.irr.0[0] & 0xFFFF != 0 {
            self.irr.0[0] &= !0xFFFF;
            self.set_error(ESR_RECV_ILLEGAL);
        }
    }

    /// The vector the APIC would deliver now, if any.
    fn deliverable(&self) -> Option<u8> {
        if !self.sw_enabled() {
            return None;
        }
        let v = self.irr.highest()?;
        (u32::from(v >> 4) > (self.ppr() >> 4)).then_some(v)
    }

    /// Recompute the INTR inputs and what senders see.
    fn update(&mut self) {
        self.merge_input();
        let i = &self.input;
        i.id.store(self.id, Ordering::Release);
        i.ldr.store(self.ldr, Ordering::Release);
        i.dfr.store(self.dfr, Ordering::Release);
        i.enabled.store(self.sw_enabled(), Ordering::Release);
        i.ppr.store(self.ppr() as u8, Ordering::Release);
        let pending = self.deliverable().is_some();
        self.input.pin.set(pending);
        self.pic_input.set_input_enabled(self.pic_passthrough());
    }

    /// The 8259's INT reaches the CPU: APIC hardware-disabled, or LINT0 unmasked ExtINT.
    pub fn pic_passthrough(&self) -> bool {
        let lint0 = self.lvt[LVT_LINT0];
        !self.hw_enabled() || (lint0 & LVT_MASKED == 0 && lint0 & 0x700 == LVT_DM_EXTINT)
    }

    /// INTA for the APIC's own interrupts: the highest deliverable IRR vector moves to ISR;
    /// with nothing deliverable but a request below PPR pending, the spurious vector.
    pub fn acknowledge_local(&mut self) -> Option<u8> {
        self.merge_input();
        let v = self.deliverable()?;
        self.irr.set(v, false);
        self.isr.set(v, true);
        self.update();
        Some(v)
    }

    fn set_error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let lvt = self.lvt[LVT_ERROR];
        if lvt & LVT_MASKED == 0 && self.sw_enabled() {
            self.raise_local(lvt as u8, false);
        }
    }

    /// Raise an interrupt from a local source (timer, error, self IPI).
    fn raise_local(&mut self, vector: u8, level: bool) {
        if vector < 16 {
            self.esr_pending |= ESR_SEND_ILLEGAL;
            return;
        }
        self.irr.set(vector, true);
        self.tmr.set(vector, level);
    }

    /// End of interrupt (SDM Vol. 3A §11.8.5): retire the highest ISR vector; broadcast it if
    /// it was level-triggered.
    fn eoi(&mut self) {
        if let Some(v) = self.isr.highest() {
            self.isr.set(v, false);
            if self.tmr.get(v) {
                if let Some(f) = &self.eoi_broadcast {
                    f(v);
                }
            }
        }
        self.update();
    }

    /// Send an IPI (SDM Vol. 3A §11.6.1); destination in bits 63:32 (xAPIC: 63:56).
    fn send_ipi(&mut self, icr: u64) {
        let low = icr as u32;
        let vector = low as u8;
        let mode = (low >> 8) & 7;
        let logical = low & (1 << 11) != 0;
        let shorthand = (low >> 18) & 3;
        let dest = (icr >> 32) as u32;
        let to_self = match shorthand {
            0 => {
                let d = if self.x2apic() { dest } else { dest >> 24 };
                if self.x2apic() {
                    d == u32::MAX
                        || (!logical && d == self.id)
                        || (logical && (d >> 16) == (self.ldr >> 16) && d & self.ldr & 0xFFFF != 0)
                } else {
                    self.input.matches_destination(d as u8, logical)
                }
            }
            1 | 2 => true,
            _ => false,
        };
        let broadcast =
            (self.x2apic() && dest == u32::MAX) || (!self.x2apic() && dest >> 24 == 0xFF);
        let to_others = shorthand >= 2 || (shorthand == 0 && (!to_self || broadcast));
        if to_others || mode == 0b101 || mode == 0b110 {
            self.ipis.push(IpiRecord { icr });
        }
        if !to_self {
            return;
        }
        match mode {
            0b000 | 0b001 => {
                if vector < 16 {
                    self.set_error(ESR_SEND_ILLEGAL);
                } else {
                    let level = low & (1 << 15) != 0;
                    self.raise_local(vector, level);
                }
            }
            0b100 => {
                if let Some(nmi) = &self.nmi {
                    nmi.store(true, Ordering::Release);
                }
            }
            _ => tracing::debug!(icr, "lapic: IPI mode to self not modelled"),
        }
    }

    /// Timer divisor from the divide configuration register (SDM Vol. 3A Figure 11-10).
    fn divisor(&self) -> u64 {
        let d = (self.timer_divide & 3) | ((self.timer_divide >> 1) & 4);
        if d == 7 {
            1
        } else {
            2u64 << d
        }
    }

    fn timer_mode(&self) -> u32 {
        self.lvt[LVT_TIMER] & LVT_TIMER_MODE
    }

    /// Ticks elapsed since the count was loaded.
    fn ticks_since_load(&self) -> u64 {
        let now = self.clock.now_ns();
        now.saturating_sub(self.timer_start_ns) * (TIMER_HZ / 1_000_000_000) / self.divisor()
    }

    /// The current count register, computed from the virtual clock.
    fn current_count(&self) -> u32 {
        if self.timer_initial == 0 || self.timer_mode() == TIMER_TSC_DEADLINE {
            return 0;
        }
        let ticks = self.ticks_since_load();
        let initial = u64::from(self.timer_initial);
        if self.timer_mode() == TIMER_PERIODIC {
            (initial - ticks % initial) as u32
        } else {
            initial.saturating_sub(ticks) as u32
        }
    }

    /// Arm the timer handle for the next expiry.
    fn arm_timer(&mut self) {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            match self.tsc_deadline_ns {
                Some(ns) => self.timer.set(ns),
                None => self.timer.clear(),
            }
            return;
        }
        if self.timer_initial == 0 {
            self.timer.clear();
            return;
        }
        let period = u64::from(self.timer_initial) * self.divisor();
        let elapsed = self.clock.now_ns().saturating_sub(self.timer_start_ns);
        if self.timer_mode() == TIMER_PERIODIC {
            let n = elapsed / period + 1;
            self.timer.set(self.timer_start_ns + n * period);
        } else if elapsed < period {
            self.timer.set(self.timer_start_ns + period);
        } else {
            self.timer.clear();
        }
    }

    /// Write IA32_TSC_DEADLINE with the CPU's current TSC `now_tsc` (TSC at 1 GHz, as the
    /// interpreter counts it): zero disarms; outside TSC-deadline mode the write is ignored
    /// (SDM Vol. 3A §11.5.4.1).
    pub fn write_tsc_deadline(&mut self, deadline: u64, now_tsc: u64) {
        if self.timer_mode() != TIMER_TSC_DEADLINE {
            return;
        }
        self.tsc_deadline = deadline;
        self.tsc_deadline_ns =
            (deadline != 0).then(|| self.clock.now_ns() + deadline.saturating_sub(now_tsc));
        self.arm_timer();
    }

    /// Read IA32_TSC_DEADLINE: 0 once it fired and outside TSC-deadline mode (SDM Vol. 3A
    /// §11.5.4.1).
    pub fn tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// A WRMSR of IA32_APIC_BASE is valid (SDM Vol. 3A §11.12.5, Figure 11-27): no reserved
    /// bit (0–7, 9, and 52 up, the widest MAXPHYADDR), no x2APIC without global enable, and
    /// no direct x2APIC → xAPIC switch (software must disable the APIC first).
    pub fn apic_base_write_valid(&self, value: u64) -> bool {
        const RESERVED: u64 = 0xFF | (1 << 9) | !((1u64 << 52) - 1);
        let extd = value & APIC_BASE_EXTD != 0;
        let enable = value & APIC_BASE_ENABLE != 0;
        let x2apic_without_enable = extd && !enable;
        let x2apic_to_xapic = self.x2apic() && enable && !extd;
        value & RESERVED == 0 && !x2apic_without_enable && !x2apic_to_xapic
    }

    /// Register read by xAPIC offset (16-byte aligned), for both interfaces.
    fn read_reg(&mut self, reg: u32) -> Option<u32> {
        self.merge_input();
        Some(match reg {
            REG_ID => {
                if self.x2apic() {
                    self.id
                } else {
                    self.id << 24
                }
            }
            REG_VERSION => APIC_VERSION,
            REG_TPR => self.tpr,
            REG_APR | REG_RRD => 0,
            REG_PPR => self.ppr(),
            REG_LDR => self.ldr,
            REG_DFR if !self.x2apic() => self.dfr,
            REG_SVR => self.svr,
            0x100..=0x170 => self.isr.dword(((reg - REG_ISR) >> 4) as usize),
            0x180..=0x1F0 => self.tmr.dword(((reg - REG_TMR) >> 4) as usize),
            0x200..=0x270 => self.irr.dword(((reg - REG_IRR) >> 4) as usize),
            REG_ESR => self.esr,
            REG_ICR_LOW => (self.icr as u32) & !(1 << 12),
            REG_ICR_HIGH if !self.x2apic() => (self.icr >> 32) as u32,
            REG_LVT_CMCI => self.lvt[LVT_CMCI],
            REG_LVT_TIMER => self.lvt[LVT_TIMER],
            REG_LVT_THERMAL => self.lvt[LVT_THERMAL],
            REG_LVT_PERF => self.lvt[LVT_PERF],
            REG_LVT_LINT0 => self.lvt[LVT_LINT0],
            REG_LVT_LINT1 => self.lvt[LVT_LINT1],
            REG_LVT_ERROR => self.lvt[LVT_ERROR],
            REG_TIMER_INITIAL => self.timer_initial,
            REG_TIMER_CURRENT => self.current_count(),
            REG_TIMER_DIVIDE => self.timer_divide,
            _ => return None,
        })
    }

    /// Register write by xAPIC offset; `false` for a register that does not exist.
    fn write_reg(&mut self, reg: u32, value: u32) -> bool {
        match reg {
            REG_ID if !self.x2apic() => self.id = value >> 24,
            REG_TPR => self.tpr = value & 0xFF,
            REG_EOI => {
                self.eoi();
                return true;
            }
            REG_LDR if !self.x2apic() => self.ldr = value & 0xFF00_0000,
            REG_DFR if !self.x2apic() => self.dfr = value | 0x0FFF_FFFF,
            REG_SVR => {
                self.svr = value & 0x13FF;
                if self.svr & SVR_ENABLE == 0 {
                    // Software disable masks every LVT entry (SDM Vol. 3A §11.4.7.2).
                    for l in &mut self.lvt {
                        *l |= LVT_MASKED;
                    }
                    self.arm_timer();
                }
            }
            REG_ESR => {
                self.esr = std::mem::take(&mut self.esr_pending);
            }
            REG_ICR_LOW => {
                self.icr = (self.icr & !0xFFFF_FFFF) | u64::from(value & 0x000C_CFFF);
                let icr = if self.x2apic() {
                    self.icr
                } else {
                    (self.icr & 0xFFFF_FFFF) | ((self.icr >> 32) & 0xFF00_0000) << 32
                };
                self.send_ipi(icr);
            }
            REG_ICR_HIGH if !self.x2apic() => {
                self.icr = (self.icr & 0xFFFF_FFFF) | (u64::from(value & 0xFF00_0000) << 32);
            }
            REG_LVT_CMCI | REG_LVT_TIMER | REG_LVT_THERMAL | REG_LVT_PERF | REG_LVT_LINT0
            | REG_LVT_LINT1 | REG_LVT_ERROR => {
                let slot = match reg {
                    REG_LVT_CMCI => LVT_CMCI,
                    REG_LVT_TIMER => LVT_TIMER,
                    REG_LVT_THERMAL => LVT_THERMAL,
                    REG_LVT_PERF => LVT_PERF,
                    REG_LVT_LINT0 => LVT_LINT0,
                    REG_LVT_LINT1 => LVT_LINT1,
                    _ => LVT_ERROR,
                };
                let mut v = value & LVT_WRITABLE[slot];
                if self.svr & SVR_ENABLE == 0 {
                    v |= LVT_MASKED;
                }
                let old_mode = self.timer_mode();
                self.lvt[slot] = v;
                if slot == LVT_TIMER && old_mode != self.timer_mode() {
                    // Switching modes disarms the timer (SDM Vol. 3A §11.5.4.1).
                    self.timer_initial = 0;
                    self.tsc_deadline = 0;
                    self.tsc_deadline_ns = None;
                }
                if slot == LVT_TIMER {
                    self.arm_timer();
                }
            }
            REG_TIMER_INITIAL => {
                if self.timer_mode() != TIMER_TSC_DEADLINE {
                    self.timer_initial = value;
                    self.timer_start_ns = self.clock.now_ns();
                    self.arm_timer();
                }
            }
            REG_TIMER_DIVIDE => {
                // Keep the count continuous across a divisor change.
                let current = self.current_count();
                self.timer_divide = value & 0xB;
                if self.timer_initial != 0 && current != 0 {
                    let consumed = u64::from(self.timer_initial - current);
                    self.timer_start_ns = self
                        .clock
                        .now_ns()
                        .saturating_sub(consumed * self.divisor());
                }
                self.arm_timer();
            }
            REG_SELF_IPI if self.x2apic() => {
                self.raise_local(value as u8, false);
            }
            REG_ID
            | REG_VERSION
            | REG_APR
            | REG_PPR
            | REG_RRD
            | REG_LDR
            | REG_DFR
            | REG_ICR_HIGH
            | REG_TIMER_CURRENT
            | 0x100..=0x270 => {}
            _ => return false,
        }
        self.update();
        true
    }

    /// x2APIC MSR read (SDM Vol. 3A §11.12.1); `None` means #GP (not in x2APIC mode or no
    /// such register).
    pub fn read_msr(&mut self, msr: u32) -> Option<u64> {
        if !(0x800..=0x8FF).contains(&msr) || !self.x2apic() {
            return None;
        }
        let reg = (msr - 0x800) << 4;
        match reg {
            REG_EOI | REG_SELF_IPI => None,
            REG_ICR_LOW => Some(self.icr & !(1 << 12)),
            _ => self.read_reg(reg).map(u64::from),
        }
    }

    /// x2APIC MSR write; `false` means #GP.
    pub fn write_msr(&mut self, msr: u32, value: u64) -> bool {
        if !(0x800..=0x8FF).contains(&msr) || !self.x2apic() {
            return false;
        }
        let reg = (msr - 0x800) << 4;
        match reg {
            REG_ICR_LOW => {
                self.icr = value & 0xFFFF_FFFF_000C_CFFF;
                self.send_ipi(self.icr);
                self.update();
                true
            }
            REG_EOI if value != 0 => false,
            REG_ID | REG_VERSION | REG_LDR | REG_PPR | REG_TIMER_CURRENT => false,
            _ => self.write_reg(reg, value as u32),
        }
    }
}

impl TimerDevice for LocalApic {
    /// Timer expiry (SDM Vol. 3A §11.5.4): raise the LVT timer vector unless masked; periodic
    /// mode reloads, one-shot and TSC-deadline stop.
    fn on_timer(&mut self, now_ns: u64) {
        let lvt = self.lvt[LVT_TIMER];
        match self.timer_mode() {
            TIMER_TSC_DEADLINE => {
                if self.tsc_deadline_ns.is_some_and(|d| d <= now_ns) {
                    self.tsc_deadline_ns = None;
                    self.tsc_deadline = 0;
                } else {
                    self.arm_timer();
                    return;
                }
            }
            _ => {
                if self.timer_initial == 0 {
                    return;
                }
            }
        }
        if lvt & LVT_MASKED == 0 && self.sw_enabled() {
            self.raise_local(lvt as u8, false);
        }
        if self.timer_mode() == TIMER_PERIODIC {
            self.arm_timer();
        } else {
            self.timer.clear();
        }
        self.update();
    }
}

impl BusDevice for LocalApic {
    fn name(&self) -> &str {
        "lapic"
    }

    fn read(&mut self, access: BusAccess, data: &mut [u8]) {
        data.fill(0);
        if !self.hw_enabled() || self.x2apic() {
            data.fill(0xFF);
            return;
        }
        let reg = (access.offset & 0xFF0) as u32;
        let within = (access.offset & 0xF) as usize;
        if within >= 4 {
            return;
        }
        let value = match self.read_reg(reg) {
            Some(v) => v,
            None => {
                self.set_error(ESR_ILLEGAL_REGISTER);
                0
            }
        };
        let bytes = value.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(within + i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, access: BusAccess, data: &[u8]) {
        if !self.hw_enabled() || self.x2apic() {
            return;
        }
        let reg = (access.offset & 0xFF0) as u32;
        let within = (access.offset & 0xF) as usize;
        if within >= 4 {
            return;
        }
        // Narrow writes merge into the register (real hardware needs dwords; be lenient).
        let mut bytes = if data.len() >= 4 && within == 0 {
            [0; 4]
        } else {
            self.read_reg(reg).unwrap_or(0).to_le_bytes()
        };
        for (i, &b) in data.iter().enumerate() {
            if let Some(slot) = bytes.get_mut(within + i) {
                *slot = b;
            }
        }
        if !self.write_reg(reg, u32::from_le_bytes(bytes)) || reg == REG_SELF_IPI {
            self.set_error(ESR_ILLEGAL_REGISTER);
            self.update();
        }
    }

    fn reset(&mut self) {
        self.reset_registers();
        self.ipis.clear();
    }
}

/// The CPU's interrupt controller with a local APIC in front of the 8259 pair: APIC
/// interrupts first, then (in virtual wire mode) the 8259 via LINT0 ExtINT.
pub struct LocalApicFront {
    /// The APIC.
    pub lapic: Arc<Mutex<LocalApic>>,
    /// The 8259 pair on LINT0, driving input 1 of the CPU's INTR pin.
    pub pic: Arc<Mutex<Pic8259Pair>>,
    pic_input: IntrPin,
}

impl LocalApicFront {
    /// A front over `lapic` and `pic`; `cpu_intr` is the pin both drive.
    pub fn new(
        lapic: Arc<Mutex<LocalApic>>,
        pic: Arc<Mutex<Pic8259Pair>>,
        cpu_intr: &IntrPin,
    ) -> Self {
        LocalApicFront {
            lapic,
            pic,
            pic_input: cpu_intr.input(1),
        }
    }
}

/// IA32_X2APIC_* MSRs (SDM Vol. 3A §11.12.1.2, Table 11-6).
const X2APIC_MSRS: std::ops::RangeInclusive<u32> = 0x800..=0x8FF;

impl InterruptController for LocalApicFront {
    /// The APIC's MSRs: IA32_APIC_BASE, IA32_TSC_DEADLINE, and the x2APIC registers while in
    /// x2APIC mode (otherwise `None`: the CPU raises #GP).
    fn read_msr(&mut self, msr: u32) -> Option<u64> {
        let mut lapic = self.lapic.lock().ok()?;
        match msr {
            MSR_APIC_BASE => Some(lapic.apic_base()),
            MSR_TSC_DEADLINE => Some(lapic.tsc_deadline()),
            m if X2APIC_MSRS.contains(&m) => lapic.read_msr(m),
            _ => None,
        }
    }

    fn write_msr(&mut self, msr: u32, value: u64, tsc: u64) -> Option<bool> {
        let mut lapic = self.lapic.lock().ok()?;
        match msr {
            MSR_APIC_BASE => {
                let valid = lapic.apic_base_write_valid(value);
                if valid {
                    lapic.set_apic_base(value);
                }
                Some(valid)
            }
            MSR_TSC_DEADLINE => {
                lapic.write_tsc_deadline(value, tsc);
                Some(true)
            }
            m if X2APIC_MSRS.contains(&m) => Some(lapic.write_msr(m, value)),
            _ => None,
        }
    }

    fn task_priority_class(&mut self) -> Option<u8> {
        let mut lapic = self.lapic.lock().ok()?;
        lapic.read_reg(REG_TPR).map(|tpr| (tpr >> 4) as u8 & 0xF)
    }

    fn set_task_priority_class(&mut self, class: u8) -> bool {
        self.lapic
            .lock()
            .map(|mut lapic| lapic.write_reg(REG_TPR, u32::from(class & 0xF) << 4))
            .unwrap_or(false)
    }

    fn acknowledge(&mut self) -> Option<u8> {
        let passthrough = {
            let mut lapic = self.lapic.lock().ok()?;
            if let Some(v) = lapic.acknowledge_local() {
                return Some(v);
            }
            lapic.pic_passthrough()
        };
        if passthrough && self.pic_input.input_level() {
            return self.pic.lock().ok()?.acknowledge();
        }
        None
    }
}
