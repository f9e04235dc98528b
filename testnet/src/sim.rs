//! The server of `sim`, ferry's built-in simulated network.
//!
//! The wire protocol is specified in `testnet/SIM_PROTOCOL.md`; this module is its reference
//! server. It keeps the whole network in memory (accounts, chats, messages, media, one ordered
//! event log per account) and serves the client API that ferry's `src/network/sim/` speaks plus
//! the control API that tests and the demo use to play the other side.
//!
//! Start it with [`SimServer::start`]; [`SimServer::sim`] gives in-process access to the same
//! state the control API changes.

mod client_api;
mod control_api;
mod download;
mod error;
mod events_ws;
mod extract;
mod limits;
mod model;
mod router;
mod server;
mod state;

pub use error::{ApiError, ErrorCode};
pub use model::{
    Chat, ChatKind, ChatUpdate, Contact, Entity, EntityKind, Event, EventBody, Location,
    LoginFinished, LoginStarted, Media, MediaInfo, MediaKind, Message, MessageContent, Presence,
    Reaction, User,
};
pub use server::SimServer;
pub use state::{Sim, StoredMedia};
