//! `cargo xtask vm-test`: sockscope end to end on other kernels, for every backend.
//! Fetches Debian's cloud kernels (the newest 6.1 and 6.12 apt knows), builds static
//! sockscope and workloads, packs them with busybox into an initramfs whose /init
//! (`init.sh`) runs the checks (`checks.sh`), boots each kernel under QEMU TCG (KVM is
//! not usable here) with no network device, and reads the verdicts from the serial
//! console: QEMU exits 0 even when the guest panics, so only the `VMTEST` lines count.
//! The same checks run on the host, where the backends its kernel refuses must be
//! refused with exit 2 and one clear line.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{setup, util};

/// The kernels of the matrix: name, and the apt package name pattern of its newest
/// cloud build.
const KERNELS: &[(&str, &str)] = &[
    ("6.1", r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$"),
    (
        "6.12",
        r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$",
    ),
];

/// Binaries the guest runs, built static.
const GUEST_BINARIES: &[&str] = &["sockscope", "udp_workload", "pc_sim"];

/// A guest that has not powered off by then is stuck.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

/// The backends, in `sockscope`'s automatic order.
const BACKENDS: [&str; 3] = ["fentry", "cgroup", "kprobe"];

/// Checks of the kernel as a whole (backend column `auto`).
const KERNEL_CHECKS: &[&str] = &["doctor", "doctor_choice"];

/// Checks of each backend that works; one missing is a failure too.
const BACKEND_CHECKS: &[&str] = &[
    "trace_exit",
    "trace_creates",
    "trace_releases",
    "trace_paired",
    "trace_fds",
    "trace_ports",
    "trace_fixed_port_bind",
    "trace_release_stack",
    "trace_release_stack_named",
    "check_leak_exit",
    "check_leak_pc2",
    "check_leak_stack",
    "check_clean_exit",
];

/// Checks of a backend the kernel refuses.
const REFUSED_CHECKS: &[&str] = &["refused_exit", "refused_one_line"];

/// What a kernel must do: the backend `doctor` picks, those that must work.
struct Expect {
    auto: &'static str,
    working: Vec<&'static str>,
}

impl Expect {
    /// Every (backend, check) that must be reported as passed.
    fn checks(&self) -> Vec<(&'static str, &'static str)> {
        let mut all: Vec<_> = KERNEL_CHECKS.iter().map(|c| ("auto", *c)).collect();
        for b in BACKENDS {
            if self.working.contains(&b) {
                all.extend(
                    BACKEND_CHECKS
                        .iter()
                        // The cgroup backend takes no releasing stacks.
                        .filter(|c| b != "cgroup" || !c.starts_with("trace_release_stack"))
                        .map(|c| (b, *c)),
                );
            } else {
                all.extend(REFUSED_CHECKS.iter().map(|c| (b, *c)));
            }
        }
        all
    }

    /// checks.sh's arguments after the label.
    fn args(&self) -> Vec<&'static str> {
        let mut args = vec![self.auto];
        args.extend(BACKENDS.iter().filter(|b| self.working.contains(b)));
        args.push("--");
        args.extend(BACKENDS.iter().filter(|b| !self.working.contains(b)));
        args
    }
}

/// Debian's cloud kernels allow everything: lockdown none, BTF, kprobes.
fn guest_expect() -> Expect {
    Expect {
        auto: "fentry",
        working: BACKENDS.to_vec(),
    }
}

/// This host: fentry and kprobes only without lockdown and with BTF (and kprobes
/// only with the kprobe event source); cgroup always.
fn host_expect() -> Expect {
    let lockdown = fs::read_to_string("/sys/kernel/security/lockdown").unwrap_or_default();
    let locked = lockdown.contains('[') && !lockdown.contains("[none]");
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let kprobes = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    let mut working = Vec::new();
    if !locked && btf {
        working.push("fentry");
    }
    working.push("cgroup");
    if !locked && btf && kprobes {
        working.push("kprobe");
    }
    Expect {
        auto: working[0],
        working,
    }
}

