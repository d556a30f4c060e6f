//! Socket churn on all cores: untraced, under `sockscope trace`, under `sockscope
//! trace --stacks` and under the equivalent bpftrace script, side by side; then one
//! profiling round with BPF run-time statistics to say where the time goes.
use std::{path::Path, process::Command, time::Duration};

use super::{
    Plan,
    procs::Tracer,
    rounds::{Round, StartTracer, rate, round, side_by_side},
    schema::Figure,
    sockscope::{Bins, BpfStats, start_trace, start_watch, trace_summary},
    stats::{median, slowdowns, spread},
};

/// One round's numbers.
#[derive(Default, Clone)]
struct Sample {
    sockets_per_s: f64,
    events: f64,
    lost: f64,
    attach_s: Option<f64>,
    /// Tracer CPU seconds per kernel event it handled.
    cpu_per_event_s: Option<f64>,
}

fn churn_cmd(bins: &Bins, plan: &Plan) -> Command {
    let mut cmd = bins.cmd("udp_churn");
    cmd.args(["--threads", &plan.threads.to_string()])
        .args(["--count", &plan.churn_per_thread.to_string()]);
    cmd
}

fn sample(r: Round) -> anyhow::Result<Sample> {
    let mut s = Sample {
        sockets_per_s: rate(&r.result, "sockets")?,
        ..Sample::default()
    };
    if let Some(t) = r.traced {
        s.attach_s = Some(t.attach.as_secs_f64());
        if let Ok(sum) = trace_summary(&t.out) {
            s.events = sum.events as f64;
            s.lost = sum.lost as f64;
            s.cpu_per_event_s = (sum.events > 0).then(|| t.cpu.as_secs_f64() / sum.events as f64);
        } else {
            // bpftrace: one line per event (a stack is several), "Lost N events".
            s.lost = t
                .out
                .stdout
                .iter()
                .filter_map(|l| {
                    l.text
                        .strip_prefix("Lost ")?
                        .split(' ')
                        .next()?
                        .parse::<f64>()
                        .ok()
                })
                .sum();
        }
    }
    Ok(s)
}

fn start_bpftrace(script: &Path, pid: u32) -> anyhow::Result<Tracer> {
    let mut cmd = Command::new("bpftrace");
    cmd.arg(script).arg(pid.to_string());
    Tracer::start(cmd, "Attaching", |l| l.starts_with("Lost "))
}

pub struct ChurnFigures {
    pub figures: Vec<Figure>,
    pub attach_s: Vec<f64>,
}

