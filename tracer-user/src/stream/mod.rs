//! The kernel's ring buffer, read on a thread of its own into an async stream of
//! decoded records.
//!
//! The reader does only what cannot wait: it takes records off the ring and
//! normalizes new user stacks while their process still lives (a test binary may be
//! gone a millisecond later). Naming them can take most of a second the first time a
//! debug binary is read, and happens on the consumer's side without losing them.
use std::{
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf, StackTraceMap};
use tokio::sync::mpsc;

mod slow;

use slow::{PassTimer, Step};

use crate::{
    clock::monotonic_ns,
    events::KernelEvent,
    loader::Tracer,
    symbolize::{Normalizer, RawStack, stack_addrs},
    unwind::{DwarfStacks, Sample},
    walked::WalkedStacks,
};

/// How long a record may wait in the ring when the kernel did not wake us (it wakes
/// the reader only once an eighth of the ring is full, see `WAKEUP_BYTES` in the BPF
/// programs: a wakeup per record cost 17 µs of CPU per socket at 10k sockets/s). It
/// also bounds how late a verdict can come after its grace ends.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Records handed over at most at once, so a busy ring still reaches the consumer.
const MAX_BATCH: usize = 16 * 1024;

/// Batches handed over but not yet taken by the consumer, at most; beyond, the reader
/// keeps what it reads (see [`MAX_RECORDS_HELD`]).
const MAX_BATCHES_PENDING: usize = 8;

/// Records the reader keeps while the consumer is busy (a slow moment: a first parse
/// of a program's debug information, markers being attached), at most. When the
/// consumer falls further behind (a host whose sockets churn faster than it judges),
/// the reader waits and the kernel's ring fills: records are then lost there, counted
/// and reported as such, rather than piling up in this process's memory, where a
/// backlog would also delay everything after it (a stop by SIGTERM included).
const MAX_RECORDS_HELD: usize = 256 * 1024;

/// One kernel record, with its user stack (creating or releasing) normalized if it
/// has one.
pub struct Record {
    pub event: KernelEvent,
    pub user_stack: Option<RawStack>,
}

/// What one pass of the reader found.
struct Batch {
    records: Vec<Record>,
    /// Every record the kernel committed before this time (monotonic ns) has been
    /// read, in this batch or an earlier one.
    horizon_ns: u64,
}

pub struct EventStream {
    batches: mpsc::Receiver<Batch>,
    ready: Vec<Record>,
    horizon_ns: u64,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl EventStream {
    /// Takes the tracer's ring buffer (once) and starts reading it.
    pub fn new(tracer: &mut Tracer) -> anyhow::Result<Self> {
        let ring = tracer.take_events().context("ring buffer already taken")?;
        let stacks = tracer.shared_stacks();
        let dwarf = DwarfStacks::new(tracer.stack_mode(), tracer.take_stack_modes());
        let deletes = tracer.stack_map_for_deletes();
        let walked = WalkedStacks::new(tracer.take_walked());
        let (tx, batches) = mpsc::channel(MAX_BATCHES_PENDING);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = std::thread::Builder::new()
            .name("sockscope-ring".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || read(ring, &stacks, dwarf, walked, deletes, &tx, &stop)
            })
            .context("cannot start the ring buffer reader")?;
        Ok(Self {
            batches,
            ready: Vec::new(),
            horizon_ns: 0,
            stop,
            reader: Some(reader),
        })
    }

    /// Waits for the reader's next pass (records, or only a later horizon; then call
    /// [`Self::drain`]). The reader passes at least every [`POLL`].
    pub async fn readable(&mut self) -> anyhow::Result<()> {
        let batch = self
            .batches
            .recv()
            .await
            .context("the ring buffer reader stopped")?;
        self.take(batch);
        Ok(())
    }

    /// Every record read so far, in the kernel's order.
    pub fn drain(&mut self) -> Vec<Record> {
        while let Ok(batch) = self.batches.try_recv() {
            self.take(batch);
        }
        std::mem::take(&mut self.ready)
    }

    /// Records committed before this time (monotonic ns) are all in what
    /// [`Self::drain`] returned.
    pub fn horizon_ns(&self) -> u64 {
        self.horizon_ns
    }

