//! The daemon's numbers in the Prometheus text format (version 0.0.4), served on
//! `--metrics ADDR` at `/metrics`. Counters are kept as findings go by; gauges are read
//! from the session when the page is rebuilt (once a second), so a scrape never waits
//! on the tracer.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use crate::correlate::{Finding, PcOutcome};

/// What only grows.
#[derive(Debug, Default)]
pub struct Counters {
    verdicts: BTreeMap<&'static str, u64>,
    /// By (subsystem, kind).
    leaks: BTreeMap<(String, String), u64>,
    late: u64,
    possible_leaks: u64,
    unclosed: u64,
}

impl Counters {
    /// PeerConnections judged so far.
    pub fn judged(&self) -> u64 {
        self.verdicts.values().sum()
    }

    pub fn count(&mut self, f: &Finding) {
        match f {
            Finding::Verdict(v) => {
                let outcome = match v.outcome {
                    PcOutcome::Clean => "clean",
                    PcOutcome::Leak => "leak",
                    PcOutcome::Incomplete => "incomplete",
                };
                *self.verdicts.entry(outcome).or_default() += 1;
            }
            Finding::Leak(l) => {
                let subsystem = serde_json::to_value(l.subsystem)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let kind = l.kind.map_or("unknown", |k| k.word()).to_owned();
                *self.leaks.entry((subsystem, kind)).or_default() += 1;
            }
            Finding::Late { .. } => self.late += 1,
            Finding::PossibleLeak(_) => self.possible_leaks += 1,
            Finding::Unclosed(_) => self.unclosed += 1,
        }
    }
}

/// One marked process's line in the gauges.
#[derive(Debug, Clone)]
pub struct ProcessGauge {
    pub pid: u32,
    pub comm: String,
    pub container_id: Option<String>,
    pub open_udp_sockets: usize,
}

