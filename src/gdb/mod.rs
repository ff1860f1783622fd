//! The gdb remote target: debug a guest with gdb over TCP or a unix socket (`-s`, `-S`,
//! `-gdb tcp:HOST:PORT|unix:PATH`).
//!
//! Written once against [`CpuBackend`] and [`Board`] (through [`GdbMachine`]), so every backend
//! gets the same debugger. While gdb is attached the session owns the run loop: it runs the
//! guest in slices, keeps time moving while the CPU is halted, and reads gdb's input on a
//! thread that kicks the CPU, so Ctrl-C stops even a guest spinning with interrupts off.
//!
//! - Registers: see [`regs`] (layout per connection; `$pc` is the linear address CS.base+EIP).
//! - Memory: `m`/`M` addresses are linear (guest-virtual) and go through
//!   [`CpuBackend::translate`]; an unmapped page, MMIO or a hole is an error (`E0e`), never
//!   made-up bytes. Writes to ROM are refused rather than silently dropped.
//! - Breakpoints (software and hardware alike) and watchpoints are kept by the backend
//!   ([`DebugConfig`]), so guest memory is never patched and the guest never sees them.
//! - Single-step executes one instruction; an interrupt or exception due at that boundary is
//!   delivered first and the step stops at the handler's first instruction.
//! - `monitor` commands: see [`monitor`].
//!
//! Not here: long mode in the interpreter (the x86-64 layout is ready for it), KVM/JIT backends.

pub mod conn;
pub mod monitor;
pub mod pagewalk;
pub mod regs;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use gdbstub::common::Signal;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind as GdbWatchKind,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::ext::target_description_xml_override::{
    TargetDescriptionXmlOverride, TargetDescriptionXmlOverrideOps,
};
use gdbstub::target::{Target, TargetError, TargetResult};
use pcvm_core::memory::PhysRegion;
use pcvm_core::{
    Board, Breakpoint, CpuBackend, CpuState, DebugConfig, Platform, RunLimit, SegReg, Segment,
    StopReason, SystemRequest, VmExit, WatchKind, Watchpoint,
};

pub use conn::{ListenAddr, ListenSpec, Listener, Stream};
pub use regs::RegLayout;
use regs::X86Regs;

/// Instructions per slice while gdb is attached and the guest runs (short, so input is seen
/// within milliseconds even by backends that do not check the kicker often).
const SLICE: u64 = 200_000;
/// Longest wait while the guest is halted before time is re-checked.
const MAX_HALT_WAIT: Duration = Duration::from_millis(2);
/// errno for a bad address (gdb shows "Cannot access memory").
const EFAULT: u8 = 14;

/// What the debugger needs of a machine: the CPU and the board at once, and a system reset.
pub trait GdbMachine {
    /// The CPU backend and the platform it runs on.
    fn parts(&mut self) -> (&mut dyn CpuBackend, &mut Board);
    /// Reset every device and the CPU (`monitor reset`, a guest-requested reset).
    fn reset(&mut self) -> Result<()>;
}

/// A [`GdbMachine`] over a bare backend and board (tests, embedders): reset returns the
/// devices on both buses and the CPU to their power-on state.
pub struct BoardMachine<'a> {
    pub cpu: &'a mut dyn CpuBackend,
    pub board: &'a mut Board,
}

impl GdbMachine for BoardMachine<'_> {
    fn parts(&mut self) -> (&mut dyn CpuBackend, &mut Board) {
        (&mut *self.cpu, &mut *self.board)
    }
    fn reset(&mut self) -> Result<()> {
        self.board.pio.reset_all();
        self.board.mmio.reset_all();
        self.board.memory.set_a20(true);
        let _ = self.board.requests.take();
        self.cpu.set_state(&CpuState::reset())?;
        self.cpu.flush_caches();
        Ok(())
    }
}

/// How a debugging session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// gdb detached or went away; the guest runs on.
    Detached,
    /// gdb sent `kill`: the machine should stop.
    Killed,
    /// The guest powered off with this status while being debugged.
    PowerOff(i32),
    /// gdb sent something the stub could not parse; the connection was closed, the guest
    /// runs on.
    Dropped(String),
}

