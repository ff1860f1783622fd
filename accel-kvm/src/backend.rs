//! [`KvmBackend`]: one vCPU of a KVM virtual machine behind the [`CpuBackend`] trait.
//!
//! Between calls to `run`, KVM holds the true CPU state; `state`/`set_state` convert it with
//! [`crate::state`]. During `run`, port I/O and MMIO exits go to the same [`Platform`] buses
//! the interpreter uses, and with the default userspace irqchip the platform's interrupt
//! controller (its local APIC, with the 8259 pair behind LINT0) decides what to inject, through
//! the same `Platform::intr`/`acknowledge_interrupt` the interpreter samples: `KVM_INTERRUPT`
//! when the vCPU can take an interrupt, otherwise an interrupt-window request and injection at
//! the window exit (KVM API §4.16, §5 `request_interrupt_window`). The APIC's MSRs and CR8
//! reach the same LAPIC ([`crate::msr_exits`], `kvm_run.cr8`). HLT exits to userspace and ends
//! `run` with [`VmExit::Halted`], so the machine loop sleeps instead of the host CPU spinning.
//! While the guest runs, a one-shot timer brings the vCPU out at the platform's next timer
//! deadline ([`Platform::next_timer_deadline`]), the end of the time slice, or
//! [`KvmOptions::max_run_interval`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_guest_debug, kvm_mp_state, kvm_msr_entry, kvm_pit_config, kvm_xcrs, Msrs as KvmMsrs,
    KVM_CAP_GUEST_DEBUG_HW_BPS, KVM_EXIT_IO, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP,
    KVM_GUESTDBG_USE_HW_BP, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_HALTED, KVM_MP_STATE_RUNNABLE,
    KVM_PIT_SPEAKER_DUMMY, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use pcvm_core::cpu_state::{cr, flags};
use pcvm_core::{
    CpuBackend, CpuState, DebugConfig, GuestMemory, IrqLine, Kicker, PhysRegion, Platform,
    RunLimit, StopReason, SystemRequest, VmExit, WatchKind,
};
use vm_memory::{GuestAddress, GuestMemoryBackend as _};

use crate::kick::{self, DeadlineTimer, KickTarget, RunGuard};
use crate::memslots::MemoryMap;
use crate::msr_exits::{self, Refusal};
use crate::{cpuid, state, Error, KvmIrqLine, Result};

/// Where the interrupt controllers live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IrqchipMode {
    /// pcvm's device model (PIC, PIT …) decides; KVM only injects (`--irqchip userspace`).
    #[default]
    Userspace,
    /// KVM's in-kernel PIC/IOAPIC/LAPIC and PIT (`KVM_CREATE_IRQCHIP`, `KVM_CREATE_PIT2`);
    /// devices raise interrupts with [`KvmIrqLine`] (`--irqchip kernel`).
    Kernel,
}

/// How to build a [`KvmBackend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmOptions {
    /// Interrupt-controller placement.
    pub irqchip: IrqchipMode,
    /// The longest a vCPU runs without coming back out when no device timer is due sooner
    /// (device timers themselves are met exactly: the exit timer is armed for the platform's
    /// next deadline). Interrupts raised from other threads (console input) wait at most this.
    pub max_run_interval: Duration,
    /// Userspace irqchip: ask KVM to hand the local APIC's MSRs to the platform
    /// ([`crate::msr_exits`]). `false` takes the path used when KVM refuses: CPUID hides the
    /// APIC, x2APIC and TSC-deadline timer (the APIC page still answers).
    pub lapic_msr_exits: bool,
}

impl Default for KvmOptions {
    fn default() -> Self {
        KvmOptions {
            irqchip: IrqchipMode::Userspace,
            max_run_interval: Duration::from_millis(10),
            lapic_msr_exits: true,
        }
    }
}

/// How often a vCPU comes back out when the platform does not report its timer deadlines.
pub const UNKNOWN_DEADLINE_POLL: Duration = Duration::from_millis(1);

/// Identity-map page table and TSS KVM needs for real mode on VMX without unrestricted guest
/// (KVM API §4.43/§4.44), placed below a 256 KiB BIOS at the top of 4 GiB as QEMU once did.
pub const IDENTITY_MAP_ADDR: u64 = 0xFFFB_C000;
/// Three pages for KVM's real-mode TSS, right after the identity map.
pub const TSS_ADDR: usize = 0xFFFB_D000;

/// `KVM_INTERRUPT` = `_IOW(KVMIO, 0x86, struct kvm_interrupt)` (KVM API §4.16); kvm-ioctls
/// does not wrap it.
const KVM_INTERRUPT: libc::c_ulong = (1 << 30) | (4 << 16) | (0xAE << 8) | 0x86;

/// Which debug mechanism is active.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum DebugMode {
    /// Nothing: KVM runs freely.
    #[default]
    Off,
    /// KVM single-steps; breakpoints and write watchpoints are checked after every step.
    Step,
    /// Breakpoints/watchpoints in DR0–DR3 via `KVM_GUESTDBG_USE_HW_BP` (plus single-step if
    /// asked for).
    Hardware,
}

