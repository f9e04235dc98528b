//! Matrix users who use the bridge, and their management rooms.

use super::{Db, Result, now_ms};

impl Db {
    /// Records a user (no-op if known).
    pub async fn ensure_user(&self, mxid: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO matrix_user (mxid, created_at) VALUES ($1, $2) ON CONFLICT (mxid) DO NOTHING",
        )
        .bind(mxid)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn management_room(&self, mxid: &str) -> Result<Option<String>> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT management_room FROM matrix_user WHERE mxid = $1")
                .bind(mxid)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.and_then(|(room,)| room))
    }

    pub async fn set_management_room(&self, mxid: &str, room_id: &str) -> Result<()> {
        self.ensure_user(mxid).await?;
        sqlx::query("UPDATE matrix_user SET management_room = $2 WHERE mxid = $1")
            .bind(mxid)
            .bind(room_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The user whose management room this is, if any.
    pub async fn management_room_owner(&self, room_id: &str) -> Result<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT mxid FROM matrix_user WHERE management_room = $1")
                .bind(room_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(m,)| m))
    }
}
