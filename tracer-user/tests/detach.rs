//! Nothing of sockscope's stays in the kernel after it stops, however it stops.
mod common;

use std::{process::Command, time::Duration};

use common::*;

fn run_and_stop(sig: i32) {
    let s = Sockscope::start(&["trace", "--format", "json"]);
    assert!(
        !loaded_sockscope_programs().is_empty(),
        "programs loaded while tracing"
    );
    s.signal(sig);
    let mut s = s;
    let _ = s.child.wait();
}

#[test]
fn detaches_after_duration_sigint_sigterm_and_sigkill() {
    if !require_root("detaches_after_duration_sigint_sigterm_and_sigkill") {
        return;
    }
    let _serial = serial();
    assert_nothing_attached("before the test");

    let out = Command::new(sockscope_bin())
        .args(["trace", "--duration", "1s", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--duration run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(last.contains("\"summary\""), "ends with a summary: {last}");
    assert_nothing_attached("after --duration");

    for (sig, name) in [
        (libc::SIGINT, "SIGINT"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGKILL, "SIGKILL"),
    ] {
        run_and_stop(sig);
        assert_nothing_attached(&format!("after {name}"));
    }
    std::thread::sleep(Duration::from_millis(10));
}
