//! `sockscope leaks`: outstanding UDP sockets by age, grouped by creating stack, like
//! memleak does for allocations. Needs no markers. Sockets that existed before
//! sockscope started are listed too, with their stack unknown.
use std::{collections::HashMap, io::Write as _, time::Duration};

use anyhow::Context as _;

use crate::{
    backend::SocketIdentity,
    clock::{human_ns, monotonic_ns},
    cmd::{exit_watch::ExitWatch, trace::validate_target},
    error::UsageError,
    events::{KernelEvent, comm_str},
    inventory,
    loader::TracerBuilder,
    output::{Format, SCHEMA, write_frames},
    shutdown::watch_shutdown,
    stream::{self, EventStream},
    symbolize::{Frame, RawStack, Symbolizer},
};

#[derive(Clone, Debug)]
pub struct LeaksOptions {
    pub pid: Option<u32>,
    pub min_age: Duration,
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub format: Format,
    pub ring_bytes: Option<u32>,
    /// `None`: the first backend that works here.
    pub backend: Option<crate::backend::Backend>,
    /// How creating stacks are taken (samples only with --pid).
    pub stacks: crate::unwind::StackArgs,
}

#[derive(Clone, Debug)]
struct Outstanding {
    pid: u32,
    comm: String,
    port: Option<u16>,
    /// Creation time; `None` for sockets that predate sockscope.
    created_ns: Option<u64>,
    user_stack: i32,
    /// The creating stack as the ring reader resolved it.
    stack: Option<RawStack>,
}

/// Sockets that share a process and a creating stack.
#[derive(Debug, serde::Serialize)]
struct Group {
    pid: u32,
    comm: String,
    count: usize,
    /// Age of the oldest; `None` when they predate sockscope (older than the trace).
    oldest_age_ns: Option<u64>,
    cookies: Vec<u64>,
    ports: Vec<u16>,
    /// `None`: created before sockscope started, stack unknown.
    stack: Option<Vec<Frame>>,
}

pub async fn run(opts: LeaksOptions) -> anyhow::Result<()> {
    validate_target(opts.pid, None)?;
    if opts.interval.is_zero() {
        return Err(UsageError::ZeroDuration("--interval").into());
    }
    // Before anything is loaded, so that the pid cannot be reused unnoticed.
    let mut exit = opts.pid.map(ExitWatch::new).transpose()?;
    let mut stop = watch_shutdown(opts.duration).context("cannot install signal handlers")?;
    let builder = TracerBuilder::new()
        .pid(opts.pid)
        .ring_bytes(opts.ring_bytes)
        .backend(opts.backend)
        .stack_mode(opts.stacks.mode)
        .stack_bytes(opts.stacks.stack_bytes);
    let mut tracer = super::attach(builder).await?;
    let mut stream = EventStream::new(&mut tracer)?;
    let mut live = preexisting(opts.pid, tracer.backend().identity());
    crate::say!(
        "sockscope: tracking UDP sockets of {}; listing those older than {:?} every {:?}; Ctrl-C to stop{}",
        opts.pid
            .map_or("all processes".into(), |p| format!("pid {p}")),
        opts.min_age,
        opts.interval,
        if opts.pid.is_some() {
            " (ends when the process exits)"
        } else {
            ""
        }
    );
    let symbolizer = Symbolizer::new();
    let mut report = tokio::time::interval(opts.interval);
    report.tick().await; // the first tick is immediate
    let mut exited = false;
    loop {
        tokio::select! {
            r = stream.readable() => {
                r?;
                if apply(&mut live, stream.drain(), opts.pid) {
                    exited = true;
                    break;
                }
            }
            _ = report.tick() => print(&live, &symbolizer, &opts)?,
            () = ExitWatch::exited(exit.as_mut()) => {
                exited = true;
                break;
            }
            _ = stop.changed() => break,
        }
    }
    apply(&mut live, stream.finish(), opts.pid);
    print(&live, &symbolizer, &opts)?;
    let lost = tracer.stats()?.lost;
    drop(tracer); // detaches
    if lost > 0 {
        crate::say!(
            "sockscope: {lost} events were lost: the listing may miss sockets or list closed ones"
        );
    }
    if let (true, Some(pid)) = (exited, opts.pid) {
        let open: usize = live.values().filter(|s| s.pid == pid).count();
        crate::say!(
            "sockscope: pid {pid} exited, with {open} UDP sockets still open (closed by its exit): the listing above is the final one"
        );
    }
    Ok(())
}