/// The KVM CPU backend.
pub struct KvmBackend {
    // Field order is drop order: the vCPU, then the VM, then the memory the slots point to.
    vcpu: VcpuFd,
    vm: Arc<VmFd>,
    kvm: Kvm,
    memory: MemoryMap,
    options: KvmOptions,
    kicker: Kicker,
    kick_target: KickTarget,
    timer: DeadlineTimer,
    /// The vCPU executed HLT (userspace irqchip: KVM does not track it for us).
    halted: bool,
    /// Guest CPUID exposes XSAVE and KVM has `KVM_CAP_XCRS`: XCR0 is vCPU state.
    xcr0_valid: bool,
    /// The host's MXCSR_MASK (from the XSAVE legacy area), reported in `CpuState`.
    mxcsr_mask: u32,
    /// x87/SSE state moves with `KVM_GET/SET_XSAVE` (the 4 KiB `kvm_xsave` holds all of this
    /// VM's state); otherwise with `KVM_GET/SET_FPU`.
    use_xsave: bool,
    /// The MSRs of `CpuState` this KVM can save and restore.
    msr_indices: Vec<u32>,
    /// The guest's CPUID table as set with `KVM_SET_CPUID2`.
    cpuid: Vec<kvm_bindings::kvm_cpuid_entry2>,
    /// `KVM_CAP_GUEST_DEBUG_HW_BPS`.
    hw_breakpoints: usize,
    /// Userspace irqchip: whether guest accesses to the local APIC's MSRs reach the platform
    /// ([`msr_exits`]), or why KVM refused. Kernel irqchip: `Ok` (KVM's LAPIC has them).
    lapic_msrs: std::result::Result<(), Refusal>,
    /// The guest TSC's frequency (`KVM_GET_TSC_KHZ`), to convert TSC-deadline delays.
    tsc_khz: u32,
    /// IA32_APIC_BASE as the platform's local APIC last accepted it from the guest (KVM's
    /// copy in `kvm_sregs` is stale then); cleared by `set_state`.
    apic_base: Option<u64>,
    debug: DebugConfig,
    debug_mode: DebugMode,
    /// Hardware mode: the linear RIP of the breakpoint we stopped at; the next `run` steps over
    /// it with the breakpoints disarmed.
    step_over: Option<u64>,
    /// Step mode: (linear address, bytes) of each write watchpoint before the current step.
    watch_before: Vec<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for KvmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmBackend")
            .field("options", &self.options)
            .field("halted", &self.halted)
            .finish_non_exhaustive()
    }
}

fn ioctl_err(operation: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |e| Error::ioctl(operation, e)
}

