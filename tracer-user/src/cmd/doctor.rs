//! `sockscope doctor`: can tracing work on this host, and if not, what to do. Program
//! types are tried for real (load and attach), never guessed from the kernel version.
use std::io::Write as _;

use crate::{
    backend::{self, Backend, Rejections},
    loader::{self, ProgramProbe},
    output::Format,
    system::{self, Capability, MountState},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

fn check(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
    }
}

/// Runs every check. Tracing can work when none failed.
pub fn run_checks() -> Vec<Check> {
    let mut checks = vec![check("kernel", Status::Ok, system::kernel_release())];
    checks.push(if system::has_kernel_btf() {
        check("btf", Status::Ok, "/sys/kernel/btf/vmlinux present")
    } else {
        check(
            "btf",
            Status::Warn,
            "no /sys/kernel/btf/vmlinux: the cgroup backend works without it",
        )
    });
    checks.push(match system::lockdown_mode() {
        Ok(Some(mode)) if mode == "none" => check("lockdown", Status::Ok, "none"),
        Ok(Some(mode)) => check(
            "lockdown",
            Status::Warn,
            format!("{mode}: fentry/kprobe hooks are refused; the cgroup backend is not affected"),
        ),
        Ok(None) => check("lockdown", Status::Ok, "no lockdown LSM"),
        Err(e) => check("lockdown", Status::Warn, format!("cannot read: {e}")),
    });
    let cgroup = system::cgroup2_mount();
    checks.push(match &cgroup {
        Ok(p) => check("cgroup2", Status::Ok, format!("mounted at {}", p.display())),
        Err(e) => check("cgroup2", Status::Fail, e.to_string()),
    });
    checks.push(match system::ensure_tracefs() {
        Ok(MountState::Present(p)) => {
            check("tracefs", Status::Ok, format!("mounted at {}", p.display()))
        }
        Ok(MountState::Mounted(p)) => check(
            "tracefs",
            Status::Ok,
            format!("was not mounted: mounted it at {}", p.display()),
        ),
        Err(e) => check("tracefs", Status::Fail, e.to_string()),
    });
    checks.push(capability_check());
    match loader::probe_programs() {
        Ok(probes) => {
            let programs_ok = probes
                .programs
                .iter()
                .all(|p| p.result.is_ok() || p.optional);
            checks.extend(probes.programs.into_iter().map(program_check));
            checks.extend(backend_checks(probes.backends, programs_ok));
        }
        Err(e) => checks.push(check("programs", Status::Fail, e.to_string())),
    }
    checks.push(memory_check());
    checks
}

/// What the largest maps lock, as sized for this host (see `loader::sizes`).
fn memory_check() -> Check {
    use loader::sizes::MapSizes;
    let builder = loader::TracerBuilder::new();
    let walked = builder.walks_stacks();
    // Attach cookies size only the file-offset site map, which is not shown: no second
    // parse of the kernel's BTF to learn whether this kernel has them.
    let sizes = MapSizes::new(walked, 0, true, true);
    let one = MapSizes::new(walked, std::process::id(), false, true);
    let how = if walked {
        "creating stacks walked by the create program"
    } else {
        "creating stacks through bpf_get_stackid (no bpf_task_pt_regs here)"
    };
    check(
        "bpf memory",
        Status::Ok,
        format!(
            "stack map {} x 127 frames ({} KiB; {how}); tracked sockets {} (by --pid: its open-file limit), {} of them in slots ({}); fds watched by the I/O hooks in slots {}; markers {} ({} by --pid), threads in spans {} ({}); ring {} KiB ({} KiB with --stacks dwarf); --ring-bytes sets it",
            sizes.stacks,
            u64::from(sizes.stacks) * 127 * 8 / 1024,
            sizes.tracked,
            sizes.tracked_slots,
            if loader::cmpxchg::kernel_has_cmpxchg() {
                "BPF compare-and-exchange: yes"
            } else {
                "no BPF compare-and-exchange here: hash maps only"
            },
            sizes.watched_slots,
            sizes.markers,
            one.markers,
            sizes.spans,
            one.spans,
            loader::DEFAULT_RING_BYTES / 1024,
            loader::DWARF_RING_BYTES / 1024,
        ),
    )
}

