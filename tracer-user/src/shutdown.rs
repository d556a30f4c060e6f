//! One shutdown signal for a command: SIGINT, SIGTERM, SIGHUP or the end of
//! `--duration`, delivered through a watch channel so every task sees it.
use std::time::Duration;

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

/// Why a command stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Running,
    Signal(i32),
    Duration,
}

/// Starts watching; the receiver changes once, to the first stop reason.
pub fn watch_shutdown(duration: Option<Duration>) -> std::io::Result<watch::Receiver<StopReason>> {
    shutdown_on(duration, true)
}

/// As [`watch_shutdown`], but SIGHUP is left to the caller (the daemon reopens its
/// output on it).
pub fn watch_shutdown_except_hangup(
    duration: Option<Duration>,
) -> std::io::Result<watch::Receiver<StopReason>> {
    shutdown_on(duration, false)
}

fn shutdown_on(
    duration: Option<Duration>,
    hangup_stops: bool,
) -> std::io::Result<watch::Receiver<StopReason>> {
    let (tx, rx) = watch::channel(StopReason::Running);
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = if hangup_stops {
        Some(signal(SignalKind::hangup())?)
    } else {
        None
    };
    tokio::spawn(async move {
        let deadline = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let reason = tokio::select! {
            _ = int.recv() => StopReason::Signal(libc::SIGINT),
            _ = term.recv() => StopReason::Signal(libc::SIGTERM),
            Some(_) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => StopReason::Signal(libc::SIGHUP),
            () = deadline => StopReason::Duration,
        };
        let _ = tx.send(reason);
    });
    Ok(rx)
}
