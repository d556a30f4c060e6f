//! Creates, binds (loopback, port 0) and closes UDP sockets as fast as it can.
//!
//! `udp_churn [--count N] [--threads T] [--rate R] [--wait]`: N sockets per thread
//! (default 1000), T threads (default 1); with `--rate`, at most R sockets per second
//! in all (paced, for finding the highest rate a tracer follows without loss).
//! With `--wait` it prints `{"ready":true,"pid":P}` and
//! waits for a line on stdin before starting. At the end it prints
//! `{"pid":P,"sockets":TOTAL,"seconds":S,"cpu_seconds":C}` (C: its CPU time, which
//! includes the time BPF programs ran on its behalf).
use std::{net::UdpSocket, time::Instant};

use workloads::{Pacer, cpu_seconds, number_arg, say, wait_if_asked};

/// Creates, binds and closes `count` sockets, at most `rate` per second.
fn churn(count: usize, rate: Option<f64>) -> usize {
    let pacer = Pacer::new(rate);
    let mut done = 0;
    for i in 0..count {
        pacer.wait(i as u64);
        if UdpSocket::bind("127.0.0.1:0").is_ok() {
            done += 1;
        }
    }
    done
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count = number_arg(&args, "--count", 1000) as usize;
    let threads = number_arg(&args, "--threads", 1).max(1) as usize;
    let rate = match number_arg(&args, "--rate", 0) {
        0 => None,
        r => Some(r as f64 / threads as f64),
    };
    let pid = std::process::id();
    wait_if_asked(&args);
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || churn(count, rate)))
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    say(&format!(
        "{{\"pid\":{pid},\"sockets\":{total},\"seconds\":{seconds:.6},\"cpu_seconds\":{cpu:.6}}}"
    ));
}