/// One line per backend (attached for a moment), then the one tracing would use and
/// why: the first of the automatic order that works.
fn backend_checks(
    results: Vec<(Backend, Result<(), backend::Unavailable>)>,
    programs_ok: bool,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut chosen = None;
    let mut passed_over = Rejections::default();
    for (b, result) in results {
        let name = format!("backend {b}");
        match result {
            Ok(()) => {
                checks.push(check(
                    name,
                    Status::Ok,
                    format!("attaches: {}", b.describe()),
                ));
                chosen.get_or_insert(b);
            }
            Err(why) => {
                // A backend that cannot serve is only a failure if none can.
                checks.push(check(name, Status::Warn, why.to_string()));
                if chosen.is_none() {
                    passed_over.0.push((b, why));
                }
            }
        }
    }
    checks.push(match chosen {
        Some(b) if programs_ok => {
            let passed_over = if passed_over.0.is_empty() {
                String::new()
            } else {
                format!(", passed over {passed_over}")
            };
            check(
                "backend",
                Status::Ok,
                format!(
                    "{b}: {}; the first of {} that attaches here{passed_over}",
                    b.describe(),
                    Backend::AUTO_ORDER.map(Backend::name).join(", ")
                ),
            )
        }
        Some(_) => check(
            "backend",
            Status::Fail,
            "none: the programs every backend needs cannot load (see the failures above)",
        ),
        None => check(
            "backend",
            Status::Fail,
            "none: no backend attaches here (see the backend lines above)",
        ),
    });
    checks
}

fn capability_check() -> Check {
    let Some(mask) = system::effective_capabilities() else {
        return check(
            "capabilities",
            Status::Warn,
            "cannot read CapEff from /proc/self/status",
        );
    };
    let missing: Vec<_> = Capability::NEEDED
        .into_iter()
        .filter(|&c| !system::has_capability(mask, c))
        .map(Capability::name)
        .collect();
    if missing.is_empty() {
        check(
            "capabilities",
            Status::Ok,
            "CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN",
        )
    } else {
        check(
            "capabilities",
            Status::Fail,
            format!("missing {}: run as root", missing.join(", ")),
        )
    }
}

fn program_check(p: ProgramProbe) -> Check {
    let name = format!("program {} ({})", p.name, p.kind);
    match (p.result, p.note) {
        (Ok(()), None) => check(name, Status::Ok, "loads and attaches"),
        (Ok(()), Some(note)) => check(name, Status::Ok, format!("loads and attaches; {note}")),
        // Tracing works without it: USDT markers do not.
        (Err(e), _) if p.optional => check(name, Status::Warn, format!("{e} (no USDT markers)")),
        (Err(e), _) => check(name, Status::Fail, e.to_string()),
    }
}

/// How `--stacks auto` would take the creating stacks of process `pid`.
pub fn stacks_check(pid: u32) -> Check {
    let name = format!("stacks pid {pid}");
    match crate::unwind::explain_auto(pid) {
        Ok((mode, why)) => check(name, Status::Ok, format!("{mode}: {why}")),
        Err(e) => check(name, Status::Warn, e),
    }
}

/// Prints the checks; returns whether tracing can work.
pub fn run(format: Format) -> std::io::Result<bool> {
    run_for(format, None)
}

/// [`run`], and with `pid` the stack mode that process would get.
pub fn run_for(format: Format, pid: Option<u32>) -> std::io::Result<bool> {
    let mut checks = run_checks();
    checks.extend(pid.map(stacks_check));
    let mut out = std::io::stdout().lock();
    for c in &checks {
        match format {
            Format::Json => {
                serde_json::to_writer(
                    &mut out,
                    &serde_json::json!({"schema": crate::output::SCHEMA, "check": c}),
                )?;
                writeln!(out)?;
            }
            Format::Text => {
                let tag = match c.status {
                    Status::Ok => "ok  ",
                    Status::Warn => "warn",
                    Status::Fail => "FAIL",
                };
                writeln!(out, "{tag} {:<44} {}", c.name, c.detail)?;
            }
        }
    }
    Ok(checks.iter().all(|c| c.status != Status::Fail))
}
