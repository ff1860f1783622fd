//! Assembling a PC from the crates, and running it.
//!
//! [`Machine::new`] turns a [`MachineConfig`] into memory, firmware, devices on the buses with
//! their interrupt lines, and a CPU backend; [`Machine::run`] drives the backend and handles what
//! it returns: halts (wait for the next timer deadline or interrupt), resets, power-off, triple
//! faults, and stops requested from outside (Ctrl-C, `--timeout`, a test's condition).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use pcvm_core::{
    Board, ClockMode, CpuBackend, CpuState, GuestMemory, IrqLine, Kicker, MemoryLayout, Platform,
    RunLimit, SharedDevice, SystemRequest, TimerHandle, VirtualClock, VmExit,
};
use pcvm_devices::acpi_pm::{
    AcpiPmPorts, Piix4Pm, PM_BASE_DEFAULT, PM_BASE_LOADER, PM_IO_SIZE, SCI_IRQ,
};
use pcvm_devices::debug_exit::DebugExit;
use pcvm_devices::debugcon::DebugCon;
use pcvm_devices::fw_cfg::{
    FwCfg, FW_CFG_DMA_PORT, FW_CFG_DMA_PORT_LEN, FW_CFG_PORT, FW_CFG_PORT_LEN,
};
use pcvm_devices::gsi::{IoApicPinLine, IsaIrqLine};
use pcvm_devices::hpet::{Hpet, HPET_BASE, HPET_SIZE};
use pcvm_devices::i8042::{
    I8042, I8042_AUX_IRQ, I8042_COMMAND_PORT, I8042_DATA_PORT, I8042_KBD_IRQ,
};
use pcvm_devices::i8254::{Pit8254, Port61, PIT_IRQ, PIT_PORT, PIT_PORT_LEN, PORT61};
use pcvm_devices::i8259::Pic8259Pair;
use pcvm_devices::ide::{Drive, FileBackend, IdeController};
use pcvm_devices::ioapic::{IoApic, IOAPIC_BASE, IOAPIC_PINS, IOAPIC_SIZE};
use pcvm_devices::lapic::{LocalApic, LocalApicFront, LAPIC_BASE, LAPIC_SIZE};
use pcvm_devices::mc146818::{host_wall_clock, Rtc, RTC_IRQ, RTC_PORT, RTC_PORT_LEN};
use pcvm_devices::pci::i440fx::I440fx;
use pcvm_devices::pci::piix::{Piix3Ide, Piix3IsaBridge};
use pcvm_devices::pci::{PciBus, PciConfigPorts, PciIoWindow, PciMmioWindow};
use pcvm_devices::port92::{FastA20Port, PORT92};
use pcvm_devices::post::{PostCodePort, POST_PORT};
use pcvm_devices::reset_control::ResetControl;
use pcvm_devices::uart16550::{Uart16550, COM_PORTS, UART_PORT_LEN};
use pcvm_devices::vga::{TextRenderer, Vga};
use pcvm_firmware::acpi::{self, AcpiConfig, AcpiTables};
use pcvm_firmware::cmos::{self, BootDevice, CmosConfig};
use pcvm_firmware::fw_cfg_content::{self, IdeDrive, PcFwCfgConfig};
use pcvm_firmware::option_rom::OptionRom;
use pcvm_firmware::seabios::BiosImage;

pub use crate::console::{CaptureBuffer, CharSpec};
use crate::console::{Consoles, QuitHook};
use crate::direct::DirectKernel;
use crate::power::{ApmShutdownPort, APM_SHUTDOWN_PORT};

/// Instructions per call to the backend between checks of timeouts and stop conditions.
const SLICE: u64 = 2_000_000;
/// Longest sleep while the CPU is halted, so host input and stop requests are seen promptly.
const MAX_HALT_SLEEP: Duration = Duration::from_millis(2);
/// How often the text display is redrawn.
const DISPLAY_PERIOD: Duration = Duration::from_millis(40);
/// End of the 32-bit PCI memory window (the I/O APIC and other fixed devices start here).
const PCI_MMIO_END: u64 = 0xFEC0_0000;
/// The PCI I/O window SeaBIOS allocates I/O BARs from, up to the end of port space.
const PCI_IO_LEN: u64 = 0x1_0000 - PciIoWindow::SEABIOS_BASE as u64;

/// The CPU backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// The reference interpreter.
    Interp,
    /// The Cranelift JIT (hot 32-bit blocks compiled, everything else interpreted).
    Jit,
    /// KVM through /dev/kvm, driving the same device model through exits (userspace irqchip).
    Kvm,
}

impl Accel {
    /// What `--accel auto` picks: KVM only when /dev/kvm opens and the host CPU has hardware
    /// virtualization (VMX/SVM), so a software-emulated /dev/kvm (kvm-pvm) is never chosen;
    /// otherwise the JIT, which runs every guest the interpreter runs (it falls back to it).
    pub fn auto() -> Accel {
        if pcvm_accel_kvm::hardware_virtualization_available()
            && pcvm_accel_kvm::kvm_usable().is_ok()
        {
            Accel::Kvm
        } else {
            Accel::Jit
        }
    }
}

/// Where KVM's interrupt controllers live (`--irqchip`, QEMU's `-machine kernel_irqchip=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Irqchip {
    /// pcvm's PIC, I/O APIC and local APIC decide what KVM injects (the default).
    #[default]
    Userspace,
    /// KVM's in-kernel PIC, I/O APIC, local APIC and PIT (`KVM_CREATE_IRQCHIP`,
    /// `KVM_CREATE_PIT2`); pcvm's devices raise their lines with `KVM_IRQ_LINE`. KVM only.
    Kernel,
}

