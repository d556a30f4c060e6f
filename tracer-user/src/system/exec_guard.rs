//! The guard that keeps `check` from leaving a process stopped. `check` stops every
//! process of its cgroup that executes a program (the kernel sends SIGSTOP) until it
//! has attached that program's markers, then continues it. If `check` itself is killed
//! (SIGKILL) at that moment, nothing would ever continue the process (the same holds
//! for a process stopped at its first socket for its maps, see `unwind`). So `check` starts
//! this guard, a separate process holding the read end of a pipe whose write end only
//! `check` holds: when `check` ends normally it says `done` first; when the pipe closes
//! without it, `check` died, and the guard continues every process of the cgroup, then
//! removes the cgroup once they are gone.
use std::{
    io::{BufRead as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
};

/// The hidden subcommand that runs the guard.
pub const SUBCOMMAND: &str = "__exec-guard";

/// `check`'s side: tell the guard we end normally when dropped.
pub struct ExecGuard {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ExecGuard {
    /// Starts the guard for `cgroup` (from this very executable).
    pub fn start(cgroup: &Path) -> std::io::Result<Self> {
        let mut child = Command::new("/proc/self/exe")
            .arg(SUBCOMMAND)
            .arg(cgroup)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = writeln!(s, "done");
        }
        let _ = self.child.wait();
    }
}

/// The guard: waits for `check` to end; if it ended without saying so, continues every
/// process left in `cgroup` (a SIGCONT to a running process does nothing).
pub fn run(cgroup: &Path) -> std::io::Result<()> {
    // Ctrl-C reaches the whole foreground process group; the guard must outlive a
    // `check` that is being stopped, so it ignores what stops `check`.
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sets this process's disposition of a signal to "ignore".
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let mut last = String::new();
    for line in std::io::stdin().lock().lines() {
        last = line?;
    }
    if last == "done" {
        return Ok(());
    }
    // check's BPF programs go as the kernel closes its files, which may be after the
    // pipe: a program they stop in between (at exec, or at its first socket for a
    // stack sample) is continued on the next round.
    let started = std::time::Instant::now();
    let mut continued = std::collections::BTreeSet::new();
    while started.elapsed() < std::time::Duration::from_secs(5) {
        for pid in pids_in(cgroup) {
            // SAFETY: signals a process of check's own cgroup.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            continued.insert(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    crate::say!(
        "sockscope: check ended abruptly; continued the {} process(es) of {}",
        continued.len(),
        cgroup.display()
    );
    // Then remove the cgroup, as `check` would have, once its processes are gone.
    loop {
        match std::fs::remove_dir(cgroup) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            _ => return Ok(()),
        }
    }
}

fn pids_in(cgroup: &Path) -> Vec<i32> {
    let procs: PathBuf = cgroup.join("cgroup.procs");
    std::fs::read_to_string(procs)
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}
