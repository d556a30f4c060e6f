//! Effective capabilities of this process, from /proc/self/status.
use std::fs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    NetAdmin = 12,
    SysAdmin = 21,
    Perfmon = 38,
    Bpf = 39,
}

impl Capability {
    pub const NEEDED: [Capability; 3] =
        [Capability::Bpf, Capability::Perfmon, Capability::NetAdmin];

    pub fn name(self) -> &'static str {
        match self {
            Self::NetAdmin => "CAP_NET_ADMIN",
            Self::SysAdmin => "CAP_SYS_ADMIN",
            Self::Perfmon => "CAP_PERFMON",
            Self::Bpf => "CAP_BPF",
        }
    }
}

/// The `CapEff` mask, or `None` if it cannot be read.
pub fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Whether `mask` grants `cap` (CAP_SYS_ADMIN stands in for BPF and PERFMON on the
/// kernels that predate them, and still grants them on newer ones).
pub fn has(mask: u64, cap: Capability) -> bool {
    let bit = |c: Capability| mask & (1u64 << c as u32) != 0;
    bit(cap) || (matches!(cap, Capability::Bpf | Capability::Perfmon) && bit(Capability::SysAdmin))
}
