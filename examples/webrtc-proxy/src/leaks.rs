//! Realistic UDP socket leaks, injected on request, each of a kind webrtc-rs users
//! meet: the session's socket outlives `RTCPeerConnection::close()`.
use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};
use webrtc::mdns::{config::Config as MdnsConfig, conn::DnsConn};

use crate::session::Peer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Leak {
    /// A forwarding task holds the session's UDP mux and awaits a future whose waker
    /// is lost (its sender was forgotten): it never ends, the socket never closes.
    Task,
    /// The PeerConnection's own state handler captures the PeerConnection and the
    /// session's mux: a reference cycle through webrtc-rs's handler storage.
    ArcCycle,
    /// A webrtc-rs mDNS connection (webrtc_mdns::DnsConn) whose query task is never
    /// stopped and which is never closed.
    Mdns,
    /// The application lets go of the offerer without calling `close()`: its last
    /// handle is dropped (an error path, a forgotten teardown).
    DropWithoutClose,
}

impl Leak {
    pub fn needs_mux(self) -> bool {
        matches!(self, Self::Task | Self::ArcCycle)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::ArcCycle => "arc-cycle",
            Self::Mdns => "mdns",
            Self::DropWithoutClose => "drop-without-close",
        }
    }
}

/// A socket left open on purpose.
#[derive(Clone, Copy, Debug)]
pub struct Leaked {
    pub kind: Leak,
    pub pc_id: u64,
    pub port: u16,
}

/// mDNS port (webrtc-rs binds 0.0.0.0:5353 with SO_REUSEADDR).
const MDNS_PORT: u16 = 5353;

pub async fn inject(kind: Leak, peer: &Peer) -> anyhow::Result<Vec<Leaked>> {
    let leaked = |port| {
        vec![Leaked {
            kind,
            pc_id: peer.traced.pc_id,
            port,
        }]
    };
    match kind {
        Leak::Task => {
            let guard = peer
                .mux
                .clone()
                .context("task leak needs the session mux")?;
            let port = guard.port;
            let (never_sent, never_ready) = oneshot::channel::<()>();
            // The lost waker: the sender lives forever, so the receiver never wakes.
            std::mem::forget(never_sent);
            tokio::spawn(async move {
                let _forwarding = guard;
                let _ = never_ready.await;
            });
            Ok(leaked(port))
        }
        Leak::ArcCycle => {
            let guard = peer
                .mux
                .clone()
                .context("arc-cycle leak needs the session mux")?;
            let port = guard.port;
            let pc = peer.pc().clone();
            peer.pc()
                .on_peer_connection_state_change(Box::new(move |state| {
                    // Keeps the PeerConnection (and so this handler) and the mux alive.
                    let _cycle = (&pc, &guard);
                    Box::pin(async move {
                        let _ = state;
                    })
                }));
            Ok(leaked(port))
        }
        // Done at teardown: the session skips close() for this PeerConnection. Which of
        // its sockets stay open is for the kernel to say (the host candidates' ports).
        Leak::DropWithoutClose => Ok(Vec::new()),
        Leak::Mdns => {
            let config = MdnsConfig {
                query_interval: Duration::from_secs(1),
                ..Default::default()
            };
            let conn = Arc::new(
                DnsConn::server(format!("0.0.0.0:{MDNS_PORT}").parse()?, config)
                    .context("starting mDNS")?,
            );
            let (stop_query, query_stopped) = mpsc::channel::<()>(1);
            // Never signalled, never dropped: the query loop runs forever.
            std::mem::forget(stop_query);
            tokio::spawn(async move {
                let _ = conn.query("sockscope-peer.local", query_stopped).await;
            });
            Ok(leaked(MDNS_PORT))
        }
    }
}
