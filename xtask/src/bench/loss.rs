//! Events per second without loss: paced churn at rising rates under `sockscope
//! trace` with its default ring buffer (1 MiB), then the fastest churn with a small ring to
//! show what happens above the limit (losses counted and reported, never silent).
use super::{
    Plan,
    rounds::{rate, round},
    schema::Figure,
    sockscope::{Bins, start_trace, trace_summary},
    stats::spread,
};

/// Kernel events per UDP socket of the churn workload: create, bind, release.
pub const EVENTS_PER_SOCKET: f64 = 3.0;

struct Rung {
    offered_events_per_s: f64,
    lost: u64,
    warned: bool,
}

fn rung(
    bins: &Bins,
    plan: &Plan,
    sockets_per_s: Option<u64>,
    ring: Option<u32>,
) -> anyhow::Result<Rung> {
    let seconds = plan.loss_seconds;
    let mut cmd = bins.cmd("udp_churn");
    cmd.args(["--threads", &plan.threads.to_string()]);
    let per_thread = match sockets_per_s {
        Some(r) => {
            cmd.args(["--rate", &r.to_string()]);
            (r as f64 * seconds / plan.threads as f64) as u64
        }
        None => plan.churn_per_thread,
    };
    cmd.args(["--count", &per_thread.max(1).to_string()]);
    let ring_arg = ring.map(|r| r.to_string());
    let extra: Vec<&str> = match &ring_arg {
        Some(r) => vec!["--ring-bytes", r],
        None => vec![],
    };
    let trace = |pid: u32| start_trace(bins, pid, &extra);
    let r = round(cmd, Some(&trace))?;
    let offered = rate(&r.result, "sockets")? * EVENTS_PER_SOCKET;
    let t = r.traced.as_ref().map(|t| &t.out);
    let summary = t.map(trace_summary).transpose()?.unwrap_or_default();
    let warned = t.is_some_and(|o| o.stderr_text().contains("lost"));
    Ok(Rung {
        offered_events_per_s: offered,
        lost: summary.lost,
        warned,
    })
}

pub fn run(bins: &Bins, plan: &Plan) -> anyhow::Result<Figure> {
    println!(
        "bench: events/s without loss, paced churn at {:?} sockets/s and unpaced",
        plan.loss_rates
    );
    let mut f = Figure::new(
        "max_events_per_s_without_loss",
        "Highest event rate followed without loss (default 1 MiB ring, sockscope trace)",
        "events/s",
    );
    let mut best: Option<f64> = None;
    let mut first_loss: Option<f64> = None;
    let rates = plan.loss_rates.iter().map(|r| Some(*r)).chain([None]);
    for sockets_per_s in rates {
        let r = rung(bins, plan, sockets_per_s, None)?;
        let label = sockets_per_s.map_or("unpaced".to_owned(), |s| s.to_string());
        f.detail(
            &format!("rung.{label}.offered_events_per_s"),
            r.offered_events_per_s,
        );
        f.detail(&format!("rung.{label}.lost"), r.lost as f64);
        if r.lost == 0 {
            best = Some(best.map_or(r.offered_events_per_s, |b: f64| {
                b.max(r.offered_events_per_s)
            }));
        } else if first_loss.is_none() {
            first_loss = Some(r.offered_events_per_s);
        }
    }
    f.value = best.and_then(|b| spread(&[b]));
    match first_loss {
        Some(l) => f.notes.push(format!(
            "above it: at {l:.0} events/s offered the ring filled; the losses were counted and \
             reported (a `check` run then says incomplete, never clean)"
        )),
        None => f.notes.push(
            "no loss even at the fastest churn this machine produced: the limit is above it".into(),
        ),
    }
    if best.is_none() {
        f.notes.push("every rung lost events".into());
    }
    // Above the limit on purpose: a 16 KiB ring at full speed must lose, and say so.
    let small = rung(bins, plan, None, Some(16 * 1024))?;
    f.detail(
        "small_ring_16k.offered_events_per_s",
        small.offered_events_per_s,
    );
    f.detail("small_ring_16k.lost", small.lost as f64);
    f.notes.push(format!(
        "with a 16 KiB ring at full speed: {} events lost, {}",
        small.lost,
        if small.warned {
            "reported on stderr and in the summary"
        } else {
            "NOT reported on stderr"
        }
    ));
    Ok(f)
}
