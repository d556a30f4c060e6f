//! Sends and receives on the sockets of PeerConnections, for the leak explanation: a
//! socket still in use after its PeerConnection ended (`active`), one whose last
//! operation was a read that would block (`awaited`: a task is parked on it), one with
//! neither (`held`: only a reference keeps it).
//!
//! Syscall tracepoints, so every backend has them: `sys_enter_*` of the send and receive
//! calls look the (process, fd) up in its slot and in `WATCHED_FDS`; for every call on a
//! socket that is not watched that array read and one failed lookup are the whole cost.
//! A hit is stashed per thread for `sys_exit_*`, which has the result. Each traced UDP socket is watched from its
//! creation (`sys_exit_socket`, with `IO_WATCH` on): the last read before its
//! PeerConnection ended is what shows a parked task, and user space learns which
//! PeerConnection a socket belongs to only later. User space adds the sockets that
//! predate it and marks when a PeerConnection ended; a socket's release removes it.
use aya_ebpf::maps::LruHashMap;
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_F_USER_STACK},
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{Array, HashMap},
    programs::{TracePointContext, tracing::StackIdContext},
};
use tracer_common::{
    IO_SAMPLE_BURST, IO_SAMPLE_EVERY_NS, IoStats, PcKey, WatchedFd, io_op, sample_flags,
    watched_fd_key, watched_slot_index,
};

use crate::{
    filter::{current, filters_active, read_global},
    maps::STACKS,
    slots::{self, Slot, THREAD_SLOTS, thread_put, thread_take},
    stack_sample::{Sampled, sample},
};

/// 1: watch every traced UDP socket from its creation (set by user space before load,
/// for `check` and `watch`).
#[unsafe(no_mangle)]
static IO_WATCH: u8 = 0;

/// A traced UDP socket was created as `fd` of `tgid`, inside PeerConnection `pc_id`'s
/// span (0: none): watch it (see the module doc).
#[inline(always)]
pub fn watch_new_socket(tgid: u32, fd: i64, cookie: u64, pc_id: u64) {
    if !watching() || fd < 0 {
        return;
    }
    let key = watched_fd_key(tgid, fd as u32);
    let socket = WatchedFd {
        cookie,
        pc_id,
        ended_ns: 0,
    };
    if let Some(slot) = slots::claim(&WATCHED_SLOTS, watched_index(key), key) {
        slots::set_value(slot, socket);
    } else if WATCHED_FDS.insert(key, socket, 0).is_err() {
        return;
    }
    remember_key(cookie, key);
}

#[inline(always)]
fn watched_index(key: u64) -> u32 {
    watched_slot_index(key, read_global(&WATCHED_SLOT_MASK))
}

/// The socket watched under `key`: its slot's if the key holds one (the newest socket
/// of that fd), else `WATCHED_FDS`' entry.
#[inline(always)]
fn watched(key: u64) -> Option<WatchedFd> {
    if let Some(slot) = slots::held(&WATCHED_SLOTS, watched_index(key), key) {
        return Some(slots::value(slot));
    }
    // SAFETY: copied out at once.
    unsafe { WATCHED_FDS.get(key) }.copied()
}

/// Socket `cookie`, watched under `key`, is no longer (unless a newer socket has the
/// fd already: then that one stays watched).
#[inline(always)]
fn unwatch(key: u64, cookie: u64) {
    if let Some(slot) = slots::held(&WATCHED_SLOTS, watched_index(key), key)
        && slots::value(slot).cookie == cookie
    {
        slots::free(slot);
        return;
    }
    // SAFETY: copied out at once.
    if (unsafe { WATCHED_FDS.get(&key) }).is_some_and(|w| w.cookie == cookie) {
        let _ = WATCHED_FDS.remove(&key);
    }
}

/// Notes under which key socket `cookie` is watched, for its release. A scoped session
/// (`watch`, `check`) tracks each of its sockets in `TRACKED` already: the key goes in
/// that entry, at no memory cost; host-wide (the daemon), in `WATCH_KEY_OF`.
#[inline(always)]
fn remember_key(cookie: u64, key: u64) {
    // Without a filter nothing is tracked (see `filters_active`): no lookup to miss.
    if filters_active() && slots::set_tracked_key(cookie, key) {
        return;
    }
    let _ = WATCH_KEY_OF.insert(cookie, key, 0);
}

