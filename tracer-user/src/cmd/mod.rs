//! One module per `sockscope` subcommand.
use crate::loader::{Tracer, TracerBuilder};

pub mod check;
pub mod doctor;
pub mod leaks;
pub mod trace;
pub mod usdt;
pub mod watch;

/// Loads and attaches off the async runtime (the verifier can take a while), then says
/// on stderr which backend traces and why the ones before it were passed over.
async fn attach(builder: TracerBuilder) -> anyhow::Result<Tracer> {
    let tracer = tokio::task::spawn_blocking(move || builder.attach()).await??;
    eprintln!("{}", tracer.backend_line());
    Ok(tracer)
}
