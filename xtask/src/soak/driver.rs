//! The soak's load: `pc_sim` processes started one after another, a few at a time, each
//! opening and closing many PeerConnections with many UDP sockets, some leaking on
//! purpose. Each instance runs as a hard link of pc_sim named after it
//! (`pc_sim-00042`), so the daemon's `process` context (exe, comm) says which instance
//! it saw; each has a pc_id range of its own, except those started under the pid of a
//! finished one, which take that one's range too (same pid, same pc_ids: only the
//! order of events tells them apart).
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;
use tracer_common::monotonic_ns;

use super::spawn::{self, PidRefused};

/// How much load.
#[derive(Clone, Debug, Serialize)]
pub struct Load {
    /// pc_sim processes running at once.
    pub parallel: usize,
    /// PeerConnections per process.
    pub pcs: u64,
    /// UDP sockets per PeerConnection.
    pub sockets: u64,
    /// Sockets/s each process makes at most.
    pub rate: u64,
}

/// How an instance got its pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PidOrigin {
    /// Whatever the kernel gave.
    Fresh,
    /// The pid of instance `of`, taken (clone3 set_tid) right after `of` was reaped.
    ReusedAtOnce { of: usize },
    /// The pid of instance `of`, taken seconds after it was reaped (after the
    /// daemon forgot it).
    ReusedLater { of: usize },
}

/// What an instance was told to do.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub index: usize,
    pub name: String,
    pub exe: PathBuf,
    pub first_pc: u64,
    pub pcs: u64,
    pub leak_announced: Vec<u64>,
    pub leak_unannounced: Vec<u64>,
    pub exit_without_cleanup: bool,
    pub linger_ms: u64,
    /// Before its first PeerConnection (a program of its own: see [`OWN_COPY_EVERY`]).
    pub start_delay_ms: u64,
}

impl Plan {
    pub fn leaking(&self) -> impl Iterator<Item = u64> + '_ {
        self.leak_announced
            .iter()
            .chain(&self.leak_unannounced)
            .copied()
    }

    pub fn has_pc(&self, pc_id: u64) -> bool {
        (self.first_pc..self.first_pc + self.pcs).contains(&pc_id)
    }
}

/// One PeerConnection as pc_sim reported it.
#[derive(Clone, Debug, Serialize)]
pub struct PcOut {
    pub sockets: u64,
    pub leaked_ports: Vec<u16>,
    pub close_end_ns: u64,
}

/// One pc_sim process, from start to reaping.
#[derive(Clone, Debug, Serialize)]
pub struct Instance {
    pub plan: Plan,
    pub pid: u32,
    pub origin: PidOrigin,
    /// CLOCK_MONOTONIC ns just before it was started and just after it was reaped.
    pub started_ns: u64,
    pub reaped_ns: u64,
    /// `starttime` of its /proc/PID/stat (clock ticks since boot), read while it was
    /// ours to reap: what the daemon's `process.start_ticks` must say.
    pub start_ticks: Option<u64>,
    #[serde(skip)]
    pub pcs: BTreeMap<u64, PcOut>,
    pub done: bool,
    /// Exit code; None when killed by a signal.
    pub exit: Option<i32>,
    pub problems: Vec<String>,
}

impl Instance {
    pub fn sockets(&self) -> u64 {
        self.pcs.values().map(|p| p.sockets).sum()
    }

    /// (pc_id, port) of every socket it leaked, as it said.
    pub fn leaked(&self) -> Vec<(u64, u16)> {
        let mut v: Vec<(u64, u16)> = self
            .pcs
            .iter()
            .flat_map(|(pc, o)| o.leaked_ports.iter().map(move |p| (*pc, *p)))
            .collect();
        v.sort_unstable();
        v
    }
}

