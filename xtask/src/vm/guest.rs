//! The guests: static builds, the initramfs, Debian's kernels, and one boot.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{BOOT_TIMEOUT, GUEST_BINARIES};
use crate::util;

/// Static (glibc, `crt-static`) release builds of the guest's binaries, in their own
/// target directory so the host's builds are not rebuilt.
pub(super) fn build_static(work: &Path) -> anyhow::Result<PathBuf> {
    let target_dir = work.join("static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "x86_64-unknown-linux-gnu"])
        .args(["-p", "tracer-user", "-p", "workloads", "--bins"])
        .arg("--target-dir")
        .arg(&target_dir)
        // With an explicit --target these flags reach only the guest binaries, not
        // build scripts (nor the BPF build, which sets its own).
        .env(
            "RUSTFLAGS",
            "-C force-frame-pointers=yes -C target-feature=+crt-static",
        );
    util::run_ok(&mut cmd)?;
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release"))
}

pub(super) fn pack_initramfs(work: &Path, bins: &Path) -> anyhow::Result<PathBuf> {
    let root = work.join("root");
    if root.exists() {
        fs::remove_dir_all(&root).context("cannot clear target/vm/root")?;
    }
    for dir in ["bin", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(root.join(dir)).context("cannot make the initramfs tree")?;
    }
    let busybox = util::output("which", &["busybox"]).context("busybox not found")?;
    copy_executable(Path::new(busybox.trim()), &root.join("bin/busybox"))?;
    for bin in GUEST_BINARIES {
        copy_executable(&bins.join(bin), &root.join("bin").join(bin))?;
    }
    fs::write(root.join("init"), include_str!("init.sh")).context("cannot write /init")?;
    fs::write(root.join("checks.sh"), include_str!("checks.sh"))
        .context("cannot write /checks.sh")?;
    make_executable(&root.join("init"))?;
    // Absolute: cpio runs inside the tree.
    let initrd = fs::canonicalize(work)?.join("initrd.cpio");
    let script = format!(
        "cd {} && find . | cpio -o -H newc -R 0:0 --quiet > {}",
        root.display(),
        initrd.display()
    );
    util::run_ok(Command::new("sh").args(["-c", &script]))?;
    Ok(initrd)
}

fn copy_executable(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} into the initramfs", from.display()))?;
    make_executable(to)
}

fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

/// The newest cloud kernel package matching `pattern`, downloaded (cached) and
/// unpacked: its vmlinuz.
pub(super) fn fetch_kernel(work: &Path, name: &str, pattern: &str) -> anyhow::Result<PathBuf> {
    let found = util::output("apt-cache", &["search", "--names-only", pattern])
        .context("apt-cache search failed")?;
    let mut packages: Vec<&str> = found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    packages.sort_by(|a, b| version_order(a, b));
    let Some(package) = packages.last() else {
        bail!(
            "no Debian package for kernel {name} ({pattern}): is bookworm-backports in the apt sources?"
        );
    };
    let cache = work.join("cache");
    let unpacked = cache.join(package);
    if !unpacked.join("boot").exists() {
        println!("xtask: downloading {package}");
        util::run_ok(
            Command::new("apt-get")
                .args(["download", "-q", package])
                .current_dir(&cache),
        )?;
        let deb = fs::read_dir(&cache)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.extension().is_some_and(|e| e == "deb")
                    && p.file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{package}_")))
            })
            .with_context(|| format!("{package} was not downloaded"))?;
        util::run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    }
    fs::read_dir(unpacked.join("boot"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz in {package}"))
}

/// Orders package names by the numbers in them (6.12.9 < 6.12.117).
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let numbers = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    numbers(a).cmp(&numbers(b))
}

/// Boots `vmlinuz` with the initramfs; the serial console's text.
pub(super) fn boot(
    work: &Path,
    name: &str,
    vmlinuz: &Path,
    initrd: &Path,
) -> anyhow::Result<String> {
    let log = work.join(format!("console-{name}.log"));
    let console = fs::File::create(&log).context("cannot create the console log")?;
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        // No network device at all: the guest has only its loopback.
        .args(["-nic", "none"])
        .stdin(std::process::Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("xtask: {name}: the guest did not power off within {BOOT_TIMEOUT:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let bytes = fs::read(&log).context("cannot read the console log")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_kernel_by_numbers() {
        let mut p = [
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.9+deb12-cloud-amd64-unsigned",
        ];
        p.sort_by(|a, b| version_order(a, b));
        assert_eq!(p[1], "linux-image-6.12.117+deb12-cloud-amd64-unsigned");
    }
}
