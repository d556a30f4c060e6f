//! Driving sockscope itself, and what the kernel says about its programs and maps.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;

use super::procs::{Stopped, Tracer, keep_none};

/// The release binaries the benchmarks run.
pub struct Bins {
    dir: PathBuf,
}

impl Bins {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn cmd(&self, name: &str) -> Command {
        Command::new(self.path(name))
    }
}

pub const TRACE_READY: &str = "sockscope: tracing UDP sockets";
pub const WATCH_READY: &str = "sockscope: watching pid";

/// `sockscope trace --pid P` with everything formatted as JSON and thrown away: the
/// full per-event cost of a trace without the disk.
pub fn start_trace(bins: &Bins, pid: u32, extra: &[&str]) -> anyhow::Result<Tracer> {
    let mut cmd = bins.cmd("sockscope");
    cmd.args(["trace", "--pid", &pid.to_string(), "--format", "json"])
        .args(["--output", "/dev/null"])
        .args(extra);
    Tracer::start(cmd, TRACE_READY, keep_none)
}

/// `sockscope watch --pid P`: leak verdicts, nothing printed per socket.
pub fn start_watch(bins: &Bins, pid: u32) -> anyhow::Result<Tracer> {
    start_watch_with(bins, pid, &[], keep_none)
}

/// `sockscope watch --pid P EXTRA`, keeping the stdout lines `keep` wants.
pub fn start_watch_with(
    bins: &Bins,
    pid: u32,
    extra: &[&str],
    keep: fn(&str) -> bool,
) -> anyhow::Result<Tracer> {
    let mut cmd = bins.cmd("sockscope");
    cmd.args(["watch", "--pid", &pid.to_string(), "--format", "json"])
        .args(extra);
    Tracer::start(cmd, WATCH_READY, keep)
}

/// The summary `sockscope trace -o F` prints on stderr.
#[derive(Debug, Default, Clone, Copy)]
pub struct TraceSummary {
    pub events: u64,
    pub lost: u64,
    pub open: u64,
}

pub fn trace_summary(out: &Stopped) -> anyhow::Result<TraceSummary> {
    out.stderr
        .iter()
        .find_map(|l| parse_summary(&l.text))
        .with_context(|| format!("sockscope printed no summary: {}", out.stderr_text()))
}

/// "sockscope: 3 events, 0 lost, 1 UDP sockets still open"
fn parse_summary(line: &str) -> Option<TraceSummary> {
    let rest = line.strip_prefix("sockscope: ")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words.as_slice() {
        [events, "events,", lost, "lost,", open, "UDP", ..] => Some(TraceSummary {
            events: events.parse().ok()?,
            lost: lost.parse().ok()?,
            open: open.parse().ok()?,
        }),
        _ => None,
    }
}

/// Run time the kernel accounted to each sockscope program (needs BPF stats on).
#[derive(Debug, Clone)]
pub struct ProgTime {
    pub name: String,
    pub run_time: Duration,
    pub runs: u64,
}

/// Every loaded program of the process `pid` (those it holds an fd of, or a link to)
/// whose name starts with `sockscope` (names are cut at 15 bytes by the kernel): other
/// sockscope processes on the host (a test run meanwhile) are left out.
pub fn prog_times(pid: u32) -> Vec<ProgTime> {
    let ids = prog_ids(pid);
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| ids.contains(&p.id()))
        .filter_map(|p| {
            let name = p.name_as_str()?.to_owned();
            name.starts_with("sockscope").then(|| ProgTime {
                name,
                run_time: p.run_time(),
                runs: p.run_count(),
            })
        })
        .collect()
}

/// How many sockscope programs are loaded on the host, called while no tracer of the
/// bench runs (before a round, or once its tracer stopped): all of them belong to
/// someone else, another sockscope (a test, a daemon) whose hooks, the I/O ones
/// included, run for every process, the untraced side too. The kernel frees a stopped
/// tracer's programs asynchronously: those of the previous round get half a second to
/// go.
pub fn loaded_sockscope_programs() -> usize {
    let count = || {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("sockscope")))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    loop {
        let n = count();
        if n == 0 || std::time::Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ids of the BPF programs whose fd (or whose link's fd) `pid` holds, from
/// /proc/PID/fdinfo; empty when it cannot be read.
fn prog_ids(pid: u32) -> std::collections::HashSet<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Default::default();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// Keeps the kernel's BPF run-time statistics on while alive (they cost two clock
/// reads per program run, so only profiling rounds use them).
pub struct BpfStats(#[allow(dead_code)] std::os::fd::OwnedFd);

impl BpfStats {
    pub fn enable() -> anyhow::Result<Self> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("cannot enable BPF run-time statistics")?;
        Ok(Self(fd))
    }
}

/// A BPF map a process holds: its name, entries and locked memory (from
/// /proc/PID/fdinfo, what the kernel charges for it).
#[derive(Debug, Clone)]
pub struct MapMemory {
    pub name: String,
    pub max_entries: u64,
    pub memlock: u64,
}

pub fn map_memory(pid: u32) -> anyhow::Result<Vec<MapMemory>> {
    let mut maps = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |key: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
        };
        let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let name = u32::try_from(id)
            .ok()
            .and_then(|id| aya::maps::MapInfo::from_id(id).ok())
            .and_then(|m| m.name_as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("map{id}"));
        maps.push(MapMemory {
            name,
            max_entries: field("max_entries:").unwrap_or(0),
            memlock,
        });
    }
    Ok(maps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_parses() {
        let s =
            parse_summary("sockscope: 300003 events, 12 lost, 1 UDP sockets still open").unwrap();
        assert_eq!((s.events, s.lost, s.open), (300003, 12, 1));
        assert!(parse_summary("sockscope: tracing UDP sockets of pid 1").is_none());
        assert!(parse_summary("sockscope: x events, 0 lost, 1 UDP").is_none());
    }
}
