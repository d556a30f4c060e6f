//! `sockscope check` and `watch` on a real webrtc-rs 0.21 program
//! (examples/webrtc21-proxy, tokio and smol) in a network namespace with only `lo`,
//! against the program's own ground truth: the SO_COOKIE of every socket its
//! connections' runtime wrapped, and which of them /proc still shows open.
mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

const BIN: &str = "webrtc21-proxy";

/// `check --grace 1s -- webrtc21-proxy --netns --linger 1500 ARGS`, or `None` (skip).
fn check21(test: &str, check_args: &[&str], args: &[&str]) -> Option<CheckRun> {
    if !require_root(test) {
        return None;
    }
    let bin = example_bin(test, BIN)?;
    Some(check21_with(&bin, check_args, args))
}

/// [`check21`] of a given build of the example.
fn check21_with(bin: &std::path::Path, check_args: &[&str], args: &[&str]) -> CheckRun {
    let mut proxy_args = vec!["--netns", "--linger", "1500"];
    proxy_args.extend_from_slice(args);
    let mut check_args = check_args.to_vec();
    check_args.extend(["--grace", "1s"]);
    run_check(&check_args, bin, &proxy_args)
}

/// Per PeerConnection (from the program): every socket cookie its runtime wrapped.
fn sockets_of(run: &CheckRun) -> Vec<(u64, BTreeSet<u64>)> {
    run.program
        .iter()
        .flat_map(|l| l["pcs"].as_array().cloned().unwrap_or_default())
        .map(|pc| {
            let cookies = pc["sockets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["cookie"].as_u64().unwrap())
                .collect();
            (pc["pc_id"].as_u64().unwrap(), cookies)
        })
        .collect()
}

/// Cookies of the UDP sockets /proc still shows open at the program's final self-check
/// (`--self-check MS` after the last session), with the connections they belong to as
/// far as the program knows.
fn open_at_the_end(run: &CheckRun) -> BTreeSet<u64> {
    run.program
        .iter()
        .find_map(|l| l.get("self_check"))
        .expect("self_check line")["open_udp"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["cookie"].as_u64())
        .collect()
}

/// Ground truth for a leak that webrtc-rs itself keeps changing: after a drop, the
/// driver may rebind (new sockets the program never listed) or stop later after all.
/// What /proc still shows open long after the verdicts must be flagged, and what is
/// flagged must be the dropped connections'.
fn assert_flagged_matches_the_end(run: &CheckRun, dropped: &[u64]) {
    let ours = flagged(run);
    assert!(!ours.is_empty(), "the connections keep sockets open");
    assert!(ours.iter().all(|(pc, _)| dropped.contains(pc)), "{ours:?}");
    let cookies: BTreeSet<u64> = ours.iter().map(|(_, c)| *c).collect();
    let end = open_at_the_end(run);
    assert!(
        end.is_subset(&cookies),
        "everything /proc still shows open is flagged: {end:?} vs {ours:?}"
    );
}

fn flagged(run: &CheckRun) -> BTreeSet<(u64, u64)> {
    by_event(&run.ours, "leak")
        .iter()
        .map(|l| (l["pc_id"].as_u64().unwrap(), l["cookie"].as_u64().unwrap()))
        .collect()
}

fn verdict(run: &CheckRun, pc_id: u64) -> &Value {
    by_event(&run.ours, "verdict")
        .into_iter()
        .find(|v| v["pc_id"] == pc_id)
        .unwrap_or_else(|| panic!("no verdict for pc {pc_id}: {:#?}", run.ours))
}

/// Every PeerConnection clean, each with exactly the sockets its runtime wrapped.
fn assert_all_clean_and_attributed(run: &CheckRun) {
    assert_eq!(run.code, Some(0), "{}\n{:#?}", run.stderr, run.ours);
    let pcs = sockets_of(run);
    assert!(!pcs.is_empty(), "the program reported its connections");
    for (pc_id, cookies) in &pcs {
        let v = verdict(run, *pc_id);
        assert_eq!(v["outcome"], "clean", "{v}");
        assert_eq!(
            v["sockets"].as_u64(),
            Some(cookies.len() as u64),
            "every socket of pc {pc_id} attributed to it: {v}"
        );
    }
}

#[test]
fn tokio_sessions_with_an_ice_restart_are_clean_and_every_socket_attributed() {
    let test = "tokio_sessions_with_an_ice_restart_are_clean_and_every_socket_attributed";
    let Some(run) = check21(test, &[], &["--sessions", "2", "--ice-restart"]) else {
        return;
    };
    assert_all_clean_and_attributed(&run);
    // The restart really rebound: each connection had two generations (host + mDNS each).
    for (pc_id, cookies) in sockets_of(&run) {
        assert_eq!(
            cookies.len(),
            4,
            "pc {pc_id}: two generations of two sockets"
        );
    }
}

#[test]
fn smol_sessions_and_a_close_from_a_callback_are_clean() {
    let test = "smol_sessions_and_a_close_from_a_callback_are_clean";
    let args = [
        "--runtime",
        "smol",
        "--sessions",
        "2",
        "--close-in-callback",
    ];
    let Some(run) = check21(test, &[], &args) else {
        return;
    };
    assert_all_clean_and_attributed(&run);
    assert!(
        run.program
            .iter()
            .any(|l| l["close_in_callback"]["returned_us"].is_u64()),
        "the answerer was closed from its callback"
    );
}

#[test]
fn a_connection_dropped_without_close_fails_the_check_with_its_sockets_named() {
    let test = "a_connection_dropped_without_close_fails_the_check_with_its_sockets_named";
    let args = [
        "--sessions",
        "2",
        "--drop-without-close",
        "--self-check",
        "1500",
    ];
    let Some(run) = check21(test, &[], &args) else {
        return;
    };
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_flagged_matches_the_end(&run, &[1, 3]);
    let truth = flagged(&run);
    for l in by_event(&run.ours, "leak") {
        assert_eq!(l["ended"], "dropped_without_close", "{l}");
        assert_eq!(l["confidence"], "cookie_marker", "{l}");
        let want = if l["local_port"] == 5353 {
            "mdns"
        } else {
            "ice_agent"
        };
        assert_eq!(l["subsystem"], want, "{l}");
        // The driver task made it: no application frame on its stack; where to look is
        // where the application made the PeerConnection (its pc_open's stack).
        assert!(l["site"].is_null(), "{l}");
        let pc_site = &l["pc_site"];
        assert!(
            pc_site["function"]
                .as_str()
                .is_some_and(|f| f.starts_with("webrtc21_proxy::session::"))
                && pc_site["file"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("webrtc21-proxy/src/session.rs")),
            "{pc_site}"
        );
    }
    for (pc, _) in &truth {
        let v = verdict(&run, *pc);
        assert_eq!(
            (v["outcome"].as_str(), v["ended"].as_str()),
            (Some("leak"), Some("dropped_without_close"))
        );
    }
}

#[test]
fn an_arc_cycle_that_keeps_the_driver_alive_is_flagged() {
    let test = "an_arc_cycle_that_keeps_the_driver_alive_is_flagged";
    let args = [
        "--sessions",
        "1",
        "--leak",
        "arc-cycle",
        "--self-check",
        "1500",
    ];
    let Some(run) = check21(test, &[], &args) else {
        return;
    };
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_flagged_matches_the_end(&run, &[1]);
}

#[test]
fn connections_open_at_exit_warn_and_fail_only_under_strict() {
    let test = "connections_open_at_exit_warn_and_fail_only_under_strict";
    let Some(run) = check21(test, &[], &["--sessions", "1", "--exit-with-open"]) else {
        return;
    };
    assert_eq!(run.code, Some(0), "a warning only: {}", run.stderr);
    assert!(
        run.stderr.contains("never closed nor dropped"),
        "{}",
        run.stderr
    );
    let open = run
        .program
        .iter()
        .find_map(|l| l.get("exiting_with_open"))
        .expect("the program says what it left open")
        .clone();
    let unclosed = by_event(&run.ours, "unclosed");
    assert_eq!(unclosed.len(), 2, "both connections: {unclosed:#?}");
    for u in unclosed {
        let pc = u["pc_id"].as_u64().unwrap().to_string();
        let ours: BTreeSet<u64> = u["sockets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["cookie"].as_u64().unwrap())
            .collect();
        let truth: BTreeSet<u64> = open[&pc]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["cookie"].as_u64().unwrap())
            .collect();
        assert_eq!(ours, truth, "pc {pc}");
    }
    let Some(strict) = check21(
        test,
        &["--strict"],
        &["--sessions", "1", "--exit-with-open"],
    ) else {
        return;
    };
    assert_eq!(strict.code, Some(1), "--strict fails: {}", strict.stderr);
}

#[test]
fn watch_attached_mid_session_never_calls_a_connection_in_flight_clean() {
    let test = "watch_attached_mid_session_never_calls_a_connection_in_flight_clean";
    if !require_root(test) {
        return;
    }
    let Some(bin) = example_bin(test, BIN) else {
        return;
    };
    let _serial = serial();
    // Every session drops its offerer without close(): 2 sockets leak per session.
    let late = watch_from_pause(
        &bin,
        &[
            "--netns",
            "--sessions",
            "3",
            "--drop-without-close",
            "--pause-session",
            "0",
            "--self-check",
            "1500",
            "--linger",
            "1000",
        ],
    );
    let run = CheckRun {
        code: late.status,
        ours: late.ours,
        program: late.program,
        stderr: String::new(),
    };
    // Session 0 (pcs 1 and 2) was in flight: incomplete, never clean. The helper
    // announces a connection's sockets again as it ends, so what pc 1 leaked is tied to
    // it from the start-up inventory and reported as its leaks.
    for pc in [1, 2] {
        let v = verdict(&run, pc);
        assert_eq!(v["outcome"], "incomplete", "{v}");
        assert_eq!(v["reason"], "opened_before_attach", "{v}");
    }
    // Flagged: the dropped connections' sockets, everything still open at the end.
    assert_flagged_matches_the_end(&run, &[1, 3, 5]);
    let ours = flagged(&run);
    for l in by_event(&run.ours, "leak")
        .iter()
        .filter(|l| l["pc_id"] == 1)
    {
        assert_eq!(
            (l["origin"].as_str(), l["age_ns"].is_null()),
            (Some("preexisting"), true),
            "{l}"
        );
    }
    // Sessions 1 and 2 started after the attach: judged as usual.
    for pc in [3, 5] {
        let leaked = ours.iter().any(|(p, _)| *p == pc);
        let want = if leaked { "leak" } else { "clean" };
        assert_eq!(verdict(&run, pc)["outcome"], want);
    }
    for pc in [4, 6] {
        assert_eq!(verdict(&run, pc)["outcome"], "clean");
    }
    assert_eq!(run.code, Some(1));
}

/// The frames of a stack that are the application's or webrtc-rs's own (the example,
/// its runtime wrapper in tracer-usdt, the `webrtc` and `rtc` crates), as
/// `function file:line`.
fn app_and_webrtc_frames(stack: &Value) -> Vec<String> {
    stack_functions(stack)
        .into_iter()
        .filter(|f| {
            [
                "/webrtc21-proxy/src/",
                "/tracer-usdt/src/",
                "/webrtc-0.",
                "/rtc-",
            ]
            .iter()
            .any(|dir| f.contains(dir))
        })
        .collect()
}

/// What a leak says of its creation: (pc_id, subsystem, confidence, site, pc_site).
fn creation(l: &Value) -> (Value, Value, Value, Value, Value) {
    (
        l["pc_id"].clone(),
        l["subsystem"].clone(),
        l["confidence"].clone(),
        l["site"].clone(),
        l["pc_site"].clone(),
    )
}

/// Per leaked socket's subsystem, its creation facts and the application and webrtc-rs
/// frames of its creating stack (sorted, so runs compare whatever order the sockets
/// were made in).
fn leak_stacks(run: &CheckRun) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = by_event(&run.ours, "leak")
        .into_iter()
        .map(|l| {
            (
                format!("{:?}", creation(l)),
                app_and_webrtc_frames(&l["stack"]),
            )
        })
        .collect();
    out.sort();
    out
}

