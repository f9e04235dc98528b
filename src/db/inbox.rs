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
        self.store_transaction_with(txn_id, None, events).await
    }

    /// Like [`Db::store_transaction`], but a stored id counts as a repeat only if it carried
    /// the same `fingerprint` (of its events): a homeserver that reuses an id for different
    /// events (Synapse on SQLite after a restart) gets them handled, not dropped. A stored id
    /// without a fingerprint (or none given) repeats by id alone.
    pub async fn store_transaction_with(
        &self,
        txn_id: &str,
        fingerprint: Option<&str>,
        events: &[String],
    ) -> Result<Option<Vec<InboxEntry>>> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO as_txn (txn_id, received_at, fingerprint) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(txn_id)
        .bind(now)
        .bind(fingerprint)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            let (stored,): (Option<String>,) =
                sqlx::query_as("SELECT fingerprint FROM as_txn WHERE txn_id = $1")
                    .bind(txn_id)
                    .fetch_one(&mut *tx)
                    .await?;
            let reused = matches!((&stored, fingerprint), (Some(a), Some(b)) if a != b);
            if !reused {
                tx.rollback().await?;
                return Ok(None);
            }
            tracing::warn!(
                txn_id,
                "the homeserver reused a transaction id for other events; handling them as new"
            );
            sqlx::query("UPDATE as_txn SET fingerprint = $1, received_at = $2 WHERE txn_id = $3")
                .bind(fingerprint)
                .bind(now)
                .bind(txn_id)
                .execute(&mut *tx)
                .await?;
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

#[cfg(test)]
mod tests {
    use crate::config::{DatabaseConfig, DatabaseType};

    use super::*;

    #[tokio::test]
    async fn a_reused_transaction_id_with_other_events_is_handled() {
        let dir = std::env::temp_dir().join(format!("ferry-inbox-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = Db::connect(&DatabaseConfig {
            kind: DatabaseType::Sqlite,
            uri: format!("sqlite://{}", dir.join("t.db").display()),
            max_connections: 2,
        })
        .await
        .expect("db");
        let events = |s: &str| vec![format!("{{\"event_id\": \"{s}\"}}")];
        let first = db
            .store_transaction_with("1", Some("fp-a"), &events("a"))
            .await
            .expect("store");
        assert_eq!(first.map(|e| e.len()), Some(1));
        // A retry (same fingerprint) is a repeat.
        let retry = db
            .store_transaction_with("1", Some("fp-a"), &events("a"))
            .await
            .expect("store");
        assert!(retry.is_none());
        // The same id for other events (the homeserver counted from 1 again) is new.
        let reused = db
            .store_transaction_with("1", Some("fp-b"), &events("b"))
            .await
            .expect("store");
        assert_eq!(reused.map(|e| e.len()), Some(1));
        // ... and its own retry is a repeat again.
        assert!(
            db.store_transaction_with("1", Some("fp-b"), &events("b"))
                .await
                .expect("store")
                .is_none()
        );
        // Without fingerprints, ids alone decide (rows from before the migration).
        assert!(
            db.store_transaction("2", &events("c"))
                .await
                .expect("store")
                .is_some()
        );
        assert!(
            db.store_transaction_with("2", Some("fp-d"), &events("d"))
                .await
                .expect("store")
                .is_none()
        );
        assert_eq!(db.pending_inbox().await.expect("inbox").len(), 3);
        db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
