//! The correlator: ties UDP sockets to the PeerConnections that own them and judges,
//! `grace` after each PeerConnection's `close()` returned, which of its sockets are
//! still open (leaks).
//!
//! Input is the kernel's event stream in order (sockets, markers, process exits) plus
//! the passage of time; output is [`Finding`]s. Everything is keyed by pid, so several
//! processes (or a CMD and its children) can be judged at once. Pure logic, no I/O.
//!
//! sockscope may attach to a process that is already running: sockets and
//! PeerConnections from before the attach are only partly known, so a PeerConnection
//! is judged clean only when its whole life was seen (see `judge.rs`).
mod after_verdict;
mod attribution;
mod evidence;
mod io_requests;
mod judge;
mod retire;
mod site;
mod socket_table;
mod subsystem;
mod timeline;
mod verdict;

use std::{net::IpAddr, sync::Arc};

// Keys are the kernel's socket cookies, pids and small ids: a fast hash, not SipHash
// (a third of the correlator's time per socket).
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

pub use evidence::{EpollWatch, Holder, IoEvidence, LeakKind};
pub use io_requests::IoRequest;
pub use site::{Site, creating_site};
pub use subsystem::{Subsystem, classify, is_webrtc_frame};
pub use timeline::{PcSpan, SocketSpan, Timeline};
pub use verdict::{
    Attribution, Confidence, Finding, IncompleteReason, Leak, OpenSocket, PcEnd, PcOutcome,
    PcVerdict, PossibleLeak, Releaser, UnclosedPc,
};

use crate::{
    sockets::Origin,
    symbolize::{Frame, Stack},
};

/// A PeerConnection: the process it lives in and the id the application gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerConnectionId {
    pub pid: u32,
    pub pc_id: u64,
}

/// The PeerConnection lifecycle markers (provider `sockscope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcMarker {
    Open(u64),
    CloseBegin(u64),
    CloseEnd(u64),
    /// Let go of without `close()`: judged like a close.
    Dropped(u64),
    Socket {
        pc_id: u64,
        port: u16,
    },
    SocketCookie {
        pc_id: u64,
        cookie: u64,
    },
}

/// A socket whose creation was traced.
#[derive(Clone, Debug)]
pub struct NewSocket {
    pub cookie: u64,
    pub pid: u32,
    pub tid: u32,
    /// The creating thread's name, shared by the sockets of threads with that name.
    pub comm: std::sync::Arc<str>,
    pub fd: Option<i32>,
    pub created_ns: u64,
    /// The creating thread's current PeerConnection (0: none).
    pub span_pc: u64,
    /// Symbolized creating user stack, innermost first.
    pub stack: Stack,
}

/// A socket that existed before tracing began (sock_diag inventory): its creation,
/// creator and age are unknown.
#[derive(Clone, Debug)]
pub struct PreexistingSocket {
    pub cookie: u64,
    pub pid: u32,
    pub comm: std::sync::Arc<str>,
    pub fd: Option<i32>,
    /// `None` while unbound.
    pub local: Option<(IpAddr, u16)>,
}

#[derive(Clone, Debug)]
struct Socket {
    info: NewSocket,
    origin: Origin,
    local: Option<(IpAddr, u16)>,
    subsystem: Subsystem,
    attribution: Option<Attribution>,
    /// Judged a leak; its release is then reported as late.
    leaked_after: Option<u64>,
}

#[derive(Clone, Debug, Default)]
struct PeerConnection {
    /// When its `pc_open` was seen; `None`: opened before sockscope attached.
    opened_ns: Option<u64>,
    /// When it ended: `close()` returned, or it was dropped without close.
    close_end_ns: Option<u64>,
    ended: PcEnd,
    ports: HashSet<u16>,
    /// Every socket ever attributed to it (cookies).
    sockets: HashSet<u64>,
    judged: bool,
    /// When it was judged, and how.
    judged_ns: Option<u64>,
    outcome: Option<PcOutcome>,
    /// Listed as never closed at its process's exit.
    reported_unclosed: bool,
    /// Sockets tied to it that predate the attach (their creation was not seen).
    preexisting: HashSet<u64>,
    /// Where the application made it (from the stack of its `pc_open`).
    opened_site: Option<Site>,
}

