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
use std::{fs::File, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    programs::{CgroupAttachMode, CgroupSock, FEntry, FExit, KProbe, ProgramError},
};

use crate::{
    error::TracerError,
    loader::{prog_err, program},
    system::{self, Btf},
};

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

/// Offsets of the `struct sock` fields the kernel-function programs read, from BTF.
#[derive(Clone, Copy, Debug)]
pub struct SockOffsets {
    family: u32,
    protocol: u32,
    num: u32,
    rcv_saddr: u32,
    v6_rcv_saddr: u32,
    sk_socket: u32,
    socket_inode: u32,
    inode_ino: u32,
}

impl SockOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self, Unavailable> {
        let field = |s: &str, m: &str, what: &'static str| {
            btf.member_offset(s, m)
                .ok_or(Unavailable::NoKernelField(what))
        };
        let common = field("sock", "__sk_common", "sock.__sk_common")?;
        let socket = field("socket_alloc", "socket", "socket_alloc.socket")?;
        Ok(Self {
            family: common + field("sock_common", "skc_family", "sock_common.skc_family")?,
            protocol: field("sock", "sk_protocol", "sock.sk_protocol")?,
            num: common + field("sock_common", "skc_num", "sock_common.skc_num")?,
            rcv_saddr: common + field("sock_common", "skc_rcv_saddr", "sock_common.skc_rcv_saddr")?,
            v6_rcv_saddr: common
                + field(
                    "sock_common",
                    "skc_v6_rcv_saddr",
                    "sock_common.skc_v6_rcv_saddr",
                )?,
            sk_socket: field("sock", "sk_socket", "sock.sk_socket")?,
            socket_inode: field("socket_alloc", "vfs_inode", "socket_alloc.vfs_inode")?
                .checked_sub(socket)
                .ok_or(Unavailable::NoKernelField("socket_alloc.vfs_inode"))?,
            inode_ino: field("inode", "i_ino", "inode.i_ino")?,
        })
    }

    /// Sets the programs' read-only offset globals (see tracer-ebpf's kernel_sock.rs).
    pub fn set_globals<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        for (name, value) in [
            ("SK_FAMILY_OFFSET", &self.family),
            ("SK_PROTOCOL_OFFSET", &self.protocol),
            ("SK_NUM_OFFSET", &self.num),
            ("SK_RCV_SADDR_OFFSET", &self.rcv_saddr),
            ("SK_V6_RCV_SADDR_OFFSET", &self.v6_rcv_saddr),
            ("SK_SOCKET_OFFSET", &self.sk_socket),
            ("SOCKET_INODE_OFFSET", &self.socket_inode),
            ("INODE_INO_OFFSET", &self.inode_ino),
        ] {
            loader.override_global(name, value, true);
        }
    }
}

/// The kernel facts a backend needs, read once per load.
pub struct KernelFacts {
    btf: Option<Vec<u8>>,
    pub offsets: Result<SockOffsets, Unavailable>,
}

impl KernelFacts {
    pub fn read() -> Self {
        let btf = system::kernel_btf();
        let offsets = match btf.as_deref().map(Btf::parse) {
            Some(Some(parsed)) => SockOffsets::from_btf(&parsed),
            _ => Err(Unavailable::NoBtf),
        };
        Self { btf, offsets }
    }

