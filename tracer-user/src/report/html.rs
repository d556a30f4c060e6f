//! `sockscope report F --html OUT`: a saved `check` report as one self-contained HTML
//! page (inline CSS and JS, nothing fetched: it opens from disk). A header with the
//! run's verdict and counts; a timeline with each PeerConnection as a bar (open, close,
//! grace) and its sockets beneath it (created, released or still open at the end),
//! leaks in red with their kind and I/O as ticks; then a table of the leaks, one row
//! each, with their creating site and stacks.
//!
//! Every text from the report (function names hold `<`, `>` and `&`; comm names are
//! whatever a process chose) goes through [`Esc`]. Each element carries stable hooks
//! for tests and scripts: `.pc-bar[data-pid][data-pc-id][data-outcome]`,
//! `.sock-bar[data-cookie][data-leaked][data-kind]`,
//! `tr.leak[data-pid][data-pc-id][data-cookie][data-kind]`, `[data-count=NAME]`.
use std::{
    collections::HashMap,
    fmt::{self, Write as _},
    path::Path,
};

use anyhow::Context as _;

use super::{Outcome, SavedReport, Summary};
use crate::{
    clock::human_ns,
    correlate::{
        Finding, IoEvidence, Leak, LeakKind, OpenSocket, PcEnd, PcOutcome, PcSpan, PcVerdict,
        PossibleLeak, Releaser, Site, SocketSpan, Subsystem, Timeline, UnclosedPc,
    },
    sockets::Origin,
    symbolize::Frame,
};

const CSS: &str = include_str!("timeline.css");
const JS: &str = include_str!("timeline.js");

/// Frames of a stack shown in a hover popover; the table has them all.
const TIP_FRAMES: usize = 14;

/// `sockscope report INPUT --html OUTPUT`.
pub fn write_file(input: &Path, output: &Path) -> anyhow::Result<()> {
    let report = super::load_saved(input)?;
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::write(output, render(&report, &name))
        .with_context(|| format!("cannot write {}", output.display()))
}

/// The page for `report`; `source` names the report file in the page.
pub fn render(report: &SavedReport, source: &str) -> String {
    let cx = Cx::new(report);
    let mut h = String::with_capacity(64 * 1024);
    // Writing to a String cannot fail.
    let _ = page(&mut h, &cx, source);
    h
}

/// Text escaped for HTML: in element content and in quoted attribute values alike.
/// Control characters other than newline and tab (which a report should not hold, but
/// a comm could) become U+FFFD.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let special = |c: char| {
            matches!(c, '&' | '<' | '>' | '"' | '\'') || (c.is_control() && c != '\n' && c != '\t')
        };
        let mut rest = self.0;
        while let Some(i) = rest.find(special) {
            f.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or('\u{FFFD}');
            f.write_str(match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => "\u{FFFD}",
            })?;
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// A leaked socket released after all.
struct Late<'a> {
    late_by_ns: u64,
    by_exit: bool,
    released_ns: u64,
    released_by: Option<&'a Releaser>,
}

/// The report with its findings indexed for joins (every join is a hash lookup: a
/// report with hundreds of PeerConnections renders in linear time).
struct Cx<'a> {
    report: &'a SavedReport,
    /// By (pid, cookie).
    leaks: HashMap<(u32, u64), &'a Leak>,
    lates: HashMap<(u32, u64), Late<'a>>,
    /// By (pid, pc_id).
    verdicts: HashMap<(u32, u64), &'a PcVerdict>,
    comms: HashMap<u32, &'a str>,
    /// The time axis, when the report has a timeline.
    scale: Option<Scale>,
}

impl<'a> Cx<'a> {
    fn new(report: &'a SavedReport) -> Self {
        let mut cx = Self {
            report,
            leaks: HashMap::new(),
            lates: HashMap::new(),
            verdicts: HashMap::new(),
            comms: HashMap::new(),
            scale: report.timeline.as_ref().map(Scale::of),
        };
        for f in &report.findings {
            match f {
                Finding::Leak(l) => {
                    cx.leaks.insert((l.pid, l.cookie), l);
                    cx.comms.entry(l.pid).or_insert(&l.comm);
                }
                Finding::Late {
                    pid,
                    cookie,
                    late_by_ns,
                    by_exit,
                    released_ns,
                    released_by,
                    ..
                } => {
                    cx.lates.insert(
                        (*pid, *cookie),
                        Late {
                            late_by_ns: *late_by_ns,
                            by_exit: *by_exit,
                            released_ns: *released_ns,
                            released_by: released_by.as_ref(),
                        },
                    );
                }
                Finding::Verdict(v) => {
                    cx.verdicts.insert((v.pid, v.pc_id), v);
                }
                Finding::PossibleLeak(_) | Finding::Unclosed(_) => {}
            }
        }
        for f in &report.findings {
            if let Finding::Late {
                pid,
                released_by: Some(r),
                ..
            } = f
                && r.pid == *pid
            {
                cx.comms.entry(*pid).or_insert(&r.comm);
            }
        }
        cx
    }

    /// "2.591 s" since tracing began, or "" without a timeline (or for a time of 0:
    /// unknown, in reports saved before times were recorded).
    fn at(&self, ns: u64) -> String {
        match &self.scale {
            Some(s) if ns != 0 => format!("{:.3} s", ns.saturating_sub(s.start) as f64 / 1e9),
            _ => String::new(),
        }
    }

    fn comm(&self, pid: u32) -> &str {
        self.comms.get(&pid).copied().unwrap_or("")
    }
}

/// Times on the axis: CLOCK_MONOTONIC ns to percent of the track.
struct Scale {
    start: u64,
    end: u64,
    /// Between two ticks.
    step: u64,
}

impl Scale {
    fn of(t: &Timeline) -> Self {
        // A report is input: keep the span nonempty whatever its times say.
        let end = t.end_ns.max(t.start_ns.saturating_add(1));
        let start = t.start_ns.min(end - 1);
        Self {
            start,
            end,
            step: tick_step(end - start),
        }
    }

    fn pct(&self, ns: u64) -> f64 {
        let ns = ns.clamp(self.start, self.end);
        (ns - self.start) as f64 * 100.0 / (self.end - self.start) as f64
    }
}

/// A round step (1, 2 or 5 times a power of ten, from 1 µs) that gives 4 to 10 ticks.
fn tick_step(span_ns: u64) -> u64 {
    let target = (span_ns / 10).max(1);
    let mut base: u64 = 1_000;
    loop {
        for m in [1, 2, 5] {
            let step = base.saturating_mul(m);
            if step >= target || step == u64::MAX {
                return step;
            }
        }
        base = base.saturating_mul(10);
    }
}

/// Decimals a tick label needs at this step.
fn tick_decimals(step_ns: u64) -> usize {
    match step_ns {
        s if s >= 1_000_000_000 => 0,
        s if s >= 100_000_000 => 1,
        s if s >= 10_000_000 => 2,
        s if s >= 1_000_000 => 3,
        s if s >= 100_000 => 4,
        s if s >= 10_000 => 5,
        _ => 6,
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn outcome_word(o: Option<PcOutcome>) -> &'static str {
    match o {
        Some(PcOutcome::Clean) => "clean",
        Some(PcOutcome::Leak) => "leak",
        Some(PcOutcome::Incomplete) => "incomplete",
        None => "none",
    }
}

fn subsystem_short(s: Subsystem) -> &'static str {
    match s {
        Subsystem::IceAgent => "ICE",
        Subsystem::Mdns => "mDNS",
        Subsystem::Dtls => "DTLS",
        Subsystem::Turn => "TURN",
        Subsystem::Sctp => "SCTP",
        Subsystem::Other => "app",
    }
}

fn kind_word(k: Option<LeakKind>) -> &'static str {
    k.map_or("unknown", LeakKind::word)
}