impl KvmBackend {
    /// Open `/dev/kvm`, create a VM with `memory` mapped as memory slots and one vCPU in the
    /// RESET state. `memory` must be the memory of the platform later passed to `run`, with
    /// its ROMs already mapped.
    pub fn new(memory: &GuestMemory, options: KvmOptions) -> Result<Self> {
        kick::install_handler()?;
        let kvm =
            Kvm::new().map_err(|e| Error::Open(std::io::Error::from_raw_os_error(e.errno())))?;
        let api = kvm.get_api_version();
        if api != 12 {
            return Err(Error::ApiVersion(api));
        }
        for (cap, name) in [
            (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
            (Cap::VcpuEvents, "KVM_CAP_VCPU_EVENTS"),
            (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
            (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(Error::MissingCapability(name));
            }
        }
        let vm = kvm.create_vm().map_err(ioctl_err("create a KVM VM"))?;
        if vm.check_extension(Cap::SetIdentityMapAddr) {
            vm.set_identity_map_address(IDENTITY_MAP_ADDR)
                .map_err(ioctl_err("set the identity-map address"))?;
        }
        vm.set_tss_address(TSS_ADDR)
            .map_err(ioctl_err("set the TSS address"))?;
        if options.irqchip == IrqchipMode::Kernel {
            vm.create_irq_chip()
                .map_err(ioctl_err("create the in-kernel irqchip"))?;
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            vm.create_pit2(pit)
                .map_err(ioctl_err("create the in-kernel PIT"))?;
            let routing = crate::irq_line::pc_gsi_routing()
                .map_err(|e| Error::VcpuFailed(format!("GSI routing table: {e}")))?;
            vm.set_gsi_routing(&routing)
                .map_err(ioctl_err("set the PC's GSI routing"))?;
        }
        let lapic_msrs = match options.irqchip {
            IrqchipMode::Kernel => Ok(()),
            IrqchipMode::Userspace if options.lapic_msr_exits => msr_exits::enable(&vm),
            IrqchipMode::Userspace => Err(Refusal {
                operation: "KvmOptions::lapic_msr_exits",
                errno: 0,
            }),
        };
        if let Err(refusal) = &lapic_msrs {
            tracing::warn!(
                "KVM cannot pass the local APIC's MSRs to userspace ({refusal}); the guest's \
                 CPUID shows no local APIC"
            );
        }
        let readonly = vm.check_extension(Cap::ReadonlyMem);
        if !readonly {
            tracing::warn!("KVM lacks KVM_CAP_READONLY_MEM: ROM is mapped writable");
        }
        let memory_map = MemoryMap::new(&vm, memory, readonly)?;
        let vcpu = vm.create_vcpu(0).map_err(ioctl_err("create the vCPU"))?;

        let mut supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl_err("get the supported CPUID"))?;
        let mut entries = supported.as_slice().to_vec();
        let lapic = match options.irqchip {
            IrqchipMode::Kernel => cpuid::Lapic::InKernel,
            IrqchipMode::Userspace if lapic_msrs.is_ok() => cpuid::Lapic::Userspace,
            IrqchipMode::Userspace => cpuid::Lapic::Hidden,
        };
        let xsave = cpuid::filter(&mut entries, lapic);
        supported = kvm_bindings::CpuId::from_entries(&entries)
            .map_err(|e| Error::VcpuFailed(format!("CPUID table: {e:?}")))?;
        vcpu.set_cpuid2(&supported)
            .map_err(ioctl_err("set the guest CPUID"))?;

        // Probe each MSR: KVM_GET_MSR_INDEX_LIST omits some it handles (the MTRRs).
        let msr_indices: Vec<u32> = state::msr_indices()
            .into_iter()
            .filter(|&index| {
                KvmMsrs::from_entries(&[kvm_msr_entry {
                    index,
                    ..Default::default()
                }])
                .ok()
                .and_then(|mut m| vcpu.get_msrs(&mut m).ok())
                    == Some(1)
            })
            .collect();
        let mxcsr_mask = if kvm.check_extension(Cap::Xsave) {
            vcpu.get_xsave().map(|x| x.region[7]).unwrap_or(0xFFFF)
        } else {
            0xFFFF
        };
        // KVM_SET_XSAVE copies the VM's XSAVE size from our buffer: only use the 4 KiB
        // `kvm_xsave` when KVM_CAP_XSAVE2 says that is enough (it is unless AMX was enabled).
        let xsave2 = vm.check_extension_int(Cap::Xsave2);
        let use_xsave = kvm.check_extension(Cap::Xsave) && (0..=4096).contains(&xsave2);
        let hw_breakpoints = vm
            .check_extension_raw(libc::c_ulong::from(KVM_CAP_GUEST_DEBUG_HW_BPS))
            .max(0) as usize;

        let tsc_khz = match kvm
            .check_extension(Cap::GetTscKhz)
            .then(|| vcpu.get_tsc_khz())
        {
            Some(Ok(khz)) if khz > 0 => khz,
            other => {
                tracing::warn!(
                    "KVM_GET_TSC_KHZ unavailable ({other:?}): TSC-deadline delays assume 1 GHz"
                );
                1_000_000
            }
        };
        let kick_target = KickTarget::default();
        let waker_target = kick_target.clone();
        let mut backend = KvmBackend {
            vcpu,
            vm: Arc::new(vm),
            memory: memory_map,
            options,
            kicker: Kicker::with_waker(Arc::new(move || waker_target.kick())),
            kick_target,
            timer: DeadlineTimer::new(),
            halted: false,
            xcr0_valid: xsave && kvm.check_extension(Cap::Xcrs),
            mxcsr_mask,
            use_xsave,
            msr_indices,
            cpuid: entries,
            hw_breakpoints,
            lapic_msrs,
            tsc_khz,
            apic_base: None,
            debug: DebugConfig::default(),
            debug_mode: DebugMode::Off,
            step_over: None,
            watch_before: Vec::new(),
            kvm,
        };
        backend.set_state_inner(&CpuState::reset())?;
        Ok(backend)
    }

    /// The interrupt-controller mode this VM was built with.
    pub fn irqchip(&self) -> IrqchipMode {
        self.options.irqchip
    }

    /// An interrupt line into KVM's in-kernel PIC/IOAPIC for input `gsi` (kernel irqchip
    /// only; `None` otherwise).
    pub fn irq_line(&self, gsi: u32) -> Option<Arc<dyn IrqLine>> {
        (self.options.irqchip == IrqchipMode::Kernel)
            .then(|| Arc::new(KvmIrqLine::new(self.vm.clone(), gsi)) as Arc<dyn IrqLine>)
    }

    /// Userspace irqchip: `Ok` when the guest's local-APIC MSRs (APIC base, TSC deadline,
    /// x2APIC) reach the platform and CPUID advertises the APIC, x2APIC and TSC-deadline
    /// timer; otherwise the KVM step that refused, with its errno.
    pub fn lapic_msrs(&self) -> std::result::Result<(), &Refusal> {
        self.lapic_msrs.as_ref().map(|_| ())
    }

    /// The guest TSC frequency in kHz (`KVM_GET_TSC_KHZ`).
    pub fn tsc_khz(&self) -> u32 {
        self.tsc_khz
    }

    /// How many hardware breakpoints KVM offers (`KVM_CAP_GUEST_DEBUG_HW_BPS`).
    pub fn hardware_breakpoints(&self) -> usize {
        self.hw_breakpoints
    }

    /// The MSRs of `CpuState` this KVM saves and restores; the others keep their defaults.
    pub fn supported_msrs(&self) -> &[u32] {
        &self.msr_indices
    }

    /// The `KVM_GET_API_VERSION` of the host (always 12).
    pub fn api_version(&self) -> i32 {
        self.kvm.get_api_version()
    }

    fn state_inner(&mut self) -> Result<CpuState> {
        let mut s = CpuState::reset();
        let regs = self.vcpu.get_regs().map_err(ioctl_err("get registers"))?;
        state::regs_from_kvm(&mut s, &regs);
        let sregs = self
            .vcpu
            .get_sregs()
            .map_err(ioctl_err("get system registers"))?;
        state::sregs_from_kvm(&mut s, &sregs);
        if let Some(base) = self.apic_base {
            s.msrs.apic_base = base;
        }
        if self.use_xsave {
            let xsave = self
                .vcpu
                .get_xsave()
                .map_err(ioctl_err("get XSAVE state"))?;
            state::fxsave_from_xsave_region(&mut s.fpu, &xsave.region);
        } else {
            let fpu = self.vcpu.get_fpu().map_err(ioctl_err("get FPU state"))?;
            state::fpu_from_kvm(&mut s.fpu, &fpu);
        }
        s.fpu.mxcsr_mask = self.mxcsr_mask;
        if self.xcr0_valid {
            let xcrs = self.vcpu.get_xcrs().map_err(ioctl_err("get XCRs"))?;
            if let Some(x) = xcrs
                .xcrs
                .iter()
                .take(xcrs.nr_xcrs as usize)
                .find(|x| x.xcr == 0)
            {
                s.xcr0 = x.value;
            }
        }
        let entries: Vec<kvm_msr_entry> = self
            .msr_indices
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = KvmMsrs::from_entries(&entries)
            .map_err(|e| Error::VcpuFailed(format!("MSR list: {e:?}")))?;
        let n = self
            .vcpu
            .get_msrs(&mut msrs)
            .map_err(ioctl_err("get MSRs"))?;
        for e in msrs.as_slice().iter().take(n) {
            state::msr_set(&mut s.msrs, e.index, e.data);
        }
        let dr = self
            .vcpu
            .get_debug_regs()
            .map_err(ioctl_err("get debug registers"))?;
        state::debugregs_from_kvm(&mut s, &dr);
        let events = self
            .vcpu
            .get_vcpu_events()
            .map_err(ioctl_err("get vCPU events"))?;
        state::events_from_kvm(&mut s, &events);
        s.halted = match self.options.irqchip {
            IrqchipMode::Userspace => self.halted,
            IrqchipMode::Kernel => {
                self.vcpu
                    .get_mp_state()
                    .map_err(ioctl_err("get the MP state"))?
                    .mp_state
                    == KVM_MP_STATE_HALTED
            }
        };
        Ok(s)
    }

    fn set_state_inner(&mut self, s: &CpuState) -> Result<()> {
        self.vcpu
            .set_sregs(&state::sregs_to_kvm(s))
            .map_err(ioctl_err("set system registers"))?;
        if s.cr0 & cr::CR0_PG != 0 {
            // kvm-pvm (software KVM) silently drops CR0.PG outside long mode; say so rather
            // than run the guest without paging.
            let back = self
                .vcpu
                .get_sregs()
                .map_err(ioctl_err("get system registers"))?;
            if back.cr0 & cr::CR0_PG == 0 {
                return Err(Error::VcpuFailed(
                    "KVM refused CR0.PG (paging outside long mode is not supported by this \
                     KVM, e.g. kvm-pvm's software emulation)"
                        .into(),
                ));
            }
        }
        self.vcpu
            .set_regs(&state::regs_to_kvm(s))
            .map_err(ioctl_err("set registers"))?;
        if self.use_xsave {
            let mut xsave = self
                .vcpu
                .get_xsave()
                .map_err(ioctl_err("get XSAVE state"))?;
            state::fxsave_to_xsave_region(&s.fpu, &mut xsave.region);
            // SAFETY: `use_xsave` is only set when KVM_CAP_XSAVE2 reports an XSAVE size of at
            // most 4096 bytes, the size of `kvm_xsave`, so KVM reads only within `xsave`.
            unsafe { self.vcpu.set_xsave(&xsave) }.map_err(ioctl_err("set XSAVE state"))?;
        } else {
            self.vcpu
                .set_fpu(&state::fpu_to_kvm(&s.fpu))
                .map_err(ioctl_err("set FPU state"))?;
        }
        if self.xcr0_valid {
            let mut xcrs = kvm_xcrs {
                nr_xcrs: 1,
                ..Default::default()
            };
            xcrs.xcrs[0].xcr = 0;
            xcrs.xcrs[0].value = s.xcr0;
            self.vcpu.set_xcrs(&xcrs).map_err(ioctl_err("set XCR0"))?;
        }
        let entries: Vec<kvm_msr_entry> = self
            .msr_indices
            .iter()
            .filter_map(|&index| {
                Some(kvm_msr_entry {
                    index,
                    data: state::msr_get(&s.msrs, index)?,
                    ..Default::default()
                })
            })
            .collect();
        let msrs = KvmMsrs::from_entries(&entries)
            .map_err(|e| Error::VcpuFailed(format!("MSR list: {e:?}")))?;
        let n = self.vcpu.set_msrs(&msrs).map_err(ioctl_err("set MSRs"))?;
        if n < entries.len() {
            // KVM stops at the first MSR it refuses (a value the guest CPUID does not allow).
            tracing::warn!(
                msr = entries[n].index,
                value = entries[n].data,
                "KVM refused an MSR value; later MSRs in the list were not set"
            );
        }
        self.vcpu
            .set_debug_regs(&state::debugregs_to_kvm(s))
            .map_err(ioctl_err("set debug registers"))?;
        self.vcpu
            .set_vcpu_events(&state::events_to_kvm(s))
            .map_err(ioctl_err("set vCPU events"))?;
        match self.options.irqchip {
            IrqchipMode::Userspace => self.halted = s.halted,
            IrqchipMode::Kernel => {
                let mp_state = if s.halted {
                    KVM_MP_STATE_HALTED
                } else {
                    KVM_MP_STATE_RUNNABLE
                };
                self.vcpu
                    .set_mp_state(kvm_mp_state { mp_state })
                    .map_err(ioctl_err("set the MP state"))?;
            }
        }
        self.step_over = None;
        self.apic_base = None;
        Ok(())
    }

    /// `KVM_INTERRUPT`: inject external interrupt `vector` (userspace irqchip only).
    fn interrupt(&self, vector: u8) -> Result<()> {
        let irq = kvm_bindings::kvm_interrupt {
            irq: u32::from(vector),
        };
        // SAFETY: KVM_INTERRUPT reads one `struct kvm_interrupt` from the pointer, which refers
        // to `irq` on our stack; the fd is our vCPU fd.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&self.vcpu),
                KVM_INTERRUPT as _,
                &irq,
            )
        };
        if rc < 0 {
            return Err(Error::Ioctl {
                operation: "inject an interrupt (KVM_INTERRUPT)",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Apply `self.debug` to KVM (`KVM_SET_GUEST_DEBUG`), optionally with the hardware
    /// breakpoints disarmed (to step over the one we stopped at).
    fn apply_debug(&mut self, disarm_hw: bool) -> Result<()> {
        let mut dbg = kvm_guest_debug::default();
        match self.debug_mode {
            DebugMode::Off => {}
            DebugMode::Step => dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP,
            DebugMode::Hardware => {
                dbg.control = KVM_GUESTDBG_ENABLE;
                if self.debug.single_step || disarm_hw {
                    dbg.control |= KVM_GUESTDBG_SINGLESTEP;
                }
                if !disarm_hw {
                    dbg.control |= KVM_GUESTDBG_USE_HW_BP;
                    let mut dr7 = 0u64;
                    let slots = self
                        .debug
                        .breakpoints
                        .iter()
                        .map(|b| (b.addr, 0u64, 1u64))
                        .chain(self.debug.watchpoints.iter().map(|w| {
                            let rw = if w.kind == WatchKind::Write { 1 } else { 3 };
                            (w.addr, rw, w.len)
                        }));
                    for (i, (addr, rw, len)) in slots.enumerate().take(4) {
                        dbg.arch.debugreg[i] = addr;
                        // SDM Vol. 3B §17.2.4: LEN 00=1, 01=2, 11=4, 10=8 bytes; exec needs 00.
                        let len_bits = match len {
                            2 => 1,
                            4 => 3,
                            8 => 2,
                            _ => 0,
                        };
                        dr7 |= (1 << (2 * i)) | ((rw | (len_bits << 2)) << (16 + 4 * i));
                    }
                    dbg.arch.debugreg[7] = dr7;
                }
            }
        }
        self.vcpu
            .set_guest_debug(&dbg)
            .map_err(ioctl_err("set guest debugging"))
    }

    /// Remember the bytes under every write watchpoint (step mode) before the next step.
    fn snapshot_watchpoints(&mut self, p: &dyn Platform) {
        self.watch_before.clear();
        if self.debug_mode != DebugMode::Step {
            return;
        }
        for w in &self.debug.watchpoints {
            self.watch_before
                .push((w.addr, self.read_linear(p, w.addr, w.len.min(64) as usize)));
        }
    }

    /// Read guest memory at a linear address (through `KVM_TRANSLATE`); unmapped bytes read 0.
    fn read_linear(&self, p: &dyn Platform, addr: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let lin = addr.wrapping_add(i);
                let mut b = [0u8];
                if let Ok(t) = self.vcpu.translate_gva(lin) {
                    if t.valid != 0 {
                        let _ = p.memory().read_phys(t.physical_address, &mut b);
                    }
                }
                b[0]
            })
            .collect()
    }

    /// A `KVM_EXIT_DEBUG`: decide whether it stops the run.
    fn on_debug_exit(
        &mut self,
        p: &dyn Platform,
        arch: kvm_bindings::kvm_debug_exit_arch,
    ) -> Option<VmExit> {
        let lin = arch.pc;
        if self.debug_mode == DebugMode::Hardware && arch.dr6 & 0xF != 0 {
            let slot = (arch.dr6 & 0xF).trailing_zeros() as usize;
            let nbp = self.debug.breakpoints.len();
            if slot < nbp {
                self.step_over = Some(lin);
                return Some(VmExit::Debug(StopReason::Breakpoint(lin)));
            }
            if let Some(w) = self.debug.watchpoints.get(slot - nbp) {
                return Some(VmExit::Debug(StopReason::Watchpoint {
                    kind: w.kind,
                    addr: w.addr,
                }));
            }
        }
        if self.debug_mode == DebugMode::Step {
            let before = std::mem::take(&mut self.watch_before);
            for (addr, bytes) in before {
                if self.read_linear(p, addr, bytes.len()) != bytes {
                    return Some(VmExit::Debug(StopReason::Watchpoint {
                        kind: WatchKind::Write,
                        addr,
                    }));
                }
            }
            if self.debug.breakpoints.iter().any(|b| b.addr == lin) {
                return Some(VmExit::Debug(StopReason::Breakpoint(lin)));
            }
        }
        if self.debug.single_step {
            return Some(VmExit::Debug(StopReason::Step));
        }
        None
    }

    /// Finish a port-I/O exit: every element of a string I/O goes to the bus separately.
    fn on_io_exit(&mut self, p: &mut dyn Platform) {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: the last KVM_RUN returned KVM_EXIT_IO (checked by the caller), so `io` is
        // the active member of the exit union.
        let io = unsafe { run.__bindgen_anon_1.io };
        debug_assert_eq!(run.exit_reason, KVM_EXIT_IO);
        let size = usize::from(io.size);
        let total = size * io.count as usize;
        if !matches!(size, 1 | 2 | 4) {
            return;
        }
        let base = run as *mut kvm_bindings::kvm_run as *mut u8;
        // SAFETY: KVM places `count * size` data bytes at `data_offset` inside the vCPU's
        // kvm_run mapping (KVM API §5 "KVM_EXIT_IO"), which stays mapped while `self.vcpu`
        // lives; nothing else references those bytes during this call.
        let data =
            unsafe { std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), total) };
        let out = u32::from(io.direction) == kvm_bindings::KVM_EXIT_IO_OUT;
        for chunk in data.chunks_exact_mut(size) {
            if out {
                p.io_write(io.port, chunk);
            } else {
                p.io_read(io.port, chunk);
            }
        }
    }

    /// A guest RDMSR KVM handed over: the platform's local APIC answers its MSRs; a filtered
    /// MSR the platform does not take goes back to KVM (host-initiated, so unfiltered);
    /// anything else KVM refused is #GP (`None`).
    fn guest_rdmsr(&mut self, p: &mut dyn Platform, index: u32, reason: u32) -> Option<u64> {
        if msr_exits::is_local_apic_msr(index) {
            if let Some(v) = p.read_local_msr(index) {
                return Some(v);
            }
        }
        if reason & kvm_bindings::KVM_MSR_EXIT_REASON_FILTER != 0 {
            return self.kvm_msr(index);
        }
        None
    }

    /// A guest WRMSR KVM handed over; `false` is #GP. A TSC-deadline write carries the
    /// guest's TSC converted so the platform's 1 GHz arithmetic gives the right delay
    /// ([`msr_exits::deadline_reference_tsc`]).
    fn guest_wrmsr(&mut self, p: &mut dyn Platform, index: u32, value: u64, reason: u32) -> bool {
        if msr_exits::is_local_apic_msr(index) {
            let tsc = if index == msr_exits::MSR_TSC_DEADLINE {
                let guest_tsc = self.kvm_msr(msr_exits::MSR_TSC).unwrap_or(0);
                msr_exits::deadline_reference_tsc(value, guest_tsc, self.tsc_khz)
            } else {
                0
            };
            match p.write_local_msr(index, value, tsc) {
                Some(true) => {
                    if index == msr_exits::MSR_APIC_BASE {
                        self.apic_base = Some(p.read_local_msr(index).unwrap_or(value));
                    }
                    return true;
                }
                Some(false) => return false,
                None => {}
            }
        }
        if reason & kvm_bindings::KVM_MSR_EXIT_REASON_FILTER != 0 {
            let entry = kvm_msr_entry {
                index,
                data: value,
                ..Default::default()
            };
            return KvmMsrs::from_entries(&[entry])
                .ok()
                .and_then(|m| self.vcpu.set_msrs(&m).ok())
                == Some(1);
        }
        false
    }

    /// One MSR read by the host through `KVM_GET_MSRS` (not subject to the MSR filter).
    fn kvm_msr(&self, index: u32) -> Option<u64> {
        let mut msrs = KvmMsrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .ok()?;
        (self.vcpu.get_msrs(&mut msrs).ok()? == 1).then(|| msrs.as_slice()[0].data)
    }

    /// Answer the pending `KVM_EXIT_MMIO` load with `data` (KVM API §5 "KVM_EXIT_MMIO").
    fn complete_mmio_read(&mut self, data: &[u8]) -> Result<()> {
        let run = self.vcpu.get_kvm_run();
        if run.exit_reason != kvm_bindings::KVM_EXIT_MMIO {
            return Err(Error::VcpuFailed(format!(
                "MMIO exit changed to exit reason {}",
                run.exit_reason
            )));
        }
        // SAFETY: the exit reason (checked above) is KVM_EXIT_MMIO, so `mmio` is the active
        // member of the exit union; `data` is at most 8 bytes, the size of `mmio.data`.
        unsafe {
            let mmio = &mut run.__bindgen_anon_1.mmio;
            let n = data.len().min(mmio.data.len());
            mmio.data[..n].copy_from_slice(&data[..n]);
        }
        Ok(())
    }

    /// Answer the pending `KVM_EXIT_X86_RDMSR`/`WRMSR`: `Some(data)` completes it (the data is
    /// ignored for writes), `None` makes KVM inject #GP(0) (KVM API §5 "KVM_EXIT_X86_RDMSR").
    fn complete_msr(&mut self, result: Option<u64>) -> Result<()> {
        let run = self.vcpu.get_kvm_run();
        if !matches!(
            run.exit_reason,
            kvm_bindings::KVM_EXIT_X86_RDMSR | kvm_bindings::KVM_EXIT_X86_WRMSR
        ) {
            return Err(Error::VcpuFailed(format!(
                "MSR exit changed to exit reason {}",
                run.exit_reason
            )));
        }
        // SAFETY: the exit reason (checked above) is KVM_EXIT_X86_RDMSR or _WRMSR, so `msr`
        // is the active member of the exit union; only plain integer fields are written.
        unsafe {
            let msr = &mut run.__bindgen_anon_1.msr;
            msr.error = u8::from(result.is_none());
            if let Some(data) = result {
                msr.data = data;
            }
        }
        Ok(())
    }

    /// When the running vCPU must come back out: the platform's next timer deadline
    /// (virtual-clock ns converted to a host instant; both run at 1 ns per ns), the end of the
    /// time slice, or [`KvmOptions::max_run_interval`] from now, whichever is first. A platform
    /// that cannot tell its deadlines is polled every [`UNKNOWN_DEADLINE_POLL`].
    fn next_exit(&self, p: &dyn Platform, slice_end: Option<Instant>) -> Instant {
        let now = Instant::now();
        let mut at = now + self.options.max_run_interval;
        if let Some(end) = slice_end {
            at = at.min(end);
        }
        match p.next_timer_deadline() {
            Some(u64::MAX) => {}
            Some(deadline) => {
                let wait = deadline.saturating_sub(p.clock().now_ns());
                at = at.min(now + Duration::from_nanos(wait));
            }
            None => at = at.min(now + UNKNOWN_DEADLINE_POLL),
        }
        at
    }

    fn guest_if(&self) -> bool {
        self.vcpu
            .get_regs()
            .map(|r| r.rflags & flags::IF != 0)
            .unwrap_or(false)
    }

    fn run_inner(&mut self, p: &mut dyn Platform, limit: RunLimit) -> Result<VmExit> {
        if self.memory.low_host()
            != p.memory()
                .vm_memory()
                .get_host_address(GuestAddress(0))
                .map(|h| h as u64)
                .unwrap_or(0)
        {
            return Err(Error::Memory(
                "the platform's memory is not the memory this VM was created with".into(),
            ));
        }
        self.memory.sync(&self.vm, p.memory(), false)?;
        if self.kicker.take() {
            return Ok(VmExit::Kicked);
        }
        let slice_end = match limit {
            RunLimit::Unbounded => None,
            RunLimit::Instructions(n) => {
                Some(Instant::now() + Duration::from_nanos(n).max(Duration::from_micros(100)))
            }
        };
        // Resuming from a hardware breakpoint: step over it with the breakpoints disarmed.
        let stepping_over =
            self.step_over.take().is_some() && self.debug_mode == DebugMode::Hardware;
        if stepping_over {
            self.apply_debug(true)?;
        }
        self.timer.for_current_thread()?;
        let immediate_exit: *mut u8 = &mut self.vcpu.get_kvm_run().immediate_exit;
        let target = self.kick_target.clone();
        let _guard = RunGuard::enter(&target, immediate_exit);
        let result = self.run_loop(p, slice_end, stepping_over);
        self.timer.disarm();
        self.vcpu.set_kvm_immediate_exit(0);
        if stepping_over {
            self.apply_debug(false)?;
        }
        result
    }

    fn run_loop(
        &mut self,
        p: &mut dyn Platform,
        slice_end: Option<Instant>,
        mut stepping_over: bool,
    ) -> Result<VmExit> {
        let userspace = self.options.irqchip == IrqchipMode::Userspace;
        let count_mode = match p.clock().mode() {
            pcvm_core::ClockMode::InstructionCount { ns_per_instruction } => {
                Some(ns_per_instruction.max(1))
            }
            pcvm_core::ClockMode::Host => None,
        };
        let mut entered = false;
        loop {
            // --- Between exits: timers, requests, kicks, interrupts. ---
            p.poll();
            match p.system_request() {
                Some(SystemRequest::Reset) => return Ok(VmExit::Reset),
                Some(SystemRequest::PowerOff(_)) => return Ok(VmExit::PowerOff),
                None => {}
            }
            if self.kicker.take() {
                return Ok(VmExit::Kicked);
            }
            self.memory.sync(&self.vm, p.memory(), false)?;
            if entered {
                if let Some(end) = slice_end {
                    if Instant::now() >= end {
                        return Ok(VmExit::BudgetExhausted);
                    }
                }
            }
            if p.take_nmi() {
                self.vcpu.nmi().map_err(ioctl_err("inject an NMI"))?;
                self.halted = false;
            }
            // CR8 is the LAPIC's TPR[7:4]: between exits the platform's LAPIC holds it; KVM
            // keeps its copy in kvm_run.cr8 without an in-kernel LAPIC (KVM API §5 "cr8").
            let cr8_sent = if userspace { p.read_cr8() } else { None };
            if let Some(cr8) = cr8_sent {
                self.vcpu.get_kvm_run().cr8 = cr8;
            }
            if userspace {
                if self.halted {
                    if p.intr() && self.guest_if() {
                        self.halted = false;
                    } else {
                        return Ok(VmExit::Halted);
                    }
                }
                let intr = p.intr();
                let run = self.vcpu.get_kvm_run();
                let ready = run.ready_for_interrupt_injection != 0 && run.if_flag != 0;
                let mut want_window = intr;
                if intr && ready {
                    if let Some(vector) = p.acknowledge_interrupt() {
                        self.interrupt(vector)?;
                    }
                    want_window = p.intr();
                }
                self.vcpu.get_kvm_run().request_interrupt_window = u8::from(want_window);
            }
            if self.debug_mode == DebugMode::Step {
                self.snapshot_watchpoints(p);
            }
            self.timer.arm_by(self.next_exit(p, slice_end));

            // --- Run the guest. ---
            let started = count_mode.map(|_| Instant::now());
            entered = true;
            let exit = match self.vcpu.run() {
                Ok(VcpuExit::IoIn(..)) | Ok(VcpuExit::IoOut(..)) => Exit::Io,
                // Performed below, after CR8 reached the LAPIC (the access may be to the TPR).
                Ok(VcpuExit::MmioRead(addr, data)) => Exit::MmioRead(addr, data.len().min(8)),
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    let mut bytes = [0u8; 8];
                    let len = data.len().min(8);
                    bytes[..len].copy_from_slice(&data[..len]);
                    Exit::MmioWrite(addr, bytes, len)
                }
                Ok(VcpuExit::Hlt) => Exit::Hlt,
                Ok(VcpuExit::X86Rdmsr(m)) => Exit::RdMsr(m.index, m.reason.bits()),
                Ok(VcpuExit::X86Wrmsr(m)) => Exit::WrMsr(m.index, m.data, m.reason.bits()),
                // A CR8 write lowering the TPR (userspace irqchip on VMX, KVM API §5
                // KVM_EXIT_SET_TPR): nothing to do, KVM keeps CR8 in `kvm_run.cr8`.
                Ok(VcpuExit::IrqWindowOpen) | Ok(VcpuExit::Intr) | Ok(VcpuExit::SetTpr) => {
                    Exit::Nothing
                }
                Ok(VcpuExit::Debug(arch)) => Exit::Debug(arch),
                Ok(VcpuExit::Shutdown) => Exit::Stop(VmExit::Shutdown),
                Ok(VcpuExit::SystemEvent(kind, _)) => Exit::Stop(match kind {
                    KVM_SYSTEM_EVENT_RESET => VmExit::Reset,
                    KVM_SYSTEM_EVENT_SHUTDOWN => VmExit::PowerOff,
                    KVM_SYSTEM_EVENT_CRASH => VmExit::Shutdown,
                    _ => VmExit::Shutdown,
                }),
                Ok(VcpuExit::FailEntry(reason, cpu)) => Exit::Fail(format!(
                    "VM entry failed: hardware reason {reason:#x} on cpu {cpu}"
                )),
                Ok(VcpuExit::InternalError) => Exit::Internal,
                Ok(other) => Exit::Fail(format!("unexpected exit {other:?}")),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    Exit::Interrupted
                }
                Err(e) => return Err(Error::ioctl("run the vCPU (KVM_RUN)", e)),
            };
            if let (Some(ns), Some(t)) = (count_mode, started) {
                p.clock()
                    .add_instructions(t.elapsed().as_nanos() as u64 / ns);
            }
            if let Some(sent) = cr8_sent {
                let cr8 = self.vcpu.get_kvm_run().cr8;
                if cr8 != sent {
                    p.write_cr8(cr8);
                }
            }
            match exit {
                Exit::Io | Exit::MmioRead(..) | Exit::MmioWrite(..) => {
                    match exit {
                        Exit::MmioRead(addr, len) => {
                            let mut bytes = [0u8; 8];
                            mmio_read(p, addr, &mut bytes[..len]);
                            self.complete_mmio_read(&bytes[..len])?;
                        }
                        Exit::MmioWrite(addr, bytes, len) => mmio_write(p, addr, &bytes[..len]),
                        _ => self.on_io_exit(p),
                    }
                    let stepping = self.debug_mode == DebugMode::Step
                        || self.debug.single_step
                        || stepping_over;
                    if stepping {
                        if let Some(stop) = self.finish_io_step(p, &mut stepping_over)? {
                            return Ok(stop);
                        }
                    }
                }
                Exit::Hlt => {
                    if userspace {
                        self.halted = true;
                    }
                }
                Exit::Nothing => {}
                Exit::RdMsr(index, reason) => {
                    let value = self.guest_rdmsr(p, index, reason);
                    self.complete_msr(value)?;
                }
                Exit::WrMsr(index, data, reason) => {
                    let ok = self.guest_wrmsr(p, index, data, reason);
                    self.complete_msr(ok.then_some(0))?;
                }
                Exit::Debug(arch) => {
                    if let Some(stop) = self.after_step(p, arch, &mut stepping_over)? {
                        return Ok(stop);
                    }
                }
                Exit::Stop(e) => return Ok(e),
                Exit::Fail(why) => return Err(Error::VcpuFailed(why)),
                Exit::Internal => {
                    let run = self.vcpu.get_kvm_run();
                    // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                    // active member of the exit union.
                    let internal = unsafe { run.__bindgen_anon_1.internal };
                    let n = (internal.ndata as usize).min(internal.data.len());
                    return Err(Error::VcpuFailed(format!(
                        "KVM internal error, suberror {} data {:x?}",
                        internal.suberror,
                        &internal.data[..n]
                    )));
                }
                Exit::Interrupted => self.vcpu.set_kvm_immediate_exit(0),
            }
        }
    }

    /// A debug exit (or a completed I/O instruction while stepping): step over a hardware
    /// breakpoint, or decide whether the step stops the run.
    fn after_step(
        &mut self,
        p: &dyn Platform,
        arch: kvm_bindings::kvm_debug_exit_arch,
        stepping_over: &mut bool,
    ) -> Result<Option<VmExit>> {
        if *stepping_over {
            // Stepped over the breakpoint we stopped at: re-arm and go on.
            *stepping_over = false;
            self.apply_debug(false)?;
            return Ok(self
                .debug
                .single_step
                .then_some(VmExit::Debug(StopReason::Step)));
        }
        Ok(self.on_debug_exit(p, arch))
    }

    /// While stepping, an instruction that exited for I/O must count as one step. KVM
    /// completes it on the next `KVM_RUN`; with `immediate_exit` set that entry only finishes
    /// the instruction. Hardware KVM then reports the single-step trap itself; kvm-pvm does
    /// not (measured), so a plain `EINTR` is treated as the step having completed.
    fn finish_io_step(
        &mut self,
        p: &dyn Platform,
        stepping_over: &mut bool,
    ) -> Result<Option<VmExit>> {
        self.vcpu.set_kvm_immediate_exit(1);
        let arch = match self.vcpu.run() {
            Ok(VcpuExit::Debug(arch)) => Some(arch),
            Ok(_) => None,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => return Err(Error::ioctl("complete an I/O instruction", e)),
        };
        self.vcpu.set_kvm_immediate_exit(0);
        let arch = match arch {
            Some(a) => a,
            None => {
                let regs = self.vcpu.get_regs().map_err(ioctl_err("get registers"))?;
                let sregs = self
                    .vcpu
                    .get_sregs()
                    .map_err(ioctl_err("get system registers"))?;
                let long = sregs.efer & cr::EFER_LMA != 0 && sregs.cs.l != 0;
                let pc = if long {
                    regs.rip
                } else {
                    (sregs.cs.base + regs.rip) & 0xFFFF_FFFF
                };
                kvm_bindings::kvm_debug_exit_arch {
                    exception: 1,
                    pc,
                    dr6: 1 << 14,
                    ..Default::default()
                }
            }
        };
        self.after_step(p, arch, stepping_over)
    }
}

