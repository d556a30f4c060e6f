//! What the workload binaries share: numeric flags and the `--wait` handshake that
//! lets a tracer attach to a known pid before the work starts.
use std::{
    io::{BufRead as _, Write as _},
    time::{Duration, Instant},
};

/// The value of `name N` in `args`, `default` when absent; exits 2 when not a number.
pub fn number_arg(args: &[String], name: &str, default: u64) -> u64 {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                eprintln!("{name} needs a number");
                std::process::exit(2)
            }),
        None => default,
    }
}

/// Prints one JSON line and flushes it (the reader is usually a pipe).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints `{"ready":true,"pid":P,...}` and blocks until a line (or EOF) on stdin.
pub fn ready_then_wait(extra: &str) {
    say(&format!(
        "{{\"ready\":true,\"pid\":{}{extra}}}",
        std::process::id()
    ));
    wait_line();
}

/// Blocks until a line (or EOF) on stdin.
pub fn wait_line() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

/// With `--wait` in `args`: [`ready_then_wait`].
pub fn wait_if_asked(args: &[String]) {
    if args.iter().any(|a| a == "--wait") {
        ready_then_wait("");
    }
}

pub use tracer_common::monotonic_ns;

/// Spaces out work to at most `per_second` items, sleeping only when more than a
/// millisecond ahead of schedule (shorter sleeps cost more than the work).
pub struct Pacer {
    start: Instant,
    per_second: Option<f64>,
}

impl Pacer {
    /// `per_second` None or not positive: no pacing.
    pub fn new(per_second: Option<f64>) -> Self {
        Self {
            start: Instant::now(),
            per_second: per_second.filter(|r| *r > 0.0),
        }
    }

    /// Before item `i` (counted from 0).
    pub fn wait(&self, i: u64) {
        if let Some(rate) = self.per_second {
            let due = Duration::from_secs_f64(i as f64 / rate);
            let now = self.start.elapsed();
            if due > now + Duration::from_millis(1) {
                std::thread::sleep(due - now);
            }
        }
    }
}

/// CPU time (user + system) this process has used, in seconds. BPF programs run in
/// the context of the task that triggers them, so a tracer's kernel-side cost shows
/// up here, in the traced program's system time.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
