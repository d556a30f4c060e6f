//! One proxy session on webrtc-rs 0.21: two in-process PeerConnections (offerer and
//! answerer) connected over loopback, a data-channel echo, optionally an ICE restart
//! mid-session, then the teardown of both. Each connection is built through
//! `tracer_usdt::current`, so its driver task runs in its PeerConnection span and every
//! UDP socket it binds is announced by cookie and port.
use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use rtc::ice::mdns::MulticastDnsMode;
use serde_json::{Value, json};
use tracer_usdt::current::{TracedPeerConnection, TracedSocket};
use webrtc::{
    data_channel::{DataChannel, DataChannelEvent},
    peer_connection::{
        PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
        RTCPeerConnectionState, RTCSessionDescription, RTCSignalingState, SettingEngineBuilder,
    },
    runtime::{Receiver, Runtime, Sender, channel, timeout},
};

use crate::{
    leaks::{Leak, Leaked},
    selfcheck::{self, OpenUdp},
};

/// PeerConnection ids of a session: odd for the offerer, even for the answerer.
pub fn pc_ids(session: u64) -> (u64, u64) {
    (2 * session + 1, 2 * session + 2)
}

/// How a session runs (the same for every session, but for the leak).
#[derive(Clone, Debug)]
pub struct Options {
    pub mdns: MulticastDnsMode,
    pub messages: usize,
    pub ice_restart: bool,
    pub close_in_callback: bool,
    /// `with_dedicated_reactor_pool_size` (0: drivers run on the application's runtime).
    pub reactor_pool: usize,
    /// The session that, once connected, waits for a line on stdin before its teardown
    /// (a tracer attaches meanwhile).
    pub pause_session: Option<u64>,
    /// Exit the process once the first session is connected, its connections neither
    /// closed nor dropped (as a server stopped by a signal does).
    pub exit_with_open: bool,
    /// The answerer gets the offerer's host candidates as unresolvable `.local` names.
    pub remote_mdns: bool,
}

/// What `close()` called from inside an event-handler callback did.
#[derive(Debug)]
struct CallbackClose {
    returned_after: Duration,
    /// Sockets of the connection still open (per /proc) when `close()` returned.
    open_at_return: usize,
}

