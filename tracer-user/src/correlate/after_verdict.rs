//! Sockets tied to a PeerConnection after its verdict. webrtc-rs's driver can bind
//! again after a drop (its ICE agent gathering anew), later than the grace: such a
//! socket was not there to judge. It gets a grace of its own, from its creation or the
//! verdict, whichever came later; still open then (or when its process exits), it is a
//! leak of that PeerConnection like the others. Only an exact tie counts (its cookie
//! announced): a thread span or creating stack that outlives its PeerConnection says
//! nothing about a socket made after it ended.
use super::{Confidence, Correlator, Finding, PeerConnectionId};
use crate::sockets::Origin;

impl Correlator {
    /// `cookie` was just tied to `key`, already judged, with `confidence`.
    pub(super) fn tied_after_verdict(
        &mut self,
        key: PeerConnectionId,
        cookie: u64,
        confidence: Confidence,
    ) {
        if confidence >= Confidence::CookieMarker && !self.after_verdict.contains(&(key, cookie)) {
            self.after_verdict.push((key, cookie));
        }
    }

    /// Judges the sockets tied after their PeerConnection's verdict whose grace ended by
    /// `now_ns`, and all those of `exiting` (its exit is about to close them).
    pub(super) fn judge_after_verdict(
        &mut self,
        now_ns: u64,
        exiting: Option<u32>,
    ) -> Vec<Finding> {
        if self.after_verdict.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (key, cookie) in std::mem::take(&mut self.after_verdict) {
            // Released (nothing to say), or tied elsewhere since.
            let Some(sock) = self
                .sockets
                .get(&cookie)
                .filter(|s| s.attribution.is_some_and(|a| a.pc_id == key.pc_id))
                .filter(|s| s.leaked_after.is_none())
            else {
                continue;
            };
            let Some(judged) = self.pcs.get(&key).and_then(|pc| pc.judged_ns) else {
                continue;
            };
            let born = match sock.origin {
                Origin::Traced => sock.info.created_ns,
                Origin::Preexisting => 0,
            };
            let deadline = judged.max(born).saturating_add(self.grace_ns);
            let at = if deadline <= now_ns {
                deadline
            } else if exiting == Some(key.pid) {
                now_ns
            } else {
                self.after_verdict.push((key, cookie));
                continue;
            };
            if let Some(leak) = self.leak_of(key, cookie, at) {
                self.leaks += 1;
                out.push(Finding::Leak(leak));
            }
        }
        out
    }
}
