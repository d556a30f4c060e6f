//! Noticing that the process a command follows (`leaks --pid`, `watch --pid`) has
//! exited, so the command ends with it.
use std::{
    os::fd::{AsRawFd as _, OwnedFd},
    time::Duration,
};

use crate::{error::UsageError, inventory};

/// Notices when the `--pid` process exits, checking every 100 ms: through a pidfd
/// (readable once the process has exited, zombie or reaped, and never confused with a
/// process that reuses the pid), or by looking at /proc where pidfds are missing.
pub struct ExitWatch {
    pid: u32,
    pidfd: Option<OwnedFd>,
    tick: tokio::time::Interval,
}

impl ExitWatch {
    pub fn new(pid: u32) -> Result<Self, UsageError> {
        let pidfd = match inventory::pidfd_open(pid) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(UsageError::NoSuchPid(pid));
            }
            Err(_) => None,
        };
        Ok(Self {
            pid,
            pidfd,
            tick: tokio::time::interval(Duration::from_millis(100)),
        })
    }

    fn has_exited(&self) -> bool {
        let Some(fd) = &self.pidfd else {
            return !inventory::process_running(self.pid);
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a zero timeout does not block.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n < 0 {
            return !inventory::process_running(self.pid);
        }
        n > 0 && pfd.revents != 0
    }

    /// Resolves when the process has exited; never without a process to watch.
    pub async fn exited(watch: Option<&mut Self>) {
        let Some(w) = watch else {
            return std::future::pending().await;
        };
        loop {
            w.tick.tick().await;
            if w.has_exited() {
                return;
            }
        }
    }
}
