//! UDP echo over loopback without socket churn (each round trip: two sends, two
//! receives), untraced vs
//! - `sockscope trace`, which attaches no hook on the send/receive path: the spread of
//!   its ratio is the noise the others are compared with;
//! - `sockscope watch`, whose I/O hooks (tracepoints on the send and receive syscalls,
//!   as under `check`) see every call, with the echo's sockets in each place they can
//!   be: not watched (made before the attach and tied to no PeerConnection: one failed
//!   lookup per call); watched from their creation (made after the attach, as every
//!   socket of a program under `check`: each call counted); sockets of a PeerConnection
//!   that ended (each call counted with its user stack: a leak still in use, the worst
//!   case).
//!
//! Each figure also gives the echo's CPU time added per call, pair by pair. Then one
//! profiling round per `watch` variant with BPF run-time statistics: the I/O programs'
//! time per call. Rotations during which another sockscope (a test, a daemon) had
//! programs loaded are left out: its hooks would run on the untraced side too.
use std::time::Duration;

use serde_json::Value;

use super::{
    Plan,
    procs::Line,
    rounds::{StartTracer, rate, round, side_by_side},
    schema::Figure,
    sockscope::{
        Bins, BpfStats, ProgTime, loaded_sockscope_programs, start_trace, start_watch_with,
    },
    stats::{median, slowdowns, spread},
};

/// Round trips before the timed ones, and the pause after them (every variant alike).
/// For the PeerConnection that ends, the warm-up comes after its end and `watch`'s
/// grace ends in the pause: its verdict (which the warm-up's I/O makes `active`) is
/// out of the timed round trips, which go on being counted with their stacks.
const WARMUP: u64 = 200;
const SETTLE_MS: u64 = 300;
const GRACE: &str = "100ms";
/// Rotations (a round of every variant) that must be left when those disturbed by
/// another sockscope are left out; with fewer, all are kept (and said so).
const MIN_CLEAN_REPS: usize = 3;
/// Sends and receives per round trip.
const CALLS_PER_ROUND_TRIP: f64 = 4.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Under {
    Nothing,
    Trace,
    Watch,
}

struct Variant {
    id: &'static str,
    title: &'static str,
    goal: Option<f64>,
    under: Under,
    /// udp_echo flags saying where its sockets are.
    flags: &'static [&'static str],
}

const UNTRACED: Variant = Variant {
    id: "",
    title: "",
    goal: None,
    under: Under::Nothing,
    flags: &[],
};

/// The traced variants, each a figure against [`UNTRACED`].
const TRACED: [Variant; 4] = [
    Variant {
        id: "echo_slowdown",
        title: "UDP echo over loopback (no socket churn), traced by sockscope trace",
        goal: Some(1.01),
        under: Under::Trace,
        flags: &[],
    },
    Variant {
        id: "echo_watch_slowdown",
        title: "UDP echo, sockscope watch: I/O hooks on, sockets not watched (one failed lookup per send/receive)",
        goal: Some(1.01),
        under: Under::Watch,
        flags: &[],
    },
    Variant {
        id: "echo_watch_counted_slowdown",
        title: "UDP echo, sockscope watch: sockets made after the attach (watched from creation, every send/receive counted)",
        goal: None,
        under: Under::Watch,
        flags: &["--open-after-go"],
    },
    Variant {
        id: "echo_watch_leaked_slowdown",
        title: "UDP echo, sockscope watch: sockets of a closed PeerConnection still in use (every send/receive counted with its stack)",
        goal: None,
        under: Under::Watch,
        flags: &["--closed-pc"],
    },
];

/// What `watch` said of a leaked socket.
struct LeakLine {
    kind: String,
    sends_after_end: u64,
    /// Printed before the timed round trips began.
    before_timed: bool,
}

#[derive(Default)]
struct Sample {
    /// Other sockscope programs loaded when the round began or once it ended (its
    /// own tracer gone).
    foreign_programs: usize,
    round_trips_per_s: f64,
    /// CPU time of the echo (its two threads, the BPF programs run on their behalf
    /// included) per timed round trip.
    cpu_ns_per_round_trip: Option<f64>,
    /// Round trips done in all (warm-up included).
    round_trips: f64,
    attach_s: Option<f64>,
    leaks: Vec<LeakLine>,
    progs: Vec<ProgTime>,
}

fn keep_leaks(line: &str) -> bool {
    line.contains("\"event\":\"leak\"")
}

fn leak_lines(lines: &[Line], timed_from_ns: Option<u64>) -> Vec<LeakLine> {
    lines
        .iter()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(&l.text).ok()?;
            (v["event"] == "leak").then(|| LeakLine {
                kind: v["kind"].as_str().unwrap_or("none").to_owned(),
                sends_after_end: v["io"]["sends_after_end"].as_u64().unwrap_or(0),
                before_timed: timed_from_ns.is_some_and(|t| l.at_ns < t),
            })
        })
        .collect()
}