/// The event handler of one connection. Callbacks run on the connection's driver task.
struct Handler {
    pc_id: u64,
    /// The application's runtime, for the answerer's echo task.
    base: Arc<dyn Runtime>,
    gathered: Sender<()>,
    connected: Sender<()>,
    echo: bool,
    /// `--leak arc-cycle`: a strong reference to this handler's own connection (the
    /// connection holds the handler: a cycle, as in webrtc-rs #906).
    keep: OnceLock<Arc<dyn PeerConnection>>,
    /// `--close-in-callback`: the connection to close from the next signaling-state
    /// callback, and where to say how that went.
    close_from_callback: Mutex<Option<(TracedPeerConnection, Sender<CallbackClose>)>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            let _ = self.connected.try_send(());
        }
    }

    async fn on_signaling_state_change(&self, state: RTCSignalingState) {
        if state != RTCSignalingState::HaveRemoteOffer {
            return;
        }
        let taken = self
            .close_from_callback
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        if let Some((traced, report)) = taken {
            let started = Instant::now();
            if let Err(e) = traced.close().await {
                eprintln!("webrtc21-proxy: close() in callback of {}: {e}", self.pc_id);
            }
            let returned_after = started.elapsed();
            let open = selfcheck::open_udp_sockets();
            let open_at_return = traced
                .sockets()
                .iter()
                .filter(|s| selfcheck::is_open(&open, s.cookie))
                .count();
            let _ = report.try_send(CallbackClose {
                returned_after,
                open_at_return,
            });
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        if !self.echo {
            return;
        }
        let task = tracer_usdt::in_pc_span(self.pc_id, async move {
            while let Some(event) = dc.poll().await {
                match event {
                    DataChannelEvent::OnMessage(msg) => {
                        let _ = dc.send(msg.data).await;
                    }
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
        });
        // Dropping the handle detaches the task; it ends with the channel's events.
        drop(self.base.spawn(Box::pin(task)));
    }
}

pub struct Peer {
    pub traced: TracedPeerConnection,
    handler: Arc<Handler>,
    gathered: Receiver<()>,
    connected: Receiver<()>,
}

async fn new_peer(
    pc_id: u64,
    base: &Arc<dyn Runtime>,
    opts: &Options,
    reactor_pool: usize,
    echo: bool,
) -> anyhow::Result<Peer> {
    let (gathered_tx, gathered) = channel(1);
    let (connected_tx, connected) = channel(1);
    let handler = Arc::new(Handler {
        pc_id,
        base: base.clone(),
        gathered: gathered_tx,
        connected: connected_tx,
        echo,
        keep: OnceLock::new(),
        close_from_callback: Mutex::new(None),
    });
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(opts.mdns)
        // Without this an ICE restart keeps the sockets (webrtc-rs #868): with it, the
        // driver drops the old generation and binds a new one.
        .with_discard_local_candidates_during_ice_restart(opts.ice_restart)
        .build();
    let builder = PeerConnectionBuilder::new()
        .with_handler(handler.clone())
        .with_setting_engine(settings)
        // Loopback only: a wildcard would bind every non-loopback interface address.
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .with_dedicated_reactor_pool_size(reactor_pool);
    let traced = tracer_usdt::current::build_with_id(builder, base.clone(), pc_id)
        .await
        .with_context(|| format!("building PeerConnection {pc_id}"))?;
    Ok(Peer {
        traced,
        handler,
        gathered,
        connected,
    })
}

impl Peer {
    /// Applies a local description and waits for ICE gathering to complete (no
    /// trickle: the returned description carries every candidate).
    async fn set_local_and_gather(
        &mut self,
        base: &Arc<dyn Runtime>,
        desc: RTCSessionDescription,
    ) -> anyhow::Result<RTCSessionDescription> {
        // A `Complete` left from an earlier generation must not be taken for this one.
        while self.gathered.try_recv().is_ok() {}
        self.traced.set_local_description(desc).await?;
        if timeout(&**base, Duration::from_secs(5), self.gathered.recv())
            .await
            .is_err()
        {
            bail!(
                "PeerConnection {}: ICE gathering did not complete within 5 s",
                self.traced.pc_id()
            );
        }
        self.traced
            .local_description()
            .await
            .context("no local description after gathering")
    }
}

/// Waits for the data channel's next event of interest.
async fn next_event(
    base: &Arc<dyn Runtime>,
    dc: &Arc<dyn DataChannel>,
    within: Duration,
    want: fn(&DataChannelEvent) -> bool,
    what: &str,
) -> anyhow::Result<()> {
    let wait = async {
        while let Some(event) = dc.poll().await {
            if want(&event) {
                return Ok(());
            }
        }
        bail!("the data channel ended before {what}")
    };
    match timeout(&**base, within, wait).await {
        Ok(r) => r,
        Err(_) => bail!("no {what} within {within:?}"),
    }
}

async fn echo(
    base: &Arc<dyn Runtime>,
    dc: &Arc<dyn DataChannel>,
    session: u64,
    messages: usize,
    tag: &str,
) -> anyhow::Result<()> {
    for i in 0..messages {
        dc.send_text(&format!("{tag} packet {i} of session {session}"))
            .await?;
        next_event(
            base,
            dc,
            Duration::from_secs(10),
            |e| matches!(e, DataChannelEvent::OnMessage(_)),
            "echo",
        )
        .await
        .with_context(|| format!("session {session}: {tag} message {i}"))?;
    }
    Ok(())
}

/// Offer/answer between the two peers, candidates included.
/// Offer and answer. With `remote_mdns` the answerer receives the offerer's host
/// candidates as `<uuid>.local` names, as from a browser.
async fn negotiate(
    base: &Arc<dyn Runtime>,
    offerer: &mut Peer,
    answerer: &mut Peer,
    remote_mdns: bool,
) -> anyhow::Result<()> {
    let offer = offerer.traced.create_offer(None).await?;
    let mut offer = offerer.set_local_and_gather(base, offer).await?;
    if remote_mdns {
        let (sdp, _) = crate::mdns_names::with_mdns_host_names(&offer.sdp)?;
        offer = RTCSessionDescription::offer(sdp)?;
    }
    answerer.traced.set_remote_description(offer).await?;
    let answer = answerer.traced.create_answer(None).await?;
    let answer = answerer.set_local_and_gather(base, answer).await?;
    offerer.traced.set_remote_description(answer).await?;
    Ok(())
}

pub fn socket_json(s: &TracedSocket, open: &[OpenUdp]) -> Value {
    json!({
        "port": s.port(),
        "cookie": s.cookie,
        "kind": if s.is_mdns() { "mdns" } else { "host" },
        "generation": s.generation,
        "open": selfcheck::is_open(open, s.cookie),
    })
}

fn open_of(traced: &TracedPeerConnection, open: &[OpenUdp]) -> Vec<TracedSocket> {
    traced
        .sockets()
        .into_iter()
        .filter(|s| selfcheck::is_open(open, s.cookie))
        .collect()
}

/// What a session did, for the program's report.
pub struct SessionReport {
    pub json: Value,
    /// Every socket each connection's runtime wrapped, for the final self-check.
    pub sockets: Vec<(u64, TracedSocket)>,
}

pub async fn run(
    base: &Arc<dyn Runtime>,
    session: u64,
    leaks: &[Leak],
    opts: &Options,
) -> anyhow::Result<SessionReport> {
    let (a_id, b_id) = pc_ids(session);
    let started = Instant::now();
    // The arc-cycle leak is about `Drop`, which stops a driver only on webrtc-rs's
    // dedicated reactor pool: that connection runs there (as in #906's report).
    let offerer_pool = if leaks.contains(&Leak::ArcCycle) {
        opts.reactor_pool.max(1)
    } else {
        opts.reactor_pool
    };
    let mut offerer = new_peer(a_id, base, opts, offerer_pool, false).await?;
    let mut answerer = new_peer(b_id, base, opts, opts.reactor_pool, true).await?;
    let at_build = selfcheck::open_udp_sockets();
    let built = json!({
        a_id.to_string(): open_of(&offerer.traced, &at_build).len(),
        b_id.to_string(): open_of(&answerer.traced, &at_build).len(),
    });

    let dc = offerer.traced.create_data_channel("proxy", None).await?;
    negotiate(base, &mut offerer, &mut answerer, opts.remote_mdns).await?;
    if timeout(&**base, Duration::from_secs(20), offerer.connected.recv())
        .await
        .is_err()
    {
        bail!("session {session}: the offerer did not connect within 20 s");
    }
    next_event(
        base,
        &dc,
        Duration::from_secs(20),
        |e| matches!(e, DataChannelEvent::OnOpen),
        "open",
    )
    .await
    .with_context(|| format!("session {session}"))?;
    echo(base, &dc, session, opts.messages, "first").await?;

    let ice_restart = if opts.ice_restart {
        let gen0 = |p: &Peer| p.traced.sockets();
        let (a_before, b_before) = (gen0(&offerer), gen0(&answerer));
        offerer.traced.restart_ice().await?;
        negotiate(base, &mut offerer, &mut answerer, opts.remote_mdns).await?;
        // The restarted generation has to carry the data channel.
        echo(base, &dc, session, opts.messages, "restarted").await?;
        // Let both drivers finish the rebind before reading /proc.
        base.sleep(Duration::from_millis(150)).await;
        let open = selfcheck::open_udp_sockets();
        let side = |p: &Peer, before: &[TracedSocket]| {
            let now = p.traced.sockets();
            let new: Vec<Value> = now
                .iter()
                .filter(|s| !before.iter().any(|b| b.cookie == s.cookie))
                .map(|s| socket_json(s, &open))
                .collect();
            json!({
                "pc_id": p.traced.pc_id(),
                "old": before.iter().map(|s| socket_json(s, &open)).collect::<Vec<_>>(),
                "new": new,
            })
        };
        Some(json!([
            side(&offerer, &a_before),
            side(&answerer, &b_before)
        ]))
    } else {
        None
    };

    if opts.pause_session == Some(session) {
        crate::say(json!({"paused": session, "pid": std::process::id(), "pc_ids": [a_id, b_id]}));
        // Blocks this thread only: the drivers run on the runtime's other threads.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    if opts.exit_with_open {
        let open = selfcheck::open_udp_sockets();
        let mine = |p: &Peer| {
            open_of(&p.traced, &open)
                .iter()
                .map(|s| json!({"port": s.port(), "cookie": s.cookie}))
                .collect::<Vec<_>>()
        };
        crate::say(json!({
            "exiting_with_open": {a_id.to_string(): mine(&offerer), b_id.to_string(): mine(&answerer)},
            "pid": std::process::id(),
        }));
        // No destructor runs: neither close() nor the drop of a handle.
        std::process::exit(0);
    }

    let mut leaked = Vec::new();
    for &kind in leaks {
        leaked.push(crate::leaks::inject(
            kind,
            &offerer.traced,
            &offerer.handler.keep,
        )?);
    }
    // Both leaks end with the application letting go of the connection without close().
    let drop_without_close = !leaks.is_empty();

    let callback_close = if opts.close_in_callback {
        let (tx, mut rx) = channel(1);
        if let Ok(mut slot) = answerer.handler.close_from_callback.lock() {
            *slot = Some((answerer.traced.clone(), tx));
        }
        // A renegotiation offer puts the answerer in have-remote-offer: its callback
        // closes it from inside the driver.
        let offer = offerer.traced.create_offer(None).await?;
        answerer.traced.set_remote_description(offer).await?;
        let Ok(Some(r)) = timeout(&**base, Duration::from_secs(5), rx.recv()).await else {
            bail!("session {session}: the callback did not close the answerer within 5 s");
        };
        base.sleep(Duration::from_millis(20)).await;
        let later = open_of(&answerer.traced, &selfcheck::open_udp_sockets()).len();
        Some(json!({
            "pc_id": b_id,
            "returned_us": r.returned_after.as_micros() as u64,
            "open_at_return": r.open_at_return,
            "open_20ms_later": later,
        }))
    } else {
        None
    };

    // Teardown. close() reports teardown hiccups yet still closes: log them, as
    // applications do, and carry on.
    let mut teardown = serde_json::Map::new();
    for (peer, role) in [(&offerer, "offerer"), (&answerer, "answerer")] {
        let how = if role == "offerer" && drop_without_close {
            "drop"
        } else if peer.traced.close_called() {
            "closed-in-callback"
        } else {
            if let Err(e) = peer.traced.close().await {
                eprintln!(
                    "webrtc21-proxy: PeerConnection {} close: {e}",
                    peer.traced.pc_id()
                );
            }
            "close"
        };
        teardown.insert(peer.traced.pc_id().to_string(), json!(how));
    }
    let seconds = started.elapsed().as_secs_f64();
    let sockets: Vec<(u64, TracedSocket)> = [&offerer, &answerer]
        .iter()
        .flat_map(|p| {
            p.traced
                .sockets()
                .into_iter()
                .map(|s| (p.traced.pc_id(), s))
        })
        .collect();
    drop(dc);
    let Peer { traced: a, .. } = offerer;
    let Peer { traced: b, .. } = answerer;
    // Dropping the handles: `pc_dropped` for a connection never closed.
    drop((a, b));

    let open_now = selfcheck::open_udp_sockets();
    base.sleep(Duration::from_millis(200)).await;
    let open_later = selfcheck::open_udp_sockets();
    let pcs: Vec<Value> = [(a_id, "offerer"), (b_id, "answerer")]
        .iter()
        .map(|(id, role)| {
            let mine: Vec<&TracedSocket> =
                sockets.iter().filter(|(p, _)| p == id).map(|(_, s)| s).collect();
            json!({
                "pc_id": id,
                "role": role,
                "teardown": teardown.get(&id.to_string()),
                "sockets": mine.iter().map(|s| socket_json(s, &open_later)).collect::<Vec<_>>(),
                "open_right_after_teardown": mine.iter().filter(|s| selfcheck::is_open(&open_now, s.cookie)).count(),
                "open_200ms_after_teardown": mine.iter().filter(|s| selfcheck::is_open(&open_later, s.cookie)).count(),
            })
        })
        .collect();
    let leaked: Vec<Value> = leaked
        .iter()
        .map(|l: &Leaked| {
            let still: Vec<Value> = sockets
                .iter()
                .filter(|(p, s)| *p == l.pc_id && selfcheck::is_open(&open_later, s.cookie))
                .map(|(_, s)| json!({"port": s.port(), "cookie": s.cookie}))
                .collect();
            json!({"kind": l.kind.name(), "pc_id": l.pc_id, "still_open": still})
        })
        .collect();
    Ok(SessionReport {
        json: json!({
            "session": session,
            "pc_ids": [a_id, b_id],
            "runtime": base.name(),
            "sockets_after_build": built,
            "pcs": pcs,
            "ice_restart": ice_restart,
            "close_in_callback": callback_close,
            "leaked": leaked,
            "seconds": seconds,
        }),
        sockets,
    })
}
