//! The CPU backend trait every execution engine implements (interpreter, JIT, KVM).
//!
//! A backend owns the true CPU state while [`CpuBackend::run`] executes; between runs
//! [`CpuBackend::state`] and [`CpuBackend::set_state`] move it in and out as a [`CpuState`]. Devices
//! are reached only through the [`Platform`] passed to `run`, so every backend drives the same
//! device model. The gdb target and snapshots use nothing but this trait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cpu_state::CpuState;
use crate::platform::Platform;
use crate::Result;

/// Why [`CpuBackend::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The CPU executed HLT with interrupts that can wake it; the caller waits for an interrupt or
    /// the next timer deadline, then calls `run` again.
    Halted,
    /// A debug event stopped execution; state is precise at the stop.
    Debug(StopReason),
    /// Triple fault or an unrecoverable shutdown condition (Intel SDM Vol. 3A §6.15, #DF).
    Shutdown,
    /// The platform asked for a system reset (port 0xCF9, 0x92, keyboard controller pulse).
    Reset,
    /// The platform asked to power off, or a debug-exit device was written.
    PowerOff,
    /// The instruction budget given to `run` is used up.
    BudgetExhausted,
    /// Another thread called [`Kicker::kick`].
    Kicked,
}

/// Which debug event stopped the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// One instruction completed under single-step.
    Step,
    /// Execution reached a breakpoint address; the instruction there has not run.
    Breakpoint(u64),
    /// An access matched a watchpoint; the accessing instruction has completed.
    Watchpoint { kind: WatchKind, addr: u64 },
}

/// The access a watchpoint fires on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchKind {
    Write,
    Read,
    Access,
}

/// A breakpoint kept by the backend, never by patching guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakpoint {
    /// Linear (guest-virtual) address of the instruction.
    pub addr: u64,
}

/// A data watchpoint on a linear address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watchpoint {
    pub addr: u64,
    pub len: u64,
    pub kind: WatchKind,
}

/// Debug controls set by the gdb target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebugConfig {
    /// Stop after every instruction.
    pub single_step: bool,
    pub breakpoints: Vec<Breakpoint>,
    pub watchpoints: Vec<Watchpoint>,
}

/// How long one call to [`CpuBackend::run`] may go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunLimit {
    /// Until an exit other than [`VmExit::BudgetExhausted`].
    Unbounded,
    /// At most this many instructions (backends that cannot count, like KVM, treat it as a
    /// time slice hint).
    Instructions(u64),
}

/// Stops a running vCPU from another thread; `run` returns [`VmExit::Kicked`] soon after.
#[derive(Clone, Default)]
pub struct Kicker {
    flag: Arc<AtomicBool>,
    waker: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Kicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kicker")
            .field("kicked", &self.is_kicked())
            .finish_non_exhaustive()
    }
}

impl Kicker {
    /// A kicker whose flag the backend polls.
    pub fn new() -> Self {
        Self::default()
    }

    /// A kicker that also calls `waker` (e.g. signals the vCPU thread out of `KVM_RUN`).
    pub fn with_waker(waker: Arc<dyn Fn() + Send + Sync>) -> Self {
        Kicker {
            flag: Arc::default(),
            waker: Some(waker),
        }
    }

    /// Ask the vCPU to stop.
    pub fn kick(&self) {
        self.flag.store(true, Ordering::Release);
        if let Some(w) = &self.waker {
            w();
        }
    }

    /// A kick is pending.
    #[inline]
    pub fn is_kicked(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Take a pending kick, clearing it.
    pub fn take(&self) -> bool {
        self.flag.swap(false, Ordering::AcqRel)
    }
}

/// One execution engine for one x86 CPU.
///
/// Object safe: the machine holds a `Box<dyn CpuBackend>` chosen by `--accel`.
pub trait CpuBackend: Send {
    /// Short name shown by `--accel` and the monitor: "interp", "jit", "kvm".
    fn name(&self) -> &'static str;

    /// Execute until an exit. The backend samples `platform.intr()` for external interrupts,
    /// acknowledges them with `platform.acknowledge_interrupt()`, and calls `platform.poll()`
    /// often enough that timers fire on time.
    fn run(&mut self, platform: &mut dyn Platform, limit: RunLimit) -> Result<VmExit>;

    /// The current architectural state.
    fn state(&mut self) -> Result<CpuState>;

    /// Replace the architectural state (also used for reset: `set_state(&CpuState::reset())`).
    fn set_state(&mut self, state: &CpuState) -> Result<()>;

    /// Install breakpoints, watchpoints and single-step.
    fn set_debug(&mut self, config: &DebugConfig) -> Result<()>;

    /// Translate a linear address through the guest's current paging structures, without
    /// side effects (no A/D updates, no faults). `None` if not mapped.
    fn translate(&mut self, platform: &dyn Platform, linear: u64) -> Result<Option<u64>>;

    /// Queue an external interrupt vector for delivery when the guest can take it (used by
    /// the monitor; devices raise interrupts through the platform's controller instead).
    fn inject_interrupt(&mut self, vector: u8) -> Result<()> {
        let mut s = self.state()?;
        s.pending_interrupt = Some(vector);
        s.halted = false;
        self.set_state(&s)
    }

    /// Queue a non-maskable interrupt.
    fn inject_nmi(&mut self) -> Result<()> {
        let mut s = self.state()?;
        s.nmi_pending = true;
        s.halted = false;
        self.set_state(&s)
    }

    /// A handle another thread can use to stop `run`.
    fn kicker(&self) -> Kicker;

    /// Drop everything cached about guest code (called when the memory map changes).
    fn flush_caches(&mut self) {}

    /// Instructions retired so far (0 for backends that cannot count).
    fn instructions_retired(&self) -> u64 {
        0
    }

    /// What CPUID leaf `leaf`, subleaf `subleaf` returns to the guest as `[eax, ebx, ecx,
    /// edx]`, so the machine can ask what the guest CPU implements; `None` if the backend
    /// cannot tell.
    fn cpuid(&self, _leaf: u32, _subleaf: u32) -> Option<[u32; 4]> {
        None
    }

    /// The guest CPU implements Intel 64 long mode: CPUID.80000001H:EDX.LM[bit 29] (Intel SDM
    /// Vol. 2A "CPUID"). `false` when the backend cannot tell.
    fn supports_long_mode(&self) -> bool {
        self.cpuid(0x8000_0000, 0)
            .is_some_and(|max| max[0] >= 0x8000_0001)
            && self
                .cpuid(0x8000_0001, 0)
                .is_some_and(|r| r[3] & (1 << 29) != 0)
    }
}
