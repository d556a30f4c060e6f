//! A leak-finding session: the tracer's event stream fed, in order, to the
//! correlator, with creating stacks symbolized while the process still lives.
//! Shared by `check` and `watch`.
use crate::{
    clock::monotonic_ns,
    correlate::{
        Correlator, Finding, IoRequest, NewSocket, PcMarker, PreexistingSocket, Releaser,
        creating_site,
    },
    discovery::Discovery,
    error::TracerError,
    events::{KernelEvent, bind_addr, comm_str},
    loader::Tracer,
    markers::{AttachReport, MarkerTable, MarkerTarget, PROVIDER},
    report::Summary,
    stream::{EventStream, Record},
    symbolize::StackCache,
};

pub struct LeakSession {
    tracer: Tracer,
    stream: EventStream,
    pub markers: MarkerTable,
    pub correlator: Correlator,
    stacks: StackCache,
    lost: u64,
    last_tick_ns: u64,
    pub events: u64,
    /// Thread names, each kept once.
    comms: std::collections::HashMap<[u8; tracer_common::COMM_LEN], std::sync::Arc<str>>,
    /// Programs whose markers were looked for after an exec, by (device, inode).
    exec_programs: std::collections::HashSet<(u64, u64)>,
    /// Markers attached to programs the traced processes executed.
    pub exec_markers: usize,
    /// Host-wide (`daemon`): which processes carry markers; only those are judged.
    /// `None`: every record the kernel's filters let through is judged.
    discovery: Option<Discovery>,
    /// Processes found carrying markers and processes forgotten since the last
    /// [`Self::take_changes`], each with its place among the findings of the pass.
    changes: Vec<(usize, ProcessChange)>,
    /// Findings the pass being judged has made so far: where a change happens.
    cursor: usize,
    /// Host-wide: forget a process this long after it exited.
    retire_after_ns: Option<u64>,
    /// Host-wide: at most this many sockets in memory; beyond, new ones are not
    /// tracked (and what is alive meanwhile cannot be judged clean).
    max_sockets: Option<usize>,
    /// Sockets not tracked because of [`Self::max_sockets`].
    pub capped: u64,
    /// Host-wide: release the markers of an object no known process has mapped for
    /// this long.
    release_markers_after_ns: u64,
    /// Markers released so far (host-wide).
    pub released_markers: usize,
    /// Records were lost: the processes are to be checked against /proc once the
    /// records have caught up ([`Self::recheck_processes`]).
    recheck_pending: bool,
    /// DWARF mode: the latest unwound stack of a send or receive after the end, per
    /// socket (cookie), with the operation's time; kept until the socket is released
    /// or its leak explained.
    io_stacks: std::collections::HashMap<u64, (u64, crate::symbolize::Stack)>,
}

/// Records whose horizon is this close to now are current.
const CAUGHT_UP_NS: u64 = 50_000_000;

/// How long after its exit a process is forgotten: the releases its exit caused come
/// right after the exit record, and a late one must still find its socket.
const RETIRE_AFTER_NS: u64 = 2_000_000_000;

/// A process the session began or stopped judging (host-wide).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessChange {
    /// Found carrying markers: judged from now on. With when it started (clock ticks
    /// since boot), if known: /proc/PID shows this process only while its start time
    /// is that.
    Marked { pid: u32, started: Option<u64> },
    /// Forgotten: it exited a while ago, or its pid now belongs to another process.
    Retired(u32),
}

mod host_wide;

impl LeakSession {
    pub fn new(mut tracer: Tracer, grace_ns: u64) -> anyhow::Result<Self> {
        let stream = EventStream::new(&mut tracer)?;
        Ok(Self {
            tracer,
            stream,
            markers: MarkerTable::default(),
            correlator: Correlator::new(grace_ns),
            stacks: StackCache::new(),
            lost: 0,
            last_tick_ns: monotonic_ns(),
            events: 0,
            comms: Default::default(),
            exec_programs: Default::default(),
            exec_markers: 0,
            discovery: None,
            changes: Vec::new(),
            cursor: 0,
            retire_after_ns: None,
            max_sockets: None,
            release_markers_after_ns: host_wide::RELEASE_MARKERS_AFTER.as_nanos() as u64,
            released_markers: 0,
            recheck_pending: false,
            capped: 0,
            io_stacks: Default::default(),
        })
    }

