//! `sockscope check -- CMD ARGS...`: runs CMD under tracing and judges every
//! PeerConnection it closes. Made for CI: exit 1 on any leak, 0 when clean, 2 when no
//! verdict can be given (usage, environment, lost events, CMD failed to run).
use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::ExitStatus,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    error::UsageError,
    loader::TracerBuilder,
    markers::{MarkerTarget, PROVIDER},
    output::Format,
    report::{FindingLog, Outcome, SavedReport},
    session::LeakSession,
    shutdown::{StopReason, watch_shutdown},
    system::ScopedCgroup,
};

#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub grace: Duration,
    pub format: Format,
    pub report: Option<PathBuf>,
    /// Where the records and the summary go instead of stdout.
    pub output: Option<PathBuf>,
    /// Where to write the run as JUnit XML.
    pub junit: Option<PathBuf>,
    /// PeerConnections left open with sockets at their process's exit fail the check.
    pub strict: bool,
    pub ring_bytes: Option<u32>,
    /// `None`: the first backend that works here.
    pub backend: Option<crate::backend::Backend>,
    pub command: Vec<String>,
    /// How creating stacks are taken.
    pub stacks: crate::unwind::StackArgs,
}

/// CMD resolved through PATH, as exec would.
fn resolve(cmd: &str) -> Result<PathBuf, UsageError> {
    let found = if cmd.contains('/') {
        Some(PathBuf::from(cmd)).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join(cmd))
            .find(|p| p.is_file())
    };
    found.ok_or_else(|| UsageError::CommandNotFound(cmd.to_owned()))
}

/// The uid/gid to run CMD as: the invoking user's under sudo, else ours.
fn sudo_ids() -> Option<(u32, u32)> {
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    Some((uid, gid))
}

fn spawn(
    opts: &CheckOptions,
    exe: &Path,
    cgroup: &ScopedCgroup,
) -> anyhow::Result<tokio::process::Child> {
    let procs = CString::new(cgroup.procs_file().as_os_str().as_bytes()).context("cgroup path")?;
    let ids = sudo_ids();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&opts.command[1..]).arg0(&opts.command[0]);
    // SAFETY: runs in the forked child before exec; only async-signal-safe calls
    // (open, write, close, setgroups, setgid, setuid) on data prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            // Into the check's cgroup first, so every socket of CMD is seen.
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            if let Some((uid, gid)) = ids
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    Ok(child)
}

fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended".into(),
    }
}

pub async fn run(opts: CheckOptions) -> anyhow::Result<Outcome> {
    let exe = resolve(&opts.command[0])?;
    // Output files are made now, so a bad path fails before the command runs.
    for path in opts.report.iter().chain(&opts.junit) {
        std::fs::File::create(path).map_err(|source| UsageError::Output {
            path: path.clone(),
            source,
        })?;
    }
    let started = (std::time::Instant::now(), std::time::SystemTime::now());
    // Before anything is attached or started: a path that cannot be written ends here.
    let mut log = match &opts.output {
        Some(path) => FindingLog::to_file(opts.format, path)
            .with_context(|| format!("cannot create {}", path.display()))?,
        None => FindingLog::new(opts.format),
    };
    let mut stop = watch_shutdown(None).context("cannot install signal handlers")?;
    let cgroup = ScopedCgroup::create("check")?;
    let builder = TracerBuilder::new()
        .cgroup(Some(cgroup.path().to_owned()))
        .follow_exec(true)
        .ring_bytes(opts.ring_bytes)
        .io_watch(true)
        .backend(opts.backend)
        .stack_mode(opts.stacks.mode)
        .stack_bytes(opts.stacks.stack_bytes);
    let tracer = super::attach(builder).await?;
    let mut session = LeakSession::new(tracer, opts.grace.as_nanos() as u64)?;
    if opts.report.is_some() {
        session
            .correlator
            .keep_timeline(crate::clock::monotonic_ns());
    }

    // Markers of CMD's own binary, before it starts (its processes are found through
    // the cgroup filter).
    let providers = [PROVIDER.to_owned()];
    let report = session.attach_markers(&MarkerTarget::Binary(exe.clone()), &providers);
    let markers_attached = match report {
        Ok(r) => {
            for why in &r.skipped {
                crate::say!("sockscope: marker not attached: {why}");
            }
            r.attached
        }
        Err(e) => bail!("cannot read the markers of {}: {e}", exe.display()),
    };
    if markers_attached == 0 {
        crate::say!(
            "sockscope: {} has no sockscope markers; those of the programs it runs are attached as they start (add the tracer-usdt crate where PeerConnections live)",
            exe.display()
        );
    }

    // From here on a process of the cgroup may be stopped at exec for us: should we be
    // killed, the guard continues it.
    let guard = crate::system::exec_guard::ExecGuard::start(cgroup.path())
        .context("cannot start the exec guard (a copy of sockscope)")?;
    let mut child = spawn(&opts, &exe, &cgroup)?;
    crate::say!(
        "sockscope: checking `{}` (pid {}), grace {:?}",
        opts.command.join(" "),
        child.id().unwrap_or(0),
        opts.grace
    );
    // The reader passes over the ring at least every `stream::POLL`: each pass
    // judges the graces that ended before it.
    let status = loop {
        tokio::select! {
            r = session.readable() => { r?; log.emit(session.drain()?)?; }
            status = child.wait() => break status.context("waiting for the command")?,
            _ = stop.changed() => {
                // Passed on to CMD (ours to stop); its exit ends the check.
                if let (StopReason::Signal(sig), Some(pid)) = (*stop.borrow(), child.id()) {
                    // SAFETY: our own child's pid.
                    unsafe { libc::kill(pid as i32, sig) };
                }
            }
        }
    };
    // Descendants may outlive CMD; give the kernel's last records time to arrive.
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.emit(session.finish()?)?;
    let markers_attached = markers_attached + session.exec_markers;
    let mut summary = session.summary(opts.grace, markers_attached, &log.findings);
    summary.command = opts.command.clone();
    summary.command_status = Some(describe(&status));
    log.summary(&summary)?;
    if let Some(path) = &opts.junit {
        let xml = crate::junit::render(
            &log.findings,
            &summary,
            opts.strict,
            started.0.elapsed().as_secs_f64(),
            &humantime::format_rfc3339_seconds(started.1).to_string(),
        );
        std::fs::write(path, xml).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &opts.report {
        let saved = SavedReport {
            schema: crate::output::SCHEMA,
            findings: log.findings,
            summary: summary.clone(),
            timeline: session.correlator.timeline(crate::clock::monotonic_ns()),
        };
        std::fs::write(path, serde_json::to_vec_pretty(&saved)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    drop(session); // detaches everything before the cgroup goes
    drop(guard);
    drop(cgroup);

    super::warn_unclosed(&summary, opts.strict);
    let outcome = match summary.outcome(opts.strict) {
        Outcome::Inconclusive => {
            crate::say!(
                "sockscope: {} events were lost: no clean verdict can be given (raise --ring-bytes)",
                summary.lost
            );
            Outcome::Inconclusive
        }
        Outcome::Clean if !status.success() => {
            crate::say!(
                "sockscope: the command {}: no leaks found in what ran, but the check is not clean",
                describe(&status)
            );
            Outcome::Inconclusive
        }
        other => other,
    };
    Ok(outcome)
}
