//! Maps shared by the programs. Sizes are defaults: user space may resize some before
//! load (`EbpfLoader::set_max_entries`).
use aya_ebpf::bindings::{
    BPF_F_NO_PREALLOC, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
};
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
};
use tracer_common::stats;

use crate::filter::read_global;

/// Every record for user space, in the order the kernel produced them.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

/// Stacks taken by `bpf_get_stackid`, referenced by id from records: user stacks of
/// markers, of I/O after a PeerConnection's end, of releases (kernel-function
/// backends), kernel stacks (`trace --stacks`), and creating user stacks where the
/// create program cannot walk them itself (see walk.rs). Sized at load by user space
/// (loader/sizes.rs): each slot locks 127 frames of kernel memory.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// What `cgroup/sock_create` learned about the socket a thread is creating, until
/// `sys_exit_socket` on the same thread adds the fd and the stacks.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct PendingCreate {
    pub cookie: u64,
    pub ts_ns: u64,
    pub family: u16,
    pub _pad: [u16; 3],
}

impl PendingCreate {
    /// None kept (no socket has cookie 0).
    pub const NONE: Self = Self {
        cookie: 0,
        ts_ns: 0,
        family: 0,
        _pad: [0; 3],
    };
}

/// One entry per thread between the two (a few microseconds), for threads whose slot
/// (slots.rs) another holds: preallocated, small.
#[map]
pub static PENDING: HashMap<u32, PendingCreate> = HashMap::with_max_entries(2048, 0);

/// Sockets whose create passed the filters (those whose slot another holds, see
/// slots.rs), so their release is reported even when the
/// releasing task would not pass them (e.g. another process closed the last reference).
/// Value: its key in the I/O hooks' `WATCHED_FDS` once watched (0 before, or never):
/// what its release removes there. Not preallocated, so it takes memory for the sockets really
/// open, but its hash buckets are: sized at load from what the filter can reach
/// (loader/sizes.rs), one entry when there is no filter (it is not used then).
#[map]
pub static TRACKED: HashMap<u64, u64> = HashMap::with_max_entries(262_144, BPF_F_NO_PREALLOC);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stats::COUNT, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no other writer while this program runs on this CPU.
        unsafe { *slot += 1 };
    }
}

/// Wake the consumer only once this many bytes wait in the ring (set by user space
/// to an eighth of the ring); below it the consumer polls. A wakeup per record would
/// cost more than the record (an irq_work here, a context switch there).
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 32 * 1024;

/// Records are at most this long (with their 8-byte header): the one record that
/// brings the ring past the threshold is in this window above it.
const RECORD_WINDOW: u64 = 256;

/// Submit flags for a record: wake the consumer once, with the record that brings the
/// waiting data past the threshold (forcing it for every later record would wake it
/// more often than the kernel's default does).
#[inline(always)]
pub fn wakeup() -> u64 {
    let threshold = read_global(&WAKEUP_BYTES);
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if waiting >= threshold && waiting < threshold + RECORD_WINDOW {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// (process, user stack id) pairs already handed to user space.
#[map]
pub static SEEN_STACKS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(4096, 0);

/// Submit flags for a record with a user stack (create, and release on the backends
/// that take releasing stacks): the first one of each (process, user stack) wakes the
/// reader at once, so it resolves the stack while the process still lives (a test
/// binary may exit a millisecond later); the others wait for [`wakeup`]'s threshold or
/// the reader's poll, so a socket churn from one code path costs no wakeup per socket.
#[inline(always)]
pub fn stack_wakeup(tgid: u32, user_stack: i32) -> u64 {
    if user_stack < 0 {
        return wakeup();
    }
    let key = (u64::from(tgid) << 32) | u64::from(user_stack as u32);
    // SAFETY: only whether the key is there is read.
    if unsafe { SEEN_STACKS.get(key) }.is_some() {
        return wakeup();
    }
    let _ = SEEN_STACKS.insert(key, 1, 0);
    BPF_RB_FORCE_WAKEUP as u64
}

/// Reserve a record in `EVENTS`, counting a loss when the ring is full.
#[inline(always)]
pub fn reserve<T: 'static>() -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count(stats::LOST);
    }
    entry
}

/// Each thread's current PeerConnection id, maintained by the USDT span markers.
#[map]
pub static CURRENT_PC: HashMap<u32, u64> = HashMap::with_max_entries(8192, 0);
