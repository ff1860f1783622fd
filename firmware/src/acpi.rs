//! ACPI tables for the pcvm PC (ACPI 6.4 ch. 5): RSDP, RSDT, XSDT, FADT (with FACS), MADT,
//! HPET and a DSDT whose AML is built here by a small encoder ([`aml`]).
//!
//! Two deliveries:
//! - through fw_cfg as QEMU does ([`AcpiTables::loader`]): `etc/acpi/tables` holds every table
//!   with pointers relative to its own start, `etc/acpi/rsdp` the RSDP, and `etc/table-loader`
//!   the BIOS-linker script (128-byte ALLOCATE / ADD_POINTER / ADD_CHECKSUM commands) that the
//!   firmware runs to place them, relocate the pointers and fix the checksums;
//! - placed directly in guest memory for direct kernel boot ([`AcpiTables::place`]).
//!
//! The hardware described is what `pcvm-devices` models: the PIIX4 PM block at
//! [`AcpiConfig::pm_base`] (SCI on IRQ 9, reset through 0xCF9 ← 6, S5 = SLP_TYP 0), one CPU's
//! local APIC, the I/O APIC at 0xFEC00000 (GSI base 0, ISA IRQ0 on GSI 2), the HPET at
//! 0xFED00000, and PCI INTx routed by the PIIX3 PIRQs as SeaBIOS programs them (A–D → 10, 10,
//! 11, 11), announced as static GSIs in `_PRT`.

use pcvm_core::GuestMemory;

use crate::{Error, Result};

/// OEM ID in every header.
pub const OEM_ID: &[u8; 6] = b"PCVM  ";
/// OEM table ID in every header.
pub const OEM_TABLE_ID: &[u8; 8] = b"PCVMPC  ";
/// fw_cfg file with the tables.
pub const TABLES_FILE: &str = "etc/acpi/tables";
/// fw_cfg file with the RSDP.
pub const RSDP_FILE: &str = "etc/acpi/rsdp";
/// fw_cfg file with the linker/loader script.
pub const LOADER_FILE: &str = "etc/table-loader";
/// Loader command: allocate and load a file.
pub const LOADER_ALLOCATE: u32 = 1;
/// Loader command: add a file's address to a pointer in another file.
pub const LOADER_ADD_POINTER: u32 = 2;
/// Loader command: fix up a checksum byte.
pub const LOADER_ADD_CHECKSUM: u32 = 3;
/// Allocation zone: anywhere in high memory.
pub const ZONE_HIGH: u8 = 1;
/// Allocation zone: the F segment (below 1 MiB), where the RSDP must be found.
pub const ZONE_FSEG: u8 = 2;
/// Size of one loader command.
pub const LOADER_ENTRY_SIZE: usize = 128;
/// Longest fw_cfg file name in a loader command, including its NUL.
const LOADER_FILESZ: usize = 56;

/// What the tables describe.
#[derive(Clone, Debug)]
pub struct AcpiConfig {
    /// PIIX4 PM I/O base (PM1a_EVT; PM1a_CNT at + 4, PM timer at + 8, GPE0 at + 0x0C).
    pub pm_base: u16,
    /// SCI interrupt (ISA IRQ / GSI).
    pub sci_irq: u8,
    /// Local APIC address.
    pub lapic_addr: u32,
    /// I/O APIC address.
    pub ioapic_addr: u32,
    /// HPET address, if there is one.
    pub hpet_addr: Option<u32>,
    /// First address of the 32-bit PCI memory window (the end of low RAM).
    pub pci_mem_start: u32,
    /// Last address + 1 of the 32-bit PCI memory window.
    pub pci_mem_end: u32,
    /// PCI INTx GSI of PIRQA–D.
    pub pirq_gsi: [u8; 4],
    /// PCI slots with devices (for `_PRT`).
    pub pci_slots: u8,
}

impl AcpiConfig {
    /// The pcvm PC with `below_4g` bytes of low RAM.
    pub fn pc(below_4g: u64) -> Self {
        AcpiConfig {
            pm_base: 0x600,
            sci_irq: 9,
            lapic_addr: 0xFEE0_0000,
            ioapic_addr: 0xFEC0_0000,
            hpet_addr: Some(0xFED0_0000),
            pci_mem_start: below_4g.min(0xFEC0_0000) as u32,
            pci_mem_end: 0xFEC0_0000,
            pirq_gsi: [10, 10, 11, 11],
            pci_slots: 32,
        }
    }
}

