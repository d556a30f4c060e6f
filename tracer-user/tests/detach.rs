//! Nothing of sockscope's stays in the kernel after it stops, however it stops.
mod common;

use std::{process::Command, time::Duration};

use common::*;

fn run_and_stop(sig: i32) {
    let s = Sockscope::start(&["trace", "--format", "json"]);
    assert!(
        !loaded_sockscope_programs().is_empty(),
        "programs loaded while tracing"
    );
    s.signal(sig);
    let mut s = s;
    let _ = s.child.wait();
}

#[test]
fn detaches_after_duration_sigint_sigterm_and_sigkill() {
    if !require_root("detaches_after_duration_sigint_sigterm_and_sigkill") {
        return;
    }
    let _serial = serial();
    assert_nothing_attached("before the test");

    let out = Command::new(sockscope_bin())
        .args(["trace", "--duration", "1s", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--duration run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(last.contains("\"summary\""), "ends with a summary: {last}");
    assert_nothing_attached("after --duration");

    for (sig, name) in [
        (libc::SIGINT, "SIGINT"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGKILL, "SIGKILL"),
    ] {
        run_and_stop(sig);
        assert_nothing_attached(&format!("after {name}"));
    }
    std::thread::sleep(Duration::from_millis(10));
}

/// The state letter of /proc/PID/stat (`T`: stopped), `None` once it is gone.
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

#[test]
fn check_killed_while_a_program_waits_at_exec_leaves_nothing_stopped() {
    if !require_root("check_killed_while_a_program_waits_at_exec_leaves_nothing_stopped") {
        return;
    }
    let _serial = serial();
    use std::process::Stdio;
    // The shell execs pc_sim after a second: the kernel stops it there for `check`,
    // which is itself stopped (so it cannot continue it) and then killed.
    let sim = workload_bin("pc_sim");
    let pid_file = std::env::temp_dir().join(format!("sockscope-guard-{}", std::process::id()));
    let script = format!(
        "echo $$ > {}; sleep 1; exec {} --pcs 1 --linger 200",
        pid_file.display(),
        sim.display()
    );
    let mut check = Command::new(sockscope_bin())
        .args(["check", "--", "/bin/sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Lines::new(check.stderr.take().unwrap());
    err.wait_for("checking", Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let pid: u32 = loop {
        if let Some(p) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shell never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&pid_file);
    // The shell sleeps: stop `check` before the shell execs pc_sim.
    // SAFETY: our own child.
    unsafe { libc::kill(check.id() as i32, libc::SIGSTOP) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while state_of(pid) != Some('T') {
        assert!(
            std::time::Instant::now() < deadline,
            "pc_sim was not stopped at its exec (state {:?})",
            state_of(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    check.kill().unwrap();
    let _ = check.wait();
    // The guard continues it: it runs to its end.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while state_of(pid).is_some_and(|s| s != 'Z') {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} still there (state {:?}): left stopped",
            state_of(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_nothing_attached("after check was killed");
    // And the guard removed check's cgroup once its processes were gone.
    let cgroups = std::fs::read_to_string("/proc/mounts").unwrap();
    let root = cgroups
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| std::path::PathBuf::from(f[1]))
        })
        .expect("cgroup v2 mounted");
    let ours = root.join(format!("sockscope-check-{}", check.id()));
    // The guard keeps continuing for 5 s (until check's programs are surely gone).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while ours.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} left behind",
            ours.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
