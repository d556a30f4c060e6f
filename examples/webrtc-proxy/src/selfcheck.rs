//! Ground truth from /proc: the UDP sockets this process holds, with their ports and
//! `SO_COOKIE`s (read with getsockopt on our own descriptor, so they can be matched
//! with the cookies the tracer-usdt helpers announce and sockscope records). Shared by
//! the webrtc-rs examples of both lines (webrtc21-proxy includes this file).
use std::{collections::HashMap, fs};

/// One UDP socket this process holds open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpenUdp {
    pub inode: u64,
    pub port: u16,
    pub fd: i32,
    pub cookie: Option<u64>,
}

/// Local port of each UDP socket inode in this network namespace.
fn udp_ports() -> HashMap<u64, u16> {
    let mut ports = HashMap::new();
    for table in ["/proc/self/net/udp", "/proc/self/net/udp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            let inode = f.get(9).and_then(|i| i.parse().ok());
            if let (Some(p), Some(i)) = (port, inode) {
                ports.insert(i, p);
            }
        }
    }
    ports
}

/// Every UDP socket among this process's fds (one entry per socket: the lowest fd).
pub fn open_udp_sockets() -> Vec<OpenUdp> {
    let ports = udp_ports();
    let mut out: Vec<OpenUdp> = fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let fd: i32 = e.file_name().to_str()?.parse().ok()?;
                let target = fs::read_link(e.path()).ok()?;
                let inode: u64 = target
                    .to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()?;
                let port = *ports.get(&inode)?;
                Some(OpenUdp {
                    inode,
                    port,
                    fd,
                    cookie: tracer_usdt::socket_cookie(fd),
                })
            })
            .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|s| (s.inode, s.fd));
    out.dedup_by_key(|s| s.inode);
    out
}

/// Whether the socket with this cookie is still open in this process.
pub fn is_open(open: &[OpenUdp], cookie: Option<u64>) -> bool {
    cookie.is_some_and(|c| open.iter().any(|s| s.cookie == Some(c)))
}
