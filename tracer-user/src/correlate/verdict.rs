//! What the correlator concludes, as records for output and reports.
use std::net::IpAddr;

use super::subsystem::Subsystem;
use crate::symbolize::Frame;

/// How sure the attribution of a socket to a PeerConnection is, weakest first.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Created by webrtc-rs code while this was the process's only open PeerConnection.
    CreationStack,
    /// Created on a thread inside the PeerConnection's span.
    ThreadSpan,
    /// The application announced the socket's port for the PeerConnection (`pc_socket`).
    PortMarker,
}

impl Confidence {
    /// How the attribution was made, for people.
    pub fn label(self) -> &'static str {
        match self {
            Self::CreationStack => "by creating stack (weakest)",
            Self::ThreadSpan => "by thread span",
            Self::PortMarker => "by pc_socket port (strongest)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attribution {
    pub pc_id: u64,
    pub confidence: Confidence,
}

/// A socket still open `grace` after its PeerConnection's `close()` returned.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Leak {
    pub pid: u32,
    pub comm: String,
    pub tid: u32,
    pub cookie: u64,
    pub fd: Option<i32>,
    pub local_addr: Option<IpAddr>,
    pub local_port: Option<u16>,
    pub pc_id: u64,
    pub confidence: Confidence,
    pub subsystem: Subsystem,
    /// Socket age when judged.
    pub age_ns: u64,
    /// Time since the PeerConnection's close returned, when judged.
    pub since_close_ns: u64,
    /// Creating user stack, innermost first (empty if it could not be taken).
    pub stack: Vec<Frame>,
}

/// Final word on one PeerConnection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PcOutcome {
    Clean,
    Leak,
    /// Events were lost while it lived: no clean verdict can be given.
    Incomplete,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PcVerdict {
    pub pid: u32,
    pub pc_id: u64,
    pub outcome: PcOutcome,
    /// Sockets attributed to it over its life.
    pub sockets: usize,
    pub leaked: usize,
}

/// Everything the correlator reports, in order.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Finding {
    Leak(Leak),
    /// A leaked socket was released after all, `late_by_ns` after it was judged;
    /// `by_exit` when the kernel closed it because the process exited.
    Late {
        pid: u32,
        pc_id: u64,
        cookie: u64,
        local_port: Option<u16>,
        late_by_ns: u64,
        by_exit: bool,
    },
    Verdict(PcVerdict),
}
