//! A boot loader of our own for a raw disk that SeaBIOS boots: it loads a Linux bzImage, its
//! command line and an initrd per the Linux/x86 boot protocol ≥ 2.06
//! (Documentation/arch/x86/boot.rst, "Loading the rest of the kernel" and "Sample boot
//! configuration"), using only BIOS services: INT 13h AH=41h/42h (EDD 3.0 extended reads),
//! INT 15h E820 (where RAM is, for the initrd) and INT 15h AH=87h (block move above 1 MiB).
//!
//! Disk layout (512-byte sectors), all LBAs kept in a table in the boot sector at
//! [`TABLE_OFFSET`] that the image builder fills in:
//! `[boot sector + table][stage 2][command line][kernel][initrd]`.
//!
//! Real-mode memory the loader uses: its variables and the EDD packet at 0x500–0x5FF, stack
//! below 0x7C00, stage 1 at 0x7C00, stage 2 at 0x7E00, the kernel's real-mode part at
//! [`SETUP_BASE`] with the heap up to `SETUP_BASE + HEAP_END` and the command line at
//! [`CMDLINE_ADDR`], and a bounce buffer at [`BOUNCE_ADDR`] for everything loaded above 1 MiB.
//! The kernel's protected-mode part goes to 0x100000; the initrd as high as the E820 map and
//! the kernel's `initrd_addr_max` allow (page aligned).

use iced_x86::code_asm::*;

/// Where in the boot sector the layout table sits (before the MBR disk signature at 0x1B8).
pub const TABLE_OFFSET: usize = 0x1A0;
/// Bytes of the layout table.
pub const TABLE_LEN: usize = 24;
/// Physical address of the kernel's real-mode part (boot sector + setup); "X" in boot.rst.
pub const SETUP_BASE: u32 = 0x1_0000;
/// End of setup + heap + stack, relative to [`SETUP_BASE`]: the loader sets SP here and
/// heap_end_ptr to `HEAP_END - 0x200` (boot.rst: "heap_end = 0xe000").
pub const HEAP_END: u16 = 0xE000;
/// Physical address of the command line (right after the heap, as boot.rst's sample does).
pub const CMDLINE_ADDR: u32 = SETUP_BASE + HEAP_END as u32;
/// Sectors the command line may take: 2048 bytes, the kernel's COMMAND_LINE_SIZE on x86.
pub const CMDLINE_MAX_SECTORS: usize = 4;
/// Low buffer through which sectors bound above 1 MiB pass.
pub const BOUNCE_ADDR: u32 = 0x2_0000;
/// Sectors read per INT 13h call (32 KiB, well below the 127-sector limit some BIOSes have).
pub const CHUNK_SECTORS: u16 = 64;
/// Where the protected-mode kernel is loaded (boot.rst: code32_start default).
pub const KERNEL_HIGH_ADDR: u32 = 0x10_0000;
/// Every error message starts with this.
pub const LOADER_ERROR: &str = "PCVM-LOADER-ERROR";
/// The loader prints this just before jumping to the kernel's setup code.
pub const LOADER_STARTS_KERNEL: &str = "pcvm-loader: starting Linux";

const SECTOR: usize = 512;
const STAGE1_ADDR: u16 = 0x7C00;
const STAGE2_ADDR: u16 = 0x7E00;
const TABLE_ADDR: u16 = STAGE1_ADDR + TABLE_OFFSET as u16;
// Table fields (offsets into the table).
const T_STAGE2_SECTORS: u16 = 0; // u16
const T_CMDLINE_SECTORS: u16 = 2; // u16
const T_CMDLINE_LBA: u16 = 4; // u32
const T_KERNEL_LBA: u16 = 8; // u32
const T_KERNEL_SECTORS: u16 = 12; // u32
const T_INITRD_LBA: u16 = 16; // u32
const T_INITRD_BYTES: u16 = 20; // u32

// Loader variables in low memory.
const DAP: u16 = 0x500; // EDD disk address packet, 16 bytes
const MOVE_GDT: u16 = 0x510; // INT 15h AH=87h descriptor table, 48 bytes
const DRIVE: u16 = 0x540; // u8: boot drive from DL
const VAR_LBA: u16 = 0x544; // u32: next sector to load high
const VAR_COUNT: u16 = 0x548; // u32: sectors left to load high
const VAR_DEST: u16 = 0x54C; // u32: physical destination of the next chunk
const VAR_CHUNK: u16 = 0x550; // u16: sectors in this chunk
const VAR_SETUP_SECTS: u16 = 0x552; // u16
const VAR_KERNEL_END: u16 = 0x554; // u32
const VAR_INITRD_PADDED: u16 = 0x558; // u32: initrd bytes rounded up to whole sectors
const VAR_INITRD_ADDR: u16 = 0x55C; // u32: chosen initrd address, 0 = none yet
const VAR_E820_NEXT: u16 = 0x564; // u32: E820 continuation value
const E820_BUF: u16 = 0x570; // 24-byte E820 entry

