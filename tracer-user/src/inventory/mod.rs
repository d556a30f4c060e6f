//! Live UDP sockets as the kernel reports them through sock_diag netlink, with the
//! same cookies the BPF hooks see, and the processes that hold them (/proc/PID/fd).
//! Used at start so releases of sockets that predate the tracer are not orphans.
use std::{collections::HashMap, fs, io, net::IpAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use crate::{backend::SocketIdentity, error::TracerError, events::Family};

mod process;
pub(crate) use process::pidfd_open;
pub use process::{HeldSocket, udp_sockets_of};

/// One UDP socket known to the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveSocket {
    pub cookie: u64,
    pub family: Family,
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub inode: u32,
}

impl LiveSocket {
    /// The number events of this backend know the socket by (see `SocketIdentity`).
    pub fn key(&self, identity: SocketIdentity) -> u64 {
        identity.of(self.cookie, u64::from(self.inode))
    }
}

/// The sock_diag cookie as one number: the kernel stores it as two host-order u32
/// words, low word first.
fn cookie_of(id: &SocketId) -> u64 {
    let [a, b, c, d, e, f, g, h] = id.cookie;
    let low = u32::from_ne_bytes([a, b, c, d]) as u64;
    let high = u32::from_ne_bytes([e, f, g, h]) as u64;
    high << 32 | low
}

/// Every UDP socket on the host, or none, with a warning, when the kernel cannot list
/// them: its `udp_diag` module is missing or cannot be loaded (an initramfs without
/// modules). Tracing works without the list; sockets that predate sockscope are then
/// unknown to it.
pub fn udp_sockets_or_warn() -> Vec<LiveSocket> {
    udp_sockets().unwrap_or_else(|e| {
        crate::say!(
            "sockscope: sockets that predate sockscope are not listed ({e}): load the kernel's udp_diag module (`modprobe udp_diag`)"
        );
        Vec::new()
    })
}

/// Every UDP socket on the host (both families).
pub fn udp_sockets() -> Result<Vec<LiveSocket>, TracerError> {
    let mut out = Vec::new();
    for family in [AF_INET, AF_INET6] {
        dump(family, &mut out).map_err(TracerError::SockDiag)?;
    }
    Ok(out)
}

