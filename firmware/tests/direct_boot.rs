//! Direct kernel boot: a synthetic bzImage placed and its entry state inspected; malformed
//! images are errors, never panics.

use pcvm_core::cpu_state::{cr, gpr};
use pcvm_core::{GuestMemory, SegReg};
use pcvm_firmware::linux::*;
use pcvm_firmware::Error;

/// A minimal bzImage: 4 setup sectors + boot sector, a header for protocol `version`, and a
/// recognizable payload.
fn bzimage(version: u16, xloadflags: u16, payload: usize) -> Vec<u8> {
    let setup = 5 * 512;
    let mut img = vec![0u8; setup + payload];
    img[0x1F1] = 4;
    img[0x1FE] = 0x55;
    img[0x1FF] = 0xAA;
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&version.to_le_bytes());
    img[0x211] = 0x01; // LOADED_HIGH
    img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    img[0x22C..0x230].copy_from_slice(&0x37FF_FFFFu32.to_le_bytes());
    img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
    img[0x238..0x23C].copy_from_slice(&2048u32.to_le_bytes());
    img[0x260..0x264].copy_from_slice(&(2u32 << 20).to_le_bytes()); // init_size
    for (i, b) in img[setup..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    img
}

fn rd(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    mem.read_phys(addr, &mut v).unwrap();
    v
}
fn rd32(mem: &GuestMemory, addr: u64) -> u32 {
    u32::from_le_bytes(rd(mem, addr, 4).try_into().unwrap())
}
fn rd64(mem: &GuestMemory, addr: u64) -> u64 {
    u64::from_le_bytes(rd(mem, addr, 8).try_into().unwrap())
}

#[test]
fn bzimage_is_placed_with_boot_params_and_64bit_state() {
    let mem = GuestMemory::pc(64 << 20).unwrap();
    let img = bzimage(0x020F, 1, 8192);
    let initrd = vec![0x5Au8; 100_000];
    let boot = load_bzimage(&mem, &img, Some(&initrd), "console=ttyS0 quiet").unwrap();
    // Kernel payload at 1 MiB.
    assert_eq!(rd(&mem, KERNEL_ADDR, 4096), img[2560..2560 + 4096].to_vec());
    assert_eq!(boot.kernel.0, KERNEL_ADDR);
    // boot_params.
    let zp = ZERO_PAGE_ADDR;
    assert_eq!(rd(&mem, zp + 0x202, 4), b"HdrS".to_vec());
    assert_eq!(rd(&mem, zp + 0x210, 1)[0], 0xFF, "type_of_loader");
    assert_eq!(
        rd(&mem, zp + 0x211, 1)[0] & 0x81,
        0x81,
        "LOADED_HIGH | CAN_USE_HEAP"
    );
    assert_eq!(rd32(&mem, zp + 0x228), CMDLINE_ADDR as u32);
    assert_eq!(
        rd(&mem, CMDLINE_ADDR, 20),
        b"console=ttyS0 quiet\0".to_vec()
    );
    let (ia, isz) = boot.initrd.unwrap();
    assert_eq!(rd32(&mem, zp + 0x218) as u64, ia);
    assert_eq!(rd32(&mem, zp + 0x21C) as u64, isz);
    assert_eq!(ia % 4096, 0);
    assert!(ia + isz <= 64 << 20 && ia >= KERNEL_ADDR + (2 << 20));
    assert_eq!(rd(&mem, ia, 16), vec![0x5A; 16]);
    assert_eq!(rd64(&mem, zp + 0x70), ACPI_RSDP_ADDR, "acpi_rsdp_addr");
    assert_eq!(rd(&mem, ACPI_RSDP_ADDR, 8), b"RSD PTR ".to_vec());
    // e820: 5 entries, RAM from 1 MiB to the top.
    let n = rd(&mem, zp + 0x1E8, 1)[0] as u64;
    assert_eq!(n, 5);
    let e4 = zp + 0x2D0 + 4 * 20;
    assert_eq!(rd64(&mem, e4), 0x10_0000);
    assert_eq!(rd64(&mem, e4 + 8), (64 << 20) - 0x10_0000);
    assert_eq!(rd32(&mem, e4 + 16), 1);
    // Page tables: PML4 → PDPT → PD with 2 MiB identity pages up to 4 GiB.
    let pdpt = rd64(&mem, PML4_ADDR) & !0xFFF;
    let pd3 = rd64(&mem, pdpt + 24) & !0xFFF;
    assert_eq!(rd64(&mem, pd3 + 511 * 8), 0xFFE0_0000 | 0x83);
    // GDT.
    assert_eq!(rd64(&mem, GDT_ADDR + 0x10), 0x00AF_9B00_0000_FFFF);
    // Entry state.
    let cpu = &boot.cpu;
    assert_eq!(cpu.rip, KERNEL_ADDR + 0x200);
    assert_eq!(cpu.gpr[gpr::RSI], ZERO_PAGE_ADDR);
    assert_eq!(cpu.cr3, PML4_ADDR);
    assert_ne!(cpu.cr0 & cr::CR0_PG, 0);
    assert_ne!(cpu.cr0 & cr::CR0_PE, 0);
    assert_ne!(cpu.cr4 & cr::CR4_PAE, 0);
    assert_eq!(
        cpu.efer & (cr::EFER_LME | cr::EFER_LMA),
        cr::EFER_LME | cr::EFER_LMA
    );
    assert!(cpu.seg(SegReg::Cs).long());
    assert_eq!(cpu.seg(SegReg::Cs).selector, 0x10);
    assert_eq!(cpu.seg(SegReg::Ds).selector, 0x18);
    assert!(cpu.long_mode_active());
    assert_eq!(cpu.rflags & (1 << 9), 0, "interrupts off");
}

