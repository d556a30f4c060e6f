//! sockscope: an eBPF tracer of UDP socket lifecycles that finds sockets outliving the
//! WebRTC PeerConnection that created them. The `sockscope` binary is a thin edge over
//! this library.

/// `eprintln!` that never panics. sockscope says what it does on stderr from every
/// thread, the ring reader's included; a closed stderr (`sockscope trace ... 2>&1 |
/// head`) must not turn a stop into a panic (exit 101) or kill the reader: what cannot
/// be said is dropped.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod backend;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod correlate;
pub mod daemon;
pub mod discovery;
pub mod error;
pub mod events;
pub mod explain;
pub mod inventory;
pub mod junit;
pub mod loader;
pub mod markers;
pub mod output;
pub mod report;
pub mod session;
pub mod shutdown;
pub mod sockets;
pub mod stapsdt;
pub mod stream;
pub mod symbolize;
pub mod system;
pub mod unwind;
pub mod walked;