const SMAP: u32 = 0x534D_4150;
// Setup header offsets (boot.rst, "The real-mode kernel header").
const HDR_SETUP_SECTS: u32 = 0x1F1;
const HDR_VID_MODE: u32 = 0x1FA;
const HDR_BOOT_FLAG: u32 = 0x1FE;
const HDR_MAGIC: u32 = 0x202;
const HDR_VERSION: u32 = 0x206;
const HDR_TYPE_OF_LOADER: u32 = 0x210;
const HDR_LOADFLAGS: u32 = 0x211;
const HDR_RAMDISK_IMAGE: u32 = 0x218;
const HDR_RAMDISK_SIZE: u32 = 0x21C;
const HDR_HEAP_END_PTR: u32 = 0x224;
const HDR_CMD_LINE_PTR: u32 = 0x228;
const HDR_INITRD_ADDR_MAX: u32 = 0x22C;
const HDR_CMDLINE_SIZE: u32 = 0x238;
const LOADED_HIGH: u8 = 0x01;
const CAN_USE_HEAP: u8 = 0x80;
/// "HdrS" as a little-endian u32.
const HDRS: u32 = 0x5372_6448;
/// Boot protocol this loader needs: 2.06 (cmdline_size, initrd_addr_max).
const MIN_PROTOCOL: u16 = 0x0206;
/// Real-mode setup may span at most this many sectors after the boot sector, so that setup,
/// heap and stack fit below `HEAP_END` (boot.rst: the real-mode code is at most 32 KiB).
const MAX_SETUP_SECTS: u16 = 63;

/// Where things are on the disk; stored in the boot sector's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskLayout {
    pub stage2_sectors: u16,
    pub cmdline_lba: u32,
    pub cmdline_sectors: u16,
    pub kernel_lba: u32,
    pub kernel_sectors: u32,
    pub initrd_lba: u32,
    pub initrd_bytes: u32,
}

impl DiskLayout {
    /// The table's bytes.
    pub fn encode(&self) -> [u8; TABLE_LEN] {
        let mut t = [0u8; TABLE_LEN];
        let mut put = |at: u16, b: &[u8]| t[at as usize..at as usize + b.len()].copy_from_slice(b);
        put(T_STAGE2_SECTORS, &self.stage2_sectors.to_le_bytes());
        put(T_CMDLINE_SECTORS, &self.cmdline_sectors.to_le_bytes());
        put(T_CMDLINE_LBA, &self.cmdline_lba.to_le_bytes());
        put(T_KERNEL_LBA, &self.kernel_lba.to_le_bytes());
        put(T_KERNEL_SECTORS, &self.kernel_sectors.to_le_bytes());
        put(T_INITRD_LBA, &self.initrd_lba.to_le_bytes());
        put(T_INITRD_BYTES, &self.initrd_bytes.to_le_bytes());
        t
    }
}

/// Assemble `body` at `origin` with `strings` (NUL-terminated) placed right after the code:
/// code_asm labels cannot address data outside 64-bit mode, so a first pass measures the code
/// (every string address is a fixed-size `mov si, imm16`) and a second fills in the addresses.
fn assemble_with_strings(
    origin: u16,
    strings: &[&str],
    body: impl Fn(&mut CodeAssembler, &[u16]) -> Result<(), IcedError>,
) -> Vec<u8> {
    let pass = |addrs: &[u16]| -> Vec<u8> {
        let mut a = CodeAssembler::new(16).expect("16-bit assembler");
        body(&mut a, addrs).expect("assemble the loader");
        a.assemble(u64::from(origin)).expect("assemble the loader")
    };
    let code_len = pass(&vec![origin; strings.len()]).len();
    let mut addrs = Vec::new();
    let mut data = Vec::new();
    for s in strings {
        addrs.push(origin + (code_len + data.len()) as u16);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
    }
    let mut code = pass(&addrs);
    assert_eq!(
        code.len(),
        code_len,
        "string addresses changed the code size"
    );
    code.extend_from_slice(&data);
    code
}

/// Emit `print` (SI: NUL-terminated string, through INT 10h AH=0Eh teletype, which SeaBIOS
/// mirrors to COM1 without a display) and `stop` (print SI, then power off through the
/// Bochs/QEMU APM port 0x8900 and halt for good if that port is absent).
fn emit_print_and_stop(
    a: &mut CodeAssembler,
    print: &mut CodeLabel,
    stop: &mut CodeLabel,
) -> Result<(), IcedError> {
    let mut done = a.create_label();
    a.set_label(print)?;
    a.lodsb()?;
    a.test(al, al)?;
    a.jz(done)?;
    a.mov(ah, 0x0E)?;
    a.mov(bx, 7u32)?;
    a.push(si)?;
    a.int(0x10)?;
    a.pop(si)?;
    a.jmp(*print)?;
    a.set_label(&mut done)?;
    a.ret()?;

    let mut halt = a.create_label();
    a.set_label(stop)?;
    a.call(*print)?;
    emit_console_settle(a)?;
    a.mov(dx, 0x8900u32)?;
    for c in b"Shutdown" {
        a.mov(al, u32::from(*c))?;
        a.out(dx, al)?;
    }
    a.cli()?;
    a.set_label(&mut halt)?;
    a.hlt()?;
    a.jmp(halt)?;
    Ok(())
}

