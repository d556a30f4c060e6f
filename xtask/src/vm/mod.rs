//! `cargo xtask vm-test`: sockscope end to end on other kernels, for every backend.
//! Fetches Debian's cloud kernels (the newest 6.1 and 6.12 apt knows), builds static
//! sockscope and workloads, packs them with busybox into an initramfs whose /init
//! (`init.sh`) runs the checks (`checks.sh`), boots each kernel under QEMU TCG (KVM is
//! not usable here) with no network device, and reads the verdicts from the serial
//! console: QEMU exits 0 even when the guest panics, so only the `VMTEST` lines count.
//! The same checks run on the host, where the backends its kernel refuses must be
//! refused with exit 2 and one clear line.
mod guest;
mod matrix;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{setup, util};
use guest::{boot, build_static, fetch_kernel, pack_initramfs};
use matrix::{Expect, failures, guest_expect, host_expect, print_matrix, verdicts};

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
    let failed = failures(&results);
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
