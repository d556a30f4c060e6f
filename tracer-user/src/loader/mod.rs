//! Loads sockscope's BPF object and attaches a backend (see [`crate::backend`]): a
//! builder for the filters and sizes, and a [`Tracer`] whose drop detaches everything
//! (links are file descriptors, so even SIGKILL leaves nothing attached).
use std::{path::PathBuf, sync::Arc};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{TracePoint, UProbe},
};
use tracer_common::{COMM_LEN, UsdtSpec, stats};

pub mod cmpxchg;
mod io;
mod links;
mod probe;
pub mod sizes;

pub use io::IoWatch;
pub use links::{LinkMark, LinkSlot, Links};

pub use probe::{Probes, ProgramProbe, probe_programs};

use crate::{
    backend::{self, Backend, KernelFacts, MarkerIds, Rejections},
    error::TracerError,
    system,
    unwind::StackMode,
};

/// The embedded BPF object, built by build.rs through aya-build.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sockscope-bpf"));

pub const SOCKET_EXIT_PROGRAM: &str = "sockscope_socket_exit";
/// Process exits, so releases done by the exit are told apart from the application's.
pub const PROC_EXIT_PROGRAM: &str = "sockscope_proc_exit";
pub const EXEC_PROGRAM: &str = "sockscope_exec";
/// The one uprobe program behind every USDT marker.
pub const USDT_PROGRAM: &str = "sockscope_usdt";
/// Every program sockscope attaches; all names start with this (the kernel keeps 15
/// bytes of a program name, which still carries the prefix).
pub const PROGRAM_PREFIX: &str = "sockscope_";

/// Which sockets to report and how large the kernel-side buffers are.
#[derive(Clone, Debug, Default)]
pub struct TracerBuilder {
    pid: Option<u32>,
    comm: Option<[u8; COMM_LEN]>,
    ring_bytes: Option<u32>,
    cgroup: Option<PathBuf>,
    kernel_stacks: bool,
    follow_exec: bool,
    exec_all: bool,
    io_watch: bool,
    backend: Option<Backend>,
    stack_mode: StackMode,
    stack_bytes: Option<u32>,
    sample_listed: bool,
    helper_stacks: bool,
}