pub fn run(kernel: &str) -> anyhow::Result<()> {
    let wanted: Vec<(&str, &str)> = KERNELS
        .iter()
        .copied()
        .filter(|(name, _)| kernel == "all" || kernel == *name)
        .collect();
    let host = kernel == "all" || kernel == "host";
    if wanted.is_empty() && !host {
        bail!("unknown kernel {kernel:?}: use 6.1, 6.12, host or all");
    }
    setup::run()?;
    util::require_root("cargo xtask vm-test")?;
    setup::ensure_backports_commands(&[
        ("qemu-system-x86", "qemu-system-x86_64"),
        ("busybox-static", "busybox"),
        ("cpio", "cpio"),
    ])?;
    let work = PathBuf::from("target/vm");
    fs::create_dir_all(work.join("cache")).context("cannot create target/vm")?;
    let bins = build_static(&work)?;
    let initrd = pack_initramfs(&work, &bins)?;
    let mut results = Vec::new();
    for (name, pattern) in wanted {
        let vmlinuz = fetch_kernel(&work, name, pattern)?;
        println!(
            "xtask: booting {name} ({}) under QEMU TCG",
            vmlinuz.display()
        );
        let started = Instant::now();
        let console = boot(&work, name, &vmlinuz, &initrd)?;
        let verdicts = verdicts(&console);
        if console.contains("Kernel panic") {
            eprintln!("xtask: {name}: the guest kernel panicked (see the console log)");
        }
        println!(
            "xtask: {name}: {} checks reported in {:.0} s (console: target/vm/console-{name}.log)",
            verdicts.len(),
            started.elapsed().as_secs_f64()
        );
        results.push((name.to_owned(), guest_expect(), verdicts));
    }
    if host {
        let expect = host_expect();
        let started = Instant::now();
        let console = run_on_host(&work, &bins, &expect)?;
        let verdicts = verdicts(&console);
        println!(
            "xtask: host: {} checks reported in {:.0} s (log: target/vm/console-host.log)",
            verdicts.len(),
            started.elapsed().as_secs_f64()
        );
        results.push(("host".to_owned(), expect, verdicts));
    }
    print_matrix(&results);
    let failed: Vec<String> = results
        .iter()
        .flat_map(|(k, expect, v)| {
            expect
                .checks()
                .into_iter()
                .filter(|key| v.get(key).is_none_or(|(pass, _)| !pass))
                .map(move |(b, c)| format!("{k}/{b}/{c}"))
        })
        .collect();
    if !failed.is_empty() {
        bail!("vm-test failed: {}", failed.join(", "));
    }
    println!(
        "xtask: vm-test passed on {}",
        results
            .iter()
            .map(|r| r.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// checks.sh on this machine, with the same static binaries as the guests.
fn run_on_host(work: &Path, bins: &Path, expect: &Expect) -> anyhow::Result<String> {
    let log = work.join("console-host.log");
    let path = format!(
        "{}:{}",
        fs::canonicalize(bins)?.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    println!(
        "xtask: running the checks on this host ({})",
        expect.args().join(" ")
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(include_str!("checks.sh"))
        .arg("checks.sh")
        .arg("host")
        .args(expect.args())
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run the checks on the host")?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    fs::write(&log, &text).context("cannot write the host log")?;
    Ok(text)
}

/// Static (glibc, `crt-static`) release builds of the guest's binaries, in their own
/// target directory so the host's builds are not rebuilt.
fn build_static(work: &Path) -> anyhow::Result<PathBuf> {
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

fn pack_initramfs(work: &Path, bins: &Path) -> anyhow::Result<PathBuf> {
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
fn fetch_kernel(work: &Path, name: &str, pattern: &str) -> anyhow::Result<PathBuf> {
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
fn boot(work: &Path, name: &str, vmlinuz: &Path, initrd: &Path) -> anyhow::Result<String> {
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

/// A check's key: (backend or `auto`, check).
type Key = (&'static str, &'static str);

/// `VMTEST <kernel> <backend> <check> pass|fail <detail>` lines: (backend, check) →
/// (passed, detail). Lines of unknown backends or checks are left out.
fn verdicts(console: &str) -> BTreeMap<Key, (bool, String)> {
    console
        .lines()
        .filter_map(|l| {
            let l = &l[l.find("VMTEST ")?..];
            let mut f = l.split_whitespace().skip(2);
            let (backend, check) = (f.next()?, f.next()?);
            let backend = *BACKENDS.iter().chain(&["auto"]).find(|b| **b == backend)?;
            let check = *KERNEL_CHECKS
                .iter()
                .chain(BACKEND_CHECKS)
                .chain(REFUSED_CHECKS)
                .find(|c| **c == check)?;
            let passed = f.next()? == "pass";
            Some(((backend, check), (passed, f.collect::<Vec<_>>().join(" "))))
        })
        .collect()
}

type Results = Vec<(String, Expect, BTreeMap<Key, (bool, String)>)>;

/// One row per check, one column per kernel and backend.
fn print_matrix(results: &Results) {
    let columns: Vec<(usize, &str)> = results
        .iter()
        .enumerate()
        .flat_map(|(i, _)| BACKENDS.iter().chain(&["auto"]).map(move |b| (i, *b)))
        .collect();
    let rows: Vec<&str> = KERNEL_CHECKS
        .iter()
        .chain(BACKEND_CHECKS)
        .chain(REFUSED_CHECKS)
        .copied()
        .collect();
    println!();
    let head: Vec<String> = columns
        .iter()
        .map(|(i, b)| format!("{} {b}", results[*i].0))
        .collect();
    println!("| check | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(columns.len()));
    for check in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|&(i, b)| {
                let (_, expect, v) = &results[i];
                let wanted = expect.checks().contains(&(b, check));
                match (v.get(&(b, check)), wanted) {
                    (Some((true, _)), _) => "pass".to_owned(),
                    (Some((false, detail)), _) => format!("**fail** ({detail})"),
                    (None, true) => "**not reported**".to_owned(),
                    (None, false) => "".to_owned(),
                }
            })
            .collect();
        println!("| {check} | {} |", cells.join(" | "));
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_verdicts_from_console_noise() {
        let console = "\u{1b}[2JVMTEST-BEGIN 6.1\nVMTEST 6.1.0 auto doctor pass 0\r\nnoise VMTEST 6.1.0 kprobe trace_creates fail got=0 want=6\nVMTEST 6.1.0 bogus doctor pass 0\n";
        let v = verdicts(console);
        assert_eq!(v[&("auto", "doctor")], (true, "0".to_owned()));
        assert_eq!(
            v[&("kprobe", "trace_creates")],
            (false, "got=0 want=6".to_owned())
        );
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn refused_backends_are_checked_for_refusal() {
        let e = Expect {
            auto: "cgroup",
            working: vec!["cgroup"],
        };
        assert_eq!(e.args(), ["cgroup", "cgroup", "--", "fentry", "kprobe"]);
        let checks = e.checks();
        assert!(checks.contains(&("fentry", "refused_exit")));
        assert!(checks.contains(&("cgroup", "trace_creates")));
        assert!(!checks.contains(&("cgroup", "trace_release_stack")));
        assert!(!checks.contains(&("fentry", "trace_creates")));
    }

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
