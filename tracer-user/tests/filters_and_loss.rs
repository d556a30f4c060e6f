//! Filters, output to a file, event loss, and `doctor`, on the real kernel.
mod common;

use std::{io::Write as _, process::Command, time::Duration};

use common::*;
use serde_json::Value;

/// `udp_churn --count N`, waiting for a go: (child, its stdout, pid).
fn churn(count: usize) -> (std::process::Child, Lines, u32) {
    spawn_waiting("udp_churn", &["--wait", "--count", &count.to_string()])
}

fn go(child: &mut std::process::Child, out: &Lines) -> Value {
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    let done = out.wait_for("sockets", Duration::from_secs(60));
    let _ = child.wait();
    serde_json::from_str(&done).unwrap()
}

#[test]
fn comm_filter_selects_by_task_name() {
    if !require_root("comm_filter_selects_by_task_name") {
        return;
    }
    let _serial = serial();
    let matching = Sockscope::start(&["trace", "-f", "json", "--comm", "udp_churn"]);
    let other = Sockscope::start(&["trace", "-f", "json", "--comm", "no-such-task"]);
    let (mut child, out, pid) = churn(50);
    go(&mut child, &out);
    std::thread::sleep(Duration::from_millis(300));
    let (seen, _) = matching.stop_json();
    let (unseen, _) = other.stop_json();
    let creates = by_event(&seen, "create");
    assert_eq!(creates.len(), 50, "--comm udp_churn sees its 50 sockets");
    assert!(
        creates
            .iter()
            .all(|c| c["pid"].as_u64() == Some(pid as u64))
    );
    assert_eq!(by_event(&seen, "release").len(), 50);
    assert!(
        by_event(&unseen, "create").is_empty(),
        "--comm no-such-task sees none"
    );
}

#[test]
fn output_file_gets_the_events() {
    if !require_root("output_file_gets_the_events") {
        return;
    }
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("sockscope-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("events.jsonl");
    let (mut child, out, pid) = churn(10);
    let tracer = Sockscope::start(&[
        "trace",
        "-f",
        "json",
        "--pid",
        &pid.to_string(),
        "-o",
        file.to_str().unwrap(),
    ]);
    go(&mut child, &out);
    std::thread::sleep(Duration::from_millis(300));
    let (stdout, status) = tracer.stop_json();
    assert!(status.success());
    assert!(
        stdout.is_empty(),
        "nothing on stdout with --output: {stdout:?}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let values: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(by_event(&values, "create").len(), 10);
    assert_eq!(by_event(&values, "release").len(), 10);
    assert_eq!(by_event(&values, "summary").len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stopped consumer and a one-page ring buffer: the kernel must run out of room,
/// count the loss, and sockscope must say so (never a silent, complete-looking trace).
#[test]
fn lost_events_are_counted_and_reported() {
    if !require_root("lost_events_are_counted_and_reported") {
        return;
    }
    let _serial = serial();
    let (mut child, out, pid) = churn(2000);
    let tracer = Sockscope::start(&[
        "trace",
        "-f",
        "json",
        "--pid",
        &pid.to_string(),
        "--ring-bytes",
        "4096",
    ]);
    tracer.signal(libc::SIGSTOP);
    let done = go(&mut child, &out);
    assert_eq!(done["sockets"], 2000);
    tracer.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(800));
    let stopped = tracer.stop();
    assert!(stopped.status.success());
    let summary = by_event(&stopped.values, "summary");
    let lost = summary[0]["lost"].as_u64().unwrap();
    assert!(
        lost > 0,
        "a one-page ring with a stopped reader must lose events"
    );
    let lost_lines = by_event(&stopped.values, "lost");
    assert!(!lost_lines.is_empty(), "a `lost` record in the stream");
    let reported: u64 = lost_lines
        .iter()
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    assert_eq!(reported, lost, "lost records add up to the summary");
    let delivered: usize = ["create", "bind", "release", "exit"]
        .iter()
        .map(|e| by_event(&stopped.values, e).len())
        .sum();
    assert_eq!(
        delivered as u64 + lost,
        3 * 2000 + 1,
        "every socket's 3 records and the process exit: delivered or counted lost"
    );
    assert!(
        stopped.stderr.iter().any(|l| l.contains("incomplete")),
        "stderr says the trace is incomplete: {:?}",
        stopped.stderr
    );
}

#[test]
fn doctor_tells_the_truth_on_this_kernel() {
    if !require_root("doctor_tells_the_truth_on_this_kernel") {
        return;
    }
    let _serial = serial();
    let out = Command::new(sockscope_bin())
        .args(["doctor", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "doctor: tracing works here: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let checks: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"]["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check"))
    };
    assert_eq!(find("backend")["check"]["status"], "ok");
    let lockdown = lockdown_on();
    let chosen = find("backend")["check"]["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    if lockdown {
        assert!(chosen.starts_with("cgroup"), "{chosen}");
        assert!(
            chosen.contains("fentry: not allowed by this kernel (lockdown/EPERM"),
            "says why fentry was passed over: {chosen}"
        );
        assert_eq!(find("backend fentry")["check"]["status"], "warn");
    }
    assert_eq!(find("backend cgroup")["check"]["status"], "ok");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(find("kernel")["check"]["detail"], release.trim());
    let programs: Vec<_> = checks
        .iter()
        .filter(|c| c["check"]["name"].as_str().unwrap().starts_with("program "))
        .collect();
    assert_eq!(
        programs.len(),
        4,
        "every program all backends use is tried (the socket exit tracepoint, the USDT uprobe, exec, load only, the send/receive hooks)"
    );
    assert!(programs.iter().all(|p| p["check"]["status"] == "ok"));
    let backends = checks
        .iter()
        .filter(|c| c["check"]["name"].as_str().unwrap().starts_with("backend "))
        .count();
    assert_eq!(backends, 3, "each backend is tried");
    assert_nothing_attached("after doctor");
}

/// Whether the kernel's lockdown LSM is in a mode that refuses tracing programs.
fn lockdown_on() -> bool {
    std::fs::read_to_string("/sys/kernel/security/lockdown")
        .is_ok_and(|l| l.contains('[') && !l.contains("[none]"))
}

#[test]
fn a_backend_this_kernel_refuses_is_a_clear_error() {
    if !require_root("a_backend_this_kernel_refuses_is_a_clear_error") {
        return;
    }
    let _serial = serial();
    if !lockdown_on() {
        eprintln!("SKIP: this kernel has no lockdown, fentry is allowed here");
        return;
    }
    expect_usage_error(
        &["trace", "--backend", "fentry", "--duration", "1s"],
        "the fentry backend cannot be used here: not allowed by this kernel (lockdown/EPERM",
    );
    assert_nothing_attached("after a refused backend");
    // Without --backend the same command traces, with the backend it chose.
    let out = Command::new(sockscope_bin())
        .args(["trace", "--duration", "1s", "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("sockscope: backend cgroup (passed over: fentry: not allowed"),
        "{stderr}"
    );
}
