//! What the kernel's I/O hooks should watch (see `crate::explain`): the correlator
//! says which sockets belong to which PeerConnection and when each ended; the session
//! hands that to the kernel.
use super::{Correlator, PeerConnectionId};

/// What the kernel's I/O hooks should watch, by the fd a process holds a socket under:
/// the kernel watches every socket it traces from its creation; these add the sockets
/// of PeerConnections from before the attach, say when a PeerConnection ended, and
/// forget released sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoRequest {
    Watch {
        pid: u32,
        fd: i32,
        cookie: u64,
        pc_id: u64,
        /// 0 while its PeerConnection lives.
        ended_ns: u64,
    },
    Forget {
        pid: u32,
        fd: i32,
        cookie: u64,
    },
}

impl Correlator {
    /// What the I/O hooks should now watch or forget, in order.
    pub fn take_io_requests(&mut self) -> Vec<IoRequest> {
        std::mem::take(&mut self.io_requests)
    }

    /// Watch `cookie` (if its fd is known) with its PeerConnection's end, if any.
    pub(super) fn request_watch(&mut self, cookie: u64) {
        let Some(sock) = self.sockets.get(&cookie) else {
            return;
        };
        let (Some(fd), Some(a)) = (sock.info.fd, sock.attribution) else {
            return;
        };
        let pid = sock.info.pid;
        let ended_ns = self
            .pcs
            .get(&PeerConnectionId {
                pid,
                pc_id: a.pc_id,
            })
            .and_then(|pc| pc.close_end_ns)
            .unwrap_or(0);
        self.io_requests.push(IoRequest::Watch {
            pid,
            fd,
            cookie,
            pc_id: a.pc_id,
            ended_ns,
        });
    }
}
