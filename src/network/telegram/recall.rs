//! What the session must still know after a restart to read Telegram's updates right: the
//! reaction list last seen per message, and where each poll was bridged.
//!
//! Telegram sends a message's whole reaction list each time, so telling an added reaction from
//! a removed one needs the previous list; a poll's vote update names only the poll, so editing
//! the bridged poll needs its chat, message and options. Both are kept in memory and written
//! through to ferry's `kv_store` (keys `telegram/<login>/reactions/<chat>/<message>` and
//! `telegram/<login>/poll/<poll id>`), after the core accepted the events they explain. A
//! failed write is logged: the worst outcome is the pre-restart behaviour (a removal after a
//! restart not seen, a vote not counted).

use grammers_client::tl;
use grammers_client::tl::{Deserializable as _, Serializable as _};
use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::network::{ChatId, RemoteUserId, UserInfo};

/// (user id, emoji) pairs on one message.
pub type Reactions = Vec<(i64, String)>;

/// Where a poll was bridged, so a vote update can edit it.
#[derive(Clone)]
pub struct PollSeen {
    pub chat: ChatId,
    pub message: i32,
    pub sender: UserInfo,
    pub poll: tl::types::Poll,
}

/// [`PollSeen`] as stored: the poll as its TL bytes.
#[derive(Serialize, Deserialize)]
struct StoredPoll {
    chat: String,
    message: i32,
    sender: String,
    sender_name: String,
    poll: String,
}

/// The stored memory of one login.
pub struct Recall {
    db: Db,
    login: String,
}

impl Recall {
    pub fn new(db: Db, login: &str) -> Self {
        Self {
            db,
            login: login.to_owned(),
        }
    }

    fn reactions_key(&self, chat: &ChatId, message: i32) -> String {
        format!("telegram/{}/reactions/{chat}/{message}", self.login)
    }

    fn poll_key(&self, poll: i64) -> String {
        format!("telegram/{}/poll/{poll}", self.login)
    }

    /// The reaction list stored for a message (empty when none was).
    pub async fn reactions(&self, chat: &ChatId, message: i32) -> Reactions {
        match self.db.kv_get(&self.reactions_key(chat, message)).await {
            Ok(Some(json)) => serde_json::from_str(&json).unwrap_or_default(),
            Ok(None) => Vec::new(),
            Err(err) => {
                tracing::warn!(%err, "cannot read a stored Telegram reaction list");
                Vec::new()
            }
        }
    }

    pub async fn set_reactions(&self, chat: &ChatId, message: i32, list: &Reactions) {
        let json = serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned());
        if let Err(err) = self
            .db
            .kv_set(&self.reactions_key(chat, message), &json)
            .await
        {
            tracing::warn!(%err, "cannot store a Telegram reaction list");
        }
    }

    /// A poll bridged before (in this run or an earlier one).
    pub async fn poll(&self, poll: i64) -> Option<PollSeen> {
        let json = match self.db.kv_get(&self.poll_key(poll)).await {
            Ok(json) => json?,
            Err(err) => {
                tracing::warn!(%err, "cannot read a stored Telegram poll");
                return None;
            }
        };
        let stored: StoredPoll = serde_json::from_str(&json).ok()?;
        let bytes = hex::decode(&stored.poll).ok()?;
        let tl::enums::Poll::Poll(poll) = tl::enums::Poll::from_bytes(&bytes).ok()?;
        Some(PollSeen {
            chat: ChatId::new(stored.chat),
            message: stored.message,
            sender: UserInfo {
                id: RemoteUserId::new(stored.sender),
                name: stored.sender_name,
                avatar: None,
            },
            poll,
        })
    }

    pub async fn set_poll(&self, poll_id: i64, seen: &PollSeen) {
        let stored = StoredPoll {
            chat: seen.chat.as_str().to_owned(),
            message: seen.message,
            sender: seen.sender.id.as_str().to_owned(),
            sender_name: seen.sender.name.clone(),
            poll: hex::encode(tl::enums::Poll::Poll(seen.poll.clone()).to_bytes()),
        };
        let Ok(json) = serde_json::to_string(&stored) else {
            return;
        };
        if let Err(err) = self.db.kv_set(&self.poll_key(poll_id), &json).await {
            tracing::warn!(%err, "cannot store a Telegram poll");
        }
    }
}
