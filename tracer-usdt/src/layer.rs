//! A `tracing` layer that turns spans into PeerConnection spans: a span with a
//! `pc_id` field, and every span opened inside one (such as the spans of tasks
//! spawned within it, when tokio's task spans are on), fires `span_enter(pc_id)` when
//! entered and `span_exit(pc_id)` when left, on whatever thread that happens.
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

impl<S> Layer<S> for PcSpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut found = FindPcId(None);
        attrs.record(&mut found);
        let Some(span) = ctx.span(id) else { return };
        // Without its own pc_id, a span belongs to the PeerConnection it was opened in.
        let pc_id = found.0.or_else(|| {
            span.parent()
                .and_then(|p| p.extensions().get::<PcId>().map(|p| p.0))
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
