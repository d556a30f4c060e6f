//! Command-line interface (clap). Contract: ../shared/DESIGN.md "CLI contract".
use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::{backend::Backend, output::Format};

/// `--backend`, shared by the commands that trace.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct BackendArg {
    /// Kernel hooks to trace with: fentry (kernel UDP functions; needs BTF, no
    /// lockdown), cgroup (cgroup_sock hooks; works under lockdown) or kprobe (as fentry,
    /// where only kprobes are allowed). Default: the first of these that works here;
    /// `sockscope doctor` says which and why.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
}

/// Find UDP sockets that outlive the WebRTC PeerConnection that created them.
///
/// Needs root (or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN). Run `sockscope doctor` first
/// on a new host. Exit codes: 0 success, 2 usage or environment error.
#[derive(Debug, Parser)]
#[command(name = "sockscope", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that this host can trace: kernel, BTF, lockdown, mounts, capabilities,
    /// and whether each BPF program really loads. Exit 0 if tracing can work, 2 if not.
    Doctor {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Also say how the creating stacks of this process would be taken with
        /// `--stacks auto` (frame pointers or DWARF unwinding) and why.
        #[arg(long, short)]
        pid: Option<u32>,
    },
    /// Print every UDP socket create, bind and release as it happens.
    ///
    /// Starts with the UDP sockets that already exist (bound or not), then streams
    /// events until Ctrl-C, SIGTERM or --duration; ends with a summary line. User stacks
    /// are useful only for programs built with frame pointers
    /// (RUSTFLAGS="-C force-frame-pointers=yes").
    Trace(TraceArgs),
    /// Run a command under tracing and judge every PeerConnection it closes: exit 1 if
    /// any UDP socket is still open `--grace` after its PeerConnection closed, 0 if
    /// clean, 2 if no verdict can be given (bad usage, events lost, command failed).
    ///
    /// The command runs in a cgroup of its own (children included) as the invoking user
    /// when run through sudo. Its binary's USDT markers (crate tracer-usdt) are attached
    /// before it starts, and those of every program it or its children execute (e.g.
    /// the test binaries of `cargo test`) before that program runs. Keep it running `--grace` after closing its PeerConnections, or
    /// sockets closed by its exit are judged at the exit.
    Check(CheckArgs),
    /// Attach to a running process and its USDT markers; print leaks as its
    /// PeerConnections close. Ends on Ctrl-C or when the process exits.
    ///
    /// PeerConnections already open when it attaches are never judged clean: their
    /// verdict is `incomplete`, and the process's sockets from before the attach that
    /// are still open after their grace are listed as possibly leaked.
    Watch(WatchArgs),
    /// List outstanding UDP sockets by age with their creating stacks (memleak-style,
    /// no markers needed), every --interval and at exit. With --pid, ends when the
    /// process exits.
    Leaks(LeaksArgs),
    /// Judge every process on the host that carries sockscope markers, as a service:
    /// those running when it starts and every one started later, in containers too.
    ///
    /// Findings are JSON Lines (each with the process's host pid, pid in its
    /// namespace, cgroup and container id) on stdout or `--output FILE` (reopened on
    /// SIGHUP, for logrotate); `--metrics ADDR` serves Prometheus metrics at /metrics.
    /// PeerConnections already open when it starts are never judged clean
    /// (`incomplete`). Runs until SIGINT/SIGTERM or --duration. See contrib/systemd/.
    Daemon(DaemonArgs),
    /// Print a report saved by `check --report F` as text, or write it as one HTML page.
    Report {
        /// The JSON report file.
        file: PathBuf,
        /// Write a self-contained HTML page instead (timeline of PeerConnections and
        /// their sockets, leaks in red, a table of the leaks); it opens from disk.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// USDT markers: list what a binary or a process offers.
    Usdt {
        #[command(subcommand)]
        command: UsdtCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsdtCommand {
    /// List the USDT probes (.note.stapsdt) of a binary or of a process's executable
    /// and shared objects, with their argument specs.
    List {
        /// An ELF binary or shared object.
        #[arg(required_unless_present = "pid", conflicts_with = "pid")]
        binary: Option<PathBuf>,
        /// A running process.
        #[arg(long, short)]
        pid: Option<u32>,
    },
}

/// Grace after `pc_close_end` before an open socket counts as leaked.
const DEFAULT_GRACE: &str = "2s";

#[derive(Debug, clap::Args)]
#[command(override_usage = "sockscope check [OPTIONS] -- <CMD>...")]
pub struct CheckArgs {
    #[command(flatten)]
    pub backend: BackendArg,
    #[command(flatten)]
    pub stacks: crate::unwind::StackArgs,
    /// How long after a PeerConnection's close() returned its sockets may stay open.
    #[arg(long, short, value_parser = parse_duration, default_value = DEFAULT_GRACE)]
    pub grace: Duration,
    #[arg(long, short, value_enum, default_value = "text")]
    pub format: Format,
    /// Also write everything found, as JSON, to this file (see `sockscope report`).
    #[arg(long, short)]
    pub report: Option<PathBuf>,
    /// Write the records and the summary to this file instead of stdout, apart from the
    /// command's own output (on a shared pipe, a record longer than 4 KiB, one with a
    /// deep stack, can be split by the command's writes).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Also write the run as JUnit XML to this file, for CI test-report views: one test
    /// case per PeerConnection judged, a leak a failure, an incomplete verdict an error.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also fail (exit 1) when a process exits while PeerConnections it never closed
    /// nor dropped still hold open sockets (by default a warning: a server stopped by
    /// a signal legitimately exits with open connections).
    #[arg(long)]
    pub strict: bool,
    /// Ring buffer size in bytes (power of two, at least 4096): raise it if events
    /// are lost.
    #[arg(long)]
    pub ring_bytes: Option<u32>,
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub backend: BackendArg,
    #[command(flatten)]
    pub stacks: crate::unwind::StackArgs,
    /// The process to watch.
    #[arg(long, short)]
    pub pid: u32,
    #[arg(long, short, value_parser = parse_duration, default_value = DEFAULT_GRACE)]
    pub grace: Duration,
    #[arg(long, short, value_enum, default_value = "text")]
    pub format: Format,
    /// Stop after this long.
    #[arg(long, short, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Also fail (exit 1) when a process exits while PeerConnections it never closed
    /// nor dropped still hold open sockets (by default a warning: a server stopped by
    /// a signal legitimately exits with open connections).
    #[arg(long)]
    pub strict: bool,
    #[arg(long, hide = true)]
    pub ring_bytes: Option<u32>,
}

#[derive(Debug, clap::Args)]
pub struct LeaksArgs {
    #[command(flatten)]
    pub backend: BackendArg,
    #[command(flatten)]
    pub stacks: crate::unwind::StackArgs,
    /// Only sockets of this process.
    #[arg(long, short)]
    pub pid: Option<u32>,
    /// List only sockets at least this old.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub min_age: Duration,
    /// How often to print the listing.
    #[arg(long, short, value_parser = parse_duration, default_value = "10s")]
    pub interval: Duration,
    /// Stop after this long.
    #[arg(long, short, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[arg(long, short, value_enum, default_value = "text")]
    pub format: Format,
    #[arg(long, hide = true)]
    pub ring_bytes: Option<u32>,
}

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub backend: BackendArg,
    #[arg(long, short, value_parser = parse_duration, default_value = DEFAULT_GRACE)]
    pub grace: Duration,
    /// Append findings (JSON Lines) to this file instead of stdout; reopened on SIGHUP.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464), path /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Stop after this long (default: run until SIGINT or SIGTERM).
    #[arg(long, short, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Track at most this many sockets at once; beyond, new sockets are not tracked
    /// (with a warning, a metric, and `incomplete` verdicts) rather than memory growing.
    #[arg(long, default_value_t = crate::daemon::DEFAULT_MAX_SOCKETS)]
    pub max_sockets: usize,
    /// Forget a program no process has mapped for this long (a binary replaced by a
    /// new version, a container gone): its markers are detached (the kernel lets go of
    /// the file, the marker slots serve other programs) and its parsed debug
    /// information dropped. Run again later, it gets them back when it starts.
    #[arg(long, value_parser = parse_duration, default_value = "60s", value_name = "DURATION")]
    pub forget_programs_after: Duration,
    /// Turn the kernel's BPF run-time statistics on while running, for the
    /// sockscope_bpf_run_seconds_total metric (costs two clock reads per program run).
    #[arg(long)]
    pub bpf_stats: bool,
    /// Ring buffer size in bytes (power of two, at least 4096): raise it if events
    /// are lost on a busy host.
    #[arg(long)]
    pub ring_bytes: Option<u32>,
    /// How the stacks of the processes found carrying markers are taken: fp (the
    /// default here: the kernel's frame-pointer walk), auto or dwarf (copy registers and
    /// the top of the user stack of those processes only, unwind with their CFI; see
    /// README, "Stacks of programs built without frame pointers": opt-in for the daemon,
    /// whose ring reader then reads each sampled process's objects).
    #[arg(long = "stacks", value_enum, default_value_t = crate::unwind::StackMode::Fp, value_name = "MODE")]
    pub stacks: crate::unwind::StackMode,
    /// Bytes of user stack copied per sample with --stacks auto|dwarf (default 16384, at
    /// most 32704).
    #[arg(long, value_name = "BYTES")]
    pub stack_bytes: Option<u32>,
}

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub backend: BackendArg,
    /// Only sockets of this process (all its threads).
    #[arg(long, short)]
    pub pid: Option<u32>,
    /// Only sockets of tasks with this name (as in /proc/PID/comm, at most 15 bytes).
    #[arg(long, short)]
    pub comm: Option<String>,
    /// Output format: aligned text, or JSON Lines with a `schema` field.
    #[arg(long, short, value_enum, default_value = "text")]
    pub format: Format,
    /// Stop after this long (e.g. 10s, 1m30s).
    #[arg(long, short, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Write events to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Symbolize and print the user and kernel stacks that created each socket. MODE:
    /// how user stacks are taken with --pid/--comm: auto (default), fp (frame pointers),
    /// dwarf (copy the top of the stack, unwind with CFI: programs built without frame
    /// pointers); see `sockscope check --help`.
    #[arg(long, short, value_enum, value_name = "MODE", num_args = 0..=1, require_equals = false, default_missing_value = "auto")]
    pub stacks: Option<crate::unwind::StackMode>,
    /// Bytes of user stack copied per socket creation in dwarf mode (default 16384, at
    /// most 32704).
    #[arg(long, value_name = "BYTES")]
    pub stack_bytes: Option<u32>,
    /// Ring buffer size in bytes (power of two; for tests of event loss).
    #[arg(long, hide = true)]
    pub ring_bytes: Option<u32>,
    /// Also attach the USDT markers of this binary (all processes running it) and
    /// show them. With --pid, the process's own markers are attached anyway.
    #[arg(long, value_name = "BINARY")]
    pub usdt: Vec<PathBuf>,
    /// Marker providers to attach (default: sockscope).
    #[arg(long, hide = true, default_value = "sockscope")]
    pub usdt_provider: Vec<String>,
}

