//! The neutral event model: what crosses between a network and the bridge core, both ways.
//!
//! Networks translate their protocol into these types and back; the core translates them into
//! Matrix events. Neither side sees the other's wire format.

use super::ids::{ChatId, MessageId, RemoteUserId};

/// A remote user's public profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub id: RemoteUserId,
    pub name: String,
    /// The network's id of the user's avatar image (a new id when the image changes); fetched
    /// with [`crate::network::Session::download_avatar`].
    pub avatar: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatKind {
    Dm,
    Group,
}

impl ChatKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dm => "dm",
            Self::Group => "group",
        }
    }
}

/// What the bridge needs to know about a remote chat to mirror it as a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatInfo {
    pub id: ChatId,
    pub kind: ChatKind,
    pub name: Option<String>,
    pub members: Vec<UserInfo>,
}

/// The content of a message, independent of any network's or Matrix's encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageContent {
    /// Plain text.
    Text { body: String },
}

impl MessageContent {
    pub fn text(body: impl Into<String>) -> Self {
        Self::Text { body: body.into() }
    }
}

/// Something that happened on the remote network and should appear in Matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteEvent {
    Message {
        chat: ChatId,
        id: MessageId,
        sender: UserInfo,
        content: MessageContent,
        /// Milliseconds since the Unix epoch.
        timestamp: i64,
    },
    /// The login was added to a chat, or the chat's details changed.
    Chat(ChatInfo),
    MemberJoined {
        chat: ChatId,
        user: UserInfo,
    },
    MemberLeft {
        chat: ChatId,
        user: RemoteUserId,
    },
}

impl RemoteEvent {
    /// The chat this event belongs to (it decides the portal and so the ordering queue).
    pub fn chat(&self) -> &ChatId {
        match self {
            Self::Message { chat, .. }
            | Self::MemberJoined { chat, .. }
            | Self::MemberLeft { chat, .. } => chat,
            Self::Chat(info) => &info.id,
        }
    }

    /// A short name for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Message { .. } => "message",
            Self::Chat(_) => "chat",
            Self::MemberJoined { .. } => "member_joined",
            Self::MemberLeft { .. } => "member_left",
        }
    }
}

/// The remote message created by a send from Matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub id: MessageId,
    pub timestamp: i64,
}
