//! Untrusted image files through every firmware loader: a BIOS image (as given, and padded
//! to 64 KiB so the reset-vector check and the mapping run), an option ROM, a bzImage, a PVH
//! ELF and a multiboot kernel. Errors are the expected answer to garbage; panics are bugs.
//! Whatever a loader accepts must stay inside guest RAM and name a kernel range it wrote.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pcvm_core::GuestMemory;
use pcvm_firmware::linux::{self, DirectBoot};
use pcvm_firmware::multiboot;
use pcvm_firmware::option_rom::OptionRom;
use pcvm_firmware::seabios::{BiosImage, MIN_BIOS_SIZE};

const RAM: u64 = 16 << 20;
const SOURCE: &str = "fuzz-input";

fn memory() -> GuestMemory {
    GuestMemory::pc(RAM).expect("16 MiB PC memory")
}

/// What any accepted direct boot must satisfy: kernel and initrd were written into RAM
/// below 4 GiB, so their ranges are ordered and end inside it.
fn check(boot: &DirectBoot, ram: u64) {
    let (start, end) = boot.kernel;
    assert!(start <= end, "kernel range {start:#x}..{end:#x} inverted");
    assert!(end <= ram, "kernel end {end:#x} past RAM {ram:#x}");
    if let Some((addr, size)) = boot.initrd {
        let initrd_end = addr.checked_add(size);
        assert!(
            initrd_end.is_some_and(|e| e <= ram),
            "initrd {addr:#x}+{size:#x} past RAM {ram:#x}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let source = Path::new(SOURCE);

    // BIOS image as given (almost always refused for its size) and padded to 64 KiB with the
    // input at the top, where the reset vector lives.
    if let Ok(bios) = BiosImage::from_bytes(data.to_vec(), source) {
        let mut mem = memory();
        let _ = bios.map(&mut mem);
    }
    if data.len() as u64 <= MIN_BIOS_SIZE {
        let mut padded = vec![0xFFu8; MIN_BIOS_SIZE as usize - data.len()];
        padded.extend_from_slice(data);
        if let Ok(bios) = BiosImage::from_bytes(padded, source) {
            assert_eq!(bios.len() as u64, MIN_BIOS_SIZE);
            let mut mem = memory();
            let _ = bios.map(&mut mem);
        }
    }

    // Option ROM (the VGA BIOS path).
    if let Ok(rom) = OptionRom::from_bytes(data.to_vec(), source) {
        let _ = rom.file_name();
        assert!(!rom.data().is_empty());
    }

    // bzImage with a small initrd, PVH ELF, multiboot with one module.
    let initrd = [0x5Au8; 512];
    let mem = memory();
    let ram = mem.layout().below_4g;
    if let Ok(boot) = linux::load_bzimage(&mem, data, Some(&initrd), "console=ttyS0") {
        check(&boot, ram);
    }
    let mem = memory();
    if let Ok(boot) = linux::load_pvh(&mem, data, Some(&initrd), "console=ttyS0") {
        check(&boot, ram);
    }
    let mem = memory();
    let _ = multiboot::find_header(data);
    let e820 = linux::direct_boot_e820(mem.layout());
    if let Ok(boot) =
        multiboot::load_multiboot(&mem, data, &[(&initrd[..], "module")], "kernel", &e820)
    {
        check(&boot, ram);
    }
});