    fn has_function(&self, name: &str) -> bool {
        self.btf
            .as_deref()
            .and_then(Btf::parse)
            .is_some_and(|b| b.has_function(name))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum HookKind {
    FEntry,
    FExit,
    KProbe,
    KRetProbe,
}

/// One program on one kernel function. IPv6 hooks are skipped on kernels without
/// IPv6 (built as a module and not loaded): IPv4 sockets are still traced.
struct Hook {
    program: &'static str,
    kind: HookKind,
    function: &'static str,
    ipv6: bool,
}

const fn hook(program: &'static str, kind: HookKind, function: &'static str, ipv6: bool) -> Hook {
    Hook {
        program,
        kind,
        function,
        ipv6,
    }
}

const FENTRY_HOOKS: [Hook; 6] = [
    hook(
        "sockscope_fe_init4",
        HookKind::FEntry,
        "udp_init_sock",
        false,
    ),
    hook(
        "sockscope_fe_init6",
        HookKind::FEntry,
        "udpv6_init_sock",
        true,
    ),
    hook(
        "sockscope_fe_port4",
        HookKind::FExit,
        "udp_v4_get_port",
        false,
    ),
    hook(
        "sockscope_fe_port6",
        HookKind::FExit,
        "udp_v6_get_port",
        true,
    ),
    hook(
        "sockscope_fe_destroy4",
        HookKind::FEntry,
        "udp_destroy_sock",
        false,
    ),
    hook(
        "sockscope_fe_destroy6",
        HookKind::FEntry,
        "udpv6_destroy_sock",
        true,
    ),
];

const KPROBE_HOOKS: [Hook; 8] = [
    hook(
        "sockscope_kp_init",
        HookKind::KProbe,
        "udp_init_sock",
        false,
    ),
    hook(
        "sockscope_kp_init",
        HookKind::KProbe,
        "udpv6_init_sock",
        true,
    ),
    // The return probe first: an entry stash without its return probe would stay.
    hook(
        "sockscope_kp_port_ret",
        HookKind::KRetProbe,
        "udp_v4_get_port",
        false,
    ),
    hook(
        "sockscope_kp_port_ret",
        HookKind::KRetProbe,
        "udp_v6_get_port",
        true,
    ),
    hook(
        "sockscope_kp_port",
        HookKind::KProbe,
        "udp_v4_get_port",
        false,
    ),
    hook(
        "sockscope_kp_port",
        HookKind::KProbe,
        "udp_v6_get_port",
        true,
    ),
    hook(
        "sockscope_kp_destroy",
        HookKind::KProbe,
        "udp_destroy_sock",
        false,
    ),
    hook(
        "sockscope_kp_destroy",
        HookKind::KProbe,
        "udpv6_destroy_sock",
        true,
    ),
];

/// cgroup_sock programs, as named in `tracer-ebpf`.
pub const CGROUP_PROGRAMS: [&str; 4] = [
    "sockscope_create",
    "sockscope_bind4",
    "sockscope_bind6",
    "sockscope_release",
];

/// Where the cgroup backend attaches: the root of the v2 hierarchy, or `check`'s own.
pub fn cgroup_target(path: Option<PathBuf>) -> Result<(PathBuf, File), TracerError> {
    let path = match path {
        Some(p) => p,
        None => system::cgroup2_mount()?,
    };
    let file = File::open(&path).map_err(|source| TracerError::OpenCgroup {
        path: path.clone(),
        source,
    })?;
    Ok((path, file))
}

/// Attaches `backend`'s programs. On failure, whatever it attached is detached and
/// unloaded again, so another backend can be tried on the same object.
pub fn attach(
    ebpf: &mut Ebpf,
    backend: Backend,
    facts: &KernelFacts,
    cgroup: Option<&PathBuf>,
) -> Result<(), Unavailable> {
    let result = match backend {
        Backend::Cgroup => attach_cgroup(ebpf, cgroup),
        Backend::Fentry => attach_hooks(ebpf, &FENTRY_HOOKS, facts),
        Backend::Kprobe => attach_hooks(ebpf, &KPROBE_HOOKS, facts),
    };
    if result.is_err() {
        detach(ebpf, backend);
    }
    result
}

/// Detaches and unloads `backend`'s programs (those that were loaded).
pub fn detach(ebpf: &mut Ebpf, backend: Backend) {
    // Not loaded (or already unloaded) is the only error: nothing to undo.
    match backend {
        Backend::Cgroup => {
            for name in CGROUP_PROGRAMS {
                let _ = program::<CgroupSock>(ebpf, name).map(|p| p.unload());
            }
        }
        Backend::Fentry => {
            for h in &FENTRY_HOOKS {
                let _ = match h.kind {
                    HookKind::FExit => program::<FExit>(ebpf, h.program).map(|p| p.unload()),
                    _ => program::<FEntry>(ebpf, h.program).map(|p| p.unload()),
                };
            }
        }
        Backend::Kprobe => {
            for h in &KPROBE_HOOKS {
                let _ = program::<KProbe>(ebpf, h.program).map(|p| p.unload());
            }
        }
    }
}

fn attach_cgroup(ebpf: &mut Ebpf, cgroup: Option<&PathBuf>) -> Result<(), Unavailable> {
    let (_, file) = cgroup_target(cgroup.cloned())?;
    for name in CGROUP_PROGRAMS {
        let prog: &mut CgroupSock = program(ebpf, name)?;
        prog.load().map_err(prog_err(name, "loaded"))?;
        // `Single`: this kernel rejects the multi-attach flag (PLATFORM.md).
        prog.attach(&file, CgroupAttachMode::Single)
            .map_err(prog_err(name, "attached"))?;
    }
    Ok(())
}

fn attach_hooks(ebpf: &mut Ebpf, hooks: &[Hook], facts: &KernelFacts) -> Result<(), Unavailable> {
    if let Err(e) = &facts.offsets {
        return Err(match e {
            Unavailable::NoKernelField(f) => Unavailable::NoKernelField(f),
            _ => Unavailable::NoBtf,
        });
    }
    let btf = aya::Btf::from_sys_fs().map_err(|_| Unavailable::NoBtf)?;
    for h in hooks {
        if !facts.has_function(h.function) {
            if h.ipv6 {
                continue;
            }
            return Err(Unavailable::NoFunction(h.function));
        }
        attach_hook(ebpf, h, &btf)?;
    }
    Ok(())
}

fn attach_hook(ebpf: &mut Ebpf, h: &Hook, btf: &aya::Btf) -> Result<(), Unavailable> {
    let name = h.program;
    let step = |action: &'static str| move |e: ProgramError| classify(name, action, e);
    match h.kind {
        HookKind::FEntry => {
            let p: &mut FEntry = program(ebpf, name)?;
            p.load(h.function, btf).map_err(step("loaded"))?;
            p.attach().map_err(step("attached"))?;
        }
        HookKind::FExit => {
            let p: &mut FExit = program(ebpf, name)?;
            p.load(h.function, btf).map_err(step("loaded"))?;
            p.attach().map_err(step("attached"))?;
        }
        HookKind::KProbe | HookKind::KRetProbe => {
            let p: &mut KProbe = program(ebpf, name)?;
            // One program serves the IPv4 and the IPv6 function.
            if p.fd().is_err() {
                p.load().map_err(step("loaded"))?;
            }
            p.attach(h.function, 0).map_err(|e| match os_error(&e) {
                // The kprobe event source is missing (the function exists, see above).
                Some(libc::ENOENT) => Unavailable::NoKprobes,
                _ => classify(name, "attached", e),
            })?;
        }
    }
    Ok(())
}

/// EPERM from the kernel means tracing programs are refused (lockdown, or a policy);
/// anything else is reported as it is.
fn classify(program: &'static str, action: &'static str, e: ProgramError) -> Unavailable {
    if os_error(&e) == Some(libc::EPERM) {
        let lockdown = match system::lockdown_mode() {
            Ok(Some(mode)) if mode != "none" => format!("; lockdown is {mode}"),
            _ => String::new(),
        };
        return Unavailable::NotAllowed {
            lockdown,
            program,
            action,
        };
    }
    Unavailable::Failed(TracerError::Program {
        name: program,
        action,
        source: e,
    })
}

/// The OS error at the bottom of an error chain, if any.
fn os_error(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(code) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(code);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_order_tries_every_backend_once() {
        let mut seen = Backend::AUTO_ORDER.to_vec();
        seen.dedup();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn eperm_is_found_under_wrappers() {
        let e = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: std::io::Error::from_raw_os_error(libc::EPERM),
        });
        assert!(matches!(
            classify("p", "loaded", e),
            Unavailable::NotAllowed { .. }
        ));
        let e = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: std::io::Error::from_raw_os_error(libc::EINVAL),
        });
        assert!(matches!(classify("p", "loaded", e), Unavailable::Failed(_)));
    }

    #[test]
    fn sock_offsets_of_the_running_kernel() {
        let Some(raw) = system::kernel_btf() else {
            eprintln!("SKIP: no kernel BTF");
            return;
        };
        let btf = Btf::parse(&raw).expect("kernel BTF parses");
        let o = SockOffsets::from_btf(&btf).expect("every field is found");
        // struct sock starts with sock_common: the family is at 16, the port at 14.
        assert_eq!((o.family, o.num, o.rcv_saddr), (16, 14, 4));
        assert!(
            o.protocol > o.v6_rcv_saddr,
            "sk_protocol is past sock_common"
        );
        assert!(o.socket_inode > 0 && o.inode_ino > 0);
    }
}