/// A listening gdb server.
#[derive(Debug)]
pub struct GdbServer {
    listener: Listener,
    layout: Option<RegLayout>,
}

impl GdbServer {
    /// Listen at `spec`.
    pub fn bind(spec: &ListenSpec) -> Result<Self> {
        Ok(GdbServer {
            listener: Listener::bind(&spec.addr)?,
            layout: spec.layout,
        })
    }

    /// Force a register layout instead of choosing by the CPU mode at connect time.
    pub fn set_layout(&mut self, layout: Option<RegLayout>) {
        self.layout = layout;
    }

    /// The TCP port listened on.
    pub fn tcp_port(&self) -> Option<u16> {
        self.listener.tcp_port()
    }

    /// Block until gdb connects (`-S`).
    pub fn wait_for_client(&self) -> Result<Stream> {
        self.listener
            .accept(true)?
            .ok_or_else(|| anyhow!("no gdb connection"))
    }

    /// A connection if gdb is connecting now (checked between slices by the machine loop).
    pub fn poll_client(&self) -> Result<Option<Stream>> {
        self.listener.accept(false)
    }

    /// Debug the machine over `stream` until gdb detaches, kills or the guest powers off. The
    /// guest is stopped on entry; on return every breakpoint and watchpoint is cleared.
    pub fn serve<M: GdbMachine>(&self, stream: Stream, m: &mut M) -> Result<SessionEnd> {
        let (cpu, _) = m.parts();
        let kicker = cpu.kicker();
        let state = cpu.state()?;
        let layout = self.layout.unwrap_or_else(|| RegLayout::for_state(&state));
        let (conn, rx, reader, closer) = conn::start(stream, kicker.clone())?;
        let mut target = GdbTarget::new(m, layout);
        let end = session(conn, &rx, &mut target);
        closer.shutdown();
        let _ = reader.join();
        let (cpu, _) = target.m.parts();
        cpu.set_debug(&DebugConfig::default())?;
        kicker.take();
        end
    }
}

/// What the session loop does next after a slice.
enum Slice {
    /// Keep running.
    Running,
    /// The CPU is halted: wait this long for gdb input, then run again.
    Wait(Duration),
    /// Report this stop to gdb.
    Stop(SingleThreadStopReason<u64>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exec {
    Stopped,
    Continue,
    Step,
}

/// The gdbstub target over a machine.
pub struct GdbTarget<'m, M: GdbMachine> {
    m: &'m mut M,
    layout: RegLayout,
    sw: Vec<u64>,
    hw: Vec<u64>,
    watch: Vec<Watchpoint>,
    exec: Exec,
    /// The next slice is the first since gdb resumed.
    fresh: bool,
    /// A triple fault stopped the guest; reset before running again.
    reset_pending: bool,
    exit_status: i32,
}

impl<'m, M: GdbMachine> GdbTarget<'m, M> {
    fn new(m: &'m mut M, layout: RegLayout) -> Self {
        GdbTarget {
            m,
            layout,
            sw: Vec::new(),
            hw: Vec::new(),
            watch: Vec::new(),
            exec: Exec::Stopped,
            fresh: false,
            reset_pending: false,
            exit_status: 0,
        }
    }

    fn debug_config(&self, single_step: bool) -> DebugConfig {
        let mut breakpoints: Vec<Breakpoint> = Vec::new();
        for &addr in self.sw.iter().chain(&self.hw) {
            if !breakpoints.iter().any(|b| b.addr == addr) {
                breakpoints.push(Breakpoint { addr });
            }
        }
        DebugConfig {
            single_step,
            breakpoints,
            watchpoints: self.watch.clone(),
        }
    }

    fn breakpoint_stop(&self, addr: u64) -> SingleThreadStopReason<u64> {
        if self.sw.contains(&addr) {
            SingleThreadStopReason::SwBreak(())
        } else {
            SingleThreadStopReason::HwBreak(())
        }
    }