impl TracerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Only sockets of this process (all its threads).
    pub fn pid(mut self, pid: Option<u32>) -> Self {
        self.pid = pid;
        self
    }

    /// Only sockets of tasks with this comm (at most 15 bytes, checked by the caller).
    pub fn comm(mut self, comm: Option<&str>) -> Self {
        self.comm = comm.map(|c| {
            let mut buf = [0u8; COMM_LEN];
            let n = c.len().min(COMM_LEN - 1);
            buf[..n].copy_from_slice(&c.as_bytes()[..n]);
            buf
        });
        self
    }

    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub fn ring_bytes(mut self, bytes: Option<u32>) -> Self {
        self.ring_bytes = bytes;
        self
    }

    /// Also take the kernel stack of each socket creation. Off by default: on this
    /// backend it is always the `socket(2)` syscall path, and walking it costs about
    /// as much as the rest of the create hooks together (see BENCHMARKS.md).
    pub fn kernel_stacks(mut self, on: bool) -> Self {
        self.kernel_stacks = on;
        self
    }

    /// Stop every process of the cgroup (see [`Self::cgroup`]; refused without one)
    /// that executes a new program until user space continues it, so the program's
    /// markers are attached before it runs ([`KernelEvent::Exec`]).
    ///
    /// [`KernelEvent::Exec`]: crate::events::KernelEvent::Exec
    pub fn follow_exec(mut self, on: bool) -> Self {
        self.follow_exec = on;
        self
    }

    /// Report every program executed on the host ([`KernelEvent::Exec`], never
    /// stopped), for the daemon to look for new programs' markers.
    ///
    /// [`KernelEvent::Exec`]: crate::events::KernelEvent::Exec
    pub fn exec_all(mut self, on: bool) -> Self {
        self.exec_all = on;
        self
    }

    /// Also attach the I/O hooks that watch the sockets of PeerConnections (see
    /// [`IoWatch`]), for the leak explanation.
    pub fn io_watch(mut self, on: bool) -> Self {
        self.io_watch = on;
        self
    }

    /// How creating stacks are taken (see [`crate::unwind`]). Samples are taken only
    /// for the processes the filters select (`pid`, `comm`, `cgroup`): without a
    /// filter the mode is frame pointers whatever is asked.
    pub fn stack_mode(mut self, mode: StackMode) -> Self {
        self.stack_mode = mode;
        self
    }

    /// Bytes of user stack copied per sample (default
    /// [`tracer_common::STACK_SAMPLE_DEFAULT`], at most
    /// [`tracer_common::STACK_SAMPLE_MAX`]).
    pub fn stack_bytes(mut self, bytes: Option<u32>) -> Self {
        self.stack_bytes = bytes;
        self
    }

    /// Take creating user stacks with the kernel's `bpf_get_stackid` even where the
    /// create program can walk them itself (see tracer-ebpf/src/walk.rs): the
    /// reference the walk is compared with.
    pub fn helper_stacks(mut self, on: bool) -> Self {
        self.helper_stacks = on;
        self
    }

    /// Whether the create program walks user stacks itself: on x86_64 kernels with
    /// `bpf_task_pt_regs` (5.15), unless [`Self::helper_stacks`] is asked for.
    pub fn walks_stacks(&self) -> bool {
        cfg!(target_arch = "x86_64") && !self.helper_stacks && kernel_copies_user_stacks()
    }

    /// Host-wide (the daemon): take DWARF samples of the processes listed with
    /// [`Tracer::sample_process`] (the ones being judged), as a filter would select them.
    pub fn sample_listed(mut self, on: bool) -> Self {
        self.sample_listed = on;
        self
    }

    /// The stack mode the kernel will use: samples only where a filter is set or the
    /// processes are listed ([`Self::sample_listed`]).
    pub fn effective_stack_mode(&self) -> StackMode {
        if !(self.pid.is_some()
            || self.comm.is_some()
            || self.cgroup.is_some()
            || self.sample_listed)
        {
            return StackMode::Fp;
        }
        if self.stack_mode != StackMode::Fp && !kernel_copies_user_stacks() {
            crate::say!(
                "sockscope: this kernel cannot copy user registers and stacks for DWARF unwinding (bpf_task_pt_regs, Linux 5.15): frame-pointer stacks only"
            );
            return StackMode::Fp;
        }
        self.stack_mode
    }

    /// This backend only; `None`: the first of [`Backend::AUTO_ORDER`] that attaches.
    pub fn backend(mut self, backend: Option<Backend>) -> Self {
        self.backend = backend;
        self
    }

    /// Scope tracing to this cgroup (v2) and attach the cgroup hooks there instead of
    /// the root of the hierarchy.
    pub fn cgroup(mut self, path: Option<PathBuf>) -> Self {
        self.cgroup = path;
        self
    }

    /// Load and attach. Blocking (the verifier can take a while): call it from
    /// `spawn_blocking` in async code.
    pub fn attach(self) -> Result<Tracer, TracerError> {
        system::ensure_tracefs()?;
        // With a cgroup of its own, everything is scoped to it (see FILTER_CGROUP).
        let cgroup_id: u64 = match &self.cgroup {
            Some(path) => std::fs::metadata(path)
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .map_err(|source| TracerError::OpenCgroup {
                    path: path.clone(),
                    source,
                })?,
            None => 0,
        };
        let facts = KernelFacts::read();
        let comm = self.comm.unwrap_or([0; COMM_LEN]);
        let stack_mode = self.effective_stack_mode();
        let mut ebpf = configured_load(
            &LoadConfig {
                io_watch: self.io_watch,
                pid: self.pid.unwrap_or(0),
                comm,
                cgroup_id,
                ring_bytes: self.ring_bytes,
                kernel_stacks: self.kernel_stacks,
                stack_mode,
                stack_bytes: self.stack_bytes,
                follow_exec: self.follow_exec,
                exec_all: self.exec_all,
                walk_stacks: self.walks_stacks(),
                sample_listed: self.sample_listed && stack_mode != StackMode::Fp,
            },
            &facts,
        )?;

        let mut links = Links::default();
        // The fd pairing must be in place before the first socket is stashed.
        attach_tracepoint(
            &mut ebpf,
            &mut links,
            SOCKET_EXIT_PROGRAM,
            ("syscalls", "sys_exit_socket"),
        )?;
        let (backend, rejections) = choose_backend(
            &mut ebpf,
            &mut links,
            self.backend,
            &facts,
            self.cgroup.as_ref(),
        )?;

        // Only where the record has `group_dead` where the program reads it (6.x).
        let exits_traced =
            system::tracepoint_field_offset("sched", "sched_process_exit", "group_dead")
                == Some(32);
        if exits_traced {
            attach_tracepoint(
                &mut ebpf,
                &mut links,
                PROC_EXIT_PROGRAM,
                ("sched", "sched_process_exit"),
            )?;
        }

        // Stopping is never host-wide: the program stops only in the cgroup (it checks
        // the filter); host-wide it only reports.
        if (self.follow_exec && cgroup_id != 0) || self.exec_all {
            attach_tracepoint(
                &mut ebpf,
                &mut links,
                EXEC_PROGRAM,
                ("sched", "sched_process_exec"),
            )?;
        }

        // Loaded now, attached per marker later (see `markers`); not at all where
        // markers cannot be told apart (attaching them says why).
        if facts.markers.is_some() {
            let usdt: &mut UProbe = program(&mut ebpf, USDT_PROGRAM)?;
            usdt.load().map_err(prog_err(USDT_PROGRAM, "loaded"))?;
        }

        let io = if self.io_watch {
            Some(IoWatch::attach(&mut ebpf, &mut links)?)
        } else {
            None
        };

        let events = take_map(&mut ebpf, "EVENTS", RingBuf::try_from)?;
        let stacks = take_map(&mut ebpf, "STACKS", StackTraceMap::try_from)?;
        let stats = take_map(&mut ebpf, "STATS", PerCpuArray::try_from)?;
        let usdt_specs = take_map(&mut ebpf, "USDT_SPECS", UsdtSpecs::try_from)?;
        let stack_modes = take_map(&mut ebpf, "STACK_MODES", aya::maps::HashMap::try_from)?;
        let walked = if self.walks_stacks() {
            Some(take_map(&mut ebpf, "WALKED", aya::maps::HashMap::try_from)?)
        } else {
            None
        };
        let usdt_sites = take_map(&mut ebpf, "USDT_SITES", UsdtSites::try_from)?;
        let sample_tgids = if self.sample_listed && stack_mode != StackMode::Fp {
            Some(take_map(
                &mut ebpf,
                "SAMPLE_TGIDS",
                aya::maps::HashMap::try_from,
            )?)
        } else {
            None
        };
        Ok(Tracer {
            links,
            ebpf,
            events: Some(events),
            stacks: Arc::new(stacks),
            stats,
            usdt_specs,
            usdt_sites,
            markers: facts.markers,
            exits_traced,
            backend,
            rejections,
            io,
            stack_mode,
            stack_modes: Some(stack_modes),
            walked,
            sample_tgids,
        })
    }
}

