//! webrtc-proxy: a small media-proxy-like webrtc-rs program for sockscope's tests and
//! demo. It runs sessions of two in-process RTCPeerConnections connected over
//! loopback (data channel echo), closes them, and can leak UDP sockets in realistic
//! ways. Every PeerConnection is announced with `tracer-usdt` markers.
//!
//! Network: loopback only. `--netns` moves the program into a network namespace of
//! its own with only `lo`; without it, it refuses to run where other interfaces exist.
//!
//! Output: one JSON object per line (sessions, ports, injected leaks, and with
//! `--self-check` the UDP sockets still open after all sessions closed, from /proc).
//!
//! `--remote-mdns` is no injected leak: the offerer plays a browser whose host
//! candidates reach the answerer as unresolvable `<uuid>.local` names, and both
//! PeerConnections close normally. Whatever stays open is webrtc-rs's doing (on
//! webrtc-rs <= 0.17.1, the answerer's mDNS socket: webrtc-rs #831, fixed by #818).
//! Build `examples/webrtc-proxy-0.17.1` for the same program on webrtc-rs 0.17.1.
mod leaks;
mod mdns_names;
mod netns;
// Shared with webrtc21-proxy, which uses all of it (cookies, is_open).
#[allow(dead_code)]
mod selfcheck;
mod session;

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use serde_json::json;

use crate::leaks::Leak;

#[derive(Parser, Debug)]
#[command(
    name = "webrtc-proxy",
    about = "webrtc-rs sessions over loopback, with injectable UDP socket leaks"
)]
struct Args {
    /// How many sessions (each: two PeerConnections) to run.
    #[arg(long, default_value_t = 3)]
    sessions: u64,
    /// Run all sessions at the same time instead of one after another.
    #[arg(long)]
    concurrent: bool,
    /// Leak a UDP socket this way (repeatable).
    #[arg(long, value_enum)]
    leak: Vec<Leak>,
    /// Which session leaks (default: every session).
    #[arg(long)]
    leak_session: Option<u64>,
    /// Use a per-session UDP mux socket even without a leak that needs one.
    #[arg(long)]
    udp_mux: bool,
    /// Data channel messages echoed per session.
    #[arg(long, default_value_t = 3)]
    messages: usize,
    /// Browser-like offerer: the answerer (mDNS QueryOnly) receives the offerer's host
    /// candidates as unresolvable `<uuid>.local` names instead of 127.0.0.1. The data
    /// channel may then not open; the session closes after --open-timeout regardless.
    #[arg(long)]
    remote_mdns: bool,
    /// Run mDNS (QueryOnly) on the answerer without munging anything: the control for
    /// --remote-mdns (an mDNS socket per answerer, no query).
    #[arg(long)]
    answerer_mdns: bool,
    /// How long (ms) a session waits for its data channel to open (an error, except
    /// with --remote-mdns).
    #[arg(long, default_value_t = 20_000)]
    open_timeout: u64,
    /// Enter a network namespace with only `lo` first (needs root).
    #[arg(long)]
    netns: bool,
    /// Allow running where interfaces other than lo exist (traffic still goes to
    /// loopback candidates only).
    #[arg(long)]
    allow_host_net: bool,
    /// After all sessions, wait this long (ms) and print the UDP sockets still open.
    #[arg(long)]
    self_check: Option<u64>,
    /// Stay alive this long (ms) at the end, so a tracer can judge open sockets.
    #[arg(long, default_value_t = 0)]
    linger: u64,
    /// Exit without cleaning up (as a crash would): the kernel closes what is left.
    #[arg(long)]
    exit_without_cleanup: bool,
    /// Exit once the first session is connected, its PeerConnections neither closed nor
    /// dropped, as a server stopped by a signal does.
    #[arg(long)]
    exit_with_open: bool,
}

/// The webrtc-rs version this binary was built against: each package that builds this
/// source pins `webrtc` exactly (`=0.17.2` here, `=0.17.1` in webrtc-proxy-0171).
const WEBRTC_VERSION: &str = match env!("CARGO_PKG_NAME").as_bytes() {
    b"webrtc-proxy-0171" => "0.17.1",
    _ => "0.17.2",
};

fn say(v: serde_json::Value) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(code) = netns::prepare(args.netns, args.allow_host_net, "webrtc-proxy") {
        return code;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("webrtc-proxy: cannot start tokio: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(run(&args));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webrtc-proxy: {e:#}");
            ExitCode::from(1)
        }
    };
    if args.exit_without_cleanup {
        std::process::exit(0);
    }
    // Leaked tasks are dropped with the runtime: that is the end of the program.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

async fn run(args: &Args) -> anyhow::Result<()> {
    say(json!({
        "pid": std::process::id(),
        "sessions": args.sessions,
        "interfaces": netns::interfaces(),
        "webrtc": WEBRTC_VERSION,
        "remote_mdns": args.remote_mdns,
    }));
    let opts = session::Options {
        use_mux: args.udp_mux,
        messages: args.messages,
        remote_mdns: args.remote_mdns,
        answerer_mdns: args.answerer_mdns,
        open_timeout: Duration::from_millis(args.open_timeout),
        snapshot: args.self_check.is_some(),
        exit_with_open: args.exit_with_open,
    };
    let leak_for = |s: u64| -> Vec<Leak> {
        if args.leak_session.is_none_or(|k| k == s) {
            args.leak.clone()
        } else {
            Vec::new()
        }
    };
    let mut reports = Vec::new();
    let started = std::time::Instant::now();
    if args.concurrent {
        let tasks: Vec<_> = (0..args.sessions)
            .map(|s| {
                let leaks = leak_for(s);
                tokio::spawn(async move { session_with_leaks(s, leaks, opts).await })
            })
            .collect();
        for t in tasks {
            reports.extend(t.await??);
        }
    } else {
        for s in 0..args.sessions {
            reports.extend(session_with_leaks(s, leak_for(s), opts).await?);
        }
    }
    // Sessions per second, for `cargo xtask bench` (traced vs untraced).
    let sessions_seconds = started.elapsed().as_secs_f64();
    for r in &reports {
        say(json!({
            "pc_ids": [r.pc_ids.0, r.pc_ids.1],
            "ports": [r.ports.0, r.ports.1],
            "seconds": r.seconds,
            "leaked": r.leaked.iter().map(|l| json!({"kind": l.kind.name(), "pc_id": l.pc_id, "port": l.port})).collect::<Vec<_>>(),
            "connected": r.connected,
            "mdns_names": r.mdns_names,
            "udp_before_close": r.udp_before_close,
        }));
    }
    if let Some(ms) = args.self_check {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let open: Vec<_> = selfcheck::open_udp_sockets()
            .iter()
            .map(|s| json!({"inode": s.inode, "port": s.port}))
            .collect();
        say(json!({"self_check": {"open_udp": open}}));
    }
    tokio::time::sleep(Duration::from_millis(args.linger)).await;
    say(
        json!({"done": true, "pid": std::process::id(), "sessions": args.sessions, "sessions_seconds": sessions_seconds}),
    );
    Ok(())
}

/// A session with its leaks (at most one session-level leak; each extra kind runs in
/// a session of its own numbering space is overkill: kinds are applied one at a time).
async fn session_with_leaks(
    s: u64,
    leaks: Vec<Leak>,
    opts: session::Options,
) -> anyhow::Result<Vec<session::SessionReport>> {
    if leaks.len() > 1 {
        anyhow::bail!("one --leak kind per session (use --leak-session to spread them)");
    }
    Ok(vec![session::run(s, leaks.first().copied(), opts).await?])
}
