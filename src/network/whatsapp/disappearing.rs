//! Disappearing messages. A WhatsApp chat can carry a timer (24 hours, 7 days, 90 days in the
//! apps); every message sent while it is on carries `contextInfo.expiration`, and WhatsApp's apps
//! delete the message that long after it was sent. ferry does the same in Matrix, as
//! mautrix-whatsapp does: a received message with an expiration gets a deadline in
//! `whatsapp_expiry` (so it survives a restart of ferry), and a task per running session turns
//! due deadlines into deletes, which the bridge shows as redactions (the timers and deadlines
//! themselves are kept by the shared [`crate::network::expiry`]).
//!
//! The chat's timer is kept per chat in the key-value table (`whatsapp/<login>/timer/<chat>`),
//! learned from the timer changes WhatsApp sends (a protocol message, shown as a notice) and
//! from the expiration received messages carry. Messages ferry sends into such a chat carry the
//! same expiration, so the other side's apps delete them too, and get a deadline of their own.
//!
//! WhatsApp counts from the moment a message was sent, so the deadline is the message's time
//! plus its expiration; a message bridged after its deadline (ferry was down) is redacted at
//! once.

use whatsapp_rust::{wacore::proto_helpers::MessageExt as _, waproto::whatsapp as wa};

use super::ids;
use crate::network::{
    ChatId, ChatKind, MessageContent, MessageId, RemoteEvent, RemoteUserId,
    richtext::{Entity, EntityKind, FormattedText},
};

/// The login's delete of an expired message (the author named in ferry's id, else the login).
pub fn expired(login: &str, chat: ChatId, id: MessageId) -> (ChatKind, RemoteEvent) {
    let kind = if ids::chat_is_group(&chat) {
        ChatKind::Group
    } else {
        ChatKind::Dm
    };
    let by =
        ids::split_message_id(&id).map_or_else(|_| RemoteUserId::new(login), |(author, _)| author);
    (kind, RemoteEvent::Delete { chat, id, by })
}

/// The timers WhatsApp's apps offer (besides off): 24 hours, 7 days, 90 days.
pub const OFFERED: [u32; 3] = [86_400, 7 * 86_400, 90 * 86_400];

/// Sets a chat's timer for everyone, as the apps do: a group through the group's settings (an
/// admin-only change when the group says so), a direct chat through the `EPHEMERAL_SETTING`
/// protocol message to the other person. Only the timers WhatsApp offers are accepted.
pub async fn set_for_chat(
    client: &whatsapp_rust::Client,
    chat: &ChatId,
    seconds: u32,
) -> Result<(), crate::network::NetworkError> {
    use crate::network::NetworkError;
    if seconds != 0 && !OFFERED.contains(&seconds) {
        return Err(NetworkError::Rejected(
            "WhatsApp offers 24 hours, 7 days or 90 days (or off)".to_owned(),
        ));
    }
    let jid = ids::chat_jid(chat).map_err(|e| NetworkError::Rejected(e.to_string()))?;
    if ids::chat_is_group(chat) {
        client
            .groups()
            .set_ephemeral(jid, seconds)
            .await
            .map_err(|e| NetworkError::Rejected(format!("WhatsApp refused the timer: {e}")))
    } else {
        client
            .set_chat_disappearing_timer(jid, seconds)
            .await
            .map(|_| ())
            .map_err(|e| NetworkError::Transient(format!("WhatsApp timer change failed: {e}")))
    }
}

/// The line a timer change shows in the room (as `convert` shows the protocol message).
pub fn notice(seconds: u32) -> MessageContent {
    let text = if seconds == 0 {
        "turned off disappearing messages".to_owned()
    } else {
        format!(
            "set disappearing messages to {}",
            super::convert::timer_text(seconds)
        )
    };
    let len = text.chars().count();
    MessageContent::Text(FormattedText::new(
        text,
        vec![Entity::new(0, len, EntityKind::Italic)],
    ))
}

/// The deadline of a message sent at `sent_ms` that disappears after `seconds`.
pub fn deadline(sent_ms: i64, seconds: u32) -> i64 {
    sent_ms.saturating_add(i64::from(seconds).saturating_mul(1000))
}

/// A timer change the message announces (the protocol message WhatsApp sends when someone
/// turns disappearing messages on, off or to another duration).
pub fn setting_of(message: &wa::Message) -> Option<u32> {
    use wa::message::protocol_message::Type;
    let p = message.get_base_message().protocol_message.as_option()?;
    (p.r#type == Some(Type::EPHEMERAL_SETTING)).then(|| p.ephemeral_expiration.unwrap_or(0))
}

/// The expiration a received message carries (seconds; `None` when it does not disappear).
pub fn expiration_of(message: &wa::Message) -> Option<u32> {
    message
        .get_base_message()
        .get_ephemeral_expiration()
        .filter(|s| *s > 0)
}

/// Makes an outgoing message disappear after `seconds` on WhatsApp (`contextInfo.expiration`;
/// a bare text becomes an extended text to carry it). Protocol messages (edits, revokes,
/// reactions) carry none.
pub fn stamp(message: &mut wa::Message, seconds: u32) {
    if seconds == 0 || message.protocol_message.is_set() || message.reaction_message.is_set() {
        return;
    }
    if !message.set_ephemeral_expiration(seconds) {
        tracing::debug!("this WhatsApp message kind cannot carry a disappearing timer");
    }
}

#[cfg(test)]
mod tests {
    use whatsapp_rust::waproto::buffa::MessageField;

    use super::*;

    #[test]
    fn outgoing_text_carries_the_timer_and_reads_back() {
        let mut m = wa::Message {
            conversation: Some("bye soon".to_owned()),
            ..Default::default()
        };
        stamp(&mut m, 86_400);
        assert_eq!(expiration_of(&m), Some(86_400));
        let text = m.extended_text_message.as_option().expect("promoted");
        assert_eq!(text.text.as_deref(), Some("bye soon"));
        assert!(m.conversation.is_none());
    }

    #[test]
    fn no_timer_leaves_the_message_alone() {
        let mut m = wa::Message {
            conversation: Some("stays".to_owned()),
            ..Default::default()
        };
        stamp(&mut m, 0);
        assert_eq!(m.conversation.as_deref(), Some("stays"));
        assert_eq!(expiration_of(&m), None);
    }

    #[test]
    fn a_timer_change_is_recognised_and_deadlines_count_from_sending() {
        let m = wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                r#type: Some(wa::message::protocol_message::Type::EPHEMERAL_SETTING),
                ephemeral_expiration: Some(604_800),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(setting_of(&m), Some(604_800));
        assert_eq!(
            setting_of(&wa::Message {
                conversation: Some("x".into()),
                ..Default::default()
            }),
            None
        );
        assert_eq!(deadline(1_000, 5), 6_000);
    }

    #[test]
    fn a_group_timer_notice_reads_like_the_protocol_message_one() {
        let own = RemoteUserId::new("1");
        let resolve = |_: &str| None;
        let ctx = super::super::convert::Context {
            sender: &own,
            own: &own,
            dm_peer: None,
            resolve: &resolve,
        };
        for seconds in [0, 86_400] {
            let m = wa::Message {
                protocol_message: MessageField::some(wa::message::ProtocolMessage {
                    r#type: Some(wa::message::protocol_message::Type::EPHEMERAL_SETTING),
                    ephemeral_expiration: Some(seconds),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let (super::super::convert::Inbound::Message { content, .. }, _) =
                super::super::convert::inbound(&m, &ctx)
            else {
                panic!("a notice");
            };
            assert_eq!(content, notice(seconds));
        }
    }
}
