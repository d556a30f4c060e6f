//! webrtc21-proxy: webrtc-proxy for the current webrtc-rs line (0.21, the async layer
//! over the Sans-I/O `rtc` core), on tokio or smol. It runs sessions of two in-process
//! PeerConnections connected over loopback (data-channel echo, optionally an ICE
//! restart), tears them down, and can leak UDP sockets the way 0.21 applications do.
//! Every connection is built through `tracer_usdt::current`: its driver task runs in its
//! PeerConnection span and each socket it binds is announced by cookie and port.
//!
//! Network: loopback only. `--netns` moves the program into a network namespace of
//! its own with only `lo` (multicast on, so mDNS stays on it); without it, it refuses
//! to run where other interfaces exist.
//!
//! Output: one JSON object per line: a start line, one line per session (pc_ids, each
//! connection's sockets with port, SO_COOKIE, kind, generation and whether /proc still
//! shows it, what was leaked), with `--self-check` the UDP sockets still open after all
//! sessions (from /proc, with the pc_id that announced each), and a `done` line.
mod leaks;
#[path = "../../webrtc-proxy/src/mdns_names.rs"]
mod mdns_names;
#[path = "../../webrtc-proxy/src/netns.rs"]
mod netns;
#[path = "../../webrtc-proxy/src/selfcheck.rs"]
mod selfcheck;
mod session;

use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use rtc::ice::mdns::MulticastDnsMode;
use serde_json::json;
use webrtc::runtime::Runtime;

use crate::leaks::Leak;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RuntimeKind {
    Tokio,
    Smol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mdns {
    /// No mDNS socket.
    Off,
    /// webrtc-rs's default: an mDNS socket (224.0.0.251:5353) that resolves `.local`
    /// candidates.
    QueryOnly,
    /// Also hides host candidates behind `.local` names.
    QueryAndGather,
}

#[derive(Parser, Debug)]
#[command(
    name = "webrtc21-proxy",
    about = "webrtc-rs 0.21 sessions over loopback (tokio or smol), with injectable UDP socket leaks"
)]
struct Args {
    /// How many sessions (each: two PeerConnections) to run, one after another.
    #[arg(long, default_value_t = 3)]
    sessions: u64,
    /// The async runtime (each needs its cargo feature: `tokio`, the default, or `smol`).
    #[arg(long, value_enum, default_value_t = default_runtime())]
    runtime: RuntimeKind,
    /// Leak the offerer's UDP sockets this way (repeatable).
    #[arg(long, value_enum)]
    leak: Vec<Leak>,
    /// Same as `--leak drop-without-close`: the offerer is dropped without close().
    #[arg(long)]
    drop_without_close: bool,
    /// Which session leaks (default: every session).
    #[arg(long)]
    leak_session: Option<u64>,
    /// ICE restart mid-session (the offerer restarts; both rebind their sockets, as
    /// `discard_local_candidates_during_ice_restart` asks), then echo again.
    #[arg(long)]
    ice_restart: bool,
    /// The answerer closes itself from inside an event-handler callback (its
    /// signaling-state callback, on a renegotiation offer), reporting when close()
    /// returned and how many of its sockets were still open then.
    #[arg(long)]
    close_in_callback: bool,
    /// mDNS mode of every connection.
    #[arg(long, value_enum, default_value_t = Mdns::QueryOnly)]
    mdns: Mdns,
    /// Run the drivers on webrtc-rs's dedicated reactor pool of this many threads
    /// (`with_dedicated_reactor_pool_size`; 0: on the application's runtime).
    #[arg(long, default_value_t = 0)]
    reactor_pool: usize,
    /// Data channel messages echoed per session (and again after an ICE restart).
    #[arg(long, default_value_t = 3)]
    messages: usize,
    /// Enter a network namespace with only `lo` first (needs root).
    #[arg(long)]
    netns: bool,
    /// Allow running where interfaces other than lo exist (sockets still bind
    /// 127.0.0.1 only).
    #[arg(long)]
    allow_host_net: bool,
    /// After all sessions, wait this long (ms) and print the UDP sockets still open.
    #[arg(long)]
    self_check: Option<u64>,
    /// Stay alive this long (ms) at the end, so a tracer can judge open sockets.
    #[arg(long, default_value_t = 0)]
    linger: u64,
    /// Once session N is connected, print `{"paused":N,"pid":P}` and wait for a line on
    /// stdin before its teardown (a tracer attaches meanwhile).
    #[arg(long, value_name = "N")]
    pause_session: Option<u64>,
    /// Exit once the first session is connected, its connections neither closed nor
    /// dropped, as a server stopped by a signal does.
    #[arg(long)]
    exit_with_open: bool,
    /// A browser-like offer: the answerer receives the offerer's host candidates as
    /// unresolvable `<uuid>.local` names (webrtc-rs #831's trigger on 0.17.1). The
    /// session still ends in bounded time even if they do not connect.
    #[arg(long)]
    remote_mdns: bool,
}

