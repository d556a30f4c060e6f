//! Command-line interface (clap). Contract: ../shared/DESIGN.md "CLI contract".
use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::output::Format;

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
    },
    /// Print every UDP socket create, bind and release as it happens.
    ///
    /// Starts with the UDP sockets that already exist (from sock_diag), then streams
    /// events until Ctrl-C, SIGTERM or --duration; ends with a summary line. User stacks
    /// are useful only for programs built with frame pointers
    /// (RUSTFLAGS="-C force-frame-pointers=yes").
    Trace(TraceArgs),
}

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
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
    /// Symbolize and print the user and kernel stacks that created each socket.
    #[arg(long, short)]
    pub stacks: bool,
    /// Ring buffer size in bytes (power of two; for tests of event loss).
    #[arg(long, hide = true)]
    pub ring_bytes: Option<u32>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 2m)"))
}
