//! UDP ping-pong over loopback with no socket churn: the tracer's socket hooks are not
//! on this path, so tracing should cost nothing here; under `check`/`watch` the I/O
//! hooks are (every send and receive looks its (process, fd) up), and the flags below
//! put the sockets where those hooks do more than one failed lookup.
//!
//! `udp_echo [--messages M] [--pairs P] [--wait] [--open-after-go] [--closed-pc]
//!           [--warmup W] [--settle MS]`: P client/server pairs (default 1), each doing M
//! round trips of 64 bytes (default 100000). Prints
//! `{"pid":P,"round_trips":TOTAL,"seconds":S,"cpu_seconds":C,"start_mono_ns":T}` (C: the
//! CPU time of the timed round trips, which includes the BPF programs run on its
//! behalf; T: when they began, CLOCK_MONOTONIC).
//!
//! - `--open-after-go`: the sockets are made after the go of `--wait` (by default
//!   before it): a tracer attached meanwhile sees them created (under `check`/`watch`,
//!   watched from their creation: each call is counted, no stack).
//! - `--closed-pc`: also after the go, as the sockets of PeerConnection 1 (made inside
//!   its span, announced by cookie and port), which then closes (`pc_close_begin`,
//!   `pc_close_end`) while they stay open and in use: a leak that keeps doing I/O, each
//!   call counted with its stack (the worst case of the I/O hooks).
//! - `--warmup W`: W round trips per pair before the timed ones (after the close with
//!   `--closed-pc`: a watcher's verdict then shows them); `--settle MS`: then a pause
//!   (a watcher's grace ends, its verdict comes before the timed round trips).
use std::{net::UdpSocket, os::fd::AsRawFd as _, time::Instant};

use workloads::{cpu_seconds, number_arg, say, wait_if_asked};

/// The PeerConnection id of `--closed-pc`.
const PC_ID: u64 = 1;

fn pair() -> std::io::Result<(UdpSocket, UdpSocket)> {
    let server = UdpSocket::bind("127.0.0.1:0")?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    client.connect(server.local_addr()?)?;
    server.connect(client.local_addr()?)?;
    Ok((server, client))
}

fn pairs(n: u64) -> Vec<(UdpSocket, UdpSocket)> {
    match (0..n).map(|_| pair()).collect() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp_echo: cannot open loopback sockets: {e}");
            std::process::exit(2);
        }
    }
}

/// The sockets of a PeerConnection that closes while they stay open: made inside its
/// span, announced, then its end. The sockets keep their fds (the I/O hooks watch a
/// socket by process and fd).
#[inline(never)]
fn udp_echo_closed_pc(n: u64) -> Vec<(UdpSocket, UdpSocket)> {
    tracer_usdt::pc_open(PC_ID);
    tracer_usdt::span_enter(PC_ID);
    let sockets = pairs(n);
    tracer_usdt::span_exit(PC_ID);
    for s in sockets.iter().flat_map(|(s, c)| [s, c]) {
        if let Some(cookie) = tracer_usdt::socket_cookie(s.as_raw_fd()) {
            tracer_usdt::pc_socket_cookie(PC_ID, cookie);
        }
        if let Ok(a) = s.local_addr() {
            tracer_usdt::pc_socket(PC_ID, a.port());
        }
    }
    tracer_usdt::pc_close_begin(PC_ID);
    tracer_usdt::pc_close_end(PC_ID);
    sockets
}

/// Round trips completed; stops at the first error (a lost datagram on loopback
/// would block forever, hence the timeout).
fn ping_pong(server: &UdpSocket, client: &UdpSocket, messages: u64) -> u64 {
    let timeout = Some(std::time::Duration::from_secs(2));
    if server.set_read_timeout(timeout).is_err() || client.set_read_timeout(timeout).is_err() {
        return 0;
    }
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut buf = [0u8; 64];
            for _ in 0..messages {
                let Ok(n) = server.recv(&mut buf) else { break };
                if server.send(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let msg = [7u8; 64];
        let mut buf = [0u8; 64];
        let mut done = 0;
        for _ in 0..messages {
            if client.send(&msg).is_err() || client.recv(&mut buf).is_err() {
                break;
            }
            done += 1;
        }
        done
    })
}

/// Every pair's round trips at once, one thread per pair: the total completed.
fn all_pairs(sockets: &[(UdpSocket, UdpSocket)], messages: u64) -> u64 {
    std::thread::scope(|scope| {
        let workers: Vec<_> = sockets
            .iter()
            .map(|(s, c)| scope.spawn(move || ping_pong(s, c, messages)))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let messages = number_arg(&args, "--messages", 100_000);
    let n = number_arg(&args, "--pairs", 1).max(1);
    let warmup = number_arg(&args, "--warmup", 0);
    let settle = std::time::Duration::from_millis(number_arg(&args, "--settle", 0));
    let closed_pc = flag("--closed-pc");
    let after_go = closed_pc || flag("--open-after-go");
    let mut sockets = if after_go { Vec::new() } else { pairs(n) };
    wait_if_asked(&args);
    if closed_pc {
        sockets = udp_echo_closed_pc(n);
    } else if after_go {
        sockets = pairs(n);
    }
    if warmup > 0 && all_pairs(&sockets, warmup) < warmup * n {
        eprintln!("udp_echo: a warm-up round trip failed");
        std::process::exit(1);
    }
    std::thread::sleep(settle);
    let start_mono_ns = workloads::monotonic_ns();
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let total = all_pairs(&sockets, messages);
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    say(&format!(
        "{{\"pid\":{},\"round_trips\":{total},\"seconds\":{seconds:.6},\"cpu_seconds\":{cpu:.6},\"start_mono_ns\":{start_mono_ns}}}",
        std::process::id()
    ));
}
