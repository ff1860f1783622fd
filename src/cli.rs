//! The `pcvm` command line: QEMU-style options parsed into a [`MachineConfig`].
//!
//! QEMU spells long options with one dash (`-bios`, `-hda`, `-no-reboot`); clap wants two. Before
//! clap sees the arguments, [`normalize_args`] rewrites a single-dash word that names one of our
//! long options (`-kernel` → `--kernel`, `-boot=d` → `--boot=d`), leaving option values alone.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{CommandFactory, Parser, ValueEnum};

use crate::direct::KernelConfig;
use crate::machine::{
    Accel, BootConfig, CharSpec, DebugExitConfig, Display, DriveConfig, DriveMedia, Irqchip,
    MachineConfig,
};
use pcvm_firmware::cmos::BootDevice;

const AFTER_HELP: &str = "\
Options take QEMU's single-dash spellings too (-m 512 -hda disk.img -no-reboot).

Character devices (-serial, -debugcon, -chardev):
  stdio                      the terminal
  file:PATH                  write to PATH (truncated)
  tcp:HOST:PORT,server[,nowait]   listen; `nowait` starts without waiting for a client
  tcp:HOST:PORT              connect to a listening peer
  unix:PATH,server[,nowait]  listen on a unix socket
  none | null                discard output

Exit status: 0 when the guest powers off, (value << 1) | 1 from isa-debug-exit,
1 on a triple fault (with -no-reboot) or internal error, 2 on bad input, 124 on --timeout.

Examples:
  pcvm                                        run the built-in demo guest
  pcvm -bios bios-256k.bin -hda disk.img      boot a disk with SeaBIOS
  pcvm -bios bios-256k.bin -cdrom boot.iso -boot d -debugcon file:seabios.log
  pcvm --accel kvm -kernel bzImage -initrd initrd.img -append console=ttyS0

Direct boot (-kernel) loads the kernel into RAM and starts the CPU at its entry point with no
BIOS run (as Firecracker does; QEMU runs SeaBIOS and its linuxboot option ROM instead).";

