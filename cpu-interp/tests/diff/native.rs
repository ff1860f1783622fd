//! The host side: compiles `tests/native/runner.c` with the system C compiler and feeds it
//! batches of cases over stdin (one process per batch amortizes process start-up).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Case, NativeMode, Outcome};

static DUMPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The compiled runner.
pub struct NativeRunner {
    exe: PathBuf,
}

impl NativeRunner {
    /// Compile the runner into `out_dir`. `Err` explains why native execution is impossible
    /// here (not x86-64 Linux, no C compiler, compile failure).
    pub fn build(out_dir: &Path) -> Result<Self, String> {
        if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
            return Err("the native runner needs an x86-64 Linux host".into());
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native/runner.c");
        let exe = out_dir.join("pcvm-diff-runner");
        std::fs::create_dir_all(out_dir).map_err(|e| format!("create {out_dir:?}: {e}"))?;
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        // Build under a private name and rename into place, so concurrent test processes never
        // execute a half-written file.
        let tmp = out_dir.join(format!("pcvm-diff-runner.{}.tmp", std::process::id()));
        let out = Command::new(&cc)
            .args(["-O2", "-std=gnu11", "-Wall", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .map_err(|e| format!("C compiler `{cc}` not runnable: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "compiling {src:?} with `{cc}` failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::rename(&tmp, &exe).map_err(|e| format!("rename {tmp:?}: {e}"))?;
        Ok(NativeRunner { exe })
    }

    /// Run `cases` on the host CPU in `mode`; one outcome per case, in order.
    pub fn run(&self, mode: NativeMode, cases: &[&Case]) -> Result<Vec<Outcome>, String> {
        let mut input = String::with_capacity(cases.len() * 120);
        for c in cases {
            let code: String = c.code.iter().map(|b| format!("{b:02x}")).collect();
            input.push_str(match mode {
                NativeMode::Compat32 => "32 ",
                NativeMode::Long64 => "64 ",
            });
            input.push_str(&code);
            for (r, hi) in c.regs.iter().zip(c.hi) {
                input.push_str(&format!(" {:x}", u64::from(*r) | (u64::from(hi) << 32)));
            }
            input.push_str(&format!(
                " {:x} {:x} {:x} {:x} {:x} {:x} {:x} {:x} {:x}",
                c.eflags,
                c.mem_seed,
                c.mem_style,
                c.segs.cs,
                c.segs.ds,
                c.segs.es,
                c.segs.ss,
                c.segs.eip,
                c.code_offset
            ));
            for r in c.ext {
                input.push_str(&format!(" {r:x}"));
            }
            input.push('\n');
        }
        if let Ok(dir) = std::env::var("PCVM_DIFF_DUMP_DIR") {
            // Debug aid: keep the runner input so a batch can be replayed by hand.
            let n = DUMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = std::fs::write(Path::new(&dir).join(format!("batch{n}.txt")), &input);
        }
        let mut child = Command::new(&self.exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", self.exe))?;
        let mut stdin = child.stdin.take().ok_or("runner stdin")?;
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child
            .wait_with_output()
            .map_err(|e| format!("wait for runner: {e}"))?;
        let _ = writer.join();
        if !out.status.success() {
            return Err(format!(
                "native runner failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut outcomes: Vec<Outcome> = text.lines().map(parse_line).collect::<Result<_, _>>()?;
        if outcomes.len() != cases.len() {
            return Err(format!(
                "native runner answered {} of {} cases",
                outcomes.len(),
                cases.len()
            ));
        }
        // The runner reports the raw EIP; make it relative to where each case started.
        for (o, c) in outcomes.iter_mut().zip(cases) {
            let start = if mode == NativeMode::Long64 {
                super::CODE_BASE as u32 + c.code_offset
            } else {
                c.segs.eip
            };
            o.rip_off = o.rip_off.wrapping_sub(start);
        }
        Ok(outcomes)
    }
}

fn parse_line(line: &str) -> Result<Outcome, String> {
    let bad = || format!("bad runner output line `{line}`");
    let mut it = line.split_ascii_whitespace();
    let hex = |it: &mut std::str::SplitAsciiWhitespace| -> Result<u64, String> {
        let t = it.next().ok_or_else(bad)?;
        u64::from_str_radix(t, 16).map_err(|_| bad())
    };
    let vector = hex(&mut it)? as u8;
    let error_code = hex(&mut it)? as u32;
    let fault_addr = hex(&mut it)? as u32;
    let rip_off = hex(&mut it)? as u32;
    let mut regs = [0u32; 8];
    let mut hi = [0u32; 8];
    for (r, h) in regs.iter_mut().zip(&mut hi) {
        let v = hex(&mut it)?;
        *r = v as u32;
        *h = (v >> 32) as u32;
    }
    let eflags = hex(&mut it)? as u32;
    let n = hex(&mut it)? as usize;
    let mut mem = Vec::with_capacity(n);
    for _ in 0..n {
        let t = it.next().ok_or_else(bad)?;
        let (o, v) = t.split_once(':').ok_or_else(bad)?;
        mem.push((
            u16::from_str_radix(o, 16).map_err(|_| bad())?,
            u8::from_str_radix(v, 16).map_err(|_| bad())?,
        ));
    }
    let mut ext = [0u64; 8];
    for r in &mut ext {
        let t = it.next().ok_or_else(bad)?;
        *r = u64::from_str_radix(t, 16).map_err(|_| bad())?;
    }
    Ok(Outcome {
        vector,
        rip_off,
        error_code,
        fault_addr,
        regs,
        hi,
        ext,
        eflags,
        mem,
    })
}