/// A pointer field to fix up: in `table_offset` (within the tables blob) of `size` bytes,
/// pointing into the tables blob (or, for RSDP fields, from the RSDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pointer {
    /// Offset of the field (in the tables blob, or in the RSDP if `in_rsdp`).
    pub offset: u32,
    /// Field width (4 or 8).
    pub size: u8,
    /// The field is in the RSDP.
    pub in_rsdp: bool,
}

/// A checksum byte and the range it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checksum {
    /// Offset of the checksum byte.
    pub offset: u32,
    /// Start of the range.
    pub start: u32,
    /// Length of the range.
    pub length: u32,
    /// In the RSDP rather than the tables blob.
    pub in_rsdp: bool,
}

/// The built tables, unrelocated: pointers hold offsets into [`AcpiTables::tables`] and
/// checksum bytes are zero.
#[derive(Clone, Debug)]
pub struct AcpiTables {
    /// Every table but the RSDP, 64-byte aligned where needed (FACS first).
    pub tables: Vec<u8>,
    /// The 36-byte ACPI 2.0 RSDP.
    pub rsdp: Vec<u8>,
    /// Pointer fields.
    pub pointers: Vec<Pointer>,
    /// Checksum fields.
    pub checksums: Vec<Checksum>,
    /// Offsets of the tables by signature (for tests and debugging).
    pub offsets: Vec<([u8; 4], u32)>,
}