    /// Stops the reader after a last pass: every record the kernel wrote before now.
    pub fn finish(&mut self) -> Vec<Record> {
        self.stop.store(true, Ordering::Release);
        if let Some(reader) = self.reader.take() {
            // Its last pass may wait for room among the pending batches: take them
            // while it ends.
            while !reader.is_finished() {
                match self.batches.try_recv() {
                    Ok(batch) => self.take(batch),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
            if reader.join().is_err() {
                crate::say!("sockscope: the ring buffer reader failed; records may be missing");
            }
        }
        self.drain()
    }

    fn take(&mut self, batch: Batch) {
        if self.ready.is_empty() {
            // The usual case: the batch's records are moved, not copied.
            self.ready = batch.records;
        } else {
            self.ready.extend(batch.records);
        }
        self.horizon_ns = self.horizon_ns.max(batch.horizon_ns);
    }

    fn stop_reader(&mut self) {
        self.stop.store(true, Ordering::Release);
        // A reader waiting for room among the pending batches gives up.
        self.batches.close();
        if let Some(reader) = self.reader.take()
            && reader.join().is_err()
        {
            crate::say!("sockscope: the ring buffer reader failed; records may be missing");
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.stop_reader();
    }
}

/// The reader thread: passes over the ring until stopped (one last pass then) or
/// until nobody listens. Stack samples (`--stacks dwarf|auto`) are unwound here with the
/// create record they precede, while the process's maps can still be read (see
/// [`crate::unwind`]); the create record then carries the unwound stack's id.
fn read(
    mut ring: RingBuf<MapData>,
    stacks: &StackTraceMap<MapData>,
    mut dwarf: DwarfStacks,
    mut walked: WalkedStacks,
    mut deletes: Option<StackTraceMap<MapData>>,
    tx: &mpsc::Sender<Batch>,
    stop: &AtomicBool,
) {
    raise_priority();
    let mut normalizer = Normalizer::new();
    // Stacks normalized per (process, stack id), forgotten when the process exits.
    // Looked up once a record; keys are the kernel's (pid, id), so a fast hash.
    let mut normalized: rustc_hash::FxHashMap<(u32, i32), RawStack> = Default::default();
    let mut last_close = std::time::Instant::now();
    // Read but not yet handed over (the consumer is behind).
    let mut held: Vec<Record> = Vec::new();
    let mut timer = PassTimer::default();
    loop {
        timer.begin();
        if last_close.elapsed() >= crate::symbolize::EVICT_EVERY {
            last_close = std::time::Instant::now();
            // Only what no stack holds any more (the symbolizer holds what it parsed
            // for as long as it keeps the parse).
            normalizer.close_unused(crate::symbolize::EVICT_EVERY);
        }
        let last = stop.load(Ordering::Acquire);
        let horizon_ns = monotonic_ns();
        let mut records = Vec::new();
        let mut emptied = true;
        loop {
            if records.len() == MAX_BATCH {
                // The kernel writes as fast as we read: hand these over now; the
                // horizon moves once the ring was seen empty.
                emptied = false;
                break;
            }
            let Some(item) = ring.next() else {
                break;
            };
            if Sample::is_sample(&item) {
                if let Some((io, raw)) = timer.time(Step::Unwind, || dwarf.sample(&item)) {
                    records.push(Record {
                        event: KernelEvent::IoStack(io),
                        user_stack: Some(raw),
                    });
                }
                continue;
            }
            if WalkedStacks::is_walked(&item) {
                // Normalized now, while the process lives, like stacks of the map.
                match WalkedStacks::decode(&item) {
                    Some(f) => {
                        if let Some(id) = walked.id(f.pid, f.hash) {
                            normalized.entry((f.pid, id)).or_insert_with(|| {
                                timer.time(Step::Normalize, || normalizer.user(f.pid, &f.addrs))
                            });
                        }
                    }
                    None => crate::say!("sockscope: skipped a malformed walked stack record"),
                }
                continue;
            }
            let mut event = match KernelEvent::decode(&item) {
                Ok(event) => event,
                Err(e) => {
                    crate::say!("sockscope: skipped a malformed kernel record: {e}");
                    continue;
                }
            };
            // Creating stacks, and releasing stacks where the backend takes them.
            let mut normalize = |pid: u32, id: i32| {
                (id >= 0).then(|| {
                    normalized
                        .entry((pid, id))
                        .or_insert_with(|| {
                            timer.time(Step::Normalize, || {
                                normalizer.user(pid, &stack_addrs(stacks, id))
                            })
                        })
                        .clone()
                })
            };
            // A walked stack: by the id its frames were given (none if they were lost).
            if let KernelEvent::Create(c) = &mut event
                && c.user_stack_hash != 0
            {
                c.user_stack = walked.known(c.pid, c.user_stack_hash).unwrap_or(-1);
            }
            let user_stack = match &mut event {
                KernelEvent::Create(c) if dwarf.active() => {
                    let (pid, id) = (c.pid, c.user_stack);
                    dwarf.create(c, || normalize(pid, id))
                }
                KernelEvent::Create(c) => normalize(c.pid, c.user_stack),
                KernelEvent::Release(r) if dwarf.active() => {
                    let (pid, id) = (r.pid, r.user_stack);
                    dwarf.release(r, || normalize(pid, id))
                }
                KernelEvent::Release(r) => normalize(r.pid, r.user_stack),
                KernelEvent::Marker(m) if dwarf.active() => {
                    let (pid, id) = (m.pid, m.user_stack);
                    dwarf.marker(m, || normalize(pid, id))
                }
                KernelEvent::Marker(m) => normalize(m.pid, m.user_stack),
                KernelEvent::Exit(e) => timer.time(Step::Exit, || {
                    let mut gone = Vec::new();
                    normalized.retain(|&(pid, id), _| {
                        let keep = pid != e.pid;
                        if !keep {
                            gone.push(id);
                        }
                        keep
                    });
                    // The kernel never deletes a stack id, and a new stack that hashes
                    // to a taken one gets none: the stacks of processes that exited
                    // would fill the map, and later sockets would have no stack. One
                    // another process still uses (same code, no ASLR) stays.
                    if let Some(map) = deletes.as_mut() {
                        for id in gone {
                            if !WalkedStacks::is_walked_id(id)
                                && !normalized.keys().any(|&(_, other)| other == id)
                                && let Ok(id) = u32::try_from(id)
                            {
                                let _ = map.remove(&id);
                            }
                        }
                    }
                    dwarf.exited(e.pid);
                    walked.exited(e.pid);
                    None
                }),
                KernelEvent::Exec(e) => {
                    dwarf.exec(e.pid);
                    // Same addresses, other code: its stacks are walked and named anew.
                    walked.exited(e.pid);
                    None
                }
                _ => None,
            };
            records.push(Record { event, user_stack });
        }
        dwarf.continue_stopped();
        let horizon_ns = if emptied { horizon_ns } else { 0 };
        let read = records.len();
        // Usually nothing is held: this pass's records go as they are, not copied.
        let records = if held.is_empty() {
            records
        } else {
            held.extend(records);
            std::mem::take(&mut held)
        };
        let batch = Batch {
            records,
            horizon_ns,
        };
        // Hands over what was read; a consumer that is behind gets it later, in one
        // batch, up to MAX_RECORDS_HELD; beyond, or at the last pass, this waits.
        let handed = if last || batch.records.len() >= MAX_RECORDS_HELD {
            tx.blocking_send(batch).map_err(drop)
        } else {
            match tx.try_send(batch) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(batch)) => {
                    held = batch.records;
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
            }
        };
        if handed.is_err() || (last && emptied) {
            return;
        }
        if let Some(report) = timer.end(read, emptied.then_some(POLL)) {
            crate::say!("{report}");
        }
        if emptied {
            wait_readable(&ring);
        }
    }
}

/// Niceness of the reader thread: see [`raise_priority`].
const READER_NICE: libc::c_int = -10;

/// Puts this thread ahead of ordinary ones for the CPU. The ring holds a few
/// milliseconds of records at a high rate (1 MiB: ~17,000 records, 23 ms at 750k/s);
/// on a busy machine a woken reader waiting that long behind other threads, the
/// formatting of the records it already read among them, loses records. The reader
/// itself is cheap (a few hundred instructions a record) and sleeps once the ring is
/// empty, so it takes little from others. Best effort: without the right to
/// (CAP_SYS_NICE) the thread keeps its niceness.
fn raise_priority() {
    // SAFETY: plain syscalls on this thread's own id.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, READER_NICE);
    }
}

/// Sleeps until the kernel wakes the ring's consumer, or [`POLL`] at the latest.
fn wait_readable(ring: &RingBuf<MapData>) {
    let mut fd = libc::pollfd {
        fd: ring.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; the ring's descriptor stays open while we poll it.
    // An error (EINTR) only makes this pass come early.
    unsafe { libc::poll(&mut fd, 1, POLL.as_millis() as libc::c_int) };
}
