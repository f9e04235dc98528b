//! The JSON objects of the sim protocol (SIM_PROTOCOL.md, "Objects" and "The event socket").
//!
//! They are plain data so the state can hand out snapshots and the handlers can serialize them
//! without any conversion; field names are the wire names.

use serde::{Deserialize, Serialize};

/// An account of the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    /// The id of the user's avatar image (`GET /v1/media/{id}`); a new id on every change.
    #[serde(default)]
    pub avatar: Option<String>,
}

/// Whether a chat is a direct chat of two users or a named group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    Dm,
    Group,
}

/// A chat with its current members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    pub id: String,
    pub kind: ChatKind,
    /// `None` for a DM.
    pub name: Option<String>,
    pub members: Vec<User>,
}

/// A message in a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub chat_id: String,
    /// The sender's user id.
    pub sender: String,
    pub text: String,
    /// Unix time in milliseconds.
    pub ts: u64,
    /// The sender's transaction id for client sends, `None` for sends through the control API.
    pub txn_id: Option<String>,
}

/// One entry of an account's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the account's log, from 1, one more per event.
    pub seq: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened, tagged by `type` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A message was posted in one of the account's chats.
    Message { message: Message },
    /// The account was added to a chat, or the chat changed.
    Chat { chat: Chat },
    /// Someone else joined one of the account's chats.
    MemberJoined { chat_id: String, user: User },
    /// Someone (possibly the account itself) left one of the account's chats.
    MemberLeft { chat_id: String, user_id: String },
}

/// The answer to `POST /v1/login/start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginStarted {
    pub flow_id: String,
    pub code_length: u32,
}

/// The answer to `POST /v1/login/finish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFinished {
    pub token: String,
    pub user: User,
}
