//! Records shared by the BPF programs (`tracer-ebpf`) and user space (`tracer-user`).
//!
//! Every ring-buffer record starts with a `u32` kind. User space checks the kind and
//! the record size, then reads the matching struct with `read_unaligned`; enums never
//! cross the kernel boundary as enums (see [`EventKind`]'s `TryFrom<u32>`).
#![no_std]

/// Length of a task's `comm`, as the kernel keeps it.
pub const COMM_LEN: usize = 16;

/// Ring-buffer record kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EventKind {
    Create = 1,
    Bind = 2,
    Release = 3,
    Marker = 4,
    Exit = 5,
    Exec = 6,
    /// A [`StackSample`] (registers and the top of the user stack), sent just before
    /// the create record it belongs to, for DWARF unwinding in user space.
    StackSample = 7,
    /// A [`WalkedStack`]: the frames of a user stack walked by the create program,
    /// sent the first time a process shows it.
    WalkedStack = 8,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            1 => Self::Create,
            2 => Self::Bind,
            3 => Self::Release,
            4 => Self::Marker,
            5 => Self::Exit,
            6 => Self::Exec,
            7 => Self::StackSample,
            8 => Self::WalkedStack,
            other => return Err(other),
        })
    }
}

/// A UDP socket was created by `socket(2)`: emitted from `sys_exit_socket` once the fd
/// is known, from what the `cgroup/sock_create` hook stashed for the thread.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct CreateEvent {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    pub _pad: u16,
    /// The descriptor `socket(2)` returned, or a negative errno if it failed after the
    /// socket was made (the release then follows at once).
    pub fd: i32,
    /// Stack ids in the `STACKS` map; negative when no stack could be taken.
    pub kernel_stack: i32,
    pub user_stack: i32,
    pub _pad2: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at creation.
    pub ts_ns: u64,
    /// The socket's identity in every record about it: its socket cookie, or, with the
    /// kprobe backend (which cannot make the kernel assign a cookie), its inode number.
    pub cookie: u64,
    /// The creating thread's current PeerConnection id, 0 when none.
    pub pc_id: u64,
    pub comm: [u8; COMM_LEN],
    /// The creating user stack as walked by the create program ([`WalkedStack`]): its
    /// hash, nonzero; `user_stack` is then negative. 0 when the stack map holds it.
    pub user_stack_hash: u64,
}

/// Most frames of a walked user stack: the kernel's own limit for the frame-pointer
/// walk of `bpf_get_stackid` (`kernel.perf_event_max_stack`, 127 by default), the
/// instruction pointer included, so both give the same frames.
pub const WALK_MAX_FRAMES: usize = 127;

/// A user stack the create program walked by frame pointers itself (instead of
/// `bpf_get_stackid`, whose walk ends in a page fault on the null frame pointer at
/// the root of every stack, and whose map loses a stack on each hash collision).
/// Sent before the [`CreateEvent`] that names it by `hash`, the first time process
/// `pid` shows that stack; later creates name it by `hash` alone. The record is this
/// header followed by `nr` frames (u64, innermost first).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct WalkedStack {
    pub kind: u32,
    pub pid: u32,
    pub hash: u64,
    pub nr: u32,
    pub _pad: u32,
}

/// The key under which the kernel remembers that a (process, walked stack) was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct WalkKey {
    pub tgid: u32,
    pub _pad: u32,
    pub hash: u64,
}

/// A UDP socket got a local address through `bind(2)` (the `post_bind4/6` hooks).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BindEvent {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    pub family: u16,
    /// Local port, host byte order.
    pub port: u16,
    pub ts_ns: u64,
    pub cookie: u64,
    /// IPv4 in the first 4 bytes (network order), or the IPv6 address.
    pub addr: [u8; 16],
}

/// A UDP socket was released (its last reference dropped).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct ReleaseEvent {
    pub kind: u32,
    /// The releasing task, which need not be the creator.
    pub pid: u32,
    pub tid: u32,
    pub family: u16,
    /// 1 if the releasing task was exiting (the kernel closing a dying process's
    /// files, not the application closing the socket); 0 if not or unknown.
    pub exiting: u8,
    pub _pad: u8,
    pub ts_ns: u64,
    pub cookie: u64,
    pub comm: [u8; COMM_LEN],
    /// The releasing stacks (ids in `STACKS`), negative when not taken: the cgroup
    /// backend cannot take stacks, the kernel-function backends can.
    pub kernel_stack: i32,
    pub user_stack: i32,
}

