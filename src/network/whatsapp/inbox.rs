//! Received WhatsApp messages are stored before WhatsApp is told they arrived.
//!
//! whatsapp-rust acknowledges a message to the server as soon as it is decrypted, unless an
//! "inbound durability hook" is registered: then the ack waits until the hook returns. ferry's
//! hook writes each decrypted message (its protobuf and the addressing the converter needs) to
//! the `remote_inbox` table and only then lets the ack go; the row's id is the checkpoint the
//! bridge advances once the message is in Matrix. A crash between the two loses nothing: the
//! next start replays the inbox after the checkpoint (and a crash before the write makes
//! WhatsApp redeliver). The inbox holds message plaintext, like the Signal connector's.
//!
//! Read receipts and group changes take the same path ([`InboxEvent`]), so they are bridged in
//! order with the messages and survive a restart between receipt and bridging. whatsapp-rust
//! acknowledges those stanzas itself before ferry sees them (the durability hook covers
//! messages only), so the remaining window is the in-process hand-over from the library to the
//! inbox write. Typing is ephemeral and deliberately not stored: replaying a stale "typing"
//! after a restart would be wrong.

use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use whatsapp_rust::{
    Client, InboundDurabilityHook,
    types::events::InboundMessage,
    waproto::{buffa::Message as _, whatsapp as wa},
};

use super::WHATSAPP;
use crate::db::Db;

/// A received message as kept in the inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// Chat JID (group, or the DM peer as WhatsApp addressed it).
    pub chat: String,
    /// Author JID (with device).
    pub sender: String,
    /// The author's other address (phone number when `sender` is a LID, or the reverse).
    #[serde(default)]
    pub sender_alt: Option<String>,
    /// The chat's other address (DMs).
    #[serde(default)]
    pub chat_alt: Option<String>,
    pub from_me: bool,
    pub is_group: bool,
    /// Stanza id.
    pub id: String,
    /// Unix seconds.
    pub timestamp: i64,
    #[serde(default)]
    pub push_name: String,
    /// The `wa::Message` protobuf, base64.
    pub message: String,
    /// From the history sync after linking (no receipts, no notifications).
    #[serde(default)]
    pub history: bool,
    /// Not a message but a receipt or group change (the message fields are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<InboxEvent>,
}

/// A non-message event kept in the inbox. JIDs as strings, as WhatsApp addressed them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InboxEvent {
    /// `reader` read `chat` up to `message` (its stanza id).
    Read {
        chat: String,
        reader: String,
        #[serde(default)]
        reader_alt: Option<String>,
        message: String,
    },
    /// Members added to a group: (JID, phone-number JID when the JID is a LID).
    MembersAdded {
        group: String,
        members: Vec<(String, Option<String>)>,
    },
    /// Members removed from (or leaving) a group.
    MembersRemoved {
        group: String,
        members: Vec<(String, Option<String>)>,
    },
    /// Subject, description or admins changed: the group's details are read again.
    GroupChanged { group: String },
    /// The group was linked to a community or unlinked from one: its place is read again.
    GroupParent { group: String },
    /// An admin set the group's disappearing-messages timer (seconds, 0 = off).
    GroupTimer {
        group: String,
        seconds: u32,
        /// Who set it: (JID, phone-number JID when the JID is a LID).
        #[serde(default)]
        by: Option<(String, Option<String>)>,
        /// The notification's id, which names the bridged line.
        #[serde(default)]
        notification: Option<String>,
        timestamp: i64,
    },
}

impl Stored {
    pub fn from_inbound(m: &InboundMessage) -> Self {
        let info = &m.info;
        let source = &info.source;
        Self {
            chat: source.chat.to_string(),
            sender: source.sender.to_string(),
            sender_alt: source.sender_alt.as_ref().map(ToString::to_string),
            chat_alt: source.recipient_alt.as_ref().map(ToString::to_string),
            from_me: source.is_from_me,
            is_group: source.is_group,
            id: info.id.to_string(),
            timestamp: info.timestamp.timestamp(),
            push_name: info.push_name.clone(),
            message: base64::engine::general_purpose::STANDARD.encode(m.message.encode_to_vec()),
            history: false,
            event: None,
        }
    }

    /// An inbox entry for a non-message event.
    pub fn event(event: InboxEvent) -> Self {
        Self {
            chat: String::new(),
            sender: String::new(),
            sender_alt: None,
            chat_alt: None,
            from_me: false,
            is_group: false,
            id: String::new(),
            timestamp: 0,
            push_name: String::new(),
            message: String::new(),
            history: false,
            event: Some(event),
        }
    }

    /// The message itself; `None` when the stored bytes do not decode (logged by the caller).
    pub fn decode(&self) -> Option<wa::Message> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.message)
            .ok()?;
        wa::Message::decode_from_slice(&bytes).ok()
    }
}

/// What the hook hands the session: an inbox position and its message.
pub type Feed = mpsc::UnboundedSender<(i64, Stored)>;

/// The durability hook of one login's client.
pub struct InboxHook {
    db: Db,
    login: String,
    feed: Feed,
}

impl InboxHook {
    pub fn new(db: Db, login: String, feed: Feed) -> Self {
        Self { db, login, feed }
    }

    /// Stores one message and hands it to the session; returns its position.
    pub async fn push(
        db: &Db,
        login: &str,
        feed: &Feed,
        stored: Stored,
    ) -> Result<i64, crate::db::DbError> {
        let json = serde_json::to_string(&stored).unwrap_or_default();
        let position = db
            .remote_inbox_push(WHATSAPP.as_str(), login, &json)
            .await?;
        let _ = feed.send((position, stored));
        Ok(position)
    }
}

#[async_trait::async_trait]
impl InboundDurabilityHook for InboxHook {
    async fn on_messages(
        &self,
        _client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> whatsapp_rust::anyhow::Result<()> {
        for message in batch {
            let stored = Stored::from_inbound(message);
            // An error leaves the batch unacked: WhatsApp delivers it again.
            Self::push(&self.db, &self.login, &self.feed, stored)
                .await
                .map_err(|e| {
                    whatsapp_rust::anyhow::anyhow!("cannot store a WhatsApp message: {e}")
                })?;
        }
        Ok(())
    }
}
