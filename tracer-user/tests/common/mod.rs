//! Helpers for tests that run sockscope for real: root, real BPF, real sockets.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{Mutex, MutexGuard, mpsc},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Tests that attach programs run one at a time, so the detach checks see only
/// their own sockscope.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the tests run in CI (`CI=true`): there a missing prerequisite fails.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A missing prerequisite: a failure in CI, a skip with the reason elsewhere.
pub fn missing(test: &str, why: &str) {
    assert!(!in_ci(), "{test}: {why}");
    eprintln!("SKIP {test}: {why}");
}

/// True when the test can run. Outside CI a non-root run skips with a reason; in CI
/// (CI=true) it fails, because a skipped test there would hide a broken tracer.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if in_ci() {
        panic!("{test}: must run as root in CI (loads BPF programs)");
    }
    eprintln!("SKIP {test}: needs root (loads BPF programs)");
    false
}

pub fn sockscope_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sockscope"))
}

/// A binary of the `workloads` crate, built beside sockscope.
pub fn workload_bin(name: &str) -> PathBuf {
    let path = sockscope_bin().with_file_name(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo build -p workloads` (cargo xtask test does)",
        path.display()
    );
    path
}

/// A webrtc-rs example that is a workspace of its own (webrtc-rs 0.21, 0.17.1), built by
/// `cargo xtask test` into `$SOCKSCOPE_EXAMPLES` (default target/examples). Missing: a
/// failure in CI, else `None` with the reason printed (the test then skips).
pub fn example_bin(test: &str, name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("SOCKSCOPE_EXAMPLES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/examples"),
        PathBuf::from,
    );
    let path = dir.join(name);
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} missing: `cargo xtask test` builds the webrtc-rs examples",
        path.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{test}: {why}");
    eprintln!("SKIP {test}: {why}");
    None
}

/// Lines of a child's pipe, read on a thread so waits can time out.
pub struct Lines {
    rx: mpsc::Receiver<String>,
}

impl Lines {
    pub fn new(pipe: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { rx }
    }

    pub fn next(&self, timeout: Duration) -> Option<String> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Waits for a line containing `needle`; panics with what was seen on timeout.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?} within {timeout:?}; saw: {seen:#?}");
    }

    /// Everything until the pipe closes.
    pub fn rest(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return out,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
        panic!("pipe still open after {timeout:?}; got so far: {out:#?}");
    }
}

/// The `udp_workload` program, driven through its stdin/stdout protocol.
pub struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines,
    pub pid: u32,
}

impl Workload {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(workload_bin("udp_workload"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start udp_workload");
        let stdin = child.stdin.take();
        let stdout = Lines::new(child.stdout.take().expect("stdout"));
        let ready: Value =
            serde_json::from_str(&stdout.wait_for("ready", Duration::from_secs(10))).unwrap();
        let pid = ready["pid"].as_u64().unwrap() as u32;
        Self {
            child,
            stdin,
            stdout,
            pid,
        }
    }

    /// Lets it open and close its sockets; returns its report.
    pub fn go(&mut self) -> Value {
        writeln!(self.stdin.as_mut().unwrap(), "go").unwrap();
        serde_json::from_str(&self.stdout.wait_for("sockets", Duration::from_secs(10))).unwrap()
    }

    pub fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `sockscope` with its stdout and stderr lines.
pub struct Sockscope {
    pub child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

pub const ATTACHED: &str = "tracing UDP sockets";

impl Sockscope {
    /// Starts `sockscope ARGS` and waits until it says it is attached.
    pub fn start(args: &[&str]) -> Self {
        Self::start_env(args, &[])
    }

    /// [`Self::start`] with these environment variables set.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(sockscope_bin())
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sockscope");
        let stdout = Lines::new(child.stdout.take().expect("stdout"));
        let stderr = Lines::new(child.stderr.take().expect("stderr"));
        stderr.wait_for(ATTACHED, Duration::from_secs(30));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGINT, then all JSON lines it printed, and its exit status.
    pub fn stop_json(self) -> (Vec<Value>, ExitStatus) {
        let s = self.stop();
        (s.values, s.status)
    }

    /// SIGINT, then what it printed on stdout (as JSON) and stderr, and its status.
    pub fn stop(mut self) -> Stopped {
        self.signal(libc::SIGINT);
        let lines = self.stdout.rest(Duration::from_secs(30));
        let status = self.child.wait().unwrap();
        let stderr = self.stderr.rest(Duration::from_secs(5));
        let values = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        Stopped {
            values,
            status,
            stderr,
        }
    }
}

pub struct Stopped {
    pub values: Vec<Value>,
    pub status: ExitStatus,
    pub stderr: Vec<String>,
}

impl Drop for Sockscope {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Names of loaded BPF programs that are sockscope's (the kernel keeps 15 bytes of a
/// name, enough for the `sockscope_` prefix).
pub fn loaded_sockscope_programs() -> Vec<String> {
    sockscope_programs()
        .into_iter()
        .map(|(_, name)| name)
        .collect()
}

fn sockscope_programs() -> Vec<(u32, String)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| Some((p.id(), p.name_as_str()?.to_owned())))
        .filter(|(_, n)| n.starts_with("sockscope_"))
        .collect()
}

/// Ids of the BPF programs some live process holds an fd to (a program fd or a link fd:
/// both show `prog_id:` in fdinfo).
fn programs_held_by_processes() -> std::collections::BTreeSet<u32> {
    let mut held = std::collections::BTreeSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return held;
    };
    for proc in procs.filter_map(Result::ok) {
        let Ok(fds) = std::fs::read_dir(proc.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let Ok(info) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            held.extend(
                info.lines()
                    .filter_map(|l| l.strip_prefix("prog_id:"))
                    .filter_map(|v| v.trim().parse::<u32>().ok()),
            );
        }
    }
    held
}

/// Waits (the kernel frees programs asynchronously) until no sockscope program is left
/// behind, and panics with the leftovers otherwise. Left behind means loaded while no
/// process holds it: a program that another sockscope on the host (a second test, a
/// daemon) holds through its fds is that sockscope's, not a leftover of the run under
/// test, whose process has exited. What it catches: programs kept only by an attachment
/// in the kernel (a cgroup attachment, a pin, a perf event outliving its owner).
pub fn assert_nothing_attached(context: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let held = programs_held_by_processes();
        let left: Vec<String> = sockscope_programs()
            .into_iter()
            .filter(|(id, _)| !held.contains(id))
            .map(|(id, name)| format!("{name} (id {id})"))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: programs still loaded with no process holding them: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ground truth from iproute2's `ss` (sock_diag, independent of our netlink code):
/// (local port, cookie, inode) of every UDP socket.
pub fn ss_udp_sockets() -> Vec<(u16, u64, u64)> {
    let out = Command::new("ss")
        .args(["-uaeH"])
        .output()
        .expect("run ss (iproute2)");
    assert!(
        out.status.success(),
        "ss failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(3)?;
            let port = local.rsplit_once(':')?.1.parse().ok()?;
            let cookie = fields.iter().find_map(|f| f.strip_prefix("sk:"))?;
            let inode = fields.iter().find_map(|f| f.strip_prefix("ino:"))?;
            Some((
                port,
                u64::from_str_radix(cookie, 16).ok()?,
                inode.parse().ok()?,
            ))
        })
        .collect()
}

pub fn by_event<'a>(values: &'a [Value], event: &str) -> Vec<&'a Value> {
    values.iter().filter(|v| v["event"] == event).collect()
}

/// What a `sockscope check --format json ARGS -- CMD CMD_ARGS` printed. sockscope's
/// lines carry `schema`; the command's own JSON lines (same stdout) do not.
pub struct CheckRun {
    pub code: Option<i32>,
    pub ours: Vec<Value>,
    pub program: Vec<Value>,
    pub stderr: String,
}

/// `sockscope check --format json CHECK_ARGS -- CMD CMD_ARGS`, stdin closed.
pub fn check_command(check_args: &[&str], cmd: &std::path::Path, cmd_args: &[&str]) -> Command {
    let mut c = Command::new(sockscope_bin());
    c.args(["check", "--format", "json"])
        .args(check_args)
        .arg("--")
        .arg(cmd)
        .args(cmd_args)
        .stdin(Stdio::null());
    c
}

/// The lines of `text` that are JSON values.
pub fn json_lines(text: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

impl CheckRun {
    /// sockscope's records and the program's own JSON lines, apart, from one stdout
    /// (a record longer than a pipe's atomic write may be split by the program's
    /// writes: see [`run_check`]).
    pub fn from_output(out: std::process::Output) -> Self {
        let (ours, program) = json_lines(&out.stdout)
            .into_iter()
            .partition(|v| v.get("schema").is_some());
        CheckRun {
            code: out.status.code(),
            ours,
            program,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `check` with its records in a file of their own (`--output`), the program's lines on
/// stdout: on a shared stdout a record longer than 4 KiB (one with a deep stack) was
/// now and then split by the program's own writes, and both lines were lost.
pub fn run_check(check_args: &[&str], cmd: &std::path::Path, cmd_args: &[&str]) -> CheckRun {
    let _serial = serial();
    // One run at a time per test process (the lock above).
    let records =
        std::env::temp_dir().join(format!("sockscope-records-{}.jsonl", std::process::id()));
    let records_arg = records.to_string_lossy().into_owned();
    let mut args = vec!["--output", records_arg.as_str()];
    args.extend_from_slice(check_args);
    let out = check_command(&args, cmd, cmd_args).output().unwrap();
    assert_nothing_attached("after check");
    let ours = json_lines(&std::fs::read(&records).unwrap_or_default());
    let _ = std::fs::remove_file(&records);
    CheckRun {
        code: out.status.code(),
        ours,
        program: json_lines(&out.stdout),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Waits for `child` to exit, at most `within`: its status, or `None` (still running).
pub fn exit_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a workload that prints `{"ready":true,"pid":P}` and waits for a line on
/// stdin: (child, its stdout lines, P).
pub fn spawn_waiting(bin: &str, args: &[&str]) -> (Child, Lines, u32) {
    spawn_waiting_at(&workload_bin(bin), args)
}

/// [`spawn_waiting`] for a program at `path` (a copy of a workload, say).
pub fn spawn_waiting_at(path: &Path, args: &[&str]) -> (Child, Lines, u32) {
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
    let out = Lines::new(child.stdout.take().expect("stdout"));
    let ready: Value =
        serde_json::from_str(&out.wait_for("ready", Duration::from_secs(10))).unwrap();
    let pid = ready["pid"].as_u64().unwrap() as u32;
    (child, out, pid)
}

/// Runs sockscope with `args` and expects the error contract: exit 2, one line on
/// stderr mentioning `needle`, no panic, nothing on stdout.
pub fn expect_usage_error(args: &[&str], needle: &str) {
    let out = std::process::Command::new(sockscope_bin())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: exit code; stderr: {stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: exactly one line on stderr: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{args:?}: {stderr:?} should mention {needle:?}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: panic: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
}

/// What `watch` said about a program it attached to while the program was paused.
pub struct LateWatch {
    /// The program's JSON lines (from the pause on).
    pub program: Vec<Value>,
    /// watch's JSON records.
    pub ours: Vec<Value>,
    pub status: Option<i32>,
}

/// Starts `program ARGS`, waits for its `"paused"` line, attaches `watch --grace 1s`,
/// lets the program go on (a line on its stdin) and collects everything until both end.
pub fn watch_from_pause(program: &std::path::Path, args: &[&str]) -> LateWatch {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the program");
    let out = Lines::new(child.stdout.take().expect("stdout"));
    let paused: Value =
        serde_json::from_str(&out.wait_for("\"paused\"", Duration::from_secs(120))).unwrap();
    let pid = paused["pid"].as_u64().expect("pid").to_string();
    let mut watch = Command::new(sockscope_bin())
        .args(["watch", "--pid", &pid, "--grace", "1s", "-f", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start watch");
    let ours = Lines::new(watch.stdout.take().expect("stdout"));
    let err = Lines::new(watch.stderr.take().expect("stderr"));
    err.wait_for("watching pid", Duration::from_secs(30));
    writeln!(child.stdin.as_mut().expect("stdin"), "go").expect("tell the program to go on");
    let mut program = vec![paused];
    program.extend(
        out.rest(Duration::from_secs(120))
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok()),
    );
    let _ = child.wait();
    let status = watch
        .wait()
        .expect("watch ends when the program exits")
        .code();
    let ours = ours
        .rest(Duration::from_secs(10))
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_nothing_attached("after watch");
    LateWatch {
        program,
        ours,
        status,
    }
}

/// A frame's function name as sockscope printed it (`[unknown]` when unnamed).
pub fn symbol(f: &Value) -> &str {
    f["symbol"].as_str().unwrap_or("[unknown]")
}

/// Every function of a JSON stack (inlined ones first, as frames list them), each as
/// `function file:line`.
pub fn stack_functions(stack: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for f in stack.as_array().map(Vec::as_slice).unwrap_or_default() {
        let inlined = f["inlined"].as_array().cloned().unwrap_or_default();
        let at = f["inlined_at"].as_array().cloned().unwrap_or_default();
        for (i, name) in inlined.iter().enumerate() {
            let where_ = at.get(i).map_or(String::new(), |a| {
                format!(" {}:{}", a["file"].as_str().unwrap_or("?"), a["line"])
            });
            out.push(format!("{}{where_}", name.as_str().unwrap_or("?")));
        }
        out.push(format!(
            "{} {}:{}",
            symbol(f),
            f["file"].as_str().unwrap_or("?"),
            f["line"]
        ));
    }
    out
}

/// The release builds of `pc_sim` with and without frame pointers (`cargo xtask test`
/// builds them into `$SOCKSCOPE_UNWIND_BINS`, see xtask/src/unwind_bins.rs). Missing: a
/// failure in CI, else `None` with the reason printed (the test then skips).
pub fn pc_sim_builds(test: &str) -> Option<(PathBuf, PathBuf)> {
    let dir = std::env::var_os("SOCKSCOPE_UNWIND_BINS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/unwind"),
        PathBuf::from,
    );
    let fp = dir.join("fp/pc_sim");
    let nofp = dir.join("nofp/pc_sim");
    if fp.exists() && nofp.exists() {
        return Some((fp, nofp));
    }
    let why = format!(
        "{} missing: `cargo xtask test` builds pc_sim with and without frame pointers",
        nofp.display()
    );
    missing(test, &why);
    None
}
