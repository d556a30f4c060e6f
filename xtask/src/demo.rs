//! The demo: `sockscope check` on real webrtc-rs programs in a network namespace with
//! only `lo`. First webrtc-rs 0.21 (tokio), the current line: once with a
//! PeerConnection dropped without close() (its sockets flagged with their connection
//! and creating stack, exit 1), once clean (exit 0). Then a real upstream bug with
//! nothing injected, webrtc-rs #831: a browser-like peer offers `.local` host
//! candidates; on 0.17.1 the mDNS socket of each answering connection outlives it
//! (exit 1), and 0.17.2, with the fix, is clean (exit 0).
use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::{examples, setup, util};

/// Runs one check and returns its exit code.
fn check(title: &str, program: &Path, args: &[&str]) -> anyhow::Result<Option<i32>> {
    let mut cmd = Command::new("target/release/sockscope");
    cmd.args(["check", "--grace", "1s", "--"])
        .arg(program)
        .args(["--netns", "--linger", "1500"])
        .args(args);
    let shown: Vec<String> = std::iter::once("sockscope".to_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect();
    println!("\n== {title}\n$ {}\n", shown.join(" "));
    let status = cmd
        .status()
        .context("cannot run target/release/sockscope")?;
    println!(
        "\n(sockscope exit code: {})",
        status.code().map_or("signal".into(), |c| c.to_string())
    );
    Ok(status.code())
}

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    util::require_root("cargo xtask demo")?;
    println!(
        "xtask: building sockscope and the webrtc-rs examples (release; the first build takes a few minutes)"
    );
    util::build_release(&["tracer-user", "webrtc-proxy"])?;
    let bins = examples::build_all()?;
    let v021 = bins.join("webrtc21-proxy");
    let v0171 = bins.join("webrtc-proxy-0171");
    let v0172 = Path::new("target/release/webrtc-proxy");
    let runs = [
        (
            "webrtc-rs 0.21 (tokio): session 1's offerer is dropped without close(); its driver keeps its sockets",
            &*v021,
            &[
                "--sessions",
                "3",
                "--leak",
                "drop-without-close",
                "--leak-session",
                "1",
            ][..],
            1,
        ),
        (
            "webrtc-rs 0.21 (tokio): the same sessions, closed",
            &*v021,
            &["--sessions", "3"][..],
            0,
        ),
        (
            "webrtc-rs 0.17.1, nothing injected: a browser-like peer offers .local host candidates (webrtc-rs #831)",
            &*v0171,
            &["--sessions", "2", "--remote-mdns"][..],
            1,
        ),
        (
            "webrtc-rs 0.17.2 (the fix, #818): the same scenario",
            v0172,
            &["--sessions", "2", "--remote-mdns"][..],
            0,
        ),
    ];
    let mut wrong = Vec::new();
    for (title, program, args, want) in runs {
        let got = check(title, program, args)?;
        if got != Some(want) {
            wrong.push(format!("{title}: exit {got:?}, want {want}"));
        }
    }
    if !wrong.is_empty() {
        bail!("unexpected verdicts:\n  {}", wrong.join("\n  "));
    }
    println!(
        "\nxtask: demo done: the dropped 0.21 connection and the real 0.17.1 mDNS leak were flagged (exit 1); the closed sessions and 0.17.2 passed (exit 0)"
    );
    Ok(())
}
