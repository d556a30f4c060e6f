//! Findings as people and machines read them: text lines, JSON Lines, and the saved
//! report of a `check` run that `sockscope report F` renders again.
use std::io::{self, Write};

use crate::{
    clock::human_ns,
    correlate::{Finding, Leak, OpenSocket, PcOutcome, PcVerdict, Site},
    output::{Format, SCHEMA, write_frames},
    sockets::Origin,
};

/// What a `check` or `watch` run concluded.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub command: Vec<String>,
    /// How the command ended (`exit 0`, `signal 9`), for `check`.
    pub command_status: Option<String>,
    pub grace_ms: u64,
    pub peer_connections: usize,
    pub judged: usize,
    pub clean: usize,
    pub leaking: usize,
    pub incomplete: usize,
    pub leaks: usize,
    /// PeerConnections that never reached `pc_close_end`.
    pub never_closed: usize,
    /// Of those, the ones whose process exited while they still held open sockets
    /// (`unclosed` records): a leak under `check --strict`.
    #[serde(default)]
    pub unclosed_with_sockets: usize,
    /// Sockets listed as possibly leaked by PeerConnections not seen whole.
    #[serde(default)]
    pub possibly_leaked: usize,
    pub events: u64,
    pub lost: u64,
    pub markers_attached: usize,
}

/// A saved `check` report: everything found, then the summary.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedReport {
    pub schema: u32,
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

/// Findings printed as they come, and kept for the summary and the saved report.
pub struct FindingLog {
    format: Format,
    pub findings: Vec<Finding>,
}

impl FindingLog {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            findings: Vec::new(),
        }
    }

    pub fn emit(&mut self, found: Vec<Finding>) -> io::Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        for f in found {
            write_finding(&mut out, &f, self.format)?;
            self.findings.push(f);
        }
        out.flush()
    }
}

/// What a `check` or `watch` run concluded, as its exit code says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    Leaks,
    /// No trustworthy verdict (events lost, or the command did not run properly).
    Inconclusive,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Clean => 0,
            Self::Leaks => 1,
            Self::Inconclusive => 2,
        }
    }
}

impl Summary {
    /// Leaks first (with `strict`, PeerConnections left open at their process's exit
    /// with sockets count as leaks too); then lost events or PeerConnections not seen
    /// whole make any other verdict untrustworthy.
    pub fn outcome(&self, strict: bool) -> Outcome {
        if self.leaks > 0 || (strict && self.unclosed_with_sockets > 0) {
            Outcome::Leaks
        } else if self.incomplete > 0 || self.lost > 0 {
            Outcome::Inconclusive
        } else {
            Outcome::Clean
        }
    }

    pub fn count(&mut self, f: &Finding) {
        match f {
            Finding::Verdict(v) => {
                self.judged += 1;
                match v.outcome {
                    PcOutcome::Clean => self.clean += 1,
                    PcOutcome::Leak => self.leaking += 1,
                    PcOutcome::Incomplete => self.incomplete += 1,
                }
                self.leaks += v.leaked;
                self.possibly_leaked += v.possibly_leaked;
            }
            Finding::Unclosed(_) => self.unclosed_with_sockets += 1,
            Finding::Leak(_) | Finding::Late { .. } | Finding::PossibleLeak(_) => {}
        }
    }
}

fn sockets(n: usize) -> String {
    if n == 1 {
        "1 socket".into()
    } else {
        format!("{n} sockets")
    }
}

pub fn write_finding(out: &mut dyn Write, f: &Finding, format: Format) -> io::Result<()> {
    match format {
        Format::Json => {
            let mut v = serde_json::to_value(f).map_err(io::Error::other)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("schema".into(), SCHEMA.into());
            }
            writeln!(out, "{v}")
        }
        Format::Text => write_finding_text(out, f),
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
    write_site(out, l.site.as_ref())?;
    write_frames(out, "creating", &l.stack)
}

/// "    created in wr::rtsp_upstream at src/main.rs:31", before the full stack.
fn write_site(out: &mut dyn Write, site: Option<&Site>) -> io::Result<()> {
    let Some(site) = site else {
        return Ok(());
    };
    let at = match (&site.file, site.line) {
        (Some(f), Some(l)) => format!(" at {f}:{l}"),
        (Some(f), None) => format!(" at {f}"),
        _ => String::new(),
    };
    writeln!(out, "    created in {}{at}", site.function)
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
    write_frames(out, "last I/O", &io.last_stack)
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

pub(crate) fn write_finding_text(out: &mut dyn Write, f: &Finding) -> io::Result<()> {
    match f {
        Finding::Leak(l) => write_leak(out, l),
        Finding::Late {
            pid,
            pc_id,
            cookie,
            local_port,
            late_by_ns,
            by_exit,
        } => {
            let port = local_port.map(|p| format!(" port {p}")).unwrap_or_default();
            let how = if *by_exit {
                "closed by the process exit"
            } else {
                "released"
            };
            writeln!(
                out,
                "late pid={pid} pc_id={pc_id} cookie={cookie}{port}: {how} {} after it was flagged",
                human_ns(*late_by_ns)
            )
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

pub fn write_summary(out: &mut dyn Write, s: &Summary, format: Format) -> io::Result<()> {
    if format == Format::Json {
        let mut v = serde_json::to_value(s).map_err(io::Error::other)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("schema".into(), SCHEMA.into());
            o.insert("event".into(), "summary".into());
        }
        return writeln!(out, "{v}");
    }
    let status = s
        .command_status
        .as_deref()
        .map(|c| format!("command {c}; "))
        .unwrap_or_default();
    writeln!(
        out,
        "summary: {status}{} PeerConnections ({} judged: {} clean, {} leaking, {} incomplete; {} never closed, \
         {} of them with open sockets at exit), {} leaked sockets, {} possibly leaked, {} events, {} lost, grace {}",
        s.peer_connections,
        s.judged,
        s.clean,
        s.leaking,
        s.incomplete,
        s.never_closed,
        s.unclosed_with_sockets,
        s.leaks,
        s.possibly_leaked,
        s.events,
        s.lost,
        human_ns(s.grace_ms * 1_000_000)
    )
}

/// `sockscope report F`: a saved report, rendered as text.
pub fn render_saved(path: &std::path::Path, out: &mut dyn Write) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let report: SavedReport = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a sockscope check report (written by --report)",
            path.display()
        )
    })?;
    if report.schema != SCHEMA {
        anyhow::bail!(
            "{} has report schema {}, this sockscope reads {SCHEMA}",
            path.display(),
            report.schema
        );
    }
    for f in &report.findings {
        write_finding(out, f, Format::Text)?;
    }
    write_summary(out, &report.summary, Format::Text)?;
    Ok(())
}
