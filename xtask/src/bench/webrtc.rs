//! WebRTC session churn with the real webrtc-rs example in its network namespace:
//! sessions/s untraced vs under `sockscope check` (markers attached, verdicts on, and the
//! I/O hooks: every send and receive of the example's sockets is counted).
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{
    Plan,
    rounds::side_by_side,
    schema::Figure,
    sockscope::{Bins, loaded_sockscope_programs},
    stats::{median, slowdowns, spread},
};

/// Sessions slower than this hit one of webrtc-rs's 1 s retransmission timers (a
/// datagram lost on a busy loopback): counted apart, they would swamp the rate.
const STALL_SECONDS: f64 = 0.5;

/// One run of the example: each session's duration, from its report lines.
struct Run {
    session_seconds: Vec<f64>,
}

impl Run {
    fn parse(stdout: &[u8]) -> anyhow::Result<Self> {
        let session_seconds: Vec<f64> = String::from_utf8_lossy(stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("pc_ids").is_some())
            .filter_map(|v| v["seconds"].as_f64())
            .collect();
        anyhow::ensure!(
            !session_seconds.is_empty(),
            "webrtc-proxy reported no sessions"
        );
        Ok(Self { session_seconds })
    }

    /// Sessions per second of one session slot, from the median session: robust to
    /// the occasional stall.
    fn rate(&self) -> f64 {
        median(&self.session_seconds).map_or(0.0, |s| 1.0 / s)
    }

    fn stalls(&self) -> usize {
        self.session_seconds
            .iter()
            .filter(|s| **s > STALL_SECONDS)
            .count()
    }
}

fn proxy_args(plan: &Plan) -> Vec<String> {
    ["--netns", "--sessions", &plan.webrtc_sessions.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

pub fn run(bins: &Bins, plan: &Plan) -> anyhow::Result<Figure> {
    println!(
        "bench: webrtc-rs session churn, {} sessions, {} rounds of 2 variants",
        plan.webrtc_sessions, plan.webrtc_reps
    );
    let mut verdicts = Vec::new();
    // Rounds that began with another sockscope's programs loaded.
    let disturbed = std::cell::Cell::new(0usize);
    let note_others =
        || disturbed.set(disturbed.get() + usize::from(loaded_sockscope_programs() > 0));
    let mut untraced = || -> anyhow::Result<Run> {
        note_others();
        let out = bins.cmd("webrtc-proxy").args(proxy_args(plan)).output()?;
        if !out.status.success() {
            bail!(
                "webrtc-proxy failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Run::parse(&out.stdout)
    };
    let mut traced = || -> anyhow::Result<Run> {
        note_others();
        let mut cmd = bins.cmd("sockscope");
        cmd.args(["check", "--grace", "1s", "--"])
            .arg(bins.path("webrtc-proxy"))
            .args(proxy_args(plan));
        let out = run_checked(cmd)?;
        verdicts.push(out.status.code());
        Run::parse(&out.stdout)
    };
    let series = side_by_side(plan.webrtc_reps, &mut [&mut untraced, &mut traced])?;
    let mut f = Figure::new(
        "webrtc_slowdown",
        "WebRTC session churn (webrtc-rs, 2 PeerConnections per session), under sockscope check (I/O hooks on)",
        "x slower (untraced/traced sessions/s)",
    )
    .goal(1.03);
    let rates = |runs: &[Run]| runs.iter().map(Run::rate).collect::<Vec<_>>();
    f.value = spread(&slowdowns(&rates(&series[0]), &rates(&series[1])));
    for (side, runs) in [("untraced", &series[0]), ("traced", &series[1])] {
        if let Some(r) = median(&rates(runs)) {
            f.detail(&format!("{side}_sessions_per_s"), r);
        }
        let all: Vec<f64> = runs
            .iter()
            .flat_map(|r| r.session_seconds.clone())
            .collect();
        f.detail(&format!("{side}_sessions"), all.len() as f64);
        f.detail(
            &format!("{side}_stalled_sessions"),
            runs.iter().map(Run::stalls).sum::<usize>() as f64,
        );
    }
    // `check` always attaches the I/O hooks (a leak's kind comes from them).
    f.detail("io_hooks_on", 1.0);
    f.notes.push(
        "sockscope check attaches the I/O hooks (send/receive syscall tracepoints): every \
         socket of the example is watched from its creation, so each of its sends and \
         receives is counted (ICE, DTLS, SCTP: the session's whole traffic), with a user \
         stack once its PeerConnection ended; every other call on the host costs one \
         failed lookup"
            .into(),
    );
    f.notes.push(format!(
        "rate = 1 / median session time (sessions one after another); sessions over \
         {STALL_SECONDS} s hit a webrtc-rs retransmission timer and are counted as stalls \
         on each side instead"
    ));
    let disturbed = disturbed.get();
    f.detail("rounds_with_other_sockscope_loaded", disturbed as f64);
    if disturbed > 0 {
        f.notes.push(format!(
            "{disturbed} rounds began with another sockscope's programs loaded (a test, a \
             daemon): their hooks ran on both sides, the untraced one too"
        ));
    }
    let clean = verdicts.iter().filter(|c| **c == Some(0)).count();
    f.detail("check_verdicts_clean", clean as f64);
    if clean != verdicts.len() {
        f.notes.push(format!(
            "sockscope check did not say clean on every clean run: exit codes {verdicts:?}"
        ));
    }
    Ok(f)
}

/// Runs `sockscope check`, which exits 1 on leaks: only 2 (no verdict) is a failure.
fn run_checked(mut cmd: Command) -> anyhow::Result<std::process::Output> {
    let out = cmd.output().context("cannot run sockscope check")?;
    if out.status.code() == Some(2) || out.status.code().is_none() {
        bail!(
            "sockscope check gave no verdict ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}