/// An x86 PC emulator: an i440FX/PIIX3 PC that boots SeaBIOS from IDE disks and CDs.
///
/// With no -bios, no drives and no -kernel, pcvm runs a small built-in guest that switches to
/// protected mode, prints what the CPU reports and a benchmark on COM1, and powers off.
#[derive(Debug, Parser)]
#[command(name = "pcvm", version, about, long_about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Guest RAM: a number of MiB (128) or a size with a K/M/G/T suffix (512M, 2G).
    #[arg(
        short = 'm',
        long = "memory",
        value_name = "SIZE",
        default_value = "128M"
    )]
    pub memory: String,

    /// The firmware image (SeaBIOS bios.bin or bios-256k.bin), mapped at the top of 4 GiB.
    #[arg(long, value_name = "FILE")]
    pub bios: Option<PathBuf>,

    /// The VGA BIOS [default: vgabios-stdvga.bin beside the -bios file, if there].
    #[arg(long = "vga-rom", value_name = "FILE")]
    pub vga_rom: Option<PathBuf>,

    /// A drive: file=PATH[,format=raw][,if=ide][,media=disk|cdrom][,index=0-3].
    #[arg(long, value_name = "SPEC")]
    pub drive: Vec<String>,

    /// Raw hard disk image as the primary master (IDE index 0).
    #[arg(long, value_name = "FILE")]
    pub hda: Option<PathBuf>,
    /// Raw hard disk image as the primary slave (IDE index 1).
    #[arg(long, value_name = "FILE")]
    pub hdb: Option<PathBuf>,
    /// Raw hard disk image as the secondary master (IDE index 2).
    #[arg(long, value_name = "FILE")]
    pub hdc: Option<PathBuf>,
    /// Raw hard disk image as the secondary slave (IDE index 3).
    #[arg(long, value_name = "FILE")]
    pub hdd: Option<PathBuf>,
    /// ISO 9660 image as a CD-ROM on the secondary master (IDE index 2).
    #[arg(long, value_name = "FILE")]
    pub cdrom: Option<PathBuf>,

    /// Boot order: c (disk), d (CD), or order=cd,menu=on|off,reboot-timeout=MS.
    #[arg(long, value_name = "SPEC")]
    pub boot: Option<String>,

    /// COM1..COM4 in the order given (see "Character devices") [default: stdio].
    #[arg(long, value_name = "DEV")]
    pub serial: Vec<String>,

    /// The debug console at port 0x402, where SeaBIOS writes its log.
    #[arg(long, value_name = "DEV")]
    pub debugcon: Option<String>,

    /// A named character device: file,id=ID,path=PATH | stdio,id=ID | null,id=ID.
    #[arg(long, value_name = "SPEC")]
    pub chardev: Vec<String>,

    /// isa-debugcon,iobase=PORT,chardev=ID or isa-debug-exit,iobase=PORT,iosize=1|2|4.
    #[arg(long, value_name = "SPEC")]
    pub device: Vec<String>,

    /// none: the BIOS's screen goes to COM1 (as -nographic); text: draw the VGA text screen in
    /// the terminal.
    #[arg(long, value_enum, value_name = "KIND")]
    pub display: Option<DisplayArg>,

    /// No display: the same as -display none.
    #[arg(long)]
    pub nographic: bool,

    /// Exit instead of rebooting when the guest resets or triple-faults.
    #[arg(long = "no-reboot")]
    pub no_reboot: bool,

    /// CPU backend.
    #[arg(long, value_enum, value_name = "BACKEND", default_value = "auto")]
    pub accel: AccelArg,

    /// The same as --accel kvm (QEMU's spelling).
    #[arg(long = "enable-kvm")]
    pub enable_kvm: bool,

    /// Where KVM's interrupt controllers live: userspace (pcvm's PIC, I/O APIC and local APIC
    /// decide what KVM injects; the default) or kernel (KVM's in-kernel PIC/IOAPIC/LAPIC/PIT).
    #[arg(long, value_enum, value_name = "WHERE")]
    pub irqchip: Option<IrqchipArg>,

    /// Machine options as QEMU spells them: [pc,]kernel_irqchip=on|off (the same as
    /// --irqchip kernel|userspace).
    #[arg(short = 'M', long, value_name = "OPTS")]
    pub machine: Option<String>,

    /// Number of CPUs (only 1 is supported).
    #[arg(long, value_name = "N", default_value = "1")]
    pub smp: String,

    /// Write a trace of every executed instruction to FILE.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,

    /// Stop the guest after SECS seconds of wall-clock time (exit status 124).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,

    /// Make the guest's clock count instructions (NS nanoseconds each) instead of host time,
    /// so runs are repeatable.
    #[arg(long, value_name = "NS")]
    pub icount: Option<u64>,

    /// Boot a kernel directly, without firmware: a Linux bzImage (64-bit entry: needs a
    /// backend with long mode), a multiboot v1 kernel, or an ELF kernel with a PVH note.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk for -kernel; for multiboot, modules as "FILE [ARGS],FILE [ARGS]".
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<String>,
    /// Kernel command line for -kernel.
    #[arg(long, value_name = "CMDLINE")]
    pub append: Option<String>,

    /// Listen for gdb on tcp::1234 (localhost); the guest runs until gdb attaches.
    #[arg(short = 's')]
    pub gdb_default: bool,
    /// Do not start the CPU until gdb attaches (stopped at the reset vector).
    #[arg(short = 'S')]
    pub freeze: bool,
    /// Listen for gdb on DEV: tcp::PORT, tcp:HOST:PORT or unix:PATH[,arch=x86-64|i386|i8086].
    #[arg(long, value_name = "DEV")]
    pub gdb: Option<String>,
}

/// `-display` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DisplayArg {
    None,
    Text,
}

/// `--accel` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccelArg {
    /// KVM when the host has hardware virtualization, else the JIT.
    Auto,
    /// The reference interpreter.
    Interp,
    /// The Cranelift JIT: hot guest blocks compiled to native code, the rest interpreted
    /// (`tcg`, QEMU's name for its translator, selects it too).
    #[value(alias = "tcg")]
    Jit,
    /// KVM (/dev/kvm), with pcvm's device model in userspace.
    Kvm,
}

/// `--irqchip` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IrqchipArg {
    /// pcvm's interrupt controllers.
    Userspace,
    /// KVM's in-kernel interrupt controllers.
    Kernel,
}

/// The irqchip placement a `-machine` spec asks for (`None`: it does not say). Accepts the
/// machine type `pc` (or `pc-i440fx-*`, `type=pc`) and `kernel_irqchip=on|off`.
fn parse_machine(spec: &str) -> Result<Option<Irqchip>> {
    let mut irqchip = None;
    for (i, item) in spec.split(',').enumerate() {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, v),
            None if i == 0 => ("type", item),
            None => bail!("invalid -machine '{spec}': '{item}' is not KEY=VALUE"),
        };
        match key {
            "type" if value == "pc" || value.starts_with("pc-i440fx") => {}
            "type" => bail!(
                "invalid -machine '{spec}': machine type '{value}' is not supported (pcvm is \
                 an i440FX 'pc')"
            ),
            "kernel_irqchip" | "kernel-irqchip" => {
                irqchip = Some(match value {
                    "on" | "true" | "yes" => Irqchip::Kernel,
                    "off" | "false" | "no" => Irqchip::Userspace,
                    "split" => bail!(
                        "invalid -machine '{spec}': kernel_irqchip=split is not supported \
                         (use on or off)"
                    ),
                    _ => bail!("invalid -machine '{spec}': kernel_irqchip takes on or off"),
                })
            }
            _ => bail!("invalid -machine '{spec}': unsupported option '{key}'"),
        }
    }
    Ok(irqchip)
}

