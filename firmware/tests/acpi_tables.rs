//! ACPI tables: a test-side BIOS-linker loader (as SeaBIOS's romfile_loader runs it) must
//! yield valid tables with correct pointers; direct placement must agree.

use pcvm_core::GuestMemory;
use pcvm_firmware::acpi::*;

/// Files the loader allocated: (name, address, bytes).
struct Placed {
    files: Vec<(String, u64, Vec<u8>)>,
}

impl Placed {
    fn file_mut(&mut self, name: &str) -> &mut (String, u64, Vec<u8>) {
        self.files
            .iter_mut()
            .find(|f| f.0 == name)
            .expect("allocated")
    }
    fn addr(&self, name: &str) -> u64 {
        self.files
            .iter()
            .find(|f| f.0 == name)
            .expect("allocated")
            .1
    }
}

fn cstr(b: &[u8]) -> String {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8(b[..n].to_vec()).unwrap()
}

/// Run a loader script the way SeaBIOS does: ALLOCATE copies the file to an aligned address
/// in its zone; ADD_POINTER adds the source's address; ADD_CHECKSUM subtracts the sum.
fn run_loader(script: &[u8], t: &AcpiTables) -> Placed {
    assert_eq!(script.len() % LOADER_ENTRY_SIZE, 0);
    let mut placed = Placed { files: Vec::new() };
    let mut high = 0x07F0_0000u64;
    let mut fseg = 0x000F_5000u64;
    for e in script.chunks(LOADER_ENTRY_SIZE) {
        let cmd = u32::from_le_bytes(e[0..4].try_into().unwrap());
        let a = &e[4..];
        match cmd {
            LOADER_ALLOCATE => {
                let name = cstr(&a[..56]);
                let align = u64::from(u32::from_le_bytes(a[56..60].try_into().unwrap()));
                let data = match name.as_str() {
                    TABLES_FILE => t.tables.clone(),
                    RSDP_FILE => t.rsdp.clone(),
                    other => panic!("unknown file {other}"),
                };
                let cursor = if a[60] == ZONE_FSEG {
                    &mut fseg
                } else {
                    &mut high
                };
                let addr = cursor.div_ceil(align) * align;
                *cursor = addr + data.len() as u64;
                placed.files.push((name, addr, data));
            }
            LOADER_ADD_POINTER => {
                let dest = cstr(&a[..56]);
                let src = cstr(&a[56..112]);
                let off = u32::from_le_bytes(a[112..116].try_into().unwrap()) as usize;
                let size = a[116] as usize;
                let src_addr = placed.addr(&src);
                let f = &mut placed.file_mut(&dest).2;
                let mut v = [0u8; 8];
                v[..size].copy_from_slice(&f[off..off + size]);
                let p = u64::from_le_bytes(v).wrapping_add(src_addr);
                f[off..off + size].copy_from_slice(&p.to_le_bytes()[..size]);
            }
            LOADER_ADD_CHECKSUM => {
                let file = cstr(&a[..56]);
                let off = u32::from_le_bytes(a[56..60].try_into().unwrap()) as usize;
                let start = u32::from_le_bytes(a[60..64].try_into().unwrap()) as usize;
                let len = u32::from_le_bytes(a[64..68].try_into().unwrap()) as usize;
                let f = &mut placed.file_mut(&file).2;
                let sum = byte_sum(&f[start..start + len]);
                f[off] = f[off].wrapping_sub(sum);
            }
            other => panic!("unexpected command {other}"),
        }
    }
    placed
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// A flat view of guest physical memory holding the placed files.
fn phys(files: &[(String, u64, Vec<u8>)], addr: u64, len: usize) -> &[u8] {
    for (_, base, data) in files {
        if addr >= *base && addr + len as u64 <= base + data.len() as u64 {
            let o = (addr - base) as usize;
            return &data[o..o + len];
        }
    }
    panic!("pointer {addr:#x}+{len} outside every placed file");
}

/// Check an SDT at `addr`: signature, length within bounds, checksum zero; returns its bytes.
fn sdt<'a>(files: &'a [(String, u64, Vec<u8>)], addr: u64, sig: &[u8; 4]) -> &'a [u8] {
    let head = phys(files, addr, 36);
    assert_eq!(&head[0..4], sig, "signature at {addr:#x}");
    let len = u32_at(head, 4) as usize;
    let t = phys(files, addr, len);
    assert_eq!(byte_sum(t), 0, "{} checksum", String::from_utf8_lossy(sig));
    t
}