    /// Track at most `n` sockets at once (see [`Self::capped`]).
    pub fn max_sockets(&mut self, n: usize) {
        self.max_sockets = Some(n);
    }

    /// Run time and runs of each BPF program (see [`Tracer::program_stats`]).
    pub fn program_stats(&self) -> Vec<(String, std::time::Duration, u64)> {
        self.tracer.program_stats()
    }

    /// Tracing of the running process `pid` begins now: its UDP sockets that exist
    /// already (sock_diag and its fds) are handed to the correlator, which then never
    /// judges clean a PeerConnection it did not see whole.
    pub fn join_running(&mut self, pid: u32) {
        let identity = self.tracer.backend().identity();
        let comm: std::sync::Arc<str> = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_default()
            .into();
        self.correlator.joined_running(pid, monotonic_ns());
        let held = match crate::inventory::udp_sockets_of(pid) {
            Ok(held) => held,
            Err(e) => {
                // sock_diag sees only bound sockets in sockscope's own network namespace.
                crate::say!(
                    "sockscope: cannot read pid {pid}'s sockets through its fds ({e}); listing its bound sockets in this network namespace instead"
                );
                crate::inventory::held_udp_sockets(Some(pid))
                    .into_iter()
                    .filter_map(|(s, holder)| {
                        Some(crate::inventory::HeldSocket {
                            fd: holder?.1,
                            inode: u64::from(s.inode),
                            cookie: s.cookie,
                            local: Some((s.local_addr, s.local_port)),
                        })
                    })
                    .collect()
            }
        };
        for s in held {
            self.correlator.socket_preexisting(PreexistingSocket {
                cookie: s.key(identity),
                pid,
                comm: comm.clone(),
                fd: Some(s.fd),
                local: s.local,
            });
        }
    }

    /// Attaches the markers of `providers` found at `target`.
    pub fn attach_markers(
        &mut self,
        target: &MarkerTarget,
        providers: &[String],
    ) -> Result<AttachReport, TracerError> {
        self.markers.attach(&mut self.tracer, target, providers)
    }

    /// Total events the kernel could not deliver so far.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Waits for the ring reader's next pass (then call [`Self::drain`]).
    pub async fn readable(&mut self) -> anyhow::Result<()> {
        self.stream.readable().await
    }

    /// Feeds every record read so far to the correlator, after noting losses (a
    /// record that judges, such as a process exit, must not find clean a
    /// PeerConnection whose records were lost), then judges every PeerConnection
    /// whose grace ended before the reader's horizon: a release still in the ring
    /// must not make a leak. Losses are read after the records were taken: the kernel
    /// keeps writing while the reader reads, so a record taken late (a process exit)
    /// may have been written after records that found the ring full.
    pub fn drain(&mut self) -> anyhow::Result<Vec<Finding>> {
        let records = self.stream.drain();
        self.judge(records, self.stream.horizon_ns())
    }

    /// Everything the kernel recorded until now, judged as of now.
    pub fn finish(&mut self) -> anyhow::Result<Vec<Finding>> {
        let records = self.stream.finish();
        self.judge(records, monotonic_ns())
    }