/// What is shown of the guest's screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    /// Nothing; SeaBIOS mirrors its screen to COM1 (fw_cfg `etc/sercon-port`).
    None,
    /// The VGA text screen drawn in the terminal.
    Text,
}

/// A drive's medium.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveMedia {
    /// A raw hard disk image (512-byte sectors).
    Disk,
    /// An ISO 9660 image on an ATAPI CD-ROM (2048-byte sectors).
    Cdrom,
}

/// One IDE drive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveConfig {
    pub path: PathBuf,
    pub media: DriveMedia,
    /// 0 primary master, 1 primary slave, 2 secondary master, 3 secondary slave; `None` takes
    /// the first free one.
    pub index: Option<u8>,
    /// How the user gave it (for error messages).
    pub origin: String,
}

/// Boot options (`-boot`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootConfig {
    pub order: Vec<BootDevice>,
    pub menu: bool,
    /// How long SeaBIOS waits before retrying after "No bootable device."; `None` = forever
    /// (QEMU's default).
    pub reboot_timeout_ms: Option<u32>,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            order: vec![BootDevice::HardDisk, BootDevice::Cdrom],
            menu: false,
            reboot_timeout_ms: None,
        }
    }
}

/// An isa-debug-exit device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugExitConfig {
    pub port: u16,
    /// Access size in bytes (1, 2 or 4).
    pub size: u8,
}

/// Everything a machine is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineConfig {
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Firmware image; `None` with no drives runs the built-in demo guest.
    pub bios: Option<PathBuf>,
    /// VGA BIOS; `None` looks for vgabios-stdvga.bin beside the BIOS.
    pub vga_rom: Option<PathBuf>,
    pub drives: Vec<DriveConfig>,
    pub boot: BootConfig,
    /// COM1.. in order.
    pub serials: Vec<CharSpec>,
    /// Debug console port and where its output goes.
    pub debugcon: Option<(u16, CharSpec)>,
    pub debug_exit: Option<DebugExitConfig>,
    pub display: Display,
    /// Exit instead of resetting.
    pub no_reboot: bool,
    pub accel: Accel,
    /// Interrupt controllers in pcvm or in KVM (`--accel kvm` only).
    pub irqchip: Irqchip,
    /// Instruction trace file.
    pub trace: Option<PathBuf>,
    /// Wall-clock limit for [`Machine::run`].
    pub timeout: Option<Duration>,
    /// Instruction-count clock: nanoseconds per instruction.
    pub icount_ns: Option<u64>,
    /// gdb server address (`-s`, `-gdb`).
    pub gdb: Option<crate::gdb::ListenSpec>,
    /// `-S`: wait for gdb before the first instruction.
    pub gdb_wait: bool,
    /// `-kernel`: boot this kernel directly instead of running firmware.
    pub kernel: Option<crate::direct::KernelConfig>,
}

