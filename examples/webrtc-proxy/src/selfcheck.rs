//! Ground truth from /proc: the UDP sockets this process holds, with their ports.
use std::{collections::HashMap, fs};

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

/// (inode, port) of every UDP socket among this process's fds; port 0 if unbound.
pub fn open_udp_sockets() -> Vec<(u64, u16)> {
    let ports = udp_ports();
    let mut out: Vec<(u64, u16)> = fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| {
                let target = fs::read_link(e.ok()?.path()).ok()?;
                let inode: u64 = target
                    .to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()?;
                ports.get(&inode).map(|p| (inode, *p))
            })
            .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}
