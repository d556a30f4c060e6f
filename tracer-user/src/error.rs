//! Library errors. Every message is one line saying what failed and what to do; the
//! binary prints it and exits 2 (environment/usage) unless a command says otherwise.
use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    #[error("{what} is not mounted at {path} and could not be mounted ({source}): run as root")]
    Mount {
        what: &'static str,
        path: &'static str,
        source: io::Error,
    },
    #[error(
        "no cgroup v2 filesystem in /proc/mounts: mount one (`mount -t cgroup2 none /sys/fs/cgroup`)"
    )]
    NoCgroup2,
    #[error("cannot open cgroup {path}: {source}")]
    OpenCgroup { path: PathBuf, source: io::Error },
    #[error("loading the BPF object failed: {source}: run as root, or see `sockscope doctor`")]
    Load { source: aya::EbpfError },
    #[error("BPF program {name} could not be {action}: {source}: see `sockscope doctor`")]
    Program {
        name: &'static str,
        action: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("BPF program {0} is missing from the embedded object (build problem)")]
    MissingProgram(&'static str),
    #[error("BPF map {0} is missing from the embedded object (build problem)")]
    MissingMap(&'static str),
    #[error("BPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("sock_diag netlink query failed: {0}")]
    SockDiag(#[source] io::Error),
    #[error("reading the ring buffer failed: {0}")]
    RingBuf(#[source] io::Error),
    #[error("process {0} does not exist (or exited)")]
    NoSuchProcess(u32),
    /// The process exists but a file of its /proc directory cannot be read (no ptrace
    /// rights over it: another user's process, or CAP_SYS_PTRACE missing).
    #[error("cannot read {path}: {reason}: {hint}")]
    ProcUnreadable {
        path: String,
        reason: String,
        hint: String,
    },
    #[error(transparent)]
    Usdt(#[from] crate::stapsdt::UsdtError),
    #[error(
        "USDT markers cannot be told apart on this kernel: it has no BPF attach cookies (Linux 5.15+), and its BTF does not say where a task's mappings are (mm_struct.mm_rb)"
    )]
    NoMarkerIds,
    #[error(
        "the {backend} backend cannot be used here: {why}: leave --backend out to pick one that works, see `sockscope doctor`"
    )]
    Backend {
        backend: crate::backend::Backend,
        // Not `source`: the reason is already in the message.
        why: Box<crate::backend::Unavailable>,
    },
    #[error("no backend can trace UDP sockets here ({0}): run as root, see `sockscope doctor`")]
    NoBackend(crate::backend::Rejections),
}

/// Usage errors found before anything is loaded.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("no process with pid {0}")]
    NoSuchPid(u32),
    #[error("--comm {0:?} is longer than the kernel's 15-byte task name: give at most 15 bytes")]
    CommTooLong(String),
    #[error("{0} must be longer than 0")]
    ZeroDuration(&'static str),
    #[error("--comm must not be empty")]
    CommEmpty,
    #[error("command not found: {0}")]
    CommandNotFound(String),
    #[error("cannot write {path}: {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error("cannot serve metrics on {addr}: {source} (give a free address, e.g. 127.0.0.1:9464)")]
    Metrics {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
}

impl TracerError {
    /// What failed reading `path` of process `pid` under /proc: the process is gone,
    /// or it exists and the file is not readable (say why, not "does not exist").
    pub fn proc_read(pid: u32, path: impl Into<String>, e: &io::Error) -> Self {
        let path = path.into();
        let (reason, hint) = match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => (
                "permission denied".to_owned(),
                "run as root (another user's process, or one with capabilities sockscope lacks, needs CAP_SYS_PTRACE)".to_owned(),
            ),
            Some(libc::ENOENT | libc::ESRCH) if !crate::inventory::process_running(pid) => {
                return Self::NoSuchProcess(pid);
            }
            Some(libc::ENOENT) => (
                io_reason(e),
                format!("process {pid} has no executable (a kernel thread?)"),
            ),
            _ => (io_reason(e), "is /proc mounted?".to_owned()),
        };
        Self::ProcUnreadable { path, reason, hint }
    }
}

/// An I/O error as a short lowercase phrase, without "(os error N)".
pub fn io_reason(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_owned(),
    }
}
