//! The systemd guest: README's "As a service" installation under a real systemd as
//! PID 1. A Debian root file system made by debootstrap (cached under
//! /var/cache/sockscope: later runs only pack what changed), with the static sockscope
//! and pc_sim, README's install commands and `systemd.sh` on top, boots one of the
//! matrix's kernels from an initramfs (no disk: the cloud kernel needs no module);
//! systemd starts `systemd.sh` as a service once the system is up, and it powers the
//! guest off when done. Its verdicts and the metrics pages it scraped come back on the
//! guest's second serial port; the pages are checked here with a Prometheus parser.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::guest::{Qemu, boot_qemu, copy_executable};
use crate::util;

/// The matrix kernel the systemd guest boots.
pub(super) const KERNEL: &str = "6.12";

/// The Debian release of the guest's root file system, and what it holds besides
/// minbase: systemd as init, bpftool (to see sockscope's programs independently of
/// sockscope), curl (README's scrape), logrotate (README installs its configuration).
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
const PACKAGES: &[&str] = &["systemd-sysv", "bpftool", "curl", "logrotate"];

/// Where the packed root file system is kept between runs (`SOCKSCOPE_VM_CACHE`
/// overrides).
const CACHE: &str = "/var/cache/sockscope/vm-systemd";

/// The whole guest, boot to power-off, takes about 2 minutes under TCG; a guest still
/// running after this is stuck.
const TIMEOUT: Duration = Duration::from_secs(420);

/// Checks `systemd.sh` reports, in its order.
const GUEST_CHECKS: &[&str] = &[
    "boot_state",
    "before_started",
    "readme_install",
    "is_enabled",
    "is_active",
    "doctor_ran",
    "found_before",
    "metrics_http_1",
    "found_after",
    "after_leaks",
    "after_leak_count",
    "before_leaks",
    "before_incomplete",
    "metrics_http_2",
    "programs_loaded",
    "rotated",
    "reload_reopened",
    "reload_same_pid",
    "reopened_leaks",
    "stop_result",
    "stop_exit",
    "stop_inactive",
    "stop_nothing_left",
];

/// Checks made here, of the metrics pages the guest scraped.
const HOST_CHECKS: &[&str] = &[
    "metrics_parse",
    "metrics_marked_processes",
    "metrics_leaks_moved",
    "metrics_events_moved",
    "metrics_no_events_lost",
];

/// The systemd service that runs the checks in the guest, started once the system is
/// up; its end (or its time limit) powers the guest off.
const VMTEST_UNIT: &str = "\
[Unit]
Description=sockscope vm-test: README's systemd installation, end to end
After=multi-user.target

[Service]
Type=simple
ExecStart=/bin/sh /root/vmtest/systemd.sh
StandardOutput=journal+console
StandardError=journal+console
RuntimeMaxSec=300
SuccessAction=poweroff-force
FailureAction=poweroff-force
";

