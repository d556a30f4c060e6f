//! Helpers for the current webrtc-rs line (0.20+, the async layer over the Sans-I/O
//! `rtc` core), whatever async runtime the application runs it on (tokio, smol, or its
//! own `webrtc::runtime::Runtime`).
//!
//! Why a [`Runtime`] wrapper: in 0.20+ a PeerConnection's sockets are neither bound in
//! `build()` nor on the thread that awaits it. Each connection has a *driver* task
//! (spawned through the connection's runtime, possibly onto a shared reactor-pool
//! thread) that binds the sockets (`bind_transports`: one UDP socket per configured
//! address, plus the mDNS socket unless mDNS is disabled), rebinds them on an ICE
//! restart, runs every event-handler callback, and drops the sockets when it stops.
//! Every one of those sockets goes through `Runtime::wrap_udp_socket`, and every task
//! through `Runtime::spawn`/`spawn_reactor`, of the runtime given to
//! `PeerConnectionBuilder::with_runtime`: a runtime per connection that knows its pc_id
//! therefore sees exactly what the connection owns. [`TracedRuntime`] announces each
//! socket by `SO_COOKIE` ([`crate::pc_socket_cookie`], exact) and port
//! ([`crate::pc_socket`]), and runs each task inside the connection's span
//! ([`crate::in_pc_span`]), so sockets are attributed even on a runtime it cannot
//! see into.
//!
//! Why a PeerConnection wrapper: `close()` must be bracketed by `pc_close_begin`/
//! `pc_close_end`, and a connection the application lets go of *without* `close()` must
//! be announced too ([`crate::pc_dropped`]). In 0.21 dropping a connection does not stop
//! its driver unless it runs on a dedicated reactor pool, so its sockets stay open:
//! that is a leak sockscope should judge, and it can only judge it if someone says
//! when the connection was let go.
//!
//! ```ignore
//! use std::sync::Arc;
//! let builder = PeerConnectionBuilder::new()
//!     .with_handler(Arc::new(MyHandler))
//!     .with_udp_addrs(vec!["127.0.0.1:0"]);
//! let pc = tracer_usdt::current::build(builder, Arc::new(TokioRuntime)).await?; // pc_open
//! let offer = pc.create_offer(None).await?;          // Deref to dyn PeerConnection
//! pc.close().await?;                                  // pc_close_begin / pc_close_end
//! ```
use std::{
    fmt,
    future::Future,
    io,
    net::{SocketAddr, ToSocketAddrs},
    ops::Deref,
    os::fd::AsRawFd as _,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use webrtc::{
    error::{Error, Result},
    peer_connection::{PeerConnection, PeerConnectionBuilder},
    runtime::{
        AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    },
};

use crate::InPcSpan;

/// The mDNS port: the socket webrtc-rs binds for mDNS (`rtc::mdns::MulticastSocket`,
/// 224.0.0.251:5353 on Linux) is the only one a connection binds to it.
pub const MDNS_PORT: u16 = 5353;

static NEXT_PC_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh pc_id: nonzero and unique in this process among ids taken from here. An
/// application that also chooses ids itself must keep them apart from these.
pub fn next_pc_id() -> u64 {
    loop {
        let id = NEXT_PC_ID.fetch_add(1, Ordering::Relaxed);
        if id != 0 {
            return id;
        }
    }
}

/// Past this many remembered sockets, records of sockets that are already closed are
/// forgotten (a connection that restarts ICE again and again must not grow forever).
const MAX_RECORDS: usize = 64;

/// One UDP socket a connection's runtime wrapped, as announced to sockscope.
#[derive(Clone)]
pub struct TracedSocket {
    /// Its local address when it was wrapped (`None` if the kernel would not say).
    pub local_addr: Option<SocketAddr>,
    /// Its `SO_COOKIE` (`None` before Linux 4.14).
    pub cookie: Option<u64>,
    /// Which binding of the connection it belongs to: 0 for the sockets bound when the
    /// driver started, 1 after the first ICE-restart rebind, and so on (a new
    /// generation starts whenever a socket is wrapped after the previous generation's
    /// sockets were all dropped, which is how `bind_transports` rebinds).
    pub generation: u32,
    handle: Weak<dyn AsyncUdpSocket>,
}

impl TracedSocket {
    /// The local port (0 if unknown).
    pub fn port(&self) -> u16 {
        self.local_addr.map_or(0, |a| a.port())
    }

    /// Whether this is the connection's mDNS socket (bound to port 5353).
    pub fn is_mdns(&self) -> bool {
        self.port() == MDNS_PORT
    }

    /// Whether webrtc-rs still holds the socket handle the runtime gave it. When this
    /// is false the descriptor has been closed (the built-in runtimes keep no other
    /// reference); the kernel (`/proc`, sockscope) stays the ground truth.
    pub fn is_held(&self) -> bool {
        self.handle.strong_count() > 0
    }
}

impl fmt::Debug for TracedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedSocket")
            .field("local_addr", &self.local_addr)
            .field("cookie", &self.cookie)
            .field("generation", &self.generation)
            .field("held", &self.is_held())
            .finish()
    }
}

