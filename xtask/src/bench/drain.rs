//! How fast the reader follows records when the workload is not competing with it for
//! the CPU: a churn is recorded into a large ring while `sockscope trace` is stopped
//! (SIGSTOP), then sockscope is continued and times how long it takes to read and
//! format everything. The loss figure is bounded by what the traced workload can offer
//! on this machine's two cores; this one is the reader's own ceiling.
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::{
    Plan,
    procs::{Tracer, Waiting},
    rounds::rate,
    schema::Figure,
    sockscope::{Bins, TRACE_READY, trace_summary},
    stats::spread,
};

/// Large enough for every record of the churn below (about 60 bytes each).
const RING_BYTES: u32 = 128 << 20;
/// The output is complete when it has not grown for this long.
const SETTLED: Duration = Duration::from_millis(500);
const GIVE_UP: Duration = Duration::from_secs(120);

struct Drain {
    events: u64,
    seconds: f64,
    lost: u64,
    offered_events_per_s: f64,
}

fn signal(pid: u32, sig: i32) -> anyhow::Result<()> {
    // SAFETY: signalling our own child by pid.
    if unsafe { libc::kill(pid as i32, sig) } != 0 {
        bail!(
            "cannot signal sockscope ({pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// When `path` stopped growing (it is complete once it has not grown for [`SETTLED`]).
fn settled(path: &std::path::Path, since: Instant) -> anyhow::Result<Instant> {
    let mut size = 0;
    let mut grew = since;
    loop {
        let now = Instant::now();
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        if len != size {
            size = len;
            grew = now;
        } else if now.duration_since(grew) >= SETTLED {
            return Ok(grew);
        }
        if now.duration_since(since) > GIVE_UP {
            bail!(
                "sockscope was still writing {} after {GIVE_UP:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn once(bins: &Bins, plan: &Plan, out: &std::path::Path) -> anyhow::Result<Drain> {
    let _ = std::fs::remove_file(out);
    let mut cmd = bins.cmd("udp_churn");
    cmd.args(["--threads", &plan.threads.to_string()])
        .args(["--count", &(plan.churn_per_thread / 2).max(1).to_string()])
        .arg("--wait");
    let mut w = Waiting::spawn(cmd)?;
    let mut trace = bins.cmd("sockscope");
    trace
        .args(["trace", "--pid", &w.pid.to_string(), "--format", "json"])
        .args(["--ring-bytes", &RING_BYTES.to_string()])
        .arg("--output")
        .arg(out);
    let mut t = Tracer::start(trace, TRACE_READY, super::procs::keep_none)?;
    signal(t.pid(), libc::SIGSTOP)?;
    w.go()?;
    let result = w.finish();
    let continued = Instant::now();
    signal(t.pid(), libc::SIGCONT)?;
    let result = result?;
    let done = settled(out, continued);
    let stopped = t.stop()?;
    let done = done?;
    let summary = trace_summary(&stopped)?;
    let lines = std::fs::read(out)
        .with_context(|| format!("read {}", out.display()))?
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;
    let _ = std::fs::remove_file(out);
    Ok(Drain {
        events: lines,
        seconds: done.duration_since(continued).as_secs_f64(),
        lost: summary.lost,
        offered_events_per_s: rate(&result, "sockets")? * super::loss::EVENTS_PER_SOCKET,
    })
}

pub fn run(bins: &Bins, plan: &Plan) -> anyhow::Result<Figure> {
    println!("bench: reader drain rate (records read and formatted from a full ring)");
    let mut f = Figure::new(
        "reader_drain_events_per_s",
        "Reader's own ceiling: records read and formatted per second from a ring filled while it was stopped (sockscope trace -f json to a file)",
        "events/s",
    );
    let out =
        std::env::temp_dir().join(format!("sockscope-bench-drain-{}.json", std::process::id()));
    let mut rates = Vec::new();
    for i in 0..plan.reps.min(3) {
        let d = once(bins, plan, &out)?;
        f.detail(&format!("round.{i}.events"), d.events as f64);
        f.detail(&format!("round.{i}.seconds"), d.seconds);
        f.detail(&format!("round.{i}.lost"), d.lost as f64);
        f.detail(
            &format!("round.{i}.offered_events_per_s"),
            d.offered_events_per_s,
        );
        if d.lost != 0 {
            f.notes.push(format!(
                "round {i} lost {} records (a ring of {} MiB was too small): left out",
                d.lost,
                RING_BYTES >> 20
            ));
            continue;
        }
        if d.seconds > 0.0 {
            rates.push(d.events as f64 / d.seconds);
        }
    }
    f.value = spread(&rates);
    f.notes.push(format!(
        "the churn ran while sockscope was stopped, its records kept in a {} MiB ring; the time is from SIGCONT to the output's last growth (polled every 2 ms, so the sum of formatting and writing JSON lines to a file)",
        RING_BYTES >> 20
    ));
    Ok(f)
}