fn preexisting(pid: Option<u32>, identity: SocketIdentity) -> HashMap<u64, Outstanding> {
    let mut live = HashMap::new();
    for s in inventory::udp_inventory(pid) {
        let Some((hp, _)) = s.holder else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{hp}/comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        live.insert(
            s.key(identity),
            Outstanding {
                pid: hp,
                comm,
                port: s.local.map(|l| l.1),
                created_ns: None,
                user_stack: -1,
                stack: None,
            },
        );
    }
    live
}

/// Applies kernel records to the outstanding sockets. With `target` (`--pid`), the
/// sockets its exit closes stay listed (they were open until it exited), and the
/// return value says whether it exited: its exit record comes before those releases.
fn apply(
    live: &mut HashMap<u64, Outstanding>,
    records: Vec<stream::Record>,
    target: Option<u32>,
) -> bool {
    let mut exited = false;
    for record in records {
        match record.event {
            KernelEvent::Create(c) => {
                live.insert(
                    c.cookie,
                    Outstanding {
                        pid: c.pid,
                        comm: comm_str(&c.comm),
                        port: None,
                        created_ns: Some(c.ts_ns),
                        user_stack: c.user_stack,
                        stack: record.user_stack,
                    },
                );
            }
            KernelEvent::Bind(b) => {
                if let Some(s) = live.get_mut(&b.cookie) {
                    s.port = Some(b.port);
                }
            }
            KernelEvent::Release(r) if r.exiting != 0 && Some(r.pid) == target => {}
            KernelEvent::Release(r) => {
                live.remove(&r.cookie);
            }
            KernelEvent::Exit(e) if Some(e.pid) == target => exited = true,
            // Exec records come only to `check`, which follows execs.
            KernelEvent::Marker(_)
            | KernelEvent::Exit(_)
            | KernelEvent::Exec(_)
            | KernelEvent::IoStack(_) => {}
        }
    }
    exited
}

fn groups(live: &HashMap<u64, Outstanding>, sym: &Symbolizer, min_age: Duration) -> Vec<Group> {
    let now = monotonic_ns();
    let min_ns = min_age.as_nanos() as u64;
    let mut by_key: HashMap<(u32, i32, bool), Group> = HashMap::new();
    for (cookie, s) in live {
        let age = s.created_ns.map(|c| now.saturating_sub(c));
        if age.is_some_and(|a| a < min_ns) {
            continue;
        }
        let key = (s.pid, s.user_stack, s.created_ns.is_none());
        let g = by_key.entry(key).or_insert_with(|| Group {
            pid: s.pid,
            comm: s.comm.clone(),
            count: 0,
            oldest_age_ns: age,
            cookies: Vec::new(),
            ports: Vec::new(),
            stack: s.created_ns.map(|_| {
                s.stack
                    .as_deref()
                    .map(|raw| sym.raw(raw))
                    .unwrap_or_default()
            }),
        });
        g.count += 1;
        g.oldest_age_ns = match (g.oldest_age_ns, age) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        g.cookies.push(*cookie);
        g.ports.extend(s.port);
    }
    let mut v: Vec<Group> = by_key.into_values().collect();
    // Oldest first; those that predate sockscope are the oldest of all.
    v.sort_by_key(|g| std::cmp::Reverse(g.oldest_age_ns.unwrap_or(u64::MAX)));
    v
}

fn print(
    live: &HashMap<u64, Outstanding>,
    sym: &Symbolizer,
    opts: &LeaksOptions,
) -> anyhow::Result<()> {
    let groups = groups(live, sym, opts.min_age);
    let mut out = std::io::stdout().lock();
    match opts.format {
        Format::Json => {
            for g in &groups {
                let mut v = serde_json::to_value(g)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("schema".into(), SCHEMA.into());
                    o.insert("event".into(), "outstanding".into());
                }
                writeln!(out, "{v}")?;
            }
        }
        Format::Text => {
            let total: usize = groups.iter().map(|g| g.count).sum();
            writeln!(
                out,
                "== {total} UDP sockets open for at least {:?} ==",
                opts.min_age
            )?;
            for g in &groups {
                let age = g
                    .oldest_age_ns
                    .map_or("since before sockscope started".into(), |a| {
                        format!("oldest {}", human_ns(a))
                    });
                writeln!(
                    out,
                    "{} sockets of pid {} ({}), {age}, ports {:?}",
                    g.count, g.pid, g.comm, g.ports
                )?;
                match &g.stack {
                    Some(frames) => write_frames(&mut out, "creating", frames)?,
                    None => writeln!(
                        out,
                        "    creating stack: unknown (the socket existed before sockscope started)"
                    )?,
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}
