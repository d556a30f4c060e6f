//! What DWARF-mode creating stacks (`--stacks dwarf`: registers and the top of the user
//! stack copied per socket, unwound in user space) cost beside frame-pointer stacks
//! (`--stacks fp`), side by side in one run: BPF time per socket, ring bytes per
//! socket, sockscope's CPU per unwound stack, and the highest socket rate followed
//! without loss. The workload is `udp_churn` (create, bind, close on a worker thread),
//! traced with `trace --pid P --stacks MODE` (stacks named, output discarded).
use super::{
    Plan,
    rounds::{Round, round},
    schema::Figure,
    sockscope::{Bins, BpfStats, start_trace, trace_summary},
    stats::{median, spread},
};

const MODES: [&str; 2] = ["fp", "dwarf"];

/// Paced rates (sockets/s) for the loss ladder of `--stacks dwarf`: each socket moves
/// about 16.5 KiB through the ring, so its ladder starts well below the frame-pointer
/// one.
const DWARF_RATES: [u64; 6] = [2_000, 5_000, 10_000, 20_000, 40_000, 80_000];

/// Ring bytes of a create record (its 8-byte header included), and of a sample's
/// header: the sample then carries the stack bytes copied (16 KiB by default, less when
/// the stack mapping ends sooner).
const CREATE_RECORD: f64 = 8.0 + 72.0;
const SAMPLE_HEADER: f64 = 8.0 + 72.0;
const DEFAULT_STACK_BYTES: f64 = 16384.0;

struct PerSocket {
    bpf_ns: f64,
    exit_prog_ns: f64,
    user_ns: f64,
    lost: u64,
}

fn measure(r: &Round) -> anyhow::Result<PerSocket> {
    let sockets = r.result["sockets"].as_f64().filter(|n| *n > 0.0);
    let sockets = sockets.ok_or_else(|| anyhow::anyhow!("no sockets in {}", r.result))?;
    let t = r
        .traced
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("round not traced"))?;
    let bpf: f64 = t.progs.iter().map(|p| p.run_time.as_nanos() as f64).sum();
    let exit: f64 = t
        .progs
        .iter()
        .filter(|p| p.name.starts_with("sockscope_sock"))
        .map(|p| p.run_time.as_nanos() as f64)
        .sum();
    Ok(PerSocket {
        bpf_ns: bpf / sockets,
        exit_prog_ns: exit / sockets,
        user_ns: t.cpu.as_nanos() as f64 / sockets,
        lost: trace_summary(&t.out)?.lost,
    })
}

fn churn_round(bins: &Bins, mode: &str, count: u64, rate: Option<u64>) -> anyhow::Result<Round> {
    let mut cmd = bins.cmd("udp_churn");
    cmd.args(["--count", &count.to_string()]);
    if let Some(r) = rate {
        cmd.args(["--rate", &r.to_string()]);
    }
    let extra = ["--stacks", mode];
    let trace = |pid: u32| start_trace(bins, pid, &extra);
    round(cmd, Some(&trace))
}