/// A check's result: (check, passed, detail).
pub(super) type Verdicts = Vec<(&'static str, Option<(bool, String)>)>;

/// Boots the systemd guest with `vmlinuz` and the static binaries in `bins`; every
/// check with its verdict (None: not reported).
pub(super) fn run(work: &Path, bins: &Path, vmlinuz: &Path) -> anyhow::Result<Verdicts> {
    let base = rootfs()?;
    let overlay = pack_overlay(work, bins)?;
    // The kernel unpacks concatenated cpio archives in order: the overlay's files land
    // on the root file system's.
    let initrd = fs::canonicalize(work)?.join("systemd-initrd.cpio");
    util::run_ok(Command::new("sh").arg("-c").arg(format!(
        "cat '{}' '{}' > '{}'",
        base.display(),
        overlay.display(),
        initrd.display()
    )))?;
    let console = work.join("console-systemd.log");
    let results = work.join("systemd-results.txt");
    let _ = fs::remove_file(&results);
    println!(
        "xtask: booting {KERNEL} ({}) with systemd as PID 1 under QEMU TCG",
        vmlinuz.display()
    );
    boot_qemu(&Qemu {
        name: "systemd",
        vmlinuz,
        initrd: &initrd,
        // No udev in the guest, so no device units: the serial getty would wait 90 s
        // for its tty.
        append: "console=ttyS0 panic=-1 quiet rdinit=/lib/systemd/systemd \
                 systemd.unit=multi-user.target systemd.mask=serial-getty@ttyS0.service",
        // The root file system lives in RAM (about 115 MB).
        memory_mb: 2048,
        console: &console,
        second_serial: Some(&results),
        timeout: TIMEOUT,
    })?;
    let _ = fs::remove_file(&initrd);
    let text = fs::read(&results)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default();
    Ok(verdicts(&text))
}

/// The guest's verdicts and the host's checks of its metrics pages.
fn verdicts(text: &str) -> Verdicts {
    let mut found: BTreeMap<&str, (bool, String)> = BTreeMap::new();
    for line in text.lines() {
        let Some(l) = line.find("VMTEST ").map(|i| &line[i..]) else {
            continue;
        };
        let mut f = l.split_whitespace().skip(2);
        if f.next() != Some("systemd") {
            continue;
        }
        let (Some(check), Some(verdict)) = (f.next(), f.next()) else {
            continue;
        };
        if let Some(c) = GUEST_CHECKS.iter().find(|c| **c == check) {
            found.insert(c, (verdict == "pass", f.collect::<Vec<_>>().join(" ")));
        }
    }
    let pages = [metrics_page(text, 1), metrics_page(text, 2)];
    for (check, verdict) in metrics_checks(&pages) {
        println!(
            "VMTEST host systemd {check} {} {}",
            if verdict.0 { "pass" } else { "fail" },
            verdict.1
        );
        found.insert(check, verdict);
    }
    GUEST_CHECKS
        .iter()
        .chain(HOST_CHECKS)
        .map(|c| (*c, found.remove(c)))
        .collect()
}

/// Metrics page `n` as the guest sent it, between its markers.
fn metrics_page(text: &str, n: u32) -> Option<String> {
    let begin = format!("VMTEST-METRICS-BEGIN {n}\n");
    let end = format!("VMTEST-METRICS-END {n}\n");
    let start = text.find(&begin)? + begin.len();
    let len = text[start..].find(&end)?;
    Some(text[start..start + len].to_owned())
}

/// The pages parse (every sample line is a sample to a Prometheus parser), and the
/// numbers moved between the first scrape (the process started before the daemon found,
/// nothing judged yet) and the second (both processes judged, one leak each).
fn metrics_checks(pages: &[Option<String>; 2]) -> Vec<(&'static str, (bool, String))> {
    let parsed: Vec<Result<prometheus_parse::Scrape, String>> =
        pages.iter().map(|p| parse_page(p.as_deref())).collect();
    let mut out = Vec::new();
    let errors: Vec<String> = parsed
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.as_ref().err().map(|e| format!("page {}: {e}", i + 1)))
        .collect();
    out.push((
        "metrics_parse",
        if errors.is_empty() {
            (true, "both pages".to_owned())
        } else {
            (false, errors.join("; "))
        },
    ));
    let (Ok(first), Ok(second)) = (&parsed[0], &parsed[1]) else {
        return out;
    };
    let v = |s: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>| -> f64 {
        s.samples
            .iter()
            .filter(|x| x.metric == name)
            .filter(|x| label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let at_least = |got: f64, want: f64| (got >= want, format!("got={got} want>={want}"));
    out.push((
        "metrics_marked_processes",
        at_least(v(first, "sockscope_marked_processes", None), 1.0),
    ));
    let leaks = |s| {
        v(
            s,
            "sockscope_peer_connections_judged_total",
            Some(("outcome", "leak")),
        )
    };
    // The process started before and the one started after leaked one PeerConnection
    // each after the first scrape.
    out.push((
        "metrics_leaks_moved",
        at_least(leaks(second) - leaks(first), 2.0),
    ));
    let events = |s| v(s, "sockscope_events_total", None);
    out.push((
        "metrics_events_moved",
        (
            events(second) > events(first),
            format!("from={} to={}", events(first), events(second)),
        ),
    ));
    let lost = v(second, "sockscope_events_lost_total", None);
    let has_lost = second
        .samples
        .iter()
        .any(|s| s.metric == "sockscope_events_lost_total");
    out.push((
        "metrics_no_events_lost",
        (
            has_lost && lost == 0.0,
            format!("lost={lost} present={has_lost}"),
        ),
    ));
    out
}

/// A page parsed, when every line that is neither empty nor a comment is a sample of a
/// sockscope metric (the parser skips what it cannot read, so that is counted here).
fn parse_page(page: Option<&str>) -> Result<prometheus_parse::Scrape, String> {
    let page = page.ok_or("not received")?;
    let sample_lines: Vec<&str> = page
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if sample_lines.is_empty() {
        return Err("no samples".into());
    }
    let scrape = prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_owned())))
        .map_err(|e| e.to_string())?;
    if scrape.samples.len() != sample_lines.len() {
        let bad: Vec<&&str> = sample_lines
            .iter()
            .filter(|l| {
                !matches!(
                    prometheus_parse::LineInfo::parse(l),
                    prometheus_parse::LineInfo::Sample { .. }
                )
            })
            .take(3)
            .collect();
        return Err(format!(
            "{} of {} sample lines parsed; unreadable: {bad:?}",
            scrape.samples.len(),
            sample_lines.len()
        ));
    }
    if let Some(s) = scrape
        .samples
        .iter()
        .find(|s| !s.metric.starts_with("sockscope_"))
    {
        return Err(format!("a sample that is not sockscope's: {}", s.metric));
    }
    Ok(scrape)
}

