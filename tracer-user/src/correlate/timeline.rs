//! The lives of PeerConnections and their sockets over a run, for the picture that
//! `sockscope report --html` draws. Kept only when asked for (`check --report`): a
//! long `watch` would otherwise keep a record of every socket it ever saw.
use std::collections::HashMap;

use super::{Confidence, Correlator, PcEnd, PcOutcome, PeerConnectionId, Socket, Subsystem};
use crate::sockets::Origin;

/// Everything a timeline shows. Times are CLOCK_MONOTONIC nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Timeline {
    /// When tracing began.
    pub start_ns: u64,
    /// When the run ended (the report was written).
    pub end_ns: u64,
    pub grace_ns: u64,
    pub pcs: Vec<PcSpan>,
}

/// One PeerConnection's life.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PcSpan {
    pub pid: u32,
    pub pc_id: u64,
    /// `None`: opened before sockscope attached.
    pub opened_ns: Option<u64>,
    /// `None`: never closed nor dropped.
    pub ended_ns: Option<u64>,
    pub ended: PcEnd,
    pub judged_ns: Option<u64>,
    pub outcome: Option<PcOutcome>,
    pub sockets: Vec<SocketSpan>,
}

/// One socket tied to a PeerConnection.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SocketSpan {
    pub cookie: u64,
    pub local_port: Option<u16>,
    /// `None` for a socket whose creation was not seen.
    pub subsystem: Option<Subsystem>,
    pub confidence: Confidence,
    /// `None`: it predates sockscope.
    pub created_ns: Option<u64>,
    /// `None`: still open when the run ended.
    pub released_ns: Option<u64>,
    /// Judged a leak (its release, if any, came late).
    pub leaked: bool,
}

/// What a timeline needs beyond the correlator's live state: the sockets already
/// released, by the PeerConnection they belonged to.
#[derive(Debug, Default)]
pub(super) struct TimelineLog {
    start_ns: u64,
    released: HashMap<PeerConnectionId, Vec<SocketSpan>>,
}

impl Socket {
    fn span(&self, confidence: Confidence, released_ns: Option<u64>) -> SocketSpan {
        let traced = self.origin == Origin::Traced;
        SocketSpan {
            cookie: self.info.cookie,
            local_port: self.local.map(|l| l.1),
            subsystem: traced.then_some(self.subsystem),
            confidence,
            created_ns: traced.then_some(self.info.created_ns),
            released_ns,
            leaked: self.leaked_after.is_some(),
        }
    }
}

impl Correlator {
    /// Keep what [`Self::timeline`] needs from now on (`start_ns`: tracing began).
    pub fn keep_timeline(&mut self, start_ns: u64) {
        self.timeline = Some(TimelineLog {
            start_ns,
            released: HashMap::new(),
        });
    }

    /// A tied socket is gone: remember its life.
    pub(super) fn log_release(&mut self, sock: &Socket, released_ns: u64) {
        let (Some(log), Some(a)) = (self.timeline.as_mut(), sock.attribution) else {
            return;
        };
        let key = PeerConnectionId {
            pid: sock.info.pid,
            pc_id: a.pc_id,
        };
        log.released
            .entry(key)
            .or_default()
            .push(sock.span(a.confidence, Some(released_ns)));
    }

    /// Every PeerConnection seen and its sockets, as of `end_ns`; `None` unless
    /// [`Self::keep_timeline`] was called.
    pub fn timeline(&self, end_ns: u64) -> Option<Timeline> {
        let log = self.timeline.as_ref()?;
        let mut keys: Vec<&PeerConnectionId> = self.pcs.keys().collect();
        keys.sort();
        let pcs = keys
            .into_iter()
            .map(|key| {
                let pc = &self.pcs[key];
                let mut sockets: Vec<SocketSpan> =
                    log.released.get(key).cloned().unwrap_or_default();
                sockets.extend(pc.sockets.iter().filter_map(|c| {
                    let s = self.sockets.get(c)?;
                    let a = s.attribution.filter(|a| a.pc_id == key.pc_id)?;
                    Some(s.span(a.confidence, None))
                }));
                sockets.sort_by_key(|s| (s.created_ns, s.cookie));
                PcSpan {
                    pid: key.pid,
                    pc_id: key.pc_id,
                    opened_ns: pc.opened_ns,
                    ended_ns: pc.close_end_ns,
                    ended: pc.ended,
                    judged_ns: pc.judged_ns,
                    outcome: pc.outcome,
                    sockets,
                }
            })
            .collect();
        Some(Timeline {
            start_ns: log.start_ns,
            end_ns,
            grace_ns: self.grace_ns,
            pcs,
        })
    }
}
