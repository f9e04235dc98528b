//! WhatsApp addresses (JIDs) as ferry's typed remote ids.
//!
//! One person has two WhatsApp identities: a phone-number JID (`5511…@s.whatsapp.net`, "PN")
//! and a "LID" (`1000…@lid`) that WhatsApp uses more and more instead, switching between them per
//! chat. So that one person is one ghost and one DM portal, ferry names a user by the phone
//! number whenever it is known (the message's alternate address or the client's LID mapping
//! tell it), and by the LID only for contacts whose number WhatsApp keeps hidden:
//!
//! | WhatsApp                 | ferry                           |
//! |--------------------------|---------------------------------|
//! | `5511987650001@s.whatsapp.net` (any device) | user and DM chat `5511987650001` |
//! | `100000012345678@lid`, number unknown       | user and DM chat `lid-100000012345678` |
//! | `120363021033254949@g.us` | group chat `g-120363021033254949` |
//!
//! Message ids are `<author>:<stanza id>`: WhatsApp stanza ids are only unique per sender, and
//! replies, reactions, edits and revokes must name the author anyway.

use whatsapp_rust::{Jid, wacore_binary::Server};

use crate::network::{ChatId, MessageId, RemoteUserId};

const LID_PREFIX: &str = "lid-";
const GROUP_PREFIX: &str = "g-";

/// Why a ferry id is not a WhatsApp address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a WhatsApp {what}: {id}")]
pub struct BadId {
    pub what: &'static str,
    pub id: String,
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The ferry user of a user JID (device and agent dropped); `None` for groups and the like.
/// Pass the phone-number JID when known: a LID turns into a `lid-` id.
pub fn user_of(jid: &Jid) -> Option<RemoteUserId> {
    let user = jid.user.as_str();
    if !digits(user) {
        return None;
    }
    if jid.is_pn() {
        Some(RemoteUserId::new(user))
    } else if jid.is_lid() {
        Some(RemoteUserId::new(format!("{LID_PREFIX}{user}")))
    } else {
        None
    }
}

/// The JID a ferry user id names.
pub fn user_jid(user: &RemoteUserId) -> Result<Jid, BadId> {
    let id = user.as_str();
    let bad = || BadId {
        what: "user",
        id: id.to_owned(),
    };
    match id.strip_prefix(LID_PREFIX) {
        Some(lid) if digits(lid) => Ok(Jid::lid(lid)),
        Some(_) => Err(bad()),
        None if digits(id) => Ok(Jid::pn(id)),
        None => Err(bad()),
    }
}

/// Whether a chat JID is a group.
pub fn is_group(jid: &Jid) -> bool {
    jid.server == Server::Group
}

/// The ferry chat of a chat JID (groups, or a DM's peer as in [`user_of`]).
pub fn chat_of(jid: &Jid) -> Option<ChatId> {
    if is_group(jid) {
        let id = jid.user.as_str();
        let ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit() || b == b'-');
        return ok.then(|| ChatId::new(format!("{GROUP_PREFIX}{id}")));
    }
    user_of(jid).map(|u| ChatId::new(u.as_str()))
}

/// The JID of a ferry chat.
pub fn chat_jid(chat: &ChatId) -> Result<Jid, BadId> {
    match chat.as_str().strip_prefix(GROUP_PREFIX) {
        Some(group)
            if !group.is_empty() && group.bytes().all(|b| b.is_ascii_digit() || b == b'-') =>
        {
            Ok(Jid::group(group))
        }
        Some(_) => Err(BadId {
            what: "group",
            id: chat.as_str().to_owned(),
        }),
        None => user_jid(&RemoteUserId::new(chat.as_str())).map_err(|_| BadId {
            what: "chat",
            id: chat.as_str().to_owned(),
        }),
    }
}

/// Whether a ferry chat is a group.
pub fn chat_is_group(chat: &ChatId) -> bool {
    chat.as_str().starts_with(GROUP_PREFIX)
}

/// The ferry message id of stanza `id` written by `author`.
pub fn message_id(author: &RemoteUserId, id: &str) -> MessageId {
    MessageId::new(format!("{}:{id}", author.as_str()))
}

/// The author and stanza id of a ferry message id.
pub fn split_message_id(id: &MessageId) -> Result<(RemoteUserId, &str), BadId> {
    let bad = || BadId {
        what: "message",
        id: id.as_str().to_owned(),
    };
    let (author, stanza) = id.as_str().split_once(':').ok_or_else(bad)?;
    if stanza.is_empty() {
        return Err(bad());
    }
    let author = RemoteUserId::new(author);
    user_jid(&author).map_err(|_| bad())?;
    Ok((author, stanza))
}

/// The stanza id ferry uses for a send from Matrix: derived from the Matrix transaction, so a
/// retried send reuses it and WhatsApp drops the duplicate; shaped like WhatsApp Web's ids.
pub fn stanza_id_for_txn(txn_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(txn_id.as_bytes());
    format!("3EB0{}", hex::encode_upper(&digest[..10]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_lids_and_groups_round_trip() {
        let pn: Jid = "5511987650001:7@s.whatsapp.net".parse().unwrap();
        let user = user_of(&pn).unwrap();
        assert_eq!(user.as_str(), "5511987650001");
        assert_eq!(user_jid(&user).unwrap(), Jid::pn("5511987650001"));
        let lid: Jid = "100000012345678@lid".parse().unwrap();
        let user = user_of(&lid).unwrap();
        assert_eq!(user.as_str(), "lid-100000012345678");
        assert_eq!(user_jid(&user).unwrap(), lid);
        let group: Jid = "120363021033254949@g.us".parse().unwrap();
        assert_eq!(user_of(&group), None);
        let chat = chat_of(&group).unwrap();
        assert_eq!(chat.as_str(), "g-120363021033254949");
        assert!(chat_is_group(&chat));
        assert_eq!(chat_jid(&chat).unwrap(), group);
        assert_eq!(chat_jid(&ChatId::new("5511")).unwrap(), Jid::pn("5511"));
    }

    #[test]
    fn malformed_ids_are_refused_not_guessed() {
        for bad in ["", "abc", "lid-", "lid-12a", "+5511", "55 11"] {
            assert!(user_jid(&RemoteUserId::new(bad)).is_err(), "{bad}");
        }
        assert!(chat_jid(&ChatId::new("g-")).is_err());
        assert!(chat_jid(&ChatId::new("g-12@x")).is_err());
        assert!(split_message_id(&MessageId::new("nocolon")).is_err());
        assert!(split_message_id(&MessageId::new("5511:")).is_err());
        assert!(split_message_id(&MessageId::new("bob:3EB0")).is_err());
        let id = message_id(&RemoteUserId::new("lid-77"), "3EB0AA");
        assert_eq!(id.as_str(), "lid-77:3EB0AA");
        let (author, stanza) = split_message_id(&id).unwrap();
        assert_eq!((author.as_str(), stanza), ("lid-77", "3EB0AA"));
    }

    #[test]
    fn retried_sends_reuse_their_stanza_id() {
        let a = stanza_id_for_txn("m123.0");
        assert_eq!(a, stanza_id_for_txn("m123.0"));
        assert_ne!(a, stanza_id_for_txn("m123.1"));
        assert!(a.starts_with("3EB0") && a.len() == 24);
    }
}
