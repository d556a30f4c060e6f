//! The correlator's rules on event sequences shaped like what the kernel sends.
use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::sockets::Origin;

const MS: u64 = 1_000_000;
const GRACE: u64 = 2_000 * MS;
const PID: u32 = 100;
const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn frame(name: &str) -> Frame {
    Frame {
        addr: 1,
        symbol: Some(name.into()),
        inlined: vec![],
        inlined_at: vec![],
        module: None,
        file: None,
        line: None,
    }
}

fn socket(cookie: u64, span_pc: u64, ts: u64, stack: &[&str]) -> NewSocket {
    NewSocket {
        cookie,
        pid: PID,
        tid: PID + 1,
        comm: "proxy".into(),
        fd: Some(cookie as i32),
        created_ns: ts,
        span_pc,
        stack: stack.iter().map(|n| frame(n)).collect(),
    }
}

fn verdicts(f: &[Finding]) -> Vec<&PcVerdict> {
    f.iter()
        .filter_map(|x| {
            if let Finding::Verdict(v) = x {
                Some(v)
            } else {
                None
            }
        })
        .collect()
}

fn leaks(f: &[Finding]) -> Vec<&Leak> {
    f.iter()
        .filter_map(|x| {
            if let Finding::Leak(l) = x {
                Some(l)
            } else {
                None
            }
        })
        .collect()
}

/// pc 1 opens, gets socket 10 on port 5000 (announced), closes at 100 ms.
fn one_pc(c: &mut Correlator) {
    c.marker(PID, PcMarker::Open(1), 0);
    c.socket_created(socket(
        10,
        1,
        10 * MS,
        &["__GI_socket", "webrtc_ice::agent::gather"],
    ));
    c.socket_bound(10, LO, 5000);
    c.marker(
        PID,
        PcMarker::Socket {
            pc_id: 1,
            port: 5000,
        },
        20 * MS,
    );
    c.marker(PID, PcMarker::CloseBegin(1), 90 * MS);
    c.marker(PID, PcMarker::CloseEnd(1), 100 * MS);
}

#[test]
fn released_within_grace_is_clean() {
    let mut c = Correlator::new(GRACE);
    one_pc(&mut c);
    assert!(c.socket_released(10, 150 * MS).is_empty());
    assert!(
        c.advance(100 * MS + GRACE - 1).is_empty(),
        "not judged before the grace ends"
    );
    let f = c.advance(100 * MS + GRACE);
    assert_eq!(verdicts(&f)[0].outcome, PcOutcome::Clean);
    assert_eq!(verdicts(&f)[0].sockets, 1);
    assert!(leaks(&f).is_empty());
    assert_eq!(c.leak_count(), 0);
}

#[test]
fn open_after_grace_is_a_leak_with_the_strongest_attribution() {
    let mut c = Correlator::new(GRACE);
    one_pc(&mut c);
    let f = c.advance(100 * MS + GRACE);
    let l = leaks(&f);
    assert_eq!(l.len(), 1);
    assert_eq!(
        (l[0].cookie, l[0].pc_id, l[0].local_port),
        (10, 1, Some(5000))
    );
    assert_eq!(
        l[0].confidence,
        Confidence::PortMarker,
        "port marker beats thread span"
    );
    assert_eq!(l[0].subsystem, Subsystem::IceAgent);
    assert_eq!(l[0].since_close_ns, GRACE);
    assert_eq!(verdicts(&f)[0].outcome, PcOutcome::Leak);
    // Released later: reported as late, with how late.
    let f = c.socket_released(10, 100 * MS + GRACE + 500 * MS);
    assert!(
        matches!(f[..], [Finding::Late { late_by_ns, by_exit: false, .. }] if late_by_ns == 500 * MS)
    );
}

#[test]
fn judged_once_even_when_time_passes_again() {
    let mut c = Correlator::new(GRACE);
    one_pc(&mut c);
    assert_eq!(verdicts(&c.advance(10 * GRACE)).len(), 1);
    assert!(c.advance(20 * GRACE).is_empty());
}

