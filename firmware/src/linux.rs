//! Direct Linux boot without firmware (`-kernel`, `-initrd`, `-append`): a bzImage through the
//! 64-bit boot protocol (Documentation/arch/x86/boot.rst, "64-bit boot protocol"), or an ELF
//! kernel with a PVH note (xen/include/public/arch-x86/hvm/start_info.h, the PVH boot ABI).
//!
//! Image parsing is linux-loader's; this module places the pieces and builds the entry state:
//!
//! | what | where |
//! |---|---|
//! | GDT (null, null, 0x10 code64, 0x18 data) | 0x500 |
//! | boot_params (zero page) / hvm_start_info | 0x7000 |
//! | PML4, PDPT, 4 PDs (first 4 GiB, 2 MiB pages) | 0x9000–0xEFFF |
//! | command line | 0x20000 |
//! | ACPI tables (e820 type 3) / RSDP in the EBDA (reserved) | 0x9C000 / 0x9FC00 |
//! | kernel | 1 MiB |
//! | initrd | highest page-aligned address below `initrd_addr_max` and low RAM's top |

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{bzimage::BzImage, KernelLoader};
use pcvm_core::cpu_state::{cr, Segment};
use pcvm_core::{CpuState, GuestMemory, MemoryLayout, SegReg};
use vm_memory::{ByteValued, GuestAddress};

use crate::acpi::{AcpiConfig, AcpiTables};
use crate::e820::{E820Entry, E820Type};
use crate::{Error, Result};

/// GDT address.
pub const GDT_ADDR: u64 = 0x500;
/// Zero page (boot_params) or hvm_start_info address.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// PVH memory map (after hvm_start_info in the same page).
pub const PVH_MEMMAP_ADDR: u64 = 0x7800;
/// Initial stack top for the PVH and multiboot entries.
pub const BOOT_STACK: u64 = 0x8FF0;
/// PML4 address; PDPT and page directories follow.
pub const PML4_ADDR: u64 = 0x9000;
/// Command line address.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Longest command line accepted (the protocol's default limit for ≥ 2.06 is in the header).
pub const CMDLINE_MAX: usize = 0x1_0000;
/// ACPI tables for direct boot.
pub const ACPI_TABLES_ADDR: u64 = 0x9_C000;
/// RSDP for direct boot (first KiB of the EBDA).
pub const ACPI_RSDP_ADDR: u64 = 0x9_FC00;
/// Where the protected-mode kernel is loaded.
pub const KERNEL_ADDR: u64 = 0x10_0000;
/// The GDT: null, null, 64-bit code (selector 0x10), data (0x18), 32-bit code (0x20).
pub const GDT: [u64; 5] = [
    0,
    0,
    0x00AF_9B00_0000_FFFF,
    0x00CF_9300_0000_FFFF,
    0x00CF_9B00_0000_FFFF,
];

/// What the machine needs after a direct load: the entry CPU state.
#[derive(Clone, Debug)]
pub struct DirectBoot {
    /// Registers for the first instruction.
    pub cpu: CpuState,
    /// Where the kernel was loaded and where it ends.
    pub kernel: (u64, u64),
    /// Where the initrd went (address, size).
    pub initrd: Option<(u64, u64)>,
}

/// The e820 map for direct boot: low RAM minus the EBDA/ACPI area and the BIOS area, RAM from
/// 1 MiB, the ACPI tables as type 3.
pub fn direct_boot_e820(layout: &MemoryLayout) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            len: ACPI_TABLES_ADDR,
            kind: E820Type::Ram,
        },
        E820Entry {
            addr: ACPI_TABLES_ADDR,
            len: ACPI_RSDP_ADDR - ACPI_TABLES_ADDR,
            kind: E820Type::Acpi,
        },
        E820Entry {
            addr: ACPI_RSDP_ADDR,
            len: 0xA_0000 - ACPI_RSDP_ADDR,
            kind: E820Type::Reserved,
        },
        E820Entry {
            addr: 0xF_0000,
            len: 0x1_0000,
            kind: E820Type::Reserved,
        },
        E820Entry {
            addr: 0x10_0000,
            len: layout.below_4g.saturating_sub(0x10_0000),
            kind: E820Type::Ram,
        },
    ];
    if layout.above_4g > 0 {
        map.push(E820Entry {
            addr: 1 << 32,
            len: layout.above_4g,
            kind: E820Type::Ram,
        });
    }
    map
}