/// What is true now.
#[derive(Debug, Default)]
pub struct Gauges {
    pub processes: Vec<ProcessGauge>,
    pub pcs_open: usize,
    pub pcs_closing: usize,
    pub leaked_open: usize,
    pub tracked_sockets: usize,
    pub tracked_pcs: usize,
    /// Markers attached now, and released so far (programs no process runs any more).
    pub markers_attached: usize,
    pub markers_released: usize,
    /// Processes that had exited when the daemon first looked at them.
    pub gone_before_found: u64,
    pub events: u64,
    pub lost: u64,
    pub capped: u64,
    /// Per program: (run time, runs), when the kernel's BPF statistics are on.
    pub bpf: Vec<(String, Duration, u64)>,
    pub rss_bytes: u64,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The page for a scrape.
pub fn render(c: &Counters, g: &Gauges) -> String {
    let mut o = String::new();
    family(
        &mut o,
        "sockscope_marked_processes",
        "gauge",
        "Processes carrying sockscope markers that are being judged.",
    );
    let _ = writeln!(o, "sockscope_marked_processes {}", g.processes.len());
    family(
        &mut o,
        "sockscope_udp_sockets_open",
        "gauge",
        "Open UDP sockets of each marked process, as traced.",
    );
    for p in &g.processes {
        let _ = writeln!(
            o,
            "sockscope_udp_sockets_open{{pid=\"{}\",comm=\"{}\",container_id=\"{}\"}} {}",
            p.pid,
            escape(&p.comm),
            escape(p.container_id.as_deref().unwrap_or("")),
            p.open_udp_sockets
        );
    }
    family(
        &mut o,
        "sockscope_peer_connections",
        "gauge",
        "PeerConnections alive (open) and ended but within their grace (closing).",
    );
    let _ = writeln!(
        o,
        "sockscope_peer_connections{{state=\"open\"}} {}",
        g.pcs_open
    );
    let _ = writeln!(
        o,
        "sockscope_peer_connections{{state=\"closing\"}} {}",
        g.pcs_closing
    );
    family(
        &mut o,
        "sockscope_peer_connections_judged_total",
        "counter",
        "PeerConnections judged, by outcome.",
    );
    for outcome in ["clean", "leak", "incomplete"] {
        let n = c.verdicts.get(outcome).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "sockscope_peer_connections_judged_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    family(
        &mut o,
        "sockscope_leaks_total",
        "counter",
        "Sockets found still open after their PeerConnection's grace, by subsystem and kind.",
    );
    for ((subsystem, kind), n) in &c.leaks {
        let _ = writeln!(
            o,
            "sockscope_leaks_total{{subsystem=\"{}\",kind=\"{}\"}} {n}",
            escape(subsystem),
            escape(kind)
        );
    }
    for (name, help, v) in [
        (
            "sockscope_leaked_sockets_open",
            "Leaked sockets still open.",
            g.leaked_open as u64,
        ),
        (
            "sockscope_tracked_sockets",
            "Sockets held in the daemon's memory.",
            g.tracked_sockets as u64,
        ),
        (
            "sockscope_tracked_peer_connections",
            "PeerConnections held in the daemon's memory.",
            g.tracked_pcs as u64,
        ),
        (
            "sockscope_resident_memory_bytes",
            "The daemon's resident memory.",
            g.rss_bytes,
        ),
        (
            "sockscope_markers_attached",
            "USDT markers attached now (each a uprobe on a marked program).",
            g.markers_attached as u64,
        ),
    ] {
        family(&mut o, name, "gauge", help);
        let _ = writeln!(o, "{name} {v}");
    }
    for (name, help, v) in [
        (
            "sockscope_markers_released_total",
            "USDT markers detached because no process had mapped their program for a while.",
            g.markers_released as u64,
        ),
        (
            "sockscope_processes_gone_before_found_total",
            "Processes that had exited before the daemon got to their first records (it fell behind): judged only if their program is known to carry markers, their findings without container context.",
            g.gone_before_found,
        ),
        (
            "sockscope_late_releases_total",
            "Leaked sockets released after all.",
            c.late,
        ),
        (
            "sockscope_possible_leaks_total",
            "Sockets listed as possibly leaked by PeerConnections not seen whole.",
            c.possible_leaks,
        ),
        (
            "sockscope_unclosed_total",
            "PeerConnections whose process exited with them open and holding sockets.",
            c.unclosed,
        ),
        ("sockscope_events_total", "Kernel records read.", g.events),
        (
            "sockscope_events_lost_total",
            "Kernel records lost (ring buffer full): verdicts meanwhile are incomplete.",
            g.lost,
        ),
        (
            "sockscope_sockets_untracked_total",
            "Sockets not tracked because the daemon's cap (--max-sockets) was reached.",
            g.capped,
        ),
    ] {
        family(&mut o, name, "counter", help);
        let _ = writeln!(o, "{name} {v}");
    }
    family(
        &mut o,
        "sockscope_bpf_run_seconds_total",
        "counter",
        "Time the kernel spent in each sockscope BPF program (0 unless kernel.bpf_stats_enabled or --bpf-stats).",
    );
    for (prog, t, _) in &g.bpf {
        let _ = writeln!(
            o,
            "sockscope_bpf_run_seconds_total{{program=\"{}\"}} {}",
            escape(prog),
            t.as_secs_f64()
        );
    }
    family(
        &mut o,
        "sockscope_bpf_runs_total",
        "counter",
        "Runs of each sockscope BPF program (0 unless BPF statistics are on).",
    );
    for (prog, _, n) in &g.bpf {
        let _ = writeln!(
            o,
            "sockscope_bpf_runs_total{{program=\"{}\"}} {n}",
            escape(prog)
        );
    }
    o
}

/// Serves the latest page on `addr` until the runtime ends. Bound before returning,
/// so a bad address is an error at start-up.
pub async fn serve(addr: SocketAddr, page: Arc<Mutex<String>>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let page = page.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut got = 0;
                // The request line is all we need; a slow or silent client is dropped.
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while got < buf.len() {
                        let n = conn.read(&mut buf[got..]).await?;
                        if n == 0 {
                            break;
                        }
                        got += n;
                        if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    Ok::<_, std::io::Error>(())
                })
                .await;
                if !matches!(read, Ok(Ok(()))) {
                    return;
                }
                let request = String::from_utf8_lossy(&buf[..got]);
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let response = if request.starts_with("GET ") && (path == "/metrics" || path == "/")
                {
                    let body = page.lock().map(|p| p.clone()).unwrap_or_default();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .into()
                };
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok(())
}
