//! Is KVM here, and is it backed by hardware virtualization?
//!
//! `--accel auto` picks KVM only when `/dev/kvm` opens **and** the host CPU shows VMX or SVM.
//! Some hosts (this project's development machines among them) expose `/dev/kvm` from
//! kvm-pvm, which runs ordinary (non-PVM) guests in software, about a thousand times slower
//! than hardware KVM; it works for `--accel kvm`, with a warning, but must not be chosen
//! automatically.

use kvm_ioctls::Kvm;

use crate::{Error, Result};

/// What [`kvm_usable`] found out about the host's KVM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmInfo {
    /// `KVM_GET_API_VERSION` (12 on every kernel since 2.6.22).
    pub api_version: i32,
    /// The host CPU advertises VMX or SVM (see [`hardware_virtualization_available`]).
    pub hardware_virtualization: bool,
    /// The kvm-pvm module is loaded (`/sys/module/kvm_pvm`).
    pub kvm_pvm: bool,
}

impl KvmInfo {
    /// KVM works but runs ordinary guests in software (no VMX/SVM on the host).
    pub fn software_emulated(&self) -> bool {
        !self.hardware_virtualization
    }

    /// The one-line warning `--accel kvm` prints when KVM is software-emulated, `None` when
    /// KVM is backed by hardware.
    pub fn warning(&self) -> Option<String> {
        if !self.software_emulated() {
            return None;
        }
        let what = if self.kvm_pvm {
            "kvm-pvm"
        } else {
            "an unknown KVM provider"
        };
        Some(format!(
            "warning: /dev/kvm is {what} without hardware virtualization (no vmx/svm in \
             /proc/cpuinfo): guests run software-emulated, about 1000x slower than native"
        ))
    }
}

/// The host CPU has hardware virtualization visible to this kernel: `vmx` (Intel VT-x) or
/// `svm` (AMD-V) among the flags in `/proc/cpuinfo`.
pub fn hardware_virtualization_available() -> bool {
    match std::fs::read_to_string("/proc/cpuinfo") {
        Ok(text) => cpuinfo_has_virtualization(&text),
        Err(_) => false,
    }
}

/// Whether a `/proc/cpuinfo` text lists `vmx` or `svm` in a `flags` line.
pub(crate) fn cpuinfo_has_virtualization(cpuinfo: &str) -> bool {
    cpuinfo.lines().any(|line| {
        let Some((key, value)) = line.split_once(':') else {
            return false;
        };
        key.trim() == "flags" && value.split_whitespace().any(|f| f == "vmx" || f == "svm")
    })
}

/// Open `/dev/kvm` and check the API version; says whether hardware virtualization backs it.
pub fn kvm_usable() -> Result<KvmInfo> {
    let kvm = Kvm::new().map_err(|e| Error::Open(std::io::Error::from_raw_os_error(e.errno())))?;
    let api_version = kvm.get_api_version();
    if api_version != 12 {
        return Err(Error::ApiVersion(api_version));
    }
    Ok(KvmInfo {
        api_version,
        hardware_virtualization: hardware_virtualization_available(),
        kvm_pvm: std::path::Path::new("/sys/module/kvm_pvm").exists(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_flags_are_parsed() {
        let intel = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr vmx ept\n";
        let amd = "flags\t\t: fpu svm npt\nbugs\t\t: sysret_ss_attrs\n";
        let none = "flags\t\t: fpu vme hypervisor\nvmx flags\t: vnmi\n";
        assert!(cpuinfo_has_virtualization(intel));
        assert!(cpuinfo_has_virtualization(amd));
        assert!(
            !cpuinfo_has_virtualization(none),
            "a 'vmx flags' line alone is not the flag"
        );
        assert!(!cpuinfo_has_virtualization("flags: svmx vmxnet"));
    }

    #[test]
    fn warning_only_without_hardware() {
        let mut info = KvmInfo {
            api_version: 12,
            hardware_virtualization: false,
            kvm_pvm: true,
        };
        assert!(info.warning().expect("warning").contains("kvm-pvm"));
        info.hardware_virtualization = true;
        assert_eq!(info.warning(), None);
    }
}
