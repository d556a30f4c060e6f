//! A traced process's executable mappings, read from `/proc/PID/maps` while it lives
//! and kept after it exits, with the objects opened through `/proc/PID/map_files`
//! (the very file mapped, also in another mount namespace or after it was replaced).
use std::{
    collections::HashMap, fs::File, os::unix::fs::MetadataExt as _, path::PathBuf, sync::Arc,
};

use framehop::{MayAllocateDuringUnwind, Unwinder as _};

use super::object::{Bytes, ObjectCfi};
use crate::symbolize::ObjectFile;

/// An object file as the unwinder and the symbolizer use it.
#[derive(Debug)]
pub struct Object {
    pub cfi: Result<ObjectCfi, String>,
    /// Kept open for naming frames later (see `crate::symbolize`).
    pub file: Arc<ObjectFile>,
    pub key: (u64, u64),
}

/// Objects by file identity (device, inode), shared by every process.
#[derive(Default)]
pub struct Objects {
    by_key: HashMap<(u64, u64), Arc<Object>>,
}

impl Objects {
    /// The object mapped at `map_file`, read once per file identity.
    fn open(&mut self, map_file: &std::path::Path, shown: &str) -> Option<Arc<Object>> {
        let file = File::open(map_file).ok()?;
        let meta = file.metadata().ok()?;
        let key = (meta.dev(), meta.ino());
        if let Some(known) = self.by_key.get(&key) {
            return Some(Arc::clone(known));
        }
        let cfi = ObjectCfi::read(&file, shown.to_owned());
        let object = Arc::new(Object {
            cfi,
            file: Arc::new(ObjectFile::new(file, shown.to_owned())),
            key,
        });
        self.by_key.insert(key, Arc::clone(&object));
        Some(object)
    }

    /// Drops objects no process uses any more.
    pub fn prune(&mut self) {
        self.by_key.retain(|_, o| Arc::strong_count(o) > 1);
    }
}

/// One executable mapping of an object.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub object: Arc<Object>,
}

impl Mapping {
    /// Where the object's stated address 0 is in the process.
    fn base_avma(&self) -> Option<u64> {
        let cfi = self.object.cfi.as_ref().ok()?;
        let seg = cfi.segment_for(self.offset, self.end - self.start)?;
        // svma s is at file offset s - vaddr + seg.offset, mapped at
        // start + (that - self.offset).
        self.start
            .checked_add(seg.offset)?
            .checked_sub(self.offset)?
            .checked_sub(seg.vaddr)
    }
}

pub type Unwinder = framehop::UnwinderNative<Bytes, MayAllocateDuringUnwind>;

/// A process's executable mappings and the framehop unwinder over them.
pub struct ProcessMaps {
    pub pid: u32,
    pub mappings: Vec<Mapping>,
    pub unwinder: Unwinder,
    /// Identity of its main executable (`/proc/PID/exe`).
    pub exe: Option<(u64, u64)>,
}

impl ProcessMaps {
    /// Reads the process's maps now; `None` if it is gone (or unreadable).
    pub fn read(pid: u32, objects: &mut Objects) -> Option<Self> {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let mut mappings = Vec::new();
        for line in maps.lines() {
            let Some(m) = parse_line(line) else {
                continue;
            };
            let map_file = PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.0, m.1));
            let Some(object) = objects.open(&map_file, m.3) else {
                continue;
            };
            mappings.push(Mapping {
                start: m.0,
                end: m.1,
                offset: m.2,
                object,
            });
        }
        if mappings.is_empty() {
            // A process that is gone reads as an empty map.
            return None;
        }
        mappings.sort_by_key(|m| m.start);
        let mut unwinder = Unwinder::new();
        for m in &mappings {
            let (Ok(cfi), Some(base)) = (&m.object.cfi, m.base_avma()) else {
                continue;
            };
            unwinder.add_module(cfi.module(m.start..m.end, base));
        }
        let exe = std::fs::metadata(format!("/proc/{pid}/exe"))
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Some(Self {
            pid,
            mappings,
            unwinder,
            exe,
        })
    }

    /// The mapping holding `addr`.
    pub fn mapping(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        let m = self.mappings.get(i.checked_sub(1)?)?;
        (addr < m.end).then_some(m)
    }

    /// The main executable, if it is mapped.
    pub fn exe_object(&self) -> Option<&Arc<Object>> {
        let exe = self.exe?;
        self.mappings
            .iter()
            .map(|m| &m.object)
            .find(|o| o.key == exe)
    }

    /// The object's stated address of `addr` (for the CFI coverage check).
    pub fn svma(&self, m: &Mapping, addr: u64) -> Option<u64> {
        addr.checked_sub(m.base_avma()?)
    }
}

/// `start end offset path` of an executable, file-backed line of /proc/PID/maps.
fn parse_line(line: &str) -> Option<(u64, u64, u64, &str)> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let _dev = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next()?;
    if !perms.contains('x') || inode == "0" || !path.starts_with('/') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    Some((
        u64::from_str_radix(start, 16).ok()?,
        u64::from_str_radix(end, 16).ok()?,
        u64::from_str_radix(offset, 16).ok()?,
        // Paths with spaces keep their first word only: the path is for display, the
        // file is opened through map_files.
        path,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_executable_file_mappings_only() {
        assert_eq!(
            parse_line("7f00-7f80 r-xp 00001000 08:01 1234 /usr/lib/libc.so.6"),
            Some((0x7f00, 0x7f80, 0x1000, "/usr/lib/libc.so.6"))
        );
        assert_eq!(
            parse_line("7f00-7f80 r--p 00000000 08:01 1234 /usr/lib/libc.so.6"),
            None
        );
        assert_eq!(parse_line("7ffd-7fff r-xp 00000000 00:00 0 [vdso]"), None);
        assert_eq!(parse_line("garbage"), None);
    }
}
