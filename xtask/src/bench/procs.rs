//! The processes a benchmark drives: workloads that announce their pid and wait for a
//! go, and tracers (sockscope, bpftrace) started in the background and stopped with
//! SIGINT like a user would.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use tracer_common::monotonic_ns;

fn first_json(line: &str) -> Option<Value> {
    serde_json::from_str::<Value>(line.trim())
        .ok()
        .filter(Value::is_object)
}

/// A workload started with `--wait`: it printed `{"ready":true,"pid":P}` and does
/// nothing until [`Waiting::go`].
pub struct Waiting {
    child: Child,
    pub pid: u32,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    what: String,
}

impl Waiting {
    pub fn spawn(mut cmd: Command) -> anyhow::Result<Self> {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("no stdout pipe")?);
        let mut w = Self {
            child,
            pid: 0,
            stdin,
            stdout,
            what,
        };
        let ready = w.next_json()?;
        w.pid = ready["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .with_context(|| format!("{} announced no pid: {ready}", w.what))?;
        Ok(w)
    }

    pub fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .context("workload stdin already closed")?;
        stdin
            .write_all(b"\n")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("cannot start the work of {}", self.what))
    }

    /// The next JSON object the workload prints (other lines are skipped).
    pub fn next_json(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("{} ended without the expected output", self.what);
            }
            if let Some(v) = first_json(&line) {
                return Ok(v);
            }
        }
    }

    /// Closes stdin, reads to the end, and returns the last JSON object printed
    /// (null if none was left to read); fails when the workload fails.
    pub fn finish(mut self) -> anyhow::Result<Value> {
        drop(self.stdin.take());
        let mut last = Value::Null;
        for line in (&mut self.stdout).lines() {
            if let Some(v) = first_json(&line?) {
                last = v;
            }
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("{} failed: {status}", self.what);
        }
        Ok(last)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A line a tracer printed, with when it was read (CLOCK_MONOTONIC).
pub struct Line {
    pub at_ns: u64,
    pub text: String,
}

/// Reads a stream to its end; keeps the lines `keep` wants, counts all, and tells
/// `ready` the first time a line contains `ready_marker`.
fn reader(
    stream: impl std::io::Read + Send + 'static,
    keep: fn(&str) -> bool,
    ready_marker: Option<&'static str>,
    ready: mpsc::Sender<u64>,
) -> JoinHandle<(Vec<Line>, u64)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut count = 0u64;
        let mut signalled = false;
        let mut buf = Vec::new();
        let mut r = BufReader::with_capacity(1 << 16, stream);
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let at_ns = monotonic_ns();
            count += 1;
            let text = String::from_utf8_lossy(&buf);
            if !signalled && ready_marker.is_some_and(|m| text.contains(m)) {
                signalled = true;
                let _ = ready.send(at_ns);
            }
            if keep(&text) {
                kept.push(Line {
                    at_ns,
                    text: text.trim_end().to_owned(),
                });
            }
        }
        (kept, count)
    })
}

/// A tracer running in the background.
pub struct Tracer {
    child: Child,
    /// From spawn to its "attached" line.
    pub attach: Duration,
    cpu_at_attach: Duration,
    stdout: Option<JoinHandle<(Vec<Line>, u64)>>,
    stderr: Option<JoinHandle<(Vec<Line>, u64)>>,
    what: String,
}

/// What a stopped tracer printed.
pub struct Stopped {
    pub stdout: Vec<Line>,
    pub stderr: Vec<Line>,
}

impl Stopped {
    pub fn stderr_text(&self) -> String {
        self.stderr
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn keep_all(_: &str) -> bool {
    true
}

pub fn keep_none(_: &str) -> bool {
    false
}

impl Tracer {
    /// Starts `cmd` and waits (up to 60 s: bpftrace compiles its script first) until
    /// it prints a line containing `ready_marker` on stdout or stderr.
    pub fn start(
        mut cmd: Command,
        ready_marker: &'static str,
        keep_stdout: fn(&str) -> bool,
    ) -> anyhow::Result<Self> {
        let what = format!("{cmd:?}");
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let stdout = reader(stdout, keep_stdout, Some(ready_marker), tx.clone());
        let stderr = reader(stderr, keep_all, Some(ready_marker), tx);
        let mut tracer = Self {
            child,
            attach: Duration::ZERO,
            cpu_at_attach: Duration::ZERO,
            stdout: Some(stdout),
            stderr: Some(stderr),
            what,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(_) => {
                tracer.attach = started.elapsed();
                tracer.cpu_at_attach = tracer.cpu_time().unwrap_or_default();
                Ok(tracer)
            }
            Err(_) => {
                let out = tracer.stop()?;
                bail!(
                    "{} did not attach within 60 s: {}",
                    tracer.what,
                    out.stderr_text()
                )
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the tracer has used since it attached (its start-up, BPF
    /// verification included, is not counted).
    pub fn cpu_since_attach(&self) -> anyhow::Result<Duration> {
        Ok(self.cpu_time()?.saturating_sub(self.cpu_at_attach))
    }

    /// CPU time of the tracer's live threads, in nanoseconds from
    /// /proc/PID/task/*/schedstat (precise, where /proc/PID/stat counts 10 ms ticks).
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        let mut ns = 0u64;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid()))? {
            let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else {
                continue;
            };
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .context("malformed schedstat")?;
        }
        Ok(Duration::from_nanos(ns))
    }

    /// Resident set size in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .context("no VmRSS")
    }

    /// SIGINT (Ctrl-C), then waits up to 30 s before killing it.
    pub fn stop(&mut self) -> anyhow::Result<Stopped> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            bail!("{} did not stop within 30 s of SIGINT", self.what);
        }
        let join = |h: Option<JoinHandle<(Vec<Line>, u64)>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        let (stdout, _) = join(self.stdout.take());
        let (stderr, _) = join(self.stderr.take());
        Ok(Stopped { stdout, stderr })
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.stop();
        }
    }
}
