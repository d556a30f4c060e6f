//! One proxy session: two in-process RTCPeerConnections (offerer and answerer)
//! connected over loopback, a data channel exchange, then `close()` of both. Each
//! PeerConnection announces its life through the `tracer-usdt` markers.
//!
//! With `remote_mdns`, the offerer plays a browser: the offer the answerer receives
//! names its host candidates `<uuid>.local` (mDNS host names, RFC draft
//! rtcweb-mdns-ice-candidates) instead of 127.0.0.1, and the answerer runs mDNS in
//! `QueryOnly` mode, so it starts an mDNS query for each name. Nobody answers them.
use std::{os::fd::AsRawFd as _, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use tokio::{net::UdpSocket, sync::mpsc};
use tracer_usdt::{
    in_pc_span,
    legacy::{TracedPeerConnection, candidate_ports},
};
use webrtc::{
    api::{APIBuilder, setting_engine::SettingEngine},
    data_channel::{RTCDataChannel, data_channel_message::DataChannelMessage},
    ice::{
        mdns::MulticastDnsMode,
        network_type::NetworkType,
        udp_mux::{UDPMux as _, UDPMuxDefault, UDPMuxParams},
        udp_network::UDPNetwork,
    },
    peer_connection::sdp::session_description::RTCSessionDescription,
    peer_connection::{RTCPeerConnection, configuration::RTCConfiguration},
};

use crate::leaks::{Leak, Leaked};

/// PeerConnection ids of a session: odd for the offerer, even for the answerer.
pub fn pc_ids(session: u64) -> (u64, u64) {
    (2 * session + 1, 2 * session + 2)
}

/// Loopback only, IPv4 UDP only: no packet can leave `lo` (mDNS, when on, goes to
/// 224.0.0.251, which the program's network namespace routes to `lo`).
fn setting_engine(mux: Option<Arc<UDPMuxDefault>>, mdns: MulticastDnsMode) -> SettingEngine {
    let mut s = SettingEngine::default();
    s.set_include_loopback_candidate(true);
    s.set_interface_filter(Box::new(|name: &str| name == "lo"));
    s.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    s.set_network_types(vec![NetworkType::Udp4]);
    s.set_ice_multicast_dns_mode(mdns);
    if let Some(mux) = mux {
        s.set_udp_network(UDPNetwork::Muxed(mux));
    }
    s
}

/// A per-session UDP socket multiplexing all ICE traffic of one PeerConnection, as
/// SFUs commonly configure webrtc-rs (`UDPNetwork::Muxed`). The application owns it
/// (`close()` of the PeerConnection does not close it): this guard closes it when the
/// last reference goes, so whatever keeps a reference keeps the socket open.
pub struct MuxGuard {
    mux: Arc<UDPMuxDefault>,
    pub port: u16,
    /// The socket's fd, valid while `mux` (which owns the socket) lives.
    fd: std::os::fd::RawFd,
}

impl Drop for MuxGuard {
    fn drop(&mut self) {
        let mux = self.mux.clone();
        tokio::spawn(async move {
            let _ = mux.close().await;
        });
    }
}

/// Binds the session's mux socket. A plain function that is never inlined, so the
/// socket's creating stack names it (an `async fn`'s body is polled as an anonymous
/// `{async_fn#0}` closure, which symbolizes without this name).
#[inline(never)]
fn open_session_mux() -> anyhow::Result<Arc<MuxGuard>> {
    let socket =
        std::net::UdpSocket::bind("127.0.0.1:0").context("binding the session's UDP mux socket")?;
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket)?;
    let port = socket.local_addr()?.port();
    let fd = socket.as_raw_fd();
    Ok(Arc::new(MuxGuard {
        mux: UDPMuxDefault::new(UDPMuxParams::new(socket)),
        port,
        fd,
    }))
}

pub struct Peer {
    /// The PeerConnection, announced to sockscope (tracer-usdt's webrtc helper).
    pub traced: TracedPeerConnection,
    pub mux: Option<Arc<MuxGuard>>,
}

