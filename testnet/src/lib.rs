//! Simulators that stand in for the remote networks' servers, so ferry's tests and demo can run
//! the production client code end to end without any third-party service.
//!
//! Each simulator is a library (started in-process by integration tests) and a subcommand of the
//! `testnet` binary (started as a process by the demo and by scripts).

pub mod signal;
pub mod sim;
pub mod telegram;
/// Behind the `whatsapp` feature: see testnet/Cargo.toml.
#[cfg(feature = "whatsapp")]
pub mod whatsapp;