/// Something happened to a whole process. Kind `Exit`: its last thread reached
/// `do_exit`; emitted before the kernel closes the process's files, so releases that
/// follow in the ring buffer were done by the exit, not by the application. Kind
/// `Exec`: it executed a new program; in `check`'s cgroup it was stopped (SIGSTOP) so
/// that user space can attach that program's markers before it runs, and user space
/// continues it.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct ProcessEvent {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    /// 1 if the kernel stopped the process for user space to continue.
    pub stopped: u32,
    pub ts_ns: u64,
    /// Which process this is, for user space to tell it from a later one with its pid
    /// when it reads /proc late (`Exec` only; zeros where unknown).
    pub identity: ProcessIdentity,
}

/// What the kernel knows of a process that /proc may no longer show: when it started
/// and which file it runs. Zeros where the kernel's layout is unknown (no BTF).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ProcessIdentity {
    /// `task_struct.start_boottime`: ns since boot, what the `starttime` of
    /// /proc/PID/stat counts in clock ticks.
    pub start_boottime_ns: u64,
    /// The executable's inode number (`mm->exe_file->f_inode->i_ino`).
    pub exe_ino: u64,
    /// The kernel's number of the executable's filesystem (`i_sb->s_dev`:
    /// major << 20 | minor, not stat(2)'s encoding).
    pub exe_dev: u32,
    pub _pad: u32,
}

/// Where the fields of [`ProcessIdentity`] are in the kernel's structs (from its BTF,
/// set by user space before load); all zeros when one is missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ProcessOffsets {
    pub task_start_boottime: u32,
    pub task_mm: u32,
    pub mm_exe_file: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub _pad: u32,
}

/// The user registers an unwinder starts from, as [`StackSample::regs`] indexes.
pub mod sample_reg {
    /// Instruction pointer (x86_64 `rip`, aarch64 `pc`).
    pub const IP: usize = 0;
    /// Stack pointer.
    pub const SP: usize = 1;
    /// Frame pointer (x86_64 `rbp`, aarch64 `x29`).
    pub const FP: usize = 2;
    /// Link register (aarch64 `x30`; 0 on x86_64).
    pub const LR: usize = 3;
    pub const COUNT: usize = 4;
}

/// Most bytes of user stack one [`StackSample`] can carry: the per-CPU scratch record
/// it is assembled in (header and bytes) must fit in 32 KiB, the kernel's limit for
/// a per-CPU map value.
pub const STACK_SAMPLE_MAX: usize = 32 * 1024 - size_of::<StackSample>();

/// Default bytes of user stack copied per sample (`--stack-bytes`).
pub const STACK_SAMPLE_DEFAULT: u32 = 16 * 1024;

/// Registers and the top of the user stack of a thread creating a traced socket (or
/// opening a PeerConnection, see [`sample_flags::FOR_MARKER`]), for DWARF unwinding in
/// user space (`--stacks dwarf|auto`). The record is this header followed by `len` bytes
/// of stack, copied from `regs[SP]` upward. Sent just before the [`CreateEvent`] with
/// the same `tid` and `cookie` (or the [`MarkerEvent`] of the same `tid`).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct StackSample {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    /// Bytes of stack that follow this header.
    pub len: u32,
    /// The socket of the create record this sample belongs to (0 for a marker's).
    pub cookie: u64,
    /// See [`sample_reg`].
    pub regs: [u64; sample_reg::COUNT],
    /// 0, or the (negative) error of the last stack read tried when none succeeded.
    pub read_error: i32,
    /// Bytes of stack asked for (`len` is less when the stack mapping ends sooner).
    pub wanted: u16,
    /// [`sample_flags`].
    pub flags: u16,
    /// `bpf_ktime_get_ns` of what was sampled: for [`sample_flags::FOR_IO`] the
    /// operation's time as [`IoStats::last_ts_ns`] holds it; 0 for the others.
    pub ts_ns: u64,
}