fn dump(family: u8, out: &mut Vec<LiveSocket>) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_UDP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let bad = |e: netlink_packet_core::DecodeError| {
        io::Error::new(io::ErrorKind::InvalidData, e.to_string())
    };
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let bytes = &rx[offset..size];
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(bytes).map_err(bad)?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(resp)) => {
                    let id = &resp.header.socket_id;
                    out.push(LiveSocket {
                        cookie: cookie_of(id),
                        family: if resp.header.family == AF_INET6 {
                            Family::Inet6
                        } else {
                            Family::Inet
                        },
                        local_addr: id.source_address,
                        local_port: id.source_port,
                        inode: resp.header.inode,
                    });
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(err) => {
                    if let Some(code) = err.code {
                        return Err(io::Error::from_raw_os_error(-code.get()));
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// Who holds a socket inode: (pid, fd) pairs.
pub type Holders = HashMap<u64, Vec<(u32, i32)>>;

/// Socket inodes held by processes, from the `socket:[INODE]` links in /proc/*/fd.
/// With `only_pid`, just that process. Processes that vanish meanwhile are skipped.
pub fn socket_holders(only_pid: Option<u32>) -> Holders {
    let mut holders = Holders::new();
    let pids: Vec<u32> = match only_pid {
        Some(p) => vec![p],
        None => fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
    };
    for pid in pids {
        let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for entry in dir.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(target) = fs::read_link(entry.path()) else {
                continue;
            };
            if let Some(inode) = socket_inode(&target.to_string_lossy()) {
                holders.entry(inode).or_default().push((pid, fd));
            }
        }
    }
    holders
}

/// Every UDP socket on the host (or, with `only_pid`, those that process holds), each
/// with its first holder (pid, fd) when a process holds it. Warns, and lists none,
/// when the kernel cannot list them (see [`udp_sockets_or_warn`]).
pub fn held_udp_sockets(only_pid: Option<u32>) -> Vec<(LiveSocket, Option<(u32, i32)>)> {
    let holders = socket_holders(only_pid);
    udp_sockets_or_warn()
        .into_iter()
        .filter_map(|s| {
            let holder = holders
                .get(&u64::from(s.inode))
                .and_then(|h| h.first())
                .copied();
            (only_pid.is_none() || holder.is_some()).then_some((s, holder))
        })
        .collect()
}

/// A UDP socket that exists when tracing starts, bound or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundSocket {
    pub cookie: u64,
    pub inode: u64,
    pub family: Family,
    /// `None` while unbound.
    pub local: Option<(IpAddr, u16)>,
    /// A process and fd that hold it (the first found), when a process does.
    pub holder: Option<(u32, i32)>,
}

impl FoundSocket {
    /// The number events of this backend know the socket by (see `SocketIdentity`).
    pub fn key(&self, identity: SocketIdentity) -> u64 {
        identity.of(self.cookie, self.inode)
    }

    /// Local address and port as records print them: the family's unspecified address
    /// and port 0 while unbound.
    pub fn local_or_unspecified(&self) -> (IpAddr, u16) {
        self.local.unwrap_or(match self.family {
            Family::Inet6 => (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
            _ => (IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
        })
    }

    fn from_diag(s: LiveSocket, holder: Option<(u32, i32)>) -> Self {
        Self {
            cookie: s.cookie,
            inode: u64::from(s.inode),
            family: s.family,
            local: Some((s.local_addr, s.local_port)),
            holder,
        }
    }

    fn from_held(pid: u32, s: HeldSocket, family: Family) -> Self {
        Self {
            cookie: s.cookie,
            inode: s.inode,
            family,
            local: s.local,
            holder: Some((pid, s.fd)),
        }
    }
}

/// Every UDP socket that exists now, unbound ones included (or, with `only_pid`, those
/// that process holds). sock_diag lists the bound sockets of this network namespace;
/// the others (unbound, or in another namespace) are found through the processes'
/// fds: the socket fds whose inode sock_diag did not list and whose protocol (the
/// `system.sockprotoname` attribute of the fd) is UDP are copied in with pidfd_getfd.
/// Processes that vanish or cannot be read are skipped; this never fails.
pub fn udp_inventory(only_pid: Option<u32>) -> Vec<FoundSocket> {
    if let Some(pid) = only_pid {
        return match process::udp_sockets_among(pid, process_socket_fds(pid)) {
            Ok(held) => held
                .into_iter()
                .map(|(s, family)| FoundSocket::from_held(pid, s, family))
                .collect(),
            Err(e) => {
                crate::say!(
                    "sockscope: cannot read pid {pid}'s sockets through its fds ({e}); listing only its bound sockets in this network namespace"
                );
                held_udp_sockets(Some(pid))
                    .into_iter()
                    .map(|(s, holder)| FoundSocket::from_diag(s, holder))
                    .collect()
            }
        };
    }
    let holders = socket_holders(None);
    let diag = udp_sockets_or_warn();
    let listed: std::collections::HashSet<u64> = diag.iter().map(|s| u64::from(s.inode)).collect();
    let mut found: Vec<FoundSocket> = diag
        .into_iter()
        .map(|s| {
            let holder = holders
                .get(&u64::from(s.inode))
                .and_then(|h| h.first())
                .copied();
            FoundSocket::from_diag(s, holder)
        })
        .collect();
    // The others, by process: (inode, fd) of each UDP socket fd sock_diag did not list.
    let mut unlisted: HashMap<u32, Vec<(u64, i32)>> = HashMap::new();
    for (inode, held) in holders.iter().filter(|(i, _)| !listed.contains(i)) {
        let udp_holder = held
            .iter()
            .find(|(pid, fd)| is_udp_fd(&format!("/proc/{pid}/fd/{fd}")));
        if let Some(&(pid, fd)) = udp_holder {
            unlisted.entry(pid).or_default().push((*inode, fd));
        }
    }
    let mut unreadable = 0;
    for (pid, fds) in unlisted {
        match process::udp_sockets_among(pid, fds) {
            Ok(held) => found.extend(
                held.into_iter()
                    .map(|(s, family)| FoundSocket::from_held(pid, s, family)),
            ),
            // Gone meanwhile: its sockets are gone too.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(_) => unreadable += 1,
        }
    }
    if unreadable > 0 {
        crate::say!(
            "sockscope: the unbound UDP sockets of {unreadable} processes could not be read (no ptrace rights over them): they are not listed"
        );
    }
    found
}

/// Whether `pid` exists and has not exited (a zombie has).
pub fn process_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "PID (COMM) STATE ...": COMM may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => std::path::Path::new(&format!("/proc/{pid}")).exists(),
    }
}

/// (socket inode, fd) of every socket fd of `pid`.
fn process_socket_fds(pid: u32) -> Vec<(u64, i32)> {
    socket_holders(Some(pid))
        .into_iter()
        .flat_map(|(inode, held)| held.into_iter().map(move |(_, fd)| (inode, fd)))
        .collect()
}

/// Whether the socket behind `fd_path` (/proc/PID/fd/N) is a UDP one, from the
/// protocol name the kernel gives a socket's inode ("UDP", "UDPv6"); false when it
/// cannot be read.
fn is_udp_fd(fd_path: &str) -> bool {
    let (Ok(path), Ok(name)) = (
        std::ffi::CString::new(fd_path),
        std::ffi::CString::new("system.sockprotoname"),
    ) else {
        return false;
    };
    let mut buf = [0u8; 32];
    // SAFETY: NUL-terminated strings and a buffer valid for writes of its length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n)
        .ok()
        .and_then(|n| buf.get(..n))
        .is_some_and(|proto| proto.starts_with(b"UDP"))
}

/// The socket inode an fd of ours refers to, from /proc/self/fd.
fn socket_inode_of_fd(fd: &impl std::os::fd::AsRawFd) -> Option<u64> {
    let link = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    socket_inode(&link.to_string_lossy())
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_socket_links() {
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[1]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn tells_udp_fds_by_protocol_name() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp6 = std::net::UdpSocket::bind("[::1]:0").ok();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let path = |fd: i32| format!("/proc/self/fd/{fd}");
        use std::os::fd::AsRawFd as _;
        assert!(is_udp_fd(&path(udp.as_raw_fd())));
        if let Some(u6) = &udp6 {
            assert!(is_udp_fd(&path(u6.as_raw_fd())));
        }
        assert!(!is_udp_fd(&path(tcp.as_raw_fd())));
        assert!(!is_udp_fd("/proc/self/fd/999999"));
    }

    #[test]
    fn inventory_lists_our_unbound_socket_host_wide_and_for_our_pid() {
        // SAFETY: plain socket(2); the fd, checked, is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0) };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: a fresh fd the kernel just gave us.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let inode = socket_inode_of_fd(&sock).unwrap();
        let me = std::process::id();
        for scope in [Some(me), None] {
            let all = udp_inventory(scope);
            let s = all
                .iter()
                .find(|s| s.inode == inode)
                .unwrap_or_else(|| panic!("{scope:?}: our unbound socket is listed"));
            assert_eq!(
                (s.family, s.local, s.holder),
                (Family::Inet6, None, Some((me, fd)))
            );
            assert_eq!(
                s.local_or_unspecified(),
                (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
            );
        }
    }

    #[test]
    fn cookie_words_low_first() {
        let mut id = SocketId::new_v4();
        id.cookie = [1, 0, 0, 0, 2, 0, 0, 0];
        assert_eq!(cookie_of(&id), (2u64 << 32) | 1);
    }
}
