//! One module per `sockscope` subcommand.
pub mod check;
pub mod doctor;
pub mod leaks;
pub mod trace;
pub mod usdt;
pub mod watch;