/// [`StackSample::flags`] values.
pub mod sample_flags {
    /// The process was stopped (SIGSTOP) so that user space reads its memory map
    /// before it can exit; user space continues it (`check` only, first sample of each
    /// process).
    pub const STOPPED: u16 = 1;
    /// The sample belongs to the [`super::MarkerEvent`] that follows (`pc_open`: where
    /// the application made its PeerConnection), not to a create record.
    pub const FOR_MARKER: u16 = 2;
    /// A send or receive on a socket after its PeerConnection ended (the last-I/O stack
    /// of the leak explanation): no record follows; `cookie` is the socket's and
    /// `ts_ns` the operation's time. Rate-limited per socket (see
    /// [`super::IO_SAMPLE_EVERY_NS`]).
    pub const FOR_IO: u16 = 4;
    /// The sample belongs to the release record of `cookie` that follows (the
    /// releasing stack; fentry and kprobe backends only: cgroup_sock programs cannot
    /// take stacks).
    pub const FOR_RELEASE: u16 = 8;
}

/// A socket's sends and receives after its PeerConnection ended are sampled (DWARF
/// mode) through a token bucket: [`IO_SAMPLE_BURST`] samples back to back, then one per
/// [`IO_SAMPLE_EVERY_NS`]. Sparse traffic (keepalives, mDNS queries) is sampled whole;
/// a leaked socket that still carries media does not flood the ring (each sample is
/// some 16 KiB), and its latest sample is at most that old when the verdict comes.
pub const IO_SAMPLE_EVERY_NS: u64 = 250_000_000;
pub const IO_SAMPLE_BURST: u32 = 4;

const _: () = assert!(size_of::<StackSample>() == 72);
const _: () = assert!(size_of::<CreateEvent>() == 80);
const _: () = assert!(size_of::<WalkedStack>() == 24);
const _: () = assert!(STACK_SAMPLE_MAX + size_of::<StackSample>() == 32 * 1024);

/// Most arguments a USDT marker can carry (the x86_64 SDT convention allows 12; ours
/// use at most 2, libbpf reads up to 12; 6 keeps the record small).
pub const MARKER_MAX_ARGS: usize = 6;

/// A USDT marker fired in a traced process.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct MarkerEvent {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    /// Index of the attached probe (the uprobe attach cookie), see the user side.
    pub probe: u32,
    /// The user stack (id in `STACKS`) of `pc_open`, where the application made its
    /// PeerConnection; negative for other markers.
    pub user_stack: i32,
    pub _pad: u32,
    pub ts_ns: u64,
    pub args: [u64; MARKER_MAX_ARGS],
}

/// How the BPF side finds one USDT argument (from the note's `SIZE@LOCATION` spec,
/// parsed in user space). `kind` is one of [`usdt_arg`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UsdtArg {
    pub kind: u32,
    /// Size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// 1 if the value is signed (sign-extend), 0 if not (zero-extend).
    pub signed: u8,
    pub _pad: u16,
    /// Byte offset in `struct pt_regs` of the register (value, or base of a memory arg).
    pub reg_offset: u32,
    pub _pad2: u32,
    /// The constant, or the displacement of a memory arg.
    pub value: i64,
}

/// [`UsdtArg::kind`] values.
pub mod usdt_arg {
    pub const CONST: u32 = 1;
    pub const REG: u32 = 2;
    pub const MEM: u32 = 3;
}

/// What the BPF side does when a marker fires, besides reporting it. One of
/// [`usdt_action`].
pub mod usdt_action {
    pub const REPORT: u32 = 0;
    /// `span_enter(pc_id)`: the thread now works for `pc_id`.
    pub const SPAN_ENTER: u32 = 1;
    /// `span_exit(pc_id)`: the thread no longer works for `pc_id`.
    pub const SPAN_EXIT: u32 = 2;
    /// `pc_close_end(pc_id)` or `pc_dropped(pc_id)`: the PeerConnection ended (for the
    /// I/O hooks: what its sockets do from now on is I/O after the end).
    pub const PC_END: u32 = 3;
    /// `pc_open(pc_id)`: also take the user stack (where the application made it).
    pub const PC_OPEN: u32 = 4;
}

/// Everything the USDT program needs about one attached marker, stored in a map under
/// the uprobe's attach cookie.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UsdtSpec {
    pub action: u32,
    pub nargs: u32,
    pub args: [UsdtArg; MARKER_MAX_ARGS],
}

/// A socket whose sends and receives the I/O hooks watch, by (process, fd): the key is
/// `(tgid << 32) | fd` ([`watched_fd_key`]). Written by the kernel as each traced
/// socket is created, and by user space (its PeerConnection and that one's end, and the
/// sockets from before the attach); read by the hooks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct WatchedFd {
    pub cookie: u64,
    /// Its PeerConnection (0: not known yet). Its end, when the `pc_close_end` or
    /// `pc_dropped` marker fires, is recorded in the kernel at once ([`PcKey`]), so
    /// operations from then on count as I/O after the end however late user space
    /// reads the marker.
    pub pc_id: u64,
    /// When its PeerConnection ended (`bpf_ktime_get_ns` clock), as user space knows
    /// it; 0 while it lives or when only the kernel knows.
    pub ended_ns: u64,
}

