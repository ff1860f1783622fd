//! Multiboot v1 loading: a.out-kludge and ELF32 images, the information structure, errors.

use pcvm_core::cpu_state::gpr;
use pcvm_core::{GuestMemory, SegReg};
use pcvm_firmware::e820::pc_map;
use pcvm_firmware::linux::CMDLINE_ADDR;
use pcvm_firmware::multiboot::*;
use pcvm_firmware::Error;

fn header(flags: u32, addrs: Option<[u32; 5]>) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&HEADER_MAGIC.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&(0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags)).to_le_bytes());
    if let Some(a) = addrs {
        for x in a {
            h.extend_from_slice(&x.to_le_bytes());
        }
    }
    h
}

/// An a.out-kludge kernel: 16 bytes of padding, the header, then code bytes.
fn aout_kernel() -> Vec<u8> {
    let base = 0x10_0000u32;
    let hdr_off = 16u32;
    let mut img = vec![0x90u8; 16];
    img.extend(header(
        FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_AOUT_KLUDGE,
        Some([base + hdr_off, base, 0, base + 0x3000, base + 0x40]),
    ));
    img.resize(0x100, 0xF4);
    img
}

fn rd32(mem: &GuestMemory, a: u64) -> u32 {
    let mut b = [0; 4];
    mem.read_phys(a, &mut b).unwrap();
    u32::from_le_bytes(b)
}

#[test]
fn aout_kludge_kernel_with_module() {
    let mem = GuestMemory::pc(32 << 20).unwrap();
    let img = aout_kernel();
    let map = pc_map(mem.layout());
    let module = vec![0xABu8; 5000];
    let boot = load_multiboot(&mem, &img, &[(&module, "initrd arg")], "quiet", &map).unwrap();
    let cpu = &boot.cpu;
    assert_eq!(cpu.gpr[gpr::RAX], 0x2BAD_B002);
    assert_eq!(cpu.gpr[gpr::RBX], INFO_ADDR);
    assert_eq!(cpu.rip, 0x10_0040);
    assert!(
        cpu.protected_mode() && cpu.cr0 & (1 << 31) == 0,
        "paging off"
    );
    assert!(cpu.seg(SegReg::Cs).db(), "32-bit code");
    assert_eq!(cpu.seg(SegReg::Cs).limit, 0xFFFF_FFFF);
    assert_eq!(cpu.rflags & (1 << 9), 0);
    // Image at load_addr; bss zeroed to bss_end_addr.
    assert_eq!(rd32(&mem, 0x10_0010), HEADER_MAGIC);
    assert_eq!(rd32(&mem, 0x10_2FFC), 0);
    assert_eq!(boot.kernel, (0x10_0000, 0x10_3000));
    // Information structure.
    let flags = rd32(&mem, INFO_ADDR);
    assert_eq!(
        flags & 0b10_0100_1101,
        0b10_0100_1101,
        "mem, cmdline, mods, mmap, name"
    );
    assert_eq!(rd32(&mem, INFO_ADDR + 4), 640);
    assert_eq!(rd32(&mem, INFO_ADDR + 8), (32 << 10) - 1024);
    assert_eq!(rd32(&mem, INFO_ADDR + 16), CMDLINE_ADDR as u32);
    assert_eq!(rd32(&mem, INFO_ADDR + 20), 1);
    let mods = u64::from(rd32(&mem, INFO_ADDR + 24));
    let (ms, me) = (rd32(&mem, mods), rd32(&mem, mods + 4));
    assert_eq!(ms % 4096, 0);
    assert!(ms >= 0x10_3000);
    assert_eq!(me - ms, 5000);
    assert_eq!(rd32(&mem, u64::from(ms)), 0xABAB_ABAB);
    let mut s = [0u8; 11];
    mem.read_phys(u64::from(rd32(&mem, mods + 8)), &mut s)
        .unwrap();
    assert_eq!(&s, b"initrd arg\0");
    // Memory map: one 24-byte entry per e820 entry, size field 20.
    let len = rd32(&mem, INFO_ADDR + 44);
    assert_eq!(len as usize, 24 * map.len());
    let mm = u64::from(rd32(&mem, INFO_ADDR + 48));
    assert_eq!(rd32(&mem, mm), 20);
    assert_eq!(rd32(&mem, mm + 20), 1);
}