fn check_tree(files: &[(String, u64, Vec<u8>)], rsdp: &[u8], cfg: &AcpiConfig) {
    assert_eq!(&rsdp[0..8], b"RSD PTR ");
    assert_eq!(byte_sum(&rsdp[..20]), 0, "RSDP v1 checksum");
    assert_eq!(byte_sum(&rsdp[..36]), 0, "RSDP extended checksum");
    assert_eq!(rsdp[15], 2);
    let rsdt = sdt(files, u64::from(u32_at(rsdp, 16)), b"RSDT");
    let xsdt = sdt(files, u64_at(rsdp, 24), b"XSDT");
    let rsdt_ptrs: Vec<u64> = (36..rsdt.len())
        .step_by(4)
        .map(|o| u64::from(u32_at(rsdt, o)))
        .collect();
    let xsdt_ptrs: Vec<u64> = (36..xsdt.len())
        .step_by(8)
        .map(|o| u64_at(xsdt, o))
        .collect();
    assert_eq!(rsdt_ptrs, xsdt_ptrs);
    assert_eq!(xsdt_ptrs.len(), 3);
    let fadt = sdt(files, xsdt_ptrs[0], b"FACP");
    assert_eq!(fadt.len(), 244);
    let madt = sdt(files, xsdt_ptrs[1], b"APIC");
    sdt(files, xsdt_ptrs[2], b"HPET");
    // FADT: DSDT and X_DSDT agree, FACS found, PM ports and SCI as configured.
    let dsdt_addr = u64::from(u32_at(fadt, 40));
    assert_eq!(u64_at(fadt, 140), dsdt_addr);
    let dsdt = sdt(files, dsdt_addr, b"DSDT");
    let facs = phys(files, u64::from(u32_at(fadt, 36)), 64);
    assert_eq!(&facs[0..4], b"FACS");
    assert_eq!(u32_at(fadt, 36) % 64, 0, "FACS 64-byte aligned");
    assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), 9);
    assert_eq!(u32_at(fadt, 56), u32::from(cfg.pm_base));
    assert_eq!(u32_at(fadt, 64), u32::from(cfg.pm_base) + 4);
    assert_eq!(u32_at(fadt, 76), u32::from(cfg.pm_base) + 8);
    assert_eq!(
        u64_at(fadt, 212),
        u64::from(cfg.pm_base) + 8,
        "X_PM_TMR_BLK address"
    );
    assert_eq!(u64_at(fadt, 120), 0xCF9, "reset register");
    assert_eq!(fadt[128], 6);
    // MADT: LAPIC, IOAPIC at 0xFEC00000 GSI 0, IRQ0 → GSI2, IRQ9 level high.
    assert_eq!(u32_at(madt, 36), 0xFEE0_0000);
    let mut o = 44;
    let (mut lapics, mut ioapic, mut irq0, mut irq9, mut nmi) = (0, false, false, false, false);
    while o < madt.len() {
        let (ty, len) = (madt[o], madt[o + 1] as usize);
        assert!(len >= 2 && o + len <= madt.len());
        match ty {
            0 => lapics += 1,
            1 => ioapic = u32_at(madt, o + 4) == 0xFEC0_0000 && u32_at(madt, o + 8) == 0,
            2 if madt[o + 3] == 0 => irq0 = u32_at(madt, o + 4) == 2,
            2 if madt[o + 3] == 9 => {
                irq9 = u32_at(madt, o + 4) == 9
                    && u16::from_le_bytes([madt[o + 8], madt[o + 9]]) == 0xD
            }
            4 => nmi = madt[o + 5] == 1,
            _ => {}
        }
        o += len;
    }
    assert_eq!(lapics, 1);
    assert!(ioapic && irq0 && irq9 && nmi);
    // DSDT: the names that matter are in the AML.
    let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
    for n in [
        &b"_S5_"[..],
        b"PCI0",
        b"_PRT",
        b"_CRS",
        b"RTC_",
        b"KBD_",
        b"COM1",
        b"HPET",
    ] {
        assert!(has(n), "DSDT lacks {}", String::from_utf8_lossy(n));
    }
    assert!(
        has(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0, 0, 0, 0]),
        "\\_S5 = {{0,0,0,0}}"
    );
    assert!(
        has(&[0x08, b'_', b'H', b'I', b'D', 0x0C, 0x41, 0xD0, 0x0A, 0x03]),
        "PNP0A03"
    );
}

