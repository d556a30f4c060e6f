//! Small things new users tripped over (issue #14, item 8): `leaks --pid` ends with its
//! process, bare durations are seconds, an unreadable /proc/PID/exe is said as such,
//! and unbound sockets that predate sockscope are listed.
mod common;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

/// `udp_hold --count N` with its N unbound IPv4 UDP sockets open: (child, pid).
fn holding(count: &str) -> (std::process::Child, Lines, u32) {
    let (mut child, out, pid) = spawn_waiting("udp_hold", &["--count", count]);
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    out.wait_for(&format!("\"open\":{count}"), Duration::from_secs(10));
    (child, out, pid)
}

fn finish(mut child: std::process::Child) {
    drop(child.stdin.take()); // udp_hold exits at EOF
    let _ = child.wait();
}

#[test]
fn leaks_pid_ends_when_its_process_exits_with_the_final_listing() {
    if !require_root("leaks_pid_ends_when_its_process_exits_with_the_final_listing") {
        return;
    }
    let _serial = serial();
    // Two sockets before sockscope starts, two after; then the process is killed with
    // all four open, and stays a zombie (not reaped) until sockscope has ended.
    let (mut hold, out, pid) = spawn_waiting("udp_hold", &["--count", "4", "--steps", "2"]);
    writeln!(hold.stdin.as_mut().unwrap(), "go").unwrap();
    out.wait_for("\"open\":2", Duration::from_secs(10));
    let mut leaks = Command::new(sockscope_bin())
        .args(["leaks", "--pid", &pid.to_string()])
        .args(["--min-age", "0", "--interval", "1h", "-f", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Lines::new(leaks.stdout.take().unwrap());
    let stderr = Lines::new(leaks.stderr.take().unwrap());
    stderr.wait_for("tracking UDP sockets", Duration::from_secs(30));
    writeln!(hold.stdin.as_mut().unwrap(), "more").unwrap();
    out.wait_for("\"open\":4", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    hold.kill().unwrap();

    let Some(status) = exit_within(&mut leaks, Duration::from_secs(15)) else {
        let _ = leaks.kill();
        let _ = hold.wait();
        panic!("leaks --pid {pid} still runs 15 s after its process exited");
    };
    let _ = hold.wait();
    assert_eq!(status.code(), Some(0), "ends with exit 0");
    let err = stderr.rest(Duration::from_secs(5));
    let last = err.last().cloned().unwrap_or_default();
    assert!(
        last.contains(&format!("pid {pid} exited, with 4 UDP sockets still open")),
        "a clear final line: {err:#?}"
    );
    let values: Vec<Value> = stdout
        .rest(Duration::from_secs(5))
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let groups = by_event(&values, "outstanding");
    let counts = |predate: bool| -> u64 {
        groups
            .iter()
            .filter(|g| g["stack"].is_null() == predate)
            .map(|g| g["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (counts(true), counts(false)),
        (2, 2),
        "the final listing has the sockets open at the exit, those that predate sockscope \
         (unbound) and those it saw created: {groups:#?}"
    );
    assert_nothing_attached("after leaks --pid");
}

#[test]
fn bare_durations_are_seconds_and_unbound_sockets_of_the_pid_are_listed() {
    if !require_root("bare_durations_are_seconds_and_unbound_sockets_of_the_pid_are_listed") {
        return;
    }
    let _serial = serial();
    let (hold, _out, pid) = holding("3");
    let started = Instant::now();
    let out = Command::new(sockscope_bin())
        .args(["trace", "--pid", &pid.to_string(), "--duration", "1.5"])
        .args(["-f", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values = json_lines(&out.stdout);
    let summary = by_event(&values, "summary")[0];
    let ms = summary["duration_ms"].as_u64().unwrap();
    assert!(
        (1400..10_000).contains(&ms) && took < Duration::from_secs(30),
        "--duration 1.5 is 1.5 s: traced {ms} ms"
    );
    let existing = by_event(&values, "existing");
    assert_eq!(existing.len(), 3, "the 3 unbound sockets: {values:#?}");
    for e in &existing {
        assert_eq!(
            (
                e["pid"].as_u64(),
                e["local_port"].as_u64(),
                e["family"].as_str()
            ),
            (Some(u64::from(pid)), Some(0), Some("inet")),
            "{e}"
        );
    }

    let out = Command::new(sockscope_bin())
        .args(["leaks", "--pid", &pid.to_string(), "--duration", "1"])
        .args(["--min-age", "0", "-f", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values = json_lines(&out.stdout);
    let listed: u64 = by_event(&values, "outstanding")
        .iter()
        .filter(|g| g["pid"].as_u64() == Some(u64::from(pid)))
        .map(|g| g["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        listed, 3,
        "leaks --pid lists the unbound sockets: {values:#?}"
    );
    finish(hold);
    assert_nothing_attached("after trace/leaks --pid");
}

#[test]
fn host_wide_trace_and_leaks_list_unbound_sockets_that_predate_them() {
    if !require_root("host_wide_trace_and_leaks_list_unbound_sockets_that_predate_them") {
        return;
    }
    let _serial = serial();
    let (hold, _out, pid) = holding("3");
    let ours = |values: &[Value], event: &str| -> Vec<Value> {
        by_event(values, event)
            .into_iter()
            .filter(|v| v["pid"].as_u64() == Some(u64::from(pid)))
            .cloned()
            .collect()
    };

    let out = Command::new(sockscope_bin())
        .args(["trace", "--duration", "1", "-f", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let existing = ours(&json_lines(&out.stdout), "existing");
    assert_eq!(
        existing.len(),
        3,
        "udp_hold's 3 unbound sockets: {existing:#?}"
    );
    assert!(existing.iter().all(|e| e["local_port"] == 0));
    let mut trace_cookies: Vec<u64> = existing
        .iter()
        .map(|e| e["cookie"].as_u64().unwrap())
        .collect();
    trace_cookies.sort();

    let out = Command::new(sockscope_bin())
        .args(["leaks", "--duration", "1", "--min-age", "0", "-f", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let groups = ours(&json_lines(&out.stdout), "outstanding");
    let mut leaks_cookies: Vec<u64> = groups
        .iter()
        .flat_map(|g| g["cookies"].as_array().unwrap().clone())
        .filter_map(|c| c.as_u64())
        .collect();
    leaks_cookies.sort();
    assert_eq!(
        leaks_cookies, trace_cookies,
        "the same 3 sockets: {groups:#?}"
    );
    finish(hold);
    assert_nothing_attached("after host-wide trace/leaks");
}

/// A copy of sockscope that any user can run (the build tree may be private).
fn sockscope_for_everyone() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sockscope-anyone-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("sockscope");
    if !bin.exists() {
        std::fs::copy(sockscope_bin(), &bin).unwrap();
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn setpriv_available(test: &str) -> bool {
    let found = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: setpriv (util-linux) missing"
        );
        eprintln!("SKIP {test}: no setpriv (util-linux)");
    }
    found
}

/// Exit 2 and one line saying the exe could not be read for lack of permission.
fn expect_permission_denied(out: &std::process::Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit 2; stderr: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("cannot read /proc/1/exe: permission denied"),
        "{what}: says what failed: {stderr}"
    );
    assert!(
        !stderr.contains("does not exist") && !stderr.contains("no process"),
        "{what}: process 1 exists: {stderr}"
    );
}

#[test]
fn an_unreadable_proc_exe_is_permission_denied_not_a_missing_process() {
    let test = "an_unreadable_proc_exe_is_permission_denied_not_a_missing_process";
    if !require_root(test) || !setpriv_available(test) {
        return;
    }
    // As nobody: no BPF is loaded before the check.
    let bin = sockscope_for_everyone();
    for args in [
        &["usdt", "list", "--pid", "1"][..],
        &["trace", "--pid", "1"],
    ] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        expect_permission_denied(&out, &format!("nobody: {args:?}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());

    // As root without CAP_SYS_PTRACE: watch loads its programs, then cannot read pid
    // 1's objects for its markers.
    let _serial = serial();
    let out = Command::new("setpriv")
        .args(["--bounding-set=-sys_ptrace", "--"])
        .arg(sockscope_bin())
        .args(["watch", "--pid", "1", "--duration", "5"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    expect_permission_denied(&out, "root without CAP_SYS_PTRACE: watch --pid 1");
    assert_nothing_attached("after watch --pid 1 failed");
}

/// `watch --pid P` ends when P exits even if nobody reaps it: a zombie keeps its
/// /proc entry, which is why "exists in /proc" is not "alive".
#[test]
fn watch_ends_when_its_process_is_a_zombie() {
    if !require_root("watch_ends_when_its_process_is_a_zombie") {
        return;
    }
    let _serial = serial();
    // `sleep 3` is the child of a shell that becomes `sleep 60` (exec), which never
    // reaps it: it stays a zombie after 3 s.
    let mut parent = Command::new("sh")
        .args(["-c", "sleep 3 & echo $!; exec sleep 60"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sh");
    let out = Lines::new(parent.stdout.take().unwrap());
    let pid: u32 = out
        .next(Duration::from_secs(5))
        .and_then(|l| l.trim().parse().ok())
        .expect("the child's pid");
    let started = Instant::now();
    let mut watch = Command::new(sockscope_bin())
        .args(["watch", "--grace", "10ms", "--pid", &pid.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sockscope watch");
    let Some(status) = exit_within(&mut watch, Duration::from_secs(20)) else {
        let _ = watch.kill();
        let _ = parent.kill();
        panic!("watch --pid {pid} still runs 17 s after its process became a zombie");
    };
    let state = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let _ = parent.kill();
    let _ = parent.wait();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "watch ended before its process exited ({:?}): {status:?}",
        started.elapsed()
    );
    assert!(
        state.contains("State:\tZ"),
        "the process was a zombie, unreaped, when watch ended: {state}"
    );
    assert_eq!(status.code(), Some(0), "exit 0 when the process ends");
    assert_nothing_attached("after watch on a zombie");
}

/// `sockscope ... 2>&1 | head`: once `head` has what it wants, stderr is a closed pipe.
/// What sockscope then says is lost, but it must not panic (exit 101) over it: the
/// exit code keeps its meaning (here 2, a usage error).
#[test]
fn a_closed_stderr_does_not_turn_an_error_into_a_panic() {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let status = std::process::Command::new(sockscope_bin())
        .args(["watch", "--pid", "999999999"])
        .stdout(std::process::Stdio::null())
        .stderr(writer)
        .status()
        .expect("run sockscope");
    assert_eq!(status.code(), Some(2), "{status:?}");
}

/// A `check` killed by SIGKILL leaves its cgroup (`sockscope-check-PID`) behind; the
/// next `check` removes those of dead runs that are empty, and leaves one that still
/// holds a process.
#[test]
fn check_removes_empty_cgroups_left_by_killed_runs() {
    if !require_root("check_removes_empty_cgroups_left_by_killed_runs") {
        return;
    }
    let mounts = std::fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    let root = mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("cgroup v2 is mounted");
    // Pids of processes that are gone: as a killed run's would be.
    let dead = |_| {
        let mut c = std::process::Command::new("true")
            .spawn()
            .expect("run true");
        let pid = c.id();
        c.wait().expect("reap it");
        pid
    };
    let (empty, busy) = (dead(0), dead(1));
    let left = root.join(format!("sockscope-check-{empty}"));
    let held = root.join(format!("sockscope-check-{busy}"));
    std::fs::create_dir_all(&left).expect("a leftover cgroup");
    std::fs::create_dir_all(&held).expect("a leftover cgroup with a process");
    let mut sleeper = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo $$ > {} && exec sleep 30",
                held.join("cgroup.procs").display()
            ),
        ])
        .spawn()
        .expect("start a process in the leftover cgroup");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(held.join("cgroup.procs"))
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the process joined its cgroup");
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = run_check(&[], Path::new("/bin/true"), &[]);
    let removed = !left.exists();
    let kept = held.exists();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    for _ in 0..50 {
        if std::fs::remove_dir(&held).is_ok() || !held.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir(&left);
    assert!(removed, "the empty leftover is removed: {}", run.stderr);
    assert!(kept, "the one with a process is left alone");
    assert!(
        run.stderr.contains("left by runs that were killed"),
        "and says so: {}",
        run.stderr
    );
}

#[test]
fn check_output_to_a_path_that_cannot_be_written_is_refused_before_anything_runs() {
    let marker = std::env::temp_dir().join(format!("sockscope-ran-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let touch = format!("touch {}", marker.display());
    expect_usage_error(
        &[
            "check",
            "--output",
            "/nonexistent-sockscope-dir/records.jsonl",
            "--",
            "sh",
            "-c",
            &touch,
        ],
        "cannot create /nonexistent-sockscope-dir/records.jsonl",
    );
    assert!(!marker.exists(), "the command must not have run");
}