/// Whether the I/O hooks run (`check`, `watch`, the daemon).
#[inline(always)]
pub fn watching() -> bool {
    read_global(&IO_WATCH) != 0
}

/// Socket `cookie` is released: it is no longer watched under its fd (unless a newer
/// socket has the fd already), and what was seen of it goes. Done here, where it costs
/// a few map operations, rather than by user space: three syscalls per socket were
/// most of `watch`'s cost on a host that churns sockets.
///
/// `tracked_key`: the socket's `TRACKED` value (0: not tracked there, or not watched).
#[inline(always)]
pub fn forget_released(cookie: u64, tracked_key: u64) {
    if !watching() {
        return;
    }
    let key = if tracked_key != 0 {
        tracked_key
    } else {
        // SAFETY: copied out at once.
        let Some(key) = (unsafe { WATCH_KEY_OF.get(&cookie) }).copied() else {
            return;
        };
        let _ = WATCH_KEY_OF.remove(&cookie);
        key
    };
    unwatch(key, cookie);
    // Most sockets never had a watched call: a failed lookup costs less than a failed
    // delete (which takes the bucket's lock).
    if IO_STATS.get_ptr(cookie).is_some() {
        let _ = IO_STATS.remove(&cookie);
    }
}

/// When each PeerConnection ended, written by the USDT program as its `pc_close_end` or
/// `pc_dropped` fires. Least recently used ones go first: a PeerConnection's sockets
/// outlive its end by the grace, not by thousands of PeerConnections.
#[map]
pub static PC_ENDED: LruHashMap<PcKey, u64> = LruHashMap::with_max_entries(4096, 0);

/// PeerConnection `pc_id` of `tgid` ended now (the first end counts).
#[inline(always)]
pub fn pc_ended(tgid: u32, pc_id: u64, now_ns: u64) {
    let key = PcKey {
        tgid,
        _pad: 0,
        pc_id,
    };
    // BPF_NOEXIST: a later marker of the same PeerConnection does not move its end.
    let _ = PC_ENDED.insert(&key, &now_ns, 1);
}

/// When the watched socket's PeerConnection ended, if it did.
#[inline(always)]
fn ended_ns(tgid: u32, socket: &WatchedFd) -> u64 {
    if socket.pc_id != 0 {
        let key = PcKey {
            tgid,
            _pad: 0,
            pc_id: socket.pc_id,
        };
        // SAFETY: copied out at once.
        if let Some(ts) = unsafe { PC_ENDED.get(&key) }.copied() {
            return ts;
        }
    }
    socket.ended_ns
}

// Not preallocated: sized for a busy process, they take memory only for the sockets
// really watched.

/// Sockets to watch, by `(tgid << 32) | fd`, when their slot in `WATCHED_SLOTS` (in
/// front of it, see slots.rs) is another's, or when user space adds them.
#[map]
pub static WATCHED_FDS: HashMap<u64, WatchedFd> =
    HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// Slot count minus one (a power of two, set by user space with the array's size).
#[unsafe(no_mangle)]
static WATCHED_SLOT_MASK: u32 = 8191;

/// Value: the socket watched under the slot's owner key (`tracer_common::WatchedSlot`,
/// which user space reads and updates).
#[map]
static WATCHED_SLOTS: Array<Slot<WatchedFd>> = Array::with_max_entries(8192, 0);

/// The key of `WATCHED_FDS` each watched socket is under, by cookie (written with it,
/// by the kernel or by user space), for its release to find; sockets of a scoped
/// session keep theirs in `TRACKED` instead (see `remember_key`).
#[map]
pub static WATCH_KEY_OF: HashMap<u64, u64> = HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// What the hooks saw, by cookie (read by user space, removed at the release).
#[map]
pub static IO_STATS: HashMap<u64, IoStats> = HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// A watched call in flight on a thread, from its enter to its exit.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct InFlight {
    pub socket: WatchedFd,
    pub op: u32,
    pub _pad: u32,
}

impl InFlight {
    /// None (no socket has cookie 0).
    const NONE: Self = Self {
        socket: WatchedFd {
            cookie: 0,
            pc_id: 0,
            ended_ns: 0,
        },
        op: 0,
        _pad: 0,
    };
}

