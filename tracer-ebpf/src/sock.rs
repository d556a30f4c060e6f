//! cgroup_sock hooks: they fire only on socket operations of tasks in the attached
//! cgroup, so the rest of the system pays nothing (unlike per-syscall tracepoints).
//! Every program here must return 1: 0 would deny the operation to the application.
use aya_ebpf::{
    bindings::bpf_sock, helpers::bpf_get_socket_cookie, helpers::bpf_ktime_get_ns,
    macros::cgroup_sock, programs::SockContext,
};
use tracer_common::{BindEvent, EventKind, IPPROTO_UDP, ReleaseEvent, stats};

use crate::{
    filter::{current, current_comm, current_exiting, current_task_wanted, filters_active},
    maps::{PENDING, PendingCreate, TRACKED, count, reserve, wakeup},
};

const ALLOW: i32 = 1;

/// The socket behind a hook's context, if it is a UDP socket.
#[inline(always)]
fn udp_sock(ctx: &SockContext) -> Option<&bpf_sock> {
    // SAFETY: the kernel passes a valid `bpf_sock` context for the program's lifetime.
    let sock = unsafe { &*ctx.sock };
    (sock.protocol == IPPROTO_UDP).then_some(sock)
}

#[inline(always)]
fn cookie(ctx: &SockContext) -> u64 {
    // SAFETY: the helper only reads the socket behind the context.
    unsafe { bpf_get_socket_cookie(ctx.sock.cast()) }
}

#[cgroup_sock(sock_create)]
pub fn sockscope_create(ctx: SockContext) -> i32 {
    let Some(sock) = udp_sock(&ctx) else {
        return ALLOW;
    };
    let (tgid, tid) = current();
    if !current_task_wanted(tgid) {
        return ALLOW;
    }
    let cookie = cookie(&ctx);
    // SAFETY: no side effects beyond reading the clock.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let pending = PendingCreate {
        cookie,
        ts_ns,
        family: sock.family as u16,
        _pad: [0; 3],
    };
    if PENDING.insert(tid, pending, 0).is_err() {
        count(stats::PENDING_FULL);
    }
    if filters_active() && TRACKED.insert(cookie, ts_ns, 0).is_err() {
        count(stats::TRACK_FULL);
    }
    ALLOW
}

#[cgroup_sock(post_bind4)]
pub fn sockscope_bind4(ctx: SockContext) -> i32 {
    if let Some(sock) = udp_sock(&ctx) {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&sock.src_ip4.to_ne_bytes());
        emit_bind(&ctx, sock, addr);
    }
    ALLOW
}

#[cgroup_sock(post_bind6)]
pub fn sockscope_bind6(ctx: SockContext) -> i32 {
    if let Some(sock) = udp_sock(&ctx) {
        let mut addr = [0u8; 16];
        for (i, word) in sock.src_ip6.iter().enumerate() {
            addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        emit_bind(&ctx, sock, addr);
    }
    ALLOW
}

/// Whether events about an existing socket concern us: it was tracked at creation, or
/// (for sockets that predate the tracer) the current task passes the filters.
#[inline(always)]
fn socket_wanted(cookie: u64, tgid: u32) -> bool {
    !filters_active() || TRACKED.get_ptr(cookie).is_some() || current_task_wanted(tgid)
}

#[inline(always)]
fn emit_bind(ctx: &SockContext, sock: &bpf_sock, addr: [u8; 16]) {
    let (tgid, tid) = current();
    let cookie = cookie(ctx);
    if !socket_wanted(cookie, tgid) {
        return;
    }
    if let Some(mut entry) = reserve::<BindEvent>() {
        entry.write(BindEvent {
            kind: EventKind::Bind as u32,
            pid: tgid,
            tid,
            family: sock.family as u16,
            port: sock.src_port as u16,
            // SAFETY: reads the clock only.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            cookie,
            addr,
        });
        entry.submit(wakeup());
    }
}

#[cgroup_sock(sock_release)]
pub fn sockscope_release(ctx: SockContext) -> i32 {
    let Some(sock) = udp_sock(&ctx) else {
        return ALLOW;
    };
    let (tgid, tid) = current();
    let cookie = cookie(&ctx);
    if !socket_wanted(cookie, tgid) {
        return ALLOW;
    }
    let _ = TRACKED.remove(cookie);
    if let Some(mut entry) = reserve::<ReleaseEvent>() {
        entry.write(ReleaseEvent {
            kind: EventKind::Release as u32,
            pid: tgid,
            tid,
            family: sock.family as u16,
            exiting: current_exiting(),
            _pad: 0,
            // SAFETY: reads the clock only.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            cookie,
            comm: current_comm(),
        });
        entry.submit(wakeup());
    }
    ALLOW
}
