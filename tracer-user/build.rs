use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Set in the child run of this script that does the actual BPF build.
const CHILD: &str = "SOCKSCOPE_BPF_BUILD_CHILD";

/// Builds `tracer-ebpf` for the BPF target with the nightly toolchain (installed by
/// `cargo xtask setup`) through aya-build; the object is embedded with
/// `include_bytes_aligned!`.
///
/// aya-build forwards every progress line of the inner cargo as `cargo:warning=`, and
/// cargo replays those on every later build: dozens of fake warnings that would bury
/// real ones. So this script runs aya-build in a child copy of itself and passes on
/// everything but the progress lines.
fn main() -> anyhow::Result<()> {
    if std::env::var_os(CHILD).is_some() {
        return build_bpf();
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let mut child = Command::new(exe)
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot re-run the build script")?;
    let stdout = child.stdout.take().context("child stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the BPF build output")?;
        if !is_progress(&line) {
            println!("{line}");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(anyhow!(
            "building the BPF programs failed ({status}); see the warnings above"
        ));
    }
    Ok(())
}

fn is_progress(line: &str) -> bool {
    const PROGRESS: [&str; 9] = [
        "Compiling",
        "Finished",
        "Downloaded",
        "Downloading",
        "Updating",
        "Locking",
        "Adding",
        "Blocking",
        "Fresh",
    ];
    line.strip_prefix("cargo:warning=")
        .map(str::trim_start)
        .is_some_and(|rest| rest.is_empty() || PROGRESS.iter().any(|p| rest.starts_with(p)))
}

fn build_bpf() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "tracer-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}