/// The Debian root file system with systemd, packed as a cpio archive: made once by
/// debootstrap, then taken from the cache.
fn rootfs() -> anyhow::Result<PathBuf> {
    let cache = PathBuf::from(std::env::var_os("SOCKSCOPE_VM_CACHE").unwrap_or(CACHE.into()));
    // What it holds is in its name: another package list makes another file.
    let name = format!("{SUITE}-minbase-{}.cpio", PACKAGES.join("+"));
    let cpio = cache.join(&name);
    if cpio.exists() {
        return Ok(cpio);
    }
    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let tree = cache.join(format!("{name}.tree"));
    if tree.exists() {
        // A run that stopped half-way may have left debootstrap's mounts inside.
        unmount_under(&tree)?;
        fs::remove_dir_all(&tree).with_context(|| format!("cannot remove {}", tree.display()))?;
    }
    println!(
        "xtask: making a Debian {SUITE} root file system with systemd (debootstrap, a few \
         minutes once; kept as {})",
        cpio.display()
    );
    let made = util::run_ok(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(SUITE)
            .arg(&tree)
            .arg(MIRROR),
    );
    if let Err(e) = made {
        unmount_under(&tree)?;
        return Err(e.context("debootstrap failed"));
    }
    // Smaller, so it unpacks faster in the guest: no documentation, no translations,
    // no package lists or downloaded packages.
    for dir in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "var/cache/apt",
        "var/lib/apt/lists",
    ] {
        let path = tree.join(dir);
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    let partial = cache.join(format!("{name}.partial"));
    util::run_ok(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . | cpio -o -H newc --quiet > '{}'",
        tree.display(),
        partial.display()
    )))?;
    fs::rename(&partial, &cpio)?;
    fs::remove_dir_all(&tree).with_context(|| format!("cannot remove {}", tree.display()))?;
    Ok(cpio)
}

/// Unmounts whatever is mounted under `dir` (deepest first).
fn unmount_under(dir: &Path) -> anyhow::Result<()> {
    let dir = fs::canonicalize(dir)?;
    let mounts = fs::read_to_string("/proc/mounts").context("cannot read /proc/mounts")?;
    let mut points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        util::run_ok(Command::new("umount").arg("-l").arg(&p))?;
    }
    Ok(())
}

