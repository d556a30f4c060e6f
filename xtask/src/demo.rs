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

/// Runs one check (its report saved as `target/demo/<name>.json`, and drawn as
/// `<name>.html` when it found leaks) and returns its exit code.
fn check(title: &str, name: &str, program: &Path, args: &[&str]) -> anyhow::Result<Option<i32>> {
    let dir = Path::new("target/demo");
    std::fs::create_dir_all(dir).context("cannot create target/demo")?;
    let report = dir.join(format!("{name}.json"));
    let mut cmd = Command::new("target/release/sockscope");
    cmd.args(["check", "--grace", "1s", "--report"])
        .arg(&report)
        .arg("--")
        .arg(program)
        .args(["--netns", "--linger", "1500"])
        .args(args);
    let shown: Vec<String> = std::iter::once("sockscope".to_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect();
    println!("\n== {title}\n$ {}\n", shown.join(" "));
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run target/release/sockscope")?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    println!(
        "\n(sockscope exit code: {})",
        out.status.code().map_or("signal".into(), |c| c.to_string())
    );
    explained(&text)?;
    if out.status.code() == Some(1) {
        let html = dir.join(format!("{name}.html"));
        let drawn = Command::new("target/release/sockscope")
            .arg("report")
            .arg(&report)
            .arg("--html")
            .arg(&html)
            .status()
            .context("cannot run sockscope report --html")?;
        anyhow::ensure!(drawn.success(), "sockscope report --html failed");
    }
    Ok(out.status.code())
}

/// Every leak line is followed by what keeps the socket open and where the
/// application created it (the one thing a reader wants first).
fn explained(text: &str) -> anyhow::Result<()> {
    let text = format!("\n{text}");
    let blocks = text.split("\nLEAK").skip(1);
    for block in blocks {
        let first = block.lines().next().unwrap_or("");
        let body: Vec<&str> = block
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .collect();
        let why = body.iter().any(|l| l.trim_start().starts_with("why: "));
        let site = body.iter().any(|l| {
            let l = l.trim_start();
            l.starts_with("created in ")
                || l.starts_with("created by webrtc-rs for the PeerConnection")
        });
        anyhow::ensure!(
            why && site,
            "a leak without its why ({why}) or its creating site ({site}): LEAK{first}"
        );
    }
    Ok(())
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
            "0.21-dropped",
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
            "0.21-closed",
            "webrtc-rs 0.21 (tokio): the same sessions, closed",
            &*v021,
            &["--sessions", "3"][..],
            0,
        ),
        (
            "0.17.1-mdns",
            "webrtc-rs 0.17.1, nothing injected: a browser-like peer offers .local host candidates (webrtc-rs #831)",
            &*v0171,
            &["--sessions", "2", "--remote-mdns"][..],
            1,
        ),
        (
            "0.17.2-mdns",
            "webrtc-rs 0.17.2 (the fix, #818): the same scenario",
            v0172,
            &["--sessions", "2", "--remote-mdns"][..],
            0,
        ),
    ];
    let mut wrong = Vec::new();
    for (name, title, program, args, want) in runs {
        let got = check(title, name, program, args)?;
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
    println!(
        "xtask: the leaking runs drawn as timelines: target/demo/0.21-dropped.html and target/demo/0.17.1-mdns.html (open them in a browser; reports beside them)"
    );
    Ok(())
}