/// Attaches `wanted`, or without it the first backend of [`Backend::AUTO_ORDER`] that
/// attaches; also says why the ones before it were passed over.
fn choose_backend(
    ebpf: &mut Ebpf,
    links: &mut Links,
    wanted: Option<Backend>,
    facts: &KernelFacts,
    cgroup: Option<&PathBuf>,
) -> Result<(Backend, Rejections), TracerError> {
    let order = match wanted {
        Some(b) => vec![b],
        None => Backend::AUTO_ORDER.to_vec(),
    };
    let mut rejections = Rejections::default();
    for b in order {
        match backend::attach(ebpf, links, b, facts, cgroup) {
            Ok(()) => return Ok((b, rejections)),
            Err(why) if wanted.is_some() => {
                return Err(TracerError::Backend {
                    backend: b,
                    why: Box::new(why),
                });
            }
            Err(why) => rejections.0.push((b, why)),
        }
    }
    Err(TracerError::NoBackend(rejections))
}

/// Loads tracepoint program `name` and attaches it to `(category, tracepoint)`.
fn attach_tracepoint(
    ebpf: &mut Ebpf,
    links: &mut Links,
    name: &'static str,
    (category, tracepoint): (&str, &str),
) -> Result<(), TracerError> {
    let prog: &mut TracePoint = program(ebpf, name)?;
    prog.load().map_err(prog_err(name, "loaded"))?;
    let id = prog
        .attach(category, tracepoint)
        .map_err(prog_err(name, "attached"))?;
    links.adopt(prog.take_link(id));
    Ok(())
}

