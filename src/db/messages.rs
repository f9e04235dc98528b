//! Remote message id <-> Matrix event id. The mapping is what makes bridging idempotent: an
//! event whose mapping exists has already crossed and is not sent again.

use super::{Db, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub network: String,
    pub chat_id: String,
    pub receiver: String,
    pub remote_id: String,
    pub part_id: String,
    pub event_id: String,
    pub room_id: String,
    pub sender_remote: String,
    pub sender_mxid: String,
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
    String,
    i64,
);

fn from_raw(r: Raw) -> MessageRow {
    let (
        network,
        chat_id,
        receiver,
        remote_id,
        part_id,
        event_id,
        room_id,
        sender_remote,
        sender_mxid,
        ts,
    ) = r;
    MessageRow {
        network,
        chat_id,
        receiver,
        remote_id,
        part_id,
        event_id,
        room_id,
        sender_remote,
        sender_mxid,
        ts,
    }
}

macro_rules! columns {
    () => {
        "network, chat_id, receiver, remote_id, part_id, event_id, room_id, sender_remote, sender_mxid, ts"
    };
}

impl Db {
    /// Stores a mapping; a repeat of the same remote message part is ignored (returns false).
    pub async fn insert_message(&self, row: &MessageRow) -> Result<bool> {
        let done = sqlx::query(concat!(
            "INSERT INTO message (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
        ))
        .bind(&row.network)
        .bind(&row.chat_id)
        .bind(&row.receiver)
        .bind(&row.remote_id)
        .bind(&row.part_id)
        .bind(&row.event_id)
        .bind(&row.room_id)
        .bind(&row.sender_remote)
        .bind(&row.sender_mxid)
        .bind(row.ts)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn message_by_remote(
        &self,
        network: &str,
        chat_id: &str,
        receiver: &str,
        remote_id: &str,
    ) -> Result<Vec<MessageRow>> {
        let rows: Vec<Raw> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM message WHERE network = $1 AND chat_id = $2 AND receiver = $3 AND remote_id = $4 ORDER BY part_id"
        ))
        .bind(network)
        .bind(chat_id)
        .bind(receiver)
        .bind(remote_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(from_raw).collect())
    }

    /// (chat_id, receiver) of every stored message of `network` with this remote id, for
    /// networks whose delete notices name the message but not the chat (Telegram).
    pub async fn chats_of_remote_message(
        &self,
        network: &str,
        remote_id: &str,
    ) -> Result<Vec<(String, String)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT chat_id, receiver FROM message WHERE network = $1 AND remote_id = $2",
        )
        .bind(network)
        .bind(remote_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    pub async fn message_by_event(&self, event_id: &str) -> Result<Option<MessageRow>> {
        let row: Option<Raw> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM message WHERE event_id = $1"
        ))
        .bind(event_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(from_raw))
    }
}

impl Db {
    /// Forgets a remote message's mapping (after it was deleted).
    pub async fn delete_message(
        &self,
        network: &str,
        chat_id: &str,
        receiver: &str,
        remote_id: &str,
    ) -> Result<()> {
        sqlx::query("DELETE FROM message WHERE network = $1 AND chat_id = $2 AND receiver = $3 AND remote_id = $4")
            .bind(network)
            .bind(chat_id)
            .bind(receiver)
            .bind(remote_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Counts an edit of a message.
    pub async fn count_edit(&self, event_id: &str) -> Result<()> {
        sqlx::query("UPDATE message SET edit_count = edit_count + 1 WHERE event_id = $1")
            .bind(event_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