pub fn run(bins: &Bins, plan: &Plan, bpftrace: Option<&Path>) -> anyhow::Result<ChurnFigures> {
    let trace = |pid: u32| start_trace(bins, pid, &[]);
    let trace_stacks = |pid: u32| start_trace(bins, pid, &["--stacks"]);
    let watch = |pid: u32| start_watch(bins, pid);
    let bt = |pid: u32| match bpftrace {
        Some(script) => start_bpftrace(script, pid),
        None => anyhow::bail!("bpftrace is not available"),
    };
    let run_under = |t: Option<StartTracer>| sample(round(churn_cmd(bins, plan), t)?);
    let mut untraced = || run_under(None);
    let mut traced = || run_under(Some(&trace));
    let mut watching = || run_under(Some(&watch));
    let mut stacks = || run_under(Some(&trace_stacks));
    let mut peer = || run_under(Some(&bt));
    let mut variants: Vec<&mut dyn FnMut() -> anyhow::Result<Sample>> =
        vec![&mut untraced, &mut traced, &mut watching, &mut stacks];
    if bpftrace.is_some() {
        variants.push(&mut peer);
    }
    println!(
        "bench: socket churn, {} threads x {} sockets, {} rounds of {} variants",
        plan.threads,
        plan.churn_per_thread,
        plan.reps,
        variants.len()
    );
    let series = side_by_side(plan.reps, &mut variants)?;
    let rates = |v: &[Sample]| v.iter().map(|s| s.sockets_per_s).collect::<Vec<_>>();
    let base = rates(&series[0]);

    let mut figures = Vec::new();
    let mut attach_s = Vec::new();
    let labels = [
        (
            "churn_slowdown",
            "Socket churn, traced by sockscope trace",
            Some(1.45),
        ),
        (
            "churn_watch_slowdown",
            "Socket churn, sockscope watch (verdicts, stacks symbolized, no per-event output)",
            Some(1.30),
        ),
        (
            "churn_stacks_slowdown",
            "Socket churn, sockscope trace --stacks (symbolized)",
            None,
        ),
        (
            "churn_bpftrace_slowdown",
            "Socket churn, traced by the equivalent bpftrace script",
            None,
        ),
    ];
    for (i, (id, title, goal)) in labels.iter().enumerate() {
        let mut f = Figure::new(id, title, "x slower (untraced/traced throughput)");
        if let Some(g) = goal {
            f = f.goal(*g);
        }
        let Some(s) = series.get(i + 1) else {
            f.notes
                .push("bpftrace is not installed and could not be installed".into());
            figures.push(f);
            continue;
        };
        f.value = spread(&slowdowns(&base, &rates(s)));
        if let Some(u) = median(&base) {
            f.detail("untraced_sockets_per_s", u);
        }
        if let Some(t) = median(&rates(s)) {
            f.detail("traced_sockets_per_s", t);
        }
        f.detail("lost_events_total", s.iter().map(|x| x.lost).sum());
        if i == 0 {
            f.detail("events_total", s.iter().map(|x| x.events).sum());
            let cpu: Vec<f64> = s.iter().filter_map(|x| x.cpu_per_event_s).collect();
            if let Some(c) = median(&cpu) {
                f.detail("sockscope_cpu_ns_per_event", c * 1e9);
            }
        }
        if i < 3 {
            attach_s.extend(s.iter().filter_map(|x| x.attach_s));
        }
        figures.push(f);
    }
    if let Some(f) = figures.first_mut() {
        profile(bins, plan, f)?;
    }
    Ok(ChurnFigures { figures, attach_s })
}

/// One more traced round with BPF run-time statistics on: the kernel's time in each
/// sockscope program per socket, and the tracer's CPU time per event.
fn profile(bins: &Bins, plan: &Plan, f: &mut Figure) -> anyhow::Result<()> {
    let stats = match BpfStats::enable() {
        Ok(s) => s,
        Err(e) => {
            f.notes.push(format!("no BPF run-time profile: {e:#}"));
            return Ok(());
        }
    };
    let trace = |pid: u32| start_trace(bins, pid, &[]);
    let r = round(churn_cmd(bins, plan), Some(&trace))?;
    drop(stats);
    let sockets = r.result["sockets"].as_f64().unwrap_or(0.0).max(1.0);
    let seconds = r.result["seconds"].as_f64().unwrap_or(0.0);
    let Some(t) = r.traced else { return Ok(()) };
    let mut total = Duration::ZERO;
    for p in &t.progs {
        total += p.run_time;
        f.detail(
            &format!("bpf_ns_per_socket.{}", p.name),
            p.run_time.as_nanos() as f64 / sockets,
        );
        f.detail(
            &format!("bpf_runs_per_socket.{}", p.name),
            p.runs as f64 / sockets,
        );
    }
    let bpf_per_socket = total.as_nanos() as f64 / sockets;
    f.detail("bpf_ns_per_socket_total", bpf_per_socket);
    let cpu_share = if seconds > 0.0 {
        t.cpu.as_secs_f64() / seconds
    } else {
        0.0
    };
    f.detail("sockscope_cpu_share_of_one_core", cpu_share);
    let untraced_ns = f
        .details
        .get("untraced_sockets_per_s")
        .map(|r| 1e9 / r * plan.threads as f64)
        .unwrap_or(0.0);
    f.notes.push(format!(
        "where the time goes: the BPF programs take {bpf_per_socket:.0} ns per socket (create, \
         bind, release and the socket() exit tracepoint; an untraced socket costs about \
         {untraced_ns:.0} ns of one core); the sockscope process used {:.0}% of a core while \
         the workload kept all {} cores busy",
        cpu_share * 100.0,
        plan.threads
    ));
    Ok(())
}
