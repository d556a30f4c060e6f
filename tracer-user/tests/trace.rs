//! `sockscope trace` against a workload whose sockets are known, checked against the
//! workload's own report and against `ss` (sock_diag) ground truth.
mod common;

use std::{collections::HashMap, io::Write as _, time::Duration};

use common::*;
use serde_json::Value;

/// Runs the workload under `sockscope trace --format json --pid P [extra]`.
fn trace_workload(extra: &[&str]) -> (Value, Vec<Value>, Vec<(u16, u64, u64)>) {
    let mut wl = Workload::start(&[]);
    let pid = wl.pid.to_string();
    let mut args = vec!["trace", "--format", "json", "--pid", &pid];
    args.extend_from_slice(extra);
    let tracer = Sockscope::start(&args);
    let report = wl.go();
    // Ground truth while the workload still holds its open sockets.
    let ss = ss_udp_sockets();
    std::thread::sleep(Duration::from_millis(300));
    let (events, status) = tracer.stop_json();
    assert!(status.success(), "sockscope exited with {status}");
    wl.finish();
    (report, events, ss)
}

#[test]
fn trace_reports_exactly_the_workload_sockets() {
    if !require_root("trace_reports_exactly_the_workload_sockets") {
        return;
    }
    let _serial = serial();
    let (report, events, ss) = trace_workload(&[]);
    let pid = report["pid"].as_u64().unwrap();
    let expected = report["sockets"].as_array().unwrap();
    assert!(
        events.iter().all(|e| e["schema"] == 1),
        "every line carries the schema version"
    );

    let creates = by_event(&events, "create");
    assert_eq!(
        creates.len(),
        expected.len(),
        "one create per socket opened: {creates:#?}"
    );
    let mut cookie_of = HashMap::new();
    for want in expected {
        let label = want["label"].as_str().unwrap();
        let got = creates
            .iter()
            .find(|c| c["fd"] == want["fd"] && c["family"] == want["family"])
            .unwrap_or_else(|| panic!("no create for {label} ({want}) in {creates:#?}"));
        assert_eq!(got["pid"].as_u64(), Some(pid), "{label}: pid");
        assert_eq!(got["tid"], want["tid"], "{label}: tid");
        assert_eq!(got["comm"], "udp_workload", "{label}: comm");
        cookie_of.insert(label, got["cookie"].as_u64().unwrap());
    }

    let binds = by_event(&events, "bind");
    let bound: Vec<_> = expected.iter().filter(|w| !w["port"].is_null()).collect();
    assert_eq!(
        binds.len(),
        bound.len(),
        "one bind per bound socket: {binds:#?}"
    );
    for want in &bound {
        let label = want["label"].as_str().unwrap();
        let bind = binds
            .iter()
            .find(|b| b["cookie"].as_u64() == Some(cookie_of[label]))
            .unwrap();
        assert_eq!(bind["local_port"], want["port"], "{label}: port");
        let loopback = if want["family"] == "inet" {
            "127.0.0.1"
        } else {
            "::1"
        };
        assert_eq!(bind["local_addr"], loopback, "{label}: address");
    }

    let releases = by_event(&events, "release");
    let closed: Vec<_> = expected.iter().filter(|w| w["closed"] == true).collect();
    assert_eq!(
        releases.len(),
        closed.len(),
        "releases exactly for the closed sockets: {releases:#?}"
    );
    for want in &closed {
        let label = want["label"].as_str().unwrap();
        let rel = releases
            .iter()
            .find(|r| r["cookie"].as_u64() == Some(cookie_of[label]));
        let rel = rel.unwrap_or_else(|| panic!("no release for {label}"));
        assert_eq!(rel["fd"], want["fd"], "{label}: fd at release");
        assert_eq!(rel["origin"], "traced");
        assert!(rel["age_ns"].as_u64().is_some(), "{label}: age at release");
    }

    // Still-open bound sockets: the cookie we reported is the kernel's (sock_diag).
    for want in expected
        .iter()
        .filter(|w| w["closed"] == false && !w["port"].is_null())
    {
        let label = want["label"].as_str().unwrap();
        let port = want["port"].as_u64().unwrap() as u16;
        let truth = ss
            .iter()
            .find(|(p, _, _)| *p == port)
            .unwrap_or_else(|| panic!("{label}: port {port} not in ss"));
        assert_eq!(
            truth.1, cookie_of[label],
            "{label}: cookie matches sock_diag"
        );
    }

    let summary = by_event(&events, "summary");
    assert_eq!(summary.len(), 1, "one summary line");
    assert_eq!(summary[0]["lost"], 0);
    let open = expected.iter().filter(|w| w["closed"] == false).count();
    assert_eq!(
        summary[0]["open_sockets"].as_u64(),
        Some(open as u64),
        "open at exit"
    );
}

#[test]
fn user_stack_names_the_creating_function() {
    if !require_root("user_stack_names_the_creating_function") {
        return;
    }
    let _serial = serial();
    let (report, events, _) = trace_workload(&["--stacks"]);
    let create = named_creator_event(&report, &events);
    assert_names_creator(create);
    assert!(
        !create["stacks"]["kernel"].as_array().unwrap().is_empty(),
        "kernel stack present"
    );
}