/// What a `KVM_RUN` ended with, detached from the kvm_run borrow.
#[derive(Debug)]
enum Exit {
    /// Port I/O to perform from kvm_run's data area.
    Io,
    /// An MMIO load of this many bytes (at most 8) to answer in kvm_run.
    MmioRead(u64, usize),
    /// An MMIO store of the first `.2` bytes.
    MmioWrite(u64, [u8; 8], usize),
    Hlt,
    Nothing,
    /// RDMSR handed to userspace: index, `KVM_MSR_EXIT_REASON_*`.
    RdMsr(u32, u32),
    /// WRMSR handed to userspace: index, value, `KVM_MSR_EXIT_REASON_*`.
    WrMsr(u32, u64, u32),
    Debug(kvm_bindings::kvm_debug_exit_arch),
    Stop(VmExit),
    Fail(String),
    Internal,
    Interrupted,
}

/// A load the memory slots did not satisfy: ROM (or a ROM alias) without a slot, write-only
/// shadow RAM, or device memory.
fn mmio_read(p: &mut dyn Platform, addr: u64, data: &mut [u8]) {
    match p.memory().classify(addr, false) {
        PhysRegion::Ram(_) | PhysRegion::Rom { .. } => {
            if p.memory().read_phys(addr, data).is_err() {
                data.fill(0xFF);
            }
        }
        PhysRegion::Dropped => data.fill(0xFF),
        PhysRegion::Mmio => p.mmio_read(addr, data),
    }
}

