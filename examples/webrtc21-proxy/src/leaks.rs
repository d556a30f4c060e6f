//! UDP socket leaks of webrtc-rs 0.21, injected on request, each the way an application
//! really gets it: the connection's driver task keeps running, and with it the sockets
//! it bound (host and mDNS), after the application is done with the connection.
use std::sync::{Arc, OnceLock};

use tracer_usdt::current::TracedPeerConnection;
use webrtc::peer_connection::PeerConnection;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Leak {
    /// The connection's own event handler keeps a strong reference to the connection
    /// (for renegotiation, say): the connection holds its handler and the handler the
    /// connection, a cycle as in webrtc-rs #906 (`PeerConnectionRef` and
    /// `RtpTransceiverImpl`). The application lets go of the connection relying on
    /// `Drop`, which on a dedicated reactor pool (where this connection runs) stops the
    /// driver, but the cycle means `Drop` never runs: driver and sockets stay.
    /// (With `close()` the cycle leaks only memory: close() stops the driver anyway.)
    ArcCycle,
    /// The application lets go of the connection without `close()` (the last handle is
    /// dropped): in 0.21 `Drop` stops the driver only on a dedicated reactor pool.
    DropWithoutClose,
}

impl Leak {
    pub fn name(self) -> &'static str {
        match self {
            Self::ArcCycle => "arc-cycle",
            Self::DropWithoutClose => "drop-without-close",
        }
    }
}

/// A leak injected into a connection.
#[derive(Clone, Copy, Debug)]
pub struct Leaked {
    pub kind: Leak,
    pub pc_id: u64,
}

pub fn inject(
    kind: Leak,
    traced: &TracedPeerConnection,
    handler_slot: &OnceLock<Arc<dyn PeerConnection>>,
) -> anyhow::Result<Leaked> {
    match kind {
        Leak::ArcCycle => {
            if handler_slot.set(traced.pc().clone()).is_err() {
                anyhow::bail!("the handler already holds its connection");
            }
        }
        // Done at teardown: the session skips close() for this connection.
        Leak::DropWithoutClose => {}
    }
    Ok(Leaked {
        kind,
        pc_id: traced.pc_id(),
    })
}
