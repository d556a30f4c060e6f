//! Judging a PeerConnection once its grace ended: its sockets still open are leaks,
//! and the verdict is clean only when sockscope saw its whole life. A PeerConnection
//! opened before sockscope attached may own sockets sockscope cannot tie to it: the
//! process's untied sockets still open are listed as possibly its own.
use super::{
    Correlator, Finding, IncompleteReason, Leak, OpenSocket, PcOutcome, PcVerdict,
    PeerConnectionId, PossibleLeak, Socket, UnclosedPc, creating_site,
};
use crate::sockets::Origin;

impl Socket {
    /// Age at `at_ns`, when its creation was seen.
    fn age_at(&self, at_ns: u64) -> Option<u64> {
        (self.origin == Origin::Traced).then(|| at_ns.saturating_sub(self.info.created_ns))
    }

    fn open_socket(&self, at_ns: u64) -> OpenSocket {
        let traced = self.origin == Origin::Traced;
        OpenSocket {
            cookie: self.info.cookie,
            fd: self.info.fd,
            local_addr: self.local.map(|l| l.0),
            local_port: self.local.map(|l| l.1),
            origin: self.origin,
            age_ns: self.age_at(at_ns),
            subsystem: traced.then_some(self.subsystem),
            confidence: self.attribution.map(|a| a.confidence),
            site: creating_site(&self.info.stack),
            stack: self.info.stack.to_vec(),
        }
    }
}

impl Correlator {
    pub(super) fn judge(&mut self, key: PeerConnectionId, at_ns: u64) -> Vec<Finding> {
        let Some(pc) = self.pcs.get_mut(&key) else {
            return Vec::new();
        };
        pc.judged = true;
        let opened = pc.opened_ns;
        let predates = !pc.preexisting.is_empty();
        let attributed = pc.sockets.len();
        let close_end = pc.close_end_ns.unwrap_or(at_ns);
        let ended = pc.ended;
        let mut cookies: Vec<u64> = pc.sockets.iter().copied().collect();
        cookies.sort_unstable();
        let mut out = Vec::new();
        let mut leaked = 0;
        for cookie in cookies {
            if let Some(leak) = self.leak_of(key, cookie, at_ns) {
                leaked += 1;
                out.push(Finding::Leak(leak));
            }
        }
        self.leaks += leaked;
        let lossy = self
            .lost
            .iter()
            .any(|&(from, to)| from <= at_ns && to >= opened.unwrap_or(0));
        let reason = if lossy {
            Some(IncompleteReason::EventsLost)
        } else if opened.is_none() {
            Some(IncompleteReason::OpenedBeforeAttach)
        } else if predates {
            Some(IncompleteReason::SocketPredatesAttach)
        } else if attributed == 0 {
            Some(IncompleteReason::NoSocketSeen)
        } else {
            None
        };
        let possible = if reason == Some(IncompleteReason::OpenedBeforeAttach) {
            self.possibly_its_own(key, close_end, at_ns)
        } else {
            Vec::new()
        };
        let outcome = match (reason, leaked) {
            (Some(_), _) => PcOutcome::Incomplete,
            (None, 0) => PcOutcome::Clean,
            (None, _) => PcOutcome::Leak,
        };
        if let Some(pc) = self.pcs.get_mut(&key) {
            pc.judged_ns = Some(at_ns);
            pc.outcome = Some(outcome);
        }
        out.push(Finding::Verdict(PcVerdict {
            pid: key.pid,
            pc_id: key.pc_id,
            outcome,
            sockets: attributed,
            leaked,
            ended,
            reason,
            possibly_leaked: possible.len(),
            life_ns: opened.map(|o| at_ns.saturating_sub(o)),
        }));
        out.extend(possible.into_iter().map(Finding::PossibleLeak));
        out
    }

    /// `cookie`, tied to `key` and open at `at_ns`, as a leak; its release is then
    /// reported as late. `None` when it is no longer tied to `key`.
    pub(super) fn leak_of(
        &mut self,
        key: PeerConnectionId,
        cookie: u64,
        at_ns: u64,
    ) -> Option<Leak> {
        let pc = self.pcs.get(&key)?;
        let close_end = pc.close_end_ns.unwrap_or(at_ns);
        let (ended, pc_site) = (pc.ended, pc.opened_site.clone());
        let sock = self.sockets.get_mut(&cookie)?;
        let a = sock.attribution.filter(|a| a.pc_id == key.pc_id)?;
        sock.leaked_after = Some(at_ns);
        Some(Leak {
            pid: sock.info.pid,
            comm: sock.info.comm.to_string(),
            tid: sock.info.tid,
            cookie,
            fd: sock.info.fd,
            local_addr: sock.local.map(|l| l.0),
            local_port: sock.local.map(|l| l.1),
            pc_id: key.pc_id,
            confidence: a.confidence,
            subsystem: sock.subsystem,
            age_ns: sock.age_at(at_ns),
            since_close_ns: at_ns.saturating_sub(close_end),
            ended_ns: close_end,
            judged_ns: at_ns,
            ended,
            origin: sock.origin,
            site: creating_site(&sock.info.stack),
            pc_site,
            holders: Vec::new(),
            epoll: Vec::new(),
            kind: None,
            io: None,
            stack: sock.info.stack.to_vec(),
        })
    }

    /// Open sockets of `key`'s process that nothing ties to a PeerConnection and that
    /// existed before `key` ended: any of them may be one of its own.
    fn possibly_its_own(
        &self,
        key: PeerConnectionId,
        ended_ns: u64,
        at_ns: u64,
    ) -> Vec<PossibleLeak> {
        let mut v: Vec<PossibleLeak> = self
            .sockets
            .values()
            .filter(|s| s.info.pid == key.pid && s.attribution.is_none())
            .filter(|s| s.origin == Origin::Preexisting || s.info.created_ns <= ended_ns)
            .map(|s| PossibleLeak {
                pid: key.pid,
                pc_id: key.pc_id,
                socket: s.open_socket(at_ns),
            })
            .collect();
        v.sort_by_key(|p| p.socket.cookie);
        v
    }

    /// PeerConnections of an exiting process that were never closed nor dropped, with
    /// the sockets tied to them still open: each listed once.
    pub(super) fn unclosed_at_exit(&mut self, pid: u32, at_ns: u64) -> Vec<Finding> {
        let mut keys: Vec<PeerConnectionId> = self
            .pcs
            .iter()
            .filter(|(k, pc)| k.pid == pid && pc.close_end_ns.is_none() && !pc.reported_unclosed)
            .map(|(k, _)| *k)
            .collect();
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            let Some(pc) = self.pcs.get_mut(&key) else {
                continue;
            };
            let mut sockets: Vec<OpenSocket> = pc
                .sockets
                .iter()
                .filter_map(|c| self.sockets.get(c))
                .filter(|s| s.attribution.is_some_and(|a| a.pc_id == key.pc_id))
                .map(|s| s.open_socket(at_ns))
                .collect();
            if sockets.is_empty() {
                continue;
            }
            pc.reported_unclosed = true;
            sockets.sort_by_key(|s| s.cookie);
            out.push(Finding::Unclosed(UnclosedPc {
                pid,
                pc_id: key.pc_id,
                sockets,
            }));
        }
        out
    }
}