/// A store the memory slots did not take: ROM writes are dropped, write-only shadow RAM is
/// written, device memory goes to the MMIO bus.
fn mmio_write(p: &mut dyn Platform, addr: u64, data: &[u8]) {
    match p.memory().classify(addr, true) {
        PhysRegion::Ram(_) => {
            let _ = p.memory().write_phys(addr, data);
        }
        PhysRegion::Rom { .. } | PhysRegion::Dropped => {}
        PhysRegion::Mmio => p.mmio_write(addr, data),
    }
}

impl Drop for KvmBackend {
    fn drop(&mut self) {
        // The VM fd may outlive us (a KvmIrqLine holds it): unmap the slots first so no memory
        // this backend owns stays reachable from KVM.
        self.memory.clear(&self.vm);
    }
}

impl CpuBackend for KvmBackend {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn run(&mut self, platform: &mut dyn Platform, limit: RunLimit) -> pcvm_core::Result<VmExit> {
        self.run_inner(platform, limit)
            .map_err(|e| e.into_core("run the vCPU"))
    }

    fn state(&mut self) -> pcvm_core::Result<CpuState> {
        self.state_inner()
            .map_err(|e| e.into_core("read the CPU state"))
    }

    fn set_state(&mut self, state: &CpuState) -> pcvm_core::Result<()> {
        state.check_version()?;
        self.set_state_inner(state)
            .map_err(|e| e.into_core("load the CPU state"))
    }

