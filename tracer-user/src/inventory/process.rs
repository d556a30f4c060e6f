//! The UDP sockets one process holds, read through its own file descriptors: each
//! socket fd is copied into sockscope (`pidfd_getfd`) and asked for its cookie and
//! local address. Unlike sock_diag this sees sockets in other network namespaces
//! (containers, a program that unshared its netns) and unbound ones, and gives the
//! same cookies the BPF hooks see. Needs Linux 5.6 and ptrace rights over the process
//! (root has them).
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::{socket_holders, socket_inode_of_fd};
use crate::{backend::SocketIdentity, events::Family};

/// A UDP socket held by a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldSocket {
    pub fd: i32,
    pub inode: u64,
    pub cookie: u64,
    /// `None` while unbound.
    pub local: Option<(IpAddr, u16)>,
}

impl HeldSocket {
    /// The number events of this backend know the socket by (see `SocketIdentity`).
    pub fn key(&self, identity: SocketIdentity) -> u64 {
        identity.of(self.cookie, self.inode)
    }
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A pidfd for `pid`: pollable, readable once the process has exited.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is owned by us.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) })?;
    // SAFETY: a fresh fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_getfd(pidfd: &OwnedFd, target_fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is owned by us.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) })?;
    // SAFETY: a fresh fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn sockopt<T: Copy + Default>(fd: &OwnedFd, level: i32, name: i32) -> io::Result<T> {
    let mut value = T::default();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of `size_of::<T>()` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    check(rc.into())?;
    Ok(value)
}

fn local_addr(fd: &OwnedFd) -> io::Result<Option<(IpAddr, u16)>> {
    // SAFETY: zeroed sockaddr_storage is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` and `len` are valid for writes of the size given.
    let rc = unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut ss).cast(), &mut len) };
    check(rc.into())?;
    let local = match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let a: libc::sockaddr_in = unsafe { *(&raw const ss).cast() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            (IpAddr::V4(ip), u16::from_be(a.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let a: libc::sockaddr_in6 = unsafe { *(&raw const ss).cast() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            (IpAddr::V6(ip), u16::from_be(a.sin6_port))
        }
        _ => return Ok(None),
    };
    Ok((local.1 != 0).then_some(local))
}

/// The UDP sockets `pid` holds now, one entry per socket (the lowest fd when it is
/// held twice). Fails when the process cannot be read this way (it is gone, the
/// kernel predates pidfd_getfd, or no ptrace rights): use sock_diag then.
pub fn udp_sockets_of(pid: u32) -> io::Result<Vec<HeldSocket>> {
    let fds: Vec<(u64, i32)> = socket_holders(Some(pid))
        .into_iter()
        .flat_map(|(inode, held)| held.into_iter().map(move |(_, fd)| (inode, fd)))
        .collect();
    Ok(udp_sockets_among(pid, fds)?
        .into_iter()
        .map(|(s, _)| s)
        .collect())
}

/// Which of `fds` of `pid`, given as (socket inode, fd) pairs read from /proc/PID/fd,
/// are UDP sockets, with their family; one entry per inode (its lowest fd). Fails as
/// [`udp_sockets_of`] does.
pub(super) fn udp_sockets_among(
    pid: u32,
    mut fds: Vec<(u64, i32)>,
) -> io::Result<Vec<(HeldSocket, Family)>> {
    let pidfd = pidfd_open(pid)?;
    fds.sort_by_key(|&(inode, fd)| (inode, fd));
    fds.dedup_by_key(|(inode, _)| *inode);
    let mut out = Vec::new();
    let mut first_error = None;
    for (inode, fd) in fds {
        let copy = match pidfd_getfd(&pidfd, fd) {
            Ok(c) => c,
            // Closed meanwhile: nothing to list.
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => continue,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        // The fd may have been reused for another file since /proc was read.
        if socket_inode_of_fd(&copy) != Some(inode) {
            continue;
        }
        let udp = sockopt::<i32>(&copy, libc::SOL_SOCKET, libc::SO_PROTOCOL)
            .is_ok_and(|p| p == libc::IPPROTO_UDP);
        let family = match sockopt::<i32>(&copy, libc::SOL_SOCKET, libc::SO_DOMAIN) {
            Ok(libc::AF_INET) => Family::Inet,
            Ok(libc::AF_INET6) => Family::Inet6,
            _ => continue,
        };
        if !udp {
            continue;
        }
        let Ok(cookie) = sockopt::<u64>(&copy, libc::SOL_SOCKET, libc::SO_COOKIE) else {
            continue;
        };
        let held = HeldSocket {
            fd,
            inode,
            cookie,
            local: local_addr(&copy).unwrap_or(None),
        };
        out.push((held, family));
    }
    match (out.is_empty(), first_error) {
        (true, Some(e)) => Err(e),
        _ => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_our_own_udp_sockets_with_cookie_and_port() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mine = udp_sockets_of(std::process::id()).unwrap();
        let s = mine
            .iter()
            .find(|s| s.fd == a.as_raw_fd())
            .expect("the bound UDP socket is listed");
        assert_eq!(s.local, Some((IpAddr::V4(Ipv4Addr::LOCALHOST), port)));
        // The kernel's own word on the cookie: sock_diag, looked up by port.
        let diag = super::super::udp_sockets().unwrap();
        let listed = diag.iter().find(|d| d.local_port == port).unwrap();
        assert_eq!(s.cookie, listed.cookie);
        assert_eq!(s.inode, u64::from(listed.inode));
        assert!(
            mine.iter().all(|s| s.fd != tcp.as_raw_fd()),
            "TCP is left out"
        );
    }

    #[test]
    fn lists_unbound_sockets_with_their_family() {
        let socket = |domain| {
            // SAFETY: plain socket(2); the fd, checked, is owned from here on.
            let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM, 0) };
            assert!(fd >= 0, "{}", io::Error::last_os_error());
            // SAFETY: a fresh fd the kernel just gave us.
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        let (v4, v6) = (socket(libc::AF_INET), socket(libc::AF_INET6));
        let fds = [v4.as_raw_fd(), v6.as_raw_fd()]
            .map(|fd| (socket_inode_of_fd(&fd).unwrap(), fd))
            .to_vec();
        let found = udp_sockets_among(std::process::id(), fds).unwrap();
        type Seen = (i32, Family, Option<(IpAddr, u16)>);
        let mut got: Vec<Seen> = found.iter().map(|(s, f)| (s.fd, *f, s.local)).collect();
        got.sort_by_key(|g| g.0);
        let mut want: Vec<Seen> = vec![
            (v4.as_raw_fd(), Family::Inet, None),
            (v6.as_raw_fd(), Family::Inet6, None),
        ];
        want.sort_by_key(|w| w.0);
        assert_eq!(got, want);
        assert!(found.iter().all(|(s, _)| s.cookie != 0));
    }
}