#[test]
fn only_the_leaking_pc_of_two_concurrent_ones_is_flagged() {
    let mut c = Correlator::new(GRACE);
    c.marker(PID, PcMarker::Open(1), 0);
    c.marker(PID, PcMarker::Open(2), 0);
    c.socket_created(socket(10, 1, MS, &[]));
    c.socket_created(socket(20, 2, MS, &[]));
    c.marker(PID, PcMarker::CloseEnd(1), 10 * MS);
    c.marker(PID, PcMarker::CloseEnd(2), 10 * MS);
    c.socket_released(10, 20 * MS);
    let f = c.advance(10 * MS + GRACE);
    let l = leaks(&f);
    assert_eq!(l.len(), 1);
    assert_eq!(
        (l[0].pc_id, l[0].cookie, l[0].confidence),
        (2, 20, Confidence::ThreadSpan)
    );
    let mut v: Vec<_> = verdicts(&f)
        .into_iter()
        .map(|v| (v.pc_id, v.outcome))
        .collect();
    v.sort_by_key(|x| x.0);
    assert_eq!(v, vec![(1, PcOutcome::Clean), (2, PcOutcome::Leak)]);
}

#[test]
fn creation_stack_attributes_only_when_one_pc_is_open() {
    let webrtc = ["__GI_socket", "webrtc_mdns::conn::DnsConn::server"];
    let mut c = Correlator::new(GRACE);
    c.marker(PID, PcMarker::Open(1), 0);
    c.socket_created(socket(10, 0, MS, &webrtc));
    c.socket_created(socket(11, 0, MS, &["__GI_socket", "main"]));
    c.marker(PID, PcMarker::Open(2), 2 * MS);
    c.socket_created(socket(12, 0, 3 * MS, &webrtc));
    let attributed: Vec<_> = c
        .live_sockets()
        .filter_map(|(s, a, _)| a.map(|a| (s.cookie, a)))
        .collect();
    assert_eq!(
        attributed,
        vec![(
            10,
            Attribution {
                pc_id: 1,
                confidence: Confidence::CreationStack
            }
        )],
        "webrtc stack + one open PC attributes; non-webrtc or ambiguous does not"
    );
    c.marker(PID, PcMarker::CloseEnd(1), 4 * MS);
    let f = c.advance(4 * MS + GRACE);
    assert_eq!(leaks(&f)[0].subsystem, Subsystem::Mdns);
}

#[test]
fn lost_events_make_the_verdict_incomplete_never_clean() {
    let mut c = Correlator::new(GRACE);
    one_pc(&mut c);
    c.socket_released(10, 150 * MS);
    c.events_lost(50 * MS, 60 * MS);
    let f = c.advance(100 * MS + GRACE);
    assert_eq!(verdicts(&f)[0].outcome, PcOutcome::Incomplete);
    // Loss outside the PeerConnection's life does not matter.
    let mut c = Correlator::new(GRACE);
    c.events_lost(0, 1);
    c.marker(PID, PcMarker::Open(1), 10 * MS);
    c.socket_created(socket(10, 1, 11 * MS, &[]));
    c.socket_released(10, 15 * MS);
    c.marker(PID, PcMarker::CloseEnd(1), 20 * MS);
    assert_eq!(
        verdicts(&c.advance(20 * MS + GRACE))[0].outcome,
        PcOutcome::Clean
    );
}

#[test]
fn process_exit_judges_closed_pcs_before_the_kernel_closes_their_sockets() {
    let mut c = Correlator::new(GRACE);
    one_pc(&mut c);
    let f = c.process_exited(PID, 200 * MS);
    assert_eq!(
        leaks(&f).len(),
        1,
        "still open when the process exits, 100 ms after close"
    );
    let f = c.socket_released(10, 201 * MS);
    assert!(matches!(f[..], [Finding::Late { by_exit: true, .. }]));
}

#[test]
fn port_marker_before_bind_attributes_at_bind() {
    let mut c = Correlator::new(GRACE);
    c.marker(PID, PcMarker::Open(7), 0);
    c.marker(
        PID,
        PcMarker::Socket {
            pc_id: 7,
            port: 6000,
        },
        MS,
    );
    c.socket_created(socket(30, 0, 2 * MS, &[]));
    c.socket_bound(30, LO, 6000);
    let a: Vec<_> = c.live_sockets().filter_map(|(_, a, _)| a).collect();
    assert_eq!(
        a,
        vec![Attribution {
            pc_id: 7,
            confidence: Confidence::PortMarker
        }]
    );
}

fn preexisting(cookie: u64, port: u16) -> PreexistingSocket {
    PreexistingSocket {
        cookie,
        pid: PID,
        comm: "proxy".into(),
        fd: Some(cookie as i32),
        local: Some((LO, port)),
    }
}

