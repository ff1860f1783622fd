//! The Linux guest the boot tests and scripts/bench-linux share: the kernel command line and
//! the busybox `/init` script whose output tests/linux_boot.rs checks.

/// `/init` prints this first: the kernel reached user space.
pub const MARK_INIT: &str = "PCVM-INIT-REACHED";
/// `/init` prints this after its last check, just before powering off or rebooting.
pub const MARK_DONE: &str = "PCVM-CHECKS-DONE";
/// Numbers `seq` writes for the hash and gzip checks (about 1.3 MiB of text).
pub const SEQ_COUNT: u32 = 200_000;
/// MiB of /dev/zero hashed.
pub const ZERO_MIB: usize = 4;
/// Terms of the series `awk` sums (Σ 1/i², times 6, tends to π²).
pub const AWK_TERMS: u32 = 1000;
/// Values of the `sort -n` check.
pub const SORT_COUNT: u32 = 3000;
/// The kernel command line; `end` is `poweroff` or `reboot`, read back by `/init`.
pub fn cmdline(end: &str) -> String {
    format!("console=ttyS0 nokaslr panic=-1 pcvm_end={end}")
}

/// The `/init` script: busybox applets, /proc and /sys, then the checks, one `KEY=value` line
/// each, then `dmesg` between markers, then the power-off or reboot the command line asks for.
pub fn init_script() -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo {MARK_INIT}
echo "UNAME=$(uname -r)"
echo "ZERO=$(dd if=/dev/zero bs=1M count={ZERO_MIB} 2>/dev/null | sha256sum)"
seq 1 {SEQ_COUNT} > /tmp/seq
echo "SEQ=$(sha256sum < /tmp/seq)"
gzip -c /tmp/seq > /tmp/seq.gz
echo "GUNZIP=$(gunzip -c /tmp/seq.gz | sha256sum)"
cmp /tmp/seq /tmp/seq.gz >/dev/null 2>&1 || echo "GZIP-DIFFERS=yes"
echo "AWK=$(awk 'BEGIN {{ s = 0; for (i = 1; i <= {AWK_TERMS}; i++) s += 1 / (i * i); printf "%.9f", s * 6 - 2.5e-3 / 7 }}')"
echo "SORT=$(awk 'BEGIN {{ x = 1; for (i = 0; i < {SORT_COUNT}; i++) {{ x = (x * 75 + 74) % 65537; print x - 30000 }} }}' | sort -n | sha256sum)"
echo DMESG-BEGIN
dmesg
echo DMESG-END
echo {MARK_DONE}
case "$(cat /proc/cmdline)" in
*pcvm_end=reboot*) reboot -f ;;
*) poweroff -f ;;
esac
"#
    )
}

/// `/init` of the CPU workload scripts/bench-jit times inside Linux: it writes `seq 1 lines`
/// (about 7.4 bytes a line, untimed), then times `gzip` and `sha256sum` over it with
/// /proc/uptime and prints `WORKLOAD-GZIP-S=`, `WORKLOAD-SHA256-S=` (seconds), the digest and
/// the compressed size (which must agree between VMMs), then powers off.
pub fn workload_init_script(lines: u32) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
echo {MARK_INIT}
seq 1 {lines} > /tmp/data
echo "WORKLOAD-BYTES=$(wc -c < /tmp/data)"
up() {{ cut -d' ' -f1 /proc/uptime; }}
T0=$(up)
gzip -c /tmp/data > /tmp/data.gz
T1=$(up)
sha256sum /tmp/data > /tmp/data.sum
T2=$(up)
echo "WORKLOAD-GZIP-S=$(awk -v a=$T0 -v b=$T1 'BEGIN {{ printf "%.2f", b - a }}')"
echo "WORKLOAD-SHA256-S=$(awk -v a=$T1 -v b=$T2 'BEGIN {{ printf "%.2f", b - a }}')"
echo "WORKLOAD-GZ-BYTES=$(wc -c < /tmp/data.gz)"
echo "WORKLOAD-SHA256=$(cut -d' ' -f1 /tmp/data.sum)"
echo {MARK_DONE}
poweroff -f
"#
    )
}
