//! `sockscope daemon`: judges every process on the host that carries sockscope
//! markers, without being told which: those running when it starts (found by their
//! mapped objects) and every one started later (host-wide exec reports, never
//! stopped). Findings go out as JSON Lines with where each process lives (host pid,
//! pid in its namespace, cgroup, container id); numbers for monitoring on
//! `--metrics`. Memory follows what is alive: exited processes and PeerConnections with
//! nothing left to report are forgotten, and a cap bounds the sockets held.
mod context;
mod metrics;
mod sink;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

pub use context::ProcessContext;

use crate::{
    correlate::Finding,
    discovery::Discovery,
    loader::TracerBuilder,
    output::SCHEMA,
    session::{LeakSession, ProcessChange},
    shutdown::watch_shutdown_except_hangup,
};

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub grace: Duration,
    /// JSON Lines to this file (reopened on SIGHUP) instead of stdout.
    pub output: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    pub duration: Option<Duration>,
    pub max_sockets: usize,
    /// How long a program's markers and parsed debug information are kept once no
    /// process runs it.
    pub forget_programs_after: std::time::Duration,
    /// Turn the kernel's BPF run-time statistics on while running.
    pub bpf_stats: bool,
    pub ring_bytes: Option<u32>,
    pub backend: Option<crate::backend::Backend>,
    /// Stacks of the marked processes (`--stacks`, `--stack-bytes`): DWARF samples are
    /// taken only for the processes found carrying markers.
    pub stacks: crate::unwind::StackArgs,
}

/// Sockets held at most by default: a few hundred bytes each, some hundreds of MB in
/// the worst case, far above what a media server holds.
pub const DEFAULT_MAX_SOCKETS: usize = 1_000_000;

struct Daemon {
    session: LeakSession,
    sink: sink::Sink,
    contexts: HashMap<u32, ProcessContext>,
    counters: metrics::Counters,
}

