//! Holders of a socket, read from /proc: the `socket:[INODE]` links of every process's
//! fds, and the `tfd: ... ino:INODE` lines of the epoll fds of those processes.
use std::fs;

use crate::correlate::{EpollWatch, Holder};

fn fds(pid: u32) -> impl Iterator<Item = (i32, String)> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_default()
}

/// `tfd:        5 events:       19 data: 5  pos:0 ino:128dc sdev:9` → (5, 0x19, 0x128dc).
fn epoll_entry(line: &str) -> Option<(i32, u32, u64)> {
    let mut tfd = None;
    let mut events = None;
    let mut ino = None;
    let mut it = line.split_whitespace().peekable();
    while let Some(w) = it.next() {
        match w {
            "tfd:" => tfd = it.next().and_then(|v| v.parse().ok()),
            "events:" => events = it.next().and_then(|v| u32::from_str_radix(v, 16).ok()),
            _ => {
                if let Some(v) = w.strip_prefix("ino:") {
                    ino = u64::from_str_radix(v, 16).ok();
                }
            }
        }
    }
    Some((tfd?, events?, ino?))
}

/// Every (pid, fd) that refers to socket `inode` now, and the epoll sets of those
/// processes it is in. Processes that vanish or cannot be read meanwhile are skipped.
pub fn holders_of(inode: u64) -> (Vec<Holder>, Vec<EpollWatch>) {
    let link = format!("socket:[{inode}]");
    let pids: Vec<u32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let mut holders = Vec::new();
    let mut epolls = Vec::new();
    for pid in pids {
        let mut epoll_fds = Vec::new();
        let mut held = false;
        for (fd, target) in fds(pid) {
            if target == link {
                holders.push(Holder {
                    pid,
                    comm: comm(pid),
                    fd,
                });
                held = true;
            } else if target == "anon_inode:[eventpoll]" {
                epoll_fds.push(fd);
            }
        }
        if !held {
            continue;
        }
        for epoll_fd in epoll_fds {
            let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{epoll_fd}")) else {
                continue;
            };
            epolls.extend(
                info.lines()
                    .filter_map(epoll_entry)
                    .filter(|&(_, _, ino)| ino == inode)
                    .map(|(target_fd, events, _)| EpollWatch {
                        pid,
                        epoll_fd,
                        target_fd,
                        events,
                    }),
            );
        }
    }
    (holders, epolls)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;

    use super::*;

    #[test]
    fn parses_epoll_fdinfo_lines() {
        assert_eq!(
            epoll_entry(
                "tfd:        3 events:       19 data:                3  pos:0 ino:128dc sdev:9"
            ),
            Some((3, 0x19, 0x128dc))
        );
        assert_eq!(epoll_entry("pos:\t0"), None);
    }

    #[test]
    fn finds_every_fd_of_a_socket_and_its_epoll_set() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dup = s.try_clone().unwrap();
        let inode = fs::read_link(format!("/proc/self/fd/{}", s.as_raw_fd()))
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("socket:[")
            .trim_end_matches(']')
            .parse::<u64>()
            .unwrap();
        // SAFETY: plain syscalls on fds we own.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(ep >= 0);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        // SAFETY: valid epoll fd, socket fd and event.
        assert_eq!(
            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, dup.as_raw_fd(), &mut ev) },
            0
        );
        let (holders, epolls) = holders_of(inode);
        let me = std::process::id();
        let mut fds: Vec<i32> = holders
            .iter()
            .filter(|h| h.pid == me)
            .map(|h| h.fd)
            .collect();
        fds.sort();
        let mut want = vec![s.as_raw_fd(), dup.as_raw_fd()];
        want.sort();
        assert_eq!(fds, want);
        // The kernel adds EPOLLERR | EPOLLHUP to every registration.
        let want = (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32;
        assert_eq!(
            epolls,
            vec![EpollWatch {
                pid: me,
                epoll_fd: ep,
                target_fd: dup.as_raw_fd(),
                events: want
            }]
        );
        // SAFETY: our epoll fd.
        unsafe { libc::close(ep) };
    }
}
