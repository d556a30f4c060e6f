//! The demo: `sockscope check` on a real webrtc-rs program (examples/webrtc-proxy) in
//! a network namespace with only `lo`: once with a leaked mDNS socket (flagged with
//! its PeerConnection and creating stack, exit 1), once clean (exit 0).
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{setup, util};

fn check(title: &str, proxy_args: &[&str]) -> anyhow::Result<Option<i32>> {
    let mut cmd = Command::new("target/release/sockscope");
    cmd.args([
        "check",
        "--grace",
        "1s",
        "--",
        "target/release/webrtc-proxy",
        "--netns",
        "--sessions",
        "3",
    ])
    .args(proxy_args);
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
        "xtask: building sockscope and the webrtc-rs example (release; the first build takes a few minutes)"
    );
    util::build_release(&["tracer-user", "webrtc-proxy"])?;
    let leak = check(
        "webrtc-rs sessions; session 1 leaks an mDNS socket whose query task never stops",
        &["--leak", "mdns", "--leak-session", "1", "--linger", "1500"],
    )?;
    let clean = check("the same sessions without the leak", &["--linger", "1500"])?;
    if leak != Some(1) || clean != Some(0) {
        bail!(
            "unexpected verdicts: leak run exited {leak:?} (want 1), clean run {clean:?} (want 0)"
        );
    }
    println!("\nxtask: demo done: the leak was flagged (exit 1) and the clean run passed (exit 0)");
    Ok(())
}
