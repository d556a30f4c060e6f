//! Why a leaked socket is still open: what the kernel can tell about it at verdict
//! time. Holders: every process and fd that refers to it now (a dup, a fork, a
//! descriptor passed to another process keep it open), and the epoll sets it is in
//! (supporting evidence only: tokio registers every socket with epoll when it is made,
//! so membership alone does not show that anyone waits).
mod holders;
mod io;

pub use holders::holders_of;
pub use io::leak_kind;

use std::collections::HashMap;

use crate::{backend::SocketIdentity, correlate::Finding, inventory, loader::IoWatch};

/// Adds to each leak what keeps it open now: its holders and epoll sets (leaks judged
/// when their process already exited get none: its fds are gone from /proc), and what
/// its I/O says (`io`: the I/O hooks' records; `last_stack` gives the stack of the
/// last operation after the end of socket (pid, cookie) and when that operation was,
/// from the hooks' record).
pub fn explain_leaks(
    findings: &mut [Finding],
    identity: SocketIdentity,
    io: Option<&IoWatch>,
    now_ns: u64,
    mut last_stack: impl FnMut(
        u32,
        u64,
        &tracer_common::IoStats,
    ) -> (Vec<crate::symbolize::Frame>, Option<u64>),
) {
    // One look at each process's sockets per batch of findings.
    let mut sockets_of: HashMap<u32, Vec<inventory::HeldSocket>> = HashMap::new();
    for f in findings {
        let Finding::Leak(leak) = f else { continue };
        if let Some(io) = io {
            let stats = io.stats(leak.cookie);
            let (kind, mut evidence) = leak_kind(stats.as_ref(), leak.ended_ns, now_ns);
            if let (Some(e), Some(s)) = (evidence.as_mut(), stats) {
                (e.last_stack, e.last_stack_at_ns) = last_stack(leak.pid, leak.cookie, &s);
            }
            leak.kind = kind;
            leak.io = evidence;
        }
        let held = sockets_of
            .entry(leak.pid)
            .or_insert_with(|| inventory::udp_sockets_of(leak.pid).unwrap_or_default());
        let Some(inode) = held
            .iter()
            .find(|s| s.key(identity) == leak.cookie)
            .map(|s| s.inode)
        else {
            continue;
        };
        let (holders, epoll) = holders_of(inode);
        leak.holders = holders;
        leak.epoll = epoll;
    }
}
