//! Why a leaked socket is still open, from the kernel's record of its sends and
//! receives: a task that keeps using it (active), a task parked on a read (awaited),
//! nothing at all (held). Each leak is one the program makes on purpose, of a known
//! kind: the mDNS query loop of webrtc-rs that keeps asking, the session mux whose read
//! loop waits for datagrams that never come, a socket nothing ever touches.
mod common;

use common::*;
use serde_json::Value;

fn only_leak(run: &CheckRun) -> &Value {
    let leaks = by_event(&run.ours, "leak");
    assert_eq!(leaks.len(), 1, "{}\n{leaks:#?}", run.stderr);
    leaks[0]
}

/// The legacy example (webrtc-rs 0.17) with one injected leak in its only session.
fn proxy_leak(kind: &str) -> CheckRun {
    run_check(
        &["--grace", "1500ms"],
        &workload_bin("webrtc-proxy"),
        &[
            "--netns",
            "--sessions",
            "1",
            "--leak",
            kind,
            "--linger",
            "2000",
        ],
    )
}

#[test]
fn a_query_loop_that_keeps_sending_is_active() {
    if !require_root("a_query_loop_that_keeps_sending_is_active") {
        return;
    }
    let run = proxy_leak("mdns");
    let leak = only_leak(&run);
    assert_eq!(leak["kind"], "active", "{leak}");
    let io = &leak["io"];
    // The loop asks once a second: within the 1.5 s grace it sent at least once.
    assert!(io["sends_after_end"].as_u64() >= Some(1), "{io}");
    assert!(
        !io["last_stack"].as_array().unwrap().is_empty(),
        "the stack of the last send or receive: {io}"
    );
}

#[test]
fn a_read_loop_parked_on_the_socket_is_awaited() {
    if !require_root("a_read_loop_parked_on_the_socket_is_awaited") {
        return;
    }
    let run = proxy_leak("task");
    let leak = only_leak(&run);
    assert_eq!(leak["kind"], "awaited", "{leak}");
    let io = &leak["io"];
    assert_eq!(
        (io["last_op"].as_str(), io["last_result"].as_i64()),
        (Some("recv"), Some(-11))
    );
    for n in ["sends_after_end", "errors_after_end"] {
        assert_eq!(io[n], 0, "nothing sent after close: {io}");
    }
    // At most the peer's last packets of the teardown were read, right at the close;
    // then nothing for the rest of the grace.
    assert!(io["last_ago_ns"].as_u64() > Some(1_000_000_000), "{io}");
}

#[test]
fn a_socket_nothing_touches_is_held() {
    if !require_root("a_socket_nothing_touches_is_held") {
        return;
    }
    let run = run_check(
        &["--grace", "300ms"],
        &workload_bin("pc_sim"),
        &["--pcs", "1", "--leak", "1", "--linger", "800"],
    );
    let leak = only_leak(&run);
    assert_eq!(leak["kind"], "held", "{leak}");
    assert!(
        leak["io"].is_null(),
        "no send or receive was ever seen: {leak}"
    );
}