/// What the kind means, in a few words (for the tag next to a bar).
fn kind_short(k: Option<LeakKind>) -> &'static str {
    match k {
        Some(LeakKind::Active) => "still sending or receiving",
        Some(LeakKind::Awaited) => "parked on a read",
        Some(LeakKind::Held) => "only a reference keeps it",
        None => "I/O not watched",
    }
}

fn ended_word(e: PcEnd) -> &'static str {
    match e {
        PcEnd::Closed => "close() returned",
        PcEnd::DroppedWithoutClose => "dropped without close()",
    }
}

/// "0.0.0.0:5353", ":5353" or "unbound".
fn addr_text(addr: Option<std::net::IpAddr>, port: Option<u16>) -> String {
    match (addr, port) {
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (None, Some(p)) => format!(":{p}"),
        _ => "unbound".into(),
    }
}

/// The tail of a source path a reader recognizes: from the crate or package directory
/// before the last `/src/` (`webrtc-proxy/src/leaks.rs`,
/// `webrtc-0.21.1/src/peer_connection/driver.rs`), else its last three components.
fn short_path(file: &str) -> &str {
    if let Some(i) = file.rfind("/src/") {
        let start = file[..i].rfind('/').map_or(0, |j| j + 1);
        return &file[start..];
    }
    match file.rmatch_indices('/').nth(2) {
        Some((i, _)) => &file[i + 1..],
        None => file,
    }
}

/// A creating site in a table cell: its short file:line (the full path on hover) and
/// its function, with line-break opportunities at `/` and `::`.
fn site_cell(h: &mut String, site: &Site) -> fmt::Result {
    let full = site_text(site);
    let short = match (&site.file, site.line) {
        (Some(f), Some(l)) => format!("{}:{l}", short_path(f)),
        (Some(f), None) => short_path(f).to_owned(),
        _ => String::new(),
    };
    write!(
        h,
        "<span class=\"file\" title=\"{}\">{}</span><span class=\"fn\">{}</span>",
        Esc(&full),
        Breakable(&short),
        Breakable(&site.function)
    )
}

/// Escaped text with line-break opportunities (`<wbr>`) after each `/` and `::`.
struct Breakable<'a>(&'a str);

impl fmt::Display for Breakable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['/', ':']) {
            let sep = if rest[i..].starts_with("::") { 2 } else { 1 };
            if sep == 1 && rest.as_bytes()[i] == b':' {
                write!(f, "{}", Esc(&rest[..=i]))?;
            } else {
                write!(f, "{}<wbr>", Esc(&rest[..i + sep]))?;
            }
            rest = &rest[i + sep..];
        }
        write!(f, "{}", Esc(rest))
    }
}

fn site_text(site: &Site) -> String {
    match (&site.file, site.line) {
        (Some(f), Some(l)) => format!("{f}:{l}"),
        (Some(f), None) => f.clone(),
        _ => String::new(),
    }
}

/// "last: send (48) 20.0ms before the verdict by tid 7".
fn last_io_text(io: &IoEvidence) -> Option<String> {
    let op = io.last_op.as_deref()?;
    let result = match io.last_result {
        Some(-11) => " (would block)".to_owned(),
        Some(r) if r < 0 => format!(" (error {})", -r),
        Some(r) => format!(" ({r})"),
        None => String::new(),
    };
    let ago = io
        .last_ago_ns
        .map(|a| format!(" {} before the verdict", human_ns(a)))
        .unwrap_or_default();
    let tid = io
        .last_tid
        .map(|t| format!(" by tid {t}"))
        .unwrap_or_default();
    Some(format!("last: {op}{result}{ago}{tid}"))
}

/// The one-line "why" of a leak, and the evidence under it.
fn why(l: &Leak) -> (String, String) {
    let Some(kind) = l.kind else {
        return (
            "unknown: its sends and receives were not watched".into(),
            String::new(),
        );
    };
    let evidence = match &l.io {
        None => "no send or receive was ever seen on it".to_owned(),
        Some(io) => {
            let last = last_io_text(io)
                .map(|t| format!("; {t}"))
                .unwrap_or_default();
            format!(
                "{} sends, {} receives, {} reads that would block since the end{last}",
                io.sends_after_end, io.recvs_after_end, io.recvs_would_block_after_end
            )
        }
    };
    (kind.label().to_owned(), evidence)
}

/// "released 510.1ms after it was flagged, by tokio-rt-worker (pid 1 tid 2)".
fn late_text(late: &Late<'_>) -> String {
    let how = if late.by_exit {
        "closed by the process exit"
    } else {
        "released"
    };
    let by = late
        .released_by
        .map(|r| format!(", by {} (pid {} tid {})", r.comm, r.pid, r.tid))
        .unwrap_or_default();
    format!(
        "{how} {} after it was flagged{by}",
        human_ns(late.late_by_ns)
    )
}

/// Stack lines for a tooltip: at most [`TIP_FRAMES`] functions.
fn stack_tip(out: &mut String, title: &str, stack: &[Frame]) {
    if stack.is_empty() {
        return;
    }
    let _ = write!(out, "\n{title}:");
    let all: Vec<String> = stack
        .iter()
        .flat_map(Frame::functions)
        .map(|f| match (f.file, f.line) {
            (Some(file), Some(line)) => {
                format!("{} at {}:{line}", f.qualified(), short_path(file))
            }
            _ => f.qualified().into_owned(),
        })
        .collect();
    for line in all.iter().take(TIP_FRAMES) {
        let _ = write!(out, "\n  {line}");
    }
    if all.len() > TIP_FRAMES {
        let _ = write!(
            out,
            "\n  … {} more (the table of leaks has them all)",
            all.len() - TIP_FRAMES
        );
    }
}

fn page(h: &mut String, cx: &Cx<'_>, source: &str) -> fmt::Result {
    let s = &cx.report.summary;
    let (_, headline) = verdict_of(s);
    write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; \
         base-uri 'none'; form-action 'none'\">\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <meta name=\"generator\" content=\"sockscope {}\">\n\
         <title>sockscope: {}{}{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n",
        env!("CARGO_PKG_VERSION"),
        Esc(&headline),
        if source.is_empty() { "" } else { " — " },
        Esc(source),
    )?;
    banner(h, cx, source)?;
    h.push_str("<main>\n");
    timeline(h, cx)?;
    leak_table(h, cx)?;
    other_findings(h, cx)?;
    write!(
        h,
        "</main>\n<div id=\"pop\" role=\"tooltip\" hidden></div>\n<script>\n{JS}</script>\n</body>\n</html>\n"
    )
}

/// The banner's class and headline.
fn verdict_of(s: &Summary) -> (&'static str, String) {
    match s.outcome(false) {
        Outcome::Leaks => (
            "v-leak",
            format!(
                "{} in {}",
                plural(s.leaks, "leaked socket", "leaked sockets"),
                plural(s.leaking, "PeerConnection", "PeerConnections")
            ),
        ),
        Outcome::Inconclusive => {
            let mut why = Vec::new();
            if s.lost > 0 {
                why.push(format!("{} events lost", s.lost));
            }
            if s.incomplete > 0 {
                why.push(format!(
                    "{} not seen whole",
                    plural(s.incomplete, "PeerConnection", "PeerConnections")
                ));
            }
            ("v-inconclusive", format!("no verdict: {}", why.join(", ")))
        }
        Outcome::Clean if s.judged == 0 => (
            "v-inconclusive",
            "no leak found, but no PeerConnection was judged".into(),
        ),
        Outcome::Clean => (
            "v-clean",
            format!(
                "no leak: {} clean",
                plural(s.clean, "PeerConnection", "PeerConnections")
            ),
        ),
    }
}