    /// Run the guest for one slice (or one step) and say what follows.
    fn run_slice(&mut self) -> Result<Slice> {
        let step = self.exec == Exec::Step;
        let fresh = std::mem::take(&mut self.fresh);
        if fresh {
            if std::mem::take(&mut self.reset_pending) {
                self.m.reset()?;
            }
            let config = self.debug_config(step);
            let (cpu, _) = self.m.parts();
            cpu.set_debug(&config)?;
            cpu.kicker().take();
        }
        if step || !fresh {
            // Deliver the interrupt or exception due at this boundary on its own, so a step
            // or a breakpoint lands on the handler's first instruction. The interpreter runs
            // no instruction with a zero budget; a backend that treats the budget as a time
            // slice (KVM) runs a short slice or, when single-stepping, one step — every exit
            // is handled the same way, so the result is correct either way.
            let (cpu, board) = self.m.parts();
            let before = cpu.state()?;
            let exit = cpu.run(board, RunLimit::Instructions(0))?;
            if exit != VmExit::BudgetExhausted {
                return self.handle_exit(exit, step);
            }
            let after = cpu.state()?;
            if step && (after.linear_rip() != before.linear_rip() || after.halted != before.halted)
            {
                return Ok(Slice::Stop(SingleThreadStopReason::DoneStep));
            }
            let pc = after.linear_rip();
            if !step && !after.halted && (self.sw.contains(&pc) || self.hw.contains(&pc)) {
                return Ok(Slice::Stop(self.breakpoint_stop(pc)));
            }
        }
        let limit = RunLimit::Instructions(if step { 1 } else { SLICE });
        let (cpu, board) = self.m.parts();
        let exit = cpu.run(board, limit)?;
        self.handle_exit(exit, step)
    }

    fn handle_exit(&mut self, exit: VmExit, step: bool) -> Result<Slice> {
        let (cpu, board) = self.m.parts();
        Ok(match exit {
            VmExit::BudgetExhausted if step => Slice::Stop(SingleThreadStopReason::DoneStep),
            VmExit::BudgetExhausted => Slice::Running,
            VmExit::Kicked => {
                cpu.kicker().take();
                Slice::Running
            }
            VmExit::Halted => wait_for_interrupt(board),
            VmExit::Debug(StopReason::Step) => Slice::Stop(SingleThreadStopReason::DoneStep),
            VmExit::Debug(StopReason::Breakpoint(addr)) => Slice::Stop(self.breakpoint_stop(addr)),
            VmExit::Debug(StopReason::Watchpoint { kind, addr }) => {
                Slice::Stop(SingleThreadStopReason::Watch {
                    tid: (),
                    kind: match kind {
                        WatchKind::Write => GdbWatchKind::Write,
                        WatchKind::Read => GdbWatchKind::Read,
                        WatchKind::Access => GdbWatchKind::ReadWrite,
                    },
                    addr,
                })
            }
            VmExit::Reset | VmExit::PowerOff => match board.requests.take() {
                Some(SystemRequest::PowerOff(status)) => {
                    self.exit_status = status;
                    Slice::Stop(SingleThreadStopReason::Exited((status & 0xFF) as u8))
                }
                Some(SystemRequest::Reset) | None => {
                    tracing::info!("guest reset while debugging");
                    self.m.reset()?;
                    if step {
                        Slice::Stop(SingleThreadStopReason::DoneStep)
                    } else {
                        Slice::Running
                    }
                }
            },
            VmExit::Shutdown => {
                // Stop at the triple fault so it can be inspected; resuming resets.
                tracing::warn!("triple fault while debugging; the machine resets on resume");
                self.reset_pending = true;
                Slice::Stop(SingleThreadStopReason::Signal(Signal::SIGSEGV))
            }
        })
    }

