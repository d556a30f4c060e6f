//! Verdict latency: `sockscope watch` on pc_sim with leaking PeerConnections; the
//! time from each leak's grace expiry (pc_close_end + grace, CLOCK_MONOTONIC as
//! printed by pc_sim) to the moment its leak line was read from sockscope's stdout.
use std::collections::HashMap;

use serde_json::Value;

use super::{
    Plan,
    procs::{Tracer, Waiting, keep_all},
    schema::Figure,
    sockscope::{Bins, WATCH_READY},
    stats::spread,
};

const GRACE_MS: u64 = 1000;

pub fn run(bins: &Bins, plan: &Plan) -> anyhow::Result<(Figure, Vec<f64>)> {
    let pcs = plan.latency_pcs;
    println!("bench: verdict latency, {pcs} leaking PeerConnections under sockscope watch");
    let mut cmd = bins.cmd("pc_sim");
    cmd.args(["--pcs", &pcs.to_string(), "--sockets", "2"])
        .args(["--linger", &(GRACE_MS + 1500).to_string(), "--wait"]);
    for pc in 1..=pcs {
        cmd.args(["--leak", &pc.to_string()]);
    }
    let mut w = Waiting::spawn(cmd)?;
    let mut watch = bins.cmd("sockscope");
    watch
        .args(["watch", "--pid", &w.pid.to_string(), "--format", "json"])
        .args(["--grace", &format!("{GRACE_MS}ms")]);
    let mut t = Tracer::start(watch, WATCH_READY, keep_all)?;
    let attach = t.attach.as_secs_f64();
    w.go()?;
    let mut closed: HashMap<u64, u64> = HashMap::new();
    loop {
        let v = w.next_json()?;
        if v["done"] == true {
            break;
        }
        if let (Some(pc), Some(ns)) = (v["pc_id"].as_u64(), v["close_end_mono_ns"].as_u64()) {
            closed.insert(pc, ns);
        }
    }
    w.finish()?;
    let out = t.stop()?;
    let mut latencies_ms = Vec::new();
    let mut first_leak_line = HashMap::new();
    for line in &out.stdout {
        let Ok(v) = serde_json::from_str::<Value>(&line.text) else {
            continue;
        };
        if v["event"] == "leak"
            && let Some(pc) = v["pc_id"].as_u64()
        {
            first_leak_line.entry(pc).or_insert(line.at_ns);
        }
    }
    for (pc, at) in &first_leak_line {
        if let Some(close) = closed.get(pc) {
            let due = close + GRACE_MS * 1_000_000;
            latencies_ms.push((*at as f64 - due as f64) / 1e6);
        }
    }
    let mut f = Figure::new(
        "verdict_latency",
        "Verdict latency: grace expiry to the leak line (sockscope watch)",
        "ms",
    );
    f.value = spread(&latencies_ms);
    f.detail("leaking_pcs", pcs as f64);
    f.detail("leak_lines", first_leak_line.len() as f64);
    if first_leak_line.len() as u64 != pcs {
        f.notes.push(format!(
            "{} of {pcs} leaking PeerConnections were reported",
            first_leak_line.len()
        ));
    }
    Ok((f, vec![attach]))
}
