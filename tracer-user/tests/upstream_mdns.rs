//! A real upstream leak, nothing injected: webrtc-rs #831 (and #601, #608, #616, #739).
//! A browser-like peer offers its host candidates as unresolvable `<uuid>.local` names;
//! on webrtc-rs <= 0.17.1 the mDNS query that never gets an answer parks a task that
//! keeps the connection's mDNS socket (and with it the ICE agent and its host socket)
//! after close(). Fixed in webrtc-mdns 0.17.2 (#818); 0.20 removed the mechanism.
//! Each version runs the same scenario in a netns with only `lo`, checked against the
//! program's own /proc count of the UDP sockets still open after close.
mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// `check --grace 1s -- BIN --netns --sessions 2 --remote-mdns --self-check 1500`.
fn remote_mdns_run(bin: &Path) -> CheckRun {
    run_check(
        &["--grace", "1s"],
        bin,
        &[
            "--netns",
            "--sessions",
            "2",
            "--remote-mdns",
            "--self-check",
            "1500",
            "--linger",
            "300",
        ],
    )
}

/// Ports of the UDP sockets /proc shows open 1.5 s after every session closed.
fn still_open(run: &CheckRun) -> Vec<u64> {
    let check = run
        .program
        .iter()
        .find_map(|l| l.get("self_check"))
        .unwrap_or_else(|| panic!("no self_check line: {:#?}\n{}", run.program, run.stderr));
    let mut v: Vec<u64> = check["open_udp"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["port"].as_u64().unwrap())
        .collect();
    v.sort();
    v
}

fn leaked_ports(run: &CheckRun) -> Vec<u64> {
    let mut v: Vec<u64> = by_event(&run.ours, "leak")
        .iter()
        .map(|l| l["local_port"].as_u64().unwrap())
        .collect();
    v.sort();
    v
}

fn frame_text(leak: &Value) -> String {
    leak["stack"].to_string()
}

#[test]
fn webrtc_0_17_1_leaks_the_mdns_socket_of_each_connection_with_remote_local_names() {
    let test = "webrtc_0_17_1_leaks_the_mdns_socket_of_each_connection_with_remote_local_names";
    if !require_root(test) {
        return;
    }
    let Some(bin) = example_bin(test, "webrtc-proxy-0171") else {
        return;
    };
    let run = remote_mdns_run(&bin);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let truth = still_open(&run);
    assert!(
        truth.iter().filter(|p| **p == 5353).count() == 2,
        "ground truth: each session's answerer keeps its mDNS socket: {truth:?}"
    );
    assert_eq!(
        leaked_ports(&run),
        truth,
        "every socket /proc shows open, and only those"
    );
    let leaks = by_event(&run.ours, "leak");
    let mdns: Vec<&&Value> = leaks.iter().filter(|l| l["local_port"] == 5353).collect();
    for l in &mdns {
        assert_eq!(l["subsystem"], "mdns", "{l}");
        assert_eq!(
            l["pc_id"].as_u64().map(|p| p % 2),
            Some(0),
            "an answerer: {l}"
        );
        assert!(
            frame_text(l).contains("webrtc-mdns") || frame_text(l).contains("webrtc_mdns"),
            "the creating stack goes through webrtc-mdns: {l}"
        );
    }
}

#[test]
fn webrtc_0_17_2_and_0_21_release_everything_in_the_same_scenario() {
    let test = "webrtc_0_17_2_and_0_21_release_everything_in_the_same_scenario";
    if !require_root(test) {
        return;
    }
    let Some(v021) = example_bin(test, "webrtc21-proxy") else {
        return;
    };
    for bin in [workload_bin("webrtc-proxy"), v021] {
        let run = remote_mdns_run(&bin);
        assert_eq!(run.code, Some(0), "{}: {}", bin.display(), run.stderr);
        assert_eq!(still_open(&run), Vec::<u64>::new(), "{}", bin.display());
        let verdicts = by_event(&run.ours, "verdict");
        assert_eq!(verdicts.len(), 4, "{}", bin.display());
        assert!(verdicts.iter().all(|v| v["outcome"] == "clean"));
    }
}