/// Wait 0.1 s (INT 15h AH=86h, CX:DX µs) with interrupts on: SeaBIOS's serial console holds
/// the last characters back until its next timer-driven flush, and what comes next (power-off,
/// or the kernel writing to the UART itself) would lose or interleave them.
fn emit_console_settle(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.sti()?;
    a.mov(ah, 0x86)?;
    a.mov(cx, 1u32)?;
    a.mov(dx, 0x86A0u32)?;
    a.int(0x15)
}

/// Stage 1, the boot sector's code (at 0x7C00): keep the boot drive, check INT 13h extensions
/// (AH=41h), read stage 2 from LBA 1 to 0x7E00 and run it.
pub fn stage1() -> Vec<u8> {
    let no_edd = format!("\r\n{LOADER_ERROR}: no INT 13h extensions\r\n");
    let read = format!("\r\n{LOADER_ERROR}: reading stage 2 failed\r\n");
    assemble_with_strings(STAGE1_ADDR, &[&no_edd, &read], |a, s| {
        let mut print = a.create_label();
        let mut stop = a.create_label();
        let mut fail_edd = a.create_label();
        let mut fail_read = a.create_label();
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.mov(sp, u32::from(STAGE1_ADDR))?;
        a.sti()?;
        a.cld()?;
        a.mov(byte_ptr(DRIVE), dl)?;
        // EDD installation check (EDD 3.0 §7.4): CF clear, BX=AA55h, CX bit 0 (packet access).
        a.mov(ah, 0x41)?;
        a.mov(bx, 0x55AAu32)?;
        a.int(0x13)?;
        a.jc(fail_edd)?;
        a.cmp(bx, 0xAA55u32)?;
        a.jne(fail_edd)?;
        a.test(cl, 1)?;
        a.jz(fail_edd)?;
        // Disk address packet (EDD 3.0 §7.1): size 16, count, buffer 0000:7E00, LBA 1.
        a.mov(byte_ptr(DAP), 16)?;
        a.mov(byte_ptr(DAP + 1), 0)?;
        a.mov(ax, word_ptr(TABLE_ADDR + T_STAGE2_SECTORS))?;
        a.mov(word_ptr(DAP + 2), ax)?;
        a.mov(word_ptr(DAP + 4), u32::from(STAGE2_ADDR))?;
        a.mov(word_ptr(DAP + 6), 0)?;
        a.mov(dword_ptr(DAP + 8), 1)?;
        a.mov(dword_ptr(DAP + 12), 0)?;
        a.mov(si, u32::from(DAP))?;
        a.mov(dl, byte_ptr(DRIVE))?;
        a.mov(ah, 0x42)?;
        a.int(0x13)?;
        a.jc(fail_read)?;
        a.mov(ax, u32::from(STAGE2_ADDR))?;
        a.jmp(ax)?;
        a.set_label(&mut fail_edd)?;
        a.mov(si, u32::from(s[0]))?;
        a.jmp(stop)?;
        a.set_label(&mut fail_read)?;
        a.mov(si, u32::from(s[1]))?;
        a.jmp(stop)?;
        emit_print_and_stop(a, &mut print, &mut stop)
    })
}

