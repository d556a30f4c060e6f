//! One module per `sockscope` subcommand.
pub mod doctor;
pub mod trace;
