//! One round: a workload, optionally under a tracer attached to its pid before it
//! starts working; and side-by-side series of such rounds.
use std::{process::Command, time::Duration};

use anyhow::Context as _;
use serde_json::Value;

use super::{
    procs::{Stopped, Tracer, Waiting},
    sockscope::{ProgTime, prog_times},
    stats::rotation,
};

/// What a tracer did during a round.
pub struct Traced {
    pub out: Stopped,
    pub attach: Duration,
    /// CPU the tracer used from attach to the end of the work.
    pub cpu: Duration,
    /// Run time of sockscope's programs (zero unless BPF stats are on).
    pub progs: Vec<ProgTime>,
}

pub struct Round {
    /// The workload's final JSON line.
    pub result: Value,
    pub traced: Option<Traced>,
}

pub type StartTracer<'a> = &'a dyn Fn(u32) -> anyhow::Result<Tracer>;

/// Runs `workload` (which must take `--wait`) once, under `tracer` if given.
pub fn round(mut workload: Command, tracer: Option<StartTracer>) -> anyhow::Result<Round> {
    workload.arg("--wait");
    let mut w = Waiting::spawn(workload)?;
    let mut t = tracer.map(|start| start(w.pid)).transpose()?;
    w.go()?;
    let result = w.finish()?;
    let traced = match t.as_mut() {
        Some(t) => {
            let cpu = t.cpu_since_attach()?;
            let progs = prog_times(t.pid());
            let attach = t.attach;
            Some(Traced {
                out: t.stop()?,
                attach,
                cpu,
                progs,
            })
        }
        None => None,
    };
    Ok(Round { result, traced })
}

/// `result[count] / result["seconds"]`.
pub fn rate(result: &Value, count: &str) -> anyhow::Result<f64> {
    let n = result[count].as_f64();
    let s = result["seconds"].as_f64().filter(|s| *s > 0.0);
    n.zip(s)
        .map(|(n, s)| n / s)
        .with_context(|| format!("workload result without {count}/seconds: {result}"))
}

/// `reps` rounds of every variant, in rotating order; `out[v]` holds variant v's
/// rounds in order.
pub fn side_by_side<T>(
    reps: usize,
    variants: &mut [&mut dyn FnMut() -> anyhow::Result<T>],
) -> anyhow::Result<Vec<Vec<T>>> {
    let mut out: Vec<Vec<T>> = variants.iter().map(|_| Vec::new()).collect();
    for r in 0..reps {
        for v in rotation(r, variants.len()) {
            out[v].push(variants[v]()?);
        }
    }
    Ok(out)
}
