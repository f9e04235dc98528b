//! The sim server's JSON shapes (testnet/SIM_PROTOCOL.md), and their conversion to and from the
//! neutral model. Pure functions, unit-tested.

use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, json};

use super::markup::{self, SimEntity};
use crate::network::{
    ChatId, ChatInfo, ChatKind, Media, MediaKind, MessageContent, MessageId, OutgoingMessage,
    RemoteEvent, RemoteMessage, RemoteUserId, UserInfo,
};

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub avatar: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    pub id: String,
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub members: Vec<User>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub avatar: Option<String>,
    #[serde(default)]
    pub admins: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireMedia {
    pub id: String,
    pub kind: String,
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
    /// 0..=255 per sample on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waveform: Option<Vec<u16>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contact {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub id: String,
    pub chat_id: String,
    pub sender: String,
    #[serde(default)]
    pub text: String,
    pub ts: i64,
    #[serde(default)]
    pub entities: Vec<SimEntity>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub media: Option<WireMedia>,
    #[serde(default)]
    pub location: Option<Location>,
    #[serde(default)]
    pub contact: Option<Contact>,
    #[serde(default)]
    pub edited_ts: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatList {
    pub chats: Vec<Chat>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MediaInfo {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LoginStarted {
    pub flow_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LoginFinished {
    pub token: String,
    pub user: User,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub message: String,
}

/// One frame of the event socket.
#[derive(Debug, Clone, Deserialize)]
pub struct Frame {
    pub seq: i64,
    #[serde(flatten)]
    pub body: FrameBody,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FrameBody {
    Message {
        message: Message,
    },
    MessageEdited {
        message: Message,
    },
    MessageDeleted {
        chat_id: String,
        message_id: String,
        by: String,
    },
    Reaction {
        chat_id: String,
        message_id: String,
        sender: String,
        emoji: String,
        removed: bool,
    },
    Read {
        chat_id: String,
        user_id: String,
        up_to: String,
    },
    Typing {
        chat_id: String,
        user_id: String,
        typing: bool,
    },
    Presence {
        user_id: String,
        presence: String,
    },
    Chat {
        chat: Chat,
    },
    ChatDeleted {
        chat_id: String,
    },
    MemberJoined {
        chat_id: String,
        user: User,
    },
    MemberLeft {
        chat_id: String,
        user_id: String,
    },
}

impl From<User> for UserInfo {
    fn from(user: User) -> Self {
        Self {
            id: RemoteUserId::new(user.id),
            name: user.name,
            avatar: user.avatar,
        }
    }
}

pub fn chat_kind(kind: &str) -> ChatKind {
    if kind == "dm" {
        ChatKind::Dm
    } else {
        ChatKind::Group
    }
}

impl From<Chat> for ChatInfo {
    fn from(chat: Chat) -> Self {
        Self {
            id: ChatId::new(chat.id),
            kind: chat_kind(&chat.kind),
            name: chat.name,
            topic: chat.topic,
            avatar: chat.avatar,
            members: chat.members.into_iter().map(UserInfo::from).collect(),
            admins: chat.admins.into_iter().map(RemoteUserId::new).collect(),
            read_only: None,
        }
    }
}

fn media_kind(kind: &str) -> MediaKind {
    match kind {
        "image" => MediaKind::Image,
        "video" => MediaKind::Video,
        "audio" => MediaKind::Audio,
        "voice" => MediaKind::Voice,
        "sticker" => MediaKind::Sticker,
        _ => MediaKind::File,
    }
}

fn media_kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Image => "image",
        MediaKind::Video | MediaKind::Animation => "video",
        MediaKind::Audio => "audio",
        MediaKind::Voice => "voice",
        MediaKind::Sticker => "sticker",
        MediaKind::File => "file",
    }
}

/// A message's content in the neutral model.
pub fn content_of(message: &Message) -> MessageContent {
    let text = markup::from_sim(&message.text, &message.entities);
    if let Some(media) = &message.media {
        let caption = (!message.text.is_empty()).then_some(text);
        return MessageContent::Media {
            media: Media {
                id: media.id.clone(),
                kind: media_kind(&media.kind),
                name: media.name.clone(),
                content_type: media.content_type.clone(),
                size: media.size,
                width: media.width,
                height: media.height,
                duration_ms: media.duration_ms,
                // The wire uses 0..=255; Matrix (MSC3246) 0..=1024.
                waveform: media
                    .waveform
                    .as_ref()
                    .map(|w| w.iter().map(|v| (*v).min(255) * 4).collect()),
            },
            caption,
        };
    }
    if let Some(location) = &message.location {
        return MessageContent::Location {
            latitude: location.lat,
            longitude: location.lon,
            name: location.name.clone(),
        };
    }
    if let Some(contact) = &message.contact {
        return MessageContent::Contact {
            name: contact.name.clone(),
            phone: contact.phone.clone(),
            user: contact.user_id.clone().map(RemoteUserId::new),
        };
    }
    MessageContent::Text(text)
}

/// The request body for sending `message` (without `txn_id`).
pub fn message_body(message: &OutgoingMessage) -> JsonValue {
    let mut body = match &message.content {
        MessageContent::Text(text) => json!({"text": text.text, "entities": markup::to_sim(text)}),
        MessageContent::Media { media, caption } => {
            let (text, entities) = match caption {
                Some(c) => (c.text.clone(), markup::to_sim(c)),
                None => (String::new(), Vec::new()),
            };
            let wire = WireMedia {
                id: media.id.clone(),
                kind: media_kind_name(media.kind).to_owned(),
                name: media.name.clone(),
                content_type: media.content_type.clone(),
                size: media.size,
                width: media.width,
                height: media.height,
                duration_ms: media.duration_ms,
                waveform: media
                    .waveform
                    .as_ref()
                    .map(|w| w.iter().take(1024).map(|v| (*v).min(1024) / 4).collect()),
            };
            json!({"text": text, "entities": entities, "media": wire})
        }
        MessageContent::Location {
            latitude,
            longitude,
            name,
        } => {
            json!({"location": Location { lat: *latitude, lon: *longitude, name: name.clone() }})
        }
        MessageContent::Contact { name, phone, user } => json!({"contact": Contact {
            name: name.clone(),
            phone: phone.clone(),
            user_id: user.as_ref().map(|u| u.as_str().to_owned()),
        }}),
    };
    if let Some(reply_to) = &message.reply_to {
        body["reply_to"] = json!(reply_to.as_str());
    }
    body
}

/// Converts a frame body to a neutral event. Messages need the sender's profile, which the
/// caller resolves (`sender`). Presence frames have no chat and are handled by the caller.
pub fn to_remote_event(
    body: FrameBody,
    sender: impl FnOnce(&str) -> UserInfo,
) -> Option<RemoteEvent> {
    Some(match body {
        FrameBody::Message { message } => {
            let content = content_of(&message);
            RemoteEvent::Message {
                chat: ChatId::new(message.chat_id.clone()),
                message: RemoteMessage {
                    id: MessageId::new(message.id),
                    sender: sender(&message.sender),
                    content,
                    reply_to: message.reply_to.map(MessageId::new),
                    timestamp: message.ts,
                },
            }
        }
        FrameBody::MessageEdited { message } => RemoteEvent::Edit {
            chat: ChatId::new(message.chat_id.clone()),
            id: MessageId::new(message.id.clone()),
            sender: sender(&message.sender),
            content: content_of(&message),
            timestamp: message.edited_ts.unwrap_or(message.ts),
        },
        FrameBody::MessageDeleted {
            chat_id,
            message_id,
            by,
        } => RemoteEvent::Delete {
            chat: ChatId::new(chat_id),
            id: MessageId::new(message_id),
            by: RemoteUserId::new(by),
        },
        FrameBody::Reaction {
            chat_id,
            message_id,
            sender: who,
            emoji,
            removed,
        } => RemoteEvent::Reaction {
            chat: ChatId::new(chat_id),
            target: MessageId::new(message_id),
            sender: sender(&who),
            emoji,
            removed,
        },
        FrameBody::Read {
            chat_id,
            user_id,
            up_to,
        } => RemoteEvent::Read {
            chat: ChatId::new(chat_id),
            user: RemoteUserId::new(user_id),
            up_to: MessageId::new(up_to),
        },
        FrameBody::Typing {
            chat_id,
            user_id,
            typing,
        } => RemoteEvent::Typing {
            chat: ChatId::new(chat_id),
            user: RemoteUserId::new(user_id),
            typing,
        },
        FrameBody::Chat { chat } => RemoteEvent::Chat(chat.into()),
        FrameBody::ChatDeleted { chat_id } => RemoteEvent::ChatDeleted {
            chat: ChatId::new(chat_id),
        },
        FrameBody::MemberJoined { chat_id, user } => RemoteEvent::MemberJoined {
            chat: ChatId::new(chat_id),
            user: user.into(),
        },
        FrameBody::MemberLeft { chat_id, user_id } => RemoteEvent::MemberLeft {
            chat: ChatId::new(chat_id),
            user: RemoteUserId::new(user_id),
        },
        FrameBody::Presence { .. } => return None,
    })
}

impl FrameBody {
    pub fn chat_id(&self) -> Option<&str> {
        Some(match self {
            Self::Message { message } | Self::MessageEdited { message } => &message.chat_id,
            Self::Chat { chat } => &chat.id,
            Self::MessageDeleted { chat_id, .. }
            | Self::Reaction { chat_id, .. }
            | Self::Read { chat_id, .. }
            | Self::Typing { chat_id, .. }
            | Self::ChatDeleted { chat_id }
            | Self::MemberJoined { chat_id, .. }
            | Self::MemberLeft { chat_id, .. } => chat_id,
            Self::Presence { .. } => return None,
        })
    }

    /// The user whose profile a message-like frame needs.
    pub fn sender(&self) -> Option<&str> {
        match self {
            Self::Message { message } | Self::MessageEdited { message } => Some(&message.sender),
            Self::Reaction { sender, .. } => Some(sender),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::richtext::FormattedText;

    fn info(id: &str) -> UserInfo {
        UserInfo {
            id: RemoteUserId::new(id),
            name: format!("name of {id}"),
            avatar: None,
        }
    }

    #[test]
    fn frames_parse_into_neutral_events() {
        let frame: Frame = serde_json::from_str(
            r#"{"seq":5,"type":"message","message":{"id":"m7","chat_id":"c1","sender":"bob","text":"hi","ts":10,"txn_id":null,"reply_to":"m3"}}"#,
        )
        .expect("message frame");
        assert_eq!(frame.seq, 5);
        let Some(RemoteEvent::Message { message, .. }) = to_remote_event(frame.body, info) else {
            panic!("not a message")
        };
        assert_eq!(message.sender.name, "name of bob");
        assert_eq!(message.content, MessageContent::text("hi"));
        assert_eq!(message.reply_to, Some(MessageId::new("m3")));

        let frame: Frame = serde_json::from_str(
            r#"{"seq":8,"type":"member_left","chat_id":"c2","user_id":"bob"}"#,
        )
        .expect("left");
        assert_eq!(frame.body.chat_id(), Some("c2"));
        let frame: Frame = serde_json::from_str(
            r#"{"seq":9,"type":"reaction","chat_id":"c2","message_id":"m1","sender":"bob","emoji":"👍","removed":true}"#,
        )
        .expect("reaction");
        assert!(matches!(
            to_remote_event(frame.body, info),
            Some(RemoteEvent::Reaction { removed: true, .. })
        ));
        assert!(serde_json::from_str::<Frame>(r#"{"seq":1,"type":"explode"}"#).is_err());
        assert!(serde_json::from_str::<Frame>(r#"{"type":"chat"}"#).is_err());
    }

    #[test]
    fn media_waveforms_are_rescaled_both_ways() {
        let message: Message = serde_json::from_value(json!({
            "id": "m1", "chat_id": "c1", "sender": "bob", "text": "", "ts": 1,
            "media": {"id": "f1", "kind": "voice", "name": "v.ogg", "content_type": "audio/ogg", "size": 9,
                      "duration_ms": 1500, "waveform": [0, 128, 255]}
        }))
        .expect("message");
        let MessageContent::Media { media, caption } = content_of(&message) else {
            panic!("not media")
        };
        assert_eq!(caption, None);
        assert_eq!(media.kind, MediaKind::Voice);
        assert_eq!(media.waveform, Some(vec![0, 512, 1020]));
        let body = message_body(&OutgoingMessage {
            content: MessageContent::Media {
                media,
                caption: None,
            },
            reply_to: None,
        });
        assert_eq!(body["media"]["waveform"], json!([0, 128, 255]));
        assert_eq!(body["media"]["kind"], "voice");
    }

    #[test]
    fn outgoing_bodies_carry_replies_locations_and_contacts() {
        let body = message_body(&OutgoingMessage {
            content: MessageContent::Text(FormattedText::plain("hey")),
            reply_to: Some(MessageId::new("m9")),
        });
        assert_eq!(body["text"], "hey");
        assert_eq!(body["reply_to"], "m9");
        let body = message_body(&OutgoingMessage {
            content: MessageContent::Location {
                latitude: 1.0,
                longitude: 2.0,
                name: None,
            },
            reply_to: None,
        });
        assert_eq!(body, json!({"location": {"lat": 1.0, "lon": 2.0}}));
    }
}
