//! Simulates PeerConnections with the real `tracer-usdt` markers and real UDP sockets:
//! each "PeerConnection" opens, creates sockets on a worker thread inside its span,
//! announces their ports, closes, and releases them — except where a leak is asked for.
//!
//! `pc_sim [--pcs N] [--sockets K] [--leak PC_ID]... [--leak-unannounced PC_ID]...
//!         [--linger D_MS] [--after-span] [--wait] [--pause-after-open PC_ID]
//!         [--share-leaks] [--keep-sending] [--exit-without-cleanup] [--first-pc-id ID]
//!         [--rate N]`
//! Prints one JSON line per PeerConnection (`pc_id`, ports, leaked ports, and when
//! `pc_close_end` fired as `close_end_mono_ns`, CLOCK_MONOTONIC) and a final
//! `{"done":true,...}`. `--after-span` also creates one socket right after the span
//! of PeerConnection 1 ended (it must not carry pc_id 1). `--pause-after-open PC_ID`
//! prints `{"paused":PC_ID,"pid":P}` once that PeerConnection has its sockets, and waits
//! for a line on stdin before closing it (a tracer attaches meanwhile).
//! `--share-leaks` hands each leaked socket's fd to a child process (`sleep`) too, as a
//! descriptor passed to another process would; it prints `{"shared_with": CHILD_PID,
//! "fd": FD}` and ends the child before exiting.
//! `--keep-sending` makes each leaked socket active: a thread of its own sends a
//! datagram to the socket's own address every 50 ms (same descriptor) until the linger
//! ends, from `pc_sim_keep_sending` (the frame its last-I/O stack must name).
//! `--first-pc-id ID` numbers the PeerConnections from ID (default 1; `--leak` and the
//! other PC_ID flags name them by these ids), so runs that share a pid can be told
//! apart by pc_id. `--rate N` paces socket creation to at most N sockets/s (a
//! PeerConnection's sockets are made together; the pause falls between them).
use std::{
    io::{BufRead as _, Write as _},
    net::UdpSocket,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::json;

fn numbers(args: &[String], flag: &str) -> Vec<u64> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .filter_map(|w| w[1].parse().ok())
        .collect()
}

fn number(args: &[String], flag: &str, default: u64) -> u64 {
    numbers(args, flag).first().copied().unwrap_or(default)
}