    fn set_debug(&mut self, config: &DebugConfig) -> pcvm_core::Result<()> {
        let wanted = config.breakpoints.len() + config.watchpoints.len();
        let hw_fits = wanted > 0
            && wanted <= self.hw_breakpoints.min(4)
            && config
                .watchpoints
                .iter()
                .all(|w| matches!(w.len, 1 | 2 | 4 | 8) && w.addr % w.len == 0);
        let mode = if hw_fits {
            DebugMode::Hardware
        } else if wanted > 0 || config.single_step {
            if let Some(w) = config
                .watchpoints
                .iter()
                .find(|w| w.kind != WatchKind::Write)
            {
                return Err(Error::DebugUnsupported(format!(
                    "{:?} watchpoint at {:#x}: KVM here has {} hardware breakpoints and \
                     single-stepping can only detect writes",
                    w.kind, w.addr, self.hw_breakpoints
                ))
                .into_core("set debug controls"));
            }
            DebugMode::Step
        } else {
            DebugMode::Off
        };
        self.debug = config.clone();
        self.debug_mode = mode;
        self.step_over = None;
        self.apply_debug(false)
            .map_err(|e| e.into_core("set debug controls"))
    }

    fn translate(
        &mut self,
        _platform: &dyn Platform,
        linear: u64,
    ) -> pcvm_core::Result<Option<u64>> {
        let t = self
            .vcpu
            .translate_gva(linear)
            .map_err(|e| Error::ioctl("translate an address (KVM_TRANSLATE)", e))
            .map_err(|e| e.into_core("translate"))?;
        Ok((t.valid != 0).then_some(t.physical_address))
    }

    fn kicker(&self) -> Kicker {
        self.kicker.clone()
    }

    /// The entry given to `KVM_SET_CPUID2` (an index-qualified entry matches its subleaf
    /// only, KVM API §4.46 `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`).
    fn cpuid(&self, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        self.cpuid
            .iter()
            .find(|e| {
                e.function == leaf
                    && (e.flags & kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0
                        || e.index == subleaf)
            })
            .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
    }
}