/// Stage 2 (at 0x7E00): load setup, command line, kernel and initrd, fill in the setup header
/// and enter the kernel's real-mode setup at `(SETUP_BASE >> 4) + 0x20 : 0`.
pub fn stage2() -> Vec<u8> {
    let strings = [
        "pcvm-loader: loading the kernel\r\n".to_owned(),
        "pcvm-loader: loading the initrd\r\n".to_owned(),
        format!("{LOADER_STARTS_KERNEL}\r\n"),
        format!("\r\n{LOADER_ERROR}: disk read (INT 13h AH=42h) failed\r\n"),
        format!("\r\n{LOADER_ERROR}: not a bzImage with boot protocol >= 2.06\r\n"),
        format!("\r\n{LOADER_ERROR}: real-mode setup larger than 32 KiB\r\n"),
        format!("\r\n{LOADER_ERROR}: block move (INT 15h AH=87h) failed\r\n"),
        format!("\r\n{LOADER_ERROR}: no RAM for the initrd in the E820 map\r\n"),
    ];
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    assemble_with_strings(STAGE2_ADDR, &refs, |a, s| {
        let [s_kernel, s_initrd, s_start, s_read, s_bad, s_big, s_move, s_noram] =
            [s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]].map(u32::from);
        let mut print = a.create_label();
        let mut stop = a.create_label();
        let mut read_sectors = a.create_label();
        let mut load_high = a.create_label();
        let mut set_desc = a.create_label();
        let mut find_initrd = a.create_label();
        let mut bad_kernel = a.create_label();
        let mut setup_too_big = a.create_label();
        let setup_seg = SETUP_BASE >> 4;
        let table = |off: u16| TABLE_ADDR + off;

        // The block-move descriptor table starts zeroed; the BIOS fills in its own entries.
        a.xor(ax, ax)?;
        a.mov(es, ax)?;
        a.mov(di, u32::from(MOVE_GDT))?;
        a.mov(cx, 48u32)?;
        a.rep().stosb()?;

        // The kernel's first sector for boot_flag and setup_sects, then the rest of setup and
        // the other header checks (boot.rst: "HdrS", version, LOADED_HIGH for a bzImage).
        a.mov(eax, dword_ptr(table(T_KERNEL_LBA)))?;
        a.mov(cx, 1u32)?;
        a.mov(bx, setup_seg)?;
        a.call(read_sectors)?;
        a.mov(ax, setup_seg)?;
        a.mov(fs, ax)?;
        a.cmp(word_ptr(HDR_BOOT_FLAG).fs(), 0xAA55u32)?;
        a.jne(bad_kernel)?;
        // setup_sects, where 0 means 4 (boot.rst).
        let mut sects_ok = a.create_label();
        a.movzx(ax, byte_ptr(HDR_SETUP_SECTS).fs())?;
        a.test(ax, ax)?;
        a.jnz(sects_ok)?;
        a.mov(ax, 4u32)?;
        a.set_label(&mut sects_ok)?;
        a.cmp(ax, u32::from(MAX_SETUP_SECTS))?;
        a.ja(setup_too_big)?;
        a.mov(word_ptr(VAR_SETUP_SECTS), ax)?;
        // The rest of the real-mode setup, right after the first sector.
        a.mov(cx, ax)?;
        a.mov(eax, dword_ptr(table(T_KERNEL_LBA)))?;
        a.inc(eax)?;
        a.mov(bx, setup_seg + 0x20)?;
        a.call(read_sectors)?;
        // The header runs on into the second sector: check it now.
        a.cmp(dword_ptr(HDR_MAGIC).fs(), HDRS)?;
        a.jne(bad_kernel)?;
        a.cmp(word_ptr(HDR_VERSION).fs(), u32::from(MIN_PROTOCOL))?;
        a.jb(bad_kernel)?;
        a.test(byte_ptr(HDR_LOADFLAGS).fs(), u32::from(LOADED_HIGH))?;
        a.jz(bad_kernel)?;
        // The command line (empty if the table has none).
        let mut no_cmdline = a.create_label();
        a.mov(byte_ptr(HEAP_END as u32).fs(), 0)?;
        a.mov(cx, word_ptr(table(T_CMDLINE_SECTORS)))?;
        a.test(cx, cx)?;
        a.jz(no_cmdline)?;
        a.mov(eax, dword_ptr(table(T_CMDLINE_LBA)))?;
        a.mov(bx, CMDLINE_ADDR >> 4)?;
        a.call(read_sectors)?;
        a.set_label(&mut no_cmdline)?;

        // The protected-mode kernel: the sectors after setup, to 1 MiB.
        a.mov(si, s_kernel)?;
        a.call(print)?;
        a.movzx(eax, word_ptr(VAR_SETUP_SECTS))?;
        a.inc(eax)?;
        a.mov(ebx, dword_ptr(table(T_KERNEL_LBA)))?;
        a.add(ebx, eax)?;
        a.mov(dword_ptr(VAR_LBA), ebx)?;
        a.mov(ebx, dword_ptr(table(T_KERNEL_SECTORS)))?;
        a.sub(ebx, eax)?;
        a.jbe(bad_kernel)?;
        a.mov(dword_ptr(VAR_COUNT), ebx)?;
        a.mov(dword_ptr(VAR_DEST), KERNEL_HIGH_ADDR)?;
        a.call(load_high)?;
        a.mov(eax, dword_ptr(VAR_DEST))?;
        a.mov(dword_ptr(VAR_KERNEL_END), eax)?;

        // The initrd, if any, as high as RAM and initrd_addr_max allow.
        let mut no_initrd = a.create_label();
        let mut no_ram = a.create_label();
        a.mov(eax, dword_ptr(table(T_INITRD_BYTES)))?;
        a.test(eax, eax)?;
        a.jz(no_initrd)?;
        a.add(eax, SECTOR as u32 - 1)?;
        a.shr(eax, 9)?;
        a.mov(dword_ptr(VAR_COUNT), eax)?;
        a.shl(eax, 9)?;
        a.mov(dword_ptr(VAR_INITRD_PADDED), eax)?;
        a.call(find_initrd)?;
        a.mov(eax, dword_ptr(VAR_INITRD_ADDR))?;
        a.test(eax, eax)?;
        a.jz(no_ram)?;
        a.mov(dword_ptr(VAR_DEST), eax)?;
        a.mov(dword_ptr(HDR_RAMDISK_IMAGE).fs(), eax)?;
        a.mov(eax, dword_ptr(table(T_INITRD_BYTES)))?;
        a.mov(dword_ptr(HDR_RAMDISK_SIZE).fs(), eax)?;
        a.mov(eax, dword_ptr(table(T_INITRD_LBA)))?;
        a.mov(dword_ptr(VAR_LBA), eax)?;
        a.mov(si, s_initrd)?;
        a.call(print)?;
        a.call(load_high)?;
        a.set_label(&mut no_initrd)?;

        // The setup header fields a loader writes (boot.rst, "Details of header fields").
        a.mov(byte_ptr(HDR_TYPE_OF_LOADER).fs(), 0xFF)?;
        a.or(byte_ptr(HDR_LOADFLAGS).fs(), u32::from(CAN_USE_HEAP))?;
        a.mov(word_ptr(HDR_HEAP_END_PTR).fs(), u32::from(HEAP_END) - 0x200)?;
        a.mov(dword_ptr(HDR_CMD_LINE_PTR).fs(), CMDLINE_ADDR)?;
        a.mov(word_ptr(HDR_VID_MODE).fs(), 0xFFFFu32)?;
        a.mov(si, s_start)?;
        a.call(print)?;
        emit_console_settle(a)?;
        // Enter setup: all data segments at X, SP at the heap end, CS = X/16 + 0x20.
        a.cli()?;
        a.mov(ax, setup_seg)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(fs, ax)?;
        a.mov(gs, ax)?;
        a.mov(ss, ax)?;
        a.mov(sp, u32::from(HEAP_END))?;
        a.jmp_far(setup_seg as u16 + 0x20, 0)?;

        // Error exits.
        a.set_label(&mut bad_kernel)?;
        a.mov(si, s_bad)?;
        a.jmp(stop)?;
        a.set_label(&mut setup_too_big)?;
        a.mov(si, s_big)?;
        a.jmp(stop)?;
        a.set_label(&mut no_ram)?;
        a.mov(si, s_noram)?;
        a.jmp(stop)?;

        // read_sectors: CX sectors from LBA EAX to BX:0000 (EDD 3.0 §7.1 AH=42h).
        let mut read_failed = a.create_label();
        a.set_label(&mut read_sectors)?;
        a.mov(byte_ptr(DAP), 16)?;
        a.mov(byte_ptr(DAP + 1), 0)?;
        a.mov(word_ptr(DAP + 2), cx)?;
        a.mov(word_ptr(DAP + 4), 0)?;
        a.mov(word_ptr(DAP + 6), bx)?;
        a.mov(dword_ptr(DAP + 8), eax)?;
        a.mov(dword_ptr(DAP + 12), 0)?;
        a.mov(si, u32::from(DAP))?;
        a.mov(dl, byte_ptr(DRIVE))?;
        a.mov(ah, 0x42)?;
        a.int(0x13)?;
        a.jc(read_failed)?;
        a.ret()?;
        a.set_label(&mut read_failed)?;
        a.mov(si, s_read)?;
        a.jmp(stop)?;

        // load_high: VAR_COUNT sectors from VAR_LBA to physical VAR_DEST, a chunk at a time
        // through the bounce buffer and INT 15h AH=87h; VAR_DEST ends past the last byte.
        let mut chunk_ok = a.create_label();
        let mut done = a.create_label();
        let mut move_failed = a.create_label();
        a.set_label(&mut load_high)?;
        a.mov(eax, dword_ptr(VAR_COUNT))?;
        a.test(eax, eax)?;
        a.jz(done)?;
        a.cmp(eax, u32::from(CHUNK_SECTORS))?;
        a.jbe(chunk_ok)?;
        a.mov(eax, u32::from(CHUNK_SECTORS))?;
        a.set_label(&mut chunk_ok)?;
        a.mov(word_ptr(VAR_CHUNK), ax)?;
        a.mov(cx, ax)?;
        a.mov(eax, dword_ptr(VAR_LBA))?;
        a.mov(bx, BOUNCE_ADDR >> 4)?;
        a.call(read_sectors)?;
        a.mov(eax, BOUNCE_ADDR)?;
        a.mov(di, u32::from(MOVE_GDT + 0x10))?;
        a.call(set_desc)?;
        a.mov(eax, dword_ptr(VAR_DEST))?;
        a.mov(di, u32::from(MOVE_GDT + 0x18))?;
        a.call(set_desc)?;
        a.mov(cx, word_ptr(VAR_CHUNK))?;
        a.shl(cx, 8)?; // words
        a.mov(si, u32::from(MOVE_GDT))?;
        a.mov(ah, 0x87)?;
        a.int(0x15)?;
        a.jc(move_failed)?;
        a.movzx(eax, word_ptr(VAR_CHUNK))?;
        a.add(dword_ptr(VAR_LBA), eax)?;
        a.sub(dword_ptr(VAR_COUNT), eax)?;
        a.shl(eax, 9)?;
        a.add(dword_ptr(VAR_DEST), eax)?;
        a.jmp(load_high)?;
        a.set_label(&mut done)?;
        a.ret()?;
        a.set_label(&mut move_failed)?;
        a.mov(si, s_move)?;
        a.jmp(stop)?;

        // set_desc: a 64 KiB read/write data segment at base EAX in the 8 bytes at DI.
        a.set_label(&mut set_desc)?;
        a.mov(word_ptr(di), 0xFFFFu32)?;
        a.mov(dword_ptr(di + 2), eax)?;
        a.mov(byte_ptr(di + 5), 0x93)?;
        a.mov(byte_ptr(di + 6), 0)?;
        a.shr(eax, 24)?;
        a.mov(byte_ptr(di + 7), al)?;
        a.ret()?;

        // find_initrd: over the E820 map (ACPI 6.4 §15.1), the highest page-aligned address
        // where VAR_INITRD_PADDED bytes fit in usable RAM below 4 GiB, at or below
        // initrd_addr_max and above the kernel; 0 in VAR_INITRD_ADDR if none.
        let mut e820_next = a.create_label();
        let mut e820_skip = a.create_label();
        let mut e820_done = a.create_label();
        let mut clamp = a.create_label();
        let mut have_last = a.create_label();
        let mut below_max = a.create_label();
        a.set_label(&mut find_initrd)?;
        a.mov(dword_ptr(VAR_INITRD_ADDR), 0)?;
        a.xor(ebx, ebx)?;
        a.set_label(&mut e820_next)?;
        a.mov(eax, 0xE820u32)?;
        a.mov(edx, SMAP)?;
        a.mov(ecx, 24u32)?;
        a.mov(di, u32::from(E820_BUF))?;
        a.mov(dword_ptr(E820_BUF + 20), 1)?; // ACPI 3.0 attributes: "valid" unless told
        a.int(0x15)?;
        a.jc(e820_done)?;
        a.cmp(eax, SMAP)?;
        a.jne(e820_done)?;
        a.mov(dword_ptr(VAR_E820_NEXT), ebx)?;
        a.cmp(dword_ptr(E820_BUF + 16), 1)?; // type 1: usable RAM
        a.jne(e820_skip)?;
        a.cmp(dword_ptr(E820_BUF + 4), 0)?; // starts at or above 4 GiB
        a.jne(e820_skip)?;
        a.mov(eax, dword_ptr(E820_BUF + 8))?;
        a.cmp(dword_ptr(E820_BUF + 12), 0)?;
        a.jne(clamp)?;
        a.test(eax, eax)?;
        a.jz(e820_skip)?;
        a.add(eax, dword_ptr(E820_BUF))?;
        a.jc(clamp)?;
        a.dec(eax)?; // last byte of the region
        a.jmp(have_last)?;
        a.set_label(&mut clamp)?;
        a.mov(eax, 0xFFFF_FFFFu32)?;
        a.set_label(&mut have_last)?;
        a.cmp(eax, dword_ptr(HDR_INITRD_ADDR_MAX).fs())?;
        a.jbe(below_max)?;
        a.mov(eax, dword_ptr(HDR_INITRD_ADDR_MAX).fs())?;
        a.set_label(&mut below_max)?;
        // Room: last - base >= padded - 1.
        a.mov(edx, eax)?;
        a.sub(edx, dword_ptr(E820_BUF))?;
        a.jc(e820_skip)?;
        a.mov(ecx, dword_ptr(VAR_INITRD_PADDED))?;
        a.dec(ecx)?;
        a.cmp(edx, ecx)?;
        a.jb(e820_skip)?;
        a.sub(eax, ecx)?; // first byte if it ends at `last`
        a.and(eax, 0xFFFF_F000u32)?;
        a.cmp(eax, dword_ptr(E820_BUF))?;
        a.jb(e820_skip)?;
        a.cmp(eax, dword_ptr(VAR_KERNEL_END))?;
        a.jb(e820_skip)?;
        a.cmp(eax, dword_ptr(VAR_INITRD_ADDR))?;
        a.jbe(e820_skip)?;
        a.mov(dword_ptr(VAR_INITRD_ADDR), eax)?;
        a.set_label(&mut e820_skip)?;
        a.mov(ebx, dword_ptr(VAR_E820_NEXT))?;
        a.test(ebx, ebx)?;
        a.jnz(e820_next)?;
        a.set_label(&mut e820_done)?;
        a.ret()?;

        emit_print_and_stop(a, &mut print, &mut stop)
    })
}

