//! What `sockscope doctor` learns by really loading and attaching every program, then
//! detaching it: never guessed from the kernel version.
use aya::programs::{TracePoint, UProbe, uprobe::UProbeScope};

use super::{
    EXEC_PROGRAM, Links, LoadConfig, SOCKET_EXIT_PROGRAM, USDT_PROGRAM, configured_load, prog_err,
    program,
};
use crate::{
    backend::{self, Backend, KernelFacts, MarkerIds, Unavailable},
    error::TracerError,
};

/// Result of really loading and attaching one program (for `sockscope doctor`).
pub struct ProgramProbe {
    pub name: &'static str,
    pub kind: &'static str,
    pub result: Result<(), TracerError>,
    /// What else the line says when it works.
    pub note: Option<&'static str>,
    /// Tracing works without it (it serves markers only).
    pub optional: bool,
}

/// What `sockscope doctor` learns by really loading and attaching.
pub struct Probes {
    /// The programs every backend uses.
    pub programs: Vec<ProgramProbe>,
    /// Each backend, attached for a moment, in [`Backend::AUTO_ORDER`].
    pub backends: Vec<(Backend, Result<(), Unavailable>)>,
}

/// Loads every program and attaches it for a moment (cgroup hooks to the root cgroup,
/// kernel functions, the tracepoint), then detaches. Tells whether tracing can work
/// here, and with which backend.
pub fn probe_programs() -> Result<Probes, TracerError> {
    let facts = KernelFacts::read();
    // Kernel stacks on: the verifier then checks every path the tracer may use.
    let mut ebpf = configured_load(
        &LoadConfig {
            kernel_stacks: true,
            walk_stacks: super::TracerBuilder::new().walks_stacks(),
            ..LoadConfig::default()
        },
        &facts,
    )?;
    let mut programs = Vec::new();
    let exit = program::<TracePoint>(&mut ebpf, SOCKET_EXIT_PROGRAM).and_then(|p| {
        p.load().map_err(prog_err(SOCKET_EXIT_PROGRAM, "loaded"))?;
        let link = p
            .attach("syscalls", "sys_exit_socket")
            .map_err(prog_err(SOCKET_EXIT_PROGRAM, "attached"))?;
        p.detach(link)
            .map_err(prog_err(SOCKET_EXIT_PROGRAM, "detached"))
    });
    programs.push(ProgramProbe {
        name: SOCKET_EXIT_PROGRAM,
        kind: "tracepoint",
        result: exit,
        note: None,
        optional: false,
    });
    // Loaded only: attached without a cgroup of sockscope's own it would stop
    // processes (and it refuses to act without one anyway).
    let exec = program::<TracePoint>(&mut ebpf, EXEC_PROGRAM)
        .and_then(|p| p.load().map_err(prog_err(EXEC_PROGRAM, "loaded")));
    programs.push(ProgramProbe {
        name: EXEC_PROGRAM,
        kind: "tracepoint, load only",
        result: exec,
        note: None,
        optional: false,
    });
    // A uprobe (what USDT markers use), attached for a moment to this very process.
    let usdt = facts.markers.ok_or(TracerError::NoMarkerIds);
    let usdt = usdt
        .and_then(|_| program::<UProbe>(&mut ebpf, USDT_PROGRAM))
        .and_then(|p| {
            p.load().map_err(prog_err(USDT_PROGRAM, "loaded"))?;
            let link = p
                .attach("main", "/proc/self/exe", UProbeScope::CallingProcess)
                .map_err(prog_err(USDT_PROGRAM, "attached"))?;
            p.detach(link).map_err(prog_err(USDT_PROGRAM, "detached"))
        });
    programs.push(ProgramProbe {
        name: USDT_PROGRAM,
        kind: "uprobe",
        result: usdt,
        note: match facts.markers {
            Some(MarkerIds::FileOffset(_)) => {
                Some("markers told apart by file offset (no BPF attach cookies here: Linux 5.15+)")
            }
            _ => None,
        },
        optional: true,
    });
    // Before the I/O hooks take their maps out of the object: the backends' release
    // programs use those maps too (they forget released sockets there).
    let backends = Backend::AUTO_ORDER
        .into_iter()
        .map(|b| {
            let mut links = Links::default();
            let result = backend::attach(&mut ebpf, &mut links, b, &facts, None);
            links.detach_all();
            backend::unload(&mut ebpf, b);
            (b, result)
        })
        .collect();
    // The send/receive hooks that tell a leak's kind (check and watch attach them),
    // detached at once.
    programs.push(ProgramProbe {
        name: "sockscope_io_{send,recv,exit}",
        kind: "tracepoints on the send and receive calls",
        result: super::IoWatch::attach(&mut ebpf, &mut Links::default()).map(drop),
        note: None,
        optional: false,
    });
    Ok(Probes { programs, backends })
}
