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
    /// Creates `<cgroup2 mount>/sockscope-<what>-<our pid>`.
    pub fn create(what: &str) -> Result<Self, TracerError> {
        let path = cgroup2_mount()?.join(format!("sockscope-{what}-{}", std::process::id()));
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
