//! UDP ping-pong over loopback with no socket churn: the tracer's hooks are not on
//! this path, so tracing should cost nothing here.
//!
//! `udp_echo [--messages M] [--pairs P] [--wait]`: P client/server pairs (default 1),
//! each doing M round trips of 64 bytes (default 100000). Prints
//! `{"pid":P,"round_trips":TOTAL,"seconds":S}`.
use std::{net::UdpSocket, time::Instant};

use workloads::{number_arg, say, wait_if_asked};

fn pair() -> std::io::Result<(UdpSocket, UdpSocket)> {
    let server = UdpSocket::bind("127.0.0.1:0")?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    client.connect(server.local_addr()?)?;
    server.connect(client.local_addr()?)?;
    Ok((server, client))
}

/// Round trips completed; stops at the first error (a lost datagram on loopback
/// would block forever, hence the timeout).
fn ping_pong(server: UdpSocket, client: UdpSocket, messages: u64) -> u64 {
    let timeout = Some(std::time::Duration::from_secs(2));
    if server.set_read_timeout(timeout).is_err() || client.set_read_timeout(timeout).is_err() {
        return 0;
    }
    let echo = std::thread::spawn(move || {
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
    let _ = echo.join();
    done
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let messages = number_arg(&args, "--messages", 100_000);
    let pairs = number_arg(&args, "--pairs", 1).max(1);
    let sockets: Vec<_> = match (0..pairs).map(|_| pair()).collect() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp_echo: cannot open loopback sockets: {e}");
            std::process::exit(2);
        }
    };
    wait_if_asked(&args);
    let start = Instant::now();
    let workers: Vec<_> = sockets
        .into_iter()
        .map(|(s, c)| std::thread::spawn(move || ping_pong(s, c, messages)))
        .collect();
    let total: u64 = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    let seconds = start.elapsed().as_secs_f64();
    say(&format!(
        "{{\"pid\":{},\"round_trips\":{total},\"seconds\":{seconds:.6}}}",
        std::process::id()
    ));
}
