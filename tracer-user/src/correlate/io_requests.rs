//! What the kernel's I/O hooks should watch (see `crate::explain`): the correlator
//! says which sockets belong to which PeerConnection and when each ended; the session
//! hands that to the kernel.
use super::{Correlator, PeerConnectionId};
use crate::sockets::Origin;

/// What the kernel's I/O hooks should watch, by the fd a process holds a socket under:
/// the kernel watches every socket it traces from its creation and forgets each at its
/// release; these add the sockets of PeerConnections from before the attach (and
/// forget them: they may be released before they are added), and say which
/// PeerConnection a socket belongs to and when it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoRequest {
    Watch {
        pid: u32,
        fd: i32,
        cookie: u64,
        pc_id: u64,
        /// 0 while its PeerConnection lives.
        ended_ns: u64,
        /// The kernel watches it since its creation (and forgets it at its release):
        /// only update what it has, never add (the socket may be released already).
        traced: bool,
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
            traced: sock.origin == Origin::Traced,
        });
    }
}
