//! `cargo xtask bench [--quick]`: what tracing costs, as ratios of rounds run side by
//! side in one run (never absolute timings: these machines are noisy). Prints a table,
//! writes `bench/results.json` and `bench/results.md`. Method: BENCHMARKS.md.
mod churn;
mod drain;
mod echo;
mod latency;
mod loss;
mod memory;
mod paced;
mod procs;
mod report;
mod rounds;
mod schema;
mod sockscope;
mod stats;
mod unwind;
mod webrtc;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{setup, util};
use schema::{Figure, Results};
use sockscope::Bins;

/// How much of everything to run.
pub struct Plan {
    /// Rounds of each variant in side-by-side series.
    pub reps: usize,
    pub threads: usize,
    pub churn_per_thread: u64,
    pub echo_messages: u64,
    pub webrtc_sessions: u64,
    pub webrtc_reps: usize,
    /// Paced churn rates (sockets/s) for the loss ladder, then one unpaced rung.
    pub loss_rates: Vec<u64>,
    pub loss_seconds: f64,
    /// Sockets/s of the production-like paced churn (CPU per socket).
    pub paced_rate: u64,
    pub hold_counts: Vec<u64>,
    pub hold_rate: u64,
    pub latency_pcs: u64,
}

impl Plan {
    fn new(quick: bool) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if quick {
            Self {
                reps: 3,
                threads,
                churn_per_thread: 50_000,
                echo_messages: 20_000,
                webrtc_sessions: 10,
                webrtc_reps: 3,
                loss_rates: vec![50_000, 200_000],
                loss_seconds: 1.0,
                paced_rate: 10_000,
                hold_counts: vec![10_000, 100_000],
                hold_rate: 100_000,
                latency_pcs: 3,
            }
        } else {
            Self {
                reps: 9,
                threads,
                churn_per_thread: 200_000,
                echo_messages: 100_000,
                webrtc_sessions: 30,
                webrtc_reps: 5,
                loss_rates: vec![25_000, 50_000, 100_000, 200_000, 400_000],
                loss_seconds: 2.0,
                paced_rate: 10_000,
                hold_counts: vec![10_000, 100_000],
                hold_rate: 50_000,
                latency_pcs: 8,
            }
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// bpftrace from Debian, for the peer comparison; None (with the reason printed) when
/// it cannot be had.
fn bpftrace_script() -> Option<PathBuf> {
    if let Err(e) = setup::ensure_commands(&[("bpftrace", "bpftrace")]) {
        eprintln!("bench: no bpftrace, the peer comparison is skipped: {e:#}");
        return None;
    }
    Some(root().join("bench/churn.bt"))
}

pub const GROUPS: [&str; 8] = [
    "churn", "paced", "echo", "webrtc", "loss", "memory", "latency", "unwind",
];

/// Runs one group of figures unless `--only` leaves it out; a failure becomes a
/// figure that says so, and the run goes on (its exit code still says something
/// failed).
fn group(
    figures: &mut Vec<Figure>,
    failed: &mut Vec<String>,
    only: &[String],
    id: &str,
    f: impl FnOnce() -> anyhow::Result<Vec<Figure>>,
) {
    if !only.is_empty() && !only.iter().any(|o| o == id) {
        return;
    }
    match f() {
        Ok(fs) => figures.extend(fs),
        Err(e) => {
            eprintln!("bench: {id} failed: {e:#}");
            let mut fig = Figure::new(id, id, "");
            fig.notes.push(format!("failed: {e:#}"));
            figures.push(fig);
            failed.push(id.to_owned());
        }
    }
}

pub fn run(quick: bool, output: Option<PathBuf>, only: &[String]) -> anyhow::Result<()> {
    if let Some(bad) = only.iter().find(|o| !GROUPS.contains(&o.as_str())) {
        anyhow::bail!(
            "unknown benchmark group {bad:?}: choose from {}",
            GROUPS.join(", ")
        );
    }
    setup::run()?;
    util::require_root("cargo xtask bench")?;
    let bpftrace = bpftrace_script();
    println!("xtask: building sockscope, the workloads and the webrtc-rs example (release)");
    util::build_release(&["tracer-user", "workloads", "webrtc-proxy"])?;
    let bins = Bins::new(&root().join("target/release"));
    let plan = Plan::new(quick);
    let started = std::time::Instant::now();

    let mut figures = Vec::new();
    let mut failed = Vec::new();
    let mut attach_s = Vec::new();
    group(&mut figures, &mut failed, only, "churn", || {
        let c = churn::run(&bins, &plan, bpftrace.as_deref())?;
        attach_s.extend(c.attach_s);
        Ok(c.figures)
    });
    group(&mut figures, &mut failed, only, "paced", || {
        Ok(vec![paced::run(&bins, &plan)?])
    });
    group(&mut figures, &mut failed, only, "echo", || {
        let (f, a) = echo::run(&bins, &plan)?;
        attach_s.extend(a);
        Ok(f)
    });
    group(&mut figures, &mut failed, only, "webrtc", || {
        Ok(vec![webrtc::run(&bins, &plan)?])
    });
    group(&mut figures, &mut failed, only, "loss", || {
        Ok(vec![loss::run(&bins, &plan)?, drain::run(&bins, &plan)?])
    });
    group(&mut figures, &mut failed, only, "memory", || {
        memory::run(&bins, &plan)
    });
    group(&mut figures, &mut failed, only, "unwind", || {
        unwind::run(&bins, &plan)
    });
    group(&mut figures, &mut failed, only, "latency", || {
        let (f, a) = latency::run(&bins, &plan)?;
        attach_s.extend(a);
        Ok(vec![f])
    });
    let mut attach = Figure::new(
        "attach_time",
        "Attach time: sockscope start to hooks attached (first event possible)",
        "ms",
    );
    let ms: Vec<f64> = attach_s.iter().map(|s| s * 1000.0).collect();
    attach.value = stats::spread(&ms);
    if attach.value.is_none() {
        attach.notes.push("no traced round completed".into());
    }
    figures.push(attach);

    let results = Results {
        schema: schema::SCHEMA,
        date: report::utc_now(),
        quick,
        machine: report::machine(),
        figures,
    };
    let json_path = output.unwrap_or_else(|| root().join("bench/results.json"));
    let md_path = json_path.with_extension("md");
    let table = report::markdown(&results);
    println!("\n{table}");
    let json = serde_json::to_string_pretty(&results)?;
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // What we write must read back: the schema check is the smoke test of CI runs.
    Results::parse(&json).context("bench results do not match their own schema")?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    std::fs::write(&md_path, &table)
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    println!(
        "xtask: bench done in {:.0} s; wrote {} and {}",
        started.elapsed().as_secs_f64(),
        json_path.display(),
        md_path.display()
    );
    anyhow::ensure!(
        failed.is_empty(),
        "some benchmarks failed: {}",
        failed.join(", ")
    );
    Ok(())
}