pub struct Correlator {
    grace_ns: u64,
    sockets: socket_table::SocketTable,
    pcs: HashMap<PeerConnectionId, PeerConnection>,
    /// Intervals (monotonic ns) in which events were lost.
    lost: Vec<(u64, u64)>,
    /// Processes that exited: their sockets' later releases were done by the exit.
    exited: HashMap<u32, u64>,
    leaks: usize,
    /// Processes that were already running when tracing began, and when it began:
    /// PeerConnections and sockets of theirs from before are only partly known.
    joined_running: HashMap<u32, u64>,
    /// Changes for the I/O hooks, taken by the session ([`Self::take_io_requests`]).
    io_requests: Vec<IoRequest>,
    /// Cookies announced (`pc_socket_cookie`) before their socket was seen.
    announced_cookies: HashMap<u64, PeerConnectionId>,
    /// Per process, what each distinct creating stack says (subsystem, webrtc-rs code
    /// or not), by the address of its shared frames, which the entry keeps alive:
    /// matching crate names in long generic symbols is the costliest part of a socket.
    stack_classes: HashMap<u32, HashMap<usize, (Stack, Subsystem, bool)>>,
    /// The lives of released sockets, when a timeline is kept.
    timeline: Option<timeline::TimelineLog>,
    /// Sockets tied to a PeerConnection after its verdict, to judge on their own
    /// (see `after_verdict.rs`).
    after_verdict: Vec<(PeerConnectionId, u64)>,
}

impl Correlator {
    pub fn new(grace_ns: u64) -> Self {
        Self {
            grace_ns,
            sockets: socket_table::SocketTable::default(),
            pcs: HashMap::default(),
            lost: Vec::new(),
            exited: HashMap::default(),
            leaks: 0,
            joined_running: HashMap::default(),
            announced_cookies: HashMap::default(),
            io_requests: Vec::new(),
            stack_classes: HashMap::default(),
            timeline: None,
            after_verdict: Vec::new(),
        }
    }

    /// Tracing of `pid` began at `ts` while it was already running.
    pub fn joined_running(&mut self, pid: u32, ts: u64) {
        self.joined_running.entry(pid).or_insert(ts);
    }

    /// A socket that existed before tracing began. A creation traced later for the
    /// same cookie replaces it.
    pub fn socket_preexisting(&mut self, s: PreexistingSocket) {
        let subsystem = Subsystem::Other;
        self.sockets.insert(
            s.cookie,
            Socket {
                info: NewSocket {
                    cookie: s.cookie,
                    pid: s.pid,
                    tid: 0,
                    comm: s.comm,
                    fd: s.fd,
                    created_ns: 0,
                    span_pc: 0,
                    stack: Stack::default(),
                },
                origin: Origin::Preexisting,
                local: s.local,
                subsystem,
                attribution: None,
                leaked_after: None,
            },
        );
    }

    /// Leaks found so far.
    pub fn leak_count(&self) -> usize {
        self.leaks
    }

    /// PeerConnections seen, and how many were judged.
    pub fn pc_counts(&self) -> (usize, usize) {
        (
            self.pcs.len(),
            self.pcs.values().filter(|p| p.judged).count(),
        )
    }

    /// Live sockets with their attribution, for listings.
    pub fn live_sockets(
        &self,
    ) -> impl Iterator<Item = (&NewSocket, Option<Attribution>, Option<(IpAddr, u16)>)> {
        self.sockets
            .values()
            .map(|s| (&s.info, s.attribution, s.local))
    }

    fn classify_stack(&mut self, pid: u32, stack: &Stack) -> (Subsystem, bool) {
        let key = Arc::as_ptr(stack).cast::<Frame>() as usize;
        let per_process = self.stack_classes.entry(pid).or_default();
        if let Some((_, subsystem, webrtc)) = per_process.get(&key) {
            return (*subsystem, *webrtc);
        }
        let subsystem = classify(stack);
        let webrtc = stack
            .iter()
            .flat_map(Frame::functions)
            .any(|f| is_webrtc_frame(&f.qualified()));
        per_process.insert(key, (stack.clone(), subsystem, webrtc));
        (subsystem, webrtc)
    }