    fn judge(&mut self, records: Vec<Record>, until_ns: u64) -> anyhow::Result<Vec<Finding>> {
        let lost = self.note_losses()?;
        let mut out = Vec::new();
        for record in records {
            self.events += 1;
            self.cursor = out.len();
            out.extend(self.apply(record));
        }
        // /proc tells how things are now: compared only once the records judged are
        // as recent (the reader may hold a backlog of seconds), or a process's own
        // records still to come would be taken for its successor's.
        self.recheck_pending |= lost;
        if self.recheck_pending && monotonic_ns().saturating_sub(until_ns) < CAUGHT_UP_NS {
            self.recheck_pending = false;
            self.cursor = out.len();
            out.extend(self.recheck_processes(until_ns));
        }
        self.apply_io_requests();
        out.extend(self.correlator.advance(until_ns));
        self.cursor = out.len();
        self.retire(until_ns);
        self.stacks.evict_unused();
        self.cursor = 0;
        let Self {
            tracer,
            stacks,
            io_stacks,
            ..
        } = self;
        crate::explain::explain_leaks(
            &mut out,
            tracer.backend().identity(),
            tracer.io(),
            monotonic_ns(),
            // The DWARF-unwound stack of its last sampled operation where there is
            // one, else the kernel's frame-pointer walk of its last operation.
            |pid, cookie, s| match io_stacks.remove(&cookie) {
                Some((at, stack)) => (stack.to_vec(), Some(at)),
                None => {
                    let id = s.last_stack_after_end;
                    let stack = stacks.user_from_map(tracer.stacks(), pid, id).to_vec();
                    let at = (!stack.is_empty()).then_some(s.last_ts_ns);
                    (stack, at)
                }
            },
        );
        Ok(out)
    }

    /// Hands the correlator's changes of watched sockets to the kernel's I/O hooks.
    fn apply_io_requests(&mut self) {
        let requests = self.correlator.take_io_requests();
        let Some(io) = self.tracer.io_mut() else {
            return;
        };
        for r in requests {
            match r {
                IoRequest::Watch {
                    pid,
                    fd,
                    cookie,
                    pc_id,
                    ended_ns,
                    traced,
                } => io.watch(pid, fd, cookie, pc_id, ended_ns, traced),
                IoRequest::Forget { pid, fd, cookie } => io.forget(pid, fd, cookie),
            }
        }
    }

    /// Records the kernel had no room for since the last look make everything alive
    /// meanwhile incomplete.
    /// Whether records were lost since the last look.
    fn note_losses(&mut self) -> anyhow::Result<bool> {
        let now = monotonic_ns();
        let stats = self.tracer.stats()?;
        let lost = stats.lost > self.lost;
        if lost {
            self.correlator.events_lost(self.last_tick_ns, now);
            crate::say!(
                "sockscope: lost {} events (ring buffer full): verdicts of PeerConnections alive meanwhile are incomplete",
                stats.lost - self.lost
            );
            self.lost = stats.lost;
        }
        self.last_tick_ns = now;
        Ok(lost)
    }