impl Default for MachineConfig {
    /// 128 MiB, no firmware, no drives, COM1 discarded, no display.
    fn default() -> Self {
        MachineConfig {
            memory: 128 << 20,
            bios: None,
            vga_rom: None,
            drives: Vec::new(),
            boot: BootConfig::default(),
            serials: vec![CharSpec::Null],
            debugcon: None,
            debug_exit: None,
            display: Display::None,
            no_reboot: false,
            accel: Accel::Interp,
            irqchip: Irqchip::Userspace,
            trace: None,
            timeout: None,
            icount_ns: None,
            gdb: None,
            gdb_wait: false,
            kernel: None,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Exit {
    /// The guest powered off with this status (0 for APM/ACPI off, `(v << 1) | 1` for
    /// isa-debug-exit).
    PowerOff(i32),
    /// The guest asked for a reset and `-no-reboot` was given.
    Reset,
    /// Triple fault with `-no-reboot`; the CPU state at the fault.
    TripleFault(Box<CpuState>),
    /// The user quit (Ctrl-C, Ctrl-A x).
    Quit,
    /// The `--timeout` passed.
    Timeout,
    /// The caller's stop condition held.
    Stopped,
}

impl Exit {
    /// The process exit status for this ending.
    pub fn status(&self) -> i32 {
        match self {
            Exit::PowerOff(s) => *s,
            Exit::Reset | Exit::Quit | Exit::Stopped => 0,
            Exit::TripleFault(_) => 1,
            Exit::Timeout => 124,
        }
    }
}

/// A PC ready to run.
pub struct Machine {
    board: Board,
    cpu: Box<dyn CpuBackend>,
    kicker: Kicker,
    quit: Arc<AtomicBool>,
    config: MachineConfig,
    vga: Arc<Mutex<Vga>>,
    renderer: Option<(TextRenderer, Instant)>,
    gdb: Option<crate::gdb::GdbServer>,
    _consoles: Consoles,
    /// The `-kernel` to load at power-on and on every reset.
    direct: Option<DirectKernel>,
    pm: Arc<Mutex<Piix4Pm>>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A checked drive image, opened.
struct OpenedDrive {
    index: u8,
    media: DriveMedia,
    file: std::fs::File,
    sectors: u64,
}

fn open_drive(d: &DriveConfig) -> Result<OpenedDrive> {
    let (what, sector) = match d.media {
        DriveMedia::Disk => ("disk image", 512u64),
        DriveMedia::Cdrom => ("CD image", 2048u64),
    };
    let path = &d.path;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(d.media == DriveMedia::Disk)
        .open(path)
        .with_context(|| format!("failed to open {what} {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("failed to read {what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{what} {} is not a regular file", path.display());
    }
    let len = meta.len();
    if len == 0 {
        bail!("{what} {} is empty", path.display());
    }
    if !len.is_multiple_of(sector) {
        bail!(
            "{what} {} has size {len} bytes, which is not a multiple of {sector}-byte sectors",
            path.display()
        );
    }
    Ok(OpenedDrive {
        index: d.index.unwrap_or(0),
        media: d.media,
        file,
        sectors: len / sector,
    })
}

/// The VGA BIOS to offer: the configured one, or vgabios-stdvga.bin beside the BIOS.
fn find_vga_rom(config: &MachineConfig) -> Result<Option<OptionRom>> {
    if let Some(p) = &config.vga_rom {
        return Ok(Some(OptionRom::load(p)?));
    }
    let beside = config
        .bios
        .as_deref()
        .and_then(Path::parent)
        .map(|d| d.join("vgabios-stdvga.bin"));
    match beside {
        Some(p) if p.is_file() => Ok(Some(OptionRom::load(&p)?)),
        _ => Ok(None),
    }
}

/// Host input for a UART: fill its receive FIFO, waiting briefly while it is full (a guest
/// that never reads loses the excess rather than stalling the input thread).
fn uart_input_sink(uart: Arc<Mutex<Uart16550>>) -> crate::console::InputSink {
    Box::new(move |mut bytes: &[u8]| {
        let mut waited = 0;
        while !bytes.is_empty() && waited < 200 {
            let n = match uart.lock() {
                Ok(mut u) => u.enqueue_input(bytes),
                Err(_) => return,
            };
            bytes = &bytes[n.min(bytes.len())..];
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
                waited += 1;
            }
        }
    })
}

/// Host input for the PS/2 keyboard: each character typed as its key (DEL as Backspace).
fn keyboard_input_sink(i8042: Arc<Mutex<I8042>>) -> crate::console::InputSink {
    Box::new(move |bytes: &[u8]| {
        if let Ok(mut k) = i8042.lock() {
            for &b in bytes {
                k.key_input(if b == 0x7F { 0x08 } else { b });
            }
        }
    })
}

/// A shared device on one or more port ranges.
fn add_pio(board: &mut Board, ranges: &[(u16, u64)], dev: SharedDevice) -> Result<()> {
    for &(base, len) in ranges {
        board.pio.insert(u64::from(base), len, dev.clone())?;
    }
    Ok(())
}

impl Machine {
    /// Build the machine: check every input first, so a bad file is one clear error.
    pub fn new(config: MachineConfig) -> Result<Self> {
        let direct = config.kernel.as_ref().map(DirectKernel::open).transpose()?;
        // Direct boot needs no firmware; the built-in guest then sits unused at the reset vector.
        let demo = config.bios.is_none() && (config.drives.is_empty() || direct.is_some());
        let bios = match &config.bios {
            Some(p) => Some(BiosImage::load(p)?),
            None if demo => None,
            None => bail!("drives need firmware: give -bios (SeaBIOS bios-256k.bin)"),
        };
        let drives = config
            .drives
            .iter()
            .map(open_drive)
            .collect::<Result<Vec<_>>>()?;
        let vga_rom = if demo && config.kernel.is_none() {
            None
        } else {
            find_vga_rom(&config)?
        };

        let layout =
            MemoryLayout::pc(config.memory).map_err(|e| anyhow!("invalid memory size: {e}"))?;
        let mut memory = GuestMemory::new(layout).context("failed to allocate guest RAM")?;
        match bios {
            Some(b) => b.map(&mut memory)?,
            None => memory
                .map_bios(crate::guest::rom()?)
                .context("failed to map the built-in guest")?,
        }
        let memory = Arc::new(memory);
        // The CPU backend first: with KVM's in-kernel irqchip the devices' interrupt lines
        // are KVM's (`KVM_IRQ_LINE`), so they must exist before the devices.
        if config.irqchip == Irqchip::Kernel && config.accel != Accel::Kvm {
            bail!("--irqchip kernel needs --accel kvm (the in-kernel irqchip is KVM's)");
        }
        let mut kvm_gsi_lines: Option<Vec<Arc<dyn IrqLine>>> = None;
        let interpreter = || -> Result<pcvm_cpu_interp::Interpreter> {
            let mut interp = pcvm_cpu_interp::Interpreter::new();
            if let Some(path) = &config.trace {
                let f = std::fs::File::create(path)
                    .with_context(|| format!("failed to create trace file {}", path.display()))?;
                interp.set_trace(Some(Box::new(std::io::BufWriter::new(f))));
            }
            Ok(interp)
        };
        let cpu: Box<dyn CpuBackend> = match config.accel {
            Accel::Interp => Box::new(interpreter()?),
            Accel::Jit => {
                let mut jit = pcvm_cpu_jit::JitBackend::with_interpreter(interpreter()?)
                    .context("failed to create the JIT backend")?;
                // Cranelift works on a thread of its own while the guest goes on in the
                // interpreter; PCVM_JIT_COMPILE_THREAD=0 compiles on the vCPU thread instead.
                let background =
                    std::env::var("PCVM_JIT_COMPILE_THREAD").map_or(true, |v| v != "0");
                jit.set_background_compile(background)
                    .context("failed to start the JIT's compile thread")?;
                // PCVM_JIT_THRESHOLD=N compiles blocks after N runs (for tuning).
                if let Ok(v) = std::env::var("PCVM_JIT_THRESHOLD") {
                    let n: u32 = v.trim().parse().ok().filter(|&n| n > 0).with_context(|| {
                        format!("PCVM_JIT_THRESHOLD={v:?}: want a number of runs, at least 1")
                    })?;
                    jit.set_threshold(n);
                }
                Box::new(jit)
            }
            Accel::Kvm => {
                if config.trace.is_some() {
                    bail!("--trace needs --accel interp: KVM runs guest code natively");
                }
                let info =
                    pcvm_accel_kvm::kvm_usable().context("--accel kvm: /dev/kvm is not usable")?;
                if let Some(warning) = info.warning() {
                    eprintln!("pcvm: {warning}");
                }
                let irqchip = match config.irqchip {
                    Irqchip::Userspace => pcvm_accel_kvm::IrqchipMode::Userspace,
                    Irqchip::Kernel => pcvm_accel_kvm::IrqchipMode::Kernel,
                };
                let kvm = pcvm_accel_kvm::KvmBackend::new(
                    &memory,
                    pcvm_accel_kvm::KvmOptions {
                        irqchip,
                        ..pcvm_accel_kvm::KvmOptions::default()
                    },
                )
                .context("failed to create the KVM backend")?;
                if config.irqchip == Irqchip::Kernel {
                    let lines = (0..IOAPIC_PINS as u32)
                        .map(|gsi| kvm.irq_line(gsi))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| anyhow!("KVM has no in-kernel irqchip lines"))?;
                    kvm_gsi_lines = Some(lines);
                }
                Box::new(kvm)
            }
        };
        let clock = VirtualClock::new(match config.icount_ns {
            Some(ns) => ClockMode::InstructionCount {
                ns_per_instruction: ns,
            },
            None => ClockMode::Host,
        });
        let mut board = Board::new(memory.clone(), clock.clone());
        let mut consoles = Consoles::new();

        // Interrupt controllers: the local APIC in front of the CPU with the 8259 pair on its
        // LINT0 (INTR input 1, gated by the APIC), and the I/O APIC beside the 8259s; every
        // ISA IRQ line drives both (IRQ0 on GSI 2).
        let lapic_timer = TimerHandle::new();
        let lapic = Arc::new(Mutex::new(LocalApic::new(
            &board.intr,
            clock.clone(),
            lapic_timer.clone(),
        )));
        let pic = Arc::new(Mutex::new(Pic8259Pair::new(board.intr.input(1))));
        add_pio(&mut board, &[(0x20, 2), (0xA0, 2), (0x4D0, 2)], pic.clone())?;
        let ioapic = {
            let mut l = lapic.lock().map_err(|_| anyhow!("LAPIC lock poisoned"))?;
            l.set_nmi(board.nmi.clone());
            let mut io = IoApic::new(l.input());
            io.set_nmi(board.nmi.clone());
            let io = Arc::new(Mutex::new(io));
            let eoi = io.clone();
            l.set_eoi_broadcast(Arc::new(move |vector| {
                if let Ok(mut io) = eoi.lock() {
                    io.end_of_interrupt(vector);
                }
            }));
            io
        };
        board.mmio.insert(LAPIC_BASE, LAPIC_SIZE, lapic.clone())?;
        board
            .mmio
            .insert(IOAPIC_BASE, IOAPIC_SIZE, ioapic.clone())?;
        board.timers.add(lapic_timer, lapic.clone());
        board.interrupt_controller = Some(Arc::new(Mutex::new(LocalApicFront::new(
            lapic.clone(),
            pic.clone(),
            &board.intr,
        ))));
        // ISA IRQ n: both 8259 input n and I/O APIC pin (n, IRQ0 on 2) — ours, or with the
        // in-kernel irqchip KVM's GSI n, which KVM's default routing sends to its PIC input
        // n and IOAPIC pin n (KVM API §4.24 KVM_CREATE_IRQCHIP).
        let irq = |n: u8| -> Arc<dyn IrqLine> {
            match &kvm_gsi_lines {
                Some(lines) => lines[usize::from(n)].clone(),
                None => IsaIrqLine::shared(&pic, &ioapic, n),
            }
        };
        let ioapic_pin = |pin: usize| -> Arc<dyn IrqLine> {
            match &kvm_gsi_lines {
                Some(lines) => lines[pin].clone(),
                None => IoApicPinLine::shared(&ioapic, pin),
            }
        };

        // HPET: legacy replacement routes to ISA IRQ0/8, otherwise GSI 20–23.
        let hpet_timer = TimerHandle::new();
        let mut hpet_lines: Vec<Option<Arc<dyn IrqLine>>> = vec![None; IOAPIC_PINS];
        hpet_lines[2] = Some(irq(0));
        hpet_lines[8] = Some(irq(8));
        for (pin, slot) in hpet_lines.iter_mut().enumerate().skip(20) {
            *slot = Some(ioapic_pin(pin));
        }
        let hpet = Arc::new(Mutex::new(Hpet::new(
            clock.clone(),
            hpet_timer.clone(),
            hpet_lines,
        )));
        board.mmio.insert(HPET_BASE, HPET_SIZE, hpet.clone())?;
        board.timers.add(hpet_timer, hpet);

        // Timer.
        let pit_timer = TimerHandle::new();
        let pit = Arc::new(Mutex::new(Pit8254::new(
            clock.clone(),
            irq(PIT_IRQ),
            pit_timer.clone(),
        )));
        add_pio(&mut board, &[(PIT_PORT, PIT_PORT_LEN)], pit.clone())?;
        add_pio(
            &mut board,
            &[(PORT61, 1)],
            Arc::new(Mutex::new(Port61::new(pit.clone()))),
        )?;
        board.timers.add(pit_timer, pit);

        // CMOS/RTC with the fields the BIOS reads.
        let rtc_timer = TimerHandle::new();
        let mut rtc = Rtc::new(
            clock.clone(),
            irq(RTC_IRQ),
            rtc_timer.clone(),
            host_wall_clock(),
        );
        let mut disks = [None; 4];
        for d in &drives {
            if d.media == DriveMedia::Disk {
                if let Some(slot) = disks.get_mut(usize::from(d.index)) {
                    *slot = Some(d.sectors);
                }
            }
        }
        for (index, value) in cmos::pc_cmos(&CmosConfig {
            layout: &layout,
            cpus: 1,
            boot_order: &config.boot.order,
            disks,
        }) {
            rtc.set_nvram(index, value);
        }
        let rtc = Arc::new(Mutex::new(rtc));
        add_pio(&mut board, &[(RTC_PORT, RTC_PORT_LEN)], rtc.clone())?;
        board.timers.add(rtc_timer, rtc);

        // Serial ports.
        for (i, spec) in config.serials.iter().enumerate() {
            let Some(&(port, line)) = COM_PORTS.get(i) else {
                bail!("too many serial ports: a PC has COM1 to COM4");
            };
            let opened = consoles
                .open(spec, true)
                .with_context(|| format!("failed to open COM{}", i + 1))?;
            let uart = Arc::new(Mutex::new(Uart16550::new(irq(line), opened.output)));
            add_pio(&mut board, &[(port, UART_PORT_LEN)], uart.clone())?;
            opened.input.attach(uart_input_sink(uart));
        }

        // Keyboard controller, A20 and reset ports, POST codes, debug ports.
        let i8042 = Arc::new(Mutex::new(I8042::new(
            irq(I8042_KBD_IRQ),
            irq(I8042_AUX_IRQ),
            memory.clone(),
            board.requests.clone(),
        )));
        add_pio(
            &mut board,
            &[(I8042_DATA_PORT, 1), (I8042_COMMAND_PORT, 1)],
            i8042.clone(),
        )?;
        if config.display == Display::Text {
            if let Some(slot) = consoles.claim_stdin() {
                slot.attach(keyboard_input_sink(i8042));
            }
        }
        let port92 = FastA20Port::new(memory.clone(), board.requests.clone());
        add_pio(&mut board, &[(PORT92, 1)], Arc::new(Mutex::new(port92)))?;
        add_pio(
            &mut board,
            &[(POST_PORT, 1)],
            Arc::new(Mutex::new(PostCodePort::new())),
        )?;
        if let Some((port, spec)) = &config.debugcon {
            let opened = consoles
                .open(spec, false)
                .context("failed to open the debug console")?;
            let dev = Arc::new(Mutex::new(DebugCon::new(opened.output)));
            add_pio(&mut board, &[(*port, 1)], dev)?;
        }
        if let Some(de) = &config.debug_exit {
            let dev = Arc::new(Mutex::new(DebugExit::new(board.requests.clone())));
            add_pio(&mut board, &[(de.port, u64::from(de.size))], dev)?;
        }

        // ACPI power management (PIIX4 PM function): SCI on IRQ 9, PM block windows at the
        // bases SeaBIOS programs (0x600 with our table-loader, 0xB000 without).
        let pm_timer = TimerHandle::new();
        let pm = Arc::new(Mutex::new(Piix4Pm::new(
            clock.clone(),
            pm_timer.clone(),
            irq(SCI_IRQ),
            board.requests.clone(),
        )));
        for base in [PM_BASE_LOADER, PM_BASE_DEFAULT] {
            let window = Arc::new(Mutex::new(AcpiPmPorts::new(pm.clone(), base)));
            board.pio.insert(u64::from(base), PM_IO_SIZE, window)?;
        }
        board.timers.add(pm_timer, pm.clone());

        // PCI: i440FX host bridge, PIIX3 ISA bridge and IDE, PIIX4 PM, stdvga with its ROM.
        let pci = Arc::new(Mutex::new(PciBus::new()));
        let vga = Arc::new(Mutex::new(match &vga_rom {
            Some(rom) => Vga::with_rom(rom.data().to_vec()),
            None => Vga::new(),
        }));
        {
            let mut bus = pci.lock().map_err(|_| anyhow!("PCI bus lock poisoned"))?;
            bus.add(0, 0, Arc::new(Mutex::new(I440fx::new(memory.clone()))))?;
            bus.add(1, 0, Arc::new(Mutex::new(Piix3IsaBridge::new())))?;
            let (dev, func) = Piix3Ide::SLOT;
            bus.add(dev, func, Arc::new(Mutex::new(Piix3Ide::new())))?;
            let (dev, func) = Piix4Pm::SLOT;
            bus.add(dev, func, pm.clone())?;
            let (dev, func) = Vga::SLOT;
            bus.add(dev, func, vga.clone())?;
        }
        let reset_control = Arc::new(Mutex::new(ResetControl::new(board.requests.clone())));
        let config_ports = PciConfigPorts::new(pci.clone(), Some(reset_control));
        add_pio(
            &mut board,
            &[(PciConfigPorts::BASE, PciConfigPorts::LEN)],
            Arc::new(Mutex::new(config_ports)),
        )?;
        add_pio(
            &mut board,
            &[(PciIoWindow::SEABIOS_BASE, PCI_IO_LEN)],
            Arc::new(Mutex::new(PciIoWindow::new(pci.clone()))),
        )?;
        board.mmio.insert(
            layout.below_4g,
            PCI_MMIO_END.saturating_sub(layout.below_4g),
            Arc::new(Mutex::new(PciMmioWindow::new(pci.clone()))),
        )?;
        for (base, len) in Vga::PORT_RANGES {
            board.pio.insert(u64::from(base), len, vga.clone())?;
        }
        board.mmio.insert(
            pcvm_devices::vga::WINDOW_BASE,
            pcvm_devices::vga::WINDOW_LEN,
            vga.clone(),
        )?;

        // IDE drives.
        let ide = Arc::new(Mutex::new(IdeController::new(
            irq(IdeController::PRIMARY_IRQ),
            irq(IdeController::SECONDARY_IRQ),
        )));
        for (d, cfg) in drives.into_iter().zip(&config.drives) {
            let read_only = d.media == DriveMedia::Cdrom;
            let backend = FileBackend::new(d.file, read_only)
                .with_context(|| format!("failed to use {}", cfg.path.display()))?;
            let drive = match d.media {
                DriveMedia::Disk => Drive::disk(backend),
                DriveMedia::Cdrom => Drive::cdrom(backend),
            };
            ide.lock()
                .map_err(|_| anyhow!("IDE lock poisoned"))?
                .attach(usize::from(d.index / 2), usize::from(d.index % 2), drive)
                .with_context(|| format!("failed to attach {}", cfg.origin))?;
        }
        for (base, len) in IdeController::PORT_RANGES {
            board.pio.insert(u64::from(base), len, ide.clone())?;
        }

        // fw_cfg with what SeaBIOS needs. The VGA BIOS comes through the VGA's ROM BAR.
        let ide_drives: Vec<IdeDrive> = config
            .drives
            .iter()
            .map(|d| {
                let index = d.index.unwrap_or(0);
                IdeDrive {
                    channel: index / 2,
                    unit: index % 2,
                    cdrom: d.media == DriveMedia::Cdrom,
                }
            })
            .collect();
        let content = fw_cfg_content::pc_content(&PcFwCfgConfig {
            layout: &layout,
            cpus: 1,
            boot_order: &config.boot.order,
            drives: &ide_drives,
            boot_menu: config.boot.menu,
            boot_fail_wait_ms: config.boot.reboot_timeout_ms,
            sercon_port: (config.display == Display::None).then_some(0x3F8),
            nographic: config.display == Display::None,
            vga_rom: None,
        });
        let mut fw_cfg = FwCfg::new(memory.clone());
        for (key, data) in content.legacy {
            fw_cfg
                .set_item(key, data)
                .with_context(|| format!("failed to set fw_cfg key {key:#x}"))?;
        }
        for (name, data) in content.files {
            fw_cfg
                .add_file(&name, data)
                .with_context(|| format!("failed to add fw_cfg file {name}"))?;
        }
        // ACPI tables through QEMU's BIOS-linker script.
        let acpi = AcpiTables::build(&AcpiConfig::pc(layout.below_4g));
        for (name, data) in [
            (acpi::TABLES_FILE, acpi.tables.clone()),
            (acpi::RSDP_FILE, acpi.rsdp.clone()),
            (acpi::LOADER_FILE, acpi.loader()),
        ] {
            fw_cfg
                .add_file(name, data)
                .with_context(|| format!("failed to add fw_cfg file {name}"))?;
        }
        let fw_cfg = Arc::new(Mutex::new(fw_cfg));
        add_pio(
            &mut board,
            &[
                (FW_CFG_PORT, FW_CFG_PORT_LEN),
                (FW_CFG_DMA_PORT, FW_CFG_DMA_PORT_LEN),
            ],
            fw_cfg,
        )?;

        // Power-off through APM (SeaBIOS, the built-in guest).
        let apm = Arc::new(Mutex::new(ApmShutdownPort::new(board.requests.clone())));
        add_pio(&mut board, &[(APM_SHUTDOWN_PORT, 1)], apm)?;

        if let Some(k) = &direct {
            if k.needs_long_mode() && !cpu.supports_long_mode() {
                bail!(
                    "-kernel {}: a bzImage is entered in 64-bit mode, and the {} backend does \
                     not implement long mode (CPUID.80000001H:EDX.LM); use --accel kvm",
                    config
                        .kernel
                        .as_ref()
                        .map_or(Path::new(""), |c| &c.path)
                        .display(),
                    cpu.name()
                );
            }
        }
        let kicker = cpu.kicker();
        let quit = Arc::new(AtomicBool::new(false));
        {
            let quit = quit.clone();
            let kicker = kicker.clone();
            let hook: QuitHook = Arc::new(move || {
                quit.store(true, Ordering::Release);
                kicker.kick();
            });
            consoles.start_stdin(hook);
        }

        let gdb = config
            .gdb
            .as_ref()
            .map(crate::gdb::GdbServer::bind)
            .transpose()?;
        let config_display = config.display;
        let mut machine = Machine {
            board,
            cpu,
            kicker,
            quit,
            config,
            vga,
            renderer: (config_display == Display::Text)
                .then(|| (TextRenderer::new(), Instant::now())),
            gdb,
            _consoles: consoles,
            direct,
            pm,
        };
        machine.enter_direct_boot()?;
        Ok(machine)
    }

    /// For `-kernel`: load the kernel (again, after a reset) and point the CPU at its entry.
    /// No firmware programs the PIIX4 PM block, so set the base the ACPI tables name.
    fn enter_direct_boot(&mut self) -> Result<()> {
        let Some(direct) = &self.direct else {
            return Ok(());
        };
        let mut state = direct.load(&self.board.memory)?;
        // What SeaBIOS would have left in the MTRRs; without it Linux also turns PAT off.
        let phys_bits = self.cpu.cpuid(0x8000_0008, 0).map_or(36, |r| r[0] & 0xFF);
        pcvm_firmware::mtrr::program_boot_mtrrs(
            &mut state.msrs,
            self.board.memory.layout(),
            phys_bits,
        );
        self.pm
            .lock()
            .map_err(|_| anyhow!("PIIX4 PM lock poisoned"))?
            .set_pm_base(PM_BASE_LOADER);
        self.cpu.set_state(&state)?;
        self.cpu.flush_caches();
        Ok(())
    }

    /// A handle that stops [`Machine::run`] from another thread (it returns [`Exit::Quit`]).
    pub fn quit_handle(&self) -> impl Fn() + Send + Sync + 'static {
        let quit = self.quit.clone();
        let kicker = self.kicker.clone();
        move || {
            quit.store(true, Ordering::Release);
            kicker.kick();
        }
    }

    /// The VGA text screen, one string per row (empty when the VGA is in a graphics mode).
    pub fn vga_text(&self) -> Vec<String> {
        match self.vga.lock() {
            Ok(v) if v.text_mode() => v.text_screen(),
            _ => Vec::new(),
        }
    }

    /// Redraw the terminal's copy of the text screen if it is due.
    fn update_display(&mut self) {
        let Some((renderer, last)) = self.renderer.as_mut() else {
            return;
        };
        if last.elapsed() < DISPLAY_PERIOD {
            return;
        }
        *last = Instant::now();
        if let Ok(vga) = self.vga.lock() {
            let mut out = std::io::stdout().lock();
            if let Err(e) = renderer.render(&vga, &mut out) {
                tracing::warn!("failed to draw the text screen: {e}");
            }
            let _ = std::io::Write::flush(&mut out);
        }
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemory {
        &self.board.memory
    }

    /// Instructions executed so far.
    pub fn instructions(&self) -> u64 {
        self.cpu.instructions_retired()
    }

    /// The CPU state, formatted for a crash report.
    pub fn dump_state(&mut self) -> String {
        match self.cpu.state() {
            Ok(s) => format_state(&s),
            Err(e) => format!("(CPU state unavailable: {e})"),
        }
    }

    /// Return every device and the CPU to the power-on state (RAM and CMOS keep their
    /// contents, as on a real reset).
    pub fn reset(&mut self) -> Result<()> {
        self.board.pio.reset_all();
        self.board.mmio.reset_all();
        self.board.memory.set_a20(true);
        for area in 0..13 {
            self.board
                .memory
                .set_pam(area, pcvm_core::memory::pam::DISABLED);
        }
        let _ = self.board.requests.take();
        self.cpu.set_state(&CpuState::reset())?;
        self.cpu.flush_caches();
        self.enter_direct_boot()
    }

    /// Run until the guest powers off, resets or faults (per `-no-reboot`), the user quits, or
    /// the configured timeout passes.
    pub fn run(&mut self) -> Result<Exit> {
        self.run_until(|_| false)
    }

    /// Like [`Machine::run`], also stopping with [`Exit::Stopped`] once `stop` returns true
    /// (checked every few million instructions and while halted).
    pub fn run_until(&mut self, mut stop: impl FnMut(&Machine) -> bool) -> Result<Exit> {
        let deadline = self.config.timeout.map(|t| Instant::now() + t);
        loop {
            if self.quit.load(Ordering::Acquire) {
                return Ok(Exit::Quit);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Exit::Timeout);
            }
            if stop(self) {
                return Ok(Exit::Stopped);
            }
            if let Some(exit) = self.poll_gdb(deadline)? {
                return Ok(exit);
            }
            self.update_display();
            let exit = self
                .cpu
                .run(&mut self.board, RunLimit::Instructions(SLICE))
                .map_err(|e| anyhow!("CPU backend failed: {e}"))?;
            match exit {
                VmExit::BudgetExhausted | VmExit::Debug(_) => {}
                VmExit::Kicked => {
                    self.kicker.take();
                }
                VmExit::Halted => self.wait_for_interrupt(deadline),
                VmExit::Reset | VmExit::PowerOff => match self.board.requests.take() {
                    Some(SystemRequest::PowerOff(status)) => return Ok(Exit::PowerOff(status)),
                    Some(SystemRequest::Reset) | None => {
                        if self.config.no_reboot {
                            return Ok(Exit::Reset);
                        }
                        tracing::info!("guest reset");
                        self.reset()?;
                    }
                },
                VmExit::Shutdown => {
                    let state = self.cpu.state()?;
                    if self.config.no_reboot {
                        return Ok(Exit::TripleFault(Box::new(state)));
                    }
                    tracing::warn!(
                        "triple fault at {:04x}:{:08x}; resetting",
                        state.seg(pcvm_core::SegReg::Cs).selector,
                        state.rip
                    );
                    self.reset()?;
                }
            }
        }
    }

    /// Serve gdb if it is connecting (under `-S`, first wait for it): the session runs the
    /// guest until gdb detaches (the loop then goes on), kills (quit) or the guest powers off.
    fn poll_gdb(&mut self, deadline: Option<Instant>) -> Result<Option<Exit>> {
        let Some(server) = self.gdb.take() else {
            return Ok(None);
        };
        let wait = std::mem::take(&mut self.config.gdb_wait);
        let result = loop {
            match server.poll_client() {
                Ok(Some(stream)) => break server.serve(stream, self),
                Ok(None) if !wait => break Ok(crate::gdb::SessionEnd::Detached),
                Ok(None) if self.quit.load(Ordering::Acquire) => {
                    self.gdb = Some(server);
                    return Ok(Some(Exit::Quit));
                }
                Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    self.gdb = Some(server);
                    return Ok(Some(Exit::Timeout));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => break Err(e),
            }
        };
        self.gdb = Some(server);
        Ok(match result? {
            crate::gdb::SessionEnd::Killed => Some(Exit::Quit),
            crate::gdb::SessionEnd::PowerOff(status) => Some(Exit::PowerOff(status)),
            crate::gdb::SessionEnd::Detached | crate::gdb::SessionEnd::Dropped(_) => None,
        })
    }

    /// The CPU halted: let time pass until a timer fires or an interrupt arrives.
    fn wait_for_interrupt(&mut self, deadline: Option<Instant>) {
        let board = &mut self.board;
        board.poll();
        if board.intr() || board.nmi.load(Ordering::Acquire) {
            return;
        }
        let next = board.next_deadline();
        if next != u64::MAX && board.clock.skip_to(next) {
            board.poll();
            return;
        }
        let now = board.clock.now_ns();
        let mut sleep = if next == u64::MAX {
            MAX_HALT_SLEEP
        } else {
            Duration::from_nanos(next.saturating_sub(now)).min(MAX_HALT_SLEEP)
        };
        if let Some(d) = deadline {
            sleep = sleep.min(d.saturating_duration_since(Instant::now()));
        }
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
        board.poll();
    }
}

impl Drop for Machine {
    /// Leave the terminal usable after the text display: attributes reset, cursor shown.
    fn drop(&mut self) {
        if self.renderer.is_some() {
            let mut out = std::io::stdout().lock();
            let _ = std::io::Write::write_all(&mut out, b"\x1b[0m\x1b[?25h\n");
            let _ = std::io::Write::flush(&mut out);
        }
    }
}

impl crate::gdb::GdbMachine for Machine {
    fn parts(&mut self) -> (&mut dyn CpuBackend, &mut Board) {
        (&mut *self.cpu, &mut self.board)
    }
    fn reset(&mut self) -> Result<()> {
        Machine::reset(self)
    }
}

/// EFER.LMA: IA-32e mode is active (Intel SDM Vol. 3A §2.2.1).
const EFER_LMA: u64 = 1 << 10;

/// A CPU state dump: general registers, segments, control registers (all 64 bits wide and
/// R8–R15 once the CPU is in IA-32e mode).
pub fn format_state(s: &CpuState) -> String {
    if s.efer & EFER_LMA != 0 {
        return format_state_64(s);
    }
    use std::fmt::Write as _;
    let mut o = String::new();
    let g = &s.gpr;
    let _ = writeln!(
        o,
        "EAX={:08x} EBX={:08x} ECX={:08x} EDX={:08x}",
        g[0] as u32, g[3] as u32, g[1] as u32, g[2] as u32
    );
    let _ = writeln!(
        o,
        "ESI={:08x} EDI={:08x} EBP={:08x} ESP={:08x}",
        g[6] as u32, g[7] as u32, g[5] as u32, g[4] as u32
    );
    let _ = writeln!(o, "EIP={:08x} EFL={:08x}", s.rip as u32, s.rflags as u32);
    let names = ["ES", "CS", "SS", "DS", "FS", "GS", "LDT", "TR"];
    let segs = s.segments.iter().chain([&s.ldtr, &s.tr]);
    for (name, seg) in names.iter().zip(segs) {
        let _ = writeln!(
            o,
            "{name:<3}={:04x} base={:08x} limit={:08x} attr={:04x}",
            seg.selector, seg.base as u32, seg.limit, seg.attributes
        );
    }
    let _ = writeln!(
        o,
        "GDT={:08x}/{:04x} IDT={:08x}/{:04x}",
        s.gdtr.base as u32, s.gdtr.limit, s.idtr.base as u32, s.idtr.limit
    );
    let _ = write!(
        o,
        "CR0={:08x} CR2={:08x} CR3={:08x} CR4={:08x} EFER={:x}",
        s.cr0 as u32, s.cr2 as u32, s.cr3 as u32, s.cr4 as u32, s.efer
    );
    o
}

/// [`format_state`] in IA-32e mode.
fn format_state_64(s: &CpuState) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let names = [
        "RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI", "R8", "R9", "R10", "R11", "R12",
        "R13", "R14", "R15",
    ];
    for (i, pair) in names.chunks(2).enumerate() {
        let _ = writeln!(
            o,
            "{:<3}={:016x} {:<3}={:016x}",
            pair[0],
            s.gpr[2 * i],
            pair[1],
            s.gpr[2 * i + 1]
        );
    }
    let _ = writeln!(o, "RIP={:016x} RFL={:08x}", s.rip, s.rflags);
    let seg_names = ["ES", "CS", "SS", "DS", "FS", "GS", "LDT", "TR"];
    for (name, seg) in seg_names
        .iter()
        .zip(s.segments.iter().chain([&s.ldtr, &s.tr]))
    {
        let _ = writeln!(
            o,
            "{name:<3}={:04x} base={:016x} limit={:08x} attr={:04x}",
            seg.selector, seg.base, seg.limit, seg.attributes
        );
    }
    let _ = writeln!(
        o,
        "GDT={:016x}/{:04x} IDT={:016x}/{:04x}",
        s.gdtr.base, s.gdtr.limit, s.idtr.base, s.idtr.limit
    );
    let _ = write!(
        o,
        "CR0={:08x} CR2={:016x} CR3={:016x} CR4={:08x} EFER={:x}",
        s.cr0, s.cr2, s.cr3, s.cr4, s.efer
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dump_is_64_bit_wide_in_ia32e_mode() {
        let mut s = CpuState::reset();
        s.gpr[15] = 0x1234_5678_9ABC_DEF0;
        s.rip = 0xFFFF_FFFF_8100_0000;
        let legacy = format_state(&s);
        assert!(legacy.starts_with("EAX="), "{legacy}");
        assert!(!legacy.contains("R15"), "{legacy}");
        s.efer = 0x500; // LME | LMA
        let wide = format_state(&s);
        assert!(wide.contains("R15=123456789abcdef0"), "{wide}");
        assert!(wide.contains("RIP=ffffffff81000000"), "{wide}");
        assert!(wide.contains("EFER=500"), "{wide}");
    }
}
