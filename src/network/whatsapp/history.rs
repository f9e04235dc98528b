//! The history WhatsApp sends after linking, turned into inbox entries, bounded and paced.
//!
//! After a companion links, the phone uploads its recent conversations as encrypted,
//! zlib-compressed `HistorySync` blobs to WhatsApp's media host and sends the companion a
//! `HistorySyncNotification` with the blob's media keys (small first chunks may instead carry
//! the payload inline). whatsapp-rust downloads and decrypts the blob itself, acknowledges the
//! chunk to the phone and hands ferry the decoded `HistorySync`; both forms reach ferry the
//! same way.
//!
//! A sync can hold thousands of messages, and the homeserver must stay responsive, so ferry
//! takes at most `history_max_conversations` conversations (the most recently active) and the
//! newest `history_messages_per_chat` messages of each, writes them to the remote inbox (so they
//! are bridged like live ones: in order, once, even across a restart), and pauses
//! `history_pace_ms` after each. Conversations already taken from an earlier chunk count once.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use whatsapp_rust::waproto::{buffa::Message as _, whatsapp as wa};

use super::inbox::{Feed, InboxHook, Stored};
use crate::db::Db;

/// How much of a history sync ferry bridges.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub conversations: usize,
    pub messages_per_chat: usize,
}

/// The push names a sync carries: (JID, name).
pub fn push_names(sync: &wa::HistorySync) -> Vec<(String, String)> {
    sync.pushnames
        .iter()
        .filter_map(|p| Some((p.id.clone()?, p.pushname.clone()?)))
        .filter(|(_, name)| !name.is_empty())
        .collect()
}

/// The inbox entries to bridge from one sync chunk: conversations most recently active first
/// (`taken` holds those taken from earlier chunks and is updated), each conversation's newest
/// messages oldest first.
pub fn plan(sync: &wa::HistorySync, limits: Limits, taken: &mut HashSet<String>) -> Vec<Stored> {
    let mut conversations: Vec<(u64, &wa::Conversation)> = sync
        .conversations
        .iter()
        .map(|c| {
            let newest = c
                .messages
                .iter()
                .filter_map(|m| m.message.as_option()?.message_timestamp)
                .max()
                .or(c.conversation_timestamp)
                .unwrap_or(0);
            (newest, c)
        })
        .collect();
    conversations.sort_by_key(|(newest, _)| std::cmp::Reverse(*newest));
    let mut entries = Vec::new();
    for (_, conversation) in conversations {
        if !taken.contains(&conversation.id) {
            if taken.len() >= limits.conversations {
                continue;
            }
            taken.insert(conversation.id.clone());
        }
        // The sync's own order is not guaranteed: by timestamp, then the phone's order id.
        let mut messages: Vec<(u64, u64, &wa::WebMessageInfo)> = conversation
            .messages
            .iter()
            .filter_map(|m| {
                let info = m.message.as_option()?;
                Some((
                    info.message_timestamp.unwrap_or(0),
                    m.msg_order_id.unwrap_or(0),
                    info,
                ))
            })
            .collect();
        messages.sort_by_key(|(ts, order, _)| (*ts, *order));
        let skip = messages.len().saturating_sub(limits.messages_per_chat);
        entries.extend(
            messages
                .into_iter()
                .skip(skip)
                .filter_map(|(_, _, info)| stored(&conversation.id, info)),
        );
    }
    entries
}

/// Writes the entries to the inbox (and the running session's feed), pausing `pace` after
/// each. Stops when the session has stopped (no feed): what was not written yet is lost
/// with the sync, which WhatsApp does not send twice; what was written is bridged at the next
/// start.
pub async fn store_paced(
    db: Db,
    login: String,
    feed: Arc<Mutex<Option<Feed>>>,
    entries: Vec<Stored>,
    pace: Duration,
) {
    for entry in entries {
        let Some(feed) = feed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        else {
            return;
        };
        if let Err(err) = InboxHook::push(&db, &login, &feed, entry).await {
            tracing::warn!(%err, "cannot store a WhatsApp history message");
        }
        tokio::time::sleep(pace).await;
    }
}

