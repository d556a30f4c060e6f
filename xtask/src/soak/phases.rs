//! The soak's phases around the load: a first process that waits until the daemon
//! found it, a daemon killed with SIGKILL, and kernel.pid_max lowered on request.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::json;

use super::{daemon, daemon::Daemon, spawn};

/// kernel.pid_max, lowered for the soak and put back when dropped.
pub struct PidMax {
    original: String,
}

pub const PID_MAX: &str = "/proc/sys/kernel/pid_max";

impl PidMax {
    pub fn lower(to: u32) -> anyhow::Result<Self> {
        let original = std::fs::read_to_string(PID_MAX)
            .with_context(|| format!("cannot read {PID_MAX}"))?
            .trim()
            .to_owned();
        std::fs::write(PID_MAX, to.to_string())
            .with_context(|| format!("cannot set {PID_MAX} to {to}"))?;
        println!(
            "soak: kernel.pid_max {original} -> {to} while the soak runs (if this run is killed, restore it: echo {original} > {PID_MAX})"
        );
        Ok(Self { original })
    }
}

impl Drop for PidMax {
    fn drop(&mut self) {
        match std::fs::write(PID_MAX, &self.original) {
            Ok(()) => println!("soak: kernel.pid_max restored to {}", self.original),
            Err(e) => eprintln!(
                "soak: CANNOT restore kernel.pid_max to {} ({e}): echo {} > {PID_MAX}",
                self.original, self.original
            ),
        }
    }
}

/// Waits until the daemon's findings say it found `pid` (markers attached).
pub fn wait_found(findings: &Path, pid: u32, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    let needle = format!("\"host_pid\":{pid},");
    loop {
        let text = std::fs::read_to_string(findings).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains("\"state\":\"found\"") && l.contains(&needle))
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One pc_sim that waits until the daemon found it: the daemon attaches a program's
/// markers when it first sees a process running it, and never stops a process, so
/// the first process of a program runs unobserved for as long as that takes (its
/// first PeerConnections go unseen). Every later process of it is covered from its
/// first instruction.
pub fn prime(sim: &Path, findings: &Path) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(sim)
        .args(["--wait", "--pcs", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", sim.display()))?;
    let mut stdout = std::io::BufReader::new(child.stdout.take().context("no stdout pipe")?);
    let mut ready = String::new();
    stdout
        .read_line(&mut ready)
        .context("cannot read pc_sim's ready line")?;
    let pid = serde_json::from_str::<serde_json::Value>(&ready)
        .ok()
        .and_then(|v| v["pid"].as_u64())
        .and_then(|p| u32::try_from(p).ok())
        .with_context(|| format!("pc_sim said no pid: {ready}"))?;
    let found = wait_found(findings, pid, Duration::from_secs(20));
    // EOF on its stdin: it goes on, and ends.
    drop(child.stdin.take());
    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    let _ = child.wait();
    anyhow::ensure!(
        found,
        "the daemon did not find pc_sim (pid {pid}) within 20 s"
    );
    Ok(())
}

/// The SIGKILL phase: a daemon that has attached everything (markers included, for a
/// marked process it found) is killed; what it held must go with its fds.
pub fn kill_phase(sockscope: &Path, sim: &Path, dir: &Path) -> anyhow::Result<serde_json::Value> {
    let output = dir.join("kill-findings.jsonl");
    let _ = std::fs::remove_file(&output);
    let mut d = Daemon::start(sockscope, &output, &dir.join("kill-daemon.stderr"))?;
    let s = spawn::spawn(
        sim,
        &[
            "--pcs".into(),
            "3".into(),
            "--leak".into(),
            "2".into(),
            "--linger".into(),
            "3000".into(),
        ],
        None,
    )?
    .map_err(|e| anyhow::anyhow!("cannot start pc_sim: {e:?}"))?;
    let sim_pid = s.pid;
    // Drained on a thread, so pc_sim never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let mut stdout = s.stdout;
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
    });
    let found = wait_found(&output, sim_pid, Duration::from_secs(10));
    let held = d.bpf_objects()?;
    let daemon_pid = d.pid;
    let status = d.kill();
    let left = held.wait_gone(Duration::from_secs(5));
    let probes = daemon::tracefs_probes_of(daemon_pid);
    let _ = reader.join();
    let sim_exit = spawn::wait(sim_pid)?;
    Ok(json!({
        "killed": status.map(|s| s.to_string()),
        "marked_process_found_before_kill": found,
        "held": held,
        "left_after_5s": left,
        "tracefs_probes_left": probes,
        "pc_sim_exit": sim_exit,
    }))
}
