//! The guests: static builds, the initramfs, Debian's kernels, and one boot.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{Apt, BOOT_TIMEOUT, GUEST_BINARIES, Kernel};
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

pub(super) fn copy_executable(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} into the initramfs", from.display()))?;
    make_executable(to)
}

pub(super) fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

/// The newest cloud kernel of `kernel`, downloaded (cached) and unpacked: its vmlinuz.
/// Of the newest version's packages, one already unpacked, else the first of
/// `kernel.packages` that downloads.
pub(super) fn fetch_kernel(work: &Path, kernel: &Kernel) -> anyhow::Result<PathBuf> {
    let name = kernel.name;
    let apt = AptRoot::new(work, &kernel.apt)?;
    // (version numbers, preference, package)
    let mut found: Vec<(Vec<u64>, usize, String)> = Vec::new();
    for (preference, pattern) in kernel.packages.iter().enumerate() {
        let out = apt
            .output("apt-cache", &["search", "--names-only", pattern])
            .context("apt-cache search failed")?;
        found.extend(
            out.lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(|p| (version_numbers(p), preference, p.to_owned())),
        );
    }
    let Some(newest) = found.iter().map(|f| f.0.clone()).max() else {
        bail!(
            "no Debian package for kernel {name} ({}): {}",
            kernel.packages.join(" or "),
            apt.hint()
        );
    };
    let mut candidates: Vec<&(Vec<u64>, usize, String)> =
        found.iter().filter(|f| f.0 == newest).collect();
    // One already unpacked first (no download to try again), then by preference.
    let cache = work.join("cache");
    candidates.sort_by_key(|f| (!cache.join(&f.2).join("boot").exists(), f.1));
    let mut why = Vec::new();
    for (_, _, package) in candidates {
        let unpacked = cache.join(package);
        if !unpacked.join("boot").exists() {
            println!("xtask: downloading {package}");
            let mut cmd = apt.command("apt-get");
            cmd.args(["download", "-q", package]).current_dir(&cache);
            if let Err(e) = util::run_ok(&mut cmd) {
                eprintln!("xtask: {package} did not download, trying the next package");
                why.push(format!("{package}: {e}"));
                continue;
            }
            let deb = fs::read_dir(&cache)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.extension().is_some_and(|e| e == "deb")
                        && p.file_name().is_some_and(|f| {
                            f.to_string_lossy().starts_with(&format!("{package}_"))
                        })
                })
                .with_context(|| format!("{package} was not downloaded"))?;
            util::run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
        }
        return fs::read_dir(unpacked.join("boot"))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with("vmlinuz-"))
            })
            .with_context(|| format!("no vmlinuz in {package}"));
    }
    bail!("kernel {name}: no package downloaded: {}", why.join("; "))
}

/// How apt is run for a kernel: the machine's own, or a private state for another
/// Debian release (its lists refreshed once a day).
struct AptRoot {
    /// Options that point apt at the private state; empty for the machine's own.
    options: Vec<String>,
    release: Option<&'static str>,
}

/// The private lists are refreshed when older than this (kernel packages of a
/// release are replaced by newer ones, and mirrors drop the old files).
const APT_LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

