//! Which processes carry sockscope markers, for a session that traces the whole host
//! (`daemon`): it judges those and ignores the rest. A process carries markers when
//! its executable or a shared object it has mapped has `sockscope` USDT notes. Objects
//! are read through `/proc/PID/root` (containers' mount namespaces) and remembered by
//! file identity, so a thousand processes of one binary cost one parse.
use std::{collections::HashMap, os::unix::fs::MetadataExt as _, path::PathBuf};

use tracer_common::ProcessIdentity;

use crate::{
    clock::monotonic_ns, markers::PROVIDER, markers::process_objects, stapsdt::read_notes,
};

/// A file, wherever it is mounted: (device, inode).
pub type FileId = (u64, u64);

#[derive(Debug, Default)]
pub struct Discovery {
    /// Whether each object seen has sockscope markers.
    objects: HashMap<FileId, bool>,
    /// The objects with markers each process seen maps (none: it carries no
    /// markers), and its start time, until it is forgotten.
    pids: HashMap<u32, Seen>,
    /// Objects with markers: how many known processes map each, and since when none
    /// has (monotonic ns).
    users: HashMap<FileId, Users>,
    /// See [`Self::gone_before_seen`].
    gone_before_seen: u64,
}

#[derive(Debug)]
struct Seen {
    objects: Vec<FileId>,
    /// `starttime` of /proc/PID/stat (marked processes only): tells this process from a
    /// later one with its pid.
    started: Option<u64>,
}

#[derive(Debug, Default)]
struct Users {
    count: usize,
    idle_since_ns: Option<u64>,
}

impl Discovery {
    /// Whether `pid` carries markers. Objects with markers seen for the first time are
    /// added to `new_objects` (with readable paths), for the caller to attach: markers
    /// attached to an object fire in every process that maps it, now and later.
    ///
    /// `identity` (from its exec record) says which process the records are about: when
    /// /proc/PID is no longer that one (it exited before we got to its records, and
    /// its pid may be another's now), it carries markers if the program it executed is
    /// one known to, and nothing is read from /proc in its name.
    pub fn marked(
        &mut self,
        pid: u32,
        identity: Option<&ProcessIdentity>,
        new_objects: &mut Vec<(FileId, PathBuf)>,
    ) -> bool {
        if let Some(seen) = self.pids.get(&pid) {
            return !seen.objects.is_empty();
        }
        let expected = identity.and_then(start_ticks);
        // A process that is gone, or not readable, carries nothing we can attach to.
        let objects = process_objects(pid).unwrap_or_default();
        // Read after its maps: if it is still the same process, they were its own.
        let now = start_time(pid);
        let (marked, started) = if expected.is_some() && now != expected {
            let exe = identity.and_then(exe_file_id);
            let known = exe.filter(|id| self.objects.get(id) == Some(&true));
            self.gone_before_seen += 1;
            (known.into_iter().collect(), expected)
        } else {
            (self.marked_objects(objects, new_objects), now)
        };
        for id in &marked {
            let users = self.users.entry(*id).or_default();
            users.count += 1;
            users.idle_since_ns = None;
        }
        let any = !marked.is_empty();
        self.pids.insert(
            pid,
            Seen {
                objects: marked,
                // Only marked processes are checked again after lost records.
                started: started.filter(|_| any),
            },
        );
        any
    }

    /// The objects with markers among a process's mapped `objects`, each read once.
    fn marked_objects(
        &mut self,
        objects: Vec<(PathBuf, PathBuf)>,
        new_objects: &mut Vec<(FileId, PathBuf)>,
    ) -> Vec<FileId> {
        let mut marked = Vec::new();
        for (_, readable) in objects {
            let Ok(meta) = std::fs::metadata(&readable) else {
                continue;
            };
            let id = (meta.dev(), meta.ino());
            let has = match self.objects.get(&id) {
                Some(h) => *h,
                None => {
                    let h = read_notes(&readable)
                        .is_ok_and(|probes| probes.iter().any(|p| p.provider == PROVIDER));
                    self.objects.insert(id, h);
                    if h {
                        new_objects.push((id, readable));
                    }
                    h
                }
            };
            if has && !marked.contains(&id) {
                marked.push(id);
            }
        }
        marked
    }

