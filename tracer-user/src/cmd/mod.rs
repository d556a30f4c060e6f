//! One module per `sockscope` subcommand.
use crate::loader::{Tracer, TracerBuilder};

pub mod check;
pub mod doctor;
mod exit_watch;
pub mod leaks;
pub mod trace;
pub mod usdt;
pub mod watch;

/// Loads and attaches off the async runtime (the verifier can take a while), then says
/// on stderr which backend traces and why the ones before it were passed over.
pub(crate) async fn attach(builder: TracerBuilder) -> anyhow::Result<Tracer> {
    let tracer = tokio::task::spawn_blocking(move || builder.attach()).await??;
    crate::say!("{}", tracer.backend_line());
    Ok(tracer)
}

/// PeerConnections left open with sockets at their process's exit: a failure under
/// `--strict`, otherwise a warning (a server stopped by a signal legitimately exits
/// with open connections).
fn warn_unclosed(summary: &crate::report::Summary, strict: bool) {
    let n = summary.unclosed_with_sockets;
    if n > 0 && !strict {
        crate::say!(
            "sockscope: warning: {n} PeerConnection(s) were never closed nor dropped and still held sockets when their process exited (see the `unclosed` records; --strict makes this a failure)"
        );
    }
}