fn write(memory: &GuestMemory, what: &'static str, addr: u64, data: &[u8]) -> Result<()> {
    memory
        .write_phys(addr, data)
        .map_err(|e| Error::KernelPlacement {
            what,
            reason: e.to_string(),
        })
}

/// Place the ACPI tables for direct boot and point the EBDA segment (0x40E) at the RSDP.
pub fn place_acpi(memory: &GuestMemory) -> Result<()> {
    let cfg = AcpiConfig::pc(memory.layout().below_4g);
    let tables = AcpiTables::build(&cfg);
    if tables.tables.len() as u64 > ACPI_RSDP_ADDR - ACPI_TABLES_ADDR {
        return Err(Error::KernelPlacement {
            what: "ACPI tables",
            reason: format!("{} bytes do not fit the reserved area", tables.tables.len()),
        });
    }
    tables.place(memory, ACPI_TABLES_ADDR, ACPI_RSDP_ADDR)?;
    write(
        memory,
        "EBDA pointer",
        0x40E,
        &((ACPI_RSDP_ADDR >> 4) as u16).to_le_bytes(),
    )
}

/// Identity-map the first 4 GiB with 2 MiB pages (PML4 → 1 PDPT → 4 PDs).
fn write_page_tables(memory: &GuestMemory) -> Result<()> {
    let pdpt = PML4_ADDR + 0x1000;
    let pd = PML4_ADDR + 0x2000;
    write(
        memory,
        "page tables",
        PML4_ADDR,
        &(pdpt | 0x3).to_le_bytes(),
    )?;
    let mut dirs = Vec::with_capacity(32);
    for i in 0..4u64 {
        dirs.extend_from_slice(&((pd + i * 0x1000) | 0x3).to_le_bytes());
    }
    write(memory, "page tables", pdpt, &dirs)?;
    let mut entries = Vec::with_capacity(4 * 4096);
    for i in 0..2048u64 {
        entries.extend_from_slice(&((i << 21) | 0x83).to_le_bytes());
    }
    write(memory, "page tables", pd, &entries)
}

fn write_gdt(memory: &GuestMemory) -> Result<()> {
    let bytes: Vec<u8> = GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    write(memory, "GDT", GDT_ADDR, &bytes)
}

/// A flat segment from a GDT descriptor's attributes.
fn flat(selector: u16, attributes: u32) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0xFFFF_FFFF,
        attributes,
    }
}

/// Common protected-mode state: GDT loaded, flat data segments, interrupts off.
fn protected_state(code: Segment, data: Segment) -> CpuState {
    let mut cpu = CpuState::reset();
    for seg in SegReg::ALL {
        *cpu.seg_mut(seg) = data;
    }
    *cpu.seg_mut(SegReg::Cs) = code;
    cpu.gdtr.base = GDT_ADDR;
    cpu.gdtr.limit = (GDT.len() * 8 - 1) as u16;
    cpu.idtr.base = 0;
    cpu.idtr.limit = 0;
    cpu.rflags = 0x2;
    cpu.cr0 = cr::CR0_PE | cr::CR0_ET;
    cpu
}

/// 32-bit flat protected mode, paging off (PVH and multiboot entries).
pub fn flat32_state(entry: u64) -> CpuState {
    let code = flat(0x20, 0xC09B);
    let data = flat(0x18, 0xC093);
    let mut cpu = protected_state(code, data);
    cpu.rip = entry;
    cpu.gpr[pcvm_core::cpu_state::gpr::RSP] = BOOT_STACK;
    cpu
}

/// Where the initrd goes: the highest page-aligned address below `addr_max`, low RAM's top
/// and 4 GiB that still leaves it above `kernel_end`.
fn initrd_address(layout: &MemoryLayout, addr_max: u64, kernel_end: u64, size: u64) -> Result<u64> {
    let top = layout.below_4g.min(addr_max.saturating_add(1)).min(1 << 32);
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xFFF)
        .filter(|&a| a >= kernel_end)
        .ok_or_else(|| Error::KernelPlacement {
            what: "initrd",
            reason: format!(
                "{size} bytes do not fit between the kernel end {kernel_end:#x} and {top:#x}"
            ),
        })?;
    Ok(addr)
}

