//! The kernel's ring buffer as an async stream of decoded events.
use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::{events::KernelEvent, loader::Tracer};

/// How long a record may wait in the ring when the kernel did not wake us. A wakeup
/// per record cost 17 µs of sockscope CPU per socket at 10k sockets/s (BENCHMARKS.md).
pub const POLL: std::time::Duration = std::time::Duration::from_millis(50);

pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventStream {
    /// Takes the tracer's ring buffer (once).
    pub fn new(tracer: &mut Tracer) -> anyhow::Result<Self> {
        let ring = tracer.take_events().context("ring buffer already taken")?;
        // SAFETY: the ring buffer map owns its fd and keeps it open and unchanged
        // until the AsyncFd (which owns the map) is dropped.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(std::io::Error::from)
            .context("cannot poll the ring buffer")?;
        Ok(Self { ring })
    }

    /// Waits until records may be available (then call [`Self::drain`]): when the
    /// kernel wakes us (it does so only once the ring is an eighth full, see
    /// `WAKEUP_BYTES` in the BPF programs), or after [`POLL`] at the latest.
    pub async fn readable(&self) -> anyhow::Result<()> {
        tokio::select! {
            guard = self.ring.readable() => {
                // Cleared before draining: records that arrive later wake us again.
                guard.context("ring buffer poll failed")?.clear_ready();
            }
            _ = tokio::time::sleep(POLL) => {}
        }
        Ok(())
    }

    /// Every record available now, decoded; malformed ones are reported and skipped.
    pub fn drain(&mut self) -> Vec<KernelEvent> {
        let mut out = Vec::new();
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            match KernelEvent::decode(&item) {
                Ok(ev) => out.push(ev),
                Err(e) => eprintln!("sockscope: skipped a malformed kernel record: {e}"),
            }
        }
        out
    }
}
