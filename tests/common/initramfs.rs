//! Initramfs images built at test time: a cpio archive in the SVR4 "newc" format (the one the
//! kernel unpacks, Documentation/driver-api/early-userspace/buffer-format.rst), gzip-compressed,
//! holding a static busybox, an `/init` script and the device nodes a shell needs.

use std::io::Write as _;

/// The magic of a newc header (SVR4 portable ASCII without checksum).
pub const NEWC_MAGIC: &[u8; 6] = b"070701";
/// Fixed size of a newc header: the magic and 13 eight-digit hex fields.
pub const NEWC_HEADER_LEN: usize = 110;
/// The name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode` (POSIX `<sys/stat.h>`).
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFMT: u32 = 0o170000;

/// One archive member as read back by [`parse_newc`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpioEntry {
    pub name: String,
    pub mode: u32,
    pub nlink: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub data: Vec<u8>,
}

/// A newc archive being written; [`CpioWriter::finish`] appends the trailer.
#[derive(Debug, Default)]
pub struct CpioWriter {
    out: Vec<u8>,
    next_ino: u32,
}

/// Pad `v` with zeros to a multiple of 4 bytes (newc aligns names and data so).
fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

impl CpioWriter {
    pub fn new() -> Self {
        CpioWriter {
            out: Vec::new(),
            next_ino: 1,
        }
    }

    /// One member: header, NUL-terminated name, data, each padded to 4 bytes.
    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).expect("cpio member under 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("short name"),
            0, // check (only for "070702")
        ];
        self.out.extend_from_slice(NEWC_MAGIC);
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        pad4(&mut self.out);
        self.out.extend_from_slice(data);
        pad4(&mut self.out);
    }

    /// A directory (`path` without a leading slash, as the kernel's unpacker expects).
    pub fn dir(&mut self, path: &str) {
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, S_IFREG | (perm & 0o7777), 1, (0, 0), data);
    }

    /// A symbolic link to `target` (the target is the member's data).
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    /// A character device node `major:minor`.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[]);
    }

    /// The archive: the members, the trailer, zero-padded to a 512-byte block.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry(TRAILER, 0, 1, (0, 0), &[]);
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

fn hex_field(h: &[u8], i: usize) -> Result<u32, String> {
    let s = h
        .get(6 + 8 * i..6 + 8 * (i + 1))
        .ok_or("truncated header")?;
    let s = std::str::from_utf8(s).map_err(|_| "non-ASCII header field")?;
    u32::from_str_radix(s, 16).map_err(|e| format!("bad header field {s:?}: {e}"))
}

/// Read a newc archive back up to its trailer (what the kernel's unpacker accepts).
pub fn parse_newc(mut data: &[u8]) -> Result<Vec<CpioEntry>, String> {
    let mut entries = Vec::new();
    let start_len = data.len();
    loop {
        let offset = start_len - data.len();
        if !offset.is_multiple_of(4) {
            return Err(format!("member at {offset} is not 4-byte aligned"));
        }
        let h = data.get(..NEWC_HEADER_LEN).ok_or("truncated archive")?;
        if &h[..6] != NEWC_MAGIC {
            return Err(format!("bad magic at {offset}"));
        }
        let field = |i| hex_field(h, i);
        let mode = field(1)?;
        let nlink = field(4)?;
        let size = field(6)? as usize;
        let (rdev_major, rdev_minor) = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        let name_end = NEWC_HEADER_LEN + namesize;
        let name = data
            .get(NEWC_HEADER_LEN..name_end)
            .ok_or("truncated name")?;
        let name = name.strip_suffix(&[0]).ok_or("name not NUL-terminated")?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| "name not UTF-8")?;
        let data_start = name_end.next_multiple_of(4);
        let file = data
            .get(data_start..data_start + size)
            .ok_or("truncated data")?
            .to_vec();
        let next = (data_start + size).next_multiple_of(4);
        data = data.get(next..).ok_or("truncated padding")?;
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(CpioEntry {
            name,
            mode,
            nlink,
            rdev_major,
            rdev_minor,
            data: file,
        });
    }
}

/// gzip (RFC 1952) at the default level.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