    fn apply(&mut self, record: Record) -> Vec<Finding> {
        match record.event {
            KernelEvent::Create(e) => {
                if !self.wanted(e.pid) {
                    return Vec::new();
                }
                if self
                    .max_sockets
                    .is_some_and(|cap| self.correlator.sizes().0 >= cap)
                {
                    if self.capped == 0 {
                        crate::say!(
                            "sockscope: warning: {} sockets tracked, the cap (--max-sockets): new sockets are not tracked until some are released; PeerConnections alive meanwhile are judged incomplete",
                            self.correlator.sizes().0
                        );
                    }
                    self.capped += 1;
                    self.correlator.events_lost(e.ts_ns, e.ts_ns);
                    return Vec::new();
                }
                let c = &mut self.correlator;
                let comm = self
                    .comms
                    .entry(e.comm)
                    .or_insert_with(|| comm_str(&e.comm).into())
                    .clone();
                c.socket_created(NewSocket {
                    cookie: e.cookie,
                    pid: e.pid,
                    tid: e.tid,
                    comm,
                    fd: (e.fd >= 0).then_some(e.fd),
                    created_ns: e.ts_ns,
                    span_pc: e.pc_id,
                    stack: self
                        .stacks
                        .user(e.pid, e.user_stack, record.user_stack.as_ref()),
                });
                Vec::new()
            }
            KernelEvent::Bind(e) => {
                self.correlator
                    .socket_bound(e.cookie, bind_addr(&e), e.port);
                Vec::new()
            }
            KernelEvent::Release(e) => {
                let c = &mut self.correlator;
                // The kernel closing a dying process's files: judge what that process
                // closed before this socket counts as released.
                let mut found = if e.exiting != 0 {
                    c.process_exited(e.pid, e.ts_ns)
                } else {
                    Vec::new()
                };
                let late = found.len();
                found.extend(c.socket_released(e.cookie, e.ts_ns));
                self.io_stacks.remove(&e.cookie);
                // A leak released after all: say who did it (rare: worth a symbolization).
                for f in &mut found[late..] {
                    if let Finding::Late { released_by, .. } = f {
                        *released_by = Some(Releaser {
                            pid: e.pid,
                            tid: e.tid,
                            comm: comm_str(&e.comm),
                            stack: self
                                .stacks
                                .user(e.pid, e.user_stack, record.user_stack.as_ref())
                                .to_vec(),
                        });
                    }
                }
                found
            }
            KernelEvent::Marker(m) => {
                if !self.wanted(m.pid) {
                    return self.correlator.advance(m.ts_ns);
                }
                let marker = self.markers.get(m.probe).and_then(|a| a.pc_marker(&m.args));
                if let (Some(PcMarker::Open(pc_id)), true) = (marker, m.user_stack >= 0) {
                    let stack = self
                        .stacks
                        .user(m.pid, m.user_stack, record.user_stack.as_ref());
                    if let Some(site) = creating_site(&stack) {
                        self.correlator.pc_opened_at(m.pid, pc_id, site);
                    }
                }
                match marker {
                    Some(pm) => self.correlator.marker(m.pid, pm, m.ts_ns),
                    None => self.correlator.advance(m.ts_ns),
                }
            }
            KernelEvent::Exec(e) => {
                let found = self.program_replaced(e.pid, e.ts_ns);
                self.reborn(e.pid, e.ts_ns);
                if let Some(d) = self.discovery.as_mut() {
                    // Another program in the same process: look again, at this process
                    // (its pid may be another's by now).
                    d.forget(e.pid);
                    self.wanted_as(e.pid, Some(&e.identity));
                } else {
                    self.executed(e.pid, e.stopped != 0);
                }
                found
            }
            KernelEvent::Exit(e) => {
                self.stacks.forget_process(e.pid);
                self.correlator.process_exited(e.pid, e.ts_ns)
            }
            KernelEvent::IoStack(io) => {
                if self.wanted(io.pid) {
                    let stack = self
                        .stacks
                        .user(io.pid, io.user_stack, record.user_stack.as_ref());
                    self.io_stacks.insert(io.cookie, (io.ts_ns, stack));
                }
                Vec::new()
            }
        }
    }

    /// Process `pid` executed a program (and the kernel stopped it, if `stopped`):
    /// attach that program's markers (once per program), then let it run. It is
    /// continued even when attaching fails: never leave a process stopped.
    fn executed(&mut self, pid: u32, stopped: bool) {
        use std::os::unix::fs::MetadataExt as _;
        let exe = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
        if let Ok(meta) = std::fs::metadata(&exe)
            && self.exec_programs.insert((meta.dev(), meta.ino()))
        {
            let shown = std::fs::read_link(&exe).unwrap_or_else(|_| exe.clone());
            match self.markers.attach(
                &mut self.tracer,
                &MarkerTarget::Binary(exe),
                &[PROVIDER.to_owned()],
            ) {
                Ok(r) if r.attached > 0 => {
                    self.exec_markers += r.attached;
                    crate::say!(
                        "sockscope: attached {} markers of {} (pid {pid})",
                        r.attached,
                        shown.display()
                    );
                }
                Ok(_) => {}
                Err(e) => crate::say!(
                    "sockscope: markers of {} (pid {pid}) not attached: {e}",
                    shown.display()
                ),
            }
        }
        if stopped {
            // SAFETY: continues the process the kernel stopped for us.
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        }
    }

    /// The summary of everything judged so far.
    pub fn summary(
        &self,
        grace: std::time::Duration,
        markers_attached: usize,
        findings: &[Finding],
    ) -> Summary {
        let mut summary = Summary {
            grace_ms: grace.as_millis() as u64,
            peer_connections: self.correlator.pc_counts().0,
            never_closed: self.correlator.unclosed().len(),
            events: self.events,
            lost: self.lost,
            markers_attached,
            ..Default::default()
        };
        for f in findings {
            summary.count(f);
        }
        summary
    }
}
