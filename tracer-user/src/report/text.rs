//! Findings as people read them: one line per leak (with its kind), what holds it, its
//! creating site and stacks; verdicts with their reasons; possible leaks; connections
//! left open at exit.
use std::io::{self, Write};

use crate::{
    clock::human_ns,
    correlate::{Finding, Leak, OpenSocket, PcOutcome, PcVerdict, Site},
    output::write_frames,
    sockets::Origin,
};

fn sockets(n: usize) -> String {
    if n == 1 {
        "1 socket".into()
    } else {
        format!("{n} sockets")
    }
}

/// " fd=5 127.0.0.1:4000" or " (unbound)".
fn where_text(fd: Option<i32>, addr: Option<std::net::IpAddr>, port: Option<u16>) -> String {
    let fd = fd.map(|f| format!(" fd={f}")).unwrap_or_default();
    match (addr, port) {
        (Some(a), Some(p)) => format!("{fd} {a}:{p}"),
        _ => format!("{fd} (unbound)"),
    }
}

/// "created 3.2s ago" or, for a socket from before sockscope attached, what is known.
fn age_text(age_ns: Option<u64>) -> String {
    match age_ns {
        Some(a) => format!("created {} ago", human_ns(a)),
        None => "created before sockscope attached (age unknown)".into(),
    }
}

fn write_leak(out: &mut dyn Write, l: &Leak) -> io::Result<()> {
    let inventory = if l.origin == Origin::Preexisting {
        ", tied to it from the start-up inventory"
    } else {
        ""
    };
    let by = if l.origin == Origin::Preexisting {
        "an unknown creator"
    } else {
        l.subsystem.label()
    };
    // The one line a CI view shows: what, where, and why it is still open.
    let kind = l.kind.map(|k| format!(" {}", k.word())).unwrap_or_default();
    writeln!(
        out,
        "LEAK{kind} pid={} ({}) pc_id={} cookie={}{}: still open {} {}, {} by {by} [attributed {}{inventory}]",
        l.pid,
        l.comm,
        l.pc_id,
        l.cookie,
        where_text(l.fd, l.local_addr, l.local_port),
        human_ns(l.since_close_ns),
        l.ended.after(),
        age_text(l.age_ns),
        l.confidence.label()
    )?;
    write_kind(out, l)?;
    write_holders(out, l)?;
    match (&l.site, &l.pc_site) {
        (None, Some(pc)) => writeln!(
            out,
            "    created by webrtc-rs for the PeerConnection the application made in {}{}",
            pc.function,
            at_text(pc)
        )?,
        (site, _) => write_site(out, site.as_ref())?,
    }
    write_frames(out, "creating", &l.stack)
}

/// "    created in wr::rtsp_upstream at src/main.rs:31", before the full stack.
fn write_site(out: &mut dyn Write, site: Option<&Site>) -> io::Result<()> {
    let Some(site) = site else {
        return Ok(());
    };
    writeln!(out, "    created in {}{}", site.function, at_text(site))
}

/// " at src/main.rs:31", or what is known of it.
fn at_text(site: &Site) -> String {
    match (&site.file, site.line) {
        (Some(f), Some(l)) => format!(" at {f}:{l}"),
        (Some(f), None) => format!(" at {f}"),
        _ => String::new(),
    }
}

/// "    why: active: a task still sends or receives on it (12 sends, 0 receives since
/// close; last: send 20.0ms ago by tid 7)", then the stack of that last operation.
fn write_kind(out: &mut dyn Write, l: &Leak) -> io::Result<()> {
    let Some(kind) = l.kind else {
        return Ok(());
    };
    let Some(io) = &l.io else {
        return writeln!(
            out,
            "    why: {} (no send or receive was ever seen on it)",
            kind.label()
        );
    };
    let last = match (&io.last_op, io.last_result, io.last_ago_ns, io.last_tid) {
        (Some(op), Some(r), Some(ago), Some(tid)) => {
            let result = if r == -11 {
                "would block".to_owned()
            } else if r < 0 {
                format!("error {}", -r)
            } else {
                format!("{r}")
            };
            format!("; last: {op} ({result}) {} ago by tid {tid}", human_ns(ago))
        }
        _ => String::new(),
    };
    writeln!(
        out,
        "    why: {} ({} sends, {} receives, {} reads that would block since the end{last})",
        kind.label(),
        io.sends_after_end,
        io.recvs_after_end,
        io.recvs_would_block_after_end
    )?;
    if io.last_stack.is_empty() {
        return Ok(());
    }
    match (io.last_stack_at_ns, io.last_at_ns) {
        // A DWARF-mode sample of an earlier operation (they are rate-limited per socket).
        (Some(at), Some(last)) if at < last => write_frames(
            out,
            &format!(
                "last sampled I/O ({} before the last I/O)",
                human_ns(last - at)
            ),
            &io.last_stack,
        ),
        _ => write_frames(out, "last I/O", &io.last_stack),
    }
}