fn one_round(bins: &Bins, plan: &Plan, v: &Variant) -> anyhow::Result<Sample> {
    let mut cmd = bins.cmd("udp_echo");
    cmd.args(["--messages", &plan.echo_messages.to_string()])
        .args(["--warmup", &WARMUP.to_string()])
        .args(["--settle", &SETTLE_MS.to_string()])
        .args(v.flags);
    let trace = |pid: u32| start_trace(bins, pid, &[]);
    let watch = |pid: u32| start_watch_with(bins, pid, &["--grace", GRACE], keep_leaks);
    let tracer: Option<StartTracer> = match v.under {
        Under::Nothing => None,
        Under::Trace => Some(&trace),
        Under::Watch => Some(&watch),
    };
    let before = loaded_sockscope_programs();
    let r = round(cmd, tracer)?;
    let after = loaded_sockscope_programs();
    let timed_from = r.result["start_mono_ns"].as_u64();
    let mut s = Sample {
        foreign_programs: before.max(after),
        round_trips_per_s: rate(&r.result, "round_trips")?,
        cpu_ns_per_round_trip: r.result["cpu_seconds"]
            .as_f64()
            .zip(r.result["round_trips"].as_f64().filter(|n| *n > 0.0))
            .map(|(cpu, n)| cpu * 1e9 / n),
        round_trips: r.result["round_trips"].as_f64().unwrap_or(0.0) + WARMUP as f64,
        ..Sample::default()
    };
    if let Some(t) = r.traced {
        s.attach_s = Some(t.attach.as_secs_f64());
        s.leaks = leak_lines(&t.out.stdout, timed_from);
        s.progs = t.progs;
    }
    Ok(s)
}

pub fn run(bins: &Bins, plan: &Plan) -> anyhow::Result<(Vec<Figure>, Vec<f64>)> {
    println!(
        "bench: UDP echo, {} round trips, {} rounds of {} variants",
        plan.echo_messages,
        plan.reps,
        TRACED.len() + 1
    );
    let mut untraced = || one_round(bins, plan, &UNTRACED);
    let mut t0 = || one_round(bins, plan, &TRACED[0]);
    let mut t1 = || one_round(bins, plan, &TRACED[1]);
    let mut t2 = || one_round(bins, plan, &TRACED[2]);
    let mut t3 = || one_round(bins, plan, &TRACED[3]);
    let series = side_by_side(
        plan.reps,
        &mut [&mut untraced, &mut t0, &mut t1, &mut t2, &mut t3],
    )?;
    // A round during which another sockscope was loaded (a test or a daemon run on
    // this machine meanwhile: its hooks, the I/O ones included, run for every process)
    // is left out with its whole rotation, unless too few would be left.
    let clean: Vec<usize> = (0..plan.reps)
        .filter(|r| series.iter().all(|v| v[*r].foreign_programs == 0))
        .collect();
    let kept: Vec<usize> = if clean.len() >= MIN_CLEAN_REPS.min(plan.reps) {
        clean.clone()
    } else {
        (0..plan.reps).collect()
    };
    let rates = |s: &[Sample]| {
        kept.iter()
            .map(|r| s[*r].round_trips_per_s)
            .collect::<Vec<_>>()
    };
    let base = rates(&series[0]);
    let mut figures = Vec::new();
    let mut attach = Vec::new();
    for (v, s) in TRACED.iter().zip(&series[1..]) {
        let mut f = Figure::new(v.id, v.title, "x slower (untraced/traced round trips/s)");
        if let Some(g) = v.goal {
            f = f.goal(g);
        }
        f.value = spread(&slowdowns(&base, &rates(s)));
        if let Some(u) = median(&base) {
            f.detail("untraced_round_trips_per_s", u);
        }
        if let Some(t) = median(&rates(s)) {
            f.detail("traced_round_trips_per_s", t);
        }
        // A second view, pair by pair: the CPU added per send or receive (the rate
        // also moves with how fast a sleeping thread is woken; both are noisy here).
        let added: Vec<f64> = kept
            .iter()
            .filter_map(|r| {
                let (u, t) = (
                    series[0][*r].cpu_ns_per_round_trip?,
                    s[*r].cpu_ns_per_round_trip?,
                );
                Some((t - u) / CALLS_PER_ROUND_TRIP)
            })
            .collect();
        if let Some(a) = spread(&added) {
            f.detail("cpu_ns_added_per_call", a.median);
            f.detail("cpu_ns_added_per_call_min", a.min);
            f.detail("cpu_ns_added_per_call_max", a.max);
            f.notes.push(format!(
                "the echo's CPU time per send or receive grew by {:.0} ns (median of the \
                 pairs; {:.0} to {:.0})",
                a.median, a.min, a.max
            ));
        }
        attach.extend(s.iter().filter_map(|x| x.attach_s));
        f.detail(
            "rotations_with_other_sockscope_loaded",
            (plan.reps - clean.len()) as f64,
        );
        if clean.len() < plan.reps {
            f.notes.push(if kept.len() == clean.len() {
                format!(
                    "{} of {} rotations left out: another sockscope's programs (a test, a \
                     daemon) were loaded during them",
                    plan.reps - clean.len(),
                    plan.reps
                )
            } else {
                format!(
                    "another sockscope's programs (a test, a daemon) were loaded during {} of \
                     {} rotations, kept (too few without them): their hooks ran on the \
                     untraced side too",
                    plan.reps - clean.len(),
                    plan.reps
                )
            });
        }
        figures.push(f);
    }
    explain(&mut figures, &series[4]);
    profile(bins, plan, &mut figures)?;
    Ok((figures, attach))
}

