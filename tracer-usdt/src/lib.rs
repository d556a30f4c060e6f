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
//! PeerConnection spans), `webrtc` (webrtc-rs 0.20+: [`current::build`] and
//! [`current::TracedRuntime`], which attribute every socket a connection's driver binds)
//! and `webrtc-legacy` (webrtc-rs
//! 0.14-0.17: [`legacy::TracedPeerConnection`], a `RTCPeerConnection` that fires every
//! marker).

/// Helpers for the current webrtc-rs line (0.20+, tokio, smol or any runtime).
#[cfg(feature = "webrtc")]
pub mod current;
#[cfg(feature = "tracing")]
mod layer;
/// Helpers for the legacy webrtc-rs line (0.14-0.17, Tokio).
#[cfg(feature = "webrtc-legacy")]
pub mod legacy;

#[cfg(feature = "tracing")]
pub use layer::PcSpanLayer;

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

/// The PeerConnection owns the UDP socket whose `SO_COOKIE` is `cookie`: the exact,
/// strongest attribution (a port can be reused; a cookie never is while the host runs).
#[inline(always)]
pub fn pc_socket_cookie(pc_id: u64, cookie: u64) {
    probe::probe!(sockscope, pc_socket_cookie, pc_id, cookie);
}

/// The application let go of the PeerConnection without calling `close()` (its last
/// handle was dropped): from here on, sockets it owned should go, as after
/// `pc_close_end`.
#[inline(always)]
pub fn pc_dropped(pc_id: u64) {
    probe::probe!(sockscope, pc_dropped, pc_id);
}

/// The `SO_COOKIE` of a socket (for [`pc_socket_cookie`]); `None` if the kernel will not
/// say (before Linux 4.14, or `fd` is not a socket).
pub fn socket_cookie(fd: std::os::fd::RawFd) -> Option<u64> {
    const SOL_SOCKET: i32 = 1;
    const SO_COOKIE: i32 = 57;
    unsafe extern "C" {
        fn getsockopt(fd: i32, level: i32, name: i32, value: *mut u64, len: *mut u32) -> i32;
    }
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as u32;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes given.
    let rc = unsafe { getsockopt(fd, SOL_SOCKET, SO_COOKIE, &mut cookie, &mut len) };
    (rc == 0 && len as usize == size_of::<u64>()).then_some(cookie)
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
