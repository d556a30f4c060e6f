//! Forgetting, for a correlator that runs for weeks (`daemon`): a process that exited
//! and a PeerConnection judged with none of its sockets left open have nothing more
//! to report, so their state goes. (`check` keeps everything: its summary and
//! timeline count every PeerConnection of the run.)
use super::{Correlator, PeerConnectionId};

impl Correlator {
    /// Drops everything about `pid`, which exited: a later process with the same pid
    /// starts from nothing. Call it once the releases its exit caused were applied.
    pub fn forget_process(&mut self, pid: u32) {
        self.pcs.retain(|k, _| k.pid != pid);
        self.sockets.retain(|_, s| s.info.pid != pid);
        self.exited.remove(&pid);
        self.joined_running.remove(&pid);
        self.announced_cookies.retain(|_, k| k.pid != pid);
        self.stack_classes.remove(&pid);
        self.after_verdict.retain(|(k, _)| k.pid != pid);
    }

    /// Drops the PeerConnections that were judged and hold no open socket any more:
    /// only a late release of one of their sockets could still be reported, and that
    /// needs the socket, not them.
    pub fn retire_judged(&mut self) {
        let sockets = &self.sockets;
        let retired: Vec<PeerConnectionId> = self
            .pcs
            .iter()
            .filter(|(_, pc)| pc.judged && !pc.sockets.iter().any(|c| sockets.contains_key(c)))
            .map(|(k, _)| *k)
            .collect();
        for k in retired {
            self.pcs.remove(&k);
        }
        // Losses matter only to PeerConnections alive when they happened.
        let oldest_unjudged = self
            .pcs
            .values()
            .filter(|pc| !pc.judged)
            .filter_map(|pc| pc.opened_ns)
            .min()
            .unwrap_or(u64::MAX);
        self.lost.retain(|&(_, to)| to >= oldest_unjudged);
    }

    /// When `pid` exited, if it did and is still remembered.
    pub fn exited_at(&self, pid: u32) -> Option<u64> {
        self.exited.get(&pid).copied()
    }

    /// Processes that exited at or before `before_ns`.
    pub fn exited_before(&self, before_ns: u64) -> Vec<u32> {
        self.exited
            .iter()
            .filter(|(_, at)| **at <= before_ns)
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Sockets and PeerConnections held in memory, for the daemon's bound on memory.
    pub fn sizes(&self) -> (usize, usize) {
        (self.sockets.len(), self.pcs.len())
    }
}

impl Correlator {
    /// PeerConnections alive (not ended) and ended but still within their grace.
    pub fn pc_states(&self) -> (usize, usize) {
        let open = self
            .pcs
            .values()
            .filter(|pc| pc.close_end_ns.is_none())
            .count();
        let closing = self
            .pcs
            .values()
            .filter(|pc| pc.close_end_ns.is_some() && !pc.judged)
            .count();
        (open, closing)
    }

    /// Sockets judged leaked that are still open.
    pub fn leaked_open(&self) -> usize {
        self.sockets
            .values()
            .filter(|s| s.leaked_after.is_some())
            .count()
    }
}