/// What the driver did.
#[derive(Debug, Default, Serialize)]
pub struct Driven {
    #[serde(skip)]
    pub instances: Vec<Instance>,
    /// Fresh pids lower than the previous fresh pid: the pid space wrapped.
    pub pid_wraps: usize,
    pub reused_at_once: usize,
    pub reused_later: usize,
    /// Fresh pids that an earlier instance had (the wrap brought them back).
    pub reused_by_chance: usize,
    /// Reuses asked for but not had (the pid was taken meanwhile).
    pub reuse_refused: usize,
    /// Why forced reuse was not possible at all, if it was not.
    pub reuse_unsupported: Option<String>,
    /// Instances that ran a copy of their own of pc_sim (see [`OWN_COPY_EVERY`]).
    pub own_copies: usize,
    pub interrupted: bool,
}

/// One instance in this many runs a copy of pc_sim of its own.
pub const OWN_COPY_EVERY: usize = 20;
/// How long such an instance waits before its first PeerConnection.
const OWN_COPY_START_DELAY_MS: u64 = 2000;

/// Deterministic mixing of the instance number, for the leak plan.
fn pick(i: usize, salt: u64, n: u64) -> u64 {
    let mut x = (i as u64).wrapping_add(salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x % n.max(1)
}

/// The plan of instance `i`: about a third leak one announced socket (one in nine
/// two), a quarter one whose PeerConnection never announced its ports (tied by
/// thread span only). A quarter exit right after their last PeerConnection without
/// closing what they leaked (the kernel closes it: still a leak), so the
/// PeerConnections closed within the grace before the exit are judged at the exit;
/// the others linger longer than the grace before closing their leaked sockets (closed
/// within the grace, a kept socket would rightly be no leak).
fn plan(i: usize, load: &Load, bin_dir: &Path, first_pc: u64) -> Plan {
    let name = format!("pc_sim-{i:05}");
    let pcs = load.pcs.max(3);
    let mut leak_announced = Vec::new();
    let mut leak_unannounced = Vec::new();
    let mut taken = Vec::new();
    let choose = |salt: u64, taken: &mut Vec<u64>| {
        let mut pc = first_pc + pick(i, salt, pcs);
        while taken.contains(&pc) {
            pc = first_pc + (pc - first_pc + 1) % pcs;
        }
        taken.push(pc);
        pc
    };
    if i.is_multiple_of(3) {
        leak_announced.push(choose(1, &mut taken));
        if i.is_multiple_of(9) {
            leak_announced.push(choose(2, &mut taken));
        }
    }
    if i % 4 == 1 {
        leak_unannounced.push(choose(3, &mut taken));
    }
    Plan {
        index: i,
        exe: bin_dir.join(&name),
        name,
        first_pc,
        pcs,
        leak_announced,
        leak_unannounced,
        exit_without_cleanup: i % 4 == 3,
        linger_ms: if i % 4 == 3 { 0 } else { 400 },
        start_delay_ms: 0,
    }
}

fn args(p: &Plan, load: &Load) -> Vec<String> {
    let mut a: Vec<String> = [
        "--pcs",
        &p.pcs.to_string(),
        "--sockets",
        &load.sockets.to_string(),
        "--first-pc-id",
        &p.first_pc.to_string(),
        "--rate",
        &load.rate.to_string(),
        "--linger",
        &p.linger_ms.to_string(),
        "--start-delay",
        &p.start_delay_ms.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for pc in &p.leak_announced {
        a.extend(["--leak".to_owned(), pc.to_string()]);
    }
    for pc in &p.leak_unannounced {
        a.extend(["--leak-unannounced".to_owned(), pc.to_string()]);
    }
    if p.exit_without_cleanup {
        a.push("--exit-without-cleanup".to_owned());
    }
    a
}

/// Reads an instance's lines until it closes its stdout, then reaps it.
fn follow(mut inst: Instance, spawned: spawn::Spawned) -> Instance {
    for line in BufReader::new(spawned.stdout).lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                inst.problems.push(format!("reading its output: {e}"));
                break;
            }
        };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            inst.problems.push(format!("not JSON: {line}"));
            continue;
        };
        if v["done"] == true {
            inst.done = true;
        } else if let Some(pc) = v["pc_id"].as_u64() {
            let ports = |k: &str| -> Vec<u16> {
                v[k].as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| u16::try_from(p.as_u64()?).ok())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            inst.pcs.insert(
                pc,
                PcOut {
                    sockets: ports("ports").len() as u64,
                    leaked_ports: ports("leaked_ports"),
                    close_end_ns: v["close_end_mono_ns"].as_u64().unwrap_or(0),
                },
            );
        }
    }
    match spawn::wait(inst.pid) {
        Ok(code) => inst.exit = code,
        Err(e) => inst.problems.push(format!("{e:#}")),
    }
    inst.reaped_ns = monotonic_ns();
    inst
}

