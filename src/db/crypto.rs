//! The bridge's crypto bookkeeping outside the crypto store: its devices, which rooms are
//! encrypted, and encrypted events still waiting for their keys (migration 0004).

use super::{Db, Result, inbox::InboxEntry, now_ms};

/// An encrypted room's settings, from its `m.room.encryption` state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomEncryptionRow {
    pub algorithm: String,
    pub rotation_period_ms: Option<i64>,
    pub rotation_period_msgs: Option<i64>,
}

impl Db {
    pub async fn bridge_device(&self, user_id: &str) -> Result<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT device_id FROM bridge_device WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(d,)| d))
    }

    pub async fn set_bridge_device(&self, user_id: &str, device_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO bridge_device (user_id, device_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn count_bridge_devices(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM bridge_device")
            .fetch_one(self.pool())
            .await?;
        Ok(n)
    }

    pub async fn crypto_room(&self, room_id: &str) -> Result<Option<RoomEncryptionRow>> {
        let row: Option<(String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT algorithm, rotation_period_ms, rotation_period_msgs FROM crypto_room \
             WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(
            |(algorithm, rotation_period_ms, rotation_period_msgs)| RoomEncryptionRow {
                algorithm,
                rotation_period_ms,
                rotation_period_msgs,
            },
        ))
    }

    pub async fn set_crypto_room(&self, room_id: &str, row: &RoomEncryptionRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO crypto_room \
             (room_id, algorithm, rotation_period_ms, rotation_period_msgs, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id) DO UPDATE SET \
             algorithm = excluded.algorithm, rotation_period_ms = excluded.rotation_period_ms, \
             rotation_period_msgs = excluded.rotation_period_msgs, \
             updated_at = excluded.updated_at",
        )
        .bind(room_id)
        .bind(&row.algorithm)
        .bind(row.rotation_period_ms)
        .bind(row.rotation_period_msgs)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Keeps an event until its key arrives; a repeat is ignored.
    pub async fn add_waiting_event(
        &self,
        event_id: &str,
        room_id: &str,
        session_id: &str,
        event: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO crypto_waiting_event (event_id, room_id, session_id, event, received_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(event_id)
        .bind(room_id)
        .bind(session_id)
        .bind(event)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Moves the events waiting for one session's key back into the inbox, in one database
    /// transaction (so a crash leaves them in one place or the other), oldest first.
    pub async fn release_waiting_events(
        &self,
        room_id: &str,
        session_id: &str,
    ) -> Result<Vec<InboxEntry>> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "DELETE FROM crypto_waiting_event WHERE room_id = $1 AND session_id = $2 \
             RETURNING event, received_at",
        )
        .bind(room_id)
        .bind(session_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut rows = rows;
        rows.sort_by_key(|(_, at)| *at);
        let mut entries = Vec::with_capacity(rows.len());
        for (event, _) in rows {
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO inbox (txn_id, event, received_at) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind("late-room-key")
            .bind(&event)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            entries.push(InboxEntry { id, event });
        }
        tx.commit().await?;
        Ok(entries)
    }
}
