//! Errors of the KVM backend.

use thiserror::Error;

/// What went wrong talking to KVM.
#[derive(Debug, Error)]
pub enum Error {
    /// `/dev/kvm` does not exist, or could not be opened (permissions, no KVM module).
    #[error("failed to open /dev/kvm: {0} (is KVM available and accessible to this user?)")]
    Open(std::io::Error),
    /// The kernel's KVM API version is not the stable version 12.
    #[error("unsupported KVM API version {0} (expected 12)")]
    ApiVersion(i32),
    /// A capability the backend cannot work without is missing.
    #[error("KVM lacks a required capability: {0}")]
    MissingCapability(&'static str),
    /// A KVM ioctl failed.
    #[error("failed to {operation}: {source}")]
    Ioctl {
        operation: &'static str,
        source: std::io::Error,
    },
    /// A host resource (signal, timer, mapping) could not be set up.
    #[error("failed to {operation}: {source}")]
    Host {
        operation: &'static str,
        source: std::io::Error,
    },
    /// The guest memory handed to the backend cannot be mapped into KVM.
    #[error("failed to map guest memory into KVM: {0}")]
    Memory(String),
    /// The vCPU stopped in a way the backend cannot continue from.
    #[error("KVM vCPU failed: {0}")]
    VcpuFailed(String),
    /// The debug configuration asks for something KVM cannot do here.
    #[error("unsupported debug configuration: {0}")]
    DebugUnsupported(String),
}

impl Error {
    /// Wrap a kvm-ioctls error with the operation that failed.
    pub(crate) fn ioctl(operation: &'static str, e: kvm_ioctls::Error) -> Self {
        Error::Ioctl {
            operation,
            source: std::io::Error::from_raw_os_error(e.errno()),
        }
    }

    /// The core error a [`pcvm_core::CpuBackend`] method returns.
    pub(crate) fn into_core(self, operation: &'static str) -> pcvm_core::Error {
        pcvm_core::Error::Backend {
            backend: "kvm",
            operation,
            reason: self.to_string(),
        }
    }
}

/// Result with the KVM backend's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_failed() {
        let e = Error::Open(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert!(
            e.to_string()
                .starts_with("failed to open /dev/kvm: No such file or directory"),
            "{e}"
        );
        let e = Error::ioctl("set the TSS address", kvm_ioctls::Error::new(libc::EINVAL));
        assert_eq!(
            e.to_string(),
            "failed to set the TSS address: Invalid argument (os error 22)"
        );
        let core = Error::MissingCapability("KVM_CAP_IMMEDIATE_EXIT").into_core("create the VM");
        assert_eq!(
            core.to_string(),
            "CPU backend kvm failed to create the VM: KVM lacks a required capability: \
             KVM_CAP_IMMEDIATE_EXIT"
        );
    }
}
