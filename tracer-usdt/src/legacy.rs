//! A thin wrapper that fires every marker for a legacy webrtc-rs (0.14-0.17, Tokio)
//! `RTCPeerConnection`: a fresh pc_id and `pc_open` on creation, `pc_socket` for each
//! local host candidate's port once gathered, `pc_close_begin`/`pc_close_end` around
//! `close()`, and `pc_dropped` when the application lets go of the last handle without
//! calling `close()`.
//!
//! Socket cookies (`pc_socket_cookie`): the legacy API does not hand out the sockets
//! behind its candidates (the ICE agent that owns them is crate-private in
//! `RTCIceGatherer`), so host candidates are announced by port only. A socket the
//! application itself gives webrtc-rs (a `UDPNetwork::Muxed` socket) can be announced
//! exactly with [`TracedPeerConnection::announce_socket`].
use std::{
    future::Future,
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use webrtc::peer_connection::{RTCPeerConnection, sdp::session_description::RTCSessionDescription};
use webrtc_legacy as webrtc;

use crate::InPcSpan;

static NEXT_PC_ID: AtomicU64 = AtomicU64::new(1);

/// A PeerConnection announced to sockscope. Clones share one life: when the last clone
/// is dropped and `close()` was never called on any of them, `pc_dropped` fires (once).
/// Only the wrapper's handles count: an `Arc<RTCPeerConnection>` cloned out of `pc`
/// and kept elsewhere does not delay `pc_dropped`.
#[derive(Clone)]
pub struct TracedPeerConnection {
    pub pc: Arc<RTCPeerConnection>,
    pub pc_id: u64,
    life: Arc<Life>,
}

/// Shared by all clones of one [`TracedPeerConnection`]; its `Drop` is the last
/// handle's.
struct Life {
    pc_id: u64,
    closed: AtomicBool,
    /// What was announced: (cookie, port) of each socket.
    announced: std::sync::Mutex<Vec<(Option<u64>, u16)>>,
}

impl Life {
    fn announce(&self, cookie: Option<u64>, port: u16) {
        if let Some(cookie) = cookie {
            crate::pc_socket_cookie(self.pc_id, cookie);
        }
        if port != 0 {
            crate::pc_socket(self.pc_id, port);
        }
    }

    fn remember(&self, cookie: Option<u64>, port: u16) {
        self.announce(cookie, port);
        // A poisoned lock only means another thread panicked while pushing.
        let mut all = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        if !all.contains(&(cookie, port)) {
            all.push((cookie, port));
        }
    }

    /// Announces every socket again right before the end is announced: a tracer that
    /// attached while the PeerConnection was open can then tie them to it.
    fn announce_again(&self) {
        let all = self
            .announced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (cookie, port) in all {
            self.announce(cookie, port);
        }
    }
}

impl Drop for Life {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            self.announce_again();
            crate::pc_dropped(self.pc_id);
        }
    }
}

/// Ports of the host candidates in an SDP.
pub fn candidate_ports(sdp: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate:") && l.contains(" typ host"))
        .filter_map(|l| l.split_whitespace().nth(5)?.parse().ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

impl TracedPeerConnection {
    /// Wraps `pc` with a process-unique id and fires `pc_open`.
    pub fn new(pc: Arc<RTCPeerConnection>) -> Self {
        Self::with_id(pc, NEXT_PC_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// Wraps `pc` under an id of the application's choosing (nonzero, unique).
    pub fn with_id(pc: Arc<RTCPeerConnection>, pc_id: u64) -> Self {
        crate::pc_open(pc_id);
        Self {
            pc,
            pc_id,
            life: Arc::new(Life {
                pc_id,
                closed: AtomicBool::new(false),
                announced: Default::default(),
            }),
        }
    }

    /// Runs `fut` inside this PeerConnection's span.
    pub fn in_span<F: Future>(&self, fut: F) -> InPcSpan<F> {
        crate::in_pc_span(self.pc_id, fut)
    }

    /// Sets the local description, waits until ICE gathering is complete, announces
    /// every host candidate's port, and returns the complete local SDP.
    pub async fn set_local_description_and_gather(
        &self,
        sdp: RTCSessionDescription,
    ) -> Result<String, webrtc::Error> {
        let mut gathered = self.pc.gathering_complete_promise().await;
        self.in_span(self.pc.set_local_description(sdp)).await?;
        let _ = gathered.recv().await;
        let local = self
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or_default();
        self.announce_ports(&local);
        Ok(local)
    }

    /// Announces the host candidate ports found in `local_sdp`.
    pub fn announce_ports(&self, local_sdp: &str) {
        for port in candidate_ports(local_sdp) {
            self.life.remember(None, port);
        }
    }

    /// Announces a UDP socket this PeerConnection uses that the application holds
    /// (e.g. the socket of a `UDPNetwork::Muxed` network): its `SO_COOKIE`, the exact
    /// attribution, and its local port. Returns the cookie, `None` if the kernel would
    /// not give one (the port is announced all the same when known).
    pub fn announce_socket<S: AsRawFd>(&self, socket: &S, local_port: u16) -> Option<u64> {
        let cookie = crate::socket_cookie(socket.as_raw_fd());
        self.life.remember(cookie, local_port);
        cookie
    }

    /// `close()` between `pc_close_begin` and `pc_close_end`. From the call on, dropping
    /// the last handle no longer fires `pc_dropped`.
    pub async fn close(&self) -> Result<(), webrtc::Error> {
        self.life.closed.store(true, Ordering::Release);
        self.life.announce_again();
        crate::pc_close_begin(self.pc_id);
        let result = self.in_span(self.pc.close()).await;
        crate::pc_close_end(self.pc_id);
        result
    }
}
