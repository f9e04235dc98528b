//! The sim server's JSON shapes (testnet/SIM_PROTOCOL.md), and their conversion to the neutral
//! model. Pure functions, unit-tested.

use serde::Deserialize;

use crate::network::{
    ChatId, ChatInfo, ChatKind, MessageContent, MessageId, RemoteEvent, RemoteUserId, UserInfo,
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
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub id: String,
    pub chat_id: String,
    pub sender: String,
    pub text: String,
    pub ts: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatList {
    pub chats: Vec<Chat>,
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
    Message { message: Message },
    Chat { chat: Chat },
    MemberJoined { chat_id: String, user: User },
    MemberLeft { chat_id: String, user_id: String },
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
            members: chat.members.into_iter().map(UserInfo::from).collect(),
        }
    }
}

/// Converts a frame body to a neutral event. Messages need the sender's profile, which the
/// caller resolves (`sender`).
pub fn to_remote_event(body: FrameBody, sender: impl FnOnce(&str) -> UserInfo) -> RemoteEvent {
    match body {
        FrameBody::Message { message } => {
            let sender = sender(&message.sender);
            RemoteEvent::Message {
                chat: ChatId::new(message.chat_id),
                id: MessageId::new(message.id),
                sender,
                content: MessageContent::text(message.text),
                timestamp: message.ts,
            }
        }
        FrameBody::Chat { chat } => RemoteEvent::Chat(chat.into()),
        FrameBody::MemberJoined { chat_id, user } => RemoteEvent::MemberJoined {
            chat: ChatId::new(chat_id),
            user: user.into(),
        },
        FrameBody::MemberLeft { chat_id, user_id } => RemoteEvent::MemberLeft {
            chat: ChatId::new(chat_id),
            user: RemoteUserId::new(user_id),
        },
    }
}

impl FrameBody {
    pub fn chat_id(&self) -> &str {
        match self {
            Self::Message { message } => &message.chat_id,
            Self::Chat { chat } => &chat.id,
            Self::MemberJoined { chat_id, .. } | Self::MemberLeft { chat_id, .. } => chat_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_into_neutral_events() {
        let frame: Frame = serde_json::from_str(
            r#"{"seq":5,"type":"message","message":{"id":"m7","chat_id":"c1","sender":"bob","text":"hi","ts":10,"txn_id":null}}"#,
        )
        .expect("message frame");
        assert_eq!(frame.seq, 5);
        let event = to_remote_event(frame.body, |id| UserInfo {
            id: RemoteUserId::new(id),
            name: format!("name of {id}"),
            avatar: None,
        });
        let RemoteEvent::Message {
            sender, content, ..
        } = event
        else {
            panic!("not a message")
        };
        assert_eq!(sender.name, "name of bob");
        assert_eq!(content, MessageContent::text("hi"));

        let frame: Frame = serde_json::from_str(
            r#"{"seq":8,"type":"member_left","chat_id":"c2","user_id":"bob"}"#,
        )
        .expect("left");
        assert_eq!(frame.body.chat_id(), "c2");
        assert!(serde_json::from_str::<Frame>(r#"{"seq":1,"type":"explode"}"#).is_err());
        assert!(serde_json::from_str::<Frame>(r#"{"type":"chat"}"#).is_err());
    }
}