fn banner(h: &mut String, cx: &Cx<'_>, source: &str) -> fmt::Result {
    let s = &cx.report.summary;
    let (class, headline) = verdict_of(s);
    write!(
        h,
        "<header class=\"banner {class}\" id=\"summary\">\n<h1><span class=\"verdict\">{}</span></h1>\n",
        Esc(&headline)
    )?;
    let command = if s.command.is_empty() {
        "(not recorded)".to_owned()
    } else {
        s.command.join(" ")
    };
    write!(
        h,
        "<p>command <code id=\"command\">{}</code>",
        Esc(&command)
    )?;
    if let Some(status) = &s.command_status {
        write!(
            h,
            " · <span id=\"command-status\">{}</span>",
            Esc(&format!("command {status}"))
        )?;
    }
    write!(h, " · grace {}", Esc(&human_ns(s.grace_ms * 1_000_000)))?;
    if !source.is_empty() {
        write!(h, " · report <code>{}</code>", Esc(source))?;
    }
    h.push_str("</p>\n");
    if s.unclosed_with_sockets > 0 {
        writeln!(
            h,
            "<p><b>{}</b> left open with sockets when its process exited \
             (a warning; a failure under <code>check --strict</code>).</p>",
            Esc(&plural(
                s.unclosed_with_sockets,
                "PeerConnection was",
                "PeerConnections were"
            ))
        )?;
    }
    let tiles: [(&str, &str, u64, &str); 11] = [
        (
            "peer_connections",
            "PeerConnections",
            s.peer_connections as u64,
            "",
        ),
        ("judged", "judged", s.judged as u64, ""),
        ("clean", "clean", s.clean as u64, ""),
        ("leaking", "leaking", s.leaking as u64, "bad"),
        ("incomplete", "incomplete", s.incomplete as u64, "warn"),
        ("leaks", "leaked sockets", s.leaks as u64, "bad"),
        ("never_closed", "never closed", s.never_closed as u64, ""),
        (
            "unclosed_with_sockets",
            "open at exit",
            s.unclosed_with_sockets as u64,
            "warn",
        ),
        (
            "possibly_leaked",
            "possibly leaked",
            s.possibly_leaked as u64,
            "warn",
        ),
        ("events", "events", s.events, ""),
        ("lost", "events lost", s.lost, "bad"),
    ];
    h.push_str("<dl class=\"counts\">\n");
    for (key, label, n, alarm) in tiles {
        let class = if n > 0 && !alarm.is_empty() {
            format!(" class=\"{alarm}\"")
        } else {
            String::new()
        };
        writeln!(
            h,
            "<div{class}><dt>{label}</dt><dd data-count=\"{key}\">{n}</dd></div>"
        )?;
    }
    h.push_str("</dl>\n</header>\n");
    Ok(())
}

fn legend(h: &mut String) {
    h.push_str(
        "<div class=\"legend\" id=\"legend\">\
         <span><i class=\"sw life o-clean\"></i>PeerConnection, open → close: clean</span>\
         <span><i class=\"sw life o-leak\"></i>leaking</span>\
         <span><i class=\"sw life o-incomplete\"></i>incomplete</span>\
         <span><i class=\"sw life o-none\"></i>never closed</span>\
         <span><i class=\"sw grace o-clean\"></i>grace after close, until the verdict</span>\
         <span><i class=\"sw sock\"></i>socket, created → released</span>\
         <span><i class=\"sw k-active\"></i>leak: active</span>\
         <span><i class=\"sw k-awaited\"></i>awaited</span>\
         <span><i class=\"sw k-held\"></i>held</span>\
         <span><i class=\"sw release\"></i>late release</span>\
         <span><i class=\"sw tickline\"></i>last send/receive</span>\
         <span><i class=\"sw vline\"></i>its PeerConnection ended</span>\
         <span><i class=\"sw vline judged\"></i>verdict</span>\
         <span>fading edge: before sockscope attached / still open at the end</span>\
         </div>\n",
    );
}

fn timeline(h: &mut String, cx: &Cx<'_>) -> fmt::Result {
    h.push_str("<section id=\"timeline\">\n");
    let Some(t) = &cx.report.timeline else {
        return untimed(h, cx);
    };
    let Some(scale) = &cx.scale else {
        return Ok(());
    };
    writeln!(
        h,
        "<h2>Timeline <span class=\"dim\">— {} over {}; seconds since tracing began; hover a bar for details</span></h2>",
        Esc(&plural(t.pcs.len(), "PeerConnection", "PeerConnections")),
        Esc(&human_ns(scale.end - scale.start)),
    )?;
    if t.pcs.is_empty() {
        write!(
            h,
            "<p class=\"notice\">No PeerConnection was seen ({} attached). \
             Does the program fire the tracer-usdt markers?</p>\n</section>\n",
            Esc(&plural(
                cx.report.summary.markers_attached,
                "marker",
                "markers"
            ))
        )?;
        return Ok(());
    }
    h.push_str(
        "<div class=\"controls\"><span>zoom \
         <button type=\"button\" data-zoom=\"1\" aria-pressed=\"true\">fit</button> \
         <button type=\"button\" data-zoom=\"4\" aria-pressed=\"false\">×4</button> \
         <button type=\"button\" data-zoom=\"16\" aria-pressed=\"false\">×16</button> \
         <button type=\"button\" data-zoom=\"64\" aria-pressed=\"false\">×64</button> \
         <button type=\"button\" data-zoom=\"256\" aria-pressed=\"false\">×256</button></span>\
         <label><input type=\"checkbox\" id=\"only-leaks\"> only PeerConnections with leaks</label></div>\n",
    );
    legend(h);
    let step_pct = scale.step as f64 * 100.0 / (scale.end - scale.start) as f64;
    write!(
        h,
        "<div class=\"tl-scroll\" id=\"tl-scroll\"><div class=\"tl\" id=\"tl\" data-span-ns=\"{}\" style=\"--step:{step_pct:.4}%\">\n\
         <div class=\"row axis\"><div class=\"lbl\">PeerConnection / socket</div><div class=\"trk\">",
        scale.end - scale.start
    )?;
    let decimals = tick_decimals(scale.step);
    let span = scale.end - scale.start;
    let ticks = span / scale.step;
    for k in 0..=ticks {
        let ns = k * scale.step;
        let class = if k == 0 {
            " first"
        } else if ns as f64 > span as f64 * 0.97 {
            " last"
        } else {
            ""
        };
        write!(
            h,
            "<span class=\"t{class}\" style=\"left:{:.4}%\">{:.decimals$} s</span>",
            ns as f64 * 100.0 / span as f64,
            ns as f64 / 1e9
        )?;
    }
    h.push_str("</div></div>\n");

    // Processes in the order they first opened a PeerConnection; in each, its
    // PeerConnections by open time.
    let mut by_pid: HashMap<u32, Vec<&PcSpan>> = HashMap::new();
    for pc in &t.pcs {
        by_pid.entry(pc.pid).or_default().push(pc);
    }
    let mut procs: Vec<(u32, Vec<&PcSpan>)> = by_pid.into_iter().collect();
    for (_, pcs) in &mut procs {
        pcs.sort_by_key(|p| (p.opened_ns.unwrap_or(0), p.pc_id));
    }
    procs.sort_by_key(|(pid, pcs)| (pcs.first().and_then(|p| p.opened_ns).unwrap_or(0), *pid));
    for (pid, pcs) in &procs {
        let leaking = pcs
            .iter()
            .filter(|p| p.outcome == Some(PcOutcome::Leak) || p.sockets.iter().any(|s| s.leaked))
            .count();
        process_row(h, cx, *pid, pcs.len(), leaking)?;
        for pc in pcs {
            pc_group(h, cx, scale, t, pc)?;
        }
        h.push_str("</div>\n");
    }
    h.push_str("</div></div>\n</section>\n");
    Ok(())
}

