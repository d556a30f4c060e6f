//! Bad input: one clear line on stderr, exit code 2, no panic, nothing loaded.
mod common;

use common::*;

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
