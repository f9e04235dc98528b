//! The appservice inbox: transaction ids already accepted, and their events until handled.
//!
//! A transaction is stored (id and events, in one database transaction) before the homeserver
//! gets its 200, so a crash after answering loses nothing: unhandled events are replayed from
//! here at the next start. A repeated transaction id is recognised here too, across restarts.

use std::fmt::Write as _;

use sqlx::AssertSqlSafe;

use super::{Db, Result, now_ms};

/// One stored event awaiting handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    pub id: i64,
    pub event: String,
}

impl Db {
    /// Stores a transaction. Returns `None` when this transaction id was stored before (the
    /// caller must not handle its events again), else the stored entries in order.
    pub async fn store_transaction(
        &self,
        txn_id: &str,
        events: &[String],
    ) -> Result<Option<Vec<InboxEntry>>> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO as_txn (txn_id, received_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(txn_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let mut entries = Vec::with_capacity(events.len());
        // Chunks keep the statement well under SQLite's bind-parameter limit.
        for chunk in events.chunks(200) {
            // Placeholders are written out as `$N`: sqlx's `QueryBuilder<Any>` emits `?`, which
            // PostgreSQL rejects.
            let mut sql = String::from("INSERT INTO inbox (txn_id, event, received_at) VALUES ");
            for i in 0..chunk.len() {
                let n = 3 * i;
                let sep = if i == 0 { "" } else { ", " };
                // Writing to a String cannot fail.
                let _ = write!(sql, "{sep}(${}, ${}, ${})", n + 1, n + 2, n + 3);
            }
            sql.push_str(" RETURNING id");
            let mut query = sqlx::query_as::<_, (i64,)>(AssertSqlSafe(sql));
            for event in chunk {
                query = query.bind(txn_id).bind(event.as_str()).bind(now);
            }
            let ids = query.fetch_all(&mut *tx).await?;
            // RETURNING order follows VALUES order on both backends for a single INSERT; sort
            // anyway since identity values grow in insertion order.
            let mut ids: Vec<i64> = ids.into_iter().map(|(id,)| id).collect();
            ids.sort_unstable();
            entries.extend(ids.into_iter().zip(chunk).map(|(id, event)| InboxEntry {
                id,
                event: event.clone(),
            }));
        }
        tx.commit().await?;
        Ok(Some(entries))
    }

    /// Events not yet handled, oldest first.
    pub async fn pending_inbox(&self) -> Result<Vec<InboxEntry>> {
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, event FROM inbox ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, event)| InboxEntry { id, event })
            .collect())
    }

    /// Marks an event handled.
    pub async fn inbox_done(&self, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM inbox WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets transaction ids older than `max_age_ms` (the homeserver never repeats those).
    pub async fn prune_transactions(&self, max_age_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM as_txn WHERE received_at < $1")
            .bind(now_ms() - max_age_ms)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
