//! The same Rust program built twice in release, with and without frame pointers, for
//! the DWARF unwinding tests (tracer-user/tests/unwind.rs) and benchmarks: `pc_sim`
//! (workloads), which creates its sockets on a worker thread inside a PeerConnection's
//! span and leaks on demand. The root `.cargo/config.toml` forces frame pointers on
//! everything; `CARGO_ENCODED_RUSTFLAGS` overrides it here. Each build has a target
//! directory of its own under /var/cache/sockscope (kept across clones, like the
//! examples'), so a rerun costs seconds. The binaries go to `target/unwind/{fp,nofp}/`
//! (`SOCKSCOPE_UNWIND_BINS`).
use std::path::PathBuf;

use anyhow::Context as _;

use crate::util;

/// (directory name, rustflags).
const VARIANTS: [(&str, &str); 2] = [
    ("fp", "-Cforce-frame-pointers=yes"),
    ("nofp", "-Cforce-frame-pointers=no"),
];

const BINS: [&str; 1] = ["pc_sim"];

fn cache_dir() -> PathBuf {
    let shared = PathBuf::from("/var/cache/sockscope/unwind-target");
    if std::fs::create_dir_all(&shared).is_ok() {
        shared
    } else {
        PathBuf::from("target/unwind-build")
    }
}

/// Builds both variants; returns the directory that holds `fp/` and `nofp/`.
pub fn build() -> anyhow::Result<PathBuf> {
    let out = std::env::current_dir()?.join("target/unwind");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for (name, flags) in VARIANTS {
        let target = cache_dir().join(name);
        println!(
            "xtask: building pc_sim in release {} frame pointers (into {})",
            if name == "fp" { "with" } else { "without" },
            target.display()
        );
        let mut cmd = std::process::Command::new(&cargo);
        cmd.args(["build", "--release", "--locked", "-p", "workloads"])
            .arg("--target-dir")
            .arg(&target)
            .env("CARGO_ENCODED_RUSTFLAGS", flags)
            .env_remove("RUSTFLAGS");
        for bin in BINS {
            cmd.args(["--bin", bin]);
        }
        util::run_ok(&mut cmd)?;
        let dir = out.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for bin in BINS {
            let to = dir.join(bin);
            // Replace rather than overwrite: a running copy keeps its inode.
            let _ = std::fs::remove_file(&to);
            std::fs::copy(target.join("release").join(bin), &to)
                .with_context(|| format!("cannot copy {bin} to {}", to.display()))?;
        }
    }
    Ok(out)
}