/// Opens a process group (closed by the caller) with its header row.
fn process_row(h: &mut String, cx: &Cx<'_>, pid: u32, pcs: usize, leaking: usize) -> fmt::Result {
    let comm = cx.comm(pid);
    write!(
        h,
        "<div class=\"proc-group{}\" data-pid=\"{pid}\">\n<div class=\"row proc-row\"><div class=\"lbl\">process {pid} <span class=\"dim\">{}</span></div><div class=\"trk\">{}{}</div></div>\n",
        if leaking > 0 { " has-leak" } else { "" },
        Esc(comm),
        Esc(&plural(pcs, "PeerConnection", "PeerConnections")),
        if leaking > 0 {
            format!(" · {leaking} leaking")
        } else {
            String::new()
        },
    )
}

/// Where a tag goes next to a bar from `a` to `b` percent: after it when there is room
/// (or more room than before it), else before it, or (a bar across nearly the whole
/// run) nowhere: the label column says it too.
fn tag_place(a: f64, b: f64) -> Option<(String, &'static str)> {
    let (after, before) = (100.0 - b, a);
    if after >= 30.0 || (after >= before && after >= 12.0) {
        Some((format!("left:{b:.4}%"), ""))
    } else if before >= 12.0 {
        Some((format!("left:{a:.4}%"), " end"))
    } else {
        None
    }
}

fn pc_tip(cx: &Cx<'_>, pc_id: u64, pid: u32, verdict: Option<&PcVerdict>) -> String {
    let comm = cx.comm(pid);
    let comm = if comm.is_empty() {
        String::new()
    } else {
        format!(" ({comm})")
    };
    let mut tip = format!("PeerConnection pc_id {pc_id} in pid {pid}{comm}");
    match verdict {
        Some(v) => {
            let _ = write!(tip, "\nverdict: {}", verdict_line(v));
        }
        None => tip.push_str("\nno verdict: never closed nor dropped"),
    }
    tip
}

/// "LEAK: 1 of 2 sockets still open after close" and the like.
fn verdict_line(v: &PcVerdict) -> String {
    match v.outcome {
        PcOutcome::Clean => format!(
            "clean: {} released in time",
            plural(v.sockets, "socket", "sockets")
        ),
        PcOutcome::Leak => format!(
            "LEAK: {} of {} still open {}",
            v.leaked,
            plural(v.sockets, "socket", "sockets"),
            v.ended.after()
        ),
        PcOutcome::Incomplete => {
            let why = v.reason.map_or("not seen whole", |r| r.label());
            let possibly = if v.possibly_leaked > 0 {
                format!(
                    "; {} possibly leaked",
                    plural(v.possibly_leaked, "socket", "sockets")
                )
            } else {
                String::new()
            };
            format!("incomplete: {why}{possibly}")
        }
    }
}

fn pc_group(h: &mut String, cx: &Cx<'_>, scale: &Scale, t: &Timeline, pc: &PcSpan) -> fmt::Result {
    let verdict = cx.verdicts.get(&(pc.pid, pc.pc_id)).copied();
    let outcome = pc.outcome.or(verdict.map(|v| v.outcome));
    let word = outcome_word(outcome);
    let has_leak = outcome == Some(PcOutcome::Leak) || pc.sockets.iter().any(|s| s.leaked);

    // The bar: open (or the start) → verdict (or the end of its grace, or the run's end).
    let open = pc.opened_ns.unwrap_or(scale.start);
    let life_end = pc.ended_ns.unwrap_or(scale.end);
    let grace_end = pc.ended_ns.map(|e| {
        pc.judged_ns
            .unwrap_or_else(|| e.saturating_add(t.grace_ns).min(scale.end))
    });
    let bar_end = grace_end.unwrap_or(life_end).max(life_end);
    let (a, b) = (scale.pct(open), scale.pct(bar_end));
    let width = (b - a).max(0.0);
    let within = |ns: u64| {
        if width <= 0.0 {
            0.0
        } else {
            ((scale.pct(ns) - a) / width * 100.0).clamp(0.0, 100.0)
        }
    };

    let mut tip = pc_tip(cx, pc.pc_id, pc.pid, verdict);
    let opened = match pc.opened_ns {
        Some(o) => format!("opened {}", cx.at(o)),
        None => "opened before sockscope attached".into(),
    };
    let ended = match pc.ended_ns {
        Some(e) => format!(" · {} {}", ended_word(pc.ended), cx.at(e)),
        None => " · never closed nor dropped".into(),
    };
    let judged = pc
        .judged_ns
        .map(|j| format!(" · judged {} (grace {})", cx.at(j), human_ns(t.grace_ns)))
        .unwrap_or_default();
    let _ = write!(tip, "\n{opened}{ended}{judged}");
    if let (Some(o), Some(e)) = (pc.opened_ns, pc.ended_ns) {
        let _ = write!(tip, "\nlived {}", human_ns(e.saturating_sub(o)));
    }
    let _ = write!(
        tip,
        "\n{} tied to it",
        plural(pc.sockets.len(), "socket", "sockets")
    );

    let mut classes = format!("pc-bar o-{word}");
    if pc.opened_ns.is_none() {
        classes.push_str(" pre");
    }
    if pc.ended_ns.is_none() {
        classes.push_str(" never");
    }
    write!(
        h,
        "<div class=\"pc-group{}\" id=\"pc-{}-{}\">\n<div class=\"row pc-row\"><div class=\"lbl\"><span class=\"chip o-{word}\">{}</span>pc_id {} <span class=\"dim\">· {}{}</span></div><div class=\"trk\">",
        if has_leak { " has-leak" } else { "" },
        pc.pid,
        pc.pc_id,
        match outcome {
            Some(PcOutcome::Clean) => "clean",
            Some(PcOutcome::Leak) => "leak",
            Some(PcOutcome::Incomplete) => "incomplete",
            None => "open",
        },
        pc.pc_id,
        Esc(&plural(pc.sockets.len(), "socket", "sockets")),
        if pc.ended == PcEnd::DroppedWithoutClose {
            " · dropped"
        } else {
            ""
        },
    )?;
    write!(
        h,
        "<div class=\"{classes}\" data-pid=\"{}\" data-pc-id=\"{}\" data-outcome=\"{word}\" style=\"left:{a:.4}%;width:{width:.4}%\" title=\"{}\">",
        pc.pid,
        pc.pc_id,
        Esc(&tip)
    )?;
    let life_w = within(life_end);
    write!(
        h,
        "<div class=\"life\" style=\"left:0;width:{life_w:.3}%\"></div>"
    )?;
    if let Some(g) = grace_end {
        let ga = within(life_end);
        let gw = (within(g) - ga).max(0.0);
        write!(
            h,
            "<div class=\"grace\" style=\"left:{ga:.3}%;width:{gw:.3}%\"></div>"
        )?;
    }
    h.push_str("</div>");
    let tag = match (outcome, verdict) {
        (Some(PcOutcome::Leak), Some(v)) => Some((
            "bad",
            format!(
                "LEAK · {} of {} still open{}",
                v.leaked,
                plural(v.sockets, "socket", "sockets"),
                if v.ended == PcEnd::DroppedWithoutClose {
                    " · dropped without close()"
                } else {
                    ""
                }
            ),
        )),
        (Some(PcOutcome::Leak), None) => Some(("bad", "LEAK".to_owned())),
        (Some(PcOutcome::Incomplete), v) => Some((
            "warn",
            format!(
                "incomplete: {}",
                v.and_then(|v| v.reason)
                    .map_or("not seen whole", |r| r.label())
            ),
        )),
        (None, _) => Some(("warn", "never closed nor dropped".to_owned())),
        (Some(PcOutcome::Clean), _) => None,
    };
    if let Some((class, text)) = tag
        && let Some((style, end)) = tag_place(a, b)
    {
        write!(
            h,
            "<span class=\"tag {class}{end}\" style=\"{style}\">{}</span>",
            Esc(&text)
        )?;
    }
    h.push_str("</div></div>\n");
    for s in &pc.sockets {
        socket_row(h, cx, scale, pc, s)?;
    }
    h.push_str("</div>\n");
    Ok(())
}