fn default_runtime() -> RuntimeKind {
    if cfg!(feature = "tokio") {
        RuntimeKind::Tokio
    } else {
        RuntimeKind::Smol
    }
}

fn say(v: serde_json::Value) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(code) = netns::prepare(args.netns, args.allow_host_net, "webrtc21-proxy") {
        return code;
    }
    let result = match args.runtime {
        RuntimeKind::Tokio => run_tokio(&args),
        RuntimeKind::Smol => run_smol(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webrtc21-proxy: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(feature = "tokio")]
fn run_tokio(args: &Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let base: Arc<dyn Runtime> = Arc::new(webrtc::runtime::TokioRuntime);
    let result = rt.block_on(run(args, base));
    // Leaked drivers are dropped with the runtime: that is the end of the program.
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

#[cfg(not(feature = "tokio"))]
fn run_tokio(_: &Args) -> anyhow::Result<()> {
    anyhow::bail!("built without the `tokio` feature: rebuild with --features tokio")
}

#[cfg(feature = "smol")]
fn run_smol(args: &Args) -> anyhow::Result<()> {
    let base: Arc<dyn Runtime> = Arc::new(webrtc::runtime::SmolRuntime);
    // smol's global executor runs spawned tasks (the drivers) on its own threads.
    smol::block_on(run(args, base))
}

#[cfg(not(feature = "smol"))]
fn run_smol(_: &Args) -> anyhow::Result<()> {
    anyhow::bail!("built without the `smol` feature: rebuild with --features smol")
}

async fn run(args: &Args, base: Arc<dyn Runtime>) -> anyhow::Result<()> {
    let mut leaks = args.leak.clone();
    if args.drop_without_close && !leaks.contains(&Leak::DropWithoutClose) {
        leaks.push(Leak::DropWithoutClose);
    }
    let opts = session::Options {
        mdns: match args.mdns {
            Mdns::Off => MulticastDnsMode::Disabled,
            Mdns::QueryOnly => MulticastDnsMode::QueryOnly,
            Mdns::QueryAndGather => MulticastDnsMode::QueryAndGather,
        },
        messages: args.messages,
        ice_restart: args.ice_restart,
        close_in_callback: args.close_in_callback,
        reactor_pool: args.reactor_pool,
        pause_session: args.pause_session,
        exit_with_open: args.exit_with_open,
        remote_mdns: args.remote_mdns,
    };
    say(json!({
        "pid": std::process::id(),
        "runtime": base.name(),
        "sessions": args.sessions,
        "interfaces": netns::interfaces(),
        "mdns": format!("{:?}", args.mdns),
        "leaks": leaks.iter().map(|l| l.name()).collect::<Vec<_>>(),
    }));
    let mut all_sockets = Vec::new();
    let started = std::time::Instant::now();
    for s in 0..args.sessions {
        let these: &[Leak] = if args.leak_session.is_none_or(|k| k == s) {
            &leaks
        } else {
            &[]
        };
        let report = session::run(&base, s, these, &opts).await?;
        say(report.json);
        all_sockets.extend(report.sockets);
    }
    // Sessions per second, for benchmarks (traced vs untraced).
    let sessions_seconds = started.elapsed().as_secs_f64();
    if let Some(ms) = args.self_check {
        base.sleep(Duration::from_millis(ms)).await;
        let open: Vec<_> = selfcheck::open_udp_sockets()
            .iter()
            .map(|o| {
                let pc_id = all_sockets
                    .iter()
                    .find(|(_, s)| o.cookie.is_some() && s.cookie == o.cookie)
                    .map(|(p, _)| *p);
                json!({"inode": o.inode, "port": o.port, "fd": o.fd, "cookie": o.cookie, "pc_id": pc_id})
            })
            .collect();
        say(json!({"self_check": {"open_udp": open}}));
    }
    base.sleep(Duration::from_millis(args.linger)).await;
    say(json!({
        "done": true,
        "pid": std::process::id(),
        "sessions": args.sessions,
        "sessions_seconds": sessions_seconds,
    }));
    Ok(())
}
