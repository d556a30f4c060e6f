//! A leaked socket's kind, from what the I/O hooks saw of it (see tracer-ebpf's io.rs).
use tracer_common::{IoStats, io_op};

use crate::correlate::{IoEvidence, LeakKind};

const EAGAIN: i64 = 11;

/// The kind of a leak and its evidence, from the hooks' record of the socket (`None`:
/// no send or receive was ever seen on it). `ended_ns` is when its PeerConnection
/// ended, `now_ns` the verdict's time.
///
/// Active: it still sends, or its receives went on past the middle of the time since
/// the end (a read loop that picked up the peer's last packets of the teardown and then
/// parked is not "still" in use). Awaited: otherwise, when the last thing done on it
/// was a read that would block. Held: neither.
pub fn leak_kind(
    stats: Option<&IoStats>,
    ended_ns: u64,
    now_ns: u64,
) -> (Option<LeakKind>, Option<IoEvidence>) {
    let Some(s) = stats else {
        // Watched, and nothing ever moved on it: only a reference keeps it.
        return (Some(LeakKind::Held), None);
    };
    let halfway = ended_ns + now_ns.saturating_sub(ended_ns) / 2;
    let still_receiving = s.recvs > 0 && s.last_ok_ts_ns > halfway;
    let last_was_blocked_read = s.last_op == io_op::RECV && s.last_ret == -EAGAIN;
    let kind = if s.sends + s.errors > 0 || still_receiving {
        LeakKind::Active
    } else if last_was_blocked_read {
        LeakKind::Awaited
    } else {
        LeakKind::Held
    };
    let evidence = IoEvidence {
        sends_after_end: s.sends,
        recvs_after_end: s.recvs,
        recvs_would_block_after_end: s.recvs_would_block,
        errors_after_end: s.errors,
        last_op: match s.last_op {
            io_op::SEND => Some("send".into()),
            io_op::RECV => Some("recv".into()),
            _ => None,
        },
        last_result: (s.last_op != 0).then_some(s.last_ret),
        last_ago_ns: (s.last_op != 0).then(|| now_ns.saturating_sub(s.last_ts_ns)),
        last_at_ns: (s.last_op != 0).then_some(s.last_ts_ns),
        last_ok_at_ns: (s.last_ok_ts_ns != 0).then_some(s.last_ok_ts_ns),
        last_tid: (s.last_op != 0).then_some(s.last_tid),
        last_stack: Vec::new(),
        last_stack_at_ns: None,
    };
    (Some(kind), Some(evidence))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(f: impl FnOnce(&mut IoStats)) -> IoStats {
        let mut s = IoStats {
            last_stack_after_end: -1,
            ..IoStats::default()
        };
        f(&mut s);
        s
    }

    #[test]
    fn kinds_from_io() {
        assert_eq!(leak_kind(None, 0, 100).0, Some(LeakKind::Held));
        let sending = stats(|s| {
            s.sends = 3;
            s.last_op = io_op::SEND;
            s.last_ret = 40;
        });
        assert_eq!(leak_kind(Some(&sending), 0, 100).0, Some(LeakKind::Active));
        let parked = stats(|s| {
            s.last_op = io_op::RECV;
            s.last_ret = -EAGAIN;
        });
        assert_eq!(leak_kind(Some(&parked), 0, 100).0, Some(LeakKind::Awaited));
        // Reads that keep finding nothing after the end are not activity.
        let polling = stats(|s| {
            s.recvs_would_block = 5;
            s.last_op = io_op::RECV;
            s.last_ret = -EAGAIN;
        });
        assert_eq!(leak_kind(Some(&polling), 0, 100).0, Some(LeakKind::Awaited));
        // The peer's last packets read right after the end, then parked: awaited.
        let teardown = stats(|s| {
            s.recvs = 2;
            s.last_ok_ts_ns = 10;
            s.last_op = io_op::RECV;
            s.last_ret = -EAGAIN;
        });
        assert_eq!(
            leak_kind(Some(&teardown), 0, 100).0,
            Some(LeakKind::Awaited)
        );
        // Receiving until late in the grace: still in use.
        let forwarding = stats(|s| {
            s.recvs = 40;
            s.last_ok_ts_ns = 90;
            s.last_op = io_op::RECV;
            s.last_ret = -EAGAIN;
        });
        assert_eq!(
            leak_kind(Some(&forwarding), 0, 100).0,
            Some(LeakKind::Active)
        );
        let done = stats(|s| {
            s.last_op = io_op::RECV;
            s.last_ret = 12;
        });
        assert_eq!(leak_kind(Some(&done), 0, 100).0, Some(LeakKind::Held));
    }
}