/// The sockets a connection's runtime has wrapped, shared by [`TracedRuntime`] and
/// [`TracedPeerConnection`].
#[derive(Default)]
struct SocketLog {
    records: Mutex<Vec<TracedSocket>>,
}

impl SocketLog {
    fn record(&self, mut socket: TracedSocket) {
        // A poisoned lock only means another thread panicked while pushing: the list
        // itself is still a list.
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let last = records.iter().map(|r| r.generation).max();
        socket.generation = match last {
            None => 0,
            Some(g) if records.iter().any(|r| r.generation == g && r.is_held()) => g,
            Some(g) => g + 1,
        };
        if records.len() >= MAX_RECORDS {
            records.retain(TracedSocket::is_held);
        }
        records.push(socket);
    }

    fn snapshot(&self) -> Vec<TracedSocket> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A `webrtc::runtime::Runtime` for one PeerConnection: forwards everything to `inner`
/// (so tokio, smol or a custom runtime all work, with their reactor pools), and
///
/// - runs every task the connection spawns (`spawn`, `spawn_reactor`: the driver, and
///   with it every socket bind, ICE-restart rebind and event-handler callback) inside
///   the connection's span, so a socket created there carries its pc_id
///   (`thread_span` attribution) on whatever thread the task is polled;
/// - announces every UDP socket it wraps (host sockets, rebinds, the mDNS socket) with
///   [`crate::pc_socket_cookie`] and [`crate::pc_socket`] before handing it to `inner`,
///   and remembers it ([`TracedRuntime::sockets`]).
///
/// Give each connection its own (it carries one pc_id); [`build`] does that for you.
pub struct TracedRuntime<R: Runtime + ?Sized = dyn Runtime> {
    pc_id: u64,
    inner: Arc<R>,
    log: Arc<SocketLog>,
}

impl<R: Runtime + ?Sized> TracedRuntime<R> {
    /// A runtime for the connection `pc_id` (nonzero) over `inner`.
    pub fn new(pc_id: u64, inner: Arc<R>) -> Self {
        Self {
            pc_id,
            inner,
            log: Arc::default(),
        }
    }

    /// The connection this runtime works for.
    pub fn pc_id(&self) -> u64 {
        self.pc_id
    }

    /// The runtime everything is forwarded to.
    pub fn inner(&self) -> &Arc<R> {
        &self.inner
    }

    /// Every UDP socket wrapped so far (closed ones included, unless forgotten after
    /// many rebinds), oldest first.
    pub fn sockets(&self) -> Vec<TracedSocket> {
        self.log.snapshot()
    }

    fn in_span(
        &self,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(crate::in_pc_span(self.pc_id, future))
    }
}

impl<R: Runtime + ?Sized> fmt::Debug for TracedRuntime<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedRuntime")
            .field("pc_id", &self.pc_id)
            .field("inner", &self.inner)
            .finish()
    }
}