impl Peer {
    pub fn pc(&self) -> &Arc<RTCPeerConnection> {
        &self.traced.pc
    }
}

async fn new_peer(pc_id: u64, use_mux: bool, mdns: MulticastDnsMode) -> anyhow::Result<Peer> {
    let mux = if use_mux {
        Some(open_session_mux()?)
    } else {
        None
    };
    let network = mux.as_ref().map(|m| m.mux.clone());
    let api = APIBuilder::new()
        .with_setting_engine(setting_engine(network, mdns))
        .build();
    let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    let traced = TracedPeerConnection::with_id(pc, pc_id);
    if let Some(m) = &mux {
        // The application owns this socket: announce it exactly (cookie) and by port.
        traced.announce_socket(&m.fd, m.port);
    }
    Ok(Peer { traced, mux })
}

/// What a session did, for the program's report.
pub struct SessionReport {
    pub pc_ids: (u64, u64),
    pub ports: (Vec<u16>, Vec<u16>),
    pub leaked: Vec<Leaked>,
    /// From creating the PeerConnections to both closed.
    pub seconds: f64,
    /// Whether the data channel opened (always, unless `remote_mdns`).
    pub connected: bool,
    /// The `.local` names the answerer received instead of the offerer's addresses.
    pub mdns_names: Vec<String>,
    /// Ports of the process's UDP sockets just before `close()` (from /proc; with
    /// `snapshot`): every session's, when sessions run concurrently.
    pub udp_before_close: Option<Vec<u16>>,
}

/// How a session runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// A per-session UDP mux socket.
    pub use_mux: bool,
    /// Data channel messages echoed.
    pub messages: usize,
    /// The offerer's host candidates reach the answerer as unresolvable `.local` names.
    pub remote_mdns: bool,
    /// The answerer runs mDNS (`QueryOnly`) even without `.local` names to resolve.
    pub answerer_mdns: bool,
    /// How long to wait for the data channel to open.
    pub open_timeout: Duration,
    /// Read the process's open UDP sockets from /proc just before closing.
    pub snapshot: bool,
    /// Exit the process once the session is connected, its PeerConnections neither
    /// closed nor dropped (as a server stopped by a signal does).
    pub exit_with_open: bool,
}