fn socket_row(
    h: &mut String,
    cx: &Cx<'_>,
    scale: &Scale,
    pc: &PcSpan,
    s: &SocketSpan,
) -> fmt::Result {
    let leak = cx.leaks.get(&(pc.pid, s.cookie)).copied();
    let late = cx.lates.get(&(pc.pid, s.cookie));
    let kind = leak.and_then(|l| l.kind);
    let port = s
        .local_port
        .map_or_else(|| "unbound".to_owned(), |p| format!(":{p}"));
    let sub = s.subsystem.map(subsystem_short).unwrap_or("?");

    // Tooltip: what it is, its life, why it leaked, where it was made.
    let mut tip = format!(
        "socket cookie {} · {} · {}\nattributed to pc_id {} {}",
        s.cookie,
        s.local_port
            .map_or_else(|| "unbound".to_owned(), |p| format!("port {p}")),
        s.subsystem
            .map_or("creator unknown (it predates sockscope)", Subsystem::label),
        pc.pc_id,
        s.confidence.label()
    );
    let created = match s.created_ns {
        Some(c) => format!("created {}", cx.at(c)),
        None => "created before sockscope attached".into(),
    };
    let released = match s.released_ns {
        Some(r) => format!(" · released {}", cx.at(r)),
        None => " · still open at the end of the run".into(),
    };
    let _ = write!(tip, "\n{created}{released}");
    if s.leaked {
        let (line, evidence) = leak.map(why).unwrap_or_default();
        if line.is_empty() {
            let _ = write!(tip, "\nLEAK ({})", kind_word(kind));
        } else {
            let _ = write!(tip, "\nLEAK, {line}");
        }
        if !evidence.is_empty() {
            let _ = write!(tip, "\n  {evidence}");
        }
        if let Some(l) = leak {
            let _ = write!(
                tip,
                "\nstill open {} {} when judged",
                human_ns(l.since_close_ns),
                l.ended.after()
            );
        }
        if let Some(late) = late {
            let _ = write!(tip, "\n{}", late_text(late));
        }
    }
    if let Some(l) = leak {
        if let (None, Some(pc)) = (&l.site, &l.pc_site) {
            let _ = write!(
                tip,
                "\ncreated by webrtc-rs for the PeerConnection made in {} at {}",
                pc.function,
                site_text(pc)
            );
        }
        if let Some(site) = &l.site {
            let _ = write!(tip, "\ncreated in {}", site.function);
            let at = site_text(site);
            if !at.is_empty() {
                let _ = write!(tip, " at {at}");
            }
        }
        stack_tip(&mut tip, "creating stack", &l.stack);
    }

    let leak_id = format!("leak-{}-{}", pc.pid, s.cookie);
    write!(
        h,
        "<div class=\"row sock-row\"><div class=\"lbl\">{} <span class=\"dim\">· {sub} · cookie {}</span>",
        Esc(&port),
        s.cookie
    )?;
    if s.leaked {
        let href = if leak.is_some() {
            format!(" href=\"#{leak_id}\"")
        } else {
            String::new()
        };
        write!(
            h,
            "<a class=\"kind\"{href}>{}</a>",
            if leak.is_some() {
                kind_word(kind)
            } else {
                "leak"
            }
        )?;
    }
    h.push_str("</div><div class=\"trk\">");

    // The PeerConnection's end and, for a leak, its verdict, as lines through the row.
    if let Some(e) = pc.ended_ns {
        write!(
            h,
            "<i class=\"vl\" style=\"left:{:.4}%\"></i>",
            scale.pct(e)
        )?;
    }
    let judged = leak
        .map(|l| l.judged_ns)
        .filter(|j| *j != 0)
        .or(pc.judged_ns);
    if s.leaked
        && let Some(j) = judged
    {
        write!(
            h,
            "<i class=\"vl judged\" style=\"left:{:.4}%\"></i>",
            scale.pct(j)
        )?;
    }

    let start = s.created_ns.unwrap_or(scale.start);
    let end = s
        .released_ns
        .or_else(|| late.map(|l| l.released_ns).filter(|r| *r != 0))
        .unwrap_or(scale.end);
    let (a, b) = (scale.pct(start), scale.pct(end.max(start)));
    let width = (b - a).max(0.0);
    let mut classes = "sock-bar".to_owned();
    if s.created_ns.is_none() {
        classes.push_str(" pre");
    }
    if s.released_ns.is_none() {
        classes.push_str(" open-end");
    }
    write!(
        h,
        "<div class=\"{classes}\" data-cookie=\"{}\" data-leaked=\"{}\" data-kind=\"{}\" style=\"left:{a:.4}%;width:{width:.4}%\" title=\"{}\">",
        s.cookie,
        s.leaked,
        if s.leaked { kind_word(kind) } else { "" },
        Esc(&tip)
    )?;
    if s.leaked {
        // Red from the verdict (or the whole bar, when its time is unknown).
        let from = judged.map_or(a, |j| scale.pct(j.clamp(start, end.max(start))));
        let lw = if width <= 0.0 {
            100.0
        } else {
            ((b - from) / width * 100.0).clamp(0.0, 100.0)
        };
        write!(
            h,
            "<div class=\"lk k-{}\" style=\"width:{lw:.3}%\"></div>",
            kind_word(kind)
        )?;
        if s.released_ns.is_some() {
            h.push_str("<div class=\"rel\"></div>");
        }
    }
    h.push_str("</div>");

    // The last send or receive, and the last one that succeeded, as ticks.
    if let Some(io) = leak.and_then(|l| l.io.as_ref()) {
        let ended = pc.ended_ns.unwrap_or(u64::MAX);
        let when = |ns: u64| {
            if ns >= ended {
                "after the PeerConnection ended"
            } else {
                "before the PeerConnection ended"
            }
        };
        let last = io.last_at_ns.filter(|n| *n != 0);
        if let Some(at) = last {
            let failed = io.last_result.is_some_and(|r| r < 0);
            let text = format!(
                "{} at {} ({})",
                last_io_text(io).unwrap_or_else(|| "last I/O".into()),
                cx.at(at),
                when(at)
            );
            write!(
                h,
                "<i class=\"tick{}\" style=\"left:{:.4}%\" title=\"{}\"></i>",
                if failed { " fail" } else { "" },
                scale.pct(at),
                Esc(&text)
            )?;
        }
        if let Some(ok) = io.last_ok_at_ns.filter(|n| *n != 0 && Some(*n) != last) {
            write!(
                h,
                "<i class=\"tick\" style=\"left:{:.4}%\" title=\"{}\"></i>",
                scale.pct(ok),
                Esc(&format!(
                    "last successful send or receive at {} ({})",
                    cx.at(ok),
                    when(ok)
                ))
            )?;
        }
    }
    if s.leaked
        && let Some((style, end_class)) = tag_place(a, b)
    {
        let after = match (late, s.released_ns) {
            (Some(l), _) => format!(
                " · {} {} late",
                if l.by_exit {
                    "closed by exit"
                } else {
                    "released"
                },
                human_ns(l.late_by_ns)
            ),
            (None, None) => " · still open at the end".into(),
            (None, Some(_)) => String::new(),
        };
        write!(
            h,
            "<span class=\"tag bad{end_class}\" style=\"{style}\">{}</span>",
            Esc(&format!("{}: {}{after}", kind_word(kind), kind_short(kind)))
        )?;
    }
    h.push_str("</div></div>\n");
    Ok(())
}