/// `EVENTS`' size in tracer-ebpf: about 17,000 records, 23 ms at 750k records/s, so a
/// reader that shares two cores with a churning workload and loses the CPU for a few
/// scheduler slices, or sleeps through its 10 ms poll, still finds them all. With 256
/// KiB (6 ms) the loss bench lost records from 600k/s offered; the reader alone reads
/// and formats over 2 million a second (BENCHMARKS.md).
pub const DEFAULT_RING_BYTES: u32 = 1024 * 1024;

/// The ring's default size when every traced socket creation is sampled (`dwarf`): a
/// sample is up to 32 KiB (16 KiB by default), so the frame-pointer default would hold
/// only 16 of them.
pub const DWARF_RING_BYTES: u32 = 4 * 1024 * 1024;

/// The read-only globals and map sizes fixed at load.
#[derive(Default)]
struct LoadConfig {
    /// Watch the I/O of traced sockets from their creation ([`IoWatch`]).
    io_watch: bool,
    pid: u32,
    comm: [u8; COMM_LEN],
    cgroup_id: u64,
    ring_bytes: Option<u32>,
    kernel_stacks: bool,
    stack_mode: StackMode,
    stack_bytes: Option<u32>,
    follow_exec: bool,
    /// Report every exec on the host (the daemon).
    exec_all: bool,
    /// Walk creating user stacks in the create program (see [`TracerBuilder::walks_stacks`]).
    walk_stacks: bool,
    /// Sample the processes listed in `SAMPLE_TGIDS` (the daemon).
    sample_listed: bool,
}