/// `WATCHED_FDS`' key for `fd` of process `tgid`.
pub const fn watched_fd_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

/// The slot of `WATCHED_SLOTS` that watched-socket key `key` may hold (`mask`: the
/// slot count minus one, a power of two). One process's fds are small and dense, so
/// they take consecutive slots; the process id spreads processes apart (the daemon
/// watches every process of the host).
pub const fn watched_slot_index(key: u64, mask: u32) -> u32 {
    let fd = key as u32;
    let tgid = (key >> 32) as u32;
    fd.wrapping_add(tgid.wrapping_mul(0x9e37_79b1)) & mask
}

/// A slot of `WATCHED_SLOTS`, in front of `WATCHED_FDS` (tracer-ebpf's slots.rs): the
/// key that holds it (0: free) and its socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct WatchedSlot {
    pub owner: u64,
    pub socket: WatchedFd,
}

/// A PeerConnection of a process, for the map of ended PeerConnections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PcKey {
    pub tgid: u32,
    pub _pad: u32,
    pub pc_id: u64,
}

/// What a watched socket's sends and receives were, kept by the I/O hooks per cookie.
/// Counters count operations after its PeerConnection ended only; `last_*` describe
/// the last operation whenever it was (before the end too: a read that would block,
/// done before close, is what shows a task parked on the socket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct IoStats {
    /// Successful sends (`sendto`, `sendmsg`, `sendmmsg`) after the end.
    pub sends: u64,
    /// Successful receives after the end.
    pub recvs: u64,
    /// Receives that found nothing and would have blocked (`EAGAIN`) after the end.
    pub recvs_would_block: u64,
    /// Other failures (sends that would block included) after the end.
    pub errors: u64,
    pub last_ts_ns: u64,
    /// When a send or receive last succeeded.
    pub last_ok_ts_ns: u64,
    /// The last operation's result: bytes or messages, or a negative errno.
    pub last_ret: i64,
    /// [`io_op`] of the last operation.
    pub last_op: u32,
    pub last_tid: u32,
    /// User stack (id in `STACKS`) of the last operation after the end; negative when
    /// none.
    pub last_stack_after_end: i32,
    /// Samples of operations after the end ([`sample_flags::FOR_IO`]) that may be
    /// taken now, and when they were last refilled (see [`IO_SAMPLE_EVERY_NS`]).
    pub sample_tokens: u32,
    pub sample_refill_ns: u64,
}

/// [`IoStats::last_op`] values.
pub mod io_op {
    pub const SEND: u32 = 1;
    pub const RECV: u32 = 2;
}

/// Indexes into the per-CPU `STATS` array.
pub mod stats {
    /// Records lost: the ring buffer had no room, or one of the two below (counted
    /// here too, so user space reads one counter).
    pub const LOST: u32 = 0;
    /// Sockets not tracked because the tracked-socket map was full (their release
    /// under a pid filter can be missed).
    pub const TRACK_FULL: u32 = 1;
    /// Creates whose stash for `sys_exit_socket` could not be stored (no create record).
    pub const PENDING_FULL: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// Kernel protocol number of UDP.
pub const IPPROTO_UDP: u32 = 17;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: plain `repr(C)` structs of integers and byte arrays, no padding holes
    // that matter for reading (explicit `_pad` fields).
    unsafe impl aya::Pod for CreateEvent {}
    unsafe impl aya::Pod for BindEvent {}
    unsafe impl aya::Pod for ReleaseEvent {}
    unsafe impl aya::Pod for MarkerEvent {}
    unsafe impl aya::Pod for UsdtSpec {}
    unsafe impl aya::Pod for ProcessEvent {}
    unsafe impl aya::Pod for ProcessOffsets {}
    unsafe impl aya::Pod for WatchedFd {}
    unsafe impl aya::Pod for WatchedSlot {}
    unsafe impl aya::Pod for IoStats {}
    unsafe impl aya::Pod for StackSample {}
    unsafe impl aya::Pod for WalkedStack {}
    unsafe impl aya::Pod for WalkKey {}
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, so times taken in
/// user space (by the tracer, a workload or the benchmarks) compare with the kernel's.
#[cfg(feature = "clock")]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