    /// Read registers from the CPU.
    fn regs_from(&self, s: &CpuState) -> X86Regs {
        let fx = &s.fpu;
        let mut st = [[0u8; 10]; 8];
        for (d, src) in st.iter_mut().zip(&fx.st) {
            d.copy_from_slice(&src[..10]);
        }
        // Full tag word from the abridged one: valid registers as "valid" (00), others empty
        // (11) (Intel SDM Vol. 1 §10.5.1.1).
        let mut ftag = 0u32;
        for i in 0..8 {
            if fx.ftw & (1 << i) == 0 {
                ftag |= 3 << (2 * i);
            }
        }
        let mut xmm = [0u128; 16];
        for (d, src) in xmm.iter_mut().zip(&fx.xmm) {
            *d = u128::from_le_bytes(*src);
        }
        let sel = |r: SegReg| s.seg(r).selector;
        X86Regs {
            layout: self.layout,
            gpr: s.gpr,
            pc: s.linear_rip(),
            eflags: s.rflags as u32,
            seg: [
                sel(SegReg::Cs),
                sel(SegReg::Ss),
                sel(SegReg::Ds),
                sel(SegReg::Es),
                sel(SegReg::Fs),
                sel(SegReg::Gs),
            ],
            st,
            fpu: [
                u32::from(fx.fcw),
                u32::from(fx.fsw),
                ftag,
                ((fx.fip >> 32) & 0xFFFF) as u32,
                fx.fip as u32,
                ((fx.fdp >> 32) & 0xFFFF) as u32,
                fx.fdp as u32,
                u32::from(fx.fop & 0x7FF),
            ],
            xmm,
            mxcsr: fx.mxcsr,
            fs_base: s.seg(SegReg::Fs).base,
            gs_base: s.seg(SegReg::Gs).base,
            k_gs_base: s.msrs.kernel_gs_base,
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: s.cr8,
            efer: s.efer,
        }
    }

    /// Apply gdb's register values to a state.
    fn regs_into(&mut self, r: &X86Regs, s: &mut CpuState) -> Result<(), &'static str> {
        let wide = r.layout == RegLayout::X86_64;
        for (i, v) in r.gpr.iter().enumerate() {
            if wide {
                s.gpr[i] = *v;
            } else if i < 8 {
                s.gpr[i] = (s.gpr[i] & !0xFFFF_FFFF) | (v & 0xFFFF_FFFF);
            }
        }
        s.rflags = u64::from(r.eflags) | pcvm_core::cpu_state::flags::FIXED1;
        s.cr0 = r.cr0;
        s.cr2 = r.cr2;
        s.cr3 = r.cr3;
        s.cr4 = r.cr4;
        s.efer = r.efer;
        if wide {
            s.cr8 = r.cr8;
            s.msrs.kernel_gs_base = r.k_gs_base;
        }
        let order = [
            SegReg::Cs,
            SegReg::Ss,
            SegReg::Ds,
            SegReg::Es,
            SegReg::Fs,
            SegReg::Gs,
        ];
        for (reg, &sel) in order.iter().zip(&r.seg) {
            if s.seg(*reg).selector != sel {
                let seg = self.load_segment(s, sel)?;
                *s.seg_mut(*reg) = seg;
            }
        }
        s.seg_mut(SegReg::Fs).base = r.fs_base;
        s.seg_mut(SegReg::Gs).base = r.gs_base;
        s.rip = if s.in_64bit_code() {
            r.pc
        } else {
            let eip = r.pc.wrapping_sub(s.seg(SegReg::Cs).base) & 0xFFFF_FFFF;
            if s.code_bitness() == 16 {
                eip & 0xFFFF
            } else {
                eip
            }
        };
        let fx = &mut s.fpu;
        for (d, src) in fx.st.iter_mut().zip(&r.st) {
            d[..10].copy_from_slice(src);
        }
        fx.fcw = r.fpu[0] as u16;
        fx.fsw = r.fpu[1] as u16;
        let mut ftw = 0u8;
        for i in 0..8 {
            if (r.fpu[2] >> (2 * i)) & 3 != 3 {
                ftw |= 1 << i;
            }
        }
        fx.ftw = ftw;
        fx.fip = u64::from(r.fpu[4]) | (u64::from(r.fpu[3] & 0xFFFF) << 32);
        fx.fdp = u64::from(r.fpu[6]) | (u64::from(r.fpu[5] & 0xFFFF) << 32);
        fx.fop = (r.fpu[7] & 0x7FF) as u16;
        let xmms = if wide { 16 } else { 8 };
        for (d, src) in fx.xmm.iter_mut().zip(&r.xmm).take(xmms) {
            *d = src.to_le_bytes();
        }
        fx.mxcsr = r.mxcsr;
        Ok(())
    }