fn possible(f: &[Finding]) -> Vec<(u64, u64)> {
    f.iter()
        .filter_map(|x| match x {
            Finding::PossibleLeak(p) => Some((p.pc_id, p.socket.cookie)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pc_opened_before_the_attach_is_incomplete_and_lists_what_may_be_its_sockets() {
    let mut c = Correlator::new(GRACE);
    c.joined_running(PID, 0);
    // Two sockets of the process existed before the attach; one is released in time.
    c.socket_preexisting(preexisting(40, 7000));
    c.socket_preexisting(preexisting(41, 7001));
    c.marker(PID, PcMarker::CloseBegin(1), 10 * MS);
    c.marker(PID, PcMarker::CloseEnd(1), 20 * MS);
    c.socket_released(41, 30 * MS);
    let f = c.advance(20 * MS + GRACE);
    let v = verdicts(&f);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].outcome, PcOutcome::Incomplete, "never clean");
    assert_eq!(v[0].reason, Some(IncompleteReason::OpenedBeforeAttach));
    assert_eq!(v[0].possibly_leaked, 1);
    assert_eq!(possible(&f), vec![(1, 40)]);
    assert!(leaks(&f).is_empty(), "nothing ties socket 40 to pc 1");
    if let Some(Finding::PossibleLeak(p)) = f.iter().find(|x| matches!(x, Finding::PossibleLeak(_)))
    {
        assert_eq!(p.socket.age_ns, None, "age unknown");
        assert_eq!(p.socket.local_port, Some(7000));
        assert_eq!(p.socket.fd, Some(40));
        assert_eq!(p.socket.origin, Origin::Preexisting);
    }
    assert_eq!(c.leak_count(), 0);
}

#[test]
fn a_pc_opened_after_the_attach_is_judged_as_usual_in_a_joined_process() {
    let mut c = Correlator::new(GRACE);
    c.joined_running(PID, 0);
    c.socket_preexisting(preexisting(40, 7000));
    one_pc(&mut c);
    let f = c.advance(100 * MS + GRACE);
    assert_eq!(verdicts(&f)[0].outcome, PcOutcome::Leak);
    assert_eq!(verdicts(&f)[0].reason, None);
    assert!(possible(&f).is_empty(), "its life was seen whole");
}

#[test]
fn a_preexisting_socket_a_later_marker_names_is_tied_from_the_inventory() {
    let mut c = Correlator::new(GRACE);
    c.joined_running(PID, 0);
    c.socket_preexisting(preexisting(40, 7000));
    c.marker(
        PID,
        PcMarker::Socket {
            pc_id: 3,
            port: 7000,
        },
        5 * MS,
    );
    c.marker(PID, PcMarker::CloseEnd(3), 10 * MS);
    let f = c.advance(10 * MS + GRACE);
    let l = leaks(&f);
    assert_eq!(l.len(), 1);
    assert_eq!(
        (l[0].pc_id, l[0].cookie, l[0].origin),
        (3, 40, Origin::Preexisting)
    );
    assert_eq!(l[0].age_ns, None);
    assert_eq!(verdicts(&f)[0].outcome, PcOutcome::Incomplete);
    // Even with its pc_open seen, a socket from before the attach means its whole
    // life was not seen.
    let mut c = Correlator::new(GRACE);
    c.socket_preexisting(preexisting(40, 7000));
    c.marker(PID, PcMarker::Open(3), MS);
    c.marker(
        PID,
        PcMarker::Socket {
            pc_id: 3,
            port: 7000,
        },
        5 * MS,
    );
    c.socket_released(40, 6 * MS);
    c.marker(PID, PcMarker::CloseEnd(3), 10 * MS);
    let v = c.advance(10 * MS + GRACE);
    assert_eq!(
        verdicts(&v)[0].reason,
        Some(IncompleteReason::SocketPredatesAttach)
    );
}

#[test]
fn a_pc_with_no_socket_seen_is_never_clean() {
    let mut c = Correlator::new(GRACE);
    c.marker(PID, PcMarker::Open(1), 0);
    c.marker(PID, PcMarker::CloseEnd(1), 10 * MS);
    let f = c.advance(10 * MS + GRACE);
    assert_eq!(verdicts(&f)[0].outcome, PcOutcome::Incomplete);
    assert_eq!(verdicts(&f)[0].reason, Some(IncompleteReason::NoSocketSeen));
}

#[test]
fn creation_stacks_do_not_attribute_in_a_process_joined_while_running() {
    let webrtc = ["__GI_socket", "webrtc_mdns::conn::DnsConn::server"];
    let mut c = Correlator::new(GRACE);
    c.joined_running(PID, 0);
    c.marker(PID, PcMarker::Open(5), MS);
    c.socket_created(socket(10, 0, 2 * MS, &webrtc));
    assert!(
        c.live_sockets().all(|(_, a, _)| a.is_none()),
        "other PeerConnections opened before the attach may be open"
    );
}

#[test]
fn cookie_markers_attribute_exactly_before_or_after_the_creation() {
    let mut c = Correlator::new(GRACE);
    c.marker(PID, PcMarker::Open(1), 0);
    c.marker(PID, PcMarker::Open(2), 0);
    c.socket_created(socket(10, 2, MS, &[]));
    c.marker(
        PID,
        PcMarker::SocketCookie {
            pc_id: 1,
            cookie: 10,
        },
        2 * MS,
    );
    c.marker(
        PID,
        PcMarker::SocketCookie {
            pc_id: 1,
            cookie: 11,
        },
        3 * MS,
    );
    c.socket_created(socket(11, 0, 4 * MS, &[]));
    let mut a: Vec<_> = c
        .live_sockets()
        .filter_map(|(s, a, _)| a.map(|a| (s.cookie, a.pc_id, a.confidence)))
        .collect();
    a.sort();
    assert_eq!(
        a,
        vec![
            (10, 1, Confidence::CookieMarker),
            (11, 1, Confidence::CookieMarker)
        ],
        "the cookie beats the thread span"
    );
}

#[test]
fn a_pc_dropped_without_close_is_judged_like_a_closed_one() {
    let mut c = Correlator::new(GRACE);
    c.marker(PID, PcMarker::Open(1), 0);
    c.socket_created(socket(10, 1, MS, &[]));
    c.marker(PID, PcMarker::Dropped(1), 10 * MS);
    assert!(c.advance(10 * MS + GRACE - 1).is_empty());
    let f = c.advance(10 * MS + GRACE);
    assert_eq!(leaks(&f)[0].ended, PcEnd::DroppedWithoutClose);
    assert_eq!(verdicts(&f)[0].outcome, PcOutcome::Leak);
    assert_eq!(verdicts(&f)[0].ended, PcEnd::DroppedWithoutClose);
    assert_eq!(c.leak_count(), 1);
}

#[test]
fn pcs_never_closed_with_open_sockets_are_listed_once_at_exit() {
    let mut c = Correlator::new(GRACE);
    c.marker(PID, PcMarker::Open(1), 0);
    c.marker(PID, PcMarker::Open(2), 0);
    c.socket_created(socket(10, 1, MS, &[]));
    c.socket_created(socket(20, 2, MS, &[]));
    c.socket_released(20, 2 * MS);
    let f = c.process_exited(PID, 5 * MS);
    let unclosed: Vec<_> = f
        .iter()
        .filter_map(|x| match x {
            Finding::Unclosed(u) => Some((
                u.pc_id,
                u.sockets.iter().map(|s| s.cookie).collect::<Vec<_>>(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(unclosed, vec![(1, vec![10])], "pc 2 holds no open socket");
    assert!(c.process_exited(PID, 6 * MS).is_empty(), "listed once");
    assert_eq!(c.leak_count(), 0, "not a leak by itself");
}

#[test]
fn a_port_names_one_socket_even_when_several_share_it() {
    let mut c = Correlator::new(GRACE);
    c.joined_running(PID, 0);
    // An mDNS socket of a PeerConnection from before the attach, on the shared port.
    c.socket_preexisting(preexisting(40, 5353));
    // A new PeerConnection's own mDNS socket, announced by cookie, then by port.
    c.marker(PID, PcMarker::Open(3), MS);
    c.socket_created(socket(50, 0, 2 * MS, &[]));
    c.socket_bound(50, LO, 5353);
    c.marker(
        PID,
        PcMarker::SocketCookie {
            pc_id: 3,
            cookie: 50,
        },
        3 * MS,
    );
    c.marker(
        PID,
        PcMarker::Socket {
            pc_id: 3,
            port: 5353,
        },
        3 * MS,
    );
    let tied: Vec<_> = c
        .live_sockets()
        .map(|(s, a, _)| (s.cookie, a.map(|a| a.pc_id)))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(
        tied,
        vec![(40, None), (50, Some(3))],
        "the old socket is not taken"
    );
    // Two untied sockets on one port: the marker cannot say which, and ties neither.
    let mut c = Correlator::new(GRACE);
    c.socket_preexisting(preexisting(40, 5353));
    c.socket_preexisting(preexisting(41, 5353));
    c.marker(
        PID,
        PcMarker::Socket {
            pc_id: 7,
            port: 5353,
        },
        MS,
    );
    assert!(c.live_sockets().all(|(_, a, _)| a.is_none()));
}

#[test]
fn the_timeline_keeps_every_socket_life_of_each_peer_connection() {
    let mut c = Correlator::new(GRACE);
    assert!(c.timeline(0).is_none(), "kept only when asked for");
    c.keep_timeline(0);
    one_pc(&mut c);
    c.socket_created(socket(11, 1, 30 * MS, &["webrtc_mdns::conn::new"]));
    c.socket_released(11, 40 * MS);
    c.advance(100 * MS + GRACE);
    let late = c.socket_released(10, 100 * MS + GRACE + 5 * MS);
    assert!(
        matches!(late[..], [Finding::Late { released_ns, .. }] if released_ns == 100 * MS + GRACE + 5 * MS)
    );
    let t = c.timeline(3_000 * MS).expect("kept");
    assert_eq!((t.start_ns, t.end_ns, t.grace_ns), (0, 3_000 * MS, GRACE));
    let [pc] = &t.pcs[..] else {
        panic!("one PeerConnection: {t:?}")
    };
    assert_eq!(
        (pc.opened_ns, pc.ended_ns, pc.judged_ns, pc.outcome),
        (
            Some(0),
            Some(100 * MS),
            Some(100 * MS + GRACE),
            Some(PcOutcome::Leak)
        )
    );
    let lives: Vec<_> = pc
        .sockets
        .iter()
        .map(|s| (s.cookie, s.created_ns, s.released_ns, s.leaked))
        .collect();
    assert_eq!(
        lives,
        vec![
            (10, Some(10 * MS), Some(100 * MS + GRACE + 5 * MS), true),
            (11, Some(30 * MS), Some(40 * MS), false),
        ]
    );
}

#[test]
fn a_forgotten_process_leaves_nothing_behind_and_its_pid_starts_afresh() {
    let mut c = Correlator::new(GRACE);
    one_pc(&mut c);
    c.advance(100 * MS + GRACE);
    c.process_exited(PID, 3_000 * MS);
    assert_eq!(c.exited_before(3_000 * MS), vec![PID]);
    c.forget_process(PID);
    assert_eq!(c.sizes(), (0, 0));
    assert!(c.exited_before(u64::MAX).is_empty());
    // The pid comes back as another process: its PeerConnection 1 is a new one.
    c.marker(PID, PcMarker::Open(1), 4_000 * MS);
    c.marker(PID, PcMarker::CloseEnd(1), 4_100 * MS);
    let f = c.advance(4_100 * MS + GRACE);
    assert_eq!(
        verdicts(&f)[0].outcome,
        PcOutcome::Incomplete,
        "no socket seen"
    );
    assert_eq!(verdicts(&f)[0].reason, Some(IncompleteReason::NoSocketSeen));
}

#[test]
fn judged_peer_connections_without_open_sockets_are_retired() {
    let mut c = Correlator::new(GRACE);
    one_pc(&mut c);
    c.socket_released(10, 150 * MS);
    c.advance(100 * MS + GRACE);
    // A second one, leaking: kept while its socket is open.
    c.marker(PID, PcMarker::Open(2), 3_000 * MS);
    c.socket_created(socket(20, 2, 3_010 * MS, &["webrtc_ice::agent::gather"]));
    c.marker(PID, PcMarker::CloseEnd(2), 3_100 * MS);
    c.advance(3_100 * MS + GRACE);
    c.retire_judged();
    assert_eq!(c.sizes(), (1, 1), "pc 2 and its leaked socket stay");
    let late = c.socket_released(20, 6_000 * MS);
    assert!(matches!(late[..], [Finding::Late { pc_id: 2, .. }]));
    c.retire_judged();
    assert_eq!(c.sizes(), (0, 0));
}

#[test]
fn the_socket_table_reuses_slots_and_gives_memory_back_when_empty() {
    let mut c = Correlator::new(GRACE);
    for cookie in 1..=1000 {
        c.socket_created(socket(cookie, 0, cookie, &["main"]));
    }
    assert_eq!(c.sizes().0, 1000);
    for cookie in (1..=1000).step_by(2) {
        c.socket_released(cookie, 2_000);
    }
    assert_eq!(c.sizes().0, 500);
    assert!(c.live_sockets().all(|(s, _, _)| s.cookie % 2 == 0));
    // Freed slots are taken again; the records are the right ones.
    for cookie in 2001..=2500 {
        c.socket_created(socket(cookie, 0, cookie, &["main"]));
    }
    let mut cookies: Vec<u64> = c.live_sockets().map(|(s, _, _)| s.cookie).collect();
    cookies.sort_unstable();
    let want: Vec<u64> = (2..=1000).step_by(2).chain(2001..=2500).collect();
    assert_eq!(cookies, want);
    c.process_exited(PID, 3_000);
    c.forget_process(PID);
    assert_eq!(c.sizes(), (0, 0));
    // Usable again after it emptied.
    c.socket_created(socket(7, 0, 4_000, &["main"]));
    assert_eq!(
        c.live_sockets()
            .map(|(s, _, _)| s.cookie)
            .collect::<Vec<_>>(),
        vec![7]
    );
}

/// pc 1 dropped at 10 ms and judged (clean) at its grace; then its driver binds again.
fn rebound_after_the_verdict(c: &mut Correlator, cookie: u64, at: u64) {
    c.marker(PID, PcMarker::Open(1), 0);
    c.marker(PID, PcMarker::Dropped(1), 10 * MS);
    let f = c.advance(10 * MS + GRACE);
    assert_eq!(verdicts(&f)[0].pc_id, 1);
    c.socket_created(socket(cookie, 0, at, &[]));
    c.marker(PID, PcMarker::SocketCookie { pc_id: 1, cookie }, at + MS);
}

#[test]
fn a_socket_tied_after_the_verdict_gets_a_grace_of_its_own_then_is_a_leak() {
    let mut c = Correlator::new(GRACE);
    let born = 10 * MS + GRACE + 500 * MS;
    rebound_after_the_verdict(&mut c, 20, born);
    assert!(
        c.advance(born + GRACE - 1).is_empty(),
        "its own grace first"
    );
    let f = c.advance(born + GRACE + 7 * MS);
    let l = leaks(&f);
    assert_eq!((l.len(), l[0].cookie, l[0].pc_id), (1, 20, 1));
    assert_eq!(l[0].judged_ns, born + GRACE);
    assert_eq!(l[0].ended, PcEnd::DroppedWithoutClose);
    assert!(
        verdicts(&f).is_empty(),
        "the connection's verdict was given already"
    );
    assert_eq!(c.leak_count(), 1);
    assert!(c.advance(born + 10 * GRACE).is_empty(), "flagged once");
    assert!(matches!(
        c.socket_released(20, born + 11 * GRACE)[..],
        [Finding::Late { .. }]
    ));

    // Released within its grace: nothing to say.
    let mut c = Correlator::new(GRACE);
    rebound_after_the_verdict(&mut c, 21, born);
    assert!(c.socket_released(21, born + GRACE / 2).is_empty());
    assert!(c.advance(born + 10 * GRACE).is_empty());
    assert_eq!(c.leak_count(), 0);
}

#[test]
fn a_socket_tied_after_the_verdict_is_judged_at_its_process_exit() {
    let mut c = Correlator::new(GRACE);
    let born = 10 * MS + GRACE + 500 * MS;
    rebound_after_the_verdict(&mut c, 20, born);
    let f = c.process_exited(PID, born + 100 * MS);
    assert_eq!(leaks(&f).len(), 1);
    assert_eq!(leaks(&f)[0].judged_ns, born + 100 * MS);
}

#[test]
fn a_thread_span_outliving_its_connection_ties_nothing_to_judge() {
    let mut c = Correlator::new(GRACE);
    c.marker(PID, PcMarker::Open(1), 0);
    c.marker(PID, PcMarker::Dropped(1), 10 * MS);
    c.advance(10 * MS + GRACE);
    let born = 10 * MS + GRACE + 500 * MS;
    c.socket_created(socket(20, 1, born, &[]));
    assert!(c.advance(born + 10 * GRACE).is_empty());
    assert_eq!(c.leak_count(), 0);
}