/// A report without a timeline (saved by an older sockscope): its PeerConnections and
/// leaks listed without times.
fn untimed(h: &mut String, cx: &Cx<'_>) -> fmt::Result {
    h.push_str(
        "<h2>PeerConnections</h2>\n<p class=\"notice\" id=\"no-timeline\">This report has no timeline: \
         it was saved by an older sockscope. Its PeerConnections are listed without times; \
         run <code>sockscope check --report</code> again for the picture.</p>\n",
    );
    h.push_str("<div class=\"tl-scroll\" id=\"tl-scroll\"><div class=\"tl\" id=\"tl\" style=\"--step:100%\">\n");
    let mut rows: Vec<(u32, u64, Option<&PcVerdict>)> = Vec::new();
    for f in &cx.report.findings {
        match f {
            Finding::Verdict(v) => rows.push((v.pid, v.pc_id, Some(v))),
            Finding::Unclosed(u) => rows.push((u.pid, u.pc_id, None)),
            _ => {}
        }
    }
    let mut leaks_of: HashMap<(u32, u64), Vec<&Leak>> = HashMap::new();
    for l in cx.leaks.values() {
        leaks_of.entry((l.pid, l.pc_id)).or_default().push(l);
    }
    let mut current: Option<u32> = None;
    rows.sort_by_key(|(pid, pc_id, _)| (*pid, *pc_id));
    for (i, (pid, pc_id, v)) in rows.iter().enumerate() {
        if current != Some(*pid) {
            if current.is_some() {
                h.push_str("</div>\n");
            }
            current = Some(*pid);
            let pcs = rows[i..].iter().take_while(|r| r.0 == *pid).count();
            let leaking = rows[i..]
                .iter()
                .take_while(|r| r.0 == *pid)
                .filter(|r| r.2.is_some_and(|v| v.outcome == PcOutcome::Leak))
                .count();
            process_row(h, cx, *pid, pcs, leaking)?;
        }
        let word = outcome_word(v.map(|v| v.outcome));
        let leaking = v.is_some_and(|v| v.outcome == PcOutcome::Leak);
        let mut tip = pc_tip(cx, *pc_id, *pid, *v);
        if let Some(life) = v.and_then(|v| v.life_ns) {
            let _ = write!(tip, "\nfrom open to verdict: {}", human_ns(life));
        }
        write!(
            h,
            "<div class=\"pc-group{}\" id=\"pc-{pid}-{pc_id}\">\n<div class=\"row pc-row\"><div class=\"lbl\"><span class=\"chip o-{word}\">{}</span>pc_id {pc_id}</div><div class=\"trk\">\
             <div class=\"pc-bar untimed o-{word}\" data-pid=\"{pid}\" data-pc-id=\"{pc_id}\" data-outcome=\"{word}\" title=\"{}\"><div class=\"life\" style=\"left:0;width:100%\"></div></div>\
             <span class=\"tag untimed{}\">{}</span></div></div>\n",
            if leaking { " has-leak" } else { "" },
            if v.is_some() { word } else { "open" },
            Esc(&tip),
            match v.map(|v| v.outcome) {
                Some(PcOutcome::Leak) => " bad",
                Some(PcOutcome::Clean) => "",
                _ => " warn",
            },
            Esc(&v.map_or_else(
                || "never closed nor dropped; open at its process's exit".to_owned(),
                |v| {
                    let life = v
                        .life_ns
                        .map(|l| format!(" · {} from open to verdict", human_ns(l)))
                        .unwrap_or_default();
                    format!("{}{life}", verdict_line(v))
                }
            )),
        )?;
        let mut leaks = leaks_of.remove(&(*pid, *pc_id)).unwrap_or_default();
        leaks.sort_by_key(|l| l.cookie);
        for l in leaks {
            let (line, _) = why(l);
            writeln!(
                h,
                "<div class=\"row sock-row\"><div class=\"lbl\">{} <span class=\"dim\">· {} · cookie {}</span><a class=\"kind\" href=\"#leak-{pid}-{}\">{}</a></div><div class=\"trk\">\
                 <div class=\"sock-bar untimed\" data-cookie=\"{}\" data-leaked=\"true\" data-kind=\"{}\" title=\"{}\"><div class=\"lk k-{}\" style=\"width:100%\"></div></div>\
                 <span class=\"tag untimed bad\">{}</span></div></div>",
                Esc(&addr_text(None, l.local_port)),
                subsystem_short(l.subsystem),
                l.cookie,
                l.cookie,
                kind_word(l.kind),
                l.cookie,
                kind_word(l.kind),
                Esc(&line),
                kind_word(l.kind),
                Esc(&format!(
                    "{line} · still open {} {} when judged",
                    human_ns(l.since_close_ns),
                    l.ended.after()
                )),
            )?;
        }
        h.push_str("</div>\n");
    }
    if current.is_some() {
        h.push_str("</div>\n");
    }
    h.push_str("</div></div>\n</section>\n");
    Ok(())
}

/// A stack as a list, innermost first; the application's own frame in bold.
fn stack_list(h: &mut String, site: Option<&Site>, stack: &[Frame]) -> fmt::Result {
    h.push_str("<ol class=\"stack\">");
    for f in stack {
        let inlined = f.inlined.len();
        for (i, func) in f.functions().enumerate() {
            let name = func.qualified();
            let app = site.is_some_and(|s| {
                s.function == name && s.file.as_deref() == func.file && s.line == func.line
            });
            write!(
                h,
                "<li{}>{}",
                if app { " class=\"app\"" } else { "" },
                Esc(&name)
            )?;
            if i < inlined {
                h.push_str(" <span class=\"inl\">(inlined)</span>");
            }
            if let Some(file) = func.file {
                let line = func.line.map(|l| format!(":{l}")).unwrap_or_default();
                write!(
                    h,
                    " <span class=\"at\" title=\"{}{line}\">at {}{line}</span>",
                    Esc(file),
                    Esc(short_path(file))
                )?;
            }
            h.push_str("</li>");
        }
    }
    h.push_str("</ol>");
    Ok(())
}

fn details_stack(h: &mut String, what: &str, site: Option<&Site>, stack: &[Frame]) -> fmt::Result {
    if stack.is_empty() {
        return Ok(());
    }
    let n: usize = stack.iter().map(|f| f.inlined.len() + 1).sum();
    write!(h, "<details><summary>{what} ({n})</summary>")?;
    stack_list(h, site, stack)?;
    h.push_str("</details>");
    Ok(())
}

