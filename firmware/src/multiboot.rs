//! Multiboot v1 kernels for `-kernel` (Multiboot Specification 0.6.96 §3): header scan in the
//! first 8 KiB, loading by the a.out-kludge address fields (flag 16) or by ELF32 program
//! headers, modules (the initrd), and the boot information structure with memory sizes, the
//! e820-derived memory map, command line and loader name. Entry per §3.2: 32-bit flat
//! protected mode, paging off, EAX = 0x2BADB002, EBX = the information structure.
//!
//! Left out: video mode requests (flag 2, ignored as QEMU does), a.out symbol tables.

use pcvm_core::cpu_state::gpr;
use pcvm_core::GuestMemory;

use crate::e820::{E820Entry, E820Type};
use crate::linux::{flat32_state, DirectBoot, CMDLINE_ADDR, CMDLINE_MAX, GDT, GDT_ADDR};
use crate::{Error, Result};

/// Header magic.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// Value of EAX at entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// Where the header must start (within this many bytes, 4-byte aligned).
pub const HEADER_SEARCH: usize = 8192;
/// Boot information structure address.
pub const INFO_ADDR: u64 = 0x9000;
/// Memory map address (after the 88-byte information structure).
pub const MMAP_ADDR: u64 = 0x9100;
/// Module list address.
pub const MODS_ADDR: u64 = 0x9800;
/// Loader name address.
pub const LOADER_NAME_ADDR: u64 = 0x9F00;
/// Module strings start here, after the command line area.
const MOD_STRINGS_ADDR: u64 = CMDLINE_ADDR + CMDLINE_MAX as u64;

/// Header flag 0: align modules on 4 KiB.
pub const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag 1: memory information is required.
pub const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Header flag 2: video mode information requested.
pub const FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Header flag 16: the address fields are valid (a.out kludge).
pub const FLAG_AOUT_KLUDGE: u32 = 1 << 16;

/// Info flags (§3.3).
const INFO_MEMORY: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MODS: u32 = 1 << 3;
const INFO_MMAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;

/// A parsed multiboot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultibootHeader {
    /// Offset of the header in the file.
    pub offset: usize,
    /// Flags.
    pub flags: u32,
    /// header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr (if flag 16).
    pub addresses: Option<[u32; 5]>,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::KernelImage(format!("multiboot: {}", reason.into()))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// Find and check the header in the first 8 KiB; `None` if there is no magic.
pub fn find_header(image: &[u8]) -> Result<Option<MultibootHeader>> {
    let end = image.len().min(HEADER_SEARCH);
    let Some(offset) = (0..end.saturating_sub(11))
        .step_by(4)
        .find(|&o| u32_at(image, o) == Some(HEADER_MAGIC))
    else {
        return Ok(None);
    };
    let flags = u32_at(image, offset + 4).ok_or_else(|| bad("truncated header"))?;
    let checksum = u32_at(image, offset + 8).ok_or_else(|| bad("truncated header"))?;
    if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) != 0 {
        return Err(bad("header checksum is wrong"));
    }
    // Bits 3–15 are "required" features this loader does not know (§3.1.2).
    if flags & 0xFFF8 != 0 {
        return Err(bad(format!("unsupported required header flags {flags:#x}")));
    }
    let addresses = if flags & FLAG_AOUT_KLUDGE != 0 {
        let mut a = [0u32; 5];
        for (i, slot) in a.iter_mut().enumerate() {
            *slot = u32_at(image, offset + 12 + 4 * i)
                .ok_or_else(|| bad("truncated address fields"))?;
        }
        Some(a)
    } else {
        None
    };
    Ok(Some(MultibootHeader {
        offset,
        flags,
        addresses,
    }))
}

/// A checked load: `data` at `addr`, then zeros up to `addr + mem_size`.
struct Segment<'a> {
    addr: u64,
    data: &'a [u8],
    mem_size: u64,
}