/// The create event of the workload's socket made in its named function.
fn named_creator_event<'a>(report: &Value, events: &'a [Value]) -> &'a Value {
    let named = report["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == "named_creator_v4")
        .unwrap();
    by_event(events, "create")
        .into_iter()
        .find(|c| c["fd"] == named["fd"])
        .unwrap_or_else(|| panic!("no create of {named} in {events:#?}"))
}

/// The create event's user stack names the workload's named creating function.
fn assert_names_creator(create: &Value) {
    let frames = create["stacks"]["user"].as_array().expect("user stack");
    let names: Vec<&str> = frames
        .iter()
        .flat_map(|f| {
            f["inlined"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(std::iter::once(&f["symbol"]))
                .filter_map(Value::as_str)
        })
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("sockscope_workload_named_creator")),
        "creating function not in user stack: {names:#?}"
    );
}

#[test]
fn stacks_of_a_process_that_exits_soon_are_named() {
    if !require_root("stacks_of_a_process_that_exits_soon_are_named") {
        return;
    }
    let _serial = serial();
    let mut wl = Workload::start(&[]);
    let pid = wl.pid.to_string();
    let tracer = Sockscope::start(&["trace", "--format", "json", "--stacks", "--pid", &pid]);
    let report = wl.go();
    // Gone 100 ms after its sockets, long before this sockscope has read the debug
    // binary's DWARF for the first of its stacks: the others must still be named.
    std::thread::sleep(Duration::from_millis(100));
    wl.finish();
    std::thread::sleep(Duration::from_millis(1500));
    let (events, status) = tracer.stop_json();
    assert!(status.success(), "sockscope exited with {status}");
    assert_names_creator(named_creator_event(&report, &events));
}

#[test]
fn sockets_that_predate_the_tracer_are_listed_with_their_cookie() {
    if !require_root("sockets_that_predate_the_tracer_are_listed_with_their_cookie") {
        return;
    }
    let _serial = serial();
    let mut wl = Workload::start(&[]);
    let report = wl.go(); // sockets exist before sockscope starts
    let pid = wl.pid.to_string();
    let ss = ss_udp_sockets();
    let tracer = Sockscope::start(&["trace", "--format", "json", "--pid", &pid]);
    wl.finish(); // closes the rest: releases of sockets sockscope did not see created
    std::thread::sleep(Duration::from_millis(300));
    let (events, _) = tracer.stop_json();
    let existing = by_event(&events, "existing");
    let releases = by_event(&events, "release");
    for want in report["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["closed"] == false)
    {
        let port = want["port"].as_u64().unwrap();
        let truth = ss.iter().find(|(p, _, _)| *p as u64 == port).unwrap();
        let ex = existing
            .iter()
            .find(|e| e["local_port"].as_u64() == Some(port));
        let ex = ex.unwrap_or_else(|| panic!("port {port} not listed as existing: {existing:#?}"));
        assert_eq!(
            ex["cookie"].as_u64(),
            Some(truth.1),
            "cookie from sock_diag"
        );
        assert_eq!(ex["fd"], want["fd"], "holder fd from /proc");
        let rel = releases
            .iter()
            .find(|r| r["cookie"] == ex["cookie"])
            .expect("release of a pre-existing socket");
        assert_eq!(
            rel["origin"], "preexisting",
            "known from the inventory, not an orphan"
        );
    }
}

/// The niceness of each thread of `pid`, by thread name.
fn thread_nice(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let dir = task.expect("task entry").path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue; // a thread that just ended
        };
        // Fields after the command's closing parenthesis, from field 3 (state);
        // niceness is field 19.
        let rest = &stat[stat.rfind(')').expect("stat format") + 1..];
        let nice = rest.split_whitespace().nth(16).expect("nice field");
        out.push((
            comm.trim_end().to_owned(),
            nice.parse().expect("nice number"),
        ));
    }
    out
}

#[test]
fn the_ring_reader_runs_ahead_of_ordinary_threads() {
    if !require_root("the_ring_reader_runs_ahead_of_ordinary_threads") {
        return;
    }
    let _serial = serial();
    let mut wl = Workload::start(&[]);
    let pid = wl.pid.to_string();
    let tracer = Sockscope::start(&["trace", "--format", "json", "--pid", &pid]);
    let threads = thread_nice(tracer.child.id());
    wl.go();
    wl.finish();
    let (_, status) = tracer.stop_json();
    assert!(status.success(), "sockscope exited with {status}");
    let ring: Vec<_> = threads
        .iter()
        .filter(|(n, _)| n == "sockscope-ring")
        .collect();
    assert_eq!(ring.len(), 1, "one ring reader thread: {threads:?}");
    assert_eq!(ring[0].1, -10, "reader's niceness: {threads:?}");
    // Only the reader: the main thread (formatting, output) stays as it was.
    assert!(
        threads
            .iter()
            .any(|(n, nice)| n == "sockscope" && *nice == 0),
        "main thread at niceness 0: {threads:?}"
    );
}