    /// A segment register loaded with `sel` as a MOV would: base = sel × 16 in real and
    /// virtual-8086 mode, else the descriptor from the GDT/LDT (Intel SDM Vol. 3A §3.4.5).
    fn load_segment(&mut self, s: &CpuState, sel: u16) -> Result<Segment, &'static str> {
        if !s.protected_mode() || s.rflags & pcvm_core::cpu_state::flags::VM != 0 {
            return Ok(Segment::real_mode(sel));
        }
        if sel & !3 == 0 {
            return Ok(Segment {
                selector: sel,
                base: 0,
                limit: 0,
                attributes: Segment::ATTR_UNUSABLE,
            });
        }
        let table = if sel & 4 != 0 {
            (s.ldtr.base, s.ldtr.limit)
        } else {
            (s.gdtr.base, u32::from(s.gdtr.limit))
        };
        let offset = u64::from(sel & !7);
        if offset + 7 > u64::from(table.1) {
            return Err("selector beyond the descriptor table limit");
        }
        let mut b = [0u8; 8];
        self.read_linear(table.0.wrapping_add(offset), &mut b)
            .map_err(|_| "descriptor table not readable")?;
        let d = u64::from_le_bytes(b);
        let base = ((d >> 16) & 0xFF_FFFF) | ((d >> 56) << 24);
        let mut limit = (((d >> 48) & 0xF) << 16 | (d & 0xFFFF)) as u32;
        let flags = ((d >> 52) & 0xF) as u32;
        if flags & 0x8 != 0 {
            limit = (limit << 12) | 0xFFF;
        }
        Ok(Segment {
            selector: sel,
            base,
            limit,
            attributes: ((d >> 40) & 0xFF) as u32 | (flags << 12),
        })
    }

    /// Read guest-virtual memory; the number of bytes read before the first unreadable one.
    fn read_linear(&mut self, addr: u64, data: &mut [u8]) -> Result<usize, usize> {
        let (cpu, board) = self.m.parts();
        let mut done = 0usize;
        while done < data.len() {
            let lin = addr.wrapping_add(done as u64);
            let chunk = ((0x1000 - (lin & 0xFFF)) as usize).min(data.len() - done);
            let phys = match cpu.translate(&*board, lin) {
                Ok(Some(p)) => p,
                _ => return Err(done),
            };
            if board
                .memory()
                .read_phys(phys, &mut data[done..done + chunk])
                .is_err()
            {
                return Err(done);
            }
            done += chunk;
        }
        Ok(done)
    }

    fn write_linear(&mut self, addr: u64, data: &[u8]) -> Result<(), ()> {
        let (cpu, board) = self.m.parts();
        // Translate and check every page first so a failing write changes nothing.
        let mut plan = Vec::new();
        let mut done = 0usize;
        while done < data.len() {
            let lin = addr.wrapping_add(done as u64);
            let chunk = ((0x1000 - (lin & 0xFFF)) as usize).min(data.len() - done);
            let phys = cpu.translate(&*board, lin).ok().flatten().ok_or(())?;
            for probe in [phys, phys.wrapping_add(chunk as u64 - 1)] {
                if !matches!(board.memory.classify(probe, true), PhysRegion::Ram(_)) {
                    return Err(());
                }
            }
            plan.push((phys, done, chunk));
            done += chunk;
        }
        for (phys, at, len) in plan {
            board
                .memory
                .write_phys(phys, &data[at..at + len])
                .map_err(|_| ())?;
        }
        Ok(())
    }
}

/// The CPU is halted: let virtual time reach the next timer, or wait a little for it.
fn wait_for_interrupt(board: &mut Board) -> Slice {
    board.poll();
    if board.intr() || board.nmi.load(Ordering::Acquire) {
        return Slice::Running;
    }
    let next = board.next_deadline();
    if next != u64::MAX && board.clock.skip_to(next) {
        board.poll();
        return Slice::Running;
    }
    let now = board.clock.now_ns();
    Slice::Wait(if next == u64::MAX {
        MAX_HALT_WAIT
    } else {
        Duration::from_nanos(next.saturating_sub(now)).min(MAX_HALT_WAIT)
    })
}

