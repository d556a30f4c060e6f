//! `sockscope trace`: live UDP socket lifecycle events.
use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;

use crate::{
    backend::SocketIdentity,
    clock::{Clock, monotonic_ns},
    error::{TracerError, UsageError},
    events::{Family, KernelEvent, bind_addr, comm_text},
    inventory,
    loader::{Tracer, TracerBuilder},
    markers::{MarkerTable, MarkerTarget},
    output::{Format, Record, Sink, Stacks},
    shutdown::watch_shutdown,
    sockets::{Origin, SocketInfo, SocketTable},
    stream::{self, EventStream},
    symbolize::{RawStack, StackCache},
};

#[derive(Clone, Debug)]
pub struct TraceOptions {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub format: Format,
    pub duration: Option<Duration>,
    pub output: Option<PathBuf>,
    pub stacks: bool,
    /// How user stacks are taken (with `stacks`; samples only with --pid/--comm).
    pub stack_mode: crate::unwind::StackArgs,
    pub ring_bytes: Option<u32>,
    /// `None`: the first backend that works here.
    pub backend: Option<crate::backend::Backend>,
    /// Binaries whose markers to attach (all processes running them).
    pub usdt: Vec<PathBuf>,
    /// Marker providers to attach.
    pub usdt_providers: Vec<String>,
}

/// What a finished trace saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceSummary {
    pub events: u64,
    pub lost: u64,
    pub open_sockets: usize,
}

/// Checks that need no privileges, so bad input fails before anything is loaded.
pub fn validate_target(pid: Option<u32>, comm: Option<&str>) -> Result<(), UsageError> {
    if let Some(pid) = pid
        && !PathBuf::from(format!("/proc/{pid}")).exists()
    {
        return Err(UsageError::NoSuchPid(pid));
    }
    match comm {
        Some("") => Err(UsageError::CommEmpty),
        Some(c) if c.len() > 15 => Err(UsageError::CommTooLong(c.to_owned())),
        _ => Ok(()),
    }
}

/// `--pid`'s markers are read from its executable and mapped objects: say now, before
/// anything is loaded, when they cannot be read (no ptrace rights over the process).
pub fn check_objects_readable(pid: u32) -> Result<(), TracerError> {
    let path = format!("/proc/{pid}/exe");
    std::fs::read_link(&path)
        .map(drop)
        .map_err(|e| TracerError::proc_read(pid, path, &e))
}

pub async fn run(opts: TraceOptions) -> anyhow::Result<TraceSummary> {
    validate_target(opts.pid, opts.comm.as_deref())?;
    if let Some(pid) = opts.pid {
        check_objects_readable(pid)?;
    }
    let mut sink = Sink::open(opts.output.as_deref(), opts.format)?;
    let mut stop = watch_shutdown(opts.duration).context("cannot install signal handlers")?;
    let started = monotonic_ns();

    let builder = TracerBuilder::new()
        .pid(opts.pid)
        .comm(opts.comm.as_deref())
        .ring_bytes(opts.ring_bytes)
        .backend(opts.backend)
        .kernel_stacks(opts.stacks)
        .stack_mode(if opts.stacks {
            opts.stack_mode.mode
        } else {
            crate::unwind::StackMode::Fp
        })
        .stack_bytes(opts.stack_mode.stack_bytes);
    let mut tracer = super::attach(builder).await?;
    let mut stream = EventStream::new(&mut tracer)?;
    let markers = attach_markers(&opts, &mut tracer)?;

    let mut state = TraceState::new(&opts, markers, tracer.backend().identity());
    // After attaching, so no socket falls between the inventory and the hooks.
    state.inventory(&mut sink)?;
    crate::say!("{}", attached_message(&opts));

    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            r = stream.readable() => {
                r?;
                state.apply_all(stream.drain(), &tracer, &mut sink)?;
            }
            _ = tick.tick() => state.check_lost(&tracer, &mut sink)?,
            _ = stop.changed() => break,
        }
        sink.flush().context("cannot write output")?;
    }
    // What the kernel produced before we stopped still counts.
    state.apply_all(stream.finish(), &tracer, &mut sink)?;
    state.check_lost(&tracer, &mut sink)?;
    let summary = TraceSummary {
        events: state.events,
        lost: state.lost,
        open_sockets: state.sockets.len(),
    };
    sink.write(&Record::Summary {
        events: summary.events,
        lost: summary.lost,
        open_sockets: summary.open_sockets,
        duration_ms: (monotonic_ns() - started) / 1_000_000,
    })?;
    sink.flush().context("cannot write output")?;
    drop(tracer); // detaches
    Ok(summary)
}

