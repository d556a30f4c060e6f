//! `syscalls/sys_exit_socket`: completes the create event that a backend's create hook
//! (`cgroup/sock_create`, or `udp_init_sock` for fentry/kprobe) stashed for this thread
//! with the fd `socket(2)` returned and the creating stacks (cgroup_sock programs may
//! not take stacks; the others run before the fd exists). It fires for every
//! `socket(2)` on the system, so the common path (no stash for this thread) is one hash
//! lookup.
use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_send_signal};
use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP, macros::tracepoint, maps::ring_buf::RingBufEntry,
    programs::TracePointContext,
};
use tracer_common::{CreateEvent, EventKind, ProcessEvent, ProcessIdentity};

use crate::{
    emit::StackIds,
    filter::{cgroup_filter_set, current, current_comm, current_task_wanted, read_global},
    identity::current_identity,
    maps::{CURRENT_PC, reserve, stack_wakeup, wakeup},
};

/// Offset of `ret` in the `sys_exit_*` tracepoint record (after the common header and
/// the syscall number).
const RET_OFFSET: usize = 16;

#[tracepoint(category = "syscalls", name = "sys_exit_socket")]
pub fn sockscope_socket_exit(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current();
    let pending = crate::slots::pending_take(tid);
    if pending.cookie == 0 {
        return 0;
    }
    // SAFETY: `ret` is a long at this offset of every sys_exit record.
    let ret: i64 = unsafe { ctx.read_at(RET_OFFSET) }.unwrap_or(-1);
    // DWARF mode: registers and stack first, so the reader has them with the create.
    // Taken before the walk, and its outcome not kept: the verifier then walks the
    // sampling code once, not once per way the walk can end (6.1's verifier gave up on
    // the program otherwise). A process's first sample comes with a stack new to it,
    // whose create record wakes the reader at once anyway.
    let _ = crate::stack_sample::sample(tgid, tid, pending.cookie, 0, 0);
    // The user stack: walked here (see walk.rs), or by the kernel into `STACKS`.
    let walked = if crate::walk::enabled() {
        crate::walk::walk(tgid)
    } else {
        crate::walk::Walked::NONE
    };
    let StackIds(kernel_stack, user_stack) = if crate::walk::enabled() {
        StackIds::kernel_only(&ctx)
    } else {
        StackIds::current(&ctx)
    };
    // SAFETY: copied out at once.
    let pc_id = unsafe { CURRENT_PC.get(tid) }.copied().unwrap_or(0);
    crate::io::watch_new_socket(tgid, ret, pending.cookie, pc_id);
    if let Some(mut entry) = reserve::<CreateEvent>() {
        entry.write(CreateEvent {
            kind: EventKind::Create as u32,
            pid: tgid,
            tid,
            family: pending.family,
            _pad: 0,
            fd: ret as i32,
            kernel_stack,
            user_stack,
            _pad2: 0,
            ts_ns: pending.ts_ns,
            cookie: pending.cookie,
            pc_id,
            comm: current_comm(),
            user_stack_hash: walked.hash,
        });
        // The first record of each (process, stack) wakes the reader at once (see
        // `stack_wakeup`).
        let flags = match (walked.hash, walked.first) {
            (0, _) => stack_wakeup(tgid, user_stack),
            (_, true) => BPF_RB_FORCE_WAKEUP as u64,
            (_, false) => wakeup(),
        };
        entry.submit(flags);
    }
    0
}

/// Offset of `group_dead` in the `sched_process_exit` record (6.x kernels; older ones
/// lack the field, and this program is then not attached, see the loader).
const GROUP_DEAD_OFFSET: usize = 32;

/// `sched/sched_process_exit` for the last thread of a process: fires before the
/// kernel closes the process's files, so the exit is ordered before those releases.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sockscope_proc_exit(ctx: TracePointContext) -> u32 {
    // SAFETY: a bool at this offset of the record (checked against the format by
    // user space before attaching).
    let group_dead: u8 = unsafe { ctx.read_at(GROUP_DEAD_OFFSET) }.unwrap_or(0);
    if group_dead == 0 {
        return 0;
    }
    let (tgid, tid) = current();
    if !current_task_wanted(tgid) {
        return 0;
    }
    if let Some(entry) = process_event(EventKind::Exit, tgid, tid, false) {
        entry.submit(wakeup());
    }
    0
}

/// A process record, written but not yet submitted.
#[inline(always)]
fn process_event(
    kind: EventKind,
    pid: u32,
    tid: u32,
    stopped: bool,
) -> Option<RingBufEntry<ProcessEvent>> {
    let mut entry = reserve::<ProcessEvent>()?;
    // Only an exec starts a process user space may not have seen alive.
    let identity = if matches!(kind, EventKind::Exec) {
        current_identity()
    } else {
        ProcessIdentity::default()
    };
    entry.write(ProcessEvent {
        kind: kind as u32,
        pid,
        tid,
        stopped: u32::from(stopped),
        // SAFETY: reads the clock only.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        identity,
    });
    Some(entry)
}

const SIGSTOP: u32 = 19;

/// Every exec on the host is reported, never stopped (`daemon`: it looks for the new
/// program's markers while the program starts).
#[unsafe(no_mangle)]
static EXEC_ALL: u8 = 0;

/// `sched/sched_process_exec`. In the traced cgroup (`check`): stops the process before
/// its first instruction, so user space can attach the new program's USDT markers (test
/// binaries that `cargo test` runs, say) and then continue it; without a record to tell
/// user space (ring full), the process is not stopped. Host-wide (`EXEC_ALL`, the
/// daemon): only tells, since stopping every program of a host on a tracer's behalf
/// would put the host at its mercy.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sockscope_exec(_ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current();
    let stop = if cgroup_filter_set() {
        if !current_task_wanted(tgid) {
            return 0;
        }
        true
    } else if read_global(&EXEC_ALL) != 0 {
        false
    } else {
        return 0;
    };
    if let Some(entry) = process_event(EventKind::Exec, tgid, tid, stop) {
        if stop {
            // Stop first, tell after: user space's SIGCONT cannot come before the SIGSTOP.
            // SAFETY: signals the current process only.
            unsafe { bpf_send_signal(SIGSTOP) };
        }
        // Stopped, the process waits for us; running, its markers should be attached
        // before it opens its first PeerConnection: wake the consumer now either way
        // (execs are rare).
        entry.submit(BPF_RB_FORCE_WAKEUP as u64);
    }
    0
}