#[test]
fn a_closed_output_pipe_ends_trace_cleanly() {
    if !require_root("a_closed_output_pipe_ends_trace_cleanly") {
        return;
    }
    let _serial = serial();
    // Enough records to fill the sink's buffer many times over.
    let (mut churn, churn_out, pid) = spawn_waiting("udp_churn", &["--wait", "--count", "20000"]);
    let mut child = std::process::Command::new(sockscope_bin())
        .args(["trace", "--format", "json", "--pid", &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sockscope");
    let stderr = Lines::new(child.stderr.take().expect("stderr"));
    stderr.wait_for(ATTACHED, Duration::from_secs(30));
    // As `sockscope trace | head -0`: the reader is gone before anything is written.
    drop(child.stdout.take());
    use std::io::Write as _;
    let mut go = churn.stdin.take().expect("churn stdin");
    writeln!(go).expect("start churn");
    churn_out.wait_for("sockets", Duration::from_secs(60));
    let _ = churn.wait();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sockscope still running 30 s after its output closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = stderr.rest(Duration::from_secs(5)).join("\n");
    // An error exit with a message, not a panic (101) nor a signal (SIGPIPE).
    assert_eq!(
        status.code(),
        Some(2),
        "exit status {status}; stderr: {said}"
    );
    assert!(!said.contains("panicked"), "{said}");
    assert!(said.contains("cannot write output"), "{said}");
    assert_nothing_attached("after trace's output closed");
}

/// The kernel hands each socket's create from its hook to `sys_exit_socket`, and keeps
/// the sockets it tracks, in arrays of slots with hash maps behind them (tracer-ebpf's
/// slots.rs). With one slot of each, nearly every concurrent create of a 4-thread churn
/// takes the hash maps; with the default slots, nearly none. Either way every socket is
/// reported once, with its own fd, thread, bind and release, and nothing is lost.
#[test]
fn every_socket_is_reported_whichever_way_its_hand_off_goes() {
    if !require_root("every_socket_is_reported_whichever_way_its_hand_off_goes") {
        return;
    }
    let _serial = serial();
    const THREADS: usize = 4;
    const PER_THREAD: usize = 3000;
    for slots in [None, Some("1")] {
        let (mut child, out, pid) = spawn_waiting(
            "udp_churn",
            &[
                "--wait",
                "--count",
                &PER_THREAD.to_string(),
                "--threads",
                &THREADS.to_string(),
            ],
        );
        let pid_arg = pid.to_string();
        let env: Vec<(&str, &str)> = slots.map(|n| ("SOCKSCOPE_SLOTS", n)).into_iter().collect();
        // A ring that holds the whole churn: a record lost there is not what this tests.
        let tracer = Sockscope::start_env(
            &[
                "trace",
                "-f",
                "json",
                "--ring-bytes",
                "16777216",
                "--pid",
                &pid_arg,
            ],
            &env,
        );
        writeln!(child.stdin.as_mut().expect("stdin"), "go").expect("go");
        out.wait_for("sockets", Duration::from_secs(60));
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(300));
        let (events, status) = tracer.stop_json();
        assert!(
            status.success(),
            "slots {slots:?}: sockscope exited with {status}"
        );

        let creates = by_event(&events, "create");
        assert_eq!(
            creates.len(),
            THREADS * PER_THREAD,
            "slots {slots:?}: one create per socket"
        );
        let mut tid_of = HashMap::new();
        for c in &creates {
            let cookie = c["cookie"].as_u64().expect("cookie");
            assert!(
                c["fd"].as_i64().is_some_and(|fd| fd >= 0),
                "slots {slots:?}: a create without its fd: {c}"
            );
            assert_eq!(c["pid"].as_u64(), Some(u64::from(pid)));
            let tid = c["tid"].as_u64().expect("tid");
            assert!(
                tid_of.insert(cookie, tid).is_none(),
                "slots {slots:?}: cookie {cookie} created twice"
            );
        }
        let threads: std::collections::HashSet<_> = tid_of.values().collect();
        assert_eq!(
            threads.len(),
            THREADS,
            "slots {slots:?}: each thread's sockets"
        );
        for kind in ["bind", "release"] {
            let records = by_event(&events, kind);
            assert_eq!(
                records.len(),
                creates.len(),
                "slots {slots:?}: one {kind} per socket"
            );
            for r in records {
                let cookie = r["cookie"].as_u64().expect("cookie");
                let made_by = tid_of.get(&cookie);
                assert!(
                    made_by.is_some(),
                    "slots {slots:?}: {kind} of an unknown socket: {r}"
                );
                // udp_churn binds and closes each socket on the thread that made it:
                // a create paired with another thread's hand-off shows here.
                assert_eq!(
                    r["tid"].as_u64().as_ref(),
                    made_by,
                    "slots {slots:?}: {kind} on another thread than the create: {r}"
                );
            }
        }
    }
}
