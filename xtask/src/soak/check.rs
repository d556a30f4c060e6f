//! The daemon's findings against what the driver did: every PeerConnection of every
//! instance judged once, clean or a leak as planned; the leaked (pid, pc_id, port) set
//! exactly the injected one; each finding given the right instance's `process`
//! context; each instance found once and exited once. Records of processes that are
//! not the soak's (other marked programs on the host) are left out: a record is the
//! soak's when its pid and pc_id name an instance (pc_id ranges are the soak's own).
use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead as _, BufReader},
    path::Path,
};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use super::driver::Instance;

#[derive(Debug, Default, Serialize)]
pub struct Checked {
    /// Every line of the findings file.
    pub records: u64,
    /// Lines about other processes (not the soak's).
    pub others: u64,
    pub verdicts: u64,
    pub clean: u64,
    pub leak_verdicts: u64,
    pub incomplete: u64,
    pub leaks_injected: u64,
    pub leaks_found: u64,
    pub leaks_missing: u64,
    pub leaks_extra: u64,
    pub late: u64,
    pub possible_leaks: u64,
    pub unclosed: u64,
    pub processes_found: u64,
    pub processes_exited: u64,
    /// Findings whose `process` context names another instance (or none).
    pub context_mismatches: u64,
    /// Findings of an instance that had exited before the daemon got to its records:
    /// their context says so (and gives its pid and start time) instead of naming it.
    pub contexts_exited_before_found: u64,
    /// Leaks whose creating stack is empty.
    pub leaks_without_stack: u64,
    /// How far a leak's `ended_ns` was from pc_sim's own clock read after the marker.
    pub max_end_skew_ms: f64,
    pub failures: Vec<String>,
}

/// What the findings said about one instance.
#[derive(Debug, Default)]
struct Seen {
    found: Vec<u64>,
    exited: Vec<u64>,
    verdicts: HashMap<u64, Vec<Value>>,
    leaks: Vec<(u64, u16)>,
    late: Vec<(u64, u16, bool)>,
    possible: Vec<u64>,
    unclosed: Vec<u64>,
    /// Line numbers of its findings.
    first: Option<u64>,
    last: Option<u64>,
}

impl Seen {
    fn at(&mut self, line: u64) {
        self.first.get_or_insert(line);
        self.last = Some(line);
    }
}