/// Load a bzImage (boot protocol ≥ 2.06 with a 64-bit entry), its initrd and command line,
/// the ACPI tables, boot_params and page tables; return the state for `startup_64`.
pub fn load_bzimage(
    memory: &GuestMemory,
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<DirectBoot> {
    if kernel.len() < 0x1F1 + std::mem::size_of::<linux_loader::loader::bootparam::setup_header>() {
        return Err(Error::KernelImage(format!(
            "{} bytes is too short for a bzImage setup header",
            kernel.len()
        )));
    }
    let layout = *memory.layout();
    let mut image = std::io::Cursor::new(kernel);
    let loaded = BzImage::load(
        memory.vm_memory(),
        Some(GuestAddress(KERNEL_ADDR)),
        &mut image,
        None,
    )
    .map_err(|e| Error::KernelImage(format!("bzImage: {e}")))?;
    let mut hdr = loaded
        .setup_header
        .ok_or_else(|| Error::KernelImage("bzImage without a setup header".into()))?;
    let version = hdr.version;
    if version < 0x0206 {
        return Err(Error::KernelImage(format!(
            "boot protocol {}.{:02} is older than 2.06",
            version >> 8,
            version & 0xFF
        )));
    }
    let xloadflags = hdr.xloadflags;
    if xloadflags & 1 == 0 {
        return Err(Error::KernelImage(
            "the kernel has no 64-bit entry point (XLF_KERNEL_64 clear)".into(),
        ));
    }
    let kernel_end = KERNEL_ADDR + loaded.kernel_end;
    // The kernel decompresses in place up to init_size.
    let init_end = KERNEL_ADDR + u64::from(hdr.init_size).max(loaded.kernel_end);
    if init_end > layout.below_4g {
        return Err(Error::KernelPlacement {
            what: "kernel",
            reason: format!(
                "needs RAM up to {init_end:#x}, low RAM ends at {:#x}",
                layout.below_4g
            ),
        });
    }

    let cmdline_limit = (hdr.cmdline_size as usize).clamp(1, CMDLINE_MAX);
    if cmdline.len() >= cmdline_limit || cmdline.as_bytes().contains(&0) {
        return Err(Error::KernelPlacement {
            what: "command line",
            reason: format!(
                "{} bytes, the kernel accepts {}",
                cmdline.len(),
                cmdline_limit - 1
            ),
        });
    }
    let mut c = cmdline.as_bytes().to_vec();
    c.push(0);
    write(memory, "command line", CMDLINE_ADDR, &c)?;

    let mut initrd_placed = None;
    if let Some(rd) = initrd {
        let addr = initrd_address(
            &layout,
            u64::from(hdr.initrd_addr_max),
            init_end,
            rd.len() as u64,
        )?;
        write(memory, "initrd", addr, rd)?;
        hdr.ramdisk_image = addr as u32;
        hdr.ramdisk_size = rd.len() as u32;
        initrd_placed = Some((addr, rd.len() as u64));
    }

    place_acpi(memory)?;
    write_gdt(memory)?;
    write_page_tables(memory)?;

    hdr.type_of_loader = 0xFF;
    hdr.loadflags |= 0x80; // CAN_USE_HEAP
    hdr.heap_end_ptr = 0xFE00;
    hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    hdr.code32_start = KERNEL_ADDR as u32;
    let mut params = boot_params {
        hdr,
        acpi_rsdp_addr: ACPI_RSDP_ADDR,
        ..Default::default()
    };
    let map = direct_boot_e820(&layout);
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.len,
            r#type: e.kind as u32,
        };
    }
    params.e820_entries = map.len().min(params.e820_table.len()) as u8;
    write(memory, "boot_params", ZERO_PAGE_ADDR, params.as_slice())?;

    let code = flat(0x10, 0xA09B);
    let data = flat(0x18, 0xC093);
    let mut cpu = protected_state(code, data);
    cpu.cr0 |= cr::CR0_PG;
    cpu.cr3 = PML4_ADDR;
    cpu.cr4 = cr::CR4_PAE;
    cpu.efer = cr::EFER_LME | cr::EFER_LMA;
    cpu.rip = KERNEL_ADDR + 0x200;
    cpu.gpr[pcvm_core::cpu_state::gpr::RSI] = ZERO_PAGE_ADDR;
    Ok(DirectBoot {
        cpu,
        kernel: (KERNEL_ADDR, kernel_end),
        initrd: initrd_placed,
    })
}

