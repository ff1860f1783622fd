//! Shared helpers for the gdb tests: a guest machine running [`pcvm::gdb::run_machine`] on a
//! thread, the real gdb in batch mode, a minimal ELF32 symbol-file writer, and fixture lookup.
#![allow(dead_code)] // each test file uses a different subset

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pcvm::gdb::{BoardMachine, GdbServer, ListenSpec, RegLayout, RunEnd};
use pcvm_core::{
    Board, ClockMode, CpuBackend, CpuState, DescriptorTable, GuestMemory, SegReg, Segment,
    VirtualClock,
};
use pcvm_cpu_interp::Interpreter;

/// The gdb binary: `PCVM_GDB`, else /usr/bin/gdb. `None` (and a loud "skipped") if absent.
pub fn gdb() -> Option<PathBuf> {
    let path = std::env::var_os("PCVM_GDB")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/gdb"));
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipped: gdb not installed at {} (apt-get install gdb)",
            path.display()
        );
        None
    }
}

/// Where fixtures live: `PCVM_FIXTURES`, else `target/fixtures` of the workspace.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("PCVM_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fixtures"),
    }
}

/// SeaBIOS `bios-256k.bin` (`PCVM_BIOS` or fetched by scripts/fetch-fixtures); a loud skip
/// when missing, a failure under `PCVM_REQUIRE_FIXTURES=1`.
pub fn seabios() -> Option<PathBuf> {
    let path = match std::env::var_os("PCVM_BIOS") {
        Some(p) => PathBuf::from(p),
        None => fixtures_dir().join("seabios/usr/share/seabios/bios-256k.bin"),
    };
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "fixture missing: SeaBIOS bios-256k.bin at {} (run scripts/fetch-fixtures)",
        path.display()
    );
    if std::env::var("PCVM_REQUIRE_FIXTURES").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("skipped: {msg}");
    None
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pcvm-gdb-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The CPU backend a test machine uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Interp,
    Jit,
    Kvm,
}

impl Backend {
    /// The name `monitor accel` shows.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Interp => "interp",
            Backend::Jit => "jit",
            Backend::Kvm => "kvm",
        }
    }

    /// Whether the backend can run here; a loud "skipped" if not.
    pub fn usable(self) -> bool {
        match self {
            Backend::Interp | Backend::Jit => true,
            Backend::Kvm => match pcvm_accel_kvm::kvm_usable() {
                Ok(_) => true,
                Err(e) => {
                    eprintln!("skipped: KVM not usable here: {e}");
                    false
                }
            },
        }
    }
}

/// A guest machine running under the gdb server on its own thread.
pub struct Vm {
    pub port: u16,
    pub memory: Arc<GuestMemory>,
    pub stop: Arc<AtomicBool>,
    pub handle: Option<JoinHandle<anyhow::Result<RunEnd>>>,
}

impl Vm {
    /// Start a 4 MiB machine: `setup` fills memory (and may map a BIOS) before it is shared,
    /// the CPU starts in `state`; with `start_paused` nothing runs until gdb connects.
    pub fn start(
        setup: impl FnOnce(&mut GuestMemory) + Send + 'static,
        state: CpuState,
        start_paused: bool,
    ) -> Vm {
        let spec = ListenSpec::tcp("127.0.0.1", 0);
        Self::start_with(setup, state, start_paused, &spec, None)
    }

    /// [`Vm::start`] listening at `spec` (port 0 picks a free port) with an optional forced
    /// register layout.
    pub fn start_with(
        setup: impl FnOnce(&mut GuestMemory) + Send + 'static,
        state: CpuState,
        start_paused: bool,
        spec: &ListenSpec,
        layout: Option<RegLayout>,
    ) -> Vm {
        Self::start_on(Backend::Interp, setup, state, start_paused, spec, layout)
    }

