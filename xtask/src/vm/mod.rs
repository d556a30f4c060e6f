//! `cargo xtask vm-test`: sockscope end to end on other kernels, for every backend.
//! Fetches Debian's cloud kernels (the newest 5.10, 6.1 and 6.12 apt knows), builds static
//! sockscope and workloads, packs them with busybox into an initramfs whose /init
//! (`init.sh`) runs the checks (`checks.sh`), boots each kernel under QEMU TCG (KVM is
//! not usable here) with no network device, and reads the verdicts from the serial
//! console: QEMU exits 0 even when the guest panics, so only the `VMTEST` lines count.
//! The same checks run on the host, where the backends its kernel refuses must be
//! refused with exit 2 and one clear line.
//! Then the systemd guest (`systemd.rs`): README's service installation under a real
//! systemd as PID 1, on one of the matrix's kernels.
mod guest;
mod matrix;
mod systemd;

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

/// A kernel of the matrix: its name, where apt finds it, and the package name
/// patterns of its cloud build (unsigned first: the signed package of the same version
/// carries the same kernel and serves when a mirror lacks the other).
pub(super) struct Kernel {
    pub name: &'static str,
    pub apt: Apt,
    pub packages: &'static [&'static str],
}

/// Where a kernel's packages come from.
pub(super) enum Apt {
    /// This machine's apt sources (the kernels of its own release, bookworm).
    System,
    /// Another Debian release, through a private apt state under target/vm (the
    /// machine's sources stay as they are): its codename; the release, -updates and
    /// -security suites are searched.
    Release(&'static str),
}

/// The kernels of the matrix, oldest first: Debian 11's 5.10 (the LTS kernel many
/// production hosts still run), Debian 12's 6.1 and its backported 6.12.
const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        apt: Apt::Release("bullseye"),
        packages: &[
            r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$",
            r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64$",
        ],
    },
    Kernel {
        name: "6.1",
        apt: Apt::System,
        packages: &[
            r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
            r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$",
        ],
    },
    Kernel {
        name: "6.12",
        apt: Apt::System,
        packages: &[
            r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$",
            r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$",
        ],
    },
];

/// Binaries the guest runs, built static.
const GUEST_BINARIES: &[&str] = &["sockscope", "udp_workload", "pc_sim"];

/// A guest that has not powered off by then is stuck.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

pub fn run(kernel: &str) -> anyhow::Result<()> {
    let wanted: Vec<&Kernel> = KERNELS
        .iter()
        .filter(|k| kernel == "all" || kernel == k.name)
        .collect();
    let host = kernel == "all" || kernel == "host";
    let with_systemd = kernel == "all" || kernel == "systemd";
    if wanted.is_empty() && !host && !with_systemd {
        let names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
        bail!(
            "unknown kernel {kernel:?}: use {}, host, systemd or all",
            names.join(", ")
        );
    }
    setup::run()?;
    util::require_root("cargo xtask vm-test")?;
    setup::ensure_backports_commands(&[
        ("qemu-system-x86", "qemu-system-x86_64"),
        ("busybox-static", "busybox"),
        ("cpio", "cpio"),
    ])?;
    if with_systemd {
        setup::ensure_commands(&[("debootstrap", "debootstrap")])?;
    }
    let work = PathBuf::from("target/vm");
    fs::create_dir_all(work.join("cache")).context("cannot create target/vm")?;
    let bins = build_static(&work)?;
    let initrd = pack_initramfs(&work, &bins)?;
    let mut results = Vec::new();
    for k in wanted {
        let name = k.name;
        let vmlinuz = fetch_kernel(&work, k)?;
        println!(
            "xtask: booting {name} ({}) under QEMU TCG",
            vmlinuz.display()
        );
        let expect = guest_expect(name);
        let started = Instant::now();
        let console = boot(&work, name, &vmlinuz, &initrd, &expect.args())?;
        let verdicts = verdicts(&console);
        if console.contains("Kernel panic") {
            eprintln!("xtask: {name}: the guest kernel panicked (see the console log)");
        }
        println!(
            "xtask: {name}: {} checks reported in {:.0} s (console: target/vm/console-{name}.log)",
            verdicts.len(),
            started.elapsed().as_secs_f64()
        );
        results.push((name.to_owned(), expect, verdicts));
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
    let systemd_verdicts = if with_systemd {
        let k = KERNELS
            .iter()
            .find(|k| k.name == systemd::KERNEL)
            .context("the systemd guest's kernel is not in the matrix")?;
        let vmlinuz = fetch_kernel(&work, k)?;
        let started = Instant::now();
        let v = systemd::run(&work, &bins, &vmlinuz)?;
        println!(
            "xtask: systemd: {} checks reported in {:.0} s (console: target/vm/console-systemd.log, \
             verdicts and metrics pages: target/vm/systemd-results.txt)",
            v.iter().filter(|c| c.1.is_some()).count(),
            started.elapsed().as_secs_f64()
        );
        Some(v)
    } else {
        None
    };
    if !results.is_empty() {
        print_matrix(&results);
    }
    let mut failed = failures(&results);
    if let Some(v) = &systemd_verdicts {
        println!("| check | systemd ({}) |", systemd::KERNEL);
        println!("|---|---|");
        for (check, verdict) in v {
            let cell = match verdict {
                Some((true, _)) => "pass".to_owned(),
                Some((false, detail)) => format!("**fail** ({detail})"),
                None => "**not reported**".to_owned(),
            };
            println!("| {check} | {cell} |");
            if !verdict.as_ref().is_some_and(|v| v.0) {
                failed.push(format!("systemd/{check}"));
            }
        }
        println!();
    }
    if !failed.is_empty() {
        print_failed_consoles(&work, &failed);
        bail!("vm-test failed: {}", failed.join(", "));
    }
    println!(
        "xtask: vm-test passed on {}",
        results
            .iter()
            .map(|r| r.0.as_str())
            .chain(systemd_verdicts.as_ref().map(|_| "systemd"))
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

/// How much of a failed guest's console the log shows: the systemd guest's ends with
/// the unit's journal, the others with the checks' own output.
const CONSOLE_TAIL_LINES: usize = 80;

/// The end of the console of every guest with a failed check ("NAME/..."), into the
/// log itself: on a CI machine the console files are gone with the machine.
fn print_failed_consoles(work: &Path, failed: &[String]) {
    let mut guests: Vec<&str> = failed.iter().filter_map(|f| f.split('/').next()).collect();
    guests.dedup();
    for g in guests {
        let path = work.join(format!("console-{g}.log"));
        let Ok(bytes) = fs::read(&path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        println!(
            "xtask: the last {} lines of {}:",
            CONSOLE_TAIL_LINES.min(lines.len()),
            path.display()
        );
        for l in &lines[lines.len().saturating_sub(CONSOLE_TAIL_LINES)..] {
            println!("  {}", l.trim_end_matches('\r'));
        }
    }
}
