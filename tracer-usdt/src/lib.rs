//! USDT markers an application fires so `sockscope` can tie UDP sockets to the
//! PeerConnection that owns them.
//!
//! Every marker is a `nop` plus an ELF note (`.note.stapsdt`, provider `sockscope`):
//! when no tracer is attached it costs one instruction and evaluating its arguments.
//! There is no semaphore, so the arguments are always evaluated: keep them cheap.
//!
//! Ids are chosen by the application; 0 means "no PeerConnection" and is never a
//! valid id.
//!
//! Features: `tracing` ([`PcSpanLayer`]: spans with a `pc_id` field become
//! PeerConnection spans) and `webrtc` ([`TracedPeerConnection`]: a webrtc-rs
//! `RTCPeerConnection` that fires every marker).

#[cfg(feature = "tracing")]
mod layer;
#[cfg(feature = "webrtc")]
mod webrtc_pc;

#[cfg(feature = "tracing")]
pub use layer::PcSpanLayer;
#[cfg(feature = "webrtc")]
pub use webrtc_pc::{TracedPeerConnection, candidate_ports};

/// A PeerConnection came to life.
#[inline(always)]
pub fn pc_open(pc_id: u64) {
    probe::probe!(sockscope, pc_open, pc_id);
}

/// `close()` of a PeerConnection started.
#[inline(always)]
pub fn pc_close_begin(pc_id: u64) {
    probe::probe!(sockscope, pc_close_begin, pc_id);
}

/// `close()` of a PeerConnection returned: from here on, sockets it owned should go.
#[inline(always)]
pub fn pc_close_end(pc_id: u64) {
    probe::probe!(sockscope, pc_close_end, pc_id);
}

/// The PeerConnection owns a UDP socket bound to `local_port` (e.g. an ICE candidate).
#[inline(always)]
pub fn pc_socket(pc_id: u64, local_port: u16) {
    probe::probe!(sockscope, pc_socket, pc_id, local_port);
}

/// The current thread starts working for `pc_id`.
#[inline(always)]
pub fn span_enter(pc_id: u64) {
    probe::probe!(sockscope, span_enter, pc_id);
}

/// The current thread stops working for `pc_id`.
#[inline(always)]
pub fn span_exit(pc_id: u64) {
    probe::probe!(sockscope, span_exit, pc_id);
}

/// A future whose every poll runs inside `pc_id`'s span, on whatever thread polls it:
/// sockets it creates (directly, not in tasks it spawns) carry `pc_id`.
pub struct InPcSpan<F> {
    pc_id: u64,
    inner: F,
}

/// Runs `fut` inside `pc_id`'s span (see [`InPcSpan`]).
pub fn in_pc_span<F: core::future::Future>(pc_id: u64, fut: F) -> InPcSpan<F> {
    InPcSpan { pc_id, inner: fut }
}

impl<F: core::future::Future> core::future::Future for InPcSpan<F> {
    type Output = F::Output;

    fn poll(
        self: core::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: never moved out of `self`.
        let this = unsafe { self.get_unchecked_mut() };
        span_enter(this.pc_id);
        // SAFETY: see above.
        let out = unsafe { core::pin::Pin::new_unchecked(&mut this.inner) }.poll(cx);
        span_exit(this.pc_id);
        out
    }
}
