//! A network namespace with only `lo`, so ICE, STUN and mDNS never reach a real
//! interface: this program sends traffic to loopback only. Shared by the webrtc-rs
//! examples of both lines (webrtc21-proxy includes this file).
use std::process::Command;

use anyhow::{Context as _, bail};

/// Interfaces of this process's network namespace (/proc/self/net/dev follows the
/// namespace; /sys/class/net shows the one sysfs was mounted in).
pub fn interfaces() -> Vec<String> {
    std::fs::read_to_string("/proc/self/net/dev")
        .map(|t| {
            t.lines()
                .skip(2)
                .filter_map(|l| Some(l.split_once(':')?.0.trim().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Moves this (still single-threaded) process into a new network namespace and brings
/// `lo` up, with multicast so mDNS stays on it.
pub fn enter_private_netns() -> anyhow::Result<()> {
    // SAFETY: plain syscall; called before any thread is started.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!(
            "cannot create a network namespace: {} (run as root)",
            std::io::Error::last_os_error()
        );
    }
    for args in [
        &["link", "set", "lo", "up"][..],
        &["link", "set", "lo", "multicast", "on"],
        &["route", "add", "224.0.0.0/4", "dev", "lo"],
    ] {
        let status = Command::new("ip")
            .args(args)
            .status()
            .context("cannot run `ip` (iproute2)")?;
        if !status.success() {
            bail!("`ip {}` failed", args.join(" "));
        }
    }
    Ok(())
}

/// Refuses to run where a real interface exists, unless allowed.
pub fn require_loopback_only(allow_host_net: bool) -> anyhow::Result<()> {
    let others: Vec<String> = interfaces().into_iter().filter(|i| i != "lo").collect();
    if !others.is_empty() && !allow_host_net {
        bail!(
            "network interfaces other than lo exist ({}): run with --netns (or inside `unshare -n`) so no traffic leaves loopback",
            others.join(", ")
        );
    }
    Ok(())
}

/// The network the program may run in: a namespace of its own with only `lo` when
/// `netns`, and in any case no interface but `lo` unless `allow_host_net`. On failure
/// the one-line reason is on stderr (prefixed with `program`) and the exit code is 2.
pub fn prepare(
    netns: bool,
    allow_host_net: bool,
    program: &str,
) -> Result<(), std::process::ExitCode> {
    let ready = if netns { enter_private_netns() } else { Ok(()) }
        .and_then(|()| require_loopback_only(allow_host_net));
    ready.map_err(|e| {
        eprintln!("{program}: {e:#}");
        std::process::ExitCode::from(2)
    })
}
