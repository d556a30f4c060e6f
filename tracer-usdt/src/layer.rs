//! A `tracing` layer that turns spans into PeerConnection spans: a span with a
//! `pc_id` field, and every span opened inside one, fires `span_enter(pc_id)` when
//! entered and `span_exit(pc_id)` when left, on whatever thread that happens.
//!
//! tokio's task spans (`--cfg tokio_unstable` and tokio's `tracing` feature) are
//! explicit roots (`parent: None`): a task span belongs to the PeerConnection whose
//! span was current where the task was spawned, so the sockets of tasks that
//! webrtc-rs spawns inside a PeerConnection's span carry its id.
//!
//! ```ignore
//! tracing_subscriber::registry().with(tracer_usdt::PcSpanLayer).init();
//! let span = tracing::info_span!("session", pc_id = 7u64);
//! tokio::spawn(work().instrument(span)); // sockets `work` creates carry pc_id 7
//! ```
use tracing::{
    Id, Subscriber,
    field::{Field, Visit},
    span::Attributes,
};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

/// The layer (stateless: the id lives in each span's extensions).
#[derive(Clone, Copy, Debug, Default)]
pub struct PcSpanLayer;

/// A span's PeerConnection.
#[derive(Clone, Copy, Debug)]
struct PcId(u64);

struct FindPcId(Option<u64>);

impl Visit for FindPcId {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "pc_id" {
            self.0 = Some(value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "pc_id" && value > 0 {
            self.0 = Some(value as u64);
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

/// The span tokio gives each spawned task (a root span, created where the task is
/// spawned).
fn is_task_span(attrs: &Attributes<'_>) -> bool {
    let meta = attrs.metadata();
    attrs.is_root() && meta.target() == "tokio::task" && meta.name() == "runtime.spawn"
}

impl<S> Layer<S> for PcSpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut found = FindPcId(None);
        attrs.record(&mut found);
        let Some(span) = ctx.span(id) else { return };
        // Without its own pc_id, a span belongs to the PeerConnection it was opened in.
        let pc_of = |s: tracing_subscriber::registry::SpanRef<'_, S>| {
            s.extensions().get::<PcId>().map(|p| p.0)
        };
        let pc_id = found
            .0
            .or_else(|| span.parent().and_then(pc_of))
            .or_else(|| {
                is_task_span(attrs)
                    .then(|| ctx.lookup_current())
                    .flatten()
                    .and_then(pc_of)
            });
        if let Some(pc_id) = pc_id.filter(|&p| p != 0) {
            span.extensions_mut().insert(PcId(pc_id));
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(pc) = ctx
            .span(id)
            .and_then(|s| s.extensions().get::<PcId>().copied())
        {
            crate::span_enter(pc.0);
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(pc) = ctx
            .span(id)
            .and_then(|s| s.extensions().get::<PcId>().copied())
        {
            crate::span_exit(pc.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::{Registry, layer::SubscriberExt as _};

    use super::*;

    /// The PeerConnection the layer gave `span`.
    fn pc_of(span: &tracing::Span) -> Option<u64> {
        span.with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            registry.span(id)?.extensions().get::<PcId>().map(|p| p.0)
        })
        .flatten()
    }

    #[test]
    fn spans_inside_a_pc_span_and_tokio_task_spans_spawned_in_it_belong_to_it() {
        let subscriber = tracing_subscriber::registry().with(PcSpanLayer);
        tracing::subscriber::with_default(subscriber, || {
            let pc = tracing::info_span!("session", pc_id = 7u64);
            let _in_pc = pc.enter();
            let child = tracing::info_span!("ice");
            // As tokio's spawn makes it: a root span, while the spawner's span is current.
            let task = tracing::trace_span!(target: "tokio::task", parent: None, "runtime.spawn", kind = "task");
            let other_root = tracing::info_span!(parent: None, "unrelated");
            assert_eq!(pc_of(&pc), Some(7));
            assert_eq!(pc_of(&child), Some(7));
            assert_eq!(pc_of(&task), Some(7));
            assert_eq!(
                pc_of(&other_root),
                None,
                "an explicit root of the application's own"
            );
        });
        let outside = tracing_subscriber::registry().with(PcSpanLayer);
        tracing::subscriber::with_default(outside, || {
            let task = tracing::trace_span!(target: "tokio::task", parent: None, "runtime.spawn", kind = "task");
            assert_eq!(pc_of(&task), None, "spawned outside any PeerConnection");
        });
    }
}
