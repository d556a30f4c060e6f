//! The kprobe backend, for kernels that allow kprobes but not fentry: the same kernel
//! functions as the fentry backend, one program per hook attached to the IPv4 and IPv6
//! function alike. A kprobe may not ask the kernel for a socket cookie, and none exists
//! yet when a socket is made, so here a socket's identity is its inode number.
use aya_ebpf::{
    macros::{kprobe, kretprobe, map},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    filter::current,
    kernel_sock::{KernelSock, on_destroy, on_init, on_port},
};

/// The socket whose port the current thread is getting, between the entry and return
/// probes of `udp_v{4,6}_get_port` (a return probe does not see the arguments).
#[map]
static PORT_PENDING: HashMap<u32, u64> = HashMap::with_max_entries(2048, 0);

#[inline(always)]
fn sock_arg(ctx: &ProbeContext) -> Option<KernelSock> {
    ctx.arg::<*const u8>(0).map(KernelSock)
}

#[kprobe]
pub fn sockscope_kp_init(ctx: ProbeContext) -> u32 {
    if let Some(sk) = sock_arg(&ctx) {
        on_init(sk, || sk.inode());
    }
    0
}

#[kprobe]
pub fn sockscope_kp_port(ctx: ProbeContext) -> u32 {
    if let Some(sk) = sock_arg(&ctx) {
        let _ = PORT_PENDING.insert(current().1, sk.0 as u64, 0);
    }
    0
}

#[kretprobe]
pub fn sockscope_kp_port_ret(ctx: RetProbeContext) -> u32 {
    let tid = current().1;
    // SAFETY: copied out before the entry is removed.
    let Some(sk) = (unsafe { PORT_PENDING.get(tid) }).copied() else {
        return 0;
    };
    let _ = PORT_PENDING.remove(tid);
    let ret: i32 = ctx.ret();
    if ret == 0 {
        let sk = KernelSock(sk as *const u8);
        on_port(sk, || sk.inode());
    }
    0
}

#[kprobe]
pub fn sockscope_kp_destroy(ctx: ProbeContext) -> u32 {
    if let Some(sk) = sock_arg(&ctx) {
        on_destroy(&ctx, sk, || sk.inode());
    }
    0
}