impl<M: GdbMachine> Target for GdbTarget<'_, M> {
    type Arch = regs::PcvmX86;
    type Error = anyhow::Error;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }
    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }
    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }
    fn support_target_description_xml_override(
        &mut self,
    ) -> Option<TargetDescriptionXmlOverrideOps<'_, Self>> {
        Some(self)
    }
}

impl<M: GdbMachine> SingleThreadBase for GdbTarget<'_, M> {
    fn read_registers(&mut self, regs: &mut X86Regs) -> TargetResult<(), Self> {
        let (cpu, _) = self.m.parts();
        let s = cpu.state().map_err(|e| TargetError::Fatal(e.into()))?;
        *regs = self.regs_from(&s);
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86Regs) -> TargetResult<(), Self> {
        let (cpu, _) = self.m.parts();
        let mut s = cpu.state().map_err(|e| TargetError::Fatal(e.into()))?;
        if let Err(why) = self.regs_into(regs, &mut s) {
            tracing::warn!("gdb register write refused: {why}");
            return Err(TargetError::Errno(22));
        }
        let (cpu, _) = self.m.parts();
        cpu.set_state(&s)
            .map_err(|e| TargetError::Fatal(e.into()))?;
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        match self.read_linear(start, data) {
            Ok(n) => Ok(n),
            Err(0) => Err(TargetError::Errno(EFAULT)),
            Err(n) => Ok(n),
        }
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        self.write_linear(start, data)
            .map_err(|()| TargetError::Errno(EFAULT))
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl<M: GdbMachine> SingleThreadResume for GdbTarget<'_, M> {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.exec = Exec::Continue;
        self.fresh = true;
        Ok(())
    }
    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl<M: GdbMachine> SingleThreadSingleStep for GdbTarget<'_, M> {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.exec = Exec::Step;
        self.fresh = true;
        Ok(())
    }
}

impl<M: GdbMachine> Breakpoints for GdbTarget<'_, M> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

fn add_unique(list: &mut Vec<u64>, addr: u64) -> bool {
    if !list.contains(&addr) {
        list.push(addr);
    }
    true
}

fn remove(list: &mut Vec<u64>, addr: u64) -> bool {
    let before = list.len();
    list.retain(|&a| a != addr);
    list.len() != before
}

impl<M: GdbMachine> SwBreakpoint for GdbTarget<'_, M> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(add_unique(&mut self.sw, addr))
    }
    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(remove(&mut self.sw, addr))
    }
}

impl<M: GdbMachine> HwBreakpoint for GdbTarget<'_, M> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(add_unique(&mut self.hw, addr))
    }
    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(remove(&mut self.hw, addr))
    }
}

fn watch_kind(k: GdbWatchKind) -> WatchKind {
    match k {
        GdbWatchKind::Write => WatchKind::Write,
        GdbWatchKind::Read => WatchKind::Read,
        GdbWatchKind::ReadWrite => WatchKind::Access,
    }
}

impl<M: GdbMachine> HwWatchpoint for GdbTarget<'_, M> {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: GdbWatchKind,
    ) -> TargetResult<bool, Self> {
        if len == 0 {
            return Ok(false);
        }
        let w = Watchpoint {
            addr,
            len,
            kind: watch_kind(kind),
        };
        if !self.watch.contains(&w) {
            self.watch.push(w);
        }
        Ok(true)
    }
    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: GdbWatchKind,
    ) -> TargetResult<bool, Self> {
        let w = Watchpoint {
            addr,
            len,
            kind: watch_kind(kind),
        };
        let before = self.watch.len();
        self.watch.retain(|x| *x != w);
        Ok(self.watch.len() != before)
    }
}

impl<M: GdbMachine> TargetDescriptionXmlOverride for GdbTarget<'_, M> {
    fn target_description_xml(
        &self,
        annex: &[u8],
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        if annex != b"target.xml" {
            return Err(TargetError::NonFatal);
        }
        let xml = self.layout.target_xml();
        let bytes = xml.as_bytes();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let n = (bytes.len() - start).min(length).min(buf.len());
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }
}

impl<M: GdbMachine> MonitorCmd for GdbTarget<'_, M> {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let text = String::from_utf8_lossy(cmd).into_owned();
        let reply = monitor::run(self, &text)?;
        // Send in pieces so a long listing never exceeds a packet.
        for chunk in reply.as_bytes().chunks(1024) {
            out.write_raw(chunk);
            out.flush();
        }
        Ok(())
    }
}

