//! A cgroup v2 of sockscope's own for a command it runs: the cgroup hooks attach to
//! it alone, so the command and all its descendants are traced and the rest of the
//! host pays nothing. Removed when dropped (once it is empty).
use std::{
    fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

use super::mounts::cgroup2_mount;
use crate::error::TracerError;

#[derive(Debug)]
pub struct ScopedCgroup {
    path: PathBuf,
}

impl ScopedCgroup {
    /// Creates `<cgroup2 mount>/sockscope-<what>-<our pid>`, after removing the empty
    /// ones earlier runs left behind (see [`remove_leftovers`]).
    pub fn create(what: &str) -> Result<Self, TracerError> {
        let mount = cgroup2_mount()?;
        remove_leftovers(&mount, what);
        let path = mount.join(format!("sockscope-{what}-{}", std::process::id()));
        match fs::create_dir(&path) {
            Ok(()) => Ok(Self { path }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Self { path }),
            Err(source) => Err(TracerError::OpenCgroup { path, source }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `cgroup.procs` file: writing "0" to it moves the writing process in.
    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// Processes still in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        fs::read_to_string(self.procs_file())
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

/// A run killed by SIGKILL (or a machine's OOM killer) cannot remove its cgroup: the
/// next run removes those of dead runs (no live process has the pid in their name) once
/// they are empty. One with processes still in it is left alone: they are someone's.
fn remove_leftovers(mount: &Path, what: &str) {
    let prefix = format!("sockscope-{what}-");
    let Ok(dir) = fs::read_dir(mount) else {
        return;
    };
    let mut removed = Vec::new();
    for entry in dir.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if fs::remove_dir(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    if !removed.is_empty() {
        crate::say!(
            "sockscope: removed {} empty cgroup(s) left by runs that were killed: {}",
            removed.len(),
            removed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

impl Drop for ScopedCgroup {
    fn drop(&mut self) {
        // A cgroup can be removed only when empty; exiting processes leave it shortly
        // after they are reaped.
        for _ in 0..50 {
            match fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        crate::say!(
            "sockscope: cgroup {} still has processes ({:?}); left in place",
            self.path.display(),
            self.pids()
        );
    }
}