/// Rewrite QEMU's single-dash long options to clap's `--` form.
pub fn normalize_args<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let cmd = Cli::command();
    // Long names, and whether each takes a value.
    let longs: HashMap<String, bool> = cmd
        .get_arguments()
        .filter_map(|a| {
            a.get_long()
                .map(|l| (l.to_string(), a.get_action().takes_values()))
        })
        .chain([("help".to_string(), false), ("version".to_string(), false)])
        .collect();
    let shorts_with_value: Vec<char> = cmd
        .get_arguments()
        .filter(|a| a.get_action().takes_values())
        .filter_map(|a| a.get_short())
        .collect();

    let mut out = Vec::new();
    let mut value_next = false;
    let mut rest_positional = false;
    for (i, arg) in args.into_iter().enumerate() {
        let arg: OsString = arg.into();
        if i == 0 || value_next || rest_positional {
            value_next = false;
            out.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            rest_positional = true;
            out.push(arg);
            continue;
        }
        if let Some(body) = s.strip_prefix("--") {
            let name = body.split('=').next().unwrap_or(body);
            value_next = !body.contains('=') && longs.get(name).copied().unwrap_or(false);
            out.push(arg);
            continue;
        }
        if let Some(body) = s.strip_prefix('-') {
            let name = body.split('=').next().unwrap_or(body);
            let first = body.chars().next();
            if body.chars().count() > 1 {
                if let Some(&takes) = longs.get(name) {
                    value_next = takes && !body.contains('=');
                    out.push(format!("--{body}").into());
                    continue;
                }
                // An unknown word: report it as the long option it looks like, unless it is a
                // short option with its value attached (`-m512`).
                if !first.is_some_and(|c| shorts_with_value.contains(&c)) {
                    out.push(format!("--{body}").into());
                    continue;
                }
            } else if let Some(c) = first {
                value_next = shorts_with_value.contains(&c);
            }
        }
        out.push(arg);
    }
    out
}

