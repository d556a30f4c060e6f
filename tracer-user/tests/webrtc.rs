//! `sockscope check` on a real webrtc-rs program (examples/webrtc-proxy) in a network
//! namespace with only `lo`: verdicts against the program's own /proc ground truth.
mod common;

use common::*;
use serde_json::Value;

/// `sockscope check --grace 1s --format json -- webrtc-proxy --netns --linger 1500 ARGS`.
fn check_proxy(args: &[&str]) -> CheckRun {
    let mut proxy_args = vec!["--netns", "--linger", "1500"];
    proxy_args.extend_from_slice(args);
    run_check(
        &["--grace", "1s"],
        &workload_bin("webrtc-proxy"),
        &proxy_args,
    )
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// (pc_id, port) of each leak the program injected.
fn injected(run: &CheckRun) -> Vec<(u64, u64)> {
    sorted(
        run.program
            .iter()
            .flat_map(|l| l["leaked"].as_array().cloned().unwrap_or_default())
            .map(|l| (l["pc_id"].as_u64().unwrap(), l["port"].as_u64().unwrap()))
            .collect(),
    )
}

/// Ports of the UDP sockets /proc says are still open after close + grace.
fn still_open(run: &CheckRun) -> Vec<u64> {
    let check = run
        .program
        .iter()
        .find_map(|l| l.get("self_check"))
        .expect("self_check line");
    sorted(
        check["open_udp"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["port"].as_u64().unwrap())
            .collect(),
    )
}

fn flagged(run: &CheckRun) -> Vec<(u64, u64)> {
    sorted(
        by_event(&run.ours, "leak")
            .iter()
            .map(|l| {
                (
                    l["pc_id"].as_u64().unwrap(),
                    l["local_port"].as_u64().unwrap(),
                )
            })
            .collect(),
    )
}

fn stack_names(leak: &Value) -> Vec<String> {
    leak["stack"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| {
            let inl = f["inlined"].as_array().cloned().unwrap_or_default();
            inl.into_iter().chain(std::iter::once(f["symbol"].clone()))
        })
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn clean_sessions_give_a_clean_verdict() {
    if !require_root("clean_sessions_give_a_clean_verdict") {
        return;
    }
    let run = check_proxy(&["--sessions", "3", "--self-check", "1200"]);
    assert_eq!(
        run.code,
        Some(0),
        "clean → 0; stderr: {}; {:#?}",
        run.stderr,
        run.ours
    );
    assert!(still_open(&run).is_empty(), "ground truth: nothing open");
    assert!(flagged(&run).is_empty(), "no false positive");
    let verdicts = by_event(&run.ours, "verdict");
    assert_eq!(verdicts.len(), 6, "3 sessions × 2 PeerConnections judged");
    assert!(
        verdicts
            .iter()
            .all(|v| v["outcome"] == "clean" && v["sockets"].as_u64() >= Some(1)),
        "{verdicts:#?}"
    );
}

fn assert_leak_kind(kind: &str, creator: &str, subsystem: &str) {
    let run = check_proxy(&[
        "--sessions",
        "3",
        "--leak",
        kind,
        "--leak-session",
        "1",
        "--self-check",
        "1200",
    ]);
    assert_eq!(
        run.code,
        Some(1),
        "{kind}: leak → 1; stderr: {}",
        run.stderr
    );
    let injected = injected(&run);
    assert_eq!(injected.len(), 1, "{kind}: one injected leak");
    assert_eq!(
        flagged(&run),
        injected,
        "{kind}: flagged exactly what was leaked"
    );
    let ports: Vec<u64> = injected.iter().map(|i| i.1).collect();
    assert_eq!(still_open(&run), ports, "{kind}: /proc ground truth agrees");
    assert_eq!(injected[0].0, 3, "{kind}: session 1's offerer");
    let leak = by_event(&run.ours, "leak")[0];
    let names = stack_names(leak);
    assert!(
        names.iter().any(|n| n.contains(creator)),
        "{kind}: {creator} in the creating stack: {names:#?}"
    );
    assert_eq!(leak["subsystem"], subsystem, "{kind}");
}

#[test]
fn task_leak_is_flagged_with_its_creator() {
    if require_root("task_leak_is_flagged_with_its_creator") {
        assert_leak_kind("task", "open_session_mux", "other");
    }
}

#[test]
fn arc_cycle_leak_is_flagged_with_its_creator() {
    if require_root("arc_cycle_leak_is_flagged_with_its_creator") {
        assert_leak_kind("arc-cycle", "open_session_mux", "other");
    }
}

#[test]
fn mdns_leak_is_flagged_with_its_creator() {
    if require_root("mdns_leak_is_flagged_with_its_creator") {
        assert_leak_kind("mdns", "webrtc_mdns::conn::DnsConn::server", "mdns");
    }
}

#[test]
fn only_the_leaking_one_of_concurrent_sessions_is_flagged() {
    if !require_root("only_the_leaking_one_of_concurrent_sessions_is_flagged") {
        return;
    }
    let run = check_proxy(&[
        "--sessions",
        "3",
        "--concurrent",
        "--leak",
        "task",
        "--leak-session",
        "1",
        "--self-check",
        "1200",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(flagged(&run), injected(&run));
    let leaking: Vec<u64> = by_event(&run.ours, "verdict")
        .iter()
        .filter(|v| v["outcome"] != "clean")
        .map(|v| v["pc_id"].as_u64().unwrap())
        .collect();
    assert_eq!(leaking, vec![3], "only session 1's offerer");
}

#[test]
fn a_peer_connection_dropped_without_close_fails_the_check() {
    if !require_root("a_peer_connection_dropped_without_close_fails_the_check") {
        return;
    }
    let run = check_proxy(&[
        "--sessions",
        "2",
        "--leak",
        "drop-without-close",
        "--self-check",
        "1500",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    // Ground truth: the dropped offerers' ICE sockets, still open per /proc.
    let open = still_open(&run);
    assert_eq!(open.len(), 2, "one socket per dropped offerer stays open");
    let flagged_ports: Vec<u64> = sorted(flagged(&run).into_iter().map(|(_, p)| p).collect());
    assert_eq!(flagged_ports, open);
    for l in by_event(&run.ours, "leak") {
        assert_eq!(l["ended"], "dropped_without_close", "{l}");
        assert_eq!(
            l["pc_id"].as_u64().map(|p| p % 2),
            Some(1),
            "an offerer: {l}"
        );
    }
    let dropped: Vec<u64> = by_event(&run.ours, "verdict")
        .iter()
        .filter(|v| v["ended"] == "dropped_without_close")
        .map(|v| v["pc_id"].as_u64().unwrap())
        .collect();
    assert_eq!(sorted(dropped), vec![1, 3]);
}

#[test]
fn peer_connections_open_at_exit_warn_and_fail_only_under_strict() {
    if !require_root("peer_connections_open_at_exit_warn_and_fail_only_under_strict") {
        return;
    }
    let args = ["--netns", "--sessions", "1", "--exit-with-open"];
    let bin = workload_bin("webrtc-proxy");
    let run = run_check(&["--grace", "1s"], &bin, &args);
    assert_eq!(run.code, Some(0), "a warning only: {}", run.stderr);
    assert!(
        run.stderr.contains("never closed nor dropped"),
        "{}",
        run.stderr
    );
    let left = run
        .program
        .iter()
        .find_map(|l| l.get("exiting_with_open"))
        .expect("the program says what it left open")
        .clone();
    let truth: Vec<u64> = sorted(
        left["open_udp"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["cookie"].as_u64())
            .collect(),
    );
    let unclosed = by_event(&run.ours, "unclosed");
    let listed: Vec<u64> = sorted(
        unclosed
            .iter()
            .flat_map(|u| u["sockets"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s["cookie"].as_u64())
            .collect(),
    );
    assert_eq!(
        listed, truth,
        "every socket /proc showed open, under its connection"
    );
    assert_eq!(
        sorted(
            unclosed
                .iter()
                .map(|u| u["pc_id"].as_u64().unwrap())
                .collect()
        ),
        vec![1, 2]
    );
    let strict = run_check(&["--grace", "1s", "--strict"], &bin, &args);
    assert_eq!(strict.code, Some(1), "--strict fails: {}", strict.stderr);
}
