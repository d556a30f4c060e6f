//! Project tasks: `cargo xtask setup | test | demo | bench | vm-test | soak`. Each installs what it needs first,
//! so a fresh machine needs nothing but this repository and cargo.
mod bench;
mod demo;
mod examples;
mod setup;
mod soak;
mod unwind_bins;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "sockscope project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the nightly rust-src, bpf-linker and Debian packages (idempotent).
    Setup,
    /// Set up, build, and run every test (needs root: tests load BPF programs).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run `sockscope check` on a real webrtc-rs program, once
    /// with an injected UDP socket leak and once clean (needs root).
    Demo,
    /// Set up, build (release) and measure what tracing costs: overhead ratios
    /// traced/untraced, events/s without loss, memory per socket, attach and verdict
    /// latency, against bpftrace. Writes bench/results.json and bench/results.md.
    Bench {
        /// Fewer and shorter rounds (under 2 minutes after the build).
        #[arg(long)]
        quick: bool,
        /// Where to write the JSON results (the table goes beside it, .md).
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// Only these groups of figures (comma-separated): churn, paced, echo, webrtc,
        /// loss, memory, latency.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Boot Debian's newest 5.10, 6.1 and 6.12 cloud kernels under QEMU (TCG) with static
    /// sockscope and workloads in an initramfs, run the end-to-end checks inside for
    /// every backend (doctor's choice, trace of a known workload, USDT markers and a
    /// leak verdict, a clean check), run them on this host too (backends this kernel
    /// refuses must be refused cleanly), and print the kernel x backend x check matrix;
    /// then install the systemd unit as README says in a Debian guest whose PID 1 is
    /// systemd and check the service end to end (needs root; about a minute per kernel
    /// after the build, and one for the systemd guest once its rootfs is cached).
    VmTest {
        /// 5.10, 6.1, 6.12, host, systemd (README's service under systemd as PID 1) or all.
        #[arg(long, default_value = "all")]
        kernel: String,
    },
    /// Run `sockscope daemon` while pc_sim processes start and exit continuously
    /// (many PeerConnections and sockets, some leaking on purpose, some reusing the pid
    /// of one that just exited) and check: resident memory flat after the warm-up,
    /// every injected leak found and nothing else, no events lost, nothing left in the
    /// kernel after SIGTERM or SIGKILL. Writes target/soak/results.json (needs root).
    Soak {
        /// How long the load runs (e.g. 60s, 10m).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// pc_sim processes running at once.
        #[arg(long, default_value_t = 3)]
        parallel: usize,
        /// PeerConnections per process.
        #[arg(long, default_value_t = 300)]
        pcs: u64,
        /// UDP sockets per PeerConnection.
        #[arg(long, default_value_t = 10)]
        sockets: u64,
        /// Sockets/s each process makes at most.
        #[arg(long, default_value_t = 1200)]
        rate: u64,
        /// Soak the release build instead of the debug one `cargo xtask test` builds.
        #[arg(long)]
        release: bool,
        /// Lower kernel.pid_max to this while the soak runs, so pids wrap sooner
        /// (restored after; it affects the whole host).
        #[arg(long)]
        pid_max: Option<u32>,
        /// Where to write the JSON results (default target/soak/results.json).
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Test { args } => test(&args),
        Task::Demo => demo::run(),
        Task::Bench {
            quick,
            output,
            only,
        } => bench::run(quick, output, &only),
        Task::VmTest { kernel } => vm::run(&kernel),
        Task::Soak {
            duration,
            parallel,
            pcs,
            sockets,
            rate,
            release,
            pid_max,
            output,
        } => soak::run(soak::Options {
            duration,
            load: soak::Load {
                parallel: parallel.max(1),
                pcs,
                sockets: sockets.max(1),
                rate,
            },
            release,
            pid_max,
            output,
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn test(args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    util::require_root("cargo xtask test")?;
    // Every binary the tests run: sockscope, the workloads, the webrtc-rs examples.
    util::cargo(&["build", "--workspace", "--bins"])?;
    let examples = examples::build_all()?;
    examples::build_without_frame_pointers()?;
    let unwind_bins = unwind_bins::build()?;
    let linters = setup::ci_linters()?;
    let mut cmd = vec!["test"];
    cmd.extend(args.iter().map(String::as_str));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    util::run_ok(
        std::process::Command::new(cargo)
            .args(&cmd)
            .env("SOCKSCOPE_EXAMPLES", examples)
            .env("SOCKSCOPE_UNWIND_BINS", unwind_bins)
            .env("SOCKSCOPE_LINTERS", linters),
    )
}
