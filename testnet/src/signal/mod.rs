//! A simulator of the `signal-cli` 0.13.x JSON-RPC daemon in multi-account mode
//! (`signal-cli daemon --tcp HOST:PORT`), for testing ferry's Signal client without Signal.
//!
//! The protocol it speaks, checked against signal-cli's sources, and its control API are in
//! `testnet/SIGNAL_PROTOCOL.md`. Start it with [`SignalServer::start`]; tests drive "the
//! phone" and "the contacts" through the control API at [`SignalServer::control_url`].

mod control;
mod envelope;
mod methods;
mod params;
mod rpc;
mod server;
mod state;
mod util;

pub use server::{SignalConfig, SignalServer};
pub use state::ReceiveMode;
