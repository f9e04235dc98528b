//! Remote events stored on receipt (see migrations/*/0002_remote_inbox.sql): the id is the
//! checkpoint the bridge advances once an event is handled.

use super::{Db, Result, now_ms};

impl Db {
    /// Stores a received payload; returns its position.
    pub async fn remote_inbox_push(
        &self,
        network: &str,
        login_id: &str,
        payload: &str,
    ) -> Result<i64> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO remote_inbox (network, login_id, payload, received_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(network)
        .bind(login_id)
        .bind(payload)
        .bind(now_ms())
        .fetch_one(self.pool())
        .await?;
        Ok(id)
    }

    /// Payloads after `after`, oldest first (at most `limit`).
    pub async fn remote_inbox_after(
        &self,
        network: &str,
        login_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT id, payload FROM remote_inbox WHERE network = $1 AND login_id = $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(network)
        .bind(login_id)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// Forgets handled payloads up to and including `up_to`.
    pub async fn remote_inbox_prune(
        &self,
        network: &str,
        login_id: &str,
        up_to: i64,
    ) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM remote_inbox WHERE network = $1 AND login_id = $2 AND id <= $3",
        )
        .bind(network)
        .bind(login_id)
        .bind(up_to)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}