/// The uncompressed busybox initramfs: `/bin/busybox` with `/bin/sh` linked to it, the
/// directories busybox's `--install -s` fills, mount points `/proc`, `/sys`, `/tmp`, `/dev`
/// with `console` (5:1), `null` (1:3) and `zero` (1:5), and `init` as `/init`.
pub fn busybox_cpio(busybox: &[u8], init: &str) -> Vec<u8> {
    let mut w = CpioWriter::new();
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "root",
    ] {
        w.dir(d);
    }
    w.char_device("dev/console", 0o600, 5, 1);
    w.char_device("dev/null", 0o666, 1, 3);
    w.char_device("dev/zero", 0o666, 1, 5);
    w.file("bin/busybox", 0o755, busybox);
    w.symlink("bin/sh", "busybox");
    w.file("init", 0o755, init.as_bytes());
    w.finish()
}

/// [`busybox_cpio`], gzip-compressed: what `-initrd` takes.
pub fn busybox_initramfs(busybox: &[u8], init: &str) -> Vec<u8> {
    gzip(&busybox_cpio(busybox, init))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn newc_round_trip_with_alignment_and_device_nodes() {
        let mut w = CpioWriter::new();
        w.dir("dev");
        w.char_device("dev/null", 0o666, 1, 3);
        w.file("a", 0o644, b"xyz"); // 3 bytes: data padding
        w.file("bcd", 0o755, b"12345678");
        w.symlink("bin/sh", "busybox");
        let archive = w.finish();
        assert_eq!(archive.len() % 512, 0);
        assert_eq!(&archive[..6], b"070701");
        // The first header: inode 1, directory 0755, namesize 4 ("dev\0").
        assert_eq!(&archive[6..14], b"00000001");
        assert_eq!(&archive[14..22], b"000041ED");
        assert_eq!(&archive[94..102], b"00000004");
        let e = parse_newc(&archive).unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["dev", "dev/null", "a", "bcd", "bin/sh"]);
        assert_eq!(e[0].mode & S_IFMT, S_IFDIR);
        assert_eq!(e[1].mode, S_IFCHR | 0o666);
        assert_eq!((e[1].rdev_major, e[1].rdev_minor), (1, 3));
        assert_eq!(e[2].data, b"xyz");
        assert_eq!(e[3].data, b"12345678");
        assert_eq!(e[4].mode & S_IFMT, S_IFLNK);
        assert_eq!(e[4].data, b"busybox");
        // The trailer follows, and nothing after it but padding.
        let t = archive
            .windows(TRAILER.len())
            .position(|w| w == TRAILER.as_bytes())
            .unwrap();
        assert!(archive[t + TRAILER.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn parse_rejects_corruption() {
        let mut w = CpioWriter::new();
        w.file("f", 0o644, b"data");
        let mut archive = w.finish();
        assert!(parse_newc(&archive[..50]).is_err());
        archive[3] = b'9';
        assert!(parse_newc(&archive).is_err());
    }

    #[test]
    fn busybox_initramfs_has_init_devices_and_gunzips() {
        let gz = busybox_initramfs(b"\x7fELF fake busybox", "#!/bin/busybox sh\necho hi\n");
        let mut cpio = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut cpio)
            .unwrap();
        let e = parse_newc(&cpio).unwrap();
        let find = |n: &str| {
            e.iter()
                .find(|x| x.name == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        assert_eq!(find("init").data, b"#!/bin/busybox sh\necho hi\n");
        assert_eq!(find("init").mode, S_IFREG | 0o755);
        assert_eq!(find("bin/busybox").data, b"\x7fELF fake busybox");
        for (dev, major, minor) in [
            ("dev/console", 5, 1),
            ("dev/null", 1, 3),
            ("dev/zero", 1, 5),
        ] {
            let d = find(dev);
            assert_eq!(d.mode & S_IFMT, S_IFCHR, "{dev}");
            assert_eq!((d.rdev_major, d.rdev_minor), (major, minor), "{dev}");
        }
        for dir in ["proc", "sys", "tmp", "bin", "sbin", "usr/bin", "usr/sbin"] {
            assert_eq!(find(dir).mode & S_IFMT, S_IFDIR, "{dir}");
        }
    }
}
