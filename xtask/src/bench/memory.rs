//! Memory: sockscope's resident memory per tracked live socket (trace and watch,
//! 10k and 100k sockets held open by one process), and the BPF maps' locked memory.
use std::time::{Duration, Instant};

use super::{
    Plan,
    procs::{Tracer, Waiting, keep_none},
    schema::Figure,
    sockscope::{Bins, TRACE_READY, map_memory, start_watch, trace_summary},
    stats::spread,
};

const GOAL_BYTES_PER_SOCKET: f64 = 256.0;

const DAEMON_READY: &str = "sockscope: daemon judging";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Trace,
    Watch,
    /// The host-wide daemon; the holders carry markers so that it judges them.
    Daemon,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Trace => "trace",
            Mode::Watch => "watch",
            Mode::Daemon => "daemon",
        }
    }

    /// Trace follows every holder by comm; watch follows one process.
    fn start(self, bins: &Bins, holders: &[&Waiting]) -> anyhow::Result<Tracer> {
        match (self, holders) {
            (Mode::Watch, [one]) => start_watch(bins, one.pid),
            (Mode::Watch, _) => anyhow::bail!("watch follows one process"),
            (Mode::Daemon, _) => {
                let mut cmd = bins.cmd("sockscope");
                cmd.args(["daemon", "--output", "/dev/null"]);
                Tracer::start(cmd, DAEMON_READY, keep_none)
            }
            (Mode::Trace, _) => {
                let mut cmd = bins.cmd("sockscope");
                cmd.args(["trace", "--comm", "udp_hold", "--format", "json"])
                    .args(["--output", "/dev/null"]);
                Tracer::start(cmd, TRACE_READY, keep_none)
            }
        }
    }
}

/// linux/capability.h
const CAP_SYS_RESOURCE: u32 = 24;

/// Sockets one process may hold: the hard RLIMIT_NOFILE (raising it needs
/// CAP_SYS_RESOURCE, which root in a container may lack), less some room.
fn per_process_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit out-pointer.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    let can_raise = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0);
    if can_raise || !ok {
        u64::MAX
    } else {
        lim.rlim_max.saturating_sub(256).max(1)
    }
}

/// RSS once it stopped moving (the tracer has caught up with the events).
fn settled_rss(t: &Tracer) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = t.rss_bytes()?;
    let mut same = 0;
    while same < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = t.rss_bytes()?;
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    Ok(last)
}

struct Held {
    /// Marginal: RSS growth over the second half of the sockets.
    bytes_per_socket: f64,
    /// Including one-time costs.
    first_half_bytes_per_socket: f64,
    processes: u64,
    tracked: Option<u64>,
    map_bytes: Vec<(String, u64, u64)>,
}

fn hold(bins: &Bins, plan: &Plan, mode: Mode, count: u64) -> anyhow::Result<Held> {
    let per_process = per_process_limit();
    let processes = count.div_ceil(per_process.min(count));
    let mut holders = Vec::new();
    for i in 0..processes {
        let n = count / processes + u64::from(i < count % processes);
        let mut cmd = bins.cmd("udp_hold");
        cmd.args(["--count", &n.to_string(), "--steps", "2"])
            .args(["--pc-open", "1"])
            .args(["--rate", &(plan.hold_rate / processes).to_string()]);
        holders.push((Waiting::spawn(cmd)?, n));
    }
    let mut t = mode.start(bins, &holders.iter().map(|(w, _)| w).collect::<Vec<_>>())?;
    // Two equal steps: the first pays the one-time costs (symbolizer caches, the
    // first table allocations), the second is what each further socket costs.
    let mut rss = vec![settled_rss(&t)?];
    for step in 1..=2u64 {
        for (w, n) in holders.iter_mut() {
            w.go()?;
            let opened = w.next_json()?;
            let want = *n * step / 2;
            anyhow::ensure!(
                opened["open"].as_u64() == Some(want),
                "udp_hold opened {opened} instead of {want} sockets"
            );
        }
        rss.push(settled_rss(&t)?);
    }
    let map_bytes = map_memory(t.pid())?
        .into_iter()
        .map(|m| (m.name, m.max_entries, m.memlock))
        .collect();
    let out = t.stop()?;
    for (w, _) in holders {
        w.finish()?;
    }
    let tracked = match mode {
        Mode::Trace => Some(trace_summary(&out)?.open),
        Mode::Watch | Mode::Daemon => None,
    };
    let half = count as f64 / 2.0;
    Ok(Held {
        bytes_per_socket: rss[2].saturating_sub(rss[1]) as f64 / half,
        first_half_bytes_per_socket: rss[1].saturating_sub(rss[0]) as f64 / half,
        tracked,
        processes,
        map_bytes,
    })
}

pub fn run(bins: &Bins, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let mut maps = None;
    for mode in [Mode::Watch, Mode::Daemon, Mode::Trace] {
        for &count in &plan.hold_counts {
            println!(
                "bench: memory of sockscope {} with {count} live sockets",
                mode.name()
            );
            let mut f = Figure::new(
                &format!("memory_{}_{}k", mode.name(), count / 1000),
                &format!(
                    "sockscope {} RSS per tracked live socket, {count} sockets",
                    mode.name()
                ),
                "bytes/socket (second half)",
            )
            .goal(GOAL_BYTES_PER_SOCKET);
            if mode == Mode::Watch && count > per_process_limit() {
                f.notes.push(format!(
                    "not measured: watch follows one process, and one process may hold only {} \
                     sockets here (RLIMIT_NOFILE hard limit, no CAP_SYS_RESOURCE)",
                    per_process_limit()
                ));
                figures.push(f);
                continue;
            }
            let h = hold(bins, plan, mode, count)?;
            f.value = spread(&[h.bytes_per_socket]);
            f.detail("holder_processes", h.processes as f64);
            f.detail("first_half_bytes_per_socket", h.first_half_bytes_per_socket);
            if let Some(n) = h.tracked {
                f.detail("sockets_tracked", n as f64);
                if n < count {
                    f.notes
                        .push(format!("only {n} of {count} sockets were tracked"));
                }
            }
            figures.push(f);
            maps.get_or_insert(h.map_bytes);
        }
    }
    let mut f = Figure::new(
        "bpf_maps_memory",
        "BPF maps' locked memory (kernel, fixed at load)",
        "bytes",
    );
    if let Some(maps) = maps {
        let total: u64 = maps.iter().map(|m| m.2).sum();
        f.value = spread(&[total as f64]);
        for (name, entries, bytes) in maps {
            f.detail(&format!("map.{name}.bytes"), bytes as f64);
            f.detail(&format!("map.{name}.max_entries"), entries as f64);
        }
    } else {
        f.notes.push("no hold round ran".into());
    }
    figures.push(f);
    Ok(figures)
}