    pub fn socket_created(&mut self, info: NewSocket) {
        let (subsystem, webrtc_stack) = self.classify_stack(info.pid, &info.stack);
        let mut attribution = (info.span_pc != 0).then_some(Attribution {
            pc_id: info.span_pc,
            confidence: Confidence::ThreadSpan,
        });
        // Which PeerConnections were open when it was created is known only for
        // processes whose every `pc_open` was seen.
        if attribution.is_none() && webrtc_stack && !self.joined_running.contains_key(&info.pid) {
            attribution = self
                .only_open_pc(info.pid, info.created_ns)
                .map(|pc_id| Attribution {
                    pc_id,
                    confidence: Confidence::CreationStack,
                });
        }
        let cookie = info.cookie;
        let announced = self
            .announced_cookies
            .remove(&cookie)
            .filter(|k| k.pid == info.pid);
        self.sockets.insert(
            cookie,
            Socket {
                info,
                origin: Origin::Traced,
                local: None,
                subsystem,
                attribution,
                leaked_after: None,
            },
        );
        if let Some(a) = attribution {
            self.attribute(cookie, a);
        }
        if let Some(k) = announced {
            self.attribute(
                cookie,
                Attribution {
                    pc_id: k.pc_id,
                    confidence: Confidence::CookieMarker,
                },
            );
        }
    }

    pub fn socket_bound(&mut self, cookie: u64, addr: IpAddr, port: u16) {
        let Some(sock) = self.sockets.get_mut(&cookie) else {
            return;
        };
        sock.local = Some((addr, port));
        let pid = sock.info.pid;
        // An announced port names one socket: a PeerConnection that already has a live
        // socket on it does not claim another (several sockets share a port with
        // SO_REUSEPORT: every mDNS socket is on 5353).
        let mut claimants = self
            .pcs
            .iter()
            .filter(|(k, pc)| k.pid == pid && pc.close_end_ns.is_none() && pc.ports.contains(&port))
            .map(|(k, _)| *k)
            .filter(|k| !self.owns_live_port(*k, port, cookie));
        if let (Some(k), None) = (claimants.next(), claimants.next()) {
            self.attribute(
                cookie,
                Attribution {
                    pc_id: k.pc_id,
                    confidence: Confidence::PortMarker,
                },
            );
        }
    }

    /// A socket was released at `ts`. A leak released late is reported as such.
    pub fn socket_released(&mut self, cookie: u64, ts: u64) -> Vec<Finding> {
        let mut out = self.advance(ts);
        let Some(sock) = self.sockets.remove(&cookie) else {
            return out;
        };
        // The kernel forgets the sockets it traced at their release (see `IoRequest`).
        if let (Some(fd), Origin::Preexisting) = (sock.info.fd, sock.origin) {
            self.io_requests.push(IoRequest::Forget {
                pid: sock.info.pid,
                fd,
                cookie,
            });
        }
        self.log_release(&sock, ts);
        if let (Some(a), Some(deadline)) = (sock.attribution, sock.leaked_after) {
            out.push(Finding::Late {
                pid: sock.info.pid,
                pc_id: a.pc_id,
                cookie,
                local_port: sock.local.map(|l| l.1),
                late_by_ns: ts.saturating_sub(deadline),
                by_exit: self.exited.contains_key(&sock.info.pid),
                released_ns: ts,
                released_by: None,
            });
        }
        out
    }