#[test]
fn malformed_bzimages_are_errors() {
    let mem = GuestMemory::pc(64 << 20).unwrap();
    let ok = bzimage(0x020F, 1, 4096);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated header", ok[..0x200].to_vec()),
        ("truncated setup", ok[..0x300].to_vec()),
        ("no HdrS", {
            let mut v = ok.clone();
            v[0x202] = b'X';
            v
        }),
        ("protocol 2.05", bzimage(0x0205, 1, 4096)),
        ("no 64-bit entry", bzimage(0x020F, 0, 4096)),
        (
            "garbage",
            (0..20_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ];
    for (what, img) in cases {
        match load_bzimage(&mem, &img, None, "") {
            Err(Error::KernelImage(_)) => {}
            other => panic!("{what}: expected a kernel image error, got {other:?}"),
        }
    }
    // Too long a command line, and an initrd that cannot fit.
    let long = "x".repeat(4096);
    assert!(matches!(
        load_bzimage(&mem, &ok, None, &long),
        Err(Error::KernelPlacement {
            what: "command line",
            ..
        })
    ));
    let huge = vec![0u8; 63 << 20];
    assert!(matches!(
        load_bzimage(&mem, &ok, Some(&huge), ""),
        Err(Error::KernelPlacement { what: "initrd", .. })
    ));
    // A kernel whose init_size exceeds RAM.
    let small = GuestMemory::pc(2 << 20).unwrap();
    assert!(load_bzimage(&small, &ok, None, "").is_err());
}

#[test]
fn pvh_requires_an_elf_with_the_note() {
    let mem = GuestMemory::pc(64 << 20).unwrap();
    let ok = bzimage(0x020F, 1, 4096);
    assert!(matches!(
        load_pvh(&mem, &ok, None, ""),
        Err(Error::KernelImage(_))
    ));
    assert!(matches!(
        load_pvh(&mem, &[0x7F, b'E', b'L', b'F'], None, ""),
        Err(Error::KernelImage(_))
    ));
}

#[test]
fn direct_boot_e820_reserves_acpi_and_bios_areas() {
    let layout = *GuestMemory::pc(5 << 30).unwrap().layout();
    let map = direct_boot_e820(&layout);
    assert_eq!(map.last().unwrap().addr, 1 << 32);
    let total: u64 = map
        .iter()
        .filter(|e| e.kind as u32 == 1)
        .map(|e| e.len)
        .sum();
    assert_eq!(total, layout.ram_size - 0x10_0000 + ACPI_TABLES_ADDR);
}
