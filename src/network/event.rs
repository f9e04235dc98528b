//! The neutral event model: what crosses between a network and the bridge core, both ways.
//!
//! Networks translate their protocol into these types and back; the core translates them into
//! Matrix events. Neither side sees the other's wire format.

use super::{
    ids::{ChatId, MessageId, RemoteUserId},
    richtext::FormattedText,
};

/// A remote user's public profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub id: RemoteUserId,
    pub name: String,
    /// The network's id of the user's avatar image (a new id when the image changes); fetched
    /// with [`crate::network::Session::download_media`].
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
    pub topic: Option<String>,
    /// The network's id of the chat's picture.
    pub avatar: Option<String>,
    pub members: Vec<UserInfo>,
    /// Members with admin rights (mirrored as Matrix power level 50).
    pub admins: Vec<RemoteUserId>,
    /// Whether only admins may post, when the network says so with the chat's details (a
    /// WhatsApp group switched to "only admins send"); `None`: not told, the room keeps what
    /// [`RoomLayout::read_only`] made it.
    pub read_only: Option<bool>,
}

/// How a chat's room is laid out beyond [`ChatInfo`] (see [`crate::network::Session::room_layout`]).
/// The default is an ordinary room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomLayout {
    /// The chat holds other chats (a Telegram forum's topics): its room is a Matrix space.
    pub space: bool,
    /// The chat belongs to this (space) chat: its room is listed as a child of that space.
    pub parent: Option<ChatId>,
    /// Only admins may post (a broadcast channel): everyone else gets a level below
    /// `events_default` and cannot send.
    pub read_only: bool,
}

/// The kinds of media a message can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    /// A voice note (shown as one in Matrix clients: MSC3245).
    Voice,
    File,
    Sticker,
    /// A short looping silent video (a GIF, a video sticker): shown autoplaying, without
    /// controls, where the client understands the hint.
    Animation,
}

/// A file attached to a message. `id` is the network's id, used to fetch or having uploaded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub id: String,
    pub kind: MediaKind,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
    /// Voice-note waveform, values 0..=1024 as in MSC3246.
    pub waveform: Option<Vec<u16>>,
}

/// The content of a message, independent of any network's or Matrix's encoding.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MessageContent {
    Text(FormattedText),
    Media {
        media: Media,
        caption: Option<FormattedText>,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
    },
    Contact {
        name: String,
        phone: Option<String>,
        user: Option<RemoteUserId>,
    },
}

impl MessageContent {
    pub fn text(body: impl Into<String>) -> Self {
        Self::Text(FormattedText::plain(body))
    }

    /// A short name for logs and refusals.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text(_) => "text",
            Self::Media { .. } => "media",
            Self::Location { .. } => "location",
            Self::Contact { .. } => "contact",
        }
    }
}

/// A message as it appears on the remote side.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteMessage {
    pub id: MessageId,
    pub sender: UserInfo,
    pub content: MessageContent,
    pub reply_to: Option<MessageId>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// Something that happened on the remote network and should appear in Matrix.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RemoteEvent {
    Message {
        chat: ChatId,
        message: RemoteMessage,
    },
    Edit {
        chat: ChatId,
        id: MessageId,
        sender: UserInfo,
        content: MessageContent,
        timestamp: i64,
    },
    Delete {
        chat: ChatId,
        id: MessageId,
        by: RemoteUserId,
    },
    Reaction {
        chat: ChatId,
        target: MessageId,
        sender: UserInfo,
        emoji: String,
        removed: bool,
    },
    Read {
        chat: ChatId,
        user: RemoteUserId,
        up_to: MessageId,
    },
    Typing {
        chat: ChatId,
        user: RemoteUserId,
        typing: bool,
    },
    /// Messages (sent from Matrix) reached `user`'s device: a delivery receipt.
    Delivered {
        chat: ChatId,
        user: RemoteUserId,
        ids: Vec<MessageId>,
    },
    /// The login was added to a chat, or the chat's details changed.
    Chat(ChatInfo),
    ChatDeleted {
        chat: ChatId,
    },
    /// The chat was put in a space chat (a WhatsApp group linked to a community), or taken
    /// out of the one it was in (`parent: None`).
    ChatParent {
        chat: ChatId,
        parent: Option<ChatId>,
    },
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
            | Self::Edit { chat, .. }
            | Self::Delete { chat, .. }
            | Self::Reaction { chat, .. }
            | Self::Read { chat, .. }
            | Self::Typing { chat, .. }
            | Self::Delivered { chat, .. }
            | Self::ChatDeleted { chat }
            | Self::ChatParent { chat, .. }
            | Self::MemberJoined { chat, .. }
            | Self::MemberLeft { chat, .. } => chat,
            Self::Chat(info) => &info.id,
        }
    }

    /// A short name for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Message { .. } => "message",
            Self::Edit { .. } => "edit",
            Self::Delete { .. } => "delete",
            Self::Reaction { .. } => "reaction",
            Self::Read { .. } => "read",
            Self::Typing { .. } => "typing",
            Self::Delivered { .. } => "delivered",
            Self::Chat(_) => "chat",
            Self::ChatDeleted { .. } => "chat_deleted",
            Self::ChatParent { .. } => "chat_parent",
            Self::MemberJoined { .. } => "member_joined",
            Self::MemberLeft { .. } => "member_left",
        }
    }
}

/// A message to send from Matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    pub content: MessageContent,
    pub reply_to: Option<MessageId>,
}

/// The remote message created by a send from Matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub id: MessageId,
    pub timestamp: i64,
    /// Sent, but some recipients were not reached (a group member whose safety number changed):
    /// who and what to do, for the room and the message status. `None`: everybody got it.
    pub partly_failed: Option<String>,
}

/// Changes to a chat's details requested from Matrix (`None` = unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatChanges {
    pub name: Option<String>,
    pub topic: Option<String>,
    /// `Some(None)` removes the picture.
    pub avatar: Option<Option<String>>,
}