/// One entry per thread inside a watched call, for threads whose slot (slots.rs)
/// another holds: preallocated (an insert on the hot path must not allocate), and small.
#[map]
pub static IO_IN_FLIGHT: HashMap<u32, InFlight> = HashMap::with_max_entries(2048, 0);

#[map]
static IO_CALL_SLOTS: Array<Slot<InFlight>> = Array::with_max_entries(THREAD_SLOTS, 0);

/// `args[0]` (the fd) in a `sys_enter_*` record, after the common header and the
/// syscall number.
const ARG0_OFFSET: usize = 16;
/// `ret` in a `sys_exit_*` record.
const RET_OFFSET: usize = 16;
const EAGAIN: i64 = 11;

#[inline(always)]
fn enter(ctx: &TracePointContext, op: u32) {
    // SAFETY: `args[0]` is an unsigned long at this offset of every sys_enter record.
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(ARG0_OFFSET) }) else {
        return;
    };
    let (tgid, tid) = current();
    let Some(socket) = watched(watched_fd_key(tgid, fd as u32)) else {
        return;
    };
    let call = InFlight {
        socket,
        op,
        _pad: 0,
    };
    let _ = thread_put(&IO_CALL_SLOTS, &IO_IN_FLIGHT, tid, call);
}

/// Entering `sendto`, `sendmsg`, `sendmmsg` (one program, attached to each).
#[tracepoint]
pub fn sockscope_io_send(ctx: TracePointContext) -> u32 {
    enter(&ctx, io_op::SEND);
    0
}

/// Entering `recvfrom`, `recvmsg`, `recvmmsg`.
#[tracepoint]
pub fn sockscope_io_recv(ctx: TracePointContext) -> u32 {
    enter(&ctx, io_op::RECV);
    0
}

/// Leaving any of the six: records the result of a watched call.
#[tracepoint]
pub fn sockscope_io_exit(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current();
    let call = thread_take(&IO_CALL_SLOTS, &IO_IN_FLIGHT, tid, InFlight::NONE);
    if call.socket.cookie == 0 {
        return 0;
    }
    // SAFETY: `ret` is a long at this offset of every sys_exit record.
    let ret: i64 = unsafe { ctx.read_at(RET_OFFSET) }.unwrap_or(0);
    let cookie = call.socket.cookie;
    if IO_STATS.get_ptr_mut(cookie).is_none() {
        let fresh = IoStats {
            last_stack_after_end: -1,
            ..IoStats::default()
        };
        let _ = IO_STATS.insert(cookie, fresh, 0);
    }
    let Some(stats) = IO_STATS.get_ptr_mut(cookie) else {
        return 0;
    };
    // SAFETY: reads the clock only.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a valid map value; concurrent updates of one socket's counters from two
    // CPUs may lose a count, never corrupt the record.
    let stats = unsafe { &mut *stats };
    stats.last_ts_ns = now;
    stats.last_ret = ret;
    stats.last_op = call.op;
    stats.last_tid = tid;
    if ret >= 0 {
        stats.last_ok_ts_ns = now;
    }
    let ended = ended_ns(tgid, &call.socket);
    if ended != 0 && now >= ended {
        match (call.op, ret) {
            (io_op::RECV, r) if r == -EAGAIN => stats.recvs_would_block += 1,
            (_, r) if r < 0 => stats.errors += 1,
            (io_op::SEND, _) => stats.sends += 1,
            _ => stats.recvs += 1,
        }
        stats.last_stack_after_end = ctx
            .get_stackid(&STACKS, BPF_F_USER_STACK as u64)
            .map_or(-1, |id| id as i32);
        // DWARF mode (a process being judged, without frame pointers): its registers
        // and stack too, rate-limited per socket (a token bucket).
        let refill = now.wrapping_sub(stats.sample_refill_ns) / IO_SAMPLE_EVERY_NS;
        if refill > 0 {
            let tokens = u64::from(stats.sample_tokens) + refill;
            stats.sample_tokens = tokens.min(u64::from(IO_SAMPLE_BURST)) as u32;
            stats.sample_refill_ns = now;
        }
        if stats.sample_tokens > 0
            && let Sampled::Sent = sample(tgid, tid, cookie, sample_flags::FOR_IO, now)
        {
            stats.sample_tokens -= 1;
        }
    }
    0
}
