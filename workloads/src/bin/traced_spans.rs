//! Sockets created inside `tracing` spans, with tracer-usdt's `PcSpanLayer`: a span
//! with `pc_id`, a child span without one (inherits it), a tokio task instrumented
//! with a span, and a socket outside every span. Prints, per socket, its port and
//! the pc_id it should carry (`null`: none).
use std::net::UdpSocket;

use serde_json::json;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

fn bind() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| {
            let port = s.local_addr()?.port();
            std::mem::forget(s); // stays open until exit, so the test can see its bind
            Ok(port)
        })
        .unwrap_or(0)
}

fn main() {
    let subscriber = tracing_subscriber::registry().with(tracer_usdt::PcSpanLayer);
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        eprintln!("traced_spans: a global subscriber is already set");
        std::process::exit(2);
    }
    let mut expect = Vec::new();
    {
        let _session = tracing::info_span!("session", pc_id = 7u64).entered();
        expect.push(json!({"port": bind(), "pc_id": 7}));
        let _inner = tracing::info_span!("ice_gather").entered();
        expect.push(json!({"port": bind(), "pc_id": 7}));
    }
    expect.push(json!({"port": bind(), "pc_id": null}));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        std::process::exit(2)
    };
    let in_task = runtime.block_on(async {
        tokio::spawn(async { bind() }.instrument(tracing::info_span!("dtls", pc_id = 9u64)))
            .await
            .unwrap_or(0)
    });
    expect.push(json!({"port": in_task, "pc_id": 9}));
    println!("{}", json!({"pid": std::process::id(), "sockets": expect}));
}