/// hvm_start_info magic ("xEn3" with bit 7 of the last byte set).
pub const HVM_START_MAGIC: u32 = 0x336E_C578;

/// Load an ELF kernel with a PVH note (XEN_ELFNOTE_PHYS32_ENTRY): hvm_start_info (version 1)
/// with the command line, initrd module, RSDP and memory map; entry in 32-bit flat protected
/// mode with EBX = the start info, as the PVH boot ABI says.
pub fn load_pvh(
    memory: &GuestMemory,
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<DirectBoot> {
    let layout = *memory.layout();
    let mut image = std::io::Cursor::new(kernel);
    let loaded = Elf::load(
        memory.vm_memory(),
        None,
        &mut image,
        Some(GuestAddress(KERNEL_ADDR)),
    )
    .map_err(|e| Error::KernelImage(format!("ELF: {e}")))?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(a) => a.0,
        _ => {
            return Err(Error::KernelImage(
                "ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)".into(),
            ))
        }
    };
    let kernel_end = loaded.kernel_end;
    if cmdline.len() >= CMDLINE_MAX || cmdline.as_bytes().contains(&0) {
        return Err(Error::KernelPlacement {
            what: "command line",
            reason: format!("{} bytes or an embedded NUL", cmdline.len()),
        });
    }
    let mut c = cmdline.as_bytes().to_vec();
    c.push(0);
    write(memory, "command line", CMDLINE_ADDR, &c)?;
    place_acpi(memory)?;
    write_gdt(memory)?;

    // hvm_start_info: magic, version, flags, nr_modules, modlist_paddr, cmdline_paddr,
    // rsdp_paddr, memmap_paddr, memmap_entries, reserved (56 bytes).
    let map = direct_boot_e820(&layout);
    let mut modules = 0u32;
    let modlist = PVH_MEMMAP_ADDR - 0x40;
    if let Some(rd) = initrd {
        let addr = initrd_address(&layout, 0xFFFF_FFFF, kernel_end, rd.len() as u64)?;
        write(memory, "initrd", addr, rd)?;
        let mut m = Vec::new();
        m.extend_from_slice(&addr.to_le_bytes());
        m.extend_from_slice(&(rd.len() as u64).to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        write(memory, "PVH module list", modlist, &m)?;
        modules = 1;
    }
    let mut info = Vec::with_capacity(56);
    info.extend_from_slice(&HVM_START_MAGIC.to_le_bytes());
    info.extend_from_slice(&1u32.to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    info.extend_from_slice(&modules.to_le_bytes());
    info.extend_from_slice(&(if modules > 0 { modlist } else { 0 }).to_le_bytes());
    info.extend_from_slice(&CMDLINE_ADDR.to_le_bytes());
    info.extend_from_slice(&ACPI_RSDP_ADDR.to_le_bytes());
    info.extend_from_slice(&PVH_MEMMAP_ADDR.to_le_bytes());
    info.extend_from_slice(&(map.len() as u32).to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    write(memory, "hvm_start_info", ZERO_PAGE_ADDR, &info)?;
    let mut mm = Vec::new();
    for e in &map {
        mm.extend_from_slice(&e.addr.to_le_bytes());
        mm.extend_from_slice(&e.len.to_le_bytes());
        mm.extend_from_slice(&(e.kind as u32).to_le_bytes());
        mm.extend_from_slice(&0u32.to_le_bytes());
    }
    write(memory, "PVH memory map", PVH_MEMMAP_ADDR, &mm)?;

    let mut cpu = flat32_state(entry);
    cpu.gpr[pcvm_core::cpu_state::gpr::RBX] = ZERO_PAGE_ADDR;
    Ok(DirectBoot {
        cpu,
        kernel: (loaded.kernel_load.0, kernel_end),
        initrd: None,
    })
}
