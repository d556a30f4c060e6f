//! The socket records every backend produces, so the cgroup hooks and the kernel
//! function hooks (fentry, kprobe) give user space one event stream.
use aya_ebpf::{
    bindings::BPF_F_USER_STACK, helpers::bpf_ktime_get_ns, programs::tracing::StackIdContext,
};
use tracer_common::{BindEvent, EventKind, ReleaseEvent};

use crate::{
    filter::{
        current, current_comm, current_exiting, current_task_wanted, filters_active,
        kernel_stacks_wanted,
    },
    maps::{PendingCreate, STACKS, reserve, stack_wakeup, wakeup},
    slots,
};

/// A UDP socket is being created by the current thread: stash what is known for
/// `sys_exit_socket`, which adds the fd and the stacks (see syscall.rs).
#[inline(always)]
pub fn stash_create(cookie: u64, family: u16) {
    let (tgid, tid) = current();
    if !current_task_wanted(tgid) {
        return;
    }
    // SAFETY: no side effects beyond reading the clock.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let pending = PendingCreate {
        cookie,
        ts_ns,
        family,
        _pad: [0; 3],
    };
    slots::pending_put(tid, pending);
    if filters_active() {
        slots::track(cookie);
    }
}

/// Whether events about an existing socket concern us: it was tracked at creation, or
/// (for sockets that predate the tracer) the current task passes the filters.
#[inline(always)]
fn socket_wanted(cookie: u64, tgid: u32) -> bool {
    // The task first: a filter compare, where the lookup is a hash of the map.
    !filters_active() || current_task_wanted(tgid) || slots::is_tracked(cookie)
}

/// The socket got a local address: `port` in host order, `addr` as [`BindEvent::addr`].
#[inline(always)]
pub fn emit_bind(cookie: u64, family: u16, port: u16, addr: [u8; 16]) {
    let (tgid, tid) = current();
    if !socket_wanted(cookie, tgid) {
        return;
    }
    if let Some(mut entry) = reserve::<BindEvent>() {
        entry.write(BindEvent {
            kind: EventKind::Bind as u32,
            pid: tgid,
            tid,
            family,
            port,
            // SAFETY: reads the clock only.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            cookie,
            addr,
        });
        entry.submit(wakeup());
    }
}

/// Stack ids in `STACKS`: (kernel, user); negative when not taken.
pub struct StackIds(pub i32, pub i32);

impl StackIds {
    /// Hooks that cannot take stacks (cgroup_sock programs).
    pub const NONE: Self = Self(-1, -1);

    /// The current stacks: always the user one (which code made or dropped the
    /// socket), the kernel one only when asked for (`trace --stacks`).
    #[inline(always)]
    pub fn current<C: StackIdContext>(ctx: &C) -> Self {
        let kernel = if kernel_stacks_wanted() {
            ctx.get_stackid(&STACKS, 0).map_or(-1, |id| id as i32)
        } else {
            -1
        };
        let user = ctx
            .get_stackid(&STACKS, BPF_F_USER_STACK as u64)
            .map_or(-1, |id| id as i32);
        Self(kernel, user)
    }

    /// The kernel stack only (when asked for): the user stack is walked elsewhere.
    #[inline(always)]
    pub fn kernel_only<C: StackIdContext>(ctx: &C) -> Self {
        if kernel_stacks_wanted() {
            Self(ctx.get_stackid(&STACKS, 0).map_or(-1, |id| id as i32), -1)
        } else {
            Self::NONE
        }
    }
}

/// The socket's last reference is being dropped. `stacks` is called only for wanted
/// sockets, so the rest of the host does not pay for stack walks.
#[inline(always)]
pub fn emit_release(cookie: u64, family: u16, stacks: impl FnOnce() -> StackIds) {
    // Whether it was tracked, and where the I/O hooks watch it. Sockets are tracked
    // only under a filter: without one (the daemon) a lookup always misses.
    let (tracked, key) = if filters_active() {
        slots::untrack(cookie, crate::io::watching())
    } else {
        (false, 0)
    };
    // Whoever releases it (another process it was passed to, say).
    crate::io::forget_released(cookie, key);
    let (tgid, tid) = current();
    if filters_active() && !tracked && !current_task_wanted(tgid) {
        return;
    }
    let StackIds(kernel_stack, user_stack) = stacks();
    if let Some(mut entry) = reserve::<ReleaseEvent>() {
        entry.write(ReleaseEvent {
            kind: EventKind::Release as u32,
            pid: tgid,
            tid,
            family,
            exiting: current_exiting(),
            _pad: 0,
            // SAFETY: reads the clock only.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            cookie,
            comm: current_comm(),
            kernel_stack,
            user_stack,
        });
        entry.submit(stack_wakeup(tgid, user_stack));
    }
}
