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

/// An option `check` does not know, before the command, is a mistake in the options,
/// not a command named `--bogus`; after `--` everything is the command's.
#[test]
fn an_unknown_option_of_check_is_not_taken_for_the_command() {
    expect_usage_error(&["check", "--bogus"], "unexpected argument '--bogus'");
    expect_usage_error(&["check", "--gracee", "1s", "--", "true"], "'--gracee'");
    let out = std::process::Command::new(sockscope_bin())
        .args(["check", "--", "-x"])
        .output()
        .expect("run sockscope");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("command not found: -x"), "{stderr}");
}

#[test]
fn a_missing_argument_is_named_with_the_usage() {
    expect_usage_error(&["check"], "required arguments were not provided: <CMD>...");
    expect_usage_error(&["check"], "usage: sockscope check [OPTIONS] -- <CMD>...");
    expect_usage_error(&["check", "--grace", "1s"], "<CMD>...");
    expect_usage_error(
        &["watch"],
        "required arguments were not provided: --pid <PID>",
    );
}

#[test]
fn a_bare_number_is_seconds_for_every_duration_flag() {
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let missing = pid_max.to_string();
    let no_pid = format!("no process with pid {missing}");
    // Accepted: the error is then about the missing process, not the duration.
    expect_usage_error(&["trace", "--duration", "8", "--pid", &missing], &no_pid);
    expect_usage_error(&["trace", "--duration", "1.5", "--pid", &missing], &no_pid);
    expect_usage_error(
        &[
            "leaks",
            "--duration",
            "1",
            "--interval",
            "2.5",
            "--min-age",
            "3",
            "--pid",
            &missing,
        ],
        &no_pid,
    );
    expect_usage_error(
        &[
            "watch",
            "--grace",
            ".5",
            "--duration",
            "10",
            "--pid",
            &missing,
        ],
        &no_pid,
    );
    expect_usage_error(
        &["check", "--grace", "3", "--", "/nonexistent/prog"],
        "/nonexistent/prog",
    );
    // Garbage is still refused, with examples.
    for garbage in ["1.2.3", "abc", "8x", "-1", ""] {
        let flag = format!("--duration={garbage}");
        expect_usage_error(&["trace", &flag], "examples: 8, 1.5, 500ms");
    }
    expect_usage_error(
        &["leaks", "--interval", "0"],
        "--interval must be longer than 0",
    );
}
