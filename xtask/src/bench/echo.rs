//! UDP echo over loopback without socket churn, untraced vs `sockscope trace`.
use super::{
    Plan,
    rounds::{StartTracer, rate, round, side_by_side},
    schema::Figure,
    sockscope::{Bins, start_trace},
    stats::{median, slowdowns, spread},
};

pub fn run(bins: &Bins, plan: &Plan) -> anyhow::Result<(Figure, Vec<f64>)> {
    println!(
        "bench: UDP echo, {} round trips, {} rounds of 2 variants",
        plan.echo_messages, plan.reps
    );
    let trace = |pid: u32| start_trace(bins, pid, &[]);
    let run_under = |t: Option<StartTracer>| -> anyhow::Result<(f64, Option<f64>)> {
        let mut cmd = bins.cmd("udp_echo");
        cmd.args(["--messages", &plan.echo_messages.to_string()]);
        let r = round(cmd, t)?;
        Ok((
            rate(&r.result, "round_trips")?,
            r.traced.map(|t| t.attach.as_secs_f64()),
        ))
    };
    let mut untraced = || run_under(None);
    let mut traced = || run_under(Some(&trace));
    let series = side_by_side(plan.reps, &mut [&mut untraced, &mut traced])?;
    let rates = |i: usize| series[i].iter().map(|s| s.0).collect::<Vec<_>>();
    let mut f = Figure::new(
        "echo_slowdown",
        "UDP echo over loopback (no socket churn), traced by sockscope trace",
        "x slower (untraced/traced round trips/s)",
    )
    .goal(1.01);
    f.value = spread(&slowdowns(&rates(0), &rates(1)));
    if let Some(u) = median(&rates(0)) {
        f.detail("untraced_round_trips_per_s", u);
    }
    if let Some(t) = median(&rates(1)) {
        f.detail("traced_round_trips_per_s", t);
    }
    let attach = series[1].iter().filter_map(|s| s.1).collect();
    Ok((f, attach))
}
