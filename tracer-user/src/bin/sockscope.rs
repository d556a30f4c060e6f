//! The `sockscope` binary: parses the command line, runs a command, and turns errors
//! into one line on stderr with exit code 2.
use std::process::ExitCode;

use clap::Parser as _;
use tracer_user::{
    cli::{Cli, Command, UsdtCommand},
    cmd::{check, doctor, leaks, trace, usdt, watch},
    report,
    system::exec_guard,
};

/// Usage and environment errors.
const EXIT_ENV: u8 = 2;

fn main() -> ExitCode {
    // Not a user command: the guard `check` starts (see system::exec_guard).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == exec_guard::SUBCOMMAND) {
        let Some(cgroup) = args.get(2) else {
            return ExitCode::from(EXIT_ENV);
        };
        return match exec_guard::run(std::path::Path::new(cgroup)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(EXIT_ENV),
        };
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            tracer_user::say!("sockscope: {}", tracer_user::cli::one_line_error(&e));
            return ExitCode::from(EXIT_ENV);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracer_user::say!("sockscope: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ENV);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            tracer_user::say!("sockscope: {e:#}");
            ExitCode::from(EXIT_ENV)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Doctor { format, pid } => {
            let ok = tokio::task::spawn_blocking(move || doctor::run_for(format, pid)).await??;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_ENV)
            })
        }
        Command::Trace(a) => {
            let to_file = a.output.is_some();
            let summary = trace::run(trace::TraceOptions {
                pid: a.pid,
                comm: a.comm,
                format: a.format,
                duration: a.duration,
                output: a.output,
                stacks: a.stacks.is_some(),
                stack_mode: tracer_user::unwind::StackArgs {
                    mode: a.stacks.unwrap_or_default(),
                    stack_bytes: a.stack_bytes,
                },
                ring_bytes: a.ring_bytes,
                usdt: a.usdt,
                usdt_providers: a.usdt_provider,
                backend: a.backend.backend,
            })
            .await?;
            if to_file {
                // The summary record went to the file; the user watching the
                // terminal still wants it.
                tracer_user::say!(
                    "sockscope: {} events, {} lost, {} UDP sockets still open",
                    summary.events,
                    summary.lost,
                    summary.open_sockets
                );
            }
            if summary.lost > 0 {
                tracer_user::say!(
                    "sockscope: {} events were lost: the trace is incomplete",
                    summary.lost
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(a) => {
            let outcome = check::run(check::CheckOptions {
                grace: a.grace,
                format: a.format,
                report: a.report,
                output: a.output,
                junit: a.junit,
                strict: a.strict,
                ring_bytes: a.ring_bytes,
                command: a.command,
                backend: a.backend.backend,
                stacks: a.stacks,
            })
            .await?;
            Ok(ExitCode::from(outcome.exit_code()))
        }
        Command::Watch(a) => {
            let outcome = watch::run(watch::WatchOptions {
                pid: a.pid,
                grace: a.grace,
                format: a.format,
                duration: a.duration,
                strict: a.strict,
                ring_bytes: a.ring_bytes,
                backend: a.backend.backend,
                stacks: a.stacks,
            })
            .await?;
            Ok(ExitCode::from(outcome.exit_code()))
        }
        Command::Leaks(a) => {
            leaks::run(leaks::LeaksOptions {
                pid: a.pid,
                min_age: a.min_age,
                interval: a.interval,
                duration: a.duration,
                format: a.format,
                ring_bytes: a.ring_bytes,
                backend: a.backend.backend,
                stacks: a.stacks,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon(a) => {
            tracer_user::daemon::run(tracer_user::daemon::DaemonOptions {
                grace: a.grace,
                output: a.output,
                metrics: a.metrics,
                duration: a.duration,
                max_sockets: a.max_sockets,
                forget_programs_after: a.forget_programs_after,
                bpf_stats: a.bpf_stats,
                ring_bytes: a.ring_bytes,
                backend: a.backend.backend,
                stacks: tracer_user::unwind::StackArgs {
                    mode: a.stacks,
                    stack_bytes: a.stack_bytes,
                },
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { file, html: None } => {
            report::render_saved(&file, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            file,
            html: Some(page),
        } => {
            report::html::write_file(&file, &page)?;
            let shown = std::fs::canonicalize(&page).unwrap_or(page);
            println!(
                "sockscope: wrote {} (open it in a browser)",
                shown.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Usdt {
            command: UsdtCommand::List { binary, pid },
        } => {
            usdt::list(binary, pid)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
