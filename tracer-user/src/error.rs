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