impl AptRoot {
    fn new(work: &Path, apt: &Apt) -> anyhow::Result<Self> {
        let Apt::Release(release) = *apt else {
            return Ok(Self {
                options: Vec::new(),
                release: None,
            });
        };
        let root = fs::canonicalize(work)?.join(format!("apt-{release}"));
        let lists = root.join("lists");
        for dir in [
            lists.join("partial"),
            root.join("cache/archives/partial"),
            root.join("preferences.d"),
        ] {
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Signed by the keys of Debian's archive keyring (bookworm's carries bullseye's).
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let sources = root.join("sources.list");
        fs::write(
            &sources,
            format!(
                "deb [signed-by={keyring}] http://deb.debian.org/debian {release} main\n\
                 deb [signed-by={keyring}] http://deb.debian.org/debian {release}-updates main\n\
                 deb [signed-by={keyring}] http://deb.debian.org/debian-security {release}-security main\n"
            ),
        )
        .context("cannot write the private apt sources")?;
        let options = [
            format!("Dir::Etc::SourceList={}", sources.display()),
            "Dir::Etc::SourceParts=/nonexistent".to_owned(),
            "Dir::Etc::Preferences=/nonexistent".to_owned(),
            format!(
                "Dir::Etc::PreferencesParts={}",
                root.join("preferences.d").display()
            ),
            format!("Dir::State::Lists={}", lists.display()),
            format!("Dir::Cache={}", root.join("cache").display()),
            // Package lists only: no translations, no AppStream metadata.
            "Acquire::Languages=none".to_owned(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_owned(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".to_owned(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".to_owned(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect();
        let apt = Self {
            options,
            release: Some(release),
        };
        // Our own stamp: apt dates the lists it fetches by the server's clock.
        let stamp = root.join("updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < APT_LISTS_MAX_AGE));
        if !fresh {
            println!(
                "xtask: reading Debian {release}'s package lists (private apt state in {})",
                root.display()
            );
            let mut cmd = apt.command("apt-get");
            cmd.args(["update", "-q"]);
            match util::run_ok(&mut cmd) {
                Ok(()) => fs::write(&stamp, "").context("cannot write the apt lists' stamp")?,
                // Lists read before still name the packages (cached, or still there).
                Err(e) if stamp.exists() => {
                    eprintln!("xtask: {e}; using the {release} package lists read before");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(apt)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(&self.options);
        cmd
    }

    fn output(&self, program: &str, args: &[&str]) -> Option<String> {
        let out = self.command(program).args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn hint(&self) -> String {
        match self.release {
            None => "is bookworm-backports in the apt sources?".to_owned(),
            Some(r) => format!("does deb.debian.org still carry {r} (else archive.debian.org)?"),
        }
    }
}

/// The numbers in a package name, to order versions by (6.12.9 < 6.12.117).
fn version_numbers(package: &str) -> Vec<u64> {
    package
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Boots `vmlinuz` with the initramfs; the serial console's text. `checks` are
/// checks.sh's arguments after the label (this kernel's expectations): /init gets them
/// from the kernel command line (`vmtest_args`, comma-separated; the kernel passes such
/// parameters to init as environment variables).
pub(super) fn boot(
    work: &Path,
    name: &str,
    vmlinuz: &Path,
    initrd: &Path,
    checks: &[&str],
) -> anyhow::Result<String> {
    let log = work.join(format!("console-{name}.log"));
    boot_qemu(&Qemu {
        name,
        vmlinuz,
        initrd,
        append: &format!(
            "console=ttyS0 panic=-1 quiet vmtest_args={}",
            checks.join(",")
        ),
        memory_mb: 1024,
        console: &log,
        second_serial: None,
        timeout: BOOT_TIMEOUT,
    })?;
    let bytes = fs::read(&log).context("cannot read the console log")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// One QEMU run (TCG, 2 CPUs, no network device: the guest has only its loopback).
pub(super) struct Qemu<'a> {
    pub name: &'a str,
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    /// The kernel command line.
    pub append: &'a str,
    pub memory_mb: u32,
    /// Where the first serial port (the console, ttyS0) and QEMU's own messages go.
    pub console: &'a Path,
    /// A file the guest's second serial port (ttyS1) writes to.
    pub second_serial: Option<&'a Path>,
    /// A guest that has not powered off by then is stuck: killed.
    pub timeout: Duration,
}

/// Runs the guest until it powers off (or its time is up).
pub(super) fn boot_qemu(q: &Qemu) -> anyhow::Result<()> {
    let console = fs::File::create(q.console).context("cannot create the console log")?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-smp", "2", "-nographic", "-no-reboot"])
        .args(["-m", &q.memory_mb.to_string()])
        .arg("-kernel")
        .arg(q.vmlinuz)
        .arg("-initrd")
        .arg(q.initrd)
        .arg("-append")
        .arg(q.append)
        .args(["-nic", "none"]);
    if let Some(file) = q.second_serial {
        // Both ports named: ttyS0 stays on stdio (the console log), ttyS1 to the file.
        cmd.args(["-serial", "mon:stdio", "-serial"])
            .arg(format!("file:{}", file.display()));
    }
    let mut child = cmd
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
        if started.elapsed() > q.timeout {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "xtask: {}: the guest did not power off within {:?}",
                q.name, q.timeout
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
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
        p.sort_by_key(|p| version_numbers(p));
        assert_eq!(p[1], "linux-image-6.12.117+deb12-cloud-amd64-unsigned");
        // The signed package of a version counts as the same version.
        assert_eq!(
            version_numbers("linux-image-5.10.0-46-cloud-amd64"),
            version_numbers("linux-image-5.10.0-46-cloud-amd64-unsigned")
        );
    }
}
