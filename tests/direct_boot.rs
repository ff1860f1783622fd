//! `-kernel` direct boot through the binary: a multiboot v1 guest assembled here checks what the
//! loader hands it (EAX magic, the information structure, the -append command line) and reports
//! through COM1 and isa-debug-exit; bad kernels and option misuse fail with one line, status 2.

mod common;

use std::process::Output;

use common::{assert_bad_input, pcvm, TempDir};
use iced_x86::code_asm::*;

/// Where the a.out-kludge header asks the image to be loaded (and where it runs).
const LOAD_ADDR: u32 = 0x10_0000;
/// Multiboot header size with the five address fields (Multiboot 0.6.96 §3.1.1).
const HEADER_LEN: u32 = 32;
/// isa-debug-exit values the guest writes.
const EXIT_OK: u32 = 0x31;
const EXIT_BAD_MAGIC: u32 = 1;
const EXIT_NO_MEMORY_INFO: u32 = 2;
const EXIT_BAD_CMDLINE: u32 = 3;
const MARKER: &str = "MULTIBOOT-OK";

/// A multiboot v1 kernel (a.out kludge: loaded whole at 1 MiB; header, strings, then the entry)
/// that exits with [`EXIT_OK`] after printing [`MARKER`] only if EAX holds the bootloader magic,
/// the info structure has memory sizes with mem_upper > 0, and the command line is `expected`.
fn multiboot_kernel(expected: &str) -> Vec<u8> {
    // The strings sit right after the header, so their addresses are known before assembly.
    let mut strings = expected.as_bytes().to_vec();
    strings.push(0);
    let marker_addr = LOAD_ADDR + HEADER_LEN + strings.len() as u32;
    strings.extend_from_slice(format!("{MARKER}\n").as_bytes());
    strings.push(0);
    let expected_addr = LOAD_ADDR + HEADER_LEN;
    let entry = LOAD_ADDR + HEADER_LEN + strings.len() as u32;
    let magic = 0x1BAD_B002u32;
    let flags = 1u32 << 16;
    let header = [
        magic,
        flags,
        magic.wrapping_add(flags).wrapping_neg(),
        LOAD_ADDR, // header_addr
        LOAD_ADDR, // load_addr
        0,         // load_end_addr: the whole file
        0,         // bss_end_addr: no bss
        entry,     // entry_addr
    ];

    let mut a = CodeAssembler::new(32).unwrap();
    let mut compare = a.create_label();
    let mut print = a.create_label();
    let mut printed = a.create_label();
    let mut bad_magic = a.create_label();
    let mut no_memory = a.create_label();
    let mut bad_cmdline = a.create_label();
    let mut exit = a.create_label();

    let words: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
    a.db(&words).unwrap();
    a.db(&strings).unwrap();
    // Entry: EAX = 0x2BADB002, EBX = the multiboot information.
    a.cmp(eax, 0x2BAD_B002u32).unwrap();
    a.jne(bad_magic).unwrap();
    a.mov(ecx, dword_ptr(ebx)).unwrap();
    a.test(ecx, 1u32).unwrap();
    a.jz(no_memory).unwrap();
    a.cmp(dword_ptr(ebx + 8), 0u32).unwrap();
    a.je(no_memory).unwrap();
    a.test(ecx, 4u32).unwrap();
    a.jz(bad_cmdline).unwrap();
    a.mov(esi, dword_ptr(ebx + 16)).unwrap();
    a.mov(edi, expected_addr).unwrap();
    a.set_label(&mut compare).unwrap();
    a.mov(al, byte_ptr(esi)).unwrap();
    a.cmp(al, byte_ptr(edi)).unwrap();
    a.jne(bad_cmdline).unwrap();
    a.inc(esi).unwrap();
    a.inc(edi).unwrap();
    a.test(al, al).unwrap();
    a.jnz(compare).unwrap();
    // All checks passed: the marker to COM1, then the success value.
    a.mov(esi, marker_addr).unwrap();
    a.mov(dx, 0x3F8u32).unwrap();
    a.set_label(&mut print).unwrap();
    a.mov(al, byte_ptr(esi)).unwrap();
    a.test(al, al).unwrap();
    a.jz(printed).unwrap();
    a.out(dx, al).unwrap();
    a.inc(esi).unwrap();
    a.jmp(print).unwrap();
    a.set_label(&mut printed).unwrap();
    a.mov(eax, EXIT_OK).unwrap();
    a.jmp(exit).unwrap();
    a.set_label(&mut bad_magic).unwrap();
    a.mov(eax, EXIT_BAD_MAGIC).unwrap();
    a.jmp(exit).unwrap();
    a.set_label(&mut no_memory).unwrap();
    a.mov(eax, EXIT_NO_MEMORY_INFO).unwrap();
    a.jmp(exit).unwrap();
    a.set_label(&mut bad_cmdline).unwrap();
    a.mov(eax, EXIT_BAD_CMDLINE).unwrap();
    a.set_label(&mut exit).unwrap();
    a.out(0xF4, eax).unwrap();
    a.hlt().unwrap();
    a.jmp(exit).unwrap();
    a.assemble(u64::from(LOAD_ADDR)).unwrap()
}

