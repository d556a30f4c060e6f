//! USDT probes (SystemTap SDT notes) read from ELF files: how sockscope finds the
//! markers of `tracer-usdt` (or any provider) without libbpf, which aya lacks.
mod argspec;
mod note;

use std::path::{Path, PathBuf};

pub use argspec::{ArgKind, ArgSpec, X86Reg, parse_arg, parse_args};
pub use note::{UsdtProbe, read_notes, read_notes_from_bytes};

#[derive(Debug, thiserror::Error)]
pub enum UsdtError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not an ELF binary or shared object", path.as_deref().map_or("input".into(), |p| p.display().to_string()))]
    NotElf { path: Option<PathBuf> },
    #[error("malformed .note.stapsdt in {}: {reason}", path.as_deref().map_or("input".into(), |p| p.display().to_string()))]
    MalformedNote {
        path: Option<PathBuf>,
        reason: String,
    },
    #[error("bad USDT argument spec {spec:?}: {reason}")]
    BadArgSpec { spec: String, reason: String },
    #[error("unsupported USDT argument spec {spec:?}: {reason}")]
    UnsupportedArg { spec: String, reason: String },
}

impl UsdtError {
    /// Names the file in errors found while parsing its bytes.
    fn with_path(self, p: &Path) -> Self {
        match self {
            Self::NotElf { path: None } => Self::NotElf {
                path: Some(p.to_owned()),
            },
            Self::MalformedNote { path: None, reason } => Self::MalformedNote {
                path: Some(p.to_owned()),
                reason,
            },
            other => other,
        }
    }
}