/// pc_id ranges: instance i gets [(i+1)·STRIDE, ...).
const PC_STRIDE: u64 = 1_000_000;
/// A process that takes longer than this is killed (and the soak fails).
const INSTANCE_TIMEOUT: Duration = Duration::from_secs(180);

/// Starts instances until `until` (or `stop`), `load.parallel` at a time, then waits
/// for the last ones. Every 10th instance (4, 14, ...) takes the pid of the instance
/// reaped just before it, and every 10th (9, 19, ...) the pid of one reaped 3 to 30 s
/// earlier.
pub fn drive(
    sim: &Path,
    bin_dir: &Path,
    load: &Load,
    until: Instant,
    stop: &AtomicBool,
    mut tick: impl FnMut(&[Instance], usize),
) -> anyhow::Result<Driven> {
    std::fs::create_dir_all(bin_dir)
        .with_context(|| format!("cannot create {}", bin_dir.display()))?;
    let (tx, rx) = mpsc::channel::<Instance>();
    let mut out = Driven::default();
    let mut running: HashMap<usize, (u32, Instant)> = HashMap::new();
    // Reaped instances, newest last: (index, pid, first pc_id, when reaped).
    let mut reaped: VecDeque<(usize, u32, u64, Instant)> = VecDeque::new();
    let mut seen_pids: HashMap<u32, usize> = HashMap::new();
    let mut last_fresh: Option<u32> = None;
    let mut next = 0usize;
    let mut allow_reuse = true;
    let mut finished: Vec<Instance> = Vec::new();
    let mut last_tick = Instant::now();
    let mut killed: std::collections::HashSet<usize> = Default::default();
    loop {
        let starting = Instant::now() < until && !stop.load(Ordering::Relaxed);
        if !starting && running.is_empty() {
            break;
        }
        if starting && running.len() < load.parallel {
            let i = next;
            next += 1;
            // Which pid to ask for, and then which pc_id range to use.
            let want = if !allow_reuse {
                None
            } else if i % 10 == 4 {
                reaped
                    .back()
                    .map(|&(of, pid, first, _)| (PidOrigin::ReusedAtOnce { of }, pid, first))
            } else if i % 10 == 9 {
                let now = Instant::now();
                reaped
                    .iter()
                    .find(|(_, _, _, at)| {
                        let age = now.duration_since(*at);
                        age >= Duration::from_secs(3) && age <= Duration::from_secs(30)
                    })
                    .map(|&(of, pid, first, _)| (PidOrigin::ReusedLater { of }, pid, first))
            } else {
                None
            };
            let fresh_first = (i as u64 + 1) * PC_STRIDE;
            let first_pc = want.map_or(fresh_first, |(_, _, first)| first);
            let mut p = plan(i, load, bin_dir, first_pc);
            let _ = std::fs::remove_file(&p.exe);
            // Most instances are hard links of one binary (one file for the daemon to
            // read); one in OWN_COPY_EVERY is a program of its own, deleted when it
            // ends, as a redeployed binary: the daemon must let its markers go.
            if i % OWN_COPY_EVERY == OWN_COPY_EVERY - 1 {
                std::fs::copy(sim, &p.exe).with_context(|| {
                    format!("cannot copy {} to {}", sim.display(), p.exe.display())
                })?;
                // Without its debug information, as production binaries ship (and
                // 1 MB to write rather than 70).
                let stripped = std::process::Command::new("strip")
                    .arg("--strip-debug")
                    .arg(&p.exe)
                    .status()
                    .context("cannot run strip (binutils)")?;
                anyhow::ensure!(stripped.success(), "strip {} failed", p.exe.display());
                out.own_copies += 1;
                // The daemon attaches a new program's markers a moment after its
                // exec, without stopping it: a PeerConnection that begins and ends
                // before that is not seen at all (README). A server takes longer than
                // that before its first call.
                p.start_delay_ms = OWN_COPY_START_DELAY_MS;
            } else {
                std::fs::hard_link(sim, &p.exe).with_context(|| {
                    format!("cannot link {} to {}", p.exe.display(), sim.display())
                })?;
            }
            let started_ns = monotonic_ns();
            let mut origin = PidOrigin::Fresh;
            let mut spawned = None;
            if let Some((o, pid, _)) = want {
                match spawn::spawn(&p.exe, &args(&p, load), Some(pid))? {
                    Ok(s) => {
                        origin = o;
                        spawned = Some(s);
                    }
                    Err(PidRefused::Taken) => out.reuse_refused += 1,
                    Err(PidRefused::Unsupported(e)) => {
                        let why = format!("clone3 with set_tid refused: {e}");
                        eprintln!("soak: no forced pid reuse: {why}");
                        out.reuse_unsupported = Some(why);
                        allow_reuse = false;
                    }
                }
                if spawned.is_none() {
                    // Its own pc_id range, as any fresh instance.
                    p = plan(i, load, bin_dir, fresh_first);
                }
            }
            let spawned = match spawned {
                Some(s) => s,
                None => match spawn::spawn(&p.exe, &args(&p, load), None)? {
                    Ok(s) => s,
                    Err(e) => anyhow::bail!("cannot start {}: {e:?}", p.exe.display()),
                },
            };
            let pid = spawned.pid;
            match origin {
                PidOrigin::Fresh => {
                    if last_fresh.is_some_and(|l| pid < l) {
                        out.pid_wraps += 1;
                    }
                    last_fresh = Some(pid);
                    if seen_pids.contains_key(&pid) {
                        out.reused_by_chance += 1;
                    }
                }
                PidOrigin::ReusedAtOnce { .. } => out.reused_at_once += 1,
                PidOrigin::ReusedLater { .. } => out.reused_later += 1,
            }
            seen_pids.insert(pid, i);
            // A pid handed on is not handed on again by a later reuse of the same
            // kind: take it out of the list.
            if let PidOrigin::ReusedLater { of } | PidOrigin::ReusedAtOnce { of } = origin {
                reaped.retain(|(j, _, _, _)| *j != of);
            }
            let inst = Instance {
                plan: p,
                pid,
                origin,
                started_ns,
                reaped_ns: 0,
                start_ticks: start_ticks(pid),
                pcs: BTreeMap::new(),
                done: false,
                exit: None,
                problems: Vec::new(),
            };
            running.insert(i, (pid, Instant::now()));
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(format!("soak-{i}"))
                .spawn(move || {
                    let _ = tx.send(follow(inst, spawned));
                })
                .context("cannot start a reader thread")?;
            continue;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(mut inst) => {
                running.remove(&inst.plan.index);
                if killed.contains(&inst.plan.index) {
                    inst.problems.push(format!(
                        "killed after {INSTANCE_TIMEOUT:?}: it did not finish"
                    ));
                }
                let _ = std::fs::remove_file(&inst.plan.exe);
                reaped.push_back((
                    inst.plan.index,
                    inst.pid,
                    inst.plan.first_pc,
                    Instant::now(),
                ));
                while reaped.len() > 64 {
                    reaped.pop_front();
                }
                finished.push(inst);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        for (i, (pid, since)) in &running {
            if since.elapsed() > INSTANCE_TIMEOUT && killed.insert(*i) {
                eprintln!(
                    "soak: instance {i} (pid {pid}) still running after {INSTANCE_TIMEOUT:?}: killing it"
                );
                // SAFETY: our own child, not reaped yet (its pid cannot be anyone
                // else's).
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(10) {
            last_tick = Instant::now();
            tick(&finished, running.len());
        }
    }
    out.interrupted = stop.load(Ordering::Relaxed);
    finished.sort_by_key(|i| i.plan.index);
    out.instances = finished;
    Ok(out)
}

/// `starttime` of /proc/PID/stat: the 20th field after the parenthesised name.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}
