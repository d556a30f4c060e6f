//! The kernel side of socket tracing comes in three backends that give user space the
//! same records (create, bind, release; see tracer-ebpf's emit.rs), each with its own
//! kernel requirements:
//!
//! - `fentry`: BPF trampolines on the kernel's UDP functions (`udp_init_sock`,
//!   `udp_v4_get_port`, `udp_destroy_sock` and their IPv6 twins). Needs kernel BTF and
//!   a kernel that allows tracing programs (lockdown forbids them). Gives the releasing
//!   stack and needs no cgroup v2.
//! - `cgroup`: cgroup_sock hooks on the root cgroup (or `check`'s own). Works under
//!   lockdown and without BTF; cannot take the releasing stack.
//! - `kprobe`: the fentry hooks as kprobes, for kernels with BTF that refuse fentry
//!   (e.g. architectures without trampolines). Sockets are known by inode, not cookie.
//!
//! Without `--backend`, the first of [`Backend::AUTO_ORDER`] that attaches is used, and
//! why the others were passed over is kept for `doctor` and the start line.
mod attach;
mod kernel;

pub use attach::{CGROUP_PROGRAMS, attach, unload};
pub use kernel::{KernelFacts, MarkerIds, SockOffsets};

use crate::error::TracerError;

/// A way of hooking socket create, bind and release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Fentry,
    Cgroup,
    Kprobe,
}

/// What the `cookie` field of a record holds (see `tracer_common::CreateEvent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketIdentity {
    Cookie,
    Inode,
}

impl SocketIdentity {
    /// The number the records of this identity know a socket by.
    pub fn of(self, cookie: u64, inode: u64) -> u64 {
        match self {
            Self::Cookie => cookie,
            Self::Inode => inode,
        }
    }
}

impl Backend {
    /// Preference without `--backend`: fentry gives releasing stacks and leaves the
    /// cgroup tree alone (other tools' cgroup programs, cgroup v1 hosts); cgroup works
    /// under lockdown; kprobe is the last resort (no cookies).
    pub const AUTO_ORDER: [Backend; 3] = [Backend::Fentry, Backend::Cgroup, Backend::Kprobe];

    pub fn name(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Cgroup => "cgroup",
            Self::Kprobe => "kprobe",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Fentry => {
                "fentry/fexit on udp_init_sock, udp_v4_get_port, udp_destroy_sock (and IPv6 twins)"
            }
            Self::Cgroup => "cgroup_sock hooks (sock_create, post_bind4/6, sock_release)",
            Self::Kprobe => {
                "kprobes on udp_init_sock, udp_v4_get_port, udp_destroy_sock (and IPv6 twins)"
            }
        }
    }

    pub fn identity(self) -> SocketIdentity {
        match self {
            Self::Kprobe => SocketIdentity::Inode,
            Self::Fentry | Self::Cgroup => SocketIdentity::Cookie,
        }
    }

    /// Whether release records carry the releasing stacks.
    pub fn release_stacks(self) -> bool {
        self != Self::Cgroup
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a backend cannot serve on this kernel.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error(
        "not allowed by this kernel (lockdown/EPERM{lockdown}): {program} could not be {action}"
    )]
    NotAllowed {
        /// `"; lockdown is integrity"` when lockdown is on.
        lockdown: String,
        program: &'static str,
        action: &'static str,
    },
    #[error("the kernel has no BTF (/sys/kernel/btf/vmlinux), which it needs")]
    NoBtf,
    #[error("the kernel's BTF has no {0}")]
    NoKernelField(&'static str),
    #[error("the kernel has no function {0} to hook")]
    NoFunction(&'static str),
    #[error("this kernel has no kprobes (no kprobe event source; CONFIG_KPROBES off?)")]
    NoKprobes,
    #[error("this kernel does not offer {helper} to {program} (its verifier: unknown function)")]
    NoHelper {
        program: &'static str,
        /// The helper's name, or `helper #N` when the kernel does not know its number.
        helper: String,
    },
    #[error(transparent)]
    Failed(#[from] TracerError),
}

/// Why each backend tried before the one in use was passed over.
#[derive(Debug, Default)]
pub struct Rejections(pub Vec<(Backend, Unavailable)>);

impl std::fmt::Display for Rejections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (backend, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{backend}: {why}")?;
        }
        Ok(())
    }
}
