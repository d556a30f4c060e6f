//! The fentry backend: BPF trampolines on the kernel's UDP init, port and destroy
//! functions. Needs BTF and a kernel that allows tracing programs (not under lockdown).
//! The socket's identity is its cookie, as with the cgroup backend.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::bpf_get_socket_cookie,
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};

use crate::kernel_sock::{KernelSock, on_destroy, on_init, on_port};

/// The cookie of the `struct sock *` argument (the helper takes BTF-typed pointers
/// only, which tracing programs' arguments are).
#[inline(always)]
fn cookie(sk: *mut c_void) -> u64 {
    // SAFETY: `sk` is the hooked function's `struct sock *` argument.
    unsafe { bpf_get_socket_cookie(sk) }
}

#[inline(always)]
fn init(ctx: &FEntryContext) -> u32 {
    let sk: *mut c_void = ctx.arg(0);
    on_init(KernelSock(sk.cast()), || cookie(sk));
    0
}

#[inline(always)]
fn port(ctx: &FExitContext) -> u32 {
    let sk: *mut c_void = ctx.arg(0);
    // (sk, snum) -> int: the return value follows the two arguments.
    let ret: u64 = ctx.arg(2);
    if ret as i32 == 0 {
        on_port(KernelSock(sk.cast()), || cookie(sk));
    }
    0
}

#[inline(always)]
fn destroy(ctx: &FEntryContext) -> u32 {
    let sk: *mut c_void = ctx.arg(0);
    on_destroy(ctx, KernelSock(sk.cast()), || cookie(sk));
    0
}

#[fentry(function = "udp_init_sock")]
pub fn sockscope_fe_init4(ctx: FEntryContext) -> u32 {
    init(&ctx)
}

#[fentry(function = "udpv6_init_sock")]
pub fn sockscope_fe_init6(ctx: FEntryContext) -> u32 {
    init(&ctx)
}

#[fexit(function = "udp_v4_get_port")]
pub fn sockscope_fe_port4(ctx: FExitContext) -> u32 {
    port(&ctx)
}

#[fexit(function = "udp_v6_get_port")]
pub fn sockscope_fe_port6(ctx: FExitContext) -> u32 {
    port(&ctx)
}

#[fentry(function = "udp_destroy_sock")]
pub fn sockscope_fe_destroy4(ctx: FEntryContext) -> u32 {
    destroy(&ctx)
}

#[fentry(function = "udpv6_destroy_sock")]
pub fn sockscope_fe_destroy6(ctx: FEntryContext) -> u32 {
    destroy(&ctx)
}