/// "    held by pid 12 (proxy) fd 7, pid 40 (worker) fd 3; in epoll pid 12 fd 5 (in, out)".
fn write_holders(out: &mut dyn Write, l: &Leak) -> io::Result<()> {
    if l.holders.is_empty() {
        return Ok(());
    }
    let held: Vec<String> = l
        .holders
        .iter()
        .map(|h| format!("pid {} ({}) fd {}", h.pid, h.comm, h.fd))
        .collect();
    let epoll: Vec<String> = l
        .epoll
        .iter()
        .map(|e| {
            let mut ev = Vec::new();
            for (bit, name) in [
                (0x1, "in"),
                (0x4, "out"),
                (0x2000, "rdhup"),
                (1 << 31, "et"),
            ] {
                if e.events & bit != 0 {
                    ev.push(name);
                }
            }
            format!("pid {} fd {} ({})", e.pid, e.epoll_fd, ev.join(", "))
        })
        .collect();
    let epoll = if epoll.is_empty() {
        String::new()
    } else {
        format!("; in epoll {}", epoll.join(", "))
    };
    writeln!(out, "    held by {}{epoll}", held.join(", "))
}

/// One indented line per open socket, and its creating stack when known.
fn write_open_socket(out: &mut dyn Write, lead: &str, s: &OpenSocket) -> io::Result<()> {
    let by = s
        .subsystem
        .map(|x| format!(" by {}", x.label()))
        .unwrap_or_default();
    writeln!(
        out,
        "{lead}cookie={}{}: {}{by}",
        s.cookie,
        where_text(s.fd, s.local_addr, s.local_port),
        age_text(s.age_ns)
    )?;
    if s.origin == Origin::Preexisting {
        return Ok(()); // no creating stack to show
    }
    write_site(out, s.site.as_ref())?;
    write_frames(out, "creating", &s.stack)
}

fn verdict_text(v: &PcVerdict) -> String {
    let ended = if v.ended == crate::correlate::PcEnd::DroppedWithoutClose {
        ", dropped without close()"
    } else {
        ""
    };
    match (v.outcome, v.reason) {
        (PcOutcome::Clean, _) => format!("clean ({}, all released in time)", sockets(v.sockets)),
        (PcOutcome::Leak, _) => {
            format!(
                "LEAK ({} of {} sockets still open{ended})",
                v.leaked, v.sockets
            )
        }
        (PcOutcome::Incomplete, reason) => {
            let why = reason.map_or("not seen whole", |r| r.label());
            let possibly = if v.possibly_leaked > 0 {
                format!("; {} possibly leaked", sockets(v.possibly_leaked))
            } else {
                String::new()
            };
            let tied = if v.sockets > 0 {
                format!(
                    "; {} of {} tied to it still open",
                    v.leaked,
                    sockets(v.sockets)
                )
            } else {
                String::new()
            };
            format!("incomplete ({why}{tied}{possibly}{ended})")
        }
    }
}

pub fn write_finding_text(out: &mut dyn Write, f: &Finding) -> io::Result<()> {
    match f {
        Finding::Leak(l) => write_leak(out, l),
        Finding::Late {
            pid,
            pc_id,
            cookie,
            local_port,
            late_by_ns,
            by_exit,
            released_by,
            ..
        } => {
            let port = local_port.map(|p| format!(" port {p}")).unwrap_or_default();
            let how = if *by_exit {
                "closed by the process exit"
            } else {
                "released"
            };
            let by = released_by
                .as_ref()
                .map(|r| format!(" by {} (pid {} tid {})", r.comm, r.pid, r.tid))
                .unwrap_or_default();
            writeln!(
                out,
                "late pid={pid} pc_id={pc_id} cookie={cookie}{port}: {how}{by} {} after it was flagged",
                human_ns(*late_by_ns)
            )?;
            match released_by {
                Some(r) if !r.stack.is_empty() => write_frames(out, "releasing", &r.stack),
                _ => Ok(()),
            }
        }
        Finding::Verdict(v) => {
            writeln!(
                out,
                "verdict pid={} pc_id={}: {}",
                v.pid,
                v.pc_id,
                verdict_text(v)
            )
        }
        Finding::PossibleLeak(p) => write_open_socket(
            out,
            &format!(
                "possibly leaked pid={} pc_id={} (not seen whole; nothing ties it to another PeerConnection) ",
                p.pid, p.pc_id
            ),
            &p.socket,
        ),
        Finding::Unclosed(u) => {
            writeln!(
                out,
                "UNCLOSED pid={} pc_id={}: never closed nor dropped, {} still open when the process exited",
                u.pid,
                u.pc_id,
                sockets(u.sockets.len())
            )?;
            for s in &u.sockets {
                write_open_socket(out, "  socket ", s)?;
            }
            Ok(())
        }
    }
}
