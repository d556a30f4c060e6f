//! Creates, binds (loopback, port 0) and closes UDP sockets as fast as it can.
//!
//! `udp_churn [--count N] [--threads T] [--wait]`: N sockets per thread (default
//! 1000), T threads (default 1). With `--wait` it prints `{"ready":true,"pid":P}` and
//! waits for a line on stdin before starting. At the end it prints
//! `{"pid":P,"sockets":TOTAL,"seconds":S}`.
use std::{
    io::{BufRead as _, Write as _},
    net::UdpSocket,
    time::Instant,
};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                eprintln!("udp_churn: {name} needs a number");
                std::process::exit(2)
            }),
        None => default,
    }
}

fn churn(count: usize) -> usize {
    let mut done = 0;
    for _ in 0..count {
        if UdpSocket::bind("127.0.0.1:0").is_ok() {
            done += 1;
        }
    }
    done
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count = arg(&args, "--count", 1000);
    let threads = arg(&args, "--threads", 1).max(1);
    let pid = std::process::id();
    if args.iter().any(|a| a == "--wait") {
        println!("{{\"ready\":true,\"pid\":{pid}}}");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    }
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || churn(count)))
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    let seconds = start.elapsed().as_secs_f64();
    println!("{{\"pid\":{pid},\"sockets\":{total},\"seconds\":{seconds:.6}}}");
}