/// Loads the object with its read-only configuration. Shared by tracing and
/// `doctor`, so doctor verifies exactly the code that tracing runs (the verifier
/// prunes branches on these constants).
fn configured_load(cfg: &LoadConfig, facts: &KernelFacts) -> Result<Ebpf, TracerError> {
    let mut loader = EbpfLoader::new();
    // The kernel-function backends read `struct sock` at these offsets; without them
    // (no BTF) those backends are refused before they load.
    if let Ok(offsets) = &facts.offsets {
        offsets.set_globals(&mut loader);
    }
    if let Some(markers) = &facts.markers {
        markers.set_globals(&mut loader);
    }
    loader.override_global("FILTER_TGID", &cfg.pid, true);
    loader.override_global("FILTER_COMM", &cfg.comm, true);
    loader.override_global("FILTER_CGROUP", &cfg.cgroup_id, true);
    let kernel_stacks = u8::from(cfg.kernel_stacks);
    loader.override_global("KERNEL_STACKS", &kernel_stacks, true);
    let io_watch = u8::from(cfg.io_watch);
    loader.override_global("IO_WATCH", &io_watch, true);
    let exec_all = u8::from(cfg.exec_all);
    loader.override_global("EXEC_ALL", &exec_all, true);
    // Lets release events say whether a dying process's files are being closed.
    let task_flags = facts.task_flags.unwrap_or(0);
    loader.override_global("TASK_FLAGS_OFFSET", &task_flags, true);
    // Lets exec records say which process they are about (see `ProcessIdentity`).
    let process = facts.process.unwrap_or_default();
    loader.override_global("PROCESS_OFFSETS", &process, true);
    let mut sizes = sizes::MapSizes::new(
        cfg.walk_stacks,
        cfg.pid,
        cfg.comm[0] != 0 || cfg.cgroup_id != 0,
        matches!(facts.markers, Some(MarkerIds::Cookie)),
    );
    if !cfg.io_watch {
        sizes = sizes.without_io_hooks();
    }
    let slots = cmpxchg::slot_setting();
    if let Some(count) = slots.count {
        sizes = sizes.with_slots(count);
    }
    sizes.apply(&mut loader);
    let slots_on = u8::from(slots.on);
    loader.override_global("SLOTS_ON", &slots_on, true);
    let walk_stacks = u8::from(cfg.walk_stacks);
    loader.override_global("WALK_STACKS", &walk_stacks, true);
    let sampling = cfg.stack_mode != StackMode::Fp;
    let stack_mode = cfg.stack_mode.kernel_value();
    loader.override_global("STACK_MODE", &stack_mode, true);
    let stack_bytes = cfg
        .stack_bytes
        .unwrap_or(tracer_common::STACK_SAMPLE_DEFAULT)
        .min(tracer_common::STACK_SAMPLE_MAX as u32);
    loader.override_global("STACK_SAMPLE_BYTES", &stack_bytes, true);
    // `check` stops its processes at exec already; it also stops each at its first
    // sample until the reader has its memory map (a test binary may exit at once).
    let stop_for_maps = u8::from(sampling && cfg.follow_exec && cfg.cgroup_id != 0);
    loader.override_global("STOP_FOR_MAPS", &stop_for_maps, true);
    let sample_listed = u8::from(sampling && cfg.sample_listed);
    loader.override_global("SAMPLE_LISTED", &sample_listed, true);
    if sampling {
        // One 32 KiB scratch slot per CPU (one in all when nothing is sampled).
        // A CPU without a slot takes no samples (the program finds no slot).
        let cpus = aya::util::nr_cpus().unwrap_or_else(|_| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        });
        loader.map_max_entries("SAMPLE_SCRATCH", cpus as u32);
    }
    let default_ring = match cfg.stack_mode {
        // `auto` samples a process with working frame pointers only at its first
        // socket: the default has room for that.
        StackMode::Fp | StackMode::Auto => DEFAULT_RING_BYTES,
        StackMode::Dwarf => DWARF_RING_BYTES,
    };
    let ring_bytes = cfg.ring_bytes.unwrap_or(default_ring);
    // Wake the consumer when an eighth of the ring waits (see stream::POLL).
    let wakeup_bytes = u64::from(ring_bytes / 8);
    loader.override_global("WAKEUP_BYTES", &wakeup_bytes, true);
    if ring_bytes != DEFAULT_RING_BYTES {
        loader.map_max_entries("EVENTS", ring_bytes);
    }
    loader
        .load(cmpxchg::object_for_this_kernel(BPF_OBJECT).bytes())
        .map_err(|source| TracerError::Load { source })
}

pub(crate) fn prog_err(
    name: &'static str,
    action: &'static str,
) -> impl FnOnce(aya::programs::ProgramError) -> TracerError {
    move |source| TracerError::Program {
        name,
        action,
        source,
    }
}

