//! A thin wrapper that fires every marker for a webrtc-rs `RTCPeerConnection`: a
//! fresh pc_id and `pc_open` on creation, `pc_socket` for each local host candidate's
//! port once gathered, `pc_close_begin`/`pc_close_end` around `close()`.
use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use webrtc::peer_connection::{RTCPeerConnection, sdp::session_description::RTCSessionDescription};

use crate::InPcSpan;

static NEXT_PC_ID: AtomicU64 = AtomicU64::new(1);

/// A PeerConnection announced to sockscope.
#[derive(Clone)]
pub struct TracedPeerConnection {
    pub pc: Arc<RTCPeerConnection>,
    pub pc_id: u64,
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
        Self { pc, pc_id }
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
            crate::pc_socket(self.pc_id, port);
        }
    }

    /// `close()` between `pc_close_begin` and `pc_close_end`.
    pub async fn close(&self) -> Result<(), webrtc::Error> {
        crate::pc_close_begin(self.pc_id);
        let result = self.in_span(self.pc.close()).await;
        crate::pc_close_end(self.pc_id);
        result
    }
}