type Sm<'a, 'm, M> = GdbStubStateMachine<'a, GdbTarget<'m, M>, conn::Conn>;
type StubError = gdbstub::stub::GdbStubError<anyhow::Error, std::io::Error>;

/// Why feeding input ended the state machine.
enum FeedEnd {
    Closed,
    Failed(StubError),
}

/// The session loop: input from gdb, guest slices, stop reports.
fn session<M: GdbMachine>(
    conn: conn::Conn,
    rx: &Receiver<conn::Incoming>,
    target: &mut GdbTarget<'_, M>,
) -> Result<SessionEnd> {
    let stub = GdbStub::builder(conn)
        .packet_buffer_size(conn::MAX_PACKET + 8)
        .build()
        .map_err(|e| anyhow!("gdb stub: {e}"))?;
    let mut sm: Sm<'_, '_, M> = match stub.run_state_machine(target) {
        Ok(sm) => sm,
        Err(e) => return finish_error(e),
    };
    loop {
        sm = match sm {
            GdbStubStateMachine::Idle(g) => match rx.recv_timeout(conn::IDLE_POLL) {
                Ok(item) => match feed(GdbStubStateMachine::Idle(g), item, target) {
                    Ok(sm) => sm,
                    Err(FeedEnd::Closed) => return Ok(SessionEnd::Detached),
                    Err(FeedEnd::Failed(e)) => return finish_error(e),
                },
                Err(RecvTimeoutError::Timeout) => GdbStubStateMachine::Idle(g),
                Err(RecvTimeoutError::Disconnected) => return Ok(SessionEnd::Detached),
            },
            GdbStubStateMachine::Running(g) => {
                let item = match rx.try_recv() {
                    Ok(item) => Some(item),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return Ok(SessionEnd::Detached),
                };
                if let Some(item) = item {
                    match feed(GdbStubStateMachine::Running(g), item, target) {
                        Ok(sm) => sm,
                        Err(FeedEnd::Closed) => return Ok(SessionEnd::Detached),
                        Err(FeedEnd::Failed(e)) => return finish_error(e),
                    }
                } else {
                    match target.run_slice()? {
                        Slice::Running => GdbStubStateMachine::Running(g),
                        Slice::Wait(d) => match rx.recv_timeout(d) {
                            Ok(item) => match feed(GdbStubStateMachine::Running(g), item, target) {
                                Ok(sm) => sm,
                                Err(FeedEnd::Closed) => return Ok(SessionEnd::Detached),
                                Err(FeedEnd::Failed(e)) => return finish_error(e),
                            },
                            Err(RecvTimeoutError::Timeout) => GdbStubStateMachine::Running(g),
                            Err(RecvTimeoutError::Disconnected) => return Ok(SessionEnd::Detached),
                        },
                        Slice::Stop(reason) => {
                            target.exec = Exec::Stopped;
                            match g.report_stop(target, reason) {
                                Ok(sm) => sm,
                                Err(e) => return finish_error(e),
                            }
                        }
                    }
                }
            }
            GdbStubStateMachine::CtrlCInterrupt(g) => {
                target.exec = Exec::Stopped;
                let reason = Some(SingleThreadStopReason::Signal(Signal::SIGINT));
                match g.interrupt_handled(target, reason) {
                    Ok(sm) => sm,
                    Err(e) => return finish_error(e),
                }
            }
            GdbStubStateMachine::Disconnected(g) => {
                return Ok(match g.get_reason() {
                    DisconnectReason::Disconnect => SessionEnd::Detached,
                    DisconnectReason::Kill | DisconnectReason::TargetTerminated(_) => {
                        SessionEnd::Killed
                    }
                    DisconnectReason::TargetExited(_) => SessionEnd::PowerOff(target.exit_status),
                });
            }
        };
    }
}