fn leak_table(h: &mut String, cx: &Cx<'_>) -> fmt::Result {
    let leaks: Vec<&Leak> = cx
        .report
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::Leak(l) => Some(l),
            _ => None,
        })
        .collect();
    write!(
        h,
        "<section id=\"leaks\">\n<h2>Leaked sockets <span class=\"dim\">({})</span></h2>\n",
        leaks.len()
    )?;
    if leaks.is_empty() {
        h.push_str("<p class=\"empty\" id=\"no-leaks\">No socket outlived its PeerConnection.</p>\n</section>\n");
        return Ok(());
    }
    h.push_str(
        "<table id=\"leak-table\"><thead><tr><th>kind</th><th>pid</th><th>pc_id</th><th>socket</th>\
         <th>created by</th><th>why it is still open</th><th>creating site</th><th>afterwards</th><th>stacks</th></tr></thead>\n<tbody>\n",
    );
    for l in leaks {
        let kind = kind_word(l.kind);
        let (line, evidence) = why(l);
        write!(
            h,
            "<tr class=\"leak\" id=\"leak-{}-{}\" data-pid=\"{}\" data-pc-id=\"{}\" data-cookie=\"{}\" data-kind=\"{kind}\">",
            l.pid, l.cookie, l.pid, l.pc_id, l.cookie
        )?;
        write!(
            h,
            "<td><span class=\"kind\">{kind}</span></td><td class=\"num\">{}<br><span class=\"dim\">{}</span></td>\
             <td class=\"num\"><a href=\"#pc-{}-{}\">{}</a></td>",
            l.pid,
            Esc(&l.comm),
            l.pid,
            l.pc_id,
            l.pc_id
        )?;
        let fd = l.fd.map(|f| format!("fd {f} · ")).unwrap_or_default();
        write!(
            h,
            "<td class=\"mono nowrap\">{}<br><span class=\"dim\">{}cookie {}</span></td>",
            Esc(&addr_text(l.local_addr, l.local_port)),
            Esc(&fd),
            l.cookie
        )?;
        let creator = if l.origin == Origin::Preexisting {
            "unknown (it predates sockscope)"
        } else {
            l.subsystem.label()
        };
        write!(
            h,
            "<td>{}<br><span class=\"dim\">attributed {}</span></td>",
            Esc(creator),
            Esc(l.confidence.label())
        )?;
        write!(
            h,
            "<td class=\"why\">{}<br><span class=\"dim\">{}",
            Esc(&line),
            Esc(&evidence)
        )?;
        if !l.holders.is_empty() {
            let held: Vec<String> = l
                .holders
                .iter()
                .map(|x| format!("pid {} ({}) fd {}", x.pid, x.comm, x.fd))
                .collect();
            write!(h, "<br>held by {}", Esc(&held.join(", ")))?;
        }
        h.push_str("</span></td>");
        match (&l.site, &l.pc_site) {
            (Some(site), _) => {
                h.push_str("<td class=\"site mono\">");
                site_cell(h, site)?;
                h.push_str("</td>");
            }
            (None, Some(pc)) => {
                h.push_str("<td class=\"site mono\">by webrtc-rs for the PeerConnection made in ");
                site_cell(h, pc)?;
                h.push_str("</td>");
            }
            (None, None) => {
                h.push_str("<td class=\"site empty\">not in the application's code</td>")
            }
        }
        let after = match cx.lates.get(&(l.pid, l.cookie)) {
            Some(late) => late_text(late),
            None => "still open at the end of the run".into(),
        };
        write!(
            h,
            "<td>still open {} {} when judged<br><span class=\"dim\">{}</span></td><td>",
            Esc(&human_ns(l.since_close_ns)),
            Esc(l.ended.after()),
            Esc(&after)
        )?;
        details_stack(h, "creating stack", l.site.as_ref(), &l.stack)?;
        if let Some(io) = &l.io {
            details_stack(h, "last I/O stack", l.site.as_ref(), &io.last_stack)?;
        }
        if let Some(r) = cx.lates.get(&(l.pid, l.cookie)).and_then(|x| x.released_by) {
            details_stack(h, "releasing stack", l.site.as_ref(), &r.stack)?;
        }
        if l.stack.is_empty() {
            h.push_str("<span class=\"empty\">no creating stack</span>");
        }
        h.push_str("</td></tr>\n");
    }
    h.push_str("</tbody></table>\n</section>\n");
    Ok(())
}

fn open_socket_cells(h: &mut String, s: &OpenSocket) -> fmt::Result {
    let fd = s.fd.map(|f| format!("fd {f} · ")).unwrap_or_default();
    write!(
        h,
        "<td class=\"mono nowrap\">{}<br><span class=\"dim\">{}cookie {}</span></td><td>{}</td><td>{}</td><td class=\"site mono\">",
        Esc(&addr_text(s.local_addr, s.local_port)),
        Esc(&fd),
        s.cookie,
        Esc(s.subsystem.map_or("unknown", Subsystem::label)),
        Esc(&s
            .age_ns
            .map_or_else(|| "unknown (predates sockscope)".to_owned(), human_ns)),
    )?;
    if let Some(site) = &s.site {
        site_cell(h, site)?;
    }
    h.push_str("</td><td>");
    details_stack(h, "creating stack", s.site.as_ref(), &s.stack)?;
    h.push_str("</td>");
    Ok(())
}