impl<R: Runtime + ?Sized> Runtime for TracedRuntime<R> {
    #[track_caller]
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(self.in_span(future))
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        // Forwarded, not folded into `spawn`: the inner runtime's pool confinement is
        // part of its behaviour.
        self.inner
            .spawn_reactor(reactor_pool_size, self.in_span(future))
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        // Announced before the wrap: the socket exists (the kernel saw it created) and
        // belongs to this connection whether or not the wrap succeeds.
        let local_addr = socket.local_addr().ok();
        let cookie = crate::socket_cookie(socket.as_raw_fd());
        if let Some(cookie) = cookie {
            crate::pc_socket_cookie(self.pc_id, cookie);
        }
        if let Some(addr) = local_addr {
            crate::pc_socket(self.pc_id, addr.port());
        }
        let wrapped = self.inner.wrap_udp_socket(socket)?;
        self.log.record(TracedSocket {
            local_addr,
            cookie,
            generation: 0,
            handle: Arc::downgrade(&wrapped),
        });
        Ok(wrapped)
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

/// Builds the connection `builder` describes on `runtime` (tokio, smol, custom), under a
/// fresh pc_id ([`next_pc_id`]): see [`build_with_id`].
pub async fn build<A, R>(
    builder: PeerConnectionBuilder<A>,
    runtime: Arc<R>,
) -> Result<TracedPeerConnection>
where
    A: ToSocketAddrs + Send + 'static,
    R: Runtime + ?Sized,
{
    build_with_id(builder, runtime, next_pc_id()).await
}

/// Builds the connection `builder` describes, announced to sockscope as `pc_id`
/// (nonzero, unique in the process): fires `pc_open`, then builds it on a
/// [`TracedRuntime`] over `runtime` (replacing any runtime set on `builder`), so its
/// driver task and every socket it binds are the connection's. If the build fails,
/// `pc_dropped` says the connection is gone.
pub async fn build_with_id<A, R>(
    builder: PeerConnectionBuilder<A>,
    runtime: Arc<R>,
    pc_id: u64,
) -> Result<TracedPeerConnection>
where
    A: ToSocketAddrs + Send + 'static,
    R: Runtime + ?Sized,
{
    build_on(builder, Arc::new(TracedRuntime::new(pc_id, runtime))).await
}

/// As [`build_with_id`], on a [`TracedRuntime`] the application made itself (e.g. to
/// spawn its own per-connection tasks on it before the connection exists).
pub async fn build_on<A, R>(
    builder: PeerConnectionBuilder<A>,
    runtime: Arc<TracedRuntime<R>>,
) -> Result<TracedPeerConnection>
where
    A: ToSocketAddrs + Send + 'static,
    R: Runtime + ?Sized,
{
    let pc_id = runtime.pc_id;
    if pc_id == 0 {
        return Err(Error::Other(
            "pc_id 0 means \"no PeerConnection\" to sockscope: use a nonzero id".to_owned(),
        ));
    }
    let log = runtime.log.clone();
    crate::pc_open(pc_id);
    let built = crate::in_pc_span(pc_id, builder.with_runtime(runtime).build()).await;
    match built {
        Ok(pc) => Ok(TracedPeerConnection {
            shared: Arc::new(Shared {
                pc: Arc::new(pc),
                pc_id,
                log,
                close_called: AtomicBool::new(false),
            }),
        }),
        Err(e) => {
            // The driver reported a bind or wrap failure and has stopped: whatever it
            // bound should be gone now.
            crate::pc_dropped(pc_id);
            Err(e)
        }
    }
}

struct Shared {
    pc: Arc<dyn PeerConnection>,
    pc_id: u64,
    log: Arc<SocketLog>,
    close_called: AtomicBool,
}

impl Shared {
    /// Announces again every socket the connection still holds, right before its end
    /// is announced: a tracer that attached while the connection was open (and so
    /// missed the first announcements) can then tie them to it.
    fn announce_held_sockets(&self) {
        for s in self.log.snapshot().iter().filter(|s| s.is_held()) {
            if let Some(cookie) = s.cookie {
                crate::pc_socket_cookie(self.pc_id, cookie);
            }
            if s.port() != 0 {
                crate::pc_socket(self.pc_id, s.port());
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if !self.close_called.load(Ordering::Acquire) {
            self.announce_held_sockets();
            crate::pc_dropped(self.pc_id);
        }
    }
}

/// A 0.20+ PeerConnection announced to sockscope: `pc_open` when built, `close()`
/// between `pc_close_begin` and `pc_close_end`, and `pc_dropped` when the last handle
/// (clone) goes without `close()` having been called.
///
/// Derefs to `dyn PeerConnection` for everything else (`traced.create_offer(None)`).
/// A reference to the connection kept elsewhere ([`TracedPeerConnection::pc`] cloned
/// into a handler, say) outlives these handles: `pc_dropped` then marks the moment the
/// application let go, and sockets still open afterwards are what sockscope reports.
#[derive(Clone)]
pub struct TracedPeerConnection {
    shared: Arc<Shared>,
}

impl TracedPeerConnection {
    /// The id the connection is announced under.
    pub fn pc_id(&self) -> u64 {
        self.shared.pc_id
    }

    /// The connection itself.
    pub fn pc(&self) -> &Arc<dyn PeerConnection> {
        &self.shared.pc
    }

    /// `close()` between `pc_close_begin` and `pc_close_end`. Called from an
    /// event-handler callback, webrtc-rs returns before the driver has stopped (the
    /// sockets go right after the callback returns).
    pub async fn close(&self) -> Result<()> {
        let pc_id = self.shared.pc_id;
        self.shared.close_called.store(true, Ordering::Release);
        self.shared.announce_held_sockets();
        crate::pc_close_begin(pc_id);
        let result = crate::in_pc_span(pc_id, self.shared.pc.close()).await;
        crate::pc_close_end(pc_id);
        result
    }

    /// Whether `close()` was called on any handle.
    pub fn close_called(&self) -> bool {
        self.shared.close_called.load(Ordering::Acquire)
    }

    /// Every UDP socket the connection's runtime wrapped (see [`TracedRuntime::sockets`]).
    pub fn sockets(&self) -> Vec<TracedSocket> {
        self.shared.log.snapshot()
    }

    /// Runs `fut` inside this connection's span.
    pub fn in_span<F: Future>(&self, fut: F) -> InPcSpan<F> {
        crate::in_pc_span(self.shared.pc_id, fut)
    }
}

impl Deref for TracedPeerConnection {
    type Target = dyn PeerConnection;

    fn deref(&self) -> &Self::Target {
        &*self.shared.pc
    }
}

impl fmt::Debug for TracedPeerConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedPeerConnection")
            .field("pc_id", &self.shared.pc_id)
            .field("close_called", &self.close_called())
            .field("sockets", &self.sockets())
            .finish()
    }
}
