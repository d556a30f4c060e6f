//! What the correlator concludes, as records for output and reports.
use std::net::IpAddr;

use super::evidence::{EpollWatch, Holder, IoEvidence, LeakKind};
use super::{site::Site, subsystem::Subsystem};
use crate::{sockets::Origin, symbolize::Frame};

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
    /// The application announced the socket's cookie for the PeerConnection
    /// (`pc_socket_cookie`): exact, a cookie is never reused.
    CookieMarker,
}

impl Confidence {
    /// How the attribution was made, for people.
    pub fn label(self) -> &'static str {
        match self {
            Self::CreationStack => "by creating stack (weakest)",
            Self::ThreadSpan => "by thread span",
            Self::PortMarker => "by pc_socket port",
            Self::CookieMarker => "by pc_socket_cookie (strongest)",
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
    /// Socket age when judged; unknown (`None`) for a socket that predates sockscope.
    pub age_ns: Option<u64>,
    /// Time since the PeerConnection's close returned (or it was dropped), when judged.
    pub since_close_ns: u64,
    /// When the PeerConnection ended and when the socket was judged (CLOCK_MONOTONIC
    /// ns; 0 in reports saved before these were recorded).
    #[serde(default)]
    pub ended_ns: u64,
    #[serde(default)]
    pub judged_ns: u64,
    /// How the PeerConnection ended.
    #[serde(default)]
    pub ended: PcEnd,
    /// `preexisting`: the socket predates sockscope (from the start-up inventory) and a
    /// later marker tied it to the PeerConnection.
    #[serde(default)]
    pub origin: Origin,
    /// The first frame of the creating stack in the application's own code.
    #[serde(default)]
    pub site: Option<Site>,
    /// Where the application made its PeerConnection (the first application frame of
    /// `pc_open`'s stack): where to look when `site` is empty because a webrtc-rs task
    /// created the socket.
    #[serde(default)]
    pub pc_site: Option<Site>,
    /// Every (pid, fd) that refers to it at the verdict.
    #[serde(default)]
    pub holders: Vec<Holder>,
    /// The epoll sets it is in at the verdict.
    #[serde(default)]
    pub epoll: Vec<EpollWatch>,
    /// Why it is still open, from its I/O (`None` when its I/O was not watched).
    #[serde(default)]
    pub kind: Option<LeakKind>,
    /// The I/O seen on it.
    #[serde(default)]
    pub io: Option<IoEvidence>,
    /// Creating user stack, innermost first (empty if it could not be taken).
    pub stack: Vec<Frame>,
}

/// The task that finally released a leaked socket.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Releaser {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// Its user stack at the release, innermost first (empty when not taken: the
    /// cgroup backend takes none; a process that is exiting has no user stack left).
    #[serde(default)]
    pub stack: Vec<Frame>,
}

/// How a PeerConnection's life ended, as far as its markers say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PcEnd {
    /// `close()` returned (`pc_close_end`).
    #[default]
    Closed,
    /// The application let go of it without calling `close()` (`pc_dropped`).
    DroppedWithoutClose,
}

impl PcEnd {
    /// "after close", for people.
    pub fn after(self) -> &'static str {
        match self {
            Self::Closed => "after close",
            Self::DroppedWithoutClose => "after it was dropped without close()",
        }
    }
}

/// An open socket as known at a verdict: what a listing of suspects needs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenSocket {
    pub cookie: u64,
    pub fd: Option<i32>,
    pub local_addr: Option<IpAddr>,
    pub local_port: Option<u16>,
    pub origin: Origin,
    /// Unknown for a socket that predates sockscope.
    pub age_ns: Option<u64>,
    /// What created it (unknown for a socket that predates sockscope).
    pub subsystem: Option<Subsystem>,
    /// How it is tied to the PeerConnection, if it is.
    pub confidence: Option<Confidence>,
    /// The first frame of the creating stack in the application's own code.
    #[serde(default)]
    pub site: Option<Site>,
    /// Creating user stack, innermost first (empty when unknown).
    pub stack: Vec<Frame>,
}

/// A socket that may belong to a PeerConnection sockscope could not see whole: still
/// open `grace` after that PeerConnection ended, and nothing ties it to another one.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PossibleLeak {
    pub pid: u32,
    pub pc_id: u64,
    #[serde(flatten)]
    pub socket: OpenSocket,
}

/// A PeerConnection its process never closed nor dropped, and which still held open
/// sockets when the process exited.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UnclosedPc {
    pub pid: u32,
    pub pc_id: u64,
    pub sockets: Vec<OpenSocket>,
}

/// Why a PeerConnection could not be judged clean.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncompleteReason {
    /// Events were lost while it lived.
    EventsLost,
    /// Its `pc_open` was not seen: it was opened before sockscope attached.
    OpenedBeforeAttach,
    /// A socket tied to it existed before sockscope attached: its creation was not seen.
    SocketPredatesAttach,
    /// No socket was ever tied to it: whatever it had, sockscope did not see.
    NoSocketSeen,
}

impl IncompleteReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::EventsLost => "events were lost while it lived",
            Self::OpenedBeforeAttach => "opened before sockscope attached",
            Self::SocketPredatesAttach => "a socket of it predates sockscope",
            Self::NoSocketSeen => "no socket of it was seen",
        }
    }
}

/// Final word on one PeerConnection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PcOutcome {
    Clean,
    Leak,
    /// sockscope did not see its whole life (see [`IncompleteReason`]): no clean
    /// verdict can be given.
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
    #[serde(default)]
    pub ended: PcEnd,
    /// Why the verdict is `incomplete`.
    #[serde(default)]
    pub reason: Option<IncompleteReason>,
    /// Open sockets listed as possibly its own (`possible_leak` records).
    #[serde(default)]
    pub possibly_leaked: usize,
    /// From its `pc_open` to this verdict; unknown when its open was not seen.
    #[serde(default)]
    pub life_ns: Option<u64>,
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
        /// When it was released (CLOCK_MONOTONIC ns; 0 in older reports).
        #[serde(default)]
        released_ns: u64,
        /// The task that released it (and its stack, where the backend takes one).
        #[serde(default)]
        released_by: Option<Releaser>,
    },
    Verdict(PcVerdict),
    PossibleLeak(PossibleLeak),
    Unclosed(UnclosedPc),
}

impl Finding {
    /// The process it is about.
    pub fn pid(&self) -> u32 {
        match self {
            Self::Leak(l) => l.pid,
            Self::Late { pid, .. } => *pid,
            Self::Verdict(v) => v.pid,
            Self::PossibleLeak(p) => p.pid,
            Self::Unclosed(u) => u.pid,
        }
    }
}