impl Cli {
    /// Parse the process arguments (QEMU spellings included). `--help` and `--version` print
    /// and exit 0; a usage error prints one line and exits 2.
    pub fn parse_normalized() -> Self {
        match Cli::try_parse_normalized(std::env::args_os()) {
            Ok(cli) => cli,
            Err(e) => {
                use clap::error::ErrorKind;
                if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                    e.exit();
                }
                let text = e.to_string();
                let line = text
                    .lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ");
                eprintln!("pcvm: {line} (see pcvm --help)");
                std::process::exit(2);
            }
        }
    }

    /// Parse arguments (the first is the program name); errors are clap's.
    pub fn try_parse_normalized<I, T>(args: I) -> std::result::Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        Cli::try_parse_from(normalize_args(args))
    }

    /// Check the options and turn them into a machine configuration.
    pub fn into_config(self) -> Result<MachineConfig> {
        let kernel = match (self.kernel, self.initrd, self.append) {
            (Some(path), initrd, append) => Some(KernelConfig {
                path,
                initrd,
                cmdline: append.unwrap_or_default(),
            }),
            (None, Some(_), _) => bail!("-initrd needs -kernel"),
            (None, None, Some(_)) => bail!("-append needs -kernel"),
            (None, None, None) => None,
        };
        let gdb = match (&self.gdb, self.gdb_default) {
            (Some(spec), _) => Some(crate::gdb::ListenSpec::parse(spec)?),
            (None, true) => Some(crate::gdb::ListenSpec::tcp("127.0.0.1", 1234)),
            (None, false) => None,
        };
        if self.freeze && gdb.is_none() {
            bail!("-S without -s or -gdb is not supported yet: only gdb can start the CPU");
        }
        match self.smp.trim() {
            "1" | "cpus=1" => {}
            other => bail!("invalid -smp '{other}': only 1 CPU is supported"),
        }
        let accel = match (self.accel, self.enable_kvm) {
            (AccelArg::Auto | AccelArg::Kvm, true) => AccelArg::Kvm,
            (other, true) => bail!(
                "-enable-kvm conflicts with --accel {}",
                other
                    .to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_string())
            ),
            (a, false) => a,
        };
        let accel = match accel {
            AccelArg::Auto => Accel::auto(),
            AccelArg::Interp => Accel::Interp,
            AccelArg::Jit => Accel::Jit,
            AccelArg::Kvm => Accel::Kvm,
        };
        let from_flag = self.irqchip.map(|a| match a {
            IrqchipArg::Userspace => Irqchip::Userspace,
            IrqchipArg::Kernel => Irqchip::Kernel,
        });
        let from_machine = self
            .machine
            .as_deref()
            .map(parse_machine)
            .transpose()?
            .flatten();
        let irqchip = match (from_flag, from_machine) {
            (Some(a), Some(b)) if a != b => {
                bail!("conflicting irqchip options: --irqchip and -machine kernel_irqchip differ")
            }
            (a, b) => a.or(b).unwrap_or_default(),
        };
        let memory = parse_memory_size(&self.memory)?;

        let mut drives: Vec<DriveConfig> = Vec::new();
        let fixed = [
            (&self.hda, 0u8, DriveMedia::Disk, "-hda"),
            (&self.hdb, 1, DriveMedia::Disk, "-hdb"),
            (&self.hdc, 2, DriveMedia::Disk, "-hdc"),
            (&self.hdd, 3, DriveMedia::Disk, "-hdd"),
            (&self.cdrom, 2, DriveMedia::Cdrom, "-cdrom"),
        ];
        for (path, index, media, flag) in fixed {
            if let Some(path) = path {
                add_drive(
                    &mut drives,
                    DriveConfig {
                        path: path.clone(),
                        media,
                        index: Some(index),
                        origin: format!("{flag} {}", path.display()),
                    },
                )?;
            }
        }
        for spec in &self.drive {
            add_drive(&mut drives, parse_drive(spec)?)?;
        }
        // Drives without an index take the first free one, as QEMU assigns them.
        for i in 0..drives.len() {
            if drives[i].index.is_none() {
                let free = (0u8..4)
                    .find(|n| !drives.iter().any(|d| d.index == Some(*n)))
                    .ok_or_else(|| {
                        anyhow!(
                            "too many IDE drives: no free index for {}",
                            drives[i].origin
                        )
                    })?;
                drives[i].index = Some(free);
            }
        }
        drives.sort_by_key(|d| d.index);

        let boot = parse_boot(self.boot.as_deref())?;

        let chardevs = self
            .chardev
            .iter()
            .map(|s| parse_chardev(s))
            .collect::<Result<HashMap<_, _>>>()?;

        let mut serials = Vec::new();
        for s in &self.serial {
            if serials.len() == 4 {
                bail!("too many -serial options: a PC has COM1 to COM4");
            }
            serials.push(parse_char_spec(s).with_context(|| format!("invalid -serial '{s}'"))?);
        }
        if serials.is_empty() {
            serials.push(CharSpec::Stdio);
        }

        let mut debugcon = None;
        if let Some(s) = &self.debugcon {
            let spec = parse_char_spec(s).with_context(|| format!("invalid -debugcon '{s}'"))?;
            debugcon = Some((0x402u16, spec));
        }
        let mut debug_exit = None;
        for spec in &self.device {
            match parse_device(spec, &chardevs)? {
                IsaDevice::Debugcon(port, chardev) => {
                    if debugcon.is_some() {
                        bail!("conflicting options: more than one debug console");
                    }
                    debugcon = Some((port, chardev));
                }
                IsaDevice::DebugExit(cfg) => {
                    if debug_exit.is_some() {
                        bail!("conflicting options: more than one isa-debug-exit device");
                    }
                    debug_exit = Some(cfg);
                }
            }
        }

        let display = match (self.display, self.nographic) {
            (Some(DisplayArg::Text), true) => {
                bail!("conflicting options: -nographic and -display text")
            }
            (Some(DisplayArg::Text), false) => Display::Text,
            _ => Display::None,
        };
        if display == Display::Text && serials.contains(&CharSpec::Stdio) && self.serial.is_empty()
        {
            // The text screen owns the terminal; COM1 output would garble it.
            serials[0] = CharSpec::Null;
        }

        let timeout = match self.timeout {
            None => None,
            Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) => bail!("invalid --timeout {t}: must be a positive number of seconds"),
        };
        if self.icount == Some(0) {
            bail!("invalid --icount 0: must be at least 1 ns per instruction");
        }

        Ok(MachineConfig {
            memory,
            bios: self.bios,
            vga_rom: self.vga_rom,
            drives,
            boot,
            serials,
            debugcon,
            debug_exit,
            display,
            no_reboot: self.no_reboot,
            accel,
            irqchip,
            trace: self.trace,
            timeout,
            icount_ns: self.icount,
            gdb,
            gdb_wait: self.freeze,
            kernel,
        })
    }
}

