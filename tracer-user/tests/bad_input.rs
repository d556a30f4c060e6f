//! Bad input: one clear line on stderr, exit code 2, no panic, nothing loaded.
mod common;

use std::process::Command;

use common::*;

fn expect_usage_error(args: &[&str], needle: &str) {
    let out = Command::new(sockscope_bin()).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: exit code; stderr: {stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: exactly one line on stderr: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{args:?}: {stderr:?} should mention {needle:?}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: panic: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
}

#[test]
fn bad_input_gives_one_line_and_exit_2() {
    expect_usage_error(&["trace", "--bogus"], "--bogus");
    expect_usage_error(&["frobnicate"], "frobnicate");
    expect_usage_error(&["trace", "--duration", "abc"], "abc");
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let missing = pid_max.to_string(); // pids are always below pid_max
    expect_usage_error(
        &["trace", "--pid", &missing],
        &format!("no process with pid {missing}"),
    );
    expect_usage_error(&["trace", "--pid", "-3"], "-3");
    expect_usage_error(&["trace", "--comm", "a-name-longer-than-15"], "15");
    expect_usage_error(
        &["trace", "--output", "/nonexistent-dir/out.jsonl"],
        "/nonexistent-dir/out.jsonl",
    );
}
