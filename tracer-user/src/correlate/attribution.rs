//! Attribution: which PeerConnection a socket belongs to, and how sure that is. A
//! stronger attribution replaces a weaker one; a port names one socket.
use super::{Attribution, Confidence, Correlator, PeerConnectionId};
use crate::sockets::Origin;

impl Correlator {
    /// The one PeerConnection of `pid` open at `ts`, if exactly one is.
    pub(super) fn only_open_pc(&self, pid: u32, ts: u64) -> Option<u64> {
        let mut open = self.pcs.iter().filter(|(k, pc)| {
            k.pid == pid
                && pc.opened_ns.is_some_and(|o| o <= ts)
                && pc.close_end_ns.is_none_or(|c| c > ts)
        });
        match (open.next(), open.next()) {
            (Some((k, _)), None) => Some(k.pc_id),
            _ => None,
        }
    }

    /// Sets a socket's attribution unless a stronger one is already there.
    pub(super) fn attribute(&mut self, cookie: u64, a: Attribution) {
        let Some(sock) = self.sockets.get_mut(&cookie) else {
            return;
        };
        if sock
            .attribution
            .is_some_and(|old| old.confidence > a.confidence)
        {
            return;
        }
        let previous = sock.attribution.filter(|old| old.pc_id != a.pc_id);
        sock.attribution = Some(a);
        let (pid, origin) = (sock.info.pid, sock.origin);
        if let Some(old) = previous {
            self.untie(
                PeerConnectionId {
                    pid,
                    pc_id: old.pc_id,
                },
                cookie,
            );
        }
        let pc = self
            .pcs
            .entry(PeerConnectionId {
                pid,
                pc_id: a.pc_id,
            })
            .or_default();
        pc.sockets.insert(cookie);
        if origin == Origin::Preexisting {
            pc.preexisting.insert(cookie);
        }
        if pc.judged {
            self.tied_after_verdict(
                PeerConnectionId {
                    pid,
                    pc_id: a.pc_id,
                },
                cookie,
                a.confidence,
            );
        }
        self.request_watch(cookie);
    }

    /// `cookie` no longer belongs to `key`.
    fn untie(&mut self, key: PeerConnectionId, cookie: u64) {
        if let Some(pc) = self.pcs.get_mut(&key) {
            pc.sockets.remove(&cookie);
            pc.preexisting.remove(&cookie);
        }
    }

    /// Whether `key` has a live socket other than `except` on `port`, tied to it by a
    /// marker.
    pub(super) fn owns_live_port(&self, key: PeerConnectionId, port: u16, except: u64) -> bool {
        self.pcs.get(&key).is_some_and(|pc| {
            pc.sockets.iter().filter(|c| **c != except).any(|c| {
                self.sockets.get(c).is_some_and(|s| {
                    s.local.is_some_and(|l| l.1 == port)
                        && s.attribution.is_some_and(|a| {
                            a.pc_id == key.pc_id && a.confidence >= Confidence::PortMarker
                        })
                })
            })
        })
    }

    /// `pc_socket(pc_id, port)`: the PeerConnection owns a socket on `port`. The socket
    /// it names is the one of the process on that port that no other PeerConnection's
    /// marker names; when that is not exactly one socket the marker is ambiguous and
    /// ties nothing (a later bind on the port may still be claimed).
    pub(super) fn port_announced(&mut self, key: PeerConnectionId, port: u16) {
        self.pcs.entry(key).or_default().ports.insert(port);
        if self.owns_live_port(key, port, 0) {
            return;
        }
        let candidates: Vec<u64> = self
            .sockets
            .iter()
            .filter(|(_, s)| {
                s.info.pid == key.pid
                    && s.local.is_some_and(|l| l.1 == port)
                    && s.attribution.is_none_or(|a| {
                        a.pc_id == key.pc_id || a.confidence < Confidence::PortMarker
                    })
            })
            .map(|(c, _)| *c)
            .take(2)
            .collect();
        if let [cookie] = candidates[..] {
            self.attribute(
                cookie,
                Attribution {
                    pc_id: key.pc_id,
                    confidence: Confidence::PortMarker,
                },
            );
        }
    }
}
