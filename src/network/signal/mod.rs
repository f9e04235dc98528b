//! Signal, through a signal-cli daemon (JSON-RPC), which keeps the Signal Protocol sessions and
//! keys; ferry is the Matrix-side endpoint.

pub mod rpc;
pub mod wire;