fn add_drive(drives: &mut Vec<DriveConfig>, d: DriveConfig) -> Result<()> {
    if let Some(i) = d.index {
        if let Some(other) = drives.iter().find(|o| o.index == Some(i)) {
            bail!(
                "conflicting drives: IDE index {i} is given to both {} and {}",
                other.origin,
                d.origin
            );
        }
    }
    drives.push(d);
    Ok(())
}

/// Split a QEMU option string at commas; ",," is a literal comma.
fn split_opts(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                if let Some(p) = parts.last_mut() {
                    p.push(',');
                }
            } else {
                parts.push(String::new());
            }
        } else if let Some(p) = parts.last_mut() {
            p.push(c);
        }
    }
    parts
}

/// Parse a QEMU memory size: a bare number is MiB; K/M/G/T suffixes (optionally with B or iB).
pub fn parse_memory_size(s: &str) -> Result<u64> {
    let bad = || anyhow!("invalid memory size '{s}': expected MiB (128) or a size like 512M or 2G");
    let t = s.trim();
    let t = t.strip_prefix("size=").unwrap_or(t);
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 20,
        "k" | "kb" | "kib" => 10,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "b" => 0,
        _ => return Err(bad()),
    };
    let bytes = if num.contains('.') {
        let v: f64 = num.parse().map_err(|_| bad())?;
        let b = v * (1u64 << shift) as f64;
        if !b.is_finite() || b > u64::MAX as f64 / 2.0 {
            return Err(bad());
        }
        b as u64
    } else {
        let v: u64 = num.parse().map_err(|_| bad())?;
        v.checked_mul(1u64 << shift).ok_or_else(bad)?
    };
    pcvm_core::MemoryLayout::pc(bytes).map_err(|e| anyhow!("invalid memory size '{s}': {e}"))?;
    Ok(bytes)
}

fn parse_drive(spec: &str) -> Result<DriveConfig> {
    let mut path = None;
    let mut media = DriveMedia::Disk;
    let mut index = None;
    for part in split_opts(spec) {
        let (k, v) = part.split_once('=').unwrap_or((part.as_str(), ""));
        match k {
            "file" => path = Some(PathBuf::from(v)),
            "format" if v == "raw" => {}
            "format" => bail!("invalid -drive '{spec}': only format=raw is supported"),
            "if" if v == "ide" => {}
            "if" => bail!("invalid -drive '{spec}': only if=ide is supported"),
            "media" => {
                media = match v {
                    "disk" => DriveMedia::Disk,
                    "cdrom" => DriveMedia::Cdrom,
                    _ => bail!("invalid -drive '{spec}': media must be disk or cdrom"),
                }
            }
            "index" => {
                let n: u8 = v
                    .parse()
                    .ok()
                    .filter(|n| *n < 4)
                    .ok_or_else(|| anyhow!("invalid -drive '{spec}': index must be 0 to 3"))?;
                index = Some(n);
            }
            "" => {}
            _ => bail!("invalid -drive '{spec}': unknown option '{k}'"),
        }
    }
    let path = path.ok_or_else(|| anyhow!("invalid -drive '{spec}': file=PATH is missing"))?;
    Ok(DriveConfig {
        path,
        media,
        index,
        origin: format!("-drive {spec}"),
    })
}

fn parse_boot(spec: Option<&str>) -> Result<BootConfig> {
    let mut cfg = BootConfig::default();
    let Some(spec) = spec else {
        return Ok(cfg);
    };
    let letters = |s: &str| -> Result<Vec<BootDevice>> {
        let v: Option<Vec<_>> = s.chars().map(BootDevice::from_letter).collect();
        match v {
            Some(v) if !v.is_empty() => Ok(v),
            _ => bail!("invalid -boot '{spec}': boot devices are letters a, c, d, n"),
        }
    };
    for part in split_opts(spec) {
        match part.split_once('=') {
            None if !part.is_empty() => cfg.order = letters(&part)?,
            None => {}
            Some(("order" | "once", v)) => cfg.order = letters(v)?,
            Some(("menu", v)) => {
                cfg.menu = match v {
                    "on" => true,
                    "off" => false,
                    _ => bail!("invalid -boot '{spec}': menu must be on or off"),
                }
            }
            Some(("reboot-timeout", v)) => {
                let ms: i64 = v
                    .parse()
                    .map_err(|_| anyhow!("invalid -boot '{spec}': reboot-timeout is in ms"))?;
                cfg.reboot_timeout_ms = match ms {
                    -1 => None,
                    0..=0xFFFF => Some(ms as u32),
                    _ => bail!("invalid -boot '{spec}': reboot-timeout must be -1 to 65535"),
                };
            }
            Some((k, _)) => bail!("invalid -boot '{spec}': unknown option '{k}'"),
        }
    }
    Ok(cfg)
}

