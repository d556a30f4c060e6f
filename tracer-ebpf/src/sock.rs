//! cgroup_sock hooks (the cgroup backend): they fire only on socket operations of tasks
//! in the attached cgroup, so the rest of the system pays nothing (unlike per-syscall
//! tracepoints). Every program here must return 1: 0 would deny the operation to the
//! application.
use aya_ebpf::{
    bindings::bpf_sock, helpers::bpf_get_socket_cookie, macros::cgroup_sock, programs::SockContext,
};
use tracer_common::IPPROTO_UDP;

use crate::emit::{StackIds, emit_bind, emit_release, stash_create};

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
    if let Some(sock) = udp_sock(&ctx) {
        stash_create(cookie(&ctx), sock.family as u16);
    }
    ALLOW
}

#[cgroup_sock(post_bind4)]
pub fn sockscope_bind4(ctx: SockContext) -> i32 {
    if let Some(sock) = udp_sock(&ctx) {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&sock.src_ip4.to_ne_bytes());
        emit_bind(cookie(&ctx), sock.family as u16, sock.src_port as u16, addr);
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
        emit_bind(cookie(&ctx), sock.family as u16, sock.src_port as u16, addr);
    }
    ALLOW
}

#[cgroup_sock(sock_release)]
pub fn sockscope_release(ctx: SockContext) -> i32 {
    if let Some(sock) = udp_sock(&ctx) {
        emit_release(cookie(&ctx), sock.family as u16, || StackIds::NONE);
    }
    ALLOW
}