/// What goes on top of the root file system: a tree shaped like the repository where
/// README's install commands run (the static sockscope where `cargo build --release`
/// puts it, contrib/systemd as committed), pc_sim, the checks and their service.
fn pack_overlay(work: &Path, bins: &Path) -> anyhow::Result<PathBuf> {
    let root = work.join("systemd-root");
    if root.exists() {
        fs::remove_dir_all(&root).context("cannot clear target/vm/systemd-root")?;
    }
    let src = root.join("root/src");
    let release = src.join("target/release");
    fs::create_dir_all(&release)?;
    for bin in ["sockscope", "pc_sim"] {
        copy_executable(&bins.join(bin), &release.join(bin))?;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let contrib = src.join("contrib/systemd");
    fs::create_dir_all(&contrib)?;
    for file in ["sockscope.service", "sockscope.logrotate"] {
        fs::copy(repo.join("contrib/systemd").join(file), contrib.join(file))
            .with_context(|| format!("cannot copy contrib/systemd/{file}"))?;
    }
    let readme = fs::read_to_string(repo.join("README.md")).context("cannot read README.md")?;
    fs::write(src.join("install.sh"), readme_install(&readme)?)?;
    let vmtest = root.join("root/vmtest");
    fs::create_dir_all(&vmtest)?;
    fs::write(vmtest.join("systemd.sh"), include_str!("systemd.sh"))?;
    let units = root.join("etc/systemd/system");
    fs::create_dir_all(units.join("multi-user.target.wants"))?;
    fs::write(units.join("vmtest-systemd.service"), VMTEST_UNIT)?;
    std::os::unix::fs::symlink(
        "/etc/systemd/system/vmtest-systemd.service",
        units.join("multi-user.target.wants/vmtest-systemd.service"),
    )?;
    let cpio = fs::canonicalize(work)?.join("systemd-overlay.cpio");
    util::run_ok(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . | cpio -o -H newc -R 0:0 --quiet > '{}'",
        root.display(),
        cpio.display()
    )))?;
    Ok(cpio)
}

/// README's commands that install the service ("As a service"), as a script: its
/// `install`, `systemctl` and `curl` lines, as written (the unit is `Type=notify`: once
/// `enable --now` returns, the metrics page answers). Left out: `cargo build` (the
/// static build is already where it puts its binary), and `tail -f` (it never ends).
fn readme_install(readme: &str) -> anyhow::Result<String> {
    let anchor = "Install it as a systemd service";
    let at = readme
        .find(anchor)
        .with_context(|| format!("README.md has no {anchor:?}"))?;
    let rest = &readme[at..];
    let open = rest.find("```sh\n").context("no ```sh block after it")? + "```sh\n".len();
    let len = rest[open..].find("```").context("the block does not end")?;
    let lines: Vec<&str> = rest[open..open + len]
        .lines()
        .filter(|l| {
            l.starts_with("install ") || l.starts_with("systemctl ") || l.starts_with("curl ")
        })
        .collect();
    if !lines.iter().any(|l| l.contains("enable --now sockscope")) {
        bail!("README's install block has no `systemctl enable --now sockscope`: {lines:?}");
    }
    Ok(format!("set -e\n{}\n", lines.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_install_is_its_install_and_systemctl_lines() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
                .unwrap();
        let script = readme_install(&readme).unwrap();
        assert!(
            script.contains("install -m 0755 target/release/sockscope /usr/local/bin/sockscope")
        );
        assert!(script.contains("systemctl daemon-reload && systemctl enable --now sockscope"));
        assert!(script.contains("curl -s 127.0.0.1:9464/metrics"));
        assert!(!script.contains("cargo build"));
        assert!(!script.contains("tail -f"));
    }

    #[test]
    fn a_page_that_does_not_parse_is_refused() {
        let good = "# TYPE sockscope_events_total counter\nsockscope_events_total 3\n";
        assert!(parse_page(Some(good)).is_ok());
        assert!(parse_page(Some("sockscope_events_total three\n")).is_err());
        assert!(parse_page(Some("# only a comment\n")).is_err());
        assert!(parse_page(None).is_err());
    }
}
