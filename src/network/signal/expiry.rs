//! Disappearing messages. Signal removes a message from every device once the chat's timer
//! runs out; ferry does the same in Matrix: every bridged message of a chat with a timer gets a
//! deadline in `signal_expiry` (so it survives a restart), and a per-login task turns due
//! deadlines into remote deletes, which the bridge shows as redactions.
//!
//! Simplification: the clock starts when ferry sees the message (Signal starts it when the
//! message is read on that device, which is later or equal), so a message never stays longer.

use crate::{
    db::{Db, Result},
    network::{ChatId, MessageId},
};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Records that `message` must go at `deadline_ms`.
pub async fn schedule(
    db: &Db,
    login: &str,
    chat: &ChatId,
    message: &MessageId,
    deadline_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO signal_expiry (login_id, chat_id, message_id, deadline_ms) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (login_id, message_id) DO UPDATE SET deadline_ms = excluded.deadline_ms",
    )
    .bind(login)
    .bind(chat.as_str())
    .bind(message.as_str())
    .bind(deadline_ms)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Messages whose deadline has passed, oldest first: (chat, message).
pub async fn due(db: &Db, login: &str, now_ms: i64) -> Result<Vec<(ChatId, MessageId)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT chat_id, message_id FROM signal_expiry \
         WHERE login_id = $1 AND deadline_ms <= $2 ORDER BY deadline_ms LIMIT 100",
    )
    .bind(login)
    .bind(now_ms)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(chat, id)| (ChatId::new(chat), MessageId::new(id)))
        .collect())
}

/// Forgets a deadline once its delete was handed to the bridge.
pub async fn done(db: &Db, login: &str, message: &MessageId) -> Result<()> {
    sqlx::query("DELETE FROM signal_expiry WHERE login_id = $1 AND message_id = $2")
        .bind(login)
        .bind(message.as_str())
        .execute(db.pool())
        .await?;
    Ok(())
}