/// Boot `kernel` with `-append cmdline` under the interpreter; the output and COM1's text.
fn boot(dir: &TempDir, kernel: &[u8], cmdline: &str) -> (Output, String) {
    let kpath = dir.path("kernel.mb");
    std::fs::write(&kpath, kernel).unwrap();
    let serial = dir.path("serial.txt");
    let out = pcvm(&[
        "--accel",
        "interp",
        "-kernel",
        &kpath.display().to_string(),
        "-append",
        cmdline,
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-serial",
        &format!("file:{}", serial.display()),
        "-no-reboot",
        "--timeout",
        "20",
    ]);
    let text = std::fs::read_to_string(&serial).unwrap_or_default();
    (out, text)
}

#[test]
fn multiboot_guest_gets_magic_memory_and_cmdline() {
    let dir = TempDir::new("multiboot-ok");
    let cmdline = "console=ttyS0 pcvm-test=1";
    let (out, serial) = boot(&dir, &multiboot_kernel(cmdline), cmdline);
    assert_eq!(
        out.status.code(),
        Some(((EXIT_OK << 1) | 1) as i32),
        "{out:?} serial {serial:?}"
    );
    assert_eq!(serial, format!("{MARKER}\n"));
}

/// QEMU allows drives beside -kernel; they need no -bios here since no firmware runs.
#[test]
fn kernel_with_a_drive_and_no_bios_boots() {
    let dir = TempDir::new("multiboot-drive");
    let disk = dir.path("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let kpath = dir.path("kernel.mb");
    std::fs::write(&kpath, multiboot_kernel("")).unwrap();
    let out = pcvm(&[
        "--accel",
        "interp",
        "-kernel",
        &kpath.display().to_string(),
        "-hda",
        &disk.display().to_string(),
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-serial",
        "none",
        "--timeout",
        "20",
    ]);
    assert_eq!(
        out.status.code(),
        Some(((EXIT_OK << 1) | 1) as i32),
        "{out:?}"
    );
}

#[test]
fn multiboot_guest_detects_a_different_cmdline() {
    let dir = TempDir::new("multiboot-cmdline");
    let (out, serial) = boot(&dir, &multiboot_kernel("expected"), "something else");
    assert_eq!(
        out.status.code(),
        Some(((EXIT_BAD_CMDLINE << 1) | 1) as i32),
        "{out:?}"
    );
    assert!(!serial.contains(MARKER), "{serial:?}");
}

/// Until the interpreter implements long mode it refuses a bzImage with one clear line; the
/// check asks the backend's CPUID, so it lifts by itself when long mode lands.
#[test]
fn bzimage_under_the_interpreter_needs_long_mode() {
    use pcvm_core::CpuBackend as _;
    if pcvm_cpu_interp::Interpreter::new().supports_long_mode() {
        eprintln!("skipped: the interpreter implements long mode");
        return;
    }
    let dir = TempDir::new("bzimage-interp");
    let mut bz = vec![0u8; 0x1000];
    bz[0x1FE..0x200].copy_from_slice(&[0x55, 0xAA]);
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    let p = dir.path("bzImage");
    std::fs::write(&p, &bz).unwrap();
    let p = p.display().to_string();
    assert_bad_input(
        &["--accel", "interp", "-kernel", &p],
        "a bzImage is entered in 64-bit mode, and the interp backend does not implement long \
         mode (CPUID.80000001H:EDX.LM); use --accel kvm",
    );
}

#[test]
fn bad_kernel_inputs_fail_with_one_line() {
    let dir = TempDir::new("bad-kernel");
    let write = |name: &str, data: &[u8]| {
        let p = dir.path(name);
        std::fs::write(&p, data).unwrap();
        p.display().to_string()
    };
    let missing = dir.path("missing").display().to_string();
    let empty = write("empty", &[]);
    let garbage = write("garbage", &[0x5A; 4096]);
    let kernel = write("kernel.mb", &multiboot_kernel(""));
    let mut bad_sum = multiboot_kernel("");
    bad_sum[8] ^= 1;
    let bad_sum = write("badsum.mb", &bad_sum);
    let elf = write("noelf", b"\x7fELF\x02\x01\x01\0garbage");

    assert_bad_input(&["-kernel", &missing], "failed to read kernel");
    assert_bad_input(
        &["-kernel", &dir.0.display().to_string()],
        "failed to read kernel",
    );
    assert_bad_input(&["-kernel", &empty], "is empty");
    assert_bad_input(
        &["-kernel", &garbage],
        "not a bzImage, multiboot kernel or ELF kernel with a PVH note",
    );
    assert_bad_input(&["-kernel", &bad_sum], "header checksum is wrong");
    assert_bad_input(&["--accel", "interp", "-kernel", &elf], "ELF");
    assert_bad_input(&["-initrd", &kernel], "-initrd needs -kernel");
    assert_bad_input(&["-append", "quiet"], "-append needs -kernel");
    assert_bad_input(
        &["-kernel", &kernel, "-initrd", &missing],
        "failed to read multiboot module",
    );
}

/// A minimal bzImage (boot protocol 2.15, XLF_KERNEL_64): the setup sectors hold only the
/// header; the protected-mode part has at offset 0x200 (the 64-bit entry, boot.rst) code that
/// writes [`EXIT_OK`] to isa-debug-exit if RSI points at boot_params (0x7000), else
/// [`EXIT_BAD_MAGIC`].
fn tiny_bzimage() -> Vec<u8> {
    let setup_sects = 7usize;
    let mut setup = vec![0u8; (setup_sects + 1) * 512];
    let mut kernel = vec![0u8; 0x1000];
    let code = [
        0xB8,
        EXIT_OK as u8,
        0,
        0,
        0, // mov eax, EXIT_OK
        0x81,
        0xFE,
        0x00,
        0x70,
        0x00,
        0x00, // cmp esi, 0x7000
        0x74,
        0x05, // je out
        0xB8,
        EXIT_BAD_MAGIC as u8,
        0,
        0,
        0, // mov eax, EXIT_BAD_MAGIC
        0xE7,
        0xF4, // out: out 0xF4, eax
        0xF4, // hlt
    ];
    kernel[0x200..0x200 + code.len()].copy_from_slice(&code);
    setup[0x1F1] = setup_sects as u8;
    setup[0x1F4..0x1F8].copy_from_slice(&(kernel.len() as u32 / 16).to_le_bytes());
    setup[0x1FE..0x200].copy_from_slice(&[0x55, 0xAA]);
    setup[0x202..0x206].copy_from_slice(b"HdrS");
    setup[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
    setup[0x211] = 1; // LOADED_HIGH
    setup[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
    setup[0x238..0x23C].copy_from_slice(&2048u32.to_le_bytes()); // cmdline_size
    setup[0x260..0x264].copy_from_slice(&0x1_0000u32.to_le_bytes()); // init_size
    setup.extend_from_slice(&kernel);
    setup
}

/// The 64-bit entry under KVM, where /dev/kvm opens (an environment fact: skipped otherwise).
#[test]
fn bzimage_enters_long_mode_under_kvm() {
    if let Err(e) = pcvm_accel_kvm::kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable: {e}");
        return;
    }
    let dir = TempDir::new("bzimage-kvm");
    let p = dir.path("bzImage");
    std::fs::write(&p, tiny_bzimage()).unwrap();
    let out = pcvm(&[
        "--accel",
        "kvm",
        "-kernel",
        &p.display().to_string(),
        "-append",
        "console=ttyS0",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-serial",
        "none",
        "-no-reboot",
        "--timeout",
        "120",
    ]);
    assert_eq!(
        out.status.code(),
        Some(((EXIT_OK << 1) | 1) as i32),
        "{out:?}"
    );
}