/// Parse a character device spec (`stdio`, `file:PATH`, `tcp:…`, `unix:…`, `none`).
pub fn parse_char_spec(s: &str) -> Result<CharSpec> {
    let s = s.strip_prefix("mon:").unwrap_or(s);
    if s == "stdio" {
        return Ok(CharSpec::Stdio);
    }
    if s == "none" || s == "null" {
        return Ok(CharSpec::Null);
    }
    if let Some(path) = s.strip_prefix("file:") {
        if path.is_empty() {
            bail!("file: needs a path");
        }
        return Ok(CharSpec::File(PathBuf::from(path)));
    }
    let socket_opts = |rest: &str| -> Result<(String, bool, bool)> {
        let parts = split_opts(rest);
        let addr = parts.first().cloned().unwrap_or_default();
        let mut server = false;
        let mut wait = true;
        for p in &parts[1..] {
            match p.as_str() {
                "server" | "server=on" => server = true,
                "server=off" => server = false,
                "nowait" | "wait=off" => wait = false,
                "wait" | "wait=on" => wait = true,
                "" => {}
                other => bail!("unknown socket option '{other}'"),
            }
        }
        Ok((addr, server, wait))
    };
    if let Some(rest) = s.strip_prefix("tcp:") {
        let (addr, server, wait) = socket_opts(rest)?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("tcp: needs HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow!("invalid TCP port '{port}'"))?;
        let host = if host.is_empty() { "127.0.0.1" } else { host };
        return Ok(CharSpec::Tcp {
            host: host.to_string(),
            port,
            server,
            wait,
        });
    }
    if let Some(rest) = s.strip_prefix("unix:") {
        let (path, server, wait) = socket_opts(rest)?;
        if path.is_empty() {
            bail!("unix: needs a path");
        }
        return Ok(CharSpec::Unix {
            path: PathBuf::from(path),
            server,
            wait,
        });
    }
    bail!("unknown character device (expected stdio, file:PATH, tcp:HOST:PORT[,server], unix:PATH[,server] or none)")
}

fn parse_chardev(spec: &str) -> Result<(String, CharSpec)> {
    let parts = split_opts(spec);
    let backend = parts.first().cloned().unwrap_or_default();
    let mut id = None;
    let mut path = None;
    for p in &parts[1..] {
        match p.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("path", v)) => path = Some(PathBuf::from(v)),
            Some(("signal" | "logfile" | "append", _)) => {}
            _ => bail!("invalid -chardev '{spec}': unknown option '{p}'"),
        }
    }
    let id = id.ok_or_else(|| anyhow!("invalid -chardev '{spec}': id=ID is missing"))?;
    let dev = match backend.as_str() {
        "stdio" => CharSpec::Stdio,
        "null" => CharSpec::Null,
        "file" => CharSpec::File(
            path.ok_or_else(|| anyhow!("invalid -chardev '{spec}': path=PATH is missing"))?,
        ),
        other => bail!(
            "invalid -chardev '{spec}': backend '{other}' is not supported (file, stdio, null)"
        ),
    };
    Ok((id, dev))
}

enum IsaDevice {
    Debugcon(u16, CharSpec),
    DebugExit(DebugExitConfig),
}

/// A device property number as QEMU writes them: decimal or 0x-prefixed hexadecimal.
fn parse_number(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

fn parse_port(spec: &str, v: &str) -> Result<u16> {
    parse_number(v)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| anyhow!("invalid -device '{spec}': iobase must be a port number 0..=0xffff"))
}