pub fn run(bins: &Bins, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    println!("bench: DWARF-mode stacks beside frame-pointer stacks (trace --stacks fp|dwarf)");
    let count = (plan.churn_per_thread / 5).max(1000);
    let _stats = BpfStats::enable()?;
    let mut per_mode: Vec<Vec<PerSocket>> = MODES.iter().map(|_| Vec::new()).collect();
    for rep in 0..plan.reps {
        // Alternate which mode goes first, so drift hits both alike.
        let order: Vec<usize> = if rep % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for i in order {
            let r = churn_round(bins, MODES[i], count, None)?;
            per_mode[i].push(measure(&r)?);
        }
    }
    let values =
        |i: usize, f: fn(&PerSocket) -> f64| -> Vec<f64> { per_mode[i].iter().map(f).collect() };
    // A detail only when measured (NaN does not survive JSON).
    let put = |f: &mut Figure, key: &str, v: &[f64]| {
        if let Some(m) = median(v) {
            f.details.insert(key.to_owned(), m);
        }
    };

    let mut bpf = Figure::new(
        "unwind_bpf_ns_per_socket",
        "DWARF-mode stacks: BPF time per socket (create, bind, release), --stacks dwarf",
        "ns",
    );
    bpf.value = spread(&values(1, |p| p.bpf_ns));
    put(&mut bpf, "fp_bpf_ns_per_socket", &values(0, |p| p.bpf_ns));
    put(
        &mut bpf,
        "fp_create_progs_ns_per_socket",
        &values(0, |p| p.exit_prog_ns),
    );
    put(
        &mut bpf,
        "dwarf_create_progs_ns_per_socket",
        &values(1, |p| p.exit_prog_ns),
    );
    bpf.details
        .insert("fp_ring_bytes_per_socket_create".into(), CREATE_RECORD);
    bpf.details.insert(
        "dwarf_ring_bytes_per_socket_create".into(),
        CREATE_RECORD + SAMPLE_HEADER + DEFAULT_STACK_BYTES,
    );
    let lost: u64 = per_mode.iter().flatten().map(|p| p.lost).sum();
    bpf.details.insert("lost_events".into(), lost as f64);
    bpf.notes.push(format!(
        "udp_churn, {count} sockets per round, {} rounds per mode alternating; ring bytes are the record sizes (a sample copies 16 KiB by default: a worker thread's stack always has that much above its stack pointer)",
        plan.reps
    ));

    let mut user = Figure::new(
        "unwind_user_us_per_stack",
        "DWARF-mode stacks: sockscope CPU per socket, --stacks dwarf minus --stacks fp (the unwinding, per stack)",
        "µs",
    );
    let fp_user = values(0, |p| p.user_ns);
    let dwarf_user = values(1, |p| p.user_ns);
    let diffs: Vec<f64> = dwarf_user
        .iter()
        .zip(&fp_user)
        .map(|(d, f)| (d - f) / 1000.0)
        .collect();
    user.value = spread(&diffs);
    let us = |v: &[f64]| v.iter().map(|x| x / 1000.0).collect::<Vec<f64>>();
    put(&mut user, "fp_user_us_per_socket", &us(&fp_user));
    put(&mut user, "dwarf_user_us_per_socket", &us(&dwarf_user));

    // Highest paced rate that --stacks dwarf follows without loss (default ring for the
    // mode: 4 MiB).
    let mut loss = Figure::new(
        "unwind_events_per_s",
        "DWARF-mode stacks: highest socket rate traced without loss (sockets/s, --stacks dwarf)",
        "sockets/s",
    );
    let mut best = None;
    for &rate in DWARF_RATES.iter().take(if plan.reps > 3 { 6 } else { 4 }) {
        let count = ((rate as f64 * plan.loss_seconds) as u64).max(1);
        let r = churn_round(bins, "dwarf", count, Some(rate))?;
        let p = measure(&r)?;
        let achieved = r.result["sockets"].as_f64().unwrap_or(0.0)
            / r.result["seconds"]
                .as_f64()
                .filter(|s| *s > 0.0)
                .unwrap_or(1.0);
        loss.details
            .insert(format!("lost_at_{rate}_per_s"), p.lost as f64);
        if p.lost == 0 {
            best = Some(achieved);
        } else {
            break;
        }
    }
    loss.value = best.and_then(|b| spread(&[b]));
    if best.is_none() {
        loss.notes
            .push("events were lost at every rate tried".into());
    }
    loss.notes.push(format!(
        "paced udp_churn at {:?} sockets/s (up to the first loss) for {} s each, default ring of the mode (4 MiB); the value is the rate achieved at the highest rung without loss",
        DWARF_RATES, plan.loss_seconds
    ));
    Ok(vec![bpf, user, loss])
}
