//! Why a leaked socket is still open: what the kernel can tell about it at verdict
//! time. Holders: every process and fd that refers to it now (a dup, a fork, a
//! descriptor passed to another process keep it open), and the epoll sets it is in
//! (supporting evidence only: tokio registers every socket with epoll when it is made,
//! so membership alone does not show that anyone waits).
mod holders;

pub use holders::{EpollWatch, Holder, holders_of};

use std::collections::HashMap;

use crate::{backend::SocketIdentity, correlate::Finding, inventory};

/// Adds to each leak what keeps it open now: its holders and epoll sets. Leaks judged
/// when their process already exited get none (its fds are gone from /proc).
pub fn explain_leaks(findings: &mut [Finding], identity: SocketIdentity) {
    // One look at each process's sockets per batch of findings.
    let mut sockets_of: HashMap<u32, Vec<inventory::HeldSocket>> = HashMap::new();
    for f in findings {
        let Finding::Leak(leak) = f else { continue };
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
