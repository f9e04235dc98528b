//! Reactions: one row per (message part, sender, emoji), so a network that allows several
//! reactions per user keeps them apart.

use super::{Db, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionRow {
    pub network: String,
    pub chat_id: String,
    pub receiver: String,
    pub message_id: String,
    pub part_id: String,
    pub sender_remote: String,
    pub emoji: String,
    pub event_id: String,
    pub ts: i64,
}

type Raw = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
);

fn from_raw(r: Raw) -> ReactionRow {
    let (network, chat_id, receiver, message_id, part_id, sender_remote, emoji, event_id, ts) = r;
    ReactionRow {
        network,
        chat_id,
        receiver,
        message_id,
        part_id,
        sender_remote,
        emoji,
        event_id,
        ts,
    }
}

macro_rules! columns {
    () => {
        "network, chat_id, receiver, message_id, part_id, sender_remote, emoji, event_id, ts"
    };
}

impl Db {
    pub async fn insert_reaction(&self, row: &ReactionRow) -> Result<bool> {
        let done = sqlx::query(concat!(
            "INSERT INTO reaction (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING"
        ))
        .bind(&row.network)
        .bind(&row.chat_id)
        .bind(&row.receiver)
        .bind(&row.message_id)
        .bind(&row.part_id)
        .bind(&row.sender_remote)
        .bind(&row.emoji)
        .bind(&row.event_id)
        .bind(row.ts)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn reaction_by_event(&self, event_id: &str) -> Result<Option<ReactionRow>> {
        let row: Option<Raw> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM reaction WHERE event_id = $1"
        ))
        .bind(event_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(from_raw))
    }

    pub async fn delete_reaction(&self, event_id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM reaction WHERE event_id = $1")
            .bind(event_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

impl Db {
    /// The emojis of one sender's bridged reactions on one message. For networks with one
    /// reaction per user (WhatsApp), whose removals and replacements do not name the old emoji.
    pub async fn reaction_emojis_of_sender(
        &self,
        portal: (&str, &str, &str),
        message_id: &str,
        sender_remote: &str,
    ) -> Result<Vec<String>> {
        let (network, chat_id, receiver) = portal;
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT emoji FROM reaction WHERE network = $1 AND chat_id = $2 \
             AND receiver = $3 AND message_id = $4 AND sender_remote = $5",
        )
        .bind(network)
        .bind(chat_id)
        .bind(receiver)
        .bind(message_id)
        .bind(sender_remote)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(e,)| e).collect())
    }

    /// The reaction of one sender with one emoji on one message part, if bridged.
    pub async fn reaction_by_key(
        &self,
        portal: (&str, &str, &str),
        message_id: &str,
        sender_remote: &str,
        emoji: &str,
    ) -> Result<Option<ReactionRow>> {
        let (network, chat_id, receiver) = portal;
        let row: Option<Raw> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM reaction WHERE network = $1 AND chat_id = $2 AND receiver = $3 AND message_id = $4 \
             AND sender_remote = $5 AND emoji = $6 ORDER BY part_id LIMIT 1"
        ))
        .bind(network)
        .bind(chat_id)
        .bind(receiver)
        .bind(message_id)
        .bind(sender_remote)
        .bind(emoji)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(from_raw))
    }
}
