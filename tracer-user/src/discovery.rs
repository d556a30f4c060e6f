//! Which processes carry sockscope markers, for a session that traces the whole host
//! (`daemon`): it judges those and ignores the rest. A process carries markers when
//! its executable or a shared object it has mapped has `sockscope` USDT notes. Objects
//! are read through `/proc/PID/root` (containers' mount namespaces) and remembered by
//! file identity, so a thousand processes of one binary cost one parse.
use std::{collections::HashMap, os::unix::fs::MetadataExt as _, path::PathBuf};

use crate::{markers::PROVIDER, markers::process_objects, stapsdt::read_notes};

/// A file, wherever it is mounted: (device, inode).
pub type FileId = (u64, u64);

#[derive(Debug, Default)]
pub struct Discovery {
    /// Whether each object seen has sockscope markers.
    objects: HashMap<FileId, bool>,
    /// Whether each process seen carries markers (until it is forgotten).
    pids: HashMap<u32, bool>,
}

impl Discovery {
    /// Whether `pid` carries markers. Objects with markers seen for the first time are
    /// added to `new_objects` (with readable paths), for the caller to attach: markers
    /// attached to an object fire in every process that maps it, now and later.
    pub fn marked(&mut self, pid: u32, new_objects: &mut Vec<(FileId, PathBuf)>) -> bool {
        if let Some(m) = self.pids.get(&pid) {
            return *m;
        }
        // A process that is gone, or not readable, carries nothing we can attach to.
        let objects = process_objects(pid).unwrap_or_default();
        let mut marked = false;
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
            marked |= has;
        }
        self.pids.insert(pid, marked);
        marked
    }

    /// The markers of object `id` could not all be attached (the process it was read
    /// through went away meanwhile): the next process that maps it hands it out again.
    pub fn retry_object(&mut self, id: FileId) {
        self.objects.remove(&id);
    }

    /// `pid` exited or executed another program: decide again when next seen.
    pub fn forget(&mut self, pid: u32) {
        self.pids.remove(&pid);
    }

    /// Whether `pid` is already known to carry markers.
    pub fn known_marked(&self, pid: u32) -> bool {
        self.pids.get(&pid).copied().unwrap_or(false)
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
