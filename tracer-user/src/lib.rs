//! sockscope: an eBPF tracer of UDP socket lifecycles that finds sockets outliving the
//! WebRTC PeerConnection that created them. The `sockscope` binary is a thin edge over
//! this library.
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod correlate;
pub mod error;
pub mod events;
pub mod inventory;
pub mod loader;
pub mod output;
pub mod shutdown;
pub mod sockets;
pub mod symbolize;
pub mod system;