fn aout_segments<'a>(
    image: &'a [u8],
    h: &MultibootHeader,
    a: [u32; 5],
) -> Result<(Vec<Segment<'a>>, u64)> {
    let [header_addr, load_addr, load_end_addr, bss_end_addr, entry] = a;
    let back = header_addr
        .checked_sub(load_addr)
        .ok_or_else(|| bad("load_addr is above header_addr"))? as usize;
    let file_off = h
        .offset
        .checked_sub(back)
        .ok_or_else(|| bad("load_addr lies before the start of the file"))?;
    let load_len = if load_end_addr == 0 {
        image.len() - file_off
    } else {
        load_end_addr
            .checked_sub(load_addr)
            .ok_or_else(|| bad("load_end_addr is below load_addr"))? as usize
    };
    let data = image
        .get(
            file_off
                ..file_off
                    .checked_add(load_len)
                    .ok_or_else(|| bad("overflow"))?,
        )
        .ok_or_else(|| bad("the load range runs past the end of the file"))?;
    let mem_end = if bss_end_addr == 0 {
        u64::from(load_addr) + load_len as u64
    } else {
        u64::from(bss_end_addr).max(u64::from(load_addr) + load_len as u64)
    };
    Ok((
        vec![Segment {
            addr: u64::from(load_addr),
            data,
            mem_size: mem_end - u64::from(load_addr),
        }],
        u64::from(entry),
    ))
}

/// ELF32 PT_LOAD segments (System V ABI ch. 5) and the entry point.
fn elf_segments(image: &[u8]) -> Result<(Vec<Segment<'_>>, u64)> {
    if image.get(0..4) != Some(b"\x7FELF") {
        return Err(bad("no address fields (flag 16) and not an ELF file"));
    }
    if image.get(4) != Some(&1) || image.get(5) != Some(&1) {
        return Err(bad("only little-endian ELF32 kernels are supported"));
    }
    let e_machine = u16_at(image, 18).ok_or_else(|| bad("truncated ELF header"))?;
    if e_machine != 3 {
        return Err(bad(format!("ELF machine {e_machine} is not i386")));
    }
    let entry = u32_at(image, 24).ok_or_else(|| bad("truncated ELF header"))?;
    let phoff = u32_at(image, 28).ok_or_else(|| bad("truncated ELF header"))? as usize;
    let phentsize = u16_at(image, 42).ok_or_else(|| bad("truncated ELF header"))? as usize;
    let phnum = u16_at(image, 44).ok_or_else(|| bad("truncated ELF header"))? as usize;
    if phentsize < 32 {
        return Err(bad("ELF program header entries are too small"));
    }
    let mut segs = Vec::new();
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i * phentsize)
            .ok_or_else(|| bad("overflow"))?;
        let field =
            |o: usize| u32_at(image, ph + o).ok_or_else(|| bad("truncated program headers"));
        if field(0)? != 1 {
            continue; // not PT_LOAD
        }
        let (offset, paddr, filesz, memsz) = (field(4)?, field(12)?, field(16)?, field(20)?);
        if filesz > memsz {
            return Err(bad("a segment's file size exceeds its memory size"));
        }
        let start = offset as usize;
        let data = image
            .get(
                start
                    ..start
                        .checked_add(filesz as usize)
                        .ok_or_else(|| bad("overflow"))?,
            )
            .ok_or_else(|| bad("a segment runs past the end of the file"))?;
        segs.push(Segment {
            addr: u64::from(paddr),
            data,
            mem_size: u64::from(memsz),
        });
    }
    if segs.is_empty() {
        return Err(bad("the ELF file has no loadable segment"));
    }
    Ok((segs, u64::from(entry)))
}

fn write(memory: &GuestMemory, what: &'static str, addr: u64, data: &[u8]) -> Result<()> {
    memory
        .write_phys(addr, data)
        .map_err(|e| Error::KernelPlacement {
            what,
            reason: e.to_string(),
        })
}

