//! A Telegram MTProto server simulator for testing ferry's grammers-based client without Telegram.
//!
//! It speaks the server side of what grammers 0.11 uses: the "full" TCP transport, MTProto 2.0
//! encryption with a pre-shared auth key (grammers skips the RSA/DH handshake when its session's DC
//! option carries a key), salts, sessions, containers, acks, gzip, and the TL layer-230 methods a
//! bridge needs, decoded and encoded with grammers' own `grammers-tl-types`. Tests act as the other
//! Telegram users through the control API. `testnet/TELEGRAM_PROTOCOL.md` says what is faithful to
//! Telegram and what is simplified.

mod conn;
mod control;
pub mod crypto;
mod details;
mod methods;
mod server;
mod state;
mod tl;
mod tl_defaults;
mod wire;

pub use server::{TelegramConfig, TelegramServer};