/// PeerConnections left open at exit, and sockets possibly leaked by PeerConnections
/// not seen whole.
fn other_findings(h: &mut String, cx: &Cx<'_>) -> fmt::Result {
    let unclosed: Vec<&UnclosedPc> = cx
        .report
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::Unclosed(u) => Some(u),
            _ => None,
        })
        .collect();
    let possible: Vec<&PossibleLeak> = cx
        .report
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::PossibleLeak(p) => Some(p),
            _ => None,
        })
        .collect();
    if !unclosed.is_empty() {
        write!(
            h,
            "<section id=\"unclosed\">\n<h2>Open at exit <span class=\"dim\">— never closed nor dropped; \
             a warning, a failure under --strict ({})</span></h2>\n<table><thead><tr><th>pid</th><th>pc_id</th>\
             <th>socket</th><th>created by</th><th>age</th><th>creating site</th><th>stack</th></tr></thead>\n<tbody>\n",
            unclosed.len()
        )?;
        for u in unclosed {
            for s in &u.sockets {
                write!(
                    h,
                    "<tr class=\"unclosed\" data-pid=\"{}\" data-pc-id=\"{}\" data-cookie=\"{}\"><td class=\"num\">{}</td><td class=\"num\"><a href=\"#pc-{}-{}\">{}</a></td>",
                    u.pid, u.pc_id, s.cookie, u.pid, u.pid, u.pc_id, u.pc_id
                )?;
                open_socket_cells(h, s)?;
                h.push_str("</tr>\n");
            }
        }
        h.push_str("</tbody></table>\n</section>\n");
    }
    if !possible.is_empty() {
        write!(
            h,
            "<section id=\"possible\">\n<h2>Possibly leaked <span class=\"dim\">— open after a PeerConnection \
             sockscope did not see whole ended, and tied to no other ({})</span></h2>\n<table><thead><tr><th>pid</th>\
             <th>pc_id</th><th>socket</th><th>created by</th><th>age</th><th>creating site</th><th>stack</th></tr></thead>\n<tbody>\n",
            possible.len()
        )?;
        for p in possible {
            write!(
                h,
                "<tr class=\"possible-leak\" data-pid=\"{}\" data-pc-id=\"{}\" data-cookie=\"{}\"><td class=\"num\">{}</td><td class=\"num\"><a href=\"#pc-{}-{}\">{}</a></td>",
                p.pid, p.pc_id, p.socket.cookie, p.pid, p.pid, p.pc_id, p.pc_id
            )?;
            open_socket_cells(h, &p.socket)?;
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table>\n</section>\n");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::{Confidence, IncompleteReason};
    use crate::output::SCHEMA;

    const MS: u64 = 1_000_000;
    const START: u64 = 1_000_000 * MS;

    fn frame(symbol: &str, file: &str, line: u32) -> Frame {
        Frame {
            addr: 0x1000,
            symbol: Some(symbol.into()),
            inlined: Vec::new(),
            inlined_at: Vec::new(),
            module: None,
            file: Some(file.into()),
            line: Some(line),
        }
    }

    fn leak(pid: u32, pc_id: u64, cookie: u64, kind: Option<LeakKind>) -> Leak {
        Leak {
            pid,
            comm: "proxy".into(),
            tid: pid,
            cookie,
            fd: Some(7),
            local_addr: Some([127, 0, 0, 1].into()),
            local_port: Some(5353),
            pc_id,
            confidence: Confidence::CookieMarker,
            subsystem: Subsystem::Mdns,
            age_ns: Some(2_000 * MS),
            since_close_ns: 1_500 * MS,
            ended_ns: START + 1_000 * MS,
            judged_ns: START + 2_500 * MS,
            ended: PcEnd::Closed,
            origin: Origin::Traced,
            site: Some(Site {
                function: "app::start<&str>".into(),
                file: Some("src/main.rs".into()),
                line: Some(31),
            }),
            pc_site: None,
            holders: Vec::new(),
            epoll: Vec::new(),
            kind,
            io: None,
            stack: vec![
                frame("std::net::udp::UdpSocket::bind", "udp.rs", 1),
                frame("app::start<&str>", "src/main.rs", 31),
            ],
        }
    }

    fn verdict(pid: u32, pc_id: u64, outcome: PcOutcome) -> PcVerdict {
        PcVerdict {
            pid,
            pc_id,
            outcome,
            sockets: 2,
            leaked: usize::from(outcome == PcOutcome::Leak),
            ended: PcEnd::Closed,
            reason: (outcome == PcOutcome::Incomplete).then_some(IncompleteReason::EventsLost),
            possibly_leaked: 0,
            life_ns: Some(1_000 * MS),
        }
    }

    fn span(pid: u32, pc_id: u64, outcome: PcOutcome, sockets: Vec<SocketSpan>) -> PcSpan {
        PcSpan {
            pid,
            pc_id,
            opened_ns: Some(START + pc_id * 10 * MS),
            ended_ns: Some(START + 1_000 * MS),
            ended: PcEnd::Closed,
            judged_ns: Some(START + 2_500 * MS),
            outcome: Some(outcome),
            sockets,
        }
    }

    fn sock(cookie: u64, leaked: bool) -> SocketSpan {
        SocketSpan {
            cookie,
            local_port: Some(5353),
            subsystem: Some(Subsystem::Mdns),
            confidence: Confidence::CookieMarker,
            created_ns: Some(START + 20 * MS),
            released_ns: (!leaked).then_some(START + 900 * MS),
            leaked,
        }
    }

    fn report(pcs: usize, with_timeline: bool) -> SavedReport {
        let mut findings = Vec::new();
        let mut spans = Vec::new();
        for i in 0..pcs as u64 {
            let leaking = i % 3 == 0;
            let outcome = if leaking {
                PcOutcome::Leak
            } else {
                PcOutcome::Clean
            };
            if leaking {
                let mut l = leak(100, i + 1, 1_000 + i, Some(LeakKind::Held));
                if i % 2 == 0 {
                    l.kind = Some(LeakKind::Awaited);
                }
                findings.push(Finding::Leak(l));
            }
            findings.push(Finding::Verdict(verdict(100, i + 1, outcome)));
            spans.push(span(
                100,
                i + 1,
                outcome,
                vec![sock(1_000 + i, leaking), sock(50_000 + i, false)],
            ));
        }
        SavedReport {
            schema: SCHEMA,
            findings,
            summary: Summary {
                command: vec!["./proxy".into(), "--x".into()],
                command_status: Some("exited with status 0".into()),
                grace_ms: 1_500,
                peer_connections: pcs,
                judged: pcs,
                ..Summary::default()
            },
            timeline: with_timeline.then_some(Timeline {
                start_ns: START,
                end_ns: START + 4_000 * MS,
                grace_ns: 1_500 * MS,
                pcs: spans,
            }),
        }
    }

    #[test]
    fn escapes_everything_from_the_report() {
        assert_eq!(
            Esc("<&str as Fn<(T,)>>::call \"'").to_string(),
            "&lt;&amp;str as Fn&lt;(T,)&gt;&gt;::call &quot;&#39;"
        );
        assert_eq!(Esc("a\u{0}b\nc").to_string(), "a\u{FFFD}b\nc");
        let mut r = report(1, true);
        if let Some(Finding::Leak(l)) = r.findings.first_mut() {
            l.comm = "<script>alert(1)</script>".into();
            l.stack
                .push(frame("<alloc::Foo<T> as core::Bar>::baz", "<b>.rs", 1));
        }
        r.summary.command = vec!["sh".into(), "-c".into(), "a && b < c".into()];
        let page = render(&r, "r<1>.json");
        assert!(!page.contains("<script>alert"), "comm escaped");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;alloc::Foo&lt;T&gt; as core::Bar&gt;::baz"));
        assert!(page.contains("a &amp;&amp; b &lt; c"));
        assert!(page.contains("r&lt;1&gt;.json"));
        // Only our own script element, and nothing that loads anything.
        assert_eq!(page.matches("<script").count(), 1);
        for fetch in ["src=", "http://", "https://", "@import", "url("] {
            assert!(!page.contains(fetch), "{fetch} in the page");
        }
    }

    #[test]
    fn bars_rows_and_hooks() {
        let page = render(&report(5, true), "r.json");
        assert_eq!(page.matches("class=\"pc-bar ").count(), 5);
        assert_eq!(page.matches("data-outcome=\"leak\"").count(), 2);
        assert_eq!(page.matches("<tr class=\"leak\"").count(), 2);
        assert!(page.contains("data-cookie=\"1000\" data-kind=\"awaited\""));
        assert!(page.contains("data-cookie=\"1003\" data-kind=\"held\""));
        assert!(page.contains("data-count=\"leaks\""));
        // The axis: 4 s in steps of 0.5 s.
        assert!(page.contains(">3.5 s</span>"), "ticks");
        assert!(!page.contains("no-timeline"));
    }

    #[test]
    fn a_report_without_a_timeline_says_so_and_still_lists_its_peer_connections() {
        let page = render(&report(4, false), "old.json");
        assert!(page.contains("id=\"no-timeline\""));
        assert!(page.contains("saved by an older sockscope"));
        assert_eq!(page.matches("class=\"pc-bar untimed").count(), 4);
        assert_eq!(page.matches("<tr class=\"leak\"").count(), 2);
    }

    #[test]
    fn hundreds_of_peer_connections_render_quickly() {
        let r = report(600, true);
        let t = std::time::Instant::now();
        let page = render(&r, "big.json");
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(page.matches("class=\"pc-bar ").count(), 600);
        assert!(page.len() < 4 << 20, "{} bytes", page.len());
    }

    #[test]
    fn never_closed_and_preexisting_are_drawn_to_the_edges() {
        let mut r = report(1, true);
        if let Some(t) = &mut r.timeline {
            t.pcs[0].opened_ns = None;
            t.pcs[0].ended_ns = None;
            t.pcs[0].judged_ns = None;
            t.pcs[0].outcome = None;
        }
        r.findings.retain(|f| !matches!(f, Finding::Verdict(_)));
        let page = render(&r, "r.json");
        assert!(page.contains("class=\"pc-bar o-none pre never\""));
        assert!(page.contains("data-outcome=\"none\" style=\"left:0.0000%;width:100.0000%\""));
    }

    #[test]
    fn sites_are_short_and_breakable() {
        assert_eq!(
            short_path("/work/main/examples/webrtc-proxy/src/leaks.rs"),
            "webrtc-proxy/src/leaks.rs"
        );
        assert_eq!(short_path("/a/b/c/d.rs"), "b/c/d.rs");
        assert_eq!(short_path("main.rs"), "main.rs");
        assert_eq!(
            Breakable("<a::B as c::D>::f/x:1").to_string(),
            "&lt;a::<wbr>B as c::<wbr>D&gt;::<wbr>f/<wbr>x:1"
        );
    }

    #[test]
    fn absurd_times_do_not_panic() {
        for (start, end) in [(0, u64::MAX), (u64::MAX, u64::MAX), (5, 1), (u64::MAX, 0)] {
            let mut r = report(2, true);
            if let Some(t) = &mut r.timeline {
                t.start_ns = start;
                t.end_ns = end;
                t.grace_ns = u64::MAX;
            }
            assert_eq!(render(&r, "").matches("class=\"pc-bar ").count(), 2);
        }
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(4_000 * MS), 500 * MS);
        assert_eq!(tick_step(10_000 * MS), 1_000 * MS);
        assert_eq!(tick_step(7_460 * MS), 1_000 * MS);
        assert_eq!(tick_step(65 * MS), 10 * MS);
        assert_eq!(tick_step(1), 1_000);
        assert!(tick_step(u64::MAX) > 0);
        assert_eq!(tick_decimals(500 * MS), 1);
    }
}