fn ns(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

pub fn check(findings: &Path, instances: &[Instance]) -> anyhow::Result<Checked> {
    let file = std::fs::File::open(findings)
        .with_context(|| format!("cannot open {}", findings.display()))?;
    let mut c = Checked::default();
    let mut seen: Vec<Seen> = instances.iter().map(|_| Seen::default()).collect();
    // Instances by pid, in start order (which is also the order of their lives).
    let mut by_pid: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, inst) in instances.iter().enumerate() {
        by_pid.entry(inst.pid).or_default().push(i);
    }
    let by_exe: HashMap<String, usize> = instances
        .iter()
        .enumerate()
        .map(|(i, inst)| (inst.plan.exe.display().to_string(), i))
        .collect();
    // Records of one kind and key seen so far: the k-th goes to the k-th instance
    // that has that key.
    let mut occurrences: HashMap<(&'static str, u32, u64), usize> = HashMap::new();
    let mut fail = |c: &mut Checked, msg: String| {
        if c.failures.len() < 1000 {
            c.failures.push(msg);
        }
    };

    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", findings.display()))?;
        let n = n as u64 + 1;
        c.records += 1;
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{n} is not JSON: {line}", findings.display()))?;
        let event = v["event"].as_str().unwrap_or("");
        let exe = v["process"]["exe"].as_str().map(str::to_owned);
        let gone = v["process"]["exited_before_found"].as_bool() == Some(true);
        let start_ticks = v["process"]["start_ticks"].as_u64();
        // A process gone before the daemon read /proc is named by pid and start time.
        let by_start = |pid: Option<u64>| {
            instances.iter().position(|inst| {
                Some(u64::from(inst.pid)) == pid
                    && inst.start_ticks.is_some()
                    && inst.start_ticks == start_ticks
            })
        };
        if event == "process" {
            let named = match exe.as_deref() {
                Some(e) => by_exe.get(e).copied(),
                None if gone => by_start(v["process"]["host_pid"].as_u64()),
                None => None,
            };
            let Some(i) = named else {
                c.others += 1;
                continue;
            };
            let host_pid = v["process"]["host_pid"].as_u64();
            if host_pid != Some(u64::from(instances[i].pid)) {
                fail(
                    &mut c,
                    format!(
                        "line {n}: `process` record of {} says pid {host_pid:?}, it had pid {}",
                        instances[i].plan.name, instances[i].pid
                    ),
                );
            }
            match v["state"].as_str() {
                Some("found") => seen[i].found.push(n),
                Some("exited") => seen[i].exited.push(n),
                other => fail(&mut c, format!("line {n}: process state {other:?}")),
            }
            continue;
        }
        let (Some(pid), Some(pc_id)) = (
            v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
            v["pc_id"].as_u64(),
        ) else {
            c.others += 1;
            continue;
        };
        let candidates: Vec<usize> = by_pid
            .get(&pid)
            .map(|is| {
                is.iter()
                    .copied()
                    .filter(|&i| instances[i].plan.has_pc(pc_id))
                    .collect()
            })
            .unwrap_or_default();
        if candidates.is_empty() {
            c.others += 1;
            continue;
        }
        // Which instance: by time where the record has one, else by order.
        let within = |t: u64| {
            candidates
                .iter()
                .copied()
                .find(|&i| instances[i].started_ns <= t && t <= instances[i].reaped_ns)
        };
        let kind: &'static str = match event {
            "verdict" => "verdict",
            "leak" => "leak",
            "late" => "late",
            "possible_leak" => "possible_leak",
            "unclosed" => "unclosed",
            _ => "other",
        };
        let k = occurrences.entry((kind, pid, pc_id)).or_default();
        let by_order = candidates.get(*k).copied();
        *k += 1;
        let owner = match event {
            "leak" => within(ns(&v["ended_ns"])),
            "late" => within(ns(&v["released_ns"])),
            _ => by_order,
        };
        let Some(i) = owner else {
            fail(
                &mut c,
                format!(
                    "line {n}: {event} of pid {pid} pc_id {pc_id} fits no instance's life (candidates: {})",
                    candidates
                        .iter()
                        .map(|&i| instances[i].plan.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            continue;
        };
        let inst = &instances[i];
        seen[i].at(n);
        if gone && by_start(Some(u64::from(pid))) == Some(i) {
            c.contexts_exited_before_found += 1;
        } else if exe.as_deref() != Some(&inst.plan.exe.display().to_string()) {
            c.context_mismatches += 1;
            fail(
                &mut c,
                format!(
                    "line {n}: {event} of {} (pid {pid}, pc_id {pc_id}) carries the context of {}",
                    inst.plan.name,
                    exe.as_deref().unwrap_or("no process")
                ),
            );
        }
        match event {
            "verdict" => {
                seen[i].verdicts.entry(pc_id).or_default().push(v.clone());
            }
            "leak" => {
                let port = v["local_port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(0);
                seen[i].leaks.push((pc_id, port));
                if v["stack"].as_array().is_none_or(Vec::is_empty) {
                    c.leaks_without_stack += 1;
                }
                let ended = ns(&v["ended_ns"]);
                if let Some(pc) = inst.pcs.get(&pc_id) {
                    let skew = (pc.close_end_ns as f64 - ended as f64).abs() / 1e6;
                    c.max_end_skew_ms = c.max_end_skew_ms.max(skew);
                }
            }
            "late" => {
                let port = v["local_port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(0);
                seen[i]
                    .late
                    .push((pc_id, port, v["by_exit"].as_bool().unwrap_or(false)));
            }
            "possible_leak" => seen[i].possible.push(pc_id),
            "unclosed" => seen[i].unclosed.push(pc_id),
            _ => fail(&mut c, format!("line {n}: unknown record: {line}")),
        }
    }

    for (inst, s) in instances.iter().zip(&seen) {
        compare(&mut c, inst, s, &mut fail);
    }
    Ok(c)
}

fn compare(
    c: &mut Checked,
    inst: &Instance,
    s: &Seen,
    fail: &mut impl FnMut(&mut Checked, String),
) {
    let name = format!("{} (pid {})", inst.plan.name, inst.pid);
    c.processes_found += s.found.len() as u64;
    c.processes_exited += s.exited.len() as u64;
    if !inst.done || inst.exit != Some(0) || !inst.problems.is_empty() {
        fail(
            c,
            format!(
                "{name}: pc_sim did not finish cleanly (done: {}, exit: {:?}) {}",
                inst.done,
                inst.exit,
                inst.problems.join("; ")
            ),
        );
    }
    if s.found.len() != 1 || s.exited.len() != 1 {
        fail(
            c,
            format!(
                "{name}: `process` records found at lines {:?}, exited at lines {:?} (one each expected)",
                s.found, s.exited
            ),
        );
    }
    if let (Some(f), Some(e)) = (s.found.first(), s.exited.last()) {
        if f > e {
            fail(
                c,
                format!("{name}: exited (line {e}) before found (line {f})"),
            );
        }
        if s.first.is_some_and(|l| l < *f) || s.last.is_some_and(|l| l > *e) {
            fail(
                c,
                format!(
                    "{name}: findings at lines {:?}..{:?} outside its found..exited lines {f}..{e}",
                    s.first, s.last
                ),
            );
        }
    }

    // One verdict per PeerConnection: a leak where one was injected, clean elsewhere,
    // with every socket it made.
    let leaking: Vec<u64> = inst.plan.leaking().collect();
    let mut bad_verdicts = Vec::new();
    for pc_id in inst.plan.first_pc..inst.plan.first_pc + inst.plan.pcs {
        let vs = s
            .verdicts
            .get(&pc_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let Some(out) = inst.pcs.get(&pc_id) else {
            bad_verdicts.push(format!("pc {pc_id}: pc_sim never reported it"));
            continue;
        };
        let want = if leaking.contains(&pc_id) {
            "leak"
        } else {
            "clean"
        };
        match vs {
            [v] => {
                let outcome = v["outcome"].as_str().unwrap_or("");
                match outcome {
                    "clean" => c.clean += 1,
                    "leak" => c.leak_verdicts += 1,
                    _ => c.incomplete += 1,
                }
                c.verdicts += 1;
                let sockets = v["sockets"].as_u64().unwrap_or(0);
                if outcome != want || sockets != out.sockets {
                    bad_verdicts.push(format!(
                        "pc {pc_id}: {outcome} with {sockets} sockets{} (expected {want} with {})",
                        v["reason"]
                            .as_str()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default(),
                        out.sockets
                    ));
                }
            }
            [] => bad_verdicts.push(format!("pc {pc_id}: no verdict")),
            many => {
                c.verdicts += many.len() as u64;
                bad_verdicts.push(format!("pc {pc_id}: {} verdicts", many.len()));
            }
        }
    }
    if !bad_verdicts.is_empty() {
        let n = bad_verdicts.len();
        bad_verdicts.truncate(5);
        fail(
            c,
            format!(
                "{name}: {n} PeerConnections judged wrong: {}{}",
                bad_verdicts.join("; "),
                if n > 5 { "; ..." } else { "" }
            ),
        );
    }

    // The leaks: exactly those injected.
    let injected = inst.leaked();
    let mut found = s.leaks.clone();
    found.sort_unstable();
    c.leaks_injected += injected.len() as u64;
    c.leaks_found += found.len() as u64;
    let missing: Vec<_> = injected.iter().filter(|l| !found.contains(l)).collect();
    let extra: Vec<_> = found.iter().filter(|l| !injected.contains(l)).collect();
    c.leaks_missing += missing.len() as u64;
    c.leaks_extra += extra.len() as u64;
    if !missing.is_empty() || !extra.is_empty() || found.len() != injected.len() {
        fail(
            c,
            format!(
                "{name}: leaks (pc_id, port) missing {missing:?}, not injected {extra:?} (injected {injected:?}, found {found:?})"
            ),
        );
    }
    let planned = leaking.len();
    if injected.len() != planned {
        fail(
            c,
            format!("{name}: pc_sim leaked {injected:?}, {planned} leaks were planned"),
        );
    }
    // Each leaked socket released later, by the exit when pc_sim left it to the exit.
    c.late += s.late.len() as u64;
    let mut late: Vec<(u64, u16)> = s.late.iter().map(|(pc, p, _)| (*pc, *p)).collect();
    late.sort_unstable();
    if late != injected {
        fail(
            c,
            format!("{name}: late releases {late:?}, expected one per leak {injected:?}"),
        );
    }
    if let Some((pc, port, by_exit)) = s
        .late
        .iter()
        .find(|(_, _, by_exit)| *by_exit != inst.plan.exit_without_cleanup)
    {
        fail(
            c,
            format!(
                "{name}: late release of pc {pc} port {port} by_exit={by_exit}, but pc_sim {} it",
                if inst.plan.exit_without_cleanup {
                    "left it to its exit to close"
                } else {
                    "closed"
                }
            ),
        );
    }
    c.possible_leaks += s.possible.len() as u64;
    c.unclosed += s.unclosed.len() as u64;
    if !s.possible.is_empty() || !s.unclosed.is_empty() {
        fail(
            c,
            format!(
                "{name}: possible leaks for pcs {:?}, unclosed pcs {:?} (none expected: it was seen whole)",
                s.possible, s.unclosed
            ),
        );
    }
}

/// Failures grouped by what follows the instance name, for a short summary.
pub fn failure_kinds(failures: &[String]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for f in failures {
        let kind = f
            .split_once(": ")
            .map_or(f.as_str(), |(_, rest)| rest)
            .split([' ', '('])
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}
