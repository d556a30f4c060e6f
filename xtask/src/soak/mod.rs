//! `cargo xtask soak [--duration 10m]`: `sockscope daemon` runs while pc_sim processes
//! start and exit continuously (a few at a time, each with hundreds of PeerConnections
//! and thousands of sockets, some leaking on purpose, some under the pid of one that
//! just exited), then the soak asserts: resident memory flat after the warm-up (least
//! squares slope), every injected leak found and nothing else (each with the right
//! process instance), no events lost, and nothing the daemon held in the kernel left
//! after SIGTERM, nor after SIGKILL. Prints a table, writes target/soak/results.json.
mod check;
mod daemon;
mod driver;
mod memory;
mod phases;
mod spawn;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::json;
use tracer_common::monotonic_ns;

use crate::{setup, util};
use daemon::Daemon;
pub use driver::Load;

pub struct Options {
    pub duration: Duration,
    pub load: Load,
    /// Soak the release build (default: the debug build `cargo xtask test` makes).
    pub release: bool,
    /// Lower kernel.pid_max to this while the soak runs (restored after).
    pub pid_max: Option<u32>,
    pub output: Option<PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / (1024.0 * 1024.0))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::run()?;
    util::require_root("cargo xtask soak")?;
    let profile = if opts.release { "release" } else { "debug" };
    println!("xtask: building sockscope and the workloads ({profile})");
    // The same builds as `cargo xtask test` (debug) and `cargo xtask bench`
    // (release), so the soak reuses their artifacts.
    if opts.release {
        util::build_release(&["tracer-user", "workloads", "webrtc-proxy"])?;
    } else {
        util::cargo(&["build", "--workspace", "--bins"])?;
    }
    let target = root().join("target").join(profile);
    let sockscope = target.join("sockscope");
    let sim = target.join("pc_sim");
    let dir = root().join("target/soak");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bin_dir = dir.join("bin");
    let _ = std::fs::remove_dir_all(&bin_dir);
    let findings = dir.join("findings.jsonl");
    let _ = std::fs::remove_file(&findings);
    let results_path = opts
        .output
        .clone()
        .unwrap_or_else(|| dir.join("results.json"));

    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let pid_max_before = std::fs::read_to_string(phases::PID_MAX)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let pid_max_guard = opts.pid_max.map(phases::PidMax::lower).transpose()?;
    let pid_max_during = std::fs::read_to_string(phases::PID_MAX)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let programs_before = daemon::sockscope_programs();

    println!(
        "soak: {} of load, {} pc_sim at a time x {} PeerConnections x {} sockets, {} sockets/s each; daemon {} build, grace 300ms; pid_max {pid_max_during}",
        humantime::format_duration(opts.duration),
        opts.load.parallel,
        opts.load.pcs,
        opts.load.sockets,
        opts.load.rate,
        profile,
    );
    let mut d = Daemon::start(&sockscope, &findings, &dir.join("daemon.stderr"))?;
    let mut held = d.bpf_objects()?;
    println!(
        "soak: daemon pid {} holds {} BPF programs and {} links; metrics on http://{}/metrics",
        d.pid,
        held.programs.len(),
        held.links.len(),
        d.metrics
    );

    phases::prime(&sim, &findings)?;
    let stacks_start = d.bpf_objects()?.stack_map_fill();

    // Samples every few seconds, on a thread, while the driver runs.
    let interval = (opts.duration / 120).clamp(Duration::from_secs(1), Duration::from_secs(5));
    let t0 = Instant::now();
    let samples: Arc<Mutex<Vec<memory::Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let sampling = AtomicBool::new(true);
    let first = memory::sample(&d, t0)?;
    let load_started_ns = monotonic_ns();
    let driven = std::thread::scope(|scope| -> anyhow::Result<driver::Driven> {
        let (samples, sampling, d) = (&samples, &sampling, &d);
        scope.spawn(move || memory::sample_while(d, t0, interval, sampling, samples));
        let until = Instant::now() + opts.duration;
        let r = driver::drive(&sim, &bin_dir, &opts.load, until, &STOP, |done, running| {
            let sockets: u64 = done.iter().map(driver::Instance::sockets).sum();
            let last = samples.lock().ok().and_then(|v| v.last().cloned());
            println!(
                "soak: {:>4.0} s  {} processes done, {running} running, {sockets} sockets; daemon RSS {}, {} events, {} lost",
                t0.elapsed().as_secs_f64(),
                done.len(),
                last.as_ref()
                    .map_or("?".into(), |s| mib(s.rss_bytes as f64)),
                last.as_ref().map_or(0.0, |s| s.events),
                last.as_ref().map_or(0.0, |s| s.lost),
            );
        });
        sampling.store(false, Ordering::Relaxed);
        r
    })?;
    let load_s = t0.elapsed().as_secs_f64();
    let load_ended_ns = monotonic_ns();
    let samples = samples.lock().map(|v| v.clone()).unwrap_or_default();

    // Exited processes are forgotten 2 s after their exit; the page is rebuilt every
    // second. What the daemon holds then is what other marked processes hold.
    let mut rest = None;
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(1000));
        let m = d.scrape()?;
        let ours_listed = m
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == "sockscope_udp_sockets_open"
                    && l.get("comm").is_some_and(|c| c.starts_with("pc_sim-"))
            })
            .count();
        let others_open = m.total("sockscope_udp_sockets_open") + 0.0;
        let settled = ours_listed == 0
            && m.total("sockscope_tracked_sockets") <= others_open
            && settle.elapsed() >= Duration::from_secs(3);
        rest = Some((m, ours_listed, others_open, settled));
        if settled {
            break;
        }
    }
    let (end_metrics, ours_listed, others_open, settled) =
        rest.context("no scrape after the load")?;
    let rss_end = d.rss_bytes()?;
    let cpu_s = d.cpu_seconds()?;
    let daemon_life_s = d.started.elapsed().as_secs_f64();
    // What it holds now: also the links of the markers it attached since the start.
    let at_end = d.bpf_objects()?;
    let stack_fill = at_end.stack_map_fill();
    held.programs.extend(at_end.programs);
    held.links.extend(at_end.links);

    let (status, stop_time) = d.terminate(Duration::from_secs(30))?;
    let left_after_term = held.wait_gone(Duration::from_secs(5));
    let probes_after_term = daemon::tracefs_probes_of(d.pid);
    let stderr = d.stderr_lines();
    drop(d);
    let stopped_line = stderr
        .iter()
        .rev()
        .find(|l| l.contains("daemon stopped"))
        .cloned()
        .unwrap_or_default();
    // "sockscope: daemon stopped: N events, L lost, J PeerConnections judged"
    let numbers: Vec<u64> = stopped_line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (events, lost) = (numbers.first().copied(), numbers.get(1).copied());

    println!(
        "soak: checking {} against what the driver did",
        findings.display()
    );
    let checked = check::check(&findings, &driven.instances)?;

    println!("soak: SIGKILL phase");
    let kill = phases::kill_phase(&sockscope, &sim, &dir)?;
    drop(pid_max_guard);
    let programs_after = daemon::sockscope_programs();

    // Memory: least squares over the samples after the warm-up.
    let mem = memory::fit(&samples, load_s);
    let (per_min, growth, allowed, window_min) = (
        mem.slope_bytes_per_min,
        mem.growth_bytes,
        mem.allowed_growth_bytes,
        mem.window_min,
    );
    let (rss_at_warm, others_range) = (mem.after_warmup_bytes, mem.other_sockets);

    let instances = &driven.instances;
    let processes = instances.len();
    let pcs: u64 = instances.iter().map(|i| i.pcs.len() as u64).sum();
    let sockets: u64 = instances.iter().map(driver::Instance::sockets).sum();
    let events_total = events.unwrap_or(end_metrics.total("sockscope_events_total") as u64);
    let lost_total = lost.unwrap_or(end_metrics.total("sockscope_events_lost_total") as u64);
    let untracked = end_metrics.total("sockscope_sockets_untracked_total");
    let tracked_sockets = end_metrics.total("sockscope_tracked_sockets");
    let tracked_pcs = end_metrics.total("sockscope_tracked_peer_connections");
    let other_marked = end_metrics.total("sockscope_marked_processes");
    let markers_attached = end_metrics.total("sockscope_markers_attached");
    let markers_released = end_metrics.total("sockscope_markers_released_total");

    // The kernel never deletes a stack id; the daemon deletes those of processes that
    // exited. What they held must be gone: a map that fills gives later sockets no
    // stack.
    let stack_allowed = 32 + processes as u64 / 8;
    let mut failures: Vec<String> = Vec::new();
    if let (Some((a, _)), Some((b, m))) = (stacks_start, stack_fill)
        && b > a + stack_allowed
    {
        failures.push(format!(
            "the BPF stack map grew from {a} to {b} entries (of {m}) though the soak's processes all exited"
        ));
    }
    // A new stack whose hash bucket a live one holds gets no id (the map is created
    // without BPF_F_REUSE_STACKID): about (entries in use / 16384) of the processes lose
    // their creating stack, a few per thousand here. More than 1% of the leaks is a map
    // that fills.
    if checked.leaks_without_stack * 100 > checked.leaks_found.max(1) {
        failures.push(format!(
            "{} of {} leaks without their creating stack (more than 1%)",
            checked.leaks_without_stack, checked.leaks_found
        ));
    }
    // Some instances run a copy of pc_sim of their own, deleted when they end: the
    // markers of those that ended over a minute ago must have been let go (the
    // daemon's --forget-programs-after), or a long-running daemon fills its
    // marker slots and keeps deleted files.
    if load_s >= 120.0 && driven.own_copies >= 2 && markers_released == 0.0 {
        failures.push(format!(
            "no marker was released though {} programs of their own ran and ended ({markers_attached} markers still attached)",
            driven.own_copies
        ));
    }
    if driven.interrupted {
        failures.push("interrupted (SIGINT/SIGTERM): the soak did not run its course".into());
    }
    if processes == 0 {
        failures.push("no pc_sim process ran".into());
    }
    failures.extend(checked.failures.iter().cloned());
    if lost_total > 0 {
        failures.push(format!("{lost_total} events lost"));
    }
    if untracked > 0.0 {
        failures.push(format!(
            "{untracked} sockets not tracked (the --max-sockets cap)"
        ));
    }
    if !status.success() {
        failures.push(format!(
            "the daemon exited with {status} on SIGTERM (0 expected)"
        ));
    }
    if events.is_none() {
        failures.push("the daemon did not print its `daemon stopped` line".into());
    }
    match (per_min, growth) {
        (Some(_), Some(g)) if g > allowed => failures.push(format!(
            "resident memory grows: {} over the {window_min:.1} min after the warm-up (slope {}/min), more than {} allowed{}",
            mib(g),
            mib(per_min.unwrap_or(0.0)),
            mib(allowed),
            if others_range.1 > 0.0 {
                format!(
                    " (other marked processes on this host held {:.0} to {:.0} sockets meanwhile: the daemon holds them too)",
                    others_range.0, others_range.1
                )
            } else {
                String::new()
            }
        )),
        (None, _) | (_, None) => failures.push(format!(
            "too few memory samples after the warm-up ({}) for a slope",
            mem.samples
        )),
        _ => {}
    }
    if !settled {
        failures.push(format!(
            "after the load the daemon still holds {tracked_sockets} sockets ({others_open} are other marked processes'), {ours_listed} soak processes listed"
        ));
    }
    if !left_after_term.is_empty() || !probes_after_term.is_empty() {
        failures.push(format!(
            "after SIGTERM, still loaded 5 s later: programs {:?}, links {:?}, tracefs probes {probes_after_term:?}",
            left_after_term.programs, left_after_term.links
        ));
    }
    let kill_left = &kill["left_after_5s"];
    let kill_clean = kill_left["programs"].as_array().is_some_and(Vec::is_empty)
        && kill_left["links"].as_array().is_some_and(Vec::is_empty)
        && kill["tracefs_probes_left"]
            .as_array()
            .is_some_and(Vec::is_empty);
    if !kill_clean {
        failures.push(format!(
            "after SIGKILL, still loaded 5 s later: {kill_left}, tracefs probes {}",
            kill["tracefs_probes_left"]
        ));
    }
    if kill["marked_process_found_before_kill"] != true {
        failures.push("the SIGKILL phase's daemon never found its pc_sim (markers not attached before the kill)".into());
    }

    let rows: Vec<(&str, String)> = vec![
        (
            "duration of load",
            format!(
                "{load_s:.0} s (asked {})",
                humantime::format_duration(opts.duration)
            ),
        ),
        (
            "daemon build",
            format!("{profile} (target/{profile}/sockscope)"),
        ),
        (
            "processes started",
            format!("{processes} ({} at a time)", opts.load.parallel),
        ),
        (
            "pid reuse",
            format!(
                "{} at once + {} seconds later (clone3 set_tid), {} by chance, {} refused; {} pid wraps (pid_max {pid_max_during})",
                driven.reused_at_once,
                driven.reused_later,
                driven.reused_by_chance,
                driven.reuse_refused,
                driven.pid_wraps
            ),
        ),
        (
            "PeerConnections",
            format!(
                "{pcs} ({} verdicts: {} clean, {} leak, {} incomplete)",
                checked.verdicts, checked.clean, checked.leak_verdicts, checked.incomplete
            ),
        ),
        (
            "markers",
            format!(
                "{markers_attached:.0} attached at the end, {markers_released:.0} released ({} instances ran a deleted copy of their own; markers of programs no process ran for 60 s go)",
                driven.own_copies
            ),
        ),
        (
            "sockets created",
            format!("{sockets} ({:.0}/s)", sockets as f64 / load_s.max(1e-9)),
        ),
        (
            "leaks injected / found",
            format!(
                "{} / {} (missing {}, extra {}; late releases {}, without stack {}, wrong process context {}, context of a process gone before found {})",
                checked.leaks_injected,
                checked.leaks_found,
                checked.leaks_missing,
                checked.leaks_extra,
                checked.late,
                checked.leaks_without_stack,
                checked.context_mismatches,
                checked.contexts_exited_before_found
            ),
        ),
        (
            "events / lost",
            format!(
                "{events_total} ({:.0}/s) / {lost_total}; untracked sockets {untracked}",
                events_total as f64 / load_s.max(1e-9)
            ),
        ),
        (
            "RSS start / after warm-up / end",
            format!(
                "{} / {} / {}",
                mib(first.rss_bytes as f64),
                mib(rss_at_warm),
                mib(rss_end as f64)
            ),
        ),
        (
            "RSS slope after warm-up",
            format!(
                "{} KiB/min least squares over {:.1} min after {:.0} s: {} (allowed {}); Theil-Sen {} KiB/min{}",
                per_min.map_or("?".into(), |s| format!("{:+.1}", s / 1024.0)),
                window_min,
                mem.warmup_s,
                growth.map_or("?".into(), |g| format!("{:+.2} MiB", g / (1024.0 * 1024.0))),
                mib(allowed),
                mem.theil_sen_bytes_per_min
                    .map_or("?".into(), |s| format!("{:+.1}", s / 1024.0)),
                if others_range.1 > 0.0 {
                    format!(
                        "; others' sockets {:.0}-{:.0}",
                        others_range.0, others_range.1
                    )
                } else {
                    String::new()
                }
            ),
        ),
        (
            "held at the end",
            format!(
                "{tracked_sockets} sockets, {tracked_pcs} PeerConnections ({other_marked} other marked processes with {others_open} sockets)"
            ),
        ),
        (
            "stack map entries",
            match (stacks_start, stack_fill) {
                (Some((a, m)), Some((b, _))) => {
                    format!(
                        "{a} at the start, {b} at the end (of {m}; {stack_allowed} more allowed)"
                    )
                }
                _ => "?".into(),
            },
        ),
        (
            "daemon CPU",
            format!(
                "{:.1} s user+system over {:.0} s ({:.0}% of one core)",
                cpu_s,
                daemon_life_s,
                100.0 * cpu_s / daemon_life_s.max(1e-9)
            ),
        ),
        (
            "SIGTERM",
            format!(
                "{status} in {:.1} s; of its {} programs and {} links, {} and {} left",
                stop_time.as_secs_f64(),
                held.programs.len(),
                held.links.len(),
                left_after_term.programs.len(),
                left_after_term.links.len()
            ),
        ),
        (
            "SIGKILL",
            format!(
                "of its {} programs and {} links, {} and {} left",
                kill["held"]["programs"].as_array().map_or(0, Vec::len),
                kill["held"]["links"].as_array().map_or(0, Vec::len),
                kill_left["programs"].as_array().map_or(0, Vec::len),
                kill_left["links"].as_array().map_or(0, Vec::len)
            ),
        ),
    ];
    println!();
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in &rows {
        println!("  {k:<width$}  {v}");
    }
    println!();

    let results = json!({
        "schema": 1,
        "date": util::output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).map(|s| s.trim().to_owned()),
        "machine": {
            "kernel": util::output("uname", &["-r"]).map(|s| s.trim().to_owned()),
            "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "pid_max": pid_max_before,
            "pid_max_during": pid_max_during,
        },
        "build": profile,
        "duration_asked_s": opts.duration.as_secs_f64(),
        "load_s": load_s,
        "load": opts.load,
        "load_mono_ns": [load_started_ns, load_ended_ns],
        "driver": &driven,
        "processes": processes,
        "peer_connections": pcs,
        "sockets": sockets,
        "sockets_per_s": sockets as f64 / load_s.max(1e-9),
        "check": &checked,
        "events": events_total,
        "events_per_s": events_total as f64 / load_s.max(1e-9),
        "lost": lost_total,
        "untracked_sockets": untracked,
        "rss": {
            "start_bytes": first.rss_bytes,
            "end_bytes": rss_end,
            "fit": &mem,
            "samples": samples,
        },
        "daemon_cpu_s": cpu_s,
        "daemon_life_s": daemon_life_s,
        "end": {
            "tracked_sockets": tracked_sockets,
            "tracked_peer_connections": tracked_pcs,
            "other_marked_processes": other_marked,
            "other_open_sockets": others_open,
            "stack_map": stack_fill,
            "stack_map_at_start": stacks_start,
        },
        "sigterm": {
            "status": status.to_string(),
            "stop_s": stop_time.as_secs_f64(),
            "held": held,
            "left_after_5s": left_after_term,
            "tracefs_probes_left": probes_after_term,
            "stopped_line": stopped_line,
        },
        "sigkill": kill,
        "sockscope_programs_of_anyone": {
            "before": programs_before.len(),
            "after": programs_after.len(),
        },
        "instances": driven.instances.iter().map(|i| json!({
            "name": i.plan.name, "pid": i.pid, "origin": i.origin,
            "pcs": i.pcs.len(), "sockets": i.sockets(), "leaked": i.leaked(),
            "exit_without_cleanup": i.plan.exit_without_cleanup,
            "started_ns": i.started_ns, "reaped_ns": i.reaped_ns,
        })).collect::<Vec<_>>(),
        "failures": failures,
        "passed": failures.is_empty(),
    });
    if let Some(parent) = results_path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(
        &results_path,
        serde_json::to_string_pretty(&results)? + "\n",
    )
    .with_context(|| format!("cannot write {}", results_path.display()))?;
    println!("soak: wrote {}", results_path.display());
    let _ = std::fs::remove_dir_all(&bin_dir);
    if !failures.is_empty() {
        for (kind, n) in check::failure_kinds(&failures) {
            eprintln!("soak: {n} x {kind}");
        }
        for f in failures.iter().take(30) {
            eprintln!("soak: FAIL {f}");
        }
        if failures.len() > 30 {
            eprintln!(
                "soak: ... {} more in {}",
                failures.len() - 30,
                results_path.display()
            );
        }
        bail!("soak failed: {} assertion(s) (see above)", failures.len());
    }
    println!("soak: passed");
    Ok(())
}
