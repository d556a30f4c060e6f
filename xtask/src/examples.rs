//! The webrtc-rs examples that are cargo workspaces of their own, each with its own
//! lockfile (webrtc-rs 0.21; the legacy example locked at 0.17.1, before the mDNS fix).
//! They are built in release into one target directory that outlives the clone: CI runs
//! every submission in a fresh clone on the same machine, and rebuilding webrtc-rs each
//! time would cost minutes. Their binaries are copied to `target/examples/`, where the
//! tests (`SOCKSCOPE_EXAMPLES`) and the demo find them.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::util;

pub struct Example {
    /// The binary's name.
    pub bin: &'static str,
    manifest: &'static str,
    features: &'static str,
}

pub const EXAMPLES: [Example; 2] = [
    Example {
        bin: "webrtc21-proxy",
        manifest: "examples/webrtc21-proxy/Cargo.toml",
        features: "tokio,smol",
    },
    Example {
        bin: "webrtc-proxy-0171",
        manifest: "examples/webrtc-proxy-0.17.1/Cargo.toml",
        features: "",
    },
];

/// Where the examples are compiled: `SOCKSCOPE_BUILD_CACHE`, else a directory under
/// /var/cache (kept across clones), else under target/.
fn build_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SOCKSCOPE_BUILD_CACHE") {
        return PathBuf::from(dir);
    }
    let shared = PathBuf::from("/var/cache/sockscope/examples-target");
    if std::fs::create_dir_all(&shared).is_ok() {
        shared
    } else {
        PathBuf::from("target/examples-build")
    }
}

/// Where the binaries are copied, absolute (for `SOCKSCOPE_EXAMPLES`).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_dir()?.join("target/examples"))
}

/// Builds every example (release, with the committed lockfiles as they are) and copies
/// its binary to [`bin_dir`].
pub fn build_all() -> anyhow::Result<PathBuf> {
    let target = build_dir();
    let bins = bin_dir()?;
    std::fs::create_dir_all(&bins).with_context(|| format!("cannot create {}", bins.display()))?;
    for e in &EXAMPLES {
        println!(
            "xtask: building {} ({}; the first build takes a few minutes, later ones reuse {})",
            e.bin,
            e.manifest,
            target.display()
        );
        let target_arg = target.to_string_lossy().into_owned();
        let mut args = vec![
            "build",
            "--release",
            "--locked",
            "--manifest-path",
            e.manifest,
            "--target-dir",
            &target_arg,
        ];
        if !e.features.is_empty() {
            args.extend(["--features", e.features]);
        }
        util::cargo(&args)?;
        copy(&target.join("release").join(e.bin), &bins.join(e.bin))?;
    }
    Ok(bins)
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    // Replace rather than overwrite: a running copy of the old binary keeps its inode.
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}