    /// [`Vm::start_with`] on a chosen CPU backend.
    pub fn start_on(
        backend: Backend,
        setup: impl FnOnce(&mut GuestMemory) + Send + 'static,
        state: CpuState,
        start_paused: bool,
        spec: &ListenSpec,
        layout: Option<RegLayout>,
    ) -> Vm {
        let mut mem = GuestMemory::pc(4 << 20).expect("memory");
        setup(&mut mem);
        let memory = Arc::new(mem);
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = GdbServer::bind(spec).expect("bind");
        server.set_layout(layout);
        let port = server.tcp_port().unwrap_or(0);
        let (mem2, stop2) = (memory.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let clock = VirtualClock::new(ClockMode::InstructionCount {
                ns_per_instruction: 1,
            });
            let mut board = Board::new(mem2, clock);
            let mut cpu: Box<dyn CpuBackend> = match backend {
                Backend::Interp => Box::new(Interpreter::new()),
                Backend::Jit => Box::new(pcvm_cpu_jit::JitBackend::new().expect("JIT backend")),
                Backend::Kvm => Box::new(
                    pcvm_accel_kvm::KvmBackend::new(
                        &board.memory,
                        pcvm_accel_kvm::KvmOptions::default(),
                    )
                    .expect("KVM backend"),
                ),
            };
            cpu.set_state(&state).expect("state");
            let mut m = BoardMachine {
                cpu: &mut *cpu,
                board: &mut board,
            };
            pcvm::gdb::run_machine(&mut server, &mut m, start_paused, &stop2)
        });
        Vm {
            port,
            memory,
            stop,
            handle: Some(handle),
        }
    }

    pub fn read_u32(&self, addr: u64) -> u32 {
        let mut b = [0u8; 4];
        self.memory.read_phys(addr, &mut b).expect("read");
        u32::from_le_bytes(b)
    }

    /// Stop the machine loop and return how it ended.
    pub fn finish(mut self) -> RunEnd {
        self.stop.store(true, Ordering::Release);
        self.join()
    }

    /// Wait (up to 20 s) for the machine loop to end by itself.
    pub fn join(&mut self) -> RunEnd {
        let h = self.handle.take().expect("joined once");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !h.is_finished() {
            assert!(Instant::now() < deadline, "machine loop did not end");
            std::thread::sleep(Duration::from_millis(10));
        }
        h.join().expect("machine thread").expect("machine loop")
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Output of a gdb run.
pub struct GdbRun {
    pub stdout: String,
    pub stderr: String,
}

impl GdbRun {
    /// The value of the last `$N = VALUE` line after the line `marker` was echoed.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Run gdb in batch mode with `commands` (one `-ex` each) after connecting to `port`. gdb 13
/// needs `maint set target-async off` so `continue` waits for the stop in batch mode.
/// `sigint_after` sends SIGINT to gdb that long after it starts (a Ctrl-C).
pub fn run_gdb(
    gdb: &Path,
    symbols: Option<&Path>,
    target: &str,
    commands: &[&str],
    sigint_after: Option<Duration>,
) -> GdbRun {
    run_gdb_with_timeout(
        gdb,
        symbols,
        target,
        commands,
        sigint_after,
        Duration::from_secs(60),
    )
}

/// [`run_gdb`] with a limit other than a minute, for sessions that boot a whole kernel.
pub fn run_gdb_with_timeout(
    gdb: &Path,
    symbols: Option<&Path>,
    target: &str,
    commands: &[&str],
    sigint_after: Option<Duration>,
    timeout: Duration,
) -> GdbRun {
    let mut cmd = Command::new(gdb);
    cmd.args(["-nx", "-batch", "-iex", "maint set target-async off"])
        .args(["-iex", "set pagination off", "-iex", "set confirm off"])
        .args(["-iex", "set width 0"]);
    if let Some(s) = symbols {
        cmd.arg(s);
    }
    cmd.args(["-ex", &format!("target remote {target}")]);
    for c in commands {
        cmd.args(["-ex", c]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn gdb");
    let start = Instant::now();
    let mut sent = false;
    loop {
        if let Some(after) = sigint_after {
            if !sent && start.elapsed() >= after {
                let _ = Command::new("kill")
                    .args(["-INT", &child.id().to_string()])
                    .status();
                sent = true;
            }
        }
        match child.try_wait().expect("wait gdb") {
            Some(_) => break,
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("gdb output");
                panic!(
                    "gdb timed out\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let out = child.wait_with_output().expect("gdb output");
    let run = GdbRun {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "--- gdb stdout ---\n{}\n--- gdb stderr ---\n{}",
        run.stdout, run.stderr
    );
    run
}

/// Every value printed by `echo MARK\n` followed by `p/x EXPR`: the hex after `= ` on the
/// line following each `MARK` line, in order.
pub fn marked_values(out: &str, mark: &str) -> Vec<u64> {
    let lines: Vec<&str> = out.lines().collect();
    let mut v = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == mark {
            if let Some(next) = lines.get(i + 1) {
                if let Some((_, val)) = next.split_once("= ") {
                    let val = val.trim().trim_start_matches("0x");
                    let val = val.split_whitespace().next().unwrap_or("");
                    if let Ok(x) = u64::from_str_radix(val, 16) {
                        v.push(x);
                    }
                }
            }
        }
    }
    v
}

/// A symbol for the ELF writer.
pub struct Sym {
    pub name: String,
    pub addr: u64,
    pub size: u64,
    /// Function (in .text) or data object (absolute).
    pub func: bool,
}

/// A minimal ELF32 (i386) executable carrying `code` as .text at `text_addr` and `syms` in
/// .symtab/.strtab (System V gABI, "ELF Header", "Sections", "Symbol Table").
pub fn write_elf32(path: &Path, text_addr: u32, code: &[u8], syms: &[Sym]) {
    fn p16(v: &mut Vec<u8>, x: u16) {
        v.extend_from_slice(&x.to_le_bytes());
    }
    fn p32(v: &mut Vec<u8>, x: u32) {
        v.extend_from_slice(&x.to_le_bytes());
    }
    const EHDR: usize = 52;
    const SHDR: usize = 40;
    const SHN_ABS: u16 = 0xFFF1;
    // Section name table.
    let mut shstr = vec![0u8];
    let mut name = |s: &str| {
        let off = shstr.len() as u32;
        shstr.extend_from_slice(s.as_bytes());
        shstr.push(0);
        off
    };
    let n_text = name(".text");
    let n_symtab = name(".symtab");
    let n_strtab = name(".strtab");
    let n_shstrtab = name(".shstrtab");
    // Symbol strings and entries.
    let mut strtab = vec![0u8];
    let mut symtab = vec![0u8; 16]; // the null symbol
    for s in syms {
        let off = strtab.len() as u32;
        strtab.extend_from_slice(s.name.as_bytes());
        strtab.push(0);
        p32(&mut symtab, off);
        p32(&mut symtab, s.addr as u32);
        p32(&mut symtab, s.size as u32);
        // STB_GLOBAL << 4 | STT_FUNC (2) or STT_OBJECT (1).
        symtab.push((1 << 4) | if s.func { 2 } else { 1 });
        symtab.push(0);
        p16(&mut symtab, if s.func { 1 } else { SHN_ABS });
    }
    // Layout: header, .text, .symtab, .strtab, .shstrtab, section headers.
    let text_off = EHDR;
    let symtab_off = text_off + code.len();
    let symtab_off = (symtab_off + 3) & !3;
    let strtab_off = symtab_off + symtab.len();
    let shstr_off = strtab_off + strtab.len();
    let sh_off = (shstr_off + shstr.len() + 3) & !3;
    let mut f = Vec::new();
    f.extend_from_slice(&[0x7F, b'E', b'L', b'F', 1, 1, 1, 0]);
    f.extend_from_slice(&[0; 8]);
    p16(&mut f, 2); // ET_EXEC
    p16(&mut f, 3); // EM_386
    p32(&mut f, 1);
    p32(&mut f, text_addr); // entry
    p32(&mut f, 0); // no program headers
    p32(&mut f, sh_off as u32);
    p32(&mut f, 0);
    p16(&mut f, EHDR as u16);
    p16(&mut f, 32);
    p16(&mut f, 0);
    p16(&mut f, SHDR as u16);
    p16(&mut f, 5);
    p16(&mut f, 4); // .shstrtab index
    f.extend_from_slice(code);
    f.resize(symtab_off, 0);
    f.extend_from_slice(&symtab);
    f.extend_from_slice(&strtab);
    f.extend_from_slice(&shstr);
    f.resize(sh_off, 0);
    let sh = |f: &mut Vec<u8>, vals: [u32; 10]| {
        for v in vals {
            p32(f, v);
        }
    };
    sh(&mut f, [0; 10]);
    // name, type, flags, addr, offset, size, link, info, align, entsize
    sh(
        &mut f,
        [
            n_text,
            1,
            0x6,
            text_addr,
            text_off as u32,
            code.len() as u32,
            0,
            0,
            1,
            0,
        ],
    );
    sh(
        &mut f,
        [
            n_symtab,
            2,
            0,
            0,
            symtab_off as u32,
            symtab.len() as u32,
            3,
            1,
            4,
            16,
        ],
    );
    sh(
        &mut f,
        [
            n_strtab,
            3,
            0,
            0,
            strtab_off as u32,
            strtab.len() as u32,
            0,
            0,
            1,
            0,
        ],
    );
    sh(
        &mut f,
        [
            n_shstrtab,
            3,
            0,
            0,
            shstr_off as u32,
            shstr.len() as u32,
            0,
            0,
            1,
            0,
        ],
    );
    let mut file = std::fs::File::create(path).expect("create elf");
    file.write_all(&f).expect("write elf");
}

/// Flat 32-bit protected mode: the GDT image for `gdt` (null, code 0x08, data 0x10, base 0,
/// 4 GiB) and the state with those loaded, EIP = `eip`, ESP = `esp`.
pub fn flat32_state(gdt: u64, eip: u32, esp: u32) -> (CpuState, Vec<u8>) {
    let code: u64 = 0x00CF_9B00_0000_FFFF;
    let data: u64 = 0x00CF_9300_0000_FFFF;
    let image: Vec<u8> = [0u64, code, data]
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect();
    let mut s = CpuState::reset();
    s.cr0 |= pcvm_core::cpu_state::cr::CR0_PE;
    s.gdtr = DescriptorTable {
        base: gdt,
        limit: 3 * 8 - 1,
    };
    let seg = |sel: u16, attributes: u32| Segment {
        selector: sel,
        base: 0,
        limit: 0xFFFF_FFFF,
        attributes,
    };
    for r in SegReg::ALL {
        *s.seg_mut(r) = seg(0x10, 0xC093);
    }
    *s.seg_mut(SegReg::Cs) = seg(0x08, 0xC09B);
    s.rip = u64::from(eip);
    s.gpr[4] = u64::from(esp);
    (s, image)
}
