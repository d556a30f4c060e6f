//! `sockscope watch --pid P`: attach to a running process and its USDT markers, and
//! report leaks as its PeerConnections close. Ends on Ctrl-C/SIGTERM or when P exits.
use std::time::Duration;

use anyhow::Context as _;

use crate::{
    cmd::exit_watch::ExitWatch,
    loader::TracerBuilder,
    markers::{MarkerTarget, PROVIDER},
    output::Format,
    report::{FindingLog, Outcome, write_summary},
    session::LeakSession,
    shutdown::watch_shutdown,
};

#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub pid: u32,
    pub grace: Duration,
    pub format: Format,
    pub duration: Option<Duration>,
    /// PeerConnections left open with sockets at the process's exit make it exit 1.
    pub strict: bool,
    pub ring_bytes: Option<u32>,
    /// `None`: the first backend that works here.
    pub backend: Option<crate::backend::Backend>,
    /// How creating stacks are taken.
    pub stacks: crate::unwind::StackArgs,
}

pub async fn run(opts: WatchOptions) -> anyhow::Result<Outcome> {
    // A pidfd: a zombie counts as exited, and a process reusing the pid is not P.
    let mut exit = ExitWatch::new(opts.pid)?;
    let mut stop = watch_shutdown(opts.duration).context("cannot install signal handlers")?;
    let builder = TracerBuilder::new()
        .pid(Some(opts.pid))
        .ring_bytes(opts.ring_bytes)
        .io_watch(true)
        .backend(opts.backend)
        .stack_mode(opts.stacks.mode)
        .stack_bytes(opts.stacks.stack_bytes);
    let tracer = super::attach(builder).await?;
    let mut session = LeakSession::new(tracer, opts.grace.as_nanos() as u64)?;
    // Its sockets from before now, so that PeerConnections opened before the attach
    // can list them (they are never judged clean).
    session.join_running(opts.pid);
    let report =
        session.attach_markers(&MarkerTarget::Process(opts.pid), &[PROVIDER.to_owned()])?;
    for why in &report.skipped {
        crate::say!("sockscope: marker not attached: {why}");
    }
    if report.attached == 0 {
        crate::say!(
            "sockscope: process {} has no sockscope markers: only sockets, no PeerConnection verdicts",
            opts.pid
        );
    }
    crate::say!(
        "sockscope: watching pid {} ({} markers), grace {:?}; Ctrl-C to stop",
        opts.pid,
        report.attached,
        opts.grace
    );

    let mut log = FindingLog::new(opts.format);
    // The reader passes over the ring at least every `stream::POLL`: each pass
    // judges the graces that ended before it.
    loop {
        tokio::select! {
            r = session.readable() => { r?; log.emit(session.drain()?)?; }
            () = ExitWatch::exited(Some(&mut exit)) => break,
            _ = stop.changed() => break,
        }
    }
    log.emit(session.finish()?)?;
    let summary = session.summary(opts.grace, report.attached, &log.findings);
    write_summary(&mut std::io::stdout().lock(), &summary, opts.format)?;
    super::warn_unclosed(&summary, opts.strict);
    Ok(summary.outcome(opts.strict))
}
