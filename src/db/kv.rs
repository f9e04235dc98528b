//! A small key-value table for bridge-wide facts (e.g. what was done once at first start).

use super::{Db, Result};

impl Db {
    pub async fn kv_get(&self, key: &str) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT value FROM kv_store WHERE key = $1")
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|(v,)| v))
    }

    pub async fn kv_set(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO kv_store (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Deletes every key that starts with `prefix` (compared as text, so `_` and `%` in ids
    /// are not wildcards); returns how many went.
    pub async fn kv_delete_prefix(&self, prefix: &str) -> Result<u64> {
        let len = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
        let done = sqlx::query("DELETE FROM kv_store WHERE substr(key, 1, $2) = $1")
            .bind(prefix)
            .bind(len)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
