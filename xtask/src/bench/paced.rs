//! CPU per socket at a production-like rate: churn paced at a fixed rate, so
//! throughput cannot show the cost; instead the CPU of the workload (which includes the
//! BPF programs run on its behalf) and of sockscope, traced minus untraced, per socket.
use super::{
    Plan,
    rounds::{StartTracer, round, side_by_side},
    schema::Figure,
    sockscope::{Bins, start_watch},
    stats::{median, spread},
};

struct Sample {
    sockets: f64,
    workload_cpu_s: f64,
    tracer_cpu_s: f64,
}

pub fn run(bins: &Bins, plan: &Plan) -> anyhow::Result<Figure> {
    let rate = plan.paced_rate;
    let count = (rate as f64 * plan.loss_seconds) as u64;
    println!(
        "bench: CPU per socket at {rate} sockets/s, {} rounds of 2 variants",
        plan.reps
    );
    let watch = |pid: u32| start_watch(bins, pid);
    let run_under = |t: Option<StartTracer>| -> anyhow::Result<Sample> {
        let mut cmd = bins.cmd("udp_churn");
        cmd.args(["--rate", &rate.to_string(), "--count", &count.to_string()]);
        let r = round(cmd, t)?;
        Ok(Sample {
            sockets: r.result["sockets"].as_f64().unwrap_or(0.0).max(1.0),
            workload_cpu_s: r.result["cpu_seconds"].as_f64().unwrap_or(0.0),
            tracer_cpu_s: r.traced.map_or(0.0, |t| t.cpu.as_secs_f64()),
        })
    };
    let mut untraced = || run_under(None);
    let mut traced = || run_under(Some(&watch));
    let series = side_by_side(plan.reps, &mut [&mut untraced, &mut traced])?;
    let per_socket_us = |s: &Sample, cpu: f64| cpu / s.sockets * 1e6;
    let added: Vec<f64> = series[0]
        .iter()
        .zip(&series[1])
        .map(|(u, t)| {
            per_socket_us(t, t.workload_cpu_s + t.tracer_cpu_s) - per_socket_us(u, u.workload_cpu_s)
        })
        .collect();
    let mut f = Figure::new(
        "paced_cpu_per_socket",
        &format!("CPU added per UDP socket at {rate} sockets/s, sockscope watch"),
        "µs/socket",
    );
    f.value = spread(&added);
    let med = |v: Vec<f64>| median(&v).unwrap_or(f64::NAN);
    let untraced_us = med(series[0]
        .iter()
        .map(|s| per_socket_us(s, s.workload_cpu_s))
        .collect());
    let in_kernel_us = med(series[1]
        .iter()
        .map(|s| per_socket_us(s, s.workload_cpu_s))
        .collect());
    let tracer_us = med(series[1]
        .iter()
        .map(|s| per_socket_us(s, s.tracer_cpu_s))
        .collect());
    f.detail("untraced_workload_us_per_socket", untraced_us);
    f.detail("traced_workload_us_per_socket", in_kernel_us);
    f.detail("sockscope_process_us_per_socket", tracer_us);
    if let Some(a) = f.value.map(|v| v.median) {
        f.detail("sockscope_share_of_one_core", a * rate as f64 / 1e6);
        f.notes.push(format!(
            "at {rate} sockets/s sockscope costs {:.1}% of one core: {:.2} µs per socket in \
             the workload's own time (the BPF programs) and {:.2} µs in the sockscope process",
            a * rate as f64 / 1e4,
            in_kernel_us - untraced_us,
            tracer_us
        ));
    }
    Ok(f)
}