    /// When the marked process `pid` started (clock ticks since boot, as
    /// /proc/PID/stat counts), if known: a context read from /proc later is its own
    /// only if /proc still shows this start time.
    pub fn started(&self, pid: u32) -> Option<u64> {
        self.pids.get(&pid).and_then(|s| s.started)
    }

    /// Processes that had exited (or whose pid was another's already) when first
    /// looked at; judged only if the program they executed is known to carry markers.
    pub fn gone_before_seen(&self) -> u64 {
        self.gone_before_seen
    }

    /// The markers of object `id` could not all be attached (the process it was read
    /// through went away meanwhile): the next process that maps it hands it out again.
    pub fn retry_object(&mut self, id: FileId) {
        self.objects.remove(&id);
    }

    /// `pid` exited or executed another program: decide again when next seen.
    pub fn forget(&mut self, pid: u32) {
        let objects = self
            .pids
            .remove(&pid)
            .map(|s| s.objects)
            .unwrap_or_default();
        for id in objects {
            if let Some(users) = self.users.get_mut(&id) {
                users.count = users.count.saturating_sub(1);
                if users.count == 0 {
                    users.idle_since_ns = Some(monotonic_ns());
                }
            }
        }
    }

    /// Whether `pid` is already known to carry markers.
    pub fn known_marked(&self, pid: u32) -> bool {
        self.pids.get(&pid).is_some_and(|s| !s.objects.is_empty())
    }

    /// The marked processes known alive that are not what they were: gone (`None`: its
    /// exit was not seen) or another process with its pid (`Some`). After lost
    /// records, an exit and the next exec at the same pid may both be missing.
    pub fn not_as_seen(&self) -> Vec<(u32, Option<u64>)> {
        self.pids
            .iter()
            .filter(|(_, s)| !s.objects.is_empty())
            .filter_map(|(&pid, s)| {
                let now = start_time(pid);
                match (now, s.started) {
                    (None, _) => Some((pid, None)),
                    (Some(n), Some(then)) if n != then => Some((pid, Some(n))),
                    _ => None,
                }
            })
            .collect()
    }

    /// Objects with markers that no known process has mapped for `idle_ns`: they are
    /// handed out to be released and forgotten here, so that a process that maps one
    /// later (a forked child that stayed silent, the same binary run again) finds it
    /// new and has its markers attached again.
    pub fn idle_objects(&mut self, idle_ns: u64) -> Vec<FileId> {
        let now = monotonic_ns();
        let idle: Vec<FileId> = self
            .users
            .iter()
            .filter(|(_, u)| {
                u.count == 0
                    && u.idle_since_ns
                        .is_some_and(|t| now.saturating_sub(t) >= idle_ns)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &idle {
            self.users.remove(id);
            self.objects.remove(id);
        }
        idle
    }

    /// Every process running now, as /proc lists them.
    pub fn running() -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }
}

/// The start time of an exec record's process in /proc/PID/stat's unit (clock ticks
/// since boot, the kernel's `nsec_to_clock_t`); `None` if the kernel did not say.
pub fn start_ticks(identity: &ProcessIdentity) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    (identity.start_boottime_ns != 0 && hz > 0)
        .then(|| identity.start_boottime_ns / (1_000_000_000 / hz))
}

/// The executable of an exec record's process as stat(2) names files; `None` if the
/// kernel did not say.
pub fn exe_file_id(identity: &ProcessIdentity) -> Option<FileId> {
    // The kernel's dev_t is major << 20 | minor; stat(2) encodes it otherwise.
    let (major, minor) = (identity.exe_dev >> 20, identity.exe_dev & 0xf_ffff);
    (identity.exe_ino != 0).then(|| (libc::makedev(major, minor), identity.exe_ino))
}

/// When process `pid` started (field 22 of /proc/PID/stat, in clock ticks since boot);
/// `None` if it is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The name (field 2) is in parentheses and may hold spaces and parentheses.
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name: starttime is the 20th after it.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_after_a_name_with_spaces_and_parentheses() {
        let stat =
            "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("1234 (x) S 1"), None);
        let own = start_time(std::process::id());
        assert!(own.is_some_and(|t| t > 0), "{own:?}");
    }
}
