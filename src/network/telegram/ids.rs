//! Telegram chat ids in ferry: `u<id>` (a private chat, named by the other user), `g<id>` (a
//! basic group) and `c<id>` (a channel or supergroup). Message ids are the login's own for
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

pub fn peer_id(chat: &ChatId) -> Option<PeerId> {
    let s = chat.as_str();
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
        for bad in ["", "u", "x12", "uabc", "é12"] {
            assert_eq!(peer_id(&ChatId::new(bad)), None, "{bad}");
        }
    }
}