#[test]
fn loader_script_yields_valid_tables() {
    let cfg = AcpiConfig::pc(0x8000_0000);
    let t = AcpiTables::build(&cfg);
    let script = t.loader();
    // Every command names files that fit the 56-byte field.
    assert_eq!(&script[0..4], &LOADER_ALLOCATE.to_le_bytes());
    let placed = run_loader(&script, &t);
    let rsdp_addr = placed.addr(RSDP_FILE);
    assert!((0xE0000..0x100000).contains(&rsdp_addr) && rsdp_addr.is_multiple_of(16));
    let rsdp = placed
        .files
        .iter()
        .find(|f| f.0 == RSDP_FILE)
        .unwrap()
        .2
        .clone();
    check_tree(&placed.files, &rsdp, &cfg);
    // The relocation the direct path uses gives the same bytes.
    let (tables, rsdp2) = t.relocated(placed.addr(TABLES_FILE));
    assert_eq!(
        tables,
        placed.files.iter().find(|f| f.0 == TABLES_FILE).unwrap().2
    );
    assert_eq!(rsdp2, rsdp);
}

#[test]
fn direct_placement_in_guest_memory() {
    let mem = GuestMemory::pc(64 << 20).unwrap();
    let cfg = AcpiConfig::pc(64 << 20);
    let t = AcpiTables::build(&cfg);
    let base = 0x3F0_0000;
    t.place(&mem, base, 0x9_FC00).unwrap();
    let mut tables = vec![0u8; t.tables.len()];
    mem.read_phys(base, &mut tables).unwrap();
    let mut rsdp = vec![0u8; 36];
    mem.read_phys(0x9_FC00, &mut rsdp).unwrap();
    let files = vec![(TABLES_FILE.to_string(), base, tables)];
    check_tree(&files, &rsdp, &cfg);
}

#[test]
fn aml_encodings() {
    use pcvm_firmware::acpi::aml::*;
    assert_eq!(pkg_length(10), vec![11]);
    assert_eq!(pkg_length(62), vec![63]);
    // 63 content bytes + 2 length bytes = 65 = 0x41: low nibble 1 in byte 0, 0x04 next.
    assert_eq!(pkg_length(63), vec![0x41, 0x04]);
    assert_eq!(
        pkg_length(5000),
        vec![
            0x80 | ((5003 & 0xF) as u8),
            (5003 >> 4) as u8,
            (5003 >> 12) as u8
        ]
    );
    assert_eq!(integer(0), vec![0]);
    assert_eq!(integer(0x1234), vec![0x0B, 0x34, 0x12]);
    assert_eq!(integer(0x1_0000_0000), vec![0x0E, 0, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(name_string("\\_SB_"), b"\\_SB_".to_vec());
    assert_eq!(name_string("\\_SB.PCI0"), b"\\\x2e_SB_PCI0".to_vec());
    assert_eq!(eisa_id("PNP0501"), vec![0x0C, 0x41, 0xD0, 0x05, 0x01]);
}