/// Sum of bytes, wrapping.
pub fn byte_sum(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

/// A standard 36-byte SDT header with length and checksum left zero.
fn sdt_header(signature: &[u8; 4], revision: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(36);
    h.extend_from_slice(signature);
    h.extend_from_slice(&[0; 4]);
    h.push(revision);
    h.push(0);
    h.extend_from_slice(OEM_ID);
    h.extend_from_slice(OEM_TABLE_ID);
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(b"PCVM");
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

/// A Generic Address Structure (ACPI 6.4 §5.2.3.2).
fn gas(space: u8, bit_width: u8, access_size: u8, address: u64) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = space;
    g[1] = bit_width;
    g[2] = 0;
    g[3] = access_size;
    g[4..12].copy_from_slice(&address.to_le_bytes());
    g
}

fn put_u16(v: &mut [u8], off: usize, x: u16) {
    v[off..off + 2].copy_from_slice(&x.to_le_bytes());
}
fn put_u32(v: &mut [u8], off: usize, x: u32) {
    v[off..off + 4].copy_from_slice(&x.to_le_bytes());
}
fn put_u64(v: &mut [u8], off: usize, x: u64) {
    v[off..off + 8].copy_from_slice(&x.to_le_bytes());
}

/// Accumulates tables into the blob.
struct Builder {
    blob: Vec<u8>,
    pointers: Vec<Pointer>,
    checksums: Vec<Checksum>,
    offsets: Vec<([u8; 4], u32)>,
}

impl Builder {
    /// Append an SDT (header included), fixing its length and recording its checksum.
    fn add_sdt(&mut self, mut table: Vec<u8>) -> u32 {
        let len = table.len() as u32;
        put_u32(&mut table, 4, len);
        let off = self.blob.len() as u32;
        let sig = [table[0], table[1], table[2], table[3]];
        self.blob.extend_from_slice(&table);
        self.checksums.push(Checksum {
            offset: off + 9,
            start: off,
            length: len,
            in_rsdp: false,
        });
        self.offsets.push((sig, off));
        off
    }

    /// Write a pointer to `target` (a blob offset) at `at` and record it.
    fn pointer(&mut self, at: u32, size: u8, target: u32) {
        let a = at as usize;
        if size == 8 {
            put_u64(&mut self.blob, a, u64::from(target));
        } else {
            put_u32(&mut self.blob, a, target);
        }
        self.pointers.push(Pointer {
            offset: at,
            size,
            in_rsdp: false,
        });
    }
}

impl AcpiTables {
    /// Build the tables for `cfg`.
    pub fn build(cfg: &AcpiConfig) -> AcpiTables {
        let mut b = Builder {
            blob: Vec::new(),
            pointers: Vec::new(),
            checksums: Vec::new(),
            offsets: Vec::new(),
        };

        // FACS (ACPI 6.4 §5.2.10): 64 bytes, 64-byte aligned, no checksum.
        let facs_off = b.blob.len() as u32;
        let mut facs = vec![0u8; 64];
        facs[0..4].copy_from_slice(b"FACS");
        put_u32(&mut facs, 4, 64);
        facs[32] = 2; // version
        b.blob.extend_from_slice(&facs);
        b.offsets.push((*b"FACS", facs_off));

        let dsdt_off = b.add_sdt(build_dsdt(cfg));

        // FADT revision 3 layout, 244 bytes (ACPI 6.4 Table 5.9).
        let mut f = sdt_header(b"FACP", 3);
        f.resize(244, 0);
        f[45] = 0; // preferred PM profile: unspecified
        put_u16(&mut f, 46, u16::from(cfg.sci_irq));
        // SMI_CMD 0: always in ACPI mode (the PM block resets with SCI_EN set).
        let pm = u32::from(cfg.pm_base);
        put_u32(&mut f, 56, pm); // PM1a_EVT_BLK
        put_u32(&mut f, 64, pm + 4); // PM1a_CNT_BLK
        put_u32(&mut f, 76, pm + 8); // PM_TMR_BLK
        put_u32(&mut f, 80, pm + 0x0C); // GPE0_BLK
        f[88] = 4; // PM1_EVT_LEN
        f[89] = 2; // PM1_CNT_LEN
        f[91] = 4; // PM_TMR_LEN
        f[92] = 4; // GPE0_BLK_LEN
        put_u16(&mut f, 96, 0x0FFF); // P_LVL2_LAT: C2 unsupported
        put_u16(&mut f, 98, 0x0FFF); // P_LVL3_LAT: C3 unsupported
        f[108] = 0x32; // CENTURY CMOS index
        put_u16(&mut f, 109, 0b11); // IAPC_BOOT_ARCH: legacy devices, 8042
        let flags: u32 = (1 << 0) // WBINVD
            | (1 << 2) // PROC_C1
            | (1 << 5) // SLP_BUTTON: no fixed sleep button
            | (1 << 6) // FIX_RTC
            | (1 << 10) // RESET_REG_SUP
            | (1 << 15); // USE_PLATFORM_CLOCK
        put_u32(&mut f, 112, flags);
        f[116..128].copy_from_slice(&gas(1, 8, 1, 0xCF9)); // RESET_REG
        f[128] = 6; // RESET_VALUE: hard reset through the PIIX3 reset control
        f[148..160].copy_from_slice(&gas(1, 32, 2, u64::from(pm)));
        f[172..184].copy_from_slice(&gas(1, 16, 2, u64::from(pm + 4)));
        f[208..220].copy_from_slice(&gas(1, 32, 3, u64::from(pm + 8)));
        f[220..232].copy_from_slice(&gas(1, 32, 1, u64::from(pm + 0x0C)));
        let fadt_off = b.add_sdt(f);
        b.pointer(fadt_off + 36, 4, facs_off); // FIRMWARE_CTRL
        b.pointer(fadt_off + 40, 4, dsdt_off); // DSDT
        b.pointer(fadt_off + 140, 8, dsdt_off); // X_DSDT

        // MADT (ACPI 6.4 §5.2.12).
        let mut m = sdt_header(b"APIC", 3);
        m.extend_from_slice(&cfg.lapic_addr.to_le_bytes());
        m.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: 8259s present
        m.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // processor 0, APIC 0, enabled
        m.extend_from_slice(&[1, 12, 0, 0]); // I/O APIC ID 0
        m.extend_from_slice(&cfg.ioapic_addr.to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes()); // GSI base
        let iso = |m: &mut Vec<u8>, irq: u8, gsi: u32, flags: u16| {
            m.extend_from_slice(&[2, 10, 0, irq]);
            m.extend_from_slice(&gsi.to_le_bytes());
            m.extend_from_slice(&flags.to_le_bytes());
        };
        iso(&mut m, 0, 2, 0); // ISA IRQ0 → GSI 2, bus conforming
        let mut level_irqs = vec![cfg.sci_irq];
        for &g in &cfg.pirq_gsi {
            if !level_irqs.contains(&g) {
                level_irqs.push(g);
            }
        }
        for irq in level_irqs {
            iso(&mut m, irq, u32::from(irq), 0x000D); // active high, level
        }
        m.extend_from_slice(&[4, 6, 0xFF, 0, 0, 1]); // LINT1 is NMI on all processors
        let madt_off = b.add_sdt(m);

        let mut tables = vec![fadt_off, madt_off];
        if let Some(addr) = cfg.hpet_addr {
            // HPET description table (IA-PC HPET spec 1.0a §3.2.4).
            let mut h = sdt_header(b"HPET", 1);
            h.extend_from_slice(&0x8086_A201u32.to_le_bytes());
            h.extend_from_slice(&gas(0, 64, 0, u64::from(addr)));
            h.push(0); // HPET number
            h.extend_from_slice(&0x0080u16.to_le_bytes()); // minimum tick
            h.push(0); // page protection
            tables.push(b.add_sdt(h));
        }

        let mut r = sdt_header(b"RSDT", 1);
        let rsdt_entries = r.len();
        r.resize(rsdt_entries + 4 * tables.len(), 0);
        let rsdt_off = b.add_sdt(r);
        for (i, &t) in tables.iter().enumerate() {
            b.pointer(rsdt_off + rsdt_entries as u32 + 4 * i as u32, 4, t);
        }
        let mut x = sdt_header(b"XSDT", 1);
        x.resize(rsdt_entries + 8 * tables.len(), 0);
        let xsdt_off = b.add_sdt(x);
        for (i, &t) in tables.iter().enumerate() {
            b.pointer(xsdt_off + rsdt_entries as u32 + 8 * i as u32, 8, t);
        }

        // RSDP (ACPI 6.4 §5.2.5.3).
        let mut rsdp = vec![0u8; 36];
        rsdp[0..8].copy_from_slice(b"RSD PTR ");
        rsdp[9..15].copy_from_slice(OEM_ID);
        rsdp[15] = 2;
        put_u32(&mut rsdp, 16, rsdt_off);
        put_u32(&mut rsdp, 20, 36);
        put_u64(&mut rsdp, 24, u64::from(xsdt_off));
        b.pointers.push(Pointer {
            offset: 16,
            size: 4,
            in_rsdp: true,
        });
        b.pointers.push(Pointer {
            offset: 24,
            size: 8,
            in_rsdp: true,
        });
        b.checksums.push(Checksum {
            offset: 8,
            start: 0,
            length: 20,
            in_rsdp: true,
        });
        b.checksums.push(Checksum {
            offset: 32,
            start: 0,
            length: 36,
            in_rsdp: true,
        });

        AcpiTables {
            tables: b.blob,
            rsdp,
            pointers: b.pointers,
            checksums: b.checksums,
            offsets: b.offsets,
        }
    }

    /// The offset of the table with `signature` in [`AcpiTables::tables`].
    pub fn offset_of(&self, signature: &[u8; 4]) -> Option<u32> {
        self.offsets
            .iter()
            .find(|(s, _)| s == signature)
            .map(|&(_, o)| o)
    }

    /// The QEMU BIOS-linker script: allocate the tables (high, 64-byte aligned) and the RSDP
    /// (F segment, 16-byte aligned), add the tables' address to every pointer, then fix every
    /// checksum (after the pointers it covers).
    pub fn loader(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut entry = |cmd: u32, fill: &dyn Fn(&mut [u8])| {
            let mut e = [0u8; LOADER_ENTRY_SIZE];
            e[0..4].copy_from_slice(&cmd.to_le_bytes());
            fill(&mut e[4..]);
            out.extend_from_slice(&e);
        };
        let name = |buf: &mut [u8], name: &str| {
            let n = name.len().min(LOADER_FILESZ - 1);
            buf[..n].copy_from_slice(&name.as_bytes()[..n]);
        };
        entry(LOADER_ALLOCATE, &|e| {
            name(&mut e[..LOADER_FILESZ], TABLES_FILE);
            e[56..60].copy_from_slice(&64u32.to_le_bytes());
            e[60] = ZONE_HIGH;
        });
        entry(LOADER_ALLOCATE, &|e| {
            name(&mut e[..LOADER_FILESZ], RSDP_FILE);
            e[56..60].copy_from_slice(&16u32.to_le_bytes());
            e[60] = ZONE_FSEG;
        });
        for p in &self.pointers {
            entry(LOADER_ADD_POINTER, &|e| {
                let dest = if p.in_rsdp { RSDP_FILE } else { TABLES_FILE };
                name(&mut e[..LOADER_FILESZ], dest);
                name(&mut e[LOADER_FILESZ..2 * LOADER_FILESZ], TABLES_FILE);
                e[112..116].copy_from_slice(&p.offset.to_le_bytes());
                e[116] = p.size;
            });
        }
        for c in &self.checksums {
            entry(LOADER_ADD_CHECKSUM, &|e| {
                let file = if c.in_rsdp { RSDP_FILE } else { TABLES_FILE };
                name(&mut e[..LOADER_FILESZ], file);
                e[56..60].copy_from_slice(&c.offset.to_le_bytes());
                e[60..64].copy_from_slice(&c.start.to_le_bytes());
                e[64..68].copy_from_slice(&c.length.to_le_bytes());
            });
        }
        out
    }

    /// The tables and RSDP relocated for `tables_addr`, with checksums fixed.
    pub fn relocated(&self, tables_addr: u64) -> (Vec<u8>, Vec<u8>) {
        let mut tables = self.tables.clone();
        let mut rsdp = self.rsdp.clone();
        for p in &self.pointers {
            let buf = if p.in_rsdp { &mut rsdp } else { &mut tables };
            let o = p.offset as usize;
            if p.size == 8 {
                let mut v = [0u8; 8];
                v.copy_from_slice(&buf[o..o + 8]);
                put_u64(buf, o, u64::from_le_bytes(v).wrapping_add(tables_addr));
            } else {
                let mut v = [0u8; 4];
                v.copy_from_slice(&buf[o..o + 4]);
                put_u32(
                    buf,
                    o,
                    u32::from_le_bytes(v).wrapping_add(tables_addr as u32),
                );
            }
        }
        for c in &self.checksums {
            let buf = if c.in_rsdp { &mut rsdp } else { &mut tables };
            let (o, s, l) = (c.offset as usize, c.start as usize, c.length as usize);
            buf[o] = 0;
            buf[o] = 0u8.wrapping_sub(byte_sum(&buf[s..s + l]));
        }
        (tables, rsdp)
    }

    /// Place the tables at `tables_addr` and the RSDP at `rsdp_addr` (16-byte aligned, in
    /// 0xE0000–0xFFFFF or the first KiB of the EBDA, ACPI 6.4 §5.2.5.1) for direct boot.
    pub fn place(&self, memory: &GuestMemory, tables_addr: u64, rsdp_addr: u64) -> Result<()> {
        let (tables, rsdp) = self.relocated(tables_addr);
        let map = |source| Error::Map {
            what: "ACPI tables",
            source,
        };
        memory.write_phys(tables_addr, &tables).map_err(map)?;
        memory.write_phys(rsdp_addr, &rsdp).map_err(map)?;
        Ok(())
    }
}

/// The DSDT: `\_S5`, the PCI root with its resources and `_PRT`, and the ISA devices.
fn build_dsdt(cfg: &AcpiConfig) -> Vec<u8> {
    use aml::*;
    let mut body = Vec::new();
    // \_S5: SLP_TYP 0 for PM1a and PM1b (devices::acpi_pm::SLP_TYP_S5).
    body.extend(name(
        "_S5_",
        package(&[integer(0), integer(0), integer(0), integer(0)]),
    ));

    // PCI root resources (ACPI 6.4 §6.4): bus 0–255, config ports, I/O and memory windows.
    let mut crs = Vec::new();
    crs.extend(word_bus_number(0, 0xFF));
    crs.extend(io_port(0xCF8, 8));
    crs.extend(word_io(0x0000, 0x0CF7));
    crs.extend(word_io(0x0D00, 0xFFFF));
    crs.extend(dword_memory(0x000A_0000, 0x000B_FFFF));
    if cfg.pci_mem_end > cfg.pci_mem_start {
        crs.extend(dword_memory(cfg.pci_mem_start, cfg.pci_mem_end - 1));
    }
    crs.extend(end_tag());

    let mut prt = Vec::new();
    for slot in 1..u32::from(cfg.pci_slots) {
        for pin in 0..4u32 {
            let pirq = ((pin + slot) & 3) as usize;
            prt.push(package(&[
                integer(u64::from(slot << 16 | 0xFFFF)),
                integer(u64::from(pin)),
                integer(0),
                integer(u64::from(cfg.pirq_gsi[pirq])),
            ]));
        }
    }

    let mut isa = Vec::new();
    isa.extend(name("_ADR", integer(0x0001_0000)));
    let mut rtc = Vec::new();
    rtc.extend(name("_HID", eisa_id("PNP0B00")));
    rtc.extend(name(
        "_CRS",
        buffer(&[io_port(0x70, 8), irq_no_flags(8), end_tag()].concat()),
    ));
    isa.extend(device("RTC_", &rtc));
    let mut kbd = Vec::new();
    kbd.extend(name("_HID", eisa_id("PNP0303")));
    kbd.extend(name(
        "_CRS",
        buffer(
            &[
                io_port(0x60, 1),
                io_port(0x64, 1),
                irq_no_flags(1),
                end_tag(),
            ]
            .concat(),
        ),
    ));
    isa.extend(device("KBD_", &kbd));
    let mut com1 = Vec::new();
    com1.extend(name("_HID", eisa_id("PNP0501")));
    com1.extend(name("_UID", integer(1)));
    com1.extend(name(
        "_CRS",
        buffer(&[io_port(0x3F8, 8), irq_no_flags(4), end_tag()].concat()),
    ));
    isa.extend(device("COM1", &com1));

    let mut pci0 = Vec::new();
    pci0.extend(name("_HID", eisa_id("PNP0A03")));
    pci0.extend(name("_ADR", integer(0)));
    pci0.extend(name("_UID", integer(0)));
    pci0.extend(name("_BBN", integer(0)));
    pci0.extend(name("_CRS", buffer(&crs)));
    pci0.extend(name("_PRT", package(&prt)));
    pci0.extend(device("ISA_", &isa));
    if let Some(addr) = cfg.hpet_addr {
        let mut hpet = Vec::new();
        hpet.extend(name("_HID", eisa_id("PNP0103")));
        hpet.extend(name("_UID", integer(0)));
        hpet.extend(name(
            "_CRS",
            buffer(&[memory32_fixed(addr, 0x400), end_tag()].concat()),
        ));
        pci0.extend(device("HPET", &hpet));
    }
    body.extend(scope("\\_SB_", &device("PCI0", &pci0)));

    let mut t = sdt_header(b"DSDT", 2);
    t.extend(body);
    t
}

/// A minimal AML encoder (ACPI 6.4 ch. 20) for the few constructs the DSDT needs.
pub mod aml {
    /// PkgLength encoding of a package whose content is `len` bytes (§20.2.4).
    pub fn pkg_length(len: usize) -> Vec<u8> {
        if len < 0x3F {
            return vec![(len + 1) as u8];
        }
        let (n, total) = if len + 2 < (1 << 12) {
            (2, len + 2)
        } else if len + 3 < (1 << 20) {
            (3, len + 3)
        } else {
            (4, len + 4)
        };
        let mut out = vec![((n - 1) << 6) as u8 | (total & 0xF) as u8];
        for i in 0..n - 1 {
            out.push((total >> (4 + 8 * i)) as u8);
        }
        out
    }

    /// A NameString: a 4-character segment, or a rooted path `\\XXXX` (`_`-padded).
    pub fn name_string(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = s;
        if let Some(r) = rest.strip_prefix('\\') {
            out.push(b'\\');
            rest = r;
        }
        let segs: Vec<&str> = rest.split('.').filter(|x| !x.is_empty()).collect();
        match segs.len() {
            0 => out.push(0),
            1 => {}
            2 => out.push(0x2E),
            n => {
                out.push(0x2F);
                out.push(n as u8);
            }
        }
        for seg in segs {
            let mut b = [b'_'; 4];
            for (i, c) in seg.bytes().take(4).enumerate() {
                b[i] = c;
            }
            out.extend_from_slice(&b);
        }
        out
    }

    /// An integer constant in its shortest encoding (§20.2.3).
    pub fn integer(v: u64) -> Vec<u8> {
        match v {
            0 => vec![0x00],
            1 => vec![0x01],
            2..=0xFF => vec![0x0A, v as u8],
            0x100..=0xFFFF => [&[0x0B][..], &(v as u16).to_le_bytes()].concat(),
            0x1_0000..=0xFFFF_FFFF => [&[0x0C][..], &(v as u32).to_le_bytes()].concat(),
            _ => [&[0x0E][..], &v.to_le_bytes()].concat(),
        }
    }

    /// A compressed EISA ID ("PNP0A03") as a DWord constant.
    pub fn eisa_id(id: &str) -> Vec<u8> {
        let b = id.as_bytes();
        let c = |i: usize| u32::from(b.get(i).copied().unwrap_or(b'@').wrapping_sub(0x40) & 0x1F);
        let hex = |i: usize| {
            b.get(i)
                .and_then(|&x| (x as char).to_digit(16))
                .unwrap_or(0)
        };
        let vendor = (c(0) << 10) | (c(1) << 5) | c(2);
        let product = (hex(3) << 12) | (hex(4) << 8) | (hex(5) << 4) | hex(6);
        let bytes = [
            (vendor >> 8) as u8,
            vendor as u8,
            (product >> 8) as u8,
            product as u8,
        ];
        [&[0x0C][..], &bytes[..]].concat()
    }

    /// `Name(name, value)`.
    pub fn name(n: &str, value: Vec<u8>) -> Vec<u8> {
        [vec![0x08], name_string(n), value].concat()
    }

    /// `Package() { elements }`.
    pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
        let mut content = vec![elements.len().min(255) as u8];
        for e in elements {
            content.extend_from_slice(e);
        }
        [vec![0x12], pkg_length(content.len()), content].concat()
    }

    /// `Buffer() { bytes }`.
    pub fn buffer(bytes: &[u8]) -> Vec<u8> {
        let content = [integer(bytes.len() as u64), bytes.to_vec()].concat();
        [vec![0x11], pkg_length(content.len()), content].concat()
    }

    /// `Scope(name) { body }`.
    pub fn scope(n: &str, body: &[u8]) -> Vec<u8> {
        let content = [name_string(n), body.to_vec()].concat();
        [vec![0x10], pkg_length(content.len()), content].concat()
    }

    /// `Device(name) { body }`.
    pub fn device(n: &str, body: &[u8]) -> Vec<u8> {
        let content = [name_string(n), body.to_vec()].concat();
        [vec![0x5B, 0x82], pkg_length(content.len()), content].concat()
    }

    /// Resource template: I/O port descriptor, 16-bit decode (§6.4.2.5).
    pub fn io_port(base: u16, len: u8) -> Vec<u8> {
        let b = base.to_le_bytes();
        vec![0x47, 0x01, b[0], b[1], b[0], b[1], 0x01, len]
    }

    /// Resource template: IRQ descriptor without flags (edge, active high) (§6.4.2.1).
    pub fn irq_no_flags(irq: u8) -> Vec<u8> {
        let m = (1u16 << (irq & 15)).to_le_bytes();
        vec![0x22, m[0], m[1]]
    }

    /// Resource template: fixed 32-bit memory range, read/write (§6.4.3.4).
    pub fn memory32_fixed(base: u32, len: u32) -> Vec<u8> {
        [
            &[0x86, 0x09, 0x00, 0x01][..],
            &base.to_le_bytes(),
            &len.to_le_bytes(),
        ]
        .concat()
    }

    /// Word address space descriptor (§6.4.3.5.3) of `kind` (1 I/O, 2 bus) over min..=max.
    fn word_space(kind: u8, type_flags: u8, min: u16, max: u16) -> Vec<u8> {
        let len = max.wrapping_sub(min).wrapping_add(1);
        let mut v = vec![0x88, 0x0D, 0x00, kind, 0x0C, type_flags];
        for x in [0u16, min, max, 0, len] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }

    /// Bus number range producer.
    pub fn word_bus_number(min: u16, max: u16) -> Vec<u8> {
        word_space(2, 0, min, max)
    }

    /// I/O range producer (entire range).
    pub fn word_io(min: u16, max: u16) -> Vec<u8> {
        word_space(1, 3, min, max)
    }

    /// DWord memory range producer, cacheable read/write (§6.4.3.5.2).
    pub fn dword_memory(min: u32, max: u32) -> Vec<u8> {
        let len = max.wrapping_sub(min).wrapping_add(1);
        let mut v = vec![0x87, 0x17, 0x00, 0x00, 0x0C, 0x03];
        for x in [0u32, min, max, 0, len] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }

    /// End tag with a zero checksum ("treat as correct").
    pub fn end_tag() -> Vec<u8> {
        vec![0x79, 0x00]
    }
}
