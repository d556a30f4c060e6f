//! cgroup v2 and tracefs mounts. Their place differs between hosts (hybrid layouts put
//! cgroup v2 at /sys/fs/cgroup/unified), so they are looked up, never assumed.
use std::{ffi::CString, fs, io, path::PathBuf};

use crate::error::TracerError;

const TRACEFS: &str = "/sys/kernel/tracing";
const SECURITYFS: &str = "/sys/kernel/security";

/// How a needed mount was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountState {
    Present(PathBuf),
    /// It was missing and sockscope mounted it.
    Mounted(PathBuf),
}

impl MountState {
    pub fn path(&self) -> &PathBuf {
        match self {
            Self::Present(p) | Self::Mounted(p) => p,
        }
    }
}

/// Mount points of a filesystem type, from /proc/mounts.
fn mounts_of(fstype: &str) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/mounts") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_dev, dir, ty) = (fields.next()?, fields.next()?, fields.next()?);
            (ty == fstype).then(|| PathBuf::from(unescape_mount_path(dir)))
        })
        .collect()
}

/// /proc/mounts escapes spaces and such as octal (`\040`).
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|_| bytes[i] == b'\\');
        if let Some(v) = octal
            .and_then(|o| std::str::from_utf8(o).ok())
            .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 mount (the first one listed).
pub fn cgroup2_mount() -> Result<PathBuf, TracerError> {
    mounts_of("cgroup2")
        .into_iter()
        .next()
        .ok_or(TracerError::NoCgroup2)
}

fn mount(fstype: &str, target: &str) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (src, tgt, ty) = (c(fstype)?, c(target)?, c(fstype)?);
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn ensure_mounted(fstype: &'static str, path: &'static str) -> Result<MountState, TracerError> {
    if let Some(p) = mounts_of(fstype).into_iter().next() {
        return Ok(MountState::Present(p));
    }
    mount(fstype, path)
        .map(|()| MountState::Mounted(PathBuf::from(path)))
        .map_err(|source| TracerError::Mount {
            what: fstype,
            path,
            source,
        })
}

/// tracefs (tracepoint ids live there): mounted if missing.
pub fn ensure_tracefs() -> Result<MountState, TracerError> {
    ensure_mounted("tracefs", TRACEFS)
}

/// The kernel lockdown mode (`none`, `integrity`, `confidentiality`), mounting
/// securityfs if needed; `None` when the kernel has no lockdown LSM.
pub fn lockdown_mode() -> Result<Option<String>, TracerError> {
    let state = ensure_mounted("securityfs", SECURITYFS)?;
    let Ok(text) = fs::read_to_string(state.path().join("lockdown")) else {
        return Ok(None);
    };
    // The active mode is the bracketed one: "none [integrity] confidentiality".
    Ok(text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal_spaces() {
        assert_eq!(unescape_mount_path(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_path(r"/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/bad\04"), r"/bad\04");
    }
}