fn parse_device(spec: &str, chardevs: &HashMap<String, CharSpec>) -> Result<IsaDevice> {
    let parts = split_opts(spec);
    let driver = parts.first().cloned().unwrap_or_default();
    let mut props = HashMap::new();
    for p in &parts[1..] {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid -device '{spec}': expected KEY=VALUE, got '{p}'"))?;
        props.insert(k.to_string(), v.to_string());
    }
    let mut take = |k: &str| props.remove(k);
    let dev = match driver.as_str() {
        "isa-debugcon" => {
            let port = match take("iobase") {
                Some(v) => parse_port(spec, &v)?,
                None => 0xE9,
            };
            let id = take("chardev")
                .ok_or_else(|| anyhow!("invalid -device '{spec}': chardev=ID is missing"))?;
            let chardev = chardevs
                .get(&id)
                .cloned()
                .ok_or_else(|| anyhow!("invalid -device '{spec}': no -chardev with id '{id}'"))?;
            IsaDevice::Debugcon(port, chardev)
        }
        "isa-debug-exit" => {
            let port = match take("iobase") {
                Some(v) => parse_port(spec, &v)?,
                None => 0x501,
            };
            let size = match take("iosize").as_deref().map(parse_number) {
                None => 1,
                Some(Some(n @ (1 | 2 | 4))) => n as u8,
                Some(_) => bail!("invalid -device '{spec}': iosize must be 1, 2 or 4"),
            };
            IsaDevice::DebugExit(DebugExitConfig { port, size })
        }
        "" => bail!("invalid -device '': no device name"),
        other => bail!("unsupported device '{other}' (supported: isa-debugcon, isa-debug-exit)"),
    };
    if let Some(k) = props.keys().next() {
        bail!("invalid -device '{spec}': unknown property '{k}'");
    }
    Ok(dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<MachineConfig> {
        let mut v = vec!["pcvm"];
        v.extend_from_slice(args);
        Cli::try_parse_normalized(v)
            .map_err(|e| anyhow!("{e}"))?
            .into_config()
    }

    #[test]
    fn irqchip_from_the_flag_or_qemus_machine_option() {
        let irqchip = |args: &[&str]| parse(args).map(|c| c.irqchip);
        assert_eq!(irqchip(&[]).unwrap(), Irqchip::Userspace);
        assert_eq!(irqchip(&["--irqchip", "kernel"]).unwrap(), Irqchip::Kernel);
        assert_eq!(
            irqchip(&["-irqchip", "userspace"]).unwrap(),
            Irqchip::Userspace
        );
        assert_eq!(
            irqchip(&["-machine", "kernel_irqchip=on"]).unwrap(),
            Irqchip::Kernel
        );
        assert_eq!(
            irqchip(&["-M", "pc,kernel_irqchip=off"]).unwrap(),
            Irqchip::Userspace
        );
        assert_eq!(
            irqchip(&["-machine", "type=pc-i440fx-7.2,kernel-irqchip=true"]).unwrap(),
            Irqchip::Kernel
        );
        assert_eq!(irqchip(&["-machine", "pc"]).unwrap(), Irqchip::Userspace);
        assert_eq!(
            irqchip(&["--irqchip", "kernel", "-machine", "kernel_irqchip=on"]).unwrap(),
            Irqchip::Kernel
        );
        for (bad, why) in [
            (
                &["-machine", "q35"][..],
                "machine type 'q35' is not supported",
            ),
            (
                &["-machine", "kernel_irqchip=split"],
                "split is not supported",
            ),
            (&["-machine", "kernel_irqchip=maybe"], "takes on or off"),
            (&["-machine", "pc,usb=on"], "unsupported option 'usb'"),
            (&["-machine", "pc,on"], "not KEY=VALUE"),
            (
                &["--irqchip", "userspace", "-machine", "kernel_irqchip=on"],
                "conflicting irqchip options",
            ),
            (&["--irqchip", "both"], "both"),
        ] {
            let e = irqchip(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn qemu_spellings_are_normalized() {
        let a = normalize_args(["pcvm", "-bios", "-x.bin", "-m", "256", "-no-reboot", "-s"]);
        let a: Vec<_> = a.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            a,
            ["pcvm", "--bios", "-x.bin", "-m", "256", "--no-reboot", "-s"]
        );
        let a = normalize_args(["pcvm", "-append", "-foo", "-boot=d"]);
        let a: Vec<_> = a.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(a, ["pcvm", "--append", "-foo", "--boot=d"]);
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_size("128").unwrap(), 128 << 20);
        assert_eq!(parse_memory_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_memory_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_memory_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_memory_size("65536k").unwrap(), 64 << 20);
        for bad in ["", "abc", "12Q", "1", "-5", "99999999999999999999", "0"] {
            assert!(parse_memory_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn drives_and_conflicts() {
        let c = parse(&["-hda", "a.img", "-cdrom", "b.iso"]).unwrap();
        assert_eq!(c.drives.len(), 2);
        assert_eq!(c.drives[1].index, Some(2));
        assert_eq!(c.drives[1].media, DriveMedia::Cdrom);
        let c = parse(&["-drive", "file=x,,y.img,format=raw,if=ide"]).unwrap();
        assert_eq!(c.drives[0].path, PathBuf::from("x,y.img"));
        assert_eq!(c.drives[0].index, Some(0));
        let e = parse(&["-hdc", "a.img", "-cdrom", "b.iso"]).unwrap_err();
        assert!(
            e.to_string().starts_with("conflicting drives: IDE index 2"),
            "{e}"
        );
        assert!(parse(&["-drive", "file=a,format=qcow2"]).is_err());
        assert!(parse(&["-drive", "file=a,index=4"]).is_err());
        assert!(parse(&["-drive", "format=raw"]).is_err());
    }

    #[test]
    fn boot_serial_devices() {
        let c = parse(&[
            "-boot",
            "order=dc,menu=off,reboot-timeout=0",
            "-serial",
            "file:/tmp/x",
            "-serial",
            "tcp::4444,server,nowait",
            "-chardev",
            "file,id=dbg,path=/tmp/d",
            "-device",
            "isa-debugcon,iobase=0x403,chardev=dbg",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
        ])
        .unwrap();
        assert_eq!(c.boot.order, [BootDevice::Cdrom, BootDevice::HardDisk]);
        assert_eq!(c.boot.reboot_timeout_ms, Some(0));
        assert_eq!(c.serials[0], CharSpec::File("/tmp/x".into()));
        assert_eq!(
            c.serials[1],
            CharSpec::Tcp {
                host: "127.0.0.1".into(),
                port: 4444,
                server: true,
                wait: false
            }
        );
        assert_eq!(c.debugcon, Some((0x403, CharSpec::File("/tmp/d".into()))));
        assert_eq!(
            c.debug_exit,
            Some(DebugExitConfig {
                port: 0xF4,
                size: 4
            })
        );
        assert!(parse(&["-device", "e1000"]).is_err());
        assert!(parse(&["-boot", "x"]).is_err());
        assert!(parse(&["-serial", "pty"]).is_err());
    }

    #[test]
    fn device_numbers_in_qemus_forms() {
        let exit = |spec: &str| parse(&["-device", spec]).map(|c| c.debug_exit);
        let cfg = |port, size| Some(DebugExitConfig { port, size });
        assert_eq!(
            exit("isa-debug-exit,iobase=0xf4,iosize=0x04").unwrap(),
            cfg(0xF4, 4)
        );
        assert_eq!(
            exit("isa-debug-exit,iobase=244,iosize=2").unwrap(),
            cfg(0xF4, 2)
        );
        assert_eq!(exit("isa-debug-exit").unwrap(), cfg(0x501, 1));
        for bad in [
            "iosize=3",
            "iosize=0x8",
            "iosize=",
            "iosize=x",
            "iobase=0x10000",
        ] {
            assert!(exit(&format!("isa-debug-exit,{bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn accel_takes_qemus_names() {
        let accel = |args: &[&str]| parse(args).map(|c| c.accel);
        assert_eq!(accel(&["-accel", "tcg"]).unwrap(), Accel::Jit);
        assert_eq!(accel(&["-accel", "interp"]).unwrap(), Accel::Interp);
        assert_eq!(accel(&["-enable-kvm"]).unwrap(), Accel::Kvm);
        assert_eq!(
            accel(&["-enable-kvm", "-accel", "kvm"]).unwrap(),
            Accel::Kvm
        );
        assert!(accel(&["-enable-kvm", "-accel", "tcg"]).is_err());
        assert!(accel(&["-accel", "hax"]).is_err());
    }

    #[test]
    fn gdb_options() {
        use crate::gdb::ListenSpec;
        let c = parse(&["-s", "-S"]).unwrap();
        let local = |port| ListenSpec::tcp("127.0.0.1", port);
        assert_eq!(c.gdb, Some(local(1234)));
        assert!(c.gdb_wait);
        let c = parse(&["-gdb", "tcp::4321"]).unwrap();
        assert_eq!((c.gdb, c.gdb_wait), (Some(local(4321)), false));
        let c = parse(&["-gdb", "unix:/tmp/g.sock"]).unwrap();
        assert_eq!(c.gdb, Some(ListenSpec::unix("/tmp/g.sock")));
        assert!(parse(&["-gdb", "tcp::nope"]).is_err());
        assert_eq!(parse(&[]).unwrap().gdb, None);
    }

    #[test]
    fn kernel_options() {
        let c = parse(&[
            "-kernel", "bzImage", "-initrd", "rd.img", "-append", "quiet",
        ])
        .unwrap();
        let k = c.kernel.unwrap();
        assert_eq!(k.path, PathBuf::from("bzImage"));
        assert_eq!(k.initrd.as_deref(), Some("rd.img"));
        assert_eq!(k.cmdline, "quiet");
        assert_eq!(
            parse(&["-kernel", "k"]).unwrap().kernel.unwrap().cmdline,
            ""
        );
        assert_eq!(parse(&[]).unwrap().kernel, None);
        let e = parse(&["-initrd", "rd.img"]).unwrap_err().to_string();
        assert_eq!(e, "-initrd needs -kernel");
        let e = parse(&["-append", "quiet"]).unwrap_err().to_string();
        assert_eq!(e, "-append needs -kernel");
    }

    #[test]
    fn not_yet_supported_options_fail_clearly() {
        let e = parse(&["-S"]).unwrap_err().to_string();
        assert!(e.contains("-S without -s or -gdb"), "{e}");
        assert!(parse(&["-smp", "2"]).is_err());
        assert!(parse(&["-frobnicate"]).is_err());
    }
}