/// The setup header fields the image builder checks, read from a bzImage.
#[derive(Clone, Copy, Debug)]
pub struct KernelHeader {
    pub setup_sects: u8,
    pub version: u16,
    pub cmdline_size: u32,
}

/// Check `kernel` is a bzImage this loader can boot (boot protocol ≥ 2.06, LOADED_HIGH).
pub fn kernel_header(kernel: &[u8]) -> Result<KernelHeader, String> {
    let u16_at = |o: u32| {
        kernel
            .get(o as usize..o as usize + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: u32| {
        kernel
            .get(o as usize..o as usize + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if u16_at(HDR_BOOT_FLAG) != Some(0xAA55) || u32_at(HDR_MAGIC) != Some(HDRS) {
        return Err("no Linux setup header (boot_flag 0xAA55, \"HdrS\")".into());
    }
    let version = u16_at(HDR_VERSION).unwrap_or(0);
    if version < MIN_PROTOCOL {
        return Err(format!("boot protocol {version:#x} is older than 2.06"));
    }
    let loadflags = kernel.get(HDR_LOADFLAGS as usize).copied().unwrap_or(0);
    if loadflags & LOADED_HIGH == 0 {
        return Err("not a bzImage (LOADED_HIGH clear)".into());
    }
    let setup_sects = kernel.get(HDR_SETUP_SECTS as usize).copied().unwrap_or(0);
    let effective = if setup_sects == 0 { 4 } else { setup_sects };
    if u16::from(effective) > MAX_SETUP_SECTS {
        return Err(format!("setup_sects {effective} exceeds {MAX_SETUP_SECTS}"));
    }
    if kernel.len() <= (usize::from(effective) + 1) * SECTOR {
        return Err("no protected-mode kernel after the setup sectors".into());
    }
    Ok(KernelHeader {
        setup_sects,
        version,
        cmdline_size: u32_at(HDR_CMDLINE_SIZE).unwrap_or(255),
    })
}

/// A bootable raw disk: the loader, `cmdline`, `kernel` and `initrd` (may be empty), padded
/// to whole MiB. Fails on a kernel the loader cannot boot or a command line it cannot pass.
pub fn linux_disk_image(kernel: &[u8], initrd: &[u8], cmdline: &str) -> Result<Vec<u8>, String> {
    let hdr = kernel_header(kernel)?;
    if cmdline.contains('\0') {
        return Err("the command line contains NUL".into());
    }
    let max = (hdr.cmdline_size as usize).min(CMDLINE_MAX_SECTORS * SECTOR - 1);
    if cmdline.len() > max {
        return Err(format!(
            "command line of {} bytes exceeds {max}",
            cmdline.len()
        ));
    }
    Ok(disk_image_unchecked(kernel, initrd, cmdline))
}

/// [`linux_disk_image`] without checking the kernel, so tests can show what the loader itself
/// does with a bad one.
pub fn disk_image_unchecked(kernel: &[u8], initrd: &[u8], cmdline: &str) -> Vec<u8> {
    let sectors = |n: usize| n.div_ceil(SECTOR);
    let boot = stage1();
    assert!(boot.len() <= TABLE_OFFSET, "stage 1 overlaps the table");
    let s2 = stage2();
    let cmdline_sectors = sectors(cmdline.len() + 1);
    let layout = DiskLayout {
        stage2_sectors: sectors(s2.len()) as u16,
        cmdline_lba: 1 + sectors(s2.len()) as u32,
        cmdline_sectors: cmdline_sectors as u16,
        kernel_lba: (1 + sectors(s2.len()) + cmdline_sectors) as u32,
        kernel_sectors: sectors(kernel.len()) as u32,
        initrd_lba: (1 + sectors(s2.len()) + cmdline_sectors + sectors(kernel.len())) as u32,
        initrd_bytes: initrd.len() as u32,
    };
    let end = (layout.initrd_lba as usize + sectors(initrd.len())) * SECTOR;
    let mut disk = vec![0u8; end.div_ceil(1 << 20) << 20];
    disk[..boot.len()].copy_from_slice(&boot);
    disk[TABLE_OFFSET..TABLE_OFFSET + TABLE_LEN].copy_from_slice(&layout.encode());
    disk[510] = 0x55;
    disk[511] = 0xAA;
    let mut put = |lba: u32, data: &[u8]| {
        let at = lba as usize * SECTOR;
        disk[at..at + data.len()].copy_from_slice(data);
    };
    put(1, &s2);
    put(layout.cmdline_lba, cmdline.as_bytes());
    put(layout.kernel_lba, kernel);
    put(layout.initrd_lba, initrd);
    disk
}

/// The layout table of a disk made by [`linux_disk_image`].
pub fn read_layout(disk: &[u8]) -> Option<DiskLayout> {
    let t = disk.get(TABLE_OFFSET..TABLE_OFFSET + TABLE_LEN)?;
    let u16_at = |o: u16| u16::from_le_bytes([t[o as usize], t[o as usize + 1]]);
    let u32_at = |o: u16| {
        let o = o as usize;
        u32::from_le_bytes([t[o], t[o + 1], t[o + 2], t[o + 3]])
    };
    Some(DiskLayout {
        stage2_sectors: u16_at(T_STAGE2_SECTORS),
        cmdline_sectors: u16_at(T_CMDLINE_SECTORS),
        cmdline_lba: u32_at(T_CMDLINE_LBA),
        kernel_lba: u32_at(T_KERNEL_LBA),
        kernel_sectors: u32_at(T_KERNEL_SECTORS),
        initrd_lba: u32_at(T_INITRD_LBA),
        initrd_bytes: u32_at(T_INITRD_BYTES),
    })
}

/// A stand-in bzImage for testing the loader without Linux: one setup sector after the boot
/// sector whose code (entered at `(SETUP_BASE >> 4) + 0x20 : 0`) stores CS, DS, ES, SS and SP
/// at [`FAKE_REGS_ADDR`], prints `marker` straight to COM1 and halts; then `payload` as the
/// protected-mode part.
pub fn fake_bzimage(marker: &str, payload: &[u8]) -> Vec<u8> {
    let mut k = vec![0u8; 2 * SECTOR];
    k[HDR_SETUP_SECTS as usize] = 1;
    k[HDR_BOOT_FLAG as usize..][..2].copy_from_slice(&0xAA55u16.to_le_bytes());
    k[HDR_MAGIC as usize..][..4].copy_from_slice(&HDRS.to_le_bytes());
    k[HDR_VERSION as usize..][..2].copy_from_slice(&0x020Fu16.to_le_bytes());
    k[HDR_LOADFLAGS as usize] = LOADED_HIGH;
    k[HDR_INITRD_ADDR_MAX as usize..][..4].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
    k[HDR_CMDLINE_SIZE as usize..][..4].copy_from_slice(&2047u32.to_le_bytes());
    // Setup's entry (offset 0x200) is a short jump over the rest of the header, as in Linux.
    let code_at = 0x280usize;
    k[0x200] = 0xEB;
    k[0x201] = (code_at - 0x202) as u8;
    let entry = (SETUP_BASE as usize + code_at) as u64;
    let assemble = || -> Result<Vec<u8>, IcedError> {
        let mut a = CodeAssembler::new(16)?;
        a.mov(ax, cs)?;
        a.push(ax)?;
        a.xor(ax, ax)?;
        a.mov(fs, ax)?;
        a.pop(ax)?;
        a.mov(word_ptr(FAKE_REGS_ADDR).fs(), ax)?;
        a.mov(word_ptr(FAKE_REGS_ADDR + 2).fs(), ds)?;
        a.mov(word_ptr(FAKE_REGS_ADDR + 4).fs(), es)?;
        a.mov(word_ptr(FAKE_REGS_ADDR + 6).fs(), ss)?;
        a.mov(word_ptr(FAKE_REGS_ADDR + 8).fs(), sp)?;
        a.mov(dx, 0x3F8u32)?;
        for c in marker.bytes().chain(*b"\r\n") {
            a.mov(al, u32::from(c))?;
            a.out(dx, al)?;
        }
        let mut halt = a.create_label();
        a.cli()?;
        a.set_label(&mut halt)?;
        a.hlt()?;
        a.jmp(halt)?;
        a.assemble(entry)
    };
    let code = assemble().expect("assemble the fake setup");
    assert!(code_at + code.len() <= 2 * SECTOR);
    k[code_at..code_at + code.len()].copy_from_slice(&code);
    k.extend_from_slice(payload);
    k
}

/// Where [`fake_bzimage`]'s setup code stores CS, DS, ES, SS, SP (5 words).
pub const FAKE_REGS_ADDR: u32 = 0x600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_table_round_trips_and_stages_fit() {
        let kernel = fake_bzimage("X", &[0xA5; 3000]);
        let disk = linux_disk_image(&kernel, &[1, 2, 3], "console=ttyS0").expect("disk");
        let l = read_layout(&disk).expect("table");
        assert_eq!(l.cmdline_sectors, 1);
        assert_eq!(l.cmdline_lba, 1 + u32::from(l.stage2_sectors));
        assert_eq!(l.kernel_lba, l.cmdline_lba + 1);
        assert_eq!(l.kernel_sectors, 2 + 6);
        assert_eq!(l.initrd_lba, l.kernel_lba + 8);
        assert_eq!(l.initrd_bytes, 3);
        assert_eq!(&disk[510..512], &[0x55, 0xAA]);
        assert_eq!(disk.len(), 1 << 20);
        let at = l.cmdline_lba as usize * SECTOR;
        assert_eq!(&disk[at..at + 14], b"console=ttyS0\0");
        let at = l.kernel_lba as usize * SECTOR;
        assert_eq!(&disk[at..at + kernel.len()], &kernel[..]);
        assert!(stage2().len() <= 8 * SECTOR);
    }

    #[test]
    fn builder_rejects_what_the_loader_cannot_boot() {
        assert!(linux_disk_image(&[0u8; 4096], &[], "").is_err());
        let mut k = fake_bzimage("X", &[0; 512]);
        k[HDR_VERSION as usize] = 0x05; // 2.05
        assert!(linux_disk_image(&k, &[], "").unwrap_err().contains("2.06"));
        let k = fake_bzimage("X", &[0; 512]);
        assert!(linux_disk_image(&k, &[], &"x".repeat(2048)).is_err());
        assert!(linux_disk_image(&k, &[], "a\0b").is_err());
    }
}