pub async fn run(session: u64, leak: Option<Leak>, opts: Options) -> anyhow::Result<SessionReport> {
    let Options {
        use_mux,
        messages,
        remote_mdns,
        answerer_mdns,
        open_timeout,
        snapshot,
        exit_with_open,
    } = opts;
    let (a_id, b_id) = pc_ids(session);
    let started = std::time::Instant::now();
    // The leaks that need an app-owned socket use the muxed network.
    let use_mux = use_mux || leak.is_some_and(Leak::needs_mux);
    // mDNS stays off unless the answerer has `.local` candidates to resolve (or is
    // asked to run it anyway).
    let answerer_mdns = if remote_mdns || answerer_mdns {
        MulticastDnsMode::QueryOnly
    } else {
        MulticastDnsMode::Disabled
    };
    let offerer = in_pc_span(a_id, new_peer(a_id, use_mux, MulticastDnsMode::Disabled)).await?;
    let answerer = in_pc_span(b_id, new_peer(b_id, use_mux, answerer_mdns)).await?;

    // The answerer echoes every message back. The handler holds the channel weakly:
    // a strong reference would be a channel -> handler -> channel cycle that keeps the
    // PeerConnection's transports (and a muxed socket) alive after close().
    answerer
        .pc()
        .on_data_channel(Box::new(|dc: Arc<RTCDataChannel>| {
            Box::pin(async move {
                let echo = Arc::downgrade(&dc);
                dc.on_message(Box::new(move |msg: DataChannelMessage| {
                    let echo = echo.clone();
                    Box::pin(async move {
                        if let Some(dc) = echo.upgrade() {
                            let _ = dc.send(&msg.data).await;
                        }
                    })
                }));
            })
        }));
    let (got_tx, mut got_rx) = mpsc::channel::<()>(messages.max(1));
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let dc = in_pc_span(a_id, offerer.pc().create_data_channel("proxy", None)).await?;
    dc.on_open(Box::new(move || {
        Box::pin(async move {
            let _ = open_tx.send(()).await;
        })
    }));
    dc.on_message(Box::new(move |_msg: DataChannelMessage| {
        let got_tx = got_tx.clone();
        Box::pin(async move {
            let _ = got_tx.send(()).await;
        })
    }));

    let offer_sdp = in_pc_span(a_id, async {
        let offer = offerer.pc().create_offer(None).await?;
        Ok::<_, anyhow::Error>(
            offerer
                .traced
                .set_local_description_and_gather(offer)
                .await?,
        )
    })
    .await?;
    let (received_offer, mdns_names) = if remote_mdns {
        crate::mdns_names::with_mdns_host_names(&offer_sdp)?
    } else {
        (offer_sdp.clone(), Vec::new())
    };
    let answer_sdp = in_pc_span(b_id, async {
        let offer = RTCSessionDescription::offer(received_offer)?;
        answerer.pc().set_remote_description(offer).await?;
        let answer = answerer.pc().create_answer(None).await?;
        Ok::<_, anyhow::Error>(
            answerer
                .traced
                .set_local_description_and_gather(answer)
                .await?,
        )
    })
    .await?;
    in_pc_span(a_id, async {
        let answer = RTCSessionDescription::answer(answer_sdp.clone())?;
        offerer.pc().set_remote_description(answer).await
    })
    .await?;

    let connected = tokio::time::timeout(open_timeout, open_rx.recv())
        .await
        .is_ok();
    if !connected && !remote_mdns {
        bail!(
            "session {session}: the data channel did not open within {} ms",
            open_timeout.as_millis()
        );
    }
    // With unresolvable remote names, not connecting is a possible outcome: the
    // session then closes its PeerConnections all the same.
    for i in 0..if connected { messages } else { 0 } {
        dc.send_text(format!("packet {i} of session {session}"))
            .await?;
        if tokio::time::timeout(Duration::from_secs(10), got_rx.recv())
            .await
            .is_err()
        {
            bail!("session {session}: no echo of message {i} within 10 s");
        }
    }

    if exit_with_open {
        let open: Vec<_> = crate::selfcheck::open_udp_sockets()
            .iter()
            .map(|s| serde_json::json!({"port": s.port, "cookie": s.cookie}))
            .collect();
        crate::say(serde_json::json!({
            "exiting_with_open": {"pc_ids": [a_id, b_id], "open_udp": open},
            "pid": std::process::id(),
        }));
        // No destructor runs: neither close() nor the drop of a handle.
        std::process::exit(0);
    }

    let leaked = match leak {
        Some(kind) => in_pc_span(a_id, crate::leaks::inject(kind, &offerer)).await?,
        None => Vec::new(),
    };

    let udp_before_close = snapshot.then(|| {
        crate::selfcheck::open_udp_sockets()
            .into_iter()
            .map(|s| s.port)
            .collect()
    });
    for peer in [&offerer, &answerer] {
        if leak == Some(Leak::DropWithoutClose) && peer.traced.pc_id == a_id {
            continue; // let go of below, without close()
        }
        // close() reports teardown hiccups (e.g. an SCTP reset racing the association
        // shutdown) yet still closes: log them, as applications do, and carry on.
        if let Err(e) = peer.traced.close().await {
            eprintln!(
                "webrtc-proxy: PeerConnection {} close: {e}",
                peer.traced.pc_id
            );
        }
    }
    let ports = (candidate_ports(&offer_sdp), candidate_ports(&answer_sdp));
    // Dropping the peers drops the session's mux guards: that is the cleanup.
    drop((offerer, answerer));
    Ok(SessionReport {
        pc_ids: (a_id, b_id),
        ports,
        leaked,
        seconds: started.elapsed().as_secs_f64(),
        connected,
        mdns_names,
        udp_before_close,
    })
}