/// The markers of `--usdt` binaries and of the `--pid` process.
fn attach_markers(opts: &TraceOptions, tracer: &mut Tracer) -> anyhow::Result<MarkerTable> {
    let mut table = MarkerTable::default();
    let mut targets: Vec<MarkerTarget> = opts
        .usdt
        .iter()
        .cloned()
        .map(MarkerTarget::Binary)
        .collect();
    targets.extend(opts.pid.map(MarkerTarget::Process));
    for target in &targets {
        let report = table.attach(tracer, target, &opts.usdt_providers)?;
        for why in &report.skipped {
            crate::say!("sockscope: marker not attached: {why}");
        }
        if report.attached == 0 && matches!(target, MarkerTarget::Binary(_)) {
            anyhow::bail!(
                "no {} markers in {target:?}: build it with the tracer-usdt crate",
                opts.usdt_providers.join("/")
            );
        }
    }
    Ok(table)
}

fn attached_message(opts: &TraceOptions) -> String {
    let mut scope = Vec::new();
    if let Some(p) = opts.pid {
        scope.push(format!("pid {p}"));
    }
    if let Some(c) = &opts.comm {
        scope.push(format!("comm {c}"));
    }
    let scope = if scope.is_empty() {
        "all processes".to_owned()
    } else {
        scope.join(", ")
    };
    format!("sockscope: tracing UDP sockets of {scope}; Ctrl-C to stop")
}

struct TraceState {
    markers: MarkerTable,
    /// Processes that created sockets or fired markers.
    seen: rustc_hash::FxHashSet<u32>,
    clock: Clock,
    /// With `--stacks`.
    stacks: Option<StackCache>,
    sockets: SocketTable,
    pid: Option<u32>,
    comm: Option<String>,
    events: u64,
    lost: u64,
    /// What the records' `cookie` holds with this backend.
    identity: SocketIdentity,
}

impl TraceState {
    fn new(opts: &TraceOptions, markers: MarkerTable, identity: SocketIdentity) -> Self {
        Self {
            markers,
            seen: Default::default(),
            clock: Clock::new(),
            stacks: opts.stacks.then(StackCache::new),
            sockets: SocketTable::default(),
            pid: opts.pid,
            comm: opts.comm.clone(),
            events: 0,
            lost: 0,
            identity,
        }
    }

    /// Reports and remembers the UDP sockets that exist now (in scope of the filters),
    /// unbound ones included.
    fn inventory(&mut self, sink: &mut Sink) -> anyhow::Result<()> {
        for s in inventory::udp_inventory(self.pid) {
            let wanted = match (self.pid, &self.comm, s.holder) {
                (None, None, _) => true,
                (_, _, None) => false,
                (pid, comm, Some((hp, _))) => {
                    pid.is_none_or(|p| p == hp)
                        && comm
                            .as_ref()
                            .is_none_or(|c| process_comm(hp).as_deref() == Some(c))
                }
            };
            if !wanted {
                continue;
            }
            self.sockets.insert(
                s.key(self.identity),
                SocketInfo {
                    origin: Origin::Preexisting,
                    pid: s.holder.map_or(0, |h| h.0),
                    tid: 0,
                    fd: s.holder.map(|h| h.1),
                    family: s.family,
                    local: s.local,
                    created_ns: None,
                    pc_id: 0,
                },
            );
            let (local_addr, local_port) = s.local_or_unspecified();
            sink.write(&Record::Existing {
                cookie: s.key(self.identity),
                family: s.family,
                local_addr,
                local_port,
                pid: s.holder.map(|h| h.0),
                fd: s.holder.map(|h| h.1),
            })?;
        }
        Ok(())
    }

    fn apply_all(
        &mut self,
        records: Vec<stream::Record>,
        tracer: &Tracer,
        sink: &mut Sink,
    ) -> anyhow::Result<()> {
        for record in records {
            self.events += 1;
            if let Some(r) = self.apply(&record.event, record.user_stack.as_ref(), tracer) {
                sink.write(&r).context("cannot write output")?;
            }
        }
        Ok(())
    }

    /// The named stacks of a record (`--stacks` only).
    fn stacks_of(
        &mut self,
        pid: u32,
        user_id: i32,
        kernel_id: i32,
        user_raw: Option<&RawStack>,
        tracer: &Tracer,
    ) -> Option<Stacks> {
        let cache = self.stacks.as_mut()?;
        Some(Stacks {
            user: cache.user(pid, user_id, user_raw),
            kernel: cache.kernel(tracer.stacks(), kernel_id),
        })
    }