/// Load a multiboot kernel with `modules` (contents, command line) and `cmdline`; the memory
/// map is `e820`.
pub fn load_multiboot(
    memory: &GuestMemory,
    image: &[u8],
    modules: &[(&[u8], &str)],
    cmdline: &str,
    e820: &[E820Entry],
) -> Result<DirectBoot> {
    let header = find_header(image)?.ok_or_else(|| bad("no header in the first 8 KiB"))?;
    let (segments, entry) = match header.addresses {
        Some(a) => aout_segments(image, &header, a)?,
        None => elf_segments(image)?,
    };
    let low_top = memory.layout().below_4g;
    let mut kernel_start = u64::MAX;
    let mut kernel_end = 0;
    for s in &segments {
        let end = s
            .addr
            .checked_add(s.mem_size)
            .ok_or_else(|| bad("overflow"))?;
        if s.addr < 0x10_0000 || end > low_top {
            return Err(Error::KernelPlacement {
                what: "multiboot kernel",
                reason: format!(
                    "segment {:#x}..{end:#x} is outside RAM from 1 MiB to {low_top:#x}",
                    s.addr
                ),
            });
        }
        write(memory, "multiboot kernel", s.addr, s.data)?;
        let bss = (s.mem_size as usize).saturating_sub(s.data.len());
        if bss > 0 {
            write(
                memory,
                "multiboot bss",
                s.addr + s.data.len() as u64,
                &vec![0u8; bss],
            )?;
        }
        kernel_start = kernel_start.min(s.addr);
        kernel_end = kernel_end.max(end);
    }
    if !(kernel_start..kernel_end).contains(&entry) {
        tracing::warn!(entry, "multiboot: entry point outside the loaded image");
    }

    if cmdline.len() >= CMDLINE_MAX || cmdline.as_bytes().contains(&0) {
        return Err(Error::KernelPlacement {
            what: "command line",
            reason: format!("{} bytes or an embedded NUL", cmdline.len()),
        });
    }
    let mut c = cmdline.as_bytes().to_vec();
    c.push(0);
    write(memory, "command line", CMDLINE_ADDR, &c)?;

    // Modules go page-aligned after the kernel; their strings after the command line.
    if modules.len() > 128 {
        return Err(bad("more than 128 modules"));
    }
    let mut next = (kernel_end + 0xFFF) & !0xFFF;
    let mut mod_list = Vec::new();
    let mut strings = MOD_STRINGS_ADDR;
    for (data, args) in modules {
        let end = next + data.len() as u64;
        if end > low_top {
            return Err(Error::KernelPlacement {
                what: "multiboot module",
                reason: format!("{} bytes do not fit below {low_top:#x}", data.len()),
            });
        }
        write(memory, "multiboot module", next, data)?;
        let mut s = args.replace('\0', " ").into_bytes();
        s.push(0);
        write(memory, "multiboot module string", strings, &s)?;
        mod_list.extend_from_slice(&(next as u32).to_le_bytes());
        mod_list.extend_from_slice(&(end as u32).to_le_bytes());
        mod_list.extend_from_slice(&(strings as u32).to_le_bytes());
        mod_list.extend_from_slice(&0u32.to_le_bytes());
        strings += s.len() as u64;
        next = (end + 0xFFF) & !0xFFF;
    }
    if !mod_list.is_empty() {
        write(memory, "multiboot module list", MODS_ADDR, &mod_list)?;
    }

    let mut mmap = Vec::new();
    for e in e820.iter().take(64) {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&e.addr.to_le_bytes());
        mmap.extend_from_slice(&e.len.to_le_bytes());
        mmap.extend_from_slice(&(e.kind as u32).to_le_bytes());
    }
    write(memory, "multiboot memory map", MMAP_ADDR, &mmap)?;
    write(memory, "multiboot loader name", LOADER_NAME_ADDR, b"pcvm\0")?;

    // mem_lower: KiB of RAM from 0 (max 640); mem_upper: KiB from 1 MiB to the first hole.
    let ram_from = |base: u64| {
        e820.iter()
            .find(|e| e.kind == E820Type::Ram && e.addr <= base && base < e.addr + e.len)
            .map_or(0, |e| e.addr + e.len - base)
    };
    let mem_lower = (ram_from(0) / 1024).min(640) as u32;
    let mem_upper = (ram_from(0x10_0000) / 1024).min(u64::from(u32::MAX)) as u32;
    let mut info = vec![0u8; 88];
    let mut flags = INFO_MEMORY | INFO_CMDLINE | INFO_MMAP | INFO_LOADER_NAME;
    if !modules.is_empty() {
        flags |= INFO_MODS;
    }
    let mut put = |o: usize, v: u32| info[o..o + 4].copy_from_slice(&v.to_le_bytes());
    put(0, flags);
    put(4, mem_lower);
    put(8, mem_upper);
    put(16, CMDLINE_ADDR as u32);
    put(20, modules.len() as u32);
    put(
        24,
        if modules.is_empty() {
            0
        } else {
            MODS_ADDR as u32
        },
    );
    put(44, mmap.len() as u32);
    put(48, MMAP_ADDR as u32);
    put(64, LOADER_NAME_ADDR as u32);
    write(memory, "multiboot information", INFO_ADDR, &info)?;

    let gdt: Vec<u8> = GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    write(memory, "GDT", GDT_ADDR, &gdt)?;
    memory.set_a20(true);
    let mut cpu = flat32_state(entry);
    cpu.gpr[gpr::RAX] = u64::from(BOOTLOADER_MAGIC);
    cpu.gpr[gpr::RBX] = INFO_ADDR;
    Ok(DirectBoot {
        cpu,
        kernel: (kernel_start, kernel_end),
        initrd: None,
    })
}