/// Notes: the noise, and the evidence that the last variant's sockets were counted.
fn explain(figures: &mut [Figure], leaked_rounds: &[Sample]) {
    let noise = figures[0].value;
    if let Some(n) = noise {
        figures[0].notes.push(
            "sockscope trace attaches no hook on the send/receive path: the range of this \
             ratio is the noise of the echo on this machine"
                .into(),
        );
        for f in &mut figures[1..] {
            if let Some(v) = f.value {
                let inside = v.median >= n.min && v.median <= n.max;
                f.notes.push(format!(
                    "median {:.3} is {} the noise of the echo under trace in the same run \
                     ({:.3} – {:.3})",
                    v.median,
                    if inside { "within" } else { "outside" },
                    n.min,
                    n.max
                ));
            }
        }
    }
    let Some(f) = figures.get_mut(3) else { return };
    let active: Vec<&LeakLine> = leaked_rounds
        .iter()
        .flat_map(|s| &s.leaks)
        .filter(|l| l.kind == "active")
        .collect();
    let all = leaked_rounds.iter().map(|s| s.leaks.len()).sum::<usize>();
    f.detail("leak_lines", all as f64);
    f.detail("leak_lines_active", active.len() as f64);
    f.detail(
        "leak_lines_before_timed_round_trips",
        leaked_rounds
            .iter()
            .flat_map(|s| &s.leaks)
            .filter(|l| l.before_timed)
            .count() as f64,
    );
    let sends: Vec<f64> = active.iter().map(|l| l.sends_after_end as f64).collect();
    if let Some(m) = median(&sends) {
        f.detail("sends_after_end_at_verdict", m);
    }
    // Two sockets per round: the echo's client and server.
    let expected = 2 * leaked_rounds.len();
    f.notes.push(format!(
        "both sockets are PeerConnection 1's (made in its span, announced by cookie), which \
         ends before {WARMUP} warm-up round trips; sockscope watch --grace {GRACE} reports \
         each as an active leak before the timed round trips, which its hooks go on \
         counting, taking the user stack of each call"
    ));
    if active.len() != expected || all != expected {
        f.notes.push(format!(
            "expected {expected} active leak lines ({} rounds x 2 sockets), saw {} ({all} in \
             all): the counting path may not have been measured",
            leaked_rounds.len(),
            active.len()
        ));
    }
}

/// One more round of each `watch` variant with BPF run-time statistics on: the time of
/// the I/O programs per send or receive. They run on every such call on the host; the
/// echo's make up nearly all of them (the share is in the details).
fn profile(bins: &Bins, plan: &Plan, figures: &mut [Figure]) -> anyhow::Result<()> {
    let stats = match BpfStats::enable() {
        Ok(s) => s,
        Err(e) => {
            for f in &mut figures[1..] {
                f.notes.push(format!("no BPF run-time profile: {e:#}"));
            }
            return Ok(());
        }
    };
    for (v, f) in TRACED.iter().zip(figures.iter_mut()).skip(1) {
        let s = one_round(bins, plan, v)?;
        let io: Vec<&ProgTime> = s
            .progs
            .iter()
            .filter(|p| p.name.starts_with("sockscope_io_"))
            .collect();
        // Each call runs one enter program (send or receive) and the exit one.
        let calls: u64 = io
            .iter()
            .filter(|p| !p.name.starts_with("sockscope_io_ex"))
            .map(|p| p.runs)
            .sum();
        if calls == 0 {
            f.notes
                .push("profiling round: the I/O programs did not run (not attached?)".into());
            continue;
        }
        let total: Duration = io.iter().map(|p| p.run_time).sum();
        let ns_per_call = total.as_nanos() as f64 / calls as f64;
        f.detail("bpf_ns_per_call", ns_per_call);
        for p in &io {
            f.detail(
                &format!("bpf_ns_per_run.{}", p.name),
                p.run_time.as_nanos() as f64 / p.runs.max(1) as f64,
            );
        }
        let echo_calls = s.round_trips * CALLS_PER_ROUND_TRIP;
        f.detail("bpf_calls_of_the_echo_share", echo_calls / calls as f64);
        f.notes.push(format!(
            "where the time goes (one round with BPF statistics on, which add two clock \
             reads per run): the I/O programs take {ns_per_call:.0} ns per send or receive \
             (enter + exit), {:.0} ns per round trip",
            ns_per_call * CALLS_PER_ROUND_TRIP
        ));
    }
    drop(stats);
    Ok(())
}