pub(crate) fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, TracerError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(TracerError::MissingProgram(name))?;
    prog.try_into().map_err(prog_err(name, "found"))
}

fn take_map<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, TracerError> {
    let map = ebpf.take_map(name).ok_or(TracerError::MissingMap(name))?;
    convert(map).map_err(|source| TracerError::Map { name, source })
}

/// Loaded and attached programs. Dropping it detaches them.
pub struct Tracer {
    /// Every link, detached together (first: before the programs are unloaded).
    links: Links,
    // Owns the programs (a link it could not give up to `links` stays with its program).
    #[allow(dead_code)]
    ebpf: Ebpf,
    events: Option<RingBuf<MapData>>,
    /// Shared with the ring reader, which reads user stacks while their process lives.
    stacks: Arc<StackTraceMap<MapData>>,
    stats: PerCpuArray<MapData, u64>,
    usdt_specs: UsdtSpecs,
    usdt_sites: UsdtSites,
    markers: Option<MarkerIds>,
    exits_traced: bool,
    backend: Backend,
    rejections: Rejections,
    io: Option<IoWatch>,
    stack_mode: StackMode,
    /// `auto`: the per-process stack mode, for the ring reader (taken once).
    stack_modes: Option<StackModes>,
    /// Which (process, walked stack) the kernel sent, for the ring reader (taken
    /// once); `None` when the kernel does not walk stacks.
    walked: Option<crate::walked::WalkedMap>,
    /// The processes sampled host-wide ([`TracerBuilder::sample_listed`]).
    sample_tgids: Option<aya::maps::HashMap<MapData, u32, u8>>,
}

/// The kernel's per-process stack mode in `auto` (see tracer-ebpf/src/stack_sample.rs).
pub type StackModes = aya::maps::HashMap<MapData, u32, u8>;

/// USDT argument specs by attach cookie.
pub type UsdtSpecs = aya::maps::HashMap<MapData, u32, UsdtSpec>;

/// Without attach cookies: each marker's cookie by its file offset.
pub type UsdtSites = aya::maps::HashMap<MapData, u64, u32>;

/// What [`Tracer::usdt_parts`] lends to attach a marker with.
pub struct UsdtParts<'a> {
    pub program: &'a mut UProbe,
    /// Where its links go (a marker's link is detached alone when the daemon lets go
    /// of its binary).
    pub links: &'a mut Links,
    pub specs: &'a mut UsdtSpecs,
    pub sites: &'a mut UsdtSites,
    /// How the program tells markers apart.
    pub ids: MarkerIds,
}

/// Counters the kernel side keeps, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Records lost: the ring was full, or a socket could not be kept track of (its
    /// create record could not be made, or its release may go unseen: the kernel counts
    /// these apart too, in `TRACK_FULL` and `PENDING_FULL`, for bpftool). Each leaves
    /// the trace incomplete the same way. One counter, so each look is one syscall.
    pub lost: u64,
}