/// DWARF unwinding (#15) on the real program: the example built in release without
/// frame pointers, under `check --stacks dwarf` and the default `auto`, reports the
/// same leaks with the same creating stacks (application and webrtc-rs frames, file:line
/// included), site, subsystem and attribution as the frame-pointer build of the same
/// source under `--stacks fp`; and its stacks reach the tokio worker's root.
#[test]
fn release_build_without_frame_pointers_gets_the_frame_pointer_builds_creating_stacks() {
    let test = "release_build_without_frame_pointers_gets_the_frame_pointer_builds_creating_stacks";
    if !require_root(test) {
        return;
    }
    let (Some(fp_bin), Some(nofp_bin)) = (
        example_bin(test, BIN),
        example_bin(test, &format!("nofp/{BIN}")),
    ) else {
        return;
    };
    // One session whose offerer is dropped without close(): its driver task keeps its
    // host and mDNS sockets, both created by webrtc-rs on a tokio worker.
    let args = [
        "--sessions",
        "1",
        "--drop-without-close",
        "--self-check",
        "1500",
    ];
    let reference = check21_with(&fp_bin, &["--stacks", "fp"], &args);
    assert_eq!(reference.code, Some(1), "{}", reference.stderr);
    let want = leak_stacks(&reference);
    assert!(!want.is_empty(), "the frame-pointer build leaks");
    for (_, frames) in &want {
        assert!(
            frames.iter().any(|f| f.contains("/webrtc-0.")),
            "the frame-pointer walk names webrtc-rs frames: {frames:#?}"
        );
    }
    for mode in ["dwarf", "auto"] {
        let run = check21_with(&nofp_bin, &["--stacks", mode], &args);
        assert_eq!(run.code, Some(1), "--stacks {mode}: {}", run.stderr);
        assert_eq!(
            leak_stacks(&run),
            want,
            "--stacks {mode}: the build without frame pointers names what the frame-pointer build names"
        );
        assert_flagged_matches_the_end(&run, &[1]);
        for l in by_event(&run.ours, "leak") {
            let all = stack_functions(&l["stack"]);
            assert!(
                all.iter()
                    .any(|f| f.contains("/src/runtime/scheduler/multi_thread/worker.rs")),
                "--stacks {mode}: down to the tokio worker: {all:#?}"
            );
            assert!(
                !all.iter().any(|f| f.starts_with("[unwinding stopped")),
                "--stacks {mode}: unwinding reached the thread's root: {all:#?}"
            );
        }
    }
    // Frame pointers alone lose those frames in this build (or this proves nothing).
    let short = check21_with(&nofp_bin, &["--stacks", "fp"], &args);
    assert_ne!(
        leak_stacks(&short),
        want,
        "the frame-pointer walk of the build without frame pointers should lose frames"
    );
}