/// A history-sync message as an inbox entry.
fn stored(chat: &str, info: &wa::WebMessageInfo) -> Option<Stored> {
    let key = info.key.as_option()?;
    let mut message = info.message.as_option()?.clone();
    // Votes on a poll from the history are opened with its message secret (see `polls`).
    super::polls::adopt_history_secret(&mut message, info.message_secret.as_deref());
    let from_me = key.from_me.unwrap_or(false);
    let chat = key.remote_jid.clone().unwrap_or_else(|| chat.to_owned());
    let is_group = chat.ends_with("@g.us");
    let sender = if is_group {
        info.participant
            .clone()
            .or_else(|| key.participant.clone())?
    } else {
        chat.clone()
    };
    Some(Stored {
        chat,
        sender,
        sender_alt: None,
        chat_alt: None,
        from_me,
        is_group,
        id: key.id.clone()?,
        timestamp: i64::try_from(info.message_timestamp.unwrap_or(0)).unwrap_or(0),
        push_name: info.push_name.clone().unwrap_or_default(),
        message: base64::engine::general_purpose::STANDARD.encode(message.encode_to_vec()),
        history: true,
        event: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_rust::waproto::buffa::MessageField;

    fn conversation(id: &str, texts: &[(u64, &str)]) -> wa::Conversation {
        wa::Conversation {
            id: id.to_owned(),
            messages: texts
                .iter()
                .enumerate()
                .map(|(i, (ts, text))| wa::HistorySyncMsg {
                    message: MessageField::some(wa::WebMessageInfo {
                        key: MessageField::some(wa::MessageKey {
                            remote_jid: Some(id.to_owned()),
                            from_me: Some(false),
                            id: Some(format!("{id}-{i}")),
                            participant: None,
                        }),
                        message: MessageField::some(wa::Message {
                            conversation: Some((*text).to_owned()),
                            ..Default::default()
                        }),
                        message_timestamp: Some(*ts),
                        ..Default::default()
                    }),
                    msg_order_id: Some(i as u64),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn text(s: &Stored) -> String {
        s.decode().and_then(|m| m.conversation).unwrap_or_default()
    }

    #[test]
    fn newest_conversations_and_messages_within_limits_oldest_first() {
        let sync = wa::HistorySync {
            conversations: vec![
                conversation("1@s.whatsapp.net", &[(30, "c"), (10, "a"), (20, "b")]),
                conversation("2@s.whatsapp.net", &[(5, "old")]),
                conversation("3@s.whatsapp.net", &[(40, "x"), (41, "y")]),
            ],
            ..Default::default()
        };
        let limits = Limits {
            conversations: 2,
            messages_per_chat: 2,
        };
        let mut taken = HashSet::new();
        let got: Vec<(String, String)> = plan(&sync, limits, &mut taken)
            .iter()
            .map(|s| (s.chat.clone(), text(s)))
            .collect();
        let want = [
            ("3@s.whatsapp.net", "x"),
            ("3@s.whatsapp.net", "y"),
            ("1@s.whatsapp.net", "b"),
            ("1@s.whatsapp.net", "c"),
        ];
        assert_eq!(
            got,
            want.map(|(c, t)| (c.to_owned(), t.to_owned())).to_vec()
        );
        // A later chunk: a conversation already taken continues, a new one is over the limit.
        let more = wa::HistorySync {
            conversations: vec![
                conversation("2@s.whatsapp.net", &[(50, "late")]),
                conversation("1@s.whatsapp.net", &[(1, "older")]),
            ],
            ..Default::default()
        };
        let got: Vec<String> = plan(&more, limits, &mut taken).iter().map(text).collect();
        assert_eq!(got, vec!["older".to_owned()]);
    }
}
