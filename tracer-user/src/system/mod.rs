//! Facts about the running system that tracing depends on, and the mounts it needs.
mod btf;
mod caps;
mod cgroup;
pub mod exec_guard;
mod mounts;
pub mod service;
mod tracefs;

pub use btf::{Btf, kernel_btf};
pub use caps::{Capability, effective_capabilities, has as has_capability};
pub use cgroup::ScopedCgroup;
pub use mounts::{MountState, cgroup2_mount, ensure_tracefs, lockdown_mode};
pub use tracefs::tracepoint_field_offset;

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether kernel BTF is available (CO-RE and fentry need it).
pub fn has_kernel_btf() -> bool {
    std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
}
