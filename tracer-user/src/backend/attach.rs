//! Attaching and detaching a backend's programs on one loaded object.
use std::{fs::File, path::PathBuf};

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSock, FEntry, FExit, KProbe, ProgramError},
};

use super::{Backend, KernelFacts, Unavailable};
use crate::{
    error::TracerError,
    loader::{Links, prog_err, program},
    system,
};

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

/// Every kernel function a backend hooks.
pub(super) fn hooked_functions() -> impl Iterator<Item = &'static str> {
    FENTRY_HOOKS.iter().chain(&KPROBE_HOOKS).map(|h| h.function)
}

/// cgroup_sock programs, as named in `tracer-ebpf`.
pub const CGROUP_PROGRAMS: [&str; 4] = [
    "sockscope_create",
    "sockscope_bind4",
    "sockscope_bind6",
    "sockscope_release",
];

/// Where the cgroup backend attaches: the root of the v2 hierarchy, or `check`'s own.
fn cgroup_target(path: Option<&PathBuf>) -> Result<File, TracerError> {
    let path = match path {
        Some(p) => p.clone(),
        None => system::cgroup2_mount()?,
    };
    File::open(&path).map_err(|source| TracerError::OpenCgroup { path, source })
}

/// Attaches `backend`'s programs. On failure, whatever it attached is detached and
/// unloaded again, so another backend can be tried on the same object.
pub fn attach(
    ebpf: &mut Ebpf,
    links: &mut Links,
    backend: Backend,
    facts: &KernelFacts,
    cgroup: Option<&PathBuf>,
) -> Result<(), Unavailable> {
    let mark = links.mark();
    let result = match backend {
        Backend::Cgroup => attach_cgroup(ebpf, links, cgroup),
        Backend::Fentry => attach_hooks(ebpf, links, &FENTRY_HOOKS, facts),
        Backend::Kprobe => attach_hooks(ebpf, links, &KPROBE_HOOKS, facts),
    };
    if result.is_err() {
        links.detach_since(mark);
        unload(ebpf, backend);
    }
    result
}

/// Unloads `backend`'s programs (those that were loaded); their links in [`Links`]
/// must be detached first.
pub fn unload(ebpf: &mut Ebpf, backend: Backend) {
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

fn attach_cgroup(
    ebpf: &mut Ebpf,
    links: &mut Links,
    cgroup: Option<&PathBuf>,
) -> Result<(), Unavailable> {
    let file = cgroup_target(cgroup)?;
    for name in CGROUP_PROGRAMS {
        let prog: &mut CgroupSock = program(ebpf, name)?;
        prog.load().map_err(prog_err(name, "loaded"))?;
        // `Single`: this kernel rejects the multi-attach flag (PLATFORM.md).
        let id = prog
            .attach(&file, CgroupAttachMode::Single)
            .map_err(prog_err(name, "attached"))?;
        links.adopt(prog.take_link(id));
    }
    Ok(())
}

fn attach_hooks(
    ebpf: &mut Ebpf,
    links: &mut Links,
    hooks: &[Hook],
    facts: &KernelFacts,
) -> Result<(), Unavailable> {
    if let Err(gap) = facts.offsets {
        return Err(gap.into());
    }
    // aya's own parse of the kernel BTF, which fentry/fexit programs load against;
    // kprobes do not need it.
    let mut aya_btf = None;
    for h in hooks {
        if !facts.has_function(h.function) {
            if h.ipv6 {
                continue;
            }
            return Err(Unavailable::NoFunction(h.function));
        }
        attach_hook(ebpf, links, h, &mut aya_btf)?;
    }
    Ok(())
}

fn attach_hook(
    ebpf: &mut Ebpf,
    links: &mut Links,
    h: &Hook,
    aya_btf: &mut Option<aya::Btf>,
) -> Result<(), Unavailable> {
    let name = h.program;
    let step = |action: &'static str| move |e: ProgramError| classify(name, action, e);
    match h.kind {
        HookKind::FEntry => {
            let btf = parsed_btf(aya_btf)?;
            let p: &mut FEntry = program(ebpf, name)?;
            p.load(h.function, btf).map_err(step("loaded"))?;
            let id = p.attach().map_err(step("attached"))?;
            links.adopt(p.take_link(id));
        }
        HookKind::FExit => {
            let btf = parsed_btf(aya_btf)?;
            let p: &mut FExit = program(ebpf, name)?;
            p.load(h.function, btf).map_err(step("loaded"))?;
            let id = p.attach().map_err(step("attached"))?;
            links.adopt(p.take_link(id));
        }
        HookKind::KProbe | HookKind::KRetProbe => {
            let p: &mut KProbe = program(ebpf, name)?;
            // One program serves the IPv4 and the IPv6 function.
            if p.fd().is_err() {
                p.load().map_err(step("loaded"))?;
            }
            let id = p.attach(h.function, 0).map_err(|e| match os_error(&e) {
                // The kprobe event source is missing (the function exists, see above).
                Some(libc::ENOENT) => Unavailable::NoKprobes,
                _ => classify(name, "attached", e),
            })?;
            links.adopt(p.take_link(id));
        }
    }
    Ok(())
}

/// aya's parse of the kernel BTF, made the first time a hook needs it.
fn parsed_btf(cache: &mut Option<aya::Btf>) -> Result<&aya::Btf, Unavailable> {
    if cache.is_none() {
        *cache = Some(aya::Btf::from_sys_fs().map_err(|_| Unavailable::NoBtf)?);
    }
    cache.as_ref().ok_or(Unavailable::NoBtf)
}

/// EPERM from the kernel means tracing programs are refused (lockdown, or a policy); a
/// verifier that does not know a helper the program calls means this kind of program
/// cannot have it on this kernel; anything else is reported as it is.
fn classify(program: &'static str, action: &'static str, e: ProgramError) -> Unavailable {
    if let ProgramError::LoadError { verifier_log, .. } = &e
        && let Some(helper) = unknown_helper(&verifier_log.to_string())
    {
        return Unavailable::NoHelper { program, helper };
    }
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

/// The helper a verifier log rejects as unknown: `unknown func NAME#N` (the kernel
/// knows the helper, not for this program type) or `invalid func unknown#N` (the kernel
/// does not know the number).
fn unknown_helper(log: &str) -> Option<String> {
    let (_, rest) = log
        .split_once("unknown func ")
        .or_else(|| log.split_once("invalid func "))?;
    let token = rest.split_whitespace().next()?;
    Some(match token.strip_prefix("unknown#") {
        Some(n) => format!("helper #{n}"),
        None => token.split('#').next().unwrap_or(token).to_owned(),
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
    fn unknown_helpers_are_named() {
        let log = "41: (bf) r1 = r6\n42: (85) call bpf_get_socket_cookie#46\nunknown func bpf_get_socket_cookie#46\nverification time 13925 usec\n";
        assert_eq!(
            unknown_helper(log).as_deref(),
            Some("bpf_get_socket_cookie")
        );
        let log = "1: (85) call unknown#174\ninvalid func unknown#174\n";
        assert_eq!(unknown_helper(log).as_deref(), Some("helper #174"));
        assert_eq!(unknown_helper("R1 invalid mem access 'inv'\n"), None);
    }
}
