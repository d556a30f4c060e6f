//! The demo: sockscope tracing a bundled workload that opens and closes UDP sockets,
//! with the stacks that created them.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{setup, util};

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    util::require_root("cargo xtask demo")?;
    util::cargo(&["build", "--release", "-p", "tracer-user", "-p", "workloads"])?;

    let mut workload = Command::new("target/release/udp_workload")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start target/release/udp_workload")?;
    let mut wl_out = BufReader::new(workload.stdout.take().context("workload stdout")?).lines();
    let ready = wl_out.next().context("workload said nothing")??;
    let pid = serde_pid(&ready).with_context(|| format!("unexpected workload line: {ready}"))?;

    println!(
        "\n== sockscope trace --pid {pid} --stacks (udp_workload opens 6 UDP sockets and closes 3) ==\n"
    );
    let mut tracer = Command::new("target/release/sockscope")
        .args(["trace", "--pid", &pid.to_string(), "--stacks"])
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start target/release/sockscope")?;
    let (tx, rx) = mpsc::channel();
    let stderr = tracer.stderr.take().context("sockscope stderr")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let _ = tx.send(line);
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("tracing UDP sockets") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = workload.kill();
                bail!("sockscope did not attach (see its message above; try `sockscope doctor`)");
            }
        }
    }
    let mut stdin = workload.stdin.take().context("workload stdin")?;
    writeln!(stdin, "go")?;
    let report = wl_out.next().context("workload report missing")??;
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: our own child's pid.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    tracer.wait()?;
    drop(stdin);
    workload.wait()?;
    println!("\n== what udp_workload says it did (ground truth) ==\n{report}");
    Ok(())
}

fn serde_pid(line: &str) -> Option<u32> {
    let rest = line.split("\"pid\":").nth(1)?;
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
