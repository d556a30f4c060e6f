//! The webrtc-rs examples that are cargo workspaces of their own, each with its own
//! lockfile (webrtc-rs 0.21; the legacy example locked at 0.17.1, before the mDNS fix).
//! They are built in release into one target directory that outlives the clone: CI runs
//! every submission in a fresh clone on the same machine, and rebuilding webrtc-rs each
//! time would cost minutes. Their binaries are copied to `target/examples/`, where the
//! tests (`SOCKSCOPE_EXAMPLES`) and the demo find them.
//!
//! The 0.21 example is built once more without frame pointers (as release builds are by
//! default), into a target directory of its own under the same cache, for the DWARF
//! unwinding test that compares its creating stacks with the frame-pointer build's
//! (`target/examples/nofp/`).
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

/// The example built a second time, without frame pointers (see the module doc).
pub const NOFP_EXAMPLE: &str = "webrtc21-proxy";

/// Builds [`NOFP_EXAMPLE`] in release without frame pointers (the root
/// `.cargo/config.toml` forces them on; `CARGO_ENCODED_RUSTFLAGS` overrides it, with the
/// same features and lockfile as [`build_all`]) and copies it to `nofp/` under
/// [`bin_dir`].
pub fn build_without_frame_pointers() -> anyhow::Result<()> {
    let Some(e) = EXAMPLES.iter().find(|e| e.bin == NOFP_EXAMPLE) else {
        anyhow::bail!("{NOFP_EXAMPLE} is not among the examples");
    };
    // A directory of its own: other rustflags in the same one would rebuild both
    // variants each time.
    let target = build_dir().join("nofp");
    let bins = bin_dir()?.join("nofp");
    std::fs::create_dir_all(&bins).with_context(|| format!("cannot create {}", bins.display()))?;
    println!(
        "xtask: building {} without frame pointers (into {})",
        e.bin,
        target.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--manifest-path",
        e.manifest,
    ])
    .arg("--target-dir")
    .arg(&target)
    .env("CARGO_ENCODED_RUSTFLAGS", "-Cforce-frame-pointers=no")
    .env_remove("RUSTFLAGS");
    if !e.features.is_empty() {
        cmd.args(["--features", e.features]);
    }
    util::run_ok(&mut cmd)?;
    copy(&target.join("release").join(e.bin), &bins.join(e.bin))
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    // Replace rather than overwrite: a running copy of the old binary keeps its inode.
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}
