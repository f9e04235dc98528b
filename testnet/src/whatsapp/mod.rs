//! A WhatsApp server simulator for testing ferry's whatsapp-rust-based client without WhatsApp.
//!
//! The client connects over a WebSocket (`TokioWebSocketTransportFactory::with_url`), runs its
//! Noise XX (first connect) or IK (reconnect) handshake against [`noise`], and then speaks binary
//! nodes. The simulator links devices by QR code or pairing code, answers the IQs the client
//! needs (prekeys, usync, media_conn, groups, ...) and routes messages, receipts, chat states and
//! presence between devices like WhatsApp's servers do: it never decrypts a message. The other
//! side of every chat is a simulated contact, itself a whatsapp-rust client ([`peer`]), so both
//! ends encrypt with the library's own Signal Protocol. Tests drive contacts through the control
//! API. `testnet/WHATSAPP_PROTOCOL.md` says what is faithful and what is simplified.

mod act;
mod community;
mod conn;
mod control;
mod dispatch;
mod group_control;
mod groups;
mod history;
mod inbox;
mod iq;
mod kinds;
mod media;
pub mod noise;
mod paircode;
mod pairing;
mod peer;
mod pictures;
mod relay;
mod server;
mod wire;
mod world;

pub use media::SimHttpClient;
pub use server::{WhatsAppConfig, WhatsAppServer};
