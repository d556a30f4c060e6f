//! `watch` on a running process, `leaks` (memleak-style), and `report` of a saved
//! check, on real processes.
mod common;

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::Value;

#[test]
fn watch_reports_leaks_of_a_running_process() {
    if !require_root("watch_reports_leaks_of_a_running_process") {
        return;
    }
    let _serial = serial();
    let mut sim = Command::new(workload_bin("pc_sim"))
        .args(["--wait", "--pcs", "3", "--leak", "2", "--linger", "1500"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Lines::new(sim.stdout.take().unwrap());
    let ready: Value =
        serde_json::from_str(&out.wait_for("ready", Duration::from_secs(10))).unwrap();
    let pid = ready["pid"].as_u64().unwrap().to_string();
    let mut watch = Command::new(sockscope_bin())
        .args(["watch", "--pid", &pid, "--grace", "300ms", "-f", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let watch_out = Lines::new(watch.stdout.take().unwrap());
    let watch_err = Lines::new(watch.stderr.take().unwrap());
    watch_err.wait_for("watching pid", Duration::from_secs(30));
    writeln!(sim.stdin.as_mut().unwrap(), "go").unwrap();
    // Printed as found, while the process still runs.
    let leak: Value =
        serde_json::from_str(&watch_out.wait_for("\"leak\"", Duration::from_secs(10))).unwrap();
    let said: Vec<Value> = std::iter::from_fn(|| out.next(Duration::from_secs(5)))
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    let leaked_port = said.iter().find(|v| v["pc_id"] == 2).unwrap()["leaked_ports"][0]
        .as_u64()
        .unwrap();
    assert_eq!(
        (leak["pc_id"].as_u64(), leak["local_port"].as_u64()),
        (Some(2), Some(leaked_port))
    );
    // It ends by itself when the process exits.
    let _ = sim.wait();
    let status = watch.wait().unwrap();
    assert_eq!(status.code(), Some(1), "leaks → 1");
    let rest: Vec<Value> = watch_out
        .rest(Duration::from_secs(10))
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = by_event(&rest, "summary")[0];
    assert_eq!(
        (
            summary["peer_connections"].as_u64(),
            summary["leaks"].as_u64()
        ),
        (Some(3), Some(1))
    );
    assert_nothing_attached("after watch");
}

#[test]
fn leaks_lists_old_sockets_with_their_creating_stack() {
    if !require_root("leaks_lists_old_sockets_with_their_creating_stack") {
        return;
    }
    let _serial = serial();
    let mut early = Workload::start(&[]);
    let early_report = early.go(); // open before sockscope starts: stack unknown
    let mut late = Workload::start(&[]);
    let late_pid = late.pid.to_string();
    let mut leaks = Command::new(sockscope_bin())
        .args([
            "leaks",
            "--pid",
            &late_pid,
            "--min-age",
            "0s",
            "--interval",
            "1h",
            "-f",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::new(leaks.stderr.take().unwrap());
    stderr.wait_for("tracking UDP sockets", Duration::from_secs(30));
    let late_report = late.go();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: our child's pid.
    unsafe { libc::kill(leaks.id() as i32, libc::SIGINT) };
    let out = leaks.wait_with_output().unwrap();
    assert!(out.status.success());
    let groups: Vec<Value> = json_lines(&out.stdout)
        .into_iter()
        .filter(|v| v["event"] == "outstanding")
        .collect();
    let open_ports: Vec<u64> = late_report["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["closed"] == false)
        .filter_map(|s| s["port"].as_u64())
        .collect();
    let listed: Vec<u64> = groups
        .iter()
        .flat_map(|g| {
            g["ports"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_u64)
        })
        .collect();
    let mut a = open_ports.clone();
    a.sort();
    let mut b = listed.clone();
    b.sort();
    assert_eq!(b, a, "exactly the still-open bound sockets of the process");
    assert!(
        groups
            .iter()
            .all(|g| g["pid"].as_u64().map(|p| p.to_string()) == Some(late_pid.clone()))
    );
    assert!(
        groups.iter().all(|g| g["stack"].is_array()),
        "traced sockets have their stack"
    );
    let named = groups.iter().any(|g| {
        g["stack"].as_array().unwrap().iter().any(|f| {
            f["symbol"]
                .as_str()
                .is_some_and(|s| s.ends_with("sockscope_workload_named_creator"))
        })
    });
    assert!(
        named,
        "the named creator appears in a creating stack: {groups:#?}"
    );
    drop(early_report);
    early.finish();
    late.finish();
    assert_nothing_attached("after leaks");
}

#[test]
fn leaks_lists_sockets_that_predate_it_with_stack_unknown() {
    if !require_root("leaks_lists_sockets_that_predate_it_with_stack_unknown") {
        return;
    }
    let _serial = serial();
    let mut wl = Workload::start(&[]);
    let report = wl.go();
    let pid = wl.pid.to_string();
    let out = Command::new(sockscope_bin())
        .args([
            "leaks",
            "--pid",
            &pid,
            "--min-age",
            "0s",
            "--duration",
            "1s",
            "-f",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let groups: Vec<Value> = json_lines(&out.stdout)
        .into_iter()
        .filter(|v| v["event"] == "outstanding")
        .collect();
    let bound_open = report["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["closed"] == false && !s["port"].is_null())
        .count();
    let listed: usize = groups
        .iter()
        .map(|g| g["count"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(
        listed, bound_open,
        "every bound open socket, found through sock_diag"
    );
    assert!(
        groups
            .iter()
            .all(|g| g["stack"].is_null() && g["oldest_age_ns"].is_null()),
        "stack and age unknown: {groups:#?}"
    );
    wl.finish();
}

#[test]
fn report_renders_a_saved_check_and_refuses_garbage() {
    if !require_root("report_renders_a_saved_check_and_refuses_garbage") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sockscope-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("check.json");
    {
        let _serial = serial();
        let out = Command::new(sockscope_bin())
            .args([
                "check",
                "--grace",
                "300ms",
                "--report",
                file.to_str().unwrap(),
                "--",
            ])
            .arg(workload_bin("pc_sim"))
            .args(["--pcs", "2", "--leak", "1", "--linger", "600"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
    }
    let out = Command::new(sockscope_bin())
        .args(["report", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // The leak's line, with its kind (pc_sim never touches the socket it leaks).
    assert!(text.contains("LEAK held pid="), "{text}");
    assert!(text.contains("pc_id=1"), "{text}");
    assert!(text.contains("1 leaked sockets"), "{text}");

    std::fs::write(dir.join("garbage.json"), "{not json").unwrap();
    let out = Command::new(sockscope_bin())
        .args(["report", dir.join("garbage.json").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not a sockscope check report"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
