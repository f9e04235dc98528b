//! The JSON objects of the sim protocol (SIM_PROTOCOL.md, "Objects" and "The event socket").
//!
//! They are plain data so the state can hand out snapshots and the handlers can serialize them
//! without any conversion; field names are the wire names.

use serde::{Deserialize, Deserializer, Serialize};

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
    /// `None` for a DM or a group without a topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// The group picture's media id.
    #[serde(default)]
    pub avatar: Option<String>,
    /// Admin user ids in the order they became admins; always empty for a DM.
    #[serde(default)]
    pub admins: Vec<String>,
}

/// A message in a chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub chat_id: String,
    /// The sender's user id.
    pub sender: String,
    /// The text, or a media message's caption; empty for a location or contact.
    pub text: String,
    /// Unix time in milliseconds.
    pub ts: u64,
    /// The sender's transaction id for client sends, `None` for sends through the control API.
    pub txn_id: Option<String>,
    /// Formatting of `text`, as the sender gave it.
    #[serde(default)]
    pub entities: Vec<Entity>,
    /// The message this one answers.
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub media: Option<Media>,
    #[serde(default)]
    pub location: Option<Location>,
    #[serde(default)]
    pub contact: Option<Contact>,
    /// Unix time in milliseconds of the last edit.
    #[serde(default)]
    pub edited_ts: Option<u64>,
    #[serde(default)]
    pub edit_count: u32,
}

/// What an entity marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    Bold,
    Italic,
    Strikethrough,
    Underline,
    Spoiler,
    Code,
    Pre,
    Link,
    Blockquote,
    Mention,
}

impl EntityKind {
    /// The type as it appears in the `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bold => "bold",
            Self::Italic => "italic",
            Self::Strikethrough => "strikethrough",
            Self::Underline => "underline",
            Self::Spoiler => "spoiler",
            Self::Code => "code",
            Self::Pre => "pre",
            Self::Link => "link",
            Self::Blockquote => "blockquote",
            Self::Mention => "mention",
        }
    }
}

/// A formatted span of a message's text; offsets count Unicode scalar values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    #[serde(rename = "type")]
    pub kind: EntityKind,
    pub offset: u64,
    pub length: u64,
    /// Only on `pre`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Required on `link`, only there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Required on `mention`, only there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// How a media attachment is meant to be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Voice,
    File,
    Sticker,
}

/// A media attachment of a message. In a request `content_type` and `size` may be left out:
/// the server fills them from the upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    pub id: String,
    pub kind: MediaKind,
    pub name: String,
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waveform: Option<Vec<u8>>,
}

/// A shared location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A shared contact card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// The content of a message to send (SIM_PROTOCOL.md, "Message content").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageContent {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub entities: Vec<Entity>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub media: Option<Media>,
    #[serde(default)]
    pub location: Option<Location>,
    #[serde(default)]
    pub contact: Option<Contact>,
}

impl MessageContent {
    /// A plain text message.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }
}

/// One user's reaction to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub sender: String,
    pub emoji: String,
    /// Unix time in milliseconds.
    pub ts: u64,
}

/// The answer to a media upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInfo {
    pub id: String,
    pub size: u64,
    pub content_type: String,
}

/// Whether a user is around.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Online,
    #[default]
    Offline,
}

/// A change to a group's settings; `None` fields stay as they are. For `topic` and `avatar`,
/// `Some(None)` (JSON `null`) clears.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatUpdate {
    /// A group always has a name: `null` is refused.
    #[serde(default, deserialize_with = "not_null")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub topic: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub avatar: Option<Option<String>>,
}

/// A field that may be left out (`None`, by `serde(default)`) but not given as `null`.
fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`, by `serde(default)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// One entry of an account's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the account's log, from 1, one more per event.
    pub seq: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened, tagged by `type` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// A message was edited; `message` is as it is after the edit.
    MessageEdited { message: Message },
    /// A message was deleted by `by`.
    MessageDeleted {
        chat_id: String,
        message_id: String,
        by: String,
    },
    /// A reaction was added or removed.
    Reaction {
        chat_id: String,
        message_id: String,
        sender: String,
        emoji: String,
        removed: bool,
    },
    /// A member read a chat up to a message.
    Read {
        chat_id: String,
        user_id: String,
        up_to: String,
    },
    /// A member started or stopped typing.
    Typing {
        chat_id: String,
        user_id: String,
        typing: bool,
    },
    /// A user the account shares a chat with (or the account itself) came or went.
    Presence { user_id: String, presence: Presence },
    /// A chat the account was a member of was deleted.
    ChatDeleted { chat_id: String },
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