    /// Updates the socket table with one kernel event and says what to print.
    fn apply<'e>(
        &mut self,
        ev: &'e KernelEvent,
        user_stack: Option<&RawStack>,
        tracer: &Tracer,
    ) -> Option<Record<'e>> {
        match ev {
            KernelEvent::Create(c) => self.seen.insert(c.pid),
            KernelEvent::Marker(m) => self.seen.insert(m.pid),
            _ => false,
        };
        match ev {
            KernelEvent::Create(c) => {
                let family = Family::from(c.family);
                self.sockets.insert(
                    c.cookie,
                    SocketInfo {
                        origin: Origin::Traced,
                        pid: c.pid,
                        tid: c.tid,
                        fd: Some(c.fd),
                        family,
                        local: None,
                        created_ns: Some(c.ts_ns),
                        pc_id: c.pc_id,
                    },
                );
                let stacks =
                    self.stacks_of(c.pid, c.user_stack, c.kernel_stack, user_stack, tracer);
                Some(Record::Create {
                    time: self.clock.wall_time(c.ts_ns),
                    mono_ns: c.ts_ns,
                    pid: c.pid,
                    tid: c.tid,
                    comm: comm_text(&c.comm),
                    fd: c.fd,
                    cookie: c.cookie,
                    family,
                    pc_id: (c.pc_id != 0).then_some(c.pc_id),
                    stacks,
                })
            }
            KernelEvent::Bind(b) => {
                let addr = bind_addr(b);
                self.sockets.set_local(b.cookie, addr, b.port);
                Some(Record::Bind {
                    time: self.clock.wall_time(b.ts_ns),
                    mono_ns: b.ts_ns,
                    pid: b.pid,
                    tid: b.tid,
                    cookie: b.cookie,
                    family: Family::from(b.family),
                    local_addr: addr,
                    local_port: b.port,
                })
            }
            KernelEvent::Release(r) => {
                let known = self.sockets.remove(r.cookie);
                Some(Record::Release {
                    time: self.clock.wall_time(r.ts_ns),
                    mono_ns: r.ts_ns,
                    pid: r.pid,
                    tid: r.tid,
                    comm: comm_text(&r.comm),
                    cookie: r.cookie,
                    family: Family::from(r.family),
                    origin: known.as_ref().map(|k| k.origin),
                    fd: known.as_ref().and_then(|k| k.fd),
                    local_addr: known.as_ref().and_then(|k| k.local.map(|l| l.0)),
                    local_port: known.as_ref().and_then(|k| k.local.map(|l| l.1)),
                    age_ns: known
                        .and_then(|k| k.created_ns)
                        .map(|t| r.ts_ns.saturating_sub(t)),
                    closed_by_exit: r.exiting != 0,
                    // Only backends that take releasing stacks give them.
                    stacks: (r.user_stack >= 0 || r.kernel_stack >= 0)
                        .then(|| {
                            self.stacks_of(r.pid, r.user_stack, r.kernel_stack, user_stack, tracer)
                        })
                        .flatten(),
                })
            }
            KernelEvent::Marker(m) => {
                let marker = self.markers.get(m.probe)?;
                Some(Record::Marker {
                    time: self.clock.wall_time(m.ts_ns),
                    mono_ns: m.ts_ns,
                    pid: m.pid,
                    tid: m.tid,
                    provider: marker.provider.clone(),
                    name: marker.name.clone(),
                    args: marker.json_args(&m.args),
                })
            }
            // Only processes whose sockets or markers we saw: a host-wide trace would
            // otherwise list every process exit.
            // Only `check` follows execs; I/O is watched only by `check`, `watch` and
            // `daemon`.
            KernelEvent::Exec(_) | KernelEvent::IoStack(_) => None,
            KernelEvent::Exit(e) if !self.seen.contains(&e.pid) => None,
            KernelEvent::Exit(e) => Some({
                if let Some(cache) = self.stacks.as_mut() {
                    cache.forget_process(e.pid);
                }
                Record::Exit {
                    time: self.clock.wall_time(e.ts_ns),
                    mono_ns: e.ts_ns,
                    pid: e.pid,
                    open_sockets: self.sockets.iter().filter(|(_, s)| s.pid == e.pid).count(),
                }
            }),
        }
    }

    fn check_lost(&mut self, tracer: &Tracer, sink: &mut Sink) -> anyhow::Result<()> {
        let stats = tracer.stats()?;
        if stats.lost > self.lost {
            let count = stats.lost - self.lost;
            self.lost = stats.lost;
            sink.write(&Record::Lost {
                count,
                total: stats.lost,
            })?;
            crate::say!(
                "sockscope: lost {count} events (ring buffer full): the trace is incomplete"
            );
        }
        Ok(())
    }
}

fn process_comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}