/// Hand one framed item to the stub.
fn feed<'a, 'm, M: GdbMachine>(
    mut sm: Sm<'a, 'm, M>,
    item: conn::Incoming,
    target: &mut GdbTarget<'m, M>,
) -> Result<Sm<'a, 'm, M>, FeedEnd> {
    let bytes = match item {
        conn::Incoming::Packet(p) => p,
        conn::Incoming::Damaged => {
            match &mut sm {
                GdbStubStateMachine::Idle(g) => g.borrow_conn().send_raw(b"-"),
                GdbStubStateMachine::Running(g) => g.borrow_conn().send_raw(b"-"),
                GdbStubStateMachine::CtrlCInterrupt(g) => g.borrow_conn().send_raw(b"-"),
                GdbStubStateMachine::Disconnected(g) => g.borrow_conn().send_raw(b"-"),
            }
            return Ok(sm);
        }
        conn::Incoming::Closed => return Err(FeedEnd::Closed),
    };
    for b in bytes {
        sm = match sm {
            GdbStubStateMachine::Idle(g) => g.incoming_data(target, b),
            GdbStubStateMachine::Running(g) => g.incoming_data(target, b),
            GdbStubStateMachine::CtrlCInterrupt(g) => {
                target.exec = Exec::Stopped;
                let reason = Some(SingleThreadStopReason::Signal(Signal::SIGINT));
                match g.interrupt_handled(target, reason) {
                    Ok(GdbStubStateMachine::Idle(g)) => g.incoming_data(target, b),
                    Ok(GdbStubStateMachine::Running(g)) => g.incoming_data(target, b),
                    other => other,
                }
            }
            d @ GdbStubStateMachine::Disconnected(_) => Ok(d),
        }
        .map_err(FeedEnd::Failed)?;
    }
    Ok(sm)
}

/// A stub error ends the session: the guest's own failures are errors, protocol trouble
/// drops the connection and the guest runs on.
fn finish_error(e: StubError) -> Result<SessionEnd> {
    if e.is_target_error() {
        return Err(anyhow!("gdb session: {e}"));
    }
    tracing::warn!("gdb connection dropped: {e}");
    Ok(SessionEnd::Dropped(e.to_string()))
}

/// How [`run_machine`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// The guest powered off with this status.
    PowerOff(i32),
    /// gdb killed the machine.
    Killed,
    /// The caller's stop flag was set.
    Stopped,
}

/// A minimal machine loop with a gdb server: run the guest, let gdb attach between slices
/// (or before the first instruction with `start_paused`), handle halts, resets and power-off.
/// Tests and simple embedders use it; the full machine has its own loop with the same calls.
pub fn run_machine<M: GdbMachine>(
    server: &mut GdbServer,
    m: &mut M,
    start_paused: bool,
    stop: &AtomicBool,
) -> Result<RunEnd> {
    if start_paused {
        let stream = server.wait_for_client()?;
        if let Some(end) = after_session(server.serve(stream, m)?) {
            return Ok(end);
        }
    }
    loop {
        if stop.load(Ordering::Acquire) {
            return Ok(RunEnd::Stopped);
        }
        if let Some(stream) = server.poll_client()? {
            if let Some(end) = after_session(server.serve(stream, m)?) {
                return Ok(end);
            }
        }
        let (cpu, board) = m.parts();
        let exit = cpu
            .run(board, RunLimit::Instructions(SLICE))
            .context("CPU backend failed")?;
        match exit {
            VmExit::BudgetExhausted | VmExit::Debug(_) => {}
            VmExit::Kicked => {
                cpu.kicker().take();
            }
            VmExit::Halted => {
                if let Slice::Wait(d) = wait_for_interrupt(board) {
                    std::thread::sleep(d);
                }
            }
            VmExit::Reset | VmExit::PowerOff => match board.requests.take() {
                Some(SystemRequest::PowerOff(s)) => return Ok(RunEnd::PowerOff(s)),
                _ => m.reset()?,
            },
            VmExit::Shutdown => m.reset()?,
        }
    }
}

fn after_session(end: SessionEnd) -> Option<RunEnd> {
    match end {
        SessionEnd::Detached | SessionEnd::Dropped(_) => None,
        SessionEnd::Killed => Some(RunEnd::Killed),
        SessionEnd::PowerOff(s) => Some(RunEnd::PowerOff(s)),
    }
}