/// A minimal ELF32 i386 executable with one PT_LOAD at 2 MiB.
fn elf_kernel() -> Vec<u8> {
    let mut img = vec![0u8; 0x200];
    img[0..4].copy_from_slice(b"\x7FELF");
    img[4] = 1;
    img[5] = 1;
    img[6] = 1;
    img[16..18].copy_from_slice(&2u16.to_le_bytes());
    img[18..20].copy_from_slice(&3u16.to_le_bytes());
    img[24..28].copy_from_slice(&0x20_0100u32.to_le_bytes()); // entry
    img[28..32].copy_from_slice(&52u32.to_le_bytes()); // phoff
    img[42..44].copy_from_slice(&32u16.to_le_bytes());
    img[44..46].copy_from_slice(&1u16.to_le_bytes());
    let ph = 52;
    img[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
    img[ph + 4..ph + 8].copy_from_slice(&0x100u32.to_le_bytes()); // offset
    img[ph + 12..ph + 16].copy_from_slice(&0x20_0000u32.to_le_bytes()); // paddr
    img[ph + 16..ph + 20].copy_from_slice(&0x100u32.to_le_bytes()); // filesz
    img[ph + 20..ph + 24].copy_from_slice(&0x1000u32.to_le_bytes()); // memsz
    let h = header(FLAG_MEMORY_INFO, None);
    img[0x100..0x100 + h.len()].copy_from_slice(&h);
    img[0x1F0] = 0xCC;
    img
}

#[test]
fn elf_kernel_is_loaded_by_program_headers() {
    let mem = GuestMemory::pc(32 << 20).unwrap();
    let boot = load_multiboot(&mem, &elf_kernel(), &[], "", &pc_map(mem.layout())).unwrap();
    assert_eq!(boot.cpu.rip, 0x20_0100);
    assert_eq!(rd32(&mem, 0x20_0000), HEADER_MAGIC);
    let mut b = [0u8; 1];
    mem.read_phys(0x20_00F0, &mut b).unwrap();
    assert_eq!(b[0], 0xCC);
    assert_eq!(rd32(&mem, INFO_ADDR) & (1 << 3), 0, "no modules");
}

#[test]
fn malformed_images_are_errors() {
    let mem = GuestMemory::pc(32 << 20).unwrap();
    let map = pc_map(mem.layout());
    let good = aout_kernel();
    let mut bad_sum = good.clone();
    bad_sum[24] ^= 1;
    let mut required = vec![0u8; 16];
    required.extend(header(1 << 5, None));
    let low = {
        let mut v = header(FLAG_AOUT_KLUDGE, Some([0x1000, 0x1000, 0, 0, 0x1000]));
        v.resize(64, 0);
        v
    };
    let past_end = {
        let mut v = header(
            FLAG_AOUT_KLUDGE,
            Some([0x10_0000, 0x10_0000, 0x20_0000, 0, 0x10_0000]),
        );
        v.resize(64, 0);
        v
    };
    let before_file = header(
        FLAG_AOUT_KLUDGE,
        Some([0x10_0000, 0x0F_0000, 0, 0, 0x10_0000]),
    );
    let mut elf_trunc = elf_kernel();
    elf_trunc.truncate(0x150);
    let mut elf_wrong = elf_kernel();
    elf_wrong[18] = 62; // x86-64
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("no header", vec![0u8; 10_000]),
        (
            "header after 8 KiB",
            [vec![0u8; 8192], header(0, None)].concat(),
        ),
        ("bad checksum", bad_sum),
        ("unknown required flag", required),
        ("truncated address fields", good[..24].to_vec()),
        ("load below 1 MiB", low),
        ("load past the file", past_end),
        ("load before the file", before_file),
        (
            "not ELF without flag 16",
            [header(0, None), vec![0; 64]].concat(),
        ),
        ("truncated ELF", elf_trunc),
        ("ELF for another machine", elf_wrong),
    ];
    for (what, img) in cases {
        match load_multiboot(&mem, &img, &[], "", &map) {
            Err(Error::KernelImage(_)) | Err(Error::KernelPlacement { .. }) => {}
            other => panic!("{what}: expected an error, got {other:?}"),
        }
    }
    let huge = vec![0u8; 32 << 20];
    assert!(load_multiboot(&mem, &good, &[(&huge, "")], "", &map).is_err());
    // Garbage with a valid header somewhere never panics.
    for seed in 0..200u32 {
        let mut v: Vec<u8> = (0..600u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97) >> 11) as u8)
            .collect();
        let h = header(
            FLAG_AOUT_KLUDGE,
            Some([
                seed.wrapping_mul(0x9E37),
                seed << 12,
                seed << 20,
                seed,
                seed,
            ]),
        );
        let at = (seed as usize * 4) % 500;
        v[at..at + h.len()].copy_from_slice(&h);
        let _ = load_multiboot(&mem, &v, &[], "", &map);
    }
}
