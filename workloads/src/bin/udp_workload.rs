//! Opens UDP sockets in known ways, closes a known subset, and prints what it did, as
//! ground truth for sockscope's tests and demo.
//!
//! Protocol (stdin/stdout, one JSON object a line):
//! 1. prints `{"ready":true,"pid":P}` and waits for a line on stdin (tracer attached);
//! 2. opens the sockets, closes the subset, prints `{"pid":P,"sockets":[...]}`;
//! 3. waits for stdin to close (or a line), then exits, closing the rest.
//!
//! `--fixed-port N` is the loopback port of the fixed-port socket (default: any free
//! one, found by binding port 0 first). `--no-wait` skips both waits (for the demo).
use std::{
    io::{BufRead as _, Write as _},
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd as _, IntoRawFd as _},
};

use serde_json::{Value, json};
use socket2::{Domain, Protocol, Socket, Type};

struct Opened {
    label: &'static str,
    fd: i32,
    family: &'static str,
    port: Option<u16>,
    tid: i64,
    close: bool,
}

fn tid() -> i64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

fn std_socket(
    label: &'static str,
    addr: &str,
    family: &'static str,
    close: bool,
) -> (Opened, Option<UdpSocket>) {
    let sock = UdpSocket::bind(addr).unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    let port = sock.local_addr().ok().map(|a| a.port());
    (
        Opened {
            label,
            fd: sock.as_raw_fd(),
            family,
            port,
            tid: tid(),
            close,
        },
        Some(sock),
    )
}

/// Created in a function with a recognizable name, on another thread, so tests can
/// look for the name in the creating user stack and check the tid.
#[inline(never)]
fn sockscope_workload_named_creator() -> (UdpSocket, i64) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| fail(&format!("bind: {e}")));
    (std::hint::black_box(sock), tid())
}

fn fail(msg: &str) -> ! {
    eprintln!("udp_workload: {msg}");
    std::process::exit(2);
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(&format!("no free port: {e}")))
}

fn wait_line() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn say(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let wait = !args.iter().any(|a| a == "--no-wait");
    let fixed_port = match args.iter().position(|a| a == "--fixed-port") {
        Some(i) => args
            .get(i + 1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| fail("--fixed-port needs a port number")),
        None => free_port(),
    };
    let pid = std::process::id();
    if wait {
        say(json!({"ready": true, "pid": pid}));
        wait_line();
    }

    let mut keep: Vec<Box<dyn Send>> = Vec::new();
    let mut opened = Vec::new();
    for (label, addr, family, close) in [
        ("std_v4_port0", "127.0.0.1:0", "inet", false),
        ("std_v6_port0", "[::1]:0", "inet6", true),
    ] {
        let (o, s) = std_socket(label, addr, family, close);
        opened.push(o);
        keep.push(Box::new(s));
    }

    let fixed = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .unwrap_or_else(|e| fail(&format!("socket2: {e}")));
    fixed
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, fixed_port)).into())
        .unwrap_or_else(|e| fail(&format!("bind 127.0.0.1:{fixed_port}: {e}")));
    opened.push(Opened {
        label: "socket2_v4_fixed",
        fd: fixed.as_raw_fd(),
        family: "inet",
        port: Some(fixed_port),
        tid: tid(),
        close: false,
    });
    keep.push(Box::new(Some(fixed)));

    let unbound6 = Socket::new(Domain::IPV6, Type::DGRAM, None)
        .unwrap_or_else(|e| fail(&format!("socket2: {e}")));
    opened.push(Opened {
        label: "socket2_v6_unbound",
        fd: unbound6.into_raw_fd(),
        family: "inet6",
        port: None,
        tid: tid(),
        close: true,
    });

    // SAFETY: plain socket(2) call.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if raw < 0 {
        fail(&format!("socket: {}", std::io::Error::last_os_error()));
    }
    opened.push(Opened {
        label: "libc_v4_unbound",
        fd: raw,
        family: "inet",
        port: None,
        tid: tid(),
        close: true,
    });

    let (named, named_tid) = std::thread::spawn(sockscope_workload_named_creator)
        .join()
        .unwrap_or_else(|_| fail("creator thread panicked"));
    opened.push(Opened {
        label: "named_creator_v4",
        fd: named.as_raw_fd(),
        family: "inet",
        port: named.local_addr().ok().map(|a| a.port()),
        tid: named_tid,
        close: false,
    });
    keep.push(Box::new(Some(named)));

    // Close the chosen subset: std sockets by dropping them, raw fds with close(2).
    for (i, o) in opened.iter().enumerate() {
        if o.close {
            match o.label {
                "std_v6_port0" => keep[i] = Box::new(()),
                // SAFETY: fds this program opened with into_raw_fd/socket and owns.
                _ => unsafe {
                    libc::close(o.fd);
                },
            }
        }
    }

    let sockets: Vec<Value> = opened
        .iter()
        .map(|o| json!({"label": o.label, "fd": o.fd, "family": o.family, "port": o.port, "tid": o.tid, "closed": o.close}))
        .collect();
    say(json!({"pid": pid, "sockets": sockets}));
    if wait {
        wait_line();
    }
    drop(keep);
}