impl Daemon {
    /// Writes findings with their process's context, and counts them.
    fn emit(&mut self, found: Vec<Finding>) -> anyhow::Result<()> {
        for f in found {
            self.counters.count(&f);
            let mut v = serde_json::to_value(&f)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("schema".into(), SCHEMA.into());
                let ctx = self.contexts.get(&f.pid());
                o.insert("process".into(), serde_json::to_value(ctx)?);
            }
            self.sink.line(&v).context("cannot write a finding")?;
        }
        Ok(())
    }

    /// Findings of one pass, with the processes found and forgotten in it where they
    /// happened among them: a process gets its context and `process` record before
    /// its first finding, and loses them after its last, so when a pid comes round
    /// again within a pass, each finding carries the context of the process it is
    /// about.
    fn pass(&mut self, found: Vec<Finding>) -> anyhow::Result<()> {
        let mut found = found.into_iter();
        let mut emitted = 0;
        for (at, change) in self.session.take_changes() {
            let before = at.saturating_sub(emitted);
            self.emit(found.by_ref().take(before).collect())?;
            emitted += before;
            match change {
                ProcessChange::Marked { pid, started } => {
                    let ctx = ProcessContext::read(pid, started);
                    self.process_record("found", &ctx)?;
                    self.contexts.insert(pid, ctx);
                }
                ProcessChange::Retired(pid) => {
                    if let Some(ctx) = self.contexts.remove(&pid) {
                        self.process_record("exited", &ctx)?;
                    }
                }
            }
        }
        self.emit(found.collect())
    }

    fn process_record(&mut self, state: &str, ctx: &ProcessContext) -> anyhow::Result<()> {
        self.sink
            .line(&serde_json::json!({
                "schema": SCHEMA, "event": "process", "state": state, "process": ctx,
            }))
            .context("cannot write a process record")
    }

    fn page(&self) -> String {
        let mut per_pid: HashMap<u32, usize> = HashMap::new();
        for (s, _, _) in self.session.correlator.live_sockets() {
            *per_pid.entry(s.pid).or_default() += 1;
        }
        let mut processes: Vec<metrics::ProcessGauge> = self
            .contexts
            .values()
            .map(|c| metrics::ProcessGauge {
                pid: c.host_pid,
                comm: c.comm.clone(),
                container_id: c.container_id.clone(),
                open_udp_sockets: per_pid.get(&c.host_pid).copied().unwrap_or(0),
            })
            .collect();
        processes.sort_by_key(|p| p.pid);
        let (pcs_open, pcs_closing) = self.session.correlator.pc_states();
        let (tracked_sockets, tracked_pcs) = self.session.correlator.sizes();
        let gauges = metrics::Gauges {
            processes,
            pcs_open,
            pcs_closing,
            leaked_open: self.session.correlator.leaked_open(),
            tracked_sockets,
            tracked_pcs,
            markers_attached: self.session.markers.len(),
            markers_released: self.session.released_markers,
            gone_before_found: self.session.gone_before_found(),
            events: self.session.events,
            lost: self.session.lost(),
            capped: self.session.capped,
            bpf: self.session.program_stats(),
            rss_bytes: rss_bytes(),
        };
        metrics::render(&self.counters, &gauges)
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

pub async fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    let mut stop =
        watch_shutdown_except_hangup(opts.duration).context("cannot install signal handlers")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot install signal handlers")?;
    let sink = sink::Sink::open(opts.output.clone()).map_err(|source| {
        crate::error::UsageError::Output {
            path: opts.output.clone().unwrap_or_default(),
            source,
        }
    })?;
    let page = Arc::new(Mutex::new(String::new()));
    if let Some(addr) = opts.metrics {
        metrics::serve(addr, page.clone())
            .await
            .map_err(|e| crate::error::UsageError::Metrics { addr, source: e })?;
    }
    // Kept while running: the kernel's run-time accounting of BPF programs.
    let _bpf_stats = if opts.bpf_stats {
        Some(
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .context("cannot turn BPF run-time statistics on")?,
        )
    } else {
        None
    };
    let builder = TracerBuilder::new()
        .exec_all(true)
        .io_watch(true)
        .ring_bytes(opts.ring_bytes)
        .backend(opts.backend)
        .stack_mode(opts.stacks.mode)
        .stack_bytes(opts.stacks.stack_bytes)
        .sample_listed(true);
    let tracer = crate::cmd::attach(builder).await?;
    let mut session = LeakSession::new(tracer, opts.grace.as_nanos() as u64)?;
    session.host_wide();
    session.max_sockets(opts.max_sockets);
    session.forget_programs_after(opts.forget_programs_after);

    // The processes running now: those with markers are joined as they are (their
    // PeerConnections open now are never judged clean).
    let me = std::process::id();
    let running = Discovery::running();
    let mut joined = 0;
    for pid in running.iter().copied().filter(|p| *p != me) {
        if session.consider(pid) {
            session.join_running(pid);
            joined += 1;
        }
    }
    crate::say!(
        "sockscope: daemon judging every process with sockscope markers ({joined} of {} running now; later ones as they start), grace {:?}{}",
        running.len(),
        opts.grace,
        opts.metrics
            .map(|a| format!("; metrics on http://{a}/metrics"))
            .unwrap_or_default()
    );
    let mut d = Daemon {
        session,
        sink,
        contexts: HashMap::new(),
        counters: metrics::Counters::default(),
    };
    d.pass(Vec::new())?;
    if opts.metrics.is_some()
        && let Ok(mut p) = page.lock()
    {
        *p = d.page();
    }
    // Under systemd (Type=notify): started means judging, with a page to scrape.
    if let Err(e) = crate::system::service::notify("READY=1") {
        crate::say!("sockscope: cannot tell the service manager the daemon is ready: {e}");
    }
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = d.session.readable() => {
                r?;
                let found = d.session.drain()?;
                d.pass(found)?;
            }
            _ = refresh.tick() => {
                if opts.metrics.is_some() {
                    let text = d.page();
                    if let Ok(mut p) = page.lock() {
                        *p = text;
                    }
                }
            }
            _ = hangup.recv() => {
                d.sink.reopen().context("cannot reopen the output file")?;
                crate::say!("sockscope: SIGHUP: output reopened");
            }
            _ = stop.changed() => break,
        }
    }
    let _ = crate::system::service::notify("STOPPING=1");
    let found = d.session.finish()?;
    d.pass(found)?;
    crate::say!(
        "sockscope: daemon stopped: {} events, {} lost, {} PeerConnections judged",
        d.session.events,
        d.session.lost(),
        d.counters.judged()
    );
    Ok(())
}