impl Tracer {
    /// The loaded USDT program and its maps, to attach markers with.
    pub fn usdt_parts(&mut self) -> Result<UsdtParts<'_>, TracerError> {
        let Self {
            ebpf,
            links,
            usdt_specs,
            usdt_sites,
            markers,
            ..
        } = self;
        let ids = markers.ok_or(TracerError::NoMarkerIds)?;
        Ok(UsdtParts {
            program: program(ebpf, USDT_PROGRAM)?,
            links,
            specs: usdt_specs,
            sites: usdt_sites,
            ids,
        })
    }

    /// The I/O hooks, when attached ([`TracerBuilder::io_watch`]).
    pub fn io(&self) -> Option<&IoWatch> {
        self.io.as_ref()
    }

    pub fn io_mut(&mut self) -> Option<&mut IoWatch> {
        self.io.as_mut()
    }

    /// How creating stacks are taken (frame pointers when no filter is set).
    pub fn stack_mode(&self) -> StackMode {
        self.stack_mode
    }

    /// Host-wide with [`TracerBuilder::sample_listed`]: take (or stop taking) DWARF
    /// samples of process `pid`. Without it, nothing to do. A full map (4096 processes)
    /// leaves the process with frame-pointer stacks, and says so.
    pub fn sample_process(&mut self, pid: u32, on: bool) {
        let Some(map) = self.sample_tgids.as_mut() else {
            return;
        };
        if on {
            if let Err(e) = map.insert(pid, 1, 0) {
                crate::say!(
                    "sockscope: pid {pid} gets frame-pointer stacks only: cannot list it for DWARF samples ({e})"
                );
            }
        } else {
            let _ = map.remove(&pid);
        }
    }

    /// The per-process stack-mode map, for the ring reader (taken once).
    pub fn take_stack_modes(&mut self) -> Option<StackModes> {
        self.stack_modes.take()
    }

    /// The kernel's record of walked stacks sent, for the ring reader (taken once).
    pub fn take_walked(&mut self) -> Option<crate::walked::WalkedMap> {
        self.walked.take()
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why the backends preferred to the one in use were passed over (empty when the
    /// first one served, or it was asked for).
    pub fn rejections(&self) -> &Rejections {
        &self.rejections
    }

    /// One line for stderr: the backend in use, and why others were passed over.
    pub fn backend_line(&self) -> String {
        if self.rejections.0.is_empty() {
            format!("sockscope: backend {}", self.backend)
        } else {
            format!(
                "sockscope: backend {} (passed over: {})",
                self.backend, self.rejections
            )
        }
    }

    /// Whether process exits are reported (the kernel's tracepoint has `group_dead`).
    pub fn exits_traced(&self) -> bool {
        self.exits_traced
    }

    /// The ring buffer, to be read by one consumer (taken once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    pub fn stacks(&self) -> &StackTraceMap<MapData> {
        &self.stacks
    }

    /// The stack map, for a reader on another thread.
    pub fn shared_stacks(&self) -> Arc<StackTraceMap<MapData>> {
        Arc::clone(&self.stacks)
    }

    /// A handle of its own on the stack map (another fd on the same map), through which
    /// the ring reader deletes the stacks of processes that exited; `None` if the
    /// kernel will not hand one out.
    pub fn stack_map_for_deletes(&self) -> Option<StackTraceMap<MapData>> {
        use aya::maps::IterableMap as _;
        let id = self.stacks.map().info().ok()?.id();
        let data = MapData::from_id(id).ok()?;
        StackTraceMap::try_from(aya::maps::Map::StackTraceMap(data)).ok()
    }

    /// Run time and run count of each of its programs, as the kernel accounts them
    /// (zero unless BPF statistics are on: `kernel.bpf_stats_enabled`).
    pub fn program_stats(&self) -> Vec<(String, std::time::Duration, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some((name.to_owned(), info.run_time(), info.run_count()))
            })
            .collect()
    }

    pub fn stats(&self) -> Result<KernelStats, TracerError> {
        let sum = |index: u32| -> Result<u64, TracerError> {
            let values = self
                .stats
                .get(&index, 0)
                .map_err(|source| TracerError::Map {
                    name: "STATS",
                    source,
                })?;
            Ok(values.iter().sum())
        };
        Ok(KernelStats {
            lost: sum(stats::LOST)?,
        })
    }
}

/// Whether the kernel has the helpers that stack sampling calls (`bpf_task_pt_regs`,
/// 5.15; `bpf_get_current_task_btf`, 5.11): their names are in vmlinux's BTF (the
/// `bpf_func_id` enum). Without BTF, no.
fn kernel_copies_user_stacks() -> bool {
    std::fs::read("/sys/kernel/btf/vmlinux").is_ok_and(|btf| {
        btf.windows(b"BPF_FUNC_task_pt_regs".len())
            .any(|w| w == b"BPF_FUNC_task_pt_regs")
    })
}
