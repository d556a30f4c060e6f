//! Where a process lives, for findings that must make sense on a host full of
//! containers: its pid inside its own PID namespace, its cgroup, and the container id
//! that cgroup path shows (Docker, containerd/CRI, Podman, systemd scopes). Read once,
//! when the process is first found carrying markers, while its /proc entry exists.
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcessContext {
    /// The pid as the host sees it (and as every record's `pid` is).
    pub host_pid: u32,
    /// When it started, in clock ticks since boot (`starttime` of /proc/PID/stat, as
    /// `ps` reads it): tells it from other processes that had its pid.
    pub start_ticks: Option<u64>,
    /// The pid inside its PID namespace (the innermost); equal to `host_pid` outside
    /// containers.
    pub ns_pid: Option<u32>,
    pub comm: String,
    /// The executable as the process sees it (inside its mount namespace).
    pub exe: Option<String>,
    /// Its cgroup v2 path.
    pub cgroup: Option<String>,
    /// The container id in the cgroup path, if it has one.
    pub container_id: Option<String>,
    /// It had exited (its pid perhaps another process's already) before the daemon got
    /// to its records: only its host pid is known.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exited_before_found: bool,
}

impl ProcessContext {
    /// Reads the context of `pid` from /proc; `started` (clock ticks since boot), if
    /// known, is when the process the records are about started: what /proc shows is
    /// its own only if its start time, read after the rest, is still that.
    pub fn read(pid: u32, started: Option<u64>) -> Self {
        let ctx = Self::read_proc(pid);
        let now = crate::discovery::start_time(pid);
        if started.is_some() && now != started {
            return Self {
                host_pid: pid,
                start_ticks: started,
                exited_before_found: true,
                ..Self::default()
            };
        }
        Self {
            start_ticks: now,
            ..ctx
        }
    }

    fn read_proc(pid: u32) -> Self {
        let proc = format!("/proc/{pid}");
        let status = std::fs::read_to_string(format!("{proc}/status")).unwrap_or_default();
        let cgroups = std::fs::read_to_string(format!("{proc}/cgroup")).unwrap_or_default();
        let cgroup = cgroup_path(&cgroups);
        Self {
            host_pid: pid,
            start_ticks: None,
            ns_pid: innermost_ns_pid(&status),
            comm: std::fs::read_to_string(format!("{proc}/comm"))
                .map(|c| c.trim().to_owned())
                .unwrap_or_default(),
            exe: std::fs::read_link(Path::new(&proc).join("exe"))
                .ok()
                .map(|p| p.display().to_string()),
            container_id: cgroups
                .lines()
                .find_map(|l| container_id(l.splitn(3, ':').nth(2)?)),
            cgroup,
            exited_before_found: false,
        }
    }
}

/// The last pid of the `NSpid:` line of /proc/PID/status (its own namespace's).
fn innermost_ns_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The process's cgroup from /proc/PID/cgroup: the unified hierarchy's (`0::/path`),
/// unless that is the root and a v1 hierarchy places it somewhere (hybrid hosts,
/// where container runtimes use the v1 controllers).
fn cgroup_path(cgroup: &str) -> Option<String> {
    let entries: Vec<(&str, &str)> = cgroup
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((controllers, path))
        })
        .collect();
    let unified = entries.iter().find(|(c, _)| c.is_empty()).map(|(_, p)| *p);
    match unified {
        Some(p) if p != "/" => Some(p.to_owned()),
        _ => entries
            .iter()
            .find(|(c, p)| !c.is_empty() && *p != "/")
            .map(|(_, p)| (*p).to_owned())
            .or(unified.map(str::to_owned)),
    }
}

/// A 64-hex-digit component of the cgroup path (`docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `libpod-<id>.scope`, `/docker/<id>`, `/kubepods/.../<id>`).
fn container_id(path: &str) -> Option<String> {
    path.split('/').rev().find_map(|part| {
        let part = part.strip_suffix(".scope").unwrap_or(part);
        let id = part.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e1b2c9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

    #[test]
    fn container_ids_of_common_runtimes() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/cri-containerd-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/docker/{ID}"),
            format!("/kubepods/besteffort/pod1234/{ID}"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(ID), "{path}");
        }
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
    }

    #[test]
    fn namespace_pid_and_cgroup() {
        let status = "Name:\tx\nNSpid:\t4242\t17\t1\nPPid:\t1\n";
        assert_eq!(innermost_ns_pid(status), Some(1));
        assert_eq!(innermost_ns_pid("NSpid:\t99\n"), Some(99));
        assert_eq!(
            cgroup_path("0::/system.slice/sockscope.service\n").as_deref(),
            Some("/system.slice/sockscope.service")
        );
        // Hybrid: v2 at the root, the container placed by the v1 controllers.
        let hybrid = format!("4:memory:/docker/{ID}\n1:cpu:/docker/{ID}\n0::/\n");
        assert_eq!(cgroup_path(&hybrid), Some(format!("/docker/{ID}")));
        assert_eq!(cgroup_path("1:cpu:/\n0::/\n").as_deref(), Some("/"));
    }
}
