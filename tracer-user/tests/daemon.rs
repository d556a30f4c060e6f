//! `sockscope daemon`: finds by itself every process that carries markers, those
//! running when it starts (their PeerConnections open then are incomplete, never clean)
//! and those started later, one in a container of its own (mount and PID namespaces, a
//! binary only that container's mounts show, a cgroup named as Docker names them);
//! findings carry where each process lives; the metrics page parses and moves; SIGHUP
//! reopens the output; nothing stays attached.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

const CONTAINER_ID: &str = "5ca1ab1e0ddba11c0ffee5ca1ab1e0ddba11c0ffee5ca1ab1e0ddba11c0ffee0";

/// A free loopback port for the metrics endpoint.
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("its address")
}

fn scrape(addr: SocketAddr) -> Vec<prometheus_parse::Sample> {
    let mut conn = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(conn, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines)
        .expect("the page parses as the Prometheus text format")
        .samples
}

fn value(samples: &[prometheus_parse::Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// The daemon's JSON lines in `file` so far.
fn records(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits until `file` has a record matching `want`.
fn wait_record(file: &Path, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = records(file).into_iter().find(|v| want(v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no record for {what} in {}: {:#?}",
            file.display(),
            records(file)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn found(file: &Path, what: &str, pid_is: impl Fn(&Value) -> bool) -> Value {
    wait_record(file, what, |v| {
        v["event"] == "process" && v["state"] == "found" && pid_is(&v["process"])
    })
}

/// A directory of the test's own and the daemon's findings file in it (emptied).
fn test_dir(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("sockscope-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("findings.jsonl");
    let _ = std::fs::remove_file(&output);
    (dir, output)
}

/// Starts `sockscope daemon` with `args`, its findings to `output`, and waits until it
/// judges: (the daemon, its stderr lines).
fn start_daemon(args: &[&str], output: &Path) -> (Child, Lines) {
    let mut daemon = Command::new(sockscope_bin())
        .arg("daemon")
        .args(args)
        .arg("--output")
        .arg(output)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let d_err = Lines::new(daemon.stderr.take().unwrap());
    d_err.wait_for("daemon judging", Duration::from_secs(30));
    (daemon, d_err)
}

/// Stops the daemon with SIGTERM: it must exit 0 and leave nothing attached.
fn stop_daemon(mut daemon: Child) {
    // SAFETY: our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(status.success(), "daemon exit: {status:?}");
    assert_nothing_attached("after the daemon");
}

fn go(child: &mut Child) {
    writeln!(child.stdin.as_mut().expect("stdin"), "go").expect("tell it to go on");
}

/// pc_sim's leaked (pc_id, port) pairs, from its lines.
fn leaked(lines: &[Value]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = lines
        .iter()
        .filter_map(|l| Some((l["pc_id"].as_u64()?, l["leaked_ports"].as_array()?)))
        .flat_map(|(pc, ports)| ports.iter().filter_map(move |p| Some((pc, p.as_u64()?))))
        .collect();
    v.sort();
    v
}

fn leaks_of(recs: &[Value], pid: u64) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = by_event(recs, "leak")
        .into_iter()
        .filter(|l| l["pid"].as_u64() == Some(pid))
        .filter_map(|l| Some((l["pc_id"].as_u64()?, l["local_port"].as_u64()?)))
        .collect();
    v.sort();
    v
}

fn program_lines(out: &Lines) -> Vec<Value> {
    out.rest(Duration::from_secs(30))
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A cgroup named as Docker names a container's, removed when dropped.
struct ContainerCgroup(PathBuf);

/// Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid
/// hosts).
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("cgroup v2 is mounted")
}

impl ContainerCgroup {
    fn create() -> Self {
        let path = cgroup2_root()
            .join("sockscope-test-daemon")
            .join(format!("docker-{CONTAINER_ID}.scope"));
        std::fs::create_dir_all(&path).expect("create a test cgroup (cgroup v2)");
        Self(path)
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        // Empty once its processes are reaped.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[test]
fn daemon_judges_every_marked_process_before_after_and_in_containers() {
    if !require_root("daemon_judges_every_marked_process_before_after_and_in_containers") {
        return;
    }
    let _serial = serial();
    let (dir, output) = test_dir("daemon");
    let sim = workload_bin("pc_sim");

    // A: running before the daemon, paused with PeerConnection 1 open.
    let mut a = Command::new(&sim)
        .args([
            "--pcs",
            "2",
            "--leak",
            "2",
            "--pause-after-open",
            "1",
            "--linger",
            "1500",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start pc_sim");
    let a_out = Lines::new(a.stdout.take().unwrap());
    let a_paused: Value =
        serde_json::from_str(&a_out.wait_for("\"paused\"", Duration::from_secs(10))).unwrap();
    let a_pid = a_paused["pid"].as_u64().unwrap();

    let metrics = free_addr();
    let (daemon, d_err) = start_daemon(
        &["--grace", "500ms", "--metrics", &metrics.to_string()],
        &output,
    );
    found(&output, "A (running before)", |p| {
        p["host_pid"].as_u64() == Some(a_pid)
    });
    // The page is rebuilt every second.
    std::thread::sleep(Duration::from_millis(1200));
    let before = scrape(metrics);
    assert!(value(&before, "sockscope_marked_processes", None) >= 1.0);
    go(&mut a);

    // B: started after; it waits until the daemon found it, as a server would take
    // longer than that before its first PeerConnection.
    let (mut b, b_out, b_pid) = spawn_waiting(
        "pc_sim",
        &["--wait", "--pcs", "3", "--leak", "2", "--linger", "1500"],
    );
    found(&output, "B (started after)", |p| {
        p["host_pid"].as_u64() == Some(u64::from(b_pid))
    });
    go(&mut b);
    let a_lines = program_lines(&a_out);
    let b_lines = program_lines(&b_out);
    let _ = (a.wait(), b.wait());
    let recs = wait_record(&output, "B's late release", |v| {
        v["event"] == "late" && v["pid"].as_u64() == Some(u64::from(b_pid))
    });
    drop(recs);

    // logrotate: the file moves, SIGHUP, and what follows goes to a new file.
    let rotated = dir.join("findings.jsonl.1");
    std::fs::rename(&output, &rotated).unwrap();
    // SAFETY: our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGHUP) };
    d_err.wait_for("output reopened", Duration::from_secs(10));

    // C: in a mount and PID namespace of its own, from a copy of the binary that only
    // its mounts show, in a cgroup named like a Docker container's.
    let cgroup = ContainerCgroup::create();
    let mount_dir = dir.join("container-root");
    std::fs::create_dir_all(&mount_dir).unwrap();
    let script = format!(
        "echo $$ > {procs} && exec unshare --mount --pid --fork --propagation private sh -c \
         'mount -t tmpfs none {m} && cp {sim} {m}/pc_sim_ct && exec {m}/pc_sim_ct --wait --pcs 1 --leak 1 --linger 1500'",
        procs = cgroup.0.join("cgroup.procs").display(),
        m = mount_dir.display(),
        sim = sim.display(),
    );
    let mut c = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the contained pc_sim (unshare from util-linux)");
    let c_out = Lines::new(c.stdout.take().unwrap());
    let c_ready: Value =
        serde_json::from_str(&c_out.wait_for("ready", Duration::from_secs(10))).unwrap();
    assert_eq!(c_ready["pid"], 1, "pid 1 of its own namespace: {c_ready}");
    assert!(
        !Path::new(&mount_dir).join("pc_sim_ct").exists(),
        "the copy is visible only inside the container's mounts"
    );
    let c_found = found(&output, "C (in a container)", |p| p["ns_pid"] == 1);
    let ctx = &c_found["process"];
    let c_pid = ctx["host_pid"].as_u64().unwrap();
    assert_ne!(c_pid, 1);
    assert_eq!(ctx["container_id"], CONTAINER_ID, "{ctx}");
    assert!(
        ctx["cgroup"]
            .as_str()
            .is_some_and(|g| g.ends_with(&format!("docker-{CONTAINER_ID}.scope"))),
        "{ctx}"
    );
    assert!(
        ctx["exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("/pc_sim_ct")),
        "{ctx}"
    );
    go(&mut c);
    let c_lines = program_lines(&c_out);
    let _ = c.wait();
    wait_record(&output, "C's verdict", |v| {
        v["event"] == "verdict" && v["pid"].as_u64() == Some(c_pid)
    });
    std::thread::sleep(Duration::from_millis(1200));
    let after = scrape(metrics);

    stop_daemon(daemon);

    let old = records(&rotated);
    let new = records(&output);
    // A: PeerConnection 1 was open when the daemon started: incomplete, never clean.
    let a_verdicts: Vec<(u64, String, String)> = by_event(&old, "verdict")
        .into_iter()
        .filter(|v| v["pid"].as_u64() == Some(a_pid))
        .map(|v| {
            (
                v["pc_id"].as_u64().unwrap(),
                v["outcome"].as_str().unwrap().to_owned(),
                v["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        a_verdicts,
        vec![
            (1, "incomplete".into(), "opened_before_attach".into()),
            (2, "leak".into(), String::new())
        ]
    );
    assert_eq!(leaks_of(&old, a_pid), leaked(&a_lines));
    // B: judged whole.
    assert_eq!(leaks_of(&old, u64::from(b_pid)), leaked(&b_lines));
    assert_eq!(leaked(&b_lines).len(), 1);
    // C: its findings went to the new file only, with its context.
    assert_eq!(leaks_of(&new, c_pid), leaked(&c_lines));
    assert_eq!(leaked(&c_lines).len(), 1);
    assert!(leaks_of(&old, c_pid).is_empty());
    for rec in old.iter().chain(&new).filter(|r| r["event"] != "process") {
        let pid = rec["pid"].as_u64();
        if [Some(a_pid), Some(u64::from(b_pid)), Some(c_pid)].contains(&pid) {
            assert_eq!(rec["process"]["host_pid"].as_u64(), pid, "{rec}");
        }
    }
    // The numbers moved.
    let judged_leaks = |s: &[prometheus_parse::Sample]| {
        value(
            s,
            "sockscope_peer_connections_judged_total",
            Some(("outcome", "leak")),
        )
    };
    assert!(
        judged_leaks(&after) >= judged_leaks(&before) + 3.0,
        "A, B and C each leaked once"
    );
    assert!(value(&after, "sockscope_leaks_total", Some(("kind", "held"))) >= 3.0);
    assert!(
        value(&after, "sockscope_events_total", None)
            > value(&before, "sockscope_events_total", None)
    );
    assert_eq!(value(&after, "sockscope_events_lost_total", None), 0.0);
    drop(cgroup);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_systemd_unit_verifies() {
    // systemd-analyze checks the unit as systemd would load it, ExecStart's binary
    // included: point it at the one just built.
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze (systemd) is needed to check contrib/systemd"
        );
        eprintln!("SKIP the_systemd_unit_verifies: no systemd-analyze");
        return;
    };
    assert!(out.status.success());
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/sockscope.service");
    let text = std::fs::read_to_string(&unit).expect("the unit");
    let dir = std::env::temp_dir().join(format!("sockscope-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("sockscope.service");
    std::fs::write(
        &copy,
        text.replace(
            "/usr/local/bin/sockscope",
            &sockscope_bin().display().to_string(),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// The daemon reads a new program's markers through the first process it sees running
/// it (/proc/PID/exe) and never stops that process: one that exits before its markers
/// are attached must not leave the program unwatched. Short runs first (the one whose
/// notes were read but that was gone by the attach, if the race is hit: likely, not
/// certain), then one that waits to be found: its PeerConnections must be judged.
#[test]
fn daemon_watches_a_program_whose_first_process_exited_during_the_attach() {
    if !require_root("daemon_watches_a_program_whose_first_process_exited_during_the_attach") {
        return;
    }
    let _serial = serial();
    let (dir, output) = test_dir("daemon-short");
    let (daemon, _d_err) = start_daemon(&["--grace", "300ms"], &output);
    for _ in 0..5 {
        let status = Command::new(workload_bin("pc_sim"))
            .args(["--pcs", "3"])
            .stdout(Stdio::null())
            .status()
            .expect("run pc_sim");
        assert!(status.success());
    }
    let (mut sim, sim_out, pid) = spawn_waiting(
        "pc_sim",
        &["--wait", "--pcs", "2", "--leak", "2", "--linger", "1000"],
    );
    found(&output, "the waiting pc_sim", |p| {
        p["host_pid"].as_u64() == Some(u64::from(pid))
    });
    go(&mut sim);
    let lines = program_lines(&sim_out);
    let _ = sim.wait();
    wait_record(&output, "its second verdict", |v| {
        v["event"] == "verdict" && v["pid"].as_u64() == Some(u64::from(pid)) && v["pc_id"] == 2
    });
    stop_daemon(daemon);
    let recs = records(&output);
    let verdicts: Vec<(u64, String)> = by_event(&recs, "verdict")
        .into_iter()
        .filter(|v| v["pid"].as_u64() == Some(u64::from(pid)))
        .map(|v| {
            (
                v["pc_id"].as_u64().unwrap(),
                v["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(verdicts, vec![(1, "clean".into()), (2, "leak".into())]);
    assert_eq!(leaks_of(&recs, u64::from(pid)), leaked(&lines));
    let _ = std::fs::remove_dir_all(&dir);
}

/// DWARF stacks in the daemon (#15): a marked program built without frame pointers,
/// found by the daemon, gets its creating stack unwound (`--stacks auto`, which samples
/// only the processes found carrying markers): the same stack as `check` gives the same
/// build, down to the thread's root with no stop note.
#[test]
fn daemon_unwinds_the_stacks_of_a_marked_program_built_without_frame_pointers() {
    let test = "daemon_unwinds_the_stacks_of_a_marked_program_built_without_frame_pointers";
    if !require_root(test) {
        return;
    }
    let Some((_, nofp)) = pc_sim_builds(test) else {
        return;
    };
    let sim_args = [
        "--pcs",
        "1",
        "--sockets",
        "2",
        "--leak",
        "1",
        "--linger",
        "1000",
    ];
    let reference = run_check(&["--stacks", "auto", "--grace", "300ms"], &nofp, &sim_args);
    assert_eq!(reference.code, Some(1), "{}", reference.stderr);
    let want = stack_functions(&by_event(&reference.ours, "leak")[0]["stack"]);
    assert!(
        want.iter().any(|f| f.contains("pc_sim_create_sockets"))
            && want.last().is_some_and(|f| f.starts_with("clone3")),
        "check unwinds the build without frame pointers: {want:#?}"
    );

    let _serial = serial();
    let (dir, output) = test_dir("daemon-dwarf");
    let (daemon, _d_err) = start_daemon(&["--stacks", "auto", "--grace", "300ms"], &output);
    let (mut sim, _sim_out, pid) = spawn_waiting_at(&nofp, &[&["--wait"], &sim_args[..]].concat());
    let pid = u64::from(pid);
    found(&output, "pc_sim without frame pointers", |p| {
        p["host_pid"].as_u64() == Some(pid)
    });
    go(&mut sim);
    let leak = wait_record(&output, "its leak", |v| {
        v["event"] == "leak" && v["pid"].as_u64() == Some(pid)
    });
    let _ = sim.wait();
    stop_daemon(daemon);
    let got = stack_functions(&leak["stack"]);
    assert_eq!(
        got, want,
        "the daemon's stack is check's (file:line included)"
    );
    assert_eq!(leak["site"], by_event(&reference.ours, "leak")[0]["site"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kernel attachments the daemon holds: its perf event and BPF link fds (each marker
/// is a uprobe: one of them), read from /proc, not from what sockscope says.
fn attachment_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|t| {
                    let t = t.to_string_lossy();
                    t.contains("perf_event") || t.contains("bpf_link")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Runs a marked program that leaks one socket; returns its pid and leaked pairs.
fn run_leaking(bin: &Path, output: &Path) -> (u64, Vec<(u64, u64)>) {
    let (mut child, out, pid) = spawn_waiting_at(
        bin,
        &["--wait", "--pcs", "1", "--leak", "1", "--linger", "600"],
    );
    let pid = u64::from(pid);
    found(output, "the copy", |p| p["host_pid"].as_u64() == Some(pid));
    go(&mut child);
    let lines = program_lines(&out);
    let _ = child.wait();
    wait_record(output, "its leak", |v| {
        v["event"] == "leak" && v["pid"].as_u64() == Some(pid)
    });
    (pid, leaked(&lines))
}

/// A program no process runs any more has its markers detached (a binary replaced by a
/// new version, a container gone: a long-running daemon must not keep them, nor the
/// files), and gets them back when it runs again.
#[test]
fn daemon_releases_the_markers_of_a_program_nobody_runs_and_attaches_them_again() {
    if !require_root("daemon_releases_the_markers_of_a_program_nobody_runs_and_attaches_them_again")
    {
        return;
    }
    let _serial = serial();
    let (dir, output) = test_dir("daemon-release");
    // A binary of its own (a file no other test's process maps).
    let copy = dir.join("pc_sim_release");
    std::fs::copy(workload_bin("pc_sim"), &copy).expect("copy pc_sim");
    let metrics = free_addr();
    let (daemon, d_err) = start_daemon(
        &[
            "--grace",
            "200ms",
            "--forget-programs-after",
            "1s",
            "--metrics",
            &metrics.to_string(),
        ],
        &output,
    );
    let baseline = attachment_fds(daemon.id());

    let (first, leaked_first) = run_leaking(&copy, &output);
    assert_eq!(leaked_first.len(), 1);
    let with_markers = attachment_fds(daemon.id());
    assert!(
        with_markers > baseline,
        "the copy's markers are uprobes the daemon holds ({baseline} -> {with_markers})"
    );
    // Forgotten 2 s after its exit, released 1 s later.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut err = Vec::new();
    while attachment_fds(daemon.id()) != baseline && Instant::now() < deadline {
        err.extend(d_err.next(Duration::from_millis(100)));
    }
    assert_eq!(
        attachment_fds(daemon.id()),
        baseline,
        "released: the daemon holds no uprobe of the copy any more; its stderr: {err:#?}"
    );
    err.extend(d_err.next(Duration::from_millis(500)));
    assert!(
        err.iter()
            .any(|l| l.contains("released") && l.contains("markers")),
        "says so: {err:#?}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let page = scrape(metrics);
    let n = with_markers - baseline;
    // At least the copy's (other marked programs on the host may come and go too).
    assert!(
        value(&page, "sockscope_markers_released_total", None) >= n as f64,
        "every marker of the copy released ({n})"
    );

    // Run again: found, its markers attached again, its leak judged.
    let (second, leaked_second) = run_leaking(&copy, &output);
    assert_ne!(first, second);
    assert_eq!(
        leaks_of(&records(&output), second),
        leaked_second,
        "judged whole after the markers came back"
    );
    assert_eq!(leaks_of(&records(&output), first), leaked_first);

    stop_daemon(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The daemon may fall behind (a first parse of a large binary, a burst): a process can
/// exit, and its pid go to another, before the daemon reads its first records. It must
/// still be judged (its program is known to carry markers), and its findings must not
/// carry what /proc says of whoever has the pid now: they say the process had exited,
/// with the start time the kernel gave in its exec record (checked here against the
/// start time /proc showed while the process lived).
#[test]
fn daemon_judges_a_process_that_exited_before_it_got_to_its_records() {
    if !require_root("daemon_judges_a_process_that_exited_before_it_got_to_its_records") {
        return;
    }
    let _serial = serial();
    let (dir, output) = test_dir("daemon-behind");
    let copy = dir.join("pc_sim_behind");
    std::fs::copy(workload_bin("pc_sim"), &copy).expect("copy pc_sim");
    // A ring large enough to hold every record of the host while the daemon is stopped.
    let (daemon, _d_err) = start_daemon(&["--grace", "200ms", "--ring-bytes", "16777216"], &output);
    // Its program becomes known to carry markers (and they are attached).
    let (first, _) = run_leaking(&copy, &output);

    // The daemon stops reading; a second process of the program runs whole and is reaped.
    // SAFETY: our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGSTOP) };
    let (mut child, out, pid) = spawn_waiting_at(
        &copy,
        &["--wait", "--pcs", "2", "--leak", "1", "--linger", "600"],
    );
    let pid = u64::from(pid);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start_ticks: u64 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .expect("starttime in /proc/PID/stat");
    go(&mut child);
    let lines = program_lines(&out);
    let _ = child.wait();
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "reaped");
    // SAFETY: our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGCONT) };

    let leak = wait_record(&output, "the gone process's leak", |v| {
        v["event"] == "leak" && v["pid"].as_u64() == Some(pid)
    });
    let want = leaked(&lines);
    assert_eq!(want.len(), 1, "pc_sim leaked one socket: {lines:#?}");
    std::thread::sleep(Duration::from_millis(500));
    let recs = records(&output);
    assert_eq!(
        leaks_of(&recs, pid),
        want,
        "judged though gone when looked at"
    );
    let verdicts: Vec<&Value> = by_event(&recs, "verdict")
        .into_iter()
        .filter(|v| v["pid"].as_u64() == Some(pid))
        .collect();
    assert_eq!(
        verdicts.len(),
        2,
        "both PeerConnections judged: {verdicts:#?}"
    );
    for ctx in [
        &leak["process"],
        &found(&output, "the gone process", |p| {
            p["host_pid"].as_u64() == Some(pid)
        })["process"],
    ] {
        assert_eq!(ctx["exited_before_found"], true, "{ctx}");
        assert_eq!(
            ctx["start_ticks"].as_u64(),
            Some(start_ticks),
            "the kernel's start time is /proc's: {ctx}"
        );
        assert!(
            ctx["exe"].is_null() && ctx["cgroup"].is_null(),
            "nothing read from /proc in its name: {ctx}"
        );
    }
    // A process looked at while alive has its whole context, start time included.
    let alive = found(&output, "the first process", |p| {
        p["host_pid"].as_u64() == Some(first)
    });
    assert!(alive["process"]["exited_before_found"].is_null(), "{alive}");
    assert!(
        alive["process"]["start_ticks"].as_u64().is_some(),
        "{alive}"
    );
    assert!(
        alive["process"]["exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("pc_sim_behind")),
        "{alive}"
    );

    stop_daemon(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