fn say(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// The sockets of one PeerConnection, made on a worker thread inside its span, as
/// webrtc-rs does on its runtime's threads.
#[inline(never)]
fn pc_sim_create_sockets(pc_id: u64, count: u64) -> Vec<UdpSocket> {
    std::thread::spawn(move || {
        tracer_usdt::span_enter(pc_id);
        let socks: Vec<UdpSocket> = (0..count)
            .filter_map(|_| UdpSocket::bind("127.0.0.1:0").ok())
            .collect();
        tracer_usdt::span_exit(pc_id);
        socks
    })
    .join()
    .unwrap_or_default()
}

/// A leaked socket still in use after its PeerConnection closed: sends to itself every
/// 50 ms until `stop`.
#[inline(never)]
fn pc_sim_keep_sending(s: Arc<UdpSocket>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(me) = s.local_addr() else {
            return;
        };
        while !stop.load(Ordering::Relaxed) {
            let _ = s.send_to(b"still here", me);
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// A `sleep` child that inherits `s`'s fd (same number), so two processes hold it.
fn share_with_child(s: &UdpSocket) -> Option<std::process::Child> {
    use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
    let fd = s.as_raw_fd();
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("60");
    // SAFETY: runs in the forked child before exec; fcntl is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().ok()?;
    say(json!({"shared_with": child.id(), "fd": fd}));
    Some(child)
}

fn port(s: &UdpSocket) -> u16 {
    s.local_addr().map(|a| a.port()).unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pcs = number(&args, "--pcs", 3);
    let per_pc = number(&args, "--sockets", 2);
    let leak = numbers(&args, "--leak");
    let leak_unannounced = numbers(&args, "--leak-unannounced");
    let linger = Duration::from_millis(number(&args, "--linger", 0));
    let pause_after_open = numbers(&args, "--pause-after-open");
    let first = number(&args, "--first-pc-id", 1).max(1);
    // A moment before the first PeerConnection, as a server takes before its first
    // call (before the pacer starts its clock).
    std::thread::sleep(Duration::from_millis(number(&args, "--start-delay", 0)));
    let pacer = workloads::Pacer::new(numbers(&args, "--rate").first().map(|r| *r as f64));
    let wait_for_go = || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    };
    if args.iter().any(|a| a == "--wait") {
        say(json!({"ready": true, "pid": std::process::id()}));
        wait_for_go();
    }

    let share_leaks = args.iter().any(|a| a == "--share-leaks");
    let keep_sending = args.iter().any(|a| a == "--keep-sending");
    let stop_sending = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut kept: Vec<Arc<UdpSocket>> = Vec::new();
    let mut sharers = Vec::new();
    for (i, pc_id) in (first..first.saturating_add(pcs)).enumerate() {
        pacer.wait(i as u64 * per_pc);
        tracer_usdt::pc_open(pc_id);
        let socks = pc_sim_create_sockets(pc_id, per_pc);
        let ports: Vec<u16> = socks.iter().map(port).collect();
        if !leak_unannounced.contains(&pc_id) {
            for p in &ports {
                tracer_usdt::pc_socket(pc_id, *p);
            }
        }
        if pause_after_open.contains(&pc_id) {
            say(json!({"paused": pc_id, "pid": std::process::id(), "ports": ports}));
            wait_for_go();
        }
        tracer_usdt::pc_close_begin(pc_id);
        let leaking = leak.contains(&pc_id) || leak_unannounced.contains(&pc_id);
        // A leak keeps the first socket; the rest are closed as they should be.
        let mut socks = socks.into_iter();
        let leaked: Vec<u16> = if leaking {
            socks
                .next()
                .map(|s| {
                    let p = port(&s);
                    if share_leaks {
                        sharers.extend(share_with_child(&s));
                    }
                    let s = Arc::new(s);
                    if keep_sending {
                        senders.push(pc_sim_keep_sending(s.clone(), stop_sending.clone()));
                    }
                    kept.push(s);
                    p
                })
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        drop(socks);
        tracer_usdt::pc_close_end(pc_id);
        let closed_ns = workloads::monotonic_ns();
        say(
            json!({"pc_id": pc_id, "ports": ports, "leaked_ports": leaked, "close_end_mono_ns": closed_ns}),
        );
        if pc_id == first && args.iter().any(|a| a == "--after-span") {
            let s = UdpSocket::bind("127.0.0.1:0").ok();
            say(json!({"after_span_port": s.as_ref().map(port)}));
            kept.extend(s.map(Arc::new));
        }
    }
    std::thread::sleep(linger);
    stop_sending.store(true, Ordering::Relaxed);
    for t in senders {
        let _ = t.join();
    }
    for mut child in sharers {
        let _ = child.kill();
        let _ = child.wait();
    }
    say(
        json!({"done": true, "pid": std::process::id(), "leaked": kept.iter().map(|s| port(s)).collect::<Vec<_>>()}),
    );
    if args.iter().any(|a| a == "--exit-without-cleanup") {
        // Like a process that dies with the leak: the kernel closes what is left.
        std::process::exit(0);
    }
    // The program releases its leaked sockets itself (a late release) and goes on a
    // little, as a server would: a process that exits within a millisecond of a close
    // can be gone before a tracer without its memory map (frame-pointer mode) names the
    // releasing stack, and that race is not what the late-release checks are about.
    drop(kept);
    std::thread::sleep(Duration::from_millis(50));
}