    pub fn marker(&mut self, pid: u32, marker: PcMarker, ts: u64) -> Vec<Finding> {
        let out = self.advance(ts);
        match marker {
            PcMarker::Open(pc_id) => {
                self.pcs
                    .entry(PeerConnectionId { pid, pc_id })
                    .or_default()
                    .opened_ns
                    .get_or_insert(ts);
            }
            PcMarker::CloseBegin(_) => {}
            PcMarker::CloseEnd(pc_id) => {
                self.ended(PeerConnectionId { pid, pc_id }, ts, PcEnd::Closed)
            }
            PcMarker::Dropped(pc_id) => self.ended(
                PeerConnectionId { pid, pc_id },
                ts,
                PcEnd::DroppedWithoutClose,
            ),
            PcMarker::SocketCookie { pc_id, cookie } => {
                let key = PeerConnectionId { pid, pc_id };
                self.pcs.entry(key).or_default();
                match self.sockets.get(&cookie) {
                    Some(s) if s.info.pid == pid => self.attribute(
                        cookie,
                        Attribution {
                            pc_id,
                            confidence: Confidence::CookieMarker,
                        },
                    ),
                    Some(_) => {}
                    None => {
                        self.announced_cookies.insert(cookie, key);
                    }
                }
            }
            PcMarker::Socket { pc_id, port } => {
                self.port_announced(PeerConnectionId { pid, pc_id }, port)
            }
        }
        out
    }

    /// Where the application made a PeerConnection (the site of its `pc_open`): the
    /// site shown for its sockets that webrtc-rs tasks create with no application
    /// frame on their stack.
    pub fn pc_opened_at(&mut self, pid: u32, pc_id: u64, site: Site) {
        self.pcs
            .entry(PeerConnectionId { pid, pc_id })
            .or_default()
            .opened_site = Some(site);
    }

    /// The first end of a PeerConnection counts: `close()` returning, or its drop.
    fn ended(&mut self, key: PeerConnectionId, ts: u64, how: PcEnd) {
        let pc = self.pcs.entry(key).or_default();
        if pc.close_end_ns.is_some() {
            return;
        }
        pc.close_end_ns = Some(ts);
        pc.ended = how;
        let mine: Vec<u64> = pc.sockets.iter().copied().collect();
        for cookie in mine {
            self.request_watch(cookie);
        }
    }

    /// Process `pid` is exiting: PeerConnections it closed are judged now, since the
    /// kernel is about to close whatever the application left open; those it never
    /// closed but that still hold open sockets are listed.
    pub fn process_exited(&mut self, pid: u32, ts: u64) -> Vec<Finding> {
        let mut out = self.advance(ts);
        self.exited.insert(pid, ts);
        self.stack_classes.remove(&pid);
        let mut due: Vec<PeerConnectionId> = self
            .pcs
            .iter()
            .filter(|(k, pc)| k.pid == pid && !pc.judged && pc.close_end_ns.is_some())
            .map(|(k, _)| *k)
            .collect();
        due.sort();
        for key in due {
            out.extend(self.judge(key, ts));
        }
        out.extend(self.judge_after_verdict(ts, Some(pid)));
        out.extend(self.unclosed_at_exit(pid, ts));
        out
    }

    /// Events were lost somewhere in `[from, to]`.
    pub fn events_lost(&mut self, from_ns: u64, to_ns: u64) {
        // Losses in a row (a full ring, a cap reached) make one interval.
        if let Some(last) = self.lost.last_mut()
            && from_ns <= last.1.saturating_add(1_000_000_000)
        {
            last.1 = last.1.max(to_ns);
            return;
        }
        self.lost.push((from_ns, to_ns));
    }

    /// Judges every PeerConnection whose grace ended by `now`.
    pub fn advance(&mut self, now_ns: u64) -> Vec<Finding> {
        let mut due: Vec<(u64, PeerConnectionId)> = self
            .pcs
            .iter()
            .filter(|(_, pc)| !pc.judged)
            .filter_map(|(k, pc)| pc.close_end_ns.map(|c| (c + self.grace_ns, *k)))
            .filter(|(deadline, _)| *deadline <= now_ns)
            .collect();
        due.sort();
        let mut out: Vec<Finding> = due
            .into_iter()
            .flat_map(|(deadline, key)| self.judge(key, deadline))
            .collect();
        out.extend(self.judge_after_verdict(now_ns, None));
        out
    }

    /// PeerConnections that never reached `pc_close_end` (nor were dropped).
    pub fn unclosed(&self) -> Vec<PeerConnectionId> {
        let mut v: Vec<_> = self
            .pcs
            .iter()
            .filter(|(_, pc)| pc.close_end_ns.is_none())
            .map(|(k, _)| *k)
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests;
