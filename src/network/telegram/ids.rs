//! Telegram chat ids in ferry: `u<id>` (a private chat, named by the other user), `g<id>` (a
//! basic group), `c<id>` (a channel or supergroup; for a forum, the space of its topics) and
//! `c<id>t<topic>` (one topic of a forum, the topic's id being that of the message that opened
//! it; the General topic is 1): a topic is a room of its own. Message ids are the login's own for
//! private chats and basic groups and the channel's for channels, so (chat, id) is unique per
//! login either way.

use grammers_client::session::types::PeerId;

use crate::network::{ChatId, ChatKind};

pub fn chat_id(peer: PeerId) -> Option<ChatId> {
    use grammers_client::session::types::PeerKind;
    let id = peer.bare_id()?;
    Some(ChatId::new(match peer.kind() {
        PeerKind::User => format!("u{id}"),
        PeerKind::Chat => format!("g{id}"),
        PeerKind::Channel => format!("c{id}"),
    }))
}

/// The General topic every forum has.
pub const GENERAL_TOPIC: i32 = 1;

/// The chat of one forum topic.
pub fn topic_chat(channel: i64, topic: i32) -> ChatId {
    ChatId::new(format!("c{channel}t{topic}"))
}

/// The forum topic of a topic chat (`None` for every other chat).
pub fn topic_of(chat: &ChatId) -> Option<i32> {
    let rest = chat.as_str().strip_prefix('c')?;
    let (channel, topic) = rest.split_once('t')?;
    channel.parse::<i64>().ok()?;
    topic.parse().ok().filter(|t| *t > 0)
}

/// The peer a chat is in: a topic chat is in its forum channel.
pub fn peer_id(chat: &ChatId) -> Option<PeerId> {
    let s = chat.as_str();
    let s = match topic_of(chat) {
        Some(_) => s.split_once('t')?.0,
        None => s,
    };
    let (kind, id) = s.split_at_checked(1)?;
    let id: i64 = id.parse().ok()?;
    match kind {
        "u" => PeerId::user(id),
        "g" => PeerId::chat(id),
        "c" => PeerId::channel(id),
        _ => None,
    }
}

pub fn chat_kind(chat: &ChatId) -> ChatKind {
    if chat.as_str().starts_with('u') {
        ChatKind::Dm
    } else {
        ChatKind::Group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_ids_round_trip_and_reject_garbage() {
        for peer in [
            PeerId::user_unchecked(42),
            PeerId::chat_unchecked(7),
            PeerId::channel_unchecked(1_900_000_001),
        ] {
            let chat = chat_id(peer).expect("encodes");
            assert_eq!(peer_id(&chat), Some(peer));
        }
        assert_eq!(chat_kind(&ChatId::new("u42")), ChatKind::Dm);
        assert_eq!(chat_kind(&ChatId::new("c42")), ChatKind::Group);
        let topic = topic_chat(1_900_000_001, 17);
        assert_eq!(topic.as_str(), "c1900000001t17");
        assert_eq!(topic_of(&topic), Some(17));
        assert_eq!(
            peer_id(&topic),
            Some(PeerId::channel_unchecked(1_900_000_001))
        );
        assert_eq!(chat_kind(&topic), ChatKind::Group);
        assert_eq!(topic_of(&ChatId::new("c5")), None);
        for bad in ["", "u", "x12", "uabc", "é12", "c5t", "c5tx", "c5t0", "u5t3"] {
            assert_eq!(peer_id(&ChatId::new(bad)), None, "{bad}");
        }
    }
}