/// A duration: with units as humantime reads them (500ms, 10s, 1m30s), or a bare
/// number of seconds, fractions allowed ("8", "1.5"), as timeout(1) and the BCC tools
/// read it.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let with_examples = |why: String| format!("{why} (examples: 8, 1.5, 500ms, 10s, 2m)");
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return t
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or_else(|| with_examples(format!("{s:?} is not a number of seconds")));
    }
    humantime::parse_duration(t).map_err(|e| with_examples(e.to_string()))
}

/// A command-line error as one line (without the `sockscope: ` prefix). clap puts the
/// name of a missing argument on the line after its sentence, so the first paragraph
/// is joined into one line; a missing argument also gets the usage.
pub fn one_line_error(e: &clap::Error) -> String {
    let rendered = e.to_string();
    let mut paragraphs = rendered.split("\n\n");
    let first = paragraphs
        .next()
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let first = first.strip_prefix("error: ").unwrap_or(&first);
    let first = if first.is_empty() {
        "invalid arguments"
    } else {
        first
    };
    let usage = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(str::trim);
    match (e.kind(), usage) {
        (
            clap::error::ErrorKind::MissingRequiredArgument
            | clap::error::ErrorKind::MissingSubcommand
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand,
            Some(usage),
        ) => format!("{first} (usage: {usage})"),
        _ => format!("{first} (see `sockscope --help`)"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn bare_numbers_are_seconds() {
        assert_eq!(parse_duration("8"), Ok(Duration::from_secs(8)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(".25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        for garbage in [
            "",
            ".",
            "1.2.3",
            "abc",
            "-1",
            "1e400",
            "99999999999999999999999",
        ] {
            let e = parse_duration(garbage).expect_err(garbage);
            assert!(e.contains("examples: 8, 1.5, 500ms"), "{garbage:?}: {e}");
        }
    }

    #[test]
    fn a_missing_command_is_named_with_the_usage() {
        let e = Cli::try_parse_from(["sockscope", "check"]).expect_err("no command");
        let line = one_line_error(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("<CMD>..."), "{line}");
        assert!(
            line.contains("usage: sockscope check [OPTIONS] -- <CMD>..."),
            "{line}"
        );
    }
}
